//! What the process tests share about the `pierce` children they run: reading their JSON
//! lines, their memory, one test at a time, and reproducible junk.
#![allow(dead_code)] // each test file uses what it needs

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// The tests of a file that measure time or memory: one at a time.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The child's stdout, line by line, from a thread that keeps draining it even when nobody
/// listens any more (so the child never blocks on a full pipe).
pub(crate) fn lines(child: &mut Child) -> Receiver<String> {
    read_lines(child, |line| line)
}

/// The same, each line with when it was read.
pub(crate) fn timed_lines(child: &mut Child) -> Receiver<(Instant, String)> {
    read_lines(child, |line| (Instant::now(), line))
}

fn read_lines<T: Send + 'static>(child: &mut Child, stamp: fn(String) -> T) -> Receiver<T> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(stamp(line));
        }
    });
    rx
}

/// Starts `pierce server --listen 127.0.0.1:0 --json --stats-every 1` (from the `pierce`
/// binary at `bin`) with `extra` flags; returns it, its stdout lines, and its ready line
/// (killing it if that does not come).
pub(crate) fn start_server(bin: &str, extra: &[&str]) -> (Child, Receiver<String>, String) {
    start_server_at(bin, "127.0.0.1:0", extra)
}

/// [`start_server`] listening at `listen`.
pub(crate) fn start_server_at(
    bin: &str,
    listen: &str,
    extra: &[&str],
) -> (Child, Receiver<String>, String) {
    let mut child = Command::new(bin)
        .args(["server", "--listen", listen, "--json", "--stats-every", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pierce server");
    let lines = lines(&mut child);
    match lines.recv_timeout(Duration::from_secs(20)) {
        Ok(ready) => (child, lines, ready),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server printed no ready line: {e}");
        }
    }
}

/// One line a child printed: as read, or with when it was read.
pub(crate) trait Line {
    fn text(&self) -> &str;
}

impl Line for String {
    fn text(&self) -> &str {
        self
    }
}

impl Line for (Instant, String) {
    fn text(&self) -> &str {
        &self.1
    }
}

/// A child's stdout lines as they come (from [`lines`] or [`timed_lines`]), and every one so
/// far.
pub(crate) struct Seen<T> {
    rx: Receiver<T>,
    /// Every line read so far, in order.
    pub(crate) all: Vec<T>,
}

impl<T: Line> Seen<T> {
    pub(crate) fn new(rx: Receiver<T>) -> Self {
        Self {
            rx,
            all: Vec::new(),
        }
    }

    /// Takes what came meanwhile; how many lines so far contain `what`.
    pub(crate) fn count(&mut self, what: &str) -> usize {
        while let Ok(l) = self.rx.try_recv() {
            self.all.push(l);
        }
        self.all.iter().filter(|l| l.text().contains(what)).count()
    }

    /// After the child exited: takes every line up to the end of its output (the reader
    /// thread may still hold the last ones), waiting at most `limit`.
    pub(crate) fn read_to_end(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => self.all.push(l),
                Err(_) => return, // the end of the output, or out of time
            }
        }
    }

    /// The first line so far that contains `what`.
    pub(crate) fn first(&self, what: &str) -> Option<&T> {
        self.all.iter().find(|l| l.text().contains(what))
    }
}

/// Polls `pred` every 10 ms until it holds (true) or `limit` passes (false).
pub(crate) fn wait_for(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    pred()
}

/// The value of `"key":"value"` in a flat JSON line (values here never contain quotes).
pub(crate) fn string_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_owned())
}

/// The value of `"key":123` in a flat JSON line.
pub(crate) fn int_field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// (VmRSS, VmHWM) of process `pid`, in KiB (Linux: from `/proc`).
pub(crate) fn memory_of(pid: u32) -> (u64, u64) {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).expect("read /proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {path}"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// xorshift64*: reproducible junk without a dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.next() as u8)
    }
}

/// A child that ended: how, and all it printed.
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Finished {
    /// Its last stdout line (`pierce peer`'s summary).
    pub(crate) fn summary(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }

    /// The summary's entry for peer `name`.
    pub(crate) fn entry(&self, name: &str) -> &str {
        let s = self.summary();
        let start = s
            .find(&format!(r#"{{"name":"{name}","#))
            .unwrap_or_else(|| panic!("no entry for {name}: {s}"));
        let e = &s[start..];
        &e[..=e.find('}').expect("an entry ends")]
    }

    /// Its `connected` line's `public_addr` (what the server saw).
    pub(crate) fn public_addr(&self) -> String {
        let line = (self.stdout.lines())
            .find(|l| l.contains(r#""event":"connected""#))
            .unwrap_or_else(|| panic!("never connected:\n{}", self.stdout));
        string_field(line, "public_addr").expect("public_addr")
    }
}

/// Waits for every child, reading all it prints (killing any that outlives `limit`).
pub(crate) fn finish(limit: Duration, children: Vec<Child>) -> Vec<Finished> {
    let started = Instant::now();
    children
        .into_iter()
        .map(|mut child| {
            let (mut out, mut err) = (
                child.stdout.take().expect("piped stdout"),
                child.stderr.take().expect("piped stderr"),
            );
            let out = thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                s
            });
            let err = thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                s
            });
            let status = loop {
                if let Some(status) = child.try_wait().expect("a child process") {
                    break status;
                }
                if started.elapsed() > limit {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("pierce peer ran longer than {limit:?}");
                }
                thread::sleep(Duration::from_millis(20));
            };
            Finished {
                status,
                stdout: out.join().expect("a child process"),
                stderr: err.join().expect("a child process"),
            }
        })
        .collect()
}

/// Starts `bin args...` with stdin closed and stdout and stderr piped.
pub(crate) fn spawn_piped(bin: &str, args: &[&str]) -> Child {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a child process")
}

/// A UDP port free on 127.0.0.1 a moment ago (for a tool that takes a port, not a socket).
pub(crate) fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free loopback port")
        .port()
}
