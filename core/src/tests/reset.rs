//! Stateless resets: a restarted server (same key) tells its old clients at once that their
//! session is gone; they register again immediately and relay-only peers carry on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::util::{Net, server_config};
use crate::crypto::ResetKey;
use crate::wire::reset::{RESET_LEN, Reset};
use crate::wire::sealed::KIND_SEALED;
use crate::{
    Channel, ClientConfig, ClientEvent, DisconnectReason, Endpoint as _, RoomsConfig, Server,
};

/// The reset a server with `server_config`'s key sends for client 0's session (its session
/// id read from a packet it sent), as a datagram.
fn true_reset(net: &mut Net) -> Vec<u8> {
    let now = net.now;
    net.clients[0]
        .client
        .send_to_server(now, b"which session?")
        .unwrap();
    net.run_for(Duration::from_millis(30));
    let (c, s) = (net.clients[0].addr, net.server_addr);
    let pkt = &net.sent_between(c, s).last().unwrap().bytes;
    assert_eq!(pkt[0], KIND_SEALED);
    let session = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
    let token = ResetKey::derive(&server_config().secret_key).token(session);
    let mut d = vec![0u8; RESET_LEN];
    Reset { token }.encode(&mut d).unwrap();
    d
}

/// The server restarts with the same key; client 0's next packet gets it a reset with its
/// token (its check under way).
fn restart_until_a_reset(net: &mut Net) {
    net.restart_server(server_config(), 9);
    let now = net.now;
    net.clients[0]
        .client
        .send_to_server(now, b"anyone there?")
        .unwrap();
    assert!(net.drive_until(Duration::from_secs(1), |n| {
        n.clients[0].client.stats().resets_received > 0
    }));
}

#[test]
fn a_forged_reset_or_one_from_another_address_changes_nothing_and_one_with_our_token_is_checked() {
    let mut net = Net::connected(1);
    let host = net.hosts()[0];
    let reset = true_reset(&mut net);
    let (server, now) = (net.server_addr, net.now);
    let client = &mut net.clients[0].client;

    let mut forged = reset.clone();
    forged[RESET_LEN - 1] ^= 1;
    client.handle_datagram(now, server, &forged);
    let elsewhere: SocketAddr = "192.0.2.99:7000".parse().unwrap();
    client.handle_datagram(now, elsewhere, &reset);
    assert!(client.is_connected());
    let s = client.stats();
    assert_eq!(
        (
            s.resets_received,
            s.dropped.auth_failed,
            s.dropped.unexpected
        ),
        (0, 1, 1)
    );
    assert!(net.disconnects(0).is_empty());

    // Our token, from the server's address, while the server still has the session (an
    // attacker who learnt the token of this session id before it was ours, by sending a
    // packet naming it to the server): the client probes, the server answers, nothing is lost.
    net.clients[0].client.handle_datagram(now, server, &reset);
    let due = net.clients[0].client.poll_timeout().unwrap();
    assert_eq!(due.reason, "stateless reset check");
    assert!(due.at <= now + Duration::from_secs(1));
    net.run_for(Duration::from_secs(2));
    let s = net.clients[0].client.stats();
    assert_eq!((s.resets_received, s.resets_refuted), (1, 1));
    assert!(net.disconnects(0).is_empty());
    assert!(net.clients[0].client.is_connected());
    assert_eq!(net.hosts()[0], host);
}

#[test]
fn after_a_restart_a_reset_with_our_token_ends_the_session_within_its_check_and_we_register_again()
{
    let mut net = Net::connected(1);
    let host = net.hosts()[0];
    let t0 = net.now;
    restart_until_a_reset(&mut net);
    let heard = net.now;
    assert!(net.drive_until(Duration::from_secs(1), |n| {
        !n.clients[0].client.is_connected()
    }));
    let lost = net.now - heard;
    assert!(net.drive_until(Duration::from_secs(2), |n| {
        n.clients[0].client.is_connected()
    }));
    assert_eq!(net.clients[0].client.host_id(), Some(host), "its ticket");
    net.collect_events();
    assert_eq!(net.disconnects(0), vec![DisconnectReason::Reset]);
    let s = net.clients[0].client.stats();
    assert_eq!((s.resets_refuted, s.reregistrations), (0, 1));
    // The check waits three round trips (at least 50 ms), then registering again is at once.
    let back = net.now - heard;
    assert!(
        back < Duration::from_millis(300),
        "{back:?} after the reset"
    );
    println!(
        "reset heard {:?} after the restart, session lost {lost:?} later, back {back:?} after \
         the reset",
        heard - t0
    );
}

