//! Messages of the reliable control stream (carried in `Stream` frames on a server session).
//!
//! ```text
//! server → client
//!   0x01 PeerAdd        peer (u64) | pair id (u32) | pair key (32) | peer's observed address
//!                         (0.0.0.0:0 for a relay-only pair: no direct path, nothing to probe)
//!                         | punch delay (u16, ms: when to start probing, so both ends start
//!                           together)
//!   0x02 PeerRemove     peer (u64) | pair id (u32)
//!   0x03 MemberJoined   group (u64) | member (u64) | member count (u16)
//!   0x04 MemberLeft     group (u64) | member (u64) | reason (u8)
//!   0x05 GroupDestroyed group (u64)
//!   0x06 RoomJoined     group (u64) | owner (u64) | name (str8)
//!   0x07 RoomList       total (u16) | offset (u16) | count (u8) | count × entry
//!                         entry = name (str8) | members (u16) | max members (u16)
//!                         | flags (u8: ROOM_HAS_PASSWORD 1, ROOM_RELAY_ONLY 2)
//!   0x08 RoomError      operation (u8) | reason (u8)
//!   0x09 RoomOwner      group (u64) | owner (u64)
//!   0x0A PeerCandidates peer (u64) | count (u8, ≤ MAX_CANDIDATES) | count × address
//!   0x0B PeerNat        peer (u64) | nat info (the peer's NAT behaviour)
//!   0x0C PeerMoved      peer (u64) | the peer's new observed address
//!   0x0D PeerOffline    peer (u64) (the server has not heard the peer for a while)
//!   0x0E PeerOnline     peer (u64) (heard again, within the recovery window)
//!   0x0F Ticket         length (u8, ≤ MAX_TICKET_LEN) | resumption ticket: presented in a
//!                         `Resume` frame by a later session, it asks for this host id back
//!   0x10 Draining       within (u32, ms): the server is draining; it takes no new clients or
//!                         rooms and closes this session within that time
//!   0x11 Redirect       node (address: where to register instead) | room (str8; empty: none)
//!                         the client should be on another node of the cluster: it registers
//!                         there with its ticket, rejoins its rooms there, and asks for `room`
//!                         there (with JOIN_REDIRECTED) if one is named
//! client → server
//!   0x20 MemberAck      group (u64) | member (u64)
//!   0x21 RoomJoin       flags (u8: JOIN_CREATE 1, JOIN_MUST_CREATE 2, JOIN_RELAY_ONLY 4,
//!                         JOIN_REDIRECTED 8)
//!                         | max members (u16) | name (str8) | password (str8)
//!   0x22 RoomJoinRandom
//!   0x23 RoomListGet    offset (u16)
//!   0x24 RoomLeave      group (u64)
//!   0x25 RoomKick       group (u64) | member (u64)
//!   0x26 Candidates     count (u8, ≤ MAX_CANDIDATES) | count × address (this client's LAN)
//!   0x27 NatInfo        nat info (this client's NAT behaviour, from discovery)
//!   0x2E PeerPath       peer (u64) | direct (u8, 0 or 1) | after (u32, ms since the pair was
//!                         introduced; meaningful with direct = 1): the path to that peer changed
//! both ways
//!   0x30 App            application message (the rest)
//! str8 = length (u8, ≤ MAX_NAME_LEN) | UTF-8 bytes
//! nat info = mapping (u8) | filtering (u8) | allocation (u8) | port step (i16) | last port (u16)
//!   mapping, filtering: 0 unknown, 1 endpoint-independent, 2 address-dependent,
//!   3 address-and-port-dependent; allocation: 0 unknown, 1 sequential, 2 random
//! ```

use std::net::SocketAddr;

use super::{BufferTooSmall, DecodeError, Reader, Writer, addr_len};

/// Local (LAN) candidate addresses one client may advertise.
pub const MAX_CANDIDATES: usize = 4;

