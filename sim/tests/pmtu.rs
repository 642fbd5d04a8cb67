//! Path-MTU discovery (RFC 8899) per path: a 1500-byte path reaches the 1452-byte ceiling, a
//! tunnel's smaller MTU is found without black-holing, an MTU that falls mid-transfer is
//! detected and every message still arrives, and the relay path counts its header while a
//! direct path keeps its own size.
//!
//! Every datagram the links or the core drop for its size is counted ([`LinkStats`]
//! `dropped_mtu`, [`NetStats`] `mtu`); where the MTU is fixed, those drops must be exactly the
//! probes the senders declared lost: no data packet ever exceeded what its path proved.

use std::time::Duration;

use pierce_core::{
    BASE_DATAGRAM_SIZE, Channel, ClientConfig, ClientEvent, HostId, MAX_DATAGRAM_SIZE, Path,
    PeerStats,
};
use pierce_sim::{
    Action, Direction, Edge, LinkConfig, LinkProfile, NatConfig, Scenario, Sim, UDP_IPV4_OVERHEAD,
    seed_or,
};

const SECOND: Duration = Duration::from_secs(1);
const MIB: usize = 1 << 20;
/// The relay header in front of a peer packet on its way to the server.
const RELAY_HEADER: usize = 32;
/// How close below a path's real limit the search may stop (`SEARCH_PRECISION`).
const PRECISION: usize = 16;

/// 10 ms each way, 20 Mbit/s, clean: numbers, not luck.
fn link(mtu: usize) -> LinkProfile {
    LinkProfile::symmetric(LinkConfig {
        latency: Duration::from_millis(10),
        rate: Some(20_000_000 / 8),
        queue_bytes: 256 << 10,
        mtu,
        ..LinkConfig::default()
    })
}

fn stats(sim: &Sim, name: &str, peer: HostId) -> PeerStats {
    sim.client(name)
        .peer_stats(peer)
        .unwrap_or_else(|| sim.fail(format!("{name} has no peer {peer:?}")))
}

/// The PLPMTU of `name`'s path to `peer` and its probes lost so far (zeros before the pair
/// exists).
fn mtu(sim: &Sim, name: &str, peer: HostId) -> (usize, u64) {
    sim.client(name)
        .peer_stats(peer)
        .map_or((0, 0), |s| (s.path_mtu, s.mtu_probes_lost))
}

fn direct(sim: &Sim, name: &str, peer: HostId) -> bool {
    matches!(sim.peer_path(name, peer), Some(Path::Direct(_)))
}

/// Datagrams dropped anywhere for their size.
fn mtu_drops(sim: &Sim, names: &[&str]) -> u64 {
    let links: u64 = names
        .iter()
        .chain(std::iter::once(&pierce_sim::SERVER))
        .flat_map(|n| [Direction::Up, Direction::Down].map(|d| sim.link_stats(n, d)))
        .map(|l| l.dropped_mtu)
        .sum();
    links + sim.net_stats().mtu
}

/// Bytes of the payloads `name` got from `from`.
fn received_bytes(sim: &Sim, name: &str, from: HostId) -> usize {
    sim.peer_payloads(name, from).iter().map(|p| p.len()).sum()
}

/// Sends a 1 MiB blob from `a` to `b` (reliable, ordered) and runs until it arrives; returns
/// the time it took.
fn blob(sim: &mut Sim, a: &str, b: &str, hb: HostId, ha: HostId) -> Duration {
    let before = received_bytes(sim, b, ha);
    let start = sim.elapsed();
    let payload = vec![0x5a; MIB];
    sim.with_client(a, |c, now| {
        c.send(now, hb, Channel::RELIABLE_ORDERED, &payload)
    })
    .expect("queued");
    sim.eventually("the blob arrives", 30 * SECOND, |s| {
        received_bytes(s, b, ha) == before + MIB
    });
    sim.elapsed() - start
}

fn open_pair(seed: u64, mtu: usize, config: ClientConfig) -> Sim {
    Scenario::new(seed)
        .client("a", Edge::Open)
        .client("b", Edge::Open)
        .link(link(mtu))
        .client_config(config)
        .build()
}

