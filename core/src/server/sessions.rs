//! Client sessions: the table of every session (half-open, established, closing), their keys
//! and paths, their deadlines, their outboxes and control streams, the round-robin transmit
//! queue, which TCP streams they are on ([`Streams`]), and the handshakes of the half-open
//! ones ([`Handshakes`]: a session is half-open exactly while its handshake is pending, and
//! one owner keeps it so).
//!
//! Deadlines live in one heap, lazily invalidated: a session's entry counts only while it
//! equals the session's `timer`; later entries left behind are skipped when they come up.
//! [`Sessions::poll_due`] walks the expired ones and hands back what only the server can
//! settle (a handshake that expired, a client that timed out or went offline, a ticket to
//! renew), doing the rest (keepalives, control retransmissions) itself.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::Path;
use super::groups::{Card, Roster};
use super::handshake::{Handshakes, Hello};
use super::streams::Streams;
use super::ticket::{self, Ticket};
use crate::arena::Arena;
use crate::config::{MAX_SESSIONS, ServerConfig};
use crate::crypto::PacketKeys;
use crate::error::SendError;
use crate::event::HostId;
use crate::ratelimit::Limiter;
use crate::rng::Rng;
use crate::rudp::stream::ControlStream;
use crate::stats::ServerStats;
use crate::time::{Instant, Timeout};
use crate::wire::control::ControlMsg;
use crate::wire::frame::{DATAGRAM_FRAME_OVERHEAD, Frame, RELAY_FRAME_OVERHEAD};
use crate::wire::handshake::ClientHello;
use crate::wire::sealed::{OVERHEAD, SealedPacket};
use crate::{SocketId, SocketRequest, Transmit};

/// The slot bits of a session id (the rest is the generation's low byte).
const INDEX_MASK: u32 = (MAX_SESSIONS - 1) as u32;

/// Every session, and what goes with them.
pub(super) struct Sessions {
    config: Arc<ServerConfig>,
    slab: Slab<Session>,
    /// Generation of the next session (never 0): makes `HostId`s unique for the life of the
    /// server.
    next_gen: u32,
    /// Sessions whose host id came from a ticket (not derivable from their slot).
    restored: BTreeMap<HostId, usize>,
    /// Established sessions.
    clients: usize,
    /// Session deadlines, lazily invalidated: an entry counts only while it equals the
    /// session's `timer`.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// An established session whose timer fired, part way through: what is left of it is
    /// done on the next [`Sessions::poll_due`] (slot, generation, next step).
    firing: Option<(usize, u32, Step)>,
    /// Sessions with sealed output pending (slot, generation), served round-robin.
    tx_queue: VecDeque<(usize, u32)>,
    /// Copies of outgoing payloads (datagrams, relayed packets).
    send_arena: Arena,
    /// TCP streams: which sessions are on them, when unused ones close.
    streams: Streams,
    /// The half-open sessions' handshakes.
    handshakes: Handshakes,
    /// Clients whose control queue overflowed; the server disconnects them.
    overloaded: Vec<HostId>,
}

/// A session's place in the table, before it is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    /// The slab key.
    pub(super) key: usize,
    /// The generation it will have.
    pub(super) generation: u32,
    /// Our receiver id for it: slot in the low 24 bits, generation bits above.
    pub(super) id: u32,
}

/// What an authentic packet changed, for the server to pass on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Heard {
    /// This client's UDP address changed: its peers must hear.
    pub(super) moved: Option<HostId>,
    /// This client was offline and is back.
    pub(super) back: Option<HostId>,
}

/// A half-open session that connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Joined {
    /// Its client's id (one a ticket gave back, if `resumed`).
    pub(super) host_id: HostId,
    /// Where it connected from.
    pub(super) addr: std::net::SocketAddr,
    /// The user id from its token or ticket.
    pub(super) user_id: Option<u64>,
    /// Its ticket gave it its host id back.
    pub(super) resumed: bool,
}

