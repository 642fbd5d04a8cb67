//! Reaching into a running simulation: nodes, logs, counters, addresses, and failing a test
//! with the seed and a repro command.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pierce_core::{
    Client, ClientEvent, ClientStats, DisconnectReason, HostId, LeaveReason, Server, ServerEvent,
    ServerStats,
};

use super::{Connected, Direction, LogEntry, NodeState, Sim};
use crate::clock::format_time;
use crate::link::{LinkProfile, LinkStats};
use crate::nat::Nat;
use crate::net::{NetStats, Realm};
use crate::node::{Node, NodeEvent};
use crate::scenario::Edge;
use crate::{SERVER, repro_command};

/// Log lines shown when a check fails.
const TAIL: usize = 40;

impl Sim {
    // ---- direct access -----------------------------------------------------------------

    /// Runs `f` on a client (with the current time), then sends what it queued.
    #[track_caller]
    pub fn with_client<R>(&mut self, name: &str, f: impl FnOnce(&mut Client, Instant) -> R) -> R {
        self.with_node(name, f)
    }

    /// Runs `f` on the server (with the current time), then sends what it queued.
    #[track_caller]
    pub fn with_server<R>(&mut self, f: impl FnOnce(&mut Server, Instant) -> R) -> R {
        self.with_node(SERVER, f)
    }

    /// The client named `name`.
    #[track_caller]
    pub fn client(&self, name: &str) -> &Client {
        self.node::<Client>(name)
    }

    /// The client named `name` if it is running (`None` while crashed), without failing the
    /// test.
    #[track_caller]
    pub fn try_client(&self, name: &str) -> Option<&Client> {
        match &self.hosts[self.client_id(name)].node {
            NodeState::Running(n) => n.as_any().downcast_ref::<Client>(),
            NodeState::Crashed => None,
        }
    }

    /// The server.
    #[track_caller]
    pub fn server(&self) -> &Server {
        self.node::<Server>(SERVER)
    }

