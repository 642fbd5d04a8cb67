//! Counters. Part of the public API: tests and operators assert on them.

/// Input dropped, by reason. Dropping is the only thing the core does with bad input.
///
/// A count is one datagram, or one item carried inside an authentic datagram (a frame that is
/// not expected in the current state, a relayed peer packet, a relay request): one datagram
/// can account for several drops. A drop is an (even empty) datagram or an item that occupied
/// at least one byte of one, so [`DropStats::total`] never exceeds datagrams plus bytes
/// received (the fuzz targets check this).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DropStats {
    /// Too short or structurally invalid for its kind.
    pub malformed: u64,
    /// First byte names nothing we speak.
    pub unknown_kind: u64,
    /// A Pierce packet of another protocol version.
    pub bad_version: u64,
    /// STUN messages this endpoint does not answer (not a Binding request, or a bad
    /// FINGERPRINT).
    pub stun: u64,
    /// Sealed packets naming no session we have.
    pub unknown_session: u64,
    /// Failed authentication: wrong key, bit flips, forgery, bad handshake tag.
    pub auth_failed: u64,
    /// Duplicate or too-old packet counters.
    pub replayed: u64,
    /// Handshakes over the per-source or global rate.
    pub rate_limited: u64,
    /// Handshakes refused because the half-open table was full.
    pub handshake_capacity: u64,
    /// ClientHellos without a valid cookie while the server was under load (answered with a
    /// Retry, nothing else).
    pub cookie_required: u64,
    /// Well-formed and authentic but not expected in the current state or from that address.
    pub unexpected: u64,
    /// Authentic packets whose frames failed to decode.
    pub bad_frames: u64,
    /// Relay requests between clients that share no group, or to clients that are gone.
    pub relay_denied: u64,
    /// Relayed packets over a client, group or server byte-rate cap.
    pub relay_rate: u64,
    /// Candidate addresses refused (loopback, multicast, unspecified, port 0).
    pub bad_candidates: u64,
    /// Outgoing messages dropped because a bounded queue was full.
    pub queue_full: u64,
    /// Peer packets for a pair this endpoint does not know (never formed, or an old epoch).
    pub unknown_peer: u64,
    /// Resumption tickets refused: forged, altered, expired, or presented before.
    pub bad_tickets: u64,
}

impl std::ops::AddAssign for DropStats {
    fn add_assign(&mut self, o: Self) {
        let Self {
            malformed,
            unknown_kind,
            bad_version,
            stun,
            unknown_session,
            auth_failed,
            replayed,
            rate_limited,
            handshake_capacity,
            cookie_required,
            unexpected,
            bad_frames,
            relay_denied,
            relay_rate,
            bad_candidates,
            queue_full,
            unknown_peer,
            bad_tickets,
        } = o;
        self.malformed += malformed;
        self.unknown_kind += unknown_kind;
        self.bad_version += bad_version;
        self.stun += stun;
        self.unknown_session += unknown_session;
        self.auth_failed += auth_failed;
        self.replayed += replayed;
        self.rate_limited += rate_limited;
        self.handshake_capacity += handshake_capacity;
        self.cookie_required += cookie_required;
        self.unexpected += unexpected;
        self.bad_frames += bad_frames;
        self.relay_denied += relay_denied;
        self.relay_rate += relay_rate;
        self.bad_candidates += bad_candidates;
        self.queue_full += queue_full;
        self.unknown_peer += unknown_peer;
        self.bad_tickets += bad_tickets;
    }
}

impl DropStats {
    /// Counts a datagram that failed to decode.
    pub(crate) fn count_decode(&mut self, e: crate::wire::DecodeError) {
        use crate::wire::DecodeError;
        match e {
            DecodeError::UnknownKind(_) => self.unknown_kind += 1,
            DecodeError::BadVersion(_) => self.bad_version += 1,
            DecodeError::Truncated | DecodeError::BadLength | DecodeError::BadValue => {
                self.malformed += 1
            }
        }
    }

    /// Counts a sealed packet that failed to open.
    pub(crate) fn count_open(&mut self, e: crate::crypto::OpenError) {
        use crate::crypto::OpenError;
        match e {
            OpenError::Replayed => self.replayed += 1,
            OpenError::Auth => self.auth_failed += 1,
            OpenError::TooLarge => self.malformed += 1,
        }
    }

