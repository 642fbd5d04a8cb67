//! The client's session with the server: the handshake (with the cookie a loaded server asks
//! for), the encrypted link (keepalives, idle timeout, the reliable control stream, unreliable
//! datagrams, the relay frames its packets carry for the peers), the TCP fallback and the move
//! back to UDP (`tcp.rs` owns the stream itself), closing, and re-registration after the
//! server was lost.
//!
//! What the session cannot decide alone it reports as a [`SessionEvent`] and its owner
//! answers: whether a lost session keeps its peers (detached) or ends everything depends on
//! the peers; control messages are for whoever they concern.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rand::RngCore;

use super::tcp::{self, TcpFailure, TcpLink};
use crate::arena::Arena;
use crate::config::{ClientConfig, Transport};
use crate::crypto::{Ephemeral, HandshakeKeys, PacketKeys, PublicKey, RelayKey, reset_token_eq};
use crate::error::{CommandError, SendError};
use crate::event::{DisconnectReason, HostId, RejectReason};
use crate::rng::Rng;
use crate::rudp::stream::ControlStream;
use crate::stats::ClientStats;
use crate::time::{Backoff, Duration, Instant, Timeout};

use crate::wire::control::ControlMsg;
use crate::wire::frame::{DATAGRAM_FRAME_OVERHEAD, Frame};
use crate::wire::handshake::{COOKIE_LEN, ClientHello, Retry, ServerHello};
use crate::wire::relay::{RELAY_HEADER_LEN, RELAY_TAGGED_LEN, encode_relay};
use crate::wire::reset::{RESET_TOKEN_LEN, Reset};
use crate::wire::sealed::{SealedHeader, SealedPacket};
use crate::wire::stun::StunCredential;
use crate::{SocketId, SocketRequest, Transmit};

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

/// The code of the Close frame a client sends the node it leaves because that node is
/// draining (it moves to the next address): a normal close, nothing the application chose.
const MOVED_CLOSE_CODE: u16 = 0;

/// Where a session is in its life (for the owner's routing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Idle,
    Handshaking,
    Authenticating,
    Connected,
    Closing,
    Detached,
    Closed,
}

/// What the session tells its owner.
#[derive(Debug)]
pub(super) enum SessionEvent {
    /// The server welcomed us.
    Connected {
        host_id: HostId,
        public_addr: SocketAddr,
        server_key: PublicKey,
        /// The server's address (where NAT discovery goes).
        server: SocketAddr,
        /// The session is on a TCP stream.
        on_tcp: bool,
        /// It was a re-registration after the server was lost.
        rejoined: bool,
    },
    /// The session failed. The owner answers with [`Session::rejoin_failed`] (`rejoining`),
    /// [`Session::detach`] or [`Session::close`].
    Failed {
        reason: DisconnectReason,
        rejoining: bool,
    },
    /// The server was heard again after a silence of [`SERVER_QUIET`]: our network was
    /// probably out.
    HeardAfterQuiet,
    /// The session moved to a TCP stream (`tcp`) or back to UDP.
    Transport { tcp: bool },
    /// Detached, the pair lifetime ran out: the session is closed and the peers must go.
    PairLifetimeOver,
}

/// What [`Session::poll_transmit`] produced.
pub(super) enum Poll {
    /// A datagram for the server.
    Server(Transmit),
    /// Nothing for the server now: peers' direct traffic may go.
    Peers,
    /// Nothing at all.
    Nothing,
}

/// How a sealed packet that arrived is routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// To the peers: a peer packet that came directly.
    Peer,
    /// To the session: a server packet on the session's path.
    Server,
    /// Dropped (counted).
    Dropped,
}

/// The peers' side of the relay: the peer packets the session sends the server to relay.
pub(super) trait Relay {
    /// Writes the next relayed peer packet, sealed with its pair's key, into `buf`; returns
    /// its length, or `None` if no relayed peer has anything to send. `buf` is as long as the
    /// largest peer packet the session's own path may carry behind the relay header; each
    /// peer's relay-path discovery may allow less.
    fn write_relayed(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize>;
}

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
    /// No server session any more (it timed out, or [`crate::Client::detach_from_server`]),
    /// but peers with a validated direct path are still talked to, until this instant (the
    /// pair lifetime) or their direct path dies.
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
    /// With several server addresses: give this one up for the next at this instant if it
    /// has not answered (a first connect; a re-registration gives up at its `deadline`).
    next_at: Option<Instant>,
    /// The cookie a server under load asked us to echo.
    cookie: Option<[u8; COOKIE_LEN]>,
    token: Vec<u8>,
    /// When the last hello went out (the ServerHello's arrival gives a first round trip).
    hello_sent: Instant,
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
    /// Tags the peer packets sent to the server for relaying (the relay fast path).
    relay: RelayKey,
    /// The id the server chose for packets sent to it.
    server_session: u32,
    /// Signs this client's STUN requests to its server (their budget is the session's, not
    /// its IP's, which a spoofer can spend).
    stun: StunCredential,
    /// The stateless reset token of this session, once the server sent it: a reset carrying
    /// it means the server no longer has the session.
    reset_token: Option<[u8; RESET_TOKEN_LEN]>,
    /// A reset with our token came: unless the server answers something authentic by then
    /// (the probe `reset_probe_due` sends asks it to), the session is lost then.
    reset_check: Option<Instant>,
    reset_probe_due: bool,
    /// The handshake's round trip (from the last hello): a round trip to go by before the
    /// control stream measured one.
    handshake_rtt: Duration,
    host_id: HostId,
    public_addr: Option<SocketAddr>,
    last_recv: Instant,
    last_send: Instant,
    ping_due: bool,
    /// Reliable ordered control messages in both directions.
    control: ControlStream,
    /// A control retransmission came due (seen by `handle_timeout`): it leaves with the next
    /// packet, and its deadline is not offered again until then (after `handle_timeout(now)`
    /// the next deadline is always in the future).
    control_due: bool,
}

