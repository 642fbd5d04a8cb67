//! Core datagram path: a connected client and server in memory; each iteration queues a
//! payload on the client, seals it (`poll_transmit`), and opens it on the server
//! (`handle_datagram` + `poll_event`). Reports datagrams per second and heap allocations per
//! datagram in steady state, next to bare ChaCha20-Poly1305 seal+open of the same bytes
//! measured in the same run (the floor any encrypted protocol pays), as a ratio.
//!
//! Then the relay path (the server's hot path): two relay-only clients in one group; each
//! iteration sends a peer message from one to the other through the server (client seals
//! with the pair key -> server checks the relay tag and budgets, rewrites the header -> client
//! opens -> event). Reports relayed messages per second end to end, each side's own time (the
//! sender's per message, the server's per relayed packet, the receiver's per message
//! received; timed around their calls), and the server's heap allocations per relayed packet.
//! The same file builds on commits before the relay fast path (`git worktree add ... a5526af`,
//! copy this file in): client time per relayed message before and after.
//!
//! `cargo bench -p pierce-core --bench datagram`
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock; the core never does
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use pierce_core::{Endpoint as _, Events as _};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use pierce_core::{
    Channel, Client, ClientConfig, ClientEvent, HostId, MAX_DATAGRAM_SIZE, SecretKey, Server,
    ServerConfig, ServerEvent,
};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations made while `IN_SERVER` is set (single-threaded bench: a plain flag).
static SERVER_ALLOCS: AtomicU64 = AtomicU64::new(0);
static IN_SERVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        if IN_SERVER.load(Ordering::Relaxed) {
            SERVER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        if IN_SERVER.load(Ordering::Relaxed) {
            SERVER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUNDS: usize = 7;
const PER_ROUND: u64 = 200_000;

struct Pair {
    now: Instant,
    server: Server,
    client: Client,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    buf: Vec<u8>,
}

impl Pair {
    fn connected() -> Self {
        let now = Instant::now();
        let cfg = ServerConfig::new(SecretKey::from_bytes([1; 32]));
        let server = Server::new(Arc::new(cfg), [2; 32], now, Duration::ZERO).unwrap();
        let client = Client::new(Arc::new(ClientConfig::default()), [3; 32], now).unwrap();
        let mut p = Self {
            now,
            server,
            client,
            client_addr: "10.0.0.2:5000".parse().unwrap(),
            server_addr: "10.0.0.1:7000".parse().unwrap(),
            buf: vec![0; MAX_DATAGRAM_SIZE],
        };
        p.client.connect(now, p.server_addr, &[]).unwrap();
        for _ in 0..10 {
            p.shuttle();
        }
        assert!(p.client.is_connected());
        while p.client.poll_event().is_some() {}
        while p.server.poll_event().is_some() {}
        p
    }

    fn shuttle(&mut self) {
        while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf) {
            self.server
                .handle_datagram(self.now, self.client_addr, &self.buf[..t.len]);
        }
        while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
            self.client
                .handle_datagram(self.now, self.server_addr, &self.buf[..t.len]);
        }
    }

    /// One datagram client → server; returns the payload length the server saw.
    fn one(&mut self, payload: &[u8]) -> usize {
        self.client.send_to_server(self.now, payload).unwrap();
        let t = self.client.poll_transmit(self.now, &mut self.buf).unwrap();
        self.server
            .handle_datagram(self.now, self.client_addr, &self.buf[..t.len]);
        match self.server.poll_event() {
            Some(ServerEvent::Message { payload, .. }) => payload.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Two relay-only clients in one group, and their server.
struct Relay {
    now: Instant,
    server: Server,
    a: Client,
    b: Client,
    a_id: HostId,
    b_id: HostId,
    server_addr: SocketAddr,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    buf: Vec<u8>,
    /// Server time spent in the measured calls.
    server_time: Duration,
    /// The sending client's time in `send` and `poll_transmit` (sealing the message).
    sender_time: Duration,
    /// The receiving client's time in `handle_datagram` and `poll_event` for the relayed
    /// packet (opening it, to the event).
    receiver_time: Duration,
}

impl Relay {
    fn grouped() -> Self {
        let now = Instant::now();
        let mut cfg = ServerConfig::new(SecretKey::from_bytes([1; 32]));
        // Budgets out of the way: this measures the path, not the policy.
        cfg.relay_rate_per_client = u32::MAX;
        cfg.relay_burst_per_client = u32::MAX;
        cfg.relay_rate_per_group = u32::MAX;
        cfg.relay_rate_total = u32::MAX;
        let server = Server::new(Arc::new(cfg), [2; 32], now, Duration::ZERO).unwrap();
        let mut ccfg = ClientConfig::default();
        ccfg.direct_paths = false;
        let ccfg = Arc::new(ccfg);
        let mut r = Self {
            now,
            server,
            a: Client::new(ccfg.clone(), [3; 32], now).unwrap(),
            b: Client::new(ccfg, [4; 32], now).unwrap(),
            a_id: HostId(0),
            b_id: HostId(0),
            server_addr: "10.0.0.1:7000".parse().unwrap(),
            a_addr: "10.0.0.2:5000".parse().unwrap(),
            b_addr: "10.0.0.3:5000".parse().unwrap(),
            buf: vec![0; MAX_DATAGRAM_SIZE],
            server_time: Duration::ZERO,
            sender_time: Duration::ZERO,
            receiver_time: Duration::ZERO,
        };
        r.a.connect(now, r.server_addr, &[]).unwrap();
        r.b.connect(now, r.server_addr, &[]).unwrap();
        for _ in 0..10 {
            r.shuttle();
        }
        r.a_id = r.a.host_id().unwrap();
        r.b_id = r.b.host_id().unwrap();
        r.server.create_group(now, &[r.a_id, r.b_id]).unwrap();
        for _ in 0..10 {
            r.shuttle();
        }
        while r.a.poll_event().is_some() {}
        while r.b.poll_event().is_some() {}
        while r.server.poll_event().is_some() {}
        r
    }

    /// Delivers everything queued (only to the server and from it: no direct paths).
    fn shuttle(&mut self) {
        for (c, addr) in [(&mut self.a, self.a_addr), (&mut self.b, self.b_addr)] {
            while let Some(t) = c.poll_transmit(self.now, &mut self.buf) {
                if t.dst == self.server_addr {
                    self.server
                        .handle_datagram(self.now, addr, &self.buf[..t.len]);
                }
            }
        }
        while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
            let c = if t.dst == self.a_addr {
                &mut self.a
            } else {
                &mut self.b
            };
            c.handle_datagram(self.now, self.server_addr, &self.buf[..t.len]);
        }
    }

    /// One peer message a -> server -> b; returns the payload length b saw.
    fn one(&mut self, payload: &[u8]) -> usize {
        // Time moves (10 µs a message), so budgets and timers behave as in a real run.
        self.now += Duration::from_micros(10);
        let t0 = Instant::now();
        self.a
            .send(self.now, self.b_id, Channel::UNRELIABLE, payload)
            .unwrap();
        self.sender_time += t0.elapsed();
        let mut seen = 0;
        loop {
            let t0 = Instant::now();
            let t = self.a.poll_transmit(self.now, &mut self.buf);
            self.sender_time += t0.elapsed();
            let Some(t) = t else { break };
            if t.dst != self.server_addr {
                continue;
            }
            let t0 = Instant::now();
            IN_SERVER.store(true, Ordering::Relaxed);
            self.server
                .handle_datagram(self.now, self.a_addr, &self.buf[..t.len]);
            IN_SERVER.store(false, Ordering::Relaxed);
            self.server_time += t0.elapsed();
            loop {
                let t0 = Instant::now();
                IN_SERVER.store(true, Ordering::Relaxed);
                let t = self.server.poll_transmit(self.now, &mut self.buf);
                IN_SERVER.store(false, Ordering::Relaxed);
                self.server_time += t0.elapsed();
                let Some(t) = t else { break };
                if t.dst == self.a_addr {
                    (self.a).handle_datagram(self.now, self.server_addr, &self.buf[..t.len]);
                } else {
                    let t0 = Instant::now();
                    (self.b).handle_datagram(self.now, self.server_addr, &self.buf[..t.len]);
                    self.receiver_time += t0.elapsed();
                }
            }
        }
        let t0 = Instant::now();
        while let Some(e) = self.b.poll_event() {
            if let ClientEvent::PeerMessage { payload, .. } = e {
                seen += payload.len();
            }
        }
        self.receiver_time += t0.elapsed();
        // Acknowledgements, keepalives: delivered, not timed.
        self.shuttle();
        while self.a.poll_event().is_some() {}
        while self.server.poll_event().is_some() {}
        seen
    }
}

/// The relay path's figures for one payload size (medians over the rounds).
struct RelayFigures {
    /// Messages per second end to end.
    rate: f64,
    /// (max - min) / median of the rate, percent.
    spread: f64,
    /// Server time per relayed packet.
    server_ns: f64,
    /// Server allocations per relayed packet.
    allocs: f64,
    /// Sending client's time per message.
    sender_ns: f64,
    /// Receiving client's time per message received.
    receiver_ns: f64,
}

/// Relay path, one payload size.
fn measure_relay(r: &mut Relay, size: usize) -> RelayFigures {
    const RELAY_PER_ROUND: u64 = 50_000;
    let payload = vec![0x42u8; size];
    for _ in 0..20_000 {
        r.one(&payload);
    }
    let (mut rate, mut server_ns, mut allocs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sender_ns, mut receiver_ns) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let relayed0 = r.server.stats().relayed_packets;
        let a0 = SERVER_ALLOCS.load(Ordering::Relaxed);
        r.server_time = Duration::ZERO;
        r.sender_time = Duration::ZERO;
        r.receiver_time = Duration::ZERO;
        let t = Instant::now();
        let mut seen = 0;
        for _ in 0..RELAY_PER_ROUND {
            seen += r.one(&payload);
        }
        let dt = t.elapsed().as_secs_f64();
        let relayed = (r.server.stats().relayed_packets - relayed0) as f64;
        assert_eq!(seen, payload.len() * RELAY_PER_ROUND as usize);
        rate.push(RELAY_PER_ROUND as f64 / dt);
        server_ns.push(r.server_time.as_nanos() as f64 / relayed);
        allocs.push((SERVER_ALLOCS.load(Ordering::Relaxed) - a0) as f64 / relayed);
        sender_ns.push(r.sender_time.as_nanos() as f64 / RELAY_PER_ROUND as f64);
        receiver_ns.push(r.receiver_time.as_nanos() as f64 / RELAY_PER_ROUND as f64);
    }
    let (lo, hi) = rate
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
    let spread = (hi - lo) / median(rate.clone()) * 100.0;
    RelayFigures {
        rate: median(rate),
        spread,
        server_ns: median(server_ns),
        allocs: median(allocs),
        sender_ns: median(sender_ns),
        receiver_ns: median(receiver_ns),
    }
}

fn raw_aead(payload: &[u8], n: u64) -> f64 {
    let tx = ChaCha20Poly1305::new(Key::from_slice(&[7; 32]));
    let rx = ChaCha20Poly1305::new(Key::from_slice(&[7; 32]));
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    let aad = [0u8; 16];
    let t = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&i.to_be_bytes());
        let body = &mut buf[..payload.len()];
        body.copy_from_slice(payload);
        let tag = tx
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, body)
            .unwrap();
        rx.decrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, body, &tag)
            .unwrap();
        black_box(&buf);
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One payload size: Pierce and bare AEAD alternated round by round. Returns
/// (pierce median, raw median, allocs median, pierce spread %, raw spread %).
fn measure(pair: &mut Pair, size: usize) -> (f64, f64, f64, f64, f64) {
    let payload = vec![0x42u8; size];
    // Warm-up: lets arenas and queues reach their steady-state capacity.
    for _ in 0..50_000 {
        pair.one(&payload);
    }
    let (mut pierce, mut raw, mut allocs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let t = Instant::now();
        let mut seen = 0;
        for _ in 0..PER_ROUND {
            seen += pair.one(&payload);
        }
        let dt = t.elapsed().as_secs_f64();
        allocs.push((ALLOCS.load(Ordering::Relaxed) - a0) as f64 / PER_ROUND as f64);
        assert_eq!(seen, payload.len() * PER_ROUND as usize);
        pierce.push(PER_ROUND as f64 / dt);
        raw.push(raw_aead(&payload, PER_ROUND));
    }
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
        (hi - lo) / median(v.to_vec()) * 100.0
    };
    (
        median(pierce.clone()),
        median(raw.clone()),
        median(allocs),
        spread(&pierce),
        spread(&raw),
    )
}

