//! One client session: its keys, where its client is, its phase, its deadlines, its outbox
//! and control stream; what it does with the frames that are its own business, and how its
//! pending output is sealed into one packet. [`super::sessions::Sessions`] keeps the table
//! of them (and their queues).

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::Bytes;

use super::forward::Update;
use super::groups::Card;
use super::handshake::Accepted;
use super::sessions::Slot;
use super::ticket;
use crate::config::ServerConfig;
use crate::crypto::{OpenError, PacketKeys, RelaySecret};
use crate::event::HostId;
use crate::rudp::stream::{ControlStream, StreamFull};
use crate::stats::ServerStats;
use crate::time::{Instant, Timeout};
use crate::wire::frame::{DATAGRAM_FRAME_OVERHEAD, Frame};
use crate::wire::relay::encode_relayed;
use crate::wire::reset::RESET_TOKEN_LEN;
use crate::wire::sealed::SealedPacket;
use crate::wire::stun::StunCredential;
use crate::{SocketId, Transmit};

/// Where a datagram came from, or where a session's client is: a local socket (UDP, or a TCP
/// stream) and the remote address on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Path {
    /// The local socket.
    pub(super) socket: SocketId,
    /// The remote address.
    pub(super) addr: SocketAddr,
}

pub(super) struct Session {
    /// Generation: distinguishes this session from earlier ones in the same slab slot.
    generation: u32,
    /// The client's id: `(generation << 32) | slot`, or the one its resumption ticket gave
    /// back.
    host: HostId,
    /// When its last resumption ticket was issued.
    ticket_at: Option<Instant>,
    /// Our receiver id: slot in the low 24 bits, generation bits above.
    id: u32,
    /// The client's receiver id.
    client_session: u32,
    /// The stateless reset token of `id`, given to the client in the Welcome.
    reset_token: [u8; RESET_TOKEN_LEN],
    /// Where the newest authentic packet came from.
    path: Path,
    /// The stream the path is on was closed: nothing is sent until the client's next
    /// authentic packet (from any path) gives it a new one.
    path_closed: bool,
    /// The client's address on UDP, once an authentic UDP packet came from it: the one peers
    /// punch to (for a client on UDP, `path.addr`).
    udp: Option<SocketAddr>,
    keys: PacketKeys,
    /// What its relay packets (the relay fast path) are checked with, by the forwarders.
    relay: RelaySecret,
    /// What its client's STUN requests are signed with (derived from `relay`).
    stun: StunCredential,
    phase: Phase,
    /// When the last authentic packet came.
    last_recv: Instant,
    /// When the last packet was sealed.
    last_send: Instant,
    out: Outbox,
    /// In the transmit queue.
    queued: bool,
    /// The deadline this session has in the timer heap, if any, and what it is for.
    timer: Option<(Instant, Wake)>,
    /// Reliable ordered control messages in both directions.
    control: ControlStream,
    /// Not heard for `offline_after`: its peers were told; cleared by its next packet.
    offline: bool,
    /// The client asked for privacy (a `Private` frame before its `Connect`): its addresses
    /// are never handed to anyone, and its pairs stay on the relay.
    private: bool,
}

enum Phase {
    /// ServerHello sent (the handshake's own state is the handshakes'); forgotten at
    /// `expires` unless it connects.
    HalfOpen { expires: Instant },
    /// A client.
    Established { user_id: Option<u64> },
    /// A last Reject or Close frame to send, then the session is removed.
    Closing,
}

/// What waits to be sent.
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

/// What an authentic packet changed in the session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Heard {
    /// The session followed its client off this path (to the packet's).
    pub(super) left: Option<Path>,
    /// The client's UDP address changed and it is established: its peers must hear.
    pub(super) moved: Option<HostId>,
    /// The client was offline and is back.
    pub(super) back: Option<HostId>,
}

/// What a frame of a session's packet asks of someone other than the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Routed<'a> {
    /// Nothing: the session took it (or dropped and counted it).
    Done,
    /// The session is gone: the rest of the packet is ignored.
    Gone,
    /// Half-open: the Connect frame's token.
    Connect(&'a [u8]),
    /// Established: the client closes with `code`.
    Close(u16),
    /// Established: control messages from `from` may be ready.
    Control(HostId),
    /// Established: an application datagram from `from`.
    Datagram {
        /// The client.
        from: HostId,
        /// The payload.
        payload: &'a [u8],
    },
}

