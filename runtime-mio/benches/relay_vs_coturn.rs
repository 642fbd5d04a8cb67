//! Relay cost: server CPU per relayed datagram of a real `pierce server` process against
//! coturn's `turnserver`, both on loopback, at the same offered load and payload size.
//!
//! - **Pierce**: the `pierce server` binary of this package (`CARGO_BIN_EXE_pierce`, built by
//!   `cargo bench` with the bench profile; `--server-bin PATH` runs another build, e.g. one
//!   from before a change), default settings (rooms policy). Its clients are real
//!   `pierce_core::Client`s with `direct_paths = false` (relay only) and the server key
//!   pinned; each pair of clients shares a two-member room, the sender sends unreliable
//!   messages (`Channel::UNRELIABLE`), one per datagram, the receiver acknowledges them as
//!   Pierce does (an ack per two packets, relayed too).
//! - **coturn**: `turnserver` with one relay thread, no authentication, UDP only, no CLI, no
//!   TLS/DTLS, loopback peers allowed, its SQLite file and logs in a temporary directory:
//!
//!   ```text
//!   turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port=PORT
//!     --relay-threads=1 --allow-loopback-peers --no-auth --no-tcp --no-tls --no-dtls
//!     --no-tcp-relay --no-cli --no-rfc5780 --db=TMP/turndb --pidfile=TMP/turnserver.pid
//!     --log-file=TMP/turn.log --simple-log
//!   ```
//!
//!   Each pair holds two allocations bound to each other's relayed address with ChannelBind;
//!   the sender sends ChannelData, coturn relays it from one allocation to the other and
//!   delivers it to the receiver as ChannelData (RFC 8656 between two TURN clients, so two
//!   receives and two sends in coturn per delivered datagram; Pierce's relay has one of each).
//!   The bench installs nothing: without `turnserver` it fails, naming the package.
//! - **Load**: the same for both: `--pairs` pairs (default 80, each on a loopback address of
//!   its own, as players have), together `--rate` datagrams/s (default 30 000) of `--sizes`
//!   payload bytes (default 100 and 1000: the application payload; Pierce adds its headers
//!   and two AEAD tags, TURN its 4-byte ChannelData header; the table shows the bytes on the
//!   wire). Why these: Pierce's default relay cap is 1 MiB/s per sending client, so 1000-byte
//!   traffic must be spread over many senders; and at 50 000/s on the 2-core machine the
//!   bench was written on, `pierce server`'s one socket (default 208 KiB receive buffer)
//!   overflowed in the generator's bursts (25-45% loss at 1000 B; coturn, whose listening
//!   socket asks for a large receive buffer, 4 MiB here (`net.core.rmem_max`), lost none),
//!   while at 30 000/s Pierce's median loss stays at a few percent at most (0-5%, depending
//!   on what else the machine runs).
//!   Senders are paced on a 1 ms tick with staggered phases; all TURN packets are pre-built,
//!   Pierce's are sealed per message by real clients. The generator (two threads per
//!   contender in this process) is not the bottleneck when the offered rate matches
//!   `--rate` and its CPU stays below a core; its CPU per datagram is reported.
//! - **Measure**: 1 s warm-up, then a 3 s window (`--warmup`, `--window`). Server CPU is the
//!   server process's own CPU time (all threads; `clock_getcpuclockid`, i.e. utime+stime at
//!   nanosecond resolution; the user/system split from `/proc/<pid>/stat`), divided by the
//!   datagrams the senders sent that reached the receivers in the window, counted at the
//!   receivers (Pierce: messages delivered, one per sent datagram; its server may pack peer
//!   packets waiting for the same receiver into one datagram, shown as "datagrams delivered
//!   per datagram sent"). Pierce also relays its acks; the table shows them and the cost per
//!   relayed datagram including them. One discarded run per contender comes first.
//! - **Rounds**: `--rounds` (default 5); within a round both sizes, and for each size both
//!   contenders, in an order that alternates from round to round. Medians with [min–max];
//!   differences under 10% are not claimed (a shared, noisy 2-core machine).
//!
//! `cargo bench -p pierce-mio --bench relay_vs_coturn [-- --rounds 5 --rate 30000 ...]`;
//! `--baseline-bin PATH` adds a third contender, another `pierce` build driven the same way
//! (before/after comparisons), with `--baseline-args "FLAGS"` added to its `server` command
//! (the same binary as a cluster node: `--baseline-args "--cluster redis://127.0.0.1:6379
//! --node-id n0"`, Redis started first, prices being a node); `--only pierce|coturn|baseline` runs one (e.g. for `perf
//! record -p <pid>` on the printed server pid with a long `--window`). The last line is
//! `RESULT key=value …`.

// A benchmark prints its table and panics loudly when a contender misbehaves.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

fn main() {
    #[cfg(target_os = "linux")]
    bench::main();
    #[cfg(not(target_os = "linux"))]
    println!("relay_vs_coturn: skipped (Linux only: it reads other processes' CPU clocks)");
}

#[cfg(target_os = "linux")]
mod bench {
    use std::collections::HashSet;
    use std::io::{BufRead, BufReader, Read};
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc::{Receiver, RecvTimeoutError};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use mio::{Events, Interest, Poll, Token};
    use pierce_core::{
        Channel, Client, ClientConfig, ClientEvent, HostId, MAX_DATAGRAM_SIZE, PublicKey,
        SecretKey, ServerConfig,
    };
    use pierce_core::{Endpoint as _, Events as _};

    /// Generator threads per contender.
    const WORKERS: usize = 2;
    /// Pacing tick of the senders: every due datagram of a tick leaves in one burst.
    const TICK: Duration = Duration::from_millis(1);
    /// How often an idle generator looks at its clients' deadlines and the control flags.
    const IDLE_TICK: Duration = Duration::from_millis(20);
    /// After a run, before the next: lets the last datagrams and acks arrive.
    const DRAIN: Duration = Duration::from_millis(300);
    /// The TURN channel every allocation binds to its partner's relayed address.
    const CHANNEL: u16 = 0x4000;
    /// Largest payload the bench sends (Pierce's headers must still fit one datagram).
    const MAX_SIZE: usize = 1100;
    /// Bytes Pierce adds to a relayed payload, at most (the receivers see 57 today).
    const PIERCE_OVERHEAD: usize = 64;
    /// A knee probe passes when the generator offers at least this share of its target.
    const OFFERED_MIN: f64 = 0.97;
    /// The generator is called the limit at this share of the cores it has, or more.
    const BUSY: f64 = 0.95;
    /// A knee probe fails when more than this share of Pierce's messages did not leave at
    /// once in a datagram of their own (its senders' congestion control held them and packed
    /// them with later ones: fewer datagrams than asked crossed the server).
    const PACKED_MAX: f64 = 0.01;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Mode {
        /// Server CPU per datagram at one offered rate, in rounds (the default).
        Rounds,
        /// The highest rate without loss, Pierce (one relay thread) against coturn (one relay
        /// thread).
        Knee,
        /// The highest rate without loss, `pierce server --threads 1` against `--threads 2`.
        Scaling,
    }

    struct Options {
        mode: Mode,
        rounds: usize,
        rate: f64,
        /// `None`: 80 in rounds, enough for the relay budgets in the knee modes.
        pairs: Option<usize>,
        sizes: Vec<usize>,
        warmup: Duration,
        window: Duration,
        only: Option<Contender>,
        server_bin: PathBuf,
        baseline_bin: Option<PathBuf>,
        /// Extra flags for the baseline's `server` (`--baseline-args "…"`, split on spaces):
        /// e.g. the same binary as a cluster node, to price what being one costs per datagram.
        baseline_args: Vec<String>,
        /// Knee search: the first rate, the highest, the factor of the upward steps, the
        /// precision at which bisection stops (ratio of the failing to the passing rate).
        knee_from: f64,
        knee_to: f64,
        knee_step: f64,
        knee_precision: f64,
        /// Probes per contender and size, at most.
        knee_probes: usize,
        /// Most loss (percent of the datagrams sent in the window) a probe may have and pass.
        loss_max_pct: f64,
        /// Servers on CPU 0, generator threads on the others (`None`: only in `--knee`).
        pin: Option<bool>,
        scaling_threads: Vec<usize>,
    }

    impl Options {
        fn pin(&self) -> bool {
            self.pin.unwrap_or(self.mode == Mode::Knee) && cpus() >= 2
        }
    }

    fn options() -> Options {
        let mut o = Options {
            mode: Mode::Rounds,
            rounds: 5,
            rate: 30_000.0,
            pairs: None,
            sizes: vec![100, 1000],
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(3),
            only: None,
            server_bin: PathBuf::from(env!("CARGO_BIN_EXE_pierce")),
            baseline_bin: None,
            baseline_args: Vec::new(),
            knee_from: 20_000.0,
            knee_to: 320_000.0,
            knee_step: 1.5,
            knee_precision: 0.05,
            knee_probes: 12,
            loss_max_pct: 0.1,
            pin: None,
            scaling_threads: vec![1, 2],
        };
        let mut window_set = false;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
            match a.as_str() {
                "--bench" => {}
                "--knee" => o.mode = Mode::Knee,
                "--scaling" => o.mode = Mode::Scaling,
                "--rounds" => o.rounds = value().parse().unwrap(),
                "--rate" => o.rate = value().parse().unwrap(),
                "--pairs" => o.pairs = Some(value().parse().unwrap()),
                "--sizes" => {
                    o.sizes = value().split(',').map(|s| s.parse().unwrap()).collect();
                }
                "--warmup" => o.warmup = Duration::from_secs_f64(value().parse().unwrap()),
                "--window" => {
                    o.window = Duration::from_secs_f64(value().parse().unwrap());
                    window_set = true;
                }
                "--only" => {
                    o.only = Some(match value().as_str() {
                        "pierce" => Contender::Pierce,
                        "coturn" => Contender::Coturn,
                        "baseline" => Contender::Baseline,
                        other => panic!("--only pierce|coturn|baseline, not {other}"),
                    });
                }
                "--server-bin" => o.server_bin = PathBuf::from(value()),
                "--baseline-bin" => o.baseline_bin = Some(PathBuf::from(value())),
                "--baseline-args" => {
                    o.baseline_args = value().split_whitespace().map(str::to_owned).collect();
                }
                "--knee-from" => o.knee_from = value().parse().unwrap(),
                "--knee-to" => o.knee_to = value().parse().unwrap(),
                "--knee-step" => o.knee_step = value().parse().unwrap(),
                "--knee-precision" => o.knee_precision = value().parse().unwrap(),
                "--knee-probes" => o.knee_probes = value().parse().unwrap(),
                "--loss-max" => o.loss_max_pct = value().parse().unwrap(),
                "--pin" => o.pin = Some(true),
                "--no-pin" => o.pin = Some(false),
                "--scaling-threads" => {
                    o.scaling_threads = value().split(',').map(|s| s.parse().unwrap()).collect();
                }
                other => panic!("unknown argument {other}"),
            }
        }
        if o.mode != Mode::Rounds && !window_set {
            o.window = Duration::from_secs(2);
        }
        assert!(o.rounds >= 1 && o.rate > 0.0 && !o.sizes.is_empty());
        assert!(
            o.pairs.is_none_or(|p| p >= WORKERS),
            "--pairs at least {WORKERS}"
        );
        assert!(
            o.sizes.iter().all(|&s| (4..=MAX_SIZE).contains(&s)),
            "--sizes from 4 to {MAX_SIZE}"
        );
        assert!(o.knee_from > 0.0 && o.knee_to >= o.knee_from && o.knee_step > 1.0);
        assert!(o.knee_precision > 0.0 && o.knee_probes >= 2);
        assert!(!o.scaling_threads.is_empty() && o.scaling_threads.iter().all(|&t| t >= 1));
        o
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Contender {
        Pierce,
        Coturn,
        /// `pierce server` from `--baseline-bin` (e.g. a build from before a change), driven
        /// exactly like `Pierce`.
        Baseline,
        /// `pierce server --threads N` (the scaling mode).
        Threads(usize),
    }

