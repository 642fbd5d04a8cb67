//! One peer connection's reliability: what was sent in which packet, what the peer
//! acknowledged, what is lost, what to send next, and what to hand to the application.
//!
//! Loss detection follows RFC 9002: a packet is lost once a packet sent 3 later is
//! acknowledged, or 9/8 RTT after a later one was; a probe timeout (PTO) elicits an ack when
//! everything in flight went quiet. Congestion control ([`super::cc`]) is a NewReno-style
//! window in bytes that reduces only for congestion, not random loss, and undoes reductions
//! that reordering caused; a pacer spreads the window over an RTT. On a link that loses at
//! random, small unacknowledged reliable messages also ride again in the spare room of later
//! packets (copies, see `Copy`), so one loss does not cost a loss-detection delay and hold
//! back an ordered channel. Expiry is two-phase so an expired message
//! can never be delivered afterwards: at its deadline the sender stops sending it and raises
//! the channel's floor; `MessageExpired` is reported only once the peer acknowledged the
//! packet carrying that floor, after which it discards anything below it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::cc::{Congestion, INITIAL_WINDOW_PACKETS};
use super::ranges::RangeSet;
use super::rtt::{MAX_RTO, RttEstimator};
use super::seqmap::SeqMap;
use super::{
    Channel, ChannelConfig, ChannelStats, Delivery, MessageId, PeerDropReason, SendOptions,
};
use crate::arena::Arena;
use crate::error::SendError;
use crate::time::{Duration, Instant};
use crate::wire::Writer;
use crate::wire::frame::{AckFrame, Frame, MESSAGE_FRAME_OVERHEAD};

/// Received packet-number ranges remembered for acks.
const ACK_RANGES_KEPT: usize = 32;
/// Ranges one ack reports at most, and how far below the largest received packet number a
/// range may end and still be reported. Older holes were repaired long ago: the sender
/// declared those packets lost after 3 later ones were acknowledged, so repeating them only
/// makes every ack longer (measured: 230-byte acks at 5% loss before this cap).
const ACK_RANGES_SENT: usize = 8;
const ACK_RANGE_WINDOW: u64 = 64;
/// Frames one sent packet records without allocating (a full packet of small messages).
const SENT_FRAMES_INLINE: usize = 16;
/// The longest ack delay a peer may report and that we credit (RFC 9000's default
/// `max_ack_delay`); [`Limits::ack_delay`] is at most this.
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(25);
/// Packet-count loss threshold (RFC 9002 §6.1.1).
const PACKET_THRESHOLD: u64 = 3;
/// Once a packet declared lost is acknowledged after all (the path reorders), loss detection
/// stops counting packets and waits a quarter of the smoothed RTT more per such event, up
/// to one RTT (RACK, RFC 8985 §6.2: `reo_wnd` in steps of a quarter of the minimum RTT).
/// Reordering by per-packet jitter at 10 Mbit/s is 30 packets deep: no packet count fits.
const REORDER_WINDOW_STEP_DIV: u32 = 4;
/// Messages a receiver buffers ahead of the next in-order one, per channel; a sender cannot
/// be further ahead than its own unacknowledged messages anyway.
const RECV_WINDOW: u32 = 1 << 16;
/// Consecutive probe timeouts after which everything in flight is declared lost and the
/// window collapses (RFC 9002 §7.6 persistent congestion): keeps the bookkeeping of a peer
/// that stopped acknowledging bounded by one window.
const PERSISTENT_CONGESTION_PTOS: u32 = 3;
/// Largest fragment that gets copies in later packets' spare room (see [`Copy`]): a game's
/// tick-sized messages, not a transfer's full fragments.
const COPY_MAX_LEN: u32 = 256;
/// Recently sent small fragments remembered for copies, at most.
const COPIES_TRACKED: usize = 64;
/// Loss rate below which nothing is copied: a loss there costs one loss-detection delay and
/// is rare enough that a copy's bytes do not pay. Measured in `rudp_vs_peers` (rel64_n2):
/// at 2% loss ("average") one copy per tick halved the reliable p99 (182 to 93 ms) but
/// doubled the bytes of small messages and took a mid-game 1 MiB transfer over 1.3 wire
/// bytes per payload byte (1.22 to 1.34); at 10% ("poor") three copies cut p99 from 686 to
/// 166 ms. A threshold of 5% let the estimate's early swings at 10% loss switch copies off
/// often enough to cost p99 (272 ms); 3% keeps them on there (208 ms) and off at 2%.
const COPY_LOSS_MIN: f64 = 0.03;
/// A message is copied until the chance that it and every copy are lost falls under this.
/// On an ordered channel a lost message holds back every one sent after it until it is
/// recovered, about 25 at 60 Hz over a 200 ms RTT, so one in 2000 keeps nearly all under
/// the 1% tail: at 10% random loss that is three copies.
const COPY_TARGET: f64 = 5e-4;
/// Copies of one fragment at most, besides its transmission.
const COPIES_MAX: u8 = 3;
/// The loss-rate estimate averages over about this many resolved packets (fewer at first),
/// about 8 s of a 60 Hz stream: at 2% loss its noise must seldom reach [`COPY_LOSS_MIN`]
/// (with 256, copies at 2% added 13% to the bytes for no gain in p99).
const LOSS_WINDOW: u32 = 512;
/// Resolved packets the first estimate waits for (a plain average until then).
const LOSS_WINDOW_MIN: u32 = 16;
/// The burst estimate (see `Connection::burst_rate`) averages over this many packets that
/// followed a lost one, and trusts itself after [`BURST_WINDOW_MIN`] (it assumes random loss
/// until then).
const BURST_WINDOW: u32 = 64;
const BURST_WINDOW_MIN: u32 = 8;
/// Chance that a copy is lost with the original above which copies are not sent: the loss
/// comes in bursts longer than the packets between copies (Wi-Fi), and copies would only
/// add bytes (`rudp_vs_peers`' Wi-Fi profile: +50% bytes, same p99, before this rule). Three
/// times a poor link's random loss, so that the estimate's noise there (64 samples) never
/// reaches it.
const BURST_COPY_MAX: f64 = 0.3;
/// Space kept free in each packet for an ack when data is written.
pub const ACK_RESERVE: usize = 64;
/// Ack at once when the ack-eliciting packets received since the last ack weigh this much:
/// a packet with anything reliable (or a ping, or a floor) weighs half, so two of them are
/// acknowledged at once (RFC 9000 §13.2.2); one that carries only unreliable messages weighs
/// its size, so small unreliable packets (a game's ticks) are acknowledged every two
/// full-size datagrams' worth or when `ack_delay` passes, whichever comes first, not every
/// second packet: the acks exist only for congestion control and loss statistics there, and
/// through the relay each one costs the server a datagram (`relay_vs_coturn`: 0.50 acks per
/// relayed 100-byte datagram before, see the README). The smallest congestion window
/// ([`super::cc::MIN_WINDOW_PACKETS`] full packets) is twice this, so a sender never waits on the delay
/// timer with its window full.
const ACK_EVERY_BYTES: usize = 2 * crate::BASE_DATAGRAM_SIZE;

/// Whether a received packet asks for an acknowledgement, and how soon (ordered: a packet
/// asks as its most demanding frame does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Elicit {
    /// Acks only: no ack for it.
    No,
    /// Unreliable messages only: acknowledged by weight (see [`ACK_EVERY_BYTES`]).
    Unreliable,
    /// Something reliable, a floor or a ping: every second such packet is acknowledged.
    Yes,
}

/// Events for the owner.
#[derive(Debug)]
pub enum ConnEvent {
    /// A message is delivered.
    Message {
        /// Its channel.
        channel: Channel,
        /// Its bytes.
        payload: Bytes,
    },
    /// A reliable message expired (its floor was acknowledged; it will never be delivered).
    Expired {
        /// Its channel.
        channel: Channel,
        /// The id `send` returned.
        id: MessageId,
    },
}

/// What one packet carried that matters once it is acknowledged or lost.
#[derive(Clone, Copy, Debug)]
enum SentFrame {
    Msg {
        channel: u8,
        seq: u32,
        offset: u32,
        len: u32,
    },
    Floor {
        channel: u8,
        seq: u32,
    },
    /// Unreliable data: nothing to do on ack or loss, but the packet elicits an ack.
    Unreliable,
}

