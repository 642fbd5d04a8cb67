//! Hostile input on real loopback sockets.
//!
//! Against the real `pierce server` process (`pierce server --listen 127.0.0.1:0 --json`):
//! - a flood of spoofed handshakes and garbage from a hundred loopback addresses while 50 real
//!   clients connect: all of them connect, and the server's memory stays bounded;
//! - the amplification factor (bytes and datagrams sent back per byte and datagram received)
//!   for each kind of unsolicited input (sealed packets of sessions the server does not have
//!   get a 20-byte stateless reset; a reset gets nothing).
//!
//! In-process (a [`Server`] in a [`Driver`] on loopback, so its counters can be read, and
//! clients in Drivers or driven by hand over a `std` socket so their datagrams can be captured,
//! withheld and replayed):
//! - relay attempts to a host that is no longer a member are refused by the server (the
//!   public client API cannot address a host it was never introduced to, so the attempt is a
//!   send racing the server's removal of the pair);
//! - replayed and forged peer packets (punch probes and everything else on a direct path) do
//!   not move a path;
//! - a peer that announces oversize messages, or keeps many partial messages open, is dropped
//!   with a reason, and memory stays bounded.
//!
//! Each test prints `HOSTILE ...` lines with what it measured (`--nocapture` shows them). The
//! tests run one at a time (they measure time and memory). Linux only: they bind many
//! 127.0.0.0/8 addresses and read `/proc`.
#![cfg(all(feature = "cli", target_os = "linux"))]

use pierce_core::{Endpoint as _, Events as _};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use pierce_core::wire::handshake::{ClientHello, MIN_CLIENT_HELLO_LEN};
use pierce_core::wire::sealed::{HEADER_LEN, KIND_PEER, SealedPacket};
use pierce_core::wire::stun;
use pierce_core::{
    Channel, Client, ClientConfig, ClientEvent, GroupId, HostId, MAX_DATAGRAM_SIZE, Path,
    PeerDropReason, PublicKey, SecretKey, SendError, Server, ServerConfig, SocketId,
};
use pierce_mio::{Driver, os_seed, unix_time};

#[path = "support/child.rs"]
mod child;
use child::{Rng, lines, memory_of, serial, string_field};

const PIERCE: &str = env!("CARGO_BIN_EXE_pierce");
/// All 50 real clients must connect within this, flood or not.
const CONNECT_BOUND: Duration = Duration::from_secs(20);
/// The flooded server's peak resident memory may not exceed this.
const SERVER_MEMORY_BOUND_KB: u64 = 64 * 1024;

fn ip(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

fn bind(ip: IpAddr) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind a loopback address");
    s.set_nonblocking(true).expect("non-blocking");
    s
}

// ---- the server process ----------------------------------------------------------------

/// A `pierce server --json` child, killed when dropped.
struct ServerProc {
    child: Child,
    addr: SocketAddr,
    key: PublicKey,
}

