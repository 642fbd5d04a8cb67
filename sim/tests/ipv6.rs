//! IPv6 in the simulator (issue #20 item 4): dual-stack hosts behind IPv4 NATs with stateful
//! IPv6 firewalls, IPv6-only hosts, and a NAT64 gateway. Each scenario asserts the path the
//! oracle (`direct_path_possible_stacks`) predicts, the exact address of a direct path, and
//! that every reliable message arrives once and in order.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use pierce_core::{Channel, HostId, Path, synthesize_nat64};
use pierce_sim::{
    CLIENT_PORT, DropCause, Edge, FirewallConfig, LinkProfile, Nat64Config, NatConfig, PacketFate,
    Scenario, Sim, Stack, Traversal, direct_path_possible_stacks, direct_path_possible_with,
    seed_or,
};

const SECOND: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(100);
/// Reliable messages each way.
const MESSAGES: u32 = 40;

/// Puts `a` and `b` in one group, streams [`MESSAGES`] numbered reliable messages each way
/// (one per tick), then lets paths settle for up to 10 s; returns their host ids.
fn exchange(sim: &mut Sim, a: &str, b: &str) -> (HostId, HostId) {
    let ids = sim.group_up(&[a, b]);
    let (ha, hb) = (ids[0], ids[1]);
    for i in 0..MESSAGES {
        for (from, to) in [(a, hb), (b, ha)] {
            sim.with_client(from, |c, now| {
                c.send(now, to, Channel::RELIABLE_ORDERED, &i.to_be_bytes())
            })
            .unwrap_or_else(|e| panic!("{from}: {e}"));
        }
        sim.advance(TICK);
    }
    sim.advance(10 * SECOND);
    let all: Vec<u32> = (0..MESSAGES).collect();
    for (name, from) in [(a, hb), (b, ha)] {
        let got = common::received(sim, name, from);
        sim.check(got == all, || {
            format!("{name} got {got:?}, not 0..{MESSAGES}")
        });
    }
    (ha, hb)
}

fn path(sim: &Sim, name: &str, peer: HostId) -> Path {
    match sim.peer_path(name, peer) {
        Some(p) => p,
        None => sim.fail(format!("{name} has no path to {peer:?}")),
    }
}

#[track_caller]
fn expect_direct_to(sim: &Sim, name: &str, peer: HostId, to: SocketAddr) {
    let p = path(sim, name, peer);
    sim.check(p == Path::Direct(to), || {
        format!("{name}: path {p:?}, expected direct to {to}")
    });
}

fn v6_of(sim: &Sim, name: &str) -> SocketAddr {
    match sim.ipv6_addr(name) {
        Some(ip) => SocketAddr::new(ip, CLIENT_PORT),
        None => sim.fail(format!("{name} has no IPv6 address")),
    }
}

fn dual_behind(name_a: &str, edge_a: Edge, name_b: &str, edge_b: Edge, seed: u64) -> Sim {
    Scenario::new(seed)
        .link(LinkProfile::broadband())
        .client(name_a, edge_a)
        .client(name_b, edge_b)
        .dual_stack(name_a, Some(FirewallConfig::new()))
        .dual_stack(name_b, Some(FirewallConfig::new()))
        .build()
}

/// Both IPv4 edges are hard (relay territory on IPv4), both hosts have IPv6 behind a
/// firewall: the pair ends direct over IPv6, at each other's global address.
fn both_dual_stack_go_direct_over_ipv6(edge: Edge) -> Sim {
    let dual = Stack::dual_firewalled();
    assert!(!direct_path_possible_with(&edge, &edge, Traversal::PIERCE));
    assert!(direct_path_possible_stacks(
        (&edge, &dual),
        (&edge, &dual),
        Traversal::PIERCE
    ));
    let mut sim = dual_behind("a", edge.clone(), "b", edge, seed_or(11));
    let (ha, hb) = exchange(&mut sim, "a", "b");
    let (a6, b6) = (v6_of(&sim, "a"), v6_of(&sim, "b"));
    expect_direct_to(&sim, "a", hb, b6);
    expect_direct_to(&sim, "b", ha, a6);
    for n in ["a", "b"] {
        let fw = sim.firewall(n).stats();
        // The peer's probes came in through a pinhole; the server's too (if any went over
        // IPv6: here the client reaches the server over IPv4, so only the peer's).
        sim.check(fw.passed_in > 0 && fw.pinholes_opened >= 1, || {
            format!("{n}: firewall {fw:?}")
        });
    }
    sim
}

