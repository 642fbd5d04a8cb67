//! The relay on forwarders of its own (as on threads of their own): relay packets go to the
//! forwarder that owns their session, the server publishes its table to them and hears what
//! they heard.

use std::net::SocketAddr;
use std::time::Duration;

use super::util::{Net, server_config};
use crate::{
    Channel, ClientConfig, ClientEvent, Endpoint as _, Forward, HostId, ServerEvent, SocketId,
    relay_shard, relay_shard_of,
};

const RELAY: u8 = 0xD6;
const SEALED: u8 = 0xD3;

/// `n` relay-only clients, connected, in one group, with the relay on `shards` forwarders.
fn sharded(n: usize, shards: u16) -> Net {
    let mut cfg = ClientConfig::default();
    cfg.direct_paths = false;
    cfg.nat_discovery = false;
    let mut server = server_config();
    server.relay_shards = shards;
    let mut net = Net::new(server, cfg, n).with_shards();
    net.connect_all(&[]);
    assert!(net.drive_until(Duration::from_secs(5), |n| {
        n.clients.iter().all(|c| c.client.is_connected())
    }));
    let (hosts, now) = (net.hosts(), net.now);
    net.server.create_group(now, &hosts).unwrap();
    net.run_for(Duration::from_millis(300));
    net
}

fn send(net: &mut Net, from: usize, to: HostId, channel: Channel, payload: &[u8]) {
    let now = net.now;
    net.clients[from]
        .client
        .send(now, to, channel, payload)
        .unwrap();
}

fn received(net: &Net, i: usize) -> Vec<Vec<u8>> {
    (net.clients[i].events.iter())
        .filter_map(|(_, e)| match e {
            ClientEvent::PeerMessage { payload, .. } => Some(payload.to_vec()),
            _ => None,
        })
        .collect()
}

fn sent_to_server(net: &Net, from: SocketAddr, kind: u8) -> Vec<Vec<u8>> {
    (net.sent_between(from, net.server_addr).into_iter())
        .filter(|s| s.bytes[0] == kind)
        .map(|s| s.bytes.clone())
        .collect()
}

#[test]
fn relayed_messages_go_through_the_forwarders_and_none_through_the_servers_thread() {
    let mut net = sharded(4, 2);
    let hosts = net.hosts();
    for round in 0..20u8 {
        for i in 0..4 {
            let to = hosts[(i + 1) % 4];
            send(
                &mut net,
                i,
                to,
                Channel::RELIABLE_ORDERED,
                &[round, i as u8],
            );
        }
        net.run_for(Duration::from_millis(20));
    }
    net.run_for(Duration::from_millis(500));
    for i in 0..4 {
        let from = (i + 3) % 4;
        let want: Vec<Vec<u8>> = (0..20u8).map(|r| vec![r, from as u8]).collect();
        assert_eq!(received(&net, i), want, "client {i}");
    }
    // Both forwarders owned senders (session ids are spread over them), and every relayed
    // packet (messages and acks) went through one of them.
    let mut owners = [0usize; 2];
    for c in &net.clients {
        for d in sent_to_server(&net, c.addr, RELAY) {
            owners[relay_shard_of(&d, 2).unwrap()] += 1;
        }
    }
    let relayed = net.shard_stats.relayed_packets;
    assert_eq!(relayed as usize, owners[0] + owners[1]);
    assert!(owners.iter().all(|&n| n > 0), "{owners:?}");
    assert_eq!(net.server.stats().relayed_packets, 0);
    assert_eq!(net.shard_stats.dropped.total(), 0, "{:?}", net.shard_stats);
}

#[test]
fn relayed_traffic_alone_keeps_a_session_alive_through_the_forwarders_reports() {
    let mut net = sharded(2, 2);
    let hosts = net.hosts();
    // Client 0's own packets to the server are lost from now on: only its relay packets
    // arrive (through its forwarder).
    let (a, s) = (net.clients[0].addr, net.server_addr);
    net.filter = Some(Box::new(move |p| {
        !(p.from == a && p.to == s && p.bytes[0] == SEALED)
    }));
    let idle = server_config().idle_timeout;
    let steps = (2 * idle.as_millis() / 50) as usize;
    for i in 0..steps {
        send(
            &mut net,
            0,
            hosts[1],
            Channel::UNRELIABLE,
            &(i as u32).to_be_bytes(),
        );
        net.run_for(Duration::from_millis(50));
    }
    let left = net.server_events.iter().any(|(_, e)| {
        matches!(e, ServerEvent::ClientLeft { host_id, .. } | ServerEvent::ClientOffline { host_id } if *host_id == hosts[0])
    });
    assert!(!left, "{:?}", net.server_events);
    assert!(received(&net, 1).len() >= steps * 9 / 10);
    // Once its relay packets stop too, it goes offline, then times out.
    net.run_for(idle + Duration::from_secs(3));
    assert!(net.server_events.iter().any(|(_, e)| matches!(
        e,
        ServerEvent::ClientLeft { host_id, .. } if *host_id == hosts[0]
    )));
}

