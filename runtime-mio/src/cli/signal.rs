//! SIGINT and SIGTERM as flags. The handler only stores to atomics (async-signal-safe); the
//! command's loop polls them at least every [`super::server::TICK`]. A signal also interrupts
//! the poller's wait (`EINTR`), which the driver treats as a wakeup, so the loop usually
//! notices at once.
//!
//! What the loop does with them is its own (`pierce server`: SIGTERM drains, SIGINT or a
//! second signal stops at once; `pierce peer`: either stops). A third signal ends the process
//! at once (exit status 128 + the signal, as the default action would report), for when the
//! loop is stuck.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Signals received so far.
static COUNT: AtomicU32 = AtomicU32::new(0);
/// A SIGINT arrived (the terminal's Ctrl-C: someone wants it gone now).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    if signal == libc::SIGINT {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    if COUNT.fetch_add(1, Ordering::SeqCst) >= 2 {
        // SAFETY: `_exit` is async-signal-safe; nothing is unwound or flushed.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(128 + signal)
        };
    }
}

/// Routes SIGINT and SIGTERM to the flags (instead of ending the process).
pub(crate) fn install() -> io::Result<()> {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` has the signature `signal` expects and does only
        // async-signal-safe things (atomic stores, `_exit`): no locks, allocations or I/O.
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
    COUNT.load(Ordering::SeqCst) > 0
}

/// True once a SIGINT or a second signal arrived: stop now, without draining.
pub(crate) fn stop_now() -> bool {
    INTERRUPTED.load(Ordering::SeqCst) || COUNT.load(Ordering::SeqCst) >= 2
}
