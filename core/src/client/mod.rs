//! The client: a router over small machines that each own their state and speak the same
//! verbs (`handle_*` in; `poll_transmit`, `poll_timeout` with its reason, `poll_event` out):
//!
//! - [`session::Session`]: the session with the server (handshake, link, control stream, TCP
//!   fallback with `tcp::TcpLink`, closing, re-registration);
//! - [`peers::PeerSet`]: the peers, their pair keys and reliability connections, relay first,
//!   with a [`path::PathAgent`] per peer (candidates, punching, validation, liveness,
//!   migration) and the birthday sockets (`sockets::SocketPool`);
//! - [`membership::Membership`]: the groups and rooms this client is in;
//! - [`discovery::Discovery`]: STUN queries and NAT behaviour discovery;
//! - [`portmap::PortMapper`]: the UDP port mapping at the default gateway (PCP / NAT-PMP /
//!   UPnP IGD),
//!   whose public address is offered to peers as a candidate;
//! - [`reflexive::Reflexive`]: server-reflexive candidates from the configured STUN servers
//!   (the family the session does not use: an IPv6 mapping behind NAT66, say).
//!
//! This file routes: a datagram goes to the child that owns it (a sealed server packet is
//! opened once and each of its frames goes to its owner: session frames to the session,
//! relayed peer packets to the peers), children are drained into the client's events, and
//! what one child reports that concerns another (a lost session and the peers it leaves, a
//! discovered NAT and the peers' plans, control messages) is handed across here.

mod api;
mod discovery;
mod membership;
mod mtu;
mod path;
mod peers;
mod portmap;
mod reflexive;
pub(crate) use reflexive::MAX_STUN_SERVERS;
mod session;
mod sockets;
mod tcp;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use rand::RngCore as _;

use crate::arena::Arena;
use crate::config::ClientConfig;
use crate::error::{CommandError, ConfigError};
use crate::event::{ClientEvent, DisconnectReason, HostId, RoomError, RoomOp};
use crate::nat::NatDiscovery;
use crate::rng::{self, Rng};
use crate::rudp::PeerDropReason;
use crate::stats::ClientStats;
use crate::time::{Clock, Instant, Timeout};
use crate::wire::control::{Candidates, ControlMsg, JOIN_REDIRECTED, NatInfo};
use crate::wire::demux::{self, Datagram};
use crate::wire::frame::{Frame, decode_all};
use crate::wire::sealed::SealedPacket;
use crate::{Endpoint, Events, RECV_SCRATCH_SIZE, SocketId, SocketRequest, Transmit};
use discovery::Discovery;
pub use membership::RoomOptions;
use membership::{Membership, join_flags};
use peers::{PeerSet, Via};
use portmap::PortMapper;
use reflexive::Reflexive;
use session::{Phase, Poll, Route, Session, SessionEvent};
use tcp::TcpFailure;

