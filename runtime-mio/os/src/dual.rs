//! Dual stack: one UDP socket for both address families, and addresses in the form each side
//! expects. A socket bound to `[::]` with `IPV6_V6ONLY` off receives IPv4 datagrams too, from
//! senders it names in their IPv4-mapped form (`[::ffff:192.0.2.1]:7777`), and reaches an
//! IPv4 destination only through that form. The core compares, reports and sends addresses
//! in their canonical form (`192.0.2.1:7777`, [`SocketAddr::ip`]'s `to_canonical`): the
//! runtime turns one into the other at the socket ([`for_socket`]), and the core
//! canonicalises whatever it is handed (`pierce_core::canonical`).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Binds a UDP socket at `addr`, blocking as [`UdpSocket::bind`]'s are; at the IPv6
/// unspecified address (`[::]`) it is dual stack, `IPV6_V6ONLY` set off explicitly rather
/// than left to the OS default (on in the BSDs and Windows, `net.ipv6.bindv6only` on Linux).
/// Outside Linux it is [`UdpSocket::bind`] (the OS default applies).
///
/// # Errors
/// The socket, the option or the bind failed.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    #[cfg(target_os = "linux")]
    {
        let fd = crate::sock::socket_for(addr, false)?;
        crate::sock::bind(&fd, addr)?;
        let socket = UdpSocket::from(fd);
        socket.set_nonblocking(false)?;
        Ok(socket)
    }
    #[cfg(not(target_os = "linux"))]
    {
        UdpSocket::bind(addr)
    }
}

/// `dst` as a socket of `local`'s family sends to it: an IPv4 destination from an IPv6
/// socket in its IPv4-mapped form (which a dual-stack socket reaches; a v6-only one fails the
/// send), an IPv4-mapped one from an IPv4 socket in its IPv4 form; `None` for an IPv6
/// destination from an IPv4 socket (unreachable: the caller drops and counts it).
pub fn for_socket(dst: SocketAddr, local: SocketAddr) -> Option<SocketAddr> {
    match (local.ip(), dst.ip()) {
        (IpAddr::V6(_), IpAddr::V4(v4)) => {
            Some(SocketAddr::new(v4.to_ipv6_mapped().into(), dst.port()))
        }
        (IpAddr::V4(_), IpAddr::V6(v6)) => {
            let v4 = v6.to_ipv4_mapped()?;
            Some(SocketAddr::new(v4.into(), dst.port()))
        }
        _ => Some(dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn destinations_take_the_sockets_family() {
        let v6 = a("[::]:1");
        let v4 = a("0.0.0.0:1");
        assert_eq!(
            for_socket(a("192.0.2.1:7"), v6),
            Some(a("[::ffff:192.0.2.1]:7"))
        );
        assert_eq!(
            for_socket(a("[2001:db8::1]:7"), v6),
            Some(a("[2001:db8::1]:7"))
        );
        assert_eq!(
            for_socket(a("[::ffff:192.0.2.1]:7"), v4),
            Some(a("192.0.2.1:7"))
        );
        assert_eq!(for_socket(a("192.0.2.1:7"), v4), Some(a("192.0.2.1:7")));
        assert_eq!(for_socket(a("[2001:db8::1]:7"), v4), None);
    }

    #[test]
    fn a_socket_at_the_ipv6_unspecified_address_talks_to_both_families() {
        let Ok(server) = bind_udp(a("[::]:0")) else {
            // No IPv6 on this host at all (a container without it): nothing to test.
            eprintln!("SKIPPED: no IPv6");
            return;
        };
        let port = server.local_addr().expect("addr").port();
        let v4 = UdpSocket::bind("127.0.0.1:0").expect("bind");
        v4.send_to(b"four", ("127.0.0.1", port)).expect("send");
        let mut buf = [0u8; 8];
        let (n, from) = server.recv_from(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"four");
        assert_eq!(
            from,
            a(&format!(
                "[::ffff:127.0.0.1]:{}",
                v4.local_addr().expect("addr").port()
            ))
        );
        assert_eq!(
            SocketAddr::new(from.ip().to_canonical(), from.port()),
            v4.local_addr().expect("addr")
        );
        let back = for_socket(
            v4.local_addr().expect("addr"),
            server.local_addr().expect("addr"),
        );
        server
            .send_to(b"back", back.expect("mapped"))
            .expect("send to v4");
        let (n, _) = v4.recv_from(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"back");
        if let Ok(v6) = UdpSocket::bind("[::1]:0") {
            v6.send_to(b"six", ("::1", port)).expect("send");
            let (n, from) = server.recv_from(&mut buf).expect("recv");
            assert_eq!(&buf[..n], b"six");
            assert_eq!(from, v6.local_addr().expect("addr"));
        }
    }
}