#[derive(Debug)]
struct Sent {
    pn: u64,
    time: Instant,
    size: usize,
    ack_eliciting: bool,
    /// Still neither acknowledged nor declared lost.
    in_flight: bool,
    /// Declared lost, with the congestion episode it was counted in (if the controller
    /// reduced the window for it): kept a while so a late ack can undo the reduction.
    lost: Option<Option<u32>>,
    frames: SmallVec<[SentFrame; SENT_FRAMES_INLINE]>,
}

impl Sent {
    /// `Some(true)` if declared lost (and not acknowledged since), `Some(false)` if
    /// acknowledged, `None` while in flight or for a packet that elicits no ack.
    fn resolved(&self) -> Option<bool> {
        if self.size == 0 {
            Some(false)
        } else {
            self.lost.map(|_| true)
        }
    }
}

/// A small reliable fragment sent recently: while it is unacknowledged, copies of it ride in
/// the spare room of later packets that go out anyway, so on a lossy link it arrives one
/// packet later instead of one loss-detection delay (more than an RTT) later, and an ordered
/// channel is not held behind it. How many copies depends on the loss rate the connection
/// measures (none under [`COPY_LOSS_MIN`]).
#[derive(Clone, Copy, Debug)]
struct Copy {
    channel: u8,
    seq: u32,
    offset: u32,
    len: u32,
    /// Copies still to send.
    left: u8,
    /// The packet that last carried it (a copy never rides in the same packet).
    pn: u64,
}

/// A reliable message not yet fully acknowledged.
#[derive(Debug)]
struct Live {
    id: MessageId,
    /// The newest packet that carried any of it: a loss of an older packet does not resend
    /// an unfragmented message that a newer packet still carries.
    newest_pn: u64,
    payload: Bytes,
    /// Acknowledged byte ranges of the message.
    acked: RangeSet,
    deadline: Option<Instant>,
    max_retransmits: Option<u32>,
    retransmits: u32,
}

/// A message (or the rest of one) not yet sent for the first time.
#[derive(Debug)]
struct Pending {
    seq: u32,
    payload: Bytes,
    /// Next byte to send.
    offset: u32,
}

#[derive(Debug)]
struct Partial {
    buf: BytesMut,
    got: RangeSet,
}

#[derive(Debug)]
struct Chan {
    delivery: Delivery,
    priority: u8,
    // ---- send side
    next_seq: u32,
    pending: VecDeque<Pending>,
    /// Lost fragments to send again: (seq, offset, len).
    retx: VecDeque<(u32, u32, u32)>,
    live: SeqMap<Live>,
    /// Lowest sequence number that may still be sent.
    floor: u32,
    /// Highest floor the peer acknowledged.
    floor_acked: u32,
    floor_dirty: bool,
    /// Expired messages waiting for the floor that covers them to be acknowledged.
    expiring: BTreeMap<u32, MessageId>,
    // ---- receive side
    /// Ordered: next to deliver. Unordered: everything below is delivered.
    recv_next: u32,
    /// Ordered: complete messages waiting for earlier ones. Unordered: delivered above
    /// `recv_next` (empty payloads).
    recv_buf: BTreeMap<u32, Bytes>,
    /// Sequenced: newest delivered.
    last_delivered: Option<u32>,
    partial: BTreeMap<u32, Partial>,
    stats: ChannelStats,
}

impl Chan {
    fn new(cfg: ChannelConfig) -> Self {
        Self {
            delivery: cfg.delivery,
            priority: cfg.priority,
            next_seq: 0,
            pending: VecDeque::new(),
            retx: VecDeque::new(),
            live: SeqMap::default(),
            floor: 0,
            floor_acked: 0,
            floor_dirty: false,
            expiring: BTreeMap::new(),
            recv_next: 0,
            recv_buf: BTreeMap::new(),
            last_delivered: None,
            partial: BTreeMap::new(),
            stats: ChannelStats::default(),
        }
    }

    /// True if a packet would carry data: new messages, or retransmissions that are still
    /// needed. A fragment can be acknowledged after it was declared lost (a late ack), so
    /// the retransmission queue may hold entries that no longer need sending; counting those
    /// made `wants_transmit` promise data that `write` then did not produce (found by the
    /// chaos suite, seeds 269 and 735).
    fn has_data(&self) -> bool {
        !self.pending.is_empty()
            || self.retx.iter().any(|&(seq, offset, _)| {
                self.live.get(seq).is_some_and(|l| {
                    !l.acked.contains(u64::from(offset))
                        && l.max_retransmits.is_none_or(|m| l.retransmits < m)
                })
            })
    }

    /// Lowest sequence number still alive (sent or queued, not acknowledged, not expired).
    fn lowest_alive(&self) -> u32 {
        let live = self.live.first_key();
        let pending = self.pending.iter().map(|p| p.seq).min();
        match (live, pending) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.next_seq,
        }
    }

    fn is_duplicate(&self, seq: u32) -> bool {
        match self.delivery {
            Delivery::ReliableOrdered => seq < self.recv_next || self.recv_buf.contains_key(&seq),
            Delivery::ReliableUnordered => seq < self.recv_next || self.recv_buf.contains_key(&seq),
            Delivery::ReliableSequenced | Delivery::UnreliableSequenced => {
                self.last_delivered.is_some_and(|l| seq <= l) || seq < self.recv_next
            }
            Delivery::Unreliable => false,
        }
    }
}

/// Limits a connection enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of one fragment's data at the base packet size: the largest unreliable message
    /// (never fragmented), and the least reliable data is cut to. Reliable messages are cut
    /// to the room each packet has ([`Connection::write`]), which grows with the path-MTU.
    pub fragment_size: usize,
    /// Largest message accepted in either direction.
    pub max_message_size: usize,
    /// Bytes of partial messages held at once.
    pub max_reassembly_bytes: usize,
    /// Bytes queued or unacknowledged at once on the send side.
    pub max_send_buffer: usize,
    /// Largest datagram, for the congestion window's unit (the path's, once discovery
    /// raised it: [`Connection::set_path_mtu`]).
    pub mtu: usize,
    /// An ack goes out at most this long after an ack-eliciting packet arrived (at once after
    /// two, or on reordering), riding on data sent meanwhile. 20 ms (`ClientConfig`'s
    /// default) lets 60 Hz traffic carry its acks in the next tick's packet; 5 ms recovers
    /// losses sooner for twice the packets. At most [`MAX_ACK_DELAY`].
    pub ack_delay: Duration,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    /// Packets written.
    pub packets_sent: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Bytes written, with the overhead the caller declared.
    pub bytes_out: u64,
    /// Bytes received, as the caller declared them.
    pub bytes_in: u64,
    /// Messages queued.
    pub messages_out: u64,
    /// Messages delivered.
    pub messages_in: u64,
    /// Fragments sent again.
    pub retransmits: u64,
    /// Copies of small unacknowledged fragments sent in spare room (not counted as
    /// retransmissions).
    pub copies: u64,
    /// Frames dropped as duplicates or below a floor.
    pub duplicates: u64,
}

