//! The running simulation: nodes, links, NATs, one clock, one event queue.
//!
//! # Drive loop
//!
//! Each step pops the earliest scheduled item (ties in scheduling order): a node wakeup, a
//! datagram reaching the core, a datagram reaching a host, or a scripted action. After any
//! input the node's transmits and events are drained at once and its next wakeup is
//! rescheduled from `poll_timeout`. A `run_*` call panics-by-error on a step cap (quinn's
//! `drive_bounded`), and a node that stays due after `handle_timeout` without sending,
//! reporting, or moving its deadline for `busy_limit` wakeups in a row is reported as a busy
//! loop with the reason of its deadline (`poll_timeout`).
//!
//! # Where time passes
//!
//! A datagram crosses the sender's up link (queueing, delay, loss), then the network core in
//! no time (the sender's NATs translate it outbound, partitions apply, the receiver's NATs
//! translate it inbound), then the receiver's down link. NATs therefore see a datagram when
//! it leaves the sender's access link, and expire mappings against that instant.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pierce_core::{
    Client, ClientConfig, HostId, MAX_DATAGRAM_SIZE, SecretKey, Server, ServerConfig, SocketId,
    SocketRequest,
};

use crate::clock::{Clock, Queue, format_time};
use crate::link::{Link, LinkProfile, Sent};
use crate::net::{NetDrop, Network, Realm};
use crate::node::{Driven, NodeEvent, Output, drain};
use crate::scenario::{Action, Edge, Placement, Scenario};
use crate::{SERVER, derive_seed, repro_command, substream};

mod access;
mod actions;
mod cluster;
mod ipv6;
mod tcp;

pub use cluster::{DirectoryStats, SIM_REGION};

pub use tcp::{RTO_MIN, STREAM_CONNECT_TIMEOUT, STREAM_STALL_TIMEOUT, StreamStats};
use tcp::{StreamItem, Streams};

/// Port every client binds.
pub const CLIENT_PORT: u16 = 5000;
/// Port the server listens on (and is forwarded on, behind NATs).
pub const SERVER_PORT: u16 = 7777;
/// Unix time the server believes it started at (connect-token expiry only).
const UNIX_START: Duration = Duration::from_secs(1_800_000_000);

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Time since the epoch.
    pub at: Duration,
    /// What happened.
    pub event: NodeEvent,
}

/// A client's successful connection, from its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connected {
    /// When (since the epoch).
    pub at: Duration,
    /// Its id on the server.
    pub host_id: HostId,
    /// The address the server saw it at.
    pub public_addr: SocketAddr,
}

/// One datagram's journey, recorded when packet tracing is on
/// ([`crate::Scenario::trace_packets`], [`Sim::packets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRecord {
    /// When it left the sender (since the epoch).
    pub sent_at: Duration,
    /// The sending host.
    pub from: String,
    /// The sender's own (inside) address.
    pub src: SocketAddr,
    /// Where it was sent to.
    pub dst: SocketAddr,
    /// Its length in bytes.
    pub len: usize,
    /// Its first byte (the Pierce packet kind; 0x00/0x01 for STUN), 0 if empty.
    pub kind: u8,
    /// Whether a link made a second copy.
    pub duplicated: bool,
    /// Sent down a TCP stream (`src` and `dst` are the stream's ends; see [`Sim::streams`]).
    pub tcp: bool,
    /// Its bytes, as sent (what anyone on its way could read: privacy tests search them).
    pub data: Bytes,
    /// What became of it: one entry per copy, in the order they happened (none yet while in
    /// flight).
    pub fates: Vec<PacketFate>,
}

/// What became of one copy of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketFate {
    /// It reached a node.
    Delivered {
        /// When (since the epoch).
        at: Duration,
        /// The receiving host.
        to: String,
        /// The source address the receiver saw (after NAT translation).
        from: SocketAddr,
    },
    /// It was lost.
    Dropped {
        /// When (since the epoch).
        at: Duration,
        /// Where and why.
        cause: DropCause,
    },
}

/// Where a datagram was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropCause {
    /// On the sender's up link.
    Uplink(crate::LinkDrop),
    /// In the network core (no route, partition, offline, dead host).
    Net(NetDrop),
    /// In the stateful IPv6 firewall of this host ([`Sim::firewall`]).
    Firewall {
        /// The host behind the firewall.
        host: String,
        /// Why.
        drop: crate::FirewallDrop,
    },
    /// In this NAT (named like [`Sim::nat`]).
    Nat {
        /// The NAT's name.
        nat: String,
        /// Why.
        drop: crate::NatDrop,
    },
    /// On the receiver's down link.
    Downlink {
        /// The receiving host.
        to: String,
        /// Why.
        drop: crate::LinkDrop,
    },
    /// A TCP frame whose stream ended (closed, broken, receiver gone) before it arrived, or
    /// that its stream's buffer refused.
    StreamEnded,
}

