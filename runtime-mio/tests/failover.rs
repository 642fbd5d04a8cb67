//! Two `pierce server`s sharing one `--key-file` (two nodes of a cluster); three
//! `pierce peer --relay-only --server A --server B` in a room exchange reliable ordered
//! messages through A. A is killed (SIGKILL) in the middle of the exchange: each peer's
//! session times out, it registers with B (same host id, from A's ticket), rejoins the room
//! there, and all three finish with every message delivered in order, their summaries naming
//! B (issue #19, the client half).
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[path = "support/child.rs"]
mod child;
use child::{int_field, start_server, string_field, timed_lines};

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
    fn start(key_file: &std::path::Path) -> Self {
        let (child, lines, ready) =
            start_server(PIERCE, &["--key-file", key_file.to_str().unwrap()]);
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
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
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
        let lines = timed_lines(&mut child);
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn count(&mut self, what: &str) -> usize {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.iter().filter(|(_, l)| l.contains(what)).count()
    }

    fn first(&self, what: &str) -> Option<&(Instant, String)> {
        self.seen.iter().find(|(_, l)| l.contains(what))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `pred` every 10 ms until it holds (true) or `limit` passes (false).
fn wait_for(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    pred()
}

#[test]
fn relay_only_peers_finish_on_the_second_node_when_the_first_is_sigkilled() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("pierce-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("cluster.key");
    let _ = std::fs::remove_file(&key_file);
    let a = Node::start(&key_file); // writes the key file
    let b = Node::start(&key_file); // reads it
    assert_eq!(a.key, b.key, "one key for the cluster");
    let (a_addr, b_addr) = (a.addr.clone(), b.addr.clone());
    let key = a.key.clone();
    let mut peers: Vec<Peer> = (0..3)
        .map(|i| Peer::start(&[&a_addr, &b_addr], &key, i))
        .collect();
    let gathered = |p: &mut Peer| p.count(r#""event":"member_joined""#) >= 2;
    assert!(
        wait_for(Duration::from_secs(20), || peers.iter_mut().all(gathered)),
        "the peers never gathered"
    );
    for (i, p) in peers.iter_mut().enumerate() {
        p.count("");
        let (_, line) = p.first(r#""event":"connected""#).unwrap();
        assert_eq!(
            string_field(line, "server").as_deref(),
            Some(&*a_addr),
            "p{i}"
        );
    }
    thread::sleep(Duration::from_secs(1));
    for p in &mut peers {
        assert_eq!(
            p.count(r#""event":"summary""#),
            0,
            "the run ended before the kill"
        );
    }
    let killed = Instant::now();
    drop(a); // SIGKILL
    for (i, p) in peers.iter_mut().enumerate() {
        assert!(
            wait_for(Duration::from_secs(40), || p
                .count(r#""event":"reconnected""#)
                > 0),
            "p{i} did not register with B: {:#?}",
            p.seen
        );
        let (lost_at, lost) = p.first(r#""event":"server_lost""#).unwrap().clone();
        assert_eq!(string_field(&lost, "server").as_deref(), Some(&*a_addr));
        let (at, line) = p.first(r#""event":"reconnected""#).unwrap();
        assert_eq!(
            string_field(line, "server").as_deref(),
            Some(&*b_addr),
            "p{i}"
        );
        let first = p.first(r#""event":"connected""#).unwrap();
        assert_eq!(
            int_field(line, "host_id"),
            int_field(&first.1, "host_id"),
            "p{i} came back with another host id (B refused A's ticket)"
        );
        eprintln!(
            "p{i}: lost A {:?} after the kill, on B {:?} later",
            lost_at.saturating_duration_since(killed),
            at.saturating_duration_since(lost_at)
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
        p.count("");
        let summary = &p.seen.last().unwrap().1;
        assert!(
            status.success() && summary.starts_with(r#"{"event":"summary","ok":true,"#),
            "p{i}: {status}: {summary}\n{:#?}",
            p.seen
        );
        assert_eq!(string_field(summary, "server").as_deref(), Some(&*b_addr));
        for j in (0..3).filter(|j| *j != i) {
            let entry = &summary[summary.find(&format!(r#"{{"name":"p{j}","#)).unwrap()..];
            assert!(
                entry.contains(&format!(r#""received":{COUNT},"in_order":true"#)),
                "p{i} from p{j}: {summary}"
            );
        }
    }
    eprintln!(
        "all three finished on B {:?} after A was killed",
        killed.elapsed()
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
