//! `pierce netcheck`: this host's reflexive address and NAT behaviour.
//!
//! NAT behaviour discovery (RFC 5780, [`pierce_core::nat::NatDiscovery`], run by the client
//! core's `discover_nat`) against the server's STUN service, from the one socket: mapping,
//! filtering, port preservation and, for endpoint-dependent mapping, how new mappings' ports
//! are allocated. Alongside, on the same socket, the client opens a Pierce session, so a Pierce
//! server that would refuse this host (a token it requires, a key it does not hold) fails the
//! check as before. Any RFC 5780 STUN server works too: when it answers STUN but not the
//! session, the result stands on STUN alone; so do RFC 3489 servers such as Vovida's `stund`,
//! whose second address comes in CHANGED-ADDRESS. What was not measurable is reported as unknown,
//! never guessed.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pierce_core::nat::{NatBehavior, PortAllocation};
use pierce_core::stun::StunError;
use pierce_core::{Client, ClientEvent, DisconnectReason};

use super::args::NetcheckArgs;
use super::json::Obj;
use super::{CliError, Setup, describe, out};
use crate::{Driver, os_seed};

/// How long, after discovery finished, the session may still take before the server is taken
/// for a plain STUN server. A Pierce server's handshake (two round trips at most) ends well
/// before discovery (three to five round trips, begun together).
const SESSION_GRACE: Duration = Duration::from_secs(1);

/// What the check found. `None` means "not measured", never a guess.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatReport {
    /// The server asked.
    pub server: SocketAddr,
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
    /// `sequential` or `random`: how the NAT picks ports for new mappings (measured for
    /// endpoint-dependent mapping only).
    pub allocation: Option<&'static str>,
    /// The port step between consecutive new mappings, when allocation is sequential.
    pub port_delta: Option<i16>,
    /// The server's alternate address (RFC 5780 OTHER-ADDRESS), if it has one.
    pub alternate: Option<SocketAddr>,
    /// The server accepted a Pierce session (false: it answered STUN only).
    pub pierce_session: bool,
}

impl NatReport {
    /// The report for what discovery against `server` found from a socket bound at `local`.
    pub fn new(
        server: SocketAddr,
        local: SocketAddr,
        b: &NatBehavior,
        pierce_session: bool,
    ) -> Self {
        let (allocation, port_delta) = match b.allocation {
            Some(PortAllocation::Sequential { delta }) => (Some("sequential"), Some(delta)),
            Some(PortAllocation::Random) => (Some("random"), None),
            None => (None, None),
        };
        Self {
            server,
            local,
            reflexive: b.reflexive,
            mapping: b.mapping.map(|d| d.name()),
            filtering: b.filtering.map(|d| d.name()),
            // One observation decides this: the port the server saw is the one we bound, or not.
            port_preserved: Some(b.reflexive.port() == local.port()),
            allocation,
            port_delta,
            alternate: b.alternate,
            pierce_session,
        }
    }

    /// The contract's JSON line.
    pub fn json(&self) -> String {
        let o = Obj::event("netcheck")
            .str("reflexive", &self.reflexive.to_string())
            .str("mapping", self.mapping.unwrap_or("unknown"))
            .str("filtering", self.filtering.unwrap_or("unknown"))
            .opt_bool("port_preserved", self.port_preserved)
            .opt_str("allocation", self.allocation);
        let o = match self.port_delta {
            Some(d) => o.int("port_delta", d),
            None => o.opt_str("port_delta", None),
        };
        let alternate = self.alternate.map(|a| a.to_string());
        o.opt_str("alternate", alternate.as_deref()).finish()
    }

