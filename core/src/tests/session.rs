//! The encrypted client–server session: handshake, identity, keepalives, timeouts, close.

use crate::Endpoint as _;
use std::time::Duration;

use super::util::{Net, UNIX_START, client_addr, server_config};
use crate::{
    ClientConfig, ClientEvent, ConnectToken, DisconnectReason, LeaveReason, PublicKey,
    RejectReason, SecretKey, ServerEvent,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_handshake_connects_and_both_sides_agree_on_the_host_id() {
    let net = Net::connected(2);
    let joined: Vec<_> = net
        .server_events
        .iter()
        .filter_map(|(_, e)| match e {
            ServerEvent::ClientJoined { host_id, addr, .. } => Some((*host_id, *addr)),
            _ => None,
        })
        .collect();
    assert_eq!(joined.len(), 2);
    for (i, c) in net.clients.iter().enumerate() {
        let (
            _,
            ClientEvent::Connected {
                host_id,
                public_addr,
                server_key,
            },
        ) = &c.events[0]
        else {
            panic!("first event is not Connected: {:?}", c.events);
        };
        assert_eq!(
            *public_addr,
            client_addr(i),
            "the server reports the observed address"
        );
        assert_eq!(*server_key, net.server.public_key());
        assert!(joined.contains(&(*host_id, client_addr(i))));
        assert_eq!(net.server.client_addr(*host_id), Some(client_addr(i)));
    }
    assert_ne!(joined[0].0, joined[1].0, "host ids are unique");
    // One round trip for the handshake and one for Connect/Welcome: 40 ms at 10 ms one way.
    assert_eq!(net.elapsed(), Duration::from_millis(40));
    let s = net.server.stats();
    assert_eq!(
        (s.handshakes_started, s.handshakes_completed, s.clients),
        (2, 2, 2)
    );
    assert_eq!(s.half_open, 0);
    assert_eq!(s.dropped.total(), 0);
}

#[test]
fn a_pinned_key_that_matches_connects() {
    let mut cfg = ClientConfig::default();
    cfg.server_key = Some(SecretKey::from_bytes([0x5E; 32]).public_key());
    let mut net = Net::new(server_config(), cfg, 1);
    net.connect_all(&[]);
    assert!(net.drive_until(secs(1), |n| n.clients[0].client.is_connected()));
}

#[test]
fn a_server_with_another_key_is_rejected_when_the_key_is_pinned() {
    let mut cfg = ClientConfig::default();
    cfg.server_key = Some(SecretKey::from_bytes([0x77; 32]).public_key());
    let mut net = Net::new(server_config(), cfg, 1);
    net.connect_all(&[]);
    net.run_for(secs(11));
    let c = &net.clients[0];
    assert_eq!(
        c.events.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        vec![ClientEvent::Disconnected {
            reason: DisconnectReason::ServerKeyMismatch
        }]
    );
    assert!(c.client.stats().server_key_mismatches >= 1);
    assert_eq!(net.server.stats().handshakes_completed, 0);
    // The connect timeout (10 s) decides when it gives up, not the first bad answer.
    assert_eq!(c.events[0].0, secs(10));
}

#[test]
fn an_impostor_presenting_the_pinned_key_without_its_secret_is_ignored() {
    use crate::wire::handshake::{SERVER_HELLO_LEN, ServerHello};
    let real = SecretKey::from_bytes([0x5E; 32]).public_key();
    let mut cfg = ClientConfig::default();
    cfg.server_key = Some(real);
    let mut net = Net::new(server_config(), cfg, 1);
    // The real server is unreachable; an impostor answers every hello from its address.
    let server = net.server_addr;
    net.filter = Some(Box::new(move |s| s.to != server));
    net.connect_all(&[]);
    for _ in 0..5 {
        net.step_to(net.now + secs(1));
        let Some(hello) = net.log.iter().rev().find(|s| s.to == server) else {
            continue;
        };
        let session = u32::from_be_bytes(hello.bytes[4..8].try_into().unwrap());
        let forged = ServerHello {
            client_session: session,
            server_session: 1,
            server_ephemeral: SecretKey::from_bytes([3; 32]).public_key().0,
            server_static: real.0,
            tag: [0xAB; 16],
        };
        let mut buf = [0u8; SERVER_HELLO_LEN];
        forged.encode(&mut buf).unwrap();
        let to = net.clients[0].addr;
        net.deliver(server, to, &buf);
    }
    net.run_for(secs(10));
    let c = &net.clients[0];
    assert!(c.client.stats().dropped.auth_failed >= 5);
    assert!(matches!(
        c.events.last(),
        Some((
            _,
            ClientEvent::Disconnected {
                reason: DisconnectReason::ConnectTimedOut
            }
        ))
    ));
}

#[test]
fn an_unreachable_server_times_out_the_connect_with_backoff() {
    let mut net = Net::with_clients(1);
    net.filter = Some(Box::new(|_| false));
    net.connect_all(&[]);
    net.run_for(secs(12));
    let hellos: Vec<Duration> = net.log.iter().map(|s| s.at).collect();
    // 0, 0.25, 0.75, 1.75, 2.75 ... 9.75 s: doubling from 250 ms, capped at 1 s.
    let expect: Vec<Duration> = [
        0, 250, 750, 1750, 2750, 3750, 4750, 5750, 6750, 7750, 8750, 9750,
    ]
    .into_iter()
    .map(Duration::from_millis)
    .collect();
    assert_eq!(hellos, expect);
    assert_eq!(
        net.clients[0].events,
        vec![(
            secs(10),
            ClientEvent::Disconnected {
                reason: DisconnectReason::ConnectTimedOut
            }
        )]
    );
}

#[test]
fn lost_handshake_packets_are_retransmitted_and_make_one_session() {
    let mut net = Net::with_clients(1);
    let server = net.server_addr;
    // Drop the first two ServerHellos and the first Welcome-carrying packet.
    let mut from_server = 0;
    net.filter = Some(Box::new(move |s| {
        if s.from == server {
            from_server += 1;
            from_server > 3
        } else {
            true
        }
    }));
    net.connect_all(&[]);
    assert!(net.drive_until(secs(5), |n| n.clients[0].client.is_connected()));
    let s = net.server.stats();
    assert_eq!(
        s.handshakes_started, 1,
        "retransmitted hellos reuse the half-open session"
    );
    assert_eq!(s.handshakes_completed, 1);
    assert_eq!(net.server.clients().count(), 1);
}

#[test]
fn a_silent_client_is_timed_out_on_both_sides() {
    let mut net = Net::connected(1);
    let connected_at = net.elapsed();
    net.filter = Some(Box::new(|_| false)); // the link dies both ways
    net.run_for(secs(20));
    let idle = crate::DEFAULT_IDLE_TIMEOUT;
    let left: Vec<_> = net
        .server_events
        .iter()
        .filter(|(_, e)| matches!(e, ServerEvent::ClientLeft { .. }))
        .collect();
    assert_eq!(left.len(), 1);
    assert!(matches!(
        left[0].1,
        ServerEvent::ClientLeft {
            reason: LeaveReason::TimedOut,
            ..
        }
    ));
    // The server last heard the client acknowledge its resumption ticket (which came with
    // the Welcome), 10 ms after the client connected.
    assert_eq!(left[0].0, connected_at + Duration::from_millis(10) + idle);
    let c = &net.clients[0];
    assert_eq!(
        c.events.last(),
        Some(&(
            connected_at + idle,
            ClientEvent::Disconnected {
                reason: DisconnectReason::TimedOut
            }
        ))
    );
    assert_eq!(net.server.stats().clients_timed_out, 1);
    assert_eq!(net.server.stats().clients, 0);
    assert!(net.server.poll_timeout().is_none(), "no state left behind");
}

#[test]
fn keepalives_flow_at_the_configured_interval_both_ways() {
    let mut server = server_config();
    server.keepalive_interval = secs(2);
    server.idle_timeout = secs(7);
    server.ticket_lifetime = Duration::ZERO; // only keepalives on the wire
    let mut client = ClientConfig::default();
    client.keepalive_interval = secs(1);
    client.idle_timeout = secs(5);
    client.nat_discovery = false;
    let mut net = Net::new(server, client, 1);
    net.connect_all(&[]);
    assert!(net.drive_until(secs(1), |n| n.clients[0].client.is_connected()));
    let start = net.log.len();
    net.run_for(secs(60));
    let (c, s) = (net.clients[0].addr, net.server_addr);
    let times = |from, to| -> Vec<Duration> {
        net.log[start..]
            .iter()
            .filter(|p| p.from == from && p.to == to)
            .map(|p| p.at)
            .collect()
    };
    for (from, to, every) in [(c, s, secs(1)), (s, c, secs(2))] {
        let t = times(from, to);
        assert!(t.len() >= 25, "{t:?}");
        for w in t.windows(2) {
            assert_eq!(w[1] - w[0], every, "{from} -> {to}: {t:?}");
        }
    }
    assert!(
        net.clients[0].client.is_connected(),
        "keepalives keep the session alive"
    );
    let cs = net.clients[0].client.stats();
    let ss = net.server.stats();
    assert_eq!(cs.io.keepalives_sent, ss.io.keepalives_received);
    assert_eq!(ss.io.keepalives_sent, cs.io.keepalives_received);
    assert!(cs.io.keepalives_sent >= 59 && ss.io.keepalives_sent >= 29);
}

#[test]
fn application_traffic_replaces_keepalives() {
    let mut net = Net::connected(1);
    let before = net.clients[0].client.stats().io.keepalives_sent;
    for _ in 0..20 {
        let now = net.now;
        net.clients[0].client.send_to_server(now, b"tick").unwrap();
        net.run_for(secs(1));
    }
    assert_eq!(net.clients[0].client.stats().io.keepalives_sent, before);
    let msgs = net
        .server_events
        .iter()
        .filter(
            |(_, e)| matches!(e, ServerEvent::Message { payload, .. } if &payload[..] == b"tick"),
        )
        .count();
    assert_eq!(msgs, 20);
}

#[test]
fn datagrams_flow_both_ways_and_small_ones_share_a_packet() {
    let mut net = Net::connected(1);
    let host = net.clients[0].client.host_id().unwrap();
    let now = net.now;
    for i in 0..10u8 {
        net.clients[0].client.send_to_server(now, &[i; 50]).unwrap();
        net.server.send(now, host, &[100 + i; 60]).unwrap();
    }
    let before = net.log.len();
    net.run_for(Duration::from_millis(50));
    assert_eq!(
        net.log.len() - before,
        2,
        "ten messages each way coalesce into one packet"
    );
    let got: Vec<u8> = net
        .server_events
        .iter()
        .filter_map(|(_, e)| match e {
            ServerEvent::Message { from, payload } if *from == host => Some(payload[0]),
            _ => None,
        })
        .collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    let got: Vec<u8> = net.clients[0]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            ClientEvent::Message { payload } => Some(payload[0]),
            _ => None,
        })
        .collect();
    assert_eq!(got, (100..110).collect::<Vec<_>>());
}

