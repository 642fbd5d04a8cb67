//! The server end: handshakes, client sessions, keepalives and timeouts (this file); P2P
//! groups, pairs and the relay (`groups.rs`); the rooms policy (`rooms.rs`).

mod discovery;
mod groups;
mod relay;
mod rooms;
mod streams;
mod stun;
mod ticket;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rand::RngCore;
use slab::Slab;

use crate::arena::Arena;
use crate::config::{MAX_SESSIONS, ServerConfig};
use crate::crypto::{Ephemeral, HandshakeKeys, PacketKeys, PublicKey};
use crate::error::{ConfigError, GroupError, SendError, UnknownHost};
use crate::event::{GroupId, HostId, LeaveReason, MemberLeftReason, RejectReason, ServerEvent};
use crate::ratelimit::Limiter;
use crate::rng::{self, Rng};
use crate::rudp::stream::ControlStream;
use crate::stats::ServerStats;
use crate::time::{Clock, Duration, Instant};
use crate::token::{ConnectToken, TokenError};
use crate::wire::control::ControlMsg;
use crate::wire::demux::{self, Datagram};
use crate::wire::frame::{DATAGRAM_FRAME_OVERHEAD, Frame, Frames, RELAY_FRAME_OVERHEAD};
use crate::wire::handshake::{
    COOKIE_LEN, ClientHello, MIN_CLIENT_HELLO_LEN, Retry, SERVER_HELLO_LEN, ServerHello,
};
use crate::wire::sealed::{OVERHEAD, SealedPacket};
use crate::{Endpoint, Events};
use crate::{RECV_SCRATCH_SIZE, SocketId, SocketRequest, Transmit};

const INDEX_MASK: u32 = (MAX_SESSIONS - 1) as u32;

/// Retry packets waiting to be sent, at most.
const RETRY_QUEUE_CAP: usize = 1024;

/// A Pierce server: accepts encrypted client sessions, assigns each a [`HostId`], keeps them
/// alive and times them out.
///
/// # Driving it
///
/// Same contract as [`crate::Client`]: feed [`Server::handle_datagram`] and
/// [`Server::handle_timeout`]; after each input or command drain [`Server::poll_transmit`]
/// until `None`, then read [`Server::poll_timeout`]; drain [`Server::poll_event`] at leisure.
///
/// # Hostile input
///
/// Handshakes are rate-limited per source IP and globally before any X25519 work, the
/// half-open table is bounded, and the only packet sent to an address that has not proven it
/// can receive is a ServerHello of [`SERVER_HELLO_LEN`] bytes in answer to a ClientHello of
/// at least [`MIN_CLIENT_HELLO_LEN`]: the server never amplifies. Everything invalid is dropped
/// and counted in [`Server::stats`].
pub struct Server {
    config: Arc<ServerConfig>,
    public_key: PublicKey,
    rng: Rng,
    clock: Clock,
    /// The instant `unix_base` was taken at.
    epoch: Instant,
    /// Wall-clock time (since the Unix epoch) at `epoch`; used for token expiry only.
    unix_base: Duration,
    sessions: Slab<Session>,
    /// Generation counter: makes `HostId`s unique for the life of the server.
    next_gen: u32,
    /// Half-open sessions by (socket, source, client session id), to answer retransmitted
    /// hellos.
    half_open: BTreeMap<(SocketId, SocketAddr, u32), usize>,
    /// TCP streams: which sessions are on them, when unused ones close.
    streams: streams::Streams,
    limiter: Limiter,
    /// Session deadlines, lazily invalidated: an entry counts only while it equals the
    /// session's `timer`.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Sessions with a ServerHello to send.
    hello_queue: VecDeque<(usize, u32)>,
    /// Sessions with sealed output pending, served round-robin.
    tx_queue: VecDeque<(usize, u32)>,
    events: VecDeque<ServerEvent>,
    send_arena: Arena,
    recv_arena: Arena,
    scratch: Box<[u8]>,
    stats: ServerStats,
    /// P2P groups, their pairs, and the introductions.
    groups: groups::Groups,
    /// The rooms policy over `groups`.
    rooms: rooms::Rooms,
    /// Relay budgets and the forwarding decision.
    relay: relay::Relay,
    /// Clients whose control queue overflowed during the current call; disconnected at its end.
    overloaded: Vec<HostId>,
    /// Answers STUN Binding requests; owns the NAT behaviour discovery sockets.
    stun: stun::StunResponder,
    /// Retry packets to send: (socket, to, client session id, cookie).
    retry_queue: VecDeque<(SocketId, SocketAddr, u32, [u8; COOKIE_LEN])>,
    /// Key of the stateless cookies.
    cookie_key: [u8; 32],
    /// Resumption tickets.
    tickets: ticket::Tickets,
    /// Sessions whose host id came from a ticket (not derivable from their slab key).
    restored: BTreeMap<HostId, usize>,
}

/// Where a datagram came from, or where a session's client is: a local socket (UDP, or a TCP
/// stream) and the remote address on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Path {
    /// The local socket.
    socket: SocketId,
    /// The remote address.
    addr: SocketAddr,
}

struct Session {
    /// Generation: distinguishes this session from earlier ones in the same slab slot.
    generation: u32,
    /// The client's id: `(generation << 32) | slab key`, or the one its resumption ticket
    /// gave back.
    host: HostId,
    /// When its last resumption ticket was issued.
    ticket_at: Option<Instant>,
    /// Our receiver id: slab index in the low 24 bits, generation bits above.
    id: u32,
    /// The client's receiver id.
    client_session: u32,
    /// Where the newest authentic packet came from (the path: this address on `socket`).
    addr: SocketAddr,
    /// The local socket the path is on: the primary UDP socket or a TCP stream.
    socket: SocketId,
    /// The stream the path is on was closed: nothing is sent until the client's next
    /// authentic packet (from any path) gives it a new one.
    path_closed: bool,
    /// The client's address on UDP, once an authentic UDP packet came from it: the one peers
    /// punch to (for a client on UDP, `addr`).
    udp: Option<SocketAddr>,
    keys: PacketKeys,
    phase: Phase,
    last_recv: Instant,
    last_send: Instant,
    out: Outbox,
    /// In `tx_queue`.
    queued: bool,
    /// The deadline this session has in `timers`, if any.
    timer: Option<Instant>,
    /// Reliable ordered control messages in both directions.
    control: ControlStream,
    /// Not heard for `offline_after`: its peers were told; cleared by its next packet.
    offline: bool,
}

enum Phase {
    /// ServerHello sent; waiting for the Connect frame.
    HalfOpen {
        hello: [u8; SERVER_HELLO_LEN],
        client_ephemeral: [u8; 32],
        expires: Instant,
        /// A valid resumption ticket came ahead of the Connect frame.
        resume: Option<ticket::Ticket>,
    },
    /// A client.
    Established { user_id: Option<u64> },
    /// A last Reject or Close frame to send, then the session is removed.
    Closing,
}

