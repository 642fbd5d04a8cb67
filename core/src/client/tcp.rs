//! The client's TCP stream to the server: the fallback for networks that block UDP.
//!
//! The runtime owns the stream (see [`crate::SocketId::stream`]); this keeps its id, asks
//! for it to be connected or closed, and paces reconnections. Which transport the session
//! uses, and when it moves, is decided by the session (`session.rs`).
//!
//! A stream counts as working only once the server spoke on it (an authentic packet came down
//! it): a connect that the kernel completes proves only that something listens. A server
//! that accepts connections and closes them at once (its admission is full, or it is not a
//! Pierce server) must not reset the reconnection back-off, or the client reconnects in a
//! storm; and what the attempts met (refused, closed before an answer, no answer) is kept for
//! the reason the session gives if it fails.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::time::{Duration, Instant, Timeout};
use crate::{SocketId, SocketRequest};

/// First wait before connecting again after a failed or closed stream; doubles to
/// [`RECONNECT_MAX`].
const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(4);

/// How a TCP connection attempt ended without the server speaking on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TcpFailure {
    /// The connect was refused (the server's host answered with a reset).
    Refused,
    /// It connected, and the server closed it before sending anything.
    Closed,
    /// The connect went unanswered (timed out) or failed otherwise.
    Unanswered,
}

/// A stream not connected after this long is given up (a firewall that drops SYNs would
/// otherwise hold it for the kernel's ~2 minutes) and tried again later.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// After the session moved back to UDP, the stream stays open this long, so that what the
/// server sent down it before it heard us on UDP still arrives.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(super) struct TcpLink {
    /// The stream in use or being connected.
    id: Option<SocketId>,
    /// The runtime reported it connected.
    open: bool,
    /// Stream numbers are not reused within a client (they cycle through 1..=0x3fff; the
    /// numbers above are the port mapping's, `portmap::UPNP_STREAMS`).
    next: u16,
    /// Connect (again) at this instant.
    connect_at: Option<Instant>,
    /// Wait before the next reconnection.
    backoff: Option<Duration>,
    /// Close the stream at this instant (the session moved to UDP).
    close_at: Option<Instant>,
    /// The connect under way is given up at this instant.
    connect_deadline: Option<Instant>,
    /// The server spoke on the stream (an authentic packet came down it).
    spoke: bool,
    /// How the last attempt ended, if the server never spoke on it.
    failure: Option<TcpFailure>,
    requests: VecDeque<SocketRequest>,
}

impl TcpLink {
    /// The stream, if connected.
    pub(super) fn open_id(&self) -> Option<SocketId> {
        self.id.filter(|_| self.open)
    }

    /// A stream exists or is being connected.
    pub(super) fn wanted(&self) -> bool {
        self.id.is_some() || self.connect_at.is_some()
    }