/// Longest room name or password, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// `RoomJoin` flag: create the room if it does not exist.
pub const JOIN_CREATE: u8 = 1;
/// `RoomJoin` flag: fail if the room exists (create only).
pub const JOIN_MUST_CREATE: u8 = 2;
/// Room list entry flag: a password is required.
pub const ROOM_HAS_PASSWORD: u8 = 1;
/// `RoomJoin` flag: if this request creates the room, the room is relay-only (its members'
/// addresses are never handed to each other; every pair formed through it stays relayed).
/// Joining a room that exists and is not relay-only with it is refused (`RoomError` 11,
/// `NotRelayOnly`): whoever asks for privacy never lands in a room that hands its addresses
/// out. A server older than the flag ignores it (a normal room, created or joined): the
/// `RoomList` entry shows [`ROOM_RELAY_ONLY`] only on servers that honour it.
pub const JOIN_RELAY_ONLY: u8 = 4;
/// Room list entry flag: the room is relay-only (see [`JOIN_RELAY_ONLY`]).
pub const ROOM_RELAY_ONLY: u8 = 2;
/// `RoomJoin` flag: the request follows a `Redirect` here (a cluster node does not send it on
/// to another node by placement again; only to the room's owner if it has one).
pub const JOIN_REDIRECTED: u8 = 8;

/// One control message, borrowing from the stream buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // field meanings are in the module table
pub enum ControlMsg<'a> {
    PeerAdd {
        peer: u64,
        pair_id: u32,
        key: [u8; 32],
        addr: SocketAddr,
        delay_ms: u16,
    },
    PeerRemove {
        peer: u64,
        pair_id: u32,
    },
    MemberJoined {
        group: u64,
        member: u64,
        member_count: u16,
    },
    MemberLeft {
        group: u64,
        member: u64,
        reason: u8,
    },
    GroupDestroyed {
        group: u64,
    },
    RoomJoined {
        group: u64,
        owner: u64,
        name: &'a str,
    },
    RoomList {
        total: u16,
        offset: u16,
        entries: RoomEntries<'a>,
    },
    RoomError {
        op: u8,
        reason: u8,
    },
    RoomOwner {
        group: u64,
        owner: u64,
    },
    PeerCandidates {
        peer: u64,
        addrs: Candidates,
    },
    Candidates {
        addrs: Candidates,
    },
    PeerNat {
        peer: u64,
        info: NatInfo,
    },
    PeerMoved {
        peer: u64,
        addr: SocketAddr,
    },
    PeerOffline {
        peer: u64,
    },
    PeerOnline {
        peer: u64,
    },
    Ticket {
        ticket: &'a [u8],
    },
    Draining {
        within_ms: u32,
    },
    Redirect {
        node: SocketAddr,
        room: &'a str,
    },
    NatInfo {
        info: NatInfo,
    },
    MemberAck {
        group: u64,
        member: u64,
    },
    RoomJoin {
        flags: u8,
        max_members: u16,
        name: &'a str,
        password: &'a str,
    },
    RoomJoinRandom,
    RoomListGet {
        offset: u16,
    },
    RoomLeave {
        group: u64,
    },
    RoomKick {
        group: u64,
        member: u64,
    },
    PeerPath {
        peer: u64,
        direct: bool,
        after_ms: u32,
    },
    App {
        data: &'a [u8],
    },
}

/// Up to [`MAX_CANDIDATES`] addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidates {
    len: u8,
    addrs: [Option<SocketAddr>; MAX_CANDIDATES],
}

/// A NAT's behaviour as carried on the wire (see the module table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatInfo {
    /// 0 unknown, 1 EI, 2 AD, 3 APD.
    pub mapping: u8,
    /// 0 unknown, 1 EI, 2 AD, 3 APD.
    pub filtering: u8,
    /// 0 unknown, 1 sequential (`delta`), 2 random.
    pub allocation: u8,
    /// Port step between consecutive mappings (sequential allocation).
    pub delta: i16,
    /// The newest mapping's port seen in discovery.
    pub last_port: u16,
}

impl NatInfo {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let info = Self {
            mapping: r.u8()?,
            filtering: r.u8()?,
            allocation: r.u8()?,
            delta: r.u16()? as i16,
            last_port: r.u16()?,
        };
        if info.mapping > 3 || info.filtering > 3 || info.allocation > 2 {
            return Err(DecodeError::BadValue);
        }
        Ok(info)
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.put(&[self.mapping, self.filtering, self.allocation])?;
        w.u16(self.delta as u16)?;
        w.u16(self.last_port)
    }
}

