//! # pierce-async-std
//!
//! Runs a [`pierce_core`] endpoint on async-std. One task owns the core and its sockets: the
//! UDP socket it is created with, any more the core asks for (a server's NAT discovery
//! addresses, a client's birthday probing ports), and TCP streams, the fallback for networks
//! that block UDP (a client's stream to its server when the core asks for one; a server
//! listens on TCP at its UDP address, see [`ServerOptions`]). The application holds a
//! cloneable handle that sends commands over a channel and receives events from another
//! (quinn's `ConnectionDriver` shape without the shared mutex). The task:
//!
//! 1. runs due timers, opens and closes the sockets the core asks for, and drains transmits
//!    to the socket each names (framed onto a stream's bounded queue, for a stream);
//! 2. moves events to the handles;
//! 3. waits for the first of: the core's deadline, a command, a datagram on any socket, a
//!    frame on any stream, a connect or accept;
//! 4. feeds the winner to the core (reading the clock once), and repeats;
//!
//! until every handle is dropped. No protocol decision is made here.
//!
//! Commands travel to the task as closures run against the core between two inputs: the
//! handles' methods are such closures, and [`ServerHandle::with`] / [`ClientHandle::with`]
//! reach anything else the core offers. [`host`] runs a `pierce_core::Host` (a listen server:
//! a server and its own player on one socket) behind a [`ServerHandle`] and a
//! [`ClientHandle`], each with its own events, on one task.
//!
//! async-std is discontinued upstream ("deprecated in favor of smol"). Everything this crate
//! uses from it maps one-to-one onto async-io and lives in one private module, so a smol port
//! is a dependency swap. [`client`] and [`server`] return the driver future for any executor
//! (the tests run one under `async_io::block_on`); [`spawn_client`] and [`spawn_server`] spawn
//! it on async-std.
//!
//! ```no_run
//! use pierce_async_std::{ClientEvent, ServerEvent, spawn_client, spawn_server};
//! use pierce_core::{ClientConfig, SecretKey, ServerConfig};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let key = SecretKey::from_bytes(pierce_async_std::os_seed()?);
//! let server = spawn_server("127.0.0.1:0".parse().expect("literal"), ServerConfig::new(key)).await?;
//! let client = spawn_client("127.0.0.1:0".parse().expect("literal"), ClientConfig::default()).await?;
//! client.connect(server.local_addr(), &[]).await.expect("fresh client");
//! if let Some(ClientEvent::Connected { .. }) = client.next_event().await {
//!     client.send_to_server(&b"hello"[..]).await.expect("connected");
//! }
//! if let Some(ServerEvent::Message { from, payload }) = server.next_event().await {
//!     server.send(from, payload).await.expect("still connected"); // echo, zero-copy
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod driver;
mod rt;
mod stream;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use bytes::Bytes;
pub use pierce_core::streams::DEFAULT_MAX_STREAMS;
use pierce_core::{
    Channel, Client, ClientConfig, ClientStats, CommandError, ConfigError, ConnectError, Events,
    GroupError, GroupId, Host, HostId, MessageId, PeerStats, PublicKey, SendError, SendOptions,
    Server, ServerConfig, ServerStats, SocketId, UnknownHost, framing::DEFAULT_STREAM_BUFFER,
};
pub use pierce_core::{ClientEvent, ServerEvent};
pub use pierce_os::{DriverStats, local_addresses, os_seed, unix_time};

use driver::{COMMAND_CAPACITY, Core, EVENT_CAPACITY, HostCommand, HostOutbox, Job, Reply, job};
use driver::{Shared, Task};
use rt::{Socket, TcpListener, channel};
use stream::Streams;

/// Times [`server_with`] binds a fresh UDP port when the TCP port next to it is taken (only
/// for `bind` with port 0; an explicit port fails at once).
const BIND_ATTEMPTS: usize = 16;

/// A handle command failed.
#[derive(Debug)]
pub enum HandleError<E> {
    /// The core refused it (API misuse, such as sending before connecting).
    Core(E),
    /// The driver has stopped: its socket failed with this error, or its future was dropped.
    Stopped(io::Error),
}

