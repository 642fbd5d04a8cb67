//! A `redis-server` of a test's own: on a free loopback port, no persistence, its files in a
//! temporary directory, killed (and the directory removed) on drop; stopped, restarted,
//! paused and resumed to play outages.
//!
//! `Redis::start()` is `None` (after printing `SKIPPED`) when `redis-server` is not installed,
//! and panics instead when the `CI` environment variable is set (`.ci/run` installs it).
#![allow(dead_code)] // each test file uses what it needs

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a starting `redis-server` may take to answer PING.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running (or stopped) `redis-server`.
pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts one, or says `SKIPPED` and returns `None` if `redis-server` is missing (panics
    /// under `CI`).
    pub(crate) fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var_os("CI").is_some() {
                panic!("redis-server is not installed (apt-get install redis-server); CI needs it");
            }
            println!("SKIPPED: redis-server is not installed");
            return None;
        }
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pierce-redis-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        // A free port may be taken between asking and binding: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut redis = Self {
                child: None,
                port,
                dir: dir.clone(),
            };
            if redis.spawn() {
                return Some(redis);
            }
        }
        panic!("redis-server did not start; see {}", dir.display());
    }

    /// Spawns the server on `self.port`; whether it answers PING in time.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(child) = &mut self.child {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    /// Whether it answers PING within a second (raw RESP, so any test may use this).
    pub(crate) fn ping(&self) -> bool {
        self.command(&["PING"])
            .is_some_and(|a| a.starts_with("+PONG"))
    }

    /// Sends one command (RESP array of bulk strings) and returns the raw answer's first
    /// read, or `None` if it could not.
    pub(crate) fn command(&self, args: &[&str]) -> Option<String> {
        let timeout = Duration::from_secs(1);
        let mut stream = TcpStream::connect_timeout(&self.addr(), timeout).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(out.as_bytes()).ok()?;
        let mut buf = [0; 512];
        let n = stream.read(&mut buf).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Forgets everything (`FLUSHALL`).
    pub(crate) fn flush_all(&self) {
        let answer = self.command(&["FLUSHALL"]);
        assert_eq!(answer.as_deref(), Some("+OK\r\n"), "FLUSHALL");
    }

    /// Its port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Its address.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (its data is gone: no persistence). The port stays its own for `restart`.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty); panics if it does not come up.
    pub(crate) fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Freezes it (SIGSTOP): connections are accepted by the kernel, nothing is answered.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws it (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop(); // SIGKILL ends a paused server too
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
