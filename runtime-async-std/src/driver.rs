//! The task that owns a core endpoint (quinn's `ConnectionDriver` shape, without the shared
//! mutex): it owns the socket, reads the clock once per wakeup, and moves bytes, commands and
//! events. Every protocol decision stays in the core.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use pierce_core::{
    Channel, Client, ClientStats, CommandError, ConnectError, Endpoint, GroupId, HostId,
    MAX_DATAGRAM_SIZE, MessageId, PeerStats, SendError, Server, ServerStats, UnknownHost,
};

use crate::rt::{self, Socket, channel};

/// Size of the receive buffer: any UDP payload fits, so the core sees a datagram's true length.
const RECV_BUFFER_SIZE: usize = 65_536;

/// Events waiting for the application, at most, in the channel. When it is full the rest stay
/// in the core's own queue (bounded by `max_pending_events`, overflow counted in its stats), so
/// an application that stops reading events costs bounded memory.
pub(crate) const EVENT_CAPACITY: usize = 1024;

/// Commands in flight from handles, at most; a handle's call waits while it is full.
pub(crate) const COMMAND_CAPACITY: usize = 256;

/// How soon to retry moving events after the channel was found full. The channel has no
/// "space available" signal, so this short poll runs only while the application lags behind.
const EVENT_RETRY: Duration = Duration::from_millis(10);

/// Wakeups handled before the driver yields to its executor. While datagrams keep arriving
/// every wait is ready at once, and without this the task would never return `Pending` and
/// would hold its executor thread (the cooperative budget tokio sets at 128, quinn's
/// `WorkLimiter`); 64 costs one extra poll per 64 datagrams.
const YIELD_EVERY: u32 = 64;

/// Where a command's result goes; a one-slot channel per call.
pub(crate) type Reply<T> = channel::Sender<T>;

/// A core endpoint this crate can drive: the five verbs plus its commands.
pub(crate) trait Core: Endpoint + Send + 'static {
    type Command: Send + 'static;
    /// Runs one command against the core and sends its result to the caller.
    fn apply(&mut self, now: Instant, command: Self::Command);
}

pub(crate) enum ClientCommand {
    Connect(SocketAddr, Vec<u8>, Reply<Result<(), ConnectError>>),
    SendToServer(Bytes, Reply<Result<(), SendError>>),
    Disconnect(u16, Reply<()>),
    Stats(Reply<ClientStats>),
    JoinRoom(RoomJoin, Reply<Result<(), CommandError>>),
    LeaveRoom(GroupId, Reply<Result<(), CommandError>>),
    Kick(GroupId, HostId, Reply<Result<(), CommandError>>),
    Send(HostId, Channel, Bytes, Reply<Result<MessageId, SendError>>),
    SendToGroup(GroupId, Channel, Bytes, Reply<Result<(), SendError>>),
    PeerStats(HostId, Reply<Option<PeerStats>>),
    SetLocalAddresses(Vec<SocketAddr>, Reply<Result<(), CommandError>>),
}

/// The arguments of `Client::join_room`.
pub(crate) struct RoomJoin {
    pub(crate) name: String,
    pub(crate) password: String,
    pub(crate) create: bool,
    pub(crate) max_members: u16,
}

pub(crate) enum ServerCommand {
    Send(HostId, Bytes, Reply<Result<(), SendError>>),
    Disconnect(HostId, u16, Reply<Result<(), UnknownHost>>),
    Stats(Reply<ServerStats>),
}

impl Core for Client {
    type Command = ClientCommand;
    fn apply(&mut self, now: Instant, command: ClientCommand) {
        match command {
            ClientCommand::Connect(server, token, r) => reply(r, self.connect(now, server, &token)),
            ClientCommand::SendToServer(payload, r) => reply(r, self.send_to_server(now, &payload)),
            ClientCommand::Disconnect(code, r) => {
                self.disconnect(now, code);
                reply(r, ());
            }
            ClientCommand::Stats(r) => reply(r, self.stats()),
            ClientCommand::JoinRoom(j, r) => reply(
                r,
                self.join_room(now, &j.name, &j.password, j.create, j.max_members),
            ),
            ClientCommand::LeaveRoom(group, r) => reply(r, self.leave_room(now, group)),
            ClientCommand::Kick(group, member, r) => reply(r, self.kick(now, group, member)),
            ClientCommand::Send(to, channel, payload, r) => {
                reply(r, self.send(now, to, channel, &payload));
            }
            ClientCommand::SendToGroup(group, channel, payload, r) => {
                reply(r, self.send_to_group(now, group, channel, &payload));
            }
            ClientCommand::PeerStats(peer, r) => reply(r, self.peer_stats(peer)),
            ClientCommand::SetLocalAddresses(addrs, r) => {
                reply(r, self.set_local_addresses(now, &addrs));
            }
        }
    }
}

impl Core for Server {
    type Command = ServerCommand;
    fn apply(&mut self, now: Instant, command: ServerCommand) {
        match command {
            ServerCommand::Send(to, payload, r) => reply(r, self.send(now, to, &payload)),
            ServerCommand::Disconnect(h, code, r) => reply(r, self.disconnect(now, h, code)),
            ServerCommand::Stats(r) => reply(r, self.stats()),
        }
    }
}

fn reply<T>(to: Reply<T>, value: T) {
    // The slot is free (one per call); an error means the caller stopped waiting (its future
    // was dropped), and then the result is not wanted.
    let _ = to.try_send(value);
}

