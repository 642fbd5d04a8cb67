//! `pierce netcheck`: this host's reflexive address and NAT behaviour.
//!
//! Today the core learns one reflexive address (the server's `Welcome`), which is enough for
//! the reflexive address itself and for port preservation. Mapping and filtering need answers
//! from a second server address (RFC 5780), a later step; until then they are reported as
//! unknown rather than guessed. Adding them means filling [`NatReport`] in
//! [`discover`]; the printing stays as it is.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pierce_core::{Client, ClientEvent};

use super::args::NetcheckArgs;
use super::json::Obj;
use super::{CliError, Setup, describe, out};
use crate::{Driver, os_seed};

/// What the check found. `None` means "not measured", never a guess.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatReport {
    /// The socket's local address.
    pub local: SocketAddr,
    /// This host's address as the server sees it.
    pub reflexive: SocketAddr,
    /// `endpoint-independent`, `address-dependent` or `address-and-port-dependent`.
    pub mapping: Option<&'static str>,
    /// The same three words, for inbound filtering.
    pub filtering: Option<&'static str>,
    /// The NAT (if any) kept the local port.
    pub port_preserved: Option<bool>,
}

impl NatReport {
    /// The contract's JSON line.
    pub fn json(&self) -> String {
        Obj::event("netcheck")
            .str("reflexive", &self.reflexive.to_string())
            .str("mapping", self.mapping.unwrap_or("unknown"))
            .str("filtering", self.filtering.unwrap_or("unknown"))
            .opt_bool("port_preserved", self.port_preserved)
            .finish()
    }

    /// The same, as text.
    pub fn text(&self) -> String {
        let preserved = match self.port_preserved {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        format!(
            "reflexive address {} (local {})\nmapping: {}\nfiltering: {}\nport preserved: {preserved}",
            self.reflexive,
            self.local,
            self.mapping.unwrap_or("unknown"),
            self.filtering.unwrap_or("unknown"),
        )
    }
}

/// Runs `pierce netcheck`.
///
/// # Errors
/// The server could not be reached or refused the session, or the socket failed.
pub fn run(args: &NetcheckArgs) -> Result<ExitCode, CliError> {
    let report = discover(args)?;
    if args.json {
        out(&report.json());
    } else {
        out(&report.text());
    }
    if report.mapping.is_none() || report.filtering.is_none() {
        eprintln!(
            "pierce: note: NAT mapping and filtering are not measured yet (they need NAT \
             behaviour discovery, RFC 5780, a later step); reported as unknown"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects, reads the reflexive address, and leaves.
///
/// # Errors
/// As [`run`].
pub fn discover(args: &NetcheckArgs) -> Result<NatReport, CliError> {
    let start = Instant::now();
    let deadline = start + args.timeout;
    let setup = Setup::new(&args.connect, args.timeout, false)?;
    let server = args.connect.server;
    let seed = os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
    let mut client = Client::new(Arc::new(setup.config), seed, start)
        .map_err(|e| CliError::usage(format!("invalid client settings: {e}")))?;
    client
        .connect(start, server, &setup.token)
        .map_err(|e| CliError::usage(e.to_string()))?;
    let mut driver = Driver::bind(setup.bind, client)
        .map_err(|e| CliError::io(&format!("cannot bind {}", setup.bind), &e))?;
    let local = driver.local_addr();
    let reflexive = loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(CliError::failed(format!(
                "no answer from a Pierce server at {server} within {} s",
                args.timeout.as_secs_f64()
            )));
        }
        let wait = deadline.saturating_duration_since(now);
        driver
            .pump(wait.min(Duration::from_millis(100)))
            .map_err(|e| CliError::io("socket failed", &e))?;
        match driver.poll_event() {
            Some(ClientEvent::Connected { public_addr, .. }) => break public_addr,
            Some(ClientEvent::Disconnected { reason }) => {
                return Err(CliError::failed(describe::disconnect(reason, server)));
            }
            _ => {}
        }
    };
    driver.endpoint_mut().disconnect(Instant::now(), 0);
    let _ = driver.pump(Duration::ZERO); // sends the Close
    Ok(NatReport {
        local,
        reflexive,
        mapping: None,
        filtering: None,
        // One observation decides this: the port the server saw is the one we bound, or not.
        port_preserved: Some(reflexive.port() == local.port()),
    })
}
