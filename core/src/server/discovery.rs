//! The server's sockets for NAT behaviour discovery (RFC 5780).
//!
//! With an alternate address configured, the server answers STUN Binding requests on up to
//! four sockets: the primary address (IP1:P1), the alternate (IP2:P2) and the two crossings
//! (IP1:P2, IP2:P1). A client compares the addresses it is seen as from each (mapping
//! behaviour) and asks for answers from another IP and/or port with CHANGE-REQUEST
//! (filtering behaviour). With one IP (IP1 = IP2) only the two ports exist: port-dependence
//! can still be measured, address-dependence cannot.
//!
//! The runtime binds the sockets when asked ([`crate::SocketRequest`]); the alternate may be
//! given with port 0, in which case the crossing sockets are requested once its real port is
//! known.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::error::ConfigError;
use crate::{SocketId, SocketRequest};

/// Socket ids, fixed: primary, alternate, IP1:P2, IP2:P1.
const ALTERNATE: SocketId = SocketId(1);
const IP1_P2: SocketId = SocketId(2);
const IP2_P1: SocketId = SocketId(3);

#[derive(Debug, Default)]
pub(super) struct Sockets {
    /// Bound local address per socket id (index = id).
    addrs: [Option<SocketAddr>; 4],
    requests: VecDeque<SocketRequest>,
}

impl Sockets {
    pub(super) fn enable(
        &mut self,
        primary: SocketAddr,
        alternate: SocketAddr,
    ) -> Result<(), ConfigError> {
        if primary.is_ipv4() != alternate.is_ipv4()
            || primary.port() == 0
            || primary.ip().is_unspecified()
            || alternate.ip().is_unspecified()
            || (alternate.ip() == primary.ip() && alternate.port() == primary.port())
        {
            return Err(ConfigError::Invalid(
                "NAT discovery needs a bound primary address and a different alternate \
                 address of the same family, neither unspecified",
            ));
        }
        if self.addrs[0].is_some() {
            return Err(ConfigError::Invalid("NAT discovery is already enabled"));
        }
        self.addrs[0] = Some(primary);
        self.requests.push_back(SocketRequest::Open {
            id: ALTERNATE,
            addr: Some(alternate),
        });
        Ok(())
    }

    pub(super) fn poll_request(&mut self) -> Option<SocketRequest> {
        self.requests.pop_front()
    }

    pub(super) fn opened(&mut self, id: SocketId, local: Option<SocketAddr>) {
        let Some(slot) = self.addrs.get_mut(usize::from(id.0)) else {
            return;
        };
        if id == SocketId::PRIMARY || slot.is_some() {
            return;
        }
        *slot = local;
        let (Some(primary), Some(alt)) = (self.addrs[0], local) else {
            return;
        };
        if id == ALTERNATE && alt.ip() != primary.ip() {
            self.requests.push_back(SocketRequest::Open {
                id: IP1_P2,
                addr: Some(SocketAddr::new(primary.ip(), alt.port())),
            });
            self.requests.push_back(SocketRequest::Open {
                id: IP2_P1,
                addr: Some(SocketAddr::new(alt.ip(), primary.port())),
            });
        }
    }

