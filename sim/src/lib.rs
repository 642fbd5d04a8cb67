//! # pierce-sim
//!
//! A deterministic network simulator that drives `pierce_core::{Client, Server}` through
//! modelled links and NATs in virtual time.
//!
//! - **One clock.** A [`Sim`] reads `Instant::now()` once, as its epoch; every other instant is
//!   epoch plus a `Duration`. Logs print time since the epoch, so two runs with the same seed
//!   print byte-identical logs.
//! - **One seed.** Every random decision (link loss, jitter, NAT port choice, node keys) comes
//!   from a stream derived from `(seed, entity name)` ([`substream`]), so adding a client does
//!   not reshuffle the other entities' decisions.
//! - **Links** ([`LinkConfig`], [`LinkProfile`]) model latency, jitter, random and
//!   Gilbert–Elliott loss, duplication, reordering, rate limits with tail drop, MTU and
//!   periodic outages, per direction, with counters ([`LinkStats`]).
//! - **NATs** ([`Nat`], [`NatConfig`]) follow RFC 4787: mapping and filtering behaviour,
//!   port allocation, idle expiry, hairpinning, chains (CGNAT) and Linux's conntrack quirk.
//! - **IPv6** ([`Stack`]): dual-stack and IPv6-only hosts with global addresses, stateful
//!   IPv6 firewalls ([`Firewall`]: pinholes, address-and-port-dependent filtering) and NAT64
//!   gateways ([`Nat64Config`]); one node socket serves both families.
//! - **Oracle** ([`direct_path_possible`]) says whether two edges can ever talk directly, so
//!   NAT-traversal tests can assert the path they expect.
//! - **Scenarios** ([`Scenario`]) build a server and clients behind edges, with scripted
//!   [`Action`]s (roam, rebind, partition, restart, crash, UDP firewall) at chosen times.
//!   Custom nodes (any [`Node`]: a core [`pierce_core::Endpoint`] with counters) join with
//!   [`Sim::add_node`].
//! - **Drive loop** ([`Sim::run_until`], [`Sim::run_for`]): one event heap, a step cap, and a
//!   busy-loop detector that names the spinning node and the reason of its deadline.
//! - **Clusters** ([`Scenario::cluster_node`], [`Scenario::directory`]): server nodes sharing
//!   one [`pierce_core::cluster::MemoryDirectory`] that questions reach after a one-way
//!   latency, answered in order; directory outages and wipes, node restarts (same key and
//!   node id, a new number) and drains are [`Action`]s; [`Sim::directory`] and
//!   [`Sim::directory_stats`] for assertions. `cluster_bench` measures what a join at the
//!   wrong node costs.
//! - **TCP streams** for the UDP-blocked fallback: connects, ordered lossless frames with the
//!   links' latency, closes, crashes, roams and outages (the model and its counters:
//!   [`StreamStats`]), and UDP-blocking firewalls ([`Action::BlockUdp`]).
//! - **Outputs**: per-node event logs stamped with time since the epoch, node stats, link,
//!   NAT and network counters, and a global log (optionally with every datagram's fate and
//!   bytes, [`Sim::packets`]).
//!
//! The `sim-sweep` binary runs one handshake per seed over each link preset and prints
//! connect-time percentiles (`cargo run -p pierce-sim --release --bin sim-sweep`).
//! `nat-matrix` runs every pair of NAT types (or, with `--mix`, pairs drawn from real-world
//! NAT proportions) and writes a Markdown table and an SVG heatmap; `timeline` draws one
//! connection as an SVG sequence diagram ([`report`] holds what they share).
//!
//! Failing checks print the seed and a one-line repro command (see [`repro_command`]); set
//! `PIERCE_SIM_SEED` to rerun one seed ([`seed_or`], [`seeds`]).
//!
//! ```
//! use std::time::Duration;
//! use pierce_sim::{Edge, LinkProfile, NatConfig, Scenario};
//!
//! let mut sim = Scenario::new(7)
//!     .server(Edge::Open)
//!     .client("a", Edge::nat(NatConfig::port_restricted()))
//!     .link(LinkProfile::broadband())
//!     .build();
//! sim.eventually("a connects", Duration::from_secs(5), |s| s.connected("a").is_some());
//! let info = sim.expect_connected("a");
//! assert_eq!(Some(info.public_addr), sim.mapped_addr("a"));
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod clock;
mod firewall;
mod link;
mod nat;
mod nat64;
mod net;
mod node;
mod oracle;
pub mod report;
mod scenario;
mod sim;