#[test]
fn oversize_payloads_and_sends_before_connecting_are_errors() {
    use crate::SendError;
    let mut net = Net::with_clients(1);
    let now = net.now;
    assert_eq!(
        net.clients[0].client.send_to_server(now, b"x"),
        Err(SendError::NotConnected)
    );
    let mut net = Net::connected(1);
    let now = net.now;
    let c = &mut net.clients[0].client;
    let max = c.max_server_payload();
    assert_eq!(
        c.send_to_server(now, &vec![0; max + 1]),
        Err(SendError::PayloadTooLarge { max })
    );
    assert_eq!(c.send_to_server(now, &vec![0; max]), Ok(()));
    assert_eq!(
        net.server.send(now, crate::HostId(12345), b"x"),
        Err(SendError::UnknownHost(crate::HostId(12345)))
    );
}

#[test]
fn a_graceful_close_reaches_the_server_with_its_code() {
    let mut net = Net::connected(1);
    let host = net.clients[0].client.host_id().unwrap();
    let now = net.now;
    net.clients[0].client.disconnect(now, 7);
    net.run_for(Duration::from_millis(100));
    assert!(net.server_events.iter().any(|(_, e)| *e
        == ServerEvent::ClientLeft {
            host_id: host,
            reason: LeaveReason::Closed(7)
        }));
    assert_eq!(
        net.clients[0].events.last().map(|(_, e)| e.clone()),
        Some(ClientEvent::Disconnected {
            reason: DisconnectReason::ClosedLocally(7)
        })
    );
    assert!(net.clients[0].client.is_closed());
    assert_eq!(net.server.stats().clients, 0);
}

