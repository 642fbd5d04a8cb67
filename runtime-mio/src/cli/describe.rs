//! Words for the core's reasons and states, as the command prints them. One place, so the text
//! log, the JSON lines and error messages say the same thing.

use std::net::SocketAddr;

use pierce_core::{
    DisconnectReason, LeaveReason, MemberLeftReason, Path, PathChangeReason, RejectReason,
    RoomError,
};

/// Why a client's session ended, as an error message.
pub fn disconnect(reason: DisconnectReason, server: SocketAddr) -> String {
    match reason {
        DisconnectReason::ConnectTimedOut => format!(
            "no answer from a Pierce server at {server} (is it running, and is the address right?)"
        ),
        DisconnectReason::ConnectRefused => format!(
            "the connection to {server} was refused (no Pierce server listens there, or a \
             firewall rejects it)"
        ),
        DisconnectReason::ConnectClosed => format!(
            "the server at {server} closed the connection before answering (it is running but \
             admitted nobody from here: overloaded, or not a Pierce server)"
        ),
        DisconnectReason::ServerKeyMismatch => {
            format!("the server at {server} does not hold the key given with --server-key")
        }
        DisconnectReason::Rejected(r) => format!("the server refused the session: {}", reject(r)),
        DisconnectReason::TimedOut => format!("lost the server at {server} (nothing heard)"),
        DisconnectReason::ClosedByServer(code) => {
            format!("the server closed the session (code {code})")
        }
        DisconnectReason::ClosedLocally(code) => format!("closed locally (code {code})"),
        DisconnectReason::Detached => "detached from the server (direct peers stay)".to_owned(),
        DisconnectReason::Reset => {
            format!("the server at {server} no longer has the session (it restarted): reset")
        }
        DisconnectReason::ServerDraining => {
            format!("the server at {server} is draining: moving to the next server")
        }
        other => format!("disconnected: {other:?}"),
    }
}

fn reject(r: RejectReason) -> String {
    match r {
        RejectReason::TokenRequired => "it requires a connect token (use --token-secret)".into(),
        RejectReason::InvalidToken => "the connect token is invalid (wrong --token-secret?)".into(),
        RejectReason::ExpiredToken => "the connect token expired (check the clock)".into(),
        RejectReason::ServerFull => "it is full".into(),
        RejectReason::Draining => "it is draining (shutting down); try another server".into(),
        other => format!("{other:?}"),
    }
}

/// Why a room operation failed.
pub fn room_error(e: RoomError) -> String {
    match e {
        RoomError::NotFound => "no such room".into(),
        RoomError::WrongPassword => "wrong password".into(),
        RoomError::Full => "the room is full".into(),
        RoomError::AlreadyExists => "the room already exists".into(),
        RoomError::NotOwner => "only the room's owner may do that".into(),
        RoomError::NotMember => "not a member of that room".into(),
        RoomError::AlreadyMember => "already in that room".into(),
        RoomError::Disabled => "the server has no rooms".into(),
        RoomError::InvalidName => "invalid room name or password".into(),
        RoomError::TooManyRooms => "the server's room limit is reached".into(),
        RoomError::Draining => "the server is draining (shutting down): no new rooms".into(),
        RoomError::NotRelayOnly => "the room exists and is not relay-only".into(),
        RoomError::OtherNode => {
            "the room lives on another node of the cluster and this client is in rooms here".into()
        }
        RoomError::DirectoryUnavailable => {
            "the cluster directory (Redis) is unavailable: rooms on other nodes cannot be \
             found or created"
                .into()
        }
        RoomError::TooManyRedirects => {
            "the join was redirected between nodes too many times in a row".into()
        }
        other => format!("{other:?}"),
    }
}

/// Why a member left a group (a JSON-friendly word).
pub fn member_left(r: MemberLeftReason) -> &'static str {
    match r {
        MemberLeftReason::Left => "left",
        MemberLeftReason::Disconnected => "disconnected",
        MemberLeftReason::Kicked => "kicked",
        _ => "other",
    }
}

/// Why a client left the server (a JSON-friendly word).
pub fn client_left(r: LeaveReason) -> String {
    match r {
        LeaveReason::TimedOut => "timed-out".into(),
        LeaveReason::Closed(code) => format!("closed({code})"),
        LeaveReason::Kicked(code) => format!("kicked({code})"),
        LeaveReason::Overloaded => "overloaded".into(),
        other => format!("{other:?}"),
    }
}

/// `"relay"` or `"direct"`.
pub fn path(p: Path) -> &'static str {
    match p {
        Path::Relay => "relay",
        Path::Direct(_) => "direct",
    }
}

/// Why a peer's path changed (a JSON-friendly word).
pub fn path_change(r: PathChangeReason) -> &'static str {
    match r {
        PathChangeReason::Punched => "punched",
        PathChangeReason::DirectLost => "direct-lost",
        _ => "other",
    }
}
