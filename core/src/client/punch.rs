//! Direct paths to peers: probe the peer's candidate addresses with sealed `Probe` frames
//! from both sides at once, promote a path once a `ProbeAck` comes back on it (validated both
//! ways), keep it alive, and fall back to the relay when it goes quiet. The reliability state
//! is per peer, not per path, so moving traffic between paths loses, duplicates and reorders
//! nothing.
//!
//! Candidates: the peer's server-reflexive address, its LAN addresses, and peer-reflexive
//! addresses (where its probes came from). The server starts both ends together: each
//! `PeerAdd` carries a delay that makes the two ends' first probes leave at about the same
//! moment, so each NAT has opened its mapping before the other side's probes arrive.
//!
//! When both NATs' behaviours are known (RFC 5780 discovery, relayed by the server) and one
//! side is "hard" (endpoint-dependent mapping) while the other is "easy" (endpoint-
//! independent mapping) but filters by address and port, simultaneous punching alone cannot
//! work: the hard side's probes leave from a port nobody knows. Then:
//! - **port prediction**: a hard NAT with sequential allocation maps the next flow at its last
//!   seen port plus its step; the easy side probes a window of those ports;
//! - **birthday probing**: against random allocation, the hard side opens many local sockets
//!   (each a new mapping towards the easy side) and the easy side probes random ports of the
//!   hard side's IP; a collision opens the path (n sockets, k probes: success
//!   1 − (1 − n/64512)^k, ~98% for 256 and 1024).
//!
//! The runtime opens the extra sockets when asked ([`crate::SocketRequest`]); a direct path
//! found on one keeps using it.

use std::net::{IpAddr, SocketAddr};

use smallvec::SmallVec;

use super::Client;
use crate::event::{ClientEvent, HostId, PathChangeReason};
use crate::nat::{Dependence, NatBehavior, PortAllocation};
use crate::rudp::Path;
use crate::time::{Duration, Instant};
use crate::wire::Writer;
use crate::wire::control::NatInfo;
use crate::wire::frame::Frame;
use crate::wire::sealed::{HEADER_LEN, OVERHEAD, TAG_LEN};
use crate::{SocketId, SocketRequest, Transmit};

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
/// After a direct path died, probing restarts this soon: both ends notice the loss within a
/// few RTOs of each other, so their rounds overlap.
const RETRY_AFTER_LOSS: Duration = Duration::from_secs(1);
/// On a direct path, send at least this often (a probe when idle): keeps NAT bindings open
/// (well under conntrack's 30 s) and gives liveness something to measure.
const DIRECT_KEEPALIVE: Duration = Duration::from_secs(1);
/// A check of a new peer address is not replaced by another before this long. Behind two
/// endpoint-dependent NATs every probe to a new address opens a new mapping, so each answer
/// comes from yet another port: following each one at once would make probes chase each
/// other at network speed.
const MIGRATION_RETRY: Duration = Duration::from_secs(1);
/// A direct path with no authentic packet for this long is dead even when idle.
const DIRECT_IDLE_DEAD: Duration = Duration::from_millis(2500);
/// With data in flight, a direct path is dead after two retransmission timeouts without an
/// answer, but never sooner than this (jitter on fast paths).
const DIRECT_BUSY_DEAD_MIN: Duration = Duration::from_millis(300);
/// Probe answers waiting to be sent, per peer.
const MAX_ACKS_DUE: usize = 8;
/// Candidate addresses probed per peer, at most (server-reflexive, LAN, peer-reflexive).
const MAX_CANDIDATES: usize = 8;
/// Between two sprayed probes (prediction windows, birthday ports): 500 per second, ~30 kB/s
/// of probes, a 1024-probe birthday round in about two seconds.
const SPRAY_INTERVAL: Duration = Duration::from_millis(2);
/// A prediction window is swept again this often during a round (the hard side's mapping
/// may appear after our first sweep).
const PREDICTION_SWEEP: Duration = Duration::from_millis(500);
/// The hard side sweeps its extra sockets this often during a round, re-opening their
/// mappings and its filters towards the easy side.
const SOCKET_SWEEP: Duration = Duration::from_secs(1);
/// Lowest port a birthday probe targets (NATs allocate from the unprivileged range).
const LOWEST_RANDOM_PORT: u16 = 1024;

