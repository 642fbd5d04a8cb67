//! The async-std example peer in a room with two `pierce peer` processes (mio), all against a
//! `pierce server` process: every peer must get every message from both others. And the same
//! refusals of bad input from both, with exit status 2.
//!
//! Both binaries come from other targets (another package's binary, this package's example),
//! so the test builds them with the cargo that runs it, into the same target directory.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
const COUNT: u32 = 100;

/// Builds `what` (cargo target-selection flags) and returns the path cargo reports for the
/// executable.
fn build(what: &[&str]) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    // This test runs from <target>/<profile>/deps/; build into the same place.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--message-format", "json"])
        .args(what);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "cargo build {what:?} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains(r#""reason":"compiler-artifact""#) && l.contains(r#""executable":""#))
        .expect("cargo reports the executable");
    let start = line.find(r#""executable":""#).expect("executable") + 14;
    let len = line[start..].find('"').expect("closing quote");
    PathBuf::from(line[start..start + len].replace("\\\\", "\\"))
}

fn field(line: &str, key: &str) -> String {
    let start = line.find(&format!("\"{key}\":\"")).expect(key) + key.len() + 4;
    let len = line[start..].find('"').expect("closing quote");
    line[start..start + len].to_owned()
}

/// Waits for `child` (killing it after [`LIMIT`]); its status, stdout and stderr.
fn finish(mut child: Child, started: Instant) -> (bool, String, String) {
    let out = child.stdout.take().expect("piped");
    finish_reading(child, started, String::new(), out)
}

/// [`finish`] for a child whose stdout the caller took and read the start of (`read`).
fn finish_reading(
    mut child: Child,
    started: Instant,
    read: String,
    mut out: impl Read + Send + 'static,
) -> (bool, String, String) {
    let mut err = child.stderr.take().expect("piped");
    let readers = [
        thread::spawn(move || {
            let mut s = read;
            let _ = out.read_to_string(&mut s);
            s
        }),
        thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }),
    ];
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a peer ran longer than {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let [out, err] = readers.map(|r| r.join().expect("reader"));
    (status.success(), out, err)
}

