//! The NAT-type matrix as a report: two clients behind every pair of NAT types (the 27 of
//! `NatConfig::all_types()` plus an open host) join one group on broadband links and stream
//! reliable messages both ways for 6 s, for each of N seeds.
//!
//! ```text
//! cargo run --release -p pierce-sim --bin nat-matrix -- [--seeds N] [--start S] [--out DIR] [--dual-stack-only]
//! cargo run --release -p pierce-sim --bin nat-matrix -- --mix [--pairs M] [--start S] [--out DIR] [--ipv6-share P]
//! ```
//!
//! The matrix run prints (and writes to `DIR/nat-matrix.md`) a Markdown table of direct %
//! per pair of types, a summary per pair family (median time from introduction to a direct
//! path, relay share of peer packets), and the oracle's expectation against the outcome; it
//! draws the table as a heatmap in `DIR/nat-matrix.svg`. `DIR` defaults to `target/sim-report`.
//! It then runs the dual-stack rows ([`DUAL_ROWS`]: pairs where one or both ends also have
//! IPv6 behind a stateful firewall, or are IPv6-only behind NAT64) and reports each against
//! the oracle with IPv6 (`direct_path_possible_stacks`) and how many ended direct over IPv6;
//! `--dual-stack-only` runs those rows alone.
//!
//! # IPv6 in the mix
//!
//! A share of the clients ([`IPV6_SHARE`], `--ipv6-share`) is IPv6-capable: dual-stack,
//! their IPv4 edge drawn as usual, their global IPv6 address behind a stateful firewall. The
//! share: Google's IPv6 statistics (<https://www.google.com/intl/en/ipv6/statistics.html>)
//! crossed 50 % of users reaching Google over IPv6 for the first time on 28 March 2026, and
//! APNIC Labs measured 42 % IPv6 capability worldwide at the same time (G. Michaelson,
//! "Google hits 50% IPv6", APNIC blog, 28 April 2026,
//! <https://blog.apnic.net/2026/04/28/google-hits-50-ipv6/>); we take 45 %, between the two.
//! IPv6 draws come from a stream of their own, so the IPv4 edges (and seeds) are those of the
//! mix without IPv6, which runs too, on the same seeds: the report gives the share of pairs
//! direct with and without IPv6.
//!
//! # Internet mix
//!
//! `--mix` draws both ends of M random pairs (default 500, seeded) from the proportions in
//! [`MIX`] and reports the share of pairs that end on a direct path (and writes
//! `DIR/internet-mix.md`), to compare with the hole-punching success of libp2p's DCUtR
//! measured in the wild: **70 % ± 7.1 %** over 4.4 million attempts from 85,000+ networks
//! (Trautwein, Ihle, Schubotz, Gipp: "Challenging Tribal Knowledge – Large Scale Measurement
//! Campaign on Decentralized NAT Traversal", arXiv:2510.27500, 2025).
//!
//! The proportions are a judgement call from published measurements, not a measurement:
//! - Ford, Srisuresh, Kegel, "Peer-to-Peer Communication Across Network Address Translators"
//!   (USENIX ATC 2005): about **82 %** of the NATs tested support UDP hole punching, i.e. map
//!   endpoint-independently; the rest map per destination ("symmetric", hard).
//! - Halkes, Pouwelse, "UDP NAT and Firewall Puncturing in the Wild" (IFIP Networking 2011,
//!   ~3,500 Tribler peers): about **64 %** of all peers sit behind a NAT or firewall that
//!   should allow hole punching.
//! - Tailscale, "NAT traversal, and how we're improving it" (2025): symmetric ("hard") NATs,
//!   CGNAT and multiple NAT layers are what sends traffic to their DERP relays; with every
//!   trick they have, over 90 % of their connections end direct.
//!
//! So: ~10 % open hosts, ~68 % endpoint-independent NATs (mostly port-restricted home
//! routers, some Linux routers with the conntrack quirk, some behind CGNAT), ~22 % hard NATs
//! (endpoint-dependent mapping). With simultaneous punching alone the oracle then expects
//! about 72 % of random pairs to be punchable, which is where DCUtR's 70 % sits; the report
//! holds Pierce to the oracle with port prediction, birthday probing and lockstep sweeps
//! (`Traversal::PIERCE`), which only two hard NATs escape when one allocates at random.
//!
//! Port mapping (`+pmp` rows, `NatConfig::port_mapping`): about a third of the home routers
//! (not the carriers' NATs) honour PCP / NAT-PMP, and a Pierce client behind one asks for a
//! mapping and is then reachable like a full cone. The share is a judgement bounded by
//! DiCioccio, Teixeira, May, Kreibich, "Probe and Pray: Using UPnP for Home Network
//! Measurements" (PAM 2012, LNCS 7192, pp. 96–105,
//! <https://link.springer.com/chapter/10.1007/978-3-642-28537-0_10>): querying the gateways
//! of 120,000 homes (HomeNet Profiler and Netalyzr, 2011) with UPnP, "in the majority of
//! homes we could not collect any UPnP data at all". So fewer than half of home gateways
//! answer UPnP IGD; PCP and NAT-PMP come with the same router software (miniupnpd speaks all
//! three) or instead of it (Apple's routers), so a third is taken for them.
//!
//! Output is deterministic for given arguments.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pierce_core::{Channel, ClientEvent, HostId, Path};
use pierce_sim::report::{
    ABBREVIATIONS, CLASSES, NatType, class_of, direct_at, joined_at, median, nat_types, percentile,
    run_parallel, share_colour, xml_escape,
};
use pierce_sim::{
    Edge, FirewallConfig, LinkProfile, Nat64Config, NatConfig, Scenario, Sim, Stack, Traversal,
    direct_path_possible_stacks, direct_path_possible_with, substream,
};