/// One peer connection's reliability state machine (see the module docs). The client drives
/// one per peer; it is public as a building block for fuzzing, benchmarks and custom
/// transports.
///
/// Driving it: [`Connection::send`] queues; [`Connection::write`] fills one packet's frames
/// (the caller numbers and seals the packet); a received packet, once authenticated and its
/// frames decoded ([`crate::wire::frame::decode_all`]), goes to
/// [`Connection::handle_packet`]; [`Connection::handle_timeout`] at
/// [`Connection::poll_timeout`]; events from [`Connection::poll_event`].
pub struct Connection {
    limits: Limits,
    /// The latest time any call passed in (for [`Self::poll_timeout`], which takes none).
    now: Option<Instant>,
    chans: Vec<Chan>,
    rtt: RttEstimator,
    latest_rtt: Duration,
    // ---- send side
    next_id: u64,
    sent: VecDeque<Sent>,
    largest_acked: Option<u64>,
    loss_time: Option<Instant>,
    /// The path reordered: loss detection by time only, this much later (see
    /// [`REORDER_WINDOW_STEP_DIV`]).
    reorder_window: Option<Duration>,
    pto_count: u32,
    last_ack_eliciting: Option<Instant>,
    probes: u32,
    in_flight: usize,
    cc: Congestion,
    /// Pacer tokens (bytes) and when they were last refilled.
    pace_tokens: usize,
    pace_at: Option<Instant>,
    /// Bytes queued (first transmission pending) plus bytes of live reliable messages.
    buffered: usize,
    /// Channel round-robin cursor.
    rr: usize,
    /// The channels' distinct priorities, highest first (fixed at creation: `write` needs
    /// them for every packet).
    priorities: SmallVec<[u8; 8]>,
    deadlines: BTreeSet<(Instant, u8, u32)>,
    /// Messages whose retry budget ran out, to expire at the next timeout.
    exhausted: SmallVec<[(u8, u32); 4]>,
    /// Small fragments to copy into spare room (see [`Copy`]).
    copies: VecDeque<Copy>,
    /// Packets lost per packet resolved (lost or acknowledged), a moving average over
    /// [`LOSS_WINDOW`] packets, and how many were resolved (up to that).
    loss_rate: f64,
    loss_samples: u32,
    /// [`Self::copies_wanted`] as of the last estimates (`None`: they changed since).
    copies_k: Option<u8>,
    /// Copies in spare room are allowed ([`Self::set_spare_room_copies`]).
    copies_on: bool,
    /// Packets lost right after a lost one per such packet resolved: the chance that a copy
    /// in the next packet is lost with the original (random loss: the loss rate; a burst:
    /// near 1). Averaged like `loss_rate` over [`BURST_WINDOW`] samples.
    burst_rate: f64,
    burst_samples: u32,
    // ---- receive side
    received: RangeSet,
    largest_received_at: Option<Instant>,
    ack_eliciting_since_ack: u32,
    /// Weight of those packets (see [`ACK_EVERY_BYTES`]).
    ack_debt: usize,
    ack_deadline: Option<Instant>,
    reassembly_bytes: usize,
    violation: Option<PeerDropReason>,
    arena: Arena,
    events: VecDeque<ConnEvent>,
    /// Counters.
    pub stats: ConnStats,
}

impl Connection {
    /// A connection with `channels` (indexed by [`Channel`]) and `limits`.
    pub fn new(channels: &[ChannelConfig], limits: Limits) -> Self {
        let mut priorities: SmallVec<[u8; 8]> = channels.iter().map(|c| c.priority).collect();
        priorities.sort_unstable_by(|a, b| b.cmp(a));
        priorities.dedup();
        Self {
            limits,
            now: None,
            chans: channels.iter().map(|c| Chan::new(*c)).collect(),
            rtt: RttEstimator::default(),
            latest_rtt: Duration::ZERO,
            next_id: 0,
            sent: VecDeque::new(),
            largest_acked: None,
            loss_time: None,
            reorder_window: None,
            pto_count: 0,
            last_ack_eliciting: None,
            probes: 0,
            in_flight: 0,
            cc: Congestion::new(limits.mtu),
            pace_tokens: INITIAL_WINDOW_PACKETS * limits.mtu,
            pace_at: None,
            buffered: 0,
            rr: 0,
            priorities,
            deadlines: BTreeSet::new(),
            exhausted: SmallVec::new(),
            copies: VecDeque::new(),
            loss_rate: 0.0,
            loss_samples: 0,
            copies_k: None,
            copies_on: true,
            burst_rate: 0.0,
            burst_samples: 0,
            received: RangeSet::default(),
            largest_received_at: None,
            ack_eliciting_since_ack: 0,
            ack_debt: 0,
            ack_deadline: None,
            reassembly_bytes: 0,
            violation: None,
            // Reassembled and delivered payloads: a few KiB for a quiet peer, growing to
            // 64 KiB chunks for a busy one (a client holds one per peer).
            arena: Arena::growing(2048),
            events: VecDeque::new(),
            stats: ConnStats::default(),
        }
    }

    // ---- getters ---------------------------------------------------------------------

    /// Smoothed round-trip time.
    pub fn srtt(&self) -> Duration {
        self.rtt.srtt()
    }

    /// Round-trip time variation.
    pub fn rtt_var(&self) -> Duration {
        self.rtt.rttvar()
    }

    /// Congestion window, bytes.
    pub fn cwnd(&self) -> usize {
        self.cc.window()
    }

    /// The probe timeout without backoff (RFC 9002 §6.2.1): how long an acknowledgement may
    /// take; `None` until an RTT sample came (an idle connection has none). Path-MTU probes
    /// ([`crate::reliability::Pmtud`]) are declared lost after it.
    pub fn probe_timeout(&self) -> Option<Duration> {
        self.rtt.measured()?;
        Some(
            self.rtt.srtt()
                + (self.rtt.rttvar() * 4).max(Duration::from_millis(1))
                + self.limits.ack_delay,
        )
    }

    /// The largest datagram of the path in use changed (path-MTU discovery, a path switch):
    /// the congestion window's unit and the pacer's burst follow it. Fragments need no
    /// telling: [`Self::write`] cuts new data to the room it is given, and splits a lost
    /// fragment that no longer fits.
    pub fn set_path_mtu(&mut self, mtu: usize) {
        if mtu != self.limits.mtu {
            self.limits.mtu = mtu;
            self.cc.set_mtu(mtu);
        }
    }

    /// Bytes of a fragment in a packet whose frames may take `room` bytes: all of it but the
    /// room an ack needs, and never less than [`Limits::fragment_size`].
    fn fragment_for(&self, room: usize) -> usize {
        let fits = room.saturating_sub(ACK_RESERVE + MESSAGE_FRAME_OVERHEAD);
        self.limits.fragment_size.max(fits)
    }

    /// Whether small unacknowledged reliable fragments may get copies in the spare room of
    /// later packets when the link loses at random (on by default; see the module docs).
    /// Off, a lost message waits for loss detection.
    pub fn set_spare_room_copies(&mut self, on: bool) {
        self.copies_on = on;
        if !on {
            self.copies.clear();
        }
        self.copies_k = None;
    }

    /// Reliable messages neither acknowledged nor expired (queued ones included).
    pub fn unacked(&self) -> usize {
        self.chans
            .iter()
            .map(|c| {
                let queued_only = c
                    .pending
                    .iter()
                    .filter(|p| c.delivery.is_reliable() && !c.live.contains_key(p.seq))
                    .count();
                c.live.len() + queued_only
            })
            .sum()
    }

    /// Counters of one channel.
    pub fn channel_stats(&self, channel: Channel) -> Option<ChannelStats> {
        let c = self.chans.get(channel.0 as usize)?;
        Some(ChannelStats {
            queued: c.pending.len(),
            unacked: c.live.len(),
            ..c.stats
        })
    }

    /// Bytes waiting to be sent for the first time.
    pub fn queued_bytes(&self) -> usize {
        self.chans
            .iter()
            .flat_map(|c| c.pending.iter())
            .map(|p| p.payload.len() - p.offset as usize)
            .sum()
    }