#[derive(Default)]
struct Outbox {
    welcome: bool,
    reject: Option<u8>,
    close: Option<u16>,
    ping: bool,
    datagrams: VecDeque<Bytes>,
    /// Peer packets to forward: (sender, sealed packet).
    relayed: VecDeque<(HostId, Bytes)>,
    /// A path probe to answer where it came from: (socket, address, nonce).
    probe_ack: Option<(SocketId, SocketAddr, u64)>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        !self.welcome
            && self.reject.is_none()
            && self.close.is_none()
            && !self.ping
            && self.datagrams.is_empty()
            && self.relayed.is_empty()
            && self.probe_ack.is_none()
    }
}

impl Session {
    fn host_id(&self, _key: usize) -> HostId {
        self.host
    }

    /// The next instant this session needs `handle_timeout`. A control retransmission that
    /// is already due is not a deadline: the session is queued for transmit instead (a past
    /// deadline would make `handle_timeout` spin).
    fn deadline(&self, config: &ServerConfig, now: Instant) -> Instant {
        match self.phase {
            Phase::HalfOpen { expires, .. } => expires,
            Phase::Established { .. } => {
                let mut d = self.last_recv + config.idle_timeout;
                if !self.offline && !config.offline_after.is_zero() {
                    d = d.min(self.last_recv + config.offline_after);
                }
                if !self.out.ping {
                    d = d.min(self.last_send + config.keepalive_interval);
                }
                if let Some(c) = self.control.next_timeout().filter(|c| *c > now) {
                    d = d.min(c);
                }
                if let Some(at) = self
                    .ticket_at
                    .and_then(|at| ticket::renewal(at, config.ticket_lifetime))
                {
                    d = d.min(at);
                }
                d
            }
            Phase::Closing => self.last_recv + config.idle_timeout,
        }
    }
}

impl Server {
    /// A server with no clients. `seed` must come from a CSPRNG in production. `unix_time` is
    /// the wall-clock time (since the Unix epoch) at `now`; it is used only to check connect
    /// token expiry.
    pub fn new(
        config: Arc<ServerConfig>,
        seed: [u8; 32],
        now: Instant,
        unix_time: Duration,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = rng::derive(&seed, b"server");
        let mut cookie_key = [0u8; 32];
        rng.fill_bytes(&mut cookie_key);
        // Random starts: ids from a restarted server's sessions do not collide with the host
        // ids its clients' tickets bring back, nor its pair ids with their surviving pairs.
        let next_gen = rng.next_u32().max(1);
        let next_pair_id = rng.next_u32().max(1);
        let tickets = ticket::Tickets::new(&config.secret_key, config.ticket_lifetime);
        let limiter = Limiter::new(
            rng.next_u64(),
            config.handshake_rate_per_ip,
            config.handshake_burst_per_ip,
            config.handshake_rate_global,
            config.handshake_burst_global,
        );
        let rooms = rooms::Rooms::new(config.rooms.clone());
        let relay = relay::Relay::new(&config);
        Ok(Self {
            public_key: config.secret_key.public_key(),
            config,
            rng,
            clock: Clock::new(now),
            epoch: now,
            unix_base: unix_time,
            sessions: Slab::new(),
            next_gen,
            half_open: BTreeMap::new(),
            limiter,
            timers: BinaryHeap::new(),
            hello_queue: VecDeque::new(),
            tx_queue: VecDeque::new(),
            events: VecDeque::new(),
            send_arena: Arena::default(),
            recv_arena: Arena::default(),
            scratch: vec![0u8; RECV_SCRATCH_SIZE].into_boxed_slice(),
            stats: ServerStats::default(),
            groups: groups::Groups::new(next_pair_id),
            rooms,
            relay,
            overloaded: Vec::new(),
            stun: stun::StunResponder::default(),
            retry_queue: VecDeque::new(),
            streams: streams::Streams::default(),
            cookie_key,
            tickets,
            restored: BTreeMap::new(),
        })
    }

    // ---- getters -----------------------------------------------------------------------

