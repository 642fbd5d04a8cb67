//! Several server addresses (nodes of one cluster, one key): a first connect moves past a
//! silent address, a client whose node goes silent registers with the next one and rejoins
//! its rooms there, relay-only pairs resume with nothing lost, direct pairs never notice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::util::{Net, second_server_addr, server_config};
use crate::{
    Channel, Client, ClientConfig, ClientEvent, ConnectError, DisconnectReason, HostId, Path,
    RoomsConfig, ServerConfig,
};

/// An address no node answers on.
fn dead_addr() -> SocketAddr {
    "203.0.113.99:7000".parse().unwrap()
}

fn cluster_config() -> ServerConfig {
    let mut cfg = server_config();
    cfg.rooms = Some(RoomsConfig::default());
    cfg
}

/// `n` fresh clients (not connected) and the second node, both nodes with the same key.
fn cluster(n: usize, client: ClientConfig) -> Net {
    let mut net = Net::new(cluster_config(), client, n);
    net.add_second_server(cluster_config(), 2);
    net
}

fn client_config(direct: bool) -> ClientConfig {
    let mut c = ClientConfig::default();
    c.nat_discovery = false;
    c.direct_paths = direct;
    c
}

fn hellos_to(net: &Net, to: SocketAddr) -> usize {
    net.log
        .iter()
        .filter(|s| {
            s.to == to && s.bytes.first() == Some(&crate::wire::handshake::KIND_CLIENT_HELLO)
        })
        .count()
}

#[test]
fn a_first_connect_moves_past_an_address_that_does_not_answer_to_the_next() {
    let mut net = cluster(1, client_config(false));
    let (now, b) = (net.now, second_server_addr());
    net.clients[0]
        .client
        .connect_any(now, &[dead_addr(), b], &[])
        .unwrap();
    assert!(net.drive_until(Duration::from_secs(10), |n| {
        n.clients[0].client.is_connected()
    }));
    let c = &net.clients[0].client;
    assert_eq!(c.server_addr(), Some(b));
    // The dead address had its answer timeout (4 s), hellos retransmitted meanwhile.
    let connected_at = net.elapsed();
    assert!(
        connected_at >= crate::DEFAULT_SERVER_ANSWER_TIMEOUT
            && connected_at < crate::DEFAULT_SERVER_ANSWER_TIMEOUT + Duration::from_secs(1),
        "connected at {connected_at:?}"
    );
    assert!(hellos_to(&net, dead_addr()) > 1);
    assert_eq!(net.second.as_ref().unwrap().server.clients().count(), 1);
    assert_eq!(net.server.clients().count(), 0);
}

#[test]
fn connect_timeout_bounds_the_whole_list_which_is_tried_round_and_round() {
    let mut cfg = client_config(false);
    cfg.connect_timeout = Duration::from_secs(10);
    cfg.server_answer_timeout = Duration::from_secs(3);
    let mut net = cluster(1, cfg);
    let other: SocketAddr = "203.0.113.98:7000".parse().unwrap();
    let now = net.now;
    net.clients[0]
        .client
        .connect_any(now, &[dead_addr(), other], &[])
        .unwrap();
    assert!(net.drive_until(Duration::from_secs(20), |n| {
        n.clients[0].client.is_closed()
    }));
    assert_eq!(net.elapsed(), Duration::from_secs(10));
    let reasons = net.disconnects(0);
    assert_eq!(reasons, vec![DisconnectReason::ConnectTimedOut]);
    // 0–3 s the first, 3–6 s the second, 6–9 s the first again, 9–10 s the second.
    let firsts: Vec<Duration> = net
        .log
        .iter()
        .filter(|s| s.bytes.first() == Some(&crate::wire::handshake::KIND_CLIENT_HELLO))
        .scan(None, |last, s| {
            let changed = *last != Some(s.to);
            *last = Some(s.to);
            Some(changed.then_some((s.at, s.to)))
        })
        .flatten()
        .map(|(at, _)| at)
        .collect();
    assert_eq!(
        firsts,
        [0, 3, 6, 9].map(Duration::from_secs).to_vec(),
        "when each address was first tried"
    );
}

