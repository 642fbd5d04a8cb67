//! A server's relay on threads of its own: each thread runs one [`Forwarder`] on its own
//! socket of a reuseport group ([`pierce_os::bind_relay_group`]: the kernel hands each relay
//! packet to the thread whose forwarder owns its session), reading and sending in batches,
//! while the server's thread keeps sessions, handshakes, groups and everything else.
//!
//! The two sides talk through channels: the server's [`ForwardUpdate`]s go to every thread
//! (waking it), and what the threads hand back (their [`ForwardReport`]s, and any datagram
//! that is not theirs) goes to the server's thread (waking its driver). A relayed datagram
//! itself crosses no channel and allocates nothing: it is read into the thread's receive
//! batch, checked, and its new header and peer packet are written into the thread's send
//! batch.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use pierce_core::{
    Endpoint as _, Forward, ForwardReport, ForwardUpdate, Forwarder, MAX_DATAGRAM_SIZE, Server,
    ServerStats, SocketId, Transmit,
};
use pierce_os::{DriverStats, is_stray_icmp};

use crate::Driver;
use crate::batch::{self, BATCH, RecvBatch, SendQueue, Sent};

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);

/// Datagrams a relay thread reads before it looks at its channel and timers again.
const READ_BUDGET: usize = 1024;

/// Datagrams waiting for the server's thread, at most (more are dropped and counted): a
/// flood of datagrams the kernel did not steer cannot grow memory.
const HANDOFF_QUEUE: usize = 4096;

/// How often a relay thread publishes its counters.
const STATS_EVERY: Duration = Duration::from_millis(100);

/// What a relay thread hands the server's thread.
enum Handoff {
    Report(ForwardReport),
    /// A datagram the forwarder did not take (not a relay packet, or for a TCP client).
    Datagram(SocketAddr, Vec<u8>),
}

struct Thread {
    handle: Option<JoinHandle<io::Result<()>>>,
    updates: Sender<ForwardUpdate>,
    waker: Arc<Waker>,
    stats: Arc<Mutex<(ServerStats, DriverStats)>>,
}

/// The relay threads of one server: see the module documentation.
pub struct RelayThreads {
    threads: Vec<Thread>,
    reports: Receiver<Handoff>,
    datagrams: Receiver<Handoff>,
    stop: Arc<AtomicBool>,
    /// Datagrams the threads could not hand over (the queue was full).
    handoff_drops: Arc<std::sync::atomic::AtomicU64>,
}

