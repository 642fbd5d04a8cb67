//! The server end, as a router over small machines, each with its own state:
//!
//! - [`sessions`]: the table of [`session`]s (keys, path, timers, outbox, control stream),
//!   the timer heap and the round-robin transmit queue, composing TCP stream tracking
//!   ([`streams`]), the half-open sessions' handshakes ([`handshake`]: ClientHellos, cookies
//!   and Retries) and resumption tickets ([`ticket`]);
//! - [`stun`]: the STUN responder (RFC 5780 with [`discovery`]'s sockets);
//! - [`groups`] and [`rooms`]: membership, pairs and introductions, and the rooms policy;
//! - [`forward`]: the relay data plane (the [`Forwarder`]: relay packets checked and
//!   forwarded without opening anything), and [`relay`]: the relay budgets it draws on, shared
//!   by the forwarders of every thread;
//! - [`events`]: what the application hears; `api.rs`: the application's getters and
//!   commands (each a delegation to the machine that owns what it touches).
//!
//! This file routes each input to the machine that owns it, drains the machines, and turns
//! their outputs into the server's transmits and events.

mod api;
mod discovery;
mod events;
mod forward;
mod groups;
mod handshake;
mod node;
mod relay;
mod reset;
mod rooms;
mod session;
mod sessions;
mod streams;
mod stun;
#[cfg(test)]
mod tests;
mod ticket;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use rand::RngCore;

use crate::cluster::{NodeInfo, NodeLoad};
use crate::config::ServerConfig;
use crate::crypto::PublicKey;
use crate::error::ConfigError;
use crate::event::{HostId, LeaveReason, RoomError, RoomOp, ServerEvent};
use crate::rng::{self, Rng};
use crate::stats::ServerStats;
use crate::time::{Clock, Duration, Instant, Timeout};
use crate::wire::control::ControlMsg;
use crate::wire::demux::{self, Datagram};
use crate::wire::frame::{Frame, decode_prefix};
use crate::wire::handshake::MIN_CLIENT_HELLO_LEN;
use crate::wire::sealed::SealedPacket;
use crate::wire::stun::StunCredential;
use crate::{Endpoint, Events};
use crate::{MAX_DATAGRAM_SIZE, RECV_SCRATCH_SIZE, SocketId, SocketRequest, Transmit};
pub use forward::{
    Forward, ForwardReport, ForwardUpdate, Forwarder, REPORT_INTERVAL, relay_shard, relay_shard_of,
};
use forward::{Report, Role};
pub use rooms::RoomSummary;
use session::{Heard, Path, Routed};
use sessions::Due;

/// A Pierce server: accepts encrypted client sessions, assigns each a [`HostId`], keeps them
/// alive and times them out; manages P2P groups and relays between their members.
///
/// # Driving it
///
/// As every [`crate::Endpoint`]: feed [`Server::handle_datagram`] and [`Server::handle_timeout`];
/// after each input or command drain [`Server::poll_transmit`] until `None`, then read
/// [`Server::poll_timeout`]; drain [`Server::poll_event`] at leisure.
///
/// # Hostile input
///
/// Handshakes are rate-limited per source IP and globally before any X25519 work; a source
/// that has not shown it receives at its address is answered with a stateless cookie (Retry)
/// over its budget, so a spoofer who spends an IP's budget cannot keep that IP's clients out
/// (see `ServerConfig::proven_handshake_rate_per_ip`). The half-open table is bounded, and
/// the only packets sent to an address that has not proven it can receive are a ServerHello
/// of [`crate::wire::handshake::SERVER_HELLO_LEN`] bytes in answer to a ClientHello of at
/// least [`MIN_CLIENT_HELLO_LEN`], a smaller Retry, a stateless reset of
/// [`crate::wire::reset::RESET_LEN`] bytes in answer to a longer session packet of a session
/// it does not have (rate-limited globally), and STUN answers within STUN's own budget: the
/// server never amplifies beyond STUN's factor. Everything invalid is dropped and counted in
/// [`Server::stats`].
pub struct Server {
    public_key: PublicKey,
    /// The one random stream (ephemeral keys, pair keys, ticket ids), lent to who draws.
    rng: Rng,
    clock: Clock,
    stun: stun::StunResponder,
    /// Answers packets of sessions this server does not have (it restarted) with a reset.
    resets: reset::Resets,
    sessions: sessions::Sessions,
    groups: groups::Groups,
    rooms: rooms::Rooms,
    /// Its own relay forwarder: every relay packet when it relays alone, else those that
    /// reach its thread.
    forwarder: Forwarder,
    /// The budgets every forwarder draws on.
    budgets: Arc<relay::Budgets>,
    /// Changes for the forwarders on other threads (only with `relay_shards`).
    forward_out: VecDeque<ForwardUpdate>,
    config: Arc<ServerConfig>,
    events: events::AppEvents,
    /// Where sealed packets are opened.
    scratch: Box<[u8]>,
    stats: ServerStats,
    /// [`Server::drain`] was called.
    draining: bool,
    /// Its part in a cluster ([`ServerConfig::cluster`]).
    node: Option<node::Node>,
    /// Half-open sessions whose Connect waits for the directory to take their ticket: slot
    /// → (session id, connect token).
    parked: BTreeMap<usize, (u32, Vec<u8>)>,
}

