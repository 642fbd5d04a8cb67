//! Groups, peers and peer traffic on the client: relay first (every peer message travels
//! through the server until a direct path exists), end-to-end sealed with the pair's key.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::Client;
use crate::crypto::PacketKeys;
use crate::error::{CommandError, SendError};
use crate::event::{ClientEvent, GroupId, HostId, MemberLeftReason, RoomError, RoomInfo, RoomOp};
use crate::rudp::conn::{ACK_RESERVE, ConnEvent, Connection, Limits};
use crate::rudp::{Channel, MessageId, Path, PeerStats, SendOptions};
use crate::time::{Duration, Instant};
use crate::wire::Writer;
use crate::wire::control::{
    ControlMsg, JOIN_CREATE, JOIN_MUST_CREATE, MAX_NAME_LEN, ROOM_HAS_PASSWORD,
};
use crate::wire::frame::{
    Frame, MESSAGE_FRAME_OVERHEAD, RELAY_FRAME_OVERHEAD, decode_all, encode_relay_with,
};
use crate::wire::sealed::{HEADER_LEN, OVERHEAD, SealedPacket, TAG_LEN};

/// How long a relayed packet that arrived before its pair key is kept. The key travels on the
/// reliable control stream ahead of any relayed packet, so only a lost control packet makes a
/// peer packet early, and its retransmission comes within a few RTOs.
pub(super) const EARLY_TTL: Duration = Duration::from_secs(2);
/// Early packets kept at most.
const EARLY_CAP: usize = 64;
/// Bytes around a peer packet's frames when it travels through the relay: the server
/// session packet, the relay frame and the peer packet's own header and tag.
const RELAYED_OVERHEAD: usize = OVERHEAD + RELAY_FRAME_OVERHEAD + OVERHEAD;

/// A member this client shares at least one group with.
pub(super) struct Peer {
    /// The pair's id (and epoch) as the server assigned it.
    pub(super) pair_id: u32,
    /// End-to-end protection with this peer.
    pub(super) keys: PacketKeys,
    /// The peer's address as the server observed it.
    pub(super) addr: SocketAddr,
    /// Reliability, channels and congestion control, whatever the path.
    pub(super) conn: Connection,
    /// Where its packets go.
    pub(super) path: Path,
    /// Hole punching and the direct path.
    pub(super) punch: super::punch::Punch,
    /// The server said the peer went quiet (`PeerRecovering` was reported).
    pub(super) recovering: bool,
    /// The pair id the current server knows this pair by (differs from `pair_id` for a pair
    /// carried over a server restart: see `adopt`).
    pub(super) server_pair: u32,
    /// Kept from an earlier server session, not (yet) introduced by the current one: only its
    /// direct path reaches it (no relay), until the pair lifetime ends.
    pub(super) orphan: bool,
    /// For a pair carried over: the new server's key and pair id. Packets from the peer under
    /// them mean it kept nothing of the old pair (it restarted): the connection starts over.
    pub(super) fresh: Option<([u8; 32], u32)>,
}

impl Peer {
    /// Its traffic goes through the relay: no direct path, and the server knows the pair.
    pub(super) fn relayed(&self) -> bool {
        self.punch.direct().is_none() && !self.orphan
    }
}

