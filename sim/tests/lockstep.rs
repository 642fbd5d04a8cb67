//! Two hard NATs with sequential ports (`symmetric-seq`: a new port per destination, one
//! step above the last, filtering by address and port): simultaneous punching cannot work,
//! each end's probes leave from a port the other does not know. Both ends know both NATs
//! from discovery and sweep the other's predicted ports in lockstep (`core/src/client/path.rs`,
//! "Lockstep sweeps"): the pair must go direct in the first round, and neither NAT may hold
//! more mappings than a client's lockstep budget allows.

use std::time::Duration;

use pierce_core::{Channel, ClientEvent, Path};
use pierce_sim::report::edge_by_name;
use pierce_sim::{LinkProfile, Scenario, seeds};

const SECOND: Duration = Duration::from_secs(1);
/// Introduction to direct, at most: the first round's sweep (its openers, then probes every
/// 500 ms for 2.5 s) with a broadband RTT; a lost `PeerAdd` or sweep packet is made up
/// within the round's sweeps. (A failed first round would be retried 35 s later.)
const DIRECT_WITHIN: Duration = Duration::from_secs(5);
/// Live mappings one NAT may hold for its one client: the server's flows and discovery's
/// (a handful), one towards the peer's address, and the sweeps: 64 mappings each, at most
/// two sweeps' worth within any NAT idle timeout (sweeps are ~38 s apart).
const MAX_BINDINGS: usize = 16 + 2 * 64;

/// Runs `a` and `b` (edge names) over `seeds`, checks each pair goes direct within
/// [`DIRECT_WITHIN`] and no NAT holds more than [`MAX_BINDINGS`]; returns (introduction ->
/// direct, peak bindings) per seed.
fn lockstep_pairs(a: &str, b: &str, seeds: Vec<u64>) -> Vec<(Duration, usize)> {
    let mut times = Vec::new();
    for seed in seeds {
        let mut sim = Scenario::new(seed)
            .link(LinkProfile::broadband())
            .client("a", edge_by_name(a).expect("a known edge"))
            .client("b", edge_by_name(b).expect("a known edge"))
            .build();
        let (ha, hb) = sim.group_pair("a", "b");
        sim.eventually("a learns of b", 5 * SECOND, |s| {
            s.client("a").peers().any(|p| p == hb)
        });
        let introduced = sim.elapsed();
        sim.with_client("a", |c, now| {
            c.send(now, hb, Channel::RELIABLE_ORDERED, b"through both NATs")
                .expect("peer known")
        });
        let mut peak = 0;
        let mut waited = Duration::ZERO;
        while waited < DIRECT_WITHIN + 10 * SECOND {
            sim.advance(Duration::from_millis(100));
            waited += Duration::from_millis(100);
            let now = sim.now();
            for name in ["a", "b"] {
                for nat in sim.nats_of(name) {
                    peak = peak.max(sim.nat(nat).live_bindings(now));
                }
            }
        }
        let direct_at = |name: &str, peer| {
            sim.client_events(name).find_map(|(t, e)| match e {
                ClientEvent::PathChanged {
                    peer: p,
                    path: Path::Direct(_),
                    ..
                } if *p == peer => Some(t - introduced),
                _ => None,
            })
        };
        let (at_a, at_b) = (direct_at("a", hb), direct_at("b", ha));
        sim.check(
            at_a.is_some_and(|t| t <= DIRECT_WITHIN) && at_b.is_some_and(|t| t <= DIRECT_WITHIN),
            || format!("seed {seed}: direct at {at_a:?} / {at_b:?}, not within {DIRECT_WITHIN:?}"),
        );
        sim.check(
            matches!(sim.peer_path("a", hb), Some(Path::Direct(_)))
                && matches!(sim.peer_path("b", ha), Some(Path::Direct(_))),
            || format!("seed {seed}: the direct path did not last"),
        );
        let delivered = sim.client_events("b").any(|(_, e)| {
            matches!(e, ClientEvent::PeerMessage { payload, .. } if &payload[..] == b"through both NATs")
        });
        sim.check(delivered, || {
            format!("seed {seed}: the message did not arrive")
        });
        sim.check(peak <= MAX_BINDINGS, || {
            format!("seed {seed}: a NAT held {peak} bindings (at most {MAX_BINDINGS})")
        });
        times.push((at_a.max(at_b).unwrap_or_default(), peak));
    }
    times.sort();
    eprintln!(
        "{a} x {b} over {} seeds: direct after (introduction ->, peak NAT bindings) {times:?}",
        times.len()
    );
    times
}

#[test]
fn two_sequential_symmetric_nats_go_direct_by_lockstep_sweeps() {
    lockstep_pairs("symmetric-seq", "symmetric-seq", seeds(0..16));
}

/// A NAT that maps per IP (address-dependent, sequential) has one mapping towards the peer,
/// made by the first round's probe, often before its discovery's last one: the other end
/// sweeps either side of that port.
#[test]
fn address_dependent_nats_go_direct_by_lockstep_sweeps_with_either_hard_nat() {
    lockstep_pairs("symmetric-seq", "address-dependent", seeds(0..16));
    lockstep_pairs("address-dependent", "symmetric-seq", seeds(0..16));
    lockstep_pairs("address-dependent", "address-dependent", seeds(0..16));
}
