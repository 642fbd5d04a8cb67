//! The C ABI from the outside: the two C example programs (`examples/*.c`) compiled with
//! `cc -std=c11 -Wall -Wextra -Werror` against the committed header and the built
//! `libpierce.so`, then run:
//!
//! - `sans_io`: a server and two clients of the sans-IO layer in one process, over the
//!   program's own UDP sockets and clock, exchanging reliable messages both ways;
//! - `driven`: the driven layer (`pierce_driver_*`) as the third member of a room on a real
//!   `pierce server`, with two `pierce peer` processes, speaking their message contract
//!   (`pierce peer --help`): every member must end with all N messages of every other, in
//!   order;
//!
//! `sans_io` again linked statically (`libpierce.a`); and both again under valgrind's memcheck:
//! no invalid access and no leak of any kind (see `support::VALGRIND_WHY`), with a control
//! program that forgets a `*_free` to show that the same settings fail it. They need `cc` and
//! `valgrind`: without them the tests print `SKIPPED`, or fail when `CI` is set.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Finished, finish, spawn, string_field};

/// Messages each member sends each other member.
const COUNT: u32 = 20;

/// One exchange through a real server: a `pierce server`, two `pierce peer`s and `driven`
/// (the last run by `wrap`, e.g. under valgrind), all in one room. Returns the three runs:
/// the two peers', then `driven`'s.
fn room_with_two_pierce_peers(
    driven: &std::path::Path,
    wrap: Option<Command>,
    peer_timeout: u32,
) -> Vec<Finished> {
    let pierce = &support::built().pierce;
    let mut server =
        spawn(Command::new(pierce).args(["server", "--listen", "127.0.0.1:0", "--json"]));
    let ready = read_line(&mut server);
    let (Some(addr), Some(key)) = (
        string_field(&ready, "addr"),
        string_field(&ready, "public_key"),
    ) else {
        let _ = server.kill();
        let _ = server.wait();
        panic!("no ready line from pierce server: {ready:?}");
    };
    let (count, timeout) = (COUNT.to_string(), peer_timeout.to_string());
    let common = |name: &str| -> Vec<String> {
        [
            "--server",
            &addr,
            "--server-key",
            &key,
            "--room",
            "c-abi",
            "--peers",
            "2",
            "--send",
            &count,
            "--name",
            name,
            "--timeout",
            &timeout,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let peers: Vec<_> = ["p0", "p1"]
        .iter()
        .map(|name| spawn(Command::new(pierce).arg("peer").args(common(name))))
        .collect();
    let mut c = match wrap {
        Some(mut w) => {
            w.arg(driven);
            w
        }
        None => Command::new(driven),
    };
    let c = spawn(c.args(common("c")));
    let limit = Duration::from_secs(u64::from(peer_timeout) + 30);
    let mut runs: Vec<Finished> = peers.into_iter().map(|p| finish(p, limit)).collect();
    runs.push(finish(c, limit));
    let _ = server.kill();
    let _ = server.wait();
    runs
}

/// The first line of a child's stdout (its ready line); the rest stays unread.
fn read_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(out).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {} // keep draining so the server never blocks on a full pipe
    });
    rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default()
}