/// What a frame of a session's packet asks of its table or of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Handled<'a> {
    /// For the server.
    Routed(Routed<'a>),
    /// Half-open: a resumption ticket, to check.
    Resume(&'a [u8]),
    /// Half-open: the client gives up (the session is to be removed).
    Abort,
}

/// What sealing a session's output gave.
#[derive(Debug)]
pub(super) enum Sealed {
    /// Nothing (nothing to send, or it could not be sent).
    Nothing,
    /// The answer to a path probe (if it could be sealed), alone; `more` is pending.
    ProbeAck {
        transmit: Option<Transmit>,
        more: bool,
    },
    /// A packet; `more` is pending. The session's deadline may have moved.
    Packet { transmit: Transmit, more: bool },
    /// A relayed peer packet, behind its plain header (the relay fast path: nothing sealed);
    /// `more` is pending.
    Relayed { transmit: Transmit, more: bool },
    /// Its last packet (Reject or Close): the session is done.
    Last(Transmit),
}

/// What a session's deadline is for (one byte next to the instant: the deadline is computed
/// for every packet received and sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wake {
    HandshakeExpiry,
    IdleTimeout,
    OfflineCheck,
    Keepalive,
    ControlRetransmission,
    TicketRenewal,
    ClosingExpiry,
}

impl Wake {
    /// For logs and busy-loop reports.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::HandshakeExpiry => "handshake expiry",
            Self::IdleTimeout => "client idle timeout",
            Self::OfflineCheck => "client offline check",
            Self::Keepalive => "server keepalive",
            Self::ControlRetransmission => "control stream retransmission",
            Self::TicketRenewal => "resumption ticket renewal",
            Self::ClosingExpiry => "closing session expiry",
        }
    }
}

/// An established session's timer fired: what it found due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Fired {
    /// It went offline just now.
    pub(super) offline: bool,
    /// Its ticket is due for renewal.
    pub(super) renew_ticket: bool,
}

impl Session {
    /// A half-open session in `slot` for a client at `path`.
    pub(super) fn new(
        now: Instant,
        slot: Slot,
        path: Path,
        client_session: u32,
        accepted: Accepted,
        max_queued_control: usize,
    ) -> Self {
        let Accepted {
            keys,
            relay,
            expires,
        } = accepted;
        Self {
            generation: slot.generation,
            host: HostId((u64::from(slot.generation) << 32) | slot.key as u64),
            ticket_at: None,
            id: slot.id,
            client_session,
            reset_token: [0; RESET_TOKEN_LEN],
            path,
            path_closed: false,
            udp: (!path.socket.is_stream()).then_some(path.addr),
            keys,
            stun: relay.stun_credential(slot.id),
            relay,
            phase: Phase::HalfOpen { expires },
            last_recv: now,
            last_send: now,
            out: Outbox::default(),
            queued: false,
            timer: None,
            control: ControlStream::new(max_queued_control),
            offline: false,
            private: false,
        }
    }

    // ---- getters -----------------------------------------------------------------------

    pub(super) fn generation(&self) -> u32 {
        self.generation
    }

    pub(super) fn host(&self) -> HostId {
        self.host
    }

    pub(super) fn id(&self) -> u32 {
        self.id
    }

    /// Where the client is.
    pub(super) fn path(&self) -> Path {
        self.path
    }

    pub(super) fn is_half_open(&self) -> bool {
        matches!(self.phase, Phase::HalfOpen { .. })
    }

    /// What the forwarders must know of it (once established): its session, relay key, and
    /// where its client is (`None` while its stream is closed).
    pub(super) fn forward_update(&self) -> Update {
        Update::Client {
            session: self.id,
            host: self.host,
            secret: self.relay.clone(),
            client_session: self.client_session,
            path: (!self.path_closed).then_some((self.path.socket, self.path.addr)),
        }
    }

    /// An authentic relay packet (checked by a forwarder) came at `at` on `path`; `newest`: it
    /// carried its sender's highest relay counter so far. It counts as hearing the client
    /// (relayed traffic keeps a session alive), and the newest moves the session's path.
    pub(super) fn heard_relay(
        &mut self,
        at: Instant,
        path: Path,
        newest: bool,
        stats: &mut ServerStats,
    ) -> Heard {
        self.heard_on(at, path, newest, false, stats)
    }

