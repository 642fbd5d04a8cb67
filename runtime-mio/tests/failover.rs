//! Two `pierce server`s sharing one `--key-file` (two nodes of a cluster); three
//! `pierce peer --relay-only --server A --server B` in a room exchange reliable ordered
//! messages through A. A is taken down in the middle of the exchange:
//!
//! - killed (SIGKILL): each peer's session times out, it registers with B (same host id,
//!   from A's ticket), rejoins the room there, and all three finish with every message
//!   delivered in order, their summaries naming B (issue #19, the client half);
//! - stopped (SIGTERM, a drain): each peer hears A is draining, leaves it at once and does
//!   the same with B within a few round trips; A, left by all, exits long before its drain
//!   bound (issue #19, a node's rooms moved within a bounded time).
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[path = "support/child.rs"]
mod child;
use child::{Seen, int_field, serial, start_server, string_field, timed_lines, wait_for};

const PIERCE: &str = env!("CARGO_BIN_EXE_pierce");
/// Longest the whole test may take: the peers notice A's death after their idle timeout
/// (15 s).
const LIMIT: Duration = Duration::from_secs(100);
/// Messages each peer sends each other one, of `SIZE` bytes: over the relay (1 MiB/s per
/// client by default) the exchange lasts at least 3 s, long enough to kill A in it.
const COUNT: u32 = 1500;
const SIZE: &str = "1000";

/// A `pierce server` child (killed when dropped) and its address.
struct Node {
    child: Child,
    addr: String,
    key: String,
}