/// Which way along a host's access link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Host to network.
    Up,
    /// Network to host.
    Down,
}

/// A run that could not finish. Its `Display` names the seed and a repro command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// A `run_*` call took more steps than the cap.
    StepCap {
        /// The seed.
        seed: u64,
        /// Time since the epoch.
        at: Duration,
        /// The cap.
        steps: u64,
    },
    /// A node kept asking to be woken now without doing anything.
    BusyLoop {
        /// The seed.
        seed: u64,
        /// Time since the epoch.
        at: Duration,
        /// The node.
        node: String,
        /// The reason of its deadline.
        reason: &'static str,
    },
    /// `run_until`'s condition did not hold within its limit.
    Timeout {
        /// The seed.
        seed: u64,
        /// Time since the epoch.
        at: Duration,
    },
}

impl SimError {
    /// What went wrong, without the seed and repro command.
    pub fn summary(&self) -> String {
        match self {
            Self::StepCap { at, steps, .. } => {
                format!("step cap of {steps} reached at {}", format_time(*at))
            }
            Self::BusyLoop {
                at, node, reason, ..
            } => format!(
                "busy loop: {node} stays due at {} without progress (timeout reason: {reason})",
                format_time(*at)
            ),
            Self::Timeout { at, .. } => format!("condition not met by {}", format_time(*at)),
        }
    }

    /// The seed of the failed run.
    pub fn seed(&self) -> u64 {
        match self {
            Self::StepCap { seed, .. }
            | Self::BusyLoop { seed, .. }
            | Self::Timeout { seed, .. } => *seed,
        }
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [seed {}; repro: {}]",
            self.summary(),
            self.seed(),
            repro_command(self.seed())
        )
    }
}

impl std::error::Error for SimError {}

enum NodeState {
    Running(Box<dyn Driven>),
    Crashed,
}

struct Host {
    name: String,
    node: NodeState,
    edge: Edge,
    realm: Realm,
    addr: SocketAddr,
    /// Sockets beyond the primary one, opened at the node's request.
    extra: BTreeMap<SocketId, SocketAddr>,
    /// Next port tried for an extra socket without a fixed address.
    next_port: u16,
    up: Link,
    down: Link,
    /// The wakeup currently scheduled.
    wake: Option<Instant>,
    /// Consecutive wakeups without progress.
    busy: u32,
    /// Incarnation (restarts, reconnects), for fresh seeds.
    generation: u32,
    config: Option<Arc<ClientConfig>>,
    log: Vec<LogEntry>,
    /// The other family of a dual-stack socket: a dual-stack host's global IPv6 address (in
    /// the root realm), or the IPv4 address a NAT64 gateway gives an IPv6-only host (inside
    /// the gateway's NAT). Every socket of the host listens on both, on one port.
    alt: Option<(Realm, std::net::IpAddr)>,
    /// Its global IPv6 address, if any (`addr`'s IP for an IPv6-only host).
    v6: Option<std::net::Ipv6Addr>,
    /// The stateful firewall on its IPv6 path: index in `Sim::firewalls`.
    firewall: Option<usize>,
    /// The NAT64 gateway an IPv6-only host reaches IPv4 through.
    nat64: Option<crate::Nat64Config>,
}

enum Item {
    Wake(usize),
    /// At the core, on its way to `dst`.
    Arrive {
        from: usize,
        /// The sender's address when it sent.
        src: SocketAddr,
        dst: SocketAddr,
        data: Bytes,
        /// The TTL it was sent with (`None`: the default, [`crate::net::DEFAULT_TTL`]).
        ttl: Option<u8>,
        /// Index in `Sim::packets`, when tracing.
        trace: Option<usize>,
    },
    /// At the receiving host.
    Deliver {
        to: usize,
        socket: SocketId,
        from: SocketAddr,
        data: Bytes,
        trace: Option<usize>,
    },
    Action(Action),
    Stream(StreamItem),
    /// A cluster directory question or answer on its way.
    Directory(cluster::DirItem),
}

