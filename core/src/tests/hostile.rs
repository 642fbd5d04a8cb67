//! Hostile input: replays, truncation, bit flips, garbage, floods, amplification.

use crate::Endpoint as _;
use std::net::SocketAddr;
use std::time::Duration;

use rand::{RngCore, SeedableRng, rngs::StdRng};

use super::util::{Net, server_config};
use crate::wire::handshake::{ClientHello, MIN_CLIENT_HELLO_LEN};
use crate::wire::reset::RESET_LEN;
use crate::wire::sealed::{KIND_PEER, KIND_SEALED};
use crate::{ClientConfig, MAX_DATAGRAM_SIZE, ServerEvent};

fn stranger(i: u32) -> SocketAddr {
    SocketAddr::new(
        [192, 0, 2, (i % 250) as u8 + 1].into(),
        10_000 + (i % 50_000) as u16,
    )
}

/// The last sealed datagram the first client sent to the server that carried app data.
fn captured_client_packet(net: &mut Net) -> Vec<u8> {
    let now = net.now;
    net.clients[0]
        .client
        .send_to_server(now, b"pay me once")
        .unwrap();
    net.run_for(Duration::from_millis(30));
    let (c, s) = (net.clients[0].addr, net.server_addr);
    net.sent_between(c, s).last().unwrap().bytes.clone()
}

fn messages(net: &Net) -> usize {
    net.server_events
        .iter()
        .filter(|(_, e)| matches!(e, ServerEvent::Message { .. }))
        .count()
}

#[test]
fn a_replayed_datagram_is_dropped_and_counted() {
    let mut net = Net::connected(1);
    let pkt = captured_client_packet(&mut net);
    assert_eq!(messages(&net), 1);
    let (c, s) = (net.clients[0].addr, net.server_addr);
    for _ in 0..3 {
        net.deliver(c, s, &pkt);
    }
    // Replayed from another address too: still a replay, and the session does not move.
    net.deliver(stranger(1), s, &pkt);
    assert_eq!(messages(&net), 1, "delivered exactly once");
    assert_eq!(net.server.stats().dropped.replayed, 4);
    let host = net.clients[0].client.host_id().unwrap();
    assert_eq!(net.server.client_addr(host), Some(c));
    assert_eq!(net.server.stats().address_changes, 0);
}

