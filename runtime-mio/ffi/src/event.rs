//! Events as flat, tagged C structs. Every field exists in every event; `kind` says which ones
//! mean something (the rest are 0 / NULL / family 0). Bytes an event points to (`payload`,
//! `name`, `rooms`) belong to the handle and stay valid until the next call on that handle.

use std::ffi::{CString, c_char};
use std::ptr;

use bytes::Bytes;
use pierce_core::nat::{Dependence, NatBehavior, PortAllocation};
use pierce_core::stun::StunError;
use pierce_core::{
    ClientEvent, DisconnectReason, LeaveReason, MemberLeftReason, Path, PathChangeReason,
    PeerDropReason, RejectReason, RoomError, RoomInfo, RoomOp, ServerEvent,
};

use crate::types::PierceAddr;

/// What a `PierceClientEvent` reports. Fields not named under a kind are 0 / NULL.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceClientEventKind {
    /// An event this version of the header does not describe (a newer library); skip it.
    PIERCE_CLIENT_EVENT_OTHER = 0,
    /// The server accepted the session. `host`: this client's host id; `addr`: its public
    /// address as the server sees it; `server_key`: the server's proven public key.
    PIERCE_CLIENT_EVENT_CONNECTED = 1,
    /// The session ended or could not start. `reason`: a `PierceDisconnectReason`; `code`:
    /// the close code (`CLOSED_BY_SERVER`, `CLOSED_LOCALLY`) or a `PierceRejectReason`
    /// (`REJECTED`). A client may register again by itself afterwards (see the core's
    /// `ClientConfig::reregister`): then a new `CONNECTED` follows.
    PIERCE_CLIENT_EVENT_DISCONNECTED = 2,
    /// An application message from the server. `payload`, `payload_len`.
    PIERCE_CLIENT_EVENT_SERVER_MESSAGE = 3,
    /// A member is in a group this client belongs to (sent for every member, this client
    /// included, when it joins; then for each newcomer). `group`, `host` (the member),
    /// `value` (members after the join). From now on `send` to that member works.
    PIERCE_CLIENT_EVENT_MEMBER_JOINED = 4,
    /// A member left a group (if `host` is this client, it is no longer in it). `group`,
    /// `host`, `reason` (a `PierceMemberLeftReason`).
    PIERCE_CLIENT_EVENT_MEMBER_LEFT = 5,
    /// The server destroyed a group (a room closed) this client was in. `group`.
    PIERCE_CLIENT_EVENT_GROUP_DESTROYED = 6,
    /// A message from another member. `host` (the sender), `channel`, `payload`,
    /// `payload_len`.
    PIERCE_CLIENT_EVENT_PEER_MESSAGE = 7,
    /// A reliable message was not acknowledged before its deadline or retry budget (or its
    /// peer went away); it will not be delivered from now on. `host` (the peer), `channel`,
    /// `message_id` (what `send` returned).
    PIERCE_CLIENT_EVENT_MESSAGE_EXPIRED = 8,
    /// The path to a peer changed. `host`, `direct` (1: direct path to `addr`; 0: through the
    /// server's relay), `reason` (a `PiercePathChangeReason`).
    PIERCE_CLIENT_EVENT_PATH_CHANGED = 9,
    /// A STUN query (`pierce_client_query_stun`) finished. `server`; `reason` 0 and `addr`
    /// the address that server sees, or `reason` a `PierceStunError`.
    PIERCE_CLIENT_EVENT_STUN_RESULT = 10,
    /// NAT behaviour discovery finished. `server`; `reason` 0, `addr` the reflexive address
    /// and `nat` the findings, or `reason` a `PierceStunError`.
    PIERCE_CLIENT_EVENT_NAT_DISCOVERED = 11,
    /// The server has not heard peer `host` for a while; it is still a member, messages to it
    /// wait. `PEER_RECOVERED` or `MEMBER_LEFT` follows.
    PIERCE_CLIENT_EVENT_PEER_RECOVERING = 12,
    /// A recovering peer `host` is back.
    PIERCE_CLIENT_EVENT_PEER_RECOVERED = 13,
    /// The server is draining: it closes this session within `value` milliseconds.
    PIERCE_CLIENT_EVENT_SERVER_DRAINING = 14,
    /// The session with the server moved to TCP (`value` 1) or back to UDP (`value` 0).
    PIERCE_CLIENT_EVENT_SERVER_TRANSPORT = 15,
    /// This client stopped talking to peer `host`, which broke a protocol limit. `reason`: a
    /// `PiercePeerDropReason`.
    PIERCE_CLIENT_EVENT_PEER_DROPPED = 16,
    /// This client is in a room (created or joined). `group` (the room's group), `name` (the
    /// room's name, NUL-terminated UTF-8), `host` (its owner). `MEMBER_JOINED` events follow.
    PIERCE_CLIENT_EVENT_ROOM_JOINED = 17,
    /// A page of the room list (`pierce_client_list_rooms`). `value`: rooms on the server;
    /// `code`: index of the first room in this page; `rooms`, `room_count`.
    PIERCE_CLIENT_EVENT_ROOM_LIST = 18,
    /// A room's owner changed. `group`, `host` (the new owner).
    PIERCE_CLIENT_EVENT_ROOM_OWNER_CHANGED = 19,
    /// A room operation failed; nothing changed. `reason`: a `PierceRoomOp`; `code`: a
    /// `PierceRoomError`.
    PIERCE_CLIENT_EVENT_ROOM_FAILED = 20,
    /// Cluster: the node sent this client to another node; it registers there by itself
    /// (same host id) and rejoins its rooms, `CONNECTED` follows. `server` (the node left),
    /// `addr` (the node now), `name` (the room the join was for; NULL when the node drained
    /// and its rooms moved).
    PIERCE_CLIENT_EVENT_REDIRECTED = 21,
}

