//! TCP streams for the fallback on networks that block UDP (`SocketId::stream` ids): one
//! [`Stream`] per connection, framed with the core's `Deframer`/`Framer` (2-byte big-endian
//! length + datagram), plus the pieces of I/O the driver needs: finishing a non-blocking
//! connect, reading frames up to a budget, writing what is queued until the socket blocks.
//! The driver keeps them in the core's `StreamTable` (ids, cap, queues, who hears of a close).
//! Which stream to open or close, and when, is the core's decision; the driver only carries
//! it out (`driver.rs`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;
use pierce_core::framing::{Deframer, FRAME_HEADER, Framer, MAX_STREAM_FRAME};

/// Connections one pump accepts at most; more wait for the next pump (which does not sleep).
/// Bounds what a connection flood costs one game frame, like the receive budget.
pub(crate) const ACCEPT_BUDGET: usize = 64;

/// Bytes one read of a stream takes from the socket per datagram of its budget: a peer that
/// sends nothing but empty frames (skipped, never counted as datagrams) must not keep one pump
/// reading forever.
const READ_BYTES_PER_DATAGRAM: usize = FRAME_HEADER + MAX_STREAM_FRAME;

/// One TCP stream of the driver.
pub(crate) struct Stream {
    pub(crate) io: TcpStream,
    /// The remote end: the server for a stream the core connected, the client for an
    /// accepted one. What `handle_datagram_on` is told the datagrams come from.
    pub(crate) peer: SocketAddr,
    /// The local end, once connected.
    pub(crate) local: Option<SocketAddr>,
    /// A connect the core asked for has not completed yet.
    pub(crate) connecting: bool,
    /// The stream may hold unread data (or the deframer whole frames): its id is in the
    /// driver's ready queue exactly when this is set. mio is edge-triggered, so it stays set
    /// until a read finds the socket empty.
    pub(crate) readable: bool,
    /// The socket refused bytes with `WouldBlock`: nothing more is written until a writable
    /// event. (Streams are registered READABLE | WRITABLE for their whole life; edge-triggered
    /// WRITABLE fires only once a blocked socket has room again, so that costs nothing.)
    pub(crate) write_blocked: bool,
    rx: Deframer,
    pub(crate) tx: Framer,
}

/// The table's view of a stream: its output queue.
impl AsMut<Framer> for Stream {
    fn as_mut(&mut self) -> &mut Framer {
        &mut self.tx
    }
}

/// How a read of a stream ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadEnd {
    /// The socket has nothing more now.
    Drained,
    /// The frame budget ran out with more to read.
    Budget,
    /// The stream ended: EOF (`None`), or an error, or a frame over `MAX_STREAM_FRAME`.
    Ended(Ended),
}

/// Why a stream ended by itself.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The other side closed it.
    Eof,
    /// Reset, or any other socket error.
    Error(io::ErrorKind),
    /// A length prefix over `MAX_STREAM_FRAME`: not a Pierce stream, or a broken one.
    FrameTooLong,
}

/// Whether a connect the core asked for is done.
#[derive(Debug)]
pub(crate) enum Connect {
    /// Still in progress (a spurious wakeup).
    Pending,
    /// Connected, from this local address.
    Done(SocketAddr),
    /// Failed.
    Failed(io::Error),
}

impl Stream {
    /// A stream whose connect was just started (the driver registers it for WRITABLE);
    /// `raw`: it carries bytes, not framed datagrams (`SocketRequest::ConnectRaw`).
    pub(crate) fn connecting(io: TcpStream, peer: SocketAddr, buffer: usize, raw: bool) -> Self {
        let mut s = Self::new(io, peer, None, true, buffer);
        if raw {
            s.rx = Deframer::raw();
            s.tx = Framer::raw(buffer);
        }
        s
    }

    /// An accepted stream.
    pub(crate) fn accepted(io: TcpStream, peer: SocketAddr, buffer: usize) -> Self {
        // Game traffic is small datagrams that must not wait for Nagle; best effort.
        let _ = io.set_nodelay(true);
        let local = io.local_addr().ok();
        Self::new(io, peer, local, false, buffer)
    }

    fn new(
        io: TcpStream,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        connecting: bool,
        buffer: usize,
    ) -> Self {
        Self {
            io,
            peer,
            local,
            connecting,
            readable: false,
            write_blocked: false,
            rx: Deframer::default(),
            tx: Framer::new(buffer),
        }
    }