impl Node {
    fn start(key_file: &std::path::Path, extra: &[&str]) -> Self {
        let mut args = vec!["--key-file", key_file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (child, lines, ready) = start_server(PIERCE, &args);
        assert!(ready.contains(r#""event":"listening""#), "{ready}");
        // (Its stats lines are not needed; the reader thread drains them.)
        thread::spawn(move || while lines.recv().is_ok() {});
        Self {
            child,
            addr: string_field(&ready, "addr").unwrap(),
            key: string_field(&ready, "public_key").unwrap(),
        }
    }
}

impl Drop for Node {
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
    fn start(servers: &[&str], key: &str, i: usize) -> Self {
        let count = COUNT.to_string();
        let name = format!("p{i}");
        let mut cmd = Command::new(PIERCE);
        cmd.arg("peer");
        for s in servers {
            cmd.args(["--server", s]);
        }
        let mut child = cmd
            .args(["--server-key", key, "--relay-only"])
            .args(["--room", "failover", "--peers", "2", "--send", &count])
            .args(["--size", SIZE, "--name", &name, "--timeout", "80", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = Seen::new(timed_lines(&mut child));
        Self { child, out }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two nodes on one key (A started with `a_flags`) and three peers listing A then B,
/// gathered in their room on A, a second into their exchange.
fn gathered(tag: &str, a_flags: &[&str]) -> (std::path::PathBuf, Node, Node, Vec<Peer>) {
    let dir = std::env::temp_dir().join(format!("pierce-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("cluster.key");
    let _ = std::fs::remove_file(&key_file);
    let a = Node::start(&key_file, a_flags); // writes the key file
    let b = Node::start(&key_file, &[]); // reads it
    assert_eq!(a.key, b.key, "one key for the cluster");
    let mut peers: Vec<Peer> = (0..3)
        .map(|i| Peer::start(&[&a.addr, &b.addr], &a.key, i))
        .collect();
    let gathered = |p: &mut Peer| p.out.count(r#""event":"member_joined""#) >= 2;
    assert!(
        wait_for(Duration::from_secs(20), || peers.iter_mut().all(gathered)),
        "the peers never gathered"
    );
    for (i, p) in peers.iter_mut().enumerate() {
        p.out.count("");
        let (_, line) = p.out.first(r#""event":"connected""#).unwrap();
        assert_eq!(
            string_field(line, "server").as_deref(),
            Some(&*a.addr),
            "p{i}"
        );
    }
    thread::sleep(Duration::from_secs(1));
    for p in &mut peers {
        assert_eq!(
            p.out.count(r#""event":"summary""#),
            0,
            "the run ended before A was taken down"
        );
    }
    (dir, a, b, peers)
}

/// Waits for each peer to say it registered with B again after losing A (`reason`, as its
/// `server_lost` line gives it), with the same host id; returns, per peer, when it lost A
/// and when it was on B.
fn moved_to_b(peers: &mut [Peer], a: &str, b: &str, reason: &str) -> Vec<(Instant, Instant)> {
    let mut times = Vec::new();
    for (i, p) in peers.iter_mut().enumerate() {
        assert!(
            wait_for(Duration::from_secs(40), || {
                p.out.count(r#""event":"reconnected""#) > 0
            }),
            "p{i} did not register with B: {:#?}",
            p.out.all
        );
        let (lost_at, lost) = p.out.first(r#""event":"server_lost""#).unwrap().clone();
        assert_eq!(string_field(&lost, "server").as_deref(), Some(a));
        assert_eq!(string_field(&lost, "reason").as_deref(), Some(reason));
        let (at, line) = p.out.first(r#""event":"reconnected""#).unwrap();
        assert_eq!(string_field(line, "server").as_deref(), Some(b), "p{i}");
        let first = p.out.first(r#""event":"connected""#).unwrap();
        assert_eq!(
            int_field(line, "host_id"),
            int_field(&first.1, "host_id"),
            "p{i} came back with another host id (B refused A's ticket)"
        );
        times.push((lost_at, *at));
    }
    times
}

/// Every peer ends well, on B, with every message from each other one, in order.
fn finished_on_b(peers: &mut [Peer], b: &str, started: Instant) {
    for (i, p) in peers.iter_mut().enumerate() {
        let status = loop {
            if let Some(s) = p.child.try_wait().unwrap() {
                break s;
            }
            assert!(started.elapsed() < LIMIT, "p{i} ran too long");
            thread::sleep(Duration::from_millis(20));
        };
        p.out.read_to_end(Duration::from_secs(5));
        let summary = &p.out.all.last().unwrap().1;
        assert!(
            status.success() && summary.starts_with(r#"{"event":"summary","ok":true,"#),
            "p{i}: {status}: {summary}\n{:#?}",
            p.out.all
        );
        assert_eq!(string_field(summary, "server").as_deref(), Some(b));
        for j in (0..3).filter(|j| *j != i) {
            let entry = &summary[summary.find(&format!(r#"{{"name":"p{j}","#)).unwrap()..];
            assert!(
                entry.contains(&format!(r#""received":{COUNT},"in_order":true"#)),
                "p{i} from p{j}: {summary}"
            );
        }
    }
}

#[test]
fn relay_only_peers_finish_on_the_second_node_when_the_first_is_sigkilled() {
    let _serial = serial();
    let started = Instant::now();
    let (dir, a, b, mut peers) = gathered("failover", &[]);
    let (a_addr, b_addr) = (a.addr.clone(), b.addr.clone());
    let killed = Instant::now();
    drop(a); // SIGKILL
    let times = moved_to_b(&mut peers, &a_addr, &b_addr, "timed_out");
    for (i, (lost_at, at)) in times.iter().enumerate() {
        eprintln!(
            "p{i}: lost A {:?} after the kill, on B {:?} later",
            lost_at.saturating_duration_since(killed),
            at.saturating_duration_since(*lost_at)
        );
    }
    finished_on_b(&mut peers, &b_addr, started);
    eprintln!(
        "all three finished on B {:?} after A was killed",
        killed.elapsed()
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Longer than the whole test: a node that exits before it did so because its clients left.
const DRAIN_BOUND_MS: &str = "30000";

#[test]
fn relay_only_peers_move_to_the_second_node_at_once_when_the_first_drains() {
    let _serial = serial();
    let started = Instant::now();
    let a_flags = ["--drain-timeout-ms", DRAIN_BOUND_MS];
    let (dir, mut a, b, mut peers) = gathered("drainmove", &a_flags);
    let (a_addr, b_addr) = (a.addr.clone(), b.addr.clone());
    let pid = a.child.id().to_string();
    let termed = Instant::now();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let times = moved_to_b(&mut peers, &a_addr, &b_addr, "draining");
    for (i, p) in peers.iter_mut().enumerate() {
        assert_eq!(p.out.count(r#""event":"server_draining""#), 1, "p{i}");
    }
    let on_b = times.iter().map(|(_, at)| *at).max().unwrap() - termed;
    for (i, (lost_at, at)) in times.iter().enumerate() {
        eprintln!(
            "p{i}: left A {:?} after the SIGTERM, on B {:?} after it",
            lost_at.saturating_duration_since(termed),
            at.saturating_duration_since(termed)
        );
    }
    eprintln!("all three on B {on_b:?} after A's SIGTERM");
    // A exits cleanly once its last client left, far within its drain bound.
    let bound = Duration::from_millis(DRAIN_BOUND_MS.parse().unwrap());
    let status = loop {
        if let Some(s) = a.child.try_wait().unwrap() {
            break s;
        }
        assert!(termed.elapsed() < bound, "A waited for its drain bound");
        thread::sleep(Duration::from_millis(10));
    };
    let exited = termed.elapsed();
    assert!(status.success(), "A: {status}");
    eprintln!("A exited {exited:?} after its SIGTERM (drain bound {bound:?})");
    assert!(
        exited < bound / 2,
        "A exited {exited:?} after SIGTERM: its clients did not leave"
    );
    finished_on_b(&mut peers, &b_addr, started);
    eprintln!(
        "all three finished on B {:?} after A's SIGTERM",
        termed.elapsed()
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
