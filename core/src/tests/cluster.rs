//! Two cluster nodes sharing a [`MemoryDirectory`]: a room lives on one node, a join that
//! reaches the other is redirected there (same host id, the join carried over), new rooms go
//! to the less-loaded node, host ids and tickets are unique cluster-wide, a draining node
//! moves its rooms with nothing lost, a directory outage leaves the rooms there working.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::util::{Net, second_server_addr, server_addr, server_config};
use crate::cluster::{ClusterConfig, MemoryDirectory};
use crate::{
    Channel, Client, ClientConfig, ClientEvent, HostId, RoomError, RoomOp, RoomsConfig,
    ServerConfig, ServerEvent,
};

fn node_config(id: &str, addr: SocketAddr) -> ServerConfig {
    let mut cfg = server_config();
    cfg.rooms = Some(RoomsConfig::default());
    cfg.cluster = Some(ClusterConfig::new(id, "eu", addr));
    cfg
}

fn client_config() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.nat_discovery = false;
    c.direct_paths = false;
    c
}

/// Nodes "a" (at [`server_addr`]) and "b" (at [`second_server_addr`]) on one directory,
/// and `n` clients, not connected.
fn cluster(n: usize) -> Net {
    let mut net = Net::new(node_config("a", server_addr()), client_config(), n);
    net.add_second_server(node_config("b", second_server_addr()), 2);
    net.directory = Some(MemoryDirectory::new());
    net
}

/// Client `i` connects to `first` (then the other node).
fn connect(net: &mut Net, i: usize, first: SocketAddr) {
    let other = if first == server_addr() {
        second_server_addr()
    } else {
        server_addr()
    };
    let now = net.now;
    net.clients[i]
        .client
        .connect_any(now, &[first, other], &[])
        .unwrap();
    assert!(
        net.drive_until(Duration::from_secs(2), |n| n.clients[i]
            .client
            .is_connected()),
        "client {i} connected"
    );
}

fn join(net: &mut Net, i: usize, room: &str) {
    let now = net.now;
    net.clients[i]
        .client
        .join_room(now, room, "", true, 8)
        .unwrap();
}

/// Client `i` is in room `room` (it heard `RoomJoined`).
fn in_room(net: &Net, i: usize, room: &str) -> bool {
    net.clients[i].client.is_connected()
        && net
            .events_since(i, 0)
            .iter()
            .any(|e| matches!(e, ClientEvent::RoomJoined { name, .. } if name == room))
}

fn room_names(net: &Net, second: bool) -> Vec<String> {
    let server = if second {
        &net.second.as_ref().unwrap().server
    } else {
        &net.server
    };
    server.rooms().into_iter().map(|r| r.name).collect()
}

fn redirects(net: &Net, i: usize) -> Vec<(SocketAddr, SocketAddr, Option<String>)> {
    (net.events_since(i, 0).into_iter())
        .filter_map(|e| match e {
            ClientEvent::Redirected { from, to, room } => Some((from, to, room)),
            _ => None,
        })
        .collect()
}

/// Sends `n` reliable ordered messages from client `i` to `j` as the send buffer takes them,
/// and runs until `j` has them all; returns what `j` got from `i`, in order.
fn exchange(net: &mut Net, i: usize, j: usize, n: u32) -> Vec<u32> {
    let to = net.clients[j].client.host_id().unwrap();
    let from = net.clients[i].client.host_id().unwrap();
    let mut next = 0u32;
    for _ in 0..2000 {
        if next < n {
            let now = net.now;
            let c = &mut net.clients[i].client;
            if c.send(now, to, Channel::RELIABLE_ORDERED, &next.to_be_bytes())
                .is_ok()
            {
                next += 1;
            }
        }
        net.run_for(Duration::from_millis(20));
        if received(net, j, from).len() == n as usize {
            break;
        }
    }
    received(net, j, from)
}

/// Two clients on node A, both in room "arena".
fn two_in_arena_on_a() -> Net {
    let mut net = cluster(2);
    for i in 0..2 {
        connect(&mut net, i, server_addr());
        join(&mut net, i, "arena");
        assert!(net.drive_until(Duration::from_secs(1), |n| in_room(n, i, "arena")));
    }
    net
}

fn received(net: &Net, at: usize, from: HostId) -> Vec<u32> {
    (net.peer_messages(at).iter())
        .filter(|(f, _)| *f == from)
        .map(|(_, p)| u32::from_be_bytes(p[..4].try_into().unwrap()))
        .collect()
}

