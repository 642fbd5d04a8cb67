//! In-crate test harness: a server and N clients wired through an in-memory network with
//! manual time (quinn's `Pair`, grown to a star). Everything is deterministic: seeds are fixed
//! and time only moves when the harness moves it.

use crate::{Endpoint as _, Events as _};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::time::{Duration, Instant};
use crate::{
    Client, ClientConfig, ClientEvent, Forward, Forwarder, MAX_DATAGRAM_SIZE, SecretKey, Server,
    ServerConfig, ServerEvent, ServerStats, SocketId, relay_shard_of,
};

/// Unix time the harness server believes it started at.
pub(crate) const UNIX_START: Duration = Duration::from_secs(1_800_000_000);
/// Steps one `drive_until` may take before the harness declares a livelock.
const STEP_CAP: u64 = 200_000;
/// Consecutive wakeups without progress before the harness declares a busy loop.
const BUSY_CAP: u32 = 1_000;

/// A datagram seen on the wire.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    /// Virtual time it was sent.
    pub at: Duration,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Decides the fate of each datagram: `true` delivers it.
pub(crate) type Filter = Box<dyn FnMut(&Sent) -> bool>;

pub(crate) struct TestClient {
    pub addr: SocketAddr,
    pub client: Client,
    /// Events with the virtual time they were polled.
    pub events: Vec<(Duration, ClientEvent)>,
}

/// Another node of the same cluster (see [`Net::add_second_server`]).
pub(crate) struct SecondServer {
    pub addr: SocketAddr,
    pub server: Server,
    pub events: Vec<(Duration, ServerEvent)>,
}

pub(crate) struct Net {
    pub epoch: Instant,
    pub now: Instant,
    pub server_addr: SocketAddr,
    pub server: Server,
    pub server_events: Vec<(Duration, ServerEvent)>,
    pub clients: Vec<TestClient>,
    /// One-way latency of every datagram.
    pub latency: Duration,
    /// Every datagram any node sent, in order.
    pub log: Vec<Sent>,
    /// Optional loss/tamper hook.
    pub filter: Option<Filter>,
    inflight: BinaryHeap<Reverse<(Instant, u64)>>,
    packets: BTreeMap<u64, Sent>,
    seq: u64,
    /// Relay forwarders as on threads of their own (see [`Net::with_shards`]): each
    /// datagram for the server goes to the one [`relay_shard_of`] names, else to the server.
    pub shards: Vec<Forwarder>,
    /// The forwarders' counters.
    pub shard_stats: ServerStats,
    /// What the forwarders forwarded, for the wire: (to, bytes).
    shard_out: Vec<(SocketAddr, Vec<u8>)>,
    /// Updates for the forwarders held back (a relay thread that has not read its channel
    /// yet), while `hold_updates`.
    pub hold_updates: bool,
    held: Vec<crate::ForwardUpdate>,
    /// A second server, at [`second_server_addr`], if added.
    pub second: Option<SecondServer>,
    /// The cluster directory both servers ask, if they are cluster nodes: answered at once
    /// (each flush), in order.
    pub directory: Option<crate::cluster::MemoryDirectory>,
    /// The first server is dead: never driven again (no timeouts, no directory questions;
    /// cut it off the wire with [`Net::filter`]).
    pub first_dead: bool,
}

pub(crate) fn second_server_addr() -> SocketAddr {
    "203.0.113.20:7000".parse().unwrap()
}

pub(crate) fn server_addr() -> SocketAddr {
    "203.0.113.10:7000".parse().unwrap()
}

pub(crate) fn client_addr(i: usize) -> SocketAddr {
    SocketAddr::new([198, 51, 100, 1 + i as u8].into(), 40_000 + i as u16)
}

pub(crate) fn server_config() -> ServerConfig {
    ServerConfig::new(SecretKey::from_bytes([0x5E; 32]))
}

impl Net {
    /// A server and `n` clients (not yet connected), 10 ms apart.
    pub(crate) fn new(server: ServerConfig, client: ClientConfig, n: usize) -> Self {
        let epoch = super::epoch();
        let server = Server::new(Arc::new(server), [1; 32], epoch, UNIX_START).unwrap();
        let client = Arc::new(client);
        let clients = (0..n)
            .map(|i| TestClient {
                addr: client_addr(i),
                client: Client::new(client.clone(), [10 + i as u8; 32], epoch).unwrap(),
                events: Vec::new(),
            })
            .collect();
        Self {
            epoch,
            now: epoch,
            server_addr: server_addr(),
            server,
            server_events: Vec::new(),
            clients,
            latency: Duration::from_millis(10),
            log: Vec::new(),
            filter: None,
            inflight: BinaryHeap::new(),
            packets: BTreeMap::new(),
            seq: 0,
            shards: Vec::new(),
            shard_stats: ServerStats::default(),
            shard_out: Vec::new(),
            hold_updates: false,
            held: Vec::new(),
            second: None,
            directory: None,
            first_dead: false,
        }
    }

