//! TCP fallback (issue #10): a client behind a firewall that blocks UDP reaches the server over
//! a TCP stream, plays in a group through the relay, and moves back to UDP once UDP works;
//! a client told to use TCP stays on it; a server restart under a TCP client is survived.
//! Every reliable message arrives exactly once, in order, throughout.
#![allow(clippy::field_reassign_with_default)] // ClientConfig is #[non_exhaustive]

use std::time::Duration;

use pierce_core::{Channel, ClientConfig, ClientEvent, HostId, Path, SocketId, Transport};
use pierce_sim::{
    Action, Edge, LinkProfile, NatConfig, PacketRecord, SERVER, Scenario, Sim, format_time, seed_or,
};

mod common;
use common::received;

const SECOND: Duration = Duration::from_secs(1);
/// One message per flow per tick.
const TICK: Duration = Duration::from_millis(40);

/// When `name` first logged an event matching `pred`.
fn first_at(sim: &Sim, name: &str, pred: impl Fn(&ClientEvent) -> bool) -> Option<Duration> {
    sim.client_events(name)
        .find(|(_, e)| pred(e))
        .map(|(t, _)| t)
}

/// Whether the server's session of `host` is on a TCP stream.
fn server_side_tcp(sim: &Sim, host: HostId) -> Option<bool> {
    sim.server().client_socket(host).map(SocketId::is_stream)
}

