//! Interop with real STUN tools from Debian's `coturn` package: `turnutils_stunclient` and
//! `turnutils_natdiscovery` against a Pierce server, and Pierce's STUN client and NAT
//! behaviour discovery (RFC 5780) against coturn's `turnserver`.
//!
//! CI installs coturn (`.ci/run`) and fails these tests if the tools are missing; elsewhere
//! they say loudly that they were skipped.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pierce_core::{Client, ClientConfig, ClientEvent, SecretKey, Server, ServerConfig};
use pierce_mio::Driver;

#[path = "support/child.rs"]
mod child;
use child::free_udp_port;

/// Returns false (after saying so) when `tool` is missing outside CI; panics in CI.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing in CI: .ci/run must install coturn"
        );
        eprintln!("SKIPPED: {tool} not installed (apt-get install coturn)");
    }
    found
}

#[test]
fn turnutils_stunclient_learns_its_address_from_a_pierce_server() {
    if !have("turnutils_stunclient") {
        return;
    }
    let now = Instant::now();
    let cfg = ServerConfig::new(SecretKey::from_bytes([3; 32]));
    let server = Server::new(Arc::new(cfg), [4; 32], now, Duration::ZERO).unwrap();
    let mut driver = Driver::bind("127.0.0.1:0".parse().unwrap(), server).unwrap();
    let addr = driver.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let pump = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            driver.pump(Duration::from_millis(10)).unwrap();
        }
        driver.endpoint().stats().stun_answered
    });
    let out = Command::new("timeout")
        .args([
            "10",
            "turnutils_stunclient",
            "-p",
            &addr.port().to_string(),
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let answered = pump.join().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(answered >= 1, "the Pierce server answered nothing:\n{text}");
    assert!(
        text.contains("UDP reflexive addr: 127.0.0.1:"),
        "turnutils_stunclient did not report a reflexive address:\n{text}"
    );
}

#[test]
fn a_pierce_client_learns_its_address_from_coturn() {
    if !have("turnserver") {
        return;
    }
    let port = free_udp_port();
    let mut turn = Command::new("turnserver")
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--log-file=stdout",
            "--simple-log",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stun: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let now = Instant::now();
    let client = Client::new(Arc::new(ClientConfig::default()), [5; 32], now).unwrap();
    let mut driver = Driver::bind("127.0.0.1:0".parse().unwrap(), client).unwrap();
    let me = driver.local_addr();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut result = None;
    // coturn needs a moment to start: ask again until it answers.
    while result.is_none() && Instant::now() < deadline {
        driver
            .endpoint_mut()
            .query_stun(Instant::now(), stun)
            .unwrap();
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until && result.is_none() {
            driver.pump(Duration::from_millis(20)).unwrap();
            while let Some(e) = driver.poll_event() {
                if let ClientEvent::StunResult { result: Ok(a), .. } = e {
                    result = Some(a);
                }
            }
        }
    }
    let _ = turn.kill();
    let _ = turn.wait();
    assert_eq!(result, Some(me), "coturn's answer");
}

/// Starts `pierce server --json` listening at `listen` with `extra` flags; returns it and its
/// ready line.
#[cfg(feature = "cli")]
fn pierce_server(listen: &str, extra: &[&str]) -> (std::process::Child, String) {
    let (child, _, ready) = child::start_server_at(env!("CARGO_BIN_EXE_pierce"), listen, extra);
    (child, ready)
}

/// The value of `"key":"value"` in a flat JSON line.
#[cfg(feature = "cli")]
fn string_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_owned())
}

/// coturn's RFC 5780 client classifies loopback (no NAT) through a `pierce server` with an
/// alternate address on a second loopback IP.
///
/// Without `-P`: a Pierce server doing discovery adds RESPONSE-ORIGIN and OTHER-ADDRESS to
/// every Binding answer, bare 20-byte requests included (RFC 5780 §6.1). With `-P` the
/// client adds PADDING, which Pierce does not implement, so it answers 420 Unknown Attribute
/// (RFC 8489 §6.3.1); that is checked below too. `-L 127.0.0.1` binds its socket to a
/// concrete address so it can also tell "no NAT" (local = reflexive).
#[cfg(feature = "cli")]
#[test]
fn turnutils_natdiscovery_finds_no_nat_through_a_pierce_server() {
    if !have("turnutils_natdiscovery") {
        return;
    }
    let (mut server, ready) = pierce_server("127.0.0.1:0", &["--alt-listen", "127.0.0.2:0"]);
    let addr: SocketAddr = string_field(&ready, "addr").unwrap().parse().unwrap();
    assert!(ready.contains(r#""alt_addrs":["127.0.0.2:"#), "{ready}");
    let out = Command::new("timeout")
        .args([
            "20",
            "turnutils_natdiscovery",
            "-m",
            "-f",
            "-L",
            "127.0.0.1",
        ])
        .args(["-p", &addr.port().to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    // With PADDING (-P): refused, not answered as if it were understood.
    let padded = Command::new("timeout")
        .args([
            "20",
            "turnutils_natdiscovery",
            "-m",
            "-P",
            "-L",
            "127.0.0.1",
        ])
        .args(["-p", &addr.port().to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let padded = String::from_utf8_lossy(&padded.stdout).to_string()
        + &String::from_utf8_lossy(&padded.stderr);
    assert!(padded.contains("The response is an error 420"), "{padded}");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for verdict in [
        "No ALG: Mapped == XOR-Mapped",
        "Other addr: : 127.0.0.2:",
        "NAT with Endpoint Independent Mapping!",
        "NAT with Endpoint Independent Filtering!",
    ] {
        assert!(text.contains(verdict), "no {verdict:?} in:\n{text}");
    }
    assert!(!text.contains("Dependent"), "{text}");
}

/// `pierce netcheck` (Pierce's RFC 5780 discovery) classifies loopback through coturn, which
/// is RFC 5780 capable when it listens on two IPs of one family (127.0.0.1 and 127.0.0.2),
/// with its alternate port (`--alt-listening-port`) on each.
#[cfg(feature = "cli")]
#[test]
fn pierce_netcheck_finds_no_nat_through_coturn() {
    if !have("turnserver") {
        return;
    }
    let port = free_udp_port();
    let alt = port.checked_add(1).unwrap();
    let mut turn = Command::new("turnserver")
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--listening-ip=127.0.0.2",
            &format!("--listening-port={port}"),
            &format!("--alt-listening-port={alt}"),
            "--no-tcp",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--log-file=stdout",
            "--simple-log",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    // coturn needs a moment to start: ask again until it answers.
    let out = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_pierce"))
            .args(["netcheck", "--server", &server, "--json", "--timeout", "3"])
            .output()
            .unwrap();
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
    };
    let _ = turn.kill();
    let _ = turn.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout.lines().last().unwrap_or("");
    let reflexive = string_field(line, "reflexive").unwrap_or_default();
    assert!(reflexive.starts_with("127.0.0.1:"), "{line}");
    let want = format!(
        r#","mapping":"endpoint-independent","filtering":"endpoint-independent","port_preserved":true,"allocation":null,"port_delta":null,"alternate":"127.0.0.2:{alt}"}}"#
    );
    assert!(line.ends_with(&want), "{line}\n{stderr}");
    assert!(
        stderr.contains("answered STUN but not as a Pierce server"),
        "{stderr}"
    );
}