impl RelayThreads {
    /// Starts one thread per socket of `sockets` (the relay sockets of a reuseport group,
    /// in steering order: socket `i` gets the relay packets of forwarder `i`), each with
    /// forwarder `i` of `driver`'s server (whose config must have `relay_shards` equal to
    /// the number of sockets).
    ///
    /// # Errors
    /// A poller or waker could not be made, or the server refused a forwarder (a wrong
    /// count).
    pub fn start(
        driver: &mut Driver<Server>,
        sockets: Vec<std::net::UdpSocket>,
    ) -> io::Result<Self> {
        let control = driver.waker()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (report_tx, reports) = mpsc::channel();
        let (datagram_tx, datagrams) = mpsc::sync_channel(HANDOFF_QUEUE);
        let handoff_drops = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut threads = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            let index = u16::try_from(i).map_err(|_| io::Error::other("too many relay threads"))?;
            let forwarder = driver.endpoint().forwarder(index).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("relay forwarder: {e}"))
            })?;
            // (Sending whole datagrams: a relayed path-MTU probe must not be fragmented here.)
            let mut socket = crate::driver::prepare(socket)?;
            let offload = driver.offload();
            batch::set_gro(&socket, offload);
            let poll = Poll::new()?;
            poll.registry()
                .register(&mut socket, SOCKET, Interest::READABLE)?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let (updates, updates_rx) = mpsc::channel();
            let stats = Arc::new(Mutex::new((ServerStats::default(), DriverStats::default())));
            let local = socket.local_addr()?;
            let mut worker = Worker {
                out: Out {
                    socket,
                    local,
                    poll,
                    writable_interest: false,
                    gso: offload,
                    tx: SendQueue::new(),
                    stats: DriverStats::default(),
                },
                forwarder,
                updates: updates_rx,
                reports: report_tx.clone(),
                datagrams: datagram_tx.clone(),
                control: control.clone(),
                stop: stop.clone(),
                shared: stats.clone(),
                handoff_drops: handoff_drops.clone(),
                stats: ServerStats::default(),
                rx: RecvBatch::new(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("pierce-relay-{i}"))
                .spawn(move || worker.run())?;
            threads.push(Thread {
                handle: Some(handle),
                updates,
                waker,
                stats,
            });
        }
        Ok(Self {
            threads,
            reports,
            datagrams,
            stop,
            handoff_drops,
        })
    }

    /// Relay threads running.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// After each [`Driver::pump`] of the server's thread: what the relay threads handed
    /// back goes to the server (its output leaves on the next pump), and the server's
    /// changes go to every relay thread.
    ///
    /// # Errors
    /// A relay thread ended (its socket failed, or it panicked): the error says which.
    pub fn exchange(&mut self, driver: &mut Driver<Server>) -> io::Result<()> {
        let now = Instant::now();
        let server = driver.endpoint_mut();
        while let Ok(h) = self
            .reports
            .try_recv()
            .or_else(|_| self.datagrams.try_recv())
        {
            match h {
                Handoff::Report(r) => server.handle_forward_report(now, r),
                Handoff::Datagram(from, bytes) => {
                    server.handle_datagram_on(now, SocketId::PRIMARY, from, &bytes);
                }
            }
        }
        let mut sent = false;
        while let Some(u) = server.poll_forward_update() {
            for t in &self.threads {
                // A thread that ended is reported below.
                let _ = t.updates.send(u.clone());
            }
            sent = true;
        }
        if sent {
            for t in &self.threads {
                let _ = t.waker.wake();
            }
        }
        for (i, t) in self.threads.iter_mut().enumerate() {
            if t.handle.as_ref().is_some_and(JoinHandle::is_finished) {
                let result = t.handle.take().map(JoinHandle::join);
                let why = match result {
                    Some(Ok(Err(e))) => e.to_string(),
                    Some(Err(_)) => "it panicked".to_owned(),
                    _ => "it stopped".to_owned(),
                };
                return Err(io::Error::other(format!("relay thread {i} ended: {why}")));
            }
        }
        Ok(())
    }

    /// The relay threads' counters, summed (add them to the server's with
    /// [`ServerStats::add_forwarder`]); and their sockets' (datagrams sent, send errors),
    /// plus datagrams dropped because the server's thread fell behind, in
    /// `DriverStats::unknown_socket_drops`. As of their last publication (every 100 ms).
    pub fn stats(&self) -> (ServerStats, DriverStats) {
        let mut s = ServerStats::default();
        let mut d = DriverStats::default();
        for t in &self.threads {
            let (ts, td) = *t.stats.lock().unwrap_or_else(PoisonError::into_inner);
            s.add_forwarder(&ts);
            d.datagrams_received += td.datagrams_received;
            d.datagrams_sent += td.datagrams_sent;
            d.send_errors += td.send_errors;
            d.send_too_large += td.send_too_large;
            d.recv_errors_ignored += td.recv_errors_ignored;
        }
        d.unknown_socket_drops += self.handoff_drops.load(Ordering::Relaxed);
        (s, d)
    }

    /// Stops the threads and waits for them.
    ///
    /// # Errors
    /// The first thread that had failed, as [`RelayThreads::exchange`].
    pub fn stop(mut self) -> io::Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let mut first = Ok(());
        for (i, t) in self.threads.iter_mut().enumerate() {
            let _ = t.waker.wake();
            let Some(h) = t.handle.take() else { continue };
            let result = match h.join() {
                Ok(r) => r,
                Err(_) => Err(io::Error::other("it panicked")),
            };
            if let (Err(e), Ok(())) = (result, &first) {
                first = Err(io::Error::other(format!("relay thread {i} ended: {e}")));
            }
        }
        first
    }
}

