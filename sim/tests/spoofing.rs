//! Off-path attackers who send packets with a victim's source address (anyone on a network
//! without egress filtering can) while the victim's players connect: four clients behind one
//! carrier-grade NAT share its public IP, and the attacker floods the server with ClientHellos
//! and STUN requests from that IP (random ports, so the server's answers die at the NAT), or
//! with hellos from a thousand random addresses. The players must all get in, with their
//! connect time at most twice the unattacked one (one Retry round trip more), and their
//! messages must all arrive, and their NAT behaviour discovery must complete. Virtual time,
//! so the figures are exact and repeatable.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use pierce_core::nat::NatBehavior;
use pierce_core::wire::handshake::{ClientHello, MIN_CLIENT_HELLO_LEN};
use pierce_core::wire::stun::encode_binding_request;
use pierce_core::{Channel, ClientEvent, Endpoint as _};
use pierce_sim::{Edge, LinkProfile, NatConfig, Scenario, Sim, seed_or};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};

const MS: Duration = Duration::from_millis(1);
const PLAYERS: [&str; 4] = ["a", "b", "c", "d"];
const MESSAGES: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flood {
    None,
    /// Hellos from the players' public IP, 1000 a second.
    Hellos,
    /// STUN Binding requests from the players' public IP, 3000 a second (15 times the per-IP
    /// budget's rate: at 1000 a second the players' retransmissions still win a token now and
    /// then).
    Stun,
    /// Both of the above.
    Both,
    /// Hellos from 1000 random addresses, 10 000 a second (twice the global budget).
    ManySources,
}

struct Outcome {
    /// When each player connected.
    connected: Vec<Duration>,
    /// Messages each player received.
    received: Vec<usize>,
    /// What each player's NAT behaviour discovery (automatic after connecting) found.
    discovered: Vec<Option<NatBehavior>>,
    cookie_required: u64,
}

fn hello(rng: &mut StdRng) -> Vec<u8> {
    let mut buf = vec![0u8; MIN_CLIENT_HELLO_LEN];
    let n = ClientHello {
        client_session: rng.random(),
        client_ephemeral: rng.random(),
        cookie: &[],
    }
    .encode(&mut buf)
    .expect("fits");
    buf.truncate(n.max(MIN_CLIENT_HELLO_LEN));
    buf
}

fn stun(rng: &mut StdRng) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let n = encode_binding_request(&mut buf, &rng.random()).expect("fits");
    buf[..n].to_vec()
}

/// One millisecond of `flood` aimed at `victim`, straight into the server (the server's
/// answers go out through the simulated network and die at the NAT or nowhere).
fn flood_tick(sim: &mut Sim, flood: Flood, victim: IpAddr, rng: &mut StdRng) {
    let mut packets: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let from_victim = |rng: &mut StdRng| SocketAddr::new(victim, rng.random_range(1024..=65535));
    if matches!(flood, Flood::Hellos | Flood::Both) {
        packets.push((from_victim(rng), hello(rng)));
    }
    if matches!(flood, Flood::Stun | Flood::Both) {
        for _ in 0..3 {
            packets.push((from_victim(rng), stun(rng)));
        }
    }
    if flood == Flood::ManySources {
        for _ in 0..10 {
            let ip = Ipv4Addr::new(198, 18, rng.random_range(0..4), rng.random());
            packets.push((SocketAddr::new(IpAddr::V4(ip), 4000), hello(rng)));
        }
    }
    sim.with_server(|s, now| {
        for (from, p) in &packets {
            s.handle_datagram(now, *from, p);
        }
    });
}