/// How long a client waits, after a reset with its token, for the server to show it still
/// has the session: three round trips, at least 50 ms, at most a second.
fn reset_check_window(srtt: Duration) -> Duration {
    (srtt * 3).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

impl Link {
    /// Something authentic came from the server: a reset with our token was not its own.
    fn refute_reset(&mut self, stats: &mut ClientStats) {
        if self.reset_check.take().is_some() {
            self.reset_probe_due = false;
            stats.resets_refuted += 1;
        }
    }

    /// When the next keepalive is due: `keepalive` after the last send, or every
    /// [`RECOVERY_PING`] once the server has been quiet for [`SERVER_QUIET`].
    fn ping_at(&self, keepalive: Duration) -> Instant {
        let quiet = (self.last_send + RECOVERY_PING).max(self.last_recv + SERVER_QUIET);
        (self.last_send + keepalive).min(quiet)
    }
}

/// The session with the server (see the module docs).
pub(super) struct Session {
    config: Arc<ClientConfig>,
    /// Test-only: every control message queued for the server, encoded, in order.
    #[cfg(test)]
    pub(super) sent_control: Vec<Vec<u8>>,
    state: State,
    /// The id this client chose for packets sent to it (new for every handshake).
    id: u32,
    /// Datagrams for the server application not yet transmitted.
    outgoing: VecDeque<Bytes>,
    /// Holds queued datagrams.
    arena: Arena,
    /// The TCP stream to the server, when UDP does not get through.
    tcp: TcpLink,
    /// The server addresses given to `connect` (nodes of one cluster, sharing its key), in
    /// order; empty before `connect`.
    servers: Vec<SocketAddr>,
    /// The address in use or being tried (an index into `servers`).
    current: usize,
    /// The address whose session was lost last: re-registration goes round the list from the
    /// one after it, backing off only once it has come back round to it.
    lost: usize,
    /// The token given to `connect`, presented to every address.
    token: Vec<u8>,
    /// The server's latest resumption ticket (presented when re-registering).
    ticket: Option<Vec<u8>>,
    /// While detached after losing the server: the next re-registration attempt.
    rejoin_at: Option<Instant>,
    rejoin_backoff: Duration,
    /// The link to a draining node this client left for the next address: its Close frame
    /// still has to go (so the node sees the client leave at once, not after a timeout).
    farewell: Option<Box<Link>>,
    /// A first connect: the addresses that refused us because they are draining or full
    /// (one flag per address); the others are still worth trying.
    refused: Vec<bool>,
    events: VecDeque<SessionEvent>,
}

impl Session {
    pub(super) fn new(config: Arc<ClientConfig>) -> Self {
        Self {
            config,
            #[cfg(test)]
            sent_control: Vec::new(),
            state: State::Idle,
            id: 0,
            outgoing: VecDeque::new(),
            arena: Arena::default(),
            tcp: TcpLink::default(),
            servers: Vec::new(),
            current: 0,
            lost: 0,
            token: Vec::new(),
            ticket: None,
            rejoin_at: None,
            rejoin_backoff: REJOIN_INITIAL,
            farewell: None,
            refused: Vec::new(),
            events: VecDeque::new(),
        }
    }

    // ---- getters -----------------------------------------------------------------------

    pub(super) fn phase(&self) -> Phase {
        match self.state {
            State::Idle => Phase::Idle,
            State::Handshaking(_) => Phase::Handshaking,
            State::Authenticating(_) => Phase::Authenticating,
            State::Connected(_) => Phase::Connected,
            State::Closing(..) => Phase::Closing,
            State::Detached(_) => Phase::Detached,
            State::Closed => Phase::Closed,
        }
    }

    /// The credential this client signs STUN requests to its server with, while connected.
    pub(super) fn stun_credential(&self) -> Option<StunCredential> {
        self.connected().map(|l| l.stun)
    }

    fn connected(&self) -> Option<&Link> {
        match &self.state {
            State::Connected(l) => Some(l),
            _ => None,
        }
    }

    /// The id the server gave this client, while connected.
    pub(super) fn host_id(&self) -> Option<HostId> {
        self.connected().map(|l| l.host_id)
    }

    /// This client's address as the server sees it, while connected.
    pub(super) fn public_addr(&self) -> Option<SocketAddr> {
        self.connected().and_then(|l| l.public_addr)
    }

    /// Smoothed round-trip time to the server, while connected.
    pub(super) fn server_rtt(&self) -> Option<Duration> {
        self.connected().map(|l| l.control.srtt())
    }

    /// The server address, while a session with it exists or is being made.
    pub(super) fn server_addr(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Handshaking(h) => Some(h.server),
            State::Authenticating(a) => Some(a.link.server),
            State::Connected(l) | State::Closing(l, _) => Some(l.server),
            State::Idle | State::Closed | State::Detached(_) => None,
        }
    }

    /// Whether the session is on a TCP stream now.
    pub(super) fn on_tcp(&self) -> bool {
        match &self.state {
            State::Handshaking(h) => h.socket.is_stream(),
            State::Authenticating(a) => a.link.socket.is_stream(),
            State::Connected(l) | State::Closing(l, _) => l.socket.is_stream(),
            State::Idle | State::Closed | State::Detached(_) => false,
        }
    }

    #[cfg(test)]
    pub(super) fn ticket(&self) -> Option<Vec<u8>> {
        self.ticket.clone()
    }

    /// The server's latest resumption ticket (presented when re-registering).
    pub(super) fn store_ticket(&mut self, ticket: &[u8]) {
        self.ticket = Some(ticket.to_vec());
    }

    // ---- commands ----------------------------------------------------------------------

    /// How many server addresses `connect` was given.
    pub(super) fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Starts connecting to the first of `servers`, moving on to the next one that does not
    /// answer (the caller checked the client is fresh, the list's and the token's sizes).
    pub(super) fn connect(
        &mut self,
        now: Instant,
        servers: &[SocketAddr],
        token: &[u8],
        rng: &mut Rng,
    ) {
        debug_assert!(!servers.is_empty(), "the caller checks the list");
        self.servers = servers.to_vec();
        self.current = 0;
        self.lost = 0;
        self.refused = vec![false; servers.len()];
        self.token = token.to_vec();
        let deadline = now + self.config.connect_timeout;
        self.begin_handshake(now, false, deadline, rng);
    }

    /// How long one address is given to answer when there are others to try: the
    /// configured [`ClientConfig::server_answer_timeout`] (never more than the connect
    /// timeout); with one address, the whole connect timeout.
    fn answer_timeout(&self) -> Duration {
        if self.servers.len() > 1 {
            (self.config.server_answer_timeout).min(self.config.connect_timeout)
        } else {
            self.config.connect_timeout
        }
    }

    /// A new handshake with the current address (a first connect, or a re-registration),
    /// failing at `deadline`.
    fn begin_handshake(&mut self, now: Instant, rejoin: bool, deadline: Instant, rng: &mut Rng) {
        let Some(&server) = self.servers.get(self.current) else {
            return;
        };
        let token = self.token.clone();
        // A first connect moves on to the next address when this one is silent; a
        // re-registration fails (back to detached) and the next attempt takes the next one.
        let next_at = (!rejoin && self.servers.len() > 1)
            .then(|| now + self.answer_timeout())
            .filter(|t| *t < deadline);
        self.id = rng.next_u32();
        self.tcp.forget_failure();
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
            ephemeral: Ephemeral::generate(rng),
            retry: Backoff::new(
                now,
                self.config.handshake_retry_initial,
                self.config.handshake_retry_max,
            ),
            deadline,
            hello_due: true,
            key_mismatch: false,
            rejoin,
            next_at,
            cookie: None,
            token,
            hello_sent: now,
        }));
    }

    /// Queues an unreliable datagram for the server application.
    pub(super) fn send_datagram(&mut self, payload: &[u8]) -> Result<(), SendError> {
        if self.connected().is_none() {
            return Err(SendError::NotConnected);
        }
        let max = self.config.base_datagram_size()
            - crate::wire::sealed::OVERHEAD
            - DATAGRAM_FRAME_OVERHEAD;
        if payload.len() > max {
            return Err(SendError::PayloadTooLarge { max });
        }
        if self.outgoing.len() >= self.config.max_queued_datagrams {
            return Err(SendError::QueueFull);
        }
        let b = self.arena.copy(payload);
        self.outgoing.push_back(b);
        Ok(())
    }

    /// Queues a control message for the server. A message that does not fit one datagram
    /// cannot be (the caller checks sizes); one the full queue cannot take is refused.
    pub(super) fn push_control(&mut self, msg: &ControlMsg<'_>) -> Result<(), CommandError> {
        let State::Connected(l) = &mut self.state else {
            return Err(CommandError::NotConnected);
        };
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        let Ok(n) = msg.encode(&mut buf) else {
            debug_assert!(
                false,
                "a control message the caller let through is too large"
            );
            return Err(CommandError::TooLarge);
        };
        l.control
            .push(&buf[..n])
            .map_err(|_| CommandError::QueueFull)?;
        #[cfg(test)]
        self.sent_control.push(buf[..n].to_vec());
        Ok(())
    }

    /// `disconnect`: a live session closes with one Close frame. `None` if there was nothing
    /// to close; else whether to report `Disconnected` (not for a session that had already
    /// ended and left only its peers behind). The owner forgets everything of the session.
    pub(super) fn disconnect(&mut self, code: u16) -> Option<bool> {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let (state, report) = match state {
            State::Connected(link) => (State::Closing(link, code), true),
            State::Authenticating(a) => (State::Closing(Box::new(a.link), code), true),
            State::Handshaking(_) => (State::Closed, true),
            // The session ended already (and was reported); the peers go now.
            State::Detached(_) => (State::Closed, false),
            s @ (State::Closing(..) | State::Idle | State::Closed) => {
                self.state = s;
                return None;
            }
        };
        self.state = state;
        Some(report)
    }

    /// The session is lost but peers stay: detached until `until` (the pair lifetime),
    /// registering again if `reregister`: at `now` if `at_once` (the server said it is back,
    /// with a reset), else after [`REJOIN_INITIAL`].
    pub(super) fn detach(&mut self, now: Instant, until: Instant, reregister: bool, at_once: bool) {
        self.state = State::Detached(until);
        self.lost = self.current;
        self.forget_link();
        if reregister {
            self.rejoin_backoff = REJOIN_INITIAL;
            self.rejoin_at = Some(if at_once { now } else { now + REJOIN_INITIAL });
        } else {
            self.rejoin_at = None;
        }
    }

    /// The node is draining and there is another address: the session with it closes (one
    /// Close frame, sent over UDP whatever transport the session was on: the node follows an
    /// authentic packet to its new path) and the client registers with the next address at
    /// once, detached meanwhile until `until`, as after a stateless reset.
    pub(super) fn leave(&mut self, now: Instant, until: Instant) {
        if let State::Connected(link) = std::mem::replace(&mut self.state, State::Closed) {
            self.farewell = Some(link);
        }
        self.detach(now, until, true, true);
    }

    /// The node sends us to node `to` (a room lives there, or the node drains): the session
    /// with it closes as when it drains ([`Session::leave`]) and the re-registration, at
    /// once, goes to `to`. `to` joins the address list if it was not in it (a full list
    /// gives up an entry other than the one just left); if `to` does not take us, the list
    /// goes on from there as after any lost session.
    pub(super) fn redirect(&mut self, now: Instant, until: Instant, to: SocketAddr) {
        let n = self.servers.len();
        let at = match self.servers.iter().position(|a| *a == to) {
            Some(i) => i,
            None if n < crate::Client::MAX_SERVERS => {
                self.servers.push(to);
                self.refused.push(false);
                n
            }
            None => {
                let i = if self.current == n - 1 { n - 2 } else { n - 1 };
                self.servers[i] = to;
                i
            }
        };
        self.leave(now, until);
        let n = self.servers.len();
        // The re-registration takes the address after `current`.
        self.current = (at + n - 1) % n;
    }

    /// A first connect refused by a draining or full address: the next address not known to
    /// refuse, within the same connect timeout. `false` (nothing changed) if every address has
    /// refused, or this is not a first connect with several addresses.
    fn move_past_refusal(&mut self, now: Instant, rng: &mut Rng) -> bool {
        let deadline = match &self.state {
            State::Authenticating(a) if !a.rejoin && self.servers.len() > 1 => a.deadline,
            _ => return false,
        };
        if let Some(r) = self.refused.get_mut(self.current) {
            *r = true;
        }
        let n = self.servers.len();
        let Some(next) = (1..=n)
            .map(|k| (self.current + k) % n)
            .find(|&i| !self.refused.get(i).copied().unwrap_or(false))
        else {
            return false;
        };
        self.tcp.close(None);
        self.current = next;
        self.begin_handshake(now, false, deadline, rng);
        true
    }

    /// A re-registration failed (the server is not back, or refused): detached again until
    /// `until`, the next attempt after the backoff.
    /// With several addresses, the next one is tried at once until the list has come back
    /// round to the address that was lost; only then is there a wait.
    pub(super) fn rejoin_failed(&mut self, now: Instant, until: Instant) {
        self.tcp.close(None);
        self.state = State::Detached(until);
        let next = (self.current + 1) % self.servers.len().max(1);
        if next != self.lost {
            self.rejoin_at = Some(now);
        } else {
            self.rejoin_at = Some(now + self.rejoin_backoff);
            self.rejoin_backoff = (self.rejoin_backoff * 2).min(REJOIN_MAX);
        }
    }

    /// The session ended for good.
    pub(super) fn close(&mut self) {
        self.state = State::Closed;
        self.forget();
    }

    /// Drops what lived with the session (its stream, unless a Close frame still has to go
    /// down it, and queued datagrams) and re-registration.
    pub(super) fn forget(&mut self) {
        self.rejoin_at = None;
        if !matches!(self.state, State::Closing(..)) {
            // (A closing session's stream closes after its Close frame.)
            self.tcp.close(None);
        }
        self.outgoing.clear();
    }

    fn forget_link(&mut self) {
        self.tcp.close(None);
        self.outgoing.clear();
    }

    // ---- inputs ------------------------------------------------------------------------

    /// Where a sealed packet that arrived on `socket` from `from` goes.
    pub(super) fn route(
        &self,
        socket: SocketId,
        from: SocketAddr,
        header: &SealedHeader,
        stats: &mut ClientStats,
    ) -> Route {
        let on_stream = socket.is_stream();
        let link = match &self.state {
            State::Detached(_) if header.peer => return Route::Peer,
            State::Handshaking(_) if header.peer && !on_stream => return Route::Peer,
            State::Authenticating(a) => &a.link,
            State::Connected(l) | State::Closing(l, _) => &**l,
            _ => {
                stats.dropped.unexpected += 1;
                return Route::Dropped;
            }
        };
        if !header.peer && header.receiver != self.id {
            stats.dropped.unknown_session += 1;
            Route::Dropped
        } else if on_stream && Some(socket) != self.tcp.open_id() {
            stats.dropped.unexpected += 1;
            Route::Dropped
        } else if header.peer && !on_stream {
            Route::Peer
        } else if header.peer || from != link.server {
            stats.dropped.unexpected += 1;
            Route::Dropped
        } else {
            Route::Server
        }
    }

    /// A stateless reset that came in on `socket` from `from`: if it carries our session's
    /// token and comes from the server on a path of ours, the server may no longer have the
    /// session. A session id's token can be learnt before the id is ours (by sending a packet
    /// naming it while the server has no such session), so the reset is checked: a probe goes
    /// to the server at once on the session's path, and unless something authentic comes back
    /// within [`reset_check_window`] the session fails ([`DisconnectReason::Reset`]); a live
    /// server's answer refutes it. Anything else is dropped and counted: it changes nothing.
    pub(super) fn handle_reset(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        reset: &Reset,
        stats: &mut ClientStats,
    ) {
        let State::Connected(l) = &mut self.state else {
            stats.dropped.unexpected += 1;
            return;
        };
        let our_path = socket == SocketId::PRIMARY || Some(socket) == self.tcp.open_id();
        let Some(token) = l.reset_token.filter(|_| from == l.server && our_path) else {
            stats.dropped.unexpected += 1;
            return;
        };
        if !reset_token_eq(&reset.token, &token) {
            stats.dropped.auth_failed += 1;
            return;
        }
        stats.resets_received += 1;
        if l.reset_check.is_none() {
            let rtt = l.control.measured_srtt().unwrap_or(l.handshake_rtt);
            l.reset_check = Some(now + reset_check_window(rtt));
            l.reset_probe_due = true;
        }
    }

    /// Whether a peer packet the server relayed (the relay fast path), naming session
    /// `session`, that came in on `socket` from `from`, is for this session: from the server,
    /// on the session's path. It is not authenticated here (the peer packet is, end to end).
    pub(super) fn accepts_relayed(
        &self,
        socket: SocketId,
        from: SocketAddr,
        session: u32,
        stats: &mut ClientStats,
    ) -> bool {
        let link = match &self.state {
            State::Authenticating(a) => &a.link,
            State::Connected(l) | State::Closing(l, _) => &**l,
            _ => {
                stats.dropped.unexpected += 1;
                return false;
            }
        };
        if session != self.id {
            stats.dropped.unknown_session += 1;
            false
        } else if (socket.is_stream() && Some(socket) != self.tcp.open_id()) || from != link.server
        {
            stats.dropped.unexpected += 1;
            false
        } else {
            true
        }
    }

    /// A peer packet the server relayed opened (it is authentic, and only the server relays):
    /// the server is alive, as for any of its packets.
    pub(super) fn heard_relayed(&mut self, now: Instant, stats: &mut ClientStats) {
        if let State::Connected(l) = &mut self.state {
            let quiet = now.saturating_duration_since(l.last_recv);
            l.last_recv = now;
            l.refute_reset(stats);
            if quiet >= SERVER_QUIET {
                self.events.push_back(SessionEvent::HeardAfterQuiet);
            }
        }
    }

    /// Opens a server packet (routed [`Route::Server`]) into `scratch`.
    pub(super) fn open<'s>(
        &mut self,
        now: Instant,
        packet: &SealedPacket<'_>,
        scratch: &'s mut [u8],
        stats: &mut ClientStats,
    ) -> Option<&'s [u8]> {
        let link = match &mut self.state {
            State::Authenticating(a) => &mut a.link,
            State::Connected(l) | State::Closing(l, _) => &mut **l,
            _ => return None,
        };
        match link.keys.open(packet, scratch) {
            Err(e) => {
                stats.dropped.count_open(e);
                None
            }
            Ok(plaintext) => {
                let quiet = now.saturating_duration_since(link.last_recv);
                link.last_recv = now;
                link.refute_reset(stats);
                if quiet >= SERVER_QUIET {
                    self.events.push_back(SessionEvent::HeardAfterQuiet);
                }
                Some(plaintext)
            }
        }
    }

    /// One frame of an authentic server packet that came in on `socket`.
    pub(super) fn handle_frame(
        &mut self,
        now: Instant,
        socket: SocketId,
        frame: &Frame<'_>,
        rng: &mut Rng,
        stats: &mut ClientStats,
    ) {
        match *frame {
            Frame::Padding(_) => {}
            Frame::Ping => stats.io.keepalives_received += 1,
            Frame::Welcome {
                host_id,
                observed,
                reset_token,
            } => self.on_welcome(now, HostId(host_id), observed, reset_token),
            Frame::Reject { reason } => {
                if matches!(self.state, State::Authenticating(_)) {
                    let reason = RejectReason::from_code(reason);
                    // Draining or full: another node of the cluster may take us (a
                    // re-registration goes on to the next address when it fails anyway).
                    let elsewhere =
                        matches!(reason, RejectReason::Draining | RejectReason::ServerFull);
                    if !(elsewhere && self.move_past_refusal(now, rng)) {
                        self.fail(DisconnectReason::Rejected(reason));
                    }
                } else {
                    stats.dropped.unexpected += 1;
                }
            }
            Frame::Close { code } => {
                if matches!(self.state, State::Connected(_) | State::Authenticating(_)) {
                    self.fail(DisconnectReason::ClosedByServer(code));
                }
            }
            Frame::Stream { seq, data } => match &mut self.state {
                State::Connected(l) => l.control.handle_data(seq, data),
                _ => stats.dropped.unexpected += 1,
            },
            Frame::StreamAck { next, mask } => {
                if let State::Connected(l) = &mut self.state {
                    let _ = l.control.handle_ack(now, next, mask);
                }
            }
            Frame::ProbeAck { nonce } => self.on_probe_ack(now, socket, nonce, stats),
            _ => stats.dropped.unexpected += 1,
        }
    }

    /// The next control message the server sent, in order.
    pub(super) fn poll_control(&mut self) -> Option<Bytes> {
        match &mut self.state {
            State::Connected(l) => l.control.poll_delivered(),
            _ => None,
        }
    }

    /// A server under load wants its cookie echoed: the hello goes again at once with it.
    pub(super) fn handle_retry(
        &mut self,
        from: SocketAddr,
        retry: &Retry,
        stats: &mut ClientStats,
    ) {
        let State::Handshaking(h) = &mut self.state else {
            stats.dropped.unexpected += 1;
            return;
        };
        if from != h.server || retry.client_session != self.id {
            stats.dropped.unexpected += 1;
            return;
        }
        h.cookie = Some(retry.cookie);
        h.hello_due = true;
        stats.retries_received += 1;
    }

    /// The server's answer to our hello, on `socket`.
    pub(super) fn handle_hello(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        hello: &ServerHello,
        stats: &mut ClientStats,
    ) {
        let State::Handshaking(h) = &mut self.state else {
            stats.dropped.unexpected += 1;
            return;
        };
        let on_stream = socket.is_stream();
        if from != h.server
            || hello.client_session != self.id
            || (on_stream && Some(socket) != self.tcp.open_id())
            || (!on_stream && socket != SocketId::PRIMARY)
        {
            stats.dropped.unexpected += 1;
            return;
        }
        if let Some(pinned) = self.config.server_key {
            if pinned.0 != hello.server_static {
                stats.server_key_mismatches += 1;
                h.key_mismatch = true;
                return;
            }
        }
        let Ok(keys) =
            HandshakeKeys::client(&h.ephemeral, &hello.server_ephemeral, &hello.server_static)
        else {
            stats.dropped.auth_failed += 1;
            return;
        };
        if keys.verify_confirm(&hello.aad(), &hello.tag).is_err() {
            stats.dropped.auth_failed += 1;
            return;
        }
        let State::Handshaking(h) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        // The session lives on the socket the server answered on. An answer over UDP makes a
        // stream connected meanwhile pointless.
        if on_stream {
            self.tcp.heard(socket);
        } else {
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
                relay: keys.relay_key(),
                stun: keys.relay_secret().stun_credential(hello.server_session),
                keys: keys.into_client_session(),
                server_session: hello.server_session,
                reset_token: None,
                reset_check: None,
                reset_probe_due: false,
                handshake_rtt: now.saturating_duration_since(h.hello_sent),
                host_id: HostId(0),
                public_addr: None,
                last_recv: now,
                last_send: now,
                ping_due: false,
                control: ControlStream::new(self.config.max_queued_control),
                control_due: false,
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

    fn on_welcome(
        &mut self,
        now: Instant,
        host_id: HostId,
        observed: SocketAddr,
        reset_token: [u8; RESET_TOKEN_LEN],
    ) {
        // A duplicate Welcome (our Connect was retransmitted) changes nothing.
        let State::Authenticating(_) = self.state else {
            return;
        };
        let State::Authenticating(a) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        let mut link = a.link;
        if a.rejoin {
            self.rejoin_at = None;
            self.rejoin_backoff = REJOIN_INITIAL;
        }
        link.host_id = host_id;
        link.public_addr = Some(observed);
        link.reset_token = Some(reset_token);
        // On TCP, probe UDP at once: the server learns our UDP address (peers punch to it).
        link.probe_at = now;
        self.events.push_back(SessionEvent::Connected {
            host_id,
            public_addr: observed,
            server_key: link.server_key,
            server: link.server,
            on_tcp: link.socket.is_stream(),
            rejoined: a.rejoin,
        });
        self.state = State::Connected(Box::new(link));
    }

    /// The server answered our UDP probe over UDP: UDP works both ways again, the session
    /// moves back to it (the server follows our next packet) and the stream closes after a
    /// grace period.
    fn on_probe_ack(
        &mut self,
        now: Instant,
        socket: SocketId,
        nonce: u64,
        stats: &mut ClientStats,
    ) {
        let State::Connected(l) = &mut self.state else {
            stats.dropped.unexpected += 1;
            return;
        };
        if socket != SocketId::PRIMARY || l.probe_nonce != Some(nonce) || !l.socket.is_stream() {
            stats.dropped.unexpected += 1;
            return;
        }
        l.probe_nonce = None;
        l.socket = SocketId::PRIMARY;
        l.ping_due = true;
        self.tcp.close(Some(now + tcp::CLOSE_GRACE));
        stats.transport_changes += 1;
        self.events
            .push_back(SessionEvent::Transport { tcp: false });
    }

    fn fail(&mut self, reason: DisconnectReason) {
        let rejoining = match &self.state {
            State::Handshaking(h) => h.rejoin,
            State::Authenticating(a) => a.rejoin,
            _ => false,
        };
        self.events
            .push_back(SessionEvent::Failed { reason, rejoining });
    }

    /// An authentic server packet came in on `socket`: if it is the stream, the stream works.
    pub(super) fn heard_on(&mut self, socket: SocketId) {
        if socket.is_stream() {
            self.tcp.heard(socket);
        }
    }

    /// The runtime's answer to a stream connect (`Ok`: it connected; else how it failed).
    pub(super) fn handle_stream_opened(
        &mut self,
        now: Instant,
        id: SocketId,
        result: Result<(), TcpFailure>,
        stats: &mut ClientStats,
    ) {
        if !self.tcp.opened(id, result) {
            if self.tcp.open_id().is_none() && result.is_err() && self.wants_stream(now) {
                stats.tcp_connect_failures += 1;
                self.tcp.reconnect_later(now);
            }
            return;
        }
        stats.tcp_streams_opened += 1;
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
            stats.transport_changes += 1;
            self.events.push_back(SessionEvent::Transport { tcp: true });
        }
    }

    /// The runtime reports that TCP stream `id` ended. A session on it connects a new one at
    /// once (the server keeps the session through its recovery window) if the server had
    /// spoken on it; after the back-off if it closed without a word (or the session was still
    /// handshaking), so a server that closes every stream is not asked in a storm.
    pub(super) fn handle_stream_closed(
        &mut self,
        now: Instant,
        id: SocketId,
        stats: &mut ClientStats,
    ) {
        let Some(spoke) = self.tcp.closed(id) else {
            return;
        };
        stats.tcp_streams_closed += 1;
        let server = match &mut self.state {
            State::Handshaking(h) if h.socket == id => {
                // Back to UDP hellos (Auto) while a new stream is connected.
                h.socket = SocketId::PRIMARY;
                h.cookie = None;
                None
            }
            State::Authenticating(a) if a.link.socket == id => Some(a.link.server),
            State::Connected(l) if l.socket == id => Some(l.server),
            _ => return,
        };
        match server {
            Some(server) if spoke => self.tcp.connect(now, server),
            _ => self.tcp.reconnect_later(now),
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

    /// Advances timers: retransmissions, keepalives, timeouts, the TCP stream,
    /// re-registration.
    pub(super) fn handle_timeout(&mut self, now: Instant, rng: &mut Rng, stats: &mut ClientStats) {
        let mut move_on = None;
        let failure = match &mut self.state {
            State::Idle | State::Closed | State::Closing(..) => None,
            State::Detached(until) => {
                if now >= *until {
                    self.state = State::Closed;
                    self.rejoin_at = None;
                    self.events.push_back(SessionEvent::PairLifetimeOver);
                } else if self.rejoin_at.is_some_and(|at| now >= at) {
                    self.rejoin_at = None;
                    if !self.servers.is_empty() {
                        // The next address (the same one, if it is the only one: the server
                        // may be back): register again, peers carry on meanwhile.
                        stats.reregistrations += 1;
                        self.current = (self.current + 1) % self.servers.len();
                        let deadline = now + self.answer_timeout();
                        self.begin_handshake(now, true, deadline, rng);
                    }
                }
                None
            }
            State::Handshaking(h) => {
                if now >= h.deadline {
                    // (What the TCP attempts met says more than "no answer" when there was one.)
                    Some(match (h.key_mismatch, self.tcp.failure()) {
                        (true, _) => DisconnectReason::ServerKeyMismatch,
                        (false, Some(TcpFailure::Refused)) => DisconnectReason::ConnectRefused,
                        (false, Some(TcpFailure::Closed)) => DisconnectReason::ConnectClosed,
                        (false, _) => DisconnectReason::ConnectTimedOut,
                    })
                } else if h.next_at.is_some_and(|at| now >= at) {
                    move_on = Some((h.deadline, h.key_mismatch));
                    None
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
                } else if l.reset_check.is_some_and(|at| now >= at) {
                    Some(DisconnectReason::Reset)
                } else {
                    l.ping_due |= now >= l.ping_at(self.config.keepalive_interval);
                    l.control_due |= l.control.poll_timeout().is_some_and(|t| now >= t);
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
                        // The server is quiet over UDP (blocked, or our network is out): a
                        // stream too; it takes over if it connects while still quiet.
                        self.tcp.connect(now, l.server);
                    }
                    None
                }
            }
        };
        if let Some((deadline, key_mismatch)) = move_on {
            // This address is silent: the next one not known to refuse us, within the same
            // connect timeout (this one again if every other refused).
            self.tcp.close(None);
            let n = self.servers.len().max(1);
            self.current = (1..=n)
                .map(|k| (self.current + k) % n)
                .find(|&i| !self.refused.get(i).copied().unwrap_or(false))
                .unwrap_or(self.current);
            self.begin_handshake(now, false, deadline, rng);
            if let State::Handshaking(h) = &mut self.state {
                h.key_mismatch = key_mismatch;
            }
        }
        let server = self.server_addr().filter(|_| self.wants_stream(now));
        if self.tcp.handle_timeout(now, server) {
            stats.tcp_connect_failures += 1;
            if self.wants_stream(now) {
                self.tcp.reconnect_later(now);
            }
        }
        if let Some(reason) = failure {
            self.fail(reason);
        }
    }

    // ---- outputs -----------------------------------------------------------------------

    /// The next datagram for the server: a hello, the Connect packet, a UDP probe, a packet
    /// of control messages, relayed peer packets and datagrams (or a keepalive), the Close
    /// frame.
    pub(super) fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        relay: &mut impl Relay,
        rng: &mut Rng,
        stats: &mut ClientStats,
    ) -> Poll {
        // The session's own packets stay at the base size (RFC 8899 BASE_PLPMTU: the server
        // path is not probed); relayed peer packets are sized by their relay path's discovery.
        let max = self.config.base_datagram_size().min(buf.len());
        let id = self.id;
        let forced_tcp = self.config.transport == Transport::Tcp;
        let private = self.config.private;
        if let Some(mut l) = self.farewell.take() {
            let code = MOVED_CLOSE_CODE;
            if let Some(len) = l.keys.seal_frames(l.server_session, buf, max, |w| {
                let _ = Frame::Close { code }.encode(w);
            }) {
                let (dst, socket) = (l.server, SocketId::PRIMARY);
                return Poll::Server(Transmit {
                    dst,
                    len,
                    socket,
                    ttl: None,
                });
            }
        }
        let ticket = &self.ticket;
        // (A session whose stream broke keeps naming it until the new one connects: the
        // runtime drops those, as a dead link would. Stream ids are never reused.)
        let (dst, len, socket) = match &mut self.state {
            State::Idle | State::Closed => return Poll::Nothing,
            State::Detached(_) => return Poll::Peers,
            State::Handshaking(h) => {
                if !h.hello_due || (forced_tcp && !h.socket.is_stream()) {
                    // (Forced TCP waits for its stream; peers kept while re-registering carry
                    // on meanwhile.)
                    return Poll::Peers;
                }
                h.hello_due = false;
                h.hello_sent = now;
                let hello = ClientHello {
                    client_session: id,
                    client_ephemeral: h.ephemeral.public(),
                    cookie: h.cookie.as_ref().map_or(&[][..], |c| &c[..]),
                };
                let Ok(len) = hello.encode(buf) else {
                    return Poll::Nothing;
                };
                stats.hellos_sent += 1;
                (h.server, len, h.socket)
            }
            State::Authenticating(a) => {
                if !a.connect_due {
                    return Poll::Peers;
                }
                a.connect_due = false;
                let token = &a.token;
                let l = &mut a.link;
                let Some(len) = l.keys.seal_frames(l.server_session, buf, max, |w| {
                    if let Some(ticket) = ticket {
                        let _ = Frame::Resume { ticket }.encode(w);
                    }
                    // Ahead of Connect, in the same packet: the server knows before the
                    // session exists (so before any pair with it can form).
                    if private {
                        let _ = Frame::Private.encode(w);
                    }
                    let _ = Frame::Connect { token }.encode(w);
                }) else {
                    return Poll::Nothing;
                };
                l.last_send = now;
                (l.server, len, l.socket)
            }
            State::Connected(l) if l.reset_probe_due => {
                // Does the server still have the session (a reset with our token came)? It
                // answers a probe on the path it came from.
                l.reset_probe_due = false;
                let nonce = rng.next_u64();
                let Some(len) = l.keys.seal_frames(l.server_session, buf, max, |w| {
                    let _ = Frame::Probe { nonce }.encode(w);
                }) else {
                    return Poll::Nothing;
                };
                l.last_send = now;
                (l.server, len, l.socket)
            }
            State::Connected(l) if l.probe_due => {
                // Does UDP to the server work (both ways)? The server answers on UDP without
                // moving the session; the answer moves it (`on_probe_ack`).
                l.probe_due = false;
                let nonce = rng.next_u64();
                l.probe_nonce = Some(nonce);
                let Some(len) = l.keys.seal_frames(l.server_session, buf, max, |w| {
                    let _ = Frame::Probe { nonce }.encode(w);
                }) else {
                    return Poll::Nothing;
                };
                stats.udp_probes_sent += 1;
                (l.server, len, SocketId::PRIMARY)
            }
            State::Connected(l)
                if self.outgoing.is_empty() && !l.ping_due && !l.control.wants_transmit(now) =>
            {
                // Nothing for the server itself: a peer packet for it to relay, behind a
                // header tagged with the session's relay key (it forwards it without opening
                // or sealing anything), or the peers' direct traffic.
                // Over UDP a relay path may carry up to the probing ceiling (each peer's
                // discovery says how much); a TCP stream keeps the base.
                let relay_max = if l.socket.is_stream() {
                    max
                } else {
                    self.config.max_datagram_size.min(buf.len())
                };
                let Some(peer_len) =
                    relay.write_relayed(now, &mut buf[RELAY_HEADER_LEN..relay_max])
                else {
                    return Poll::Peers;
                };
                let Some(counter) = l.relay.next_counter() else {
                    return Poll::Nothing; // used up: the session ends by timing out
                };
                let key = &l.relay;
                let tag = |tagged: &[u8; RELAY_TAGGED_LEN]| key.tag(tagged);
                let Ok(len) = encode_relay(
                    &mut buf[..relay_max],
                    l.server_session,
                    counter,
                    peer_len,
                    tag,
                ) else {
                    return Poll::Nothing;
                };
                stats.relayed_out += 1;
                (l.server, len, l.socket)
            }
            State::Connected(l) => {
                let outgoing = &mut self.outgoing;
                let control = &mut l.control;
                let retransmits = control.retransmits;
                let ping_due = l.ping_due;
                let (mut pinged, mut empty) = (false, false);
                let Some(len) = l.keys.seal_frames(l.server_session, buf, max, |w| {
                    control.write(now, w);
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
                }) else {
                    return Poll::Nothing;
                };
                if empty {
                    // Something claimed to have data but wrote none: never send an empty
                    // packet (a caller draining poll_transmit would spin on it).
                    debug_assert!(false, "a component wanted to transmit but wrote nothing");
                    return Poll::Peers;
                }
                if pinged {
                    stats.io.keepalives_sent += 1;
                }
                stats.control_retransmits += l.control.retransmits - retransmits;
                l.ping_due = false;
                l.control_due = false;
                l.last_send = now;
                (l.server, len, l.socket)
            }
            State::Closing(l, code) => {
                let code = *code;
                let Some(len) = l.keys.seal_frames(l.server_session, buf, max, |w| {
                    let _ = Frame::Close { code }.encode(w);
                }) else {
                    return Poll::Nothing;
                };
                let (dst, socket) = (l.server, l.socket);
                self.state = State::Closed;
                // The Close frame is queued on the stream before the stream's close.
                self.tcp.close(None);
                (dst, len, socket)
            }
        };
        Poll::Server(Transmit {
            dst,
            len,
            socket,
            ttl: None,
        })
    }

    /// The next change to the TCP stream (connect it, close it).
    pub(super) fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.tcp.poll_socket_request()
    }

    /// The session's next deadline and what it is for.
    pub(super) fn poll_timeout(&self) -> Option<Timeout> {
        let own = match &self.state {
            State::Idle | State::Closed | State::Closing(..) => None,
            State::Detached(until) => Timeout::min([
                Some(Timeout::new(*until, "pair lifetime")),
                Timeout::at(self.rejoin_at, "re-registration"),
            ]),
            State::Handshaking(h) => Timeout::min([
                Some(Self::retry_or_deadline(
                    &h.retry,
                    h.deadline,
                    "hello retransmit",
                )),
                Timeout::at(h.tcp_at, "tcp fallback"),
                Timeout::at(h.next_at, "next server address"),
            ]),
            State::Authenticating(a) => Some(Self::retry_or_deadline(
                &a.retry,
                a.deadline,
                "connect retransmit",
            )),
            State::Connected(l) => Timeout::min([
                Some(Timeout::new(
                    l.last_recv + self.config.idle_timeout,
                    "idle timeout",
                )),
                Timeout::at(l.reset_check, "stateless reset check"),
                Timeout::at(
                    (!l.ping_due).then(|| l.ping_at(self.config.keepalive_interval)),
                    "keepalive",
                ),
                self.link_tcp_timeout(l),
                Timeout::at(
                    l.control.poll_timeout().filter(|_| !l.control_due),
                    "control retransmit",
                ),
            ]),
        };
        Timeout::min([own, self.tcp.poll_timeout()])
    }

    fn retry_or_deadline(retry: &Backoff, deadline: Instant, what: &'static str) -> Timeout {
        if deadline <= retry.next_at() {
            Timeout::new(deadline, "connect timeout")
        } else {
            Timeout::new(retry.next_at(), what)
        }
    }

    /// A connected link's TCP deadlines: the next UDP probe (on a stream, Auto) or the
    /// instant a quiet server makes a stream worth trying (on UDP, Auto).
    fn link_tcp_timeout(&self, l: &Link) -> Option<Timeout> {
        if self.config.transport != Transport::Auto {
            None
        } else if l.socket.is_stream() {
            Timeout::at((!l.probe_due).then_some(l.probe_at), "udp probe")
        } else if !self.tcp.wanted() {
            Some(Timeout::new(
                l.last_recv + SERVER_QUIET,
                "server quiet: try tcp",
            ))
        } else {
            None
        }
    }

    pub(super) fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoRelay;

    impl Relay for NoRelay {
        fn write_relayed(&mut self, _: Instant, _: &mut [u8]) -> Option<usize> {
            None
        }
    }

    fn server() -> SocketAddr {
        "203.0.113.10:7000".parse().unwrap()
    }

    fn session(transport: Transport) -> (Session, Rng) {
        let cfg = ClientConfig {
            transport,
            ..ClientConfig::default()
        };
        (
            Session::new(Arc::new(cfg)),
            crate::rng::derive(&[4; 32], b"test"),
        )
    }

    /// The hello the session sends now, decoded, if it sends one.
    fn hello(s: &mut Session, now: Instant, rng: &mut Rng) -> Option<(u32, Vec<u8>)> {
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        let mut stats = ClientStats::default();
        match s.poll_transmit(now, &mut buf, &mut NoRelay, rng, &mut stats) {
            Poll::Server(t) => {
                assert_eq!((t.dst, t.socket), (server(), SocketId::PRIMARY));
                let h = ClientHello::decode(&buf[..t.len]).unwrap();
                Some((h.client_session, h.cookie.to_vec()))
            }
            Poll::Peers => None,
            Poll::Nothing => panic!("a handshaking session is not over"),
        }
    }

    #[test]
    fn hellos_go_again_with_backoff_until_the_connect_timeout_fails_the_session() {
        let t0 = crate::tests::epoch();
        let (mut s, mut rng) = session(Transport::Udp);
        s.connect(t0, &[server()], &[], &mut rng);
        assert_eq!(s.phase(), Phase::Handshaking);
        assert!(hello(&mut s, t0, &mut rng).is_some());
        assert!(
            hello(&mut s, t0, &mut rng).is_none(),
            "one per retransmission"
        );
        let mut stats = ClientStats::default();
        let mut hellos = 1;
        let mut last = t0;
        while let Some(t) = s.poll_timeout() {
            if t.reason == "connect timeout" {
                last = t.at;
                break;
            }
            assert_eq!(t.reason, "hello retransmit");
            s.handle_timeout(t.at, &mut rng, &mut stats);
            hellos += usize::from(hello(&mut s, t.at, &mut rng).is_some());
        }
        // 250 ms doubling to 1 s within the default 10 s: 0.25, 0.75, 1.75, 2.75 … 9.75.
        assert_eq!(hellos, 12);
        s.handle_timeout(last, &mut rng, &mut stats);
        assert!(matches!(
            s.poll_event(),
            Some(SessionEvent::Failed {
                reason: DisconnectReason::ConnectTimedOut,
                rejoining: false
            })
        ));
    }

    #[test]
    fn a_loaded_servers_retry_brings_the_hello_again_at_once_with_its_cookie() {
        let t0 = crate::tests::epoch();
        let (mut s, mut rng) = session(Transport::Udp);
        s.connect(t0, &[server()], &[], &mut rng);
        let (id, cookie) = hello(&mut s, t0, &mut rng).unwrap();
        assert!(cookie.is_empty());
        let mut stats = ClientStats::default();
        let retry = Retry {
            client_session: id,
            cookie: [7; COOKIE_LEN],
        };
        // From elsewhere, or for another attempt: ignored and counted.
        let stranger = "192.0.2.1:7000".parse().unwrap();
        s.handle_retry(stranger, &retry, &mut stats);
        let other = Retry {
            client_session: id ^ 1,
            ..retry
        };
        s.handle_retry(server(), &other, &mut stats);
        assert_eq!(stats.dropped.unexpected, 2);
        assert!(hello(&mut s, t0, &mut rng).is_none());
        s.handle_retry(server(), &retry, &mut stats);
        assert_eq!(stats.retries_received, 1);
        assert_eq!(hello(&mut s, t0, &mut rng), Some((id, vec![7; COOKIE_LEN])));
    }

    #[test]
    fn with_auto_transport_a_server_silent_over_udp_brings_a_tcp_stream() {
        let t0 = crate::tests::epoch();
        let (mut s, mut rng) = session(Transport::Auto);
        s.connect(t0, &[server()], &[], &mut rng);
        let fallback = t0 + crate::DEFAULT_TCP_FALLBACK_AFTER;
        let mut stats = ClientStats::default();
        s.handle_timeout(fallback - Duration::from_millis(1), &mut rng, &mut stats);
        assert_eq!(s.poll_socket_request(), None);
        s.handle_timeout(fallback, &mut rng, &mut stats);
        let Some(SocketRequest::Connect { id, addr }) = s.poll_socket_request() else {
            panic!("no stream asked for");
        };
        assert!(id.is_stream());
        assert_eq!(addr, server());
        // Once it connects, hellos go down it.
        s.handle_stream_opened(fallback, id, Ok(()), &mut stats);
        assert!(s.on_tcp());
        assert_eq!(stats.tcp_streams_opened, 1);
        // A transport that is forced to UDP never asks.
        let (mut udp, mut rng) = session(Transport::Udp);
        udp.connect(t0, &[server()], &[], &mut rng);
        udp.handle_timeout(fallback, &mut rng, &mut stats);
        assert_eq!(udp.poll_socket_request(), None);
    }

    #[test]
    fn sealed_packets_are_routed_by_kind_phase_and_path() {
        let t0 = crate::tests::epoch();
        let (mut s, mut rng) = session(Transport::Udp);
        let mut stats = ClientStats::default();
        let peer = SealedHeader {
            peer: true,
            receiver: 5,
            counter: 0,
        };
        let srv = SealedHeader {
            peer: false,
            ..peer
        };
        let from = "198.51.100.3:9000".parse().unwrap();
        let udp = SocketId::PRIMARY;
        assert_eq!(
            s.route(udp, from, &peer, &mut stats),
            Route::Dropped,
            "idle"
        );
        s.connect(t0, &[server()], &[], &mut rng);
        // While the handshake runs (a re-registration keeps its peers), peer packets over UDP
        // go to the peers; anything from the server is unexpected until keys exist.
        assert_eq!(s.route(udp, from, &peer, &mut stats), Route::Peer);
        assert_eq!(
            s.route(SocketId::stream(1), from, &peer, &mut stats),
            Route::Dropped
        );
        assert_eq!(s.route(udp, server(), &srv, &mut stats), Route::Dropped);
        assert_eq!(stats.dropped.unexpected, 3);
    }
}