    /// After an event on a connecting stream: mio's recipe (`TcpStream::connect` docs), an
    /// error from `take_error`, else connected once `peer_addr` answers. On success sets
    /// TCP_NODELAY and records the local address.
    pub(crate) fn finish_connect(&mut self) -> Connect {
        match self.io.take_error() {
            Ok(Some(e)) | Err(e) => return Connect::Failed(e),
            Ok(None) => {}
        }
        match self.io.peer_addr() {
            Ok(_) => {}
            Err(e) if is_in_progress(&e) => return Connect::Pending,
            Err(e) => return Connect::Failed(e),
        }
        let local = match self.io.local_addr() {
            Ok(a) => a,
            Err(e) => return Connect::Failed(e),
        };
        let _ = self.io.set_nodelay(true);
        self.connecting = false;
        self.local = Some(local);
        Connect::Done(local)
    }

    /// Reads and hands whole datagrams to `deliver` until the socket is empty, the stream
    /// ends, or `max` datagrams were delivered or `max` datagrams' worth of bytes read
    /// (whole frames already read go first, so a stream that ends delivers everything
    /// complete before it). Returns how many were delivered and why it stopped.
    pub(crate) fn read_frames(
        &mut self,
        max: usize,
        mut deliver: impl FnMut(&[u8]),
    ) -> (usize, ReadEnd) {
        let mut n = 0;
        let mut bytes_left = max.saturating_mul(READ_BYTES_PER_DATAGRAM);
        loop {
            let (k, framed) = self.rx.deliver(max - n, &mut deliver);
            n += k;
            if framed.is_err() {
                return (n, ReadEnd::Ended(Ended::FrameTooLong));
            }
            if n >= max || bytes_left == 0 {
                return (n, ReadEnd::Budget);
            }
            match self.io.read(self.rx.spare()) {
                Ok(0) => return (n, ReadEnd::Ended(Ended::Eof)),
                Ok(k) => {
                    self.rx.filled(k);
                    bytes_left = bytes_left.saturating_sub(k);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (n, ReadEnd::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (n, ReadEnd::Ended(Ended::Error(e.kind()))),
            }
        }
    }

    /// Writes queued bytes until the queue is empty or the socket blocks (then
    /// `write_blocked` is set). Does nothing while connecting or blocked.
    ///
    /// # Errors
    /// The stream failed (reset, broken pipe...): it is finished.
    pub(crate) fn write_queued(&mut self) -> io::Result<()> {
        if self.connecting || self.write_blocked {
            return Ok(());
        }
        let written = pierce_os::write_queued(&mut self.tx, |bytes| self.io.write(bytes))?;
        self.write_blocked = !written;
        Ok(())
    }

    /// Closes the stream at the core's request: what is queued goes out as far as the socket
    /// takes it now (no waiting), then the write side is shut down so the peer sees a clean
    /// end, and the socket is closed when `self` is dropped (the kernel finishes sending in
    /// the background). Returns the bytes that could not be written.
    pub(crate) fn shut_down(&mut self) -> usize {
        if !self.connecting {
            // Unread input would make the close a reset that drops what is still queued.
            pierce_os::discard_unread(|buf| self.io.read(buf));
            self.write_blocked = false;
            if self.write_queued().is_err() {
                self.write_blocked = true;
            }
            let _ = self.io.shutdown(Shutdown::Write);
        }
        self.tx.len()
    }
}

/// `peer_addr` on a socket whose connect has not finished: `ENOTCONN` (Linux, macOS,
/// Windows), or `WouldBlock` where a platform reports it so.
fn is_in_progress(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use pierce_core::framing::MAX_STREAM_FRAME;
    use std::time::{Duration, Instant};

    /// Polls a connecting stream until its connect is done or failed.
    fn finish(s: &mut Stream) -> Connect {
        let start = Instant::now();
        loop {
            match s.finish_connect() {
                Connect::Pending => {
                    assert!(start.elapsed() < Duration::from_secs(5), "connect hangs");
                    std::thread::sleep(Duration::from_millis(1));
                }
                done => return done,
            }
        }
    }

    /// A connected pair: a mio stream (ours) and a blocking std stream (the other side).
    fn pair() -> (Stream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut ours = Stream::connecting(TcpStream::connect(addr).unwrap(), addr, 4096, false);
        let (theirs, _) = listener.accept().unwrap();
        if let Connect::Failed(e) = finish(&mut ours) {
            panic!("connect failed: {e}");
        }
        (ours, theirs)
    }

    /// Reads until `want` frames arrived or the stream stops with something other than
    /// `Drained`.
    fn read_all(s: &mut Stream, want: usize) -> (Vec<Vec<u8>>, ReadEnd) {
        let mut got = Vec::new();
        let start = Instant::now();
        loop {
            let (_, end) = s.read_frames(usize::MAX, |f| got.push(f.to_vec()));
            if end != ReadEnd::Drained || got.len() >= want {
                return (got, end);
            }
            assert!(start.elapsed() < Duration::from_secs(5), "frames missing");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn frames_written_in_pieces_arrive_whole_and_eof_ends_the_stream() {
        let (mut ours, mut theirs) = pair();
        assert!(ours.io.nodelay().unwrap());
        let mut wire = Vec::new();
        for d in [&b"one"[..], &[7u8; 700][..], b"three"] {
            wire.extend_from_slice(&(d.len() as u16).to_be_bytes());
            wire.extend_from_slice(d);
        }
        for piece in wire.chunks(5) {
            theirs.write_all(piece).unwrap();
        }
        drop(theirs);
        let (got, end) = read_all(&mut ours, 3);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], vec![7u8; 700]);
        let end = if end == ReadEnd::Drained {
            read_all(&mut ours, 0).1
        } else {
            end
        };
        assert_eq!(end, ReadEnd::Ended(Ended::Eof));
    }

    #[test]
    fn the_budget_stops_a_read_and_the_rest_comes_next_time() {
        let (mut ours, mut theirs) = pair();
        for i in 0..10u8 {
            theirs.write_all(&[0, 1, i]).unwrap();
        }
        let (mut got, start) = (Vec::new(), Instant::now());
        while got.len() < 10 {
            let (n, end) = ours.read_frames(3, |f| got.push(f[0]));
            assert!(n <= 3);
            if end == ReadEnd::Drained {
                assert!(start.elapsed() < Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn a_stream_of_empty_frames_cannot_hold_a_read_forever() {
        let (mut ours, mut theirs) = pair();
        // More empty frames than one datagram's worth of bytes, then one real datagram.
        theirs
            .write_all(&vec![0u8; 3 * READ_BYTES_PER_DATAGRAM])
            .unwrap();
        theirs.write_all(&[0, 1, 42]).unwrap();
        let (mut got, mut budgets, start) = (Vec::new(), 0, Instant::now());
        while got.is_empty() {
            match ours.read_frames(1, |f| got.push(f.to_vec())).1 {
                ReadEnd::Budget => budgets += 1,
                ReadEnd::Drained => std::thread::sleep(Duration::from_millis(1)),
                ReadEnd::Ended(e) => panic!("ended: {e:?}"),
            }
            assert!(start.elapsed() < Duration::from_secs(5), "frame missing");
        }
        assert_eq!(got, vec![vec![42]]);
        assert!(budgets >= 2, "the empty frames took {budgets} budgets");
    }

    #[test]
    fn an_oversize_length_ends_the_stream() {
        let (mut ours, mut theirs) = pair();
        let too_long = u16::try_from(MAX_STREAM_FRAME + 1).unwrap();
        theirs.write_all(&too_long.to_be_bytes()).unwrap();
        let (got, end) = read_all(&mut ours, 1);
        assert!(got.is_empty());
        assert_eq!(end, ReadEnd::Ended(Ended::FrameTooLong));
    }

    #[test]
    fn queued_datagrams_are_framed_and_flushed_by_shut_down() {
        let (mut ours, mut theirs) = pair();
        assert!(ours.tx.push(b"hello"));
        assert!(ours.tx.push(b"world"));
        assert!(!ours.tx.push(&[0; 5000]), "over the 4096-byte cap");
        assert_eq!(ours.shut_down(), 0);
        drop(ours);
        let mut all = Vec::new();
        theirs.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"\x00\x05hello\x00\x05world");
    }

    #[test]
    fn a_refused_connect_fails() {
        // A port that was just free: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut s = Stream::connecting(TcpStream::connect(addr).unwrap(), addr, 4096, false);
        if let Connect::Done(a) = finish(&mut s) {
            panic!("connected to nothing from {a}");
        }
    }
}
