//! IP privacy end to end through the real server: private clients and relay-only rooms. The
//! control messages are checked opened (what the wire carries sealed), and the wire log for
//! where every datagram went.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::util::{Net, server_config};
use crate::wire::control::ControlMsg;
use crate::{Channel, Client, ClientConfig, ClientEvent, HostId, Path, RoomOptions, RoomsConfig};

/// Client `i`'s LAN address (what it tells `set_local_addresses`).
fn lan(i: usize) -> SocketAddr {
    SocketAddr::from(([192, 168, 1, 10 + i as u8], 5000))
}

/// `n` connected clients (those in `private` private), rooms on (with `rooms`), each having
/// told its LAN address. NAT discovery is off (the harness server has no second address).
fn net(n: usize, private: &[usize], rooms: RoomsConfig) -> Net {
    let mut cfg = server_config();
    cfg.rooms = Some(rooms);
    let mut client = ClientConfig::default();
    client.nat_discovery = false;
    let mut net = Net::new(cfg, client.clone(), n);
    for &i in private {
        let mut c = client.clone();
        c.private = true;
        net.clients[i].client = Client::new(Arc::new(c), [10 + i as u8; 32], net.epoch).unwrap();
    }
    let now = net.now;
    for (i, c) in net.clients.iter_mut().enumerate() {
        c.client.set_local_addresses(now, &[lan(i)]).unwrap();
    }
    net.connect_all(&[]);
    assert!(net.drive_until(Duration::from_secs(5), |n| {
        n.clients.iter().all(|c| c.client.is_connected())
    }));
    net
}

/// Every address-bearing control message client `i` received, opened: (about whom, the
/// address; `None` for NAT info, which carries a mapped port). A `PeerAdd` naming the
/// unspecified address (a relay-only pair) bears none.
fn addresses_heard(net: &Net, i: usize) -> Vec<(HostId, Option<SocketAddr>)> {
    let mut out = Vec::new();
    for bytes in net.clients[i].client.control_log().1 {
        match ControlMsg::decode(bytes).unwrap() {
            ControlMsg::PeerAdd { peer, addr, .. } if !addr.ip().is_unspecified() => {
                out.push((HostId(peer), Some(addr)));
            }
            ControlMsg::PeerAdd { addr, .. } => assert_eq!(addr.port(), 0),
            ControlMsg::PeerMoved { peer, addr } => out.push((HostId(peer), Some(addr))),
            ControlMsg::PeerCandidates { peer, addrs } => {
                out.extend(addrs.iter().map(|a| (HostId(peer), Some(a))));
            }
            ControlMsg::PeerNat { peer, .. } => out.push((HostId(peer), None)),
            _ => {}
        }
    }
    out
}

/// What client `i` told the server about where it is: its LAN addresses and NAT info.
fn told_about_itself(net: &Net, i: usize) -> usize {
    (net.clients[i].client.control_log().0.iter())
        .filter(|b| {
            matches!(
                ControlMsg::decode(b),
                Ok(ControlMsg::Candidates { .. } | ControlMsg::NatInfo { .. })
            )
        })
        .count()
}

/// `n` reliable messages each way between clients `i` and `j`, driven until all arrived;
/// checks they arrived complete and in order.
fn exchange(net: &mut Net, i: usize, j: usize, n: u32) {
    let (hi, hj) = (net.hosts()[i], net.hosts()[j]);
    for k in 0..n {
        let now = net.now;
        let payload = |from: usize| format!("{from}:{k}:").repeat(40).into_bytes();
        net.clients[i]
            .client
            .send(now, hj, Channel::RELIABLE_ORDERED, &payload(i))
            .unwrap();
        net.clients[j]
            .client
            .send(now, hi, Channel::RELIABLE_ORDERED, &payload(j))
            .unwrap();
    }
    let got = |net: &Net, at: usize, from: HostId| -> Vec<Vec<u8>> {
        (net.peer_messages(at).into_iter())
            .filter(|(f, _)| *f == from)
            .map(|(_, p)| p)
            .collect()
    };
    let done =
        |net: &Net| got(net, j, hi).len() == n as usize && got(net, i, hj).len() == n as usize;
    assert!(net.drive_until(Duration::from_secs(10), done));
    for (at, from, sender) in [(j, hi, i), (i, hj, j)] {
        let expect: Vec<Vec<u8>> = (0..n)
            .map(|k| format!("{sender}:{k}:").repeat(40).into_bytes())
            .collect();
        assert_eq!(got(net, at, from), expect, "at {at} from {sender}");
    }
}