/// Why a session ended (`PIERCE_CLIENT_EVENT_DISCONNECTED`'s `reason`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceDisconnectReason {
    /// A reason this header does not describe.
    PIERCE_DISCONNECT_OTHER = 0,
    /// No answer from the server within the connect timeout.
    PIERCE_DISCONNECT_CONNECT_TIMED_OUT = 1,
    /// No session, and the last TCP connect to the server was refused.
    PIERCE_DISCONNECT_CONNECT_REFUSED = 2,
    /// No session, and the server closed the TCP connection before it answered.
    PIERCE_DISCONNECT_CONNECT_CLOSED = 3,
    /// The server could not prove it holds the pinned key.
    PIERCE_DISCONNECT_SERVER_KEY_MISMATCH = 4,
    /// The server refused the session; `code` is a `PierceRejectReason`.
    PIERCE_DISCONNECT_REJECTED = 5,
    /// Nothing authentic from the server within the idle timeout.
    PIERCE_DISCONNECT_TIMED_OUT = 6,
    /// The server closed the session; `code` is its close code.
    PIERCE_DISCONNECT_CLOSED_BY_SERVER = 7,
    /// This client closed the session; `code` is the close code it gave.
    PIERCE_DISCONNECT_CLOSED_LOCALLY = 8,
    /// `detach_from_server`: peers with a validated direct path stay.
    PIERCE_DISCONNECT_DETACHED = 9,
    /// The server no longer has the session (it restarted); the client may register again.
    PIERCE_DISCONNECT_RESET = 10,
    /// The server is draining and the client moves to its next server address.
    PIERCE_DISCONNECT_SERVER_DRAINING = 11,
}

/// Why a server refused a session (`code` of `PIERCE_DISCONNECT_REJECTED`); other values are
/// codes this header does not describe.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceRejectReason {
    /// The server requires a connect token and none was given.
    PIERCE_REJECT_TOKEN_REQUIRED = 1,
    /// The token's MAC, format or version is wrong.
    PIERCE_REJECT_INVALID_TOKEN = 2,
    /// The token expired.
    PIERCE_REJECT_EXPIRED_TOKEN = 3,
    /// The server is full.
    PIERCE_REJECT_SERVER_FULL = 4,
    /// The server is draining.
    PIERCE_REJECT_DRAINING = 5,
}

/// Why a member left a group (`PIERCE_CLIENT_EVENT_MEMBER_LEFT`'s `reason`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceMemberLeftReason {
    /// A reason this header does not describe.
    PIERCE_MEMBER_LEFT_OTHER = 0,
    /// It left (or the server application removed it from the group).
    PIERCE_MEMBER_LEFT_LEFT = 1,
    /// Its session with the server ended.
    PIERCE_MEMBER_LEFT_DISCONNECTED = 2,
    /// The room owner or the server application kicked it.
    PIERCE_MEMBER_LEFT_KICKED = 3,
}

/// Why a peer's path changed (`PIERCE_CLIENT_EVENT_PATH_CHANGED`'s `reason`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PiercePathChangeReason {
    /// A reason this header does not describe.
    PIERCE_PATH_CHANGE_OTHER = 0,
    /// Hole punching validated a direct path both ways.
    PIERCE_PATH_CHANGE_PUNCHED = 1,
    /// Nothing arrived on the direct path for too long: back to the relay.
    PIERCE_PATH_CHANGE_DIRECT_LOST = 2,
}

/// Why a client dropped a peer (`PIERCE_CLIENT_EVENT_PEER_DROPPED`'s `reason`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PiercePeerDropReason {
    /// A reason this header does not describe.
    PIERCE_PEER_DROP_OTHER = 0,
    /// It announced a message over the maximum message size.
    PIERCE_PEER_DROP_MESSAGE_TOO_LARGE = 1,
    /// Its partial messages exceeded the reassembly limit.
    PIERCE_PEER_DROP_REASSEMBLY_LIMIT = 2,
    /// The server session ended and the peer was reachable only through the relay.
    PIERCE_PEER_DROP_SERVER_LOST = 3,
    /// Detached from the server, the direct path died.
    PIERCE_PEER_DROP_DIRECT_LOST = 4,
    /// Detached from the server, the pair lifetime ran out.
    PIERCE_PEER_DROP_PAIR_EXPIRED = 5,
    /// This client registered again with a new host id: its peers knew it by the old one.
    PIERCE_PEER_DROP_NEW_HOST_ID = 6,
}

