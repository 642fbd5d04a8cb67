//! The task that owns a core endpoint (quinn's `ConnectionDriver` shape, without the shared
//! mutex): it owns the sockets, reads the clock once per wakeup, and moves bytes, commands and
//! events. Every protocol decision stays in the core.
//!
//! Besides its primary socket the core may ask for more ([`SocketRequest`]: a server's NAT
//! discovery addresses, a client's birthday probing ports). The task binds them itself and
//! keeps one pending receive per extra socket inside its own future (no task is spawned, so
//! the driver still runs under any executor), polled in turn so none starves the others.
//! TCP streams (the fallback for networks that block UDP: a client's connect, a server's
//! listener) work the same way, in `stream.rs`.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::future;
use pierce_core::{
    Client, ClientEvent, Endpoint, Events, Host, HostEvent, MAX_DATAGRAM_SIZE, Server, ServerEvent,
    SocketId, SocketRequest,
};
use pierce_os::{DriverStats, is_stray_icmp};

use crate::rt::{self, Socket, channel};
use crate::stream::{StreamWake, Streams};

/// Size of the receive buffer: any UDP payload fits, so the core sees a datagram's true length.
const RECV_BUFFER_SIZE: usize = 65_536;

/// Size of each extra socket's receive buffer (there may be a thousand of them). Larger
/// datagrams arrive truncated and the core drops them: it neither sends nor accepts any
/// datagram half this size.
const EXTRA_RECV_BUFFER_SIZE: usize = 4096;

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
pub(crate) trait Core: Endpoint + Events + Send + 'static {
    type Command: Send + 'static;
    /// Where its events go: one channel, or one per half for a [`Host`].
    type Outbox: Outbox<Self::Event> + Send + 'static;
    /// Runs one command against the core and sends its result to the caller.
    fn apply(&mut self, now: Instant, command: Self::Command);
}

/// Where the driver puts the core's events for the handles.
pub(crate) trait Outbox<Ev> {
    /// No room for one more event (of any kind): the rest wait in the core, and the driver
    /// retries shortly. Nothing is dropped.
    fn is_full(&self) -> bool;
    /// Hands one event over (there is room: see [`Outbox::is_full`]); `false` once no handle
    /// can receive events any more, and the driver then stops.
    fn put(&self, event: Ev) -> bool;
}

impl<Ev> Outbox<Ev> for channel::Sender<Ev> {
    fn is_full(&self) -> bool {
        Self::is_full(self)
    }
    fn put(&self, event: Ev) -> bool {
        self.try_send(event).is_ok()
    }
}

/// A host's two event streams: its server's for the server handles, its own client's for the
/// client handles.
pub(crate) struct HostOutbox {
    pub(crate) server: channel::Sender<ServerEvent>,
    pub(crate) client: channel::Sender<ClientEvent>,
}

impl Outbox<HostEvent> for HostOutbox {
    /// A half nobody listens to any more never holds the other up, however full it was left.
    fn is_full(&self) -> bool {
        (self.server.is_full() && !self.server.is_closed())
            || (self.client.is_full() && !self.client.is_closed())
    }
    /// An event for a half whose handles are all gone is dropped (nobody can read it); the
    /// driver stops only when both halves' are, which the command channel tells it first.
    fn put(&self, event: HostEvent) -> bool {
        let _ = match event {
            HostEvent::Server(e) => self.server.try_send(e).is_ok(),
            HostEvent::Client(e) => self.client.try_send(e).is_ok(),
        };
        !(self.server.is_closed() && self.client.is_closed())
    }
}

/// A closure run against the core in the driver, between inputs, with the wakeup's `now`;
/// it sends its own result back.
pub(crate) type Job<E> = Box<dyn FnOnce(&mut E, Instant) + Send>;

/// A job that runs `f` and replies with what it returns.
pub(crate) fn job<E, T: Send + 'static>(
    to: Reply<T>,
    f: impl FnOnce(&mut E, Instant) -> T + Send + 'static,
) -> Job<E> {
    Box::new(move |core, now| reply(to, f(core, now)))
}

