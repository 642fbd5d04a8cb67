//! The server's view of TCP streams (the fallback transport): which sessions are on which
//! stream, and when a stream nobody uses is closed.
//!
//! The runtime owns the streams; this decides their end. A stream is closed (by a
//! [`SocketRequest::Close`]) when no session is on it: [`CLAIM_TIMEOUT`] after it was
//! accepted if no handshake came down it (a port scanner, a client that vanished before
//! saying anything), [`LINGER`] after its last session moved to another path (the client
//! closes it itself after its own, shorter grace), and at once when its last session ends.
//!
//! **Admission.** A stream that carries no established session yet ("sessionless":
//! accepted, at most a handshake under way down it) is the only thing a stranger can hold
//! here, so those are bounded, and a new stream is never the one turned away: whoever holds
//! idle or slow connections from an address (the same CGNAT address as real players) must
//! not keep a real client out. A real client sends its ClientHello right behind the TCP
//! handshake's last ACK and its Connect one round trip later, so its stream leaves the
//! sessionless pool moments after it was accepted, while a held stream only gets older; so
//! when a bound is full, the *oldest* sessionless stream goes (closed, and counted in
//! `ServerStats::streams_evicted`):
//!
//! - The whole server holds at most `ServerConfig::max_sessionless_streams` (kept below the
//!   runtime's cap on streams, so the runtime's table never fills with them): a newer stream
//!   closes the oldest stream no handshake came down yet, and only if there is none, the
//!   oldest of all. Without that order, an attacker re-opening connections from many
//!   addresses as fast as the server closes them turns the whole pool over every few
//!   milliseconds (512 streams at ~55 000 accepts a second on this machine: 9 ms), and a real
//!   client whose Connect is a round trip behind its hello (50 ms on a real network) would
//!   lose its stream every time. A real client's hello comes right behind TCP's last ACK (the
//!   runtime reads it at accept), so its stream is out of reach of bare churn; to push it
//!   out, an attacker must fill the pool with handshakes of its own, which cost it the
//!   handshake budgets. (One lost after its ServerHello costs a client a reconnect, not the
//!   handshake: see below.)
//! - One source IP holds at most [`MAX_UNCLAIMED_PER_IP`] that are older than
//!   [`HELLO_GRACE`]: past that, a newer stream from the IP closes the IP's oldest, so idle
//!   holders on one address make room for that address's players, and churn there does not
//!   reach other addresses' streams. Younger streams are never closed to make room for their
//!   own IP's: an attacker re-opening connections as fast as the server closes them could
//!   otherwise push a client's stream out in the moment before its handshake is done. (What
//!   it opens within the grace counts against the server-wide bound instead.)
//!
//! A stream that completed TCP's three-way handshake has proven its source receives (the same
//! proof of return a cookie gives UDP): a spoofer cannot hold one, and a SYN flood is the
//! kernel's business (SYN cookies, the listen backlog), never this module's.
//!
//! A stream leaves the pool only when a session on it is established. A ClientHello down it
//! makes a half-open session there, which lifts the stream's [`CLAIM_TIMEOUT`] (the
//! handshake's own expiry bounds it) but keeps it in the pool: were hellos enough, anyone
//! within the handshake limits (the token is checked at Connect, not before) could hold
//! `handshake_burst_per_ip` plus `handshake_rate_per_ip` per second of `handshake_timeout`
//! streams per address (264 by default), and a few addresses would fill the runtime's
//! table. Closing such a stream to make room hands its half-open sessions back to the
//! caller ([`Streams::accepted`]'s answer, then [`Streams::closed`]), which keeps them
//! waiting for their client's next stream, as for any stream that ends.
//!
//! Everything here is bounded: stream ids are 15 bits, so at most 32 767 streams are
//! tracked, and the deadline queue is compacted when it outgrows that.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use crate::time::{Duration, Instant, Timeout};
use crate::{SocketId, SocketRequest};

/// A stream that has carried no session this long after it was accepted is closed.
pub(super) const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream whose last session moved elsewhere is closed this long after.
pub(super) const LINGER: Duration = Duration::from_secs(5);
/// Streams older than [`HELLO_GRACE`] one source IP may hold before a session on them is
/// established; a newer one closes that IP's oldest. A handful: a household or a CGNAT
/// address with several players connecting at once needs one each only for the moment
/// their handshakes take.
pub(super) const MAX_UNCLAIMED_PER_IP: usize = 8;
/// A new stream is not closed to make room for its own IP's newer ones for this long: time
/// for its client's handshake (the hello right behind TCP's ACK, the Connect a round trip
/// later; or one TCP retransmission later on a lossy path).
pub(super) const HELLO_GRACE: Duration = Duration::from_secs(1);