impl<E: fmt::Display> fmt::Display for HandleError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Core(e) => e.fmt(f),
            Self::Stopped(e) => write!(f, "pierce driver stopped: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for HandleError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Core(e) => Some(e),
            Self::Stopped(e) => Some(e),
        }
    }
}

/// Where a handle's commands go: its own driver's channel, or the channel of a host's driver
/// (one driver for a server and its own client).
enum Commands<C> {
    Own(channel::Sender<C>),
    Host(channel::Sender<HostCommand>),
}

impl<C> Clone for Commands<C> {
    fn clone(&self) -> Self {
        match self {
            Self::Own(s) => Self::Own(s.clone()),
            Self::Host(s) => Self::Host(s.clone()),
        }
    }
}

/// The channels between one handle and the driver.
struct Link<C, Ev> {
    commands: Commands<C>,
    events: channel::Receiver<Ev>,
    shared: Arc<Shared>,
}

impl<C, Ev> Clone for Link<C, Ev> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            events: self.events.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Into<HostCommand>, Ev> Link<C, Ev> {
    /// Sends a command and waits for the core's answer.
    async fn call<T>(&self, command: impl FnOnce(Reply<T>) -> C) -> io::Result<T> {
        let (reply, answer) = channel::bounded(1);
        let command = command(reply);
        let sent = match &self.commands {
            Commands::Own(s) => s.send(command).await.is_ok(),
            Commands::Host(s) => s.send(command.into()).await.is_ok(),
        };
        if sent {
            answer.recv().await.map_err(|_| self.shared.stopped())
        } else {
            Err(self.shared.stopped())
        }
    }

    async fn try_call<T, E>(
        &self,
        command: impl FnOnce(Reply<Result<T, E>>) -> C,
    ) -> Result<T, HandleError<E>> {
        let result = self.call(command).await.map_err(HandleError::Stopped)?;
        result.map_err(HandleError::Core)
    }
}

/// Drives the core from an application: clone it freely. Each event goes to exactly one of the
/// clones that are waiting in `next_event`. The driver stops when the last clone is dropped;
/// call [`ClientHandle::disconnect`] first to tell the server.
#[derive(Clone)]
pub struct ClientHandle(Link<Job<Client>, ClientEvent>);

impl ClientHandle {
    /// Starts connecting to `server`, presenting `token` (empty if the server needs none).
    ///
    /// # Errors
    /// The core's [`ConnectError`], or [`HandleError::Stopped`].
    pub async fn connect(
        &self,
        server: SocketAddr,
        token: &[u8],
    ) -> Result<(), HandleError<ConnectError>> {
        let token = token.to_vec();
        self.try_with(move |c, now| c.connect(now, server, &token))
            .await
    }

