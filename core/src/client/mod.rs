//! The client end: one encrypted session with the server (this file); groups, peers and
//! relayed peer traffic (`peers.rs`).

mod peers;
mod punch;
mod tcp;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rand::RngCore;

use crate::arena::Arena;
use crate::config::{ClientConfig, Transport};
use crate::crypto::{Ephemeral, HandshakeKeys, PacketKeys, PublicKey};
use crate::error::{ConfigError, ConnectError, SendError};
use crate::event::{ClientEvent, DisconnectReason, GroupId, HostId, RejectReason};
use crate::nat::{NatBehavior, NatDiscovery};
use crate::rng::{self, Rng};
use crate::rudp::PeerDropReason;
use crate::rudp::stream::ControlStream;
use crate::stats::ClientStats;
use crate::time::{Backoff, Clock, Duration, Instant, earliest};
use crate::wire::control::ControlMsg;
use crate::wire::demux::{self, Datagram};
use crate::wire::frame::{DATAGRAM_FRAME_OVERHEAD, Frame, Frames, MAX_TOKEN_LEN};
use crate::wire::handshake::{ClientHello, ServerHello};
use crate::wire::sealed::{OVERHEAD, SealedPacket};
use crate::{Endpoint, Events};
use crate::{RECV_SCRATCH_SIZE, SocketId, SocketRequest, Transmit};

/// A Pierce client: one encrypted session with a server.
///
/// # Driving it
///
/// The client never touches a socket or a clock. The owner:
/// 1. feeds every datagram that arrives with [`Client::handle_datagram`];
/// 2. calls [`Client::handle_timeout`] when the instant from [`Client::poll_timeout`] is
///    reached (calling it early or often is harmless);
/// 3. after any `handle_*` call or command, drains [`Client::poll_transmit`] until `None`,
///    then reads [`Client::poll_timeout`] to know when to wake;
/// 4. drains [`Client::poll_event`] whenever convenient.
///
/// Time passed in never needs to be exact, but it must come from one monotonic clock; values
/// earlier than one already seen are clamped and counted.
pub struct Client {
    config: Arc<ClientConfig>,
    rng: Rng,
    clock: Clock,
    state: State,
    /// The id this client chose for packets sent to it.
    session_id: u32,
    /// Events not yet polled.
    events: VecDeque<ClientEvent>,
    /// Datagrams for the server not yet transmitted.
    outgoing: VecDeque<Bytes>,
    /// Holds queued outgoing payloads.
    send_arena: Arena,
    /// Holds received payloads handed out in events.
    recv_arena: Arena,
    /// Decryption happens here, never in an allocation per packet.
    scratch: Box<[u8]>,
    /// Peer packets are opened here: a relayed one is nested inside a server packet that is
    /// still in `scratch`.
    peer_scratch: Box<[u8]>,
    stats: ClientStats,
    /// Members this client shares at least one group with.
    peers: BTreeMap<HostId, peers::Peer>,
    /// Pair id → member.
    pair_index: BTreeMap<u32, HostId>,
    /// Groups this client is in, with their members in join order.
    groups: BTreeMap<GroupId, Vec<HostId>>,
    /// The peer whose packets went last into a server packet (round-robin between peers).
    peer_cursor: Option<HostId>,
    /// Relayed packets that arrived before their pair's key (bounded, short-lived).
    early: VecDeque<(Instant, HostId, Bytes)>,
    /// STUN Binding transactions under way.
    stun: Vec<crate::stun::StunBinding>,
    /// This client's local addresses, advertised to the server once connected.
    local_addresses: crate::wire::control::Candidates,
    /// Extra sockets for birthday probing.
    sockets: punch::SocketPool,
    /// The local socket of the datagram being handled.
    rx_socket: SocketId,
    /// NAT behaviour discovery under way.
    discovery: Option<NatDiscovery>,
    /// What discovery found about this client's NAT.
    nat_behavior: Option<NatBehavior>,
    /// The discovery under way was started by the session (and ends with it).
    discovery_auto: bool,
    /// The TCP stream to the server, when UDP does not get through.
    tcp: tcp::TcpLink,
    /// The server and token given to `connect`: re-registration goes there with them.
    last_server: Option<(SocketAddr, Vec<u8>)>,
    /// The server's latest resumption ticket (presented when re-registering).
    ticket: Option<Vec<u8>>,
    /// Peers kept from a lost server session (orphans) live until this instant.
    orphans_until: Option<Instant>,
    /// While detached after losing the server: the next re-registration attempt.
    rejoin_at: Option<Instant>,
    rejoin_backoff: Duration,
    /// Rooms this client is in: (name, password, max members), rejoined by name after
    /// re-registering with a server that lost them.
    rooms: BTreeMap<GroupId, (String, String, u16)>,
    /// Passwords and sizes of rooms asked for, by name, until the answer.
    room_requests: BTreeMap<String, (String, u16)>,
}

/// Room requests remembered at once, at most (for rejoining after a server restart).
const MAX_ROOM_REQUESTS: usize = 32;

/// First wait before re-registering with a lost server; doubles to [`REJOIN_MAX`].
const REJOIN_INITIAL: Duration = Duration::from_secs(1);
const REJOIN_MAX: Duration = Duration::from_secs(8);

/// Longer than the server's keepalive interval ([`crate::DEFAULT_KEEPALIVE_INTERVAL`]: a
/// server with nothing to say pings that often) plus a margin: a server quiet for this long
/// means our network is probably out. Heard again after such a silence, peer retransmissions
/// restart without their backoff.
const SERVER_QUIET: Duration = Duration::from_secs(6);

/// While the server is quiet (past [`SERVER_QUIET`]), ping it this often, so that when our
/// network comes back the server hears us (and tells our peers) within half a second.
const RECOVERY_PING: Duration = Duration::from_millis(500);

impl Link {
    /// When the next keepalive is due: `keepalive` after the last send, or every
    /// [`RECOVERY_PING`] once the server has been quiet for [`SERVER_QUIET`].
    fn ping_at(&self, keepalive: Duration) -> Instant {
        let quiet = (self.last_send + RECOVERY_PING).max(self.last_recv + SERVER_QUIET);
        (self.last_send + keepalive).min(quiet)
    }
}

/// STUN transactions one client runs at once, at most.
const MAX_STUN_QUERIES: usize = 8;

enum State {
    /// `connect` not called yet.
    Idle,
    /// ClientHello sent, waiting for a ServerHello.
    Handshaking(Box<Handshake>),
    /// Keys agreed, Connect frame sent, waiting for Welcome or Reject.
    Authenticating(Box<Authenticating>),
    /// Welcome received.
    Connected(Box<Link>),
    /// `disconnect` called: one Close frame still to send.
    Closing(Box<Link>, u16),
    /// No server session any more (it timed out, or [`Client::detach_from_server`]), but
    /// peers with a validated direct path are still talked to, until this instant (the pair
    /// lifetime) or their direct path dies.
    Detached(Instant),
    /// Finished; nothing more happens.
    Closed,
}

