//! Host mode on real loopback sockets: a `Host` (server + its own client on one socket)
//! driven by the mio `Driver`, two remote players connecting to it, one group, reliable
//! messages every way, every pair direct.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pierce_core::{
    Channel, Client, ClientConfig, ClientEvent, Host, HostEvent, HostId, Path, SecretKey, Server,
    ServerConfig, ServerEvent,
};
use pierce_mio::{Driver, os_seed, unix_time};

const LIMIT: Duration = Duration::from_secs(10);
const MESSAGES: u32 = 50;

fn host() -> Driver<Host> {
    // The socket first: the host must know the address players reach it at.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind host");
    let addr = socket.local_addr().expect("local addr");
    let cfg = ServerConfig::new(SecretKey::from_bytes(os_seed().expect("os entropy")));
    let now = Instant::now();
    let server = Server::new(
        Arc::new(cfg),
        os_seed().expect("os entropy"),
        now,
        unix_time(),
    )
    .expect("default config is valid");
    let host = Host::new(
        server,
        ClientConfig::default(),
        os_seed().expect("os entropy"),
        now,
        addr,
        &[],
    )
    .expect("host");
    Driver::from_std(socket, host).expect("driver")
}

fn player(host: &Driver<Host>) -> Driver<Client> {
    let mut cfg = ClientConfig::default();
    cfg.server_key = Some(host.endpoint().server().public_key());
    let mut c = Client::new(
        Arc::new(cfg),
        os_seed().expect("os entropy"),
        Instant::now(),
    )
    .expect("default config is valid");
    c.connect(Instant::now(), host.local_addr(), &[])
        .expect("fresh client");
    Driver::bind(SocketAddr::from(([127, 0, 0, 1], 0)), c).expect("bind player")
}

/// Messages received, per sender.
#[derive(Default)]
struct Inbox(Vec<(HostId, u32)>);

impl Inbox {
    fn take(&mut self, e: &ClientEvent) {
        if let ClientEvent::PeerMessage { from, payload, .. } = e {
            let n = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
            self.0.push((*from, n));
        }
    }
    fn from(&self, id: HostId) -> Vec<u32> {
        self.0
            .iter()
            .filter(|(f, _)| *f == id)
            .map(|(_, n)| *n)
            .collect()
    }
}

#[test]
fn a_host_and_two_players_on_loopback_exchange_reliable_messages_directly() {
    let mut host = host();
    let mut players = [player(&host), player(&host)];
    let mut inboxes: [Inbox; 3] = Default::default();
    let mut joined = Vec::new();
    let start = Instant::now();
    let pump = |host: &mut Driver<Host>,
                players: &mut [Driver<Client>; 2],
                inboxes: &mut [Inbox; 3],
                joined: &mut Vec<HostId>| {
        assert!(start.elapsed() < LIMIT, "timed out");
        host.pump(Duration::from_millis(2)).expect("host pump");
        while let Some(e) = host.poll_event() {
            match e {
                HostEvent::Server(ServerEvent::ClientJoined { host_id, .. }) => {
                    joined.push(host_id);
                }
                HostEvent::Client(e) => inboxes[0].take(&e),
                HostEvent::Server(_) => {}
            }
        }
        for (i, p) in players.iter_mut().enumerate() {
            p.pump(Duration::from_millis(2)).expect("player pump");
            while let Some(e) = p.poll_event() {
                inboxes[i + 1].take(&e);
            }
        }
    };
    // The host's own player joins in memory; the two players over loopback.
    while joined.len() < 3 {
        pump(&mut host, &mut players, &mut inboxes, &mut joined);
    }
    let me = host.endpoint().client().host_id().expect("connected");
    let ids = [
        me,
        players[0].endpoint().host_id().expect("connected"),
        players[1].endpoint().host_id().expect("connected"),
    ];
    assert!(
        joined.contains(&me),
        "the host's own player joined its server"
    );
    host.endpoint_mut()
        .server_mut()
        .create_group(Instant::now(), &ids)
        .expect("all connected");
    while !(host.endpoint().client().peers().count() == 2
        && players.iter().all(|p| p.endpoint().peers().count() == 2))
    {
        pump(&mut host, &mut players, &mut inboxes, &mut joined);
    }
    for n in 0..MESSAGES {
        let now = Instant::now();
        let payload = n.to_be_bytes();
        for to in [ids[1], ids[2]] {
            host.endpoint_mut()
                .client_mut()
                .send(now, to, Channel::RELIABLE_ORDERED, &payload)
                .expect("peer");
        }
        for (i, p) in players.iter_mut().enumerate() {
            for (j, to) in ids.iter().enumerate() {
                if j != i + 1 {
                    p.endpoint_mut()
                        .send(now, *to, Channel::RELIABLE_ORDERED, &payload)
                        .expect("peer");
                }
            }
        }
        pump(&mut host, &mut players, &mut inboxes, &mut joined);
    }
    let expected: Vec<u32> = (0..MESSAGES).collect();
    let done = |inboxes: &[Inbox; 3]| {
        (0..3).all(|i| (0..3).all(|j| i == j || inboxes[i].from(ids[j]) == expected))
    };
    let all_direct = |host: &Driver<Host>, players: &[Driver<Client>; 2]| {
        let direct =
            |p: Option<pierce_core::PeerStats>| matches!(p.map(|s| s.path), Some(Path::Direct(_)));
        [ids[1], ids[2]]
            .iter()
            .all(|id| direct(host.endpoint().client().peer_stats(*id)))
            && players.iter().enumerate().all(|(i, p)| {
                ids.iter()
                    .enumerate()
                    .all(|(j, id)| j == i + 1 || direct(p.endpoint().peer_stats(*id)))
            })
    };
    while !(done(&inboxes) && all_direct(&host, &players)) {
        pump(&mut host, &mut players, &mut inboxes, &mut joined);
    }
    // The players reach the host's player at the host's own socket.
    for p in &players {
        assert_eq!(
            p.endpoint().peer_stats(me).map(|s| s.path),
            Some(Path::Direct(host.local_addr()))
        );
    }
    assert_eq!(host.endpoint().stats().spoofed_local, 0);
    assert_eq!(host.stats().send_errors, 0);
    eprintln!(
        "host mode on loopback: 3 players, {MESSAGES} messages per ordered pair, all direct \
         after {:?}",
        start.elapsed()
    );
}