#[test]
fn a_client_that_moves_is_followed_on_its_relay_packets_alone() {
    let mut net = sharded(2, 2);
    let hosts = net.hosts();
    send(&mut net, 0, hosts[1], Channel::RELIABLE_ORDERED, b"before");
    net.run_for(Duration::from_millis(200));
    // Client 0's NAT rebinds; its session packets from the new address are lost, so only its
    // relay packets tell where it is now.
    let moved: SocketAddr = "198.51.100.200:50000".parse().unwrap();
    net.clients[0].addr = moved;
    let s = net.server_addr;
    net.filter = Some(Box::new(move |p| {
        !(p.from == moved && p.to == s && p.bytes[0] == SEALED)
    }));
    send(
        &mut net,
        0,
        hosts[1],
        Channel::RELIABLE_ORDERED,
        b"from the new port",
    );
    net.run_for(Duration::from_millis(200));
    assert_eq!(net.server.client_addr(hosts[0]), Some(moved));
    send(&mut net, 1, hosts[0], Channel::RELIABLE_ORDERED, b"reply");
    net.run_for(Duration::from_millis(200));
    assert_eq!(received(&net, 0), vec![b"reply".to_vec()]);
    assert_eq!(
        received(&net, 1),
        vec![b"before".to_vec(), b"from the new port".to_vec()]
    );
}

#[test]
fn a_replay_is_dropped_by_the_owner_and_the_servers_thread_takes_relay_packets_only_from_where_a_session_is()
 {
    let mut net = sharded(2, 2);
    let hosts = net.hosts();
    send(&mut net, 0, hosts[1], Channel::RELIABLE_ORDERED, b"once");
    net.run_for(Duration::from_millis(200));
    let a = net.clients[0].addr;
    let pkt = sent_to_server(&net, a, RELAY).remove(0);
    let owner = relay_shard_of(&pkt, 2).unwrap();
    let (now, relayed) = (net.now, net.shard_stats.relayed_packets);
    // Replayed to its owner: dropped, from anywhere.
    let attacker: SocketAddr = "192.0.2.66:6666".parse().unwrap();
    for from in [a, attacker] {
        let stats = &mut net.shard_stats;
        let f = net.shards[owner].handle_datagram(now, SocketId::PRIMARY, from, &pkt, stats);
        assert_eq!(f, Forward::Dropped);
    }
    assert_eq!(net.shard_stats.dropped.replayed, 2);
    // The other forwarder does not own it: back to the server's thread, which (its replay
    // window never saw the packet) takes it only from where the session is, and never as a
    // move.
    let stats = &mut net.shard_stats;
    let f = net.shards[1 - owner].handle_datagram(now, SocketId::PRIMARY, attacker, &pkt, stats);
    assert_eq!(f, Forward::Control);
    let denied = net.server.stats().dropped.relay_denied;
    net.server.handle_datagram(now, attacker, &pkt);
    assert_eq!(net.server.stats().dropped.relay_denied, denied + 1);
    assert_eq!(net.server.client_addr(hosts[0]), Some(a));
    assert_eq!(net.shard_stats.relayed_packets, relayed);
    net.run_for(Duration::from_millis(100));
    assert_eq!(received(&net, 1), vec![b"once".to_vec()]);
    assert_eq!(net.server.stats().relayed_packets, 0);
}

