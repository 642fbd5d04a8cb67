//! Core datagram path: a connected client and server in memory; each iteration queues a
//! payload on the client, seals it (`poll_transmit`), and opens it on the server
//! (`handle_datagram` + `poll_event`). Reports datagrams per second and heap allocations per
//! datagram in steady state, next to bare ChaCha20-Poly1305 seal+open of the same bytes
//! measured in the same run (the floor any encrypted protocol pays), as a ratio.
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
    Client, ClientConfig, MAX_DATAGRAM_SIZE, SecretKey, Server, ServerConfig, ServerEvent,
};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
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
    println!("{result}");
}