/// A running simulation. Build one with [`Scenario`].
pub struct Sim {
    seed: u64,
    clock: Clock,
    queue: Queue<Item>,
    hosts: Vec<Host>,
    names: BTreeMap<String, usize>,
    net: Network,
    server: usize,
    server_addr: SocketAddr,
    /// The server's address, then the other cluster nodes': what clients connect to.
    server_list: Vec<SocketAddr>,
    server_config: Arc<ServerConfig>,
    /// The server's second IP, for RFC 5780 discovery.
    server_alt_ip: Option<std::net::IpAddr>,
    log: Vec<String>,
    trace: bool,
    packets: Vec<PacketRecord>,
    step_cap: u64,
    busy_limit: u32,
    buf: Box<[u8]>,
    streams: Streams,
    /// The cluster directory, if the nodes share one.
    cluster: Option<cluster::Cluster>,
    /// Clients that dial another node first: client host → index in `server_list`.
    first_node: BTreeMap<usize, usize>,
    /// The stateful IPv6 firewalls, named after their host.
    firewalls: Vec<(String, crate::Firewall)>,
    /// The server's global IPv6 address, when dual-stack.
    server_v6: Option<SocketAddr>,
    /// IPv6 addresses handed out so far.
    next_v6: u16,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("elapsed", &self.elapsed())
            .field("hosts", &self.names.keys().collect::<Vec<_>>())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    pub(crate) fn from_scenario(s: Scenario) -> Self {
        let seed = s.seed;
        let clock = Clock::start();
        let server_config = Arc::new(s.server_config.clone().unwrap_or_else(|| {
            ServerConfig::new(SecretKey::from_bytes(derive_seed(seed, "server-key")))
        }));
        let mut sim = Self {
            seed,
            clock,
            queue: Queue::default(),
            hosts: Vec::new(),
            names: BTreeMap::new(),
            net: Network::default(),
            server: 0,
            server_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            server_list: Vec::new(),
            server_config,
            server_alt_ip: None,
            log: Vec::new(),
            trace: s.trace,
            packets: Vec::new(),
            step_cap: s.step_cap,
            busy_limit: s.busy_limit,
            buf: vec![0u8; MAX_DATAGRAM_SIZE.max(2048)].into_boxed_slice(),
            streams: Streams::default(),
            cluster: None,
            first_node: BTreeMap::new(),
            firewalls: Vec::new(),
            server_v6: None,
            next_v6: 0,
        };

        // The server, with forwards through any NATs in front of it.
        let server_edge = s.server.clone().unwrap_or(Edge::Open);
        let server_edge_is_open = matches!(server_edge, Edge::Open);
        let server_link = s.server_link.clone().unwrap_or_else(|| s.link.clone());
        let (realm, chain) = sim.build_nats(SERVER, &server_edge);
        let id = sim.add_host(SERVER, server_edge, realm, SERVER_PORT, &server_link, None);
        let mut inner = sim.hosts[id].addr;
        for n in chain {
            sim.net.nats[n].nat.forward(SERVER_PORT, inner);
            inner = SocketAddr::new(sim.net.nats[n].nat.public_ip(), SERVER_PORT);
        }
        sim.server_addr = inner;
        sim.server = id;
        if s.server_discovery && server_edge_is_open {
            let realm = sim.hosts[id].realm;
            sim.server_alt_ip = Some(sim.net.add_ip(id, realm));
        }
        if s.server_v6 {
            assert!(server_edge_is_open, "a dual-stack server must be open");
            sim.server_v6 = Some(sim.give_ipv6(id, &crate::Stack::Dual { firewall: None }));
        }
        sim.hosts[id].node = NodeState::Running(Box::new(sim.new_server(0)));
        sim.server_list.push(sim.server_addr);
        for name in &s.cluster {
            assert!(
                !sim.names.contains_key(name),
                "duplicate host name {name:?}"
            );
            let (realm, _) = sim.build_nats(name, &Edge::Open);
            let id = sim.add_host(name, Edge::Open, realm, SERVER_PORT, &server_link, None);
            let seed = derive_seed(seed, &format!("server/{name}/0"));
            let now = sim.clock.now();
            let node = Server::new(sim.server_config.clone(), seed, now, UNIX_START)
                .unwrap_or_else(|e| sim.fail(format!("invalid server config: {e}")));
            sim.hosts[id].node = NodeState::Running(Box::new(node));
            sim.server_list.push(sim.hosts[id].addr);
        }

        if let Some(one_way) = s.directory {
            sim.start_cluster(one_way, &s.cluster);
        }

        let client_config = Arc::new(s.client_config.clone());
        for spec in &s.clients {
            assert!(
                !sim.names.contains_key(&spec.name),
                "duplicate host name {:?}",
                spec.name
            );
            let (edge, realm) = match &spec.placement {
                Placement::Edge(_) if matches!(spec.stack, crate::Stack::V6Only { .. }) => {
                    sim.add_ipv6_only_client(spec, &s.link, &client_config);
                    continue;
                }
                Placement::Edge(edge) => (edge.clone(), sim.build_nats(&spec.name, edge).0),
                Placement::Beside(other) => {
                    let o = *sim
                        .names
                        .get(other)
                        .unwrap_or_else(|| panic!("client_beside: no client named {other:?}"));
                    (sim.hosts[o].edge.clone(), sim.hosts[o].realm)
                }
            };
            let link = spec.link.clone().unwrap_or_else(|| s.link.clone());
            let config = spec
                .config
                .clone()
                .map_or_else(|| client_config.clone(), Arc::new);
            let id = sim.add_host(&spec.name, edge, realm, CLIENT_PORT, &link, Some(config));
            if spec.stack.has_ipv6() {
                sim.give_ipv6(id, &spec.stack);
            }
        }
        for (client, node) in &s.first_node {
            let c = sim.client_id(client);
            let i = match s.cluster.iter().position(|n| n == node) {
                _ if node == SERVER => 0,
                Some(i) => i + 1,
                None => panic!("first_node: {node:?} is not a server node"),
            };
            sim.first_node.insert(c, i);
        }
        for (at, action) in s.actions {
            let t = sim.clock.at(at);
            sim.queue.push(t, Item::Action(action));
        }
        // Start: every client connects; every node gets its first service round.
        for id in 0..sim.hosts.len() {
            if sim.hosts[id].config.is_some() {
                sim.start_client(id);
            }
            sim.service(id, false).unwrap_or_else(|e| panic!("{e}"));
        }
        sim
    }

