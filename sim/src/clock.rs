//! Virtual time and the event queue.
//!
//! One clock per [`crate::Sim`]: the epoch is the only `Instant::now()` a simulation reads,
//! and `now` only ever moves forward by `Duration`s (firezone's `FluxCapacitor`, quinn's
//! `Pair`). Scheduled work sits in a `BinaryHeap<Reverse<(Instant, seq)>>`; `seq` grows with
//! every push, so two items due at the same instant run in the order they were scheduled.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

/// The virtual clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
    now: Instant,
}

impl Clock {
    /// Reads the real clock, once, to make the epoch.
    #[allow(clippy::disallowed_methods)] // the single clock read of a simulation
    pub(crate) fn start() -> Self {
        let epoch = Instant::now();
        Self { epoch, now: epoch }
    }

    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// Time since the epoch.
    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// `epoch + d`.
    pub(crate) fn at(&self, d: Duration) -> Instant {
        self.epoch + d
    }

    /// Moves to `t` if it is later; time never goes back.
    pub(crate) fn advance_to(&mut self, t: Instant) {
        if t > self.now {
            self.now = t;
        }
    }
}

/// Formats a time since the epoch for logs: seconds with microseconds, fixed width.
pub fn format_time(d: Duration) -> String {
    format!("{:>4}.{:06}s", d.as_secs(), d.subsec_micros())
}

/// Items due at instants, popped earliest first, ties in scheduling order.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    items: BTreeMap<u64, T>,
    next_seq: u64,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            items: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<T> Queue<T> {
    pub(crate) fn push(&mut self, at: Instant, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse((at, seq)));
        self.items.insert(seq, item);
    }

    pub(crate) fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    pub(crate) fn pop(&mut self) -> Option<(Instant, T)> {
        let Reverse((at, seq)) = self.heap.pop()?;
        let item = self
            .items
            .remove(&seq)
            .expect("every heap entry has an item");
        Some((at, item))
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_pops_earliest_first_and_breaks_ties_in_push_order() {
        let t0 = Clock::start().epoch();
        let ms = Duration::from_millis;
        let mut q = Queue::default();
        q.push(t0 + ms(5), "late");
        q.push(t0 + ms(1), "first");
        q.push(t0 + ms(1), "second");
        q.push(t0, "earliest");
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, x)| x)).collect();
        assert_eq!(order, ["earliest", "first", "second", "late"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn clock_never_goes_back() {
        let mut c = Clock::start();
        let t = c.at(Duration::from_secs(2));
        c.advance_to(t);
        c.advance_to(c.at(Duration::from_secs(1)));
        assert_eq!(c.elapsed(), Duration::from_secs(2));
        assert_eq!(format_time(c.elapsed()), "   2.000000s");
    }
}