#[test]
fn a_reset_before_the_welcome_is_dropped() {
    let mut net = Net::new(server_config(), ClientConfig::default(), 1);
    let (server, now) = (net.server_addr, net.now);
    let mut d = vec![0u8; RESET_LEN];
    Reset { token: [0; 16] }.encode(&mut d).unwrap();
    net.clients[0].client.handle_datagram(now, server, &d);
    net.connect_all(&[]);
    let now = net.now;
    net.clients[0].client.handle_datagram(now, server, &d);
    assert_eq!(net.clients[0].client.stats().dropped.unexpected, 2);
    assert_eq!(net.clients[0].client.stats().resets_received, 0);
}

#[test]
fn the_server_answers_with_resets_only_session_packets_and_never_a_reset() {
    let mut net = Net::connected(1);
    let reset = true_reset(&mut net);
    // The server restarts with the same key: the client's next packet gets a reset.
    net.restart_server(server_config(), 9);
    let now = net.now;
    let stranger: SocketAddr = "192.0.2.7:5000".parse().unwrap();
    net.server.handle_datagram(now, stranger, &reset);
    let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
    assert!(net.server.poll_transmit(now, &mut buf).is_none());
    let s = net.server.stats();
    assert_eq!((s.resets_sent, s.dropped.unexpected), (0, 1));
    // A peer packet is no session packet: no answer either.
    let mut peer = vec![0u8; 48];
    peer[..4].copy_from_slice(&[crate::wire::sealed::KIND_PEER, 1, 0, 0]);
    net.server.handle_datagram(now, stranger, &peer);
    assert!(net.server.poll_transmit(now, &mut buf).is_none());
    // A STUN request and a ClientHello get their own answers, never a reset.
    let mut stun = [0u8; 64];
    let n = crate::wire::stun::encode_binding_request(&mut stun, &[7; 12]).unwrap();
    let mut hello = [0u8; crate::wire::handshake::MIN_CLIENT_HELLO_LEN];
    let h = crate::wire::handshake::ClientHello {
        client_session: 5,
        client_ephemeral: [9; 32],
        cookie: &[],
    };
    let m = h.encode(&mut hello).unwrap();
    for d in [&stun[..n], &hello[..m]] {
        net.server.handle_datagram(now, stranger, d);
        let t = net.server.poll_transmit(now, &mut buf).expect("an answer");
        assert_ne!(buf[0], crate::wire::reset::KIND_RESET);
        assert_ne!(t.len, RESET_LEN);
        assert!(net.server.poll_transmit(now, &mut buf).is_none());
    }
    assert_eq!(net.server.stats().resets_sent, 0);
}

#[test]
fn resets_over_the_rate_are_counted_not_sent() {
    let mut cfg = server_config();
    cfg.reset_rate_global = 10;
    cfg.reset_burst_global = 5;
    let mut server =
        Server::new(Arc::new(cfg), [3; 32], net_epoch(), super::util::UNIX_START).expect("server");
    let mut d = vec![0u8; 40];
    d[..4].copy_from_slice(&[KIND_SEALED, 1, 0, 0]);
    let now = net_epoch();
    let from: SocketAddr = "192.0.2.7:5000".parse().unwrap();
    let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
    let mut sent = 0;
    for t in [now, now + Duration::from_secs(1)] {
        for i in 0..20u32 {
            d[4..8].copy_from_slice(&i.to_be_bytes());
            server.handle_datagram(t, from, &d);
            while let Some(tx) = server.poll_transmit(t, &mut buf) {
                assert_eq!(tx.len, RESET_LEN);
                sent += 1;
            }
        }
    }
    let s = server.stats();
    // Five at once (the burst), five a second later (refilled up to the burst again).
    assert_eq!((sent, s.resets_sent, s.resets_limited), (10, 10, 30));
    assert_eq!(s.dropped.unknown_session, 40);
}

fn net_epoch() -> std::time::Instant {
    super::epoch()
}