/// Packets `a` needed for a 1 MiB blob to `b` on a direct 1500-byte path, with `config`;
/// and the path's PLPMTU.
fn direct_blob(config: ClientConfig) -> (u64, usize, Duration, PeerStats) {
    // On clean 1500-byte links every path settles at the configured ceiling.
    let target = config.max_datagram_size;
    let mut sim = open_pair(seed_or(1), 1500, config);
    let (ha, hb) = sim.group_pair("a", "b");
    sim.eventually("a and b go direct", 5 * SECOND, |s| {
        direct(s, "a", hb) && direct(s, "b", ha)
    });
    // Discovery on the direct path: base, then the ceiling.
    let start = sim.elapsed();
    sim.eventually("the direct path's discovery settles", 5 * SECOND, |s| {
        mtu(s, "a", hb).0 == target
    });
    eprintln!(
        "direct path at {target} B {:?} after going direct",
        sim.elapsed() - start
    );
    sim.advance(SECOND);
    let before = stats(&sim, "a", hb).packets_sent;
    let took = blob(&mut sim, "a", "b", hb, ha);
    let s = stats(&sim, "a", hb);
    sim.check(mtu_drops(&sim, &["a", "b"]) == 0, || {
        "a 1500-byte path dropped something for its size".to_owned()
    });
    (s.packets_sent - before, s.path_mtu, took, s)
}

#[test]
fn a_direct_ethernet_path_reaches_1452_and_a_blob_needs_fewer_packets() {
    let (probed, mtu, took, s) = direct_blob(ClientConfig::default());
    let mut base = ClientConfig::default();
    base.max_datagram_size = BASE_DATAGRAM_SIZE;
    let (unprobed, base_mtu, base_took, base_s) = direct_blob(base);
    eprintln!(
        "1 MiB direct: {probed} packets at {mtu} B in {took:?} ({} probes) vs {unprobed} at \
         {base_mtu} B in {base_took:?} ({} probes)",
        s.mtu_probes_sent, base_s.mtu_probes_sent
    );
    assert_eq!(
        mtu, MAX_DATAGRAM_SIZE,
        "IPv4 over Ethernet carries 1472: the ceiling"
    );
    assert_eq!(base_mtu, BASE_DATAGRAM_SIZE, "probing off: the base");
    assert_eq!(base_s.mtu_probes_sent, 0);
    // One probe of the base and one of the ceiling on the direct path (and as many on the
    // relay path while the pair was relayed), none lost.
    assert!(
        (2..=4).contains(&s.mtu_probes_sent),
        "{} probes",
        s.mtu_probes_sent
    );
    assert_eq!(s.mtu_probes_lost, 0);
    // A fragment of a 1452-byte packet carries 1339 bytes against 1087 at 1200: 19% fewer.
    assert!(
        probed * 100 <= unprobed * 83,
        "{probed} packets at {mtu} vs {unprobed} at {base_mtu}"
    );
}

#[test]
fn behind_a_1280_byte_tunnel_a_pair_settles_just_below_it_and_never_black_holes() {
    let mut sim = open_pair(seed_or(2), 1280, ClientConfig::default());
    let (ha, hb) = sim.group_pair("a", "b");
    sim.eventually("a and b go direct", 5 * SECOND, |s| {
        direct(s, "a", hb) && direct(s, "b", ha)
    });
    let start = sim.elapsed();
    let limit = 1280 - UDP_IPV4_OVERHEAD;
    sim.eventually("the search completes", 10 * SECOND, |s| {
        mtu(s, "a", hb).0 > BASE_DATAGRAM_SIZE
            && mtu(s, "b", ha).0 > BASE_DATAGRAM_SIZE
            && mtu(s, "a", hb).1 >= 9
    });
    let converged = sim.elapsed() - start;
    sim.advance(3 * SECOND);
    let took = blob(&mut sim, "a", "b", hb, ha);
    sim.advance(SECOND);
    let (sa, sb) = (stats(&sim, "a", hb), stats(&sim, "b", ha));
    eprintln!(
        "1280-byte tunnel: a at {} B, b at {} B, {} probes ({} lost) by a, converged in \
         {converged:?}, 1 MiB in {took:?}",
        sa.path_mtu, sb.path_mtu, sa.mtu_probes_sent, sa.mtu_probes_lost
    );
    for (who, s) in [("a", sa), ("b", sb)] {
        assert!(
            (limit - PRECISION..=limit).contains(&s.path_mtu),
            "{who}: {} for a {limit}-byte limit",
            s.path_mtu
        );
        assert_eq!(s.mtu_black_holes, 0, "{who} black-holed");
    }
    // Only probes were ever too large: every datagram dropped for its size is a probe its
    // sender declared lost.
    let probes_lost: u64 = sa.mtu_probes_lost + sb.mtu_probes_lost;
    assert_eq!(mtu_drops(&sim, &["a", "b"]), probes_lost);
    assert!(converged < 5 * SECOND, "{converged:?}");
}

