//! TCP fallback: one server and one client, with the test standing in for the runtime (UDP
//! datagrams and one TCP stream, both with 10 ms one-way latency; the stream never loses or
//! reorders). UDP can be blocked either way. The client's streams are kept as a runtime keeps
//! them, in a [`StreamTable`] (what is connected, who hears of an end).

use crate::{Endpoint as _, Events as _};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use super::util::{UNIX_START, server_addr, server_config};
use crate::streams::StreamTable;
use crate::time::{Duration, Instant};
use crate::{
    Client, ClientConfig, ClientEvent, DisconnectReason, MAX_DATAGRAM_SIZE, Server, SocketId,
    SocketRequest, Transport,
};

const LATENCY: Duration = Duration::from_millis(10);
/// The server's name for the client's stream.
const SERVER_STREAM: SocketId = SocketId::stream(77);

fn client_udp() -> SocketAddr {
    "198.51.100.1:40000".parse().unwrap()
}

fn client_tcp() -> SocketAddr {
    "198.51.100.1:50123".parse().unwrap()
}

enum To {
    Server(SocketId, SocketAddr),
    Client(SocketId),
    /// The server's end of the client's stream closes (the client hears the end).
    ClientEnd(SocketId),
}

struct Rig {
    now: Instant,
    epoch: Instant,
    server: Server,
    client: Client,
    events: Vec<(Duration, ClientEvent)>,
    /// (arrival, destination, bytes)
    wire: VecDeque<(Instant, To, Vec<u8>)>,
    /// The client's streams (one at a time).
    streams: StreamTable<()>,
    /// Refuse stream connects.
    refuse_tcp: bool,
    /// Accept stream connects and close them at once, unanswered (a server whose admission
    /// holds nothing for us): the client hears the end a round trip after it connected.
    slam_tcp: bool,
    /// When the client asked for each stream.
    connects: Vec<Duration>,
    block_udp_up: bool,
    block_udp_down: bool,
    udp_up: u64,
    tcp_up: u64,
    closes: u64,
}

impl Rig {
    fn new(transport: Transport) -> Self {
        let epoch = super::epoch();
        let server = Server::new(Arc::new(server_config()), [1; 32], epoch, UNIX_START).unwrap();
        let mut cfg = ClientConfig::default();
        cfg.nat_discovery = false;
        cfg.transport = transport;
        let client = Client::new(Arc::new(cfg), [9; 32], epoch).unwrap();
        Self {
            now: epoch,
            epoch,
            server,
            client,
            events: Vec::new(),
            wire: VecDeque::new(),
            streams: StreamTable::default(),
            refuse_tcp: false,
            slam_tcp: false,
            connects: Vec::new(),
            block_udp_up: false,
            block_udp_down: false,
            udp_up: 0,
            tcp_up: 0,
            closes: 0,
        }
    }

    fn at(&self) -> Duration {
        self.now - self.epoch
    }

