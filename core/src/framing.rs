//! Datagrams over a TCP stream (the fallback for networks that block UDP): each datagram is a
//! 2-byte big-endian length followed by its bytes. Runtimes and the simulator use these two
//! halves so every transport frames the same way; neither touches a socket.
//!
//! [`Deframer`] takes bytes as they come off a stream and yields whole datagrams; its buffer
//! never grows past one maximal frame. [`Framer`] queues datagrams for a stream with a hard
//! cap on buffered bytes: a datagram that does not fit is refused (the caller counts it as
//! lost, as UDP would lose it), so a peer that stops reading cannot make memory grow.

use std::collections::VecDeque;

/// The longest datagram accepted on a stream; a longer length prefix is a protocol error and
/// the stream should be closed. Larger than any datagram the core sends.
pub const MAX_STREAM_FRAME: usize = crate::RECV_SCRATCH_SIZE;

/// Bytes of the length prefix.
pub const FRAME_HEADER: usize = 2;

/// The stream sent a length over [`MAX_STREAM_FRAME`]: close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTooLong(pub usize);

impl std::fmt::Display for FrameTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stream frame of {} bytes (at most {MAX_STREAM_FRAME})",
            self.0
        )
    }
}

impl std::error::Error for FrameTooLong {}

/// Splits a byte stream into datagrams (or, [`Deframer::raw`], hands the bytes on as read).
#[derive(Debug)]
pub struct Deframer {
    /// No frames: every byte read is delivered as it comes.
    raw: bool,
    buf: Box<[u8]>,
    /// Bytes of `buf` holding data not yet returned.
    len: usize,
    /// Bytes of `buf` already returned by the last `next_frame` (consumed lazily).
    consumed: usize,
}

impl Default for Deframer {
    fn default() -> Self {
        Self {
            raw: false,
            buf: vec![0u8; FRAME_HEADER + MAX_STREAM_FRAME].into_boxed_slice(),
            len: 0,
            consumed: 0,
        }
    }
}

impl Deframer {
    /// A deframer for a stream of bytes that are not framed
    /// ([`crate::SocketRequest::ConnectRaw`]): [`Deframer::next_frame`] returns whatever has
    /// arrived (at most a buffer of [`FRAME_HEADER`] + [`MAX_STREAM_FRAME`] bytes at a time).
    pub fn raw() -> Self {
        Self {
            raw: true,
            ..Self::default()
        }
    }

    /// Where to read the next bytes from the stream into (never empty); report how many
    /// arrived with [`Deframer::filled`].
    pub fn spare(&mut self) -> &mut [u8] {
        self.compact();
        &mut self.buf[self.len..]
    }

    /// `n` bytes were written into [`Deframer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }

    /// Copies `bytes` in, as much as fits; returns how many were taken.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = bytes.len().min(spare.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
        n
    }

    /// The next whole datagram, if one has arrived. Empty frames are skipped.
    ///
    /// # Errors
    /// [`FrameTooLong`] if the stream announced a frame over [`MAX_STREAM_FRAME`]; nothing
    /// more can be read from it.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameTooLong> {
        if self.raw {
            let start = self.consumed;
            self.consumed = self.len;
            return Ok(Some(&self.buf[start..self.len]).filter(|b| !b.is_empty()));
        }
        loop {
            let avail = &self.buf[self.consumed..self.len];
            if avail.len() < FRAME_HEADER {
                return Ok(None);
            }
            let n = usize::from(u16::from_be_bytes([avail[0], avail[1]]));
            if n > MAX_STREAM_FRAME {
                return Err(FrameTooLong(n));
            }
            if avail.len() < FRAME_HEADER + n {
                return Ok(None);
            }
            let start = self.consumed + FRAME_HEADER;
            self.consumed = start + n;
            if n > 0 {
                return Ok(Some(&self.buf[start..start + n]));
            }
        }
    }

    /// Hands up to `max` whole datagrams, in order, to `deliver` (a runtime's budget per
    /// read); returns how many, and `Err` once the stream announced a frame over
    /// [`MAX_STREAM_FRAME`] (the datagrams before it were delivered; nothing more can be read
    /// from it).
    pub fn deliver(
        &mut self,
        max: usize,
        mut deliver: impl FnMut(&[u8]),
    ) -> (usize, Result<(), FrameTooLong>) {
        let mut n = 0;
        while n < max {
            match self.next_frame() {
                Ok(Some(frame)) => {
                    deliver(frame);
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => return (n, Err(e)),
            }
        }
        (n, Ok(()))
    }

    /// Bytes held that are not a whole frame yet.
    pub fn pending(&self) -> usize {
        self.len - self.consumed
    }

    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.len, 0);
            self.len -= self.consumed;
            self.consumed = 0;
        }
    }
}

