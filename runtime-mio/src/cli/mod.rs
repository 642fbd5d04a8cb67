//! The `pierce` command (`src/bin/pierce.rs` is only `main`), behind the default `cli`
//! feature. Public so the async-std example peer can share the flags ([`args::PeerArgs`]) and
//! the scripted peer ([`script::Script`]); it is application code, not part of the library's
//! driver API, and may change with the command.
//!
//! - `pierce server`: [`server`], its settings (flags and `--config` file) in [`config`]
//! - `pierce netcheck`: [`netcheck`]
//! - `pierce peer`: [`peer`] drives a [`script::Script`] on a [`crate::Driver`]
//! - `pierce demo`: [`demo`]

pub mod args;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod describe;
pub mod json;
pub mod netcheck;
pub mod ops;
pub mod peer;
pub mod script;
pub mod server;
mod signal;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use pierce_core::{ClientConfig, ConnectToken};

use args::{Cli, Command, ConnectArgs, Nat64};

/// How long a minted connect token stays valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Parses the command line and runs the command: the whole of `pierce`'s `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse_checked(); // prints usage errors and exits with 2
    let result = match cli.command {
        Command::Server(a) => server::run(&a),
        Command::Netcheck(a) => netcheck::run(&a),
        Command::Peer(a) => peer::run(a),
        Command::Demo(a) => demo::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pierce: error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// A failed command: a message for stderr and the exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliError {
    /// 1: the run failed; 2: bad input.
    pub code: u8,
    /// What went wrong, for a person.
    pub message: String,
}

impl CliError {
    /// Bad command-line input (exit status 2, as clap uses).
    pub fn usage(message: String) -> Self {
        Self { code: 2, message }
    }

    /// The run failed (exit status 1).
    pub fn failed(message: String) -> Self {
        Self { code: 1, message }
    }

    /// An I/O failure, with what was being done.
    pub fn io(what: &str, e: &io::Error) -> Self {
        Self::failed(format!("{what}: {e}"))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Where and how a client connects, from [`ConnectArgs`].
#[derive(Clone, Debug)]
pub struct Setup {
    /// Local address to bind.
    pub bind: SocketAddr,
    /// The client's settings.
    pub config: ClientConfig,
    /// The connect token (empty if none).
    pub token: Vec<u8>,
}

impl Setup {
    /// Settings for a run that must be over within `timeout`; `direct_paths: false` keeps
    /// every peer on the relay (`--relay-only`).
    ///
    /// # Errors
    /// A bind address of the wrong family, or no OS entropy for a random user id.
    pub fn new(
        args: &ConnectArgs,
        timeout: Duration,
        direct_paths: bool,
    ) -> Result<Self, CliError> {
        // Behind NAT64 every server is reached over IPv6 (an IPv4 one at its synthesised
        // address: the core does that).
        let nat64 = args.nat64_prefix.map(Nat64::prefix);
        let server = match nat64 {
            Some(prefix) => pierce_core::synthesize_nat64(prefix, args.server()),
            None => args.server(),
        };
        // By default dual stack where the host has IPv6 (its global IPv6 addresses become
        // candidates whatever the server's family: a pair with IPv6 on both ends can go
        // direct over it behind any IPv4 NAT); else the server's family.
        let bind = args.bind.unwrap_or_else(|| match server {
            SocketAddr::V4(_) if has_ipv6() => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        });
        if bind.is_ipv4() != server.is_ipv4() && !is_dual(bind) {
            return Err(CliError::usage(format!(
                "--bind {bind} cannot reach --server {server} (different address families; \
                 --bind [::]:0 is dual stack)"
            )));
        }
        let mut config = ClientConfig::default();
        config.nat64_prefix = nat64;
        config.server_key = args.server_key;
        // The run's own deadline is what counts; the core must not give up later than that.
        config.connect_timeout = timeout;
        config.direct_paths = direct_paths;
        let token = match &args.token_secret {
            None => Vec::new(),
            Some(secret) => {
                let user = match args.user_id {
                    Some(u) => u,
                    None => u64::from_le_bytes(seed8()?),
                };
                let expires = (crate::unix_time() + TOKEN_LIFETIME).as_secs();
                ConnectToken::issue(secret.as_bytes(), user, expires).to_vec()
            }
        };
        Ok(Self {
            bind,
            config,
            token,
        })
    }
}

/// The LAN candidates to announce for a socket bound at `local`: this host's interface
/// addresses of the socket's family (of both for a dual-stack socket, `[::]`) with its port
/// if it listens on all of them, else its own address. Empty if the interface list cannot be
/// read: peers then use the reflexive address.
pub fn lan_candidates(local: SocketAddr) -> Vec<SocketAddr> {
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    crate::local_addresses(local.port())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.is_ipv4() == local.is_ipv4() || is_dual(local))
        .collect()
}

/// A socket at `[::]`: dual stack ([`crate::bind_udp`]), it reaches both families.
fn is_dual(local: SocketAddr) -> bool {
    local.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}

/// Whether this host can have a dual-stack socket (IPv6 enabled).
fn has_ipv6() -> bool {
    crate::bind_udp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))).is_ok()
}

fn seed8() -> Result<[u8; 8], CliError> {
    let seed = crate::os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
    let mut out = [0; 8];
    out.copy_from_slice(&seed[..8]);
    Ok(out)
}

/// Prints one line to stdout. `println!` would panic if stdout is closed (`pierce peer | head
/// -1`); a closed stdout just loses the line.
pub fn out(line: &str) {
    use io::Write;
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
