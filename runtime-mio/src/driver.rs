//! The event loop: one `Poll`, the primary `UdpSocket` plus whatever sockets the core asks for,
//! one `Token` per socket (its `SocketId`) (firezone relay `Eventloop::poll` shape). Bytes and
//! time in, bytes out, sockets opened and closed on request; everything else is the core's
//! business. Datagrams move in batches where the OS allows (`batch.rs`: `recvmmsg` and
//! `sendmmsg` on Linux), one system call per datagram elsewhere.
//!
//! TCP streams (the fallback for networks that block UDP; `stream.rs`) are sockets too: a
//! stream's `SocketId` has the top bit set and is its token. The core connects them
//! ([`SocketRequest::Connect`]); a server's driver also accepts them on a listener
//! ([`Driver::listen_tcp`]) and names each itself. Frames read from a stream share the receive
//! budget and the round robin with the UDP sockets.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use pierce_core::framing::DEFAULT_STREAM_BUFFER;
use pierce_core::streams::{DEFAULT_MAX_STREAMS, StreamTable};
use pierce_core::{Endpoint, SocketId, SocketRequest};
use pierce_os::{DriverStats, is_stray_icmp};

use crate::batch::{self, RecvBatch, SendQueue, Sent};
use crate::stream::{ACCEPT_BUDGET, Connect, Ended, ReadEnd, Stream};

/// Most datagrams one [`Driver::pump`] reads (the default; see [`Driver::set_recv_budget`]).
///
/// Bounds the work a flood can force into one game frame (quinn's `WorkLimiter`, firezone's
/// budget). 256 datagrams of ~5 µs of decryption each is ~1.3 ms, under a tenth of a 60 Hz
/// frame, and matches what a default 208 KiB Linux receive buffer holds of small datagrams, so
/// one pump can still empty a full buffer.
pub const RECV_BUDGET: usize = 256;

/// Size of the receive buffer of each datagram of a batch: any UDP payload fits, so the core
/// sees a datagram's true length and classifies oversize garbage itself instead of getting a
/// silently truncated copy. (The buffers are allocated zeroed, so only the pages datagrams
/// are written to take memory.)
pub const RECV_BUFFER_SIZE: usize = 65_536;

/// Readiness events taken from the poller per wait; more stay queued in the kernel for the next.
const EVENT_CAPACITY: usize = 256;

/// The TCP listener's token: above every `SocketId` (which are `u16`).
const LISTENER: Token = Token(1 << 16);

/// The waker's token ([`Driver::waker`]).
const WAKER: Token = Token((1 << 16) + 1);

/// Datagrams one flush sends at most: a core that keeps producing output (a bug, or a huge
/// backlog) cannot stall a frame; the rest goes out on the next pump, which does not wait.
pub const SEND_BUDGET: usize = 1024;

/// One UDP socket of the driver.
struct Sock {
    socket: UdpSocket,
    local: SocketAddr,
    /// The socket may hold unread data. mio is edge-triggered: this stays set until a read
    /// finds the socket empty, including across pumps when the budget runs out. Set exactly
    /// when the socket's id is in [`Driver::ready`].
    readable: bool,
    /// WRITABLE is registered: the socket refused a datagram that is still queued.
    writable_interest: bool,
    /// The socket may still try GSO (see [`batch::send`]).
    gso: bool,
}

