//! Client sessions: the table of every [`Session`] (half-open, established, closing), their
//! deadlines, the round-robin transmit queue, and what goes with a session's life: which TCP
//! streams they are on ([`Streams`]), the half-open ones' handshakes ([`Handshakes`]: a
//! session is half-open exactly while its handshake is pending, and one owner keeps it so),
//! and resumption tickets ([`Tickets`]: checked at a handshake, issued at its end, renewed on
//! a session's timer).
//!
//! Deadlines live in one heap, lazily invalidated: an entry counts only while it equals its
//! session's timer; entries left behind are skipped (and reported as stale) when they come
//! up. [`Sessions::poll_due`] walks the expired ones and hands back only what the server must
//! settle (a client that timed out or went offline), doing the rest itself.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use rand::RngCore;
use slab::Slab;
use smallvec::SmallVec;

use super::forward::Update;
use super::groups::{Card, Roster};
use super::handshake::{Accepted, Handshakes, Hello};
use super::session::{Handled, Heard, Path, Routed, Sealed, Session};
use super::streams::Streams;
use super::ticket::{Ticket, Tickets};
use crate::arena::Arena;
use crate::config::{MAX_SESSIONS, ServerConfig};
use crate::crypto::ResetKey;

use crate::error::SendError;
use crate::event::{HostId, ServerEvent};
use crate::rng::Rng;
use crate::stats::ServerStats;
use crate::time::{Duration, Instant, Timeout};
use crate::wire::control::ControlMsg;
use crate::wire::frame::{DATAGRAM_FRAME_OVERHEAD, Frame};
use crate::wire::handshake::ClientHello;
use crate::wire::sealed::{OVERHEAD, SealedPacket};
use crate::wire::stun::StunCredential;
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
    /// A cluster node's number ([`Sessions::set_node_number`]): the high 16 bits of every
    /// host id it issues.
    node_number: Option<u16>,
    /// Established sessions.
    clients: usize,
    /// Session deadlines (instant, slot, generation), lazily invalidated.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// An established session whose timer fired and went offline: the rest of its timer
    /// (ticket renewal if `true`, keepalive) is done on the next [`Sessions::poll_due`], after
    /// the server told its peers.
    firing: Option<(usize, u32, bool)>,
    /// Sessions with output pending (slot, generation), served round-robin.
    tx_queue: VecDeque<(usize, u32)>,
    /// Copies of outgoing payloads (datagrams, relayed packets).
    send_arena: Arena,
    /// TCP streams: which sessions are on them, when unused ones close.
    streams: Streams,
    /// The half-open sessions' handshakes.
    handshakes: Handshakes,
    /// Resumption tickets.
    tickets: Tickets,
    /// Makes each session's stateless reset token, sent to its client in the Welcome.
    reset_key: ResetKey,
    /// The instant `unix_base` was taken at.
    epoch: Instant,
    /// Wall-clock time (since the Unix epoch) at `epoch`; for token and ticket expiry only.
    unix_base: Duration,
    /// Clients whose control queue overflowed; the server disconnects them.
    overloaded: Vec<HostId>,
    /// What the relay forwarders must learn (sessions established, moved, ended), in order.
    forward: VecDeque<Update>,
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

/// What came due on a timer that only the server can settle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Session `key`'s client was not heard for the idle timeout: end it.
    TimedOut(usize),
    /// This client was not heard for `offline_after`: its peers must hear.
    Offline(HostId),
}

impl Sessions {
    /// No sessions, at `now`, the wall-clock time then being `unix_time` (for token and
    /// ticket expiry). Draws the handshakes' cookie key, then the first generation, from
    /// `rng` (random, so that a restarted server's ids do not collide with the host ids its
    /// clients' tickets bring back).
    pub(super) fn new(
        config: Arc<ServerConfig>,
        rng: &mut Rng,
        now: Instant,
        unix_time: Duration,
    ) -> Self {
        let mut cookie_key = [0u8; 32];
        rng.fill_bytes(&mut cookie_key);
        let first_generation = rng.next_u32().max(1);
        Self {
            handshakes: Handshakes::new(config.clone(), cookie_key, now),
            tickets: Tickets::new(&config.secret_key, config.ticket_lifetime),
            reset_key: ResetKey::derive(&config.secret_key),
            streams: Streams::new(config.max_sessionless_streams),
            config,
            slab: Slab::new(),
            next_gen: first_generation,
            restored: BTreeMap::new(),
            node_number: None,
            clients: 0,
            timers: BinaryHeap::new(),
            firing: None,
            tx_queue: VecDeque::new(),
            send_arena: Arena::default(),
            epoch: now,
            unix_base: unix_time,
            overloaded: Vec::new(),
            forward: VecDeque::new(),
        }
    }

