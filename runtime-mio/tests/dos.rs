//! Denial of service by spoofed UDP floods, against real `pierce server` processes on loopback
//! (issue #24, build item 5, the UDP part).
//!
//! An off-path attacker on a network without egress filtering can send datagrams that carry
//! someone else's source address. Whatever per-IP budget the server keeps for unauthenticated
//! work (handshakes, STUN answers), such datagrams spend the victim's share: behind a
//! carrier-grade NAT that one address is thousands of players. Here root sends, through a raw
//! socket (`IPPROTO_RAW`, headers built by hand), UDP datagrams whose source is an address of
//! 127.0.0.0/8 of our choosing, at a bounded rate for a bounded time ([`FLOOD_LIMIT`]):
//! - ClientHellos (fresh session ids and ephemeral keys), and STUN Binding requests (bare,
//!   with FINGERPRINT, with CHANGE-REQUEST), each at [`RATE`] a second, from the address the
//!   real clients use ([`VICTIM`]; random source ports, a quarter of them the clients' own
//!   ports), alone and both at once;
//! - ClientHellos from a thousand other addresses at [`MANY_RATE`] a second in all (the
//!   server's global budget must not become the victims' problem either).
//!
//! Under each flood, [`K`] real `pierce peer` processes bound to [`VICTIM`] join one room and
//! exchange their messages, against a fresh server; before the floods the same runs
//! unattacked for the baseline. Each scenario prints
//! `DOS <scenario> join_ms p50=.. max=.. completed=k/K server_rss_kb=.. hwm_kb=..` (join: from
//! the peer's start to its `room_joined` line), then what the flood sent and what the server
//! counted (`--nocapture` shows them). Every client must complete its exchange, the slowest
//! join may take at most twice the unattacked one (see [`join_bound`]), and the server's peak
//! memory stays under [`SERVER_MEMORY_BOUND_KB`].
//!
//! A failing scenario shows the failed clients' last lines; `DOS_DUMP=1` prints every
//! client's whole output.
//!
//! Needs root (raw sockets): without it, or if a spoofed datagram does not arrive with its
//! spoofed source, the tests print `SKIPPED dos: <reason>` and pass, except under `CI`, where
//! they fail. A release build only: a debug build prints `SKIPPED dos` (see
//! [`spoofer_or_skip`]; CI runs this file with `--release`). The tests run one at a time
//! (they measure time and memory). Linux only.
#![cfg(all(feature = "cli", target_os = "linux"))]

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pierce_core::wire::handshake::{ClientHello, MIN_CLIENT_HELLO_LEN};
use pierce_core::wire::stun;

#[path = "support/child.rs"]
mod child;
use child::{Rng, int_field, memory_of, serial, start_server, string_field, timed_lines};

const PIERCE: &str = env!("CARGO_BIN_EXE_pierce");
/// The address every real client uses, and the floods at it spoof.
const VICTIM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// Real clients, all at [`VICTIM`], in one room.
const K: usize = 6;
/// Messages each client sends each other one.
const SEND: u32 = 20;
/// The clients' own `--timeout`, in seconds: past their 10 s connect timeout, so a client kept
/// out fails by itself; well inside [`FLOOD_LIMIT`].
const PEER_TIMEOUT: &str = "15";
/// Datagrams a second of each flood at [`VICTIM`]: the issue's "a few hundred to a thousand
/// small requests per second" that kept every client behind the address out.
const RATE: u32 = 1000;
/// Sources of the many-address flood, and its datagrams a second in all (5 a second each, well
/// under any per-IP budget: what it spends is the global one).
const MANY_SOURCES: u32 = 1000;
const MANY_RATE: u32 = 5000;
/// How long a flood runs before the clients start: it has spent its budget by then (the STUN
/// budget per IP is a burst of 1000 refilled at 200/s: 1.25 s at 1000/s).
const HEAD_START: Duration = Duration::from_secs(2);
/// A flood stops when the clients are done, and after this at the latest.
const FLOOD_LIMIT: Duration = Duration::from_secs(20);
/// The flooded server's peak resident memory may not exceed this. Everything an unproven
/// source can make the server hold is bounded by a count: 4096 half-open handshakes (a few
/// hundred bytes each), 1024 queued Retries and 1024 queued STUN answers, a 4096-slot per-IP
/// token table; the process itself (two relay threads, socket buffers, the binary) takes
/// about 10 MB. hostile.rs holds the server to 64 MiB under a 3000/s mixed flood from 100
/// addresses; half of that leaves room for the allocator and catches anything that grows with
/// the flood's length (a 20 s flood at 6000/s is 120 000 datagrams: a kilobyte each would be
/// 120 MB).
const SERVER_MEMORY_BOUND_KB: u64 = 32 * 1024;

