//! Two clients behind the same NAT (no hairpinning): with LAN candidates they reach each
//! other directly over the LAN; without, they stay on the relay and still deliver.

use std::time::Duration;

use pierce_core::{Channel, ClientEvent, Path};
use pierce_sim::{Edge, LinkProfile, NatConfig, Scenario, seed_or};

const SECOND: Duration = Duration::from_secs(1);

fn run(with_candidates: bool) -> Option<Path> {
    let mut sim = Scenario::new(seed_or(11))
        .link(LinkProfile::lan())
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .client_beside("b", "a")
        .build();
    sim.eventually("both connect", 10 * SECOND, |s| {
        s.connected("a").is_some() && s.connected("b").is_some()
    });
    if with_candidates {
        for name in ["a", "b"] {
            let local = sim.host_addr(name);
            sim.with_client(name, |c, now| {
                c.set_local_addresses(now, &[local]).expect("queued")
            });
        }
        sim.advance(SECOND / 10);
    }
    let (ha, hb) = (
        sim.expect_connected("a").host_id,
        sim.expect_connected("b").host_id,
    );
    sim.with_server(|srv, now| srv.create_group(now, &[ha, hb]).expect("connected"));
    sim.eventually("a learns of b", 5 * SECOND, |s| {
        s.client("a").peers().any(|p| p == hb)
    });
    sim.with_client("a", |c, now| {
        c.send(now, hb, Channel::RELIABLE_ORDERED, b"hi")
            .expect("known")
    });
    sim.advance(5 * SECOND);
    assert!(
        sim.client_events("b").any(
            |(_, e)| matches!(e, ClientEvent::PeerMessage { payload, .. } if &payload[..] == b"hi")
        ),
        "delivered either way"
    );
    sim.client("a").peer_stats(hb).map(|s| s.path)
}

#[test]
fn peers_behind_one_nat_go_direct_over_the_lan_with_candidates() {
    let path = run(true);
    let Some(Path::Direct(addr)) = path else {
        panic!("expected a direct LAN path, got {path:?}");
    };
    assert!(
        addr.ip().to_string().starts_with("10."),
        "a LAN address: {addr}"
    );
}

#[test]
fn without_candidates_or_hairpinning_they_stay_on_the_relay() {
    assert_eq!(run(false), Some(Path::Relay));
}