    /// The same, as text.
    pub fn text(&self) -> String {
        let preserved = match self.port_preserved {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        let allocation = match (self.allocation, self.port_delta) {
            (Some(a), Some(d)) => format!("{a} (step {d:+})"),
            (Some(a), None) => a.to_owned(),
            (None, _) => "not measured (only for endpoint-dependent mapping)".to_owned(),
        };
        let alternate = self
            .alternate
            .map_or_else(|| "none".to_owned(), |a| a.to_string());
        format!(
            "reflexive address {} (local {})\nmapping: {}\nfiltering: {}\nport preserved: \
             {preserved}\nport allocation: {allocation}\nserver alternate address: {alternate}",
            self.reflexive,
            self.local,
            self.mapping.unwrap_or("unknown"),
            self.filtering.unwrap_or("unknown"),
        )
    }

    /// Why mapping or filtering is unknown, for stderr; `None` if both were measured.
    pub fn note(&self) -> Option<&'static str> {
        if self.mapping.is_some() && self.filtering.is_some() {
            return None;
        }
        Some(match self.alternate {
            // Only a Pierce server has an `--alt-listen` to blame.
            None if self.pierce_session => {
                "the server has no alternate address (--alt-listen): mapping and filtering \
                 cannot be measured; reported as unknown"
            }
            None => {
                "the server offered no second address (no OTHER-ADDRESS or CHANGED-ADDRESS in \
                 its answers): mapping and filtering cannot be measured; reported as unknown"
            }
            Some(a) if a.ip() == self.server.ip() => {
                "the server's alternate address has the same IP as its main one: address \
                 dependence cannot be told apart from independence; reported as unknown"
            }
            Some(_) => {
                "some discovery tests got no usable answer (lost, refused, or an unusual NAT); \
                 what they decide is reported as unknown"
            }
        })
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
    if !report.pierce_session {
        eprintln!(
            "pierce: note: {} answered STUN but not as a Pierce server; the NAT behaviour \
             comes from STUN alone",
            args.connect.server()
        );
    }
    if let Some(note) = report.note() {
        eprintln!("pierce: note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the Pierce session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Session {
    Pending,
    Up,
    /// The connect attempt timed out: no Pierce server there (or none that answers); why
    /// (no answer, TCP refused, TCP closed unanswered).
    NoAnswer(DisconnectReason),
}

/// Runs discovery and the session side by side on one socket, then leaves.
///
/// # Errors
/// As [`run`].
pub fn discover(args: &NetcheckArgs) -> Result<NatReport, CliError> {
    let start = Instant::now();
    let deadline = start + args.timeout;
    let mut setup = Setup::new(&args.connect, args.timeout, false)?;
    // One discovery, the one started below (not a second one once connected).
    setup.config.nat_discovery = false;
    let server = args.connect.server();
    // --server-key or a token say a Pierce server is expected: STUN alone is not enough.
    let pierce_required = args.connect.server_key.is_some() || !setup.token.is_empty();
    let seed = os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
    let mut client = Client::new(Arc::new(setup.config), seed, start)
        .map_err(|e| CliError::usage(format!("invalid client settings: {e}")))?;
    client
        .connect(start, server, &setup.token)
        .map_err(|e| CliError::usage(e.to_string()))?;
    client.discover_nat(start, server);
    let mut driver = Driver::bind(setup.bind, client)
        .map_err(|e| CliError::io(&format!("cannot bind {}", setup.bind), &e))?;
    let local = driver.local_addr();
    let (mut session, mut found) = (Session::Pending, None::<(Instant, NatBehavior)>);
    let no_answer = || {
        CliError::failed(format!(
            "no answer from a Pierce or STUN server at {server} within {} s",
            args.timeout.as_secs_f64()
        ))
    };
    let behavior = loop {
        let now = Instant::now();
        if let Some((at, b)) = found {
            match session {
                Session::Up => break b,
                Session::NoAnswer(reason) if pierce_required => {
                    return Err(CliError::failed(describe::disconnect(reason, server)));
                }
                Session::NoAnswer(_) => break b,
                Session::Pending if !pierce_required && now >= at + SESSION_GRACE => break b,
                Session::Pending if now >= deadline => {
                    let reason = DisconnectReason::ConnectTimedOut;
                    return Err(CliError::failed(describe::disconnect(reason, server)));
                }
                Session::Pending => {}
            }
        }
        if now >= deadline {
            match found {
                Some((_, b)) if !pierce_required => break b,
                _ => return Err(no_answer()),
            }
        }
        let wait = deadline.saturating_duration_since(now);
        driver
            .pump(wait.min(Duration::from_millis(20)))
            .map_err(|e| CliError::io("socket failed", &e))?;
        while let Some(event) = driver.poll_event() {
            match event {
                ClientEvent::Connected { .. } => session = Session::Up,
                ClientEvent::Disconnected {
                    reason:
                        reason @ (DisconnectReason::ConnectTimedOut
                        | DisconnectReason::ConnectRefused
                        | DisconnectReason::ConnectClosed),
                } => session = Session::NoAnswer(reason),
                ClientEvent::Disconnected { reason } => {
                    return Err(CliError::failed(describe::disconnect(reason, server)));
                }
                ClientEvent::NatDiscovered { result: Ok(b), .. } => {
                    found = Some((Instant::now(), b));
                }
                ClientEvent::NatDiscovered { result: Err(e), .. } => {
                    return Err(if matches!(e, StunError::TimedOut) {
                        no_answer()
                    } else {
                        CliError::failed(format!("the server at {server}: {e}"))
                    });
                }
                _ => {}
            }
        }
    };
    if session == Session::Up {
        driver.endpoint_mut().disconnect(Instant::now(), 0);
        let _ = driver.pump(Duration::ZERO); // sends the Close
    }
    Ok(NatReport::new(
        server,
        local,
        &behavior,
        session == Session::Up,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(alternate: Option<&str>, pierce_session: bool) -> NatReport {
        NatReport {
            server: "192.0.2.1:3478".parse().expect("address"),
            local: "10.0.0.2:5000".parse().expect("address"),
            reflexive: "198.51.100.9:5000".parse().expect("address"),
            mapping: None,
            filtering: None,
            port_preserved: Some(true),
            allocation: None,
            port_delta: None,
            alternate: alternate.map(|a| a.parse().expect("address")),
            pierce_session,
        }
    }

    #[test]
    fn the_note_blames_alt_listen_only_on_a_pierce_server() {
        let note = report(None, true).note().expect("a note");
        assert!(note.contains("(--alt-listen)"), "{note}");
        let note = report(None, false).note().expect("a note");
        assert!(!note.contains("--alt-listen"), "{note}");
        assert!(
            note.starts_with("the server offered no second address"),
            "{note}"
        );
        let note = report(Some("192.0.2.1:3479"), false)
            .note()
            .expect("a note");
        assert!(note.contains("same IP"), "{note}");
        let mut measured = report(Some("192.0.2.2:3479"), false);
        (measured.mapping, measured.filtering) = (Some("endpoint-independent"), Some("x"));
        assert_eq!(measured.note(), None);
    }
}