#[test]
fn truncated_bit_flipped_and_unknown_datagrams_are_dropped_and_counted() {
    let mut net = Net::connected(1);
    let pkt = captured_client_packet(&mut net);
    let (c, s) = (net.clients[0].addr, net.server_addr);
    let before = net.server.stats().dropped;

    // Truncation at every length.
    for len in 0..pkt.len() {
        net.deliver(c, s, &pkt[..len]);
    }
    let after = net.server.stats().dropped;
    let truncated = pkt.len() as u64;
    // Cut inside the header: malformed. Cut after it: the counter was already seen, so the
    // cheap replay check drops it before any decryption.
    assert_eq!(after.malformed - before.malformed, 32, "{after:?}");
    assert_eq!(
        after.replayed - before.replayed,
        truncated - 32,
        "{after:?}"
    );

    // Every single-bit flip.
    let before = net.server.stats().dropped.total();
    for bit in 0..pkt.len() * 8 {
        let mut d = pkt.clone();
        d[bit / 8] ^= 1 << (bit % 8);
        net.deliver(c, s, &d);
    }
    let after = net.server.stats().dropped;
    assert_eq!(after.total() - before, (pkt.len() * 8) as u64);

    // Unknown kinds, other versions, STUN the server does not answer.
    let b = net.server.stats().dropped;
    net.deliver(c, s, &[0x42; 64]);
    net.deliver(c, s, &[KIND_SEALED, 9, 0, 0, 0, 0, 0, 0]);
    // A STUN Binding *response*: a server never answers those.
    let stun = [
        1, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    net.deliver(c, s, &stun);
    let d = net.server.stats().dropped;
    assert_eq!(
        (
            d.unknown_kind - b.unknown_kind,
            d.bad_version - b.bad_version,
            d.stun - b.stun
        ),
        (1, 1, 1)
    );

    assert_eq!(messages(&net), 1, "nothing but the original was delivered");
    net.run_for(Duration::from_secs(1));
    assert!(
        net.clients[0].client.is_connected(),
        "garbage does not hurt the session"
    );
}

#[test]
fn the_client_drops_garbage_and_forgeries_too() {
    let mut net = Net::connected(1);
    let (c, s) = (net.clients[0].addr, net.server_addr);
    let host = net.clients[0].client.host_id().unwrap();
    let now = net.now;
    net.server.send(now, host, b"real").unwrap();
    net.run_for(Duration::from_millis(30));
    let pkt = net.sent_between(s, c).last().unwrap().bytes.clone();
    // A second packet the client never receives, to tamper with.
    net.filter = Some(Box::new(|_| false));
    let now = net.now;
    net.server.send(now, host, b"unseen").unwrap();
    net.run_for(Duration::from_millis(30));
    net.filter = None;
    let unseen = net.sent_between(s, c).last().unwrap().bytes.clone();
    let before = net.clients[0].client.stats().dropped.total();
    net.deliver(s, c, &pkt); // replay
    let mut flipped = unseen.clone();
    flipped[20] ^= 0x80;
    net.deliver(s, c, &flipped);
    net.deliver(stranger(3), c, &pkt); // right bytes, wrong source
    net.deliver(s, c, &[0xD3, 1]);
    let d = net.clients[0].client.stats().dropped;
    assert_eq!(d.total() - before, 4);
    assert_eq!((d.replayed, d.auth_failed), (1, 1));
    let real = net.clients[0]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, crate::ClientEvent::Message { .. }))
        .count();
    assert_eq!(real, 1);
}

/// Sends `datagram` from an address the server has never validated and returns the bytes the
/// server sent back to that address.
fn reply_bytes(net: &mut Net, from: SocketAddr, datagram: &[u8]) -> usize {
    let now = net.now;
    net.server.handle_datagram(now, from, datagram);
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    let mut total = 0;
    while let Some(t) = net.server.poll_transmit(now, &mut buf) {
        assert_eq!(t.dst, from, "replies only go to the sender");
        total += t.len;
    }
    total
}

#[test]
fn replies_to_unvalidated_sources_are_never_larger_than_the_request() {
    let mut net = Net::connected(1);
    let pkt = captured_client_packet(&mut net);
    let mut rng = StdRng::seed_from_u64(7);
    let mut worst = 0.0f64;
    let mut answered = 0;
    let mut check = |net: &mut Net, i: u32, d: &[u8]| {
        let out = reply_bytes(net, stranger(i), d);
        assert!(
            out <= d.len(),
            "{out} bytes answered {} from {}",
            d.len(),
            stranger(i)
        );
        if out > 0 {
            answered += 1;
            worst = worst.max(out as f64 / d.len() as f64);
        }
    };
    for i in 0..400u32 {
        // Garbage of every size up to a datagram.
        let mut g = vec![0u8; (i as usize * 3) % 1400 + 1];
        rng.fill_bytes(&mut g);
        check(&mut net, i, &g);
        // Garbage wearing each of our first bytes.
        for kind in [0xD1, 0xD2, 0xD3, 0x00] {
            g[0] = kind;
            if g.len() > 1 {
                g[1] = 1;
            }
            check(&mut net, i, &g);
        }
        // A replayed sealed packet from a stranger.
        check(&mut net, i, &pkt);
        // Well-formed ClientHellos, both padded and short.
        let mut hello = [0u8; MIN_CLIENT_HELLO_LEN];
        let mut e = [0u8; 32];
        rng.fill_bytes(&mut e);
        let n = ClientHello {
            client_session: i,
            client_ephemeral: e,
            cookie: &[],
        }
        .encode(&mut hello)
        .unwrap();
        check(&mut net, i, &hello[..n]);
        check(&mut net, i, &hello[..60]);
    }
    assert!(answered > 0, "valid hellos are answered");
    assert!(
        worst < 0.1,
        "answers are under a tenth of the request: {worst}"
    );
}

