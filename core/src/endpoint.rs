//! The five verbs every Pierce state machine speaks, as a trait, so runtimes and simulators can
//! drive a [`crate::Client`] or a [`crate::Server`] (or both, on one socket) with one loop.

use std::net::SocketAddr;

use crate::time::Instant;
use crate::{SocketId, SocketRequest, Transmit};

/// A sans-IO endpoint: datagrams and time in; datagrams, deadlines and events out.
///
/// The drive order is the one documented on [`crate::Client`]: after any `handle_*` call or
/// command, drain [`Endpoint::poll_transmit`] until `None`, then read
/// [`Endpoint::poll_timeout`]; drain [`Endpoint::poll_event`] whenever convenient.
pub trait Endpoint {
    /// What this endpoint reports.
    type Event;

    /// Processes one datagram received on the primary socket.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]);
    /// Processes one datagram received on local socket `socket`. The default, for
    /// endpoints that never ask for more sockets, treats every socket as the primary one.
    fn handle_datagram_on(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        let _ = socket;
        self.handle_datagram(now, from, datagram);
    }
    /// The next change to the set of local sockets the endpoint wants (see
    /// [`SocketRequest`]); runtimes check it after every input, like `poll_transmit`.
    /// Default: never any.
    fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        None
    }
    /// Reports how a [`SocketRequest::Open`] went: the bound local address, or `None` if the
    /// socket could not be opened. Default: ignored.
    fn socket_opened(&mut self, now: Instant, id: SocketId, local: Option<SocketAddr>) {
        let _ = (now, id, local);
    }
    /// Reports that the runtime accepted TCP stream `id` from `peer` (servers; before any
    /// datagram on it). Default: ignored.
    fn stream_accepted(&mut self, now: Instant, id: SocketId, peer: SocketAddr) {
        let _ = (now, id, peer);
    }
    /// Reports that TCP stream `id` ended (closed by the other side, reset, or failed after
    /// connecting); not called for streams the core closed itself. Default: ignored.
    fn stream_closed(&mut self, now: Instant, id: SocketId) {
        let _ = (now, id);
    }
    /// Advances timers; idempotent, may be called early or often.
    fn handle_timeout(&mut self, now: Instant);
    /// Writes the next datagram into `buf` (at least [`crate::MAX_DATAGRAM_SIZE`] bytes).
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit>;
    /// When `handle_timeout` should next be called.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next event.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// What the current deadline is for.
    fn timeout_reason(&self) -> &'static str;
}

macro_rules! impl_endpoint {
    ($ty:ty, $event:ty $(, accepts $accepted:ident)?) => {
        impl Endpoint for $ty {
            type Event = $event;
            $(
                fn $accepted(&mut self, now: Instant, id: SocketId, peer: SocketAddr) {
                    <$ty>::$accepted(self, now, id, peer)
                }
            )?
            fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
                <$ty>::handle_datagram(self, now, from, datagram)
            }
            fn handle_datagram_on(
                &mut self,
                now: Instant,
                socket: SocketId,
                from: SocketAddr,
                datagram: &[u8],
            ) {
                <$ty>::handle_datagram_on(self, now, socket, from, datagram)
            }
            fn poll_socket_request(&mut self) -> Option<SocketRequest> {
                <$ty>::poll_socket_request(self)
            }
            fn socket_opened(&mut self, now: Instant, id: SocketId, local: Option<SocketAddr>) {
                <$ty>::socket_opened(self, now, id, local)
            }
            fn stream_closed(&mut self, now: Instant, id: SocketId) {
                <$ty>::stream_closed(self, now, id)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$ty>::handle_timeout(self, now)
            }
            fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
                <$ty>::poll_transmit(self, now, buf)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$ty>::poll_timeout(self)
            }
            fn poll_event(&mut self) -> Option<Self::Event> {
                <$ty>::poll_event(self)
            }
            fn timeout_reason(&self) -> &'static str {
                <$ty>::timeout_reason(self)
            }
        }
    };
}

impl_endpoint!(crate::Client, crate::ClientEvent);
impl_endpoint!(crate::Server, crate::ServerEvent, accepts stream_accepted);
impl_endpoint!(crate::Host, crate::HostEvent, accepts stream_accepted);
