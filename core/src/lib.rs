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
//!   pinnable), ChaCha20-Poly1305 per direction, 64-bit packet counters, replay window;
//!   keepalives, idle timeouts, close codes, kicking, connect tokens; a stateless cookie
//!   round trip under load; every invalid input dropped and counted in `stats()`.
//! - Server-managed P2P groups and rooms; per-pair keys; relay-first peer messaging, end-to-end
//!   sealed, only between members of a shared group.
//! - Reliable UDP per peer: reliable-ordered, reliable-unordered, sequenced and unreliable
//!   channels, fragmentation, RTT estimation, congestion control, expiry with an event.
//! - STUN (RFC 8489) answering, NAT behaviour discovery (RFC 5780, [`nat`]), coordinated hole
//!   punching with LAN, reflexive and peer-reflexive candidates, port prediction and birthday
//!   probing; traffic moves between relay and direct paths with nothing lost.
//! - Connection recovery: a client that goes quiet is offline (its peers get
//!   [`ClientEvent::PeerRecovering`]) and comes back within the recovery window with the same
//!   host id, groups and in-flight messages ([`ClientEvent::PeerRecovered`]).
//! - P2P without the server: direct pairs outlive a lost server session
//!   ([`Client::detach_from_server`], [`ClientConfig::pair_lifetime`]); after a timeout the
//!   client registers again with a resumption ticket, gets its host id back
//!   ([`ServerEvent::ClientResumed`]) and the pairs the server introduces again keep their
//!   direct path and reliability state ([`ClientConfig::reregister`]).
//! - TCP fallback: a client the server does not answer over UDP reaches it over a TCP
//!   stream (the runtime owns it: [`SocketId::stream`], [`SocketRequest::Connect`],
//!   [`framing`], [`streams`]) and moves back to UDP when a probe gets through ([`Transport`],
//!   [`ClientEvent::ServerTransport`]).
//! - Host mode: a [`Server`] and its own [`Client`] on one socket ([`Host`]).
//! - Optional logging: with the cargo feature `tracing` (off by default), every event and every
//!   dropped input, with its reason, is also a `tracing` line at `debug` (messages at `trace`,
//!   by length only); [`DropStats::by_reason`] lists the drop counters by name.
//!
//! The repository README tracks what is not done yet.
//!
//! ## The drive contract
//!
//! [`Client`], [`Server`] and [`Host`] are driven the same way, through [`Endpoint`] (the I/O
//! side, object safe) and [`Events`] (what they report). A runtime honours every verb:
//!
//! 1. **Datagrams in**: each received datagram to [`Endpoint::handle_datagram_on`] with the
//!    id of the local socket it came in on ([`Endpoint::handle_datagram`] for the primary
//!    one). Bad input is dropped and counted in `stats()`, never returned as an error.
//! 2. **Datagrams out**: after any `handle_*` call or command, [`Endpoint::poll_transmit`]
//!    until `None`; send `buf[..len]` to `dst` **from the socket [`Transmit::socket`] names**
//!    (a UDP socket, or a TCP stream, framed with [`framing`]). `buf` holds at least
//!    [`MAX_DATAGRAM_SIZE`] bytes. A transmit naming a socket the runtime does not have is
//!    dropped, like a lost datagram.
//! 3. **Sockets**: after any input, [`Endpoint::poll_socket_request`] until `None`: open a UDP
//!    socket (a client's birthday probing asks for 256 with the default configuration; a
//!    server with NAT discovery for its alternate addresses), connect a TCP stream (a
//!    client's fallback when UDP is blocked) or close one ([`SocketRequest`]), then report how
//!    it went with [`Endpoint::handle_socket_opened`] (a refused connect with
//!    [`Endpoint::handle_stream_refused`]). A server's runtime that listens for TCP
//!    reports accepted streams ([`Endpoint::handle_stream_accepted`]); any runtime reports a
//!    stream that ended by itself ([`Endpoint::handle_stream_closed`]).
//! 4. **Time**: [`Endpoint::poll_timeout`] says when to call [`Endpoint::handle_timeout`]
//!    and what is due then ([`Timeout`]); early or repeated calls are harmless, so once per
//!    game frame is fine.
//! 5. **Events**: [`Events::poll_event`] whenever convenient.
//!
//! `now` must come from one monotonic clock; earlier values than one already seen are clamped.
//!
//! The complete loop, from `examples/drive.rs`: every verb above over `std::net`, a server and
//! two clients on loopback with the default configuration (or, with `--server`, one client
//! against a `pierce server`; the NAT lab runs it behind a symmetric NAT, where it opens the
//! birthday sockets its client asks for and goes direct):
//!
#![doc = "```no_run"]
#![doc = include_str!("../examples/drive.rs")]
#![doc = "```"]
//!
//! ## Out of scope / assumptions
//!
//! - The runtime owns every socket: the primary UDP socket, extra ones the core asks for
//!   ([`SocketRequest`]), and TCP streams.
//! - The seed passed to constructors comes from a CSPRNG in production; all keys derive from it.
//! - Datagrams never exceed [`MAX_DATAGRAM_SIZE`]; IP fragmentation is never relied on.
#![cfg_attr(not(fuzzing), warn(missing_docs))]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod arena;
mod client;
pub mod cluster;
mod config;
pub mod crypto;
mod endpoint;
mod error;
mod event;
pub mod framing;
mod host;
pub mod nat;
pub mod portmap;
mod ratelimit;
mod rng;
mod rudp;
mod server;
mod stats;
pub mod streams;
pub mod stun;
mod time;
mod token;
#[cfg(feature = "tracing")]
mod trace;
pub mod wire;