#[test]
fn dual_stack_hosts_behind_symmetric_nats_go_direct_over_ipv6_through_their_firewalls() {
    both_dual_stack_go_direct_over_ipv6(Edge::nat(NatConfig::symmetric()));
}

#[test]
fn dual_stack_hosts_behind_cgnat_go_direct_over_ipv6_through_their_firewalls() {
    both_dual_stack_go_direct_over_ipv6(Edge::cgnat(NatConfig::symmetric()));
}

/// An IPv6-only phone behind its carrier's NAT64 and an IPv4 host behind a port-restricted
/// home router. The gateway's NAT is endpoint-independent, so the oracle says direct: the
/// phone reaches the peer at its public IPv4 address synthesised into `64:ff9b::/96`, the
/// peer reaches the phone at the gateway's public IPv4 address.
#[test]
fn an_ipv6_only_host_behind_nat64_goes_direct_with_an_ipv4_host_behind_a_nat() {
    let gateway = Nat64Config::new();
    let home = Edge::nat(NatConfig::port_restricted());
    let phone = Stack::V6Only {
        firewall: None,
        nat64: Some(gateway.clone()),
    };
    assert!(direct_path_possible_stacks(
        (&Edge::Open, &phone),
        (&home, &Stack::V4),
        Traversal::PIERCE
    ));
    let mut sim = Scenario::new(seed_or(12))
        .link(LinkProfile::broadband())
        .client_nat64("phone", gateway.clone(), None)
        .client("home", home)
        .build();
    let (hp, hh) = exchange(&mut sim, "phone", "home");
    let home_public = sim.expect_connected("home").public_addr;
    let phone_public = sim.expect_connected("phone").public_addr;
    sim.check(phone_public.ip() == sim.nat("phone").public_ip(), || {
        format!("the server sees the phone at {phone_public}, not the gateway's IPv4")
    });
    expect_direct_to(
        &sim,
        "phone",
        hh,
        synthesize_nat64(gateway.prefix, home_public),
    );
    expect_direct_to(&sim, "home", hp, phone_public);
    let nat = sim.nat("phone").stats();
    sim.check(nat.translated_out > 0 && nat.translated_in > 0, || {
        format!("the gateway translated nothing: {nat:?}")
    });
}

/// The same phone against an IPv4 host behind a symmetric NAT with random ports. The gateway
/// is the easy side, so the oracle with Pierce's techniques says direct, by birthday probing;
/// that needs the phone's NAT discovery to reach the server's IPv4 alternate address through
/// the prefix too (it learns the gateway's NAT is endpoint-independent, filtering by address
/// and port). The phone's direct path is to the hard side's IPv4 synthesised into the prefix;
/// the hard side's is to the gateway's public IPv4 address.
#[test]
fn an_ipv6_only_host_behind_nat64_and_an_ipv4_host_behind_a_symmetric_nat_go_direct() {
    use pierce_core::ClientEvent;
    use pierce_core::nat::Dependence;
    let gateway = Nat64Config::new();
    let sym = Edge::nat(NatConfig::symmetric());
    let phone = Stack::V6Only {
        firewall: None,
        nat64: Some(gateway.clone()),
    };
    assert!(direct_path_possible_stacks(
        (&Edge::Open, &phone),
        (&sym, &Stack::V4),
        Traversal::PIERCE,
    ));
    let mut sim = Scenario::new(seed_or(13))
        .link(LinkProfile::broadband())
        .client_nat64("phone", gateway.clone(), None)
        .client("hard", sym)
        .build();
    let (hp, hh) = exchange(&mut sim, "phone", "hard");
    let discovered = sim.client_events("phone").find_map(|(_, e)| match e {
        ClientEvent::NatDiscovered { result: Ok(b), .. } => Some((b.mapping, b.filtering)),
        _ => None,
    });
    sim.check(
        discovered
            == Some((
                Some(Dependence::EndpointIndependent),
                Some(Dependence::AddressAndPortDependent),
            )),
        || format!("the phone discovered {discovered:?}"),
    );
    let phone_public = sim.expect_connected("phone").public_addr;
    expect_direct_to(&sim, "hard", hp, phone_public);
    let p = path(&sim, "phone", hh);
    let hard_ip = sim.nat("hard").public_ip();
    let ok = matches!(p, Path::Direct(addr)
        if gateway.embedded(addr).is_some_and(|v4| v4.ip() == hard_ip));
    sim.check(ok, || {
        format!("phone: {p:?}, expected direct to {hard_ip} through the prefix")
    });
}

