//! The peer set: every member this client shares a group with, its pair keys, its reliability
//! connection and its path agent. Relay first: every peer message travels through the server
//! until a direct path exists, end-to-end sealed with the pair's key; the reliability state is
//! per peer, not per path, so moving between the relay and a direct path loses, duplicates and
//! reorders nothing.
//!
//! A peer packet arrives [`Via`] a direct path or the relay, is opened once with the pair's
//! key, its frames are decoded once, and each goes to its owner: connection frames to the
//! peer's [`Connection`], probes to its [`PathAgent`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rand::RngCore;

use super::mtu::{PeerMtu, relay_peer_len, seal_probe};
use super::path::{PathAgent, PathEvent, PathSend, busy_limit};
use super::session::Relay;
use super::sockets::SocketPool;
use crate::arena::Arena;
use crate::config::ClientConfig;
use crate::crypto::PacketKeys;
use crate::error::SendError;
use crate::event::{ClientEvent, HostId, PathChangeReason};
use crate::nat::NatBehavior;
use crate::reliability::{ACK_RESERVE, ConnEvent, Connection, Limits};
use crate::rng::Rng;
use crate::rudp::{Channel, MessageId, Path, PeerDropReason, PeerStats, SendOptions};
use crate::stats::ClientStats;
use crate::time::{Duration, Instant, Timeout};
use crate::wire::Writer;
use crate::wire::control::ControlMsg;
use crate::wire::frame::{Frame, MESSAGE_FRAME_OVERHEAD, RELAY_FRAME_OVERHEAD, decode_all};
use crate::wire::relay::RELAY_HEADER_LEN;
use crate::wire::sealed::{HEADER_LEN, OVERHEAD, SealedPacket, TAG_LEN};
use crate::{RECV_SCRATCH_SIZE, SocketId, SocketRequest, Transmit};

/// How long a relayed packet that arrived before its pair key is kept. The key travels on the
/// reliable control stream ahead of any relayed packet, so only a lost control packet makes a
/// peer packet early, and its retransmission comes within a few RTOs.
const EARLY_TTL: Duration = Duration::from_secs(2);
/// Early packets kept at most.
const EARLY_CAP: usize = 64;
/// Bytes around a peer packet's frames when it travels through the relay: at most the server
/// session packet, the relay frame and the peer packet's own header and tag (the Relay frame
/// older clients send; this client's relay header, [`RELAY_PATH_OVERHEAD`], is smaller).
/// Fragments are sized so that either fits one datagram.
const RELAYED_OVERHEAD: usize = OVERHEAD + RELAY_FRAME_OVERHEAD + OVERHEAD;
/// Bytes around a peer packet's frames on the relay fast path: the relay header with its tag,
/// and the peer packet's own header and tag (what congestion control counts).
const RELAY_PATH_OVERHEAD: usize = RELAY_HEADER_LEN + OVERHEAD;

/// What a connection's event is to the application (`peer`: whose connection).
fn client_event(peer: HostId, e: ConnEvent) -> ClientEvent {
    match e {
        ConnEvent::Message { channel, payload } => ClientEvent::PeerMessage {
            from: peer,
            channel,
            payload,
        },
        ConnEvent::Expired { channel, id } => ClientEvent::MessageExpired {
            peer,
            channel,
            message_id: id,
        },
    }
}

/// Bytes of a fragment at the base size: what fits a relayed peer packet with room left for
/// an ack (the largest unreliable message; reliable ones are cut to each packet's room, which
/// grows with the path's discovered MTU).
pub(super) fn fragment_size(config: &ClientConfig) -> usize {
    config.base_datagram_size() - RELAYED_OVERHEAD - MESSAGE_FRAME_OVERHEAD - ACK_RESERVE
}

/// The path a peer packet arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Via {
    /// Directly from this address, on this local socket.
    Direct(SocketId, SocketAddr),
    /// Through the server's relay (inside a `Relayed` frame).
    Relay,
}

/// A member this client shares at least one group with.
struct Peer {
    /// The pair's id (and epoch) as the server assigned it.
    pair_id: u32,
    /// End-to-end protection with this peer.
    keys: PacketKeys,
    /// The peer's address as the server observed it (unspecified for a relay-only pair).
    addr: SocketAddr,
    /// Relay-only (IP privacy: we are private, or the server hid the peer's address): no
    /// probing, no probe answered, and address updates about the peer are ignored.
    relay_only: bool,
    /// Reliability, channels and congestion control, whatever the path.
    conn: Connection,
    /// Hole punching and the direct path.
    path: PathAgent,
    /// Path-MTU discovery of the relay path and the direct path.
    mtu: PeerMtu,
    /// The server said the peer went quiet (`PeerRecovering` was reported).
    recovering: bool,
    /// The pair id the current server knows this pair by (differs from `pair_id` for a pair
    /// carried over a server restart: see `adopt`).
    server_pair: u32,
    /// Kept from an earlier server session, not (yet) introduced by the current one: only its
    /// direct path reaches it (no relay), until the pair lifetime ends.
    orphan: bool,
    /// For a pair carried over: the new server's key and pair id. Packets from the peer under
    /// them mean it kept nothing of the old pair (it restarted): the connection starts over.
    fresh: Option<([u8; 32], u32)>,
    /// When the current server introduced the pair (for the path reports' `after`).
    introduced: Instant,
}

impl Peer {
    /// Its traffic goes through the relay: no direct path, and the server knows the pair.
    fn relayed(&self) -> bool {
        self.path.direct().is_none() && !self.orphan
    }
}

/// Every peer, and what they share: the pair index, relayed packets that came before their
/// key, the birthday sockets, the orphans' lifetime.
pub(super) struct PeerSet {
    config: Arc<ClientConfig>,
    peers: BTreeMap<HostId, Peer>,
    /// Pair id → member.
    pair_index: BTreeMap<u32, HostId>,
    /// The peer whose packets went last into a server packet (round-robin between peers).
    cursor: Option<HostId>,
    /// Relayed packets that arrived before their pair's key (bounded, short-lived).
    early: VecDeque<(Instant, HostId, Bytes)>,
    /// Holds queued messages and early packets.
    arena: Arena,
    /// Peer packets are opened here: a relayed one is nested inside a server packet that is
    /// still in the client's own scratch buffer.
    scratch: Box<[u8]>,
    /// Extra sockets for birthday probing.
    sockets: SocketPool,
    /// Peers kept from a lost server session (orphans) live until this instant.
    orphans_until: Option<Instant>,
    /// After a stateless reset, orphans without a direct path (relay-only peers) are kept
    /// until this instant, for the returning server to introduce them again.
    relay_orphans_until: Option<Instant>,
    events: VecDeque<ClientEvent>,
    /// Path changes to tell the server (for its operators' figures), bounded.
    reports: VecDeque<PathReport>,
}