/// Queues framed datagrams for a stream, up to a byte cap (or, [`Framer::raw`], bytes
/// without frames).
#[derive(Debug)]
pub struct Framer {
    queue: VecDeque<u8>,
    cap: usize,
    /// No frames: each push is queued as it is.
    raw: bool,
}

/// Default cap on bytes waiting for one stream: ~200 full datagrams.
pub const DEFAULT_STREAM_BUFFER: usize = 256 * 1024;

/// Bytes a datagram of `len` bytes takes on a stream: its length prefix and itself.
pub const fn framed_len(len: usize) -> usize {
    FRAME_HEADER + len
}

/// Whether a stream queue holding `queued` bytes (frames, length prefixes included) under a
/// cap of `cap` bytes takes a datagram of `len` bytes: one that is not empty (an empty frame
/// carries nothing and is skipped by [`Deframer`]), fits in a frame ([`MAX_STREAM_FRAME`])
/// and keeps the queue within its cap. The rule of [`Framer::push`], for a carrier that keeps
/// its frames its own way (the simulator's flows).
pub const fn frame_fits(queued: usize, len: usize, cap: usize) -> bool {
    len > 0 && len <= MAX_STREAM_FRAME && queued + framed_len(len) <= cap
}

impl Default for Framer {
    fn default() -> Self {
        Self::new(DEFAULT_STREAM_BUFFER)
    }
}

