//! Scale, link profiles and workloads.

use std::time::Duration;

use pierce_sim::{GE_STEP, GilbertElliott};

pub(crate) const TICK_NS: u64 = 1_000_000_000 / 60;
/// Largest datagram, all contenders.
pub(crate) const MTU: usize = 1200;
pub(crate) const BLOB_SIZE: usize = 1 << 20;
/// kcp refuses a message of 128 fragments or more; the blob goes as 16 messages of 64 KiB.
pub(crate) const KCP_BLOB_CHUNK: usize = 64 << 10;
/// Bottleneck per direction of each pair, bytes per second (10 Mbit/s).
pub(crate) const RATE: u64 = 10_000_000 / 8;
/// Drop-tail queue in front of the bottleneck.
pub(crate) const QUEUE_BYTES: u64 = 64 << 10;
/// After the last message tick, a reliable run that has not delivered everything by then
/// is stopped and reported as "did not finish" (kcp's defaults, whose retransmission timer
/// doubles without bound).
pub(crate) const DRAIN_CAP: Duration = Duration::from_secs(120);
/// Unreliable runs end this long after the last message tick.
pub(crate) const UNRELIABLE_TAIL: Duration = Duration::from_secs(1);
/// The blob workload keeps ticking until the blob is complete, at most this many ticks more.
const BLOB_EXTRA_TICKS: u64 = 120 * 60;
/// Pierce and ENet peers' sockets are numbered from this port.
pub(crate) const PORT_BASE: u16 = 1000;

pub(crate) fn tick_time(k: u64) -> Duration {
    Duration::from_nanos(k * TICK_NS)
}

#[derive(Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) rounds: usize,
    /// Message ticks of the N = 2 and N = 8 workloads.
    ticks_2: u64,
    ticks_8: u64,
    /// Message ticks of the blob workload, and the tick the blob is queued at.
    ticks_blob: u64,
    blob_at: u64,
    /// Identical runs per contender per round at N = 2.
    pub(crate) repeat_2: usize,
}

pub(crate) const FULL: Scale = Scale {
    rounds: 9,
    ticks_2: 1800,
    ticks_8: 900,
    ticks_blob: 600,
    blob_at: 120,
    repeat_2: 3,
};

pub(crate) const QUICK: Scale = Scale {
    rounds: 3,
    ticks_2: 180,
    ticks_8: 120,
    ticks_blob: 240,
    blob_at: 60,
    repeat_2: 1,
};

#[derive(Clone, Copy)]
pub(crate) enum LossModel {
    None,
    Random(f64),
    Burst(GilbertElliott),
}

#[derive(Clone, Copy)]
pub(crate) struct Profile {
    pub(crate) key: &'static str,
    pub(crate) one_way: Duration,
    /// Uniform in ±jitter around `one_way`.
    pub(crate) jitter: Duration,
    pub(crate) loss: LossModel,
}

/// lightyear's Wi-Fi fit, as in `pierce_sim::LinkProfile::wifi()`, stepping every
/// [`GE_STEP`] of virtual time.
const WIFI_GE: GilbertElliott = GilbertElliott {
    p_good_to_bad: 0.00226,
    p_bad_to_good: 0.129,
    loss_good: 0.0,
    loss_bad: 0.991,
    step: GE_STEP,
};

pub(crate) const PROFILES: [Profile; 5] = [
    Profile {
        key: "clean",
        one_way: Duration::from_millis(10),
        jitter: Duration::ZERO,
        loss: LossModel::None,
    },
    Profile {
        key: "good",
        one_way: Duration::from_millis(20),
        jitter: Duration::from_millis(3),
        loss: LossModel::Random(0.002),
    },
    Profile {
        key: "average",
        one_way: Duration::from_millis(50),
        jitter: Duration::from_micros(7500),
        loss: LossModel::Random(0.02),
    },
    Profile {
        key: "poor",
        one_way: Duration::from_millis(100),
        jitter: Duration::from_millis(15),
        loss: LossModel::Random(0.10),
    },
    Profile {
        key: "wifi",
        one_way: Duration::from_millis(25),
        jitter: Duration::from_millis(5),
        loss: LossModel::Burst(WIFI_GE),
    },
];

pub(crate) struct Workload {
    pub(crate) key: &'static str,
    pub(crate) peers: usize,
    pub(crate) size: usize,
    /// Messages each peer queues to each other peer per tick.
    pub(crate) per_tick: usize,
    pub(crate) reliable: bool,
    pub(crate) ticks: u64,
    /// Tick at which peer 0 queues the blob to peer 1.
    pub(crate) blob_at: Option<u64>,
    /// Jitter independent per datagram, so it reorders (see [`impair`](crate::link::impair)).
    pub(crate) reorder: bool,
    pub(crate) repeat: usize,
}

impl Workload {
    pub(crate) fn title(&self) -> String {
        let chan = if self.reliable {
            "reliable-ordered"
        } else {
            "unreliable-sequenced"
        };
        let flows = self.peers * (self.peers - 1);
        let mut s = format!(
            "{}: N={} full mesh ({flows} flows), {} B x {} msg/flow/tick at 60 Hz, {chan}, {:.1} s",
            self.key,
            self.peers,
            self.size,
            self.per_tick,
            self.ticks as f64 / 60.0
        );
        if self.reorder {
            s.push_str(", jitter independent per datagram (REORDERS)");
        }
        if let Some(at) = self.blob_at {
            s.push_str(&format!(
                ", + 1 MiB blob peer 0 -> 1 at {:.1} s (ticks continue until it is complete)",
                at as f64 / 60.0
            ));
        }
        s
    }

    /// Most ticks a run can send messages on.
    pub(crate) fn max_ticks(&self) -> u64 {
        self.ticks
            + if self.blob_at.is_some() {
                BLOB_EXTRA_TICKS
            } else {
                0
            }
    }
}

pub(crate) fn workloads(s: Scale) -> Vec<Workload> {
    let w = |key, peers, size, reliable: bool| Workload {
        key,
        peers,
        size,
        per_tick: if reliable { 2 } else { 1 },
        reliable,
        ticks: if peers == 2 { s.ticks_2 } else { s.ticks_8 },
        blob_at: None,
        reorder: false,
        repeat: if peers == 2 { s.repeat_2 } else { 1 },
    };
    let blob = |key, reorder| Workload {
        key,
        peers: 2,
        size: 64,
        per_tick: 2,
        reliable: true,
        ticks: s.ticks_blob,
        blob_at: Some(s.blob_at),
        reorder,
        repeat: s.repeat_2,
    };
    vec![
        w("rel64_n2", 2, 64, true),
        w("rel200_n2", 2, 200, true),
        w("seq64_n2", 2, 64, false),
        w("seq200_n2", 2, 200, false),
        w("rel64_n8", 8, 64, true),
        w("rel200_n8", 8, 200, true),
        w("seq64_n8", 8, 64, false),
        w("seq200_n8", 8, 200, false),
        blob("blob_n2", false),
        blob("blob_n2_reorder", true),
    ]
}
