//! Clients behind every NAT type reach the server, learn their NAT's public address, and keep
//! the mapping alive with keepalives; a NAT that forgets faster than keepalives refresh is
//! kept open by the client's recovery pings once the server goes quiet.

use std::time::Duration;

use pierce_core::{ClientConfig, ClientEvent, ServerEvent};
use pierce_sim::{Action, Edge, LinkProfile, NatConfig, Scenario, Sim, seed_or};

const SECOND: Duration = Duration::from_secs(1);

/// These tests count NAT mappings and time keepalives against NAT timeouts: NAT behaviour
/// discovery (its own flows to the server's other addresses) is off.
fn no_discovery() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.nat_discovery = false;
    c
}

/// Every NAT behaviour the model has, plus an open host.
fn every_edge() -> Vec<(String, Edge)> {
    let mut edges: Vec<(String, Edge)> = NatConfig::all_types()
        .into_iter()
        .map(|(name, cfg)| (name, Edge::nat(cfg)))
        .collect();
    edges.extend([
        ("linux".to_owned(), Edge::nat(NatConfig::linux())),
        (
            "no-inbound-refresh".to_owned(),
            Edge::nat(NatConfig::symmetric().with_inbound_refresh(false)),
        ),
        (
            "hairpinning".to_owned(),
            Edge::nat(NatConfig::full_cone().with_hairpinning(true)),
        ),
        (
            "cgnat".to_owned(),
            Edge::cgnat(NatConfig::port_restricted()),
        ),
        (
            "double-symmetric".to_owned(),
            Edge::chain([NatConfig::symmetric(), NatConfig::symmetric_sequential()]),
        ),
        ("open".to_owned(), Edge::Open),
    ]);
    edges
}

#[test]
fn clients_behind_every_nat_type_connect_and_stay_connected_for_five_minutes() {
    let mut scenario = Scenario::new(seed_or(1))
        .link(LinkProfile::broadband())
        .client_config(no_discovery());
    let edges = every_edge();
    for (name, edge) in &edges {
        scenario = scenario.client(name.as_str(), edge.clone());
    }
    let mut sim = scenario.build();
    let names: Vec<String> = edges.into_iter().map(|(n, _)| n).collect();
    assert!(names.len() >= 32, "the catalogue shrank: {}", names.len());

    sim.eventually("every client connects", 10 * SECOND, |s| {
        names.iter().all(|n| s.connected(n).is_some())
    });
    let first: Vec<_> = names.iter().map(|n| sim.expect_connected(n)).collect();
    for (name, c) in names.iter().zip(&first) {
        // The server saw the client at its outermost NAT's mapping, and told it so.
        sim.check(Some(c.public_addr) == sim.mapped_addr(name), || {
            format!(
                "{name}: Connected.public_addr {} but the NAT maps it to {:?}",
                c.public_addr,
                sim.mapped_addr(name)
            )
        });
        let outer = sim.nats_of(name).last().map(|n| sim.nat(n).public_ip());
        let expected_ip = outer.unwrap_or_else(|| sim.host_addr(name).ip());
        sim.check(c.public_addr.ip() == expected_ip, || {
            format!(
                "{name}: public address {} is not its NAT's IP {expected_ip}",
                c.public_addr
            )
        });
    }

    sim.advance(300 * SECOND);

    let stats = sim.server_stats();
    sim.check(stats.clients == names.len() as u64, || {
        format!(
            "server has {} clients, expected {}",
            stats.clients,
            names.len()
        )
    });
    sim.check(stats.address_changes == 0, || {
        format!(
            "{} address changes: some mapping moved",
            stats.address_changes
        )
    });
    sim.check(
        sim.server_events()
            .all(|(_, e)| !matches!(e, ServerEvent::ClientLeft { .. })),
        || "a client left".to_owned(),
    );
    for (name, c) in names.iter().zip(&first) {
        sim.check(
            sim.client(name).is_connected() && sim.disconnected(name).is_none(),
            || format!("{name} lost its session"),
        );
        // Keepalives every 5 s held the 30 s (CGNAT: 120 s) mappings: the mapping made by
        // the first packet is the one still in use, on every NAT of the path.
        sim.check(sim.mapped_addr(name) == Some(c.public_addr), || {
            format!("{name}: mapping moved to {:?}", sim.mapped_addr(name))
        });
        for nat in sim.nats_of(name) {
            let s = sim.nat(nat).stats();
            sim.check(s.mappings_created == 1 && s.mappings_expired == 0, || {
                format!("{name}: NAT {nat} {s:?}")
            });
        }
        let cs = sim.client_stats(name);
        sim.check(cs.io.keepalives_sent >= 55, || {
            format!(
                "{name} sent only {} keepalives in 5 minutes",
                cs.io.keepalives_sent
            )
        });
    }
}