/// A dual-stack host and an IPv4-only host have only IPv4 in common: with two
/// port-restricted NATs they go direct over IPv4, at each other's public IPv4 address; the
/// IPv4-only host cannot send to the IPv6 candidate it was given (dropped, no route).
#[test]
fn a_dual_stack_host_and_an_ipv4_only_host_go_direct_over_ipv4() {
    let pr = Edge::nat(NatConfig::port_restricted());
    let mut sim = Scenario::new(seed_or(14))
        .link(LinkProfile::broadband())
        .client("dual", pr.clone())
        .client("v4", pr)
        .dual_stack("dual", Some(FirewallConfig::new()))
        .trace_packets(true)
        .build();
    let (hd, hv) = exchange(&mut sim, "dual", "v4");
    let dual_public = sim.expect_connected("dual").public_addr;
    let v4_public = sim.expect_connected("v4").public_addr;
    expect_direct_to(&sim, "dual", hv, v4_public);
    expect_direct_to(&sim, "v4", hd, dual_public);
    let dual6 = v6_of(&sim, "dual");
    let to_v6: Vec<_> = sim
        .packets()
        .iter()
        .filter(|p| p.from == "v4" && p.dst == dual6)
        .collect();
    sim.check(!to_v6.is_empty(), || {
        "v4 never tried the IPv6 candidate".to_owned()
    });
    sim.check(
        to_v6.iter().all(|p| {
            p.fates.iter().all(|f| {
                matches!(
                    f,
                    PacketFate::Dropped {
                        cause: DropCause::Net(pierce_sim::NetDrop::NoRoute),
                        ..
                    }
                )
            })
        }),
        || "an IPv4-only host reached an IPv6 address".to_owned(),
    );
}

/// One end without IPv6 and both IPv4 NATs symmetric: relay, as the oracle says; the
/// messages still arrive.
#[test]
fn a_dual_stack_host_and_an_ipv4_only_host_behind_symmetric_nats_relay() {
    let sym = Edge::nat(NatConfig::symmetric());
    assert!(!direct_path_possible_stacks(
        (&sym, &Stack::dual_firewalled()),
        (&sym, &Stack::V4),
        Traversal::PIERCE
    ));
    let mut sim = Scenario::new(seed_or(15))
        .link(LinkProfile::broadband())
        .client("dual", sym.clone())
        .client("v4", sym)
        .dual_stack("dual", Some(FirewallConfig::new()))
        .build();
    let (hd, hv) = exchange(&mut sim, "dual", "v4");
    for (n, p) in [("dual", hv), ("v4", hd)] {
        let got = path(&sim, n, p);
        sim.check(got == Path::Relay, || {
            format!("{n}: {got:?}, expected relay")
        });
    }
}

