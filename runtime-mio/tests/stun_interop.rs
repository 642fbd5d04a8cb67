//! Interop with real STUN tools from Debian's `coturn` package: `turnutils_stunclient`
//! against a Pierce server, and Pierce's STUN client against coturn's `turnserver`.
//!
//! CI installs coturn (`.ci/run`) and fails these tests if the tools are missing; elsewhere
//! they say loudly that they were skipped.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pierce_core::{Client, ClientConfig, ClientEvent, SecretKey, Server, ServerConfig};
use pierce_mio::Driver;

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

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
