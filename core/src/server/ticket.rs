//! Resumption tickets: what lets a client get its host id back from a server that no longer
//! has its session (the server restarted, or the session timed out), so the game's own state
//! keyed by host id, and peers' direct paths, survive.
//!
//! A ticket is issued on the control stream after the Welcome and renewed at half its
//! lifetime. It travels only inside sealed packets (the control stream, and the `Resume`
//! frame of a later handshake's Connect packet), so an eavesdropper never sees one. It is
//! sealed with a key derived from the server's static key ([`crate::crypto::TicketKey`]):
//! only this server (or a restart of it with the same key) can read it. Each ticket is good
//! once: the server remembers the ids of tickets presented until they expire (a bounded set;
//! when it is full, resumption is refused rather than a replay risked).

use std::collections::BTreeMap;

use rand::RngCore;

use crate::crypto::{SecretKey, TICKET_BODY, TICKET_LEN, TicketKey};
use crate::event::HostId;
use crate::rng::Rng;
use crate::stats::ServerStats;
use crate::time::{Duration, Instant};

const VERSION: u8 = 1;
/// Ticket ids remembered at most (each for at most the ticket lifetime).
pub(super) const MAX_USED: usize = 65_536;

/// The server's tickets: the key that seals them, the ids already presented, and when a
/// session's ticket is issued again.
pub(super) struct Tickets {
    /// Seals tickets (derived from the static key: survives restarts).
    key: TicketKey,
    /// Tickets already presented.
    used: Used,
    /// How long a ticket is good for; zero: no tickets.
    lifetime: Duration,
}

impl Tickets {
    pub(super) fn new(secret: &SecretKey, lifetime: Duration) -> Self {
        Self {
            key: TicketKey::derive(secret),
            used: Used::default(),
            lifetime,
        }
    }

    /// A `Resume` frame's ticket, presented at `unix_now` (seconds): what it says if it is
    /// authentic, unexpired and never presented before (and tickets are on). Anything else is
    /// counted in `dropped.bad_tickets`.
    pub(super) fn handle_resume(
        &mut self,
        unix_now: u64,
        sealed: &[u8],
        stats: &mut ServerStats,
    ) -> Option<Ticket> {
        let lifetime = self.lifetime;
        let used = &mut self.used;
        let ok = Ticket::open(&self.key, sealed)
            .filter(|t| !lifetime.is_zero() && used.take(t, unix_now));
        if ok.is_none() {
            stats.dropped.bad_tickets += 1;
        }
        ok
    }

    /// A fresh sealed ticket for `host` (and its token's `user_id`) at `unix_now`, or `None`
    /// when tickets are off. Draws its id and nonce from `rng`.
    pub(super) fn issue(
        &self,
        unix_now: u64,
        host: HostId,
        user_id: Option<u64>,
        rng: &mut Rng,
    ) -> Option<[u8; TICKET_LEN]> {
        if self.lifetime.is_zero() {
            return None;
        }
        let t = Ticket {
            host,
            user_id,
            expires: unix_now + self.lifetime.as_secs().max(1),
            id: rng.next_u64(),
        };
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        Some(t.seal(&self.key, nonce))
    }
}

/// When a session whose ticket was issued at `issued` gets a new one: at half the ticket
/// lifetime, so that it always holds a good one; never when tickets are off.
pub(super) fn renewal(issued: Instant, lifetime: Duration) -> Option<Instant> {
    (!lifetime.is_zero()).then(|| issued + lifetime / 2)
}

/// What a ticket says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ticket {
    pub(super) host: HostId,
    pub(super) user_id: Option<u64>,
    /// Unix seconds.
    pub(super) expires: u64,
    /// Unique per ticket: the single-use check.
    pub(super) id: u64,
}

impl Ticket {
    pub(super) fn seal(&self, key: &TicketKey, nonce: [u8; 12]) -> [u8; TICKET_LEN] {
        let mut b = [0u8; TICKET_BODY];
        b[0] = VERSION;
        b[1..9].copy_from_slice(&self.host.0.to_be_bytes());
        b[9] = u8::from(self.user_id.is_some());
        b[10..18].copy_from_slice(&self.user_id.unwrap_or(0).to_be_bytes());
        b[18..26].copy_from_slice(&self.expires.to_be_bytes());
        b[26..34].copy_from_slice(&self.id.to_be_bytes());
        key.seal(nonce, &b)
    }

