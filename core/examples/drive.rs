//! Drive pierce-core yourself over `std::net`, one thread, no runtime crate, honouring the
//! whole drive contract ([`Endpoint`]): every datagram to `handle_datagram_on` with the socket
//! it came in on, every transmit out of the socket it names, every socket the core asks for
//! (birthday probing's extra UDP sockets, the TCP stream a client falls back to when UDP is
//! blocked) opened, connected or closed and reported back, accepted and broken streams
//! reported, deadlines kept.
//!
//! - `cargo run -p pierce-core --example drive`: a server and two clients in one process on
//!   loopback; each client says hello to the server (echoed) and to the other client.
//! - `cargo run -p pierce-core --example drive -- --server IP:PORT --room NAME [--send N]
//!   [--timeout S]`: one client, default configuration, against a `pierce server`: it joins
//!   (or creates) the room, sends N reliable messages to the first member to join and waits
//!   for theirs, and stays until the pair is direct; it prints `drive ok ...` (exit 0) or
//!   `drive FAILED ...` (exit 1).
#![allow(clippy::disallowed_methods)] // an application reads the clock; the core never does

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pierce_core::framing::{Deframer, Framer};
use pierce_core::{Channel, Client, ClientConfig, ClientEvent, Endpoint, Events, HostId, Path};
use pierce_core::{MAX_DATAGRAM_SIZE, SecretKey, Server, ServerConfig, ServerEvent};
use pierce_core::{SocketId, SocketRequest, Transmit};

/// A TCP stream the core named, with its framing both ways.
struct Stream {
    tcp: TcpStream,
    peer: SocketAddr,
    rx: Deframer,
    tx: Framer,
}

/// Every socket of one endpoint, by the id the core uses for it.
struct Sockets {
    /// The primary socket's IP: extra UDP sockets bind there, with any port.
    ip: IpAddr,
    udp: BTreeMap<SocketId, UdpSocket>,
    streams: BTreeMap<SocketId, Stream>,
    /// A server's listener for clients whose UDP is blocked, and the next stream number.
    listener: Option<(TcpListener, u16)>,
    /// Extra UDP sockets opened so far (birthday probing's).
    extra_opened: usize,
}

impl Sockets {
    fn new(primary: UdpSocket) -> io::Result<Self> {
        primary.set_nonblocking(true)?;
        Ok(Self {
            ip: primary.local_addr()?.ip(),
            udp: BTreeMap::from([(SocketId::PRIMARY, primary)]),
            streams: BTreeMap::new(),
            listener: None,
            extra_opened: 0,
        })
    }

    /// A server also listens for TCP on its UDP address.
    fn listen(&mut self) -> io::Result<()> {
        let l = TcpListener::bind(self.udp[&SocketId::PRIMARY].local_addr()?)?;
        l.set_nonblocking(true)?;
        self.listener = Some((l, 1));
        Ok(())
    }

    /// `raw`: the stream carries bytes, not framed datagrams (`SocketRequest::ConnectRaw`).
    fn add_stream(&mut self, id: SocketId, tcp: TcpStream, raw: bool) -> io::Result<SocketAddr> {
        tcp.set_nonblocking(true)?;
        tcp.set_nodelay(true)?;
        let (local, peer) = (tcp.local_addr()?, tcp.peer_addr()?);
        let (rx, tx) = if raw {
            (Deframer::raw(), Framer::raw(64 * 1024))
        } else {
            (Deframer::default(), Framer::default())
        };
        self.streams.insert(id, Stream { tcp, peer, rx, tx });
        Ok(local)
    }

    /// Carries out the socket requests and reports each outcome.
    fn serve_requests(&mut self, now: Instant, e: &mut dyn Endpoint) {
        while let Some(request) = e.poll_socket_request() {
            match request {
                SocketRequest::Open { id, addr } => {
                    let bound = UdpSocket::bind(addr.unwrap_or_else(|| (self.ip, 0).into()));
                    let bound = bound.and_then(|s| s.set_nonblocking(true).map(|()| s));
                    let local = bound.as_ref().ok().and_then(|s| s.local_addr().ok());
                    if let Ok(s) = bound {
                        self.udp.insert(id, s);
                        self.extra_opened += 1;
                    }
                    e.handle_socket_opened(now, id, local);
                }
                SocketRequest::Connect { id, addr } | SocketRequest::ConnectRaw { id, addr } => {
                    let raw = matches!(request, SocketRequest::ConnectRaw { .. });
                    // (Blocking, briefly: a real runtime connects without blocking its loop.)
                    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
                    let local = tcp.and_then(|t| self.add_stream(id, t, raw)).ok();
                    e.handle_socket_opened(now, id, local);
                }
                SocketRequest::Close { id } => {
                    self.udp.remove(&id);
                    if let Some(mut s) = self.streams.remove(&id) {
                        // What is queued (a last Close frame) goes first, best effort.
                        let _ = s.tcp.set_nonblocking(false);
                        let _ = s.tcp.write_all(s.tx.front());
                    }
                }
            }
        }
    }

