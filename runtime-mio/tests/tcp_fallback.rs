//! The TCP fallback on real sockets: the driver's streams (connect, accept, framing, close)
//! under a real `Server` and real `Client`s.
//!
//! - Plumbing, on loopback: a server driver answers a ClientHello sent down a raw TCP stream;
//!   a stream that breaks the framing is closed; the stream cap refuses connections.
//! - On loopback, no root: a client with `Transport::Tcp` and two UDP clients in one group;
//!   every relayed message reaches the TCP client down its stream, and back, exactly once and
//!   in order.
//! - In the NAT lab (`nat_lab/lab.rs`: network namespaces and nftables, as root): a client
//!   with `Transport::Auto` whose UDP to the server is dropped falls back to TCP, exchanges
//!   messages with a UDP peer through the relay, and moves back to UDP once the rule is gone,
//!   without losing or repeating a message. Prints one `LAB ...` line per side. Without root,
//!   `ip` or `nft` it prints `SKIPPED tcp_fallback lab: <reason>` and passes, except under
//!   `CI`, where it fails.
//!
//! Each driver runs on a thread of its own ([`Remote`]), pumped every millisecond; the test
//! reaches it with closures. In the lab that thread first enters the driver's network
//! namespace, so every socket the driver opens (its TCP streams too) lives there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pierce_core::framing::MAX_STREAM_FRAME;
use pierce_core::wire::VERSION;
use pierce_core::wire::handshake::{
    KIND_CLIENT_HELLO, KIND_SERVER_HELLO, MIN_CLIENT_HELLO_LEN, SERVER_HELLO_LEN,
};
use pierce_core::{
    Channel, Client, ClientConfig, ClientEvent, Endpoint, Events, HostId, Path, PublicKey,
    SecretKey, Server, ServerConfig, SocketId, Transport,
};
use pierce_mio::{Driver, DriverStats, os_seed, unix_time};

const LIMIT: Duration = Duration::from_secs(10);
/// Messages each sender sends each receiver on loopback.
const MESSAGES: u32 = 200;

// ---- the harness ----------------------------------------------------------------------------

type Job<E> = Box<dyn FnOnce(&mut Driver<E>, &mut Vec<<E as Events>::Event>) + Send>;

/// A driver on a thread of its own, pumped every millisecond; its events pile up in a list
/// that jobs ([`Remote::with`]) read. Dropping it stops the thread.
struct Remote<E: Endpoint + Events> {
    jobs: Option<mpsc::Sender<Job<E>>>,
    thread: Option<JoinHandle<()>>,
}