    pub(super) fn open(key: &TicketKey, ticket: &[u8]) -> Option<Self> {
        let b = key.open(ticket)?;
        if b[0] != VERSION || b[9] > 1 {
            return None;
        }
        let u = |r: std::ops::Range<usize>| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[r]);
            u64::from_be_bytes(x)
        };
        Some(Self {
            host: HostId(u(1..9)),
            user_id: (b[9] == 1).then(|| u(10..18)),
            expires: u(18..26),
            id: u(26..34),
        })
    }
}

/// Ids of tickets already presented, with their expiry.
#[derive(Default)]
pub(super) struct Used(BTreeMap<u64, u64>);

impl Used {
    /// Records ticket `t` as presented at `now` (unix seconds). False if it was presented
    /// before, has expired, or the set is full.
    pub(super) fn take(&mut self, t: &Ticket, now: u64) -> bool {
        if now >= t.expires || self.0.contains_key(&t.id) {
            return false;
        }
        if self.0.len() >= MAX_USED {
            self.0.retain(|_, exp| *exp > now);
            if self.0.len() >= MAX_USED {
                return false;
            }
        }
        self.0.insert(t.id, t.expires);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    fn key(b: u8) -> TicketKey {
        TicketKey::derive(&SecretKey::from_bytes([b; 32]))
    }

    #[test]
    fn a_ticket_opens_only_under_its_key_and_unaltered() {
        let t = Ticket {
            host: HostId(0xAB_0000_0007),
            user_id: Some(42),
            expires: 1_800_000_600,
            id: 99,
        };
        let sealed = t.seal(&key(1), [3; 12]);
        assert_eq!(Ticket::open(&key(1), &sealed), Some(t));
        assert_eq!(Ticket::open(&key(2), &sealed), None);
        for i in 0..sealed.len() {
            let mut bad = sealed;
            bad[i] ^= 1;
            assert_eq!(Ticket::open(&key(1), &bad), None, "byte {i}");
        }
        assert_eq!(Ticket::open(&key(1), &sealed[1..]), None);
    }

    #[test]
    fn tickets_issued_open_once_and_not_at_all_when_off() {
        let secret = SecretKey::from_bytes([4; 32]);
        let mut rng = crate::rng::derive(&[9; 32], b"test");
        let mut stats = ServerStats::default();
        let mut on = Tickets::new(&secret, Duration::from_secs(600));
        let sealed = on.issue(1000, HostId(7), Some(3), &mut rng).unwrap();
        let t = on.handle_resume(1001, &sealed, &mut stats).unwrap();
        assert_eq!((t.host, t.user_id, t.expires), (HostId(7), Some(3), 1600));
        assert_eq!(
            on.handle_resume(1002, &sealed, &mut stats),
            None,
            "replayed"
        );
        assert_eq!(on.handle_resume(1002, &sealed[1..], &mut stats), None);
        assert_eq!(stats.dropped.bad_tickets, 2);
        let mut off = Tickets::new(&secret, Duration::ZERO);
        assert_eq!(off.issue(1000, HostId(7), None, &mut rng), None);
        let sealed = Tickets::new(&secret, Duration::from_secs(600))
            .issue(1000, HostId(8), None, &mut rng)
            .unwrap();
        assert_eq!(off.handle_resume(1001, &sealed, &mut stats), None);
        let t0 = crate::tests::epoch();
        assert_eq!(renewal(t0, Duration::ZERO), None);
        assert_eq!(
            renewal(t0, Duration::from_secs(600)),
            Some(t0 + Duration::from_secs(300))
        );
    }

    #[test]
    fn a_ticket_is_good_once_and_not_after_expiry() {
        let mut used = Used::default();
        let t = Ticket {
            host: HostId(1),
            user_id: None,
            expires: 100,
            id: 5,
        };
        assert!(used.take(&t, 50));
        assert!(!used.take(&t, 51), "replayed");
        assert!(!used.take(&Ticket { id: 6, ..t }, 100), "expired");
    }
}