    /// Adds a second server (another node of a cluster: give it the first one's key) at
    /// [`second_server_addr`], seeded with `seed`.
    pub(crate) fn add_second_server(&mut self, config: ServerConfig, seed: u8) {
        let server = Server::new(Arc::new(config), [seed; 32], self.now, UNIX_START).unwrap();
        self.second = Some(SecondServer {
            addr: second_server_addr(),
            server,
            events: Vec::new(),
        });
    }

    /// Takes the server's forwarders (its config's `relay_shards`): from now on relay packets
    /// go to them, as a runtime with relay threads steers them.
    pub(crate) fn with_shards(mut self) -> Self {
        self.take_shards();
        self
    }

    /// (Re)creates the forwarders from the server's current state.
    pub(crate) fn take_shards(&mut self) {
        let n = self.server_shards();
        self.shards = (0..n).map(|i| self.server.forwarder(i).unwrap()).collect();
        while self.server.poll_forward_update().is_some() {} // already in the snapshot
    }

    fn server_shards(&self) -> u16 {
        let mut n = 0;
        while self.server.forwarder(n).is_ok() {
            n += 1;
        }
        n
    }

    /// Passes the server's updates to the forwarders and their reports to the server.
    fn sync_shards(&mut self) {
        self.pass_updates();
        for i in 0..self.shards.len() {
            while let Some(r) = self.shards[i].poll_report() {
                self.server.handle_forward_report(self.now, r);
            }
        }
        self.pass_updates();
    }

    /// The server's updates to the forwarders (held back while `hold_updates`).
    fn pass_updates(&mut self) {
        while let Some(u) = self.server.poll_forward_update() {
            self.held.push(u);
        }
        if self.hold_updates {
            return;
        }
        for u in self.held.drain(..) {
            for f in &mut self.shards {
                f.handle_update(&u);
            }
        }
    }

    /// Default configs.
    pub(crate) fn with_clients(n: usize) -> Self {
        Self::new(server_config(), ClientConfig::default(), n)
    }

    /// Virtual time since the epoch.
    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Starts every client connecting with `token`.
    pub(crate) fn connect_all(&mut self, token: &[u8]) {
        let (now, server) = (self.now, self.server_addr);
        for c in &mut self.clients {
            c.client.connect(now, server, token).unwrap();
        }
    }

    /// Connects every client and drives until all are connected (panics otherwise). NAT
    /// discovery is off (these tests count packets and events; discovery has its own tests
    /// in `nat/tests.rs` and the simulator).
    pub(crate) fn connected(n: usize) -> Self {
        let mut cfg = ClientConfig::default();
        cfg.nat_discovery = false;
        Self::connected_with(n, cfg)
    }

    /// Like [`Net::connected`] with peers kept on the relay (no hole punching).
    pub(crate) fn connected_relay_only(n: usize) -> Self {
        let mut cfg = ClientConfig::default();
        cfg.direct_paths = false;
        Self::connected_with(n, cfg)
    }

    /// Like [`Net::connected`] with a client config.
    pub(crate) fn connected_with(n: usize, client: ClientConfig) -> Self {
        let mut net = Self::new(server_config(), client, n);
        net.connect_all(&[]);
        assert!(
            net.drive_until(Duration::from_secs(5), |n| n
                .clients
                .iter()
                .all(|c| c.client.is_connected())),
            "clients did not connect"
        );
        net
    }