/// Writes Relay frames for every peer with something to send (acks, data, probes), one
/// sealed peer packet per frame, starting after `cursor` for fairness. Returns the number of
/// peer packets written and the peer to start after next time.
pub(super) fn write_relay_frames(
    now: Instant,
    w: &mut Writer<'_>,
    peers: &mut BTreeMap<HostId, Peer>,
    cursor: Option<HostId>,
) -> (u64, Option<HostId>) {
    let mut packets = 0;
    let mut last = cursor;
    // Peers after the cursor first, then the rest. The cursor's own peer may be gone (it
    // left), so the bound excludes the cursor rather than skipping the first entry.
    let order: smallvec::SmallVec<[HostId; 16]> = match cursor {
        Some(c) => {
            use std::ops::Bound::{Excluded, Unbounded};
            peers
                .range((Excluded(c), Unbounded))
                .chain(peers.range(..=c))
                .map(|(k, _)| *k)
                .collect()
        }
        None => peers.keys().copied().collect(),
    };
    for to in order {
        let Some(peer) = peers.get_mut(&to) else {
            continue;
        };
        if !peer.relayed() {
            continue; // its traffic goes on the direct path (or nowhere, for an orphan)
        }
        while peer.conn.wants_transmit(now) {
            if w.remaining() < RELAY_FRAME_OVERHEAD + OVERHEAD + MESSAGE_FRAME_OVERHEAD {
                return (packets, last);
            }
            let pair_id = peer.pair_id;
            let (keys, conn) = (&mut peer.keys, &mut peer.conn);
            let written = encode_relay_with(w, to.0, |tail| {
                if tail.len() < OVERHEAD + 1 {
                    return None;
                }
                let pn = keys.next_counter();
                let body_end = tail.len() - TAG_LEN;
                let mut bw = Writer::new(&mut tail[HEADER_LEN..body_end]);
                let n = conn.write(now, pn, RELAYED_OVERHEAD, &mut bw);
                if n == 0 {
                    return None;
                }
                keys.seal(pair_id, tail, n)
            });
            if !written {
                break;
            }
            packets += 1;
            last = Some(to);
        }
    }
    (packets, last)
}

fn valid_name(s: &str) -> Result<(), CommandError> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(CommandError::InvalidName { max: MAX_NAME_LEN });
    }
    Ok(())
}

impl Client {
    // ---- getters -----------------------------------------------------------------------

    /// Groups this client is in, in id order.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// Members of a group this client is in (itself included), in join order.
    pub fn group_members(&self, group: GroupId) -> Option<&[HostId]> {
        self.groups.get(&group).map(|m| &m[..])
    }

