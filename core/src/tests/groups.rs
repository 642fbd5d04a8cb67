//! Server-managed P2P groups, pairs and relay-first messaging.

use std::time::Duration;

use super::util::{Net, server_config};
use crate::{ClientConfig, ClientEvent, GroupError, MemberLeftReason, SendError, ServerEvent};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn joined(group: crate::GroupId, member: crate::HostId, member_count: u16) -> ClientEvent {
    ClientEvent::MemberJoined {
        group,
        member,
        member_count,
    }
}

fn ack_completes(net: &Net) -> Vec<(crate::GroupId, crate::HostId)> {
    net.server_events
        .iter()
        .filter_map(|(_, e)| match e {
            ServerEvent::GroupJoinAckComplete { group, member } => Some((*group, *member)),
            _ => None,
        })
        .collect()
}

#[test]
fn group_lifecycle_events_arrive_in_order_on_every_member() {
    let mut net = Net::connected_relay_only(3);
    let [a, b, c] = net.hosts()[..] else { panic!() };
    let marks: Vec<usize> = net.clients.iter().map(|c| c.events.len()).collect();
    let now = net.now;
    let g = net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(ms(100));
    assert_eq!(
        net.events_since(0, marks[0]),
        vec![joined(g, a, 1), joined(g, b, 2)]
    );
    assert_eq!(
        net.events_since(1, marks[1]),
        vec![joined(g, a, 2), joined(g, b, 2)]
    );
    assert_eq!(
        net.events_since(2, marks[2]),
        vec![],
        "c is not in the group"
    );
    assert_eq!(ack_completes(&net), vec![(g, a), (g, b)]);
    assert_eq!(net.clients[1].client.group_members(g), Some(&[a, b][..]));

    // c joins: everyone hears of it, c hears of everyone.
    let marks: Vec<usize> = net.clients.iter().map(|c| c.events.len()).collect();
    let now = net.now;
    net.server.join_group(now, g, c).unwrap();
    assert_eq!(
        net.server.join_group(now, g, c),
        Err(GroupError::AlreadyMember)
    );
    net.run_for(ms(100));
    assert_eq!(net.events_since(0, marks[0]), vec![joined(g, c, 3)]);
    assert_eq!(net.events_since(1, marks[1]), vec![joined(g, c, 3)]);
    assert_eq!(
        net.events_since(2, marks[2]),
        vec![joined(g, a, 3), joined(g, b, 3), joined(g, c, 3)]
    );

    // a leaves: the others see it; a sees itself leave.
    let marks: Vec<usize> = net.clients.iter().map(|c| c.events.len()).collect();
    let now = net.now;
    net.server.leave_group(now, g, a).unwrap();
    net.run_for(ms(100));
    let left = |m| ClientEvent::MemberLeft {
        group: g,
        member: m,
        reason: MemberLeftReason::Left,
    };
    for (i, mark) in marks.iter().enumerate() {
        assert_eq!(net.events_since(i, *mark), vec![left(a)], "client {i}");
    }
    assert_eq!(net.clients[0].client.groups().count(), 0);

    // c disconnects: b sees it as Disconnected.
    let now = net.now;
    net.clients[2].client.disconnect(now, 0);
    net.run_for(ms(100));
    assert!(net.clients[1].events.iter().any(|(_, e)| *e
        == ClientEvent::MemberLeft {
            group: g,
            member: c,
            reason: MemberLeftReason::Disconnected
        }));
    assert_eq!(net.server.group_members(g), Some(&[b][..]));

    // Destroy: b hears it, the server forgets everything.
    let now = net.now;
    net.server.destroy_group(now, g).unwrap();
    net.run_for(ms(100));
    assert_eq!(
        net.clients[1].events.last().unwrap().1,
        ClientEvent::GroupDestroyed { group: g }
    );
    assert_eq!(
        net.server.destroy_group(now, g),
        Err(GroupError::UnknownGroup)
    );
    let s = net.server.stats();
    assert_eq!((s.groups, s.pairs), (0, 0));
}

