//! Dual stack on loopback (issue #20, item 1): one `pierce server --listen [::]:0` serves an
//! IPv4 peer, an IPv6 peer and a dual-stack peer (`--bind [::]:0`, talking to the server over
//! IPv4) in one room. Every reliable message arrives in order, over direct paths and, with
//! `--relay-only`, through the server's relay across the two families; every address a peer
//! or the server reports is canonical (`127.0.0.1:…`, never `[::ffff:127.0.0.1]:…`).
//!
//! Needs IPv6 on loopback (`::1`): without it the tests print `SKIPPED` locally and fail in CI.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::process::Child;
use std::sync::mpsc::Receiver;
use std::time::Duration;

#[path = "support/child.rs"]
mod child;
use child::{Finished, finish, spawn_piped, start_server_at, string_field};

const PIERCE: &str = env!("CARGO_BIN_EXE_pierce");
const LIMIT: Duration = Duration::from_secs(60);
/// Messages each peer sends each other one.
const COUNT: &str = "200";

/// Whether this host has IPv6 on loopback; in CI its absence fails the test.
fn ipv6_loopback() -> bool {
    if UdpSocket::bind("[::1]:0").is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI: no IPv6 on loopback (::1), which the dual-stack tests need"
    );
    eprintln!("SKIPPED: no IPv6 on loopback");
    false
}

struct Server {
    child: Child,
    lines: Receiver<String>,
    port: u16,
    key: String,
}

impl Server {
    fn start() -> Self {
        let (child, lines, ready) = start_server_at(PIERCE, "[::]:0", &[]);
        let addr = string_field(&ready, "addr").unwrap();
        assert!(addr.starts_with("[::]:"), "{ready}");
        Self {
            child,
            lines,
            port: addr.rsplit(':').next().unwrap().parse().unwrap(),
            key: string_field(&ready, "public_key").unwrap(),
        }
    }

    /// `pierce peer` named `name` reaching the server at `host` (`127.0.0.1` or `[::1]`).
    fn peer(&self, host: &str, name: &str, extra: &[&str]) -> Child {
        let server = format!("{host}:{}", self.port);
        let mut args = vec!["peer", "--server", &server, "--server-key", &self.key];
        args.extend(["--room", "dual", "--peers", "2", "--send", COUNT]);
        args.extend(["--name", name, "--timeout", "40", "--json", "--hold", "2"]);
        args.extend(extra);
        spawn_piped(PIERCE, &args)
    }

    /// The addresses its `client_joined` lines name so far.
    fn client_addrs(&self) -> Vec<String> {
        (self.lines.try_iter())
            .filter(|l| l.contains(r#""event":"client_joined""#))
            .map(|l| string_field(&l, "addr").unwrap())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three peers, one per family setup, in one room of a `[::]` server (`extra` for each);
/// every one got every message of the other two in order over a path `path` names
/// (`direct`, `relay`), and every address reported is canonical.
fn three_families(extra: &[&str], path: Option<&str>) {
    if !ipv6_loopback() {
        return;
    }
    let server = Server::start();
    let dual: Vec<&str> = ["--bind", "[::]:0"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let results = finish(
        LIMIT,
        vec![
            server.peer("127.0.0.1", "four", extra),
            server.peer("[::1]", "six", extra),
            server.peer("127.0.0.1", "dual", &dual),
        ],
    );
    let names = ["four", "six", "dual"];
    for (r, me) in results.iter().zip(names) {
        assert!(r.status.success(), "{me}: {}\n{}", r.stdout, r.stderr);
        for other in names.iter().filter(|o| **o != me) {
            got_all(r, me, other, path);
        }
    }
    // What the server saw, as each peer was told it: canonical.
    let public: Vec<String> = results.iter().map(Finished::public_addr).collect();
    assert!(public[0].starts_with("127.0.0.1:"), "{public:?}");
    assert!(public[1].starts_with("[::1]:"), "{public:?}");
    assert!(
        public[2].starts_with("127.0.0.1:"),
        "a dual-stack socket's IPv4 address, canonical: {public:?}"
    );
    let seen = server.client_addrs();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for a in &seen {
        assert!(!a.contains("::ffff:"), "the server reports {a}");
        assert!(public.contains(a), "{a} not among {public:?}");
    }
    for r in &results {
        assert!(!r.stdout.contains("::ffff:"), "{}", r.stdout);
    }
}

/// Peer `me` got every message of `from`, in order (over `path`, if given).
fn got_all(r: &Finished, me: &str, from: &str, path: Option<&str>) {
    assert!(
        r.summary().contains(r#""ok":true"#),
        "{me}: {}",
        r.summary()
    );
    let e = r.entry(from);
    assert!(
        e.contains(&format!(r#""received":{COUNT},"in_order":true"#)),
        "{me} from {from}: {e}"
    );
    if let Some(path) = path {
        assert!(
            e.contains(&format!(r#""path":"{path}""#)),
            "{me} from {from}: {e}"
        );
    }
}

#[test]
fn a_dual_stack_server_serves_ipv4_ipv6_and_dual_stack_peers_in_one_room() {
    three_families(&[], None);
}

#[test]
fn the_relay_carries_a_room_across_the_two_families() {
    three_families(&["--relay-only"], Some("relay"));
}
