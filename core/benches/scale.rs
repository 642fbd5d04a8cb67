//! How far one server goes: 10 000 clients connected in memory to one `Server`, then 5 000
//! groups of 2–8 members (overlapping: every client is in about 2.5 groups). Reports the
//! server's own heap per idle client and its growth per pair formed (live bytes allocated
//! during server calls, net of frees; the pair figure includes the per-session control
//! buffers that grew to carry the introductions), join throughput (groups formed and every `PeerAdd` delivered, per second),
//! and the server CPU time of 10 s of idle keepalives (clients ping every 2 s, the server
//! every 5 s, and times its sessions; nobody may be called offline).
//!
//! `cargo bench -p pierce-core --bench scale`
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock; the core never does
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use pierce_core::{Endpoint as _, Events as _};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use pierce_core::{
    Client, ClientConfig, HostId, MAX_DATAGRAM_SIZE, SecretKey, Server, ServerConfig,
};

/// Live bytes allocated while `IN_SERVER` is set on this thread.
static SERVER_BYTES: AtomicI64 = AtomicI64::new(0);
thread_local! {
    static IN_SERVER: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if IN_SERVER.with(Cell::get) {
            SERVER_BYTES.fetch_add(l.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if IN_SERVER.with(Cell::get) {
            SERVER_BYTES.fetch_sub(l.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if IN_SERVER.with(Cell::get) {
            SERVER_BYTES.fetch_add(n as i64 - l.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CLIENTS: usize = 10_000;
const GROUPS: usize = 5_000;

/// Runs `f` with server allocations counted.
fn server<R>(f: impl FnOnce() -> R) -> R {
    IN_SERVER.with(|c| c.set(true));
    let r = f();
    IN_SERVER.with(|c| c.set(false));
    r
}

struct World {
    now: Instant,
    server: Server,
    clients: Vec<Client>,
    addrs: Vec<SocketAddr>,
    buf: Vec<u8>,
    /// Time spent inside server calls.
    server_time: Duration,
}

impl World {
    fn addr_of(i: usize) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5000))
    }

    /// Runs every timer now and delivers what they send.
    fn tick(&mut self) {
        let now = self.now;
        for c in &mut self.clients {
            c.handle_timeout(now);
        }
        let srv = &mut self.server;
        let t0 = Instant::now();
        server(|| srv.handle_timeout(now));
        self.server_time += t0.elapsed();
        let all: Vec<usize> = (0..self.clients.len()).collect();
        self.shuttle(&all);
    }

    /// Delivers everything in flight until quiet; returns datagrams moved.
    fn shuttle(&mut self, from: &[usize]) -> u64 {
        let server_addr: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let mut moved = 0;
        let mut active: Vec<usize> = from.to_vec();
        loop {
            let mut any = false;
            for &i in &active {
                while let Some(t) = self.clients[i].poll_transmit(self.now, &mut self.buf) {
                    let (now, addr) = (self.now, self.addrs[i]);
                    let buf = &self.buf[..t.len];
                    let t0 = Instant::now();
                    let srv = &mut self.server;
                    server(|| srv.handle_datagram(now, addr, buf));
                    self.server_time += t0.elapsed();
                    moved += 1;
                    any = true;
                }
            }
            let mut touched = Vec::new();
            loop {
                let (now, srv, buf) = (self.now, &mut self.server, &mut self.buf);
                let t0 = Instant::now();
                let t = server(|| srv.poll_transmit(now, buf));
                self.server_time += t0.elapsed();
                let Some(t) = t else { break };
                let i = self.addrs.binary_search(&t.dst).unwrap();
                self.clients[i].handle_datagram(self.now, server_addr, &self.buf[..t.len]);
                touched.push(i);
                moved += 1;
                any = true;
            }
            while server(|| self.server.poll_event()).is_some() {}
            if !any {
                break;
            }
            touched.sort_unstable();
            touched.dedup();
            active = touched;
        }
        moved
    }
}

fn main() {
    let start = Instant::now();
    let server_addr: SocketAddr = "203.0.113.1:3478".parse().unwrap();
    let cfg = ServerConfig::new(SecretKey::from_bytes([1; 32]));
    let srv = server(|| Server::new(Arc::new(cfg), [2; 32], start, Duration::ZERO).unwrap());
    let mut ccfg = ClientConfig::default();
    ccfg.nat_discovery = false;
    let ccfg = Arc::new(ccfg);
    let mut w = World {
        now: start,
        server: srv,
        clients: Vec::with_capacity(CLIENTS),
        addrs: (0..CLIENTS).map(World::addr_of).collect(),
        buf: vec![0; MAX_DATAGRAM_SIZE],
        server_time: Duration::ZERO,
    };
    let base = SERVER_BYTES.load(Ordering::Relaxed);

    // Connect in batches (the server's handshake rate limit is per source IP and global:
    // advance time between batches like a real arrival rate would).
    let t_connect = Instant::now();
    for b in 0..CLIENTS.div_ceil(100) {
        let batch: Vec<usize> = (b * 100..((b + 1) * 100).min(CLIENTS)).collect();
        for &i in &batch {
            let seed = [(i % 251) as u8 ^ 0x5A; 32];
            let mut c = Client::new(ccfg.clone(), seed, w.now).unwrap();
            c.connect(w.now, server_addr, &[]).unwrap();
            w.clients.push(c);
        }
        w.shuttle(&batch);
        w.now += Duration::from_millis(100);
        if b % 20 == 19 {
            // Every 2 s of virtual time: timers everywhere (keepalives keep the early
            // clients' sessions alive through the 10 s of arrivals).
            w.tick();
        }
    }
    w.tick();
    let connect_s = t_connect.elapsed().as_secs_f64();
    let connected = w.clients.iter().filter(|c| c.is_connected()).count();
    assert_eq!(connected, CLIENTS, "every client connects");
    let per_client = (SERVER_BYTES.load(Ordering::Relaxed) - base) as f64 / CLIENTS as f64;
    let hosts: Vec<HostId> = w.clients.iter().map(|c| c.host_id().unwrap()).collect();

    // Groups of 2..=8 members, overlapping.
    let before_groups = SERVER_BYTES.load(Ordering::Relaxed);
    let server_time0 = w.server_time;
    let t_groups = Instant::now();
    let mut next = 0usize;
    let mut memberships = 0usize;
    let all: Vec<usize> = (0..CLIENTS).collect();
    for g in 0..GROUPS {
        let size = 2 + g % 7;
        let members: Vec<HostId> = (0..size)
            .map(|k| hosts[(next + k * 997) % CLIENTS])
            .collect();
        next += size;
        memberships += size;
        let (now, s) = (w.now, &mut w.server);
        let t0 = Instant::now();
        server(|| s.create_group(now, &members).unwrap());
        w.server_time += t0.elapsed();
        if g % 250 == 249 {
            w.shuttle(&all);
            w.now += Duration::from_millis(10);
        }
    }
    w.shuttle(&all);
    let groups_s = t_groups.elapsed().as_secs_f64();
    // Delayed acknowledgements go out on the clients' next timer: after them the server
    // holds only what the pairs themselves need.
    w.now += Duration::from_millis(100);
    w.tick();
    let groups_server_s = (w.server_time - server_time0).as_secs_f64();
    let pairs = w.server.stats().pairs;
    let per_pair = (SERVER_BYTES.load(Ordering::Relaxed) - before_groups) as f64 / pairs as f64;
    let peers_known: usize = w.clients.iter().map(|c| c.peers().count()).sum();
    assert_eq!(peers_known as u64, pairs * 2, "every PeerAdd delivered");

    // Idle steady state: 10 s windows stepped every 500 ms (clients ping after 2 s of
    // silence, the server after 5 s); the server's CPU per window. Nobody may go offline.
    let offline_before = w.server.stats().clients_offline;
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let t_before = w.server_time;
        for _ in 0..20 {
            w.now += Duration::from_millis(500);
            for c in &mut w.clients {
                c.handle_timeout(w.now);
            }
            let (now, s) = (w.now, &mut w.server);
            let t0 = Instant::now();
            server(|| s.handle_timeout(now));
            w.server_time += t0.elapsed();
            w.shuttle(&all);
        }
        rounds.push((w.server_time - t_before).as_secs_f64());
    }
    rounds.sort_by(f64::total_cmp);
    let idle_window_ms = rounds[rounds.len() / 2] * 1e3;
    assert!(w.clients.iter().all(Client::is_connected));
    assert_eq!(
        w.server.stats().clients_offline,
        offline_before,
        "an idle, pinging client was called offline"
    );

    println!(
        "one server, {CLIENTS} clients in memory, {GROUPS} groups of 2-8 ({memberships} memberships, {pairs} pairs)"
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| server heap per idle client | {per_client:.0} B |");
    println!(
        "| server heap growth per pair formed (pair state plus the control-stream buffers that grew to carry its PeerAdds) | {per_pair:.0} B |"
    );
    println!("| connect {CLIENTS} clients (handshakes both sides, wall) | {connect_s:.2} s |");
    println!(
        "| join throughput (create_group + every PeerAdd delivered; server CPU only) | {:.0} groups/s ({:.0} groups/s wall incl. clients) |",
        GROUPS as f64 / groups_server_s,
        GROUPS as f64 / groups_s
    );
    println!(
        "| 10 s of idle keepalives (clients every 2 s, server every 5 s), server CPU (median of 5) | {idle_window_ms:.1} ms ({:.2} us per client per second) |",
        idle_window_ms * 1e3 / CLIENTS as f64 / 10.0
    );
    println!(
        "RESULT clients={CLIENTS} groups={GROUPS} pairs={pairs} server_bytes_per_client={per_client:.0} server_bytes_per_pair={per_pair:.0} join_groups_per_sec={:.0} idle_10s_server_ms={idle_window_ms:.1}",
        GROUPS as f64 / groups_server_s
    );
}