impl Framer {
    /// A queue holding at most `cap` bytes (frame headers included).
    pub fn new(cap: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            cap,
            raw: false,
        }
    }

    /// A queue for a stream of bytes that are not framed
    /// ([`crate::SocketRequest::ConnectRaw`]): [`Framer::push`] queues the bytes as they are
    /// (any non-empty push that keeps the queue within `cap`).
    pub fn raw(cap: usize) -> Self {
        Self {
            raw: true,
            ..Self::new(cap)
        }
    }

    /// Queues `datagram`; false (nothing queued) if it is empty, too long for a frame, or
    /// does not fit under the cap ([`frame_fits`]).
    pub fn push(&mut self, datagram: &[u8]) -> bool {
        if self.raw {
            let fits = !datagram.is_empty() && self.queue.len() + datagram.len() <= self.cap;
            if fits {
                self.queue.extend(datagram);
            }
            return fits;
        }
        if !frame_fits(self.queue.len(), datagram.len(), self.cap) {
            return false;
        }
        let n = datagram.len() as u16;
        self.queue.extend(n.to_be_bytes());
        self.queue.extend(datagram);
        true
    }

    /// The bytes to write next (a prefix of what is queued).
    pub fn front(&self) -> &[u8] {
        self.queue.as_slices().0
    }

    /// `n` bytes of [`Framer::front`] were written.
    pub fn consume(&mut self, n: usize) {
        self.queue.drain(..n.min(self.queue.len()));
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(d: &mut Deframer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            out.push(f.to_vec());
        }
        out
    }

    #[test]
    fn raw_streams_carry_bytes_as_they_are_in_both_directions() {
        let mut f = Framer::raw(10);
        assert!(f.push(b"GET / "));
        assert!(!f.push(b""), "nothing to queue");
        assert!(!f.push(b"HTTP/1.1"), "6 + 8 > 10");
        assert!(f.push(b"HTTP"));
        assert_eq!(f.front(), b"GET / HTTP");
        let mut d = Deframer::raw();
        assert_eq!(d.push(b"\x00\x05abc"), 5);
        assert_eq!(
            d.next_frame().unwrap(),
            Some(&b"\x00\x05abc"[..]),
            "no length prefix"
        );
        assert_eq!(d.next_frame().unwrap(), None, "delivered once");
        assert_eq!(d.push(b"de"), 2);
        assert_eq!(drain(&mut d), vec![b"de".to_vec()]);
    }

    #[test]
    fn frames_survive_any_split() {
        let mut f = Framer::default();
        let datagrams: Vec<Vec<u8>> = (1..40usize)
            .map(|i| (0..i * 31).map(|b| b as u8).collect())
            .collect();
        for d in &datagrams {
            assert!(f.push(d));
        }
        let mut wire = Vec::new();
        while !f.is_empty() {
            let n = f.front().len().min(7);
            wire.extend_from_slice(&f.front()[..n]);
            f.consume(n);
        }
        for chunk in [1usize, 2, 3, 5, 1000, 5000] {
            let mut d = Deframer::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                let mut rest = piece;
                while !rest.is_empty() {
                    let n = d.push(rest);
                    rest = &rest[n..];
                    got.extend(drain(&mut d));
                }
            }
            assert_eq!(got, datagrams, "chunk {chunk}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn an_oversize_length_is_an_error_and_empty_frames_are_skipped() {
        let mut d = Deframer::default();
        d.push(&[0, 0, 0, 1, 9]);
        assert_eq!(d.next_frame().unwrap(), Some(&[9u8][..]));
        let too_long = (MAX_STREAM_FRAME as u16 + 1).to_be_bytes();
        d.push(&too_long);
        assert_eq!(d.next_frame(), Err(FrameTooLong(MAX_STREAM_FRAME + 1)));
    }

    #[test]
    fn a_frame_fits_when_its_prefix_and_bytes_stay_within_the_cap() {
        assert!(frame_fits(0, 98, 100));
        assert!(!frame_fits(0, 99, 100), "2 + 99 > 100");
        assert!(frame_fits(62, 36, 100));
        assert!(!frame_fits(0, 0, 100), "empty");
        assert!(
            !frame_fits(0, MAX_STREAM_FRAME + 1, 1 << 20),
            "too long for a frame"
        );
    }

    #[test]
    fn delivery_stops_at_its_budget_and_at_a_broken_frame() {
        let mut d = Deframer::default();
        d.push(&[0, 1, 7, 0, 1, 8, 0, 1, 9]);
        let mut got = Vec::new();
        assert_eq!(d.deliver(2, |f| got.push(f[0])), (2, Ok(())));
        assert_eq!(d.deliver(5, |f| got.push(f[0])), (1, Ok(())));
        assert_eq!(got, [7, 8, 9]);
        let too_long = (MAX_STREAM_FRAME as u16 + 1).to_be_bytes();
        d.push(&[0, 1, 10, too_long[0], too_long[1]]);
        let broken = Err(FrameTooLong(MAX_STREAM_FRAME + 1));
        assert_eq!(d.deliver(5, |f| got.push(f[0])), (1, broken));
        assert_eq!(got, [7, 8, 9, 10]);
    }

    #[test]
    fn the_framer_refuses_past_its_cap() {
        let mut f = Framer::new(100);
        assert!(f.push(&[1; 60]));
        assert!(!f.push(&[1; 60]), "62 + 62 > 100");
        assert!(f.push(&[1; 36]));
        assert_eq!(f.len(), 100);
        assert!(!f.push(&[]));
        assert!(!Framer::new(1 << 20).push(&vec![0; MAX_STREAM_FRAME + 1]));
    }
}