/// A Pierce client: a session with a server, and peer-to-peer links with the members of the
/// groups it is in. Drive it through [`Endpoint`] and [`Events`] (see the drive contract
/// there); everything else here is a command or a getter.
///
/// Time passed in never needs to be exact, but it must come from one monotonic clock; values
/// earlier than one already seen are clamped and counted.
pub struct Client {
    config: Arc<ClientConfig>,
    rng: Rng,
    clock: Clock,
    session: Session,
    peers: PeerSet,
    membership: Membership,
    discovery: Discovery,
    portmap: PortMapper,
    reflexive: Reflexive,
    /// The default gateway the runtime named ([`Client::set_gateway`]).
    gateway: Option<std::net::IpAddr>,
    /// This client's local addresses, advertised to the server once connected.
    local_addresses: Candidates,
    /// The candidates last sent to the server (see [`Client::announce_candidates`]).
    announced: Candidates,
    /// Events not yet polled.
    events: VecDeque<ClientEvent>,
    /// The host id of this client's last session (its peers know it by it).
    identity: Option<HostId>,
    stats: ClientStats,
    /// Holds received server payloads handed out in events.
    recv_arena: Arena,
    /// Server packets are opened here, never in an allocation per packet.
    scratch: Box<[u8]>,
    /// Test-only: every control message the server sent, opened, in order.
    #[cfg(test)]
    received_control: Vec<Vec<u8>>,
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
            rng: rng::derive(&seed, b"client"),
            clock: Clock::new(now),
            session: Session::new(config.clone()),
            peers: PeerSet::new(config.clone()),
            membership: Membership::default(),
            discovery: Discovery::default(),
            portmap: PortMapper::default(),
            reflexive: Reflexive::new(
                &(config.stun_servers.iter())
                    .map(|&s| config.reached_at(s))
                    .collect::<smallvec::SmallVec<[SocketAddr; 4]>>(),
            ),
            gateway: None,
            local_addresses: Candidates::default(),
            announced: Candidates::default(),
            events: VecDeque::new(),
            identity: None,
            stats: ClientStats::default(),
            recv_arena: Arena::default(),
            scratch: vec![0u8; RECV_SCRATCH_SIZE].into_boxed_slice(),
            #[cfg(test)]
            received_control: Vec::new(),
            config,
        })
    }

    // ---- routing -----------------------------------------------------------------------

    fn receive(&mut self, now: Instant, socket: SocketId, from: SocketAddr, datagram: &[u8]) {
        let now = self.clock.advance(now);
        self.stats.io.received(datagram.len());
        if self.portmap.handle_datagram(now, socket, from, datagram) {
            // The gateway's PCP / NAT-PMP port: its answers, or drops it counts.
            self.drain(now);
            return;
        }
        let stats = &mut self.stats;
        match demux::decode(datagram) {
            Err(e) => stats.dropped.count_decode(e),
            Ok(Datagram::Stun(_)) => {
                if !self.discovery.handle_datagram(now, socket, from, datagram)
                    && !self.reflexive.handle_datagram(socket, from, datagram)
                {
                    stats.dropped.stun += 1;
                }
            }
            Ok(Datagram::ClientHello(_) | Datagram::Relay(_)) => stats.dropped.unexpected += 1,
            Ok(Datagram::Relayed(p)) => {
                if self.session.accepts_relayed(socket, from, p.session, stats) {
                    let me = self.session.host_id();
                    let from = HostId(p.from);
                    if (self.peers).handle_relayed(now, from, p.peer_bytes, true, me, stats) {
                        self.session.heard_relayed(now, stats);
                        self.session.heard_on(socket);
                    }
                }
            }
            Ok(Datagram::ServerHello(h)) => self.session.handle_hello(now, socket, from, &h, stats),
            Ok(Datagram::Reset(r)) => self.session.handle_reset(now, socket, from, &r, stats),
            Ok(Datagram::Retry(retry)) => self.session.handle_retry(from, &retry, stats),
            Ok(Datagram::Sealed(packet)) => {
                match self.session.route(socket, from, &packet.header, stats) {
                    Route::Peer => {
                        let me = self.session.host_id();
                        let via = Via::Direct(socket, from);
                        self.peers.handle_packet(now, via, &packet, me, stats);
                    }
                    Route::Server => self.on_server_packet(now, socket, &packet),
                    Route::Dropped => {}
                }
            }
        }
        self.drain(now);
    }

    /// An authentic-looking server packet on the session's path: opened once, its frames
    /// decoded once, each handed to its owner.
    fn on_server_packet(&mut self, now: Instant, socket: SocketId, packet: &SealedPacket<'_>) {
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Some(plaintext) = self
            .session
            .open(now, packet, &mut scratch, &mut self.stats)
        {
            self.session.heard_on(socket);
            self.drain(now);
            match decode_all(plaintext) {
                Err(_) => self.stats.dropped.bad_frames += 1,
                Ok(frames) => {
                    for frame in &frames {
                        self.on_server_frame(now, socket, frame);
                        self.drain(now);
                    }
                }
            }
        }
        self.scratch = scratch;
    }

    fn on_server_frame(&mut self, now: Instant, socket: SocketId, frame: &Frame<'_>) {
        match *frame {
            Frame::Datagram { payload } if self.is_connected() => {
                let payload = self.recv_arena.copy(payload);
                self.push_event(ClientEvent::Message { payload });
            }
            Frame::Relayed { from, packet } => {
                let known = self.session.server_addr().is_some();
                let me = self.session.host_id();
                let stats = &mut self.stats;
                self.peers
                    .handle_relayed(now, HostId(from), packet, known, me, stats);
            }
            Frame::Datagram { .. } => self.stats.dropped.unexpected += 1,
            ref f => {
                let (rng, stats) = (&mut self.rng, &mut self.stats);
                self.session.handle_frame(now, socket, f, rng, stats);
                while let Some(msg) = self.session.poll_control() {
                    self.on_control(now, &msg);
                    self.drain(now);
                }
            }
        }
    }

    /// Test-only: the control messages this client sent to the server and received from it,
    /// encoded, in order (what the wire carries sealed).
    #[cfg(test)]
    pub(crate) fn control_log(&self) -> (&[Vec<u8>], &[Vec<u8>]) {
        (&self.session.sent_control, &self.received_control)
    }

    /// A control message from the server, in order: to the peers, the membership, or the
    /// application.
    fn on_control(&mut self, now: Instant, msg: &[u8]) {
        #[cfg(test)]
        self.received_control.push(msg.to_vec());
        let Ok(msg) = ControlMsg::decode(msg) else {
            self.stats.dropped.bad_frames += 1;
            return;
        };
        let Some(me) = self.session.host_id() else {
            return;
        };
        let msg = match self.config.nat64_prefix {
            Some(prefix) => through_nat64(msg, prefix),
            None => msg,
        };
        let nat = self.discovery.behavior();
        let stats = &mut self.stats;
        if self
            .peers
            .handle_control(now, &msg, me, nat.as_ref(), &mut self.rng, stats)
        {
            return;
        }
        let session = &mut self.session;
        let reply = |m: &ControlMsg<'_>| {
            let _ = session.push_control(m);
        };
        if self.membership.handle_control(&msg, me, reply) {
            return;
        }
        match msg {
            ControlMsg::App { data } => {
                let payload = self.recv_arena.copy(data);
                self.push_event(ClientEvent::Message { payload });
            }
            ControlMsg::Ticket { ticket } => self.session.store_ticket(ticket),
            ControlMsg::Draining { within_ms } => {
                let within = crate::time::Duration::from_millis(u64::from(within_ms));
                self.push_event(ClientEvent::ServerDraining { within });
                self.leave_draining(now);
            }
            ControlMsg::Redirect { node, room } => self.follow_redirect(now, node, room),
            _ => self.stats.dropped.unexpected += 1,
        }
    }

    /// Handles what the session reported, then moves every child's events into the
    /// client's.
    fn drain(&mut self, now: Instant) {
        while let Some(e) = self.session.poll_event() {
            match e {
                SessionEvent::Connected {
                    host_id,
                    public_addr,
                    server_key,
                    server,
                    on_tcp,
                    rejoined,
                } => {
                    if rejoined && self.identity.is_some_and(|was| was != host_id) {
                        // Known to its peers by the old id: no pair can carry over (a packet
                        // on one would be taken as the old identity's).
                        self.peers.drop_all(PeerDropReason::NewHostId);
                    }
                    self.identity = Some(host_id);
                    self.push_event(ClientEvent::Connected {
                        host_id,
                        public_addr,
                        server_key,
                    });
                    if on_tcp {
                        self.push_event(ClientEvent::ServerTransport { tcp: true });
                    }
                    self.on_connected(now, server, rejoined);
                }
                SessionEvent::Failed { reason, rejoining } => {
                    self.lose_session(now, reason, rejoining);
                }
                SessionEvent::HeardAfterQuiet => self.peers.path_restored(),
                SessionEvent::Transport { tcp } => {
                    self.push_event(ClientEvent::ServerTransport { tcp });
                }
                SessionEvent::PairLifetimeOver => self.peers.drop_all(PeerDropReason::PairExpired),
            }
        }
        self.drain_children();
    }

    /// Moves the peers', the membership's and discovery's events into the client's (a
    /// discovered NAT is told to the server and replans the peers first).
    fn drain_children(&mut self) {
        while let Some(e) = self.peers.poll_event() {
            self.emit(e);
        }
        while let Some(r) = self.peers.poll_report() {
            // Figures for the server's operators; lost with a session that is not up.
            if self.is_connected() {
                let _ = self.session.push_control(&ControlMsg::PeerPath {
                    peer: r.peer.0,
                    direct: r.direct,
                    after_ms: r.after_ms,
                });
            }
        }
        while let Some(e) = self.membership.poll_event() {
            self.emit(e);
        }
        while let Some(e) = self.portmap.poll_event() {
            if let ClientEvent::PortMapping { event, .. } = &e {
                use crate::portmap::PortMapEvent;
                let moved = matches!(
                    event,
                    PortMapEvent::Granted { .. } | PortMapEvent::Lost { .. }
                );
                if moved && self.is_connected() && !self.config.private {
                    // Peers learn the new public address (or stop trying the old one first).
                    let _ = self.announce_candidates();
                }
            }
            self.emit(e);
        }
        if self.reflexive.take_changed()
            && self.is_connected()
            && !self.config.private
            && self.candidates() != self.announced
        {
            // A server-reflexive address came, moved or went: peers learn the new set.
            let _ = self.announce_candidates();
        }
        while let Some(e) = self.discovery.poll_event() {
            if let ClientEvent::NatDiscovered {
                server,
                result: Ok(b),
            } = &e
            {
                let ours = self.is_connected() && self.server_addr() == Some(*server);
                if ours && !self.config.private {
                    let info = NatInfo::from(b);
                    let _ = self.session.push_control(&ControlMsg::NatInfo { info });
                }
                self.peers.replan(self.clock.now(), Some(b));
            }
            self.emit(e);
        }
    }

    /// Welcome: rooms joined again after a re-registration, then our local addresses and
    /// NAT to the server (discovering the NAT now if configured to).
    fn on_connected(&mut self, now: Instant, server: SocketAddr, rejoined: bool) {
        if rejoined {
            // Back in the rooms we were in (created again if the server lost them).
            for r in self.membership.rejoin() {
                let _ = self.session.push_control(&r.msg(join_flags(true)));
            }
            // The join a redirect sent here.
            if let Some((r, flags)) = self.membership.take_followed() {
                let _ = self.session.push_control(&r.msg(flags | JOIN_REDIRECTED));
            }
        }
        if self.config.private {
            // Nothing about where we are: no LAN addresses, no NAT behaviour (its mapped
            // ports), and no discovery to learn them.
            return;
        }
        if self.candidates().iter().next().is_some() {
            let _ = self.announce_candidates();
        }
        if self.config.direct_paths {
            // Asked from now on (again, after a re-registration: the mapping may be new).
            self.reflexive.start(now);
        }
        if self.config.nat_discovery && self.config.direct_paths {
            self.start_discovery(now, server, true);
        } else if let Some(b) = self.discovery.behavior() {
            // Learnt earlier (an explicit discovery): the server should know it too.
            let info = NatInfo::from(&b);
            let _ = self.session.push_control(&ControlMsg::NatInfo { info });
        }
    }

    /// The addresses offered to peers: the gateway's mapping first (it reaches this host from
    /// anywhere), then what the configured STUN servers see that is not one of this host's
    /// own, then the local ones (up to [`crate::wire::control::MAX_CANDIDATES`]).
    fn candidates(&self) -> Candidates {
        let mut list: smallvec::SmallVec<[SocketAddr; 8]> = smallvec::SmallVec::new();
        list.extend(self.portmap.external());
        let locals = self.local_addresses;
        list.extend(
            self.reflexive
                .addresses()
                .filter(|a| !locals.iter().any(|l| l == *a) && self.portmap.external() != Some(*a)),
        );
        list.extend(locals.iter());
        Candidates::new(&list)
    }

    /// Sends [`Client::candidates`] to the server (which passes them to every peer) and
    /// remembers them as announced.
    fn announce_candidates(&mut self) -> Result<(), CommandError> {
        let addrs = self.candidates();
        self.session
            .push_control(&ControlMsg::Candidates { addrs })?;
        self.announced = addrs;
        Ok(())
    }

    /// Whether port mapping may run: configured on, and this client may be reached directly.
    fn port_mapping_allowed(&self) -> bool {
        self.config.port_mapping && self.config.direct_paths && !self.config.private
    }

    /// (Re)starts the port mapping for the current gateway and local addresses.
    fn update_port_mapping(&mut self, now: Instant) {
        if !self.port_mapping_allowed() {
            return;
        }
        let locals = self.local_addresses;
        (self.portmap).update(now, self.gateway, locals.iter(), &mut self.rng);
        self.drain_children();
    }

    fn start_discovery(&mut self, now: Instant, server: SocketAddr, auto: bool) {
        let local = self
            .local_addresses
            .iter()
            .find(|a| a.is_ipv4() == server.is_ipv4());
        // Signed with the session's credential when the server is our own (whatever address
        // of it discovery goes on to use).
        let credential = self
            .session
            .stun_credential()
            .filter(|_| self.session.server_addr() == Some(server));
        let mut txid = [0u8; 12];
        self.rng.fill_bytes(&mut txid);
        let nat = NatDiscovery::new(now, server, local, txid)
            .with_credential(credential)
            .with_nat64(self.config.nat64_prefix);
        self.discovery.discover(nat, auto);
    }

    /// The session failed: a re-registration goes back to waiting; a server that timed out
    /// leaves the peers with a direct path (detached); a server that reset the session (it
    /// is back, without it) is registered with again at once, every peer waiting for it to
    /// introduce them again; with several server addresses, a timeout is met the same way
    /// with the next address (failover); anything else ends it all.
    fn lose_session(&mut self, now: Instant, reason: DisconnectReason, rejoining: bool) {
        if rejoining {
            let until = self.peers.orphans_until().unwrap_or(now);
            self.session.rejoin_failed(now, until);
            return;
        }
        let lifetime = self.config.pair_lifetime;
        let reregister = self.config.reregister;
        let reset = reason == DisconnectReason::Reset && reregister;
        let timed_out = reason == DisconnectReason::TimedOut;
        let failover = timed_out && reregister && self.session.server_count() > 1;
        if !lifetime.is_zero() && (reset || failover || (timed_out && self.peers.any_direct())) {
            // The server is gone (crashed, restarting, unreachable) or back without our
            // session: peers we reach directly stay, for the pair lifetime (after a reset or
            // with another node to go to, relay-only ones too, for the idle timeout);
            // meanwhile we register again: at once after a reset or with another node, else
            // when the server is back.
            let until = now + lifetime;
            let at_once = reset || failover;
            self.session.detach(now, until, reregister, at_once);
            self.push_event(ClientEvent::Disconnected { reason });
            let relay_until = at_once.then(|| now + self.config.idle_timeout.min(lifetime));
            self.forget_server(until, relay_until);
        } else {
            self.session.close();
            self.forget_session();
            self.push_event(ClientEvent::Disconnected { reason });
        }
    }

    /// The node is draining: with another address to go to (and re-registration on), the
    /// client leaves it at once, politely, and registers with the next address as after a
    /// stateless reset (ticket, rooms rejoined, direct peers untouched, relay-only ones kept
    /// for the idle timeout until the new node introduces them again). With one address it
    /// waits to be closed.
    fn leave_draining(&mut self, now: Instant) {
        let lifetime = self.config.pair_lifetime;
        if self.session.server_count() < 2 || !self.config.reregister || lifetime.is_zero() {
            return;
        }
        let until = now + lifetime;
        self.session.leave(now, until);
        let reason = DisconnectReason::ServerDraining;
        self.push_event(ClientEvent::Disconnected { reason });
        let relay_until = now + self.config.idle_timeout.min(lifetime);
        self.forget_server(until, Some(relay_until));
    }

    /// The node sends us to node `to` (cluster: `room` lives there, or, `room` empty, the
    /// node drains and our rooms moved there): the session with it closes and the client
    /// registers with `to` at once, with its ticket, as after a stateless reset (rooms
    /// rejoined, then `room` asked for; direct peers untouched, relay-only ones kept for the
    /// idle timeout until `to` introduces them again). A client that does not re-register
    /// (or keeps no pairs) cannot move: the join fails. A join sent on more than
    /// [`membership::MAX_REDIRECTS`] times in a row fails too.
    fn follow_redirect(&mut self, now: Instant, to: SocketAddr, room: &str) {
        let lifetime = self.config.pair_lifetime;
        let from = self.session.server_addr();
        let room = (!room.is_empty()).then(|| room.to_owned());
        let fail = |s: &mut Self, error| {
            s.push_event(ClientEvent::RoomFailed {
                op: RoomOp::Join,
                error,
            });
        };
        let Some(from) = from.filter(|_| self.config.reregister && !lifetime.is_zero()) else {
            self.stats.dropped.unexpected += 1;
            return if room.is_some() {
                fail(self, RoomError::OtherNode)
            } else {
                // (A draining node's redirect: it closes the session in time.)
            };
        };
        if let Some(name) = &room {
            if !self.membership.follow(name) {
                return fail(self, RoomError::TooManyRedirects);
            }
        }
        let until = now + lifetime;
        self.session.redirect(now, until, to);
        self.push_event(ClientEvent::Redirected { from, to, room });
        let relay_until = now + self.config.idle_timeout.min(lifetime);
        self.forget_server(until, Some(relay_until));
    }

    /// What only lives with the server session goes; peers with a direct path stay (and
    /// relay-only ones until `relay_until`, if given).
    fn forget_server(&mut self, until: Instant, relay_until: Option<Instant>) {
        self.peers.keep_direct(until, relay_until);
        self.membership.forget_groups();
        self.discovery.forget_auto();
    }

    /// Everything of the session goes, peers included.
    fn forget_session(&mut self) {
        self.session.forget();
        self.peers.clear();
        self.membership.clear();
        self.discovery.forget_auto();
        self.reflexive.stop();
        self.reflexive.take_changed(); // nobody to tell
        self.announced = Candidates::default();
    }

    /// Queues an event after the children's pending ones (so they stay in the order they
    /// happened).
    fn push_event(&mut self, e: ClientEvent) {
        self.drain_children();
        self.emit(e);
    }

    fn emit(&mut self, e: ClientEvent) {
        #[cfg(feature = "tracing")]
        crate::trace::client_event(&e);
        if self.events.len() >= self.config.max_pending_events {
            self.stats.io.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }

    /// Test-only: the resumption ticket this client holds.
    #[cfg(test)]
    pub(crate) fn test_ticket(&self) -> Option<Vec<u8>> {
        self.session.ticket()
    }

    /// Test-only: hand this client someone's ticket (a thief's copy).
    #[cfg(test)]
    pub(crate) fn test_set_ticket(&mut self, ticket: Vec<u8>) {
        self.session.store_ticket(&ticket);
    }

    /// Test-only: this client forgets a peer without a word (as if its side of the pair had
    /// expired).
    #[cfg(test)]
    pub(crate) fn test_forget_peer(&mut self, peer: HostId) {
        self.peers.remove_peer(peer);
        self.drain_children();
    }

    /// Test-only: pretend the server introduced `peer`, to forge relay requests the server
    /// must refuse.
    #[cfg(test)]
    pub(crate) fn test_insert_peer(&mut self, peer: HostId, pair_id: u32, key: [u8; 32]) {
        let me = self.host_id().unwrap_or(HostId(0));
        self.peers.test_insert(me, peer, pair_id, key);
    }
}

