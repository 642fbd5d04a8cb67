//! The TCP fallback on real loopback sockets. When to use TCP is the core's decision (tested in
//! `pierce-core` and `pierce-sim`); these tests check the plumbing: a client on a stream and
//! clients on UDP in one room, streams that break, and streams that misbehave.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use async_std::future::timeout;
use async_std::task;
use pierce_async_std::{
    ClientEvent, ClientHandle, HandleError, ServerEvent, ServerHandle, ServerOptions, os_seed,
    spawn_client, spawn_server, spawn_server_with,
};
use pierce_core::{
    Channel, ClientConfig, HostId, PublicKey, RoomsConfig, SecretKey, SendError, ServerConfig,
    SocketId, Transport,
};

const LIMIT: Duration = Duration::from_secs(30);
/// Reliable ordered messages each way between the TCP client and each UDP client.
const MESSAGES: u32 = 200;

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn server_config() -> ServerConfig {
    let mut cfg = ServerConfig::new(SecretKey::from_bytes(os_seed().expect("os entropy")));
    cfg.rooms = Some(RoomsConfig::default());
    cfg
}

/// A client pinned to `key`, connected to `server` over `transport`, with its host id. Peer
/// traffic goes through the server (no hole punching), so a stream carries all of it.
async fn connected_client(
    server: SocketAddr,
    key: PublicKey,
    transport: Transport,
) -> (ClientHandle, HostId) {
    let mut cfg = ClientConfig::default();
    cfg.server_key = Some(key);
    cfg.transport = transport;
    cfg.direct_paths = false;
    let c = spawn_client(localhost(), cfg).await.expect("spawn client");
    c.connect(server, &[]).await.expect("fresh client");
    loop {
        match c.next_event().await.expect("driver alive") {
            ClientEvent::Connected { host_id, .. } => return (c, host_id),
            ClientEvent::ServerTransport { .. } => {}
            other => panic!("expected Connected, got {other:?}"),
        }
    }
}

/// Echoes every message back to its sender, for as long as the server runs.
async fn echo(server: ServerHandle) {
    while let Some(event) = server.next_event().await {
        if let ServerEvent::Message { from, payload } = event {
            // The sender may have left meanwhile: then there is no one to answer.
            let _ = server.send(from, payload).await;
        }
    }
}

/// Sends `text` to the server until it comes back (a stream may be reconnecting meanwhile,
/// and `send_to_server` is unreliable), skipping other events; fails on a disconnect.
async fn round_trip(c: &ClientHandle, text: &str) {
    loop {
        c.send_to_server(text.as_bytes().to_vec())
            .await
            .expect("connected");
        let answer = timeout(Duration::from_millis(300), async {
            loop {
                match c.next_event().await.expect("driver alive") {
                    ClientEvent::Message { payload } => break payload,
                    e @ ClientEvent::Disconnected { .. } => panic!("{e:?}"),
                    _ => {}
                }
            }
        })
        .await;
        if let Ok(payload) = answer {
            if payload == text.as_bytes() {
                return;
            }
        }
    }
}

