//! One direction of an access link: what happens to a datagram between a host and the core.
//!
//! The model follows str0m's `netem` crate and Linux `netem`: a rate-limited FIFO with a
//! byte-bounded queue (tail drop), then propagation latency plus jitter, with independent
//! chances of loss (uniform or Gilbert–Elliott bursts), duplication and reordering, an MTU
//! (oversize datagrams are dropped, never fragmented, like quinn's `Pair.mtu`: an IP MTU, so a
//! UDP datagram's payload plus [`UDP_IPV4_OVERHEAD`] or [`UDP_IPV6_OVERHEAD`] must fit it) and
//! optional periodic outages (handovers).
//!
//! Jitter alone never reorders: arrivals are kept in FIFO order unless a packet is picked for
//! reordering, in which case it is held back by `reorder_delay` and later packets overtake it.

use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

/// Bytes an IPv4 and a UDP header add to a UDP payload (20 + 8).
pub const UDP_IPV4_OVERHEAD: usize = 28;
/// Bytes an IPv6 and a UDP header add to a UDP payload (40 + 8).
pub const UDP_IPV6_OVERHEAD: usize = 48;

/// How datagrams get lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Never.
    None,
    /// Each datagram independently with this probability.
    Random(f64),
    /// In bursts (see [`GilbertElliott`]).
    GilbertElliott(GilbertElliott),
}

/// Two-state burst-loss model: a good and a bad state, each with its own loss probability,
/// and a chance of switching state at every step of the chain.
///
/// The chain steps once per datagram (netem's model), and also once per `step` of time that
/// passes between datagrams. Without the time steps a burst is counted in datagrams only, so
/// on sparse traffic (handshake retries seconds apart) a "burst of 4" would black out a link
/// for many seconds; with them, bursts last about `mean_burst × step` in time when traffic is
/// sparser than one datagram per `step`. `step` zero gives the pure per-datagram model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Chance, per step, of going from good to bad.
    pub p_good_to_bad: f64,
    /// Chance, per step, of going from bad to good (1 / mean burst length in steps).
    pub p_bad_to_good: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
    /// Idle time that counts as one step of the chain (see the type docs).
    pub step: Duration,
}

/// Default [`GilbertElliott::step`]: one game tick at 50 Hz.
pub const GE_STEP: Duration = Duration::from_millis(20);

impl GilbertElliott {
    /// The "simple Gilbert" model: nothing lost in the good state, everything in the bad one,
    /// with a long-run loss rate of `loss_rate` in bursts of `mean_burst` datagrams on average
    /// (netem's `with_simple_gilbert_loss`).
    ///
    /// # Panics
    /// If `loss_rate` is not in `[0, 1)` or `mean_burst < 1`.
    pub fn simple(loss_rate: f64, mean_burst: f64) -> Self {
        assert!(
            (0.0..1.0).contains(&loss_rate),
            "loss_rate must be in [0, 1)"
        );
        assert!(mean_burst >= 1.0, "mean_burst must be at least 1");
        let p_bad_to_good = 1.0 / mean_burst;
        Self {
            // Stationary P(bad) = p_gb / (p_gb + p_bg) = loss_rate.
            p_good_to_bad: loss_rate * p_bad_to_good / (1.0 - loss_rate),
            p_bad_to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
            step: GE_STEP,
        }
    }

    /// With this time step (zero: per datagram only).
    pub fn with_step(mut self, step: Duration) -> Self {
        self.step = step;
        self
    }

    /// Whether the chain is in the bad state after `n` steps from `bad`.
    fn advance(&self, bad: bool, n: u64, rng: &mut StdRng) -> bool {
        let sum = self.p_good_to_bad + self.p_bad_to_good;
        if sum <= 0.0 {
            return bad;
        }
        // Closed form of the two-state chain after n steps: it forgets its start at rate
        // lambda = 1 - p_gb - p_bg per step.
        let stationary_bad = self.p_good_to_bad / sum;
        let memory = (1.0 - sum).powi(n.min(i32::MAX as u64) as i32);
        let p_bad = if bad {
            stationary_bad + (1.0 - stationary_bad) * memory
        } else {
            stationary_bad * (1.0 - memory)
        };
        rng.random_bool(p_bad.clamp(0.0, 1.0))
    }