impl Drop for RelayThreads {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// One relay thread's state.
struct Worker {
    out: Out,
    forwarder: Forwarder,
    updates: Receiver<ForwardUpdate>,
    reports: Sender<Handoff>,
    datagrams: SyncSender<Handoff>,
    control: Arc<Waker>,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<(ServerStats, DriverStats)>>,
    handoff_drops: Arc<std::sync::atomic::AtomicU64>,
    stats: ServerStats,
    rx: RecvBatch,
}

/// A relay thread's socket and what waits to be sent on it.
struct Out {
    socket: UdpSocket,
    /// Its address (its family says how destinations are written: [`pierce_os::for_socket`]).
    local: SocketAddr,
    poll: Poll,
    writable_interest: bool,
    /// The socket may still try GSO (see [`batch::send`]).
    gso: bool,
    tx: SendQueue,
    stats: DriverStats,
}

impl Worker {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(8);
        let mut published = Instant::now();
        let mut readable = true;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = if readable && !self.out.writable_interest {
                Some(Duration::ZERO)
            } else {
                let until = self.forwarder.poll_timeout().map(|t| t.at);
                let until = until.map_or(STATS_EVERY, |at| at.saturating_duration_since(now));
                Some(until.min(STATS_EVERY))
            };
            match self.out.poll.poll(&mut events, wait) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for e in events.iter() {
                if e.token() == SOCKET {
                    readable |= e.is_readable();
                }
            }
            loop {
                match self.updates.try_recv() {
                    Ok(u) => self.forwarder.handle_update(&u),
                    Err(TryRecvError::Empty) => break,
                    // The server is gone: so is the relay.
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            let now = Instant::now();
            if !self.out.send_queued()? {
                readable = true; // not read while blocked: data may be waiting
            } else if readable {
                readable = self.receive(now)?;
            }
            if self.forwarder.poll_timeout().is_some_and(|t| t.at <= now) {
                self.forwarder.handle_timeout(now);
            }
            let mut handed = false;
            while let Some(r) = self.forwarder.poll_report() {
                let _ = self.reports.send(Handoff::Report(r));
                handed = true;
            }
            if handed {
                let _ = self.control.wake();
            }
            if now.saturating_duration_since(published) >= STATS_EVERY {
                *self.shared.lock().unwrap_or_else(PoisonError::into_inner) =
                    (self.stats, self.out.stats);
                published = now;
            }
        }
        Ok(())
    }

    /// Reads and forwards up to [`READ_BUDGET`] datagrams; whether the socket may still
    /// hold some.
    fn receive(&mut self, now: Instant) -> io::Result<bool> {
        let Self {
            out,
            forwarder,
            datagrams,
            control,
            handoff_drops,
            stats,
            rx,
            ..
        } = self;
        let mut n = 0;
        let mut handed = false;
        let more = loop {
            if n >= READ_BUDGET {
                break true;
            }
            let got = match rx.recv(&out.socket, BATCH) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_stray_icmp(&e) => {
                    out.stats.recv_errors_ignored += 1;
                    n += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            n += got.count;
            out.stats.datagrams_received += got.count as u64;
            for i in 0..got.count {
                let (from, datagram) = rx.get(i);
                match forwarder.handle_datagram(now, SocketId::PRIMARY, from, datagram, stats) {
                    Forward::Relay {
                        dst, header, peer, ..
                    } => {
                        let len = header.len() + peer.len();
                        let Some(dst) = pierce_os::for_socket(dst, out.local) else {
                            out.stats.send_errors += 1;
                            continue;
                        };
                        if len > MAX_DATAGRAM_SIZE {
                            out.stats.send_errors += 1;
                            continue;
                        }
                        let slot = out.tx.slot_mut();
                        slot[..header.len()].copy_from_slice(&header);
                        slot[header.len()..len].copy_from_slice(&datagram[peer]);
                        out.tx.push(Transmit {
                            dst,
                            len,
                            socket: SocketId::PRIMARY,
                            ttl: None,
                        });
                        if out.tx.is_full() && !out.send_queued()? {
                            // Blocked: the rest of this batch is dropped like datagrams lost
                            // on the way (the socket's send buffer is full).
                            out.stats.send_errors += (got.count - i - 1) as u64;
                            break;
                        }
                    }
                    Forward::Control => {
                        let h = Handoff::Datagram(from, datagram.to_vec());
                        match datagrams.try_send(h) {
                            Ok(()) => handed = true,
                            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                                handoff_drops.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    // (A shard hands unknown sessions over as Control: never Unknown.)
                    Forward::Dropped | Forward::Unknown { .. } => {}
                }
            }
            if !out.send_queued()? {
                break true;
            }
            if got.drained {
                break false;
            }
        };
        if handed {
            let _ = control.wake();
        }
        Ok(more)
    }
}

impl Out {
    /// Sends what is queued; `false` if the socket blocked (WRITABLE is then registered and
    /// the rest stays queued).
    fn send_queued(&mut self) -> io::Result<bool> {
        let mut blocked = false;
        while self.tx.front_socket().is_some() {
            let (socket, gso) = (&self.socket, &mut self.gso);
            let sent = (self.tx).send_run(&mut self.stats, |run| batch::send(socket, run, gso));
            if sent == Sent::Blocked {
                blocked = true;
                break;
            }
        }
        if self.writable_interest != blocked {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            self.poll
                .registry()
                .reregister(&mut self.socket, SOCKET, interest)?;
            self.writable_interest = blocked;
        }
        Ok(!blocked)
    }
}