/// Waits until `done` holds (driver counters move just after the socket effects a test sees).
async fn until(done: impl Fn() -> bool) {
    while !done() {
        task::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `c` has seen `n` members (itself included) in its room.
async fn await_members(c: &ClientHandle, n: usize) {
    let mut members = BTreeSet::new();
    while members.len() < n {
        match c.next_event().await.expect("driver alive") {
            ClientEvent::MemberJoined { member, .. } => {
                members.insert(member);
            }
            ClientEvent::RoomFailed { op, error } => panic!("room {op:?}: {error:?}"),
            _ => {}
        }
    }
}

/// Sends `0..MESSAGES` to each of `to` in turn, reliable and ordered, waiting out full queues.
async fn send_all(c: ClientHandle, to: Vec<HostId>) {
    for i in 0..MESSAGES {
        for &peer in &to {
            loop {
                match c
                    .send(peer, Channel::RELIABLE_ORDERED, i.to_be_bytes().to_vec())
                    .await
                {
                    Ok(_) => break,
                    Err(HandleError::Core(SendError::QueueFull)) => {
                        task::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => panic!("send {i} to {peer:?}: {e}"),
                }
            }
        }
    }
}

/// Collects peer messages until `MESSAGES` came from each of `from`; returns them by sender.
async fn receive_all(c: ClientHandle, from: Vec<HostId>) -> BTreeMap<HostId, Vec<u32>> {
    let mut got: BTreeMap<HostId, Vec<u32>> = from.iter().map(|&h| (h, Vec::new())).collect();
    let want = from.len() * MESSAGES as usize;
    while got.values().map(Vec::len).sum::<usize>() < want {
        match c.next_event().await.expect("driver alive") {
            ClientEvent::PeerMessage {
                from,
                channel,
                payload,
            } => {
                assert_eq!(channel, Channel::RELIABLE_ORDERED);
                let i = u32::from_be_bytes(payload[..].try_into().expect("4 bytes"));
                got.get_mut(&from).expect("a room member").push(i);
            }
            e @ (ClientEvent::Disconnected { .. } | ClientEvent::MessageExpired { .. }) => {
                panic!("{e:?}")
            }
            _ => {}
        }
    }
    got
}

#[test]
fn a_tcp_client_and_two_udp_clients_exchange_reliable_ordered_messages() {
    task::block_on(timeout(LIMIT, async {
        let server = spawn_server(localhost(), server_config()).await?;
        assert_eq!(server.tcp_addr(), Some(server.local_addr()), "same port");
        let (addr, key) = (server.local_addr(), server.public_key());
        let (a, a_id) = connected_client(addr, key, Transport::Tcp).await;
        let (b, b_id) = connected_client(addr, key, Transport::Udp).await;
        let (c, c_id) = connected_client(addr, key, Transport::Auto).await;
        assert!(a.on_tcp().await?);
        assert!(!b.on_tcp().await? && !c.on_tcp().await?);
        let a_socket = server.client_socket(a_id).await?.expect("a has a session");
        assert!(a_socket.is_stream(), "{a_socket:?}");
        assert_eq!(server.client_socket(b_id).await?, Some(SocketId::PRIMARY));
        assert_eq!(server.client_socket(c_id).await?, Some(SocketId::PRIMARY));

        a.join_room("tcp", "", true, 0).await.expect("connected");
        loop {
            match a.next_event().await.expect("driver alive") {
                ClientEvent::RoomJoined { .. } => break,
                ClientEvent::RoomFailed { op, error } => panic!("room {op:?}: {error:?}"),
                _ => {}
            }
        }
        b.join_room("tcp", "", false, 0).await.expect("connected");
        c.join_room("tcp", "", false, 0).await.expect("connected");
        for h in [&a, &b, &c] {
            await_members(h, 3).await;
        }

        let started = std::time::Instant::now();
        let receivers = [
            task::spawn(receive_all(a.clone(), vec![b_id, c_id])),
            task::spawn(receive_all(b.clone(), vec![a_id])),
            task::spawn(receive_all(c.clone(), vec![a_id])),
        ];
        let senders = [
            task::spawn(send_all(a.clone(), vec![b_id, c_id])),
            task::spawn(send_all(b.clone(), vec![a_id])),
            task::spawn(send_all(c.clone(), vec![a_id])),
        ];
        for s in senders {
            s.await;
        }
        let expected: Vec<u32> = (0..MESSAGES).collect();
        for r in receivers {
            for (from, got) in r.await {
                assert_eq!(got, expected, "from {from:?}: each exactly once, in order");
            }
        }

        // The session stayed on the one stream throughout.
        assert!(a.on_tcp().await?);
        assert_eq!(server.client_socket(a_id).await?, Some(a_socket));
        let (ad, sd) = (a.driver_stats(), server.driver_stats());
        assert_eq!((ad.streams_connected, ad.streams_closed), (1, 0), "{ad:?}");
        assert_eq!((sd.streams_accepted, sd.streams_closed), (1, 0), "{sd:?}");
        assert_eq!(ad.stream_datagrams_dropped + sd.stream_datagrams_dropped, 0);
        assert_eq!(b.driver_stats().streams_connected, 0, "UDP only");
        let st = a.stats().await?;
        assert!(
            st.relayed_out >= u64::from(2 * MESSAGES) && st.relayed_in >= u64::from(2 * MESSAGES)
        );
        assert_eq!(st.direct_paths, 0);
        println!(
            "TCP + 2 UDP clients: {MESSAGES} messages each way; the TCP client relayed {} out, \
             {} in, in {:?}",
            st.relayed_out,
            st.relayed_in,
            started.elapsed()
        );
        io::Result::Ok(())
    }))
    .expect("within the time limit")
    .expect("no io error");
}

/// A TCP forwarder between a client and the server that the test can cut, as a middlebox
/// resetting connections would.
struct Proxy {
    addr: SocketAddr,
    /// Both sockets of every connection so far.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn new(to: SocketAddr) -> Self {
        Self::on(TcpListener::bind(localhost()).expect("bind proxy"), to)
    }

    /// A proxy accepting on `listener`.
    fn on(listener: TcpListener, to: SocketAddr) -> Self {
        let addr = listener.local_addr().expect("proxy address");
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let list = Arc::clone(&sockets);
        // Runs until the test process ends.
        thread::spawn(move || {
            for inbound in listener.incoming() {
                let (Ok(inbound), Ok(outbound)) = (inbound, TcpStream::connect(to)) else {
                    continue;
                };
                let (Ok(i2), Ok(o2), Ok(i3), Ok(o3)) = (
                    inbound.try_clone(),
                    outbound.try_clone(),
                    inbound.try_clone(),
                    outbound.try_clone(),
                ) else {
                    continue;
                };
                list.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend([i3, o3]);
                pipe(inbound, outbound);
                pipe(o2, i2);
            }
        });
        Self { addr, sockets }
    }

    /// Ends every connection so far: both ends see the stream close.
    fn cut(&self) {
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        for s in sockets.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = from.set_nodelay(true);
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
    });
}

#[test]
fn a_cut_stream_is_reported_to_both_cores_and_replaced_without_losing_the_session() {
    task::block_on(timeout(LIMIT, async {
        let server = spawn_server(localhost(), server_config()).await?;
        task::spawn(echo(server.clone()));
        // The client knows the proxy as its server; with Transport::Tcp nothing goes by UDP.
        let proxy = Proxy::new(server.local_addr());
        let (c, id) = connected_client(proxy.addr, server.public_key(), Transport::Tcp).await;
        round_trip(&c, "before").await;
        let first = server.client_socket(id).await?.expect("session");
        assert!(first.is_stream());

        proxy.cut();
        until(|| {
            c.driver_stats().streams_connected >= 2 && server.driver_stats().streams_closed >= 1
        })
        .await;
        round_trip(&c, "after").await;
        let second = server.client_socket(id).await?.expect("the same session");
        assert!(
            second.is_stream() && second != first,
            "{first:?} -> {second:?}"
        );
        let (cd, sd) = (c.driver_stats(), server.driver_stats());
        assert_eq!((cd.streams_connected, cd.streams_closed), (2, 1), "{cd:?}");
        assert_eq!((sd.streams_accepted, sd.streams_closed), (2, 1), "{sd:?}");
        assert_eq!(sd.stream_frames_too_long, 0);
        assert!(c.on_tcp().await?);
        io::Result::Ok(())
    }))
    .expect("within the time limit")
    .expect("no io error");
}

/// Reads until the server closes `s`: true if it did (EOF or reset) within 5 s.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set timeout");
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timed out
        }
    }
}