    /// Set when the peer broke a limit; the owner should stop talking to it.
    pub fn violation(&self) -> Option<PeerDropReason> {
        self.violation
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    // ---- commands --------------------------------------------------------------------

    /// Whether [`Self::send`] would accept `len` bytes on `channel`.
    pub fn check_send(&self, channel: Channel, len: usize) -> Result<(), SendError> {
        let Some(chan) = self.chans.get(channel.0 as usize) else {
            return Err(SendError::UnknownChannel);
        };
        let max = if chan.delivery.is_reliable() {
            self.limits.max_message_size
        } else {
            self.limits.fragment_size
        };
        if len > max {
            return Err(SendError::PayloadTooLarge { max });
        }
        if self.buffered + len > self.limits.max_send_buffer || chan.next_seq == u32::MAX {
            return Err(SendError::QueueFull);
        }
        Ok(())
    }

    /// Queues a message; returns its id.
    ///
    /// # Errors
    /// As [`Self::check_send`].
    pub fn send(
        &mut self,
        now: Instant,
        channel: Channel,
        payload: Bytes,
        opts: SendOptions,
    ) -> Result<MessageId, SendError> {
        self.saw(now);
        self.check_send(channel, payload.len())?;
        let chan = &mut self.chans[channel.0 as usize];
        chan.stats.messages_out += 1;
        chan.stats.bytes_out += payload.len() as u64;
        let reliable = chan.delivery.is_reliable();
        let seq = chan.next_seq;
        chan.next_seq += 1;
        let id = MessageId(self.next_id);
        self.next_id += 1;
        match chan.delivery {
            Delivery::ReliableSequenced => {
                // Older messages are superseded: never sent again, never delivered after this.
                for (s, l) in chan.live.drain() {
                    self.buffered -= l.payload.len();
                    if let Some(d) = l.deadline {
                        self.deadlines.remove(&(d, channel.0, s));
                    }
                }
                chan.pending.retain(|p| p.seq >= seq);
                chan.retx.clear();
                chan.floor = seq;
                chan.floor_dirty = true;
            }
            Delivery::UnreliableSequenced => {
                let before: usize = chan.pending.iter().map(|p| p.payload.len()).sum();
                chan.pending.clear();
                self.buffered -= before;
            }
            _ => {}
        }
        if reliable {
            if let Some(d) = opts.deadline {
                self.deadlines.insert((d, channel.0, seq));
            }
            chan.live.insert(
                seq,
                Live {
                    id,
                    newest_pn: 0,
                    payload: payload.clone(),
                    acked: RangeSet::default(),
                    deadline: opts.deadline,
                    max_retransmits: opts.max_retransmits,
                    retransmits: 0,
                },
            );
            // Live holds the bytes until acknowledged; pending shares them.
            self.buffered += payload.len();
        } else {
            self.buffered += payload.len();
        }
        chan.pending.push_back(Pending {
            seq,
            payload,
            offset: 0,
        });
        self.stats.messages_out += 1;
        Ok(id)
    }

    /// The peer is gone: every reliable message not yet acknowledged is reported expired,
    /// and every ordered message received but held for an earlier one is delivered (the
    /// earlier ones will never come; the peer reports them expired in turn, as they were
    /// never acknowledged, while these were: dropping them would lose them silently).
    pub fn abandon(&mut self) {
        for (i, c) in self.chans.iter_mut().enumerate() {
            let channel = Channel(i as u8);
            if c.delivery == Delivery::ReliableOrdered {
                for (_, p) in std::mem::take(&mut c.recv_buf) {
                    Self::deliver(&mut self.events, &mut self.stats, &mut c.stats, i as u8, p);
                }
            }
            for (_, l) in c.live.drain() {
                self.events
                    .push_back(ConnEvent::Expired { channel, id: l.id });
            }
            for (_, id) in std::mem::take(&mut c.expiring) {
                self.events.push_back(ConnEvent::Expired { channel, id });
            }
            c.pending.clear();
            c.retx.clear();
        }
        self.buffered = 0;
    }

    // ---- output ----------------------------------------------------------------------

    /// True if a packet should go out now.
    pub fn wants_transmit(&self, now: Instant) -> bool {
        if self.ack_deadline.is_some_and(|d| d <= now) || self.probes > 0 {
            return true;
        }
        if self.chans.iter().any(|c| c.floor_dirty) {
            return true;
        }
        self.chans.iter().any(Chan::has_data) && self.can_send(now)
    }

    fn can_send(&self, now: Instant) -> bool {
        self.in_flight < self.cc.window() && self.pace_ready(now).is_none()
    }

    /// `None` if the pacer allows a packet at `now`, else when it will.
    fn pace_ready(&self, now: Instant) -> Option<Instant> {
        self.pace_ready_at().filter(|at| *at > now)
    }

    /// The instant the pacer's tokens reach one packet again after the last send, at the
    /// current rate; `None` if they never fell below one packet. It does not depend on when
    /// it is asked, so [`Self::poll_timeout`] needs no `now`.
    fn pace_ready_at(&self) -> Option<Instant> {
        let at = self.pace_at?;
        let missing = self.limits.mtu.checked_sub(self.pace_tokens)?;
        (missing > 0).then(|| at + Duration::from_secs_f64(missing as f64 / self.pace_rate()))
    }

    /// Records `now` as the latest time seen.
    fn saw(&mut self, now: Instant) {
        self.now = Some(self.now.map_or(now, |t| t.max(now)));
    }

    /// Bytes per second: 5/4 of a window per smoothed RTT (RFC 9002 §7.7).
    fn pace_rate(&self) -> f64 {
        let rtt = self.rtt.srtt().as_secs_f64().max(0.001);
        (self.cc.window() as f64 * 1.25 / rtt).max(self.limits.mtu as f64)
    }

    fn pace_tokens_at(&self, now: Instant) -> usize {
        let burst = INITIAL_WINDOW_PACKETS * self.limits.mtu;
        match self.pace_at {
            None => burst,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                (self.pace_tokens + (dt * self.pace_rate()) as usize).min(burst)
            }
        }
    }