#[test]
fn a_server_list_must_have_one_to_max_addresses() {
    let mut net = cluster(1, client_config(false));
    let now = net.now;
    let c = &mut net.clients[0].client;
    let max = Client::MAX_SERVERS;
    assert_eq!(
        c.connect_any(now, &[], &[]),
        Err(ConnectError::ServerList { max })
    );
    let many = vec![dead_addr(); max + 1];
    assert_eq!(
        c.connect_any(now, &many, &[]),
        Err(ConnectError::ServerList { max })
    );
    assert!(c.connect_any(now, &many[..max], &[]).is_ok());
}

/// A ticket is sealed with a key derived from the server key: any node of the cluster reads
/// it. Its single use is remembered by each node on its own, so it is good once *per node*
/// (once in the whole cluster needs the cluster's shared directory).
#[test]
fn a_ticket_from_one_node_is_good_on_another_with_the_key_once_per_node() {
    let mut net = cluster(1, client_config(false));
    net.connect_all(&[]);
    assert!(net.drive_until(Duration::from_secs(1), |n| {
        n.clients[0].client.is_connected()
    }));
    let a = net.hosts()[0];
    let ticket = net.clients[0].client.test_ticket().unwrap();
    let now = net.now;
    net.clients[0].client.disconnect(now, 0);
    net.run_for(Duration::from_millis(100));
    let present = |net: &mut Net, to: SocketAddr, seed: u8| {
        let mut c = Client::new(Arc::new(client_config(false)), [seed; 32], net.now).unwrap();
        c.test_set_ticket(ticket.clone());
        c.connect(net.now, to, &[]).unwrap();
        net.clients[0].client = c;
        assert!(net.drive_until(Duration::from_secs(2), |n| {
            n.clients[0].client.is_connected()
        }));
        net.clients[0].client.host_id().unwrap()
    };
    let b = second_server_addr();
    assert_eq!(present(&mut net, b, 50), a, "another node reads the ticket");
    assert_ne!(present(&mut net, b, 51), a, "once on that node");
    let second = net.second.as_ref().unwrap().server.stats();
    assert_eq!(
        (second.sessions_resumed, second.dropped.bad_tickets),
        (1, 1)
    );
    // The node that issued it never saw it presented: it takes it once more.
    let first = net.server_addr;
    assert_eq!(present(&mut net, first, 52), a);
    assert_eq!(net.server.stats().sessions_resumed, 1);
}

/// Messages each way on each pair of [`Moving`].
const N: u32 = 300;
/// [`Moving`]'s pairs, (sender, receiver): 0 and 1 relay-only, 2 and 3 direct.
const PAIRS: [(usize, usize); 4] = [(0, 1), (1, 0), (2, 3), (3, 2)];

/// What the two "node lost" tests share: four clients on node A (listing A then B), 0 and 1
/// relay-only in room "arena", 2 and 3 on a direct path in room "lan", each pair about to
/// exchange [`N`] reliable ordered messages both ways.
struct Moving {
    net: Net,
    hosts: Vec<HostId>,
    a: SocketAddr,
    b: SocketAddr,
    /// Path changes of clients 2 and 3 once direct (there must be no more).
    paths_before: Vec<usize>,
    /// Messages sent so far on each pair of [`PAIRS`].
    next: [u32; 4],
}

impl Moving {
    /// Connected to A, in their rooms, the direct pair direct.
    fn start() -> Self {
        let mut net = cluster(4, client_config(false));
        for i in 2..4 {
            let cfg = Arc::new(client_config(true));
            net.clients[i].client = Client::new(cfg, [20 + i as u8; 32], net.now).unwrap();
        }
        let (a, b) = (net.server_addr, second_server_addr());
        net.connect_all_any(&[a, b]);
        let hosts = net.hosts();
        for (i, room) in [(0, "arena"), (1, "arena"), (2, "lan"), (3, "lan")] {
            let now = net.now;
            (net.clients[i].client)
                .join_room(now, room, "", true, 4)
                .unwrap();
            net.run_for(Duration::from_millis(200));
        }
        assert!(
            net.drive_until(Duration::from_secs(3), |n| direct_pair(n, &hosts)),
            "no direct path"
        );
        let paths_before = (2..4).map(|i| path_changes(&net, i)).collect();
        Self {
            net,
            hosts,
            a,
            b,
            paths_before,
            next: [0; 4],
        }
    }