    /// Hands everything waiting on any socket to the endpoint; reports streams that end.
    fn receive(&mut self, now: Instant, e: &mut dyn Endpoint, buf: &mut [u8]) {
        while let Some((l, next)) = &mut self.listener {
            let Ok((tcp, peer)) = l.accept() else { break };
            let id = SocketId::stream(*next);
            *next = next.wrapping_add(1).max(1);
            if self.add_stream(id, tcp, false).is_ok() {
                e.handle_stream_accepted(now, id, peer);
            }
        }
        for (&id, sock) in &self.udp {
            while let Ok((n, from)) = sock.recv_from(buf) {
                e.handle_datagram_on(now, id, from, &buf[..n]);
            }
        }
        let mut ended = Vec::new();
        for (&id, s) in &mut self.streams {
            loop {
                match s.tcp.read(s.rx.spare()) {
                    Ok(0) => ended.push(id),
                    Ok(n) => s.rx.filled(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => ended.push(id),
                }
                loop {
                    match s.rx.next_frame() {
                        Ok(Some(frame)) => e.handle_datagram_on(now, id, s.peer, frame),
                        Ok(None) => break,
                        Err(_) => {
                            ended.push(id); // not Pierce framing: close it
                            break;
                        }
                    }
                }
                if ended.last() == Some(&id) {
                    break;
                }
            }
        }
        for id in ended {
            self.streams.remove(&id);
            e.handle_stream_closed(now, id);
        }
    }

    /// Sends from the socket the transmit names; with no such socket (not open yet, closed)
    /// it is dropped, like a datagram lost on the way.
    fn send(&mut self, t: Transmit, bytes: &[u8]) {
        if let Some(s) = self.streams.get_mut(&t.socket) {
            let _ = s.tx.push(bytes); // a full queue drops it, as UDP would
        } else if let Some(s) = self.udp.get(&t.socket) {
            let _ = s.send_to(bytes, t.dst);
        }
    }

    /// Drains transmits and socket requests after any input, then writes queued stream
    /// bytes.
    fn flush(&mut self, now: Instant, e: &mut dyn Endpoint, buf: &mut [u8]) {
        self.serve_requests(now, e);
        while let Some(t) = e.poll_transmit(now, buf) {
            self.send(t, &buf[..t.len]);
            self.serve_requests(now, e);
        }
        for s in self.streams.values_mut() {
            while !s.tx.is_empty() {
                match s.tcp.write(s.tx.front()) {
                    Ok(n) if n > 0 => s.tx.consume(n),
                    _ => break, // would block (or broke: the next read reports it)
                }
            }
        }
    }
}

/// One turn for one endpoint: inputs, timers, outputs.
fn turn(now: Instant, e: &mut dyn Endpoint, s: &mut Sockets, buf: &mut [u8]) {
    let mut rx = [0u8; 65_536];
    s.receive(now, e, &mut rx);
    if e.poll_timeout().is_some_and(|t| t.at <= now) {
        e.handle_timeout(now);
    }
    s.flush(now, e, buf);
}

fn seed(tag: u8) -> [u8; 32] {
    // Real code: fill from the OS (getrandom). Fixed here so runs are repeatable.
    [tag; 32]
}

/// A server and two clients in one process: hellos to the server (echoed) and to each other.
fn in_process() -> io::Result<bool> {
    let start = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut server_socks = Sockets::new(UdpSocket::bind("127.0.0.1:0")?)?;
    server_socks.listen()?;
    let server_addr = server_socks.udp[&SocketId::PRIMARY].local_addr()?;
    let cfg = ServerConfig::new(SecretKey::from_bytes(seed(1)));
    let mut server = Server::new(Arc::new(cfg), seed(2), start, unix).expect("valid config");
    // The default client configuration (TCP fallback, birthday sockets and all), pinned to
    // this server's key.
    let mut pinned = ClientConfig::default();
    pinned.server_key = Some(server.public_key());
    let mut clients = Vec::new();
    for i in 0..2u8 {
        let mut c = Client::new(Arc::new(pinned.clone()), seed(10 + i), start).expect("config");
        c.connect(start, server_addr, &[]).expect("fresh client");
        clients.push((c, Sockets::new(UdpSocket::bind("127.0.0.1:0")?)?));
    }
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    let (mut echoed, mut from_peers, mut grouped) = (0, 0, false);
    while (echoed < 2 || from_peers < 2) && start.elapsed() < Duration::from_secs(10) {
        let now = Instant::now();
        turn(now, &mut server, &mut server_socks, &mut buf);
        while let Some(e) = server.poll_event() {
            println!("[{:>6.1?}] server: {e:?}", now - start);
            if let ServerEvent::Message { from, payload } = e {
                server.send(now, from, &payload).expect("client connected");
            }
        }
        let ids: Vec<HostId> = clients.iter().filter_map(|(c, _)| c.host_id()).collect();
        if ids.len() == 2 && !grouped {
            server.create_group(now, &ids).expect("both connected");
            grouped = true;
        }
        for (i, (c, socks)) in clients.iter_mut().enumerate() {
            turn(now, c, socks, &mut buf);
            while let Some(e) = c.poll_event() {
                println!("[{:>6.1?}] client {i}: {e:?}", now - start);
                match e {
                    ClientEvent::Connected { .. } => c.send_to_server(now, b"hello").expect("up"),
                    ClientEvent::Message { .. } => echoed += 1,
                    ClientEvent::MemberJoined { member, .. } if Some(member) != c.host_id() => {
                        let _ = c.send(now, member, Channel::RELIABLE_ORDERED, b"hi, peer");
                    }
                    ClientEvent::PeerMessage { .. } => from_peers += 1,
                    _ => {}
                }
            }
        }
        // Poll the sockets at least every millisecond (a runtime would wait on them).
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("echoed {echoed}/2, peer messages {from_peers}/2");
    Ok(echoed == 2 && from_peers == 2)
}

/// How long a finished client keeps driving before it exits (see `against`): several ack
/// delays and a loopback or LAN round trip.
const LINGER: Duration = Duration::from_millis(250);

/// One client against a `pierce server`, exchanging `count` messages with one room member.
fn against(server: SocketAddr, room: &str, count: u32, timeout: Duration) -> io::Result<bool> {
    let start = Instant::now();
    let any = if server.is_ipv4() {
        IpAddr::from([0; 4])
    } else {
        IpAddr::from([0; 16])
    };
    let mut socks = Sockets::new(UdpSocket::bind((any, 0))?)?;
    let mut c = Client::new(Arc::new(ClientConfig::default()), seed_from_clock(), start)
        .expect("the default configuration is valid");
    c.connect(start, server, &[]).expect("fresh client");
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    let (mut peer, mut received, mut next) = (None::<HostId>, 0u32, 0u32);
    let direct = |c: &Client, p| matches!(c.peer_stats(p).map(|s| s.path), Some(Path::Direct(_)));
    let done = |c: &Client, peer: Option<HostId>, received, next| {
        peer.is_some_and(|p| {
            received == count
                && next == count
                && c.peer_stats(p).is_some_and(|s| s.unacked == 0)
                && direct(c, p)
        })
    };
    while !done(&c, peer, received, next) && start.elapsed() < timeout {
        let now = Instant::now();
        turn(now, &mut c, &mut socks, &mut buf);
        while let Some(e) = c.poll_event() {
            match e {
                ClientEvent::Connected { host_id, .. } => {
                    println!("connected as {host_id}");
                    c.join_room(now, room, "", true, 0)
                        .expect("a valid room name");
                }
                ClientEvent::MemberJoined { member, .. } if Some(member) != c.host_id() => {
                    peer.get_or_insert(member);
                }
                ClientEvent::PeerMessage { from, payload, .. } if Some(from) == peer => {
                    received += u32::from(payload[..] == received.to_be_bytes()[..]);
                }
                ClientEvent::PathChanged {
                    peer: who, path, ..
                } => println!("{who}: {path:?}"),
                ClientEvent::Disconnected { reason } => {
                    println!("drive FAILED: disconnected ({reason:?})");
                    return Ok(false);
                }
                _ => {}
            }
        }
        while let Some(p) = peer.filter(|_| next < count) {
            let sent = c.send(now, p, Channel::RELIABLE_ORDERED, &next.to_be_bytes());
            if sent.is_err() {
                break; // the send buffer is full: next turn
            }
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ok = done(&c, peer, received, next);
    // Our last acknowledgements may still be held back (acks ride on data for up to
    // `ack_delay`): keep driving a moment so they leave before the process does. Without this
    // the other side, still waiting for them, retransmits into a closed socket, loses its
    // direct path and, with its peer gone, never gets it back.
    let linger = Instant::now();
    while ok && linger.elapsed() < LINGER {
        turn(Instant::now(), &mut c, &mut socks, &mut buf);
        while c.poll_event().is_some() {}
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "drive {} received={received} sent={next} path={} extra_sockets_opened={} tcp={}",
        if ok { "ok" } else { "FAILED" },
        if peer.is_some_and(|p| direct(&c, p)) {
            "direct"
        } else {
            "relay"
        },
        socks.extra_opened,
        c.on_tcp(),
    );
    Ok(ok)
}

/// Two runs against one server must not share a seed: this one is good enough for an example
/// (real code: the OS's CSPRNG).
fn seed_from_clock() -> [u8; 32] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut s = [0u8; 32];
    s[..16].copy_from_slice(&nanos.to_le_bytes());
    s[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    s
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1).cloned()
    };
    let ok = match arg("--server") {
        None => in_process()?,
        Some(server) => {
            let Ok(server) = server.parse() else {
                eprintln!("--server takes IP:PORT, not {server:?}");
                std::process::exit(2);
            };
            let room = arg("--room").unwrap_or_else(|| "drive".to_owned());
            let number = |name: &str, default: u32| match arg(name).map(|v| v.parse()) {
                None => default,
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    eprintln!("{name} takes a whole number");
                    std::process::exit(2);
                }
            };
            let timeout = Duration::from_secs(number("--timeout", 30).into());
            against(server, &room, number("--send", 100), timeout)?
        }
    };
    std::process::exit(if ok { 0 } else { 1 })
}