    /// The public key clients may pin.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        let mut s = self.stats;
        s.io.time_went_backwards = self.clock.backwards();
        s.groups = self.groups.len() as u64;
        s.pairs = self.groups.pairs() as u64;
        s
    }

    /// The address a connected client's newest packet came from.
    pub fn client_addr(&self, host: HostId) -> Option<SocketAddr> {
        self.established(host).map(|(_, s)| s.addr)
    }

    /// The user id from a connected client's connect token (when tokens are required).
    pub fn client_user_id(&self, host: HostId) -> Option<u64> {
        match self.established(host)?.1.phase {
            Phase::Established { user_id } => user_id,
            _ => None,
        }
    }

    /// Connected clients, in id order.
    pub fn clients(&self) -> impl Iterator<Item = HostId> + '_ {
        self.sessions
            .iter()
            .filter(|(_, s)| matches!(s.phase, Phase::Established { .. }))
            .map(|(k, s)| s.host_id(k))
    }

    /// Largest payload [`Server::send`] accepts.
    pub fn max_payload(&self) -> usize {
        self.config.max_datagram_size - OVERHEAD - DATAGRAM_FRAME_OVERHEAD
    }

    // ---- commands ----------------------------------------------------------------------

    /// Queues an unreliable datagram for a client.
    ///
    /// # Errors
    /// [`SendError::UnknownHost`], [`SendError::PayloadTooLarge`] or [`SendError::QueueFull`].
    pub fn send(&mut self, now: Instant, to: HostId, payload: &[u8]) -> Result<(), SendError> {
        self.clock.advance(now);
        let max = self.max_payload();
        let cap = self.config.max_queued_datagrams_per_client;
        let Some((key, s)) = self.established_mut(to) else {
            return Err(SendError::UnknownHost(to));
        };
        if payload.len() > max {
            return Err(SendError::PayloadTooLarge { max });
        }
        if s.out.datagrams.len() >= cap {
            return Err(SendError::QueueFull);
        }
        let b = self.send_arena.copy(payload);
        self.sessions[key].out.datagrams.push_back(b);
        self.enqueue(key);
        Ok(())
    }

    /// Queues a reliable, ordered message for a client (on its control stream).
    ///
    /// # Errors
    /// [`SendError::UnknownHost`], [`SendError::PayloadTooLarge`] or [`SendError::QueueFull`].
    pub fn send_reliable(
        &mut self,
        now: Instant,
        to: HostId,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.clock.advance(now);
        let max = self.max_reliable_payload();
        let Some((key, s)) = self.established_mut(to) else {
            return Err(SendError::UnknownHost(to));
        };
        if payload.len() > max {
            return Err(SendError::PayloadTooLarge { max });
        }
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        let n = ControlMsg::App { data: payload }
            .encode(&mut buf)
            .map_err(|_| SendError::PayloadTooLarge { max })?;
        s.control
            .push(&buf[..n])
            .map_err(|_| SendError::QueueFull)?;
        self.enqueue(key);
        self.schedule(key);
        Ok(())
    }

    /// Largest payload [`Server::send_reliable`] accepts.
    pub fn max_reliable_payload(&self) -> usize {
        self.config.max_datagram_size
            - OVERHEAD
            - crate::wire::frame::STREAM_FRAME_OVERHEAD
            - 1
            - crate::wire::frame::STREAM_ACK_FRAME_LEN
    }

    /// Disconnects a client with `code`: it is told, it leaves its groups (their members see
    /// `MemberLeft`), and [`ServerEvent::ClientLeft`] with [`LeaveReason::Kicked`] is reported
    /// at once.
    ///
    /// # Errors
    /// [`UnknownHost`] if no connected client has that id.
    pub fn disconnect(&mut self, now: Instant, host: HostId, code: u16) -> Result<(), UnknownHost> {
        self.clock.advance(now);
        let Some((key, _)) = self.established_mut(host) else {
            return Err(UnknownHost(host));
        };
        self.end_client(key, LeaveReason::Kicked(code), Some(code));
        self.settle();
        Ok(())
    }

    /// Creates a group with `members` (possibly none), joined in the order given.
    ///
    /// # Errors
    /// [`GroupError::UnknownHost`] if any member is not a connected client (nothing is
    /// created then).
    pub fn create_group(
        &mut self,
        now: Instant,
        members: &[HostId],
    ) -> Result<GroupId, GroupError> {
        self.clock.advance(now);
        if let Some(&bad) = members.iter().find(|&&m| self.established(m).is_none()) {
            return Err(GroupError::UnknownHost(bad));
        }
        let group = self.groups.create();
        let roster = SessionView {
            sessions: &self.sessions,
            restored: &self.restored,
        };
        for &m in members {
            if !self.groups.members(group).is_some_and(|g| g.contains(&m)) {
                self.groups.join(group, m, &mut self.rng, &roster);
            }
        }
        self.drain_groups();
        self.settle();
        Ok(group)
    }

    /// Adds a connected client to a group.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`], [`GroupError::UnknownHost`] or
    /// [`GroupError::AlreadyMember`].
    pub fn join_group(
        &mut self,
        now: Instant,
        group: GroupId,
        host: HostId,
    ) -> Result<(), GroupError> {
        self.clock.advance(now);
        let members = self.groups.members(group).ok_or(GroupError::UnknownGroup)?;
        if members.contains(&host) {
            return Err(GroupError::AlreadyMember);
        }
        if self.established(host).is_none() {
            return Err(GroupError::UnknownHost(host));
        }
        let roster = SessionView {
            sessions: &self.sessions,
            restored: &self.restored,
        };
        self.groups.join(group, host, &mut self.rng, &roster);
        self.drain_groups();
        self.settle();
        Ok(())
    }

    /// Removes a client from a group; every member (the leaver included) is told.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`] or [`GroupError::NotMember`].
    pub fn leave_group(
        &mut self,
        now: Instant,
        group: GroupId,
        host: HostId,
    ) -> Result<(), GroupError> {
        self.clock.advance(now);
        let members = self.groups.members(group).ok_or(GroupError::UnknownGroup)?;
        if !members.contains(&host) {
            return Err(GroupError::NotMember);
        }
        self.rooms
            .leave(&mut self.groups, group, host, MemberLeftReason::Left);
        self.drain_groups();
        self.settle();
        Ok(())
    }

    /// Destroys a group: members get `GroupDestroyed`, pairs that shared only this group are
    /// torn down.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`].
    pub fn destroy_group(&mut self, now: Instant, group: GroupId) -> Result<(), GroupError> {
        self.clock.advance(now);
        if !self.rooms.destroy(&mut self.groups, group) {
            return Err(GroupError::UnknownGroup);
        }
        self.drain_groups();
        self.settle();
        Ok(())
    }

    /// Members of a group, in join order.
    pub fn group_members(&self, group: GroupId) -> Option<&[HostId]> {
        self.groups.members(group)
    }

    /// Groups, in id order.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.ids()
    }

    /// Groups a connected client is in.
    pub fn client_groups(&self, host: HostId) -> Option<&[GroupId]> {
        self.established(host)
            .map(|_| self.groups.client_groups(host))
    }

    /// Turns on NAT behaviour discovery (RFC 5780): STUN answers on `alternate` too, and on
    /// the two crossings of the addresses when the IPs differ, so clients can classify their
    /// NAT's mapping and filtering ([`crate::Client::discover_nat`], standard tools such as
    /// `turnutils_natdiscovery`). `primary` is the bound address of the primary socket; the
    /// alternate sockets are requested through [`Server::poll_socket_request`] (the alternate
    /// may have port 0).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if the addresses are unusable (unspecified, mixed families,
    /// equal) or discovery is already on.
    pub fn enable_nat_discovery(
        &mut self,
        primary: SocketAddr,
        alternate: SocketAddr,
    ) -> Result<(), ConfigError> {
        self.stun.enable_discovery(primary, alternate)
    }

    /// The bound address of local socket `id`, once known.
    pub fn socket_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.stun.socket_addr(id)
    }

    // ---- inputs ------------------------------------------------------------------------

    fn receive(&mut self, now: Instant, socket: SocketId, from: SocketAddr, datagram: &[u8]) {
        let now = self.clock.advance(now);
        self.stats.io.datagrams_in += 1;
        self.stats.io.bytes_in += datagram.len() as u64;
        let decoded = demux::decode(datagram);
        let session_socket = socket == SocketId::PRIMARY || socket.is_stream();
        if !session_socket && !matches!(decoded, Ok(Datagram::Stun(_)) | Err(_)) {
            self.stats.dropped.unexpected += 1;
            return;
        }
        match decoded {
            Err(e) => self.stats.dropped.count_decode(e),
            Ok(Datagram::Stun(_)) if socket.is_stream() => self.stats.dropped.stun += 1,
            Ok(Datagram::Stun(m)) => self.stun.handle_request(
                now,
                Path { socket, addr: from },
                &m,
                datagram,
                &mut self.limiter,
                &mut self.stats,
            ),
            Ok(Datagram::ServerHello(_) | Datagram::Retry(_)) => {
                self.stats.dropped.unexpected += 1;
            }
            Ok(Datagram::ClientHello(hello)) => {
                if datagram.len() < MIN_CLIENT_HELLO_LEN {
                    self.stats.dropped.malformed += 1;
                } else {
                    self.on_client_hello(now, socket, from, &hello);
                }
            }
            Ok(Datagram::Sealed(packet)) if packet.header.peer => {
                // Peer packets reach the server only inside Relay frames.
                self.stats.dropped.unexpected += 1;
            }
            Ok(Datagram::Sealed(packet)) => self.on_sealed(now, socket, from, &packet),
        }
        self.settle();
    }

    /// The local socket a client's session is on: [`SocketId::PRIMARY`] (UDP) or a TCP
    /// stream ([`SocketId::is_stream`]).
    pub fn client_socket(&self, host: HostId) -> Option<SocketId> {
        self.established(host).map(|(_, s)| s.socket)
    }

    // ---- outputs -----------------------------------------------------------------------

    // ---- internals ---------------------------------------------------------------------

    /// The slab key of `host`'s session, whatever its phase.
    fn key_of(&self, host: HostId) -> Option<usize> {
        key_of_in(&self.sessions, &self.restored, host)
    }

    fn established(&self, host: HostId) -> Option<(usize, &Session)> {
        established_in(&self.sessions, &self.restored, host)
    }

    fn established_mut(&mut self, host: HostId) -> Option<(usize, &mut Session)> {
        established_mut_in(&mut self.sessions, &self.restored, host)
    }

    fn unix_now_secs(&self, now: Instant) -> u64 {
        (self.unix_base + now.saturating_duration_since(self.epoch)).as_secs()
    }

    fn push_event(&mut self, e: ServerEvent) {
        #[cfg(feature = "tracing")]
        crate::trace::server_event(&e);
        if self.events.len() >= self.config.max_pending_events {
            self.stats.io.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }

    fn enqueue(&mut self, key: usize) {
        let s = &mut self.sessions[key];
        if !s.queued {
            s.queued = true;
            self.tx_queue.push_back((key, s.generation));
        }
    }

    /// Makes sure `timers` holds an entry no later than the session's deadline.
    fn schedule(&mut self, key: usize) {
        let now = self.clock.now();
        let s = &mut self.sessions[key];
        let d = s.deadline(&self.config, now);
        if s.timer.is_none_or(|t| d < t) {
            s.timer = Some(d);
            self.timers.push(Reverse((d, key, s.generation)));
        }
    }

    /// Forgets a session. Established clients go through [`Self::end_client`] first.
    fn remove(&mut self, key: usize) {
        let s = self.sessions.remove(key);
        if let Phase::HalfOpen { .. } = s.phase {
            self.half_open.remove(&(s.socket, s.addr, s.client_session));
            self.stats.half_open -= 1;
        }
        if s.socket.is_stream() {
            self.streams.release(self.clock.now(), s.socket, key, true);
        }
        if self.restored.get(&s.host) == Some(&key) {
            self.restored.remove(&s.host);
        }
    }

    /// Ends a client's membership of everything: it leaves its groups (the other members are
    /// told), its pairs are torn down, `ClientLeft` is reported. With `close`, one Close frame
    /// is still sent to it; otherwise the session is removed at once.
    fn end_client(&mut self, key: usize, reason: LeaveReason, close: Option<u16>) {
        let s = &mut self.sessions[key];
        if !matches!(s.phase, Phase::Established { .. }) {
            return;
        }
        let host = s.host_id(key);
        s.phase = Phase::Closing;
        self.stats.clients -= 1;
        let member_reason = match reason {
            LeaveReason::Kicked(_) => MemberLeftReason::Kicked,
            _ => MemberLeftReason::Disconnected,
        };
        for g in self.groups.client_ended(host) {
            self.rooms.leave(&mut self.groups, g, host, member_reason);
        }
        self.drain_groups();
        self.push_event(ServerEvent::ClientLeft {
            host_id: host,
            reason,
        });
        match close {
            Some(code) => {
                let s = &mut self.sessions[key];
                s.out = Outbox {
                    close: Some(code),
                    ..Outbox::default()
                };
                self.enqueue(key);
            }
            None => self.remove(key),
        }
    }

    /// Queues a control message for a connected client. A client too far behind to take it
    /// is disconnected at the end of the current call.
    fn send_control(&mut self, host: HostId, msg: &ControlMsg<'_>) {
        let Some((key, s)) = self.established_mut(host) else {
            return;
        };
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        let Ok(n) = msg.encode(&mut buf) else {
            return;
        };
        if s.control.push(&buf[..n]).is_err() {
            self.overloaded.push(host);
            return;
        }
        self.enqueue(key);
        self.schedule(key);
    }

    /// End-of-call housekeeping: disconnect clients whose control queue overflowed.
    fn settle(&mut self) {
        while let Some(host) = self.overloaded.pop() {
            if let Some((key, _)) = self.established_mut(host) {
                self.end_client(key, LeaveReason::Overloaded, None);
            }
        }
    }

    fn on_client_hello(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        hello: &ClientHello<'_>,
    ) {
        if !self.limiter.allow(now, from.ip()) {
            self.stats.dropped.rate_limited += 1;
            return;
        }
        if let Some(&key) = self.half_open.get(&(socket, from, hello.client_session)) {
            if let Phase::HalfOpen {
                client_ephemeral, ..
            } = &self.sessions[key].phase
            {
                if *client_ephemeral == hello.client_ephemeral {
                    // Our ServerHello was lost: send the same one again.
                    self.hello_queue
                        .push_back((key, self.sessions[key].generation));
                    return;
                }
            }
            // A new attempt from the same source and id replaces the old one.
            self.remove(key);
        }
        if self.stats.half_open as usize >= self.config.cookie_threshold
            && !self.cookie_ok(now, from, hello)
        {
            self.stats.dropped.cookie_required += 1;
            if self.retry_queue.len() < RETRY_QUEUE_CAP {
                let cookie = self.cookie(Self::cookie_bucket(self.epoch, now), from, hello);
                self.retry_queue
                    .push_back((socket, from, hello.client_session, cookie));
            }
            return;
        }
        if self.stats.half_open as usize >= self.config.max_half_open
            || self.sessions.len() >= MAX_SESSIONS
        {
            self.stats.dropped.handshake_capacity += 1;
            return;
        }
        let ephemeral = Ephemeral::generate(&mut self.rng);
        let Ok(keys) = HandshakeKeys::server(
            &self.config.secret_key,
            &self.public_key,
            &ephemeral,
            &hello.client_ephemeral,
        ) else {
            self.stats.dropped.auth_failed += 1;
            return;
        };
        let key = self.sessions.vacant_key();
        let mut generation = self.next_gen;
        while self
            .restored
            .contains_key(&HostId((u64::from(generation) << 32) | key as u64))
        {
            generation = generation.wrapping_add(1).max(1);
        }
        self.next_gen = generation.wrapping_add(1).max(1);
        let id = (key as u32 & INDEX_MASK) | (generation << 24);
        let mut reply = ServerHello {
            client_session: hello.client_session,
            server_session: id,
            server_ephemeral: ephemeral.public(),
            server_static: self.public_key.0,
            tag: [0; 16],
        };
        reply.tag = keys.confirm_tag(&reply.aad());
        let mut bytes = [0u8; SERVER_HELLO_LEN];
        let _ = reply.encode(&mut bytes);
        self.sessions.insert(Session {
            generation,
            host: HostId((u64::from(generation) << 32) | key as u64),
            ticket_at: None,
            id,
            client_session: hello.client_session,
            addr: from,
            socket,
            path_closed: false,
            udp: (!socket.is_stream()).then_some(from),
            keys: keys.into_server_session(),
            phase: Phase::HalfOpen {
                hello: bytes,
                client_ephemeral: hello.client_ephemeral,
                expires: now + self.config.handshake_timeout,
                resume: None,
            },
            last_recv: now,
            last_send: now,
            out: Outbox::default(),
            queued: false,
            timer: None,
            control: ControlStream::new(self.config.max_queued_control_per_client),
            offline: false,
        });
        self.half_open
            .insert((socket, from, hello.client_session), key);
        if socket.is_stream() {
            self.streams.claim(socket, key);
        }
        self.stats.half_open += 1;
        self.stats.handshakes_started += 1;
        self.hello_queue.push_back((key, generation));
        self.schedule(key);
    }

    fn on_sealed(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        packet: &SealedPacket<'_>,
    ) {
        let key = (packet.header.receiver & INDEX_MASK) as usize;
        let Some(s) = self
            .sessions
            .get_mut(key)
            .filter(|s| s.id == packet.header.receiver)
        else {
            self.stats.dropped.unknown_session += 1;
            return;
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut moved = None;
        let mut back = None;
        match s.keys.open(packet, &mut scratch) {
            Err(e) => self.stats.dropped.count_open(e),
            Ok(plaintext) => {
                s.last_recv = now;
                if s.offline {
                    s.offline = false;
                    back = Some(s.host_id(key));
                    // Answer at once: the client learns its network is back (and restarts
                    // its peers' retransmissions) without waiting for our keepalive.
                    s.out.ping = true;
                }
                // Follow the client to a new path (address, or transport) only on its newest
                // packet, so a delayed or re-sent older packet cannot move the session; and
                // never on a probe: a client on TCP checks UDP with probes, and moves only
                // once the answer came back (UDP may work one way only).
                let newest = s.keys.highest_received() == Some(packet.header.counter);
                let changed = from != s.addr || socket != s.socket || s.path_closed;
                // (The frames are looked at only when the path would change: not per packet.)
                if newest
                    && changed
                    && !Frames::new(plaintext).any(|f| matches!(f, Ok(Frame::Probe { .. })))
                {
                    if let Phase::HalfOpen { .. } = s.phase {
                        let old = (s.socket, s.addr, s.client_session);
                        if let Some(k) = self.half_open.remove(&old) {
                            self.half_open.insert((socket, from, s.client_session), k);
                        }
                    }
                    if socket != s.socket {
                        self.stats.transport_changes += 1;
                        if s.socket.is_stream() {
                            self.streams.release(now, s.socket, key, false);
                        }
                    }
                    if socket.is_stream() {
                        // (Again, too, for a session heard anew on a stream reported closed.)
                        self.streams.claim(socket, key);
                    }
                    s.addr = from;
                    s.socket = socket;
                    s.path_closed = false;
                }
                // Peers punch to the client's UDP address: they hear when it changes.
                if newest && !socket.is_stream() && s.udp != Some(from) {
                    s.udp = Some(from);
                    self.stats.address_changes += 1;
                    if matches!(s.phase, Phase::Established { .. }) {
                        moved = Some(s.host_id(key));
                    }
                }
                if Frames::new(plaintext).any(|f| f.is_err()) {
                    self.stats.dropped.bad_frames += 1;
                } else {
                    self.on_frames(now, key, (socket, from), plaintext);
                }
            }
        }
        self.scratch = scratch;
        // Peers first hear where it is (if it moved), then that it is back online.
        if let Some(host) = moved {
            self.groups.client_moved(host, from);
            self.drain_groups();
        }
        if let Some(host_id) = back {
            self.push_event(ServerEvent::ClientOnline { host_id });
            self.groups.client_offline(host_id, false);
            self.drain_groups();
            if self.sessions.contains(key) {
                self.enqueue(key);
            }
        }
    }

    /// The frames of an authentic packet that came in on `path` (socket, address).
    fn on_frames(
        &mut self,
        now: Instant,
        key: usize,
        path: (SocketId, SocketAddr),
        plaintext: &[u8],
    ) {
        for frame in Frames::new(plaintext).flatten() {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            let host = s.host_id(key);
            match (frame, &s.phase) {
                (Frame::Padding(_), _) => {}
                (Frame::Resume { ticket }, Phase::HalfOpen { .. }) => {
                    self.on_resume(now, key, ticket);
                }
                (Frame::Resume { .. }, Phase::Established { .. }) => {}
                (Frame::Connect { token }, Phase::HalfOpen { .. }) => {
                    self.on_connect(now, key, token);
                }
                (Frame::Connect { .. }, Phase::Established { .. }) => {
                    // Our Welcome was lost and the client retried.
                    s.out.welcome = true;
                    self.enqueue(key);
                }
                (Frame::Ping, Phase::Established { .. }) => self.stats.io.keepalives_received += 1,
                (Frame::Probe { nonce }, Phase::Established { .. }) if !path.0.is_stream() => {
                    // One answer pending per session at most (the latest probe's).
                    s.out.probe_ack = Some((path.0, path.1, nonce));
                    self.enqueue(key);
                }
                (Frame::Close { code }, Phase::Established { .. }) => {
                    self.end_client(key, LeaveReason::Closed(code), None);
                    return;
                }
                (Frame::Stream { seq, data }, Phase::Established { .. }) => {
                    s.control.on_data(seq, data);
                    self.enqueue(key);
                    while let Some(msg) = self
                        .sessions
                        .get_mut(key)
                        .and_then(|s| s.control.poll_delivered())
                    {
                        match ControlMsg::decode(&msg) {
                            Ok(m) => self.on_control(host, m),
                            Err(_) => self.stats.dropped.bad_frames += 1,
                        }
                        if !self.sessions.contains(key) {
                            return;
                        }
                    }
                }
                (Frame::StreamAck { next, mask }, Phase::Established { .. }) => {
                    s.control.on_ack(now, next, mask);
                }
                (Frame::Relay { to, packet }, Phase::Established { .. }) => {
                    self.on_relay(now, key, host, HostId(to), packet);
                }
                (Frame::Close { .. }, Phase::HalfOpen { .. }) => {
                    self.remove(key);
                    return;
                }
                (Frame::Datagram { payload }, Phase::Established { .. }) => {
                    let payload = self.recv_arena.copy(payload);
                    self.push_event(ServerEvent::Message {
                        from: host,
                        payload,
                    });
                }
                _ => self.stats.dropped.unexpected += 1,
            }
        }
        if self.sessions.contains(key) {
            self.schedule(key);
        }
    }

    /// A control message from a client.
    fn on_control(&mut self, from: HostId, msg: ControlMsg<'_>) {
        let roster = SessionView {
            sessions: &self.sessions,
            restored: &self.restored,
        };
        let (groups, rng) = (&mut self.groups, &mut self.rng);
        match msg {
            ControlMsg::MemberAck { group, member } => {
                groups.handle_member_ack(GroupId(group), from, HostId(member));
            }
            ControlMsg::App { data } => {
                let payload = self.recv_arena.copy(data);
                self.push_event(ServerEvent::Message { from, payload });
            }
            ControlMsg::Candidates { addrs } => {
                groups.handle_candidates(from, &addrs, &mut self.stats);
            }
            ControlMsg::NatInfo { info } => groups.handle_nat_info(from, info),
            ControlMsg::RoomJoin {
                flags,
                max_members,
                name,
                password,
            } => self.rooms.handle_join(
                groups,
                rng,
                &roster,
                from,
                flags,
                max_members,
                name,
                password,
            ),
            ControlMsg::RoomJoinRandom => self.rooms.handle_join_random(groups, rng, &roster, from),
            ControlMsg::RoomListGet { offset } => self.rooms.handle_list(groups, from, offset),
            ControlMsg::RoomLeave { group } => {
                self.rooms.handle_leave(groups, from, GroupId(group));
            }
            ControlMsg::RoomKick { group, member } => {
                self.rooms
                    .handle_kick(groups, from, GroupId(group), HostId(member));
            }
            _ => self.stats.dropped.unexpected += 1,
        }
        self.drain_groups();
    }

    /// A Relay frame from session `key` (client `from`): forwarded into `to`'s outbox if the
    /// relay says so.
    fn on_relay(&mut self, now: Instant, key: usize, from: HostId, to: HostId, packet: &[u8]) {
        let sender = relay::Sender {
            host: from,
            slot: key,
            generation: self.sessions[key].generation,
        };
        let (groups, sessions, restored) = (&self.groups, &self.sessions, &self.restored);
        let route = |from, to| {
            let group = groups.relay_group(from, to)?;
            let (to_key, _) = established_in(sessions, restored, to)?;
            Some((to_key, group))
        };
        let Some(to_key) = self
            .relay
            .handle_relay(now, sender, to, packet, route, &mut self.stats)
        else {
            return;
        };
        let target = &mut self.sessions[to_key];
        if target.out.relayed.len() >= self.config.max_queued_relay_per_client {
            self.stats.dropped.queue_full += 1;
            return;
        }
        let bytes = self.send_arena.copy(packet);
        self.sessions[to_key].out.relayed.push_back((from, bytes));
        self.enqueue(to_key);
    }

    /// Hands what `groups` queued to the sessions (control messages) and the application
    /// (events), in order.
    fn drain_groups(&mut self) {
        while let Some((to, msg)) = self.groups.poll_control() {
            let Some((key, s)) = established_mut_in(&mut self.sessions, &self.restored, to) else {
                continue;
            };
            if s.control.push(msg).is_err() {
                self.overloaded.push(to);
                continue;
            }
            self.enqueue(key);
            self.schedule(key);
        }
        while let Some(e) = self.groups.poll_event() {
            self.push_event(e);
        }
    }

    fn on_connect(&mut self, now: Instant, key: usize, token: &[u8]) {
        let verdict = match &self.config.token_secret {
            None => Ok(None),
            Some(_) if token.is_empty() => Err(RejectReason::TokenRequired),
            Some(secret) => match ConnectToken::verify(secret, token, self.unix_now_secs(now)) {
                Ok(user) => Ok(Some(user)),
                Err(TokenError::Expired) => Err(RejectReason::ExpiredToken),
                Err(TokenError::Invalid) => Err(RejectReason::InvalidToken),
            },
        };
        let verdict = verdict.and_then(|user| {
            if self.stats.clients as usize >= self.config.max_clients {
                Err(RejectReason::ServerFull)
            } else {
                Ok(user)
            }
        });
        // A ticket gives its host id back if that id is free and the ticket's user (if any)
        // is the token's.
        let resume = match &self.sessions[key].phase {
            Phase::HalfOpen {
                resume: Some(t), ..
            } => Some(*t),
            _ => None,
        };
        let resume = resume.filter(|t| {
            let same_user = match &verdict {
                Ok(Some(user)) => t.user_id == Some(*user),
                _ => true,
            };
            same_user && self.key_of(t.host).is_none()
        });
        let s = &mut self.sessions[key];
        self.half_open.remove(&(s.socket, s.addr, s.client_session));
        self.stats.half_open -= 1;
        match verdict {
            Ok(user_id) => {
                let user_id = user_id.or_else(|| resume.and_then(|t| t.user_id));
                if let Some(t) = resume {
                    s.host = t.host;
                    self.restored.insert(t.host, key);
                }
                let s = &mut self.sessions[key];
                s.phase = Phase::Established { user_id };
                s.out.welcome = true;
                // Reschedule from scratch: the half-open expiry no longer applies.
                s.timer = None;
                let (host_id, addr) = (s.host, s.addr);
                self.stats.clients += 1;
                self.stats.handshakes_completed += 1;
                self.push_event(ServerEvent::ClientJoined {
                    host_id,
                    addr,
                    user_id,
                });
                if resume.is_some() {
                    self.stats.sessions_resumed += 1;
                    self.push_event(ServerEvent::ClientResumed { host_id });
                }
                self.issue_ticket(now, key);
            }
            Err(reason) => {
                s.phase = Phase::Closing;
                s.out.reject = Some(reason.code());
                s.timer = None;
                self.stats.handshakes_rejected += 1;
            }
        }
        self.enqueue(key);
    }

    /// A valid, unused ticket ahead of the Connect frame: remembered for `on_connect`.
    /// Anything else is counted and ignored (the client gets a fresh host id).
    fn on_resume(&mut self, now: Instant, key: usize, sealed: &[u8]) {
        let unix = self.unix_now_secs(now);
        let ok = self.tickets.handle_resume(unix, sealed, &mut self.stats);
        if let Phase::HalfOpen { resume, .. } = &mut self.sessions[key].phase {
            *resume = ok;
        }
    }

    /// Sends `key`'s client a fresh resumption ticket for its host id.
    fn issue_ticket(&mut self, now: Instant, key: usize) {
        let s = &self.sessions[key];
        let Phase::Established { user_id } = s.phase else {
            return;
        };
        let host = s.host;
        let unix = self.unix_now_secs(now);
        let Some(sealed) = self.tickets.issue(unix, host, user_id, &mut self.rng) else {
            return;
        };
        self.sessions[key].ticket_at = Some(now);
        self.send_control(host, &ControlMsg::Ticket { ticket: &sealed });
    }

    fn on_session_timer(&mut self, now: Instant, key: usize) {
        let s = &mut self.sessions[key];
        let idle_deadline = s.last_recv + self.config.idle_timeout;
        match s.phase {
            Phase::HalfOpen { expires, .. } if now >= expires => {
                self.remove(key);
                self.stats.handshakes_expired += 1;
                return;
            }
            Phase::Established { .. } if now >= idle_deadline => {
                self.stats.clients_timed_out += 1;
                self.end_client(key, LeaveReason::TimedOut, None);
                return;
            }
            Phase::Established { .. } => {
                let offline_after = self.config.offline_after;
                if !s.offline && !offline_after.is_zero() && now >= s.last_recv + offline_after {
                    s.offline = true;
                    let host_id = s.host_id(key);
                    self.stats.clients_offline += 1;
                    self.push_event(ServerEvent::ClientOffline { host_id });
                    self.groups.client_offline(host_id, true);
                    self.drain_groups();
                }
                let lifetime = self.config.ticket_lifetime;
                if self.sessions[key]
                    .ticket_at
                    .and_then(|at| ticket::renewal(at, lifetime))
                    .is_some_and(|at| now >= at)
                {
                    self.issue_ticket(now, key);
                }
                let s = &mut self.sessions[key];
                if now >= s.last_send + self.config.keepalive_interval && !s.out.ping {
                    s.out.ping = true;
                    self.enqueue(key);
                }
                if self.sessions[key].control.wants_transmit(now) {
                    self.enqueue(key);
                }
            }
            Phase::Closing if now >= idle_deadline => {
                self.remove(key);
                return;
            }
            Phase::HalfOpen { .. } | Phase::Closing => {}
        }
        self.schedule(key);
    }

    /// Ten-second buckets since the server started: a cookie is valid in its bucket and the
    /// next, so 10–20 s.
    fn cookie_bucket(epoch: Instant, now: Instant) -> u64 {
        now.saturating_duration_since(epoch).as_secs() / 10
    }

    /// HMAC-SHA256 over the bucket, the source address, the client's session id and
    /// ephemeral key: only someone who receives at `from` can echo it.
    fn cookie(&self, bucket: u64, from: SocketAddr, hello: &ClientHello<'_>) -> [u8; COOKIE_LEN] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.cookie_key)
            .expect("HMAC accepts keys of any length");
        mac.update(&bucket.to_be_bytes());
        let mut addr = [0u8; 19];
        let mut w = crate::wire::Writer::new(&mut addr);
        let _ = w.addr(from);
        let n = w.len();
        mac.update(&addr[..n]);
        mac.update(&hello.client_session.to_be_bytes());
        mac.update(&hello.client_ephemeral);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; COOKIE_LEN];
        out.copy_from_slice(&full[..COOKIE_LEN]);
        out
    }

    fn cookie_ok(&self, now: Instant, from: SocketAddr, hello: &ClientHello<'_>) -> bool {
        if hello.cookie.len() != COOKIE_LEN {
            return false;
        }
        let bucket = Self::cookie_bucket(self.epoch, now);
        [bucket, bucket.saturating_sub(1)].into_iter().any(|b| {
            let want = self.cookie(b, from, hello);
            // Compare without an early exit.
            want.iter()
                .zip(hello.cookie)
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
        })
    }

    fn next_retry(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let (socket, dst, client_session, cookie) = self.retry_queue.pop_front()?;
        let len = Retry {
            client_session,
            cookie,
        }
        .encode(buf)
        .ok()?;
        self.stats.retries_sent += 1;
        Some(Transmit { dst, len, socket })
    }

    fn next_hello(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((key, generation)) = self.hello_queue.pop_front() {
            let Some(s) = self
                .sessions
                .get(key)
                .filter(|s| s.generation == generation)
            else {
                continue;
            };
            if let Phase::HalfOpen { hello, .. } = &s.phase {
                buf[..SERVER_HELLO_LEN].copy_from_slice(hello);
                return Some(Transmit {
                    dst: s.addr,
                    len: SERVER_HELLO_LEN,
                    socket: s.socket,
                });
            }
        }
        None
    }

    fn next_sealed(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let max = self.config.max_datagram_size.min(buf.len());
        while let Some((key, generation)) = self.tx_queue.pop_front() {
            let Some(s) = self
                .sessions
                .get_mut(key)
                .filter(|s| s.generation == generation)
            else {
                continue;
            };
            s.queued = false;
            if let Some((socket, dst, nonce)) = s.out.probe_ack.take() {
                // Answered on the path it came from, alone: it tells the client that path
                // works both ways. Authenticated, and no larger than the probe.
                let sealed = s.keys.seal_frames(s.client_session, buf, max, |w| {
                    let _ = Frame::ProbeAck { nonce }.encode(w);
                });
                if !s.out.is_empty() || s.control.wants_transmit(now) {
                    self.enqueue(key);
                }
                if let Some(len) = sealed {
                    self.stats.path_probes_answered += 1;
                    return Some(Transmit { dst, len, socket });
                }
                continue;
            }
            if s.path_closed {
                // No path until the client is heard again: unreliable output is dropped
                // (as on a dead link), control messages wait for their retransmission.
                s.out = Outbox::default();
                continue;
            }
            if s.out.is_empty() && !s.control.wants_transmit(now) {
                continue;
            }
            let host_id = s.host_id(key);
            let addr = s.addr;
            let socket = s.socket;
            let observed = s.udp.unwrap_or(addr);
            let out = &mut s.out;
            let control = &mut s.control;
            let retransmits_before = control.retransmits;
            let mut pinged = false;
            let mut final_frame = false;
            let mut relayed = (0u64, 0u64);
            let len = s.keys.seal_frames(s.client_session, buf, max, |w| {
                if let Some(reason) = out.reject.take() {
                    let _ = Frame::Reject { reason }.encode(w);
                    final_frame = true;
                    return;
                }
                if let Some(code) = out.close.take() {
                    let _ = Frame::Close { code }.encode(w);
                    final_frame = true;
                    return;
                }
                if out.welcome {
                    let _ = Frame::Welcome {
                        host_id: host_id.0,
                        observed,
                    }
                    .encode(w);
                    out.welcome = false;
                }
                control.write(now, w);
                while let Some((from, p)) = out.relayed.front() {
                    if w.remaining() < p.len() + RELAY_FRAME_OVERHEAD {
                        break;
                    }
                    let _ = Frame::Relayed {
                        from: from.0,
                        packet: p,
                    }
                    .encode(w);
                    relayed.0 += 1;
                    relayed.1 += p.len() as u64;
                    out.relayed.pop_front();
                }
                while let Some(p) = out.datagrams.front() {
                    if w.remaining() < p.len() + DATAGRAM_FRAME_OVERHEAD {
                        break;
                    }
                    let _ = Frame::Datagram { payload: p }.encode(w);
                    out.datagrams.pop_front();
                }
                if w.is_empty() && out.ping {
                    let _ = Frame::Ping.encode(w);
                    pinged = true;
                }
                out.ping = false;
            });
            let Some(len) = len else {
                // Counter exhausted: the session cannot send again; let it time out.
                s.out = Outbox::default();
                continue;
            };
            s.last_send = now;
            self.stats.control_retransmits += s.control.retransmits - retransmits_before;
            self.stats.relayed_packets += relayed.0;
            self.stats.relayed_bytes += relayed.1;
            if pinged {
                self.stats.io.keepalives_sent += 1;
            }
            if final_frame {
                self.remove(key);
            } else {
                let s = &self.sessions[key];
                if !s.out.is_empty() || s.control.wants_transmit(now) {
                    self.enqueue(key);
                }
                self.schedule(key);
            }
            return Some(Transmit {
                dst: addr,
                len,
                socket,
            });
        }
        None
    }
}

