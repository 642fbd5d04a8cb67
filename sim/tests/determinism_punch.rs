//! Same seed, same run, with hole punching: two port-restricted clients are put in one
//! group, punch a direct path (each side's first probes die in the other's NAT until it has
//! punched its own hole) and stream messages over the relay and then the direct path. Two
//! runs with the same seed give byte-identical logs, event logs and packet traces.

use std::fmt::Write as _;
use std::time::Duration;

use pierce_core::{Channel, ClientEvent, Path};
use pierce_sim::{
    DropCause, Edge, LinkProfile, NatConfig, NatDrop, PacketFate, Scenario, Sim, seed_or,
};

const SECOND: Duration = Duration::from_secs(1);

fn punch_run(seed: u64) -> Sim {
    let mut sim = Scenario::new(seed)
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .client("b", Edge::nat(NatConfig::port_restricted()))
        // Jitter and a little loss, so that the seed matters.
        .link(LinkProfile::wifi())
        .trace_packets(true)
        .build();
    let (ha, hb) = sim.group_pair("a", "b");
    sim.eventually("each learns of the other", 5 * SECOND, |s| {
        s.client("a").peers().any(|p| p == hb) && s.client("b").peers().any(|p| p == ha)
    });
    for i in 0..40u32 {
        let payload = format!("message {i}");
        for (from, to) in [("a", hb), ("b", ha)] {
            sim.with_client(from, |c, now| {
                c.send(now, to, Channel::RELIABLE_ORDERED, payload.as_bytes())
                    .expect("peer known")
            });
        }
        sim.advance(Duration::from_millis(50));
    }
    sim.advance(3 * SECOND);
    sim
}

/// Everything a run produced, as text: the global log, every node's events, every traced
/// datagram with its fate, and the counters.
fn fingerprint(sim: &Sim) -> String {
    let mut s = sim.log_text();
    for name in ["server", "a", "b"] {
        for line in sim.event_lines(name) {
            let _ = writeln!(s, "{name}: {line}");
        }
    }
    for p in sim.packets() {
        let _ = writeln!(s, "{p:?}");
    }
    let _ = writeln!(
        s,
        "{:?}\n{:?}\n{:?}\n{:?}",
        sim.client_stats("a"),
        sim.client_stats("b"),
        sim.server_stats(),
        sim.net_stats()
    );
    s
}

fn went_direct(sim: &Sim, name: &str) -> bool {
    sim.client_events(name).any(|(_, e)| {
        matches!(
            e,
            ClientEvent::PathChanged {
                path: Path::Direct(_),
                ..
            }
        )
    })
}

#[test]
fn a_punched_connection_replays_byte_for_byte() {
    let seed = seed_or(11);
    let (x, y) = (punch_run(seed), punch_run(seed));
    let (fx, fy) = (fingerprint(&x), fingerprint(&y));
    if fx != fy {
        let line = fx
            .lines()
            .zip(fy.lines())
            .position(|(p, q)| p != q)
            .unwrap_or(0);
        x.fail(format!(
            "runs diverge at fingerprint line {line}:\n  {}\n  {}",
            fx.lines().nth(line).unwrap_or_default(),
            fy.lines().nth(line).unwrap_or_default()
        ));
    }
    // It was a punching run: both ends went direct, probes crossed, and at least one probe
    // died in a NAT's filter on the way (the simultaneous open).
    x.check(went_direct(&x, "a") && went_direct(&x, "b"), || {
        "the pair never went direct".to_owned()
    });
    let probes = x.packets().iter().filter(|p| p.kind == 0xD4).count();
    let filtered = x
        .packets()
        .iter()
        .filter(|p| p.kind == 0xD4)
        .flat_map(|p| &p.fates)
        .filter(|f| {
            matches!(
                f,
                PacketFate::Dropped {
                    cause: DropCause::Nat {
                        drop: NatDrop::Filtered,
                        ..
                    },
                    ..
                }
            )
        })
        .count();
    x.check(probes > 40 && filtered > 0, || {
        format!("{probes} direct packets, {filtered} filtered by a NAT")
    });
    let delivered = x
        .client_events("b")
        .filter(|(_, e)| matches!(e, ClientEvent::PeerMessage { .. }))
        .count();
    x.check(delivered == 40, || {
        format!("b got {delivered} of 40 messages")
    });
}

#[test]
fn another_seed_punches_differently() {
    let seed = seed_or(11);
    let (x, y) = (punch_run(seed), punch_run(seed + 1));
    x.check(fingerprint(&x) != fingerprint(&y), || {
        format!("seeds {seed} and {} gave the same run", seed + 1)
    });
}