impl<E: Endpoint + Events + 'static> Remote<E> {
    /// Runs the driver `make` builds on a new thread, inside network namespace `ns` if given.
    fn spawn(ns: Option<String>, make: impl FnOnce() -> Driver<E> + Send + 'static) -> Self {
        let (jobs, rx) = mpsc::channel::<Job<E>>();
        let thread = thread::spawn(move || {
            if let Some(ns) = ns {
                enter_netns(&ns);
            }
            let mut driver = make();
            let mut events = Vec::new();
            loop {
                driver.pump(Duration::from_millis(1)).expect("pump");
                while let Some(e) = driver.poll_event() {
                    events.push(e);
                }
                loop {
                    match rx.try_recv() {
                        Ok(job) => job(&mut driver, &mut events),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
            }
        });
        Self {
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    /// Runs `f` on the driver's thread, between two pumps; its result.
    fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Driver<E>, &mut Vec<E::Event>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job<E> = Box::new(move |d, e| {
            let _ = tx.send(f(d, e));
        });
        self.jobs
            .as_ref()
            .expect("running")
            .send(job)
            .expect("the driver thread died (see its panic above)");
        rx.recv()
            .expect("the driver thread died (see its panic above)")
    }

    fn stats(&self) -> DriverStats {
        self.with(|d, _| d.stats())
    }
}

impl<E: Endpoint + Events> Drop for Remote<E> {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves this thread into network namespace `ns` (`ip netns add` made it): sockets it opens
/// from now on live there.
#[cfg(target_os = "linux")]
fn enter_netns(ns: &str) {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid descriptor of a network namespace only changes the namespace
    // of the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {ns}: {}",
        std::io::Error::last_os_error()
    );
}

#[cfg(not(target_os = "linux"))]
fn enter_netns(ns: &str) {
    panic!("network namespaces ({ns}) exist only on Linux");
}

/// Polls `check` every 5 ms until it gives a value; panics with `what` after `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A server driver bound at `addr`, accepting TCP at the same address.
fn server(ns: Option<String>, addr: SocketAddr) -> (Remote<Server>, SocketAddr, PublicKey) {
    let remote = Remote::spawn(ns, move || {
        // Port 0 may give a UDP port whose TCP twin is taken (connections of earlier tests in
        // TIME_WAIT): then another port, as `pierce_async_std::server` does.
        for _ in 0..10 {
            let cfg = ServerConfig::new(SecretKey::from_bytes(os_seed().expect("os entropy")));
            let server = Server::new(
                Arc::new(cfg),
                os_seed().expect("os entropy"),
                Instant::now(),
                unix_time(),
            )
            .expect("default config is valid");
            let mut driver = Driver::bind(addr, server).expect("bind server");
            match driver.listen_tcp() {
                Ok(tcp) => {
                    assert_eq!(tcp, driver.local_addr(), "TCP on the UDP socket's address");
                    return driver;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() == 0 => {}
                Err(e) => panic!("listen on TCP: {e}"),
            }
        }
        panic!("no port free for both UDP and TCP in 10 attempts");
    });
    let (addr, key) = remote.with(|d, _| (d.local_addr(), d.endpoint().public_key()));
    (remote, addr, key)
}

/// A client driver connecting to `server` over `transport`, relay only: every peer message
/// goes through the server, so it crosses the server session's transport.
fn client(
    ns: Option<String>,
    server: SocketAddr,
    key: PublicKey,
    transport: Transport,
) -> Remote<Client> {
    Remote::spawn(ns, move || {
        let mut cfg = ClientConfig::default();
        cfg.server_key = Some(key);
        cfg.transport = transport;
        cfg.direct_paths = false;
        let mut c = Client::new(
            Arc::new(cfg),
            os_seed().expect("os entropy"),
            Instant::now(),
        )
        .expect("valid config");
        c.connect(Instant::now(), server, &[])
            .expect("fresh client");
        let bind = SocketAddr::new(
            if server.ip().is_loopback() {
                server.ip()
            } else {
                [0, 0, 0, 0].into()
            },
            0,
        );
        Driver::bind(bind, c).expect("bind client")
    })
}

fn host_id(c: &Remote<Client>) -> Option<HostId> {
    c.with(|d, _| d.endpoint().host_id())
}

/// Waits until `client` is connected; its host id.
fn connected(c: &Remote<Client>, limit: Duration, what: &str) -> HostId {
    wait_for(limit, what, || host_id(c))
}

/// Puts `members` in one group and waits until every member knows every other.
fn group(server: &Remote<Server>, members: &[(&Remote<Client>, HostId)]) {
    let ids: Vec<HostId> = members.iter().map(|(_, id)| *id).collect();
    let all = ids.clone();
    server
        .with(move |d, _| {
            d.endpoint_mut()
                .create_group(Instant::now(), &all)
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        })
        .expect("create the group");
    for (c, me) in members {
        let others: Vec<HostId> = ids.iter().copied().filter(|id| id != me).collect();
        wait_for(LIMIT, "every member knows every other", || {
            let others = others.clone();
            c.with(move |d, _| {
                let known: Vec<HostId> = d.endpoint().peers().collect();
                others.iter().all(|o| known.contains(o))
            })
            .then_some(())
        });
    }
}

/// Sends `seq` (as 4 bytes) to `to`, reliable and ordered.
fn send(c: &Remote<Client>, to: HostId, seqs: std::ops::Range<u32>) {
    c.with(move |d, _| {
        for n in seqs {
            d.endpoint_mut()
                .send(
                    Instant::now(),
                    to,
                    Channel::RELIABLE_ORDERED,
                    &n.to_be_bytes(),
                )
                .map_err(|e| format!("send {n} to {to}: {e:?}"))?;
        }
        Ok::<(), String>(())
    })
    .expect("send");
}

/// What a client reported since last asked: messages (sender, sequence number) and
/// transport changes (`true`: now on TCP).
#[derive(Default)]
struct Inbox {
    messages: Vec<(HostId, u32)>,
    transports: Vec<bool>,
}

impl Inbox {
    fn drain(&mut self, c: &Remote<Client>) {
        let (messages, transports) = c.with(|_, events| {
            let (mut m, mut t) = (Vec::new(), Vec::new());
            for e in events.drain(..) {
                match e {
                    ClientEvent::PeerMessage { from, payload, .. } => {
                        let n = payload
                            .get(..4)
                            .and_then(|b| <[u8; 4]>::try_from(b).ok())
                            .map_or(u32::MAX, u32::from_be_bytes);
                        m.push((from, n));
                    }
                    ClientEvent::ServerTransport { tcp } => t.push(tcp),
                    _ => {}
                }
            }
            (m, t)
        });
        self.messages.extend(messages);
        self.transports.extend(transports);
    }

    fn from(&self, id: HostId) -> Vec<u32> {
        self.messages
            .iter()
            .filter(|(f, _)| *f == id)
            .map(|(_, n)| *n)
            .collect()
    }
}

fn server_socket(server: &Remote<Server>, host: HostId) -> Option<SocketId> {
    server.with(move |d, _| d.endpoint().client_socket(host))
}

fn path_to(c: &Remote<Client>, peer: HostId) -> Option<Path> {
    c.with(move |d, _| d.endpoint().peer_stats(peer).map(|s| s.path))
}

// ---- plumbing -------------------------------------------------------------------------------

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `bytes` framed for a stream.
fn framed(bytes: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(bytes.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A ClientHello without a cookie (handshake.rs's layout), padded to the minimum.
fn client_hello(session: u32) -> Vec<u8> {
    let mut hello = vec![KIND_CLIENT_HELLO, VERSION, 0, 0];
    hello.extend_from_slice(&session.to_be_bytes());
    hello.extend_from_slice(&[9u8; 32]); // an ephemeral X25519 key: any 32 bytes will do
    hello.push(0); // no cookie
    hello.resize(MIN_CLIENT_HELLO_LEN, 0);
    hello
}

fn raw_stream(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the server's TCP port");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s
}

#[test]
fn a_server_answers_a_client_hello_sent_down_a_raw_stream() {
    let (server, addr, _) = server(None, localhost());
    let mut s = raw_stream(addr);
    s.write_all(&framed(&client_hello(0x0102_0304)))
        .expect("write");
    let mut header = [0u8; 2];
    s.read_exact(&mut header).expect("a frame header");
    let len = usize::from(u16::from_be_bytes(header));
    assert_eq!(len, SERVER_HELLO_LEN, "a ServerHello");
    let mut hello = vec![0u8; len];
    s.read_exact(&mut hello).expect("the frame");
    assert_eq!(hello[0], KIND_SERVER_HELLO);
    assert_eq!(hello[4..8], 0x0102_0304u32.to_be_bytes(), "our session id");
    let stats = server.stats();
    assert_eq!(stats.streams_accepted, 1);
    assert!(stats.datagrams_received >= 1 && stats.datagrams_sent >= 1);
    assert_eq!(server.with(|d, _| d.stream_count()), 1);
    // Closing our end: the driver sees EOF, tells the server, forgets the stream.
    drop(s);
    wait_for(LIMIT, "the stream closed", || {
        (server.with(|d, _| d.stream_count()) == 0).then_some(())
    });
    assert_eq!(server.stats().streams_closed, 1);
}

#[test]
fn a_stream_that_breaks_the_framing_is_closed_and_counted() {
    let (server, addr, _) = server(None, localhost());
    let mut s = raw_stream(addr);
    // One well-formed garbage datagram (dropped by the core), then a length over the limit.
    s.write_all(&framed(b"garbage")).expect("write");
    let too_long = u16::try_from(MAX_STREAM_FRAME + 1).expect("fits");
    s.write_all(&too_long.to_be_bytes()).expect("write");
    let mut rest = Vec::new();
    // The server closes its end: we read EOF (or a reset), never a frame.
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing is sent to garbage: {rest:?}");
    let stats = server.stats();
    assert_eq!(stats.streams_closed, 1);
    assert_eq!(stats.stream_frames_too_long, 1);
    assert_eq!(
        stats.datagrams_received, 1,
        "the garbage datagram reached the core"
    );
    assert_eq!(server.with(|d, _| d.stream_count()), 0);
}

#[test]
fn connections_over_the_stream_cap_are_closed_at_once() {
    let (server, addr, _) = server(None, localhost());
    server.with(|d, _| d.set_max_streams(2));
    let kept: Vec<TcpStream> = (0..2).map(|_| raw_stream(addr)).collect();
    wait_for(LIMIT, "two streams accepted", || {
        (server.stats().streams_accepted == 2).then_some(())
    });
    let mut refused = raw_stream(addr);
    let mut buf = [0u8; 16];
    let n = refused.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "refused: closed without a byte");
    let stats = server.stats();
    assert_eq!((stats.streams_accepted, stats.streams_refused), (2, 1));
    // The kept streams still work: a hello down the second one is answered.
    let mut second = &kept[1];
    second.write_all(&framed(&client_hello(7))).expect("write");
    let mut header = [0u8; 2];
    second.read_exact(&mut header).expect("answered");
    assert_eq!(usize::from(u16::from_be_bytes(header)), SERVER_HELLO_LEN);
    // Ids are handed out fresh: the two streams have two ids.
    let ids = server.with(|d, _| {
        (1..=3)
            .map(SocketId::stream)
            .filter(|id| d.stream_peer(*id).is_some())
            .count()
    });
    assert_eq!(ids, 2);
}

#[test]
fn a_tcp_client_with_no_server_listening_on_tcp_reports_the_failed_connect() {
    // A UDP server without a TCP listener: the TCP client's connects are refused.
    let udp_only = std::net::UdpSocket::bind(localhost()).expect("bind");
    let addr = udp_only.local_addr().expect("addr");
    let key = SecretKey::from_bytes([5; 32]).public_key();
    let c = client(None, addr, key, Transport::Tcp);
    wait_for(LIMIT, "a failed connect, retried", || {
        (c.stats().socket_open_failures >= 2).then_some(())
    });
    let (on_tcp, failures) = c.with(|d, _| {
        (
            d.endpoint().on_tcp(),
            d.endpoint().stats().tcp_connect_failures,
        )
    });
    assert!(!on_tcp);
    assert!(failures >= 1, "the client counted {failures} failures");
    assert_eq!(c.stats().streams_connected, 0);
    assert_eq!(c.with(|d, _| d.stream_count()), 0);
}

// ---- loopback: one TCP client, two UDP clients ----------------------------------------------

#[test]
fn a_tcp_client_and_two_udp_clients_exchange_relayed_messages_on_loopback() {
    let start = Instant::now();
    let (server, addr, key) = server(None, localhost());
    let tcp = client(None, addr, key, Transport::Tcp);
    let udp = [
        client(None, addr, key, Transport::Udp),
        client(None, addr, key, Transport::Udp),
    ];
    let t = connected(&tcp, LIMIT, "the TCP client connects");
    let u = [
        connected(&udp[0], LIMIT, "UDP client 0 connects"),
        connected(&udp[1], LIMIT, "UDP client 1 connects"),
    ];
    // The TCP client's session is on a stream, the others on the UDP socket.
    let socket = server_socket(&server, t).expect("session");
    assert!(socket.is_stream(), "TCP client on {socket:?}");
    for id in u {
        assert_eq!(server_socket(&server, id), Some(SocketId::PRIMARY));
    }
    assert!(tcp.with(|d, _| d.endpoint().on_tcp()));
    group(&server, &[(&tcp, t), (&udp[0], u[0]), (&udp[1], u[1])]);

    let mut tcp_inbox = Inbox::default();
    let mut udp_inbox = [Inbox::default(), Inbox::default()];
    for batch in (0..MESSAGES).step_by(20) {
        let seqs = batch..(batch + 20).min(MESSAGES);
        for i in 0..2 {
            send(&tcp, u[i], seqs.clone());
            send(&udp[i], t, seqs.clone());
        }
        tcp_inbox.drain(&tcp);
    }
    let expected: Vec<u32> = (0..MESSAGES).collect();
    let done = |tcp_inbox: &Inbox, udp_inbox: &[Inbox; 2]| {
        (0..2).all(|i| tcp_inbox.from(u[i]) == expected && udp_inbox[i].from(t) == expected)
    };
    wait_for(LIMIT, "every message delivered", || {
        tcp_inbox.drain(&tcp);
        for i in 0..2 {
            udp_inbox[i].drain(&udp[i]);
        }
        let got = |v: Vec<u32>| v.len() >= MESSAGES as usize;
        (0..2)
            .all(|i| got(tcp_inbox.from(u[i])) && got(udp_inbox[i].from(t)))
            .then_some(())
    });
    // Nothing more trickles in: each message arrived exactly once, in order.
    thread::sleep(Duration::from_millis(300));
    tcp_inbox.drain(&tcp);
    for i in 0..2 {
        udp_inbox[i].drain(&udp[i]);
    }
    for i in 0..2 {
        assert_eq!(tcp_inbox.from(u[i]), expected, "TCP client from UDP {i}");
        assert_eq!(
            udp_inbox[i].from(t),
            expected,
            "UDP {i} from the TCP client"
        );
    }
    assert!(done(&tcp_inbox, &udp_inbox));
    // All of it went through the relay, and the session never left the stream.
    for i in 0..2 {
        assert_eq!(path_to(&tcp, u[i]), Some(Path::Relay));
        assert_eq!(path_to(&udp[i], t), Some(Path::Relay));
    }
    assert_eq!(server_socket(&server, t), Some(socket));
    let (s, c) = (server.stats(), tcp.stats());
    assert_eq!((s.streams_accepted, s.streams_closed), (1, 0), "{s:?}");
    assert_eq!(
        s.stream_datagrams_dropped + s.unknown_socket_drops,
        0,
        "{s:?}"
    );
    assert_eq!((c.streams_connected, c.streams_closed), (1, 0), "{c:?}");
    assert_eq!(
        c.stream_datagrams_dropped + c.unknown_socket_drops,
        0,
        "{c:?}"
    );
    eprintln!(
        "tcp fallback on loopback: 1 TCP + 2 UDP clients, {MESSAGES} relayed messages each \
         way per pair in {:?}; server {} datagrams in / {} out",
        start.elapsed(),
        s.datagrams_received,
        s.datagrams_sent
    );
}

// ---- the lab: UDP to the server blocked, then unblocked --------------------------------------

#[cfg(target_os = "linux")]
#[path = "nat_lab/lab.rs"]
#[allow(dead_code)] // shared with nat_lab.rs, which uses the rest
mod lab;

#[cfg(target_os = "linux")]
mod in_the_lab {
    use super::*;
    use lab::{Lab, Nat};

    /// How long the client waits for UDP before connecting TCP, and how often it probes UDP
    /// while on TCP: the defaults, so the lab measures what players get.
    const FALLBACK: Duration = pierce_core::DEFAULT_TCP_FALLBACK_AFTER;
    const PROBE: Duration = pierce_core::DEFAULT_UDP_PROBE_INTERVAL;
    /// Between two messages each way.
    const EVERY: Duration = Duration::from_millis(20);
    /// The table that blocks the client's UDP to the server.
    const BLOCK_TABLE: &str = "tcp_fallback_block";

    /// A fresh lab, or `None` (after printing why) where it cannot run; under `CI` that is a
    /// failure instead (the NAT lab's rule).
    fn lab() -> Option<Lab> {
        if let Err(why) = lab::prerequisites() {
            if std::env::var_os("CI").is_some() {
                panic!("tcp_fallback lab cannot run, and CI must run it: {why}");
            }
            println!("SKIPPED tcp_fallback lab: {why}");
            return None;
        }
        Some(Lab::new().unwrap_or_else(|e| panic!("building the lab failed: {e}")))
    }

    #[test]
    fn blocked_udp_falls_back_to_tcp_and_moves_back_when_unblocked() {
        let Some(mut lab) = lab() else {
            return;
        };
        let a_host = lab
            .add_nat(Nat::PortRestricted, 1, 0)
            .unwrap_or_else(|e| panic!("building the lab failed: {e}"))
            .remove(0);
        let b_host = lab
            .add_nat(Nat::PortRestricted, 1, 0)
            .unwrap_or_else(|e| panic!("building the lab failed: {e}"))
            .remove(0);
        let server_addr: SocketAddr = lab::SERVER.parse().expect("literal");
        let srv_ns = lab.server_ns();
        // The network in front of the server drops UDP from a's NAT: TCP still passes.
        let block = format!(
            "table inet {BLOCK_TABLE} {{\n  chain input {{\n    type filter hook input \
             priority filter - 10; policy accept;\n    ip saddr {} udp dport {} counter drop\n  \
             }}\n}}\n",
            a_host.wan,
            server_addr.port()
        );
        lab.nft_in(&srv_ns, &block)
            .unwrap_or_else(|e| panic!("blocking UDP: {e}"));

        let (server, addr, key) = server(Some(srv_ns.clone()), server_addr);
        let started = Instant::now();
        let a = client(Some(a_host.ns.clone()), addr, key, Transport::Auto);
        let b = client(Some(b_host.ns.clone()), addr, key, Transport::Auto);
        let report = |what: &str| -> String {
            format!(
                "{what}\nserver {:?}\na {:?} {:?}\nb {:?}\n{}",
                server.stats(),
                a.stats(),
                a.with(|d, _| d.endpoint().stats()),
                b.stats(),
                lab.diagnostics()
            )
        };

        // a gets through over TCP, after the fallback delay; b over UDP.
        let a_id = wait_for(
            FALLBACK + Duration::from_secs(2),
            "a connects over TCP",
            || host_id(&a),
        );
        let on_tcp_after = started.elapsed();
        let b_id = connected(&b, LIMIT, "b connects over UDP");
        assert!(
            a.with(|d, _| d.endpoint().on_tcp()),
            "{}",
            report("a not on TCP")
        );
        let a_socket = server_socket(&server, a_id).expect("a's session");
        assert!(
            a_socket.is_stream(),
            "{}",
            report("a's session not on a stream")
        );
        assert_eq!(server_socket(&server, b_id), Some(SocketId::PRIMARY));
        group(&server, &[(&a, a_id), (&b, b_id)]);

        // Messages both ways all along: a while on TCP, across the switch, and after.
        let mut a_inbox = Inbox::default();
        let mut b_inbox = Inbox::default();
        let mut next = 0u32;
        let mut tick = |a_inbox: &mut Inbox, b_inbox: &mut Inbox| {
            send(&a, b_id, next..next + 1);
            send(&b, a_id, next..next + 1);
            next += 1;
            a_inbox.drain(&a);
            b_inbox.drain(&b);
            thread::sleep(EVERY);
        };
        let phase = Instant::now();
        while phase.elapsed() < Duration::from_secs(1) {
            tick(&mut a_inbox, &mut b_inbox);
        }
        assert!(
            !a_inbox.from(b_id).is_empty() && !b_inbox.from(a_id).is_empty(),
            "{}",
            report("nothing relayed over TCP in a second")
        );
        lab.nft_in(&srv_ns, &format!("delete table inet {BLOCK_TABLE}\n"))
            .unwrap_or_else(|e| panic!("unblocking UDP: {e}"));
        let unblocked = Instant::now();
        let back_limit = 2 * PROBE + Duration::from_secs(1);
        let back_after = loop {
            tick(&mut a_inbox, &mut b_inbox);
            let client_on_udp = !a.with(|d, _| d.endpoint().on_tcp());
            let server_on_udp = server_socket(&server, a_id).is_some_and(|s| !s.is_stream());
            if client_on_udp && server_on_udp {
                break unblocked.elapsed();
            }
            assert!(
                unblocked.elapsed() < back_limit,
                "{}",
                report(&format!(
                    "a not back on UDP {back_limit:?} after the unblock"
                ))
            );
        };
        let phase = Instant::now();
        while phase.elapsed() < Duration::from_secs(1) {
            tick(&mut a_inbox, &mut b_inbox);
        }
        let sent = next;
        let expected: Vec<u32> = (0..sent).collect();
        wait_for(LIMIT, "every message delivered", || {
            a_inbox.drain(&a);
            b_inbox.drain(&b);
            (a_inbox.from(b_id).len() >= sent as usize && b_inbox.from(a_id).len() >= sent as usize)
                .then_some(())
        });
        // The stream is closed a little after the move (the client's grace), by the client:
        // the server's driver sees its end.
        let streams_gone = wait_for(LIMIT, "the stream closed after the move", || {
            let server_streams = server.with(|d, _| d.stream_count());
            let client_streams = a.with(|d, _| d.stream_count());
            (server_streams == 0 && client_streams == 0).then(|| unblocked.elapsed())
        });
        a_inbox.drain(&a);
        b_inbox.drain(&b);
        let (a_got, b_got) = (a_inbox.from(b_id), b_inbox.from(a_id));
        let a_ok = a_got == expected;
        let b_ok = b_got == expected;
        let run = started.elapsed().as_secs_f64();
        let transports = |v: &[bool]| {
            if v.is_empty() {
                return "none".to_owned();
            }
            v.iter()
                .map(|&t| if t { "tcp" } else { "udp" })
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "LAB scenario=tcp-fallback side=a(port-restricted,udp-blocked) on_tcp_ms={:.1} \
             back_on_udp_after_unblock_ms={:.1} stream_closed_after_unblock_ms={:.1} \
             transports={} sent={sent} received={} in_order_once={a_ok} run_s={run:.1}",
            on_tcp_after.as_secs_f64() * 1000.0,
            back_after.as_secs_f64() * 1000.0,
            streams_gone.as_secs_f64() * 1000.0,
            transports(&a_inbox.transports),
            a_got.len(),
        );
        println!(
            "LAB scenario=tcp-fallback side=b(port-restricted) transports={} sent={sent} \
             received={} in_order_once={b_ok} run_s={run:.1}",
            transports(&b_inbox.transports),
            b_got.len(),
        );
        assert!(a_ok, "{}", report(&format!("a got {a_got:?} of 0..{sent}")));
        assert!(b_ok, "{}", report(&format!("b got {b_got:?} of 0..{sent}")));
        assert_eq!(
            a_inbox.transports,
            [true, false],
            "{}",
            report("a's transport changes")
        );
        assert!(b_inbox.transports.is_empty(), "b never left UDP");
        let s = server.stats();
        assert_eq!((s.streams_accepted, s.streams_closed), (1, 1), "{s:?}");
        let c = a.stats();
        assert_eq!(c.streams_connected, 1, "{c:?}");
        assert_eq!(c.stream_datagrams_dropped + s.stream_datagrams_dropped, 0);
    }
}
