//! Connection recovery (issue #10): a client whose network goes out for a while and comes
//! back from a new address keeps its session, groups and pairs; its peers see
//! `PeerRecovering` / `PeerRecovered` instead of leave/join, and reliable streams both ways
//! arrive exactly once, in order. Past the recovery window the usual leave happens.

use std::time::Duration;

use pierce_core::{Channel, ClientEvent, HostId, LeaveReason, MemberLeftReason, ServerEvent};
use pierce_sim::{Action, Edge, LinkProfile, NatConfig, PortAllocation, Scenario, Sim, seed_or};

mod common;
use common::received;

const SECOND: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(20);

fn setup(seed: u64) -> (Sim, HostId, HostId) {
    let mut sim = Scenario::new(seed)
        // Random ports: a's packets come from a new address after the outage.
        .client(
            "a",
            Edge::nat(NatConfig::port_restricted().with_allocation(PortAllocation::Random)),
        )
        .client("b", Edge::nat(NatConfig::port_restricted()))
        .link(LinkProfile::broadband())
        .build();
    let [ha, hb] = sim.group_up(&["a", "b"])[..] else {
        unreachable!("two names")
    };
    (sim, ha, hb)
}

fn membership_changes(sim: &Sim, name: &str, since: Duration) -> usize {
    sim.client_events(name)
        .filter(|(t, e)| {
            *t > since
                && matches!(
                    e,
                    ClientEvent::MemberJoined { .. } | ClientEvent::MemberLeft { .. }
                )
        })
        .count()
}

fn first_at(sim: &Sim, name: &str, pred: impl Fn(&ClientEvent) -> bool) -> Option<Duration> {
    sim.client_events(name)
        .find(|(_, e)| pred(e))
        .map(|(t, _)| t)
}

