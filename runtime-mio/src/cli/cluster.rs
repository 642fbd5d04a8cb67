//! `pierce server --cluster redis://HOST:PORT --node-id ID`: the node's link to the
//! directory. The core asks ([`Server::poll_directory`]); a thread of its own answers from
//! Redis ([`crate::cluster::DirectoryThread`], waking the driver); the loop hands the answers
//! back ([`Server::handle_directory`]). It also measures the process's CPU use for the
//! registry ([`Server::report_cpu`]) and, when the node exits, takes it out of the registry
//! at once (its room claims go with it).

use std::time::{Duration, Instant};

use pierce_core::Server;

use super::CliError;
use super::config::ClusterSettings;
use crate::Driver;
use crate::cluster::{DirectoryThread, RedisDirectory};

/// How often the CPU use is measured (the registry's figure is the last period's).
const CPU_EVERY: Duration = Duration::from_secs(1);
/// How long an exiting node waits for the directory to take it out.
const LEAVE_WAIT: Duration = Duration::from_millis(500);

/// A cluster node's link to its directory.
pub struct Link {
    thread: Option<DirectoryThread>,
    node_id: String,
    cpu: Cpu,
}

impl Link {
    /// Connects to the directory of `settings` (none without `redis`) and starts the thread
    /// that answers the node's questions, waking `driver`.
    ///
    /// A Redis that does not answer yet is warned about: the node starts, and takes no
    /// clients until it has registered (its number comes from the directory).
    ///
    /// # Errors
    /// A usage error for a URL or namespace the directory refuses (the flags' parsers
    /// check them first); a failed run if the thread cannot start.
    pub fn start(
        settings: &ClusterSettings,
        driver: &mut Driver<Server>,
    ) -> Result<Option<Self>, CliError> {
        let (Some(url), Some(node_id)) = (&settings.redis, &settings.node_id) else {
            return Ok(None);
        };
        let directory = RedisDirectory::connect(url, &settings.namespace)
            .map_err(|e| CliError::usage(format!("--cluster {url}: {e}")))?;
        if !directory.is_connected() {
            eprintln!(
                "pierce: warning: the cluster directory at {url} does not answer yet; this node \
                 takes no clients until it has registered there"
            );
        }
        let waker = driver
            .waker()
            .map_err(|e| CliError::io("creating the directory waker", &e))?;
        let wake = Box::new(move || {
            let _ = waker.wake();
        });
        let thread = DirectoryThread::spawn(directory, wake)
            .map_err(|e| CliError::io("starting the directory thread", &e))?;
        Ok(Some(Self {
            thread: Some(thread),
            node_id: node_id.clone(),
            cpu: Cpu::new(Instant::now()),
        }))
    }

    /// Questions out, answers in (and the questions the answers raise out), and the CPU use
    /// when due.
    pub fn exchange(&mut self, driver: &mut Driver<Server>, now: Instant) {
        let Some(thread) = &mut self.thread else {
            return;
        };
        let server = driver.endpoint_mut();
        loop {
            while let Some((id, request)) = server.poll_directory() {
                thread.ask(id, request);
            }
            let mut answered = false;
            while let Some((id, answer)) = thread.poll_answer() {
                server.handle_directory(now, id, answer);
                answered = true;
            }
            if !answered {
                break;
            }
        }
        if let Some(percent) = self.cpu.sample(now) {
            server.report_cpu(percent);
        }
    }

    /// The node exits: it leaves the registry (its claims released), waiting at most
    /// [`LEAVE_WAIT`] for the directory.
    pub fn leave(mut self) {
        if let Some(mut thread) = self.thread.take() {
            thread.leave(self.node_id.clone());
            let done = std::thread::spawn(move || drop(thread));
            let until = Instant::now() + LEAVE_WAIT;
            while !done.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// This process's CPU use, from `/proc/self/stat` (Linux; elsewhere none is reported).
struct Cpu {
    /// CPU seconds used, and when, at the last sample.
    last: Option<(f64, Instant)>,
    next: Instant,
}

impl Cpu {
    fn new(now: Instant) -> Self {
        Self {
            last: used().map(|s| (s, now)),
            next: now + CPU_EVERY,
        }
    }

    /// Percent of one core used since the last sample, when a sample is due.
    fn sample(&mut self, now: Instant) -> Option<u16> {
        if now < self.next {
            return None;
        }
        self.next = now + CPU_EVERY;
        let used = used()?;
        let (before, at) = self.last.replace((used, now))?;
        let wall = now.saturating_duration_since(at).as_secs_f64();
        (wall > 0.0).then(|| ((used - before) / wall * 100.0).clamp(0.0, 65_535.0) as u16)
    }
}

/// CPU seconds this process has used (user and system).
#[cfg(target_os = "linux")]
fn used() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses, which may hold spaces): state is field 3,
    // utime and stime fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

#[cfg(not(target_os = "linux"))]
fn used() -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn cpu_use_is_measured_from_proc_and_grows_with_work() {
        let t0 = Instant::now();
        let mut cpu = Cpu::new(t0);
        assert_eq!(cpu.sample(t0), None, "not due yet");
        let before = used().expect("/proc/self/stat");
        let mut x = 0u64;
        while used().expect("stat") < before + 0.05 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let percent = cpu.sample(Instant::now() + CPU_EVERY).expect("due");
        assert!(percent > 0, "{percent}");
    }
}