impl Endpoint for Client {
    /// Anything malformed, unauthentic, replayed or unexpected is dropped and counted in
    /// [`Client::stats`]; nothing here fails.
    fn handle_datagram_on(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        #[cfg(feature = "tracing")]
        let before = crate::trace::drops_wanted(true).then_some(self.stats.dropped);
        let from = crate::canonical(from);
        self.receive(now, socket, from, datagram);
        #[cfg(feature = "tracing")]
        if let Some(before) = before {
            let len = datagram.len();
            crate::trace::dropped(true, &before, &self.stats.dropped, socket, from, len);
        }
    }

    /// A stream connected (`local`) or could not (`None`), or a birthday socket opened.
    fn handle_socket_opened(&mut self, now: Instant, id: SocketId, local: Option<SocketAddr>) {
        let now = self.clock.advance(now);
        if self.portmap.handle_stream_opened(now, id, local) {
            // One of the port mapping's HTTP exchanges with the gateway (UPnP IGD).
        } else if id.is_stream() {
            let result = local.map(|_| ()).ok_or(TcpFailure::Unanswered);
            (self.session).handle_stream_opened(now, id, result, &mut self.stats);
        } else {
            self.peers.handle_socket_opened(now, id, local);
        }
        self.drain(now);
    }

    /// Remembered for the reason the session gives if it cannot connect
    /// ([`crate::DisconnectReason::ConnectRefused`]); otherwise as a failed connect.
    fn handle_stream_refused(&mut self, now: Instant, id: SocketId) {
        let now = self.clock.advance(now);
        if !self.portmap.handle_stream_opened(now, id, None) {
            let refused = Err(TcpFailure::Refused);
            (self.session).handle_stream_opened(now, id, refused, &mut self.stats);
        }
        self.drain(now);
    }