fn path(net: &Net, i: usize, peer: HostId) -> Path {
    net.clients[i].client.peer_stats(peer).unwrap().path
}

/// No datagram to or from client `i`'s address involves anyone but the server.
fn only_the_server_talks_to(net: &Net, i: usize) {
    let (me, server) = (net.clients[i].addr, net.server_addr);
    for s in &net.log {
        if s.from == me {
            assert_eq!(s.to, server, "{i} sent elsewhere at {:?}", s.at);
        }
        if s.to == me {
            assert_eq!(s.from, server, "{i} heard from elsewhere at {:?}", s.at);
        }
    }
}

fn room_joined(net: &Net, i: usize) -> crate::GroupId {
    (net.clients[i].events.iter().rev())
        .find_map(|(_, e)| match e {
            ClientEvent::RoomJoined { group, .. } => Some(*group),
            _ => None,
        })
        .expect("joined a room")
}

#[test]
fn a_private_client_is_introduced_without_addresses_and_stays_relayed_while_others_go_direct() {
    let mut net = net(3, &[0], RoomsConfig::default());
    let [p, b, c] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.server.create_group(now, &[p, b, c]).unwrap();
    net.run_for(Duration::from_secs(3));
    exchange(&mut net, 0, 1, 30);
    exchange(&mut net, 0, 2, 30);
    exchange(&mut net, 1, 2, 30);
    net.run_for(Duration::from_secs(5));

    assert_eq!(told_about_itself(&net, 0), 0, "no LAN address, no NAT info");
    assert_eq!(
        addresses_heard(&net, 0),
        [],
        "symmetric: it learns none either"
    );
    for (i, other) in [(1, c), (2, b)] {
        let heard = addresses_heard(&net, i);
        assert!(heard.iter().all(|(about, _)| *about != p), "{i}: {heard:?}");
        // The normal pair was told each other's public and LAN addresses, and went direct.
        let other_i = if other == c { 2 } else { 1 };
        for addr in [net.clients[other_i].addr, lan(other_i)] {
            assert!(heard.contains(&(other, Some(addr))), "{i}: {heard:?}");
        }
        assert!(matches!(path(&net, i, other), Path::Direct(_)));
        assert_eq!(path(&net, i, p), Path::Relay);
        assert_eq!(path(&net, 0, net.hosts()[i]), Path::Relay);
        assert!(told_about_itself(&net, i) > 0);
    }
    only_the_server_talks_to(&net, 0);
    assert_eq!(net.clients[0].client.stats().probes_sent, 0);
    assert_eq!(
        net.clients[1].client.peer_addr(p),
        Some("0.0.0.0:0".parse().unwrap())
    );
}