/// A room operation (`PIERCE_CLIENT_EVENT_ROOM_FAILED`'s `reason`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceRoomOp {
    /// An operation this header does not describe.
    PIERCE_ROOM_OP_OTHER = 0,
    /// Join or create by name.
    PIERCE_ROOM_OP_JOIN = 1,
    /// Join any open room.
    PIERCE_ROOM_OP_JOIN_RANDOM = 2,
    /// List rooms.
    PIERCE_ROOM_OP_LIST = 3,
    /// Leave.
    PIERCE_ROOM_OP_LEAVE = 4,
    /// Kick a member.
    PIERCE_ROOM_OP_KICK = 5,
}

/// Why a room operation failed (`PIERCE_CLIENT_EVENT_ROOM_FAILED`'s `code`); other values are
/// codes this header does not describe.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceRoomError {
    /// No room by that name (or no open room, for join-random).
    PIERCE_ROOM_ERROR_NOT_FOUND = 1,
    /// The password does not match.
    PIERCE_ROOM_ERROR_WRONG_PASSWORD = 2,
    /// The room is full.
    PIERCE_ROOM_ERROR_FULL = 3,
    /// Create-only, and the room exists.
    PIERCE_ROOM_ERROR_ALREADY_EXISTS = 4,
    /// Only the room's owner may do that.
    PIERCE_ROOM_ERROR_NOT_OWNER = 5,
    /// Not in that room (or the member named is not).
    PIERCE_ROOM_ERROR_NOT_MEMBER = 6,
    /// Already in that room.
    PIERCE_ROOM_ERROR_ALREADY_MEMBER = 7,
    /// The server has no rooms.
    PIERCE_ROOM_ERROR_DISABLED = 8,
    /// Empty or over-long name or password.
    PIERCE_ROOM_ERROR_INVALID_NAME = 9,
    /// The server's room limit is reached.
    PIERCE_ROOM_ERROR_TOO_MANY_ROOMS = 10,
    /// The server is draining: no new rooms.
    PIERCE_ROOM_ERROR_DRAINING = 11,
    /// A relay-only join found a room that is not relay-only.
    PIERCE_ROOM_ERROR_NOT_RELAY_ONLY = 12,
    /// Cluster: the room lives on another node and this client is in rooms here.
    PIERCE_ROOM_ERROR_OTHER_NODE = 13,
    /// Cluster: the directory is unavailable; rooms on other nodes cannot be found or made.
    PIERCE_ROOM_ERROR_DIRECTORY_UNAVAILABLE = 14,
    /// Cluster: the join was redirected between nodes too many times in a row.
    PIERCE_ROOM_ERROR_TOO_MANY_REDIRECTS = 15,
}

/// Why a STUN query or NAT discovery found nothing (`reason` of `STUN_RESULT` and
/// `NAT_DISCOVERED`; 0 means success).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceStunError {
    /// It worked.
    PIERCE_STUN_OK = 0,
    /// No answer after every retransmission.
    PIERCE_STUN_TIMED_OUT = 1,
    /// The server answered without a usable mapped address.
    PIERCE_STUN_NO_ADDRESS = 2,
    /// A failure this header does not describe.
    PIERCE_STUN_OTHER = 255,
}

/// A NAT's behaviour (RFC 4787 terms) in `PierceNatBehavior`: 0 means not measured.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceNatDependence {
    /// Not measured.
    PIERCE_NAT_UNKNOWN = 0,
    /// The same for every remote endpoint ("cone").
    PIERCE_NAT_ENDPOINT_INDEPENDENT = 1,
    /// Depends on the remote IP.
    PIERCE_NAT_ADDRESS_DEPENDENT = 2,
    /// Depends on the remote IP and port ("symmetric" for mapping).
    PIERCE_NAT_ADDRESS_AND_PORT_DEPENDENT = 3,
}

/// What NAT behaviour discovery found (`PIERCE_CLIENT_EVENT_NAT_DISCOVERED`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PierceNatBehavior {
    /// Mapping behaviour, a `PierceNatDependence`.
    pub mapping: u8,
    /// Filtering behaviour, a `PierceNatDependence`.
    pub filtering: u8,
    /// 0: unknown, 1: the NAT kept the local port, 2: it did not.
    pub port_preserved: u8,
    /// Port allocation of new mappings: 0 unknown, 1 sequential (by `port_delta`), 2 random.
    pub allocation: u8,
    /// The step between consecutive mappings (sequential allocation).
    pub port_delta: i16,
    /// The newest mapping's external port seen.
    pub last_port: u16,
    /// The server's alternate address, if it has one (family 0 otherwise).
    pub alternate: PierceAddr,
}

/// One room of a `PIERCE_CLIENT_EVENT_ROOM_LIST` page.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PierceRoomInfo {
    /// The room's name, NUL-terminated UTF-8 (borrowed like the event's payload).
    pub name: *const c_char,
    /// Members now.
    pub members: u16,
    /// Most members allowed.
    pub max_members: u16,
    /// 1 if joining needs a password.
    pub has_password: u8,
    /// 1 if the room is relay-only (members never learn each other's addresses).
    pub relay_only: u8,
}