    /// Writes one packet's frames: ack, floors, retransmissions, new data by priority.
    /// `pn` is the packet number the packet will carry, `overhead` the bytes around the
    /// frames on the wire. `w`'s room is the packet's size: new data is cut to fit it, and a
    /// lost fragment cut for a larger packet is split. Returns the bytes written (0: nothing
    /// to send).
    pub fn write(&mut self, now: Instant, pn: u64, overhead: usize, w: &mut Writer<'_>) -> usize {
        self.saw(now);
        let mut frames: SmallVec<[SentFrame; SENT_FRAMES_INLINE]> = SmallVec::new();
        let start = w.len();
        let frag = self.fragment_for(w.remaining());
        // Ack: piggybacked whenever something is unacknowledged, due or not.
        if self.ack_eliciting_since_ack > 0 || self.ack_deadline.is_some() {
            let largest = self.received.max().unwrap_or(0);
            let ranges: SmallVec<[(u64, u64); ACK_RANGES_SENT]> = self
                .received
                .descending()
                .enumerate()
                .take_while(|&(i, (_, end))| i == 0 || end + ACK_RANGE_WINDOW > largest)
                .map(|(_, r)| r)
                .take(ACK_RANGES_SENT)
                .collect();
            let delay = self.largest_received_at.map_or(0, |t| {
                now.saturating_duration_since(t)
                    .as_micros()
                    .min(u32::MAX as u128) as u32
            });
            if AckFrame::encode_ranges(w, &ranges, delay, w.remaining()) {
                self.ack_eliciting_since_ack = 0;
                self.ack_debt = 0;
                self.ack_deadline = None;
            }
        }
        for (i, c) in self.chans.iter_mut().enumerate() {
            if c.floor_dirty {
                let f = Frame::Floor {
                    channel: i as u8,
                    seq: c.floor,
                };
                if f.encoded_len() <= w.remaining() {
                    let _ = f.encode(w);
                    frames.push(SentFrame::Floor {
                        channel: i as u8,
                        seq: c.floor,
                    });
                    c.floor_dirty = false;
                }
            }
        }
        let probing = self.probes > 0;
        if self.in_flight < self.cc.window() && self.pace_ready(now).is_none() || probing {
            self.write_data(pn, w, &mut frames, frag);
            // Only while app-limited (under half the window in flight): copies must never
            // compete with a transfer for the window, nor add load to a congested path.
            if !frames.is_empty()
                && !self.copies.is_empty()
                && self.in_flight + w.len() < self.cc.window() / 2
            {
                self.write_copies(pn, w, &mut frames);
            }
        }
        if probing && frames.is_empty() && w.remaining() > 0 {
            let _ = Frame::Ping.encode(w);
        }
        let n = w.len() - start;
        if n == 0 {
            return 0;
        }
        let ack_eliciting = !frames.is_empty() || probing;
        if probing {
            self.probes -= 1;
        }
        let size = n + overhead;
        if ack_eliciting {
            self.cc.on_sent(pn);
            self.in_flight += size;
            self.last_ack_eliciting = Some(now);
            let tokens = self.pace_tokens_at(now);
            self.pace_tokens = tokens.saturating_sub(size);
            self.pace_at = Some(now);
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_out += size as u64;
        self.sent.push_back(Sent {
            pn,
            time: now,
            size,
            ack_eliciting,
            in_flight: ack_eliciting,
            lost: None,
            frames,
        });
        n
    }

    /// Retransmissions first, then new data; higher priority first, round-robin within one.
    fn write_data(
        &mut self,
        pn: u64,
        w: &mut Writer<'_>,
        frames: &mut SmallVec<[SentFrame; SENT_FRAMES_INLINE]>,
        frag: usize,
    ) {
        let copies = match self.copies_k {
            Some(k) => k,
            None => {
                let k = self.copies_wanted();
                self.copies_k = Some(k);
                k
            }
        };
        let n = self.chans.len();
        for pi in 0..self.priorities.len() {
            let prio = self.priorities[pi];
            // Retransmissions of this priority.
            for i in 0..n {
                let c = &mut self.chans[i];
                if c.priority != prio {
                    continue;
                }
                while let Some(&(seq, offset, len)) = c.retx.front() {
                    let Some(live) = c.live.get_mut(seq) else {
                        c.retx.pop_front(); // acknowledged or expired meanwhile
                        continue;
                    };
                    if live.acked.contains(u64::from(offset)) {
                        c.retx.pop_front();
                        continue;
                    }
                    if live.max_retransmits.is_some_and(|m| live.retransmits >= m) {
                        c.retx.pop_front();
                        self.exhausted.push((i as u8, seq));
                        continue;
                    }
                    let mut len = len;
                    if w.remaining() < len as usize + MESSAGE_FRAME_OVERHEAD {
                        let Some(cut) = split_retransmission(len, frag, w.remaining()) else {
                            // It goes in the next packet; smaller frames of other channels
                            // may still fill this one.
                            break;
                        };
                        // Cut for a larger packet than the path carries now (the path-MTU
                        // fell): the rest waits at the front (acks are byte ranges).
                        if let Some(front) = c.retx.front_mut() {
                            *front = (seq, offset + cut, len - cut);
                        }
                        c.retx.push_front((seq, offset, cut));
                        len = cut;
                    }
                    live.retransmits += 1;
                    live.newest_pn = pn;
                    c.stats.retransmits += 1;
                    put_message(w, i as u8, seq, &live.payload, offset, len);
                    frames.push(SentFrame::Msg {
                        channel: i as u8,
                        seq,
                        offset,
                        len,
                    });
                    self.stats.retransmits += 1;
                    c.retx.pop_front();
                    if copies > 0 && len <= COPY_MAX_LEN {
                        Self::track_copy(&mut self.copies, i as u8, seq, offset, len, copies, pn);
                    }
                }
            }
            // New data of this priority, one fragment per channel per turn.
            if !self
                .chans
                .iter()
                .any(|c| c.priority == prio && !c.pending.is_empty())
            {
                continue;
            }
            loop {
                let mut progressed = false;
                for k in 0..n {
                    let i = if self.rr + k >= n {
                        self.rr + k - n
                    } else {
                        self.rr + k
                    };
                    let c = &mut self.chans[i];
                    if c.priority != prio {
                        continue;
                    }
                    let Some(p) = c.pending.front_mut() else {
                        continue;
                    };
                    let total = p.payload.len();
                    let len = (total - p.offset as usize).min(frag);
                    if w.remaining() < len + MESSAGE_FRAME_OVERHEAD {
                        // Not in this packet: another channel's smaller message may fit (a
                        // blob's full fragments must not starve a game channel's ticks).
                        continue;
                    }
                    put_message(w, i as u8, p.seq, &p.payload, p.offset, len as u32);
                    if c.delivery.is_reliable() {
                        frames.push(SentFrame::Msg {
                            channel: i as u8,
                            seq: p.seq,
                            offset: p.offset,
                            len: len as u32,
                        });
                        if let Some(live) = c.live.get_mut(p.seq) {
                            live.newest_pn = pn;
                        }
                        if copies > 0 && len as u32 <= COPY_MAX_LEN {
                            let (seq, offset) = (p.seq, p.offset);
                            Self::track_copy(
                                &mut self.copies,
                                i as u8,
                                seq,
                                offset,
                                len as u32,
                                copies,
                                pn,
                            );
                        }
                    } else {
                        // Unreliable: not tracked; an empty marker keeps the packet
                        // ack-eliciting for RTT and loss estimates.
                        frames.push(SentFrame::Unreliable);
                    }
                    p.offset += len as u32;
                    if p.offset as usize >= total {
                        let done = c.pending.pop_front();
                        if !c.delivery.is_reliable() {
                            if let Some(d) = done {
                                self.buffered -= d.payload.len();
                            }
                        }
                    }
                    progressed = true;
                    self.rr = (i + 1) % n;
                }
                if !progressed {
                    break;
                }
            }
        }
    }

    /// Copies each small fragment gets at the measured loss rate `p` and chance `q` that a
    /// packet after a lost one is lost too: enough that the original and every copy are lost
    /// with a chance under [`COPY_TARGET`] (`p * q^k`), at most [`COPIES_MAX`]; none under
    /// [`COPY_LOSS_MIN`] or when losses come in bursts ([`BURST_COPY_MAX`]).
    fn copies_wanted(&self) -> u8 {
        let p = self.loss_rate;
        if !self.copies_on || p < COPY_LOSS_MIN || p <= COPY_TARGET {
            return 0;
        }
        // The chance that a copy is lost too: at least the loss rate (the burst estimate
        // has few samples, and under it only by noise), more when losses come in bursts.
        let q = if self.burst_samples >= BURST_WINDOW_MIN {
            self.burst_rate.max(p)
        } else {
            p
        };
        if q >= BURST_COPY_MAX {
            return 0;
        }
        // The smallest k with p * q^k <= target.
        let k = ((COPY_TARGET / p).ln() / q.max(1e-3).ln()).ceil();
        (k as u8).min(COPIES_MAX)
    }

    fn track_copy(
        copies: &mut VecDeque<Copy>,
        channel: u8,
        seq: u32,
        offset: u32,
        len: u32,
        left: u8,
        pn: u64,
    ) {
        if copies.len() >= COPIES_TRACKED {
            copies.pop_front();
        }
        copies.push_back(Copy {
            channel,
            seq,
            offset,
            len,
            left,
            pn,
        });
    }

    /// Fills the rest of a packet that carries data with copies of small unacknowledged
    /// fragments sent in earlier packets, oldest first (see [`Copy`]).
    fn write_copies(
        &mut self,
        pn: u64,
        w: &mut Writer<'_>,
        frames: &mut SmallVec<[SentFrame; SENT_FRAMES_INLINE]>,
    ) {
        let chans = &mut self.chans;
        let stats = &mut self.stats;
        self.copies.retain_mut(|cp| {
            let Some(live) = chans
                .get_mut(cp.channel as usize)
                .and_then(|c| c.live.get_mut(cp.seq))
            else {
                return false; // acknowledged or expired
            };
            if cp.left == 0 || live.acked.contains(u64::from(cp.offset)) {
                return false;
            }
            if cp.pn == pn || w.remaining() < cp.len as usize + MESSAGE_FRAME_OVERHEAD {
                return true;
            }
            put_message(w, cp.channel, cp.seq, &live.payload, cp.offset, cp.len);
            frames.push(SentFrame::Msg {
                channel: cp.channel,
                seq: cp.seq,
                offset: cp.offset,
                len: cp.len,
            });
            live.newest_pn = pn;
            stats.copies += 1;
            cp.left -= 1;
            cp.pn = pn;
            cp.left > 0
        });
    }

    // ---- input -----------------------------------------------------------------------

    /// One authenticated peer packet: its number `pn` (the AEAD counter, replay-checked by
    /// the caller), its `size` on the wire and its frames, decoded once by the caller. Frames
    /// that are not the connection's (path probes, padding) are left alone. Schedules the
    /// acknowledgement: at once for a packet that arrived out of order or for every second
    /// ack-eliciting one, else within the ack delay.
    pub fn handle_packet(&mut self, now: Instant, pn: u64, size: usize, frames: &[Frame<'_>]) {
        self.saw(now);
        let out_of_order = self.is_out_of_order(pn);
        self.begin_packet(now, pn, size);
        let mut elicit = Elicit::No;
        for f in frames {
            elicit = elicit.max(self.on_frame(now, f));
        }
        self.end_packet(now, elicit, size, out_of_order);
    }

    fn begin_packet(&mut self, now: Instant, pn: u64, size: usize) {
        self.stats.bytes_in += size as u64;
        if self.received.max().is_none_or(|m| pn > m) {
            self.largest_received_at = Some(now);
        }
        self.received.insert(pn, pn, ACK_RANGES_KEPT);
    }

    /// One frame of the current packet. Returns whether (and how soon) it asks for an ack.
    fn on_frame(&mut self, now: Instant, frame: &Frame<'_>) -> Elicit {
        match *frame {
            Frame::Message {
                channel,
                seq,
                fragment,
                data,
            } => {
                self.on_message(channel, seq, fragment, data);
                match self.chans.get(channel as usize) {
                    Some(c) if !c.delivery.is_reliable() => Elicit::Unreliable,
                    _ => Elicit::Yes,
                }
            }
            Frame::Ack(ref a) => {
                self.on_ack(now, a);
                Elicit::No
            }
            Frame::Floor { channel, seq } => {
                self.on_floor(channel, seq);
                Elicit::Yes
            }
            Frame::Ping => Elicit::Yes,
            _ => Elicit::No,
        }
    }

    /// Ends the current packet of `size` bytes: schedules the ack.
    fn end_packet(&mut self, now: Instant, elicit: Elicit, size: usize, out_of_order: bool) {
        self.ack_debt += match elicit {
            Elicit::No => return,
            Elicit::Unreliable => size,
            Elicit::Yes => ACK_EVERY_BYTES / 2,
        };
        self.ack_eliciting_since_ack += 1;
        if self.ack_debt >= ACK_EVERY_BYTES || out_of_order {
            self.ack_deadline = Some(now);
        } else if self.ack_deadline.is_none() {
            self.ack_deadline = Some(now + self.limits.ack_delay.min(MAX_ACK_DELAY));
        }
    }

    /// True if `pn` is below the largest received (a reordering sign: ack at once).
    fn is_out_of_order(&self, pn: u64) -> bool {
        self.received.max().is_some_and(|m| pn < m)
    }

    fn on_message(&mut self, channel: u8, seq: u32, fragment: Option<(u32, u32)>, data: &[u8]) {
        let Some(c) = self.chans.get_mut(channel as usize) else {
            self.stats.duplicates += 1;
            return;
        };
        if c.is_duplicate(seq) || (c.delivery.is_reliable() && seq < c.recv_next) {
            self.stats.duplicates += 1;
            return;
        }
        if seq.wrapping_sub(c.recv_next) > RECV_WINDOW && c.delivery.is_reliable() {
            self.stats.duplicates += 1;
            return;
        }
        let payload = match fragment {
            None => {
                // Its fragments may have come first (a retransmission cut for a smaller
                // path-MTU overtook the whole original): they are not needed any more.
                if let Some(p) = c.partial.remove(&seq) {
                    self.reassembly_bytes -= p.buf.len();
                }
                self.arena.copy(data)
            }
            Some((total, offset)) => {
                let total = total as usize;
                if total > self.limits.max_message_size {
                    self.violation = Some(PeerDropReason::MessageTooLarge);
                    return;
                }
                let p = match c.partial.entry(seq) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        if self.reassembly_bytes + total > self.limits.max_reassembly_bytes {
                            self.violation = Some(PeerDropReason::ReassemblyLimit);
                            return;
                        }
                        self.reassembly_bytes += total;
                        let mut buf = BytesMut::with_capacity(total);
                        buf.resize(total, 0);
                        e.insert(Partial {
                            buf,
                            got: RangeSet::default(),
                        })
                    }
                };
                if p.buf.len() != total || data.is_empty() {
                    self.stats.duplicates += 1;
                    return;
                }
                let (o, e) = (offset as usize, offset as usize + data.len());
                p.buf[o..e].copy_from_slice(data);
                // Cap ranges generously: a message has at most total/1 fragments in flight.
                p.got.insert(o as u64, e as u64 - 1, usize::MAX);
                if p.got.covered() < total as u64 {
                    return;
                }
                let Some(done) = c.partial.remove(&seq) else {
                    return;
                };
                self.reassembly_bytes -= total;
                done.buf.freeze()
            }
        };
        self.complete(channel, seq, payload);
    }