/// Each of the three members got all [`COUNT`] messages of both others, in order, and says
/// `ok`: the peers' summaries name `c` (the C program) and each other.
fn assert_everyone_complete(runs: &[Finished]) {
    let names = ["p0", "p1", "c"];
    for (run, me) in runs.iter().zip(names) {
        assert!(run.status.success(), "{}", run.show(me));
        let summary = run.last_line();
        assert!(
            summary.starts_with(r#"{"event":"summary","ok":true,"#),
            "{}",
            run.show(me)
        );
        for other in names.iter().filter(|n| **n != me) {
            let entry = format!(r#""name":"{other}","path":"#,);
            let at = summary
                .find(&entry)
                .unwrap_or_else(|| panic!("{me}'s summary does not name {other}: {summary}"));
            let rest = &summary[at..];
            let rest = &rest[..rest.find('}').unwrap_or(rest.len())];
            assert!(
                rest.contains(&format!(r#""received":{COUNT},"in_order":true"#)),
                "{me} from {other}: {summary}"
            );
        }
    }
}

#[test]
fn sans_io_program_exchanges_reliable_messages_over_its_own_sockets() {
    if !support::have("sans_io", &["cc"]) {
        return;
    }
    let exe = support::compile("sans_io");
    let _serial = support::serial();
    let run = finish(spawn(&mut Command::new(&exe)), Duration::from_secs(60));
    println!("{}", run.stdout);
    assert!(run.status.success(), "{}", run.show("sans_io"));
    assert!(
        run.last_line()
            .starts_with(r#"{"event":"summary","ok":true,"#),
        "{}",
        run.show("sans_io")
    );
}

#[test]
fn sans_io_program_links_statically_too() {
    if !support::have("sans_io, static", &["cc"]) {
        return;
    }
    let exe = support::compile_linked("sans_io", support::Link::Static);
    let ldd = Command::new("ldd").arg(&exe).output().map(|o| o.stdout);
    if let Ok(ldd) = ldd {
        let ldd = String::from_utf8_lossy(&ldd);
        assert!(!ldd.contains("libpierce"), "linked libpierce.so: {ldd}");
    }
    let _serial = support::serial();
    let run = finish(
        spawn(Command::new(&exe).args(["--send", "20"])),
        Duration::from_secs(60),
    );
    assert!(
        run.status.success()
            && run
                .last_line()
                .starts_with(r#"{"event":"summary","ok":true,"#),
        "{}",
        run.show("sans_io-static")
    );
}

#[test]
fn driven_program_completes_a_room_exchange_with_two_pierce_peers() {
    if !support::have("driven", &["cc"]) {
        return;
    }
    let exe = support::compile("driven");
    let _serial = support::serial();
    let runs = room_with_two_pierce_peers(&exe, None, 30);
    println!("{}", runs[2].stdout);
    assert_everyone_complete(&runs);
}

#[test]
fn sans_io_program_runs_clean_under_valgrind() {
    if !support::have("sans_io under valgrind", &["cc", "valgrind"]) {
        return;
    }
    let exe = support::compile("sans_io");
    let _serial = support::serial();
    let run = finish(
        spawn(support::valgrind().arg(&exe)),
        Duration::from_secs(300),
    );
    println!(
        "sans_io under valgrind ({}):\n{}",
        support::VALGRIND_WHY,
        support::valgrind_summary(&run.stderr)
    );
    assert!(run.status.success(), "{}", run.show("valgrind sans_io"));
    assert!(
        run.stderr.contains("ERROR SUMMARY: 0 errors"),
        "{}",
        run.show("valgrind sans_io")
    );
}

#[test]
fn driven_program_runs_clean_under_valgrind() {
    if !support::have("driven under valgrind", &["cc", "valgrind"]) {
        return;
    }
    let exe = support::compile("driven");
    let _serial = support::serial();
    // valgrind runs the program some 20 to 50 times slower: the peers wait longer for it.
    let runs = room_with_two_pierce_peers(&exe, Some(support::valgrind()), 120);
    println!(
        "driven under valgrind ({}):\n{}",
        support::VALGRIND_WHY,
        support::valgrind_summary(&runs[2].stderr)
    );
    assert_everyone_complete(&runs);
    assert!(
        runs[2].stderr.contains("ERROR SUMMARY: 0 errors"),
        "{}",
        runs[2].show("valgrind driven")
    );
}

/// A program that forgets `pierce_client_free`, for the test below.
const FORGETS_TO_FREE: &str = r#"
#include <stdio.h>
#include "pierce.h"
int main(void) {
    PierceClient *c = NULL;
    PierceResult r = pierce_client_new(NULL, NULL, 0, &c);
    printf("pierce_client_new: %d\n", (int)r);
    return r == PIERCE_OK ? 0 : 1; /* and never pierce_client_free(c) */
}
"#;

/// The valgrind check can fail: a forgotten `*_free` (still reachable through the library's
/// handle registry, not "definitely lost") fails the same settings the examples pass.
#[test]
fn forgotten_free_fails_the_valgrind_check() {
    if !support::have("forgotten free under valgrind", &["cc", "valgrind"]) {
        return;
    }
    let exe = support::compile_source("forgets_to_free", FORGETS_TO_FREE);
    let _serial = support::serial();
    let run = finish(
        spawn(support::valgrind().arg(&exe)),
        Duration::from_secs(120),
    );
    println!(
        "a forgotten pierce_client_free under valgrind:\n{}",
        support::valgrind_summary(&run.stderr)
    );
    assert!(
        run.stdout.contains("pierce_client_new: 0"),
        "{}",
        run.show("forgets_to_free")
    );
    assert_eq!(
        run.status.code(),
        Some(99),
        "valgrind must fail it: {}",
        run.show("forgets_to_free")
    );
    assert!(
        run.stderr.contains("still reachable") && !run.stderr.contains("ERROR SUMMARY: 0 errors"),
        "{}",
        run.show("forgets_to_free")
    );
}
