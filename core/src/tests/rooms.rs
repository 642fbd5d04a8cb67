//! The rooms policy: create/join by name with a password, list, join-random, leave, kick.

use std::time::Duration;

use super::util::{Net, server_config};
use crate::{
    ClientConfig, ClientEvent, MemberLeftReason, RoomError, RoomInfo, RoomOp, RoomsConfig,
};

fn rooms_net(n: usize) -> Net {
    let mut cfg = server_config();
    cfg.rooms = Some(RoomsConfig::default());
    let mut net = Net::new(cfg, ClientConfig::default(), n);
    net.connect_all(&[]);
    assert!(net.drive_until(Duration::from_secs(1), |n| {
        n.clients.iter().all(|c| c.client.is_connected())
    }));
    net
}

fn settle(net: &mut Net) {
    net.run_for(Duration::from_millis(200));
}

fn last(net: &Net, i: usize) -> ClientEvent {
    net.clients[i].events.last().expect("an event").1.clone()
}

fn room_group(net: &Net, i: usize) -> crate::GroupId {
    net.clients[i]
        .events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            ClientEvent::RoomJoined { group, .. } => Some(*group),
            _ => None,
        })
        .expect("joined a room")
}

fn failed(op: RoomOp, error: RoomError) -> ClientEvent {
    ClientEvent::RoomFailed { op, error }
}

#[test]
fn passwords_limits_listing_and_kicking_behave_as_described() {
    let mut net = rooms_net(3);
    let [a, b, c] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.clients[0]
        .client
        .create_room(now, "lobby", "pw", 2)
        .unwrap();
    settle(&mut net);
    let g = room_group(&net, 0);
    assert!(net.clients[0].events.iter().any(|(_, e)| *e
        == ClientEvent::RoomJoined {
            group: g,
            name: "lobby".into(),
            owner: a
        }));

    // Wrong password: a clear error, nothing else.
    let now = net.now;
    net.clients[1]
        .client
        .join_room(now, "lobby", "nope", false, 0)
        .unwrap();
    settle(&mut net);
    assert_eq!(
        last(&net, 1),
        failed(RoomOp::Join, RoomError::WrongPassword)
    );
    assert_eq!(net.server.group_members(g), Some(&[a][..]));

    // Right password: in.
    let now = net.now;
    net.clients[1]
        .client
        .join_room(now, "lobby", "pw", false, 0)
        .unwrap();
    settle(&mut net);
    assert_eq!(net.server.group_members(g), Some(&[a, b][..]));
    assert_eq!(net.clients[1].client.group_members(g), Some(&[a, b][..]));

    // Full.
    let now = net.now;
    net.clients[2]
        .client
        .join_room(now, "lobby", "pw", false, 0)
        .unwrap();
    settle(&mut net);
    assert_eq!(last(&net, 2), failed(RoomOp::Join, RoomError::Full));

    // Create-only on an existing name; join a missing room without create.
    let now = net.now;
    net.clients[2]
        .client
        .create_room(now, "lobby", "", 0)
        .unwrap();
    settle(&mut net);
    assert_eq!(
        last(&net, 2),
        failed(RoomOp::Join, RoomError::AlreadyExists)
    );
    let now = net.now;
    net.clients[2]
        .client
        .join_room(now, "nowhere", "", false, 0)
        .unwrap();
    settle(&mut net);
    assert_eq!(last(&net, 2), failed(RoomOp::Join, RoomError::NotFound));

    // No open room for join-random (the only room has a password and is full).
    let now = net.now;
    net.clients[2].client.join_random_room(now).unwrap();
    settle(&mut net);
    assert_eq!(
        last(&net, 2),
        failed(RoomOp::JoinRandom, RoomError::NotFound)
    );

    // Listing.
    let now = net.now;
    net.clients[2].client.list_rooms(now, 0).unwrap();
    settle(&mut net);
    assert_eq!(
        last(&net, 2),
        ClientEvent::RoomList {
            total: 1,
            offset: 0,
            rooms: vec![RoomInfo {
                name: "lobby".into(),
                members: 2,
                max_members: 2,
                has_password: true,
                relay_only: false,
            }]
        }
    );

    // Only the owner kicks.
    let now = net.now;
    net.clients[1].client.kick(now, g, a).unwrap();
    settle(&mut net);
    assert_eq!(last(&net, 1), failed(RoomOp::Kick, RoomError::NotOwner));
    let now = net.now;
    net.clients[0].client.kick(now, g, b).unwrap();
    settle(&mut net);
    let kicked = ClientEvent::MemberLeft {
        group: g,
        member: b,
        reason: MemberLeftReason::Kicked,
    };
    assert_eq!(last(&net, 1), kicked);
    assert_eq!(last(&net, 0), kicked);
    assert_eq!(net.clients[1].client.groups().count(), 0);
    assert_eq!(
        net.clients[0].client.peers().count(),
        0,
        "the pair is gone with the room"
    );

    // The last member leaves: the room is gone.
    let now = net.now;
    net.clients[0].client.leave_room(now, g).unwrap();
    settle(&mut net);
    let now = net.now;
    net.clients[2].client.list_rooms(now, 0).unwrap();
    settle(&mut net);
    assert_eq!(
        last(&net, 2),
        ClientEvent::RoomList {
            total: 0,
            offset: 0,
            rooms: vec![]
        }
    );
    let s = net.server.stats();
    assert_eq!((s.groups, s.pairs), (0, 0));
    let _ = c;
}