#[test]
fn a_kicked_client_hears_the_code() {
    let mut net = Net::connected(2);
    let host = net.clients[0].client.host_id().unwrap();
    let now = net.now;
    net.server.disconnect(now, host, 99).unwrap();
    assert_eq!(
        net.server.disconnect(now, host, 99),
        Err(crate::UnknownHost(host))
    );
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.clients[0].events.last().map(|(_, e)| e.clone()),
        Some(ClientEvent::Disconnected {
            reason: DisconnectReason::ClosedByServer(99)
        })
    );
    assert!(net.clients[1].client.is_connected());
    assert_eq!(net.server.clients().count(), 1);
}

#[test]
fn connect_tokens_are_required_verified_and_expire() {
    let secret = b"backend shared secret".to_vec();
    let now_unix = UNIX_START.as_secs();
    let cases: [(Vec<u8>, Option<RejectReason>); 5] = [
        (Vec::new(), Some(RejectReason::TokenRequired)),
        (vec![1, 2, 3], Some(RejectReason::InvalidToken)),
        (
            ConnectToken::issue(b"wrong", 5, now_unix + 60).to_vec(),
            Some(RejectReason::InvalidToken),
        ),
        (
            ConnectToken::issue(&secret, 5, now_unix - 1).to_vec(),
            Some(RejectReason::ExpiredToken),
        ),
        (
            ConnectToken::issue(&secret, 5, now_unix + 60).to_vec(),
            None,
        ),
    ];
    for (token, expect) in cases {
        let mut cfg = server_config();
        cfg.token_secret = Some(secret.clone());
        let mut net = Net::new(cfg, ClientConfig::default(), 1);
        net.connect_all(&token);
        net.run_for(secs(1));
        let events: Vec<_> = net.clients[0]
            .events
            .iter()
            .map(|(_, e)| e.clone())
            .collect();
        match expect {
            Some(reason) => {
                assert_eq!(
                    events,
                    vec![ClientEvent::Disconnected {
                        reason: DisconnectReason::Rejected(reason)
                    }]
                );
                assert_eq!(net.server.stats().handshakes_rejected, 1);
                assert_eq!(net.server.stats().clients, 0);
                assert!(net.server_events.is_empty());
                // Once its stale deadline passes, nothing of the rejected session is left.
                net.run_for(secs(20));
                assert_eq!(
                    net.server.poll_timeout().map(|t| t.at),
                    None,
                    "the rejected session is gone"
                );
            }
            None => {
                assert!(net.clients[0].client.is_connected());
                let host = net.clients[0].client.host_id().unwrap();
                assert_eq!(net.server.client_user_id(host), Some(5));
                assert!(matches!(
                    net.server_events[0].1,
                    ServerEvent::ClientJoined {
                        user_id: Some(5),
                        ..
                    }
                ));
            }
        }
    }
}