/// The slowest join allowed under a flood, from the slowest unattacked one: twice it, but at
/// least 150 ms more than it. On loopback an unattacked join takes a few milliseconds of
/// protocol (two round trips to connect, one to join) after the process starts, so "twice"
/// alone would be a bound of some tens of milliseconds, and on a shared two-core machine the
/// scheduler's jitter (seven processes and the flood threads on two cores) is of that order
/// by itself. 150 ms is far below what a lost round trip costs (a client's first hello
/// retransmission comes after 250 ms or more), so a client that the flood made wait for a
/// retry still fails.
fn join_bound(unattacked_max: Duration) -> Duration {
    (unattacked_max * 2).max(unattacked_max + Duration::from_millis(150))
}

// ---- the spoofer -----------------------------------------------------------------------

/// A raw IPv4 socket that sends UDP datagrams with any source address.
struct Spoofer {
    fd: OwnedFd,
    /// The IPv4 identification field, counting.
    id: u16,
    buf: Vec<u8>,
}

impl Spoofer {
    /// A raw socket (`IPPROTO_RAW` implies `IP_HDRINCL`: we write the IP header).
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a socket we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: setsockopt(2) on our socket, with a c_int option value and its size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_HDRINCL,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            id: 1,
            buf: Vec::with_capacity(1500),
        })
    }

    /// A raw socket whose spoofed datagrams were seen to arrive with their spoofed source.
    fn open_verified() -> Result<Self, String> {
        let mut s = Self::open().map_err(|e| format!("no raw IPv4 socket ({e}): needs root"))?;
        let rx = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 78), 0))
            .map_err(|e| format!("bind 127.0.0.78: {e}"))?;
        rx.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let to = match rx.local_addr().map_err(|e| e.to_string())? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => return Err(format!("bound {a}")),
        };
        let from = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 77), 40_077);
        let payload = b"spoofed source check";
        s.send(from, to, payload)
            .map_err(|e| format!("sending through the raw socket: {e}"))?;
        let mut buf = [0u8; 64];
        let (n, src) = rx
            .recv_from(&mut buf)
            .map_err(|e| format!("the spoofed datagram did not arrive: {e}"))?;
        if src != SocketAddr::V4(from) || &buf[..n] != payload {
            return Err(format!(
                "the spoofed datagram arrived from {src} with {:?}, not from {from}",
                &buf[..n]
            ));
        }
        Ok(s)
    }

    /// Sends `payload` from `src` to `dst` in one UDP datagram (checksum 0: none, as IPv4
    /// allows).
    fn send(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
        let total = 20 + 8 + payload.len();
        self.id = self.id.wrapping_add(1).max(1);
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(&[0x45, 0]); // IPv4, 5-word header; TOS 0
        b.extend_from_slice(&(total as u16).to_be_bytes());
        b.extend_from_slice(&self.id.to_be_bytes());
        b.extend_from_slice(&[0x40, 0, 64, libc::IPPROTO_UDP as u8]); // DF; TTL 64; UDP
        b.extend_from_slice(&[0, 0]); // header checksum, below
        b.extend_from_slice(&src.ip().octets());
        b.extend_from_slice(&dst.ip().octets());
        let sum = ip_checksum(&b[..20]);
        b[10..12].copy_from_slice(&sum.to_be_bytes());
        b.extend_from_slice(&src.port().to_be_bytes());
        b.extend_from_slice(&dst.port().to_be_bytes());
        b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(payload);
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto(2) on our socket with a buffer of `b.len()` bytes and a sockaddr_in
        // of its size.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                b.as_ptr().cast(),
                b.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The IPv4 header checksum (the kernel fills it in for raw sockets too; written anyway).
fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// A verified spoofer, or `None` (after printing why) where the suite cannot run: without
/// raw sockets (under `CI` that is a failure instead), or in a debug build.
///
/// A debug build's server is too slow to measure admission with: unoptimised, its X25519
/// and cookie work make it the bottleneck. Measured at 24c29db: unattacked joins took 80 to
/// 90 ms (6 to 11 ms in release), and under the thousand-address flood the server took in
/// 8 374 of 14 658 datagrams (the kernel dropped the rest at its socket) and the clients
/// joined after 1.8 s, where the release server keeps up and they join in 8 ms. CI runs this
/// file with `--release` (`.ci/run`); in `cargo test --workspace` it skips.
fn spoofer_or_skip() -> Option<Spoofer> {
    if cfg!(debug_assertions) {
        println!(
            "SKIPPED dos: a debug build (run `cargo test --release -p pierce-mio --test dos`)"
        );
        return None;
    }
    match Spoofer::open_verified() {
        Ok(s) => Some(s),
        Err(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("dos cannot run, and CI must run it: {why}");
            }
            println!("SKIPPED dos: {why}");
            None
        }
    }
}

