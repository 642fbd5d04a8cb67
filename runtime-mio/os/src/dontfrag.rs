//! Datagrams sent whole: Don't Fragment on, local fragmentation off, so a path-MTU probe
//! (`pierce_core`'s RFC 8899 DPLPMTUD) arrives as one packet or not at all, and its
//! acknowledgement tells the truth about the path.

use std::io;
use std::net::UdpSocket;

/// Makes `socket` send every datagram as one IP packet with Don't Fragment set, and never
/// fragment one itself: a datagram larger than the path drops on the way (as loss, which is
/// what a path-MTU probe is for) and one larger than the local interface fails its send with
/// `EMSGSIZE` ([`is_too_large`]). The core does its own path-MTU discovery (RFC 8899): it
/// starts every path at `pierce_core::BASE_DATAGRAM_SIZE` and probes upwards, so the socket
/// must neither fragment a probe (it would arrive and lie) nor cap it at a size the OS learnt
/// from ICMP (that would hide a larger path). Every path is assumed to carry 1200 bytes
/// (RFC 8899's BASE_PLPMTU, QUIC's minimum); on one that does not (an IPv4 path under 1228
/// bytes), datagrams of the base size now drop where their fragments would have passed.
///
/// - Linux: `IP_MTU_DISCOVER = IP_PMTUDISC_PROBE`, and on an IPv6 socket
///   `IPV6_MTU_DISCOVER = IPV6_PMTUDISC_PROBE` too (PROBE rather than DO: DF set, but the
///   kernel's cached path MTU neither caps nor fragments a send; only the interface MTU does).
/// - macOS and iOS: `IP_DONTFRAG`, and `IPV6_DONTFRAG` on an IPv6 socket.
/// - Elsewhere (Windows, the BSDs): nothing is set, and `Ok(false)` says so; the OS may
///   fragment a probe, which then succeeds wherever fragments pass (a path MTU above the
///   real one, whose large datagrams arrive in fragments).
///
/// On an IPv6 socket the IPv4 option is set as well where the OS takes it (a dual-stack socket
/// sends IPv4 datagrams by it); its refusal is ignored. Setting it again is harmless.
///
/// # Errors
/// The OS refused the option (for an IPv6 socket: its IPv6 option), or the socket's address
/// could not be read.
pub fn set_dont_fragment(socket: &UdpSocket) -> io::Result<bool> {
    let ipv6 = socket.local_addr()?.is_ipv6();
    imp::set(socket, ipv6)
}

/// Whether the UDP socket `fd` sends whole datagrams, as [`set_dont_fragment`] makes it (for
/// an IPv6 socket: its IPv6 option): for tests and diagnostics of a runtime's sockets.
///
/// # Errors
/// The OS refused to read the option or the socket's address.
#[cfg(any(target_os = "linux", target_vendor = "apple"))]
pub fn sends_whole(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<bool> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: a std view of the borrowed socket for these calls; `ManuallyDrop` keeps it from
    // closing the descriptor, which stays its owner's.
    let socket = std::mem::ManuallyDrop::new(unsafe { UdpSocket::from_raw_fd(fd.as_raw_fd()) });
    let [v4, v6] = imp::OPTIONS;
    let (level, option, value) = if socket.local_addr()?.is_ipv6() {
        v6
    } else {
        v4
    };
    Ok(imp::get(&socket, level, option)? == value)
}

/// Whether a send failed because the datagram is larger than the local interface allows
/// (`EMSGSIZE`; Windows' `WSAEMSGSIZE`): on a socket set with [`set_dont_fragment`], a probe
/// above the interface MTU. A runtime counts it and drops the datagram, like one lost on the
/// way; sending it again would fail again.
pub fn is_too_large(e: &io::Error) -> bool {
    #[cfg(any(target_os = "linux", target_vendor = "apple"))]
    {
        e.raw_os_error() == Some(libc::EMSGSIZE)
    }
    #[cfg(windows)]
    {
        const WSAEMSGSIZE: i32 = 10040;
        e.raw_os_error() == Some(WSAEMSGSIZE)
    }
    #[cfg(not(any(target_os = "linux", target_vendor = "apple", windows)))]
    {
        let _ = e;
        false
    }
}