/// The reliability layer as a standalone state machine, for fuzzing, benchmarks and custom
/// transports. [`Client`] drives one [`reliability::Connection`] per peer for you.
pub mod reliability {
    pub use crate::rudp::conn::{
        ACK_RESERVE, ConnEvent, ConnStats, Connection, Limits, MAX_ACK_DELAY,
    };
    pub use crate::rudp::pmtu::{
        BLACK_HOLE_PACKETS, BLACK_HOLE_PTOS, ERROR_RETRY, MAX_PROBES, PMTU_RAISE_TIMER, PmtuState,
        PmtuStats, Pmtud, SEARCH_PRECISION,
    };
}

#[cfg(test)]
mod tests;

pub use client::{Client, RoomOptions};
pub use config::{
    BASE_DATAGRAM_SIZE, ClientConfig, DEFAULT_CLIENT_KEEPALIVE_INTERVAL, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HANDSHAKE_RETRY_INITIAL, DEFAULT_HANDSHAKE_RETRY_MAX, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_OFFLINE_AFTER, DEFAULT_SERVER_ANSWER_TIMEOUT,
    DEFAULT_TCP_FALLBACK_AFTER, DEFAULT_UDP_PROBE_INTERVAL, MAX_DATAGRAM_SIZE, MAX_RELAY_SHARDS,
    MIN_DATAGRAM_SIZE, RoomsConfig, ServerConfig, Transport,
};
pub use crypto::{PublicKey, SecretKey};
pub use endpoint::{Endpoint, Events, WELL_KNOWN_NAT64_PREFIX, canonical, synthesize_nat64};
pub use error::{CommandError, ConfigError, ConnectError, GroupError, SendError, UnknownHost};
pub use event::{
    ClientEvent, DisconnectReason, GroupId, HostId, LeaveReason, MemberLeftReason,
    PathChangeReason, RejectReason, RoomError, RoomInfo, RoomOp, ServerEvent,
};
pub use host::{Host, HostEvent, HostStats};
pub use rudp::{
    Channel, ChannelConfig, ChannelStats, Delivery, MessageId, Path, PeerDropReason, PeerStats,
    SendOptions,
};
pub use server::{
    Forward, ForwardReport, ForwardUpdate, Forwarder, REPORT_INTERVAL, RoomSummary, Server,
    relay_shard, relay_shard_of,
};
pub use stats::{
    ClientStats, DropStats, Histogram, IoStats, RELAY_DATAGRAM_BOUNDS_BYTES, SESSION_RTT_BOUNDS_MS,
    ServerHistograms, ServerStats, TIME_TO_DIRECT_BOUNDS_MS,
};
pub use time::Timeout;
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
    /// The local socket it leaves from: [`SocketId::PRIMARY`] unless the endpoint asked for
    /// more sockets (see [`SocketRequest`]). A runtime that has no socket with this id drops
    /// the datagram, like a datagram lost on the way.
    pub socket: SocketId,
    /// The IPv4 TTL (IPv6 hop limit) to send it with; `None`: the socket's default.
    ///
    /// Set only on a hole-punching *opener*: a probe sent with a low TTL so that it opens
    /// the sender's own NAT towards the peer but expires in the network before it reaches
    /// the peer's NAT, where a Linux router would otherwise keep it as a conntrack entry
    /// that moves its own host's later flow to the sender onto another port (see
    /// `client/path.rs`). A runtime that cannot send with this TTL must drop the datagram
    /// rather than send it with the default one: an opener that arrives does harm, one that
    /// is dropped only costs that pair the trick.
    pub ttl: Option<u8>,
}