impl Candidates {
    /// The first [`MAX_CANDIDATES`] of `addrs`.
    pub fn new(addrs: &[SocketAddr]) -> Self {
        let mut out = Self::default();
        for a in addrs.iter().take(MAX_CANDIDATES) {
            out.addrs[out.len as usize] = Some(*a);
            out.len += 1;
        }
        out
    }

    /// The addresses.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs.iter().flatten().copied()
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u8()? as usize;
        if n > MAX_CANDIDATES {
            return Err(DecodeError::BadLength);
        }
        let mut out = Self::default();
        for _ in 0..n {
            out.addrs[out.len as usize] = Some(r.addr()?);
            out.len += 1;
        }
        Ok(out)
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.u8(self.len)?;
        for a in self.iter() {
            w.addr(a)?;
        }
        Ok(())
    }
}

/// One room in a room list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomEntry<'a> {
    /// Room name.
    pub name: &'a str,
    /// Members now.
    pub members: u16,
    /// Most members allowed.
    pub max_members: u16,
    /// [`ROOM_HAS_PASSWORD`] and future flags.
    pub flags: u8,
}

/// The entries of a `RoomList`, validated at decode time and decoded lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomEntries<'a> {
    count: u8,
    bytes: &'a [u8],
}

impl<'a> RoomEntries<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries.
    pub fn iter(&self) -> impl Iterator<Item = RoomEntry<'a>> + 'a {
        let mut r = Reader::new(self.bytes);
        (0..self.count).map_while(move |_| read_entry(&mut r).ok())
    }

    /// Encoded size of one entry.
    pub fn entry_len(e: &RoomEntry<'_>) -> usize {
        1 + e.name.len() + 5
    }

    /// Writes `entries` (at most 255) as the tail of a RoomList.
    pub fn encode_entries(
        w: &mut Writer<'_>,
        entries: &[RoomEntry<'_>],
    ) -> Result<(), BufferTooSmall> {
        let count = u8::try_from(entries.len()).map_err(|_| BufferTooSmall)?;
        w.u8(count)?;
        for e in entries {
            put_str(w, e.name)?;
            w.u16(e.members)?;
            w.u16(e.max_members)?;
            w.u8(e.flags)?;
        }
        Ok(())
    }
}

fn read_entry<'a>(r: &mut Reader<'a>) -> Result<RoomEntry<'a>, DecodeError> {
    Ok(RoomEntry {
        name: read_str(r)?,
        members: r.u16()?,
        max_members: r.u16()?,
        flags: r.u8()?,
    })
}

fn read_str<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let len = r.u8()? as usize;
    if len > MAX_NAME_LEN {
        return Err(DecodeError::BadLength);
    }
    std::str::from_utf8(r.bytes(len)?).map_err(|_| DecodeError::BadValue)
}

fn put_str(w: &mut Writer<'_>, s: &str) -> Result<(), BufferTooSmall> {
    if s.len() > MAX_NAME_LEN {
        return Err(BufferTooSmall);
    }
    w.u8(s.len() as u8)?;
    w.put(s.as_bytes())
}

