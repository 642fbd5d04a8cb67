//! A cluster of three server nodes sharing one directory (issue #19), in the simulator
//! (`Scenario::directory`: a `MemoryDirectory` 1 ms away from every node, each way): clients
//! behind assorted NATs dial a seeded node first with the whole node list, and join rooms.
//!
//! - **Placement**: every room ends on exactly one node, with every member on that node, and
//!   every member gets every message of every other, once and in order (paths as the oracle
//!   says).
//! - **Drain**: the node holding a room drains mid-stream; the members are redirected to one
//!   other node, nothing is lost, the drained node ends with no clients.
//! - **Crash** of the node of a relay-only room: the members time out, fail over, the room
//!   forms again on another node; every message delivered or reported expired.
//! - **Directory outage** mid-stream: the room goes on; a join that needs the directory fails
//!   with `DirectoryUnavailable`; after it the nodes are registered again.
//! - **Chaos**: seeded node crashes and restarts, drains and directory outages (and wipes)
//!   over a run, with invariants checked every 100 ms and at the end.
//!
//! Messages carry the receiver's host id and a number per (sender id, receiver id), so a
//! message is checked against the pair it was sent on even if an id changes.
//!
//! ```text
//! cargo test -p pierce-sim --test cluster
//! PIERCE_SIM_SEED=7 cargo test -p pierce-sim --test cluster -- --nocapture   # one seed
//! PIERCE_SIM_SEEDS=200 PIERCE_SIM_SEED_START=1000 cargo test --release -p pierce-sim \
//!     --test cluster cluster_chaos -- --nocapture
//! ```
#![allow(clippy::field_reassign_with_default)] // the configs are #[non_exhaustive]

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use pierce_core::{
    Channel, ClientConfig, ClientEvent, HostId, MessageId, Path, PeerDropReason, RoomError, RoomOp,
    RoomOptions, RoomsConfig, SecretKey, Server, ServerConfig,
};
use pierce_sim::{
    Action, Edge, LinkProfile, NatConfig, SERVER, Scenario, Sim, direct_path_possible, seed_or,
    substream,
};
use rand::Rng;
use rand::seq::SliceRandom;

const SECOND: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(20);
const NODE_B: &str = "node-b";
const NODE_C: &str = "node-c";
const NODES: [&str; 3] = [SERVER, NODE_B, NODE_C];
/// The directory's one-way latency from every node.
const DIR_LATENCY: Duration = Duration::from_millis(1);
const NAMES: [&str; 8] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];

fn server_config() -> ServerConfig {
    let mut s = ServerConfig::new(SecretKey::from_bytes([0x19; 32]));
    s.rooms = Some(RoomsConfig::default());
    s
}

/// Eight edges, one of each kind (client `i` gets `edges()[i]`). No `NatConfig::linux`:
/// against a port-restricted NAT it trips a known core punching bug (chaos.rs,
/// `a_linux_router_and_a_port_restricted_nat_go_direct`), not what this file tests.
fn edges() -> Vec<Edge> {
    vec![
        Edge::nat(NatConfig::port_restricted()),
        Edge::nat(NatConfig::restricted_cone()),
        Edge::nat(NatConfig::full_cone()),
        Edge::nat(NatConfig::symmetric()),
        Edge::Open,
        Edge::cgnat(NatConfig::port_restricted()),
        Edge::nat(NatConfig::address_dependent()),
        Edge::cgnat(NatConfig::full_cone()),
    ]
}

#[derive(Clone)]
struct Member {
    name: &'static str,
    edge: Edge,
    config: ClientConfig,
    /// The node it dials first.
    first: &'static str,
    room: &'static str,
}

fn build(seed: u64, members: &[Member], link: LinkProfile) -> Sim {
    let mut sc = Scenario::new(seed)
        .server_config(server_config())
        .cluster_node(NODE_B)
        .cluster_node(NODE_C)
        .directory(DIR_LATENCY)
        .link(link);
    for m in members {
        sc = sc
            .client_with(m.name, m.edge.clone(), m.config.clone())
            .first_node(m.name, m.first);
    }
    sc.build()
}

/// The rooms each running node holds: room → [(node, member ids)].
type Homes = BTreeMap<String, Vec<(&'static str, BTreeSet<HostId>)>>;

fn homes(sim: &Sim) -> Homes {
    let mut out: Homes = BTreeMap::new();
    for node in NODES {
        if let Some(s) = sim.try_server_node(node) {
            for r in s.rooms() {
                let members = r.members.iter().copied().collect();
                out.entry(r.name).or_default().push((node, members));
            }
        }
    }
    out
}

/// Room `room` is on exactly one node, with exactly `names` as members, each connected to
/// that node and knowing every other as a peer. Returns the node.
fn formed(sim: &Sim, room: &str, names: &[&str]) -> Option<&'static str> {
    let homes = homes(sim);
    let [(node, members)] = homes.get(room)?.as_slice() else {
        return None;
    };
    let addr = sim.host_addr(node);
    let ids: Option<BTreeSet<HostId>> = (names.iter())
        .map(|n| {
            let c = sim.try_client(n)?;
            (c.is_connected() && c.server_addr() == Some(addr))
                .then_some(c.host_id())
                .flatten()
        })
        .collect();
    let ids = ids?;
    let knows = (names.iter()).all(|n| {
        let c = sim.client(n);
        let me = c.host_id();
        ids.iter()
            .all(|p| Some(*p) == me || c.peers().any(|q| q == *p))
    });
    (ids == *members && knows).then_some(*node)
}

/// The rooms' member names.
fn rooms_of(members: &[Member]) -> Vec<Vec<&'static str>> {
    let mut by_room: BTreeMap<&str, Vec<&'static str>> = BTreeMap::new();
    for m in members {
        by_room.entry(m.room).or_default().push(m.name);
    }
    by_room.into_values().collect()
}

