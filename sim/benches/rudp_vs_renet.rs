//! Pierce's reliability layer (`pierce_core::reliability::Connection`) against renet's
//! IO-free core (`RenetServer` → `RenetClient`), driven over the same simulated link in
//! virtual time, in one run.
//!
//! - **Link**: RTT 50 ms (25 ms each way, no jitter, so FIFO), random loss of 0%, 5% and 20%
//!   per datagram and direction. Every datagram of either contender goes through the one
//!   seeded [`impair`] function; within a round both contenders get the same seeds, so the
//!   n-th datagram in a direction meets the same fate for both.
//! - **Workload**: 60 Hz game ticks for 20 s of virtual time; each tick queues 8 messages of
//!   64 bytes on a reliable-ordered channel (9 600 messages). The run ends when the last one
//!   is delivered; delivery is checked to be exactly once, in order, byte for byte, and the
//!   bench panics otherwise.
//! - **Driving**: each contender the way it is meant to be driven. Pierce is event driven
//!   (`poll_timeout`/`handle_timeout`, transmit after every input, as its runtimes do);
//!   renet is tick driven (`update` + `get_packets_to_send` on both ends every 60 Hz tick,
//!   as its transports do). Both ends of both contenders process a datagram the moment it
//!   arrives (renet's clock is advanced to the arrival first), so neither pays for waiting
//!   on a tick to read its socket. Default settings for both (renet: `ConnectionConfig::
//!   default()`, resend time 300 ms; Pierce: `ChannelConfig::defaults()`).
//! - **Metrics** per contender and loss rate: messages delivered per CPU-second (thread CPU
//!   time of the whole run: both endpoints plus the link harness, which is the same code for
//!   both), p50/p99 delivery latency (virtual time from the tick that queued a message to its
//!   delivery), bytes on the wire per payload byte in both directions, and heap allocations
//!   per datagram between 2 s and 18 s of virtual time (a counting global allocator; the
//!   harness itself allocates nothing in that window).
//! - **Rounds**: one warm-up round (discarded), then rounds alternating Pierce, renet; in a
//!   round each contender runs the same seeded scenario several times back to back (CPU time
//!   summed; the reruns must reproduce latencies and bytes exactly). Median and [min–max]
//!   over rounds; rounds differ by seed, so latency and bytes spread too.
//!
//! Pierce encrypts and renet does not: Pierce's wire bytes include 32 bytes per datagram for
//! its AEAD header and tag, but its CPU time here does NOT include sealing and opening (see
//! `cargo bench -p pierce-core --bench datagram` for that cost). renet's bytes are its packets
//! as produced: unencrypted, without the header its netcode transport would add.
//!
//! `cargo bench -p pierce-sim --bench rudp_vs_renet`