/// An event of a client (`pierce_client_poll_event`, `pierce_driver_client_poll_event`, the
/// client half of `pierce_host_poll_event`). `kind` says which fields mean something (see
/// `PierceClientEventKind`); the others are 0, NULL, or an address of family 0.
///
/// `payload`, `name` and `rooms` point into memory the handle owns: valid until the next call
/// on the same handle (any call), then gone. Copy what you keep.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PierceClientEvent {
    /// What happened.
    pub kind: PierceClientEventKind,
    /// A host id: this client's own (`CONNECTED`), the member, peer, sender or owner.
    pub host: u64,
    /// A group id (a room's group, for rooms).
    pub group: u64,
    /// The message id (`MESSAGE_EXPIRED`).
    pub message_id: u64,
    /// A number whose meaning the kind gives (member count, milliseconds, total rooms...).
    pub value: u64,
    /// A reason enum, per kind.
    pub reason: u32,
    /// A code, per kind (close code, reject reason, room error, list offset).
    pub code: u32,
    /// The channel (`PEER_MESSAGE`, `MESSAGE_EXPIRED`).
    pub channel: u8,
    /// 1 if a path is direct (`PATH_CHANGED`).
    pub direct: u8,
    /// An address, per kind (public address, direct path, STUN result).
    pub addr: PierceAddr,
    /// The STUN server asked (`STUN_RESULT`, `NAT_DISCOVERED`).
    pub server: PierceAddr,
    /// The server's public key (`CONNECTED`).
    pub server_key: [u8; 32],
    /// NAT discovery findings (`NAT_DISCOVERED`).
    pub nat: PierceNatBehavior,
    /// A room's name (`ROOM_JOINED`), NUL-terminated UTF-8; NULL otherwise.
    pub name: *const c_char,
    /// The message bytes (`SERVER_MESSAGE`, `PEER_MESSAGE`); NULL otherwise.
    pub payload: *const u8,
    /// How many bytes `payload` has.
    pub payload_len: usize,
    /// The rooms of a `ROOM_LIST` page; NULL otherwise.
    pub rooms: *const PierceRoomInfo,
    /// How many rooms `rooms` has.
    pub room_count: usize,
}

impl PierceClientEvent {
    /// An event of `kind` with every other field empty.
    pub const fn empty(kind: PierceClientEventKind) -> Self {
        Self {
            kind,
            host: 0,
            group: 0,
            message_id: 0,
            value: 0,
            reason: 0,
            code: 0,
            channel: 0,
            direct: 0,
            addr: PierceAddr::NONE,
            server: PierceAddr::NONE,
            server_key: [0; 32],
            nat: PierceNatBehavior {
                mapping: 0,
                filtering: 0,
                port_preserved: 0,
                allocation: 0,
                port_delta: 0,
                last_port: 0,
                alternate: PierceAddr::NONE,
            },
            name: ptr::null(),
            payload: ptr::null(),
            payload_len: 0,
            rooms: ptr::null(),
            room_count: 0,
        }
    }
}

/// What a `PierceServerEvent` reports. Fields not named under a kind are 0.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceServerEventKind {
    /// An event this version of the header does not describe; skip it.
    PIERCE_SERVER_EVENT_OTHER = 0,
    /// A client completed the handshake. `host` (its id), `addr` (where it connected from),
    /// `has_user_id` and `user_id` (from its connect token, when tokens are required).
    PIERCE_SERVER_EVENT_CLIENT_JOINED = 1,
    /// Right after `CLIENT_JOINED`: the client presented a resumption ticket and got its old
    /// host id back. `host`.
    PIERCE_SERVER_EVENT_CLIENT_RESUMED = 2,
    /// A client is gone. `host`, `reason` (a `PierceLeaveReason`), `code` (its close code,
    /// for `CLOSED` and `KICKED`).
    PIERCE_SERVER_EVENT_CLIENT_LEFT = 3,
    /// An application message from a client. `host` (the sender), `payload`, `payload_len`.
    PIERCE_SERVER_EVENT_MESSAGE = 4,
    /// Every member of `group` has acknowledged that `host` joined it.
    PIERCE_SERVER_EVENT_GROUP_JOIN_ACK_COMPLETE = 5,
    /// Nothing from client `host` for a while; it is kept for its recovery window.
    PIERCE_SERVER_EVENT_CLIENT_OFFLINE = 6,
    /// An offline client `host` was heard again.
    PIERCE_SERVER_EVENT_CLIENT_ONLINE = 7,
}

/// Why a client left the server (`PIERCE_SERVER_EVENT_CLIENT_LEFT`'s `reason`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceLeaveReason {
    /// A reason this header does not describe.
    PIERCE_LEAVE_OTHER = 0,
    /// Nothing authentic from it within the idle timeout.
    PIERCE_LEAVE_TIMED_OUT = 1,
    /// It closed the session (`code`: its close code).
    PIERCE_LEAVE_CLOSED = 2,
    /// The server application disconnected it (`code`: the close code given).
    PIERCE_LEAVE_KICKED = 3,
    /// It did not read its control messages and its queue overflowed.
    PIERCE_LEAVE_OVERLOADED = 4,
}