#[test]
fn nodes_get_numbers_and_every_host_id_carries_its_nodes() {
    let mut net = cluster(2);
    connect(&mut net, 0, server_addr());
    connect(&mut net, 1, second_server_addr());
    let a = net.server.node_number().unwrap();
    let b = net.second.as_ref().unwrap().server.node_number().unwrap();
    assert_ne!(a, b);
    let hosts = net.hosts();
    assert_eq!((hosts[0].0 >> 48) as u16, a);
    assert_eq!((hosts[1].0 >> 48) as u16, b);
    assert!((net.server_events.iter()).any(|(_, e)| *e == ServerEvent::NodeNumbered { number: a }));
    // Each knows both (after a heartbeat).
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.server.cluster_nodes().len(), 2);
    assert_eq!(net.second.as_ref().unwrap().server.cluster_nodes().len(), 2);
}

#[test]
fn a_node_takes_no_client_before_it_has_its_number_and_takes_it_once_numbered() {
    let mut net = cluster(1);
    net.directory.as_mut().unwrap().set_down(true);
    let now = net.now;
    net.clients[0]
        .client
        .connect_any(now, &[server_addr(), second_server_addr()], &[])
        .unwrap();
    net.run_for(Duration::from_secs(3));
    // Unanswered, not refused: the client keeps trying (both addresses in turn).
    assert!(!net.clients[0].client.is_connected() && !net.clients[0].client.is_closed());
    assert_eq!(net.server.clients().count(), 0);
    assert!(
        !(net.events_since(0, 0).iter()).any(|e| matches!(e, ClientEvent::Disconnected { .. }))
    );
    net.directory.as_mut().unwrap().set_down(false);
    // The number is asked for again with the next heartbeat; the client's next try gets in.
    assert!(net.drive_until(Duration::from_secs(8), |n| {
        n.clients[0].client.is_connected()
    }));
    let number = net.server.node_number().unwrap().max(
        net.second
            .as_ref()
            .unwrap()
            .server
            .node_number()
            .unwrap_or(0),
    );
    let host = net.clients[0].client.host_id().unwrap();
    assert!((1..=number).contains(&((host.0 >> 48) as u16)), "{host:?}");
}

/// A joins "r" on node A; B's client asks for "r" at B: it is sent to A (`Redirected`,
/// same host id: its ticket is good on A), joins there, and the pair works.
#[test]
fn a_join_at_the_wrong_node_is_redirected_to_the_rooms_node_with_the_same_host_id() {
    let mut net = cluster(2);
    connect(&mut net, 0, server_addr());
    connect(&mut net, 1, second_server_addr());
    net.run_for(Duration::from_secs(1));
    join(&mut net, 0, "r");
    assert!(net.drive_until(Duration::from_secs(1), |n| in_room(n, 0, "r")));
    let id1 = net.clients[1].client.host_id();
    join(&mut net, 1, "r");
    assert!(net.drive_until(Duration::from_secs(3), |n| in_room(n, 1, "r")));
    assert_eq!(
        redirects(&net, 1),
        [(second_server_addr(), server_addr(), Some("r".to_owned()))]
    );
    assert_eq!(net.clients[1].client.host_id(), id1, "same host id");
    assert_eq!(net.clients[1].client.server_addr(), Some(server_addr()));
    assert_eq!(room_names(&net, false), ["r"]);
    assert!(room_names(&net, true).is_empty());
    assert_eq!(net.server.rooms()[0].members.len(), 2);
    assert_eq!(exchange(&mut net, 0, 1, 50), (0..50).collect::<Vec<_>>());
    assert_eq!(exchange(&mut net, 1, 0, 50), (0..50).collect::<Vec<_>>());
    let b = &net.second.as_ref().unwrap().events;
    assert!(b.iter().any(|(_, e)| matches!(
        e,
        ServerEvent::ClientRedirected { to, room: Some(r), .. } if *to == server_addr() && r == "r"
    )));
}

/// Node A has a room and two clients; B is empty: a new room asked for at A goes to B.
/// A redirected join is not placed again, and a node keeps a new room when it is the
/// least loaded.
#[test]
fn a_new_room_goes_to_the_least_loaded_node() {
    let mut net = cluster(3);
    for i in 0..3 {
        connect(&mut net, i, server_addr());
    }
    join(&mut net, 0, "first");
    assert!(net.drive_until(Duration::from_secs(1), |n| in_room(n, 0, "first")));
    assert_eq!(
        room_names(&net, false),
        ["first"],
        "A was least loaded (a tie)"
    );
    // Heartbeats publish the loads.
    net.run_for(Duration::from_secs(2));
    join(&mut net, 1, "second");
    assert!(net.drive_until(Duration::from_secs(3), |n| in_room(n, 1, "second")));
    assert_eq!(room_names(&net, true), ["second"], "B had no room");
    assert_eq!(
        net.clients[1].client.server_addr(),
        Some(second_server_addr())
    );
    assert_eq!(redirects(&net, 1).len(), 1);
    // Now A has one room and one other client, B one room and one client: a tie stays.
    net.run_for(Duration::from_secs(2));
    join(&mut net, 2, "third");
    assert!(net.drive_until(Duration::from_secs(3), |n| in_room(n, 2, "third")));
    assert!(redirects(&net, 2).is_empty());
    assert_eq!(room_names(&net, false), ["first", "third"]);
}

