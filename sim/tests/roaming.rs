//! Scripted disruptions mid-session: NAT rebinding, roaming to a new IP, partitions,
//! server restarts and client crashes.

use std::time::Duration;

use pierce_core::{ClientEvent, DisconnectReason, LeaveReason, PublicKey, SecretKey, ServerConfig};
use pierce_sim::{Action, Edge, LinkProfile, NatConfig, SERVER, Scenario, Sim, seed_or};

const SECOND: Duration = Duration::from_secs(1);

fn run_until_time(sim: &mut Sim, t: Duration) {
    let d = t.saturating_sub(sim.elapsed());
    sim.advance(d);
}

fn all_connected(sim: &mut Sim, names: &[&str]) {
    sim.eventually("every client connects", 10 * SECOND, |s| {
        names.iter().all(|n| s.connected(n).is_some())
    });
}

fn got_message(sim: &Sim, name: &str, payload: &[u8]) -> bool {
    sim.client_events(name)
        .any(|(_, e)| matches!(e, ClientEvent::Message { payload: p } if p.as_ref() == payload))
}

#[test]
fn server_follows_clients_that_rebind_or_roam_mid_session() {
    let moved = ["rebinder", "roamer", "mover", "open-rebinder"];
    let mut sim = Scenario::new(seed_or(3))
        // Random ports: a rebind gives a new port on the same IP.
        .client("rebinder", Edge::nat(NatConfig::symmetric()))
        // Port preservation: a roam gives the same port on a new IP.
        .client("roamer", Edge::nat(NatConfig::port_restricted()))
        // No NAT: the host itself moves, or re-binds its socket.
        .client("mover", Edge::Open)
        .client("open-rebinder", Edge::Open)
        .client("bystander", Edge::nat(NatConfig::port_restricted()))
        .link(LinkProfile::broadband())
        .at(20 * SECOND, Action::rebind("rebinder"))
        .at(30 * SECOND, Action::roam("roamer"))
        .at(40 * SECOND, Action::roam("mover"))
        .at(45 * SECOND, Action::rebind("open-rebinder"))
        .build();
    all_connected(&mut sim, &moved);
    let before: Vec<_> = moved.iter().map(|n| sim.expect_connected(n)).collect();
    let bystander = sim.expect_connected("bystander");

    run_until_time(&mut sim, 60 * SECOND);
    for (name, b) in moved.iter().zip(&before) {
        let now = sim
            .mapped_addr(name)
            .unwrap_or_else(|| sim.fail(format!("{name} has no mapping")));
        sim.check(now != b.public_addr, || format!("{name} did not move"));
        sim.check(sim.server().client_addr(b.host_id) == Some(now), || {
            format!(
                "server still sends to {:?}, {name} is at {now}",
                sim.server().client_addr(b.host_id)
            )
        });
        sim.check(sim.client(name).is_connected(), || {
            format!("{name} lost its session")
        });
    }
    let [rebinder, roamer, mover, open_rebinder] = [0, 1, 2, 3].map(|i| {
        (
            before[i].public_addr,
            sim.mapped_addr(moved[i]).expect("checked"),
        )
    });
    sim.check(rebinder.0.ip() == rebinder.1.ip(), || {
        format!("rebind changed the IP: {rebinder:?}")
    });
    sim.check(
        roamer.0.ip() != roamer.1.ip() && roamer.0.port() == roamer.1.port(),
        || format!("roam through a preserving NAT: {roamer:?}"),
    );
    sim.check(mover.0.ip() != mover.1.ip(), || {
        format!("open host roam: {mover:?}")
    });
    sim.check(open_rebinder.0.ip() == open_rebinder.1.ip(), || {
        format!("open host rebind: {open_rebinder:?}")
    });
    sim.check(
        sim.mapped_addr("bystander") == Some(bystander.public_addr),
        || "the bystander moved".to_owned(),
    );
    let changes = sim.server_stats().address_changes;
    sim.check(changes == moved.len() as u64, || {
        format!("{changes} address changes")
    });

    // Both directions still work at the new addresses.
    for name in moved {
        sim.apply(Action::ServerSend(name.to_owned(), b"after".to_vec()))
            .expect("no busy loop");
        sim.apply(Action::send(name, b"still here".to_vec()))
            .expect("no busy loop");
    }
    sim.advance(SECOND);
    for (name, b) in moved.iter().zip(&before) {
        sim.check(got_message(&sim, name, b"after"), || {
            format!("{name} missed the server")
        });
        let heard = sim.server_events().any(|(_, e)| {
            matches!(e, pierce_core::ServerEvent::Message { from, payload }
                if *from == b.host_id && payload.as_ref() == b"still here")
        });
        sim.check(heard, || format!("the server missed {name}"));
    }
}

fn server_key(sim: &Sim, name: &str) -> Vec<PublicKey> {
    sim.client_events(name)
        .filter_map(|(_, e)| match e {
            ClientEvent::Connected { server_key, .. } => Some(*server_key),
            _ => None,
        })
        .collect()
}