#[test]
fn forwarders_taken_after_clients_connected_know_them_and_steering_matches_ownership() {
    let mut net = sharded(3, 3);
    net.take_shards();
    let hosts = net.hosts();
    for i in 0..3 {
        send(
            &mut net,
            i,
            hosts[(i + 1) % 3],
            Channel::RELIABLE_ORDERED,
            b"hi",
        );
    }
    net.run_for(Duration::from_millis(300));
    for i in 0..3 {
        assert_eq!(received(&net, i), vec![b"hi".to_vec()], "client {i}");
    }
    for c in &net.clients {
        for d in sent_to_server(&net, c.addr, RELAY) {
            let session = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
            assert_eq!(relay_shard_of(&d, 3), Some(relay_shard(session, 3)));
        }
    }
    assert_eq!(relay_shard_of(&[SEALED; 40], 3), None);
    assert_eq!(
        relay_shard_of(&[RELAY, 1, 0, 0, 0, 0], 3),
        None,
        "too short"
    );
    let (_, pairs, owned) = net.shards[0].len();
    assert_eq!(pairs, 3);
    assert!(owned <= 3);
    let total: usize = net.shards.iter().map(|f| f.len().2).sum();
    assert_eq!(total, 3, "each session owned once");
    // A client that leaves is forgotten by every forwarder.
    let now = net.now;
    net.server.disconnect(now, hosts[2], 0).unwrap();
    net.run_for(Duration::from_millis(100));
    for f in &net.shards {
        assert_eq!(f.len().0, 2);
        assert_eq!(f.len().1, 1);
    }
}

#[test]
fn a_pair_a_forwarder_has_not_heard_of_yet_is_relayed_by_the_servers_thread_not_denied() {
    // A relay thread reads its channel between batches: a client that got its PeerAdd can
    // send before its owner learns of the pair. The forwarder hands such a packet to the
    // server's thread, which knows the pair, instead of refusing it.
    let mut cfg = ClientConfig::default();
    cfg.direct_paths = false;
    cfg.nat_discovery = false;
    let mut server = server_config();
    server.relay_shards = 2;
    let mut net = Net::new(server, cfg, 2).with_shards();
    net.connect_all(&[]);
    assert!(net.drive_until(Duration::from_secs(5), |n| {
        n.clients.iter().all(|c| c.client.is_connected())
    }));
    net.run_for(Duration::from_millis(100));
    net.hold_updates = true;
    let (hosts, now) = (net.hosts(), net.now);
    net.server.create_group(now, &hosts).unwrap();
    assert!(net.drive_until(Duration::from_secs(2), |n| {
        n.clients[0].client.peers().any(|p| p == hosts[1])
    }));
    send(&mut net, 0, hosts[1], Channel::RELIABLE_ORDERED, b"early");
    net.run_for(Duration::from_millis(100));
    assert_eq!(received(&net, 1), vec![b"early".to_vec()], "within 100 ms");
    assert_eq!(net.shard_stats.dropped.relay_denied, 0);
    assert_eq!(net.server.stats().dropped.relay_denied, 0);
    assert!(
        net.server.stats().relayed_packets > 0,
        "through the server's thread"
    );
    // Once the forwarders know the pair, they relay it themselves.
    net.hold_updates = false;
    net.run_for(Duration::from_millis(50));
    let (before, now) = (net.shard_stats.relayed_packets, net.now);
    send(&mut net, 0, hosts[1], Channel::RELIABLE_ORDERED, b"later");
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        received(&net, 1),
        vec![b"early".to_vec(), b"later".to_vec()]
    );
    assert!(net.shard_stats.relayed_packets > before, "{now:?}");
}

#[test]
fn a_relay_packet_for_an_unknown_session_goes_from_its_relay_thread_to_the_server_for_a_reset() {
    let mut net = sharded(1, 2);
    // A well-formed relay packet (64 bytes) naming a session nobody has.
    let mut d = vec![0u8; 64];
    d[..4].copy_from_slice(&[0xD6, 1, 0, 0]);
    d[4..8].copy_from_slice(&0x00AB_CDEFu32.to_be_bytes());
    d[32..36].copy_from_slice(&[0xD4, 1, 0, 0]);
    let owner = relay_shard_of(&d, 2).unwrap();
    let (now, from) = (net.now, "192.0.2.66:6666".parse::<SocketAddr>().unwrap());
    let stats = &mut net.shard_stats;
    let f = net.shards[owner].handle_datagram(now, SocketId::PRIMARY, from, &d, stats);
    assert_eq!(f, Forward::Control, "handed over, not dropped");
    assert_eq!(net.shard_stats.dropped.unknown_session, 0);
    net.server.handle_datagram(now, from, &d);
    let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
    let t = net.server.poll_transmit(now, &mut buf).expect("a reset");
    assert_eq!((t.dst, t.len), (from, crate::wire::reset::RESET_LEN));
    assert_eq!(buf[0], crate::wire::reset::KIND_RESET);
    let s = net.server.stats();
    assert_eq!((s.resets_sent, s.dropped.unknown_session), (1, 1));
}