struct Handshake {
    server: SocketAddr,
    /// Hellos go out on this socket: the primary UDP socket, or the TCP stream.
    socket: SocketId,
    /// With [`Transport::Auto`]: connect a TCP stream at this instant if the server has not
    /// answered over UDP by then.
    tcp_at: Option<Instant>,
    ephemeral: Ephemeral,
    retry: Backoff,
    deadline: Instant,
    hello_due: bool,
    /// A server answered with a key other than the pinned one.
    key_mismatch: bool,
    /// Re-registering after the server was lost: failure returns to `Detached`.
    rejoin: bool,
    /// The cookie a server under load asked us to echo.
    cookie: Option<[u8; crate::wire::handshake::COOKIE_LEN]>,
    token: Vec<u8>,
}

struct Authenticating {
    link: Link,
    /// See [`Handshake::rejoin`].
    rejoin: bool,
    retry: Backoff,
    deadline: Instant,
    connect_due: bool,
    token: Vec<u8>,
}

/// An established, encrypted link to the server.
struct Link {
    server: SocketAddr,
    /// The socket the session is on: the primary UDP socket, or the TCP stream.
    socket: SocketId,
    /// On TCP with [`Transport::Auto`]: the next UDP probe to the server is due then.
    probe_at: Instant,
    probe_due: bool,
    /// The nonce of the last UDP probe; its answer (over UDP) moves the session back.
    probe_nonce: Option<u64>,
    server_key: PublicKey,
    keys: PacketKeys,
    /// The id the server chose for packets sent to it.
    server_session: u32,
    host_id: HostId,
    public_addr: Option<SocketAddr>,
    last_recv: Instant,
    last_send: Instant,
    ping_due: bool,
    /// Reliable ordered control messages in both directions.
    control: ControlStream,
}