#[test]
fn after_a_server_restart_clients_time_out_and_can_reconnect() {
    let names = ["a", "b"];
    // Resets off: the restart is like one with another key, noticed by the idle timeout
    // (with resets the clients hear at once: `tests/reset.rs`).
    let mut server = ServerConfig::new(SecretKey::from_bytes([4; 32]));
    server.reset_rate_global = 0;
    let mut sim = Scenario::new(seed_or(4))
        .server_config(server)
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .client("b", Edge::nat(NatConfig::symmetric()))
        .link(LinkProfile::broadband())
        .at(10 * SECOND, Action::RestartServer)
        .build();
    all_connected(&mut sim, &names);
    sim.eventually("both notice the restart", 30 * SECOND, |s| {
        names.iter().all(|n| s.disconnected(n).is_some())
    });
    for n in names {
        let (at, reason) = sim.disconnected(n).expect("checked");
        sim.check(reason == DisconnectReason::TimedOut, || {
            format!("{n}: {reason:?}")
        });
        sim.check(at <= 10 * SECOND + 15 * SECOND, || {
            format!("{n} noticed at {at:?}")
        });
    }
    let stats = sim.server_stats();
    sim.check(
        stats.clients == 0 && stats.dropped.unknown_session > 0,
        || format!("the restarted server should know no sessions: {stats:?}"),
    );

    let restarted_at = sim.elapsed();
    for n in names {
        sim.apply(Action::reconnect(n)).expect("no busy loop");
    }
    sim.eventually("both reconnect", 10 * SECOND, |s| {
        names
            .iter()
            .all(|n| s.connected(n).is_some_and(|c| c.at >= restarted_at))
    });
    sim.check(sim.server_stats().clients == 2, || {
        "two clients again".to_owned()
    });
    for n in names {
        let keys = server_key(&sim, n);
        sim.check(keys.len() == 2 && keys[0] == keys[1], || {
            format!("{n}: the restarted server must keep its key: {keys:?}")
        });
    }
}

#[test]
fn a_crashed_client_is_timed_out_by_the_server() {
    let mut sim = Scenario::new(seed_or(5))
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .client("b", Edge::nat(NatConfig::port_restricted()))
        .link(LinkProfile::broadband())
        .at(10 * SECOND, Action::crash("a"))
        .build();
    all_connected(&mut sim, &["a", "b"]);
    let a = sim.expect_connected("a").host_id;
    sim.eventually("the server drops a", 30 * SECOND, |s| {
        s.client_left(a).is_some()
    });
    let (at, reason) = sim.client_left(a).expect("checked");
    sim.check(reason == LeaveReason::TimedOut, || format!("{reason:?}"));
    // Idle timeout 15 s, counted from a's last keepalive (at most 5 s before the crash).
    sim.check(at >= 20 * SECOND && at <= 26 * SECOND, || {
        format!("left at {at:?}")
    });
    sim.check(sim.net_stats().dead_host > 0, || {
        "nothing reached the corpse".to_owned()
    });
    run_until_time(&mut sim, 40 * SECOND);
    sim.check(sim.client("b").is_connected(), || {
        "b was affected".to_owned()
    });
}

/// Keepalives go out every 5 s whatever happens and the idle timeout is 15 s, so an outage
/// is survived only if it ends in time for the next keepalive after the one it ate to land
/// inside the 15 s window: about 15 − 2 × 5 = 5 s, not 15 s. (An 8 s partition from 10 s to
/// 18 s loses the keepalives of 10 s and 15 s; the one at 20 s comes 15 s after the last one
/// heard, too late.)
#[test]
fn outages_shorter_than_a_keepalive_gap_are_survived_and_longer_ones_are_not() {
    let mut sim = Scenario::new(seed_or(6))
        .client("short", Edge::nat(NatConfig::port_restricted()))
        .client("long", Edge::nat(NatConfig::port_restricted()))
        .client("one-way", Edge::nat(NatConfig::port_restricted()))
        .client("offline", Edge::nat(NatConfig::port_restricted()))
        .link(LinkProfile::broadband())
        .at(10 * SECOND, Action::partition("short", SERVER))
        .at(10 * SECOND, Action::partition("long", SERVER))
        .at(10 * SECOND, Action::partition_one_way(SERVER, "one-way"))
        .at(10 * SECOND, Action::Offline("offline".to_owned()))
        .at(13 * SECOND, Action::heal("short", SERVER))
        .at(40 * SECOND, Action::heal("long", SERVER))
        .at(40 * SECOND, Action::heal(SERVER, "one-way"))
        .at(40 * SECOND, Action::Online("offline".to_owned()))
        .build();
    all_connected(&mut sim, &["short", "long", "one-way", "offline"]);
    let host = |sim: &Sim, n: &str| sim.expect_connected(n).host_id;
    run_until_time(&mut sim, 60 * SECOND);

    sim.check(sim.client("short").is_connected(), || {
        "a 3 s partition killed short".to_owned()
    });
    for n in ["long", "one-way", "offline"] {
        let d = sim.disconnected(n);
        sim.check(matches!(d, Some((_, DisconnectReason::TimedOut))), || {
            format!("{n}: {d:?}")
        });
        let left = sim.client_left(host(&sim, n));
        sim.check(matches!(left, Some((_, LeaveReason::TimedOut))), || {
            format!("server on {n}: {left:?}")
        });
    }
    // One-way: the server kept hearing the client until the client gave up, so it dropped
    // the client later than the client dropped the server.
    let (client_gave_up, _) = sim.disconnected("one-way").expect("checked");
    let (server_gave_up, _) = sim.client_left(host(&sim, "one-way")).expect("checked");
    sim.check(server_gave_up > client_gave_up + 5 * SECOND, || {
        format!("one-way: client {client_gave_up:?}, server {server_gave_up:?}")
    });
    let net = sim.net_stats();
    sim.check(net.partitioned > 0 && net.offline > 0, || {
        format!("{net:?}")
    });
}