impl Server {
    /// A server with no clients. `seed` must come from a CSPRNG in production. `unix_time` is
    /// the wall-clock time (since the Unix epoch) at `now`; it is used only to check connect
    /// token and ticket expiry.
    ///
    /// # Errors
    /// Any error of [`ServerConfig::validate`].
    pub fn new(
        config: Arc<ServerConfig>,
        seed: [u8; 32],
        now: Instant,
        unix_time: Duration,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        // Draws: cookie key, first session generation, first pair id (random starts: a restarted
        // server's ids do not collide with those its clients bring back), the STUN limiter's key.
        let mut rng = rng::derive(&seed, b"server");
        let sessions = sessions::Sessions::new(config.clone(), &mut rng, now, unix_time);
        let groups = groups::Groups::new(rng.next_u32().max(1));
        let stun = stun::StunResponder::new(rng.next_u64(), &config);
        let budgets = Arc::new(relay::Budgets::new(&config));
        let mut sessions = sessions;
        let mut rooms = rooms::Rooms::new(config.rooms.clone());
        let node = (config.cluster.clone()).map(|c| {
            sessions.await_node_number();
            rooms.set_clustered();
            node::Node::new(c, now)
        });
        let role = if config.relay_shards == 0 {
            Role::Alone
        } else {
            Role::Beside
        };
        Ok(Self {
            public_key: config.secret_key.public_key(),
            rng,
            clock: Clock::new(now),
            stun,
            resets: reset::Resets::new(&config),
            sessions,
            groups,
            rooms,
            forwarder: Forwarder::new(&config, budgets.clone(), role),
            budgets,
            forward_out: VecDeque::new(),
            events: events::AppEvents::new(config.max_pending_events),
            scratch: vec![0u8; RECV_SCRATCH_SIZE].into_boxed_slice(),
            stats: ServerStats::default(),
            draining: false,
            node,
            parked: BTreeMap::new(),
            config,
        })
    }

    // ---- relay forwarders on other threads ---------------------------------------------

