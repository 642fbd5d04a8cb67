//! The adapter on real loopback sockets. Protocol behaviour is tested in `pierce-sim`; these
//! tests check the plumbing: bytes both ways, commands and events through the handles, driver
//! lifetime, and that the driver future needs no async-std executor.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_std::future::timeout;
use async_std::task;
use pierce_async_std::{
    ClientEvent, ClientHandle, HandleError, ServerEvent, ServerHandle, os_seed, server,
    spawn_client, spawn_server,
};
use pierce_core::{ClientConfig, SecretKey, SendError, ServerConfig};

const LIMIT: Duration = Duration::from_secs(10);

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn server_config() -> ServerConfig {
    ServerConfig::new(SecretKey::from_bytes(os_seed().expect("os entropy")))
}

/// A client pinned to `server`'s key, connected, on a spawned async-std task.
async fn connected_client(server: SocketAddr, key: pierce_core::PublicKey) -> ClientHandle {
    let mut cfg = ClientConfig::default();
    cfg.server_key = Some(key);
    let c = spawn_client(localhost(), cfg).await.expect("spawn client");
    c.connect(server, &[]).await.expect("fresh client");
    match c.next_event().await {
        Some(ClientEvent::Connected { public_addr, .. }) => {
            assert_eq!(public_addr, c.local_addr(), "loopback has no NAT");
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    c
}

/// Echoes `n` messages back to their senders, then returns (dropping its handle clone).
async fn echo(server: ServerHandle, n: usize) {
    let mut echoed = 0;
    while echoed < n {
        match server.next_event().await.expect("driver alive") {
            ServerEvent::Message { from, payload } => {
                server
                    .send(from, payload)
                    .await
                    .expect("sender is connected");
                echoed += 1;
            }
            ServerEvent::ClientJoined { .. } => {}
            other => panic!("server: unexpected {other:?}"),
        }
    }
}

async fn hello_round_trip(c: &ClientHandle, text: String) {
    c.send_to_server(text.clone().into_bytes())
        .await
        .expect("connected");
    loop {
        match c.next_event().await {
            Some(ClientEvent::Message { payload }) => break assert_eq!(payload, text.as_bytes()),
            // Connected clients discover their NAT by themselves (nat_discovery).
            Some(ClientEvent::NatDiscovered { .. }) => {}
            other => panic!("expected the echo, got {other:?}"),
        }
    }
}

#[test]
fn server_and_two_clients_exchange_datagrams_on_async_std() {
    task::block_on(timeout(LIMIT, async {
        let server = spawn_server(localhost(), server_config()).await?;
        let echoer = task::spawn(echo(server.clone(), 2));
        let a = connected_client(server.local_addr(), server.public_key()).await;
        let b = connected_client(server.local_addr(), server.public_key()).await;
        hello_round_trip(&a, "hello from a".into()).await;
        hello_round_trip(&b, "hello from b".into()).await;
        echoer.await;
        assert_eq!(server.stats().await?.clients, 2);
        // Graceful close goes out before the driver next waits; the server sees both leave.
        a.disconnect(7).await?;
        b.disconnect(7).await?;
        let mut left = 0;
        while left < 2 {
            if let Some(ServerEvent::ClientLeft { .. }) = server.next_event().await {
                left += 1;
            }
        }
        let (ad, sd) = (a.driver_stats(), server.driver_stats());
        assert_eq!(ad.send_errors, 0);
        assert!(ad.datagrams_sent > 0 && ad.datagrams_received > 0, "{ad:?}");
        assert!(sd.datagrams_sent > 0 && sd.datagrams_received > 0, "{sd:?}");
        io::Result::Ok(())
    }))
    .expect("within the time limit")
    .expect("no io error");
}

#[test]
fn the_server_driver_runs_under_async_io_alone_and_stops_when_handles_drop() {
    // The server's driver future is polled only by async-io's `block_on` (what smol's
    // `block_on` is) on a plain thread; the client runs on async-std's executor.
    let (tx, rx) = std::sync::mpsc::channel();
    let server_thread = std::thread::spawn(move || {
        async_io::block_on(async {
            let (handle, driver) = server(localhost(), server_config()).await?;
            tx.send((handle.local_addr(), handle.public_key()))
                .expect("test thread waits");
            // `echo` drops the last handle when done, which must end `run` with Ok.
            let (result, ()) = futures_lite::future::zip(driver.run(), echo(handle, 1)).await;
            result
        })
    });
    let (addr, key) = rx.recv_timeout(LIMIT).expect("server bound");
    task::block_on(timeout(LIMIT, async {
        let c = connected_client(addr, key).await;
        hello_round_trip(&c, "hello across executors".into()).await;
    }))
    .expect("within the time limit");
    let result = server_thread.join().expect("server thread");
    result.expect("driver ends with Ok once every handle is dropped");
}

#[test]
fn a_handle_whose_driver_is_gone_reports_it() {
    task::block_on(async {
        let (handle, driver) = pierce_async_std::client(localhost(), ClientConfig::default())
            .await
            .expect("bind");
        drop(driver);
        let err = handle.stats().await.expect_err("no driver");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(matches!(
            handle.send_to_server(&b"x"[..]).await,
            Err(HandleError::Stopped(_))
        ));
        assert!(handle.next_event().await.is_none());
    });
}

#[test]
fn core_errors_come_back_through_the_handle() {
    task::block_on(timeout(LIMIT, async {
        let c = spawn_client(localhost(), ClientConfig::default()).await?;
        let r = c.send_to_server(&b"too early"[..]).await;
        assert!(
            matches!(r, Err(HandleError::Core(SendError::NotConnected))),
            "{r:?}"
        );
        io::Result::Ok(())
    }))
    .expect("within the time limit")
    .expect("no io error");
}

#[test]
fn an_unsendable_destination_is_counted_and_does_not_stop_the_driver() {
    task::block_on(timeout(LIMIT, async {
        let c = spawn_client(localhost(), ClientConfig::default()).await?;
        // An IPv4 socket cannot send to an IPv6 address: every hello fails with a hard error.
        c.connect("[::1]:9".parse().expect("literal"), &[])
            .await
            .expect("fresh client");
        while c.driver_stats().send_errors < 2 {
            task::sleep(Duration::from_millis(20)).await;
        }
        assert!(c.stats().await?.hellos_sent >= 2, "the core kept retrying");
        io::Result::Ok(())
    }))
    .expect("within the time limit")
    .expect("no io error");
}

#[test]
fn events_beyond_the_channel_capacity_wait_in_the_core_and_all_arrive() {
    const N: u32 = 1500; // more than the driver's event channel holds
    const BATCH: u32 = 100; // fits a receive buffer, so the kernel drops none
    // No timer may wake the server's driver during the test: only its own retry can move the
    // events left in the core once the application makes room.
    let quiet = Duration::from_secs(14);
    task::block_on(timeout(LIMIT * 3, async {
        let mut server_cfg = server_config();
        server_cfg.keepalive_interval = quiet;
        let server = spawn_server(localhost(), server_cfg).await?;
        let mut cfg = ClientConfig::default();
        (cfg.server_key, cfg.keepalive_interval) = (Some(server.public_key()), quiet);
        let c = spawn_client(localhost(), cfg).await?;
        c.connect(server.local_addr(), &[])
            .await
            .expect("fresh client");
        let Some(ClientEvent::Connected { .. }) = c.next_event().await else {
            panic!("not connected");
        };
        let before = server.stats().await?.io.datagrams_in;
        for batch in 0..N / BATCH {
            for i in batch * BATCH..(batch + 1) * BATCH {
                c.send_to_server(i.to_be_bytes().to_vec())
                    .await
                    .expect("connected");
            }
            let arrived = before + u64::from((batch + 1) * BATCH);
            while server.stats().await?.io.datagrams_in < arrived {
                task::sleep(Duration::from_millis(1)).await;
            }
        }
        // Nobody read the server's events while they arrived. Let the driver go back to sleep
        // after answering the last `stats` (it would move events on its way otherwise), then
        // take them all.
        task::sleep(Duration::from_millis(100)).await;
        let (mut seen, drain) = (BTreeSet::new(), std::time::Instant::now());
        while seen.len() < N as usize {
            match server.next_event().await.expect("driver alive") {
                ServerEvent::Message { payload, .. } => {
                    let i = u32::from_be_bytes(payload[..].try_into().expect("4 bytes"));
                    assert!(seen.insert(i), "message {i} twice");
                }
                ServerEvent::ClientJoined { .. } => {}
                other => panic!("server: unexpected {other:?}"),
            }
        }
        assert!(
            drain.elapsed() < Duration::from_secs(3),
            "{:?}",
            drain.elapsed()
        );
        assert_eq!(server.stats().await?.io.events_dropped, 0);
        io::Result::Ok(())
    }))
    .expect("within the time limit")
    .expect("no io error");
}

#[test]
fn a_burst_of_datagrams_does_not_hold_the_executor() {
    // 200 datagrams wait in the socket before the driver first runs, so every receive is ready
    // at once. On a one-thread executor the other future only runs if the driver yields; it
    // then asks for stats, which must come back before the burst is done.
    const BURST: u64 = 200; // fits a default receive buffer
    async_io::block_on(async {
        let (handle, driver) = server(localhost(), server_config()).await.expect("bind");
        let attacker = std::net::UdpSocket::bind(localhost()).expect("bind attacker");
        for _ in 0..BURST {
            attacker
                .send_to(&[0xff; 16], handle.local_addr())
                .expect("send garbage");
        }
        let other = async move {
            let seen = handle.stats().await.expect("driver alive").io.datagrams_in;
            assert!(seen < BURST, "the driver read all {seen} before yielding");
            // Dropping the last handle ends the driver.
        };
        let (result, ()) = futures_lite::future::zip(driver.run(), other).await;
        result.expect("driver ends with Ok");
    });
}