/// A client in a room on A cannot be sent to B for another room: `OtherNode`.
#[test]
fn a_client_with_rooms_here_is_not_sent_to_another_node() {
    let mut net = cluster(2);
    connect(&mut net, 0, server_addr());
    connect(&mut net, 1, second_server_addr());
    join(&mut net, 0, "here");
    join(&mut net, 1, "there");
    assert!(net.drive_until(Duration::from_secs(2), |n| {
        in_room(n, 0, "here") && in_room(n, 1, "there")
    }));
    net.run_for(Duration::from_secs(2));
    join(&mut net, 0, "there");
    net.run_for(Duration::from_secs(1));
    assert!(net.events_since(0, 0).iter().any(|e| matches!(
        e,
        ClientEvent::RoomFailed {
            op: RoomOp::Join,
            error: RoomError::OtherNode
        }
    )));
    assert!(redirects(&net, 0).is_empty());
    // Joining without creating a room nobody has: NotFound, from the directory.
    let now = net.now;
    net.clients[0]
        .client
        .join_room(now, "nowhere", "", false, 0)
        .unwrap();
    net.run_for(Duration::from_millis(500));
    assert!(net.events_since(0, 0).iter().any(|e| matches!(
        e,
        ClientEvent::RoomFailed {
            op: RoomOp::Join,
            error: RoomError::NotFound
        }
    )));
}

/// The room list spans both nodes.
#[test]
fn the_room_list_spans_the_cluster() {
    let mut net = cluster(2);
    connect(&mut net, 0, server_addr());
    connect(&mut net, 1, second_server_addr());
    join(&mut net, 0, "on-a");
    join(&mut net, 1, "on-b");
    net.run_for(Duration::from_secs(3));
    let now = net.now;
    net.clients[0].client.list_rooms(now, 0).unwrap();
    net.run_for(Duration::from_millis(200));
    let names: Vec<String> = (net.events_since(0, 0).into_iter())
        .filter_map(|e| match e {
            ClientEvent::RoomList { rooms, total, .. } => {
                assert_eq!(total, 2);
                Some(rooms.into_iter().map(|r| r.name).collect::<Vec<_>>())
            }
            _ => None,
        })
        .next_back()
        .unwrap();
    assert_eq!(names, ["on-a", "on-b"]);
}

/// A ticket is good once in the whole cluster: presented at B after A took it, it gives no
/// host id back.
#[test]
fn a_ticket_is_good_once_in_the_whole_cluster() {
    let mut net = cluster(1);
    connect(&mut net, 0, server_addr());
    let id = net.clients[0].client.host_id().unwrap();
    let ticket = net.clients[0].client.test_ticket().unwrap();
    let now = net.now;
    net.clients[0].client.disconnect(now, 0);
    net.run_for(Duration::from_millis(100));
    let present = |net: &mut Net, to: SocketAddr, seed: u8| {
        let mut c = Client::new(Arc::new(client_config()), [seed; 32], net.now).unwrap();
        c.test_set_ticket(ticket.clone());
        c.connect(net.now, to, &[]).unwrap();
        net.clients[0].client = c;
        assert!(net.drive_until(Duration::from_secs(3), |n| {
            n.clients[0].client.is_connected()
        }));
        net.clients[0].client.host_id().unwrap()
    };
    assert_eq!(present(&mut net, second_server_addr(), 50), id, "first use");
    assert_ne!(
        present(&mut net, server_addr(), 51),
        id,
        "used on B already"
    );
    assert_ne!(present(&mut net, second_server_addr(), 52), id);
    assert_eq!(net.server.stats().dropped.bad_tickets, 1);
}

