//! UDP segmentation offload (GSO on send, GRO on receive) against one datagram per message,
//! in one run: two `pierce peer` processes of this package exchange `--send` reliable
//! messages of `--size` bytes each way, direct over loopback (after punching, which takes
//! milliseconds there), through a `pierce server --threads 1`; each round runs them once with
//! offload (the default) and once with `--no-offload` on the peers and the server, in an
//! order that alternates. Measured: the two peers' CPU time (user and system, from
//! `getrusage(RUSAGE_CHILDREN)` around their lives) and the wall time from start to both
//! summaries; medians over the rounds, and the ratio offload / no offload.
//!
//! `cargo bench -p pierce-mio --bench bulk_offload [-- --rounds 5 --send 100 --size 1000000]`
//! (Linux only: elsewhere there is no offload). The last line is `RESULT key=value ...`.

// A benchmark prints its table and panics loudly when a run fails.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

fn main() {
    #[cfg(target_os = "linux")]
    bench::main();
    #[cfg(not(target_os = "linux"))]
    println!("bulk_offload: skipped (UDP GSO/GRO are Linux's)");
}

#[cfg(target_os = "linux")]
mod bench {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const BIN: &str = env!("CARGO_BIN_EXE_pierce");

    struct Options {
        rounds: usize,
        send: usize,
        size: usize,
    }

    fn options() -> Options {
        let mut o = Options {
            rounds: 5,
            send: 100,
            size: 1_000_000,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
            match a.as_str() {
                "--bench" => {}
                "--rounds" => o.rounds = value().parse().unwrap(),
                "--send" => o.send = value().parse().unwrap(),
                "--size" => o.size = value().parse().unwrap(),
                other => panic!("unknown option {other}"),
            }
        }
        o
    }

    /// CPU time (user, system) of the children waited for so far.
    fn children_cpu() -> (Duration, Duration) {
        // SAFETY: getrusage writes one rusage struct, which zeroed bytes initialise.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; RUSAGE_CHILDREN is always valid.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
        let d = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        (d(u.ru_utime), d(u.ru_stime))
    }

    struct Sample {
        user: Duration,
        system: Duration,
        wall: Duration,
    }

    fn server(offload: bool) -> (Child, String) {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--threads",
            "1",
        ]);
        if !offload {
            cmd.arg("--no-offload");
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("\"addr\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        (child, addr)
    }

    fn run(o: &Options, offload: bool, round: usize) -> Sample {
        let (mut srv, addr) = server(offload);
        let room = format!("bulk-{round}-{offload}");
        let before = children_cpu();
        let start = Instant::now();
        let peers: Vec<Child> = (0..2)
            .map(|_| {
                let mut cmd = Command::new(BIN);
                cmd.args(["peer", "--server", &addr, "--room", &room, "--peers", "1"]);
                cmd.args(["--send", &o.send.to_string(), "--size", &o.size.to_string()]);
                cmd.args(["--mode", "reliable-ordered", "--json", "--timeout", "300"]);
                if !offload {
                    cmd.arg("--no-offload");
                }
                cmd.stdout(Stdio::piped()).spawn().unwrap()
            })
            .collect();
        for p in peers {
            let out = p.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let summary = text
                .lines()
                .rfind(|l| l.contains("\"summary\""))
                .unwrap_or("");
            assert!(
                out.status.success() && summary.contains("\"ok\":true"),
                "a peer failed ({}): {summary}",
                out.status
            );
            assert!(
                summary.contains("\"path\":\"direct\""),
                "not direct: {summary}"
            );
        }
        let wall = start.elapsed();
        let after = children_cpu();
        // SAFETY: kill with a live child's pid.
        unsafe { libc::kill(srv.id() as libc::pid_t, libc::SIGINT) };
        let _ = srv.wait();
        // The server's own CPU joins RUSAGE_CHILDREN only after `after` was read.
        Sample {
            user: after.0 - before.0,
            system: after.1 - before.1,
            wall,
        }
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    pub(super) fn main() {
        let o = options();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "bulk_offload: two `pierce peer`s ({BIN}), {} reliable messages of {} B each way, \
             direct over loopback, {} rounds alternating offload on/off; load at start: {}",
            o.send,
            o.size,
            o.rounds,
            load.trim()
        );
        let mut on = Vec::new();
        let mut off = Vec::new();
        for round in 0..o.rounds {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for offload in order {
                let s = run(&o, offload, round);
                println!(
                    "  round {round} offload {:3}: peers {:.3} s user + {:.3} s system, wall {:.3} s",
                    if offload { "on" } else { "off" },
                    s.user.as_secs_f64(),
                    s.system.as_secs_f64(),
                    s.wall.as_secs_f64()
                );
                if offload { &mut on } else { &mut off }.push(s);
            }
        }
        let m = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let user = |s: &Sample| s.user.as_secs_f64();
        let system = |s: &Sample| s.system.as_secs_f64();
        let cpu = |s: &Sample| (s.user + s.system).as_secs_f64();
        let wall = |s: &Sample| s.wall.as_secs_f64();
        println!();
        println!("| offload | peers' user s | peers' system s | peers' CPU s | wall s |");
        println!("|---|---:|---:|---:|---:|");
        for (name, v) in [("on", &on), ("off", &off)] {
            println!(
                "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
                m(v, user),
                m(v, system),
                m(v, cpu),
                m(v, wall)
            );
        }
        let r = |f: fn(&Sample) -> f64| m(&on, f) / m(&off, f);
        println!(
            "on/off: system {:.2}x, CPU {:.2}x, wall {:.2}x",
            r(system),
            r(cpu),
            r(wall)
        );
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("load at end: {}", load.trim());
        println!(
            "RESULT system_ratio={:.2} cpu_ratio={:.2} wall_ratio={:.2} send={} size={}",
            r(system),
            r(cpu),
            r(wall),
            o.send,
            o.size
        );
    }
}