/// The oracle with what Pierce does (punching, prediction, birthday probing).
fn direct_path_possible(a: &Edge, b: &Edge) -> bool {
    direct_path_possible_with(a, b, Traversal::PIERCE)
}
use rand::Rng;

const SECOND: Duration = Duration::from_secs(1);
/// Messages each way, one per tick.
const MESSAGES: u32 = 60;
const TICK: Duration = Duration::from_millis(100);

/// The internet mix: (weight in %, label, edge). See the module docs for the sources.
const MIX: &[(u32, &str)] = &[
    // No NAT: public IPv4 hosts, servers, some IPv6-reachable hosts.
    (10, "open"),
    // Endpoint-independent mapping, ~68 % in all. `+pmp`: the home router honours PCP /
    // NAT-PMP port mapping, about a third of home routers (see the module docs).
    (3, "full-cone"),
    (2, "full-cone+pmp"),
    (7, "restricted"),
    (3, "restricted+pmp"),
    (23, "port-restricted"),
    (12, "port-restricted+pmp"),
    (5, "linux"),
    (3, "linux+pmp"),
    // Behind a carrier's NAT a home router's mapping does not help (it never asks the CGNAT).
    (10, "cgnat"),
    // Endpoint-dependent mapping, ~22 %.
    (3, "address-dependent"),
    (1, "address-dependent+pmp"),
    (4, "symmetric-seq"),
    (2, "symmetric-seq+pmp"),
    (8, "symmetric"),
    (4, "symmetric+pmp"),
];

/// Share (%) of clients in the internet mix that are IPv6-capable (dual-stack, behind a
/// stateful IPv6 firewall): between Google's 50 % and APNIC's 42 % of April 2026 (see the
/// module docs for the sources).
const IPV6_SHARE: u32 = 45;

/// One end of a pair: its IPv4 edge and its IP stack.
#[derive(Debug, Clone)]
struct End {
    edge: Edge,
    stack: Stack,
}

impl End {
    fn v4(edge: Edge) -> Self {
        Self {
            edge,
            stack: Stack::V4,
        }
    }

    fn dual(edge: Edge) -> Self {
        Self {
            edge,
            stack: Stack::Dual {
                firewall: Some(FirewallConfig::new()),
            },
        }
    }

    fn nat64() -> Self {
        Self {
            edge: Edge::Open,
            stack: Stack::V6Only {
                firewall: Some(FirewallConfig::new()),
                nat64: Some(Nat64Config::new()),
            },
        }
    }
}

/// The oracle with IPv6 and Pierce's techniques.
fn direct_possible(a: &End, b: &End) -> bool {
    direct_path_possible_stacks((&a.edge, &a.stack), (&b.edge, &b.stack), Traversal::PIERCE)
}

/// The matrix's dual-stack rows: (label, end a, end b) as labels [`dual_end`] reads.
const DUAL_ROWS: &[(&str, &str)] = &[
    ("dual/symmetric", "dual/symmetric"),
    ("dual/cgnat-symmetric", "dual/cgnat-symmetric"),
    ("dual/symmetric", "dual/cgnat-symmetric"),
    ("dual/symmetric", "v4/symmetric"),
    ("dual/symmetric", "v4/port-restricted"),
    ("dual/port-restricted", "v4/port-restricted"),
    ("dual/open", "v4/symmetric"),
    ("nat64", "v4/port-restricted"),
    ("nat64", "v4/symmetric"),
    ("nat64", "dual/symmetric"),
];

/// `dual/<edge>` (dual-stack, firewalled IPv6), `v4/<edge>` or `nat64` (IPv6-only behind
/// a NAT64 gateway, firewalled).
fn dual_end(label: &str) -> End {
    match label.split_once('/') {
        Some(("dual", e)) => End::dual(mix_edge(e)),
        Some(("v4", e)) => End::v4(mix_edge(e)),
        _ => End::nat64(),
    }
}

/// What one run of a pair showed.
#[derive(Debug, Clone, Default)]
struct PairRun {
    /// Both clients connected and learnt of each other.
    introduced: bool,
    /// Both ends on a direct path at the end.
    direct: bool,
    /// ... and both over IPv6.
    direct_v6: bool,
    /// From the first introduction (`MemberJoined` naming the other) to both ends having a
    /// validated direct path.
    time_to_direct: Option<Duration>,
    /// Every message arrived, once, in order, both ways.
    delivered: bool,
    /// Peer packets that went through the relay, both ends.
    relayed: u64,
    /// Peer packets sent, both ends.
    peer_packets: u64,
    /// A simulation error (busy loop, step cap), if any.
    error: Option<String>,
}

fn received_in_order(sim: &Sim, name: &str, from: HostId) -> bool {
    let got: Vec<u32> = sim
        .client_events(name)
        .filter_map(|(_, e)| match e {
            ClientEvent::PeerMessage {
                from: f, payload, ..
            } if *f == from => payload
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            _ => None,
        })
        .collect();
    got.len() == MESSAGES as usize && got.iter().enumerate().all(|(i, s)| *s == i as u32)
}

fn run_pair(seed: u64, a: &End, b: &End, link: &LinkProfile) -> PairRun {
    let mut out = PairRun::default();
    if let Err(e) = run_pair_inner(seed, a, b, link, &mut out) {
        out.error = Some(e);
    }
    out
}