    /// Serves socket requests and moves transmits onto the wire.
    fn flush(&mut self) {
        let now = self.now;
        while let Some(r) = self.client.poll_socket_request() {
            match r {
                SocketRequest::Connect { id, addr } => {
                    assert!(id.is_stream());
                    assert_eq!(addr, server_addr());
                    assert!(self.streams.is_empty(), "one stream at a time");
                    let _ = self.streams.connecting(id, ());
                    self.connects.push(now - self.epoch);
                    if self.refuse_tcp {
                        let (_, failed) = self.streams.ended(id).unwrap();
                        failed.refused().tell(&mut self.client, now, id);
                    } else {
                        let _ = self.streams.connected(id);
                        self.client
                            .handle_socket_opened(now, id, Some(client_tcp()));
                        if self.slam_tcp {
                            let end = (now + 2 * LATENCY, To::ClientEnd(id), Vec::new());
                            self.wire.push_back(end);
                        }
                    }
                }
                // A close of the stream (by the core: the client hears nothing back).
                SocketRequest::Close { id } if self.streams.close(id).is_some() => {
                    self.closes += 1;
                    self.server.handle_stream_closed(now, SERVER_STREAM);
                }
                _ => {}
            }
        }
        let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
        while let Some(t) = self.client.poll_transmit(now, &mut buf) {
            let bytes = buf[..t.len].to_vec();
            if t.socket.is_stream() {
                if self.streams.is_connected(t.socket) {
                    self.tcp_up += 1;
                    self.wire.push_back((
                        now + LATENCY,
                        To::Server(SERVER_STREAM, client_tcp()),
                        bytes,
                    ));
                }
            } else {
                self.udp_up += 1;
                if !self.block_udp_up {
                    self.wire.push_back((
                        now + LATENCY,
                        To::Server(SocketId::PRIMARY, client_udp()),
                        bytes,
                    ));
                }
            }
        }
        while let Some(t) = self.server.poll_transmit(now, &mut buf) {
            let bytes = buf[..t.len].to_vec();
            if t.socket == SERVER_STREAM {
                assert_eq!(t.dst, client_tcp());
                if let Some(id) = self.stream() {
                    self.wire.push_back((now + LATENCY, To::Client(id), bytes));
                }
            } else if !self.block_udp_down {
                assert_eq!(t.dst, client_udp());
                self.wire
                    .push_back((now + LATENCY, To::Client(SocketId::PRIMARY), bytes));
            }
        }
        let at = self.at();
        while let Some(e) = self.client.poll_event() {
            self.events.push((at, e));
        }
        while self.server.poll_event().is_some() {}
    }

    fn step(&mut self, limit: Instant) {
        self.flush();
        let next = [
            self.wire.front().map(|w| w.0),
            self.client.poll_timeout().map(|t| t.at),
            self.server.poll_timeout().map(|t| t.at),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(limit, |t| t.min(limit));
        self.now = self.now.max(next);
        let now = self.now;
        while self.wire.front().is_some_and(|w| w.0 <= now) {
            let (_, to, bytes) = self.wire.pop_front().unwrap();
            match to {
                To::Server(socket, from) => {
                    self.server.handle_datagram_on(now, socket, from, &bytes);
                }
                To::ClientEnd(id) => {
                    if let Some((_, closed)) = self.streams.ended(id) {
                        closed.tell(&mut self.client, now, id);
                    }
                }
                To::Client(socket) => {
                    if socket.is_stream() && !self.streams.is_connected(socket) {
                        continue;
                    }
                    self.client
                        .handle_datagram_on(now, socket, server_addr(), &bytes);
                }
            }
        }
        if self.client.poll_timeout().is_some_and(|t| t.at <= now) {
            self.client.handle_timeout(now);
        }
        if self.server.poll_timeout().is_some_and(|t| t.at <= now) {
            self.server.handle_timeout(now);
        }
        self.flush();
    }

    fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + limit;
        for _ in 0..100_000 {
            if pred(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            self.step(end);
        }
        panic!("step cap at {:?}", self.at());
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// The client's stream, once connected.
    fn stream(&self) -> Option<SocketId> {
        self.streams.iter().next().map(|(id, ())| id)
    }

    /// The stream breaks (a middlebox reset): both ends hear. Returns its id.
    fn break_stream(&mut self) -> SocketId {
        let id = self.stream().expect("a stream");
        let (_, closed) = self.streams.ended(id).unwrap();
        closed.tell(&mut self.client, self.now, id);
        self.server.handle_stream_closed(self.now, SERVER_STREAM);
        id
    }

    fn server_on_stream(&self) -> bool {
        let host = self.client.host_id().expect("connected");
        self.server.client_socket(host).unwrap().is_stream()
    }

    fn transport_events(&self) -> Vec<bool> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                ClientEvent::ServerTransport { tcp } => Some(*tcp),
                _ => None,
            })
            .collect()
    }

    fn disconnected(&self) -> bool {
        self.events
            .iter()
            .any(|(_, e)| matches!(e, ClientEvent::Disconnected { .. }))
    }
}