/// A scripted peer named `name` (`pierce peer` when `subcommand`, else the example) in a room
/// with two others, sending [`COUNT`] messages, with `args` (server, room, mode...).
fn spawn_peer(program: &Path, subcommand: bool, name: &str, args: &[&str]) -> Child {
    let mut cmd = Command::new(program);
    if subcommand {
        cmd.arg("peer");
    }
    cmd.args(["--peers", "2", "--send", &COUNT.to_string()])
        .args(["--name", name, "--timeout", "30", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a peer")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_async_std_peer_exchanges_with_mio_peers_through_a_pierce_server() {
    let pierce = build(&["-p", "pierce-mio", "--bin", "pierce"]);
    let async_peer = build(&["-p", "pierce-async-std", "--example", "peer"]);
    let mut server = Command::new(&pierce)
        .args(["server", "--listen", "127.0.0.1:0", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn pierce server");
    let stdout = server.stdout.take().expect("piped");
    let server = Killed(server);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("ready line");
    let (addr, key) = (field(&ready, "addr"), field(&ready, "public_key"));
    let peer = |program: &Path, name: &str, mode: &str, extra: &[&str]| {
        let room = format!("interop-{mode}");
        let mut args = vec!["--server", &addr, "--server-key", &key, "--room", &room];
        args.extend(["--size", "300", "--mode", mode]);
        args.extend(extra);
        spawn_peer(program, program == pierce, name, &args)
    };
    // Punching allowed in one run (loopback goes direct), relay only in the other.
    let runs: [(&str, &[&str], &str); 2] = [
        ("reliable-ordered", &["--hold", "1"], "direct"),
        ("unreliable", &["--relay-only"], "relay"),
    ];
    for (mode, extra, path) in runs {
        let started = Instant::now();
        let children = [
            ("mio-a", peer(&pierce, "mio-a", mode, extra)),
            ("async", peer(&async_peer, "async", mode, extra)),
            ("mio-b", peer(&pierce, "mio-b", mode, extra)),
        ];
        for (name, child) in children {
            let (ok, out, err) = finish(child, started);
            assert!(ok, "{mode}: {name} failed\nstdout:\n{out}\nstderr:\n{err}");
            let summary = out.lines().last().unwrap_or_default();
            let head = format!(r#"{{"event":"summary","ok":true,"name":"{name}","peers":["#);
            assert!(summary.starts_with(&head), "{summary}");
            for other in ["mio-a", "async", "mio-b"].iter().filter(|o| **o != name) {
                let entry = format!(r#"{{"name":"{other}","path":"{path}","received":{COUNT},"#);
                assert!(
                    summary.contains(&entry),
                    "{mode}: {name} lacks {entry}: {summary}"
                );
            }
        }
    }
    drop(server);
}

#[test]
fn two_mio_peers_play_on_an_async_std_peer_that_hosts() {
    let pierce = build(&["-p", "pierce-mio", "--bin", "pierce"]);
    let async_peer = build(&["-p", "pierce-async-std", "--example", "peer"]);
    let peer = |program: &Path, name: &str, extra: &[&str]| {
        let mut args = vec!["--room", "hosted"];
        args.extend(extra);
        spawn_peer(program, program == pierce, name, &args)
    };
    let started = Instant::now();
    let mut host = peer(&async_peer, "async", &["--host", "--server", "127.0.0.1:0"]);
    let mut out = BufReader::new(host.stdout.take().expect("piped"));
    let mut hosting = String::new();
    out.read_line(&mut hosting).expect("the hosting line");
    assert!(
        hosting.starts_with(r#"{"event":"hosting","addr":""#),
        "{hosting}"
    );
    let (addr, key) = (field(&hosting, "addr"), field(&hosting, "public_key"));
    let server = ["--server", &addr, "--server-key", &key];
    let mio = [
        ("mio-a", peer(&pierce, "mio-a", &server)),
        ("mio-b", peer(&pierce, "mio-b", &server)),
    ];
    let mut results = vec![("async", finish_reading(host, started, hosting, out))];
    results.extend(mio.map(|(name, child)| (name, finish(child, started))));
    for (name, (ok, out, err)) in &results {
        assert!(ok, "{name} failed\nstdout:\n{out}\nstderr:\n{err}");
        let summary = out.lines().last().unwrap_or_default();
        for other in ["async", "mio-a", "mio-b"].iter().filter(|o| *o != name) {
            let entry = format!(r#"{{"name":"{other}","path":"direct","received":{COUNT},"#);
            assert!(summary.contains(&entry), "{name} lacks {entry}: {summary}");
        }
    }
}

/// The example flattens `pierce peer`'s flags and parses them with the same checks: what
/// `pierce peer` refuses, it refuses too, with the same message and exit status 2, before it
/// opens a socket.
#[test]
fn the_async_std_peer_refuses_bad_input_as_pierce_peer_does() {
    let pierce = build(&["-p", "pierce-mio", "--bin", "pierce"]);
    let async_peer = build(&["-p", "pierce-async-std", "--example", "peer"]);
    let long = "x".repeat(65);
    let max = u64::MAX.to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["--server", "127.0.0.1:0"], "--server"),
        (&["--server", "255.255.255.255:7"], "--server"),
        (&["--server", "[::ffff:224.0.0.1]:7"], "--server"),
        (&["--peers", "64"], "--peers"),
        (&["--peers", "-1"], "--peers"),
        (&["--send", &max], "--send"),
        (&["--size", "4"], "--size"),
        (&["--mode", "unreliable", "--size", "100000"], "--size"),
        (&["--room", &long], "--room"),
        (&["--password", &long], "--password"),
        (&["--timeout", "inf"], "--timeout"),
        (&["--hold", &max], "--hold"),
        (&["--bind", "[::1]:0"], "--bind"),
        (&["--token-secret", ""], "--token-secret"),
        (&["--host", "--server", "0.0.0.0:0"], "--server"),
    ];
    for (extra, flag) in cases {
        let mut stderrs = Vec::new();
        // The case's flags replace the base's: clap refuses a flag given twice.
        let base = [
            ("--server", "127.0.0.1:9"),
            ("--room", "r"),
            ("--peers", "1"),
        ];
        let base = base
            .iter()
            .filter(|(f, _)| !extra.contains(f))
            .flat_map(|(f, v)| [*f, *v]);
        let args: Vec<&str> = base.chain(extra.iter().copied()).collect();
        for (program, sub) in [(&pierce, Some("peer")), (&async_peer, None)] {
            let out = Command::new(program)
                .args(sub)
                .args(&args)
                .stdin(Stdio::null())
                .output()
                .expect("run a peer");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(
                out.status.code(),
                Some(2),
                "{program:?} {extra:?}: {stderr}"
            );
            assert!(stderr.contains(flag), "{program:?} {extra:?}: {stderr}");
            assert!(
                !stderr.contains("panicked"),
                "{program:?} {extra:?}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{program:?} {extra:?}");
            // The first line, without the program's own name.
            let first = stderr.lines().next().unwrap_or_default();
            stderrs.push(first.split_once("error: ").map(|(_, m)| m.to_owned()));
        }
        assert_eq!(stderrs[0], stderrs[1], "{extra:?}");
    }
}
