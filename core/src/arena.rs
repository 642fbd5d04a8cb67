//! A reusable byte arena that turns borrowed slices into `Bytes` with one copy and, in steady
//! state, no allocation: each `Bytes` is split off a shared chunk, and a chunk whose pieces
//! were all dropped is reclaimed by `BytesMut::reserve` instead of allocating a new one.

use bytes::{Bytes, BytesMut};

/// Chunk size: big enough that one allocation serves many datagrams.
const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Arena {
    buf: BytesMut,
    chunk: usize,
}

impl Default for Arena {
    fn default() -> Self {
        Self::with_chunk(CHUNK)
    }
}

impl Arena {
    /// An arena that allocates `chunk` bytes at a time: small for low-rate streams kept per
    /// session (a server holds one per client), large for datagram paths.
    pub(crate) fn with_chunk(chunk: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            chunk,
        }
    }

    /// Copies `data` into the arena and returns it as `Bytes`.
    pub(crate) fn copy(&mut self, data: &[u8]) -> Bytes {
        if self.buf.capacity() < data.len() {
            self.buf.reserve(self.chunk.max(data.len()));
        }
        self.buf.extend_from_slice(data);
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_independent_slices() {
        let mut a = Arena::default();
        let x = a.copy(b"abc");
        let y = a.copy(b"defg");
        assert_eq!(&x[..], b"abc");
        assert_eq!(&y[..], b"defg");
        let big = vec![7u8; CHUNK * 2];
        assert_eq!(&a.copy(&big)[..], &big[..]);
    }
}