/// Drives one core [`Endpoint`] on mio UDP sockets: the primary one it is created with
/// ([`SocketId::PRIMARY`]) and any more the endpoint asks for ([`SocketRequest`]); and on TCP
/// streams: those the endpoint connects ([`SocketRequest::Connect`]) and, once
/// [`Driver::listen_tcp`] was called, those accepted at the primary socket's address.
pub struct Driver<E> {
    endpoint: E,
    /// Every open socket by id, the primary (id 0) always among them. Each is registered with
    /// `Token(id)`.
    sockets: BTreeMap<SocketId, Sock>,
    /// Every TCP stream by id (ids with [`SocketId::STREAM_BIT`]), connecting or open, with
    /// the ids of those with output to write; the cap on accepted ones. Each is registered
    /// with `Token(id)`, READABLE | WRITABLE.
    streams: StreamTable<Stream>,
    /// Accepts streams once [`Driver::listen_tcp`] was called; registered with [`LISTENER`].
    listener: Option<TcpListener>,
    /// The listener may hold connections not accepted yet (the accept budget ran out).
    accept_pending: bool,
    /// Readiness of streams from the last poll: (id, readable, writable).
    stream_events: Vec<(SocketId, bool, bool)>,
    stream_buffer: usize,
    local_addr: SocketAddr,
    poll: Poll,
    events: Events,
    /// `poll_transmit` writes into its free slots; it keeps the datagrams a socket refused
    /// with `WouldBlock` (parked; that socket has WRITABLE registered) until they are sent.
    tx: SendQueue,
    rx: RecvBatch,
    /// Sockets that may hold unread data, in the order they are read: a fair share of the
    /// remaining budget from the front socket (one batch at most), which then goes to the
    /// back while it stays readable (round robin, so no socket starves the others and the
    /// budget is shared).
    ready: VecDeque<SocketId>,
    /// The last flush stopped at [`SEND_BUDGET`]: the next pump must not wait.
    more_to_send: bool,
    budget: usize,
    stats: DriverStats,
    last_open_error: Option<(SocketId, io::Error)>,
    /// Sockets use UDP GSO and GRO where the kernel has them ([`Driver::set_offload`]).
    offload: bool,
    /// Wakes a waiting pump from another thread, once asked for.
    waker: Option<Arc<Waker>>,
}

impl<E: Endpoint + pierce_core::Events> Driver<E> {
    /// The next event from the core.
    pub fn poll_event(&mut self) -> Option<E::Event> {
        self.endpoint.poll_event()
    }

    /// Pumps until `on_event` returns `Break`, blocking while there is nothing to do. The
    /// callback gets the endpoint to answer with commands; their datagrams go out before the
    /// loop waits again (or before `run` returns, on `Break`).
    ///
    /// # Errors
    /// As [`Driver::pump`].
    pub fn run(
        &mut self,
        mut on_event: impl FnMut(&mut E, E::Event) -> ControlFlow<()>,
    ) -> io::Result<()> {
        loop {
            while let Some(event) = self.endpoint.poll_event() {
                if on_event(&mut self.endpoint, event).is_break() {
                    return self.flush(Instant::now());
                }
            }
            self.turn(None)?;
        }
    }
}

impl<E: Endpoint> Driver<E> {
    /// Binds a UDP socket at `addr` and drives `endpoint` on it; at `[::]` the socket is
    /// dual stack ([`pierce_os::bind_udp`]): it talks to IPv4 and IPv6 addresses alike. It
    /// sends whole datagrams ([`pierce_os::set_dont_fragment`]), as every UDP socket of the
    /// driver does.
    ///
    /// # Errors
    /// The bind, the socket option or the poller registration failed.
    pub fn bind(addr: SocketAddr, endpoint: E) -> io::Result<Self> {
        Self::new(prepare(pierce_os::bind_udp(addr)?)?, endpoint)
    }

    /// Drives `endpoint` on a socket the application set up itself (buffer sizes, `SO_REUSEADDR`,
    /// a specific interface); it is switched to non-blocking mode and set to send whole
    /// datagrams ([`pierce_os::set_dont_fragment`]: the core's path-MTU probes must not be
    /// fragmented on the way).
    ///
    /// # Errors
    /// Switching to non-blocking mode, the socket option or the poller registration failed.
    pub fn from_std(socket: std::net::UdpSocket, endpoint: E) -> io::Result<Self> {
        Self::new(prepare(socket)?, endpoint)
    }