#[test]
fn an_oversize_frame_closes_its_stream_and_nothing_else() {
    task::block_on(timeout(LIMIT, async {
        let server = spawn_server(localhost(), server_config()).await?;
        task::spawn(echo(server.clone()));
        let (addr, key) = (server.local_addr(), server.public_key());
        let (tcp, tcp_id) = connected_client(addr, key, Transport::Tcp).await;
        let (udp, _) = connected_client(addr, key, Transport::Udp).await;
        round_trip(&tcp, "tcp before").await;

        let tcp_addr = server.tcp_addr().expect("listening");
        let (_raw, closed) = task::spawn_blocking(move || {
            let mut raw = TcpStream::connect(tcp_addr).expect("connect");
            // One good empty frame, then a length over MAX_STREAM_FRAME.
            raw.write_all(&[0, 0, 0xff, 0xff, 1, 2, 3]).expect("write");
            let closed = closed_by_server(&mut raw);
            (raw, closed)
        })
        .await;
        assert!(closed, "the server closed the stream");
        until(|| server.driver_stats().streams_closed >= 1).await;
        let sd = server.driver_stats();
        assert_eq!(sd.stream_frames_too_long, 1, "{sd:?}");
        assert_eq!((sd.streams_accepted, sd.streams_closed), (2, 1), "{sd:?}");

        round_trip(&tcp, "tcp after").await;
        round_trip(&udp, "udp after").await;
        assert!(
            server
                .client_socket(tcp_id)
                .await?
                .is_some_and(SocketId::is_stream)
        );
        assert_eq!(tcp.driver_stats().streams_closed, 0);
        io::Result::Ok(())
    }))
    .expect("within the time limit")
    .expect("no io error");
}

#[test]
fn connections_over_the_stream_cap_are_closed_at_once() {
    task::block_on(timeout(LIMIT, async {
        let mut options = ServerOptions::default();
        options.max_streams = 1;
        let server = spawn_server_with(localhost(), server_config(), options).await?;
        let tcp_addr = server.tcp_addr().expect("listening");
        let first = TcpStream::connect(tcp_addr)?;
        until(|| server.driver_stats().streams_accepted >= 1).await;
        let closed = task::spawn_blocking(move || {
            let mut second = TcpStream::connect(tcp_addr).expect("connect");
            closed_by_server(&mut second)
        })
        .await;
        assert!(closed, "over the cap");
        until(|| server.driver_stats().streams_refused >= 1).await;
        let sd = server.driver_stats();
        assert_eq!((sd.streams_accepted, sd.streams_refused), (1, 1), "{sd:?}");
        drop(first);
        until(|| server.driver_stats().streams_closed >= 1).await;
        io::Result::Ok(())
    }))
    .expect("within the time limit")
    .expect("no io error");
}