fn run_pair_inner(
    seed: u64,
    a: &End,
    b: &End,
    link: &LinkProfile,
    out: &mut PairRun,
) -> Result<(), String> {
    let mut sim = Scenario::new(seed)
        .link(link.clone())
        .client_stack("a", a.edge.clone(), a.stack.clone())
        .client_stack("b", b.edge.clone(), b.stack.clone())
        .build();
    let connected = sim.run_until(
        |s| s.connected("a").is_some() && s.connected("b").is_some(),
        10 * SECOND,
    );
    if connected.is_err() {
        return Err("a client did not connect".to_owned());
    }
    let (ha, hb) = (
        sim.expect_connected("a").host_id,
        sim.expect_connected("b").host_id,
    );
    sim.with_server(|srv, now| srv.create_group(now, &[ha, hb]))
        .map_err(|e| e.to_string())?;
    sim.run_until(
        |s| s.client("a").peers().any(|p| p == hb) && s.client("b").peers().any(|p| p == ha),
        5 * SECOND,
    )
    .map_err(|e| e.summary())?;
    out.introduced = true;
    for i in 0..MESSAGES {
        let mut payload = i.to_le_bytes().to_vec();
        payload.resize(64, 0xab);
        for (from, to) in [("a", hb), ("b", ha)] {
            sim.with_client(from, |c, now| {
                c.send(now, to, Channel::RELIABLE_ORDERED, &payload)
            })
            .map_err(|e| format!("send: {e}"))?;
        }
        sim.run_for(TICK).map_err(|e| e.summary())?;
    }
    // Settle: until both ends are direct, for at most 8 s (birthday probing needs about
    // three after discovery's filtering tests).
    let both_direct = |s: &Sim| {
        [("a", hb), ("b", ha)].iter().all(|(n, p)| {
            matches!(
                s.client(n).peer_stats(*p).map(|st| st.path),
                Some(Path::Direct(_))
            )
        })
    };
    for _ in 0..8 {
        if both_direct(&sim) {
            break;
        }
        sim.run_for(SECOND).map_err(|e| e.summary())?;
    }
    sim.run_for(SECOND).map_err(|e| e.summary())?;

    let path_direct = |s: &Sim, name: &str, peer: HostId| {
        matches!(
            s.client(name).peer_stats(peer).map(|p| p.path),
            Some(Path::Direct(_))
        )
    };
    out.direct = path_direct(&sim, "a", hb) && path_direct(&sim, "b", ha);
    out.direct_v6 = [("a", hb), ("b", ha)].iter().all(|(n, p)| {
        matches!(
            sim.client(n).peer_stats(*p).map(|st| st.path),
            Some(Path::Direct(addr)) if addr.is_ipv6()
        )
    });
    let intro = joined_at(&sim, "a", hb).min(joined_at(&sim, "b", ha));
    let direct = direct_at(&sim, "a", hb).zip(direct_at(&sim, "b", ha));
    out.time_to_direct = intro
        .zip(direct)
        .map(|(i, (x, y))| x.max(y).saturating_sub(i));
    out.delivered = received_in_order(&sim, "b", ha) && received_in_order(&sim, "a", hb);
    out.relayed = sim.client_stats("a").relayed_out + sim.client_stats("b").relayed_out;
    out.peer_packets = [("a", hb), ("b", ha)]
        .iter()
        .filter_map(|(n, p)| sim.client(n).peer_stats(*p))
        .map(|s| s.packets_sent)
        .sum();
    Ok(())
}

