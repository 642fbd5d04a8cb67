//! Host mode and server-managed groups on async-std, over real loopback sockets: a host (a
//! server and its own player on one socket, one driver) and two remote players; the server
//! handle builds, changes and destroys their group; reliable messages flow between every
//! ordered pair, directly; the host's driver lives until both halves' handles are gone.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_std::future::timeout;
use async_std::task;
use pierce_async_std::{
    ClientEvent, ClientHandle, ServerEvent, ServerHandle, ServerOptions, host, os_seed,
    spawn_client, spawn_host,
};
use pierce_core::{
    Channel, ClientConfig, GroupError, HostId, MemberLeftReason, Path, SecretKey, ServerConfig,
};

const LIMIT: Duration = Duration::from_secs(20);
const MESSAGES: u32 = 50;

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn server_config() -> ServerConfig {
    ServerConfig::new(SecretKey::from_bytes(os_seed().expect("os entropy")))
}

/// Every event a handle reported, gathered by a task of its own.
struct Log<E>(Arc<Mutex<Vec<E>>>);

impl<E: Send + 'static> Log<E> {
    /// Gathers what `next` yields until it yields `None` (the driver stopped).
    fn gather<F: Future<Output = Option<E>> + Send>(
        mut next: impl FnMut() -> F + Send + 'static,
    ) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&events);
        task::spawn(async move {
            while let Some(e) = next().await {
                log.lock().expect("not poisoned").push(e);
            }
        });
        Self(events)
    }

    /// Runs `f` on the events so far.
    fn with<T>(&self, f: impl FnOnce(&[E]) -> T) -> T {
        f(&self.0.lock().expect("not poisoned"))
    }

    /// Waits until `f` holds of the events so far.
    async fn until(&self, what: &str, f: impl Fn(&[E]) -> bool) {
        for _ in 0..2000 {
            if self.with(&f) {
                return;
            }
            task::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

fn client_log(c: &ClientHandle) -> Log<ClientEvent> {
    let c = c.clone();
    Log::gather(move || {
        let c = c.clone();
        async move { c.next_event().await }
    })
}

fn server_log(s: &ServerHandle) -> Log<ServerEvent> {
    let s = s.clone();
    Log::gather(move || {
        let s = s.clone();
        async move { s.next_event().await }
    })
}

/// The payloads `from` sent this client, in arrival order.
fn received(events: &[ClientEvent], from: HostId) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::PeerMessage {
                from: f, payload, ..
            } if *f == from => Some(u32::from_be_bytes(payload[..4].try_into().ok()?)),
            _ => None,
        })
        .collect()
}

async fn host_id(c: &ClientHandle) -> HostId {
    c.with(|c, _| c.host_id())
        .await
        .expect("driver alive")
        .expect("connected")
}

async fn direct(c: &ClientHandle, peer: HostId) -> Option<SocketAddr> {
    let stats = c.peer_stats(peer).await.expect("driver alive")?;
    match stats.path {
        Path::Direct(addr) => Some(addr),
        _ => None,
    }
}

