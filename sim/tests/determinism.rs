//! Same seed, same run: byte-identical logs. Another seed, another run.

use std::time::Duration;

use pierce_core::{SecretKey, ServerConfig};
use pierce_sim::{Action, Direction, Edge, LinkProfile, NatConfig, Scenario, Sim, seed_or};

const SECOND: Duration = Duration::from_secs(1);

/// A busy minute: lossy and jittery links, several NAT types, a roam and a rebind, traffic.
/// The server key is fixed, so that only the network's randomness can tell seeds apart.
fn busy_minute(seed: u64) -> Sim {
    let mut sim = Scenario::new(seed)
        .server_config(ServerConfig::new(SecretKey::from_bytes([0x5e; 32])))
        .client("wifi", Edge::nat(NatConfig::port_restricted()))
        .client("cell", Edge::cgnat(NatConfig::symmetric()))
        .client("handover", Edge::nat(NatConfig::linux()))
        .client("wired", Edge::Open)
        .host_link("wifi", LinkProfile::wifi())
        .host_link("cell", LinkProfile::cellular())
        .host_link("handover", LinkProfile::mobile_handover())
        .link(LinkProfile::broadband())
        .at(15 * SECOND, Action::roam("handover"))
        .at(20 * SECOND, Action::rebind("cell"))
        .trace_packets(true)
        .build();
    for i in 0..60u32 {
        for name in ["wifi", "cell", "handover", "wired"] {
            sim.schedule(
                Duration::from_millis(500) * i,
                Action::send(name, format!("{name} {i}").into_bytes()),
            );
        }
    }
    sim.advance(60 * SECOND);
    sim
}

fn fingerprint(sim: &Sim) -> String {
    let mut s = sim.log_text();
    for name in ["wifi", "cell", "handover", "wired"] {
        s += &format!("{name}: {:?}\n", sim.client_stats(name));
        for dir in [Direction::Up, Direction::Down] {
            s += &format!("{name} {dir:?}: {:?}\n", sim.link_stats(name, dir));
        }
    }
    s += &format!(
        "server: {:?}\nnet: {:?}\n",
        sim.server_stats(),
        sim.net_stats()
    );
    s
}

#[test]
fn the_same_seed_gives_byte_identical_logs() {
    let seed = seed_or(7);
    let (a, b) = (busy_minute(seed), busy_minute(seed));
    let (fa, fb) = (fingerprint(&a), fingerprint(&b));
    if fa != fb {
        let line = fa
            .lines()
            .zip(fb.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        a.fail(format!("runs diverge at log line {line}"));
    }
    // The run was not trivially quiet: packets were traced, lost, and delivered.
    a.check(a.log().len() > 1000, || {
        format!("only {} log lines", a.log().len())
    });
    let lost: u64 = ["wifi", "cell", "handover"]
        .iter()
        .map(|n| {
            a.link_stats(n, Direction::Up).dropped() + a.link_stats(n, Direction::Down).dropped()
        })
        .sum();
    a.check(lost > 0, || "no loss on lossy links".to_owned());
}

#[test]
fn a_different_seed_gives_a_different_log() {
    let seed = seed_or(7);
    let a = busy_minute(seed);
    let b = busy_minute(seed + 1);
    a.check(fingerprint(&a) != fingerprint(&b), || {
        format!("seeds {seed} and {} gave the same run", seed + 1)
    });
    // Node events alone differ too (timing of connects and messages).
    a.check(
        a.events("wifi") != b.events("wifi") || a.events("cell") != b.events("cell"),
        || "node events are seed-independent".to_owned(),
    );
}
