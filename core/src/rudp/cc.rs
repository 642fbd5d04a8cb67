//! Congestion control: a NewReno-style window (RFC 9002 §7) in bytes that tells random loss
//! from congestion, and undoes a reduction that turned out to be spurious.
//!
//! Game links lose packets at random (Wi-Fi, mobile): 2% is an average link, 10% a poor one.
//! A loss-based controller that reduces its window on every loss round never gets past a few
//! dozen packets there (measured: a 1 MiB blob at 100 ms and 2% loss took 9 s, renet 1.25 s).
//! A bottleneck that is really full shows it twice: its queue grows, so *every* packet of a
//! round waits (the round's smallest RTT rises above the path's smallest), and when it
//! overflows it drops many packets at once. A loss round therefore reduces the window only
//! when one of these holds:
//!
//! - **delay**: the smallest RTT sample of this round and the previous one exceeds the path's
//!   smallest RTT by [`queue_threshold`] (a quarter of it, 4–50 ms). Jitter raises some
//!   samples, never all of a round's; a standing queue raises all of them.
//! - **loss rate**: more than [`LOSS_RATE_CONGESTED`] of the packets resolved in this round
//!   and the previous one were lost (a policer or a shallow buffer that drops without
//!   queueing).
//!
//! That is the simplest rule that works here, which is why it was chosen over a BBR-style
//! delivery-rate model: it keeps NewReno's window, recovery period and persistent-congestion
//! collapse (all tested), adds two numbers per round, and backs off exactly when a loss-based
//! flow sharing the bottleneck does (its queue raises our RTT), so it takes no more than its
//! share. The reduction is CUBIC's (RFC 9438 §4.6, β = 0.7) with its TCP-friendly additive
//! increase (α = 3(1-β)/(1+β) of a packet per window), which shares a bottleneck with
//! NewReno (β = 0.5, α = 1) evenly. Slow start ends without reduction when the round's
//! smallest RTT shows the queue building (HyStart++, RFC 9406, simplified), so it does not
//! overshoot the buffer by a whole window.
//!
//! **Undo** (RFC 9002 §7.2 leaves it open; Linux `tcp_try_undo_recovery`, RFC 3522): a
//! packet declared lost whose acknowledgement arrives later was reordered, not lost. When
//! every packet declared lost since a reduction turns out that way, the reduction is undone.

use crate::time::{Duration, Instant};

/// Minimum congestion window. RFC 9002 says 2 datagrams; game flows are app-limited and
/// see random (non-congestive) loss, and at 2 a lossy link stalls them behind a shut window
/// (measured at 20% loss against renet), so the floor is 4.
pub(crate) const MIN_WINDOW_PACKETS: usize = 4;
/// Initial congestion window: 32 datagrams, as quic-go's, paced over the first RTT (RFC
/// 9002 §7.2 says 10). A transfer usually starts mid-game on a connection whose RTT is
/// known, so the pacer spreads the window over it rather than bursting; from 10, slow start
/// needs two more round trips to fill a 10 Mbit/s, 100 ms path: 0.2 s of a 1 MiB
/// transfer's 1.2 s (`rudp_vs_peers` blob). The window does not grow while a game stream
/// is app-limited, so this is also what a transfer started mid-game begins with.
pub(crate) const INITIAL_WINDOW_PACKETS: usize = 32;
/// Window after a congestion event, in percent of what was in flight: what the path holds
/// without its queue (smallest RTT / this round's smallest RTT), between NewReno's 50%
/// (RFC 9002 §7.3.2; a full buffer of one BDP doubles the RTT) and CUBIC's 70% (RFC 9438
/// §4.6; a short queue). A lone transfer lands on the path's capacity instead of under it,
/// and flows sharing a full buffer cut as NewReno does: with a fixed 70% two flows sharing
/// an 8 Mbit/s link converged so slowly that 2 of 10 seeds still split it 60/40 after 40 s.
const BETA_MIN_PERCENT: usize = 50;
const BETA_MAX_PERCENT: usize = 70;
/// Loss rate over the last two rounds above which a loss round is congestion even if the
/// RTT did not grow: well above the random loss of a poor game link (10%), whose variance
/// over a few dozen packets is large (at 15% and 4 losses, 10% random loss tripped it often
/// enough to hold a 1 MiB transfer at 20 packets for 20 s).
const LOSS_RATE_CONGESTED: f64 = 0.25;
/// Fewest losses over the last two rounds for the loss-rate signal: at 10% random loss, 10
/// of 40 happens about once in 50 rounds.
const LOSS_COUNT_CONGESTED: u32 = 10;
/// Fewest RTT samples in a round before slow start trusts its smallest one (RFC 9406's
/// `N_RTT_SAMPLE`).
const HYSTART_SAMPLES: u32 = 8;