#[test]
fn a_server_without_tcp_does_not_listen() {
    task::block_on(async {
        let mut options = ServerOptions::default();
        options.tcp = false;
        let server = spawn_server_with(localhost(), server_config(), options)
            .await
            .expect("bind");
        assert_eq!(server.tcp_addr(), None);
        let refused = TcpStream::connect(server.local_addr());
        assert!(refused.is_err(), "nothing listens on the UDP port");
    });
}

/// A TCP listener and a UDP socket on the same loopback port.
fn twin_ports() -> (TcpListener, UdpSocket) {
    for _ in 0..16 {
        let listener = TcpListener::bind(localhost()).expect("bind");
        if let Ok(udp) = UdpSocket::bind(listener.local_addr().expect("address")) {
            return (listener, udp);
        }
    }
    panic!("no port free for both TCP and UDP");
}

/// Forwards UDP between clients reaching `front` and the server at `to` while the returned
/// flag is false; drops everything both ways while it is true (a firewall blocking UDP).
/// One client at a time. Runs until the test process ends.
fn udp_gate(front: UdpSocket, to: SocketAddr) -> Arc<AtomicBool> {
    let blocked = Arc::new(AtomicBool::new(true));
    let back = UdpSocket::bind(localhost()).expect("bind");
    let client = Arc::new(Mutex::new(None));
    let (front2, back2) = (
        front.try_clone().expect("clone"),
        back.try_clone().expect("clone"),
    );
    let (blocked2, client2) = (Arc::clone(&blocked), Arc::clone(&client));
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            *client2.lock().unwrap_or_else(PoisonError::into_inner) = Some(from);
            if !blocked2.load(Ordering::Relaxed) {
                let _ = back.send_to(&buf[..n], to);
            }
        }
    });
    let blocked3 = Arc::clone(&blocked);
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = back2.recv_from(&mut buf) {
            let client = *client.lock().unwrap_or_else(PoisonError::into_inner);
            if let (Some(client), false) = (client, blocked3.load(Ordering::Relaxed)) {
                let _ = front2.send_to(&buf[..n], client);
            }
        }
    });
    blocked
}

#[test]
fn with_udp_blocked_an_auto_client_falls_back_to_tcp_and_returns_to_udp() {
    task::block_on(timeout(LIMIT, async {
        let server = spawn_server(localhost(), server_config()).await?;
        task::spawn(echo(server.clone()));
        // The client's "server": UDP through a gate that starts closed, TCP through a proxy,
        // both on one port as on a real server.
        let (listener, front) = twin_ports();
        let proxy = Proxy::on(listener, server.tcp_addr().expect("listening"));
        let blocked = udp_gate(front, server.local_addr());
        let started = std::time::Instant::now();
        let (c, id) = connected_client(proxy.addr, server.public_key(), Transport::Auto).await;
        let fallback = started.elapsed();
        assert!(
            fallback >= Duration::from_secs(2),
            "UDP first: {fallback:?}"
        );
        assert!(c.on_tcp().await?);
        assert!(
            server
                .client_socket(id)
                .await?
                .is_some_and(SocketId::is_stream)
        );
        round_trip(&c, "over tcp").await;

        blocked.store(false, Ordering::Relaxed);
        let unblocked = std::time::Instant::now();
        loop {
            match c.next_event().await.expect("driver alive") {
                ClientEvent::ServerTransport { tcp: false } => break,
                e @ ClientEvent::Disconnected { .. } => panic!("{e:?}"),
                _ => {}
            }
        }
        let back = unblocked.elapsed();
        round_trip(&c, "over udp").await;
        assert_eq!(server.client_socket(id).await?, Some(SocketId::PRIMARY));
        // The client closes its stream after a grace period; the server hears it end.
        until(|| server.driver_stats().streams_closed >= 1).await;
        assert!(!c.on_tcp().await?);
        let (cd, sd) = (c.driver_stats(), server.driver_stats());
        assert_eq!((cd.streams_connected, cd.streams_closed), (1, 0), "{cd:?}");
        assert_eq!(cd.stream_bytes_unflushed, 0);
        assert_eq!((sd.streams_accepted, sd.streams_closed), (1, 1), "{sd:?}");
        println!("UDP blocked: on TCP after {fallback:?}; back on UDP {back:?} after the unblock");
        io::Result::Ok(())
    }))
    .expect("within the time limit")
    .expect("no io error");
}
