//! The server's view of TCP streams (the fallback transport): which sessions are on which
//! stream, and when a stream nobody uses is closed.
//!
//! The runtime owns the streams; this decides their end. A stream is closed (by a
//! [`SocketRequest::Close`]) when no session is on it: [`CLAIM_TIMEOUT`] after it was
//! accepted if no handshake came down it (a port scanner, a client that vanished before
//! saying anything), [`LINGER`] after its last session moved to another path (the client
//! closes it itself after its own, shorter grace), and at once when its last session ends.
//! One source IP may hold at most [`MAX_UNCLAIMED_PER_IP`] streams that carry no session yet;
//! more are closed at once, so one host cannot use up the runtime's cap on streams. Everything
//! here is bounded: stream ids are 15 bits, so at most 32 767 streams are tracked, and the
//! deadline queue is compacted when it outgrows that.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use crate::time::{Duration, Instant, Timeout};
use crate::{SocketId, SocketRequest};

/// A stream that has carried no session this long after it was accepted is closed.
pub(super) const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream whose last session moved elsewhere is closed this long after.
pub(super) const LINGER: Duration = Duration::from_secs(5);
/// Streams one source IP may hold before a handshake comes down them.
pub(super) const MAX_UNCLAIMED_PER_IP: u16 = 8;

#[derive(Default)]
pub(super) struct Streams {
    /// (stream, session key): the sessions whose path is each stream.
    on: BTreeSet<(SocketId, usize)>,
    /// Streams with no session, and when they are closed unless one claims them.
    unclaimed: BTreeMap<SocketId, Instant>,
    /// Streams accepted and not yet claimed, by source IP (their number per IP, and theirs).
    fresh: BTreeMap<SocketId, IpAddr>,
    per_ip: BTreeMap<IpAddr, u16>,
    /// The same deadlines in order (entries whose deadline changed since are skipped).
    queue: VecDeque<(Instant, SocketId)>,
    requests: VecDeque<SocketRequest>,
}

impl Streams {
    /// The runtime accepted stream `id` from `ip`. False if it was closed at once (that IP
    /// holds too many streams without a session).
    pub(super) fn accepted(&mut self, now: Instant, id: SocketId, ip: IpAddr) -> bool {
        if self.in_use(id) {
            return true;
        }
        self.forget_fresh(id);
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= MAX_UNCLAIMED_PER_IP {
            self.close(id);
            return false;
        }
        *n += 1;
        self.fresh.insert(id, ip);
        self.expire_at(id, now + CLAIM_TIMEOUT);
        true
    }

    /// Session `key` is on stream `id` now.
    pub(super) fn claim(&mut self, id: SocketId, key: usize) {
        self.on.insert((id, key));
        self.unclaimed.remove(&id);
        self.forget_fresh(id);
    }

    /// Stream `id` no longer counts against its source IP.
    fn forget_fresh(&mut self, id: SocketId) {
        if let Some(ip) = self.fresh.remove(&id) {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
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

    #[test]
    fn a_silent_stream_is_closed_after_the_claim_timeout_a_used_one_is_not() {
        let t0 = crate::tests::epoch();
        let mut s = Streams::default();
        let (a, b) = (SocketId::stream(1), SocketId::stream(2));
        let ip = IpAddr::from([198, 51, 100, 1]);
        assert!(s.accepted(t0, a, ip));
        assert!(s.accepted(t0, b, ip));
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
    fn one_ip_holds_a_bounded_number_of_streams_without_a_session() {
        let t0 = crate::tests::epoch();
        let mut s = Streams::default();
        let (ip, other) = (IpAddr::from([192, 0, 2, 9]), IpAddr::from([192, 0, 2, 10]));
        for n in 1..=MAX_UNCLAIMED_PER_IP {
            assert!(s.accepted(t0, SocketId::stream(n), ip));
        }
        let over = SocketId::stream(100);
        assert!(!s.accepted(t0, over, ip));
        assert_eq!(s.poll_request(), Some(SocketRequest::Close { id: over }));
        assert!(
            s.accepted(t0, SocketId::stream(101), other),
            "others are not affected"
        );
        // One of them carries a handshake: room for one more.
        s.claim(SocketId::stream(1), 5);
        assert!(s.accepted(t0, SocketId::stream(102), ip));
        // Closed by the runtime: room again.
        let _ = s.closed(SocketId::stream(2));
        assert!(s.accepted(t0, SocketId::stream(103), ip));
        assert!(!s.accepted(t0, SocketId::stream(104), ip));
    }

    #[test]
    fn the_end_of_the_last_session_closes_its_stream_at_once() {
        let mut s = Streams::default();
        let a = SocketId::stream(3);
        s.claim(a, 1);
        s.claim(a, 2);
        s.release(crate::tests::epoch(), a, 1, true);
        assert_eq!(s.poll_request(), None, "another session is on it");
        s.release(crate::tests::epoch(), a, 2, true);
        assert_eq!(s.poll_request(), Some(SocketRequest::Close { id: a }));
        assert!(s.closed(a).is_empty());
    }
}