pub(super) struct Streams {
    /// (stream, session key): the sessions whose path is each stream.
    on: BTreeSet<(SocketId, usize)>,
    /// Streams with no session, and when they are closed unless one claims them.
    unclaimed: BTreeMap<SocketId, Instant>,
    /// Streams accepted and not yet claimed ("sessionless"): their source IP, their accept
    /// number (which orders them by age) and when they were accepted.
    fresh: BTreeMap<SocketId, (IpAddr, u64, Instant)>,
    /// The same, oldest first: across the server, and per source IP.
    by_age: BTreeMap<u64, SocketId>,
    /// The sessionless streams no handshake came down yet, oldest first: the server-wide
    /// bound closes these before any with a handshake under way.
    bare_by_age: BTreeMap<u64, SocketId>,
    by_ip: BTreeMap<(IpAddr, u64), SocketId>,
    /// Sessionless streams per source IP.
    per_ip: BTreeMap<IpAddr, usize>,
    /// Sessionless streams the whole server holds, at most.
    max_fresh: usize,
    /// The next accept number.
    accepts: u64,
    /// The same deadlines in order (entries whose deadline changed since are skipped).
    queue: VecDeque<(Instant, SocketId)>,
    requests: VecDeque<SocketRequest>,
}

impl Streams {
    /// No streams; at most `max_sessionless` (at least 1) streams without a session at once.
    pub(super) fn new(max_sessionless: usize) -> Self {
        Self {
            on: BTreeSet::new(),
            unclaimed: BTreeMap::new(),
            fresh: BTreeMap::new(),
            by_age: BTreeMap::new(),
            bare_by_age: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            per_ip: BTreeMap::new(),
            max_fresh: max_sessionless.max(1),
            accepts: 0,
            queue: VecDeque::new(),
            requests: VecDeque::new(),
        }
    }

    /// The runtime accepted stream `id` from `ip`. If that IP, or the server, holds as many
    /// sessionless streams as it may, the oldest of them is closed to make room (see the
    /// module docs) and returned: the caller takes the half-open sessions that were on it
    /// ([`Streams::closed`]) and ends them.
    pub(super) fn accepted(&mut self, now: Instant, id: SocketId, ip: IpAddr) -> Option<SocketId> {
        if self.in_use(id) {
            return None;
        }
        self.forget_fresh(id);
        let mut evicted = None;
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= MAX_UNCLAIMED_PER_IP {
            let oldest = self.by_ip.range((ip, 0)..=(ip, u64::MAX)).next();
            let expired =
                |old: &SocketId| (self.fresh.get(old)).is_some_and(|f| now >= f.2 + HELLO_GRACE);
            if let Some(old) = oldest.map(|(_, &old)| old).filter(expired) {
                self.close(old);
                evicted = Some(old);
            }
        }
        // (Closing one for its IP left room here.)
        if self.fresh.len() >= self.max_fresh {
            let oldest =
                (self.bare_by_age.first_key_value()).or_else(|| self.by_age.first_key_value());
            if let Some((_, &old)) = oldest {
                self.close(old);
                evicted = Some(old);
            }
        }
        let n = self.accepts;
        self.accepts += 1;
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.fresh.insert(id, (ip, n, now));
        self.by_age.insert(n, id);
        self.bare_by_age.insert(n, id);
        self.by_ip.insert((ip, n), id);
        self.expire_at(id, now + CLAIM_TIMEOUT);
        evicted
    }

    /// Established session `key` is on stream `id` now: it leaves the admission pool.
    pub(super) fn claim(&mut self, id: SocketId, key: usize) {
        self.on.insert((id, key));
        self.unclaimed.remove(&id);
        self.forget_fresh(id);
    }

    /// Half-open session `key` is on stream `id`: no claim timeout any more (the handshake
    /// expires by itself), but the stream stays in the admission pool until the session is
    /// established ([`Streams::settled`]).
    pub(super) fn claim_half_open(&mut self, id: SocketId, key: usize) {
        self.on.insert((id, key));
        self.unclaimed.remove(&id);
        if let Some(&(_, n, _)) = self.fresh.get(&id) {
            self.bare_by_age.remove(&n);
        }
    }

    /// The session on stream `id` was established: the stream leaves the admission pool.
    pub(super) fn settled(&mut self, id: SocketId) {
        self.forget_fresh(id);
    }