    /// Long-run fraction of datagrams lost.
    pub fn mean_loss(&self) -> f64 {
        let p_bad = self.p_good_to_bad / (self.p_good_to_bad + self.p_bad_to_good);
        p_bad * self.loss_bad + (1.0 - p_bad) * self.loss_good
    }
}

/// The link goes dark for `duration` once every `period` (a cell handover, a Wi-Fi roam).
/// The phase is drawn from the link's random stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// Time between outage starts.
    pub period: Duration,
    /// How long each lasts.
    pub duration: Duration,
}

/// One direction of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per datagram.
    pub jitter: Duration,
    /// Loss model.
    pub loss: Loss,
    /// Chance a datagram is delivered twice.
    pub duplicate: f64,
    /// Chance a datagram is held back by `reorder_delay`, letting later ones overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// Serialisation rate in bytes per second; `None` is unlimited.
    pub rate: Option<u64>,
    /// Bytes that may wait for the serialiser; beyond it new datagrams are tail-dropped.
    pub queue_bytes: usize,
    /// IP MTU: the largest IP packet carried; a UDP datagram whose payload and headers
    /// ([`UDP_IPV4_OVERHEAD`], [`UDP_IPV6_OVERHEAD`]) exceed it is dropped
    /// ([`LinkDrop::Mtu`]). 1500 (Ethernet) by default: UDP payloads up to 1472 bytes over
    /// IPv4, 1452 over IPv6.
    pub mtu: usize,
    /// Periodic outages, if any.
    pub outage: Option<Outage>,
}

impl Default for LinkConfig {
    /// A perfect link: no delay, no loss, no limits beyond a 1500-byte (Ethernet) MTU.
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: Loss::None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            rate: None,
            queue_bytes: usize::MAX,
            mtu: 1500,
            outage: None,
        }
    }
}

impl LinkConfig {
    /// A perfect link with this latency.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }
}

/// Both directions of a host's access link. `up` carries what the host sends.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkProfile {
    /// Host to network.
    pub up: LinkConfig,
    /// Network to host.
    pub down: LinkConfig,
}

const MBIT: u64 = 1_000_000 / 8;

impl LinkProfile {
    /// The same settings both ways.
    pub fn symmetric(config: LinkConfig) -> Self {
        Self {
            up: config.clone(),
            down: config,
        }
    }

    /// No delay, no loss: for logic tests.
    pub fn perfect() -> Self {
        Self::symmetric(LinkConfig::default())
    }

    /// Wired LAN: 0.2 ms, 1 Gbit/s, clean.
    pub fn lan() -> Self {
        Self::symmetric(LinkConfig {
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(50),
            rate: Some(1000 * MBIT),
            queue_bytes: 1 << 20,
            ..LinkConfig::default()
        })
    }

