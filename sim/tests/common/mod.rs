//! Helpers shared by the scenario tests (each test file that uses them has `mod common;`).

use std::time::Duration;

use pierce_core::{Channel, ClientEvent, HostId};
use pierce_sim::Sim;

const SECOND: Duration = Duration::from_secs(1);

/// The numbers (first four bytes, big-endian) of the peer messages `name` got from `from`,
/// in delivery order.
pub(crate) fn received(sim: &Sim, name: &str, from: HostId) -> Vec<u32> {
    let payloads = sim.peer_payloads(name, from);
    payloads
        .iter()
        .map(|p| u32::from_be_bytes(p[..4].try_into().expect("4 bytes")))
        .collect()
}

/// Everyone in `names` connects, joins room "arena" (the first creates it), one every
/// `5 * tick`, and waits until each sees the others; their host ids, in `names` order.
#[allow(dead_code)] // (not every test file that has `mod common;` uses it)
pub(crate) fn room_up(sim: &mut Sim, names: &[&str], tick: Duration) -> Vec<HostId> {
    sim.eventually("every client connects", 10 * SECOND, |s| {
        names.iter().all(|n| s.connected(n).is_some())
    });
    let ids: Vec<HostId> = names
        .iter()
        .map(|n| sim.expect_connected(n).host_id)
        .collect();
    for n in names {
        sim.with_client(n, |c, now| c.join_room(now, "arena", "", true, 8))
            .expect("join");
        sim.advance(tick * 5);
    }
    sim.eventually("every member knows every other", 5 * SECOND, |s| {
        names.iter().zip(&ids).all(|(n, me)| {
            ids.iter()
                .all(|p| p == me || s.client(n).peers().any(|q| q == *p))
        })
    });
    ids
}

/// Each client sends the next number to every other, reliably and in order, every `tick`,
/// for `d`.
#[allow(dead_code)]
pub(crate) fn stream(
    sim: &mut Sim,
    names: &[&str],
    ids: &[HostId],
    next: &mut u32,
    d: Duration,
    tick: Duration,
) {
    let end = sim.elapsed() + d;
    while sim.elapsed() < end {
        for (i, from) in names.iter().enumerate() {
            for (j, to) in ids.iter().enumerate() {
                if i != j {
                    sim.with_client(from, |c, now| {
                        c.send(now, *to, Channel::RELIABLE_ORDERED, &next.to_be_bytes())
                    })
                    .unwrap_or_else(|e| panic!("{from}: {e}"));
                }
            }
        }
        *next += 1;
        sim.advance(tick);
    }
}

/// Peers `name` dropped and messages it was told expired, together.
#[allow(dead_code)]
pub(crate) fn drops_or_expiries(sim: &Sim, name: &str) -> usize {
    (sim.client_events(name))
        .filter(|(_, e)| {
            matches!(
                e,
                ClientEvent::PeerDropped { .. } | ClientEvent::MessageExpired { .. }
            )
        })
        .count()
}
