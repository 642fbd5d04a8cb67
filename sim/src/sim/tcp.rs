//! TCP streams: the fallback for networks that block UDP (issue #10), carried the way a
//! runtime would carry them (see `SocketId::stream` and `SocketRequest::Connect` in core).
//! The model is documented on [`StreamStats`].

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pierce_core::SocketId;
use pierce_core::framing::{DEFAULT_STREAM_BUFFER, frame_fits, framed_len};
use pierce_core::streams::{MAX_STREAM_IDS, Report, StreamTable};
use rand::Rng;
use rand::rngs::StdRng;

use super::{DropCause, Item, NodeState, PacketFate, Sim, SimError};
use crate::clock::format_time;
use crate::link::{LinkConfig, Loss};
use crate::substream;

/// How long a connect whose SYN (or SYN-ACK) is dropped waits before the runtime gives up:
/// a typical runtime connect timeout.
pub const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a frame may wait for a blocked path (partition, offline end) before the stream
/// breaks at both ends (TCP's user timeout, as runtimes commonly set it).
pub const STREAM_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Retransmission timeout floor (Linux's): a frame "lost" on a link arrives this much plus a
/// round trip late.
pub const RTO_MIN: Duration = Duration::from_millis(200);
/// Ports allocated to connections (Linux's ephemeral range).
const EPHEMERAL: RangeInclusive<u16> = 32_768..=60_999;

/// Counters of the stream model ([`Sim::stream_stats`]).
///
/// # The model
///
/// - **Who listens.** Every running host that is not a scenario client (the server, and
///   nodes added with [`Sim::add_node`]) accepts streams on its primary address, as the
///   contract asks runtimes to, and tells its endpoint (`handle_stream_accepted`, when the
///   SYN arrives). Scenario clients and crashed hosts answer with a reset.
/// - **Connecting.** A node's `Connect { id, addr }` sends a SYN that climbs out through the
///   connecting host's NATs untranslated (the NATs model UDP only; TCP always passes them
///   outbound) and follows static port forwards down to the listener. The connect completes
///   after one round trip of the two access links' latencies (`handle_socket_opened(Some(local))`).
///   A reset (no listener, crashed host) comes back after one round trip too
///   (`handle_stream_refused`); a SYN that is dropped (no route, a partition, an offline
///   host) fails after [`STREAM_CONNECT_TIMEOUT`] (`handle_socket_opened(None)` both ways). UDP firewalls
///   ([`crate::Action::BlockUdp`]) do not touch TCP.
/// - **Addresses.** The listener sees the stream come from the connecting host's IP as it
///   appears in the listener's realm (its outermost NAT's public IP, usually) with a port
///   allocated for that connection; the connector's local address is its own IP with that
///   port. The listener names each accepted stream with a fresh `SocketId::stream(n)` (n
///   cycles through 1..=0x7fff, skipping ids still open on that host).
/// - **Data.** Each frame arrives after the sender's up-link latency plus the receiver's
///   down-link latency; with the two links' mean loss rate a frame is "retransmitted" and
///   arrives [`RTO_MIN`] plus a round trip later. Frames are never lost, duplicated or
///   reordered: a frame never arrives before the one sent ahead of it (head-of-line
///   blocking). Jitter, rate limits, MTU and outages are not modelled for streams, and
///   streams do not count in the links' counters. A flow refuses a frame that would take its
///   undelivered frames (length prefixes included) past [`DEFAULT_STREAM_BUFFER`] bytes, and
///   one it cannot frame, by the runtime's rule (`pierce_core::framing::frame_fits`; counted
///   as `overflow`).
/// - **Closing.** A node's `Close` on a stream delivers what it already sent, then the other
///   end gets `handle_stream_closed`. A crash, a restart ([`crate::Action::RestartServer`]) or a new
///   client process ([`crate::Action::Reconnect`]) closes the dead process's streams the same
///   way (the kernel closes a dead process's sockets); frames towards it are dropped.
/// - **Outages.** While a partition or an offline end keeps a flow's frames from passing,
///   they wait; when the path heals ([`crate::Action::Heal`], [`crate::Action::Online`]) they
///   go on, one trip later, in order. A flow stuck for [`STREAM_STALL_TIMEOUT`] breaks the
///   stream: both ends get `handle_stream_closed` (like a TCP user timeout). A stream with nothing
///   to send never notices an outage, as in TCP without keepalives.
/// - **Roaming.** A host whose public IP changes ([`crate::Action::Roam`], of it or of a NAT
///   in front of it) loses its streams at once: both ends get `handle_stream_closed` (a reset).
///   [`crate::Action::Rebind`] leaves streams alone.
/// - **Unknown ids.** A transmit naming a stream the host does not have (never connected,
///   closed, or not yet connected) is dropped and counted (`unknown`).
/// - **Traces.** With packet tracing on, every frame is a [`crate::PacketRecord`] with
///   `tcp: true` (from the sender's end of the stream to its peer address); frames lost with
///   their stream end as [`crate::DropCause::StreamEnded`]. Connects, accepts and closes are
///   noted in the log (`<host>: tcp …`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Connects asked for.
    pub connects: u64,
    /// Connects that completed.
    pub opened: u64,
    /// Connects answered with a reset (no listener, crashed host).
    pub refused: u64,
    /// Connects never answered (no route, partition, offline).
    pub timed_out: u64,
    /// Frames delivered.
    pub frames: u64,
    /// Bytes delivered (frame payloads).
    pub bytes: u64,
    /// Frames delayed by a modelled retransmission.
    pub retransmitted: u64,
    /// Frames lost because their stream ended first (closed, broken, receiver gone).
    pub dropped: u64,
    /// Frames refused because their flow's buffer was full, or unframeable (empty, too long).
    pub overflow: u64,
    /// Transmits naming a stream the host does not have.
    pub unknown: u64,
    /// Ends told their stream closed because the other end closed it (or its process died).
    pub closed: u64,
    /// Streams broken by a stall timeout or a roam (both ends told).
    pub broken: u64,
}

/// The connecting end of a [`Conn`], and the accepting one.
const CONNECTOR: usize = 0;
const ACCEPTOR: usize = 1;

/// One end of a stream, as its host knows it.
#[derive(Debug)]
struct End {
    id: SocketId,
    local: SocketAddr,
    /// The remote address this end's node is given.
    peer: SocketAddr,
    /// The node still has it (it neither closed it nor was told it closed).
    open: bool,
}

#[derive(Debug)]
enum Segment {
    Data { data: Bytes, trace: Option<usize> },
    Fin,
}

/// One direction of a stream.
#[derive(Debug, Default)]
struct Flow {
    /// Segments and when they are due, in order, due times never decreasing.
    queue: VecDeque<(Instant, Segment)>,
    /// Due time of the last segment queued.
    last: Option<Instant>,
    /// Bytes queued, counted as a runtime's framer counts them (length prefixes included).
    framed: usize,
    /// A `Flow` item is scheduled for this instant.
    wake: Option<Instant>,
    /// The front segment has been waiting for a blocked path since then.
    stalled: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The SYN is on its way to the listener.
    Syn,
    /// The listener accepted; the answer is on its way back.
    SynAck,
    /// Both ends have it.
    Open,
}