#[test]
fn handshakes_are_rate_limited_per_source_without_hurting_others() {
    let mut cfg = server_config();
    cfg.handshake_burst_per_ip = 10;
    cfg.handshake_rate_per_ip = 5;
    let mut net = Net::new(cfg, ClientConfig::default(), 1);
    let flooder: SocketAddr = "192.0.2.66:1000".parse().unwrap();
    let mut hello = [0u8; MIN_CLIENT_HELLO_LEN];
    for i in 0..100u32 {
        let n = ClientHello {
            client_session: i,
            client_ephemeral: [i as u8 + 1; 32],
            cookie: &[],
        }
        .encode(&mut hello)
        .unwrap();
        let now = net.now;
        net.server.handle_datagram(now, flooder, &hello[..n]);
    }
    let s = net.server.stats();
    assert_eq!(s.handshakes_started, 10);
    // Over the unproven budget: a Retry each (the flooder could be spoofing that address),
    // and nothing dropped as rate-limited.
    assert_eq!((s.dropped.cookie_required, s.retries_sent), (90, 0));
    assert_eq!(s.dropped.rate_limited, 0);
    net.flush();
    assert_eq!(net.server.stats().retries_sent, 90);
    net.connect_all(&[]);
    assert!(net.drive_until(Duration::from_secs(2), |n| {
        n.clients[0].client.is_connected()
    }));
}

#[test]
fn half_open_state_is_bounded_and_expires() {
    let mut cfg = server_config();
    cfg.max_half_open = 4;
    let mut net = Net::new(cfg, ClientConfig::default(), 0);
    let mut hello = [0u8; MIN_CLIENT_HELLO_LEN];
    for i in 0..10u32 {
        let n = ClientHello {
            client_session: i,
            client_ephemeral: [i as u8 + 1; 32],
            cookie: &[],
        }
        .encode(&mut hello)
        .unwrap();
        let now = net.now;
        net.server.handle_datagram(now, stranger(i), &hello[..n]);
    }
    let s = net.server.stats();
    assert_eq!((s.half_open, s.dropped.handshake_capacity), (4, 6));
    net.flush();
    net.run_for(Duration::from_secs(11));
    let s = net.server.stats();
    assert_eq!((s.half_open, s.handshakes_expired), (0, 4));
    assert_eq!(net.server.poll_timeout().map(|t| t.at), None);
}

#[test]
fn sealed_packets_for_unknown_sessions_get_only_a_reset_smaller_than_themselves() {
    let mut net = Net::with_clients(0);
    let mut rng = StdRng::seed_from_u64(9);
    let (mut bytes_in, mut bytes_out) = (0, 0);
    for i in 0..1000u32 {
        // From the smallest sealed packet (header and tag) up.
        let mut d = vec![0u8; 32 + i as usize % 1200];
        rng.fill_bytes(&mut d);
        d[..4].copy_from_slice(&[KIND_SEALED, 1, 0, 0]);
        let out = reply_bytes(&mut net, stranger(i), &d);
        assert_eq!(out, RESET_LEN);
        assert!(out < d.len());
        (bytes_in, bytes_out) = (bytes_in + d.len(), bytes_out + out);
    }
    let s = net.server.stats();
    assert_eq!((s.dropped.unknown_session, s.resets_sent), (1000, 1000));
    assert_eq!(s.io.datagrams_out, 1000);
    assert!(
        bytes_out * 3 < bytes_in,
        "amplification {}",
        bytes_out as f64 / bytes_in as f64
    );
}