    /// Moves all queued transmits onto the wire.
    /// Answers every question the servers have for the directory (and those the answers
    /// raise), if there is one.
    pub(crate) fn serve_directory(&mut self) {
        let now = self.now;
        let Some(d) = &mut self.directory else {
            return;
        };
        loop {
            let mut any = false;
            let second = self.second.as_mut().map(|b| &mut b.server);
            let first = (!self.first_dead).then_some(&mut self.server);
            for server in first.into_iter().chain(second) {
                while let Some((id, request)) = server.poll_directory() {
                    let answer = d.answer(now, &request);
                    server.handle_directory(now, id, answer);
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
    }

    pub(crate) fn flush(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM_SIZE];
        self.serve_directory();
        let now = self.now;
        self.sync_shards();
        let mut out: Vec<_> = (self.shard_out.drain(..))
            .map(|(to, bytes)| (self.server_addr, to, bytes))
            .collect();
        while let Some(t) = self.server.poll_transmit(now, &mut buf) {
            out.push((self.server_addr, t.dst, buf[..t.len].to_vec()));
        }
        if let Some(b) = &mut self.second {
            while let Some(t) = b.server.poll_transmit(now, &mut buf) {
                out.push((b.addr, t.dst, buf[..t.len].to_vec()));
            }
        }
        for c in &mut self.clients {
            while let Some(t) = c.client.poll_transmit(now, &mut buf) {
                out.push((c.addr, t.dst, buf[..t.len].to_vec()));
            }
        }
        for (from, to, bytes) in out {
            let sent = Sent {
                at: self.elapsed(),
                from,
                to,
                bytes,
            };
            self.log.push(sent.clone());
            if let Some(f) = &mut self.filter {
                if !f(&sent) {
                    continue;
                }
            }
            self.seq += 1;
            self.inflight
                .push(Reverse((self.now + self.latency, self.seq)));
            self.packets.insert(self.seq, sent);
        }
    }

    /// Hands a datagram to whoever owns `to`, now.
    pub(crate) fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        let shard =
            relay_shard_of(bytes, self.shards.len() as u16).filter(|_| !self.shards.is_empty());
        if let (true, Some(i)) = (to == self.server_addr, shard) {
            let stats = &mut self.shard_stats;
            let forward =
                self.shards[i].handle_datagram(now, SocketId::PRIMARY, from, bytes, stats);
            match forward {
                Forward::Relay {
                    dst,
                    header,
                    ref peer,
                    ..
                } => {
                    let mut d = header.to_vec();
                    d.extend_from_slice(&bytes[peer.clone()]);
                    self.shard_out.push((dst, d));
                }
                Forward::Control => self.server.handle_datagram(now, from, bytes),
                Forward::Dropped | Forward::Unknown { .. } => {}
            }
            self.sync_shards();
        } else if to == self.server_addr {
            self.server.handle_datagram(now, from, bytes);
        } else if let Some(b) = self.second.as_mut().filter(|b| b.addr == to) {
            b.server.handle_datagram(now, from, bytes);
        } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) {
            c.client.handle_datagram(now, from, bytes);
        }
        self.collect_events();
    }

    /// Polls every node's events into the logs.
    pub(crate) fn collect_events(&mut self) {
        let at = self.elapsed();
        while let Some(e) = self.server.poll_event() {
            self.server_events.push((at, e));
        }
        if let Some(b) = &mut self.second {
            while let Some(e) = b.server.poll_event() {
                b.events.push((at, e));
            }
        }
        for c in &mut self.clients {
            while let Some(e) = c.client.poll_event() {
                c.events.push((at, e));
            }
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut t = self.inflight.peek().map(|Reverse((t, _))| *t);
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        consider(
            (self.server.poll_timeout())
                .filter(|_| !self.first_dead)
                .map(|t| t.at),
        );
        consider(
            self.second
                .as_ref()
                .and_then(|b| b.server.poll_timeout().map(|t| t.at)),
        );
        for f in &self.shards {
            consider(f.poll_timeout().map(|t| t.at));
        }
        for c in &self.clients {
            consider(c.client.poll_timeout().map(|t| t.at));
        }
        t
    }

    /// One step: flush, jump to the next wakeup (but not past `cap`), deliver and fire what
    /// is due.
    pub(crate) fn step_to(&mut self, cap: Instant) {
        self.flush();
        let next = self.next_wakeup().map_or(cap, |n| n.min(cap));
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(&Reverse((at, seq))) = self.inflight.peek() {
            if at > now {
                break;
            }
            self.inflight.pop();
            if let Some(p) = self.packets.remove(&seq) {
                self.deliver(p.from, p.to, &p.bytes);
            }
        }
        if !self.first_dead && self.server.poll_timeout().is_some_and(|t| t.at <= now) {
            self.server.handle_timeout(now);
        }
        if let Some(b) = self.second.as_mut() {
            if b.server.poll_timeout().is_some_and(|t| t.at <= now) {
                b.server.handle_timeout(now);
            }
        }
        for f in &mut self.shards {
            if f.poll_timeout().is_some_and(|t| t.at <= now) {
                f.handle_timeout(now);
            }
        }
        self.sync_shards();
        for c in &mut self.clients {
            if c.client.poll_timeout().is_some_and(|t| t.at <= now) {
                c.client.handle_timeout(now);
            }
        }
        self.flush();
        self.collect_events();
    }

    /// Steps until `pred` holds or `limit` of virtual time passes; returns whether `pred`
    /// held. Panics on a livelock or a node that keeps asking to be woken in the past.
    pub(crate) fn drive_until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        let mut busy = 0u32;
        for _ in 0..STEP_CAP {
            if pred(self) {
                return true;
            }
            if self.now >= deadline {
                return false;
            }
            let before = self.now;
            self.step_to(deadline);
            if self.now == before && self.inflight.is_empty() {
                busy += 1;
                assert!(
                    busy < BUSY_CAP,
                    "busy loop at {:?}: server wants {} / clients want {:?}",
                    self.elapsed(),
                    self.server.poll_timeout().map_or("none", |t| t.reason),
                    self.clients
                        .iter()
                        .map(|c| c.client.poll_timeout().map_or("none", |t| t.reason))
                        .collect::<Vec<_>>()
                );
            } else {
                busy = 0;
            }
        }
        panic!("step cap reached at {:?}", self.elapsed());
    }