impl Client {
    /// A client that has not connected yet. `seed` must come from a CSPRNG in production
    /// (runtimes take it from the OS); it is the source of every key and id this client makes.
    pub fn new(
        config: Arc<ClientConfig>,
        seed: [u8; 32],
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            rng: rng::derive(&seed, b"client"),
            clock: Clock::new(now),
            state: State::Idle,
            session_id: 0,
            events: VecDeque::new(),
            outgoing: VecDeque::new(),
            send_arena: Arena::default(),
            recv_arena: Arena::default(),
            scratch: vec![0u8; RECV_SCRATCH_SIZE].into_boxed_slice(),
            peer_scratch: vec![0u8; RECV_SCRATCH_SIZE].into_boxed_slice(),
            stats: ClientStats::default(),
            peers: BTreeMap::new(),
            pair_index: BTreeMap::new(),
            groups: BTreeMap::new(),
            peer_cursor: None,
            early: VecDeque::new(),
            stun: Vec::new(),
            local_addresses: crate::wire::control::Candidates::default(),
            sockets: punch::SocketPool::default(),
            rx_socket: SocketId::PRIMARY,
            discovery: None,
            nat_behavior: None,
            discovery_auto: false,
            tcp: tcp::TcpLink::default(),
            last_server: None,
            ticket: None,
            orphans_until: None,
            rejoin_at: None,
            rejoin_backoff: REJOIN_INITIAL,
            rooms: BTreeMap::new(),
            room_requests: BTreeMap::new(),
        })
    }

    // ---- getters -----------------------------------------------------------------------

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        let mut s = self.stats;
        s.io.time_went_backwards = self.clock.backwards();
        s
    }

    /// True once [`ClientEvent::Connected`] was reported and until the session ends.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected(_))
    }

    /// True once the session ended (or failed to start).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The id the server gave this client, once connected.
    pub fn host_id(&self) -> Option<HostId> {
        match &self.state {
            State::Connected(l) => Some(l.host_id),
            _ => None,
        }
    }

    /// This client's address as the server sees it, once connected.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Connected(l) => l.public_addr,
            _ => None,
        }
    }

    /// Smoothed round-trip time to the server (an initial estimate until measured).
    pub fn server_rtt(&self) -> Option<Duration> {
        match &self.state {
            State::Connected(l) => Some(l.control.srtt()),
            _ => None,
        }
    }

    /// The server address given to `connect`.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Handshaking(h) => Some(h.server),
            State::Authenticating(a) => Some(a.link.server),
            State::Connected(l) | State::Closing(l, _) => Some(l.server),
            State::Idle | State::Closed | State::Detached(_) => None,
        }
    }

    /// Largest payload [`Client::send_to_server`] accepts.
    pub fn max_server_payload(&self) -> usize {
        self.config.max_datagram_size - OVERHEAD - DATAGRAM_FRAME_OVERHEAD
    }

    /// Largest payload [`Client::send_to_server_reliable`] accepts.
    pub fn max_reliable_server_payload(&self) -> usize {
        self.config.max_datagram_size
            - OVERHEAD
            - crate::wire::frame::STREAM_FRAME_OVERHEAD
            - crate::wire::frame::STREAM_ACK_FRAME_LEN
            - 1
    }

    // ---- commands ----------------------------------------------------------------------

    /// Starts connecting to `server`, presenting `token` (empty if the server needs none).
    ///
    /// # Errors
    /// [`ConnectError::AlreadyStarted`] unless the client is fresh;
    /// [`ConnectError::TokenTooLarge`] for a token over the protocol's limit.
    pub fn connect(
        &mut self,
        now: Instant,
        server: SocketAddr,
        token: &[u8],
    ) -> Result<(), ConnectError> {
        let now = self.clock.advance(now);
        if !matches!(self.state, State::Idle) {
            return Err(ConnectError::AlreadyStarted);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(ConnectError::TokenTooLarge { max: MAX_TOKEN_LEN });
        }
        self.last_server = Some((server, token.to_vec()));
        self.begin_handshake(now, server, token.to_vec(), false);
        Ok(())
    }

    /// A new handshake with `server` (a first connect, or a re-registration).
    fn begin_handshake(&mut self, now: Instant, server: SocketAddr, token: Vec<u8>, rejoin: bool) {
        self.session_id = self.rng.next_u32();
        let tcp_at = match self.config.transport {
            Transport::Auto => Some(now + self.config.tcp_fallback_after),
            Transport::Udp => None,
            Transport::Tcp => {
                self.tcp.connect(now, server);
                None
            }
        };
        self.state = State::Handshaking(Box::new(Handshake {
            server,
            socket: SocketId::PRIMARY,
            tcp_at,
            ephemeral: Ephemeral::generate(&mut self.rng),
            retry: Backoff::new(
                now,
                self.config.handshake_retry_initial,
                self.config.handshake_retry_max,
            ),
            deadline: now + self.config.connect_timeout,
            hello_due: true,
            key_mismatch: false,
            rejoin,
            cookie: None,
            token,
        }));
    }

    /// Queues an unreliable datagram for the server application.
    ///
    /// # Errors
    /// [`SendError::NotConnected`], [`SendError::PayloadTooLarge`] (see
    /// [`Client::max_server_payload`]) or [`SendError::QueueFull`].
    pub fn send_to_server(&mut self, now: Instant, payload: &[u8]) -> Result<(), SendError> {
        self.clock.advance(now);
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        if payload.len() > self.max_server_payload() {
            return Err(SendError::PayloadTooLarge {
                max: self.max_server_payload(),
            });
        }
        if self.outgoing.len() >= self.config.max_queued_datagrams {
            return Err(SendError::QueueFull);
        }
        let b = self.send_arena.copy(payload);
        self.outgoing.push_back(b);
        Ok(())
    }

    /// Queues a reliable, ordered message for the server application.
    ///
    /// # Errors
    /// [`SendError::NotConnected`], [`SendError::PayloadTooLarge`] (see
    /// [`Client::max_reliable_server_payload`]) or [`SendError::QueueFull`].
    pub fn send_to_server_reliable(
        &mut self,
        now: Instant,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.clock.advance(now);
        let max = self.max_reliable_server_payload();
        if payload.len() > max {
            return Err(SendError::PayloadTooLarge { max });
        }
        self.push_control(&ControlMsg::App { data: payload })
            .map_err(|e| match e {
                crate::CommandError::NotConnected => SendError::NotConnected,
                _ => SendError::QueueFull,
            })
    }

    /// Asks a STUN server (Pierce's own, or any standard one) which address it sees this
    /// client's socket as; answered by [`ClientEvent::StunResult`]. Works in any state, before
    /// connecting too, on the same socket as everything else.
    ///
    /// # Errors
    /// [`crate::CommandError::QueueFull`] if too many queries are under way.
    pub fn query_stun(
        &mut self,
        now: Instant,
        server: SocketAddr,
    ) -> Result<(), crate::CommandError> {
        let now = self.clock.advance(now);
        if self.stun.len() >= MAX_STUN_QUERIES {
            return Err(crate::CommandError::QueueFull);
        }
        let mut txid = [0u8; 12];
        self.rng.fill_bytes(&mut txid);
        self.stun.push(crate::stun::StunBinding::new(
            now,
            server,
            txid,
            crate::stun::DEFAULT_STUN_RTO,
            crate::stun::DEFAULT_STUN_TRIES,
        ));
        Ok(())
    }

    /// Reports finished STUN transactions.
    fn finish_stun(&mut self) {
        let mut i = 0;
        while i < self.stun.len() {
            if let Some(result) = self.stun[i].result() {
                let b = self.stun.swap_remove(i);
                self.push_event(ClientEvent::StunResult {
                    server: b.server(),
                    result,
                });
            } else {
                i += 1;
            }
        }
    }

    /// Ends the session with `code`, telling the server. Reports
    /// [`DisconnectReason::ClosedLocally`]. Does nothing if already closed.
    pub fn disconnect(&mut self, now: Instant, code: u16) {
        self.clock.advance(now);
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match state {
            State::Connected(link) => State::Closing(link, code),
            State::Authenticating(a) => State::Closing(Box::new(a.link), code),
            State::Closing(link, c) => {
                self.state = State::Closing(link, c);
                return;
            }
            State::Idle | State::Closed => {
                self.state = state;
                return;
            }
            State::Detached(_) => {
                // The session ended already (and was reported); the peers go now.
                self.forget_session_state();
                return;
            }
            State::Handshaking(_) => State::Closed,
        };
        self.forget_session_state();
        self.push_event(ClientEvent::Disconnected {
            reason: DisconnectReason::ClosedLocally(code),
        });
    }

    // ---- inputs ------------------------------------------------------------------------

    fn receive(&mut self, now: Instant, socket: SocketId, from: SocketAddr, datagram: &[u8]) {
        let now = self.clock.advance(now);
        self.stats.io.datagrams_in += 1;
        self.stats.io.bytes_in += datagram.len() as u64;
        self.rx_socket = socket;
        match demux::decode(datagram) {
            Err(e) => self.stats.dropped.count_decode(e),
            Ok(Datagram::Stun(_)) => {
                let primary = socket == SocketId::PRIMARY;
                if primary
                    && self
                        .discovery
                        .as_mut()
                        .is_some_and(|d| d.handle_datagram(now, from, datagram))
                {
                    self.finish_discovery(now);
                } else if primary
                    && self
                        .stun
                        .iter_mut()
                        .any(|b| b.handle_datagram(from, datagram))
                {
                    self.finish_stun();
                } else {
                    self.stats.dropped.stun += 1;
                }
            }
            Ok(Datagram::ClientHello(_)) => self.stats.dropped.unexpected += 1,
            Ok(Datagram::ServerHello(hello)) => self.on_server_hello(now, from, &hello),
            Ok(Datagram::Retry(retry)) => self.on_retry(from, &retry),
            Ok(Datagram::Sealed(packet)) => self.on_sealed(now, from, &packet),
        }
        self.rx_socket = SocketId::PRIMARY;
    }

    /// Test-only: the resumption ticket this client holds.
    #[cfg(test)]
    pub(crate) fn test_ticket(&self) -> Option<Vec<u8>> {
        self.ticket.clone()
    }

    /// Test-only: this client forgets a peer without a word (as if its side of the pair had
    /// expired).
    #[cfg(test)]
    pub(crate) fn test_forget_peer(&mut self, peer: HostId) {
        self.remove_peer(peer);
    }

    /// Test-only: hand this client someone's ticket (a thief's copy).
    #[cfg(test)]
    pub(crate) fn test_set_ticket(&mut self, ticket: Vec<u8>) {
        self.ticket = Some(ticket);
    }

    /// Whether the session with the server is on a TCP stream now (see [`Transport`]).
    pub fn on_tcp(&self) -> bool {
        match &self.state {
            State::Handshaking(h) => h.socket.is_stream(),
            State::Authenticating(a) => a.link.socket.is_stream(),
            State::Connected(l) | State::Closing(l, _) => l.socket.is_stream(),
            State::Idle | State::Closed | State::Detached(_) => false,
        }
    }

    /// The runtime's answer to a stream connect.
    fn on_stream_opened(&mut self, now: Instant, id: SocketId, ok: bool) {
        if !self.tcp.opened(id, ok) {
            if self.tcp.open_id().is_none() && !ok && self.wants_stream(now) {
                self.stats.tcp_connect_failures += 1;
                self.tcp.reconnect_later(now);
            }
            return;
        }
        self.stats.tcp_streams_opened += 1;
        let mut moved = false;
        match &mut self.state {
            State::Handshaking(h) => {
                h.socket = id;
                h.cookie = None;
                h.hello_due = true;
            }
            State::Authenticating(a) if a.link.socket.is_stream() => {
                a.link.socket = id;
                a.connect_due = true;
            }
            State::Connected(l)
                if l.socket.is_stream()
                    || now.saturating_duration_since(l.last_recv) >= SERVER_QUIET =>
            {
                // A replacement stream, or the server went quiet over UDP: the next packet
                // moves the session here.
                moved = !l.socket.is_stream();
                l.socket = id;
                l.ping_due = true;
                l.probe_at = now + self.config.udp_probe_interval;
                self.tcp.keep();
            }
            _ => self.tcp.close(None),
        }
        if moved {
            self.stats.transport_changes += 1;
            self.push_event(ClientEvent::ServerTransport { tcp: true });
        }
    }

    /// Whether a TCP stream to the server is (still) worth connecting.
    fn wants_stream(&self, now: Instant) -> bool {
        let auto = self.config.transport == Transport::Auto;
        match &self.state {
            State::Handshaking(h) => {
                self.config.transport == Transport::Tcp || (auto && h.tcp_at.is_none())
            }
            State::Authenticating(a) => a.link.socket.is_stream(),
            State::Connected(l) => {
                l.socket.is_stream()
                    || (auto && now.saturating_duration_since(l.last_recv) >= SERVER_QUIET)
            }
            _ => false,
        }
    }

    /// Runs NAT behaviour discovery (RFC 5780) against `server`'s STUN service (a Pierce
    /// server with an alternate address, or any RFC 5780 STUN server), from the primary
    /// socket; answered by [`ClientEvent::NatDiscovered`]. Connected clients with
    /// [`ClientConfig::nat_discovery`] run it against their server by themselves and report
    /// the result to it. Replaces a discovery under way.
    pub fn discover_nat(&mut self, now: Instant, server: SocketAddr) {
        let now = self.clock.advance(now);
        let mut txid = [0u8; 12];
        self.rng.fill_bytes(&mut txid);
        let local = self
            .local_addresses
            .iter()
            .find(|a| a.is_ipv4() == server.is_ipv4());
        self.discovery = Some(NatDiscovery::new(now, server, local, txid));
        self.discovery_auto = false;
    }

    /// What NAT behaviour discovery found about this client's NAT, once it finished.
    pub fn nat_behavior(&self) -> Option<NatBehavior> {
        self.nat_behavior
    }

    fn finish_discovery(&mut self, now: Instant) {
        let Some(result) = self.discovery.as_ref().and_then(NatDiscovery::result) else {
            return;
        };
        let Some(d) = self.discovery.take() else {
            return;
        };
        if let Ok(b) = result {
            self.nat_behavior = Some(b);
            if self.is_connected() && self.server_addr() == Some(d.server()) {
                let info = crate::wire::control::NatInfo::from_behavior(&b);
                let _ = self.push_control(&ControlMsg::NatInfo { info });
            }
            self.replan_peers(now);
        }
        self.push_event(ClientEvent::NatDiscovered {
            server: d.server(),
            result,
        });
    }

    // ---- outputs -----------------------------------------------------------------------

    fn session_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Idle | State::Closed => None,
            State::Closing(..) => None,
            State::Detached(until) => {
                earliest(earliest(Some(*until), self.rejoin_at), self.peer_timeouts())
            }
            State::Handshaking(h) => earliest(
                earliest(Some(h.deadline.min(h.retry.next_at())), h.tcp_at),
                earliest(self.peer_timeouts(), self.orphans_until),
            ),
            State::Authenticating(a) => earliest(
                Some(a.deadline.min(a.retry.next_at())),
                earliest(self.peer_timeouts(), self.orphans_until),
            ),
            State::Connected(l) => earliest(
                earliest(
                    earliest(
                        Some(l.last_recv + self.config.idle_timeout),
                        (!l.ping_due).then(|| l.ping_at(self.config.keepalive_interval)),
                    ),
                    self.link_tcp_timeout(l),
                ),
                earliest(
                    earliest(
                        l.control.next_timeout(),
                        self.early.front().map(|(at, _, _)| *at + peers::EARLY_TTL),
                    ),
                    earliest(self.peer_timeouts(), self.orphans_until),
                ),
            ),
        }
    }

    /// The earliest deadline of any peer's reliability layer or path.
    fn peer_timeouts(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| {
                earliest(
                    p.conn.poll_timeout(),
                    p.punch.next_timeout(punch::busy_limit(&p.conn)),
                )
            })
            .min()
    }

    // ---- internals ---------------------------------------------------------------------

    fn push_event(&mut self, e: ClientEvent) {
        #[cfg(feature = "tracing")]
        crate::trace::client_event(&e);
        if self.events.len() >= self.config.max_pending_events {
            self.stats.io.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }

    fn fail(&mut self, reason: DisconnectReason) {
        let now = self.clock.now();
        let rejoining = match &self.state {
            State::Handshaking(h) => h.rejoin,
            State::Authenticating(a) => a.rejoin,
            _ => false,
        };
        if rejoining {
            // The server is not back (or refused): stay detached, try again later.
            self.tcp.close(None);
            self.state = State::Detached(self.orphans_until.unwrap_or(now));
            self.rejoin_at = Some(now + self.rejoin_backoff);
            self.rejoin_backoff = (self.rejoin_backoff * 2).min(REJOIN_MAX);
            return;
        }
        let keep = reason == DisconnectReason::TimedOut
            && !self.config.pair_lifetime.is_zero()
            && self.peers.values().any(|p| p.punch.direct().is_some());
        if keep {
            // The server is gone (crashed, restarting, unreachable): peers we reach directly
            // stay, for the pair lifetime; meanwhile we register again when it is back.
            self.state = State::Detached(now + self.config.pair_lifetime);
            self.push_event(ClientEvent::Disconnected { reason });
            self.forget_server_state();
            if self.config.reregister {
                self.rejoin_backoff = REJOIN_INITIAL;
                self.rejoin_at = Some(now + REJOIN_INITIAL);
            }
        } else {
            self.state = State::Closed;
            self.forget_session_state();
            self.push_event(ClientEvent::Disconnected { reason });
        }
    }

    /// Stops talking to the server but keeps every peer that has a validated direct path,
    /// with its pair key and reliability state, for [`ClientConfig::pair_lifetime`] or until
    /// that path dies (no relay without a server); peers reachable only through the relay
    /// are dropped ([`ClientEvent::PeerDropped`] with [`PeerDropReason::ServerLost`]).
    /// The same happens by itself when the server times out (it crashed or restarts).
    ///
    /// Nothing is said to the server: it sees this client go quiet, and members that stay
    /// connected to it hear `PeerRecovering`, then (after its recovery window) `MemberLeft`
    /// and drop the pair, so a whole group detaches together. Rejoining a server later is a
    /// new session with a new host id (resumption tickets that keep the id are not done yet).
    /// Emits [`ClientEvent::Disconnected`] with [`DisconnectReason::Detached`].
    ///
    /// # Errors
    /// [`crate::CommandError::NotConnected`] unless connected.
    pub fn detach_from_server(&mut self, now: Instant) -> Result<(), crate::CommandError> {
        let now = self.clock.advance(now);
        if !self.is_connected() {
            return Err(crate::CommandError::NotConnected);
        }
        self.state = State::Detached(now + self.config.pair_lifetime);
        self.push_event(ClientEvent::Disconnected {
            reason: DisconnectReason::Detached,
        });
        self.forget_server_state();
        self.rejoin_at = None;
        Ok(())
    }

    /// True while detached from the server with peers still reachable directly (see
    /// [`Client::detach_from_server`]).
    pub fn is_detached(&self) -> bool {
        matches!(self.state, State::Detached(_))
    }

    /// A Connected link's TCP deadlines: the next UDP probe (on a stream, Auto) or the
    /// instant a quiet server makes a stream worth trying (on UDP, Auto).
    fn link_tcp_timeout(&self, l: &Link) -> Option<Instant> {
        if self.config.transport != Transport::Auto {
            None
        } else if l.socket.is_stream() {
            (!l.probe_due).then_some(l.probe_at)
        } else if !self.tcp.wanted() {
            Some(l.last_recv + SERVER_QUIET)
        } else {
            None
        }
    }

    /// Drops what only lives with the server session, but keeps peers with a direct path.
    fn forget_server_state(&mut self) {
        self.tcp.close(None);
        self.outgoing.clear();
        self.drop_peers_without_direct(PeerDropReason::ServerLost);
        for p in self.peers.values_mut() {
            p.recovering = false;
            p.orphan = true;
        }
        if let State::Detached(until) = self.state {
            self.orphans_until = Some(until);
        }
        self.groups.clear();
        self.early.clear();
        if self.discovery_auto {
            self.discovery = None;
        }
    }

    /// Drops every peer that has no validated direct path (only the relay reached it).
    fn drop_peers_without_direct(&mut self, reason: PeerDropReason) {
        let relayed: smallvec::SmallVec<[HostId; 8]> = self
            .peers
            .iter()
            .filter(|(_, p)| p.punch.direct().is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in relayed {
            self.drop_peer(id, reason);
        }
    }

    /// Stops talking to a peer on our own, with an event.
    fn drop_peer(&mut self, id: HostId, reason: PeerDropReason) {
        if self.peers.contains_key(&id) {
            self.remove_peer(id);
            self.push_event(ClientEvent::PeerDropped { peer: id, reason });
        }
    }

    /// Drops the orphans (peers kept from a lost server session) that `which` picks.
    fn drop_orphans(&mut self, which: impl Fn(&peers::Peer) -> bool, reason: PeerDropReason) {
        let ids: smallvec::SmallVec<[HostId; 8]> = self
            .peers
            .iter()
            .filter(|(_, p)| p.orphan && which(p))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.drop_peer(id, reason);
        }
    }

    /// Remembers how a room was asked for, to ask again after a server restart.
    fn remember_room_request(&mut self, name: &str, password: &str, max_members: u16) {
        if self.room_requests.len() < MAX_ROOM_REQUESTS || self.room_requests.contains_key(name) {
            self.room_requests
                .insert(name.to_owned(), (password.to_owned(), max_members));
        }
    }

    /// Drops everything that only lives as long as the server session.
    fn forget_session_state(&mut self) {
        self.orphans_until = None;
        self.rejoin_at = None;
        self.rooms.clear();
        self.room_requests.clear();
        if !matches!(self.state, State::Closing(..)) {
            // (A closing session's stream closes after its Close frame.)
            self.tcp.close(None);
        }
        self.outgoing.clear();
        let ids: Vec<HostId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id);
        }
        self.pair_index.clear();
        self.groups.clear();
        self.early.clear();
        if self.discovery_auto {
            self.discovery = None;
        }
    }

    /// Queues a control message for the server.
    fn push_control(&mut self, msg: &ControlMsg<'_>) -> Result<(), crate::CommandError> {
        let State::Connected(l) = &mut self.state else {
            return Err(crate::CommandError::NotConnected);
        };
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        let n = msg
            .encode(&mut buf)
            .map_err(|_| crate::CommandError::QueueFull)?;
        l.control
            .push(&buf[..n])
            .map_err(|_| crate::CommandError::QueueFull)
    }

    /// The server is under load and wants its cookie echoed: resend the hello with it at once.
    fn on_retry(&mut self, from: SocketAddr, retry: &crate::wire::handshake::Retry) {
        let State::Handshaking(h) = &mut self.state else {
            self.stats.dropped.unexpected += 1;
            return;
        };
        if from != h.server || retry.client_session != self.session_id {
            self.stats.dropped.unexpected += 1;
            return;
        }
        h.cookie = Some(retry.cookie);
        h.hello_due = true;
        self.stats.retries_received += 1;
    }

    fn on_server_hello(&mut self, now: Instant, from: SocketAddr, hello: &ServerHello) {
        let State::Handshaking(h) = &mut self.state else {
            self.stats.dropped.unexpected += 1;
            return;
        };
        let on_stream = self.rx_socket.is_stream();
        if from != h.server
            || hello.client_session != self.session_id
            || (on_stream && Some(self.rx_socket) != self.tcp.open_id())
            || (!on_stream && self.rx_socket != SocketId::PRIMARY)
        {
            self.stats.dropped.unexpected += 1;
            return;
        }
        if let Some(pinned) = self.config.server_key {
            if pinned.0 != hello.server_static {
                self.stats.server_key_mismatches += 1;
                h.key_mismatch = true;
                return;
            }
        }
        let Ok(keys) =
            HandshakeKeys::client(&h.ephemeral, &hello.server_ephemeral, &hello.server_static)
        else {
            self.stats.dropped.auth_failed += 1;
            return;
        };
        if keys.verify_confirm(&hello.aad(), &hello.tag).is_err() {
            self.stats.dropped.auth_failed += 1;
            return;
        }
        let State::Handshaking(h) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        // The session lives on the socket the server answered on. An answer over UDP makes
        // a stream connected meanwhile pointless.
        let socket = self.rx_socket;
        if !socket.is_stream() {
            self.tcp.close(None);
        }
        self.state = State::Authenticating(Box::new(Authenticating {
            link: Link {
                server: h.server,
                socket,
                probe_at: now,
                probe_due: false,
                probe_nonce: None,
                server_key: PublicKey(hello.server_static),
                keys: keys.into_client_session(),
                server_session: hello.server_session,
                host_id: HostId(0),
                public_addr: None,
                last_recv: now,
                last_send: now,
                ping_due: false,
                control: ControlStream::new(self.config.max_queued_control),
            },
            retry: Backoff::new(
                now,
                self.config.handshake_retry_initial,
                self.config.handshake_retry_max,
            ),
            deadline: h.deadline,
            connect_due: true,
            rejoin: h.rejoin,
            token: h.token,
        }));
    }

    fn on_sealed(&mut self, now: Instant, from: SocketAddr, packet: &SealedPacket<'_>) {
        let no_link = matches!(self.state, State::Detached(_) | State::Handshaking(_));
        if no_link && packet.header.peer && !self.rx_socket.is_stream() {
            self.on_peer_packet(now, from, packet, false);
            return;
        }
        if matches!(self.state, State::Detached(_)) {
            if packet.header.peer {
                self.on_peer_packet(now, from, packet, false);
            } else {
                self.stats.dropped.unexpected += 1;
            }
            return;
        }
        let link = match &mut self.state {
            State::Authenticating(a) => &mut a.link,
            State::Connected(l) | State::Closing(l, _) => &mut **l,
            _ => {
                self.stats.dropped.unexpected += 1;
                return;
            }
        };
        if !packet.header.peer && packet.header.receiver != self.session_id {
            self.stats.dropped.unknown_session += 1;
            return;
        }
        let on_stream = self.rx_socket.is_stream();
        if on_stream && Some(self.rx_socket) != self.tcp.open_id() {
            self.stats.dropped.unexpected += 1;
            return;
        }
        if packet.header.peer && !on_stream {
            self.on_peer_packet(now, from, packet, false);
            return;
        }
        if packet.header.peer || from != link.server {
            self.stats.dropped.unexpected += 1;
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        match link.keys.open(packet, &mut scratch) {
            Err(e) => self.stats.dropped.count_open(e),
            Ok(plaintext) => {
                let quiet = now.saturating_duration_since(link.last_recv);
                link.last_recv = now;
                if quiet >= SERVER_QUIET {
                    // Our network was probably out (or changed): whatever waits for peers'
                    // acknowledgements goes now, not after a timeout that doubled meanwhile.
                    for p in self.peers.values_mut() {
                        p.conn.path_restored();
                    }
                }
                self.on_frames(now, plaintext);
            }
        }
        self.scratch = scratch;
    }

    fn on_frames(&mut self, now: Instant, plaintext: &[u8]) {
        if Frames::new(plaintext).any(|f| f.is_err()) {
            self.stats.dropped.bad_frames += 1;
            return;
        }
        for frame in Frames::new(plaintext).flatten() {
            match frame {
                Frame::Padding(_) => {}
                Frame::Ping => self.stats.io.keepalives_received += 1,
                Frame::Welcome { host_id, observed } => self.on_welcome(HostId(host_id), observed),
                Frame::Reject { reason } => {
                    if matches!(self.state, State::Authenticating(_)) {
                        self.fail(DisconnectReason::Rejected(RejectReason::from_code(reason)));
                    } else {
                        self.stats.dropped.unexpected += 1;
                    }
                }
                Frame::Close { code } => {
                    if matches!(self.state, State::Connected(_) | State::Authenticating(_)) {
                        self.fail(DisconnectReason::ClosedByServer(code));
                    }
                }
                Frame::Datagram { payload } => {
                    if self.is_connected() {
                        let payload = self.recv_arena.copy(payload);
                        self.push_event(ClientEvent::Message { payload });
                    } else {
                        self.stats.dropped.unexpected += 1;
                    }
                }
                Frame::Stream { seq, data } => {
                    let State::Connected(l) = &mut self.state else {
                        self.stats.dropped.unexpected += 1;
                        continue;
                    };
                    l.control.on_data(seq, data);
                    self.drain_control(now);
                }
                Frame::StreamAck { next, mask } => {
                    if let State::Connected(l) = &mut self.state {
                        l.control.on_ack(now, next, mask);
                    }
                }
                Frame::Relayed { from, packet } => self.on_relayed(now, HostId(from), packet),
                Frame::ProbeAck { nonce } => self.on_probe_ack(now, nonce),
                Frame::Connect { .. }
                | Frame::Relay { .. }
                | Frame::Message { .. }
                | Frame::Ack(_)
                | Frame::Floor { .. }
                | Frame::Probe { .. }
                | Frame::Resume { .. } => self.stats.dropped.unexpected += 1,
            }
        }
    }

    /// The server answered our UDP probe over UDP: UDP works both ways again, the session
    /// moves back to it (the server follows our next packet) and the stream closes after a
    /// grace period.
    fn on_probe_ack(&mut self, now: Instant, nonce: u64) {
        let State::Connected(l) = &mut self.state else {
            self.stats.dropped.unexpected += 1;
            return;
        };
        if self.rx_socket != SocketId::PRIMARY
            || l.probe_nonce != Some(nonce)
            || !l.socket.is_stream()
        {
            self.stats.dropped.unexpected += 1;
            return;
        }
        l.probe_nonce = None;
        l.socket = SocketId::PRIMARY;
        l.ping_due = true;
        self.tcp.close(Some(now + tcp::CLOSE_GRACE));
        self.stats.transport_changes += 1;
        self.push_event(ClientEvent::ServerTransport { tcp: false });
    }

    /// Handles control messages delivered in order by the control stream.
    fn drain_control(&mut self, now: Instant) {
        loop {
            let State::Connected(l) = &mut self.state else {
                return;
            };
            let Some(msg) = l.control.poll_delivered() else {
                return;
            };
            match ControlMsg::decode(&msg) {
                Ok(m) => self.on_control(now, m),
                Err(_) => self.stats.dropped.bad_frames += 1,
            }
        }
    }

    fn on_welcome(&mut self, host_id: HostId, observed: SocketAddr) {
        let State::Authenticating(_) = self.state else {
            // A duplicate Welcome (our Connect was retransmitted) changes nothing.
            return;
        };
        let State::Authenticating(a) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        let mut link = a.link;
        let rejoin = a.rejoin;
        if rejoin {
            self.rejoin_at = None;
            self.rejoin_backoff = REJOIN_INITIAL;
        }
        let observed_server = link.server;
        link.host_id = host_id;
        link.public_addr = Some(observed);
        let server_key = link.server_key;
        let on_tcp = link.socket.is_stream();
        // On TCP, probe UDP at once: the server learns our UDP address (peers punch to it).
        link.probe_at = self.clock.now();
        self.state = State::Connected(Box::new(link));
        self.push_event(ClientEvent::Connected {
            host_id,
            public_addr: observed,
            server_key,
        });
        if on_tcp {
            self.push_event(ClientEvent::ServerTransport { tcp: true });
        }
        if rejoin {
            // Back in the rooms we were in (created again if the server lost them).
            for (name, password, max_members) in std::mem::take(&mut self.rooms).into_values() {
                let _ = self.push_control(&ControlMsg::RoomJoin {
                    flags: crate::wire::control::JOIN_CREATE,
                    max_members,
                    name: &name,
                    password: &password,
                });
                self.remember_room_request(&name, &password, max_members);
            }
        }
        if self.local_addresses.iter().next().is_some() {
            let addrs = self.local_addresses;
            let _ = self.push_control(&ControlMsg::Candidates { addrs });
        }
        if self.config.nat_discovery && self.config.direct_paths {
            let now = self.clock.now();
            self.discover_nat(now, observed_server);
            self.discovery_auto = true;
        } else if let Some(b) = self.nat_behavior {
            // Learnt earlier (an explicit discovery): the server should know it too.
            let info = crate::wire::control::NatInfo::from_behavior(&b);
            let _ = self.push_control(&ControlMsg::NatInfo { info });
        }
    }
}