    /// Every counter with its field's name, in declaration order (for logs and reports).
    pub fn by_reason(&self) -> [(&'static str, u64); 18] {
        [
            ("malformed", self.malformed),
            ("unknown_kind", self.unknown_kind),
            ("bad_version", self.bad_version),
            ("stun", self.stun),
            ("unknown_session", self.unknown_session),
            ("auth_failed", self.auth_failed),
            ("replayed", self.replayed),
            ("rate_limited", self.rate_limited),
            ("handshake_capacity", self.handshake_capacity),
            ("cookie_required", self.cookie_required),
            ("unexpected", self.unexpected),
            ("bad_frames", self.bad_frames),
            ("relay_denied", self.relay_denied),
            ("relay_rate", self.relay_rate),
            ("bad_candidates", self.bad_candidates),
            ("queue_full", self.queue_full),
            ("unknown_peer", self.unknown_peer),
            ("bad_tickets", self.bad_tickets),
        ]
    }

    /// All drops together.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }
}

/// Traffic counters shared by clients and servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStats {
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_in: u64,
    /// Bytes handed to `handle_datagram`.
    pub bytes_in: u64,
    /// Datagrams returned by `poll_transmit`.
    pub datagrams_out: u64,
    /// Bytes returned by `poll_transmit`.
    pub bytes_out: u64,
    /// Keepalives sent.
    pub keepalives_sent: u64,
    /// Keepalives received.
    pub keepalives_received: u64,
    /// Inputs whose `now` was earlier than one already seen (clamped, not trusted).
    pub time_went_backwards: u64,
    /// Events dropped because the application did not drain `poll_event`.
    pub events_dropped: u64,
}

impl std::ops::AddAssign for IoStats {
    fn add_assign(&mut self, o: Self) {
        let Self {
            datagrams_in,
            bytes_in,
            datagrams_out,
            bytes_out,
            keepalives_sent,
            keepalives_received,
            time_went_backwards,
            events_dropped,
        } = o;
        self.datagrams_in += datagrams_in;
        self.bytes_in += bytes_in;
        self.datagrams_out += datagrams_out;
        self.bytes_out += bytes_out;
        self.keepalives_sent += keepalives_sent;
        self.keepalives_received += keepalives_received;
        self.time_went_backwards += time_went_backwards;
        self.events_dropped += events_dropped;
    }
}

impl IoStats {
    /// A datagram of `len` bytes came in.
    pub(crate) fn received(&mut self, len: usize) {
        self.datagrams_in += 1;
        self.bytes_in += len as u64;
    }

    /// A datagram of `len` bytes went out.
    pub(crate) fn sent(&mut self, len: usize) {
        self.datagrams_out += 1;
        self.bytes_out += len as u64;
    }
}

/// A client's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Traffic.
    pub io: IoStats,
    /// Drops by reason.
    pub dropped: DropStats,
    /// ClientHellos sent (first try and retries).
    pub hellos_sent: u64,
    /// ServerHellos carrying a static key other than the pinned one.
    pub server_key_mismatches: u64,
    /// Peer packets sent through the relay.
    pub relayed_out: u64,
    /// Peer packets received through the relay.
    pub relayed_in: u64,
    /// Direct paths validated (hole punching successes).
    pub direct_paths: u64,
    /// Probes sent directly to peers (punching rounds, prediction and birthday sprays,
    /// keepalives on direct paths).
    pub probes_sent: u64,
    /// Retry packets (cookie requests) received from the server.
    pub retries_received: u64,
    /// Control messages retransmitted.
    pub control_retransmits: u64,
    /// TCP streams to the server connected (see [`crate::Transport`]).
    pub tcp_streams_opened: u64,
    /// TCP streams to the server that failed to connect.
    pub tcp_connect_failures: u64,
    /// TCP streams to the server that ended while in use.
    pub tcp_streams_closed: u64,
    /// Moves of the server session between UDP and TCP.
    pub transport_changes: u64,
    /// UDP probes sent to the server while on TCP.
    pub udp_probes_sent: u64,
    /// Re-registrations with the server started after it was lost (see
    /// [`crate::ClientConfig::reregister`]).
    pub reregistrations: u64,
    /// Pairs kept through a server loss that the returning server introduced again (their
    /// direct path and reliability state went on).
    pub pairs_carried_over: u64,
    /// Carried-over pairs whose peer had kept nothing (restarted): begun again.
    pub pairs_restarted: u64,
    /// Stateless resets from the server that carried this session's token. Each starts a
    /// check (a probe on the session's path): if the server answers anything authentic within
    /// a few round trips the reset was not its own (`resets_refuted`), else the session is
    /// lost ([`crate::DisconnectReason::Reset`]). Resets that carry another token are dropped
    /// and counted (`dropped.auth_failed`, or `dropped.unexpected` from another address).
    pub resets_received: u64,
    /// Resets with this session's token that the server then refuted by answering: someone
    /// else sent them (a token learnt for a session id before it was ours; see
    /// [`crate::wire::reset`]).
    pub resets_refuted: u64,
    /// Port mapping at the default gateway (see [`crate::Client::set_gateway`]).
    pub port_mapping: crate::portmap::PortMapStats,
}