// A benchmark prints its table and panics loudly when a contender breaks its guarantees.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pierce_core::reliability::{ACK_RESERVE, ConnEvent, Connection, Limits};
use pierce_core::wire::Writer;
use pierce_core::wire::frame::{Frames, MESSAGE_FRAME_OVERHEAD};
use pierce_core::wire::sealed::OVERHEAD as AEAD_OVERHEAD;
use pierce_core::{Channel, ChannelConfig, SendOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use renet::{ConnectionConfig, DefaultChannel, RenetClient, RenetServer};

// ---- allocation counting -------------------------------------------------------------------

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Counts without a locked read-modify-write: the bench is single-threaded, and an atomic
/// `fetch_add` per allocation would charge the contender that allocates more (renet) a few
/// percent of extra CPU that is the harness's, not its own.
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

// ---- workload ------------------------------------------------------------------------------

const ONE_WAY: Duration = Duration::from_millis(25);
const TICK_NS: u64 = 1_000_000_000 / 60;
const TICKS: u64 = 20 * 60;
const MSGS_PER_TICK: usize = 8;
const MSG_SIZE: usize = 64;
const TOTAL: usize = TICKS as usize * MSGS_PER_TICK;
/// After the last tick, a run must finish within this much virtual time.
const DRAIN_CAP: Duration = Duration::from_secs(60);
/// Steady-state window for allocation counting.
const STEADY_FROM: Duration = Duration::from_secs(2);
const STEADY_TO: Duration = Duration::from_secs(18);
/// Largest datagram, both contenders (renet's own packets stay under 1 300 bytes).
const MTU: usize = 1200;
const LOSSES: [(f64, &str); 3] = [(0.0, "0"), (0.05, "5"), (0.20, "20")];
/// Measured rounds per loss rate, after one warm-up round.
const ROUNDS: usize = 21;
/// Runs per contender per round (same seed; CPU time summed). A run is a few ms of CPU, so
/// one alone is at the mercy of a timer tick; repeating it also checks determinism.
const REPEAT: usize = 5;

fn tick_time(k: u64) -> Duration {
    Duration::from_nanos(k * TICK_NS)
}

/// All payloads back to back: message `i` is `src[i*64..(i+1)*64]`, starting with `i` (u32 BE).
/// Slicing one `Bytes` costs no allocation, so neither contender is charged for making
/// payloads.
fn payloads() -> Bytes {
    let mut v = vec![0u8; TOTAL * MSG_SIZE];
    for (i, m) in v.chunks_mut(MSG_SIZE).enumerate() {
        m[..4].copy_from_slice(&(i as u32).to_be_bytes());
        for (j, b) in m[4..].iter_mut().enumerate() {
            *b = (i * 31 + j * 7) as u8;
        }
    }
    Bytes::from(v)
}

fn message(src: &Bytes, i: usize) -> Bytes {
    src.slice(i * MSG_SIZE..(i + 1) * MSG_SIZE)
}

// ---- the link ------------------------------------------------------------------------------

/// The impairment every datagram of both contenders goes through: lost with probability
/// `loss`, else delivered one way-delay after `now`.
fn impair(rng: &mut StdRng, loss: f64, now: Duration) -> Option<Duration> {
    (rng.random::<f64>() >= loss).then_some(now + ONE_WAY)
}

struct InFlight {
    at: Duration,
    /// Pierce's packet number (the AEAD counter in real life); unused for renet.
    pn: u64,
    len: usize,
    buf: Vec<u8>,
}

/// One direction of the simulated link.
struct Link {
    rng: StdRng,
    loss: f64,
    /// In flight, in arrival order (a constant delay keeps FIFO order).
    q: VecDeque<InFlight>,
    /// Datagrams offered (lost ones included).
    packets: u64,
    /// Bytes offered (lost ones included), as each contender counts them.
    wire_bytes: u64,
}

impl Link {
    fn new(seed: u64, dir: u64, loss: f64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ dir),
            loss,
            q: VecDeque::with_capacity(1024),
            packets: 0,
            wire_bytes: 0,
        }
    }

    /// Offers `buf[..len]`, `wire_len` bytes on the wire; hands the buffer back if it was lost.
    fn send(
        &mut self,
        now: Duration,
        pn: u64,
        len: usize,
        wire_len: usize,
        buf: Vec<u8>,
    ) -> Option<Vec<u8>> {
        self.packets += 1;
        self.wire_bytes += wire_len as u64;
        match impair(&mut self.rng, self.loss, now) {
            Some(at) => {
                self.q.push_back(InFlight { at, pn, len, buf });
                None
            }
            None => Some(buf),
        }
    }

    fn next_at(&self) -> Option<Duration> {
        self.q.front().map(|p| p.at)
    }

    fn pop_due(&mut self, now: Duration) -> Option<InFlight> {
        if self.q.front()?.at <= now {
            self.q.pop_front()
        } else {
            None
        }
    }
}

// ---- checks and results --------------------------------------------------------------------

/// Checks exactly-once, in-order, intact delivery and records latencies.
struct Checker<'a> {
    name: &'static str,
    src: &'a Bytes,
    next: usize,
    lat_us: Vec<u32>,
}

impl<'a> Checker<'a> {
    fn new(name: &'static str, src: &'a Bytes) -> Self {
        Self {
            name,
            src,
            next: 0,
            lat_us: Vec::with_capacity(TOTAL),
        }
    }

    fn deliver(&mut self, now: Duration, msg: &[u8]) {
        let n = self.next;
        assert!(
            n < TOTAL,
            "{}: message delivered after all {TOTAL} were (duplicate)",
            self.name
        );
        let expect = &self.src[n * MSG_SIZE..(n + 1) * MSG_SIZE];
        if msg != expect {
            let got = msg
                .get(..4)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
            panic!(
                "{}: delivery #{n} is not message {n} (got id {got:?}, {} bytes): not exactly-once in order",
                self.name,
                msg.len()
            );
        }
        let sent = tick_time((n / MSGS_PER_TICK) as u64);
        self.lat_us.push((now - sent).as_micros() as u32);
        self.next += 1;
    }