    /// Home broadband: 10 ms ±2 ms, 0.1 % random loss, 20 Mbit/s up and 100 down, 64 KiB
    /// queues.
    pub fn broadband() -> Self {
        let base = LinkConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(2),
            loss: Loss::Random(0.001),
            queue_bytes: 64 << 10,
            ..LinkConfig::default()
        };
        Self {
            up: LinkConfig {
                rate: Some(20 * MBIT),
                ..base.clone()
            },
            down: LinkConfig {
                rate: Some(100 * MBIT),
                ..base
            },
        }
    }

    /// Wi-Fi: 5 ms with up to 9 ms jitter and the Gilbert–Elliott parameters lightyear fitted
    /// to a real trace (good→bad 0.00226, bad→good 0.129, 99.1 % loss while bad); slight
    /// reordering and duplication; 50 Mbit/s.
    pub fn wifi() -> Self {
        Self::symmetric(LinkConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(9),
            loss: Loss::GilbertElliott(GilbertElliott {
                p_good_to_bad: 0.00226,
                p_bad_to_good: 0.129,
                loss_good: 0.0,
                loss_bad: 0.991,
                step: GE_STEP,
            }),
            duplicate: 0.001,
            reorder: 0.005,
            reorder_delay: Duration::from_millis(10),
            rate: Some(50 * MBIT),
            queue_bytes: 128 << 10,
            ..LinkConfig::default()
        })
    }

    /// Cellular (LTE-ish): 40 ms ±20 ms, 2 % loss in bursts of 4, 1 % reordering, 10 Mbit/s
    /// up and 30 down, deep buffers (bufferbloat), MTU 1400.
    pub fn cellular() -> Self {
        let base = LinkConfig {
            latency: Duration::from_millis(40),
            jitter: Duration::from_millis(20),
            loss: Loss::GilbertElliott(GilbertElliott::simple(0.02, 4.0)),
            reorder: 0.01,
            reorder_delay: Duration::from_millis(30),
            queue_bytes: 256 << 10,
            mtu: 1400,
            ..LinkConfig::default()
        };
        Self {
            up: LinkConfig {
                rate: Some(10 * MBIT),
                ..base.clone()
            },
            down: LinkConfig {
                rate: Some(30 * MBIT),
                ..base
            },
        }
    }

    /// A moving phone: cellular at 75 ms ±20 ms with 5 % loss in bursts of 8 and a 400 ms
    /// blackout every 20 s. Pair it with scripted [`crate::Action::Roam`] for the new address a
    /// real handover often brings.
    pub fn mobile_handover() -> Self {
        let mut p = Self::cellular();
        for dir in [&mut p.up, &mut p.down] {
            dir.latency = Duration::from_millis(75);
            dir.loss = Loss::GilbertElliott(GilbertElliott::simple(0.05, 8.0));
            dir.outage = Some(Outage {
                period: Duration::from_secs(20),
                duration: Duration::from_millis(400),
            });
        }
        p
    }
}

/// Why a link dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDrop {
    /// Larger than the MTU.
    Mtu,
    /// Random or burst loss.
    Loss,
    /// The queue was full.
    QueueFull,
    /// The link was in an outage.
    Outage,
}

/// Per-direction counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams offered to the link.
    pub sent: u64,
    /// Bytes offered to the link.
    pub bytes_sent: u64,
    /// Copies that made it across (duplicates count twice).
    pub delivered: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Datagrams held back so that later ones overtook them.
    pub reordered: u64,
    /// Dropped for exceeding the MTU.
    pub dropped_mtu: u64,
    /// Dropped by the loss model.
    pub dropped_loss: u64,
    /// Tail-dropped because the queue was full.
    pub dropped_queue: u64,
    /// Dropped during an outage.
    pub dropped_outage: u64,
}

impl LinkStats {
    /// All drops together.
    pub fn dropped(&self) -> u64 {
        self.dropped_mtu + self.dropped_loss + self.dropped_queue + self.dropped_outage
    }
}

/// What happened to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It arrives at `at`, and a duplicate at `duplicate` if one was made.
    Arrives {
        /// Arrival time.
        at: Instant,
        /// Arrival time of the duplicate.
        duplicate: Option<Instant>,
    },
    /// It is gone.
    Dropped(LinkDrop),
}

/// The state of one link direction: its config, random stream, queue and counters.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    rng: StdRng,
    /// Gilbert–Elliott state, and when it last stepped.
    bad: bool,
    last_step: Instant,
    /// When the serialiser finishes what is queued.
    busy_until: Instant,
    /// Latest in-order arrival, to keep jitter from reordering.
    last_arrival: Instant,
    /// Outage phase offset from the epoch.
    epoch: Instant,
    outage_phase: Duration,
    stats: LinkStats,
}

