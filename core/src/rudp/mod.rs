//! Reliability over UDP for peer links: channels with five delivery modes, acknowledgement
//! ranges, loss detection and retransmission, fragmentation, NewReno congestion control with a
//! pacer, message expiry; plus the RTT estimator and the control stream of server sessions.
//!
//! One [`conn::Connection`] per peer holds all of it. Its packet numbers are the peer packets'
//! AEAD counters, so the same state carries a peer's traffic over the relay and over a direct
//! path alike: switching paths needs no translation and cannot lose, duplicate or reorder.

pub(crate) mod cc;
pub(crate) mod conn;
pub(crate) mod pmtu;
pub(crate) mod ranges;
pub(crate) mod rtt;
pub(crate) mod seqmap;
pub(crate) mod stream;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// How a channel delivers messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Every message, exactly once, in send order.
    ReliableOrdered,
    /// Every message, exactly once, as soon as it arrives.
    ReliableUnordered,
    /// Only the newest message matters: it is delivered reliably unless a newer one
    /// supersedes it; an older message is never delivered after a newer one.
    ReliableSequenced,
    /// Best effort; an older message is never delivered after a newer one. Only the newest
    /// message waits to be sent: queueing one drops any older one not yet on the wire (send
    /// one state update per tick on this channel, not several).
    UnreliableSequenced,
    /// Best effort, any order.
    Unreliable,
}

impl Delivery {
    /// True for the modes that retransmit.
    pub fn is_reliable(self) -> bool {
        matches!(
            self,
            Self::ReliableOrdered | Self::ReliableUnordered | Self::ReliableSequenced
        )
    }
}

/// A channel of a peer connection: an index into [`crate::ClientConfig::channels`]. Each
/// channel orders (or not) independently of the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(pub u8);

impl Channel {
    /// Default channel 0: reliable, ordered.
    pub const RELIABLE_ORDERED: Self = Self(0);
    /// Default channel 1: reliable, unordered.
    pub const RELIABLE_UNORDERED: Self = Self(1);
    /// Default channel 2: reliable, newest only.
    pub const RELIABLE_SEQUENCED: Self = Self(2);
    /// Default channel 3: unreliable, newest only.
    pub const UNRELIABLE_SEQUENCED: Self = Self(3);
    /// Default channel 4: unreliable.
    pub const UNRELIABLE: Self = Self(4);
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "channel {}", self.0)
    }
}

/// One channel's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    /// How it delivers.
    pub delivery: Delivery,
    /// Higher goes first when a packet is filled, so bulk transfers on a low-priority channel
    /// never starve input or chat; equal priorities share packets round-robin.
    pub priority: u8,
}

impl ChannelConfig {
    /// The five default channels, one per delivery mode; unreliable traffic (input, movement)
    /// goes before reliable traffic, so a large reliable transfer cannot delay it.
    pub fn defaults() -> Vec<Self> {
        [
            (Delivery::ReliableOrdered, 1),
            (Delivery::ReliableUnordered, 1),
            (Delivery::ReliableSequenced, 2),
            (Delivery::UnreliableSequenced, 2),
            (Delivery::Unreliable, 2),
        ]
        .into_iter()
        .map(|(delivery, priority)| Self { delivery, priority })
        .collect()
    }
}

/// Names a message sent on a peer connection (for [`crate::ClientEvent::MessageExpired`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// Options for one message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Give up (and report [`crate::ClientEvent::MessageExpired`]) if not acknowledged by
    /// then. Reliable channels only.
    pub deadline: Option<std::time::Instant>,
    /// Give up after this many retransmissions. Reliable channels only.
    pub max_retransmits: Option<u32>,
}

/// Which way a peer's packets travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Through the server's relay.
    Relay,
    /// Directly to this address.
    Direct(SocketAddr),
}

/// Why this client stopped talking to a peer on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerDropReason {
    /// It announced a message larger than `max_message_size`.
    MessageTooLarge,
    /// Its partial messages exceeded `max_reassembly_bytes`.
    ReassemblyLimit,
    /// The server session ended and this peer was reachable only through its relay.
    ServerLost,
    /// Detached from the server, the direct path to this peer died (no relay to fall back
    /// on).
    DirectLost,
    /// Detached from the server, the pair lifetime ran out.
    PairExpired,
    /// This client registered again and got a new host id (its ticket was refused, e.g. a
    /// cluster whose directory could not check it): its peers knew it by the old one, so
    /// every pair goes (the new node introduces them again under the new id).
    NewHostId,
}

/// Counters of one channel of a peer connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Messages queued by the application.
    pub messages_out: u64,
    /// Messages delivered to the application.
    pub messages_in: u64,
    /// Payload bytes queued by the application.
    pub bytes_out: u64,
    /// Payload bytes delivered to the application.
    pub bytes_in: u64,
    /// Fragments sent again.
    pub retransmits: u64,
    /// Messages waiting to be sent for the first time (the queue depth).
    pub queued: usize,
    /// Reliable messages sent and not yet acknowledged or expired.
    pub unacked: usize,
}

/// Counters and estimates of one peer connection.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Round-trip time variation.
    pub rtt_var: Duration,
    /// Packets declared lost / packets sent, since the connection began.
    pub loss: f64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Bytes sent (peer packets, as sealed).
    pub bytes_out: u64,
    /// Bytes received (peer packets, as sealed).
    pub bytes_in: u64,
    /// Messages queued by the application.
    pub messages_out: u64,
    /// Messages delivered to the application.
    pub messages_in: u64,
    /// Fragments sent again after a loss or a probe timeout.
    pub retransmits: u64,
    /// Reliable messages neither acknowledged nor expired yet (queued ones included).
    pub unacked: usize,
    /// Bytes waiting to be sent for the first time.
    pub queued_bytes: usize,
    /// Congestion window, bytes.
    pub cwnd: usize,
    /// Current path.
    pub path: Path,
    /// Largest peer datagram the current path is known to carry, in bytes on the wire (UDP
    /// payload; on the relay path the relay header included): [`crate::BASE_DATAGRAM_SIZE`] until a
    /// larger path-MTU probe is acknowledged (RFC 8899).
    pub path_mtu: usize,
    /// Path-MTU probes sent, on every path this peer had.
    pub mtu_probes_sent: u64,
    /// Path-MTU probes declared lost (never counted as congestion).
    pub mtu_probes_lost: u64,
    /// Times a path stopped carrying its discovered size and fell back to the base.
    pub mtu_black_holes: u64,
}