/// A server's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Traffic.
    pub io: IoStats,
    /// Drops by reason.
    pub dropped: DropStats,
    /// ServerHellos answered to fresh ClientHellos.
    pub handshakes_started: u64,
    /// Sessions that became clients.
    pub handshakes_completed: u64,
    /// Sessions refused (token, capacity).
    pub handshakes_rejected: u64,
    /// Half-open handshakes that expired.
    pub handshakes_expired: u64,
    /// Clients dropped for silence.
    pub clients_timed_out: u64,
    /// Times a client went quiet past `offline_after` (its peers were told it is recovering).
    pub clients_offline: u64,
    /// Sessions whose client address changed (NAT rebinding), following the newest packet.
    pub address_changes: u64,
    /// Sessions that moved between UDP and a TCP stream (or to a new stream).
    pub transport_changes: u64,
    /// Sessions whose TCP stream closed under them (they wait for the client's next packet).
    pub stream_paths_closed: u64,
    /// TCP streams without a session closed to make room for a newer one: their source IP
    /// (or the whole server) held as many as it may (see `ServerConfig::max_sessionless_streams`).
    pub streams_evicted: u64,
    /// Relay packets for a receiver whose stream had closed (it waits for the client's next
    /// packet): lost as on a dead link, as the session's own unreliable output is. Not a
    /// drop for a reason of the sender's: the pair's reliability repairs it once the receiver
    /// is heard again.
    pub relay_unreachable: u64,
    /// UDP path probes from clients on TCP answered (the probe does not move the session).
    pub path_probes_answered: u64,
    /// Sessions that got their host id back from a resumption ticket.
    pub sessions_resumed: u64,
    /// Connected clients now.
    pub clients: u64,
    /// Half-open handshakes now.
    pub half_open: u64,
    /// Groups now (rooms included: each room is a group).
    pub groups: u64,
    /// Rooms now (the rooms policy's; 0 without it).
    pub rooms: u64,
    /// Client pairs sharing at least one group now (each has its own key).
    pub pairs: u64,
    /// Peer packets forwarded.
    pub relayed_packets: u64,
    /// Peer packet bytes forwarded.
    pub relayed_bytes: u64,
    /// Control messages retransmitted.
    pub control_retransmits: u64,
    /// STUN Binding requests answered.
    pub stun_answered: u64,
    /// Retry packets (cookie requests) sent while under load.
    pub retries_sent: u64,
    /// Stateless resets sent in answer to packets of sessions this server does not have.
    pub resets_sent: u64,
    /// Packets of unknown sessions not answered with a reset: over the reset rate or queue
    /// (also counted in `dropped.unknown_session`).
    pub resets_limited: u64,
    /// Pairs whose path is direct now, as their clients last reported it (clients report
    /// every change of path to the server; a client that predates the report, or one that
    /// never punches, leaves its pairs counted as relayed).
    pub pairs_direct: u64,
    /// Distributions: session round trips, relayed datagram sizes, time to a direct path.
    pub histograms: ServerHistograms,
}

/// Most buckets a [`Histogram`] has, the overflow bucket included.
const MAX_BUCKETS: usize = 16;