    /// Queues an unreliable datagram for the server application.
    ///
    /// # Errors
    /// The core's [`SendError`], or [`HandleError::Stopped`].
    pub async fn send_to_server(
        &self,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError<SendError>> {
        let payload = payload.into();
        self.try_with(move |c, now| c.send_to_server(now, &payload))
            .await
    }

    /// Ends the session with `code`, telling the server; the `Close` is sent before the driver
    /// next waits, so dropping every handle right after this returns is fine.
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn disconnect(&self, code: u16) -> io::Result<()> {
        self.with(move |c, now| c.disconnect(now, code)).await
    }

    /// The core's counters.
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn stats(&self) -> io::Result<ClientStats> {
        self.with(|c, _| c.stats()).await
    }

    /// Joins the room `name`, creating it (with `max_members`, 0 for the server's default) if
    /// `create` and it does not exist; answered by [`ClientEvent::RoomJoined`] or
    /// [`ClientEvent::RoomFailed`] (`Client::join_room`).
    ///
    /// # Errors
    /// The core's [`CommandError`], or [`HandleError::Stopped`].
    pub async fn join_room(
        &self,
        name: &str,
        password: &str,
        create: bool,
        max_members: u16,
    ) -> Result<(), HandleError<CommandError>> {
        let (name, password) = (name.to_owned(), password.to_owned());
        self.try_with(move |c, now| c.join_room(now, &name, &password, create, max_members))
            .await
    }

    /// Leaves a room (`Client::leave_room`).
    ///
    /// # Errors
    /// The core's [`CommandError`], or [`HandleError::Stopped`].
    pub async fn leave_room(&self, group: GroupId) -> Result<(), HandleError<CommandError>> {
        self.try_with(move |c, now| c.leave_room(now, group)).await
    }

    /// Removes a member from a room this client owns (`Client::kick`).
    ///
    /// # Errors
    /// The core's [`CommandError`], or [`HandleError::Stopped`].
    pub async fn kick(
        &self,
        group: GroupId,
        member: HostId,
    ) -> Result<(), HandleError<CommandError>> {
        self.try_with(move |c, now| c.kick(now, group, member))
            .await
    }

    /// Queues a message for a member this client shares a group with, on `channel`
    /// (`Client::send`).
    ///
    /// # Errors
    /// The core's [`SendError`], or [`HandleError::Stopped`].
    pub async fn send(
        &self,
        to: HostId,
        channel: Channel,
        payload: impl Into<Bytes>,
    ) -> Result<MessageId, HandleError<SendError>> {
        let payload = payload.into();
        self.try_with(move |c, now| c.send(now, to, channel, &payload))
            .await
    }

    /// [`ClientHandle::send`] with per-message options, such as an expiry
    /// (`Client::send_with`).
    ///
    /// # Errors
    /// The core's [`SendError`], or [`HandleError::Stopped`].
    pub async fn send_with(
        &self,
        to: HostId,
        channel: Channel,
        payload: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<MessageId, HandleError<SendError>> {
        let payload = payload.into();
        self.try_with(move |c, now| c.send_with(now, to, channel, &payload, options))
            .await
    }

    /// Queues a reliable, ordered message for the server application
    /// (`Client::send_to_server_reliable`).
    ///
    /// # Errors
    /// The core's [`SendError`], or [`HandleError::Stopped`].
    pub async fn send_to_server_reliable(
        &self,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError<SendError>> {
        let payload = payload.into();
        self.try_with(move |c, now| c.send_to_server_reliable(now, &payload))
            .await
    }

    /// Asks for a page of the server's room list, from `offset`; answered by
    /// [`ClientEvent::RoomList`] (`Client::list_rooms`).
    ///
    /// # Errors
    /// The core's [`CommandError`], or [`HandleError::Stopped`].
    pub async fn list_rooms(&self, offset: u16) -> Result<(), HandleError<CommandError>> {
        self.try_with(move |c, now| c.list_rooms(now, offset)).await
    }

    /// Runs `f` against the client in the driver, between two inputs, and returns what it
    /// returns: for anything the core offers that has no method here (`Client::host_id`,
    /// `Client::channel_stats`, `Client::detach_from_server`, ...). What it queues is sent
    /// before the driver next waits. `f` holds up the driver while it runs: keep it short, and
    /// leave the `handle_*` / `poll_*` calls to the driver (events polled here are lost to
    /// the handles).
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client, Instant) -> T + Send + 'static,
    ) -> io::Result<T> {
        self.0.call(|r| job(r, f)).await
    }

    /// [`ClientHandle::with`] for a core call that can fail.
    async fn try_with<T: Send + 'static, E: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client, Instant) -> Result<T, E> + Send + 'static,
    ) -> Result<T, HandleError<E>> {
        self.0.try_call(|r| job(r, f)).await
    }

