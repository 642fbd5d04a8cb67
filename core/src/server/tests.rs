//! The server as a whole: its deadline and the reason it gives for it come from one
//! computation, whichever machine's deadline is earliest.
#![allow(clippy::field_reassign_with_default)] // configs are #[non_exhaustive]: built this way by users too

use std::net::SocketAddr;
use std::sync::Arc;

use crate::crypto::Ephemeral;
use crate::tests::util::{Net, UNIX_START, client_addr, server_config};
use crate::time::{Duration, Instant};
use crate::wire::handshake::{ClientHello, MIN_CLIENT_HELLO_LEN};
use crate::{ClientConfig, Endpoint as _, MAX_DATAGRAM_SIZE, Server, ServerConfig};
use crate::{SocketId, SocketRequest};

/// A server config with neither offline reports nor tickets: the only deadlines of an
/// established session are its keepalive and its idle timeout.
fn plain_config() -> ServerConfig {
    let mut cfg = server_config();
    cfg.offline_after = Duration::ZERO;
    cfg.ticket_lifetime = Duration::ZERO;
    cfg
}

/// One client connected to a server with `cfg`, nothing in flight; the client is not driven
/// afterwards (it falls silent).
fn connected(cfg: ServerConfig) -> Net {
    let mut client = ClientConfig::default();
    client.nat_discovery = false;
    let mut net = Net::new(cfg, client, 1);
    net.connect_all(&[]);
    assert!(net.drive_until(Duration::from_secs(5), |n| {
        n.clients[0].client.is_connected()
    }));
    net.run_for(Duration::from_millis(50));
    net
}

/// When the server last sent to, and last heard from, the client (from the wire log).
fn last_exchange(net: &Net) -> (Instant, Instant) {
    let server = net.server_addr;
    let last_send = net.log.iter().rev().find(|s| s.from == server).unwrap();
    let last_recv = net.log.iter().rev().find(|s| s.to == server).unwrap();
    (
        net.epoch + last_send.at,
        net.epoch + last_recv.at + net.latency,
    )
}

#[test]
fn the_reason_names_a_half_open_handshakes_expiry() {
    let t0 = crate::tests::epoch();
    let cfg = plain_config();
    let expiry = cfg.handshake_timeout;
    let mut server = Server::new(Arc::new(cfg), [1; 32], t0, UNIX_START).unwrap();
    let mut rng = crate::rng::derive(&[3; 32], b"test");
    let mut hello = [0u8; MIN_CLIENT_HELLO_LEN];
    let n = ClientHello {
        client_session: 9,
        client_ephemeral: Ephemeral::generate(&mut rng).public(),
        cookie: &[],
    }
    .encode(&mut hello)
    .unwrap();
    server.handle_datagram(t0, client_addr(0), &hello[..n]);
    assert_eq!(server.stats().half_open, 1);
    assert_eq!(server.poll_timeout().map(|t| t.at), Some(t0 + expiry));
    assert_eq!(
        server.poll_timeout().map_or("none", |t| t.reason),
        "handshake expiry"
    );
}

#[test]
fn the_reason_names_an_established_sessions_keepalive_then_its_idle_timeout() {
    let cfg = plain_config();
    let (keepalive, idle) = (cfg.keepalive_interval, cfg.idle_timeout);
    let handshake = cfg.handshake_timeout;
    let mut net = connected(cfg);
    let (mut last_send, last_recv) = last_exchange(&net);
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    // Deadlines only ever move earlier: the first may be the keepalive as it stood before
    // the Welcome went out (one early, harmless wakeup). From then on each is exact.
    let first = net.server.poll_timeout().unwrap().at;
    assert_eq!(
        net.server.poll_timeout().map_or("none", |t| t.reason),
        "server keepalive"
    );
    assert!(first <= last_send + keepalive);
    net.server.handle_timeout(first);
    assert!(net.server.poll_transmit(first, &mut buf).is_none());
    let mut seen = Vec::new();
    while net.server.clients().next().is_some() {
        let at = net.server.poll_timeout().unwrap().at;
        let reason = net.server.poll_timeout().map_or("none", |t| t.reason);
        match reason {
            "server keepalive" => assert_eq!(at, last_send + keepalive),
            "client idle timeout" => assert_eq!(at, last_recv + idle),
            // The half-open expiry, left in the heap when the handshake completed: woken
            // for once, and cleared.
            "stale session deadline" => {
                assert_eq!(at, net.epoch + net.latency + handshake)
            }
            other => panic!("unexpected deadline for {other}"),
        }
        seen.push(reason);
        net.server.handle_timeout(at);
        while net.server.poll_transmit(at, &mut buf).is_some() {
            last_send = at;
        }
    }
    assert_eq!(
        seen,
        [
            "server keepalive",
            "stale session deadline",
            "server keepalive",
            "client idle timeout"
        ]
    );
}

