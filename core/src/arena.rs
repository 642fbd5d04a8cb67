//! A reusable byte arena that turns borrowed slices into `Bytes` with one copy and, in steady
//! state, no allocation: each `Bytes` is split off a shared chunk, and a chunk whose pieces
//! were all dropped is reclaimed by `BytesMut::reserve` instead of allocating a new one.

use bytes::{Bytes, BytesMut};

/// Chunk size: big enough that one allocation serves many datagrams.
const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Arena {
    buf: BytesMut,
    /// Bytes the next chunk allocation asks for.
    chunk: usize,
    /// Chunks double up to this after each allocation (equal to `chunk` for a fixed size).
    max_chunk: usize,
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
            max_chunk: chunk,
        }
    }

    /// An arena whose chunks start at `first` bytes and double with each allocation up to
    /// [`CHUNK`]: a quiet stream (a peer that sends a message now and then) holds a few KiB,
    /// a busy one reaches full-size chunks after a handful of allocations and then, as
    /// always, reuses them.
    pub(crate) fn growing(first: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            chunk: first.min(CHUNK),
            max_chunk: CHUNK,
        }
    }

    /// Copies `data` into the arena and returns it as `Bytes`.
    pub(crate) fn copy(&mut self, data: &[u8]) -> Bytes {
        if self.buf.capacity() < data.len() {
            self.buf.reserve(self.chunk.max(data.len()));
            self.chunk = (self.chunk * 2).min(self.max_chunk);
        }
        self.buf.extend_from_slice(data);
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_arena_starts_small_and_doubles_to_the_full_chunk() {
        let mut a = Arena::growing(2048);
        let first = a.copy(&[1; 100]);
        assert!(
            a.buf.capacity() + first.len() <= 2048,
            "first chunk is small"
        );
        drop(first);
        // Pieces held (a busy stream): each new chunk is twice the last, up to the cap.
        let mut held = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..200 {
            held.push(a.copy(&[2; 1000]));
            sizes.push(a.chunk);
        }
        assert_eq!(a.chunk, CHUNK, "{sizes:?}");
        sizes.dedup();
        assert_eq!(
            sizes,
            [4096, 8192, 16384, 32768, CHUNK],
            "the chunk after each allocation"
        );
    }

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