    /// Queues a message for every other member of `group` (`Client::send_to_group`).
    ///
    /// # Errors
    /// The core's [`SendError`], or [`HandleError::Stopped`].
    pub async fn send_to_group(
        &self,
        group: GroupId,
        channel: Channel,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError<SendError>> {
        let payload = payload.into();
        self.try_with(move |c, now| c.send_to_group(now, group, channel, &payload))
            .await
    }

    /// Tells the server this client's LAN addresses, so peers behind the same NAT can reach it
    /// directly (`Client::set_local_addresses`; sent once connected).
    ///
    /// # Errors
    /// The core's [`CommandError`], or [`HandleError::Stopped`].
    pub async fn set_local_addresses(
        &self,
        addrs: &[SocketAddr],
    ) -> Result<(), HandleError<CommandError>> {
        let addrs = addrs.to_vec();
        self.try_with(move |c, now| c.set_local_addresses(now, &addrs))
            .await
    }

    /// Runs NAT behaviour discovery (RFC 5780) against `server`'s STUN service from this
    /// client's socket (`Client::discover_nat`): a Pierce server with an alternate address or
    /// any RFC 5780 STUN server; answered by [`ClientEvent::NatDiscovered`]. Connected clients
    /// run it against their server by themselves (`ClientConfig::nat_discovery`).
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn discover_nat(&self, server: SocketAddr) -> io::Result<()> {
        self.with(move |c, now| c.discover_nat(now, server)).await
    }

    /// Counters and estimates of the connection to `peer`, if this client shares a group with
    /// it (`Client::peer_stats`).
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn peer_stats(&self, peer: HostId) -> io::Result<Option<PeerStats>> {
        self.with(move |c, _| c.peer_stats(peer)).await
    }

    /// The next event; `None` once the driver has stopped and every event was taken.
    pub async fn next_event(&self) -> Option<ClientEvent> {
        self.0.events.recv().await.ok()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.shared.local_addr
    }

    /// Whether the session with the server is on a TCP stream now (`Client::on_tcp`; moves
    /// are also reported by [`ClientEvent::ServerTransport`]).
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn on_tcp(&self) -> io::Result<bool> {
        self.with(|c, _| c.on_tcp()).await
    }

    /// The adapter's counters.
    pub fn driver_stats(&self) -> DriverStats {
        self.0.shared.stats()
    }
}

/// Drives a server from an application: clone it freely (see [`ClientHandle`]). The driver
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct ServerHandle {
    link: Link<Job<Server>, ServerEvent>,
    public_key: PublicKey,
}

impl ServerHandle {
    /// Queues an unreliable datagram for a client.
    ///
    /// # Errors
    /// The core's [`SendError`], or [`HandleError::Stopped`].
    pub async fn send(
        &self,
        host: HostId,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError<SendError>> {
        let payload = payload.into();
        self.try_with(move |s, now| s.send(now, host, &payload))
            .await
    }

    /// Queues a reliable, ordered message for a client (`Server::send_reliable`).
    ///
    /// # Errors
    /// The core's [`SendError`], or [`HandleError::Stopped`].
    pub async fn send_reliable(
        &self,
        host: HostId,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError<SendError>> {
        let payload = payload.into();
        self.try_with(move |s, now| s.send_reliable(now, host, &payload))
            .await
    }

    /// Creates a P2P group with `members` (possibly none), joined in the order given
    /// (`Server::create_group`). Members are told; the server reports
    /// [`ServerEvent::GroupJoinAckComplete`] when every member has acknowledged a join.
    ///
    /// # Errors
    /// [`GroupError::UnknownHost`] if any member is not connected (nothing is created), or
    /// [`HandleError::Stopped`].
    pub async fn create_group(
        &self,
        members: &[HostId],
    ) -> Result<GroupId, HandleError<GroupError>> {
        let members = members.to_vec();
        self.try_with(move |s, now| s.create_group(now, &members))
            .await
    }

    /// Adds a connected client to a group (`Server::join_group`).
    ///
    /// # Errors
    /// The core's [`GroupError`], or [`HandleError::Stopped`].
    pub async fn join_group(
        &self,
        group: GroupId,
        host: HostId,
    ) -> Result<(), HandleError<GroupError>> {
        self.try_with(move |s, now| s.join_group(now, group, host))
            .await
    }

    /// Removes a client from a group; every member, the leaver included, is told
    /// (`Server::leave_group`).
    ///
    /// # Errors
    /// The core's [`GroupError`], or [`HandleError::Stopped`].
    pub async fn leave_group(
        &self,
        group: GroupId,
        host: HostId,
    ) -> Result<(), HandleError<GroupError>> {
        self.try_with(move |s, now| s.leave_group(now, group, host))
            .await
    }

    /// Destroys a group (`Server::destroy_group`).
    ///
    /// # Errors
    /// The core's [`GroupError`], or [`HandleError::Stopped`].
    pub async fn destroy_group(&self, group: GroupId) -> Result<(), HandleError<GroupError>> {
        self.try_with(move |s, now| s.destroy_group(now, group))
            .await
    }

    /// The members of a group in join order, if it exists (`Server::group_members`).
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn group_members(&self, group: GroupId) -> io::Result<Option<Vec<HostId>>> {
        self.with(move |s, _| s.group_members(group).map(<[HostId]>::to_vec))
            .await
    }

    /// The connected clients, in id order (`Server::clients`).
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn clients(&self) -> io::Result<Vec<HostId>> {
        self.with(|s, _| s.clients().collect()).await
    }

    /// Runs `f` against the server in the driver, between two inputs, and returns what it
    /// returns: for anything the core offers that has no method here (`Server::groups`,
    /// `Server::client_addr`, `Server::client_user_id`, ...). What it queues is sent before
    /// the driver next waits. `f` holds up the driver while it runs: keep it short, and leave
    /// the `handle_*` / `poll_*` calls to the driver (events polled here are lost to the
    /// handles).
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Server, Instant) -> T + Send + 'static,
    ) -> io::Result<T> {
        self.link.call(|r| job(r, f)).await
    }

