//! A cluster node answered by an arbitrary directory: three real clients (connected in
//! memory) join, create, list and leave rooms and reconnect while every question the node
//! asks gets an arbitrary answer — the right kind or not, an error, a claim for a node that
//! does not exist, a node list full of junk — late, out of order, twice, or never; the node
//! may drain. Invariants: no panic; after `handle_timeout(now)` the next deadline is in the
//! future; a room lives once on the node (names unique); once numbered, every new
//! client's host id carries the node's number.
#![no_main]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pierce_core::cluster::{
    Claim, ClusterConfig, DirectoryAnswer, DirectoryError, ListedRoom, NodeInfo, NodeLoad, QueryId,
};
use pierce_core::{
    Client, ClientConfig, Endpoint, Events, MAX_DATAGRAM_SIZE, RoomsConfig, SecretKey, Server,
    ServerConfig, ServerEvent,
};

#[derive(Arbitrary, Debug)]
enum Step {
    /// Answer the `pick`th question waiting (`kind` shapes the answer).
    Answer {
        pick: u8,
        kind: u8,
        n: u16,
        again: bool,
    },
    /// Client `who` joins room `room` (of 4 names) with `flags` (create, must create).
    Join {
        who: u8,
        room: u8,
        create: bool,
        must: bool,
    },
    Leave {
        who: u8,
    },
    List {
        who: u8,
    },
    /// Client `who` starts over (a new client, connecting).
    Reconnect {
        who: u8,
    },
    Advance {
        ms: u16,
    },
    Drain,
}

const ROOMS: [&str; 4] = ["red", "blue", "green", "a-much-longer-room-name"];

fn node(n: u16) -> NodeInfo {
    NodeInfo {
        id: ["a", "b", "", "node-with-a-long-id"][usize::from(n % 4)].to_owned(),
        region: if n & 4 == 0 { "eu".into() } else { "us".into() },
        udp: SocketAddr::from(([192, 0, 2, (n % 7) as u8], 7000 + n % 3)),
        tcp: None,
        load: NodeLoad {
            clients: u32::from(n >> 3),
            rooms: u32::from(n >> 8),
            relayed_bytes_per_sec: u64::from(n),
            cpu_percent: n,
        },
        draining: n & 8 != 0,
    }
}

fn answer(kind: u8, n: u16) -> Result<DirectoryAnswer, DirectoryError> {
    Ok(match kind % 10 {
        0 => DirectoryAnswer::Number(n),
        1 => DirectoryAnswer::Nodes {
            nodes: (0..n % 5).map(|k| node(n.wrapping_add(k))).collect(),
            lost: (0..n % 3)
                .map(|k| ROOMS[usize::from(k)].to_owned())
                .collect(),
        },
        2 => DirectoryAnswer::Claim(Claim::Ours),
        3 => DirectoryAnswer::Claim(Claim::Theirs(node(n))),
        4 => DirectoryAnswer::Claim(Claim::Missing),
        5 => DirectoryAnswer::Rooms(
            (0..n % 6)
                .map(|k| ListedRoom {
                    name: ROOMS[usize::from(k % 4)].to_owned(),
                    members: n,
                    max_members: k,
                    has_password: k & 1 == 1,
                    relay_only: k & 2 == 2,
                })
                .collect(),
        ),
        6 => DirectoryAnswer::Ticket(n & 1 == 1),
        7 => DirectoryAnswer::Done,
        8 => return Err(DirectoryError::Unavailable),
        _ => return Err(DirectoryError::Malformed("junk".into())),
    })
}

struct Net {
    server: Server,
    clients: Vec<(SocketAddr, Client)>,
    waiting: Vec<QueryId>,
    numbered: Option<u16>,
    hosts: BTreeSet<u64>,
}

impl Net {
    /// Delivers every datagram at once (both ways) until quiet, collecting questions.
    fn flush(&mut self, now: Instant) {
        let server_addr: SocketAddr = "203.0.113.10:7000".parse().expect("literal");
        let mut buf = [0u8; MAX_DATAGRAM_SIZE];
        for _ in 0..64 {
            let mut any = false;
            while let Some((id, _)) = self.server.poll_directory() {
                self.waiting.push(id);
            }
            while let Some(t) = self.server.poll_transmit(now, &mut buf) {
                any = true;
                if let Some((_, c)) = self.clients.iter_mut().find(|(a, _)| *a == t.dst) {
                    c.handle_datagram(now, server_addr, &buf[..t.len]);
                }
            }
            for (addr, c) in &mut self.clients {
                while let Some(t) = c.poll_transmit(now, &mut buf) {
                    any = true;
                    if t.dst == server_addr {
                        self.server.handle_datagram(now, *addr, &buf[..t.len]);
                    }
                }
                while c.poll_event().is_some() {}
            }
            while let Some(e) = self.server.poll_event() {
                match e {
                    ServerEvent::NodeNumbered { number } => self.numbered = Some(number),
                    ServerEvent::ClientJoined { host_id, .. } => {
                        let fresh = !self.hosts.contains(&host_id.0);
                        if let Some(n) = self.numbered.filter(|_| fresh) {
                            let carried = (host_id.0 >> 48) as u16;
                            assert_eq!(carried, n, "host id without the node");
                        }
                        self.hosts.insert(host_id.0);
                    }
                    _ => {}
                }
            }
            if !any {
                break;
            }
        }
        let names: Vec<String> = self.server.rooms().into_iter().map(|r| r.name).collect();
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "a room twice: {names:?}");
    }
}

