//! Pierce's reliability layer (`pierce_core::reliability::Connection`) against the IO-free
//! cores of three peers: renet (`RenetServer`), rusty_enet (`Host` over an in-memory socket)
//! and kcp (`Kcp`), all driven by one deterministic harness in virtual time over the same
//! seeded impairment code.
//!
//! # Method
//!
//! - **Topology**: N peers in a full mesh (N = 2: one connection; N = 8: 28 connections, 56
//!   directed flows), every peer one endpoint per remote peer (Pierce: a `Connection`; renet:
//!   one `RenetServer` per peer holding a connection to every other peer; enet: one `Host` per
//!   peer; kcp: one `Kcp` per directed pair, plus a second conversation for the blob).
//! - **Link**: every datagram of every contender goes through the one seeded [`impair`]
//!   function, per direction of each pair. It draws the same two random numbers per datagram
//!   whatever happens (loss, jitter), so within a round (same seed) the n-th datagram in a
//!   direction meets the same random fate for every contender. Behind the loss model each
//!   direction has a 10 Mbit/s bottleneck with a 64 KiB drop-tail queue (the game ticks use
//!   under 1% of it; it is what the 1 MiB blob competes for, so a contender that floods it
//!   pays in tail drops, and one that slows down does not). Jitter is uniform in ±j around the
//!   one-way delay and keeps each direction FIFO (an arrival never precedes the previous one,
//!   as in `pierce_sim::Link`: real jitter is mostly queueing, which does not reorder);
//!   the `blob_n2_reorder` workload draws jitter independently per datagram instead, netem
//!   style, which reorders back-to-back datagrams heavily (see the README for why it is there).
//! - **Profiles** (RTT = twice the one-way delay):
//!   `clean` RTT 20 ms, no jitter, no loss;
//!   `good` RTT 40 ms ±6 ms, 0.2% random loss;
//!   `average` RTT 100 ms ±15 ms, 2% random loss;
//!   `poor` RTT 200 ms ±30 ms, 10% random loss;
//!   `wifi` RTT 50 ms ±10 ms, bursty Gilbert–Elliott loss with the parameters lightyear fitted
//!   to a real Wi-Fi trace, as in `pierce_sim::LinkProfile::wifi()` (a
//!   `pierce_sim::GilbertElliott`): good→bad 0.00226 and bad→good 0.129 per 20 ms step
//!   (`pierce_sim::GE_STEP`), loss 0 in the good state and 99.1% in the bad one: bursts of
//!   155 ms on average, about one per 9 s per direction, 1.7% of the time. The chain steps
//!   with virtual time from its own seeded stream, so every contender meets the same bursts
//!   at the same times (stepping it per datagram would make a burst last 8 of a contender's
//!   own datagrams: minutes for one that backs off exponentially).
//! - **Workloads**: 60 Hz game ticks; every tick each peer queues messages to every other
//!   peer, 2 per tick on the reliable-ordered channel and 1 on the unreliable-sequenced one (a
//!   sequenced channel keeps only the newest, and Pierce's drops a queued message that a newer
//!   one supersedes before it was sent). Each message carries its sequence number and is
//!   checked byte for byte. Messages of 64 B and 200 B, N = 2 (30 s) and N = 8 (15 s); plus
//!   the blob workloads: N = 2, 64 B
//!   reliable ticks both ways, and at 2 s peer 0 sends a 1 MiB blob reliably to peer 1 on a
//!   second channel while ticks continue (until the blob is complete).
//! - **Delivery semantics are checked** and the bench panics loudly on a violation: reliable
//!   means exactly once, in order, intact (and everything arrives); sequenced means never a
//!   message older than (or equal to) one already delivered. renet has no sequenced channel:
//!   its unreliable channel is used and the harness drops stale messages the way an
//!   application would (counted, not a violation). kcp has no unreliable mode at all: it is
//!   reported on the reliable rows only (sending raw datagrams beside it would measure the
//!   harness, not kcp).
//! - **Driving**: each contender the way it is meant to be driven, and every contender
//!   processes a datagram the moment it arrives.
//!   Pierce is event driven, as its runtimes drive it: after every input the harness writes
//!   packets while `wants_transmit`, and calls `handle_timeout` at `poll_timeout`.
//!   renet is tick driven: `update` + `get_packets_to_send` per connection once per 60 Hz
//!   tick, as `bevy_renet`/its netcode transport do; `process_packet_from` on arrival (its
//!   clock advances per tick; it uses the clock only for stats, resends and slice expiry,
//!   all of which happen at ticks).
//!   enet: `Host::service` until it returns no event, once per tick and on every arrival (a
//!   blocking `enet_host_service` wakes on a datagram and acknowledges it at once).
//!   kcp: `update` at the times `check` asks for (its interval), `input` + `recv` on arrival,
//!   `send` only queues (the reference loop; acks and data leave at the next flush).
//! - **Settings** ("default" and tuned "fast"):
//!   Pierce: RFC 9002 loss detection, NewReno with pacing. Default (`ClientConfig`'s
//!   defaults): acks wait up to 20 ms for data to ride on (`ack_delay`), and the blob goes
//!   on the default reliable-unordered channel (priority 1, round-robin with the tick
//!   channel). "fast": acks within 5 ms, and a sixth channel, reliable-ordered at priority
//!   0, for the blob, so tick messages are packed first.
//!   renet default: `ConnectionConfig::default()` (resend time 300 ms, 60 000 bytes/tick,
//!   channel order unreliable, reliable-unordered (blob), reliable-ordered (ticks)); "fast":
//!   resend time 100 ms on both reliable channels and the tick channel ordered before the
//!   blob channel (same byte budget).
//!   enet default: `HostSettings::default()` (ping interval 500 ms); "fast": ping interval
//!   100 ms (its retransmission timeout, RTT + 4 RTT variance, is not configurable).
//!   kcp default: `Kcp::new` (interval 100 ms, no nodelay, no fast resend, congestion
//!   control on, windows 32/128); "fast": `set_nodelay(true, 10, 2, true)` (10 ms interval,
//!   30 ms min RTO, fast resend after 2 duplicate acks, no congestion window) and
//!   `set_wndsize(128, 512)` (kcptun's windows). All contenders use 1200-byte datagrams.
//!
//! # Metrics
//!
//! Per contender × setting × profile × workload, median [min–max] over rounds:
//! message latency p50 / p99 / p99.9 / max (virtual time from the tick that queued a message
//! to its delivery, delivered messages only); delivered % (unreliable rows, and reliable runs
//! that did not finish: a reliable run still undelivered 120 s of virtual time after its last
//! message tick is stopped and marked DNF; only kcp's defaults get there); bytes on the
//! wire per payload byte (all directions, lost datagrams included; payload = bytes the
//! application queued); CPU µs per delivered message (thread CPU time of the whole run: all
//! endpoints plus the link harness, which is the same code for all and costs per datagram);
//! heap allocations per datagram from a fifth of the message ticks to the last one (a
//! counting global allocator; the harness pre-allocates its buffers). Blob rows: blob completion time (queue to last
//! byte delivered), goodput, tick-message p99 and max for ticks queued before the blob and
//! while it was in flight, wire bytes per payload byte, CPU ms per run.
//!
//! **Pierce encrypts and the others do not.** Pierce's wire bytes include its 32-byte AEAD
//! header and tag per datagram; its CPU time does NOT include sealing and opening (see
//! `cargo bench -p pierce-core --bench datagram`, about 3.7 µs per datagram on the reference
//! VM). The peers' bytes are their datagrams as produced: unencrypted, no transport header
//! (renet's netcode transport and the FEC/encryption layers of kcp-go-style transports are
//! not used).
//!
//! # Rounds
//!
//! The machine is shared and noisy. Each (workload, profile) cell runs [`Scale::rounds`]
//! rounds; in a round every contender runs the same seed, in an order that rotates from
//! round to round, and N = 2 runs are repeated back to back ([`Scale::repeat_2`]; CPU time
//! summed; the reruns must reproduce latencies and bytes exactly). Differences under 10%
//! are printed as "≈", never as wins.
//!
//! `cargo bench -p pierce-sim --bench rudp_vs_peers` (about 3 minutes on a 2-core VM);
//! `cargo bench -p pierce-sim --bench rudp_vs_peers -- --quick` for a smoke run;
//! `-- --only=rel64_n2,blob_n2` and `-- --who=renet,kcp-fast` narrow a run to some workloads
//! and contenders (Pierce always runs; no RESULT line then).

// A benchmark prints its tables and panics loudly when a contender breaks its guarantees.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kcp::Kcp;
use pierce_core::reliability::{ACK_RESERVE, ConnEvent, Connection, Limits};
use pierce_core::wire::Writer;
use pierce_core::wire::frame::{MESSAGE_FRAME_OVERHEAD, decode_all};
use pierce_core::wire::sealed::OVERHEAD as AEAD_OVERHEAD;
use pierce_core::{Channel, ChannelConfig, Delivery, SendOptions};
use pierce_sim::{GE_STEP, GilbertElliott};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use renet::{ConnectionConfig, DefaultChannel, RenetServer, SendType};
use rusty_enet as enet;