    fn deliver(
        events: &mut VecDeque<ConnEvent>,
        stats: &mut ConnStats,
        chan: &mut ChannelStats,
        channel: u8,
        payload: Bytes,
    ) {
        stats.messages_in += 1;
        chan.messages_in += 1;
        chan.bytes_in += payload.len() as u64;
        events.push_back(ConnEvent::Message {
            channel: Channel(channel),
            payload,
        });
    }

    fn complete(&mut self, channel: u8, seq: u32, payload: Bytes) {
        let c = &mut self.chans[channel as usize];
        let (events, stats) = (&mut self.events, &mut self.stats);
        match c.delivery {
            Delivery::ReliableOrdered => {
                if seq != c.recv_next {
                    c.recv_buf.insert(seq, payload);
                } else {
                    Self::deliver(events, stats, &mut c.stats, channel, payload);
                    c.recv_next += 1;
                    while let Some(p) = c.recv_buf.remove(&c.recv_next) {
                        Self::deliver(events, stats, &mut c.stats, channel, p);
                        c.recv_next += 1;
                    }
                }
            }
            Delivery::ReliableUnordered => {
                Self::deliver(events, stats, &mut c.stats, channel, payload);
                if seq == c.recv_next {
                    c.recv_next += 1;
                    while c.recv_buf.remove(&c.recv_next).is_some() {
                        c.recv_next += 1;
                    }
                } else {
                    c.recv_buf.insert(seq, Bytes::new());
                }
            }
            Delivery::ReliableSequenced | Delivery::UnreliableSequenced => {
                c.last_delivered = Some(seq);
                Self::deliver(events, stats, &mut c.stats, channel, payload);
                // Older partial messages can never be delivered now.
                if c.partial.first_key_value().is_some_and(|(s, _)| *s < seq) {
                    c.partial.retain(|s, _| *s > seq);
                    self.recount_reassembly();
                }
            }
            Delivery::Unreliable => Self::deliver(events, stats, &mut c.stats, channel, payload),
        }
    }

    fn recount_reassembly(&mut self) {
        self.reassembly_bytes = self
            .chans
            .iter()
            .flat_map(|c| c.partial.values())
            .map(|p| p.buf.len())
            .sum();
    }

    fn on_floor(&mut self, channel: u8, seq: u32) {
        let Some(c) = self.chans.get_mut(channel as usize) else {
            return;
        };
        c.partial.retain(|s, _| *s >= seq);
        match c.delivery {
            Delivery::ReliableOrdered => {
                if seq > c.recv_next {
                    // Messages below the floor that did arrive are delivered, in order; the
                    // floor only says the missing ones will never come.
                    while let Some((&s, _)) = c.recv_buf.first_key_value() {
                        if s >= seq {
                            break;
                        }
                        if let Some(p) = c.recv_buf.remove(&s) {
                            Self::deliver(
                                &mut self.events,
                                &mut self.stats,
                                &mut c.stats,
                                channel,
                                p,
                            );
                        }
                    }
                    c.recv_next = seq;
                    while let Some(p) = c.recv_buf.remove(&c.recv_next) {
                        Self::deliver(&mut self.events, &mut self.stats, &mut c.stats, channel, p);
                        c.recv_next += 1;
                    }
                }
            }
            Delivery::ReliableUnordered => {
                if seq > c.recv_next {
                    c.recv_buf.retain(|s, _| *s >= seq);
                    c.recv_next = seq;
                    while c.recv_buf.remove(&c.recv_next).is_some() {
                        c.recv_next += 1;
                    }
                }
            }
            Delivery::ReliableSequenced | Delivery::UnreliableSequenced => {
                c.recv_next = c.recv_next.max(seq);
            }
            Delivery::Unreliable => {}
        }
        self.recount_reassembly();
    }