/// Observations counted into fixed buckets since start: what Prometheus calls a histogram
/// (its exposition wants cumulative counts: add up [`Histogram::counts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    bounds: &'static [u64],
    counts: [u64; MAX_BUCKETS],
    sum: u64,
    count: u64,
}

impl Histogram {
    /// An empty histogram whose finite buckets end at `bounds` (ascending, at most 15; one
    /// more bucket takes everything above the last).
    ///
    /// # Panics
    /// More than 15 bounds, or bounds not strictly ascending: a programming error, caught in
    /// const evaluation where the bounds are constants.
    pub const fn new(bounds: &'static [u64]) -> Self {
        assert!(bounds.len() < MAX_BUCKETS, "at most 15 bucket bounds");
        let mut i = 1;
        while i < bounds.len() {
            assert!(bounds[i - 1] < bounds[i], "bucket bounds must ascend");
            i += 1;
        }
        Self {
            bounds,
            counts: [0; MAX_BUCKETS],
            sum: 0,
            count: 0,
        }
    }

    /// Counts `value` in the first bucket whose bound is at least `value`.
    pub fn observe(&mut self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.counts[i] += 1;
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }

    /// The finite buckets' upper bounds (inclusive), ascending.
    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Observations per bucket (not cumulative): one per bound, then the overflow bucket.
    pub fn counts(&self) -> &[u64] {
        &self.counts[..=self.bounds.len()]
    }

    /// Sum of every observed value (saturating).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds `other`'s observations; a histogram with other bounds is ignored (returns false).
    pub fn merge(&mut self, other: &Self) -> bool {
        if self.bounds != other.bounds {
            return false;
        }
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.count += other.count;
        true
    }
}

/// Bucket bounds of [`ServerHistograms::session_rtt_ms`], in milliseconds.
pub const SESSION_RTT_BOUNDS_MS: &[u64] = &[5, 10, 20, 40, 80, 120, 160, 250, 400, 640, 1000, 2000];
/// Bucket bounds of [`ServerHistograms::relay_datagram_bytes`]: small game state, typical
/// snapshots, full datagrams.
pub const RELAY_DATAGRAM_BOUNDS_BYTES: &[u64] = &[64, 128, 256, 384, 512, 768, 1024, 1200];
/// Bucket bounds of [`ServerHistograms::time_to_direct_ms`], in milliseconds: a first-round
/// punch lands in a few round trips, a retried one after seconds.
pub const TIME_TO_DIRECT_BOUNDS_MS: &[u64] = &[
    50, 100, 200, 400, 700, 1000, 2000, 4000, 8000, 15_000, 30_000, 60_000,
];

/// The server's distributions, for operators (Prometheus histograms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerHistograms {
    /// Round-trip samples of client sessions (control messages acknowledged on their first
    /// transmission), in milliseconds.
    pub session_rtt_ms: Histogram,
    /// Sizes of relayed peer packets as received, in bytes.
    pub relay_datagram_bytes: Histogram,
    /// From a pair's introduction to its first direct path, in milliseconds, as the client
    /// that validated it reports; one observation per pair.
    pub time_to_direct_ms: Histogram,
}

impl Default for ServerHistograms {
    fn default() -> Self {
        Self {
            session_rtt_ms: Histogram::new(SESSION_RTT_BOUNDS_MS),
            relay_datagram_bytes: Histogram::new(RELAY_DATAGRAM_BOUNDS_BYTES),
            time_to_direct_ms: Histogram::new(TIME_TO_DIRECT_BOUNDS_MS),
        }
    }
}

impl ServerStats {
    /// Adds what a relay forwarder on a thread of its own counted (its traffic, drops and
    /// relayed packets; see [`crate::Forwarder`]): the server's totals for an operator.
    pub fn add_forwarder(&mut self, f: &Self) {
        self.io += f.io;
        self.dropped += f.dropped;
        self.relayed_packets += f.relayed_packets;
        self.relayed_bytes += f.relayed_bytes;
        self.relay_unreachable += f.relay_unreachable;
        self.histograms
            .relay_datagram_bytes
            .merge(&f.histograms.relay_datagram_bytes);
    }
}