pub use clock::format_time;
pub use firewall::{Firewall, FirewallConfig, FirewallDrop, FirewallStats};
pub use link::{
    GE_STEP, GilbertElliott, Link, LinkConfig, LinkDrop, LinkProfile, LinkStats, Loss, Outage,
    Sent, UDP_IPV4_OVERHEAD, UDP_IPV6_OVERHEAD,
};
pub use nat::{Filtering, Mapping, Nat, NatConfig, NatDrop, NatStats, PortAllocation};
pub use nat64::Nat64Config;
pub use net::{CORE_HOPS, DEFAULT_TTL, NetDrop, NetStats, gateway_of};
pub use node::{Node, NodeEvent};
pub use oracle::{
    NatProfile, Traversal, direct_path_possible, direct_path_possible_stacks,
    direct_path_possible_with,
};
pub use scenario::{Action, DEFAULT_BUSY_LIMIT, DEFAULT_STEP_CAP, Edge, Scenario, Stack};
pub use sim::{
    CLIENT_PORT, Connected, Direction, DirectoryStats, DropCause, LogEntry, PacketFate,
    PacketRecord, RTO_MIN, SERVER_PORT, SIM_REGION, STREAM_CONNECT_TIMEOUT, STREAM_STALL_TIMEOUT,
    Sim, SimError, StreamStats,
};

use rand::SeedableRng;
use rand::rngs::StdRng;

/// Name of the server node in scenarios, logs and actions.
pub const SERVER: &str = "server";

/// Environment variable that pins a test to one seed (see [`seed_or`] and [`seeds`]).
pub const SEED_ENV: &str = "PIERCE_SIM_SEED";

/// 32 bytes derived from `(seed, label)`: FNV-1a over both, expanded with SplitMix64.
///
/// Stable across platforms and Rust versions (unlike `std`'s hashers), so a regression seed
/// keeps meaning the same thing.
pub fn derive_seed(seed: u64, label: &str) -> [u8; 32] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"pierce-sim/v1"
        .iter()
        .chain(seed.to_le_bytes().iter())
        .chain(label.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = [0u8; 32];
    for chunk in out.chunks_exact_mut(8) {
        // SplitMix64 step.
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes());
    }
    out
}

/// An independent random stream for the entity named `label` (a link, a NAT, a node).
pub fn substream(seed: u64, label: &str) -> StdRng {
    StdRng::from_seed(derive_seed(seed, label))
}

/// `PIERCE_SIM_SEED` if set (and a number), else `default`.
pub fn seed_or(default: u64) -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// The seeds a seed-sweeping test should run: only `PIERCE_SIM_SEED` if set, else `range`.
pub fn seeds(range: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        Some(seed) => vec![seed],
        None => range.collect(),
    }
}

/// A shell command that reruns the current test with `seed`.
///
/// The test target comes from the running executable's name (cargo names test binaries
/// `<target>-<hash>`) and the test name from the thread name libtest gives each test. Outside
/// a cargo test binary it names the executable.
pub fn repro_command(seed: u64) -> String {
    let stem = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let target = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => return format!("{SEED_ENV}={seed} {stem}"),
    };
    let target = match target {
        "pierce_sim" => "--lib".to_owned(),
        t => format!("--test {t}"),
    };
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(|n| format!(" {n} -- --exact"))
        .unwrap_or_default();
    format!("{SEED_ENV}={seed} cargo test -p pierce-sim {target}{test}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn substreams_are_reproducible_and_independent() {
        assert_eq!(substream(1, "a").next_u64(), substream(1, "a").next_u64());
        assert_ne!(substream(1, "a").next_u64(), substream(1, "b").next_u64());
        assert_ne!(substream(1, "a").next_u64(), substream(2, "a").next_u64());
    }

    #[test]
    fn repro_command_names_the_seed_target_and_test() {
        let cmd = repro_command(42);
        assert!(
            cmd.starts_with("PIERCE_SIM_SEED=42 cargo test -p pierce-sim --lib"),
            "{cmd}"
        );
        assert!(
            cmd.ends_with("repro_command_names_the_seed_target_and_test -- --exact"),
            "{cmd}"
        );
    }
}
