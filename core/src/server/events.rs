//! What the application hears: the server's events in order, bounded (a server whose
//! application stops polling must not grow without limit), with received payloads copied out
//! of the receive buffer once, into an arena.

use std::collections::VecDeque;

use crate::arena::Arena;
use crate::event::{HostId, ServerEvent};

/// The server's event queue.
pub(super) struct AppEvents {
    queue: VecDeque<ServerEvent>,
    /// Events held at most; more are dropped and counted.
    cap: usize,
    /// Events dropped because `cap` were waiting.
    dropped: u64,
    /// Copies of received payloads handed out in events.
    arena: Arena,
}

impl AppEvents {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            cap,
            dropped: 0,
            arena: Arena::default(),
        }
    }

    /// Queues `e`, unless `cap` events are waiting already (then it is counted).
    pub(super) fn push(&mut self, e: ServerEvent) {
        #[cfg(feature = "tracing")]
        crate::trace::server_event(&e);
        if self.queue.len() >= self.cap {
            self.dropped += 1;
        } else {
            self.queue.push_back(e);
        }
    }

    /// An application message from `from`.
    pub(super) fn message(&mut self, from: HostId, payload: &[u8]) {
        let payload = self.arena.copy(payload);
        self.push(ServerEvent::Message { from, payload });
    }

    /// Events dropped so far.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The next event.
    pub(super) fn poll_event(&mut self) -> Option<ServerEvent> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_beyond_the_cap_are_dropped_and_counted_and_order_is_kept() {
        let mut e = AppEvents::new(2);
        for i in 1..=3 {
            e.message(HostId(i), &[i as u8]);
        }
        assert_eq!(e.dropped(), 1);
        let from = |e: Option<ServerEvent>| match e {
            Some(ServerEvent::Message { from, payload }) => Some((from, payload[0])),
            _ => None,
        };
        assert_eq!(from(e.poll_event()), Some((HostId(1), 1)));
        assert_eq!(from(e.poll_event()), Some((HostId(2), 2)));
        assert_eq!(e.poll_event(), None);
    }
}