impl Transmit {
    /// A datagram leaving from the primary socket, with the socket's default TTL.
    pub const fn new(dst: SocketAddr, len: usize) -> Self {
        Self {
            dst,
            len,
            socket: SocketId::PRIMARY,
            ttl: None,
        }
    }
}

/// One of an endpoint's local sockets. The runtime owns the sockets; the core names them.
///
/// Socket 0 is the UDP socket the runtime was set up with. Endpoints may ask for more UDP
/// sockets through [`SocketRequest`]: a server for NAT behaviour discovery (its alternate
/// addresses, RFC 5780), a client for birthday probing (many local ports, each with its own
/// NAT mapping).
///
/// Ids with the top bit set ([`SocketId::stream`]) name **TCP streams** (the fallback for
/// networks that block UDP). A stream carries the same datagrams a UDP socket would, each
/// framed by the runtime as a 2-byte big-endian length and the bytes ([`framing`] does it).
/// A client asks for its stream with [`SocketRequest::Connect`]; a server's runtime names
/// each accepted stream itself, passes what arrives on it to `handle_datagram_on` with the
/// stream's id and the remote address, sends transmits naming it down that stream, and reports
/// its end with `handle_stream_closed`. A runtime must not give a closed stream's id to a new stream
/// before it has reported the close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SocketId(pub u16);

impl SocketId {
    /// The socket the endpoint was created for.
    pub const PRIMARY: Self = Self(0);
    /// The bit that marks a stream id.
    pub const STREAM_BIT: u16 = 0x8000;

    /// Stream number `n` (only its low 15 bits count).
    #[must_use]
    pub const fn stream(n: u16) -> Self {
        Self(Self::STREAM_BIT | (n & !Self::STREAM_BIT))
    }

    /// Whether this names a TCP stream rather than a UDP socket.
    #[must_use]
    pub const fn is_stream(self) -> bool {
        self.0 & Self::STREAM_BIT != 0
    }
}

/// A change to the set of local sockets an endpoint wants, from `poll_socket_request`.
///
/// The runtime carries it out and reports the result with `handle_socket_opened`; until then (and
/// forever, if it cannot) transmits naming the socket are dropped by the runtime. Datagrams
/// that arrive on a socket go to `handle_datagram_on` with its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketRequest {
    /// Bind a new UDP socket and call it `id`. With `addr`, bind exactly that address (a
    /// server's alternate address), or, if its IP is unspecified, the primary socket's IP
    /// with that port (a client's fresh socket after a lost punching race); without, bind
    /// the primary socket's IP with any port.
    Open {
        /// The name the core will use for it.
        id: SocketId,
        /// The address to bind, if the core needs a particular one.
        addr: Option<SocketAddr>,
    },
    /// Close socket `id` (a UDP socket, or a stream: shut it down); the core will not name it
    /// again until it asks to open or connect it anew. No `handle_stream_closed` follows.
    Close {
        /// Which socket.
        id: SocketId,
    },
    /// Connect a TCP stream to `addr` and call it `id` (a [`SocketId::stream`] id). The
    /// runtime reports the outcome with `handle_socket_opened` (the stream's local address, or
    /// `None` if it could not connect) and, later, the stream's end with `handle_stream_closed`.
    Connect {
        /// The name the core will use for it.
        id: SocketId,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Connect a TCP stream to `addr` and call it `id`, like [`SocketRequest::Connect`], but
    /// carrying bytes, not framed datagrams (a client's HTTP exchanges with its gateway, UPnP
    /// IGD): the bytes of each transmit naming it are written as they are, and what arrives
    /// goes to `handle_datagram_on` as it is read, in pieces whose boundaries mean nothing
    /// ([`framing::Framer::raw`], [`framing::Deframer::raw`] do both). A runtime that cannot
    /// carry one reports `handle_socket_opened(.., None)`.
    ConnectRaw {
        /// The name the core will use for it.
        id: SocketId,
        /// Where to connect.
        addr: SocketAddr,
    },
}

/// Size of the per-endpoint decryption scratch buffer; larger datagrams are dropped.
const RECV_SCRATCH_SIZE: usize = 2048;