#[test]
fn udp_blocked_falls_back_to_tcp_then_moves_back_to_udp() {
    let mut r = Rig::new(Transport::Auto);
    r.block_udp_up = true;
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    assert!(r.run_until(Duration::from_secs(4), |r| r.client.is_connected()));
    let connected_at = r.at();
    assert!(
        connected_at >= Duration::from_secs(2) && connected_at < Duration::from_millis(2100),
        "connected over TCP right after the 2 s fallback: {connected_at:?}"
    );
    assert!(r.client.on_tcp() && r.server_on_stream());
    assert_eq!(r.transport_events(), [true]);
    r.client
        .send_to_server_reliable(r.now, b"over tcp")
        .unwrap();
    r.run_for(Duration::from_secs(12));
    assert!(r.client.on_tcp(), "still blocked: still on TCP");
    let probes = r.client.stats().udp_probes_sent;
    assert!(
        (3..=4).contains(&probes),
        "a probe at once, then every 5 s: {probes}"
    );

    r.block_udp_up = false;
    let unblocked = r.at();
    assert!(r.run_until(Duration::from_secs(6), |r| !r.client.on_tcp()));
    let moved = r.at() - unblocked;
    assert!(moved <= Duration::from_millis(5100), "{moved:?}");
    r.run_for(Duration::from_millis(100));
    assert!(
        !r.server_on_stream(),
        "the server followed the client's next packet"
    );
    assert_eq!(r.transport_events(), [true, false]);
    assert_eq!(r.closes, 0, "the stream stays a grace period");
    r.run_for(Duration::from_secs(3));
    assert_eq!(r.closes, 1);
    assert!(!r.disconnected());
    assert_eq!(r.server.stats().transport_changes, 1);
    println!(
        "TCP fallback: connected over TCP at {connected_at:?}, back on UDP {moved:?} after \
         the unblock, {probes} probes while blocked"
    );
}

#[test]
fn forced_tcp_never_sends_udp() {
    let mut r = Rig::new(Transport::Tcp);
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    assert!(r.run_until(Duration::from_secs(1), |r| r.client.is_connected()));
    assert!(r.at() < Duration::from_millis(100), "{:?}", r.at());
    r.run_for(Duration::from_secs(20));
    assert!(r.client.is_connected() && r.client.on_tcp() && r.server_on_stream());
    assert_eq!(r.udp_up, 0);
    assert!(r.tcp_up > 5, "keepalives over the stream");
}

#[test]
fn udp_only_never_asks_for_a_stream() {
    let mut r = Rig::new(Transport::Udp);
    r.block_udp_up = true;
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    r.run_for(Duration::from_secs(11));
    assert!(r.disconnected() && r.stream().is_none() && r.tcp_up == 0);
}

#[test]
fn one_way_udp_keeps_the_session_on_tcp() {
    // Probes reach the server but its answers never come back: the client must not move,
    // and the probes must not move the server either.
    let mut r = Rig::new(Transport::Auto);
    r.block_udp_up = true;
    r.block_udp_down = true;
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    assert!(r.run_until(Duration::from_secs(4), |r| r.client.is_connected()));
    r.block_udp_up = false;
    r.run_for(Duration::from_secs(30));
    assert!(r.client.is_connected() && r.client.on_tcp() && r.server_on_stream());
    assert!(r.server.stats().path_probes_answered >= 5);
    assert_eq!(r.transport_events(), [true]);
}

#[test]
fn a_closed_stream_is_replaced_without_losing_the_session() {
    let mut r = Rig::new(Transport::Tcp);
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    assert!(r.run_until(Duration::from_secs(1), |r| r.client.is_connected()));
    let host = r.client.host_id();
    let old = r.break_stream();
    r.client.send_to_server_reliable(r.now, b"after").unwrap();
    assert!(r.run_until(Duration::from_secs(2), |r| r.stream().is_some()));
    assert_ne!(r.stream(), Some(old));
    r.run_for(Duration::from_secs(20));
    assert!(!r.disconnected());
    assert_eq!(r.client.host_id(), host);
    assert!(r.server_on_stream());
    assert_eq!(r.client.stats().tcp_streams_opened, 2);
    assert_eq!(r.server.stats().stream_paths_closed, 1);
}