/// The slab key of `host`'s session, whatever its phase.
fn key_of_in(
    sessions: &Slab<Session>,
    restored: &BTreeMap<HostId, usize>,
    host: HostId,
) -> Option<usize> {
    let key = (host.0 & u64::from(u32::MAX)) as usize;
    if sessions.get(key).is_some_and(|s| s.host == host) {
        Some(key)
    } else {
        restored.get(&host).copied()
    }
}

fn established_in<'a>(
    sessions: &'a Slab<Session>,
    restored: &BTreeMap<HostId, usize>,
    host: HostId,
) -> Option<(usize, &'a Session)> {
    let key = key_of_in(sessions, restored, host)?;
    let s = sessions.get(key)?;
    matches!(s.phase, Phase::Established { .. }).then_some((key, s))
}

fn established_mut_in<'a>(
    sessions: &'a mut Slab<Session>,
    restored: &BTreeMap<HostId, usize>,
    host: HostId,
) -> Option<(usize, &'a mut Session)> {
    let key = key_of_in(sessions, restored, host)?;
    let s = sessions.get_mut(key)?;
    matches!(s.phase, Phase::Established { .. }).then_some((key, s))
}

/// The sessions as groups see them.
struct SessionView<'a> {
    sessions: &'a Slab<Session>,
    restored: &'a BTreeMap<HostId, usize>,
}

