//! Datagram packetization-layer path-MTU discovery (DPLPMTUD, RFC 8899) for one path.
//!
//! A path starts at the base size (RFC 8899 §5.1.2 BASE_PLPMTU, [`crate::BASE_DATAGRAM_SIZE`]
//! unless the configuration caps lower) and carries nothing larger until a probe of a larger
//! size is acknowledged. The machine follows RFC 8899 §5.2:
//!
//! - **Base**: a probe of the base size confirms that the path carries it (§5.2 "BASE"). Its
//!   acknowledgement starts the search; [`MAX_PROBES`] lost in a row mean the path carries
//!   nothing at all right now (an outage rather than an MTU): **Error**.
//! - **Search**: probes between the current PLPMTU and the ceiling (§5.3.2). The first probe
//!   is the ceiling itself (a 1500-byte Ethernet path answers it at once); after a size failed
//!   [`MAX_PROBES`] times in a row the search halves the interval between the largest size
//!   acknowledged and the smallest size that failed, until they are [`SEARCH_PRECISION`]
//!   bytes apart.
//! - **SearchComplete**: nothing to probe until [`PMTU_RAISE_TIMER`] (§5.1.1, 600 s) runs out;
//!   then the search runs again from the current PLPMTU up to the ceiling (a path may grow).
//! - **Error** (§5.2 "ERROR"): the base probe went unanswered; the PLPMTU stays at the base
//!   and the base is probed again after [`ERROR_RETRY`].
//!
//! Black-hole detection (§4.3, §5.2): packets larger than the base that are not probes are
//! reported with [`Pmtud::on_packet_sent`]. When [`BLACK_HOLE_PACKETS`] of them were sent and
//! none was acknowledged for [`BLACK_HOLE_PTOS`] probe timeouts since the oldest of them, the
//! path stopped carrying the current PLPMTU (a route change, a tunnel that came up): the
//! PLPMTU falls back to the base and the machine goes to Base, whose probe tells a black hole
//! (the base is acknowledged, the search runs again) from an outage (it is not: Error).
//!
//! Probe losses never count as congestion and retransmit nothing (§3 item 7, §4.4): probes
//! are padding and a ping, sent beside the connection's packets, and only this machine knows
//! of them. A probe is lost when no acknowledgement came one probe timeout after it was sent
//! (§5.1.1 PROBE_TIMER, as QUIC does it: RFC 9000 §14.3): the connection's PTO (RFC 9002
//! §6.2.1, without backoff) once the connection measured its RTT, else one from the probes'
//! own round trips (each probe is sent once, so its acknowledgement is a clean sample). An
//! idle connection measures nothing, and its initial 333 ms guess would make every lost probe
//! cost a second. One probe is in flight at a time, so probing adds at most one small-rate
//! stream of packets per path; they are not counted against the congestion window for that
//! reason.
//!
//! The caller builds the probes ([`Pmtud::poll_probe`] names the size, on the wire, of the
//! datagram to send) and reports what was sent and acknowledged; [`Pmtud::current`] is the
//! largest datagram the path may carry now.

use std::collections::VecDeque;

use super::rtt::RttEstimator;
use crate::time::{Duration, Instant};

