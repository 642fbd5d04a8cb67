//! The extra local sockets of birthday probing: opened (through the runtime, as
//! [`SocketRequest`]s) while some peer is the hard side of a birthday round, closed after,
//! except the ones a direct path found on them still uses.
//!
//! Every socket that sprays towards a peer makes one mapping in our (endpoint-dependent) NAT,
//! and that mapping lives on for the NAT's idle timeout after its last packet: a router's
//! table is finite, and behind a carrier NAT it is shared with strangers. So the pool keeps a
//! **binding budget**: a ledger of sprays: which sockets (of which opening of the pool)
//! sprayed towards which address, and when last. A peer asks for sockets towards an address
//! ([`SocketPool::sockets_towards`]). A spray that goes on (the same sockets, the same
//! address, probes less than [`REFRESH_GAP`] apart) keeps its mappings fresh and costs
//! nothing more; a new one, or one after a pause, is granted only while the mappings of the
//! last [`BUDGET_WINDOW`] stay within the budget ([`BUDGET_DESTINATIONS`] full sets of
//! sockets), shared by every peer. (After a pause the NAT may have dropped the mappings and
//! makes new ones; behind two NATs, the outer one still holds the old ones: so a pause
//! counts as new mappings.) The pool is not (re)opened while the budget is spent.
//!
//! It also holds the **fresh sockets** of lost-race retries (`path.rs`): one socket at a
//! time per retry, bound to a port both ends derive from the pair, so the peer knows where
//! our NAT maps it when the NAT preserves ports. Each is one new mapping in our NAT, so they
//! have a budget of their own ([`FRESH_BUDGET`] per [`BUDGET_WINDOW`], every peer together)
//! and close as soon as their retry is over, unless a direct path found on one uses it.
//!
//! And it keeps the ledger of **lockstep sweeps** (`path.rs`): behind an endpoint-dependent
//! NAT, every destination of a sweep is one new mapping of the primary socket; a sweep is
//! granted its mappings only while those of the last [`BUDGET_WINDOW`] stay within
//! [`LOCKSTEP_BUDGET`], every peer together.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::time::{Duration, Instant};
use crate::{SocketId, SocketRequest};

/// How long the ledger counts a mapping after the last sprayed probe that used it. A NAT
/// drops an unanswered flow after its idle timeout: Linux conntrack after 30 s, a carrier
/// NAT (the simulator's, RFC 6888) after 120 s, and RFC 4787 (REQ-5) asks for at least 2
/// minutes. Counting 2 minutes (plus 5 s for the probes to reach the NAT) covers those;
/// behind a NAT that keeps unanswered flows longer, the budget is a rate (so many mappings
/// per 2 minutes) instead.
pub(super) const BUDGET_WINDOW: Duration = Duration::from_secs(125);
/// Probes from the same sockets to the same address less than this apart keep the same
/// mappings (a spray sweeps its sockets every second); after a longer pause they count as
/// new ones. Shorter than any NAT idle timeout we know of (the simulator draws 8–20 s for
/// some NATs, Linux keeps unanswered flows 30 s).
pub(super) const REFRESH_GAP: Duration = Duration::from_secs(5);
/// The budget: this many full sets of birthday sockets (`birthday_sockets` each, 256 by
/// default: 768 mappings) per [`BUDGET_WINDOW`], for every peer together. Three peers of a
/// four-player group behind easy NATs each get a full set at once; a fourth, or a peer that
/// moved (rebinding, roaming: every socket needs a new mapping towards its new address),
/// waits until older mappings are counted out. A carrier NAT's per-subscriber port block is
/// commonly 1,024–2,048 ports, so this leaves room for the rest of the host's traffic.
pub(super) const BUDGET_DESTINATIONS: u32 = 3;
/// Fresh sockets (one new mapping each) opened per [`BUDGET_WINDOW`], for every peer
/// together: two retries in each of a pair's first three rounds (`path.rs`) for a few stuck
/// pairs at once; more are denied until older ones are counted out.
pub(super) const FRESH_BUDGET: usize = 16;
/// Mappings lockstep sweeps may make per [`BUDGET_WINDOW`], for every peer together: four
/// sweeps of `path.rs`'s 32 destinations (a pair's first three spraying rounds and one
/// more peer's first), a fraction of what the birthday sockets may cost (a client behind a
/// sequential NAT never sprays from birthday sockets: that is for random allocation).
pub(super) const LOCKSTEP_BUDGET: u32 = 128;
/// Fresh sockets' ids start here: above the birthday sockets' (1..=1024), below the stream
/// bit.
const FRESH_BASE: u16 = 0x4000;
/// Fresh ids are reused after this many (far more than the budget lets be open at once).
const FRESH_IDS: u16 = 0x1000;
/// Whether `id` is in the fresh sockets' range.
pub(super) fn is_fresh_id(id: SocketId) -> bool {
    (FRESH_BASE..FRESH_BASE + FRESH_IDS).contains(&id.0)
}

