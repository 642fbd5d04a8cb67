//! Interop with STUN implementations that are neither coturn nor ours:
//! - Vovida's, from Debian's `stun-client` (`stun`, an RFC 3489 client that classifies NATs
//!   and sends classic requests without the magic cookie) and `stun-server` (`stund`, an RFC
//!   3489 server that tells its second address in CHANGED-ADDRESS and has no OTHER-ADDRESS);
//! - Cong Ding's `go-stun` (Debian `golang-github-ccding-go-stun-dev`, built here with
//!   `golang-go`): an RFC 5389 client with the RFC 3489 classification that takes the second
//!   address from CHANGED-ADDRESS or OTHER-ADDRESS and checks RESPONSE-ORIGIN.
//!
//! On loopback there is no NAT and no filtering: the truth every classification here must
//! find is "open". 127.0.0.2 is loopback too on Linux, so a second server IP needs no setup.
//!
//! CI installs the packages (`.ci/run`) and fails these tests if the programs are missing;
//! elsewhere they print `SKIPPED`.
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/child.rs"]
mod child;
#[path = "support/interop.rs"]
mod interop;
use child::{free_udp_port, start_server_at};
use interop::{find, go_stun};

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pierce server --json --listen 127.0.0.1:0 --alt-listen ALT`: the server and its port.
fn pierce_server(alt: &str) -> (Reaped, u16, String) {
    let pierce = env!("CARGO_BIN_EXE_pierce");
    let (child, _, ready) = start_server_at(pierce, "127.0.0.1:0", &["--alt-listen", alt]);
    let port = ready
        .split(r#""addr":"127.0.0.1:"#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in the ready line: {ready}"));
    (Reaped(child), port, ready)
}

/// `stun 127.0.0.1:PORT -v`: its whole output (it writes its verdict and trace to both).
fn vovida_stun(stun: &PathBuf, port: u16) -> String {
    let out = Command::new("timeout")
        .arg("30")
        .arg(stun)
        .args([&format!("127.0.0.1:{port}"), "-v"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn assert_has(text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
}

/// Two IPs: Vovida's client asks with classic RFC 3489 requests (RFC 5389 §12.2: answered
/// with MAPPED-ADDRESS and the request's 16-byte id), follows CHANGED-ADDRESS to the other IP
/// (test I(2)), gets answers from the other IP (test II) and port (test III), and calls
/// loopback what it is: open.
#[test]
fn vovidas_stun_client_finds_loopback_open_through_a_two_ip_pierce_server() {
    let Some(stun) = find("stun", "stun-client") else {
        return;
    };
    let (_server, port, ready) = pierce_server("127.0.0.2:0");
    assert!(ready.contains(r#""alt_addrs":["127.0.0.2:"#), "{ready}");
    let text = vovida_stun(&stun, port);
    assert_has(
        &text,
        &[
            "ChangedAddress = 127.0.0.2:",
            "SourceAddress = 127.0.0.2:",
            "test I = 1",
            "test II = 1",
            "test III = 1",
            "test I(2) = 1",
            "mapped IP same = 1",
            "Primary: Open",
        ],
    );
}

/// One IP (`--alt-listen` on 127.0.0.1): no CHANGED-ADDRESS to follow (RFC 5780 §7.4), and
/// the change of IP the client asks for in its test II is refused with a 420 (RFC 5780 §6),
/// not met with the silence the client would read as a firewall. This client counts any
/// answer to test II as "answered" (it does not look at the message type), so its verdict is
/// "Open" either way here — the truth on loopback; what the server sent is checked in its
/// trace: type 273 is a Binding error, ERROR-CODE 4 20.
#[test]
fn vovidas_stun_client_gets_a_420_not_silence_from_a_one_ip_pierce_server() {
    let Some(stun) = find("stun", "stun-client") else {
        return;
    };
    let (_server, port, _) = pierce_server("127.0.0.1:0");
    let text = vovida_stun(&stun, port);
    assert_has(
        &text,
        &[
            "Received message of type 273  id=2",
            "ErrorCode = 4 20",
            "test I = 1",
            "test III = 1",
            "test I(2) = 0",
            "Primary: Open",
        ],
    );
    assert!(!text.contains("ChangedAddress"), "{text}");
    assert!(
        !text.contains("Firewall") && !text.contains("Blocked"),
        "{text}"
    );
}

/// `pierce netcheck` through Vovida's `stund`, which says where its second address is only
/// in CHANGED-ADDRESS (RFC 3489): Pierce's discovery follows it and finds loopback open, and
/// its note does not blame a `--alt-listen` this server does not have.
#[test]
fn pierce_netcheck_finds_loopback_open_through_vovidas_stund() {
    let Some(stund) = find("stund", "stun-server") else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // stund binds four sockets (two IPs by two ports): retry on ports someone took.
    let (out, alt_port, _stund) = loop {
        let (port, alt_port) = (free_udp_port(), free_udp_port());
        let stund = Reaped(
            Command::new(&stund)
                .args(["-h", "127.0.0.1", "-a", "127.0.0.2"])
                .args(["-p", &port.to_string(), "-o", &alt_port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(200));
        let out = Command::new(env!("CARGO_BIN_EXE_pierce"))
            .args(["netcheck", "--server", &format!("127.0.0.1:{port}")])
            .args(["--json", "--timeout", "3"])
            .output()
            .unwrap();
        if out.status.success() || Instant::now() > deadline {
            break (out, alt_port, stund);
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout.lines().last().unwrap_or("");
    assert!(line.contains(r#""reflexive":"127.0.0.1:"#), "{line}");
    let want = format!(
        r#","mapping":"endpoint-independent","filtering":"endpoint-independent","port_preserved":true,"allocation":null,"port_delta":null,"alternate":"127.0.0.2:{alt_port}"}}"#
    );
    assert!(line.ends_with(&want), "{line}\n{stderr}");
    assert!(
        stderr.contains("answered STUN but not as a Pierce server"),
        "{stderr}"
    );
    assert!(!stderr.contains("--alt-listen"), "{stderr}");
}

/// `go-stun -s 127.0.0.1:PORT -v`: its whole output.
fn run_go_stun(go_stun: &PathBuf, port: u16) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(go_stun)
        .args(["-s", &format!("127.0.0.1:{port}"), "-v"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// Two IPs: go-stun reads OTHER-ADDRESS (RFC 5780 §6.1: in the answer to its bare request),
/// gets the change of IP and port from the other address, and finds no NAT.
#[test]
fn go_stun_finds_no_nat_through_a_two_ip_pierce_server() {
    let Some(go_stun) = go_stun() else {
        return;
    };
    let (_server, port, _) = pierce_server("127.0.0.2:0");
    let text = run_go_stun(&go_stun, port);
    assert_has(
        &text,
        &[
            "other: 127.0.0.2:",
            "remote: 127.0.0.2:",
            "NAT Type: Not behind a NAT",
            "External IP: 127.0.0.1",
        ],
    );
}

/// One IP: no OTHER-ADDRESS (RFC 5780 §7.4), so go-stun says the server cannot classify
/// rather than naming a NAT type.
#[test]
fn go_stun_reports_no_nat_type_from_a_one_ip_pierce_server() {
    let Some(go_stun) = go_stun() else {
        return;
    };
    let (_server, port, _) = pierce_server("127.0.0.1:0");
    let text = run_go_stun(&go_stun, port);
    assert_has(
        &text,
        &["other: <nil>", "Server error: no changed address."],
    );
    assert!(!text.contains("NAT Type"), "{text}");
}
