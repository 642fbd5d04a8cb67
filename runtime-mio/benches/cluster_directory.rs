//! Cluster directory operations per second against a real `redis-server` that the bench
//! starts itself (loopback, no persistence, see `tests/support/redis.rs`): one
//! `RedisDirectory`, one connection, one request at a time (as a node's `DirectoryThread`
//! asks them), for
//!
//! - **Claim (create)**: `--ops` distinct rooms claimed by node `a` (the Lua script, a `SET PX`
//!   and the node's `owned` set);
//! - **Claim (lookup)**: the same rooms asked for by node `b` without creating (each answer
//!   carries `a`'s record);
//! - **Heartbeat, 10 rooms**: node `c` re-registering with its list of 10 rooms, refreshing
//!   its claims on them (`--ops / 4` of them; the answer lists the 3 nodes). A heartbeat's
//!   cost grows with the rooms it lists and with the claims its node holds but does not list
//!   (each is checked, to forget those gone): a node whose 20 000 claims are not in its
//!   heartbeat pays about 25 ms a heartbeat;
//! - **TakeTicket**: `--ops` distinct tickets (`SET NX PX`).
//!
//! In the same run, Redis's own `redis-benchmark -t set,get -n 20000 -q` against the same
//! server, once with one connection (`-c 1`, comparable to ours) and once with its default
//! 50, if `redis-benchmark` is installed; the ratio of each directory operation to `GET` over
//! one connection says what the scripts cost over a plain round trip. The load average
//! before and after shows what else the machine was doing.
//!
//! ```text
//! cargo bench -p pierce-mio --bench cluster_directory [-- --ops 20000]
//! ```
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/support/redis.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use pierce_core::cluster::{DirectoryAnswer, DirectoryRequest, ListedRoom, NodeInfo, NodeLoad};
use pierce_mio::cluster::RedisDirectory;
use support::Redis;

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        region: "eu".into(),
        udp: SocketAddr::from(([192, 0, 2, 1], 7777)),
        tcp: Some(SocketAddr::from(([192, 0, 2, 1], 7777))),
        load: NodeLoad {
            clients: 120,
            rooms: 10,
            relayed_bytes_per_sec: 1_000_000,
            cpu_percent: 35,
        },
        draining: false,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs `op` for `0..n` and returns operations per second.
fn measure(
    d: &mut RedisDirectory,
    n: u64,
    mut op: impl FnMut(u64) -> DirectoryRequest,
    check: impl Fn(&DirectoryAnswer) -> bool,
) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let request = op(i);
        let answer = d.answer(&request).unwrap();
        assert!(check(&answer), "{request:?} -> {answer:?}");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `redis-benchmark`'s SET and GET requests per second with `clients` connections.
fn redis_benchmark(port: u16, clients: u32) -> Option<(f64, f64)> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-t",
            "set,get",
            "-n",
            "20000",
            "-q",
            "-c",
            &clients.to_string(),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = |name: &str| {
        text.split(['\r', '\n'])
            .filter(|l| l.starts_with(name) && l.contains("requests per second"))
            .find_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
    };
    Some((rate("SET:")?, rate("GET:")?))
}

fn main() {
    let mut ops: u64 = 20_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--ops" {
            ops = args.next().and_then(|v| v.parse().ok()).expect("--ops N");
        }
    }
    let Some(server) = Redis::start() else {
        println!("redis-server is not installed (apt-get install redis-server)");
        return;
    };
    let load_before = load_average();
    let mut d = RedisDirectory::connect(&server.url(), "bench").unwrap();
    let long = Duration::from_secs(600);
    let (a, b, c) = (node("a"), node("b"), node("c"));
    for n in [&a, &b, &c] {
        let beat = DirectoryRequest::Heartbeat {
            node: n.clone(),
            rooms: Vec::new(),
            ttl: long,
            room_ttl: long,
        };
        d.answer(&beat).unwrap();
    }
    let claim = |node: &str, create: bool| {
        let node = node.to_owned();
        move |i: u64| DirectoryRequest::Claim {
            room: format!("room-{i}"),
            node: node.clone(),
            create,
            ttl: long,
        }
    };
    let rooms: Vec<ListedRoom> = (0..10)
        .map(|i| ListedRoom {
            name: format!("c-room-{i}"),
            members: 4,
            max_members: 8,
            has_password: false,
            relay_only: false,
        })
        .collect();
    let is_claim = |a: &DirectoryAnswer| matches!(a, DirectoryAnswer::Claim(_));
    let results = [
        (
            "claim (create)",
            ops,
            measure(&mut d, ops, claim("a", true), is_claim),
        ),
        (
            "claim (lookup)",
            ops,
            measure(&mut d, ops, claim("b", false), is_claim),
        ),
        (
            "heartbeat, 10 rooms",
            ops / 4,
            measure(
                &mut d,
                ops / 4,
                |_| DirectoryRequest::Heartbeat {
                    node: c.clone(),
                    rooms: rooms.clone(),
                    ttl: long,
                    room_ttl: long,
                },
                |a| matches!(a, DirectoryAnswer::Nodes { lost, .. } if lost.is_empty()),
            ),
        ),
        (
            "take ticket",
            ops,
            measure(
                &mut d,
                ops,
                |i| DirectoryRequest::TakeTicket { id: i, ttl: long },
                |a| *a == DirectoryAnswer::Ticket(true),
            ),
        ),
    ];
    let one = redis_benchmark(server.port(), 1);
    let fifty = redis_benchmark(server.port(), 50);
    let load_after = load_average();

    println!("directory operations, one connection, sequential (redis-server on loopback)");
    println!(
        "{:<22} {:>8} {:>12} {:>10} {:>16}",
        "operation", "count", "ops/s", "µs/op", "/ GET (-c 1)"
    );
    for (name, n, rate) in results {
        let ratio = one.map_or_else(|| "-".to_owned(), |(_, get)| format!("{:.2}", rate / get));
        println!(
            "{name:<22} {n:>8} {rate:>12.0} {:>10.1} {ratio:>16}",
            1e6 / rate
        );
    }
    match (one, fifty) {
        (Some((set1, get1)), Some((set50, get50))) => {
            println!(
                "redis-benchmark -t set,get -n 20000 -q -c 1:  SET {set1:.0}/s  GET {get1:.0}/s"
            );
            println!(
                "redis-benchmark -t set,get -n 20000 -q (-c 50): SET {set50:.0}/s  GET {get50:.0}/s"
            );
        }
        _ => println!("redis-benchmark: not installed (apt-get install redis-tools)"),
    }
    println!("load average (1, 5, 15 min): before {load_before}, after {load_after}");
}
