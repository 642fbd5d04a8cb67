//! Direct paths to peers: probe the peer's candidate addresses (today: the public address
//! the server observed for it) with sealed `Probe` frames from both sides at once, promote a
//! path once a `ProbeAck` comes back on it (validated both ways), keep it alive, and fall
//! back to the relay when it goes quiet. The reliability state is per peer, not per path, so
//! moving traffic between paths loses, duplicates and reorders nothing.
//!
//! Both ends start probing when the server introduces them (the `PeerAdd` reaches both within
//! a server RTT of each other), so each side's first probes open its own NAT before the
//! other's arrive: simultaneous open, which is what every cone NAT needs.

use std::net::SocketAddr;

use smallvec::SmallVec;

use super::Client;
use crate::Transmit;
use crate::event::{ClientEvent, HostId, PathChangeReason};
use crate::rudp::Path;
use crate::time::{Duration, Instant};
use crate::wire::Writer;
use crate::wire::frame::Frame;
use crate::wire::sealed::{HEADER_LEN, OVERHEAD, TAG_LEN};

/// Time between probes of one round. Short, because both sides probe at once and the first
/// probes are expected to die in the other side's NAT until it has sent its own.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Probes per round (3 s): longer than a lost-and-retransmitted `PeerAdd` plus a slow RTT,
/// shorter than Linux's 30 s unreplied-conntrack timeout.
const PROBES_PER_ROUND: u32 = 30;
/// A failed round is retried after this long. Longer than Linux conntrack's 30 s unreplied
/// timeout on purpose: when a peer's probe reaches a Linux NAT before the local probe has
/// left it, conntrack keeps that inbound flow and moves the local mapping to another port;
/// the peer's own probes keep refreshing it, so a retry within 30 s loses the same race
/// (found by the simulator's internet mix). After 35 s of quiet the stale entry is gone.
const RETRY_AFTER: Duration = Duration::from_secs(35);
/// In retry rounds the two sides alternate which one probes first, this much ahead: the
/// first side's probes open its own NAT before the second side's can arrive, so in one of
/// two rounds a NAT with the conntrack quirk sends first. Round 0 is simultaneous (fastest
/// for the common case).
const RETRY_STAGGER: Duration = Duration::from_millis(250);
/// On a direct path, send at least this often (a probe when idle): keeps NAT bindings open
/// (well under conntrack's 30 s) and gives liveness something to measure.
const DIRECT_KEEPALIVE: Duration = Duration::from_secs(1);
/// A direct path with no authentic packet for this long is dead even when idle.
const DIRECT_IDLE_DEAD: Duration = Duration::from_millis(2500);
/// With data in flight, a direct path is dead after two retransmission timeouts without an
/// answer, but never sooner than this (jitter on fast paths).
const DIRECT_BUSY_DEAD_MIN: Duration = Duration::from_millis(300);
/// Probe answers waiting to be sent, per peer.
const MAX_ACKS_DUE: usize = 8;
/// Candidate addresses probed per peer, at most (server-reflexive, LAN, peer-reflexive).
const MAX_CANDIDATES: usize = 8;

/// Per-peer path state.
#[derive(Debug)]
pub(super) struct Punch {
    /// Addresses to probe.
    candidates: SmallVec<[SocketAddr; 4]>,
    /// Our probes carry this; only its echo validates a path.
    nonce: u64,
    /// Hole punching allowed by the configuration.
    enabled: bool,
    /// Probe rounds started so far.
    round: u32,
    /// This end has the lower host id (decides who goes first in staggered rounds).
    lower: bool,
    /// Probes sent in the current round.
    sent: u32,
    /// When the next probe round step is due (`None`: not probing).
    next_probe: Option<Instant>,
    /// Candidate index for the next probe of this step.
    cursor: usize,
    /// Probe answers to send: (to, nonce).
    acks_due: SmallVec<[(SocketAddr, u64); 4]>,
    /// The validated direct address, if any.
    direct: Option<SocketAddr>,
    last_direct_recv: Option<Instant>,
    last_direct_send: Option<Instant>,
}