struct Args {
    seeds: u64,
    start: u64,
    out: PathBuf,
    mix: bool,
    pairs: usize,
    dual_only: bool,
    ipv6_share: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 3,
        start: 1,
        out: PathBuf::from("target/sim-report"),
        mix: false,
        pairs: 500,
        dual_only: false,
        ipv6_share: IPV6_SHARE,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |v: String, name: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name} needs a number, not {v:?}"))
        };
        match a.as_str() {
            "--seeds" => args.seeds = number(value("--seeds")?, "--seeds")?.max(1),
            "--start" => args.start = number(value("--start")?, "--start")?,
            "--pairs" => args.pairs = number(value("--pairs")?, "--pairs")?.max(1) as usize,
            "--out" => args.out = PathBuf::from(value("--out")?),
            "--mix" => args.mix = true,
            "--dual-stack-only" => args.dual_only = true,
            "--ipv6-share" => {
                let p = number(value("--ipv6-share")?, "--ipv6-share")?;
                args.ipv6_share = u32::try_from(p.min(100)).unwrap_or(100);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

const USAGE: &str = "usage: nat-matrix [--seeds N] [--start S] [--out DIR] [--dual-stack-only]\n       \
                     nat-matrix --mix [--pairs M] [--start S] [--out DIR] [--ipv6-share P]";

#[allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool
fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    #[allow(clippy::disallowed_methods)] // wall time, only to print how long the run took
    let started = std::time::Instant::now();
    let result = if args.mix {
        internet_mix(&args)
    } else {
        matrix(&args)
    };
    match result {
        Ok(()) => {
            eprintln!(
                "(ran in {:.1} s wall time)",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn pct(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".to_owned(), |d| format!("{} ms", d.as_millis()))
}

// ---- the matrix --------------------------------------------------------------------------

/// Per unordered pair of types: the runs over every seed.
struct Cell {
    i: usize,
    j: usize,
    expect: bool,
    runs: Vec<PairRun>,
}

impl Cell {
    fn direct(&self) -> usize {
        self.runs.iter().filter(|r| r.direct).count()
    }
}

#[allow(clippy::print_stdout)] // a command-line tool
fn matrix(args: &Args) -> Result<(), String> {
    if args.dual_only {
        let md = dual_rows(args);
        print!("{md}");
        let path = args.out.join("nat-matrix-dual-stack.md");
        write_file(&path, &md)?;
        println!("\nwrote {}", path.display());
        return Ok(());
    }
    let types = nat_types();
    let link = LinkProfile::broadband();
    let seeds: Vec<u64> = (args.start..args.start + args.seeds).collect();
    let mut jobs = Vec::new();
    for i in 0..types.len() {
        for j in i..types.len() {
            for &seed in &seeds {
                jobs.push((i, j, seed));
            }
        }
    }
    let results = run_parallel(&jobs, |&(i, j, seed)| {
        let (a, b) = (
            End::v4(types[i].edge.clone()),
            End::v4(types[j].edge.clone()),
        );
        run_pair(seed, &a, &b, &link)
    });
    let mut cells: Vec<Cell> = Vec::new();
    for (&(i, j, _), r) in jobs.iter().zip(results) {
        if cells.last().is_none_or(|c| (c.i, c.j) != (i, j)) {
            cells.push(Cell {
                i,
                j,
                expect: direct_path_possible(&types[i].edge, &types[j].edge),
                runs: Vec::new(),
            });
        }
        if let Some(c) = cells.last_mut() {
            c.runs.push(r);
        }
    }
    let mut md = matrix_markdown(&types, &cells, &seeds);
    md.push('\n');
    md.push_str(&dual_rows(args));
    print!("{md}");
    let svg = matrix_svg(&types, &cells, &seeds);
    let md_path = args.out.join("nat-matrix.md");
    let svg_path = args.out.join("nat-matrix.svg");
    write_file(&md_path, &md)?;
    write_file(&svg_path, &svg)?;
    println!("\nwrote {} and {}", md_path.display(), svg_path.display());
    Ok(())
}

/// The dual-stack rows, over the same seeds as the matrix, as Markdown.
fn dual_rows(args: &Args) -> String {
    let link = LinkProfile::broadband();
    let seeds: Vec<u64> = (args.start..args.start + args.seeds).collect();
    let jobs: Vec<(usize, u64)> = (0..DUAL_ROWS.len())
        .flat_map(|r| seeds.iter().map(move |&s| (r, s)))
        .collect();
    let results = run_parallel(&jobs, |&(r, seed)| {
        let (a, b) = DUAL_ROWS[r];
        run_pair(seed, &dual_end(a), &dual_end(b), &link)
    });
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Dual-stack rows\n\n`dual/X`: IPv4 behind X plus a global IPv6 address behind a \
         stateful firewall; `v4/X`: IPv4 only; `nat64`: IPv6-only (firewalled) behind a NAT64 \
         gateway (EIM, APDF). Seeds {}..={}, broadband links. Oracle: with IPv6 and Pierce's \
         techniques (both ends with IPv6: direct).\n\n\
         | a | b | oracle | runs | direct % | direct over IPv6 % | delivered % | errors |\n\
         |---|---|---|--:|--:|--:|--:|--:|",
        seeds.first().copied().unwrap_or_default(),
        seeds.last().copied().unwrap_or_default(),
    );
    for (r, (a, b)) in DUAL_ROWS.iter().enumerate() {
        let runs: Vec<&PairRun> = jobs
            .iter()
            .zip(&results)
            .filter(|((k, _), _)| *k == r)
            .map(|(_, x)| x)
            .collect();
        let n = runs.len();
        let count = |f: fn(&PairRun) -> bool| runs.iter().filter(|x| f(x)).count();
        let _ = writeln!(
            md,
            "| {a} | {b} | {} | {n} | {:.0} | {:.0} | {:.0} | {} |",
            if direct_possible(&dual_end(a), &dual_end(b)) {
                "direct"
            } else {
                "relay"
            },
            pct(count(|x| x.direct), n),
            pct(count(|x| x.direct_v6), n),
            pct(count(|x| x.delivered), n),
            count(|x| x.error.is_some()),
        );
    }
    md
}

fn matrix_markdown(types: &[NatType], cells: &[Cell], seeds: &[u64]) -> String {
    let n = types.len();
    let mut grid = vec![vec![String::new(); n]; n];
    for c in cells {
        let d = c.direct();
        let mut s = format!("{:.0}", pct(d, c.runs.len()));
        if d > 0 && !c.expect {
            s.push('*');
        }
        if c.expect && d < c.runs.len() {
            s.push('!');
        }
        grid[c.i][c.j] = s.clone();
        grid[c.j][c.i] = s;
    }
    let runs: usize = cells.iter().map(|c| c.runs.len()).sum();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# NAT matrix: direct % per pair of NAT types\n\n{} types, {} pairs, seeds {}..={} \
         ({runs} runs), broadband links, reliable messages both ways for {} s after the \
         introduction.\n",
        n,
        cells.len(),
        seeds.first().copied().unwrap_or_default(),
        seeds.last().copied().unwrap_or_default(),
        (TICK * MESSAGES).as_secs(),
    );
    let _ = writeln!(
        md,
        "Cells: % of seeds whose pair ended with a direct path both ways. `*`: direct although \
         the oracle (punching, plus prediction and birthday probing between an easy and a hard \
         NAT) says relay; \
         `!`: the oracle says direct but some seed stayed relayed.\n\n{ABBREVIATIONS}.\n"
    );
    let _ = write!(md, "| a \\ b |");
    for t in types {
        let _ = write!(md, " {} |", t.abbr);
    }
    let _ = write!(md, "\n|---|");
    for _ in types {
        let _ = write!(md, "--:|");
    }
    md.push('\n');
    for (i, t) in types.iter().enumerate() {
        let _ = write!(md, "| **{}** |", t.abbr);
        for cell in &grid[i] {
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }

    // Families.
    let _ = writeln!(
        md,
        "\n## By pair family\n\nTime to direct: from the first `MemberJoined` naming the \
         peer to both ends reporting `PathChanged` Direct. Relay share: peer packets that went \
         through the server, of all peer packets sent (both ends).\n"
    );
    let _ = writeln!(
        md,
        "| family | type pairs | runs | direct % | oracle % | median time to direct | p90 | \
         relay share | delivered % |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    let class_index = |t: &NatType| {
        CLASSES
            .iter()
            .position(|c| *c == class_of(&t.edge))
            .unwrap_or(0)
    };
    for (x, cx) in CLASSES.iter().enumerate() {
        for (y, cy) in CLASSES.iter().enumerate().skip(x) {
            let fam: Vec<&Cell> = cells
                .iter()
                .filter(|c| {
                    let (p, q) = (class_index(&types[c.i]), class_index(&types[c.j]));
                    (p.min(q), p.max(q)) == (x, y)
                })
                .collect();
            if fam.is_empty() {
                continue;
            }
            let all: Vec<&PairRun> = fam.iter().flat_map(|c| &c.runs).collect();
            let row = summary_row(&all, fam.iter().map(|c| (c.expect, c.runs.len())));
            let _ = writeln!(md, "| {cx} × {cy} | {} | {row}", fam.len(),);
        }
    }
    let all: Vec<&PairRun> = cells.iter().flat_map(|c| &c.runs).collect();
    let row = summary_row(&all, cells.iter().map(|c| (c.expect, c.runs.len())));
    let _ = writeln!(md, "| **all** | {} | {}", cells.len(), row);

    // Against the oracle.
    let expected = cells.iter().filter(|c| c.expect).count();
    let all_direct = |c: &&&Cell| c.direct() == c.runs.len();
    let beyond: Vec<&Cell> = cells
        .iter()
        .filter(|c| !c.expect && c.direct() > 0)
        .collect();
    let beyond_all = beyond.iter().filter(all_direct).count();
    let short: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.expect && c.direct() < c.runs.len())
        .collect();
    let errors: Vec<String> = cells
        .iter()
        .flat_map(|c| {
            c.runs.iter().filter_map(move |r| {
                r.error
                    .as_ref()
                    .map(|e| format!("{} × {}: {e}", types[c.i].abbr, types[c.j].abbr))
            })
        })
        .collect();
    let _ = writeln!(
        md,
        "\n## Against the oracle\n\n- The oracle (with prediction and birthday probing) expects **{expected}** of {} type \
         pairs to go direct; all of them did in every seed: **{}**.\n- Direct beyond the \
         oracle (peer-reflexive candidates): **{}** type pairs ({} in every seed).\n- \
         Expected direct but relayed in some seed: **{}**{}.\n- Runs with a simulation \
         error: {}.",
        cells.len(),
        if short.is_empty() { "yes" } else { "no" },
        beyond.len(),
        beyond_all,
        short.len(),
        if short.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                short
                    .iter()
                    .map(|c| format!("{} × {}", types[c.i].abbr, types[c.j].abbr))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join("; ")
        }
    );
    if !beyond.is_empty() {
        let _ = writeln!(
            md,
            "- Beyond the oracle: {}",
            beyond
                .iter()
                .map(|c| format!(
                    "{} × {} ({}/{})",
                    types[c.i].abbr,
                    types[c.j].abbr,
                    c.direct(),
                    c.runs.len()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    md
}

/// `runs | direct % | oracle % | median | p90 | relay share | delivered % |`
fn summary_row(runs: &[&PairRun], expect: impl Iterator<Item = (bool, usize)>) -> String {
    let n = runs.len();
    let direct = runs.iter().filter(|r| r.direct).count();
    let (mut exp_runs, mut total) = (0, 0);
    for (e, k) in expect {
        total += k;
        if e {
            exp_runs += k;
        }
    }
    let mut ttd: Vec<Duration> = runs
        .iter()
        .filter(|r| r.direct)
        .filter_map(|r| r.time_to_direct)
        .collect();
    ttd.sort();
    let relayed: u64 = runs.iter().map(|r| r.relayed).sum();
    let packets: u64 = runs.iter().map(|r| r.peer_packets).sum();
    let delivered = runs.iter().filter(|r| r.delivered).count();
    format!(
        "{n} | {:.0} | {:.0} | {} | {} | {:.1} % | {:.0} |",
        pct(direct, n),
        pct(exp_runs, total),
        ms(median(&ttd)),
        ms(percentile(&ttd, 90)),
        if packets == 0 {
            0.0
        } else {
            100.0 * relayed as f64 / packets as f64
        },
        pct(delivered, n),
    )
}

fn matrix_svg(types: &[NatType], cells: &[Cell], seeds: &[u64]) -> String {
    let n = types.len();
    let cell = 24.0;
    let (left, top) = (70.0, 130.0);
    let grid = cell * n as f64;
    let legend_x = left + grid + 40.0;
    let width = legend_x + 230.0;
    let height = top + grid + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="24" font-size="18" font-weight="bold">Pierce NAT matrix: pairs ending on a direct path</text>"#
    );
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="44" font-size="12" fill="#444">{} NAT types, seeds {}..={}, broadband links; cell = % of seeds direct both ways</text>"##,
        n,
        seeds.first().copied().unwrap_or_default(),
        seeds.last().copied().unwrap_or_default()
    );
    // Axis labels.
    for (k, t) in types.iter().enumerate() {
        let y = top + cell * k as f64 + cell * 0.5 + 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{y}" font-size="11" text-anchor="end" font-family="monospace"><title>{}</title>{}</text>"#,
            left - 6.0,
            xml_escape(&t.name),
            xml_escape(&t.abbr)
        );
        let x = left + cell * k as f64 + cell * 0.5 + 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{}" font-size="11" font-family="monospace" transform="rotate(-60 {x} {})"><title>{}</title>{}</text>"#,
            top - 6.0,
            top - 6.0,
            xml_escape(&t.name),
            xml_escape(&t.abbr)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" font-size="12" text-anchor="middle" fill="#444">peer b</text>"##,
        left + grid / 2.0,
        top - 50.0
    );
    let _ = writeln!(
        s,
        r##"<text x="16" y="{}" font-size="12" text-anchor="middle" fill="#444" transform="rotate(-90 16 {})">peer a</text>"##,
        top + grid / 2.0,
        top + grid / 2.0
    );
    // Cells.
    for c in cells {
        let share = c.direct() as f64 / c.runs.len().max(1) as f64;
        let colour = share_colour(share);
        for (r, k) in [(c.i, c.j), (c.j, c.i)] {
            let (x, y) = (left + cell * k as f64, top + cell * r as f64);
            let _ = writeln!(
                s,
                r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{colour}" stroke="#fff" stroke-width="1"><title>{} × {}: {}/{} seeds direct; oracle: {}</title></rect>"##,
                xml_escape(&types[r].name),
                xml_escape(&types[k].name),
                c.direct(),
                c.runs.len(),
                if c.expect { "direct" } else { "relay" }
            );
            if c.expect {
                let _ = writeln!(
                    s,
                    r##"<circle cx="{}" cy="{}" r="2.5" fill="#222"/>"##,
                    x + cell / 2.0,
                    y + cell / 2.0
                );
            } else if c.direct() > 0 {
                let _ = writeln!(
                    s,
                    r##"<text x="{}" y="{}" font-size="13" text-anchor="middle" fill="#222">*</text>"##,
                    x + cell / 2.0,
                    y + cell / 2.0 + 6.0
                );
            }
        }
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{grid}" height="{grid}" fill="none" stroke="#888"/>"##
    );
    // Legend: gradient bar and markers.
    let _ = writeln!(
        s,
        r#"<defs><linearGradient id="share" x1="0" y1="1" x2="0" y2="0"><stop offset="0" stop-color="{}"/><stop offset="0.5" stop-color="{}"/><stop offset="1" stop-color="{}"/></linearGradient></defs>"#,
        share_colour(0.0),
        share_colour(0.5),
        share_colour(1.0)
    );
    let bar_h = 200.0;
    let _ = writeln!(
        s,
        r##"<text x="{legend_x}" y="{}" font-size="12" font-weight="bold">direct %</text><rect x="{legend_x}" y="{top}" width="18" height="{bar_h}" fill="url(#share)" stroke="#888"/>"##,
        top - 10.0
    );
    for p in [0, 25, 50, 75, 100] {
        let y = top + bar_h - bar_h * f64::from(p) / 100.0;
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#444"/><text x="{}" y="{}" font-size="11">{p}</text>"##,
            legend_x + 18.0,
            legend_x + 23.0,
            legend_x + 26.0,
            y + 4.0
        );
    }
    let ly = top + bar_h + 30.0;
    let _ = writeln!(
        s,
        r##"<circle cx="{}" cy="{}" r="2.5" fill="#222"/><text x="{}" y="{}" font-size="11">oracle: punchable</text>"##,
        legend_x + 9.0,
        ly,
        legend_x + 22.0,
        ly + 4.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" font-size="13" text-anchor="middle">*</text><text x="{}" y="{}" font-size="11">direct beyond the oracle</text>"##,
        legend_x + 9.0,
        ly + 24.0,
        legend_x + 22.0,
        ly + 20.0
    );
    let lines = [
        "labels: mapping, filtering - allocation",
        "E endpoint-independent",
        "A address-dependent",
        "P address+port-dependent",
        "p preserving, s sequential, r random",
        "EE-p full cone, EA-p restricted,",
        "EP-p port-restricted, PP-r symmetric",
    ];
    for (k, l) in lines.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="{legend_x}" y="{}" font-size="11" fill="#444">{}</text>"##,
            ly + 50.0 + 15.0 * k as f64,
            xml_escape(l)
        );
    }
    s.push_str("</svg>\n");
    s
}

