//! NAT behaviour discovery (RFC 5780) on async-std: a client discovering through a mio server
//! (the client uses only its primary socket), and an async-std server answering from the extra
//! sockets its driver opens for discovery. Loopback has no NAT, and 127.0.0.2 is a second
//! loopback IP on Linux with no setup.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_std::future::timeout;
use async_std::task;
use pierce_async_std::{ClientEvent, ClientHandle, os_seed, spawn_client, spawn_server, unix_time};
use pierce_core::nat::{Dependence, NatBehavior};
use pierce_core::{ClientConfig, SecretKey, Server, ServerConfig, SocketId};
use pierce_mio::Driver;

const LIMIT: Duration = Duration::from_secs(10);

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn alternate() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], 0))
}

fn server_config() -> ServerConfig {
    ServerConfig::new(SecretKey::from_bytes(os_seed().expect("os entropy")))
}

/// Runs discovery from `client` against `server` and returns what it found.
async fn discover(client: &ClientHandle, server: SocketAddr) -> NatBehavior {
    client.discover_nat(server).await.expect("driver alive");
    match client.next_event().await.expect("driver alive") {
        ClientEvent::NatDiscovered { server: s, result } => {
            assert_eq!(s, server);
            result.expect("discovery answered")
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn assert_no_nat(found: &NatBehavior, client: &ClientHandle, alt: SocketAddr) {
    assert_eq!(found.reflexive, client.local_addr());
    assert_eq!(found.mapping, Some(Dependence::EndpointIndependent));
    assert_eq!(found.filtering, Some(Dependence::EndpointIndependent));
    assert_eq!(found.alternate, Some(alt));
}

#[test]
fn a_client_on_async_std_discovers_no_nat_through_a_mio_server() {
    let server = Server::new(
        Arc::new(server_config()),
        os_seed().expect("os entropy"),
        Instant::now(),
        unix_time(),
    )
    .expect("config");
    let mut driver = Driver::bind(localhost(), server).expect("bind");
    let primary = driver.local_addr();
    driver
        .endpoint_mut()
        .enable_nat_discovery(primary, alternate())
        .expect("valid addresses");
    driver.pump(Duration::ZERO).expect("pump");
    let alt = driver.socket_addr(SocketId(1)).expect("alternate bound");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let pump = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            driver.pump(Duration::from_millis(10)).expect("pump");
        }
    });
    task::block_on(timeout(LIMIT, async {
        let c = spawn_client(localhost(), ClientConfig::default())
            .await
            .expect("bind client");
        let found = discover(&c, primary).await;
        assert_no_nat(&found, &c, alt);
    }))
    .expect("within the time limit");
    stop.store(true, Ordering::Relaxed);
    pump.join().expect("server thread");
}

#[test]
fn an_async_std_server_answers_discovery_from_its_extra_sockets() {
    task::block_on(timeout(LIMIT, async {
        let server = spawn_server(localhost(), server_config())
            .await
            .expect("bind server");
        server
            .enable_nat_discovery(alternate())
            .await
            .expect("valid addresses");
        let primary = server.local_addr();
        let alt = server
            .socket_addr(SocketId(1))
            .await
            .expect("driver alive")
            .expect("alternate bound");
        assert_eq!(alt.ip(), alternate().ip());
        let crossings = [
            server.socket_addr(SocketId(2)).await.expect("driver alive"),
            server.socket_addr(SocketId(3)).await.expect("driver alive"),
        ];
        assert_eq!(
            crossings,
            [
                Some(SocketAddr::new(primary.ip(), alt.port())),
                Some(SocketAddr::new(alt.ip(), primary.port())),
            ]
        );
        let c = spawn_client(localhost(), ClientConfig::default())
            .await
            .expect("bind client");
        let found = discover(&c, primary).await;
        assert_no_nat(&found, &c, alt);
        // Answers left from the socket each test asked for; none named a missing socket.
        let stats = server.driver_stats();
        assert_eq!(stats.unknown_socket_drops, 0, "{stats:?}");
        assert_eq!(stats.socket_open_failures, 0, "{stats:?}");
        assert!(server.stats().await.expect("alive").stun_answered >= 3);
        // A wildcard-bound server cannot do discovery: the core says why.
        let wild = spawn_server(SocketAddr::from(([0, 0, 0, 0], 0)), server_config())
            .await
            .expect("bind");
        assert!(matches!(
            wild.enable_nat_discovery(alternate()).await,
            Err(pierce_async_std::HandleError::Core(_))
        ));
    }))
    .expect("within the time limit");
}