fn join_all(sim: &mut Sim, members: &[Member], options: RoomOptions) {
    sim.eventually("every client connects", 10 * SECOND, |s| {
        members.iter().all(|m| s.connected(m.name).is_some())
    });
    // The nodes have heard each other's heartbeats (placement needs their loads).
    sim.advance(2 * SECOND);
    for m in members {
        sim.with_client(m.name, |c, now| {
            c.join_room_with(now, m.room, "", true, options)
        })
        .unwrap_or_else(|e| panic!("{}: join: {e}", m.name));
        sim.advance(TICK * 5);
    }
}

/// Reliable ordered messages between the members of each room.
#[derive(Default)]
struct Traffic {
    /// (sender name, sender id, receiver id) → the id of each message sent, numbered from 0.
    sent: BTreeMap<(&'static str, HostId, HostId), Vec<MessageId>>,
}

/// What became of the messages.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    delivered: u64,
    /// Not delivered, reported expired.
    expired: u64,
    /// Delivered and reported expired (the acknowledgement was lost).
    expired_delivered: u64,
    /// Not delivered, not reported, on a pair one end of which changed host id.
    lost_torn: u64,
    /// Pairs that were not idle at the end (stable ones only).
    busy_pairs: u64,
    /// Delivered under the sender's previous host id (the known core bug).
    misattributed: u64,
    problems: Vec<String>,
}