    /// What its client's STUN requests are signed with.
    pub(super) fn stun_credential(&self) -> &StunCredential {
        &self.stun
    }

    pub(super) fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established { .. })
    }

    /// The user id of an established session's token (or ticket); `None` if not established.
    pub(super) fn user_id(&self) -> Option<Option<u64>> {
        match self.phase {
            Phase::Established { user_id } => Some(user_id),
            _ => None,
        }
    }

    /// What a pair's introduction tells about this client.
    pub(super) fn card(&self) -> Card {
        Card {
            addr: self.udp.unwrap_or(self.path.addr),
            offline: self.offline,
            srtt: self.control.srtt(),
            private: self.private,
        }
    }

    /// Its deadline in the timer heap, if any, with its reason.
    pub(super) fn timer(&self) -> Option<Timeout> {
        self.timer.map(|(at, wake)| Timeout::new(at, wake.reason()))
    }

    // ---- lifecycle ---------------------------------------------------------------------

    /// The handshake completed: established (as `resume`'s host, if any) and welcomed.
    /// `reset_token` is the session's stateless reset token (the Welcome tells the client).
    pub(super) fn establish(
        &mut self,
        user_id: Option<u64>,
        resume: Option<HostId>,
        reset_token: [u8; RESET_TOKEN_LEN],
    ) {
        if let Some(host) = resume {
            self.host = host;
        }
        self.reset_token = reset_token;
        self.phase = Phase::Established { user_id };
        self.out.welcome = true;
        // Reschedule from scratch: the half-open expiry no longer applies.
        self.timer = None;
    }

    /// The handshake is refused with reason `code`: one Reject frame, then gone.
    pub(super) fn reject(&mut self, code: u8) {
        self.phase = Phase::Closing;
        self.out.reject = Some(code);
        self.timer = None;
    }

    /// An established client ends: false if it was not established.
    pub(super) fn end(&mut self) -> bool {
        if !self.is_established() {
            return false;
        }
        self.phase = Phase::Closing;
        true
    }

    /// One Close frame with `code` (and nothing else) is all that is left to send.
    pub(super) fn close(&mut self, code: u16) {
        self.out = Outbox {
            close: Some(code),
            ..Outbox::default()
        };
    }

    // ---- receive -----------------------------------------------------------------------

    /// Opens `packet` into `scratch`.
    pub(super) fn open<'s>(
        &mut self,
        packet: &SealedPacket<'_>,
        scratch: &'s mut [u8],
    ) -> Result<&'s [u8], OpenError> {
        self.keys.open(packet, scratch)
    }

    /// An authentic packet numbered `counter` came in on `path`; `probe`: it carries a path
    /// probe. The client is heard: it is back if it was offline; the session follows it to a
    /// new path (address, or transport) only on its newest packet, so a delayed or re-sent
    /// older packet cannot move it; and never on a probe: a client on TCP checks UDP with
    /// probes, and moves only once the answer came back (UDP may work one way only).
    pub(super) fn heard(
        &mut self,
        now: Instant,
        path: Path,
        counter: u64,
        probe: bool,
        stats: &mut ServerStats,
    ) -> Heard {
        let newest = self.keys.highest_received() == Some(counter);
        self.heard_on(now, path, newest, probe, stats)
    }

    /// Heard the client on `path` (`newest`: the packet carried its highest counter so far).
    fn heard_on(
        &mut self,
        now: Instant,
        path: Path,
        newest: bool,
        probe: bool,
        stats: &mut ServerStats,
    ) -> Heard {
        let mut heard = Heard::default();
        // (A forwarder on another thread reports what it heard a little late.)
        self.last_recv = self.last_recv.max(now);
        if self.offline {
            self.offline = false;
            heard.back = Some(self.host);
            // Answer at once: the client learns its network is back (and restarts its peers'
            // retransmissions) without waiting for our keepalive.
            self.out.ping = true;
        }
        let changed = path != self.path || self.path_closed;
        if newest && changed && !probe {
            if path.socket != self.path.socket {
                stats.transport_changes += 1;
            }
            heard.left = Some(self.path);
            self.path = path;
            self.path_closed = false;
        }
        // Peers punch to the client's UDP address: they hear when it changes.
        if newest && !path.socket.is_stream() && self.udp != Some(path.addr) {
            self.udp = Some(path.addr);
            stats.address_changes += 1;
            if self.is_established() {
                heard.moved = Some(self.host);
            }
        }
        heard
    }

    /// The stream its path is on ended: nothing is sent until the client is heard again.
    pub(super) fn path_closed(&mut self) {
        self.path_closed = true;
    }

    /// A frame of an authentic packet from `path`, by the session's phase when it comes up:
    /// what is the session's own business is done here (keepalives, probes,
    /// control stream data and acks, a lost Welcome); the rest is handed back. `queue`:
    /// whether it has something new to send.
    pub(super) fn handle_frame<'a>(
        &mut self,
        now: Instant,
        path: Path,
        frame: Frame<'a>,
        stats: &mut ServerStats,
    ) -> (Handled<'a>, bool) {
        let half_open = self.is_half_open();
        let established = self.is_established();
        let routed = match frame {
            Frame::Padding(_) => Routed::Done,
            Frame::Resume { ticket } if half_open => return (Handled::Resume(ticket), false),
            Frame::Resume { .. } if established => Routed::Done,
            Frame::Private if half_open => {
                self.private = true;
                Routed::Done
            }
            // (Privacy is for the session's life: it cannot be given up, nor asked for after
            // pairs may have been introduced.)
            Frame::Private if established => Routed::Done,
            Frame::Connect { token } if half_open => Routed::Connect(token),
            Frame::Connect { .. } if established => {
                // Our Welcome was lost and the client retried.
                self.out.welcome = true;
                return (Handled::Routed(Routed::Done), true);
            }
            Frame::Ping if established => {
                stats.io.keepalives_received += 1;
                Routed::Done
            }
            Frame::Probe { nonce } if established => {
                // Answered on the path it came from (a UDP probe from a client on TCP; or a
                // client checking a stateless reset, on its session's path, stream or not);
                // one answer pending per session at most (the latest probe's).
                self.out.probe_ack = Some((path, nonce));
                return (Handled::Routed(Routed::Done), true);
            }
            Frame::Close { code } if established => Routed::Close(code),
            Frame::Close { .. } if half_open => return (Handled::Abort, false),
            Frame::Stream { seq, data } if established => {
                self.control.handle_data(seq, data);
                return (Handled::Routed(Routed::Control(self.host)), true);
            }
            Frame::StreamAck { next, mask } if established => {
                if let Some(rtt) = self.control.handle_ack(now, next, mask) {
                    let ms = u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX);
                    stats.histograms.session_rtt_ms.observe(ms);
                }
                Routed::Done
            }
            Frame::Datagram { payload } if established => Routed::Datagram {
                from: self.host,
                payload,
            },
            _ => {
                stats.dropped.unexpected += 1;
                Routed::Done
            }
        };
        (Handled::Routed(routed), false)
    }

    /// The next control message its client sent, in order.
    pub(super) fn poll_delivered(&mut self) -> Option<Bytes> {
        self.control.poll_delivered()
    }

    // ---- send --------------------------------------------------------------------------

    /// Whether `cap` datagrams are queued already.
    pub(super) fn datagrams_full(&self, cap: usize) -> bool {
        self.out.datagrams.len() >= cap
    }

    /// Queues an unreliable datagram.
    pub(super) fn push_datagram(&mut self, payload: Bytes) {
        self.out.datagrams.push_back(payload);
    }

    /// Queues an encoded control message on the control stream.
    pub(super) fn push_control(&mut self, msg: &[u8]) -> Result<(), StreamFull> {
        self.control.push(msg)
    }

    /// A resumption ticket is being issued at `now`.
    pub(super) fn ticket_issued(&mut self, now: Instant) {
        self.ticket_at = Some(now);
    }

    /// Whether `cap` relayed packets are queued already.
    pub(super) fn relayed_full(&self, cap: usize) -> bool {
        self.out.relayed.len() >= cap
    }

    /// Queues a relayed peer packet from `from`.
    pub(super) fn push_relayed(&mut self, from: HostId, packet: Bytes) {
        self.out.relayed.push_back((from, packet));
    }

    // ---- time --------------------------------------------------------------------------

    /// The next instant this session needs its timer, and what for (on a tie, the first
    /// named here). A control retransmission that is already due is not a deadline: the
    /// session is queued for transmit instead (a past deadline would make the timers spin).
    pub(super) fn deadline(&self, config: &ServerConfig, now: Instant) -> (Instant, Wake) {
        let idle = self.last_recv + config.idle_timeout;
        match self.phase {
            Phase::HalfOpen { expires } => (expires, Wake::HandshakeExpiry),
            Phase::Established { .. } => {
                let mut d = (idle, Wake::IdleTimeout);
                let mut earlier = |at: Instant, wake| {
                    if at < d.0 {
                        d = (at, wake);
                    }
                };
                if !self.offline && !config.offline_after.is_zero() {
                    earlier(self.last_recv + config.offline_after, Wake::OfflineCheck);
                }
                if !self.out.ping {
                    earlier(self.last_send + config.keepalive_interval, Wake::Keepalive);
                }
                if let Some(c) = self.control.poll_timeout().filter(|c| *c > now) {
                    earlier(c, Wake::ControlRetransmission);
                }
                let renewal = self.ticket_at;
                if let Some(at) = renewal.and_then(|at| ticket::renewal(at, config.ticket_lifetime))
                {
                    earlier(at, Wake::TicketRenewal);
                }
                d
            }
            Phase::Closing => (idle, Wake::ClosingExpiry),
        }
    }

    /// Makes its timer no later than its deadline; returns the new deadline if it moved
    /// earlier (for the heap).
    pub(super) fn reschedule(&mut self, config: &ServerConfig, now: Instant) -> Option<Instant> {
        let d = self.deadline(config, now);
        if self.timer.is_some_and(|t| d.0 >= t.0) {
            return None;
        }
        self.timer = Some(d);
        Some(d.0)
    }

    /// Its heap entry `at` came up: true if it is the live one (then cleared).
    pub(super) fn take_timer(&mut self, at: Instant) -> bool {
        let live = self.timer.is_some_and(|t| t.0 == at);
        if live {
            self.timer = None;
        }
        live
    }

    /// Its timer fired at `now`: whether it expired (half-open: the handshake; established:
    /// the client's idle timeout; closing: the grace to send its last frame).
    pub(super) fn expired(&self, config: &ServerConfig, now: Instant) -> bool {
        match self.phase {
            Phase::HalfOpen { expires } => now >= expires,
            Phase::Established { .. } | Phase::Closing => {
                now >= self.last_recv + config.idle_timeout
            }
        }
    }

    /// An established session's timer fired at `now` (not expired): it goes offline if
    /// its client was not heard for `offline_after`, and its ticket may be due.
    pub(super) fn fire(&mut self, config: &ServerConfig, now: Instant) -> Fired {
        let mut fired = Fired::default();
        let offline_after = config.offline_after;
        if !self.offline && !offline_after.is_zero() && now >= self.last_recv + offline_after {
            self.offline = true;
            fired.offline = true;
        }
        fired.renew_ticket = self
            .ticket_at
            .and_then(|at| ticket::renewal(at, config.ticket_lifetime))
            .is_some_and(|at| now >= at);
        fired
    }

    /// The rest of a fired timer: a keepalive if one is due. Returns whether it has
    /// something to send.
    pub(super) fn keepalive(&mut self, config: &ServerConfig, now: Instant) -> bool {
        let mut queue = false;
        if now >= self.last_send + config.keepalive_interval && !self.out.ping {
            self.out.ping = true;
            queue = true;
        }
        queue || self.control.wants_transmit(now)
    }

    // ---- transmit ----------------------------------------------------------------------

    /// Marks it queued for transmit; false if it already was.
    pub(super) fn enqueue(&mut self) -> bool {
        !std::mem::replace(&mut self.queued, true)
    }

    /// Seals its pending output into `buf` (at most `max` bytes): a probe answer alone, or
    /// one packet of everything else that fits, in order: a final Reject or Close alone,
    /// the Welcome, control messages, relayed packets, datagrams, a keepalive if nothing else.
    pub(super) fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max: usize,
        stats: &mut ServerStats,
    ) -> Sealed {
        self.queued = false;
        if let Some((path, nonce)) = self.out.probe_ack.take() {
            // Answered on the path it came from, alone: it tells the client that path works
            // both ways. Authenticated, and no larger than the probe.
            let sealed = self.keys.seal_frames(self.client_session, buf, max, |w| {
                let _ = Frame::ProbeAck { nonce }.encode(w);
            });
            let more = self.wants_transmit(now);
            let transmit = sealed.map(|len| {
                stats.path_probes_answered += 1;
                Transmit {
                    dst: path.addr,
                    len,
                    socket: path.socket,
                    ttl: None,
                }
            });
            return Sealed::ProbeAck { transmit, more };
        }
        if self.path_closed {
            // No path until the client is heard again: unreliable output is dropped (as on a
            // dead link), control messages wait for their retransmission.
            self.out = Outbox::default();
            return Sealed::Nothing;
        }
        if let Some((from, p)) = self.out.relayed.pop_front() {
            // Forwarded as it came, behind a plain header naming the sender: the peer packet
            // is sealed end to end, and the receiver checks it with the pair's key. Up to
            // MAX_DATAGRAM_SIZE, not `max` (the server's own size): the sender's path-MTU
            // discovery sized it, and it came behind a longer relay header than it leaves with.
            let room = buf.len().min(crate::MAX_DATAGRAM_SIZE);
            let Ok(len) = encode_relayed(&mut buf[..room], self.client_session, from.0, &p) else {
                return Sealed::Nothing; // larger than a datagram here: as a datagram lost
            };
            stats.relayed_packets += 1;
            stats.relayed_bytes += p.len() as u64;
            stats
                .histograms
                .relay_datagram_bytes
                .observe(p.len() as u64);
            let transmit = Transmit {
                dst: self.path.addr,
                len,
                socket: self.path.socket,
                ttl: None,
            };
            let more = self.wants_transmit(now);
            return Sealed::Relayed { transmit, more };
        }
        if !self.wants_transmit(now) {
            return Sealed::Nothing;
        }
        let host_id = self.host;
        let path = self.path;
        let observed = self.udp.unwrap_or(path.addr);
        let reset_token = self.reset_token;
        let out = &mut self.out;
        let control = &mut self.control;
        let retransmits_before = control.retransmits;
        let mut pinged = false;
        let mut final_frame = false;
        let len = self.keys.seal_frames(self.client_session, buf, max, |w| {
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
                    reset_token,
                }
                .encode(w);
                out.welcome = false;
            }
            control.write(now, w);
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
            self.out = Outbox::default();
            return Sealed::Nothing;
        };
        self.last_send = now;
        stats.control_retransmits += self.control.retransmits - retransmits_before;
        if pinged {
            stats.io.keepalives_sent += 1;
        }
        let transmit = Transmit {
            dst: path.addr,
            len,
            socket: path.socket,
            ttl: None,
        };
        if final_frame {
            return Sealed::Last(transmit);
        }
        Sealed::Packet {
            transmit,
            more: self.wants_transmit(now),
        }
    }

    /// Whether it has anything to send at `now`.
    fn wants_transmit(&self, now: Instant) -> bool {
        !self.out.is_empty() || self.control.wants_transmit(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use crate::crypto::{Ephemeral, HandshakeKeys};
    use crate::time::Duration;

    fn path(i: u8) -> Path {
        Path {
            socket: SocketId::PRIMARY,
            addr: SocketAddr::from(([198, 51, 100, i], 4000)),
        }
    }

    fn session(now: Instant, config: &ServerConfig) -> Session {
        let mut rng = crate::rng::derive(&[5; 32], b"test");
        let (ours, theirs) = (Ephemeral::generate(&mut rng), Ephemeral::generate(&mut rng));
        let secret = &config.secret_key;
        let keys =
            HandshakeKeys::server(secret, &secret.public_key(), &ours, &theirs.public()).unwrap();
        let accepted = Accepted {
            relay: keys.relay_secret(),
            keys: keys.into_server_session(),
            expires: now + config.handshake_timeout,
        };
        let slot = Slot {
            key: 3,
            generation: 9,
            id: 3 | (9 << 24),
        };
        Session::new(now, slot, path(1), 77, accepted, 64)
    }

    fn config(f: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
        let mut cfg = ServerConfig::new(SecretKey::from_bytes([1; 32]));
        f(&mut cfg);
        cfg
    }

    #[test]
    fn the_deadline_is_the_earliest_of_its_reasons() {
        let t0 = crate::tests::epoch();
        let cfg = config(|c| c.ticket_lifetime = Duration::ZERO);
        let mut s = session(t0, &cfg);
        let deadline = |s: &Session, cfg, now| {
            let (at, wake) = s.deadline(cfg, now);
            Timeout::new(at, wake.reason())
        };
        assert_eq!(
            deadline(&s, &cfg, t0),
            Timeout::new(t0 + cfg.handshake_timeout, "handshake expiry")
        );
        s.establish(None, None, [0; 16]);
        // Offline check and keepalive are both due at 5 s: the first named wins.
        let five = t0 + cfg.offline_after;
        assert_eq!(
            deadline(&s, &cfg, t0),
            Timeout::new(five, "client offline check")
        );
        assert_eq!(
            s.fire(&cfg, five),
            Fired {
                offline: true,
                renew_ticket: false
            }
        );
        assert_eq!(
            deadline(&s, &cfg, five),
            Timeout::new(five, "server keepalive")
        );
        assert!(s.keepalive(&cfg, five), "a ping is queued");
        let idle = Timeout::new(t0 + cfg.idle_timeout, "client idle timeout");
        assert_eq!(
            deadline(&s, &cfg, five),
            idle,
            "no keepalive while one is queued"
        );
        assert!(s.expired(&cfg, idle.at));
        let with_tickets = config(|c| c.ticket_lifetime = Duration::from_secs(4));
        s.ticket_issued(t0);
        assert_eq!(
            deadline(&s, &with_tickets, five).reason,
            "resumption ticket renewal"
        );
    }

    #[test]
    fn a_probe_is_answered_alone_on_its_own_path_before_anything_else() {
        let t0 = crate::tests::epoch();
        let cfg = config(|_| {});
        let mut s = session(t0, &cfg);
        s.establish(None, None, [0; 16]);
        let mut stats = ServerStats::default();
        let probe = Frame::Probe { nonce: 5 };
        let (routed, queue) = s.handle_frame(t0, path(2), probe, &mut stats);
        assert_eq!((routed, queue), (Handled::Routed(Routed::Done), true));
        let mut buf = [0u8; 1200];
        let Sealed::ProbeAck { transmit, more } = s.seal(t0, &mut buf, 1200, &mut stats) else {
            panic!("the probe first");
        };
        assert_eq!((transmit.map(|t| t.dst), more), (Some(path(2).addr), true));
        let Sealed::Packet { transmit, more } = s.seal(t0, &mut buf, 1200, &mut stats) else {
            panic!("then the Welcome");
        };
        assert_eq!((transmit.dst, more), (path(1).addr, false));
        assert_eq!(stats.path_probes_answered, 1);
    }

    #[test]
    fn a_reject_is_sealed_alone_and_is_the_last_packet() {
        let t0 = crate::tests::epoch();
        let cfg = config(|_| {});
        let mut s = session(t0, &cfg);
        s.reject(3);
        assert!(!s.is_half_open() && !s.is_established());
        let mut buf = [0u8; 1200];
        let mut stats = ServerStats::default();
        assert!(matches!(
            s.seal(t0, &mut buf, 1200, &mut stats),
            Sealed::Last(t) if t.dst == path(1).addr
        ));
        assert!(matches!(
            s.seal(t0, &mut buf, 1200, &mut stats),
            Sealed::Nothing
        ));
    }

    #[test]
    fn frames_count_only_in_the_phase_they_belong_to() {
        let t0 = crate::tests::epoch();
        let cfg = config(|_| {});
        let mut s = session(t0, &cfg);
        let mut stats = ServerStats::default();
        let datagram = Frame::Datagram { payload: b"early" };
        let (routed, _) = s.handle_frame(t0, path(1), datagram, &mut stats);
        assert_eq!(routed, Handled::Routed(Routed::Done));
        assert_eq!(stats.dropped.unexpected, 1, "not before Connect");
        let close = Frame::Close { code: 1 };
        assert_eq!(
            s.handle_frame(t0, path(1), close, &mut stats).0,
            Handled::Abort
        );
        s.establish(Some(4), None, [0; 16]);
        let (routed, _) = s.handle_frame(t0, path(1), datagram, &mut stats);
        assert_eq!(
            routed,
            Handled::Routed(Routed::Datagram {
                from: s.host(),
                payload: b"early"
            })
        );
        assert_eq!(s.user_id(), Some(Some(4)));
    }
}
