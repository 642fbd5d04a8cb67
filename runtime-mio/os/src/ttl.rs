//! One datagram with a TTL of its own: the core's hole-punching openers
//! (`pierce_core::Transmit::ttl`).

use std::io;
use std::net::SocketAddr;

/// Sends `bytes` to `dst` from the UDP socket `fd` with a unicast TTL of `ttl`, then puts
/// the system default back. On an IPv6 socket (`ipv6`) both its hop limit and its IPv4 TTL
/// (for IPv4-mapped destinations of a dual-stack socket) are set. Pierce's sockets never set
/// a TTL of their own, so "back" is the default (`-1` for both options, which Linux reads as
/// the system's or the route's default). One non-blocking send: a full socket buffer drops
/// the datagram (`WouldBlock`), like loss.
///
/// The options are the socket's, not the datagram's: the runtimes call this from the one
/// thread that sends on that socket, so no other datagram leaves with the low TTL.
///
/// # Errors
/// The OS refused the option (nothing is sent then) or the send, or
/// [`io::ErrorKind::Unsupported`] off Linux: a runtime must then drop the datagram, not send
/// it with the default TTL (an opener that reaches the peer's router does harm).
#[cfg(target_os = "linux")]
pub fn send_to_with_ttl(
    fd: std::os::fd::BorrowedFd<'_>,
    ipv6: bool,
    ttl: u8,
    bytes: &[u8],
    dst: SocketAddr,
) -> io::Result<usize> {
    use std::os::fd::{AsRawFd, FromRawFd};
    if ttl == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "TTL 0"));
    }
    let raw = fd.as_raw_fd();
    let set = |level, opt, value| crate::sockopt::set_int(raw, level, opt, value);
    let options: &[(libc::c_int, libc::c_int)] = if ipv6 {
        &[
            (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS),
            (libc::IPPROTO_IP, libc::IP_TTL),
        ]
    } else {
        &[(libc::IPPROTO_IP, libc::IP_TTL)]
    };
    for (i, &(level, opt)) in options.iter().enumerate() {
        if let Err(e) = set(level, opt, libc::c_int::from(ttl)) {
            // The IPv4 TTL of an IPv6-only socket is of no use: only its hop limit counts.
            if i == 0 {
                return Err(e);
            }
        }
    }
    // SAFETY: a std view of the borrowed socket for one send; `ManuallyDrop` keeps it from
    // closing the descriptor, which stays its owner's.
    let socket = std::mem::ManuallyDrop::new(unsafe { std::net::UdpSocket::from_raw_fd(raw) });
    let sent = socket.send_to(bytes, dst);
    for &(level, opt) in options {
        let _ = set(level, opt, -1);
    }
    sent
}

/// Off Linux: [`io::ErrorKind::Unsupported`] (see the Linux version).
///
/// # Errors
/// Always.
#[cfg(all(unix, not(target_os = "linux")))]
pub fn send_to_with_ttl(
    _fd: std::os::fd::BorrowedFd<'_>,
    _ipv6: bool,
    _ttl: u8,
    _bytes: &[u8],
    _dst: SocketAddr,
) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sending with a TTL of its own is implemented on Linux only",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::print_stdout)]
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// The TTL a socket would send with now.
    fn ttl_of(s: &UdpSocket) -> u32 {
        s.ttl().expect("IP_TTL")
    }

    #[test]
    fn the_ttl_applies_to_that_send_only_and_the_default_comes_back() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let default = ttl_of(&tx);
        let dst = rx.local_addr().unwrap();
        let n = send_to_with_ttl(tx.as_fd(), false, 2, b"opener", dst).unwrap();
        assert_eq!(n, 6);
        assert_eq!(ttl_of(&tx), default);
        // On loopback a TTL of 2 arrives (no router between).
        let mut buf = [0; 16];
        assert_eq!(rx.recv_from(&mut buf).unwrap().0, 6);
        assert!(send_to_with_ttl(tx.as_fd(), false, 0, b"x", dst).is_err());
    }

    #[test]
    fn a_dual_stack_socket_sets_its_hop_limit_and_puts_it_back() {
        let Ok(tx) = UdpSocket::bind("[::1]:0") else {
            println!("SKIPPED: no IPv6 loopback");
            return;
        };
        let rx = UdpSocket::bind("[::1]:0").unwrap();
        let dst = rx.local_addr().unwrap();
        send_to_with_ttl(tx.as_fd(), true, 3, b"x", dst).unwrap();
        let mut buf = [0; 4];
        assert_eq!(rx.recv_from(&mut buf).unwrap().0, 1);
        // An IPv4 socket refuses the IPv6 option: nothing is sent.
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx4.set_nonblocking(true).unwrap();
        let r = send_to_with_ttl(v4.as_fd(), true, 3, b"x", rx4.local_addr().unwrap());
        assert!(r.is_err());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(rx4.recv_from(&mut buf).is_err(), "nothing was sent");
    }
}