/// Probes of one size lost in a row before the size counts as too large (RFC 8899 §5.1.2
/// MAX_PROBES, default 3).
pub const MAX_PROBES: u32 = 3;
/// After a completed search, how long until the path is probed for a larger size again
/// (RFC 8899 §5.1.1 PMTU_RAISE_TIMER, 600 s).
pub const PMTU_RAISE_TIMER: Duration = Duration::from_secs(600);
/// After the base probe went unanswered (Error), how long until it is tried again. RFC 8899
/// leaves it open; a path that carries nothing at all is an outage, which the path agent and
/// the connection's own timers handle, so this only needs to be short enough that the search
/// resumes soon after the path comes back.
pub const ERROR_RETRY: Duration = Duration::from_secs(10);
/// The search stops when the largest size acknowledged and the smallest that failed are this
/// close: a few bytes more per packet is not worth three more probe timeouts.
pub const SEARCH_PRECISION: usize = 16;
/// Packets above the base sent without any of them being acknowledged before a black hole is
/// suspected (three, like the packet threshold of RFC 9002 §6.1.1: fewer is ordinary loss).
pub const BLACK_HOLE_PACKETS: u32 = 3;
/// Probe timeouts since the oldest of those packets before the suspicion is acted on (the
/// brief's "PTO twice": one PTO is what an ordinary tail loss costs).
pub const BLACK_HOLE_PTOS: u32 = 2;
/// Runs of consecutive packet numbers of packets above the base remembered for black-hole
/// detection (a bulk transfer's are one run; interleaved small packets split them). When
/// full, newer ones go unrecorded until an acknowledgement drains the older ones: any
/// acknowledged one clears the suspicion.
const LARGE_RUNS_KEPT: usize = 64;

/// Where the search is (RFC 8899 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmtuState {
    /// Probing is off (the ceiling is not above the base): the PLPMTU is fixed.
    Disabled,
    /// Confirming that the path carries the base size.
    Base,
    /// Probing for a larger size.
    Search,
    /// Done until the raise timer runs out.
    SearchComplete,
    /// The base probe went unanswered; tried again after [`ERROR_RETRY`].
    Error,
}

/// Counters of one path's discovery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PmtuStats {
    /// Probes sent.
    pub probes_sent: u64,
    /// Probes acknowledged.
    pub probes_acked: u64,
    /// Probes declared lost.
    pub probes_lost: u64,
    /// Black holes detected (falls back to the base).
    pub black_holes: u64,
}

/// A probe in flight.
#[derive(Clone, Copy, Debug)]
struct Probe {
    size: usize,
    pn: u64,
    sent: Instant,
    lost_at: Instant,
}

/// Path-MTU discovery of one path (see the module docs).
#[derive(Debug)]
pub struct Pmtud {
    base: usize,
    ceiling: usize,
    state: PmtuState,
    /// The PLPMTU: largest datagram the path is known to carry.
    current: usize,
    /// Smallest size that failed [`MAX_PROBES`] times in this search (`ceiling + 1`: none).
    failed: usize,
    /// Consecutive lost probes of the size being probed.
    attempts: u32,
    probe: Option<Probe>,
    /// When the next probe may go (raise timer, error retry); `None`: at once (if the state
    /// probes at all).
    wait_until: Option<Instant>,
    /// Packet numbers of packets above the base not yet known to be acknowledged, as
    /// inclusive runs, oldest first.
    large: VecDeque<(u64, u64)>,
    /// Since the last acknowledged packet above the base: when the first one after it was
    /// sent, and how many were sent.
    suspect: Option<(Instant, u32)>,
    /// The latest probe timeout in use (for black-hole detection).
    pto: Duration,
    /// Round trips of probes.
    rtt: RttEstimator,
    stats: PmtuStats,
}

impl Pmtud {
    /// A path that starts at `base` bytes and may grow up to `ceiling` (both on the wire).
    /// With `ceiling <= base` probing is off and the path stays at `ceiling`.
    pub fn new(base: usize, ceiling: usize) -> Self {
        let disabled = ceiling <= base;
        Self {
            base: base.min(ceiling),
            ceiling,
            state: if disabled {
                PmtuState::Disabled
            } else {
                PmtuState::Base
            },
            current: base.min(ceiling),
            failed: ceiling + 1,
            attempts: 0,
            probe: None,
            wait_until: None,
            large: VecDeque::new(),
            suspect: None,
            pto: Duration::from_millis(300),
            rtt: RttEstimator::default(),
            stats: PmtuStats::default(),
        }
    }

    // ---- getters -----------------------------------------------------------------------