    /// A session on the stream connects a new one at once if the server had spoken on it
    /// (the server keeps the session through its recovery window), after the back-off if not.
    fn handle_stream_closed(&mut self, now: Instant, id: SocketId) {
        let now = self.clock.advance(now);
        if !self.portmap.handle_stream_closed(now, id) {
            self.session.handle_stream_closed(now, id, &mut self.stats);
        }
        self.drain(now);
    }

    /// Retransmissions, keepalives, timeouts, punching rounds, path liveness, STUN.
    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        self.portmap.handle_timeout(now);
        self.discovery.handle_timeout(now);
        self.reflexive.handle_timeout(now, &mut self.rng);
        self.drain(now);
        self.session
            .handle_timeout(now, &mut self.rng, &mut self.stats);
        self.drain(now);
        if self.session.poll_timeout().is_some_and(|t| t.at <= now) {
            // The session failed just now and is due to register again at once (a stateless
            // reset whose check ran out): no deadline is left in the past.
            self.session
                .handle_timeout(now, &mut self.rng, &mut self.stats);
            self.drain(now);
        }
        let detached = self.is_detached();
        self.peers.handle_timeout(now, detached, &mut self.stats);
        self.drain(now);
    }

    /// # Panics
    /// In debug builds if `buf` is shorter than [`crate::MAX_DATAGRAM_SIZE`].
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        debug_assert!(
            buf.len() >= crate::MAX_DATAGRAM_SIZE,
            "poll_transmit buffer too small"
        );
        let now = self.clock.advance(now);
        let stats = &mut self.stats;
        let t = self.portmap.poll_transmit(buf);
        let t = t
            .or_else(|| self.discovery.poll_transmit(buf))
            .or_else(|| self.reflexive.poll_transmit(buf))
            .or_else(|| {
                match self
                    .session
                    .poll_transmit(now, buf, &mut self.peers, &mut self.rng, stats)
                {
                    Poll::Server(t) => Some(t),
                    Poll::Peers => self.peers.poll_transmit(now, buf, stats),
                    Poll::Nothing => None,
                }
            })?;
        self.stats.io.sent(t.len);
        Some(t)
    }

    /// The TCP stream's changes first, then the birthday sockets', then the port mapping's
    /// HTTP streams (UPnP IGD).
    fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.session
            .poll_socket_request()
            .or_else(|| self.peers.poll_socket_request())
            .or_else(|| self.portmap.poll_socket_request())
    }

    /// The earliest of the children's deadlines, with its reason.
    fn poll_timeout(&self) -> Option<Timeout> {
        // Peers wait for their deadlines while a session exists or is being made, and
        // detached; orphans' lifetime while one is being made or up (detached, it is the
        // session's pair lifetime); early relayed packets while connected.
        let (peers, orphans, early) = match self.session.phase() {
            Phase::Idle | Phase::Closed | Phase::Closing => (false, false, false),
            Phase::Detached => (true, false, false),
            Phase::Handshaking | Phase::Authenticating => (true, true, false),
            Phase::Connected => (true, true, true),
        };
        Timeout::min([
            self.portmap.poll_timeout(),
            self.discovery.poll_timeout(),
            self.reflexive.poll_timeout(),
            self.session.poll_timeout(),
            self.peers.poll_timeout(orphans, early).filter(|_| peers),
        ])
    }
}

