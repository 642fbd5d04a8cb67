//! What operators see and do: the server's distributions (session RTT, relayed datagram
//! sizes, time to a direct path), pairs by path, the room list, closing a room, draining.

use std::time::Duration;

use super::util::{Net, server_config};
use crate::{
    Channel, ClientConfig, ClientEvent, DisconnectReason, Histogram, RejectReason, RoomError,
    RoomOp, RoomsConfig,
};

/// `n` clients of a server with rooms, the first `connected` of them connected.
fn rooms_net_with(n: usize, connected: usize) -> Net {
    let mut cfg = server_config();
    cfg.rooms = Some(RoomsConfig::default());
    let mut client = ClientConfig::default();
    client.nat_discovery = false;
    let mut net = Net::new(cfg, client, n);
    let (now, server) = (net.now, net.server_addr);
    for c in &mut net.clients[..connected] {
        c.client.connect(now, server, &[]).unwrap();
    }
    assert!(net.drive_until(Duration::from_secs(1), |n| {
        n.clients[..connected]
            .iter()
            .all(|c| c.client.is_connected())
    }));
    net
}

fn rooms_net(n: usize) -> Net {
    rooms_net_with(n, n)
}

#[test]
fn histograms_count_into_their_buckets_and_merge() {
    const B: &[u64] = &[10, 100];
    let mut h = Histogram::new(B);
    for v in [0, 10, 11, 100, 101, 5000] {
        h.observe(v);
    }
    assert_eq!(h.counts(), &[2, 2, 2]);
    assert_eq!((h.count(), h.sum()), (6, 5222));
    let mut other = Histogram::new(B);
    other.observe(50);
    assert!(h.merge(&other));
    assert_eq!(h.counts(), &[2, 3, 2]);
    // Other bounds: not merged.
    assert!(!h.merge(&Histogram::new(&[1, 2, 3])));
    assert_eq!(h.count(), 7);
}

#[test]
fn a_direct_pair_is_counted_direct_with_its_time_and_relaying_sizes_are_seen() {
    let (mut net, a, b) = Net::direct_pair();
    // The reports travel on the control stream: give them a round trip.
    net.run_for(Duration::from_millis(100));
    let s = net.server.stats();
    assert_eq!((s.pairs, s.pairs_direct), (1, 1));
    let t = s.histograms.time_to_direct_ms;
    assert_eq!(
        t.count(),
        1,
        "one observation per pair, whichever end reports first"
    );
    // The virtual network's one-way latency is a few ms: a punch takes a few round trips.
    assert!(t.sum() < 1000, "{t:?}");
    assert!(
        s.histograms.session_rtt_ms.count() > 0,
        "session RTT samples"
    );
    // The pair goes away: no longer counted direct.
    let now = net.now;
    let g = net.server.groups().next().unwrap();
    net.server.leave_group(now, g, b).unwrap();
    net.run_for(Duration::from_millis(50));
    let s = net.server.stats();
    assert_eq!((s.pairs, s.pairs_direct), (0, 0));
    let _ = a;
}

#[test]
fn relayed_datagrams_are_sized_and_pairs_stay_counted_relayed() {
    let mut net = Net::connected_relay_only(2);
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(Duration::from_millis(100));
    let now = net.now;
    for len in [10, 300, 1000] {
        net.clients[0]
            .client
            .send(now, b, Channel(0), &vec![7; len])
            .unwrap();
    }
    net.run_for(Duration::from_millis(200));
    let s = net.server.stats();
    assert_eq!((s.pairs, s.pairs_direct), (1, 0));
    let h = s.histograms.relay_datagram_bytes;
    assert!(h.count() >= 3, "{h:?}");
    assert_eq!(h.count(), s.relayed_packets);
    assert_eq!(h.sum(), s.relayed_bytes);
    assert_eq!(s.histograms.time_to_direct_ms.count(), 0);
}

#[test]
fn rooms_are_listed_and_closed() {
    let mut net = rooms_net(3);
    let [a, b, _] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.clients[0]
        .client
        .create_room(now, "lobby", "pw", 4)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    let now = net.now;
    net.clients[1]
        .client
        .join_room(now, "lobby", "pw", false, 0)
        .unwrap();
    net.clients[2]
        .client
        .create_room(now, "alpha", "", 0)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    let rooms = net.server.rooms();
    let names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["alpha", "lobby"]);
    assert_eq!(net.server.stats().rooms, 2);
    let lobby = &rooms[1];
    assert_eq!((lobby.owner, &lobby.members[..]), (a, &[a, b][..]));
    assert!(lobby.has_password && !rooms[0].has_password);
    assert_eq!((lobby.max_members, rooms[0].max_members), (4, 8));

    let now = net.now;
    assert_eq!(net.server.close_room(now, "nope"), Err(RoomError::NotFound));
    let g = net.server.close_room(now, "lobby").unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.server.rooms().len(), 1);
    assert_eq!(net.server.stats().rooms, 1);
    for i in [0, 1] {
        assert!(
            (net.clients[i].events.iter())
                .any(|(_, e)| matches!(e, ClientEvent::GroupDestroyed { group } if *group == g)),
            "client {i} told"
        );
    }
    // The name is free again.
    let now = net.now;
    net.clients[0]
        .client
        .create_room(now, "lobby", "", 0)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.server.rooms().len(), 2);
}

#[test]
fn a_draining_server_tells_its_clients_and_takes_no_new_clients_or_rooms() {
    let mut net = rooms_net_with(3, 2);
    let now = net.now;
    net.clients[0]
        .client
        .create_room(now, "old", "", 0)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    assert!(!net.server.is_draining());

    let now = net.now;
    net.server.drain(now, Duration::from_secs(10));
    assert!(net.server.is_draining());
    net.run_for(Duration::from_millis(100));
    for i in [0, 1] {
        assert!(
            net.clients[i].events.iter().any(|(_, e)| *e
                == ClientEvent::ServerDraining {
                    within: Duration::from_secs(10)
                }),
            "client {i} told"
        );
    }
    // Rooms: the old one can still be joined, no new one is made.
    let now = net.now;
    net.clients[1]
        .client
        .join_room(now, "old", "", false, 0)
        .unwrap();
    net.clients[0]
        .client
        .create_room(now, "new", "", 0)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    assert!(
        net.clients[1]
            .events
            .iter()
            .any(|(_, e)| matches!(e, ClientEvent::RoomJoined { name, .. } if name == "old"))
    );
    assert!(net.clients[0].events.iter().any(|(_, e)| *e
        == ClientEvent::RoomFailed {
            op: RoomOp::Join,
            error: RoomError::Draining
        }));
    // A new client is refused, and hears why.
    let now = net.now;
    let server = net.server_addr;
    net.clients[2].client.connect(now, server, &[]).unwrap();
    assert!(net.drive_until(Duration::from_secs(2), |n| {
        n.clients[2].events.iter().any(|(_, e)| {
            *e == ClientEvent::Disconnected {
                reason: DisconnectReason::Rejected(RejectReason::Draining),
            }
        })
    }));
    // The sessions there go on.
    assert_eq!(net.server.stats().clients, 2);
}