#[test]
fn join_ack_complete_waits_for_every_member() {
    let mut net = Net::connected(3);
    let [a, b, c] = net.hosts()[..] else { panic!() };
    let now = net.now;
    let g = net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(ms(100));
    // a's packets to the server are lost for a while: a cannot acknowledge c.
    let (a_addr, server) = (net.clients[0].addr, net.server_addr);
    net.filter = Some(Box::new(move |s| !(s.from == a_addr && s.to == server)));
    let now = net.now;
    net.server.join_group(now, g, c).unwrap();
    net.run_for(ms(1500));
    assert!(
        !ack_completes(&net).contains(&(g, c)),
        "a has not acknowledged yet"
    );
    net.filter = None;
    assert!(net.drive_until(Duration::from_secs(3), |n| {
        ack_completes(n).contains(&(g, c))
    }));
    assert!(
        net.server.stats().control_retransmits > 0
            || net.clients[0].client.stats().control_retransmits > 0
    );
}

#[test]
fn a_member_can_send_the_moment_it_learns_of_another_one_relay_hop() {
    // No path-MTU probes: the counts below are of the message alone.
    let cfg = ClientConfig {
        max_datagram_size: crate::BASE_DATAGRAM_SIZE,
        ..ClientConfig::default()
    };
    let mut net = Net::connected_with(2, cfg);
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.server.create_group(now, &[a, b]).unwrap();
    assert!(
        net.drive_until(Duration::from_secs(1), |n| n.clients[0].events.iter().any(
            |(_, e)| matches!(e, ClientEvent::MemberJoined { member, .. } if *member == b)
        ))
    );
    let t_joined = net.elapsed();
    let now = net.now;
    net.clients[0]
        .client
        .send(now, b, crate::Channel::UNRELIABLE, b"first!")
        .unwrap();
    assert!(net.drive_until(Duration::from_secs(1), |n| !n.peer_messages(1).is_empty()));
    // Client → server → client: two one-way latencies (10 ms each), no extra round trip.
    assert_eq!(net.elapsed() - t_joined, ms(20));
    assert_eq!(net.peer_messages(1), vec![(a, b"first!".to_vec())]);
    assert_eq!(net.clients[0].client.stats().relayed_out, 1);
    assert_eq!(net.clients[1].client.stats().relayed_in, 1);
    assert_eq!(net.server.stats().relayed_packets, 1);
}

#[test]
fn the_relay_never_sees_the_plaintext() {
    let mut net = Net::connected_relay_only(2);
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    let g = net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(ms(100));
    let marker = b"SECRET-PLAINTEXT-MARKER-0123456789";
    let now = net.now;
    net.clients[0]
        .client
        .send(now, b, crate::Channel::UNRELIABLE, marker)
        .unwrap();
    net.clients[0]
        .client
        .send_to_group(now, g, crate::Channel::UNRELIABLE, marker)
        .unwrap();
    net.run_for(ms(100));
    assert_eq!(net.peer_messages(1).len(), 2);
    assert!(net.server.stats().relayed_packets >= 1);
    for sent in &net.log {
        assert!(
            !sent.bytes.windows(marker.len()).any(|w| w == marker),
            "plaintext on the wire from {} to {}",
            sent.from,
            sent.to
        );
    }
}

#[test]
fn members_of_different_groups_cannot_reach_each_other() {
    let mut net = Net::connected(3);
    let [a, b, c] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.server.create_group(now, &[a, b]).unwrap();
    net.server.create_group(now, &[b, c]).unwrap();
    net.run_for(ms(100));
    let now = net.now;
    assert_eq!(
        net.clients[0]
            .client
            .send(now, c, crate::Channel::UNRELIABLE, b"hi"),
        Err(SendError::UnknownPeer)
    );
    // A modified client forges a pair with c and asks the relay anyway.
    net.clients[0].client.test_insert_peer(c, 999, [7; 32]);
    net.clients[0]
        .client
        .send(now, c, crate::Channel::UNRELIABLE, b"let me in")
        .unwrap();
    net.run_for(ms(100));
    // The forged message, and the path-MTU probes sent to c: all denied.
    let probes = net.clients[0].client.peer_stats(c).unwrap().mtu_probes_sent;
    assert!(probes >= 1, "a relay path is probed from the start");
    assert_eq!(net.server.stats().dropped.relay_denied, 1 + probes);
    assert!(net.peer_messages(2).is_empty());
    // b, in both groups, reaches both.
    let now = net.now;
    net.clients[1]
        .client
        .send(now, a, crate::Channel::UNRELIABLE, b"to a")
        .unwrap();
    net.clients[1]
        .client
        .send(now, c, crate::Channel::UNRELIABLE, b"to c")
        .unwrap();
    net.run_for(ms(100));
    assert_eq!(net.peer_messages(0), vec![(b, b"to a".to_vec())]);
    assert_eq!(net.peer_messages(2), vec![(b, b"to c".to_vec())]);
}