    /// Relay forwarder `index` of [`ServerConfig::relay_shards`], for a thread of its own,
    /// knowing every client and pair there is now; keep it current with
    /// [`Server::poll_forward_update`], and hand what it reports to
    /// [`Server::handle_forward_report`]. See [`Forwarder`].
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] if `index` is not below `relay_shards`.
    pub fn forwarder(&self, index: u16) -> Result<Forwarder, ConfigError> {
        let count = self.config.relay_shards;
        if index >= count {
            return Err(ConfigError::OutOfRange("relay forwarder index"));
        }
        let role = Role::Shard { index, count };
        let mut f = Forwarder::new(&self.config, self.budgets.clone(), role);
        let snapshot = (self.sessions.forward_snapshot()).chain(self.groups.forward_snapshot());
        for u in snapshot {
            f.handle_update(&ForwardUpdate(u));
        }
        Ok(f)
    }

    /// The next change every forwarder on another thread must learn, in order (none unless
    /// [`ServerConfig::relay_shards`] is set). Drain after every call into the server, as
    /// [`Server::poll_transmit`].
    pub fn poll_forward_update(&mut self) -> Option<ForwardUpdate> {
        self.forward_out.pop_front()
    }

    /// What a forwarder on another thread reported: a client it heard (which keeps its
    /// session alive, and may move it).
    pub fn handle_forward_report(&mut self, now: Instant, report: ForwardReport) {
        self.command(now, |s, now| s.on_forward_report(now, report.0));
    }

    // ---- routing -----------------------------------------------------------------------

    /// A command at `now`: `f` acts (with the clamped `now`), then the call settles.
    fn command<T>(&mut self, now: Instant, f: impl FnOnce(&mut Self, Instant) -> T) -> T {
        let now = self.clock.advance(now);
        let done = f(self, now);
        self.settle(now);
        done
    }

    /// One datagram from `path`: to the machine its kind belongs to.
    fn receive(&mut self, now: Instant, path: Path, datagram: &[u8]) {
        let now = self.clock.advance(now);
        self.stats.io.received(datagram.len());
        let session_socket = path.socket == SocketId::PRIMARY || path.socket.is_stream();
        match demux::decode(datagram) {
            Err(e) => self.stats.dropped.count_decode(e),
            Ok(Datagram::Stun(m)) => {
                // Signed by a client of ours: its session's credential checks it.
                let credential = (m.username())
                    .and_then(StunCredential::session_of)
                    .and_then(|id| self.sessions.stun_credential(id));
                let stats = &mut self.stats;
                (self.stun).handle_request(now, path, &m, datagram, credential, stats);
            }
            // The discovery sockets answer STUN only; a server answers no handshake.
            _ if !session_socket => self.stats.dropped.unexpected += 1,
            Ok(Datagram::ServerHello(_) | Datagram::Retry(_)) => self.stats.dropped.unexpected += 1,
            Ok(Datagram::ClientHello(_)) if datagram.len() < MIN_CLIENT_HELLO_LEN => {
                self.stats.dropped.malformed += 1;
            }
            // A cluster node issues no host id before it has its number: hellos go unanswered
            // (the client's retransmissions get in once the directory has numbered it).
            Ok(Datagram::ClientHello(_))
                if self.node.as_ref().is_some_and(|n| n.number().is_none()) =>
            {
                self.stats.dropped.unexpected += 1;
            }
            Ok(Datagram::ClientHello(hello)) => {
                let (rng, stats) = (&mut self.rng, &mut self.stats);
                (self.sessions).handle_hello(now, path, &hello, rng, stats);
            }
            Ok(Datagram::Relay(_)) => self.on_relay_packet(now, path, datagram),
            // A reset is never answered (nor is anything a client sends us unasked).
            Ok(Datagram::Relayed(_) | Datagram::Reset(_)) => self.stats.dropped.unexpected += 1,
            Ok(Datagram::Sealed(packet)) => {
                let mut scratch = std::mem::take(&mut self.scratch);
                self.on_sealed(now, path, &packet, &mut scratch);
                self.scratch = scratch;
            }
        }
        self.settle(now);
    }

    /// A sealed packet, opened into `scratch` once, its frames decoded once and routed (a
    /// packet with any malformed frame is refused whole); then peers hear what changed.
    fn on_sealed(
        &mut self,
        now: Instant,
        path: Path,
        packet: &SealedPacket<'_>,
        scratch: &mut [u8],
    ) {
        let Some((key, plaintext)) = self.sessions.open(packet, scratch, &mut self.stats) else {
            let id = packet.header.receiver;
            if !packet.header.peer && !self.sessions.knows(id) {
                let len = packet.aad.len() + packet.ciphertext_and_tag.len();
                (self.resets).handle_unknown(now, path, id, len, &mut self.stats);
            }
            return;
        };
        let (frames, malformed) = decode_prefix(plaintext);
        let probe = frames.iter().any(|f| matches!(f, Frame::Probe { .. }));
        let (counter, stats) = (packet.header.counter, &mut self.stats);
        let heard = self.sessions.heard(now, key, path, counter, probe, stats);
        if malformed.is_some() {
            self.stats.dropped.bad_frames += 1;
        } else {
            self.on_frames(now, key, path, &frames);
        }
        self.after_heard(now, key, path, heard);
    }

    /// What hearing session `key`'s client on `path` changed, told: peers first hear where
    /// it is (if it moved), then that it is back online.
    fn after_heard(&mut self, now: Instant, key: usize, path: Path, heard: Heard) {
        if let Some(host) = heard.moved {
            self.groups.client_moved(host, path.addr);
        }
        if let Some(host_id) = heard.back {
            self.events.push(ServerEvent::ClientOnline { host_id });
            self.groups.client_offline(host_id, false);
        }
        self.drain_groups(now);
        if heard.back.is_some() {
            self.sessions.enqueue(key);
        }
    }

    /// Each frame of session `key`'s packet to the session, then what it passes on onwards.
    fn on_frames(&mut self, now: Instant, key: usize, path: Path, frames: &[Frame<'_>]) {
        for &frame in frames {
            let handshake = matches!(frame, Frame::Resume { .. } | Frame::Connect { .. });
            let parked = (self.parked.get(&key))
                .is_some_and(|(id, _)| self.sessions.still_half_open(key, *id));
            if handshake && parked {
                // Retransmitted while the directory is asked about its ticket.
                continue;
            }
            let stats = &mut self.stats;
            match self.sessions.handle_frame(now, key, path, frame, stats) {
                Routed::Done => {}
                Routed::Gone => return,
                Routed::Connect(token) => self.on_connect(now, key, token),
                Routed::Close(code) => {
                    return self.end_client(now, key, LeaveReason::Closed(code), None);
                }
                Routed::Control(from) => {
                    while let Some(msg) = self.sessions.poll_delivered(key) {
                        match ControlMsg::decode(&msg) {
                            Ok(m) => self.on_control(now, from, m),
                            Err(_) => self.stats.dropped.bad_frames += 1,
                        }
                        if !self.sessions.contains(key) {
                            return;
                        }
                    }
                }
                Routed::Datagram { from, payload } => self.events.message(from, payload),
            }
        }
        if self.sessions.contains(key) {
            self.sessions.schedule(now, key);
        }
    }

    /// Half-open session `key`'s Connect frame: settled now, or (a cluster node, with a
    /// ticket) once the directory says whether the ticket was used anywhere before.
    fn on_connect(&mut self, now: Instant, key: usize, token: &[u8]) {
        if let Some(node) = &mut self.node {
            // (A Connect that will be refused does not spend its ticket.)
            let accepted = self.sessions.would_accept();
            let presented = self.sessions.presented_ticket(key).filter(|_| accepted);
            if let Some((session, ticket)) = presented {
                let ttl = self.sessions.ticket_ttl(now, &ticket);
                node.ask_ticket(now, key, session, ticket.id, ttl);
                self.parked.insert(key, (session, token.to_vec()));
                return;
            }
        }
        let (rng, stats) = (&mut self.rng, &mut self.stats);
        for e in self.sessions.handle_connect(now, key, token, rng, stats) {
            self.events.push(e);
        }
    }

    /// A control message from a client: to the application, or the rooms (and groups).
    fn on_control(&mut self, now: Instant, from: HostId, msg: ControlMsg<'_>) {
        if let ControlMsg::App { data } = msg {
            return self.events.message(from, data);
        }
        let (groups, rng, stats) = (&mut self.groups, &mut self.rng, &mut self.stats);
        (self.rooms).handle_control(groups, rng, &self.sessions, from, msg, stats);
        self.drain_groups(now);
    }

    // ---- cluster -----------------------------------------------------------------------

    /// This node's load now (for the registry and placement).
    pub(super) fn load(&self) -> NodeLoad {
        NodeLoad {
            clients: self.sessions.clients() as u32,
            rooms: self.rooms.len() as u32,
            ..NodeLoad::default()
        }
    }

    /// Hands the rooms' questions to the node (joins of rooms not here, rooms gone), then
    /// carries out what the node's answers decided.
    fn drain_node(&mut self, now: Instant) {
        if self.node.is_none() {
            return;
        }
        let load = self.load();
        let Some(node) = &mut self.node else {
            return;
        };
        while let Some(join) = self.rooms.poll_ask() {
            node.ask_join(now, join, load);
        }
        while let Some(room) = self.rooms.poll_released() {
            node.release(now, room);
        }
        while let Some(verdict) = self.node.as_mut().and_then(node::Node::poll_verdict) {
            self.carry_out(now, verdict);
        }
        self.drain_groups(now);
    }

    /// Carries out one verdict of the node's.
    fn carry_out(&mut self, now: Instant, verdict: node::Verdict) {
        use node::Verdict;
        match verdict {
            Verdict::Numbered(number) => {
                self.sessions.set_node_number(number);
                self.events.push(ServerEvent::NodeNumbered { number });
            }
            Verdict::Reachable(reachable) => {
                self.events
                    .push(ServerEvent::DirectoryReachable { reachable });
            }
            Verdict::Listed => {
                if let Some(node) = &self.node {
                    self.rooms.set_listed(node.known().1);
                }
            }
            // (A client gone meanwhile joins nothing.)
            Verdict::Here(join) if self.sessions.established_key(join.host).is_some() => {
                let (groups, rng) = (&mut self.groups, &mut self.rng);
                (self.rooms).join_here(groups, rng, &self.sessions, &join);
            }
            Verdict::Here(_) => {}
            Verdict::Redirect { host, to, room } => {
                let elsewhere = !self.groups.client_groups(host).is_empty();
                if elsewhere {
                    rooms::room_error(&mut self.groups, host, RoomOp::Join, RoomError::OtherNode);
                } else if self.sessions.established_key(host).is_some() {
                    self.redirect(host, to, Some(room));
                }
            }
            Verdict::Fail { host, error } => {
                rooms::room_error(&mut self.groups, host, RoomOp::Join, error);
            }
            Verdict::Ticket {
                key,
                session,
                first,
            } => {
                let Some((id, token)) = self.parked.remove(&key) else {
                    return;
                };
                if id != session || !self.sessions.still_half_open(key, session) {
                    return;
                }
                if !first {
                    self.sessions.refuse_ticket(key, &mut self.stats);
                }
                let (rng, stats) = (&mut self.rng, &mut self.stats);
                for e in self.sessions.handle_connect(now, key, &token, rng, stats) {
                    self.events.push(e);
                }
            }
            Verdict::Lost { room, to } => {
                let members = (self.rooms.members_of(&self.groups, &room)).map(<[_]>::to_vec);
                for host in members.unwrap_or_default() {
                    self.redirect(host, to, None);
                }
            }
            Verdict::Move { to } => self.carry_out_move(now, to),
            Verdict::Stranded { room } => {
                let members = (self.rooms.members_of(&self.groups, &room)).map(<[_]>::to_vec);
                let within_ms = 0;
                for host in members.unwrap_or_default() {
                    (self.groups).push_control(host, &ControlMsg::Draining { within_ms });
                }
            }
        }
    }

    /// Sends client `host` to node `to` (for `room`, if the redirect is for a join).
    pub(super) fn redirect(&mut self, host: HostId, to: SocketAddr, room: Option<String>) {
        let name = room.as_deref().unwrap_or("");
        self.groups.push_control(
            host,
            &ControlMsg::Redirect {
                node: to,
                room: name,
            },
        );
        self.events.push(ServerEvent::ClientRedirected {
            host_id: host,
            to,
            room,
        });
    }

    /// A draining cluster node says so to the directory; once it answers (or fails to),
    /// each room moves to the least-loaded other active node ([`Verdict::Move`]: the claim
    /// handed over, every member redirected there, where they rejoin it). Returns the
    /// clients in rooms here, who wait for that (the others are told the node drains).
    pub(super) fn move_rooms(&mut self, now: Instant) -> BTreeSet<HostId> {
        let load = self.load();
        let relayed = self.stats.relayed_bytes;
        let listed = self.rooms.listed_here(&self.groups);
        let Some(node) = &mut self.node else {
            return BTreeSet::new();
        };
        node.drain(now, load, relayed, listed.clone());
        (listed.iter())
            .filter_map(|room| self.rooms.members_of(&self.groups, &room.name))
            .flat_map(|members| members.iter().copied())
            .collect()
    }

    /// Every room here moves to `to` (the node drains); with nowhere to go, their members
    /// are told the node drains.
    fn carry_out_move(&mut self, now: Instant, to: Option<NodeInfo>) {
        let listed = self.rooms.listed_here(&self.groups);
        for room in listed {
            match (&to, &mut self.node) {
                // (Its members are sent there when the directory has handed it over.)
                (Some(to), Some(node)) => node.hand(now, room.name, to),
                _ => self.carry_out(now, node::Verdict::Stranded { room: room.name }),
            }
        }
    }

    /// Heartbeat if due; questions past their time fail.
    fn node_timeout(&mut self, now: Instant) {
        let Some(node) = &mut self.node else {
            return;
        };
        node.handle_timeout(now);
        if node.beat_due(now) {
            // (Only now: the room list is built once a heartbeat, not on every wakeup.)
            let load = self.load();
            let relayed = self.stats.relayed_bytes;
            let rooms = self.rooms.listed_here(&self.groups);
            if let Some(node) = &mut self.node {
                node.beat(now, load, relayed, rooms);
            }
        }
        self.drain_node(now);
    }

    /// A peer packet behind a relay header (the relay fast path): the forwarder checks it
    /// (session, counter, tag, pair, budgets) without opening anything; what it heard comes
    /// back first, then the packet goes into the receiver's outbox.
    fn on_relay_packet(&mut self, now: Instant, path: Path, datagram: &[u8]) {
        let stats = &mut self.stats;
        let forward =
            (self.forwarder).handle_datagram(now, path.socket, path.addr, datagram, stats);
        while let Some(report) = self.forwarder.poll_report() {
            self.on_forward_report(now, report.0);
        }
        match forward {
            Forward::Relay { from, to, peer, .. } => match self.sessions.established_key(to) {
                Some(target) => {
                    let stats = &mut self.stats;
                    self.sessions
                        .push_relayed(target, from, &datagram[peer], stats);
                }
                None => self.stats.dropped.relay_denied += 1,
            },
            // Its own forwarder owns every session.
            Forward::Control => self.stats.dropped.unexpected += 1,
            Forward::Unknown { session } => {
                let stats = &mut self.stats;
                (self.resets).handle_unknown(now, path, session, datagram.len(), stats);
            }
            Forward::Dropped => {}
        }
    }

    /// A forwarder heard a client.
    fn on_forward_report(&mut self, now: Instant, report: Report) {
        let Report::Heard {
            session,
            at,
            path: (socket, addr),
            newest,
        } = report;
        let path = Path { socket, addr };
        let stats = &mut self.stats;
        if let Some((key, heard)) =
            (self.sessions).heard_relay(at.min(now), session, path, newest, stats)
        {
            self.after_heard(now, key, path, heard);
        }
    }

    /// Ends a client: it leaves its groups (members told, pairs torn down), `ClientLeft` is
    /// reported; then one Close frame with `close`, or the session is removed at once.
    fn end_client(&mut self, now: Instant, key: usize, reason: LeaveReason, close: Option<u16>) {
        let Some(host) = self.sessions.end(key) else {
            return;
        };
        self.rooms.client_ended(&mut self.groups, host, reason);
        self.drain_groups(now);
        self.events.push(ServerEvent::ClientLeft {
            host_id: host,
            reason,
        });
        match close {
            Some(code) => self.sessions.close(key, code),
            None => self.sessions.remove(now, key),
        }
    }

    /// End of a call: what groups queued goes out; overloaded clients are disconnected; the
    /// forwarders learn what changed.
    fn settle(&mut self, now: Instant) {
        self.drain_groups(now);
        self.drain_node(now);
        while let Some(host) = self.sessions.poll_overloaded() {
            if let Some(key) = self.sessions.established_key(host) {
                self.end_client(now, key, LeaveReason::Overloaded, None);
            }
        }
        self.publish();
    }

    /// What sessions and groups changed, to every forwarder: its own at once, the others'
    /// through [`Server::poll_forward_update`]. Sessions first: a pair's clients are known
    /// before the pair.
    fn publish(&mut self) {
        while let Some(u) =
            (self.sessions.poll_forward_update()).or_else(|| self.groups.poll_forward_update())
        {
            let u = ForwardUpdate(u);
            self.forwarder.handle_update(&u);
            if self.config.relay_shards > 0 {
                self.forward_out.push_back(u);
            }
        }
    }

    /// Hands what `groups` queued to the sessions and the application, in order.
    fn drain_groups(&mut self, now: Instant) {
        while let Some((to, msg)) = self.groups.poll_control() {
            self.sessions.send_control(now, to, msg);
        }
        while let Some(e) = self.groups.poll_event() {
            self.events.push(e);
        }
    }
}