    /// The local address of socket `id`, if it is bound and known.
    pub(super) fn addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.addrs.get(usize::from(id.0)).copied().flatten()
    }

    /// True once the alternate socket is bound: responses carry RFC 5780 attributes.
    pub(super) fn enabled(&self) -> bool {
        self.addrs[1].is_some()
    }

    /// True once the alternate socket is bound on another IP than the primary: only then is
    /// there an OTHER-ADDRESS to give (RFC 5780 §7.4) and an IP to change to.
    pub(super) fn two_ips(&self) -> bool {
        match (self.addrs[0], self.addrs[1]) {
            (Some(p), Some(a)) => p.ip() != a.ip(),
            _ => false,
        }
    }

    fn find(&self, addr: SocketAddr) -> Option<SocketId> {
        (0u16..4)
            .map(SocketId)
            .find(|&id| self.addr(id) == Some(addr))
    }

    /// The socket a response to a request received on `on` leaves from, given its
    /// CHANGE-REQUEST `flags`; `None` if there is no such socket.
    pub(super) fn reply_socket(&self, on: SocketId, flags: u32) -> Option<SocketId> {
        use crate::wire::stun::{CHANGE_IP, CHANGE_PORT};
        let local = self.addr(on)?;
        if flags & (CHANGE_IP | CHANGE_PORT) == 0 {
            return Some(on);
        }
        let (p, a) = (self.addr(SocketId::PRIMARY)?, self.addr(ALTERNATE)?);
        let other_ip = if local.ip() == p.ip() { a.ip() } else { p.ip() };
        let other_port = if local.port() == p.port() {
            a.port()
        } else {
            p.port()
        };
        if flags & CHANGE_IP != 0 && other_ip == local.ip() {
            return None; // one IP only
        }
        let ip = if flags & CHANGE_IP != 0 {
            other_ip
        } else {
            local.ip()
        };
        let port = if flags & CHANGE_PORT != 0 {
            other_port
        } else {
            local.port()
        };
        self.find(SocketAddr::new(ip, port))
    }

    /// OTHER-ADDRESS for a request received on `on`: the address differing in both IP and
    /// port (in port only, with one IP).
    pub(super) fn other_address(&self, on: SocketId) -> Option<SocketAddr> {
        let local = self.addr(on)?;
        let (p, a) = (self.addr(SocketId::PRIMARY)?, self.addr(ALTERNATE)?);
        let ip = if local.ip() == p.ip() { a.ip() } else { p.ip() };
        let port = if local.port() == p.port() {
            a.port()
        } else {
            p.port()
        };
        Some(SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::stun::{CHANGE_IP, CHANGE_PORT};

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn two_ips_give_four_sockets_and_every_change_has_a_socket() {
        let mut s = Sockets::default();
        s.enable(a("203.0.113.1:3478"), a("203.0.113.2:0")).unwrap();
        assert_eq!(
            s.poll_request(),
            Some(SocketRequest::Open {
                id: ALTERNATE,
                addr: Some(a("203.0.113.2:0"))
            })
        );
        assert!(!s.enabled());
        s.opened(ALTERNATE, Some(a("203.0.113.2:4000")));
        assert!(s.enabled());
        let r: Vec<_> = std::iter::from_fn(|| s.poll_request()).collect();
        assert_eq!(
            r,
            [
                SocketRequest::Open {
                    id: IP1_P2,
                    addr: Some(a("203.0.113.1:4000"))
                },
                SocketRequest::Open {
                    id: IP2_P1,
                    addr: Some(a("203.0.113.2:3478"))
                },
            ]
        );
        s.opened(IP1_P2, Some(a("203.0.113.1:4000")));
        s.opened(IP2_P1, Some(a("203.0.113.2:3478")));
        let p = SocketId::PRIMARY;
        assert_eq!(s.reply_socket(p, 0), Some(p));
        assert_eq!(s.reply_socket(p, CHANGE_IP | CHANGE_PORT), Some(ALTERNATE));
        assert_eq!(s.reply_socket(p, CHANGE_PORT), Some(IP1_P2));
        assert_eq!(s.reply_socket(p, CHANGE_IP), Some(IP2_P1));
        assert_eq!(s.reply_socket(ALTERNATE, CHANGE_IP | CHANGE_PORT), Some(p));
        assert_eq!(s.reply_socket(IP1_P2, CHANGE_IP), Some(ALTERNATE));
        assert_eq!(s.other_address(p), Some(a("203.0.113.2:4000")));
        assert_eq!(s.other_address(IP2_P1), Some(a("203.0.113.1:4000")));
        assert!(s.two_ips());
    }

    #[test]
    fn one_ip_gives_two_ports_and_no_ip_change() {
        let mut s = Sockets::default();
        s.enable(a("127.0.0.1:3478"), a("127.0.0.1:3479")).unwrap();
        let _ = s.poll_request();
        s.opened(ALTERNATE, Some(a("127.0.0.1:3479")));
        assert_eq!(s.poll_request(), None);
        let p = SocketId::PRIMARY;
        assert_eq!(s.reply_socket(p, CHANGE_PORT), Some(ALTERNATE));
        assert_eq!(s.reply_socket(p, CHANGE_IP), None);
        assert_eq!(s.other_address(p), Some(a("127.0.0.1:3479")));
        assert!(!s.two_ips());
    }

    #[test]
    fn a_failed_alternate_leaves_discovery_off() {
        let mut s = Sockets::default();
        assert!(s.enable(a("0.0.0.0:3478"), a("127.0.0.1:1")).is_err());
        assert!(
            s.enable(a("127.0.0.1:3478"), a("[::1]:3479")).is_err(),
            "mixed families"
        );
        s.enable(a("127.0.0.1:3478"), a("127.0.0.2:3479")).unwrap();
        let _ = s.poll_request();
        s.opened(ALTERNATE, None);
        assert!(!s.enabled());
        assert_eq!(s.poll_request(), None);
        assert_eq!(s.reply_socket(SocketId::PRIMARY, CHANGE_PORT), None);
    }
}