#[test]
fn a_relay_only_room_hides_its_members_from_each_other_even_when_they_share_a_normal_one() {
    let mut net = net(3, &[], RoomsConfig::default());
    let [a, b, c] = net.hosts()[..] else { panic!() };
    let now = net.now;
    let quiet = RoomOptions::new().relay_only(true);
    net.clients[0]
        .client
        .join_room_with(now, "quiet", "", true, quiet)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    let now = net.now;
    net.clients[1]
        .client
        .join_room(now, "quiet", "", false, 0)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    // (Asking for a relay-only room that exists as a normal one is refused.)
    let now = net.now;
    net.clients[2]
        .client
        .join_room(now, "loud", "", true, 0)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    let now = net.now;
    net.clients[0]
        .client
        .join_room_with(now, "loud", "", true, quiet)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.clients[0].events.last().map(|e| &e.1),
        Some(&ClientEvent::RoomFailed {
            op: crate::RoomOp::Join,
            error: crate::RoomError::NotRelayOnly
        })
    );
    // All three in a normal room too: a-b stay hidden (relay-only is sticky), a-c and b-c
    // are normal pairs.
    for i in 0..2 {
        let now = net.now;
        net.clients[i]
            .client
            .join_room(now, "loud", "", true, 0)
            .unwrap();
        net.run_for(Duration::from_millis(100));
    }
    net.run_for(Duration::from_secs(3));
    exchange(&mut net, 0, 1, 30);
    exchange(&mut net, 0, 2, 10);

    for (i, hidden, seen) in [(0, b, c), (1, a, c)] {
        let heard = addresses_heard(&net, i);
        assert!(
            heard.iter().all(|(about, _)| *about != hidden),
            "{i}: {heard:?}"
        );
        assert!(
            heard.iter().any(|(about, _)| *about == seen),
            "{i}: {heard:?}"
        );
        assert_eq!(path(&net, i, hidden), Path::Relay);
        assert!(matches!(path(&net, i, seen), Path::Direct(_)));
    }
    let (a_addr, b_addr) = (net.clients[0].addr, net.clients[1].addr);
    assert!(net.sent_between(a_addr, b_addr).is_empty());
    assert!(net.sent_between(b_addr, a_addr).is_empty());

    // The room list says which room is which.
    let now = net.now;
    net.clients[2].client.list_rooms(now, 0).unwrap();
    net.run_for(Duration::from_millis(100));
    let Some((_, ClientEvent::RoomList { rooms, .. })) = net.clients[2].events.last() else {
        panic!("{:?}", net.clients[2].events.last());
    };
    let flags: Vec<(&str, bool)> = rooms.iter().map(|r| (&r.name[..], r.relay_only)).collect();
    assert_eq!(flags, [("loud", false), ("quiet", true)]);
}

#[test]
fn a_server_may_make_every_room_relay_only_and_a_rejoined_room_stays_so() {
    let rooms = RoomsConfig {
        relay_only: true,
        ..RoomsConfig::default()
    };
    let mut net = net(2, &[], rooms);
    for i in 0..2 {
        let now = net.now;
        net.clients[i]
            .client
            .join_room(now, "any", "", true, 0)
            .unwrap();
        net.run_for(Duration::from_millis(100));
    }
    net.run_for(Duration::from_secs(3));
    exchange(&mut net, 0, 1, 10);
    let hosts = net.hosts();
    for i in 0..2 {
        assert_eq!(addresses_heard(&net, i), []);
        assert_eq!(path(&net, i, hosts[1 - i]), Path::Relay);
    }

    // Clients that asked for a relay-only room rejoin it relay-only after the server lost it
    // (a restart without the server-wide setting), whichever creates it again.
    let mut net = net_with_relay_only_room_then_restart();
    exchange(&mut net, 0, 1, 10);
    let hosts = net.hosts();
    for i in 0..2 {
        assert_eq!(path(&net, i, hosts[1 - i]), Path::Relay);
    }
}

/// Two clients in a relay-only room both asked for; the server restarts (rooms gone) and
/// both rejoin by themselves. Returns once both are back in the room together, with every
/// address they heard since the restart checked.
fn net_with_relay_only_room_then_restart() -> Net {
    let mut net = net(2, &[], RoomsConfig::default());
    let now = net.now;
    let opts = RoomOptions::new().relay_only(true);
    net.clients[0]
        .client
        .join_room_with(now, "q", "", true, opts)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    let now = net.now;
    net.clients[1]
        .client
        .join_room_with(now, "q", "", false, opts)
        .unwrap();
    net.run_for(Duration::from_secs(1));
    let before = [0, 1].map(|i| net.clients[i].client.control_log().1.len());
    let mut cfg = server_config();
    cfg.rooms = Some(RoomsConfig::default());
    net.restart_server(cfg, 9);
    let both_back = |n: &Net| {
        (0..2).all(|i| {
            let c = &n.clients[i].client;
            c.is_connected() && c.peers().count() == 1
        })
    };
    assert!(net.drive_until(Duration::from_secs(60), both_back));
    let _ = room_joined(&net, 1);
    for (i, from) in before.into_iter().enumerate() {
        for bytes in &net.clients[i].client.control_log().1[from..] {
            if let Ok(ControlMsg::PeerAdd { addr, .. }) = ControlMsg::decode(bytes) {
                assert!(addr.ip().is_unspecified(), "{i} told {addr}");
            }
        }
    }
    net
}