    /// [`ServerHandle::with`] for a core call that can fail.
    async fn try_with<T: Send + 'static, E: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Server, Instant) -> Result<T, E> + Send + 'static,
    ) -> Result<T, HandleError<E>> {
        self.link.try_call(|r| job(r, f)).await
    }

    /// Disconnects a client with `code`.
    ///
    /// # Errors
    /// [`UnknownHost`] from the core, or [`HandleError::Stopped`].
    pub async fn disconnect(
        &self,
        host: HostId,
        code: u16,
    ) -> Result<(), HandleError<UnknownHost>> {
        self.try_with(move |s, now| s.disconnect(now, host, code))
            .await
    }

    /// The core's counters.
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn stats(&self) -> io::Result<ServerStats> {
        self.with(|s, _| s.stats()).await
    }

    /// Turns on NAT behaviour discovery (RFC 5780, `Server::enable_nat_discovery`) with
    /// `alternate` as the second address (port 0 picks one): the driver binds the alternate
    /// socket, and its crossings with the primary address when the IPs differ, before it next
    /// waits. Their addresses come from [`ServerHandle::socket_addr`] (1: the alternate, 2:
    /// primary IP with the alternate port, 3: alternate IP with the primary port).
    ///
    /// # Errors
    /// The core's [`ConfigError`] (the server must be bound to a specific IP, not a wildcard;
    /// discovery already on), or [`HandleError::Stopped`].
    pub async fn enable_nat_discovery(
        &self,
        alternate: SocketAddr,
    ) -> Result<(), HandleError<ConfigError>> {
        let primary = self.local_addr();
        self.try_with(move |s, _| s.enable_nat_discovery(primary, alternate))
            .await
    }

    /// The bound address of the server's local socket `id` (`Server::socket_addr`), once
    /// the driver has opened it; `None` if it is not open (or could not be).
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn socket_addr(&self, id: SocketId) -> io::Result<Option<SocketAddr>> {
        self.with(move |s, _| s.socket_addr(id)).await
    }

    /// The local socket a client's session is on (`Server::client_socket`):
    /// [`SocketId::PRIMARY`] for UDP, a TCP stream ([`SocketId::is_stream`]) for a client on
    /// the fallback; `None` if `host` has no session.
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn client_socket(&self, host: HostId) -> io::Result<Option<SocketId>> {
        self.with(move |s, _| s.client_socket(host)).await
    }