/// Prediction sweeps in one round (a round lasts about three seconds).
const PREDICTION_SWEEPS_PER_ROUND: u32 = 6;
/// Most ports one prediction sweep covers.
const MAX_PREDICTION_SPAN: u32 = 1024;

/// Ports one prediction sweep covers: `window` steps of `delta`.
fn prediction_span(window: u16, delta: i16) -> u32 {
    (u32::from(window) * u32::from(delta.unsigned_abs()).max(1)).min(MAX_PREDICTION_SPAN)
}

/// What the two NATs' behaviours call for beyond simultaneous punching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Candidates only.
    Basic,
    /// We are easy, the peer hard and sequential: probe its predicted ports.
    Predict { base: u16, delta: i16 },
    /// We are easy, the peer hard and random: probe random ports of its IP.
    BirthdayEasy,
    /// We are hard and random, the peer easy: probe it from many sockets.
    BirthdayHard,
}

/// Chooses the plan from our NAT and the peer's; both ends reach matching plans from the
/// same two descriptions.
pub(super) fn plan(me: Option<&NatBehavior>, peer: Option<&NatInfo>, sockets: u16) -> Plan {
    let (Some(me), Some(peer)) = (me, peer) else {
        return Plan::Basic;
    };
    let easy = |m: Option<Dependence>| m == Some(Dependence::EndpointIndependent);
    let hard = |m: Option<Dependence>| {
        matches!(
            m,
            Some(Dependence::AddressDependent | Dependence::AddressAndPortDependent)
        )
    };
    // A filter that lets the other side's probes in from any port of its IP makes punching
    // work by itself (the peer-reflexive candidate); unknown counts as strict.
    let strict = |f: Option<Dependence>| {
        !matches!(
            f,
            Some(Dependence::EndpointIndependent | Dependence::AddressDependent)
        )
    };
    if easy(me.mapping) && hard(peer.mapping()) && strict(me.filtering) {
        return match peer.allocation() {
            Some(PortAllocation::Sequential { delta }) => Plan::Predict {
                base: peer.last_port,
                delta,
            },
            Some(PortAllocation::Random) => Plan::BirthdayEasy,
            None => Plan::Basic,
        };
    }
    if hard(me.mapping)
        && easy(peer.mapping())
        && strict(peer.filtering())
        && me.allocation == Some(PortAllocation::Random)
        && sockets > 0
    {
        return Plan::BirthdayHard;
    }
    Plan::Basic
}

/// Per-peer path state.
#[derive(Debug)]
pub(super) struct Punch {
    /// Addresses to probe, and the local socket to probe each from.
    candidates: SmallVec<[(SocketId, SocketAddr); 4]>,
    /// The pair's probe secret. Punching probes carry it, and its echo from any address
    /// validates the first direct path (with two endpoint-dependent NATs the answer comes
    /// back from another port than the one probed). A probe that checks a new address for a
    /// validated path carries [`Punch::challenge`] for that address instead, and only that
    /// echoed from there moves the path.
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
    /// Probe answers to send: (on socket, to, nonce).
    acks_due: SmallVec<[(SocketId, SocketAddr, u64); 4]>,
    /// A probe to send at once (ICE's triggered check): a probe arrived from there while no
    /// path is validated, so a probe back crosses both NATs now.
    triggered: Option<(SocketId, SocketAddr)>,
    /// The validated direct path: local socket and the peer's address.
    direct: Option<(SocketId, SocketAddr)>,
    /// A new address the peer's direct packets came from, being validated before the path
    /// moves to it, and when that check started.
    migrating: Option<(SocketId, SocketAddr)>,
    migrating_since: Option<Instant>,
    last_direct_recv: Option<Instant>,
    last_direct_send: Option<Instant>,
    /// The first connection packet sent on the direct path since the last packet received
    /// on it: busy silence is measured from here, not from the last receive (a send after a
    /// quiet second must get its chance to be answered).
    busy_since: Option<Instant>,
    /// The peer's server-reflexive address (what the server saw).
    reflexive: Option<SocketAddr>,
    /// The peer's NAT, when known.
    pub(super) peer_nat: Option<NatInfo>,
    /// What the two NATs call for.
    pub(super) plan: Plan,
    /// Spraying (prediction, birthday) in the current round.
    spray: Spray,
    /// The round the spray was last armed for.
    spray_round: Option<u32>,
    /// xorshift state for birthday ports (seeded from the nonce: deterministic per pair).
    rng: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Spray {
    /// When the next sprayed probe is due (`None`: not spraying).
    next: Option<Instant>,
    /// Probes sprayed this round.
    sent: u32,
    /// Probes this round may spray in all.
    budget: u32,
    /// Position in the current sweep (prediction offset, or extra socket index).
    step: u32,
}

impl Punch {
    /// The probe value for checking a new address of a validated path: the pair's secret
    /// mixed with the path, so the answer proves the probe reached that very address. An
    /// answer the peer gave to a probe sent elsewhere (a keepalive to its old address),
    /// forwarded by someone on the path from their own address, does not move the path (the
    /// value differs), and probes are sealed: the value cannot be read off the wire.
    fn challenge(&self, socket: SocketId, addr: SocketAddr) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (self.nonce, socket, addr).hash(&mut h);
        h.finish()
    }

