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
//! (before/after comparisons); `--only pierce|coturn|baseline` runs one (e.g. for `perf
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
    use std::io::{BufRead, BufReader, Read};
    use std::net::{SocketAddr, UdpSocket};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use mio::{Events, Interest, Poll, Token};
    use pierce_core::{
        Channel, Client, ClientConfig, ClientEvent, HostId, MAX_DATAGRAM_SIZE, PublicKey,
    };
    use pierce_core::{Endpoint as _, Events as _};

    /// Generator threads per contender.
    const WORKERS: usize = 2;
    /// Pacing tick of the senders.
    const TICK: Duration = Duration::from_millis(1);
    /// After a run, before the next: lets the last datagrams and acks arrive.
    const DRAIN: Duration = Duration::from_millis(300);
    /// The TURN channel every allocation binds to its partner's relayed address.
    const CHANNEL: u16 = 0x4000;

    struct Options {
        rounds: usize,
        rate: u64,
        pairs: usize,
        sizes: Vec<usize>,
        warmup: Duration,
        window: Duration,
        only: Option<Contender>,
        server_bin: PathBuf,
        baseline_bin: Option<PathBuf>,
    }

    fn options() -> Options {
        let mut o = Options {
            rounds: 5,
            rate: 30_000,
            pairs: 80,
            sizes: vec![100, 1000],
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(3),
            only: None,
            server_bin: PathBuf::from(env!("CARGO_BIN_EXE_pierce")),
            baseline_bin: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
            match a.as_str() {
                "--bench" => {}
                "--rounds" => o.rounds = value().parse().unwrap(),
                "--rate" => o.rate = value().parse().unwrap(),
                "--pairs" => o.pairs = value().parse().unwrap(),
                "--sizes" => {
                    o.sizes = value().split(',').map(|s| s.parse().unwrap()).collect();
                }
                "--warmup" => o.warmup = Duration::from_secs_f64(value().parse().unwrap()),
                "--window" => o.window = Duration::from_secs_f64(value().parse().unwrap()),
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
                other => panic!("unknown argument {other}"),
            }
        }
        assert!(o.rounds >= 1 && o.pairs >= WORKERS && o.rate > 0);
        o
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Contender {
        Pierce,
        Coturn,
        /// `pierce server` from `--baseline-bin` (e.g. a build from before a change), driven
        /// exactly like `Pierce`.
        Baseline,
    }

    impl Contender {
        const ALL: [Self; 3] = [Self::Pierce, Self::Coturn, Self::Baseline];

        fn name(self) -> &'static str {
            match self {
                Self::Pierce => "pierce",
                Self::Coturn => "coturn",
                Self::Baseline => "baseline",
            }
        }
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
        let Some(turnserver) = find_on_path("turnserver") else {
            eprintln!(
                "relay_vs_coturn: `turnserver` not found on PATH. Install coturn (Debian/Ubuntu \
                 package `coturn`: apt-get install coturn); this bench installs nothing."
            );
            std::process::exit(1);
        };
        let tmp = std::env::temp_dir().join(format!("relay_vs_coturn-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();

        let pierce = PierceServer::start(&o.server_bin);
        let coturn = Coturn::start(&turnserver, &tmp);
        println!(
            "relay_vs_coturn: {} pairs, {} datagrams/s offered per contender ({:.0}/s per \
             sender), {} s window after {} s warm-up, {} rounds alternating the order",
            o.pairs,
            o.rate,
            o.rate as f64 / o.pairs as f64,
            o.window.as_secs_f64(),
            o.warmup.as_secs_f64(),
            o.rounds
        );
        println!(
            "pierce: {} (pid {}), default server settings",
            o.server_bin.display(),
            pierce.child.id()
        );
        println!(
            "coturn: {} (pid {}), {}",
            coturn.version,
            coturn.child.id(),
            coturn.flags
        );

        let want = |c| o.only.is_none_or(|only| only == c);
        let rate_per_sender = o.rate as f64 / o.pairs as f64;
        let baseline = o.baseline_bin.as_deref().map(PierceServer::start);
        if let Some(b) = &baseline {
            let bin = o.baseline_bin.as_ref().unwrap().display();
            println!(
                "baseline: {bin} (pid {}), default server settings",
                b.child.id()
            );
        }
        // (contender, its generator, its server's pid), in the first round's order.
        let mut entries: Vec<(Contender, Generator, u32)> = Vec::new();
        if want(Contender::Pierce) {
            let g = Generator::pierce(o.pairs, pierce.addr, pierce.key, rate_per_sender);
            entries.push((Contender::Pierce, g, pierce.child.id()));
        }
        if want(Contender::Coturn) {
            let g = Generator::coturn(o.pairs, coturn.addr, rate_per_sender);
            entries.push((Contender::Coturn, g, coturn.child.id()));
        }
        if let Some(b) = baseline.as_ref().filter(|_| want(Contender::Baseline)) {
            let g = Generator::pierce(o.pairs, b.addr, b.key, rate_per_sender);
            entries.push((Contender::Baseline, g, b.child.id()));
        }
        // One discarded run each first: Pierce's connections leave their initial RTT
        // estimate and congestion window; caches and allocators warm up.
        for (c, g, pid) in &entries {
            let s = measure(g, *pid, *c, o.sizes[0], 0, &o);
            println!("  warm-up (discarded): {}", s.line());
        }

        let mut samples: Vec<Sample> = Vec::new();
        for round in 0..o.rounds {
            for &size in &o.sizes {
                for (c, g, pid) in &entries {
                    let s = measure(g, *pid, *c, size, round, &o);
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
        report(&samples, &o, wall);
        drop(pierce);
        drop(coturn);
        let _ = std::fs::remove_dir_all(&tmp);
    }

    // ---- measuring -----------------------------------------------------------------------

    struct Sample {
        contender: Contender,
        size: usize,
        round: usize,
        window: f64,
        sent: u64,
        /// Datagrams that reached the receivers' sockets.
        received: u64,
        /// Datagrams (Pierce: messages) that reached the receivers' applications.
        messages: u64,
        back: u64,
        wire_bytes: u64,
        server_cpu: Duration,
        server_user_ticks: u64,
        server_sys_ticks: u64,
        generator_cpu: Duration,
        /// Times the server's threads blocked (voluntary context switches): each is a sleep
        /// in the poller and a wakeup by the next datagram.
        server_sleeps: u64,
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
        fn sleeps_per_datagram(&self) -> f64 {
            self.server_sleeps as f64 / self.messages.max(1) as f64
        }
        fn sys_pct(&self) -> f64 {
            let t = self.server_user_ticks + self.server_sys_ticks;
            100.0 * self.server_sys_ticks as f64 / t.max(1) as f64
        }
        fn server_core_pct(&self) -> f64 {
            100.0 * self.server_cpu.as_secs_f64() / self.window
        }
        fn generator_core_pct(&self) -> f64 {
            100.0 * self.generator_cpu.as_secs_f64() / self.window
        }
        fn line(&self) -> String {
            format!(
                "round {} {:8} {:4} B: offered {:7.0}/s relayed {:7.0}/s loss {:5.2}% | server \
                 {:5.2} us/datagram ({:4.1}% of a core, {:2.0}% system, {:.2} sleeps/datagram) \
                 | generator {:5.2} us/datagram ({:4.1}% of a core){}",
                self.round,
                self.contender.name(),
                self.size,
                self.offered(),
                self.relayed(),
                self.loss_pct(),
                self.server_us(),
                self.server_core_pct(),
                self.sys_pct(),
                self.sleeps_per_datagram(),
                self.generator_us(),
                self.generator_core_pct(),
                if self.problems > 0 {
                    format!(" | {} problems", self.problems)
                } else {
                    String::new()
                }
            )
        }
    }

    fn measure(
        g: &Generator,
        pid: u32,
        contender: Contender,
        size: usize,
        round: usize,
        o: &Options,
    ) -> Sample {
        let server_clock = cpu_clock(pid);
        g.control.size.store(size as u64, Ordering::SeqCst);
        g.control.running.store(true, Ordering::SeqCst);
        g.control.epoch.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(o.warmup);
        let a = (
            g.counters.snapshot(),
            read_clock(server_clock),
            proc_ticks(pid),
            read_clock(libc::CLOCK_PROCESS_CPUTIME_ID),
            Instant::now(),
            sleeps(pid),
        );
        std::thread::sleep(o.window);
        let b = (
            g.counters.snapshot(),
            read_clock(server_clock),
            proc_ticks(pid),
            read_clock(libc::CLOCK_PROCESS_CPUTIME_ID),
            Instant::now(),
            sleeps(pid),
        );
        g.control.running.store(false, Ordering::SeqCst);
        g.control.epoch.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(DRAIN);
        let d = |i: usize| b.0[i] - a.0[i];
        Sample {
            contender,
            size,
            round,
            window: (b.4 - a.4).as_secs_f64(),
            sent: d(Counters::SENT),
            received: d(Counters::RECEIVED),
            back: d(Counters::BACK),
            wire_bytes: d(Counters::WIRE_BYTES),
            messages: d(Counters::MESSAGES),
            server_cpu: b.1 - a.1,
            server_user_ticks: b.2.0 - a.2.0,
            server_sys_ticks: b.2.1 - a.2.1,
            generator_cpu: b.3 - a.3,
            server_sleeps: b.5 - a.5,
            problems: d(Counters::PROBLEMS),
        }
    }

    fn report(samples: &[Sample], o: &Options, wall: Instant) {
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
                    stats(s.iter().map(|s| s.sys_pct())).median,
                    stats(s.iter().map(|s| s.server_core_pct())).median,
                    stats(s.iter().map(|s| s.sleeps_per_datagram())).median,
                    stats(s.iter().map(|s| s.generator_us())).median,
                    stats(s.iter().map(|s| s.generator_core_pct())).median,
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
                    result.push(format!(
                        "{}_us_incl_acks_{size}B={:.2}",
                        c.name(),
                        incl.median
                    ));
                }
                result.push(format!("{}_us_{size}B={:.2}", c.name(), us.median));
                result.push(format!("{}_loss_pct_{size}B={:.2}", c.name(), loss.median));
            }
            let median = |c| stats(of(c, size).iter().map(|s| s.server_us())).median;
            for c in [Contender::Pierce, Contender::Baseline] {
                let ratio = median(c) / median(Contender::Coturn);
                if !ratio.is_finite() {
                    continue;
                }
                let verdict = if (ratio - 1.0).abs() < 0.10 {
                    "within 10%: no difference claimed".to_owned()
                } else if ratio < 1.0 {
                    format!("{:.0}% less server CPU", 100.0 * (1.0 - ratio))
                } else {
                    format!("{:.0}% more server CPU", 100.0 * (ratio - 1.0))
                };
                let target = if ratio <= 0.5 { "met" } else { "not met" };
                ratio_lines.push(format!(
                    "{size:5} B: {}/coturn server CPU per datagram {ratio:.2}x (per-round \
                     ratios {}); {verdict}; target <= 0.50x {target}",
                    c.name(),
                    ratios(c, Contender::Coturn, size).show(2)
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
        println!("wall time {:.0} s", wall.elapsed().as_secs_f64());
        println!(
            "\nRESULT {} rate={} pairs={}",
            head.join(" "),
            o.rate,
            o.pairs
        );
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

    // ---- process CPU clocks ----------------------------------------------------------------

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

    struct PierceServer {
        child: Child,
        addr: SocketAddr,
        key: PublicKey,
    }

    impl PierceServer {
        fn start(bin: &Path) -> Self {
            let mut child = child_command(bin)
                .args(["server", "--listen", "127.0.0.1:0", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
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
            drain(out);
            Self { child, addr, key }
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
        /// Bumped at every start and stop: workers restart their pacing from it.
        epoch: AtomicU64,
        stop: AtomicBool,
    }

    /// Totals over a generator's workers.
    #[derive(Default)]
    struct Counters([AtomicU64; 7]);

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

        fn add(&self, i: usize, n: u64) {
            self.0[i].fetch_add(n, Ordering::Relaxed);
        }

        fn get(&self, i: usize) -> u64 {
            self.0[i].load(Ordering::Relaxed)
        }

        fn snapshot(&self) -> [u64; 7] {
            std::array::from_fn(|i| self.get(i))
        }
    }

    struct Generator {
        control: Arc<Control>,
        counters: Arc<Counters>,
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

    /// Per-sender pacing: sender `i` of `n` starts `i/n` of an interval late, so the senders'
    /// datagrams spread over each tick instead of leaving together.
    struct Pacer {
        epoch: u64,
        start: Instant,
        rate: f64,
    }

    impl Pacer {
        fn due(&self, now: Instant, phase: f64, done: u64) -> u64 {
            let t = now.saturating_duration_since(self.start).as_secs_f64();
            let want = (t * self.rate - phase).max(0.0).floor() as u64;
            want.saturating_sub(done)
        }
    }

    /// A loopback address of its own for pair `p` (all of 127/8 is loopback on Linux), as
    /// players have their own addresses: Pierce's per-IP handshake limit (64 at once) would
    /// otherwise hold back the clients past the 64th.
    fn pair_addr(p: usize) -> SocketAddr {
        SocketAddr::from(([127, 1, (p / 250) as u8, (p % 250 + 1) as u8], 0))
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

    impl Generator {
        fn pierce(pairs: usize, server: SocketAddr, key: PublicKey, rate: f64) -> Self {
            let control = Arc::new(Control::default());
            let counters = Arc::new(Counters::default());
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
                    let (c, k) = (control.clone(), counters.clone());
                    std::thread::spawn(move || pierce_worker(n, &c, &k, rate))
                })
                .collect();
            let g = Self {
                control,
                counters,
                workers,
            };
            g.wait_ready(2 * pairs as u64, "Pierce clients connected and paired");
            g
        }

        fn wait_ready(&self, want: u64, what: &str) {
            let start = Instant::now();
            while self.counters.get(Counters::READY) < want {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{} of {want} {what} after 30 s ({} problems)",
                    self.counters.get(Counters::READY),
                    self.counters.get(Counters::PROBLEMS)
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn pierce_worker(mut nodes: Vec<PierceNode>, ctl: &Control, cnt: &Counters, rate: f64) {
        let mut poll = Poll::new().unwrap();
        for (i, n) in nodes.iter_mut().enumerate() {
            poll.registry()
                .register(&mut n.socket, Token(i), Interest::READABLE)
                .unwrap();
        }
        let mut events = Events::with_capacity(256);
        let mut rx = vec![0u8; 65_536];
        let mut tx = vec![0u8; MAX_DATAGRAM_SIZE];
        let payload = vec![0x5au8; 1200];
        let mut pacer = Pacer {
            epoch: u64::MAX,
            start: Instant::now(),
            rate,
        };
        let mut flush_all = true;
        while !ctl.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let epoch = ctl.epoch.load(Ordering::SeqCst);
            if epoch != pacer.epoch {
                pacer.epoch = epoch;
                pacer.start = now;
                nodes.iter_mut().for_each(|n| n.sent = 0);
            }
            let running = ctl.running.load(Ordering::SeqCst);
            let size = ctl.size.load(Ordering::SeqCst) as usize;
            for n in nodes.iter_mut() {
                let mut touched = flush_all;
                if running && n.sender {
                    if let Some(peer) = n.peer {
                        for _ in 0..pacer.due(now, n.phase, n.sent) {
                            let r = n
                                .client
                                .send(now, peer, Channel::UNRELIABLE, &payload[..size]);
                            if r.is_err() {
                                cnt.add(Counters::PROBLEMS, 1);
                            }
                            n.sent += 1;
                            cnt.add(Counters::SENT, 1);
                            // One message per datagram: out before the next is queued.
                            pierce_flush(n, now, &mut tx, cnt);
                        }
                    }
                }
                if n.client.poll_timeout().is_some_and(|t| t.at <= now) {
                    n.client.handle_timeout(now);
                    touched = true;
                }
                if touched {
                    pierce_flush(n, now, &mut tx, cnt);
                    pierce_events(n, now, &mut tx, cnt);
                }
            }
            flush_all = false;
            let next_timer = nodes
                .iter()
                .filter_map(|n| n.client.poll_timeout().map(|t| t.at))
                .min();
            let tick = now
                + if running {
                    TICK
                } else {
                    Duration::from_millis(20)
                };
            let until = next_timer.map_or(tick, |t| t.min(tick));
            poll.poll(
                &mut events,
                Some(until.saturating_duration_since(Instant::now())),
            )
            .unwrap();
            let now = Instant::now();
            for ev in events.iter() {
                let n = &mut nodes[ev.token().0];
                loop {
                    match n.socket.recv_from(&mut rx) {
                        Ok((len, from)) => {
                            if n.sender {
                                cnt.add(Counters::BACK, 1);
                            } else {
                                cnt.add(Counters::RECEIVED, 1);
                                cnt.add(Counters::WIRE_BYTES, len as u64);
                            }
                            n.client.handle_datagram(now, from, &rx[..len]);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => cnt.add(Counters::PROBLEMS, 1),
                    }
                }
                pierce_flush(n, now, &mut tx, cnt);
                pierce_events(n, now, &mut tx, cnt);
            }
        }
        for n in &mut nodes {
            n.client.disconnect(Instant::now(), 0);
            pierce_flush(n, Instant::now(), &mut tx, cnt);
        }
    }

    fn pierce_flush(n: &mut PierceNode, now: Instant, tx: &mut [u8], cnt: &Counters) {
        while let Some(t) = n.client.poll_transmit(now, tx) {
            if n.socket.send_to(&tx[..t.len], t.dst).is_err() {
                cnt.add(Counters::PROBLEMS, 1);
            }
        }
    }

    fn pierce_events(n: &mut PierceNode, now: Instant, tx: &mut [u8], cnt: &Counters) {
        while let Some(e) = n.client.poll_event() {
            match e {
                ClientEvent::Connected { .. } => {
                    n.client.join_room(now, &n.room, "", true, 2).unwrap();
                    pierce_flush(n, now, tx, cnt);
                }
                ClientEvent::MemberJoined { member, .. }
                    if Some(member) != n.client.host_id() && n.peer.is_none() =>
                {
                    n.peer = Some(member);
                    cnt.add(Counters::READY, 1);
                }
                ClientEvent::PeerMessage { .. } => cnt.add(Counters::MESSAGES, 1),
                ClientEvent::Disconnected { reason } => {
                    eprintln!("relay_vs_coturn: a Pierce client was disconnected: {reason:?}");
                    cnt.add(Counters::PROBLEMS, 1);
                }
                ClientEvent::MemberLeft { .. } | ClientEvent::RoomFailed { .. } => {
                    eprintln!("relay_vs_coturn: unexpected {e:?}");
                    cnt.add(Counters::PROBLEMS, 1);
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
        fn coturn(pairs: usize, server: SocketAddr, rate: f64) -> Self {
            let control = Arc::new(Control::default());
            let counters = Arc::new(Counters::default());
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
                    let (c, k) = (control.clone(), counters.clone());
                    std::thread::spawn(move || turn_worker(s, server, &c, &k, rate))
                })
                .collect();
            Self {
                control,
                counters,
                workers,
            }
        }
    }

    fn turn_worker(
        mut pairs: Vec<TurnPair>,
        server: SocketAddr,
        ctl: &Control,
        cnt: &Counters,
        rate: f64,
    ) {
        let mut poll = Poll::new().unwrap();
        for (i, p) in pairs.iter_mut().enumerate() {
            let r = poll.registry();
            r.register(&mut p.a, Token(2 * i), Interest::READABLE)
                .unwrap();
            r.register(&mut p.b, Token(2 * i + 1), Interest::READABLE)
                .unwrap();
        }
        let mut events = Events::with_capacity(256);
        let mut rx = vec![0u8; 65_536];
        let mut frame = vec![0x5au8; 4 + 1200];
        let mut pacer = Pacer {
            epoch: u64::MAX,
            start: Instant::now(),
            rate,
        };
        while !ctl.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let epoch = ctl.epoch.load(Ordering::SeqCst);
            let running = ctl.running.load(Ordering::SeqCst);
            let size = ctl.size.load(Ordering::SeqCst) as usize;
            if epoch != pacer.epoch {
                pacer.epoch = epoch;
                pacer.start = now;
                pairs.iter_mut().for_each(|p| p.sent = 0);
                if running {
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
                frame[2..4].copy_from_slice(&(size as u16).to_be_bytes());
            }
            if running {
                for p in pairs.iter_mut() {
                    for _ in 0..pacer.due(now, p.phase, p.sent) {
                        if p.a.send_to(&frame[..4 + size], server).is_err() {
                            cnt.add(Counters::PROBLEMS, 1);
                        }
                        p.sent += 1;
                        cnt.add(Counters::SENT, 1);
                    }
                }
            }
            let tick = if running {
                TICK
            } else {
                Duration::from_millis(20)
            };
            poll.poll(&mut events, Some(tick)).unwrap();
            for ev in events.iter() {
                let i = ev.token().0;
                let p = &pairs[i / 2];
                let (socket, receiver) = if i % 2 == 1 {
                    (&p.b, true)
                } else {
                    (&p.a, false)
                };
                loop {
                    match socket.recv_from(&mut rx) {
                        Ok((len, _)) => {
                            let d = &rx[..len];
                            if receiver && len >= 4 && (0x40..0x80).contains(&d[0]) {
                                cnt.add(Counters::RECEIVED, 1);
                                cnt.add(Counters::MESSAGES, 1);
                                cnt.add(Counters::WIRE_BYTES, len as u64);
                            } else if turn::is_success(d) {
                                cnt.add(Counters::BACK, 1);
                            } else {
                                cnt.add(Counters::PROBLEMS, 1);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => cnt.add(Counters::PROBLEMS, 1),
                    }
                }
            }
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
