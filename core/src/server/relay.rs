//! The relay's budgets: how many bytes each client, each group and the whole server may have
//! relayed per second. A client's budget belongs to the forwarder that owns its session (one
//! place checks each of its packets); a group's and the server's are shared by every
//! forwarder, on every thread ([`Budgets`]), and each forwarder draws on them through a small
//! local lease ([`Leases`]) so that threads touch the shared lock once per lease, not once
//! per packet.
//!
//! With one forwarder (the server relaying on its own thread) the lease is zero: every packet
//! takes its bytes from the shared buckets, exactly. With `n` forwarders a group or the server
//! may relay at most `n` leases more than its budget in a burst (what the forwarders hold and
//! have not spent), and never more over time.

use std::sync::{Mutex, PoisonError};

use crate::config::ServerConfig;
use crate::event::GroupId;
use crate::ratelimit::Bucket;
use crate::time::Instant;

/// Most bytes a forwarder leases from a shared budget at once.
pub(super) const MAX_LEASE: u32 = 16 * 1024;

/// The budgets every forwarder shares: each group's and the whole server's.
#[derive(Debug)]
pub(crate) struct Budgets {
    /// Bytes per second each group may relay (burst: a quarter second of it).
    group_rate: u32,
    /// Bytes per second the whole server relays (burst: a quarter second of it).
    total_rate: u32,
    shared: Mutex<Shared>,
}

#[derive(Debug)]
struct Shared {
    total: Bucket,
    /// Each group's budget, by group slot, tagged with the group's id (a new group in the
    /// slot starts with a full budget; the table is as long as the most groups at once).
    groups: Vec<(GroupId, Bucket)>,
}

/// Which budget refused a packet (all are counted as `relay_rate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    Client,
    Group,
    Total,
}

impl Budgets {
    pub(crate) fn new(config: &ServerConfig) -> Self {
        Self {
            group_rate: config.relay_rate_per_group,
            total_rate: config.relay_rate_total,
            shared: Mutex::new(Shared {
                total: Bucket::EMPTY,
                groups: Vec::new(),
            }),
        }
    }

    /// The lease for one of `forwarders` forwarders: zero for one (exact budgets), else a
    /// slice small enough that the forwarders together hold at most a quarter of the smaller
    /// burst.
    pub(super) fn lease_for(&self, forwarders: usize) -> u32 {
        if forwarders <= 1 {
            return 0;
        }
        let burst = (self.group_rate / 4).min(self.total_rate / 4);
        (burst / 4 / forwarders as u32).min(MAX_LEASE)
    }

    /// Takes `group_n` bytes from `group`'s bucket and `total_n` from the server's, both or
    /// neither.
    fn take(
        &self,
        now: Instant,
        group: GroupId,
        group_n: u32,
        total_n: u32,
    ) -> Result<(), Refused> {
        // A poisoned lock means another forwarder panicked mid-update of two counters; the
        // buckets are still valid numbers, so carry on with them.
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let Shared { total, groups } = &mut *s;
        let slot = (group.0 & u64::from(u32::MAX)) as usize;
        if slot >= groups.len() {
            groups.resize(slot + 1, (GroupId(0), Bucket::EMPTY));
        }
        let entry = &mut groups[slot];
        if entry.0 != group {
            *entry = (group, Bucket::EMPTY);
        }
        // Check both before taking from either: a refusal costs no budget.
        let (mut g, mut t) = (entry.1, *total);
        let (gr, tr) = (self.group_rate, self.total_rate);
        if group_n > 0 && !g.take_n(now, gr, gr / 4, group_n) {
            return Err(Refused::Group);
        }
        if total_n > 0 && !t.take_n(now, tr, tr / 4, total_n) {
            return Err(Refused::Total);
        }
        (entry.1, *total) = (g, t);
        Ok(())
    }
}

/// One forwarder's leases on the shared budgets: bytes already taken from them and not yet
/// spent.
#[derive(Debug, Default)]
pub(super) struct Leases {
    /// Bytes leased per take beyond what a packet needs.
    lease: u32,
    total: u32,
    /// By group slot, tagged with the group's id.
    groups: Vec<(GroupId, u32)>,
}

impl Leases {
    pub(super) fn new(lease: u32) -> Self {
        Self {
            lease,
            ..Self::default()
        }
    }