/// Queueing delay that counts as a standing queue: a quarter of the path's smallest RTT,
/// between 4 ms (scheduling noise) and 50 ms (a deep buffer at a high RTT).
pub(crate) fn queue_threshold(min_rtt: Duration) -> Duration {
    (min_rtt / 4).clamp(Duration::from_millis(4), Duration::from_millis(50))
}

/// Rise of a round's smallest RTT over the path's smallest that makes its losses congestion:
/// [`queue_threshold`], or half the way to the largest RTT seen if that is less. A flow that
/// joined a bottleneck whose queue was already standing measured a smallest RTT that includes
/// it; the queue at its fullest is the largest RTT, and when the bottleneck drops the round's
/// RTTs are near it. Without the second term that flow ignored tail drops the flows before
/// it reacted to, and took 57% of the link from an equal one (the bottleneck tests). Jitter
/// spreads single samples, not a round's smallest, so it only makes the second term larger.
pub(crate) fn congestion_threshold(min_rtt: Duration, max_rtt: Duration) -> Duration {
    let spread = max_rtt.saturating_sub(min_rtt) / 2;
    queue_threshold(min_rtt)
        .min(spread)
        .max(Duration::from_millis(4))
}

/// Rise of a round's smallest RTT that ends slow start: as [`congestion_threshold`] with
/// three quarters of the spread instead of half. Early in slow start a round has few
/// samples, and on a link with 15 ms of jitter each way a round of 25 sat 16 ms above the
/// minimum with no queue at all: exiting there left a 1 MiB transfer at half the path's
/// capacity. A loss round can afford the lower bar: it only costs a reduction.
pub(crate) fn hystart_threshold(min_rtt: Duration, max_rtt: Duration) -> Duration {
    let spread = max_rtt.saturating_sub(min_rtt) * 3 / 4;
    queue_threshold(min_rtt)
        .min(spread)
        .max(Duration::from_millis(4))
}

/// Counters, for tests and stats.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CcStats {
    /// Loss rounds that reduced the window.
    pub(crate) congestion_events: u64,
    /// Loss rounds taken for random loss (no reduction).
    pub(crate) random_loss_events: u64,
    /// Reductions undone as spurious.
    pub(crate) undone: u64,
    /// Slow starts ended by the delay signal.
    pub(crate) hystart_exits: u64,
}

/// One round trip's measurements: from the first packet sent after the previous round
/// ended to its acknowledgement.
#[derive(Clone, Copy, Debug, Default)]
struct Round {
    min_rtt: Option<Duration>,
    samples: u32,
    acked: u32,
    lost: u32,
}

/// What a reduction replaced, to restore it if every loss behind it was spurious.
#[derive(Clone, Copy, Debug)]
struct Undo {
    cwnd: usize,
    ssthresh: usize,
    /// The episode the losses were tagged with.
    episode: u32,
    /// Packets declared lost in this episode and not (yet) acknowledged.
    unresolved: u32,
}

/// The congestion controller (see the module docs).
#[derive(Debug)]
pub(crate) struct Congestion {
    mtu: usize,
    cwnd: usize,
    ssthresh: usize,
    /// When the current recovery period began: one reduction per round trip.
    recovery_start: Option<Instant>,
    /// Smallest and largest RTT seen on the path.
    min_rtt: Option<Duration>,
    max_rtt: Duration,
    /// The round ends when a packet numbered at least this is acknowledged.
    round_end: u64,
    largest_sent: u64,
    cur: Round,
    prev: Round,
    /// Incremented at each reduction; lost packets carry it (see [`Self::on_lost`]).
    episode: u32,
    undo: Option<Undo>,
    /// Additive increase per window, in hundredths of a packet (see [`Self::on_lost`]).
    alpha_percent: usize,
    /// Less than half the window was in flight at the latest ack: the application, not the
    /// window, limits the sender.
    app_limited: bool,
    /// Test-only reference: a classic NewReno (every loss round halves the window, +1
    /// packet per window), the TCP-like flow of the fairness tests.
    #[cfg(test)]
    classic: bool,
    pub(crate) stats: CcStats,
}