/// Two IPv6-only hosts, each behind a firewall that blocks everything inbound it did not ask
/// for, connected to a dual-stack server over IPv6: they punch each other's global address at
/// about the same time (the server coordinates), each opening the pinhole the other needs.
/// One side's link is slow, so the fast side's first probes reach the slow side's firewall
/// before its own went out, and are dropped: the firewall really does filter.
#[test]
fn ipv6_hosts_whose_firewalls_block_inbound_go_direct_by_simultaneous_open() {
    let mut sim = Scenario::new(seed_or(16))
        .server_dual_stack()
        .link(LinkProfile::broadband())
        .client_ipv6_only("a", Some(FirewallConfig::new()))
        .client_ipv6_only("b", Some(FirewallConfig::new()))
        .host_link("b", LinkProfile::cellular())
        .trace_packets(true)
        .build();
    let server6 = sim.server_addr_v6().expect("a dual-stack server");
    assert!(server6.is_ipv6(), "{server6}");
    for n in ["a", "b"] {
        sim.eventually("connects over IPv6", 10 * SECOND, |s| {
            s.connected(n).is_some()
        });
        let public = sim.expect_connected(n).public_addr;
        sim.check(public == v6_of(&sim, n), || {
            format!("{n}: the server sees {public}")
        });
    }
    let (ha, hb) = exchange(&mut sim, "a", "b");
    let (a6, b6) = (v6_of(&sim, "a"), v6_of(&sim, "b"));
    expect_direct_to(&sim, "a", hb, b6);
    expect_direct_to(&sim, "b", ha, a6);
    let dropped: u64 = ["a", "b"]
        .iter()
        .map(|n| sim.firewall(n).stats().dropped_inbound)
        .sum();
    // Every drop the firewalls counted is a datagram that never arrived, from the peer.
    let fates: Vec<(&str, SocketAddr)> = sim
        .packets()
        .iter()
        .filter(|p| {
            p.fates.iter().any(|f| {
                matches!(
                    f,
                    PacketFate::Dropped {
                        cause: DropCause::Firewall { .. },
                        ..
                    }
                )
            })
        })
        .map(|p| (p.from.as_str(), p.dst))
        .collect();
    sim.check(dropped > 0 && fates.len() as u64 == dropped, || {
        format!("firewalls counted {dropped} drops, the trace shows {fates:?}")
    });
    sim.check(
        fates
            .iter()
            .all(|(from, dst)| (*from, *dst) == ("a", b6) || (*from, *dst) == ("b", a6)),
        || format!("a firewall dropped something other than the peer's probes: {fates:?}"),
    );
}

/// Same seed, same run: byte-identical logs and counters with dual-stack hosts, firewalls
/// and a NAT64 gateway.
#[test]
fn the_same_seed_gives_byte_identical_ipv6_logs() {
    fn run(seed: u64) -> String {
        let mut sim = Scenario::new(seed)
            .link(LinkProfile::wifi())
            .client("a", Edge::nat(NatConfig::symmetric()))
            .client("b", Edge::cgnat(NatConfig::port_restricted()))
            .dual_stack("a", Some(FirewallConfig::new()))
            .dual_stack("b", Some(FirewallConfig::new()))
            .client_nat64("c", Nat64Config::new(), Some(FirewallConfig::new()))
            .client("d", Edge::nat(NatConfig::port_restricted()))
            .trace_packets(true)
            .build();
        let ids = sim.group_up(&["a", "b", "c", "d"]);
        for i in 0..30u32 {
            for (k, n) in ["a", "b", "c", "d"].iter().enumerate() {
                let to = ids[(k + 1) % ids.len()];
                sim.with_client(n, |c, now| {
                    c.send(now, to, Channel::RELIABLE_ORDERED, &i.to_be_bytes())
                })
                .unwrap_or_else(|e| panic!("{n}: {e}"));
            }
            sim.advance(TICK);
        }
        sim.advance(5 * SECOND);
        let mut s = sim.log_text();
        for n in ["a", "b", "c", "d"] {
            s += &format!("{n}: {:?}\n", sim.client_stats(n));
        }
        for n in ["a", "b", "c"] {
            s += &format!("{n} firewall: {:?}\n", sim.firewall(n).stats());
        }
        s += &format!(
            "gateway: {:?}\nnet: {:?}\n",
            sim.nat("c").stats(),
            sim.net_stats()
        );
        s
    }
    let seed = seed_or(7);
    let (x, y) = (run(seed), run(seed));
    assert!(x == y, "seed {seed}: two runs differ");
    assert!(x.contains("2001:db8:"), "no IPv6 traffic in the log");
    assert_ne!(x, run(seed + 1), "another seed gives the same run");
}

#[test]
fn an_ipv6_only_client_without_nat64_or_a_dual_stack_server_is_refused_at_build() {
    let r = std::panic::catch_unwind(|| {
        Scenario::new(1).client_ipv6_only("a", None).build();
    });
    let msg = r
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("the server must be dual-stack"), "{msg}");
}