/// What a frame of a session's packet asks of someone other than the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Routed<'a> {
    /// Nothing: the session took it (or dropped and counted it).
    Done,
    /// The session is gone: the rest of the packet is ignored.
    Gone,
    /// Half-open: a resumption ticket, to check.
    Resume(&'a [u8]),
    /// Half-open: the Connect frame's token.
    Connect(&'a [u8]),
    /// Established: the client closes with `code`.
    Close(u16),
    /// Established: control messages from `from` may be ready
    /// ([`Sessions::poll_delivered`]).
    Control(HostId),
    /// Established: a peer packet to relay.
    Relay {
        /// The client it comes from.
        from: HostId,
        /// Its session's generation.
        generation: u32,
        /// The client it is for.
        to: HostId,
        /// The sealed peer packet.
        packet: &'a [u8],
    },
    /// Established: an application datagram from `from`.
    Datagram {
        /// The client.
        from: HostId,
        /// The payload.
        payload: &'a [u8],
    },
}

/// What came due on a timer that only the server can settle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Session `key`'s client was not heard for the idle timeout: end it.
    TimedOut(usize),
    /// This client was not heard for `offline_after`: its peers must hear.
    Offline(HostId),
    /// Session `key`'s resumption ticket is due for renewal.
    RenewTicket(usize),
}

/// A fired established session's remaining steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Offline,
    Ticket,
    Keepalive,
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
    /// Where the newest authentic packet came from.
    path: Path,
    /// The stream the path is on was closed: nothing is sent until the client's next
    /// authentic packet (from any path) gives it a new one.
    path_closed: bool,
    /// The client's address on UDP, once an authentic UDP packet came from it: the one peers
    /// punch to (for a client on UDP, `path.addr`).
    udp: Option<std::net::SocketAddr>,
    keys: PacketKeys,
    phase: Phase,
    last_recv: Instant,
    last_send: Instant,
    out: Outbox,
    /// In `tx_queue`.
    queued: bool,
    /// The deadline this session has in `timers`, if any, and what it is for.
    timer: Option<Timeout>,
    /// Reliable ordered control messages in both directions.
    control: ControlStream,
    /// Not heard for `offline_after`: its peers were told; cleared by its next packet.
    offline: bool,
}

enum Phase {
    /// ServerHello sent (the handshake's state is the handshake machine's); forgotten at
    /// `expires`.
    HalfOpen { expires: Instant },
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
    /// A path probe to answer where it came from: (path, nonce).
    probe_ack: Option<(Path, u64)>,
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
    /// The next instant this session needs `handle_timeout`, and what for. A control
    /// retransmission that is already due is not a deadline: the session is queued for
    /// transmit instead (a past deadline would make `handle_timeout` spin).
    fn deadline(&self, config: &ServerConfig, now: Instant) -> Timeout {
        match self.phase {
            Phase::HalfOpen { expires } => Timeout::new(expires, "handshake expiry"),
            Phase::Established { .. } => {
                let offline = !self.offline && !config.offline_after.is_zero();
                let renewal = self.ticket_at;
                let renewal = renewal.and_then(|at| ticket::renewal(at, config.ticket_lifetime));
                let idle =
                    Timeout::new(self.last_recv + config.idle_timeout, "client idle timeout");
                Timeout::min([
                    Some(idle),
                    Timeout::at(
                        offline.then(|| self.last_recv + config.offline_after),
                        "client offline check",
                    ),
                    Timeout::at(
                        (!self.out.ping).then(|| self.last_send + config.keepalive_interval),
                        "server keepalive",
                    ),
                    Timeout::at(
                        self.control.next_timeout().filter(|c| *c > now),
                        "control stream retransmission",
                    ),
                    Timeout::at(renewal, "resumption ticket renewal"),
                ])
                .unwrap_or(idle)
            }
            Phase::Closing => Timeout::new(
                self.last_recv + config.idle_timeout,
                "closing session expiry",
            ),
        }
    }
}

impl Sessions {
    /// No sessions; generations start at `first_generation` (random, so that a restarted
    /// server's ids do not collide with the host ids its clients' tickets bring back).
    /// `cookie_key` and `epoch` are for the handshakes' cookies.
    pub(super) fn new(
        config: Arc<ServerConfig>,
        first_generation: u32,
        cookie_key: [u8; 32],
        epoch: Instant,
    ) -> Self {
        Self {
            handshakes: Handshakes::new(config.clone(), cookie_key, epoch),
            config,
            slab: Slab::new(),
            next_gen: first_generation,
            restored: BTreeMap::new(),
            clients: 0,
            timers: BinaryHeap::new(),
            firing: None,
            tx_queue: VecDeque::new(),
            send_arena: Arena::default(),
            streams: Streams::default(),
            overloaded: Vec::new(),
        }
    }

