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
    /// The session ended or could not start. Nothing more is sent or received afterwards.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// An application datagram from the server.
    Message {
        /// The payload.
        payload: Bytes,
    },
}

/// Why a client's session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// No answer from the server within `connect_timeout`.
    ConnectTimedOut,
    /// A server answered but could not prove it holds the pinned key (and none that could
    /// answered within `connect_timeout`).
    ServerKeyMismatch,
    /// The server refused the session.
    Rejected(RejectReason),
    /// Nothing authentic from the server within `idle_timeout`.
    TimedOut,
    /// The server closed the session with this code.
    ClosedByServer(u16),
    /// This client closed the session with this code.
    ClosedLocally(u16),
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
            Self::Other(c) => c,
        }
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => Self::TokenRequired,
            2 => Self::InvalidToken,
            3 => Self::ExpiredToken,
            4 => Self::ServerFull,
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
    /// A client is gone; its id will not be seen again.
    ClientLeft {
        /// Its id.
        host_id: HostId,
        /// Why.
        reason: LeaveReason,
    },
    /// An application datagram from a client.
    Message {
        /// The sender.
        from: HostId,
        /// The payload.
        payload: Bytes,
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
}
