//! TCP streams, the fallback for networks that block UDP (`SocketId::stream` ids; the
//! contract is on `pierce_core::SocketId`): a client's stream to its server, connected when
//! the core asks ([`SocketRequest::Connect`](pierce_core::SocketRequest::Connect)), and a
//! server's accepted streams. Each carries datagrams framed by the core's
//! [`Deframer`]/[`Framer`]. Which stream to open or close, and when, is the core's decision;
//! this only moves bytes.
//!
//! Like the extra UDP sockets, every stream keeps one pending read inside the driver's own
//! future (no task is spawned), and the listener one pending accept; [`Streams::poll_next`]
//! polls them in turn, so neither a busy stream nor a connection flood starves the rest.
//! Writes are not futures: queued bytes are written whenever the driver flushes (after each
//! batch of transmits, and on every poll), until the socket blocks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use futures_lite::{future, ready};
use pierce_core::SocketId;
use pierce_core::framing::{DEFAULT_STREAM_BUFFER, Deframer, Framer};

use crate::rt::{self, TcpListener, TcpStream};

/// Default cap on concurrent accepted streams (`ServerOptions::max_streams`): a connection
/// over the cap is accepted and closed at once. 1024 streams hold at most 1024 ×
/// [`DEFAULT_STREAM_BUFFER`] (256 MiB) of queued output if no client reads, ~2 KiB each
/// otherwise.
pub const DEFAULT_MAX_STREAMS: usize = 1024;

/// Most stream ids there are: `SocketId::stream(n)` for n in 1..=0x7fff.
const MAX_STREAM_IDS: usize = 0x7fff;

/// How long the listener rests after a failed accept. A failure such as running out of file
/// descriptors leaves the connection in the kernel's backlog, so the listener stays readable
/// and an immediate retry would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Bytes of unread input a closing stream discards at most: closing a socket with unread
/// input makes the kernel reset the connection and drop what was still queued for the peer,
/// so a short drain first lets the last datagrams leave (runtime-mio does the same).
const CLOSE_DRAIN: usize = 16 * 1024;

/// A finished read: the bytes are in the deframer, which goes back into the next read.
pub(crate) struct ReadDone {
    pub(crate) deframer: Deframer,
    pub(crate) result: io::Result<usize>,
}

type Reading = Pin<Box<dyn Future<Output = ReadDone> + Send>>;
type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;
type Accepting = Pin<Box<dyn Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send>>;

fn read(io: TcpStream, mut deframer: Deframer) -> Reading {
    Box::pin(async move {
        let result = (&io).read(deframer.spare()).await;
        ReadDone { deframer, result }
    })
}

fn accept(listener: Arc<TcpListener>) -> Accepting {
    Box::pin(async move {
        let result = listener.accept().await;
        if result.is_err() {
            rt::sleep(ACCEPT_ERROR_PAUSE).await;
        }
        result
    })
}

/// What woke the driver on the stream side.
pub(crate) enum StreamWake {
    /// A connect the core asked for finished.
    Connected {
        id: SocketId,
        addr: SocketAddr,
        result: io::Result<TcpStream>,
    },
    /// The listener accepted a connection (or failed to).
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    /// A read on stream `id` finished: hand the frames to the core, then [`Streams::rearm`].
    Read { id: SocketId, done: ReadDone },
    /// Writing to stream `id` failed: it has ended.
    WriteFailed(SocketId),
}

/// Where a datagram for a stream went.
pub(crate) enum Push {
    Queued,
    /// The stream's queue is full: the datagram is dropped, as UDP would lose it.
    Full,
    /// No such stream (never connected, still connecting, or closed).
    Unknown,
}

struct Stream {
    io: TcpStream,
    /// The remote end: what `handle_datagram_on` is told the datagrams come from.
    peer: SocketAddr,
    /// The pending read; `None` while its result is with the driver.
    reading: Option<Reading>,
    framer: Framer,
}

impl Stream {
    fn new(io: TcpStream, peer: SocketAddr, buffer: usize) -> Self {
        let reading = Some(read(io.clone(), Deframer::default()));
        Self {
            io,
            peer,
            reading,
            framer: Framer::new(buffer),
        }
    }