    /// The PLPMTU: the largest datagram the path may carry now, in bytes on the wire.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Where the search is.
    pub fn state(&self) -> PmtuState {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> PmtuStats {
        self.stats
    }

    // ---- outputs -----------------------------------------------------------------------

    /// The size (on the wire) of the probe to send now, if one is due. The caller sends an
    /// ack-eliciting datagram of exactly this size that carries nothing else (a ping and
    /// padding) and reports it with [`Self::on_probe_sent`]. Pure: asking twice gives the same
    /// answer until then.
    pub fn poll_probe(&self, now: Instant) -> Option<usize> {
        if self.probe.is_some() || self.wait_until.is_some_and(|t| now < t) {
            return None;
        }
        match self.state {
            PmtuState::Base => Some(self.base),
            PmtuState::Search => Some(self.next_size()),
            PmtuState::Disabled | PmtuState::SearchComplete | PmtuState::Error => None,
        }
    }

    /// When [`Self::handle_timeout`] is next needed: a probe's loss, black-hole suspicion
    /// running out, the raise timer or the error retry. Pure.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.probe.map(|p| p.lost_at);
        let mut take = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        take(self.black_hole_at());
        if self.probe.is_none()
            && matches!(self.state, PmtuState::SearchComplete | PmtuState::Error)
        {
            take(self.wait_until);
        }
        t
    }

    // ---- inputs ------------------------------------------------------------------------

    /// The probe [`Self::poll_probe`] asked for went out as packet `pn`; `pto` is the
    /// connection's probe timeout now (how long its acknowledgement may take), `None` while
    /// the connection has not measured its RTT (the probes' own round trips count then).
    pub fn on_probe_sent(&mut self, now: Instant, pn: u64, size: usize, pto: Option<Duration>) {
        self.pto = self.timeout(pto);
        self.stats.probes_sent += 1;
        self.probe = Some(Probe {
            size,
            pn,
            sent: now,
            lost_at: now + self.pto,
        });
    }

    /// A packet that is not a probe went out as `pn`, `size` bytes on the wire (for black-hole
    /// detection: only packets above the base matter); `pto` as for [`Self::on_probe_sent`].
    pub fn on_packet_sent(&mut self, now: Instant, pn: u64, size: usize, pto: Option<Duration>) {
        if size <= self.base {
            return;
        }
        self.pto = self.timeout(pto);
        let full = self.large.len() >= LARGE_RUNS_KEPT;
        match self.large.back_mut() {
            Some((_, end)) if *end + 1 == pn => *end = pn,
            _ if !full => self.large.push_back((pn, pn)),
            _ => {}
        }
        let (since, n) = self.suspect.unwrap_or((now, 0));
        self.suspect = Some((since, n + 1));
    }

    /// The probe timeout: the connection's, or one from the probes' round trips.
    fn timeout(&self, pto: Option<Duration>) -> Duration {
        pto.unwrap_or_else(|| {
            self.rtt.srtt() + (self.rtt.rttvar() * 4).max(Duration::from_millis(1))
        })
    }

    /// The peer acknowledged the packet-number `ranges` (inclusive, any order).
    pub fn on_ack(&mut self, now: Instant, ranges: &[(u64, u64)]) {
        let acked = |pn: u64| ranges.iter().any(|&(a, b)| a <= pn && pn <= b);
        if let Some(p) = self.probe {
            if acked(p.pn) {
                self.rtt.update(now.saturating_duration_since(p.sent));
                self.on_probe_acked(now, p.size);
            }
        }
        let overlaps = |(s, e): (u64, u64)| ranges.iter().any(|&(a, b)| a <= e && s <= b);
        if let Some(i) = self.large.iter().rposition(|&r| overlaps(r)) {
            // A packet above the base got through: the path carries the PLPMTU. Older ones
            // were acknowledged or lost to ordinary loss.
            self.large.drain(..=i);
            self.suspect = None;
        }
    }