#[test]
fn a_host_and_two_players_form_a_group_and_exchange_reliable_messages_directly() {
    task::block_on(timeout(LIMIT, async {
        let (server, me) = spawn_host(
            localhost(),
            server_config(),
            ClientConfig::default(),
            &[],
            ServerOptions::default(),
        )
        .await?;
        let (server_events, my_events) = (server_log(&server), client_log(&me));
        let mut players = Vec::new();
        for _ in 0..2 {
            let mut cfg = ClientConfig::default();
            cfg.server_key = Some(server.public_key());
            let p = spawn_client(localhost(), cfg).await?;
            p.connect(server.local_addr(), &[])
                .await
                .expect("fresh client");
            players.push(p);
        }
        let logs = [my_events, client_log(&players[0]), client_log(&players[1])];
        // The host's own player joined its server in memory, the two others over loopback.
        server_events
            .until("three clients", |e| {
                e.iter()
                    .filter(|e| matches!(e, ServerEvent::ClientJoined { .. }))
                    .count()
                    == 3
            })
            .await;
        let handles = [&me, &players[0], &players[1]];
        let mut ids = Vec::new();
        for h in handles {
            ids.push(host_id(h).await);
        }
        let mut clients = server.clients().await?;
        clients.sort_unstable();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(clients, sorted);

        // The server handle forms the group; every join is acknowledged by every member.
        let group = server.create_group(&ids).await.expect("all connected");
        assert_eq!(server.group_members(group).await?, Some(ids.clone()));
        server_events
            .until("every join acknowledged", |e| {
                ids.iter()
                    .all(|m| e.contains(&ServerEvent::GroupJoinAckComplete { group, member: *m }))
            })
            .await;
        assert!(matches!(
            server.join_group(group, ids[1]).await,
            Err(pierce_async_std::HandleError::Core(
                GroupError::AlreadyMember
            ))
        ));

        // Reliable ordered messages from each to each; the host's player sends through the
        // same handle type as the others.
        for n in 0..MESSAGES {
            for (i, h) in handles.iter().enumerate() {
                for (j, to) in ids.iter().enumerate() {
                    if i != j {
                        h.send(*to, Channel::RELIABLE_ORDERED, n.to_be_bytes().to_vec())
                            .await
                            .expect("a member");
                    }
                }
            }
        }
        let expected: Vec<u32> = (0..MESSAGES).collect();
        for (i, log) in logs.iter().enumerate() {
            for (j, from) in ids.iter().enumerate() {
                if i != j {
                    log.until("every message", |e| {
                        received(e, *from).len() >= expected.len()
                    })
                    .await;
                    assert_eq!(
                        log.with(|e| received(e, *from)),
                        expected,
                        "{j} -> {i}: once, in order"
                    );
                }
            }
        }
        // Every pair is direct; the players reach the host's player at the host's socket.
        for (i, h) in handles.iter().enumerate() {
            for (j, peer) in ids.iter().enumerate() {
                if i == j {
                    continue;
                }
                let mut path = direct(h, *peer).await;
                for _ in 0..400 {
                    if path.is_some() {
                        break;
                    }
                    task::sleep(Duration::from_millis(5)).await;
                    path = direct(h, *peer).await;
                }
                let path = path.unwrap_or_else(|| panic!("{i} -> {j} is not direct"));
                if j == 0 {
                    assert_eq!(path, server.local_addr());
                }
            }
        }

        for log in &logs {
            let expired = log.with(|e| {
                e.iter()
                    .any(|e| matches!(e, ClientEvent::MessageExpired { .. }))
            });
            assert!(
                !expired,
                "nothing sent reliably expired while the pairs lived"
            );
        }

        // The server handle takes a player out, then destroys the group.
        server.leave_group(group, ids[2]).await.expect("a member");
        for log in &logs[..2] {
            log.until("the leave", |e| {
                e.contains(&ClientEvent::MemberLeft {
                    group,
                    member: ids[2],
                    reason: MemberLeftReason::Left,
                })
            })
            .await;
        }
        assert_eq!(server.group_members(group).await?, Some(ids[..2].to_vec()));
        server.destroy_group(group).await.expect("exists");
        logs[0]
            .until("the destruction", |e| {
                e.contains(&ClientEvent::GroupDestroyed { group })
            })
            .await;
        assert_eq!(server.group_members(group).await?, None);
        assert!(matches!(
            server.destroy_group(group).await,
            Err(pierce_async_std::HandleError::Core(
                GroupError::UnknownGroup
            ))
        ));
        // Nothing went the wrong way or missing on the host's socket.
        let stats = server.with(|s, _| s.stats()).await?;
        assert_eq!(stats.dropped.total(), 0, "{stats:?}");
        assert_eq!(server.driver_stats().send_errors, 0);
        io::Result::Ok(())
    }))
    .expect("in time")
    .expect("no io error");
}

#[test]
fn a_host_driver_runs_until_both_halves_are_dropped() {
    async_io::block_on(async {
        let (server, me, driver) = host(
            localhost(),
            server_config(),
            ClientConfig::default(),
            &[],
            ServerOptions::default(),
        )
        .await
        .expect("bind");
        let running = task::spawn(driver.run());
        drop(server);
        // The client half still drives the host: its player is connected (in memory).
        assert!(
            me.with(|c, _| c.is_connected())
                .await
                .expect("driver alive")
        );
        assert!(matches!(
            me.next_event().await,
            Some(ClientEvent::Connected { .. })
        ));
        drop(me);
        timeout(LIMIT, running)
            .await
            .expect("stops once every handle is gone")
            .expect("no socket error");
    });
}

#[test]
fn a_host_must_be_bound_where_players_reach_it() {
    async_io::block_on(async {
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        let err = host(
            any,
            server_config(),
            ClientConfig::default(),
            &[],
            ServerOptions::default(),
        )
        .await
        .err()
        .expect("a wildcard address is refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    });
}
