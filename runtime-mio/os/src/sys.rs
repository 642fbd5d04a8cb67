//! What a runtime takes from the operating system besides the socket: entropy, wall-clock
//! time, the host's interface addresses, socket buffer sizes, and what a receive error means.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 32 bytes from the OS CSPRNG: the seed a runtime gives `Client::new` / `Server::new`, and
/// what an application can use for its `SecretKey`.
///
/// # Errors
/// The OS entropy source failed (practically never after boot).
pub fn os_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    Ok(seed)
}

/// Wall-clock time since the Unix epoch, for `Server::new`'s `unix_time` (token expiry).
/// A clock set before 1970 reads as zero.
pub fn unix_time() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// This host's addresses on its up, non-loopback interfaces, each with `port`: the LAN
/// candidates a client can offer peers on the same network.
///
/// IPv6 link-local addresses (`fe80::/10`) are left out: they need a scope id that a peer on
/// another host cannot use. Both families are returned; keep those matching the socket's.
///
/// # Errors
/// The interface list could not be read.
pub fn local_addresses(port: u16) -> io::Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = if_addrs::get_if_addrs()?
        .into_iter()
        .filter(|i| i.is_oper_up())
        .map(|i| i.ip())
        .filter(|ip| usable(*ip))
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.sort_unstable();
    out.dedup(); // an address can sit on several interfaces (bridges, aliases)
    Ok(out)
}

fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// Errors a UDP receive reports about an earlier send (ICMP unreachable): undefined for UDP,
/// injectable by anyone who can forge ICMP, and never a reason to stop reading (quinn ignores
/// ECONNRESET the same way; Windows reports these as WSAECONNRESET on `recv_from`). A runtime
/// counts them and reads on.
pub fn is_stray_icmp(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_errors_are_stray_icmp_and_others_are_not() {
        use io::ErrorKind::*;
        for kind in [
            ConnectionReset,
            ConnectionRefused,
            HostUnreachable,
            NetworkUnreachable,
        ] {
            assert!(is_stray_icmp(&kind.into()), "{kind:?}");
        }
        for kind in [
            WouldBlock,
            Interrupted,
            PermissionDenied,
            InvalidInput,
            Other,
        ] {
            assert!(!is_stray_icmp(&kind.into()), "{kind:?}");
        }
    }

    #[test]
    fn link_local_loopback_and_unspecified_are_not_candidates() {
        let no = ["127.0.0.1", "0.0.0.0", "::1", "::", "fe80::1", "febf::1"];
        for ip in no {
            assert!(!usable(ip.parse().expect("literal")), "{ip}");
        }
        let yes = [
            "192.168.1.20",
            "10.0.0.1",
            "169.254.3.4",
            "fd00::1",
            "2001:db8::1",
        ];
        for ip in yes {
            assert!(usable(ip.parse().expect("literal")), "{ip}");
        }
    }
}

/// Asks the OS for `bytes` of receive and send buffer on `socket`. A server wants more than
/// Linux's default (~208 KiB): a burst of relayed traffic overflows it between two wakeups.
/// On Linux it uses SO_RCVBUFFORCE/SO_SNDBUFFORCE where permitted (CAP_NET_ADMIN), else
/// SO_RCVBUF/SO_SNDBUF (capped by `net.core.rmem_max`/`wmem_max`), and returns the receive
/// buffer the kernel granted (it doubles the request for bookkeeping). Elsewhere it does
/// nothing and returns `Ok(None)`.
///
/// # Errors
/// The OS refused the option.
pub fn set_socket_buffers(socket: &std::net::UdpSocket, bytes: usize) -> io::Result<Option<usize>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let set = |opt| crate::sockopt::set_int(fd, libc::SOL_SOCKET, opt, value);
        for (forced, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if set(forced).is_err() {
                set(plain)?;
            }
        }
        let granted = crate::sockopt::get_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
        Ok(usize::try_from(granted).ok())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, bytes);
        Ok(None)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod buffer_tests {
    #[test]
    fn a_socket_gets_at_least_the_default_buffer_and_more_when_permitted() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let granted = super::set_socket_buffers(&socket, 4 << 20)
            .expect("setsockopt")
            .expect("linux reports it");
        // Root (CI) gets the forced size, doubled by the kernel; others at least rmem_max.
        assert!(granted >= 200 << 10, "{granted}");
    }
}
