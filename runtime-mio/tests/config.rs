//! `pierce server --config FILE`, `--print-config`, `--log-level` and `--log-format`, as
//! processes: every key round-trips through `--print-config`; the defaults print without a
//! file and without binding anything; every key refuses bad values (exit status 2, the key
//! named); flags override the file; a server started from a file applies it (a full server,
//! no rooms); and the core's log lines reach stderr only when asked for.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

#[path = "support/child.rs"]
mod child;
use child::{int_field, lines, string_field};

const PIERCE: &str = env!("CARGO_BIN_EXE_pierce");
/// A file setting every key to a valid value other than its default.
const EVERY_KEY: &str = include_str!("data/every_key.toml");
/// Longest a command that should end at once may run.
const QUICK: Duration = Duration::from_secs(10);
/// Keys at the top level (the process's: one for each flag, and `secret_file`) and in the
/// sections (the core's).
const TOP_KEYS: usize = 14;
const SECTION_KEYS: usize = 44;

/// A fresh, empty temporary directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pierce-config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Runs `pierce args...` in `dir`, which must end within [`QUICK`].
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(PIERCE)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pierce");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > QUICK {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{args:?} ran on (killed after {QUICK:?})\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("output")
}

/// `pierce server --print-config` with `args` in `dir`: its stdout, after checking it
/// succeeded with nothing on stderr.
fn print_config(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["server", "--print-config"];
    all.extend_from_slice(args);
    let out = run_in(dir, &all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{all:?}: {stderr}");
    assert!(stderr.is_empty(), "{all:?}: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The `key = value` lines of a printed config, keys as dotted paths.
fn keys_of(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
        } else if let Some((k, v)) = line.split_once(" = ") {
            if !k.starts_with('#') {
                out.push((format!("{section}{k}"), v.to_owned()));
            }
        }
    }
    out
}

#[test]
fn every_key_round_trips_through_print_config() {
    let dir = temp_dir("round-trip");
    std::fs::write(dir.join("every.toml"), EVERY_KEY).expect("write");
    let first = print_config(&dir, &["--config", "every.toml"]);
    std::fs::write(dir.join("printed.toml"), &first).expect("write");
    let second = print_config(&dir, &["--config", "printed.toml"]);
    assert_eq!(
        first, second,
        "the printed file does not read back the same"
    );
    // Every key of the file is printed with its value, and nothing else is set.
    let read = keys_of(EVERY_KEY);
    // Every key but secret_file (the fixture's secret is inline; they exclude each other).
    assert_eq!(
        read.len(),
        TOP_KEYS - 1 + SECTION_KEYS,
        "the fixture sets every key"
    );
    let names = |keys: Vec<(String, String)>| keys.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(names(keys_of(&first)), names(read));
    let parse = |text: &str| text.parse::<toml::Table>().expect("TOML");
    assert_eq!(parse(&first), parse(EVERY_KEY), "the values printed differ");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn print_config_without_a_file_prints_the_defaults_and_binds_nothing() {
    let dir = temp_dir("defaults");
    // A port in use: a server that tried to bind it would fail.
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let printed = print_config(&dir, &["--listen", &addr]);
    let keys = keys_of(&printed);
    let value = |k: &str| {
        keys.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{k} not printed:\n{printed}"))
    };
    assert_eq!(value("listen"), format!("\"{addr}\""));
    assert_eq!(value("session.max_clients"), "100000");
    assert_eq!(value("session.idle_timeout_ms"), "15000");
    assert_eq!(value("relay.rate_per_client_bytes_per_s"), "1048576");
    assert_eq!(value("rooms.enabled"), "true");
    assert_eq!(value("log_level"), "\"off\"");
    assert_eq!(value("drain_timeout_ms"), "10000");
    // Keys without a value are printed as comments, every one documented.
    for unset in [
        "alt_listen",
        "key_file",
        "secret_file",
        "stats_every_s",
        "metrics",
        "admin_token_file",
    ] {
        assert!(
            printed.contains(&format!("\n# {unset} = (not set)\n")),
            "{unset}:\n{printed}"
        );
    }
    // One comment for secret and secret_file; listen has no default.
    assert_eq!(
        printed.matches("Default:").count(),
        TOP_KEYS - 2 + SECTION_KEYS,
        "{printed}"
    );
    // Without --listen too: printing needs no address.
    let bare = print_config(&dir, &[]);
    assert!(bare.contains("\n# listen = (not set)\n"), "{bare}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad values of every key, as rows of (dotted key, values separated by spaces, expected text
/// of the error). `''` is the empty string.
#[rustfmt::skip] // a table: one row a line
const BAD: &[(&str, &str, &str)] = &[
    ("listen", r#""localhost:7" "127.0.0.1" 7"#, "listen"),
    ("listen", r#""224.0.0.1:7" "255.255.255.255:7""#, "cannot be bound"),
    ("alt_listen", r#""0.0.0.0:7" "[::]:7""#, "unspecified"),
    ("key_file", r#""" 7"#, "key_file"),
    ("secret", r#""" 7"#, "secret"),
    ("secret_file", r#""/no/such/secret" "/" """#, "secret_file"),
    ("json", r#"1 "true""#, "invalid type"),
    ("stats_every_s", "0 86401 -1", "from 1 to 86400"),
    ("threads", "0 257 65537", "from 1 to 256"),
    ("no_offload", r#"1 "yes""#, "invalid type"),
    ("log_level", r#""loud" "DEBUG!" 3"#, "log_level"),
    ("log_format", r#""xml" """#, "log_format"),
    ("metrics", r#""nowhere" "224.0.0.1:9""#, "metrics"),
    ("admin_token_file", r#""" 7"#, "admin_token_file"),
    ("drain_timeout_ms", "0 600001 -5", "from 1 to 600000"),
    ("session.keepalive_interval_ms", "0 86400001", "from 1 to 86400000"),
    ("session.idle_timeout_ms", "0 86400001", "from 1 to 86400000"),
    ("session.offline_after_ms", "-1 86400001", "from 0 to 86400000"),
    ("session.ticket_lifetime_s", "-1 2592001", "from 0 to 2592000"),
    ("session.max_clients", "0 16777217", "from 1 to 16777216"),
    ("session.max_datagram_bytes", "199 1453 0", "from 200 to 1452"),
    ("session.max_queued_datagrams_per_client", "0 1048577", "from 1 to 1048576"),
    ("session.max_queued_control_per_client", "0 1048577", "from 1 to 1048576"),
    ("session.max_pending_events", "0 16777217", "from 1 to 16777216"),
    ("handshake.timeout_ms", "0 86400001", "from 1 to 86400000"),
    ("handshake.max_half_open", "0 1048577", "from 1 to 1048576"),
    ("handshake.cookie_threshold", "-1 1048577", "from 0 to 1048576"),
    ("handshake.max_sessionless_streams", "0 1024", "from 1 to 1023"),
    ("handshake.rate_per_ip_per_s", "-1 4294967296", "from 0 to 4294967295"),
    ("handshake.burst_per_ip", "-1 4294967296", "from 0 to 4294967295"),
    ("handshake.rate_global_per_s", "0 4294967296", "from 1 to 4294967295"),
    ("handshake.burst_global", "0 4294967296", "from 1 to 4294967295"),
    ("handshake.proven_rate_per_ip_per_s", "0 4294967296", "from 1 to 4294967295"),
    ("handshake.proven_burst_per_ip", "0 4294967296", "from 1 to 4294967295"),
    ("stun.rate_per_ip_per_s", "-1 4294967296", "from 0 to 4294967295"),
    ("stun.burst_per_ip", "-1 4294967296", "from 0 to 4294967295"),
    ("stun.rate_global_per_s", "-1 4294967296", "from 0 to 4294967295"),
    ("stun.burst_global", "-1 4294967296", "from 0 to 4294967295"),
    ("resets.rate_global_per_s", "-1 4294967296", "from 0 to 4294967295"),
    ("resets.burst_global", "-1 4294967296", "from 0 to 4294967295"),
    ("relay.rate_per_client_bytes_per_s", "-1 4294967296 9223372036854775807", "from 0 to 4294967295"),
    ("relay.burst_per_client_bytes", "-1 4294967296", "from 0 to 4294967295"),
    ("relay.rate_per_group_bytes_per_s", "-1 4294967296", "from 0 to 4294967295"),
    ("relay.rate_total_bytes_per_s", "-1 4294967296", "from 0 to 4294967295"),
    ("relay.max_queued_packets_per_client", "0 1048577", "from 1 to 1048576"),
    ("relay.rate_per_client_bytes_per_s", r#"99999999999999999999 1.5 "1000" true"#, "expected a whole number"),
    ("rooms.enabled", r#"1 "false""#, "invalid type"),
    ("rooms.max_rooms", "0 16777217", "from 1 to 16777216"),
    ("rooms.default_max_members", "0 65536", "from 1 to 65535"),
    ("rooms.max_members_cap", "0 65536", "from 1 to 65535"),
    ("rooms.relay_only", r#"1 "yes""#, "invalid type"),
    ("cluster.redis", r#""http://127.0.0.1:1" "redis://127.0.0.1:0" "redis://u:p@h:1" '' 7"#, "cluster.redis"),
    ("cluster.node_id", r#"'' "a+b" "x/y" 7"#, "cluster.node_id"),
    ("cluster.advertise", r#""nowhere" "127.0.0.1" 7"#, "cluster.advertise"),
    ("cluster.region", r#""e/u" 7"#, "cluster.region"),
    ("cluster.namespace", r#"'' "a:b" 7"#, "cluster.namespace"),
    ("cluster.heartbeat_ms", "0 3600001", "from 1 to 3600000"),
    ("cluster.node_ttl_ms", "0 3600001", "from 1 to 3600000"),
    ("cluster.room_ttl_ms", "0 3600001", "from 1 to 3600000"),
    ("cluster.answer_timeout_ms", "0 3600001", "from 1 to 3600000"),
    // Unknown keys, at the top and in every section; an unknown section.
    ("bogus_key", "1", "unknown field `bogus_key`"),
    ("session.bogus_key", "1", "unknown field `bogus_key`"),
    ("handshake.bogus_key", "1", "unknown field `bogus_key`"),
    ("stun.bogus_key", "1", "unknown field `bogus_key`"),
    ("resets.bogus_key", "1", "unknown field `bogus_key`"),
    ("relay.bogus_key", "1", "unknown field `bogus_key`"),
    ("rooms.bogus_key", "1", "unknown field `bogus_key`"),
    // A section that is not a table.
    ("relay", "1 \"x\"", "invalid type"),
];

/// `key = value` as a file: in its section if the key is dotted.
fn file_with(key: &str, value: &str) -> String {
    match key.split_once('.') {
        Some((section, k)) => format!("[{section}]\n{k} = {value}\n"),
        None => format!("{key} = {value}\n"),
    }
}

/// Runs `pierce server --config FILE extra...` (FILE holding `text`) and checks it is refused
/// with exit status 2, nothing on stdout, and `expect` and `name` in the message; returns
/// what went wrong otherwise.
fn refused(dir: &Path, text: &str, extra: &[&str], name: &str, expect: &str) -> Option<String> {
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).expect("write");
    let mut args = vec!["server", "--config", path.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    let out = run_in(dir, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ok = out.status.code() == Some(2)
        && out.stdout.is_empty()
        && stderr.contains(name)
        && stderr.contains(expect)
        && !stderr.contains("panicked");
    (!ok).then(|| {
        format!(
            "{text:?} {extra:?}: {}, expected {expect:?} naming {name}\nstderr: {stderr}stdout: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn every_key_refuses_bad_values_with_exit_2_naming_the_key() {
    let dir = temp_dir("bad");
    let mut failures = Vec::new();
    let mut cases = 0;
    for &(key, values, expect) in BAD {
        for value in values.split(' ') {
            let value = if value == "''" { "\"\"" } else { value };
            cases += 1;
            let text = file_with(key, value);
            // --print-config first: it must refuse too, and never runs a server on success.
            failures.extend(refused(&dir, &text, &["--print-config"], key, expect));
        }
    }
    // Without --print-config the same checks run before anything binds (a few, to be sure;
    // with a listen address so that only the bad key is wrong).
    for (key, value, expect) in [
        ("session.max_clients", "0", "from 1 to 16777216"),
        ("relay.bogus_key", "1", "unknown field"),
        ("threads", "0", "from 1 to 256"),
    ] {
        cases += 1;
        let text = format!("listen = \"127.0.0.1:0\"\n{}", file_with(key, value));
        failures.extend(refused(&dir, &text, &[], key, expect));
    }
    // What spans keys, or a key and a flag.
    #[rustfmt::skip]
    let contradictions: &[(&str, &[&str], &str, &str)] = &[
        ("[session]\nkeepalive_interval_ms = 15000\n", &[], "session.keepalive_interval_ms",
            "must be less than session.idle_timeout_ms"),
        ("[session]\nidle_timeout_ms = 4000\n", &[], "session.idle_timeout_ms",
            "session.keepalive_interval_ms (5000) must be less"),
        ("[session]\noffline_after_ms = 15000\n", &[], "session.offline_after_ms",
            "must be less than session.idle_timeout_ms (15000), or 0"),
        ("[rooms]\ndefault_max_members = 65\n", &[], "rooms.default_max_members",
            "must not exceed rooms.max_members_cap (64)"),
        ("secret = \"a\"\nsecret_file = \"b\"\n", &[], "secret_file", "give one of them"),
        ("listen = \"0.0.0.0:0\"\n", &["--alt-listen", "127.0.0.1:0"], "listen (--listen)",
            "with a specific IP"),
        ("alt_listen = \"[::1]:0\"\n", &["--listen", "127.0.0.1:0"], "alt_listen",
            "same address family"),
        ("json = true\n", &[], "--listen", "no address to listen on"),
        ("[cluster]\nredis = \"redis://127.0.0.1:6379\"\n", &[], "cluster.node_id",
            "needs cluster.node_id"),
        ("[cluster]\nnode_id = \"a\"\n", &["--listen", "127.0.0.1:0"], "cluster.redis",
            "needs cluster.redis"),
        ("[cluster]\nredis = \"redis://127.0.0.1:6379\"\nnode_id = \"a\"\n",
            &["--listen", "0.0.0.0:7000"], "cluster.advertise", "give the address clients reach"),
        ("[cluster]\nredis = \"redis://127.0.0.1:6379\"\nnode_id = \"a\"\nheartbeat_ms = 2000\n",
            &["--listen", "127.0.0.1:7000"], "cluster.node_ttl_ms", "more than twice"),
        // An unknown section is an unknown key at the top.
        ("[limits]\nmax_clients = 1\n", &[], "limits (line 1)", "unknown field `limits`"),
    ];
    for &(text, extra, name, expect) in contradictions {
        cases += 1;
        failures.extend(refused(&dir, text, extra, name, expect));
    }
    // A file that is no TOML, or no file.
    cases += 2;
    failures.extend(refused(&dir, "listen = \n", &[], "line 1", "--config"));
    let out = run_in(&dir, &["server", "--config", "/no/such/file.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !stderr.contains("--config /no/such/file.toml") {
        failures.push(format!("a missing file: {}: {stderr}", out.status));
    }
    // The table covers every key --print-config prints.
    let printed = print_config(&dir, &[]);
    let mut printed_keys: Vec<String> = keys_of(&printed).into_iter().map(|(k, _)| k).collect();
    let mut section = String::new();
    for l in printed.lines() {
        if let Some(name) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
        }
        if let Some(k) = l
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" = (not set)"))
        {
            printed_keys.push(format!("{section}{k}"));
        }
    }
    printed_keys.push("secret".to_owned());
    assert_eq!(
        printed_keys.len(),
        TOP_KEYS + SECTION_KEYS,
        "{printed_keys:?}"
    );
    for key in &printed_keys {
        assert!(
            BAD.iter().any(|(k, _, _)| k == key),
            "no bad values for {key}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(cases > 120, "only {cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn flags_override_the_file() {
    let dir = temp_dir("override");
    std::fs::write(
        dir.join("server.toml"),
        "listen = \"127.0.0.1:1\"\njson = false\nstats_every_s = 5\nthreads = 2\n\
         log_level = \"debug\"\nmetrics = \"127.0.0.1:9\"\ndrain_timeout_ms = 5\n\
         secret = \"file secret\"\n[session]\nmax_clients = 3\n",
    )
    .expect("write");
    let printed = print_config(
        &dir,
        &[
            "--config",
            "server.toml",
            "--listen",
            "127.0.0.1:2",
            "--json",
            "--stats-every",
            "7",
            "--threads",
            "1",
            "--log-format",
            "json",
            "--metrics",
            "127.0.0.1:10",
            "--drain-timeout-ms",
            "600000",
            "--admin-token-file",
            "admin.token",
            "--secret",
            "flag secret",
        ],
    );
    let keys = keys_of(&printed);
    for (key, value) in [
        ("listen", "\"127.0.0.1:2\""),
        ("json", "true"),
        ("stats_every_s", "7"),
        ("threads", "1"),
        ("log_level", "\"debug\""), // the file's: no flag
        ("log_format", "\"json\""),
        ("metrics", "\"127.0.0.1:10\""),
        ("drain_timeout_ms", "600000"),
        ("admin_token_file", "\"admin.token\""),
        ("session.max_clients", "3"),
    ] {
        assert!(
            keys.contains(&(key.to_owned(), value.to_owned())),
            "{key} = {value} not in:\n{printed}"
        );
    }
    assert!(
        !printed.contains("flag secret"),
        "the flag's secret is printed"
    );
    assert!(
        !printed.contains("file secret"),
        "the file's secret is printed"
    );
    assert!(printed.contains("# secret: given with --secret, not printed"));
    // A server: the file's address cannot be bound (TEST-NET-1), the flag's can; the file says
    // text, the flag JSON.
    std::fs::write(
        dir.join("server.toml"),
        "listen = \"192.0.2.1:9\"\njson = false\nthreads = 1\n",
    )
    .expect("write");
    let mut server = Server::start(&dir, &["--listen", "127.0.0.1:0", "--json"]);
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.ready);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `pierce server --config server.toml` child in a directory, killed when dropped.
struct Server {
    child: Child,
    ready: String,
    addr: String,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Server {
    /// Starts it from `dir/server.toml` with `extra` flags, stderr piped; waits for its ready
    /// line.
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(PIERCE)
            .args(["server", "--config", "server.toml"])
            .args(extra)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pierce server");
        let stdout = lines(&mut child);
        let stderr = {
            let pipe = child.stderr.take().expect("piped stderr");
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
            rx
        };
        let Ok(ready) = stdout.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let errors: Vec<String> = stderr.try_iter().collect();
            panic!("no ready line; stderr: {errors:?}");
        };
        assert!(ready.starts_with("{\"event\":\"listening\""), "{ready}");
        let addr = string_field(&ready, "addr").expect("addr");
        Self {
            child,
            ready,
            addr,
            stdout,
            stderr,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `pierce peer` in room `room` that waits for nobody and sends nothing, staying `hold`
/// seconds.
fn peer(server: &str, room: &str, hold: &str) -> Child {
    Command::new(PIERCE)
        .args(["peer", "--server", server, "--room", room, "--peers", "0"])
        .args(["--send", "0", "--hold", hold, "--timeout", "20", "--json"])
        .args(["--udp-only"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pierce peer")
}

/// A peer's exit status and everything it printed.
fn finish(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn a_server_started_from_a_file_applies_it() {
    let dir = temp_dir("applied");
    // listen and json from the file; one client at most.
    std::fs::write(
        dir.join("server.toml"),
        "listen = \"127.0.0.1:0\"\njson = true\nthreads = 1\n[session]\nmax_clients = 1\n",
    )
    .expect("write");
    let server = Server::start(&dir, &[]);
    let mut first = peer(&server.addr, "r", "20");
    let first_lines = lines(&mut first);
    let connected = first_lines
        .iter()
        .find(|l| l.contains("\"event\":\"connected\""));
    assert!(connected.is_some(), "the first peer did not connect");
    let (code, text) = finish(peer(&server.addr, "r", "0"));
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("refused the session: it is full"), "{text}");
    drop(server);
    // Rooms off.
    std::fs::write(
        dir.join("server.toml"),
        "listen = \"127.0.0.1:0\"\njson = true\nthreads = 1\n[rooms]\nenabled = false\n",
    )
    .expect("write");
    let server = Server::start(&dir, &[]);
    let (code, text) = finish(peer(&server.addr, "r", "0"));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("the server has no rooms"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends junk to `addr` until the server's stats line counts a drop; returns stderr's lines
/// so far (after a moment for the logger to write).
fn provoke_a_drop(server: &Server) -> Vec<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        socket
            .send_to(&[0xee; 48], &server.addr)
            .expect("send junk");
        if let Ok(line) = server.stdout.recv_timeout(Duration::from_millis(1500)) {
            if line.contains("\"event\":\"stats\"") && int_field(&line, "dropped") > Some(0) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server never counted the junk"
        );
    }
    thread::sleep(Duration::from_millis(200));
    server.stderr.try_iter().collect()
}

#[test]
fn log_lines_reach_stderr_only_when_asked_for() {
    let dir = temp_dir("logs");
    std::fs::write(
        dir.join("server.toml"),
        "listen = \"127.0.0.1:0\"\njson = true\nthreads = 1\nstats_every_s = 1\n",
    )
    .expect("write");
    // JSON lines, from the flags.
    let server = Server::start(&dir, &["--log-level", "debug", "--log-format", "json"]);
    let logged = provoke_a_drop(&server);
    let dropped = logged
        .iter()
        .find(|l| l.contains("\"message\":\"dropped\""));
    let Some(dropped) = dropped else {
        panic!("no dropped line on stderr: {logged:?}");
    };
    assert!(
        dropped.contains("\"target\":\"pierce_core::server\""),
        "{dropped}"
    );
    assert!(dropped.contains("\"level\":\"DEBUG\""), "{dropped}");
    for line in &logged {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
    }
    drop(server);
    // Text, from the file; a level above debug shows no drops.
    for (level, shown) in [("debug", true), ("info", false)] {
        std::fs::write(
            dir.join("server.toml"),
            format!(
                "listen = \"127.0.0.1:0\"\njson = true\nthreads = 1\nstats_every_s = 1\n\
                 log_level = \"{level}\"\nlog_format = \"text\"\n"
            ),
        )
        .expect("write");
        let server = Server::start(&dir, &[]);
        let logged = provoke_a_drop(&server);
        let line = logged.iter().find(|l| l.contains("dropped"));
        assert_eq!(line.is_some(), shown, "{level}: {logged:?}");
        if let Some(line) = line {
            assert!(line.contains("pierce_core::server"), "{line}");
            assert!(!line.starts_with('{'), "{line}");
        }
    }
    // No flag, no key: stderr stays quiet (bar a warning the server may print about TCP).
    std::fs::write(
        dir.join("server.toml"),
        "listen = \"127.0.0.1:0\"\njson = true\nthreads = 1\nstats_every_s = 1\n",
    )
    .expect("write");
    let server = Server::start(&dir, &[]);
    let logged = provoke_a_drop(&server);
    let noise: Vec<&String> = (logged.iter())
        .filter(|l| !l.starts_with("pierce: warning:"))
        .collect();
    assert!(noise.is_empty(), "stderr without --log-level: {noise:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
