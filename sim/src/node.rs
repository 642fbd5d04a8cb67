//! The nodes the simulator drives: `pierce_core`'s [`Endpoint`] and [`Events`] verbs plus
//! counters (firezone's `PollTimeout`-style trait).

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use pierce_core::{
    Client, ClientEvent, ClientStats, Endpoint, Events, Host, HostEvent, HostStats, Server,
    ServerEvent, ServerStats, SocketId,
};

/// Something the simulator can drive: a sans-IO [`Endpoint`] whose events it can log and
/// whose counters it can report. Implemented for [`Client`], [`Server`] and [`Host`]; implement it
/// for test doubles (an echo server, a misbehaving peer) and add them with
/// [`crate::Sim::add_node`].
pub trait Node: Endpoint + Events<Event: fmt::Debug + Into<NodeEvent>> {
    /// What `stats` returns.
    type Stats: fmt::Debug + Copy;

    /// Counters.
    fn stats(&self) -> Self::Stats;
}

impl Node for Client {
    type Stats = ClientStats;

    fn stats(&self) -> ClientStats {
        Self::stats(self)
    }
}

impl Node for Server {
    type Stats = ServerStats;

    fn stats(&self) -> ServerStats {
        Self::stats(self)
    }
}

/// Host mode: a server and its own client on one socket.
impl Node for Host {
    type Stats = HostStats;

    fn stats(&self) -> HostStats {
        Self::stats(self)
    }
}

/// An event from any node, as recorded in the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// From a client.
    Client(ClientEvent),
    /// From the server.
    Server(ServerEvent),
    /// From a custom node.
    Other(String),
}

impl From<ClientEvent> for NodeEvent {
    fn from(e: ClientEvent) -> Self {
        Self::Client(e)
    }
}

impl From<ServerEvent> for NodeEvent {
    fn from(e: ServerEvent) -> Self {
        Self::Server(e)
    }
}

impl From<HostEvent> for NodeEvent {
    fn from(e: HostEvent) -> Self {
        match e {
            HostEvent::Client(e) => Self::Client(e),
            HostEvent::Server(e) => Self::Server(e),
        }
    }
}

/// Custom nodes may report plain strings.
impl From<String> for NodeEvent {
    fn from(e: String) -> Self {
        Self::Other(e)
    }
}

/// What one service round of a node produced.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Datagrams to send: local socket, destination, bytes and TTL (`None`: the default).
    pub(crate) transmits: Vec<(SocketId, SocketAddr, Bytes, Option<u8>)>,
    pub(crate) events: Vec<NodeEvent>,
}

/// Drains a node's transmits and events after an input; returns its `poll_timeout()` after.
pub(crate) fn drain(
    node: &mut dyn Driven,
    now: Instant,
    buf: &mut [u8],
    out: &mut Output,
) -> Option<Instant> {
    while let Some(t) = node.poll_transmit(now, buf) {
        out.transmits.push((
            t.socket,
            t.dst,
            Bytes::copy_from_slice(&buf[..t.len]),
            t.ttl,
        ));
    }
    while let Some(e) = node.poll_node_event() {
        out.events.push(e);
    }
    node.poll_timeout().map(|t| t.at)
}

/// The object-safe face of a [`Node`] that the simulation loop holds, so clients, servers and
/// custom nodes share one code path: every verb comes from the core's object-safe
/// [`Endpoint`]; only events (converted to [`NodeEvent`]) and downcasting are added here.
pub(crate) trait Driven: Endpoint {
    fn poll_node_event(&mut self) -> Option<NodeEvent>;
    fn as_any(&self) -> &dyn std::any::Any;
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

impl<N: Node + 'static> Driven for N {
    fn poll_node_event(&mut self) -> Option<NodeEvent> {
        self.poll_event().map(Into::into)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
