//! Time: the core never reads a clock. Every input carries `now`, and this module keeps the
//! rule that time seen by the state machines never goes backwards.

pub(crate) use std::time::{Duration, Instant};

/// Monotonic view of caller-supplied time.
///
/// The OS monotonic clock can go backwards on some platforms (rust-lang/rust#56612), and a fuzzer or a
/// buggy caller can feed any order. Every `handle_*`, command and `poll_transmit` passes its
/// `now` through [`Clock::advance`], which never returns a value earlier than one it returned
/// before, and counts the inputs it had to clamp.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    /// The latest instant handed out; never decreases.
    last: Instant,
    /// How many inputs were earlier than `last` and were clamped.
    backwards: u64,
}

impl Clock {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            last: now,
            backwards: 0,
        }
    }

    /// Returns `max(now, latest seen)` and records `now` as the latest seen when it is later.
    pub(crate) fn advance(&mut self, now: Instant) -> Instant {
        if now < self.last {
            self.backwards += 1;
        } else {
            self.last = now;
        }
        self.last
    }

    /// The latest instant seen.
    pub(crate) fn now(&self) -> Instant {
        self.last
    }

    /// How many inputs went backwards in time and were clamped.
    pub(crate) fn backwards(&self) -> u64 {
        self.backwards
    }
}

/// A retransmission schedule: first retry after `initial`, doubling up to `max`.
///
/// Driven by the owner's `handle_timeout`; [`Backoff::next_at`] is the deadline to report from
/// `poll_timeout` (firezone's `backoff.rs` shape).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// When the next retry is due.
    next: Instant,
    /// The interval that will follow the next retry.
    interval: Duration,
    /// Cap for `interval`.
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(now: Instant, initial: Duration, max: Duration) -> Self {
        Self {
            next: now + initial,
            interval: initial.saturating_mul(2).min(max),
            max,
        }
    }

    pub(crate) fn next_at(&self) -> Instant {
        self.next
    }

    /// If a retry is due at `now`, schedules the one after it and returns true.
    pub(crate) fn poll(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.interval;
        self.interval = self.interval.saturating_mul(2).min(self.max);
        true
    }
}

/// A deadline and what it is for, from [`crate::Endpoint::poll_timeout`]: call
/// `handle_timeout` at its `at` instant; its `reason` names what is due then (for logs
/// and busy-loop reports). Inside the core every machine's `poll_timeout` returns one and its
/// parent takes the earliest of its children's together with its reason (snownet's
/// `(Instant, &'static str)`), so the reason is always the one of the deadline returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout {
    /// When.
    pub at: Instant,
    /// What for: a short phrase ("keepalive", "peer reliability", "tcp connect timeout"...).
    pub reason: &'static str,
}

impl Timeout {
    /// A deadline at `at` for `reason`.
    pub const fn new(at: Instant, reason: &'static str) -> Self {
        Self { at, reason }
    }

    /// `at` for `reason`, if there is a deadline at all.
    pub(crate) fn at(at: Option<Instant>, reason: &'static str) -> Option<Self> {
        at.map(|at| Self::new(at, reason))
    }

    /// The earlier of two deadlines with its reason; on a tie, `a`'s.
    pub(crate) fn earliest(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.at < a.at { b } else { a }),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// The earliest of any number of deadlines; on a tie, the first given.
    pub(crate) fn min(all: impl IntoIterator<Item = Option<Self>>) -> Option<Self> {
        all.into_iter().fold(None, Self::earliest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_clamps_time_that_goes_backwards() {
        let t0 = crate::tests::epoch();
        let mut c = Clock::new(t0 + Duration::from_secs(5));
        assert_eq!(c.advance(t0), t0 + Duration::from_secs(5));
        assert_eq!(c.backwards(), 1);
        assert_eq!(
            c.advance(t0 + Duration::from_secs(6)),
            t0 + Duration::from_secs(6)
        );
        assert_eq!(c.backwards(), 1);
    }

    #[test]
    fn the_earliest_timeout_keeps_its_own_reason_and_ties_go_to_the_first() {
        let t0 = crate::tests::epoch();
        let a = Timeout::new(t0 + Duration::from_millis(5), "a");
        let b = Timeout::new(t0 + Duration::from_millis(3), "b");
        let c = Timeout::new(t0 + Duration::from_millis(3), "c");
        assert_eq!(Timeout::min([Some(a), None, Some(b), Some(c)]), Some(b));
        assert_eq!(Timeout::min([Some(c), Some(b)]), Some(c));
        assert_eq!(Timeout::min([None, None]), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_ignores_early_polls() {
        let t0 = crate::tests::epoch();
        let ms = Duration::from_millis;
        let mut b = Backoff::new(t0, ms(100), ms(300));
        assert!(!b.poll(t0 + ms(99)));
        assert!(b.poll(t0 + ms(100)));
        assert_eq!(b.next_at(), t0 + ms(300));
        assert!(b.poll(t0 + ms(300)));
        assert_eq!(b.next_at(), t0 + ms(600));
        assert!(b.poll(t0 + ms(600)));
        assert_eq!(b.next_at(), t0 + ms(900));
    }
}