/// Node A drains with two relay-only members in a room, messages flowing: the room moves
/// to B (claim handed over, members redirected there), they rejoin it with their host ids,
/// the pair resumes, and every message arrives once, in order.
#[test]
fn a_draining_node_moves_its_rooms_and_nothing_sent_is_lost() {
    let mut net = two_in_arena_on_a();
    net.run_for(Duration::from_secs(2));
    let hosts = net.hosts();
    const N: u32 = 400;
    let mut next = [0u32; 2];
    let mut drained = false;
    for _ in 0..4000 {
        for (k, (i, j)) in [(0, 1), (1, 0)].into_iter().enumerate() {
            if next[k] < N {
                let now = net.now;
                let c = &mut net.clients[i].client;
                let payload = next[k].to_be_bytes();
                if c.send(now, hosts[j], Channel::RELIABLE_ORDERED, &payload)
                    .is_ok()
                {
                    next[k] += 1;
                }
            }
        }
        net.run_for(Duration::from_millis(20));
        if !drained && next.iter().all(|&n| n >= N / 3) {
            let now = net.now;
            net.server.drain(now, Duration::from_secs(10));
            drained = true;
        }
        let done = (received(&net, 1, hosts[0]).len() == N as usize)
            && received(&net, 0, hosts[1]).len() == N as usize;
        if done && drained {
            break;
        }
    }
    assert!(drained);
    for (i, &host) in hosts.iter().enumerate() {
        assert_eq!(
            net.clients[i].client.server_addr(),
            Some(second_server_addr())
        );
        assert_eq!(net.clients[i].client.host_id(), Some(host));
        assert_eq!(
            redirects(&net, i),
            [(server_addr(), second_server_addr(), None)]
        );
        assert!(!net.events_since(i, 0).iter().any(|e| matches!(
            e,
            ClientEvent::PeerDropped { .. } | ClientEvent::MessageExpired { .. }
        )));
    }
    assert_eq!(received(&net, 1, hosts[0]), (0..N).collect::<Vec<_>>());
    assert_eq!(received(&net, 0, hosts[1]), (0..N).collect::<Vec<_>>());
    assert!(room_names(&net, false).is_empty());
    assert_eq!(room_names(&net, true), ["arena"]);
    assert_eq!(net.server.clients().count(), 0, "everyone left A");
}

/// The directory goes down: the room on A keeps working (a join there too), a join of a
/// room A does not have fails with `DirectoryUnavailable`; when it is back the nodes say so
/// and are registered again by themselves.
#[test]
fn a_directory_outage_leaves_rooms_working_and_fails_cross_node_joins_clearly() {
    let mut net = cluster(3);
    for i in 0..3 {
        connect(&mut net, i, server_addr());
    }
    join(&mut net, 0, "r");
    assert!(net.drive_until(Duration::from_secs(1), |n| in_room(n, 0, "r")));
    net.directory.as_mut().unwrap().set_down(true);
    net.run_for(Duration::from_secs(3));
    assert!(!net.server.directory_reachable());
    assert!(
        (net.server_events.iter())
            .any(|(_, e)| *e == ServerEvent::DirectoryReachable { reachable: false })
    );
    join(&mut net, 1, "r");
    assert!(net.drive_until(Duration::from_secs(1), |n| in_room(n, 1, "r")));
    assert_eq!(exchange(&mut net, 0, 1, 30), (0..30).collect::<Vec<_>>());
    join(&mut net, 2, "elsewhere");
    net.run_for(Duration::from_secs(3));
    assert!(net.events_since(2, 0).iter().any(|e| matches!(
        e,
        ClientEvent::RoomFailed {
            op: RoomOp::Join,
            error: RoomError::DirectoryUnavailable
        }
    )));
    // Back, and wiped (a Redis restarted without its data): the heartbeats refill it.
    let d = net.directory.as_mut().unwrap();
    d.wipe();
    d.set_down(false);
    net.run_for(Duration::from_secs(2));
    assert!(net.server.directory_reachable());
    let now = net.now;
    let d = net.directory.as_ref().unwrap();
    assert_eq!(d.nodes(now).len(), 2);
    assert_eq!(d.owner(now, "r"), Some("a"));
}

/// Node A dies (silent, no Leave): after its registration expires, B may claim its room;
/// A's clients, timing out, go to B and rejoin it there.
#[test]
fn a_dead_nodes_room_forms_again_on_another_node() {
    let mut net = two_in_arena_on_a();
    let a = server_addr();
    net.filter = Some(Box::new(move |s| s.from != a && s.to != a));
    net.first_dead = true;
    assert!(
        net.drive_until(Duration::from_secs(40), |n| {
            n.clients.iter().all(|c| {
                c.client.server_addr() == Some(second_server_addr()) && c.client.is_connected()
            }) && n
                .second
                .as_ref()
                .unwrap()
                .server
                .rooms()
                .first()
                .is_some_and(|r| r.members.len() == 2)
        }),
        "the room formed again on B"
    );
    assert_eq!(exchange(&mut net, 0, 1, 30), (0..30).collect::<Vec<_>>());
}
