//! `pierce` (and other) processes inside the lab's namespaces (`ip netns exec NS pierce ...`,
//! which execs pierce in place, so the child is pierce itself), with a hard time limit, output collected
//! line by line, and a kill on drop; plus the little JSON reading the lab needs.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const PIERCE: &str = env!("CARGO_BIN_EXE_pierce");
/// Longest any process may run before the lab kills it.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);

/// A running `pierce` in a namespace; killed when dropped.
pub(crate) struct Proc {
    child: Child,
    started: Instant,
    lines: mpsc::Receiver<String>,
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr: Option<JoinHandle<String>>,
}

/// How a process ended.
pub(crate) struct Finished {
    /// `None` if it outlived [`LIMIT`] and was killed.
    pub(crate) status: Option<ExitStatus>,
    pub(crate) stdout: Vec<String>,
    pub(crate) stderr: String,
    pub(crate) elapsed: Duration,
}

impl Finished {
    pub(crate) fn last_line(&self) -> &str {
        self.stdout.last().map_or("", String::as_str)
    }

    pub(crate) fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Status, stdout and stderr, for a failure message.
    pub(crate) fn dump(&self, what: &str) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {LIMIT:?}"),
        };
        format!(
            "--- {what}: {status} after {:.1} s\nstdout:\n{}\nstderr:\n{}\n",
            self.elapsed.as_secs_f64(),
            self.stdout.join("\n"),
            self.stderr
        )
    }
}

impl Proc {
    /// Starts `pierce args...` inside `ns`.
    pub(crate) fn spawn(ns: &str, args: &[&str]) -> Self {
        Self::spawn_program(ns, PIERCE, args)
    }

    /// Starts `program args...` inside `ns`.
    pub(crate) fn spawn_program(ns: &str, program: &str, args: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ip netns exec {program}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        let stdout = thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.clone());
                all.push(line);
            }
            all
        });
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Self {
            child,
            started: Instant::now(),
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// The next stdout line, if one comes within `wait`.
    pub(crate) fn next_line(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Waits for the exit (killing the process at [`LIMIT`]) and collects its output.
    pub(crate) fn finish(mut self) -> Finished {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break Some(status);
            }
            if self.started.elapsed() > LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(10));
        };
        self.collect(status)
    }

    /// Kills the process and collects its output (a server, when the scenario is over).
    pub(crate) fn stop(mut self) -> Finished {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.collect(status)
    }

    fn collect(&mut self, status: Option<ExitStatus>) -> Finished {
        let stdout = self.stdout.take().map(|h| h.join().unwrap_or_default());
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        Finished {
            status,
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.unwrap_or_default(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pierce server --listen SERVER --alt-listen SERVER_ALT --json` in `ns`, once it is ready.
pub(crate) struct Server(Option<Proc>);

impl Server {
    pub(crate) fn start(ns: &str) -> Self {
        Self::start_at(ns, super::lab::SERVER, super::lab::SERVER_ALT)
    }

    /// The same at [`super::lab::SERVER6`] and [`super::lab::SERVER6_ALT`], in a lab with
    /// IPv6.
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn start_v6(ns: &str) -> Self {
        Self::start_at(ns, super::lab::SERVER6, super::lab::SERVER6_ALT)
    }

    fn start_at(ns: &str, listen: &str, alt: &str) -> Self {
        let proc = Proc::spawn(
            ns,
            &["server", "--listen", listen, "--alt-listen", alt, "--json"],
        );
        let Some(ready) = proc.next_line(Duration::from_secs(20)) else {
            let dump = proc.stop().dump("server");
            panic!("the server printed no ready line\n{dump}");
        };
        assert!(
            ready.starts_with(&format!(r#"{{"event":"listening","addr":"{listen}""#)),
            "{ready}"
        );
        Self(Some(proc))
    }

    /// Stops it; its output, for a failure message.
    pub(crate) fn stop(&mut self) -> Option<Finished> {
        self.0.take().map(Proc::stop)
    }
}

/// The value of `"key":"value"` in a JSON line (values here never contain quotes).
pub(crate) fn string_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_owned())
}

/// The number in `"key":NUMBER`; `None` if absent or `null`.
pub(crate) fn number_field(line: &str, key: &str) -> Option<f64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[start..];
    let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The boolean in `"key":true|false`.
pub(crate) fn bool_field(line: &str, key: &str) -> Option<bool> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[start..];
    if rest.starts_with("true") {
        Some(true)
    } else if rest.starts_with("false") {
        Some(false)
    } else {
        None
    }
}