impl<'a> ControlMsg<'a> {
    /// Decodes one message; the whole buffer must be consumed.
    pub fn decode(data: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(data);
        let msg = match r.u8()? {
            0x01 => Self::PeerAdd {
                peer: r.u64()?,
                pair_id: r.u32()?,
                key: r.array()?,
                addr: r.addr()?,
                delay_ms: r.u16()?,
            },
            0x02 => Self::PeerRemove {
                peer: r.u64()?,
                pair_id: r.u32()?,
            },
            0x03 => Self::MemberJoined {
                group: r.u64()?,
                member: r.u64()?,
                member_count: r.u16()?,
            },
            0x04 => Self::MemberLeft {
                group: r.u64()?,
                member: r.u64()?,
                reason: r.u8()?,
            },
            0x05 => Self::GroupDestroyed { group: r.u64()? },
            0x06 => Self::RoomJoined {
                group: r.u64()?,
                owner: r.u64()?,
                name: read_str(&mut r)?,
            },
            0x07 => {
                let total = r.u16()?;
                let offset = r.u16()?;
                let count = r.u8()?;
                let start = r.position();
                for _ in 0..count {
                    read_entry(&mut r)?;
                }
                Self::RoomList {
                    total,
                    offset,
                    entries: RoomEntries {
                        count,
                        bytes: &data[start..r.position()],
                    },
                }
            }
            0x08 => Self::RoomError {
                op: r.u8()?,
                reason: r.u8()?,
            },
            0x09 => Self::RoomOwner {
                group: r.u64()?,
                owner: r.u64()?,
            },
            0x0A => Self::PeerCandidates {
                peer: r.u64()?,
                addrs: Candidates::decode(&mut r)?,
            },
            0x26 => Self::Candidates {
                addrs: Candidates::decode(&mut r)?,
            },
            0x0B => Self::PeerNat {
                peer: r.u64()?,
                info: NatInfo::decode(&mut r)?,
            },
            0x0C => Self::PeerMoved {
                peer: r.u64()?,
                addr: r.addr()?,
            },
            0x0D => Self::PeerOffline { peer: r.u64()? },
            0x0E => Self::PeerOnline { peer: r.u64()? },
            0x0F => {
                let len = usize::from(r.u8()?);
                if len > super::frame::MAX_TICKET_LEN {
                    return Err(DecodeError::BadLength);
                }
                Self::Ticket {
                    ticket: r.bytes(len)?,
                }
            }
            0x10 => Self::Draining {
                within_ms: r.u32()?,
            },
            0x11 => Self::Redirect {
                node: r.addr()?,
                room: read_str(&mut r)?,
            },
            0x2E => Self::PeerPath {
                peer: r.u64()?,
                direct: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::BadValue),
                },
                after_ms: r.u32()?,
            },
            0x27 => Self::NatInfo {
                info: NatInfo::decode(&mut r)?,
            },
            0x20 => Self::MemberAck {
                group: r.u64()?,
                member: r.u64()?,
            },
            0x21 => Self::RoomJoin {
                flags: r.u8()?,
                max_members: r.u16()?,
                name: read_str(&mut r)?,
                password: read_str(&mut r)?,
            },
            0x22 => Self::RoomJoinRandom,
            0x23 => Self::RoomListGet { offset: r.u16()? },
            0x24 => Self::RoomLeave { group: r.u64()? },
            0x25 => Self::RoomKick {
                group: r.u64()?,
                member: r.u64()?,
            },
            0x30 => Self::App { data: r.rest() },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if r.remaining() != 0 {
            return Err(DecodeError::BadLength);
        }
        Ok(msg)
    }

    /// Writes the message; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(buf);
        match *self {
            Self::PeerAdd {
                peer,
                pair_id,
                key,
                addr,
                delay_ms,
            } => {
                w.u8(0x01)?;
                w.u64(peer)?;
                w.u32(pair_id)?;
                w.put(&key)?;
                w.addr(addr)?;
                w.u16(delay_ms)?;
            }
            Self::PeerRemove { peer, pair_id } => {
                w.u8(0x02)?;
                w.u64(peer)?;
                w.u32(pair_id)?;
            }
            Self::MemberJoined {
                group,
                member,
                member_count,
            } => {
                w.u8(0x03)?;
                w.u64(group)?;
                w.u64(member)?;
                w.u16(member_count)?;
            }
            Self::MemberLeft {
                group,
                member,
                reason,
            } => {
                w.u8(0x04)?;
                w.u64(group)?;
                w.u64(member)?;
                w.u8(reason)?;
            }
            Self::GroupDestroyed { group } => {
                w.u8(0x05)?;
                w.u64(group)?;
            }
            Self::RoomJoined { group, owner, name } => {
                w.u8(0x06)?;
                w.u64(group)?;
                w.u64(owner)?;
                put_str(&mut w, name)?;
            }
            Self::RoomList {
                total,
                offset,
                entries,
            } => {
                w.u8(0x07)?;
                w.u16(total)?;
                w.u16(offset)?;
                w.u8(entries.count)?;
                w.put(entries.bytes)?;
            }
            Self::RoomError { op, reason } => {
                w.put(&[0x08, op, reason])?;
            }
            Self::RoomOwner { group, owner } => {
                w.u8(0x09)?;
                w.u64(group)?;
                w.u64(owner)?;
            }
            Self::PeerCandidates { peer, addrs } => {
                w.u8(0x0A)?;
                w.u64(peer)?;
                addrs.encode(&mut w)?;
            }
            Self::Candidates { addrs } => {
                w.u8(0x26)?;
                addrs.encode(&mut w)?;
            }
            Self::PeerNat { peer, info } => {
                w.u8(0x0B)?;
                w.u64(peer)?;
                info.encode(&mut w)?;
            }
            Self::PeerMoved { peer, addr } => {
                w.u8(0x0C)?;
                w.u64(peer)?;
                w.addr(addr)?;
            }
            Self::PeerOffline { peer } => {
                w.u8(0x0D)?;
                w.u64(peer)?;
            }
            Self::PeerOnline { peer } => {
                w.u8(0x0E)?;
                w.u64(peer)?;
            }
            Self::Ticket { ticket } => {
                if ticket.len() > super::frame::MAX_TICKET_LEN {
                    return Err(BufferTooSmall);
                }
                w.u8(0x0F)?;
                w.u8(ticket.len() as u8)?;
                w.put(ticket)?;
            }
            Self::Draining { within_ms } => {
                w.u8(0x10)?;
                w.u32(within_ms)?;
            }
            Self::Redirect { node, room } => {
                w.u8(0x11)?;
                w.addr(node)?;
                put_str(&mut w, room)?;
            }
            Self::PeerPath {
                peer,
                direct,
                after_ms,
            } => {
                w.u8(0x2E)?;
                w.u64(peer)?;
                w.u8(u8::from(direct))?;
                w.u32(after_ms)?;
            }
            Self::NatInfo { info } => {
                w.u8(0x27)?;
                info.encode(&mut w)?;
            }
            Self::MemberAck { group, member } => {
                w.u8(0x20)?;
                w.u64(group)?;
                w.u64(member)?;
            }
            Self::RoomJoin {
                flags,
                max_members,
                name,
                password,
            } => {
                w.u8(0x21)?;
                w.u8(flags)?;
                w.u16(max_members)?;
                put_str(&mut w, name)?;
                put_str(&mut w, password)?;
            }
            Self::RoomJoinRandom => w.u8(0x22)?,
            Self::RoomListGet { offset } => {
                w.u8(0x23)?;
                w.u16(offset)?;
            }
            Self::RoomLeave { group } => {
                w.u8(0x24)?;
                w.u64(group)?;
            }
            Self::RoomKick { group, member } => {
                w.u8(0x25)?;
                w.u64(group)?;
                w.u64(member)?;
            }
            Self::App { data } => {
                w.u8(0x30)?;
                w.put(data)?;
            }
        }
        Ok(w.len())
    }
}