    /// A peer introduced now: start probing after `delay` (the server's coordination).
    pub(super) fn new(
        now: Instant,
        addr: SocketAddr,
        nonce: u64,
        enabled: bool,
        lower: bool,
        delay: Duration,
    ) -> Self {
        let usable = !addr.ip().is_unspecified() && addr.port() != 0;
        let mut candidates = SmallVec::new();
        if usable {
            candidates.push((SocketId::PRIMARY, addr));
        }
        Self {
            candidates,
            nonce,
            enabled,
            round: 0,
            lower,
            sent: 0,
            next_probe: (enabled && usable).then_some(now + delay),
            cursor: 0,
            acks_due: SmallVec::new(),
            triggered: None,
            direct: None,
            migrating: None,
            migrating_since: None,
            last_direct_recv: None,
            last_direct_send: None,
            busy_since: None,
            reflexive: usable.then_some(addr),
            peer_nat: None,
            plan: Plan::Basic,
            spray: Spray::default(),
            spray_round: None,
            rng: nonce | 1,
        }
    }

    pub(super) fn direct(&self) -> Option<SocketAddr> {
        self.direct.map(|(_, a)| a)
    }

    /// The local socket of the direct path, if any.
    pub(super) fn direct_socket(&self) -> Option<SocketId> {
        self.direct.map(|(s, _)| s)
    }

    /// True while this peer needs the extra sockets (we are the hard side of a birthday
    /// round that has not succeeded).
    pub(super) fn wants_sockets(&self) -> bool {
        self.plan == Plan::BirthdayHard && self.direct.is_none() && self.enabled
    }

    /// When the direct path is dead if nothing arrives on it: [`DIRECT_IDLE_DEAD`] after the
    /// last packet received, or, with data awaiting acknowledgement (`busy` is then the limit,
    /// see [`busy_limit`]), that long after the first send since the last receive.
    fn dead_at(&self, busy: Option<Duration>) -> Option<Instant> {
        self.direct?;
        let last = self.last_direct_recv?;
        let idle = last + DIRECT_IDLE_DEAD;
        let busy = busy.map(|limit| self.busy_since.unwrap_or(last) + limit);
        Some(busy.map_or(idle, |b| b.min(idle)))
    }

    /// Something arrived on the direct path.
    fn direct_alive(&mut self, now: Instant) {
        self.last_direct_recv = Some(now);
        self.busy_since = None;
    }

    /// The next instant this path needs attention; `busy` is the busy-silence limit when data
    /// awaits acknowledgement (see [`busy_limit`]).
    pub(super) fn next_timeout(&self, busy: Option<Duration>) -> Option<Instant> {
        let keepalive = self
            .direct
            .and(self.last_direct_send)
            .map(|t| t + DIRECT_KEEPALIVE);
        let dead = self.dead_at(busy);
        let spray = self.spray.next.filter(|_| self.direct.is_none());
        [self.next_probe, keepalive, dead, spray]
            .into_iter()
            .flatten()
            .min()
    }

