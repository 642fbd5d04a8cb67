//! The adapter on real loopback sockets. Protocol behaviour is tested in `pierce-sim`; these
//! tests check the plumbing: bytes both ways, wakeups, the work budget, error handling.

use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pierce_core::nat::Dependence;
use pierce_core::{
    Client, ClientConfig, ClientEvent, SecretKey, Server, ServerConfig, ServerEvent, SocketId,
};
use pierce_mio::{Driver, local_addresses, os_seed, unix_time};

const LIMIT: Duration = Duration::from_secs(10);

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn server() -> Driver<Server> {
    let cfg = ServerConfig::new(SecretKey::from_bytes(os_seed().expect("os entropy")));
    let server = Server::new(
        Arc::new(cfg),
        os_seed().expect("os entropy"),
        Instant::now(),
        unix_time(),
    )
    .expect("default config is valid");
    Driver::bind(localhost(), server).expect("bind server")
}

fn client(server: &Driver<Server>) -> Driver<Client> {
    let mut cfg = ClientConfig::default();
    cfg.server_key = Some(server.endpoint().public_key());
    let mut c = Client::new(
        Arc::new(cfg),
        os_seed().expect("os entropy"),
        Instant::now(),
    )
    .expect("default config is valid");
    c.connect(Instant::now(), server.local_addr(), &[])
        .expect("fresh client");
    Driver::bind(localhost(), c).expect("bind client")
}

/// Drains the server: echoes every message back to its sender.
fn echo(server: &mut Driver<Server>) {
    while let Some(e) = server.poll_event() {
        if let ServerEvent::Message { from, payload } = e {
            let s = server.endpoint_mut();
            s.send(Instant::now(), from, &payload)
                .expect("sender is connected");
        }
    }
}

#[test]
fn server_and_two_clients_exchange_datagrams_in_one_thread() {
    let mut server = server();
    let mut clients = [client(&server), client(&server)];
    let (mut connected, mut echoed) = ([false; 2], [false; 2]);
    let start = Instant::now();
    while echoed != [true; 2] {
        assert!(
            start.elapsed() < LIMIT,
            "connected {connected:?} echoed {echoed:?}"
        );
        server.pump(Duration::from_millis(5)).expect("server pump");
        echo(&mut server);
        for (i, c) in clients.iter_mut().enumerate() {
            c.pump(Duration::from_millis(5)).expect("client pump");
            while let Some(e) = c.poll_event() {
                match e {
                    ClientEvent::Connected { public_addr, .. } => {
                        assert_eq!(public_addr, c.local_addr(), "loopback has no NAT");
                        connected[i] = true;
                        let hello = format!("hello from {i}");
                        let now = Instant::now();
                        c.endpoint_mut()
                            .send_to_server(now, hello.as_bytes())
                            .expect("connected");
                    }
                    ClientEvent::Message { payload } => {
                        assert_eq!(&payload[..], format!("hello from {i}").as_bytes());
                        echoed[i] = true;
                    }
                    // Connected clients discover their NAT by themselves (nat_discovery).
                    ClientEvent::NatDiscovered { .. } => {}
                    other => panic!("client {i}: unexpected {other:?}"),
                }
            }
        }
    }
    assert_eq!(server.endpoint().stats().clients, 2);
    assert!(
        server.stats().datagrams_received >= 4,
        "{:?}",
        server.stats()
    );
    assert_eq!(server.stats().send_errors, 0);
}