    /// Sends on each pair what its send buffer takes, up to [`N`].
    fn send_due(&mut self) {
        for (k, &(i, j)) in PAIRS.iter().enumerate() {
            if self.next[k] < N {
                let now = self.net.now;
                let payload = self.next[k].to_be_bytes();
                let c = &mut self.net.clients[i].client;
                if c.send(now, self.hosts[j], Channel::RELIABLE_ORDERED, &payload)
                    .is_ok()
                {
                    self.next[k] += 1;
                }
            }
        }
    }

    /// Every pair has sent a third of its messages: the moment to take A away.
    fn a_third_sent(&self) -> bool {
        self.next.iter().all(|&n| n >= N / 3)
    }

    fn assert_direct_pair_holds(&self) {
        assert!(
            direct_pair(&self.net, &self.hosts),
            "the direct pair left its path at {:?}",
            self.net.elapsed()
        );
    }

    /// Every message of every pair arrived.
    fn all_received(&self) -> bool {
        (PAIRS.iter()).all(|&(i, j)| received(&self.net, j, self.hosts[i]).len() == N as usize)
    }

    /// The end both tests share: every client on B with its host id, nothing dropped or
    /// expired, its pair carried over; every message once and in order; the direct pair's
    /// path untouched; B resumed the four sessions and relayed the relay-only pair.
    fn assert_on_b_with_nothing_lost(&self) {
        let (net, hosts) = (&self.net, &self.hosts);
        for (i, c) in net.clients.iter().enumerate() {
            assert_eq!(c.client.server_addr(), Some(self.b), "client {i} ends on B");
            assert_eq!(c.client.host_id(), Some(hosts[i]), "client {i} kept its id");
            assert!(
                !net.events_since(i, 0).iter().any(|e| matches!(
                    e,
                    ClientEvent::PeerDropped { .. } | ClientEvent::MessageExpired { .. }
                )),
                "client {i}: nothing dropped or expired"
            );
            assert_eq!(c.client.stats().pairs_carried_over, 1, "client {i}");
        }
        for &(i, j) in &PAIRS {
            assert_eq!(
                received(net, j, hosts[i]),
                (0..N).collect::<Vec<_>>(),
                "{i} -> {j}: once each, in order"
            );
        }
        for (k, i) in (2..4).enumerate() {
            assert_eq!(
                path_changes(net, i),
                self.paths_before[k],
                "client {i}'s path"
            );
        }
        let second = net.second.as_ref().unwrap();
        assert_eq!(second.server.stats().sessions_resumed, 4);
        assert!(
            second.server.stats().relayed_packets > 0,
            "B relayed the pair"
        );
    }
}

/// Clients 2 and 3 of [`Moving`] are on a direct path to each other, both ways.
fn direct_pair(n: &Net, hosts: &[HostId]) -> bool {
    [(2, 3), (3, 2)].iter().all(|&(i, j)| {
        matches!(
            n.clients[i].client.peer_stats(hosts[j]).map(|s| s.path),
            Some(Path::Direct(_))
        )
    })
}

/// Four clients on node A (listing A then B): 0 and 1 relay-only in room "arena", 2 and 3
/// on a direct path in room "lan", reliable ordered messages both ways in each pair. A goes
/// silent midway. Every client times out, registers with B at once with its ticket (same
/// host id) and rejoins its room; B introduces the pairs again: the relay-only pair resumes
/// with its reliability state (every message delivered once, in order, none expired, no
/// peer dropped), the direct pair never leaves its path.
#[test]
fn when_its_node_goes_silent_every_client_moves_to_the_next_and_no_message_is_lost() {
    let mut m = Moving::start();
    let a = m.a;
    let mut silenced = None;
    while m.net.elapsed() < Duration::from_secs(90) {
        m.send_due();
        m.net.run_for(Duration::from_millis(50));
        if silenced.is_none() && m.a_third_sent() {
            // Node A goes silent (crashed, cut off): nothing in or out, ever again.
            m.net.filter = Some(Box::new(move |s| s.from != a && s.to != a));
            silenced = Some(m.net.elapsed());
        }
        m.assert_direct_pair_holds();
        if m.all_received() && m.net.clients.iter().all(|c| c.client.is_connected()) {
            break;
        }
    }
    assert!(silenced.is_some());
    for i in 0..4 {
        let events = m.net.events_since(i, 0);
        let disconnects = m.net.disconnects(i);
        assert_eq!(disconnects, vec![DisconnectReason::TimedOut], "client {i}");
        let connects = events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Connected { .. }))
            .count();
        assert_eq!(connects, 2, "client {i}: on A, then on B");
    }
    m.assert_on_b_with_nothing_lost();
}