/// A client behind a port-restricted NAT with the given idle timeout. 2.5 s after
/// connecting it sends one application datagram, which moves its keepalive schedule half a
/// period away from the server's: from then on the two sides' keepalives alternate, 2.5 s
/// apart, instead of crossing within a round trip.
fn out_of_phase_client(seed: u64, nat_timeout: Duration) -> Sim {
    // Both sides keep alive every 5 s here (the server's default; clients default to 2 s).
    let mut config = no_discovery();
    config.keepalive_interval = pierce_core::DEFAULT_KEEPALIVE_INTERVAL;
    let mut sim = Scenario::new(seed)
        .client_config(config)
        .client(
            "a",
            Edge::nat(NatConfig::port_restricted().with_idle_timeout(nat_timeout)),
        )
        .link(LinkProfile::symmetric(
            pierce_sim::LinkConfig::with_latency(Duration::from_millis(10)),
        ))
        .build();
    sim.eventually("a connects", 5 * SECOND, |s| s.connected("a").is_some());
    sim.schedule(
        2500 * Duration::from_millis(1),
        Action::send("a", b"state".to_vec()),
    );
    sim
}

#[test]
fn a_nat_that_forgets_faster_than_keepalives_refresh_is_rescued_by_recovery_pings() {
    // Keepalives are every 5 s; this NAT forgets a mapping after 2 s. The client's keepalive
    // re-creates the mapping (same port: port preservation), but the server's keepalives
    // arrive 2.5 s later, after it has expired again, and are dropped. Once the server has
    // been quiet for 6 s the client pings every 0.5 s (it would be how it notices its
    // network came back): that keeps the mapping open, the server's packets get through,
    // and the session lives, at the cost of the faster pings.
    let mut sim = out_of_phase_client(seed_or(2), 2 * SECOND);
    let host = sim.expect_connected("a").host_id;
    sim.advance(60 * SECOND);
    sim.check(sim.disconnected("a").is_none(), || {
        format!("a lost its session: {:?}", sim.disconnected("a"))
    });
    sim.check(sim.client_left(host).is_none(), || {
        format!("the server dropped a: {:?}", sim.client_left(host))
    });
    let nat = sim.nat("a").stats();
    sim.check(
        nat.mappings_expired >= 2 && nat.dropped_no_mapping >= 2,
        || format!("the NAT expiry did not bite: {nat:?}"),
    );
    let pings = sim.client_stats("a").io.keepalives_sent;
    eprintln!("2 s NAT timeout: {pings} client keepalives in 60 s, NAT {nat:?}");
    sim.check(pings > 12, || format!("only {pings} keepalives"));
}

#[test]
fn the_same_schedule_survives_a_nat_that_remembers_for_30_seconds() {
    // The control for the test above: only the NAT timeout differs (and no fast pings).
    let mut sim = out_of_phase_client(seed_or(2), 30 * SECOND);
    sim.advance(120 * SECOND);
    sim.check(sim.client("a").is_connected(), || {
        "a lost its session".to_owned()
    });
    let nat = sim.nat("a").stats();
    sim.check(
        nat.mappings_expired == 0 && nat.dropped_no_mapping == 0,
        || format!("{nat:?}"),
    );
    let delivered = sim.server_events().any(
        |(_, e)| matches!(e, ServerEvent::Message { payload, .. } if payload.as_ref() == b"state"),
    );
    sim.check(delivered, || "the datagram never arrived".to_owned());
    sim.check(
        sim.client_events("a")
            .all(|(_, e)| !matches!(e, ClientEvent::Disconnected { .. })),
        || "a disconnected".to_owned(),
    );
}

#[test]
fn a_server_behind_a_nat_with_a_port_forward_is_reachable_from_behind_nats() {
    let mut sim = Scenario::new(seed_or(3))
        .server(Edge::cgnat(NatConfig::symmetric()))
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .client("b", Edge::nat(NatConfig::symmetric()))
        .link(LinkProfile::broadband())
        .build();
    let outer = *sim.nats_of(pierce_sim::SERVER).last().expect("two NATs");
    let public = sim.nat(outer).public_ip();
    sim.check(
        sim.server_addr() == std::net::SocketAddr::new(public, pierce_sim::SERVER_PORT),
        || format!("server address {}", sim.server_addr()),
    );
    sim.eventually("both connect", 5 * SECOND, |s| {
        s.connected("a").is_some() && s.connected("b").is_some()
    });
    sim.advance(60 * SECOND);
    for n in ["a", "b"] {
        let c = sim.expect_connected(n);
        sim.check(Some(c.public_addr) == sim.mapped_addr(n), || {
            format!("{n}: {c:?}")
        });
        sim.check(sim.client(n).is_connected(), || {
            format!("{n} lost its session")
        });
    }
    // The server's keepalives left through the forwards (from the address the clients
    // dialled), so the clients' NATs and the clients themselves accepted them.
    sim.check(sim.server_stats().io.keepalives_sent > 0, || {
        "no server keepalives".to_owned()
    });
    sim.check(sim.client_stats("a").io.keepalives_received > 0, || {
        "a never heard a server keepalive".to_owned()
    });
}