#[test]
fn stun_binding_requests_are_answered_with_a_bounded_amplification() {
    use crate::wire::stun::{StunMessage, encode_binding_request};
    let mut cfg = server_config();
    cfg.stun_burst_per_ip = 10;
    let mut net = Net::new(cfg, ClientConfig::default(), 0);
    // A bare 20-byte request, as turnutils_stunclient sends it.
    let mut req = [0u8; 20];
    req[..2].copy_from_slice(&[0x00, 0x01]);
    req[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    req[8..20].copy_from_slice(&[7; 12]);
    let from = stranger(5);
    let now = net.now;
    net.server.handle_datagram(now, from, &req);
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    let t = net.server.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(t.dst, from);
    let m = StunMessage::decode(&buf[..t.len]).unwrap();
    assert_eq!(m.transaction_id, [7; 12]);
    assert_eq!(m.mapped_address(), Some(from));
    assert!(m.fingerprint_ok(&buf[..t.len]));
    let factor = t.len as f64 / req.len() as f64;
    assert!(factor <= 2.0, "IPv4 amplification {factor}");
    // A request with a broken FINGERPRINT is ignored.
    let mut fp = [0u8; 40];
    let n = encode_binding_request(&mut fp, &[8; 12]).unwrap();
    fp[n - 1] ^= 1;
    assert_eq!(reply_bytes(&mut net, from, &fp[..n]), 0);
    // A flood from one source is answered only up to its bucket.
    let answered = (0..100)
        .filter(|_| reply_bytes(&mut net, from, &req) > 0)
        .count();
    assert!(answered <= 10, "{answered}");
    assert!(net.server.stats().dropped.rate_limited >= 90);
}

#[test]
fn a_sender_named_in_ipv4_mapped_form_is_answered_and_reported_as_ipv4() {
    // A dual-stack socket names an IPv4 sender [::ffff:a.b.c.d]:p; the core works with the
    // canonical form (issue #20): the answer goes to, and names, the IPv4 address.
    use crate::wire::stun::{StunMessage, encode_binding_request};
    let mut net = Net::new(server_config(), ClientConfig::default(), 0);
    let v4 = stranger(6);
    let SocketAddr::V4(a) = v4 else {
        panic!("{v4}")
    };
    let mapped = SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port());
    assert_eq!(crate::canonical(mapped), v4);
    assert_eq!(crate::canonical(v4), v4);
    let v6: SocketAddr = "[2001:db8::7]:9".parse().unwrap();
    assert_eq!(crate::canonical(v6), v6);
    let mut req = [0u8; 40];
    let n = encode_binding_request(&mut req, &[9; 12]).unwrap();
    let now = net.now;
    net.server.handle_datagram(now, mapped, &req[..n]);
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    let t = net.server.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(t.dst, v4);
    let m = StunMessage::decode(&buf[..t.len]).unwrap();
    assert_eq!(m.mapped_address(), Some(v4));
}

#[test]
fn a_client_learns_its_reflexive_address_from_the_server_over_stun() {
    let mut net = Net::with_clients(1);
    let now = net.now;
    let server = net.server_addr;
    net.clients[0].client.query_stun(now, server).unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.clients[0].events[0].1,
        crate::ClientEvent::StunResult {
            server,
            result: Ok(net.clients[0].addr)
        }
    );
    assert_eq!(net.server.stats().stun_answered, 1);
    // A silent STUN server: the query times out.
    net.filter = Some(Box::new(|_| false));
    let now = net.now;
    net.clients[0].client.query_stun(now, server).unwrap();
    net.run_for(Duration::from_secs(30));
    assert!(matches!(
        net.clients[0].events.last().unwrap().1,
        crate::ClientEvent::StunResult {
            result: Err(crate::stun::StunError::TimedOut),
            ..
        }
    ));
}