/// Grants the ledger holds at most (each is at least one mapping; a pathological series of
/// peers moving again and again is denied beyond this, until grants are counted out).
const MAX_GRANTS: usize = 32;

/// What [`SocketPool::sockets_towards`] answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Grant<'a> {
    /// Spray from these sockets.
    Sockets(&'a [SocketId]),
    /// Granted, but no socket is open yet: ask again shortly.
    Pending,
    /// The budget is spent: no sockets this round.
    Denied,
}

/// Sockets of one opening of the pool that sprayed towards one address.
#[derive(Debug, Clone, Copy)]
struct Granted {
    generation: u32,
    to: SocketAddr,
    /// The first `sockets` of the pool's open sockets.
    sockets: u16,
    last_used: Instant,
}

/// The extra sockets of birthday probing, shared by every peer that needs them.
#[derive(Debug, Default)]
pub(super) struct SocketPool {
    /// Sockets are wanted (some peer is the hard side of a birthday round).
    active: bool,
    /// Ids 1..=size belong to the pool.
    size: u16,
    /// Ids the runtime confirmed open, in order.
    open: Vec<SocketId>,
    requests: VecDeque<SocketRequest>,
    /// Openings of the pool so far: the sockets of a new opening have new local ports, so
    /// new mappings.
    generation: u32,
    /// The ledger (see the module docs).
    grants: Vec<Granted>,
    /// Fresh sockets requested and not closed yet.
    fresh: Vec<SocketId>,
    /// When each fresh socket of the last [`BUDGET_WINDOW`] was opened.
    fresh_opened: VecDeque<Instant>,
    /// The next fresh id (offset from [`FRESH_BASE`]).
    next_fresh: u16,
    /// When each lockstep sweep of the last [`BUDGET_WINDOW`] was granted, and its mappings.
    lockstep: VecDeque<(Instant, u32)>,
}

impl SocketPool {
    /// Mappings the budget allows in all: [`BUDGET_DESTINATIONS`] sets of `size` sockets.
    fn budget(&self) -> u32 {
        BUDGET_DESTINATIONS * u32::from(self.size)
    }

    /// Mappings the grants of the last [`BUDGET_WINDOW`] still hold; older grants are
    /// forgotten.
    fn in_use(&mut self, now: Instant) -> u32 {
        self.grants.retain(|g| now < g.last_used + BUDGET_WINDOW);
        self.grants.iter().map(|g| u32::from(g.sockets)).sum()
    }

    /// Mappings still allowed now.
    fn remaining(&mut self, now: Instant) -> u32 {
        self.budget().saturating_sub(self.in_use(now))
    }