/// An event of a server (`pierce_server_poll_event`, `pierce_driver_server_poll_event`, the
/// server half of `pierce_host_poll_event`). `payload` points into memory the handle owns:
/// valid until the next call on the same handle.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PierceServerEvent {
    /// What happened.
    pub kind: PierceServerEventKind,
    /// The client's host id.
    pub host: u64,
    /// The group (`GROUP_JOIN_ACK_COMPLETE`).
    pub group: u64,
    /// The user id from the client's connect token (`CLIENT_JOINED` with `has_user_id`).
    pub user_id: u64,
    /// 1 if `user_id` is set.
    pub has_user_id: u8,
    /// A `PierceLeaveReason` (`CLIENT_LEFT`).
    pub reason: u32,
    /// The close code (`CLIENT_LEFT`).
    pub code: u32,
    /// The client's address (`CLIENT_JOINED`).
    pub addr: PierceAddr,
    /// The message bytes (`MESSAGE`); NULL otherwise.
    pub payload: *const u8,
    /// How many bytes `payload` has.
    pub payload_len: usize,
}

impl PierceServerEvent {
    /// An event of `kind` with every other field empty.
    pub const fn empty(kind: PierceServerEventKind) -> Self {
        Self {
            kind,
            host: 0,
            group: 0,
            user_id: 0,
            has_user_id: 0,
            reason: 0,
            code: 0,
            addr: PierceAddr::NONE,
            payload: ptr::null(),
            payload_len: 0,
        }
    }
}

/// Which half of a host an event comes from.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceHostEventSide {
    /// The server half: read `server`.
    PIERCE_HOST_EVENT_SERVER = 1,
    /// The host's own client: read `client`.
    PIERCE_HOST_EVENT_CLIENT = 2,
}

/// An event of a host (`pierce_host_poll_event`): `side` says which of the two members is
/// filled (the other has kind `..._OTHER`). Borrowed bytes as for the halves' events.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PierceHostEvent {
    /// Which half.
    pub side: PierceHostEventSide,
    /// The server half's event (`side` SERVER).
    pub server: PierceServerEvent,
    /// The host's client's event (`side` CLIENT).
    pub client: PierceClientEvent,
}

// ---- conversion, with the bytes kept in the handle ---------------------------------------------

/// Where the current event's borrowed bytes live; replaced by the next event (and cleared by
/// every other call on the handle, so nothing is kept longer than documented).
#[derive(Default)]
pub(crate) struct EventStore {
    payload: Bytes,
    name: Option<CString>,
    room_names: Vec<CString>,
    rooms: Vec<PierceRoomInfo>,
}

impl EventStore {
    /// Drops the previous event's bytes.
    pub(crate) fn clear(&mut self) {
        self.payload = Bytes::new();
        self.name = None;
        self.room_names.clear();
        self.rooms.clear();
    }

    fn keep_payload(&mut self, payload: Bytes) -> (*const u8, usize) {
        self.payload = payload;
        (self.payload.as_ptr(), self.payload.len())
    }

    fn keep_name(&mut self, name: &str) -> *const c_char {
        self.name.insert(c_string(name)).as_ptr()
    }

    fn keep_rooms(&mut self, rooms: &[RoomInfo]) -> (*const PierceRoomInfo, usize) {
        self.room_names = rooms.iter().map(|r| c_string(&r.name)).collect();
        self.rooms = rooms
            .iter()
            .zip(&self.room_names)
            .map(|(r, name)| PierceRoomInfo {
                name: name.as_ptr(),
                members: r.members,
                max_members: r.max_members,
                has_password: r.has_password.into(),
                relay_only: r.relay_only.into(),
            })
            .collect();
        (self.rooms.as_ptr(), self.rooms.len())
    }

