//! The path agent: one per peer, it finds, validates, keeps and loses the direct path.
//!
//! It probes the peer's candidate addresses with sealed `Probe` frames from both sides at
//! once, promotes a path once a `ProbeAck` comes back on it (validated both ways), keeps it
//! alive, follows the peer to a new address only after validating it (a probe value bound to
//! that address must come back), and declares it dead when it goes quiet, so the peer's
//! traffic falls back to the relay. The reliability state is per peer, not per path (see
//! `peers.rs`), so moving traffic between paths loses, duplicates and reorders nothing.
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
//!   (each a new mapping towards the easy side: `sockets.rs`) and the easy side probes random
//!   ports of the hard side's IP; a collision opens the path (n sockets, k probes: success
//!   1 − (1 − n/64512)^k, ~98% for 256 and 1024).
//!
//! **A lost race.** A Linux router (conntrack) that sees a peer's probe arrive before its own
//! host's first probe to that peer has left keeps that inbound flow as a conntrack entry and
//! gives the host's flow to the peer another external port, one the peer does not know; the
//! peer's own probes keep the entry alive, so the same sockets lose again and again (until
//! the peer has been quiet for 30 s). So a round with nothing validated after a second
//! retries from **fresh ports** ([`Fresh`]): each end opens a socket bound to a port both
//! ends derive from the pair and the retry number, probes the peer from it at once, and a
//! moment later ([`RETRY_STAGGER`]) probes the peer's fresh port (on its public IP) from its
//! primary socket. Where the router preserves ports (Linux masquerade does when the port is
//! free), the fresh socket keeps its port outside, and no entry holds it: the side behind
//! the quirky router opens its mapping towards the peer first, and the peer's probes to it
//! then pass. (The other direction is the same dance the other way round; whichever side has
//! the quirk, one of the two works.)
//!
//! **Openers.** When both routers pin early probes (two Linux routers), a probe towards a
//! pinned primary port cannot win from either side, and neither can a fresh one unless both
//! routers are open before either end's probe arrives. So each retry also probes from our
//! fresh socket to the peer's, and the first datagram on that leg is an *opener*: a probe sent
//! with a low TTL ([`ClientConfig::opener_ttl`], `Transmit::ttl`) that opens our router
//! towards the peer's fresh port and expires in the network before the peer's router sees it
//! (the low-TTL trick of TCP traversal, Guha and Francis, "Characterization and Measurement of
//! TCP Traversal through NATs and Firewalls", IMC 2005). Both ends send theirs the moment
//! their fresh sockets open and probe [`RETRY_STAGGER`] later, when both routers are open.
//! The hard, sequential side of a prediction ([`Plan::PredictHard`]) needs only openers: the
//! easy side sweeps our predicted ports from its fresh socket, and our ordinary probes would
//! reach a Linux easy side before its sweep and pin the very mapping it aims at; so its
//! retries send openers, to the easy side's fresh ports of the current slot and the next (the
//! two ends' slots drift apart when candidates restart a round), for the whole slot.
//!
//! The easy side's sprayed probes go first: the hard side's sockets wait until they are out
//! (their first probes to an easy NAT with the conntrack quirk would otherwise each pin the
//! mapping they came from, so a collision found would leave from another port and be lost).
//!
//! **Lockstep sweeps.** When both NATs are hard and allocate sequentially, each end predicts
//! the other's next ports and both sweep together: each probe to a new destination makes
//! the sender's next mapping, so an end's i-th probe leaves from its own i-th new port, and
//! a probe crosses when the peer aimed one of its own probes at exactly that port from
//! exactly the port ours aims at. First every destination of the sweep gets an *opener*
//! (`ClientConfig::opener_ttl`: it makes our mapping and dies before the peer's NAT), then,
//! a stagger later, probes go to the same destinations again and again, through mappings
//! that now exist on both sides, so the order in which the two ends' packets meet does not
//! matter. Neither end knows how many flows the other made since its discovery (its
//! offset), so both sweep the same [`LOCKSTEP_WINDOW`] ports of the peer in two orders: the
//! lower end in port order, the other the even steps first, then the odd ones. With offsets
//! a (lower end) and b (other end), the lower end's destination i = a + 2b is the other's
//! port a + 2b steps on, made by the other's destination m = a + b (b flows, then m sweep
//! probes), and that destination is the lower end's port 2m = a + i steps on: the one the
//! lower end's destination i left from. One sweep finds every pair of offsets with
//! a + b < [`LOCKSTEP_WINDOW`] / 2. Every destination is a new mapping in our NAT: a sweep
//! makes [`LOCKSTEP_WINDOW`] of them, budgeted per client over a time window
//! (`sockets.rs`), and the next sweep predicts from where the last one left the peer. A NAT
//! that maps per IP (not per port) has one mapping towards the peer whatever its end
//! sweeps, made by the first round's probe, often before its discovery ended: the peer
//! sweeps either side of its last port, and its own sweep (one mapping, however many
//! ports) reaches a few ports below the peer's last one as well.
//!
//! Both sprays are costly, so a pair sprays in its first three rounds and then backs off
//! exponentially ([`sprays_in`]); and the mappings birthday sockets make in our NAT are
//! budgeted per client, for every peer together, over a time window (`sockets.rs`): a client
//! that punches again and again (peers moving, leaving and rejoining) cannot fill its NAT's
//! table.
//!
//! The agent never seals anything: it says what to send ([`PathSend`]) and its owner (the
//! peer, which holds the pair's keys) seals it. It reports what became of the path as
//! [`PathEvent`]s.

use std::net::{IpAddr, SocketAddr};

use smallvec::SmallVec;

use super::sockets::{Grant, SocketPool, is_fresh_id};
use crate::SocketId;
use crate::config::ClientConfig;
use crate::nat::{Dependence, NatBehavior, PortAllocation, Reported};
use crate::time::{Duration, Instant, Timeout};
use crate::wire::control::NatInfo;

/// Time between probes of one round. Short, because both sides probe at once and the first
/// probes are expected to die in the other side's NAT until it has sent its own.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Probes per round (3 s): longer than a lost-and-retransmitted `PeerAdd` plus a slow RTT,
/// shorter than Linux's 30 s unreplied-conntrack timeout.
const PROBES_PER_ROUND: u32 = 30;
/// A failed round is retried after this long. Longer than Linux conntrack's 30 s unreplied
/// timeout on purpose: when a peer's probe reaches a Linux NAT before the local probe has
/// left it, conntrack keeps that inbound flow and moves the local mapping to another port;
/// the peer's own probes keep refreshing it, so a retry from the same sockets within 30 s
/// loses the same race (found by the simulator's internet mix). After 35 s of quiet the stale
/// entry is gone. (Within the round, fresh-port retries ([`FRESH_AFTER`]) win that race back
/// in about a second where the router preserves ports.)
const RETRY_AFTER: Duration = Duration::from_secs(35);
/// A round with nothing validated retries from fresh ports this long after it started, and
/// again as long after that (see the module docs): a race lost against a Linux router is
/// retried within about a second, not after conntrack's 30 s.
const FRESH_AFTER: Duration = Duration::from_secs(1);
/// Fresh-port retries per round, in the rounds that spray ([`sprays_in`]: each retry is a
/// new mapping in our NAT, budgeted in `sockets.rs`).
const FRESH_PER_ROUND: u32 = 2;
/// Probes each end sends in a fresh-port retry, [`PROBE_INTERVAL`] apart, from its fresh
/// socket and (from [`RETRY_STAGGER`] on) to the peer's: the last one leaves 750 ms into the
/// retry, so its answer is back before the retry (and its socket) ends.
const FRESH_PROBES: u32 = 6;
/// Fresh sockets bind ports in `FRESH_PORT_MIN..FRESH_PORT_MIN + FRESH_PORT_SPAN`: above
/// well-known services, below Linux's ephemeral range (where the port might be taken).
const FRESH_PORT_MIN: u16 = 10_000;
const FRESH_PORT_SPAN: u16 = 20_000;

/// The port of retry `n`'s fresh socket of one end of pair `pair` (`lower`: the end with
/// the lower host id): both ends compute both ends' ports alike. Ports are no secret (the
/// probes are sealed), they only need to differ between retries and pairs.
fn fresh_port(pair: u32, n: u32, lower: bool) -> u16 {
    // splitmix64
    let x = (u64::from(pair) << 32) | (u64::from(n) << 1) | u64::from(lower);
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    FRESH_PORT_MIN + u16::try_from(z % u64::from(FRESH_PORT_SPAN)).unwrap_or(0)
}

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
/// Ports of the peer one lockstep sweep covers (see the module docs), and so the mappings
/// it makes in our NAT: it finds the path for offsets a + b < 32 (flows the two ends made
/// since their discoveries: the round's first probe to the peer's address is one each,
/// punching other peers a few more).
const LOCKSTEP_WINDOW: u32 = 64;
/// Ports below the peer's last one that a lockstep sweep adds when our NAT maps per IP (at
/// no cost: one mapping whatever we sweep). Its mapping towards us may predate its
/// discovery's last one: a peer that lets anyone in (endpoint-independent filtering)
/// answered our first round's probes before its discovery ended.
const LOCKSTEP_BACK: u32 = 8;
/// Probe sweeps of a lockstep round after its openers, [`PREDICTION_SWEEP`] apart: the
/// ends' rounds start within a network delay or a lost `PeerAdd` of each other.
const LOCKSTEP_SWEEPS: u32 = 5;
/// Lowest port a birthday probe targets (NATs allocate from the unprivileged range).
const LOWEST_RANDOM_PORT: u16 = 1024;

/// Prediction sweeps in one round (a round lasts about three seconds).
const PREDICTION_SWEEPS_PER_ROUND: u32 = 6;
/// Most ports one prediction sweep covers.
const MAX_PREDICTION_SPAN: u32 = 1024;

/// Rounds that spray (port prediction, birthday probing): the first [`SPRAYED_ROUNDS`], then
/// only rounds 4, 8, 16, … (about 2.5, 5, 10 minutes in): a failed spray is retried with
/// exponential backoff. Punching rounds are cheap (a few probes per candidate); a spray is
/// not (up to 1,024 probes from the easy side, a new NAT mapping per birthday socket on the
/// hard side), and three tries ~38 s apart already cover a lost or late first round and the
/// conntrack race of [`RETRY_AFTER`]. What a spray may cost in NAT mappings is also bounded
/// per client, for every peer together, by the birthday sockets' binding budget
/// (`sockets.rs`).
fn sprays_in(round: u32) -> bool {
    round < SPRAYED_ROUNDS || round.is_power_of_two()
}

