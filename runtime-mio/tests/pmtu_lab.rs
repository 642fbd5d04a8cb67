//! Path-MTU discovery (RFC 8899 DPLPMTUD, issue #22 item 4) on real links: real `pierce
//! server` and `pierce peer` processes in the NAT lab's namespaces (`nat_lab/lab.rs`), with a
//! link of MTU 1280 in the middle of the path (with and without the ICMP errors that say so:
//! a path-MTU black hole), or a host whose own interface is 1280. The peers exchange 1.2 MB of
//! reliable-ordered messages of 100 kB each (fragmented into full-sized datagrams) and must
//! finish; each reports the `path_mtu` of its path to the other (`pierce peer`'s summary,
//! `PeerStats::path_mtu`), which must be what the path carries: at most 1252 bytes of UDP
//! payload over a 1280 link (1280 − 20 IPv4 − 8 UDP; through the server, on each leg: see
//! [`RELAYED_TO_1280`]) and above the 1200 every path starts at (the search found what the
//! path carries; it takes a few seconds: [`HOLD`]); on an ordinary 1500 path the ceiling of
//! probing (1452), direct and through the server. A probe that the path
//! cannot carry must not arrive in fragments, which is what the runtime's sockets are set for
//! (`pierce_os::set_dont_fragment`).
//!
//! Needs root, iproute2 (`ip`) and nftables (`nft`), as the NAT lab does: without them the
//! tests print `SKIPPED pmtu_lab: <reason>` and pass, except under `CI`, where they fail.
//! Every scenario prints one `PMTU ...` line per peer (visible with `--nocapture`); a failing
//! one panics with both peers' and the server's output and the routers' nftables counters;
//! `NAT_LAB_DUMP=1` prints the same for passing ones.

#![cfg(all(target_os = "linux", feature = "cli"))]

#[path = "nat_lab/lab.rs"]
#[allow(dead_code)] // shared with nat_lab.rs, which uses the rest
mod lab;
#[path = "nat_lab/proc.rs"]
mod proc;

use std::ops::RangeInclusive;

use lab::{Host, Lab, Nat};
use proc::{Finished, Proc, Server, bool_field, number_field, string_field};

/// Messages each peer sends the other.
const SEND: u32 = 12;
/// Bytes per message: 12 × 100 000 = 1.2 MB each way, every message ≥ 100 kB.
const SIZE: &str = "100000";
/// The peers' own `--timeout`, in seconds (the lab's hard limit per process is 60 s).
const PEER_TIMEOUT: &str = "45";
/// Seconds each peer stays after the exchange: path-MTU search goes on while the path is
/// idle. On a narrowed path it takes a few seconds: every size too large costs three probes
/// lost, one probe timeout each (RFC 8899 MAX_PROBES), before the search halves its interval
/// (1452, 1326, 1263 lost, then 1231 and up); with 3 s here about half the runs were still at
/// the base when they ended.
const HOLD: &str = "10";

/// UDP payload a 1280-byte IPv4 link carries: 1280 − 20 (IPv4) − 8 (UDP).
const OVER_1280: usize = 1252;
/// Every path starts here (`pierce_core::BASE_DATAGRAM_SIZE`).
const BASE: usize = 1200;
/// Above the base: the search found a larger size that the narrowed path carries (probes
/// time out, so a path that carried nothing larger would stay at the base).
const FOUND: usize = BASE + 1;
/// The ceiling of probing (`pierce_core::MAX_DATAGRAM_SIZE`).
const MAX: usize = 1452;
/// On the relay path `path_mtu` counts the larger of the relay's two headers
/// (`pierce_core::wire::relay::RELAY_HEADER_LEN`, 32 bytes, client to server) in front of the
/// peer packet; from the server to the receiver it travels behind the smaller one
/// (`RELAYED_HEADER_LEN`, 16). So a sender whose receiver is behind a 1280 link may reach
/// this much: its own leg carries it, the receiver's leg 16 bytes less, 1252.
const RELAYED_TO_1280: usize = OVER_1280 + 32 - 16;

/// A fresh lab, or `None` (after printing why) where the lab cannot run; under `CI` that is a
/// failure instead.
fn lab() -> Option<Lab> {
    if let Err(why) = lab::prerequisites() {
        if std::env::var_os("CI").is_some() {
            panic!("pmtu_lab cannot run, and CI must run it: {why}");
        }
        println!("SKIPPED pmtu_lab: {why}");
        return None;
    }
    Some(Lab::new().unwrap_or_else(|e| panic!("building the lab failed: {e}")))
}