#[test]
fn join_random_and_ownership_handover() {
    let mut net = rooms_net(3);
    let [a, b, _] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.clients[0]
        .client
        .join_room(now, "open", "", true, 4)
        .unwrap();
    settle(&mut net);
    let now = net.now;
    net.clients[1].client.join_random_room(now).unwrap();
    settle(&mut net);
    let g = room_group(&net, 0);
    assert_eq!(room_group(&net, 1), g);
    // The owner leaves: the next member owns the room and may kick.
    let now = net.now;
    net.clients[0].client.leave_room(now, g).unwrap();
    settle(&mut net);
    assert_eq!(
        last(&net, 1),
        ClientEvent::RoomOwnerChanged { group: g, owner: b }
    );
    let now = net.now;
    net.clients[2]
        .client
        .join_room(now, "open", "", false, 0)
        .unwrap();
    settle(&mut net);
    let c = net.hosts()[2];
    let now = net.now;
    net.clients[1].client.kick(now, g, c).unwrap();
    settle(&mut net);
    assert_eq!(net.server.group_members(g), Some(&[b][..]));
    let _ = a;
}

#[test]
fn a_server_without_rooms_says_so_and_names_are_checked() {
    let mut net = Net::connected(1);
    let now = net.now;
    net.clients[0]
        .client
        .join_room(now, "x", "", true, 0)
        .unwrap();
    settle(&mut net);
    assert_eq!(last(&net, 0), failed(RoomOp::Join, RoomError::Disabled));
    let now = net.now;
    assert_eq!(
        net.clients[0].client.join_room(now, "", "", true, 0),
        Err(crate::CommandError::InvalidName { max: 64 })
    );
    assert_eq!(
        net.clients[0]
            .client
            .join_room(now, &"n".repeat(65), "", true, 0),
        Err(crate::CommandError::InvalidName { max: 64 })
    );
}

#[test]
fn room_members_talk_through_the_relay() {
    let mut net = rooms_net(2);
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.clients[0]
        .client
        .join_room(now, "r", "", true, 0)
        .unwrap();
    settle(&mut net);
    let now = net.now;
    net.clients[1]
        .client
        .join_room(now, "r", "", true, 0)
        .unwrap();
    settle(&mut net);
    let g = room_group(&net, 0);
    let now = net.now;
    net.clients[1]
        .client
        .send_to_group(now, g, crate::Channel::UNRELIABLE, b"hello room")
        .unwrap();
    net.clients[0]
        .client
        .send(now, b, crate::Channel::UNRELIABLE, b"hi b")
        .unwrap();
    settle(&mut net);
    assert_eq!(net.peer_messages(0), vec![(b, b"hello room".to_vec())]);
    assert_eq!(net.peer_messages(1), vec![(a, b"hi b".to_vec())]);
}

/// A rooms server (no game logic) restarts: its members register again with their host ids
/// and put their room back together by themselves, password included; their direct pair
/// carries on.
#[test]
fn after_a_server_restart_members_rebuild_their_room_by_themselves() {
    let mut net = rooms_net(2);
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.clients[0]
        .client
        .join_room(now, "arena", "s3cret", true, 4)
        .unwrap();
    settle(&mut net);
    let now = net.now;
    net.clients[1]
        .client
        .join_room(now, "arena", "s3cret", false, 0)
        .unwrap();
    net.run_for(Duration::from_secs(3)); // direct path
    let before = room_group(&net, 0);

    let mut cfg = server_config();
    cfg.rooms = Some(RoomsConfig::default());
    net.restart_server(cfg, 7);
    assert!(net.drive_until(Duration::from_secs(40), |n| {
        n.server.stats().sessions_resumed == 2
    }));
    assert!(net.drive_until(Duration::from_secs(5), |n| {
        n.clients.iter().all(|c| {
            c.client.is_connected()
                && c.client
                    .groups()
                    .any(|g| c.client.group_members(g).is_some_and(|m| m.len() == 2))
        })
    }));
    assert_eq!(net.hosts(), vec![a, b]);
    let after = room_group(&net, 0);
    assert_eq!(room_group(&net, 1), after);
    let _ = before; // (the new server may well give the room the same id)
    for c in &net.clients {
        assert_eq!(c.client.stats().pairs_carried_over, 1);
        assert!(!c.events.iter().any(|(_, e)| matches!(
            e,
            ClientEvent::PeerDropped { .. } | ClientEvent::RoomFailed { .. }
        )));
    }
    // One room on the new server, made again by whoever came back first.
    assert_eq!(net.server.stats().groups, 1);
}
