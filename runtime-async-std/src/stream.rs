//! TCP streams, the fallback for networks that block UDP (`SocketId::stream` ids; the
//! contract is on `pierce_core::SocketId`): a client's stream to its server, connected when
//! the core asks ([`SocketRequest::Connect`](pierce_core::SocketRequest::Connect)), and a
//! server's accepted streams. Each carries datagrams framed by the core's
//! [`Deframer`]/[`Framer`], and all are kept in the core's [`StreamTable`] (ids, cap, queues,
//! who hears of a close). Which stream to open or close, and when, is the core's decision;
//! this only moves bytes.
//!
//! Like the extra UDP sockets, every stream keeps one pending future inside the driver's own
//! future (no task is spawned): its connect, then one read at a time; the listener keeps one
//! pending accept. [`Streams::poll_next`] polls them in turn, so neither a busy stream nor a
//! connection flood starves the rest. Writes are not futures: queued bytes are written
//! whenever the driver flushes (after each batch of transmits, and on every poll), until the
//! socket blocks.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use pierce_core::SocketId;
use pierce_core::framing::{DEFAULT_STREAM_BUFFER, Deframer, Framer};
use pierce_core::streams::{DEFAULT_MAX_STREAMS, Push, Report, StreamTable};

use crate::rt::{self, TcpListener, TcpStream};

/// How long the listener rests after a failed accept. A failure such as running out of file
/// descriptors leaves the connection in the kernel's backlog, so the listener stays readable
/// and an immediate retry would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

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
    /// A connect the core asked for finished: the stream's local address, or why it failed
    /// (then [`Streams::ended`] reports it).
    Connected {
        id: SocketId,
        result: io::Result<SocketAddr>,
    },
    /// The listener accepted a connection (or failed to).
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    /// A read on stream `id` finished: hand the frames to the core, then [`Streams::rearm`].
    Read { id: SocketId, done: ReadDone },
    /// Writing to stream `id` failed: it has ended.
    WriteFailed(SocketId),
}

/// The future a stream is waiting on.
enum Pending {
    Connect(Connecting),
    Read(Reading),
}

struct Stream {
    /// The socket, once connected.
    io: Option<TcpStream>,
    /// The remote end: what `handle_datagram_on` is told the datagrams come from.
    peer: SocketAddr,
    /// The pending connect or read; `None` while a read's result is with the driver.
    pending: Option<Pending>,
    framer: Framer,
    /// Bytes, not framed datagrams (`SocketRequest::ConnectRaw`).
    raw: bool,
}

/// The table's view of a stream: its output queue.
impl AsMut<Framer> for Stream {
    fn as_mut(&mut self) -> &mut Framer {
        &mut self.framer
    }
}

impl Stream {
    /// A stream being connected to `peer` (`raw`: carrying bytes, not framed datagrams).
    fn connecting(peer: SocketAddr, buffer: usize, raw: bool) -> Self {
        let connect = Box::pin(async move { TcpStream::connect(peer).await });
        Self {
            io: None,
            peer,
            pending: Some(Pending::Connect(connect)),
            framer: if raw {
                Framer::raw(buffer)
            } else {
                Framer::new(buffer)
            },
            raw,
        }
    }

    /// An accepted stream, reading.
    fn accepted(io: TcpStream, peer: SocketAddr, buffer: usize) -> Self {
        // Without it only latency suffers; a socket too broken to take it fails its read.
        let _ = io.set_nodelay(true);
        Self {
            pending: Some(Pending::Read(read(io.clone(), Deframer::default()))),
            io: Some(io),
            peer,
            framer: Framer::new(buffer),
            raw: false,
        }
    }

    /// Its connect succeeded: sets it up, starts reading, and returns its local address.
    fn open(&mut self, io: TcpStream) -> io::Result<SocketAddr> {
        io.set_nodelay(true)?;
        let local = io.local_addr()?;
        let deframer = if self.raw {
            Deframer::raw()
        } else {
            Deframer::default()
        };
        self.pending = Some(Pending::Read(read(io.clone(), deframer)));
        self.io = Some(io);
        Ok(local)
    }