#[test]
fn a_roam_with_an_outage_mid_stream_recovers_without_loss_duplication_or_leave() {
    for gap_s in [3u64, 9] {
        let (mut sim, ha, hb) = setup(seed_or(31) + gap_s);
        let start = sim.elapsed();
        let gap = Duration::from_secs(gap_s);
        let mut back_at = None;
        let n = 900u32;
        let mut out_at = None;
        let mut i = 0u32;
        // Both ways, one message per tick; a's network drops at message 150 for `gap`, and
        // it comes back behind a new NAT mapping (a roam). Sends continue throughout.
        while i < n {
            for (from, to) in [("a", hb), ("b", ha)] {
                sim.with_client(from, |c, now| {
                    c.send(now, to, Channel::RELIABLE_ORDERED, &i.to_be_bytes())
                })
                .expect("queued");
            }
            if i == 150 {
                sim.apply(Action::offline("a")).expect("offline");
                out_at = Some(sim.elapsed());
            }
            if out_at.is_some_and(|t| back_at.is_none() && sim.elapsed() >= t + gap) {
                sim.apply(Action::roam("a")).expect("roam");
                sim.apply(Action::online("a")).expect("online");
                back_at = Some(sim.elapsed());
            }
            sim.advance(TICK);
            i += 1;
        }
        let (out_at, back_at) = (out_at.expect("went out"), back_at.expect("came back"));
        let all: Vec<u32> = (0..n).collect();
        sim.eventually("both streams arrive", 15 * SECOND, |s| {
            received(s, "b", ha).len() >= all.len() && received(s, "a", hb).len() >= all.len()
        });
        sim.advance(2 * SECOND);
        for (name, from) in [("b", ha), ("a", hb)] {
            let got = received(&sim, name, from);
            sim.check(got == all, || {
                format!(
                    "{name} got {} messages, not 0..{n} once in order",
                    got.len()
                )
            });
            sim.check(membership_changes(&sim, name, start) == 0, || {
                let events: Vec<String> = sim
                    .event_lines(name)
                    .into_iter()
                    .filter(|l| l.contains("Member") || l.contains("Disconnected"))
                    .collect();
                format!("{name} saw a member leave or join: {events:?}")
            });
            sim.check(sim.disconnected(name).is_none(), || {
                format!("{name} lost its session")
            });
        }
        // The server kept a's id and told b.
        sim.check(sim.expect_connected("a").host_id == ha, || {
            "a's id changed".into()
        });
        let recovering = first_at(
            &sim,
            "b",
            |e| matches!(e, ClientEvent::PeerRecovering { peer } if *peer == ha),
        );
        let recovered = first_at(
            &sim,
            "b",
            |e| matches!(e, ClientEvent::PeerRecovered { peer } if *peer == ha),
        );
        // Delivery of what a sent while out: the last of a's stream reaches b within a few
        // round trips of a's return, not after a backed-off retransmission timeout.
        let last_at = sim
            .client_events("b")
            .filter(|(_, e)| matches!(e, ClientEvent::PeerMessage { from, .. } if *from == ha))
            .map(|(t, _)| t)
            .last()
            .expect("delivered");
        let server_offline = sim
            .server_events()
            .filter(|(_, e)| matches!(e, ServerEvent::ClientOffline { host_id } if *host_id == ha))
            .count();
        eprintln!(
            "outage {gap_s} s: PeerRecovering at +{:?}, PeerRecovered {:?} after a came back; \
             server offline notices {server_offline}; a's stream complete at b {:?} after the \
             last send; {n} messages each way, once, in order",
            recovering.map(|t| t - out_at),
            recovered.map(|t| t.saturating_sub(back_at)),
            last_at.saturating_sub(start + TICK * n),
        );
        if gap_s >= 6 {
            // Past offline_after (5 s): the peer hears it, then hears it is back.
            let (Some(r1), Some(r2)) = (recovering, recovered) else {
                sim.fail(format!("b saw {recovering:?} / {recovered:?}"));
            };
            // The server's silence starts at a's last packet to it, up to a client
            // keepalive (2 s) before the outage when a's traffic went direct.
            sim.check(r1 >= out_at + 3 * SECOND && r1 < back_at, || {
                format!("PeerRecovering at {r1:?}, out at {out_at:?}")
            });
            sim.check(r2 >= back_at && r2 < back_at + SECOND, || {
                format!("PeerRecovered at {r2:?}, back at {back_at:?}")
            });
            sim.check(server_offline == 1, || {
                format!("{server_offline} offline notices")
            });
        } else {
            // A short outage is not announced.
            sim.check(recovering.is_none(), || {
                "a short outage was announced".into()
            });
        }
        sim.check(last_at < start + TICK * n + 3 * SECOND, || {
            format!("a's stream completed only at {last_at:?}")
        });
    }
}

#[test]
fn past_the_recovery_window_the_usual_leave_happens() {
    let (mut sim, ha, _hb) = setup(seed_or(41));
    let out_at = sim.elapsed();
    sim.apply(Action::offline("a")).expect("offline");
    sim.advance(20 * SECOND);
    let recovering = first_at(
        &sim,
        "b",
        |e| matches!(e, ClientEvent::PeerRecovering { peer } if *peer == ha),
    );
    let left = first_at(&sim, "b", |e| {
        matches!(e, ClientEvent::MemberLeft { member, reason, .. }
            if *member == ha && *reason == MemberLeftReason::Disconnected)
    });
    let (Some(r), Some(l)) = (recovering, left) else {
        sim.fail(format!("b saw recovering {recovering:?}, left {left:?}"));
    };
    eprintln!(
        "a out for good: PeerRecovering {:?} and MemberLeft {:?} after it went out",
        r - out_at,
        l - out_at
    );
    sim.check(r < l, || "left before recovering".into());
    let timed_out = sim.client_left(ha);
    sim.check(
        matches!(timed_out, Some((_, LeaveReason::TimedOut))),
        || format!("server: {timed_out:?}"),
    );
    // The window: offline after 5 s, gone after the 15 s idle timeout.
    sim.check(
        l >= out_at + 14 * SECOND && l < out_at + 17 * SECOND,
        || format!("left at {:?} after going out", l - out_at),
    );
    sim.check(
        !sim.client_events("b")
            .any(|(_, e)| matches!(e, ClientEvent::PeerRecovered { .. })),
        || "recovered without coming back".into(),
    );
}
