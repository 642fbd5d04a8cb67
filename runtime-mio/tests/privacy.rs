//! IP privacy with real processes on loopback: `pierce peer --private` and normal peers in one
//! room of a `pierce server`, and rooms created with `--relay-only-room`. Every reliable
//! message arrives in order over the relay; the private peer's pairs never go direct and no
//! other peer's output names its address, while the normal peers in the same room do go
//! direct (so the checks can fail).
//!
//! What a process can show is behaviour: with `--private` both halves must break for the
//! private peer's pairs to go direct (the server hides its address, and the private client
//! refuses to punch or answer probes whatever it is told); the room tests fail when the
//! server's hiding alone breaks. Which bytes the server sends is checked opened in the core's
//! tests and on the wire in the simulator's (`sim/tests/privacy.rs`).
#![allow(clippy::unwrap_used)]

use std::process::Child;
use std::thread;
use std::time::Duration;

#[path = "support/child.rs"]
mod child;
use child::{Finished, finish, int_field, spawn_piped, start_server, string_field};

const PIERCE: &str = env!("CARGO_BIN_EXE_pierce");
/// Longest one peer may run.
const LIMIT: Duration = Duration::from_secs(60);
/// Messages each peer sends each other one.
const COUNT: &str = "200";

/// A `pierce server` with rooms, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    key: String,
}

impl Server {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        let (child, _lines, ready) = start_server(PIERCE, extra);
        Self {
            child,
            addr: string_field(&ready, "addr").unwrap(),
            key: string_field(&ready, "public_key").unwrap(),
        }
    }

    /// `pierce peer` in `room` named `name` with `extra` flags (3 members in all).
    fn peer(&self, room: &str, name: &str, extra: &[&str]) -> Child {
        let mut args = vec!["peer", "--server", &self.addr, "--server-key", &self.key];
        args.extend([
            "--room", room, "--peers", "2", "--send", COUNT, "--name", name,
        ]);
        args.extend(["--timeout", "40", "--json", "--hold", "2"]);
        args.extend(extra);
        spawn_piped(PIERCE, &args)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peer `r` (named `me`) finished ok with every message from `from` in order, over `path`.
fn assert_got_all(r: &Finished, me: &str, from: &str, path: &str) {
    assert!(
        r.status.success(),
        "{me} failed: {}\nstdout:\n{}\nstderr:\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    let e = r.entry(from);
    assert!(e.contains(&format!(r#""received":{COUNT},"#)), "{me}: {e}");
    assert!(e.contains(r#""in_order":true"#), "{me}: {e}");
    assert_eq!(string_field(e, "path").as_deref(), Some(path), "{me}: {e}");
}

/// `me` stayed on the relay to `from` for the whole run: never direct, never a path change
/// (looked up by host id: a path can change before the peer's name is known).
fn assert_stayed_relayed(r: &Finished, me: &str, from: &str) {
    assert_got_all(r, me, from, "relay");
    assert!(r.entry(from).contains(r#""direct_after_ms":null"#), "{me}");
    let named = format!(r#""name":"{from}""#);
    let id = (r.stdout.lines())
        .find(|l| l.contains(r#""event":"member_named""#) && l.contains(&named))
        .and_then(|l| int_field(l, "member"))
        .unwrap_or_else(|| panic!("{me} never named {from}:\n{}", r.stdout));
    let peer = format!(r#""peer":{id},"#);
    let changed =
        (r.stdout.lines()).any(|l| l.contains(r#""event":"path_changed""#) && l.contains(&peer));
    assert!(!changed, "{me} changed path to {from}:\n{}", r.stdout);
}

#[test]
fn a_private_peer_exchanges_everything_over_the_relay_and_its_address_reaches_no_one() {
    let server = Server::start();
    let room = "privacy";
    let results = finish(
        LIMIT,
        vec![
            server.peer(room, "p", &["--private"]),
            server.peer(room, "a", &[]),
            server.peer(room, "b", &[]),
        ],
    );
    let [p, a, b] = &results[..] else {
        unreachable!()
    };
    assert!(
        p.summary()
            .ends_with(r#","private":true,"relay_only_room":false}"#),
        "{}",
        p.summary()
    );
    let p_addr = p.public_addr();
    for (r, me) in [(a, "a"), (b, "b")] {
        assert_stayed_relayed(p, "p", me);
        assert_stayed_relayed(r, me, "p");
        assert!(
            !r.stdout.contains(&p_addr),
            "{me} printed {p_addr}:\n{}",
            r.stdout
        );
        assert!(!r.summary().contains("private"), "{}", r.summary());
    }
    // The two normal peers went direct to each other (loopback punches at once).
    assert_got_all(a, "a", "b", "direct");
    assert_got_all(b, "b", "a", "direct");
    for (r, other) in [(a, "b"), (b, "a")] {
        let e = r.entry(other);
        assert!(!e.contains(r#""direct_after_ms":null"#), "{e}");
    }
}

#[test]
fn peers_in_a_relay_only_room_stay_relayed_and_a_relay_only_join_of_a_normal_room_fails() {
    let server = Server::start();
    let results = finish(
        LIMIT,
        vec![
            server.peer("quiet", "x", &["--relay-only-room"]),
            server.peer("quiet", "y", &["--relay-only-room"]),
            server.peer("quiet", "z", &["--relay-only-room"]),
        ],
    );
    let names = ["x", "y", "z"];
    for (r, me) in results.iter().zip(names) {
        assert!(
            r.summary()
                .ends_with(r#","private":false,"relay_only_room":true}"#),
            "{}",
            r.summary()
        );
        for other in names.iter().filter(|o| **o != me) {
            assert_stayed_relayed(r, me, other);
        }
    }

    // A normal room, then a peer that insists on a relay-only one joining it: refused.
    let mut normal = server.peer("loud", "n", &[]);
    thread::sleep(Duration::from_millis(500)); // (the room exists once n joined)
    let refused = finish(
        LIMIT,
        vec![server.peer("loud", "r", &["--relay-only-room"])],
    );
    let _ = normal.kill();
    let _ = normal.wait();
    let r = &refused[0];
    assert!(!r.status.success(), "{}", r.stdout);
    assert!(r.summary().contains(r#""ok":false"#), "{}", r.summary());
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains("not relay-only"), "{said}");
}

#[test]
fn a_server_with_relay_only_rooms_keeps_every_pair_of_normal_peers_relayed() {
    let server = Server::start_with(&["--relay-only-rooms"]);
    let results = finish(
        LIMIT,
        vec![
            server.peer("any", "x", &[]),
            server.peer("any", "y", &[]),
            server.peer("any", "z", &[]),
        ],
    );
    let names = ["x", "y", "z"];
    for (r, me) in results.iter().zip(names) {
        for other in names.iter().filter(|o| **o != me) {
            assert_stayed_relayed(r, me, other);
            let addr = results[names.iter().position(|n| n == other).unwrap()].public_addr();
            assert!(
                !r.stdout.contains(&format!(r#""addr":"{addr}""#)),
                "{}",
                r.stdout
            );
        }
    }
}