    /// What finished on this stream, if anything.
    fn poll_pending(&mut self, id: SocketId, cx: &mut Context<'_>) -> Option<StreamWake> {
        let wake = match self.pending.as_mut()? {
            Pending::Connect(connect) => match connect.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    self.pending = None;
                    let result = result.and_then(|io| self.open(io));
                    StreamWake::Connected { id, result }
                }
                Poll::Pending => return None,
            },
            Pending::Read(reading) => match reading.as_mut().poll(cx) {
                Poll::Ready(done) => {
                    self.pending = None;
                    StreamWake::Read { id, done }
                }
                Poll::Pending => return None,
            },
        };
        Some(wake)
    }

    /// Writes what is queued until the socket blocks (`Pending`) or the queue is empty.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(io) = &self.io else {
            return Poll::Ready(Ok(())); // connecting: nothing is queued before it connects
        };
        // `Pending` reads as `WouldBlock`; the waker is registered for when it has room.
        let written = pierce_os::write_queued(&mut self.framer, |bytes| {
            match Pin::new(&mut &*io).poll_write(cx, bytes) {
                Poll::Ready(result) => result,
                Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match written {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Closes the stream without waiting: writes what the socket takes at once, discards a
    /// little unread input, shuts it down. Returns the bytes left unwritten.
    fn shut_down(mut self) -> usize {
        self.pending = None; // drops the read's clone of the socket too (or the connect)
        let mut cx = Context::from_waker(Waker::noop());
        let _ = self.poll_write_queued(&mut cx);
        if let Some(io) = &self.io {
            // Unread input would make the close a reset that drops what is still queued.
            pierce_os::discard_unread(|buf| match Pin::new(&mut &*io).poll_read(&mut cx, buf) {
                Poll::Ready(result) => result,
                Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            });
            let _ = io.shutdown(Shutdown::Both);
        }
        self.framer.len()
    }
}

/// The driver's streams, and its listener if it accepts any.
pub(crate) struct Streams {
    table: StreamTable<Stream>,
    listener: Option<(Arc<TcpListener>, Accepting)>,
    /// Streams whose write failed, reported by the next poll.
    failed: VecDeque<SocketId>,
    /// Where the next poll starts: after this stream (`PRIMARY` stands for the listener,
    /// which comes before the first stream in the rotation).
    cursor: SocketId,
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
            table: StreamTable::new(max_streams),
            listener,
            failed: VecDeque::new(),
            cursor: SocketId::PRIMARY,
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
    pub(crate) fn connect(&mut self, id: SocketId, addr: SocketAddr, raw: bool) {
        let _ = self.close(id);
        self.table
            .connecting(id, Stream::connecting(addr, self.buffer, raw));
    }

    /// Stream `id`'s connect succeeded and the core is told so: datagrams go down it now.
    pub(crate) fn connected(&mut self, id: SocketId) {
        let _ = self.table.connected(id);
    }

    /// Names an accepted connection; `None` (and it is closed) over the cap.
    pub(crate) fn admit(&mut self, io: TcpStream, peer: SocketAddr) -> Option<SocketId> {
        self.table
            .accept(Stream::accepted(io, peer, self.buffer))
            .ok()
    }

    /// The remote address of stream `id`, if it is held.
    pub(crate) fn peer(&self, id: SocketId) -> Option<SocketAddr> {
        self.table.get(id).map(|s| s.peer)
    }

    /// Queues a datagram for stream `id`.
    pub(crate) fn push(&mut self, id: SocketId, datagram: &[u8]) -> Push {
        self.table.push(id, datagram)
    }

    /// Writes queued bytes until each socket blocks; a failed stream is reported by the next
    /// [`Streams::poll_next`].
    fn flush(&mut self, cx: &mut Context<'_>) {
        for id in self.table.take_unwritten() {
            let Some(s) = self.table.get_mut(id) else {
                continue;
            };
            match s.poll_write_queued(cx) {
                Poll::Pending => self.table.mark_unwritten(id),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => self.failed.push_back(id),
            }
        }
    }

    /// [`Streams::flush`] with the calling task's waker.
    pub(crate) async fn flush_now(&mut self) {
        future::poll_fn(|cx| {
            self.flush(cx);
            Poll::Ready(())
        })
        .await;
    }

    /// The core closed stream `id`: forgets it (connected or connecting), after writing what
    /// the socket takes at once. Returns the bytes that were still queued and are dropped, or
    /// `None` if it was not held.
    pub(crate) fn close(&mut self, id: SocketId) -> Option<usize> {
        self.failed.retain(|f| *f != id);
        self.table.close(id).map(Stream::shut_down)
    }

    /// Stream `id` ended by itself (or its connect failed): forgets it and says what the core
    /// must be told; `None` if the core closed it first.
    pub(crate) fn ended(&mut self, id: SocketId) -> Option<Report> {
        self.failed.retain(|f| *f != id);
        let (stream, report) = self.table.ended(id)?;
        stream.shut_down();
        Some(report)
    }

    /// Starts the next read on stream `id` with the deframer its last read returned.
    pub(crate) fn rearm(&mut self, id: SocketId, deframer: Deframer) {
        let Some(s) = self.table.get_mut(id) else {
            return; // closed since
        };
        if let Some(io) = &s.io {
            s.pending = Some(Pending::Read(read(io.clone(), deframer)));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The next thing that happened on a stream (a connect, a read) or the listener; pending
    /// while nothing did (forever without any). Flushes first.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<StreamWake> {
        self.flush(cx);
        if let Some(id) = self.failed.pop_front() {
            return Poll::Ready(StreamWake::WriteFailed(id));
        }
        // In turn: the streams after the cursor, the listener, the streams up to the cursor.
        let after = self.cursor;
        let later = (Bound::Excluded(after), Bound::Unbounded);
        if let Some(wake) = poll_streams(self.table.range_mut(later), &mut self.cursor, cx) {
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
            let earlier = self.table.range_mut(..=after);
            if let Some(wake) = poll_streams(earlier, &mut self.cursor, cx) {
                return Poll::Ready(wake);
            }
        }
        Poll::Pending
    }

    pub(crate) async fn next(&mut self) -> StreamWake {
        future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// The first stream among `streams` whose connect or read finished; a read then waits for
/// [`Streams::rearm`].
fn poll_streams<'a>(
    streams: impl Iterator<Item = (SocketId, &'a mut Stream)>,
    cursor: &mut SocketId,
    cx: &mut Context<'_>,
) -> Option<StreamWake> {
    for (id, s) in streams {
        if let Some(wake) = s.poll_pending(id, cx) {
            *cursor = id;
            return Some(wake);
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
    fn accepted_streams_are_named_and_capped_by_the_table() {
        async_io::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut streams = Streams::new(None, 3, 1024);
            let mut others = Vec::new();
            let mut ids = Vec::new();
            for _ in 0..3 {
                let (io, peer, other) = pair(&listener).await;
                others.push(other);
                ids.push(streams.admit(io, peer).unwrap());
            }
            assert_eq!(ids, [1, 2, 3].map(SocketId::stream));
            let (io, peer, _other) = pair(&listener).await;
            assert_eq!(streams.admit(io, peer), None, "over the cap");
            assert_eq!(streams.len(), 3);
            // A closed stream frees its slot; the core heard nothing, and hears nothing later.
            assert_eq!(streams.close(SocketId::stream(2)), Some(0));
            assert_eq!(streams.ended(SocketId::stream(2)), None);
            let (io, peer, _other) = pair(&listener).await;
            assert_eq!(streams.admit(io, peer), Some(SocketId::stream(4)));
            assert_eq!(streams.ended(ids[0]), Some(Report::Closed));
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
