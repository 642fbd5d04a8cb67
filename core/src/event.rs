//! Events the core reports to the application. Each says what happened and, for failures, why.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::crypto::PublicKey;

/// Identifies a client on one server (ProudNet's HostID). Never reused by a running server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub u64);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host#{}", self.0)
    }
}

/// Identifies a P2P group on one server. Never reused by a running server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u64);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group#{}", self.0)
    }
}

/// Why a member left a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberLeftReason {
    /// It (or the server application on its behalf) left the group.
    Left,
    /// Its session with the server ended.
    Disconnected,
    /// The room owner or the server application removed it.
    Kicked,
}

impl MemberLeftReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Left => 0,
            Self::Disconnected => 1,
            Self::Kicked => 2,
        }
    }

    pub(crate) fn from_code(c: u8) -> Self {
        match c {
            1 => Self::Disconnected,
            2 => Self::Kicked,
            _ => Self::Left,
        }
    }
}

/// A room as listed by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomInfo {
    /// Its name.
    pub name: String,
    /// Members now.
    pub members: u16,
    /// Most members allowed.
    pub max_members: u16,
    /// Whether joining needs a password.
    pub has_password: bool,
    /// Whether the room is relay-only: its members never learn each other's addresses
    /// ([`crate::RoomOptions::relay_only`], [`crate::RoomsConfig::relay_only`]).
    pub relay_only: bool,
}

/// A room operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomOp {
    /// Join or create by name.
    Join,
    /// Join any open room.
    JoinRandom,
    /// List rooms.
    List,
    /// Leave.
    Leave,
    /// Kick a member.
    Kick,
}

impl RoomOp {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Join => 1,
            Self::JoinRandom => 2,
            Self::List => 3,
            Self::Leave => 4,
            Self::Kick => 5,
        }
    }

    pub(crate) fn from_code(c: u8) -> Self {
        match c {
            2 => Self::JoinRandom,
            3 => Self::List,
            4 => Self::Leave,
            5 => Self::Kick,
            _ => Self::Join,
        }
    }
}

/// Why a room operation failed. Nothing changed on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomError {
    /// No room by that name (or no open room, for join-random).
    NotFound,
    /// The password does not match.
    WrongPassword,
    /// The room is at its member limit.
    Full,
    /// Create-only, and the room exists.
    AlreadyExists,
    /// Only the room's owner may do that.
    NotOwner,
    /// The client (or the member named) is not in that room.
    NotMember,
    /// The client is already in that room.
    AlreadyMember,
    /// This server has no rooms policy.
    Disabled,
    /// Empty or over-long name or password.
    InvalidName,
    /// The server's room limit is reached.
    TooManyRooms,
    /// The server is draining ([`crate::Server::drain`]): it creates no new rooms.
    Draining,
    /// The join asked for a relay-only room ([`crate::RoomOptions::relay_only`]) and the
    /// room exists but is not relay-only: joining would hand this client's addresses out.
    NotRelayOnly,
    /// Cluster: the room lives on another node, and this client is in rooms here, so it
    /// cannot be sent there (a client's rooms all live on the node it is on; groups spanning
    /// nodes are not supported). Leave the rooms here first.
    OtherNode,
    /// Cluster: the directory (Redis) that says where rooms live cannot be reached, so a room
    /// this node does not have can be neither found nor created; rooms here still work.
    DirectoryUnavailable,
    /// Cluster: the join was sent from node to node more than
    /// [`crate::ClientConfig`]'s limit of redirects (4) in a row (nodes disagreeing while
    /// rooms move); try again.
    TooManyRedirects,
    /// A code this version does not know.
    Other(u8),
}

impl RoomError {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::NotFound => 1,
            Self::WrongPassword => 2,
            Self::Full => 3,
            Self::AlreadyExists => 4,
            Self::NotOwner => 5,
            Self::NotMember => 6,
            Self::AlreadyMember => 7,
            Self::Disabled => 8,
            Self::InvalidName => 9,
            Self::TooManyRooms => 10,
            Self::Draining => 11,
            Self::NotRelayOnly => 12,
            Self::OtherNode => 13,
            Self::DirectoryUnavailable => 14,
            Self::TooManyRedirects => 15,
            Self::Other(c) => c,
        }
    }

    pub(crate) fn from_code(c: u8) -> Self {
        match c {
            1 => Self::NotFound,
            2 => Self::WrongPassword,
            3 => Self::Full,
            4 => Self::AlreadyExists,
            5 => Self::NotOwner,
            6 => Self::NotMember,
            7 => Self::AlreadyMember,
            8 => Self::Disabled,
            9 => Self::InvalidName,
            10 => Self::TooManyRooms,
            11 => Self::Draining,
            12 => Self::NotRelayOnly,
            13 => Self::OtherNode,
            14 => Self::DirectoryUnavailable,
            15 => Self::TooManyRedirects,
            c => Self::Other(c),
        }
    }
}