    fn on_ack(&mut self, now: Instant, ack: &AckFrame<'_>) {
        let mut newly_largest: Option<(u64, Instant, bool)> = None;
        let mut acked_bytes = 0usize;
        let mut acked_packets = 0u32;
        let mut acked_any = false;
        let mut burst_samples: SmallVec<[bool; 8]> = SmallVec::new();
        let in_flight_before = self.in_flight;
        for (start, end) in ack.ranges() {
            // `sent` is sorted by packet number.
            let from = self.sent.partition_point(|s| s.pn < start);
            for i in from..self.sent.len() {
                if self.sent[i].pn > end {
                    break;
                }
                if self.sent[i].size == 0 {
                    continue; // already processed
                }
                if self.sent[i].ack_eliciting
                    && self.prev_eliciting(i).map(|j| self.sent[j].resolved()) == Some(Some(true))
                {
                    burst_samples.push(false); // the packet after a lost one arrived
                }
                let s = &mut self.sent[i];
                let was_in_flight = s.in_flight;
                if was_in_flight {
                    self.in_flight -= s.size;
                    acked_bytes += s.size;
                    acked_packets += 1;
                } else if let Some(episode) = s.lost {
                    // Declared lost, yet here: it was reordered.
                    if let Some(episode) = episode {
                        self.cc.on_spurious_loss(episode);
                    }
                    let step = self.rtt.srtt() / REORDER_WINDOW_STEP_DIV;
                    let w = self.reorder_window.map_or(step, |w| w + step);
                    self.reorder_window = Some(w.min(self.rtt.srtt()));
                }
                s.in_flight = false;
                let (pn, time, elicit) = (s.pn, s.time, s.ack_eliciting);
                s.size = 0;
                acked_any = true;
                if newly_largest.is_none_or(|(p, _, _)| pn > p) {
                    newly_largest = Some((pn, time, elicit));
                }
                // By index: taking the frames out would move the whole inline array.
                for k in 0..self.sent[i].frames.len() {
                    let f = self.sent[i].frames[k];
                    self.on_frame_acked(f);
                }
                self.sent[i].frames.clear();
            }
        }
        if !acked_any {
            return;
        }
        for _ in 0..acked_packets {
            self.loss_sample(false);
        }
        for lost in burst_samples {
            self.burst_sample(lost);
        }
        if let Some((pn, time, elicit)) = newly_largest {
            if self.largest_acked.is_none_or(|l| pn > l) {
                self.largest_acked = Some(pn);
                if elicit && pn == ack.largest {
                    let delay = Duration::from_micros(u64::from(ack.delay_us)).min(MAX_ACK_DELAY);
                    let sample = now.saturating_duration_since(time);
                    let sample = if sample > delay {
                        sample - delay
                    } else {
                        sample
                    };
                    self.latest_rtt = sample;
                    self.rtt.update(sample);
                    self.cc.on_rtt_sample(sample);
                }
            }
            self.cc.on_acked(
                now,
                pn,
                acked_packets,
                acked_bytes,
                in_flight_before,
                self.rtt.srtt(),
            );
        }
        self.pto_count = 0;
        self.detect_lost(now);
        self.trim_sent(now);
        self.emit_expired();
    }

    fn on_frame_acked(&mut self, f: SentFrame) {
        match f {
            SentFrame::Msg {
                channel,
                seq,
                offset,
                len,
            } => {
                let Some(c) = self.chans.get_mut(channel as usize) else {
                    return;
                };
                let Some(l) = c.live.get_mut(seq) else {
                    return;
                };
                if len > 0 {
                    l.acked
                        .insert(u64::from(offset), u64::from(offset + len - 1), usize::MAX);
                }
                if l.acked.covered() >= l.payload.len() as u64 {
                    if let Some(l) = c.live.remove(seq) {
                        self.buffered -= l.payload.len();
                        if let Some(d) = l.deadline {
                            self.deadlines.remove(&(d, channel, seq));
                        }
                    }
                    let floor = c.lowest_alive();
                    if floor > c.floor && c.delivery.is_reliable() && !c.expiring.is_empty() {
                        c.floor = floor;
                        c.floor_dirty = true;
                    }
                }
            }
            SentFrame::Floor { channel, seq } => {
                if let Some(c) = self.chans.get_mut(channel as usize) {
                    c.floor_acked = c.floor_acked.max(seq);
                }
            }
            SentFrame::Unreliable => {}
        }
    }

    /// Reports expired messages whose floor the peer has acknowledged.
    fn emit_expired(&mut self) {
        for (i, c) in self.chans.iter_mut().enumerate() {
            while let Some((&seq, &id)) = c.expiring.first_key_value() {
                if seq >= c.floor_acked {
                    break;
                }
                c.expiring.remove(&seq);
                self.events.push_back(ConnEvent::Expired {
                    channel: Channel(i as u8),
                    id,
                });
            }
        }
    }

    /// One packet resolved, `lost` or acknowledged, into the loss-rate estimate.
    fn loss_sample(&mut self, lost: bool) {
        self.copies_k = None;
        self.loss_samples = (self.loss_samples + 1).min(LOSS_WINDOW);
        let n = f64::from(self.loss_samples.max(LOSS_WINDOW_MIN));
        let x = if lost { 1.0 } else { 0.0 };
        self.loss_rate += (x - self.loss_rate) / n;
    }

    /// The ack-eliciting packet sent before `sent[i]` (acks alone in between skipped), if
    /// still remembered.
    fn prev_eliciting(&self, i: usize) -> Option<usize> {
        (0..i).rev().take(8).find(|&j| self.sent[j].ack_eliciting)
    }

    /// The ack-eliciting packet sent after `sent[i]`, if any yet.
    fn next_eliciting(&self, i: usize) -> Option<usize> {
        (i + 1..self.sent.len())
            .take(8)
            .find(|&k| self.sent[k].ack_eliciting)
    }

    /// Whether a packet that followed a lost one was lost too, into the burst estimate.
    fn burst_sample(&mut self, lost: bool) {
        self.copies_k = None;
        self.burst_samples = (self.burst_samples + 1).min(BURST_WINDOW);
        let n = f64::from(self.burst_samples.max(BURST_WINDOW_MIN));
        let x = if lost { 1.0 } else { 0.0 };
        self.burst_rate += (x - self.burst_rate) / n;
    }

    fn loss_delay(&self) -> Duration {
        (self.rtt.srtt().max(self.latest_rtt) * 9 / 8).max(Duration::from_millis(1))
            + self.reorder_window.unwrap_or_default()
    }

    fn detect_lost(&mut self, now: Instant) {
        let Some(largest) = self.largest_acked else {
            return;
        };
        let delay = self.loss_delay();
        self.loss_time = None;
        let mut lost_frames: SmallVec<[(u64, SentFrame); 16]> = SmallVec::new();
        let mut lost_any = None;
        let mut loss_samples = 0u32;
        let mut lost_at: SmallVec<[usize; 8]> = SmallVec::new();
        let in_flight_before = self.in_flight;
        for (i, s) in self.sent.iter_mut().enumerate() {
            if s.pn > largest {
                break;
            }
            if !s.in_flight {
                continue;
            }
            let by_count = self.reorder_window.is_none() && largest >= s.pn + PACKET_THRESHOLD;
            if s.time + delay <= now || by_count {
                s.in_flight = false;
                s.lost = Some(None);
                self.in_flight -= s.size;
                self.stats.packets_lost += 1;
                loss_samples += 1;
                lost_frames.extend(s.frames.iter().map(|f| (s.pn, *f)));
                lost_any = Some(lost_any.map_or(s.time, |t: Instant| t.max(s.time)));
                lost_at.push(i);
            } else {
                let t = s.time + delay;
                self.loss_time = Some(self.loss_time.map_or(t, |l| l.min(t)));
            }
        }
        for _ in 0..loss_samples {
            self.loss_sample(true);
        }
        // Was the packet after each lost one lost too? Each adjacent pair is counted when
        // the later of its two packets is resolved.
        for &i in &lost_at {
            if self.prev_eliciting(i).map(|j| self.sent[j].resolved()) == Some(Some(true)) {
                self.burst_sample(true);
            }
            let next = self.next_eliciting(i);
            match next.and_then(|k| self.sent[k].resolved()) {
                Some(false) => self.burst_sample(false),
                // Lost in an earlier pass (one lost in this pass counts the pair itself).
                Some(true) if next.is_some_and(|k| lost_at.binary_search(&k).is_err()) => {
                    self.burst_sample(true)
                }
                _ => {}
            }
        }
        for (pn, f) in lost_frames {
            self.requeue(pn, f);
        }
        if let Some(sent_time) = lost_any {
            // The controller decides whether this is congestion (see `cc`); the packets
            // carry its episode so that a late ack for all of them undoes the reduction.
            let episode = self
                .cc
                .on_lost(now, lost_at.len() as u32, sent_time, in_flight_before);
            if episode.is_some() {
                for i in lost_at {
                    self.sent[i].lost = Some(episode);
                }
            }
        }
    }