    /// Creates the NATs of `edge` outermost first; returns the host's realm and the NATs
    /// innermost first.
    fn build_nats(&mut self, host: &str, edge: &Edge) -> (Realm, Vec<usize>) {
        let nats = edge.nats();
        let mut realm = None;
        let mut chain = Vec::new();
        for (i, cfg) in nats.iter().enumerate().rev() {
            let name = if nats.len() == 1 {
                host.to_owned()
            } else {
                format!("{host}/{i}")
            };
            assert!(
                !self.net.nats.iter().any(|n| n.name == name),
                "duplicate NAT name {name:?}"
            );
            let rng = substream(self.seed, &format!("nat/{name}"));
            let n = self.net.add_nat(name, cfg.clone(), realm, rng);
            realm = Some(n);
            chain.push(n);
        }
        chain.reverse();
        (realm, chain)
    }

    fn add_host(
        &mut self,
        name: &str,
        edge: Edge,
        realm: Realm,
        port: u16,
        link: &LinkProfile,
        config: Option<Arc<ClientConfig>>,
    ) -> usize {
        let id = self.hosts.len();
        let addr = self.net.add_host(id, realm, port);
        self.push_host(name, edge, realm, addr, link, config)
    }

    /// Adds host `name` at `addr` in `realm` (already owned and bound).
    fn push_host(
        &mut self,
        name: &str,
        edge: Edge,
        realm: Realm,
        addr: SocketAddr,
        link: &LinkProfile,
        config: Option<Arc<ClientConfig>>,
    ) -> usize {
        let id = self.hosts.len();
        let epoch = self.clock.epoch();
        self.hosts.push(Host {
            name: name.to_owned(),
            node: NodeState::Crashed,
            edge,
            realm,
            addr,
            extra: BTreeMap::new(),
            next_port: 40_000,
            up: Link::new(
                link.up.clone(),
                substream(self.seed, &format!("link/{name}/up")),
                epoch,
            ),
            down: Link::new(
                link.down.clone(),
                substream(self.seed, &format!("link/{name}/down")),
                epoch,
            ),
            wake: None,
            busy: 0,
            generation: 0,
            config,
            log: Vec::new(),
            alt: None,
            v6: None,
            firewall: None,
            nat64: None,
        });
        self.names.insert(name.to_owned(), id);
        id
    }

    fn new_server(&self, generation: u32) -> Server {
        let seed = derive_seed(self.seed, &format!("server/{generation}"));
        let mut server = Server::new(
            self.server_config.clone(),
            seed,
            self.clock.now(),
            UNIX_START,
        )
        .unwrap_or_else(|e| self.fail(format!("invalid server config: {e}")));
        if let Some(ip) = self.server_alt_ip {
            let primary = self.hosts[self.server].addr;
            let alt = SocketAddr::new(ip, SERVER_PORT + 1);
            server
                .enable_nat_discovery(primary, alt)
                .unwrap_or_else(|e| self.fail(format!("NAT discovery: {e}")));
        }
        server
    }

