//! One connection as an SVG sequence diagram: client a, its NAT(s), the server, b's NAT(s)
//! and client b as lifelines; every datagram as an arrow from when it left its sender to when
//! it arrived (a red cross where it was lost: a NAT filter, a link, a partition); the
//! clients' events (connected, introduced, path changes, messages) as notes.
//!
//! ```text
//! cargo run --release -p pierce-sim --bin timeline -- --seed S --a TYPE --b TYPE \
//!     [--out FILE.svg] [--link broadband|wifi|cellular|lan|perfect] [--until MS] [--max N]
//! ```
//!
//! `TYPE` is a full name of `NatConfig::all_types()` (`eim-apdf-preserving`), its label
//! (`EP-p`), or one of `open`, `full-cone`, `restricted`, `port-restricted`,
//! `address-dependent`, `symmetric`, `symmetric-seq`, `linux`, `cgnat`, `cgnat-symmetric`.
//!
//! The run: both clients connect; the moment both are connected the server puts them in one
//! group; when a learns of b it sends b a reliable message (over the relay, since no direct
//! path exists yet); once both ends report a direct path (or 1.5 s after the introduction if
//! they never do) each sends the other one more. The diagram stops at `--until` (default
//! 3000 ms) or after `--max` datagrams (default 200). Quiet stretches longer than 40 ms are
//! squeezed (marked on the time axis) so that bursts stay readable.
//!
//! Datagram kinds come from the first byte: `0xD1`/`0xD2`/`0xD5` handshake, `0xD3` server
//! session (whose relay frames are encrypted: a session packet that reaches the server at the
//! very instant the server sends one of similar size to the other client is drawn as relay),
//! `0xD4` direct peer packets (41-byte ones are probes or probe answers), `0x00`/`0x01` STUN.
//! Default output: `target/sim-report/timeline-<a>-<b>-<seed>.svg`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pierce_core::{Channel, ClientEvent, HostId, Path, ServerEvent};
use pierce_sim::report::{ALIASES, edge_by_name, xml_escape};
use pierce_sim::{
    DropCause, Edge, LinkProfile, PacketFate, PacketRecord, SERVER, Scenario, Sim,
    direct_path_possible,
};

const MS: Duration = Duration::from_millis(1);

struct Args {
    seed: u64,
    a: String,
    b: String,
    out: Option<PathBuf>,
    link: String,
    until: Duration,
    max: usize,
}

