//! What a join at the wrong cluster node costs (issue #19): for each access-link profile and
//! seed, a three-node cluster (one directory 1 ms from every node; nodes on a 0.5 ms
//! datacenter link), a host in room "r", and a joiner that dials either the room's node
//! ("right") or another node ("wrong": redirected, registers again with its ticket, joins
//! there). The host streams a reliable ordered message to the joiner every millisecond from
//! the moment it knows it as a peer. Measured from the joiner's `join_room` call: until
//! `RoomJoined`, and until the first message from the host arrives; printed in milliseconds
//! and in round trips between a client and a node (the sum of the link latencies, jitter
//! left out). Deterministic for given arguments:
//!
//! ```text
//! cargo run --release -p pierce-sim --bin cluster_bench -- [--seeds 20] [--start 0]
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool

use std::process::ExitCode;
use std::time::Duration;

use pierce_core::{Channel, ClientConfig, ClientEvent, RoomsConfig, SecretKey, ServerConfig};
use pierce_sim::{Edge, LinkConfig, LinkProfile, NatConfig, SERVER, Scenario, Sim};

const NODES: [&str; 3] = [SERVER, "node-b", "node-c"];
const JOINERS: [&str; 3] = ["j-a", "j-b", "j-c"];
const STEP: Duration = Duration::from_millis(1);
const NODE_LINK: Duration = Duration::from_micros(500);

fn profiles() -> Vec<(&'static str, LinkProfile)> {
    vec![
        ("lan", LinkProfile::lan()),
        ("wifi", LinkProfile::wifi()),
        ("broadband", LinkProfile::broadband()),
        ("cellular", LinkProfile::cellular()),
    ]
}

/// A client↔node round trip on `p` (clients on `p`, nodes on [`NODE_LINK`]).
fn rtt(p: &LinkProfile) -> Duration {
    p.up.latency + p.down.latency + 2 * NODE_LINK
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Right,
    Wrong,
}

/// One trial: (join → RoomJoined, join → first message), or why it failed.
fn trial(seed: u64, profile: &LinkProfile, case: Case) -> Result<(Duration, Duration), String> {
    let mut server = ServerConfig::new(SecretKey::from_bytes([0x19; 32]));
    server.rooms = Some(RoomsConfig::default());
    let mut sc = Scenario::new(seed)
        .server_config(server)
        .cluster_node(NODES[1])
        .cluster_node(NODES[2])
        .directory(Duration::from_millis(1))
        .link(profile.clone())
        .host_link(
            SERVER,
            LinkProfile::symmetric(LinkConfig::with_latency(NODE_LINK)),
        )
        .client("host", Edge::nat(NatConfig::port_restricted()))
        .first_node("host", NODES[(seed % 3) as usize]);
    for (j, node) in JOINERS.iter().zip(NODES) {
        sc = sc
            .client_with(
                *j,
                Edge::nat(NatConfig::restricted_cone()),
                ClientConfig::default(),
            )
            .first_node(*j, node);
    }
    let mut sim = sc.build();
    let all = ["host", JOINERS[0], JOINERS[1], JOINERS[2]];
    sim.run_until(|s| all.iter().all(|n| s.connected(n).is_some()), 10 * sec())
        .map_err(|e| e.summary())?;
    sim.run_for(2 * sec()).map_err(|e| e.summary())?;
    sim.with_client("host", |c, now| c.join_room(now, "r", "", true, 8))
        .map_err(|e| e.to_string())?;
    sim.run_until(|s| joined(s, "host"), 5 * sec())
        .map_err(|e| format!("host joins: {}", e.summary()))?;
    sim.run_for(2 * sec()).map_err(|e| e.summary())?;
    let host_node = sim.client("host").server_addr();
    let on = (0..3)
        .find(|&i| Some(sim.host_addr(NODES[i])) == host_node)
        .ok_or("the host is on no node")?;
    let joiner = match case {
        Case::Right => JOINERS[on],
        Case::Wrong => JOINERS[(on + 1 + (seed as usize / 3) % 2) % 3],
    };
    let jid = sim.client(joiner).host_id().ok_or("joiner has no id")?;
    let t0 = sim.elapsed();
    sim.with_client(joiner, |c, now| c.join_room(now, "r", "", false, 0))
        .map_err(|e| e.to_string())?;
    let mut room_joined = None;
    let limit = t0 + 10 * sec();
    let mut n = 0u32;
    while sim.elapsed() < limit {
        if sim.client("host").peers().any(|p| p == jid) {
            let _ = sim.with_client("host", |c, now| {
                c.send(now, jid, Channel::RELIABLE_ORDERED, &n.to_be_bytes())
            });
            n += 1;
        }
        sim.run_for(STEP).map_err(|e| e.summary())?;
        if room_joined.is_none() && joined(&sim, joiner) {
            room_joined = Some(sim.elapsed() - t0);
        }
        let first = (sim.client_events(joiner))
            .filter(|(t, _)| *t >= t0)
            .find(|(_, e)| matches!(e, ClientEvent::PeerMessage { .. }))
            .map(|(t, _)| t - t0);
        if let (Some(j), Some(m)) = (room_joined, first) {
            let redirected = sim
                .client_events(joiner)
                .any(|(_, e)| matches!(e, ClientEvent::Redirected { .. }));
            if redirected != (case == Case::Wrong) {
                return Err(format!("redirected: {redirected}"));
            }
            return Ok((j, m));
        }
    }
    Err("no message within 10 s".into())
}