#[test]
fn run_serves_until_the_callback_breaks() {
    let mut server = server();
    let mut c = client(&server);
    let thread = std::thread::spawn(move || {
        let mut echoed = 0;
        server
            .run(|s, e| {
                if let ServerEvent::Message { from, payload } = e {
                    s.send(Instant::now(), from, &payload)
                        .expect("sender is connected");
                    echoed += 1;
                }
                // The echo is queued here; `run` must send it before returning.
                if echoed == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .expect("run");
        server
    });
    let (start, mut sent, mut got) = (Instant::now(), 0, 0);
    while got < 3 {
        assert!(start.elapsed() < LIMIT, "sent {sent} got {got}");
        c.pump(Duration::from_millis(20)).expect("client pump");
        while let Some(e) = c.poll_event() {
            if let ClientEvent::Message { .. } = e {
                got += 1;
            }
        }
        if c.endpoint().is_connected() && sent < 3 {
            c.endpoint_mut()
                .send_to_server(Instant::now(), &[sent])
                .expect("connected");
            sent += 1;
        }
    }
    let server = thread.join().expect("server thread");
    assert_eq!(server.endpoint().stats().clients, 1);
}

#[test]
fn pump_zero_returns_promptly_without_traffic() {
    let mut server = server();
    let start = Instant::now();
    for _ in 0..100 {
        server.pump(Duration::ZERO).expect("pump");
    }
    // 100 non-blocking polls take microseconds; a pump that waited would take >= 100 x 1 ms.
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.stats().last_pump_received, 0);
}

#[test]
fn a_flood_is_read_over_several_pumps_within_the_budget() {
    const FLOOD: usize = 10_000;
    // Bursts stay below what a default receive buffer holds of small datagrams (~256 on
    // Linux), so none are lost in the kernel and every one must reach the core. A budget
    // smaller than a burst makes each burst take several pumps.
    const BURST: usize = 100;
    const BUDGET: usize = 32;
    let mut server = server();
    server.set_recv_budget(BUDGET);
    let attacker = UdpSocket::bind(localhost()).expect("bind attacker");
    let garbage = [0xffu8; 16]; // first byte names no Pierce or STUN message
    let (mut pumps, mut at_budget) = (0, 0);
    let start = Instant::now();
    for _ in 0..FLOOD / BURST {
        for _ in 0..BURST {
            attacker
                .send_to(&garbage, server.local_addr())
                .expect("send garbage");
        }
        let target = server.endpoint().stats().io.datagrams_in + BURST as u64;
        while server.endpoint().stats().io.datagrams_in < target {
            assert!(
                start.elapsed() < LIMIT,
                "stuck at {:?}",
                server.endpoint().stats()
            );
            server.pump(Duration::from_millis(1)).expect("pump");
            pumps += 1;
            let n = server.stats().last_pump_received;
            assert!(n <= BUDGET, "one pump read {n} datagrams");
            at_budget += usize::from(n == BUDGET);
        }
    }
    let core = server.endpoint().stats();
    assert_eq!(core.io.datagrams_in, FLOOD as u64);
    assert_eq!(
        core.dropped.total(),
        FLOOD as u64,
        "garbage is dropped and counted"
    );
    assert_eq!(core.io.datagrams_out, 0, "garbage gets no answer");
    assert_eq!(server.stats().datagrams_received, FLOOD as u64);
    assert!(pumps >= FLOOD / BUDGET, "{pumps} pumps");
    assert!(
        at_budget >= FLOOD / BUDGET - FLOOD / BURST,
        "{at_budget} pumps hit the budget"
    );
    assert!(server.stats().budget_exhausted > 0);
}

#[test]
fn an_unsendable_destination_is_counted_and_does_not_stop_the_driver() {
    // An IPv4 socket cannot send to an IPv6 address: the hello to it fails with a hard error.
    let cfg = Arc::new(ClientConfig::default());
    let mut c = Client::new(cfg, os_seed().expect("os entropy"), Instant::now()).expect("config");
    c.connect(Instant::now(), "[::1]:9".parse().expect("literal"), &[])
        .expect("fresh");
    let mut d = Driver::bind(localhost(), c).expect("bind");
    let start = Instant::now();
    while d.stats().send_errors < 2 {
        assert!(start.elapsed() < LIMIT, "{:?}", d.stats());
        d.pump(Duration::from_millis(50))
            .expect("a send error is not a pump error");
    }
    assert_eq!(d.stats().datagrams_sent, 0);
    assert!(
        d.endpoint().stats().hellos_sent >= 2,
        "the core kept retrying"
    );
}

#[test]
fn a_discovery_server_answers_nat_discovery_from_its_alternate_sockets() {
    // 127.0.0.2 is loopback too on Linux (all of 127/8), with no setup.
    let mut server = server();
    let primary = server.local_addr();
    let alternate = SocketAddr::from(([127, 0, 0, 2], 0));
    server
        .endpoint_mut()
        .enable_nat_discovery(primary, alternate)
        .expect("valid addresses");
    server.pump(Duration::ZERO).expect("server pump");
    // The alternate, then its crossings with the primary (IP1:P2, IP2:P1), all bound at once.
    assert_eq!(server.socket_count(), 4, "{:?}", server.last_open_error());
    let alt = server.socket_addr(SocketId(1)).expect("alternate bound");
    assert_eq!(alt.ip(), alternate.ip());
    assert_ne!(alt.port(), 0);
    assert_eq!(server.endpoint().socket_addr(SocketId(1)), Some(alt));
    let crossings = [SocketId(2), SocketId(3)].map(|id| server.socket_addr(id));
    assert_eq!(
        crossings,
        [
            Some(SocketAddr::new(primary.ip(), alt.port())),
            Some(SocketAddr::new(alt.ip(), primary.port())),
        ]
    );

    let cfg = Arc::new(ClientConfig::default());
    let c = Client::new(cfg, os_seed().expect("os entropy"), Instant::now()).expect("config");
    let mut c = Driver::bind(localhost(), c).expect("bind client");
    c.endpoint_mut().discover_nat(Instant::now(), primary);
    let start = Instant::now();
    let found = 'run: loop {
        assert!(
            start.elapsed() < LIMIT,
            "no result: {:?}",
            server.endpoint().stats()
        );
        server.pump(Duration::from_millis(2)).expect("server pump");
        c.pump(Duration::from_millis(2)).expect("client pump");
        while let Some(e) = c.poll_event() {
            if let ClientEvent::NatDiscovered { server: s, result } = e {
                assert_eq!(s, primary);
                break 'run result.expect("discovery answered");
            }
        }
    };
    // Loopback has no NAT: the same mapping for every server address, and answers from
    // another IP and port get through.
    assert_eq!(found.reflexive, c.local_addr());
    assert_eq!(found.mapping, Some(Dependence::EndpointIndependent));
    assert_eq!(found.filtering, Some(Dependence::EndpointIndependent));
    assert_eq!(found.alternate, Some(alt));
    assert_eq!(
        found.allocation, None,
        "only measured for endpoint-dependent mapping"
    );
    assert!(
        server.endpoint().stats().stun_answered >= 3,
        "{:?}",
        server.endpoint().stats()
    );
    assert_eq!(server.stats().unknown_socket_drops, 0);
    assert_eq!(server.stats().socket_open_failures, 0);
}

