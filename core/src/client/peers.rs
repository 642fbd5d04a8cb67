//! Groups, peers and peer traffic on the client: relay first (every peer message travels
//! through the server until a direct path exists), end-to-end sealed with the pair's key.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::Bytes;

use super::Client;
use crate::crypto::PacketKeys;
use crate::error::{CommandError, SendError};
use crate::event::{ClientEvent, GroupId, HostId, MemberLeftReason, RoomError, RoomInfo, RoomOp};
use crate::time::{Duration, Instant};
use crate::wire::Writer;
use crate::wire::control::{
    ControlMsg, JOIN_CREATE, JOIN_MUST_CREATE, MAX_NAME_LEN, ROOM_HAS_PASSWORD,
};
use crate::wire::frame::{
    DATAGRAM_FRAME_OVERHEAD, Frame, Frames, RELAY_FRAME_OVERHEAD, encode_relay_with,
};
use crate::wire::sealed::{OVERHEAD, SealedPacket};

/// How long a relayed packet that arrived before its pair key is kept. The key travels on the
/// reliable control stream ahead of any relayed packet, so only a lost control packet makes a
/// peer packet early, and its retransmission comes within a few RTOs.
pub(super) const EARLY_TTL: Duration = Duration::from_secs(2);
/// Early packets kept at most.
const EARLY_CAP: usize = 64;

/// A member this client shares at least one group with.
pub(super) struct Peer {
    /// The pair's id (and epoch) as the server assigned it.
    pub(super) pair_id: u32,
    /// End-to-end protection with this peer.
    pub(super) keys: PacketKeys,
    /// The peer's address as the server observed it.
    pub(super) addr: SocketAddr,
}