    pub(super) fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.requests.pop_front()
    }

    /// Asks for a stream to `server` now, unless one exists or is being connected.
    pub(super) fn connect(&mut self, now: Instant, server: SocketAddr) {
        if self.id.is_some() {
            return;
        }
        self.connect_at = None;
        self.close_at = None;
        self.connect_deadline = Some(now + CONNECT_TIMEOUT);
        self.next = if self.next >= super::portmap::UPNP_STREAMS - 1 {
            1
        } else {
            self.next + 1
        };
        let id = SocketId::stream(self.next);
        self.id = Some(id);
        self.open = false;
        self.spoke = false;
        self.requests
            .push_back(SocketRequest::Connect { id, addr: server });
    }

    /// How the last attempt ended, if the server never spoke on it (`None`: no attempt yet,
    /// or the server spoke on the last stream).
    pub(super) fn failure(&self) -> Option<TcpFailure> {
        self.failure
    }

    /// Forgets how earlier attempts ended (a new handshake starts).
    pub(super) fn forget_failure(&mut self) {
        self.failure = None;
    }

    /// An authentic packet came down stream `id`: if it is ours, the stream works, and the
    /// next reconnection starts from the shortest wait again.
    pub(super) fn heard(&mut self, id: SocketId) {
        if self.open && self.id == Some(id) {
            self.spoke = true;
            self.backoff = None;
            self.failure = None;
        }
    }

    /// Connect again after the current backoff (a stream failed, or closed before it worked).
    pub(super) fn reconnect_later(&mut self, now: Instant) {
        let wait = self.backoff.unwrap_or(RECONNECT_INITIAL);
        self.backoff = Some((wait * 2).min(RECONNECT_MAX));
        self.connect_at = Some(now + wait);
    }

    /// The runtime's answer to a connect (`Ok`: it connected): true if `id` is ours and now
    /// open. A stream that is not (any more) wanted is closed again. Connecting does not
    /// reset the back-off: only the server speaking on the stream does ([`TcpLink::heard`]).
    pub(super) fn opened(&mut self, id: SocketId, result: Result<(), TcpFailure>) -> bool {
        if self.id != Some(id) {
            if result.is_ok() {
                self.requests.push_back(SocketRequest::Close { id });
            }
            return false;
        }
        self.connect_deadline = None;
        match result {
            Ok(()) => self.open = true,
            Err(failure) => {
                self.id = None;
                self.failure = Some(failure);
            }
        }
        result.is_ok()
    }

    /// The runtime says `id` ended: if it was ours, whether the server had spoken on it.
    pub(super) fn closed(&mut self, id: SocketId) -> Option<bool> {
        if self.id != Some(id) {
            return None;
        }
        let spoke = self.spoke;
        if self.open && !spoke {
            self.failure = Some(TcpFailure::Closed);
        }
        self.id = None;
        self.open = false;
        self.spoke = false;
        self.close_at = None;
        self.connect_deadline = None;
        Some(spoke)
    }

    /// Closes the stream (now, or after [`CLOSE_GRACE`]) and stops reconnecting.
    pub(super) fn close(&mut self, after: Option<Instant>) {
        self.connect_at = None;
        match after {
            Some(at) if self.id.is_some() => self.close_at = Some(at),
            _ => {
                if let Some(id) = self.id.take() {
                    self.requests.push_back(SocketRequest::Close { id });
                }
                self.open = false;
                self.spoke = false;
                self.close_at = None;
                self.connect_deadline = None;
            }
        }
    }

    /// Cancels a pending graceful close (the session went back to the stream).
    pub(super) fn keep(&mut self) {
        self.close_at = None;
    }

    /// Due reconnections, closes and connect timeouts; true if a connect timed out (the
    /// caller decides whether to try again). A due reconnection goes to `server`, or is
    /// given up if there is none (the stream is not wanted any more).
    pub(super) fn handle_timeout(&mut self, now: Instant, server: Option<SocketAddr>) -> bool {
        if self.close_at.is_some_and(|at| now >= at) {
            self.close(None);
        }
        let timed_out = self.connect_deadline.is_some_and(|at| now >= at);
        if timed_out {
            self.close(None);
            self.failure = Some(TcpFailure::Unanswered);
        }
        if self.connect_at.is_some_and(|at| now >= at) {
            match server {
                Some(server) => self.connect(now, server),
                None => self.connect_at = None,
            }
        }
        timed_out
    }

    pub(super) fn poll_timeout(&self) -> Option<Timeout> {
        Timeout::min([
            Timeout::at(self.connect_at, "tcp reconnect"),
            Timeout::at(self.close_at, "tcp close after grace"),
            Timeout::at(self.connect_deadline, "tcp connect timeout"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "192.0.2.1:7777".parse().unwrap()
    }

    #[test]
    fn a_connect_that_hangs_is_given_up() {
        let now = crate::tests::epoch();
        let mut t = TcpLink::default();
        t.connect(now, addr());
        let Some(SocketRequest::Connect { id, .. }) = t.poll_socket_request() else {
            panic!("no connect");
        };
        assert_eq!(t.poll_timeout().map(|t| t.at), Some(now + CONNECT_TIMEOUT));
        assert!(t.handle_timeout(now + CONNECT_TIMEOUT, Some(addr())));
        assert_eq!(t.poll_socket_request(), Some(SocketRequest::Close { id }));
        assert!(!t.wanted());
        assert_eq!(t.failure(), Some(TcpFailure::Unanswered));
    }

    #[test]
    fn ids_are_streams_and_not_reused() {
        let now = crate::tests::epoch();
        let mut t = TcpLink::default();
        t.connect(now, addr());
        let Some(SocketRequest::Connect { id: a, .. }) = t.poll_socket_request() else {
            panic!("no connect");
        };
        assert!(a.is_stream());
        assert_eq!(t.closed(a), Some(false));
        t.connect(now, addr());
        let Some(SocketRequest::Connect { id: b, .. }) = t.poll_socket_request() else {
            panic!("no connect");
        };
        assert_ne!(a, b);
        assert_eq!(t.closed(a), None, "an old id is not ours any more");
    }

    #[test]
    fn a_late_open_of_an_abandoned_stream_is_closed() {
        let mut t = TcpLink::default();
        t.connect(crate::tests::epoch(), addr());
        let _ = t.poll_socket_request();
        t.close(None);
        let Some(SocketRequest::Close { id }) = t.poll_socket_request() else {
            panic!("no close");
        };
        assert!(!t.opened(id, Ok(())));
        assert_eq!(t.poll_socket_request(), Some(SocketRequest::Close { id }));
    }

    #[test]
    fn reconnections_back_off() {
        let now = crate::tests::epoch();
        let mut t = TcpLink::default();
        t.reconnect_later(now);
        assert_eq!(
            t.poll_timeout().map(|t| t.at),
            Some(now + RECONNECT_INITIAL)
        );
        t.handle_timeout(now + RECONNECT_INITIAL, Some(addr()));
        let Some(SocketRequest::Connect { id, .. }) = t.poll_socket_request() else {
            panic!("no connect");
        };
        assert!(!t.opened(id, Err(TcpFailure::Refused)));
        t.reconnect_later(now);
        assert_eq!(
            t.poll_timeout().map(|t| t.at),
            Some(now + RECONNECT_INITIAL * 2)
        );
    }

    /// Connects (after the due wait) and returns the new stream's id, and when it was asked.
    fn next_connect(t: &mut TcpLink, now: Instant) -> (SocketId, Instant) {
        let at = t.poll_timeout().map_or(now, |d| d.at.max(now));
        t.handle_timeout(at, Some(addr()));
        let Some(SocketRequest::Connect { id, .. }) = t.poll_socket_request() else {
            panic!("no connect");
        };
        (id, at)
    }

    #[test]
    fn streams_the_server_closes_without_a_word_do_not_reset_the_back_off() {
        let t0 = crate::tests::epoch();
        let mut t = TcpLink::default();
        t.connect(t0, addr());
        let Some(SocketRequest::Connect { mut id, .. }) = t.poll_socket_request() else {
            panic!("no connect");
        };
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            // The kernel completes the connect; the server closes it before saying anything.
            assert!(t.opened(id, Ok(())));
            assert_eq!(t.closed(id), Some(false));
            assert_eq!(t.failure(), Some(TcpFailure::Closed));
            t.reconnect_later(now);
            let (next, at) = next_connect(&mut t, now);
            waits.push(at - now);
            (id, now) = (next, at);
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn a_stream_the_server_spoke_on_resets_the_back_off() {
        let t0 = crate::tests::epoch();
        let mut t = TcpLink::default();
        for _ in 0..3 {
            t.reconnect_later(t0);
        }
        let (id, now) = next_connect(&mut t, t0);
        assert!(t.opened(id, Ok(())));
        // A packet on another stream id is not this one speaking.
        t.heard(SocketId::stream(0x7000));
        assert_eq!(t.closed(id), Some(false));
        t.reconnect_later(now);
        let (id, now) = next_connect(&mut t, now);
        assert!(t.opened(id, Ok(())));
        t.heard(id);
        assert_eq!(t.failure(), None);
        assert_eq!(t.closed(id), Some(true), "the server had spoken");
        t.reconnect_later(now);
        assert_eq!(
            t.poll_timeout().map(|d| d.at - now),
            Some(RECONNECT_INITIAL)
        );
    }

    #[test]
    fn a_refused_connect_is_remembered_until_the_server_speaks() {
        let t0 = crate::tests::epoch();
        let mut t = TcpLink::default();
        t.connect(t0, addr());
        let Some(SocketRequest::Connect { id, .. }) = t.poll_socket_request() else {
            panic!("no connect");
        };
        assert!(!t.opened(id, Err(TcpFailure::Refused)));
        assert_eq!(t.failure(), Some(TcpFailure::Refused));
        t.forget_failure();
        assert_eq!(t.failure(), None);
    }
}