#[test]
fn overlapping_groups_share_one_pair_until_the_last_is_left() {
    let mut net = Net::connected(2);
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    let g1 = net.server.create_group(now, &[a, b]).unwrap();
    let g2 = net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(ms(100));
    assert_eq!(net.server.stats().pairs, 1);
    assert_eq!(net.server.client_groups(a).unwrap().len(), 2);
    let now = net.now;
    net.server.leave_group(now, g1, a).unwrap();
    net.run_for(ms(100));
    let now = net.now;
    net.clients[0]
        .client
        .send(now, b, crate::Channel::UNRELIABLE, b"still here")
        .unwrap();
    net.run_for(ms(100));
    assert_eq!(net.peer_messages(1).len(), 1);
    let now = net.now;
    net.server.leave_group(now, g2, a).unwrap();
    net.run_for(ms(100));
    assert_eq!(net.server.stats().pairs, 0);
    let now = net.now;
    assert_eq!(
        net.clients[0]
            .client
            .send(now, b, crate::Channel::UNRELIABLE, b"gone"),
        Err(SendError::UnknownPeer)
    );
    assert_eq!(net.clients[1].client.peers().count(), 0);
}

#[test]
fn rapid_join_leave_churn_leaves_no_state_behind() {
    let mut net = Net::connected(3);
    let [a, b, c] = net.hosts()[..] else { panic!() };
    let now = net.now;
    let g = net.server.create_group(now, &[a]).unwrap();
    for i in 0..1000 {
        let now = net.now;
        net.server.join_group(now, g, b).unwrap();
        if i % 3 == 0 {
            net.server.join_group(now, g, c).unwrap();
            net.server.leave_group(now, g, c).unwrap();
        }
        net.server.leave_group(now, g, b).unwrap();
        // Some cycles let traffic flow, some are back to back.
        if i % 7 == 0 {
            net.run_for(ms(15));
        }
    }
    net.run_for(Duration::from_secs(3));
    let s = net.server.stats();
    assert_eq!(s.pairs, 0);
    assert_eq!(net.server.group_members(g), Some(&[a][..]));
    for i in 0..3 {
        assert_eq!(
            net.clients[i].client.peers().count(),
            0,
            "client {i} kept a peer"
        );
    }
    assert_eq!(net.clients[1].client.groups().count(), 0);
    assert_eq!(net.clients[0].client.group_members(g), Some(&[a][..]));
    let now = net.now;
    net.server.destroy_group(now, g).unwrap();
    net.run_for(ms(200));
    assert_eq!(net.server.stats().groups, 0);
    assert!(net.clients.iter().all(|c| c.client.is_connected()));
}

#[test]
fn relay_budgets_drop_and_count_instead_of_queueing() {
    let mut cfg = server_config();
    cfg.relay_rate_per_client = 10_000;
    cfg.relay_burst_per_client = 5_000;
    let mut client = ClientConfig::default();
    client.direct_paths = false;
    let mut net = Net::new(cfg, client, 2);
    net.connect_all(&[]);
    net.run_for(ms(100));
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(ms(100));
    let now = net.now;
    for _ in 0..100 {
        net.clients[0]
            .client
            .send(now, b, crate::Channel::UNRELIABLE, &[1; 1000])
            .unwrap();
    }
    net.run_for(Duration::from_secs(3));
    let got = net.peer_messages(1).len() as u64;
    let dropped = net.server.stats().dropped.relay_rate;
    // 5 kB burst + 10 kB/s over the ~3 s it takes the pacer to send everything.
    assert!(
        (4..=40).contains(&got),
        "the budget, not the offered load, decides: {got}"
    );
    assert!(dropped >= 60, "{dropped}");
    assert_eq!(got + dropped, 100, "every packet is delivered or counted");
}