/// What one peer's summary says about the other.
struct Side {
    label: &'static str,
    run: Finished,
    ok: bool,
    path: String,
    received: u32,
    path_mtu: Option<usize>,
    /// The address of the last `path_changed` to direct.
    direct_addr: Option<String>,
}

impl Side {
    fn read(label: &'static str, run: Finished) -> Self {
        let summary = run.last_line().to_owned();
        let entry = summary
            .find(r#""peers":[{"#)
            .map_or("", |start| &summary[start..]);
        Self {
            label,
            ok: summary.starts_with(r#"{"event":"summary","#)
                && bool_field(&summary, "ok") == Some(true)
                && run.success(),
            path: string_field(entry, "path").unwrap_or_else(|| "none".to_owned()),
            received: number_field(entry, "received").map_or(0, |n| n as u32),
            path_mtu: number_field(entry, "path_mtu").map(|n| n as usize),
            direct_addr: run
                .stdout
                .iter()
                .rev()
                .filter(|l| l.contains(r#""event":"path_changed""#))
                .filter(|l| l.contains(r#""path":"direct""#))
                .find_map(|l| string_field(l, "addr")),
            run,
        }
    }
}

/// What a scenario must show.
struct Expect {
    /// "direct" or "relay".
    path: &'static str,
    /// Where each side's `path_mtu` must lie: a's (the host whose NAT or interface a scenario
    /// narrows), then b's.
    path_mtu: [RangeInclusive<usize>; 2],
}

/// How a scenario's hosts sit and run.
#[derive(Clone, Copy)]
struct Setup<'a> {
    /// `pierce peer --relay-only`: never punch.
    relay_only: bool,
    /// More `pierce peer` flags.
    extra: &'a [&'a str],
    /// The routers route IPv6 too ([`Lab::with_ipv6`]) and sit behind symmetric IPv4 NATs:
    /// the peers (bound to `[::]:0`) can go direct over IPv6 only.
    ipv6: bool,
}

/// Two hosts, one behind each of two NATs (full cone, so they go direct unless
/// `setup.relay_only`; symmetric with `setup.ipv6`), `prepare`d (the links' MTUs, a black
/// hole), exchange [`SEND`] messages of [`SIZE`] bytes both ways through a `pierce server`;
/// fails unless both finish with everything over `expect.path` (with `setup.ipv6`: direct over
/// IPv6) with a `path_mtu` in `expect.path_mtu`.
fn scenario(
    name: &str,
    setup: Setup<'_>,
    prepare: impl FnOnce(&Lab, &[Host]) -> Result<(), String>,
    expect: Expect,
) {
    let Some(mut lab) = lab() else {
        return;
    };
    let nat = if setup.ipv6 {
        lab = lab
            .with_ipv6()
            .unwrap_or_else(|e| panic!("{name}: building the lab failed: {e}"));
        Nat::Symmetric
    } else {
        Nat::FullCone
    };
    let mut hosts = lab
        .add_nat(nat, 1, 0)
        .unwrap_or_else(|e| panic!("{name}: building the lab failed: {e}"));
    hosts.extend(
        lab.add_nat(nat, 1, 0)
            .unwrap_or_else(|e| panic!("{name}: building the lab failed: {e}")),
    );
    prepare(&lab, &hosts).unwrap_or_else(|e| panic!("{name}: preparing the lab failed: {e}"));
    let mut server = Server::start(&lab.server_ns());
    let labels = ["a", "b"];
    let peers: Vec<Proc> = labels
        .iter()
        .zip(&hosts)
        .map(|(label, host)| {
            let send = SEND.to_string();
            let mut args = vec![
                "peer",
                "--room",
                "pmtu",
                "--peers",
                "1",
                "--send",
                &send,
                "--size",
                SIZE,
                "--hold",
                HOLD,
                "--timeout",
                PEER_TIMEOUT,
                "--name",
                label,
                "--json",
                "--server",
                lab::SERVER,
            ];
            if setup.relay_only {
                args.push("--relay-only");
            }
            if setup.ipv6 {
                args.extend(["--bind", "[::]:0"]);
            }
            args.extend_from_slice(setup.extra);
            Proc::spawn(&host.ns, &args)
        })
        .collect();
    let sides: Vec<Side> = peers
        .into_iter()
        .zip(labels)
        .map(|(p, label)| Side::read(label, p.finish()))
        .collect();
    let server = server.stop();
    let mut problems = Vec::new();
    for (s, want) in sides.iter().zip(&expect.path_mtu) {
        println!(
            "PMTU scenario={name} side={} path={} direct_addr={} ok={} received={} path_mtu={} \
             run_s={:.1}",
            s.label,
            s.path,
            s.direct_addr.as_deref().unwrap_or("null"),
            s.ok,
            s.received,
            s.path_mtu
                .map_or_else(|| "null".to_owned(), |m| m.to_string()),
            s.run.elapsed.as_secs_f64(),
        );
        if !s.ok {
            problems.push(format!("{}: the run failed", s.label));
        }
        if s.received != SEND {
            problems.push(format!("{}: received {} of {SEND}", s.label, s.received));
        }
        if setup.ipv6 && !s.direct_addr.as_deref().is_some_and(|a| a.starts_with('[')) {
            problems.push(format!(
                "{}: direct over {:?}, not IPv6",
                s.label, s.direct_addr
            ));
        }
        if s.path != expect.path {
            problems.push(format!(
                "{}: path {} where {} was expected",
                s.label, s.path, expect.path
            ));
        }
        if !s.path_mtu.is_some_and(|m| want.contains(&m)) {
            problems.push(format!(
                "{}: path_mtu {:?}, not in {want:?}",
                s.label, s.path_mtu
            ));
        }
    }
    if problems.is_empty() && std::env::var_os("NAT_LAB_DUMP").is_none() {
        return;
    }
    let mut dump = String::new();
    for s in &sides {
        dump.push_str(&s.run.dump(&format!("peer {}", s.label)));
    }
    if let Some(server) = &server {
        dump.push_str(&server.dump("server"));
    }
    let diagnostics = lab.diagnostics();
    if problems.is_empty() {
        println!("{name}: passed\n{dump}{diagnostics}");
        return;
    }
    panic!("{name}: {}\n{dump}{diagnostics}", problems.join("; "));
}

/// Direct paths over IPv4.
const DIRECT: Setup<'static> = Setup {
    relay_only: false,
    extra: &[],
    ipv6: false,
};
/// Every peer on the relay (`--relay-only`).
const RELAYED: Setup<'static> = Setup {
    relay_only: true,
    ..DIRECT
};

/// Nothing changed: every link has an MTU of 1500.
fn plain(_: &Lab, _: &[Host]) -> Result<(), String> {
    Ok(())
}

/// The first host's NAT forwards nothing over 1280 bytes (its WAN link and its LAN side have
/// that MTU): both the direct path and the path through the server cross it.
fn narrow_link(lab: &Lab, hosts: &[Host]) -> Result<(), String> {
    lab.set_router_mtu(&hosts[0], 1280)
}

/// The first host's NAT forwards nothing over 1280 bytes and drops every ICMP error it would
/// send or forward: no "fragmentation needed" ever reaches a sender.
fn black_hole(lab: &Lab, hosts: &[Host]) -> Result<(), String> {
    lab.black_hole(&hosts[0], 1280)
}

#[test]
fn over_a_1280_link_the_direct_path_mtu_stays_within_1252_and_1_2_mb_arrive() {
    let expect = Expect {
        path: "direct",
        path_mtu: [FOUND..=OVER_1280, FOUND..=OVER_1280],
    };
    scenario("direct-1280-link", DIRECT, narrow_link, expect);
}

/// Through the server: the side behind the link stays within 1252 on its own leg; the other
/// side's datagrams may be 16 bytes larger (see [`RELAYED_TO_1280`]), so the leg to the first
/// one carries at most 1252 too.
#[test]
fn over_a_1280_link_the_relay_path_mtu_fits_it_on_both_legs_and_1_2_mb_arrive() {
    let expect = Expect {
        path: "relay",
        path_mtu: [FOUND..=OVER_1280, FOUND..=RELAYED_TO_1280],
    };
    scenario("relay-1280-link", RELAYED, narrow_link, expect);
}

#[test]
fn a_direct_path_of_1500_reaches_the_ceiling_of_1452() {
    let expect = Expect {
        path: "direct",
        path_mtu: [MAX..=MAX, MAX..=MAX],
    };
    scenario("direct-1500", DIRECT, plain, expect);
}

/// Through the server, the path carries more than a 1280 link would, up to the ceiling (the
/// relay's header counts in `path_mtu`, and the server's sockets send whole datagrams too).
#[test]
fn a_relay_path_of_1500_grows_past_what_a_1280_link_carries() {
    let expect = Expect {
        path: "relay",
        path_mtu: [RELAYED_TO_1280 + 1..=MAX, RELAYED_TO_1280 + 1..=MAX],
    };
    scenario("relay-1500", RELAYED, plain, expect);
}

/// No ICMP ever says why large datagrams vanish: probes above 1252 bytes are lost, the path
/// stays at what it carries, and the transfer finishes.
#[test]
fn behind_a_black_hole_that_drops_icmp_the_direct_path_stays_within_1252_and_finishes() {
    let expect = Expect {
        path: "direct",
        path_mtu: [FOUND..=OVER_1280, FOUND..=OVER_1280],
    };
    scenario("direct-black-hole", DIRECT, black_hole, expect);
}

/// The same through the server (each leg fits the link, as over the plain 1280 link).
#[test]
fn behind_a_black_hole_that_drops_icmp_the_relay_path_fits_it_and_finishes() {
    let expect = Expect {
        path: "relay",
        path_mtu: [FOUND..=OVER_1280, FOUND..=RELAYED_TO_1280],
    };
    scenario("relay-black-hole", RELAYED, black_hole, expect);
}

/// The first host's own interface is 1280: its probes above 1252 bytes fail their send on the
/// host (`EMSGSIZE`: counted and dropped by the driver, never fatal), and the other host's
/// reach a LAN link that cannot carry them. Both stay within 1252 and finish.
#[test]
fn a_host_on_a_1280_interface_has_its_large_probes_refused_locally_and_finishes() {
    let narrow_host = |lab: &Lab, hosts: &[Host]| lab.set_host_mtu(&hosts[0], 1280);
    let expect = Expect {
        path: "direct",
        path_mtu: [FOUND..=OVER_1280, FOUND..=OVER_1280],
    };
    scenario("direct-1280-host", DIRECT, narrow_host, expect);
}

/// `pierce peer --max-datagram-size 1200` (the base) turns probing off: an ordinary 1500 path,
/// direct or through the server, stays at 1200.
#[test]
fn with_max_datagram_size_1200_nothing_is_probed_and_the_path_stays_at_1200() {
    let base = BASE.to_string();
    for (name, relay_only, path) in [
        ("direct-1500-capped", false, "direct"),
        ("relay-1500-capped", true, "relay"),
    ] {
        let expect = Expect {
            path,
            path_mtu: [BASE..=BASE, BASE..=BASE],
        };
        let extra = ["--max-datagram-size", base.as_str()];
        let setup = Setup {
            relay_only,
            extra: &extra,
            ipv6: false,
        };
        scenario(name, setup, plain, expect);
    }
}

/// UDP payload a 1280-byte IPv6 link carries: 1280 − 40 (IPv6) − 8 (UDP), the IPv6 minimum.
const OVER_1280_V6: usize = 1232;

/// Direct over IPv6 (the IPv4 NATs are symmetric), across a router that forwards nothing over
/// 1280 bytes: IPv6 routers never fragment, they answer with ICMPv6 Packet Too Big, which the
/// sockets ignore; the probes find 1232 at most.
#[test]
fn direct_over_ipv6_across_a_1280_router_the_path_mtu_stays_within_1232() {
    let setup = Setup {
        ipv6: true,
        ..DIRECT
    };
    let expect = Expect {
        path: "direct",
        path_mtu: [FOUND..=OVER_1280_V6, FOUND..=OVER_1280_V6],
    };
    scenario("direct-ipv6-1280-link", setup, narrow_link, expect);
}

/// Direct over IPv6 on 1500 links: the ceiling, 1452, is exactly what IPv6 carries there.
#[test]
fn direct_over_ipv6_on_1500_links_reaches_1452() {
    let setup = Setup {
        ipv6: true,
        ..DIRECT
    };
    let expect = Expect {
        path: "direct",
        path_mtu: [MAX..=MAX, MAX..=MAX],
    };
    scenario("direct-ipv6-1500", setup, plain, expect);
}