#[test]
fn a_full_server_rejects_new_clients() {
    let mut cfg = server_config();
    cfg.max_clients = 2;
    let mut net = Net::new(cfg, ClientConfig::default(), 3);
    net.connect_all(&[]);
    net.run_for(secs(1));
    let rejected = net
        .clients
        .iter()
        .filter(|c| {
            c.events.iter().any(|(_, e)| {
                *e == ClientEvent::Disconnected {
                    reason: DisconnectReason::Rejected(RejectReason::ServerFull),
                }
            })
        })
        .count();
    assert_eq!(rejected, 1);
    assert_eq!(net.server.clients().count(), 2);
}

#[test]
fn the_server_follows_a_rebinding_client_to_its_new_address() {
    let mut net = Net::connected(1);
    let host = net.clients[0].client.host_id().unwrap();
    let new_addr = "198.51.100.200:50000".parse().unwrap();
    net.clients[0].addr = new_addr;
    let now = net.now;
    net.clients[0]
        .client
        .send_to_server(now, b"from the new port")
        .unwrap();
    net.run_for(Duration::from_millis(50));
    assert_eq!(net.server.client_addr(host), Some(new_addr));
    assert_eq!(net.server.stats().address_changes, 1);
    let now = net.now;
    net.server.send(now, host, b"reply").unwrap();
    net.run_for(Duration::from_millis(50));
    assert!(matches!(
        net.clients[0].events.last(),
        Some((_, ClientEvent::Message { payload })) if &payload[..] == b"reply"
    ));
}

#[test]
fn time_going_backwards_is_clamped_not_trusted() {
    let mut net = Net::connected(1);
    let t = net.now;
    let back = t - Duration::from_secs(3);
    let c = &mut net.clients[0].client;
    c.handle_timeout(back);
    c.send_to_server(back, b"late").unwrap();
    let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
    let tx = c.poll_transmit(back, &mut buf).unwrap();
    net.server.handle_timeout(back);
    net.server
        .handle_datagram(back, client_addr(0), &buf[..tx.len]);
    net.server.handle_timeout(t - Duration::from_secs(1));
    assert!(c.stats().io.time_went_backwards >= 3);
    assert!(net.server.stats().io.time_went_backwards >= 2);
    assert!(
        net.server.poll_timeout().unwrap().at > t,
        "deadlines never move into the past"
    );
    assert!(c.poll_timeout().unwrap().at > t);
    net.collect_events();
    assert!(
        net.server_events
            .iter()
            .any(|(_, e)| matches!(e, ServerEvent::Message { .. }))
    );
    // Still healthy afterwards.
    net.run_for(secs(30));
    assert!(net.clients[0].client.is_connected());
}