impl Events for Client {
    type Event = ClientEvent;

    fn poll_event(&mut self) -> Option<ClientEvent> {
        // (Every input drains its children already; this keeps it so whatever comes.)
        self.drain_children();
        self.events.pop_front()
    }
}

/// `msg` with every address it carries as a host behind NAT64 with `prefix` reaches it
/// ([`crate::ClientConfig::nat64_prefix`]): IPv4 ones synthesised into the prefix.
pub(crate) fn through_nat64(msg: ControlMsg<'_>, prefix: std::net::Ipv6Addr) -> ControlMsg<'_> {
    let via = |a| crate::synthesize_nat64(prefix, a);
    match msg {
        ControlMsg::PeerAdd {
            peer,
            pair_id,
            key,
            addr,
            delay_ms,
        } => ControlMsg::PeerAdd {
            peer,
            pair_id,
            key,
            addr: via(addr),
            delay_ms,
        },
        ControlMsg::PeerCandidates { peer, addrs } => {
            let list: smallvec::SmallVec<[SocketAddr; 8]> = addrs.iter().map(via).collect();
            ControlMsg::PeerCandidates {
                peer,
                addrs: Candidates::new(&list),
            }
        }
        ControlMsg::PeerMoved { peer, addr } => ControlMsg::PeerMoved {
            peer,
            addr: via(addr),
        },
        ControlMsg::Redirect { node, room } => ControlMsg::Redirect {
            node: via(node),
            room,
        },
        other => other,
    }
}