impl Congestion {
    pub(crate) fn new(mtu: usize) -> Self {
        Self {
            mtu,
            cwnd: INITIAL_WINDOW_PACKETS * mtu,
            ssthresh: usize::MAX,
            recovery_start: None,
            min_rtt: None,
            max_rtt: Duration::ZERO,
            round_end: 0,
            largest_sent: 0,
            cur: Round::default(),
            prev: Round::default(),
            episode: 0,
            undo: None,
            app_limited: true,
            alpha_percent: 100,
            #[cfg(test)]
            classic: false,
            stats: CcStats::default(),
        }
    }

    /// A classic NewReno controller (β = 0.5, α = 1, every loss round is congestion).
    #[cfg(test)]
    pub(crate) fn classic_newreno(mtu: usize) -> Self {
        Self {
            classic: true,
            ..Self::new(mtu)
        }
    }

    fn is_classic(&self) -> bool {
        #[cfg(test)]
        return self.classic;
        #[cfg(not(test))]
        false
    }

    /// The path's largest datagram changed: the window's unit (its floor, its additive
    /// increase) follows; the window itself, in bytes, stays, above the new floor.
    pub(crate) fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
        self.cwnd = self.cwnd.max(self.min_window());
    }

    pub(crate) fn window(&self) -> usize {
        self.cwnd
    }

    fn min_window(&self) -> usize {
        MIN_WINDOW_PACKETS * self.mtu
    }

    /// A packet numbered `pn` left carrying data.
    pub(crate) fn on_sent(&mut self, pn: u64) {
        self.largest_sent = self.largest_sent.max(pn);
    }

    /// An RTT sample (ack delay removed).
    pub(crate) fn on_rtt_sample(&mut self, sample: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(sample, |m| m.min(sample)));
        self.max_rtt = self.max_rtt.max(sample);
        self.cur.min_rtt = Some(self.cur.min_rtt.map_or(sample, |m| m.min(sample)));
        self.cur.samples += 1;
    }

    /// The smallest RTT of the current and previous round, if it shows a standing queue.
    fn queue_building(&self) -> bool {
        let (Some(min), Some(recent)) = (self.min_rtt, self.recent_min_rtt()) else {
            return false;
        };
        recent > min + congestion_threshold(min, self.max_rtt)
    }

    /// The smallest RTT of the current round, or of it and the previous one while it has
    /// few samples; `None` with fewer than [`HYSTART_SAMPLES`] samples in both: a few game
    /// ticks' RTTs are jitter, not a queue (measured: 5 samples 15 ms above the minimum cut
    /// a tick stream's window to 7 packets, and a blob sent later then crawled from there).
    fn recent_min_rtt(&self) -> Option<Duration> {
        if self.cur.samples >= HYSTART_SAMPLES {
            return self.cur.min_rtt;
        }
        if self.cur.samples + self.prev.samples < HYSTART_SAMPLES {
            return None;
        }
        match (self.cur.min_rtt, self.prev.min_rtt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn loss_rate_high(&self) -> bool {
        let lost = self.cur.lost + self.prev.lost;
        let resolved = lost + self.cur.acked + self.prev.acked;
        lost >= LOSS_COUNT_CONGESTED && f64::from(lost) > LOSS_RATE_CONGESTED * f64::from(resolved)
    }

    /// `packets` packets of `bytes` were newly acknowledged, the largest of them numbered
    /// `largest`; `in_flight_before` bytes were in flight before. `srtt` bounds recovery.
    pub(crate) fn on_acked(
        &mut self,
        now: Instant,
        largest: u64,
        packets: u32,
        bytes: usize,
        in_flight_before: usize,
        srtt: Duration,
    ) {
        self.cur.acked += packets;
        if largest >= self.round_end {
            // The round is over: hand its numbers to the next one.
            self.prev = self.cur;
            self.cur = Round::default();
            self.round_end = self.largest_sent + 1;
        }
        // Growth only when the window limits the sender (RFC 9002 §7.8): an app-limited
        // game stream must not build a window it never tested, then burst it out.
        self.app_limited = in_flight_before < self.cwnd / 2;
        if self.app_limited {
            return;
        }
        if self.recovery_start.is_some_and(|r| now <= r + srtt) {
            return;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd += bytes;
            if !self.is_classic()
                && self.cur.samples >= HYSTART_SAMPLES
                && self.queue_building_now()
            {
                // The queue is building: slow start would now overshoot it by a window.
                self.ssthresh = self.cwnd;
                self.stats.hystart_exits += 1;
            }
        } else {
            self.cwnd += self.mtu * self.alpha_percent * bytes / 100 / self.cwnd.max(1);
        }
    }

    /// This round's smallest RTT alone shows a standing queue.
    fn queue_building_now(&self) -> bool {
        let (Some(min), Some(cur)) = (self.min_rtt, self.cur.min_rtt) else {
            return false;
        };
        cur > min + hystart_threshold(min, self.max_rtt)
    }

    /// `packets` packets were declared lost, the newest of them sent at `sent_time`, while
    /// `in_flight` bytes were in flight (them included). Returns the episode to tag them with
    /// (for undo), if the window was reduced for them or a reduction they belong to is still
    /// undoable.
    pub(crate) fn on_lost(
        &mut self,
        now: Instant,
        packets: u32,
        sent_time: Instant,
        in_flight: usize,
    ) -> Option<u32> {
        self.cur.lost += packets;
        let in_recovery = self.recovery_start.is_some_and(|r| sent_time <= r);
        if in_recovery {
            // Same episode as the reduction already made.
            return self.undo.as_mut().map(|u| {
                u.unresolved += packets;
                u.episode
            });
        }
        // An app-limited sender uses less than half its window: reducing the window would
        // not slow it down, only set a slow-start threshold it never tested, and a transfer
        // started later would begin far below it.
        let congestion = !self.app_limited && (self.queue_building() || self.loss_rate_high());
        if !self.is_classic() && !congestion {
            self.stats.random_loss_events += 1;
            return None;
        }
        self.episode = self.episode.wrapping_add(1);
        self.undo = Some(Undo {
            cwnd: self.cwnd,
            ssthresh: self.ssthresh,
            episode: self.episode,
            unresolved: packets,
        });
        self.recovery_start = Some(now);
        let beta = match (self.min_rtt, self.recent_min_rtt()) {
            _ if self.is_classic() => BETA_MIN_PERCENT,
            (Some(min), Some(recent)) if !recent.is_zero() => {
                ((min.as_secs_f64() / recent.as_secs_f64() * 100.0) as usize)
                    .clamp(BETA_MIN_PERCENT, BETA_MAX_PERCENT)
            }
            _ => BETA_MAX_PERCENT,
        };
        // The TCP-friendly additive increase for that reduction, α = 3(1-β)/(1+β) packets
        // per window (RFC 9438 §4.3): 1 at 50%, 0.53 at 70%, so the flow's share of a
        // bottleneck with NewReno is even whichever reduction it made.
        self.alpha_percent = 300 * (100 - beta) / (100 + beta);
        // From what was in flight, not the window, if less (RFC 5681's FlightSize): slow
        // start grows the window with every ack, ahead of what the pacer has sent, and
        // reducing from there took 4 rounds of tail drops to get under the bottleneck.
        let base = self.cwnd.min(in_flight.max(self.min_window()));
        self.ssthresh = (base * beta / 100).max(self.min_window());
        self.cwnd = self.ssthresh;
        self.stats.congestion_events += 1;
        Some(self.episode)
    }

    /// A packet declared lost in `episode` was acknowledged after all.
    pub(crate) fn on_spurious_loss(&mut self, episode: u32) {
        let Some(u) = self.undo.as_mut() else {
            return;
        };
        if u.episode != episode {
            return;
        }
        u.unresolved = u.unresolved.saturating_sub(1);
        if u.unresolved == 0 {
            self.cwnd = self.cwnd.max(u.cwnd);
            self.ssthresh = self.ssthresh.max(u.ssthresh);
            self.recovery_start = None;
            self.undo = None;
            self.stats.undone += 1;
        }
    }

    /// Everything in flight was lost for several probe timeouts (RFC 9002 §7.6): the window
    /// collapses, and there is nothing to undo.
    pub(crate) fn on_persistent_congestion(&mut self) {
        self.cwnd = self.min_window();
        self.ssthresh = self.cwnd;
        self.undo = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: usize = 1200;

    fn t(ms: u64) -> Instant {
        crate::tests::epoch() + Duration::from_millis(ms)
    }

    /// A controller past slow start with a window of 50 packets, after one full round of
    /// `rtt_ms` samples on a path whose smallest RTT is 100 ms.
    fn steady(rtt_ms: u64) -> Congestion {
        let mut c = Congestion::new(MTU);
        c.ssthresh = 50 * MTU;
        c.cwnd = 50 * MTU;
        c.on_rtt_sample(Duration::from_millis(100));
        c.max_rtt = Duration::from_millis(200);
        for round in 0..2 {
            let first = round * 50;
            for pn in first..first + 50 {
                c.on_sent(pn);
            }
            for pn in first..first + 50 {
                c.on_rtt_sample(Duration::from_millis(rtt_ms));
                let now = t(200 * (round + 1) + pn);
                c.on_acked(now, pn, 1, MTU, 50 * MTU, Duration::from_millis(rtt_ms));
            }
        }
        c
    }

    #[test]
    fn an_isolated_loss_on_an_empty_queue_keeps_the_window() {
        let mut c = steady(100);
        let before = c.window();
        assert_eq!(c.on_lost(t(900), 1, t(890), 50 * MTU), None);
        assert_eq!(c.window(), before);
        assert_eq!(c.stats.random_loss_events, 1);
    }

    #[test]
    fn a_loss_while_a_whole_round_shows_a_queue_cuts_to_what_the_path_holds() {
        // Every sample 160 ms on a 100 ms path: 100/160 of the flight is the path's.
        let mut c = steady(160);
        assert!(c.on_lost(t(900), 1, t(890), 50 * MTU).is_some());
        assert_eq!(c.window(), 50 * MTU * 62 / 100);
        assert_eq!(c.stats.congestion_events, 1);
    }

    #[test]
    fn a_full_buffer_halves_the_window_as_newreno_does() {
        let mut c = steady(200);
        assert!(c.on_lost(t(900), 1, t(890), 50 * MTU).is_some());
        assert_eq!(c.window(), 25 * MTU);
    }

    #[test]
    fn a_high_loss_rate_reduces_the_window_without_a_delay_signal() {
        let mut c = steady(100);
        assert!(
            c.on_lost(t(900), 40, t(890), 50 * MTU).is_some(),
            "40 of 90"
        );
        assert_eq!(c.window(), 50 * MTU * 7 / 10);
    }

    #[test]
    fn a_reduction_is_undone_when_every_loss_behind_it_was_spurious() {
        let mut c = steady(100);
        let before = c.window();
        let ep = c.on_lost(t(900), 40, t(890), 50 * MTU).unwrap();
        assert_eq!(
            c.on_lost(t(901), 1, t(880), 50 * MTU),
            Some(ep),
            "same episode"
        );
        for _ in 0..40 {
            c.on_spurious_loss(ep);
        }
        assert!(c.window() < before, "one loss is still unexplained");
        c.on_spurious_loss(ep);
        assert_eq!(c.window(), before);
        assert_eq!(c.stats.undone, 1);
    }

    #[test]
    fn a_loss_while_app_limited_keeps_the_window() {
        let mut c = steady(200);
        let before = c.window();
        c.on_acked(t(950), 101, 1, 300, 600, Duration::from_millis(200));
        assert_eq!(c.on_lost(t(960), 1, t(940), 600), None);
        assert_eq!(c.window(), before);
    }

    #[test]
    fn an_app_limited_sender_does_not_grow_its_window() {
        let mut c = Congestion::new(MTU);
        for pn in 0..100 {
            c.on_sent(pn);
            c.on_acked(t(pn), pn, 1, 200, 400, Duration::from_millis(50));
        }
        assert_eq!(c.window(), INITIAL_WINDOW_PACKETS * MTU);
    }

    #[test]
    fn the_classic_reference_halves_on_any_loss_round() {
        let mut c = Congestion::classic_newreno(MTU);
        let before = c.window();
        assert!(c.on_lost(t(300), 1, t(290), before).is_some());
        assert_eq!(c.window(), (before / 2).max(MIN_WINDOW_PACKETS * MTU));
    }
}