    /// Declares the probe in flight lost, the black hole found, or the timer run out, as due.
    /// Idempotent.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = self.probe.filter(|p| now >= p.lost_at) {
            self.on_probe_lost(now, p.size);
        }
        if self.black_hole_at().is_some_and(|t| now >= t) {
            self.on_black_hole();
        }
        if self.probe.is_none() && self.wait_until.is_some_and(|t| now >= t) {
            self.wait_until = None;
            match self.state {
                PmtuState::SearchComplete => {
                    // PMTU_RAISE_TIMER: the path may carry more now.
                    self.failed = self.ceiling + 1;
                    self.attempts = 0;
                    self.state = if self.current >= self.ceiling {
                        self.wait_until = Some(now + PMTU_RAISE_TIMER);
                        PmtuState::SearchComplete
                    } else {
                        PmtuState::Search
                    };
                }
                PmtuState::Error => {
                    self.attempts = 0;
                    self.state = PmtuState::Base;
                }
                _ => {}
            }
        }
    }

    /// The path changed under this machine (the caller's call: a new local address, a new
    /// server): everything starts over from the base.
    pub fn reset(&mut self) {
        let stats = self.stats;
        *self = Self::new(self.base, self.ceiling);
        self.stats = stats;
    }

    // ---- transitions ---------------------------------------------------------------------

    fn on_probe_acked(&mut self, now: Instant, size: usize) {
        self.probe = None;
        self.attempts = 0;
        self.stats.probes_acked += 1;
        match self.state {
            PmtuState::Base => {
                self.state = PmtuState::Search;
                self.after_step(now);
            }
            PmtuState::Search => {
                self.current = self.current.max(size);
                self.after_step(now);
            }
            _ => {}
        }
    }

    fn on_probe_lost(&mut self, now: Instant, size: usize) {
        self.probe = None;
        self.stats.probes_lost += 1;
        self.attempts += 1;
        if self.attempts < MAX_PROBES {
            return; // the same size again
        }
        self.attempts = 0;
        match self.state {
            PmtuState::Base => {
                self.state = PmtuState::Error;
                self.wait_until = Some(now + ERROR_RETRY);
            }
            PmtuState::Search => {
                self.failed = self.failed.min(size);
                self.after_step(now);
            }
            _ => {}
        }
    }

    /// Search: done if nothing worth probing is left between the current size and the
    /// smallest that failed.
    fn after_step(&mut self, now: Instant) {
        if self.state == PmtuState::Search
            && (self.current >= self.ceiling
                || self.failed.saturating_sub(self.current) <= SEARCH_PRECISION)
        {
            self.state = PmtuState::SearchComplete;
            self.wait_until = Some(now + PMTU_RAISE_TIMER);
        }
    }

    fn on_black_hole(&mut self) {
        self.stats.black_holes += 1;
        self.current = self.base;
        self.state = PmtuState::Base;
        self.failed = self.ceiling + 1;
        self.attempts = 0;
        self.probe = None;
        self.wait_until = None;
        self.large.clear();
        self.suspect = None;
    }

    /// The next size the search probes: the ceiling first, then halfway between the current
    /// size and the smallest that failed.
    fn next_size(&self) -> usize {
        if self.failed > self.ceiling {
            self.ceiling
        } else {
            (self.current + self.failed) / 2
        }
    }

    /// When the black-hole suspicion turns into a detection, if there is one.
    fn black_hole_at(&self) -> Option<Instant> {
        let (since, n) = self.suspect?;
        (n >= BLACK_HOLE_PACKETS && self.current > self.base)
            .then(|| since + self.pto * BLACK_HOLE_PTOS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTO: Duration = Duration::from_millis(100);

    fn t0() -> Instant {
        thread_local!(static T0: Instant = crate::tests::epoch());
        T0.with(|t| *t)
    }

    /// Drives `m` against a path that carries datagrams up to `path_mtu`: each probe is
    /// acknowledged at once if it fits, else lost after its timeout. Returns the time taken
    /// and the probe sizes sent.
    fn converge(m: &mut Pmtud, start: Instant, path_mtu: usize) -> (Duration, Vec<usize>) {
        let mut now = start;
        let mut pn = 0;
        let mut sizes = Vec::new();
        for _ in 0..100 {
            if let Some(size) = m.poll_probe(now) {
                sizes.push(size);
                m.on_probe_sent(now, pn, size, Some(PTO));
                if size <= path_mtu {
                    m.on_ack(now, &[(pn, pn)]);
                }
                pn += 1;
                continue;
            }
            match m.state() {
                PmtuState::SearchComplete | PmtuState::Error | PmtuState::Disabled => break,
                _ => {}
            }
            let Some(t) = m.poll_timeout() else { break };
            now = t;
            m.handle_timeout(now);
        }
        (now - start, sizes)
    }

    #[test]
    fn a_path_starts_at_the_base_and_a_ceiling_not_above_it_turns_probing_off() {
        let m = Pmtud::new(1200, 1452);
        assert_eq!(m.current(), 1200);
        assert_eq!(m.state(), PmtuState::Base);
        assert_eq!(
            m.poll_probe(t0()),
            Some(1200),
            "the base is confirmed first"
        );
        let off = Pmtud::new(1200, 1200);
        assert_eq!(off.state(), PmtuState::Disabled);
        assert_eq!(off.poll_probe(t0()), None);
        assert_eq!(off.poll_timeout(), None);
        let capped = Pmtud::new(1200, 1000);
        assert_eq!(
            capped.current(),
            1000,
            "a ceiling below the base is the size"
        );
    }

    #[test]
    fn an_ethernet_path_reaches_the_ceiling_with_two_probes() {
        let mut m = Pmtud::new(1200, 1452);
        let (took, sizes) = converge(&mut m, t0(), 1452);
        assert_eq!(sizes, [1200, 1452]);
        assert_eq!(took, Duration::ZERO);
        assert_eq!(m.current(), 1452);
        assert_eq!(m.state(), PmtuState::SearchComplete);
        assert_eq!(m.poll_probe(t0()), None);
    }

    #[test]
    fn a_tunnel_path_settles_within_the_precision_below_its_mtu() {
        let mut m = Pmtud::new(1200, 1452);
        let (took, sizes) = converge(&mut m, t0(), 1252);
        assert_eq!(m.state(), PmtuState::SearchComplete);
        assert!(
            (1252 - SEARCH_PRECISION..=1252).contains(&m.current()),
            "{}",
            m.current()
        );
        // Every size that failed was tried MAX_PROBES times, and nothing above the path's MTU
        // was ever adopted.
        for s in sizes.iter().filter(|s| **s > 1252) {
            assert_eq!(
                sizes.iter().filter(|x| *x == s).count(),
                MAX_PROBES as usize
            );
        }
        assert_eq!(
            sizes,
            [
                1200, 1452, 1452, 1452, 1326, 1326, 1326, 1263, 1263, 1263, 1231, 1247
            ]
        );
        assert_eq!(took, PTO * 9, "one timeout per lost probe");
        assert_eq!(m.stats().probes_lost, 9);
        assert_eq!(m.stats().probes_acked, 3);
    }

    #[test]
    fn a_lost_probe_is_sent_again_and_an_ack_in_between_resets_the_count() {
        let mut m = Pmtud::new(1200, 1452);
        let now = t0();
        m.on_probe_sent(now, 0, 1200, Some(PTO));
        m.on_ack(now, &[(0, 0)]);
        m.on_probe_sent(now, 1, 1452, Some(PTO));
        assert_eq!(m.poll_probe(now), None, "one probe in flight at a time");
        assert_eq!(m.poll_timeout(), Some(now + PTO));
        m.handle_timeout(now + PTO);
        m.handle_timeout(now + PTO); // idempotent
        assert_eq!(m.stats().probes_lost, 1);
        assert_eq!(m.poll_probe(now + PTO), Some(1452), "the same size again");
        m.on_probe_sent(now + PTO, 2, 1452, Some(PTO));
        m.on_ack(now + PTO, &[(1, 2)]);
        assert_eq!(m.current(), 1452);
        assert_eq!(m.state(), PmtuState::SearchComplete);
    }

    #[test]
    fn an_unanswered_base_probe_is_an_error_retried_later() {
        let mut m = Pmtud::new(1200, 1452);
        let (took, sizes) = converge(&mut m, t0(), 0);
        assert_eq!(sizes, [1200; MAX_PROBES as usize]);
        assert_eq!(m.state(), PmtuState::Error);
        assert_eq!(m.current(), 1200, "never below the base");
        let at = t0() + took;
        assert_eq!(m.poll_timeout(), Some(at + ERROR_RETRY));
        m.handle_timeout(at + ERROR_RETRY);
        assert_eq!(m.state(), PmtuState::Base);
        assert_eq!(m.poll_probe(at + ERROR_RETRY), Some(1200));
    }

    #[test]
    fn the_raise_timer_searches_upward_again() {
        let mut m = Pmtud::new(1200, 1452);
        let start = t0();
        converge(&mut m, start, 1300);
        let done = m.current();
        assert!((1284..=1300).contains(&done), "{done}");
        let raise = m.poll_timeout().expect("the raise timer");
        assert!(raise >= start + PMTU_RAISE_TIMER);
        assert_eq!(m.poll_probe(raise - Duration::from_secs(1)), None);
        m.handle_timeout(raise);
        assert_eq!(m.state(), PmtuState::Search);
        assert_eq!(m.poll_probe(raise), Some(1452), "the ceiling first again");
        // The path grew meanwhile.
        converge(&mut m, raise, 1452);
        assert_eq!(m.current(), 1452);
    }

    #[test]
    fn large_packets_unacknowledged_for_two_ptos_are_a_black_hole_and_fall_back_to_the_base() {
        let mut m = Pmtud::new(1200, 1452);
        let start = t0();
        converge(&mut m, start, 1452);
        assert_eq!(m.current(), 1452);
        // Full-size packets get through and are acknowledged: nothing suspected.
        for pn in 10..20 {
            m.on_packet_sent(start, pn, 1452, Some(PTO));
        }
        m.on_ack(start, &[(10, 15)]);
        m.on_ack(start, &[(16, 19)]);
        assert!(
            m.poll_timeout()
                .is_some_and(|t| t >= start + PMTU_RAISE_TIMER)
        );
        // The route changes: nothing above 1280 passes any more.
        let t = start + Duration::from_millis(10);
        for pn in 20..23 {
            m.on_packet_sent(t, pn, 1452, Some(PTO));
        }
        // Small packets are not evidence either way.
        m.on_packet_sent(t, 23, 200, Some(PTO));
        m.on_ack(t, &[(23, 23)]);
        assert_eq!(m.poll_timeout(), Some(t + PTO * BLACK_HOLE_PTOS));
        m.handle_timeout(t + PTO);
        assert_eq!(m.current(), 1452, "one PTO is ordinary tail loss");
        m.handle_timeout(t + PTO * BLACK_HOLE_PTOS);
        assert_eq!(m.current(), 1200);
        assert_eq!(m.state(), PmtuState::Base);
        assert_eq!(m.stats().black_holes, 1);
        // The base is confirmed, then the search finds the new size.
        let (_, sizes) = converge(&mut m, t + PTO * 2, 1252);
        assert_eq!(sizes[0], 1200);
        assert!((1236..=1252).contains(&m.current()), "{}", m.current());
    }

    #[test]
    fn an_acknowledged_large_packet_clears_the_suspicion_and_fewer_than_three_never_raise_it() {
        let mut m = Pmtud::new(1200, 1452);
        let start = t0();
        converge(&mut m, start, 1452);
        m.on_packet_sent(start, 10, 1452, Some(PTO));
        m.on_packet_sent(start, 11, 1452, Some(PTO));
        assert_eq!(m.poll_timeout().filter(|t| *t < start + PTO * 10), None);
        m.on_packet_sent(start, 12, 1452, Some(PTO));
        assert!(m.poll_timeout().is_some_and(|t| t == start + PTO * 2));
        m.on_ack(start + PTO, &[(11, 11)]); // 10 lost, 11 made it: ordinary loss
        m.handle_timeout(start + PTO * 5);
        assert_eq!(m.current(), 1452);
        assert_eq!(m.stats().black_holes, 0);
    }

    #[test]
    fn a_black_hole_that_is_an_outage_ends_in_error_at_the_base() {
        let mut m = Pmtud::new(1200, 1452);
        let start = t0();
        converge(&mut m, start, 1452);
        for pn in 10..13 {
            m.on_packet_sent(start, pn, 1452, Some(PTO));
        }
        m.handle_timeout(start + PTO * 2);
        assert_eq!(m.current(), 1200);
        let (_, sizes) = converge(&mut m, start + PTO * 2, 0);
        assert_eq!(sizes, [1200; MAX_PROBES as usize]);
        assert_eq!(m.state(), PmtuState::Error);
        assert_eq!(m.current(), 1200);
    }

    #[test]
    fn before_the_connection_measures_its_rtt_probes_time_out_by_their_own_round_trips() {
        let mut m = Pmtud::new(1200, 1452);
        let now = t0();
        m.on_probe_sent(now, 0, 1200, None);
        // Nothing measured yet: the initial guess (333 ms + 4 × 167 ms).
        assert!(
            m.poll_timeout()
                .is_some_and(|t| t - now > Duration::from_millis(900))
        );
        let rtt = Duration::from_millis(40);
        m.on_ack(now + rtt, &[(0, 0)]);
        m.on_probe_sent(now + rtt, 1, 1452, None);
        // One sample of 40 ms: srtt 40, rttvar 20.
        assert_eq!(m.poll_timeout(), Some(now + rtt + rtt * 3));
        // The connection's own PTO wins once it has one.
        let mut m = Pmtud::new(1200, 1452);
        m.on_probe_sent(now, 0, 1200, Some(PTO));
        assert_eq!(m.poll_timeout(), Some(now + PTO));
    }

    #[test]
    fn a_bulk_transfer_longer_than_the_runs_kept_is_no_black_hole() {
        let mut m = Pmtud::new(1200, 1452);
        let start = t0();
        converge(&mut m, start, 1452);
        // 1000 full-size packets in flight (a deep queue), the oldest 400 acknowledged one by
        // one over three probe timeouts: acknowledgements keep coming, no black hole.
        for pn in 100..1100 {
            m.on_packet_sent(start, pn, 1452, Some(PTO));
        }
        for (i, pn) in (100..500).enumerate() {
            let t = start + PTO * 3 * (i as u32 + 1) / 400;
            m.on_ack(t, &[(pn, pn)]);
            m.handle_timeout(t);
        }
        assert_eq!(m.current(), 1452);
        assert_eq!(m.stats().black_holes, 0);
        // Interleaved with small packets, runs are single packets: still recognised.
        for pn in 2000..2300 {
            m.on_packet_sent(start, pn, if pn % 2 == 0 { 1452 } else { 100 }, Some(PTO));
        }
        m.on_ack(start + PTO, &[(2100, 2100)]);
        m.handle_timeout(start + PTO * 10);
        assert_eq!(
            m.stats().black_holes,
            0,
            "an old run acknowledged clears it"
        );
    }

    #[test]
    fn reset_starts_over_from_the_base_and_keeps_the_counters() {
        let mut m = Pmtud::new(1200, 1452);
        converge(&mut m, t0(), 1452);
        m.reset();
        assert_eq!(m.current(), 1200);
        assert_eq!(m.state(), PmtuState::Base);
        assert_eq!(m.stats().probes_sent, 2);
    }
}