#[test]
fn an_mtu_that_falls_mid_transfer_is_a_black_hole_found_and_nothing_is_lost() {
    let mut sim = open_pair(seed_or(3), 1500, ClientConfig::default());
    let (ha, hb) = sim.group_pair("a", "b");
    sim.eventually("a and b go direct", 5 * SECOND, |s| {
        direct(s, "a", hb) && direct(s, "b", ha)
    });
    sim.eventually("a reaches the ceiling", 5 * SECOND, |s| {
        mtu(s, "a", hb).0 == MAX_DATAGRAM_SIZE
    });
    // 64 messages of 32 KiB, reliable and ordered.
    let n = 64u32;
    for i in 0..n {
        let mut m = vec![0u8; 32 << 10];
        m[..4].copy_from_slice(&i.to_be_bytes());
        sim.with_client("a", |c, now| c.send(now, hb, Channel::RELIABLE_ORDERED, &m))
            .expect("queued");
    }
    // A quarter of the way through, the route changes: a tunnel with a 1280-byte MTU.
    sim.eventually("a quarter arrives", 10 * SECOND, |s| {
        s.peer_payloads("b", ha).len() >= n as usize / 4
    });
    let changed = sim.elapsed();
    sim.apply(Action::set_mtu("a", 1280)).expect("set_mtu");
    sim.eventually("a finds the black hole", 10 * SECOND, |s| {
        stats(s, "a", hb).mtu_black_holes >= 1
    });
    let found = sim.elapsed() - changed;
    sim.eventually("every message is delivered or expired", 60 * SECOND, |s| {
        let expired = s
            .client_events("a")
            .filter(|(_, e)| matches!(e, ClientEvent::MessageExpired { .. }))
            .count();
        s.peer_payloads("b", ha).len() + expired == n as usize
    });
    let done = sim.elapsed() - changed;
    sim.advance(5 * SECOND);
    let s = stats(&sim, "a", hb);
    let got: Vec<u32> = sim
        .peer_payloads("b", ha)
        .iter()
        .map(|p| u32::from_be_bytes(p[..4].try_into().expect("4 bytes")))
        .collect();
    eprintln!(
        "MTU 1500 -> 1280 mid-transfer: black hole found after {found:?}, all {} messages in \
         {done:?} more, now at {} B ({} probes, {} lost, {} black holes)",
        got.len(),
        s.path_mtu,
        s.mtu_probes_sent,
        s.mtu_probes_lost,
        s.mtu_black_holes
    );
    // Nothing expired (no deadlines): every message arrived, in order, once.
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    let limit = 1280 - UDP_IPV4_OVERHEAD;
    assert!(
        (limit - PRECISION..=limit).contains(&s.path_mtu),
        "settled at {}",
        s.path_mtu
    );
    // Two probe timeouts after the first lost full-size packet, give or take the RTT.
    assert!(found < 2 * SECOND, "{found:?}");
}