    /// The sockets a peer may spray from towards `to` now (the call counts as using them).
    pub(super) fn sockets_towards(&mut self, now: Instant, to: SocketAddr) -> Grant<'_> {
        let remaining = self.remaining(now);
        if !self.active {
            return if remaining == 0 {
                Grant::Denied
            } else {
                Grant::Pending
            };
        }
        let generation = self.generation;
        let granted =
            match self.grants.iter_mut().find(|g| {
                g.generation == generation && g.to == to && now < g.last_used + REFRESH_GAP
            }) {
                Some(g) => {
                    g.last_used = now;
                    g.sockets
                }
                None => {
                    let n = u16::try_from(remaining.min(u32::from(self.size))).unwrap_or(self.size);
                    if n == 0 || self.grants.len() >= MAX_GRANTS {
                        return Grant::Denied;
                    }
                    self.grants.push(Granted {
                        generation,
                        to,
                        sockets: n,
                        last_used: now,
                    });
                    n
                }
            };
        let n = usize::from(granted).min(self.open.len());
        if n == 0 {
            Grant::Pending
        } else {
            Grant::Sockets(&self.open[..n])
        }
    }

    /// Whether a lockstep sweep may make `mappings` new mappings of the primary socket now
    /// (the call counts them when it says yes).
    pub(super) fn grant_lockstep(&mut self, now: Instant, mappings: u32) -> bool {
        while self
            .lockstep
            .front()
            .is_some_and(|(t, _)| now >= *t + BUDGET_WINDOW)
        {
            self.lockstep.pop_front();
        }
        let used: u32 = self.lockstep.iter().map(|(_, n)| n).sum();
        if used + mappings > LOCKSTEP_BUDGET {
            return false;
        }
        self.lockstep.push_back((now, mappings));
        true
    }

    pub(super) fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.requests.pop_front()
    }

    /// A fresh socket bound to `port` (on the primary socket's IP), if the fresh budget
    /// allows one now; its owner hears of the open through `handle_socket_opened`.
    pub(super) fn open_fresh(&mut self, now: Instant, port: u16) -> Option<SocketId> {
        while self
            .fresh_opened
            .front()
            .is_some_and(|t| now >= *t + BUDGET_WINDOW)
        {
            self.fresh_opened.pop_front();
        }
        if self.fresh_opened.len() >= FRESH_BUDGET {
            return None;
        }
        let id = (0..FRESH_IDS)
            .map(|i| SocketId(FRESH_BASE + (self.next_fresh + i) % FRESH_IDS))
            .find(|id| !self.fresh.contains(id))?;
        self.next_fresh = (id.0 - FRESH_BASE + 1) % FRESH_IDS;
        self.fresh.push(id);
        self.fresh_opened.push_back(now);
        let addr = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port);
        self.requests.push_back(SocketRequest::Open {
            id,
            addr: Some(addr),
        });
        Some(id)
    }

    /// Closes every fresh socket not in `keep` (a retry under way, a direct path on one).
    pub(super) fn keep_fresh(&mut self, keep: &[SocketId]) {
        close_unless_kept(&mut self.fresh, keep, &mut self.requests);
    }

    /// The runtime's answer to an open.
    pub(super) fn handle_socket_opened(&mut self, id: SocketId, local: Option<SocketAddr>) {
        if is_fresh_id(id) {
            if local.is_none() {
                // Could not bind (the port is taken here): nothing to close.
                self.fresh.retain(|&f| f != id);
            } else if !self.fresh.contains(&id) {
                // Confirmed after its retry was over.
                self.requests.push_back(SocketRequest::Close { id });
            }
            return;
        }
        if id.0 == 0 || id.0 > self.size || self.open.contains(&id) || local.is_none() {
            return;
        }
        if self.active {
            self.open.push(id);
        } else {
            // Confirmed after the pool was given up: close it again.
            self.requests.push_back(SocketRequest::Close { id });
        }
    }

    /// Opens `n` sockets when `want` starts (unless the budget is spent); closes every one
    /// not in `keep` when it stops.
    pub(super) fn update(&mut self, now: Instant, want: bool, n: u16, keep: &[SocketId]) {
        if want && !self.active {
            self.size = self.size.max(n);
            if self.remaining(now) == 0 {
                // Not reopened while the budget is spent: new sockets would only be denied.
                return;
            }
            self.active = true;
            self.generation += 1;
            for i in 1..=n {
                let id = SocketId(i);
                if !self.open.contains(&id) {
                    self.requests
                        .push_back(SocketRequest::Open { id, addr: None });
                }
            }
        } else if !want && self.active {
            self.active = false;
            for i in 1..=self.size {
                let id = SocketId(i);
                if !keep.contains(&id) {
                    self.requests.push_back(SocketRequest::Close { id });
                }
            }
            self.open.retain(|id| keep.contains(id));
        } else if !want {
            // A direct path that kept its socket has ended since.
            close_unless_kept(&mut self.open, keep, &mut self.requests);
        }
    }
}