/// Rounds that all spray before the backoff of [`sprays_in`].
const SPRAYED_ROUNDS: u32 = 3;

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
    /// We are hard and sequential, the peer easy and strict: it probes our predicted ports
    /// (its [`Plan::Predict`]); a fresh-port retry sends it only openers.
    PredictHard,
    /// We are easy, the peer hard and random: probe random ports of its IP.
    BirthdayEasy,
    /// We are hard and random, the peer easy: probe it from many sockets.
    BirthdayHard,
    /// Both hard and sequential: sweep the peer's predicted ports in lockstep with it (see
    /// the module docs). `per_port`: the peer's NAT maps each destination port anew (not
    /// only each IP), so each of its sweeps moves its next port [`LOCKSTEP_WINDOW`] steps on;
    /// otherwise it has one mapping towards us, somewhere around `base`, swept either side.
    /// `one_mapping`: our NAT maps per IP, so all our probes to the peer leave from one
    /// mapping, and sweeping more ports costs nothing: a few below `base` as well (see
    /// [`LOCKSTEP_BACK`]).
    Lockstep {
        base: u16,
        delta: i16,
        per_port: bool,
        one_mapping: bool,
    },
}

/// Whether a NAT with this mapping maps each destination (or each destination IP) anew.
fn per_destination(m: Option<Dependence>) -> bool {
    matches!(
        m,
        Some(Dependence::AddressDependent | Dependence::AddressAndPortDependent)
    )
}

/// Chooses the plan from our NAT and the peer's; both ends reach matching plans from the
/// same two descriptions.
pub(super) fn plan(me: Option<&NatBehavior>, peer: Option<&NatInfo>, sockets: u16) -> Plan {
    let (Some(me), Some(peer)) = (me, peer.map(Reported::from)) else {
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
    if easy(me.mapping) && hard(peer.mapping) && strict(me.filtering) {
        return match peer.allocation {
            Some(PortAllocation::Sequential { delta }) => Plan::Predict {
                base: peer.last_port,
                delta,
            },
            Some(PortAllocation::Random) => Plan::BirthdayEasy,
            None => Plan::Basic,
        };
    }
    if hard(me.mapping) && easy(peer.mapping) && strict(peer.filtering) {
        match me.allocation {
            Some(PortAllocation::Random) if sockets > 0 => return Plan::BirthdayHard,
            Some(PortAllocation::Sequential { .. }) => return Plan::PredictHard,
            _ => {}
        }
    }
    if hard(me.mapping) && hard(peer.mapping) {
        if let (
            Some(PortAllocation::Sequential { .. }),
            Some(PortAllocation::Sequential { delta }),
        ) = (me.allocation, peer.allocation)
        {
            let per_port = peer.mapping == Some(Dependence::AddressAndPortDependent);
            return Plan::Lockstep {
                base: peer.last_port,
                // A NAT that maps per IP showed discovery two mappings, the first maybe much
                // older than the second: its step may be a multiple of the real one, so every
                // port is swept. (One that maps per port showed three made back to back.)
                delta: if per_port { delta } else { delta.signum() },
                per_port,
                one_mapping: me.mapping == Some(Dependence::AddressDependent),
            };
        }
    }
    Plan::Basic
}

/// What the agent wants sent: a frame for its owner to seal with the pair's keys and send
/// from `socket` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PathSend {
    /// An answer to a probe, back where it came from.
    ProbeAck {
        socket: SocketId,
        to: SocketAddr,
        nonce: u64,
    },
    /// A probe: a punching round's, a triggered one, a sprayed one, a migration check or a
    /// keepalive on the direct path. With a `ttl`, an *opener* (see the module docs): sent
    /// with that TTL so that it opens our NAT towards `to` and expires before the peer's.
    Probe {
        socket: SocketId,
        to: SocketAddr,
        nonce: u64,
        ttl: Option<u8>,
    },
}

/// What became of the direct path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PathEvent {
    /// A first direct path was validated (both ways): traffic moves to it.
    Validated(SocketAddr),
    /// The peer moved and its new address was validated: traffic follows.
    Moved(SocketAddr),
    /// The direct path went quiet: traffic falls back to the relay.
    Lost,
}

/// One peer's path state.
#[derive(Debug)]
pub(super) struct PathAgent {
    /// Addresses to probe, and the local socket to probe each from.
    candidates: SmallVec<[(SocketId, SocketAddr); 4]>,
    /// The pair's probe secret. Punching probes carry it, and its echo from any address
    /// validates the first direct path (with two endpoint-dependent NATs the answer comes
    /// back from another port than the one probed). A probe that checks a new address for a
    /// validated path carries [`PathAgent::challenge`] for that address instead, and only that
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
    peer_nat: Option<NatInfo>,
    /// What the two NATs call for.
    plan: Plan,
    /// Spraying (prediction, birthday) in the current round.
    spray: Spray,
    /// The round the spray was last armed for.
    spray_round: Option<u32>,
    /// xorshift state for birthday ports (seeded from the nonce: deterministic per pair).
    rng: u64,
    /// The pair's id (both ends know it: fresh ports are derived from it).
    pair: u32,
    /// Fresh-port retries.
    fresh: Fresh,
    /// Lockstep sweeps granted so far (the peer is assumed to have made as many).
    lockstep_sweeps: u32,
}

/// Fresh-port retries of a lost race (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
struct Fresh {
    /// Retries started over the pair's life: both ends count alike, and derive the ports of
    /// retry `n` from it.
    n: u32,
    /// Retries started in the current round.
    in_round: u32,
    /// The round they were last armed for.
    round: Option<u32>,
    /// When the next retry starts (`None`: none planned).
    next: Option<Instant>,
    /// Neither NAT is known to map per destination (then the peer's fresh socket would not
    /// keep its port outside, nor ours: no retry).
    hopeless: bool,
    /// The retry under way.
    current: Option<Retry>,
    /// A retry's fresh socket kept past its retry (see `end_fresh`): while the direct path
    /// the retry found lives, or while the peer keeps sending to it.
    held: Option<SocketId>,
    /// The last packet from the peer on the retry's or the held socket.
    heard: Option<Instant>,
}