/// A peer's path changed: what the server is told ([`ControlMsg::PeerPath`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PathReport {
    pub(super) peer: HostId,
    pub(super) direct: bool,
    /// Since the current server introduced the pair, in ms; [`PathReport::NOT_TIMED`] for a
    /// direct path carried over from an earlier server session.
    pub(super) after_ms: u32,
}

impl PathReport {
    /// `after_ms` of a direct path this server did not see being made.
    pub(super) const NOT_TIMED: u32 = u32::MAX;
}

/// Path reports held at most: each peer needs one (its latest), so older ones beyond a few
/// per peer are stale anyway.
const MAX_REPORTS: usize = 1024;

impl PeerSet {
    pub(super) fn new(config: Arc<ClientConfig>) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            pair_index: BTreeMap::new(),
            cursor: None,
            early: VecDeque::new(),
            arena: Arena::default(),
            scratch: vec![0u8; RECV_SCRATCH_SIZE].into_boxed_slice(),
            sockets: SocketPool::default(),
            orphans_until: None,
            relay_orphans_until: None,
            events: VecDeque::new(),
            reports: VecDeque::new(),
        }
    }

    // ---- getters -----------------------------------------------------------------------

    /// Members this client shares a group with, in id order.
    pub(super) fn ids(&self) -> impl Iterator<Item = HostId> + '_ {
        self.peers.keys().copied()
    }

    /// A peer's public address as the server observed it.
    pub(super) fn addr(&self, peer: HostId) -> Option<SocketAddr> {
        self.peers.get(&peer).map(|p| p.addr)
    }

    /// Until when peers kept from a lost server session live (if any are kept).
    pub(super) fn orphans_until(&self) -> Option<Instant> {
        self.orphans_until
    }

    /// Some peer has a validated direct path.
    pub(super) fn any_direct(&self) -> bool {
        self.peers.values().any(|p| p.path.direct().is_some())
    }

    /// Counters of one channel of the connection with a peer.
    pub(super) fn channel_stats(
        &self,
        peer: HostId,
        channel: Channel,
    ) -> Option<crate::ChannelStats> {
        self.peers.get(&peer)?.conn.channel_stats(channel)
    }

    /// Counters and estimates of the connection with a peer.
    pub(super) fn peer_stats(&self, peer: HostId) -> Option<PeerStats> {
        let p = self.peers.get(&peer)?;
        let s = p.conn.stats;
        let m = p.mtu.stats();
        Some(PeerStats {
            rtt: p.conn.srtt(),
            rtt_var: p.conn.rtt_var(),
            loss: if s.packets_sent == 0 {
                0.0
            } else {
                s.packets_lost as f64 / s.packets_sent as f64
            },
            packets_sent: s.packets_sent,
            packets_lost: s.packets_lost,
            bytes_out: s.bytes_out,
            bytes_in: s.bytes_in,
            messages_out: s.messages_out,
            messages_in: s.messages_in,
            retransmits: s.retransmits,
            unacked: p.conn.unacked(),
            queued_bytes: p.conn.queued_bytes(),
            cwnd: p.conn.cwnd(),
            path: p.path.direct().map_or(Path::Relay, Path::Direct),
            path_mtu: p.mtu.current(p.path.direct_path()),
            mtu_probes_sent: m.probes_sent,
            mtu_probes_lost: m.probes_lost,
            mtu_black_holes: m.black_holes,
        })
    }

    // ---- commands ----------------------------------------------------------------------

    /// Queues a message for `to`; `None` if it is not a peer.
    pub(super) fn send(
        &mut self,
        now: Instant,
        to: HostId,
        channel: Channel,
        payload: &[u8],
        options: SendOptions,
    ) -> Option<Result<MessageId, SendError>> {
        let peer = self.peers.get_mut(&to)?;
        let b = self.arena.copy(payload);
        Some(peer.conn.send(now, channel, b, options))
    }

    /// Queues a message for every peer among `members` (but `me`): all or none.
    pub(super) fn send_to_all(
        &mut self,
        now: Instant,
        members: &[HostId],
        me: Option<HostId>,
        channel: Channel,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let targets: smallvec::SmallVec<[HostId; 16]> = members
            .iter()
            .copied()
            .filter(|m| Some(*m) != me && self.peers.contains_key(m))
            .collect();
        // Check every target first so that the send is all or nothing.
        for t in &targets {
            self.peers[t].conn.check_send(channel, payload.len())?;
        }
        let b = self.arena.copy(payload);
        for t in targets {
            if let Some(p) = self.peers.get_mut(&t) {
                p.conn
                    .send(now, channel, b.clone(), SendOptions::default())?;
            }
        }
        Ok(())
    }

    // ---- inputs ------------------------------------------------------------------------

    /// A control message about peers, from the server (in order); false if it is not about
    /// peers. `me` is this client's host id, `nat` what discovery found about its NAT.
    pub(super) fn handle_control(
        &mut self,
        now: Instant,
        msg: &ControlMsg<'_>,
        me: HostId,
        nat: Option<&NatBehavior>,
        rng: &mut Rng,
        stats: &mut ClientStats,
    ) -> bool {
        match *msg {
            ControlMsg::PeerAdd {
                peer,
                pair_id,
                key,
                addr,
                delay_ms,
            } => {
                let peer = HostId(peer);
                if self.peers.get(&peer).is_some_and(|p| p.orphan) {
                    self.adopt(peer, pair_id, &key, stats);
                    return true;
                }
                self.remove_peer(peer);
                let conn = self.new_connection();
                let nonce = rng.next_u64();
                // The server names no address for a relay-only pair; a private client treats
                // every pair so, whatever the server says.
                let hidden = addr.ip().is_unspecified() || addr.port() == 0;
                let relay_only = self.config.private || hidden;
                let path = PathAgent::new(
                    now,
                    addr,
                    nonce,
                    pair_id,
                    self.config.direct_paths && !relay_only,
                    me < peer,
                    Duration::from_millis(u64::from(delay_ms)),
                );
                self.peers.insert(
                    peer,
                    Peer {
                        pair_id,
                        keys: PacketKeys::for_pair(&key, pair_id, me < peer),
                        addr,
                        relay_only,
                        conn,
                        path,
                        mtu: PeerMtu::new(&self.config),
                        recovering: false,
                        server_pair: pair_id,
                        orphan: false,
                        fresh: None,
                        introduced: now,
                    },
                );
                self.pair_index.insert(pair_id, peer);
                // Replay relayed packets that arrived before this key.
                for (at, from, packet) in std::mem::take(&mut self.early) {
                    if from == peer {
                        let _ = self.handle_relayed(now, from, &packet, true, Some(me), stats);
                    } else {
                        self.early.push_back((at, from, packet));
                    }
                }
            }
            ControlMsg::PeerRemove { peer, pair_id } => {
                let peer = HostId(peer);
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.server_pair == pair_id)
                {
                    self.remove_peer(peer);
                }
            }
            ControlMsg::PeerCandidates { peer, addrs } => {
                if let Some(p) = self.peers.get_mut(&HostId(peer)).filter(|p| !p.relay_only) {
                    p.path.add_candidates(now, addrs.iter());
                }
            }
            ControlMsg::PeerMoved { peer, addr } => {
                if let Some(p) = self.peers.get_mut(&HostId(peer)).filter(|p| !p.relay_only) {
                    p.addr = addr;
                    p.path.peer_moved(now, addr);
                }
            }
            ControlMsg::PeerOffline { peer } => {
                let id = HostId(peer);
                if let Some(p) = self.peers.get_mut(&id).filter(|p| !p.recovering) {
                    p.recovering = true;
                    self.events
                        .push_back(ClientEvent::PeerRecovering { peer: id });
                }
            }
            ControlMsg::PeerOnline { peer } => {
                let id = HostId(peer);
                if let Some(p) = self.peers.get_mut(&id).filter(|p| p.recovering) {
                    p.recovering = false;
                    // Whatever waited for it goes now, not after a backed-off timeout; a lost
                    // direct path is probed again at once.
                    p.conn.path_restored();
                    p.path.peer_moved(now, p.addr);
                    self.events
                        .push_back(ClientEvent::PeerRecovered { peer: id });
                }
            }
            ControlMsg::PeerNat { peer, info } => {
                if let Some(p) = self.peers.get_mut(&HostId(peer)).filter(|p| !p.relay_only) {
                    p.path.set_peer_nat(now, info, nat, &self.config);
                    self.update_socket_pool(now);
                }
            }
            _ => return false,
        }
        true
    }

    /// A peer packet the server relayed from `from`. It is opened only while a server is
    /// known (`server_known`); one whose pair is not known yet waits for its key. True if it
    /// opened (it is authentic: it came through the server's relay).
    pub(super) fn handle_relayed(
        &mut self,
        now: Instant,
        from: HostId,
        packet: &[u8],
        server_known: bool,
        me: Option<HostId>,
        stats: &mut ClientStats,
    ) -> bool {
        let Ok(p) = SealedPacket::decode(packet) else {
            stats.dropped.malformed += 1;
            return false;
        };
        if !p.header.peer {
            stats.dropped.malformed += 1;
            return false;
        }
        match self.pair_index.get(&p.header.receiver) {
            Some(&peer) if peer == from => {
                stats.relayed_in += 1;
                server_known && self.handle_packet(now, Via::Relay, &p, me, stats)
            }
            Some(_) => {
                stats.dropped.unknown_peer += 1;
                false
            }
            None if self.early.len() < EARLY_CAP && !self.peers.contains_key(&from) => {
                let b = self.arena.copy(packet);
                self.early.push_back((now, from, b));
                false
            }
            None => {
                stats.dropped.unknown_peer += 1;
                false
            }
        }
    }

    /// A peer packet that arrived `via` a direct path or the relay: opened once, its frames
    /// decoded once, each handed to its owner. True if it opened.
    pub(super) fn handle_packet(
        &mut self,
        now: Instant,
        via: Via,
        packet: &SealedPacket<'_>,
        me: Option<HostId>,
        stats: &mut ClientStats,
    ) -> bool {
        let Some(&peer_id) = self.pair_index.get(&packet.header.receiver) else {
            stats.dropped.unknown_peer += 1;
            return false;
        };
        let lower = me.is_some_and(|me| me < peer_id);
        let mut scratch = std::mem::take(&mut self.scratch);
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            stats.dropped.unknown_peer += 1;
            self.scratch = scratch;
            return false;
        };
        let pn = packet.header.counter;
        let size = packet.aad.len() + packet.ciphertext_and_tag.len();
        let fresh = peer
            .fresh
            .filter(|(_, id)| *id == packet.header.receiver && *id != peer.pair_id);
        // Under the new server's pair id but our keys: the peer carried the pair over too and
        // relays it under the id the server knows (see `write_relayed`).
        let carried = fresh.is_some() && peer.keys.open(packet, &mut scratch).is_ok();
        let opened = match fresh {
            // (`open` leaves the plaintext at the start of `scratch`.)
            _ if carried => Some(&scratch[..packet.ciphertext_and_tag.len() - TAG_LEN]),
            // Authentic under the new server's key: the peer started this pair over.
            Some((key, id)) => {
                let mut keys = PacketKeys::for_pair(&key, id, lower);
                match keys.open(packet, &mut scratch) {
                    Ok(plaintext) => {
                        self.restart_pair(peer_id, keys, id, stats);
                        Some(plaintext)
                    }
                    Err(_) => {
                        stats.dropped.auth_failed += 1;
                        None
                    }
                }
            }
            None => match peer.keys.open(packet, &mut scratch) {
                Ok(plaintext) => Some(plaintext),
                Err(e) => {
                    stats.dropped.count_open(e);
                    None
                }
            },
        };
        let authentic = opened.is_some();
        let drain = fresh.is_none() || authentic;
        match opened.map(decode_all) {
            None => {}
            Some(Err(_)) => stats.dropped.bad_frames += 1,
            Some(Ok(frames)) => self.on_frames(now, peer_id, via, pn, size, &frames, stats),
        }
        self.scratch = scratch;
        if drain {
            self.drain_peer(peer_id);
        }
        authentic
    }

    /// The frames of one authentic packet from `peer_id`: connection frames to its
    /// connection, path frames (of a packet that came directly) to its path agent.
    #[allow(clippy::too_many_arguments)]
    fn on_frames(
        &mut self,
        now: Instant,
        peer_id: HostId,
        via: Via,
        pn: u64,
        size: usize,
        frames: &[Frame<'_>],
        stats: &mut ClientStats,
    ) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        peer.conn.handle_packet(now, pn, size, frames);
        for f in frames {
            if let Frame::Ack(a) = f {
                let ranges: smallvec::SmallVec<[(u64, u64); 8]> = a.ranges().collect();
                peer.mtu.on_ack(now, &ranges);
            }
        }
        let Via::Direct(socket, from) = via else {
            return; // probes travel directly: relayed ones mean nothing
        };
        let is_path = |f: &Frame<'_>| matches!(f, Frame::Probe { .. } | Frame::ProbeAck { .. });
        // A path-MTU probe (a ping and padding, nothing else) is a probe too: like the path
        // agent's, it proves nothing about our path when it comes on another socket.
        let mtu_probe = matches!(frames, [Frame::Ping, Frame::Padding(_)]);
        let conn_frames = !mtu_probe
            && frames
                .iter()
                .any(|f| !is_path(f) && !matches!(f, Frame::Padding(_)));
        peer.path
            .handle_direct_packet(now, socket, from, conn_frames);
        for f in frames {
            let Some(peer) = self.peers.get_mut(&peer_id) else {
                return;
            };
            match *f {
                Frame::Probe { nonce } => {
                    // (A relay-only peer's probe is not answered: the answer would tell it
                    // where we are.)
                    let direct_paths = self.config.direct_paths && !peer.relay_only;
                    peer.path
                        .handle_probe(now, socket, from, nonce, direct_paths);
                }
                Frame::ProbeAck { nonce } => {
                    if let Some(e) = peer.path.handle_probe_ack(now, socket, from, nonce) {
                        self.on_path_event(now, peer_id, e, stats);
                    }
                }
                _ => {}
            }
        }
    }

    /// Our network is probably back (the server was heard after a silence): whatever waits
    /// for peers' acknowledgements goes now, not after a timeout that doubled meanwhile.
    pub(super) fn path_restored(&mut self) {
        for p in self.peers.values_mut() {
            p.conn.path_restored();
            // Our first leg to the server may be another network now: its size is unknown.
            p.mtu.relay().reset();
        }
    }

    /// Our NAT's behaviour is known (or changed): every peer's traversal plan is recomputed.
    pub(super) fn replan(&mut self, now: Instant, nat: Option<&NatBehavior>) {
        for peer in self.peers.values_mut() {
            peer.path.replan(now, nat, &self.config);
        }
        self.update_socket_pool(now);
    }

    /// The server session is lost but peers with a direct path stay (until `until`, the pair
    /// lifetime): the others are dropped, the rest become orphans (no relay).
    /// With `relay_until` (the server reset our session: it is back), relay-only peers stay
    /// too, until then, for the returning server to introduce them again.
    pub(super) fn keep_direct(&mut self, until: Instant, relay_until: Option<Instant>) {
        if relay_until.is_none() {
            self.drop_where(|p| p.path.direct().is_none(), PeerDropReason::ServerLost);
        }
        for p in self.peers.values_mut() {
            p.recovering = false;
            p.orphan = true;
        }
        self.orphans_until = Some(until);
        self.relay_orphans_until = relay_until;
        self.early.clear();
    }

    /// Everything that lived with the server session goes: every peer is forgotten (their
    /// unacknowledged messages reported expired).
    pub(super) fn clear(&mut self) {
        self.orphans_until = None;
        self.relay_orphans_until = None;
        let ids: Vec<HostId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id);
        }
        self.pair_index.clear();
        self.early.clear();
    }

    /// Every peer is dropped with `reason` (the pair lifetime of a detached client ended).
    pub(super) fn drop_all(&mut self, reason: PeerDropReason) {
        self.drop_where(|_| true, reason);
        self.orphans_until = None;
    }

    /// Advances every peer's timers: reliability, then paths (a quiet direct path falls back
    /// to the relay), orphans (`detached`: the pair lifetime is the session's business then),
    /// early packets.
    pub(super) fn handle_timeout(&mut self, now: Instant, detached: bool, stats: &mut ClientStats) {
        let ids: smallvec::SmallVec<[HostId; 16]> = self.peers.keys().copied().collect();
        for &id in &ids {
            if let Some(p) = self.peers.get_mut(&id) {
                p.conn.handle_timeout(now);
                if p.path.direct_path().is_none() {
                    p.mtu.direct_gone();
                }
                p.mtu.handle_timeout(now);
            }
            self.drain_peer(id);
        }
        for &id in &ids {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            let busy = busy_limit(&p.conn);
            if let Some(e) = p.path.handle_timeout(now, busy) {
                self.on_path_event(now, id, e, stats);
            }
        }
        self.update_socket_pool(now);
        // No relay for orphans: one whose direct path died is gone (after a reset, only once
        // the returning server had its time to introduce it again); all of them at the end of
        // the pair lifetime.
        if self.relay_orphans_until.is_some_and(|t| now >= t) {
            self.relay_orphans_until = None;
            self.drop_where(
                |p| p.orphan && p.path.direct().is_none(),
                PeerDropReason::ServerLost,
            );
        }
        if self.relay_orphans_until.is_none() {
            self.drop_where(
                |p| p.orphan && p.path.direct().is_none(),
                PeerDropReason::DirectLost,
            );
        }
        if self.orphans_until.is_some_and(|t| now >= t) && !detached {
            self.orphans_until = None;
            self.drop_where(|p| p.orphan, PeerDropReason::PairExpired);
        }
        while self
            .early
            .front()
            .is_some_and(|(at, _, _)| now >= *at + EARLY_TTL)
        {
            self.early.pop_front();
            stats.dropped.unknown_peer += 1;
        }
    }

    /// The runtime's answer to a birthday or fresh socket's open.
    pub(super) fn handle_socket_opened(
        &mut self,
        now: Instant,
        id: SocketId,
        local: Option<SocketAddr>,
    ) {
        self.sockets.handle_socket_opened(id, local);
        for p in self.peers.values_mut() {
            p.path.socket_opened(now, id, local.is_some(), &self.config);
        }
    }

    // ---- outputs -----------------------------------------------------------------------

    /// The next datagram sent directly to a peer: probe answers, probes, sprayed probes, then
    /// connection traffic of peers on a direct path.
    pub(super) fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        stats: &mut ClientStats,
    ) -> Option<Transmit> {
        // Path probes and their answers are small: the base size is plenty.
        let max = self.config.base_datagram_size().min(buf.len());
        for peer in self.peers.values_mut() {
            let pair_id = peer.pair_id;
            match peer
                .path
                .poll_transmit(now, &mut self.sockets, &self.config)
            {
                Some(PathSend::ProbeAck { socket, to, nonce }) => {
                    let len = peer.keys.seal_frames(pair_id, buf, max, |w| {
                        let _ = Frame::ProbeAck { nonce }.encode(w);
                    })?;
                    return Some(Transmit {
                        dst: to,
                        len,
                        socket,
                        ttl: None,
                    });
                }
                Some(PathSend::Probe {
                    socket,
                    to,
                    nonce,
                    ttl,
                }) => {
                    let len = peer.keys.seal_frames(pair_id, buf, max, |w| {
                        let _ = Frame::Probe { nonce }.encode(w);
                    })?;
                    stats.probes_sent += 1;
                    return Some(Transmit {
                        dst: to,
                        len,
                        socket,
                        ttl,
                    });
                }
                None => {}
            }
            // Reliability traffic on the direct path, at the size it proved, and its
            // path-MTU probes.
            let Some((socket, dst)) = peer.path.direct_path() else {
                continue;
            };
            let pto = peer.conn.probe_timeout();
            let mtu = peer.mtu.direct((socket, dst));
            if let Some(size) = mtu.poll_probe(now) {
                if let Some((pn, len)) = seal_probe(&mut peer.keys, pair_id, buf, size) {
                    mtu.on_probe_sent(now, pn, len, pto);
                    return Some(Transmit {
                        dst,
                        len,
                        socket,
                        ttl: None,
                    });
                }
            }
            let max = mtu.current().min(buf.len());
            if !peer.conn.wants_transmit(now) || max < OVERHEAD + 1 {
                continue;
            }
            peer.conn.set_path_mtu(max);
            let pn = peer.keys.next_counter();
            let mut w = Writer::new(&mut buf[HEADER_LEN..max - TAG_LEN]);
            let n = peer.conn.write(now, pn, OVERHEAD, &mut w);
            if n == 0 {
                continue;
            }
            let len = peer.keys.seal(pair_id, &mut buf[..max], n)?;
            peer.mtu
                .direct((socket, dst))
                .on_packet_sent(now, pn, len, pto);
            peer.path.on_direct_sent(now, peer.conn.unacked() > 0);
            return Some(Transmit {
                dst,
                len,
                socket,
                ttl: None,
            });
        }
        None
    }
}