    /// A fresh client process for host `id`, connecting now.
    #[track_caller]
    fn start_client(&mut self, id: usize) {
        let now = self.clock.now();
        let h = &self.hosts[id];
        let Some(config) = h.config.clone() else {
            self.fail(format!("{} is not a client", h.name));
        };
        let seed = derive_seed(self.seed, &format!("client/{}/{}", h.name, h.generation));
        let mut c = Client::new(config, seed, now)
            .unwrap_or_else(|e| self.fail(format!("invalid client config: {e}")));
        let mut list = self.server_list.clone();
        list.rotate_left(self.first_node.get(&id).copied().unwrap_or(0));
        self.servers_for(id, &mut list);
        c.connect_any(now, &list, &[])
            .unwrap_or_else(|e| self.fail(format!("connect: {e}")));
        // As a runtime does: the dual-stack socket's interface addresses (its global IPv6
        // one) and, behind a NAT that honours port mapping, the LAN address and the gateway
        // (as `pierce peer` does from the OS's default route).
        let h = &self.hosts[id];
        let pmp = h
            .realm
            .filter(|n| self.net.nats[*n].nat.config().port_mapping);
        let mut locals: Vec<SocketAddr> = Vec::new();
        if pmp.is_some() {
            locals.push(h.addr);
        }
        if let Some(ip) = h.v6 {
            locals.push(SocketAddr::new(ip.into(), h.addr.port()));
        }
        if !locals.is_empty() {
            c.set_local_addresses(now, &locals)
                .unwrap_or_else(|e| self.fail(format!("set_local_addresses: {e}")));
        }
        if let Some(n) = pmp {
            c.set_gateway(now, Some(crate::net::gateway_of(n)));
        }
        let h = &mut self.hosts[id];
        h.node = NodeState::Running(Box::new(c));
        h.wake = None;
        h.busy = 0;
    }

    // ---- driving -----------------------------------------------------------------------

    /// Runs until `pred` holds (checked before the first step and after each one) or `limit`
    /// of virtual time passes.
    ///
    /// # Errors
    /// [`SimError::Timeout`] if `pred` never held (time is then at the limit), or a step cap
    /// or busy loop.
    pub fn run_until(
        &mut self,
        mut pred: impl FnMut(&Self) -> bool,
        limit: Duration,
    ) -> Result<(), SimError> {
        let until = self.clock.now() + limit;
        if self.run_inner(until, &mut pred)? {
            Ok(())
        } else {
            Err(SimError::Timeout {
                seed: self.seed,
                at: self.elapsed(),
            })
        }
    }