/// Keeps the sockets of `ids` that are in `keep`; asks for every other one to be closed.
fn close_unless_kept(
    ids: &mut Vec<SocketId>,
    keep: &[SocketId],
    requests: &mut VecDeque<SocketRequest>,
) {
    ids.retain(|&id| {
        let kept = keep.contains(&id);
        if !kept {
            requests.push_back(SocketRequest::Close { id });
        }
        kept
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([10, 0, 0, 2], port)))
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 7], port))
    }

    fn drain(p: &mut SocketPool) -> Vec<SocketRequest> {
        std::iter::from_fn(|| p.poll_socket_request()).collect()
    }

    /// Opens the pool (`n` sockets) at `now` and confirms every open; the ids opened.
    fn open(p: &mut SocketPool, now: Instant, n: u16) -> Vec<SocketId> {
        p.update(now, true, n, &[]);
        let ids: Vec<SocketId> = drain(p)
            .into_iter()
            .filter_map(|r| match r {
                SocketRequest::Open { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        for &id in &ids {
            p.handle_socket_opened(id, local(5000 + id.0));
        }
        ids
    }

    fn granted(p: &mut SocketPool, now: Instant, to: SocketAddr) -> usize {
        match p.sockets_towards(now, to) {
            Grant::Sockets(s) => s.len(),
            Grant::Pending | Grant::Denied => 0,
        }
    }

    #[test]
    fn sockets_open_while_wanted_and_close_after_but_the_ones_a_path_keeps() {
        let t0 = crate::tests::epoch();
        let mut p = SocketPool::default();
        p.update(t0, true, 3, &[]);
        let opens = drain(&mut p);
        assert_eq!(opens.len(), 3);
        assert!(
            opens
                .iter()
                .all(|r| matches!(r, SocketRequest::Open { addr: None, .. }))
        );
        assert_eq!(
            p.sockets_towards(t0, peer(1)),
            Grant::Pending,
            "none open yet"
        );
        for i in 1..=3 {
            p.handle_socket_opened(SocketId(i), local(5000 + i));
        }
        assert_eq!(
            p.sockets_towards(t0, peer(1)),
            Grant::Sockets(&[SocketId(1), SocketId(2), SocketId(3)])
        );
        // A direct path was found on socket 2: it stays, the others close.
        p.update(t0, false, 3, &[SocketId(2)]);
        assert_eq!(
            drain(&mut p),
            [
                SocketRequest::Close { id: SocketId(1) },
                SocketRequest::Close { id: SocketId(3) }
            ]
        );
        assert_eq!(
            granted(&mut p, t0, peer(1)),
            0,
            "not offered for probing any more"
        );
        // That path ended too: its socket closes.
        p.update(t0, false, 3, &[]);
        assert_eq!(drain(&mut p), [SocketRequest::Close { id: SocketId(2) }]);
    }

    #[test]
    fn a_socket_confirmed_after_the_pool_was_given_up_is_closed_and_failures_are_ignored() {
        let t0 = crate::tests::epoch();
        let mut p = SocketPool::default();
        p.update(t0, true, 2, &[]);
        let _ = drain(&mut p);
        p.handle_socket_opened(SocketId(1), None);
        p.update(t0, false, 2, &[]);
        let _ = drain(&mut p);
        p.handle_socket_opened(SocketId(2), local(6000));
        assert_eq!(drain(&mut p), [SocketRequest::Close { id: SocketId(2) }]);
        // Ids outside the pool (the primary socket, streams) are not its business.
        p.handle_socket_opened(SocketId(0), local(1));
        p.handle_socket_opened(SocketId(9), local(1));
        assert!(drain(&mut p).is_empty());
        assert_eq!(p.sockets_towards(t0, peer(1)), Grant::Pending);
    }

    #[test]
    fn every_peer_together_gets_at_most_the_budget_of_new_mappings_per_window() {
        let t0 = crate::tests::epoch();
        let n = 256;
        let mut p = SocketPool::default();
        open(&mut p, t0, n);
        // Three addresses get a full set each; a spray that goes on costs nothing more.
        for port in 1..=BUDGET_DESTINATIONS as u16 {
            assert_eq!(granted(&mut p, t0, peer(port)), usize::from(n));
        }
        let mut t1 = t0;
        for _ in 0..20 {
            t1 += Duration::from_secs(1);
            for port in 1..=3 {
                assert_eq!(
                    granted(&mut p, t1, peer(port)),
                    usize::from(n),
                    "still mapped"
                );
            }
        }
        // A fourth address (a peer that moved, another peer) waits, and so does a spray
        // after a pause (the NAT may map it anew).
        assert_eq!(p.sockets_towards(t1, peer(4)), Grant::Denied);
        assert_eq!(p.sockets_towards(t1 + REFRESH_GAP, peer(1)), Grant::Denied);
        // A window after their last use the first three are counted out: the fourth gets
        // its set.
        let almost = t1 + BUDGET_WINDOW - Duration::from_millis(1);
        assert_eq!(p.sockets_towards(almost, peer(4)), Grant::Denied);
        assert_eq!(granted(&mut p, t1 + BUDGET_WINDOW, peer(4)), usize::from(n));
    }

    #[test]
    fn a_pool_reopened_again_and_again_is_not_reopened_once_the_budget_is_spent() {
        // A client punching the same peer again and again (the peer left and rejoined, or
        // rounds kept failing), its pool closed and reopened each time: each opening has new
        // local ports, so new mappings, and at most the budget of them are sprayed per window.
        let t0 = crate::tests::epoch();
        let n = 64;
        let mut p = SocketPool::default();
        let mut sprayed = 0;
        let mut openings = 0;
        let mut now = t0;
        while now < t0 + BUDGET_WINDOW {
            p.update(now, true, n, &[]);
            let opens = drain(&mut p);
            if !opens.is_empty() {
                openings += 1;
                for r in opens {
                    if let SocketRequest::Open { id, .. } = r {
                        p.handle_socket_opened(id, local(id.0));
                    }
                }
            }
            sprayed += granted(&mut p, now, peer(1));
            p.update(now, false, n, &[]);
            let _ = drain(&mut p);
            now += Duration::from_secs(5);
        }
        let budget = (BUDGET_DESTINATIONS * u32::from(n)) as usize;
        assert_eq!(sprayed, budget);
        assert_eq!(openings, BUDGET_DESTINATIONS, "not reopened while spent");
        // Partly spent: a grant is cut to what is left.
        let mut p = SocketPool::default();
        open(&mut p, t0, n);
        assert_eq!(granted(&mut p, t0, peer(1)), usize::from(n));
        p.update(t0, false, n, &[]);
        p.update(t0, true, n + 100, &[]);
        let left = BUDGET_DESTINATIONS * u32::from(n + 100) - u32::from(n);
        for r in drain(&mut p) {
            if let SocketRequest::Open { id, .. } = r {
                p.handle_socket_opened(id, local(id.0));
            }
        }
        let mut total = 0;
        for port in 1..=4 {
            total += granted(&mut p, t0, peer(port));
        }
        assert_eq!(total as u32, left);
    }

    #[test]
    fn lockstep_sweeps_are_granted_within_the_budget_and_counted_out_after_the_window() {
        let t0 = crate::tests::epoch();
        let mut p = SocketPool::default();
        let sweeps = LOCKSTEP_BUDGET / 32;
        for _ in 0..sweeps {
            assert!(p.grant_lockstep(t0, 32));
        }
        assert!(!p.grant_lockstep(t0, 32), "spent");
        assert!(!p.grant_lockstep(t0 + BUDGET_WINDOW / 2, 1), "still spent");
        assert!(p.grant_lockstep(t0 + BUDGET_WINDOW, 32), "counted out");
    }
}
