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

use crate::crypto::{TICKET_BODY, TICKET_LEN, TicketKey};
use crate::event::HostId;

const VERSION: u8 = 1;
/// Ticket ids remembered at most (each for at most the ticket lifetime).
pub(super) const MAX_USED: usize = 65_536;

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