    // ---- getters -----------------------------------------------------------------------

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
            .filter(|(_, s)| s.is_established())
            .map(|(_, s)| s.host())
    }

    /// The slot of `host`'s session if it is established.
    /// From now on new sessions are refused ([`crate::RejectReason::Draining`]).
    /// From now on every host id this server issues has `number` in its high 16 bits (a
    /// cluster node's number, unique in the cluster: host ids are then unique cluster-wide),
    /// and Connects are taken (see [`Handshakes::set_ready`]).
    pub(super) fn set_node_number(&mut self, number: u16) {
        self.node_number = Some(number);
        self.handshakes.set_ready(true);
    }

    /// Connects are refused until [`Sessions::set_node_number`].
    pub(super) fn await_node_number(&mut self) {
        self.handshakes.set_ready(false);
    }

    /// Whether a Connect now would be taken as far as the server's state goes (not
    /// draining, not waiting for its number, not full; its token is checked later).
    pub(super) fn would_accept(&self) -> bool {
        self.handshakes.accepting() && self.clients < self.config.max_clients
    }

    /// Half-open session `key`'s id and the valid ticket it presented, if any.
    pub(super) fn presented_ticket(&self, key: usize) -> Option<(u32, Ticket)> {
        let s = self.slab.get(key)?;
        Some((s.id(), self.handshakes.ticket_of(key)?))
    }

    /// Whether session `key` is still the half-open one with id `id`.
    pub(super) fn still_half_open(&self, key: usize, id: u32) -> bool {
        (self.slab.get(key)).is_some_and(|s| s.id() == id && s.is_half_open())
    }

    /// Half-open session `key`'s ticket was used before elsewhere in the cluster: it gets no
    /// host id back (counted as a bad ticket).
    pub(super) fn refuse_ticket(&mut self, key: usize, stats: &mut ServerStats) {
        self.handshakes.handle_resume(key, None);
        stats.dropped.bad_tickets += 1;
    }

    /// How long more ticket `t` is good for, at `now`.
    pub(super) fn ticket_ttl(&self, now: Instant, t: &Ticket) -> Duration {
        Duration::from_secs(t.expires.saturating_sub(self.unix_secs(now)))
    }

    pub(super) fn set_draining(&mut self) {
        self.handshakes.set_draining();
    }

    pub(super) fn established_key(&self, host: HostId) -> Option<usize> {
        self.established(host).map(|(k, _)| k)
    }

    /// A connected client's path (where its newest packet came from) and its token's user id.
    pub(super) fn client(&self, host: HostId) -> Option<(Path, Option<u64>)> {
        let (_, s) = self.established(host)?;
        Some((s.path(), s.user_id()?))
    }

    /// Whether slot `key` is taken.
    pub(super) fn contains(&self, key: usize) -> bool {
        self.slab.contains(key)
    }

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

    // ---- handshakes --------------------------------------------------------------------

    /// A ClientHello (at least `MIN_CLIENT_HELLO_LEN` bytes) from `path`: the handshakes
    /// decide; a new half-open session takes a slot, after the older attempt it replaces (if
    /// any) is removed.
    pub(super) fn handle_hello(
        &mut self,
        now: Instant,
        path: Path,
        hello: &ClientHello<'_>,
        rng: &mut Rng,
        stats: &mut ServerStats,
    ) {
        let (replaces, proven) = match self.handshakes.handle_hello(now, path, hello, stats) {
            Hello::Answered => return,
            Hello::New { replaces, proven } => (replaces, proven),
        };
        if let Some(old) = replaces {
            self.remove(now, old);
        }
        let slot = self.next_slot();
        let sessions = self.slab.len();
        let handshakes = &mut self.handshakes;
        let Some(half_open) =
            handshakes.accept(now, path, hello, proven, slot, sessions, rng, stats)
        else {
            return;
        };
        self.insert(now, slot, path, hello.client_session, half_open);
    }

    /// The next ServerHello or Retry to send.
    pub(super) fn poll_handshake(
        &mut self,
        buf: &mut [u8],
        stats: &mut ServerStats,
    ) -> Option<Transmit> {
        self.handshakes.poll_transmit(buf, stats)
    }

    /// Half-open session `key`'s Connect frame with `token`: the handshakes decide; the
    /// session is established, welcomed and given a ticket (drawn from `rng`), or refused.
    /// Returns what the application hears.
    pub(super) fn handle_connect(
        &mut self,
        now: Instant,
        key: usize,
        token: &[u8],
        rng: &mut Rng,
        stats: &mut ServerStats,
    ) -> SmallVec<[ServerEvent; 2]> {
        let unix = self.unix_secs(now);
        let (slab, restored) = (&self.slab, &self.restored);
        let host_free = |h| key_of(slab, restored, h).is_none();
        let clients = self.clients;
        let verdict = (self.handshakes).handle_connect(key, token, unix, clients, host_free, stats);
        let welcome = match verdict {
            Ok(welcome) => welcome,
            Err(reason) => {
                self.slab[key].reject(reason.code());
                self.enqueue(key);
                return SmallVec::new();
            }
        };
        let s = &mut self.slab[key];
        // The Welcome carries the token a restart of this server (same key) would answer the
        // client's packets with.
        let reset_token = self.reset_key.token(s.id());
        s.establish(welcome.user_id, welcome.resume, reset_token);
        if let Some(host) = welcome.resume {
            self.restored.insert(host, key);
        }
        let host_id = s.host();
        self.forward.push_back(s.forward_update());
        let mut events = SmallVec::new();
        events.push(ServerEvent::ClientJoined {
            host_id,
            addr: s.path().addr,
            user_id: welcome.user_id,
        });
        if welcome.resume.is_some() {
            events.push(ServerEvent::ClientResumed { host_id });
        }
        self.clients += 1;
        let socket = self.slab[key].path().socket;
        if socket.is_stream() {
            self.streams.settled(socket); // (out of the TCP admission pool)
        }
        self.enqueue(key);
        self.issue_ticket(now, key, rng);
        events
    }

    // ---- lifecycle ---------------------------------------------------------------------

    /// Session `key`'s client is ending: no longer established. Returns it, or `None` if the
    /// session was not established.
    pub(super) fn end(&mut self, key: usize) -> Option<HostId> {
        let s = &mut self.slab[key];
        if !s.end() {
            return None;
        }
        self.clients -= 1;
        self.forward.push_back(Update::ClientGone {
            session: s.id(),
            host: s.host(),
        });
        Some(s.host())
    }

    /// Ending session `key` sends one Close frame with `code` (and nothing else), then goes.
    pub(super) fn close(&mut self, key: usize, code: u16) {
        self.slab[key].close(code);
        self.enqueue(key);
    }

    /// Forgets session `key` (and its handshake, if it was half-open). Established clients
    /// are ended first ([`Sessions::end`]).
    pub(super) fn remove(&mut self, now: Instant, key: usize) {
        let s = self.slab.remove(key);
        self.handshakes.forget(key);
        let socket = s.path().socket;
        if socket.is_stream() {
            self.streams.release(now, socket, key, true);
        }
        if self.restored.get(&s.host()) == Some(&key) {
            self.restored.remove(&s.host());
        }
    }

    // ---- receive -----------------------------------------------------------------------

    /// A forwarder checked a relay packet of session `session` that came at `at` on `path`
    /// (`newest`: with its highest relay counter so far): its client was heard. Returns the
    /// session's slot and what hearing it changed; `None` if the session is gone or not
    /// established (the report came late).
    pub(super) fn heard_relay(
        &mut self,
        at: Instant,
        session: u32,
        path: Path,
        newest: bool,
        stats: &mut ServerStats,
    ) -> Option<(usize, Heard)> {
        let key = (session & INDEX_MASK) as usize;
        let s = (self.slab)
            .get_mut(key)
            .filter(|s| s.id() == session && s.is_established())?;
        let heard = s.heard_relay(at, path, newest, stats);
        self.followed(at, key, path, heard);
        Some((key, heard))
    }

    /// The STUN credential of established session `id`, if there is one.
    pub(super) fn stun_credential(&self, id: u32) -> Option<&StunCredential> {
        let key = (id & INDEX_MASK) as usize;
        (self.slab.get(key))
            .filter(|s| s.id() == id && s.is_established())
            .map(Session::stun_credential)
    }

    /// Whether `id` names one of our sessions (half-open or established).
    pub(super) fn knows(&self, id: u32) -> bool {
        let key = (id & INDEX_MASK) as usize;
        self.slab.get(key).is_some_and(|s| s.id() == id)
    }

    /// Opens a sealed packet for one of our sessions into `scratch`: its slot and plaintext.
    /// Peer packets, unknown sessions and packets that do not open are dropped and counted.
    pub(super) fn open<'s>(
        &mut self,
        packet: &SealedPacket<'_>,
        scratch: &'s mut [u8],
        stats: &mut ServerStats,
    ) -> Option<(usize, &'s [u8])> {
        if packet.header.peer {
            // Peer packets reach the server only behind a relay header (or in Relay frames).
            stats.dropped.unexpected += 1;
            return None;
        }
        let key = (packet.header.receiver & INDEX_MASK) as usize;
        let Some(s) = (self.slab)
            .get_mut(key)
            .filter(|s| s.id() == packet.header.receiver)
        else {
            stats.dropped.unknown_session += 1;
            return None;
        };
        match s.open(packet, scratch) {
            Err(e) => {
                stats.dropped.count_open(e);
                None
            }
            Ok(plaintext) => Some((key, plaintext)),
        }
    }

    /// Session `key` opened packet number `counter` that came in on `path`; `probe`: it
    /// carries a path probe (see [`Session::heard`]). A session that follows its client to a
    /// new path takes its handshake and its TCP streams along.
    pub(super) fn heard(
        &mut self,
        now: Instant,
        key: usize,
        path: Path,
        counter: u64,
        probe: bool,
        stats: &mut ServerStats,
    ) -> Heard {
        let heard = self.slab[key].heard(now, path, counter, probe, stats);
        self.followed(now, key, path, heard);
        heard
    }

    /// Session `key` followed its client to `path` (if it moved): the handshake index and the
    /// streams' bookkeeping follow too.
    fn followed(&mut self, now: Instant, key: usize, path: Path, heard: Heard) {
        if let Some(left) = heard.left {
            if self.slab[key].is_established() {
                self.forward.push_back(self.slab[key].forward_update());
            }
            self.handshakes.moved(key, path);
            if left.socket != path.socket && left.socket.is_stream() {
                self.streams.release(now, left.socket, key, false);
            }
            if path.socket.is_stream() {
                // (Again, too, for a session heard anew on a stream reported closed.)
                if self.slab[key].is_half_open() {
                    self.streams.claim_half_open(path.socket, key);
                } else {
                    self.streams.claim(path.socket, key);
                }
            }
        }
    }

    /// A frame of session `key`'s authentic packet from `path`: the session's own business
    /// is done (a half-open session's resumption ticket is checked too); the rest comes back.
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
        let (routed, queue) = s.handle_frame(now, path, frame, stats);
        if queue {
            self.enqueue(key);
        }
        match routed {
            Handled::Routed(routed) => routed,
            Handled::Resume(ticket) => {
                let unix = self.unix_secs(now);
                let ticket = self.tickets.handle_resume(unix, ticket, stats);
                self.handshakes.handle_resume(key, ticket);
                Routed::Done
            }
            Handled::Abort => {
                self.remove(now, key);
                Routed::Gone
            }
        }
    }

    /// The next control message session `key`'s client sent, in order.
    pub(super) fn poll_delivered(&mut self, key: usize) -> Option<Bytes> {
        self.slab.get_mut(key)?.poll_delivered()
    }

    // ---- send --------------------------------------------------------------------------

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
        if s.datagrams_full(cap) {
            return Err(SendError::QueueFull);
        }
        let b = self.send_arena.copy(payload);
        self.slab[key].push_datagram(b);
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
        s.push_control(&buf[..n])
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
        if s.push_control(msg).is_err() {
            self.overloaded.push(to);
            return;
        }
        self.enqueue(key);
        self.schedule(now, key);
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
        if self.slab[key].relayed_full(self.config.max_queued_relay_per_client) {
            stats.dropped.queue_full += 1;
            return;
        }
        let bytes = self.send_arena.copy(packet);
        self.slab[key].push_relayed(from, bytes);
        self.enqueue(key);
    }

    /// The next change the relay forwarders must learn, in order.
    pub(super) fn poll_forward_update(&mut self) -> Option<Update> {
        self.forward.pop_front()
    }

    /// What the forwarders must know of every established session (for a new forwarder).
    pub(super) fn forward_snapshot(&self) -> impl Iterator<Item = Update> + '_ {
        (self.slab.iter())
            .filter(|(_, s)| s.is_established())
            .map(|(_, s)| s.forward_update())
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
        if s.enqueue() {
            self.tx_queue.push_back((key, s.generation()));
        }
    }

    /// Makes sure the heap holds an entry no later than session `key`'s deadline.
    pub(super) fn schedule(&mut self, now: Instant, key: usize) {
        let s = &mut self.slab[key];
        if let Some(at) = s.reschedule(&self.config, now) {
            self.timers.push(Reverse((at, key, s.generation())));
        }
    }

    // ---- TCP streams -------------------------------------------------------------------

    /// The runtime accepted stream `id` from `ip`; an older stream without an established
    /// session may be closed to make room (counted), its half-open sessions with it.
    pub(super) fn handle_stream_accepted(
        &mut self,
        now: Instant,
        id: SocketId,
        ip: IpAddr,
        stats: &mut ServerStats,
    ) {
        if let Some(evicted) = self.streams.accepted(now, id, ip) {
            stats.streams_evicted += 1;
            self.handle_stream_closed(evicted, stats);
        }
    }

    /// Stream `id` ended: the sessions whose path it was send nothing until their client is
    /// heard again. Half-open ones too: a client that had our ServerHello sends its Connect
    /// down its next stream, and the session follows it there (else it expires as any
    /// half-open one); so does one whose stream the admission pool closed to make room.
    pub(super) fn handle_stream_closed(&mut self, id: SocketId, stats: &mut ServerStats) {
        for key in self.streams.closed(id) {
            let Some(s) = self.slab.get_mut(key).filter(|s| s.path().socket == id) else {
                continue;
            };
            s.path_closed();
            stats.stream_paths_closed += 1;
            if s.is_established() {
                self.forward.push_back(s.forward_update());
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
    /// everything else due by `now` is done on the way (expired handshakes and closing
    /// sessions removed, tickets renewed with `rng`, keepalives and retransmissions queued,
    /// deadlines moved on). Call until `None`.
    pub(super) fn poll_due(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        stats: &mut ServerStats,
    ) -> Option<Due> {
        if let Some((key, generation, renew_ticket)) = self.firing.take() {
            self.finish_timer(now, key, generation, renew_ticket, rng);
        }
        loop {
            let &Reverse((at, key, generation)) = self.timers.peek()?;
            if at > now {
                return None;
            }
            self.timers.pop();
            let Some(s) = self.slab.get_mut(key) else {
                continue;
            };
            if s.generation() != generation || !s.take_timer(at) {
                continue;
            }
            let established = s.is_established();
            if s.expired(&self.config, now) {
                if s.is_half_open() {
                    self.remove(now, key);
                    stats.handshakes_expired += 1;
                } else if established {
                    stats.clients_timed_out += 1;
                    return Some(Due::TimedOut(key));
                } else {
                    self.remove(now, key);
                }
            } else if established {
                let fired = s.fire(&self.config, now);
                if fired.offline {
                    stats.clients_offline += 1;
                    self.firing = Some((key, generation, fired.renew_ticket));
                    return Some(Due::Offline(s.host()));
                }
                self.finish_timer(now, key, generation, fired.renew_ticket, rng);
            } else {
                self.schedule(now, key);
            }
        }
    }

    /// The rest of established session `key`'s timer: its ticket renewed if due, a keepalive
    /// queued if due, its deadline moved on.
    fn finish_timer(
        &mut self,
        now: Instant,
        key: usize,
        generation: u32,
        renew_ticket: bool,
        rng: &mut Rng,
    ) {
        if self
            .slab
            .get(key)
            .is_none_or(|s| s.generation() != generation)
        {
            return;
        }
        if renew_ticket {
            self.issue_ticket(now, key, rng);
        }
        if self.slab[key].keepalive(&self.config, now) {
            self.enqueue(key);
        }
        self.schedule(now, key);
    }

    /// The earliest deadline (of the sessions' and the streams'), and what it is for.
    ///
    /// Deadlines are kept lazily: after a session ends or its deadline moves, the old one may
    /// still be reported once; waking for it is harmless and clears it.
    pub(super) fn poll_timeout(&self) -> Option<Timeout> {
        let timer = self.timers.peek().map(|&Reverse((at, key, generation))| {
            self.slab
                .get(key)
                .filter(|s| s.generation() == generation)
                .and_then(Session::timer)
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
            let Some(s) = (self.slab.get_mut(key)).filter(|s| s.generation() == generation) else {
                continue;
            };
            match s.seal(now, buf, max, stats) {
                Sealed::Nothing => {}
                Sealed::ProbeAck { transmit, more } => {
                    if more {
                        self.enqueue(key);
                    }
                    if transmit.is_some() {
                        return transmit;
                    }
                }
                Sealed::Packet { transmit, more } => {
                    if more {
                        self.enqueue(key);
                    }
                    self.schedule(now, key);
                    return Some(transmit);
                }
                Sealed::Relayed { transmit, more } => {
                    if more {
                        self.enqueue(key);
                    }
                    return Some(transmit);
                }
                Sealed::Last(transmit) => {
                    self.remove(now, key);
                    return Some(transmit);
                }
            }
        }
        None
    }

    // ---- internals ---------------------------------------------------------------------

    /// Sends established session `key`'s client a fresh resumption ticket (if tickets are on).
    fn issue_ticket(&mut self, now: Instant, key: usize, rng: &mut Rng) {
        let s = &self.slab[key];
        let Some(user_id) = s.user_id() else {
            return;
        };
        let host = s.host();
        let unix = self.unix_secs(now);
        let Some(sealed) = self.tickets.issue(unix, host, user_id, rng) else {
            return;
        };
        self.slab[key].ticket_issued(now);
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        if let Ok(n) = (ControlMsg::Ticket { ticket: &sealed }).encode(&mut buf) {
            self.send_control(now, host, &buf[..n]);
        }
    }

    /// The slot, generation and id the next half-open session will have (skipping host ids
    /// that tickets gave back).
    fn next_slot(&self) -> Slot {
        let key = self.slab.vacant_key();
        let stamp = |g: u32| match self.node_number {
            Some(n) => (u32::from(n) << 16) | (g & 0xFFFF).max(1),
            None => g,
        };
        let mut generation = stamp(self.next_gen);
        while self
            .restored
            .contains_key(&HostId((u64::from(generation) << 32) | key as u64))
        {
            generation = stamp(generation.wrapping_add(1).max(1));
        }
        Slot {
            key,
            generation,
            id: (key as u32 & INDEX_MASK) | (generation << 24),
        }
    }

    /// A new half-open session in `slot` (from [`Sessions::next_slot`]) for a client at
    /// `path`, keyed `keys`, forgotten at `expires` unless it connects.
    fn insert(
        &mut self,
        now: Instant,
        slot: Slot,
        path: Path,
        client_session: u32,
        accepted: Accepted,
    ) {
        debug_assert_eq!(slot, self.next_slot());
        self.next_gen = slot.generation.wrapping_add(1).max(1);
        let control = self.config.max_queued_control_per_client;
        let s = Session::new(now, slot, path, client_session, accepted, control);
        let key = self.slab.insert(s);
        if path.socket.is_stream() {
            self.streams.claim_half_open(path.socket, key);
        }
        self.schedule(now, key);
    }

    /// Unix seconds at `now`.
    fn unix_secs(&self, now: Instant) -> u64 {
        (self.unix_base + now.saturating_duration_since(self.epoch)).as_secs()
    }

    fn established(&self, host: HostId) -> Option<(usize, &Session)> {
        let key = key_of(&self.slab, &self.restored, host)?;
        let s = self.slab.get(key)?;
        s.is_established().then_some((key, s))
    }

    fn established_mut(&mut self, host: HostId) -> Option<(usize, &mut Session)> {
        let key = key_of(&self.slab, &self.restored, host)?;
        let s = self.slab.get_mut(key)?;
        s.is_established().then_some((key, s))
    }
}

/// The slot of `host`'s session in `slab`, whatever its stage.
fn key_of(slab: &Slab<Session>, restored: &BTreeMap<HostId, usize>, host: HostId) -> Option<usize> {
    let key = (host.0 & u64::from(u32::MAX)) as usize;
    if slab.get(key).is_some_and(|s| s.host() == host) {
        Some(key)
    } else {
        restored.get(&host).copied()
    }
}

impl Roster for Sessions {
    fn card(&self, host: HostId) -> Option<Card> {
        self.established(host).map(|(_, s)| s.card())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use crate::SecretKey;
    use crate::crypto::Ephemeral;

    struct Bench {
        s: Sessions,
        rng: Rng,
        stats: ServerStats,
        now: Instant,
    }

    fn path(i: u8) -> Path {
        Path {
            socket: SocketId::PRIMARY,
            addr: SocketAddr::from(([198, 51, 100, i], 4000)),
        }
    }

    impl Bench {
        fn new(f: impl FnOnce(&mut ServerConfig)) -> Self {
            let mut cfg = ServerConfig::new(SecretKey::from_bytes([1; 32]));
            f(&mut cfg);
            let cfg = Arc::new(cfg);
            let now = crate::tests::epoch();
            let mut rng = crate::rng::derive(&[2; 32], b"test");
            Self {
                s: Sessions::new(
                    cfg.clone(),
                    &mut rng,
                    now,
                    Duration::from_secs(1_800_000_000),
                ),
                rng,
                stats: ServerStats::default(),
                now,
            }
        }

        /// A client at `path(i)` handshakes; returns its slot.
        fn half_open(&mut self, i: u8) -> usize {
            self.half_open_at(i, path(i))
        }

        /// Client `i` at `at` handshakes; returns its slot.
        fn half_open_at(&mut self, i: u8, at: Path) -> usize {
            let mut rng = crate::rng::derive(&[i; 32], b"client");
            let hello = ClientHello {
                client_session: u32::from(i),
                client_ephemeral: Ephemeral::generate(&mut rng).public(),
                cookie: &[],
            };
            let (now, rng, stats) = (self.now, &mut self.rng, &mut self.stats);
            (self.s).handle_hello(now, at, &hello, rng, stats);
            self.s.slab.iter().find(|(_, s)| s.path() == at).unwrap().0
        }

        /// A client at `path(i)` connects; returns its slot and host.
        fn client(&mut self, i: u8) -> (usize, HostId) {
            self.client_at(i, path(i))
        }

        /// Client `i` at `at` connects; returns its slot and host.
        fn client_at(&mut self, i: u8, at: Path) -> (usize, HostId) {
            let key = self.half_open_at(i, at);
            let (now, rng, stats) = (self.now, &mut self.rng, &mut self.stats);
            let joined = self.s.handle_connect(now, key, &[], rng, stats);
            let Some(ServerEvent::ClientJoined { host_id, .. }) = joined.first() else {
                panic!("{joined:?}");
            };
            (key, *host_id)
        }

        /// Where everything sealed now goes, in order.
        fn sent(&mut self) -> Vec<SocketAddr> {
            let mut buf = [0u8; 1200];
            let (now, stats) = (self.now, &mut self.stats);
            std::iter::from_fn(|| self.s.poll_transmit(now, &mut buf, stats))
                .map(|t| t.dst)
                .collect()
        }

        /// The timer round at `now`: what it hands back.
        fn due(&mut self) -> Vec<Due> {
            let (now, rng, stats) = (self.now, &mut self.rng, &mut self.stats);
            self.s.handle_timeout(now);
            std::iter::from_fn(|| self.s.poll_due(now, rng, stats)).collect()
        }
    }

    #[test]
    fn a_connected_client_is_welcomed_and_a_session_is_half_open_until_then() {
        let mut b = Bench::new(|_| {});
        let key = b.half_open(1);
        assert_eq!((b.s.half_open(), b.s.clients()), (1, 0));
        assert!(b.s.established_key(b.s.slab[key].host()).is_none());
        let (key2, host) = b.client(2);
        assert_ne!(key, key2);
        assert_eq!((b.s.half_open(), b.s.clients()), (1, 1));
        assert_eq!(b.s.client(host), Some((path(2), None)));
        assert_eq!(b.s.hosts().collect::<Vec<_>>(), [host]);
        assert_eq!(b.sent(), [path(2).addr], "the Welcome (with the ticket)");
    }

    #[test]
    fn an_offline_client_is_handed_back_once_and_its_keepalive_waits_for_the_next_poll() {
        let mut b = Bench::new(|c| c.ticket_lifetime = Duration::ZERO);
        let (_, host) = b.client(1);
        b.sent();
        b.now += b.s.config.offline_after;
        let (now, rng, stats) = (b.now, &mut b.rng, &mut b.stats);
        b.s.handle_timeout(now);
        assert_eq!(b.s.poll_due(now, rng, stats), Some(Due::Offline(host)));
        assert_eq!(stats.clients_offline, 1);
        let mut buf = [0u8; 1200];
        assert!(b.s.poll_transmit(now, &mut buf, stats).is_none(), "not yet");
        assert_eq!(b.s.poll_due(now, rng, stats), None);
        assert_eq!(b.sent(), [path(1).addr], "the keepalive");
        assert_eq!(b.due(), [], "offline is reported once");
        b.now += b.s.config.idle_timeout;
        assert_eq!(b.due(), [Due::TimedOut(0)]);
    }

    #[test]
    fn an_expired_handshake_and_stale_deadlines_are_cleared_by_the_timers_alone() {
        let mut b = Bench::new(|_| {});
        b.half_open(1);
        let (key, _) = b.client(2);
        b.sent();
        // The established session's half-open expiry is still in the heap; the other
        // session's is live.
        let expiry = b.now + b.s.config.handshake_timeout;
        let reasons: Vec<_> = std::iter::from_fn(|| {
            let t = b.s.poll_timeout()?;
            b.now = t.at;
            let due = b.due();
            b.sent();
            (t.at <= expiry).then_some((t.reason, due))
        })
        .collect();
        assert!(reasons.contains(&("handshake expiry", vec![])));
        assert!(reasons.contains(&("stale session deadline", vec![])));
        assert_eq!((b.s.half_open(), b.stats.handshakes_expired), (0, 1));
        assert!(b.s.contains(key));
    }

    #[test]
    fn sessions_with_output_are_served_round_robin() {
        let mut b = Bench::new(|_| {});
        let (_, one) = b.client(1);
        let (_, two) = b.client(2);
        b.sent();
        let big = vec![7u8; b.s.max_payload()];
        for _ in 0..2 {
            b.s.send_datagram(one, &big).unwrap();
        }
        for _ in 0..2 {
            b.s.send_datagram(two, &big).unwrap();
        }
        let (a, c) = (path(1).addr, path(2).addr);
        assert_eq!(b.sent(), [a, c, a, c]);
    }

    #[test]
    fn a_closed_stream_silences_its_sessions_half_open_ones_too() {
        let mut b = Bench::new(|_| {});
        let on_stream = |n: u16| Path {
            socket: SocketId::stream(n),
            addr: SocketAddr::from(([198, 51, 100, n as u8], 5000)),
        };
        let (_, host) = b.client_at(3, on_stream(1));
        b.half_open_at(4, on_stream(2));
        b.sent();
        assert_eq!((b.s.clients(), b.s.half_open()), (1, 1));
        let stats = &mut b.stats;
        b.s.handle_stream_closed(SocketId::stream(1), stats);
        b.s.handle_stream_closed(SocketId::stream(2), stats);
        assert_eq!(stats.stream_paths_closed, 2);
        // The half-open one waits for its client's Connect down a new stream (or expires).
        assert_eq!((b.s.clients(), b.s.half_open()), (1, 1));
        b.s.send_datagram(host, b"lost").unwrap();
        assert_eq!(b.sent(), [], "no path until the client is heard again");
    }
}