#[test]
fn under_load_spoofed_hellos_cost_no_state_and_real_clients_connect_with_a_cookie() {
    let mut cfg = server_config();
    cfg.cookie_threshold = 4;
    let mut net = Net::new(cfg, ClientConfig::default(), 3);
    // Four real-looking half-open handshakes put the server under load.
    let mut hello = [0u8; MIN_CLIENT_HELLO_LEN];
    for i in 0..4u32 {
        let n = ClientHello {
            client_session: i,
            client_ephemeral: [i as u8 + 1; 32],
            cookie: &[],
        }
        .encode(&mut hello)
        .unwrap();
        let now = net.now;
        net.server.handle_datagram(now, stranger(i), &hello[..n]);
    }
    assert_eq!(net.server.stats().half_open, 4);
    net.flush(); // their ServerHellos go out (to nobody)
    // A spoofed flood from 1000 sources: each gets a 24-byte Retry, none gets state.
    for i in 0..1000u32 {
        let n = ClientHello {
            client_session: i,
            client_ephemeral: [7; 32],
            cookie: &[],
        }
        .encode(&mut hello)
        .unwrap();
        let src = SocketAddr::new([203, 0, 113, (i % 200) as u8].into(), 20_000 + i as u16);
        let out = reply_bytes(&mut net, src, &hello[..n]);
        assert!(out <= 24, "{out}");
    }
    let s = net.server.stats();
    assert_eq!(s.half_open, 4, "no state for unechoed hellos");
    assert!(s.retries_sent >= 990, "{s:?}");
    // Real clients echo the cookie and connect (one extra round trip).
    net.connect_all(&[]);
    assert!(net.drive_until(Duration::from_secs(2), |n| {
        n.clients.iter().all(|c| c.client.is_connected())
    }));
    for c in &net.clients {
        assert_eq!(c.client.stats().retries_received, 1);
    }
}

#[test]
fn a_cookie_only_works_from_the_address_it_was_given_to() {
    use crate::wire::handshake::Retry;
    let mut cfg = server_config();
    cfg.cookie_threshold = 0; // always under load
    let mut net = Net::new(cfg, ClientConfig::default(), 0);
    let mut hello = [0u8; MIN_CLIENT_HELLO_LEN];
    let mk = |hello: &mut [u8; MIN_CLIENT_HELLO_LEN], cookie: &[u8]| {
        ClientHello {
            client_session: 42,
            client_ephemeral: [5; 32],
            cookie,
        }
        .encode(hello)
        .unwrap()
    };
    let n = mk(&mut hello, &[]);
    let now = net.now;
    net.server.handle_datagram(now, stranger(1), &hello[..n]);
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    let t = net.server.poll_transmit(now, &mut buf).unwrap();
    let retry = Retry::decode(&buf[..t.len]).unwrap();
    // Echoed from elsewhere: refused (another Retry, no state).
    let n = mk(&mut hello, &retry.cookie);
    net.server.handle_datagram(now, stranger(2), &hello[..n]);
    assert_eq!(net.server.stats().half_open, 0);
    // Echoed from the right address: accepted.
    net.server.handle_datagram(now, stranger(1), &hello[..n]);
    assert_eq!(net.server.stats().half_open, 1);
    // And it expires: 30 s later the same cookie is refused.
    net.now += Duration::from_secs(30);
    let now = net.now;
    let mut other = [0u8; MIN_CLIENT_HELLO_LEN];
    let n = ClientHello {
        client_session: 43,
        client_ephemeral: [5; 32],
        cookie: &retry.cookie,
    }
    .encode(&mut other)
    .unwrap();
    net.server.handle_datagram(now, stranger(1), &other[..n]);
    assert!(net.server.stats().dropped.cookie_required >= 3);
}

