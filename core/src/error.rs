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
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyStarted => f.write_str("the client is already connecting or connected"),
            Self::TokenTooLarge { max } => write!(f, "connect token longer than {max} bytes"),
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
    /// No such client (server side): never existed, or already gone.
    UnknownHost,
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
            Self::UnknownHost => f.write_str("no such client"),
            Self::PayloadTooLarge { max } => write!(f, "payload larger than {max} bytes"),
            Self::QueueFull => f.write_str("send queue full"),
        }
    }
}

impl std::error::Error for SendError {}

/// No connected client has that id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownHost;

impl fmt::Display for UnknownHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no such client")
    }
}

impl std::error::Error for UnknownHost {}