    /// A frame of lost packet `pn` is sent again, unless it is acknowledged, or it is a
    /// whole message that a newer packet carries too (a copy or a retransmission: that
    /// packet's own loss requeues it).
    fn requeue(&mut self, pn: u64, f: SentFrame) {
        match f {
            SentFrame::Msg {
                channel,
                seq,
                offset,
                len,
            } => {
                let Some(c) = self.chans.get_mut(channel as usize) else {
                    return;
                };
                let Some(l) = c.live.get_mut(seq) else {
                    return;
                };
                if l.acked.contains(u64::from(offset)) {
                    return;
                }
                if l.newest_pn > pn && len as usize == l.payload.len() {
                    return;
                }
                if l.max_retransmits.is_some_and(|m| l.retransmits >= m) {
                    // The budget is spent: expire it now rather than keep a resend that
                    // will never be written.
                    self.exhausted.push((channel, seq));
                    return;
                }
                c.retx.push_back((seq, offset, len));
            }
            SentFrame::Floor { channel, seq } => {
                if let Some(c) = self.chans.get_mut(channel as usize) {
                    if c.floor_acked < seq && c.floor <= seq {
                        c.floor_dirty = true;
                    }
                }
            }
            SentFrame::Unreliable => {}
        }
    }

    /// Drops the oldest packets once acknowledged, or declared lost and too old for a late
    /// ack (2 RTTs after they were sent: reordering that deep is loss).
    fn trim_sent(&mut self, now: Instant) {
        let keep = self.rtt.srtt() * 2 + self.limits.ack_delay;
        while self
            .sent
            .front()
            .is_some_and(|s| !s.in_flight && (s.size == 0 || s.time + keep <= now))
        {
            self.sent.pop_front();
        }
    }

    fn pto_at(&self) -> Option<Instant> {
        if self.in_flight == 0 && !self.chans.iter().any(|c| !c.retx.is_empty()) {
            return None;
        }
        let last = self.last_ack_eliciting?;
        let base = self.rtt.srtt()
            + (self.rtt.rttvar() * 4).max(Duration::from_millis(1))
            + self.limits.ack_delay;
        let backoff = base
            .saturating_mul(1 << self.pto_count.min(6))
            .min(MAX_RTO * 4);
        Some(last + backoff)
    }

    // ---- time ------------------------------------------------------------------------

    /// The peer is reachable again after an outage (the server saw it come back): forget
    /// the probe-timeout backoff and send what is unacknowledged now, as a probe timeout
    /// would, instead of after a timeout that doubled through the outage.
    pub fn path_restored(&mut self) {
        self.pto_count = 0;
        if self.in_flight > 0 || self.chans.iter().any(|c| !c.retx.is_empty()) {
            self.probes = 2;
        }
    }

    /// When [`Self::handle_timeout`] is next needed. Pure.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.ack_deadline;
        if !self.exhausted.is_empty() {
            // Expired at the next timeout, which is due now.
            t = self.now;
        }
        let mut take = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        take(self.loss_time);
        take(self.pto_at());
        take(self.deadlines.first().map(|(d, _, _)| *d));
        if self.chans.iter().any(Chan::has_data) && self.in_flight < self.cc.window() {
            take(self.now.and_then(|now| self.pace_ready(now)));
        }
        t
    }

    /// Runs loss detection, probe timeouts, pacing and expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.saw(now);
        if self.loss_time.is_some_and(|t| t <= now) {
            self.detect_lost(now);
        }
        self.trim_sent(now);
        if self.pto_at().is_some_and(|t| t <= now) {
            self.pto_count += 1;
            // Two probes, as RFC 9002 §6.2.4 allows: one lost probe does not cost another PTO.
            self.probes = 2;
            if self.pto_count >= PERSISTENT_CONGESTION_PTOS {
                let mut lost: SmallVec<[(u64, SentFrame); 16]> = SmallVec::new();
                for s in self.sent.iter_mut().filter(|s| s.in_flight) {
                    s.in_flight = false;
                    s.lost = Some(None);
                    self.stats.packets_lost += 1;
                    lost.extend(s.frames.iter().map(|f| (s.pn, *f)));
                }
                self.in_flight = 0;
                for (pn, f) in lost {
                    self.requeue(pn, f);
                }
                self.cc.on_persistent_congestion();
                self.trim_sent(now);
            }
            // Send the oldest unacknowledged data again as the probe.
            let oldest = self
                .sent
                .iter()
                .find(|s| s.in_flight)
                .map(|s| s.frames.clone());
            if let Some(frames) = oldest {
                for f in frames {
                    if let SentFrame::Msg {
                        channel,
                        seq,
                        offset,
                        len,
                    } = f
                    {
                        if let Some(c) = self.chans.get_mut(channel as usize) {
                            if c.live.contains_key(seq) && !c.retx.contains(&(seq, offset, len)) {
                                c.retx.push_front((seq, offset, len));
                            }
                        }
                    }
                }
            }
            self.last_ack_eliciting = Some(now);
        }
        self.expire(now);
    }

    /// Stops sending messages past their deadline or retry budget and raises the floor.
    fn expire(&mut self, now: Instant) {
        let mut expired: SmallVec<[(u8, u32); 8]> = SmallVec::new();
        while let Some(&(d, ch, seq)) = self.deadlines.first() {
            if d > now {
                break;
            }
            self.deadlines.remove(&(d, ch, seq));
            expired.push((ch, seq));
        }
        expired.extend(self.exhausted.drain(..));
        for (ch, seq) in expired {
            let c = &mut self.chans[ch as usize];
            let Some(l) = c.live.remove(seq) else {
                continue;
            };
            self.buffered -= l.payload.len();
            if let Some(d) = l.deadline {
                self.deadlines.remove(&(d, ch, seq));
            }
            c.pending.retain(|p| p.seq != seq);
            c.retx.retain(|r| r.0 != seq);
            c.expiring.insert(seq, l.id);
            let floor = c.lowest_alive();
            if floor > c.floor {
                c.floor = floor;
                c.floor_dirty = true;
            }
        }
    }
}

/// Writes bytes `offset..offset + len` of message `seq` (all of it: `payload`) on `channel` as
/// one Message frame; the caller checked that it fits.
fn put_message(w: &mut Writer<'_>, channel: u8, seq: u32, payload: &[u8], offset: u32, len: u32) {
    let total = payload.len();
    let f = Frame::Message {
        channel,
        seq,
        fragment: is_fragment(offset, len as usize, total).then_some((total as u32, offset)),
        data: &payload[offset as usize..(offset + len) as usize],
    };
    let _ = f.encode(w);
}

/// Whether a frame of `len` bytes at `offset` carries part of a `total`-byte message (a
/// fragment frame) rather than all of it. Decided per frame, not per message: the same message
/// may go whole first and in pieces later, when the path-MTU fell in between.
fn is_fragment(offset: u32, len: usize, total: usize) -> bool {
    offset > 0 || len < total
}

/// A lost fragment of `len` bytes does not fit the `remaining` room of this packet: the bytes
/// to send of it now, if it must be split because it was cut for a larger packet than the
/// path carries now (larger than `frag`, this packet size's fragment); `None` if it merely
/// waits for the next packet.
fn split_retransmission(len: u32, frag: usize, remaining: usize) -> Option<u32> {
    if len as usize <= frag {
        return None;
    }
    let fits = remaining.saturating_sub(MESSAGE_FRAME_OVERHEAD).min(frag);
    // Only into a packet with most of its room free: a smaller piece would only add frames.
    (fits >= frag / 2 && fits > 0).then_some(fits as u32)
}

#[cfg(test)]
mod tests;