    // ---- the table ---------------------------------------------------------------------

    /// Established sessions.
    pub(super) fn clients(&self) -> usize {
        self.clients
    }

    /// Half-open sessions.
    pub(super) fn half_open(&self) -> usize {
        self.handshakes.len()
    }

    /// Connected clients, in slot order.
    pub(super) fn hosts(&self) -> impl Iterator<Item = HostId> + '_ {
        self.slab
            .iter()
            .filter(|(_, s)| matches!(s.phase, Phase::Established { .. }))
            .map(|(_, s)| s.host)
    }

    /// The slot of `host`'s session, whatever its stage.
    fn key_of(&self, host: HostId) -> Option<usize> {
        key_of(&self.slab, &self.restored, host)
    }

    /// The slot of `host`'s session if it is established.
    pub(super) fn established_key(&self, host: HostId) -> Option<usize> {
        self.established(host).map(|(k, _)| k)
    }

    /// A connected client's path (where its newest packet came from) and its token's user id.
    pub(super) fn client(&self, host: HostId) -> Option<(Path, Option<u64>)> {
        let (_, s) = self.established(host)?;
        match s.phase {
            Phase::Established { user_id } => Some((s.path, user_id)),
            _ => None,
        }
    }

    /// Established session `key`'s client and its token's user id (what its tickets carry).
    pub(super) fn ticket_holder(&self, key: usize) -> Option<(HostId, Option<u64>)> {
        match self.slab.get(key)?.phase {
            Phase::Established { user_id } => Some((self.slab[key].host, user_id)),
            _ => None,
        }
    }

    /// Whether slot `key` is taken.
    pub(super) fn contains(&self, key: usize) -> bool {
        self.slab.contains(key)
    }

    // ---- handshakes --------------------------------------------------------------------

    /// A ClientHello (at least `MIN_CLIENT_HELLO_LEN` bytes) from `path`: the handshakes
    /// decide; a new half-open session takes a slot, after the older attempt it replaces (if
    /// any) is removed.
    pub(super) fn handle_hello(
        &mut self,
        now: Instant,
        path: Path,
        hello: &ClientHello<'_>,
        limiter: &mut Limiter,
        rng: &mut Rng,
        stats: &mut ServerStats,
    ) {
        let replaces = match self
            .handshakes
            .handle_hello(now, path, hello, limiter, stats)
        {
            Hello::Answered => return,
            Hello::New { replaces } => replaces,
        };
        if let Some(old) = replaces {
            self.remove(now, old);
        }
        let slot = self.next_slot();
        let sessions = self.slab.len();
        let Some(half_open) =
            (self.handshakes).accept(now, path, hello, slot, sessions, rng, stats)
        else {
            return;
        };
        self.insert_half_open(
            now,
            slot,
            path,
            hello.client_session,
            half_open.keys,
            half_open.expires,
        );
    }

    /// Half-open session `key` presented a resumption ticket (`None`: a bad one).
    pub(super) fn handle_resume(&mut self, key: usize, ticket: Option<Ticket>) {
        self.handshakes.handle_resume(key, ticket);
    }

    /// Half-open session `key`'s Connect frame with `token`, at `unix_now` (seconds): the
    /// handshakes decide; the session is established and welcomed (returned), or refused.
    pub(super) fn handle_connect(
        &mut self,
        key: usize,
        token: &[u8],
        unix_now: u64,
        stats: &mut ServerStats,
    ) -> Option<Joined> {
        let (slab, restored) = (&self.slab, &self.restored);
        let host_free = |h| key_of(slab, restored, h).is_none();
        let verdict =
            (self.handshakes).handle_connect(key, token, unix_now, self.clients, host_free, stats);
        match verdict {
            Ok(welcome) => {
                let (host_id, addr) = self.establish(key, welcome.user_id, welcome.resume);
                Some(Joined {
                    host_id,
                    addr,
                    user_id: welcome.user_id,
                    resumed: welcome.resume.is_some(),
                })
            }
            Err(reason) => {
                self.reject(key, reason.code());
                None
            }
        }
    }

    /// The next ServerHello or Retry to send.
    pub(super) fn poll_handshake(
        &mut self,
        buf: &mut [u8],
        stats: &mut ServerStats,
    ) -> Option<Transmit> {
        self.handshakes.poll_transmit(buf, stats)
    }

    // ---- lifecycle ---------------------------------------------------------------------

    /// The slot, generation and id the next half-open session will have (skipping host ids
    /// that tickets gave back).
    fn next_slot(&self) -> Slot {
        let key = self.slab.vacant_key();
        let mut generation = self.next_gen;
        while self
            .restored
            .contains_key(&HostId((u64::from(generation) << 32) | key as u64))
        {
            generation = generation.wrapping_add(1).max(1);
        }
        Slot {
            key,
            generation,
            id: (key as u32 & INDEX_MASK) | (generation << 24),
        }
    }

    /// A new half-open session in `slot` (from [`Sessions::next_slot`]) for a client at
    /// `path`, keyed `keys`, forgotten at `expires` unless it connects.
    fn insert_half_open(
        &mut self,
        now: Instant,
        slot: Slot,
        path: Path,
        client_session: u32,
        keys: PacketKeys,
        expires: Instant,
    ) {
        debug_assert_eq!(slot, self.next_slot());
        self.next_gen = slot.generation.wrapping_add(1).max(1);
        let key = self.slab.insert(Session {
            generation: slot.generation,
            host: HostId((u64::from(slot.generation) << 32) | slot.key as u64),
            ticket_at: None,
            id: slot.id,
            client_session,
            path,
            path_closed: false,
            udp: (!path.socket.is_stream()).then_some(path.addr),
            keys,
            phase: Phase::HalfOpen { expires },
            last_recv: now,
            last_send: now,
            out: Outbox::default(),
            queued: false,
            timer: None,
            control: ControlStream::new(self.config.max_queued_control_per_client),
            offline: false,
        });
        if path.socket.is_stream() {
            self.streams.claim(path.socket, key);
        }
        self.schedule(now, key);
    }

    /// Half-open session `key` connected: it is established (with the host id `resume`
    /// gives back, if any) and welcomed. Returns its client and address.
    fn establish(
        &mut self,
        key: usize,
        user_id: Option<u64>,
        resume: Option<HostId>,
    ) -> (HostId, std::net::SocketAddr) {
        let s = &mut self.slab[key];
        if let Some(host) = resume {
            s.host = host;
            self.restored.insert(host, key);
        }
        s.phase = Phase::Established { user_id };
        s.out.welcome = true;
        // Reschedule from scratch: the half-open expiry no longer applies.
        s.timer = None;
        let done = (s.host, s.path.addr);
        self.clients += 1;
        self.enqueue(key);
        done
    }

    /// Half-open session `key` is refused with reason `code`: one Reject frame, then gone.
    fn reject(&mut self, key: usize, code: u8) {
        let s = &mut self.slab[key];
        s.phase = Phase::Closing;
        s.out.reject = Some(code);
        s.timer = None;
        self.enqueue(key);
    }

    /// Session `key`'s client is ending: no longer established. Returns it, or `None` if the
    /// session was not established.
    pub(super) fn end(&mut self, key: usize) -> Option<HostId> {
        let s = &mut self.slab[key];
        if !matches!(s.phase, Phase::Established { .. }) {
            return None;
        }
        s.phase = Phase::Closing;
        self.clients -= 1;
        Some(s.host)
    }

    /// Ending session `key` sends one Close frame with `code` (and nothing else), then goes.
    pub(super) fn close(&mut self, key: usize, code: u16) {
        self.slab[key].out = Outbox {
            close: Some(code),
            ..Outbox::default()
        };
        self.enqueue(key);
    }

    /// Forgets session `key` (and its handshake, if it was half-open). Established clients
    /// are ended first ([`Sessions::end`]).
    pub(super) fn remove(&mut self, now: Instant, key: usize) {
        let s = self.slab.remove(key);
        self.handshakes.forget(key);
        if s.path.socket.is_stream() {
            self.streams.release(now, s.path.socket, key, true);
        }
        if self.restored.get(&s.host) == Some(&key) {
            self.restored.remove(&s.host);
        }
    }

    // ---- receive -----------------------------------------------------------------------

    /// Opens a sealed packet for one of our sessions into `scratch`: its slot and plaintext.
    /// Unknown sessions and packets that do not open are dropped and counted.
    pub(super) fn open<'s>(
        &mut self,
        packet: &SealedPacket<'_>,
        scratch: &'s mut [u8],
        stats: &mut ServerStats,
    ) -> Option<(usize, &'s [u8])> {
        let key = (packet.header.receiver & INDEX_MASK) as usize;
        let Some(s) = self
            .slab
            .get_mut(key)
            .filter(|s| s.id == packet.header.receiver)
        else {
            stats.dropped.unknown_session += 1;
            return None;
        };
        match s.keys.open(packet, scratch) {
            Err(e) => {
                stats.dropped.count_open(e);
                None
            }
            Ok(plaintext) => Some((key, plaintext)),
        }
    }

    /// Session `key` opened packet number `counter` that came in on `path`; `probe`: it
    /// carries a path probe. The client is heard: it is back if it was offline; the session
    /// follows it to a new path (address, or transport) only on its newest packet, so a
    /// delayed or re-sent older packet cannot move it; and never on a probe: a client on TCP
    /// checks UDP with probes, and moves only once the answer came back (UDP may work one way
    /// only).
    pub(super) fn heard(
        &mut self,
        now: Instant,
        key: usize,
        path: Path,
        counter: u64,
        probe: bool,
        stats: &mut ServerStats,
    ) -> Heard {
        let s = &mut self.slab[key];
        let mut heard = Heard::default();
        s.last_recv = now;
        if s.offline {
            s.offline = false;
            heard.back = Some(s.host);
            // Answer at once: the client learns its network is back (and restarts its peers'
            // retransmissions) without waiting for our keepalive.
            s.out.ping = true;
        }
        let newest = s.keys.highest_received() == Some(counter);
        let changed = path != s.path || s.path_closed;
        if newest && changed && !probe {
            self.handshakes.moved(key, path);
            if path.socket != s.path.socket {
                stats.transport_changes += 1;
                if s.path.socket.is_stream() {
                    self.streams.release(now, s.path.socket, key, false);
                }
            }
            if path.socket.is_stream() {
                // (Again, too, for a session heard anew on a stream reported closed.)
                self.streams.claim(path.socket, key);
            }
            s.path = path;
            s.path_closed = false;
        }
        // Peers punch to the client's UDP address: they hear when it changes.
        if newest && !path.socket.is_stream() && s.udp != Some(path.addr) {
            s.udp = Some(path.addr);
            stats.address_changes += 1;
            if matches!(s.phase, Phase::Established { .. }) {
                heard.moved = Some(s.host);
            }
        }
        heard
    }

    /// A frame of session `key`'s authentic packet from `path`, by the session's stage when
    /// it comes up: what is the session's own business is done here (keepalives, probes,
    /// control stream data and acks, a lost Welcome); the rest goes back to the server.
    pub(super) fn handle_frame<'a>(
        &mut self,
        now: Instant,
        key: usize,
        path: Path,
        frame: Frame<'a>,
        stats: &mut ServerStats,
    ) -> Routed<'a> {
        let Some(s) = self.slab.get_mut(key) else {
            return Routed::Gone;
        };
        let half_open = matches!(s.phase, Phase::HalfOpen { .. });
        let established = matches!(s.phase, Phase::Established { .. });
        match frame {
            Frame::Padding(_) => {}
            Frame::Resume { ticket } if half_open => return Routed::Resume(ticket),
            Frame::Resume { .. } if established => {}
            Frame::Connect { token } if half_open => return Routed::Connect(token),
            Frame::Connect { .. } if established => {
                // Our Welcome was lost and the client retried.
                s.out.welcome = true;
                self.enqueue(key);
            }
            Frame::Ping if established => stats.io.keepalives_received += 1,
            Frame::Probe { nonce } if established && !path.socket.is_stream() => {
                // Answered on the path it came from; one answer pending per session at
                // most (the latest probe's).
                s.out.probe_ack = Some((path, nonce));
                self.enqueue(key);
            }
            Frame::Close { code } if established => return Routed::Close(code),
            Frame::Close { .. } if half_open => {
                self.remove(now, key);
                return Routed::Gone;
            }
            Frame::Stream { seq, data } if established => {
                s.control.on_data(seq, data);
                let from = s.host;
                self.enqueue(key);
                return Routed::Control(from);
            }
            Frame::StreamAck { next, mask } if established => s.control.on_ack(now, next, mask),
            Frame::Relay { to, packet } if established => {
                return Routed::Relay {
                    from: s.host,
                    generation: s.generation,
                    to: HostId(to),
                    packet,
                };
            }
            Frame::Datagram { payload } if established => {
                return Routed::Datagram {
                    from: s.host,
                    payload,
                };
            }
            _ => stats.dropped.unexpected += 1,
        }
        Routed::Done
    }

    /// The next control message session `key`'s client sent, in order.
    pub(super) fn poll_delivered(&mut self, key: usize) -> Option<Bytes> {
        self.slab.get_mut(key)?.control.poll_delivered()
    }

    // ---- output ------------------------------------------------------------------------

    /// Largest payload [`Sessions::send_datagram`] takes.
    pub(super) fn max_payload(&self) -> usize {
        self.config.max_datagram_size - OVERHEAD - DATAGRAM_FRAME_OVERHEAD
    }

    /// Largest payload [`Sessions::send_reliable`] takes.
    pub(super) fn max_reliable_payload(&self) -> usize {
        self.config.max_datagram_size
            - OVERHEAD
            - crate::wire::frame::STREAM_FRAME_OVERHEAD
            - 1
            - crate::wire::frame::STREAM_ACK_FRAME_LEN
    }

    /// Queues an unreliable datagram for a connected client.
    pub(super) fn send_datagram(&mut self, to: HostId, payload: &[u8]) -> Result<(), SendError> {
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
        self.slab[key].out.datagrams.push_back(b);
        self.enqueue(key);
        Ok(())
    }

    /// Queues an application message on a connected client's control stream.
    pub(super) fn send_reliable(
        &mut self,
        now: Instant,
        to: HostId,
        payload: &[u8],
    ) -> Result<(), SendError> {
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
        self.schedule(now, key);
        Ok(())
    }

    /// Queues encoded control message `msg` for a connected client (for anyone else it is
    /// dropped). A client too far behind to take it is reported by
    /// [`Sessions::poll_overloaded`].
    pub(super) fn send_control(&mut self, now: Instant, to: HostId, msg: &[u8]) {
        let Some((key, s)) = self.established_mut(to) else {
            return;
        };
        if s.control.push(msg).is_err() {
            self.overloaded.push(to);
            return;
        }
        self.enqueue(key);
        self.schedule(now, key);
    }

    /// Sends session `key`'s client the resumption ticket `sealed` (just issued at `now`).
    pub(super) fn send_ticket(&mut self, now: Instant, key: usize, sealed: &[u8]) {
        let s = &mut self.slab[key];
        s.ticket_at = Some(now);
        let host = s.host;
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        if let Ok(n) = (ControlMsg::Ticket { ticket: sealed }).encode(&mut buf) {
            self.send_control(now, host, &buf[..n]);
        }
    }

    /// A relayed peer packet for session `key` from client `from`, unless its relay queue is
    /// full.
    pub(super) fn push_relayed(
        &mut self,
        key: usize,
        from: HostId,
        packet: &[u8],
        stats: &mut ServerStats,
    ) {
        if self.slab[key].out.relayed.len() >= self.config.max_queued_relay_per_client {
            stats.dropped.queue_full += 1;
            return;
        }
        let bytes = self.send_arena.copy(packet);
        self.slab[key].out.relayed.push_back((from, bytes));
        self.enqueue(key);
    }

    /// A client whose control queue overflowed (since the last call), to be disconnected.
    pub(super) fn poll_overloaded(&mut self) -> Option<HostId> {
        self.overloaded.pop()
    }

    /// Session `key` has something to send (if its slot is taken).
    pub(super) fn enqueue(&mut self, key: usize) {
        let Some(s) = self.slab.get_mut(key) else {
            return;
        };
        if !s.queued {
            s.queued = true;
            self.tx_queue.push_back((key, s.generation));
        }
    }

    /// Makes sure `timers` holds an entry no later than session `key`'s deadline.
    pub(super) fn schedule(&mut self, now: Instant, key: usize) {
        let s = &mut self.slab[key];
        let d = s.deadline(&self.config, now);
        if s.timer.is_none_or(|t| d.at < t.at) {
            s.timer = Some(d);
            self.timers.push(Reverse((d.at, key, s.generation)));
        }
    }

    // ---- TCP streams -------------------------------------------------------------------

    /// The runtime accepted stream `id` from `ip`. False if it was closed at once (that IP
    /// holds too many streams without a session).
    pub(super) fn handle_stream_accepted(
        &mut self,
        now: Instant,
        id: SocketId,
        ip: IpAddr,
    ) -> bool {
        self.streams.accepted(now, id, ip)
    }

    /// Stream `id` ended: the sessions whose path it was send nothing until their client is
    /// heard again; half-open ones are removed (their client starts over on a new stream).
    pub(super) fn handle_stream_closed(
        &mut self,
        now: Instant,
        id: SocketId,
        stats: &mut ServerStats,
    ) {
        for key in self.streams.closed(id) {
            let Some(s) = self.slab.get_mut(key).filter(|s| s.path.socket == id) else {
                continue;
            };
            if let Phase::HalfOpen { .. } = s.phase {
                self.remove(now, key);
            } else {
                s.path_closed = true;
                stats.stream_paths_closed += 1;
            }
        }
    }

    /// The next stream to close.
    pub(super) fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.streams.poll_request()
    }

    // ---- time --------------------------------------------------------------------------

    /// Closes the streams nobody claimed in time. Then [`Sessions::poll_due`] walks the
    /// sessions' deadlines.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.streams.handle_timeout(now);
    }

    /// The next expired deadline's business that only the server can settle, if any:
    /// everything else due by `now` is done on the way (keepalives queued, retransmissions
    /// queued, closing sessions removed, deadlines moved on). Call until `None`.
    pub(super) fn poll_due(&mut self, now: Instant, stats: &mut ServerStats) -> Option<Due> {
        loop {
            if let Some((key, generation, step)) = self.firing.take() {
                match self.fire(now, key, generation, step, stats) {
                    Some(due) => return Some(due),
                    None => continue,
                }
            }
            let &Reverse((at, key, generation)) = self.timers.peek()?;
            if at > now {
                return None;
            }
            self.timers.pop();
            let live = self
                .slab
                .get_mut(key)
                .filter(|s| s.generation == generation && s.timer.map(|t| t.at) == Some(at));
            let Some(s) = live else { continue };
            s.timer = None;
            let idle_deadline = s.last_recv + self.config.idle_timeout;
            match s.phase {
                Phase::HalfOpen { expires } if now >= expires => {
                    self.remove(now, key);
                    stats.handshakes_expired += 1;
                }
                Phase::Established { .. } if now >= idle_deadline => {
                    stats.clients_timed_out += 1;
                    return Some(Due::TimedOut(key));
                }
                Phase::Established { .. } => self.firing = Some((key, generation, Step::Offline)),
                Phase::Closing if now >= idle_deadline => self.remove(now, key),
                Phase::HalfOpen { .. } | Phase::Closing => self.schedule(now, key),
            }
        }
    }

    /// Carries on with fired established session `key` from `step`.
    fn fire(
        &mut self,
        now: Instant,
        key: usize,
        generation: u32,
        step: Step,
        stats: &mut ServerStats,
    ) -> Option<Due> {
        let config = &*self.config;
        let s = self
            .slab
            .get_mut(key)
            .filter(|s| s.generation == generation)?;
        if step == Step::Offline {
            self.firing = Some((key, generation, Step::Ticket));
            let offline_after = config.offline_after;
            if !s.offline && !offline_after.is_zero() && now >= s.last_recv + offline_after {
                s.offline = true;
                stats.clients_offline += 1;
                return Some(Due::Offline(s.host));
            }
        }
        if step <= Step::Ticket {
            self.firing = Some((key, generation, Step::Keepalive));
            if s.ticket_at
                .and_then(|at| ticket::renewal(at, config.ticket_lifetime))
                .is_some_and(|at| now >= at)
            {
                return Some(Due::RenewTicket(key));
            }
        }
        self.firing = None;
        if now >= s.last_send + config.keepalive_interval && !s.out.ping {
            s.out.ping = true;
            self.enqueue(key);
        }
        if self.slab[key].control.wants_transmit(now) {
            self.enqueue(key);
        }
        self.schedule(now, key);
        None
    }

    /// The earliest deadline (of the sessions' and the streams'), and what it is for.
    ///
    /// Deadlines are kept lazily: after a session ends or its deadline moves, the old one may
    /// still be reported once; waking for it is harmless and clears it.
    pub(super) fn poll_timeout(&self) -> Option<Timeout> {
        let timer = self.timers.peek().map(|&Reverse((at, key, generation))| {
            self.slab
                .get(key)
                .filter(|s| s.generation == generation)
                .and_then(|s| s.timer)
                .filter(|t| t.at == at)
                .unwrap_or_else(|| Timeout::new(at, "stale session deadline"))
        });
        Timeout::min([timer, self.streams.poll_timeout()])
    }

    // ---- transmit ----------------------------------------------------------------------

    /// Seals the next session's pending output into `buf`, round-robin.
    pub(super) fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        stats: &mut ServerStats,
    ) -> Option<Transmit> {
        let max = self.config.max_datagram_size.min(buf.len());
        while let Some((key, generation)) = self.tx_queue.pop_front() {
            let Some(s) = self
                .slab
                .get_mut(key)
                .filter(|s| s.generation == generation)
            else {
                continue;
            };
            s.queued = false;
            if let Some((path, nonce)) = s.out.probe_ack.take() {
                // Answered on the path it came from, alone: it tells the client that path
                // works both ways. Authenticated, and no larger than the probe.
                let sealed = s.keys.seal_frames(s.client_session, buf, max, |w| {
                    let _ = Frame::ProbeAck { nonce }.encode(w);
                });
                if !s.out.is_empty() || s.control.wants_transmit(now) {
                    self.enqueue(key);
                }
                if let Some(len) = sealed {
                    stats.path_probes_answered += 1;
                    return Some(Transmit {
                        dst: path.addr,
                        len,
                        socket: path.socket,
                    });
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
            let host_id = s.host;
            let path = s.path;
            let observed = s.udp.unwrap_or(path.addr);
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
            stats.control_retransmits += s.control.retransmits - retransmits_before;
            stats.relayed_packets += relayed.0;
            stats.relayed_bytes += relayed.1;
            if pinged {
                stats.io.keepalives_sent += 1;
            }
            if final_frame {
                self.remove(now, key);
            } else {
                let s = &self.slab[key];
                if !s.out.is_empty() || s.control.wants_transmit(now) {
                    self.enqueue(key);
                }
                self.schedule(now, key);
            }
            return Some(Transmit {
                dst: path.addr,
                len,
                socket: path.socket,
            });
        }
        None
    }

    // ---- internals ---------------------------------------------------------------------

    fn established(&self, host: HostId) -> Option<(usize, &Session)> {
        let key = self.key_of(host)?;
        let s = self.slab.get(key)?;
        matches!(s.phase, Phase::Established { .. }).then_some((key, s))
    }

    fn established_mut(&mut self, host: HostId) -> Option<(usize, &mut Session)> {
        let key = self.key_of(host)?;
        let s = self.slab.get_mut(key)?;
        matches!(s.phase, Phase::Established { .. }).then_some((key, s))
    }
}

/// The slot of `host`'s session in `slab`, whatever its stage.
fn key_of(slab: &Slab<Session>, restored: &BTreeMap<HostId, usize>, host: HostId) -> Option<usize> {
    let key = (host.0 & u64::from(u32::MAX)) as usize;
    if slab.get(key).is_some_and(|s| s.host == host) {
        Some(key)
    } else {
        restored.get(&host).copied()
    }
}

impl Roster for Sessions {
    fn card(&self, host: HostId) -> Option<Card> {
        let (_, s) = self.established(host)?;
        Some(Card {
            addr: s.udp.unwrap_or(s.path.addr),
            offline: s.offline,
            srtt: s.control.srtt(),
        })
    }
}