    fn arm_spray(&mut self, at: Instant, sockets: u16, cfg: &crate::ClientConfig) {
        let budget = match self.plan {
            Plan::Basic => 0,
            // A window per sweep, a sweep every PREDICTION_SWEEP for the round.
            Plan::Predict { delta, .. } => {
                prediction_span(cfg.prediction_window, delta) * PREDICTION_SWEEPS_PER_ROUND
            }
            Plan::BirthdayEasy => cfg.birthday_probes,
            Plan::BirthdayHard => u32::from(sockets) * 3,
        };
        self.spray = Spray {
            next: (budget > 0 && self.enabled).then_some(at),
            sent: 0,
            budget,
            step: 0,
        };
    }

    /// Recomputes the plan after either NAT description changed; restarts probing if it
    /// changed and no direct path exists yet.
    pub(super) fn replan(
        &mut self,
        now: Instant,
        me: Option<&NatBehavior>,
        cfg: &crate::ClientConfig,
    ) {
        let plan = plan(me, self.peer_nat.as_ref(), cfg.birthday_sockets);
        if plan == self.plan {
            return;
        }
        self.plan = plan;
        if self.direct.is_none() && self.enabled && self.reflexive.is_some() {
            // Keep the round's timing if one is under way (or the server's start delay).
            let at = self.next_probe.map_or(now, |t| t.max(now));
            if self.next_probe.is_none() {
                self.next_probe = Some(at);
            }
            self.arm_spray(at, cfg.birthday_sockets, cfg);
            self.spray_round = Some(self.round);
        }
    }

