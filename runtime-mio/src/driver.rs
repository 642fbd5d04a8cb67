//! The event loop: one `Poll`, one `UdpSocket`, one `Token` (firezone relay `Eventloop::poll`
//! shape). Bytes and time in, bytes out; everything else is the core's business.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use pierce_core::{Endpoint, MAX_DATAGRAM_SIZE, Transmit};

/// Most datagrams one [`Driver::pump`] reads (the default; see [`Driver::set_recv_budget`]).
///
/// Bounds the work a flood can force into one game frame (quinn's `WorkLimiter`, firezone's
/// budget). 256 datagrams of ~5 µs of decryption each is ~1.3 ms, under a tenth of a 60 Hz
/// frame, and matches what a default 208 KiB Linux receive buffer holds of small datagrams, so
/// one pump can still empty a full buffer.
pub const RECV_BUDGET: usize = 256;

/// Size of the receive buffer: any UDP payload fits, so the core sees a datagram's true length
/// and classifies oversize garbage itself instead of getting a silently truncated copy.
pub const RECV_BUFFER_SIZE: usize = 65_536;

const TOKEN: Token = Token(0);

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
    pub recv_errors_ignored: u64,
    /// Pumps that stopped reading because the budget ran out with data still queued.
    pub budget_exhausted: u64,
    /// Datagrams (and ignored errors) read by the most recent pump; never above the budget.
    pub last_pump_received: usize,
    /// Flushes that stopped sending because [`SEND_BUDGET`] ran out with more queued.
    pub send_budget_exhausted: u64,
}

/// Datagrams one flush sends at most: a core that keeps producing output (a bug, or a huge
/// backlog) cannot stall a frame; the rest goes out on the next pump, which does not wait.
pub const SEND_BUDGET: usize = 1024;

/// Drives one core [`Endpoint`] on one mio UDP socket.
pub struct Driver<E> {
    endpoint: E,
    socket: UdpSocket,
    local_addr: SocketAddr,
    poll: Poll,
    events: Events,
    /// `poll_transmit` writes here; holds the parked datagram while one is parked.
    tx: Box<[u8]>,
    rx: Box<[u8]>,
    /// A datagram the socket refused with `WouldBlock`; WRITABLE is registered while set.
    parked: Option<Transmit>,
    /// The socket may hold unread data. mio is edge-triggered: this stays set until a read
    /// returns `WouldBlock`, including across pumps when the budget runs out.
    readable: bool,
    /// The last flush stopped at [`SEND_BUDGET`]: the next pump must not wait.
    more_to_send: bool,
    budget: usize,
    stats: DriverStats,
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
            .register(&mut socket, TOKEN, Interest::READABLE)?;
        Ok(Self {
            endpoint,
            local_addr: socket.local_addr()?,
            socket,
            poll,
            events: Events::with_capacity(4),
            tx: vec![0; MAX_DATAGRAM_SIZE].into_boxed_slice(),
            rx: vec![0; RECV_BUFFER_SIZE].into_boxed_slice(),
            parked: None,
            readable: true,
            more_to_send: false,
            budget: RECV_BUDGET,
            stats: DriverStats::default(),
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The core endpoint, to read its state and `stats()`.
    pub fn endpoint(&self) -> &E {
        &self.endpoint
    }

    /// The core endpoint, to issue commands. Whatever they queue is sent by the next pump.
    pub fn endpoint_mut(&mut self) -> &mut E {
        &mut self.endpoint
    }

    /// Gives the endpoint back, dropping the socket.
    pub fn into_endpoint(self) -> E {
        self.endpoint
    }

    /// The adapter's counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Sets how many datagrams one pump reads at most (at least 1; default [`RECV_BUDGET`]).
    pub fn set_recv_budget(&mut self, budget: usize) {
        self.budget = budget.max(1);
    }

    /// The next event from the core.
    pub fn poll_event(&mut self) -> Option<E::Event> {
        self.endpoint.poll_event()
    }

    /// One turn of the loop: send what is queued, wait up to `max_wait` (less if the core's
    /// deadline or unread data comes first), read up to the budget, run due timers and send
    /// what that produced. `pump(Duration::ZERO)` never blocks, for use once per game frame.
    ///
    /// # Errors
    /// Only failures of the socket or poller itself; per-datagram errors are counted in
    /// [`Driver::stats`] and dropped.
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
        let wait = if self.readable || self.more_to_send {
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
        self.readable |= self.events.iter().any(|e| e.is_readable());
        let now = Instant::now(); // the one clock read for this wakeup
        self.receive(now)?;
        if self.endpoint.poll_timeout().is_some_and(|d| d <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.flush(now)
    }

    /// Reads until `WouldBlock` or the budget is spent.
    fn receive(&mut self, now: Instant) -> io::Result<()> {
        let mut n = 0;
        while self.readable && n < self.budget {
            match self.socket.recv_from(&mut self.rx) {
                Ok((len, from)) => {
                    n += 1;
                    self.stats.datagrams_received += 1;
                    self.endpoint.handle_datagram(now, from, &self.rx[..len]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_stray_icmp(&e) => {
                    n += 1; // counted against the budget: injected errors are a flood too
                    self.stats.recv_errors_ignored += 1;
                }
                Err(e) => return Err(e),
            }
        }
        if self.readable {
            self.stats.budget_exhausted += 1;
        }
        self.stats.last_pump_received = n;
        Ok(())
    }

    /// Sends the parked datagram, then everything the core has queued, until `WouldBlock`.
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        if let Some(t) = self.parked {
            if !self.send(t) {
                return Ok(()); // still blocked; WRITABLE stays registered
            }
            self.parked = None;
            self.poll
                .registry()
                .reregister(&mut self.socket, TOKEN, Interest::READABLE)?;
        }
        let mut sent = 0;
        self.more_to_send = false;
        while let Some(t) = self.endpoint.poll_transmit(now, &mut self.tx) {
            sent += 1;
            if !self.send(t) {
                self.parked = Some(t);
                let interest = Interest::READABLE | Interest::WRITABLE;
                return self
                    .poll
                    .registry()
                    .reregister(&mut self.socket, TOKEN, interest);
            }
            if sent >= SEND_BUDGET {
                self.more_to_send = true;
                self.stats.send_budget_exhausted += 1;
                break;
            }
        }
        Ok(())
    }

    /// Sends `self.tx[..t.len]`; `false` on `WouldBlock`. Other per-datagram errors drop the
    /// datagram: to UDP they are loss, and a candidate address that cannot be reached must not
    /// stop the endpoint.
    fn send(&mut self, t: Transmit) -> bool {
        let result = loop {
            match self.socket.send_to(&self.tx[..t.len], t.dst) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => break result,
            }
        };
        match result {
            Ok(_) => self.stats.datagrams_sent += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => self.stats.send_errors += 1,
        }
        true
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

impl<E> std::fmt::Debug for Driver<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("local_addr", &self.local_addr)
            .field("parked", &self.parked)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