    /// A running node of type `N` (a [`Client`], the [`Server`], or a custom node).
    #[track_caller]
    pub fn node<N: Node + 'static>(&self, name: &str) -> &N {
        let node = match &self.hosts[self.id(name)].node {
            NodeState::Running(n) => n.as_any().downcast_ref::<N>(),
            NodeState::Crashed => None,
        };
        match node {
            Some(n) => n,
            None => self.fail(format!(
                "{name} is not a running {}",
                std::any::type_name::<N>()
            )),
        }
    }

    pub(super) fn running_mut<N: Node + 'static>(&mut self, id: usize) -> Option<&mut N> {
        match &mut self.hosts[id].node {
            NodeState::Running(n) => n.as_any_mut().downcast_mut::<N>(),
            NodeState::Crashed => None,
        }
    }

    /// Runs `f` on a running node of type `N` (with the current time), then sends what it
    /// queued.
    #[track_caller]
    pub fn with_node<N: Node + 'static, R>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut N, Instant) -> R,
    ) -> R {
        let id = self.id(name);
        let now = self.clock.now();
        let Some(node) = self.running_mut::<N>(id) else {
            self.fail(format!(
                "{name} is not a running {}",
                std::any::type_name::<N>()
            ));
        };
        let r = f(node, now);
        if let Err(e) = self.service(id, false) {
            self.fail(e.summary());
        }
        r
    }

    /// Adds a custom node named `name` behind `edge`, listening on `port`, and services it
    /// once. Returns its own (inside) address.
    ///
    /// # Panics
    /// If the name is taken.
    #[track_caller]
    pub fn add_node<N: Node + 'static>(
        &mut self,
        name: &str,
        edge: Edge,
        port: u16,
        link: &LinkProfile,
        node: N,
    ) -> SocketAddr {
        if self.names.contains_key(name) {
            self.fail(format!("duplicate host name {name:?}"));
        }
        let (realm, _) = self.build_nats(name, &edge);
        self.place_node(name, edge, realm, port, link, |_, _| node)
    }

    /// [`Sim::add_node`] for a node that must know its own address when it is made (a
    /// [`pierce_core::Host`] tells remote players where its client is): `make` gets the
    /// node's (inside) address and the current instant.
    ///
    /// # Panics
    /// If the name is taken.
    #[track_caller]
    pub fn add_node_with<N: Node + 'static>(
        &mut self,
        name: &str,
        edge: Edge,
        port: u16,
        link: &LinkProfile,
        make: impl FnOnce(SocketAddr, Instant) -> N,
    ) -> SocketAddr {
        if self.names.contains_key(name) {
            self.fail(format!("duplicate host name {name:?}"));
        }
        let (realm, _) = self.build_nats(name, &edge);
        self.place_node(name, edge, realm, port, link, make)
    }

    /// Adds a custom node on the same inside network as host `other` (behind the same
    /// NATs). Returns its own (inside) address.
    ///
    /// # Panics
    /// If the name is taken or `other` does not exist.
    #[track_caller]
    pub fn add_node_beside<N: Node + 'static>(
        &mut self,
        name: &str,
        other: &str,
        port: u16,
        link: &LinkProfile,
        node: N,
    ) -> SocketAddr {
        if self.names.contains_key(name) {
            self.fail(format!("duplicate host name {name:?}"));
        }
        let o = self.id(other);
        let (edge, realm) = (self.hosts[o].edge.clone(), self.hosts[o].realm);
        self.place_node(name, edge, realm, port, link, |_, _| node)
    }

    #[track_caller]
    fn place_node<N: Node + 'static>(
        &mut self,
        name: &str,
        edge: Edge,
        realm: Realm,
        port: u16,
        link: &LinkProfile,
        make: impl FnOnce(SocketAddr, Instant) -> N,
    ) -> SocketAddr {
        let id = self.add_host(name, edge, realm, port, link, None);
        let node = make(self.hosts[id].addr, self.clock.now());
        self.hosts[id].node = NodeState::Running(Box::new(node));
        if let Err(e) = self.service(id, false) {
            self.fail(e.summary());
        }
        self.hosts[id].addr
    }

    /// A client's counters.
    #[track_caller]
    pub fn client_stats(&self, name: &str) -> ClientStats {
        self.client(name).stats()
    }

    /// The server's counters.
    #[track_caller]
    pub fn server_stats(&self) -> ServerStats {
        self.server().stats()
    }

    // ---- observations ------------------------------------------------------------------

    /// The scenario seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The instant the simulation started at.
    pub fn epoch(&self) -> Instant {
        self.clock.epoch()
    }

    /// Time since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Names of the clients, in declaration order.
    pub fn clients(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| h.config.is_some())
            .map(|h| h.name.as_str())
            .collect()
    }

    /// A node's events, stamped with time since the epoch.
    #[track_caller]
    pub fn events(&self, name: &str) -> &[LogEntry] {
        &self.hosts[self.id(name)].log
    }

    /// A node's events as log lines: time since the epoch, then the `Debug` form.
    #[track_caller]
    pub fn event_lines(&self, name: &str) -> Vec<String> {
        self.events(name)
            .iter()
            .map(|e| format!("{} {:?}", format_time(e.at), e.event))
            .collect()
    }

    /// The payloads of the peer messages node `name` (a client, or a host-mode node's own
    /// client) received from `from`, in delivery order.
    pub fn peer_payloads(&self, name: &str, from: HostId) -> Vec<&bytes::Bytes> {
        self.client_events(name)
            .filter_map(|(_, e)| match e {
                ClientEvent::PeerMessage {
                    from: f, payload, ..
                } if *f == from => Some(payload),
                _ => None,
            })
            .collect()
    }

    /// The path client `name` uses to `peer` now (`None` if it is not a peer, or `name` is
    /// not a running client).
    pub fn peer_path(&self, name: &str, peer: HostId) -> Option<pierce_core::Path> {
        let client = match &self.hosts[self.id(name)].node {
            NodeState::Running(n) => n.as_any().downcast_ref::<Client>(),
            NodeState::Crashed => None,
        }?;
        client.peer_stats(peer).map(|s| s.path)
    }

    /// A client's events.
    pub fn client_events(&self, name: &str) -> impl Iterator<Item = (Duration, &ClientEvent)> {
        self.events(name).iter().filter_map(|e| match &e.event {
            NodeEvent::Client(c) => Some((e.at, c)),
            _ => None,
        })
    }

    /// The server's events.
    pub fn server_events(&self) -> impl Iterator<Item = (Duration, &ServerEvent)> {
        self.events(SERVER).iter().filter_map(|e| match &e.event {
            NodeEvent::Server(s) => Some((e.at, s)),
            _ => None,
        })
    }

    /// The latest `Connected` event of a client.
    pub fn connected(&self, name: &str) -> Option<Connected> {
        self.client_events(name)
            .filter_map(|(at, e)| match e {
                ClientEvent::Connected {
                    host_id,
                    public_addr,
                    ..
                } => Some(Connected {
                    at,
                    host_id: *host_id,
                    public_addr: *public_addr,
                }),
                _ => None,
            })
            .last()
    }

    /// The latest `Connected` event of a client, or a test failure.
    #[track_caller]
    pub fn expect_connected(&self, name: &str) -> Connected {
        match self.connected(name) {
            Some(c) => c,
            None => self.fail(format!("{name} never connected")),
        }
    }

    /// Waits (up to 10 s) until clients `a` and `b` are connected, puts the two in one group
    /// and returns their host ids: how most pair scenarios begin. A test failure if they do
    /// not connect.
    #[track_caller]
    pub fn group_pair(&mut self, a: &str, b: &str) -> (HostId, HostId) {
        self.eventually("both connect", Duration::from_secs(10), |s| {
            s.connected(a).is_some() && s.connected(b).is_some()
        });
        let (ha, hb) = (
            self.expect_connected(a).host_id,
            self.expect_connected(b).host_id,
        );
        if let Err(e) = self.with_server(|s, now| s.create_group(now, &[ha, hb])) {
            self.fail(format!("create_group({a}, {b}): {e:?}"));
        }
        (ha, hb)
    }

    /// The latest `Disconnected` event of a client.
    pub fn disconnected(&self, name: &str) -> Option<(Duration, DisconnectReason)> {
        self.client_events(name)
            .filter_map(|(at, e)| match e {
                ClientEvent::Disconnected { reason } => Some((at, *reason)),
                _ => None,
            })
            .last()
    }

    /// When and why the server said `host` left, if it did.
    pub fn client_left(&self, host: HostId) -> Option<(Duration, LeaveReason)> {
        self.server_events().find_map(|(at, e)| match e {
            ServerEvent::ClientLeft { host_id, reason } if *host_id == host => Some((at, *reason)),
            _ => None,
        })
    }

    /// Every log line so far: node events, actions and (if enabled) packet traces.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// Every datagram sent so far and what became of it, when packet tracing is on
    /// ([`crate::Scenario::trace_packets`]); empty otherwise.
    pub fn packets(&self) -> &[super::PacketRecord] {
        &self.packets
    }

    /// The log as one string, a line per entry.
    pub fn log_text(&self) -> String {
        let mut s = self.log.join("\n");
        s.push('\n');
        s
    }

    /// Counters of one direction of a host's access link.
    pub fn link_stats(&self, name: &str, dir: Direction) -> LinkStats {
        let h = &self.hosts[self.id(name)];
        match dir {
            Direction::Up => h.up.stats(),
            Direction::Down => h.down.stats(),
        }
    }

    /// Network-wide counters.
    pub fn net_stats(&self) -> NetStats {
        self.net.stats
    }

    /// A NAT by name: a host's own NAT is named after the host; in a chain, `"<host>/0"` is
    /// the innermost.
    #[track_caller]
    pub fn nat(&self, name: &str) -> &Nat {
        match self.net.nats.iter().find(|n| n.name == name) {
            Some(n) => &n.nat,
            None => self.fail(format!("no NAT named {name:?}")),
        }
    }

    /// Processes a host has run before the current one: each [`crate::Action::Reconnect`]
    /// (and, for the server, each [`crate::Action::RestartServer`]) starts a new one, with
    /// new sockets (so new NAT mappings; the old process's idle out).
    #[track_caller]
    pub fn process_generation(&self, name: &str) -> u32 {
        self.hosts[self.id(name)].generation
    }

    /// The NATs between a host and the internet, innermost first.
    pub fn nats_of(&self, name: &str) -> Vec<&str> {
        self.net
            .chain(self.hosts[self.id(name)].realm)
            .into_iter()
            .map(|n| self.net.nats[n].name.as_str())
            .collect()
    }

    /// A host's edge.
    pub fn edge(&self, name: &str) -> &Edge {
        &self.hosts[self.id(name)].edge
    }

    /// A host's own (inside) address.
    pub fn host_addr(&self, name: &str) -> SocketAddr {
        self.hosts[self.id(name)].addr
    }

    /// The server's public address.
    pub fn server_addr(&self) -> SocketAddr {
        self.server_addr
    }

    /// The address the server sees a host's datagrams come from right now, if every NAT on
    /// its path has a live mapping towards the server.
    pub fn mapped_addr(&self, name: &str) -> Option<SocketAddr> {
        let h = &self.hosts[self.id(name)];
        self.net
            .peek_public(self.clock.now(), h.realm, h.addr, self.server_addr)
    }

    // ---- failing -----------------------------------------------------------------------

    /// Fails the test: prints `msg`, the seed, a repro command and the end of the log.
    #[track_caller]
    pub fn fail(&self, msg: impl fmt::Display) -> ! {
        let tail = self.log.len().saturating_sub(TAIL);
        let lines: Vec<&str> = self.log[tail..].iter().map(String::as_str).collect();
        panic!(
            "{msg}\n  seed: {}\n  at: {}\n  repro: {}\n  last {} log lines:\n    {}",
            self.seed,
            format_time(self.elapsed()),
            repro_command(self.seed),
            lines.len(),
            lines.join("\n    ")
        );
    }

    /// Fails the test with `msg()` unless `cond` holds.
    #[track_caller]
    pub fn check(&self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.fail(msg());
        }
    }

    #[track_caller]
    pub(super) fn id(&self, name: &str) -> usize {
        match self.names.get(name) {
            Some(id) => *id,
            None => self.fail(format!("no host named {name:?}")),
        }
    }

    #[track_caller]
    pub(super) fn client_id(&self, name: &str) -> usize {
        let id = self.id(name);
        if id == self.server {
            self.fail(format!("{name} is the server, not a client"));
        }
        id
    }
}