const USAGE: &str = "usage: timeline --seed S --a TYPE --b TYPE [--out FILE.svg] \
                     [--link broadband|wifi|cellular|lan|perfect] [--until MS] [--max N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seed: 1,
        a: "port-restricted".to_owned(),
        b: "port-restricted".to_owned(),
        out: None,
        link: "broadband".to_owned(),
        until: Duration::from_millis(3000),
        max: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |v: String, name: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name} needs a number, not {v:?}"))
        };
        match a.as_str() {
            "--seed" => args.seed = number(value("--seed")?, "--seed")?,
            "--a" => args.a = value("--a")?,
            "--b" => args.b = value("--b")?,
            "--out" => args.out = Some(PathBuf::from(value("--out")?)),
            "--link" => args.link = value("--link")?,
            "--until" => args.until = MS * number(value("--until")?, "--until")? as u32,
            "--max" => args.max = number(value("--max")?, "--max")?.max(1) as usize,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn link_by_name(name: &str) -> Option<LinkProfile> {
    Some(match name {
        "broadband" => LinkProfile::broadband(),
        "wifi" => LinkProfile::wifi(),
        "cellular" => LinkProfile::cellular(),
        "lan" => LinkProfile::lan(),
        "perfect" => LinkProfile::perfect(),
        "mobile" | "mobile_handover" => LinkProfile::mobile_handover(),
        _ => return None,
    })
}

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
    let (Some(ea), Some(eb)) = (edge_by_name(&args.a), edge_by_name(&args.b)) else {
        eprintln!(
            "unknown NAT type; use a name like eim-apdf-preserving, a label like EP-p, or one of {}",
            ALIASES.join(", ")
        );
        return ExitCode::FAILURE;
    };
    let Some(link) = link_by_name(&args.link) else {
        eprintln!("unknown link profile {:?}", args.link);
        return ExitCode::FAILURE;
    };
    let run = match run(&args, &ea, &eb, &link) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let (svg, drawn) = render(&args, &ea, &eb, &run);
    let path = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "target/sim-report/timeline-{}-{}-{}.svg",
            args.a, args.b, args.seed
        ))
    });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("{}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = std::fs::write(&path, svg) {
        eprintln!("{}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("{}", run.summary);
    println!(
        "{} datagrams drawn ({} in the run); wrote {}",
        drawn,
        run.sim.packets().len(),
        path.display()
    );
    ExitCode::SUCCESS
}

struct Run {
    sim: Sim,
    ha: HostId,
    hb: HostId,
    /// (time, client, text) of messages the driver sent.
    sends: Vec<(Duration, &'static str, String)>,
    summary: String,
}

fn both_direct(s: &Sim, ha: HostId, hb: HostId) -> bool {
    let direct = |n: &str, p: HostId| {
        matches!(
            s.client(n).peer_stats(p).map(|x| x.path),
            Some(Path::Direct(_))
        )
    };
    direct("a", hb) && direct("b", ha)
}

fn run(args: &Args, a: &Edge, b: &Edge, link: &LinkProfile) -> Result<Run, String> {
    let mut sim = Scenario::new(args.seed)
        .link(link.clone())
        .client("a", a.clone())
        .client("b", b.clone())
        .trace_packets(true)
        .build();
    let until = args.until.max(MS * 500);
    sim.run_until(
        |s| s.connected("a").is_some() && s.connected("b").is_some(),
        10 * until,
    )
    .map_err(|e| format!("the clients did not connect: {e}"))?;
    let (ha, hb) = (
        sim.expect_connected("a").host_id,
        sim.expect_connected("b").host_id,
    );
    sim.with_server(|s, now| s.create_group(now, &[ha, hb]))
        .map_err(|e| e.to_string())?;
    sim.run_until(|s| s.client("a").peers().any(|p| p == hb), 5 * until)
        .map_err(|e| format!("a never learnt of b: {e}"))?;
    let mut sends = Vec::new();
    let introduced = sim.elapsed();
    let mut send = |sim: &mut Sim, from: &'static str, to: HostId, text: &str| {
        let at = sim.elapsed();
        let r = sim.with_client(from, |c, now| {
            c.send(now, to, Channel::RELIABLE_ORDERED, text.as_bytes())
        });
        if r.is_ok() {
            sends.push((at, from, text.to_owned()));
        }
    };
    send(&mut sim, "a", hb, "hello (relayed)");
    let _ = sim.run_until(|s| both_direct(s, ha, hb), MS * 1500);
    let direct = both_direct(&sim, ha, hb);
    let second = if direct {
        "on the direct path"
    } else {
        "still relayed"
    };
    send(&mut sim, "a", hb, &format!("a: {second}"));
    send(&mut sim, "b", ha, &format!("b: {second}"));
    let rest = until.saturating_sub(sim.elapsed());
    sim.run_for(rest).map_err(|e| e.to_string())?;
    let expect = direct_path_possible(a, b);
    // Both ends validated the path (each reports its own PathChanged).
    let first_direct = |name: &str| {
        sim.client_events(name).find_map(|(t, e)| match e {
            ClientEvent::PathChanged {
                path: Path::Direct(_),
                ..
            } => Some(t),
            _ => None,
        })
    };
    let direct_at = first_direct("a")
        .zip(first_direct("b"))
        .map(|(x, y)| x.max(y));
    let summary = format!(
        "seed {}: {} ({}) × {} ({}); oracle: {}; outcome: {}",
        args.seed,
        args.a,
        edge_desc(a),
        args.b,
        edge_desc(b),
        if expect { "direct" } else { "relay" },
        match direct_at {
            Some(t) if both_direct(&sim, ha, hb) => format!(
                "direct both ways {} ms after the introduction",
                (t.saturating_sub(introduced)).as_millis()
            ),
            _ => "relayed".to_owned(),
        }
    );
    Ok(Run {
        sim,
        ha,
        hb,
        sends,
        summary,
    })
}

fn edge_desc(e: &Edge) -> String {
    match e {
        Edge::Open => "no NAT".to_owned(),
        _ => e
            .nats()
            .iter()
            .map(|c| {
                format!(
                    "{}{}",
                    pierce_sim::report::abbreviate(c),
                    if c.conntrack_quirk { "+conntrack" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(" behind "),
    }
}

// ---- drawing -----------------------------------------------------------------------------

/// What a datagram is, for its colour and label.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Handshake,
    Session,
    Relay,
    Probe,
    Peer,
    Stun,
    Other,
}

impl Kind {
    fn colour(self) -> &'static str {
        match self {
            Self::Handshake => "#6a51a3",
            Self::Session => "#2171b5",
            Self::Relay => "#e6550d",
            Self::Probe => "#74c476",
            Self::Peer => "#238b45",
            Self::Stun => "#8c6d31",
            Self::Other => "#636363",
        }
    }

    fn label(self, p: &PacketRecord) -> String {
        let name = match (self, p.kind) {
            (Self::Handshake, 0xD1) => "ClientHello",
            (Self::Handshake, 0xD2) => "ServerHello",
            (Self::Handshake, _) => "Retry",
            (Self::Session, _) => "session",
            (Self::Relay, _) => "relay",
            (Self::Probe, _) => "probe/ack",
            (Self::Peer, _) => "peer data",
            (Self::Stun, _) => "STUN",
            (Self::Other, _) => "?",
        };
        format!("{name} {}B", p.len)
    }
}

/// Smallest session packet that can hold a relay frame with a peer packet inside.
const MIN_RELAY: usize = 32 + 11 + 32 + 2;
/// Sealed peer packet carrying one probe frame (or probe answer).
const PROBE_LEN: usize = 32 + 9;

fn classify(packets: &[&PacketRecord], server: &str) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = packets
        .iter()
        .map(|p| match p.kind {
            0xD1 | 0xD2 | 0xD5 => Kind::Handshake,
            0xD3 => Kind::Session,
            0xD4 if p.len <= PROBE_LEN => Kind::Probe,
            0xD4 => Kind::Peer,
            0x00 | 0x01 => Kind::Stun,
            _ => Kind::Other,
        })
        .collect();
    // A client's session packet reaching the server at the instant the server sends a
    // session packet of similar size to the other client: the server relayed it.
    for (i, p) in packets.iter().enumerate() {
        if kinds[i] != Kind::Session || p.from == server || p.len < MIN_RELAY {
            continue;
        }
        let Some(arrived) = p.fates.iter().find_map(|f| match f {
            PacketFate::Delivered { at, to, .. } if to == server => Some(*at),
            _ => None,
        }) else {
            continue;
        };
        for (j, q) in packets.iter().enumerate() {
            if kinds[j] == Kind::Session
                && q.from == server
                && q.sent_at == arrived
                && q.len >= MIN_RELAY
                && q.len + 16 >= p.len
                && q.len <= p.len + 64
            {
                kinds[i] = Kind::Relay;
                kinds[j] = Kind::Relay;
            }
        }
    }
    kinds
}

/// Virtual time to pixels, squeezing quiet stretches.
struct TimeAxis {
    /// (time, y) breakpoints, increasing.
    points: Vec<(Duration, f64)>,
    /// Squeezed gaps: (y where it starts, y where it ends, how long it was).
    gaps: Vec<(f64, f64, Duration)>,
}

const PX_PER_MS: f64 = 2.2;
const MAX_GAP: Duration = Duration::from_millis(40);
const GAP_PX: f64 = 26.0;

impl TimeAxis {
    fn new(times: &BTreeSet<Duration>, y0: f64) -> Self {
        let mut points = Vec::new();
        let mut gaps = Vec::new();
        let mut y = y0;
        let mut prev: Option<Duration> = None;
        for &t in times {
            if let Some(p) = prev {
                let g = t - p;
                if g > MAX_GAP {
                    // Keep 10 ms of real scale on each side, squeeze the middle.
                    let edge = MS * 10;
                    y += ms_f(edge) * PX_PER_MS;
                    points.push((p + edge, y));
                    let start = y;
                    y += GAP_PX;
                    points.push((t - edge, y));
                    gaps.push((start, y, g - edge * 2));
                    y += ms_f(edge) * PX_PER_MS;
                } else {
                    y += ms_f(g) * PX_PER_MS;
                }
            }
            points.push((t, y));
            prev = Some(t);
        }
        Self { points, gaps }
    }

    fn y(&self, t: Duration) -> f64 {
        let Some(&(t0, y0)) = self.points.first() else {
            return 0.0;
        };
        if t <= t0 {
            return y0;
        }
        for w in self.points.windows(2) {
            let ((ta, ya), (tb, yb)) = (w[0], w[1]);
            if t <= tb {
                if tb == ta {
                    return yb;
                }
                return ya + (yb - ya) * ms_f(t - ta) / ms_f(tb - ta);
            }
        }
        self.points.last().map_or(0.0, |p| p.1)
    }

    fn end(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.1)
    }
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The SVG, and how many datagrams it shows.
fn render(args: &Args, ea: &Edge, eb: &Edge, run: &Run) -> (String, usize) {
    let sim = &run.sim;
    // Lifelines: a, a's NATs (inside out), server, b's NATs (outside in), b.
    let mut lanes: Vec<(String, String)> = vec![("a".into(), format!("client a ({})", args.a))];
    // NATs are named after their hosts, so their lanes are keyed "nat:<name>".
    for n in sim.nats_of("a") {
        lanes.push((format!("nat:{n}"), format!("NAT {n}")));
    }
    lanes.push((SERVER.into(), "server".into()));
    let b_nats: Vec<&str> = sim.nats_of("b");
    for n in b_nats.iter().rev() {
        lanes.push((format!("nat:{n}"), format!("NAT {n}")));
    }
    lanes.push(("b".into(), format!("client b ({})", args.b)));
    let lane_gap = 170.0;
    let left = 420.0;
    let x_of = |name: &str| {
        lanes
            .iter()
            .position(|(n, _)| n == name)
            .map(|k| left + lane_gap * k as f64)
    };
    let x_a = x_of("a").unwrap_or(left);
    let x_b = x_of("b").unwrap_or(left);
    let x_srv = x_of(SERVER).unwrap_or(left);

    // The datagrams to draw.
    let mut packets: Vec<&PacketRecord> = sim
        .packets()
        .iter()
        .filter(|p| p.sent_at <= args.until)
        .collect();
    packets.truncate(args.max);
    let end = packets
        .last()
        .map(|p| {
            if packets.len() == args.max {
                p.sent_at
            } else {
                args.until
            }
        })
        .unwrap_or(args.until);
    let kinds = classify(&packets, SERVER);

    // Notes: client and server events, and the driver's sends.
    let mut notes: Vec<(Duration, f64, String, &'static str)> = Vec::new();
    for (name, x, other) in [("a", x_a, run.hb), ("b", x_b, run.ha)] {
        for (t, e) in sim.client_events(name) {
            let text = match e {
                ClientEvent::Connected { host_id, .. } => format!("Connected ({host_id})"),
                ClientEvent::MemberJoined { member, .. } if *member == other => {
                    "MemberJoined: peer introduced".to_owned()
                }
                ClientEvent::PathChanged { path, reason, .. } => match path {
                    Path::Direct(addr) => format!("PathChanged Direct {addr} ({reason:?})"),
                    Path::Relay => format!("PathChanged Relay ({reason:?})"),
                },
                ClientEvent::PeerMessage { payload, .. } => {
                    format!("received \"{}\"", String::from_utf8_lossy(payload))
                }
                ClientEvent::MessageExpired { .. } => "MessageExpired".to_owned(),
                ClientEvent::Disconnected { reason } => format!("Disconnected {reason:?}"),
                _ => continue,
            };
            let colour = match e {
                ClientEvent::PathChanged {
                    path: Path::Direct(_),
                    ..
                } => "#238b45",
                ClientEvent::PathChanged { .. } => "#e6550d",
                _ => "#333",
            };
            notes.push((t, x, text, colour));
        }
    }
    for (t, e) in sim.server_events() {
        if let ServerEvent::ClientJoined { host_id, .. } = e {
            notes.push((t, x_srv, format!("ClientJoined {host_id}"), "#333"));
        }
    }
    let group_at = sim
        .client_events("a")
        .find_map(|(t, e)| matches!(e, ClientEvent::MemberJoined { .. }).then_some(t));
    for (t, from, text) in &run.sends {
        let x = if *from == "a" { x_a } else { x_b };
        notes.push((*t, x, format!("send \"{text}\""), "#08519c"));
    }
    notes.retain(|n| n.0 <= end);
    notes.sort_by_key(|n| n.0);

    // Time axis from every instant drawn.
    let mut times = BTreeSet::new();
    times.insert(Duration::ZERO);
    for p in &packets {
        times.insert(p.sent_at);
        for f in &p.fates {
            let at = match f {
                PacketFate::Delivered { at, .. } | PacketFate::Dropped { at, .. } => *at,
            };
            times.insert(at);
        }
    }
    for n in &notes {
        times.insert(n.0);
    }
    let top = 130.0;
    let axis = TimeAxis::new(&times, top + 20.0);
    let width = left + lane_gap * (lanes.len() - 1) as f64 + 380.0;
    let height = axis.end() + 80.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(
        s,
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs><rect width="100%" height="100%" fill="white"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="26" font-size="17" font-weight="bold">Pierce connection timeline: {} × {}, seed {}</text>"#,
        xml_escape(&args.a),
        xml_escape(&args.b),
        args.seed
    );
    let _ = writeln!(
        s,
        r##"<text x="20" y="46" font-size="12" fill="#444">{}</text>"##,
        xml_escape(&run.summary)
    );
    let _ = writeln!(
        s,
        r##"<text x="20" y="64" font-size="12" fill="#444">a: {} · b: {} · {} link · first {} datagrams up to {} ms · group created at {}</text>"##,
        xml_escape(&edge_desc(ea)),
        xml_escape(&edge_desc(eb)),
        xml_escape(&args.link),
        packets.len(),
        end.as_millis(),
        group_at.map_or_else(|| "–".to_owned(), |t| format!("{:.1} ms", ms_f(t))),
    );
    // Legend.
    let mut lx = 20.0;
    for k in [
        Kind::Handshake,
        Kind::Session,
        Kind::Relay,
        Kind::Probe,
        Kind::Peer,
        Kind::Stun,
    ] {
        let name = match k {
            Kind::Handshake => "handshake",
            Kind::Session => "server session",
            Kind::Relay => "relay (inferred)",
            Kind::Probe => "probe / probe ack",
            Kind::Peer => "direct peer data",
            _ => "STUN",
        };
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="84" x2="{}" y2="84" stroke="{}" stroke-width="2" marker-end="url(#arrow)"/><text x="{}" y="88" font-size="11">{name}</text>"#,
            lx + 26.0,
            k.colour(),
            lx + 30.0
        );
        lx += 44.0 + 6.0 * name.len() as f64;
    }
    let _ = writeln!(
        s,
        r##"<text x="{lx}" y="88" font-size="13" fill="#cb181d" font-weight="bold">✕</text><text x="{}" y="88" font-size="11">dropped (NAT filter, loss, …)</text>"##,
        lx + 16.0,
    );
    let _ = lx;

    // Lifelines and their heads.
    for (k, (_, label)) in lanes.iter().enumerate() {
        let x = left + lane_gap * k as f64;
        let nat = label.starts_with("NAT");
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{}" width="150" height="26" rx="4" fill="{}" stroke="#555"/><text x="{x}" y="{}" font-size="12" text-anchor="middle">{}</text>"##,
            x - 75.0,
            top - 26.0,
            if nat { "#fff5eb" } else { "#eff3ff" },
            top - 9.0,
            xml_escape(label)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{:.1}" stroke="#999" stroke-dasharray="{}"/>"##,
            axis.end() + 20.0,
            if nat { "2,3" } else { "6,3" }
        );
    }
    // Squeezed gaps and time labels.
    for (y0, y1, g) in &axis.gaps {
        let ym = (y0 + y1) / 2.0;
        let _ = writeln!(
            s,
            r##"<rect x="60" y="{y0:.1}" width="{:.0}" height="{:.1}" fill="#f0f0f0" opacity="0.7"/><text x="66" y="{:.1}" font-size="10" fill="#777">… {} ms later …</text>"##,
            width - 70.0,
            y1 - y0,
            ym + 3.0,
            g.as_millis()
        );
    }
    let mut last_label = f64::NEG_INFINITY;
    for &t in &times {
        let y = axis.y(t);
        if y - last_label >= 13.0 && t <= end {
            let _ = writeln!(
                s,
                r##"<text x="56" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{:.1} ms</text><line x1="58" y1="{y:.1}" x2="64" y2="{y:.1}" stroke="#bbb"/>"##,
                y + 3.0,
                ms_f(t)
            );
            last_label = y;
        }
    }

    // Where a datagram was headed, by address.
    let client_of = |addr: SocketAddr| -> &'static str {
        let owns = |name: &str| {
            sim.host_addr(name).ip() == addr.ip()
                || sim
                    .nats_of(name)
                    .last()
                    .is_some_and(|n| sim.nat(n).public_ip() == addr.ip())
        };
        if owns("a") { "a" } else { "b" }
    };
    let target_x = |p: &PacketRecord| -> f64 {
        if p.dst == sim.server_addr() {
            x_srv
        } else if p.from == SERVER {
            if client_of(p.dst) == "a" { x_a } else { x_b }
        } else if p.from == "a" {
            x_b
        } else {
            x_a
        }
    };

    // Arrows.
    for (p, kind) in packets.iter().zip(&kinds) {
        let Some(x0) = x_of(&p.from) else { continue };
        let y0 = axis.y(p.sent_at);
        let colour = kind.colour();
        let label = kind.label(p);
        let tx = target_x(p);
        for f in &p.fates {
            match f {
                PacketFate::Delivered { at, to, .. } => {
                    let x1 = x_of(to).unwrap_or(tx);
                    let y1 = axis.y(*at);
                    let _ = writeln!(
                        s,
                        r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y1:.1}" stroke="{colour}" stroke-width="1.4" marker-end="url(#arrow)"><title>{} {} -&gt; {to}: {} at {:.3} ms, arrived {:.3} ms{}</title></line>"#,
                        xml_escape(&label),
                        xml_escape(&p.from),
                        p.dst,
                        ms_f(p.sent_at),
                        ms_f(*at),
                        if p.duplicated { " (duplicated)" } else { "" }
                    );
                    let (lx, anchor) = if x1 > x0 {
                        (x0 + 6.0, "start")
                    } else {
                        (x0 - 6.0, "end")
                    };
                    let _ = writeln!(
                        s,
                        r#"<text x="{lx:.1}" y="{:.1}" font-size="9" fill="{colour}" text-anchor="{anchor}">{}</text>"#,
                        y0 - 2.0,
                        xml_escape(&label)
                    );
                }
                PacketFate::Dropped { at, cause } => {
                    let frac = |to: f64, f: f64| x0 + (to - x0) * f;
                    let (x1, why) = match cause {
                        DropCause::Uplink(d) => (frac(tx, 0.25), format!("uplink {d:?}")),
                        DropCause::Nat { nat, drop } => {
                            let x = x_of(&format!("nat:{nat}")).unwrap_or(tx);
                            (x, format!("NAT {nat}: {drop:?}"))
                        }
                        DropCause::Net(d) => (frac(tx, 0.5), format!("network: {d:?}")),
                        DropCause::Downlink { to, drop } => (
                            frac(x_of(to).unwrap_or(tx), 0.85),
                            format!("downlink to {to}: {drop:?}"),
                        ),
                        DropCause::StreamEnded => (frac(tx, 0.5), "stream ended".to_owned()),
                        DropCause::Firewall { host, drop } => (
                            frac(x_of(host).unwrap_or(tx), 0.75),
                            format!("firewall of {host}: {drop:?}"),
                        ),
                    };
                    let y1 = axis.y(*at).max(y0 + 2.0);
                    let _ = writeln!(
                        s,
                        r##"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y1:.1}" stroke="{colour}" stroke-width="1.2" stroke-dasharray="4,2"><title>{} from {} dropped: {}</title></line><text x="{x1:.1}" y="{:.1}" font-size="13" fill="#cb181d" font-weight="bold" text-anchor="middle">✕<title>{}</title></text>"##,
                        xml_escape(&label),
                        xml_escape(&p.from),
                        xml_escape(&why),
                        y1 + 4.5,
                        xml_escape(&why)
                    );
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#cb181d">{}</text>"##,
                        x1 + 7.0,
                        y1 + 3.0,
                        xml_escape(&why)
                    );
                }
            }
        }
    }

    // Notes, outside the lifelines of a and b, beside the server's.
    let mut last_y: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    for (t, x, text, colour) in &notes {
        let key = x.to_bits();
        let mut y = axis.y(*t);
        let prev = last_y.get(&key).copied().unwrap_or(f64::NEG_INFINITY);
        if y < prev + 14.0 {
            y = prev + 14.0;
        }
        last_y.insert(key, y);
        let (tx, anchor) = if (*x - x_a).abs() < 1.0 {
            (x - 10.0, "end")
        } else {
            (x + 10.0, "start")
        };
        let _ = writeln!(
            s,
            r##"<circle cx="{x:.1}" cy="{:.1}" r="3.5" fill="{colour}"/><text x="{tx:.1}" y="{:.1}" font-size="11" font-weight="bold" fill="{colour}" text-anchor="{anchor}">{} <tspan font-weight="normal" fill="#777">@{:.1} ms</tspan></text>"##,
            axis.y(*t),
            y + 4.0,
            xml_escape(text),
            ms_f(*t)
        );
    }
    s.push_str("</svg>\n");
    (s, packets.len())
}