/// Two relay-only members of a room stream reliable ordered messages both ways; the server
/// restarts (same key) in the middle. Both hear a reset with their next packet, register
/// again at once with their tickets (same host ids), rejoin the room, and the pair goes on
/// over the relay: every message arrives once, in order, and none expires.
#[test]
fn relay_only_members_ride_through_a_restart_with_every_message_delivered_in_order() {
    let mut cfg = server_config();
    cfg.rooms = Some(RoomsConfig::default());
    let mut client = ClientConfig::default();
    client.direct_paths = false;
    client.nat_discovery = false;
    let mut net = Net::new(cfg.clone(), client, 2);
    net.connect_all(&[]);
    assert!(net.drive_until(Duration::from_secs(1), |n| {
        n.clients.iter().all(|c| c.client.is_connected())
    }));
    let hosts = net.hosts();
    net.join_each(2, "arena");
    const N: u32 = 200;
    let mut next = [0u32; 2];
    let mut restarted = None;
    let mut back = None;
    while net.elapsed() < Duration::from_secs(30) {
        for (i, n) in next.iter_mut().enumerate() {
            if *n < N {
                let now = net.now;
                let to = hosts[1 - i];
                let c = &mut net.clients[i].client;
                if c.send(now, to, Channel::RELIABLE_ORDERED, &n.to_be_bytes())
                    .is_ok()
                {
                    *n += 1;
                }
            }
        }
        net.run_for(Duration::from_millis(20));
        if restarted.is_none() && next.iter().all(|&n| n >= N / 2) {
            net.restart_server(cfg.clone(), 11);
            restarted = Some(net.now);
        }
        if let (Some(_), None) = (restarted, back) {
            if net
                .clients
                .iter()
                .all(|c| c.client.stats().resets_received == 1)
                && net.clients.iter().all(|c| c.client.is_connected())
            {
                back = Some(net.now);
            }
        }
        let done = (0..2).all(|i| net.peer_messages(i).len() == N as usize);
        if done && back.is_some() {
            break;
        }
    }
    let (restarted, back) = (restarted.unwrap(), back.expect("both registered again"));
    assert!(
        back - restarted < Duration::from_secs(2),
        "back {:?} after the restart",
        back - restarted
    );
    assert_eq!(net.hosts(), hosts, "tickets gave the host ids back");
    for i in 0..2 {
        let got: Vec<u32> = net
            .peer_messages(i)
            .iter()
            .map(|(from, p)| {
                assert_eq!(*from, hosts[1 - i]);
                u32::from_be_bytes(p[..4].try_into().unwrap())
            })
            .collect();
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "client {i}");
        assert_eq!(net.disconnects(i), vec![DisconnectReason::Reset]);
        assert!(!net.clients[i].events.iter().any(|(_, e)| matches!(
            e,
            ClientEvent::PeerDropped { .. } | ClientEvent::MessageExpired { .. }
        )));
        assert_eq!(net.clients[i].client.stats().pairs_carried_over, 1);
    }
}

#[test]
fn a_server_restarted_with_another_key_cannot_reset_its_old_clients() {
    let mut net = Net::connected(1);
    let mut other = server_config();
    other.secret_key = crate::SecretKey::from_bytes([0x77; 32]);
    net.restart_server(other, 5);
    // Its resets carry tokens under another key: ignored, the client times out as before.
    net.run_for(Duration::from_secs(5));
    let s = net.server.stats();
    assert!(s.resets_sent > 0, "{s:?}");
    let c = net.clients[0].client.stats();
    assert_eq!(
        (c.resets_received, c.dropped.auth_failed),
        (0, s.resets_sent)
    );
    assert!(net.disconnects(0).is_empty());
    net.run_for(Duration::from_secs(12));
    assert_eq!(net.disconnects(0), vec![DisconnectReason::TimedOut]);
}

#[test]
fn when_a_resets_check_runs_out_the_client_registers_again_in_the_same_call() {
    // Found by `client_input`: the check ran out inside `handle_timeout`, the session failed
    // and re-registration was due at once, but only the next call did it: `poll_timeout` then
    // named an instant already past.
    let mut net = Net::connected(1);
    restart_until_a_reset(&mut net);
    let client = &mut net.clients[0].client;
    let check = client.poll_timeout().unwrap();
    assert_eq!(check.reason, "stateless reset check");
    let hellos = client.stats().hellos_sent;
    client.handle_timeout(check.at);
    let next = client.poll_timeout().unwrap();
    assert!(next.at > check.at, "{next:?} is not after {:?}", check.at);
    let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
    while client.poll_transmit(check.at, &mut buf).is_some() {}
    assert_eq!(
        client.stats().hellos_sent,
        hellos + 1,
        "the hello went at once"
    );
}