/// Writes Relay frames for queued peer messages, several messages to the same peer sharing
/// one sealed peer packet. Returns the number of peer packets written.
pub(super) fn write_relay_frames(
    w: &mut Writer<'_>,
    peers: &mut std::collections::BTreeMap<HostId, Peer>,
    queue: &mut VecDeque<(HostId, Bytes)>,
) -> u64 {
    let mut packets = 0;
    while let Some((to, first)) = queue.front() {
        let (to, first_len) = (*to, first.len());
        let Some(peer) = peers.get_mut(&to) else {
            queue.pop_front(); // the pair was torn down while the message waited
            continue;
        };
        if w.remaining() < RELAY_FRAME_OVERHEAD + OVERHEAD + DATAGRAM_FRAME_OVERHEAD + first_len {
            break;
        }
        let pair_id = peer.pair_id;
        let keys = &mut peer.keys;
        let written = encode_relay_with(w, to.0, |tail| {
            let max = tail.len();
            keys.seal_frames(pair_id, tail, max, |iw| {
                while let Some((t, p)) = queue.front() {
                    if *t != to || iw.remaining() < p.len() + DATAGRAM_FRAME_OVERHEAD {
                        break;
                    }
                    let _ = Frame::Datagram { payload: p }.encode(iw);
                    queue.pop_front();
                }
            })
        });
        if !written {
            break;
        }
        packets += 1;
    }
    packets
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

    /// Largest payload [`Client::send`] accepts.
    pub fn max_peer_payload(&self) -> usize {
        self.config.max_datagram_size
            - OVERHEAD
            - RELAY_FRAME_OVERHEAD
            - OVERHEAD
            - DATAGRAM_FRAME_OVERHEAD
    }

    // ---- commands: peers ---------------------------------------------------------------

    /// Queues an unreliable message for a member this client shares a group with. Works from
    /// the moment [`ClientEvent::MemberJoined`] names that member: until a direct path
    /// exists the message goes through the server's relay, sealed end to end with the pair's
    /// key.
    ///
    /// # Errors
    /// [`SendError::NotConnected`], [`SendError::UnknownPeer`],
    /// [`SendError::PayloadTooLarge`] (see [`Client::max_peer_payload`]) or
    /// [`SendError::QueueFull`].
    pub fn send(&mut self, now: Instant, to: HostId, payload: &[u8]) -> Result<(), SendError> {
        self.clock.advance(now);
        self.check_peer_send(payload.len(), 1)?;
        if !self.peers.contains_key(&to) {
            return Err(SendError::UnknownPeer);
        }
        let b = self.send_arena.copy(payload);
        self.peer_out.push_back((to, b));
        Ok(())
    }

    /// Queues an unreliable message for every other member of `group`.
    ///
    /// # Errors
    /// As [`Client::send`], plus [`SendError::NotMember`].
    pub fn send_to_group(
        &mut self,
        now: Instant,
        group: GroupId,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.clock.advance(now);
        let me = self.host_id();
        let Some(members) = self.groups.get(&group) else {
            return Err(if self.is_connected() {
                SendError::NotMember
            } else {
                SendError::NotConnected
            });
        };
        let targets: smallvec::SmallVec<[HostId; 16]> = members
            .iter()
            .copied()
            .filter(|m| Some(*m) != me && self.peers.contains_key(m))
            .collect();
        self.check_peer_send(payload.len(), targets.len())?;
        let b = self.send_arena.copy(payload);
        for t in targets {
            self.peer_out.push_back((t, b.clone()));
        }
        Ok(())
    }

    fn check_peer_send(&self, len: usize, count: usize) -> Result<(), SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        if len > self.max_peer_payload() {
            return Err(SendError::PayloadTooLarge {
                max: self.max_peer_payload(),
            });
        }
        if self.peer_out.len() + count > self.config.max_queued_peer_messages {
            return Err(SendError::QueueFull);
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
        })
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
        })
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
        self.push_control(&ControlMsg::RoomLeave { group: group.0 })
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
            } => {
                let peer = HostId(peer);
                if let Some(old) = self.peers.remove(&peer) {
                    self.pair_index.remove(&old.pair_id);
                }
                self.peers.insert(
                    peer,
                    Peer {
                        pair_id,
                        keys: PacketKeys::for_pair(&key, pair_id, me < peer),
                        addr,
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
                if self.peers.get(&peer).is_some_and(|p| p.pair_id == pair_id) {
                    self.peers.remove(&peer);
                    self.pair_index.remove(&pair_id);
                    self.peer_out.retain(|(t, _)| *t != peer);
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
                self.push_event(ClientEvent::GroupDestroyed { group });
            }
            ControlMsg::RoomJoined { group, owner, name } => {
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
            _ => self.stats.dropped.unexpected += 1,
        }
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
        _now: Instant,
        _from: SocketAddr,
        packet: &SealedPacket<'_>,
        _relayed: bool,
    ) {
        let Some(&peer_id) = self.pair_index.get(&packet.header.receiver) else {
            self.stats.dropped.unknown_peer += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            self.stats.dropped.unknown_peer += 1;
            return;
        };
        let mut scratch = std::mem::take(&mut self.peer_scratch);
        match peer.keys.open(packet, &mut scratch) {
            Err(e) => self.stats.dropped.count_open(e),
            Ok(plaintext) => {
                if Frames::new(plaintext).any(|f| f.is_err()) {
                    self.stats.dropped.bad_frames += 1;
                } else {
                    for f in Frames::new(plaintext).flatten() {
                        match f {
                            Frame::Datagram { payload } => {
                                let payload = self.recv_arena.copy(payload);
                                self.push_event(ClientEvent::PeerMessage {
                                    from: peer_id,
                                    payload,
                                });
                            }
                            Frame::Padding(_) | Frame::Ping => {}
                            _ => self.stats.dropped.unexpected += 1,
                        }
                    }
                }
            }
        }
        self.peer_scratch = scratch;
    }

    /// Test-only: pretend the server introduced `peer`, to forge relay requests the server
    /// must refuse.
    #[cfg(test)]
    pub(crate) fn test_insert_peer(&mut self, peer: HostId, pair_id: u32, key: [u8; 32]) {
        let me = self.host_id().unwrap_or(HostId(0));
        self.peers.insert(
            peer,
            Peer {
                pair_id,
                keys: PacketKeys::for_pair(&key, pair_id, me < peer),
                addr: "0.0.0.0:0".parse().expect("literal"),
            },
        );
        self.pair_index.insert(pair_id, peer);
    }
}