    /// The next event; `None` once the driver has stopped and every event was taken.
    pub async fn next_event(&self) -> Option<ServerEvent> {
        self.link.events.recv().await.ok()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.link.shared.local_addr
    }

    /// The address the server accepts TCP streams at (the UDP socket's, same port), unless
    /// [`ServerOptions::tcp`] turned the listener off.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.link.shared.tcp_addr
    }

    /// The key clients pin in `ClientConfig::server_key`.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The adapter's counters.
    pub fn driver_stats(&self) -> DriverStats {
        self.link.shared.stats()
    }
}

/// A client's driver: run it to completion on any executor. It finishes with `Ok` when every
/// handle is dropped, or with the socket error that stopped it.
pub struct ClientDriver(Task<Client>);

impl ClientDriver {
    /// Drives the client until every handle is dropped or the socket fails.
    ///
    /// # Errors
    /// The socket failed; the handles report the same error.
    pub async fn run(self) -> io::Result<()> {
        self.0.run().await
    }
}

/// A server's driver: run it to completion on any executor (see [`ClientDriver`]).
pub struct ServerDriver(Task<Server>);

impl ServerDriver {
    /// Drives the server until every handle is dropped or the socket fails.
    ///
    /// # Errors
    /// The socket failed; the handles report the same error.
    pub async fn run(self) -> io::Result<()> {
        self.0.run().await
    }
}

/// A host's driver: run it to completion on any executor (see [`ClientDriver`]). It finishes
/// when every server handle and every client handle is dropped.
pub struct HostDriver(Task<Host>);

impl HostDriver {
    /// Drives the host until every handle is dropped or the socket fails.
    ///
    /// # Errors
    /// The socket failed; the handles report the same error.
    pub async fn run(self) -> io::Result<()> {
        self.0.run().await
    }
}

/// How a server's driver handles sockets (the protocol settings are in [`ServerConfig`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Listen for TCP streams at the UDP socket's address (same port), for clients on networks
    /// that block UDP (`pierce_core::Transport`). Default: on.
    pub tcp: bool,
    /// Streams accepted at most at a time; a connection over the cap is accepted and closed
    /// at once (counted in [`DriverStats::streams_refused`]). Default:
    /// [`DEFAULT_MAX_STREAMS`]; at most 32767 (the stream ids there are).
    pub max_streams: usize,
    /// Bytes of output queued per stream at most; a datagram that does not fit is dropped
    /// ([`DriverStats::stream_datagrams_dropped`]). Default:
    /// [`pierce_core::framing::DEFAULT_STREAM_BUFFER`].
    pub stream_buffer: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            tcp: true,
            max_streams: DEFAULT_MAX_STREAMS,
            stream_buffer: DEFAULT_STREAM_BUFFER,
        }
    }
}

/// A client bound at `bind`, seeded from the OS, and the driver to run it.
///
/// # Errors
/// An invalid config (`InvalidInput`), no OS entropy, or the bind failed.
pub async fn client(
    bind: SocketAddr,
    config: impl Into<Arc<ClientConfig>>,
) -> io::Result<(ClientHandle, ClientDriver)> {
    let core = Client::new(config.into(), os_seed()?, Instant::now()).map_err(invalid)?;
    let (link, task) = wire(rt::bind_udp(bind)?, core, Streams::default())?;
    Ok((ClientHandle(link), ClientDriver(task)))
}

/// A server bound at `bind` (UDP, and TCP at the same address), seeded from the OS, and the
/// driver to run it: [`server_with`] with default [`ServerOptions`].
///
/// # Errors
/// An invalid config (`InvalidInput`), no OS entropy, or the bind failed.
pub async fn server(
    bind: SocketAddr,
    config: impl Into<Arc<ServerConfig>>,
) -> io::Result<(ServerHandle, ServerDriver)> {
    server_with(bind, config, ServerOptions::default()).await
}