    /// Stream `id` no longer counts as sessionless.
    fn forget_fresh(&mut self, id: SocketId) {
        let Some((ip, n, _)) = self.fresh.remove(&id) else {
            return;
        };
        self.by_age.remove(&n);
        self.bare_by_age.remove(&n);
        self.by_ip.remove(&(ip, n));
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Session `key` left stream `id` (it moved to another path, or ended: `ended`).
    pub(super) fn release(&mut self, now: Instant, id: SocketId, key: usize, ended: bool) {
        if self.on.remove(&(id, key)) && !self.in_use(id) {
            if ended {
                self.close(id);
            } else {
                self.expire_at(id, now + LINGER);
            }
        }
    }

    /// The runtime reports stream `id` gone: the sessions that were on it.
    pub(super) fn closed(&mut self, id: SocketId) -> Vec<usize> {
        self.unclaimed.remove(&id);
        self.forget_fresh(id);
        let keys: Vec<usize> = self.sessions_on(id).collect();
        for &k in &keys {
            self.on.remove(&(id, k));
        }
        keys
    }

    pub(super) fn poll_request(&mut self) -> Option<SocketRequest> {
        self.requests.pop_front()
    }

    /// When the next unused stream is closed, and why.
    pub(super) fn poll_timeout(&self) -> Option<Timeout> {
        let &(at, id) = self.queue.front()?;
        let reason = if self.unclaimed.get(&id) != Some(&at) {
            "stale TCP stream deadline"
        } else if self.fresh.contains_key(&id) {
            "TCP stream claim timeout"
        } else {
            "TCP stream linger"
        };
        Some(Timeout::new(at, reason))
    }

    /// Closes the streams whose deadline passed with no session on them.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.queue.front() {
            if at > now {
                break;
            }
            self.queue.pop_front();
            if self.unclaimed.get(&id) == Some(&at) {
                self.close(id);
            }
        }
    }

    fn sessions_on(&self, id: SocketId) -> impl Iterator<Item = usize> + '_ {
        self.on.range((id, 0)..=(id, usize::MAX)).map(|(_, k)| *k)
    }

    fn in_use(&self, id: SocketId) -> bool {
        self.sessions_on(id).next().is_some()
    }

    fn expire_at(&mut self, id: SocketId, at: Instant) {
        self.unclaimed.insert(id, at);
        // Deadlines only grow (one delay each), so the queue stays in order per kind; a
        // shorter one (LINGER after CLAIM_TIMEOUT) may sit behind a longer one, which only
        // delays that close a little.
        self.queue.push_back((at, id));
        if self.queue.len() > 2 * usize::from(SocketId::STREAM_BIT) {
            let live = &self.unclaimed;
            self.queue.retain(|(at, id)| live.get(id) == Some(at));
        }
    }

    fn close(&mut self, id: SocketId) {
        self.unclaimed.remove(&id);
        self.forget_fresh(id);
        self.requests.push_back(SocketRequest::Close { id });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_silent_stream_is_closed_after_the_claim_timeout_a_used_one_is_not() {
        let t0 = crate::tests::epoch();
        let mut s = Streams::new(512);
        let (a, b) = (SocketId::stream(1), SocketId::stream(2));
        let ip = IpAddr::from([198, 51, 100, 1]);
        assert_eq!(s.accepted(t0, a, ip), None);
        assert_eq!(s.accepted(t0, b, ip), None);
        s.claim(b, 7);
        assert_eq!(
            s.poll_timeout(),
            Some(Timeout::new(t0 + CLAIM_TIMEOUT, "TCP stream claim timeout"))
        );
        s.handle_timeout(t0 + CLAIM_TIMEOUT);
        assert_eq!(s.poll_request(), Some(SocketRequest::Close { id: a }));
        assert_eq!(s.poll_request(), None);
        // b's session moves to UDP: b lingers, then goes.
        let t1 = t0 + CLAIM_TIMEOUT;
        s.release(t1, b, 7, false);
        assert_eq!(
            s.poll_timeout(),
            Some(Timeout::new(t1 + LINGER, "TCP stream linger"))
        );
        s.handle_timeout(t1 + LINGER - Duration::from_millis(1));
        assert_eq!(s.poll_request(), None);
        s.handle_timeout(t1 + LINGER);
        assert_eq!(s.poll_request(), Some(SocketRequest::Close { id: b }));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_full_ip_makes_room_by_closing_its_oldest_sessionless_stream_not_the_new_one() {
        let t0 = crate::tests::epoch();
        let mut s = Streams::new(512);
        let (held, other) = (ip(9), ip(10));
        let cap = MAX_UNCLAIMED_PER_IP as u16;
        for n in 1..=cap {
            assert_eq!(s.accepted(t0, SocketId::stream(n), held), None);
        }
        assert_eq!(s.poll_request(), None);
        // One of them carries a handshake: it is out of the pool, room for one more.
        s.claim(SocketId::stream(1), 5);
        assert_eq!(s.accepted(t0, SocketId::stream(100), held), None);
        assert_eq!(s.poll_request(), None);
        // Full again, and the holders are past the grace: each newcomer closes the oldest
        // sessionless stream of its IP, in the order they came (stream 1 has a session).
        let t1 = t0 + HELLO_GRACE;
        for (newcomer, oldest) in [(101, 2), (102, 3), (103, 4)] {
            let evicted = s.accepted(t1, SocketId::stream(newcomer), held);
            assert_eq!(evicted, Some(SocketId::stream(oldest)));
            let close = SocketRequest::Close {
                id: SocketId::stream(oldest),
            };
            assert_eq!(s.poll_request(), Some(close));
            assert_eq!(s.poll_request(), None);
        }
        // Another address is not affected.
        assert_eq!(s.accepted(t1, SocketId::stream(200), other), None);
        assert_eq!(s.poll_request(), None);
        // Closed by the runtime: room again without an eviction.
        let _ = s.closed(SocketId::stream(5));
        assert_eq!(s.accepted(t1, SocketId::stream(300), held), None);
        assert_eq!(s.poll_request(), None);
    }

    #[test]
    fn a_stream_within_its_hello_grace_is_not_pushed_out_by_its_own_ip() {
        let t0 = crate::tests::epoch();
        let mut s = Streams::new(64);
        let held = ip(7);
        let cap = MAX_UNCLAIMED_PER_IP as u16;
        for n in 1..=cap {
            assert_eq!(s.accepted(t0, SocketId::stream(n), held), None);
        }
        // A client's stream comes after the holders aged; holders re-open as fast as they
        // are closed: each of theirs closes an old one, never the client's young stream.
        let t1 = t0 + HELLO_GRACE;
        let client = SocketId::stream(50);
        assert_eq!(s.accepted(t1, client, held), Some(SocketId::stream(1)));
        let mut closed = vec![s.poll_request()];
        for n in 51..80u16 {
            let at = t1 + Duration::from_millis(u64::from(n - 50));
            s.accepted(at, SocketId::stream(n), held);
            while let Some(r) = s.poll_request() {
                closed.push(Some(r));
            }
        }
        let old: Vec<_> = (1..=cap)
            .map(|n| {
                Some(SocketRequest::Close {
                    id: SocketId::stream(n),
                })
            })
            .collect();
        assert_eq!(closed, old, "only the holders past their grace went");
        // Its hello arrives: it leaves the pool.
        s.claim(client, 3);
        // The IP holds more than its cap while they are young, and the server-wide bound
        // holds them: the oldest of all goes first.
        assert_eq!(s.accepted(t1, SocketId::stream(90), ip(8)), None);
        let mut n = 91;
        while s.poll_request().is_none() {
            s.accepted(t1 + Duration::from_millis(40), SocketId::stream(n), held);
            n += 1;
        }
        assert_eq!(s.fresh.len(), 64);
        // (The server-wide eviction took the oldest there was: a holder of `held`.)
        assert!(s.fresh.contains_key(&SocketId::stream(90)));
        // Past their grace, the IP's streams make room for its newcomers again.
        let t2 = t1 + Duration::from_millis(40) + HELLO_GRACE;
        let oldest = s.by_ip.range((held, 0)..=(held, u64::MAX)).next();
        let oldest = oldest.map(|(_, id)| *id);
        assert!(oldest.is_some());
        assert_eq!(s.accepted(t2, SocketId::stream(500), held), oldest);
        let close = oldest.map(|id| SocketRequest::Close { id });
        assert_eq!(s.poll_request(), close);
    }

    #[test]
    fn a_full_server_makes_room_by_closing_the_oldest_sessionless_stream_of_any_address() {
        let t0 = crate::tests::epoch();
        let mut s = Streams::new(20);
        // Twenty addresses, one stream each, a millisecond apart.
        for n in 1..=20u16 {
            let at = t0 + Duration::from_millis(u64::from(n));
            assert_eq!(s.accepted(at, SocketId::stream(n), ip(n as u8)), None);
        }
        assert_eq!(s.poll_request(), None);
        // A stream with a session does not count: room for one.
        s.claim(SocketId::stream(5), 1);
        let later = t0 + Duration::from_millis(30);
        assert_eq!(s.accepted(later, SocketId::stream(21), ip(99)), None);
        assert_eq!(s.poll_request(), None);
        // Then each newcomer, from an address that holds nothing, closes the oldest of all.
        for (newcomer, oldest) in [(22, 1), (23, 2), (24, 3), (25, 4), (26, 6)] {
            let evicted = s.accepted(later, SocketId::stream(newcomer), ip(100));
            assert_eq!(evicted, Some(SocketId::stream(oldest)));
            let close = SocketRequest::Close {
                id: SocketId::stream(oldest),
            };
            assert_eq!(s.poll_request(), Some(close));
        }
        // The evicted streams' deadlines are gone with them: the next close is stream 7's.
        assert_eq!(
            s.poll_timeout().map(|t| t.reason),
            Some("stale TCP stream deadline")
        );
        s.handle_timeout(t0 + CLAIM_TIMEOUT + Duration::from_millis(7));
        assert_eq!(
            s.poll_request(),
            Some(SocketRequest::Close {
                id: SocketId::stream(7)
            })
        );
        assert_eq!(s.poll_request(), None);
    }

    #[test]
    fn a_stream_with_only_a_half_open_session_stays_in_the_pool_until_it_is_established() {
        let t0 = crate::tests::epoch();
        let mut s = Streams::new(4);
        let (a, b) = (SocketId::stream(1), SocketId::stream(2));
        assert_eq!(s.accepted(t0, a, ip(1)), None);
        assert_eq!(s.accepted(t0, b, ip(2)), None);
        // Hellos came down both: their claim timeouts go (the handshakes expire by
        // themselves), but both still count against the bounds.
        s.claim_half_open(a, 10);
        s.claim_half_open(b, 11);
        assert_eq!(
            s.poll_timeout(),
            Some(Timeout::new(
                t0 + CLAIM_TIMEOUT,
                "stale TCP stream deadline"
            ))
        );
        s.handle_timeout(t0 + CLAIM_TIMEOUT);
        assert_eq!(s.poll_request(), None);
        // b's session is established: it leaves the pool; a's is not.
        s.claim(b, 11);
        s.settled(b);
        for n in 3..=5 {
            assert_eq!(s.accepted(t0, SocketId::stream(n), ip(3)), None);
            s.claim_half_open(SocketId::stream(n), 20 + usize::from(n));
        }
        // The pool (4) is full of handshakes under way: the next newcomer closes a, the
        // oldest, and the caller gets a's half-open session back to end it.
        assert_eq!(s.accepted(t0, SocketId::stream(6), ip(4)), Some(a));
        assert_eq!(s.poll_request(), Some(SocketRequest::Close { id: a }));
        assert_eq!(s.closed(a), [10]);
        // Then the newcomer itself, bare, goes before any handshake; b, with its session,
        // is never a candidate.
        assert_eq!(
            s.accepted(t0, SocketId::stream(7), ip(4)),
            Some(SocketId::stream(6))
        );
        assert!(s.in_use(b));
    }

    #[test]
    fn the_end_of_the_last_session_closes_its_stream_at_once() {
        let mut s = Streams::new(512);
        let a = SocketId::stream(3);
        s.claim(a, 1);
        s.claim(a, 2);
        s.release(crate::tests::epoch(), a, 1, true);
        assert_eq!(s.poll_request(), None, "another session is on it");
        s.release(crate::tests::epoch(), a, 2, true);
        assert_eq!(s.poll_request(), Some(SocketRequest::Close { id: a }));
        assert!(s.closed(a).is_empty());
    }

    #[test]
    fn a_full_server_closes_bare_streams_before_one_with_a_handshake_under_way() {
        let t0 = crate::tests::epoch();
        let mut s = Streams::new(4);
        // A real client's stream, its hello read at accept: a half-open session on it.
        assert_eq!(s.accepted(t0, SocketId::stream(1), ip(1)), None);
        s.claim_half_open(SocketId::stream(1), 7);
        // Churn from many addresses, far more than the pool holds, each newer than it.
        for n in 2..200u16 {
            let at = t0 + Duration::from_micros(u64::from(n));
            let evicted = s.accepted(at, SocketId::stream(n), ip((n % 250) as u8 + 2));
            assert_ne!(evicted, Some(SocketId::stream(1)), "after {n} accepts");
        }
        // It is still there when its Connect comes, and leaves the pool.
        s.settled(SocketId::stream(1));
        assert!(s.in_use(SocketId::stream(1)));
        // With the pool full of handshakes alone, the oldest of them goes.
        let mut s = Streams::new(2);
        for n in 1..=2u16 {
            s.accepted(t0, SocketId::stream(n), ip(n as u8));
            s.claim_half_open(SocketId::stream(n), usize::from(n));
        }
        let evicted = s.accepted(t0, SocketId::stream(3), ip(3));
        assert_eq!(evicted, Some(SocketId::stream(1)));
    }
}