    fn done(&self) -> bool {
        self.next == TOTAL
    }
}

/// Allocation and datagram counts at the edges of the steady-state window.
#[derive(Default)]
struct Steady {
    from: Option<(u64, u64)>,
    to: Option<(u64, u64)>,
}

impl Steady {
    fn observe(&mut self, t: Duration, dgrams: u64) {
        if self.from.is_none() && t >= STEADY_FROM {
            self.from = Some((allocs(), dgrams));
        } else if self.to.is_none() && t >= STEADY_TO {
            self.to = Some((allocs(), dgrams));
        }
    }

    fn per_dgram(&self, name: &str) -> f64 {
        let (Some((a0, d0)), Some((a1, d1))) = (self.from, self.to) else {
            panic!("{name}: run ended before the steady-state window closed");
        };
        (a1 - a0) as f64 / (d1 - d0).max(1) as f64
    }
}

struct Run {
    cpu: Duration,
    lat_us: Vec<u32>,
    /// Forward (data) and reverse (ack) direction.
    wire: [u64; 2],
    dgrams: [u64; 2],
    allocs_per_dgram: f64,
}

impl Run {
    fn new(
        cpu: Duration,
        check: Checker<'_>,
        ab: &Link,
        ba: &Link,
        steady: &Steady,
        name: &str,
    ) -> Self {
        Self {
            cpu,
            lat_us: check.lat_us,
            wire: [ab.wire_bytes, ba.wire_bytes],
            dgrams: [ab.packets, ba.packets],
            allocs_per_dgram: steady.per_dgram(name),
        }
    }
}

// ---- Pierce --------------------------------------------------------------------------------

fn pierce_limits() -> Limits {
    Limits {
        fragment_size: MTU - AEAD_OVERHEAD - MESSAGE_FRAME_OVERHEAD - ACK_RESERVE,
        max_message_size: 1 << 20,
        max_reassembly_bytes: 4 << 20,
        max_send_buffer: 8 << 20,
        mtu: MTU,
    }
}

struct PierceEnd {
    conn: Connection,
    /// Next packet number.
    pn: u64,
    /// `poll_timeout` as of the end of the previous step.
    deadline: Option<Instant>,
}

impl PierceEnd {
    fn new() -> Self {
        Self {
            conn: Connection::new(&ChannelConfig::defaults(), pierce_limits()),
            pn: 0,
            deadline: None,
        }
    }

    /// Writes packets while the connection wants to (frames only: the sealed header and tag
    /// are counted as `AEAD_OVERHEAD` bytes, not written).
    fn transmit(&mut self, link: &mut Link, pool: &mut Vec<Vec<u8>>, now: Instant, t: Duration) {
        while self.conn.wants_transmit(now) {
            let mut buf = pool.pop().unwrap_or_else(|| vec![0; MTU - AEAD_OVERHEAD]);
            let n = self
                .conn
                .write(now, self.pn, AEAD_OVERHEAD, &mut Writer::new(&mut buf));
            if n == 0 {
                pool.push(buf);
                break;
            }
            let pn = self.pn;
            self.pn += 1;
            if let Some(lost) = link.send(t, pn, n, n + AEAD_OVERHEAD, buf) {
                pool.push(lost);
            }
        }
    }

    /// Feeds every datagram due by `t`, as the receive path does after opening it.
    fn receive(&mut self, link: &mut Link, pool: &mut Vec<Vec<u8>>, now: Instant, t: Duration) {
        while let Some(p) = link.pop_due(t) {
            let ooo = self.conn.is_out_of_order(p.pn);
            self.conn.begin_packet(now, p.pn, p.len + AEAD_OVERHEAD);
            let mut elicit = false;
            for f in Frames::new(&p.buf[..p.len]) {
                let f = f.unwrap_or_else(|e| panic!("pierce: undecodable frame: {e}"));
                elicit |= self.conn.on_frame(now, &f);
            }
            self.conn.end_packet(now, elicit, ooo);
            pool.push(p.buf);
        }
    }

    fn fire(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.conn.handle_timeout(now);
        }
    }
}

