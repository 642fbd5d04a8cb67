//! Port mapping (issue #25 item 2): a client behind a NAT that honours PCP / NAT-PMP
//! (`NatConfig::port_mapping`) gets a static forward and offers its public address to peers,
//! so even two symmetric NATs pair up directly, on that address.

#![allow(clippy::field_reassign_with_default)] // ClientConfig is #[non_exhaustive]

use std::time::Duration;

use pierce_core::portmap::PortMapEvent;
use pierce_core::{ClientConfig, ClientEvent, HostId, Path};
use pierce_sim::{Edge, LinkProfile, NatConfig, Scenario, Sim, direct_path_possible, seeds};

const SECOND: Duration = Duration::from_secs(1);

/// `a` behind `a_edge`, `b` behind a random symmetric NAT, introduced; runs 5 s.
fn pair(seed: u64, a_edge: Edge, config: ClientConfig) -> (Sim, HostId, HostId) {
    let mut sim = Scenario::new(seed)
        .link(LinkProfile::broadband())
        .client_config(config)
        .client("a", a_edge)
        .client("b", Edge::nat(NatConfig::symmetric()))
        .build();
    let (ha, hb) = sim.group_pair("a", "b");
    sim.advance(5 * SECOND);
    (sim, ha, hb)
}

fn path(sim: &Sim, name: &str, peer: HostId) -> Option<Path> {
    sim.client(name).peer_stats(peer).map(|s| s.path)
}

#[test]
fn a_symmetric_nat_that_maps_ports_goes_direct_with_a_symmetric_peer_on_the_mapped_address() {
    let mapped = Edge::nat(NatConfig::symmetric().with_port_mapping(true));
    let plain = Edge::nat(NatConfig::symmetric());
    assert!(direct_path_possible(&mapped, &plain));
    assert!(!direct_path_possible(&plain, &plain));
    for seed in seeds(1..6) {
        let (sim, ha, hb) = pair(seed, mapped.clone(), ClientConfig::default());
        let external = sim.client("a").mapped_addr();
        let granted = sim.client_events("a").any(|(_, e)| {
            matches!(
                e,
                ClientEvent::PortMapping {
                    event: PortMapEvent::Granted { .. },
                    ..
                }
            )
        });
        sim.check(granted && external.is_some(), || {
            format!("a has no mapping ({external:?})")
        });
        let nat = sim.nats_of("a")[0].to_owned();
        sim.check(sim.nat(&nat).stats().port_mappings == 1, || {
            "the NAT installed no forward".into()
        });
        sim.check(matches!(path(&sim, "a", hb), Some(Path::Direct(_))), || {
            format!("a's path to b is {:?}", path(&sim, "a", hb))
        });
        let b_path = path(&sim, "b", ha);
        sim.check(
            external.is_some_and(|e| b_path == Some(Path::Direct(e))),
            || format!("b's path to a is {b_path:?}, not direct to the mapped {external:?}"),
        );
        let s = sim.client("a").stats().port_mapping;
        sim.check(s.granted == 1 && s.failed == 0 && s.dropped == 0, || {
            format!("{s:?}")
        });
    }
}

#[test]
fn without_port_mapping_in_the_client_the_same_pair_stays_on_the_relay() {
    let mapped = Edge::nat(NatConfig::symmetric().with_port_mapping(true));
    let mut config = ClientConfig::default();
    config.port_mapping = false;
    for seed in seeds(1..4) {
        let (sim, ha, hb) = pair(seed, mapped.clone(), config.clone());
        let nat = sim.nats_of("a")[0].to_owned();
        sim.check(sim.nat(&nat).stats().port_mappings == 0, || {
            "a forward was installed".into()
        });
        sim.check(path(&sim, "a", hb) == Some(Path::Relay), || {
            format!("a's path to b is {:?}", path(&sim, "a", hb))
        });
        sim.check(path(&sim, "b", ha) == Some(Path::Relay), || {
            format!("b's path to a is {:?}", path(&sim, "b", ha))
        });
    }
}

#[test]
fn disconnecting_deletes_the_forward() {
    let mapped = Edge::nat(NatConfig::symmetric().with_port_mapping(true));
    let (mut sim, _, _) = pair(1, mapped, ClientConfig::default());
    let external = sim.client("a").mapped_addr().expect("mapped");
    let nat = sim.nats_of("a")[0].to_owned();
    sim.check(sim.nat(&nat).forwarded(external.port()).is_some(), || {
        "no forward".into()
    });
    sim.with_client("a", |c, now| c.disconnect(now, 0));
    sim.advance(SECOND);
    sim.check(sim.nat(&nat).forwarded(external.port()).is_none(), || {
        "the forward outlived the client's disconnect".into()
    });
}
