//! What a runtime takes from the operating system besides the socket: entropy, wall-clock
//! time and the host's interface addresses.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 32 bytes from the OS CSPRNG, for the `seed` of `Client::new` / `Server::new`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
