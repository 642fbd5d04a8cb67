//! `setsockopt` / `getsockopt` for the options whose value is a C `int`: written once for the
//! modules that set them (`sock`, `sys`, `ttl`, `dontfrag`).

use std::io;
use std::os::fd::RawFd;

/// Sets option `(level, option)` of socket `fd` to `value`.
pub(crate) fn set_int(
    fd: RawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the caller's `fd` is a live socket for the call; the value is a c_int that
    // outlives the call, with its exact size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The value of option `(level, option)` of socket `fd`.
pub(crate) fn get_int(
    fd: RawFd,
    level: libc::c_int,
    option: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above; `value` and `len` are valid for writes of their sizes.
    let rc = unsafe { libc::getsockopt(fd, level, option, (&raw mut value).cast(), &raw mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}
