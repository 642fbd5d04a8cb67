//! An arbitrary network and script through the simulator (`pierce-sim`), checked against the
//! oracle: 2–4 clients behind NATs from the sim's catalogue (or open, or beside another
//! client), on links with bounded latency, jitter, loss, duplication and reordering; then a
//! short script of group joins, leaves and destroys (two overlapping groups), sends on every
//! channel (some with deadlines, some fragmented, some to hosts that are not peers), NAT
//! rebindings and roaming (sessions and direct paths must follow, after path validation) and
//! time steps; then a drain until every connection is idle.
//!
//! Invariants:
//! - no panic anywhere (core debug assertions included), no busy loop, no step cap;
//! - integrity: every `PeerMessage` is a payload the script sent, intact, from the host that
//!   sent it, to the host it was sent to, on its channel; a send only succeeds towards a host
//!   the server has paired with the sender (nothing reaches a non-member);
//! - at most once on every channel; in send order on the ordered and sequenced channels;
//! - the server holds exactly the pairs its groups imply; per peer, queued bytes stay under
//!   the send buffer limit and unacknowledged messages never exceed those sent;
//! - for **stable** reliable messages (both ends connected, the pair formed on the server
//!   from the send to the end, and neither end saw a membership change of the pair after the
//!   send): delivered exactly once, or (deadline messages only) reported expired, never
//!   delivered after expiring;
//! - the oracle, in punch_matrix runs (a sixteenth of the inputs; at a quarter, their 20-80 s
//!   of simulated time halved the target's throughput): `sim/tests/punch_matrix.rs`'s
//!   setup exactly (two clients on default settings behind a pair of NATs from
//!   `NatConfig::all_types()`, or open vs full cone, on broadband links; connect within 10 s,
//!   one group, a learns of b within 5 s, a sends a message) with an arbitrary seed and
//!   arbitrary traffic and time steps after it: a pair that simultaneous punching alone can
//!   open (`direct_path_possible`) is direct 8 s after that message, punch_matrix's budget
//!   for those pairs. Pairs that need port prediction or birthday probing (punch_matrix gives
//!   them 50 s) are not asserted: 50 s of spraying per input is too slow for a fuzzer.
//!
//! Elsewhere clients run, at the fuzzer's choice, birthday probing and port prediction on a
//! small scale (the same plans; the defaults' 256 sockets and 1024 probes per round cost tens
//! of milliseconds per input), no birthday probing, no NAT discovery, or relay only. Costs
//! are capped so that one input runs in a few
//! milliseconds: at most 40 script steps and 8 s of script time (steps of up to 1.5 s), at
//! most 60 s of drain, a step cap per run.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pierce_core::{
    Channel, ClientConfig, ClientEvent, GroupId, HostId, MessageId, Path, SendOptions,
};
use pierce_sim::{
    Action, Edge, GilbertElliott, LinkConfig, LinkProfile, Loss, NatConfig, Scenario, Sim,
    direct_path_possible,
};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
/// punch_matrix: "both connect" within 10 s.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// punch_matrix: 8 s after the first message ("Punching rounds last 3 s; give it two").
const PUNCH_BUDGET: Duration = Duration::from_secs(8);
const MAX_OPS: usize = 40;
const MAX_SCRIPT_TIME: Duration = Duration::from_secs(8);
const MAX_DRAIN: Duration = Duration::from_secs(60);
const MIN_DRAIN: Duration = Duration::from_secs(1);
/// Steps one `run_*` call may take (the sim's default is 2 million).
const STEP_CAP: u64 = 200_000;
const TAG_CHECK: u32 = 0x5eed_cafe;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum EdgeKind {
    Open,
    /// `NatConfig::all_types()[i % 27]`, as punch_matrix uses them.
    Catalogue(u8),
    /// A named preset with optional modifiers.
    Preset {
        which: u8,
        idle_s: Option<u8>,
        hairpin: bool,
    },
    /// A home router (a preset) behind a carrier-grade NAT.
    Cgnat(u8),
    /// On the same inside network as an earlier client (if that one has a NAT of its own).
    Beside(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum LinkKind {
    /// punch_matrix's link.
    Broadband,
    Perfect,
    Lan,
    Wifi,
    Custom {
        latency_ms: u8,
        jitter_ms: u8,
        loss_pct: u8,
        burst: u8,
        dup_pct: u8,
        reorder_pct: u8,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct ClientSpec {
    edge: EdgeKind,
    link: LinkKind,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Join {
        client: u8,
        group: bool,
    },
    Leave {
        client: u8,
        group: bool,
    },
    Destroy {
        group: bool,
    },
    Send {
        from: u8,
        to: u8,
        channel: u8,
        len: u16,
        deadline_ms: Option<u16>,
    },
    Burst {
        from: u8,
        to: u8,
        count: u8,
    },
    Advance {
        ms: u16,
    },
    /// Every NAT on the client's path forgets its bindings (an open host re-binds its
    /// socket): sessions and direct paths must follow the new mapping (path validation).
    Rebind {
        client: u8,
    },
    /// The client's outermost NAT (or the open host) gets a new public IP.
    Roam {
        client: u8,
    },
}

/// The defaults, but every pair ends with its session: this target's model has no detached
/// mode (`pair_lifetime`; pierce-sim's serverless tests cover it).
fn base_config() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.pair_lifetime = Duration::ZERO;
    c
}

/// Client settings outside punch_matrix runs (those run the defaults).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Traversal {
    /// Taken as [`Traversal::Small`]: the defaults' 256 birthday sockets and 1024 probes per
    /// round make one input cost tens of milliseconds, and the plans are the same at any
    /// scale.
    Defaults,
    /// Birthday probing and port prediction on a small scale (16 sockets, 64 probes, a
    /// window of 8): the same plans at a fraction of the simulation cost.
    Small,
    /// No birthday probing.
    NoBirthday,
    /// No NAT discovery (so no prediction or birthday plans).
    NoDiscovery,
    /// Relay only.
    RelayOnly,
}

impl Traversal {
    fn config(self) -> ClientConfig {
        let mut c = base_config();
        match self {
            Self::Defaults => {}
            Self::Small => {
                c.birthday_sockets = 16;
                c.birthday_probes = 64;
                c.prediction_window = 8;
            }
            Self::NoBirthday => {
                c.birthday_sockets = 0;
                c.birthday_probes = 64;
            }
            Self::NoDiscovery => c.nat_discovery = false,
            Self::RelayOnly => c.direct_paths = false,
        }
        c
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u16,
    /// Below 16 (a sixteenth of the byte's values): a punch_matrix run of the pair
    /// `matrix_pairs()[pair]` with arbitrary traffic, checked against the oracle.
    mode: u8,
    pair: u16,
    traversal: Traversal,
    extra_clients: u8,
    clients: [ClientSpec; 4],
    ops: Vec<Op>,
}

fn preset(which: u8) -> NatConfig {
    match which % 7 {
        0 => NatConfig::full_cone(),
        1 => NatConfig::restricted_cone(),
        2 => NatConfig::port_restricted(),
        3 => NatConfig::address_dependent(),
        4 => NatConfig::symmetric(),
        5 => NatConfig::symmetric_sequential(),
        _ => NatConfig::linux(),
    }
}

fn link(kind: LinkKind) -> LinkProfile {
    match kind {
        LinkKind::Broadband => LinkProfile::broadband(),
        LinkKind::Perfect => LinkProfile::perfect(),
        LinkKind::Lan => LinkProfile::lan(),
        LinkKind::Wifi => LinkProfile::wifi(),
        LinkKind::Custom {
            latency_ms,
            jitter_ms,
            loss_pct,
            burst,
            dup_pct,
            reorder_pct,
        } => {
            // Within bounds: up to 100 ms ± 30 ms, 10 % loss (bursts of up to 4), 5 %
            // duplication, 10 % reordering.
            let rate = f64::from(loss_pct % 11) / 100.0;
            let loss = match burst % 5 {
                0 => Loss::Random(rate),
                b => Loss::GilbertElliott(GilbertElliott::simple(rate, f64::from(b))),
            };
            LinkProfile::symmetric(LinkConfig {
                latency: MS * u32::from(latency_ms % 101),
                jitter: MS * u32::from(jitter_ms % 31),
                loss,
                duplicate: f64::from(dup_pct % 6) / 100.0,
                reorder: f64::from(reorder_pct % 11) / 100.0,
                reorder_delay: 20 * MS,
                ..LinkConfig::default()
            })
        }
    }
}

/// What a sent message was, and what became of it.
struct Msg {
    from: usize,
    to: usize,
    channel: Channel,
    len: usize,
    sent_at: Duration,
    deadline: bool,
    delivered: Option<Duration>,
    expired: Option<Duration>,
}

/// Something that ends a pair's stability at one end.
#[derive(Clone, Copy)]
enum Teardown {
    All(Duration),
    Peer(Duration, HostId),
}

/// The channels that deliver every message exactly once (the sequenced one may skip).
fn is_reliable(channel: Channel) -> bool {
    channel == Channel::RELIABLE_ORDERED || channel == Channel::RELIABLE_UNORDERED
}

fn pair_of(a: HostId, b: HostId) -> (HostId, HostId) {
    (a.min(b), a.max(b))
}

struct World {
    sim: Sim,
    names: Vec<String>,
    hosts: Vec<Option<HostId>>,
    disconnected: Vec<bool>,
    cursors: Vec<usize>,
    groups: [Option<GroupId>; 2],
    msgs: Vec<Msg>,
    /// (from, to, message id) → the latest message sent with that id.
    ids: BTreeMap<(usize, usize, MessageId), usize>,
    teardowns: Vec<Vec<Teardown>>,
    /// Pairs the server has formed at some point.
    ever_paired: BTreeSet<(HostId, HostId)>,
    /// Pairs formed at the last observation, and when each was last seen absent.
    paired_now: BTreeSet<(HostId, HostId)>,
    last_absent: BTreeMap<(HostId, HostId), Duration>,
    /// Last message delivered per (from, to, channel), for order checks.
    last_delivered: BTreeMap<(usize, usize, u8), usize>,
    /// A rebinding or roaming happened (the oracle's budget then does not apply).
    moved: bool,
}

impl World {
    fn now(&self) -> Duration {
        self.sim.elapsed()
    }

    fn client_of(&self, host: HostId) -> Option<usize> {
        self.hosts.iter().position(|h| *h == Some(host))
    }

    fn live(&self, c: usize) -> Option<HostId> {
        self.hosts[c].filter(|_| !self.disconnected[c])
    }

    /// Applies a rebinding or roaming now.
    fn act(&mut self, action: Action) {
        if let Err(e) = self.sim.apply(action) {
            panic!("sim: {e}\n{}", self.tail());
        }
        self.moved = true;
    }

    /// Runs the sim; any step cap or busy loop is a finding.
    fn run(&mut self, d: Duration) {
        if let Err(e) = self.sim.run_for(d) {
            panic!("sim: {e}\n{}", self.tail());
        }
        self.observe();
    }

    fn tail(&self) -> String {
        let log = self.sim.log();
        log[log.len().saturating_sub(30)..].join("\n")
    }

    /// Reads new events, and the server's pairs, checking as it goes.
    fn observe(&mut self) {
        for c in 0..self.names.len() {
            let events: Vec<(Duration, ClientEvent)> = self
                .sim
                .client_events(&self.names[c])
                .skip(self.cursors[c])
                .map(|(t, e)| (t, e.clone()))
                .collect();
            self.cursors[c] += events.len();
            for (t, e) in events {
                self.on_event(c, t, e);
            }
        }
        self.observe_pairs();
        self.check_memory();
    }

    /// Per peer, queued bytes stay under the send buffer limit and unacknowledged messages
    /// never exceed what was sent.
    fn check_memory(&self) {
        let limit = ClientConfig::default().max_send_buffer_per_peer;
        for name in &self.names {
            let Some(client) = self.sim.try_client(name) else {
                continue;
            };
            for peer in client.peers() {
                if let Some(s) = client.peer_stats(peer) {
                    assert!(s.queued_bytes <= limit, "{name}: {s:?}");
                    assert!(s.unacked as u64 <= s.messages_out, "{name}: {s:?}");
                }
            }
        }
    }

    fn observe_pairs(&mut self) {
        let now = self.now();
        let server = self.sim.server();
        let mut pairs = BTreeSet::new();
        for g in self.groups.iter().flatten() {
            if let Some(members) = server.group_members(*g) {
                for (i, a) in members.iter().enumerate() {
                    for b in &members[i + 1..] {
                        pairs.insert(pair_of(*a, *b));
                    }
                }
            }
        }
        let stats = self.sim.server_stats();
        assert_eq!(
            stats.pairs,
            pairs.len() as u64,
            "the server holds {} pairs, its groups imply {pairs:?}",
            stats.pairs
        );
        for p in self.paired_now.difference(&pairs) {
            self.last_absent.insert(*p, now);
        }
        for p in &pairs {
            if !self.ever_paired.contains(p) || !self.paired_now.contains(p) {
                self.last_absent.insert(*p, now);
            }
        }
        self.ever_paired.extend(pairs.iter().copied());
        self.paired_now = pairs;
    }

    fn on_event(&mut self, c: usize, t: Duration, e: ClientEvent) {
        match e {
            ClientEvent::Connected { host_id, .. } => {
                assert!(self.hosts[c].is_none(), "{} connected twice", self.names[c]);
                self.hosts[c] = Some(host_id);
            }
            ClientEvent::Disconnected { .. } => {
                self.disconnected[c] = true;
                self.teardowns[c].push(Teardown::All(t));
            }
            ClientEvent::MemberLeft { member, .. } => {
                if Some(member) == self.hosts[c] {
                    self.teardowns[c].push(Teardown::All(t));
                } else {
                    self.teardowns[c].push(Teardown::Peer(t, member));
                }
            }
            ClientEvent::GroupDestroyed { .. } => self.teardowns[c].push(Teardown::All(t)),
            ClientEvent::PeerDropped { peer, reason } => {
                panic!(
                    "{} dropped peer {peer}: {reason:?} (the script never breaks a limit)",
                    self.names[c]
                );
            }
            ClientEvent::PeerMessage {
                from,
                channel,
                payload,
            } => self.on_delivery(c, t, from, channel, &payload),
            ClientEvent::MessageExpired {
                peer, message_id, ..
            } => {
                let to = self
                    .client_of(peer)
                    .unwrap_or_else(|| panic!("MessageExpired for unknown host {peer}"));
                let Some(&tag) = self.ids.get(&(c, to, message_id)) else {
                    panic!(
                        "{}: MessageExpired for {message_id:?} to {peer}, never sent",
                        self.names[c]
                    );
                };
                let m = &mut self.msgs[tag];
                assert!(m.expired.is_none(), "message {tag} expired twice");
                assert!(
                    m.channel == Channel::RELIABLE_ORDERED
                        || m.channel == Channel::RELIABLE_UNORDERED
                        || m.channel == Channel::RELIABLE_SEQUENCED,
                    "message {tag} on {} reported expired",
                    m.channel
                );
                m.expired = Some(t);
            }
            _ => {}
        }
    }

    fn on_delivery(&mut self, c: usize, t: Duration, from: HostId, channel: Channel, p: &[u8]) {
        let me = self.names[c].clone();
        assert!(p.len() >= 8, "{me}: short payload {p:?}");
        let tag = u32::from_le_bytes(p[..4].try_into().expect("4 bytes"));
        let check = u32::from_le_bytes(p[4..8].try_into().expect("4 bytes"));
        assert_eq!(check, tag ^ TAG_CHECK, "{me}: corrupt payload header");
        let tag = tag as usize;
        assert!(tag < self.msgs.len(), "{me}: unknown message {tag}");
        let sender = self.client_of(from);
        let m = &self.msgs[tag];
        let intact = p.len() == m.len
            && p[8..]
                .iter()
                .enumerate()
                .all(|(i, b)| *b == tag.wrapping_add(i) as u8);
        assert!(intact, "{me}: message {tag} arrived corrupted");
        assert_eq!(m.to, c, "message {tag} delivered to the wrong host ({me})");
        assert_eq!(
            sender,
            Some(m.from),
            "{me}: message {tag} reported from {from}"
        );
        assert_eq!(
            m.channel, channel,
            "{me}: message {tag} on the wrong channel"
        );
        assert!(m.delivered.is_none(), "{me}: message {tag} delivered twice");
        let (a, b) = (
            self.hosts[m.from].expect("sent"),
            self.hosts[c].expect("receiving"),
        );
        assert!(
            self.ever_paired.contains(&pair_of(a, b)),
            "{me}: message {tag} from a host the server never paired it with"
        );
        if let Some(e) = m.expired.filter(|e| t > *e) {
            assert!(
                !self.is_stable(tag),
                "{me}: message {tag} delivered at {t:?} after it expired at {e:?} (stable pair)"
            );
        }
        let ordered = [
            Channel::RELIABLE_ORDERED,
            Channel::RELIABLE_SEQUENCED,
            Channel::UNRELIABLE_SEQUENCED,
        ];
        if ordered.contains(&channel) {
            let key = (m.from, c, channel.0);
            if let Some(&last) = self.last_delivered.get(&key) {
                assert!(
                    last < tag,
                    "{me}: message {tag} on {channel} delivered after {last}"
                );
            }
            self.last_delivered.insert(key, tag);
        }
        self.msgs[tag].delivered = Some(t);
    }

    /// Both ends connected, the pair formed on the server since before the send, and no
    /// membership change of the pair at either end since.
    fn is_stable(&self, tag: usize) -> bool {
        let m = &self.msgs[tag];
        let (Some(a), Some(b)) = (self.live(m.from), self.live(m.to)) else {
            return false;
        };
        let pair = pair_of(a, b);
        if !self.paired_now.contains(&pair)
            || self.last_absent.get(&pair).is_some_and(|t| *t >= m.sent_at)
        {
            return false;
        }
        let torn = |c: usize, other: HostId| {
            self.teardowns[c].iter().any(|td| match *td {
                Teardown::All(t) => t >= m.sent_at,
                Teardown::Peer(t, h) => t >= m.sent_at && h == other,
            })
        };
        !torn(m.from, b) && !torn(m.to, a)
    }

    fn join(&mut self, c: usize, g: usize) {
        let Some(host) = self.live(c) else { return };
        let existing = self.groups[g].filter(|g| self.sim.server().group_members(*g).is_some());
        match existing {
            Some(id) => {
                if !self
                    .sim
                    .server()
                    .group_members(id)
                    .unwrap_or(&[])
                    .contains(&host)
                    && self.sim.server().clients().any(|h| h == host)
                {
                    let r = self.sim.with_server(|s, t| s.join_group(t, id, host));
                    assert!(r.is_ok(), "join_group: {r:?}");
                }
            }
            None => {
                if self.sim.server().clients().any(|h| h == host) {
                    let r = self.sim.with_server(|s, t| s.create_group(t, &[host]));
                    self.groups[g] = Some(r.expect("create_group"));
                }
            }
        }
    }

    fn leave(&mut self, c: usize, g: usize) {
        let (Some(host), Some(id)) = (self.hosts[c], self.groups[g]) else {
            return;
        };
        if self
            .sim
            .server()
            .group_members(id)
            .is_some_and(|m| m.contains(&host))
        {
            let r = self.sim.with_server(|s, t| s.leave_group(t, id, host));
            assert!(r.is_ok(), "leave_group: {r:?}");
        }
    }

    fn destroy(&mut self, g: usize) {
        if let Some(id) = self.groups[g].take()
            && self.sim.server().group_members(id).is_some()
        {
            let r = self.sim.with_server(|s, t| s.destroy_group(t, id));
            assert!(r.is_ok(), "destroy_group: {r:?}");
        }
    }

    fn send(
        &mut self,
        from: usize,
        to: usize,
        channel: Channel,
        len: usize,
        deadline: Option<Duration>,
    ) {
        let (Some(_), Some(peer)) = (self.live(from), self.hosts[to]) else {
            return;
        };
        if self.sim.try_client(&self.names[from]).is_none() {
            return;
        }
        let tag = self.msgs.len();
        let len = len.max(8);
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(&(tag as u32).to_le_bytes());
        payload.extend_from_slice(&(tag as u32 ^ TAG_CHECK).to_le_bytes());
        payload.extend((0..len - 8).map(|i| tag.wrapping_add(i) as u8));
        let result = self.sim.with_client(&self.names[from], |cl, t| {
            let options = SendOptions {
                deadline: deadline.map(|d| t + d),
                ..SendOptions::default()
            };
            cl.send_with(t, peer, channel, &payload, options)
        });
        let Ok(id) = result else { return };
        let me = self.hosts[from].expect("live");
        assert!(
            self.ever_paired.contains(&pair_of(me, peer)),
            "{} could send to {peer}, which the server never paired it with",
            self.names[from]
        );
        self.ids.insert((from, to, id), tag);
        let sent_at = self.now();
        self.msgs.push(Msg {
            from,
            to,
            channel,
            len,
            sent_at,
            deadline: deadline.is_some(),
            delivered: None,
            expired: None,
        });
    }

    /// Every stable reliable message is delivered or reported expired (an expiry is
    /// reported once the peer acknowledged the floor that covers it, which may take a few
    /// retransmissions after the connection looks idle).
    fn resolved(&self) -> bool {
        (0..self.msgs.len()).all(|tag| {
            let m = &self.msgs[tag];
            !is_reliable(m.channel)
                || m.delivered.is_some()
                || m.expired.is_some()
                || !self.is_stable(tag)
        })
    }

    /// Every connected client knows exactly the peers the server paired it with, every
    /// connection between them is idle, and every stable reliable message is resolved.
    fn quiet(&self) -> bool {
        if !self.resolved() {
            return false;
        }
        for c in 0..self.names.len() {
            let Some(me) = self.live(c) else { continue };
            let Some(client) = self.sim.try_client(&self.names[c]) else {
                continue;
            };
            if !client.is_connected() {
                continue;
            }
            let want: BTreeSet<HostId> = self
                .paired_now
                .iter()
                .filter_map(|&(a, b)| {
                    if a == me {
                        Some(b)
                    } else if b == me {
                        Some(a)
                    } else {
                        None
                    }
                })
                .collect();
            let have: BTreeSet<HostId> = client.peers().collect();
            if want != have {
                return false;
            }
            for p in have {
                if client
                    .peer_stats(p)
                    .is_some_and(|s| s.unacked > 0 || s.queued_bytes > 0)
                {
                    return false;
                }
            }
        }
        true
    }
}

/// The clients of an arbitrary (non-matrix) network, named c0, c1, ...
fn build_clients(mut scenario: Scenario, specs: &[ClientSpec]) -> Scenario {
    let mut own_nat = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let name = format!("c{i}");
        let edge = match spec.edge {
            EdgeKind::Beside(o) if i > 0 && own_nat[usize::from(o) % i] => {
                let o = usize::from(o) % i;
                scenario = scenario
                    .client_beside(&name, format!("c{o}"))
                    .host_link(&name, link(spec.link));
                own_nat.push(false);
                continue;
            }
            EdgeKind::Open | EdgeKind::Beside(_) => Edge::Open,
            EdgeKind::Catalogue(i) => {
                let all = NatConfig::all_types();
                Edge::nat(all[usize::from(i) % all.len()].1.clone())
            }
            EdgeKind::Preset {
                which,
                idle_s,
                hairpin,
            } => {
                let mut c = preset(which);
                if let Some(s) = idle_s {
                    c = c.with_idle_timeout(SECOND * (8 + u32::from(s % 23)));
                }
                Edge::nat(c.with_hairpinning(hairpin))
            }
            EdgeKind::Cgnat(w) => Edge::cgnat(preset(w)),
        };
        own_nat.push(edge != Edge::Open);
        scenario = scenario
            .client(&name, edge)
            .host_link(&name, link(spec.link));
    }
    scenario
}

/// The pairs punch_matrix asserts go direct within 8 s of their introduction: both behind
/// NATs from `NatConfig::all_types()` that simultaneous punching alone can open
/// (`direct_path_possible`), plus open vs full cone (its second test). Pairs that need port
/// prediction or birthday probing get 50 s there: too slow for a fuzzer.
fn matrix_pairs() -> &'static [(Edge, Edge)] {
    static PAIRS: OnceLock<Vec<(Edge, Edge)>> = OnceLock::new();
    PAIRS.get_or_init(|| {
        let types = NatConfig::all_types();
        let mut pairs = vec![(Edge::Open, Edge::nat(NatConfig::full_cone()))];
        for (i, (_, a)) in types.iter().enumerate() {
            for (_, b) in types.iter().skip(i) {
                let (a, b) = (Edge::nat(a.clone()), Edge::nat(b.clone()));
                if direct_path_possible(&a, &b) {
                    pairs.push((a, b));
                }
            }
        }
        pairs
    })
}

fuzz_target!(|input: Input| {
    let matrix = input.mode < 16;
    let mut scenario = Scenario::new(u64::from(input.seed))
        .link(LinkProfile::broadband())
        .step_cap(STEP_CAP);
    let n = if matrix {
        // punch_matrix's setup exactly: two clients behind the pair's NATs, broadband links,
        // default settings.
        let pairs = matrix_pairs();
        let (a, b) = &pairs[usize::from(input.pair) % pairs.len()];
        scenario = scenario
            .client("c0", a.clone())
            .client("c1", b.clone())
            .client_config(base_config());
        2
    } else {
        let n = 2 + usize::from(input.extra_clients % 3);
        scenario = build_clients(scenario, &input.clients[..n]);
        // The defaults' 256 birthday sockets and 1024 probes per round would make an input
        // cost tens of milliseconds; the plans are the same at a small scale.
        let traversal = match input.traversal {
            Traversal::Defaults => Traversal::Small,
            t => t,
        };
        scenario = scenario.client_config(traversal.config());
        n
    };
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let mut w = World {
        sim: scenario.build(),
        names: names.clone(),
        hosts: vec![None; n],
        disconnected: vec![false; n],
        cursors: vec![0; n],
        groups: [None, None],
        msgs: Vec::new(),
        ids: BTreeMap::new(),
        teardowns: vec![Vec::new(); n],
        ever_paired: BTreeSet::new(),
        paired_now: BTreeSet::new(),
        last_absent: BTreeMap::new(),
        last_delivered: BTreeMap::new(),
        moved: false,
    };

    // Connect (punch_matrix's budget).
    let r = w.sim.run_until(
        |s| names.iter().all(|c| s.connected(c).is_some()),
        CONNECT_LIMIT,
    );
    if let Err(pierce_sim::SimError::StepCap { .. } | pierce_sim::SimError::BusyLoop { .. }) = r {
        panic!("sim: {}", r.expect_err("matched"));
    }
    w.observe();

    if matrix && w.live(0).is_some() && w.live(1).is_some() {
        // punch_matrix: one group, a learns of b (within 5 s), a sends one message.
        w.join(0, 0);
        w.join(1, 0);
        w.observe_pairs();
        let hb = w.hosts[1].expect("live");
        let r = w.sim.run_until(
            |s| s.client("c0").peers().any(|p| p == hb),
            Duration::from_secs(5),
        );
        if let Err(pierce_sim::SimError::StepCap { .. } | pierce_sim::SimError::BusyLoop { .. }) = r
        {
            panic!("sim: {}", r.expect_err("matched"));
        }
        w.observe();
        w.send(0, 1, Channel::RELIABLE_ORDERED, 16, None);
    }

    // The script (in a punch_matrix run: traffic and time only).
    let start = w.now();
    for op in input.ops.iter().take(MAX_OPS) {
        if w.now() - start >= MAX_SCRIPT_TIME {
            break;
        }
        if matrix && !matches!(op, Op::Send { .. } | Op::Burst { .. } | Op::Advance { .. }) {
            continue;
        }
        match *op {
            Op::Join { client, group } => w.join(usize::from(client) % n, usize::from(group)),
            Op::Leave { client, group } => w.leave(usize::from(client) % n, usize::from(group)),
            Op::Destroy { group } => w.destroy(usize::from(group)),
            Op::Send {
                from,
                to,
                channel,
                len,
                deadline_ms,
            } => {
                let channel = Channel(channel % 5);
                let len = if len % 8 == 0 {
                    usize::from(len % 4000)
                } else {
                    usize::from(len % 300)
                };
                let deadline = deadline_ms.map(|d| MS * u32::from(d % 3000));
                w.send(
                    usize::from(from) % n,
                    usize::from(to) % n,
                    channel,
                    len,
                    deadline,
                );
            }
            Op::Burst { from, to, count } => {
                for i in 0..count % 16 {
                    let channel = Channel(i % 2);
                    w.send(
                        usize::from(from) % n,
                        usize::from(to) % n,
                        channel,
                        100,
                        None,
                    );
                }
            }
            Op::Advance { ms } => w.run(MS * u32::from(ms % 1501)),
            Op::Rebind { client } => {
                let name = names[usize::from(client) % n].clone();
                w.act(Action::rebind(name));
            }
            Op::Roam { client } => {
                let name = names[usize::from(client) % n].clone();
                w.act(Action::roam(name));
            }
        }
        w.observe_pairs();
    }
    let script_end = w.now();

    // Drain: until quiet (at least MIN_DRAIN; in a punch-matrix setup, until punch_matrix's
    // budget has passed since the first message of the pair).
    w.run(MIN_DRAIN);
    while w.now() - script_end < MAX_DRAIN {
        let punch_pending = matrix
            && w.msgs
                .first()
                .is_some_and(|m| m.sent_at + PUNCH_BUDGET > w.now());
        if !punch_pending && w.quiet() {
            break;
        }
        w.run(SECOND);
    }
    let quiet = w.quiet();

    for tag in 0..w.msgs.len() {
        let m = &w.msgs[tag];
        if !is_reliable(m.channel) || !w.is_stable(tag) {
            continue;
        }
        assert!(
            m.delivered.is_some() || (m.deadline && m.expired.is_some()),
            "stable message {tag} ({} -> {}, {}, sent at {:?}) neither delivered nor expired \
             after {:?} (quiet: {quiet})\n{}",
            w.names[m.from],
            w.names[m.to],
            m.channel,
            m.sent_at,
            w.now(),
            w.tail()
        );
        assert!(
            m.deadline || m.expired.is_none(),
            "stable message {tag} without a deadline expired"
        );
    }

    // The oracle, exactly where punch_matrix asserts it (no rebinding or roaming there).
    if matrix && !w.moved {
        check_direct(&w);
    }
});

/// Two clients whose pair formed once and stayed formed, with no teardown at either end,
/// and a message sent at least `PUNCH_BUDGET` before the end: the sender's path is direct.
fn check_direct(w: &World) {
    let (Some(a), Some(b)) = (w.live(0), w.live(1)) else {
        return;
    };
    let pair = pair_of(a, b);
    if !w.paired_now.contains(&pair) || w.teardowns.iter().any(|t| !t.is_empty()) {
        return;
    }
    // Formed once: last seen absent when it formed, never after.
    let Some(formed) = w.last_absent.get(&pair).copied() else {
        return;
    };
    let end = w.now();
    let Some(m) = w
        .msgs
        .iter()
        .find(|m| m.sent_at >= formed && m.sent_at + PUNCH_BUDGET <= end)
    else {
        return;
    };
    let (from, to) = (m.from, m.to);
    let peer = w.hosts[to].expect("live");
    let path = w
        .sim
        .client(&w.names[from])
        .peer_stats(peer)
        .map(|s| s.path);
    assert!(
        matches!(path, Some(Path::Direct(_))),
        "the oracle says {:?} <-> {:?} is punchable, but after {:?} {} -> {} is on {path:?}\n{}",
        w.sim.edge("c0"),
        w.sim.edge("c1"),
        end - m.sent_at,
        w.names[from],
        w.names[to],
        w.tail()
    );
}