// ---- allocation counting, CPU clock, virtual-time origin ----------------------------------

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Counts without a locked read-modify-write: the bench is single-threaded, and an atomic
/// `fetch_add` per allocation would charge the contenders that allocate more a few percent
/// of extra CPU that is the harness's, not their own.
fn count_alloc() {
    ALLOCS.store(ALLOCS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// CPU time this thread has used (not wall time: the machine is shared and noisy).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a libc constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pierce's `Connection` takes `std::time::Instant`s; every instant in this bench is this
/// epoch plus a virtual `Duration`, so nothing depends on the wall clock but CPU timing.
#[allow(clippy::disallowed_methods)] // the one clock read: an origin for virtual time
fn epoch() -> Instant {
    Instant::now()
}

/// Wall time of the whole run, for the report only.
#[allow(clippy::disallowed_methods)] // wall time of the bench itself, not of a contender
fn wall() -> Instant {
    Instant::now()
}

// ---- scale, profiles, workloads -----------------------------------------------------------

const TICK_NS: u64 = 1_000_000_000 / 60;
/// Largest datagram, all contenders.
const MTU: usize = 1200;
const BLOB_SIZE: usize = 1 << 20;
/// kcp refuses a message of 128 fragments or more; the blob goes as 16 messages of 64 KiB.
const KCP_BLOB_CHUNK: usize = 64 << 10;
/// Bottleneck per direction of each pair, bytes per second (10 Mbit/s).
const RATE: u64 = 10_000_000 / 8;
/// Drop-tail queue in front of the bottleneck.
const QUEUE_BYTES: u64 = 64 << 10;
/// After the last message tick, a reliable run that has not delivered everything by then
/// is stopped and reported as "did not finish" (kcp's defaults, whose retransmission timer
/// doubles without bound).
const DRAIN_CAP: Duration = Duration::from_secs(120);
/// Unreliable runs end this long after the last message tick.
const UNRELIABLE_TAIL: Duration = Duration::from_secs(1);
/// The blob workload keeps ticking until the blob is complete, at most this many ticks more.
const BLOB_EXTRA_TICKS: u64 = 120 * 60;
/// Pierce and ENet peers' sockets are numbered from this port.
const PORT_BASE: u16 = 1000;

fn tick_time(k: u64) -> Duration {
    Duration::from_nanos(k * TICK_NS)
}

#[derive(Clone, Copy)]
struct Scale {
    rounds: usize,
    /// Message ticks of the N = 2 and N = 8 workloads.
    ticks_2: u64,
    ticks_8: u64,
    /// Message ticks of the blob workload, and the tick the blob is queued at.
    ticks_blob: u64,
    blob_at: u64,
    /// Identical runs per contender per round at N = 2.
    repeat_2: usize,
}

const FULL: Scale = Scale {
    rounds: 9,
    ticks_2: 1800,
    ticks_8: 900,
    ticks_blob: 600,
    blob_at: 120,
    repeat_2: 3,
};

const QUICK: Scale = Scale {
    rounds: 3,
    ticks_2: 180,
    ticks_8: 120,
    ticks_blob: 240,
    blob_at: 60,
    repeat_2: 1,
};

#[derive(Clone, Copy)]
enum LossModel {
    None,
    Random(f64),
    Burst(GilbertElliott),
}

#[derive(Clone, Copy)]
struct Profile {
    key: &'static str,
    one_way: Duration,
    /// Uniform in ±jitter around `one_way`.
    jitter: Duration,
    loss: LossModel,
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

const PROFILES: [Profile; 5] = [
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

struct Workload {
    key: &'static str,
    peers: usize,
    size: usize,
    /// Messages each peer queues to each other peer per tick.
    per_tick: usize,
    reliable: bool,
    ticks: u64,
    /// Tick at which peer 0 queues the blob to peer 1.
    blob_at: Option<u64>,
    /// Jitter independent per datagram, so it reorders (see [`impair`]).
    reorder: bool,
    repeat: usize,
}

impl Workload {
    fn title(&self) -> String {
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
    fn max_ticks(&self) -> u64 {
        self.ticks
            + if self.blob_at.is_some() {
                BLOB_EXTRA_TICKS
            } else {
                0
            }
    }
}

fn workloads(s: Scale) -> Vec<Workload> {
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
    vec![
        w("rel64_n2", 2, 64, true),
        w("rel200_n2", 2, 200, true),
        w("seq64_n2", 2, 64, false),
        w("seq200_n2", 2, 200, false),
        w("rel64_n8", 8, 64, true),
        w("rel200_n8", 8, 200, true),
        w("seq64_n8", 8, 64, false),
        w("seq200_n8", 8, 200, false),
        Workload {
            key: "blob_n2",
            peers: 2,
            size: 64,
            per_tick: 2,
            reliable: true,
            ticks: s.ticks_blob,
            blob_at: Some(s.blob_at),
            reorder: false,
            repeat: s.repeat_2,
        },
        Workload {
            key: "blob_n2_reorder",
            peers: 2,
            size: 64,
            per_tick: 2,
            reliable: true,
            ticks: s.ticks_blob,
            blob_at: Some(s.blob_at),
            reorder: true,
            repeat: s.repeat_2,
        },
    ]
}

// ---- the link ------------------------------------------------------------------------------

/// One direction between two peers.
struct Link {
    /// Per-datagram draws.
    rng: StdRng,
    /// The Gilbert–Elliott chain's own stream: it steps with time, not with datagrams.
    ge_rng: StdRng,
    /// Gilbert–Elliott state, and how many steps the chain has taken.
    bad: bool,
    ge_steps: u64,
    /// When the bottleneck finishes what is queued.
    busy_until: Duration,
    /// Latest arrival so far (FIFO links never deliver before it).
    last_arrival: Duration,
    dgrams: u64,
    /// Bytes offered, as each contender counts them (lost datagrams included).
    bytes: u64,
    /// Of which AEAD header and tag (Pierce only).
    aead: u64,
    lost: u64,
    dropped_queue: u64,
}

impl Link {
    fn new(seed: u64, from: usize, to: usize) -> Self {
        let dir = ((from as u64) << 16) | to as u64;
        let base = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ dir;
        Self {
            rng: StdRng::seed_from_u64(base),
            ge_rng: StdRng::seed_from_u64(base ^ 0x6765_5F63_6861_696E),
            bad: false,
            ge_steps: 0,
            busy_until: Duration::ZERO,
            last_arrival: Duration::ZERO,
            dgrams: 0,
            bytes: 0,
            aead: 0,
            lost: 0,
            dropped_queue: 0,
        }
    }
}

/// The impairment every datagram of every contender goes through: `None` if it is lost,
/// else its arrival time. Always draws the same two numbers per datagram, so the n-th
/// datagram's random fate does not depend on what happened to earlier ones; the burst state
/// is a function of time only, so a datagram sent during a burst meets it whoever sent it.
fn impair(
    link: &mut Link,
    p: &Profile,
    reorder: bool,
    now: Duration,
    len: usize,
) -> Option<Duration> {
    let u_loss: f64 = link.rng.random();
    let u_jitter: f64 = link.rng.random();
    let lost = match p.loss {
        LossModel::None => false,
        LossModel::Random(rate) => u_loss < rate,
        LossModel::Burst(ge) => {
            let steps = (now.as_nanos() / ge.step.as_nanos()) as u64;
            while link.ge_steps < steps {
                let u: f64 = link.ge_rng.random();
                link.bad = if link.bad {
                    u >= ge.p_bad_to_good
                } else {
                    u < ge.p_good_to_bad
                };
                link.ge_steps += 1;
            }
            u_loss < if link.bad { ge.loss_bad } else { ge.loss_good }
        }
    };
    if lost {
        link.lost += 1;
        return None;
    }
    let start = link.busy_until.max(now);
    let backlog = (start - now).as_nanos() as u64 * RATE / 1_000_000_000;
    if backlog + len as u64 > QUEUE_BYTES {
        link.dropped_queue += 1;
        return None;
    }
    link.busy_until = start + Duration::from_nanos(len as u64 * 1_000_000_000 / RATE);
    let j = p.jitter.as_nanos() as f64 * (2.0 * u_jitter - 1.0);
    let flight = Duration::from_nanos((p.one_way.as_nanos() as f64 + j).max(0.0) as u64);
    let mut at = link.busy_until + flight;
    if !reorder {
        at = at.max(link.last_arrival);
        link.last_arrival = at;
    }
    Some(at)
}

/// A datagram in flight.
struct Arrival {
    at: Duration,
    /// Tie-break: send order.
    seq: u64,
    from: usize,
    to: usize,
    /// Pierce's packet number (the AEAD counter in real life); 0 for the others.
    pn: u64,
    len: usize,
    buf: Vec<u8>,
}

impl PartialEq for Arrival {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}

impl Eq for Arrival {}

impl PartialOrd for Arrival {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}

impl Ord for Arrival {
    /// Reversed, so that `BinaryHeap` pops the earliest.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Clone, Copy)]
struct Route {
    from: usize,
    to: usize,
}

/// All links of a mesh and what is in flight on them.
struct Net {
    n: usize,
    profile: Profile,
    /// Independent jitter per datagram (may reorder) instead of FIFO jitter.
    reorder: bool,
    links: Vec<Link>,
    heap: BinaryHeap<Arrival>,
    seq: u64,
}

impl Net {
    fn new(n: usize, profile: Profile, reorder: bool, seed: u64) -> Self {
        Self {
            n,
            profile,
            reorder,
            links: (0..n * n).map(|i| Link::new(seed, i / n, i % n)).collect(),
            heap: BinaryHeap::with_capacity(8192),
            seq: 0,
        }
    }

    /// Offers `buf[..len]` (`len + overhead` bytes on the wire); hands the buffer back if the
    /// datagram was lost.
    fn send(
        &mut self,
        t: Duration,
        r: Route,
        pn: u64,
        buf: Vec<u8>,
        len: usize,
        overhead: usize,
    ) -> Option<Vec<u8>> {
        assert!(len + overhead <= MTU + 100, "{len}-byte datagram");
        let link = &mut self.links[r.from * self.n + r.to];
        link.dgrams += 1;
        link.bytes += (len + overhead) as u64;
        link.aead += overhead as u64;
        let Some(at) = impair(link, &self.profile, self.reorder, t, len + overhead) else {
            return Some(buf);
        };
        self.seq += 1;
        self.heap.push(Arrival {
            at,
            seq: self.seq,
            from: r.from,
            to: r.to,
            pn,
            len,
            buf,
        });
        None
    }

    fn next_at(&self) -> Option<Duration> {
        self.heap.peek().map(|a| a.at)
    }

    fn pop_due(&mut self, t: Duration) -> Option<Arrival> {
        if self.heap.peek()?.at <= t {
            self.heap.pop()
        } else {
            None
        }
    }

    fn dgrams(&self) -> u64 {
        self.links.iter().map(|l| l.dgrams).sum()
    }
}

// ---- checks ----------------------------------------------------------------------------------

/// One directed flow's delivery state.
#[derive(Clone, Copy, Default)]
struct Flow {
    sent: u32,
    /// Reliable: next to deliver. Sequenced: one past the newest delivered.
    next: u32,
    delivered: u32,
    /// Stale messages the application dropped (renet's unreliable channel only).
    stale: u32,
}

/// Checks every delivery and records latencies.
struct Checks {
    name: &'static str,
    n: usize,
    size: usize,
    per_tick: usize,
    reliable: bool,
    /// Drop stale unreliable messages (the application's job on renet) instead of panicking.
    app_sequencing: bool,
    /// All messages of one flow back to back; message `i` starts with `i` (u32 BE).
    src: Bytes,
    flows: Vec<Flow>,
    /// (tick that queued it, latency µs) per delivered message.
    lat: Vec<(u32, u32)>,
    blob_src: Bytes,
    blob_got: usize,
    blob_start: Option<Duration>,
    blob_done: Option<Duration>,
    /// Set when a contender dropped a connection: the run stops, marked as not finished.
    failed: Option<&'static str>,
}

impl Checks {
    fn new(name: &'static str, wl: &Workload, src: &Bytes, blob: &Bytes, app_seq: bool) -> Self {
        let n = wl.peers;
        let cap = n * (n - 1) * wl.max_ticks() as usize * wl.per_tick;
        Self {
            name,
            n,
            size: wl.size,
            per_tick: wl.per_tick,
            reliable: wl.reliable,
            app_sequencing: app_seq,
            src: src.clone(),
            flows: vec![Flow::default(); n * n],
            lat: Vec::with_capacity(cap.min(1 << 22)),
            blob_src: blob.clone(),
            blob_got: 0,
            blob_start: None,
            blob_done: None,
            failed: None,
        }
    }

    fn fail(&mut self, why: &'static str) {
        self.failed.get_or_insert(why);
    }

    /// The next message from `from` to `to`, counted as sent.
    fn next_message(&mut self, from: usize, to: usize) -> Bytes {
        let f = &mut self.flows[from * self.n + to];
        let i = f.sent as usize;
        f.sent += 1;
        self.src.slice(i * self.size..(i + 1) * self.size)
    }

    /// A tick message delivered to `to` from `from` at `t`.
    fn tick(&mut self, t: Duration, to: usize, from: usize, msg: &[u8]) {
        let name = self.name;
        let f = &mut self.flows[from * self.n + to];
        let Some(seq) = msg
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
        else {
            panic!("{name}: {}-byte message {from}->{to}", msg.len());
        };
        let i = seq as usize;
        assert!(
            seq < f.sent && msg == &self.src[i * self.size..(i + 1) * self.size],
            "{name}: {from}->{to} delivered a message that was never sent (id {seq}, {} bytes)",
            msg.len()
        );
        if self.reliable {
            assert!(
                seq == f.next,
                "{name}: {from}->{to} delivered message {seq} when {} was next: not exactly once in order",
                f.next
            );
        } else if seq < f.next {
            assert!(
                self.app_sequencing,
                "{name}: {from}->{to} delivered message {seq} after {}: sequenced delivery broken",
                f.next - 1
            );
            f.stale += 1;
            return;
        }
        f.next = seq + 1;
        f.delivered += 1;
        let tick = seq / self.per_tick as u32;
        let lat = t - tick_time(u64::from(tick));
        self.lat.push((tick, lat.as_micros() as u32));
    }

    /// A part of the blob delivered (in order; whole for all but kcp).
    fn blob(&mut self, t: Duration, chunk: &[u8]) {
        let end = self.blob_got + chunk.len();
        assert!(
            end <= BLOB_SIZE && chunk == &self.blob_src[self.blob_got..end],
            "{}: blob corrupted or delivered twice ({} bytes at offset {})",
            self.name,
            chunk.len(),
            self.blob_got
        );
        self.blob_got = end;
        if end == BLOB_SIZE {
            self.blob_done = Some(t);
        }
    }

    fn all_delivered(&self) -> bool {
        self.flows.iter().all(|f| f.delivered == f.sent)
    }

    fn delivered(&self) -> u64 {
        self.flows.iter().map(|f| u64::from(f.delivered)).sum()
    }
}

// ---- the harness ---------------------------------------------------------------------------

/// What a contender sees of the world during one call.
struct Cx<'a> {
    t: Duration,
    net: &'a mut Net,
    check: &'a mut Checks,
}

/// A contender's whole mesh. The harness calls `send`/`send_blob` at ticks, then `tick` for
/// every peer; `receive` when a datagram arrives; `timers` when `next_timer` is due.
trait Mesh {
    fn send(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, msg: Bytes);
    fn send_blob(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, blob: &Bytes);
    fn tick(&mut self, cx: &mut Cx<'_>, peer: usize);
    fn receive(&mut self, cx: &mut Cx<'_>, a: Arrival);
    fn next_timer(&mut self) -> Option<Duration> {
        None
    }
    fn timers(&mut self, _cx: &mut Cx<'_>) {}
}

/// One run's raw results.
struct Run {
    cpu: Duration,
    lat: Vec<(u32, u32)>,
    sent: u64,
    delivered: u64,
    wire: u64,
    aead: u64,
    dgrams: u64,
    payload: u64,
    allocs_per_dgram: f64,
    blob_start: Option<Duration>,
    blob_done: Option<Duration>,
    finished: bool,
    failed: Option<&'static str>,
}

fn drive<M: Mesh>(mesh: &mut M, net: &mut Net, check: &mut Checks, wl: &Workload) -> Run {
    let n = wl.peers;
    let name = check.name;
    let cpu0 = thread_cpu();
    let mut t = Duration::ZERO;
    let mut tick = 0u64;
    let mut sending = true;
    let mut last_msg_tick = Duration::ZERO;
    let mut steady_from: Option<(u64, u64)> = None;
    let mut steady_to: Option<(u64, u64)> = None;
    let mut finished = true;
    loop {
        let mut cx = Cx {
            t,
            net: &mut *net,
            check: &mut *check,
        };
        while let Some(a) = cx.net.pop_due(t) {
            mesh.receive(&mut cx, a);
        }
        if mesh.next_timer().is_some_and(|d| d <= t) {
            mesh.timers(&mut cx);
        }
        if t >= tick_time(tick) {
            if sending {
                for p in 0..n {
                    for q in (0..n).filter(|&q| q != p) {
                        for _ in 0..wl.per_tick {
                            let msg = cx.check.next_message(p, q);
                            mesh.send(&mut cx, p, q, msg);
                        }
                    }
                }
                if wl.blob_at == Some(tick) {
                    cx.check.blob_start = Some(t);
                    let blob = cx.check.blob_src.clone();
                    mesh.send_blob(&mut cx, 0, 1, &blob);
                }
            }
            for p in 0..n {
                mesh.tick(&mut cx, p);
            }
            if sending {
                last_msg_tick = t;
                let blob_pending = wl.blob_at.is_some() && cx.check.blob_done.is_none();
                sending = tick + 1 < wl.ticks || blob_pending && tick + 1 < wl.max_ticks();
                if !sending {
                    steady_to = Some((allocs(), cx.net.dgrams()));
                }
            }
            tick += 1;
        }
        if steady_from.is_none() && t >= tick_time(wl.ticks / 5) {
            steady_from = Some((allocs(), net.dgrams()));
        }
        if !sending {
            let done = if wl.reliable {
                check.all_delivered() && (wl.blob_at.is_none() || check.blob_done.is_some())
            } else {
                t >= last_msg_tick + UNRELIABLE_TAIL
            };
            if done {
                break;
            }
        }
        if t >= last_msg_tick + DRAIN_CAP || check.failed.is_some() {
            // Did not finish: reported as such, with percentiles over what was delivered.
            finished = false;
            break;
        }
        let next = [net.next_at(), Some(tick_time(tick)), mesh.next_timer()]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        // Something due now that was already handled (a pacer rounding to now): step a µs.
        t = next.max(t + Duration::from_micros(1));
    }
    let cpu = thread_cpu() - cpu0;
    let (Some((a0, d0)), Some((a1, d1))) = (steady_from, steady_to) else {
        panic!("{name}: run ended before the allocation window closed");
    };
    let sent: u64 = check.flows.iter().map(|f| u64::from(f.sent)).sum();
    Run {
        cpu,
        lat: std::mem::take(&mut check.lat),
        sent,
        delivered: check.delivered(),
        wire: net.links.iter().map(|l| l.bytes).sum(),
        aead: net.links.iter().map(|l| l.aead).sum(),
        dgrams: net.dgrams(),
        payload: sent * wl.size as u64
            + if wl.blob_at.is_some() {
                BLOB_SIZE as u64
            } else {
                0
            },
        allocs_per_dgram: (a1 - a0) as f64 / (d1 - d0).max(1) as f64,
        blob_start: check.blob_start,
        blob_done: check.blob_done,
        finished,
        failed: check.failed,
    }
}

/// Per-endpoint deadlines with a lazily pruned min-heap, so that finding the next one does
/// not scan every endpoint of an N = 8 mesh after every event.
struct Timers {
    at: Vec<Option<Duration>>,
    heap: BinaryHeap<Reverse<(Duration, usize)>>,
    due: Vec<usize>,
}

impl Timers {
    fn new(n: usize) -> Self {
        Self {
            at: vec![None; n],
            heap: BinaryHeap::with_capacity(1 << 16),
            due: Vec::with_capacity(n),
        }
    }

    fn set(&mut self, idx: usize, at: Option<Duration>) {
        if self.at[idx] != at {
            self.at[idx] = at;
            if let Some(d) = at {
                self.heap.push(Reverse((d, idx)));
            }
        }
    }

    fn next(&mut self) -> Option<Duration> {
        while let Some(&Reverse((d, idx))) = self.heap.peek() {
            if self.at[idx] == Some(d) {
                return Some(d);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes every endpoint due by `t` into `self.due` (each once, even if handling it
    /// schedules it again at `t`).
    fn take_due(&mut self, t: Duration) {
        self.due.clear();
        while self.next().is_some_and(|d| d <= t) {
            let Reverse((_, idx)) = self.heap.pop().unwrap();
            self.at[idx] = None;
            self.due.push(idx);
        }
    }
}

// ---- Pierce --------------------------------------------------------------------------------

/// `ClientConfig`'s defaults; "fast" acks within 5 ms instead of 20 (twice the packets,
/// losses found sooner).
fn pierce_limits(fast: bool) -> Limits {
    Limits {
        fragment_size: MTU - AEAD_OVERHEAD - MESSAGE_FRAME_OVERHEAD - ACK_RESERVE,
        max_message_size: BLOB_SIZE,
        max_reassembly_bytes: 4 << 20,
        max_send_buffer: 8 << 20,
        mtu: MTU,
        ack_delay: Duration::from_millis(if fast { 5 } else { 20 }),
    }
}

struct PierceEnd {
    conn: Connection,
    /// Next packet number.
    pn: u64,
}

struct PierceMesh {
    n: usize,
    epoch: Instant,
    /// `ends[p * n + q]`: peer p's connection to peer q (the diagonal is unused).
    ends: Vec<PierceEnd>,
    /// `poll_timeout` of each end as of its last flush.
    timers: Timers,
    pool: Vec<Vec<u8>>,
    tick_ch: Channel,
    blob_ch: Channel,
}

impl PierceMesh {
    fn new(wl: &Workload, fast: bool, epoch: Instant) -> Self {
        let mut channels = ChannelConfig::defaults();
        let blob_ch = if fast {
            channels.push(ChannelConfig {
                delivery: Delivery::ReliableOrdered,
                priority: 0,
            });
            Channel(channels.len() as u8 - 1)
        } else {
            Channel::RELIABLE_UNORDERED
        };
        let n = wl.peers;
        Self {
            n,
            epoch,
            ends: (0..n * n)
                .map(|_| PierceEnd {
                    conn: Connection::new(&channels, pierce_limits(fast)),
                    pn: 0,
                })
                .collect(),
            timers: Timers::new(n * n),
            pool: (0..512).map(|_| vec![0; MTU - AEAD_OVERHEAD]).collect(),
            tick_ch: if wl.reliable {
                Channel::RELIABLE_ORDERED
            } else {
                Channel::UNRELIABLE_SEQUENCED
            },
            blob_ch,
        }
    }

    /// Writes packets while the connection wants to (frames only: the sealed header and tag
    /// are counted as `AEAD_OVERHEAD` bytes, not written), hands out its events and records
    /// its next deadline.
    fn flush(&mut self, cx: &mut Cx<'_>, idx: usize) {
        let now = self.epoch + cx.t;
        let (p, q) = (idx / self.n, idx % self.n);
        let e = &mut self.ends[idx];
        while e.conn.wants_transmit(now) {
            let mut buf = self
                .pool
                .pop()
                .unwrap_or_else(|| vec![0; MTU - AEAD_OVERHEAD]);
            let len = e
                .conn
                .write(now, e.pn, AEAD_OVERHEAD, &mut Writer::new(&mut buf));
            if len == 0 {
                self.pool.push(buf);
                break;
            }
            let route = Route { from: p, to: q };
            if let Some(lost) = cx.net.send(cx.t, route, e.pn, buf, len, AEAD_OVERHEAD) {
                self.pool.push(lost);
            }
            e.pn += 1;
        }
        while let Some(ev) = e.conn.poll_event() {
            match ev {
                ConnEvent::Message { channel, payload } if channel == self.tick_ch => {
                    cx.check.tick(cx.t, p, q, &payload);
                }
                ConnEvent::Message { channel, payload } if channel == self.blob_ch => {
                    cx.check.blob(cx.t, &payload);
                }
                ev => panic!("pierce: {p} saw {ev:?} from {q}"),
            }
        }
        if let Some(v) = e.conn.violation() {
            panic!("pierce: {p} dropped {q}: {v:?}");
        }
        let at = e.conn.poll_timeout();
        self.timers
            .set(idx, at.map(|d| d.saturating_duration_since(self.epoch)));
    }
}

impl Mesh for PierceMesh {
    fn send(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, msg: Bytes) {
        let now = self.epoch + cx.t;
        let conn = &mut self.ends[from * self.n + to].conn;
        if let Err(e) = conn.send(now, self.tick_ch, msg, SendOptions::default()) {
            panic!("pierce: send {from}->{to} failed: {e}");
        }
    }

    fn send_blob(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, blob: &Bytes) {
        let now = self.epoch + cx.t;
        let conn = &mut self.ends[from * self.n + to].conn;
        if let Err(e) = conn.send(now, self.blob_ch, blob.clone(), SendOptions::default()) {
            panic!("pierce: blob send failed: {e}");
        }
    }

    fn tick(&mut self, cx: &mut Cx<'_>, peer: usize) {
        for q in (0..self.n).filter(|&q| q != peer) {
            self.flush(cx, peer * self.n + q);
        }
    }

    /// Feeds the datagram as the receive path does after opening it.
    fn receive(&mut self, cx: &mut Cx<'_>, a: Arrival) {
        let now = self.epoch + cx.t;
        let idx = a.to * self.n + a.from;
        {
            let frames = decode_all(&a.buf[..a.len])
                .unwrap_or_else(|e| panic!("pierce: undecodable frame: {e}"));
            let conn = &mut self.ends[idx].conn;
            conn.handle_packet(now, a.pn, a.len + AEAD_OVERHEAD, &frames);
        }
        self.pool.push(a.buf);
        self.flush(cx, idx);
    }

    fn next_timer(&mut self) -> Option<Duration> {
        self.timers.next()
    }

    fn timers(&mut self, cx: &mut Cx<'_>) {
        let now = self.epoch + cx.t;
        self.timers.take_due(cx.t);
        for k in 0..self.timers.due.len() {
            let idx = self.timers.due[k];
            self.ends[idx].conn.handle_timeout(now);
            self.flush(cx, idx);
        }
    }
}

// ---- renet ---------------------------------------------------------------------------------

struct RenetMesh {
    n: usize,
    /// One server per peer, with a connection to every other peer (client id = peer index).
    servers: Vec<RenetServer>,
    /// How far each server's clock has been advanced.
    clock: Vec<Duration>,
    tick_ch: u8,
    blob_ch: u8,
    blob: bool,
}

impl RenetMesh {
    fn new(wl: &Workload, fast: bool) -> Self {
        let (config, tick_ch, blob_ch) = if fast {
            let resend_time = Duration::from_millis(100);
            let ch = |channel_id, send_type| renet::ChannelConfig {
                channel_id,
                max_memory_usage_bytes: 5 << 20,
                send_type,
            };
            let channels = vec![
                ch(0, SendType::Unreliable),
                ch(1, SendType::ReliableOrdered { resend_time }),
                ch(2, SendType::ReliableUnordered { resend_time }),
            ];
            let config = ConnectionConfig {
                available_bytes_per_tick: ConnectionConfig::default().available_bytes_per_tick,
                server_channels_config: channels.clone(),
                client_channels_config: channels,
            };
            (config, if wl.reliable { 1 } else { 0 }, 2)
        } else {
            let tick: u8 = if wl.reliable {
                DefaultChannel::ReliableOrdered.into()
            } else {
                DefaultChannel::Unreliable.into()
            };
            let blob: u8 = DefaultChannel::ReliableUnordered.into();
            (ConnectionConfig::default(), tick, blob)
        };
        let n = wl.peers;
        let servers = (0..n)
            .map(|p| {
                let mut s = RenetServer::new(config.clone());
                for q in (0..n).filter(|&q| q != p) {
                    s.add_connection(q as u64);
                }
                while s.get_event().is_some() {}
                s
            })
            .collect();
        Self {
            n,
            servers,
            clock: vec![Duration::ZERO; n],
            tick_ch,
            blob_ch,
            blob: wl.blob_at.is_some(),
        }
    }
}

impl Mesh for RenetMesh {
    fn send(&mut self, _cx: &mut Cx<'_>, from: usize, to: usize, msg: Bytes) {
        self.servers[from].send_message(to as u64, self.tick_ch, msg);
    }

    fn send_blob(&mut self, _cx: &mut Cx<'_>, from: usize, to: usize, blob: &Bytes) {
        self.servers[from].send_message(to as u64, self.blob_ch, blob.clone());
    }

    fn tick(&mut self, cx: &mut Cx<'_>, peer: usize) {
        let s = &mut self.servers[peer];
        s.update(cx.t - self.clock[peer]);
        self.clock[peer] = cx.t;
        for q in (0..self.n).filter(|&q| q != peer) {
            for pkt in s.get_packets_to_send(q as u64).unwrap() {
                let len = pkt.len();
                let route = Route { from: peer, to: q };
                drop(cx.net.send(cx.t, route, 0, pkt, len, 0));
            }
            if s.disconnect_reason(q as u64).is_some() {
                // renet has no timeout; it disconnects when a channel's memory fills up.
                cx.check.fail("renet dropped a connection");
            }
        }
    }

    fn receive(&mut self, cx: &mut Cx<'_>, a: Arrival) {
        let s = &mut self.servers[a.to];
        let from = a.from as u64;
        s.process_packet_from(&a.buf[..a.len], from).unwrap();
        while let Some(m) = s.receive_message(from, self.tick_ch) {
            cx.check.tick(cx.t, a.to, a.from, &m);
        }
        if self.blob {
            while let Some(m) = s.receive_message(from, self.blob_ch) {
                cx.check.blob(cx.t, &m);
            }
        }
    }
}

// ---- enet ----------------------------------------------------------------------------------

/// An in-memory UDP socket for one ENet host: `send` copies into a pooled buffer, as the
/// kernel would copy into its own.
#[derive(Debug, Default)]
struct SimSock {
    out: VecDeque<(SocketAddrV4, Vec<u8>)>,
    inbound: VecDeque<(SocketAddrV4, Vec<u8>, usize)>,
    pool: Vec<Vec<u8>>,
}

impl enet::Socket for SimSock {
    type Address = SocketAddrV4;
    type Error = Infallible;

    fn send(&mut self, address: SocketAddrV4, buffer: &[u8]) -> Result<usize, Infallible> {
        let mut v = self.pool.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(buffer);
        self.out.push_back((address, v));
        Ok(buffer.len())
    }

    fn receive(
        &mut self,
        buffer: &mut [u8; enet::MTU_MAX],
    ) -> Result<Option<(SocketAddrV4, enet::PacketReceived)>, Infallible> {
        let Some((from, v, len)) = self.inbound.pop_front() else {
            return Ok(None);
        };
        buffer[..len].copy_from_slice(&v[..len]);
        self.pool.push(v);
        Ok(Some((from, enet::PacketReceived::Complete(len))))
    }
}

fn enet_addr(peer: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, PORT_BASE + peer as u16)
}

fn enet_peer_of(addr: SocketAddrV4) -> usize {
    usize::from(addr.port() - PORT_BASE)
}

struct EnetMesh {
    n: usize,
    hosts: Vec<enet::Host<SimSock>>,
    /// `ids[p * n + q]`: host p's peer id for peer q.
    ids: Vec<enet::PeerID>,
    /// `remote[p][id]`: which peer host p's peer `id` is.
    remote: Vec<Vec<usize>>,
    /// ENet's clock (all hosts): `t0` + virtual time.
    clock: Rc<Cell<Duration>>,
    t0: Duration,
    reliable: bool,
}

impl EnetMesh {
    /// Hosts connected over a lossless link with the profile's one-way delay (the handshake
    /// is neither timed nor counted).
    fn new(wl: &Workload, fast: bool, profile: &Profile, seed: u64) -> Self {
        let n = wl.peers;
        let clock = Rc::new(Cell::new(Duration::from_secs(1)));
        let mut hosts: Vec<enet::Host<SimSock>> = (0..n)
            .map(|p| {
                let c = Rc::clone(&clock);
                let settings = enet::HostSettings {
                    peer_limit: n,
                    channel_limit: 2,
                    time: Box::new(move || c.get()),
                    seed: Some((seed as u32) ^ (p as u32).wrapping_mul(0x9E37_79B9)),
                    ..enet::HostSettings::default()
                };
                let sock = SimSock {
                    pool: (0..64).map(|_| Vec::with_capacity(MTU)).collect(),
                    ..SimSock::default()
                };
                let mut h = enet::Host::new(sock, settings).unwrap();
                h.set_mtu(MTU as u16).unwrap();
                h
            })
            .collect();
        for (p, h) in hosts.iter_mut().enumerate() {
            for q in p + 1..n {
                h.connect(enet_addr(q), 2, 0).unwrap();
            }
        }
        let step = profile.one_way.max(Duration::from_millis(1));
        let mut settle = 0;
        for _ in 0..1000 {
            clock.set(clock.get() + step);
            let mut moved = false;
            for p in 0..n {
                while let Some((dst, v)) = hosts[p].socket_mut().out.pop_front() {
                    let len = v.len();
                    hosts[enet_peer_of(dst)]
                        .socket_mut()
                        .inbound
                        .push_back((enet_addr(p), v, len));
                    moved = true;
                }
            }
            for h in &mut hosts {
                while let Some(ev) = h.service().unwrap() {
                    if let enet::EventNoRef::Disconnect { .. } | enet::EventNoRef::Receive { .. } =
                        ev.no_ref()
                    {
                        panic!("enet: unexpected event during the handshake");
                    }
                }
            }
            let connected = hosts
                .iter_mut()
                .all(|h| h.connected_peers().count() == n - 1);
            if connected && !moved {
                settle += 1;
                if settle == 3 {
                    break;
                }
            }
        }
        let mut ids = vec![enet::PeerID(0); n * n];
        let mut remote = vec![vec![usize::MAX; n]; n];
        for (p, h) in hosts.iter_mut().enumerate() {
            assert_eq!(h.connected_peers().count(), n - 1, "enet: handshake failed");
            for peer in h.connected_peers_mut() {
                let q = enet_peer_of(peer.address().unwrap());
                ids[p * n + q] = peer.id();
                remote[p][peer.id().0] = q;
                if fast {
                    peer.set_ping_interval(100);
                }
            }
        }
        let t0 = clock.get() + Duration::from_millis(1);
        clock.set(t0);
        Self {
            n,
            hosts,
            ids,
            remote,
            clock,
            t0,
            reliable: wl.reliable,
        }
    }

    /// `service` until idle, then puts what the host sent on the links.
    fn service(&mut self, cx: &mut Cx<'_>, p: usize) {
        self.clock.set(self.t0 + cx.t);
        let h = &mut self.hosts[p];
        while let Some(ev) = h.service().unwrap() {
            match ev.no_ref() {
                enet::EventNoRef::Receive {
                    peer,
                    channel_id,
                    packet,
                } => {
                    let q = self.remote[p][peer.0];
                    if channel_id == 0 {
                        cx.check.tick(cx.t, p, q, packet.data());
                    } else {
                        cx.check.blob(cx.t, packet.data());
                    }
                }
                enet::EventNoRef::Disconnect { .. } => {
                    // ENet gives up on a peer whose reliable data stays unacknowledged past
                    // its timeouts (5 s at 32 timeouts, or 30 s): a dropped connection.
                    cx.check.fail("enet timed out a connection");
                }
                ev @ enet::EventNoRef::Connect { .. } => panic!("enet: {p} saw {ev:?}"),
            }
        }
        let sock = h.socket_mut();
        while let Some((dst, v)) = sock.out.pop_front() {
            let len = v.len();
            let route = Route {
                from: p,
                to: enet_peer_of(dst),
            };
            if let Some(lost) = cx.net.send(cx.t, route, 0, v, len, 0) {
                sock.pool.push(lost);
            }
        }
    }
}

impl Mesh for EnetMesh {
    fn send(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, msg: Bytes) {
        self.clock.set(self.t0 + cx.t);
        let packet = if self.reliable {
            enet::Packet::reliable(&msg[..])
        } else {
            enet::Packet::unreliable(&msg[..])
        };
        let id = self.ids[from * self.n + to];
        if let Err(e) = self.hosts[from].peer_mut(id).send(0, &packet) {
            assert!(cx.check.failed.is_some(), "enet: send failed: {e:?}");
        }
    }

    fn send_blob(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, blob: &Bytes) {
        self.clock.set(self.t0 + cx.t);
        let id = self.ids[from * self.n + to];
        let packet = enet::Packet::reliable(&blob[..]);
        self.hosts[from].peer_mut(id).send(1, &packet).unwrap();
    }

    fn tick(&mut self, cx: &mut Cx<'_>, peer: usize) {
        self.service(cx, peer);
    }

    fn receive(&mut self, cx: &mut Cx<'_>, a: Arrival) {
        let sock = self.hosts[a.to].socket_mut();
        sock.inbound.push_back((enet_addr(a.from), a.buf, a.len));
        self.service(cx, a.to);
    }
}

// ---- kcp -----------------------------------------------------------------------------------

const KCP_TICK_CONV: u32 = 1;
const KCP_BLOB_CONV: u32 = 2;

/// What every `Kcp` of a mesh wrote, in order, with a pool of buffers.
#[derive(Default)]
struct KcpWire {
    out: Vec<(Route, Vec<u8>)>,
    pool: Vec<Vec<u8>>,
}

/// A `Kcp`'s output: each `write` is one datagram.
struct KcpOut {
    route: Route,
    wire: Rc<RefCell<KcpWire>>,
}

impl io::Write for KcpOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.wire.borrow_mut();
        let mut v = w.pool.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(buf);
        w.out.push((self.route, v));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct KcpMesh {
    n: usize,
    /// `ends[p * n + q]`: peer p's conversation with peer q (the diagonal is unused); then,
    /// with the blob, `ends[n * n]` is peer 0's blob conversation and `ends[n * n + 1]` peer
    /// 1's.
    ends: Vec<Kcp<KcpOut>>,
    /// Next `update` time of each end (whole milliseconds).
    timers: Timers,
    wire: Rc<RefCell<KcpWire>>,
    rbuf: Vec<u8>,
}

impl KcpMesh {
    fn new(wl: &Workload, fast: bool) -> Self {
        let n = wl.peers;
        let wire = Rc::new(RefCell::new(KcpWire {
            out: Vec::with_capacity(1024),
            pool: (0..512).map(|_| Vec::with_capacity(MTU)).collect(),
        }));
        let make = |conv, from, to| {
            let out = KcpOut {
                route: Route { from, to },
                wire: Rc::clone(&wire),
            };
            let mut k = Kcp::new(conv, out);
            k.set_mtu(MTU).unwrap();
            if fast {
                k.set_nodelay(true, 10, 2, true);
                k.set_wndsize(128, 512);
            }
            k
        };
        let mut ends: Vec<_> = (0..n * n)
            .map(|i| make(KCP_TICK_CONV, i / n, i % n))
            .collect();
        if wl.blob_at.is_some() {
            ends.push(make(KCP_BLOB_CONV, 0, 1));
            ends.push(make(KCP_BLOB_CONV, 1, 0));
        }
        let mut timers = Timers::new(ends.len());
        for idx in 0..ends.len() {
            if idx >= n * n || idx / n != idx % n {
                timers.set(idx, Some(Duration::ZERO));
            }
        }
        Self {
            n,
            timers,
            ends,
            wire,
            rbuf: vec![0; KCP_BLOB_CHUNK],
        }
    }

    fn flush_wire(&mut self, cx: &mut Cx<'_>) {
        let mut out = std::mem::take(&mut self.wire.borrow_mut().out);
        for (route, v) in out.drain(..) {
            let len = v.len();
            if let Some(lost) = cx.net.send(cx.t, route, 0, v, len, 0) {
                self.wire.borrow_mut().pool.push(lost);
            }
        }
        self.wire.borrow_mut().out = out;
    }

    fn reschedule(&mut self, cx: &mut Cx<'_>, idx: usize, now_ms: u32) {
        let k = &self.ends[idx];
        if k.is_dead_link() {
            // A segment was sent 20 times (kcp's dead_link): its transports close the session.
            cx.check.fail("kcp declared a link dead");
        }
        // `check` can say 0 while `update` would not flush yet; wake a millisecond later.
        let next = now_ms + k.check(now_ms).max(1);
        self.timers
            .set(idx, Some(Duration::from_millis(u64::from(next))));
    }
}

fn kcp_ms(t: Duration) -> u32 {
    t.as_millis() as u32
}

impl Mesh for KcpMesh {
    fn send(&mut self, _cx: &mut Cx<'_>, from: usize, to: usize, msg: Bytes) {
        self.ends[from * self.n + to].send(&msg).unwrap();
    }

    fn send_blob(&mut self, _cx: &mut Cx<'_>, from: usize, to: usize, blob: &Bytes) {
        assert_eq!((from, to), (0, 1));
        let k = &mut self.ends[self.n * self.n];
        for chunk in blob.chunks(KCP_BLOB_CHUNK) {
            k.send(chunk).unwrap();
        }
    }

    fn tick(&mut self, _cx: &mut Cx<'_>, _peer: usize) {}

    fn receive(&mut self, cx: &mut Cx<'_>, a: Arrival) {
        let data = &a.buf[..a.len];
        let blob = kcp::get_conv(data) == KCP_BLOB_CONV;
        let idx = if blob {
            self.n * self.n + a.to
        } else {
            a.to * self.n + a.from
        };
        self.ends[idx].input(data).unwrap();
        loop {
            match self.ends[idx].recv(&mut self.rbuf) {
                Ok(len) if blob => cx.check.blob(cx.t, &self.rbuf[..len]),
                Ok(len) => cx.check.tick(cx.t, a.to, a.from, &self.rbuf[..len]),
                Err(kcp::Error::RecvQueueEmpty | kcp::Error::ExpectingFragment) => break,
                Err(e) => panic!("kcp: recv: {e}"),
            }
        }
        self.wire.borrow_mut().pool.push(a.buf);
        self.reschedule(cx, idx, kcp_ms(cx.t));
    }

    fn next_timer(&mut self) -> Option<Duration> {
        self.timers.next()
    }

    fn timers(&mut self, cx: &mut Cx<'_>) {
        let ms = kcp_ms(cx.t);
        self.timers.take_due(cx.t);
        for k in 0..self.timers.due.len() {
            let idx = self.timers.due[k];
            self.ends[idx].update(ms).unwrap();
            self.flush_wire(cx);
            self.reschedule(cx, idx, ms);
        }
    }
}

// ---- contenders and one run --------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Pierce,
    Renet,
    Enet,
    Kcp,
}

#[derive(Clone, Copy)]
struct Entrant {
    who: Who,
    fast: bool,
    label: &'static str,
}

const ENTRANTS: [Entrant; 8] = [
    Entrant {
        who: Who::Pierce,
        fast: false,
        label: "pierce",
    },
    Entrant {
        who: Who::Pierce,
        fast: true,
        label: "pierce-fast",
    },
    Entrant {
        who: Who::Renet,
        fast: false,
        label: "renet",
    },
    Entrant {
        who: Who::Renet,
        fast: true,
        label: "renet-fast",
    },
    Entrant {
        who: Who::Enet,
        fast: false,
        label: "enet",
    },
    Entrant {
        who: Who::Enet,
        fast: true,
        label: "enet-fast",
    },
    Entrant {
        who: Who::Kcp,
        fast: false,
        label: "kcp",
    },
    Entrant {
        who: Who::Kcp,
        fast: true,
        label: "kcp-fast",
    },
];

impl Entrant {
    /// kcp has no unreliable mode.
    fn runs(&self, wl: &Workload) -> bool {
        match self.who {
            Who::Kcp => wl.reliable,
            Who::Pierce | Who::Renet | Who::Enet => true,
        }
    }
}

/// Shared inputs of all runs.
struct Inputs {
    epoch: Instant,
    src_small: Bytes,
    src_large: Bytes,
    blob: Bytes,
}

/// All messages of one flow back to back: message `i` is `size` bytes starting with `i`.
fn message_source(size: usize, count: usize) -> Bytes {
    let mut v = vec![0u8; size * count];
    for (i, m) in v.chunks_mut(size).enumerate() {
        m[..4].copy_from_slice(&(i as u32).to_be_bytes());
        for (j, b) in m[4..].iter_mut().enumerate() {
            *b = (i * 31 + j * 7) as u8;
        }
    }
    Bytes::from(v)
}

fn run_once(e: Entrant, wl: &Workload, profile: &Profile, seed: u64, inp: &Inputs) -> Run {
    let src = if wl.size == 64 {
        &inp.src_small
    } else {
        &inp.src_large
    };
    assert_eq!(src.len() % wl.size, 0);
    let app_seq = e.who == Who::Renet;
    let mut check = Checks::new(e.label, wl, src, &inp.blob, app_seq);
    let mut net = Net::new(wl.peers, *profile, wl.reorder, seed);
    match e.who {
        Who::Pierce => {
            let mut m = PierceMesh::new(wl, e.fast, inp.epoch);
            drive(&mut m, &mut net, &mut check, wl)
        }
        Who::Renet => {
            let mut m = RenetMesh::new(wl, e.fast);
            drive(&mut m, &mut net, &mut check, wl)
        }
        Who::Enet => {
            let mut m = EnetMesh::new(wl, e.fast, profile, seed);
            drive(&mut m, &mut net, &mut check, wl)
        }
        Who::Kcp => {
            let mut m = KcpMesh::new(wl, e.fast);
            drive(&mut m, &mut net, &mut check, wl)
        }
    }
}

/// Runs `repeat` times with the same seed: CPU time is the sum; everything else must not
/// change.
fn run_repeated(
    e: Entrant,
    wl: &Workload,
    profile: &Profile,
    seed: u64,
    inp: &Inputs,
) -> (Run, Duration) {
    let mut first = run_once(e, wl, profile, seed, inp);
    let mut cpu = first.cpu;
    for _ in 1..wl.repeat {
        let again = run_once(e, wl, profile, seed, inp);
        assert!(
            again.lat == first.lat && again.wire == first.wire && again.dgrams == first.dgrams,
            "{}: a rerun with the same seed differs: the harness is not deterministic",
            e.label
        );
        cpu += again.cpu;
    }
    first.cpu = cpu;
    (first, cpu / wl.repeat as u32)
}

// ---- statistics ----------------------------------------------------------------------------

/// One round's figures for one contender.
#[derive(Clone, Copy, Default)]
struct Stats {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    delivered_pct: f64,
    wire: f64,
    /// Wire bytes without Pierce's AEAD header and tag.
    wire_plain: f64,
    /// Datagrams (all directions) per delivered message.
    dgrams_per_msg: f64,
    cpu_us_per_msg: f64,
    allocs: f64,
    // Blob workload.
    blob_s: f64,
    goodput_mbit: f64,
    before_p99: f64,
    during_p99: f64,
    during_max: f64,
    cpu_ms: f64,
    finished: bool,
    failed: Option<&'static str>,
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

fn stats(run: &Run, cpu_one: Duration) -> Stats {
    let mut all: Vec<u32> = run.lat.iter().map(|&(_, l)| l).collect();
    all.sort_unstable();
    let mut s = Stats {
        p50: pct(&all, 0.50),
        p99: pct(&all, 0.99),
        p999: pct(&all, 0.999),
        max: pct(&all, 1.0),
        delivered_pct: 100.0 * (run.delivered as f64) / run.sent as f64,
        wire: run.wire as f64 / run.payload as f64,
        wire_plain: (run.wire - run.aead) as f64 / run.payload as f64,
        dgrams_per_msg: run.dgrams as f64 / run.delivered.max(1) as f64,
        cpu_us_per_msg: cpu_one.as_secs_f64() * 1e6 / run.delivered.max(1) as f64,
        allocs: run.allocs_per_dgram,
        cpu_ms: cpu_one.as_secs_f64() * 1e3,
        finished: run.finished,
        failed: run.failed,
        blob_s: f64::NAN,
        goodput_mbit: f64::NAN,
        ..Stats::default()
    };
    if let (Some(start), Some(done)) = (run.blob_start, run.blob_done) {
        let secs = (done - start).as_secs_f64();
        s.blob_s = secs;
        s.goodput_mbit = BLOB_SIZE as f64 * 8.0 / secs / 1e6;
        let tick_of = |d: Duration| (d.as_nanos() / u128::from(TICK_NS)) as u32;
        let (t0, t1) = (tick_of(start), tick_of(done));
        let mut before: Vec<u32> = run
            .lat
            .iter()
            .filter(|&&(k, _)| k < t0)
            .map(|&(_, l)| l)
            .collect();
        let mut during: Vec<u32> = run
            .lat
            .iter()
            .filter(|&&(k, _)| k >= t0 && k <= t1)
            .map(|&(_, l)| l)
            .collect();
        before.sort_unstable();
        during.sort_unstable();
        s.before_p99 = pct(&before, 0.99);
        s.during_p99 = pct(&during, 0.99);
        s.during_max = pct(&during, 1.0);
    }
    s
}

/// One metric over the rounds.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(mut v: Vec<f64>) -> Spread {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

fn over(rounds: &[Stats], f: impl Fn(&Stats) -> f64) -> Spread {
    spread(rounds.iter().map(f).collect())
}

/// `median[min-max]`, with `prec` decimals; "DNF" where a round has no figure.
fn fmt_spread(s: Spread, prec: usize) -> String {
    if s.median.is_nan() || s.max.is_nan() {
        return "DNF".to_string();
    }
    format!("{:.p$}[{:.p$}-{:.p$}]", s.median, s.min, s.max, p = prec)
}

/// Pierce's figure over a peer's, as "0.45x", or "≈" within 10%.
fn ratio(pierce: f64, peer: f64) -> String {
    let r = pierce / peer;
    if !r.is_finite() {
        "n/a".to_string()
    } else if (r - 1.0).abs() < 0.10 {
        "≈".to_string()
    } else {
        format!("{r:.2}x")
    }
}

// ---- output --------------------------------------------------------------------------------

struct Bucket {
    wl: usize,
    profile: usize,
    /// Per entrant (index into `ENTRANTS`), per round.
    rounds: Vec<Vec<Stats>>,
}

impl Bucket {
    fn median(&self, e: usize, f: impl Fn(&Stats) -> f64) -> f64 {
        if self.rounds[e].is_empty() {
            return f64::NAN;
        }
        over(&self.rounds[e], f).median
    }
}

/// Median wire bytes per payload byte without the AEAD bytes (Pierce rows only).
fn plain(r: &[Stats]) -> String {
    let s = over(r, |s| s.wire_plain);
    if s.median == over(r, |s| s.wire).median {
        String::new()
    } else {
        format!("{:.2}", s.median)
    }
}

/// A note for rows where some rounds did not finish.
fn dnf(r: &[Stats]) -> String {
    let k = r.iter().filter(|s| !s.finished).count();
    if k == 0 {
        return String::new();
    }
    let why = r
        .iter()
        .find_map(|s| s.failed)
        .unwrap_or("still undelivered 120 s after the last tick");
    format!(
        "  DNF in {k}/{} rounds: {why} (latencies over delivered only)",
        r.len()
    )
}

fn print_tick_header() {
    println!(
        "{:<8} {:<11} {:>19} {:>19} {:>19} {:>19} {:>19} {:>19} {:>6} {:>5} {:>19} {:>6}  pierce/this: p99, cpu, bytes",
        "profile",
        "contender",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "delivered %",
        "wire B/payload B",
        "noAEAD",
        "dg/m",
        "CPU us/msg",
        "allocs"
    );
}

fn print_tick_row(cell: &Bucket, e: usize, first: bool) {
    let r = &cell.rounds[e];
    let pierce = &cell.rounds[0];
    let profile = if first {
        PROFILES[cell.profile].key
    } else {
        ""
    };
    let del = over(r, |s| s.delivered_pct);
    let del = if del.min >= 100.0 && r.iter().all(|s| s.finished) {
        String::new()
    } else {
        fmt_spread(del, 1)
    };
    let verdict = if e == 0 {
        String::new()
    } else {
        let a = ratio(over(pierce, |s| s.p99).median, over(r, |s| s.p99).median);
        let b = ratio(
            over(pierce, |s| s.cpu_us_per_msg).median,
            over(r, |s| s.cpu_us_per_msg).median,
        );
        let c = ratio(over(pierce, |s| s.wire).median, over(r, |s| s.wire).median);
        format!("{a:>6} {b:>6} {c:>6}")
    };
    println!(
        "{profile:<8} {:<11} {:>19} {:>19} {:>19} {:>19} {del:>19} {:>19} {:>6} {:>5.2} {:>19} {:>6.2}  {verdict}",
        ENTRANTS[e].label,
        fmt_spread(over(r, |s| s.p50), 1),
        fmt_spread(over(r, |s| s.p99), 1),
        fmt_spread(over(r, |s| s.p999), 1),
        fmt_spread(over(r, |s| s.max), 1),
        fmt_spread(over(r, |s| s.wire), 2),
        plain(r),
        over(r, |s| s.dgrams_per_msg).median,
        fmt_spread(over(r, |s| s.cpu_us_per_msg), 2),
        over(r, |s| s.allocs).median,
    );
    let note = dnf(r);
    if !note.is_empty() {
        println!("{:<20}{note}", "");
    }
}

fn print_blob_header() {
    println!(
        "{:<8} {:<11} {:>19} {:>19} {:>19} {:>19} {:>19} {:>19} {:>6} {:>19}  pierce/this: time, tick p99 during, bytes",
        "profile",
        "contender",
        "blob s",
        "goodput Mbit/s",
        "tick p99 before ms",
        "tick p99 during ms",
        "tick max during ms",
        "wire B/payload B",
        "noAEAD",
        "CPU ms/run",
    );
}

fn print_blob_row(cell: &Bucket, e: usize, first: bool) {
    let r = &cell.rounds[e];
    let pierce = &cell.rounds[0];
    let profile = if first {
        PROFILES[cell.profile].key
    } else {
        ""
    };
    let verdict = if e == 0 {
        String::new()
    } else {
        let a = ratio(
            over(pierce, |s| s.blob_s).median,
            over(r, |s| s.blob_s).median,
        );
        let b = ratio(
            over(pierce, |s| s.during_p99).median,
            over(r, |s| s.during_p99).median,
        );
        let c = ratio(over(pierce, |s| s.wire).median, over(r, |s| s.wire).median);
        format!("{a:>6} {b:>6} {c:>6}")
    };
    println!(
        "{profile:<8} {:<11} {:>19} {:>19} {:>19} {:>19} {:>19} {:>19} {:>6} {:>19}  {verdict}",
        ENTRANTS[e].label,
        fmt_spread(over(r, |s| s.blob_s), 2),
        fmt_spread(over(r, |s| s.goodput_mbit), 2),
        fmt_spread(over(r, |s| s.before_p99), 1),
        fmt_spread(over(r, |s| s.during_p99), 1),
        fmt_spread(over(r, |s| s.during_max), 1),
        fmt_spread(over(r, |s| s.wire), 2),
        plain(r),
        fmt_spread(over(r, |s| s.cpu_ms), 1),
    );
    let note = dnf(r);
    if !note.is_empty() {
        println!("{:<20}{note}", "");
    }
}

/// A ratio in the RESULT line: two decimals, or three significant digits below 0.1.
fn fr(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.2e}")
    } else {
        format!("{r:.2}")
    }
}

/// Key name of an entrant in the RESULT line.
fn result_name(e: usize) -> String {
    ENTRANTS[e].label.replace('-', "_")
}

/// A round's seed, from the workload's name (so `--only` reproduces the full run's rounds).
fn seed_of(key: &str, profile: usize, round: usize) -> u64 {
    let h = key.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    h ^ ((profile as u64) << 32) ^ round as u64
}

fn main() {
    let wall0 = wall();
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { QUICK } else { FULL };
    // `--only=key,key` runs only those workloads (no RESULT line).
    let only: Option<Vec<String>> = std::env::args().find_map(|a| {
        a.strip_prefix("--only=")
            .map(|k| k.split(',').map(String::from).collect())
    });
    // `--who=label,label` runs only those contenders besides "pierce" (no RESULT line).
    let who: Option<Vec<String>> = std::env::args().find_map(|a| {
        a.strip_prefix("--who=")
            .map(|k| k.split(',').map(String::from).collect())
    });
    let wls: Vec<Workload> = workloads(scale)
        .into_iter()
        .filter(|w| only.as_ref().is_none_or(|o| o.iter().any(|k| k == w.key)))
        .collect();
    let max_msgs = wls
        .iter()
        .map(|w| w.max_ticks() as usize * w.per_tick)
        .max()
        .unwrap();
    let inp = Inputs {
        epoch: epoch(),
        src_small: message_source(64, max_msgs),
        src_large: message_source(200, max_msgs),
        blob: message_source(BLOB_SIZE / 4096, 4096),
    };
    println!(
        "rudp_vs_peers{}: Pierce reliability layer vs renet 2.0.1, rusty_enet 0.4.1, kcp 0.6.0 (IO-free cores), one seeded link, virtual time",
        if quick { " --quick" } else { "" }
    );
    println!(
        "links: 10 Mbit/s + 64 KiB drop-tail per direction of each pair, FIFO jitter (except *_reorder); RTT ms: clean 20; good 40+-6, 0.2% loss; average 100+-15, 2%; poor 200+-30, 10%;"
    );
    println!(
        "       wifi 50+-10, Gilbert-Elliott bursts in time (mean 155 ms, ~1 per 9 s per direction, 99.1% loss while bad: 1.7% overall)"
    );
    println!(
        "rounds: {} per cell, contender order rotating, same seed within a round; N=2 runs repeated {}x (CPU summed, must be identical); median[min-max] over rounds",
        scale.rounds, scale.repeat_2
    );
    println!(
        "wire: pierce = frame bytes + {AEAD_OVERHEAD} B/datagram (AEAD header 16 + tag 16; ENCRYPTED on the real wire, but sealing/opening NOT in its CPU time);"
    );
    println!(
        "      renet/enet/kcp = their datagrams as produced, UNENCRYPTED; all directions, lost datagrams included"
    );
    println!(
        "cpu: thread CPU of a whole run (all endpoints + the shared link harness) per delivered tick message; dg/m: datagrams (all directions) per delivered message;"
    );
    println!(
        "     allocs: heap allocations per datagram from 1/5 of the message ticks to the last; DNF: a run stopped (connection dropped, or reliable data undelivered 120 s after the last tick)"
    );
    println!(
        "fast: pierce = acks within 5 ms (default 20: ClientConfig::ack_delay) + blob on its own priority-0 channel; renet = resend 100 ms (default 300), ticks before blob; enet = ping interval 100 ms (default 500); kcp = nodelay(1,10,2,1) + windows 128/512"
    );
    println!(
        "unreliable rows: pierce/enet sequenced channels; renet unreliable + stale dropped by the application; kcp has no unreliable mode (not run)"
    );
    println!(
        "ratios pierce/this: < 1 means Pierce lower (better for latency, CPU and bytes); '≈' = within 10%, not a difference"
    );

    let mut cells: Vec<Bucket> = Vec::new();
    // Warm-up: one short run of each contender, discarded.
    for e in ENTRANTS {
        if e.runs(&wls[0]) {
            let _ = run_once(e, &wls[0], &PROFILES[1], 1, &inp);
        }
    }
    for (wi, wl) in wls.iter().enumerate() {
        let entrants: Vec<usize> = (0..ENTRANTS.len())
            .filter(|&e| ENTRANTS[e].runs(wl))
            .filter(|&e| {
                e == 0
                    || who
                        .as_ref()
                        .is_none_or(|w| w.iter().any(|l| l == ENTRANTS[e].label))
            })
            .collect();
        println!("\n== {}", wl.title());
        if wl.blob_at.is_some() {
            print_blob_header();
        } else {
            print_tick_header();
        }
        for (pi, profile) in PROFILES.iter().enumerate() {
            let mut cell = Bucket {
                wl: wi,
                profile: pi,
                rounds: vec![Vec::new(); ENTRANTS.len()],
            };
            for round in 0..scale.rounds {
                let seed = seed_of(wl.key, pi, round);
                for k in 0..entrants.len() {
                    let e = entrants[(k + round) % entrants.len()];
                    let (run, cpu_one) = run_repeated(ENTRANTS[e], wl, profile, seed, &inp);
                    cell.rounds[e].push(stats(&run, cpu_one));
                }
            }
            for (k, &e) in entrants.iter().enumerate() {
                if wl.blob_at.is_some() {
                    print_blob_row(&cell, e, k == 0);
                } else {
                    print_tick_row(&cell, e, k == 0);
                }
            }
            cells.push(cell);
        }
    }

    if only.is_some() || who.is_some() {
        return;
    }
    // The RESULT line: headline ratios (Pierce / peer; < 1 is better for Pierce).
    let mut result: Vec<String> = Vec::new();
    let find = |key: &str, profile: &str| {
        cells
            .iter()
            .find(|c| wls[c.wl].key == key && PROFILES[c.profile].key == profile)
            .unwrap()
    };
    for p in PROFILES {
        let c = find("rel64_n2", p.key);
        result.push(format!(
            "pierce_p99_ms_{}={:.1}",
            p.key,
            c.median(0, |s| s.p99)
        ));
    }
    for (e, entrant) in ENTRANTS.iter().enumerate().skip(2) {
        let name = result_name(e);
        for p in PROFILES {
            let c = find("rel64_n2", p.key);
            let r = c.median(0, |s| s.p99) / c.median(e, |s| s.p99);
            result.push(format!("p99_ratio_vs_{name}_{}={}", p.key, fr(r)));
        }
        let c = find("rel64_n2", "good");
        let r = c.median(0, |s| s.cpu_us_per_msg) / c.median(e, |s| s.cpu_us_per_msg);
        result.push(format!("cpu_ratio_vs_{name}_good={}", fr(r)));
        let c = find("rel64_n8", "good");
        let r = c.median(0, |s| s.cpu_us_per_msg) / c.median(e, |s| s.cpu_us_per_msg);
        result.push(format!("cpu_ratio_n8_vs_{name}_good={}", fr(r)));
        let c = find("rel64_n2", "average");
        let r = c.median(0, |s| s.wire) / c.median(e, |s| s.wire);
        result.push(format!("bytes_ratio_vs_{name}_average={}", fr(r)));
        let c = find("blob_n2", "average");
        let r = c.median(0, |s| s.blob_s) / c.median(e, |s| s.blob_s);
        result.push(format!("blob_time_ratio_vs_{name}_average={}", fr(r)));
        if entrant.who != Who::Kcp {
            let c = find("seq64_n2", "poor");
            let r = c.median(0, |s| s.p99) / c.median(e, |s| s.p99);
            result.push(format!("seq_p99_ratio_vs_{name}_poor={}", fr(r)));
        }
    }
    let c = find("rel64_n2", "good");
    result.push(format!(
        "pierce_cpu_us_per_msg_good={:.2}",
        c.median(0, |s| s.cpu_us_per_msg)
    ));
    result.push(format!(
        "pierce_allocs_per_dgram_good={:.2}",
        c.median(0, |s| s.allocs)
    ));
    let c = find("blob_n2", "average");
    result.push(format!(
        "pierce_blob_s_average={:.2}",
        c.median(0, |s| s.blob_s)
    ));
    result.push(format!("wall_s={:.0}", wall0.elapsed().as_secs_f64()));
    println!("\nRESULT {}", result.join(" "));
}
