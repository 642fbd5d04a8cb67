//! IP privacy (`ClientConfig::private`, relay-only rooms) through NATs: a private client, or
//! the members of a relay-only room, must never have their addresses handed to anyone.
//!
//! Every datagram of the run is recorded (packet tracing keeps the bytes). For a hidden
//! client, every datagram not addressed to it (to its inside address or to any public
//! address of its NATs) — to peers, to peers' NATs, to the server — is searched for its
//! public (server-reflexive) and LAN addresses: IPv4 and port in network byte order both
//! ways round, XOR-encoded as STUN's XOR-MAPPED-ADDRESS encodes them (port ^ 0x2112,
//! IPv4 ^ 0x2112A442), and as text. Sealed payloads are opaque to such a search: what the
//! server's control messages carry opened is checked by decoding in the core's own tests
//! (`core/src/tests/privacy.rs`); here the opened result is read back through the client
//! API (`peer_addr` is what the peer was introduced at) and through behaviour: no one but
//! the server ever sends to a hidden client's addresses, and it sends to no one else.
//! A normal pair in the same run must get each other's addresses and go direct, and the
//! search must find a normal client's XOR-mapped address in the STUN answers it gets, so
//! the checks can fail.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use pierce_core::{Channel, ClientConfig, HostId, Path, RoomOptions, RoomsConfig, ServerConfig};
use pierce_sim::{Edge, LinkProfile, NatConfig, Scenario, Sim, direct_path_possible, seed_or};