#[test]
fn the_relay_path_counts_its_header_and_each_direction_its_own_legs() {
    // Relay only; a's access link is a 1400-byte tunnel: a datagram a sends the server (relay
    // header + peer packet) is at most 1372 bytes; what the server sends a (a 16-byte
    // header + peer packet) too.
    let mut config = ClientConfig::default();
    config.direct_paths = false;
    let mut sim = Scenario::new(seed_or(4))
        .client("a", Edge::Open)
        .client("b", Edge::Open)
        .link(link(1500))
        .host_link("a", link(1400))
        .client_config(config)
        .build();
    let (ha, hb) = sim.group_pair("a", "b");
    let limit = 1400 - UDP_IPV4_OVERHEAD;
    sim.eventually("both relay paths are probed", 10 * SECOND, |s| {
        mtu(s, "a", hb).0 > BASE_DATAGRAM_SIZE
            && mtu(s, "b", ha).0 > BASE_DATAGRAM_SIZE
            && mtu(s, "a", hb).1 >= 3
            && mtu(s, "b", ha).1 >= 3
    });
    sim.advance(3 * SECOND);
    let took = blob(&mut sim, "a", "b", hb, ha);
    let back = blob(&mut sim, "b", "a", ha, hb);
    sim.advance(SECOND);
    let (sa, sb) = (stats(&sim, "a", hb), stats(&sim, "b", ha));
    eprintln!(
        "relay, a behind 1400: a -> b at {} B ({} probes, {} lost), b -> a at {} B ({} probes, \
         {} lost); 1 MiB each way in {took:?} / {back:?}",
        sa.path_mtu,
        sa.mtu_probes_sent,
        sa.mtu_probes_lost,
        sb.path_mtu,
        sb.mtu_probes_sent,
        sb.mtu_probes_lost
    );
    assert_eq!(sa.path, Path::Relay);
    // a's datagrams carry the 32-byte relay header over a's link.
    assert!(
        (limit - PRECISION..=limit).contains(&sa.path_mtu),
        "a: {}",
        sa.path_mtu
    );
    // b's reach a behind the server's 16-byte header: 16 bytes more than a's, counted with
    // b's own 32-byte header.
    let b_limit = limit - 16 + RELAY_HEADER;
    assert!(
        (b_limit - PRECISION..=b_limit).contains(&sb.path_mtu),
        "b: {}",
        sb.path_mtu
    );
    assert_eq!(sa.mtu_black_holes + sb.mtu_black_holes, 0);
    assert_eq!(
        mtu_drops(&sim, &["a", "b"]),
        sa.mtu_probes_lost + sb.mtu_probes_lost,
        "a relayed data packet was too large for its path"
    );
}

#[test]
fn going_direct_uses_the_direct_paths_own_size_not_the_relays() {
    // The relay path (through the server) carries 1500-byte packets; the direct path between
    // a and b only 1280 (a tunnel between them).
    let mut sim = Scenario::new(seed_or(5))
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .client("b", Edge::nat(NatConfig::port_restricted()))
        .link(link(1500))
        .at(Duration::ZERO, Action::path_mtu("a", "b", 1280))
        // Relayed first: no direct path until the relay path has found its size.
        .at(Duration::ZERO, Action::partition("a", "b"))
        .build();
    let (ha, hb) = sim.group_pair("a", "b");
    sim.eventually("the relay path reaches the ceiling", 10 * SECOND, |s| {
        mtu(s, "a", hb).0 == MAX_DATAGRAM_SIZE
    });
    let relay_mtu = mtu(&sim, "a", hb).0;
    sim.check(!direct(&sim, "a", hb), || "direct too soon".to_owned());
    sim.apply(Action::heal("a", "b")).expect("heal");
    // (The path agent tries again 35 s after its first attempt failed.)
    sim.eventually("a and b go direct", 60 * SECOND, |s| {
        direct(s, "a", hb) && direct(s, "b", ha)
    });
    let at_switch = stats(&sim, "a", hb).path_mtu;
    sim.advance(3 * SECOND);
    let took = blob(&mut sim, "a", "b", hb, ha);
    sim.advance(SECOND);
    let s = stats(&sim, "a", hb);
    eprintln!(
        "relay at {relay_mtu} B, then direct from {at_switch} B to {} B ({} probes, {} lost); \
         1 MiB in {took:?}",
        s.path_mtu, s.mtu_probes_sent, s.mtu_probes_lost
    );
    assert_eq!(
        relay_mtu, MAX_DATAGRAM_SIZE,
        "the relay path proved the ceiling first"
    );
    assert!(
        at_switch <= BASE_DATAGRAM_SIZE,
        "the direct path starts at the base"
    );
    assert!(direct(&sim, "a", hb));
    let limit = 1280 - UDP_IPV4_OVERHEAD;
    assert!(
        (limit - PRECISION..=limit).contains(&s.path_mtu),
        "direct: {}",
        s.path_mtu
    );
    assert_eq!(s.mtu_black_holes, 0);
    // Dropped for size only in the core between a and b, and only probes.
    let sb = stats(&sim, "b", ha);
    assert_eq!(
        mtu_drops(&sim, &["a", "b"]),
        s.mtu_probes_lost + sb.mtu_probes_lost,
        "a data packet was too large for the direct path"
    );
    assert!(sim.net_stats().mtu > 0, "the direct path's limit was met");
}