/// What a [`crate::Client`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The server accepted the session.
    Connected {
        /// The id the server gave this client.
        host_id: HostId,
        /// This client's address as the server sees it (its public, reflexive address).
        public_addr: SocketAddr,
        /// The server's proven identity (equal to the pinned key, if one was configured).
        server_key: PublicKey,
    },
    /// The session ended or could not start. Nothing more is sent or received afterwards,
    /// except when the client registers again by itself ([`crate::ClientConfig::reregister`]:
    /// after a timeout with direct peers kept, any timeout with several server addresses
    /// ([`crate::Client::connect_any`]: with the next one), or a [`DisconnectReason::Reset`]):
    /// then a new `Connected` follows, and kept peers carry on meanwhile.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// An application message from the server.
    Message {
        /// The payload.
        payload: Bytes,
    },
    /// A member is in a group this client belongs to; sent for every member, this client
    /// included, when it joins, and for each member who joins later. From this event on,
    /// [`crate::Client::send`] to that member works (through the relay at first).
    MemberJoined {
        /// The group.
        group: GroupId,
        /// The member (possibly this client itself).
        member: HostId,
        /// Members of the group after the join.
        member_count: u16,
    },
    /// A member left a group; if `member` is this client, it is no longer in the group.
    MemberLeft {
        /// The group.
        group: GroupId,
        /// The member (possibly this client itself).
        member: HostId,
        /// Why.
        reason: MemberLeftReason,
    },
    /// The server destroyed a group this client was in.
    GroupDestroyed {
        /// The group.
        group: GroupId,
    },
    /// A message from another member.
    PeerMessage {
        /// The sender.
        from: HostId,
        /// The channel it came on.
        channel: crate::Channel,
        /// The payload.
        payload: Bytes,
    },
    /// A reliable message was not acknowledged before its deadline or retry budget (or its
    /// peer went away); it will not be delivered from now on. It may have arrived already
    /// with its acknowledgement lost on the way back: "expired" means not confirmed.
    MessageExpired {
        /// The peer it was for.
        peer: HostId,
        /// Its channel.
        channel: crate::Channel,
        /// The id `send` returned.
        message_id: crate::MessageId,
    },
    /// The path to a peer changed: a direct path was validated both ways (traffic moves to
    /// it with nothing lost, duplicated or reordered), or the direct path died (traffic falls
    /// back to the relay and punching is retried later).
    PathChanged {
        /// The peer.
        peer: HostId,
        /// The new path.
        path: crate::Path,
        /// Why.
        reason: PathChangeReason,
    },
    /// A STUN query from [`crate::Client::query_stun`] finished.
    StunResult {
        /// The STUN server asked.
        server: SocketAddr,
        /// This client's address as that server sees it, or why there is none.
        result: Result<SocketAddr, crate::stun::StunError>,
    },
    /// The port mapping at the default gateway ([`crate::Client::set_gateway`]) was granted
    /// (its public address is now offered to peers), lost or could not be made.
    PortMapping {
        /// The gateway asked.
        gateway: std::net::IpAddr,
        /// What happened.
        event: crate::portmap::PortMapEvent,
    },
    /// NAT behaviour discovery ([`crate::Client::discover_nat`], or the automatic one after
    /// connecting) finished.
    NatDiscovered {
        /// The STUN server asked.
        server: SocketAddr,
        /// What it found, or why nothing.
        result: Result<crate::nat::NatBehavior, crate::stun::StunError>,
    },
    /// The server has not heard `peer` for a while (its network changed, it lost signal):
    /// it is still a member of every shared group, and messages to it wait in the reliability
    /// layer (or expire at their deadline). Either [`ClientEvent::PeerRecovered`] follows, or,
    /// when the server's recovery window closes, the usual `MemberLeft`.
    PeerRecovering {
        /// The peer.
        peer: HostId,
    },
    /// A recovering peer is back (from the same or a new address); what was sent to it
    /// meanwhile is retransmitted now.
    PeerRecovered {
        /// The peer.
        peer: HostId,
    },
    /// The server is draining (its operator is taking it down): it takes no new clients or
    /// rooms, and closes this session within `within`
    /// ([`DisconnectReason::ClosedByServer`]). A client with other addresses
    /// ([`crate::Client::connect_any`]) does not wait: it moves to the next one at once
    /// (`Disconnected` with [`DisconnectReason::ServerDraining`], then `Connected`). Peers with a validated direct path can stay
    /// after that (see [`crate::ClientConfig::pair_lifetime`]); a game may move its players
    /// to another server meanwhile.
    ServerDraining {
        /// Time left before the server closes the session.
        within: crate::time::Duration,
    },
    /// Cluster: the node sent this client to another node (`to`): a join reached a node that
    /// does not have the room (`room` names it), or the node is draining and its rooms moved
    /// (`room` is `None`). The client closed its session with `from`, registers with `to`
    /// with its resumption ticket (same host id), joins its rooms again there and asks for
    /// `room`; `Connected` follows (no `Disconnected`). Peers with a direct path never
    /// notice; relayed ones resume when `to` introduces the pair again, nothing lost.
    Redirected {
        /// The node left.
        from: SocketAddr,
        /// The node registered with now.
        to: SocketAddr,
        /// The room asked for, if the redirect was for a join.
        room: Option<String>,
    },
    /// The session with the server moved to TCP (`tcp: true`: UDP to the server failed, see
    /// [`crate::Transport::Auto`]) or back to UDP (a probe came back). Nothing sent is lost
    /// or duplicated across the move.
    ServerTransport {
        /// Whether the server is now reached over a TCP stream.
        tcp: bool,
    },
    /// This client stopped talking to a peer that broke a protocol limit.
    PeerDropped {
        /// The peer.
        peer: HostId,
        /// Which limit.
        reason: crate::PeerDropReason,
    },
    /// This client is in a room (it created or joined it). `MemberJoined` events follow.
    RoomJoined {
        /// The group behind the room.
        group: GroupId,
        /// The room's name.
        name: String,
        /// Its owner, who may kick members.
        owner: HostId,
    },
    /// A room answered a list request.
    RoomList {
        /// Rooms on the server.
        total: u16,
        /// Index of the first room in `rooms`.
        offset: u16,
        /// One page of rooms, in name order.
        rooms: Vec<RoomInfo>,
    },
    /// A room's owner changed (the previous owner left).
    RoomOwnerChanged {
        /// The group behind the room.
        group: GroupId,
        /// The new owner.
        owner: HostId,
    },
    /// A room operation failed; nothing changed.
    RoomFailed {
        /// What was attempted.
        op: RoomOp,
        /// Why it failed.
        error: RoomError,
    },
}