impl Link {
    /// A link whose randomness comes from `rng` (derive it with [`crate::substream`]).
    pub fn new(config: LinkConfig, mut rng: StdRng, epoch: Instant) -> Self {
        let outage_phase = match config.outage {
            Some(o) if !o.period.is_zero() => {
                Duration::from_nanos(rng.random_range(0..o.period.as_nanos() as u64))
            }
            _ => Duration::ZERO,
        };
        Self {
            config,
            rng,
            bad: false,
            last_step: epoch,
            busy_until: epoch,
            last_arrival: epoch,
            epoch,
            outage_phase,
            stats: LinkStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The link's MTU changes (a route change, a tunnel that comes up).
    pub fn set_mtu(&mut self, mtu: usize) {
        self.config.mtu = mtu;
    }

    /// Offers a datagram of `len` bytes at `now` and decides its fate (`len` is the whole IP
    /// packet as far as the MTU goes).
    pub fn send(&mut self, now: Instant, len: usize) -> Sent {
        self.offer(now, len, len)
    }

    /// Offers a UDP datagram with a `payload`-byte payload over IPv6 or IPv4: the MTU counts
    /// the headers too; rate and queue count the payload.
    pub fn send_udp(&mut self, now: Instant, payload: usize, ipv6: bool) -> Sent {
        let headers = if ipv6 {
            UDP_IPV6_OVERHEAD
        } else {
            UDP_IPV4_OVERHEAD
        };
        self.offer(now, payload, payload + headers)
    }

    fn offer(&mut self, now: Instant, len: usize, ip_len: usize) -> Sent {
        self.stats.sent += 1;
        self.stats.bytes_sent += len as u64;
        let c = &self.config;
        if ip_len > c.mtu {
            self.stats.dropped_mtu += 1;
            return Sent::Dropped(LinkDrop::Mtu);
        }
        if let Some(o) = c.outage {
            if !o.period.is_zero() {
                let t = (now - self.epoch + self.outage_phase).as_nanos() % o.period.as_nanos();
                if t < o.duration.as_nanos() {
                    self.stats.dropped_outage += 1;
                    return Sent::Dropped(LinkDrop::Outage);
                }
            }
        }
        let lost = match c.loss {
            Loss::None => false,
            Loss::Random(p) => self.rng.random_bool(p),
            Loss::GilbertElliott(ge) => {
                let idle = now.saturating_duration_since(self.last_step);
                let steps = if ge.step.is_zero() {
                    1
                } else {
                    ((idle.as_nanos() / ge.step.as_nanos()) as u64).max(1)
                };
                self.last_step = now;
                self.bad = ge.advance(self.bad, steps, &mut self.rng);
                self.rng
                    .random_bool(if self.bad { ge.loss_bad } else { ge.loss_good })
            }
        };
        if lost {
            self.stats.dropped_loss += 1;
            return Sent::Dropped(LinkDrop::Loss);
        }
        let departs = match c.rate {
            None => now,
            Some(rate) => {
                let start = self.busy_until.max(now);
                let backlog = (start - now).as_nanos() * u128::from(rate) / 1_000_000_000;
                if backlog + len as u128 > c.queue_bytes as u128 {
                    self.stats.dropped_queue += 1;
                    return Sent::Dropped(LinkDrop::QueueFull);
                }
                let tx = Duration::from_nanos(
                    (len as u128 * 1_000_000_000 / u128::from(rate.max(1))) as u64,
                );
                self.busy_until = start + tx;
                self.busy_until
            }
        };
        let (latency, reorder, reorder_delay, duplicate) =
            (c.latency, c.reorder, c.reorder_delay, c.duplicate);
        let mut at = departs + latency + self.jitter();
        if reorder > 0.0 && self.rng.random_bool(reorder) {
            at += reorder_delay;
            self.stats.reordered += 1;
        } else {
            at = at.max(self.last_arrival);
            self.last_arrival = at;
        }
        let duplicate = (duplicate > 0.0 && self.rng.random_bool(duplicate)).then(|| {
            self.stats.duplicated += 1;
            at + self.jitter()
        });
        self.stats.delivered += 1 + u64::from(duplicate.is_some());
        Sent::Arrives { at, duplicate }
    }

    fn jitter(&mut self) -> Duration {
        let j = self.config.jitter.as_nanos() as u64;
        if j == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.random_range(0..=j))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substream;

    fn link(config: LinkConfig, seed: u64) -> (Link, Instant) {
        let epoch = crate::clock::Clock::start().epoch();
        (
            Link::new(config, substream(seed, "test-link"), epoch),
            epoch,
        )
    }

    fn arrivals(sent: Sent) -> Vec<Instant> {
        match sent {
            Sent::Arrives { at, duplicate } => std::iter::once(at).chain(duplicate).collect(),
            Sent::Dropped(_) => vec![],
        }
    }

    #[test]
    fn random_loss_rate_is_within_tolerance() {
        let (rate, _) = loss_pattern(Loss::Random(0.2), 1, 20_000, Duration::from_millis(1));
        assert!((rate - 0.2).abs() < 0.015, "loss rate {rate}");
    }

    /// Sends `n` datagrams `spacing` apart; returns the loss rate and the mean burst length.
    fn loss_pattern(loss: Loss, seed: u64, n: u32, spacing: Duration) -> (f64, f64) {
        let (mut l, t0) = link(
            LinkConfig {
                loss,
                ..LinkConfig::default()
            },
            seed,
        );
        let (mut lost, mut bursts, mut prev_lost) = (0u64, 0u64, false);
        for i in 0..n {
            let dropped = matches!(l.send(t0 + spacing * i, 100), Sent::Dropped(_));
            lost += u64::from(dropped);
            bursts += u64::from(dropped && !prev_lost);
            prev_lost = dropped;
        }
        assert_eq!(l.stats().dropped_loss, lost);
        (lost as f64 / f64::from(n), lost as f64 / bursts as f64)
    }

    #[test]
    fn gilbert_elliott_loss_has_the_configured_rate_and_comes_in_bursts() {
        let ge = GilbertElliott::simple(0.3, 5.0);
        assert!((ge.mean_loss() - 0.3).abs() < 1e-9);
        // Datagrams 1 ms apart, denser than the 20 ms step: the chain steps per datagram.
        let (rate, burst) = loss_pattern(
            Loss::GilbertElliott(ge),
            2,
            50_000,
            Duration::from_millis(1),
        );
        assert!((rate - 0.3).abs() < 0.03, "loss rate {rate}");
        assert!((burst - 5.0).abs() < 0.6, "mean burst {burst}");
    }

    #[test]
    fn gilbert_elliott_bursts_are_short_in_time_on_sparse_traffic() {
        // One datagram a second, far sparser than the 20 ms step: the same 30 % loss, but a
        // burst rarely spans two datagrams (independent loss would give a mean run of 1.43).
        let ge = GilbertElliott::simple(0.3, 5.0);
        let (rate, burst) =
            loss_pattern(Loss::GilbertElliott(ge), 11, 20_000, Duration::from_secs(1));
        assert!((rate - 0.3).abs() < 0.02, "loss rate {rate}");
        assert!(burst < 1.6, "mean burst {burst}");
        // The pure per-datagram chain keeps its bursts whatever the spacing.
        let per_datagram = Loss::GilbertElliott(ge.with_step(Duration::ZERO));
        let (_, burst) = loss_pattern(per_datagram, 11, 20_000, Duration::from_secs(1));
        assert!((burst - 5.0).abs() < 0.6, "mean burst {burst}");
    }

    #[test]
    fn oversize_datagrams_are_dropped_at_the_mtu() {
        let (mut l, t0) = link(
            LinkConfig {
                mtu: 1200,
                ..LinkConfig::default()
            },
            3,
        );
        assert!(matches!(l.send(t0, 1200), Sent::Arrives { .. }));
        assert_eq!(l.send(t0, 1201), Sent::Dropped(LinkDrop::Mtu));
        assert_eq!(l.stats().dropped_mtu, 1);
        assert_eq!(l.stats().delivered, 1);
    }

    #[test]
    fn rate_limit_serialises_and_tail_drops_when_the_queue_is_full() {
        // 1000 B/s with room for 3000 bytes (counting the one being serialised): of a burst
        // of ten 1000-byte datagrams, three leave one second apart and seven are tail-dropped.
        let (mut l, t0) = link(
            LinkConfig {
                rate: Some(1000),
                queue_bytes: 3000,
                ..LinkConfig::default()
            },
            4,
        );
        let fates: Vec<Sent> = (0..10).map(|_| l.send(t0, 1000)).collect();
        let times: Vec<Instant> = fates.iter().copied().flat_map(arrivals).collect();
        assert_eq!(
            times,
            (1..=3)
                .map(|s| t0 + Duration::from_secs(s))
                .collect::<Vec<_>>()
        );
        assert_eq!(l.stats().dropped_queue, 7);
        assert_eq!(fates[9], Sent::Dropped(LinkDrop::QueueFull));
        // Once the queue drains, datagrams flow again.
        assert!(matches!(
            l.send(t0 + Duration::from_secs(3), 1000),
            Sent::Arrives { .. }
        ));
    }

    #[test]
    fn jitter_alone_keeps_fifo_order() {
        let (mut l, t0) = link(
            LinkConfig {
                latency: Duration::from_millis(10),
                jitter: Duration::from_millis(50),
                ..LinkConfig::default()
            },
            5,
        );
        let times: Vec<Instant> = (0..1000)
            .flat_map(|i| arrivals(l.send(t0 + Duration::from_millis(i), 100)))
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(l.stats().reordered, 0);
    }

    #[test]
    fn reordering_lets_later_datagrams_overtake() {
        let (mut l, t0) = link(
            LinkConfig {
                latency: Duration::from_millis(10),
                reorder: 0.1,
                reorder_delay: Duration::from_millis(25),
                ..LinkConfig::default()
            },
            6,
        );
        let times: Vec<Instant> = (0..1000)
            .flat_map(|i| arrivals(l.send(t0 + Duration::from_millis(i), 100)))
            .collect();
        let inversions = times.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(inversions > 50, "only {inversions} inversions");
        let r = l.stats().reordered;
        assert!((70..=130).contains(&r), "reordered {r}");
    }

    #[test]
    fn duplication_delivers_some_datagrams_twice() {
        let (mut l, t0) = link(
            LinkConfig {
                duplicate: 0.05,
                ..LinkConfig::default()
            },
            7,
        );
        for i in 0..10_000 {
            let _ = l.send(t0 + Duration::from_millis(i), 100);
        }
        let s = l.stats();
        assert!(
            (400..=600).contains(&s.duplicated),
            "duplicated {}",
            s.duplicated
        );
        assert_eq!(s.delivered, 10_000 + s.duplicated);
    }

    #[test]
    fn outages_drop_everything_for_their_duration() {
        let (mut l, t0) = link(
            LinkConfig {
                outage: Some(Outage {
                    period: Duration::from_secs(10),
                    duration: Duration::from_secs(1),
                }),
                ..LinkConfig::default()
            },
            8,
        );
        for i in 0..100_000 {
            let _ = l.send(t0 + Duration::from_millis(i), 10);
        }
        // 100 s, one second in ten dark: 10 % of datagrams, give or take a boundary.
        let d = l.stats().dropped_outage;
        assert!((9_900..=10_100).contains(&d), "outage drops {d}");
    }

    #[test]
    fn same_seed_same_fates() {
        let fates = |seed| {
            let (mut l, t0) = link(LinkProfile::wifi().up, seed);
            (0..2000)
                .map(|i| l.send(t0 + Duration::from_millis(i), 500))
                .map(|s| match s {
                    Sent::Arrives { at, duplicate } => {
                        (Some(at - t0), duplicate.map(|d| d - t0), None)
                    }
                    Sent::Dropped(r) => (None, None, Some(r)),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(fates(9), fates(9));
        assert_ne!(fates(9), fates(10));
    }
}
