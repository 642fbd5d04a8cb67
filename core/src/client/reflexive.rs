//! Server-reflexive candidates from STUN servers other than the session's own
//! ([`crate::ClientConfig::stun_servers`]): how the internet sees this client's socket in a
//! family its session does not use. A client whose session runs over IPv4 learns, from an
//! IPv6 STUN server, the address its IPv6 traffic leaves with behind NAT66 or NPTv6 (its own
//! global address needs no asking: it is a LAN candidate already); one whose session runs
//! over IPv6 learns its IPv4 mapping the same way.
//!
//! Each server is asked from the primary socket once the session is up and again every
//! [`REFRESH`] (which also keeps the mapping alive for peers to punch), one [`StunBinding`]
//! at a time per server. An answer that differs from the last one from that server marks the
//! set changed; the client then announces its candidates again. A server that stops
//! answering loses its address (a mapping nobody confirms is not offered).

use std::net::SocketAddr;

use rand::RngCore;
use smallvec::SmallVec;

use crate::rng::Rng;
use crate::stun::{DEFAULT_STUN_RTO, DEFAULT_STUN_TRIES, StunBinding};
use crate::time::{Duration, Instant, Timeout};
use crate::{SocketId, Transmit};

/// How often each server is asked again while the session is up: under the 30 s a Linux
/// router keeps an unanswered UDP flow, so the mapping a peer may punch stays.
pub(super) const REFRESH: Duration = Duration::from_secs(25);

/// Servers asked at most ([`crate::ClientConfig::stun_servers`] is checked against it).
pub(crate) const MAX_STUN_SERVERS: usize = 4;

struct Probe {
    server: SocketAddr,
    txn: Option<StunBinding>,
    /// What the latest answer said.
    found: Option<SocketAddr>,
    /// When to ask again.
    next_at: Option<Instant>,
}

/// The probes, one per configured server (see the module docs).
#[derive(Default)]
pub(super) struct Reflexive {
    probes: SmallVec<[Probe; MAX_STUN_SERVERS]>,
    changed: bool,
    /// Answers taken; requests that went unanswered.
    pub(super) answers: u64,
    pub(super) timeouts: u64,
}

impl Reflexive {
    /// Probes for `servers` (at most [`MAX_STUN_SERVERS`], checked by the config), idle.
    pub(super) fn new(servers: &[SocketAddr]) -> Self {
        Self {
            probes: servers
                .iter()
                .take(MAX_STUN_SERVERS)
                .map(|&server| Probe {
                    server,
                    txn: None,
                    found: None,
                    next_at: None,
                })
                .collect(),
            ..Self::default()
        }
    }

    /// The session is up: ask every server now.
    pub(super) fn start(&mut self, now: Instant) {
        for p in &mut self.probes {
            p.next_at = Some(now);
        }
    }

    /// The session ended (or the socket changed): forget what was found, stop asking until
    /// [`Reflexive::start`].
    pub(super) fn stop(&mut self) {
        for p in &mut self.probes {
            self.changed |= p.found.take().is_some();
            p.txn = None;
            p.next_at = None;
        }
    }

