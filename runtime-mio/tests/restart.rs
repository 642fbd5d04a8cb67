//! `pierce server` killed (SIGKILL) in the middle of an exchange and restarted on the same
//! port with the same `--key-file`: its stateless resets tell the `pierce peer`s at once, they
//! register again (same host ids, from their tickets) within 2 s of the restart, rejoin their
//! room, and finish the exchange with every message delivered in order (issue #24).
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[path = "support/child.rs"]
mod child;
use child::{Seen, int_field, string_field, timed_lines, wait_for};

const PIERCE: &str = env!("CARGO_BIN_EXE_pierce");
/// Longest the whole test may take.
const LIMIT: Duration = Duration::from_secs(60);
/// Messages each peer sends each other one, of `SIZE` bytes: over the relay (1 MiB/s per
/// client by default) the exchange lasts at least 3 s, long enough to kill the server in it
/// (a debug build on a loaded machine takes 15 s).
const COUNT: u32 = 1500;
const SIZE: &str = "1000";

/// A `pierce server` child, killed when dropped.
struct Server {
    child: Child,
    key: String,
    /// When its ready line was read.
    ready_at: Instant,
}

impl Server {
    fn start(addr: &str, key_file: &PathBuf, threads: &str) -> Self {
        let mut child = Command::new(PIERCE)
            .args([
                "server",
                "--listen",
                addr,
                "--json",
                "--threads",
                threads,
                "--key-file",
            ])
            .arg(key_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = timed_lines(&mut child);
        let (ready_at, ready) = lines.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(ready.contains(r#""event":"listening""#), "{ready}");
        assert!(ready.contains(&format!(r#""addr":"{addr}""#)), "{ready}");
        let key = string_field(&ready, "public_key").unwrap();
        // (The rest of its output is not needed; a reader keeps its pipe from filling.)
        thread::spawn(move || while lines.recv().is_ok() {});
        Self {
            child,
            key,
            ready_at,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `pierce peer` child and everything it printed so far.
struct Peer {
    child: Child,
    out: Seen<(Instant, String)>,
}

impl Peer {
    fn start(addr: &str, key: &str, i: usize, extra: &[&str]) -> Self {
        let count = COUNT.to_string();
        let name = format!("p{i}");
        let mut child = Command::new(PIERCE)
            .args(["peer", "--server", addr, "--server-key", key])
            .args(["--room", "restart", "--peers", "2", "--send", &count])
            .args(["--size", SIZE, "--name", &name, "--timeout", "40", "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = Seen::new(timed_lines(&mut child));
        Self { child, out }
    }

    /// Everything it printed so far.
    fn seen(&self) -> &[(Instant, String)] {
        &self.out.all
    }

    /// Reads what is there; how many lines contain `what`.
    fn count(&mut self, what: &str) -> usize {
        self.out.count(what)
    }

    /// Reads what is there; true if a line containing `what` was printed.
    fn printed(&mut self, what: &str) -> bool {
        self.count(what) > 0
    }

    fn first(&self, what: &str) -> Option<&(Instant, String)> {
        self.out.first(what)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three peers with `extra` flags exchange through a server (with `threads` relay threads)
/// that is killed and restarted in the middle; returns each peer's re-registration time after
/// the restart.
fn kill_and_restart_mid_exchange(tag: &str, threads: &str, extra: &[&str]) -> Vec<Duration> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("pierce-restart-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("server.key");
    let _ = std::fs::remove_file(&key_file);
    // A free port (UDP and TCP are bound again by the server right after this is dropped).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server = Server::start(&addr, &key_file, threads);
    let key = server.key.clone();
    let mut peers: Vec<Peer> = (0..3).map(|i| Peer::start(&addr, &key, i, extra)).collect();
    // Once everyone is in the room the exchange starts; kill the server a second into it.
    let gathered = |p: &mut Peer| p.count(r#""event":"member_joined""#) >= 2;
    assert!(
        wait_for(Duration::from_secs(20), || peers.iter_mut().all(gathered)),
        "the peers never gathered"
    );
    thread::sleep(Duration::from_secs(1));
    for p in &mut peers {
        assert!(
            !p.printed(r#""event":"summary""#),
            "the run ended before the kill"
        );
    }
    drop(server); // SIGKILL
    let server = Server::start(&addr, &key_file, threads);
    assert_eq!(server.key, key, "the same key");
    let restart = server.ready_at;
    let mut back = Vec::new();
    for (i, p) in peers.iter_mut().enumerate() {
        assert!(
            wait_for(Duration::from_secs(10), || p
                .printed(r#""event":"reconnected""#)),
            "p{i} did not register again: {:#?}",
            p.seen()
        );
        assert!(p.printed(r#""event":"server_reset""#));
        let (at, line) = p.first(r#""event":"reconnected""#).unwrap();
        let first = p.first(r#""event":"connected""#).unwrap();
        assert_eq!(
            int_field(line, "host_id"),
            int_field(&first.1, "host_id"),
            "p{i} came back with another host id (its ticket was refused)"
        );
        back.push(at.saturating_duration_since(restart));
        let (reset_at, _) = p.first(r#""event":"server_reset""#).unwrap();
        eprintln!(
            "{tag}: p{i} heard the reset {:?} after the restart, registered again {:?} later",
            reset_at.saturating_duration_since(restart),
            at.saturating_duration_since(*reset_at)
        );
    }
    for (i, p) in peers.iter_mut().enumerate() {
        let status = loop {
            if let Some(s) = p.child.try_wait().unwrap() {
                break s;
            }
            assert!(started.elapsed() < LIMIT, "p{i} ran too long");
            thread::sleep(Duration::from_millis(20));
        };
        // Exited: its reader thread may still hold the last lines (the summary).
        p.out.read_to_end(Duration::from_secs(5));
        let summary = &p.seen().last().unwrap().1;
        assert!(
            status.success() && summary.starts_with(r#"{"event":"summary","ok":true,"#),
            "p{i}: {status}: {summary}\n{:#?}",
            p.seen()
        );
        for j in (0..3).filter(|j| *j != i) {
            let entry = &summary[summary.find(&format!(r#"{{"name":"p{j}","#)).unwrap()..];
            assert!(
                entry.contains(&format!(r#""received":{COUNT},"in_order":true"#)),
                "p{i} from p{j}: {summary}"
            );
        }
    }
    let done: Vec<Duration> = peers
        .iter()
        .map(|p| {
            p.seen()
                .last()
                .unwrap()
                .0
                .saturating_duration_since(restart)
        })
        .collect();
    eprintln!(
        "{tag}: started {:?} before the restart, finished {done:?} after it",
        restart.saturating_duration_since(started)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    back
}

#[test]
fn peers_on_direct_paths_ride_through_a_sigkilled_servers_restart_too() {
    // Their data goes direct; the server hears only their keepalives (every 2 s), so the
    // reset comes with the next one. Direct, the exchange can be over within the second
    // before the kill: they hold on for 4 s after it, still connected (the summary, which the
    // test waits for, comes after the hold).
    let back = kill_and_restart_mid_exchange("direct", "1", &["--hold", "4"]);
    eprintln!("peers on direct paths registered again {back:?} after the restart");
    for (i, b) in back.iter().enumerate() {
        assert!(*b < Duration::from_secs(4), "p{i}: {b:?}");
    }
}

#[test]
fn relay_only_peers_register_again_within_two_seconds_of_a_sigkilled_servers_restart() {
    // Two relay threads: the relay packets of the sessions the restarted server does not have
    // reach a relay thread, which hands them to the server's thread for their resets.
    let back = kill_and_restart_mid_exchange("relay", "2", &["--relay-only"]);
    eprintln!("relay-only peers registered again {back:?} after the restart");
    for (i, b) in back.iter().enumerate() {
        assert!(*b < Duration::from_secs(2), "p{i}: {b:?}");
    }
}