#[test]
fn opening_the_primary_socket_or_a_taken_address_fails_cleanly() {
    let taken = UdpSocket::bind(localhost()).expect("bind");
    let mut server = server();
    let primary = server.local_addr();
    server
        .endpoint_mut()
        .enable_nat_discovery(primary, taken.local_addr().expect("addr"))
        .expect("valid addresses");
    server
        .pump(Duration::ZERO)
        .expect("a failed open is not a pump error");
    assert_eq!(server.socket_count(), 1);
    assert_eq!(server.stats().socket_open_failures, 1);
    let (id, e) = server.last_open_error().expect("the failure is kept");
    assert_eq!(id, SocketId(1));
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(server.endpoint().socket_addr(SocketId(1)), None);
}

#[test]
fn local_addresses_are_bindable_and_never_loopback() {
    let addrs = local_addresses(4242).expect("interface list");
    for a in &addrs {
        assert_eq!(a.port(), 4242);
        assert!(!a.ip().is_loopback() && !a.ip().is_unspecified(), "{a}");
        if a.is_ipv4() {
            // Only an address of this host can be bound.
            UdpSocket::bind(SocketAddr::new(a.ip(), 0)).expect("a local address binds");
        }
    }
}

#[test]
fn os_seeds_differ_and_wall_clock_is_past_2020() {
    let (a, b) = (os_seed().expect("entropy"), os_seed().expect("entropy"));
    assert_ne!(a, b);
    assert!(unix_time() > Duration::from_secs(1_577_836_800));
}
