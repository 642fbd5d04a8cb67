//! The driver's extra sockets (`SocketRequest`), with a test double for the core: hundreds of
//! sockets opened on request, a datagram out of each, answers routed back by socket id, a fair
//! share of the receive budget, and every descriptor given back on close.
//!
//! One test in this binary on purpose: it counts the process's open file descriptors, which
//! tests running in parallel threads would disturb.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use pierce_core::{Endpoint, Events, SocketId, SocketRequest, Transmit};
use pierce_mio::Driver;

const LIMIT: Duration = Duration::from_secs(10);
const EXTRA: u16 = 300;

/// Asks for `EXTRA` sockets, sends one datagram (its id) from each to `target` as soon as it
/// is open, and records what arrives on which socket.
struct Fanout {
    target: SocketAddr,
    requests: VecDeque<SocketRequest>,
    opened: BTreeMap<SocketId, SocketAddr>,
    /// Sockets whose datagram is not sent yet.
    to_send: VecDeque<SocketId>,
    /// Datagrams received: (socket, payload).
    received: Vec<(SocketId, Vec<u8>)>,
    /// A transmit naming a socket nobody asked for, to check the drop counter.
    stray: bool,
    /// How many more datagrams may go out: the test paces them so the receiving socket's
    /// buffer (a few hundred small datagrams) never overflows.
    pace: usize,
}

impl Fanout {
    fn new(target: SocketAddr) -> Self {
        let requests = (1..=EXTRA)
            .map(|i| SocketRequest::Open {
                id: SocketId(i),
                addr: None,
            })
            .collect();
        Self {
            target,
            requests,
            opened: BTreeMap::new(),
            to_send: VecDeque::new(),
            received: Vec::new(),
            stray: true,
            pace: 0,
        }
    }

    fn close_all(&mut self) {
        for &id in self.opened.keys() {
            self.requests.push_back(SocketRequest::Close { id });
        }
    }
}

impl Endpoint for Fanout {
    fn handle_datagram_on(
        &mut self,
        _now: Instant,
        socket: SocketId,
        _from: SocketAddr,
        datagram: &[u8],
    ) {
        self.received.push((socket, datagram.to_vec()));
    }

    fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.requests.pop_front()
    }

    fn handle_socket_opened(&mut self, _now: Instant, id: SocketId, local: Option<SocketAddr>) {
        let local = local.expect("a loopback socket opens");
        self.opened.insert(id, local);
        self.to_send.push_back(id);
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if std::mem::take(&mut self.stray) {
            buf[0] = 0;
            return Some(Transmit {
                dst: self.target,
                len: 1,
                socket: SocketId(EXTRA + 1),
                ttl: None,
            });
        }
        if self.pace == 0 {
            return None;
        }
        let id = self.to_send.pop_front()?;
        self.pace -= 1;
        buf[..2].copy_from_slice(&id.0.to_be_bytes());
        Some(Transmit {
            dst: self.target,
            len: 2,
            socket: id,
            ttl: None,
        })
    }

    fn poll_timeout(&self) -> Option<pierce_core::Timeout> {
        None
    }
}

impl Events for Fanout {
    type Event = ();