    /// Writes what is queued until the socket blocks (`Pending`) or the queue is empty.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.framer.is_empty() {
            match ready!(Pin::new(&mut &self.io).poll_write(cx, self.framer.front())) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.framer.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Closes the stream without waiting: writes what the socket takes at once, discards a
    /// little unread input, shuts it down. Returns the bytes left unwritten.
    fn shut_down(mut self) -> usize {
        self.reading = None; // drops the read's clone of the socket too
        let mut cx = Context::from_waker(Waker::noop());
        let _ = self.poll_write_queued(&mut cx);
        let mut scratch = [0u8; 2048];
        let mut drained = 0;
        while drained < CLOSE_DRAIN {
            match Pin::new(&mut &self.io).poll_read(&mut cx, &mut scratch) {
                Poll::Ready(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
        let _ = self.io.shutdown(Shutdown::Both);
        self.framer.len()
    }
}

/// The driver's streams, and its listener if it accepts any.
pub(crate) struct Streams {
    open: BTreeMap<SocketId, Stream>,
    connecting: Vec<(SocketId, SocketAddr, Connecting)>,
    listener: Option<(Arc<TcpListener>, Accepting)>,
    /// Streams with bytes queued, written on the next flush.
    queued: BTreeSet<SocketId>,
    /// Streams whose write failed, reported by the next poll.
    failed: VecDeque<SocketId>,
    /// Where the next poll starts: after this stream (`PRIMARY` stands for the listener,
    /// which comes before the first stream in the rotation).
    cursor: SocketId,
    /// The next accepted stream's number (1..=0x7fff, cycling).
    next_id: u16,
    max_streams: usize,
    buffer: usize,
}

impl Default for Streams {
    fn default() -> Self {
        Self::new(None, DEFAULT_MAX_STREAMS, DEFAULT_STREAM_BUFFER)
    }
}

impl Streams {
    /// Streams accepted on `listener` (if any), at most `max_streams` at a time, each queueing
    /// at most `buffer` bytes of output.
    pub(crate) fn new(listener: Option<TcpListener>, max_streams: usize, buffer: usize) -> Self {
        let listener = listener.map(|l| {
            let l = Arc::new(l);
            (Arc::clone(&l), accept(l))
        });
        Self {
            open: BTreeMap::new(),
            connecting: Vec::new(),
            listener,
            queued: BTreeSet::new(),
            failed: VecDeque::new(),
            cursor: SocketId::PRIMARY,
            next_id: 1,
            max_streams: max_streams.clamp(1, MAX_STREAM_IDS),
            buffer,
        }
    }

    /// Where the listener accepts, if there is one.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
    }

    /// Starts connecting stream `id` to `addr` (replacing any stream of that id).
    pub(crate) fn connect(&mut self, id: SocketId, addr: SocketAddr) {
        let _ = self.close(id);
        let connecting = Box::pin(async move { TcpStream::connect(addr).await });
        self.connecting.push((id, addr, connecting));
    }

    /// Stream `id`'s connect succeeded: sets it up and returns its local address.
    pub(crate) fn connected(
        &mut self,
        id: SocketId,
        io: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<SocketAddr> {
        io.set_nodelay(true)?;
        let local = io.local_addr()?;
        self.open.insert(id, Stream::new(io, peer, self.buffer));
        Ok(local)
    }

    /// Names an accepted connection; `None` (and it is closed) over the cap.
    pub(crate) fn admit(&mut self, io: TcpStream, peer: SocketAddr) -> Option<SocketId> {
        if self.open.len() >= self.max_streams {
            return None;
        }
        let id = self.fresh_id()?;
        // Without it only latency suffers; a socket too broken to take it fails its read.
        let _ = io.set_nodelay(true);
        self.open.insert(id, Stream::new(io, peer, self.buffer));
        Some(id)
    }

    /// The next stream number not in use, cycling through 1..=0x7fff. Ids leave `open` only
    /// when the core closes them or is told they ended, so a free id is one the core knows
    /// is gone.
    fn fresh_id(&mut self) -> Option<SocketId> {
        for _ in 0..MAX_STREAM_IDS {
            let n = self.next_id;
            self.next_id = if n >= 0x7fff { 1 } else { n + 1 };
            let id = SocketId::stream(n);
            if !self.open.contains_key(&id) && !self.connecting.iter().any(|c| c.0 == id) {
                return Some(id);
            }
        }
        None
    }

    /// The remote address of stream `id`, if it is open.
    pub(crate) fn peer(&self, id: SocketId) -> Option<SocketAddr> {
        self.open.get(&id).map(|s| s.peer)
    }

    /// Queues a datagram for stream `id`.
    pub(crate) fn push(&mut self, id: SocketId, datagram: &[u8]) -> Push {
        let Some(s) = self.open.get_mut(&id) else {
            return Push::Unknown;
        };
        if s.framer.push(datagram) {
            self.queued.insert(id);
            Push::Queued
        } else {
            Push::Full
        }
    }

    /// Writes queued bytes until each socket blocks; a failed stream is reported by the next
    /// [`Streams::poll_next`].
    fn flush(&mut self, cx: &mut Context<'_>) {
        let (open, failed) = (&mut self.open, &mut self.failed);
        self.queued.retain(|id| {
            let Some(s) = open.get_mut(id) else {
                return false;
            };
            match s.poll_write_queued(cx) {
                Poll::Pending => true,
                Poll::Ready(Ok(())) => false,
                Poll::Ready(Err(_)) => {
                    failed.push_back(*id);
                    false
                }
            }
        });
    }

    /// [`Streams::flush`] with the calling task's waker.
    pub(crate) async fn flush_now(&mut self) {
        future::poll_fn(|cx| {
            self.flush(cx);
            Poll::Ready(())
        })
        .await;
    }

    /// The core closed stream `id` (or it ended): forgets it (and a connect in progress),
    /// after writing what the socket takes at once. Returns the bytes that were still queued
    /// and are dropped, or `None` if it was not open.
    pub(crate) fn close(&mut self, id: SocketId) -> Option<usize> {
        self.connecting.retain(|c| c.0 != id);
        self.queued.remove(&id);
        self.failed.retain(|f| *f != id);
        self.open.remove(&id).map(Stream::shut_down)
    }

    /// Starts the next read on stream `id` with the deframer its last read returned.
    pub(crate) fn rearm(&mut self, id: SocketId, deframer: Deframer) {
        if let Some(s) = self.open.get_mut(&id) {
            s.reading = Some(read(s.io.clone(), deframer));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    /// The next thing that happened on a stream, connect or the listener; pending while
    /// nothing did (forever without any). Flushes first.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<StreamWake> {
        self.flush(cx);
        if let Some(id) = self.failed.pop_front() {
            return Poll::Ready(StreamWake::WriteFailed(id));
        }
        for i in 0..self.connecting.len() {
            if let Poll::Ready(result) = self.connecting[i].2.as_mut().poll(cx) {
                let (id, addr, _) = self.connecting.swap_remove(i);
                return Poll::Ready(StreamWake::Connected { id, addr, result });
            }
        }
        // In turn: the streams after the cursor, the listener, the streams up to the cursor.
        let after = self.cursor;
        let later = (Bound::Excluded(after), Bound::Unbounded);
        if let Some(wake) = poll_reads(self.open.range_mut(later), &mut self.cursor, cx) {
            return Poll::Ready(wake);
        }
        if let Some((listener, accepting)) = &mut self.listener {
            if let Poll::Ready(r) = accepting.as_mut().poll(cx) {
                *accepting = accept(Arc::clone(listener));
                self.cursor = SocketId::PRIMARY;
                return Poll::Ready(StreamWake::Accepted(r));
            }
        }
        if after != SocketId::PRIMARY {
            if let Some(wake) = poll_reads(self.open.range_mut(..=after), &mut self.cursor, cx) {
                return Poll::Ready(wake);
            }
        }
        Poll::Pending
    }

    pub(crate) async fn next(&mut self) -> StreamWake {
        future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// The first finished read among `streams`, which then waits for [`Streams::rearm`].
fn poll_reads<'a>(
    streams: impl Iterator<Item = (&'a SocketId, &'a mut Stream)>,
    cursor: &mut SocketId,
    cx: &mut Context<'_>,
) -> Option<StreamWake> {
    for (id, s) in streams {
        let Some(reading) = &mut s.reading else {
            continue;
        };
        if let Poll::Ready(done) = reading.as_mut().poll(cx) {
            s.reading = None;
            *cursor = *id;
            return Some(StreamWake::Read { id: *id, done });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read as _;

    use super::*;

    /// A connected pair on loopback: (our end, its peer address, the other end).
    async fn pair(listener: &TcpListener) -> (TcpStream, SocketAddr, std::net::TcpStream) {
        let other = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, peer) = listener.accept().await.unwrap();
        (ours, peer, other)
    }

    #[test]
    fn accepted_streams_get_free_ids_cycling_under_the_cap() {
        async_io::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut streams = Streams::new(None, 3, 1024);
            streams.next_id = 0x7ffe;
            let mut others = Vec::new();
            let mut ids = Vec::new();
            for _ in 0..3 {
                let (io, peer, other) = pair(&listener).await;
                others.push(other);
                ids.push(streams.admit(io, peer).unwrap());
            }
            let expected = [0x7ffe, 0x7fff, 1].map(SocketId::stream);
            assert_eq!(ids, expected, "wraps past 0x7fff to 1");
            let (io, peer, _other) = pair(&listener).await;
            assert_eq!(streams.admit(io, peer), None, "over the cap");
            assert_eq!(streams.len(), 3);
            // A closed id is free again; ids in use are skipped.
            assert_eq!(streams.close(SocketId::stream(0x7fff)), Some(0));
            assert_eq!(streams.close(SocketId::stream(0x7fff)), None, "closed once");
            streams.next_id = 0x7ffe;
            let (io, peer, _other) = pair(&listener).await;
            assert_eq!(streams.admit(io, peer), Some(SocketId::stream(0x7fff)));
        });
    }

    #[test]
    fn frames_go_out_framed_and_a_full_queue_refuses() {
        async_io::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut streams = Streams::new(None, 8, 10);
            let (io, peer, mut other) = pair(&listener).await;
            let id = streams.admit(io, peer).unwrap();
            assert!(matches!(streams.push(id, b"abc"), Push::Queued));
            assert!(
                matches!(streams.push(id, b"defg"), Push::Full),
                "5 + 6 > 10"
            );
            assert!(matches!(
                streams.push(SocketId::stream(99), b"x"),
                Push::Unknown
            ));
            streams.flush_now().await;
            let mut got = [0u8; 5];
            other.read_exact(&mut got).unwrap();
            assert_eq!(got, [0, 3, b'a', b'b', b'c']);
            // A closed stream ends at the other side without a reset.
            assert_eq!(streams.close(id), Some(0));
            let mut rest = Vec::new();
            other.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        });
    }
}