/// Why a peer's path changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathChangeReason {
    /// Hole punching validated a direct path both ways.
    Punched,
    /// Nothing arrived on the direct path for too long.
    DirectLost,
}

/// Why a client's session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// No answer from the server within `connect_timeout` (over UDP, and over TCP if it was
    /// tried: the connects went unanswered).
    ConnectTimedOut,
    /// No session within `connect_timeout`, and the last TCP connect to the server was
    /// refused (nothing listens at its TCP port, or a firewall rejects the connection); UDP,
    /// if tried, got no answer.
    ConnectRefused,
    /// No session within `connect_timeout`, and the server accepted the last TCP connection
    /// but closed it before it answered (it runs, but admitted nobody from here: it is
    /// overloaded or its admission is full, or it is not a Pierce server); UDP, if tried,
    /// got no answer.
    ConnectClosed,
    /// A server answered but could not prove it holds the pinned key (and none that could
    /// answered within `connect_timeout`).
    ServerKeyMismatch,
    /// The server refused the session.
    Rejected(RejectReason),
    /// Nothing authentic from the server within `idle_timeout`. Peers with a validated
    /// direct path stay for `pair_lifetime` (see [`crate::Client::detach_from_server`]).
    TimedOut,
    /// The server closed the session with this code.
    ClosedByServer(u16),
    /// This client closed the session with this code.
    ClosedLocally(u16),
    /// [`crate::Client::detach_from_server`]: peers with a validated direct path stay.
    Detached,
    /// The server answered with a stateless reset carrying this session's token, and did not
    /// answer the probe that checked it within three round trips: it no longer has the
    /// session (it restarted with the same key, or forgot the session). With
    /// [`crate::ClientConfig::reregister`] the client registers again at once, with its
    /// ticket; peers stay meanwhile, relay-only ones too (for `idle_timeout`, waiting for the
    /// returning server to introduce them again).
    Reset,
    /// The server is draining ([`ClientEvent::ServerDraining`] came first) and the client
    /// has another address ([`crate::Client::connect_any`]): it closed its session with the
    /// draining node at once and registers with the next address, as after a
    /// [`DisconnectReason::Reset`] (ticket, rooms rejoined, peers kept meanwhile).
    /// `Connected` follows when the next node welcomes it. With one address the client
    /// waits for the server to close the session ([`DisconnectReason::ClosedByServer`]).
    ServerDraining,
}