impl Core for Client {
    type Command = Job<Self>;
    type Outbox = channel::Sender<ClientEvent>;
    fn apply(&mut self, now: Instant, job: Job<Self>) {
        job(self, now);
    }
}

impl Core for Server {
    type Command = Job<Self>;
    type Outbox = channel::Sender<ServerEvent>;
    fn apply(&mut self, now: Instant, job: Job<Self>) {
        job(self, now);
    }
}

/// A host's commands: each half's, from its own handles.
pub(crate) enum HostCommand {
    Server(Job<Server>),
    Client(Job<Client>),
}

impl From<Job<Server>> for HostCommand {
    fn from(job: Job<Server>) -> Self {
        Self::Server(job)
    }
}

impl From<Job<Client>> for HostCommand {
    fn from(job: Job<Client>) -> Self {
        Self::Client(job)
    }
}

impl Core for Host {
    type Command = HostCommand;
    type Outbox = HostOutbox;
    fn apply(&mut self, now: Instant, command: HostCommand) {
        // Whatever either half sends in answer (the local session's datagrams included) is
        // drained through `Host::poll_transmit`, as after any input.
        match command {
            HostCommand::Server(job) => job(self.server_mut(), now),
            HostCommand::Client(job) => job(self.client_mut(), now),
        }
    }
}

fn reply<T>(to: Reply<T>, value: T) {
    // The slot is free (one per call); an error means the caller stopped waiting (its future
    // was dropped), and then the result is not wanted.
    let _ = to.try_send(value);
}

/// What the driver task and its handles share: fixed facts and counters, no core state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) local_addr: SocketAddr,
    /// Where the server's listener accepts TCP streams, if it does.
    pub(crate) tcp_addr: Option<SocketAddr>,
    /// Why the driver stopped, once it stopped on an error.
    error: OnceLock<Arc<io::Error>>,
    /// The task's counters as of its last wakeup: it counts in its own [`Task::stats`] and
    /// copies them here before it hands events over, so a handle that sees an event also sees
    /// every count that came before it. Held only for that copy.
    stats: Mutex<DriverStats>,
}

impl Shared {
    pub(crate) fn new(local_addr: SocketAddr, tcp_addr: Option<SocketAddr>) -> Self {
        Self {
            local_addr,
            tcp_addr,
            error: OnceLock::new(),
            stats: Mutex::new(DriverStats::default()),
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
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, stats: DriverStats) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = stats;
    }
}

/// A finished receive on an extra socket, with what it needs to start the next one.
struct Received {
    id: SocketId,
    socket: Arc<Socket>,
    buf: Vec<u8>,
    result: io::Result<(usize, SocketAddr)>,
}

type Receiving = Pin<Box<dyn Future<Output = Received> + Send>>;

fn receive(id: SocketId, socket: Arc<Socket>, mut buf: Vec<u8>) -> Receiving {
    Box::pin(async move {
        let result = socket.recv_from(&mut buf).await;
        Received {
            id,
            socket,
            buf,
            result,
        }
    })
}

/// The extra sockets: each with one pending receive, polled in turn.
#[derive(Default)]
pub(crate) struct Extra {
    /// Each with its local address (its family says how destinations are written).
    sockets: BTreeMap<SocketId, (Arc<Socket>, SocketAddr)>,
    /// One receive per socket (a placeholder that never completes while its result is being
    /// handled). Dropping one cancels it.
    receiving: Vec<(SocketId, Receiving)>,
    /// Where the next poll starts: just after the socket that was ready last.
    next: usize,
}