    /// The C form of a client event; its bytes now live here.
    pub(crate) fn client(&mut self, event: ClientEvent) -> PierceClientEvent {
        use PierceClientEventKind::*;
        self.clear();
        let mut e = PierceClientEvent::empty(PIERCE_CLIENT_EVENT_OTHER);
        match event {
            ClientEvent::Connected {
                host_id,
                public_addr,
                server_key,
            } => {
                e.kind = PIERCE_CLIENT_EVENT_CONNECTED;
                e.host = host_id.0;
                e.addr = public_addr.into();
                e.server_key = server_key.0;
            }
            ClientEvent::Disconnected { reason } => {
                e.kind = PIERCE_CLIENT_EVENT_DISCONNECTED;
                (e.reason, e.code) = disconnect_reason(reason);
            }
            ClientEvent::Message { payload } => {
                e.kind = PIERCE_CLIENT_EVENT_SERVER_MESSAGE;
                (e.payload, e.payload_len) = self.keep_payload(payload);
            }
            ClientEvent::MemberJoined {
                group,
                member,
                member_count,
            } => {
                e.kind = PIERCE_CLIENT_EVENT_MEMBER_JOINED;
                e.group = group.0;
                e.host = member.0;
                e.value = member_count.into();
            }
            ClientEvent::MemberLeft {
                group,
                member,
                reason,
            } => {
                e.kind = PIERCE_CLIENT_EVENT_MEMBER_LEFT;
                e.group = group.0;
                e.host = member.0;
                e.reason = member_left_reason(reason) as u32;
            }
            ClientEvent::GroupDestroyed { group } => {
                e.kind = PIERCE_CLIENT_EVENT_GROUP_DESTROYED;
                e.group = group.0;
            }
            ClientEvent::PeerMessage {
                from,
                channel,
                payload,
            } => {
                e.kind = PIERCE_CLIENT_EVENT_PEER_MESSAGE;
                e.host = from.0;
                e.channel = channel.0;
                (e.payload, e.payload_len) = self.keep_payload(payload);
            }
            ClientEvent::MessageExpired {
                peer,
                channel,
                message_id,
            } => {
                e.kind = PIERCE_CLIENT_EVENT_MESSAGE_EXPIRED;
                e.host = peer.0;
                e.channel = channel.0;
                e.message_id = message_id.0;
            }
            ClientEvent::PathChanged { peer, path, reason } => {
                e.kind = PIERCE_CLIENT_EVENT_PATH_CHANGED;
                e.host = peer.0;
                if let Path::Direct(addr) = path {
                    e.direct = 1;
                    e.addr = addr.into();
                }
                e.reason = match reason {
                    PathChangeReason::Punched => PiercePathChangeReason::PIERCE_PATH_CHANGE_PUNCHED,
                    PathChangeReason::DirectLost => {
                        PiercePathChangeReason::PIERCE_PATH_CHANGE_DIRECT_LOST
                    }
                    _ => PiercePathChangeReason::PIERCE_PATH_CHANGE_OTHER,
                } as u32;
            }
            ClientEvent::StunResult { server, result } => {
                e.kind = PIERCE_CLIENT_EVENT_STUN_RESULT;
                e.server = server.into();
                match result {
                    Ok(addr) => e.addr = addr.into(),
                    Err(error) => e.reason = stun_error(error) as u32,
                }
            }
            ClientEvent::NatDiscovered { server, result } => {
                e.kind = PIERCE_CLIENT_EVENT_NAT_DISCOVERED;
                e.server = server.into();
                match result {
                    Ok(b) => {
                        e.addr = b.reflexive.into();
                        e.nat = nat_behavior(&b);
                    }
                    Err(error) => e.reason = stun_error(error) as u32,
                }
            }
            ClientEvent::PeerRecovering { peer } => {
                e.kind = PIERCE_CLIENT_EVENT_PEER_RECOVERING;
                e.host = peer.0;
            }
            ClientEvent::PeerRecovered { peer } => {
                e.kind = PIERCE_CLIENT_EVENT_PEER_RECOVERED;
                e.host = peer.0;
            }
            ClientEvent::ServerDraining { within } => {
                e.kind = PIERCE_CLIENT_EVENT_SERVER_DRAINING;
                e.value = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
            }
            ClientEvent::ServerTransport { tcp } => {
                e.kind = PIERCE_CLIENT_EVENT_SERVER_TRANSPORT;
                e.value = tcp.into();
            }
            ClientEvent::PeerDropped { peer, reason } => {
                e.kind = PIERCE_CLIENT_EVENT_PEER_DROPPED;
                e.host = peer.0;
                e.reason = peer_drop_reason(reason) as u32;
            }
            ClientEvent::RoomJoined { group, name, owner } => {
                e.kind = PIERCE_CLIENT_EVENT_ROOM_JOINED;
                e.group = group.0;
                e.host = owner.0;
                e.name = self.keep_name(&name);
            }
            ClientEvent::RoomList {
                total,
                offset,
                rooms,
            } => {
                e.kind = PIERCE_CLIENT_EVENT_ROOM_LIST;
                e.value = total.into();
                e.code = offset.into();
                (e.rooms, e.room_count) = self.keep_rooms(&rooms);
            }
            ClientEvent::RoomOwnerChanged { group, owner } => {
                e.kind = PIERCE_CLIENT_EVENT_ROOM_OWNER_CHANGED;
                e.group = group.0;
                e.host = owner.0;
            }
            ClientEvent::RoomFailed { op, error } => {
                e.kind = PIERCE_CLIENT_EVENT_ROOM_FAILED;
                e.reason = room_op(op) as u32;
                e.code = room_error(error);
            }
            ClientEvent::Redirected { from, to, room } => {
                e.kind = PIERCE_CLIENT_EVENT_REDIRECTED;
                e.server = PierceAddr::from(from);
                e.addr = PierceAddr::from(to);
                if let Some(room) = room {
                    e.name = self.keep_name(&room);
                }
            }
            _ => {}
        }
        e
    }