    /// Takes `n` bytes from `group`'s budget and the server's: from the leases where they
    /// hold enough, else from the shared buckets (with a fresh lease on top where that fits).
    pub(super) fn take(
        &mut self,
        now: Instant,
        budgets: &Budgets,
        group: GroupId,
        n: u32,
    ) -> Result<(), Refused> {
        let slot = (group.0 & u64::from(u32::MAX)) as usize;
        if slot >= self.groups.len() {
            self.groups.resize(slot + 1, (GroupId(0), 0));
        }
        let held = &mut self.groups[slot];
        if held.0 != group {
            *held = (group, 0);
        }
        let group_short = n.saturating_sub(held.1);
        let total_short = n.saturating_sub(self.total);
        if group_short > 0 || total_short > 0 {
            let ask = |short: u32| if short > 0 { short + self.lease } else { 0 };
            let (g, t) = (ask(group_short), ask(total_short));
            // The lease on top, if there is room for it; else exactly what is short.
            if budgets.take(now, group, g, t).is_err() {
                budgets.take(now, group, group_short, total_short)?;
                held.1 += group_short;
                self.total += total_short;
            } else {
                held.1 += g;
                self.total += t;
            }
        }
        held.1 -= n;
        self.total -= n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use crate::time::Duration;

    const GROUP: GroupId = GroupId((1 << 32) | 3);

    fn budgets(f: impl FnOnce(&mut ServerConfig)) -> Budgets {
        let mut cfg = ServerConfig::new(SecretKey::from_bytes([1; 32]));
        f(&mut cfg);
        Budgets::new(&cfg)
    }

    #[test]
    fn one_forwarder_takes_exactly_and_a_refusal_costs_nothing() {
        let b = budgets(|c| {
            c.relay_rate_per_group = 4000; // burst 1000
            c.relay_rate_total = 8000; // burst 2000
        });
        assert_eq!(b.lease_for(1), 0);
        let mut l = Leases::new(b.lease_for(1));
        let now = crate::tests::epoch();
        assert_eq!(l.take(now, &b, GROUP, 600), Ok(()));
        assert_eq!(l.take(now, &b, GROUP, 600), Err(Refused::Group));
        // The refused packet took nothing: 400 are left in the group, 1400 in the total.
        assert_eq!(l.take(now, &b, GROUP, 400), Ok(()));
        let other = GroupId((1 << 32) | 4);
        assert_eq!(l.take(now, &b, other, 1000), Ok(()));
        let third = GroupId((1 << 32) | 5);
        assert_eq!(l.take(now, &b, third, 1), Err(Refused::Total));
        let later = now + Duration::from_millis(100); // +400 group, +800 total
        assert_eq!(l.take(later, &b, GROUP, 400), Ok(()));
        assert_eq!((l.total, l.groups[3].1), (0, 0), "nothing leased");
    }

    #[test]
    fn a_new_group_in_a_slot_starts_full() {
        let b = budgets(|c| c.relay_rate_per_group = 4000);
        let mut l = Leases::new(0);
        let now = crate::tests::epoch();
        assert_eq!(l.take(now, &b, GROUP, 1000), Ok(()));
        assert_eq!(l.take(now, &b, GROUP, 1), Err(Refused::Group));
        let successor = GroupId((2 << 32) | 3);
        assert_eq!(l.take(now, &b, successor, 1000), Ok(()));
    }

    #[test]
    fn forwarders_share_a_group_budget_through_leases_and_overdraw_at_most_their_leases() {
        let b = budgets(|c| {
            c.relay_rate_per_group = 64_000; // burst 16 000
            c.relay_rate_total = 1 << 30;
        });
        let lease = b.lease_for(2);
        assert_eq!(lease, 2000, "a quarter of the burst over two forwarders");
        let (mut x, mut y) = (Leases::new(lease), Leases::new(lease));
        let now = crate::tests::epoch();
        let mut taken = 0;
        for i in 0.. {
            let l = if i % 2 == 0 { &mut x } else { &mut y };
            if l.take(now, &b, GROUP, 100).is_err() {
                break;
            }
            taken += 100;
        }
        // What was relayed plus what the two still hold is the burst, less what is left in
        // the shared bucket: less than one packet.
        let held = x.groups[3].1 + y.groups[3].1;
        assert!(
            (16_000 - 100 + 1..=16_000).contains(&(taken + held)),
            "{taken} + {held}"
        );
        assert!(held <= 2 * lease);
    }
}
