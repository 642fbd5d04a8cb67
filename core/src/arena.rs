//! A reusable byte arena that turns borrowed slices into `Bytes` with one copy and, in steady
//! state, no allocation: each `Bytes` is split off a shared chunk, and a chunk whose pieces
//! were all dropped is reclaimed (`BytesMut::try_reclaim`) instead of allocating a new one.
//! A chunk that fills while some of its pieces are still held (queued packets waiting to be
//! sent) is kept as a spare, to be reclaimed once they are gone: a server that relays bursts
//! cycles through a few chunks and stops allocating.

use bytes::{Bytes, BytesMut};

/// Chunk size: big enough that one allocation serves many datagrams.
const CHUNK: usize = 64 * 1024;
/// Full chunks kept for reuse, at most: a chunk is set aside when it fills while pieces of it
/// are still held, so spares hold memory that was all in use at one time (at most this many
/// chunks more than the arena's peak). Two were enough for the relay bench's bursts (the
/// allocations per relayed datagram went to 0, `relay_vs_coturn`); with none, a chunk that
/// fills mid-burst is freed and allocated anew each time (one allocation per 64 KiB relayed).
const SPARES: usize = 2;

#[derive(Debug)]
pub(crate) struct Arena {
    buf: BytesMut,
    /// Earlier chunks, some of whose pieces were still held when they were set aside.
    spares: Vec<BytesMut>,
    /// Chunks allocated so far.
    allocated: u64,
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
            spares: Vec::new(),
            allocated: 0,
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
            spares: Vec::new(),
            allocated: 0,
            chunk: first.min(CHUNK),
            max_chunk: CHUNK,
        }
    }

    /// Copies `data` into the arena and returns it as `Bytes`.
    pub(crate) fn copy(&mut self, data: &[u8]) -> Bytes {
        if self.buf.capacity() < data.len() {
            self.next_chunk(data.len());
        }
        self.buf.extend_from_slice(data);
        self.buf.split().freeze()
    }

    /// Makes room for `need` bytes: the current chunk if all its pieces are gone, else a spare
    /// whose pieces are, else a new chunk (the current one set aside as a spare).
    fn next_chunk(&mut self, need: usize) {
        // `try_reclaim` succeeds only on a chunk no `Bytes` shares any more, and only when the
        // whole chunk then has room (it never allocates).
        if self.buf.try_reclaim(need) {
            return;
        }
        if let Some(i) = (self.spares.iter_mut()).position(|s| s.try_reclaim(need)) {
            std::mem::swap(&mut self.buf, &mut self.spares[i]);
            return;
        }
        let size = self.chunk.max(need);
        self.chunk = (self.chunk * 2).min(self.max_chunk);
        let old = std::mem::replace(&mut self.buf, BytesMut::with_capacity(size));
        self.allocated += 1;
        if self.allocated > 1 {
            self.spares.push(old);
            if self.spares.len() > SPARES {
                // The oldest spare goes: its memory is freed when its last piece is dropped.
                self.spares.remove(0);
            }
        }
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
    fn a_queue_that_holds_pieces_across_a_chunk_boundary_stops_allocating() {
        // A relay's shape: pieces wait in a queue (here up to 100 of 1000 B, more than a
        // chunk holds) and leave in bursts; each chunk fills while some of its pieces wait.
        let mut a = Arena::default();
        let mut queue = std::collections::VecDeque::new();
        let mut after_warmup = 0;
        for i in 0..20_000u32 {
            queue.push_back(a.copy(&[i as u8; 1000]));
            if queue.len() == 100 {
                queue.drain(..60);
            }
            if i == 1_000 {
                after_warmup = a.allocated;
            }
        }
        assert!(after_warmup <= 3, "{after_warmup} chunks to warm up");
        assert_eq!(
            a.allocated, after_warmup,
            "no chunk allocated in steady state"
        );
        assert!(a.spares.len() <= SPARES);
        // Pieces are still intact: the queue's oldest was written 40 copies ago.
        assert!(
            queue
                .iter()
                .all(|b| b.len() == 1000 && b.iter().all(|&x| x == b[0]))
        );
    }

    #[test]
    fn a_chunk_whose_pieces_are_gone_is_reused_without_spares() {
        let mut a = Arena::default();
        for _ in 0..1_000 {
            drop(a.copy(&[1; 1000]));
        }
        assert_eq!(a.allocated, 1);
        assert!(a.spares.is_empty());
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