#[test]
fn over_a_tcp_stream_the_relay_path_stays_at_the_base() {
    // a reaches the server over TCP only; b over UDP. Relay only.
    let mut tcp = ClientConfig::default();
    tcp.transport = pierce_core::Transport::Tcp;
    tcp.direct_paths = false;
    let mut udp = ClientConfig::default();
    udp.direct_paths = false;
    let mut sim = Scenario::new(seed_or(6))
        .client_with("a", Edge::Open, tcp)
        .client_with("b", Edge::Open, udp)
        .link(link(1500))
        .build();
    let (ha, hb) = sim.group_pair("a", "b");
    sim.eventually("b's relay path reaches the ceiling", 10 * SECOND, |s| {
        mtu(s, "b", ha).0 == MAX_DATAGRAM_SIZE
    });
    sim.advance(3 * SECOND);
    let took = blob(&mut sim, "a", "b", hb, ha);
    let back = blob(&mut sim, "b", "a", ha, hb);
    let (sa, sb) = (stats(&sim, "a", hb), stats(&sim, "b", ha));
    eprintln!(
        "a over TCP at {} B ({} probes), b over UDP at {} B ({} probes); 1 MiB in {took:?} / \
         {back:?}",
        sa.path_mtu, sa.mtu_probes_sent, sb.path_mtu, sb.mtu_probes_sent
    );
    // The stream's side: only the base probe went (down the stream); nothing above it.
    assert_eq!(sa.path_mtu, BASE_DATAGRAM_SIZE);
    assert_eq!(sa.mtu_probes_sent, 1);
    // The other direction's first leg is UDP: it grows (the stream carries any size).
    assert_eq!(sb.path_mtu, MAX_DATAGRAM_SIZE);
    assert_eq!(mtu_drops(&sim, &["a", "b"]), 0);
}

#[test]
fn over_ipv6_the_forty_byte_header_is_counted() {
    // IPv6-only hosts on 1400-byte links, direct to each other: UDP payloads up to 1352.
    let mut sim = Scenario::new(seed_or(7))
        .server_dual_stack()
        .link(link(1400))
        .client_ipv6_only("a", None)
        .client_ipv6_only("b", None)
        .build();
    let (ha, hb) = sim.group_pair("a", "b");
    sim.eventually("a and b go direct", 5 * SECOND, |s| {
        direct(s, "a", hb) && direct(s, "b", ha)
    });
    let over_v6 = matches!(sim.peer_path("a", hb), Some(Path::Direct(addr)) if addr.is_ipv6());
    sim.check(over_v6, || format!("{:?}", sim.peer_path("a", hb)));
    sim.eventually("the search completes", 10 * SECOND, |s| {
        mtu(s, "a", hb).0 > BASE_DATAGRAM_SIZE && mtu(s, "a", hb).1 >= 6
    });
    sim.advance(3 * SECOND);
    let took = blob(&mut sim, "a", "b", hb, ha);
    let s = stats(&sim, "a", hb);
    let limit = 1400 - pierce_sim::UDP_IPV6_OVERHEAD;
    eprintln!(
        "IPv6, 1400-byte links: a at {} B for a {limit}-byte limit ({} probes, {} lost); 1 MiB \
         in {took:?}",
        s.path_mtu, s.mtu_probes_sent, s.mtu_probes_lost
    );
    assert!(
        (limit - PRECISION..=limit).contains(&s.path_mtu),
        "{}",
        s.path_mtu
    );
    let sb = stats(&sim, "b", ha);
    assert_eq!(
        mtu_drops(&sim, &["a", "b"]),
        s.mtu_probes_lost + sb.mtu_probes_lost
    );
}