fn received(net: &Net, at: usize, from: HostId) -> Vec<u32> {
    net.peer_messages(at)
        .iter()
        .filter(|(f, _)| *f == from)
        .map(|(_, p)| u32::from_be_bytes(p[..4].try_into().unwrap()))
        .collect()
}

fn path_changes(net: &Net, i: usize) -> usize {
    net.clients[i]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, ClientEvent::PathChanged { .. }))
        .count()
}

/// Only client 0 loses node A (cut off from it; client 1 still reaches it): 0 moves to B
/// and rejoins the room there, alone, while 1 stays in the room on A. The pair cannot
/// resume across nodes (that needs the cluster's directory), so each side drops it in the
/// end, and every message 0 sent is either delivered to 1 or reported expired to 0: none is
/// lost silently.
#[test]
fn a_pair_split_across_nodes_reports_every_undelivered_message_expired() {
    let mut net = cluster(2, client_config(false));
    let (a, b) = (net.server_addr, second_server_addr());
    net.connect_all_any(&[a, b]);
    let hosts = net.hosts();
    net.join_each(2, "arena");
    let zero = net.clients[0].addr;
    let mut sent = Vec::new();
    let mut cut = false;
    while net.elapsed() < Duration::from_secs(60) {
        if sent.len() < 400 {
            let (now, n) = (net.now, sent.len() as u32);
            if let Ok(id) = net.clients[0].client.send(
                now,
                hosts[1],
                Channel::RELIABLE_ORDERED,
                &n.to_be_bytes(),
            ) {
                sent.push(id);
            }
        }
        net.run_for(Duration::from_millis(50));
        if !cut && sent.len() >= 100 {
            net.filter = Some(Box::new(move |s| {
                !((s.from == zero && s.to == a) || (s.from == a && s.to == zero))
            }));
            cut = true;
        }
    }
    assert_eq!(net.clients[0].client.server_addr(), Some(b));
    assert_eq!(net.clients[1].client.server_addr(), Some(a));
    let delivered = received(&net, 1, hosts[0]);
    let n = delivered.len();
    assert_eq!(delivered, (0..n as u32).collect::<Vec<_>>(), "in order");
    assert!(
        n >= 100 && n < sent.len(),
        "{n} of {} delivered",
        sent.len()
    );
    let events = net.events_since(0, 0);
    let expired: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MessageExpired { message_id, .. } => Some(*message_id),
            _ => None,
        })
        .collect();
    for (k, id) in sent.iter().enumerate() {
        assert!(
            k < n || expired.contains(id),
            "message {k} was neither delivered nor reported expired"
        );
    }
    assert!(events.iter().any(|e| matches!(
        e,
        ClientEvent::PeerDropped { peer, reason: crate::PeerDropReason::ServerLost } if *peer == hosts[1]
    )));
}