/// Why a server refused a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The server requires a connect token and none was given.
    TokenRequired,
    /// The token's MAC, format or version is wrong.
    InvalidToken,
    /// The token expired.
    ExpiredToken,
    /// The server is at `max_clients`.
    ServerFull,
    /// The server is draining ([`crate::Server::drain`]): it takes no new clients.
    Draining,
    /// A code this version does not know.
    Other(u8),
}

impl RejectReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::TokenRequired => 1,
            Self::InvalidToken => 2,
            Self::ExpiredToken => 3,
            Self::ServerFull => 4,
            Self::Draining => 5,
            Self::Other(c) => c,
        }
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => Self::TokenRequired,
            2 => Self::InvalidToken,
            3 => Self::ExpiredToken,
            4 => Self::ServerFull,
            5 => Self::Draining,
            c => Self::Other(c),
        }
    }
}

/// What a [`crate::Server`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client completed the handshake (and its token, if required, verified).
    ClientJoined {
        /// Its id.
        host_id: HostId,
        /// The address it connected from.
        addr: SocketAddr,
        /// The user id from its connect token, when tokens are required.
        user_id: Option<u64>,
    },
    /// Right after `ClientJoined`: the client presented a resumption ticket and got its
    /// earlier host id back (the server restarted, or its old session had ended). Its groups
    /// are not restored by the server: the application puts it back where it was (rooms are
    /// rejoined by the client itself).
    ClientResumed {
        /// Its id, the same as before.
        host_id: HostId,
    },
    /// A client is gone; its id will not be seen again.
    ClientLeft {
        /// Its id.
        host_id: HostId,
        /// Why.
        reason: LeaveReason,
    },
    /// An application message from a client.
    Message {
        /// The sender.
        from: HostId,
        /// The payload.
        payload: Bytes,
    },
    /// Every member of `group` (the new one included) has acknowledged that `member` joined
    /// (ProudNet's `OnP2PGroupJoinMemberAckComplete`).
    GroupJoinAckComplete {
        /// The group.
        group: GroupId,
        /// The member whose join everyone acknowledged.
        member: HostId,
    },
    /// Nothing from the client for [`crate::ServerConfig::offline_after`]: its session,
    /// groups and pairs are kept until `idle_timeout` (the recovery window) and its peers are
    /// told (`PeerRecovering`).
    ClientOffline {
        /// Its id.
        host_id: HostId,
    },
    /// An offline client was heard again within the recovery window (perhaps from a new
    /// address); its peers are told (`PeerRecovered`).
    ClientOnline {
        /// Its id.
        host_id: HostId,
    },
    /// Cluster: the directory gave this node its number (the high 16 bits of every host id
    /// it issues); it takes clients from now on.
    NodeNumbered {
        /// The number.
        number: u16,
    },
    /// Cluster: the directory stopped answering (`reachable: false`: joins of rooms this
    /// node does not have fail with [`RoomError::DirectoryUnavailable`], rooms here go on)
    /// or answers again (`true`: the node is registered again, its rooms claimed again).
    DirectoryReachable {
        /// Whether it answers now.
        reachable: bool,
    },
    /// Cluster: client `host_id` was sent to node `to` (a join of a room living there, or
    /// a room of this draining node moving there).
    ClientRedirected {
        /// The client.
        host_id: HostId,
        /// The node it was sent to.
        to: SocketAddr,
        /// The room it asked for, if the redirect was for a join.
        room: Option<String>,
    },
}

/// Why a client left the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// Nothing authentic from it within `idle_timeout`.
    TimedOut,
    /// It closed the session with this code.
    Closed(u16),
    /// The server application disconnected it with this code.
    Kicked(u16),
    /// It did not read its control messages and its queue overflowed.
    Overloaded,
}