impl Punch {
    pub(super) fn new(
        now: Instant,
        addr: SocketAddr,
        nonce: u64,
        enabled: bool,
        lower: bool,
    ) -> Self {
        let usable = !addr.ip().is_unspecified() && addr.port() != 0;
        let mut candidates = SmallVec::new();
        if usable {
            candidates.push(addr);
        }
        Self {
            candidates,
            nonce,
            enabled,
            round: 0,
            lower,
            sent: 0,
            next_probe: (enabled && usable).then_some(now),
            cursor: 0,
            acks_due: SmallVec::new(),
            direct: None,
            last_direct_recv: None,
            last_direct_send: None,
        }
    }

    pub(super) fn direct(&self) -> Option<SocketAddr> {
        self.direct
    }

    /// The next instant this path needs attention; `dead_after` is how long the direct path
    /// may stay silent (see [`dead_limit`]).
    pub(super) fn next_timeout(&self, dead_after: Duration) -> Option<Instant> {
        let keepalive = self
            .direct
            .and(self.last_direct_send)
            .map(|t| t + DIRECT_KEEPALIVE);
        let dead = self
            .direct
            .and(self.last_direct_recv)
            .map(|t| t + dead_after);
        [self.next_probe, keepalive, dead]
            .into_iter()
            .flatten()
            .min()
    }
}

/// How long a direct path may be silent before it is dead: two retransmission timeouts when
/// data is waiting for acknowledgement, a few missed keepalives when idle.
pub(super) fn dead_limit(conn: &crate::rudp::conn::Connection) -> Duration {
    if conn.unacked() > 0 {
        ((conn.srtt() + conn.rtt_var() * 4) * 2).max(DIRECT_BUSY_DEAD_MIN)
    } else {
        DIRECT_IDLE_DEAD
    }
}

impl Punch {
    /// More addresses to probe (the peer's LAN candidates); starts a round if not direct.
    pub(super) fn add_candidates(&mut self, now: Instant, addrs: impl Iterator<Item = SocketAddr>) {
        for a in addrs {
            if !self.candidates.contains(&a) && self.candidates.len() < MAX_CANDIDATES {
                self.candidates.push(a);
            }
        }
        if self.direct.is_none() && self.enabled {
            self.sent = 0;
            self.next_probe = Some(now);
        }
    }
}

impl Client {
    /// Tells the server this client's local (LAN) addresses, so that peers behind the same
    /// NAT can reach it directly; runtimes call it with the socket's interface addresses
    /// (`pierce_mio::local_addresses`). Sent now if connected, else once connected.
    ///
    /// # Errors
    /// [`crate::CommandError::QueueFull`] if the control queue is full.
    pub fn set_local_addresses(
        &mut self,
        now: Instant,
        addrs: &[SocketAddr],
    ) -> Result<(), crate::CommandError> {
        self.clock.advance(now);
        self.local_addresses = crate::wire::control::Candidates::new(addrs);
        if self.is_connected() {
            let addrs = self.local_addresses;
            self.push_control(&crate::wire::control::ControlMsg::Candidates { addrs })?;
        }
        Ok(())
    }