fn main() {
    let mut pair = Pair::connected();
    // 64 B (a game tick), 100 B, and the largest payload one 1200-byte datagram carries.
    let full = pair.client.max_server_payload();
    let sizes = [64, 100, full];
    println!(
        "datagram path (one core): client send -> seal -> server open -> event; {ROUNDS} rounds x \
         {PER_ROUND} datagrams per size, alternating with bare ChaCha20-Poly1305 seal+open of \
         the same bytes (median, spread = (max-min)/median)"
    );
    println!(
        "| payload | pierce datagrams/s | spread | bare AEAD/s | spread | ratio | allocs/datagram |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut result = String::from("RESULT");
    for size in sizes {
        let (p, r, a, ps, rs) = measure(&mut pair, size);
        println!(
            "| {size} B | {p:.0} | {ps:.1}% | {r:.0} | {rs:.1}% | {:.3} | {a:.4} |",
            p / r
        );
        let key = if size == full {
            "1200Bdgram".to_owned()
        } else {
            format!("{size}B")
        };
        result.push_str(&format!(
            " dgrams_per_sec_{key}={p:.0} ratio_vs_raw_aead_{key}={:.3} allocs_per_dgram_{key}={a:.4}",
            p / r
        ));
    }
    println!("(1200Bdgram: a {full}-byte payload, the largest that fits one 1200-byte datagram)");

    let mut relay = Relay::grouped();
    println!();
    println!(
        "relay path: peer message a -> server -> b, relay-only clients, unreliable channel; \
         {ROUNDS} rounds (median); each side's time measured around its own calls (the sender's \
         send + poll_transmit, the server's handle_datagram + poll_transmit, the receiver's \
         handle_datagram + poll_event for the relayed packet)"
    );
    println!(
        "| payload | relayed messages/s | spread | sender ns/message | server ns/relayed packet | receiver ns/message | server allocs/relayed packet |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let relay_full = relay.a.max_unreliable_payload();
    for size in [64, relay_full] {
        let RelayFigures {
            rate,
            spread,
            server_ns: ns,
            allocs,
            sender_ns,
            receiver_ns,
        } = measure_relay(&mut relay, size);
        println!(
            "| {size} B | {rate:.0} | {spread:.1}% | {sender_ns:.0} | {ns:.0} | {receiver_ns:.0} | {allocs:.4} |"
        );
        let key = if size == relay_full {
            "full".to_owned()
        } else {
            format!("{size}B")
        };
        result.push_str(&format!(
            " relay_msgs_per_sec_{key}={rate:.0} relay_server_ns_{key}={ns:.0} relay_server_allocs_{key}={allocs:.4} relay_sender_ns_{key}={sender_ns:.0} relay_receiver_ns_{key}={receiver_ns:.0}"
        ));
    }
    println!("{result}");
}