fn run_pierce(epoch: Instant, src: &Bytes, loss: f64, seed: u64) -> Run {
    let name = "pierce";
    let mut pool: Vec<Vec<u8>> = (0..256).map(|_| vec![0; MTU - AEAD_OVERHEAD]).collect();
    let mut check = Checker::new(name, src);
    let mut steady = Steady::default();
    let cpu0 = thread_cpu();
    let mut tx = PierceEnd::new();
    let mut rx = PierceEnd::new();
    let mut ab = Link::new(seed, 0, loss);
    let mut ba = Link::new(seed, 1, loss);
    let mut t = Duration::ZERO;
    let mut tick = 0u64;
    loop {
        let now = epoch + t;
        rx.receive(&mut ab, &mut pool, now, t);
        tx.receive(&mut ba, &mut pool, now, t);
        tx.fire(now);
        rx.fire(now);
        if tick < TICKS && t >= tick_time(tick) {
            for k in 0..MSGS_PER_TICK {
                let i = tick as usize * MSGS_PER_TICK + k;
                let opts = SendOptions::default();
                if let Err(e) = tx
                    .conn
                    .send(now, Channel::RELIABLE_ORDERED, message(src, i), opts)
                {
                    panic!("pierce: send of message {i} failed: {e}");
                }
            }
            tick += 1;
        }
        tx.transmit(&mut ab, &mut pool, now, t);
        rx.transmit(&mut ba, &mut pool, now, t);
        while let Some(ev) = rx.conn.poll_event() {
            match ev {
                ConnEvent::Message { channel, payload } => {
                    assert_eq!(channel, Channel::RELIABLE_ORDERED, "pierce: wrong channel");
                    check.deliver(t, &payload);
                }
                ConnEvent::Expired { .. } => panic!("pierce: receiver saw {ev:?}"),
            }
        }
        if let Some(ev) = tx.conn.poll_event() {
            panic!("pierce: sender saw {ev:?}");
        }
        assert!(rx.conn.violation().is_none() && tx.conn.violation().is_none());
        steady.observe(t, ab.packets + ba.packets);
        if check.done() {
            break;
        }
        assert!(
            t < tick_time(TICKS) + DRAIN_CAP,
            "pierce: only {}/{TOTAL} messages delivered by {t:?} (loss {loss}, seed {seed})",
            check.next
        );
        tx.deadline = tx.conn.poll_timeout(now);
        rx.deadline = rx.conn.poll_timeout(now);
        let next = [
            ab.next_at(),
            ba.next_at(),
            (tick < TICKS).then(|| tick_time(tick)),
            tx.deadline.map(|d| d.saturating_duration_since(epoch)),
            rx.deadline.map(|d| d.saturating_duration_since(epoch)),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| panic!("pierce: stalled at {t:?}, {}/{TOTAL} delivered", check.next));
        // Something due now that was already handled (a pacer rounding to now): step a µs.
        t = next.max(t + Duration::from_micros(1));
    }
    let cpu = thread_cpu() - cpu0;
    Run::new(cpu, check, &ab, &ba, &steady, name)
}

// ---- renet ---------------------------------------------------------------------------------