#[test]
fn the_reason_names_a_tcp_streams_claim_timeout_when_it_comes_first() {
    let mut cfg = plain_config();
    cfg.keepalive_interval = Duration::from_secs(20);
    cfg.idle_timeout = Duration::from_secs(60);
    // (The half-open expiry left in the heap comes after both.)
    cfg.handshake_timeout = Duration::from_secs(30);
    let mut net = connected(cfg);
    let session = net.server.poll_timeout().unwrap().at;
    assert_eq!(
        net.server.poll_timeout().map_or("none", |t| t.reason),
        "server keepalive"
    );
    let (now, stream) = (net.now, SocketId::stream(1));
    let peer: SocketAddr = "198.51.100.200:50000".parse().unwrap();
    net.server.handle_stream_accepted(now, stream, peer);
    let claim = now + Duration::from_secs(10);
    assert!(claim < session);
    assert_eq!(net.server.poll_timeout().map(|t| t.at), Some(claim));
    assert_eq!(
        net.server.poll_timeout().map_or("none", |t| t.reason),
        "TCP stream claim timeout"
    );
    net.server.handle_timeout(claim);
    assert_eq!(
        net.server.poll_socket_request(),
        Some(SocketRequest::Close { id: stream })
    );
    assert_eq!(net.server.poll_timeout().map(|t| t.at), Some(session));
    assert_eq!(
        net.server.poll_timeout().map_or("none", |t| t.reason),
        "server keepalive"
    );
}

#[test]
fn hellos_down_streams_cannot_hold_more_streams_than_the_admission_pool() {
    // Two addresses open streams and send a valid ClientHello down each (no token is
    // checked before Connect): the streams stay in the pool until a session is established,
    // so the server keeps only `max_sessionless_streams` of them, whatever the handshakes.
    let t0 = crate::tests::epoch();
    let mut cfg = plain_config();
    cfg.max_sessionless_streams = 32;
    let mut server = Server::new(Arc::new(cfg), [1; 32], t0, UNIX_START).unwrap();
    let mut rng = crate::rng::derive(&[4; 32], b"test");
    let mut open = std::collections::BTreeSet::new();
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    for n in 1..=200u16 {
        let now = t0 + Duration::from_millis(u64::from(n));
        let peer = SocketAddr::from(([198, 51, 100, 1 + (n % 2) as u8], 40_000 + n));
        let id = SocketId::stream(n);
        server.handle_stream_accepted(now, id, peer);
        open.insert(id);
        let mut hello = [0u8; MIN_CLIENT_HELLO_LEN];
        let len = ClientHello {
            client_session: u32::from(n),
            client_ephemeral: Ephemeral::generate(&mut rng).public(),
            cookie: &[],
        }
        .encode(&mut hello)
        .unwrap();
        server.handle_datagram_on(now, id, peer, &hello[..len]);
        while server.poll_transmit(now, &mut buf).is_some() {}
        while let Some(r) = server.poll_socket_request() {
            if let SocketRequest::Close { id } = r {
                assert!(open.remove(&id), "{id:?} closed twice");
            }
        }
    }
    assert_eq!(open.len(), 32);
    assert_eq!(server.stats().streams_evicted, 200 - 32);
    // The newest are the ones kept.
    assert_eq!(open.first(), Some(&SocketId::stream(169)));
    // The handshakes themselves are the handshake limits' business (64 per address at once).
    assert!(
        server.stats().half_open >= 100,
        "{}",
        server.stats().half_open
    );
}
