//! SIGINT and SIGTERM as a flag. The handler only stores to an atomic (async-signal-safe);
//! the command's loop polls the flag at least every [`super::server::TICK`]. A signal also
//! interrupts the poller's wait (`EINTR`), which the driver treats as a wakeup, so the loop
//! usually notices at once. A second signal ends the process at once (exit status 128 + the
//! signal, as the default action would report), for when the loop is stuck.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static RECEIVED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe; nothing is unwound or flushed.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(128 + signal)
        };
    }
}

/// Routes SIGINT and SIGTERM to the flag (instead of ending the process).
pub(crate) fn install() -> io::Result<()> {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` has the signature `signal` expects and does only
        // async-signal-safe things (an atomic swap, `_exit`): no locks, allocations or I/O.
        #[allow(unsafe_code)]
        let previous = unsafe { libc::signal(signal, handler) };
        if previous == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// True once SIGINT or SIGTERM arrived.
pub(crate) fn received() -> bool {
    RECEIVED.load(Ordering::SeqCst)
}