/// Four clients on node A (listing A then B): 0 and 1 relay-only in room "arena", 2 and 3 on
/// a direct path in room "lan", reliable ordered messages both ways in each pair. A drains
/// midway. Every client hears it, closes its session with A at once (A sees each leave:
/// a `pierce server` drain ends early) and registers with B with its ticket (same host id),
/// within a few round trips, not after an idle timeout; B introduces the pairs again, the
/// relay-only pair resumes with nothing lost, the direct pair never leaves its path.
#[test]
fn when_its_node_drains_every_client_moves_to_the_next_at_once_and_no_message_is_lost() {
    let mut m = Moving::start();
    let b = m.b;
    let mut drained = None;
    let mut all_on_b = None;
    while m.net.elapsed() < Duration::from_secs(60) {
        m.send_due();
        m.net.run_for(Duration::from_millis(10));
        if drained.is_none() && m.a_third_sent() {
            let now = m.net.now;
            m.net.server.drain(now, Duration::from_secs(30));
            drained = Some(m.net.elapsed());
        }
        let on_b = (m.net.clients.iter())
            .all(|c| c.client.is_connected() && c.client.server_addr() == Some(b));
        if drained.is_some() && all_on_b.is_none() && on_b {
            all_on_b = Some(m.net.elapsed());
        }
        m.assert_direct_pair_holds();
        if m.all_received() && all_on_b.is_some() {
            break;
        }
    }
    let (drained, all_on_b) = (drained.unwrap(), all_on_b.expect("not all on B"));
    // Draining said (one way), Close and a handshake with B (two round trips), the rejoin:
    // a few 20 ms round trips, nowhere near an idle timeout.
    let moved = all_on_b - drained;
    assert!(moved < Duration::from_millis(200), "moved in {moved:?}");
    let left: Vec<_> = (m.net.server_events.iter())
        .filter_map(|(at, e)| match e {
            crate::ServerEvent::ClientLeft { host_id, reason } => Some((*at, *host_id, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(left.len(), 4, "A saw every client leave: {left:?}");
    for (at, host, reason) in &left {
        assert_eq!(*reason, crate::LeaveReason::Closed(0), "{host}");
        assert!(
            *at - drained < Duration::from_millis(100),
            "{host} left at {at:?}"
        );
    }
    assert_eq!(m.net.server.clients().count(), 0);
    for i in 0..4 {
        let events = m.net.events_since(i, 0);
        let lifecycle: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Connected { .. } => Some("connected"),
                ClientEvent::ServerDraining { .. } => Some("draining"),
                ClientEvent::Disconnected {
                    reason: DisconnectReason::ServerDraining,
                } => Some("moving"),
                ClientEvent::Disconnected { .. } => Some("disconnected"),
                _ => None,
            })
            .collect();
        assert_eq!(
            lifecycle,
            ["connected", "draining", "moving", "connected"],
            "client {i}"
        );
    }
    m.assert_on_b_with_nothing_lost();
}

/// A node that is draining refuses new clients: a first connect goes on to the next address
/// at once (no answer timeout); when every address refuses, the connect fails with the
/// refusal at once, not at the connect timeout.
#[test]
fn a_first_connect_refused_by_a_draining_node_goes_on_to_the_next() {
    let mut net = cluster(2, client_config(false));
    let (now, a, b) = (net.now, net.server_addr, second_server_addr());
    net.server.drain(now, Duration::from_secs(30));
    net.clients[0]
        .client
        .connect_any(now, &[a, b], &[])
        .unwrap();
    assert!(net.drive_until(Duration::from_secs(1), |n| {
        n.clients[0].client.is_connected()
    }));
    assert!(
        net.elapsed() < Duration::from_millis(200),
        "{:?}",
        net.elapsed()
    );
    assert_eq!(net.clients[0].client.server_addr(), Some(b));
    assert!(
        !net.events_since(0, 0)
            .iter()
            .any(|e| matches!(e, ClientEvent::Disconnected { .. })),
        "the refusal is not the end"
    );
    // Both nodes draining: refused everywhere, the attempt ends there.
    let now = net.now;
    net.second
        .as_mut()
        .unwrap()
        .server
        .drain(now, Duration::from_secs(30));
    let start = net.elapsed();
    net.clients[1]
        .client
        .connect_any(now, &[a, b], &[])
        .unwrap();
    assert!(net.drive_until(Duration::from_secs(5), |n| {
        n.clients[1].client.is_closed()
    }));
    assert!(net.elapsed() - start < Duration::from_millis(200));
    let reasons = net.disconnects(1);
    assert_eq!(
        reasons,
        vec![DisconnectReason::Rejected(crate::RejectReason::Draining)]
    );
}

/// With one address a draining server's clients do not move: they hear `ServerDraining`
/// and stay until the server closes them.
#[test]
fn with_one_address_a_client_stays_on_a_draining_node() {
    let mut net = cluster(1, client_config(false));
    let (now, a) = (net.now, net.server_addr);
    net.clients[0].client.connect_any(now, &[a], &[]).unwrap();
    assert!(net.drive_until(Duration::from_secs(1), |n| {
        n.clients[0].client.is_connected()
    }));
    let now = net.now;
    net.server.drain(now, Duration::from_secs(30));
    net.run_for(Duration::from_secs(2));
    let c = &net.clients[0].client;
    assert!(c.is_connected());
    assert_eq!(c.server_addr(), Some(a));
    let events = net.events_since(0, 0);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::ServerDraining { .. }))
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ClientEvent::Disconnected { .. }))
    );
}