    /// The peer's reflexive address changed (rebinding, roaming): probe the new one, now if
    /// no direct path is up (a live direct path follows the peer's packets by itself).
    pub(super) fn peer_moved(&mut self, now: Instant, addr: SocketAddr) {
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return;
        }
        let old = self.reflexive.replace(addr);
        let c = (SocketId::PRIMARY, addr);
        if let Some(i) = self
            .candidates
            .iter()
            .position(|x| Some(x.1) == old && x.0 == SocketId::PRIMARY)
        {
            self.candidates[i] = c;
        } else if !self.candidates.contains(&c) && self.candidates.len() < MAX_CANDIDATES {
            self.candidates.push(c);
        }
        if self.direct.is_none() && self.enabled {
            self.sent = 0;
            self.cursor = 0;
            self.next_probe = Some(now);
        }
    }

    /// More addresses to probe (the peer's LAN candidates); starts a round if not direct.
    pub(super) fn add_candidates(&mut self, now: Instant, addrs: impl Iterator<Item = SocketAddr>) {
        for a in addrs {
            let c = (SocketId::PRIMARY, a);
            if !self.candidates.contains(&c) && self.candidates.len() < MAX_CANDIDATES {
                self.candidates.push(c);
            }
        }
        if self.direct.is_none() && self.enabled {
            self.sent = 0;
            self.next_probe = Some(now);
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next sprayed probe's (socket, destination), if one is due now.
    fn next_spray(
        &mut self,
        now: Instant,
        open: &[SocketId],
        cfg: &crate::ClientConfig,
    ) -> Option<(SocketId, SocketAddr)> {
        let due = self.spray.next.is_some_and(|t| now >= t) && self.direct.is_none();
        if !due {
            return None;
        }
        let reflexive = self.reflexive?;
        let ip: IpAddr = reflexive.ip();
        let s = &mut self.spray;
        if s.sent >= s.budget {
            s.next = None;
            return None;
        }
        let (target, sweep_len, sweep_pause) = match self.plan {
            Plan::Basic => {
                s.next = None;
                return None;
            }
            Plan::Predict { base, delta } => {
                // Every port around the last seen one, nearest first, leaning the step's
                // way (+1, −1, +2, −2, … for a positive step): other flows may have taken
                // ports in between, a "step" measured from few samples may be a multiple of
                // the real one, and the mapping towards this peer may predate discovery's.
                let n = i32::try_from(s.step).unwrap_or(0);
                let j = n / 2 + 1;
                let sign = if n % 2 == 0 { 1 } else { -1 };
                let port = i32::from(base) + i32::from(delta.signum()) * sign * j;
                let port = u16::try_from(port.rem_euclid(65_536)).unwrap_or(0).max(1);
                (
                    (SocketId::PRIMARY, SocketAddr::new(ip, port)),
                    prediction_span(cfg.prediction_window, delta),
                    PREDICTION_SWEEP,
                )
            }
            Plan::BirthdayEasy => {
                let span = u64::from(u16::MAX - LOWEST_RANDOM_PORT) + 1;
                let r = self.next_random();
                let port = LOWEST_RANDOM_PORT + u16::try_from(r % span).unwrap_or(0);
                (
                    (SocketId::PRIMARY, SocketAddr::new(ip, port)),
                    u32::MAX,
                    Duration::ZERO,
                )
            }
            Plan::BirthdayHard => {
                if open.is_empty() {
                    // Sockets not open yet: look again shortly.
                    s.next = Some(now + SPRAY_INTERVAL * 10);
                    return None;
                }
                let i = s.step as usize % open.len();
                ((open[i], reflexive), open.len() as u32, SOCKET_SWEEP)
            }
        };
        let s = &mut self.spray;
        s.sent += 1;
        s.step += 1;
        if s.step >= sweep_len {
            s.step = 0;
            s.next = Some(now + sweep_pause);
        } else {
            s.next = Some(now + SPRAY_INTERVAL);
        }
        if s.sent >= s.budget {
            s.next = None;
        }
        Some(target)
    }
}

/// How long a direct path may go unanswered while data awaits acknowledgement: two
/// retransmission timeouts (never under [`DIRECT_BUSY_DEAD_MIN`]), counted from the first
/// send since the last receive; `None` when nothing is in flight (then only
/// [`DIRECT_IDLE_DEAD`], a few missed keepalives, applies).
pub(super) fn busy_limit(conn: &crate::rudp::conn::Connection) -> Option<Duration> {
    (conn.unacked() > 0).then(|| ((conn.srtt() + conn.rtt_var() * 4) * 2).max(DIRECT_BUSY_DEAD_MIN))
}

/// The extra sockets of birthday probing, shared by every peer that needs them.
#[derive(Debug, Default)]
pub(super) struct SocketPool {
    /// Sockets are wanted (some peer is the hard side of a birthday round).
    active: bool,
    /// Ids 1..=size belong to the pool.
    size: u16,
    /// Ids the runtime confirmed open, in order.
    open: Vec<SocketId>,
    requests: std::collections::VecDeque<SocketRequest>,
}

impl SocketPool {
    pub(super) fn open_ids(&self) -> &[SocketId] {
        if self.active { &self.open } else { &[] }
    }

    pub(super) fn poll_request(&mut self) -> Option<SocketRequest> {
        self.requests.pop_front()
    }

    pub(super) fn opened(&mut self, id: SocketId, local: Option<SocketAddr>) {
        if id.0 == 0 || id.0 > self.size || self.open.contains(&id) || local.is_none() {
            return;
        }
        if self.active {
            self.open.push(id);
        } else {
            // Confirmed after the pool was given up: close it again.
            self.requests.push_back(SocketRequest::Close { id });
        }
    }

    /// Opens `n` sockets when `want` starts; closes every one not in `keep` when it stops.
    pub(super) fn update(&mut self, want: bool, n: u16, keep: &[SocketId]) {
        if want && !self.active {
            self.active = true;
            self.size = self.size.max(n);
            for i in 1..=n {
                let id = SocketId(i);
                if !self.open.contains(&id) {
                    self.requests
                        .push_back(SocketRequest::Open { id, addr: None });
                }
            }
        } else if !want && self.active {
            self.active = false;
            for i in 1..=self.size {
                let id = SocketId(i);
                if !keep.contains(&id) {
                    self.requests.push_back(SocketRequest::Close { id });
                }
            }
            self.open.retain(|id| keep.contains(id));
        } else if !want {
            // A direct path that kept its socket has ended since.
            let requests = &mut self.requests;
            self.open.retain(|&id| {
                let keep = keep.contains(&id);
                if !keep {
                    requests.push_back(SocketRequest::Close { id });
                }
                keep
            });
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
            let busy = busy_limit(&peer.conn);
            let p = &mut peer.punch;
            if let Some(dead) = p.dead_at(busy) {
                if now >= dead {
                    p.direct = None;
                    p.busy_since = None;
                    p.sent = 0;
                    p.cursor = 0;
                    // A path that worked is retried soon (the peer may have moved, and the
                    // server's PeerMoved restarts it at once); a failed round waits longer.
                    p.next_probe = Some(now + RETRY_AFTER_LOSS);
                    p.spray = Spray::default();
                    peer.path = Path::Relay;
                    self.push_event(ClientEvent::PathChanged {
                        peer: id,
                        path: Path::Relay,
                        reason: PathChangeReason::DirectLost,
                    });
                }
            }
        }
        self.update_socket_pool();
    }

    /// Opens the birthday sockets while some peer needs them; closes the unused ones after.
    pub(super) fn update_socket_pool(&mut self) {
        let want = self.peers.values().any(|p| p.punch.wants_sockets());
        let keep: SmallVec<[SocketId; 8]> = self
            .peers
            .values()
            .filter_map(|p| p.punch.direct_socket())
            .filter(|s| *s != SocketId::PRIMARY)
            .collect();
        self.sockets
            .update(want, self.config.birthday_sockets, &keep);
    }

    /// Recomputes every peer's traversal plan (our NAT behaviour or a peer's changed).
    pub(super) fn replan_peers(&mut self, now: Instant) {
        let me = self.nat_behavior;
        for peer in self.peers.values_mut() {
            peer.punch.replan(now, me.as_ref(), &self.config);
        }
        self.update_socket_pool();
    }

    /// The next direct datagram to any peer: probe answers, probes, sprayed probes, then
    /// connection traffic of peers on a direct path.
    pub(super) fn poll_peer_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let max = self.config.max_datagram_size.min(buf.len());
        let open = self.sockets.open_ids();
        for (_, peer) in self.peers.iter_mut() {
            let pair_id = peer.pair_id;
            // 1. Answers to probes, from the socket the probe came in on.
            if let Some((socket, to, nonce)) = peer.punch.acks_due.pop() {
                let len = peer.keys.seal_frames(pair_id, buf, max, |w| {
                    let _ = Frame::ProbeAck { nonce }.encode(w);
                })?;
                return Some(Transmit {
                    dst: to,
                    len,
                    socket,
                });
            }
            // 2. Probes (probing rounds, and keepalives on a direct path).
            let p = &mut peer.punch;
            let keepalive_due = p.direct.is_some()
                && p.last_direct_send
                    .is_none_or(|t| now >= t + DIRECT_KEEPALIVE);
            let probe_due = p.next_probe.is_some_and(|t| now >= t) && !p.candidates.is_empty();
            let triggered = if p.direct.is_none() || p.migrating.is_some() {
                p.triggered.take()
            } else {
                None
            };
            let target = if keepalive_due {
                p.direct
            } else if triggered.is_some() {
                triggered
            } else if probe_due {
                if p.sent == 0 && p.cursor == 0 && p.spray_round != Some(p.round) {
                    // A round starts: spray along with it (a spray under way from a replan
                    // in this round keeps going).
                    p.spray_round = Some(p.round);
                    p.arm_spray(now, self.config.birthday_sockets, &self.config);
                }
                Some(p.candidates[p.cursor % p.candidates.len()])
            } else {
                p.next_spray(now, open, &self.config)
            };
            if let Some((socket, dst)) = target {
                let nonce = if p.migrating == Some((socket, dst)) {
                    p.challenge(socket, dst)
                } else {
                    p.nonce
                };
                let len = peer.keys.seal_frames(pair_id, buf, max, |w| {
                    let _ = Frame::Probe { nonce }.encode(w);
                })?;
                let p = &mut peer.punch;
                if keepalive_due {
                    p.last_direct_send = Some(now);
                } else if triggered.is_some() {
                    // Outside the round's count.
                } else if probe_due {
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
                self.stats.probes_sent += 1;
                return Some(Transmit { dst, len, socket });
            }
            // 3. Reliability traffic on the direct path.
            if let Some((socket, dst)) = peer.punch.direct {
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
                    if peer.conn.unacked() > 0 {
                        // Data awaits an answer from here on (an ack-only packet does not:
                        // silence after it is expected).
                        peer.punch.busy_since.get_or_insert(now);
                    }
                    return Some(Transmit { dst, len, socket });
                }
            }
        }
        None
    }

    /// Path frames of an authentic peer packet that arrived on local socket `socket`.
    /// `relayed` packets only count for probes (never: probes are sent directly) — a path is
    /// direct only if the packet was.
    pub(super) fn on_path_frame(
        &mut self,
        now: Instant,
        peer_id: HostId,
        socket: SocketId,
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
                    p.acks_due.push((socket, from, nonce));
                }
                // The probe's source is where the peer's NAT maps it towards us: the best
                // candidate there is (it already passed our NAT's filter, too).
                let c = (socket, from);
                if p.direct.is_none() && self.config.direct_paths && p.enabled {
                    p.triggered = Some(c);
                }
                if !p.candidates.contains(&c) && p.candidates.len() < MAX_CANDIDATES {
                    p.candidates.push(c);
                    if p.direct.is_none() && p.next_probe.is_none_or(|t| t > now) {
                        p.next_probe = Some(now);
                    }
                }
            }
            Frame::ProbeAck { nonce }
                if !relayed
                    && p.direct.is_some()
                    && p.migrating
                        .is_some_and(|(s, a)| s == socket && nonce == p.challenge(s, a)) =>
            {
                // The moved peer answered the probe sent to its new address (the answer may
                // come from yet another port behind an endpoint-dependent NAT): follow it.
                let Some((s, to)) = p.migrating.take() else {
                    return;
                };
                // (`migrating_since` stays: the next check waits its turn too.)
                p.direct = Some((s, to));
                p.direct_alive(now);
                peer.path = Path::Direct(to);
                self.push_event(ClientEvent::PathChanged {
                    peer: peer_id,
                    path: Path::Direct(to),
                    reason: PathChangeReason::Punched,
                });
            }
            Frame::ProbeAck { nonce } if !relayed && nonce == p.nonce && p.direct.is_none() => {
                p.direct = Some((socket, from));
                p.next_probe = None;
                p.spray = Spray::default();
                p.direct_alive(now);
                p.last_direct_send = Some(now);
                peer.path = Path::Direct(from);
                self.stats.direct_paths += 1;
                self.push_event(ClientEvent::PathChanged {
                    peer: peer_id,
                    path: Path::Direct(from),
                    reason: PathChangeReason::Punched,
                });
                self.update_socket_pool();
            }
            _ => {}
        }
    }

    /// Any authentic packet that came directly from `from` on local socket `socket`;
    /// `conn_frames`: it carried connection traffic (data, acks), not only probes.
    pub(super) fn on_direct_packet(
        &mut self,
        now: Instant,
        peer_id: HostId,
        socket: SocketId,
        from: SocketAddr,
        conn_frames: bool,
    ) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let p = &mut peer.punch;
        if let Some((s, addr)) = p.direct {
            if s == socket && addr != from {
                // The peer seems to have moved (its NAT rebound), or someone on the path
                // forwarded one of its packets from elsewhere. Authentic is not enough: probe
                // the new address with a value bound to it and move only when that value comes
                // back (QUIC's path validation). Until then the validated address keeps the
                // traffic.
                // Only connection traffic counts: the peer sends it to its path to us, so it
                // comes from a new port only if the peer really moved. Probes and their
                // answers go to (and come back from) other addresses while punching; behind
                // an endpoint-dependent NAT each of those has a port of its own.
                let idle = p.migrating_since.is_none_or(|t| now >= t + MIGRATION_RETRY);
                if conn_frames && p.migrating != Some((socket, from)) && idle {
                    p.migrating = Some((socket, from));
                    p.migrating_since = Some(now);
                    p.triggered = Some((socket, from));
                }
            } else {
                p.direct_alive(now);
            }
        }
    }
}
