//! Helpers shared by the scenario tests (each test file that uses them has `mod common;`).

use pierce_core::HostId;
use pierce_sim::Sim;

/// The numbers (first four bytes, big-endian) of the peer messages `name` got from `from`,
/// in delivery order.
pub(crate) fn received(sim: &Sim, name: &str, from: HostId) -> Vec<u32> {
    let payloads = sim.peer_payloads(name, from);
    payloads
        .iter()
        .map(|p| u32::from_be_bytes(p[..4].try_into().expect("4 bytes")))
        .collect()
}