#[derive(Debug)]
struct Conn {
    phase: Phase,
    started: Instant,
    /// The connecting and the listening host.
    hosts: [usize; 2],
    /// Where the listener listens, and the address it sees the connector at.
    listen: SocketAddr,
    seen: SocketAddr,
    ends: [Option<End>; 2],
    flows: [Flow; 2],
    rng: StdRng,
}

/// Every stream of a simulation.
#[derive(Debug, Default)]
pub(super) struct Streams {
    conns: BTreeMap<u64, Conn>,
    /// Each host's open ends: stream id → connection, kept by the rules every runtime keeps
    /// (the core's `StreamTable`: names for accepted streams, connected or still connecting,
    /// who is told of an end). No cap but the ids there are.
    tables: BTreeMap<usize, StreamTable<u64>>,
    next_conn: u64,
    /// Connects each host made so far (they name the connections' random substreams).
    connects: BTreeMap<usize, u64>,
    /// Next port per source IP.
    next_port: BTreeMap<IpAddr, u16>,
    pub(super) stats: StreamStats,
}

/// How a connect ends for the connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The SYN-ACK came back: `handle_socket_opened(Some(local))`.
    Connected,
    /// A reset came back: `handle_stream_refused`.
    Refused,
    /// Nothing came back: `handle_socket_opened(None)`.
    TimedOut,
}

/// Scheduled stream work.
#[derive(Debug)]
pub(super) enum StreamItem {
    /// The SYN reaches the listener.
    Syn(u64),
    /// The connector learns the outcome: connected, or not (refused or timed out).
    Answer(u64, Outcome),
    /// Segments of a flow may be due.
    Flow(u64, usize),
    /// A flow may still be stalled since the instant given.
    Stall(u64, usize, Instant),
}

fn mean_loss(c: &LinkConfig) -> f64 {
    match c.loss {
        Loss::None => 0.0,
        Loss::Random(p) => p,
        Loss::GilbertElliott(ge) => ge.mean_loss(),
    }
    .clamp(0.0, 1.0)
}

impl Sim {
    /// Counters of the stream model.
    pub fn stream_stats(&self) -> StreamStats {
        self.streams.stats
    }

    /// The streams host `name` has open (connected or accepted, not closed): id, local
    /// address and the remote address its node is given.
    #[track_caller]
    pub fn streams(&self, name: &str) -> Vec<(SocketId, SocketAddr, SocketAddr)> {
        let host = self.id(name);
        let Some(table) = self.streams.tables.get(&host) else {
            return Vec::new();
        };
        table
            .iter()
            .filter_map(|(id, k)| {
                let c = self.streams.conns.get(k)?;
                let side = Self::side_of(c, host, id)?;
                let end = c.ends[side].as_ref()?;
                Some((id, end.local, end.peer))
            })
            .collect()
    }

    /// Host `host`'s streams.
    fn table(&mut self, host: usize) -> &mut StreamTable<u64> {
        let tables = &mut self.streams.tables;
        tables
            .entry(host)
            .or_insert_with(|| StreamTable::new(MAX_STREAM_IDS))
    }

    fn side_of(c: &Conn, host: usize, id: SocketId) -> Option<usize> {
        (0..2).find(|&s| c.hosts[s] == host && c.ends[s].as_ref().is_some_and(|e| e.id == id))
    }

    fn one_way(&self, from: usize, to: usize) -> Duration {
        self.hosts[from].up.config().latency + self.hosts[to].down.config().latency
    }

    fn stream_note(&mut self, host: usize, msg: std::fmt::Arguments<'_>) {
        let line = format!(
            "{} {}: {msg}",
            format_time(self.elapsed()),
            self.hosts[host].name
        );
        self.log.push(line);
    }