    /// Members this client shares a group with, in id order.
    pub fn peers(&self) -> impl Iterator<Item = HostId> + '_ {
        self.peers.keys().copied()
    }

    /// A peer's public address as the server observed it.
    pub fn peer_addr(&self, peer: HostId) -> Option<SocketAddr> {
        self.peers.get(&peer).map(|p| p.addr)
    }

    /// Largest reliable message [`Client::send`] accepts (fragmented on the wire).
    pub fn max_message_size(&self) -> usize {
        self.config.max_message_size
    }

    /// Largest message an unreliable channel accepts: one fragment, no fragmentation.
    pub fn max_unreliable_payload(&self) -> usize {
        self.fragment_size()
    }

    /// Bytes of one fragment: what fits a relayed peer packet with room left for an ack.
    fn fragment_size(&self) -> usize {
        self.config.max_datagram_size - RELAYED_OVERHEAD - MESSAGE_FRAME_OVERHEAD - ACK_RESERVE
    }

    pub(super) fn new_connection(&self) -> Connection {
        Connection::new(
            &self.config.channels,
            Limits {
                fragment_size: self.fragment_size(),
                max_message_size: self.config.max_message_size,
                max_reassembly_bytes: self.config.max_reassembly_bytes,
                max_send_buffer: self.config.max_send_buffer_per_peer,
                mtu: self.config.max_datagram_size,
                ack_delay: self.config.ack_delay,
            },
        )
    }

    /// Counters of one channel of the connection with a peer.
    pub fn channel_stats(&self, peer: HostId, channel: Channel) -> Option<crate::ChannelStats> {
        self.peers.get(&peer)?.conn.channel_stats(channel)
    }

    /// Counters and estimates of the connection with a peer.
    pub fn peer_stats(&self, peer: HostId) -> Option<PeerStats> {
        let p = self.peers.get(&peer)?;
        let s = p.conn.stats;
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
            path: p.path,
        })
    }

    // ---- commands: peers ---------------------------------------------------------------

    /// Queues a message for a member this client shares a group with, on `channel` (see
    /// [`crate::ChannelConfig::defaults`] for the default channels). Works from the moment
    /// [`ClientEvent::MemberJoined`] names that member: until a direct path exists the message
    /// goes through the server's relay, sealed end to end with the pair's key.
    ///
    /// # Errors
    /// [`SendError::NotConnected`], [`SendError::UnknownPeer`],
    /// [`SendError::UnknownChannel`], [`SendError::PayloadTooLarge`] (see
    /// [`Client::max_message_size`] and [`Client::max_unreliable_payload`]) or
    /// [`SendError::QueueFull`].
    pub fn send(
        &mut self,
        now: Instant,
        to: HostId,
        channel: Channel,
        payload: &[u8],
    ) -> Result<MessageId, SendError> {
        self.send_with(now, to, channel, payload, SendOptions::default())
    }

    /// [`Client::send`] with a deadline or retry budget; a reliable message that misses
    /// either is reported as [`ClientEvent::MessageExpired`] and never delivered afterwards.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub fn send_with(
        &mut self,
        now: Instant,
        to: HostId,
        channel: Channel,
        payload: &[u8],
        options: SendOptions,
    ) -> Result<MessageId, SendError> {
        let now = self.clock.advance(now);
        // Peers exist while connected, and (those kept on a direct path) while detached or
        // registering again after losing the server.
        let Some(peer) = self.peers.get_mut(&to) else {
            return Err(if self.is_connected() || self.is_detached() {
                SendError::UnknownPeer
            } else {
                SendError::NotConnected
            });
        };
        let b = self.send_arena.copy(payload);
        peer.conn.send(now, channel, b, options)
    }

    /// Queues a message for every other member of `group`.
    ///
    /// # Errors
    /// As [`Client::send`], plus [`SendError::NotMember`]. On an error no member gets it.
    pub fn send_to_group(
        &mut self,
        now: Instant,
        group: GroupId,
        channel: Channel,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let now = self.clock.advance(now);
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        let me = self.host_id();
        let Some(members) = self.groups.get(&group) else {
            return Err(SendError::NotMember);
        };
        let targets: smallvec::SmallVec<[HostId; 16]> = members
            .iter()
            .copied()
            .filter(|m| Some(*m) != me && self.peers.contains_key(m))
            .collect();
        // Check every target first so that the send is all or nothing.
        for t in &targets {
            self.peers[t].conn.check_send(channel, payload.len())?;
        }
        let b = self.send_arena.copy(payload);
        for t in targets {
            if let Some(p) = self.peers.get_mut(&t) {
                p.conn
                    .send(now, channel, b.clone(), SendOptions::default())?;
            }
        }
        Ok(())
    }

    // ---- commands: rooms ---------------------------------------------------------------

    /// Joins the room `name`, creating it (with `max_members`, 0 for the server's default) if
    /// `create` and it does not exist. The answer is [`ClientEvent::RoomJoined`] (then
    /// `MemberJoined` for each member) or [`ClientEvent::RoomFailed`].
    ///
    /// # Errors
    /// [`CommandError::NotConnected`], [`CommandError::InvalidName`],
    /// [`CommandError::QueueFull`].
    pub fn join_room(
        &mut self,
        now: Instant,
        name: &str,
        password: &str,
        create: bool,
        max_members: u16,
    ) -> Result<(), CommandError> {
        self.clock.advance(now);
        valid_name(name)?;
        if password.len() > MAX_NAME_LEN {
            return Err(CommandError::InvalidName { max: MAX_NAME_LEN });
        }
        self.push_control(&ControlMsg::RoomJoin {
            flags: if create { JOIN_CREATE } else { 0 },
            max_members,
            name,
            password,
        })?;
        self.remember_room_request(name, password, max_members);
        Ok(())
    }

    /// Creates the room `name`; fails with [`RoomError::AlreadyExists`] if it exists.
    ///
    /// # Errors
    /// As [`Client::join_room`].
    pub fn create_room(
        &mut self,
        now: Instant,
        name: &str,
        password: &str,
        max_members: u16,
    ) -> Result<(), CommandError> {
        self.clock.advance(now);
        valid_name(name)?;
        if password.len() > MAX_NAME_LEN {
            return Err(CommandError::InvalidName { max: MAX_NAME_LEN });
        }
        self.push_control(&ControlMsg::RoomJoin {
            flags: JOIN_MUST_CREATE,
            max_members,
            name,
            password,
        })?;
        self.remember_room_request(name, password, max_members);
        Ok(())
    }

    /// Joins any room that has no password and room to spare.
    ///
    /// # Errors
    /// [`CommandError::NotConnected`] or [`CommandError::QueueFull`].
    pub fn join_random_room(&mut self, now: Instant) -> Result<(), CommandError> {
        self.clock.advance(now);
        self.push_control(&ControlMsg::RoomJoinRandom)
    }

    /// Asks for one page of the room list, starting at `offset`; answered by
    /// [`ClientEvent::RoomList`].
    ///
    /// # Errors
    /// [`CommandError::NotConnected`] or [`CommandError::QueueFull`].
    pub fn list_rooms(&mut self, now: Instant, offset: u16) -> Result<(), CommandError> {
        self.clock.advance(now);
        self.push_control(&ControlMsg::RoomListGet { offset })
    }

    /// Leaves a room.
    ///
    /// # Errors
    /// [`CommandError::NotConnected`], [`CommandError::NotMember`] or
    /// [`CommandError::QueueFull`].
    pub fn leave_room(&mut self, now: Instant, group: GroupId) -> Result<(), CommandError> {
        self.clock.advance(now);
        if self.is_connected() && !self.groups.contains_key(&group) {
            return Err(CommandError::NotMember);
        }
        self.push_control(&ControlMsg::RoomLeave { group: group.0 })?;
        self.rooms.remove(&group);
        Ok(())
    }

    /// Removes a member from a room this client owns.
    ///
    /// # Errors
    /// [`CommandError::NotConnected`], [`CommandError::NotMember`] or
    /// [`CommandError::QueueFull`].
    pub fn kick(
        &mut self,
        now: Instant,
        group: GroupId,
        member: HostId,
    ) -> Result<(), CommandError> {
        self.clock.advance(now);
        if self.is_connected() && !self.groups.contains_key(&group) {
            return Err(CommandError::NotMember);
        }
        self.push_control(&ControlMsg::RoomKick {
            group: group.0,
            member: member.0,
        })
    }

    // ---- inputs ------------------------------------------------------------------------

    /// A control message from the server, in order.
    pub(super) fn on_control(&mut self, now: Instant, msg: ControlMsg<'_>) {
        let Some(me) = self.host_id() else {
            return;
        };
        match msg {
            ControlMsg::PeerAdd {
                peer,
                pair_id,
                key,
                addr,
                delay_ms,
            } => {
                let peer = HostId(peer);
                if self.peers.get(&peer).is_some_and(|p| p.orphan) {
                    self.adopt(peer, pair_id, &key);
                    return;
                }
                self.remove_peer(peer);
                let conn = self.new_connection();
                let nonce = rand::RngCore::next_u64(&mut self.rng);
                let punch = super::punch::Punch::new(
                    now,
                    addr,
                    nonce,
                    self.config.direct_paths,
                    me < peer,
                    Duration::from_millis(u64::from(delay_ms)),
                );
                self.peers.insert(
                    peer,
                    Peer {
                        pair_id,
                        keys: PacketKeys::for_pair(&key, pair_id, me < peer),
                        addr,
                        conn,
                        path: Path::Relay,
                        punch,
                        recovering: false,
                        server_pair: pair_id,
                        orphan: false,
                        fresh: None,
                    },
                );
                self.pair_index.insert(pair_id, peer);
                // Replay relayed packets that arrived before this key.
                let early = std::mem::take(&mut self.early);
                for (at, from, packet) in early {
                    if from == peer {
                        self.on_relayed(now, from, &packet);
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
            ControlMsg::MemberJoined {
                group,
                member,
                member_count,
            } => {
                let (group, member) = (GroupId(group), HostId(member));
                let members = self.groups.entry(group).or_default();
                if !members.contains(&member) {
                    members.push(member);
                }
                let _ = self.push_control(&ControlMsg::MemberAck {
                    group: group.0,
                    member: member.0,
                });
                self.push_event(ClientEvent::MemberJoined {
                    group,
                    member,
                    member_count,
                });
            }
            ControlMsg::MemberLeft {
                group,
                member,
                reason,
            } => {
                let (group, member) = (GroupId(group), HostId(member));
                if member == me {
                    self.groups.remove(&group);
                    self.rooms.remove(&group);
                } else if let Some(m) = self.groups.get_mut(&group) {
                    m.retain(|x| *x != member);
                }
                self.push_event(ClientEvent::MemberLeft {
                    group,
                    member,
                    reason: MemberLeftReason::from_code(reason),
                });
            }
            ControlMsg::GroupDestroyed { group } => {
                let group = GroupId(group);
                self.groups.remove(&group);
                self.rooms.remove(&group);
                self.push_event(ClientEvent::GroupDestroyed { group });
            }
            ControlMsg::RoomJoined { group, owner, name } => {
                let (password, max) = self.room_requests.remove(name).unwrap_or_default();
                if self.rooms.len() < 2 * super::MAX_ROOM_REQUESTS {
                    self.rooms
                        .insert(GroupId(group), (name.to_owned(), password, max));
                }
                self.push_event(ClientEvent::RoomJoined {
                    group: GroupId(group),
                    name: name.to_owned(),
                    owner: HostId(owner),
                });
            }
            ControlMsg::RoomOwner { group, owner } => {
                self.push_event(ClientEvent::RoomOwnerChanged {
                    group: GroupId(group),
                    owner: HostId(owner),
                });
            }
            ControlMsg::RoomList {
                total,
                offset,
                entries,
            } => {
                let rooms = entries
                    .iter()
                    .map(|e| RoomInfo {
                        name: e.name.to_owned(),
                        members: e.members,
                        max_members: e.max_members,
                        has_password: e.flags & ROOM_HAS_PASSWORD != 0,
                    })
                    .collect();
                self.push_event(ClientEvent::RoomList {
                    total,
                    offset,
                    rooms,
                });
            }
            ControlMsg::RoomError { op, reason } => {
                self.push_event(ClientEvent::RoomFailed {
                    op: RoomOp::from_code(op),
                    error: RoomError::from_code(reason),
                });
            }
            ControlMsg::App { data } => {
                let payload = self.recv_arena.copy(data);
                self.push_event(ClientEvent::Message { payload });
            }
            ControlMsg::PeerCandidates { peer, addrs } => {
                if let Some(p) = self.peers.get_mut(&HostId(peer)) {
                    p.punch.add_candidates(now, addrs.iter());
                }
            }
            ControlMsg::PeerMoved { peer, addr } => {
                if let Some(p) = self.peers.get_mut(&HostId(peer)) {
                    p.addr = addr;
                    p.punch.peer_moved(now, addr);
                }
            }
            ControlMsg::PeerOffline { peer } => {
                let id = HostId(peer);
                if let Some(p) = self.peers.get_mut(&id).filter(|p| !p.recovering) {
                    p.recovering = true;
                    self.push_event(ClientEvent::PeerRecovering { peer: id });
                }
            }
            ControlMsg::PeerOnline { peer } => {
                let id = HostId(peer);
                if let Some(p) = self.peers.get_mut(&id).filter(|p| p.recovering) {
                    p.recovering = false;
                    // Whatever waited for it goes now, not after a backed-off timeout; a lost
                    // direct path is probed again at once.
                    p.conn.path_restored();
                    p.punch.peer_moved(now, p.addr);
                    self.push_event(ClientEvent::PeerRecovered { peer: id });
                }
            }
            ControlMsg::Ticket { ticket } => self.ticket = Some(ticket.to_vec()),
            ControlMsg::PeerNat { peer, info } => {
                if let Some(p) = self.peers.get_mut(&HostId(peer)) {
                    p.punch.peer_nat = Some(info);
                    p.punch
                        .replan(now, self.nat_behavior.as_ref(), &self.config);
                    self.update_socket_pool();
                }
            }
            _ => self.stats.dropped.unexpected += 1,
        }
    }

    /// The new server introduced a peer this client kept talking to directly while the
    /// server was away. The pair goes on as it was (keys, reliability state, direct path:
    /// nothing in flight is lost or repeated, nothing is punched again); the server's pair id
    /// is used with the server, and its key is held in case the peer kept nothing.
    fn adopt(&mut self, peer: HostId, pair_id: u32, key: &[u8; 32]) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.orphan = false;
        p.server_pair = pair_id;
        if pair_id != p.pair_id {
            p.fresh = Some((*key, pair_id));
            self.pair_index.insert(pair_id, peer);
        }
        self.stats.pairs_carried_over += 1;
    }

    /// A peer packet the server relayed from `from`.
    pub(super) fn on_relayed(&mut self, now: Instant, from: HostId, packet: &[u8]) {
        let Ok(p) = SealedPacket::decode(packet) else {
            self.stats.dropped.malformed += 1;
            return;
        };
        if !p.header.peer {
            self.stats.dropped.malformed += 1;
            return;
        }
        match self.pair_index.get(&p.header.receiver) {
            Some(&peer) if peer == from => {
                self.stats.relayed_in += 1;
                let server = self.server_addr();
                if let Some(server) = server {
                    self.on_peer_packet(now, server, &p, true);
                }
            }
            Some(_) => self.stats.dropped.unknown_peer += 1,
            None if self.early.len() < EARLY_CAP && !self.peers.contains_key(&from) => {
                let b = self.recv_arena.copy(packet);
                self.early.push_back((now, from, b));
            }
            None => self.stats.dropped.unknown_peer += 1,
        }
    }

    /// A peer packet, direct from `from` or (with `relayed`) unwrapped from a relay frame.
    pub(super) fn on_peer_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &SealedPacket<'_>,
        relayed: bool,
    ) {
        let Some(&peer_id) = self.pair_index.get(&packet.header.receiver) else {
            self.stats.dropped.unknown_peer += 1;
            return;
        };
        let lower = self.host_id().is_some_and(|me| me < peer_id);
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            self.stats.dropped.unknown_peer += 1;
            return;
        };
        let pn = packet.header.counter;
        let size = packet.aad.len() + packet.ciphertext_and_tag.len();
        let mut scratch = std::mem::take(&mut self.peer_scratch);
        let fresh = peer
            .fresh
            .as_ref()
            .is_some_and(|(_, id)| *id == packet.header.receiver && *id != peer.pair_id);
        if fresh {
            // Authentic under the new server's key: the peer started this pair over.
            let ok = peer.fresh.as_ref().is_some_and(|(key, id)| {
                PacketKeys::for_pair(key, *id, lower)
                    .open(packet, &mut scratch)
                    .is_ok()
            });
            if !ok {
                self.stats.dropped.auth_failed += 1;
                self.peer_scratch = scratch;
                return;
            }
            self.peer_scratch = scratch;
            self.restart_pair(peer_id);
            return self.on_peer_packet(now, from, packet, relayed);
        }
        match peer.keys.open(packet, &mut scratch) {
            Err(e) => self.stats.dropped.count_open(e),
            Ok(plaintext) => match decode_all(plaintext) {
                Err(_) => self.stats.dropped.bad_frames += 1,
                Ok(frames) => {
                    peer.conn.handle_packet(now, pn, size, &frames);
                    let is_path =
                        |f: &Frame<'_>| matches!(f, Frame::Probe { .. } | Frame::ProbeAck { .. });
                    let conn_frames = frames
                        .iter()
                        .any(|f| !is_path(f) && !matches!(f, Frame::Padding(_)));
                    let socket = self.rx_socket;
                    if !relayed {
                        self.on_direct_packet(now, peer_id, socket, from, conn_frames);
                    }
                    for f in frames.iter().filter(|f| is_path(f)) {
                        self.on_path_frame(now, peer_id, socket, from, relayed, f);
                    }
                }
            },
        }
        self.peer_scratch = scratch;
        self.drain_peer(peer_id);
    }

    /// Moves a peer connection's events into the client's, and drops a peer that broke a
    /// limit.
    pub(super) fn drain_peer(&mut self, peer_id: HostId) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let mut out: smallvec::SmallVec<[ClientEvent; 8]> = smallvec::SmallVec::new();
        while let Some(e) = peer.conn.poll_event() {
            out.push(match e {
                ConnEvent::Message { channel, payload } => ClientEvent::PeerMessage {
                    from: peer_id,
                    channel,
                    payload,
                },
                ConnEvent::Expired { channel, id } => ClientEvent::MessageExpired {
                    peer: peer_id,
                    channel,
                    message_id: id,
                },
            });
            if out.len() == out.inline_size() {
                for e in out.drain(..) {
                    self.push_event(e);
                }
                return self.drain_peer(peer_id);
            }
        }
        let violation = peer.conn.violation();
        for e in out {
            self.push_event(e);
        }
        if let Some(reason) = violation {
            self.remove_peer(peer_id);
            self.push_event(ClientEvent::PeerDropped {
                peer: peer_id,
                reason,
            });
        }
    }

    /// A carried-over pair whose peer kept nothing of it: a new connection under the new
    /// server's key and pair id (messages unacknowledged on the old one are reported
    /// expired); the direct path stays.
    fn restart_pair(&mut self, peer_id: HostId) {
        let Some(me) = self.host_id() else {
            return;
        };
        let conn = self.new_connection();
        let Some(p) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Some((key, id)) = p.fresh.take() else {
            return;
        };
        let old_id = std::mem::replace(&mut p.pair_id, id);
        p.keys = PacketKeys::for_pair(&key, id, me < peer_id);
        let mut old_conn = std::mem::replace(&mut p.conn, conn);
        self.pair_index.remove(&old_id);
        old_conn.abandon();
        while let Some(e) = old_conn.poll_event() {
            if let ConnEvent::Expired { channel, id } = e {
                self.push_event(ClientEvent::MessageExpired {
                    peer: peer_id,
                    channel,
                    message_id: id,
                });
            }
        }
        self.stats.pairs_restarted += 1;
    }

    /// Forgets a peer; its unacknowledged reliable messages are reported expired.
    pub(super) fn remove_peer(&mut self, peer_id: HostId) {
        let Some(mut old) = self.peers.remove(&peer_id) else {
            return;
        };
        self.pair_index.remove(&old.pair_id);
        if let Some((_, id)) = old.fresh {
            self.pair_index.remove(&id);
        }
        old.conn.abandon();
        while let Some(e) = old.conn.poll_event() {
            if let ConnEvent::Expired { channel, id } = e {
                self.push_event(ClientEvent::MessageExpired {
                    peer: peer_id,
                    channel,
                    message_id: id,
                });
            }
        }
    }

    /// Test-only: pretend the server introduced `peer`, to forge relay requests the server
    /// must refuse.
    #[cfg(test)]
    pub(crate) fn test_insert_peer(&mut self, peer: HostId, pair_id: u32, key: [u8; 32]) {
        let me = self.host_id().unwrap_or(HostId(0));
        let conn = self.new_connection();
        let addr: SocketAddr = "0.0.0.0:0".parse().expect("literal");
        self.peers.insert(
            peer,
            Peer {
                pair_id,
                keys: PacketKeys::for_pair(&key, pair_id, me < peer),
                addr,
                conn,
                path: Path::Relay,
                punch: super::punch::Punch::new(
                    crate::tests::epoch(),
                    addr,
                    0,
                    false,
                    me < peer,
                    Duration::ZERO,
                ),
                recovering: false,
                server_pair: pair_id,
                orphan: false,
                fresh: None,
            },
        );
        self.pair_index.insert(pair_id, peer);
    }
}
