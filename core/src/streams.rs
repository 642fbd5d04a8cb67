//! A runtime's TCP streams by id: the bookkeeping every carrier of [`SocketId::stream`] ids
//! shares, with no I/O in it. The runtimes (pierce-mio, pierce-async-std) keep their sockets
//! in a [`StreamTable`], the simulator its modelled connections, and the core's own tests the
//! stream they play by hand, so all of them follow the contract on [`SocketId`] by the same
//! rules:
//!
//! - **Names.** An accepted stream gets the next free `SocketId::stream(n)`, n cycling
//!   through 1..=[`MAX_STREAM_IDS`] ([`StreamTable::accept`]). An id stays taken until the
//!   core closed the stream itself or was told it ended, so no id names two streams in the
//!   core's eyes. A stream the core connects keeps the id the core chose
//!   ([`StreamTable::connecting`]).
//! - **Cap.** Over [`StreamTable::max_streams`] streams an accepted connection is refused
//!   (the runtime closes it at once and counts it).
//! - **Queues.** A stream's output is a [`Framer`] with a hard cap on bytes
//!   ([`StreamTable::push`]): a datagram that does not fit, or names a stream that is not
//!   connected, is dropped like a datagram lost on the way, and the outcome ([`Push`]) says
//!   which drop to count. Streams with output waiting are remembered until written
//!   ([`StreamTable::take_unwritten`]).
//! - **Closing.** A stream the core closed ([`StreamTable::close`]) is forgotten without a
//!   word to the core; one that ended by itself ([`StreamTable::ended`]) is reported exactly
//!   once, as [`Report::Closed`], or as [`Report::ConnectFailed`] while its connect was still
//!   in progress ([`Report::ConnectRefused`] if the runtime saw a refusal: [`Report::refused`]); an end that comes after the core closed it is not reported at all.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeBounds;

use crate::SocketId;
use crate::endpoint::Endpoint;
use crate::framing::Framer;
use crate::time::Instant;

/// Most stream ids there are: `SocketId::stream(n)` for n in 1..=0x7fff (the top bit marks a
/// stream, and 0 is left out so no stream id is `SocketId::stream(0)`, easily mistaken for
/// the primary socket in logs).
pub const MAX_STREAM_IDS: usize = 0x7fff;

/// Default cap on concurrent streams a listening runtime keeps: a connection over the cap is
/// accepted and closed at once. 1024 streams hold at most 1024 ×
/// [`crate::framing::DEFAULT_STREAM_BUFFER`] (256 MiB) of queued output in the worst case,
/// where no client reads; ~2 KiB each otherwise.
pub const DEFAULT_MAX_STREAMS: usize = 1024;

/// Where a datagram for a stream went ([`StreamTable::push`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Push {
    /// Framed onto the stream's queue.
    Queued,
    /// The stream's queue is full (its peer reads too slowly), or the datagram cannot be
    /// framed: dropped, as UDP would lose it.
    Full,
    /// No such stream: never connected, still connecting, or closed. Dropped.
    Unknown,
}

/// What the core must be told about a stream that ended by itself ([`StreamTable::ended`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Report {
    /// It was open: `handle_stream_closed`.
    Closed,
    /// Its connect had not completed: `handle_socket_opened(.., None)`.
    ConnectFailed,
    /// Its connect was refused (`ECONNREFUSED`): `handle_stream_refused`.
    ConnectRefused,
}

impl Report {
    /// Tells `endpoint` that stream `id` ended this way.
    pub fn tell<E: Endpoint + ?Sized>(self, endpoint: &mut E, now: Instant, id: SocketId) {
        match self {
            Self::Closed => endpoint.handle_stream_closed(now, id),
            Self::ConnectFailed => endpoint.handle_socket_opened(now, id, None),
            Self::ConnectRefused => endpoint.handle_stream_refused(now, id),
        }
    }

    /// The same report for a stream whose connect failed because it was refused (the runtime
    /// saw `ECONNREFUSED`): a failed connect becomes [`Report::ConnectRefused`]; a stream that
    /// had connected stays [`Report::Closed`].
    pub fn refused(self) -> Self {
        match self {
            Self::ConnectFailed => Self::ConnectRefused,
            other => other,
        }
    }
}

