//! What the world sees of this client: STUN Binding queries to any server
//! ([`crate::Client::query_stun`]) and RFC 5780 NAT behaviour discovery
//! ([`crate::Client::discover_nat`]), all from the primary socket. Each query is a
//! [`StunBinding`], discovery a [`NatDiscovery`]; this runs them side by side and reports
//! their results as events.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rand::RngCore;

use crate::error::CommandError;
use crate::event::ClientEvent;
use crate::nat::{NatBehavior, NatDiscovery};
use crate::rng::Rng;
use crate::stun::{DEFAULT_STUN_RTO, DEFAULT_STUN_TRIES, StunBinding};
use crate::time::{Instant, Timeout};
use crate::{SocketId, Transmit};

/// STUN transactions one client runs at once, at most.
const MAX_STUN_QUERIES: usize = 8;

#[derive(Default)]
pub(super) struct Discovery {
    /// STUN Binding transactions under way.
    queries: Vec<StunBinding>,
    /// NAT behaviour discovery under way.
    nat: Option<NatDiscovery>,
    /// The discovery under way was started by the session (and ends with it).
    auto: bool,
    /// What discovery found about this client's NAT.
    behavior: Option<NatBehavior>,
    events: VecDeque<ClientEvent>,
}

impl Discovery {
    /// What discovery found about this client's NAT, once it finished.
    pub(super) fn behavior(&self) -> Option<NatBehavior> {
        self.behavior
    }

    /// Starts a STUN query to `server`.
    pub(super) fn query(
        &mut self,
        now: Instant,
        server: SocketAddr,
        rng: &mut Rng,
    ) -> Result<(), CommandError> {
        if self.queries.len() >= MAX_STUN_QUERIES {
            return Err(CommandError::QueueFull);
        }
        let mut txid = [0u8; 12];
        rng.fill_bytes(&mut txid);
        self.queries.push(StunBinding::new(
            now,
            server,
            txid,
            DEFAULT_STUN_RTO,
            DEFAULT_STUN_TRIES,
        ));
        Ok(())
    }

    /// Starts `nat`, replacing a discovery under way; `auto`: the session started it (it
    /// ends with it).
    pub(super) fn discover(&mut self, nat: NatDiscovery, auto: bool) {
        self.nat = Some(nat);
        self.auto = auto;
    }

    /// The server session ended: a discovery it started ends too.
    pub(super) fn forget_auto(&mut self) {
        if self.auto {
            self.nat = None;
        }
    }

    /// A STUN message from `from` on `socket`; false if it answers nothing under way.
    pub(super) fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        if socket != SocketId::PRIMARY {
            return false;
        }
        if self
            .nat
            .as_mut()
            .is_some_and(|d| d.handle_datagram(now, from, datagram))
        {
            self.finish_nat();
            true
        } else if self
            .queries
            .iter_mut()
            .any(|b| b.handle_datagram(from, datagram))
        {
            self.finish_queries();
            true
        } else {
            false
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        for b in &mut self.queries {
            b.handle_timeout(now);
        }
        self.finish_queries();
        if let Some(d) = &mut self.nat {
            d.handle_timeout(now);
            self.finish_nat();
        }
    }

    /// Reports finished STUN queries.
    fn finish_queries(&mut self) {
        let mut i = 0;
        while i < self.queries.len() {
            if let Some(result) = self.queries[i].result() {
                let b = self.queries.swap_remove(i);
                self.events.push_back(ClientEvent::StunResult {
                    server: b.server(),
                    result,
                });
            } else {
                i += 1;
            }
        }
    }

    /// Reports a finished discovery.
    fn finish_nat(&mut self) {
        let Some(result) = self.nat.as_ref().and_then(NatDiscovery::result) else {
            return;
        };
        let Some(d) = self.nat.take() else {
            return;
        };
        if let Ok(b) = result {
            self.behavior = Some(b);
        }
        self.events.push_back(ClientEvent::NatDiscovered {
            server: d.server(),
            result,
        });
    }

    pub(super) fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let nat = self.nat.as_mut().and_then(|d| d.poll_transmit(buf));
        nat.or_else(|| self.queries.iter_mut().find_map(|b| b.poll_transmit(buf)))
    }

    pub(super) fn poll_timeout(&self) -> Option<Timeout> {
        let queries = self
            .queries
            .iter()
            .filter_map(StunBinding::poll_timeout)
            .min();
        Timeout::min([
            Timeout::at(queries, "stun retransmit"),
            Timeout::at(
                self.nat.as_ref().and_then(NatDiscovery::poll_timeout),
                "nat discovery",
            ),
        ])
    }

    pub(super) fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded_retransmitted_and_reported_when_they_give_up() {
        let t0 = crate::tests::epoch();
        let mut rng = crate::rng::derive(&[1; 32], b"test");
        let mut d = Discovery::default();
        let server: SocketAddr = "192.0.2.7:3478".parse().unwrap();
        for _ in 0..MAX_STUN_QUERIES {
            d.query(t0, server, &mut rng).unwrap();
        }
        assert_eq!(d.query(t0, server, &mut rng), Err(CommandError::QueueFull));
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        let mut sent = 0;
        while d.poll_transmit(&mut buf).is_some() {
            sent += 1;
        }
        assert_eq!(sent, MAX_STUN_QUERIES);
        let first = d.poll_timeout().unwrap();
        assert_eq!(first.reason, "stun retransmit");
        // Unanswered: they give up after their tries, each reported once.
        let mut now = t0;
        while let Some(t) = d.poll_timeout() {
            now = t.at;
            d.handle_timeout(now);
            while d.poll_transmit(&mut buf).is_some() {}
        }
        let results: Vec<_> = std::iter::from_fn(|| d.poll_event()).collect();
        assert_eq!(results.len(), MAX_STUN_QUERIES);
        assert!(
            results
                .iter()
                .all(|e| matches!(e, ClientEvent::StunResult { result: Err(_), .. }))
        );
        // A datagram that answers nothing under way is not consumed, nor one on another
        // socket.
        assert!(!d.handle_datagram(now, SocketId::PRIMARY, server, &buf[..20]));
        assert!(!d.handle_datagram(now, SocketId(3), server, &buf[..20]));
    }

    #[test]
    fn only_a_discovery_the_session_started_ends_with_it() {
        let t0 = crate::tests::epoch();
        let mut rng = crate::rng::derive(&[2; 32], b"test");
        let server: SocketAddr = "192.0.2.7:3478".parse().unwrap();
        let mut d = Discovery::default();
        let nat = |rng: &mut Rng| {
            let mut txid = [0u8; 12];
            rng.fill_bytes(&mut txid);
            NatDiscovery::new(t0, server, None, txid)
        };
        d.discover(nat(&mut rng), false);
        d.forget_auto();
        assert_eq!(d.poll_timeout().map(|t| t.reason), Some("nat discovery"));
        d.discover(nat(&mut rng), true);
        d.forget_auto();
        assert_eq!(d.poll_timeout(), None);
    }
}