#[test]
fn a_refused_stream_is_retried_with_backoff() {
    let mut r = Rig::new(Transport::Tcp);
    r.refuse_tcp = true;
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    r.run_for(Duration::from_secs(5));
    let failures = r.client.stats().tcp_connect_failures;
    assert!(
        (3..=5).contains(&failures),
        "0.5, 1, 2, 4 s apart: {failures}"
    );
    r.refuse_tcp = false;
    assert!(r.run_until(Duration::from_secs(6), |r| r.client.is_connected()));
}

/// The reason the client's session ended, if it did.
fn reason(r: &Rig) -> Option<DisconnectReason> {
    r.events.iter().find_map(|(_, e)| match e {
        ClientEvent::Disconnected { reason } => Some(*reason),
        _ => None,
    })
}

#[test]
fn a_connect_refused_every_time_is_named_in_the_reason() {
    let mut r = Rig::new(Transport::Tcp);
    r.refuse_tcp = true;
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    r.run_for(Duration::from_secs(11));
    assert_eq!(reason(&r), Some(DisconnectReason::ConnectRefused));
}

#[test]
fn a_server_that_closes_every_stream_unanswered_is_asked_with_back_off_and_named() {
    let mut r = Rig::new(Transport::Tcp);
    r.slam_tcp = true;
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    r.run_for(Duration::from_secs(11));
    // Each stream connects and is closed a round trip later (20 ms); the next waits 0.5, 1,
    // 2, 4 s: connecting must not reset the back-off, only the server speaking does.
    let ms: Vec<u128> = r.connects.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [0, 520, 1540, 3560, 7580]);
    assert_eq!(reason(&r), Some(DisconnectReason::ConnectClosed));
}

#[test]
fn a_session_s_stream_closed_unanswered_is_replaced_after_the_back_off_not_at_once() {
    let mut r = Rig::new(Transport::Tcp);
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    assert!(r.run_until(Duration::from_secs(1), |r| r.client.is_connected()));
    // The stream the server spoke on breaks: replaced at once. From then on the server's
    // host closes every new stream before the server says anything on it.
    r.slam_tcp = true;
    let broken = r.at();
    r.break_stream();
    r.run_for(Duration::from_secs(4));
    let after: Vec<u128> = (r.connects[1..].iter())
        .map(|at| (*at - broken).as_millis())
        .collect();
    assert_eq!(after, [0, 520, 1540, 3560]);
    // It comes back: the next stream works (the server acknowledges a message on it), and
    // the back-off starts over.
    r.slam_tcp = false;
    let n = r.connects.len();
    assert!(r.run_until(Duration::from_secs(5), |r| r.stream().is_some()));
    r.client.send_to_server_reliable(r.now, b"hi").unwrap();
    r.run_for(Duration::from_secs(1));
    assert_eq!(r.connects.len(), n + 1, "it stays");
    let back = r.at();
    r.break_stream();
    r.run_for(Duration::from_millis(100));
    assert_eq!(r.connects.last().map(|at| *at - back), Some(Duration::ZERO));
    assert!(!r.disconnected());
}