impl Endpoint for Server {
    /// Processes one datagram received on local socket `socket`. The discovery sockets
    /// ([`Server::enable_nat_discovery`]) answer STUN only; everything else there is dropped.
    fn handle_datagram_on(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        // Only while a subscriber listens at debug: the `pierce` binary always has the
        // feature on, and its relay path should not copy the counters per datagram for nobody.
        #[cfg(feature = "tracing")]
        let before = crate::trace::drops_wanted(false).then_some(self.stats.dropped);
        let from = crate::canonical(from);
        self.receive(now, Path { socket, addr: from }, datagram);
        #[cfg(feature = "tracing")]
        if let Some(before) = before {
            let len = datagram.len();
            crate::trace::dropped(false, &before, &self.stats.dropped, socket, from, len);
        }
    }

    /// TCP stream `id` ended: a session on it sends nothing until its client is heard again
    /// (over UDP or a new stream), and keeps everything else (it goes offline, then times out,
    /// like a client whose network went away).
    fn handle_stream_closed(&mut self, now: Instant, id: SocketId) {
        self.clock.advance(now);
        self.sessions.handle_stream_closed(id, &mut self.stats);
        self.publish();
    }

    /// The runtime accepted TCP stream `id` from `peer`. A stream that carries no handshake
    /// within 10 s is closed again (see [`Server::poll_socket_request`]), as is one whose
    /// last session ended or moved away. The server holds at most `max_sessionless_streams`
    /// streams that carry no session yet, and one IP at most 8 such streams older than a
    /// second: past either, the oldest such stream is closed to make room for this one
    /// (counted in `stats().streams_evicted`), so idle connections cannot keep a real client
    /// out (see `server/streams.rs`).
    fn handle_stream_accepted(&mut self, now: Instant, id: SocketId, peer: SocketAddr) {
        let now = self.clock.advance(now);
        if id.is_stream() {
            (self.sessions).handle_stream_accepted(now, id, peer.ip(), &mut self.stats);
        }
    }