fn run(flood: Flood) -> Outcome {
    let mut sim = Scenario::new(seed_or(24))
        .link(LinkProfile::broadband())
        .client("a", Edge::cgnat(NatConfig::port_restricted()))
        .client_beside("b", "a")
        .client_beside("c", "a")
        .client_beside("d", "a")
        .build();
    let public = {
        let nats = sim.nats_of("a");
        sim.nat(nats.last().expect("behind NATs")).public_ip()
    };
    let mut rng = StdRng::seed_from_u64(7);
    // The attacker was already at it when the players started: the budgets it can spend are
    // spent (a burst of the per-IP budget's size, or of the global one's).
    let prelude = match flood {
        Flood::None => 0,
        Flood::Hellos => 100,
        Flood::ManySources => 600,
        Flood::Stun | Flood::Both => 400,
    };
    for _ in 0..prelude {
        flood_tick(&mut sim, flood, public, &mut rng);
    }
    // The flood runs from the start until the players have exchanged everything.
    let mut tick = |sim: &mut Sim| {
        if flood != Flood::None {
            flood_tick(sim, flood, public, &mut rng);
        }
        sim.advance(MS);
    };
    for _ in 0..10_000 {
        if PLAYERS.iter().all(|p| sim.connected(p).is_some()) {
            break;
        }
        tick(&mut sim);
    }
    let connected: Vec<Duration> = PLAYERS
        .iter()
        .map(|p| match sim.connected(p) {
            Some(c) => c.at,
            None => panic!("{flood:?}: {p} never connected"),
        })
        .collect();
    let hosts = sim.group_up(&PLAYERS);
    for (i, p) in PLAYERS.iter().enumerate() {
        let next = hosts[(i + 1) % hosts.len()];
        for _ in 0..200 {
            if sim.client(p).peers().any(|h| h == next) {
                break;
            }
            tick(&mut sim);
        }
        sim.with_client(p, |c, now| {
            for m in 0..MESSAGES {
                c.send(now, next, Channel::RELIABLE_ORDERED, &m.to_be_bytes())
                    .expect("a peer");
            }
        });
    }
    for _ in 0..5000 {
        tick(&mut sim);
    }
    let received = PLAYERS
        .iter()
        .map(|p| {
            sim.client_events(p)
                .filter(|(_, e)| matches!(e, ClientEvent::PeerMessage { .. }))
                .count()
        })
        .collect();
    let discovered = PLAYERS
        .iter()
        .map(|p| {
            sim.client_events(p).find_map(|(_, e)| match e {
                ClientEvent::NatDiscovered { result, .. } => result.ok(),
                _ => None,
            })
        })
        .collect();
    Outcome {
        connected,
        received,
        discovered,
        cookie_required: sim.server_stats().dropped.cookie_required,
    }
}

#[test]
fn spoofed_floods_from_the_players_own_address_do_not_keep_them_out() {
    let calm = run(Flood::None);
    let calm_worst = *calm.connected.iter().max().expect("players");
    assert_eq!(calm.received, [MESSAGES; 4]);
    assert!(
        calm.discovered
            .iter()
            .all(|b| b.as_ref().is_some_and(|b| b.mapping.is_some())),
        "{:?}",
        calm.discovered
    );
    println!(
        "SPOOF none connected_ms={:?} cookie_required={}",
        calm.connected
            .iter()
            .map(Duration::as_millis)
            .collect::<Vec<_>>(),
        calm.cookie_required
    );
    for flood in [Flood::Hellos, Flood::Stun, Flood::Both, Flood::ManySources] {
        let o = run(flood);
        let worst = *o.connected.iter().max().expect("players");
        println!(
            "SPOOF {flood:?} connected_ms={:?} worst={}ms (calm {}ms, {:.2}x) received={:?} \
             cookie_required={}",
            o.connected
                .iter()
                .map(Duration::as_millis)
                .collect::<Vec<_>>(),
            worst.as_millis(),
            calm_worst.as_millis(),
            worst.as_secs_f64() / calm_worst.as_secs_f64(),
            o.received,
            o.cookie_required
        );
        assert!(
            worst <= 2 * calm_worst,
            "{flood:?}: connected after {worst:?}, more than twice {calm_worst:?}"
        );
        assert_eq!(
            o.received, [MESSAGES; 4],
            "{flood:?}: every message arrives"
        );
        // Their discovery requests are signed with their sessions' credentials, so they
        // spend the sessions' STUN budget, which no spoofer can: discovery finds what it
        // finds in calm (a lost answer would read as filtering or an unknown mapping).
        let kinds = |o: &Outcome| -> Vec<String> {
            (o.discovered.iter())
                .map(|b| format!("{:?}", b.as_ref().map(|b| (b.mapping, b.filtering))))
                .collect()
        };
        assert_eq!(
            kinds(&o),
            kinds(&calm),
            "{flood:?}: NAT discovery undisturbed"
        );
        if flood != Flood::Stun {
            assert!(
                o.cookie_required > 0,
                "{flood:?}: the flood spent the budget"
            );
        }
    }
}