    /// The C form of a server event; its bytes now live here.
    pub(crate) fn server(&mut self, event: ServerEvent) -> PierceServerEvent {
        use PierceServerEventKind::*;
        self.clear();
        let mut e = PierceServerEvent::empty(PIERCE_SERVER_EVENT_OTHER);
        match event {
            ServerEvent::ClientJoined {
                host_id,
                addr,
                user_id,
            } => {
                e.kind = PIERCE_SERVER_EVENT_CLIENT_JOINED;
                e.host = host_id.0;
                e.addr = addr.into();
                if let Some(id) = user_id {
                    e.has_user_id = 1;
                    e.user_id = id;
                }
            }
            ServerEvent::ClientResumed { host_id } => {
                e.kind = PIERCE_SERVER_EVENT_CLIENT_RESUMED;
                e.host = host_id.0;
            }
            ServerEvent::ClientLeft { host_id, reason } => {
                e.kind = PIERCE_SERVER_EVENT_CLIENT_LEFT;
                e.host = host_id.0;
                let (reason, code) = match reason {
                    LeaveReason::TimedOut => (PierceLeaveReason::PIERCE_LEAVE_TIMED_OUT, 0),
                    LeaveReason::Closed(c) => (PierceLeaveReason::PIERCE_LEAVE_CLOSED, c),
                    LeaveReason::Kicked(c) => (PierceLeaveReason::PIERCE_LEAVE_KICKED, c),
                    LeaveReason::Overloaded => (PierceLeaveReason::PIERCE_LEAVE_OVERLOADED, 0),
                    _ => (PierceLeaveReason::PIERCE_LEAVE_OTHER, 0),
                };
                e.reason = reason as u32;
                e.code = code.into();
            }
            ServerEvent::Message { from, payload } => {
                e.kind = PIERCE_SERVER_EVENT_MESSAGE;
                e.host = from.0;
                (e.payload, e.payload_len) = self.keep_payload(payload);
            }
            ServerEvent::GroupJoinAckComplete { group, member } => {
                e.kind = PIERCE_SERVER_EVENT_GROUP_JOIN_ACK_COMPLETE;
                e.group = group.0;
                e.host = member.0;
            }
            ServerEvent::ClientOffline { host_id } => {
                e.kind = PIERCE_SERVER_EVENT_CLIENT_OFFLINE;
                e.host = host_id.0;
            }
            ServerEvent::ClientOnline { host_id } => {
                e.kind = PIERCE_SERVER_EVENT_CLIENT_ONLINE;
                e.host = host_id.0;
            }
            _ => {}
        }
        e
    }
}

/// A C string of `s` (a NUL inside, which C could not see past, becomes `?`).
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "?")).unwrap_or_default()
}

fn disconnect_reason(r: DisconnectReason) -> (u32, u32) {
    use PierceDisconnectReason::*;
    let (reason, code) = match r {
        DisconnectReason::ConnectTimedOut => (PIERCE_DISCONNECT_CONNECT_TIMED_OUT, 0),
        DisconnectReason::ConnectRefused => (PIERCE_DISCONNECT_CONNECT_REFUSED, 0),
        DisconnectReason::ConnectClosed => (PIERCE_DISCONNECT_CONNECT_CLOSED, 0),
        DisconnectReason::ServerKeyMismatch => (PIERCE_DISCONNECT_SERVER_KEY_MISMATCH, 0),
        DisconnectReason::Rejected(r) => (PIERCE_DISCONNECT_REJECTED, reject_reason(r)),
        DisconnectReason::TimedOut => (PIERCE_DISCONNECT_TIMED_OUT, 0),
        DisconnectReason::ClosedByServer(c) => (PIERCE_DISCONNECT_CLOSED_BY_SERVER, c.into()),
        DisconnectReason::ClosedLocally(c) => (PIERCE_DISCONNECT_CLOSED_LOCALLY, c.into()),
        DisconnectReason::Detached => (PIERCE_DISCONNECT_DETACHED, 0),
        DisconnectReason::Reset => (PIERCE_DISCONNECT_RESET, 0),
        DisconnectReason::ServerDraining => (PIERCE_DISCONNECT_SERVER_DRAINING, 0),
        _ => (PIERCE_DISCONNECT_OTHER, 0),
    };
    (reason as u32, code)
}

fn reject_reason(r: RejectReason) -> u32 {
    use PierceRejectReason::*;
    match r {
        RejectReason::TokenRequired => PIERCE_REJECT_TOKEN_REQUIRED as u32,
        RejectReason::InvalidToken => PIERCE_REJECT_INVALID_TOKEN as u32,
        RejectReason::ExpiredToken => PIERCE_REJECT_EXPIRED_TOKEN as u32,
        RejectReason::ServerFull => PIERCE_REJECT_SERVER_FULL as u32,
        RejectReason::Draining => PIERCE_REJECT_DRAINING as u32,
        RejectReason::Other(c) => c.into(),
        _ => 0,
    }
}