    impl Contender {
        const ALL: [Self; 3] = [Self::Pierce, Self::Coturn, Self::Baseline];

        fn name(self) -> String {
            match self {
                Self::Pierce => "pierce".to_owned(),
                Self::Coturn => "coturn".to_owned(),
                Self::Baseline => "baseline".to_owned(),
                Self::Threads(n) => format!("pierce-t{n}"),
            }
        }
    }

    /// A contender ready to measure: its load generator and its server.
    struct Entry {
        contender: Contender,
        generator: Generator,
        pid: u32,
        /// Pierce's stats lines (`--stats-every 1 --json`); `None` for coturn.
        stats: Option<Arc<Mutex<Receiver<StatsLine>>>>,
    }

    pub(super) fn main() {
        if !std::env::args().any(|a| a == "--bench") {
            println!(
                "relay_vs_coturn: run it with `cargo bench` (it starts servers and takes ~2 min)"
            );
            return;
        }
        let wall = Instant::now();
        let o = options();
        println!("load at start: {}", loadavg());
        match o.mode {
            Mode::Rounds => rounds(&o),
            Mode::Knee => knee_mode(&o),
            Mode::Scaling => scaling_mode(&o),
        }
        println!(
            "load at end: {}; wall time {:.0} s",
            loadavg(),
            wall.elapsed().as_secs_f64()
        );
    }

    fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|e| format!("unknown ({e})"))
    }

    fn need_turnserver() -> PathBuf {
        find_on_path("turnserver").unwrap_or_else(|| {
            eprintln!(
                "relay_vs_coturn: `turnserver` not found on PATH. Install coturn (Debian/Ubuntu \
                 package `coturn`: apt-get install coturn); this bench installs nothing."
            );
            std::process::exit(1);
        })
    }

    fn temp_dir() -> PathBuf {
        let tmp = std::env::temp_dir().join(format!("relay_vs_coturn-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        tmp
    }

    // ---- the default mode: rounds at one rate ------------------------------------------------

    fn rounds(o: &Options) {
        let turnserver = need_turnserver();
        let tmp = temp_dir();
        let pairs = o.pairs.unwrap_or(80);
        let pierce = PierceServer::start(&o.server_bin, Some(1)).unwrap_or_else(|e| panic!("{e}"));
        let coturn = Coturn::start(&turnserver, &tmp);
        println!(
            "relay_vs_coturn: {} pairs, {} datagrams/s offered per contender ({:.0}/s per \
             sender, all due datagrams of a {} ms tick in one burst), {} s window after {} s \
             warm-up, {} rounds alternating the order",
            pairs,
            o.rate,
            o.rate / pairs as f64,
            TICK.as_millis(),
            o.window.as_secs_f64(),
            o.warmup.as_secs_f64(),
            o.rounds
        );
        println!(
            "pierce: {} (pid {}), default server settings, --stats-every 1 --json",
            o.server_bin.display(),
            pierce.child.id()
        );
        println!(
            "coturn: {} (pid {}), {}",
            coturn.version,
            coturn.child.id(),
            coturn.flags
        );
        let pin = o.pin();
        let want = |c| o.only.is_none_or(|only| only == c);
        let baseline = o.baseline_bin.as_deref().map(|b| {
            PierceServer::start_with(b, None, &o.baseline_args).unwrap_or_else(|e| panic!("{e}"))
        });
        if let Some(b) = &baseline {
            let bin = o.baseline_bin.as_ref().unwrap().display();
            let args = if o.baseline_args.is_empty() {
                "default server settings".to_owned()
            } else {
                format!("server {}", o.baseline_args.join(" "))
            };
            println!("baseline: {bin} (pid {}), {args}", b.child.id());
        }
        // In the first round's order.
        let mut entries: Vec<Entry> = Vec::new();
        if want(Contender::Pierce) {
            entries.push(pierce.entry(Contender::Pierce, pairs));
        }
        if want(Contender::Coturn) {
            entries.push(coturn.entry(pairs));
        }
        if let Some(b) = baseline.as_ref().filter(|_| want(Contender::Baseline)) {
            entries.push(b.entry(Contender::Baseline, pairs));
        }
        pin_all(&entries, pin);
        idle_allocations(&entries);
        // One discarded run each first: Pierce's connections leave their initial RTT
        // estimate and congestion window; caches and allocators warm up.
        for e in &entries {
            let s = measure(e, o.rate, o.sizes[0], 0, o);
            println!("  warm-up (discarded): {}", s.line());
        }

        let mut samples: Vec<Sample> = Vec::new();
        for round in 0..o.rounds {
            for &size in &o.sizes {
                for e in &entries {
                    let s = measure(e, o.rate, size, round, o);
                    println!("  {}", s.line());
                    samples.push(s);
                }
                entries.rotate_left(1); // the order changes from run to run...
            }
            if o.sizes.len() % 2 == 0 {
                entries.rotate_left(1); // ... and from round to round
            }
        }
        drop(entries);
        drop(baseline);
        report(&samples, o, pairs);
        drop(pierce);
        drop(coturn);
        let _ = std::fs::remove_dir_all(&tmp);
    }

    /// Allocations a Pierce server makes per second with its clients connected and idle (its
    /// stats line's own included): the floor under the counts in the windows.
    fn idle_allocations(entries: &[Entry]) {
        for e in entries {
            let Some(stats) = &e.stats else { continue };
            let rx = stats.lock().unwrap();
            while rx.try_recv().is_ok() {}
            let a = next_stats(&rx);
            let at = Instant::now();
            let b = next_stats(&rx);
            let secs = at.elapsed().as_secs_f64();
            let (Some(a), Some(b)) = (a.allocations, b.allocations) else {
                println!(
                    "{}: its stats line counts no allocations",
                    e.contender.name()
                );
                continue;
            };
            println!(
                "{}: idle (clients connected, no traffic): {:.0} allocations/s (its stats line's \
                 own included)",
                e.contender.name(),
                b.saturating_sub(a) as f64 / secs
            );
        }
    }

    // ---- measuring -----------------------------------------------------------------------

    struct Sample {
        contender: Contender,
        size: usize,
        round: usize,
        /// The offered rate asked of the generator.
        target: f64,
        window: f64,
        sent: u64,
        /// Datagrams that reached the receivers' sockets.
        received: u64,
        /// Datagrams (Pierce: messages) that reached the receivers' applications.
        messages: u64,
        /// Pierce: messages sent that did not leave at once in a datagram of their own.
        held: u64,
        back: u64,
        wire_bytes: u64,
        server_cpu: Duration,
        server_user_ticks: u64,
        server_sys_ticks: u64,
        /// CPU time of the generator's own threads.
        generator_cpu: Duration,
        /// CPUs the generator may run on (all of them unless pinned).
        generator_cores: usize,
        /// Times the server's threads blocked (voluntary context switches): each is a sleep
        /// in the poller and a wakeup by the next datagram.
        server_sleeps: u64,
        /// Datagrams the kernel dropped at the server's sockets (full receive buffers), and
        /// at the generator's.
        server_socket_drops: u64,
        generator_socket_drops: u64,
        /// From Pierce's stats lines: what the server dropped itself (every reason; and the
        /// relay budgets' share), relayed, and allocated in the window.
        server_dropped: Option<u64>,
        budget_dropped: Option<u64>,
        server_relayed: Option<u64>,
        allocations: Option<u64>,
        /// Over the whole run (warm-up and window, counted after the drain, so nothing is in
        /// flight at either end): messages sent, and those delivered.
        run_sent: u64,
        run_messages: u64,
        problems: u64,
    }

    impl Sample {
        fn server_us(&self) -> f64 {
            self.server_cpu.as_secs_f64() * 1e6 / self.messages.max(1) as f64
        }
        fn server_us_incl_back(&self) -> f64 {
            self.server_cpu.as_secs_f64() * 1e6 / (self.messages + self.back).max(1) as f64
        }
        fn generator_us(&self) -> f64 {
            self.generator_cpu.as_secs_f64() * 1e6 / self.messages.max(1) as f64
        }
        fn offered(&self) -> f64 {
            self.sent as f64 / self.window
        }
        fn relayed(&self) -> f64 {
            self.messages as f64 / self.window
        }
        /// Messages sent and never delivered (Pierce may put several messages in one
        /// datagram when its congestion control holds them back; the table shows it).
        /// (Clamped at 0: datagrams in flight when the window opens arrive inside it.)
        fn loss_pct(&self) -> f64 {
            (100.0 * (1.0 - self.messages as f64 / self.sent.max(1) as f64)).max(0.0)
        }
        /// Messages lost over the whole run, percent: exact, where the window's count has
        /// the datagrams in flight at its ends.
        fn run_loss_pct(&self) -> f64 {
            100.0 * self.run_sent.saturating_sub(self.run_messages) as f64
                / self.run_sent.max(1) as f64
        }
        fn sleeps_per_datagram(&self) -> f64 {
            self.server_sleeps as f64 / self.messages.max(1) as f64
        }
        fn sys_share(&self) -> f64 {
            let t = self.server_user_ticks + self.server_sys_ticks;
            self.server_sys_ticks as f64 / t.max(1) as f64
        }
        fn sys_pct(&self) -> f64 {
            100.0 * self.sys_share()
        }
        fn server_cores(&self) -> f64 {
            self.server_cpu.as_secs_f64() / self.window
        }
        fn generator_cores(&self) -> f64 {
            self.generator_cpu.as_secs_f64() / self.window
        }
        /// Allocations per relayed datagram (acks included: all the server relayed).
        fn allocs_per_relayed(&self) -> Option<f64> {
            Some(self.allocations? as f64 / self.server_relayed?.max(1) as f64)
        }
        fn drops(&self) -> String {
            let mut s = format!(
                "drops: server sockets {}, generator sockets {}",
                self.server_socket_drops, self.generator_socket_drops
            );
            if let (Some(d), Some(b)) = (self.server_dropped, self.budget_dropped) {
                s.push_str(&format!(", in the server {d} (relay budgets {b})"));
            }
            s
        }
        fn line(&self) -> String {
            let allocs = match (self.allocations, self.allocs_per_relayed()) {
                (Some(n), Some(per)) => format!(" | {n} allocations ({per:.4}/relayed)"),
                _ => String::new(),
            };
            format!(
                "round {} {:8} {:4} B: offered {:7.0}/s relayed {:7.0}/s loss {:5.2}% (run \
                 {:.3}%) | server \
                 {:5.2} us/datagram ({:4.1}% of a core, {:2.0}% system, {:.2} sleeps/datagram) \
                 | generator {:5.2} us/datagram ({:4.1}% of a core){allocs}{}",
                self.round,
                self.contender.name(),
                self.size,
                self.offered(),
                self.relayed(),
                self.loss_pct(),
                self.run_loss_pct(),
                self.server_us(),
                100.0 * self.server_cores(),
                self.sys_pct(),
                self.sleeps_per_datagram(),
                self.generator_us(),
                100.0 * self.generator_cores(),
                if self.problems > 0 {
                    format!(" | {} problems", self.problems)
                } else {
                    String::new()
                }
            )
        }
    }

    /// Everything read at one end of a window.
    struct Snapshot {
        counters: [u64; 8],
        server_cpu: Duration,
        server_ticks: (u64, u64),
        generator_cpu: Duration,
        at: Instant,
        sleeps: u64,
        server_drops: u64,
        generator_drops: u64,
        stats: Option<StatsLine>,
    }

    /// Runs `e`'s generator at `rate` datagrams/s of `size` bytes: a warm-up, then a window.
    /// A Pierce server's window runs from one of its stats lines to a later one (its
    /// allocation count is read there); coturn's is timed.
    fn measure(e: &Entry, rate: f64, size: usize, round: usize, o: &Options) -> Sample {
        let g = &e.generator;
        let pid = e.pid;
        let server_clock = cpu_clock(pid);
        let server_sockets = socket_inodes(pid);
        let generator_sockets = socket_inodes(std::process::id());
        let snapshot = |stats: Option<StatsLine>| {
            let udp = udp_drops();
            let sum = |set: &HashSet<u64>| set.iter().filter_map(|i| udp.get(i)).sum::<u64>();
            Snapshot {
                counters: g.counters.snapshot(),
                server_cpu: read_clock(server_clock),
                server_ticks: proc_ticks(pid),
                generator_cpu: g.cpu(),
                at: Instant::now(),
                sleeps: sleeps(pid),
                server_drops: sum(&server_sockets),
                generator_drops: sum(&generator_sockets),
                stats,
            }
        };
        let before = g.counters.snapshot();
        g.run(rate, size);
        std::thread::sleep(o.warmup);
        let (a, b) = match &e.stats {
            Some(rx) => {
                let rx = rx.lock().unwrap();
                while rx.try_recv().is_ok() {}
                let a = snapshot(Some(next_stats(&rx)));
                let mut last = None;
                for _ in 0..(o.window.as_secs_f64().round() as usize).max(1) {
                    last = Some(next_stats(&rx));
                }
                (a, snapshot(last))
            }
            None => {
                let a = snapshot(None);
                std::thread::sleep(o.window);
                (a, snapshot(None))
            }
        };
        g.idle();
        std::thread::sleep(DRAIN);
        let after = g.counters.snapshot();
        let d = |i: usize| b.counters[i] - a.counters[i];
        let stats = |f: fn(&StatsLine) -> Option<u64>| {
            Some(f(b.stats.as_ref()?)?.saturating_sub(f(a.stats.as_ref()?)?))
        };
        Sample {
            contender: e.contender,
            size,
            round,
            target: rate,
            window: (b.at - a.at).as_secs_f64(),
            sent: d(Counters::SENT),
            received: d(Counters::RECEIVED),
            back: d(Counters::BACK),
            wire_bytes: d(Counters::WIRE_BYTES),
            messages: d(Counters::MESSAGES),
            held: d(Counters::HELD),
            server_cpu: b.server_cpu - a.server_cpu,
            server_user_ticks: b.server_ticks.0 - a.server_ticks.0,
            server_sys_ticks: b.server_ticks.1 - a.server_ticks.1,
            generator_cpu: b.generator_cpu - a.generator_cpu,
            generator_cores: g.cores(),
            server_sleeps: b.sleeps - a.sleeps,
            server_socket_drops: b.server_drops - a.server_drops,
            generator_socket_drops: b.generator_drops - a.generator_drops,
            server_dropped: stats(|s| Some(s.dropped)),
            budget_dropped: stats(|s| Some(s.relay_rate + s.queue_full)),
            server_relayed: stats(|s| Some(s.relayed)),
            allocations: stats(|s| s.allocations),
            run_sent: after[Counters::SENT] - before[Counters::SENT],
            run_messages: after[Counters::MESSAGES] - before[Counters::MESSAGES],
            problems: d(Counters::PROBLEMS),
        }
    }

    fn report(samples: &[Sample], o: &Options, pairs: usize) {
        println!();
        println!(
            "contender  size  wire B  offered/s  relayed/s  loss %   server us/datagram \
             median [min-max]   sys %  core %  sleeps/dgram  generator us/dgram (core %)"
        );
        let mut head = Vec::new(); // the Pierce/coturn ratios lead the RESULT line
        let mut result = Vec::new();
        let mut ratio_lines = Vec::new();
        let of = |c: Contender, size: usize| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|s| s.contender == c && s.size == size)
                .collect()
        };
        // Per-round ratios of server CPU per datagram: both ran back to back in a round.
        let ratios = |a: Contender, b: Contender, size: usize| {
            stats((0..o.rounds).filter_map(|r| {
                let find = |c| {
                    samples
                        .iter()
                        .find(|s| s.contender == c && s.size == size && s.round == r)
                };
                Some(find(a)?.server_us() / find(b)?.server_us())
            }))
        };
        for &size in &o.sizes {
            for c in Contender::ALL {
                let s = of(c, size);
                if s.is_empty() {
                    continue;
                }
                let us = stats(s.iter().map(|s| s.server_us()));
                let wire: u64 = s.iter().map(|s| s.wire_bytes).sum();
                let recv: u64 = s.iter().map(|s| s.received).sum();
                let loss = stats(s.iter().map(|s| s.loss_pct()));
                let sys = stats(s.iter().map(|s| s.sys_share())).median;
                println!(
                    "{:9} {:5} {:7.0} {:10.0} {:10.0} {:7.2}   {:>32}   {:5.1}  {:6.1}  \
                     {:12.2}  {:>6.2} ({:4.1})",
                    c.name(),
                    size,
                    wire as f64 / recv.max(1) as f64,
                    stats(s.iter().map(|s| s.offered())).median,
                    stats(s.iter().map(|s| s.relayed())).median,
                    loss.median,
                    us.show(2),
                    100.0 * sys,
                    stats(s.iter().map(|s| 100.0 * s.server_cores())).median,
                    stats(s.iter().map(|s| s.sleeps_per_datagram())).median,
                    stats(s.iter().map(|s| s.generator_us())).median,
                    stats(s.iter().map(|s| 100.0 * s.generator_cores())).median,
                );
                println!(
                    "{:15} of the {:.2} us: {:.2} us system time (syscalls, the kernel's UDP \
                     path), {:.2} us its own work (user time); {}",
                    "",
                    us.median,
                    us.median * sys,
                    us.median * (1.0 - sys),
                    drops_total(&s)
                );
                if c != Contender::Coturn {
                    let incl = stats(s.iter().map(|s| s.server_us_incl_back()));
                    let acks = stats(s.iter().map(|s| s.back as f64 / s.messages.max(1) as f64));
                    let msgs: u64 = s.iter().map(|s| s.messages).sum();
                    println!(
                        "{:15} acks relayed back: {:.2} per datagram; server per relayed datagram \
                         incl. acks {} us; {:.3} datagrams delivered per datagram sent",
                        "",
                        acks.median,
                        incl.show(2),
                        recv as f64 / msgs.max(1) as f64
                    );
                    let allocs: u64 = s.iter().filter_map(|s| s.allocations).sum();
                    let relayed: u64 = s.iter().filter_map(|s| s.server_relayed).sum();
                    println!(
                        "{:15} allocations in the windows: {allocs} for {relayed} relayed \
                         datagrams (acks included): {:.4} per relayed datagram",
                        "",
                        allocs as f64 / relayed.max(1) as f64
                    );
                    result.push(format!(
                        "{}_us_incl_acks_{size}B={:.2}",
                        c.name(),
                        incl.median
                    ));
                    result.push(format!(
                        "{}_allocs_per_relayed_{size}B={:.4}",
                        c.name(),
                        allocs as f64 / relayed.max(1) as f64
                    ));
                }
                result.push(format!("{}_us_{size}B={:.2}", c.name(), us.median));
                result.push(format!("{}_sys_pct_{size}B={:.0}", c.name(), 100.0 * sys));
                result.push(format!("{}_loss_pct_{size}B={:.2}", c.name(), loss.median));
            }
            let median = |c| stats(of(c, size).iter().map(|s| s.server_us())).median;
            for c in [Contender::Pierce, Contender::Baseline] {
                let ratio = median(c) / median(Contender::Coturn);
                if !ratio.is_finite() {
                    continue;
                }
                let target = if ratio <= 0.5 { "met" } else { "not met" };
                ratio_lines.push(format!(
                    "{size:5} B: {}/coturn server CPU per datagram {ratio:.2}x (per-round \
                     ratios {}); {}; target <= 0.50x {target}",
                    c.name(),
                    ratios(c, Contender::Coturn, size).show(2),
                    verdict(ratio, "less server CPU", "more server CPU")
                ));
                if c == Contender::Pierce {
                    head.push(format!("cpu_ratio_vs_coturn_{size}B={ratio:.2}"));
                } else {
                    result.push(format!("baseline_cpu_ratio_vs_coturn_{size}B={ratio:.2}"));
                }
            }
            let change = median(Contender::Pierce) / median(Contender::Baseline);
            if change.is_finite() {
                ratio_lines.push(format!(
                    "{size:5} B: pierce/baseline server CPU per datagram {change:.2}x (per-round \
                     ratios {})",
                    ratios(Contender::Pierce, Contender::Baseline, size).show(2)
                ));
                result.push(format!("pierce_vs_baseline_{size}B={change:.2}"));
            }
        }
        println!();
        for l in &ratio_lines {
            println!("{l}");
        }
        head.extend(result);
        println!("\nRESULT {} rate={} pairs={pairs}", head.join(" "), o.rate);
    }

    /// "N% less/more …", or no claim within 10%.
    fn verdict(ratio: f64, less: &str, more: &str) -> String {
        if (ratio - 1.0).abs() < 0.10 {
            "within 10%: no difference claimed".to_owned()
        } else if ratio < 1.0 {
            format!("{:.0}% {less}", 100.0 * (1.0 - ratio))
        } else {
            format!("{:.0}% {more}", 100.0 * (ratio - 1.0))
        }
    }

    fn drops_total(s: &[&Sample]) -> String {
        let server: u64 = s.iter().map(|s| s.server_socket_drops).sum();
        let generator: u64 = s.iter().map(|s| s.generator_socket_drops).sum();
        let inside: Option<u64> = s.iter().map(|s| s.server_dropped).sum();
        let mut out =
            format!("socket drops in the windows: server {server}, generator {generator}");
        if let Some(n) = inside {
            out.push_str(&format!("; dropped inside the server {n}"));
        }
        out
    }

    struct Stats {
        median: f64,
        min: f64,
        max: f64,
    }

    impl Stats {
        fn show(&self, decimals: usize) -> String {
            format!(
                "{:.*} [{:.*}-{:.*}]",
                decimals, self.median, decimals, self.min, decimals, self.max
            )
        }
    }

    fn stats(values: impl Iterator<Item = f64>) -> Stats {
        let mut v: Vec<f64> = values.collect();
        if v.is_empty() {
            return Stats {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    // ---- the knee: the highest rate without loss ------------------------------------------

    /// Why a probe failed.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Limit {
        /// Loss at the server (its sockets, or inside it), with the generator keeping up.
        Server,
        /// The generator offered less than asked, used all its cores, or its own receive
        /// sockets overflowed: the server was not shown to be the limit.
        Generator,
        /// Pierce's relay budgets dropped packets: the configuration, not the server's
        /// capacity (the pair count is too low for the rate).
        Budget,
    }

    impl Limit {
        fn name(self) -> &'static str {
            match self {
                Self::Server => "server",
                Self::Generator => "generator",
                Self::Budget => "relay budget",
            }
        }
    }

    /// A probe's verdict: `None` passes.
    fn verdict_of(s: &Sample, o: &Options) -> Option<Limit> {
        if s.budget_dropped.unwrap_or(0) > 0 {
            return Some(Limit::Budget);
        }
        let short = s.offered() < OFFERED_MIN * s.target;
        let lost = s.run_loss_pct() > o.loss_max_pct;
        // Pierce's senders put messages their congestion control holds back into one
        // datagram: then fewer datagrams than asked went through the server, and the rate is
        // not a datagram rate (coturn's generator sends exactly one message per datagram).
        let packed = s.held as f64 > PACKED_MAX * s.sent as f64;
        if !short && !lost && !packed {
            return None;
        }
        let server_drops = s.server_socket_drops + s.server_dropped.unwrap_or(0);
        if short
            || s.generator_cores() >= BUSY * s.generator_cores as f64
            || s.generator_socket_drops > server_drops
        {
            Some(Limit::Generator)
        } else {
            Some(Limit::Server)
        }
    }

    /// One contender's search for its knee at one size.
    struct Search {
        /// The highest rate that passed, with its sample.
        pass: Option<Sample>,
        /// The lowest rate that failed twice in a row, with the second sample and why.
        fail: Option<(Sample, Limit)>,
        /// A rate that failed once: probed again before it counts.
        repeat: Option<f64>,
        probes: usize,
    }

    impl Search {
        fn new() -> Self {
            Self {
                pass: None,
                fail: None,
                repeat: None,
                probes: 0,
            }
        }

        /// The next rate to probe, or `None` when the knee is known (to `--knee-precision`),
        /// beyond `--knee-to`, below `--knee-from` by four steps, or the probes are spent.
        fn next(&self, o: &Options) -> Option<f64> {
            if self.probes >= o.knee_probes {
                return None;
            }
            if self.repeat.is_some() {
                return self.repeat;
            }
            let round = |r: f64| (r / 100.0).round().max(1.0) * 100.0;
            match (self.pass.as_ref().map(|s| s.target), self.fail.as_ref()) {
                (None, None) => Some(round(o.knee_from)),
                (Some(p), None) => (p < o.knee_to).then(|| round((p * o.knee_step).min(o.knee_to))),
                (None, Some((f, _))) => {
                    let r = round(f.target / o.knee_step);
                    (r >= o.knee_from / o.knee_step.powi(4) && r < f.target).then_some(r)
                }
                (Some(p), Some((f, _))) => {
                    let r = round((p * f.target).sqrt());
                    (f.target / p > 1.0 + o.knee_precision && r > p && r < f.target).then_some(r)
                }
            }
        }

        fn record(&mut self, s: Sample, o: &Options) {
            self.probes += 1;
            let rate = s.target;
            match verdict_of(&s, o) {
                None => {
                    self.repeat = None;
                    if self.pass.as_ref().is_none_or(|p| p.target < rate) {
                        self.pass = Some(s);
                    }
                }
                // A budget drop is the configuration: no need to see it twice.
                Some(limit) if limit == Limit::Budget || self.repeat == Some(rate) => {
                    self.repeat = None;
                    if self.fail.as_ref().is_none_or(|f| f.0.target > rate) {
                        self.fail = Some((s, limit));
                    }
                }
                Some(_) => self.repeat = Some(rate),
            }
        }

        /// The knee: the highest passing rate (0 if none passed).
        fn knee(&self) -> f64 {
            self.pass.as_ref().map_or(0.0, |s| s.target)
        }

        /// Whether the generator (or the configuration), not the server, bounds the knee.
        fn limit(&self, o: &Options) -> &'static str {
            match &self.fail {
                Some((_, l)) => l.name(),
                None if self.knee() >= o.knee_to => "none up to --knee-to",
                None => "unknown (out of probes)",
            }
        }

        fn describe(&self, o: &Options) -> String {
            let pass = match &self.pass {
                Some(s) => format!(
                    "{:.0}/s (relayed {:.0}/s, loss {:.3}%, server {:.0}% of a core ({:.0}% \
                     system), generator {:.0}% of {} core(s))",
                    s.target,
                    s.relayed(),
                    s.run_loss_pct(),
                    100.0 * s.server_cores(),
                    s.sys_pct(),
                    100.0 * s.generator_cores(),
                    s.generator_cores
                ),
                None => "none passed".to_owned(),
            };
            let fail = match &self.fail {
                Some((s, l)) => format!(
                    "; fails at {:.0}/s (offered {:.0}/s, loss {:.3}%, {}): limit {}",
                    s.target,
                    s.offered(),
                    s.run_loss_pct(),
                    s.drops(),
                    l.name()
                ),
                None => format!("; limit {}", self.limit(o)),
            };
            format!("{pass}{fail} [{} probes]", self.probes)
        }
    }

    /// Probes every entry's knee at `size`, alternating the entries from probe to probe.
    fn find_knees(entries: &mut [Entry], size: usize, o: &Options) -> Vec<(Contender, Search)> {
        let mut searches: Vec<(Contender, Search)> = entries
            .iter()
            .map(|e| (e.contender, Search::new()))
            .collect();
        loop {
            let mut any = false;
            for e in entries.iter() {
                let search = &mut searches
                    .iter_mut()
                    .find(|(c, _)| *c == e.contender)
                    .unwrap()
                    .1;
                let Some(rate) = search.next(o) else { continue };
                any = true;
                let s = measure(e, rate, size, search.probes, o);
                let verdict = match verdict_of(&s, o) {
                    None => "pass".to_owned(),
                    Some(l) if search.repeat == Some(rate) || l == Limit::Budget => {
                        format!("loss again: {} limit", l.name())
                    }
                    Some(l) => format!("loss ({} limit?): probed again", l.name()),
                };
                println!(
                    "  {:9} {:4} B probe {:2} at {:7.0}/s: offered {:7.0}/s relayed {:7.0}/s \
                     ({:.2}% held and packed) loss {:6.3}% | server {:3.0}% of a core ({:2.0}% system), {:5.2} us/datagram \
                     | generator {:3.0}% of {} core(s), {:5.2} us/datagram | {} | {verdict}",
                    e.contender.name(),
                    size,
                    search.probes,
                    rate,
                    s.offered(),
                    s.relayed(),
                    100.0 * s.held as f64 / s.sent.max(1) as f64,
                    s.run_loss_pct(),
                    100.0 * s.server_cores(),
                    s.sys_pct(),
                    s.server_us(),
                    100.0 * s.generator_cores(),
                    s.generator_cores,
                    s.generator_us(),
                    s.drops()
                );
                search.record(s, o);
            }
            if !any {
                break;
            }
            entries.rotate_left(1);
        }
        searches
    }

    /// Pairs enough for the relay budgets: every sender at most half its budget at the
    /// highest rate probed, with the largest payload.
    fn knee_pairs(o: &Options) -> usize {
        let c = server_config();
        let wire = o.sizes.iter().max().unwrap() + PIERCE_OVERHEAD;
        let per_sender = 0.5 * f64::from(c.relay_rate_per_client) / wire as f64;
        ((o.knee_to / per_sender).ceil() as usize).max(80)
    }

    /// The relay budgets of `pierce server` (its defaults), against the load at the highest
    /// rate probed: printed, and the rates beyond the server-wide budget left out.
    fn budgets(o: &Options, pairs: usize) {
        let c = server_config();
        let wire = o.sizes.iter().max().unwrap() + PIERCE_OVERHEAD;
        let mib = |b: u32| f64::from(b) / f64::from(1u32 << 20);
        let at = |rate: f64| rate * wire as f64 / f64::from(1u32 << 20);
        println!(
            "pierce relay budgets (core/src/config.rs defaults, what `pierce server` runs): \
             {:.0} MiB/s per client (burst {:.2} MiB), {:.0} MiB/s per group, {:.0} MiB/s in \
             all; at --knee-to {:.0}/s with {} B on the wire: {:.2} MiB/s per sender ({} \
             pairs, one group each), {:.0} MiB/s in all",
            mib(c.relay_rate_per_client),
            mib(c.relay_burst_per_client),
            mib(c.relay_rate_per_group),
            mib(c.relay_rate_total),
            o.knee_to,
            wire,
            at(o.knee_to / pairs as f64),
            pairs,
            at(o.knee_to)
        );
        if at(o.knee_to / pairs as f64) > 0.8 * mib(c.relay_rate_per_client)
            || at(o.knee_to) > 0.8 * mib(c.relay_rate_total)
        {
            println!(
                "  warning: the highest probes come within 80% of a budget; a knee marked \
                 `relay budget` is the configuration, not the server"
            );
        }
    }

    fn server_config() -> ServerConfig {
        ServerConfig::new(SecretKey::from_bytes([7; 32]))
    }

    fn no_loss_rule(o: &Options) {
        println!(
            "no loss: at most {}% of the datagrams sent in the run (warm-up and window) missing \
             at the receivers after a {} ms drain (Pierce: messages delivered), the generator offering at least {:.0}% of the target \
             rate, at most {}% of the messages held back by the sender's congestion control \
             and packed with later ones (one message, one datagram, as for coturn), and no relay-budget drop in the server; a failing rate is probed again and \
             fails only twice in a row. A failure is the generator's when it offered too \
             little, used >= {:.0}% of its cores, or its own sockets dropped more than the \
             server's; else the server's. Search: from {:.0}/s up by x{} to {:.0}/s, then \
             bisection to {:.0}%, at most {} probes; {} s warm-up, {} s window per probe",
            o.loss_max_pct,
            DRAIN.as_millis(),
            100.0 * OFFERED_MIN,
            100.0 * PACKED_MAX,
            100.0 * BUSY,
            o.knee_from,
            o.knee_step,
            o.knee_to,
            100.0 * o.knee_precision,
            o.knee_probes,
            o.warmup.as_secs_f64(),
            o.window.as_secs_f64()
        );
    }

    fn pinning_note(pin: bool) {
        if pin {
            println!(
                "pinned: the servers' threads on CPU 0, the generators' threads on CPU{} (the \
                 kernel's loopback work runs on the sending side's CPU)",
                if cpus() > 2 {
                    format!("s 1-{}", cpus() - 1)
                } else {
                    " 1".to_owned()
                }
            );
        } else {
            println!(
                "not pinned: servers and generators share the {} CPUs as the scheduler likes",
                cpus()
            );
        }
    }

    fn knee_mode(o: &Options) {
        let turnserver = need_turnserver();
        let tmp = temp_dir();
        let pairs = o.pairs.unwrap_or_else(|| knee_pairs(o));
        let pin = o.pin();
        let pierce = PierceServer::start(&o.server_bin, Some(1)).unwrap_or_else(|e| panic!("{e}"));
        let coturn = Coturn::start(&turnserver, &tmp);
        println!(
            "relay_vs_coturn --knee: the highest rate without loss of `pierce server` (one \
             relay thread, {}, pid {}) and coturn {} (--relay-threads=1, pid {}), {pairs} pairs, \
             all due datagrams of a {} ms tick in one burst",
            o.server_bin.display(),
            pierce.child.id(),
            coturn.version,
            coturn.child.id(),
            TICK.as_millis()
        );
        no_loss_rule(o);
        budgets(o, pairs);
        pinning_note(pin);
        let want = |c| o.only.is_none_or(|only| only == c);
        let mut entries = Vec::new();
        if want(Contender::Pierce) {
            entries.push(pierce.entry(Contender::Pierce, pairs));
        }
        if want(Contender::Coturn) {
            entries.push(coturn.entry(pairs));
        }
        pin_all(&entries, pin);
        for e in &entries {
            let s = measure(e, o.knee_from, o.sizes[0], 0, o);
            println!("  warm-up (discarded): {}", s.line());
        }
        let mut result = Vec::new();
        let mut summary = Vec::new();
        for &size in &o.sizes {
            let knees = find_knees(&mut entries, size, o);
            let of = |c| knees.iter().find(|(k, _)| *k == c).map(|(_, s)| s);
            for (c, s) in &knees {
                summary.push(format!("{size:5} B {:8} knee {}", c.name(), s.describe(o)));
                result.push(format!("knee_{}_{size}B={:.0}", c.name(), s.knee()));
                result.push(format!(
                    "knee_limit_{}_{size}B={}",
                    c.name(),
                    s.limit(o).split(' ').next().unwrap()
                ));
            }
            if let (Some(p), Some(t)) = (of(Contender::Pierce), of(Contender::Coturn)) {
                let ratio = p.knee() / t.knee();
                let bound = match (is_generator(p), is_generator(t)) {
                    (true, false) => " (a lower bound: the generator, not pierce, was the limit)",
                    (false, true) => " (an upper bound: the generator, not coturn, was the limit)",
                    (true, true) => " (both generator-bound: no claim about the servers)",
                    (false, false) => "",
                };
                let target = if ratio >= 2.0 { "met" } else { "not met" };
                summary.push(format!(
                    "{size:5} B: knee pierce/coturn {ratio:.2}x{bound}; {}; target >= 2x {target}",
                    verdict(ratio, "lower", "higher")
                ));
                result.insert(0, format!("knee_ratio_{size}B={ratio:.2}"));
            }
        }
        drop(entries);
        print_summary(&summary, &result, pairs, pin, o);
        drop(pierce);
        drop(coturn);
        let _ = std::fs::remove_dir_all(&tmp);
    }

    fn is_generator(s: &Search) -> bool {
        matches!(s.fail, Some((_, Limit::Generator | Limit::Budget)))
    }

    // ---- scaling: pierce server --threads 1 against --threads N ----------------------------

    fn scaling_mode(o: &Options) {
        let pairs = o.pairs.unwrap_or_else(|| knee_pairs(o));
        let pin = o.pin();
        println!(
            "relay_vs_coturn --scaling: the highest rate without loss of `pierce server \
             --threads N` for N in {:?} ({}), {pairs} pairs, all due datagrams of a {} ms tick \
             in one burst; {} CPUs, shared by the servers and the generator",
            o.scaling_threads,
            o.server_bin.display(),
            TICK.as_millis(),
            cpus()
        );
        no_loss_rule(o);
        budgets(o, pairs);
        pinning_note(pin);
        let mut servers = Vec::new();
        for &n in &o.scaling_threads {
            match PierceServer::start(&o.server_bin, Some(n)) {
                Ok(s) => {
                    println!("--threads {n}: pid {}", s.child.id());
                    servers.push((n, s));
                }
                Err(e) => println!("--threads {n}: cannot run: {e}"),
            }
        }
        let mut entries: Vec<Entry> = servers
            .iter()
            .map(|(n, s)| s.entry(Contender::Threads(*n), pairs))
            .collect();
        pin_all(&entries, pin);
        for e in &entries {
            let s = measure(e, o.knee_from, o.sizes[0], 0, o);
            println!("  warm-up (discarded): {}", s.line());
        }
        let mut result = Vec::new();
        let mut summary = Vec::new();
        for &size in &o.sizes {
            let knees = find_knees(&mut entries, size, o);
            for (c, s) in &knees {
                let Contender::Threads(n) = c else {
                    unreachable!()
                };
                summary.push(format!("{size:5} B --threads {n}: knee {}", s.describe(o)));
                if let Some(p) = &s.pass {
                    let machine = (p.server_cores() + p.generator_cores()) / cpus() as f64;
                    summary.push(format!(
                        "{:18}at the knee: server {:.2} cores, generator {:.2} cores, together \
                         {:.0}% of the machine; {:.0} datagrams/s per server core",
                        "",
                        p.server_cores(),
                        p.generator_cores(),
                        100.0 * machine,
                        p.relayed() / p.server_cores().max(1e-9)
                    ));
                    result.push(format!(
                        "scaling_machine_pct_t{n}_{size}B={:.0}",
                        100.0 * machine
                    ));
                    result.push(format!(
                        "scaling_generator_cores_t{n}_{size}B={:.2}",
                        p.generator_cores()
                    ));
                }
                result.push(format!("scaling_knee_t{n}_{size}B={:.0}", s.knee()));
            }
            if let [(_, one), .., (Contender::Threads(n), many)] = &knees[..] {
                let ratio = many.knee() / one.knee();
                let saturated = many.pass.as_ref().is_some_and(|p| {
                    p.server_cores() + p.generator_cores() >= BUSY * cpus() as f64
                });
                let note = if saturated {
                    format!(
                        "; at the --threads {n} knee the machine is saturated (servers plus \
                         generator use all {} CPUs): the ratio is bounded by the machine, not \
                         the server",
                        cpus()
                    )
                } else if is_generator(many) || is_generator(one) {
                    "; a knee was bounded by the generator: no claim about the server".to_owned()
                } else {
                    String::new()
                };
                summary.push(format!(
                    "{size:5} B: knee --threads {n} / --threads 1 = {ratio:.2}x ({}){note}",
                    verdict(ratio, "lower", "higher")
                ));
                result.insert(0, format!("scaling_ratio_t{n}_{size}B={ratio:.2}"));
            }
        }
        drop(entries);
        print_summary(&summary, &result, pairs, pin, o);
    }

    /// The knee and scaling modes' last lines: the summary, then `RESULT`.
    fn print_summary(summary: &[String], result: &[String], pairs: usize, pin: bool, o: &Options) {
        println!();
        for l in summary {
            println!("{l}");
        }
        println!(
            "\nRESULT {} pairs={pairs} pinned={pin} loss_max_pct={}",
            result.join(" "),
            o.loss_max_pct
        );
    }

    // ---- processes, clocks, sockets and CPUs ------------------------------------------------

    fn cpu_clock(pid: u32) -> libc::clockid_t {
        let mut id: libc::clockid_t = 0;
        // SAFETY: clock_getcpuclockid writes one clockid_t.
        let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut id) };
        assert_eq!(rc, 0, "no CPU clock for pid {pid}");
        id
    }

    fn read_clock(id: libc::clockid_t) -> Duration {
        // SAFETY: an all-zero timespec is valid; clock_gettime writes one.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::clock_gettime(id, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// (utime, stime) of a process in clock ticks, from `/proc/<pid>/stat`.
    fn proc_ticks(pid: u32) -> (u64, u64) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state); utime is field 14, stime field 15.
        (f[11].parse().unwrap(), f[12].parse().unwrap())
    }

    /// Voluntary context switches of all of a process's threads, from
    /// `/proc/<pid>/task/*/status`.
    fn sleeps(pid: u32) -> u64 {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        total
    }

    /// The inodes of a process's sockets, from `/proc/<pid>/fd`.
    fn socket_inodes(pid: u32) -> HashSet<u64> {
        let mut set = HashSet::new();
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
        {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|l| l.strip_suffix(']'))
            {
                set.insert(inode.parse().unwrap());
            }
        }
        set
    }

    /// Datagrams each UDP socket (by inode) dropped since it was opened (receive buffer
    /// full), from `/proc/net/udp` and `/proc/net/udp6`.
    fn udp_drops() -> std::collections::HashMap<u64, u64> {
        let mut map = std::collections::HashMap::new();
        for table in ["/proc/net/udp", "/proc/net/udp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
                if let (Some(inode), Some(drops)) = (f.get(9), f.get(12)) {
                    if let (Ok(i), Ok(d)) = (inode.parse(), drops.parse()) {
                        map.insert(i, d);
                    }
                }
            }
        }
        map
    }

    /// The CPUs this process may run on.
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: an all-zero cpu_set_t is the empty set; sched_getaffinity writes one.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(
            rc,
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: i is below CPU_SETSIZE.
            .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
            .collect()
    }

    fn cpus() -> usize {
        allowed_cpus().len()
    }

    /// Lets thread `tid` run on `cpus` only.
    fn set_affinity(tid: libc::pid_t, cpus: &[usize]) {
        // SAFETY: an all-zero cpu_set_t is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus {
            // SAFETY: c comes from allowed_cpus(), below CPU_SETSIZE.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        // SAFETY: set is a valid cpu_set_t of the size given.
        let rc = unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            eprintln!(
                "relay_vs_coturn: sched_setaffinity({tid}): {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// Every thread of process `pid` on `cpus` (threads it starts later inherit it).
    fn pin_process(pid: u32, cpus: &[usize]) {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            if let Ok(tid) = task.file_name().to_string_lossy().parse() {
                set_affinity(tid, cpus);
            }
        }
    }

    /// With `pin`, the servers on the first allowed CPU and the generators on the others;
    /// without, everything on every allowed CPU.
    fn pin_all(entries: &[Entry], pin: bool) {
        let all = allowed_cpus();
        let (servers, generators) = if pin {
            (all[..1].to_vec(), all[1..].to_vec())
        } else {
            (all.clone(), all)
        };
        for e in entries {
            pin_process(e.pid, &servers);
            e.generator.pin(&generators);
        }
    }

    // ---- the servers -------------------------------------------------------------------------

    /// A command whose process gets SIGTERM when the bench dies, however it dies.
    fn child_command(bin: &Path) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(bin);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        cmd
    }

    fn find_on_path(name: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }

    /// Drains a child's output into the void, so a chatty server never blocks on a full pipe.
    fn drain(mut r: impl Read + Send + 'static) {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        });
    }

    /// The counters of one of `pierce server`'s JSON stats lines that the bench uses.
    #[derive(Clone, Debug, Default)]
    struct StatsLine {
        relayed: u64,
        dropped: u64,
        /// Drops by the relay budgets (per client, group, server) and full relay queues.
        relay_rate: u64,
        queue_full: u64,
        /// `None` from a build whose stats line has no allocation count.
        allocations: Option<u64>,
    }

    fn parse_stats(line: &str) -> Option<StatsLine> {
        if !line.starts_with(r#"{"event":"stats","#) {
            return None;
        }
        let field = |k: &str| -> Option<u64> {
            let key = format!("\"{k}\":");
            let at = line.find(&key)? + key.len();
            let end = line[at..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(line.len(), |e| at + e);
            line[at..end].parse().ok()
        };
        Some(StatsLine {
            relayed: field("relayed_packets")?,
            dropped: field("dropped")?,
            relay_rate: field("relay_rate").unwrap_or(0),
            queue_full: field("queue_full").unwrap_or(0),
            allocations: field("allocations"),
        })
    }

    /// The next stats line (one a second).
    fn next_stats(rx: &Receiver<StatsLine>) -> StatsLine {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) => panic!("no stats line from pierce server in 5 s"),
            Err(RecvTimeoutError::Disconnected) => panic!("pierce server stopped"),
        }
    }

    struct PierceServer {
        child: Child,
        addr: SocketAddr,
        key: PublicKey,
        stats: Arc<Mutex<Receiver<StatsLine>>>,
    }

    impl PierceServer {
        /// Starts `bin server` (with `--threads N` when given); what went wrong if it exits
        /// before its ready line.
        fn start(bin: &Path, threads: Option<usize>) -> Result<Self, String> {
            Self::start_with(bin, threads, &[])
        }

        /// As [`PierceServer::start`], with `extra` flags.
        fn start_with(
            bin: &Path,
            threads: Option<usize>,
            extra: &[String],
        ) -> Result<Self, String> {
            let mut cmd = child_command(bin);
            cmd.args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--json",
                "--stats-every",
                "1",
            ]);
            if let Some(n) = threads {
                cmd.args(["--threads", &n.to_string()]);
            }
            cmd.args(extra);
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            // Its stderr goes to ours, and is kept for the error below.
            let err = BufReader::new(child.stderr.take().unwrap());
            let kept = Arc::new(Mutex::new(String::new()));
            let k = kept.clone();
            let err_thread = std::thread::spawn(move || {
                for l in err.lines().map_while(Result::ok) {
                    eprintln!("pierce server: {l}");
                    k.lock().unwrap().push_str(&l);
                }
            });
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            if line.is_empty() {
                let status = child.wait().unwrap();
                let _ = err_thread.join();
                return Err(format!(
                    "{} server exited ({status}) before listening: {}",
                    bin.display(),
                    kept.lock().unwrap()
                ));
            }
            let field = |name: &str| {
                let key = format!("\"{name}\":\"");
                let at = line
                    .find(&key)
                    .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                    + key.len();
                line[at..at + line[at..].find('"').unwrap()].to_owned()
            };
            let addr = field("addr").parse().unwrap();
            let key = PublicKey::from_hex(&field("public_key")).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for l in out.lines().map_while(Result::ok) {
                    if let Some(s) = parse_stats(&l) {
                        let _ = tx.send(s);
                    }
                }
            });
            Ok(Self {
                child,
                addr,
                key,
                stats: Arc::new(Mutex::new(rx)),
            })
        }

        fn entry(&self, contender: Contender, pairs: usize) -> Entry {
            Entry {
                contender,
                generator: Generator::pierce(pairs, self.addr, self.key),
                pid: self.child.id(),
                stats: Some(self.stats.clone()),
            }
        }
    }

    impl Drop for PierceServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    struct Coturn {
        child: Child,
        addr: SocketAddr,
        version: String,
        flags: String,
    }

    impl Coturn {
        fn start(bin: &Path, tmp: &Path) -> Self {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let t = |f: &str| tmp.join(f).display().to_string();
            let args = vec![
                "-n".to_owned(),
                "--listening-ip=127.0.0.1".to_owned(),
                "--relay-ip=127.0.0.1".to_owned(),
                format!("--listening-port={port}"),
                "--relay-threads=1".to_owned(),
                "--allow-loopback-peers".to_owned(),
                "--no-auth".to_owned(),
                "--no-tcp".to_owned(),
                "--no-tls".to_owned(),
                "--no-dtls".to_owned(),
                "--no-tcp-relay".to_owned(),
                "--no-cli".to_owned(),
                "--no-rfc5780".to_owned(),
                format!("--db={}", t("turndb")),
                format!("--pidfile={}", t("turnserver.pid")),
                format!("--log-file={}", t("turn.log")),
                "--simple-log".to_owned(),
            ];
            let version = Command::new(bin)
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            let mut child = child_command(bin)
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            drain(child.stdout.take().unwrap());
            drain(child.stderr.take().unwrap());
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // Ready when it answers an Allocate (the allocation is released right away).
            let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
            let start = Instant::now();
            loop {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "turnserver did not answer on {addr}; log: {}",
                    std::fs::read_to_string(tmp.join("turn.log")).unwrap_or_default()
                );
                if let Some(child_status) = child.try_wait().unwrap() {
                    panic!("turnserver exited: {child_status}");
                }
                if turn::allocate(&probe, addr, 1).is_ok() {
                    let _ = turn::request(&probe, addr, turn::REFRESH, &[turn::lifetime(0)], 3);
                    break;
                }
            }
            Self {
                child,
                addr,
                version,
                flags: format!("turnserver {}", args.join(" ")),
            }
        }

        fn entry(&self, pairs: usize) -> Entry {
            Entry {
                contender: Contender::Coturn,
                generator: Generator::coturn(pairs, self.addr),
                pid: self.child.id(),
                stats: None,
            }
        }
    }

    impl Drop for Coturn {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    // ---- the load generators -----------------------------------------------------------------

    /// What the main thread tells a generator's workers.
    #[derive(Default)]
    struct Control {
        running: AtomicBool,
        size: AtomicU64,
        /// Datagrams/s of the whole generator, as `f64` bits.
        rate: AtomicU64,
        /// Bumped at every start and stop: workers restart their pacing from it.
        epoch: AtomicU64,
        stop: AtomicBool,
    }

    /// Totals over a generator's workers.
    #[derive(Default)]
    struct Counters([AtomicU64; 8]);

    impl Counters {
        /// Datagrams the senders sent (Pierce: messages handed to `Client::send`).
        const SENT: usize = 0;
        /// Datagrams that reached the receivers.
        const RECEIVED: usize = 1;
        /// Datagrams that came back to the senders (Pierce: relayed acks; TURN: answers to
        /// refreshes).
        const BACK: usize = 2;
        /// Bytes of the datagrams that reached the receivers.
        const WIRE_BYTES: usize = 3;
        /// Messages delivered to the receivers' applications (TURN: one per datagram).
        const MESSAGES: usize = 4;
        /// Anything unexpected: errors, lost sessions, failed requests.
        const PROBLEMS: usize = 5;
        /// Endpoints set up and ready.
        const READY: usize = 6;
        /// Pierce: messages that did not leave in a datagram of their own at once (the
        /// sender's congestion control held them; they leave later, packed with others).
        const HELD: usize = 7;

        fn get(&self, i: usize) -> u64 {
            self.0[i].load(Ordering::Relaxed)
        }

        fn snapshot(&self) -> [u64; 8] {
            std::array::from_fn(|i| self.get(i))
        }
    }

    /// A worker's counts since it last published them: the shared atomics are touched once
    /// per wakeup, not once per datagram.
    #[derive(Default)]
    struct Local([u64; 8]);

    impl Local {
        fn add(&mut self, i: usize, n: u64) {
            self.0[i] += n;
        }

        fn publish(&mut self, cnt: &Counters) {
            for (i, n) in self.0.iter_mut().enumerate() {
                if *n > 0 {
                    cnt.0[i].fetch_add(*n, Ordering::Relaxed);
                    *n = 0;
                }
            }
        }
    }

    /// A worker thread's id and CPU clock.
    type Threads = Mutex<Vec<(libc::pid_t, libc::clockid_t)>>;

    /// Called first by every worker: its CPU time is the generator's.
    fn register(threads: &Threads) {
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_getcpuclockid writes one clockid_t for the calling thread.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        assert_eq!(rc, 0, "pthread_getcpuclockid");
        threads.lock().unwrap().push((tid, clock));
    }

    struct Generator {
        control: Arc<Control>,
        counters: Arc<Counters>,
        threads: Arc<Threads>,
        /// CPUs the workers may run on.
        cores: std::cell::Cell<usize>,
        workers: Vec<JoinHandle<()>>,
    }

    impl Drop for Generator {
        fn drop(&mut self) {
            self.control.stop.store(true, Ordering::SeqCst);
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }

    impl Generator {
        fn new(
            workers: Vec<JoinHandle<()>>,
            control: Arc<Control>,
            counters: Arc<Counters>,
            threads: Arc<Threads>,
        ) -> Self {
            let g = Self {
                control,
                counters,
                threads,
                cores: std::cell::Cell::new(cpus()),
                workers,
            };
            while g.threads.lock().unwrap().len() < g.workers.len() {
                std::thread::sleep(Duration::from_millis(1));
            }
            g
        }

        /// Starts offering `rate` datagrams/s of `size` bytes.
        fn run(&self, rate: f64, size: usize) {
            self.control.size.store(size as u64, Ordering::SeqCst);
            self.control.rate.store(rate.to_bits(), Ordering::SeqCst);
            self.control.running.store(true, Ordering::SeqCst);
            self.control.epoch.fetch_add(1, Ordering::SeqCst);
        }

        /// Stops sending (the clients stay connected).
        fn idle(&self) {
            self.control.running.store(false, Ordering::SeqCst);
            self.control.epoch.fetch_add(1, Ordering::SeqCst);
        }

        /// CPU time of the workers so far.
        fn cpu(&self) -> Duration {
            let threads = self.threads.lock().unwrap();
            threads.iter().map(|&(_, c)| read_clock(c)).sum()
        }

        fn pin(&self, cpus: &[usize]) {
            for &(tid, _) in self.threads.lock().unwrap().iter() {
                set_affinity(tid, cpus);
            }
            self.cores.set(cpus.len());
        }

        fn cores(&self) -> usize {
            self.cores.get()
        }

        fn wait_ready(&self, want: u64, what: &str) {
            let start = Instant::now();
            while self.counters.get(Counters::READY) < want {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{} of {want} {what} after 60 s ({} problems)",
                    self.counters.get(Counters::READY),
                    self.counters.get(Counters::PROBLEMS)
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// A worker's pacing: every tick (1 ms from the start of a run), each sender sends what is
    /// due by then, all of the worker's senders back to back. Sender `i` of `n` is `i/n` of an
    /// interval late, so the senders spread over the ticks.
    struct Pacing {
        epoch: u64,
        running: bool,
        size: usize,
        /// Datagrams/s per sender.
        rate: f64,
        start: Instant,
        next_tick: Instant,
    }

    impl Pacing {
        fn new() -> Self {
            let now = Instant::now();
            Self {
                epoch: u64::MAX,
                running: false,
                size: 0,
                rate: 0.0,
                start: now,
                next_tick: now,
            }
        }

        /// Follows a start or stop of the main thread's; true when there was one (the senders
        /// restart their counts).
        fn update(&mut self, ctl: &Control, pairs: usize, now: Instant) -> bool {
            let epoch = ctl.epoch.load(Ordering::SeqCst);
            if epoch == self.epoch {
                return false;
            }
            self.epoch = epoch;
            self.running = ctl.running.load(Ordering::SeqCst);
            self.size = ctl.size.load(Ordering::SeqCst) as usize;
            self.rate = f64::from_bits(ctl.rate.load(Ordering::SeqCst)) / pairs as f64;
            self.start = now;
            self.next_tick = now;
            true
        }

        /// When a tick is due: the time of the latest one since the start (a late worker
        /// catches up in one burst).
        fn tick(&mut self, now: Instant) -> Option<f64> {
            if !self.running || now < self.next_tick {
                return None;
            }
            let ticks = ((now - self.start).as_nanos() / TICK.as_nanos()) as u32;
            self.next_tick = self.start + TICK * (ticks + 1);
            Some((TICK * ticks).as_secs_f64())
        }

        /// Datagrams due from a sender with `phase` that has sent `done`, at `t`.
        fn due(&self, t: f64, phase: f64, done: u64) -> u64 {
            let want = (t * self.rate - phase).max(0.0).floor() as u64;
            want.saturating_sub(done)
        }

        /// When to wake up at the latest.
        fn wake(&self, now: Instant) -> Instant {
            if self.running {
                self.next_tick
            } else {
                now + IDLE_TICK
            }
        }
    }

    /// A loopback address of its own for pair `p` (all of 127/8 is loopback on Linux), as
    /// players have their own addresses: Pierce's per-IP handshake limit (64 at once) would
    /// otherwise hold back the clients past the 64th.
    fn pair_addr(p: usize) -> SocketAddr {
        SocketAddr::from(([127, 1, (p / 250) as u8, (p % 250 + 1) as u8], 0))
    }

    /// Datagrams one `recvmmsg` reads at most.
    const SLOTS: usize = 16;
    const SLOT_BYTES: usize = 2048;

    /// `recvmmsg` on a non-blocking socket: what is queued, up to [`SLOTS`], in one call. A
    /// short batch means the queue was empty, so draining a socket costs no extra call that
    /// ends in `EAGAIN` (a datagram arriving later raises a new readiness event).
    struct RecvBatch {
        bufs: Vec<[u8; SLOT_BYTES]>,
        addrs: Vec<libc::sockaddr_in>,
        lens: [usize; SLOTS],
    }

    impl RecvBatch {
        fn new() -> Self {
            Self {
                bufs: vec![[0; SLOT_BYTES]; SLOTS],
                // SAFETY: an all-zero sockaddr_in is valid.
                addrs: vec![unsafe { std::mem::zeroed() }; SLOTS],
                lens: [0; SLOTS],
            }
        }

        /// Reads what `socket` has queued (IPv4), up to [`SLOTS`]: how many (0: none).
        fn recv(&mut self, socket: &impl AsRawFd) -> std::io::Result<usize> {
            // SAFETY: all-zero iovecs and mmsghdrs are valid (null pointers, zero lengths).
            let mut iov: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
            for i in 0..SLOTS {
                iov[i].iov_base = self.bufs[i].as_mut_ptr().cast();
                iov[i].iov_len = SLOT_BYTES;
                let h = &mut hdrs[i].msg_hdr;
                h.msg_name = (&raw mut self.addrs[i]).cast();
                h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_iov = &raw mut iov[i];
                h.msg_iovlen = 1;
            }
            // SAFETY: every header points at a buffer and an address of this batch, alive
            // and of the lengths given, for the duration of the call.
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    SLOTS as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return if e.kind() == std::io::ErrorKind::WouldBlock {
                    Ok(0)
                } else {
                    Err(e)
                };
            }
            for (len, h) in self.lens.iter_mut().zip(&hdrs).take(n as usize) {
                *len = h.msg_len as usize;
            }
            Ok(n as usize)
        }

        fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
            let a = &self.addrs[i];
            let from = SocketAddr::from((
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ));
            (from, &self.bufs[i][..self.lens[i]])
        }

        /// Reads everything `socket` has queued, handing each datagram to `f`.
        fn drain(
            &mut self,
            socket: &impl AsRawFd,
            local: &mut Local,
            mut f: impl FnMut(SocketAddr, &[u8], &mut Local),
        ) {
            let mut errors = 0;
            loop {
                match self.recv(socket) {
                    Ok(n) => {
                        for i in 0..n {
                            let (from, d) = self.get(i);
                            f(from, d, local);
                        }
                        if n < SLOTS {
                            break;
                        }
                    }
                    Err(_) => {
                        local.add(Counters::PROBLEMS, 1);
                        errors += 1;
                        if errors > 3 {
                            break;
                        }
                    }
                }
            }
        }
    }

    // ---- Pierce's generator --------------------------------------------------------------

    struct PierceNode {
        client: Client,
        socket: mio::net::UdpSocket,
        sender: bool,
        room: String,
        peer: Option<HostId>,
        phase: f64,
        sent: u64,
    }

    impl PierceNode {
        fn deadline(&self) -> Option<Instant> {
            self.client.poll_timeout().map(|t| t.at)
        }
    }

    /// Datagrams sealed in one tick before they are sent, at most.
    const BURST: usize = 256;

    /// A tick's sealed datagrams, sent back to back once all are sealed (the TURN
    /// generator's pre-built datagrams leave the same way).
    struct Burst {
        buf: Vec<u8>,
        /// (node, length, destination) of each.
        items: Vec<(usize, usize, SocketAddr)>,
    }

    impl Burst {
        fn new() -> Self {
            Self {
                buf: vec![0; BURST * MAX_DATAGRAM_SIZE],
                items: Vec::with_capacity(BURST),
            }
        }

        /// Seals what node `i` has to send into the burst (sending the burst when it is
        /// full); how many datagrams that was.
        fn take(
            &mut self,
            nodes: &mut [PierceNode],
            i: usize,
            now: Instant,
            local: &mut Local,
        ) -> usize {
            let mut n = 0;
            loop {
                if self.items.len() == BURST {
                    self.send(nodes, local);
                }
                let at = self.items.len() * MAX_DATAGRAM_SIZE;
                let slot = &mut self.buf[at..at + MAX_DATAGRAM_SIZE];
                let Some(t) = nodes[i].client.poll_transmit(now, slot) else {
                    return n;
                };
                self.items.push((i, t.len, t.dst));
                n += 1;
            }
        }

        fn send(&mut self, nodes: &[PierceNode], local: &mut Local) {
            for (k, &(i, len, dst)) in self.items.iter().enumerate() {
                let at = k * MAX_DATAGRAM_SIZE;
                if nodes[i]
                    .socket
                    .send_to(&self.buf[at..at + len], dst)
                    .is_err()
                {
                    local.add(Counters::PROBLEMS, 1);
                }
            }
            self.items.clear();
        }
    }

    impl Generator {
        fn pierce(pairs: usize, server: SocketAddr, key: PublicKey) -> Self {
            let control = Arc::new(Control::default());
            let counters = Arc::new(Counters::default());
            let threads = Arc::new(Threads::default());
            let mut config = ClientConfig::default();
            config.direct_paths = false;
            config.server_key = Some(key);
            let config = Arc::new(config);
            let mut nodes: Vec<Vec<PierceNode>> = (0..WORKERS).map(|_| Vec::new()).collect();
            let now = Instant::now();
            for p in 0..pairs {
                for sender in [true, false] {
                    let mut client =
                        Client::new(config.clone(), pierce_mio::os_seed().unwrap(), now).unwrap();
                    client.connect(now, server, &[]).unwrap();
                    nodes[p % WORKERS].push(PierceNode {
                        client,
                        socket: mio::net::UdpSocket::bind(pair_addr(p)).unwrap(),
                        sender,
                        room: format!("bench-{p}"),
                        peer: None,
                        phase: p as f64 / pairs as f64,
                        sent: 0,
                    });
                }
            }
            let workers = nodes
                .into_iter()
                .map(|n| {
                    let (c, k, t) = (control.clone(), counters.clone(), threads.clone());
                    std::thread::spawn(move || pierce_worker(n, &c, &k, pairs, &t))
                })
                .collect();
            let g = Self::new(workers, control, counters, threads);
            g.wait_ready(2 * pairs as u64, "Pierce clients connected and paired");
            g
        }
    }

    /// One generator thread of Pierce clients, as a careful runtime drives them: each node's
    /// deadline is cached and asked again only after the node was touched; the thread sleeps
    /// until the earliest of them or the next tick; a readable socket is drained with
    /// `recvmmsg`, then its client's transmits and events are handled once.
    fn pierce_worker(
        mut nodes: Vec<PierceNode>,
        ctl: &Control,
        cnt: &Counters,
        pairs: usize,
        threads: &Threads,
    ) {
        register(threads);
        let mut poll = Poll::new().unwrap();
        for (i, n) in nodes.iter_mut().enumerate() {
            poll.registry()
                .register(&mut n.socket, Token(i), Interest::READABLE)
                .unwrap();
        }
        let mut events = Events::with_capacity(1024);
        let mut rx = RecvBatch::new();
        let mut tx = vec![0u8; MAX_DATAGRAM_SIZE];
        let mut burst = Burst::new();
        let payload = vec![0x5au8; MAX_SIZE];
        let mut pacing = Pacing::new();
        let mut local = Local::default();
        let mut deadlines: Vec<Option<Instant>> = nodes.iter().map(PierceNode::deadline).collect();
        while !ctl.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if pacing.update(ctl, pairs, now) {
                nodes.iter_mut().for_each(|n| n.sent = 0);
            }
            if let Some(t) = pacing.tick(now) {
                for i in 0..nodes.len() {
                    let n = &mut nodes[i];
                    let (true, Some(peer)) = (n.sender, n.peer) else {
                        continue;
                    };
                    let due = pacing.due(t, n.phase, n.sent);
                    for _ in 0..due {
                        let n = &mut nodes[i];
                        let message = &payload[..pacing.size];
                        if n.client
                            .send(now, peer, Channel::UNRELIABLE, message)
                            .is_err()
                        {
                            local.add(Counters::PROBLEMS, 1);
                        }
                        n.sent += 1;
                        local.add(Counters::SENT, 1);
                        // One message per datagram: sealed before the next is queued.
                        if burst.take(&mut nodes, i, now, &mut local) == 0 {
                            local.add(Counters::HELD, 1);
                        }
                    }
                    if due > 0 {
                        deadlines[i] = nodes[i].deadline();
                    }
                }
                burst.send(&nodes, &mut local);
            }
            let now = Instant::now();
            let mut wake = pacing.wake(now);
            for (i, n) in nodes.iter_mut().enumerate() {
                if deadlines[i].is_some_and(|d| d <= now) {
                    n.client.handle_timeout(now);
                    pierce_flush(n, now, &mut tx, &mut local);
                    pierce_events(n, now, &mut tx, &mut local);
                    deadlines[i] = n.deadline();
                }
                if let Some(d) = deadlines[i] {
                    wake = wake.min(d);
                }
            }
            local.publish(cnt);
            poll.poll(
                &mut events,
                Some(wake.saturating_duration_since(Instant::now())),
            )
            .unwrap();
            let now = Instant::now();
            for ev in events.iter() {
                let i = ev.token().0;
                let n = &mut nodes[i];
                let (client, sender) = (&mut n.client, n.sender);
                rx.drain(&n.socket, &mut local, |from, d, local| {
                    if sender {
                        local.add(Counters::BACK, 1);
                    } else {
                        local.add(Counters::RECEIVED, 1);
                        local.add(Counters::WIRE_BYTES, d.len() as u64);
                    }
                    client.handle_datagram(now, from, d);
                });
                pierce_flush(n, now, &mut tx, &mut local);
                pierce_events(n, now, &mut tx, &mut local);
                deadlines[i] = n.deadline();
            }
            local.publish(cnt);
        }
        for n in &mut nodes {
            n.client.disconnect(Instant::now(), 0);
            pierce_flush(n, Instant::now(), &mut tx, &mut local);
        }
    }

    fn pierce_flush(n: &mut PierceNode, now: Instant, tx: &mut [u8], local: &mut Local) {
        while let Some(t) = n.client.poll_transmit(now, tx) {
            if n.socket.send_to(&tx[..t.len], t.dst).is_err() {
                local.add(Counters::PROBLEMS, 1);
            }
        }
    }

    fn pierce_events(n: &mut PierceNode, now: Instant, tx: &mut [u8], local: &mut Local) {
        while let Some(e) = n.client.poll_event() {
            match e {
                ClientEvent::Connected { .. } => {
                    n.client.join_room(now, &n.room, "", true, 2).unwrap();
                    pierce_flush(n, now, tx, local);
                }
                ClientEvent::MemberJoined { member, .. }
                    if Some(member) != n.client.host_id() && n.peer.is_none() =>
                {
                    n.peer = Some(member);
                    local.add(Counters::READY, 1);
                }
                ClientEvent::PeerMessage { .. } => local.add(Counters::MESSAGES, 1),
                ClientEvent::Disconnected { reason } => {
                    eprintln!("relay_vs_coturn: a Pierce client was disconnected: {reason:?}");
                    local.add(Counters::PROBLEMS, 1);
                }
                ClientEvent::MemberLeft { .. } | ClientEvent::RoomFailed { .. } => {
                    eprintln!("relay_vs_coturn: unexpected {e:?}");
                    local.add(Counters::PROBLEMS, 1);
                }
                _ => {}
            }
        }
    }

    // ---- coturn's generator --------------------------------------------------------------

    struct TurnPair {
        a: mio::net::UdpSocket,
        b: mio::net::UdpSocket,
        /// The relayed addresses of `a`'s and `b`'s allocations.
        ra: SocketAddr,
        rb: SocketAddr,
        phase: f64,
        sent: u64,
    }

    impl Generator {
        fn coturn(pairs: usize, server: SocketAddr) -> Self {
            let control = Arc::new(Control::default());
            let counters = Arc::new(Counters::default());
            let threads = Arc::new(Threads::default());
            let mut sets: Vec<Vec<TurnPair>> = (0..WORKERS).map(|_| Vec::new()).collect();
            for p in 0..pairs {
                let (a, b) = (
                    UdpSocket::bind(pair_addr(p)).unwrap(),
                    UdpSocket::bind(pair_addr(p)).unwrap(),
                );
                let ra = turn::allocate(&a, server, 10).unwrap();
                let rb = turn::allocate(&b, server, 10).unwrap();
                turn::channel_bind(&a, server, rb).unwrap();
                turn::channel_bind(&b, server, ra).unwrap();
                for s in [&a, &b] {
                    s.set_nonblocking(true).unwrap();
                }
                sets[p % WORKERS].push(TurnPair {
                    a: mio::net::UdpSocket::from_std(a),
                    b: mio::net::UdpSocket::from_std(b),
                    ra,
                    rb,
                    phase: p as f64 / pairs as f64,
                    sent: 0,
                });
            }
            let workers = sets
                .into_iter()
                .map(|s| {
                    let (c, k, t) = (control.clone(), counters.clone(), threads.clone());
                    std::thread::spawn(move || turn_worker(s, server, &c, &k, pairs, &t))
                })
                .collect();
            Self::new(workers, control, counters, threads)
        }
    }

    fn turn_worker(
        mut pairs: Vec<TurnPair>,
        server: SocketAddr,
        ctl: &Control,
        cnt: &Counters,
        total_pairs: usize,
        threads: &Threads,
    ) {
        register(threads);
        let mut poll = Poll::new().unwrap();
        for (i, p) in pairs.iter_mut().enumerate() {
            let r = poll.registry();
            r.register(&mut p.a, Token(2 * i), Interest::READABLE)
                .unwrap();
            r.register(&mut p.b, Token(2 * i + 1), Interest::READABLE)
                .unwrap();
        }
        let mut events = Events::with_capacity(1024);
        let mut rx = RecvBatch::new();
        let mut frame = vec![0x5au8; 4 + MAX_SIZE];
        let mut pacing = Pacing::new();
        let mut local = Local::default();
        while !ctl.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if pacing.update(ctl, total_pairs, now) {
                pairs.iter_mut().for_each(|p| p.sent = 0);
                if pacing.running {
                    // Keep allocations, permissions and channels fresh for any run length
                    // (answers come back to the senders and are counted there).
                    for p in &pairs {
                        for (s, peer) in [(&p.a, p.rb), (&p.b, p.ra)] {
                            let bind = turn::message(turn::CHANNEL_BIND, &turn::bind_attrs(peer));
                            let refresh = turn::message(turn::REFRESH, &[turn::lifetime(600)]);
                            for m in [bind, refresh] {
                                let _ = s.send_to(&m, server);
                            }
                        }
                    }
                }
                frame[..2].copy_from_slice(&CHANNEL.to_be_bytes());
                frame[2..4].copy_from_slice(&(pacing.size as u16).to_be_bytes());
            }
            if let Some(t) = pacing.tick(now) {
                for p in pairs.iter_mut() {
                    for _ in 0..pacing.due(t, p.phase, p.sent) {
                        if p.a.send_to(&frame[..4 + pacing.size], server).is_err() {
                            local.add(Counters::PROBLEMS, 1);
                        }
                        p.sent += 1;
                        local.add(Counters::SENT, 1);
                    }
                }
            }
            local.publish(cnt);
            let wake = pacing.wake(now);
            poll.poll(
                &mut events,
                Some(wake.saturating_duration_since(Instant::now())),
            )
            .unwrap();
            for ev in events.iter() {
                let i = ev.token().0;
                let p = &pairs[i / 2];
                let (socket, receiver) = if i % 2 == 1 {
                    (&p.b, true)
                } else {
                    (&p.a, false)
                };
                rx.drain(socket, &mut local, |_, d, local| {
                    if receiver && d.len() >= 4 && (0x40..0x80).contains(&d[0]) {
                        local.add(Counters::RECEIVED, 1);
                        local.add(Counters::MESSAGES, 1);
                        local.add(Counters::WIRE_BYTES, d.len() as u64);
                    } else if turn::is_success(d) {
                        local.add(Counters::BACK, 1);
                    } else {
                        local.add(Counters::PROBLEMS, 1);
                    }
                });
            }
            local.publish(cnt);
        }
        for p in &pairs {
            for s in [&p.a, &p.b] {
                let _ = s.send_to(&turn::message(turn::REFRESH, &[turn::lifetime(0)]), server);
            }
        }
    }

    /// The few TURN (RFC 8656) messages the bench needs, without authentication.
    mod turn {
        use std::net::{IpAddr, SocketAddr, UdpSocket};
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::time::Duration;

        pub(super) const ALLOCATE: u16 = 0x0003;
        pub(super) const REFRESH: u16 = 0x0004;
        pub(super) const CHANNEL_BIND: u16 = 0x0009;
        const COOKIE: u32 = 0x2112_A442;
        const XOR_RELAYED_ADDRESS: u16 = 0x0016;
        const XOR_PEER_ADDRESS: u16 = 0x0012;
        const CHANNEL_NUMBER: u16 = 0x000C;
        const LIFETIME: u16 = 0x000D;
        const REQUESTED_TRANSPORT: u16 = 0x0019;
        const ERROR_CODE: u16 = 0x0009;

        static NEXT_TX: AtomicU64 = AtomicU64::new(1);

        pub(super) fn lifetime(secs: u32) -> (u16, Vec<u8>) {
            (LIFETIME, secs.to_be_bytes().to_vec())
        }

        pub(super) fn bind_attrs(peer: SocketAddr) -> Vec<(u16, Vec<u8>)> {
            let mut channel = super::CHANNEL.to_be_bytes().to_vec();
            channel.extend([0, 0]);
            vec![
                (CHANNEL_NUMBER, channel),
                (XOR_PEER_ADDRESS, xor_addr(peer)),
            ]
        }

        fn xor_addr(a: SocketAddr) -> Vec<u8> {
            let IpAddr::V4(ip) = a.ip() else {
                panic!("IPv4 only")
            };
            let mut v = vec![0, 1];
            v.extend((a.port() ^ (COOKIE >> 16) as u16).to_be_bytes());
            v.extend((u32::from(ip) ^ COOKIE).to_be_bytes());
            v
        }

        /// A request with a fresh transaction id.
        pub(super) fn message(kind: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
            let mut body = Vec::new();
            for (t, v) in attrs {
                body.extend(t.to_be_bytes());
                body.extend((v.len() as u16).to_be_bytes());
                body.extend(v);
                body.resize(body.len().next_multiple_of(4), 0);
            }
            let mut m = Vec::with_capacity(20 + body.len());
            m.extend(kind.to_be_bytes());
            m.extend((body.len() as u16).to_be_bytes());
            m.extend(COOKIE.to_be_bytes());
            let tx = NEXT_TX.fetch_add(1, Ordering::Relaxed);
            m.extend([0u8; 4]);
            m.extend(tx.to_be_bytes());
            m.extend(body);
            m
        }

        /// A STUN success response (class bits 10).
        pub(super) fn is_success(d: &[u8]) -> bool {
            d.len() >= 20 && d[0] & 0xc0 == 0 && u16::from_be_bytes([d[0], d[1]]) & 0x0110 == 0x0100
        }

        /// Sends a request until an answer with its transaction id comes (`tries` × 200 ms);
        /// the success response's attributes, or a description of the failure.
        pub(super) fn request(
            s: &UdpSocket,
            server: SocketAddr,
            kind: u16,
            attrs: &[(u16, Vec<u8>)],
            tries: usize,
        ) -> Result<Vec<(u16, Vec<u8>)>, String> {
            let m = message(kind, attrs);
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 1500];
            for _ in 0..tries {
                s.send_to(&m, server).map_err(|e| e.to_string())?;
                let Ok((len, _)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let d = &buf[..len];
                if len < 20 || d[8..20] != m[8..20] {
                    continue;
                }
                let mut attrs = Vec::new();
                let mut at = 20;
                while at + 4 <= len {
                    let t = u16::from_be_bytes([d[at], d[at + 1]]);
                    let l = usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]]));
                    let v = d.get(at + 4..at + 4 + l).ok_or("truncated attribute")?;
                    attrs.push((t, v.to_vec()));
                    at += 4 + l.next_multiple_of(4);
                }
                if is_success(d) {
                    return Ok(attrs);
                }
                let why = attrs
                    .iter()
                    .find(|a| a.0 == ERROR_CODE && a.1.len() >= 4)
                    .map(|a| {
                        let code = u16::from(a.1[2]) * 100 + u16::from(a.1[3]);
                        format!("{code} {}", String::from_utf8_lossy(&a.1[4..]))
                    })
                    .unwrap_or_default();
                return Err(format!("request {kind:#06x} refused: {why}"));
            }
            Err(format!("no answer to request {kind:#06x} from {server}"))
        }

        /// Allocates a UDP relay; its relayed address.
        pub(super) fn allocate(
            s: &UdpSocket,
            server: SocketAddr,
            tries: usize,
        ) -> Result<SocketAddr, String> {
            let attrs = request(
                s,
                server,
                ALLOCATE,
                &[(REQUESTED_TRANSPORT, vec![17, 0, 0, 0]), lifetime(600)],
                tries,
            )?;
            let v = attrs
                .iter()
                .find(|a| a.0 == XOR_RELAYED_ADDRESS)
                .ok_or("no XOR-RELAYED-ADDRESS")?;
            if v.1.len() < 8 || v.1[1] != 1 {
                return Err("not an IPv4 relayed address".to_owned());
            }
            let port = u16::from_be_bytes([v.1[2], v.1[3]]) ^ (COOKIE >> 16) as u16;
            let ip = u32::from_be_bytes([v.1[4], v.1[5], v.1[6], v.1[7]]) ^ COOKIE;
            Ok(SocketAddr::from((ip.to_be_bytes(), port)))
        }

        pub(super) fn channel_bind(
            s: &UdpSocket,
            server: SocketAddr,
            peer: SocketAddr,
        ) -> Result<(), String> {
            request(s, server, CHANNEL_BIND, &bind_attrs(peer), 10).map(|_| ())
        }
    }
}
