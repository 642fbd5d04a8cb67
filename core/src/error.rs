//! Errors returned by commands. They describe API misuse and arise before any I/O; network
//! problems are never returned (they are dropped and counted in stats), and lifecycle failures
//! arrive as events with a reason.

use std::fmt;

/// A configuration that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    ZeroDuration,
    /// The keepalive interval must be shorter than the idle timeout.
    KeepaliveNotBelowIdleTimeout,
    /// The largest handshake retry delay is below the first one.
    RetryMaxBelowInitial,
    /// A numeric setting is outside its allowed range (the setting's name).
    OutOfRange(&'static str),
    /// A setting or combination of settings is not usable (why).
    Invalid(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroDuration => f.write_str("a duration setting is zero"),
            Self::KeepaliveNotBelowIdleTimeout => {
                f.write_str("keepalive_interval must be shorter than idle_timeout")
            }
            Self::RetryMaxBelowInitial => {
                f.write_str("handshake_retry_max must not be below handshake_retry_initial")
            }
            Self::OutOfRange(name) => write!(f, "{name} is out of range"),
            Self::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConfigError {}

/// `Client::connect` could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The client is already connecting or connected.
    AlreadyStarted,
    /// The token is longer than the protocol carries.
    TokenTooLarge {
        /// Largest token accepted.
        max: usize,
    },
    /// [`crate::Client::connect_any`] was given no server address, or more than `max`.
    ServerList {
        /// Most addresses accepted.
        max: usize,
    },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyStarted => f.write_str("the client is already connecting or connected"),
            Self::TokenTooLarge { max } => write!(f, "connect token longer than {max} bytes"),
            Self::ServerList { max } => {
                write!(f, "a server list needs 1 to {max} addresses")
            }
        }
    }
}

impl std::error::Error for ConnectError {}

/// A message could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// Not connected (yet, or any more).
    NotConnected,
    /// No connected client has that id (server side): never existed, or already gone.
    UnknownHost(crate::HostId),
    /// No group member with that id shares a group with this client.
    UnknownPeer,
    /// This client is not in that group.
    NotMember,
    /// No channel with that index in `ClientConfig::channels`.
    UnknownChannel,
    /// The payload does not fit one datagram.
    PayloadTooLarge {
        /// Largest payload accepted.
        max: usize,
    },
    /// The outgoing queue is full; drain `poll_transmit` first.
    QueueFull,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConnected => f.write_str("not connected"),
            Self::UnknownHost(h) => UnknownHost(*h).fmt(f),
            Self::UnknownPeer => f.write_str("no such peer"),
            Self::NotMember => f.write_str("not in that group"),
            Self::UnknownChannel => f.write_str("no such channel"),
            Self::PayloadTooLarge { max } => write!(f, "payload larger than {max} bytes"),
            Self::QueueFull => f.write_str("send queue full"),
        }
    }
}

impl std::error::Error for SendError {}

/// A group command could not be carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupError {
    /// No connected client has that id.
    UnknownHost(crate::HostId),
    /// No such group.
    UnknownGroup,
    /// The client is already a member.
    AlreadyMember,
    /// The client is not a member.
    NotMember,
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownHost(h) => UnknownHost(*h).fmt(f),
            Self::UnknownGroup => f.write_str("no such group"),
            Self::AlreadyMember => f.write_str("already a member"),
            Self::NotMember => f.write_str("not a member"),
        }
    }
}

impl std::error::Error for GroupError {}

/// A client command could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// Not connected to the server.
    NotConnected,
    /// A room name or password is empty or longer than the protocol allows.
    InvalidName {
        /// Longest name or password accepted, in bytes.
        max: usize,
    },
    /// Too many commands waiting for the server; drain `poll_transmit` and retry later.
    QueueFull,
    /// The client is not in that group.
    NotMember,
    /// The command does not fit one datagram (names and payloads are checked against their
    /// limits first, so valid input never gets this).
    TooLarge,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConnected => f.write_str("not connected"),
            Self::InvalidName { max } => write!(f, "names are 1 to {max} bytes"),
            Self::QueueFull => f.write_str("control queue full"),
            Self::NotMember => f.write_str("not in that group"),
            Self::TooLarge => f.write_str("the command does not fit one datagram"),
        }
    }
}

impl std::error::Error for CommandError {}

/// No connected client has that id (the one error, and the one wording, for every command
/// that names a client: [`SendError::UnknownHost`] and [`GroupError::UnknownHost`] say the
/// same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownHost(pub crate::HostId);

impl fmt::Display for UnknownHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no connected client {}", self.0)
    }
}

impl std::error::Error for UnknownHost {}