    /// Distinct addresses found, in server order.
    pub(super) fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.probes.iter().enumerate().filter_map(|(i, p)| {
            let a = p.found?;
            (!self.probes[..i].iter().any(|q| q.found == Some(a))).then_some(a)
        })
    }

    /// Whether the addresses changed since the last call.
    pub(super) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// An answer from one of the servers on the primary socket; false if it answers no
    /// request under way (the caller passes it on).
    pub(super) fn handle_datagram(
        &mut self,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        if socket != SocketId::PRIMARY {
            return false;
        }
        let Some(p) = self.probes.iter_mut().find_map(|p| {
            let taken = p
                .txn
                .as_mut()
                .is_some_and(|t| t.handle_datagram(from, datagram));
            taken.then_some(p)
        }) else {
            return false;
        };
        if let Some(Ok(addr)) = p.txn.as_ref().and_then(StunBinding::result) {
            let addr = crate::canonical(addr);
            self.answers += 1;
            self.changed |= p.found != Some(addr);
            p.found = Some(addr);
            p.txn = None;
        }
        true
    }

    pub(super) fn handle_timeout(&mut self, now: Instant, rng: &mut Rng) {
        for p in &mut self.probes {
            if let Some(t) = &mut p.txn {
                t.handle_timeout(now);
                if let Some(Err(_)) = t.result() {
                    // Unconfirmed: not offered any more.
                    self.timeouts += 1;
                    self.changed |= p.found.take().is_some();
                    p.txn = None;
                }
            }
            if p.txn.is_none() && p.next_at.is_some_and(|at| at <= now) {
                let mut txid = [0u8; 12];
                rng.fill_bytes(&mut txid);
                p.txn = Some(StunBinding::new(
                    now,
                    p.server,
                    txid,
                    DEFAULT_STUN_RTO,
                    DEFAULT_STUN_TRIES,
                ));
                p.next_at = Some(now + REFRESH);
            }
        }
    }

    pub(super) fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.probes
            .iter_mut()
            .find_map(|p| p.txn.as_mut().and_then(|t| t.poll_transmit(buf)))
    }

    pub(super) fn poll_timeout(&self) -> Option<Timeout> {
        let at = self
            .probes
            .iter()
            .flat_map(|p| {
                [
                    p.txn.as_ref().and_then(StunBinding::poll_timeout),
                    p.next_at,
                ]
            })
            .flatten()
            .min();
        Timeout::at(at, "reflexive probe")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::stun::StunMessage;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A Binding success for `request` naming `mapped` (XOR-MAPPED-ADDRESS), as any server
    /// answers.
    fn answer(request: &[u8], mapped: SocketAddr) -> Vec<u8> {
        let m = StunMessage::decode(request).unwrap();
        let mut out = vec![0u8; 512];
        let n = crate::wire::stun::encode_binding_response(&mut out, &m.transaction_id, mapped)
            .unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn each_server_is_asked_once_up_and_again_every_refresh_and_its_answer_is_offered() {
        let t0 = crate::tests::epoch();
        let mut rng = crate::rng::derive(&[3; 32], b"test");
        let v6 = a("[2001:db8::1]:3478");
        let mut r = Reflexive::new(&[v6]);
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        // Idle until the session is up.
        r.handle_timeout(t0, &mut rng);
        assert!(r.poll_transmit(&mut buf).is_none());
        assert_eq!(r.poll_timeout(), None);
        r.start(t0);
        r.handle_timeout(t0, &mut rng);
        let t = r.poll_transmit(&mut buf).expect("a request");
        assert_eq!((t.dst, t.socket), (v6, SocketId::PRIMARY));
        let mapped = a("[2001:db8:ffff::7]:40000");
        assert!(r.handle_datagram(SocketId::PRIMARY, v6, &answer(&buf[..t.len], mapped)));
        assert!(r.take_changed());
        assert_eq!(r.addresses().collect::<Vec<_>>(), [mapped]);
        // The same answer again changes nothing; the next request comes at REFRESH.
        assert_eq!(r.poll_timeout().map(|t| t.at), Some(t0 + REFRESH));
        r.handle_timeout(t0 + REFRESH, &mut rng);
        let t = r.poll_transmit(&mut buf).expect("a refresh");
        assert!(r.handle_datagram(SocketId::PRIMARY, v6, &answer(&buf[..t.len], mapped)));
        assert!(!r.take_changed());
        // Another socket's datagram, or an answer to nothing, is not its.
        assert!(!r.handle_datagram(SocketId(7), v6, &answer(&buf[..t.len], mapped)));
        assert!(!r.handle_datagram(SocketId::PRIMARY, v6, &answer(&buf[..t.len], mapped)));
        assert_eq!(r.answers, 2);
    }

    #[test]
    fn a_server_that_stops_answering_loses_its_address_and_stop_forgets_all() {
        let t0 = crate::tests::epoch();
        let mut rng = crate::rng::derive(&[4; 32], b"test");
        let (s1, s2) = (a("[2001:db8::1]:3478"), a("198.51.100.1:3478"));
        let mut r = Reflexive::new(&[s1, s2]);
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        r.start(t0);
        r.handle_timeout(t0, &mut rng);
        let (m1, m2) = (a("[2001:db8:ffff::7]:40000"), a("203.0.113.9:40000"));
        while let Some(t) = r.poll_transmit(&mut buf) {
            let m = if t.dst == s1 { m1 } else { m2 };
            assert!(r.handle_datagram(SocketId::PRIMARY, t.dst, &answer(&buf[..t.len], m)));
        }
        assert!(r.take_changed());
        assert_eq!(r.addresses().collect::<Vec<_>>(), [m1, m2]);
        // From REFRESH on, nothing answers: once the requests give up, no address is left.
        let mut now = t0 + REFRESH;
        r.handle_timeout(now, &mut rng);
        while r.addresses().next().is_some() {
            while r.poll_transmit(&mut buf).is_some() {}
            now = r.poll_timeout().unwrap().at;
            r.handle_timeout(now, &mut rng);
        }
        assert!(r.take_changed());
        assert_eq!(r.timeouts, 2);
        assert!(now < t0 + REFRESH * 2, "given up within a refresh");
        // stop(): nothing asked or offered until started again.
        r.stop();
        assert_eq!(r.poll_timeout(), None);
    }
}