// ---- the floods ------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Payload {
    /// Well-formed, padded ClientHellos with fresh session ids and ephemeral keys.
    Hello,
    /// STUN Binding requests: bare (20 bytes), with FINGERPRINT (28), with a CHANGE-REQUEST
    /// of no change and FINGERPRINT (36); all answered by a server without `--alt-listen`.
    Stun,
}

impl Payload {
    fn make(self, rng: &mut Rng, buf: &mut [u8]) -> usize {
        match self {
            Self::Hello => ClientHello {
                client_session: rng.next() as u32,
                client_ephemeral: rng.array(),
                cookie: &[],
            }
            .encode(&mut buf[..MIN_CLIENT_HELLO_LEN])
            .expect("fits"),
            Self::Stun => {
                let txid: [u8; 12] = rng.array();
                match rng.below(3) {
                    0 => {
                        buf[..8].copy_from_slice(&[0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42]);
                        buf[8..20].copy_from_slice(&txid);
                        20
                    }
                    1 => stun::encode_binding_request(buf, &txid).expect("fits"),
                    _ => stun::encode_binding_request_change(buf, &txid, 0).expect("fits"),
                }
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hello => "ClientHello",
            Self::Stun => "STUN Binding request",
        }
    }
}

/// What one flood sends, from where.
#[derive(Clone, Debug)]
struct FloodSpec {
    payload: Payload,
    /// Datagrams a second.
    rate: u32,
    /// Source addresses, picked at random per datagram.
    sources: Vec<Ipv4Addr>,
    /// Source ports used for a quarter of the datagrams (the victims' own); the rest come
    /// from random ports.
    exact_ports: Vec<u16>,
}

/// A flood running in its own thread, until stopped or [`FLOOD_LIMIT`].
struct Flood {
    spec: FloodSpec,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    thread: Option<JoinHandle<Duration>>,
}

impl Flood {
    fn start(spec: FloodSpec, target: SocketAddrV4, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let thread = {
            let (spec, stop, sent, errors) =
                (spec.clone(), stop.clone(), sent.clone(), errors.clone());
            thread::spawn(move || flood(&spec, target, seed, &stop, &sent, &errors))
        };
        Self {
            spec,
            stop,
            sent,
            errors,
            thread: Some(thread),
        }
    }