    fn new(mut socket: UdpSocket, endpoint: E) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, token(SocketId::PRIMARY), Interest::READABLE)?;
        let local_addr = socket.local_addr()?;
        // Offload is on by default (`Driver::set_offload`).
        batch::set_gro(&socket, true);
        let primary = Sock {
            socket,
            local: local_addr,
            readable: true,
            writable_interest: false,
            gso: true,
        };
        Ok(Self {
            endpoint,
            sockets: BTreeMap::from([(SocketId::PRIMARY, primary)]),
            streams: StreamTable::new(DEFAULT_MAX_STREAMS),
            listener: None,
            accept_pending: false,
            stream_events: Vec::new(),
            stream_buffer: DEFAULT_STREAM_BUFFER,
            local_addr,
            poll,
            events: Events::with_capacity(EVENT_CAPACITY),
            tx: SendQueue::new(),
            rx: RecvBatch::new(),
            ready: VecDeque::from([SocketId::PRIMARY]),
            more_to_send: false,
            budget: RECV_BUDGET,
            stats: DriverStats::default(),
            last_open_error: None,
            offload: true,
            waker: None,
        })
    }

    /// The address the primary socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address socket `id` is bound to, if the driver has it open (for a stream: its local
    /// end, once connected).
    pub fn socket_addr(&self, id: SocketId) -> Option<SocketAddr> {
        if id.is_stream() {
            return self.streams.get(id).and_then(|s| s.local);
        }
        self.sockets.get(&id).map(|s| s.local)
    }

    /// The remote end of stream `id`, if the driver has it (connected or connecting).
    pub fn stream_peer(&self, id: SocketId) -> Option<SocketAddr> {
        self.streams.get(id).map(|s| s.peer)
    }

    /// How many TCP streams are open or connecting.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Accepts TCP streams at the primary socket's address (same IP, same port: clients that
    /// cannot use UDP connect to the address they were given), for a server. Each accepted
    /// stream gets a fresh [`SocketId::stream`] id; its datagrams go to `handle_datagram_on`
    /// with that id and the client's address, transmits naming it go down it, and its end is
    /// reported with `handle_stream_closed`. At most [`Driver::set_max_streams`] streams at once.
    /// The kernel queues up to [`pierce_os::LISTEN_BACKLOG`] connections not accepted yet.
    /// Returns the listening address. Calling it again is a no-op.
    ///
    /// # Errors
    /// The TCP port is taken, or registration failed.
    pub fn listen_tcp(&mut self) -> io::Result<SocketAddr> {
        if let Some(l) = &self.listener {
            return l.local_addr();
        }
        // (Bound by hand for an accept queue sized for bursts: `pierce_os::LISTEN_BACKLOG`.)
        self.listen_tcp_from_std(pierce_os::listen_tcp(self.local_addr)?)
    }

    /// [`Driver::listen_tcp`] on a listener the application set up itself (another address,
    /// socket options); it is switched to non-blocking mode. Replaces any listener.
    ///
    /// # Errors
    /// Switching to non-blocking mode or the registration failed.
    pub fn listen_tcp_from_std(
        &mut self,
        listener: std::net::TcpListener,
    ) -> io::Result<SocketAddr> {
        listener.set_nonblocking(true)?;
        self.listen_tcp_with(TcpListener::from_std(listener))
    }

    fn listen_tcp_with(&mut self, mut listener: TcpListener) -> io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        if let Some(mut old) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut old);
        }
        self.poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        self.listener = Some(listener);
        self.accept_pending = true; // connections queued before registration are not signalled
        Ok(addr)
    }

    /// The address TCP streams are accepted at, if [`Driver::listen_tcp`] was called.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Sets how many streams the driver keeps at once (default [`DEFAULT_MAX_STREAMS`]; at
    /// least 1, at most 32767, the number of stream ids). Connections accepted over it are
    /// closed at once and counted in [`DriverStats::streams_refused`]; streams the endpoint
    /// connects itself are not limited. Lowering it closes nothing.
    pub fn set_max_streams(&mut self, max: usize) {
        self.streams.set_max_streams(max);
    }

    /// Sets the cap on bytes queued for each stream created from now on (default
    /// `pierce_core::framing::DEFAULT_STREAM_BUFFER`, 256 KiB); a datagram that does not fit
    /// is dropped and counted in [`DriverStats::stream_datagrams_dropped`].
    pub fn set_stream_buffer(&mut self, bytes: usize) {
        self.stream_buffer = bytes;
    }

    /// How many UDP sockets are open, the primary one included (streams:
    /// [`Driver::stream_count`]).
    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// Why the most recent failed [`SocketRequest::Open`] failed, and for which socket.
    pub fn last_open_error(&self) -> Option<(SocketId, &io::Error)> {
        self.last_open_error.as_ref().map(|(id, e)| (*id, e))
    }

    /// The core endpoint, to read its state and `stats()`.
    pub fn endpoint(&self) -> &E {
        &self.endpoint
    }

    /// The core endpoint, to issue commands. Whatever they queue is sent by the next pump.
    pub fn endpoint_mut(&mut self) -> &mut E {
        &mut self.endpoint
    }

    /// Gives the endpoint back, dropping the sockets.
    pub fn into_endpoint(self) -> E {
        self.endpoint
    }

    /// The adapter's counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// A handle another thread can wake a waiting [`Driver::pump`] with (it returns as if
    /// its wait were over), e.g. when it has input for the endpoint that does not come
    /// through the driver's sockets (the server's relay threads' reports).
    ///
    /// # Errors
    /// The poller refused the waker.
    pub fn waker(&mut self) -> io::Result<Arc<Waker>> {
        if let Some(w) = &self.waker {
            return Ok(w.clone());
        }
        let w = Arc::new(Waker::new(self.poll.registry(), WAKER)?);
        self.waker = Some(w.clone());
        Ok(w)
    }

    /// Turns UDP segmentation offload on or off for every socket, open and to come (default:
    /// on). On, a send of consecutive datagrams to one destination goes to the kernel as one
    /// GSO buffer and coalesced datagrams arrive as one GRO buffer (Linux; a socket whose
    /// kernel or route refuses GSO stops trying by itself); off, one datagram per message both
    /// ways, as on other systems. For comparisons, and for a path that misbehaves with it.
    pub fn set_offload(&mut self, on: bool) {
        self.offload = on;
        for sock in self.sockets.values_mut() {
            sock.gso = on;
            batch::set_gro(&sock.socket, on);
        }
    }

    /// Whether UDP segmentation offload is on ([`Driver::set_offload`]).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Sets how many datagrams one pump reads at most, over all sockets (at least 1; default
    /// [`RECV_BUDGET`]).
    pub fn set_recv_budget(&mut self, budget: usize) {
        self.budget = budget.max(1);
    }

    /// One turn of the loop: open and close the sockets the core asked for, send what is
    /// queued, wait up to `max_wait` (less if the core's deadline or unread data comes first),
    /// read up to the budget, run due timers and send what that produced.
    /// `pump(Duration::ZERO)` never blocks, for use once per game frame.
    ///
    /// # Errors
    /// Only failures of the primary socket or the poller itself; per-datagram errors are
    /// counted in [`Driver::stats`] and dropped.
    pub fn pump(&mut self, max_wait: Duration) -> io::Result<()> {
        self.turn(Some(max_wait))
    }

    /// `max_wait: None` waits for as long as the core allows (forever without a deadline).
    fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        self.flush(now)?;
        let wait = if !self.ready.is_empty() || self.more_to_send || self.accept_pending {
            Some(Duration::ZERO) // unread data left by the budget: mio will not signal it again
        } else {
            let until_deadline = self
                .endpoint
                .poll_timeout()
                .map(|d| d.at.saturating_duration_since(now));
            match (until_deadline, max_wait) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        match self.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.stream_events.clear();
        for event in self.events.iter() {
            if event.token() == WAKER {
                continue; // it only ends the wait
            }
            if event.token() == LISTENER {
                self.accept_pending = true;
                continue;
            }
            let Ok(id) = u16::try_from(event.token().0).map(SocketId) else {
                continue;
            };
            if id.is_stream() {
                // A closed or failed stream shows as readable (EOF or the error comes with
                // the read) and writable (the write or the connect check reports it).
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                self.stream_events.push((id, readable, writable));
                continue;
            }
            if !event.is_readable() {
                continue;
            }
            if let Some(sock) = self.sockets.get_mut(&id).filter(|s| !s.readable) {
                sock.readable = true;
                self.ready.push_back(id);
            }
        }
        let now = Instant::now(); // the one clock read for this wakeup
        self.handle_stream_events(now);
        self.accept(now);
        self.receive(now)?;
        if self.endpoint.poll_timeout().is_some_and(|d| d.at <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.flush(now)
    }

    /// Reads until every socket is empty or the budget is spent, in turns: each ready socket
    /// in turn gets a fair share of what is left of the budget (at least one datagram, at
    /// most one batch), so a flood on one socket cannot crowd out the others.
    fn receive(&mut self, now: Instant) -> io::Result<()> {
        let mut n = 0;
        while n < self.budget {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let share = ((self.budget - n) / (self.ready.len() + 1)).max(1);
            if id.is_stream() {
                // At least one unit of budget per turn: a stream of empty frames delivers
                // nothing but must not keep the loop going either.
                n += self.read_stream(now, id, share).max(1);
                continue;
            }
            let Some(sock) = self.sockets.get_mut(&id) else {
                continue; // closed since it was queued
            };
            match self.rx.recv(&sock.socket, share) {
                Ok(got) => {
                    n += got.count;
                    self.stats.datagrams_received += got.count as u64;
                    if got.drained {
                        sock.readable = false;
                    } else {
                        self.ready.push_back(id);
                    }
                    for i in 0..got.count {
                        let (from, datagram) = self.rx.get(i);
                        self.endpoint.handle_datagram_on(now, id, from, datagram);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.ready.push_front(id),
                Err(e) if is_stray_icmp(&e) => {
                    n += 1; // counted against the budget: injected errors are a flood too
                    self.stats.recv_errors_ignored += 1;
                    self.ready.push_back(id);
                }
                Err(e) if id == SocketId::PRIMARY => return Err(e),
                Err(_) => {
                    // An extra socket failing must not stop the endpoint: to the core it is
                    // loss. Its next readiness event brings it back.
                    self.stats.recv_errors_ignored += 1;
                    sock.readable = false;
                }
            }
        }
        if !self.ready.is_empty() {
            self.stats.budget_exhausted += 1;
        }
        self.stats.last_pump_received = n;
        Ok(())
    }

    /// Carries out the core's socket requests, then sends the parked datagrams and everything
    /// the core has queued, a batch at a time, until `WouldBlock` or [`SEND_BUDGET`].
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        self.apply_socket_requests(now);
        if !self.send_queued()? {
            return Ok(()); // still blocked; WRITABLE stays registered
        }
        let mut pulled = 0;
        self.more_to_send = false;
        loop {
            let mut done = false;
            while !self.tx.is_full() {
                let Some(t) = self.endpoint.poll_transmit(now, self.tx.slot_mut()) else {
                    done = true;
                    break;
                };
                pulled += 1;
                if t.socket.is_stream() {
                    // Until the connect is reported, the id is not open: like a UDP socket
                    // not opened yet, its datagrams are dropped.
                    let datagram = &self.tx.slot_mut()[..t.len];
                    self.stats.count_push(self.streams.push(t.socket, datagram));
                } else if let Some(sock) = self.sockets.get(&t.socket) {
                    // (In the socket's family: an IPv4 destination from a dual-stack socket.)
                    match pierce_os::for_socket(t.dst, sock.local) {
                        Some(dst) if t.ttl.is_some() => {
                            // A hole-punching opener: sent at once with its own TTL, or
                            // dropped (never sent with the default TTL: see Transmit::ttl).
                            let bytes = &self.tx.slot_mut()[..t.len];
                            if send_opener(&sock.socket, sock.local, bytes, dst, t.ttl).is_err() {
                                self.stats.send_errors += 1;
                            }
                        }
                        Some(dst) => {
                            let mut t = t;
                            t.dst = dst;
                            self.tx.push(t);
                        }
                        None => self.stats.send_errors += 1,
                    }
                } else {
                    self.stats.unknown_socket_drops += 1;
                }
                if pulled >= SEND_BUDGET {
                    self.more_to_send = true;
                    self.stats.send_budget_exhausted += 1;
                    done = true;
                    break;
                }
            }
            self.write_streams(now);
            if !self.send_queued()? {
                return Ok(());
            }
            if done {
                break;
            }
        }
        // Requests the transmits queued; their datagrams go out on the next flush.
        self.apply_socket_requests(now);
        Ok(())
    }

    /// Sends what is queued, one run of datagrams per socket at a time; `false` if a socket
    /// blocked, which then has WRITABLE registered (and keeps the rest queued). Datagrams of a
    /// socket closed meanwhile are dropped.
    fn send_queued(&mut self) -> io::Result<bool> {
        while let Some(id) = self.tx.front_socket() {
            let Some(sock) = self.sockets.get_mut(&id) else {
                self.stats.unknown_socket_drops += self.tx.drop_run() as u64;
                continue;
            };
            let (socket, gso) = (&sock.socket, &mut sock.gso);
            let sent = (self.tx).send_run(&mut self.stats, |run| batch::send(socket, run, gso));
            let want_writable = sent == Sent::Blocked;
            if sock.writable_interest != want_writable {
                let interest = if want_writable {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                self.poll
                    .registry()
                    .reregister(&mut sock.socket, token(id), interest)?;
                sock.writable_interest = want_writable;
            }
            if want_writable {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Opens and closes sockets until the core wants no more changes. A failure to open is
    /// the core's to handle (`handle_socket_opened(.., None)`), never the driver's.
    fn apply_socket_requests(&mut self, now: Instant) {
        while let Some(request) = self.endpoint.poll_socket_request() {
            match request {
                SocketRequest::Open { id, addr } => {
                    let local = self.open_socket(id, addr);
                    self.endpoint.handle_socket_opened(now, id, local);
                }
                SocketRequest::Close { id } if id.is_stream() => self.shut_down_stream(id),
                SocketRequest::Close { id } => self.close_socket(id),
                SocketRequest::Connect { id, addr } => self.connect_or_fail(now, id, addr, false),
                SocketRequest::ConnectRaw { id, addr } => self.connect_or_fail(now, id, addr, true),
            }
        }
    }

    fn open_failed(&mut self, id: SocketId, e: io::Error) {
        self.stats.socket_open_failures += 1;
        self.last_open_error = Some((id, e));
    }

    /// [`Driver::connect_stream`], telling the core at once if it cannot even start.
    fn connect_or_fail(&mut self, now: Instant, id: SocketId, addr: SocketAddr, raw: bool) {
        if let Err(e) = self.connect_stream(id, addr, raw) {
            self.open_failed(id, e);
            self.endpoint.handle_socket_opened(now, id, None);
        }
    }

    /// Starts a non-blocking connect for stream `id` (`raw`: bytes, not framed datagrams);
    /// its outcome is reported when the stream becomes writable
    /// ([`Driver::handle_stream_events`]).
    fn connect_stream(&mut self, id: SocketId, addr: SocketAddr, raw: bool) -> io::Result<()> {
        if !id.is_stream() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a stream id needs the stream bit (SocketId::stream)",
            ));
        }
        if self.streams.contains(id) {
            // Only an endpoint that both accepts and connects streams could get here; the
            // stream already under this id stays, and the core hears the connect failed.
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "the stream id is in use",
            ));
        }
        let mut io = TcpStream::connect(addr)?;
        self.poll.registry().register(
            &mut io,
            token(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let stream = Stream::connecting(io, addr, self.stream_buffer, raw);
        self.streams.connecting(id, stream); // the id is free: nothing is replaced
        Ok(())
    }

    /// Acts on the readiness the last poll reported for streams: finishes connects (and
    /// tells the core), queues readable streams for [`Driver::receive`], writes to streams
    /// that have room again.
    fn handle_stream_events(&mut self, now: Instant) {
        let events = std::mem::take(&mut self.stream_events);
        for &(id, readable, writable) in &events {
            let Some(stream) = self.streams.get_mut(id) else {
                continue; // closed since
            };
            if stream.connecting {
                match stream.finish_connect() {
                    Connect::Pending => {}
                    Connect::Done(local) => {
                        self.stats.streams_connected += 1;
                        stream.readable = true; // whatever came before now was signalled
                        self.ready.push_back(id);
                        let _ = self.streams.connected(id);
                        self.endpoint.handle_socket_opened(now, id, Some(local));
                    }
                    Connect::Failed(e) => {
                        let refused = e.kind() == io::ErrorKind::ConnectionRefused;
                        self.last_open_error = Some((id, e));
                        self.connect_failed(now, id, refused); // counted, reported
                    }
                }
                continue;
            }
            if readable && !stream.readable {
                stream.readable = true;
                self.ready.push_back(id);
            }
            if writable && stream.write_blocked {
                stream.write_blocked = false;
                self.streams.mark_unwritten(id);
            }
        }
        self.stream_events = events;
        self.write_streams(now);
    }

    /// Accepts waiting connections, up to [`ACCEPT_BUDGET`] per pump (the rest on the next,
    /// which then does not sleep); over the stream cap each is closed at once.
    fn accept(&mut self, now: Instant) {
        if !self.accept_pending {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.listener else {
                self.accept_pending = false;
                return;
            };
            let (io, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                // Interrupted, or a connection reset before it was accepted: take the next.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(_) => {
                    // Out of descriptors or memory: retrying now would spin. The listener
                    // signals again when the next connection arrives.
                    self.stats.accept_errors += 1;
                    self.accept_pending = false;
                    return;
                }
            };
            let Ok(id) = self
                .streams
                .accept(Stream::accepted(io, peer, self.stream_buffer))
            else {
                self.stats.streams_refused += 1;
                continue; // dropping the stream closed it
            };
            let Some(stream) = self.streams.get_mut(id) else {
                continue;
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(&mut stream.io, token(id), interest)
                .is_err()
            {
                self.stats.accept_errors += 1;
                let _ = self.streams.close(id); // the core never heard of it
                continue;
            }
            stream.readable = true; // a client may have written before the registration
            self.stats.streams_accepted += 1;
            self.endpoint.handle_stream_accepted(now, id, peer);
            // A client sends its hello right behind the handshake's last ACK: read what the
            // stream carries already (registered first, so what comes later is signalled),
            // so a real client's stream carries a session before the next accept of this
            // burst could push it out of the core's admission pool. Requeued for the rest.
            self.read_stream(now, id, 1);
            // The core may have closed an older stream to make room (its admission): free
            // its slot before the next accept, so a burst cannot fill the table first.
            self.apply_socket_requests(now);
        }
    }

    /// Reads up to `max` datagrams from stream `id` into the endpoint; requeues it while it
    /// stays readable, and ends it (telling the core) if it ended. Returns how many were read.
    fn read_stream(&mut self, now: Instant, id: SocketId, max: usize) -> usize {
        let Some(stream) = self.streams.get_mut(id) else {
            return 0; // closed since it was queued
        };
        let peer = stream.peer;
        let endpoint = &mut self.endpoint;
        let (n, end) = stream.read_frames(max, |datagram| {
            endpoint.handle_datagram_on(now, id, peer, datagram);
        });
        self.stats.datagrams_received += n as u64;
        match end {
            ReadEnd::Drained => stream.readable = false,
            ReadEnd::Budget => self.ready.push_back(id),
            ReadEnd::Ended(why) => {
                stream.readable = false;
                if why == Ended::FrameTooLong {
                    self.stats.stream_frames_too_long += 1;
                }
                self.stream_ended(now, id);
            }
        }
        n
    }

    /// Writes what is queued for the streams with output (as much as each socket takes); a
    /// stream whose write fails has ended.
    fn write_streams(&mut self, now: Instant) {
        while let Some(id) = self.streams.next_unwritten() {
            let Some(stream) = self.streams.get_mut(id) else {
                continue;
            };
            if stream.write_queued().is_err() {
                self.stream_ended(now, id);
            }
        }
    }

    /// Stream `id`'s connect failed (`refused`: with `ECONNREFUSED`): forget it and tell the
    /// core how.
    fn connect_failed(&mut self, now: Instant, id: SocketId, refused: bool) {
        if let Some((mut stream, report)) = self.streams.ended(id) {
            let report = if refused { report.refused() } else { report };
            self.release(id, &mut stream);
            self.stats.count_end(report);
            report.tell(&mut self.endpoint, now, id);
        }
    }

    /// Stream `id` ended by itself (or its connect failed): forget it and tell the core, once
    /// (after which the id may be handed out again); nothing if the core closed it first.
    fn stream_ended(&mut self, now: Instant, id: SocketId) {
        if let Some((mut stream, report)) = self.streams.ended(id) {
            self.release(id, &mut stream);
            self.stats.count_end(report);
            report.tell(&mut self.endpoint, now, id);
        }
    }

    /// The core closed stream `id`: flush what the socket takes now, shut it down, forget it.
    /// No `handle_stream_closed` follows.
    fn shut_down_stream(&mut self, id: SocketId) {
        if let Some(mut stream) = self.streams.close(id) {
            self.release(id, &mut stream);
            self.stats.stream_bytes_unflushed += stream.shut_down() as u64;
        }
    }

    /// What the driver holds for a stream the table forgot: its registration, its turn.
    fn release(&mut self, id: SocketId, stream: &mut Stream) {
        let _ = self.poll.registry().deregister(&mut stream.io);
        if stream.readable {
            self.ready.retain(|&r| r != id);
        }
    }

    fn open_socket(&mut self, id: SocketId, addr: Option<SocketAddr>) -> Option<SocketAddr> {
        if id == SocketId::PRIMARY || id.is_stream() {
            let why = if id.is_stream() {
                "a stream id names a TCP stream (SocketRequest::Connect), not a UDP socket"
            } else {
                "socket 0 is the primary socket"
            };
            self.open_failed(id, io::Error::new(io::ErrorKind::InvalidInput, why));
            return None;
        }
        self.close_socket(id); // a second Open for an id replaces its socket
        // No address, or an unspecified IP: the primary socket's IP (with any port, or that one).
        let addr = match addr {
            Some(a) if !a.ip().is_unspecified() => a,
            a => SocketAddr::new(self.local_addr.ip(), a.map_or(0, |a| a.port())),
        };
        let bound = pierce_os::bind_udp(addr).and_then(prepare);
        let opened = bound.and_then(|mut socket| {
            let local = socket.local_addr()?;
            self.poll
                .registry()
                .register(&mut socket, token(id), Interest::READABLE)?;
            batch::set_gro(&socket, self.offload);
            Ok((socket, local))
        });
        match opened {
            Ok((socket, local)) => {
                // Anything that arrived before the registration was never signalled.
                let sock = Sock {
                    socket,
                    local,
                    readable: true,
                    writable_interest: false,
                    gso: self.offload,
                };
                self.sockets.insert(id, sock);
                self.ready.push_back(id);
                Some(local)
            }
            Err(e) => {
                self.open_failed(id, e);
                None
            }
        }
    }

    fn close_socket(&mut self, id: SocketId) {
        if id == SocketId::PRIMARY {
            return; // the primary socket lives as long as the driver
        }
        if let Some(mut sock) = self.sockets.remove(&id) {
            let _ = self.poll.registry().deregister(&mut sock.socket);
            if sock.readable {
                self.ready.retain(|&r| r != id);
            }
        }
    }
}

/// `socket` as the driver (and a relay thread) uses it: non-blocking, and sending whole
/// datagrams ([`pierce_os::set_dont_fragment`]), so a path-MTU probe that arrives proves the
/// path carries its size. (Where the OS has no such option it is left as it is.)
///
/// # Errors
/// The OS refused either option.
pub(crate) fn prepare(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
    socket.set_nonblocking(true)?;
    pierce_os::set_dont_fragment(&socket)?;
    Ok(UdpSocket::from_std(socket))
}

/// Sends a hole-punching opener (`Transmit::ttl`) from `socket` (bound to `local`).
///
/// # Errors
/// The OS refused the TTL or the send; off Unix, always (the opener is dropped).
fn send_opener(
    socket: &UdpSocket,
    local: SocketAddr,
    bytes: &[u8],
    dst: SocketAddr,
    ttl: Option<u8>,
) -> io::Result<usize> {
    let ttl = ttl.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no TTL"))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        pierce_os::send_to_with_ttl(socket.as_fd(), local.is_ipv6(), ttl, bytes, dst)
    }
    #[cfg(not(unix))]
    {
        let _ = (socket, local, bytes, dst, ttl);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "openers are sent on Unix only",
        ))
    }
}