fn client(now: Instant, seed: u8) -> Client {
    let mut cfg = ClientConfig::default();
    cfg.nat_discovery = false;
    cfg.direct_paths = false;
    let mut c = Client::new(Arc::new(cfg), [seed; 32], now).expect("config");
    let servers = [
        "203.0.113.10:7000".parse().expect("literal"),
        "192.0.2.1:7000".parse().expect("literal"),
    ];
    c.connect_any(now, &servers, &[]).expect("fresh");
    c
}

fuzz_target!(|steps: Vec<Step>| {
    let epoch = Instant::now();
    let mut now = epoch;
    let mut config = ServerConfig::new(SecretKey::from_bytes([5; 32]));
    config.rooms = Some(RoomsConfig::default());
    let advertise = "203.0.113.10:7000".parse().expect("literal");
    config.cluster = Some(ClusterConfig::new("a", "eu", advertise));
    let server = Server::new(
        Arc::new(config),
        [1; 32],
        now,
        Duration::from_secs(1_800_000_000),
    )
    .expect("config");
    let mut net = Net {
        server,
        clients: Vec::new(),
        waiting: Vec::new(),
        numbered: None,
        hosts: BTreeSet::new(),
    };
    // The node's number first (its first question), so that the clients get in; every other
    // answer is the fuzzer's.
    net.flush(now);
    let first = net.waiting.remove(0);
    net.server
        .handle_directory(now, first, Ok(DirectoryAnswer::Number(7)));
    net.clients = (0..3u8)
        .map(|i| {
            (
                SocketAddr::from(([198, 51, 100, i + 1], 4000)),
                client(now, 10 + i),
            )
        })
        .collect();
    let mut seed = 20u8;
    net.flush(now);
    assert!(
        net.clients.iter().all(|(_, c)| c.is_connected()),
        "the clients got in"
    );
    for step in steps.iter().take(96) {
        match *step {
            Step::Answer {
                pick,
                kind,
                n,
                again,
            } => {
                if !net.waiting.is_empty() {
                    let i = usize::from(pick) % net.waiting.len();
                    let id = if again {
                        net.waiting[i]
                    } else {
                        net.waiting.remove(i)
                    };
                    net.server.handle_directory(now, id, answer(kind, n));
                }
            }
            Step::Join {
                who,
                room,
                create,
                must,
            } => {
                let (_, c) = &mut net.clients[usize::from(who) % 3];
                let name = ROOMS[usize::from(room) % 4];
                let _ = if must {
                    c.create_room(now, name, "", 0)
                } else {
                    c.join_room(now, name, "", create, 0)
                };
            }
            Step::Leave { who } => {
                let (_, c) = &mut net.clients[usize::from(who) % 3];
                let rooms: Vec<_> = c.groups().collect();
                for g in rooms {
                    let _ = c.leave_room(now, g);
                }
            }
            Step::List { who } => {
                let _ = net.clients[usize::from(who) % 3].1.list_rooms(now, 0);
            }
            Step::Reconnect { who } => {
                seed = seed.wrapping_add(1);
                net.clients[usize::from(who) % 3].1 = client(now, seed);
            }
            Step::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms % 5000));
                net.server.handle_timeout(now);
                if let Some(t) = net.server.poll_timeout() {
                    assert!(t.at > now, "a deadline in the past: {}", t.reason);
                }
                for (_, c) in &mut net.clients {
                    c.handle_timeout(now);
                }
            }
            Step::Drain => net.server.drain(now, Duration::from_secs(10)),
        }
        net.flush(now);
        // Questions never answered fail by themselves (the node gives up on each after its
        // answer timeout); the harness keeps the newest to answer, late or not.
        let excess = net.waiting.len().saturating_sub(256);
        net.waiting.drain(..excess);
    }
});