    /// Runs everything due in the next `d`, then sets the clock to `now + d`.
    ///
    /// # Errors
    /// A step cap or busy loop.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        let until = self.clock.now() + d;
        self.run_inner(until, &mut |_| false).map(|_| ())
    }

    /// [`Sim::run_until`], failing the test (with seed and repro) if `what` does not happen
    /// within `limit`.
    #[track_caller]
    pub fn eventually(&mut self, what: &str, limit: Duration, pred: impl FnMut(&Self) -> bool) {
        if let Err(e) = self.run_until(pred, limit) {
            self.fail(format!("{what}: {}", e.summary()));
        }
    }

    /// The usual start of a peer-to-peer test: waits (up to 10 s) for the named clients to
    /// connect, puts them in one new group, and waits (up to 5 s) until each knows every
    /// other as a peer. Returns their host ids in the order named.
    ///
    /// # Panics
    /// Fails the test (with the seed and a repro command) if any step does not happen.
    #[track_caller]
    pub fn group_up(&mut self, names: &[&str]) -> Vec<HostId> {
        const SECOND: Duration = Duration::from_secs(1);
        self.eventually("every client connects", 10 * SECOND, |s| {
            names.iter().all(|n| s.connected(n).is_some())
        });
        let ids: Vec<HostId> = names
            .iter()
            .map(|n| self.expect_connected(n).host_id)
            .collect();
        let created = self.with_server(|srv, now| srv.create_group(now, &ids));
        if let Err(e) = created {
            self.fail(format!("create_group: {e}"));
        }
        self.eventually("every member knows every other", 5 * SECOND, |s| {
            names.iter().zip(&ids).all(|(n, me)| {
                ids.iter()
                    .all(|p| p == me || s.client(n).peers().any(|q| q == *p))
            })
        });
        ids
    }

    /// [`Sim::run_for`], failing the test on a step cap or busy loop.
    #[track_caller]
    pub fn advance(&mut self, d: Duration) {
        if let Err(e) = self.run_for(d) {
            self.fail(e.summary());
        }
    }

    fn run_inner(
        &mut self,
        until: Instant,
        pred: &mut dyn FnMut(&Self) -> bool,
    ) -> Result<bool, SimError> {
        let mut steps = 0u64;
        loop {
            if pred(self) {
                return Ok(true);
            }
            if self.queue.peek_time().is_none_or(|t| t > until) {
                break;
            }
            steps += 1;
            if steps > self.step_cap {
                return Err(SimError::StepCap {
                    seed: self.seed,
                    at: self.elapsed(),
                    steps: self.step_cap,
                });
            }
            let (at, item) = self.queue.pop().expect("peeked");
            self.clock.advance_to(at);
            self.handle(at, item)?;
        }
        self.clock.advance_to(until);
        Ok(pred(self))
    }

    fn handle(&mut self, at: Instant, item: Item) -> Result<(), SimError> {
        let now = self.clock.now();
        match item {
            Item::Wake(id) => {
                if self.hosts[id].wake != Some(at) {
                    return Ok(()); // superseded
                }
                self.hosts[id].wake = None;
                match &mut self.hosts[id].node {
                    NodeState::Running(n) => n.handle_timeout(now),
                    NodeState::Crashed => return Ok(()),
                }
                self.service(id, true)
            }
            Item::Arrive {
                from,
                src,
                dst,
                data,
                ttl,
                trace,
            } => {
                let realm = self.realm_of(from, src);
                if let Some((to, socket, reply)) =
                    self.net.port_mapping(now, realm, src, dst, &data)
                {
                    // The gateway answers on the LAN, at once.
                    let at = self.elapsed();
                    let nat = realm
                        .map(|n| self.net.nats[n].name.clone())
                        .unwrap_or_default();
                    self.record_fate(
                        trace,
                        PacketFate::Delivered {
                            at,
                            to: nat,
                            from: src,
                        },
                    );
                    let data = Bytes::from(reply);
                    let item = Item::Deliver {
                        to,
                        socket,
                        from: dst,
                        data,
                        trace: None,
                    };
                    self.queue.push(now, item);
                    return Ok(());
                }
                self.firewall_out(now, from, src, dst);
                let ip_len = data.len() + udp_headers(dst);
                let routed = self
                    .net
                    .route(now, from, realm, src, dst, ttl)
                    .and_then(|r| self.net.check_path_mtu(from, r.0, ip_len).map(|()| r))
                    .map(|(to, socket, seen)| (to, socket, self.seen_by(to, seen)));
                let routed = match routed {
                    Ok((to, _, seen)) => match self.firewall_in(now, to, seen, dst) {
                        Ok(()) => routed,
                        Err(drop) => {
                            self.trace_drop(from, dst, data.len(), "firewall", drop);
                            let host = self.hosts[to].name.clone();
                            let at = self.elapsed();
                            let cause = DropCause::Firewall { host, drop };
                            self.record_fate(trace, PacketFate::Dropped { at, cause });
                            return Ok(());
                        }
                    },
                    Err(_) => routed,
                };
                match routed {
                    Err(e) => {
                        self.trace_drop(from, dst, data.len(), "net", e);
                        let cause = match e {
                            NetDrop::Nat(n, drop) => DropCause::Nat {
                                nat: self.net.nats[n].name.clone(),
                                drop,
                            },
                            e => DropCause::Net(e),
                        };
                        self.record_fate(
                            trace,
                            PacketFate::Dropped {
                                at: self.elapsed(),
                                cause,
                            },
                        );
                    }
                    Ok((to, socket, seen)) => {
                        match self.hosts[to].down.send_udp(now, data.len(), is_ipv6(dst)) {
                            Sent::Dropped(r) => {
                                self.trace_drop(from, dst, data.len(), "downlink", r);
                                let cause = DropCause::Downlink {
                                    to: self.hosts[to].name.clone(),
                                    drop: r,
                                };
                                self.record_fate(
                                    trace,
                                    PacketFate::Dropped {
                                        at: self.elapsed(),
                                        cause,
                                    },
                                );
                            }
                            Sent::Arrives { at, duplicate } => {
                                if duplicate.is_some() {
                                    if let Some(r) = trace.and_then(|i| self.packets.get_mut(i)) {
                                        r.duplicated = true;
                                    }
                                }
                                for t in std::iter::once(at).chain(duplicate) {
                                    let item = Item::Deliver {
                                        to,
                                        socket,
                                        from: seen,
                                        data: data.clone(),
                                        trace,
                                    };
                                    self.queue.push(t, item);
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
            Item::Deliver {
                to,
                socket,
                from,
                data,
                trace,
            } => {
                self.trace_line(to, format_args!("<- {from} {}B", data.len()));
                let at = self.elapsed();
                match &mut self.hosts[to].node {
                    NodeState::Running(n) => n.handle_datagram_on(now, socket, from, &data),
                    NodeState::Crashed => {
                        self.net.stats.dead_host += 1;
                        let cause = DropCause::Net(NetDrop::DeadHost);
                        self.record_fate(trace, PacketFate::Dropped { at, cause });
                        return Ok(());
                    }
                }
                if trace.is_some() {
                    let to = self.hosts[to].name.clone();
                    self.record_fate(trace, PacketFate::Delivered { at, to, from });
                }
                self.net.stats.delivered += 1;
                self.service(to, false)
            }
            Item::Action(a) => self.apply(a),
            Item::Stream(s) => self.handle_stream(s),
            Item::Directory(d) => self.handle_directory_item(d),
        }
    }

    /// Drains a node after an input, logs its events, sends its datagrams and reschedules
    /// its wakeup. `after_timeout` enables the busy-loop check.
    fn service(&mut self, id: usize, after_timeout: bool) -> Result<(), SimError> {
        /// Rounds of requests served after transmits, per service call.
        const MAX_ROUNDS: usize = 64;
        self.serve_socket_requests(id);
        for round in 0..MAX_ROUNDS {
            let now = self.clock.now();
            let mut out = Output::default();
            let host = &mut self.hosts[id];
            let next = match &mut host.node {
                NodeState::Running(n) => drain(n.as_mut(), now, &mut self.buf, &mut out),
                NodeState::Crashed => None,
            };
            let progress = !out.transmits.is_empty() || !out.events.is_empty();
            if round > 0 {
                if progress {
                    host.busy = 0;
                }
            } else if after_timeout && !progress && next.is_some_and(|t| t <= now) {
                host.busy += 1;
                if host.busy >= self.busy_limit {
                    let reason = match &host.node {
                        NodeState::Running(n) => n.poll_timeout().map_or("none", |t| t.reason),
                        NodeState::Crashed => "crashed",
                    };
                    return Err(SimError::BusyLoop {
                        seed: self.seed,
                        at: self.clock.elapsed(),
                        node: host.name.clone(),
                        reason,
                    });
                }
            } else if after_timeout || progress {
                host.busy = 0;
            }
            let at = self.clock.elapsed();
            for event in out.events {
                self.log
                    .push(format!("{} {}: {event:?}", format_time(at), host.name));
                host.log.push(LogEntry { at, event });
            }
            let wake = next.map(|t| t.max(now));
            if wake != host.wake {
                host.wake = wake;
                if let Some(t) = wake {
                    self.queue.push(t, Item::Wake(id));
                }
            }
            for (socket, dst, data, ttl) in out.transmits {
                if socket.is_stream() {
                    self.stream_send(id, socket, data);
                } else {
                    self.send_from(id, socket, dst, data, ttl);
                }
            }
            self.ask_directory(id);
            // The core may ask for sockets while transmitting (a stream's Close after its last
            // frame): serve them now, and drain what that produced.
            if !self.serve_socket_requests(id) {
                break;
            }
        }
        Ok(())
    }

    /// Opens and closes the sockets (and connects and closes the streams) a node asks for,
    /// like a runtime would. Returns whether there were any requests.
    fn serve_socket_requests(&mut self, id: usize) -> bool {
        let now = self.clock.now();
        let mut any = false;
        loop {
            let req = match &mut self.hosts[id].node {
                NodeState::Running(n) => n.poll_socket_request(),
                NodeState::Crashed => None,
            };
            let Some(req) = req else { break };
            any = true;
            let realm = self.hosts[id].realm;
            match req {
                SocketRequest::Connect { id: sid, addr } => self.stream_connect(id, sid, addr),
                SocketRequest::ConnectRaw { id: sid, addr } => {
                    self.stream_connect_raw(id, sid, addr);
                }
                SocketRequest::Close { id: sid } if sid.is_stream() => self.stream_close(id, sid),
                SocketRequest::Open { id: sid, addr } => {
                    if sid == SocketId::PRIMARY {
                        continue;
                    }
                    if let Some(old) = self.hosts[id].extra.remove(&sid) {
                        self.net.unbind(realm, old);
                        self.unbind_alt(id, old.port());
                    }
                    let ip = self.hosts[id].addr.ip();
                    let bound = match addr {
                        Some(a) => {
                            // An unspecified IP stands for the host's own.
                            let a = if a.ip().is_unspecified() {
                                SocketAddr::new(ip, a.port())
                            } else {
                                a
                            };
                            self.net.bind(id, realm, a, sid).then_some(a)
                        }
                        None => {
                            let mut found = None;
                            for _ in 0..4096 {
                                let h = &mut self.hosts[id];
                                let port = h.next_port;
                                h.next_port = if port >= 60_000 { 40_000 } else { port + 1 };
                                let a = SocketAddr::new(ip, port);
                                if self.net.is_free(realm, a) && self.net.bind(id, realm, a, sid) {
                                    found = Some(a);
                                    break;
                                }
                            }
                            found
                        }
                    };
                    if let Some(a) = bound {
                        self.hosts[id].extra.insert(sid, a);
                        self.bind_alt(id, a.port(), sid);
                    }
                    if let NodeState::Running(n) = &mut self.hosts[id].node {
                        n.handle_socket_opened(now, sid, bound);
                    }
                }
                SocketRequest::Close { id: sid } => {
                    if let Some(old) = self.hosts[id].extra.remove(&sid) {
                        self.net.unbind(realm, old);
                        self.unbind_alt(id, old.port());
                    }
                }
            }
        }
        any
    }

    /// The local address of a host's socket.
    fn socket_addr(&self, id: usize, socket: SocketId) -> Option<SocketAddr> {
        if socket == SocketId::PRIMARY {
            Some(self.hosts[id].addr)
        } else {
            self.hosts[id].extra.get(&socket).copied()
        }
    }

    fn send_from(
        &mut self,
        id: usize,
        socket: SocketId,
        dst: SocketAddr,
        data: Bytes,
        ttl: Option<u8>,
    ) {
        let now = self.clock.now();
        let Some(src) = self.socket_addr(id, socket) else {
            // The node named a socket it does not have (a runtime drops these).
            self.trace_drop(id, dst, data.len(), "host", "no such socket");
            return;
        };
        // One socket, both families: the source (and a NAT64 gateway's translation) by the
        // destination's family.
        let Some((src, out_src, out_dst)) = self.outgoing(id, src, dst) else {
            let trace = self.trace_sent(id, src, dst, &data, false);
            self.net.stats.no_route += 1;
            self.trace_drop(id, dst, data.len(), "net", NetDrop::NoRoute);
            let cause = DropCause::Net(NetDrop::NoRoute);
            let at = self.elapsed();
            self.record_fate(trace, PacketFate::Dropped { at, cause });
            return;
        };
        let trace = self.trace_sent(id, src, dst, &data, false);
        let (src, dst) = (out_src, out_dst);
        if self.net.is_offline(id) {
            self.net.stats.offline += 1;
            self.trace_drop(id, dst, data.len(), "net", NetDrop::Offline);
            let cause = DropCause::Net(NetDrop::Offline);
            self.record_fate(
                trace,
                PacketFate::Dropped {
                    at: self.elapsed(),
                    cause,
                },
            );
            return;
        }
        match self.hosts[id].up.send_udp(now, data.len(), is_ipv6(dst)) {
            Sent::Dropped(r) => {
                self.trace_drop(id, dst, data.len(), "uplink", r);
                let cause = DropCause::Uplink(r);
                self.record_fate(
                    trace,
                    PacketFate::Dropped {
                        at: self.elapsed(),
                        cause,
                    },
                );
            }
            Sent::Arrives { at, duplicate } => {
                if duplicate.is_some() {
                    if let Some(r) = trace.and_then(|i| self.packets.get_mut(i)) {
                        r.duplicated = true;
                    }
                }
                let dup = if duplicate.is_some() {
                    " (duplicated)"
                } else {
                    ""
                };
                self.trace_line(id, format_args!("-> {dst} {}B{dup}", data.len()));
                for t in std::iter::once(at).chain(duplicate) {
                    let item = Item::Arrive {
                        from: id,
                        src,
                        dst,
                        data: data.clone(),
                        ttl,
                        trace,
                    };
                    self.queue.push(t, item);
                }
            }
        }
    }

    /// With packet tracing on, records a datagram (a stream's frame if `tcp`) host `from`
    /// sends from `src` to `dst`, and returns its index for [`Sim::record_fate`].
    fn trace_sent(
        &mut self,
        from: usize,
        src: SocketAddr,
        dst: SocketAddr,
        data: &Bytes,
        tcp: bool,
    ) -> Option<usize> {
        if !self.trace {
            return None;
        }
        self.packets.push(PacketRecord {
            sent_at: self.clock.elapsed(),
            from: self.hosts[from].name.clone(),
            src,
            dst,
            len: data.len(),
            kind: data.first().copied().unwrap_or(0),
            duplicated: false,
            tcp,
            data: data.clone(),
            fates: Vec::new(),
        });
        Some(self.packets.len() - 1)
    }

    fn record_fate(&mut self, trace: Option<usize>, fate: PacketFate) {
        if let Some(r) = trace.and_then(|i| self.packets.get_mut(i)) {
            r.fates.push(fate);
        }
    }

    fn trace_drop(
        &mut self,
        from: usize,
        dst: SocketAddr,
        len: usize,
        at: &str,
        why: impl fmt::Debug,
    ) {
        self.trace_line(
            from,
            format_args!("-> {dst} {len}B dropped ({at}: {why:?})"),
        );
    }

    /// With packet tracing on, logs what host `host` did, stamped with the time and its name.
    fn trace_line(&mut self, host: usize, what: fmt::Arguments<'_>) {
        if self.trace {
            let line = format!(
                "{} {} {what}",
                format_time(self.elapsed()),
                self.hosts[host].name
            );
            self.log.push(line);
        }
    }
}

/// Whether a datagram to `dst` travels over IPv6 (an IPv4-mapped address is IPv4).
fn is_ipv6(dst: SocketAddr) -> bool {
    dst.ip().to_canonical().is_ipv6()
}

/// Bytes of the IP and UDP headers of a datagram to `dst`.
fn udp_headers(dst: SocketAddr) -> usize {
    if is_ipv6(dst) {
        crate::link::UDP_IPV6_OVERHEAD
    } else {
        crate::link::UDP_IPV4_OVERHEAD
    }
}