fn run_renet(src: &Bytes, loss: f64, seed: u64) -> Run {
    const CLIENT: u64 = 1;
    let name = "renet";
    let ch: u8 = DefaultChannel::ReliableOrdered.into();
    let mut check = Checker::new(name, src);
    let mut steady = Steady::default();
    let cpu0 = thread_cpu();
    // The server sends, the client receives.
    let mut server = RenetServer::new(ConnectionConfig::default());
    server.add_connection(CLIENT);
    while server.get_event().is_some() {}
    let mut client = RenetClient::new(ConnectionConfig::default());
    client.set_connected();
    // Each end's own clock: how far `update` has advanced it.
    let (mut server_at, mut client_at) = (Duration::ZERO, Duration::ZERO);
    let mut ab = Link::new(seed, 0, loss);
    let mut ba = Link::new(seed, 1, loss);
    let mut t = Duration::ZERO;
    let mut tick = 0u64;
    loop {
        while let Some(p) = ab.pop_due(t) {
            client.update(t - client_at);
            client_at = t;
            client.process_packet(&p.buf[..p.len]);
            while let Some(m) = client.receive_message(ch) {
                check.deliver(t, &m);
            }
        }
        while let Some(p) = ba.pop_due(t) {
            server.update(t - server_at);
            server_at = t;
            server.process_packet_from(&p.buf[..p.len], CLIENT).unwrap();
        }
        if t >= tick_time(tick) {
            server.update(t - server_at);
            server_at = t;
            client.update(t - client_at);
            client_at = t;
            if tick < TICKS {
                for k in 0..MSGS_PER_TICK {
                    let i = tick as usize * MSGS_PER_TICK + k;
                    server.send_message(CLIENT, ch, message(src, i));
                }
            }
            tick += 1;
            for p in server.get_packets_to_send(CLIENT).unwrap() {
                let len = p.len();
                assert!(len <= MTU + 100, "renet: {len}-byte packet");
                drop(ab.send(t, 0, len, len, p));
            }
            for p in client.get_packets_to_send() {
                let len = p.len();
                drop(ba.send(t, 0, len, len, p));
            }
        }
        if let Some(r) = client.disconnect_reason() {
            panic!("renet: client disconnected: {r:?}");
        }
        if let Some(r) = server.disconnect_reason(CLIENT) {
            panic!("renet: server dropped the client: {r:?}");
        }
        steady.observe(t, ab.packets + ba.packets);
        if check.done() {
            break;
        }
        assert!(
            t < tick_time(TICKS) + DRAIN_CAP,
            "renet: only {}/{TOTAL} messages delivered by {t:?} (loss {loss}, seed {seed})",
            check.next
        );
        let next = [ab.next_at(), ba.next_at(), Some(tick_time(tick))]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        t = next.max(t);
    }
    let cpu = thread_cpu() - cpu0;
    Run::new(cpu, check, &ab, &ba, &steady, name)
}

// ---- statistics and output -----------------------------------------------------------------

/// Nearest-rank percentile, milliseconds.
fn percentile_ms(lat_us: &[u32], p: f64) -> f64 {
    let mut v = lat_us.to_vec();
    v.sort_unstable();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    f64::from(v[rank - 1]) / 1000.0
}

/// One metric over the measured rounds.
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

struct Summary {
    rate: Spread,
    p50: Spread,
    p99: Spread,
    wire: Spread,
    wire_fwd: f64,
    wire_rev: f64,
    dgrams: f64,
    allocs: Spread,
}

fn summarize(runs: &[Run]) -> Summary {
    let payload = (TOTAL * MSG_SIZE) as f64;
    let per = |f: &dyn Fn(&Run) -> f64| spread(runs.iter().map(f).collect());
    Summary {
        rate: per(&|r| (TOTAL * REPEAT) as f64 / r.cpu.as_secs_f64()),
        p50: per(&|r| percentile_ms(&r.lat_us, 0.50)),
        p99: per(&|r| percentile_ms(&r.lat_us, 0.99)),
        wire: per(&|r| (r.wire[0] + r.wire[1]) as f64 / payload),
        wire_fwd: per(&|r| r.wire[0] as f64 / payload).median,
        wire_rev: per(&|r| r.wire[1] as f64 / payload).median,
        dgrams: per(&|r| (r.dgrams[0] + r.dgrams[1]) as f64).median,
        allocs: per(&|r| r.allocs_per_dgram),
    }
}

fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else {
        format!("{:.0}k", x / 1e3)
    }
}

fn print_row(loss: &str, who: &str, s: &Summary) {
    println!(
        "{loss:>5} {who:<7} {:>7} [{:>6}-{:>6}] {:>6.1} [{:>5.1}-{:>5.1}] {:>6.1} [{:>5.1}-{:>5.1}] {:>5.3} [{:.3}-{:.3}] ({:.3}+{:.3}) {:>6.0} {:>6.2} [{:.2}-{:.2}]",
        si(s.rate.median),
        si(s.rate.min),
        si(s.rate.max),
        s.p50.median,
        s.p50.min,
        s.p50.max,
        s.p99.median,
        s.p99.min,
        s.p99.max,
        s.wire.median,
        s.wire.min,
        s.wire.max,
        s.wire_fwd,
        s.wire_rev,
        s.dgrams,
        s.allocs.median,
        s.allocs.min,
        s.allocs.max,
    );
}