impl groups::Roster for SessionView<'_> {
    fn card(&self, host: HostId) -> Option<groups::Card> {
        let (_, s) = established_in(self.sessions, self.restored, host)?;
        Some(groups::Card {
            addr: s.udp.unwrap_or(s.addr),
            offline: s.offline,
            srtt: s.control.srtt(),
        })
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
        #[cfg(feature = "tracing")]
        let before = self.stats.dropped;
        self.receive(now, socket, from, datagram);
        #[cfg(feature = "tracing")]
        crate::trace::dropped(
            false,
            &before,
            &self.stats.dropped,
            socket,
            from,
            datagram.len(),
        );
    }

    /// TCP stream `id` ended: a session whose path it was sends nothing until the client is
    /// heard again (over UDP, or over a new stream), and keeps everything else meanwhile (it
    /// goes offline, then times out, like a client whose network went away).
    fn handle_stream_closed(&mut self, now: Instant, id: SocketId) {
        self.clock.advance(now);
        for key in self.streams.closed(id) {
            let Some(s) = self.sessions.get_mut(key).filter(|s| s.socket == id) else {
                continue;
            };
            if let Phase::HalfOpen { .. } = s.phase {
                // Its client starts over on a new stream: free the slot now.
                self.remove(key);
            } else {
                s.path_closed = true;
                self.stats.stream_paths_closed += 1;
            }
        }
    }

    /// The runtime accepted TCP stream `id` from `peer`. A stream that carries no handshake
    /// within 10 s is closed again (see [`Server::poll_socket_request`]), as is one whose
    /// last session ended or moved away, and one IP may hold only 8 streams that carry no
    /// session yet (more are closed at once, counted in `stats().dropped.rate_limited`).
    fn handle_stream_accepted(&mut self, now: Instant, id: SocketId, peer: SocketAddr) {
        let now = self.clock.advance(now);
        if id.is_stream() && !self.streams.accepted(now, id, peer.ip()) {
            self.stats.dropped.rate_limited += 1;
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
        self.streams.handle_timeout(now);
        while let Some(&Reverse((at, key, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let live = self
                .sessions
                .get_mut(key)
                .filter(|s| s.generation == generation && s.timer == Some(at));
            let Some(s) = live else { continue };
            s.timer = None;
            self.on_session_timer(now, key);
        }
        self.settle();
    }

    /// Writes the next datagram to send into `buf` and says where it goes, or `None` when
    /// nothing is due. Call after every input or command until it returns `None`.
    ///
    /// # Panics
    /// In debug builds if `buf` is shorter than [`crate::MAX_DATAGRAM_SIZE`].
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        debug_assert!(
            buf.len() >= crate::MAX_DATAGRAM_SIZE,
            "poll_transmit buffer too small"
        );
        let now = self.clock.advance(now);
        let t = self
            .next_hello(buf)
            .or_else(|| self.next_retry(buf))
            .or_else(|| self.stun.poll_transmit(buf, &mut self.stats))
            .or_else(|| self.next_sealed(now, buf))?;
        self.stats.io.datagrams_out += 1;
        self.stats.io.bytes_out += t.len as u64;
        Some(t)
    }

    /// The next socket the server wants the runtime to open (see [`SocketRequest`]).
    fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.stun
            .poll_socket_request()
            .or_else(|| self.streams.poll_request())
    }

    /// When [`Server::handle_timeout`] should next be called, if ever. Pure.
    ///
    /// Deadlines are kept lazily: after a session ends, its last deadline may still be
    /// reported once; waking for it is harmless and clears it.
    fn poll_timeout(&self) -> Option<Instant> {
        crate::time::earliest(
            self.timers.peek().map(|Reverse((at, _, _))| *at),
            self.streams.next_timeout(),
        )
    }

    /// What the deadline from [`Server::poll_timeout`] is for.
    fn timeout_reason(&self) -> &'static str {
        let Some(Reverse((_, key, generation))) = self.timers.peek() else {
            return "none";
        };
        match self
            .sessions
            .get(*key)
            .filter(|s| s.generation == *generation)
            .map(|s| &s.phase)
        {
            Some(Phase::HalfOpen { .. }) => "handshake expiry",
            Some(Phase::Established { .. }) => "client keepalive or idle timeout",
            Some(Phase::Closing) => "closing session expiry",
            None => "stale timer",
        }
    }
}

impl Events for Server {
    type Event = ServerEvent;

    /// The next event, if any.
    fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }
}
