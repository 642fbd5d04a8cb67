//! The `pierce` binary end to end, as separate processes on loopback: a server and three peers
//! in one room in each delivery mode, with and without `--relay-only`; the demo; netcheck;
//! tokens and key pinning; the failures a user meets first (bad flags, no server); every flag
//! fed absurd values (refused with exit status 2, naming the flag, never a panic); and the
//! core's own drive example (`core/examples/drive.rs`) talking to a `pierce server`.

#[path = "support/drive.rs"]
mod drive;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const PIERCE: &str = env!("CARGO_BIN_EXE_pierce");
/// Longest any process may run before the test kills it and fails.
const LIMIT: Duration = Duration::from_secs(60);
/// The peers' own `--timeout`.
const PEER_TIMEOUT: &str = "30";

/// A `pierce server --json` child, killed when dropped.
struct ServerProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: String,
    key: String,
    /// Its relay threads (0: it relays on its own thread).
    relay_threads: u64,
}

impl ServerProc {
    fn start(extra: &[&str]) -> Self {
        Self::start_at("127.0.0.1:0", extra)
    }

    fn start_at(listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(PIERCE)
            .args(["server", "--listen", listen, "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pierce server");
        let lines = line_reader(child.stdout.take().expect("piped stdout"));
        let ready = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the server prints its ready line");
        assert!(
            ready.starts_with(r#"{"event":"listening","addr":""#),
            "{ready}"
        );
        let addr = string_field(&ready, "addr").expect("addr");
        let key = string_field(&ready, "public_key").expect("public_key");
        assert_eq!(key.len(), 64, "{ready}");
        let relay_threads = int_field(&ready, "relay_threads").expect("relay_threads");
        Self {
            child,
            lines,
            addr,
            key,
            relay_threads,
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn line_reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The value of `"key":"value"` in a flat JSON line (values here never contain quotes).
fn string_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_owned())
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Finished {
    fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }
}

/// Starts `pierce args...` with piped output.
fn spawn(args: &[String]) -> Child {
    Command::new(PIERCE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pierce")
}

/// Waits for `child`, killing it (and failing the test) after [`LIMIT`].
fn finish(mut child: Child, started: Instant) -> Finished {
    let out = child.stdout.take().expect("piped stdout");
    finish_reading(child, started, String::new(), out)
}

/// [`finish`] for a child whose stdout the caller took and read the start of (`read`).
fn finish_reading(
    mut child: Child,
    started: Instant,
    read: String,
    mut out: impl Read + Send + 'static,
) -> Finished {
    let mut err = child.stderr.take().expect("piped stderr");
    let stdout = thread::spawn(move || {
        let mut s = read;
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pierce ran longer than {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status,
        elapsed: started.elapsed(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn run(args: &[&str]) -> Finished {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    finish(spawn(&args), Instant::now())
}

/// Three peers named p0..p2 in one fresh room, each sending `count` messages of `size` bytes
/// with `extra` flags; returns their results in name order.
fn three_peers(server: &ServerProc, room: &str, count: u32, extra: &[&str]) -> Vec<Finished> {
    let started = Instant::now();
    let children: Vec<Child> = (0..3)
        .map(|i| {
            let mut args: Vec<String> = [
                "peer",
                "--server",
                &server.addr,
                "--server-key",
                &server.key,
                "--room",
                room,
                "--peers",
                "2",
                "--send",
                &count.to_string(),
                "--name",
                &format!("p{i}"),
                "--timeout",
                PEER_TIMEOUT,
                "--json",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            spawn(&args)
        })
        .collect();
    children.into_iter().map(|c| finish(c, started)).collect()
}

/// Every peer exited 0 with a summary showing all `count` messages from both others.
fn assert_complete(results: &[Finished], count: u32, path: &[&str], in_order: bool) {
    for (i, r) in results.iter().enumerate() {
        let summary = r.last_line();
        assert!(
            r.status.success(),
            "p{i} failed: {}\nstdout:\n{}\nstderr:\n{}",
            r.status,
            r.stdout,
            r.stderr
        );
        let head = format!(r#"{{"event":"summary","ok":true,"name":"p{i}","peers":["#);
        assert!(summary.starts_with(&head), "p{i}: {summary}");
        for j in (0..3).filter(|j| *j != i) {
            let start = summary
                .find(&format!(r#"{{"name":"p{j}","#))
                .unwrap_or_else(|| panic!("p{i} has no entry for p{j}: {summary}"));
            let entry = &summary[start..];
            let entry = &entry[..=entry.find('}').expect("entry ends")];
            let p = string_field(entry, "path").expect("path");
            assert!(path.contains(&p.as_str()), "p{i} -> p{j}: {entry}");
            assert!(
                entry.contains(&format!(r#""received":{count},"#)),
                "p{i} got less than {count} from p{j}: {entry}"
            );
            if in_order {
                assert!(entry.contains(r#""in_order":true"#), "{entry}");
            }
            assert!(entry.contains(r#""first_message_ms":"#), "{entry}");
            assert!(!entry.contains(r#""first_message_ms":null"#), "{entry}");
            // Stats came (it sent to that member): the path MTU, between the base every path
            // starts at and the ceiling of probing.
            let mtu = int_field(entry, "path_mtu");
            assert!(
                mtu.is_some_and(|m| (1200..=1452).contains(&m)),
                "p{i} -> p{j}: path_mtu {mtu:?}: {entry}"
            );
            let direct_after_null = entry.contains(r#""direct_after_ms":null"#);
            if p == "direct" {
                assert!(!direct_after_null, "direct without a time: {entry}");
            } else if !direct_after_null {
                // Went direct and fell back (a loaded machine can starve a path past its
                // liveness limit): then the fall-back must have been reported.
                assert!(
                    r.stdout.contains(r#""path":"relay""#) && r.stdout.contains("path_changed"),
                    "p{i} -> p{j} was direct, ends on relay, and no path_changed said so:\n{}",
                    r.stdout
                );
            }
        }
        let upgrades = r.stdout.matches(r#""event":"path_changed""#).count();
        if path == ["relay"] {
            assert_eq!(upgrades, 0, "p{i} punched with --relay-only:\n{}", r.stdout);
        } else if path == ["direct"] {
            assert!(upgrades >= 2, "p{i}:\n{}", r.stdout);
        }
        // With --json, every stdout line is JSON; the events name the other members.
        for line in r.stdout.lines() {
            assert!(
                line.starts_with("{\"event\":\"") && line.ends_with('}'),
                "{line}"
            );
        }
        assert_eq!(r.stdout.matches(r#""event":"member_joined""#).count(), 2);
    }
}

#[test]
fn a_hosting_peer_serves_two_others_who_reach_it_directly() {
    let started = Instant::now();
    let peer = |name: &str, extra: &[&str]| {
        let args: Vec<String> = ["peer", "--room", "lobby", "--peers", "2", "--send", "50"]
            .iter()
            .chain(["--name", name, "--timeout", PEER_TIMEOUT, "--json"].iter())
            .chain(extra.iter())
            .map(|s| (*s).to_owned())
            .collect();
        spawn(&args)
    };
    let mut host = peer("p0", &["--host", "--server", "127.0.0.1:0"]);
    let mut out = BufReader::new(host.stdout.take().expect("piped stdout"));
    let mut hosting = String::new();
    out.read_line(&mut hosting).expect("the hosting line");
    assert!(
        hosting.starts_with(r#"{"event":"hosting","addr":""#),
        "{hosting}"
    );
    let addr = string_field(&hosting, "addr").expect("addr");
    let key = string_field(&hosting, "public_key").expect("public_key");
    assert_eq!(string_field(&hosting, "tcp_addr"), Some(addr.clone()));
    let others: Vec<Child> = ["p1", "p2"]
        .iter()
        .map(|name| peer(name, &["--server", &addr, "--server-key", &key]))
        .collect();
    let mut results = vec![finish_reading(host, started, hosting, out)];
    results.extend(others.into_iter().map(|c| finish(c, started)));
    assert_complete(&results, 50, &["direct"], true);
    // The others reach the hosting peer at the host's own socket.
    for (i, r) in results.iter().enumerate().skip(1) {
        let to_host = format!(r#""path":"direct","addr":"{addr}""#);
        assert!(
            r.stdout
                .lines()
                .any(|l| l.contains("path_changed") && l.contains(&to_host)),
            "p{i}:\n{}",
            r.stdout
        );
    }
}

#[test]
fn three_peers_over_tcp_exchange_everything_through_the_relay() {
    let server = ServerProc::start(&[]);
    let results = three_peers(&server, "ro-tcp", 100, &["--tcp", "--relay-only"]);
    assert_complete(&results, 100, &["relay"], true);
    for (i, r) in results.iter().enumerate() {
        assert!(
            r.stdout
                .contains(r#"{"event":"server_transport","transport":"tcp"}"#),
            "p{i} never said it reached the server over TCP:\n{}",
            r.stdout
        );
        assert!(!r.stdout.contains(r#""transport":"udp""#), "{}", r.stdout);
    }
}

#[test]
fn three_peers_reliable_ordered_through_the_relay() {
    let server = ServerProc::start(&[]);
    let results = three_peers(&server, "ro-relay", 200, &["--relay-only", "--size", "200"]);
    assert_complete(&results, 200, &["relay"], true);
}

/// The value of `"key":123` in a flat JSON line.
fn int_field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let len = line[start..].find(|c: char| !c.is_ascii_digit())?;
    line[start..start + len].parse().ok()
}

#[test]
fn three_relay_only_peers_through_one_thread_and_through_two_relay_threads() {
    for threads in [1u64, 2] {
        let server = ServerProc::start(&["--threads", &threads.to_string(), "--stats-every", "1"]);
        let relay_threads = if threads == 1 { 0 } else { threads };
        assert_eq!(server.relay_threads, relay_threads);
        let room = format!("threads-{threads}");
        let results = three_peers(&server, &room, 300, &["--relay-only", "--size", "300"]);
        assert_complete(&results, 300, &["relay"], true);
        // Every message's bytes went through the relay (packed several to a packet, with
        // acks), on the relay threads if any.
        let started = Instant::now();
        let stats = loop {
            let line = server
                .lines
                .recv_timeout(Duration::from_secs(5))
                .expect("a stats line every second");
            if line.starts_with(r#"{"event":"stats","#)
                && int_field(&line, "relayed_bytes").is_some_and(|n| n >= 6 * 300 * 300)
            {
                break line;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{line}");
        };
        let relayed = int_field(&stats, "relayed_packets").expect("relayed_packets");
        let by_threads = int_field(&stats, "relayed_by_relay_threads").expect("by threads");
        if relay_threads == 0 {
            assert_eq!(by_threads, 0, "{stats}");
        } else {
            // All on the relay threads but a pair's first few: the relay path's path-MTU
            // probe leaves the moment a client hears of its peer, and the server introduces
            // the pair (its pump) before its relay threads hear of it (`RelayThreads::
            // exchange` after the pump), so such a packet can reach a thread that does not
            // know the session yet; the thread hands it to the server's thread, which relays
            // it itself. Two per pair and direction at most (six of those among three peers).
            let early = relayed.checked_sub(by_threads);
            assert!(
                early.is_some_and(|n| n <= 2 * 6),
                "all but a pair's first few on the relay threads: {stats}"
            );
        }
        assert!(!stats.contains("relay_denied"), "{stats}");
        assert!(!stats.contains("relay_rate"), "{stats}");
    }
}

#[test]
fn large_messages_arrive_whole_with_segmentation_offload_and_without() {
    // Full-size packets back to back to one destination: GSO sends and GRO receives on Linux
    // (the default), one datagram per message with --no-offload; through the relay (two relay
    // threads) and direct.
    for (offload, path) in [
        (true, "relay"),
        (false, "relay"),
        (true, "direct"),
        (false, "direct"),
    ] {
        let flag: &[&str] = if offload { &[] } else { &["--no-offload"] };
        let server = ServerProc::start(&[&["--threads", "2"][..], flag].concat());
        let mut args = vec![
            "--mode",
            "reliable-ordered",
            "--size",
            "200000",
            "--hold",
            "1",
        ];
        args.extend_from_slice(flag);
        if path == "relay" {
            args.push("--relay-only");
        }
        let room = format!("offload-{offload}-{path}");
        let results = three_peers(&server, &room, 4, &args);
        assert_complete(&results, 4, &[path], true);
    }
}

#[test]
fn three_peers_reliable_ordered_punch_direct_paths_on_loopback() {
    // Loopback has no NAT: punching succeeds within milliseconds, and the hold lets it settle
    // even if the exchange finishes first.
    let server = ServerProc::start(&[]);
    let args = ["--mode", "reliable-ordered", "--hold", "1"];
    let results = three_peers(&server, "ro", 100, &args);
    assert_complete(&results, 100, &["direct"], true);
}

#[test]
fn three_peers_reliable_ordered_large_messages_are_fragmented_and_reassembled() {
    let server = ServerProc::start(&[]);
    let results = three_peers(&server, "big", 20, &["--size", "20000", "--hold", "0.2"]);
    assert_complete(&results, 20, &["relay", "direct"], true);
}

#[test]
fn three_peers_reliable_unordered() {
    let server = ServerProc::start(&[]);
    let results = three_peers(&server, "ru", 100, &["--mode", "reliable-unordered"]);
    assert_complete(&results, 100, &["relay", "direct"], false);
}

#[test]
fn three_peers_unreliable_through_the_relay() {
    // Loopback loses nothing at this rate, so "complete delivery" holds for unreliable too.
    let server = ServerProc::start(&[]);
    let args = ["--mode", "unreliable", "--relay-only", "--size", "100"];
    let results = three_peers(&server, "u-relay", 50, &args);
    assert_complete(&results, 50, &["relay"], false);
}

#[test]
fn three_peers_unreliable_with_punching_allowed() {
    let server = ServerProc::start(&[]);
    let results = three_peers(&server, "u", 50, &["--mode", "unreliable"]);
    assert_complete(&results, 50, &["relay", "direct"], false);
}

#[test]
fn the_demo_runs_to_completion() {
    let r = run(&["demo"]);
    assert!(r.status.success(), "{}\n{}", r.stdout, r.stderr);
    for needle in [
        "[server] listening on",
        "[alice] ",
        "[bob] ",
        "[carol] ",
        "rtt: ",
    ] {
        assert!(r.stdout.contains(needle), "no {needle:?} in:\n{}", r.stdout);
    }
    assert!(r.last_line().starts_with("demo complete"), "{}", r.stdout);
    assert!(r.stdout.contains("relay -> direct"), "{}", r.stdout);
    assert_eq!(r.stdout.matches(r#""ok":true"#).count(), 3, "{}", r.stdout);
}

#[test]
fn bad_command_lines_exit_2_with_a_message() {
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["server"],
        &["server", "--listen", "127.0.0.1"],
        &["server", "--listen", "127.0.0.1:99999"],
        // Discovery needs the primary socket's own IP, which a wildcard listen does not give.
        &[
            "server",
            "--listen",
            "0.0.0.0:0",
            "--alt-listen",
            "127.0.0.2:0",
        ],
        &["netcheck", "--server", "localhost"],
        &["peer", "--server", "127.0.0.1:1", "--peers", "2"],
        &[
            "peer",
            "--server",
            "127.0.0.1:1",
            "--room",
            "r",
            "--peers",
            "-1",
        ],
        &[
            "peer",
            "--server",
            "127.0.0.1:1",
            "--room",
            "r",
            "--peers",
            "2",
            "--mode",
            "fast",
        ],
        &[
            "peer",
            "--server",
            "127.0.0.1:1",
            "--room",
            "r",
            "--peers",
            "2",
            "--size",
            "4",
        ],
        &[
            "peer",
            "--server",
            "127.0.0.1:1",
            "--room",
            "r",
            "--peers",
            "2",
            "--timeout",
            "0",
        ],
        &[
            "peer",
            "--server",
            "127.0.0.1:1",
            "--room",
            "r",
            "--peers",
            "2",
            "--hold",
            "x",
        ],
        &[
            "peer",
            "--server",
            "127.0.0.1:1",
            "--room",
            "",
            "--peers",
            "2",
        ],
        &[
            "peer",
            "--server",
            "127.0.0.1:1",
            "--room",
            "r",
            "--peers",
            "2",
            "--server-key",
            "ab",
        ],
        &[
            "peer",
            "--server",
            "127.0.0.1:1",
            "--room",
            "r",
            "--peers",
            "2",
            "--bind",
            "[::1]:0",
        ],
        &[
            "peer",
            "--server",
            "127.0.0.1:1",
            "--room",
            "r",
            "--peers",
            "2",
            "--mode",
            "unreliable",
            "--size",
            "100000",
        ],
        &[
            "peer",
            "--server",
            "127.0.0.1:1",
            "--room",
            "r",
            "--peers",
            "2",
            "--tcp",
            "--udp-only",
        ],
        // A host must be told the address the other peers reach it at, and is its own
        // server: no key to pin, nothing to bind apart.
        &[
            "peer",
            "--host",
            "--server",
            "0.0.0.0:0",
            "--room",
            "r",
            "--peers",
            "2",
        ],
        &[
            "peer",
            "--host",
            "--server",
            "127.0.0.1:0",
            "--room",
            "r",
            "--peers",
            "2",
            "--server-key",
            &"11".repeat(32),
        ],
    ];
    for args in cases {
        let r = run(args);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.trim().is_empty(), "{args:?}: no message");
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
}

/// Absurd values for every flag of every subcommand, as rows of (subcommand, flag, values,
/// expected text of the error, other flags the row needs). Values are separated by spaces;
/// `''` is the empty string and `$NAME` a value made at run time (see the test).
#[rustfmt::skip] // a table: one row a line
const BAD: &[(&str, &str, &str, &str, &[&str])] = &[
    ("server", "--listen", "127.0.0.1 localhost:7 127.0.0.1:65536 '' -1", "expected IP:PORT", &[]),
    ("server", "--listen", "224.0.0.1:0 [ff02::1]:0 [::ffff:239.0.0.1]:0", "multicast", &[]),
    ("server", "--listen", "255.255.255.255:0 [::ffff:255.255.255.255]:0", "broadcast", &[]),
    ("server", "--alt-listen", "0.0.0.0:0 [::]:0 [::ffff:0.0.0.0]:0", "unspecified", &[]),
    ("server", "--alt-listen", "224.0.0.1:0 255.255.255.255:0", "cannot be bound", &[]),
    ("server", "--alt-listen", "[::1]:0", "same address family", &[]),
    ("server", "--alt-listen", "127.0.0.1:7", "must differ", &["--listen", "127.0.0.1:7"]),
    ("server", "--alt-listen", "127.0.0.2:0", "specific IP", &["--listen", "0.0.0.0:0"]),
    ("server", "--alt-listen", "[::1]:0", "specific IP", &["--listen", "[::]:0"]),
    ("server", "--secret", "''", "not an empty string", &[]),
    ("server", "--stats-every", "0 -1 86401 $MAX $PAST 1.5 1e3 NaN ''", "from 1 to 86400", &[]),
    ("server", "--threads", "0 -1 257 $MAX 1.5 NaN ''", "from 1 to 256", &[]),
    ("server", "--key-file", "/dev/zero /dev/null /dev/urandom", "is a device", &[]),
    ("server", "--key-file", "$DIR", "is a directory", &[]),
    ("server", "--key-file", "$BIG", "4096 bytes is too large", &[]),
    ("server", "--key-file", "$MALFORMED", "expected 64 hex digits", &[]),
    ("server", "--key-file", "$FIFO", "is a FIFO", &[]),
    ("server", "--key-file", "$DANGLING", "symbolic link to nothing", &[]),
    // netcheck and peer share the connect flags: both get them all (`*`).
    ("*", "--server", "localhost:7777 127.0.0.1 ''", "expected IP:PORT", &[]),
    ("*", "--server", "0.0.0.0:7777 [::]:7777 [::ffff:0.0.0.0]:7777", "unspecified", &[]),
    ("*", "--server", "255.255.255.255:7777 [::ffff:255.255.255.255]:7777", "broadcast", &[]),
    ("*", "--server", "224.0.0.1:7 [ff02::1]:7 [::ffff:224.0.0.251]:5353", "multicast", &[]),
    ("*", "--server", "127.0.0.1:0 [::1]:0 [::ffff:127.0.0.1]:0", "port 0", &[]),
    ("*", "--server-key", "ab '' $ZZ64 $AB66", "64 hex digits", &[]),
    ("*", "--token-secret", "''", "not an empty string", &[]),
    ("*", "--user-id", "-1 $PAST 1e3 1.5 id ''", "from 0 to 18446744073709551615",
        &["--token-secret", "s"]),
    ("*", "--bind", "224.0.0.1:0 255.255.255.255:0 [ff02::1]:0", "cannot be bound", &[]),
    ("*", "--bind", "[::1]:0 [::1]:7", "different address families", &[]),
    ("*", "--timeout", "0 -0 -1 1e-10 NaN inf -inf 1e400", "more than 0 and at most 86400", &[]),
    ("*", "--timeout", "86401 $MAX $PAST soon 10s '' --json", "more than 0 and at most 86400", &[]),
    ("peer", "--room", "''", "1 to 64 bytes, got 0", &[]),
    ("peer", "--room", "$LONG", "1 to 64 bytes, got 65", &[]),
    ("peer", "--room", "$WIDE", "1 to 64 bytes, got 66", &[]),
    ("peer", "--password", "$LONG", "at most 64 bytes (empty: no password), got 65", &[]),
    ("peer", "--password", "$WIDE", "at most 64 bytes (empty: no password), got 66", &[]),
    ("peer", "--name", "''", "1 to 64 bytes, got 0", &[]),
    ("peer", "--name", "$LONG", "1 to 64 bytes, got 65", &[]),
    ("peer", "--peers", "64 65535 65536 -1 $MAX $PAST two 1.5 ''", "from 0 to 63", &[]),
    ("peer", "--send", "10000001 4294967296 -1 $MAX $PAST 1e3 ''", "from 0 to 10000000", &[]),
    ("peer", "--size", "0 4 -1 1048577 $MAX $PAST 64k ''", "from 5 to 1048576", &[]),
    ("peer", "--size", "100000 1048576", "unreliable messages (one datagram) are at most",
        &["--mode", "unreliable"]),
    ("peer", "--mode", "fast ''", "reliable-ordered", &[]),
    ("peer", "--max-datagram-size", "0 199 1453 1500 65535 -1 $MAX $PAST 1.5 1k ''",
        "from 200 to 1452", &[]),
    ("peer", "--size", "300 1200", "unreliable messages (one datagram) are at most",
        &["--mode", "unreliable", "--max-datagram-size", "256"]),
    ("peer", "--hold", "-1 -0.5 NaN inf 1e400 86400.5 $MAX $PAST ''", "from 0 to 86400", &[]),
    ("peer", "--server", "0.0.0.0:0 [::]:7777", "unspecified", &["--host"]),
    ("demo", "--send", "10000001 -1 $MAX $PAST many", "from 0 to 10000000", &[]),
    ("demo", "--size", "0 4 1048577 $MAX $PAST -5", "from 5 to 1048576", &[]),
    ("demo", "--timeout", "0 -1 NaN inf 86401 $MAX 1e400", "more than 0 and at most 86400", &[]),
];

/// Runs `pierce args...`, killing it after `limit` (a rejected command line ends at once).
fn run_within(args: &[String], limit: Duration) -> Finished {
    let started = Instant::now();
    let mut child = spawn(args);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return finish(child, started);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let r = finish(child, started);
            panic!(
                "{args:?} was accepted and ran (killed after {limit:?})\nstdout:\n{}\nstderr:\n{}",
                r.stdout, r.stderr
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// `flags` with `flag value` set: replacing the value of a flag already there, else added
/// (`value` `None`: a switch).
fn with(flags: &mut Vec<(String, Option<String>)>, flag: &str, value: Option<&str>) {
    let value = value.map(str::to_owned);
    match flags.iter_mut().find(|(f, _)| f == flag) {
        Some(slot) => slot.1 = value,
        None => flags.push((flag.to_owned(), value)),
    }
}

/// Every flag of every subcommand ([`BAD`]), fed out-of-range and absurd values: each is
/// refused before anything touches the network, with exit status 2, a message naming the
/// flag, nothing on stdout and no panic.
#[test]
fn every_flag_refuses_absurd_values_with_exit_2_naming_the_flag() {
    let dir = std::env::temp_dir().join(format!("pierce-cli-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = |name: &str| dir.join(name).to_str().expect("utf-8 temp path").to_owned();
    std::fs::write(path("big.key"), [b'a'; 4096]).expect("write");
    std::fs::write(path("bad.key"), "not a key").expect("write");
    let mut made: Vec<(&str, String)> = vec![
        ("$MAX", u64::MAX.to_string()),
        ("$PAST", "18446744073709551616".to_owned()),
        ("$LONG", "x".repeat(65)),
        ("$WIDE", "\u{e9}".repeat(33)), // 33 characters, 66 bytes
        ("$ZZ64", "zz".repeat(32)),
        ("$AB66", "ab".repeat(33)),
        ("$DIR", dir.to_str().expect("utf-8 temp path").to_owned()),
        ("$BIG", path("big.key")),
        ("$MALFORMED", path("bad.key")),
    ];
    #[cfg(unix)]
    {
        let fifo = std::ffi::CString::new(path("fifo.key")).expect("no NUL");
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
        std::os::unix::fs::symlink(path("elsewhere.key"), path("dangling.key")).expect("link");
        made.push(("$FIFO", path("fifo.key")));
        made.push(("$DANGLING", path("dangling.key")));
    }
    let base = |sub: &str| -> Vec<(String, Option<String>)> {
        let flags: &[&str] = match sub {
            "server" => &["--listen", "127.0.0.1:0"],
            "netcheck" => &["--server", "127.0.0.1:9"],
            "peer" => &["--server", "127.0.0.1:9", "--room", "r", "--peers", "1"],
            _ => &[],
        };
        let pair = |p: &[&str]| (p[0].to_owned(), Some(p[1].to_owned()));
        flags.chunks(2).map(pair).collect()
    };
    let (mut cases, mut failures) = (0, Vec::new());
    for &(subs, flag, values, expect, extra) in BAD {
        let subs: &[&str] = if subs == "*" {
            &["netcheck", "peer"]
        } else {
            &[subs]
        };
        for (sub, value) in subs
            .iter()
            .flat_map(|s| values.split(' ').map(move |v| (s, v)))
        {
            let value = match value {
                "''" => String::new(),
                v if v.starts_with('$') => match made.iter().find(|(name, _)| *name == v) {
                    Some((_, made)) => made.clone(),
                    None if cfg!(unix) => panic!("no value {v}"),
                    None => continue, // a FIFO or a symbolic link, where there are none
                },
                v => v.to_owned(),
            };
            let mut flags = base(sub);
            for pair in extra.chunks(2) {
                with(&mut flags, pair[0], pair.get(1).copied());
            }
            with(&mut flags, flag, Some(&value));
            let mut args = vec![(*sub).to_owned()];
            for (f, v) in flags {
                args.push(f);
                args.extend(v);
            }
            cases += 1;
            let r = run_within(&args, Duration::from_secs(10));
            let ok = r.status.code() == Some(2)
                && r.stderr.contains(flag)
                && r.stderr.contains(expect)
                && !r.stderr.contains("panicked")
                && r.stdout.is_empty();
            if !ok {
                failures.push(format!(
                    "{args:?}: {}, expected {expect:?} naming {flag}\nstderr: {}stdout: {}",
                    r.status, r.stderr, r.stdout
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(cases > 150, "only {cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The largest values each flag accepts run without overflow: deadlines a day away, a stats
/// period of a day, the largest user id.
#[test]
fn the_largest_accepted_values_run() {
    let mut server = ServerProc::start(&["--stats-every", "86400"]);
    let r = run(&[
        "peer",
        "--server",
        &server.addr,
        "--room",
        "edge",
        "--peers",
        "0",
        "--send",
        "0",
        "--timeout",
        "86400",
        "--token-secret",
        "s",
        "--user-id",
        &u64::MAX.to_string(),
        "--name",
        &"n".repeat(64),
        "--password",
        &"p".repeat(64),
    ]);
    assert!(r.status.success(), "{}\n{}", r.stdout, r.stderr);
    let room = "r".repeat(64);
    let r = run(&[
        "peer",
        "--server",
        &server.addr,
        "--room",
        &room,
        "--peers",
        "0",
        "--hold",
        "86400",
        "--timeout",
        "1",
    ]);
    // The hold ends at --timeout without failing the run.
    assert!(r.status.success(), "{}\n{}", r.stdout, r.stderr);
    let r = run(&["netcheck", "--server", &server.addr, "--timeout", "86400"]);
    assert!(r.status.success(), "{}", r.stderr);
    #[cfg(unix)]
    {
        let pid = server.child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(kill.expect("run kill").success());
        let rest: Vec<String> = server.lines.iter().collect();
        assert!(server.child.wait().expect("wait").success(), "{rest:?}");
        assert_eq!(
            rest.last().map(String::as_str),
            Some(r#"{"event":"stopped","clients":0}"#)
        );
    }
}

#[test]
fn an_unreachable_server_fails_within_the_timeout() {
    // Nothing listens on a port we just bound and released.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let server = format!("127.0.0.1:{port}");
    let r = run(&[
        "peer",
        "--server",
        &server,
        "--room",
        "r",
        "--peers",
        "1",
        "--timeout",
        "2",
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(4), "{:?}", r.elapsed);
    assert!(
        r.stderr.contains("no answer from a Pierce server"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert_eq!(
        r.last_line(),
        r#"{"event":"summary","ok":false,"name":"peer","peers":[]}"#
    );
    let r = run(&["netcheck", "--server", &server, "--timeout", "1"]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(3), "{:?}", r.elapsed);
    assert!(r.stderr.contains("no answer"), "{}", r.stderr);
}

#[test]
fn netcheck_without_an_alternate_address_leaves_mapping_and_filtering_unknown() {
    let server = ServerProc::start(&[]);
    let r = run(&["netcheck", "--server", &server.addr, "--json"]);
    assert!(r.status.success(), "{}", r.stderr);
    let line = r.last_line();
    let reflexive = string_field(line, "reflexive").expect("reflexive");
    assert!(reflexive.starts_with("127.0.0.1:"), "{line}");
    assert!(
        line.ends_with(
            r#","mapping":"unknown","filtering":"unknown","port_preserved":true,"allocation":null,"port_delta":null,"alternate":null}"#
        ),
        "loopback has no NAT, and nothing else is measurable: {line}"
    );
    assert!(
        r.stderr.contains(
            "the server has no alternate address (--alt-listen): mapping and filtering cannot \
             be measured"
        ),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("not as a Pierce server"), "{}", r.stderr);
}

#[test]
fn netcheck_measures_mapping_and_filtering_with_an_alternate_address() {
    // 127.0.0.2 is a loopback address too on Linux: a second server IP with no setup.
    let server = ServerProc::start(&["--alt-listen", "127.0.0.2:0"]);
    let r = run(&["netcheck", "--server", &server.addr, "--json"]);
    assert!(r.status.success(), "{}", r.stderr);
    let line = r.last_line();
    let reflexive = string_field(line, "reflexive").expect("reflexive");
    assert!(reflexive.starts_with("127.0.0.1:"), "{line}");
    let alternate = string_field(line, "alternate").expect("alternate");
    assert!(alternate.starts_with("127.0.0.2:"), "{line}");
    assert!(
        line.contains(
            r#","mapping":"endpoint-independent","filtering":"endpoint-independent","port_preserved":true,"allocation":null,"port_delta":null,"#
        ),
        "loopback has no NAT: {line}"
    );
    assert!(!r.stderr.contains("note"), "{}", r.stderr);
    // The same as text.
    let r = run(&["netcheck", "--server", &server.addr]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("mapping: endpoint-independent\nfiltering: endpoint-independent\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("server alternate address: {alternate}")),
        "{}",
        r.stdout
    );
}

#[test]
fn netcheck_checks_both_families_at_once() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        println!("SKIPPED: no IPv6 loopback");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have IPv6 loopback"
        );
        return;
    }
    let v4 = ServerProc::start(&["--alt-listen", "127.0.0.2:0"]);
    let v6 = ServerProc::start_at("[::1]:0", &[]);
    let r = run(&[
        "netcheck", "--server", &v6.addr, "--server", &v4.addr, "--json",
    ]);
    assert!(r.status.success(), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per family, IPv4 first: {}",
        r.stdout
    );
    let prefix = |family: &str, server: &str| {
        format!(r#"{{"event":"netcheck","family":"{family}","server":"{server}","reflexive":""#)
    };
    assert!(
        lines[0].starts_with(&prefix("ipv4", &v4.addr)),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&prefix("ipv6", &v6.addr)),
        "{}",
        lines[1]
    );
    // Each family from its own socket, seen at its own loopback address, untranslated: the
    // filtering is then a firewall's (none on loopback where the server has a second IP).
    let reflexive = |line: &str| string_field(line, "reflexive").expect("reflexive");
    assert!(
        reflexive(lines[0]).starts_with("127.0.0.1:"),
        "{}",
        lines[0]
    );
    assert!(reflexive(lines[1]).starts_with("[::1]:"), "{}", lines[1]);
    assert!(
        lines[0].contains(r#""nat":false,"firewall":"endpoint-independent","mapping":"endpoint-independent","filtering":"endpoint-independent","#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(
            r#""nat":false,"firewall":"unknown","mapping":"unknown","filtering":"unknown","#
        ),
        "one IPv6 loopback address: nothing to tell filtering by: {}",
        lines[1]
    );
    assert!(
        r.stderr
            .contains("pierce: note (ipv6): the server has no alternate address"),
        "the IPv6 server's note says its family: {}",
        r.stderr
    );
    // As text: a block per family.
    let r = run(&["netcheck", "--server", &v4.addr, "--server", &v6.addr]);
    assert!(r.status.success(), "{}", r.stderr);
    let v4_block = format!("IPv4 via {}\nreflexive address 127.0.0.1:", v4.addr);
    let v6_block = format!("IPv6 via {}\nreflexive address [::1]:", v6.addr);
    assert!(r.stdout.contains(&v4_block), "{}", r.stdout);
    assert!(r.stdout.contains(&v6_block), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("translated (NAT): no; firewall (inbound filtering): endpoint-independent"),
        "{}",
        r.stdout
    );
}

#[test]
fn netcheck_reports_a_family_that_failed_and_still_prints_the_other() {
    let v4 = ServerProc::start(&[]);
    // Nothing listens there: the IPv6 check times out.
    let silent = std::net::UdpSocket::bind("[::1]:0");
    let Ok(silent) = silent else {
        println!("SKIPPED: no IPv6 loopback");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have IPv6 loopback"
        );
        return;
    };
    let silent = silent.local_addr().expect("address").to_string();
    let r = run(&[
        "netcheck",
        "--server",
        &v4.addr,
        "--server",
        &silent,
        "--json",
        "--timeout",
        "2",
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    assert!(r.stdout.contains(r#""family":"ipv4""#), "{}", r.stdout);
    assert!(
        r.stderr
            .contains(&format!("pierce: netcheck via {silent} failed: no answer")),
        "{}",
        r.stderr
    );
}

#[test]
fn the_server_ready_line_lists_its_discovery_addresses() {
    let ready = |extra: &[&str]| {
        let mut args = vec!["server", "--listen", "127.0.0.1:0", "--json"];
        args.extend_from_slice(extra);
        let mut child = spawn(&args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let lines = line_reader(child.stdout.take().expect("piped stdout"));
        let line = lines.recv_timeout(Duration::from_secs(20));
        let _ = child.kill();
        let _ = child.wait();
        line.expect("the server prints its ready line")
    };
    let line = ready(&[]);
    assert!(line.ends_with(r#","alt_addrs":[]}"#), "{line}");
    // TCP (the fallback for clients that cannot use UDP) on the same address.
    assert_eq!(string_field(&line, "tcp_addr"), string_field(&line, "addr"));
    let line = ready(&["--alt-listen", "127.0.0.2:0"]);
    let addr = string_field(&line, "addr").expect("addr");
    let port = addr.rsplit(':').next().expect("port");
    let alt = line
        .split(r#""alt_addrs":["127.0.0.2:"#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the alternate address first");
    // The alternate, then the crossings: the primary IP with the alternate port, the
    // alternate IP with the primary port.
    assert!(
        line.ends_with(&format!(
            r#""alt_addrs":["127.0.0.2:{alt}","127.0.0.1:{alt}","127.0.0.2:{port}"]}}"#
        )),
        "{line}"
    );
    // Same IP, another port: no crossings.
    let line = ready(&["--alt-listen", "127.0.0.1:0"]);
    assert!(line.contains(r#""alt_addrs":["127.0.0.1:"#), "{line}");
    // addr, tcp_addr and the alternate.
    assert_eq!(line.matches("127.0.0.1:").count(), 3, "{line}");
}

#[test]
fn the_server_reports_its_counters_with_drops_by_reason() {
    let server = ServerProc::start(&["--stats-every", "1"]);
    // Two datagrams no protocol here speaks, from a stranger.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..2 {
        stranger.send_to(&[0xEE; 40], &server.addr).expect("send");
    }
    let started = Instant::now();
    let line = loop {
        let line = server
            .lines
            .recv_timeout(Duration::from_secs(5))
            .expect("a stats line every second");
        if line.starts_with(r#"{"event":"stats","#) && line.contains(r#""dropped":2"#) {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{line}");
    };
    assert!(line.contains(r#""clients":0,"#), "{line}");
    assert!(
        line.contains(r#""datagrams_in":2,"bytes_in":80,"#),
        "{line}"
    );
    assert!(
        line.contains(r#""dropped_by_reason":{"unknown_kind":2}"#),
        "{line}"
    );
    // Nothing answers garbage: no amplification, not even a reply.
    assert!(line.contains(r#""datagrams_out":0,"#), "{line}");
}

#[test]
fn a_server_with_a_secret_admits_only_token_holders() {
    let server = ServerProc::start(&["--secret", "s3cret"]);
    let netcheck = |extra: &[&str]| {
        let mut args = vec!["netcheck", "--server", &server.addr, "--timeout", "5"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let r = netcheck(&[]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        r.stderr.contains("requires a connect token"),
        "{}",
        r.stderr
    );
    let r = netcheck(&["--token-secret", "wrong"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(r.stderr.contains("token is invalid"), "{}", r.stderr);
    let r = netcheck(&["--token-secret", "s3cret", "--user-id", "42"]);
    assert!(r.status.success(), "{}", r.stderr);
}

#[test]
fn a_pinned_key_the_server_does_not_hold_is_refused() {
    let server = ServerProc::start(&[]);
    let wrong = "11".repeat(32);
    let r = run(&[
        "peer",
        "--server",
        &server.addr,
        "--server-key",
        &wrong,
        "--room",
        "r",
        "--peers",
        "1",
        "--timeout",
        "3",
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("does not hold the key"), "{}", r.stderr);
    assert!(r.last_line().contains(r#""ok":false"#));
}

#[test]
fn the_key_file_keeps_the_server_identity_across_restarts() {
    let dir = std::env::temp_dir().join(format!("pierce-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("server.key");
    let path = path.to_str().expect("utf-8 temp path");
    let first = ServerProc::start(&["--key-file", path]).key.clone();
    let second = ServerProc::start(&["--key-file", path]).key.clone();
    assert_eq!(first, second);
    std::fs::write(path, "not a key").expect("overwrite");
    let r = run(&["server", "--listen", "127.0.0.1:0", "--key-file", path]);
    assert_eq!(r.status.code(), Some(2), "bad input: {}", r.stderr);
    assert!(r.stderr.contains("expected 64 hex digits"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("--key-file {path}")),
        "{}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_taken_alt_listen_address_fails_at_start() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let r = run(&["server", "--listen", "127.0.0.1:0", "--alt-listen", &addr]);
    assert_eq!(r.status.code(), Some(1));
    assert!(r.stderr.contains("cannot listen on"), "{}", r.stderr);
}

/// A server started with `args`, and a `pierce peer` in its room waiting for a member who
/// never comes (so connected when the server stops); its stdout so far is returned with the
/// reader. `started` is when the peer was spawned.
#[cfg(unix)]
fn server_with_a_waiting_peer(
    args: &[&str],
) -> (ServerProc, Child, BufReader<ChildStdout>, String, Instant) {
    let server = ServerProc::start(args);
    let mut peer = spawn(
        &[
            "peer",
            "--server",
            &server.addr,
            "--room",
            "r",
            "--peers",
            "1",
            "--timeout",
            "20",
            "--json",
        ]
        .map(str::to_owned),
    );
    let started = Instant::now();
    let joined = server
        .lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the peer connects");
    assert!(joined.contains(r#""event":"client_joined""#), "{joined}");
    // In its room before any signal (a drain refuses new rooms: its join would fail).
    let mut out = BufReader::new(peer.stdout.take().expect("piped stdout"));
    let mut read = String::new();
    while !read.contains(r#""event":"room_joined""#) {
        let n = out.read_line(&mut read).expect("peer stdout");
        assert!(n > 0, "the peer ended before joining its room: {read}");
    }
    (server, peer, out, read, started)
}

/// Sends `signal` (`TERM`, `INT`) to the server; returns what it printed after, once it
/// exited 0 (within 10 s of `started`).
#[cfg(unix)]
fn signal_server(server: &mut ServerProc, signal: &str, started: Instant) -> Vec<String> {
    let pid = server.child.id().to_string();
    let kill = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status();
    assert!(kill.expect("run kill").success());
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "server ignored SIG{signal}"
        );
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    server.lines.iter().collect()
}

#[cfg(unix)]
#[test]
fn sigterm_drains_the_server_then_closes_its_clients() {
    let args = ["--alt-listen", "127.0.0.1:0", "--drain-timeout-ms", "400"];
    let (mut server, peer, out, read, started) = server_with_a_waiting_peer(&args);
    let rest = signal_server(&mut server, "TERM", started);
    let r = finish_reading(peer, started, read, out);
    // A drain first: no new clients, the connected one told, closed at the bound.
    assert!(
        rest.iter()
            .any(|l| l == r#"{"event":"draining","within_ms":400}"#),
        "{rest:?}"
    );
    assert_eq!(
        rest.last().map(String::as_str),
        Some(r#"{"event":"stopped","clients":1}"#),
        "{rest:?}\npeer: {}\n{}",
        r.stdout,
        r.stderr
    );
    // The peer hears the drain, then the close, instead of timing out.
    assert!(
        r.stdout
            .contains(r#""event":"server_draining","within_ms":400"#),
        "{}",
        r.stdout
    );
    assert_eq!(r.status.code(), Some(1));
    assert!(
        r.stderr.contains("the server closed the session"),
        "{}",
        r.stderr
    );
}

#[cfg(unix)]
#[test]
fn sigint_stops_the_server_at_once_without_a_drain() {
    // Far beyond signal_server's 10 s: a drain would fail the test.
    let (mut server, peer, out, read, started) =
        server_with_a_waiting_peer(&["--drain-timeout-ms", "60000"]);
    let rest = signal_server(&mut server, "INT", started);
    let r = finish_reading(peer, started, read, out);
    assert!(!rest.iter().any(|l| l.contains("draining")), "{rest:?}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some(r#"{"event":"stopped","clients":1}"#)
    );
    assert!(!r.stdout.contains("server_draining"), "{}", r.stdout);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        r.stderr.contains("the server closed the session"),
        "{}",
        r.stderr
    );
}

#[cfg(unix)]
#[test]
fn sigint_ends_a_waiting_peer_with_its_summary() {
    let server = ServerProc::start(&[]);
    let peer = spawn(
        &[
            "peer",
            "--server",
            &server.addr,
            "--room",
            "lonely",
            "--peers",
            "1",
            "--timeout",
            "20",
            "--json",
        ]
        .map(str::to_owned),
    );
    let started = Instant::now();
    // Connected means its loop runs, and the handler is installed before the loop starts.
    let joined = server
        .lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the peer connects");
    assert!(joined.contains(r#""event":"client_joined""#), "{joined}");
    let kill = Command::new("kill")
        .args(["-INT", &peer.id().to_string()])
        .status();
    assert!(kill.expect("run kill").success());
    let r = finish(peer, started);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("interrupted"), "{}", r.stderr);
    assert!(
        r.last_line()
            .starts_with(r#"{"event":"summary","ok":false,"#)
    );
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
}

/// The drive example is the contract an engine author copies: with the default
/// configuration (TCP fallback, birthday sockets and all) two of them meet in a room of a real
/// `pierce server`, exchange 300 reliable messages each way and go direct.
#[test]
fn the_drive_example_with_default_settings_meets_another_through_a_pierce_server() {
    let server = ServerProc::start(&[]);
    let drive = drive::example();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&drive)
                .args(["--server", &server.addr, "--room", "drive", "--send", "300"])
                .args(["--timeout", PEER_TIMEOUT])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn the drive example")
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().expect("wait for the drive example");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        assert!(out.status.success(), "{stdout}");
        assert!(
            last.starts_with("drive ok received=300 sent=300 path=direct"),
            "{stdout}"
        );
    }
}
