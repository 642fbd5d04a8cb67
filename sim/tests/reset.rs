//! Stateless reset (issue #24): a server restarted with the same key answers its old clients'
//! packets with a reset, so they register again at once (with their tickets: same host ids)
//! instead of waiting out their idle timeout, rejoin their room by themselves, and their
//! pairs, relay-only ones included, carry on: every message arrives once, in order.
#![allow(clippy::field_reassign_with_default)] // the configs are #[non_exhaustive]

use std::time::Duration;

use pierce_core::{
    ClientConfig, ClientEvent, DisconnectReason, RoomsConfig, SecretKey, ServerConfig,
};
use pierce_sim::{Action, Edge, LinkProfile, NatConfig, Scenario, Sim, seed_or};

mod common;
use common::{drops_or_expiries, received, room_up, stream};

const SECOND: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(20);

/// `names` (with `configs`) in a room on a server with rooms, streaming; the server restarts
/// with the same key in the middle. Returns how long after the restart every member was
/// registered again and back in the room with the others, when the first reset was heard
/// (both after the restart), and the messages each way.
fn restart_mid_stream(
    seed: u64,
    clients: &[(&str, ClientConfig)],
) -> (Sim, Duration, Duration, u32) {
    let mut server = ServerConfig::new(SecretKey::from_bytes([0x24; 32]));
    server.rooms = Some(RoomsConfig::default());
    let mut scenario = Scenario::new(seed).server_config(server);
    for (name, config) in clients {
        let edge = Edge::nat(NatConfig::port_restricted());
        scenario = scenario.client_with(*name, edge, config.clone());
    }
    let mut sim = scenario.link(LinkProfile::broadband()).build();
    let names: Vec<&str> = clients.iter().map(|(n, _)| *n).collect();
    let ids = room_up(&mut sim, &names, TICK);
    let mut next = 0;
    stream(&mut sim, &names, &ids, &mut next, 2 * SECOND, TICK);
    let restart = sim.elapsed();
    sim.apply(Action::RestartServer).expect("restart");
    let mut back = None;
    let end = restart + 10 * SECOND;
    while sim.elapsed() < end {
        stream(&mut sim, &names, &ids, &mut next, TICK, TICK);
        // Registered again since the restart, and in the room with everyone.
        let all_back = names.iter().all(|n| {
            let c = sim.client(n);
            let again = sim
                .client_events(n)
                .any(|(t, e)| t > restart && matches!(e, ClientEvent::Connected { .. }));
            again
                && c.is_connected()
                && c.groups()
                    .any(|g| c.group_members(g).is_some_and(|m| m.len() == names.len()))
        });
        if back.is_none() && all_back {
            back = Some(sim.elapsed() - restart);
        }
    }
    sim.advance(3 * SECOND);
    let Some(back) = back else {
        sim.fail("the members never came back together".to_owned());
    };
    for (name, me) in names.iter().zip(&ids) {
        for from in ids.iter().filter(|p| *p != me) {
            let got = received(&sim, name, *from);
            sim.check(got == (0..next).collect::<Vec<_>>(), || {
                format!(
                    "{name} got {} of {next} messages from {from} in order",
                    got.len()
                )
            });
        }
        sim.check(
            matches!(sim.disconnected(name), Some((_, DisconnectReason::Reset))),
            || format!("{name}: {:?}", sim.disconnected(name)),
        );
        let c = sim.client(name);
        sim.check(c.host_id() == Some(*me), || {
            format!("{name} is not back with its id: {:?}", c.host_id())
        });
        let lost = drops_or_expiries(&sim, name);
        sim.check(lost == 0, || format!("{name}: {lost} drops or expiries"));
        let s = sim.client_stats(name);
        sim.check(
            // (Every packet sent while the reset is checked gets one: at least one, and none
            // refuted.)
            s.resets_received >= 1
                && s.resets_refuted == 0
                && s.pairs_carried_over == names.len() as u64 - 1,
            || format!("{name}: {s:?}"),
        );
    }
    let reset = names
        .iter()
        .filter_map(|n| sim.disconnected(n).map(|(t, _)| t - restart))
        .min()
        .unwrap_or_default();
    (sim, back, reset, next)
}

#[test]
fn relay_only_members_are_back_within_two_seconds_of_a_restart_with_nothing_lost() {
    let mut relay_only = ClientConfig::default();
    relay_only.direct_paths = false;
    let clients = [
        ("a", relay_only.clone()),
        ("b", relay_only.clone()),
        ("c", relay_only),
    ];
    let (sim, back, reset, next) = restart_mid_stream(seed_or(241), &clients);
    sim.check(back < 2 * SECOND, || {
        format!("back {back:?} after the restart")
    });
    eprintln!(
        "restart with the same key, three relay-only members: first reset heard {reset:?} \
         after the restart, all registered again and back in their room {back:?} after it; \
         {next} messages each way on each of 3 pairs delivered in order, none expired"
    );
}

#[test]
fn members_with_a_direct_path_and_a_relay_only_one_ride_through_a_restart_alike() {
    let mut relay_only = ClientConfig::default();
    relay_only.direct_paths = false;
    let clients = [
        ("a", ClientConfig::default()),
        ("b", ClientConfig::default()),
        ("c", relay_only),
    ];
    let (sim, back, _, next) = restart_mid_stream(seed_or(242), &clients);
    sim.check(back < 2 * SECOND, || {
        format!("back {back:?} after the restart")
    });
    eprintln!(
        "restart with the same key, a and b direct, c relay-only: back in their room {back:?} \
         after the restart; {next} messages each way on each pair delivered in order"
    );
}
