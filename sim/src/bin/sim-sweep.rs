//! Connect-time sweep: for each access-link profile, runs one handshake per seed through a
//! port-restricted NAT and prints the success rate and connect-time percentiles. Meant for
//! the `sim-seeds` CI job and for tuning handshake timers:
//!
//! ```text
//! cargo run -p pierce-sim --release --bin sim-sweep -- --seeds 1000 [--start 0]
//! ```
//!
//! Output is deterministic for given arguments.

use std::process::ExitCode;
use std::time::Duration;

use pierce_sim::{Edge, GilbertElliott, LinkConfig, LinkProfile, Loss, NatConfig, Scenario};

fn profiles() -> Vec<(&'static str, LinkProfile)> {
    vec![
        ("broadband", LinkProfile::broadband()),
        ("wifi", LinkProfile::wifi()),
        ("cellular", LinkProfile::cellular()),
        ("mobile_handover", LinkProfile::mobile_handover()),
        (
            "ge30%+dup+reorder",
            LinkProfile::symmetric(LinkConfig {
                latency: Duration::from_millis(30),
                jitter: Duration::from_millis(10),
                loss: Loss::GilbertElliott(GilbertElliott::simple(0.3, 4.0)),
                duplicate: 0.05,
                reorder: 0.05,
                reorder_delay: Duration::from_millis(40),
                ..LinkConfig::default()
            }),
        ),
    ]
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (seeds, start) = match (arg(&args, "--seeds", 1000), arg(&args, "--start", 0)) {
        (Ok(n), Ok(s)) => (n, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}\nusage: sim-sweep [--seeds N] [--start S]");
            return ExitCode::FAILURE;
        }
    };
    println!("profile              ok/total   p50       p90       p99       max");
    for (name, profile) in profiles() {
        let mut times = Vec::new();
        let mut failed = Vec::new();
        for seed in start..start + seeds {
            let mut sim = Scenario::new(seed)
                .client("a", Edge::nat(NatConfig::port_restricted()))
                .host_link("a", profile.clone())
                .build();
            let limit = pierce_core::DEFAULT_CONNECT_TIMEOUT + Duration::from_secs(1);
            let _ = sim.run_until(
                |s| s.connected("a").is_some() || s.disconnected("a").is_some(),
                limit,
            );
            match sim.connected("a") {
                Some(c) => times.push(c.at),
                None => failed.push(seed),
            }
        }
        times.sort();
        println!(
            "{name:<20} {:>4}/{:<5} {:>8.3}s {:>8.3}s {:>8.3}s {:>8.3}s",
            times.len(),
            seeds,
            percentile(&times, 50).as_secs_f64(),
            percentile(&times, 90).as_secs_f64(),
            percentile(&times, 99).as_secs_f64(),
            times.last().copied().unwrap_or_default().as_secs_f64(),
        );
        if let Some(first) = failed.first() {
            println!(
                "  {} failed, e.g. seed {first}: rerun with --seeds 1 --start {first}",
                failed.len()
            );
        }
    }
    ExitCode::SUCCESS
}