/// Issue #7's rebinding case: two port-restricted peers on a direct path, one NAT forgets
/// every mapping in the middle of a reliable stream (the next packet leaves from a new
/// port). The sessions survive (ids, not addresses), the server tells the other peer where
/// its partner went, the pair goes direct again within seconds, and the stream arrives
/// exactly once, in order.
#[test]
fn a_rebinding_peer_goes_direct_again_and_its_stream_survives() {
    use pierce_core::{Channel, Path};
    use pierce_sim::PortAllocation;
    let mut sim = Scenario::new(seed_or(11))
        // Random ports: after the rebind, a's packets leave from a new port.
        .client(
            "a",
            Edge::nat(NatConfig::port_restricted().with_allocation(PortAllocation::Random)),
        )
        .client("b", Edge::nat(NatConfig::port_restricted()))
        .link(LinkProfile::broadband())
        .build();
    all_connected(&mut sim, &["a", "b"]);
    let (ha, hb) = (
        sim.expect_connected("a").host_id,
        sim.expect_connected("b").host_id,
    );
    sim.with_server(|srv, now| srv.create_group(now, &[ha, hb]).expect("connected"));
    let direct = |s: &Sim, n: &str, p| {
        matches!(
            s.client(n).peer_stats(p).map(|st| st.path),
            Some(Path::Direct(_))
        )
    };
    sim.eventually("a and b go direct", 5 * SECOND, |s| {
        direct(s, "a", hb) && direct(s, "b", ha)
    });
    let old = sim.mapped_addr("a").expect("mapped");
    let tick = Duration::from_millis(20);
    let mut rebound_at = None;
    for i in 0u32..500 {
        sim.with_client("a", |c, now| {
            c.send(now, hb, Channel::RELIABLE_ORDERED, &i.to_be_bytes())
        })
        .expect("queued");
        if i == 150 {
            sim.apply(Action::rebind("a")).expect("rebind");
            rebound_at = Some(sim.elapsed());
        }
        sim.advance(tick);
    }
    let rebound_at = rebound_at.expect("rebound");
    sim.eventually("direct again both ways", 10 * SECOND, |s| {
        direct(s, "a", hb) && direct(s, "b", ha)
    });
    sim.advance(5 * SECOND);
    // When each end last switched to direct after the rebind.
    let back = ["a", "b"]
        .iter()
        .filter_map(|n| {
            sim.client_events(n)
                .filter(|(t, e)| {
                    *t >= rebound_at
                        && matches!(
                            e,
                            ClientEvent::PathChanged {
                                path: Path::Direct(_),
                                ..
                            }
                        )
                })
                .map(|(t, _)| t - rebound_at)
                .last()
        })
        .max()
        .unwrap_or_default();
    let new = sim.mapped_addr("a").expect("mapped");
    sim.check(new != old, || "the rebind did not move a".to_owned());
    let got: Vec<u32> = sim
        .client_events("b")
        .filter_map(|(_, e)| match e {
            ClientEvent::PeerMessage { from, payload, .. } if *from == ha => {
                Some(u32::from_be_bytes(payload[..4].try_into().ok()?))
            }
            _ => None,
        })
        .collect();
    sim.check(got == (0..500).collect::<Vec<_>>(), || {
        format!("b got {} messages, not 0..500 in order", got.len())
    });
    for n in ["a", "b"] {
        sim.check(sim.disconnected(n).is_none(), || {
            format!("{n} lost its session")
        });
        sim.check(
            !sim.client_events(n)
                .any(|(_, e)| matches!(e, ClientEvent::MemberLeft { .. })),
            || format!("{n} saw a member leave"),
        );
    }
    let lost = sim
        .client_events("a")
        .filter(|(t, e)| {
            *t >= rebound_at
                && matches!(
                    e,
                    ClientEvent::PathChanged {
                        path: Path::Relay,
                        ..
                    }
                )
        })
        .count();
    eprintln!(
        "a rebound from {old} to {new}; direct path lost {lost} time(s), direct again both ways \
         {back:?} after the rebind; 500 messages in order"
    );
    sim.check(back < 5 * SECOND, || {
        format!("direct again only after {back:?}")
    });
}