/// Encoded size of a `PeerAdd` for `addr` (for budgeting).
pub fn peer_add_len(addr: &SocketAddr) -> usize {
    1 + 8 + 4 + 32 + addr_len(addr) + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: ControlMsg<'_>) -> Vec<u8> {
        let mut buf = [0u8; 1200];
        let n = m.encode(&mut buf).unwrap();
        assert_eq!(ControlMsg::decode(&buf[..n]), Ok(m));
        // Every strict prefix fails to decode (nothing reads past what it declared).
        for cut in 0..n {
            if let Ok(p) = ControlMsg::decode(&buf[..cut]) {
                assert!(matches!(p, ControlMsg::App { .. }), "{cut}: {p:?}");
            }
        }
        buf[..n].to_vec()
    }

    #[test]
    fn control_messages_golden_bytes() {
        assert_eq!(
            round_trip(ControlMsg::MemberJoined {
                group: 1,
                member: 2,
                member_count: 3
            }),
            [0x03, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 3]
        );
        assert_eq!(
            round_trip(ControlMsg::RoomJoin {
                flags: JOIN_CREATE,
                max_members: 8,
                name: "ab",
                password: ""
            }),
            [0x21, 0x01, 0x00, 0x08, 2, b'a', b'b', 0]
        );
        assert_eq!(round_trip(ControlMsg::RoomJoinRandom), [0x22]);
        assert_eq!(
            round_trip(ControlMsg::NatInfo {
                info: NatInfo {
                    mapping: 1,
                    filtering: 3,
                    allocation: 2,
                    delta: -1,
                    last_port: 0x1234
                }
            }),
            [0x27, 1, 3, 2, 0xFF, 0xFF, 0x12, 0x34]
        );
        assert_eq!(
            ControlMsg::decode(&[0x27, 4, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::BadValue)
        );
        assert_eq!(
            round_trip(ControlMsg::App { data: b"xy" }),
            [0x30, b'x', b'y']
        );
    }

    #[test]
    fn every_message_round_trips() {
        let addr = "203.0.113.5:999".parse().unwrap();
        let mut list = [0u8; 200];
        let mut w = Writer::new(&mut list);
        let entries = [
            RoomEntry {
                name: "lobby",
                members: 2,
                max_members: 8,
                flags: ROOM_HAS_PASSWORD,
            },
            RoomEntry {
                name: "é",
                members: 1,
                max_members: 2,
                flags: 0,
            },
        ];
        RoomEntries::encode_entries(&mut w, &entries).unwrap();
        let n = w.len();
        let entries_bytes = RoomEntries {
            count: 2,
            bytes: &list[1..n],
        };
        assert_eq!(entries_bytes.iter().collect::<Vec<_>>(), entries);
        for m in [
            ControlMsg::PeerAdd {
                peer: 7,
                pair_id: 8,
                key: [9; 32],
                addr,
                delay_ms: 40,
            },
            ControlMsg::PeerNat {
                peer: 3,
                info: NatInfo {
                    mapping: 3,
                    filtering: 3,
                    allocation: 1,
                    delta: -2,
                    last_port: 40_000,
                },
            },
            ControlMsg::NatInfo {
                info: NatInfo::default(),
            },
            ControlMsg::PeerMoved { peer: 4, addr },
            ControlMsg::PeerOffline { peer: 5 },
            ControlMsg::PeerOnline { peer: 6 },
            ControlMsg::Ticket { ticket: &[7; 62] },
            ControlMsg::Draining { within_ms: 10_000 },
            ControlMsg::Redirect {
                node: addr,
                room: "lobby",
            },
            ControlMsg::PeerPath {
                peer: 9,
                direct: true,
                after_ms: 350,
            },
            ControlMsg::PeerRemove {
                peer: 7,
                pair_id: 8,
            },
            ControlMsg::MemberLeft {
                group: 1,
                member: 2,
                reason: 3,
            },
            ControlMsg::GroupDestroyed { group: 4 },
            ControlMsg::RoomJoined {
                group: 1,
                owner: 2,
                name: "room",
            },
            ControlMsg::RoomList {
                total: 10,
                offset: 0,
                entries: entries_bytes,
            },
            ControlMsg::RoomError { op: 1, reason: 2 },
            ControlMsg::RoomOwner { group: 1, owner: 2 },
            ControlMsg::Candidates {
                addrs: Candidates::new(&[addr, "[fd00::1]:7".parse().unwrap()]),
            },
            ControlMsg::PeerCandidates {
                peer: 9,
                addrs: Candidates::new(&[addr]),
            },
            ControlMsg::MemberAck {
                group: 5,
                member: 6,
            },
            ControlMsg::RoomListGet { offset: 3 },
            ControlMsg::RoomLeave { group: 3 },
            ControlMsg::RoomKick {
                group: 3,
                member: 4,
            },
        ] {
            round_trip(m);
        }
    }

    #[test]
    fn bad_strings_and_trailing_bytes_are_refused() {
        assert_eq!(
            ControlMsg::decode(&[0x24, 0, 0, 0, 0, 0, 0, 0, 1, 9]),
            Err(DecodeError::BadLength)
        );
        assert_eq!(
            ControlMsg::decode(&[0x21, 0, 0, 1, 1, 0xFF, 0]),
            Err(DecodeError::BadValue),
            "names are UTF-8"
        );
        assert_eq!(
            ControlMsg::decode(&[0x21, 0, 0, 1, 65]),
            Err(DecodeError::BadLength)
        );
        assert_eq!(
            ControlMsg::decode(&[0x7E]),
            Err(DecodeError::UnknownKind(0x7E))
        );
    }
}