/// One stream and whether the core was told it is connected.
#[derive(Debug)]
struct Entry<T> {
    stream: T,
    connected: bool,
}

/// A runtime's streams by id, each a `T` (a runtime's socket and its queues; the simulator's
/// connection key). See the [module docs](self) for the rules it keeps.
#[derive(Debug)]
pub struct StreamTable<T> {
    entries: BTreeMap<SocketId, Entry<T>>,
    /// Streams with output pushed since they were last taken for writing.
    unwritten: BTreeSet<SocketId>,
    /// The stream number the next accepted stream tries first (1..=0x7fff, cycling).
    next: u16,
    max_streams: usize,
}

impl<T> Default for StreamTable<T> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_STREAMS)
    }
}

impl<T> StreamTable<T> {
    /// A table that accepts streams while it holds fewer than `max_streams` (see
    /// [`StreamTable::set_max_streams`]).
    pub fn new(max_streams: usize) -> Self {
        let mut table = Self {
            entries: BTreeMap::new(),
            unwritten: BTreeSet::new(),
            next: 1,
            max_streams: 0,
        };
        table.set_max_streams(max_streams);
        table
    }

    /// Sets the cap: a connection is accepted only while the table holds fewer streams
    /// (connecting ones included); at least 1, at most [`MAX_STREAM_IDS`]. Streams the core
    /// connects itself are never refused. Lowering it closes nothing.
    pub fn set_max_streams(&mut self, max: usize) {
        self.max_streams = max.clamp(1, MAX_STREAM_IDS);
    }

    /// The cap on accepted streams.
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// Streams held: connecting, accepted or connected.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No streams held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` is held (connecting or connected).
    pub fn contains(&self, id: SocketId) -> bool {
        self.entries.contains_key(&id)
    }

    /// Stream `id`, connecting or connected.
    pub fn get(&self, id: SocketId) -> Option<&T> {
        self.entries.get(&id).map(|e| &e.stream)
    }

    /// Stream `id`, connecting or connected.
    pub fn get_mut(&mut self, id: SocketId) -> Option<&mut T> {
        self.entries.get_mut(&id).map(|e| &mut e.stream)
    }

    /// Stream `id` if it is connected: where a transmit naming it may go.
    pub fn connected_mut(&mut self, id: SocketId) -> Option<&mut T> {
        self.entries
            .get_mut(&id)
            .filter(|e| e.connected)
            .map(|e| &mut e.stream)
    }

    /// Whether stream `id` is held and connected.
    pub fn is_connected(&self, id: SocketId) -> bool {
        self.entries.get(&id).is_some_and(|e| e.connected)
    }