#[cfg(any(target_os = "linux", target_vendor = "apple"))]
mod imp {
    use std::io;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// The options [`super::set_dont_fragment`] sets, as (level, option, value): the IPv4 one
    /// first, then the IPv6 one.
    #[cfg(target_os = "linux")]
    pub(super) const OPTIONS: [(libc::c_int, libc::c_int, libc::c_int); 2] = [
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        ),
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        ),
    ];
    #[cfg(target_vendor = "apple")]
    pub(super) const OPTIONS: [(libc::c_int, libc::c_int, libc::c_int); 2] = [
        (libc::IPPROTO_IP, libc::IP_DONTFRAG, 1),
        (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1),
    ];

    pub(super) fn set(socket: &UdpSocket, ipv6: bool) -> io::Result<bool> {
        let [v4, v6] = OPTIONS;
        if ipv6 {
            setsockopt(socket, v6)?;
            // (For IPv4-mapped destinations of a dual-stack socket; a v6-only socket has none.)
            let _ = setsockopt(socket, v4);
        } else {
            setsockopt(socket, v4)?;
        }
        Ok(true)
    }

    fn setsockopt(
        socket: &UdpSocket,
        (level, option, value): (libc::c_int, libc::c_int, libc::c_int),
    ) -> io::Result<()> {
        crate::sockopt::set_int(socket.as_raw_fd(), level, option, value)
    }

    /// The value of option `(level, option)` on `socket`.
    pub(super) fn get(
        socket: &UdpSocket,
        level: libc::c_int,
        option: libc::c_int,
    ) -> io::Result<libc::c_int> {
        crate::sockopt::get_int(socket.as_raw_fd(), level, option)
    }
}

#[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
mod imp {
    use std::io;
    use std::net::UdpSocket;

    pub(super) fn set(_socket: &UdpSocket, _ipv6: bool) -> io::Result<bool> {
        Ok(false)
    }
}

#[cfg(all(test, any(target_os = "linux", target_vendor = "apple")))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::print_stdout)]
    use super::*;

    use std::os::fd::AsFd;

    #[test]
    fn an_ipv4_socket_reads_its_option_back() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let [(level, option, value), _] = imp::OPTIONS;
        assert_ne!(
            imp::get(&s, level, option).unwrap(),
            value,
            "not the default"
        );
        assert!(!sends_whole(s.as_fd()).unwrap());
        assert!(set_dont_fragment(&s).unwrap());
        assert_eq!(imp::get(&s, level, option).unwrap(), value);
        assert!(sends_whole(s.as_fd()).unwrap());
        // Again: harmless.
        assert!(set_dont_fragment(&s).unwrap());
        assert_eq!(imp::get(&s, level, option).unwrap(), value);
    }

    #[test]
    fn a_dual_stack_socket_gets_both_options() {
        let Ok(s) = crate::bind_udp("[::]:0".parse().unwrap()) else {
            println!("SKIPPED: no IPv6");
            return;
        };
        assert!(!sends_whole(s.as_fd()).unwrap());
        assert!(set_dont_fragment(&s).unwrap());
        for (level, option, value) in imp::OPTIONS {
            assert_eq!(imp::get(&s, level, option).unwrap(), value, "level {level}");
        }
        assert!(sends_whole(s.as_fd()).unwrap());
    }

    /// On Linux the kernel refuses a datagram above the interface MTU instead of fragmenting
    /// it; loopback's MTU is 65536, so only a datagram above UDP's own limit shows it there,
    /// and that fails either way. What it looks like is the point: `EMSGSIZE`.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_datagram_too_large_for_the_interface_fails_with_emsgsize() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_dont_fragment(&tx).unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = tx
            .send_to(&vec![0; 65_508], rx.local_addr().unwrap())
            .unwrap_err();
        assert!(is_too_large(&e), "{e:?}");
        assert!(!is_too_large(&io::ErrorKind::WouldBlock.into()));
        assert!(!is_too_large(&io::Error::from_raw_os_error(libc::EINVAL)));
        // A datagram that fits goes.
        assert_eq!(
            tx.send_to(&[1; 1452], rx.local_addr().unwrap()).unwrap(),
            1452
        );
        let mut buf = [0; 2048];
        assert_eq!(rx.recv(&mut buf).unwrap(), 1452);
    }
}