#[test]
fn a_handshake_whose_stream_breaks_after_the_server_hello_completes_down_the_next_stream() {
    let mut r = Rig::new(Transport::Tcp);
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    // The hello and then the Connect went up the stream: the client has the ServerHello.
    assert!(r.run_until(Duration::from_secs(1), |r| r.tcp_up >= 2));
    assert!(!r.client.is_connected());
    assert_eq!(r.server.stats().half_open, 1);
    // The stream breaks (or the server's admission closed it) with the Connect on the way.
    r.wire
        .retain(|(_, to, _)| !matches!(to, To::Server(id, _) if id.is_stream()));
    r.break_stream();
    // The server kept the half-open session; the client's next stream (at once: the server
    // had spoken on the last one) carries the Connect again.
    let broke = r.at();
    assert!(r.run_until(Duration::from_secs(1), |r| r.client.is_connected()));
    assert!(
        r.at() - broke < Duration::from_millis(100),
        "{:?}",
        r.at() - broke
    );
    assert_eq!(r.connects.len(), 2);
    assert_eq!(r.server.stats().handshakes_completed, 1);
}

#[test]
fn udp_going_quiet_mid_session_moves_the_session_to_tcp() {
    let mut r = Rig::new(Transport::Auto);
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    assert!(r.run_until(Duration::from_secs(1), |r| r.client.is_connected()));
    assert!(!r.client.on_tcp());
    r.block_udp_up = true;
    r.block_udp_down = true;
    let blocked = r.at();
    assert!(r.run_until(Duration::from_secs(10), |r| r.client.on_tcp()));
    let took = r.at() - blocked;
    assert!(took <= Duration::from_millis(6100), "{took:?}");
    r.run_for(Duration::from_millis(100));
    assert!(r.server_on_stream());
    r.run_for(Duration::from_secs(20));
    assert!(!r.disconnected());
}

#[test]
fn a_probe_is_answered_no_larger_and_does_not_move_the_session() {
    let mut r = Rig::new(Transport::Auto);
    r.block_udp_up = true;
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    assert!(r.run_until(Duration::from_secs(4), |r| r.client.is_connected()));
    r.block_udp_down = true;
    r.block_udp_up = false;
    // Catch the probe and the answer.
    let mut probe = None;
    for _ in 0..10_000 {
        r.flush();
        if let Some(w) = r
            .wire
            .iter()
            .find(|w| matches!(w.1, To::Server(SocketId::PRIMARY, _)))
        {
            probe = Some(w.2.clone());
            break;
        }
        let t = r.now + Duration::from_millis(100);
        r.step(t);
    }
    let probe = probe.expect("a probe");
    let before = r.server.stats().path_probes_answered;
    r.server
        .handle_datagram_on(r.now, SocketId::PRIMARY, client_udp(), &probe);
    let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
    let answer = r.server.poll_transmit(r.now, &mut buf).expect("answered");
    assert_eq!(answer.socket, SocketId::PRIMARY);
    assert_eq!(answer.dst, client_udp());
    assert!(
        answer.len <= probe.len(),
        "{} > {}",
        answer.len,
        probe.len()
    );
    assert_eq!(r.server.stats().path_probes_answered, before + 1);
    assert!(r.server_on_stream());
}

#[test]
fn a_session_whose_stream_broke_waits_without_spinning_until_a_new_one_connects() {
    // The stream breaks and reconnecting is refused for a while, with a reliable message
    // and keepalives due: the client names the dead stream meanwhile (the runtime drops
    // those) instead of holding them, so its deadlines move on (no busy loop), and once a
    // stream connects again the message goes through.
    let mut r = Rig::new(Transport::Tcp);
    r.client.connect(r.now, server_addr(), &[]).unwrap();
    assert!(r.run_until(Duration::from_secs(1), |r| r.client.is_connected()));
    // The message leaves on the stream, then the stream breaks with it in flight: its
    // retransmission timer runs while no stream is connected.
    r.client
        .send_to_server_reliable(r.now, b"in flight")
        .unwrap();
    r.flush();
    r.wire.clear();
    r.refuse_tcp = true;
    r.break_stream();
    r.run_for(Duration::from_secs(6));
    assert!(r.client.stats().tcp_connect_failures >= 3);
    r.refuse_tcp = false;
    r.run_for(Duration::from_secs(6));
    assert!(r.stream().is_some() && r.client.is_connected() && !r.disconnected());
    assert!(r.server_on_stream());
}