impl Extra {
    /// Binds socket `id` at `addr`, replacing any socket of that id.
    async fn open(&mut self, id: SocketId, addr: SocketAddr) -> io::Result<SocketAddr> {
        self.close(id);
        let socket = rt::bind_udp(addr)?;
        let local = socket.local_addr()?;
        let socket = Arc::new(socket);
        self.sockets.insert(id, (Arc::clone(&socket), local));
        let buf = vec![0; EXTRA_RECV_BUFFER_SIZE];
        self.receiving.push((id, receive(id, socket, buf)));
        Ok(local)
    }

    fn close(&mut self, id: SocketId) {
        if self.sockets.remove(&id).is_some() {
            self.receiving.retain(|(i, _)| *i != id);
        }
    }

    /// Socket `id` and its local address.
    fn get(&self, id: SocketId) -> Option<(&Socket, SocketAddr)> {
        self.sockets.get(&id).map(|(s, local)| (&**s, *local))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sockets.len()
    }

    /// The next finished receive on any extra socket; pending while there is none (forever
    /// without extra sockets). Hand it back with [`Extra::rearm`].
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        let n = self.receiving.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let slot = &mut self.receiving[i].1;
            if let Poll::Ready(r) = slot.as_mut().poll(cx) {
                *slot = Box::pin(future::pending());
                self.next = i + 1;
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    }

    async fn next(&mut self) -> Received {
        future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Starts the next receive on the socket `r` came from, if it is still open.
    fn rearm(&mut self, r: Received) {
        let current = self.sockets.get(&r.id);
        if !current.is_some_and(|(s, _)| Arc::ptr_eq(s, &r.socket)) {
            return; // closed (or replaced) meanwhile
        }
        if let Some((_, slot)) = self.receiving.iter_mut().find(|(i, _)| *i == r.id) {
            *slot = receive(r.id, r.socket, r.buf);
        }
    }
}

/// The driver of one endpoint: run it to completion on any executor.
pub(crate) struct Task<E: Core> {
    pub(crate) endpoint: E,
    pub(crate) socket: Socket,
    pub(crate) extra: Extra,
    pub(crate) streams: Streams,
    pub(crate) commands: channel::Receiver<E::Command>,
    pub(crate) events: E::Outbox,
    pub(crate) shared: Arc<Shared>,
    /// The adapter's counters, published to [`Shared`] once per wakeup.
    pub(crate) stats: DriverStats,
}

enum Wake<C> {
    Timer,
    Command(Option<C>),
    Datagram(io::Result<(usize, SocketAddr)>),
    Extra(Received),
    Stream(StreamWake),
}

impl<E: Core> Task<E> {
    /// Runs until every handle is dropped (`Ok`) or the socket fails (the error, which the
    /// handles then report too).
    pub(crate) async fn run(mut self) -> io::Result<()> {
        let result = self.drive().await;
        self.shared.publish(self.stats);
        result.map_err(|e| {
            let e = Arc::new(e);
            let _ = self.shared.error.set(Arc::clone(&e)); // set once: this is the only writer
            io::Error::new(e.kind(), e)
        })
    }

