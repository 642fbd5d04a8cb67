//! The drive contract: the verbs every Pierce state machine speaks, as two traits, so
//! runtimes and simulators drive a [`crate::Client`], a [`crate::Server`] or a
//! [`crate::Host`] with one loop.
//!
//! [`Endpoint`] is the I/O side (datagrams, sockets, streams and time in; datagrams, socket
//! requests and deadlines out). It is object safe: `Box<dyn Endpoint>` drives any of them.
//! [`Events`] is the application side: what the endpoint reports.

use std::net::{Ipv6Addr, SocketAddr};

use crate::time::{Instant, Timeout};
use crate::{SocketId, SocketRequest, Transmit};

/// `addr` in its canonical form: an IPv4-mapped IPv6 address (`[::ffff:192.0.2.1]:7777`, as
/// a dual-stack socket names an IPv4 sender) is the IPv4 one (`192.0.2.1:7777`). Every
/// endpoint canonicalises the senders it is handed, so addresses are compared, reported and
/// sent in one form; a runtime with a dual-stack socket maps IPv4 destinations back when it
/// sends.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The well-known NAT64 prefix, `64:ff9b::/96` (RFC 6052 §2.1): NAT64 gateways use it when
/// the network names no prefix of its own.
pub const WELL_KNOWN_NAT64_PREFIX: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);

/// `addr` as a host behind NAT64 reaches it: an IPv4 address (canonical or IPv4-mapped) in
/// the IPv6 form synthesised with the /96 `prefix` (RFC 6052 §2.2: the IPv4 address in the
/// last 32 bits), an IPv6 one unchanged.
pub fn synthesize_nat64(prefix: Ipv6Addr, addr: SocketAddr) -> SocketAddr {
    match canonical(addr) {
        SocketAddr::V4(a) => {
            let mut o = prefix.octets();
            o[12..].copy_from_slice(&a.ip().octets());
            SocketAddr::new(Ipv6Addr::from(o).into(), a.port())
        }
        v6 => v6,
    }
}

/// A sans-IO endpoint: datagrams, socket changes and time in; datagrams, socket requests and
/// deadlines out. The core never touches a socket or a clock; a runtime owns both and honours
/// every verb here:
///
/// 1. **Datagrams in.** Every datagram that arrives goes to
///    [`Endpoint::handle_datagram_on`] with the id of the local socket it arrived on
///    ([`Endpoint::handle_datagram`] is the same for the primary socket). Bad input is
///    dropped and counted in the endpoint's `stats()`, never returned as an error.
/// 2. **Datagrams out.** After any `handle_*` call or command, call
///    [`Endpoint::poll_transmit`] until it returns `None`, sending `buf[..len]` to `dst` from
///    the local socket [`Transmit::socket`] names (a UDP socket, or a TCP stream: see
///    [`SocketId`]). `buf` holds at least [`crate::MAX_DATAGRAM_SIZE`] bytes. A transmit for
///    a socket the runtime does not have is dropped, like a datagram lost on the way.
/// 3. **Sockets.** After any input, drain [`Endpoint::poll_socket_request`] too: open a UDP
///    socket, connect a TCP stream or close one ([`SocketRequest`]), then report how it went
///    with [`Endpoint::handle_socket_opened`] (a refused connect with
///    [`Endpoint::handle_stream_refused`]). A server's runtime that listens for TCP
///    reports each accepted stream with [`Endpoint::handle_stream_accepted`]; any runtime
///    reports a stream that ended by itself with [`Endpoint::handle_stream_closed`].
/// 4. **Time.** Then read [`Endpoint::poll_timeout`] and call [`Endpoint::handle_timeout`]
///    when its instant passes. Calling it early or often (once per game frame) is harmless;
///    the deadline's reason says what is due then (logs, busy-loop reports).
/// 5. **Events.** Drain [`Events::poll_event`] whenever convenient.
///
/// `now` comes from one monotonic clock owned by the caller; values earlier than one already
/// seen are clamped and counted. `core/examples/drive.rs` is a complete loop over
/// `std::net` that honours all of it.
pub trait Endpoint {
    /// Processes one datagram received on local socket `socket` (the primary UDP socket,
    /// another UDP socket the endpoint asked for, or a TCP stream).
    fn handle_datagram_on(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    );

    /// Processes one datagram received on the primary socket.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.handle_datagram_on(now, SocketId::PRIMARY, from, datagram);
    }

    /// Reports how a [`SocketRequest::Open`] or [`SocketRequest::Connect`] went: the bound
    /// (or connected) local address, or `None` if the socket could not be opened. Default:
    /// ignored (for endpoints that never ask).
    fn handle_socket_opened(&mut self, now: Instant, id: SocketId, local: Option<SocketAddr>) {
        let _ = (now, id, local);
    }

    /// Reports that a [`SocketRequest::Connect`] for stream `id` was refused: the remote host
    /// answered it with a reset (`ECONNREFUSED`: nothing listens there, or a firewall
    /// rejects it). Any other failure to connect is `handle_socket_opened(.., None)`. Default:
    /// the same as that; a client remembers it for the reason it gives if it cannot connect.
    fn handle_stream_refused(&mut self, now: Instant, id: SocketId) {
        self.handle_socket_opened(now, id, None);
    }

    /// Reports that the runtime accepted TCP stream `id` from `peer` (servers; before any
    /// datagram on it). Default: ignored.
    fn handle_stream_accepted(&mut self, now: Instant, id: SocketId, peer: SocketAddr) {
        let _ = (now, id, peer);
    }

    /// Reports that TCP stream `id` ended (closed by the other side, reset, or failed after
    /// connecting); not for streams the endpoint closed itself. Default: ignored.
    fn handle_stream_closed(&mut self, now: Instant, id: SocketId) {
        let _ = (now, id);
    }

    /// Advances timers. Idempotent: may be called early or often.
    fn handle_timeout(&mut self, now: Instant);

    /// Writes the next datagram to send into `buf` (at least [`crate::MAX_DATAGRAM_SIZE`]
    /// bytes) and says where it goes, or `None` when nothing is due.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit>;

    /// The next change to the set of local sockets the endpoint wants (see
    /// [`SocketRequest`]). Default: never any.
    fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        None
    }

    /// When [`Endpoint::handle_timeout`] should next be called, if ever, and what is due
    /// then. Pure.
    fn poll_timeout(&self) -> Option<Timeout>;
}

/// What an endpoint reports to the application.
pub trait Events {
    /// The event type.
    type Event;

    /// The next event, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;
}