    /// Advances every peer's path timers: probe rounds, keepalives, liveness.
    pub(super) fn punch_timeouts(&mut self, now: Instant) {
        let ids: SmallVec<[HostId; 16]> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let limit = dead_limit(&peer.conn);
            let p = &mut peer.punch;
            if let (Some(_), Some(last)) = (p.direct, p.last_direct_recv) {
                if now >= last + limit {
                    p.direct = None;
                    p.sent = 0;
                    p.next_probe = Some(now + RETRY_AFTER);
                    peer.path = Path::Relay;
                    self.push_event(ClientEvent::PathChanged {
                        peer: id,
                        path: Path::Relay,
                        reason: PathChangeReason::DirectLost,
                    });
                }
            }
        }
    }

    /// The next direct datagram to any peer: probe answers, probes, then connection traffic
    /// of peers on a direct path.
    pub(super) fn poll_peer_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let max = self.config.max_datagram_size.min(buf.len());
        for (_, peer) in self.peers.iter_mut() {
            let pair_id = peer.pair_id;
            // 1. Answers to probes.
            if let Some((to, nonce)) = peer.punch.acks_due.pop() {
                let len = peer.keys.seal_frames(pair_id, buf, max, |w| {
                    let _ = Frame::ProbeAck { nonce }.encode(w);
                })?;
                return Some(Transmit { dst: to, len });
            }
            // 2. Probes (probing rounds, and keepalives on a direct path).
            let p = &mut peer.punch;
            let keepalive_due = p.direct.is_some()
                && p.last_direct_send
                    .is_none_or(|t| now >= t + DIRECT_KEEPALIVE);
            let probe_due = p.next_probe.is_some_and(|t| now >= t) && !p.candidates.is_empty();
            if keepalive_due || probe_due {
                let dst = if keepalive_due {
                    p.direct?
                } else {
                    p.candidates[p.cursor % p.candidates.len()]
                };
                let nonce = p.nonce;
                let len = peer.keys.seal_frames(pair_id, buf, max, |w| {
                    let _ = Frame::Probe { nonce }.encode(w);
                })?;
                let p = &mut peer.punch;
                if keepalive_due {
                    p.last_direct_send = Some(now);
                } else {
                    p.cursor += 1;
                    if p.cursor >= p.candidates.len() {
                        p.cursor = 0;
                        p.sent += 1;
                        p.next_probe = if p.direct.is_some() {
                            None
                        } else if p.sent >= PROBES_PER_ROUND {
                            p.sent = 0;
                            p.round += 1;
                            let second = (p.round % 2 == 1) != p.lower;
                            let stagger = if second {
                                RETRY_STAGGER
                            } else {
                                Duration::ZERO
                            };
                            Some(now + RETRY_AFTER + stagger)
                        } else {
                            Some(now + PROBE_INTERVAL)
                        };
                    }
                }
                return Some(Transmit { dst, len });
            }
            // 3. Reliability traffic on the direct path.
            if let Some(dst) = peer.punch.direct {
                if peer.conn.wants_transmit(now) {
                    let limit = max;
                    if limit < OVERHEAD + 1 {
                        continue;
                    }
                    let pn = peer.keys.next_counter();
                    let mut w = Writer::new(&mut buf[HEADER_LEN..limit - TAG_LEN]);
                    let n = peer.conn.write(now, pn, OVERHEAD, &mut w);
                    if n == 0 {
                        continue;
                    }
                    let len = peer.keys.seal(pair_id, &mut buf[..limit], n)?;
                    peer.punch.last_direct_send = Some(now);
                    return Some(Transmit { dst, len });
                }
            }
        }
        None
    }

    /// Path frames of an authentic peer packet. `relayed` packets only count for probes
    /// (never: probes are sent directly) — a path is direct only if the packet was.
    pub(super) fn on_path_frame(
        &mut self,
        now: Instant,
        peer_id: HostId,
        from: SocketAddr,
        relayed: bool,
        frame: &Frame<'_>,
    ) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let p = &mut peer.punch;
        match *frame {
            Frame::Probe { nonce } if !relayed && self.config.direct_paths => {
                if p.acks_due.len() < MAX_ACKS_DUE {
                    p.acks_due.push((from, nonce));
                }
                // The probe's source is where the peer's NAT maps it towards us: the best
                // candidate there is (it already passed our NAT's filter, too).
                if !p.candidates.contains(&from) && p.candidates.len() < MAX_CANDIDATES {
                    p.candidates.push(from);
                    if p.direct.is_none() && p.next_probe.is_none_or(|t| t > now) {
                        p.next_probe = Some(now);
                    }
                }
            }
            Frame::ProbeAck { nonce } if !relayed && nonce == p.nonce && p.direct.is_none() => {
                p.direct = Some(from);
                p.next_probe = None;
                p.last_direct_recv = Some(now);
                p.last_direct_send = Some(now);
                peer.path = Path::Direct(from);
                self.stats.direct_paths += 1;
                self.push_event(ClientEvent::PathChanged {
                    peer: peer_id,
                    path: Path::Direct(from),
                    reason: PathChangeReason::Punched,
                });
            }
            _ => {}
        }
    }

    /// Any authentic packet that came directly from `from`.
    pub(super) fn on_direct_packet(&mut self, now: Instant, peer_id: HostId, from: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let p = &mut peer.punch;
        if p.direct.is_some() {
            p.last_direct_recv = Some(now);
            // The peer's NAT rebound: follow it (the packet is authentic and fresh).
            if p.direct != Some(from) {
                p.direct = Some(from);
                peer.path = Path::Direct(from);
            }
        }
    }
}