// ---- the internet mix --------------------------------------------------------------------

fn mix_edge(label: &str) -> Edge {
    pierce_sim::report::edge_by_name(label).unwrap_or_else(|| Edge::nat(NatConfig::symmetric()))
}

fn draw(rng: &mut impl Rng) -> usize {
    let total: u32 = MIX.iter().map(|m| m.0).sum();
    let mut x = rng.random_range(0..total);
    for (k, (w, _)) in MIX.iter().enumerate() {
        if x < *w {
            return k;
        }
        x -= w;
    }
    MIX.len() - 1
}

#[allow(clippy::print_stdout)] // a command-line tool
fn internet_mix(args: &Args) -> Result<(), String> {
    let link = LinkProfile::broadband();
    let mut rng = substream(args.start, "internet-mix/draws");
    let jobs: Vec<(usize, usize, u64)> = (0..args.pairs)
        .map(|k| (draw(&mut rng), draw(&mut rng), args.start + k as u64))
        .collect();
    let edges: Vec<Edge> = MIX.iter().map(|(_, l)| mix_edge(l)).collect();
    // Which ends are IPv6-capable: a stream of its own, so the IPv4 draws stay as they were.
    let mut v6rng = substream(args.start, "internet-mix/ipv6");
    let capable: Vec<(bool, bool)> = (0..args.pairs)
        .map(|_| {
            let mut draw6 = || v6rng.random_range(0..100) < args.ipv6_share;
            (draw6(), draw6())
        })
        .collect();
    let end = |k: usize, v6: bool| {
        if v6 {
            End::dual(edges[k].clone())
        } else {
            End::v4(edges[k].clone())
        }
    };
    // Every pair twice, on the same seed: without IPv6, then with the drawn IPv6 ends (a
    // pair with none is the same scenario, so its first run stands for both).
    let both: Vec<(usize, bool)> = (0..jobs.len())
        .flat_map(|i| {
            let with = capable[i].0 || capable[i].1;
            std::iter::once((i, false)).chain(with.then_some((i, true)))
        })
        .collect();
    let runs = run_parallel(&both, |&(i, v6)| {
        let (a, b, seed) = jobs[i];
        let (va, vb) = if v6 { capable[i] } else { (false, false) };
        run_pair(seed, &end(a, va), &end(b, vb), &link)
    });
    let mut results: Vec<PairRun> = Vec::with_capacity(jobs.len());
    let mut results6: Vec<PairRun> = Vec::with_capacity(jobs.len());
    for ((i, v6), r) in both.iter().zip(runs) {
        if *v6 {
            results6[*i] = r;
        } else {
            results.push(r.clone());
            results6.push(r);
        }
    }

    let n = results.len();
    let direct = results.iter().filter(|r| r.direct).count();
    let expected = jobs
        .iter()
        .filter(|(a, b, _)| direct_path_possible(&edges[*a], &edges[*b]))
        .count();
    let delivered = results.iter().filter(|r| r.delivered).count();
    let mut ttd: Vec<Duration> = results
        .iter()
        .filter(|r| r.direct)
        .filter_map(|r| r.time_to_direct)
        .collect();
    ttd.sort();
    let relayed: u64 = results.iter().map(|r| r.relayed).sum();
    let packets: u64 = results.iter().map(|r| r.peer_packets).sum();
    let (lo, hi) = wilson(direct, n);

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Internet mix: {n} random pairs\n\nNAT types drawn with these weights (sources in \
         `sim/src/bin/nat-matrix.rs`), broadband links, seeds {}..={}:\n",
        args.start,
        args.start + n as u64 - 1
    );
    let _ = writeln!(
        md,
        "| type | weight | class | drawn (ends) | pairs with it | direct % of those |\n|---|--:|---|--:|--:|--:|"
    );
    for (k, (w, label)) in MIX.iter().enumerate() {
        let ends = jobs
            .iter()
            .map(|(a, b, _)| usize::from(*a == k) + usize::from(*b == k))
            .sum::<usize>();
        let with: Vec<&PairRun> = jobs
            .iter()
            .zip(&results)
            .filter(|((a, b, _), _)| *a == k || *b == k)
            .map(|(_, r)| r)
            .collect();
        let d = with.iter().filter(|r| r.direct).count();
        let _ = writeln!(
            md,
            "| {label} | {w} % | {} | {ends} | {} | {:.0} |",
            class_of(&edges[k]),
            with.len(),
            pct(d, with.len())
        );
    }
    let _ = writeln!(
        md,
        "\n**{direct} of {n} pairs ended direct: {:.1} %** (95 % CI {:.1}–{:.1} %). The basic \
         oracle expected {expected} ({:.1} %). Every message delivered in {:.1} % of pairs. \
         Time to direct: median {}, p90 {}. Relay share of peer packets: {:.1} %.\n\n\
         For comparison, libp2p's DCUtR in the wild: 70 % ± 7.1 % (Trautwein et al., \
         arXiv:2510.27500).",
        pct(direct, n),
        lo,
        hi,
        pct(expected, n),
        pct(delivered, n),
        ms(median(&ttd)),
        ms(percentile(&ttd, 90)),
        if packets == 0 {
            0.0
        } else {
            100.0 * relayed as f64 / packets as f64
        },
    );
    let below: Vec<String> = jobs
        .iter()
        .zip(&results)
        .filter(|((a, b, _), r)| !r.direct && direct_path_possible(&edges[*a], &edges[*b]))
        .map(|((a, b, seed), _)| format!("seed {seed} {} × {}", MIX[*a].1, MIX[*b].1))
        .collect();
    if !below.is_empty() {
        let _ = writeln!(
            md,
            "\nRelayed although the oracle says punchable ({}): {}",
            below.len(),
            below.join(", ")
        );
    }
    // Both ends behind endpoint-dependent mapping (no port mapping protocol to help).
    let hard = |k: usize| {
        edges[k]
            .profile()
            .is_some_and(|p| p.mapping != pierce_sim::Mapping::EndpointIndependent)
    };
    let hard_pairs: Vec<bool> = jobs
        .iter()
        .zip(&results)
        .filter(|((a, b, _), _)| hard(*a) && hard(*b))
        .map(|(_, r)| r.direct)
        .collect();
    let _ = writeln!(
        md,
        "\nBoth ends hard (endpoint-dependent mapping): {} of {} pairs direct ({:.0} %).",
        hard_pairs.iter().filter(|d| **d).count(),
        hard_pairs.len(),
        pct(hard_pairs.iter().filter(|d| **d).count(), hard_pairs.len()),
    );
    // What stays relayed as the oracle expects, and why: per pair of types, how many.
    let mut expected_relayed: std::collections::BTreeMap<(&str, &str), usize> =
        std::collections::BTreeMap::new();
    for ((a, b, _), r) in jobs.iter().zip(&results) {
        if !r.direct && !direct_path_possible(&edges[*a], &edges[*b]) {
            let (x, y) = (MIX[*a].1.min(MIX[*b].1), MIX[*a].1.max(MIX[*b].1));
            *expected_relayed.entry((x, y)).or_default() += 1;
        }
    }
    if !expected_relayed.is_empty() {
        let list: Vec<String> = expected_relayed
            .iter()
            .map(|((x, y), n)| format!("{x} × {y} ({n})"))
            .collect();
        let _ = writeln!(
            md,
            "\nRelayed as the oracle expects ({}): {}. Both ends map per destination (address- \
             or address-and-port-dependent mapping), at least one of them allocates ports at \
             random, and neither router maps a port on request: each end's probes open \
             mappings the other cannot aim at (Pierce predicts sequential NATs' ports, from \
             either kind of peer, and meets random ones only from a peer that maps \
             endpoint-independently).",
            expected_relayed.values().sum::<usize>(),
            list.join(", ")
        );
    }
    let errors: Vec<String> = jobs
        .iter()
        .zip(&results)
        .filter_map(|((a, b, seed), r)| {
            r.error
                .as_ref()
                .map(|e| format!("seed {seed} {} × {}: {e}", MIX[*a].1, MIX[*b].1))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(md, "\nRuns with a simulation error: {}", errors.join("; "));
    }
    md.push_str(&ipv6_section(
        args, &jobs, &capable, &edges, &results, &results6,
    ));
    print!("{md}");
    let path = args.out.join("internet-mix.md");
    write_file(&path, &md)?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// The mix with IPv6 against the mix without, as Markdown.
fn ipv6_section(
    args: &Args,
    jobs: &[(usize, usize, u64)],
    capable: &[(bool, bool)],
    edges: &[Edge],
    without: &[PairRun],
    with: &[PairRun],
) -> String {
    let n = jobs.len();
    let ends6: usize = capable
        .iter()
        .map(|(a, b)| usize::from(*a) + usize::from(*b))
        .sum();
    let d4 = without.iter().filter(|r| r.direct).count();
    let d6 = with.iter().filter(|r| r.direct).count();
    let over6 = with.iter().filter(|r| r.direct_v6).count();
    let stack = |v6: bool| {
        if v6 {
            Stack::dual_firewalled()
        } else {
            Stack::V4
        }
    };
    let expected6 = jobs
        .iter()
        .zip(capable)
        .filter(|((a, b, _), (va, vb))| {
            direct_path_possible_stacks(
                (&edges[*a], &stack(*va)),
                (&edges[*b], &stack(*vb)),
                Traversal::PIERCE,
            )
        })
        .count();
    let delivered6 = with.iter().filter(|r| r.delivered).count();
    let (lo4, hi4) = wilson(d4, n);
    let (lo6, hi6) = wilson(d6, n);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## With IPv6\n\n{} % of clients IPv6-capable (dual-stack, global IPv6 address behind \
         a stateful firewall; share and sources in `sim/src/bin/nat-matrix.rs`): {ends6} of {} \
         ends drawn, on the same IPv4 edges and seeds as above.\n\n\
         - **Without IPv6: {d4} of {n} pairs direct, {:.1} %** (95 % CI {lo4:.1}–{hi4:.1} %).\n\
         - **With IPv6: {d6} of {n} pairs direct, {:.1} %** (95 % CI {lo6:.1}–{hi6:.1} %); \
         {over6} of them over IPv6. The oracle with IPv6 (Pierce's techniques) expected \
         {expected6} ({:.1} %). Every message delivered in {:.1} % of pairs.\n",
        args.ipv6_share,
        2 * n,
        pct(d4, n),
        pct(d6, n),
        pct(expected6, n),
        pct(delivered6, n),
    );
    let _ = writeln!(
        md,
        "| ends with IPv6 | pairs | direct % without IPv6 | direct % with IPv6 | over IPv6 % |\n\
         |---|--:|--:|--:|--:|"
    );
    for (label, k) in [("both", 2), ("one", 1), ("none", 0)] {
        let idx: Vec<usize> = (0..n)
            .filter(|&i| usize::from(capable[i].0) + usize::from(capable[i].1) == k)
            .collect();
        let c =
            |rs: &[PairRun], f: fn(&PairRun) -> bool| idx.iter().filter(|&&i| f(&rs[i])).count();
        let _ = writeln!(
            md,
            "| {label} | {} | {:.1} | {:.1} | {:.1} |",
            idx.len(),
            pct(c(without, |r| r.direct), idx.len()),
            pct(c(with, |r| r.direct), idx.len()),
            pct(c(with, |r| r.direct_v6), idx.len()),
        );
    }
    let below: Vec<String> = (0..n)
        .filter(|&i| {
            let (a, b, _) = jobs[i];
            let (va, vb) = capable[i];
            !with[i].direct
                && direct_path_possible_stacks(
                    (&edges[a], &stack(va)),
                    (&edges[b], &stack(vb)),
                    Traversal::PIERCE,
                )
        })
        .map(|i| {
            let (a, b, seed) = jobs[i];
            let tag = |v6: bool| if v6 { "+ipv6" } else { "" };
            format!(
                "seed {seed} {}{} × {}{}",
                MIX[a].1,
                tag(capable[i].0),
                MIX[b].1,
                tag(capable[i].1)
            )
        })
        .collect();
    if !below.is_empty() {
        let _ = writeln!(
            md,
            "
With IPv6, relayed although the oracle says direct ({}): {}",
            below.len(),
            below.join(", ")
        );
    }
    let errors: Vec<String> = (0..n)
        .filter_map(|i| {
            with[i]
                .error
                .as_ref()
                .map(|e| format!("seed {}: {e}", jobs[i].2))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(
            md,
            "
With IPv6, runs with a simulation error: {}",
            errors.join("; ")
        );
    }
    md
}

/// Wilson score interval (95 %) for `k` successes of `n`, in %.
fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let (k, n, z) = (k as f64, n as f64, 1.96f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    (100.0 * (centre - half), 100.0 * (centre + half))
}