#[test]
fn connect_rejects_misuse() {
    use crate::ConnectError;
    let mut net = Net::with_clients(1);
    let (now, server) = (net.now, net.server_addr);
    let c = &mut net.clients[0].client;
    assert_eq!(
        c.connect(now, server, &[0; 300]),
        Err(ConnectError::TokenTooLarge { max: 256 })
    );
    c.connect(now, server, &[]).unwrap();
    assert_eq!(
        c.connect(now, server, &[]),
        Err(ConnectError::AlreadyStarted)
    );
}

#[test]
fn configs_that_cannot_work_are_refused() {
    use crate::{Client, ConfigError, Server};
    use std::sync::Arc;
    let mut c = ClientConfig::default();
    c.keepalive_interval = secs(20);
    let now = crate::tests::epoch();
    assert_eq!(
        Client::new(Arc::new(c), [0; 32], now).err(),
        Some(ConfigError::KeepaliveNotBelowIdleTimeout)
    );
    let mut s = server_config();
    s.max_datagram_size = 100;
    assert_eq!(
        Server::new(Arc::new(s), [0; 32], now, UNIX_START).err(),
        Some(ConfigError::OutOfRange("max_datagram_size"))
    );
    let _ = PublicKey([0; 32]);
}

#[test]
fn behind_nat64_an_ipv4_server_and_ipv4_peer_addresses_are_reached_through_the_prefix() {
    use crate::wire::control::{Candidates, ControlMsg};
    use crate::{Client, ConfigError, Endpoint, WELL_KNOWN_NAT64_PREFIX, synthesize_nat64};
    use std::net::SocketAddr;
    use std::sync::Arc;
    let now = crate::tests::epoch();
    let v4: SocketAddr = "203.0.113.1:3478".parse().unwrap();
    let synthesized: SocketAddr = "[64:ff9b::cb00:7101]:3478".parse().unwrap();
    // RFC 6052 §2.2: the IPv4 address in the last 32 bits of the /96 prefix.
    assert_eq!(synthesize_nat64(WELL_KNOWN_NAT64_PREFIX, v4), synthesized);
    let mapped: SocketAddr = "[::ffff:203.0.113.1]:3478".parse().unwrap();
    assert_eq!(
        synthesize_nat64(WELL_KNOWN_NAT64_PREFIX, mapped),
        synthesized
    );
    let v6: SocketAddr = "[2001:db8::1]:7".parse().unwrap();
    assert_eq!(synthesize_nat64(WELL_KNOWN_NAT64_PREFIX, v6), v6);
    // A prefix whose last 32 bits are not zero is refused.
    let mut c = ClientConfig::default();
    c.nat64_prefix = Some("64:ff9b::1".parse().unwrap());
    assert_eq!(
        Client::new(Arc::new(c), [0; 32], now).err(),
        Some(ConfigError::OutOfRange("nat64_prefix"))
    );
    // The client reaches its IPv4 server at the synthesised address.
    let mut c = ClientConfig::default();
    c.nat64_prefix = Some(WELL_KNOWN_NAT64_PREFIX);
    let mut client = Client::new(Arc::new(c), [0; 32], now).unwrap();
    client.connect(now, v4, &[]).unwrap();
    let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
    let t = client.poll_transmit(now, &mut buf).expect("a hello");
    assert_eq!(t.dst, synthesized);
    // What the server says of IPv4 peers is rewritten the same way.
    let peer: SocketAddr = "198.51.100.9:5000".parse().unwrap();
    let via = synthesize_nat64(WELL_KNOWN_NAT64_PREFIX, peer);
    let msg = ControlMsg::PeerCandidates {
        peer: 7,
        addrs: Candidates::new(&[peer, v6]),
    };
    let ControlMsg::PeerCandidates { addrs, .. } =
        crate::client::through_nat64(msg, WELL_KNOWN_NAT64_PREFIX)
    else {
        panic!("still candidates")
    };
    assert_eq!(addrs.iter().collect::<Vec<_>>(), [via, v6]);
    let moved = ControlMsg::PeerMoved {
        peer: 7,
        addr: peer,
    };
    assert_eq!(
        crate::client::through_nat64(moved, WELL_KNOWN_NAT64_PREFIX),
        ControlMsg::PeerMoved { peer: 7, addr: via }
    );
}