    fn next_port(&mut self, ip: IpAddr) -> u16 {
        let start = *self.streams.next_port.get(&ip).unwrap_or(EPHEMERAL.start());
        let in_use = |p: u16| {
            self.streams
                .conns
                .values()
                .any(|c| c.seen.ip() == ip && c.seen.port() == p)
        };
        let mut port = start;
        for _ in 0..EPHEMERAL.len() {
            if !in_use(port) {
                break;
            }
            port = if port >= *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                port + 1
            };
        }
        let next = if port >= *EPHEMERAL.end() {
            *EPHEMERAL.start()
        } else {
            port + 1
        };
        self.streams.next_port.insert(ip, next);
        port
    }

    /// Serves `SocketRequest::Connect { id, addr }` from host `host`.
    pub(super) fn stream_connect(&mut self, host: usize, id: SocketId, addr: SocketAddr) {
        let now = self.clock.now();
        self.streams.stats.connects += 1;
        if self.table(host).contains(id) {
            // The node reuses an id it has not closed: the old stream goes first.
            self.stream_note(
                host,
                format_args!("tcp {id:?} reused while open; closing it"),
            );
            self.stream_close(host, id);
        }
        let k = self.streams.connects.entry(host).or_insert(0);
        *k += 1;
        let rng = substream(self.seed, &format!("tcp/{}/{k}", self.hosts[host].name));
        let h = &self.hosts[host];
        let route = self.net.tcp_route(h.realm, h.addr.ip(), addr);
        let (to, listen, seen_ip) = match route {
            Ok(r) => r,
            Err(e) => {
                // A reset comes back from a host without a listener; a SYN to nowhere is
                // never answered.
                let (ok_after, what) = match e {
                    crate::NetDrop::NoListener => (self.one_way(host, host) * 2, "refused"),
                    _ => (STREAM_CONNECT_TIMEOUT, "no route"),
                };
                self.stream_note(host, format_args!("tcp {id:?} -> {addr}: {what}"));
                self.answer_without_conn(host, id, now + ok_after, what == "refused");
                return;
            }
        };
        let port = self.next_port(seen_ip);
        let local = SocketAddr::new(self.hosts[host].addr.ip(), port);
        let seen = SocketAddr::new(seen_ip, port);
        let key = self.streams.next_conn;
        self.streams.next_conn += 1;
        self.streams.conns.insert(
            key,
            Conn {
                phase: Phase::Syn,
                started: now,
                hosts: [host, to],
                listen,
                seen,
                ends: [
                    Some(End {
                        id,
                        local,
                        peer: addr,
                        open: true,
                    }),
                    None,
                ],
                flows: [Flow::default(), Flow::default()],
                rng,
            },
        );
        self.table(host).connecting(id, key); // the id is free: nothing is replaced
        self.stream_note(
            host,
            format_args!("tcp {id:?} connecting {local} -> {addr}"),
        );
        if self.net.passes(host, to) {
            let at = now + self.one_way(host, to);
            self.queue.push(at, Item::Stream(StreamItem::Syn(key)));
        } else {
            self.streams.stats.timed_out += 1;
            let at = now + STREAM_CONNECT_TIMEOUT;
            self.queue
                .push(at, Item::Stream(StreamItem::Answer(key, Outcome::TimedOut)));
        }
    }

    /// Serves `SocketRequest::ConnectRaw` from host `host`: the simulator carries framed
    /// streams only (its NATs answer PCP and NAT-PMP, never UPnP IGD's HTTP), so the connect
    /// fails at once, as one to an address that never answers would after its timeout.
    pub(super) fn stream_connect_raw(&mut self, host: usize, id: SocketId, addr: SocketAddr) {
        let now = self.clock.now();
        self.stream_note(
            host,
            format_args!("tcp {id:?} -> {addr}: raw streams not modelled"),
        );
        self.answer_without_conn(host, id, now, false);
    }

    /// A connect that never got a connection record (no route, no listener): a placeholder
    /// connection carries the failure back.
    fn answer_without_conn(&mut self, host: usize, id: SocketId, at: Instant, refused: bool) {
        if refused {
            self.streams.stats.refused += 1;
        } else {
            self.streams.stats.timed_out += 1;
        }
        let key = self.streams.next_conn;
        self.streams.next_conn += 1;
        let addr = self.hosts[host].addr;
        self.streams.conns.insert(
            key,
            Conn {
                phase: Phase::Syn,
                started: self.clock.now(),
                hosts: [host, host],
                listen: addr,
                seen: SocketAddr::new(addr.ip(), 0),
                ends: [
                    Some(End {
                        id,
                        local: addr,
                        peer: addr,
                        open: true,
                    }),
                    None,
                ],
                flows: [Flow::default(), Flow::default()],
                rng: substream(self.seed, "tcp/unused"),
            },
        );
        self.table(host).connecting(id, key); // the id is free: nothing is replaced
        let outcome = if refused {
            Outcome::Refused
        } else {
            Outcome::TimedOut
        };
        self.queue
            .push(at, Item::Stream(StreamItem::Answer(key, outcome)));
    }

    /// Serves `SocketRequest::Close { id }` for a stream of host `host` (or the death of its
    /// process): what it sent is still delivered, then the other end is told. No callback
    /// to `host`.
    pub(super) fn stream_close(&mut self, host: usize, id: SocketId) {
        let now = self.clock.now();
        let Some(key) = self.table(host).close(id) else {
            return;
        };
        let Some(c) = self.streams.conns.get_mut(&key) else {
            return;
        };
        let Some(side) = Self::side_of(c, host, id) else {
            return;
        };
        if let Some(e) = c.ends[side].as_mut() {
            e.open = false;
        }
        let other = 1 - side;
        let other_open = c.ends[other].as_ref().is_some_and(|e| e.open);
        let (from, to) = (c.hosts[side], c.hosts[other]);
        self.stream_note(host, format_args!("tcp {id:?} closed"));
        if other_open {
            let due = now + self.one_way(from, to);
            self.push_segment(key, side, due, Segment::Fin);
        } else {
            self.remove_conn(key);
        }
    }

    /// Closes every stream of host `host`, whose process died (or was replaced).
    pub(super) fn streams_host_died(&mut self, host: usize) {
        let ids: Vec<SocketId> = self.table(host).iter().map(|(id, _)| id).collect();
        for id in ids {
            self.stream_close(host, id);
        }
    }

    /// Breaks every stream with an end on one of `hosts` (their address changed).
    pub(super) fn break_streams_of(&mut self, hosts: &[usize], why: &str) -> Result<(), SimError> {
        let keys: Vec<u64> = self
            .streams
            .conns
            .iter()
            .filter(|(_, c)| c.hosts.iter().any(|h| hosts.contains(h)))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.break_conn(key, why)?;
        }
        Ok(())
    }

    /// Frames that waited for a blocked path go on now if it passes again (after
    /// [`crate::Action::Heal`] or [`crate::Action::Online`]).
    pub(super) fn kick_streams(&mut self) {
        let now = self.clock.now();
        let keys: Vec<(u64, usize)> = self
            .streams
            .conns
            .iter()
            .flat_map(|(k, c)| {
                (0..2)
                    .filter(|&d| c.flows[d].stalled.is_some())
                    .map(move |d| (*k, d))
            })
            .collect();
        for (key, dir) in keys {
            let Some(c) = self.streams.conns.get(&key) else {
                continue;
            };
            let (from, to) = (c.hosts[dir], c.hosts[1 - dir]);
            if !self.net.passes(from, to) {
                continue;
            }
            let due = now + self.one_way(from, to);
            let Some(c) = self.streams.conns.get_mut(&key) else {
                continue;
            };
            let flow = &mut c.flows[dir];
            flow.stalled = None;
            for (t, _) in &mut flow.queue {
                *t = (*t).max(due);
            }
            flow.last = flow.last.map(|t| t.max(due));
            self.schedule_flow(key, dir);
        }
    }

    /// Sends `data` down stream `id` of host `host` (a transmit naming it).
    pub(super) fn stream_send(&mut self, host: usize, id: SocketId, data: Bytes) {
        let now = self.clock.now();
        // A connector may send once it was told the stream is open; an acceptor at once.
        let table = self.streams.tables.get(&host);
        let key = table.filter(|t| t.is_connected(id)).and_then(|t| t.get(id));
        let found = key.and_then(|&key| {
            let c = self.streams.conns.get(&key)?;
            let side = Self::side_of(c, host, id)?;
            let mine = c.ends[side].as_ref()?;
            Some((key, side, mine.local, mine.peer))
        });
        let Some((key, side, src, dst)) = found else {
            self.streams.stats.unknown += 1;
            let peer = SocketAddr::from(([0, 0, 0, 0], 0));
            self.trace_drop(host, peer, data.len(), "host", format!("no stream {id:?}"));
            return;
        };
        let trace = self.trace_sent(host, src, dst, &data, true);
        let c = &self.streams.conns[&key];
        if !frame_fits(c.flows[side].framed, data.len(), DEFAULT_STREAM_BUFFER) {
            self.streams.stats.overflow += 1;
            self.trace_drop(
                host,
                dst,
                data.len(),
                "stream",
                "buffer full or unframeable",
            );
            let at = self.elapsed();
            self.record_fate(
                trace,
                PacketFate::Dropped {
                    at,
                    cause: DropCause::StreamEnded,
                },
            );
            return;
        }
        let (from, to) = (c.hosts[side], c.hosts[1 - side]);
        let ow = self.one_way(from, to);
        let p = 1.0
            - (1.0 - mean_loss(self.hosts[from].up.config()))
                * (1.0 - mean_loss(self.hosts[to].down.config()));
        let rtt = ow + self.one_way(to, from);
        let c = self.streams.conns.get_mut(&key).expect("looked up");
        let mut due = now + ow;
        if p > 0.0 && c.rng.random_bool(p) {
            due += RTO_MIN + rtt;
            self.streams.stats.retransmitted += 1;
        }
        self.trace_line(host, format_args!("-> {dst} {}B (tcp {id:?})", data.len()));
        self.push_segment(key, side, due, Segment::Data { data, trace });
    }

    fn push_segment(&mut self, key: u64, dir: usize, due: Instant, seg: Segment) {
        let Some(c) = self.streams.conns.get_mut(&key) else {
            return;
        };
        let flow = &mut c.flows[dir];
        let due = flow.last.map_or(due, |t| t.max(due));
        flow.last = Some(due);
        if let Segment::Data { data, .. } = &seg {
            flow.framed += framed_len(data.len());
        }
        flow.queue.push_back((due, seg));
        self.schedule_flow(key, dir);
    }

    fn schedule_flow(&mut self, key: u64, dir: usize) {
        let Some(c) = self.streams.conns.get_mut(&key) else {
            return;
        };
        let flow = &mut c.flows[dir];
        if flow.stalled.is_some() {
            return; // waits for the path (kick_streams) or the stall timeout
        }
        let Some(&(front, _)) = flow.queue.front() else {
            return;
        };
        if flow.wake.is_none_or(|w| w > front) {
            flow.wake = Some(front);
            self.queue
                .push(front, Item::Stream(StreamItem::Flow(key, dir)));
        }
    }

    /// Runs scheduled stream work.
    pub(super) fn handle_stream(&mut self, item: StreamItem) -> Result<(), SimError> {
        match item {
            StreamItem::Syn(key) => self.on_syn(key),
            StreamItem::Answer(key, outcome) => self.on_answer(key, outcome),
            StreamItem::Flow(key, dir) => self.on_flow(key, dir),
            StreamItem::Stall(key, dir, since) => {
                let Some(c) = self.streams.conns.get(&key) else {
                    return Ok(());
                };
                if c.flows[dir].stalled != Some(since) {
                    return Ok(());
                }
                if self.net.passes(c.hosts[dir], c.hosts[1 - dir]) {
                    self.kick_streams();
                    Ok(())
                } else {
                    self.break_conn(key, "timed out")
                }
            }
        }
    }

    fn on_syn(&mut self, key: u64) -> Result<(), SimError> {
        let now = self.clock.now();
        let Some(c) = self.streams.conns.get(&key) else {
            return Ok(());
        };
        if !c.ends[CONNECTOR].as_ref().is_some_and(|e| e.open) {
            // The connector gave up before the SYN arrived.
            self.remove_conn(key);
            return Ok(());
        }
        let [from, to] = c.hosts;
        let (started, listen, seen) = (c.started, c.listen, c.seen);
        let listening =
            self.hosts[to].config.is_none() && matches!(self.hosts[to].node, NodeState::Running(_));
        if !self.net.passes(from, to) || !self.net.passes(to, from) {
            self.streams.stats.timed_out += 1;
            let at = started + STREAM_CONNECT_TIMEOUT;
            self.queue
                .push(at, Item::Stream(StreamItem::Answer(key, Outcome::TimedOut)));
            return Ok(());
        }
        let back = now + self.one_way(to, from);
        if !listening {
            self.streams.stats.refused += 1;
            self.queue.push(
                back,
                Item::Stream(StreamItem::Answer(key, Outcome::Refused)),
            );
            return Ok(());
        }
        let Ok(id) = self.table(to).accept(key) else {
            // Every stream id of the listener is taken: it resets the connection.
            self.streams.stats.refused += 1;
            self.queue.push(
                back,
                Item::Stream(StreamItem::Answer(key, Outcome::Refused)),
            );
            return Ok(());
        };
        let c = self.streams.conns.get_mut(&key).expect("looked up");
        c.ends[ACCEPTOR] = Some(End {
            id,
            local: listen,
            peer: seen,
            open: true,
        });
        c.phase = Phase::SynAck;
        self.stream_note(to, format_args!("tcp {id:?} accepted from {seen}"));
        self.queue.push(
            back,
            Item::Stream(StreamItem::Answer(key, Outcome::Connected)),
        );
        // The listener hears of it as a runtime tells its endpoint (a server's admission may
        // close an older stream to make room).
        match &mut self.hosts[to].node {
            NodeState::Running(n) => n.handle_stream_accepted(now, id, seen),
            NodeState::Crashed => return Ok(()),
        }
        self.service(to, false)
    }

    fn on_answer(&mut self, key: u64, outcome: Outcome) -> Result<(), SimError> {
        let ok = outcome == Outcome::Connected;
        let now = self.clock.now();
        let Some(c) = self.streams.conns.get_mut(&key) else {
            return Ok(());
        };
        let host = c.hosts[CONNECTOR];
        let Some(end) = c.ends[CONNECTOR].as_ref().filter(|e| e.open) else {
            return Ok(()); // the node closed it meanwhile
        };
        let (id, local) = (end.id, end.local);
        if ok {
            c.phase = Phase::Open;
            self.streams.stats.opened += 1;
            let _ = self.table(host).connected(id);
            self.stream_note(host, format_args!("tcp {id:?} connected"));
        } else {
            let _ = self.table(host).ended(id); // a failed connect: told below
            self.remove_conn(key);
            self.stream_note(host, format_args!("tcp {id:?} connect failed"));
        }
        match &mut self.hosts[host].node {
            NodeState::Running(n) if outcome == Outcome::Refused => {
                n.handle_stream_refused(now, id)
            }
            NodeState::Running(n) => n.handle_socket_opened(now, id, ok.then_some(local)),
            NodeState::Crashed => return Ok(()),
        }
        self.service(host, false)
    }

    fn on_flow(&mut self, key: u64, dir: usize) -> Result<(), SimError> {
        let now = self.clock.now();
        loop {
            let Some(c) = self.streams.conns.get_mut(&key) else {
                return Ok(());
            };
            let (from, to) = (c.hosts[dir], c.hosts[1 - dir]);
            let flow = &mut c.flows[dir];
            if flow.wake.is_some_and(|w| w <= now) {
                flow.wake = None;
            }
            match flow.queue.front() {
                None => return Ok(()),
                Some(&(due, _)) if due > now => {
                    self.schedule_flow(key, dir);
                    return Ok(());
                }
                Some(_) => {}
            }
            if flow.stalled.is_some() {
                return Ok(());
            }
            if !self.net.passes(from, to) {
                let c = self.streams.conns.get_mut(&key).expect("looked up");
                c.flows[dir].stalled = Some(now);
                let at = now + STREAM_STALL_TIMEOUT;
                self.queue
                    .push(at, Item::Stream(StreamItem::Stall(key, dir, now)));
                return Ok(());
            }
            let c = self.streams.conns.get_mut(&key).expect("looked up");
            let flow = &mut c.flows[dir];
            let (_, seg) = flow.queue.pop_front().expect("peeked");
            if let Segment::Data { data, .. } = &seg {
                flow.framed -= framed_len(data.len());
            }
            let end = c.ends[1 - dir]
                .as_ref()
                .filter(|e| e.open)
                .map(|e| (e.id, e.peer));
            let running = matches!(self.hosts[to].node, NodeState::Running(_));
            let at = self.elapsed();
            match (seg, end) {
                (Segment::Data { data, trace }, Some((id, peer))) if running => {
                    let len = data.len();
                    self.trace_line(to, format_args!("<- {peer} {len}B (tcp {id:?})"));
                    if let NodeState::Running(n) = &mut self.hosts[to].node {
                        n.handle_datagram_on(now, id, peer, &data);
                    }
                    let name = self.hosts[to].name.clone();
                    self.record_fate(
                        trace,
                        PacketFate::Delivered {
                            at,
                            to: name,
                            from: peer,
                        },
                    );
                    self.streams.stats.frames += 1;
                    self.streams.stats.bytes += data.len() as u64;
                    self.service(to, false)?;
                }
                (Segment::Data { trace, .. }, _) => {
                    self.streams.stats.dropped += 1;
                    let cause = DropCause::StreamEnded;
                    self.record_fate(trace, PacketFate::Dropped { at, cause });
                }
                (Segment::Fin, Some((id, _))) => {
                    let ended = self.table(to).ended(id);
                    let c = self.streams.conns.get_mut(&key).expect("looked up");
                    if let Some(e) = c.ends[1 - dir].as_mut() {
                        e.open = false;
                    }
                    let closed = !c.ends[dir].as_ref().is_some_and(|e| e.open);
                    if closed {
                        self.remove_conn(key);
                    }
                    self.streams.stats.closed += 1;
                    self.stream_note(to, format_args!("tcp {id:?} closed by the other end"));
                    if let (NodeState::Running(n), Some((_, report))) =
                        (&mut self.hosts[to].node, ended)
                    {
                        report.tell(&mut **n, now, id);
                        self.service(to, false)?;
                    }
                }
                (Segment::Fin, None) => {}
            }
        }
    }

    /// Ends a stream at both ends at once (stall timeout, roam): open ends are told (a
    /// connector still connecting gets `handle_socket_opened(None)`), frames in flight are lost.
    fn break_conn(&mut self, key: u64, why: &str) -> Result<(), SimError> {
        let now = self.clock.now();
        let Some(c) = self.streams.conns.get(&key) else {
            return Ok(());
        };
        let hosts = c.hosts;
        let open: Vec<(usize, SocketId)> = (0..2)
            .filter_map(|s| {
                c.ends[s]
                    .as_ref()
                    .filter(|e| e.open)
                    .map(|e| (hosts[s], e.id))
            })
            .collect();
        // A connector still connecting hears its connect failed; any other end, that it closed.
        let ends: Vec<(usize, SocketId, Report)> = open
            .into_iter()
            .filter_map(|(host, id)| Some((host, id, self.table(host).ended(id)?.1)))
            .collect();
        self.streams.stats.broken += 1;
        self.remove_conn(key);
        for (host, id, report) in ends {
            self.stream_note(host, format_args!("tcp {id:?} broken ({why})"));
            let NodeState::Running(n) = &mut self.hosts[host].node else {
                continue;
            };
            report.tell(&mut **n, now, id);
            self.service(host, false)?;
        }
        Ok(())
    }

    /// Forgets a connection; frames still queued are lost.
    fn remove_conn(&mut self, key: u64) {
        let Some(c) = self.streams.conns.remove(&key) else {
            return;
        };
        let at = self.elapsed();
        for flow in c.flows {
            for (_, seg) in flow.queue {
                if let Segment::Data { trace, .. } = seg {
                    self.streams.stats.dropped += 1;
                    let cause = DropCause::StreamEnded;
                    self.record_fate(trace, PacketFate::Dropped { at, cause });
                }
            }
        }
        for (s, e) in c.ends.iter().enumerate() {
            if let Some(e) = e {
                let table = self.table(c.hosts[s]);
                if table.get(e.id) == Some(&key) {
                    let _ = table.close(e.id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use pierce_core::{
        Client, ClientConfig, ClientEvent, Endpoint, Events, SocketId, SocketRequest, Transmit,
        Transport,
    };

    use crate::{
        Action, DropCause, Edge, LinkConfig, LinkProfile, Loss, NatConfig, NetDrop, Node,
        PacketFate, Scenario, Sim,
    };

    const MS: Duration = Duration::from_millis(1);
    const SECOND: Duration = Duration::from_secs(1);
    const PROBE_PORT: u16 = 9000;

    /// A node that connects, sends, echoes and records what the runtime tells it.
    #[derive(Debug, Default)]
    struct Probe {
        echo: bool,
        requests: VecDeque<SocketRequest>,
        out: VecDeque<(SocketId, SocketAddr, Vec<u8>)>,
        events: VecDeque<String>,
        got: Vec<(SocketId, SocketAddr, Vec<u8>)>,
        opened: Vec<(Duration, SocketId, Option<SocketAddr>)>,
        refused: Vec<(Duration, SocketId)>,
        closed: Vec<(Duration, SocketId)>,
        epoch: Option<Instant>,
    }

    impl Probe {
        fn echo() -> Self {
            Self {
                echo: true,
                ..Self::default()
            }
        }

        fn since(&mut self, now: Instant) -> Duration {
            now - *self.epoch.get_or_insert(now)
        }

        /// The numbers of the 4-byte frames received on `socket`.
        fn numbers(&self, socket: SocketId) -> Vec<u32> {
            self.got
                .iter()
                .filter(|(s, _, _)| *s == socket)
                .map(|(_, _, d)| u32::from_be_bytes(d[..4].try_into().unwrap()))
                .collect()
        }
    }

    impl Endpoint for Probe {
        fn handle_datagram_on(
            &mut self,
            _now: Instant,
            socket: SocketId,
            from: SocketAddr,
            datagram: &[u8],
        ) {
            self.got.push((socket, from, datagram.to_vec()));
            if self.echo {
                self.out.push_back((socket, from, datagram.to_vec()));
            }
        }
        fn poll_socket_request(&mut self) -> Option<SocketRequest> {
            self.requests.pop_front()
        }
        fn handle_socket_opened(&mut self, now: Instant, id: SocketId, local: Option<SocketAddr>) {
            let at = self.since(now);
            self.opened.push((at, id, local));
            self.events.push_back(format!("opened {id:?} {local:?}"));
        }
        fn handle_stream_refused(&mut self, now: Instant, id: SocketId) {
            let at = self.since(now);
            self.refused.push((at, id));
            self.events.push_back(format!("refused {id:?}"));
        }
        fn handle_stream_closed(&mut self, now: Instant, id: SocketId) {
            let at = self.since(now);
            self.closed.push((at, id));
            self.events.push_back(format!("closed {id:?}"));
        }
        fn handle_timeout(&mut self, _now: Instant) {}
        fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
            let (socket, dst, data) = self.out.pop_front()?;
            buf[..data.len()].copy_from_slice(&data);
            Some(Transmit {
                dst,
                len: data.len(),
                socket,
                ttl: None,
            })
        }
        fn poll_timeout(&self) -> Option<pierce_core::Timeout> {
            None
        }
    }

    impl Events for Probe {
        type Event = String;

        fn poll_event(&mut self) -> Option<String> {
            self.events.pop_front()
        }
    }

    impl Node for Probe {
        type Stats = ();
        fn stats(&self) {}
    }

    /// An empty server-side world plus two probes: `srv` (echoing, open) and `cli` (behind
    /// `edge`), every link `link`. Both probes' clocks start now.
    fn probes(seed: u64, edge: Edge, link: &LinkProfile) -> (Sim, SocketAddr) {
        let mut sim = Scenario::new(seed).link(link.clone()).build();
        let srv = sim.add_node("srv", Edge::Open, PROBE_PORT, link, Probe::echo());
        sim.add_node("cli", edge, PROBE_PORT, link, Probe::default());
        let start = sim.now();
        for name in ["srv", "cli"] {
            sim.with_node::<Probe, _>(name, |p, _| p.epoch = Some(start));
        }
        (sim, srv)
    }

    fn connect(sim: &mut Sim, name: &str, n: u16, addr: SocketAddr) -> SocketId {
        let id = SocketId::stream(n);
        sim.with_node::<Probe, _>(name, |p, _| {
            p.requests.push_back(SocketRequest::Connect { id, addr });
        });
        id
    }

    /// [`probes`] on 10 ms links, with `cli`'s stream 1 to `srv` connected.
    fn connected_probes(seed: u64, edge: Edge) -> (Sim, SocketAddr, SocketId) {
        let link = LinkProfile::symmetric(LinkConfig::with_latency(10 * MS));
        let (mut sim, srv) = probes(seed, edge, &link);
        let id = connect(&mut sim, "cli", 1, srv);
        sim.advance(100 * MS);
        (sim, srv, id)
    }

    fn send(sim: &mut Sim, name: &str, socket: SocketId, numbers: std::ops::Range<u32>) {
        send_sized(sim, name, socket, numbers, 4);
    }

    /// Frames of `len` bytes, each starting with its number.
    fn send_sized(
        sim: &mut Sim,
        name: &str,
        socket: SocketId,
        numbers: std::ops::Range<u32>,
        len: usize,
    ) {
        sim.with_node::<Probe, _>(name, |p, _| {
            for i in numbers {
                let dst = SocketAddr::from(([0, 0, 0, 0], 0)); // ignored on streams
                let mut frame = vec![0u8; len];
                frame[..4].copy_from_slice(&i.to_be_bytes());
                p.out.push_back((socket, dst, frame));
            }
        });
    }

    #[test]
    fn a_stream_delivers_in_order_over_lossy_links_and_closes_after_its_data() {
        let link = LinkProfile::symmetric(LinkConfig {
            latency: 10 * MS,
            jitter: 5 * MS,
            loss: Loss::Random(0.2),
            reorder: 0.1,
            reorder_delay: 20 * MS,
            duplicate: 0.1,
            ..LinkConfig::default()
        });
        let (mut sim, srv) = probes(1, Edge::nat(NatConfig::symmetric()), &link);
        let id = connect(&mut sim, "cli", 1, srv);
        sim.advance(SECOND);
        let cli = sim.node::<Probe>("cli");
        let (at, opened, local) = cli.opened[0];
        assert_eq!((at, opened), (40 * MS, id), "one round trip of 10 ms links");
        let local = local.expect("connected");
        assert_eq!(local.ip(), sim.host_addr("cli").ip());
        let accepted = sim.streams("srv");
        assert_eq!(accepted.len(), 1);
        let (sid, _, peer) = accepted[0];
        assert!(sid.is_stream());
        assert_eq!(peer.ip(), sim.nat("cli").public_ip(), "the NAT's public IP");
        assert_eq!(peer.port(), local.port(), "the connection's port");
        assert_eq!(sim.streams("cli"), vec![(id, local, srv)]);

        // 300 frames each way, sent in bursts while echoes come back.
        for burst in 0..10 {
            send(&mut sim, "cli", id, burst * 30..(burst + 1) * 30);
            sim.advance(7 * MS);
        }
        sim.with_node::<Probe, _>("cli", |p, _| {
            p.requests.push_back(SocketRequest::Close { id });
        });
        send(&mut sim, "cli", id, 300..301); // after the close: not sent
        sim.advance(5 * SECOND);
        let expected: Vec<u32> = (0..300).collect();
        let srv_probe = sim.node::<Probe>("srv");
        assert_eq!(srv_probe.numbers(sid), expected, "in order, once each");
        assert!(srv_probe.got.iter().all(|(_, from, _)| *from == peer));
        assert_eq!(srv_probe.closed.len(), 1, "told once");
        let cli = sim.node::<Probe>("cli");
        let echoed = cli.numbers(id);
        assert!(
            echoed.iter().copied().eq(0..echoed.len() as u32),
            "echoes in order until the close: {echoed:?}"
        );
        assert!(
            cli.closed.is_empty(),
            "no handle_stream_closed for a stream closed by its node"
        );
        let stats = sim.stream_stats();
        assert_eq!(stats.opened, 1);
        assert_eq!(stats.unknown, 1, "the frame sent after the close");
        assert!(stats.retransmitted > 50, "20% loss on each leg: {stats:?}");
        assert_eq!(
            stats.frames + stats.dropped,
            600,
            "300 + echoes that were sent: {stats:?}"
        );
        assert!(sim.streams("srv").is_empty() && sim.streams("cli").is_empty());
    }

    #[test]
    fn a_stalled_flow_takes_frames_up_to_the_runtimes_cap_prefixes_included() {
        let (mut sim, _, id) = connected_probes(9, Edge::Open);
        sim.apply(Action::partition("cli", "srv")).unwrap();
        send_sized(&mut sim, "cli", id, 0..300, 1000);
        // 261 frames of 2 + 1000 bytes fit in 256 KiB; a 262nd would not.
        let fit = pierce_core::framing::DEFAULT_STREAM_BUFFER / 1002;
        assert_eq!(fit, 261);
        assert_eq!(sim.stream_stats().overflow, 300 - fit as u64);
        sim.apply(Action::heal("cli", "srv")).unwrap();
        sim.advance(SECOND);
        let got = sim.node::<Probe>("srv").numbers(sim.streams("srv")[0].0);
        assert_eq!(got, (0..fit as u32).collect::<Vec<_>>());
    }

    #[test]
    fn connects_to_clients_and_crashed_hosts_are_refused_and_to_nowhere_time_out() {
        let link = LinkProfile::symmetric(LinkConfig::with_latency(5 * MS));
        let mut sim = Scenario::new(2)
            .client("c", Edge::Open)
            .client_config({
                let mut c = ClientConfig::default();
                c.transport = Transport::Udp;
                c
            })
            .link(link.clone())
            .build();
        let srv = sim.add_node("srv", Edge::Open, PROBE_PORT, &link, Probe::echo());
        sim.add_node("cli", Edge::Open, PROBE_PORT, &link, Probe::default());
        let start = sim.now();
        sim.with_node::<Probe, _>("cli", |p, _| p.epoch = Some(start));
        let client = sim.host_addr("c");
        let nowhere = SocketAddr::from(([203, 0, 113, 9], 7777));
        connect(&mut sim, "cli", 1, client);
        connect(&mut sim, "cli", 2, nowhere);
        sim.apply(Action::crash("srv")).unwrap();
        connect(&mut sim, "cli", 3, srv);
        sim.advance(10 * SECOND);
        let probe = sim.node::<Probe>("cli");
        let id = SocketId::stream;
        // A reset is a refusal (`handle_stream_refused`); silence is a failed open.
        let mut refused = probe.refused.clone();
        refused.sort_by_key(|r| r.1);
        assert_eq!(refused, vec![(20 * MS, id(1)), (20 * MS, id(3))]);
        let timed_out = (crate::STREAM_CONNECT_TIMEOUT, id(2), None);
        assert_eq!(probe.opened, vec![timed_out]);
        let stats = sim.stream_stats();
        assert_eq!((stats.refused, stats.timed_out, stats.opened), (2, 1, 0));
        assert!(sim.streams("cli").is_empty());
    }

    #[test]
    fn a_crash_or_restart_closes_the_other_end_after_what_was_in_flight() {
        let (mut sim, _, id) = connected_probes(3, Edge::Open);
        send(&mut sim, "cli", id, 0..5);
        sim.advance(15 * MS);
        // srv dies 5 ms before the frames reach it; its kernel's FIN is on its way at once.
        sim.apply(Action::crash("srv")).unwrap();
        sim.advance(SECOND);
        let cli = sim.node::<Probe>("cli");
        assert_eq!(cli.numbers(id), Vec::<u32>::new(), "nothing echoed");
        assert_eq!(cli.closed, vec![(135 * MS, id)], "FIN after one trip");
        assert!(sim.streams("cli").is_empty() && sim.streams("srv").is_empty());
        let stats = sim.stream_stats();
        assert_eq!((stats.closed, stats.dropped), (1, 5), "{stats:?}");
        send(&mut sim, "cli", id, 5..6);
        assert_eq!(sim.stream_stats().unknown, 1, "a closed stream");

        // A restarting server closes its streams the same way.
        let link = LinkProfile::symmetric(LinkConfig::with_latency(10 * MS));
        let mut sim = Scenario::new(3).link(link.clone()).build();
        sim.add_node("cli", Edge::Open, PROBE_PORT, &link, Probe::default());
        let server = sim.server_addr();
        let id = connect(&mut sim, "cli", 1, server);
        sim.advance(100 * MS);
        assert_eq!(sim.streams("server").len(), 1);
        sim.apply(Action::RestartServer).unwrap();
        sim.advance(100 * MS);
        assert_eq!(sim.node::<Probe>("cli").closed.len(), 1);
        assert!(sim.streams("server").is_empty());
        let id2 = connect(&mut sim, "cli", 2, server);
        sim.advance(100 * MS);
        assert_eq!(sim.streams("cli").len(), 1, "the new server accepts");
        assert_ne!(id, id2);
    }

    #[test]
    fn frames_wait_out_a_short_outage_and_a_long_one_breaks_the_stream() {
        let (mut sim, _, id) = connected_probes(5, Edge::nat(NatConfig::port_restricted()));
        send(&mut sim, "cli", id, 0..3);
        sim.advance(5 * MS);
        sim.apply(Action::offline("srv")).unwrap();
        send(&mut sim, "cli", id, 3..6);
        sim.advance(3 * SECOND);
        assert!(sim.node::<Probe>("cli").numbers(id).is_empty());
        sim.apply(Action::online("srv")).unwrap();
        sim.advance(100 * MS);
        assert_eq!(
            sim.node::<Probe>("cli").numbers(id),
            (0..6).collect::<Vec<_>>()
        );
        assert!(sim.node::<Probe>("cli").closed.is_empty());

        // Nothing to send: an outage goes unnoticed.
        sim.apply(Action::partition("cli", "srv")).unwrap();
        sim.advance(30 * SECOND);
        assert_eq!(sim.streams("cli").len(), 1);
        // Something to send: the stream breaks at both ends after the stall timeout.
        let t0 = sim.elapsed();
        send(&mut sim, "cli", id, 6..7);
        sim.advance(30 * SECOND);
        let stall = crate::STREAM_STALL_TIMEOUT + 20 * MS;
        assert_eq!(sim.node::<Probe>("cli").closed, vec![(t0 + stall, id)]);
        assert_eq!(sim.node::<Probe>("srv").closed.len(), 1);
        let stats = sim.stream_stats();
        assert_eq!((stats.broken, stats.dropped), (1, 1), "{stats:?}");
    }

    #[test]
    fn a_roam_resets_the_streams_of_every_host_behind_the_nat() {
        let link = LinkProfile::symmetric(LinkConfig::with_latency(10 * MS));
        let (mut sim, srv) = probes(6, Edge::nat(NatConfig::port_restricted()), &link);
        sim.add_node_beside("cli2", "cli", PROBE_PORT, &link, Probe::default());
        connect(&mut sim, "cli", 1, srv);
        let id2 = connect(&mut sim, "cli2", 1, srv);
        sim.advance(100 * MS);
        let peers: Vec<SocketAddr> = sim.streams("srv").iter().map(|s| s.2).collect();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].ip(), peers[1].ip(), "one public IP");
        assert_ne!(peers[0].port(), peers[1].port(), "a port per connection");
        sim.apply(Action::rebind("cli")).unwrap();
        assert_eq!(sim.streams("srv").len(), 2, "a rebind leaves TCP alone");
        sim.apply(Action::roam("cli2")).unwrap();
        assert!(sim.streams("srv").is_empty());
        assert_eq!(sim.node::<Probe>("cli").closed.len(), 1);
        assert_eq!(sim.node::<Probe>("cli2").closed[0].1, id2);
        assert_eq!(sim.node::<Probe>("srv").closed.len(), 2);
        assert_eq!(sim.stream_stats().broken, 2);
    }

    /// A runtime-level TCP-only client: a UDP-only core `Client` whose datagrams to the
    /// server go down a stream. Exercises the server's stream support without the core
    /// client's own TCP fallback.
    struct Shim {
        client: Client,
        server: SocketAddr,
        next: u16,
        stream: Option<SocketId>,
        requests: VecDeque<SocketRequest>,
    }

    impl Shim {
        fn new(now: Instant, server: SocketAddr) -> Self {
            let mut config = ClientConfig::default();
            config.transport = Transport::Udp;
            let mut client = Client::new(Arc::new(config), [7; 32], now).unwrap();
            client.connect(now, server, &[]).unwrap();
            let mut shim = Self {
                client,
                server,
                next: 0,
                stream: None,
                requests: VecDeque::new(),
            };
            shim.connect();
            shim
        }

        fn connect(&mut self) {
            self.next += 1;
            let (id, addr) = (SocketId::stream(self.next), self.server);
            self.requests.push_back(SocketRequest::Connect { id, addr });
        }
    }

    impl Endpoint for Shim {
        fn handle_datagram_on(
            &mut self,
            now: Instant,
            socket: SocketId,
            from: SocketAddr,
            datagram: &[u8],
        ) {
            let from = if socket.is_stream() {
                self.server
            } else {
                from
            };
            self.client
                .handle_datagram_on(now, SocketId::PRIMARY, from, datagram);
        }
        fn poll_socket_request(&mut self) -> Option<SocketRequest> {
            self.requests
                .pop_front()
                .or_else(|| self.client.poll_socket_request())
        }
        fn handle_socket_opened(&mut self, now: Instant, id: SocketId, local: Option<SocketAddr>) {
            if !id.is_stream() {
                self.client.handle_socket_opened(now, id, local);
            } else if local.is_some() {
                self.stream = Some(id);
            } else {
                self.connect();
            }
        }
        fn handle_stream_closed(&mut self, _now: Instant, id: SocketId) {
            if self.stream == Some(id) {
                self.stream = None;
                self.connect();
            }
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.client.handle_timeout(now);
        }
        fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
            loop {
                let t = self.client.poll_transmit(now, buf)?;
                if t.socket != SocketId::PRIMARY || t.dst != self.server {
                    return Some(t);
                }
                if let Some(socket) = self.stream {
                    return Some(Transmit { socket, ..t });
                }
            }
        }
        fn poll_timeout(&self) -> Option<pierce_core::Timeout> {
            self.client.poll_timeout()
        }
    }

    impl Events for Shim {
        type Event = ClientEvent;

        fn poll_event(&mut self) -> Option<ClientEvent> {
            self.client.poll_event()
        }
    }

    impl Node for Shim {
        type Stats = pierce_core::ClientStats;
        fn stats(&self) -> Self::Stats {
            self.client.stats()
        }
    }

    #[test]
    fn a_client_whose_datagrams_go_down_a_stream_connects_to_the_real_server() {
        let link = LinkProfile::broadband();
        let mut sim = Scenario::new(8).link(link.clone()).build();
        let server = sim.server_addr();
        sim.add_node_with(
            "t",
            Edge::nat(NatConfig::symmetric()),
            5000,
            &link,
            |_, now| Shim::new(now, server),
        );
        sim.apply(Action::block_udp("t")).unwrap();
        sim.eventually("t connects over TCP", 5 * SECOND, |s| {
            s.connected("t").is_some()
        });
        let c = sim.expect_connected("t");
        let (_, _, seen) = sim.streams("server")[0];
        assert_eq!(
            c.public_addr, seen,
            "the server saw it at the stream's address"
        );
        assert!(sim.server().client_socket(c.host_id).unwrap().is_stream());
        let sent = sim.with_server(|s, now| s.send(now, c.host_id, b"over tcp"));
        assert!(sent.is_ok());
        sim.advance(SECOND);
        let got = sim.client_events("t").any(|(_, e)| {
            matches!(e, ClientEvent::Message { payload } if payload[..] == b"over tcp"[..])
        });
        assert!(got, "{:?}", sim.event_lines("t"));
        assert_eq!(sim.net_stats().firewall, 0, "nothing tried UDP");
    }

    #[test]
    fn idle_streams_from_the_players_own_nat_keep_no_tcp_player_out() {
        // Sixteen idle streams from the public address two TCP-only players share (twice
        // what one address may hold without a session), a second and a half old when the
        // players start: each player's stream closes the oldest holder, and both connect
        // in one handshake's time, without a back-off.
        let link = LinkProfile::broadband();
        let mut tcp = ClientConfig::default();
        tcp.transport = Transport::Tcp;
        let mut sim = Scenario::new(12)
            .client("a", Edge::nat(NatConfig::port_restricted()))
            .client_beside("b", "a")
            .client_config(tcp)
            .link(link.clone())
            .build();
        for name in ["a", "b"] {
            sim.apply(Action::crash(name)).unwrap();
        }
        let server = sim.server_addr();
        sim.add_node_beside("h", "a", PROBE_PORT, &link, Probe::default());
        for n in 1..=16 {
            connect(&mut sim, "h", n, server);
        }
        sim.advance(1500 * MS);
        assert_eq!(sim.streams("server").len(), 16);
        let start = sim.now() - sim.epoch();
        for name in ["a", "b"] {
            sim.apply(Action::reconnect(name)).unwrap();
        }
        sim.eventually("both players connect", 5 * SECOND, |s| {
            s.connected("a").is_some() && s.connected("b").is_some()
        });
        for name in ["a", "b"] {
            let took = sim.expect_connected(name).at - start;
            assert!(took < 300 * MS, "{name} took {took:?}");
            assert!(sim.client(name).on_tcp());
        }
        assert_eq!(sim.server().stats().streams_evicted, 2);
        let closed: Vec<SocketId> = sim.node::<Probe>("h").closed.iter().map(|c| c.1).collect();
        assert_eq!(
            closed,
            [SocketId::stream(1), SocketId::stream(2)],
            "the oldest two"
        );
    }

    #[test]
    fn udp_of_a_blocked_host_is_dropped_and_counted_while_its_streams_pass() {
        let link = LinkProfile::symmetric(LinkConfig::with_latency(5 * MS));
        let mut config = ClientConfig::default();
        config.transport = Transport::Udp;
        let mut sim = Scenario::new(4)
            .server(Edge::Open)
            .client("a", Edge::nat(NatConfig::port_restricted()))
            .client_config(config)
            .link(link.clone())
            .trace_packets(true)
            .at(Duration::ZERO, Action::block_udp("a"))
            .build();
        sim.add_node_beside("cli", "a", PROBE_PORT, &link, Probe::default());
        sim.advance(3 * SECOND);
        assert!(sim.connected("a").is_none(), "UDP only, and UDP is blocked");
        let blocked = sim.net_stats().firewall;
        assert!(blocked >= 3, "hellos dropped: {blocked}");
        assert_eq!(
            sim.nat("a").live_bindings(sim.now()),
            0,
            "stopped before the NAT"
        );

        // A stream from behind the same NAT is not affected by a's firewall, nor by its own.
        let probe = sim.add_node("srv", Edge::Open, PROBE_PORT, &link, Probe::echo());
        sim.apply(Action::block_udp("cli")).unwrap();
        let id = connect(&mut sim, "cli", 1, probe);
        sim.advance(100 * MS);
        send(&mut sim, "cli", id, 0..3);
        sim.advance(100 * MS);
        assert_eq!(sim.node::<Probe>("cli").numbers(id), vec![0, 1, 2]);

        sim.apply(Action::unblock_udp("a")).unwrap();
        sim.eventually("a connects once unblocked", 5 * SECOND, |s| {
            s.connected("a").is_some()
        });
        let firewalled = sim
            .packets()
            .iter()
            .filter(|p| {
                p.from == "a"
                    && p.fates.iter().any(|f| {
                        matches!(
                            f,
                            PacketFate::Dropped {
                                cause: DropCause::Net(NetDrop::Firewall),
                                ..
                            }
                        )
                    })
            })
            .count();
        assert_eq!(firewalled as u64, blocked, "the trace says why");
        let tcp = sim.packets().iter().filter(|p| p.tcp).count();
        assert_eq!(tcp, 6, "3 frames and 3 echoes, marked TCP");
    }
}
