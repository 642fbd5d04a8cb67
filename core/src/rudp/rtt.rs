//! Round-trip time estimation and retransmission timeout, RFC 6298.

use crate::time::Duration;

/// RTT assumed before any sample (RFC 6298 §2.1 says 1 s; games live on faster links and a
/// lost first control message should not cost a second).
pub(crate) const INITIAL_RTT: Duration = Duration::from_millis(333);
/// Smallest RTO: below this, ordinary scheduling jitter on the receiver causes spurious
/// retransmissions (RFC 6298 says 1 s for TCP; QUIC and game stacks use ~200 ms or less).
pub(crate) const MIN_RTO: Duration = Duration::from_millis(100);
/// Largest RTO after backoff.
pub(crate) const MAX_RTO: Duration = Duration::from_secs(2);

/// Smoothed RTT and its variation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RttEstimator {
    /// Smoothed RTT; `None` until the first sample.
    srtt: Option<Duration>,
    /// RTT variation.
    rttvar: Duration,
    /// Latest sample.
    latest: Duration,
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self {
            srtt: None,
            rttvar: INITIAL_RTT / 2,
            latest: INITIAL_RTT,
        }
    }
}

impl RttEstimator {
    /// Folds in a sample taken from a packet that was sent exactly once (Karn's rule).
    pub(crate) fn update(&mut self, sample: Duration) {
        self.latest = sample;
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    /// Smoothed RTT (the initial guess before any sample).
    /// The smoothed RTT, once a sample came.
    pub(crate) fn measured(&self) -> Option<Duration> {
        self.srtt
    }

    pub(crate) fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(INITIAL_RTT)
    }

    /// RTT variation.
    pub(crate) fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// Retransmission timeout before backoff: `srtt + 4·rttvar`, clamped.
    pub(crate) fn rto(&self) -> Duration {
        (self.srtt() + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_on_a_steady_rtt() {
        let mut r = RttEstimator::default();
        assert_eq!(r.srtt(), INITIAL_RTT);
        for _ in 0..50 {
            r.update(Duration::from_millis(40));
        }
        assert_eq!(r.srtt(), Duration::from_millis(40));
        assert!(r.rttvar < Duration::from_millis(1));
        assert_eq!(r.rto(), MIN_RTO);
    }

    #[test]
    fn the_first_sample_sets_srtt_and_half_as_variation() {
        let mut r = RttEstimator::default();
        r.update(Duration::from_millis(200));
        assert_eq!(r.srtt(), Duration::from_millis(200));
        assert_eq!(r.rto(), Duration::from_millis(600));
    }
}