    /// The runtime opened socket `id` at `local` (or could not: `None`).
    fn handle_socket_opened(&mut self, now: Instant, id: SocketId, local: Option<SocketAddr>) {
        self.clock.advance(now);
        self.stun.handle_socket_opened(id, local);
    }

    /// Advances timers: handshake expiry, keepalives, client timeouts. Idempotent; may be
    /// called early or often.
    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        // The node first: what its verdicts do to sessions (a parked Connect settled, a
        // redirect queued) is then due with the rest.
        self.node_timeout(now);
        self.sessions.handle_timeout(now);
        while let Some(due) = (self.sessions).poll_due(now, &mut self.rng, &mut self.stats) {
            match due {
                Due::TimedOut(key) => self.end_client(now, key, LeaveReason::TimedOut, None),
                Due::Offline(host_id) => {
                    self.events.push(ServerEvent::ClientOffline { host_id });
                    self.groups.client_offline(host_id, true);
                    self.drain_groups(now);
                }
            }
        }
        self.settle(now);
    }

    /// The next datagram: a ServerHello or Retry, a STUN answer, or a session's packet.
    ///
    /// # Panics
    /// In debug builds if `buf` is shorter than [`MAX_DATAGRAM_SIZE`].
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        debug_assert!(buf.len() >= MAX_DATAGRAM_SIZE, "buf too small");
        let now = self.clock.advance(now);
        let stats = &mut self.stats;
        let t = self
            .sessions
            .poll_handshake(buf, stats)
            .or_else(|| self.stun.poll_transmit(buf, stats))
            .or_else(|| self.resets.poll_transmit(buf, stats))
            .or_else(|| self.sessions.poll_transmit(now, buf, stats))?;
        self.stats.io.sent(t.len);
        Some(t)
    }

    /// The next socket the server wants the runtime to open or close (see
    /// [`SocketRequest`]).
    fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.stun
            .poll_socket_request()
            .or_else(|| self.sessions.poll_socket_request())
    }

    /// The earliest of the machines' deadlines, with its reason (only the sessions, with
    /// their TCP streams, have any). Pure.
    ///
    /// Deadlines are kept lazily: after a session ends, its last deadline may still be
    /// reported once ("stale session deadline"); waking for it is harmless and clears it.
    fn poll_timeout(&self) -> Option<Timeout> {
        let node = self.node.as_ref().and_then(node::Node::poll_timeout);
        Timeout::earliest(self.sessions.poll_timeout(), node)
    }
}

impl Events for Server {
    type Event = ServerEvent;

    /// The next event, if any.
    fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.poll_event()
    }
}
