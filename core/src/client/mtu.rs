//! Path-MTU discovery for one peer, per path: the relay path and the current direct path each
//! have their own [`Pmtud`] (RFC 8899), so switching between them never sends a datagram
//! larger than the path in use proved.
//!
//! The machines live beside the peer's [`crate::reliability::Connection`], not inside it: the
//! connection is per peer (its packet numbers carry over path switches) while a PLPMTU
//! belongs to a path. Probes are sealed peer packets (a ping and padding) that the connection
//! never sees: their loss is neither congestion nor a reason to retransmit anything (RFC 8899
//! §3 item 7). Both machines read every acknowledgement the peer sends (a probe may be
//! acknowledged over the other path), and [`PeerMtu::handle_timeout`] runs their timers.
//!
//! Sizes are datagrams on the wire: on the relay path the relay header in front of the peer
//! packet ([`RELAY_HEADER_LEN`], the larger of the two headers it travels behind) counts, so a
//! relayed datagram never exceeds what its path proved nor [`crate::MAX_DATAGRAM_SIZE`].

use std::net::SocketAddr;

use crate::SocketId;
use crate::config::ClientConfig;
use crate::crypto::PacketKeys;
use crate::rudp::pmtu::{PmtuStats, Pmtud};
use crate::time::Instant;
use crate::wire::frame::Frame;
use crate::wire::relay::RELAY_HEADER_LEN;
use crate::wire::sealed::OVERHEAD;

/// The relay path's and the direct path's discovery for one peer.
#[derive(Debug)]
pub(super) struct PeerMtu {
    base: usize,
    ceiling: usize,
    relay: Pmtud,
    /// The direct path it belongs to (local socket, peer address) and its discovery.
    direct: Option<((SocketId, SocketAddr), Pmtud)>,
    /// Counters of direct paths since replaced.
    retired: PmtuStats,
}

impl PeerMtu {
    pub(super) fn new(config: &ClientConfig) -> Self {
        let (base, ceiling) = (config.base_datagram_size(), config.max_datagram_size);
        Self {
            base,
            ceiling,
            relay: Pmtud::new(base, ceiling),
            direct: None,
            retired: PmtuStats::default(),
        }
    }

    /// The relay path's discovery (sizes include [`RELAY_HEADER_LEN`]).
    pub(super) fn relay(&mut self) -> &mut Pmtud {
        &mut self.relay
    }

    /// The discovery of direct path `path`: a new one (from the base) if the direct path
    /// changed since.
    pub(super) fn direct(&mut self, path: (SocketId, SocketAddr)) -> &mut Pmtud {
        if self.direct.as_ref().is_none_or(|(p, _)| *p != path) {
            self.retire_direct();
        }
        let (base, ceiling) = (self.base, self.ceiling);
        &mut self
            .direct
            .get_or_insert_with(|| (path, Pmtud::new(base, ceiling)))
            .1
    }

    /// The direct path is gone: a later one starts from the base.
    pub(super) fn direct_gone(&mut self) {
        self.retire_direct();
    }

    fn retire_direct(&mut self) {
        if let Some((_, m)) = self.direct.take() {
            let s = m.stats();
            self.retired.probes_sent += s.probes_sent;
            self.retired.probes_acked += s.probes_acked;
            self.retired.probes_lost += s.probes_lost;
            self.retired.black_holes += s.black_holes;
        }
    }

    /// The PLPMTU of the path in use: `direct`, or the relay.
    pub(super) fn current(&self, direct: Option<(SocketId, SocketAddr)>) -> usize {
        match (direct, &self.direct) {
            (Some(p), Some((q, m))) if p == *q => m.current(),
            (Some(_), _) => self.base,
            (None, _) => self.relay.current(),
        }
    }

    /// Counters over every path this peer had.
    pub(super) fn stats(&self) -> PmtuStats {
        let mut s = self.retired;
        for m in std::iter::once(&self.relay).chain(self.direct.as_ref().map(|(_, m)| m)) {
            let t = m.stats();
            s.probes_sent += t.probes_sent;
            s.probes_acked += t.probes_acked;
            s.probes_lost += t.probes_lost;
            s.black_holes += t.black_holes;
        }
        s
    }

    /// The peer acknowledged `ranges` (whichever path the acknowledgement came over).
    pub(super) fn on_ack(&mut self, now: Instant, ranges: &[(u64, u64)]) {
        self.relay.on_ack(now, ranges);
        if let Some((_, m)) = self.direct.as_mut() {
            m.on_ack(now, ranges);
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.relay.handle_timeout(now);
        if let Some((_, m)) = self.direct.as_mut() {
            m.handle_timeout(now);
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let d = self.direct.as_ref().and_then(|(_, m)| m.poll_timeout());
        match (self.relay.poll_timeout(), d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Bytes of the peer packet in a relay-path datagram of `size` bytes.
pub(super) fn relay_peer_len(size: usize) -> usize {
    size.saturating_sub(RELAY_HEADER_LEN)
}

/// Seals a path-MTU probe of exactly `len` bytes (a ping and padding, RFC 8899 §4.1) for
/// `receiver` into `buf`; returns its packet number and length, or `None` if `buf` is too short.
pub(super) fn seal_probe(
    keys: &mut PacketKeys,
    receiver: u32,
    buf: &mut [u8],
    len: usize,
) -> Option<(u64, usize)> {
    if len > buf.len() || len < OVERHEAD + 2 {
        return None;
    }
    let pn = keys.next_counter();
    let n = keys.seal_frames(receiver, buf, len, |w| {
        let _ = Frame::Ping.encode(w);
        let pad = w.remaining().saturating_sub(1);
        let _ = Frame::Padding(u16::try_from(pad).unwrap_or(u16::MAX)).encode(w);
    })?;
    (n == len).then_some((pn, n))
}