impl ServerProc {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(PIERCE)
            .args(["server", "--listen", "127.0.0.1:0", "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pierce server");
        let rx = lines(&mut child);
        let ready = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server prints its ready line");
        let addr = string_field(&ready, "addr")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr in {ready}"));
        let key = string_field(&ready, "public_key")
            .and_then(|k| PublicKey::from_hex(&k).ok())
            .unwrap_or_else(|| panic!("no public_key in {ready}"));
        Self { child, addr, key }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> (u64, u64) {
        memory_of(self.child.id())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- inputs ----------------------------------------------------------------------------

/// A well-formed, padded ClientHello with a random ephemeral key: costs the server a
/// handshake (or a cookie round) unless a limit says otherwise.
fn client_hello(rng: &mut Rng) -> Vec<u8> {
    let mut e = [0u8; 32];
    e.copy_from_slice(&rng.bytes(32));
    let mut buf = vec![0u8; MIN_CLIENT_HELLO_LEN];
    let n = ClientHello {
        client_session: rng.next() as u32,
        client_ephemeral: e,
        cookie: &[],
    }
    .encode(&mut buf)
    .expect("fits");
    buf.truncate(n);
    buf
}

/// 1200 bytes that start like a ClientHello and are random after the kind and version.
fn hello_shaped(rng: &mut Rng) -> Vec<u8> {
    let mut d = rng.bytes(MIN_CLIENT_HELLO_LEN);
    d[0] = 0xD1;
    d[1] = 1;
    d
}

/// Random bytes of a random length up to 1400.
fn garbage(rng: &mut Rng) -> Vec<u8> {
    let len = 1 + rng.below(1400);
    rng.bytes(len)
}

/// A bare 20-byte STUN Binding request.
fn stun_request(rng: &mut Rng) -> Vec<u8> {
    let mut d = vec![0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    d.extend(rng.bytes(12));
    d
}

/// A classic RFC 3489 Binding request (no magic cookie: a 16-byte transaction id), bare or
/// with CHANGE-REQUEST as Vovida's `stun` sends it.
fn classic_stun_request(rng: &mut Rng, change: bool) -> Vec<u8> {
    let mut d = vec![0, 1, 0, if change { 8 } else { 0 }];
    d.extend(rng.bytes(16));
    if d[4..8] == [0x21, 0x12, 0xA4, 0x42] {
        d[4] = 0; // a cookie by chance: not classic
    }
    if change {
        d.extend([0, 3, 0, 4, 0, 0, 0, rng.bytes(1)[0] & 6]);
    }
    d
}

/// A Binding request with one attribute Pierce does not know (RESPONSE-PORT, PADDING,
/// PRIORITY): answered with a 420 (RFC 8489 §6.3.1).
fn unknown_attribute_request(rng: &mut Rng, i: usize) -> Vec<u8> {
    let mut d = stun_request(rng);
    d[3] = 8;
    let t = [0x0027u16, 0x0026, 0x0024][i % 3];
    d.extend(t.to_be_bytes());
    d.extend([0, 4]);
    d.extend(rng.bytes(4));
    d
}

// ---- clients ---------------------------------------------------------------------------

fn client_config(server_key: PublicKey) -> ClientConfig {
    let mut cfg = ClientConfig::default();
    cfg.server_key = Some(server_key);
    cfg
}

fn new_client(cfg: ClientConfig, server: SocketAddr) -> Client {
    let mut c = Client::new(
        Arc::new(cfg),
        os_seed().expect("os entropy"),
        Instant::now(),
    )
    .expect("valid client config");
    c.connect(Instant::now(), server, &[])
        .expect("fresh client");
    c
}

fn driven_client(cfg: ClientConfig, server: SocketAddr, bind_ip: IpAddr) -> Driver<Client> {
    Driver::bind(SocketAddr::new(bind_ip, 0), new_client(cfg, server)).expect("bind client")
}

/// Decides whether an outgoing datagram (destination, bytes) is sent.
type Filter = Box<dyn FnMut(SocketAddr, &[u8]) -> bool>;

/// A client driven by hand over a `std` socket, so the test sees (and may withhold) every
/// datagram it sends.
struct Manual {
    client: Client,
    socket: UdpSocket,
    addr: SocketAddr,
    tx: Vec<u8>,
    rx: Vec<u8>,
    /// Every datagram the client produced (sent or withheld), when capturing.
    sent: Vec<(SocketAddr, Vec<u8>)>,
    /// Every datagram received, when capturing.
    received: Vec<(SocketAddr, Vec<u8>)>,
    capture: bool,
    /// Decides each outgoing datagram: `true` sends it.
    filter: Filter,
    events: Vec<ClientEvent>,
}

impl Manual {
    fn new(cfg: ClientConfig, server: SocketAddr) -> Self {
        let socket = bind(ip(0, 0, 1));
        let addr = socket.local_addr().expect("local addr");
        Self {
            client: new_client(cfg, server),
            socket,
            addr,
            tx: vec![0; MAX_DATAGRAM_SIZE],
            rx: vec![0; 65_536],
            sent: Vec::new(),
            received: Vec::new(),
            capture: true,
            filter: Box::new(|_, _| true),
            events: Vec::new(),
        }
    }

    /// Reads what arrived, runs timers, sends what the client queued; collects events.
    fn pump(&mut self) {
        let now = Instant::now();
        for _ in 0..1024 {
            match self.socket.recv_from(&mut self.rx) {
                Ok((n, from)) => {
                    if self.capture {
                        self.received.push((from, self.rx[..n].to_vec()));
                    }
                    self.client.handle_datagram(now, from, &self.rx[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {} // ICMP errors of earlier sends
            }
        }
        if self.client.poll_timeout().is_some_and(|t| t.at <= now) {
            self.client.handle_timeout(now);
        }
        self.flush(now);
    }

    fn flush(&mut self, now: Instant) {
        // One socket only: any extra socket the client asks for cannot be opened.
        while let Some(r) = self.client.poll_socket_request() {
            if let pierce_core::SocketRequest::Open { id, .. } = r {
                self.client.handle_socket_opened(now, id, None);
            }
        }
        while let Some(t) = self.client.poll_transmit(now, &mut self.tx) {
            if t.socket != SocketId::PRIMARY {
                continue;
            }
            let d = &self.tx[..t.len];
            if self.capture {
                self.sent.push((t.dst, d.to_vec()));
            }
            if (self.filter)(t.dst, d) {
                let _ = self.socket.send_to(d, t.dst);
            }
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
    }
}

/// An in-process server on loopback with default settings.
fn local_server() -> Driver<Server> {
    let cfg = ServerConfig::new(SecretKey::from_bytes(os_seed().expect("os entropy")));
    let server = Server::new(
        Arc::new(cfg),
        os_seed().expect("os entropy"),
        Instant::now(),
        unix_time(),
    )
    .expect("valid server config");
    Driver::bind(SocketAddr::new(ip(0, 0, 1), 0), server).expect("bind server")
}

fn drain<E: pierce_core::Endpoint + pierce_core::Events>(
    d: &mut Driver<E>,
    into: &mut Vec<E::Event>,
) {
    while let Some(e) = d.poll_event() {
        into.push(e);
    }
}

// ---- a: a flood while real clients connect ---------------------------------------------

#[derive(Default)]
struct FloodCounts {
    packets: AtomicU64,
    bytes: AtomicU64,
    hellos: AtomicU64,
    replies: AtomicU64,
    reply_bytes: AtomicU64,
}

/// Floods `target` from 100 loopback addresses (127.0.0.2-101, changing ports as it goes)
/// with well-formed ClientHellos, ClientHello-shaped random bytes and garbage, about 3000
/// datagrams a second, until `stop`.
fn flood(target: SocketAddr, stop: &AtomicBool, counts: &FloodCounts) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut sockets: Vec<UdpSocket> = (2..=101).map(|i| bind(ip(0, 0, i))).collect();
    let mut buf = [0u8; 2048];
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let d = match rng.below(10) {
            0..4 => {
                counts.hellos.fetch_add(1, Ordering::Relaxed);
                client_hello(&mut rng)
            }
            4..7 => hello_shaped(&mut rng),
            _ => garbage(&mut rng),
        };
        let k = i % sockets.len();
        if sockets[k].send_to(&d, target).is_ok() {
            counts.packets.fetch_add(1, Ordering::Relaxed);
            counts.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        i += 1;
        if i % 3 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        if i % 100 == 0 {
            // Answers go to spoofed sources in real life; here they land on our sockets.
            for s in &sockets {
                while let Ok(n) = s.recv(&mut buf) {
                    counts.replies.fetch_add(1, Ordering::Relaxed);
                    counts.reply_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        if i % 500 == 0 {
            // A new source port on one of the addresses.
            let k = rng.below(sockets.len());
            let ip = sockets[k].local_addr().expect("local addr").ip();
            sockets[k] = bind(ip);
        }
    }
}

#[test]
fn fifty_clients_connect_through_a_spoofed_handshake_flood_and_memory_stays_bounded() {
    let _serial = serial();
    let server = ServerProc::start(&[]);
    let (rss0, _) = server.memory();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(FloodCounts::default());
    let flood_start = Instant::now();
    let flooder = {
        let (stop, counts, target) = (stop.clone(), counts.clone(), server.addr);
        thread::spawn(move || flood(target, &stop, &counts))
    };
    // Let the flood build up first: past 1024 half-open handshakes the server answers
    // hellos with a cookie Retry, so the real clients connect under load.
    thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let mut clients: Vec<Driver<Client>> = (1..=50)
        .map(|i| driven_client(client_config(server.key), server.addr, ip(0, 1, i)))
        .collect();
    let mut connected_at: Vec<Option<Duration>> = vec![None; clients.len()];
    let mut failed = Vec::new();
    let mut retries = 0;
    while connected_at.iter().any(Option::is_none) && started.elapsed() < CONNECT_BOUND {
        for (i, c) in clients.iter_mut().enumerate() {
            c.pump(Duration::ZERO).expect("client pump");
            while let Some(e) = c.poll_event() {
                match e {
                    ClientEvent::Connected { .. } => connected_at[i] = Some(started.elapsed()),
                    ClientEvent::Disconnected { reason } => failed.push((i, reason)),
                    _ => {}
                }
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    for c in &clients {
        retries += c.endpoint().stats().retries_received;
    }
    // Keep flooding a little while everyone is connected: sessions must survive it too.
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(1) {
        for c in &mut clients {
            c.pump(Duration::ZERO).expect("client pump");
            while let Some(e) = c.poll_event() {
                if let ClientEvent::Disconnected { reason } = e {
                    failed.push((usize::MAX, reason));
                }
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().expect("flood thread");
    let (rss, hwm) = server.memory();
    let connected = connected_at.iter().flatten().count();
    let last = connected_at.iter().flatten().max().copied();
    let secs = flood_start.elapsed().as_secs_f64();
    let packets = counts.packets.load(Ordering::Relaxed);
    println!(
        "HOSTILE flood: {packets} datagrams ({} MB, {} well-formed ClientHellos, ~{:.0}/s) from \
         100 spoofed loopback sources; {} answers ({} bytes) went back to them",
        counts.bytes.load(Ordering::Relaxed) / 1_000_000,
        counts.hellos.load(Ordering::Relaxed),
        packets as f64 / secs,
        counts.replies.load(Ordering::Relaxed),
        counts.reply_bytes.load(Ordering::Relaxed),
    );
    println!(
        "HOSTILE flood: {connected}/50 real clients connected, the last after {last:?} \
         ({retries} cookie retries); failures: {failed:?}"
    );
    println!(
        "HOSTILE flood: server memory VmRSS {rss0} kB before, {rss} kB after, peak VmHWM {hwm} \
         kB (bound {SERVER_MEMORY_BOUND_KB} kB)"
    );
    assert_eq!(
        connected, 50,
        "only {connected} of 50 clients connected within {CONNECT_BOUND:?}: {failed:?}"
    );
    assert!(failed.is_empty(), "sessions failed: {failed:?}");
    assert!(
        hwm <= SERVER_MEMORY_BOUND_KB,
        "server peak memory {hwm} kB over {SERVER_MEMORY_BOUND_KB} kB"
    );
    assert!(
        counts.reply_bytes.load(Ordering::Relaxed) <= counts.bytes.load(Ordering::Relaxed),
        "the flood was amplified"
    );
}

// ---- b: amplification per kind of input ------------------------------------------------

struct Kind {
    name: &'static str,
    datagrams: Vec<Vec<u8>>,
    /// Source addresses: a fresh set per kind, so one kind's rate limits do not mute another.
    sockets: Vec<UdpSocket>,
    sent: (u64, u64),
    replies: (u64, u64),
    largest_reply: usize,
}

/// A real client's datagrams to the server: its ClientHello and some sealed packets.
fn capture_client_packets(server: &ServerProc) -> Vec<Vec<u8>> {
    let mut c = Manual::new(client_config(server.key), server.addr);
    let start = Instant::now();
    while !c.client.is_connected() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "capture client connects"
        );
        c.pump();
        thread::sleep(Duration::from_millis(1));
    }
    for i in 0..20u8 {
        let now = Instant::now();
        let _ = c.client.send_to_server(now, &[i; 100]);
        c.pump();
        thread::sleep(Duration::from_millis(5));
    }
    c.sent
        .into_iter()
        .filter(|(dst, _)| *dst == server.addr)
        .map(|(_, d)| d)
        .collect()
}

fn measure_amplification(server: &ServerProc, label: &str, kinds: &mut [Kind]) {
    let mut buf = [0u8; 2048];
    // One kind at a time, paced, each answered before the next starts: the debug server
    // spends about a millisecond per handshake, and a backlog would overflow its socket's
    // receive buffer (kernel drops would understate the factors).
    for k in kinds.iter_mut() {
        for (i, d) in k.datagrams.iter().enumerate() {
            let s = &k.sockets[i % k.sockets.len()];
            if s.send_to(d, server.addr).is_ok() {
                k.sent.0 += 1;
                k.sent.1 += d.len() as u64;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let mut quiet_since = Instant::now();
        let start = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(300)
            && start.elapsed() < Duration::from_secs(5)
        {
            for s in &k.sockets {
                while let Ok(n) = s.recv(&mut buf) {
                    k.replies.0 += 1;
                    k.replies.1 += n as u64;
                    k.largest_reply = k.largest_reply.max(n);
                    quiet_since = Instant::now();
                }
            }
            thread::sleep(Duration::from_millis(5));
        }
        let bytes = k.replies.1 as f64 / k.sent.1.max(1) as f64;
        let packets = k.replies.0 as f64 / k.sent.0.max(1) as f64;
        println!(
            "HOSTILE amplification {label:<9} {:<12} in {:>3} datagrams {:>6} bytes, out {:>3} \
             datagrams {:>5} bytes (largest {:>3}): x{bytes:.3} bytes, x{packets:.3} datagrams",
            k.name, k.sent.0, k.sent.1, k.replies.0, k.replies.1, k.largest_reply
        );
    }
}

fn kind(name: &'static str, set: u8, datagrams: Vec<Vec<u8>>) -> Kind {
    Kind {
        name,
        datagrams,
        sockets: (1..=4).map(|i| bind(ip(0, 20 + set, i))).collect(),
        sent: (0, 0),
        replies: (0, 0),
        largest_reply: 0,
    }
}

#[test]
fn unsolicited_input_is_never_amplified_except_stun_within_its_factor() {
    let _serial = serial();
    let server = ServerProc::start(&[]);
    let captured = capture_client_packets(&server);
    assert!(captured.len() > 5, "captured {} packets", captured.len());
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let truncated: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            let d = &captured[i % captured.len()];
            d[..rng.below(d.len())].to_vec()
        })
        .collect();
    let mut kinds = vec![
        kind("garbage", 0, (0..200).map(|_| garbage(&mut rng)).collect()),
        kind("truncated", 1, truncated),
        // Verbatim copies of the real client's hello and sealed packets, from strangers.
        kind(
            "replayed",
            2,
            (0..100)
                .map(|i| captured[i % captured.len()].clone())
                .collect(),
        ),
        kind(
            "client-hello",
            3,
            (0..100).map(|_| client_hello(&mut rng)).collect(),
        ),
        kind(
            "hello-shaped",
            4,
            (0..100).map(|_| hello_shaped(&mut rng)).collect(),
        ),
        kind(
            "stun-binding",
            5,
            (0..100).map(|_| stun_request(&mut rng)).collect(),
        ),
        kind(
            "stun-classic",
            10,
            (0..100)
                .map(|i| classic_stun_request(&mut rng, i % 2 == 1))
                .collect(),
        ),
        kind(
            "stun-unknown",
            11,
            (0..99)
                .map(|i| unknown_attribute_request(&mut rng, i))
                .collect(),
        ),
        // The real client's sealed packets naming sessions the server does not have (as after
        // a restart): answered with a 20-byte stateless reset each, never more.
        kind(
            "stale-session",
            8,
            (0..100)
                .map(|i| {
                    let sealed: Vec<&Vec<u8>> = captured.iter().filter(|d| d[0] == 0xD3).collect();
                    let mut d = sealed[i % sealed.len()].clone();
                    d[4..8].copy_from_slice(&rng.bytes(4));
                    d
                })
                .collect(),
        ),
        // Resets themselves (any token): never answered.
        kind(
            "reset",
            9,
            (0..100)
                .map(|_| {
                    let mut d = vec![0xD8, 1, 0, 0];
                    d.extend_from_slice(&rng.bytes(16));
                    d
                })
                .collect(),
        ),
    ];
    measure_amplification(&server, "default", &mut kinds);
    for k in &kinds {
        let bytes = k.replies.1 as f64 / k.sent.1.max(1) as f64;
        let packets = k.replies.0 as f64 / k.sent.0.max(1) as f64;
        let limit = if k.name.starts_with("stun-") {
            2.0
        } else {
            1.0
        };
        assert!(
            bytes <= limit && packets <= 1.0,
            "{}: x{bytes:.3} bytes, x{packets:.3} datagrams",
            k.name
        );
    }
    let hellos = &kinds[3];
    assert!(hellos.replies.0 > 0, "well-formed hellos are answered");
    // Per request, too: a STUN answer is 40 bytes for 20 (IPv4).
    let stun = &kinds[5];
    assert!(stun.replies.0 > 0, "STUN Binding requests are answered");
    let (stale, resets) = (&kinds[8], &kinds[9]);
    for k in &kinds[5..8] {
        assert!(k.replies.0 > 0, "{}: answered", k.name);
    }
    assert!(
        stale.replies.0 > 0,
        "stale sessions are answered with resets"
    );
    assert!(stale.largest_reply == 20, "{} bytes", stale.largest_reply);
    assert_eq!(resets.replies.0, 0, "a reset is never answered");
    assert!(
        stun.largest_reply <= 2 * 20,
        "{} bytes for 20",
        stun.largest_reply
    );

    // With NAT behaviour discovery on (an alternate address), every request gets the RFC
    // 5780 answer (RFC 5780 §6.1: MAPPED-ADDRESS and XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN,
    // OTHER-ADDRESS: 76 bytes), possibly from another of the server's addresses: 3.8x a bare
    // 20-byte request. Classic RFC 3489 requests get MAPPED-ADDRESS, SOURCE-ADDRESS and
    // CHANGED-ADDRESS (56 bytes: 2.8x a bare one); unknown attributes a 420 (44 bytes).
    let server = ServerProc::start(&["--alt-listen", "127.0.0.2:0"]);
    let rfc5780: Vec<Vec<u8>> = (0..100u32)
        .map(|i| {
            let mut txid = [0u8; 12];
            txid.copy_from_slice(&rng.bytes(12));
            let mut buf = [0u8; 64];
            let n = if i % 2 == 0 {
                stun::encode_binding_request(&mut buf, &txid)
            } else {
                let flags = [0, stun::CHANGE_PORT, stun::CHANGE_IP][(i / 2 % 3) as usize];
                stun::encode_binding_request_change(&mut buf, &txid, flags)
            };
            buf[..n.expect("fits")].to_vec()
        })
        .collect();
    let mut kinds = vec![
        kind(
            "stun-binding",
            6,
            (0..100).map(|_| stun_request(&mut rng)).collect(),
        ),
        kind("stun-rfc5780", 7, rfc5780),
        kind(
            "stun-classic",
            12,
            (0..100)
                .map(|i| classic_stun_request(&mut rng, i % 2 == 1))
                .collect(),
        ),
        kind(
            "stun-unknown",
            13,
            (0..99)
                .map(|i| unknown_attribute_request(&mut rng, i))
                .collect(),
        ),
    ];
    measure_amplification(&server, "discovery", &mut kinds);
    for k in &kinds {
        let bytes = k.replies.1 as f64 / k.sent.1.max(1) as f64;
        let smallest = k.datagrams.iter().map(Vec::len).min().unwrap_or(1);
        assert!(k.replies.0 > 0, "{}: STUN is answered", k.name);
        assert!(bytes <= 3.8, "{} with discovery: x{bytes:.3}", k.name);
        // 3.8x the smallest request at most (76 bytes for 20).
        assert!(
            k.largest_reply * 10 <= 38 * smallest,
            "{}: {} bytes for {smallest}",
            k.name,
            k.largest_reply
        );
    }
}

// ---- c, d, e: in process ---------------------------------------------------------------

/// A server and clients on loopback, pumped together.
struct Lab {
    server: Driver<Server>,
    server_events: Vec<pierce_core::ServerEvent>,
    drivers: Vec<Driver<Client>>,
    events: Vec<Vec<ClientEvent>>,
    manual: Vec<Manual>,
}

impl Lab {
    fn new() -> Self {
        Self {
            server: local_server(),
            server_events: Vec::new(),
            drivers: Vec::new(),
            events: Vec::new(),
            manual: Vec::new(),
        }
    }

    fn add_driver(&mut self, cfg: ClientConfig) -> usize {
        let mut cfg = cfg;
        cfg.server_key = Some(self.server.endpoint().public_key());
        let d = driven_client(cfg, self.server.local_addr(), ip(0, 0, 1));
        self.drivers.push(d);
        self.events.push(Vec::new());
        self.drivers.len() - 1
    }

    fn add_manual(&mut self, cfg: ClientConfig) -> usize {
        let mut cfg = cfg;
        cfg.server_key = Some(self.server.endpoint().public_key());
        self.manual.push(Manual::new(cfg, self.server.local_addr()));
        self.manual.len() - 1
    }

    fn pump(&mut self) {
        self.server.pump(Duration::ZERO).expect("server pump");
        drain(&mut self.server, &mut self.server_events);
        for (d, ev) in self.drivers.iter_mut().zip(&mut self.events) {
            d.pump(Duration::ZERO).expect("client pump");
            drain(d, ev);
        }
        for m in &mut self.manual {
            m.pump();
        }
    }

    /// Pumps until `pred` or `limit`; false on timeout.
    fn until(&mut self, limit: Duration, mut pred: impl FnMut(&Self) -> bool) -> bool {
        let start = Instant::now();
        loop {
            if pred(self) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            self.pump();
            thread::sleep(Duration::from_micros(500));
        }
    }

    fn run_for(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            self.pump();
            thread::sleep(Duration::from_micros(500));
        }
    }

    fn driver_host(&self, i: usize) -> Option<HostId> {
        self.drivers[i].endpoint().host_id()
    }

    fn manual_host(&self, i: usize) -> Option<HostId> {
        self.manual[i].client.host_id()
    }

    fn group(&mut self, members: &[HostId]) -> GroupId {
        let now = Instant::now();
        self.server
            .endpoint_mut()
            .create_group(now, members)
            .expect("members are connected")
    }
}

fn relay_only() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.direct_paths = false;
    c
}

fn peer_messages(events: &[ClientEvent], body: &[u8]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, ClientEvent::PeerMessage { payload, .. } if &payload[..] == body))
        .count()
}

#[test]
fn the_relay_refuses_a_send_to_a_host_that_is_no_longer_a_member() {
    let _serial = serial();
    let mut lab = Lab::new();
    let (a, b, c) = (
        lab.add_driver(relay_only()),
        lab.add_driver(relay_only()),
        lab.add_driver(relay_only()),
    );
    assert!(lab.until(Duration::from_secs(10), |l| {
        (0..3).all(|i| l.drivers[i].endpoint().is_connected())
    }));
    let (ha, hb, hc) = (
        lab.driver_host(a).expect("connected"),
        lab.driver_host(b).expect("connected"),
        lab.driver_host(c).expect("connected"),
    );
    let g = lab.group(&[ha, hb]);
    assert!(lab.until(Duration::from_secs(5), |l| {
        l.drivers[a].endpoint().peers().any(|p| p == hb)
            && l.drivers[b].endpoint().peers().any(|p| p == ha)
    }));
    // The relay works between members.
    let now = Instant::now();
    lab.drivers[a]
        .endpoint_mut()
        .send(now, hb, Channel::RELIABLE_ORDERED, b"member")
        .expect("b is a peer");
    assert!(lab.until(Duration::from_secs(5), |l| {
        peer_messages(&l.events[b], b"member") == 1
    }));
    // A host it never shared a group with: the client API cannot even address it.
    let now = Instant::now();
    assert_eq!(
        lab.drivers[a]
            .endpoint_mut()
            .send(now, hc, Channel::RELIABLE_ORDERED, b"stranger"),
        Err(SendError::UnknownPeer)
    );
    // b leaves; before a hears of it, a relays to b. The server must refuse.
    let denied_before = lab.server.endpoint().stats().dropped.relay_denied;
    let relayed_before = lab.server.endpoint().stats().relayed_packets;
    let now = Instant::now();
    lab.server
        .endpoint_mut()
        .leave_group(now, g, hb)
        .expect("b is a member");
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let now = Instant::now();
        ids.push(
            lab.drivers[a]
                .endpoint_mut()
                .send(now, hb, Channel::RELIABLE_ORDERED, &[b'x', i])
                .expect("a has not heard yet"),
        );
        lab.drivers[a].pump(Duration::ZERO).expect("client pump");
    }
    // Give a's relay frames time to reach the server's socket before it reads.
    thread::sleep(Duration::from_millis(50));
    lab.run_for(Duration::from_millis(1500));
    let s = lab.server.endpoint().stats();
    let denied = s.dropped.relay_denied - denied_before;
    let leaked: usize = (0..5u8)
        .map(|i| peer_messages(&lab.events[b], &[b'x', i]))
        .sum();
    let expired: Vec<_> = lab.events[a]
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MessageExpired {
                peer, message_id, ..
            } if *peer == hb => Some(*message_id),
            _ => None,
        })
        .collect();
    let unreported: Vec<_> = ids.iter().filter(|id| !expired.contains(id)).collect();
    println!(
        "HOSTILE relay: 5 messages sent to a host that had just left the group: {denied} relay \
         frames refused (relay_denied), {} relayed, {leaked} delivered, {} of them reported \
         expired to the sender",
        s.relayed_packets - relayed_before,
        ids.len() - unreported.len()
    );
    assert!(denied >= 1, "the server relayed to a non-member: {s:?}");
    assert_eq!(leaked, 0, "a non-member received relayed messages");
    assert!(
        unreported.is_empty(),
        "the sender must learn that none was delivered: {unreported:?} not reported expired"
    );
    assert!(!lab.drivers[a].endpoint().peers().any(|p| p == hb));
}

#[test]
fn replayed_and_forged_peer_packets_do_not_move_a_direct_path() {
    let _serial = serial();
    let mut lab = Lab::new();
    let a = lab.add_driver(ClientConfig::default());
    let b = lab.add_manual(ClientConfig::default());
    assert!(lab.until(Duration::from_secs(10), |l| {
        l.drivers[a].endpoint().is_connected() && l.manual[b].client.is_connected()
    }));
    let (ha, hb) = (
        lab.driver_host(a).expect("connected"),
        lab.manual_host(b).expect("connected"),
    );
    lab.group(&[ha, hb]);
    let (a_addr, b_addr) = (lab.drivers[a].local_addr(), lab.manual[b].addr);
    let direct = |l: &Lab| {
        l.drivers[a].endpoint().peer_stats(hb).map(|s| s.path) == Some(Path::Direct(b_addr))
            && l.manual[b].client.peer_stats(ha).map(|s| s.path) == Some(Path::Direct(a_addr))
    };
    assert!(
        lab.until(Duration::from_secs(10), direct),
        "a and b go direct on loopback"
    );
    // Only packets sent once both ends held the pair key: a never dropped those for want of
    // the key, so each of them is a true replay.
    let (sent_from, received_from) = (lab.manual[b].sent.len(), lab.manual[b].received.len());
    // Some traffic both ways, then the captured peer packets.
    for i in 0..10u8 {
        let now = Instant::now();
        lab.drivers[a]
            .endpoint_mut()
            .send(now, hb, Channel::RELIABLE_ORDERED, &[1, i])
            .expect("peer");
        lab.manual[b]
            .client
            .send(now, ha, Channel::UNRELIABLE, &[2, i])
            .expect("peer");
        lab.run_for(Duration::from_millis(20));
    }
    let peer_packets = |v: &[(SocketAddr, Vec<u8>)], addr: SocketAddr| -> Vec<Vec<u8>> {
        v.iter()
            .filter(|(x, d)| *x == addr && d.first() == Some(&KIND_PEER))
            .map(|(_, d)| d.clone())
            .collect()
    };
    let b_to_a = peer_packets(&lab.manual[b].sent[sent_from..], a_addr);
    let a_to_b = peer_packets(&lab.manual[b].received[received_from..], a_addr);
    assert!(b_to_a.len() >= 10 && a_to_b.len() >= 10);
    let attacker = bind(ip(0, 3, 1));
    let attacker_addr = attacker.local_addr().expect("local addr");
    let a_drops = |l: &Lab| l.drivers[a].endpoint().stats().dropped;
    let b_drops = |l: &Lab| l.manual[b].client.stats().dropped;
    let (a0, b0) = (a_drops(&lab), b_drops(&lab));

    // Replays from a stranger's address, and from the genuine addresses.
    for d in &b_to_a {
        attacker.send_to(d, a_addr).expect("send");
        lab.manual[b].socket.send_to(d, a_addr).expect("send");
    }
    for d in &a_to_b {
        attacker.send_to(d, b_addr).expect("send");
    }
    // Forgeries: a real header with a fresh counter, random body and tag, from the stranger
    // and from b's own address.
    let mut rng = Rng(77);
    let header = SealedPacket::decode(&b_to_a[0])
        .expect("captured peer packet")
        .header;
    let mut forged = 0;
    for i in 0..100u64 {
        let mut d = b_to_a[0][..HEADER_LEN].to_vec();
        d[8..16].copy_from_slice(&(header.counter + 1_000_000 + i).to_be_bytes());
        let len = 16 + rng.below(100);
        d.extend(rng.bytes(len));
        attacker.send_to(&d, a_addr).expect("send");
        lab.manual[b].socket.send_to(&d, a_addr).expect("send");
        forged += 2;
    }
    let mut path_changes = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        lab.pump();
        if !direct(&lab) {
            path_changes += 1;
        }
        thread::sleep(Duration::from_micros(500));
    }
    let (a1, b1) = (a_drops(&lab), b_drops(&lab));
    let replayed = (a1.replayed - a0.replayed) + (b1.replayed - b0.replayed);
    let auth = a1.auth_failed - a0.auth_failed;
    println!(
        "HOSTILE probes: {} replayed peer packets (punch probes, keepalives, data) and {forged} \
         forged ones: {replayed} dropped as replays, {auth} failed authentication; the direct \
         path moved {path_changes} times",
        2 * b_to_a.len() + a_to_b.len()
    );
    assert_eq!(
        path_changes, 0,
        "a replayed or forged packet moved the path"
    );
    assert!(direct(&lab));
    assert_eq!(
        replayed,
        (2 * b_to_a.len() + a_to_b.len()) as u64,
        "{a1:?} {b1:?}"
    );
    assert_eq!(auth, forged);

    // An authentic packet a never saw, arriving first from the attacker's address (an
    // on-path attacker that forwards b's packets from elsewhere): a must not move there on an
    // authentic packet alone; it probes the new address (which never answers the nonce) and
    // keeps the validated path.
    lab.manual[b].filter = Box::new(move |dst, d| !(dst == a_addr && d[0] == KIND_PEER));
    let before = peer_packets(&lab.manual[b].sent, a_addr).len();
    let start = Instant::now();
    let stolen = loop {
        lab.pump();
        let sent = peer_packets(&lab.manual[b].sent, a_addr);
        if sent.len() > before {
            break sent.last().expect("one more").clone();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "b sends to a");
        thread::sleep(Duration::from_micros(500));
    };
    lab.manual[b].filter = Box::new(|_, _| true);
    attacker.send_to(&stolen, a_addr).expect("send");
    lab.pump();
    let moved = lab.drivers[a].endpoint().peer_stats(hb).map(|s| s.path);
    let back = lab.until(Duration::from_secs(5), direct);
    let mut buf = [0u8; 2048];
    let mut to_attacker = 0;
    while attacker.recv(&mut buf).is_ok() {
        to_attacker += 1;
    }
    println!(
        "HOSTILE probes: a fresh b->a packet forwarded from {attacker_addr}: a's path to b is \
         {moved:?} (moves only after path validation), direct to {b_addr} after: {back}; \
         {to_attacker} datagrams reached the attacker"
    );
    assert_eq!(
        moved,
        Some(Path::Direct(b_addr)),
        "an authentic packet forwarded from elsewhere moved the path before the new address \
         answered a probe (path validation)"
    );
    assert!(back, "the genuine path stays direct");
    // Traffic still flows on the genuine path.
    let now = Instant::now();
    lab.drivers[a]
        .endpoint_mut()
        .send(now, hb, Channel::RELIABLE_ORDERED, b"after the attack")
        .expect("peer");
    assert!(lab.until(Duration::from_secs(5), |l| {
        peer_messages(&l.manual[b].events, b"after the attack") == 1
    }));
}

/// (VmRSS, VmHWM) of this test process in KiB, after resetting the peak.
fn reset_own_peak() -> (u64, u64) {
    // "5" resets VmHWM to VmRSS (Linux 4.0+); if refused, the peak covers the whole run.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    memory_of(std::process::id())
}

#[test]
fn a_peer_abusing_fragmentation_is_dropped_with_a_reason_and_memory_stays_bounded() {
    let _serial = serial();
    let mut lab = Lab::new();
    // The victim accepts messages up to 64 KiB and holds at most 128 KiB of partial ones.
    let mut victim_cfg = ClientConfig::default();
    victim_cfg.max_message_size = 64 << 10;
    victim_cfg.max_reassembly_bytes = 128 << 10;
    let v = lab.add_driver(victim_cfg.clone());
    let v2 = lab.add_driver(victim_cfg);
    // Attackers allow themselves 1 MiB messages; each can drop its own datagrams.
    let x = lab.add_manual(ClientConfig::default());
    let y = lab.add_manual(ClientConfig::default());
    for m in &mut lab.manual {
        m.capture = false;
    }
    assert!(lab.until(Duration::from_secs(10), |l| {
        l.drivers.iter().all(|d| d.endpoint().is_connected())
            && l.manual.iter().all(|m| m.client.is_connected())
    }));
    let (hv, hv2, hx, hy) = (
        lab.driver_host(v).expect("connected"),
        lab.driver_host(v2).expect("connected"),
        lab.manual_host(x).expect("connected"),
        lab.manual_host(y).expect("connected"),
    );
    lab.group(&[hv, hx]);
    lab.group(&[hv2, hy]);
    assert!(lab.until(Duration::from_secs(10), |l| {
        l.manual[x].client.peers().any(|p| p == hv) && l.manual[y].client.peers().any(|p| p == hv2)
    }));
    let (_, base) = reset_own_peak();

    // Oversize: one 200 KiB message announces more than the victim accepts.
    let now = Instant::now();
    lab.manual[x]
        .client
        .send(now, hv, Channel::RELIABLE_ORDERED, &vec![7u8; 200 << 10])
        .expect("within the attacker's own limit");
    let dropped = |l: &Lab, v: usize, h: HostId| {
        l.events[v].iter().find_map(|e| match e {
            ClientEvent::PeerDropped { peer, reason } if *peer == h => Some(*reason),
            _ => None,
        })
    };
    assert!(lab.until(Duration::from_secs(10), |l| dropped(l, v, hx).is_some()));
    let oversize = dropped(&lab, v, hx);

    // Reassembly abuse: many 60 KiB messages on every reliable channel while a third of the
    // attacker's datagrams never arrive, so partial messages pile up at the victim.
    let mut n = 0u64;
    lab.manual[y].filter = Box::new(move |_, _| {
        n += 1;
        n % 3 != 0
    });
    let mut sent = 0;
    for i in 0..40u8 {
        let now = Instant::now();
        let channel = Channel(i % 3);
        if lab.manual[y]
            .client
            .send(now, hv2, channel, &vec![i; 60 << 10])
            .is_ok()
        {
            sent += 1;
        }
    }
    assert!(lab.until(Duration::from_secs(20), |l| dropped(l, v2, hy).is_some()));
    let partial = dropped(&lab, v2, hy);
    lab.run_for(Duration::from_millis(500));
    let (rss, peak) = memory_of(std::process::id());
    let delivered = lab.events[v2]
        .iter()
        .filter(|e| matches!(e, ClientEvent::PeerMessage { .. }))
        .count();
    println!(
        "HOSTILE fragments: a 200 KiB message to a peer that accepts 64 KiB: dropped with \
         {oversize:?}; {sent} messages of 60 KiB over a link losing 1/3: {delivered} delivered, \
         then dropped with {partial:?}; test process VmRSS {rss} kB, peak {peak} kB (from {base} kB)"
    );
    assert_eq!(oversize, Some(PeerDropReason::MessageTooLarge));
    assert_eq!(partial, Some(PeerDropReason::ReassemblyLimit));
    // The victims stopped listening to the attackers and kept nothing of theirs.
    assert!(!lab.drivers[v].endpoint().peers().any(|p| p == hx));
    assert!(!lab.drivers[v2].endpoint().peers().any(|p| p == hy));
    // The attackers queued a few MiB of their own; the victims hold at most 128 KiB of
    // partial messages each. 64 MiB covers both with a wide margin.
    assert!(
        peak.saturating_sub(base) <= 64 * 1024,
        "memory grew by {} kB",
        peak.saturating_sub(base)
    );
}