fn sec() -> Duration {
    Duration::from_secs(1)
}

fn joined(sim: &Sim, name: &str) -> bool {
    sim.client_events(name)
        .any(|(_, e)| matches!(e, ClientEvent::RoomJoined { .. }))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} takes a number")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (seeds, start) = match (arg(&args, "--seeds", 20), arg(&args, "--start", 0)) {
        (Ok(n), Ok(s)) if n > 0 => (n, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cluster_bench: {e}");
            return ExitCode::from(2);
        }
        _ => {
            eprintln!("cluster_bench: --seeds must be positive");
            return ExitCode::from(2);
        }
    };
    println!(
        "join → RoomJoined and join → first message from the host, {seeds} seeds ({start}..), \
         median / p90; RTT = client↔node round trip"
    );
    println!(
        "| profile | RTT | join at | → RoomJoined | → first message | in RTTs (median / p90) | failed |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut failures = 0;
    for (name, profile) in profiles() {
        let r = rtt(&profile);
        let mut medians = Vec::new();
        for case in [Case::Right, Case::Wrong] {
            let (mut joins, mut firsts, mut failed) = (Vec::new(), Vec::new(), 0);
            for seed in start..start + seeds {
                match trial(seed, &profile, case) {
                    Ok((j, m)) => {
                        joins.push(j);
                        firsts.push(m);
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("{name} seed {seed}: {e}");
                    }
                }
            }
            failures += failed;
            if firsts.is_empty() {
                println!("| {name} | | | | | | {failed} |");
                continue;
            }
            joins.sort();
            firsts.sort();
            let in_rtts = |d: Duration| d.as_secs_f64() / r.as_secs_f64();
            let (m50, m90) = (pct(&firsts, 0.5), pct(&firsts, 0.9));
            medians.push(in_rtts(m50));
            println!(
                "| {name} | {:.1} ms | {} node | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.1} | {failed} |",
                r.as_secs_f64() * 1e3,
                if case == Case::Right {
                    "right"
                } else {
                    "wrong"
                },
                pct(&joins, 0.5).as_secs_f64() * 1e3,
                pct(&joins, 0.9).as_secs_f64() * 1e3,
                m50.as_secs_f64() * 1e3,
                m90.as_secs_f64() * 1e3,
                in_rtts(m50),
                in_rtts(m90),
            );
        }
        if let [right, wrong] = medians[..] {
            println!(
                "| {name} | | redirect costs | | | {:+.1} RTTs (median) | |",
                wrong - right
            );
        }
    }
    if failures > 0 {
        eprintln!("cluster_bench: {failures} trials failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
