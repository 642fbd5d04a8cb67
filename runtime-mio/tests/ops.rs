//! `pierce server --metrics`: the ops listener seen from outside, as an operator and a
//! Prometheus see it. A live scrape of a server relaying between two `pierce peer`s passes
//! `promtool check metrics`; a real `prometheus` scrapes it and serves the relayed bytes back
//! through its query API; the admin endpoints refuse a wrong token and change nothing, kick a
//! real peer, and drain the server (readyz 503, newcomers refused, exit 0 within the bound).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

#[path = "support/child.rs"]
mod child;
use child::{lines, start_server, string_field, wait_for};

const PIERCE: &str = env!("CARGO_BIN_EXE_pierce");
const TOKEN: &str = "ops-test-token-0123456789";

// ---- a tiny HTTP/1.1 client -----------------------------------------------------------------

/// An HTTP answer: status and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// `method path` on `addr`, with `Authorization: <auth>` if given; one request per connection.
fn http(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> Answer {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    if let Some(a) = auth {
        request.push_str(&format!("Authorization: {a}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Answer { status, body }
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    http(addr, "GET", path, None)
}

fn admin(addr: SocketAddr, method: &str, path: &str) -> Answer {
    http(addr, method, path, Some(&format!("Bearer {TOKEN}")))
}

/// A chunked body, its chunks joined.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

// ---- children -------------------------------------------------------------------------------

/// A `pierce server --metrics 127.0.0.1:0` with `extra` flags (`--threads 1` unless they
/// say otherwise), killed when dropped unless it exited.
struct Server {
    child: Child,
    lines: Receiver<String>,
    addr: String,
    key: String,
    metrics: SocketAddr,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut flags = vec!["--metrics", "127.0.0.1:0"];
        if !extra.contains(&"--threads") {
            flags.extend(["--threads", "1"]);
        }
        flags.extend_from_slice(extra);
        let (child, lines, ready) = start_server(PIERCE, &flags);
        Self {
            child,
            lines,
            addr: string_field(&ready, "addr").unwrap(),
            key: string_field(&ready, "public_key").unwrap(),
            metrics: string_field(&ready, "metrics_addr")
                .unwrap()
                .parse()
                .unwrap(),
        }
    }

    /// Starts a server whose admin endpoints take [`TOKEN`] (written to a file in `dir`).
    fn with_admin(dir: &Path, extra: &[&str]) -> Self {
        let token_file = dir.join("admin.token");
        std::fs::write(&token_file, format!("  {TOKEN}\n")).unwrap();
        let mut flags = vec!["--admin-token-file", token_file.to_str().unwrap()];
        flags.extend_from_slice(extra);
        Self::start(&flags)
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Every line it printed so far.
    fn printed(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `pierce peer` in room `room` on `server`, stdout and stderr read by threads.
struct Peer {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    fn start(server: &Server, room: &str, args: &[&str]) -> Self {
        let mut child = Command::new(PIERCE)
            .args([
                "peer",
                "--server",
                &server.addr,
                "--server-key",
                &server.key,
            ])
            .args(["--room", room, "--json", "--udp-only"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(&mut child);
        let err = child.stderr.take().unwrap();
        let (tx, stderr) = mpsc::channel();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::BufReader::new(err).read_to_string(&mut text);
            let _ = tx.send(text);
        });
        Self {
            child,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    /// A peer that joins `room`, waits for nobody, sends nothing and stays a minute.
    fn idle(server: &Server, room: &str) -> Self {
        Self::start(
            server,
            room,
            &[
                "--peers",
                "0",
                "--send",
                "0",
                "--hold",
                "60",
                "--timeout",
                "90",
            ],
        )
    }

    /// Waits up to `limit` for a stdout line containing `what`.
    fn wait_line(&mut self, what: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            if self.seen.iter().any(|l| l.contains(what)) {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            match self
                .stdout
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => self.seen.push(line),
                Err(_) if Instant::now() >= end => return false,
                Err(_) => {}
            }
        }
    }

    /// Waits up to `limit` for the process to exit: its status, stdout lines and stderr.
    fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<String>, String) {
        let end = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < end,
                "the peer did not exit within {limit:?}: {:?}",
                self.seen
            );
            thread::sleep(Duration::from_millis(20));
        };
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        let mut seen = std::mem::take(&mut self.seen);
        seen.extend(self.stdout.try_iter());
        (status, seen, stderr)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two relay-only peers exchanging `count` messages of `size` bytes in room `room`.
fn relaying_pair(server: &Server, room: &str, count: &str, size: &str) -> [Peer; 2] {
    let args = [
        "--peers",
        "1",
        "--send",
        count,
        "--size",
        size,
        "--relay-only",
        "--timeout",
        "60",
    ];
    [
        Peer::start(server, room, &args),
        Peer::start(server, room, &args),
    ]
}

/// Both peers end their exchange with `"ok":true`.
fn assert_exchanged(peers: [Peer; 2]) {
    for p in peers {
        let (status, out, err) = p.finish(Duration::from_secs(90));
        let summary = out.iter().find(|l| l.contains(r#""event":"summary""#));
        assert!(status.success(), "peer failed: {summary:?} {err}");
        assert!(
            summary.unwrap().contains(r#""path":"relay""#),
            "{summary:?}"
        );
    }
}

/// The value of an unlabelled sample `name` in a Prometheus text body.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A fresh temporary directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pierce-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// True if `program` runs (`--version`). Missing: a failure under `CI`, else `SKIPPED`.
fn have(program: &str, test: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing (Debian package `prometheus`); CI must have it"
        );
        eprintln!("SKIPPED {test}: {program} not installed (Debian package `prometheus`)");
    }
    found
}

// ---- tests ----------------------------------------------------------------------------------

#[test]
fn a_live_scrape_of_a_relaying_server_passes_promtool_and_counts_the_relayed_bytes() {
    // Two relay threads where they work (Linux): their counters and sizes must be in the
    // totals too.
    let threads = if cfg!(target_os = "linux") { "2" } else { "1" };
    let server = Server::start(&["--threads", threads]);
    assert_eq!(get(server.metrics, "/healthz").status, 200);
    assert_eq!(get(server.metrics, "/readyz").status, 200);
    let peers = relaying_pair(&server, "scrape", "200", "500");
    assert_exchanged(peers);
    // The loop publishes every 250 ms: the exchange shows within a second.
    let mut body = String::new();
    let counted = wait_for(Duration::from_secs(5), || {
        let answer = get(server.metrics, "/metrics");
        assert_eq!(answer.status, 200);
        body = answer.body;
        sample(&body, "pierce_relayed_bytes_total").is_some_and(|b| b >= 2.0 * 200.0 * 500.0)
    });
    assert!(counted, "relayed bytes not counted:\n{body}");
    if threads == "2" {
        let by_threads = sample(&body, "pierce_relayed_by_relay_threads_packets_total").unwrap();
        assert!(
            by_threads > 0.0,
            "the relay threads relayed nothing:\n{body}"
        );
    }
    // (Messages share packets: fewer packets than messages.)
    assert!(sample(&body, "pierce_relayed_packets_total").unwrap() > 0.0);
    assert!(sample(&body, "pierce_handshakes_completed_total").unwrap() >= 2.0);
    assert!(
        body.contains("# TYPE pierce_dropped_total counter"),
        "{body}"
    );
    assert!(
        body.contains("pierce_dropped_total{reason=\"auth_failed\"} "),
        "{body}"
    );
    // The relayed datagrams' sizes: every one counted, none above the largest datagram.
    let sizes = sample(&body, "pierce_relay_datagram_size_bytes_count").unwrap();
    assert_eq!(
        Some(sizes),
        sample(&body, "pierce_relayed_packets_total"),
        "{body}"
    );
    let sum = sample(&body, "pierce_relay_datagram_size_bytes_sum").unwrap();
    assert_eq!(
        Some(sum),
        sample(&body, "pierce_relayed_bytes_total"),
        "{body}"
    );
    assert!(
        body.contains("pierce_relay_datagram_size_bytes_bucket{le=\"+Inf\"} "),
        "{body}"
    );
    // Session round trips were sampled (each peer's control messages were acknowledged).
    let rtts = sample(&body, "pierce_session_rtt_seconds_count").unwrap();
    assert!(rtts > 0.0, "{body}");
    assert!(
        body.contains("# TYPE pierce_time_to_direct_seconds histogram"),
        "{body}"
    );
    // Without --admin-token-file the admin endpoints are off.
    let off = get(server.metrics, "/admin/clients");
    assert_eq!(off.status, 403, "{off:?}");
    assert!(off.body.contains("--admin-token-file"), "{off:?}");
    assert_eq!(get(server.metrics, "/nothing").status, 404);
    let test = "a_live_scrape_of_a_relaying_server_passes_promtool";
    if !have("promtool", test) {
        return;
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// A `prometheus` child, killed when dropped.
struct Prometheus {
    child: Child,
    web: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback TCP port (bound and released: another process may take it in between,
/// which only makes the test fail loudly).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn prometheus_scrapes_the_server_under_load_and_serves_the_relayed_bytes_back() {
    let test = "prometheus_scrapes_the_server_under_load";
    if !have("prometheus", test) {
        return;
    }
    let server = Server::start(&[]);
    let dir = temp_dir("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: pierce\n    static_configs:\n      - targets: ['{}']\n",
            server.metrics
        ),
    )
    .unwrap();
    let web = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prometheus = Prometheus { child, web };
    let up = wait_for(Duration::from_secs(30), || {
        TcpStream::connect(prometheus.web).is_ok() && get(prometheus.web, "/-/ready").status == 200
    });
    assert!(up, "prometheus did not become ready on {web}");
    // Load: two peers relaying 2000 messages of 1000 bytes (a few seconds over the relay's
    // per-client rate), scraped every second meanwhile.
    let peers = relaying_pair(&server, "prometheus", "2000", "1000");
    let query = "/api/v1/query?query=pierce_relayed_bytes_total";
    let mut last = String::new();
    let mut value = 0.0;
    let seen = wait_for(Duration::from_secs(60), || {
        let answer = get(prometheus.web, query);
        last = answer.body;
        value = query_value(&last).unwrap_or(0.0);
        value > 0.0
    });
    assert!(seen, "prometheus never had relayed bytes: {last}");
    assert!(last.contains(r#""job":"pierce""#), "{last}");
    assert_exchanged(peers);
    // The series goes on growing to the whole exchange.
    let whole = 2.0 * 2000.0 * 1000.0;
    let grown = wait_for(Duration::from_secs(20), || {
        value = query_value(&get(prometheus.web, query).body).unwrap_or(0.0);
        value >= whole
    });
    assert!(
        grown,
        "prometheus saw {value} relayed bytes, less than {whole}"
    );
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first sample value of an instant-vector answer of Prometheus' query API.
fn query_value(json: &str) -> Option<f64> {
    let at = json.find(r#""value":["#)?;
    let rest = &json[at..];
    let start = rest.find(",\"")? + 2;
    let len = rest[start..].find('"')?;
    rest[start..start + len].parse().ok()
}

#[test]
fn admin_needs_the_token_and_a_kick_closes_a_real_peer() {
    let dir = temp_dir("kick");
    let server = Server::with_admin(&dir, &[]);
    let mut peer = Peer::idle(&server, "kick-room");
    assert!(
        peer.wait_line(r#""event":"room_joined""#, Duration::from_secs(20)),
        "{:?}",
        peer.seen
    );
    let clients = admin(server.metrics, "GET", "/admin/clients");
    assert_eq!(clients.status, 200, "{clients:?}");
    let host: u64 = {
        let at = clients.body.find(r#""host_id":"#).unwrap() + 10;
        let digits: String = clients.body[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    assert!(
        clients.body.contains(r#""addr":"127.0.0.1:"#),
        "{clients:?}"
    );
    assert!(clients.body.contains(r#""rtt_ms":"#), "{clients:?}");
    let rooms = admin(server.metrics, "GET", "/admin/rooms");
    assert_eq!(rooms.status, 200, "{rooms:?}");
    assert!(
        rooms.body.contains(r#""name":"kick-room","group":"#),
        "{rooms:?}"
    );
    let room = format!(r#""owner":{host},"members":[{host}],"max_members":"#);
    assert!(rooms.body.contains(&room), "{rooms:?}");
    assert!(rooms.body.contains(r#""has_password":false"#), "{rooms:?}");

    // Missing, wrong and malformed tokens: 401, and nothing changes.
    let kick = format!("/admin/clients/{host}/kick");
    let (longer, basic) = (format!("Bearer {TOKEN}x"), format!("Basic {TOKEN}"));
    let wrong = [
        None,
        Some("Bearer wrong-token"),
        Some(&longer[..]),
        Some(&basic[..]),
    ];
    for auth in wrong {
        for (method, path) in [
            ("GET", "/admin/clients"),
            ("GET", "/admin/rooms"),
            ("POST", &kick[..]),
            ("POST", "/admin/rooms/kick-room/close"),
            ("POST", "/admin/drain"),
        ] {
            let answer = http(server.metrics, method, path, auth);
            assert_eq!(
                answer.status, 401,
                "{method} {path} with {auth:?}: {answer:?}"
            );
            assert!(!answer.body.contains("host_id"), "{answer:?}");
        }
    }
    thread::sleep(Duration::from_millis(300));
    let still = admin(server.metrics, "GET", "/admin/clients");
    assert!(
        still.body.contains(&format!(r#""host_id":{host}"#)),
        "{still:?}"
    );
    assert_eq!(get(server.metrics, "/readyz").status, 200);

    // Unknown ids: 404 with a JSON error.
    let unknown = admin(server.metrics, "POST", "/admin/clients/999999/kick");
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.body.starts_with(r#"{"error":"#), "{unknown:?}");
    let unknown = admin(
        server.metrics,
        "POST",
        "/admin/rooms/no%20such%20room/close",
    );
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.body.contains("no room is called"), "{unknown:?}");

    // Closing a room: its member hears the room is gone.
    let mut closing = Peer::idle(&server, "closing room");
    assert!(
        closing.wait_line(r#""event":"room_joined""#, Duration::from_secs(20)),
        "{:?}",
        closing.seen
    );
    let closed = admin(server.metrics, "POST", "/admin/rooms/closing%20room/close");
    assert_eq!(closed.status, 200, "{closed:?}");
    assert!(
        closed.body.contains(r#""closed":"closing room""#),
        "{closed:?}"
    );
    let (status, out, err) = closing.finish(Duration::from_secs(10));
    assert!(!status.success(), "{out:?}");
    assert!(
        err.contains("the server destroyed the room"),
        "stderr: {err}"
    );
    let rooms = admin(server.metrics, "GET", "/admin/rooms").body;
    assert!(!rooms.contains("closing room"), "{rooms}");
    assert!(rooms.contains("kick-room"), "{rooms}");

    // The kick: the peer hears the server close its session with the kick code.
    let kicked = admin(server.metrics, "POST", &kick);
    assert_eq!(kicked.status, 200, "{kicked:?}");
    assert!(kicked.body.contains(r#""code":4001"#), "{kicked:?}");
    let (status, out, err) = peer.finish(Duration::from_secs(10));
    assert!(!status.success(), "{out:?}");
    assert!(
        err.contains("the server closed the session (code 4001)"),
        "stderr: {err}\nstdout: {out:?}"
    );
    let gone = wait_for(Duration::from_secs(5), || {
        admin(server.metrics, "GET", "/admin/clients").body == r#"{"clients":[]}"#
    });
    assert!(gone, "the kicked client is still listed");
    let again = admin(server.metrics, "POST", &kick);
    assert_eq!(again.status, 404, "{again:?}");
    let printed = server.printed().join("\n");
    assert!(printed.contains(r#""reason":"kicked(4001)""#), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_drain_turns_readyz_503_refuses_newcomers_and_exits_0_within_its_bound() {
    let dir = temp_dir("drain");
    let mut server = Server::with_admin(&dir, &["--drain-timeout-ms", "3000"]);
    let mut peer = Peer::idle(&server, "drain-room");
    assert!(
        peer.wait_line(r#""event":"room_joined""#, Duration::from_secs(20)),
        "{:?}",
        peer.seen
    );
    assert_eq!(get(server.metrics, "/readyz").status, 200);
    let started = Instant::now();
    let drain = admin(server.metrics, "POST", "/admin/drain");
    assert_eq!(drain.status, 202, "{drain:?}");
    assert!(drain.body.contains(r#""clients":1"#), "{drain:?}");
    let readyz = get(server.metrics, "/readyz");
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert_eq!(get(server.metrics, "/healthz").status, 200);
    let metrics = get(server.metrics, "/metrics").body;
    assert!(
        wait_for(Duration::from_secs(2), || sample(
            &get(server.metrics, "/metrics").body,
            "pierce_draining"
        ) == Some(1.0)),
        "{metrics}"
    );
    // The peer that stays is told how long it has.
    assert!(
        peer.wait_line(r#""event":"server_draining""#, Duration::from_secs(5)),
        "{:?}",
        peer.seen
    );
    assert!(
        peer.seen.iter().any(|l| l.contains(r#""within_ms":3000"#)),
        "{:?}",
        peer.seen
    );
    // A newcomer is refused: it never gets to join a room.
    let newcomer = Peer::start(
        &server,
        "drain-room",
        &["--peers", "0", "--send", "0", "--timeout", "10"],
    );
    let (status, out, err) = newcomer.finish(Duration::from_secs(15));
    assert!(!status.success(), "{out:?}");
    assert!(
        !out.iter().any(|l| l.contains(r#""event":"room_joined""#)),
        "a newcomer joined a draining server: {out:?} {err}"
    );
    assert!(err.contains("it is draining"), "stderr: {err}");
    // The bound: the server disconnects the peer that stayed and exits 0.
    let exit = server.wait_exit(Duration::from_secs(10));
    let took = started.elapsed();
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    assert!(
        took >= Duration::from_millis(2900),
        "exited after {took:?}, before the drain's 3 s"
    );
    let (_, out, err) = peer.finish(Duration::from_secs(10));
    assert!(
        err.contains("the server closed the session (code 0)"),
        "stderr: {err}\nstdout: {out:?}"
    );
    let printed = server.printed().join("\n");
    assert!(printed.contains(r#""event":"draining""#), "{printed}");
    assert!(printed.contains(r#""event":"stopped""#), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_admin_flags_are_usage_errors() {
    let dir = temp_dir("usage");
    let empty = dir.join("empty.token");
    std::fs::write(&empty, " \n").unwrap();
    let good = dir.join("good.token");
    std::fs::write(&good, TOKEN).unwrap();
    let missing = dir.join("missing.token");
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--metrics",
                "127.0.0.1:0",
                "--admin-token-file",
                empty.to_str().unwrap(),
            ],
            "is empty",
        ),
        (
            &[
                "--metrics",
                "127.0.0.1:0",
                "--admin-token-file",
                missing.to_str().unwrap(),
            ],
            "cannot read it",
        ),
        (
            &["--admin-token-file", good.to_str().unwrap()],
            "needs --metrics",
        ),
    ];
    for (flags, what) in cases {
        let out = Command::new(PIERCE)
            .args(["server", "--listen", "127.0.0.1:0", "--threads", "1"])
            .args(flags)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains("--admin-token-file"), "{flags:?}: {err}");
        assert!(err.contains(what), "{flags:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