/// One fresh-port retry.
#[derive(Debug, Clone, Copy)]
struct Retry {
    started: Instant,
    /// Our fresh socket (`None`: the budget is spent, only the peer's port is probed).
    socket: Option<SocketId>,
    /// Our next probe from it (once the runtime opened it).
    own_next: Option<Instant>,
    own_sent: u32,
    /// The peer's fresh socket, as its NAT maps it if it preserves ports.
    peer: SocketAddr,
    /// Our next probe to it (from the primary socket).
    peer_next: Option<Instant>,
    peer_sent: u32,
    /// An opener from our fresh socket to the peer's is due (the socket just opened).
    opener_due: bool,
    /// Our next probe from our fresh socket to the peer's: both routers may pin early
    /// probes, so these start a stagger after the openers.
    both_next: Option<Instant>,
    both_sent: u32,
    /// The hard side of a prediction: our next opener from the primary socket to the
    /// peer's fresh port, which the peer sweeps our predicted ports from.
    openers_next: Option<Instant>,
    openers_sent: u32,
    /// The easy side of a prediction: the sweep leaves from our fresh socket.
    sweeping: bool,
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

impl PathAgent {
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
        pair: u32,
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
            pair,
            fresh: Fresh::default(),
            lockstep_sweeps: 0,
        }
    }

    /// The validated direct path's address, if any.
    pub(super) fn direct(&self) -> Option<SocketAddr> {
        self.direct.map(|(_, a)| a)
    }

    /// The validated direct path: local socket and the peer's address.
    pub(super) fn direct_path(&self) -> Option<(SocketId, SocketAddr)> {
        self.direct
    }

    /// The local socket of the direct path, if any.
    pub(super) fn direct_socket(&self) -> Option<SocketId> {
        self.direct.map(|(s, _)| s)
    }

    /// True while this peer needs the extra sockets (we are the hard side of a birthday
    /// round that has not succeeded).
    ///
    /// They stay open between two spraying rounds (~38 s apart): a NAT that keeps idle
    /// mappings that long still has theirs, new sockets would certainly need new ones (the
    /// budget counts a spray after a pause as new mappings either way). When the backoff
    /// skips rounds ([`sprays_in`]) they close after the spray.
    pub(super) fn wants_sockets(&self) -> bool {
        let upcoming = if self.spray_round == Some(self.round) {
            self.round + 1
        } else {
            self.round
        };
        self.plan == Plan::BirthdayHard
            && self.direct.is_none()
            && self.enabled
            && (self.spray.next.is_some() || sprays_in(upcoming))
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

    /// The next instant this path needs attention, and why; `busy` is the busy-silence limit
    /// when data awaits acknowledgement (see [`busy_limit`]).
    pub(super) fn poll_timeout(&self, busy: Option<Duration>) -> Option<Timeout> {
        let keepalive = self
            .direct
            .and(self.last_direct_send)
            .map(|t| t + DIRECT_KEEPALIVE);
        let spray = self.spray.next.filter(|_| self.direct.is_none());
        let retry = self.fresh.current.as_ref();
        Timeout::min([
            Timeout::at(self.next_probe, "probe round"),
            Timeout::at(keepalive, "direct path keepalive"),
            Timeout::at(self.dead_at(busy), "direct path liveness"),
            Timeout::at(spray, "sprayed probe"),
            Timeout::at(self.fresh.next, "fresh-port retry"),
            Timeout::at(retry.and_then(|r| r.own_next), "fresh-port probe"),
            Timeout::at(retry.and_then(|r| r.peer_next), "fresh-port probe"),
            Timeout::at(retry.and_then(|r| r.both_next), "fresh-port probe"),
            Timeout::at(retry.and_then(|r| r.openers_next), "fresh-port opener"),
            Timeout::at(self.held_until(), "held fresh socket"),
            Timeout::at(
                retry.map(|r| r.started + FRESH_AFTER),
                "fresh-port retry end",
            ),
        ])
    }

    /// The fresh socket this path holds (a retry's, under way), if any; a direct path's
    /// socket is held through [`PathAgent::direct_socket`].
    /// The fresh socket a retry left open because the peer sends to it (see `end_fresh`).
    pub(super) fn held_socket(&self) -> Option<SocketId> {
        self.fresh.held
    }

    pub(super) fn fresh_socket(&self) -> Option<SocketId> {
        self.fresh
            .current
            .and_then(|r| r.socket)
            .or(self.fresh.held)
    }

    /// The runtime opened (`ok`) or could not open socket `id`: a retry's fresh socket
    /// starts probing.
    pub(super) fn socket_opened(
        &mut self,
        now: Instant,
        id: SocketId,
        ok: bool,
        cfg: &ClientConfig,
    ) {
        let Some(r) = self.fresh.current.as_mut().filter(|r| r.socket == Some(id)) else {
            return;
        };
        if !ok {
            r.socket = None;
        } else if let Plan::Predict { .. } = self.plan {
            // The easy side of a prediction sweeps the peer's predicted ports again, now
            // from the fresh socket (the peer sends openers towards it).
            r.sweeping = true;
            self.arm_spray(now, cfg.birthday_sockets, cfg);
        } else {
            r.own_next = Some(now);
            r.opener_due = true;
            r.both_next = Some(now.max(r.started + RETRY_STAGGER));
        }
    }

    /// Arms the fresh-port retries of a round that just started.
    fn arm_fresh(&mut self, now: Instant) {
        if self.fresh.round == Some(self.round) {
            return;
        }
        self.fresh.round = Some(self.round);
        self.fresh.in_round = 0;
        self.fresh.next = sprays_in(self.round).then_some(now + FRESH_AFTER);
    }

    /// Starts a fresh-port retry if one is due: asks `pool` for our fresh socket.
    fn start_fresh(&mut self, now: Instant, pool: &mut SocketPool) {
        if self.fresh.next.is_none_or(|t| now < t) {
            return;
        }
        self.end_fresh(now);
        let go = self.direct.is_none()
            && self.enabled
            && match self.plan {
                Plan::Basic => !self.fresh.hopeless,
                Plan::Predict { .. } | Plan::PredictHard => true,
                Plan::BirthdayEasy | Plan::BirthdayHard | Plan::Lockstep { .. } => false,
            };
        // Every slot counts, whether it runs or not: both ends derive the ports of retry `n`
        // from the slot, and may not know the same of the two NATs yet (one end's discovery
        // or the peer's description may be late), so one may skip a slot the other runs.
        let f = &mut self.fresh;
        f.n += 1;
        f.in_round += 1;
        f.next = (f.in_round < FRESH_PER_ROUND && self.direct.is_none() && self.enabled)
            .then_some(now + FRESH_AFTER);
        let Some(reflexive) = self.reflexive.filter(|_| go) else {
            return;
        };
        let f = &mut self.fresh;
        // The hard side of a prediction needs no socket of its own: its NAT maps the new
        // destination (the peer's fresh port) anew anyway.
        let socket = if self.plan == Plan::PredictHard {
            None
        } else {
            pool.open_fresh(now, fresh_port(self.pair, f.n, self.lower))
        };
        let peer = SocketAddr::new(reflexive.ip(), fresh_port(self.pair, f.n, !self.lower));
        let basic = self.plan == Plan::Basic;
        f.current = Some(Retry {
            started: now,
            socket,
            own_next: None,
            own_sent: 0,
            peer,
            peer_next: basic.then_some(now + RETRY_STAGGER),
            peer_sent: 0,
            opener_due: false,
            both_next: None,
            both_sent: 0,
            openers_next: (self.plan == Plan::PredictHard).then_some(now),
            openers_sent: 0,
            sweeping: false,
        });
    }

    /// Ends the retry under way if its time is up, and lets a held socket go once neither
    /// our direct path nor the peer uses it.
    fn expire_fresh(&mut self, now: Instant) {
        if self
            .fresh
            .current
            .is_some_and(|r| now >= r.started + FRESH_AFTER)
        {
            self.end_fresh(now);
        }
        self.release_held(now, false);
    }

    /// Whether a packet from the peer came in on the retry's or the held socket lately.
    fn peer_sends_to_fresh(&self, now: Instant) -> bool {
        self.fresh.heard.is_some_and(|t| now < t + DIRECT_IDLE_DEAD)
    }

    /// When a held socket may go: [`DIRECT_IDLE_DEAD`] after the peer's last packet on it,
    /// once no direct path holds it; `None` while one does, or without one (or without a
    /// packet on it: then at once).
    fn held_until(&self) -> Option<Instant> {
        self.fresh.held?;
        if self.direct.is_some() {
            return None;
        }
        self.fresh.heard.map(|t| t + DIRECT_IDLE_DEAD)
    }

    /// Lets the held socket go (its candidates too) if its time has come, or at once
    /// (`now_anyway`) to make room for another.
    fn release_held(&mut self, now: Instant, now_anyway: bool) {
        let Some(held) = self.fresh.held else {
            return;
        };
        if self.direct_socket() == Some(held) {
            return;
        }
        let due = self.direct.is_none() && self.held_until().is_none_or(|t| now >= t);
        if !(due || now_anyway) {
            return;
        }
        self.fresh.held = None;
        self.candidates.retain(|c| c.0 != held);
        if self.triggered.is_some_and(|t| t.0 == held) {
            self.triggered = None;
        }
    }

    /// A packet from the peer came in on `socket`.
    fn heard_on(&mut self, now: Instant, socket: SocketId) {
        let fresh = self.fresh.current.and_then(|r| r.socket);
        if fresh == Some(socket) || self.fresh.held == Some(socket) {
            self.fresh.heard = Some(now);
        }
    }

    /// Ends the retry under way: its socket is given up (unless a direct path uses it), and
    /// with it the candidates found on it.
    fn end_fresh(&mut self, now: Instant) {
        let Some(r) = self.fresh.current.take() else {
            return;
        };
        if let Some(s) = r.socket.filter(|s| self.direct_socket() != Some(*s)) {
            if self.direct.is_some() || self.peer_sends_to_fresh(now) {
                // The peer may have validated a leg that ends at this socket (its probe to
                // our fresh port answered from it) while our own path, if any, runs on
                // another: it sends here. Kept while our direct path lives or the peer keeps
                // sending here (`release_held`).
                self.release_held(now, true);
                self.fresh.held = Some(s);
                return;
            }
            self.candidates.retain(|c| c.0 != s);
            if self.triggered.is_some_and(|t| t.0 == s) {
                self.triggered = None;
            }
        }
    }

    /// The next fresh-port probe, if one is due, and its TTL: the opener from our fresh
    /// socket to the peer's (`opener_ttl`; none if `None`), then probes from our fresh socket
    /// to the peer, from the primary socket to the peer's fresh port and, from a stagger on,
    /// from our fresh socket to the peer's.
    fn next_fresh(
        &mut self,
        now: Instant,
        opener_ttl: Option<u8>,
    ) -> Option<(SocketId, SocketAddr, Option<u8>)> {
        let reflexive = self.reflexive?;
        if self.direct.is_some() {
            return None;
        }
        let r = self.fresh.current.as_mut()?;
        let next = |sent: u32| (sent < FRESH_PROBES).then_some(now + PROBE_INTERVAL);
        if let Some(s) = r.socket.filter(|_| r.opener_due) {
            r.opener_due = false;
            if let Some(ttl) = opener_ttl {
                return Some((s, r.peer, Some(ttl)));
            }
        }
        if let (Some(s), Some(t)) = (r.socket, r.own_next) {
            if now >= t {
                r.own_sent += 1;
                r.own_next = next(r.own_sent);
                return Some((s, reflexive, None));
            }
        }
        if r.peer_next.is_some_and(|t| now >= t) {
            r.peer_sent += 1;
            r.peer_next = next(r.peer_sent);
            return Some((SocketId::PRIMARY, r.peer, None));
        }
        if let (Some(s), Some(t)) = (r.socket, r.both_next) {
            if now >= t {
                r.both_sent += 1;
                r.both_next = next(r.both_sent);
                return Some((s, r.peer, None));
            }
        }
        if r.openers_next.is_some_and(|t| now >= t) {
            // To the peer's fresh port of this slot and of the next, in turn, for the whole
            // slot: the two ends' slots need not start together (each end's rounds restart
            // when candidates arrive), and the peer sweeps from a slot's port only while that
            // slot runs on its side.
            let to = if r.openers_sent % 2 == 0 {
                r.peer
            } else {
                SocketAddr::new(
                    r.peer.ip(),
                    fresh_port(self.pair, self.fresh.n + 1, !self.lower),
                )
            };
            r.openers_sent += 1;
            let t = now + PROBE_INTERVAL / 2;
            r.openers_next = (t < r.started + FRESH_AFTER).then_some(t);
            if let Some(ttl) = opener_ttl {
                return Some((SocketId::PRIMARY, to, Some(ttl)));
            }
            r.openers_next = None;
        }
        None
    }

    fn arm_spray(&mut self, at: Instant, sockets: u16, cfg: &ClientConfig) {
        let budget = match self.plan {
            Plan::Basic | Plan::PredictHard => 0,
            // A window per sweep, a sweep every PREDICTION_SWEEP for the round.
            Plan::Predict { delta, .. } => {
                prediction_span(cfg.prediction_window, delta) * PREDICTION_SWEEPS_PER_ROUND
            }
            Plan::BirthdayEasy => cfg.birthday_probes,
            Plan::BirthdayHard => u32::from(sockets) * 3,
            // Openers for the window, then the probe sweeps.
            Plan::Lockstep { .. } => lockstep_len(self.plan) * (1 + LOCKSTEP_SWEEPS),
        };
        // The hard side of a birthday round waits until the easy side's probes are out: each
        // of them opens the easy NAT towards one of our ports, so a socket of ours whose
        // mapping got one of those ports is let in at its first probe. Probing sooner, most
        // of our probes would reach the easy NAT first, and a Linux router keeps each as a
        // conntrack entry that makes its own later probe to that mapping leave from another
        // port (see the module docs): a collision found, then lost.
        let at = if self.plan == Plan::BirthdayHard {
            at + SPRAY_INTERVAL * cfg.birthday_probes + RETRY_STAGGER
        } else {
            at
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
    pub(super) fn replan(&mut self, now: Instant, me: Option<&NatBehavior>, cfg: &ClientConfig) {
        let plan = plan(me, self.peer_nat.as_ref(), cfg.birthday_sockets);
        let peer = self.peer_nat.as_ref().map(Reported::from);
        self.fresh.hopeless = per_destination(me.and_then(|m| m.mapping))
            || per_destination(peer.and_then(|p| p.mapping));
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

    /// The peer's NAT behaviour (relayed by the server): recompute the plan.
    pub(super) fn set_peer_nat(
        &mut self,
        now: Instant,
        info: NatInfo,
        me: Option<&NatBehavior>,
        cfg: &ClientConfig,
    ) {
        self.peer_nat = Some(info);
        self.replan(now, me, cfg);
    }

    /// A `Probe` frame of an authentic packet that came directly from `from` on local socket
    /// `socket` (with `direct_paths` off, probes are not answered).
    pub(super) fn handle_probe(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        nonce: u64,
        direct_paths: bool,
    ) {
        if !direct_paths {
            return;
        }
        self.heard_on(now, socket);
        if self.acks_due.len() < MAX_ACKS_DUE {
            self.acks_due.push((socket, from, nonce));
        }
        // The probe's source is where the peer's NAT maps it towards us: the best candidate
        // there is (it already passed our NAT's filter, too).
        let c = (socket, from);
        if self.direct.is_none() && self.enabled {
            self.triggered = Some(c);
        }
        if !self.candidates.contains(&c) && self.candidates.len() < MAX_CANDIDATES {
            self.candidates.push(c);
            if self.direct.is_none() && self.next_probe.is_none_or(|t| t > now) {
                self.next_probe = Some(now);
            }
        }
    }

    /// A `ProbeAck` frame of an authentic packet that came directly from `from` on local
    /// socket `socket`: the echo of the pair's secret validates a first direct path; the echo
    /// of the challenge for the address being checked moves a validated one there.
    pub(super) fn handle_probe_ack(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        nonce: u64,
    ) -> Option<PathEvent> {
        self.heard_on(now, socket);
        if self.direct.is_some()
            && self
                .migrating
                .is_some_and(|(s, a)| s == socket && nonce == self.challenge(s, a))
        {
            // The moved peer answered the probe sent to its new address (the answer may come
            // from yet another port behind an endpoint-dependent NAT): follow it.
            let (s, to) = self.migrating.take()?;
            // (`migrating_since` stays: the next check waits its turn too.)
            self.direct = Some((s, to));
            self.direct_alive(now);
            return Some(PathEvent::Moved(to));
        }
        if nonce == self.nonce && self.direct.is_none() {
            self.direct = Some((socket, from));
            self.next_probe = None;
            self.spray = Spray::default();
            self.fresh.next = None;
            self.end_fresh(now);
            self.direct_alive(now);
            self.last_direct_send = Some(now);
            return Some(PathEvent::Validated(from));
        }
        None
    }

    /// Any authentic packet that came directly from `from` on local socket `socket`;
    /// `conn_frames`: it carried connection traffic (data, acks), not only probes.
    pub(super) fn handle_direct_packet(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        conn_frames: bool,
    ) {
        self.heard_on(now, socket);
        let Some((s, addr)) = self.direct else {
            return;
        };
        if s == socket && addr != from {
            // The peer seems to have moved (its NAT rebound), or someone on the path forwarded
            // one of its packets from elsewhere. Authentic is not enough: probe the new address
            // with a value bound to it and move only when that value comes back (QUIC's path
            // validation). Until then the validated address keeps the traffic.
            // Only connection traffic counts: the peer sends it to its path to us, so it comes
            // from a new port only if the peer really moved. Probes and their answers go to
            // (and come back from) other addresses while punching; behind an
            // endpoint-dependent NAT each of those has a port of its own.
            let idle = self
                .migrating_since
                .is_none_or(|t| now >= t + MIGRATION_RETRY);
            if conn_frames && self.migrating != Some((socket, from)) && idle {
                self.migrating = Some((socket, from));
                self.migrating_since = Some(now);
                self.triggered = Some((socket, from));
            }
        } else if s == socket || conn_frames {
            // On the path's own socket, or connection traffic on another one of ours (the
            // peer's path to us may end at another socket than ours to it). Probes and their
            // answers on another socket prove nothing about our path: the peer probing us
            // there, while its own packets to our path's socket die (that socket closed on
            // our side), must not keep it alive.
            self.direct_alive(now);
        }
    }

    /// Declares the direct path dead if it has been quiet too long (`busy`: see
    /// [`busy_limit`]); probing restarts soon.
    pub(super) fn handle_timeout(
        &mut self,
        now: Instant,
        busy: Option<Duration>,
    ) -> Option<PathEvent> {
        self.expire_fresh(now);
        let dead = self.dead_at(busy)?;
        if now < dead {
            return None;
        }
        if let Some((s, _)) = self.direct.filter(|(s, _)| is_fresh_id(*s)) {
            // Its fresh socket closes with it (a held one when the peer stops using it).
            self.candidates.retain(|c| c.0 != s);
        }
        self.direct = None;
        self.busy_since = None;
        self.sent = 0;
        self.cursor = 0;
        // A path that worked is retried soon (the peer may have moved, and the server's
        // PeerMoved restarts it at once); a failed round waits longer.
        self.next_probe = Some(now + RETRY_AFTER_LOSS);
        self.spray = Spray::default();
        Some(PathEvent::Lost)
    }

    /// The next probe answer or probe to send, if one is due: answers first (from the socket
    /// the probe came in on), then a keepalive on the direct path, a triggered probe, a
    /// punching round's next probe, a sprayed one (from the birthday sockets `pool` grants).
    pub(super) fn poll_transmit(
        &mut self,
        now: Instant,
        pool: &mut SocketPool,
        cfg: &ClientConfig,
    ) -> Option<PathSend> {
        if let Some((socket, to, nonce)) = self.acks_due.pop() {
            return Some(PathSend::ProbeAck { socket, to, nonce });
        }
        let keepalive_due = self.direct.is_some()
            && self
                .last_direct_send
                .is_none_or(|t| now >= t + DIRECT_KEEPALIVE);
        self.expire_fresh(now);
        self.start_fresh(now, pool);
        let probe_due = self.next_probe.is_some_and(|t| now >= t) && !self.candidates.is_empty();
        let triggered = if self.direct.is_none() || self.migrating.is_some() {
            self.triggered.take()
        } else {
            None
        };
        let mut ttl = None;
        let (socket, to) = if keepalive_due {
            self.direct?
        } else if let Some(t) = triggered {
            t
        } else if probe_due {
            if self.sent == 0 && self.cursor == 0 && self.direct.is_none() {
                self.arm_fresh(now);
            }
            if self.sent == 0 && self.cursor == 0 && self.spray_round != Some(self.round) {
                // A round starts: spray along with it if the backoff lets it (a spray under
                // way from a replan in this round keeps going).
                self.spray_round = Some(self.round);
                if sprays_in(self.round) {
                    self.arm_spray(now, cfg.birthday_sockets, cfg);
                } else {
                    self.spray = Spray::default();
                }
            }
            self.candidates[self.cursor % self.candidates.len()]
        } else if let Some((socket, to, t)) = self.next_fresh(now, cfg.opener_ttl) {
            ttl = t;
            (socket, to)
        } else {
            let (socket, to, t) = self.next_spray(now, pool, cfg)?;
            ttl = t;
            (socket, to)
        };
        let nonce = if self.migrating == Some((socket, to)) {
            self.challenge(socket, to)
        } else {
            self.nonce
        };
        if keepalive_due {
            self.last_direct_send = Some(now);
        } else if triggered.is_some() {
            // Outside the round's count.
        } else if probe_due {
            self.advance_round(now);
        }
        Some(PathSend::Probe {
            socket,
            to,
            nonce,
            ttl,
        })
    }

    /// A punching round's probe went out: on to the next candidate, the next step, or the
    /// next round.
    fn advance_round(&mut self, now: Instant) {
        self.cursor += 1;
        if self.cursor < self.candidates.len() {
            return;
        }
        self.cursor = 0;
        self.sent += 1;
        self.next_probe = if self.direct.is_some() {
            None
        } else if self.sent >= PROBES_PER_ROUND {
            self.sent = 0;
            self.round += 1;
            let second = (self.round % 2 == 1) != self.lower;
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

    /// The owner sent connection traffic on the direct path; `awaiting`: data in it awaits an
    /// answer (an ack-only packet does not: silence after it is expected).
    pub(super) fn on_direct_sent(&mut self, now: Instant, awaiting: bool) {
        self.last_direct_send = Some(now);
        if awaiting {
            self.busy_since.get_or_insert(now);
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

    /// The next sprayed probe's (socket, destination, TTL), if one is due now.
    fn next_spray(
        &mut self,
        now: Instant,
        pool: &mut SocketPool,
        cfg: &ClientConfig,
    ) -> Option<(SocketId, SocketAddr, Option<u8>)> {
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
        if let Plan::Lockstep { .. } = self.plan {
            if s.sent == 0 {
                if !pool.grant_lockstep(now, LOCKSTEP_WINDOW) {
                    // The client's lockstep budget is spent: no sweep this round.
                    s.next = None;
                    return None;
                }
                self.lockstep_sweeps += 1;
            }
            return self.next_lockstep(now, ip, cfg.opener_ttl);
        }
        let (target, sweep_len, sweep_pause) = match self.plan {
            Plan::Basic | Plan::PredictHard | Plan::Lockstep { .. } => {
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
                let from = self
                    .fresh
                    .current
                    .filter(|r| r.sweeping)
                    .and_then(|r| r.socket)
                    .unwrap_or(SocketId::PRIMARY);
                (
                    (from, SocketAddr::new(ip, port)),
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
            Plan::BirthdayHard => match pool.sockets_towards(now, reflexive) {
                Grant::Sockets(open) => {
                    let i = s.step as usize % open.len();
                    ((open[i], reflexive), open.len() as u32, SOCKET_SWEEP)
                }
                Grant::Pending => {
                    // Sockets not open yet: look again shortly.
                    s.next = Some(now + SPRAY_INTERVAL * 10);
                    return None;
                }
                Grant::Denied => {
                    // The client's binding budget is spent: no birthday spray this round.
                    s.next = None;
                    return None;
                }
            },
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
        Some((target.0, target.1, None))
    }

    /// The next probe of a lockstep sweep (granted and counted): an opener to each of the
    /// window's ports (with `opener_ttl`), then, [`RETRY_STAGGER`] after the first, probes to
    /// the same ports, [`LOCKSTEP_SWEEPS`] times.
    fn next_lockstep(
        &mut self,
        now: Instant,
        ip: IpAddr,
        opener_ttl: Option<u8>,
    ) -> Option<(SocketId, SocketAddr, Option<u8>)> {
        let Plan::Lockstep {
            base,
            delta,
            per_port,
            ..
        } = self.plan
        else {
            return None;
        };
        let len = lockstep_len(self.plan);
        // The peer's earlier sweeps moved its next port on (a NAT that maps per IP has one
        // mapping towards us whatever we sweep).
        let before = if per_port {
            self.lockstep_sweeps.saturating_sub(1) * LOCKSTEP_WINDOW
        } else {
            0
        };
        let s = &mut self.spray;
        let j = s.step;
        let port = if per_port && j >= LOCKSTEP_WINDOW {
            let p = i64::from(base) - i64::from(delta) * i64::from(j - LOCKSTEP_WINDOW + 1);
            u16::try_from(p.rem_euclid(65_536)).unwrap_or(0).max(1)
        } else if per_port {
            lockstep_port(base, delta, before + lockstep_order(j, self.lower))
        } else {
            // Its one mapping towards us may predate its discovery's last one (discovery
            // runs while the first round punches): nearest first, either side.
            let k = i64::from(j / 2 + 1);
            let sign = if j % 2 == 0 { 1 } else { -1 };
            let p = i64::from(base) + i64::from(delta) * sign * k;
            u16::try_from(p.rem_euclid(65_536)).unwrap_or(0).max(1)
        };
        let opener = s.sent < len;
        s.sent += 1;
        s.step += 1;
        if s.step >= len {
            s.step = 0;
            s.next = Some(if opener {
                now + RETRY_STAGGER
            } else {
                now + PREDICTION_SWEEP
            });
        } else {
            s.next = Some(now + SPRAY_INTERVAL);
        }
        if s.sent >= s.budget {
            s.next = None;
        }
        let ttl = if opener { opener_ttl } else { None };
        Some((SocketId::PRIMARY, SocketAddr::new(ip, port), ttl))
    }
}

/// The peer's step a lockstep sweep's `j`-th destination aims at (see the module docs): the
/// lower end goes in port order, the other the even steps first, then the odd ones.
fn lockstep_order(j: u32, lower: bool) -> u32 {
    let half = LOCKSTEP_WINDOW / 2;
    if lower {
        j
    } else if j < half {
        2 * j
    } else {
        2 * (j - half) + 1
    }
}

/// Destinations of one lockstep sweep of `plan`: the window, and [`LOCKSTEP_BACK`] more
/// when our NAT maps per IP and the peer's per port.
fn lockstep_len(plan: Plan) -> u32 {
    match plan {
        Plan::Lockstep {
            per_port: true,
            one_mapping: true,
            ..
        } => LOCKSTEP_WINDOW + LOCKSTEP_BACK,
        _ => LOCKSTEP_WINDOW,
    }
}

/// The port of the peer's `n`-th mapping after the one on `base` (n = 0: the next one).
fn lockstep_port(base: u16, delta: i16, n: u32) -> u16 {
    let p = i64::from(base) + i64::from(delta) * (i64::from(n) + 1);
    u16::try_from(p.rem_euclid(65_536)).unwrap_or(0).max(1)
}

/// How long a direct path may go unanswered while data awaits acknowledgement: two
/// retransmission timeouts (never under [`DIRECT_BUSY_DEAD_MIN`]), counted from the first
/// send since the last receive; `None` when nothing is in flight (then only
/// [`DIRECT_IDLE_DEAD`], a few missed keepalives, applies).
pub(super) fn busy_limit(conn: &crate::reliability::Connection) -> Option<Duration> {
    (conn.unacked() > 0).then(|| ((conn.srtt() + conn.rtt_var() * 4) * 2).max(DIRECT_BUSY_DEAD_MIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{NatBehavior, PortAllocation};

    const NONCE: u64 = 0x5eed;
    const PAIR: u32 = 42;

    fn peer() -> SocketAddr {
        "198.51.100.7:40000".parse().unwrap()
    }

    fn agent(now: Instant, lower: bool) -> PathAgent {
        PathAgent::new(now, peer(), NONCE, PAIR, true, lower, Duration::ZERO)
    }

    fn cfg() -> ClientConfig {
        ClientConfig::default()
    }

    /// Every probe the agent sends at `now`.
    fn sends(a: &mut PathAgent, now: Instant) -> Vec<PathSend> {
        let mut pool = SocketPool::default();
        std::iter::from_fn(|| a.poll_transmit(now, &mut pool, &cfg())).collect()
    }

    /// Validates the direct path to `peer()` on the primary socket at `now`.
    fn validated(now: Instant) -> PathAgent {
        let mut a = agent(now, true);
        let _ = sends(&mut a, now);
        let e = a.handle_probe_ack(now, SocketId::PRIMARY, peer(), NONCE);
        assert_eq!(e, Some(PathEvent::Validated(peer())));
        a
    }

    #[test]
    fn probing_starts_after_the_servers_delay_and_the_pair_secret_validates_a_path() {
        let t0 = crate::tests::epoch();
        let delay = Duration::from_millis(40);
        let mut a = PathAgent::new(t0, peer(), NONCE, PAIR, true, true, delay);
        assert_eq!(
            a.poll_timeout(None),
            Some(Timeout::new(t0 + delay, "probe round"))
        );
        assert!(sends(&mut a, t0).is_empty(), "not before the delay");
        let first = sends(&mut a, t0 + delay);
        assert_eq!(
            first,
            [PathSend::Probe {
                socket: SocketId::PRIMARY,
                to: peer(),
                nonce: NONCE,
                ttl: None,
            }]
        );
        // A wrong value validates nothing; the pair's secret from any address does (behind
        // an endpoint-dependent NAT the answer comes from another port).
        let other: SocketAddr = "198.51.100.7:40001".parse().unwrap();
        assert_eq!(a.handle_probe_ack(t0, SocketId::PRIMARY, other, 1), None);
        let t1 = t0 + Duration::from_millis(60);
        let e = a.handle_probe_ack(t1, SocketId::PRIMARY, other, NONCE);
        assert_eq!(e, Some(PathEvent::Validated(other)));
        assert_eq!(a.direct_path(), Some((SocketId::PRIMARY, other)));
        // No more punching: a keepalive a second later is all that is due.
        assert_eq!(
            a.poll_timeout(None),
            Some(Timeout::new(t1 + DIRECT_KEEPALIVE, "direct path keepalive"))
        );
    }

    #[test]
    fn a_round_probes_every_candidate_then_the_retry_waits_out_conntrack_staggered_by_id() {
        let t0 = crate::tests::epoch();
        for lower in [true, false] {
            let mut a = agent(t0, lower);
            a.add_candidates(t0, ["10.0.0.5:4000".parse().unwrap()].into_iter());
            let mut now = t0;
            let mut probes = 0;
            let round = [peer(), "10.0.0.5:4000".parse().unwrap()];
            while let Some(t) = a.poll_timeout(None).filter(|t| t.at < t0 + RETRY_AFTER) {
                let n = sends(&mut a, t.at)
                    .iter()
                    .filter(|s| {
                        matches!(s, PathSend::Probe { socket: SocketId::PRIMARY, to, .. }
                            if round.contains(to))
                    })
                    .count();
                if n > 0 {
                    now = t.at; // (fresh-port retries probe in between: not counted here)
                }
                probes += n;
            }
            assert_eq!(probes, 2 * PROBES_PER_ROUND as usize, "two candidates");
            // Round 1 is the first retry: the higher id goes second, RETRY_STAGGER later.
            let stagger = if lower { Duration::ZERO } else { RETRY_STAGGER };
            assert_eq!(
                a.poll_timeout(None).map(|t| t.at),
                Some(now + RETRY_AFTER + stagger),
                "lower: {lower}"
            );
        }
    }

    #[test]
    fn a_probe_is_answered_from_the_socket_it_came_in_on_and_triggers_a_probe_back() {
        let t0 = crate::tests::epoch();
        let mut a = PathAgent::new(t0, peer(), NONCE, PAIR, true, true, Duration::from_secs(1));
        let reflexive: SocketAddr = "203.0.113.9:6000".parse().unwrap();
        a.handle_probe(t0, SocketId(3), reflexive, 77, true);
        let probe = |socket, to| PathSend::Probe {
            socket,
            to,
            nonce: NONCE,
            ttl: None,
        };
        assert_eq!(
            sends(&mut a, t0),
            [
                PathSend::ProbeAck {
                    socket: SocketId(3),
                    to: reflexive,
                    nonce: 77
                },
                // Triggered: back where the probe came from, at once.
                probe(SocketId(3), reflexive),
                // A new candidate starts a round now, the server's delay notwithstanding.
                probe(SocketId::PRIMARY, peer()),
                probe(SocketId(3), reflexive),
            ]
        );
        // Answers are bounded, and with direct paths off nothing is answered at all.
        for i in 0..100 {
            a.handle_probe(t0, SocketId(3), reflexive, i, true);
        }
        let acks = sends(&mut a, t0)
            .iter()
            .filter(|s| matches!(s, PathSend::ProbeAck { .. }))
            .count();
        assert_eq!(acks, MAX_ACKS_DUE);
        a.handle_probe(t0, SocketId(3), reflexive, 5, false);
        assert!(sends(&mut a, t0).is_empty());
    }

    #[test]
    fn a_moved_peer_is_followed_only_once_the_challenge_for_its_new_address_comes_back() {
        let t0 = crate::tests::epoch();
        let mut a = validated(t0);
        let moved: SocketAddr = "198.51.100.7:50000".parse().unwrap();
        // Probes and their answers from a new address start nothing.
        a.handle_direct_packet(t0, SocketId::PRIMARY, moved, false);
        assert!(sends(&mut a, t0).is_empty());
        // Connection traffic from there does: a probe with a value bound to that address.
        a.handle_direct_packet(t0, SocketId::PRIMARY, moved, true);
        let probes = sends(&mut a, t0);
        let [PathSend::Probe { to, nonce, .. }] = probes[..] else {
            panic!("{probes:?}");
        };
        assert_eq!(to, moved);
        assert_ne!(nonce, NONCE, "bound to the address, not the pair's secret");
        // The pair's secret coming back (an answer to a probe sent elsewhere, forwarded from
        // the new address) moves nothing; the challenge does.
        assert_eq!(
            a.handle_probe_ack(t0, SocketId::PRIMARY, moved, NONCE),
            None
        );
        assert_eq!(a.direct(), Some(peer()));
        let e = a.handle_probe_ack(t0, SocketId::PRIMARY, moved, nonce);
        assert_eq!(e, Some(PathEvent::Moved(moved)));
        assert_eq!(a.direct(), Some(moved));
        // A further move is checked no sooner than MIGRATION_RETRY after the last check.
        let again: SocketAddr = "198.51.100.7:50001".parse().unwrap();
        a.handle_direct_packet(t0, SocketId::PRIMARY, again, true);
        assert!(sends(&mut a, t0).is_empty());
        a.handle_direct_packet(t0 + MIGRATION_RETRY, SocketId::PRIMARY, again, true);
        assert!(!sends(&mut a, t0 + MIGRATION_RETRY).is_empty());
    }

    #[test]
    fn a_quiet_direct_path_is_lost_sooner_with_data_in_flight_and_probing_restarts() {
        let t0 = crate::tests::epoch();
        let mut idle = validated(t0);
        assert_eq!(idle.handle_timeout(t0 + DIRECT_IDLE_DEAD / 2, None), None);
        let lost = t0 + DIRECT_IDLE_DEAD;
        assert_eq!(
            idle.poll_timeout(None).map(|t| t.reason),
            Some("direct path keepalive"),
            "the keepalive comes first"
        );
        assert_eq!(idle.handle_timeout(lost, None), Some(PathEvent::Lost));
        assert_eq!(idle.direct(), None);
        assert_eq!(
            idle.poll_timeout(None),
            Some(Timeout::new(lost + RETRY_AFTER_LOSS, "probe round"))
        );
        // With data awaiting an answer, silence counts from the first send after the last
        // receive, for the busy limit.
        let mut busy = validated(t0);
        let limit = Duration::from_millis(400);
        let sent = t0 + Duration::from_millis(100);
        busy.on_direct_sent(sent, true);
        assert_eq!(
            busy.poll_timeout(Some(limit)),
            Some(Timeout::new(sent + limit, "direct path liveness"))
        );
        assert_eq!(
            busy.handle_timeout(sent + limit, Some(limit)),
            Some(PathEvent::Lost)
        );
    }

    /// An agent on the hard, random side of a birthday pair (16 sockets), with its config.
    fn birthday_hard_agent(t0: Instant) -> (PathAgent, ClientConfig) {
        let me = hard_nat(Dependence::AddressAndPortDependent, PortAllocation::Random);
        let easy = hard_nat(
            Dependence::EndpointIndependent,
            PortAllocation::Sequential { delta: 1 },
        );
        let cfg = ClientConfig {
            birthday_sockets: 16,
            ..cfg()
        };
        let mut a = agent(t0, true);
        a.set_peer_nat(t0, NatInfo::from(&easy), Some(&me), &cfg);
        assert_eq!(a.plan, Plan::BirthdayHard);
        (a, cfg)
    }

    #[test]
    fn a_failing_birthday_spray_backs_off_and_its_sockets_close_between_spraying_rounds() {
        use crate::SocketRequest;
        use std::collections::BTreeSet;
        let t0 = crate::tests::epoch();
        let (mut a, cfg) = birthday_hard_agent(t0);
        // Drive the agent and a pool the way `PeerSet` does (the runtime opens at once),
        // while no probe is ever answered.
        let mut pool = SocketPool::default();
        let mut sprayed = BTreeSet::new();
        let (mut opens, mut closes) = (0, 0);
        let mut now = t0;
        while now < t0 + Duration::from_secs(400) {
            pool.update(now, a.wants_sockets(), cfg.birthday_sockets, &[]);
            while let Some(r) = pool.poll_socket_request() {
                match r {
                    SocketRequest::Open { id, .. } => {
                        opens += 1;
                        pool.handle_socket_opened(id, Some(peer()));
                    }
                    _ => closes += 1,
                }
            }
            while let Some(send) = a.poll_transmit(now, &mut pool, &cfg) {
                if let PathSend::Probe { socket, .. } = send {
                    if socket != SocketId::PRIMARY {
                        sprayed.insert(a.spray_round.unwrap());
                    }
                }
            }
            let Some(t) = a.poll_timeout(None) else { break };
            now = t.at.max(now);
        }
        assert!(a.round >= 9, "rounds went on: {}", a.round);
        assert_eq!(
            sprayed,
            BTreeSet::from([0, 1, 2, 4, 8]),
            "three rounds, then exponential backoff"
        );
        // Open through rounds 0–2 (the same sockets keep their mappings), closed when the
        // backoff skips round 3; open again for round 4 only, and for round 8 only.
        assert_eq!(opens, 3 * 16);
        assert_eq!(closes, 3 * 16);
    }

    /// A probe sent: when, from which socket, to where, with which TTL.
    type Probed = (Instant, SocketId, SocketAddr, Option<u8>);

    /// Socket requests and probes, timed.
    type Driven = (Vec<(Instant, crate::SocketRequest)>, Vec<Probed>);

    /// What one end does over `[from, until)`, driven the way `PeerSet` drives it (the
    /// runtime opens at once, the pool keeps the sockets the agent holds), while no probe is
    /// ever answered: every socket request and probe, timed.
    fn drive_unanswered(a: &mut PathAgent, from: Instant, until: Instant) -> Driven {
        drive_unanswered_with(a, from, until, &cfg())
    }

    fn drive_unanswered_with(
        a: &mut PathAgent,
        from: Instant,
        until: Instant,
        cfg: &ClientConfig,
    ) -> Driven {
        use crate::SocketRequest;
        let mut pool = SocketPool::default();
        let (mut requests, mut probes) = (Vec::new(), Vec::new());
        let mut now = from;
        while now < until {
            let _ = a.handle_timeout(now, None);
            while let Some(send) = a.poll_transmit(now, &mut pool, cfg) {
                if let PathSend::Probe {
                    socket, to, ttl, ..
                } = send
                {
                    probes.push((now, socket, to, ttl));
                }
            }
            let keep: Vec<SocketId> = a.fresh_socket().into_iter().collect();
            pool.keep_fresh(&keep);
            while let Some(r) = pool.poll_socket_request() {
                if let SocketRequest::Open { id, .. } = r {
                    pool.handle_socket_opened(id, Some(peer()));
                    a.socket_opened(now, id, true, cfg);
                }
                requests.push((now, r));
            }
            let Some(t) = a.poll_timeout(None) else { break };
            now = t.at.max(now);
        }
        (requests, probes)
    }

    #[test]
    fn a_round_with_nothing_validated_retries_from_fresh_ports_within_a_second() {
        use crate::SocketRequest;
        let t0 = crate::tests::epoch();
        let any = |port| SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port);
        for lower in [true, false] {
            let mut a = agent(t0, lower);
            let (requests, probes) = drive_unanswered(&mut a, t0, t0 + RETRY_AFTER);
            // Two retries, a second apart, each from a socket on a port both ends derive
            // from the pair and the retry; each socket closes when its retry is over.
            let (first, second) = (t0 + FRESH_AFTER, t0 + FRESH_AFTER * 2);
            let own = |n| fresh_port(PAIR, n, lower);
            let [
                (t1, SocketRequest::Open { id: s1, addr: a1 }),
                (t2, SocketRequest::Open { id: s2, addr: a2 }),
                (t3, SocketRequest::Close { id: c1 }),
                (t4, SocketRequest::Close { id: c2 }),
            ] = requests[..]
            else {
                panic!("{requests:?}");
            };
            assert_eq!((t1, a1), (first, Some(any(own(1)))));
            assert_eq!((t2, a2, t3, c1), (second, Some(any(own(2))), second, s1));
            assert_eq!((t4, c2), (second + FRESH_AFTER, s2));
            assert_ne!(own(1), own(2));
            // From the fresh socket to the peer at once; to the peer's fresh port (from the
            // primary socket) a stagger later, so that the end whose router pinned the
            // early probe has opened its new mapping first.
            let from_fresh: Vec<Instant> = probes
                .iter()
                .filter(|p| p.1 == s1 && p.2 == peer())
                .map(|p| p.0)
                .collect();
            assert_eq!(from_fresh.len(), FRESH_PROBES as usize);
            assert_eq!(from_fresh[0], first);
            let theirs = SocketAddr::new(peer().ip(), fresh_port(PAIR, 1, !lower));
            let to_fresh: Vec<Instant> = probes
                .iter()
                .filter(|p| p.1 == SocketId::PRIMARY && p.2 == theirs)
                .map(|p| p.0)
                .collect();
            assert_eq!(to_fresh.len(), FRESH_PROBES as usize);
            assert_eq!(to_fresh[0], first + RETRY_STAGGER);
            assert!(
                *to_fresh.last().unwrap() < second,
                "answers come back in time"
            );
            // No more retries until the next round.
            assert!(requests.iter().all(|r| r.0 < t0 + PROBE_INTERVAL * 40));
        }
    }

    #[test]
    fn both_ends_probe_the_ports_the_other_binds() {
        let t0 = crate::tests::epoch();
        let opened = |lower| {
            let mut a = agent(t0, lower);
            let (requests, probes) = drive_unanswered(&mut a, t0, t0 + Duration::from_secs(3));
            let ports: Vec<u16> = requests
                .iter()
                .filter_map(|r| match r.1 {
                    crate::SocketRequest::Open { addr, .. } => addr.map(|a| a.port()),
                    _ => None,
                })
                .collect();
            let probed: Vec<u16> = probes
                .iter()
                .filter(|p| p.1 == SocketId::PRIMARY && p.2 != peer())
                .map(|p| p.2.port())
                .collect();
            (ports, probed)
        };
        let (lower_binds, lower_probes) = opened(true);
        let (higher_binds, higher_probes) = opened(false);
        assert_eq!(lower_binds.len(), 2);
        for p in &lower_binds {
            assert!(higher_probes.contains(p), "{p} not probed by the other end");
        }
        for p in &higher_binds {
            assert!(lower_probes.contains(p), "{p} not probed by the other end");
        }
        assert!(lower_binds.iter().all(|p| !higher_binds.contains(p)));
    }

    #[test]
    fn a_fresh_socket_the_peer_keeps_sending_to_outlives_its_retry_until_the_peer_stops() {
        let t0 = crate::tests::epoch();
        let mut a = agent(t0, true);
        let (requests, _) = drive_unanswered(&mut a, t0, t0 + FRESH_AFTER + PROBE_INTERVAL);
        let Some(&(_, crate::SocketRequest::Open { id, .. })) = requests.last() else {
            panic!("{requests:?}");
        };
        // The peer's probe reaches our fresh socket (it may validate that leg with our
        // answer) while no path is validated on our side.
        let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let heard = t0 + FRESH_AFTER + RETRY_STAGGER;
        a.handle_probe(heard, id, from, 9, true);
        let _ = sends(&mut a, heard);
        // The retry ends (a second after it started): the socket stays, the peer sends here.
        let ended = t0 + FRESH_AFTER * 2 - PROBE_INTERVAL / 2;
        let _ = a.handle_timeout(t0 + FRESH_AFTER * 2 - Duration::from_millis(1), None);
        assert_eq!(
            a.fresh_socket(),
            Some(id),
            "held while the peer sends to it"
        );
        // The peer keeps sending connection traffic here: still held.
        let later = ended + DIRECT_IDLE_DEAD;
        a.handle_direct_packet(later, id, from, true);
        let _ = a.handle_timeout(later + Duration::from_millis(1), None);
        assert_eq!(a.fresh_socket().filter(|s| *s == id), Some(id));
        // Quiet for DIRECT_IDLE_DEAD: let go (the pool closes it).
        let t = a.poll_timeout(None).expect("a deadline");
        assert!(t.at <= later + DIRECT_IDLE_DEAD, "{t:?}");
        let _ = a.handle_timeout(later + DIRECT_IDLE_DEAD, None);
        assert_ne!(a.fresh_socket(), Some(id), "released once the peer stopped");
    }

    #[test]
    fn probes_on_another_socket_do_not_keep_a_direct_path_alive_connection_traffic_does() {
        let t0 = crate::tests::epoch();
        let mut a = agent(t0, true);
        assert_eq!(
            a.handle_probe_ack(t0, SocketId::PRIMARY, peer(), NONCE),
            Some(PathEvent::Validated(peer()))
        );
        let other = SocketId(0x4001); // a fresh socket's id (`sockets.rs`)
        let from: SocketAddr = "198.51.100.7:41000".parse().unwrap();
        // The peer probes a socket of ours our path does not use (its own path to us ended
        // at a socket we closed, and it keeps punching): that says nothing about our path.
        let mut now = t0;
        while now < t0 + DIRECT_IDLE_DEAD * 2 {
            now += Duration::from_millis(500);
            a.handle_direct_packet(now, other, from, false);
            if a.handle_timeout(now, None) == Some(PathEvent::Lost) {
                break;
            }
        }
        assert!(a.direct().is_none(), "lost after {:?}", now - t0);
        assert!(now <= t0 + DIRECT_IDLE_DEAD + Duration::from_millis(500));
        // Connection traffic there does count (the peer's path may end at another socket
        // of ours than ours to it).
        let mut b = agent(t0, true);
        let _ = b.handle_probe_ack(t0, SocketId::PRIMARY, peer(), NONCE);
        let mut now = t0;
        while now < t0 + DIRECT_IDLE_DEAD * 2 {
            now += Duration::from_millis(500);
            b.handle_direct_packet(now, other, from, true);
            assert_eq!(b.handle_timeout(now, None), None);
        }
        assert!(b.direct().is_some());
    }

    #[test]
    fn a_path_found_on_a_fresh_socket_keeps_it_and_no_retry_follows() {
        let t0 = crate::tests::epoch();
        let mut a = agent(t0, true);
        let (requests, _) = drive_unanswered(&mut a, t0, t0 + FRESH_AFTER + PROBE_INTERVAL);
        let Some(&(_, crate::SocketRequest::Open { id, .. })) = requests.last() else {
            panic!("{requests:?}");
        };
        // The peer's probe to our fresh port arrives there: answered and probed back from it,
        // and its answer validates the path on that socket.
        let now = t0 + FRESH_AFTER + RETRY_STAGGER;
        let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        a.handle_probe(now, id, from, 9, true);
        let sent = sends(&mut a, now);
        assert!(sent.contains(&PathSend::ProbeAck {
            socket: id,
            to: from,
            nonce: 9
        }));
        assert_eq!(
            a.handle_probe_ack(now, id, from, NONCE),
            Some(PathEvent::Validated(from))
        );
        assert_eq!(a.direct_socket(), Some(id), "kept by the direct path");
        assert_eq!(a.fresh_socket(), None, "the retry is over");
        let timeout = a.poll_timeout(None).unwrap();
        assert_eq!(timeout.reason, "direct path keepalive");
    }

    #[test]
    fn no_fresh_port_retry_when_a_nat_maps_per_destination() {
        let t0 = crate::tests::epoch();
        let hard = hard_nat(
            Dependence::AddressAndPortDependent,
            PortAllocation::Sequential { delta: 1 },
        );
        let easy = hard_nat(Dependence::EndpointIndependent, PortAllocation::Random);
        for (me, peer_nat) in [(&hard, &hard), (&easy, &hard), (&hard, &easy)] {
            let mut a = agent(t0, true);
            a.set_peer_nat(t0, NatInfo::from(peer_nat), Some(me), &cfg());
            if a.plan != Plan::Basic {
                continue; // (prediction or birthday probing instead)
            }
            let (requests, _) = drive_unanswered(&mut a, t0, t0 + RETRY_AFTER);
            assert!(requests.is_empty(), "{requests:?}");
        }
        // Both easy: retried.
        let mut a = agent(t0, true);
        a.set_peer_nat(t0, NatInfo::from(&easy), Some(&easy), &cfg());
        let (requests, _) = drive_unanswered(&mut a, t0, t0 + RETRY_AFTER);
        assert_eq!(requests.len(), 4);
    }

    #[test]
    fn the_hard_side_of_a_birthday_round_waits_until_the_easy_sides_probes_are_out() {
        let t0 = crate::tests::epoch();
        let (mut a, cfg) = birthday_hard_agent(t0);
        let mut pool = SocketPool::default();
        pool.update(t0, true, cfg.birthday_sockets, &[]);
        while let Some(r) = pool.poll_socket_request() {
            if let crate::SocketRequest::Open { id, .. } = r {
                pool.handle_socket_opened(id, Some(peer()));
            }
        }
        let mut now = t0;
        let first = loop {
            let sprayed = std::iter::from_fn(|| a.poll_transmit(now, &mut pool, &cfg)).any(
                |s| matches!(s, PathSend::Probe { socket, .. } if socket.0 >= 1 && socket.0 <= 16),
            );
            if sprayed {
                break now;
            }
            now = a.poll_timeout(None).unwrap().at.max(now);
        };
        // The easy side sprays `birthday_probes` probes SPRAY_INTERVAL apart from the start.
        let easy_done = t0 + SPRAY_INTERVAL * cfg.birthday_probes;
        assert!(first > easy_done, "{:?} after the start", first - t0);
        assert_eq!(first, easy_done + RETRY_STAGGER);
    }

    /// A NAT that filters by address and port, with `mapping` and `allocation`.
    fn hard_nat(mapping: Dependence, allocation: PortAllocation) -> NatBehavior {
        NatBehavior {
            reflexive: peer(),
            mapping: Some(mapping),
            filtering: Some(Dependence::AddressAndPortDependent),
            port_preserved: None,
            allocation: Some(allocation),
            last_port: 4000,
            alternate: None,
        }
    }

    #[test]
    fn both_ends_reach_matching_plans_from_the_same_two_descriptions() {
        let nat = hard_nat;
        let easy = nat(
            Dependence::EndpointIndependent,
            PortAllocation::Sequential { delta: 1 },
        );
        let hard = |allocation| nat(Dependence::AddressAndPortDependent, allocation);
        let info = |b: &NatBehavior| NatInfo::from(b);
        let random = hard(PortAllocation::Random);
        assert_eq!(
            plan(Some(&easy), Some(&info(&random)), 256),
            Plan::BirthdayEasy
        );
        assert_eq!(
            plan(Some(&random), Some(&info(&easy)), 256),
            Plan::BirthdayHard
        );
        assert_eq!(
            plan(Some(&random), Some(&info(&easy)), 0),
            Plan::Basic,
            "no sockets"
        );
        let sequential = hard(PortAllocation::Sequential { delta: 2 });
        assert_eq!(
            plan(Some(&easy), Some(&info(&sequential)), 256),
            Plan::Predict {
                base: 4000,
                delta: 2
            }
        );
        assert_eq!(
            plan(Some(&sequential), Some(&info(&easy)), 256),
            Plan::PredictHard
        );
        assert_eq!(plan(None, Some(&info(&easy)), 256), Plan::Basic, "unknown");
    }

    /// The sends of a retry slot, from `drive_unanswered`: (time, socket, to, ttl).
    fn slot(probes: &[Probed], from: Instant) -> Vec<Probed> {
        probes
            .iter()
            .copied()
            .filter(|p| p.0 >= from && p.0 < from + FRESH_AFTER)
            .collect()
    }

    #[test]
    fn a_retry_opens_both_routers_with_low_ttl_openers_before_probing_fresh_to_fresh() {
        let t0 = crate::tests::epoch();
        for lower in [true, false] {
            let mut a = agent(t0, lower);
            let (requests, probes) = drive_unanswered(&mut a, t0, t0 + FRESH_AFTER * 3);
            let Some((_, crate::SocketRequest::Open { id, .. })) = requests.first().copied() else {
                panic!("{requests:?}");
            };
            let theirs = SocketAddr::new(peer().ip(), fresh_port(PAIR, 1, !lower));
            let start = t0 + FRESH_AFTER;
            let fresh_to_fresh: Vec<Probed> = slot(&probes, start)
                .into_iter()
                .filter(|p| p.1 == id && p.2 == theirs)
                .collect();
            // First an opener with the configured TTL, the moment the socket is open: it
            // opens our router towards the peer's fresh port and dies before the peer's.
            assert_eq!(fresh_to_fresh[0], (start, id, theirs, cfg().opener_ttl));
            assert_eq!(cfg().opener_ttl, Some(2));
            // Then ordinary probes, a stagger later (the peer's opener has opened its
            // router by then), PROBE_INTERVAL apart.
            let rest: Vec<Instant> = fresh_to_fresh[1..].iter().map(|p| p.0).collect();
            assert!(fresh_to_fresh[1..].iter().all(|p| p.3.is_none()));
            assert_eq!(rest.len(), FRESH_PROBES as usize);
            assert_eq!(rest[0], start + RETRY_STAGGER);
            assert_eq!(rest[1] - rest[0], PROBE_INTERVAL);
            // Openers are only ever this one per retry.
            let openers = probes.iter().filter(|p| p.3.is_some()).count();
            assert_eq!(openers, 2, "one per retry slot: {probes:?}");
        }
    }

    #[test]
    fn without_an_opener_ttl_no_opener_is_sent_and_the_fresh_ports_are_still_probed() {
        let t0 = crate::tests::epoch();
        let mut a = agent(t0, true);
        let cfg = ClientConfig {
            opener_ttl: None,
            ..cfg()
        };
        let (_, probes) = drive_unanswered_with(&mut a, t0, t0 + FRESH_AFTER * 2, &cfg);
        assert!(probes.iter().all(|p| p.3.is_none()), "{probes:?}");
        let theirs = SocketAddr::new(peer().ip(), fresh_port(PAIR, 1, false));
        assert!(
            probes
                .iter()
                .any(|p| p.2 == theirs && p.1 != SocketId::PRIMARY)
        );
        assert!(
            ClientConfig {
                opener_ttl: Some(0),
                ..ClientConfig::default()
            }
            .validate()
            .is_err(),
            "a TTL of 0 cannot be sent"
        );
    }

    #[test]
    fn the_hard_side_of_a_prediction_retries_with_openers_only_to_the_peers_fresh_ports() {
        let t0 = crate::tests::epoch();
        let me = hard_nat(
            Dependence::AddressAndPortDependent,
            PortAllocation::Sequential { delta: 1 },
        );
        let easy = hard_nat(
            Dependence::EndpointIndependent,
            PortAllocation::Sequential { delta: 1 },
        );
        for lower in [true, false] {
            let mut a = agent(t0, lower);
            a.set_peer_nat(t0, NatInfo::from(&easy), Some(&me), &cfg());
            assert_eq!(a.plan, Plan::PredictHard);
            let (requests, probes) = drive_unanswered(&mut a, t0, t0 + FRESH_AFTER * 2);
            // No socket of its own: its NAT maps every new destination anew anyway.
            assert!(requests.is_empty(), "{requests:?}");
            let fresh = |n| SocketAddr::new(peer().ip(), fresh_port(PAIR, n, !lower));
            let in_slot = slot(&probes, t0 + FRESH_AFTER);
            let to_fresh: Vec<Probed> = in_slot.iter().copied().filter(|p| p.2 != peer()).collect();
            // Only openers (an ordinary probe arriving at an easy Linux router before its
            // sweep would pin our mapping there), from the primary socket, to this slot's
            // fresh port and the next one's in turn, for the whole slot.
            assert!(to_fresh.len() >= 16, "{to_fresh:?}");
            assert!(
                to_fresh
                    .iter()
                    .all(|p| p.1 == SocketId::PRIMARY && p.3 == cfg().opener_ttl)
            );
            assert_eq!(to_fresh[0].2, fresh(1));
            assert_eq!(to_fresh[1].2, fresh(2));
            assert!(to_fresh.last().unwrap().0 >= t0 + FRESH_AFTER * 2 - PROBE_INTERVAL);
        }
    }

    #[test]
    fn the_easy_side_of_a_prediction_sweeps_again_from_its_fresh_socket() {
        let t0 = crate::tests::epoch();
        let me = hard_nat(
            Dependence::EndpointIndependent,
            PortAllocation::Sequential { delta: 1 },
        );
        let hard = hard_nat(
            Dependence::AddressAndPortDependent,
            PortAllocation::Sequential { delta: 1 },
        );
        let mut a = agent(t0, true);
        a.set_peer_nat(t0, NatInfo::from(&hard), Some(&me), &cfg());
        assert!(matches!(a.plan, Plan::Predict { .. }));
        let (requests, probes) = drive_unanswered(&mut a, t0, t0 + FRESH_AFTER * 2);
        let Some((opened, crate::SocketRequest::Open { id, addr })) = requests.first().copied()
        else {
            panic!("{requests:?}");
        };
        assert_eq!(opened, t0 + FRESH_AFTER);
        assert_eq!(addr.map(|a| a.port()), Some(fresh_port(PAIR, 1, true)));
        // From the moment it is open, the predicted ports (around the last one seen, 4000)
        // are swept from the fresh socket, and nothing else leaves it.
        let from_fresh: Vec<Probed> = probes.iter().copied().filter(|p| p.1 == id).collect();
        assert_eq!(from_fresh[0].0, opened);
        let span = prediction_span(cfg().prediction_window, 1) as usize;
        assert!(from_fresh.len() >= span, "{}", from_fresh.len());
        assert!(from_fresh.iter().all(|p| {
            p.2.ip() == peer().ip() && p.2.port().abs_diff(4000) <= 32 && p.3.is_none()
        }));
    }

    #[test]
    fn two_hard_sequential_ends_plan_lockstep_sweeps_of_each_others_ports() {
        let seq = |mapping, last_port, delta| NatBehavior {
            last_port,
            ..hard_nat(mapping, PortAllocation::Sequential { delta })
        };
        let a = seq(Dependence::AddressAndPortDependent, 20_008, 1);
        let b = seq(Dependence::AddressAndPortDependent, 31_000, 2);
        assert_eq!(
            plan(Some(&a), Some(&NatInfo::from(&b)), 256),
            Plan::Lockstep {
                base: 31_000,
                delta: 2,
                per_port: true,
                one_mapping: false
            }
        );
        assert_eq!(
            plan(Some(&b), Some(&NatInfo::from(&a)), 256),
            Plan::Lockstep {
                base: 20_008,
                delta: 1,
                per_port: true,
                one_mapping: false
            }
        );
        // A NAT that maps per IP makes one mapping towards the peer, not one per sweep port.
        // Its step, measured against an older mapping, may be a multiple of the real one.
        let per_ip = seq(Dependence::AddressDependent, 5_000, 3);
        assert_eq!(
            plan(Some(&a), Some(&NatInfo::from(&per_ip)), 256),
            Plan::Lockstep {
                base: 5_000,
                delta: 1,
                per_port: false,
                one_mapping: false
            }
        );
        // Behind a NAT that maps per IP, our sweep costs one mapping: it reaches below the
        // peer's last port too.
        assert_eq!(
            plan(Some(&per_ip), Some(&NatInfo::from(&a)), 256),
            Plan::Lockstep {
                base: 20_008,
                delta: 1,
                per_port: true,
                one_mapping: true
            }
        );
        let mut back = agent(crate::tests::epoch(), true);
        back.set_peer_nat(
            crate::tests::epoch(),
            NatInfo::from(&a),
            Some(&per_ip),
            &cfg(),
        );
        let t0 = crate::tests::epoch();
        let (_, probes) = drive_unanswered(&mut back, t0, t0 + Duration::from_secs(1));
        let openers: Vec<u16> = probes
            .iter()
            .filter(|p| p.3.is_some())
            .map(|p| p.2.port())
            .collect();
        let want: Vec<u16> = (20_009..20_009 + LOCKSTEP_WINDOW as u16)
            .chain((0..LOCKSTEP_BACK as u16).map(|k| 20_007 - k))
            .collect();
        assert_eq!(openers, want);
        // Random on either side: nothing to predict.
        let random = hard_nat(Dependence::AddressAndPortDependent, PortAllocation::Random);
        assert_eq!(
            plan(Some(&a), Some(&NatInfo::from(&random)), 256),
            Plan::Basic
        );
        assert_eq!(
            plan(Some(&random), Some(&NatInfo::from(&a)), 256),
            Plan::Basic
        );
    }

    /// One end of a lockstep pair, behind a sequential APDM NAT (delta 1) whose last port
    /// seen in discovery was `last_port`, driven alone over `[from, until)`: the destinations
    /// of its primary socket in the order its NAT first saw them (each a new mapping), and
    /// every probe.
    fn lockstep_end(
        lower: bool,
        peer_last_port: u16,
        from: Instant,
        until: Instant,
    ) -> (Vec<SocketAddr>, Vec<Probed>) {
        let me = hard_nat(
            Dependence::AddressAndPortDependent,
            PortAllocation::Sequential { delta: 1 },
        );
        let peer_nat = NatBehavior {
            last_port: peer_last_port,
            ..me
        };
        let mut a = agent(from, lower);
        a.set_peer_nat(from, NatInfo::from(&peer_nat), Some(&me), &cfg());
        assert!(matches!(a.plan, Plan::Lockstep { .. }));
        let (requests, probes) = drive_unanswered(&mut a, from, until);
        assert!(requests.is_empty(), "no sockets of its own: {requests:?}");
        let mut mapped: Vec<SocketAddr> = Vec::new();
        for p in &probes {
            assert_eq!(p.1, SocketId::PRIMARY);
            if !mapped.contains(&p.2) {
                mapped.push(p.2);
            }
        }
        (mapped, probes)
    }

    #[test]
    fn lockstep_sweeps_of_two_ends_meet_whatever_flows_each_made_since_discovery() {
        let t0 = crate::tests::epoch();
        let (last_l, last_h) = (20_000, 30_000);
        let until = t0 + Duration::from_secs(3);
        let (low, _) = lockstep_end(true, last_h, t0, until);
        let (high, _) = lockstep_end(false, last_l, t0, until);
        // The round's probe to the peer's address, then the sweep: a bounded number of new
        // mappings.
        assert_eq!(low.len(), 1 + LOCKSTEP_WINDOW as usize);
        assert_eq!(high.len(), 1 + LOCKSTEP_WINDOW as usize);
        // With `a` flows made by the lower end and `b` by the other since discovery, the
        // lower end's k-th new mapping has port last_l + 1 + a + k (and the other's alike):
        // some mapping of each must aim at exactly the other's port that aims back.
        let meets = |a: usize, b: usize| {
            low.iter().enumerate().any(|(i, to_high)| {
                let low_port = last_l as usize + 1 + a + i;
                high.iter().enumerate().any(|(j, to_low)| {
                    let high_port = last_h as usize + 1 + b + j;
                    usize::from(to_high.port()) == high_port
                        && usize::from(to_low.port()) == low_port
                })
            })
        };
        // Each end's round probe to the other's address is one flow already: sums below half
        // the window, less those two.
        let most = LOCKSTEP_WINDOW as usize / 2 - 3;
        for a in 0..=most {
            for b in 0..=most - a {
                assert!(meets(a, b), "offsets {a} and {b}");
            }
        }
        assert!(!meets(most + 2, most + 2), "beyond the window");
    }

    #[test]
    fn a_lockstep_round_opens_every_mapping_with_openers_first_and_probes_them_after_a_stagger() {
        let t0 = crate::tests::epoch();
        for lower in [true, false] {
            let (_, probes) = lockstep_end(lower, 30_000, t0, t0 + Duration::from_secs(4));
            let swept: Vec<Probed> = probes.iter().copied().filter(|p| p.2 != peer()).collect();
            let n = LOCKSTEP_WINDOW as usize;
            let (openers, rest) = swept.split_at(n);
            assert!(openers.iter().all(|p| p.3 == cfg().opener_ttl));
            assert!(rest.iter().all(|p| p.3.is_none()));
            // The probes go to the openers' destinations (no new mapping), in sweeps.
            assert!(rest.iter().all(|p| openers.iter().any(|o| o.2 == p.2)));
            assert_eq!(rest.len(), n * LOCKSTEP_SWEEPS as usize);
            assert_eq!(rest[0].0, openers[n - 1].0 + RETRY_STAGGER);
            assert_eq!(rest[n].0, rest[n - 1].0 + PREDICTION_SWEEP);
        }
    }

    #[test]
    fn the_next_lockstep_round_predicts_from_where_the_last_sweep_left_the_peer() {
        let t0 = crate::tests::epoch();
        let until = t0 + PROBE_INTERVAL * PROBES_PER_ROUND + RETRY_AFTER + Duration::from_secs(4);
        let (mapped, _) = lockstep_end(true, 30_000, t0, until);
        let n = LOCKSTEP_WINDOW as usize;
        // (Round 1 probes the peer's address again: a new mapping if round 0's idled out,
        // listed once here.)
        assert_eq!(mapped.len(), 1 + 2 * n, "{mapped:?}");
        let ports = |r: std::ops::Range<usize>| -> Vec<u16> {
            let mut v: Vec<u16> = mapped[r].iter().map(|a| a.port()).collect();
            v.sort_unstable();
            v
        };
        let first: Vec<u16> = (0..n as u16).map(|i| 30_001 + i).collect();
        let second: Vec<u16> = (0..n as u16).map(|i| 30_001 + n as u16 + i).collect();
        assert_eq!(ports(1..1 + n), first);
        assert_eq!(ports(1 + n..1 + 2 * n), second);
    }

    #[test]
    fn against_a_nat_that_maps_per_ip_a_lockstep_sweep_covers_either_side_of_its_last_port() {
        let t0 = crate::tests::epoch();
        let me = hard_nat(
            Dependence::AddressAndPortDependent,
            PortAllocation::Sequential { delta: 1 },
        );
        let per_ip = NatBehavior {
            last_port: 30_000,
            ..hard_nat(
                Dependence::AddressDependent,
                PortAllocation::Sequential { delta: 3 },
            )
        };
        for lower in [true, false] {
            let mut a = agent(t0, lower);
            a.set_peer_nat(t0, NatInfo::from(&per_ip), Some(&me), &cfg());
            let (_, probes) = drive_unanswered(&mut a, t0, t0 + Duration::from_secs(1));
            let mut ports: Vec<u16> = probes
                .iter()
                .filter(|p| p.2 != peer() && p.3.is_some())
                .map(|p| p.2.port())
                .collect();
            // Nearest first, either side, every port (its step may be a multiple of 1).
            assert_eq!(&ports[..4], &[30_001, 29_999, 30_002, 29_998]);
            ports.sort_unstable();
            let half = LOCKSTEP_WINDOW as u16 / 2;
            let every: Vec<u16> = (30_000 - half..=30_000 + half)
                .filter(|p| *p != 30_000)
                .collect();
            assert_eq!(ports, every);
        }
    }
}