/// The last `n` traced packets from or to `name`, one line each, for failure reports.
fn trace_tail(sim: &Sim, name: &str, n: usize) -> String {
    let lines: Vec<String> = sim
        .packets()
        .iter()
        .filter(|p| {
            p.from == name
                || p.fates.iter().any(
                    |f| matches!(f, pierce_sim::PacketFate::Delivered { to, .. } if to == name),
                )
        })
        .map(|p: &PacketRecord| {
            format!(
                "{} {} {} -> {} {}B kind {:#04x}{} {:?}",
                format_time(p.sent_at),
                p.from,
                p.src,
                p.dst,
                p.len,
                p.kind,
                if p.tcp { " tcp" } else { "" },
                p.fates
            )
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n    ")
}

/// Sends message `i` on `Channel::RELIABLE_ORDERED` for each (sender, receiver) flow.
fn send_round(sim: &mut Sim, flows: &[(&str, HostId)], i: u32) {
    for &(from, to) in flows {
        let sent = sim.with_client(from, |c, now| {
            c.send(now, to, Channel::RELIABLE_ORDERED, &i.to_be_bytes())
        });
        if let Err(e) = sent {
            sim.fail(format!("{from} -> {to:?}: message {i} refused: {e}"));
        }
    }
}

/// Waits for every flow to deliver `0..n`, then checks each got exactly that.
#[track_caller]
fn check_delivery(sim: &mut Sim, flows: &[(&str, &str, HostId)], n: u32) {
    let all: Vec<u32> = (0..n).collect();
    sim.eventually("every stream arrives", 20 * SECOND, |s| {
        flows
            .iter()
            .all(|&(_, to, from)| received(s, to, from).len() >= all.len())
    });
    sim.advance(2 * SECOND); // and nothing more comes
    for &(from_name, to, from) in flows {
        let got = received(sim, to, from);
        sim.check(got == all, || {
            let dup = got.len().saturating_sub(all.len());
            let first_bad = got.iter().zip(&all).position(|(g, a)| g != a);
            format!(
                "{from_name} -> {to}: {} messages ({dup} extra), first out of place at {first_bad:?}; \
                 not 0..{n} once in order",
                got.len()
            )
        });
    }
}

#[test]
fn a_udp_blocked_client_plays_over_tcp_then_moves_back_to_udp_without_losing_a_message() {
    let mut sim = Scenario::new(seed_or(10))
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .client("b", Edge::nat(NatConfig::port_restricted()))
        .client("c", Edge::nat(NatConfig::symmetric()))
        .link(LinkProfile::broadband())
        .trace_packets(true)
        .at(Duration::ZERO, Action::block_udp("a"))
        .build();
    let [ha, hb, hc] = sim.group_up(&["a", "b", "c"])[..] else {
        unreachable!("three names")
    };
    let connected_at = sim.expect_connected("a").at;
    sim.check(sim.client("a").on_tcp(), || {
        format!(
            "a is not on TCP after connecting at {}:\n    {}",
            format_time(connected_at),
            trace_tail(&sim, "a", 20)
        )
    });
    sim.check(server_side_tcp(&sim, ha) == Some(true), || {
        "the server's session of a is not on a stream".into()
    });
    sim.check(sim.net_stats().firewall > 0, || {
        "a's UDP was never dropped".into()
    });
    sim.check(
        connected_at >= ClientConfig::default().tcp_fallback_after,
        || format!("a connected at {connected_at:?}, before the fallback"),
    );
    let on_tcp_at = first_at(&sim, "a", |e| {
        matches!(e, ClientEvent::ServerTransport { tcp: true })
    });
    sim.check(on_tcp_at == Some(connected_at), || {
        format!("a reported TCP at {on_tcp_at:?}")
    });

    // 300 messages each way between a and each of b and c; UDP opens for a at message 75.
    let n = 300u32;
    let unblock_at_msg = 75;
    let flows = [("a", hb), ("b", ha), ("a", hc), ("c", ha)];
    let start = sim.elapsed();
    let mut unblocked_at = None;
    for i in 0..n {
        send_round(&mut sim, &flows, i);
        if i == unblock_at_msg {
            sim.apply(Action::unblock_udp("a")).expect("no busy loop");
            unblocked_at = Some(sim.elapsed());
        }
        if unblocked_at.is_none() {
            sim.check(sim.client("a").on_tcp(), || {
                format!("a left TCP at message {i} while UDP was blocked")
            });
        }
        sim.advance(TICK);
    }
    let unblocked_at = unblocked_at.expect("unblocked");
    check_delivery(
        &mut sim,
        &[
            ("a", "b", ha),
            ("b", "a", hb),
            ("a", "c", ha),
            ("c", "a", hc),
        ],
        n,
    );

    let to_udp = first_at(&sim, "a", |e| {
        matches!(e, ClientEvent::ServerTransport { tcp: false })
    });
    let Some(to_udp) = to_udp else {
        sim.fail(format!(
            "a never moved back to UDP after {}; its events: {:?}\n    {}",
            format_time(unblocked_at),
            sim.event_lines("a"),
            trace_tail(&sim, "a", 30)
        ));
    };
    let probe_every = ClientConfig::default().udp_probe_interval;
    sim.check(
        to_udp > unblocked_at && to_udp < unblocked_at + probe_every + SECOND,
        || {
            format!(
                "a moved to UDP at {}, UDP opened at {}",
                format_time(to_udp),
                format_time(unblocked_at)
            )
        },
    );
    sim.check(!sim.client("a").on_tcp(), || "a is still on TCP".into());
    sim.check(server_side_tcp(&sim, ha) == Some(false), || {
        "the server's session of a is still on a stream".into()
    });
    sim.advance(5 * SECOND);
    sim.check(sim.streams("a").is_empty(), || {
        format!("a's stream is still open: {:?}", sim.streams("a"))
    });
    for name in ["a", "b", "c"] {
        sim.check(sim.disconnected(name).is_none(), || {
            format!("{name} lost its session")
        });
        let churn = sim
            .client_events(name)
            .filter(|(t, e)| {
                *t > start
                    && matches!(
                        e,
                        ClientEvent::MemberLeft { .. } | ClientEvent::MemberJoined { .. }
                    )
            })
            .count();
        sim.check(churn == 0, || format!("{name} saw membership change"));
    }
    // Not required: a and b (both port-restricted) may now punch a direct path; c is
    // symmetric, so a <-> c stays relayed.
    let direct = |s: &Sim| matches!(s.peer_path("a", hb), Some(Path::Direct(_)));
    let direct_at = sim
        .run_until(direct, 60 * SECOND)
        .ok()
        .map(|()| format_time(sim.elapsed()));
    let stats = sim.stream_stats();
    eprintln!(
        "tcp fallback (seed {}): a connected over TCP at {}, UDP unblocked at {}, moved to UDP at \
         {}; {n} messages each way a<->b and a<->c, each once in order; a<->b direct at \
         {direct_at:?}; streams: {stats:?}",
        sim.seed(),
        format_time(connected_at),
        format_time(unblocked_at),
        format_time(to_udp),
    );
}

#[test]
fn a_client_told_to_use_tcp_stays_on_it_and_never_probes_udp() {
    let mut tcp = ClientConfig::default();
    tcp.transport = Transport::Tcp;
    let mut sim = Scenario::new(seed_or(11))
        .client_with("t", Edge::nat(NatConfig::port_restricted()), tcp)
        .client("u", Edge::nat(NatConfig::port_restricted()))
        .link(LinkProfile::broadband())
        .trace_packets(true)
        .build();
    let [ht, hu] = sim.group_up(&["t", "u"])[..] else {
        unreachable!("two names")
    };
    let connected_at = sim.expect_connected("t").at;
    sim.check(connected_at < SECOND, || {
        format!(
            "t connected at {}: it should not wait for UDP first",
            format_time(connected_at)
        )
    });
    let n = 200u32;
    let flows = [("t", hu), ("u", ht)];
    for i in 0..n {
        send_round(&mut sim, &flows, i);
        sim.advance(TICK);
        sim.check(sim.client("t").on_tcp(), || {
            format!("t left TCP at message {i}")
        });
    }
    check_delivery(&mut sim, &[("t", "u", ht), ("u", "t", hu)], n);
    sim.advance(10 * SECOND);
    sim.check(sim.client("t").on_tcp(), || "t left TCP".into());
    sim.check(server_side_tcp(&sim, ht) == Some(true), || {
        "the server's session of t is not on a stream".into()
    });
    let moves = sim
        .client_events("t")
        .filter(|(_, e)| matches!(e, ClientEvent::ServerTransport { tcp: false }))
        .count();
    sim.check(moves == 0, || {
        let events: Vec<String> = sim
            .event_lines("t")
            .into_iter()
            .filter(|l| l.contains("Transport") || l.contains("Connected"))
            .collect();
        format!("t moved to UDP {moves} times: {events:?}")
    });
    let stats = sim.client_stats("t");
    sim.check(stats.udp_probes_sent == 0, || {
        format!("t probed UDP {} times", stats.udp_probes_sent)
    });
    let server = sim.server_addr();
    let udp_to_server: Vec<&PacketRecord> = sim
        .packets()
        .iter()
        // STUN (first byte 0x00/0x01) still finds t's UDP address for its peers to punch to.
        .filter(|p| p.from == "t" && !p.tcp && p.dst == server && p.kind > 0x01)
        .collect();
    sim.check(udp_to_server.is_empty(), || {
        format!(
            "t sent {} session datagrams to the server over UDP, first {:?}",
            udp_to_server.len(),
            udp_to_server.first()
        )
    });
    eprintln!(
        "tcp only (seed {}): t connected at {}, {n} messages each way once in order, {} stream \
         frames, path t->u {:?}",
        sim.seed(),
        format_time(connected_at),
        sim.stream_stats().frames,
        sim.peer_path("t", hu),
    );
}

#[test]
fn a_server_restart_under_a_tcp_client_closes_its_stream_and_it_comes_back() {
    let mut sim = Scenario::new(seed_or(12))
        .client("a", Edge::nat(NatConfig::port_restricted()))
        .client("b", Edge::nat(NatConfig::port_restricted()))
        .link(LinkProfile::broadband())
        .trace_packets(true)
        .at(Duration::ZERO, Action::block_udp("a"))
        .build();
    sim.eventually("both connect", 10 * SECOND, |s| {
        s.connected("a").is_some() && s.connected("b").is_some()
    });
    sim.check(sim.client("a").on_tcp(), || "a is not on TCP".into());
    let first = sim.expect_connected("a");
    sim.advance(3 * SECOND);
    let restart_at = sim.elapsed();
    sim.apply(Action::RestartServer).expect("no busy loop");
    sim.eventually("a's stream closes", SECOND, |s| {
        s.stream_stats().closed >= 1
    });
    sim.check(sim.client_stats("a").tcp_streams_closed >= 1, || {
        "a's core was not told its stream closed".into()
    });
    // Either the client comes back by itself (re-registration), or its session times out
    // and the application reconnects it, as after a restart over UDP.
    let back = |s: &Sim, n: &str| s.connected(n).is_some_and(|c| c.at > restart_at);
    let by_itself = sim.run_until(|s| back(s, "a") && back(s, "b"), 30 * SECOND);
    let how = if by_itself.is_ok() {
        "by itself".to_owned()
    } else {
        let mut reconnected = Vec::new();
        for n in ["a", "b"] {
            if !back(&sim, n) {
                sim.check(sim.disconnected(n).is_some(), || {
                    format!("{n} neither came back nor timed out")
                });
                sim.apply(Action::reconnect(n)).expect("no busy loop");
                reconnected.push(n);
            }
        }
        sim.eventually("both connect again", 15 * SECOND, |s| {
            back(s, "a") && back(s, "b")
        });
        format!("after Reconnect of {reconnected:?}")
    };
    let again = sim.expect_connected("a");
    sim.check(sim.client("a").on_tcp(), || {
        format!(
            "a came back off TCP although UDP is blocked:\n    {}",
            trace_tail(&sim, "a", 20)
        )
    });
    sim.check(server_side_tcp(&sim, again.host_id) == Some(true), || {
        "the new server's session of a is not on a stream".into()
    });
    sim.check(!sim.streams(SERVER).is_empty(), || {
        "the new server has no stream".into()
    });
    // And it works: a message each way through the new server.
    let [ha, hb] = sim.group_up(&["a", "b"])[..] else {
        unreachable!("two names")
    };
    send_round(&mut sim, &[("a", hb), ("b", ha)], 0);
    check_delivery(&mut sim, &[("a", "b", ha), ("b", "a", hb)], 1);
    let streams = sim.stream_stats();
    eprintln!(
        "server restart under TCP (seed {}): a connected at {}, server restarted at {}, a back \
         over TCP at {} {how}; streams: {} connects, {} opened, {} closed by the other end",
        sim.seed(),
        format_time(first.at),
        format_time(restart_at),
        format_time(again.at),
        streams.connects,
        streams.opened,
        streams.closed,
    );
}

/// The same seed gives the same run, TCP streams and firewall included.
#[test]
fn the_fallback_is_deterministic() {
    let run = |seed: u64| {
        let mut sim = Scenario::new(seed)
            .client("a", Edge::nat(NatConfig::port_restricted()))
            .client("b", Edge::nat(NatConfig::symmetric()))
            .link(LinkProfile::wifi())
            .trace_packets(true)
            .at(Duration::ZERO, Action::block_udp("a"))
            .at(8 * SECOND, Action::unblock_udp("a"))
            .build();
        let [ha, hb] = sim.group_up(&["a", "b"])[..] else {
            unreachable!("two names")
        };
        for i in 0..100 {
            send_round(&mut sim, &[("a", hb), ("b", ha)], i);
            sim.advance(TICK);
        }
        sim.advance(10 * SECOND);
        let packets: Vec<String> = sim.packets().iter().map(|p| format!("{p:?}")).collect();
        (sim.log_text(), packets, sim.stream_stats(), sim.net_stats())
    };
    let seed = seed_or(13);
    let (first, second) = (run(seed), run(seed));
    assert!(first.2.frames > 0 && first.3.firewall > 0, "{:?}", first.2);
    assert!(first == second, "seed {seed} gave two different runs");
}
