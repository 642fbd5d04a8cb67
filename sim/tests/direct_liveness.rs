//! Liveness of a direct path: a quiet path that gets a send is not declared dead before the
//! send could be answered (found by the `sim_scenario` fuzz target), and a path that really
//! died is noticed within a few round trips of the first unanswered send.

use std::time::Duration;

use pierce_core::{Channel, ClientEvent, HostId, Path, PathChangeReason};
use pierce_sim::{Action, Edge, LinkProfile, NatConfig, Scenario, Sim, seed_or};

mod common;
use common::received;

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn direct(s: &Sim, n: &str, p: HostId) -> bool {
    matches!(s.peer_path(n, p), Some(Path::Direct(_)))
}

fn relay_events(sim: &Sim, name: &str, since: Duration) -> Vec<(Duration, PathChangeReason)> {
    sim.client_events(name)
        .filter_map(|(t, e)| match e {
            ClientEvent::PathChanged {
                path: Path::Relay,
                reason,
                ..
            } if t >= since => Some((t, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn sporadic_sends_on_a_quiet_direct_path_keep_it_and_a_dead_one_is_noticed_quickly() {
    let mut sim = Scenario::new(seed_or(5))
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .client("b", Edge::nat(NatConfig::port_restricted()))
        .link(LinkProfile::broadband())
        .build();
    let (ha, hb) = sim.group_pair("a", "b");
    sim.eventually("a and b go direct", 5 * SECOND, |s| {
        direct(s, "a", hb) && direct(s, "b", ha)
    });
    // Let the path go quiet: only keepalives, one a second each way.
    sim.advance(3 * SECOND);

    // Sends at every phase of the keepalive cycle, each long after the last packet
    // received (up to a second): every one must get its chance to be acknowledged.
    let start = sim.elapsed();
    let gaps = [1300, 1450, 1700, 1900, 1150, 1550, 1800, 1999, 1250, 1620];
    for (i, gap) in gaps.iter().enumerate() {
        let i = u32::try_from(i).expect("small");
        sim.with_client("a", |c, now| {
            c.send(now, hb, Channel::RELIABLE_ORDERED, &i.to_be_bytes())
        })
        .expect("queued");
        sim.advance(MS * *gap);
    }
    // Then b speaks first each time: a answers with an ack-only packet, and sends its own
    // message up to a second later. Silence after an ack-only packet is expected; it must
    // not start the busy clock (the sim_scenario fuzz target found that it did).
    let mut i = u32::try_from(gaps.len()).expect("small");
    for gap in [400u32, 650, 900, 1150, 980, 720] {
        sim.with_client("b", |c, now| {
            c.send(now, ha, Channel::RELIABLE_ORDERED, &i.to_be_bytes())
        })
        .expect("queued");
        sim.advance(MS * gap);
        sim.with_client("a", |c, now| {
            c.send(now, hb, Channel::RELIABLE_ORDERED, &i.to_be_bytes())
        })
        .expect("queued");
        sim.advance(MS * 1300);
        i += 1;
    }
    let lost = relay_events(&sim, "a", start);
    sim.check(lost.is_empty(), || {
        format!("a quiet, working direct path was declared dead: {lost:?}")
    });
    sim.check(direct(&sim, "a", hb), || {
        "a left the direct path".to_owned()
    });
    let n = i;
    let got = received(&sim, "b", ha);
    sim.check(got == (0..n).collect::<Vec<_>>(), || {
        format!("b got {got:?}")
    });

    // Now the direct path dies (the server still reaches both): the first unanswered send
    // moves the pair to the relay within a few round trips, and the message arrives there.
    sim.advance(700 * MS);
    sim.apply(Action::partition("a", "b")).expect("partition");
    let sent_at = sim.elapsed();
    sim.with_client("a", |c, now| {
        c.send(now, hb, Channel::RELIABLE_ORDERED, &n.to_be_bytes())
    })
    .expect("queued");
    sim.eventually("a falls back to the relay", 5 * SECOND, |s| {
        !direct(s, "a", hb)
    });
    let lost = relay_events(&sim, "a", sent_at);
    let (at, reason) = lost[0];
    eprintln!(
        "sends 1.15-2 s apart on a quiet direct path: none lost it; a dead path was left {:?} \
         after the first unanswered send",
        at - sent_at
    );
    sim.check(reason == PathChangeReason::DirectLost, || {
        format!("{reason:?}")
    });
    sim.check(at - sent_at <= SECOND, || {
        format!(
            "a dead direct path was noticed only {:?} after a send",
            at - sent_at
        )
    });
    sim.eventually("the message arrives through the relay", 5 * SECOND, |s| {
        received(s, "b", ha).len() == n as usize + 1
    });
    let got = received(&sim, "b", ha);
    sim.check(got == (0..=n).collect::<Vec<_>>(), || {
        format!("b got {got:?}")
    });
}