/// Counters kept by the adapter; protocol counters come from the handles' `stats()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Datagrams the socket refused with a hard error (unreachable, wrong address family...);
    /// dropped like any datagram lost on the way.
    pub send_errors: u64,
    /// Receive errors that describe an earlier send (ICMP unreachable surfacing as
    /// `ConnectionReset`/`ConnectionRefused`); ignored, as quinn does.
    pub recv_errors_ignored: u64,
}

/// What the driver task and its handles share: fixed facts and counters, no core state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) local_addr: SocketAddr,
    /// Why the driver stopped, once it stopped on an error.
    error: OnceLock<Arc<io::Error>>,
    send_errors: AtomicU64,
    recv_errors_ignored: AtomicU64,
}

impl Shared {
    pub(crate) fn new(local_addr: SocketAddr) -> Self {
        Self {
            local_addr,
            error: OnceLock::new(),
            send_errors: AtomicU64::new(0),
            recv_errors_ignored: AtomicU64::new(0),
        }
    }

    /// The error a handle reports once the driver is gone.
    pub(crate) fn stopped(&self) -> io::Error {
        match self.error.get() {
            Some(e) => io::Error::new(e.kind(), Arc::clone(e)),
            None => io::Error::new(io::ErrorKind::BrokenPipe, "the pierce driver has stopped"),
        }
    }

    pub(crate) fn stats(&self) -> DriverStats {
        DriverStats {
            send_errors: self.send_errors.load(Ordering::Relaxed),
            recv_errors_ignored: self.recv_errors_ignored.load(Ordering::Relaxed),
        }
    }
}

/// The driver of one endpoint: run it to completion on any executor.
pub(crate) struct Task<E: Core> {
    pub(crate) endpoint: E,
    pub(crate) socket: Socket,
    pub(crate) commands: channel::Receiver<E::Command>,
    pub(crate) events: channel::Sender<E::Event>,
    pub(crate) shared: Arc<Shared>,
}

enum Wake<C> {
    Timer,
    Command(Option<C>),
    Datagram(io::Result<(usize, SocketAddr)>),
}

impl<E: Core> Task<E> {
    /// Runs until every handle is dropped (`Ok`) or the socket fails (the error, which the
    /// handles then report too).
    pub(crate) async fn run(self) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        self.drive().await.map_err(|e| {
            let e = Arc::new(e);
            let _ = shared.error.set(Arc::clone(&e)); // set once: this is the only writer
            io::Error::new(e.kind(), e)
        })
    }

    async fn drive(mut self) -> io::Result<()> {
        let mut tx = vec![0u8; MAX_DATAGRAM_SIZE];
        let mut rx = vec![0u8; RECV_BUFFER_SIZE];
        let (mut now, mut wakes) = (Instant::now(), 0);
        loop {
            if self.endpoint.poll_timeout().is_some_and(|d| d <= now) {
                self.endpoint.handle_timeout(now);
            }
            while let Some(t) = self.endpoint.poll_transmit(now, &mut tx) {
                // A hard error is loss to UDP; an unreachable candidate must not stop the task.
                if self.socket.send_to(&tx[..t.len], t.dst).await.is_err() {
                    self.shared.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            // We are the only sender, so the channel cannot fill between check and send. Once
            // it is full, the rest wait in the core until a retry finds room.
            let backlog = loop {
                if self.events.is_full() {
                    break true;
                }
                let Some(event) = self.endpoint.poll_event() else {
                    break false;
                };
                if self.events.try_send(event).is_err() {
                    return Ok(()); // closed: every handle is gone
                }
            };
            let deadline = self.endpoint.poll_timeout();
            let mut wait = deadline.map(|d| d.saturating_duration_since(now));
            if backlog {
                wait = Some(wait.map_or(EVENT_RETRY, |w| w.min(EVENT_RETRY)));
            }
            // The timer goes first so a flood cannot starve it; commands and datagrams are
            // polled in random order so neither starves the other.
            let wake = future::or(
                async {
                    match wait {
                        Some(w) => rt::sleep(w).await,
                        None => future::pending::<()>().await,
                    }
                    Wake::Timer
                },
                future::race(
                    async { Wake::Command(self.commands.recv().await.ok()) },
                    async { Wake::Datagram(self.socket.recv_from(&mut rx).await) },
                ),
            )
            .await;
            now = Instant::now(); // the one clock read for this wakeup
            match wake {
                Wake::Timer => {} // handled at the top with the fresh `now`
                Wake::Command(Some(c)) => self.endpoint.apply(now, c),
                Wake::Command(None) => return Ok(()), // every handle is gone
                Wake::Datagram(Ok((len, from))) => {
                    self.endpoint.handle_datagram(now, from, &rx[..len]);
                }
                Wake::Datagram(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Wake::Datagram(Err(e)) if is_stray_icmp(&e) => {
                    self.shared
                        .recv_errors_ignored
                        .fetch_add(1, Ordering::Relaxed);
                }
                Wake::Datagram(Err(e)) => return Err(e),
            }
            wakes = (wakes + 1) % YIELD_EVERY;
            if wakes == 0 {
                future::yield_now().await;
            }
        }
    }
}

/// Errors a UDP receive reports about an earlier send (ICMP unreachable): undefined for UDP,
/// injectable by anyone who can forge ICMP, and never a reason to stop reading (quinn ignores
/// ECONNRESET the same way; Windows reports these as WSAECONNRESET on `recv_from`).
fn is_stray_icmp(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}