/// Someone on the path between a and b holds back b's direct packets one at a time and
/// delivers each to a from its own address first (keepalive probes, and b's answers to a's
/// probes among them). a probes that address but never moves there: an answer b gave to a
/// probe sent to b's real address does not validate another one (the probe value is bound
/// to the path), and b's path stays.
#[test]
fn forwarded_probe_answers_do_not_move_a_direct_path() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let (mut net, _, b) = Net::direct_pair();
    let direct_to_b = |n: &Net| {
        n.clients[0]
            .client
            .peer_stats(b)
            .is_some_and(|s| s.path == crate::Path::Direct(n.clients[1].addr))
    };
    assert!(direct_to_b(&net));
    let (a_addr, b_addr) = (net.clients[0].addr, net.clients[1].addr);
    let attacker = stranger(7);
    let held: Rc<RefCell<Option<Vec<u8>>>> = Rc::default();
    let hold = held.clone();
    net.filter = Some(Box::new(move |s| {
        if s.from == b_addr && s.to == a_addr && s.bytes[0] == KIND_PEER {
            let mut h = hold.borrow_mut();
            if h.is_none() {
                *h = Some(s.bytes.clone());
                return false;
            }
        }
        true
    }));
    let mut forwarded = 0;
    for _ in 0..400 {
        net.run_for(Duration::from_millis(50));
        let Some(p) = held.borrow_mut().take() else {
            continue;
        };
        let now = net.now;
        net.clients[0].client.handle_datagram(now, attacker, &p);
        forwarded += 1;
        net.run_for(Duration::from_millis(30));
        assert!(
            direct_to_b(&net),
            "a moved on forwarded packet {forwarded}: {:?}",
            net.clients[0].client.peer_stats(b).map(|s| s.path)
        );
    }
    assert!(forwarded >= 5, "{forwarded} packets forwarded");
    let probes_to_attacker = net.log.iter().filter(|s| s.to == attacker).count();
    assert!(probes_to_attacker >= 1, "a checked the new address");
}

/// Two relay-only clients in a group; client 0 sends `payload` to client 1; returns the relay
/// packet (fast path) it sent the server, and the relayed packet the server sent client 1.
fn relayed_once(net: &mut Net, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let hosts = net.hosts();
    let now = net.now;
    net.server.create_group(now, &hosts).unwrap();
    net.run_for(Duration::from_millis(200));
    let now = net.now;
    net.clients[0]
        .client
        .send(now, hosts[1], crate::Channel::RELIABLE_ORDERED, payload)
        .unwrap();
    net.run_for(Duration::from_millis(100));
    let (a, b, s) = (net.clients[0].addr, net.clients[1].addr, net.server_addr);
    let kind = |k: u8| move |p: &&super::util::Sent| p.bytes[0] == k;
    let up = net.sent_between(a, s).into_iter().find(kind(0xD6)).unwrap();
    let down = net.sent_between(s, b).into_iter().find(kind(0xD7)).unwrap();
    (up.bytes.clone(), down.bytes.clone())
}

fn peer_messages(net: &Net, i: usize) -> usize {
    net.clients[i]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, crate::ClientEvent::PeerMessage { .. }))
        .count()
}