    /// Runs for exactly `d` of virtual time.
    pub(crate) fn run_for(&mut self, d: Duration) {
        self.drive_until(d, |_| false);
    }

    /// Datagrams in the log from `from` to `to`.
    pub(crate) fn sent_between(&self, from: SocketAddr, to: SocketAddr) -> Vec<&Sent> {
        self.log
            .iter()
            .filter(|s| s.from == from && s.to == to)
            .collect()
    }
}

impl Net {
    /// Two connected clients (NAT discovery off) in one new group, driven until each has a
    /// validated direct path to the other. Returns the net and their host ids.
    pub(crate) fn direct_pair() -> (Self, crate::HostId, crate::HostId) {
        let mut cfg = ClientConfig::default();
        cfg.nat_discovery = false;
        let mut net = Self::connected_with(2, cfg);
        let [a, b] = net.hosts()[..] else {
            unreachable!("two clients")
        };
        let now = net.now;
        net.server.create_group(now, &[a, b]).unwrap();
        let direct = |n: &Self| {
            [(0, b), (1, a)].iter().all(|&(i, peer)| {
                n.clients[i]
                    .client
                    .peer_stats(peer)
                    .is_some_and(|s| matches!(s.path, crate::Path::Direct(_)))
            })
        };
        assert!(
            net.drive_until(Duration::from_secs(3), direct),
            "no direct path"
        );
        (net, a, b)
    }

    /// The server process restarts now with `config` (seeded with `seed`): every session,
    /// group and pair is gone; clients find out by themselves.
    pub(crate) fn restart_server(&mut self, config: ServerConfig, seed: u8) {
        self.server = Server::new(Arc::new(config), [seed; 32], self.now, UNIX_START).unwrap();
    }

    /// Host ids of the clients, in client order (all must be connected).
    pub(crate) fn hosts(&self) -> Vec<crate::HostId> {
        self.clients
            .iter()
            .map(|c| c.client.host_id().expect("connected"))
            .collect()
    }

    /// Events of client `i` with times, from position `from` on.
    pub(crate) fn events_since(&self, i: usize, from: usize) -> Vec<ClientEvent> {
        self.clients[i].events[from..]
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Every client connects with the address list `servers`; they are all connected a
    /// second later.
    pub(crate) fn connect_all_any(&mut self, servers: &[SocketAddr]) {
        let now = self.now;
        for c in &mut self.clients {
            c.client.connect_any(now, servers, &[]).unwrap();
        }
        assert!(self.drive_until(Duration::from_secs(1), |n| {
            n.clients.iter().all(|c| c.client.is_connected())
        }));
    }

    /// Why client `i`'s sessions ended, in order.
    pub(crate) fn disconnects(&self, i: usize) -> Vec<crate::DisconnectReason> {
        (self.clients[i].events.iter())
            .filter_map(|(_, e)| match e {
                ClientEvent::Disconnected { reason } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    /// Clients `0..n` join room `name` (the first creates it, 4 members at most), one every
    /// 200 ms.
    pub(crate) fn join_each(&mut self, n: usize, name: &str) {
        for i in 0..n {
            let now = self.now;
            (self.clients[i].client)
                .join_room(now, name, "", true, 4)
                .unwrap();
            self.run_for(Duration::from_millis(200));
        }
    }

    /// Peer messages client `i` received, as (sender, payload).
    pub(crate) fn peer_messages(&self, i: usize) -> Vec<(crate::HostId, Vec<u8>)> {
        self.clients[i]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                ClientEvent::PeerMessage { from, payload, .. } => Some((*from, payload.to_vec())),
                _ => None,
            })
            .collect()
    }
}