const SECOND: Duration = Duration::from_secs(1);
/// STUN's magic cookie (RFC 5389 §6), which XOR-MAPPED-ADDRESS mixes into addresses.
const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Byte patterns and text that give `addr` away.
fn patterns(addr: SocketAddr) -> Vec<(String, Vec<u8>)> {
    let IpAddr::V4(ip) = addr.ip() else {
        panic!("the simulator is IPv4: {addr}")
    };
    let ip = ip.octets();
    let port = addr.port().to_be_bytes();
    let xip = (u32::from_be_bytes(ip) ^ MAGIC_COOKIE).to_be_bytes();
    let xport = (addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes();
    let cat = |a: &[u8], b: &[u8]| [a, b].concat();
    vec![
        (format!("{addr} ip|port"), cat(&ip, &port)),
        (format!("{addr} port|ip"), cat(&port, &ip)),
        (format!("{addr} xor port|ip"), cat(&xport, &xip)),
        (format!("{addr} xor ip|port"), cat(&xip, &xport)),
        (format!("{addr} as text"), addr.to_string().into_bytes()),
        (
            format!("{} as text", addr.ip()),
            addr.ip().to_string().into_bytes(),
        ),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where datagrams for `name` go: its inside address and its NATs' public IPs.
fn to_host(sim: &Sim, name: &str, dst: SocketAddr) -> bool {
    dst == sim.host_addr(name)
        || (sim.nats_of(name).iter()).any(|n| sim.nat(n).public_ip() == dst.ip())
}

/// `name`'s addresses: public as the server saw it, and inside (LAN).
fn addresses(sim: &Sim, name: &str) -> [SocketAddr; 2] {
    [sim.expect_connected(name).public_addr, sim.host_addr(name)]
}

/// `hidden`'s addresses are in no recorded datagram for anyone else, and only the server
/// exchanges datagrams with it.
fn assert_hidden(sim: &Sim, hidden: &str, label: &str) {
    let pats: Vec<_> = addresses(sim, hidden)
        .into_iter()
        .flat_map(patterns)
        .collect();
    let mut searched = 0;
    for p in sim.packets() {
        if p.from == hidden {
            // Never to a peer or its NAT (to the server, or its alternate address for STUN).
            let peer = (sim.clients().into_iter()).find(|&c| c != hidden && to_host(sim, c, p.dst));
            sim.check(peer.is_none(), || {
                format!("{label}: {hidden} sent to {peer:?} at {:?}", p.sent_at)
            });
        } else if to_host(sim, hidden, p.dst) {
            sim.check(p.from == "server", || {
                format!("{label}: {} sent to {hidden} at {}", p.from, p.dst)
            });
            continue;
        }
        for (what, pat) in &pats {
            sim.check(!contains(&p.data, pat), || {
                format!(
                    "{label}: {what} of {hidden} in a datagram {} -> {} at {:?}",
                    p.from, p.dst, p.sent_at
                )
            });
        }
        searched += 1;
    }
    sim.check(searched > 100, || {
        format!("{label}: only {searched} searched")
    });
}

/// `n` reliable messages each way between `a` and `b`, driven until all arrived; checks
/// they arrived complete and in order.
fn exchange(sim: &mut Sim, a: &str, b: &str, n: u32) {
    let (ha, hb) = (
        sim.expect_connected(a).host_id,
        sim.expect_connected(b).host_id,
    );
    let msg = |from: &str, k: u32| format!("{from}#{k};").repeat(50).into_bytes();
    for k in 0..n {
        sim.with_client(a, |c, now| {
            c.send(now, hb, Channel::RELIABLE_ORDERED, &msg(a, k))
        })
        .expect("b is a peer");
        sim.with_client(b, |c, now| {
            c.send(now, ha, Channel::RELIABLE_ORDERED, &msg(b, k))
        })
        .expect("a is a peer");
    }
    let all = |s: &Sim| {
        s.peer_payloads(b, ha).len() >= n as usize && s.peer_payloads(a, hb).len() >= n as usize
    };
    sim.eventually("every message arrives", 20 * SECOND, all);
    for (at, from, id) in [(b, a, ha), (a, b, hb)] {
        let got: Vec<Vec<u8>> = (sim.peer_payloads(at, id).into_iter())
            .map(|p| p.to_vec())
            .collect();
        let expect: Vec<Vec<u8>> = (0..n).map(|k| msg(from, k)).collect();
        sim.check(got == expect, || {
            format!("{from} -> {at}: {} messages", got.len())
        });
    }
}

fn path(sim: &Sim, name: &str, peer: HostId) -> Option<Path> {
    sim.peer_path(name, peer)
}

/// Every client tells its inside address as its LAN candidate (a runtime tells the
/// interface addresses).
fn tell_lan_addresses(sim: &mut Sim, names: &[&str]) {
    for &n in names {
        let lan = sim.host_addr(n);
        sim.with_client(n, |c, now| c.set_local_addresses(now, &[lan]))
            .expect("fits the control queue");
    }
}

/// `a` was introduced to `b` at `b`'s public address, probed it, and went direct.
fn assert_normal_pair(sim: &Sim, a: &str, b: &str, label: &str) {
    let hb = sim.expect_connected(b).host_id;
    let b_public = sim.expect_connected(b).public_addr;
    sim.check(sim.client(a).peer_addr(hb) == Some(b_public), || {
        format!(
            "{label}: {a} knows {b} at {:?}",
            sim.client(a).peer_addr(hb)
        )
    });
    let probed = sim
        .packets()
        .iter()
        .any(|p| p.from == a && p.dst == b_public);
    sim.check(probed, || format!("{label}: {a} never sent to {b_public}"));
    sim.check(matches!(path(sim, a, hb), Some(Path::Direct(_))), || {
        format!("{label}: {a} -> {b} is {:?}", path(sim, a, hb))
    });
}

/// The search finds what is there: `name`'s STUN answers carry its XOR-mapped address.
fn assert_search_works(sim: &Sim, name: &str, label: &str) {
    let public = sim.expect_connected(name).public_addr;
    let xor = &patterns(public)[2].1;
    let found = (sim.packets().iter())
        .any(|p| p.from == "server" && to_host(sim, name, p.dst) && contains(&p.data, xor));
    sim.check(found, || {
        format!("{label}: no STUN answer to {name} names {public}")
    });
}

/// A private client behind `edge` in one group with two normal clients (port-restricted and
/// full-cone NATs, which can punch to each other).
fn private_among_normal(seed: u64, label: &str, edge: Edge) {
    let mut private = ClientConfig::default();
    private.private = true;
    let mut sim = Scenario::new(seed)
        .link(LinkProfile::broadband())
        .trace_packets(true)
        .client_with("p", edge.clone(), private)
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .client("b", Edge::nat(NatConfig::full_cone()))
        .build();
    sim.eventually("every client connects", 10 * SECOND, |s| {
        ["p", "a", "b"].iter().all(|n| s.connected(n).is_some())
    });
    tell_lan_addresses(&mut sim, &["p", "a", "b"]);
    sim.advance(3 * SECOND); // NAT discovery of the normal clients
    let [hp, ha, hb] = sim.group_up(&["p", "a", "b"])[..] else {
        unreachable!()
    };
    sim.advance(10 * SECOND); // punching rounds
    exchange(&mut sim, "p", "a", 40);
    exchange(&mut sim, "p", "b", 40);
    exchange(&mut sim, "a", "b", 10);
    sim.advance(5 * SECOND);

    assert_hidden(&sim, "p", label);
    let hidden = Some("0.0.0.0:0".parse().expect("literal"));
    for (n, h) in [("a", ha), ("b", hb)] {
        sim.check(sim.client(n).peer_addr(hp) == hidden, || {
            format!("{label}: {n} knows p at {:?}", sim.client(n).peer_addr(hp))
        });
        sim.check(path(&sim, n, hp) == Some(Path::Relay), || {
            format!("{label}: {n} -> p is {:?}", path(&sim, n, hp))
        });
        sim.check(sim.client("p").peer_addr(h) == hidden, || {
            format!("{label}: p knows {n} at {:?}", sim.client("p").peer_addr(h))
        });
        sim.check(path(&sim, "p", h) == Some(Path::Relay), || {
            format!("{label}: p -> {n} is {:?}", path(&sim, "p", h))
        });
    }
    sim.check(sim.client_stats("p").probes_sent == 0, || {
        format!("{label}: p probed")
    });
    sim.check(sim.client("p").nat_behavior().is_none(), || {
        format!("{label}: p ran NAT discovery")
    });
    assert_normal_pair(&sim, "a", "b", label);
    assert_normal_pair(&sim, "b", "a", label);
    assert_search_works(&sim, "a", label);
}

#[test]
fn a_private_client_behind_a_full_cone_nat_is_never_revealed_though_punching_would_work() {
    let edge = Edge::nat(NatConfig::full_cone());
    assert!(direct_path_possible(
        &edge,
        &Edge::nat(NatConfig::port_restricted())
    ));
    private_among_normal(seed_or(23), "full cone", edge);
}

#[test]
fn a_private_client_behind_a_port_restricted_nat_is_never_revealed() {
    private_among_normal(
        seed_or(24),
        "port restricted",
        Edge::nat(NatConfig::port_restricted()),
    );
}

#[test]
fn a_private_client_behind_a_symmetric_nat_is_never_revealed() {
    private_among_normal(seed_or(25), "symmetric", Edge::nat(NatConfig::symmetric()));
}

#[test]
fn a_private_client_behind_carrier_grade_nat_is_never_revealed() {
    let edge = Edge::cgnat(NatConfig::port_restricted());
    private_among_normal(seed_or(26), "cgnat", edge);
}

#[test]
fn members_of_a_relay_only_room_never_see_each_other_while_a_normal_room_goes_direct() {
    let mut server = ServerConfig::new(pierce_core::SecretKey::from_bytes([0x51; 32]));
    server.rooms = Some(RoomsConfig::default());
    let mut sim = Scenario::new(seed_or(27))
        .link(LinkProfile::broadband())
        .trace_packets(true)
        .server_config(server)
        .client("a", Edge::nat(NatConfig::full_cone()))
        .client("b", Edge::nat(NatConfig::port_restricted()))
        .client("c", Edge::nat(NatConfig::full_cone()))
        .build();
    sim.eventually("every client connects", 10 * SECOND, |s| {
        ["a", "b", "c"].iter().all(|n| s.connected(n).is_some())
    });
    tell_lan_addresses(&mut sim, &["a", "b", "c"]);
    sim.advance(3 * SECOND);
    let quiet = RoomOptions::new().relay_only(true);
    sim.with_client("a", |c, now| {
        c.join_room_with(now, "quiet", "", true, quiet)
    })
    .expect("connected");
    sim.advance(SECOND);
    sim.with_client("b", |c, now| c.join_room(now, "quiet", "", false, 0))
        .expect("connected");
    sim.advance(SECOND);
    for n in ["b", "c"] {
        sim.with_client(n, |c, now| c.join_room(now, "loud", "", true, 0))
            .expect("connected");
        sim.advance(SECOND);
    }
    sim.advance(10 * SECOND);
    exchange(&mut sim, "a", "b", 40);
    exchange(&mut sim, "b", "c", 10);
    sim.advance(5 * SECOND);

    // a is only in the relay-only room: hidden from everyone. b is hidden from a (it is
    // seen by c, its partner in the normal room).
    assert_hidden(&sim, "a", "relay-only room");
    let [ha, hb] = ["a", "b"].map(|n| sim.expect_connected(n).host_id);
    let b_pats: Vec<_> = addresses(&sim, "b")
        .into_iter()
        .flat_map(patterns)
        .collect();
    for p in sim.packets().iter().filter(|p| to_host(&sim, "a", p.dst)) {
        sim.check(p.from == "server", || format!("{} sent to a", p.from));
        for (what, pat) in &b_pats {
            sim.check(!contains(&p.data, pat), || format!("{what} of b sent to a"));
        }
    }
    let hidden = Some("0.0.0.0:0".parse().expect("literal"));
    sim.check(sim.client("a").peer_addr(hb) == hidden, || {
        "a knows b".into()
    });
    sim.check(sim.client("b").peer_addr(ha) == hidden, || {
        "b knows a".into()
    });
    sim.check(path(&sim, "a", hb) == Some(Path::Relay), || {
        "a -> b not relayed".into()
    });
    sim.check(path(&sim, "b", ha) == Some(Path::Relay), || {
        "b -> a not relayed".into()
    });
    assert_normal_pair(&sim, "b", "c", "normal room");
    assert_normal_pair(&sim, "c", "b", "normal room");
    assert_search_works(&sim, "b", "relay-only room");
}