/// A server bound at `bind`, seeded from the OS, and the driver to run it. With
/// [`ServerOptions::tcp`] it also listens on TCP at the UDP socket's address; for port 0 it
/// picks a port free for both.
///
/// # Errors
/// An invalid config (`InvalidInput`), no OS entropy, or a bind failed.
pub async fn server_with(
    bind: SocketAddr,
    config: impl Into<Arc<ServerConfig>>,
    options: ServerOptions,
) -> io::Result<(ServerHandle, ServerDriver)> {
    let (seed, now) = (os_seed()?, Instant::now());
    let core = Server::new(config.into(), seed, now, unix_time()).map_err(invalid)?;
    let public_key = core.public_key();
    let (socket, listener) = bind_server(bind, options.tcp).await?;
    let streams = Streams::new(listener, options.max_streams, options.stream_buffer);
    let (link, task) = wire(socket, core, streams)?;
    Ok((ServerHandle { link, public_key }, ServerDriver(task)))
}

/// The server's UDP socket and, if `tcp`, a TCP listener on the same address.
async fn bind_server(bind: SocketAddr, tcp: bool) -> io::Result<(Socket, Option<TcpListener>)> {
    let mut attempts = 0;
    loop {
        let socket = rt::bind_udp(bind)?;
        if !tcp {
            return Ok((socket, None));
        }
        // (Bound by hand for an accept queue sized for bursts: `pierce_os::LISTEN_BACKLOG`.)
        match pierce_os::listen_tcp(socket.local_addr()?) {
            Ok(listener) => return Ok((socket, Some(TcpListener::from(listener)))),
            // The OS picked a UDP port whose TCP twin is taken: pick another.
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && bind.port() == 0 => {
                attempts += 1;
                if attempts == BIND_ATTEMPTS {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// [`client`], with its driver spawned on async-std.
///
/// # Errors
/// As [`client`].
pub async fn spawn_client(
    bind: SocketAddr,
    config: impl Into<Arc<ClientConfig>>,
) -> io::Result<ClientHandle> {
    let (handle, driver) = client(bind, config).await?;
    rt::spawn(driver.run());
    Ok(handle)
}

/// [`server`], with its driver spawned on async-std.
///
/// # Errors
/// As [`server`].
pub async fn spawn_server(
    bind: SocketAddr,
    config: impl Into<Arc<ServerConfig>>,
) -> io::Result<ServerHandle> {
    spawn_server_with(bind, config, ServerOptions::default()).await
}

/// [`server_with`], with its driver spawned on async-std.
///
/// # Errors
/// As [`server_with`].
pub async fn spawn_server_with(
    bind: SocketAddr,
    config: impl Into<Arc<ServerConfig>>,
    options: ServerOptions,
) -> io::Result<ServerHandle> {
    let (handle, driver) = server_with(bind, config, options).await?;
    rt::spawn(driver.run());
    Ok(handle)
}

/// A host (`pierce_core::Host`: a server and its own client, the local player, on one socket)
/// bound at `bind`, seeded from the OS, and the driver to run it; a listen server for LAN or
/// small games. The socket's address is where remote players reach the host, so `bind` must
/// name a specific IP (not `0.0.0.0`); the local client presents `token` to its own server
/// (empty if the server needs none) and is connected before this returns, in memory. With
/// [`ServerOptions::tcp`] the server also listens on TCP at that address, for remote players
/// on networks that block UDP.
///
/// The server handle and the client handle are the same types as a standalone server's and
/// client's, each with its own events; one driver runs both, until every handle of both is
/// dropped. Read both handles' events: while either channel is full, events of both wait.
///
/// ```no_run
/// use pierce_async_std::{ClientEvent, ServerEvent, ServerOptions, spawn_host};
/// use pierce_core::{Channel, ClientConfig, SecretKey, ServerConfig};
///
/// # async fn listen_server() -> std::io::Result<()> {
/// let key = SecretKey::from_bytes(pierce_async_std::os_seed()?);
/// let at = "192.0.2.10:7777".parse().expect("literal"); // where the other players reach us
/// let (server, me) =
///     spawn_host(at, ServerConfig::new(key), ClientConfig::default(), &[], ServerOptions::default())
///         .await?;
/// let mut players = Vec::new();
/// while players.len() < 3 {
///     if let Some(ServerEvent::ClientJoined { host_id, .. }) = server.next_event().await {
///         players.push(host_id); // this process's own player joins first, in memory
///     }
/// }
/// let group = server.create_group(&players).await.expect("all connected");
/// while let Some(event) = me.next_event().await {
///     if let ClientEvent::MemberJoined { member, .. } = event {
///         let _ = me.send(member, Channel::RELIABLE_ORDERED, &b"welcome"[..]).await;
///     }
/// }
/// # let _ = group;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// An invalid config or an unspecified `bind` IP (`InvalidInput`), no OS entropy, or a bind
/// failed.
pub async fn host(
    bind: SocketAddr,
    server: impl Into<Arc<ServerConfig>>,
    client: ClientConfig,
    token: &[u8],
    options: ServerOptions,
) -> io::Result<(ServerHandle, ClientHandle, HostDriver)> {
    let now = Instant::now();
    let core = Server::new(server.into(), os_seed()?, now, unix_time()).map_err(invalid)?;
    let public_key = core.public_key();
    let (socket, listener) = bind_server(bind, options.tcp).await?;
    let addr = socket.local_addr()?;
    let core = Host::new(core, client, os_seed()?, now, addr, token).map_err(invalid)?;
    let streams = Streams::new(listener, options.max_streams, options.stream_buffer);
    let (server_events, server_rx) = channel::bounded(EVENT_CAPACITY);
    let (client_events, client_rx) = channel::bounded(EVENT_CAPACITY);
    let outbox = HostOutbox {
        server: server_events,
        client: client_events,
    };
    let (task, commands) = task(socket, core, streams, outbox)?;
    let shared = Arc::clone(&task.shared);
    let server = ServerHandle {
        link: Link {
            commands: Commands::Host(commands.clone()),
            events: server_rx,
            shared: Arc::clone(&shared),
        },
        public_key,
    };
    let client = ClientHandle(Link {
        commands: Commands::Host(commands),
        events: client_rx,
        shared,
    });
    Ok((server, client, HostDriver(task)))
}

/// [`host`], with its driver spawned on async-std.
///
/// # Errors
/// As [`host`].
pub async fn spawn_host(
    bind: SocketAddr,
    server: impl Into<Arc<ServerConfig>>,
    client: ClientConfig,
    token: &[u8],
    options: ServerOptions,
) -> io::Result<(ServerHandle, ClientHandle)> {
    let (server, client, driver) = host(bind, server, client, token, options).await?;
    rt::spawn(driver.run());
    Ok((server, client))
}

/// A handle's channels and the driver at their other end.
type Wired<E> = (Link<<E as Core>::Command, <E as Events>::Event>, Task<E>);

/// A standalone client's or server's driver and its handles' link: one event channel.
fn wire<E>(socket: Socket, endpoint: E, streams: Streams) -> io::Result<Wired<E>>
where
    E: Core<Outbox = channel::Sender<<E as Events>::Event>>,
{
    let (events, event_rx) = channel::bounded(EVENT_CAPACITY);
    let (task, commands) = task(socket, endpoint, streams, events)?;
    let link = Link {
        commands: Commands::Own(commands),
        events: event_rx,
        shared: Arc::clone(&task.shared),
    };
    Ok((link, task))
}

/// The driver task of `endpoint`, and the sending end of its command channel.
fn task<E: Core>(
    socket: Socket,
    endpoint: E,
    streams: Streams,
    events: E::Outbox,
) -> io::Result<(Task<E>, channel::Sender<E::Command>)> {
    let shared = Arc::new(Shared::new(socket.local_addr()?, streams.local_addr()));
    let (command_tx, commands) = channel::bounded(COMMAND_CAPACITY);
    let task = Task {
        endpoint,
        socket,
        extra: driver::Extra::default(),
        streams,
        commands,
        events,
        shared,
        stats: DriverStats::default(),
    };
    Ok((task, command_tx))
}

fn invalid(e: ConfigError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}