impl Endpoint for Client {
    /// Processes one datagram received on local socket `socket` (see [`SocketRequest`]);
    /// [`Client::handle_datagram`] is this for the primary socket.
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
            true,
            &before,
            &self.stats.dropped,
            socket,
            from,
            datagram.len(),
        );
    }

    /// The runtime opened socket `id` at `local`, or connected stream `id` (or could not:
    /// `None`).
    fn handle_socket_opened(&mut self, now: Instant, id: SocketId, local: Option<SocketAddr>) {
        let now = self.clock.advance(now);
        if id.is_stream() {
            self.on_stream_opened(now, id, local.is_some());
        } else {
            self.sockets.opened(id, local);
        }
    }

    /// The runtime reports that TCP stream `id` ended. A session on it connects a new one at
    /// once (the server keeps the session through its recovery window).
    fn handle_stream_closed(&mut self, now: Instant, id: SocketId) {
        let now = self.clock.advance(now);
        if !self.tcp.closed(id) {
            return;
        }
        self.stats.tcp_streams_closed += 1;
        match &mut self.state {
            State::Handshaking(h) if h.socket == id => {
                // Back to UDP hellos (Auto) while a new stream is connected.
                h.socket = SocketId::PRIMARY;
                h.cookie = None;
                self.tcp.reconnect_later(now);
            }
            State::Authenticating(a) if a.link.socket == id => self.tcp.connect(now, a.link.server),
            State::Connected(l) if l.socket == id => self.tcp.connect(now, l.server),
            _ => {}
        }
    }

    /// Advances timers: retransmissions, keepalives, timeouts. Idempotent; may be called
    /// early or often.
    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        for b in &mut self.stun {
            b.handle_timeout(now);
        }
        self.finish_stun();
        if let Some(d) = &mut self.discovery {
            d.handle_timeout(now);
            self.finish_discovery(now);
        }
        let failure = match &mut self.state {
            State::Idle | State::Closed | State::Closing(..) => None,
            State::Detached(until) => {
                if now >= *until {
                    // The pair lifetime is over: what is left of the peers goes.
                    let ids: smallvec::SmallVec<[HostId; 16]> =
                        self.peers.keys().copied().collect();
                    for id in ids {
                        self.drop_peer(id, PeerDropReason::PairExpired);
                    }
                    self.state = State::Closed;
                    self.rejoin_at = None;
                    self.orphans_until = None;
                } else if self.rejoin_at.is_some_and(|at| now >= at) {
                    self.rejoin_at = None;
                    if let Some((server, token)) = self.last_server.clone() {
                        // The server may be back: register again, peers carry on meanwhile.
                        self.stats.reregistrations += 1;
                        self.begin_handshake(now, server, token, true);
                    }
                }
                None
            }
            State::Handshaking(h) => {
                if now >= h.deadline {
                    Some(if h.key_mismatch {
                        DisconnectReason::ServerKeyMismatch
                    } else {
                        DisconnectReason::ConnectTimedOut
                    })
                } else {
                    h.hello_due |= h.retry.poll(now);
                    if h.tcp_at.is_some_and(|at| now >= at) {
                        // No answer over UDP: try TCP too.
                        h.tcp_at = None;
                        self.tcp.connect(now, h.server);
                    }
                    None
                }
            }
            State::Authenticating(a) => {
                if now >= a.deadline {
                    Some(DisconnectReason::ConnectTimedOut)
                } else {
                    a.connect_due |= a.retry.poll(now);
                    None
                }
            }
            State::Connected(l) => {
                if now >= l.last_recv + self.config.idle_timeout {
                    Some(DisconnectReason::TimedOut)
                } else {
                    l.ping_due |= now >= l.ping_at(self.config.keepalive_interval);
                    let auto = self.config.transport == Transport::Auto;
                    if auto && l.socket.is_stream() && now >= l.probe_at {
                        l.probe_due = true;
                        l.probe_at = now + self.config.udp_probe_interval;
                    }
                    if auto
                        && !l.socket.is_stream()
                        && !self.tcp.wanted()
                        && now >= l.last_recv + SERVER_QUIET
                    {
                        // The server is quiet over UDP (blocked, or our network is out):
                        // a stream too; it takes over if it connects while still quiet.
                        self.tcp.connect(now, l.server);
                    }
                    None
                }
            }
        };
        let server = self.server_addr().filter(|_| self.wants_stream(now));
        if self.tcp.handle_timeout(now, server) {
            self.stats.tcp_connect_failures += 1;
            if self.wants_stream(now) {
                self.tcp.reconnect_later(now);
            }
        }
        if let Some(reason) = failure {
            self.fail(reason);
        }
        let ids: smallvec::SmallVec<[HostId; 16]> = self.peers.keys().copied().collect();
        for id in ids {
            if let Some(p) = self.peers.get_mut(&id) {
                p.conn.handle_timeout(now);
            }
            self.drain_peer(id);
        }
        self.punch_timeouts(now);
        // No relay for orphans: one whose direct path died is gone; all of them at the end of
        // the pair lifetime.
        self.drop_orphans(|p| p.punch.direct().is_none(), PeerDropReason::DirectLost);
        if self.orphans_until.is_some_and(|t| now >= t) && !self.is_detached() {
            self.orphans_until = None;
            self.drop_orphans(|_| true, PeerDropReason::PairExpired);
        }
        while self
            .early
            .front()
            .is_some_and(|(at, _, _)| now >= *at + peers::EARLY_TTL)
        {
            self.early.pop_front();
            self.stats.dropped.unknown_peer += 1;
        }
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
        let discovery = self.discovery.as_mut().and_then(|d| d.poll_transmit(buf));
        if let Some(t) =
            discovery.or_else(|| self.stun.iter_mut().find_map(|b| b.poll_transmit(buf)))
        {
            self.stats.io.datagrams_out += 1;
            self.stats.io.bytes_out += t.len as u64;
            return Some(t);
        }
        let max = self.config.max_datagram_size.min(buf.len());
        let session_id = self.session_id;
        // (A session whose stream broke keeps naming it until the new one connects: the
        // runtime drops those, as a dead link would. Stream ids are never reused.)
        let waiting = match &self.state {
            State::Handshaking(h) => {
                !h.hello_due || (self.config.transport == Transport::Tcp && !h.socket.is_stream())
            }
            State::Authenticating(a) => !a.connect_due,
            _ => false,
        };
        if waiting {
            // (Peers exist here only while re-registering: their direct paths go on.)
            return self.poll_peer_transmit(now, buf).inspect(|t| {
                self.stats.io.datagrams_out += 1;
                self.stats.io.bytes_out += t.len as u64;
            });
        }
        let ticket = &self.ticket;
        let (dst, len, socket) = match &mut self.state {
            State::Idle | State::Closed => return None,
            State::Detached(_) => {
                return self.poll_peer_transmit(now, buf).inspect(|t| {
                    self.stats.io.datagrams_out += 1;
                    self.stats.io.bytes_out += t.len as u64;
                });
            }
            State::Handshaking(h) => {
                if !h.hello_due
                    || (self.config.transport == Transport::Tcp && !h.socket.is_stream())
                {
                    // (Forced TCP waits for its stream.)
                    return None;
                }
                h.hello_due = false;
                let hello = ClientHello {
                    client_session: session_id,
                    client_ephemeral: h.ephemeral.public(),
                    cookie: h.cookie.as_ref().map_or(&[][..], |c| &c[..]),
                };
                let len = hello.encode(buf).ok()?;
                self.stats.hellos_sent += 1;
                (h.server, len, h.socket)
            }
            State::Authenticating(a) => {
                if !a.connect_due {
                    return None;
                }
                a.connect_due = false;
                let token = &a.token;
                let l = &mut a.link;
                let len = l.keys.seal_frames(l.server_session, buf, max, |w| {
                    if let Some(ticket) = ticket {
                        let _ = Frame::Resume { ticket }.encode(w);
                    }
                    let _ = Frame::Connect { token }.encode(w);
                })?;
                l.last_send = now;
                (l.server, len, l.socket)
            }
            State::Connected(l) if l.probe_due => {
                // Does UDP to the server work (both ways)? The server answers on UDP without
                // moving the session; the answer moves it (`on_probe_ack`).
                l.probe_due = false;
                let nonce = self.rng.next_u64();
                l.probe_nonce = Some(nonce);
                let len = l.keys.seal_frames(l.server_session, buf, max, |w| {
                    let _ = Frame::Probe { nonce }.encode(w);
                })?;
                self.stats.udp_probes_sent += 1;
                (l.server, len, SocketId::PRIMARY)
            }
            State::Connected(l) => {
                if self.outgoing.is_empty()
                    && !l.ping_due
                    && !l.control.wants_transmit(now)
                    && !self
                        .peers
                        .values()
                        .any(|p| p.relayed() && p.conn.wants_transmit(now))
                {
                    return self.poll_peer_transmit(now, buf).inspect(|t| {
                        self.stats.io.datagrams_out += 1;
                        self.stats.io.bytes_out += t.len as u64;
                    });
                }
                let outgoing = &mut self.outgoing;
                let peers = &mut self.peers;
                let cursor = &mut self.peer_cursor;
                let control = &mut l.control;
                let retransmits = control.retransmits;
                let mut pinged = false;
                let mut relayed = 0;
                let mut empty = false;
                let ping_due = l.ping_due;
                let len = l.keys.seal_frames(l.server_session, buf, max, |w| {
                    control.write(now, w);
                    let (n, next) = peers::write_relay_frames(now, w, peers, *cursor);
                    relayed = n;
                    *cursor = next;
                    while let Some(p) = outgoing.front() {
                        if w.remaining() < p.len() + DATAGRAM_FRAME_OVERHEAD {
                            break;
                        }
                        let _ = Frame::Datagram { payload: p }.encode(w);
                        outgoing.pop_front();
                    }
                    if w.is_empty() && ping_due {
                        let _ = Frame::Ping.encode(w);
                        pinged = true;
                    }
                    empty = w.is_empty();
                })?;
                if empty {
                    // Something claimed to have data but wrote none: never send an empty
                    // packet (a caller draining poll_transmit would spin on it).
                    debug_assert!(false, "a component wanted to transmit but wrote nothing");
                    return self.poll_peer_transmit(now, buf).inspect(|t| {
                        self.stats.io.datagrams_out += 1;
                        self.stats.io.bytes_out += t.len as u64;
                    });
                }
                if pinged {
                    self.stats.io.keepalives_sent += 1;
                }
                self.stats.relayed_out += relayed;
                self.stats.control_retransmits += l.control.retransmits - retransmits;
                l.ping_due = false;
                l.last_send = now;
                (l.server, len, l.socket)
            }
            State::Closing(l, code) => {
                let code = *code;
                let len = l.keys.seal_frames(l.server_session, buf, max, |w| {
                    let _ = Frame::Close { code }.encode(w);
                })?;
                let (dst, socket) = (l.server, l.socket);
                self.state = State::Closed;
                // The Close frame is queued on the stream before the stream's close.
                self.tcp.close(None);
                (dst, len, socket)
            }
        };
        self.stats.io.datagrams_out += 1;
        self.stats.io.bytes_out += len as u64;
        Some(Transmit { dst, len, socket })
    }

    /// The next change to this client's local sockets (see [`SocketRequest`]): birthday
    /// probing asks for [`ClientConfig::birthday_sockets`] extra sockets while it runs and
    /// closes them after (but the one a direct path uses).
    fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.tcp
            .poll_request()
            .or_else(|| self.sockets.poll_request())
    }

    /// When [`Client::handle_timeout`] should next be called, if ever. Pure.
    fn poll_timeout(&self) -> Option<Instant> {
        let stun = self.stun.iter().filter_map(|b| b.poll_timeout()).min();
        let discovery = self.discovery.as_ref().and_then(NatDiscovery::poll_timeout);
        earliest(
            earliest(stun, discovery),
            earliest(self.session_timeout(), self.tcp.next_timeout()),
        )
    }

    /// What the deadline from [`Client::poll_timeout`] is for (for logs and busy-loop reports).
    fn timeout_reason(&self) -> &'static str {
        match &self.state {
            State::Idle => "idle",
            State::Handshaking(h) if h.deadline <= h.retry.next_at() => "connect timeout",
            State::Handshaking(_) => "hello retransmit",
            State::Authenticating(a) if a.deadline <= a.retry.next_at() => "connect timeout",
            State::Authenticating(_) => "connect retransmit",
            State::Connected(l) => {
                let idle = l.last_recv + self.config.idle_timeout;
                let keepalive = (!l.ping_due).then(|| l.ping_at(self.config.keepalive_interval));
                match (l.control.next_timeout(), keepalive) {
                    (Some(c), _) if c <= idle && keepalive.is_none_or(|k| c <= k) => {
                        "control retransmit"
                    }
                    (_, Some(k)) if k < idle => "keepalive",
                    _ => "idle timeout",
                }
            }
            State::Closing(..) => "close pending",
            State::Detached(until) => {
                if self.session_timeout() == Some(*until) {
                    "pair lifetime"
                } else {
                    "peer traffic (detached)"
                }
            }
            State::Closed => "closed",
        }
    }
}

impl Events for Client {
    type Event = ClientEvent;

    /// The next event, if any.
    fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}
