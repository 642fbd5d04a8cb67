//! # pierce-core
//!
//! The sans-IO heart of Pierce, a peer-to-peer networking library for games: a server that
//! decides who may talk to whom, finds each client's public address, coordinates hole punching
//! and relays traffic when no direct path exists; clients that talk to each other over
//! encrypted, reliable UDP.
//!
//! This crate has **no sockets, no clock and no threads**. It is a set of state machines
//! driven by the caller: datagrams and time go in, datagrams, deadlines and events come out.
//! That makes it usable from any event loop (a game's frame loop, mio, async runtimes), and
//! testable in virtual time (the `pierce-sim` crate runs whole networks deterministically).
//!
//! ## What works today
//!
//! - [`Server`] and [`Client`] with an encrypted session: X25519 handshake (server identity
//!   pinnable), ChaCha20-Poly1305 per direction, 64-bit packet counters, replay window.
//! - Keepalives, idle timeouts, graceful close with a code, kicking, connect tokens.
//! - Unreliable application datagrams between a client and the server.
//! - Hostile-input handling: no amplification, per-source and global handshake rate limits,
//!   bounded half-open state, everything invalid dropped and counted in `stats()`.
//!
//! Not yet: P2P groups and relaying, reliable delivery, STUN answering and NAT traversal.
//! The repository README tracks what lands next.
//!
//! ## The run loop
//!
//! For both [`Client`] and [`Server`]:
//!
//! 1. Pass every received datagram to `handle_datagram(now, from, bytes)`.
//! 2. When the deadline from `poll_timeout()` passes, call `handle_timeout(now)`. Calling it
//!    early or often (once per game frame, say) is harmless.
//! 3. After any `handle_*` call or command, call `poll_transmit(now, &mut buf)` until it
//!    returns `None`, sending `buf[..len]` to `dst` each time. `buf` must hold at least
//!    [`MAX_DATAGRAM_SIZE`] bytes.
//! 4. Then read `poll_timeout()` to know when to wake next.
//! 5. Drain `poll_event()` whenever convenient.
//!
//! `now` must come from one monotonic clock; earlier values than one already seen are clamped.
//!
//! The complete loop, from `examples/drive.rs` (a server and two clients on real UDP sockets
//! with nothing but `std::net`):
//!
#![doc = "```no_run"]
#![doc = include_str!("../examples/drive.rs")]
#![doc = "```"]
//!
//! ## Out of scope / assumptions
//!
//! - One UDP socket per endpoint; the runtime owns it.
//! - The seed passed to constructors comes from a CSPRNG in production; all keys derive from it.
//! - Datagrams never exceed [`MAX_DATAGRAM_SIZE`]; IP fragmentation is never relied on.
#![cfg_attr(not(fuzzing), warn(missing_docs))]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod arena;
mod client;
mod config;
pub mod crypto;
mod endpoint;
mod error;
mod event;
mod ratelimit;
mod rng;
mod rudp;
mod server;
mod stats;
pub mod stun;
mod time;
mod token;
pub mod wire;

/// The reliability layer as a standalone state machine, for fuzzing, benchmarks and custom
/// transports. [`Client`] drives one [`reliability::Connection`] per peer for you.
pub mod reliability {
    pub use crate::rudp::conn::{ACK_RESERVE, ConnEvent, ConnStats, Connection, Limits};
}

#[cfg(test)]
mod tests;

pub use client::Client;
pub use config::{
    ClientConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_RETRY_INITIAL,
    DEFAULT_HANDSHAKE_RETRY_MAX, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE_INTERVAL,
    MAX_DATAGRAM_SIZE, MIN_DATAGRAM_SIZE, RoomsConfig, ServerConfig,
};
pub use crypto::{PublicKey, SecretKey};
pub use endpoint::Endpoint;
pub use error::{CommandError, ConfigError, ConnectError, GroupError, SendError, UnknownHost};
pub use event::{
    ClientEvent, DisconnectReason, GroupId, HostId, LeaveReason, MemberLeftReason,
    PathChangeReason, RejectReason, RoomError, RoomInfo, RoomOp, ServerEvent,
};
pub use rudp::{
    Channel, ChannelConfig, ChannelStats, Delivery, MessageId, Path, PeerDropReason, PeerStats,
    SendOptions,
};
pub use server::Server;
pub use stats::{ClientStats, DropStats, IoStats, ServerStats};
pub use token::{CONNECT_TOKEN_LEN, ConnectToken};

use std::net::SocketAddr;

/// A datagram to send: the bytes are `buf[..len]` of the buffer passed to `poll_transmit`.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// How many bytes of the buffer to send.
    pub len: usize,
}

/// Size of the per-endpoint decryption scratch buffer; larger datagrams are dropped.
const RECV_SCRATCH_SIZE: usize = 2048;