impl Traffic {
    /// Each member sends its next message to every other member of its room (by their
    /// current ids), as the send buffer takes them.
    fn round(&mut self, sim: &mut Sim, rooms: &[Vec<&'static str>]) {
        for room in rooms {
            let ids: Vec<Option<HostId>> = (room.iter())
                .map(|n| sim.try_client(n).and_then(pierce_core::Client::host_id))
                .collect();
            for (i, from) in room.iter().enumerate() {
                let Some(me) = ids[i] else { continue };
                for (j, to) in ids.iter().enumerate() {
                    let Some(to) = *to else { continue };
                    if i == j || to == me {
                        continue;
                    }
                    let key = (*from, me, to);
                    let n = self.sent.get(&key).map_or(0, Vec::len) as u32;
                    let mut payload = [0u8; 12];
                    payload[..8].copy_from_slice(&to.0.to_be_bytes());
                    payload[8..].copy_from_slice(&n.to_be_bytes());
                    let sent = sim.with_client(from, |c, now| {
                        c.send(now, to, Channel::RELIABLE_ORDERED, &payload)
                    });
                    if let Ok(id) = sent {
                        self.sent.entry(key).or_default().push(id);
                    }
                }
            }
        }
    }

    fn stream(&mut self, sim: &mut Sim, rooms: &[Vec<&'static str>], d: Duration) {
        let end = sim.elapsed() + d;
        while sim.elapsed() < end {
            self.round(sim, rooms);
            sim.advance(TICK);
        }
    }

    /// Checks every message: received at most once, in order, on the pair it was sent on;
    /// every one not received was reported expired (one that was not, on a pair an end of
    /// which changed host id, is counted "torn"; elsewhere it is a problem). Stable pairs
    /// must be idle.
    fn tally(&self, sim: &Sim) -> Tally {
        let mut t = Tally::default();
        let names: BTreeMap<HostId, &str> =
            (self.sent.keys()).map(|(n, id, _)| (*id, *n)).collect();
        let got_of = |to: &str, from_id: HostId, to_id: HostId| -> Vec<u32> {
            (sim.peer_payloads(to, from_id).into_iter())
                .filter(|p| p.len() == 12 && p[..8] == to_id.0.to_be_bytes())
                .map(|p| u32::from_be_bytes(p[8..12].try_into().expect("4 bytes")))
                .collect()
        };
        // The core bug once seen (see ONCE_CORE_BUGS): after a sender took a new host id, the
        // receiver delivered its first messages under its OLD id. They would show as a
        // restart of the numbering in the old id's stream (counted, and failed).
        let mut misattributed: BTreeMap<(&str, HostId), BTreeSet<u32>> = BTreeMap::new();
        let mut prefix_len: BTreeMap<(&str, HostId, HostId), usize> = BTreeMap::new();
        for (from, from_id, to_id) in self.sent.keys() {
            let Some(to) = names.get(to_id).copied() else {
                continue;
            };
            if sim.client(from).host_id() == Some(*from_id) {
                continue;
            }
            let got = got_of(to, *from_id, *to_id);
            if let Some(i) = got.windows(2).position(|w| w[0] >= w[1]) {
                let tail = &got[i + 1..];
                if tail.windows(2).all(|w| w[0] < w[1]) {
                    prefix_len.insert((*from, *from_id, *to_id), i + 1);
                    (misattributed.entry((*from, *to_id)).or_default()).extend(tail);
                    t.misattributed += tail.len() as u64;
                }
            }
        }
        for ((from, from_id, to_id), ids) in &self.sent {
            t.sent += ids.len() as u64;
            let Some(to) = names.get(to_id).copied() else {
                t.problems
                    .push(format!("{from} sent to {to_id}, whom nobody was"));
                continue;
            };
            let mut got = got_of(to, *from_id, *to_id);
            if let Some(&len) = prefix_len.get(&(*from, *from_id, *to_id)) {
                got.truncate(len);
            }
            if !got.windows(2).all(|w| w[0] < w[1]) {
                t.problems.push(format!(
                    "{from} ({from_id}) -> {to} ({to_id}): out of order or twice: {:?}",
                    got.windows(2)
                        .filter(|w| w[0] >= w[1])
                        .take(8)
                        .collect::<Vec<_>>()
                ));
            }
            if got.iter().any(|&n| n as usize >= ids.len()) {
                t.problems
                    .push(format!("{from} -> {to}: a number never sent arrived"));
            }
            let elsewhere = misattributed.get(&(*from, *to_id));
            let expired: BTreeSet<MessageId> = (sim.client_events(from))
                .filter_map(|(_, e)| match e {
                    ClientEvent::MessageExpired {
                        peer, message_id, ..
                    } if peer == to_id => Some(*message_id),
                    _ => None,
                })
                .collect();
            let got: BTreeSet<u32> = got.into_iter().collect();
            let stable = sim.client(from).host_id() == Some(*from_id)
                && sim.client(to).host_id() == Some(*to_id);
            for (n, id) in ids.iter().enumerate() {
                match (got.contains(&(n as u32)), expired.contains(id)) {
                    (true, false) => t.delivered += 1,
                    (true, true) => {
                        t.delivered += 1;
                        t.expired_delivered += 1;
                    }
                    (false, true) => t.expired += 1,
                    (false, false) if elsewhere.is_some_and(|m| m.contains(&(n as u32))) => {}
                    (false, false) if stable => t.problems.push(format!(
                        "{from} ({from_id}) -> {to} ({to_id}): message {n} of {} lost silently",
                        ids.len()
                    )),
                    (false, false) => {
                        t.lost_torn += 1;
                        if std::env::var_os("PIERCE_SIM_VERBOSE").is_some() {
                            eprintln!(
                                "torn: {from} ({from_id}, now {:?}) -> {to} ({to_id}, now {:?}): \
                                 message {n} (id {id:?}) neither delivered nor expired; \
                                 {from} still pairs with {to_id}: {}, its channel: {:?}",
                                sim.client(from).host_id(),
                                sim.client(to).host_id(),
                                sim.client(from).peers().any(|p| p == *to_id),
                                sim.client(from)
                                    .channel_stats(*to_id, Channel::RELIABLE_ORDERED)
                            );
                        }
                    }
                }
            }
            if stable {
                let ch = sim
                    .client(from)
                    .channel_stats(*to_id, Channel::RELIABLE_ORDERED);
                if ch.is_some_and(|s| s.queued != 0 || s.unacked != 0) {
                    t.busy_pairs += 1;
                    t.problems
                        .push(format!("{from} -> {to} is not idle: {ch:?}"));
                }
            }
        }
        t
    }
}

/// Fails with the first problems, the seed and a repro command. `churn`: host ids may change
/// and messages may expire (on a pair one end of which changed id, every message is still
/// delivered or reported expired; one neither is "torn" and fails).
fn check_tally(sim: &Sim, t: &Tally, churn: bool) {
    let expiries_allowed = churn;
    sim.check(t.problems.is_empty(), || {
        format!(
            "{} problems, first: {:#?}",
            t.problems.len(),
            &t.problems[..t.problems.len().min(8)]
        )
    });
    sim.check(
        expiries_allowed || t.expired + t.expired_delivered == 0,
        || format!("messages expired: {t:?}"),
    );
    // (Even with churn: a pair that ends delivers what it acknowledged and reports the rest
    // expired; once, messages acknowledged behind a gap were dropped with the pair.)
    sim.check(t.lost_torn == 0, || {
        format!("messages lost silently on pairs whose host ids changed: {t:?}")
    });
    sim.check(t.misattributed == 0, || {
        format!("messages delivered under the sender's previous host id: {t:?}")
    });
}

/// Every pair of room members is on the path the oracle says: direct where possible and
/// both punch (and the room is not relay-only), the relay otherwise.
fn check_paths(sim: &Sim, members: &[Member], relay_only: bool, when: &str) {
    for a in members {
        for b in members
            .iter()
            .filter(|b| b.room == a.room && b.name != a.name)
        {
            let Some(id) = sim.client(b.name).host_id() else {
                continue;
            };
            let punch = !relay_only && a.config.direct_paths && b.config.direct_paths;
            let direct = punch && direct_path_possible(&a.edge, &b.edge);
            let path = sim.peer_path(a.name, id);
            sim.check(matches!(path, Some(Path::Direct(_))) == direct, || {
                format!(
                    "{when}: {} -> {}: {path:?}, direct expected: {direct}",
                    a.name, b.name
                )
            });
        }
    }
}

fn redirects(
    sim: &Sim,
    name: &str,
    after: Duration,
) -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
    (sim.client_events(name))
        .filter(|(t, _)| *t >= after)
        .filter_map(|(_, e)| match e {
            ClientEvent::Redirected { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

// ---- the simulator's directory --------------------------------------------------------

/// Questions reach the directory after its one-way latency and answers come back after it
/// again; a restarted node (same node id) asks for a new number; an answer for a node that
/// crashed since it asked is dropped; an outage refuses questions and a wipe empties the
/// registry until the next heartbeats.
#[test]
fn the_directory_answers_after_its_latency_and_outages_wipes_and_restarts_do_what_they_say() {
    let ms = Duration::from_millis;
    let mut sim = Scenario::new(seed_or(1900))
        .server_config(server_config())
        .cluster_node(NODE_B)
        .directory(ms(5))
        .build();
    sim.advance(ms(9));
    assert_eq!(sim.server().node_number(), None, "not before 10 ms");
    sim.advance(ms(2));
    assert_eq!(sim.server().node_number(), Some(1));
    assert_eq!(sim.node::<Server>(NODE_B).node_number(), Some(2));
    let now = sim.now();
    assert_eq!(sim.directory().nodes(now).len(), 2);
    // Restarted: a new number. Crashed again before the answer: the answer is dropped.
    sim.apply(Action::crash(NODE_B)).expect("crash");
    sim.apply(Action::restart_node(NODE_B)).expect("restart");
    sim.advance(ms(1));
    sim.apply(Action::crash(NODE_B)).expect("crash");
    sim.advance(ms(20));
    assert_eq!(
        sim.directory_stats().orphaned,
        3,
        "its number, heartbeat and room list"
    );
    sim.apply(Action::restart_node(NODE_B)).expect("restart");
    sim.advance(ms(11));
    assert_eq!(sim.node::<Server>(NODE_B).node_number(), Some(4));
    // Down: refused, and the nodes notice; wiped and back: registered again by heartbeats.
    sim.apply(Action::DirectoryDown).expect("down");
    sim.apply(Action::DirectoryWipe).expect("wipe");
    sim.advance(2 * SECOND);
    assert!(sim.directory_stats().refused > 0);
    assert!(!sim.server().directory_reachable());
    let now = sim.now();
    assert!(sim.directory().nodes(now).is_empty(), "wiped");
    sim.apply(Action::DirectoryUp).expect("up");
    sim.advance(SECOND + ms(11));
    let now = sim.now();
    assert_eq!(sim.directory().nodes(now).len(), 2);
    assert!(sim.server().directory_reachable());
    assert_eq!(sim.cluster_node_names(), [SERVER, NODE_B]);
}

// ---- a. placement ----------------------------------------------------------------------

/// Eight clients, each dialing a seeded node first, half in "red", half in "blue" (seeded).
fn placement_members(seed: u64) -> Vec<Member> {
    let mut rng = substream(seed, "placement");
    let mut order: Vec<usize> = (0..NAMES.len()).collect();
    order.shuffle(&mut rng);
    let edges = edges();
    (0..NAMES.len())
        .map(|i| Member {
            name: NAMES[i],
            edge: edges[i].clone(),
            config: ClientConfig::default(),
            first: NODES[rng.random_range(0..NODES.len())],
            room: if order[i] < NAMES.len() / 2 {
                "red"
            } else {
                "blue"
            },
        })
        .collect()
}

struct Placed {
    sim: Sim,
    traffic: Traffic,
    on: BTreeMap<&'static str, &'static str>,
}

fn placement(seed: u64) -> Placed {
    let members = placement_members(seed);
    let mut sim = build(seed, &members, LinkProfile::broadband());
    join_all(&mut sim, &members, RoomOptions::new());
    let rooms = rooms_of(&members);
    let mut on = BTreeMap::new();
    for room in &rooms {
        let name = members
            .iter()
            .find(|m| m.name == room[0])
            .expect("member")
            .room;
        sim.eventually(&format!("{name} forms on one node"), 10 * SECOND, |s| {
            formed(s, name, room).is_some()
        });
        on.insert(name, formed(&sim, name, room).expect("formed"));
    }
    sim.advance(4 * SECOND);
    check_paths(&sim, &members, false, "after punching");
    let mut traffic = Traffic::default();
    traffic.stream(&mut sim, &rooms, 3 * SECOND);
    sim.advance(3 * SECOND);
    for (name, node) in &on {
        let room = &rooms[usize::from(*name == "red")];
        sim.check(formed(&sim, name, room) == Some(node), || {
            format!("{name} moved off {node}: {:?}", homes(&sim))
        });
    }
    check_paths(&sim, &members, false, "at the end");
    Placed { sim, traffic, on }
}

#[test]
fn every_room_lives_on_one_node_with_all_its_members_and_delivers_everything_in_order() {
    let Placed { sim, traffic, on } = placement(seed_or(1901));
    let t = traffic.tally(&sim);
    check_tally(&sim, &t, false);
    sim.check(t.sent > 0 && t.delivered == t.sent, || format!("{t:?}"));
    let joins_redirected = NAMES
        .iter()
        .filter(|n| !redirects(&sim, n, Duration::ZERO).is_empty())
        .count();
    let d = sim.directory_stats();
    sim.check(d.refused == 0 && d.asked > 0, || format!("{d:?}"));
    eprintln!(
        "placement: rooms {on:?}; {joins_redirected} of 8 joins redirected; {} messages \
         delivered once, in order; directory {d:?}",
        t.delivered
    );
}

#[test]
fn the_cluster_run_is_deterministic() {
    let one = placement(seed_or(1902));
    let two = placement(seed_or(1902));
    assert_eq!(one.sim.log_text(), two.sim.log_text());
    assert_eq!(one.traffic.sent, two.traffic.sent);
    assert_eq!(one.sim.directory_stats(), two.sim.directory_stats());
}

// ---- b. drain --------------------------------------------------------------------------

/// Four members of "arena" and two of "side", all dialing the server first.
fn drain_members() -> Vec<Member> {
    let edges = edges();
    (0..6)
        .map(|i| Member {
            name: NAMES[i],
            edge: edges[i].clone(),
            config: ClientConfig::default(),
            first: SERVER,
            room: if i < 4 { "arena" } else { "side" },
        })
        .collect()
}

#[test]
fn a_draining_node_moves_its_room_to_one_other_node_and_nothing_is_lost() {
    let seed = seed_or(1903);
    let members = drain_members();
    let mut sim = build(seed, &members, LinkProfile::broadband());
    join_all(&mut sim, &members, RoomOptions::new());
    let rooms = rooms_of(&members);
    let arena = &rooms[0];
    sim.eventually("the rooms form", 10 * SECOND, |s| {
        formed(s, "arena", arena).is_some() && formed(s, "side", &rooms[1]).is_some()
    });
    let held = formed(&sim, "arena", arena).expect("formed");
    sim.advance(3 * SECOND);
    let mut traffic = Traffic::default();
    traffic.stream(&mut sim, &rooms, 2 * SECOND);
    let drained_at = sim.elapsed();
    sim.apply(Action::drain(held, 30 * SECOND)).expect("drain");
    traffic.stream(&mut sim, &rooms, 8 * SECOND);
    sim.advance(5 * SECOND);

    let now_on = formed(&sim, "arena", arena);
    sim.check(now_on.is_some_and(|n| n != held), || {
        format!("arena is not on one other node: {:?}", homes(&sim))
    });
    let to = sim.host_addr(now_on.expect("checked"));
    for n in arena {
        let r = redirects(&sim, n, drained_at);
        sim.check(r == [(sim.host_addr(held), to)], || {
            format!("{n}: redirects after the drain: {r:?}")
        });
    }
    let left = sim.node::<Server>(held).clients().count();
    sim.check(left == 0, || format!("{held} still has {left} clients"));
    let t = traffic.tally(&sim);
    check_tally(&sim, &t, false);
    eprintln!(
        "drain: arena moved {held} -> {}; {} of {} messages delivered once, in order, none \
         expired",
        now_on.unwrap_or("?"),
        t.delivered,
        t.sent
    );
}

// ---- c. crash of a relay-only room's node ----------------------------------------------

#[test]
fn a_crashed_nodes_relay_only_room_forms_again_elsewhere_and_nothing_is_lost_silently() {
    let seed = seed_or(1904);
    let edges = edges();
    // Members dial different nodes first, so they fail over by different lists.
    let members: Vec<Member> = (0..4)
        .map(|i| Member {
            name: NAMES[i],
            edge: edges[i].clone(),
            config: ClientConfig::default(),
            first: NODES[i % 3],
            room: "vault",
        })
        .collect();
    let mut sim = build(seed, &members, LinkProfile::broadband());
    join_all(&mut sim, &members, RoomOptions::new().relay_only(true));
    let rooms = rooms_of(&members);
    sim.eventually("vault forms", 10 * SECOND, |s| {
        formed(s, "vault", &rooms[0]).is_some()
    });
    let held = formed(&sim, "vault", &rooms[0]).expect("formed");
    sim.advance(3 * SECOND);
    check_paths(&sim, &members, true, "before the crash");
    let mut traffic = Traffic::default();
    traffic.stream(&mut sim, &rooms, 2 * SECOND);
    let crashed_at = sim.elapsed();
    sim.apply(Action::crash(held)).expect("crash");
    traffic.stream(&mut sim, &rooms, 25 * SECOND);
    sim.eventually("vault forms again", 20 * SECOND, |s| {
        formed(s, "vault", &rooms[0]).is_some()
    });
    traffic.stream(&mut sim, &rooms, 2 * SECOND);
    sim.advance(5 * SECOND);
    let now_on = formed(&sim, "vault", &rooms[0]);
    sim.check(now_on.is_some_and(|n| n != held), || {
        format!("vault: {:?}", homes(&sim))
    });
    check_paths(&sim, &members, true, "after the failover");
    let t = traffic.tally(&sim);
    sim.check(t.lost_torn == 0, || format!("host ids changed: {t:?}"));
    check_tally(&sim, &t, true);
    let back = (members.iter())
        .filter_map(|m| {
            sim.client_events(m.name)
                .filter(|(t, e)| *t > crashed_at && matches!(e, ClientEvent::Connected { .. }))
                .map(|(t, _)| t - crashed_at)
                .next()
        })
        .max()
        .unwrap_or_default();
    eprintln!(
        "crash: vault (relay-only) on {held} crashed; re-formed on {} ({back:?} after the \
         crash, idle timeout 15 s); sent {}, delivered {}, expired {} (+{} delivered and \
         reported expired), lost silently 0",
        now_on.unwrap_or("?"),
        t.sent,
        t.delivered,
        t.expired,
        t.expired_delivered
    );
}

// ---- d. directory outage ---------------------------------------------------------------

#[test]
fn a_directory_outage_leaves_rooms_working_and_fails_joins_that_need_it() {
    let seed = seed_or(1905);
    let edges = edges();
    let mut members: Vec<Member> = (0..4)
        .map(|i| Member {
            name: NAMES[i],
            edge: edges[i].clone(),
            config: ClientConfig::default(),
            first: NODES[i % 3],
            room: "r",
        })
        .collect();
    let late = Member {
        name: "late",
        edge: Edge::nat(NatConfig::port_restricted()),
        config: ClientConfig::default(),
        first: NODE_C,
        room: "",
    };
    members.push(late.clone());
    let mut sim = build(seed, &members, LinkProfile::broadband());
    members.pop();
    join_all(&mut sim, &members, RoomOptions::new());
    let rooms = rooms_of(&members);
    sim.eventually("r forms", 10 * SECOND, |s| {
        formed(s, "r", &rooms[0]).is_some()
    });
    let held = formed(&sim, "r", &rooms[0]).expect("formed");
    sim.advance(3 * SECOND);
    let mut traffic = Traffic::default();
    traffic.stream(&mut sim, &rooms, 2 * SECOND);
    let down_at = sim.elapsed();
    sim.apply(Action::DirectoryDown).expect("down");
    traffic.stream(&mut sim, &rooms, 3 * SECOND);
    for node in NODES {
        let s = sim.node::<Server>(node);
        sim.check(!s.directory_reachable(), || {
            format!("{node} did not notice")
        });
    }
    sim.with_client(late.name, |c, now| {
        c.join_room(now, "elsewhere", "", true, 8)
    })
    .expect("join");
    traffic.stream(&mut sim, &rooms, 3 * SECOND);
    let failed = sim.client_events(late.name).any(|(t, e)| {
        t > down_at
            && matches!(
                e,
                ClientEvent::RoomFailed {
                    op: RoomOp::Join,
                    error: RoomError::DirectoryUnavailable
                }
            )
    });
    sim.check(failed, || {
        "the join during the outage did not fail with DirectoryUnavailable".into()
    });
    let up_at = sim.elapsed();
    sim.apply(Action::DirectoryUp).expect("up");
    traffic.stream(&mut sim, &rooms, 2 * SECOND);
    sim.advance(3 * SECOND);
    let now = sim.now();
    let registered = sim.directory().nodes(now).len();
    sim.check(registered == 3, || format!("{registered} nodes registered"));
    sim.check(sim.directory().owner(now, "r") == Some(held), || {
        format!("r's owner: {:?}", sim.directory().owner(now, "r"))
    });
    sim.check(formed(&sim, "r", &rooms[0]) == Some(held), || {
        format!("{:?}", homes(&sim))
    });
    for node in NODES {
        sim.check(sim.node::<Server>(node).directory_reachable(), || {
            format!("{node} still thinks the directory is down")
        });
    }
    let t = traffic.tally(&sim);
    check_tally(&sim, &t, false);
    let d = sim.directory_stats();
    eprintln!(
        "outage: 6 s down ({:?} to {:?}); r stayed on {held}; {} of {} messages delivered; \
         directory {d:?}",
        down_at, up_at, t.delivered, t.sent
    );
}

// ---- e. chaos --------------------------------------------------------------------------

/// Seeds where two core bugs once showed (fixed): when a client came back from a failover
/// or redirect with a NEW host id (same process, same keys, same address), a peer still
/// holding its old id on the same path delivered its first messages under the OLD id. Host
/// ids change when the directory is down as the client resumes (its ticket cannot be
/// checked), and changed when a node that would refuse the client (it started draining after
/// the redirect was sent) spent its ticket first (seeds 199, 352). Every run now fails on a
/// message delivered under a previous id; these seeds stay as regressions.
const ONCE_CORE_BUGS: [u64; 4] = [23, 25, 199, 352];

/// Seeds the CI run covers (more with `PIERCE_SIM_SEEDS`).
const CI_SEEDS: u64 = 4;

#[derive(Debug, Clone)]
enum Trouble {
    /// The node crashes and a new process starts `after` later.
    CrashRestart(&'static str, Duration),
    /// The node drains; its process is replaced `after` later.
    DrainRestart(&'static str, Duration),
    /// The directory is down this long (and wiped if `true`).
    Outage(Duration, bool),
}

struct ChaosRun {
    sim: Sim,
    tally: Tally,
    troubles: Vec<(Duration, Trouble)>,
    /// Checks where a room was on an active node and a draining one at once.
    doubled_draining: u64,
    app: App,
}

fn chaos_plan(seed: u64) -> (Vec<Member>, Vec<(Duration, Trouble)>, LinkProfile) {
    let mut rng = substream(seed, "cluster-chaos");
    let edges = edges();
    let n = rng.random_range(4..=6);
    let members: Vec<Member> = (0..n)
        .map(|i| {
            let mut config = ClientConfig::default();
            config.direct_paths = rng.random_bool(0.7);
            Member {
                name: NAMES[i],
                edge: edges[rng.random_range(0..edges.len())].clone(),
                config,
                first: NODES[rng.random_range(0..NODES.len())],
                room: if rng.random_bool(0.5) { "red" } else { "blue" },
            }
        })
        .collect();
    let mut at = Duration::from_secs(rng.random_range(2..5));
    let mut troubles = Vec::new();
    for _ in 0..rng.random_range(2..=4) {
        let node = NODES[rng.random_range(0..NODES.len())];
        let t = match rng.random_range(0..4) {
            0 => Trouble::CrashRestart(node, Duration::from_millis(rng.random_range(500..5000))),
            1 => Trouble::DrainRestart(node, Duration::from_millis(rng.random_range(3000..8000))),
            2 => Trouble::Outage(Duration::from_millis(rng.random_range(500..6000)), false),
            _ => Trouble::Outage(Duration::from_millis(rng.random_range(500..4000)), true),
        };
        troubles.push((at, t));
        at += Duration::from_secs(rng.random_range(4..12));
    }
    // Not `perfect`: with no latency the clients' first hellos reach the nodes before the
    // directory numbered them, and a node without its number refuses (by design: clients
    // start after the nodes in this test).
    let link = match rng.random_range(0..3) {
        0 => LinkProfile::broadband(),
        1 => LinkProfile::wifi(),
        _ => LinkProfile::cellular(),
    };
    (members, troubles, link)
}

/// Whether member `m` is in its room: connected, and the node it is on holds the room with
/// it as a member.
fn in_room(sim: &Sim, m: &Member) -> bool {
    let Some(c) = sim.try_client(m.name) else {
        return false;
    };
    let (Some(id), Some(addr)) = (c.host_id(), c.server_addr()) else {
        return false;
    };
    let Some(node) = NODES.into_iter().find(|n| sim.host_addr(n) == addr) else {
        return false;
    };
    c.is_connected()
        && sim.try_server_node(node).is_some_and(|s| {
            (s.rooms().iter()).any(|r| r.name == m.room && r.members.contains(&id))
        })
}

/// What the application does for its members, as a game would: a member out of its room for
/// [`APP_PATIENCE`] (its client's own rejoin failed, e.g. with `DirectoryUnavailable` while
/// the directory was down) joins it again; a member whose client closed (every node refused
/// it) starts a new process (new keys, new host id).
#[derive(Default)]
struct App {
    out_since: BTreeMap<&'static str, Duration>,
    rejoins: u64,
    restarts: u64,
}

/// How long a member may be out of its room before the application steps in.
const APP_PATIENCE: Duration = Duration::from_secs(3);

impl App {
    fn step(&mut self, sim: &mut Sim, members: &[Member]) {
        let now = sim.elapsed();
        for m in members {
            if in_room(sim, m) {
                self.out_since.remove(m.name);
                continue;
            }
            let since = *self.out_since.entry(m.name).or_insert(now);
            if now < since + APP_PATIENCE {
                continue;
            }
            self.out_since.insert(m.name, now);
            let c = sim.client(m.name);
            if c.is_closed() {
                self.restarts += 1;
                sim.apply(Action::reconnect(m.name))
                    .unwrap_or_else(|e| panic!("{e}"));
            } else if c.is_connected() {
                self.rejoins += 1;
                // It may fail (AlreadyMember, a room being moved): tried again later.
                let _ = sim.with_client(m.name, |c, now| c.join_room(now, m.room, "", true, 8));
            }
        }
    }
}

fn chaos(seed: u64) -> ChaosRun {
    let (members, troubles, link) = chaos_plan(seed);
    let mut sim = build(seed, &members, link);
    join_all(&mut sim, &members, RoomOptions::new());
    let start = sim.elapsed();
    let mut script: Vec<(Duration, Action)> = Vec::new();
    for (at, t) in &troubles {
        let at = start + *at;
        match t {
            Trouble::CrashRestart(node, after) => {
                script.push((at, Action::crash(*node)));
                script.push((at + *after, Action::restart_node(*node)));
            }
            Trouble::DrainRestart(node, after) => {
                script.push((at, Action::drain(*node, *after)));
                script.push((at + *after, Action::crash(*node)));
                script.push((at + *after, Action::restart_node(*node)));
            }
            Trouble::Outage(d, wipe) => {
                script.push((at, Action::DirectoryDown));
                if *wipe {
                    script.push((at, Action::DirectoryWipe));
                }
                script.push((at + *d, Action::DirectoryUp));
            }
        }
    }
    script.sort_by_key(|(t, _)| *t);
    let end_trouble = script.last().map_or(start, |(t, _)| *t);
    let rooms = rooms_of(&members);
    let mut traffic = Traffic::default();
    let mut doubled_draining = 0;
    let mut app = App::default();
    let mut next = 0;
    // Trouble, then 25 s of sending (longer than the idle timeout: stranded clients fail
    // over), then quiet.
    let stop = end_trouble + 25 * SECOND;
    while sim.elapsed() < stop {
        while next < script.len() && script[next].0 <= sim.elapsed() {
            sim.apply(script[next].1.clone())
                .unwrap_or_else(|e| panic!("{e}"));
            next += 1;
        }
        traffic.round(&mut sim, &rooms);
        sim.advance(5 * TICK);
        app.step(&mut sim, &members);
        // A draining node keeps a copy of each room it handed on until the members' sessions
        // with it close (a member whose redirect is still on its way is still there): those
        // copies are not counted.
        for (room, on) in homes(&sim) {
            let active: Vec<_> = (on.iter())
                .filter(|(node, _)| !sim.node::<Server>(node).is_draining())
                .collect();
            doubled_draining += u64::from(on.len() > 1 && active.len() <= 1);
            if active.len() > 1 {
                if let Some(path) = std::env::var_os("PIERCE_SIM_DUMP") {
                    std::fs::write(path, sim.log_text()).expect("dump");
                }
                sim.fail(format!(
                    "{room} on {} active nodes at once: {active:?}",
                    active.len()
                ));
            }
        }
    }
    sim.advance(10 * SECOND);
    // The trouble is over: every room is whole again, on one node.
    for room in &rooms {
        let name = members
            .iter()
            .find(|m| m.name == room[0])
            .expect("member")
            .room;
        let give_up = sim.elapsed() + 20 * SECOND;
        while formed(&sim, name, room).is_none() && sim.elapsed() < give_up {
            sim.advance(5 * TICK);
            app.step(&mut sim, &members);
        }
        if formed(&sim, name, room).is_none() {
            if let Some(path) = std::env::var_os("PIERCE_SIM_DUMP") {
                std::fs::write(path, sim.log_text()).expect("dump");
            }
            let state: Vec<String> = (room.iter())
                .map(|n| {
                    let c = sim.client(n);
                    format!(
                        "{n}: {:?} connected {} on {:?}",
                        c.host_id(),
                        c.is_connected(),
                        c.server_addr()
                    )
                })
                .collect();
            sim.fail(format!(
                "{name} is not whole again 20 s after the trouble: rooms {:?}; members \
                 {state:?}",
                homes(&sim)
            ));
        }
    }
    let tally = traffic.tally(&sim);
    if !tally.problems.is_empty() {
        if let Some(path) = std::env::var_os("PIERCE_SIM_DUMP") {
            std::fs::write(path, sim.log_text()).expect("dump");
        }
    }
    ChaosRun {
        sim,
        tally,
        troubles,
        doubled_draining,
        app,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

#[test]
fn cluster_chaos_keeps_rooms_on_one_node_and_loses_nothing_silently() {
    let seeds: Vec<u64> = match env_u64(pierce_sim::SEED_ENV) {
        Some(s) => vec![s],
        None => {
            let start = env_u64("PIERCE_SIM_SEED_START").unwrap_or(0);
            (start..start + env_u64("PIERCE_SIM_SEEDS").unwrap_or(CI_SEEDS)).collect()
        }
    };
    let mut failed = Vec::new();
    let mut total = Tally::default();
    let mut doubled_draining = 0;
    let mut app = (0, 0);
    let mut torn_seeds = Vec::new();
    for &seed in &seeds {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let run = chaos(seed);
            check_tally(&run.sim, &run.tally, true);
            run
        }));
        match result {
            Ok(run) => {
                if std::env::var_os("PIERCE_SIM_VERBOSE").is_some() {
                    eprintln!("seed {seed}: {:?}; {:?}", run.troubles, run.tally);
                }
                total.sent += run.tally.sent;
                total.delivered += run.tally.delivered;
                total.expired += run.tally.expired;
                total.expired_delivered += run.tally.expired_delivered;
                total.lost_torn += run.tally.lost_torn;
                total.misattributed += run.tally.misattributed;
                if run.tally.lost_torn > 0 {
                    torn_seeds.push(seed);
                }
                doubled_draining += run.doubled_draining;
                app.0 += run.app.rejoins;
                app.1 += run.app.restarts;
            }
            Err(_) => failed.push(seed),
        }
    }
    eprintln!(
        "cluster chaos: {} seeds ({}..), {} failed {failed:?}; sent {}, delivered {}, expired {} (+{} delivered and reported expired), \
         lost on pairs whose host ids changed {} (seeds {torn_seeds:?}), delivered under the \
         sender's previous host id {}; checks that saw a room on a draining node and \
         an active one: {doubled_draining}; application rejoins {}, restarts {}",
        seeds.len(),
        seeds.first().copied().unwrap_or(0),
        failed.len(),
        total.sent,
        total.delivered,
        total.expired,
        total.expired_delivered,
        total.lost_torn,
        total.misattributed,
        app.0,
        app.1
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

#[test]
fn a_cluster_chaos_run_is_deterministic() {
    let one = chaos(seed_or(3));
    let two = chaos(seed_or(3));
    assert_eq!(one.sim.log_text(), two.sim.log_text());
    assert_eq!(one.tally.delivered, two.tally.delivered);
}

#[test]
fn seeds_that_once_showed_core_bugs_pass() {
    for seed in ONCE_CORE_BUGS {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let run = chaos(seed);
            check_tally(&run.sim, &run.tally, true);
            run.tally.misattributed
        }));
        assert_eq!(result.ok(), Some(0), "seed {seed} trips a core bug again");
    }
}

/// Once a core bug, scripted: a and b share a room (direct path) on the server, which
/// crashes. b fails over to node B with its ticket (same id) and the room forms again
/// there, b still holding its pair with a (carried over). a cannot reach node B at first;
/// when it can, the directory is down, so its ticket cannot be checked: it registers with a
/// NEW host id. Its peers knew it by the old one, so it drops every pair it kept
/// (`PeerDropped { NewHostId }`: anything unacknowledged is reported expired) and waits for
/// node B to introduce it again under the new id (it rejoins the room there at once: the
/// room is local to node B). Everything it sends then reaches b under its new id, nothing
/// under the old one (before the fix, a kept its pair and b took its first messages as the
/// old id's).
#[test]
fn messages_from_a_client_with_a_new_host_id_arrive_under_that_id() {
    let seed = seed_or(1906);
    let members: Vec<Member> = ["a", "b"]
        .into_iter()
        .zip([NatConfig::port_restricted(), NatConfig::full_cone()])
        .map(|(name, nat)| Member {
            name,
            edge: Edge::nat(nat),
            config: ClientConfig::default(),
            first: SERVER,
            room: "r",
        })
        .collect();
    let mut sc = Scenario::new(seed)
        .server_config(server_config())
        .cluster_node(NODE_B)
        .directory(DIR_LATENCY)
        .link(LinkProfile::broadband());
    for m in &members {
        sc = sc.client(m.name, m.edge.clone()).first_node(m.name, SERVER);
    }
    let mut sim = sc.build();
    join_all(&mut sim, &members, RoomOptions::new());
    sim.eventually("r forms", 10 * SECOND, |s| {
        formed(s, "r", &["a", "b"]).is_some()
    });
    sim.advance(3 * SECOND);
    let old_a = sim.client("a").host_id().expect("id");
    let b = sim.client("b").host_id().expect("id");
    sim.apply(Action::partition("a", NODE_B))
        .expect("partition");
    sim.apply(Action::crash(SERVER)).expect("crash");
    sim.eventually("r forms again on node B with b", 30 * SECOND, |s| {
        formed(s, "r", &["b"]) == Some(NODE_B)
    });
    sim.check(sim.client("b").peers().any(|p| p == old_a), || {
        "b did not keep its pair with a".into()
    });
    sim.apply(Action::DirectoryDown).expect("down");
    sim.apply(Action::heal("a", NODE_B)).expect("heal");
    sim.eventually("a on node B", 30 * SECOND, |s| {
        let c = s.client("a");
        c.is_connected() && c.server_addr() == Some(s.host_addr(NODE_B))
    });
    let new_a = sim.client("a").host_id().expect("id");
    sim.check(new_a != old_a, || format!("a kept its id {old_a}"));
    sim.check(
        (sim.client_events("a")).any(|(_, e)| {
            matches!(e, ClientEvent::PeerDropped { peer, reason: PeerDropReason::NewHostId } if *peer == b)
        }),
        || "a did not drop its pair with b on taking a new id".into(),
    );
    sim.apply(Action::DirectoryUp).expect("up");
    sim.eventually("node B introduces a (new id) and b", 10 * SECOND, |s| {
        s.client("a").peers().any(|p| p == b)
    });
    let t0 = sim.elapsed();
    for i in 0..100u32 {
        sim.with_client("a", |c, now| {
            c.send(now, b, Channel::RELIABLE_ORDERED, &i.to_be_bytes())
        })
        .expect("send");
        sim.advance(TICK);
    }
    sim.advance(2 * SECOND);
    let heard = |from: HostId| {
        (sim.client_events("b"))
            .filter(|(t, e)| {
                *t >= t0
                    && matches!(e, ClientEvent::PeerMessage { from: f, payload, .. }
                        if *f == from && payload.len() == 4)
            })
            .count()
    };
    let (under_new, under_old) = (heard(new_a), heard(old_a));
    sim.check(under_new == 100 && under_old == 0, || {
        format!(
            "b heard {under_new} of 100 from a's new id {new_a}, {under_old} under its old id \
             {old_a}"
        )
    });
}
