//! Handshakes over a bad access link: 30 % Gilbert–Elliott burst loss each way, 5 %
//! duplication, 5 % reordering, 30 ms ± 10 ms, for hundreds of seeds.

use std::time::Duration;

use pierce_core::{ClientConfig, DisconnectReason, ServerEvent, Transport};
use pierce_sim::{
    Direction, Edge, GilbertElliott, LinkConfig, LinkProfile, Loss, NatConfig, Scenario, Sim,
    repro_command, seeds,
};

fn bad_link() -> LinkProfile {
    LinkProfile::symmetric(LinkConfig {
        latency: Duration::from_millis(30),
        jitter: Duration::from_millis(10),
        loss: Loss::GilbertElliott(GilbertElliott::simple(0.3, 4.0)),
        duplicate: 0.05,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(40),
        ..LinkConfig::default()
    })
}

/// UDP only: these sweeps measure the UDP handshake. With the default `Transport::Auto` a
/// handshake still unanswered after 2 s would finish over the TCP fallback instead
/// (`tcp_fallback.rs` covers that).
fn udp_only() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.transport = Transport::Udp;
    config
}

/// Runs one handshake to success or failure, checking what a success must look like.
fn handshake(seed: u64, config: &ClientConfig) -> Sim {
    let mut sim = Scenario::new(seed)
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .host_link("a", bad_link())
        .client_config(config.clone())
        .build();
    let limit = config.connect_timeout + Duration::from_secs(1);
    let _ = sim.run_until(
        |s| s.connected("a").is_some() || s.disconnected("a").is_some(),
        limit,
    );
    match sim.connected("a") {
        None => {
            // A failure must be the clean, documented one.
            let d = sim.disconnected("a");
            sim.check(
                d == Some((config.connect_timeout, DisconnectReason::ConnectTimedOut)),
                || format!("unexpected failure {d:?}"),
            );
        }
        Some(c) => {
            // Connected within the timeout, at the NAT's address, as exactly one client.
            sim.check(c.at <= config.connect_timeout, || {
                format!("connected late: {:?}", c.at)
            });
            sim.check(Some(c.public_addr) == sim.mapped_addr("a"), || {
                "wrong public address".to_owned()
            });
            let joined = sim
                .server_events()
                .filter(|(_, e)| matches!(e, ServerEvent::ClientJoined { .. }))
                .count();
            sim.check(joined == 1, || format!("{joined} ClientJoined events"));
        }
    }
    sim
}

#[derive(Default)]
struct Sweep {
    runs: u64,
    failed: Vec<u64>,
    duplicated: u64,
    reordered: u64,
    lost: u64,
    replayed: u64,
}

fn sweep(config: &ClientConfig) -> Sweep {
    let mut out = Sweep::default();
    for seed in seeds(0..300) {
        out.runs += 1;
        let sim = handshake(seed, config);
        if sim.connected("a").is_none() {
            out.failed.push(seed);
        }
        for dir in [Direction::Up, Direction::Down] {
            let l = sim.link_stats("a", dir);
            out.duplicated += l.duplicated;
            out.reordered += l.reordered;
            out.lost += l.dropped_loss;
        }
        out.replayed += sim.server_stats().dropped.replayed;
    }
    out
}

fn repros(seeds: &[u64]) -> String {
    seeds
        .iter()
        .map(|s| format!("\n  {}", repro_command(*s)))
        .collect()
}

#[test]
fn handshakes_survive_30_percent_burst_loss_in_all_but_a_few_seeds() {
    // With the default 10 s connect timeout and retries backing off to 2 s, a client gets
    // about 8 tries at a round trip that succeeds half the time, then the same again for the
    // Connect/Welcome exchange. A few seeds in a thousand lose every try (6 of seeds
    // 0..1000, 3 of 0..300 when this was written); more than 2 % means a regression.
    let config = udp_only();
    let s = sweep(&config);
    assert!(
        s.failed.len() as u64 * 50 <= s.runs,
        "{} of {} handshakes timed out:{}",
        s.failed.len(),
        s.runs,
        repros(&s.failed)
    );
    if s.runs > 1 {
        // The link model really did lose, duplicate and reorder, and the server's replay
        // window threw the duplicates away.
        assert!(s.lost > 0 && s.duplicated > 0 && s.reordered > 0 && s.replayed > 0);
    }
}

#[test]
fn with_retries_capped_at_one_second_every_seed_connects_in_time() {
    // Retrying at most every second doubles the tries within the connect timeout; no seed
    // of 0..1000 failed when this was written.
    let mut config = udp_only();
    config.handshake_retry_max = Duration::from_secs(1);
    let s = sweep(&config);
    assert!(
        s.failed.is_empty(),
        "{} of {} handshakes timed out:{}",
        s.failed.len(),
        s.runs,
        repros(&s.failed)
    );
}