fn member_left_reason(r: MemberLeftReason) -> PierceMemberLeftReason {
    use PierceMemberLeftReason::*;
    match r {
        MemberLeftReason::Left => PIERCE_MEMBER_LEFT_LEFT,
        MemberLeftReason::Disconnected => PIERCE_MEMBER_LEFT_DISCONNECTED,
        MemberLeftReason::Kicked => PIERCE_MEMBER_LEFT_KICKED,
        _ => PIERCE_MEMBER_LEFT_OTHER,
    }
}

fn peer_drop_reason(r: PeerDropReason) -> PiercePeerDropReason {
    use PiercePeerDropReason::*;
    match r {
        PeerDropReason::MessageTooLarge => PIERCE_PEER_DROP_MESSAGE_TOO_LARGE,
        PeerDropReason::ReassemblyLimit => PIERCE_PEER_DROP_REASSEMBLY_LIMIT,
        PeerDropReason::ServerLost => PIERCE_PEER_DROP_SERVER_LOST,
        PeerDropReason::DirectLost => PIERCE_PEER_DROP_DIRECT_LOST,
        PeerDropReason::PairExpired => PIERCE_PEER_DROP_PAIR_EXPIRED,
        PeerDropReason::NewHostId => PIERCE_PEER_DROP_NEW_HOST_ID,
        _ => PIERCE_PEER_DROP_OTHER,
    }
}

fn room_op(op: RoomOp) -> PierceRoomOp {
    use PierceRoomOp::*;
    match op {
        RoomOp::Join => PIERCE_ROOM_OP_JOIN,
        RoomOp::JoinRandom => PIERCE_ROOM_OP_JOIN_RANDOM,
        RoomOp::List => PIERCE_ROOM_OP_LIST,
        RoomOp::Leave => PIERCE_ROOM_OP_LEAVE,
        RoomOp::Kick => PIERCE_ROOM_OP_KICK,
        _ => PIERCE_ROOM_OP_OTHER,
    }
}

fn room_error(e: RoomError) -> u32 {
    use PierceRoomError::*;
    let known = match e {
        RoomError::NotFound => PIERCE_ROOM_ERROR_NOT_FOUND,
        RoomError::WrongPassword => PIERCE_ROOM_ERROR_WRONG_PASSWORD,
        RoomError::Full => PIERCE_ROOM_ERROR_FULL,
        RoomError::AlreadyExists => PIERCE_ROOM_ERROR_ALREADY_EXISTS,
        RoomError::NotOwner => PIERCE_ROOM_ERROR_NOT_OWNER,
        RoomError::NotMember => PIERCE_ROOM_ERROR_NOT_MEMBER,
        RoomError::AlreadyMember => PIERCE_ROOM_ERROR_ALREADY_MEMBER,
        RoomError::Disabled => PIERCE_ROOM_ERROR_DISABLED,
        RoomError::InvalidName => PIERCE_ROOM_ERROR_INVALID_NAME,
        RoomError::TooManyRooms => PIERCE_ROOM_ERROR_TOO_MANY_ROOMS,
        RoomError::Draining => PIERCE_ROOM_ERROR_DRAINING,
        RoomError::NotRelayOnly => PIERCE_ROOM_ERROR_NOT_RELAY_ONLY,
        RoomError::OtherNode => PIERCE_ROOM_ERROR_OTHER_NODE,
        RoomError::DirectoryUnavailable => PIERCE_ROOM_ERROR_DIRECTORY_UNAVAILABLE,
        RoomError::TooManyRedirects => PIERCE_ROOM_ERROR_TOO_MANY_REDIRECTS,
        RoomError::Other(c) => return c.into(),
        _ => return 0,
    };
    known as u32
}

fn stun_error(e: StunError) -> PierceStunError {
    match e {
        StunError::TimedOut => PierceStunError::PIERCE_STUN_TIMED_OUT,
        StunError::NoAddress => PierceStunError::PIERCE_STUN_NO_ADDRESS,
        #[allow(unreachable_patterns)]
        _ => PierceStunError::PIERCE_STUN_OTHER,
    }
}

fn dependence(d: Option<Dependence>) -> u8 {
    use PierceNatDependence::*;
    let v = match d {
        None => PIERCE_NAT_UNKNOWN,
        Some(Dependence::EndpointIndependent) => PIERCE_NAT_ENDPOINT_INDEPENDENT,
        Some(Dependence::AddressDependent) => PIERCE_NAT_ADDRESS_DEPENDENT,
        Some(Dependence::AddressAndPortDependent) => PIERCE_NAT_ADDRESS_AND_PORT_DEPENDENT,
        #[allow(unreachable_patterns)]
        Some(_) => PIERCE_NAT_UNKNOWN,
    };
    v as u8
}

fn nat_behavior(b: &NatBehavior) -> PierceNatBehavior {
    let (allocation, port_delta) = match b.allocation {
        None => (0, 0),
        Some(PortAllocation::Sequential { delta }) => (1, delta),
        Some(PortAllocation::Random) => (2, 0),
    };
    PierceNatBehavior {
        mapping: dependence(b.mapping),
        filtering: dependence(b.filtering),
        port_preserved: match b.port_preserved {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        },
        allocation,
        port_delta,
        last_port: b.last_port,
        alternate: b.alternate.into(),
    }
}