/// Runs `run` [`REPEAT`] times: CPU time is the sum; everything else must not change.
fn repeat(mut run: impl FnMut() -> Run) -> Run {
    let mut first = run();
    for _ in 1..REPEAT {
        let again = run();
        assert!(
            again.lat_us == first.lat_us
                && again.wire == first.wire
                && again.dgrams == first.dgrams,
            "a rerun with the same seed differs: the harness is not deterministic"
        );
        first.cpu += again.cpu;
    }
    first
}

fn main() {
    let epoch = epoch();
    let src = payloads();
    println!(
        "rudp_vs_renet: Pierce reliability layer vs renet 2.0.1 core, same seeded link, virtual time"
    );
    println!(
        "workload: 60 Hz ticks x {MSGS_PER_TICK} msgs x {MSG_SIZE} B, reliable-ordered, {} s ({TOTAL} msgs); RTT 50 ms, random loss per datagram",
        TICKS / 60
    );
    println!(
        "rounds: 1 warm-up (discarded) + {ROUNDS}, alternating pierce, renet (each {REPEAT} identical runs per round); median [min-max] over rounds"
    );
    println!(
        "wire: pierce = frame bytes + {AEAD_OVERHEAD} B/datagram (AEAD header 16 + tag 16; encrypted on the real wire, sealing NOT in its CPU time);"
    );
    println!(
        "      renet = its packets as produced, UNENCRYPTED, no transport header; both directions, lost datagrams included"
    );
    println!(
        "cpu: thread CPU time of a whole run (both ends + the shared link harness); allocs: per datagram, {}-{} s\n",
        STEADY_FROM.as_secs(),
        STEADY_TO.as_secs()
    );
    println!(
        "{:>5} {:<7} {:>23} {:>20} {:>20} {:>33} {:>6} {:>20}",
        "loss",
        "who",
        "msgs/CPU-s",
        "p50 ms",
        "p99 ms",
        "wire B/payload B (data+ack dir)",
        "dgrams",
        "allocs/dgram"
    );
    let mut result: Vec<String> = Vec::new();
    let mut allocs_pierce = Vec::new();
    for (li, &(loss, tag)) in LOSSES.iter().enumerate() {
        let mut pierce = Vec::new();
        let mut renet = Vec::new();
        for round in 0..=ROUNDS {
            let seed = 0x5EED_0000 + (li as u64) * 1000 + round as u64;
            let a = repeat(|| run_pierce(epoch, &src, loss, seed));
            let b = repeat(|| run_renet(&src, loss, seed));
            if round > 0 {
                pierce.push(a);
                renet.push(b);
            }
        }
        let (p, r) = (summarize(&pierce), summarize(&renet));
        let label = format!("{tag}%");
        print_row(&label, "pierce", &p);
        print_row("", "renet", &r);
        let rate = p.rate.median / r.rate.median;
        let p50 = p.p50.median / r.p50.median;
        let p99 = p.p99.median / r.p99.median;
        let wire = p.wire.median / r.wire.median;
        println!(
            "{:>5} {:<7} {rate:>7.2}x (higher=better) p50 {p50:.2}x  p99 {p99:.2}x  wire {wire:.2}x (lower=better)",
            "", "P/renet"
        );
        result.push(format!("msgs_per_cpu_s_ratio_vs_renet_{tag}={rate:.2}"));
        result.push(format!("p50_ratio_vs_renet_{tag}={p50:.2}"));
        result.push(format!("p99_ratio_vs_renet_{tag}={p99:.2}"));
        result.push(format!("wire_ratio_vs_renet_{tag}={wire:.2}"));
        result.push(format!("pierce_msgs_per_cpu_s_{tag}={:.0}", p.rate.median));
        result.push(format!("renet_msgs_per_cpu_s_{tag}={:.0}", r.rate.median));
        result.push(format!("pierce_p99_ms_{tag}={:.1}", p.p99.median));
        result.push(format!("renet_p99_ms_{tag}={:.1}", r.p99.median));
        allocs_pierce.push((tag, p.allocs.median, r.allocs.median));
    }
    for &(tag, a, b) in &allocs_pierce {
        if tag == "0" {
            result.push(format!("pierce_allocs_per_dgram={a:.2}"));
            result.push(format!("renet_allocs_per_dgram={b:.2}"));
        } else {
            result.push(format!("pierce_allocs_per_dgram_{tag}={a:.2}"));
        }
    }
    println!("\nRESULT {}", result.join(" "));
}
