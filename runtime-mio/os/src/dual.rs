//! Dual stack: one UDP socket for both address families, and addresses in the form each side
//! expects. A socket bound to `[::]` with `IPV6_V6ONLY` off receives IPv4 datagrams too, from
//! senders it names in their IPv4-mapped form (`[::ffff:192.0.2.1]:7777`), and reaches an
//! IPv4 destination only through that form. The core compares, reports and sends addresses
//! in their canonical form (`192.0.2.1:7777`, [`SocketAddr::ip`]'s `to_canonical`): the
//! runtime turns one into the other at the socket ([`for_socket`]), and the core
//! canonicalises whatever it is handed (`pierce_core::canonical`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

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

/// The NAT64 prefix of this host's network, discovered as RFC 7050 says: the system
/// resolver (a DNS64 one on a NAT64 network) answers `ipv4only.arpa`, which has only the
/// IPv4 addresses 192.0.0.170 and 192.0.0.171, with IPv6 addresses synthesised from them;
/// the prefix is what precedes either in the last 32 bits (only /96 prefixes are found).
/// `None` without DNS64 (or without a resolver). Blocking: a DNS lookup.
pub fn discover_nat64_prefix() -> Option<Ipv6Addr> {
    let answers = ("ipv4only.arpa", 0).to_socket_addrs().ok()?;
    nat64_prefix_of(answers.map(|a| a.ip()))
}

/// The /96 prefix of the first of `answers` that synthesises one of `ipv4only.arpa`'s
/// addresses (RFC 7050 §3).
fn nat64_prefix_of(answers: impl IntoIterator<Item = IpAddr>) -> Option<Ipv6Addr> {
    const WELL_KNOWN: [Ipv4Addr; 2] =
        [Ipv4Addr::new(192, 0, 0, 170), Ipv4Addr::new(192, 0, 0, 171)];
    answers.into_iter().find_map(|ip| {
        let IpAddr::V6(v6) = ip else { return None };
        let mut o = v6.octets();
        let v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
        if !WELL_KNOWN.contains(&v4) || v6.to_ipv4_mapped().is_some() {
            return None;
        }
        o[12..].fill(0);
        Some(Ipv6Addr::from(o))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn rfc7050_the_prefix_is_what_precedes_ipv4only_arpas_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
        let answers = [
            ip("192.0.0.170"),
            ip("64:ff9b::c000:aa"),
            ip("64:ff9b::c000:ab"),
        ];
        assert_eq!(
            nat64_prefix_of(answers),
            Some("64:ff9b::".parse().expect("literal"))
        );
        let own = [ip("2001:db8:64::192.0.0.171")];
        assert_eq!(
            nat64_prefix_of(own),
            Some("2001:db8:64::".parse().expect("literal"))
        );
        // No synthesis (no DNS64), or an address that is not ipv4only.arpa's.
        assert_eq!(
            nat64_prefix_of([ip("192.0.0.170"), ip("192.0.0.171")]),
            None
        );
        assert_eq!(nat64_prefix_of([ip("64:ff9b::c000:201")]), None);
        assert_eq!(nat64_prefix_of([ip("::ffff:192.0.0.170")]), None);
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