#[test]
fn a_relay_packet_replayed_or_with_a_forged_header_is_dropped_before_it_costs_anything() {
    let mut net = Net::connected_relay_only(2);
    let (pkt, _) = relayed_once(&mut net, b"once");
    let relayed = net.server.stats().relayed_packets;
    let (a, s) = (net.clients[0].addr, net.server_addr);
    // Replayed from the sender's address, or from anywhere else: a replay.
    net.deliver(a, s, &pkt);
    net.deliver(stranger(7), s, &pkt);
    assert_eq!(net.server.stats().dropped.replayed, 2);
    // A changed header bit (the session, the counter, the tag, the peer packet's pair) fails
    // the tag, or names a counter already seen (the replay window checks first); so does a
    // fresh counter without the session's key. (The peer packet's own counter is not under
    // the relay tag: the receiver authenticates it, and the relay counter is already spent.)
    for byte in [4, 8, 15, 16, 31, 36, 47] {
        let mut bad = pkt.clone();
        bad[byte] ^= 0x20;
        net.deliver(a, s, &bad);
    }
    let d = net.server.stats().dropped;
    // (A flipped counter may name one already seen: refused as a replay before the tag.)
    assert_eq!(
        d.auth_failed + d.unknown_session + d.replayed,
        2 + 7,
        "{d:?}"
    );
    let stats = net.server.stats();
    assert_eq!(stats.relayed_packets, relayed, "nothing forwarded");
    assert_eq!(peer_messages(&net, 1), 1, "delivered exactly once");
    // The sender's session did not move to the stranger, and its own traffic still flows.
    let host = net.clients[0].client.host_id().unwrap();
    assert_eq!(net.server.client_addr(host), Some(a));
    let (b, now) = (net.hosts()[1], net.now);
    net.clients[0]
        .client
        .send(now, b, crate::Channel::RELIABLE_ORDERED, b"twice")
        .unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(peer_messages(&net, 1), 2);
}

#[test]
fn spoofed_relay_packets_cannot_spend_a_clients_relay_budget() {
    let mut cfg = ClientConfig::default();
    cfg.direct_paths = false;
    cfg.nat_discovery = false;
    // No path-MTU probes: they would spend the small budget below too.
    cfg.max_datagram_size = crate::BASE_DATAGRAM_SIZE;
    let mut server = server_config();
    // A small budget: 4 KiB, refilled at 4 KiB/s.
    server.relay_rate_per_client = 4096;
    server.relay_burst_per_client = 4096;
    let mut net = Net::new(server, cfg, 2);
    net.connect_all(&[]);
    assert!(net.drive_until(Duration::from_secs(5), |n| {
        n.clients.iter().all(|c| c.client.is_connected())
    }));
    let (pkt, _) = relayed_once(&mut net, b"seen on the wire");
    // An attacker who saw one of the victim's relay packets sends a thousand with fresh
    // counters, from the victim's own address (spoofed) and from its own.
    let (a, s) = (net.clients[0].addr, net.server_addr);
    for i in 0..1000u64 {
        let mut forged = pkt.clone();
        forged[8..16].copy_from_slice(&(1_000_000 + i).to_be_bytes());
        net.deliver(if i % 2 == 0 { a } else { stranger(3) }, s, &forged);
    }
    assert_eq!(net.server.stats().dropped.auth_failed, 1000);
    assert_eq!(net.server.stats().dropped.relay_rate, 0);
    // The victim's whole budget is still there: 3 KiB of messages right away all go through.
    let (b, now) = (net.hosts()[1], net.now);
    for i in 0..3u8 {
        net.clients[0]
            .client
            .send(now, b, crate::Channel::RELIABLE_ORDERED, &[i; 900])
            .unwrap();
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.server.stats().dropped.relay_rate, 0);
    assert_eq!(peer_messages(&net, 1), 4);
}

#[test]
fn a_replayed_relayed_packet_is_dropped_by_the_receiving_peer() {
    let mut net = Net::connected_relay_only(2);
    let (_, down) = relayed_once(&mut net, b"once");
    assert_eq!(peer_messages(&net, 1), 1);
    let (s, b) = (net.server_addr, net.clients[1].addr);
    let before = net.clients[1].client.stats().dropped;
    net.deliver(s, b, &down);
    // From someone who is not the server: not even looked at.
    net.deliver(stranger(9), b, &down);
    net.run_for(Duration::from_millis(50));
    let after = net.clients[1].client.stats().dropped;
    assert_eq!(after.replayed, before.replayed + 1);
    assert_eq!(after.unexpected, before.unexpected + 1);
    assert_eq!(peer_messages(&net, 1), 1, "delivered exactly once");
}