#[test]
fn reliable_server_messages_survive_loss_in_order() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut net = Net::connected(1);
    let host = net.hosts()[0];
    let mut rng = StdRng::seed_from_u64(11);
    net.filter = Some(Box::new(move |_| rng.random_bool(0.7)));
    for i in 0..200u32 {
        let now = net.now;
        net.server
            .send_reliable(now, host, &i.to_be_bytes())
            .unwrap();
        net.clients[0]
            .client
            .send_to_server_reliable(now, &i.to_be_bytes())
            .unwrap();
        net.run_for(ms(5));
    }
    net.run_for(Duration::from_secs(5));
    let to_client: Vec<u32> = net.clients[0]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            ClientEvent::Message { payload } => {
                Some(u32::from_be_bytes(payload[..].try_into().unwrap()))
            }
            _ => None,
        })
        .collect();
    let to_server: Vec<u32> = net
        .server_events
        .iter()
        .filter_map(|(_, e)| match e {
            ServerEvent::Message { payload, .. } => {
                Some(u32::from_be_bytes(payload[..].try_into().unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(to_client, (0..200).collect::<Vec<_>>());
    assert_eq!(to_server, (0..200).collect::<Vec<_>>());
}

#[test]
fn group_commands_reject_misuse() {
    let mut net = Net::connected(1);
    let a = net.hosts()[0];
    let now = net.now;
    let ghost = crate::HostId(0xDEAD);
    assert_eq!(
        net.server.create_group(now, &[a, ghost]),
        Err(GroupError::UnknownHost(ghost))
    );
    assert_eq!(net.server.stats().groups, 0, "nothing created");
    let g = net.server.create_group(now, &[]).unwrap();
    assert_eq!(
        net.server.leave_group(now, g, a),
        Err(GroupError::NotMember)
    );
    assert_eq!(
        net.server.join_group(now, g, ghost),
        Err(GroupError::UnknownHost(ghost))
    );
    assert_eq!(
        net.server.join_group(now, crate::GroupId(77), a),
        Err(GroupError::UnknownGroup)
    );
    assert_eq!(
        net.clients[0]
            .client
            .send_to_group(now, g, crate::Channel::UNRELIABLE, b"x"),
        Err(SendError::NotMember)
    );
}

fn path_events(net: &Net, i: usize) -> Vec<(Duration, crate::Path, crate::PathChangeReason)> {
    net.clients[i]
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            ClientEvent::PathChanged { path, reason, .. } => Some((*t, *path, *reason)),
            _ => None,
        })
        .collect()
}

fn ordered_payloads(net: &Net, i: usize) -> Vec<u32> {
    net.clients[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            ClientEvent::PeerMessage {
                channel, payload, ..
            } if *channel == crate::Channel::RELIABLE_ORDERED => {
                Some(u32::from_be_bytes(payload[..4].try_into().unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// Streams `count` reliable-ordered messages from client 0 to `to`, one every 10 ms.
fn stream(net: &mut Net, to: crate::HostId, from: u32, count: u32) {
    for i in from..from + count {
        let now = net.now;
        net.clients[0]
            .client
            .send(now, to, crate::Channel::RELIABLE_ORDERED, &i.to_be_bytes())
            .unwrap();
        net.run_for(ms(10));
    }
}

#[test]
fn members_move_to_a_direct_path_without_losing_duplicating_or_reordering() {
    let mut net = Net::connected(2);
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.server.create_group(now, &[a, b]).unwrap();
    // Stream from the very first moment: relay first, direct second.
    assert!(net.drive_until(Duration::from_secs(1), |n| {
        n.clients[0].client.peers().any(|p| p == b)
    }));
    let t_joined = net.elapsed();
    stream(&mut net, b, 0, 300);
    net.run_for(Duration::from_secs(1));
    assert_eq!(ordered_payloads(&net, 1), (0..300).collect::<Vec<_>>());
    for i in 0..2 {
        let events = path_events(&net, i);
        assert_eq!(events.len(), 1, "client {i}: {events:?}");
        let (t, path, reason) = events[0];
        assert!(matches!(path, crate::Path::Direct(_)), "{path:?}");
        assert_eq!(reason, crate::PathChangeReason::Punched);
        // Introduction reaches both within a server one-way trip; one peer RTT (20 ms) for
        // probe and answer: direct within ~2 RTT of the introduction.
        assert!(
            t - t_joined <= ms(60),
            "client {i} went direct after {:?}",
            t - t_joined
        );
    }
    assert_eq!(
        net.clients[0].client.peer_stats(b).unwrap().path,
        crate::Path::Direct(net.clients[1].addr)
    );
    // Once direct, peer traffic leaves the relay.
    let relayed = net.server.stats().relayed_packets;
    stream(&mut net, b, 300, 100);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.server.stats().relayed_packets,
        relayed,
        "nothing more relayed"
    );
    assert_eq!(ordered_payloads(&net, 1), (0..400).collect::<Vec<_>>());
}

#[test]
fn a_dead_direct_path_falls_back_to_the_relay_and_delivery_continues() {
    let mut net = Net::connected(2);
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(ms(200));
    assert_eq!(path_events(&net, 0).len(), 1, "direct first");
    stream(&mut net, b, 0, 50);
    // The direct path dies (e.g. a NAT mapping expired); the relay still works.
    let (ca, cb) = (net.clients[0].addr, net.clients[1].addr);
    net.filter = Some(Box::new(move |s| {
        !(s.from == ca && s.to == cb || s.from == cb && s.to == ca)
    }));
    let t_dead = net.elapsed();
    stream(&mut net, b, 50, 150);
    net.run_for(Duration::from_secs(2));
    let events = path_events(&net, 0);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].1, crate::Path::Relay);
    assert_eq!(events[1].2, crate::PathChangeReason::DirectLost);
    assert!(
        events[1].0 - t_dead <= ms(500),
        "fell back after {:?}",
        events[1].0 - t_dead
    );
    assert_eq!(
        ordered_payloads(&net, 1),
        (0..200).collect::<Vec<_>>(),
        "nothing lost"
    );
}

#[test]
fn relay_only_clients_never_go_direct() {
    let mut net = Net::connected_relay_only(2);
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(ms(200));
    stream(&mut net, b, 0, 20);
    net.run_for(Duration::from_secs(1));
    assert!(path_events(&net, 0).is_empty() && path_events(&net, 1).is_empty());
    assert_eq!(ordered_payloads(&net, 1), (0..20).collect::<Vec<_>>());
    let (ca, cb) = (net.clients[0].addr, net.clients[1].addr);
    assert!(
        net.log.iter().all(|s| !(s.from == ca && s.to == cb)),
        "no direct datagram"
    );
}

#[test]
fn lan_candidates_are_filtered_by_the_server_and_probed_by_peers() {
    let mut net = Net::connected(2);
    let [a, b] = net.hosts()[..] else { panic!() };
    let lan: std::net::SocketAddr = "10.9.8.7:4000".parse().unwrap();
    let now = net.now;
    net.clients[0]
        .client
        .set_local_addresses(
            now,
            &[
                "127.0.0.1:4000".parse().unwrap(),
                lan,
                "224.0.0.1:4000".parse().unwrap(),
                "0.0.0.0:4000".parse().unwrap(),
            ],
        )
        .unwrap();
    net.run_for(ms(50));
    assert_eq!(net.server.stats().dropped.bad_candidates, 1);
    let now = net.now;
    net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(ms(300));
    let b_addr = net.clients[1].addr;
    let to = |dst: std::net::SocketAddr| {
        net.log
            .iter()
            .filter(|s| s.from == b_addr && s.to == dst)
            .count()
    };
    assert!(to(lan) >= 1, "b probes a's LAN address");
    for bad in ["127.0.0.1:4000", "224.0.0.1:4000", "0.0.0.0:4000"] {
        assert_eq!(to(bad.parse().unwrap()), 0, "never probes {bad}");
    }
}

/// Regression (found by the `pierce peer` process tests): the relay writer rotates between
/// peers from a cursor; when the cursor's peer had left, the peer right after it was skipped
/// forever, its acks never went out and the client kept emitting empty server packets.
#[test]
fn the_peer_after_one_that_left_is_still_served() {
    let mut net = Net::connected_relay_only(4);
    let [a, b, c, d] = net.hosts()[..] else {
        panic!()
    };
    let now = net.now;
    let g = net.server.create_group(now, &[a, b, c, d]).unwrap();
    net.run_for(ms(200));
    // a's last relayed packet goes to c: c becomes the cursor. Then c leaves.
    let now = net.now;
    net.clients[0]
        .client
        .send(now, c, crate::Channel::RELIABLE_ORDERED, b"to c")
        .unwrap();
    net.run_for(ms(100));
    let now = net.now;
    net.server.leave_group(now, g, c).unwrap();
    net.run_for(ms(200));
    // d sits right after c: it must still get a's messages and a must stay quiet otherwise.
    let before = net.log.len();
    for i in 0..20u32 {
        let now = net.now;
        net.clients[0]
            .client
            .send(now, d, crate::Channel::RELIABLE_ORDERED, &i.to_be_bytes())
            .unwrap();
        net.run_for(ms(10));
    }
    net.run_for(ms(500));
    let got: Vec<_> = net
        .peer_messages(3)
        .into_iter()
        .filter(|(f, _)| *f == a)
        .collect();
    assert_eq!(got.len(), 20, "d got {} of 20", got.len());
    assert_eq!(
        net.clients[0].client.peer_stats(d).unwrap().unacked,
        0,
        "acks flowed back"
    );
    assert!(
        net.log.len() - before < 200,
        "no packet storm: {}",
        net.log.len() - before
    );
    let _ = b;
}

/// The server restarts (same key, every session lost). Two members with a direct path keep
/// delivering, register again on their own, get their host ids back from their tickets, and
/// once the application rebuilds their group the pair goes on as it was: same connection,
/// same direct path, every message once and in order, no drop, no path change.
#[test]
fn after_a_server_restart_members_reregister_with_their_ids_and_keep_their_direct_pair() {
    let (mut net, a, b) = Net::direct_pair();
    let mark: Vec<usize> = net.clients.iter().map(|c| c.events.len()).collect();

    // The server process restarts now; a keeps sending to b, one message every 100 ms.
    net.restart_server(server_config(), 2);
    let mut sent = 0u32;
    let mut rebuilt = None;
    for _ in 0..400 {
        let now = net.now;
        net.clients[0]
            .client
            .send(
                now,
                b,
                crate::Channel::RELIABLE_ORDERED,
                &sent.to_be_bytes(),
            )
            .unwrap();
        sent += 1;
        net.run_for(ms(100));
        // The application puts resumed clients back in their group.
        let resumed: Vec<crate::HostId> = net
            .server_events
            .iter()
            .filter_map(|(_, e)| match e {
                ServerEvent::ClientResumed { host_id } => Some(*host_id),
                _ => None,
            })
            .collect();
        if rebuilt.is_none() && resumed.contains(&a) && resumed.contains(&b) {
            let now = net.now;
            rebuilt = Some((
                net.elapsed(),
                net.server.create_group(now, &[a, b]).unwrap(),
            ));
        }
    }
    net.run_for(Duration::from_secs(2));
    let (rebuilt_at, g) = rebuilt.expect("both came back with their ids");
    assert_eq!(net.hosts(), vec![a, b], "same host ids");
    let got: Vec<u32> = net
        .peer_messages(1)
        .iter()
        .filter(|(from, _)| *from == a)
        .map(|(_, p)| u32::from_be_bytes(p[..4].try_into().unwrap()))
        .collect();
    assert_eq!(
        got,
        (0..sent).collect::<Vec<_>>(),
        "every message once, in order"
    );
    for (i, c) in net.clients.iter().enumerate() {
        for e in &c.events[mark[i]..] {
            assert!(
                !matches!(
                    e.1,
                    ClientEvent::PeerDropped { .. }
                        | ClientEvent::PathChanged { .. }
                        | ClientEvent::MessageExpired { .. }
                ),
                "client {i}: {e:?}"
            );
        }
        assert_eq!(c.client.stats().pairs_carried_over, 1, "client {i}");
        assert_eq!(c.client.group_members(g), Some(&[a, b][..]));
    }
    assert_eq!(net.server.stats().sessions_resumed, 2);
    println!("server restart: both members resumed their ids, group rebuilt at {rebuilt_at:?}");
}