    /// Every stream, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketId, &T)> {
        self.entries.iter().map(|(&id, e)| (id, &e.stream))
    }

    /// The streams whose ids are in `range`, in id order (for polling them in turns).
    pub fn range_mut(
        &mut self,
        range: impl RangeBounds<SocketId>,
    ) -> impl Iterator<Item = (SocketId, &mut T)> {
        self.entries
            .range_mut(range)
            .map(|(&id, e)| (id, &mut e.stream))
    }

    /// The core asked to connect stream `id` ([`crate::SocketRequest::Connect`]): `stream` is
    /// held under that id, not yet connected (transmits naming it are dropped until
    /// [`StreamTable::connected`]). Returns a stream the id named before, which is replaced.
    pub fn connecting(&mut self, id: SocketId, stream: T) -> Option<T> {
        let old = self.entries.insert(
            id,
            Entry {
                stream,
                connected: false,
            },
        );
        self.unwritten.remove(&id);
        old.map(|e| e.stream)
    }

    /// Stream `id`'s connect completed (the core is told with `handle_socket_opened`):
    /// transmits naming it go down it from now on. Returns it, if held.
    pub fn connected(&mut self, id: SocketId) -> Option<&mut T> {
        let entry = self.entries.get_mut(&id)?;
        entry.connected = true;
        Some(&mut entry.stream)
    }

    /// Names a stream the runtime accepted: the next free `SocketId::stream(n)` (see the
    /// [module docs](self)), connected at once. The stream comes back as `Err` when the table
    /// is at its cap (or, at a cap of [`MAX_STREAM_IDS`], out of ids): the runtime closes it and
    /// counts it refused.
    ///
    /// # Errors
    /// Over the cap; the stream is handed back.
    pub fn accept(&mut self, stream: T) -> Result<SocketId, T> {
        if self.entries.len() >= self.max_streams {
            return Err(stream);
        }
        let Some(id) = self.free_id() else {
            return Err(stream);
        };
        let entry = Entry {
            stream,
            connected: true,
        };
        self.entries.insert(id, entry);
        Ok(id)
    }

    /// The next stream number not in use, cycling through 1..=0x7fff.
    fn free_id(&mut self) -> Option<SocketId> {
        for _ in 0..MAX_STREAM_IDS {
            let n = self.next;
            self.next = if usize::from(n) >= MAX_STREAM_IDS {
                1
            } else {
                n + 1
            };
            let id = SocketId::stream(n);
            if !self.entries.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// The core closed stream `id` ([`crate::SocketRequest::Close`]): it is forgotten, and
    /// the core hears nothing more of it. Returns it, to shut down, if it was held.
    pub fn close(&mut self, id: SocketId) -> Option<T> {
        self.unwritten.remove(&id);
        self.entries.remove(&id).map(|e| e.stream)
    }

    /// Stream `id` ended by itself (EOF, reset, error, a broken frame, a failed connect): it
    /// is forgotten, and the core must be told how ([`Report::tell`]). `None` when the core
    /// closed it first (or it was never held): then the core hears nothing.
    pub fn ended(&mut self, id: SocketId) -> Option<(T, Report)> {
        self.unwritten.remove(&id);
        let entry = self.entries.remove(&id)?;
        let report = if entry.connected {
            Report::Closed
        } else {
            Report::ConnectFailed
        };
        Some((entry.stream, report))
    }

    /// The streams with output pushed since the last call, to write now; a stream that
    /// cannot take all of it goes back with [`StreamTable::mark_unwritten`].
    pub fn take_unwritten(&mut self) -> BTreeSet<SocketId> {
        std::mem::take(&mut self.unwritten)
    }

    /// The first stream with output pushed and not yet taken for writing.
    pub fn next_unwritten(&mut self) -> Option<SocketId> {
        self.unwritten.pop_first()
    }

    /// Stream `id` has output left to write (if it is still held).
    pub fn mark_unwritten(&mut self, id: SocketId) {
        if self.entries.contains_key(&id) {
            self.unwritten.insert(id);
        }
    }
}

impl<T: AsMut<Framer>> StreamTable<T> {
    /// Queues `datagram` on stream `id`: framed onto its queue if the stream is connected and
    /// the queue has room (then the stream is unwritten until taken for writing), else
    /// dropped. The outcome says which.
    pub fn push(&mut self, id: SocketId, datagram: &[u8]) -> Push {
        let Some(stream) = self.connected_mut(id) else {
            return Push::Unknown;
        };
        if stream.as_mut().push(datagram) {
            self.unwritten.insert(id);
            Push::Queued
        } else {
            Push::Full
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream with a queue of `cap` bytes.
    struct Queue(Framer);

    impl AsMut<Framer> for Queue {
        fn as_mut(&mut self) -> &mut Framer {
            &mut self.0
        }
    }

    fn queue(cap: usize) -> Queue {
        Queue(Framer::new(cap))
    }

    #[test]
    fn accepted_streams_get_free_ids_cycling_under_the_cap() {
        let mut t = StreamTable::new(3);
        t.next = 0x7ffe;
        let ids: Vec<SocketId> = (0..3).map(|i| t.accept(i).unwrap()).collect();
        assert_eq!(ids, [0x7ffe, 0x7fff, 1].map(SocketId::stream), "wraps to 1");
        assert_eq!(t.accept(3), Err(3), "over the cap");
        // A closed id is free again; ids in use are skipped.
        assert_eq!(t.close(SocketId::stream(0x7fff)), Some(1));
        assert_eq!(t.close(SocketId::stream(0x7fff)), None, "closed once");
        t.next = 0x7ffe;
        assert_eq!(t.accept(4), Ok(SocketId::stream(0x7fff)));
        assert_eq!(t.accept(5), Err(5));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn a_connected_stream_takes_a_cap_slot_and_its_id_is_skipped() {
        let mut t = StreamTable::new(2);
        assert_eq!(t.connecting(SocketId::stream(1), 'c'), None);
        assert_eq!(t.accept('a'), Ok(SocketId::stream(2)), "1 is taken");
        assert_eq!(t.accept('b'), Err('b'), "the connecting stream counts");
        assert_eq!(StreamTable::<()>::new(0).max_streams(), 1);
        assert_eq!(
            StreamTable::<()>::new(usize::MAX).max_streams(),
            MAX_STREAM_IDS
        );
    }

    #[test]
    fn a_stream_runs_out_of_ids_only_when_every_id_is_taken() {
        let mut t = StreamTable::new(MAX_STREAM_IDS);
        for _ in 0..MAX_STREAM_IDS {
            t.accept(()).unwrap();
        }
        assert_eq!(t.accept(()), Err(()));
        let _ = t.ended(SocketId::stream(77)).unwrap();
        assert_eq!(t.accept(()), Ok(SocketId::stream(77)));
    }

    #[test]
    fn only_connected_streams_take_datagrams_and_a_full_queue_refuses() {
        let mut t = StreamTable::default();
        let id = SocketId::stream(5);
        assert!(t.connecting(id, queue(10)).is_none());
        assert_eq!(t.push(id, b"abc"), Push::Unknown, "still connecting");
        assert!(t.connected(id).is_some());
        assert_eq!(t.push(id, b"abc"), Push::Queued);
        assert_eq!(t.push(id, b"defg"), Push::Full, "5 + 6 > 10");
        assert_eq!(t.push(SocketId::stream(6), b"x"), Push::Unknown);
        assert_eq!(t.take_unwritten(), BTreeSet::from([id]));
        assert_eq!(t.next_unwritten(), None, "taken");
        t.mark_unwritten(id);
        assert_eq!(t.next_unwritten(), Some(id));
        t.mark_unwritten(id);
        let _ = t.close(id);
        assert_eq!(t.next_unwritten(), None, "a closed stream is not written");
        t.mark_unwritten(id);
        assert_eq!(t.next_unwritten(), None, "nor marked again");
    }

    #[test]
    fn an_end_is_reported_once_and_never_after_the_core_closed_the_stream() {
        let mut t = StreamTable::default();
        let (connecting, connected) = (SocketId::stream(1), SocketId::stream(2));
        let _ = t.connecting(connecting, "c");
        let _ = t.connecting(connected, "d");
        let _ = t.connected(connected);
        let accepted = t.accept("a").unwrap();
        assert_eq!(t.ended(connecting), Some(("c", Report::ConnectFailed)));
        assert_eq!(t.ended(connected), Some(("d", Report::Closed)));
        assert_eq!(t.ended(connected), None, "once");
        assert_eq!(t.close(accepted), Some("a"));
        assert_eq!(t.ended(accepted), None, "the core closed it: not reported");
        assert!(t.is_empty());
    }

    #[test]
    fn a_report_is_the_call_the_contract_names() {
        #[derive(Default)]
        struct Heard(Vec<&'static str>);
        impl Endpoint for Heard {
            fn handle_datagram_on(&mut self, _: Instant, _: SocketId, _: SocketAddr, _: &[u8]) {}
            fn handle_socket_opened(&mut self, _: Instant, _: SocketId, l: Option<SocketAddr>) {
                self.0.push(if l.is_some() { "opened" } else { "failed" });
            }
            fn handle_stream_closed(&mut self, _: Instant, _: SocketId) {
                self.0.push("closed");
            }
            fn handle_stream_refused(&mut self, _: Instant, _: SocketId) {
                self.0.push("refused");
            }
            fn handle_timeout(&mut self, _: Instant) {}
            fn poll_transmit(&mut self, _: Instant, _: &mut [u8]) -> Option<crate::Transmit> {
                None
            }
            fn poll_timeout(&self) -> Option<crate::Timeout> {
                None
            }
        }
        use std::net::SocketAddr;
        let (mut heard, now) = (Heard::default(), crate::tests::epoch());
        let id = SocketId::stream(9);
        Report::Closed.tell(&mut heard, now, id);
        Report::ConnectFailed.tell(&mut heard, now, id);
        Report::ConnectFailed.refused().tell(&mut heard, now, id);
        Report::Closed.refused().tell(&mut heard, now, id);
        assert_eq!(heard.0, ["closed", "failed", "refused", "closed"]);
    }
}