    fn poll_event(&mut self) -> Option<()> {
        None
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(Iterator::count)
        .unwrap_or(0)
}

#[test]
fn hundreds_of_extra_sockets_send_receive_share_the_budget_and_close() {
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut driver = Driver::bind(
        "127.0.0.1:0".parse().expect("literal"),
        Fanout::new(peer.local_addr().expect("addr")),
    )
    .expect("bind driver");
    let fds_before = open_fds();

    // One pump opens every socket, before the transmits that name them go out.
    driver.endpoint_mut().pace = 50;
    driver.pump(Duration::ZERO).expect("pump");
    assert_eq!(driver.socket_count(), 1 + usize::from(EXTRA));
    assert_eq!(driver.stats().socket_open_failures, 0);
    assert_eq!(driver.stats().datagrams_sent, 50);
    assert_eq!(driver.stats().unknown_socket_drops, 1, "the stray transmit");
    let opened = driver.endpoint().opened.clone();
    assert_eq!(opened.len(), usize::from(EXTRA));
    for (&id, &addr) in &opened {
        assert_eq!(driver.socket_addr(id), Some(addr));
        assert_eq!(
            addr.ip(),
            driver.local_addr().ip(),
            "the primary socket's IP"
        );
    }
    if cfg!(target_os = "linux") {
        assert!(
            open_fds() >= fds_before + usize::from(EXTRA),
            "{} fds before, {} now",
            fds_before,
            open_fds()
        );
    }

    // Each datagram leaves from the socket it names: 300 distinct source ports.
    let mut sources = BTreeMap::new();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    while sources.len() < usize::from(EXTRA) {
        assert!(
            start.elapsed() < LIMIT,
            "{} datagrams arrived",
            sources.len()
        );
        let Ok((len, from)) = peer.recv_from(&mut buf) else {
            driver.endpoint_mut().pace = 50;
            driver.pump(Duration::ZERO).expect("pump");
            continue;
        };
        assert_eq!(len, 2);
        let id = SocketId(u16::from_be_bytes([buf[0], buf[1]]));
        assert_eq!(Some(&from), opened.get(&id), "socket {id:?} sent it");
        assert!(sources.insert(id, from).is_none(), "{id:?} twice");
    }
    let ports: BTreeSet<u16> = sources.values().map(SocketAddr::port).collect();
    assert_eq!(ports.len(), usize::from(EXTRA));

    // Answers to every socket, and a flood on the primary at the same time: with a small
    // budget each pump must read from both, not drain one first.
    const FLOOD: usize = 200;
    const BUDGET: usize = 32;
    driver.set_recv_budget(BUDGET);
    for _ in 0..FLOOD {
        peer.send_to(&[0xff; 8], driver.local_addr())
            .expect("flood the primary");
    }
    for (id, from) in &sources {
        peer.send_to(&id.0.to_be_bytes(), from).expect("answer");
    }
    driver.pump(Duration::ZERO).expect("pump");
    assert_eq!(
        driver.endpoint().received.len(),
        BUDGET,
        "one pump reads exactly the budget"
    );
    let start = Instant::now();
    while driver.endpoint().received.len() < FLOOD + usize::from(EXTRA) {
        assert!(
            start.elapsed() < LIMIT,
            "{} received",
            driver.endpoint().received.len()
        );
        driver.pump(Duration::from_millis(1)).expect("pump");
        assert!(driver.stats().last_pump_received <= BUDGET);
    }
    // Round robin, one datagram per readable socket in turn: the flood got one read per
    // round while the 300 answers were read (not 200 first), and its first read came within
    // the first round (not after all 300 answers).
    let received = &driver.endpoint().received;
    let is_primary = |r: &&(SocketId, Vec<u8>)| r.0 == SocketId::PRIMARY;
    let last_answer = received
        .iter()
        .rposition(|r| r.0 != SocketId::PRIMARY)
        .expect("answers");
    let flood_meanwhile = received[..last_answer].iter().filter(is_primary).count();
    assert!(
        flood_meanwhile <= 3,
        "{flood_meanwhile} flood datagrams read first"
    );
    let first_flood = received.iter().position(|r| is_primary(&r)).expect("flood");
    assert!(
        first_flood <= usize::from(EXTRA),
        "first flood read at {first_flood}"
    );
    let mut answered = BTreeSet::new();
    for (socket, payload) in received {
        if *socket == SocketId::PRIMARY {
            assert_eq!(payload, &[0xff; 8]);
        } else {
            assert_eq!(payload[..], socket.0.to_be_bytes(), "routed to its socket");
            assert!(answered.insert(*socket), "{socket:?} twice");
        }
    }
    assert_eq!(answered.len(), usize::from(EXTRA));
    assert!(driver.stats().budget_exhausted > 0);

    // Closing gives every descriptor back; the primary socket stays.
    driver.endpoint_mut().close_all();
    driver.pump(Duration::ZERO).expect("pump");
    assert_eq!(driver.socket_count(), 1);
    assert_eq!(driver.socket_addr(SocketId(1)), None);
    if cfg!(target_os = "linux") {
        assert_eq!(open_fds(), fds_before);
    }
    assert_eq!(
        driver.stats().datagrams_sent,
        u64::from(EXTRA),
        "{:?}",
        driver.stats()
    );
}
