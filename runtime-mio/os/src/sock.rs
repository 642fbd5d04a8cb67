//! Raw UDP sockets (Linux): what `std` cannot set before `bind` (`SO_REUSEPORT`,
//! `IPV6_V6ONLY`).

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub(crate) fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A UDP socket of `addr`'s family, not bound yet: non-blocking, with `SO_REUSEPORT` if
/// `reuseport`; one for the IPv6 unspecified address (`[::]`) is dual stack, `IPV6_V6ONLY`
/// set off explicitly (the BSDs and Windows default to on, Linux to
/// `net.ipv6.bindv6only`).
pub(crate) fn socket_for(addr: SocketAddr, reuseport: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked before it is owned.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let set = |level, option, value| crate::sockopt::set_int(fd.as_raw_fd(), level, option, value);
    if reuseport {
        set(libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
    }
    Ok(fd)
}

pub(crate) fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    // SAFETY: sockaddr_in/sockaddr_in6 are plain C structs for which all zeros is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: fd is live; storage holds a valid address of `len` bytes.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const storage).cast(),
            len as libc::socklen_t,
        )
    })
}