impl Relay for PeerSet {
    /// The next relayed peer's next packet, sealed with its pair's key, round-robin between
    /// peers starting after the last one served.
    fn write_relayed(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if buf.len() < OVERHEAD + MESSAGE_FRAME_OVERHEAD {
            return None;
        }
        // Peers after the cursor first, then the rest. The cursor's own peer may be gone (it
        // left), so the bound excludes the cursor rather than skipping the first entry.
        let order: smallvec::SmallVec<[HostId; 16]> = match self.cursor {
            Some(c) => {
                use std::ops::Bound::{Excluded, Unbounded};
                self.peers
                    .range((Excluded(c), Unbounded))
                    .chain(self.peers.range(..=c))
                    .map(|(k, _)| *k)
                    .collect()
            }
            None => self.peers.keys().copied().collect(),
        };
        for to in order {
            let Some(peer) = self.peers.get_mut(&to) else {
                continue;
            };
            // A peer with a direct path sends there (an orphan has no relay at all).
            if !peer.relayed() {
                continue;
            }
            // The server knows the pair by its id (for a pair carried over a reset, the new
            // server's: the keys stay ours, see `handle_packet`).
            let receiver = peer.server_pair;
            let pto = peer.conn.probe_timeout();
            // Sizes on this path count the relay header in front of the peer packet.
            let mtu = peer.mtu.relay();
            if let Some(size) = mtu.poll_probe(now) {
                let len = relay_peer_len(size);
                // (Over a TCP stream `buf` holds the base only: no probe above it fits.)
                if let Some((pn, len)) = seal_probe(&mut peer.keys, receiver, buf, len) {
                    mtu.on_probe_sent(now, pn, len + RELAY_HEADER_LEN, pto);
                    self.cursor = Some(to);
                    return Some(len);
                }
            }
            if !peer.conn.wants_transmit(now) {
                continue;
            }
            let max = relay_peer_len(mtu.current()).min(buf.len());
            if max < OVERHEAD + MESSAGE_FRAME_OVERHEAD {
                continue;
            }
            peer.conn.set_path_mtu(max + RELAY_HEADER_LEN);
            let pn = peer.keys.next_counter();
            let mut w = Writer::new(&mut buf[HEADER_LEN..max - TAG_LEN]);
            let n = peer.conn.write(now, pn, RELAY_PATH_OVERHEAD, &mut w);
            if n == 0 {
                continue;
            }
            let len = peer.keys.seal(receiver, &mut buf[..max], n)?;
            let size = len + RELAY_HEADER_LEN;
            peer.mtu.relay().on_packet_sent(now, pn, size, pto);
            self.cursor = Some(to);
            return Some(len);
        }
        None
    }
}

