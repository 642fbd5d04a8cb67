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
mod sys;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use bytes::Bytes;
pub use driver::DriverStats;
use pierce_core::{
    Channel, Client, ClientConfig, ClientStats, CommandError, ConfigError, ConnectError, Endpoint,
    GroupId, HostId, MessageId, PeerStats, PublicKey, SendError, Server, ServerConfig, ServerStats,
    SocketId, UnknownHost, framing::DEFAULT_STREAM_BUFFER,
};
pub use pierce_core::{ClientEvent, ServerEvent};
pub use stream::DEFAULT_MAX_STREAMS;
pub use sys::{os_seed, unix_time};

use driver::{
    COMMAND_CAPACITY, ClientCommand, Core, EVENT_CAPACITY, Reply, RoomJoin, ServerCommand,
};
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

/// The channels between one handle and the driver.
struct Link<C, Ev> {
    commands: channel::Sender<C>,
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

impl<C, Ev> Link<C, Ev> {
    /// Sends a command and waits for the core's answer.
    async fn call<T>(&self, command: impl FnOnce(Reply<T>) -> C) -> io::Result<T> {
        let (reply, answer) = channel::bounded(1);
        let sent = self.commands.send(command(reply)).await;
        match sent {
            Ok(()) => answer.recv().await.map_err(|_| self.shared.stopped()),
            Err(_) => Err(self.shared.stopped()),
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
pub struct ClientHandle(Link<ClientCommand, ClientEvent>);

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
        (self.0)
            .try_call(|r| ClientCommand::Connect(server, token, r))
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
        (self.0)
            .try_call(|r| ClientCommand::SendToServer(payload, r))
            .await
    }

    /// Ends the session with `code`, telling the server; the `Close` is sent before the driver
    /// next waits, so dropping every handle right after this returns is fine.
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn disconnect(&self, code: u16) -> io::Result<()> {
        self.0.call(|r| ClientCommand::Disconnect(code, r)).await
    }

    /// The core's counters.
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn stats(&self) -> io::Result<ClientStats> {
        self.0.call(ClientCommand::Stats).await
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
        let join = RoomJoin {
            name: name.to_owned(),
            password: password.to_owned(),
            create,
            max_members,
        };
        self.0.try_call(|r| ClientCommand::JoinRoom(join, r)).await
    }

    /// Leaves a room (`Client::leave_room`).
    ///
    /// # Errors
    /// The core's [`CommandError`], or [`HandleError::Stopped`].
    pub async fn leave_room(&self, group: GroupId) -> Result<(), HandleError<CommandError>> {
        self.0
            .try_call(|r| ClientCommand::LeaveRoom(group, r))
            .await
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
        (self.0)
            .try_call(|r| ClientCommand::Kick(group, member, r))
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
        (self.0)
            .try_call(|r| ClientCommand::Send(to, channel, payload, r))
            .await
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
        (self.0)
            .try_call(|r| ClientCommand::SendToGroup(group, channel, payload, r))
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
        (self.0)
            .try_call(|r| ClientCommand::SetLocalAddresses(addrs, r))
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
        self.0.call(|r| ClientCommand::DiscoverNat(server, r)).await
    }

    /// Counters and estimates of the connection to `peer`, if this client shares a group with
    /// it (`Client::peer_stats`).
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn peer_stats(&self, peer: HostId) -> io::Result<Option<PeerStats>> {
        self.0.call(|r| ClientCommand::PeerStats(peer, r)).await
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
        self.0.call(ClientCommand::OnTcp).await
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
    link: Link<ServerCommand, ServerEvent>,
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
        (self.link)
            .try_call(|r| ServerCommand::Send(host, payload, r))
            .await
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
        (self.link)
            .try_call(|r| ServerCommand::Disconnect(host, code, r))
            .await
    }

    /// The core's counters.
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn stats(&self) -> io::Result<ServerStats> {
        self.link.call(ServerCommand::Stats).await
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
        (self.link)
            .try_call(|r| ServerCommand::EnableNatDiscovery(primary, alternate, r))
            .await
    }

    /// The bound address of the server's local socket `id` (`Server::socket_addr`), once
    /// the driver has opened it; `None` if it is not open (or could not be).
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn socket_addr(&self, id: SocketId) -> io::Result<Option<SocketAddr>> {
        self.link.call(|r| ServerCommand::SocketAddr(id, r)).await
    }

    /// The local socket a client's session is on (`Server::client_socket`):
    /// [`SocketId::PRIMARY`] for UDP, a TCP stream ([`SocketId::is_stream`]) for a client on
    /// the fallback; `None` if `host` has no session.
    ///
    /// # Errors
    /// The driver has stopped.
    pub async fn client_socket(&self, host: HostId) -> io::Result<Option<SocketId>> {
        self.link
            .call(|r| ServerCommand::ClientSocket(host, r))
            .await
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
    let (link, task) = wire(Socket::bind(bind).await?, core, Streams::default())?;
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
        let socket = Socket::bind(bind).await?;
        if !tcp {
            return Ok((socket, None));
        }
        match TcpListener::bind(socket.local_addr()?).await {
            Ok(listener) => return Ok((socket, Some(listener))),
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

/// A handle's channels and the driver at their other end.
type Wired<E> = (Link<<E as Core>::Command, <E as Endpoint>::Event>, Task<E>);

fn wire<E: Core>(socket: Socket, endpoint: E, streams: Streams) -> io::Result<Wired<E>> {
    let shared = Arc::new(Shared::new(socket.local_addr()?, streams.local_addr()));
    let (command_tx, commands) = channel::bounded(COMMAND_CAPACITY);
    let (events, event_rx) = channel::bounded(EVENT_CAPACITY);
    let link = Link {
        commands: command_tx,
        events: event_rx,
        shared: Arc::clone(&shared),
    };
    let task = Task {
        endpoint,
        socket,
        extra: driver::Extra::default(),
        streams,
        commands,
        events,
        shared,
    };
    Ok((link, task))
}

fn invalid(e: ConfigError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}
