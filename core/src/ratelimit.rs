//! Token buckets for unauthenticated traffic: one per source IP (hashed into a fixed table, so
//! memory is bounded whatever the number of sources) and one for the whole server.

use crate::time::{Duration, Instant};
use std::hash::{DefaultHasher, Hash, Hasher};

/// Buckets in the per-IP table. Sources that hash to one slot share it; with 4096 slots an
/// attacker needs many addresses to crowd out a legitimate one, and then the global bucket
/// and (later) the cookie round trip take over.
const TABLE_SIZE: usize = 4096;

/// A token bucket holding at most `burst` tokens, refilled at `rate` per second.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    /// Tokens available, in millitokens.
    milli: u64,
    /// When `milli` was last refilled.
    at: Option<Instant>,
}

impl Bucket {
    pub(crate) const EMPTY: Self = Self { milli: 0, at: None };

    /// Takes `n` tokens if available.
    pub(crate) fn take_n(&mut self, now: Instant, rate: u32, burst: u32, n: u32) -> bool {
        let cap = u64::from(burst) * 1000;
        let refill = match self.at {
            None => cap,
            Some(at) => {
                let dt = now
                    .saturating_duration_since(at)
                    .min(Duration::from_secs(3600));
                (dt.as_micros() as u64).saturating_mul(u64::from(rate)) / 1000
            }
        };
        self.milli = self.milli.saturating_add(refill).min(cap);
        self.at = Some(now);
        let need = u64::from(n) * 1000;
        if self.milli >= need {
            self.milli -= need;
            true
        } else {
            false
        }
    }
}

/// Per-source and global handshake limiter.
#[derive(Debug)]
pub(crate) struct Limiter {
    /// Hash key so that sources cannot choose their slot.
    key: u64,
    per_ip: Box<[Bucket]>,
    global: Bucket,
    /// Per-IP refill rate (tokens per second) and burst.
    ip_rate: u32,
    ip_burst: u32,
    /// Global refill rate and burst.
    global_rate: u32,
    global_burst: u32,
}

impl Limiter {
    pub(crate) fn new(
        key: u64,
        ip_rate: u32,
        ip_burst: u32,
        global_rate: u32,
        global_burst: u32,
    ) -> Self {
        Self {
            key,
            per_ip: vec![Bucket::EMPTY; TABLE_SIZE].into_boxed_slice(),
            global: Bucket::EMPTY,
            ip_rate,
            ip_burst,
            global_rate,
            global_burst,
        }
    }

    /// Takes one token for `source` (an IP address, or any other key the budget is per) and
    /// one global; false if either is exhausted.
    pub(crate) fn allow(&mut self, now: Instant, source: impl Hash) -> bool {
        self.allow_n(now, source, 1)
    }

    /// Takes `n` tokens for `source` and `n` global; false (taking none of the global ones)
    /// if either has fewer.
    pub(crate) fn allow_n(&mut self, now: Instant, source: impl Hash, n: u32) -> bool {
        let mut h = DefaultHasher::new();
        self.key.hash(&mut h);
        source.hash(&mut h);
        let slot = (h.finish() as usize) % TABLE_SIZE;
        if !self.per_ip[slot].take_n(now, self.ip_rate, self.ip_burst, n) {
            return false;
        }
        self.global
            .take_n(now, self.global_rate, self.global_burst, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = crate::tests::epoch();
        let mut l = Limiter::new(1, 10, 5, 1000, 1000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..20).filter(|_| l.allow(t0, ip)).count();
        assert_eq!(allowed, 5);
        // 10 per second: after 100 ms exactly one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.allow(t1, ip));
        assert!(!l.allow(t1, ip));
        // Another source is unaffected (different slot with this key).
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.allow(t1, other));
    }

    #[test]
    fn the_global_bucket_caps_many_sources() {
        let t0 = crate::tests::epoch();
        let mut l = Limiter::new(1, 10, 5, 10, 3);
        let allowed = (0..50u8)
            .filter(|i| l.allow(t0, IpAddr::from([198, 51, 100, *i])))
            .count();
        assert_eq!(allowed, 3);
    }
}