impl PeerSet {
    /// The next change to the birthday sockets.
    pub(super) fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.sockets.poll_socket_request()
    }

    /// The earliest deadline of any peer's reliability or path, with its reason; with
    /// `orphans`, the end of the orphans' lifetime too, and with `early`, the expiry of relayed
    /// packets waiting for their key.
    pub(super) fn poll_timeout(&self, orphans: bool, early: bool) -> Option<Timeout> {
        let peers = self
            .peers
            .values()
            .filter_map(|p| {
                // An orphan with no direct path cannot send until a server introduces it
                // again: its reliability deadlines (an ack or a retransmission due) would only
                // ask to be woken for nothing; its wait is bounded by the orphans' deadlines.
                let stalled = p.orphan && p.path.direct().is_none();
                Timeout::min([
                    Timeout::at(
                        p.conn.poll_timeout().filter(|_| !stalled),
                        "peer reliability",
                    ),
                    p.path.poll_timeout(busy_limit(&p.conn)),
                    Timeout::at(p.mtu.poll_timeout(), "path-MTU discovery"),
                ])
            })
            .min_by_key(|t| t.at);
        Timeout::min([
            peers,
            Timeout::at(
                self.orphans_until.filter(|_| orphans),
                "orphan pair lifetime",
            ),
            Timeout::at(
                self.relay_orphans_until,
                "relay-only peers waiting for the server",
            ),
            Timeout::at(
                self.early
                    .front()
                    .filter(|_| early)
                    .map(|(at, _, _)| *at + EARLY_TTL),
                "early relayed packet expiry",
            ),
        ])
    }

    /// The next event.
    pub(super) fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The next path change to tell the server.
    pub(super) fn poll_report(&mut self) -> Option<PathReport> {
        self.reports.pop_front()
    }

    /// Queues a report, dropping the oldest beyond [`MAX_REPORTS`] (figures only).
    fn report(&mut self, r: PathReport) {
        if self.reports.len() >= MAX_REPORTS {
            self.reports.pop_front();
        }
        self.reports.push_back(r);
    }

    // ---- internals ---------------------------------------------------------------------

    fn new_connection(&self) -> Connection {
        let c = &self.config;
        let mut conn = Connection::new(
            &c.channels,
            Limits {
                fragment_size: fragment_size(c),
                max_message_size: c.max_message_size,
                max_reassembly_bytes: c.max_reassembly_bytes,
                max_send_buffer: c.max_send_buffer_per_peer,
                mtu: c.base_datagram_size(),
                ack_delay: c.ack_delay,
            },
        );
        conn.set_spare_room_copies(c.spare_room_copies);
        conn
    }

    fn on_path_event(&mut self, now: Instant, peer: HostId, e: PathEvent, stats: &mut ClientStats) {
        if let Some(p) = self.peers.get(&peer).filter(|p| !p.orphan) {
            let since = now.saturating_duration_since(p.introduced).as_millis();
            let after_ms = u32::try_from(since).unwrap_or(PathReport::NOT_TIMED - 1);
            let direct = !matches!(e, PathEvent::Lost);
            self.report(PathReport {
                peer,
                direct,
                after_ms,
            });
        }
        let (path, reason) = match e {
            PathEvent::Validated(to) => {
                stats.direct_paths += 1;
                (Path::Direct(to), PathChangeReason::Punched)
            }
            PathEvent::Moved(to) => (Path::Direct(to), PathChangeReason::Punched),
            PathEvent::Lost => (Path::Relay, PathChangeReason::DirectLost),
        };
        self.events
            .push_back(ClientEvent::PathChanged { peer, path, reason });
        if matches!(e, PathEvent::Validated(_)) {
            self.update_socket_pool(now);
        }
    }

    /// Opens the birthday sockets while some peer needs them; closes the unused ones after,
    /// and the fresh sockets no retry or direct path holds any more.
    fn update_socket_pool(&mut self, now: Instant) {
        let want = self.peers.values().any(|p| p.path.wants_sockets());
        let keep: smallvec::SmallVec<[SocketId; 8]> = self
            .peers
            .values()
            .filter_map(|p| p.path.direct_socket())
            .filter(|s| *s != SocketId::PRIMARY)
            .collect();
        self.sockets
            .update(now, want, self.config.birthday_sockets, &keep);
        let fresh: smallvec::SmallVec<[SocketId; 8]> = self
            .peers
            .values()
            .flat_map(|p| {
                [
                    p.path.fresh_socket(),
                    p.path.held_socket(),
                    p.path.direct_socket(),
                ]
            })
            .flatten()
            .collect();
        self.sockets.keep_fresh(&fresh);
    }

    /// The new server introduced a peer this client kept talking to directly while the
    /// server was away. The pair goes on as it was (keys, reliability state, direct path:
    /// nothing in flight is lost or repeated, nothing is punched again); the server's pair id
    /// is used with the server, and its key is held in case the peer kept nothing.
    fn adopt(&mut self, peer: HostId, pair_id: u32, key: &[u8; 32], stats: &mut ClientStats) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.orphan = false;
        p.server_pair = pair_id;
        // Another server: another relay path.
        p.mtu.relay().reset();
        let direct = p.path.direct().is_some();
        if pair_id != p.pair_id {
            p.fresh = Some((*key, pair_id));
            self.pair_index.insert(pair_id, peer);
        }
        stats.pairs_carried_over += 1;
        if !direct {
            // Relayed again after the server was away: what waits for acknowledgements goes
            // now, not after a timeout that doubled while there was no relay.
            p.conn.path_restored();
        }
        if direct {
            // The new server counts it direct, without a time of its own.
            self.report(PathReport {
                peer,
                direct,
                after_ms: PathReport::NOT_TIMED,
            });
        }
    }

    /// A carried-over pair whose peer kept nothing of it: a new connection under the new
    /// server's key (`keys`, which just opened the peer's first packet under it) and pair id
    /// (messages unacknowledged on the old one are reported expired); the direct path stays.
    fn restart_pair(
        &mut self,
        peer_id: HostId,
        keys: PacketKeys,
        id: u32,
        stats: &mut ClientStats,
    ) {
        let conn = self.new_connection();
        let Some(p) = self.peers.get_mut(&peer_id) else {
            return;
        };
        p.fresh = None;
        let old_id = std::mem::replace(&mut p.pair_id, id);
        p.keys = keys;
        let old_conn = std::mem::replace(&mut p.conn, conn);
        self.pair_index.remove(&old_id);
        self.expire_all(peer_id, old_conn);
        stats.pairs_restarted += 1;
    }

    /// Moves a peer connection's events into the set's, and drops a peer that broke a limit.
    fn drain_peer(&mut self, peer_id: HostId) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        while let Some(e) = peer.conn.poll_event() {
            self.events.push_back(client_event(peer_id, e));
        }
        if let Some(reason) = peer.conn.violation() {
            self.remove_peer(peer_id);
            self.events.push_back(ClientEvent::PeerDropped {
                peer: peer_id,
                reason,
            });
        }
    }

    /// Drops (with an event) every peer that `which` picks.
    fn drop_where(&mut self, which: impl Fn(&Peer) -> bool, reason: PeerDropReason) {
        let ids: smallvec::SmallVec<[HostId; 8]> = self
            .peers
            .iter()
            .filter(|(_, p)| which(p))
            .map(|(id, _)| *id)
            .collect();
        for peer in ids {
            self.remove_peer(peer);
            self.events
                .push_back(ClientEvent::PeerDropped { peer, reason });
        }
    }

    /// Forgets a peer; its unacknowledged reliable messages are reported expired.
    pub(super) fn remove_peer(&mut self, peer_id: HostId) {
        let Some(old) = self.peers.remove(&peer_id) else {
            return;
        };
        self.pair_index.remove(&old.pair_id);
        if let Some((_, id)) = old.fresh {
            self.pair_index.remove(&id);
        }
        self.expire_all(peer_id, old.conn);
    }

    /// Ends a connection: what it still has for the application comes out (messages
    /// received, including those held for an earlier one that will never come now), and
    /// every message unacknowledged is reported expired.
    fn expire_all(&mut self, peer: HostId, mut conn: Connection) {
        conn.abandon();
        while let Some(e) = conn.poll_event() {
            self.events.push_back(client_event(peer, e));
        }
    }

    /// Test-only: pretend the server introduced `peer`, to forge relay requests the server
    /// must refuse.
    #[cfg(test)]
    pub(super) fn test_insert(&mut self, me: HostId, peer: HostId, pair_id: u32, key: [u8; 32]) {
        let conn = self.new_connection();
        let addr: SocketAddr = "0.0.0.0:0".parse().expect("literal");
        self.peers.insert(
            peer,
            Peer {
                pair_id,
                keys: PacketKeys::for_pair(&key, pair_id, me < peer),
                addr,
                relay_only: true,
                conn,
                path: PathAgent::new(
                    crate::tests::epoch(),
                    addr,
                    0,
                    pair_id,
                    false,
                    me < peer,
                    Duration::ZERO,
                ),
                mtu: PeerMtu::new(&self.config),
                recovering: false,
                server_pair: pair_id,
                orphan: false,
                fresh: None,
                introduced: crate::tests::epoch(),
            },
        );
        self.pair_index.insert(pair_id, peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: HostId = HostId(1);
    const B: HostId = HostId(2);
    const C: HostId = HostId(3);
    const KEY: [u8; 32] = [9; 32];

    /// One instant for the whole test (each `epoch()` call is a new one).
    fn t0() -> Instant {
        thread_local!(static T0: Instant = crate::tests::epoch());
        T0.with(|t| *t)
    }

    fn set() -> PeerSet {
        // Relay only, no path-MTU probes: these tests are about the relay (and count its
        // packets).
        let cfg = ClientConfig {
            direct_paths: false,
            max_datagram_size: crate::BASE_DATAGRAM_SIZE,
            ..ClientConfig::default()
        };
        PeerSet::new(Arc::new(cfg))
    }

    /// `me` learns of `peer` from the server, on pair `pair_id`.
    fn add(s: &mut PeerSet, me: HostId, peer: HostId, pair_id: u32, stats: &mut ClientStats) {
        let mut rng = crate::rng::derive(&[me.0 as u8; 32], b"test");
        let msg = ControlMsg::PeerAdd {
            peer: peer.0,
            pair_id,
            key: KEY,
            addr: "198.51.100.9:4000".parse().unwrap(),
            delay_ms: 0,
        };
        assert!(s.handle_control(t0(), &msg, me, None, &mut rng, stats));
    }

    /// The peer packets `s` hands the session to relay now, each in a buffer of `room`
    /// bytes: (to, packet), the receiver told by the pair id (7: B, 8: C, as the tests add).
    fn relay_out(s: &mut PeerSet, now: Instant, room: usize) -> Vec<(HostId, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; room];
        while let Some(n) = s.write_relayed(now, &mut buf) {
            let pair = SealedPacket::decode(&buf[..n]).unwrap().header.receiver;
            out.push((if pair == 7 { B } else { C }, buf[..n].to_vec()));
        }
        out
    }

    fn events(s: &mut PeerSet) -> Vec<ClientEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn a_message_goes_through_the_relay_sealed_end_to_end_and_the_ack_comes_back() {
        let mut stats = ClientStats::default();
        let (mut a, mut b) = (set(), set());
        add(&mut a, A, B, 7, &mut stats);
        add(&mut b, B, A, 7, &mut stats);
        let id = a.send(
            t0(),
            B,
            Channel::RELIABLE_ORDERED,
            b"hi",
            SendOptions::default(),
        );
        assert!(matches!(id, Some(Ok(_))));
        let out = relay_out(&mut a, t0(), 1200);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, B);
        assert!(!out[0].1.windows(2).any(|w| w == b"hi"), "sealed");
        b.handle_relayed(t0(), A, &out[0].1, true, Some(B), &mut stats);
        let got = events(&mut b);
        assert!(
            matches!(&got[..], [ClientEvent::PeerMessage { from: A, payload, .. }] if &payload[..] == b"hi"),
            "{got:?}"
        );
        // The ack goes back the same way (held up to the ack delay, then due).
        let later = t0() + Duration::from_millis(50);
        b.handle_timeout(later, false, &mut stats);
        let acks = relay_out(&mut b, later, 1200);
        assert_eq!(acks.len(), 1);
        a.handle_relayed(later, B, &acks[0].1, true, Some(A), &mut stats);
        assert_eq!(a.peer_stats(B).unwrap().unacked, 0);
        // A packet relayed from someone else than the pair's member is refused.
        b.handle_relayed(later, C, &out[0].1, true, Some(B), &mut stats);
        assert_eq!(stats.dropped.unknown_peer, 1);
        assert_eq!(stats.relayed_in, 2);
    }

    #[test]
    fn a_packet_that_comes_before_its_key_waits_for_it_and_expires_if_it_never_comes() {
        let mut stats = ClientStats::default();
        let (mut a, mut b) = (set(), set());
        add(&mut a, A, B, 7, &mut stats);
        let _ = a.send(
            t0(),
            B,
            Channel::RELIABLE_ORDERED,
            b"early",
            SendOptions::default(),
        );
        let out = relay_out(&mut a, t0(), 1200);
        b.handle_relayed(t0(), A, &out[0].1, true, Some(B), &mut stats);
        assert!(events(&mut b).is_empty(), "no key yet");
        assert_eq!(
            b.poll_timeout(false, true),
            Some(Timeout::new(
                t0() + EARLY_TTL,
                "early relayed packet expiry"
            ))
        );
        add(&mut b, B, A, 7, &mut stats);
        let got = events(&mut b);
        assert!(
            matches!(&got[..], [ClientEvent::PeerMessage { from: A, .. }]),
            "{got:?}"
        );
        // One from a member whose key never comes is counted as unknown when it expires.
        b.handle_relayed(t0(), C, &out[0].1, true, Some(B), &mut stats);
        b.handle_timeout(t0() + EARLY_TTL, false, &mut stats);
        assert_eq!(stats.dropped.unknown_peer, 1);
        assert_eq!(
            b.poll_timeout(false, true).map(|t| t.reason),
            Some("peer reliability")
        );
    }

    #[test]
    fn relayed_peers_share_server_packets_round_robin() {
        let mut stats = ClientStats::default();
        let mut a = set();
        add(&mut a, A, B, 7, &mut stats);
        add(&mut a, A, C, 8, &mut stats);
        for to in [B, C] {
            for _ in 0..20 {
                let _ = a.send(
                    t0(),
                    to,
                    Channel::RELIABLE_ORDERED,
                    &[0; 500],
                    SendOptions::default(),
                );
            }
        }
        // One peer packet per relay datagram: the peers take turns.
        let mut buf = vec![0u8; 600];
        let order: Vec<u32> = (0..6)
            .map(|_| {
                let n = a.write_relayed(t0(), &mut buf).unwrap();
                SealedPacket::decode(&buf[..n]).unwrap().header.receiver
            })
            .collect();
        assert_eq!(order, [7, 8, 7, 8, 7, 8]);
    }

    /// What `s` sends directly (probes, probe answers) over `secs` seconds of timers, from
    /// `t0()`, as (to, datagram).
    fn direct_out(
        s: &mut PeerSet,
        secs: u64,
        stats: &mut ClientStats,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1500];
        for ms in (0..secs * 1000).step_by(10) {
            let now = t0() + Duration::from_millis(ms);
            s.handle_timeout(now, false, stats);
            while let Some(t) = s.poll_transmit(now, &mut buf, stats) {
                out.push((t.dst, buf[..t.len].to_vec()));
            }
        }
        out
    }

    /// The server tells `me` about `peer` on pair 7: introduced at `addr`, then its LAN
    /// address, a new public address and its NAT (all of which a relay-only pair ignores).
    fn introduce(s: &mut PeerSet, me: HostId, peer: HostId, addr: &str, stats: &mut ClientStats) {
        let mut rng = crate::rng::derive(&[me.0 as u8; 32], b"test");
        let lan: SocketAddr = "192.168.7.7:5000".parse().unwrap();
        let moved: SocketAddr = "198.51.100.77:4100".parse().unwrap();
        for msg in [
            ControlMsg::PeerAdd {
                peer: peer.0,
                pair_id: 7,
                key: KEY,
                addr: addr.parse().unwrap(),
                delay_ms: 0,
            },
            ControlMsg::PeerCandidates {
                peer: peer.0,
                addrs: crate::wire::control::Candidates::new(&[lan]),
            },
            ControlMsg::PeerMoved {
                peer: peer.0,
                addr: moved,
            },
            ControlMsg::PeerNat {
                peer: peer.0,
                info: crate::wire::control::NatInfo {
                    mapping: 1,
                    filtering: 3,
                    allocation: 1,
                    delta: 1,
                    last_port: 4100,
                },
            },
        ] {
            assert!(s.handle_control(t0(), &msg, me, None, &mut rng, stats));
        }
    }

    fn direct_set(private: bool) -> PeerSet {
        let cfg = ClientConfig {
            private,
            ..ClientConfig::default()
        };
        PeerSet::new(Arc::new(cfg))
    }

    #[test]
    fn a_private_client_never_probes_even_when_a_server_hands_it_addresses() {
        let mut stats = ClientStats::default();
        // The control: a normal client told the same probes all of them.
        let mut normal = direct_set(false);
        introduce(&mut normal, A, B, "198.51.100.9:4000", &mut stats);
        let probed: Vec<SocketAddr> = direct_out(&mut normal, 4, &mut stats)
            .into_iter()
            .map(|(to, _)| to)
            .collect();
        for addr in ["198.51.100.77:4100", "192.168.7.7:5000"] {
            assert!(
                probed.contains(&addr.parse().unwrap()),
                "{addr}: {probed:?}"
            );
        }
        let mut private = direct_set(true);
        let mut stats = ClientStats::default();
        introduce(&mut private, A, B, "198.51.100.9:4000", &mut stats);
        assert_eq!(direct_out(&mut private, 40, &mut stats), []);
        assert_eq!(stats.probes_sent, 0);
        assert_eq!(private.peer_stats(B).unwrap().path, Path::Relay);
    }

    #[test]
    fn a_pair_the_server_introduces_without_an_address_is_neither_probed_nor_answered() {
        let mut stats = ClientStats::default();
        // A is told nothing about B (relay-only pair); B, a normal client that was told A's
        // address anyway (an old server), probes A.
        let mut a = direct_set(false);
        introduce(&mut a, A, B, "0.0.0.0:0", &mut stats);
        assert_eq!(a.addr(B), Some("0.0.0.0:0".parse().unwrap()));
        assert_eq!(direct_out(&mut a, 40, &mut stats), []);
        let mut b = direct_set(false);
        let mut b_stats = ClientStats::default();
        introduce(&mut b, B, A, "198.51.100.1:4000", &mut b_stats);
        let probes = direct_out(&mut b, 1, &mut b_stats);
        assert!(!probes.is_empty());
        let from: SocketAddr = "198.51.100.2:4000".parse().unwrap();
        let now = t0() + Duration::from_secs(41);
        for (_, datagram) in &probes {
            let packet = SealedPacket::decode(datagram).unwrap();
            let via = Via::Direct(SocketId::PRIMARY, from);
            assert!(a.handle_packet(now, via, &packet, Some(A), &mut stats));
        }
        let mut buf = vec![0u8; 1500];
        assert_eq!(
            a.poll_transmit(now, &mut buf, &mut stats),
            None,
            "no answer"
        );
        assert_eq!(stats.probes_sent, 0);
        assert_eq!(a.peer_stats(B).unwrap().path, Path::Relay);
    }

    #[test]
    fn losing_the_server_drops_peers_reachable_only_through_its_relay() {
        let mut stats = ClientStats::default();
        let mut a = set();
        add(&mut a, A, B, 7, &mut stats);
        let id = a
            .send(
                t0(),
                B,
                Channel::RELIABLE_ORDERED,
                b"x",
                SendOptions::default(),
            )
            .unwrap()
            .unwrap();
        let until = t0() + Duration::from_secs(600);
        a.keep_direct(until, None);
        assert_eq!(
            events(&mut a),
            [
                ClientEvent::MessageExpired {
                    peer: B,
                    channel: Channel::RELIABLE_ORDERED,
                    message_id: id
                },
                ClientEvent::PeerDropped {
                    peer: B,
                    reason: PeerDropReason::ServerLost
                }
            ]
        );
        assert!(!a.any_direct());
        assert_eq!(a.ids().count(), 0);
        assert_eq!(a.orphans_until(), Some(until));
    }
}