    /// Stops it; returns a line saying what it sent.
    fn stop(mut self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let ran = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("flood thread");
        let sent = self.sent.load(Ordering::Relaxed);
        let secs = ran.as_secs_f64().max(1e-3);
        format!(
            "{sent} {}s in {secs:.1} s (~{:.0}/s, aimed at {}/s) from {} spoofed source \
             address{}{}, {} send errors",
            self.spec.payload.name(),
            sent as f64 / secs,
            self.spec.rate,
            self.spec.sources.len(),
            if self.spec.sources.len() == 1 {
                ""
            } else {
                "es"
            },
            if self.spec.exact_ports.is_empty() {
                String::new()
            } else {
                " (a quarter from the clients' own ports)".to_owned()
            },
            self.errors.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `spec` to `target` at its rate until `stop` or [`FLOOD_LIMIT`]; returns how long it
/// ran. Paced on a millisecond tick; after a stall it catches up by at most 50 ms' worth, so
/// the rate is never exceeded for long.
fn flood(
    spec: &FloodSpec,
    target: SocketAddrV4,
    seed: u64,
    stop: &AtomicBool,
    sent: &AtomicU64,
    errors: &AtomicU64,
) -> Duration {
    let mut spoofer = Spoofer::open().expect("a raw socket (it worked for the check)");
    let mut rng = Rng(seed | 1);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let max_lag = u64::from(spec.rate / 20).max(1);
    let mut done = 0u64;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < FLOOD_LIMIT {
        let due = (start.elapsed().as_secs_f64() * f64::from(spec.rate)) as u64;
        done = done.max(due.saturating_sub(max_lag));
        while done < due {
            let ip = spec.sources[rng.below(spec.sources.len())];
            let port = if !spec.exact_ports.is_empty() && rng.below(4) == 0 {
                spec.exact_ports[rng.below(spec.exact_ports.len())]
            } else {
                1024 + rng.below(64_512) as u16
            };
            let n = spec.payload.make(&mut rng, &mut buf);
            match spoofer.send(SocketAddrV4::new(ip, port), target, &buf[..n]) {
                Ok(()) => sent.fetch_add(1, Ordering::Relaxed),
                Err(_) => errors.fetch_add(1, Ordering::Relaxed),
            };
            done += 1;
        }
        thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

// ---- the server process ----------------------------------------------------------------

/// A `pierce server --json --stats-every 1` child, killed when dropped.
struct ServerProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: SocketAddrV4,
    key: String,
}

impl ServerProc {
    fn start() -> Self {
        let (child, lines, ready) = start_server(PIERCE, &[]);
        let addr = string_field(&ready, "addr")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no IPv4 addr in {ready}"));
        let key = string_field(&ready, "public_key").unwrap_or_else(|| panic!("{ready}"));
        Self {
            child,
            lines,
            addr,
            key,
        }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> (u64, u64) {
        memory_of(self.child.id())
    }

    /// Stops it with SIGTERM; returns its last stats line (counters since start) and the
    /// most half-open handshakes any stats line showed.
    fn stop(mut self) -> (String, u64) {
        // SAFETY: kill(2) on our own child's pid, which it still is (not yet waited for).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let mut last = String::new();
        let mut half_open = 0;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            if line.starts_with(r#"{"event":"stats","#) {
                half_open = half_open.max(int_field(&line, "half_open").unwrap_or(0));
                last = line;
            } else if line.starts_with(r#"{"event":"stopped""#) {
                break;
            }
        }
        let _ = self.child.wait();
        (last, half_open)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `{...}` after `"key":`.
fn object_field<'a>(line: &'a str, key: &str) -> &'a str {
    let Some(at) = line.find(&format!("\"{key}\":{{")) else {
        return "{}";
    };
    let rest = &line[at + key.len() + 3..];
    rest.find('}').map_or(rest, |end| &rest[..=end])
}

// ---- the clients -----------------------------------------------------------------------

/// One `pierce peer` at [`VICTIM`], killed when dropped.
struct Peer {
    child: Child,
    started: Instant,
    /// Its stdout lines, with when each arrived.
    lines: mpsc::Receiver<(Instant, String)>,
    stderr: Option<JoinHandle<String>>,
}

/// How a peer's run went.
struct PeerRun {
    status: Option<ExitStatus>,
    /// From its start to its `room_joined` line.
    joined: Option<Duration>,
    /// From its start to its exit.
    done: Duration,
    ok: bool,
    stdout: Vec<String>,
    stderr: String,
}

impl Peer {
    fn spawn(server: &ServerProc, room: &str, i: usize, port: u16) -> Self {
        let mut child = Command::new(PIERCE)
            .args(["peer", "--server", &server.addr.to_string()])
            .args(["--server-key", &server.key, "--room", room])
            .args(["--peers", &(K - 1).to_string(), "--send", &SEND.to_string()])
            .args(["--bind", &SocketAddrV4::new(VICTIM, port).to_string()])
            .args(["--name", &format!("p{i}"), "--timeout", PEER_TIMEOUT])
            // UDP only: the floods are at the UDP side; a client falling back to TCP would
            // measure the fallback, not the UDP admission.
            .args(["--udp-only", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pierce peer");
        let started = Instant::now();
        let mut err = child.stderr.take().expect("piped stderr");
        let lines = timed_lines(&mut child);
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Self {
            child,
            started,
            lines,
            stderr: Some(stderr),
        }
    }

    /// Waits for it to exit (killing it past its own timeout and a margin).
    fn finish(mut self) -> PeerRun {
        let limit = Duration::from_secs(PEER_TIMEOUT.parse::<u64>().expect("seconds") + 10);
        let mut stdout = Vec::new();
        let mut joined = None;
        let status = loop {
            while let Ok((at, line)) = self.lines.try_recv() {
                if joined.is_none() && line.starts_with(r#"{"event":"room_joined""#) {
                    joined = Some(at.duration_since(self.started));
                }
                stdout.push(line);
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                break Some(status);
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(2));
        };
        let done = self.started.elapsed();
        // The rest of its output (the reader ends at EOF).
        while let Ok((at, line)) = self.lines.recv_timeout(Duration::from_secs(2)) {
            if joined.is_none() && line.starts_with(r#"{"event":"room_joined""#) {
                joined = Some(at.duration_since(self.started));
            }
            stdout.push(line);
        }
        let stderr = self.stderr.take().expect("once").join().expect("stderr");
        let ok = status.is_some_and(|s| s.success())
            && stdout
                .last()
                .is_some_and(|l| l.starts_with(r#"{"event":"summary","ok":true,"#));
        PeerRun {
            status,
            joined,
            done,
            ok,
            stdout,
            stderr,
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`K`] free ports at [`VICTIM`] (bound, then released just before the peers bind them).
fn victim_ports() -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..K)
        .map(|_| UdpSocket::bind((VICTIM, 0)).expect("bind the victim address"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("local addr").port())
        .collect()
}

// ---- a scenario ------------------------------------------------------------------------

/// What one scenario measured.
struct Outcome {
    name: &'static str,
    joins: Vec<Duration>,
    completed: usize,
    /// Clients whose NAT behaviour discovery found their address.
    discovered: usize,
    hwm_kb: u64,
    /// The failed peers' output, for the failure message.
    failures: String,
}

impl Outcome {
    fn max_join(&self) -> Option<Duration> {
        self.joins.iter().max().copied()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A fresh server; `floods` (made from the clients' ports) start [`HEAD_START`] before the
/// [`K`] clients and run until the last client exits; prints the scenario's lines.
fn scenario(name: &'static str, floods: Floods<'_>) -> Outcome {
    let server = ServerProc::start();
    let ports = victim_ports();
    let specs = floods(&ports);
    let running: Vec<Flood> = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| Flood::start(spec, server.addr, 0x9E37_79B9_7F4A_7C15 ^ i as u64))
        .collect();
    if !running.is_empty() {
        thread::sleep(HEAD_START);
    }
    let room = format!("dos-{name}");
    let peers: Vec<Peer> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| Peer::spawn(&server, &room, i, port))
        .collect();
    let runs: Vec<PeerRun> = peers.into_iter().map(Peer::finish).collect();
    let flood_lines: Vec<String> = running.into_iter().map(Flood::stop).collect();
    let (rss, hwm) = server.memory();
    let (stats, half_open) = server.stop();

    let mut joins: Vec<Duration> = runs.iter().filter_map(|r| r.joined).collect();
    joins.sort();
    let completed = runs.iter().filter(|r| r.ok).count();
    // Each client's NAT behaviour discovery (automatic after connecting) must find its
    // address: its requests are signed with its session's credential, so a spoofed STUN flood
    // at its IP does not starve them.
    let discovered = runs
        .iter()
        .filter(|r| {
            r.stdout
                .iter()
                .any(|l| l.starts_with(r#"{"event":"nat_discovered","reflexive":"#))
        })
        .count();
    let mut done: Vec<Duration> = runs.iter().map(|r| r.done).collect();
    done.sort();
    let p50 = |v: &[Duration]| {
        v.get(v.len() / 2)
            .map_or_else(|| "-".to_owned(), |d| ms(*d))
    };
    let max = |v: &[Duration]| v.last().map_or_else(|| "-".to_owned(), |d| ms(*d));
    println!(
        "DOS {name} join_ms p50={} max={} joined={}/{K} completed={completed}/{K} \
         discovered={discovered}/{K} server_rss_kb={rss} hwm_kb={hwm}",
        p50(&joins),
        max(&joins),
        joins.len(),
    );
    println!(
        "DOS {name} run_ms p50={} max={} (from each client's start to its exit, {SEND} \
         messages to each of {} others)",
        p50(&done),
        max(&done),
        K - 1
    );
    for f in &flood_lines {
        println!("DOS {name} flood: {f}");
    }
    println!(
        "DOS {name} server: datagrams_in={} handshakes_completed={} stun_answered={} \
         half_open_max={half_open} dropped_by_reason={}",
        int_field(&stats, "datagrams_in").unwrap_or(0),
        int_field(&stats, "handshakes_completed").unwrap_or(0),
        int_field(&stats, "stun_answered").unwrap_or(0),
        object_field(&stats, "dropped_by_reason"),
    );
    if std::env::var_os("DOS_DUMP").is_some() {
        for (i, r) in runs.iter().enumerate() {
            println!(
                "--- {name} p{i}: stdout:\n{}\nstderr:\n{}",
                r.stdout.join("\n"),
                r.stderr.trim_end()
            );
        }
    }
    let mut failures = String::new();
    for (i, r) in runs.iter().enumerate().filter(|(_, r)| !r.ok) {
        let status = r
            .status
            .map_or_else(|| "killed".to_owned(), |s| s.to_string());
        let tail: Vec<&str> = r
            .stdout
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|s| s.as_str())
            .collect();
        failures += &format!(
            "--- p{i} ({status} after {} ms): stdout (last lines):\n{}\nstderr:\n{}\n",
            ms(r.done),
            tail.join("\n"),
            r.stderr.trim_end()
        );
    }
    Outcome {
        name,
        joins,
        completed,
        discovered,
        hwm_kb: hwm,
        failures,
    }
}

/// The floods of a scenario, made from the clients' ports.
type Floods<'a> = &'a dyn Fn(&[u16]) -> Vec<FloodSpec>;

/// The unattacked run, then each flood's; checks every flood's against the unattacked one.
fn run_suite(floods: &[(&'static str, Floods<'_>)]) {
    println!();
    let baseline = scenario("unattacked", &|_| Vec::new());
    assert_eq!(
        baseline.completed, K,
        "unattacked, only {}/{K} clients completed:\n{}",
        baseline.completed, baseline.failures
    );
    assert_eq!(
        baseline.discovered, K,
        "unattacked, not every client discovered"
    );
    let unattacked_max = baseline.max_join().expect("all joined");
    let bound = join_bound(unattacked_max);
    println!(
        "DOS bound: every client completes; slowest join <= {} ms (unattacked {} ms); server \
         hwm <= {SERVER_MEMORY_BOUND_KB} kB",
        ms(bound),
        ms(unattacked_max)
    );
    let mut problems = Vec::new();
    for (name, specs) in floods {
        let o = scenario(name, specs);
        if o.discovered < K {
            problems.push(format!(
                "{}: {}/{K} clients' NAT discovery found their address",
                o.name, o.discovered
            ));
        }
        if o.completed < K {
            problems.push(format!(
                "{}: {}/{K} clients completed, {} joined\n{}",
                o.name,
                o.completed,
                o.joins.len(),
                o.failures
            ));
        }
        if let Some(max) = o.max_join().filter(|m| *m > bound) {
            problems.push(format!(
                "{}: slowest join {} ms > {} ms (unattacked {} ms)",
                o.name,
                ms(max),
                ms(bound),
                ms(unattacked_max)
            ));
        }
        if o.hwm_kb > SERVER_MEMORY_BOUND_KB {
            problems.push(format!(
                "{}: server peak memory {} kB > {SERVER_MEMORY_BOUND_KB} kB",
                o.name, o.hwm_kb
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn at_victim(payload: Payload, ports: &[u16]) -> FloodSpec {
    FloodSpec {
        payload,
        rate: RATE,
        sources: vec![VICTIM],
        exact_ports: ports.to_vec(),
    }
}

// ---- the tests -------------------------------------------------------------------------

#[test]
fn clients_at_an_address_get_in_through_spoofed_floods_from_that_address() {
    let _serial = serial();
    if spoofer_or_skip().is_none() {
        return;
    }
    run_suite(&[
        ("hello-flood-at-victim", &|p| {
            vec![at_victim(Payload::Hello, p)]
        }),
        ("stun-flood-at-victim", &|p| {
            vec![at_victim(Payload::Stun, p)]
        }),
        ("hello+stun-floods-at-victim", &|p| {
            vec![at_victim(Payload::Hello, p), at_victim(Payload::Stun, p)]
        }),
    ]);
}

#[test]
fn clients_get_in_through_a_spoofed_hello_flood_from_a_thousand_addresses() {
    let _serial = serial();
    if spoofer_or_skip().is_none() {
        return;
    }
    // 127.64.0.1 - 127.64.3.250: away from the victim, the server and the check's addresses.
    let sources: Vec<Ipv4Addr> = (0..MANY_SOURCES)
        .map(|i| Ipv4Addr::new(127, 64, (i / 250) as u8, (1 + i % 250) as u8))
        .collect();
    run_suite(&[("hello-flood-from-1000-addresses", &|_| {
        vec![FloodSpec {
            payload: Payload::Hello,
            rate: MANY_RATE,
            sources: sources.clone(),
            exact_ports: Vec::new(),
        }]
    })]);
}