fn token(id: SocketId) -> Token {
    Token(usize::from(id.0))
}

impl<E> std::fmt::Debug for Driver<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("local_addr", &self.local_addr)
            .field("sockets", &self.sockets.len())
            .field("streams", &self.streams.len())
            .field("queued", &self.tx.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsFd;

    use pierce_core::{Timeout, Transmit};

    use super::*;

    /// An endpoint that asks for one more socket, once.
    struct OpensOne(Option<SocketRequest>);

    impl Endpoint for OpensOne {
        fn handle_datagram_on(&mut self, _: Instant, _: SocketId, _: SocketAddr, _: &[u8]) {}
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self, _: Instant, _: &mut [u8]) -> Option<Transmit> {
            None
        }
        fn poll_socket_request(&mut self) -> Option<SocketRequest> {
            self.0.take()
        }
        fn poll_timeout(&self) -> Option<Timeout> {
            None
        }
    }

    fn opens_one() -> OpensOne {
        OpensOne(Some(SocketRequest::Open {
            id: SocketId(1),
            addr: None,
        }))
    }

    /// Every UDP socket of `driver` sends whole datagrams; how many it has.
    fn all_send_whole<E: Endpoint>(driver: &Driver<E>) -> usize {
        for (id, sock) in &driver.sockets {
            let whole = pierce_os::sends_whole(sock.socket.as_fd()).expect("getsockopt");
            assert!(whole, "socket {id:?} fragments");
        }
        driver.sockets.len()
    }

    #[test]
    fn every_udp_socket_of_the_driver_sends_whole_datagrams() {
        let lo: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let mut bound = Driver::bind(lo, opens_one()).expect("bind");
        bound.pump(Duration::ZERO).expect("pump");
        assert_eq!(
            all_send_whole(&bound),
            2,
            "the primary socket and the extra one"
        );
        let own = std::net::UdpSocket::bind(lo).expect("bind");
        let mut adopted = Driver::from_std(own, opens_one()).expect("adopt");
        adopted.pump(Duration::ZERO).expect("pump");
        assert_eq!(all_send_whole(&adopted), 2);
        if let Ok(mut dual) = Driver::bind("[::]:0".parse().expect("literal"), opens_one()) {
            dual.pump(Duration::ZERO).expect("pump");
            assert_eq!(all_send_whole(&dual), 2);
        }
    }
}