    async fn drive(&mut self) -> io::Result<()> {
        let mut tx = vec![0u8; MAX_DATAGRAM_SIZE];
        let mut rx = vec![0u8; RECV_BUFFER_SIZE];
        let (mut now, mut wakes) = (Instant::now(), 0);
        loop {
            if self.endpoint.poll_timeout().is_some_and(|d| d.at <= now) {
                self.endpoint.handle_timeout(now);
            }
            // Sockets first, so a transmit naming a socket just asked for finds it.
            self.apply_socket_requests(now).await;
            while let Some(t) = self.endpoint.poll_transmit(now, &mut tx) {
                if t.socket.is_stream() {
                    let pushed = self.streams.push(t.socket, &tx[..t.len]);
                    self.stats.count_push(pushed);
                    continue;
                }
                let socket = if t.socket == SocketId::PRIMARY {
                    Some((&self.socket, self.shared.local_addr))
                } else {
                    self.extra.get(t.socket)
                };
                let Some((socket, local)) = socket else {
                    self.stats.unknown_socket_drops += 1;
                    continue;
                };
                // In the socket's family (an IPv4 destination from a dual-stack socket); a
                // hard error is loss to UDP: an unreachable candidate must not stop the task.
                let dst = pierce_os::for_socket(t.dst, local);
                let unsendable = || io::Error::from(io::ErrorKind::Unsupported);
                let sent = match (dst, t.ttl) {
                    // A hole-punching opener: one non-blocking send with its own TTL, or
                    // dropped (never sent with the default TTL: see `Transmit::ttl`).
                    #[cfg(unix)]
                    (Some(dst), Some(ttl)) => {
                        use std::os::fd::{AsRawFd, BorrowedFd};
                        // SAFETY: the descriptor is `socket`'s, which outlives this call
                        // (async-std's socket offers `AsRawFd`, not `AsFd`).
                        let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
                        pierce_os::send_to_with_ttl(fd, local.is_ipv6(), ttl, &tx[..t.len], dst)
                    }
                    #[cfg(not(unix))]
                    (Some(_), Some(_)) => Err(unsendable()),
                    (Some(dst), None) => socket.send_to(&tx[..t.len], dst).await,
                    (None, _) => Err(unsendable()),
                };
                match sent {
                    Ok(_) => self.stats.datagrams_sent += 1,
                    Err(e) => {
                        // (Larger than the interface allows: a path-MTU probe above it, lost
                        // to the core like any probe; never sent again.)
                        self.stats.send_errors += 1;
                        self.stats.send_too_large += u64::from(pierce_os::is_too_large(&e));
                    }
                }
            }
            // Streams write what they take now; the rest when they can (polled below).
            self.streams.flush_now().await;
            self.apply_socket_requests(now).await;
            // Every count so far becomes visible before the events it led to.
            self.shared.publish(self.stats);
            // We are the only sender, so the channel cannot fill between check and send. Once
            // it is full, the rest wait in the core until a retry finds room.
            let backlog = loop {
                if self.events.is_full() {
                    break true;
                }
                let Some(event) = self.endpoint.poll_event() else {
                    break false;
                };
                if !self.events.put(event) {
                    return Ok(()); // closed: every handle is gone
                }
            };
            let deadline = self.endpoint.poll_timeout().map(|t| t.at);
            let mut wait = deadline.map(|d| d.saturating_duration_since(now));
            if backlog {
                wait = Some(wait.map_or(EVENT_RETRY, |w| w.min(EVENT_RETRY)));
            }
            let (commands, socket) = (&self.commands, &self.socket);
            let extra = async { Wake::Extra(self.extra.next().await) };
            let streams = async { Wake::Stream(self.streams.next().await) };
            // The timer goes first so a flood cannot starve it; commands and datagrams are
            // polled in random order so neither starves the other, and the primary socket,
            // the extra ones and the streams likewise.
            let wake = future::or(
                async {
                    match wait {
                        Some(w) => rt::sleep(w).await,
                        None => future::pending::<()>().await,
                    }
                    Wake::Timer
                },
                future::race(
                    async { Wake::Command(commands.recv().await.ok()) },
                    future::race(
                        async { Wake::Datagram(socket.recv_from(&mut rx).await) },
                        future::race(extra, streams),
                    ),
                ),
            )
            .await;
            now = Instant::now(); // the one clock read for this wakeup
            match wake {
                Wake::Timer => {} // handled at the top with the fresh `now`
                Wake::Command(Some(c)) => self.endpoint.apply(now, c),
                Wake::Command(None) => return Ok(()), // every handle is gone
                Wake::Datagram(Ok((len, from))) => {
                    self.stats.datagrams_received += 1;
                    self.endpoint.handle_datagram(now, from, &rx[..len]);
                }
                Wake::Datagram(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Wake::Datagram(Err(e)) if is_stray_icmp(&e) => self.stats.recv_errors_ignored += 1,
                Wake::Datagram(Err(e)) => return Err(e),
                Wake::Extra(r) => self.on_extra(now, r),
                Wake::Stream(w) => self.on_stream(now, w),
            }
            wakes = (wakes + 1) % YIELD_EVERY;
            if wakes == 0 {
                future::yield_now().await;
            }
        }
    }

    /// A receive on an extra socket finished: hand the datagram to the core and receive again.
    fn on_extra(&mut self, now: Instant, r: Received) {
        match &r.result {
            Ok((len, from)) => {
                let len = (*len).min(r.buf.len());
                self.stats.datagrams_received += 1;
                self.endpoint
                    .handle_datagram_on(now, r.id, *from, &r.buf[..len]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_stray_icmp(e) => self.stats.recv_errors_ignored += 1,
            Err(_) => {
                // A failing extra socket must not stop the endpoint (to the core this is
                // loss), nor spin: it stops receiving, and can still send.
                self.stats.recv_errors_ignored += 1;
                return;
            }
        }
        self.extra.rearm(r);
    }

    /// Something happened on the stream side: hand it to the core.
    fn on_stream(&mut self, now: Instant, wake: StreamWake) {
        match wake {
            StreamWake::Connected {
                id,
                result: Ok(local),
            } => {
                self.streams.connected(id);
                self.stats.streams_connected += 1;
                self.endpoint.handle_socket_opened(now, id, Some(local));
            }
            // Counted and reported as a failed open (a refused one as such).
            StreamWake::Connected { id, result: Err(e) } => {
                let refused = e.kind() == io::ErrorKind::ConnectionRefused;
                if let Some(report) = self.streams.ended(id) {
                    let report = if refused { report.refused() } else { report };
                    self.stats.count_end(report);
                    report.tell(&mut self.endpoint, now, id);
                }
            }
            StreamWake::Accepted(Ok((io, peer))) => {
                if let Some(id) = self.streams.admit(io, peer) {
                    self.stats.streams_accepted += 1;
                    self.endpoint.handle_stream_accepted(now, id, peer);
                } else {
                    self.stats.streams_refused += 1; // dropping it closed it
                }
            }
            StreamWake::Accepted(Err(_)) => self.stats.accept_errors += 1,
            StreamWake::Read { id, done } => {
                let mut deframer = done.deframer;
                match done.result {
                    Ok(0) => return self.stream_ended(now, id),
                    Ok(n) => deframer.filled(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.stream_ended(now, id),
                }
                let Some(peer) = self.streams.peer(id) else {
                    return;
                };
                let endpoint = &mut self.endpoint;
                let (n, framed) = deframer.deliver(usize::MAX, |datagram| {
                    endpoint.handle_datagram_on(now, id, peer, datagram);
                });
                self.stats.datagrams_received += n as u64;
                if framed.is_err() {
                    self.stats.stream_frames_too_long += 1;
                    return self.stream_ended(now, id);
                }
                self.streams.rearm(id, deframer);
            }
            StreamWake::WriteFailed(id) => self.stream_ended(now, id),
        }
    }

    /// Stream `id` ended by itself (or its connect failed): forget it and tell the core, once;
    /// nothing if the core closed it first.
    fn stream_ended(&mut self, now: Instant, id: SocketId) {
        if let Some(report) = self.streams.ended(id) {
            self.stats.count_end(report);
            report.tell(&mut self.endpoint, now, id);
        }
    }

    /// Opens and closes sockets until the core wants no more changes.
    async fn apply_socket_requests(&mut self, now: Instant) {
        while let Some(request) = self.endpoint.poll_socket_request() {
            match request {
                SocketRequest::Open { id, addr } => {
                    // No address, or an unspecified IP: the primary socket's IP (with any
                    // port, or that one).
                    let addr = match addr {
                        Some(a) if !a.ip().is_unspecified() => a,
                        a => {
                            SocketAddr::new(self.shared.local_addr.ip(), a.map_or(0, |a| a.port()))
                        }
                    };
                    let local = if id == SocketId::PRIMARY {
                        None // the primary socket lives as long as the driver
                    } else {
                        self.extra.open(id, addr).await.ok()
                    };
                    if local.is_none() {
                        self.stats.socket_open_failures += 1;
                    }
                    self.endpoint.handle_socket_opened(now, id, local);
                }
                SocketRequest::Close { id } if id.is_stream() => {
                    let unflushed = self.streams.close(id).unwrap_or(0) as u64;
                    self.stats.stream_bytes_unflushed += unflushed;
                }
                SocketRequest::Close { id } => self.extra.close(id),
                SocketRequest::Connect { id, addr } => self.streams.connect(id, addr, false),
                SocketRequest::ConnectRaw { id, addr } => self.streams.connect(id, addr, true),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_host_half_nobody_listens_to_never_holds_the_other_up() {
        let (server, server_rx) = channel::bounded(1);
        let (client, client_rx) = channel::bounded(1);
        let outbox = HostOutbox { server, client };
        let joined = |n| ServerEvent::ClientResumed {
            host_id: pierce_core::HostId(n),
        };
        let offline = ClientEvent::ServerTransport { tcp: true };
        assert!(outbox.put(HostEvent::Client(offline.clone())));
        assert!(outbox.is_full(), "the client's channel is full and read");
        drop(client_rx); // the application dropped every client handle, events unread
        assert!(!outbox.is_full());
        assert!(outbox.put(HostEvent::Server(joined(1))));
        assert!(
            outbox.put(HostEvent::Client(offline)),
            "dropped, not a stop"
        );
        assert!(outbox.is_full(), "the server's channel is full and read");
        assert_eq!(server_rx.try_recv().ok(), Some(joined(1)));
        drop(server_rx);
        assert!(!outbox.is_full());
        assert!(
            !outbox.put(HostEvent::Server(joined(2))),
            "nobody listens: stop"
        );
    }

    #[test]
    fn extra_sockets_take_turns_keep_their_ids_and_close() {
        async_io::block_on(async {
            let lo = SocketAddr::from(([127, 0, 0, 1], 0));
            let mut extra = Extra::default();
            let mut addrs = BTreeMap::new();
            for i in 1..=3 {
                addrs.insert(SocketId(i), extra.open(SocketId(i), lo).await.unwrap());
            }
            assert_eq!(extra.len(), 3);
            let peer = std::net::UdpSocket::bind(lo).unwrap();
            for round in 0..2u8 {
                for (id, a) in &addrs {
                    let tag = u8::try_from(id.0).unwrap();
                    peer.send_to(&[tag, round], a).unwrap();
                }
            }
            // Everything is queued at once: each socket is read once before any twice.
            let mut order = Vec::new();
            for _ in 0..6 {
                let r = extra.next().await;
                let (len, from) = *r.result.as_ref().unwrap();
                assert_eq!(len, 2);
                assert_eq!(from, peer.local_addr().unwrap());
                assert_eq!(
                    u16::from(r.buf[0]),
                    r.id.0,
                    "delivered with its socket's id"
                );
                order.push((r.id, r.buf[1]));
                extra.rearm(r);
            }
            for (k, (_, round)) in order.iter().enumerate() {
                assert_eq!(usize::from(*round), k / 3, "{order:?}");
            }
            // Sending goes through the socket named.
            let (s2, _) = extra.get(SocketId(2)).unwrap();
            s2.send_to(b"x", peer.local_addr().unwrap()).await.unwrap();
            let mut buf = [0u8; 8];
            let (_, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(from, addrs[&SocketId(2)]);
            // A receive handed back after its socket closed is not restarted.
            peer.send_to(b"z", addrs[&SocketId(2)]).unwrap();
            let r = extra.next().await;
            assert_eq!(r.id, SocketId(2));
            extra.close(SocketId(2));
            extra.rearm(r);
            assert_eq!(extra.len(), 2);
            assert!(extra.get(SocketId(2)).is_none());
            assert_eq!(extra.receiving.len(), 2);
        });
    }
}
