//! The event loop: one `Poll`, the primary `UdpSocket` plus whatever sockets the core asks for,
//! one `Token` per socket (its `SocketId`) (firezone relay `Eventloop::poll` shape). Bytes and
//! time in, bytes out, sockets opened and closed on request; everything else is the core's
//! business. Datagrams move in batches where the OS allows (`batch.rs`: `recvmmsg` and
//! `sendmmsg` on Linux), one system call per datagram elsewhere.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use pierce_core::{Endpoint, SocketId, SocketRequest};

use crate::batch::{self, RecvBatch, SendQueue, Sent};

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

/// Counters kept by the adapter; protocol counters live in the core's `stats()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Datagrams read from the socket and handed to the core.
    pub datagrams_received: u64,
    /// Datagrams handed to the socket.
    pub datagrams_sent: u64,
    /// Datagrams the socket refused with a hard error (unreachable, wrong address family...);
    /// they are dropped like any datagram lost on the way.
    pub send_errors: u64,
    /// Receive errors that describe an earlier send, not this socket (ICMP port or host
    /// unreachable surfacing as `ConnectionReset`/`ConnectionRefused`); ignored, as quinn does.
    /// Also any other receive error of an extra socket (only the primary socket's stop the
    /// driver).
    pub recv_errors_ignored: u64,
    /// Pumps that stopped reading because the budget ran out with data still queued.
    pub budget_exhausted: u64,
    /// Datagrams (and ignored errors) read by the most recent pump; never above the budget.
    pub last_pump_received: usize,
    /// Flushes that stopped sending because [`SEND_BUDGET`] ran out with more queued.
    pub send_budget_exhausted: u64,
    /// Datagrams the core wanted sent from a socket the driver does not have (never opened,
    /// failed to open, or closed while the datagram waited); dropped like any lost datagram.
    pub unknown_socket_drops: u64,
    /// Sockets the core asked for that could not be opened (bind or registration failed;
    /// the core is told with `socket_opened(.., None)`, see [`Driver::last_open_error`]).
    pub socket_open_failures: u64,
}

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
}

/// Drives one core [`Endpoint`] on mio UDP sockets: the primary one it is created with
/// ([`SocketId::PRIMARY`]) and any more the endpoint asks for ([`SocketRequest`]).
pub struct Driver<E> {
    endpoint: E,
    /// Every open socket by id, the primary (id 0) always among them. Each is registered with
    /// `Token(id)`.
    sockets: BTreeMap<SocketId, Sock>,
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
}

impl<E: Endpoint> Driver<E> {
    /// Binds a UDP socket at `addr` and drives `endpoint` on it.
    ///
    /// # Errors
    /// The bind or the poller registration failed.
    pub fn bind(addr: SocketAddr, endpoint: E) -> io::Result<Self> {
        Self::new(UdpSocket::bind(addr)?, endpoint)
    }

    /// Drives `endpoint` on a socket the application set up itself (buffer sizes, `SO_REUSEADDR`,
    /// a specific interface); it is switched to non-blocking mode.
    ///
    /// # Errors
    /// Switching to non-blocking mode or the poller registration failed.
    pub fn from_std(socket: std::net::UdpSocket, endpoint: E) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Self::new(UdpSocket::from_std(socket), endpoint)
    }

    fn new(mut socket: UdpSocket, endpoint: E) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, token(SocketId::PRIMARY), Interest::READABLE)?;
        let local_addr = socket.local_addr()?;
        let primary = Sock {
            socket,
            local: local_addr,
            readable: true,
            writable_interest: false,
        };
        Ok(Self {
            endpoint,
            sockets: BTreeMap::from([(SocketId::PRIMARY, primary)]),
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
        })
    }

    /// The address the primary socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address socket `id` is bound to, if the driver has it open.
    pub fn socket_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.sockets.get(&id).map(|s| s.local)
    }

    /// How many sockets are open, the primary one included.
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

    /// Sets how many datagrams one pump reads at most, over all sockets (at least 1; default
    /// [`RECV_BUDGET`]).
    pub fn set_recv_budget(&mut self, budget: usize) {
        self.budget = budget.max(1);
    }

    /// The next event from the core.
    pub fn poll_event(&mut self) -> Option<E::Event> {
        self.endpoint.poll_event()
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

    /// `max_wait: None` waits for as long as the core allows (forever without a deadline).
    fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        self.flush(now)?;
        let wait = if !self.ready.is_empty() || self.more_to_send {
            Some(Duration::ZERO) // unread data left by the budget: mio will not signal it again
        } else {
            let until_deadline = self
                .endpoint
                .poll_timeout()
                .map(|d| d.saturating_duration_since(now));
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
        for event in self.events.iter() {
            if !event.is_readable() {
                continue;
            }
            let Ok(id) = u16::try_from(event.token().0).map(SocketId) else {
                continue;
            };
            if let Some(sock) = self.sockets.get_mut(&id)
                && !sock.readable
            {
                sock.readable = true;
                self.ready.push_back(id);
            }
        }
        let now = Instant::now(); // the one clock read for this wakeup
        self.receive(now)?;
        if self.endpoint.poll_timeout().is_some_and(|d| d <= now) {
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
            let Some(sock) = self.sockets.get_mut(&id) else {
                continue; // closed since it was queued
            };
            let share = ((self.budget - n) / (self.ready.len() + 1)).max(1);
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
                if self.sockets.contains_key(&t.socket) {
                    self.tx.push(t);
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
            let sent = self
                .tx
                .send_run(&mut self.stats, |run| batch::send(&sock.socket, run));
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
    /// the core's to handle (`socket_opened(.., None)`), never the driver's.
    fn apply_socket_requests(&mut self, now: Instant) {
        while let Some(request) = self.endpoint.poll_socket_request() {
            match request {
                SocketRequest::Open { id, addr } => {
                    let local = self.open_socket(id, addr);
                    self.endpoint.socket_opened(now, id, local);
                }
                SocketRequest::Close { id } => self.close_socket(id),
            }
        }
    }

    fn open_socket(&mut self, id: SocketId, addr: Option<SocketAddr>) -> Option<SocketAddr> {
        if id == SocketId::PRIMARY {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket 0 is the primary socket",
            );
            self.stats.socket_open_failures += 1;
            self.last_open_error = Some((id, e));
            return None;
        }
        self.close_socket(id); // a second Open for an id replaces its socket
        let addr = addr.unwrap_or_else(|| SocketAddr::new(self.local_addr.ip(), 0));
        let opened = UdpSocket::bind(addr).and_then(|mut socket| {
            let local = socket.local_addr()?;
            self.poll
                .registry()
                .register(&mut socket, token(id), Interest::READABLE)?;
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
                };
                self.sockets.insert(id, sock);
                self.ready.push_back(id);
                Some(local)
            }
            Err(e) => {
                self.stats.socket_open_failures += 1;
                self.last_open_error = Some((id, e));
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

fn token(id: SocketId) -> Token {
    Token(usize::from(id.0))
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

impl<E> std::fmt::Debug for Driver<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("local_addr", &self.local_addr)
            .field("sockets", &self.sockets.len())
            .field("queued", &self.tx.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
