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

use std::net::{IpAddr, SocketAddr};
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
    /// The server asked (as reached: behind NAT64, its synthesised IPv6 address).
    pub server: SocketAddr,
    /// The socket's local address.
    pub local: SocketAddr,
    /// This host's address as the server sees it.
    pub reflexive: SocketAddr,
    /// The reflexive address is translated: not one of this host's own addresses with the
    /// socket's port (a NAT, NAT66 or NAT64 on the path). `None`: this host's addresses
    /// could not be read.
    pub nat: Option<bool>,
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
    /// The report for what discovery against `server` found from a socket bound at `local`,
    /// on a host whose own addresses are `own` (`None` if they could not be read).
    pub fn new(
        server: SocketAddr,
        local: SocketAddr,
        b: &NatBehavior,
        pierce_session: bool,
        own: Option<&[IpAddr]>,
    ) -> Self {
        let (allocation, port_delta) = match b.allocation {
            Some(PortAllocation::Sequential { delta }) => (Some("sequential"), Some(delta)),
            Some(PortAllocation::Random) => (Some("random"), None),
            None => (None, None),
        };
        let reflexive = pierce_core::canonical(b.reflexive);
        let nat = if reflexive.port() != local.port() {
            Some(true)
        } else if reflexive.ip().is_loopback() || reflexive.ip() == local.ip() {
            Some(false)
        } else {
            own.map(|own| !own.contains(&reflexive.ip()))
        };
        Self {
            server,
            local,
            reflexive,
            nat,
            mapping: b.mapping.map(|d| d.name()),
            filtering: b.filtering.map(|d| d.name()),
            // One observation decides this: the port the server saw is the one we bound, or not.
            port_preserved: Some(reflexive.port() == local.port()),
            allocation,
            port_delta,
            alternate: b.alternate,
            pierce_session,
        }
    }

    /// `ipv4` or `ipv6`: the family of the path to the server (IPv6 behind NAT64, though the
    /// server, and so the reflexive address, is IPv4).
    pub fn family(&self) -> &'static str {
        if self.server.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        }
    }

    /// The inbound filtering when nothing translates the address: then it is a firewall's
    /// (for IPv6, the usual case: a home router's stateful firewall and no NAT).
    pub fn firewall(&self) -> Option<&'static str> {
        match self.nat {
            Some(false) => Some(self.filtering.unwrap_or("unknown")),
            _ => None,
        }
    }

    /// The contract's JSON line.
    pub fn json(&self) -> String {
        let o = Obj::event("netcheck")
            .str("family", self.family())
            .str("server", &self.server.to_string())
            .str("reflexive", &self.reflexive.to_string())
            .opt_bool("nat", self.nat)
            .opt_str("firewall", self.firewall())
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
        let translated = match (self.nat, self.firewall()) {
            (Some(true), _) => "yes".to_owned(),
            (Some(false), Some(f)) => format!("no; firewall (inbound filtering): {f}"),
            (Some(false), None) => "no".to_owned(),
            (None, _) => "unknown (this host's addresses could not be read)".to_owned(),
        };
        let family = if self.server.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        format!(
            "{family} via {}\nreflexive address {} (local {})\ntranslated (NAT): {translated}\n\
             mapping: {}\nfiltering: {}\nport preserved: {preserved}\nport allocation: \
             {allocation}\nserver alternate address: {alternate}",
            self.server,
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

/// Runs `pierce netcheck`: for each `--server` (one, or one per address family, checked at
/// once from a socket each), a report.
///
/// # Errors
/// Every check failed: the server could not be reached or refused the session, or the socket
/// failed (the first family's error). When only some failed, the others are reported, the
/// failures go to stderr and the exit status is 1.
pub fn run(args: &NetcheckArgs) -> Result<ExitCode, CliError> {
    let mut servers = args.connect.servers.clone();
    servers.sort_by_key(|s| !s.is_ipv4()); // IPv4 first
    let results: Vec<(SocketAddr, Result<NatReport, CliError>)> = match servers.as_slice() {
        [one] => vec![(*one, discover(args, *one))],
        _ => std::thread::scope(|scope| {
            let each: Vec<_> = servers
                .iter()
                .map(|&s| (s, scope.spawn(move || discover(args, s))))
                .collect();
            each.into_iter()
                .map(|(s, h)| (s, h.join().expect("a netcheck thread panicked")))
                .collect()
        }),
    };
    let many = results.len() > 1;
    let (mut failed, mut first_error) = (false, None);
    for (server, result) in results {
        let report = match result {
            Ok(report) => report,
            Err(e) if !many => return Err(e),
            Err(e) => {
                eprintln!("pierce: netcheck via {server} failed: {}", e.message);
                failed = true;
                first_error.get_or_insert(e);
                continue;
            }
        };
        if args.json {
            out(&report.json());
        } else {
            out(&report.text());
        }
        // With two families, each note says which one it is about.
        let about = if many {
            format!(" ({})", report.family())
        } else {
            String::new()
        };
        if !report.pierce_session {
            eprintln!(
                "pierce: note{about}: {server} answered STUN but not as a Pierce server; the \
                 NAT behaviour comes from STUN alone"
            );
        }
        if let Some(note) = report.note() {
            eprintln!("pierce: note{about}: {note}");
        }
        if !many {
            if let Some(note) = unchecked_family_note(&report) {
                eprintln!("pierce: note: {note}");
            }
        }
    }
    match first_error {
        Some(e) if !failed => Err(e),
        Some(_) => Ok(ExitCode::FAILURE),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// With one `--server`: the other family, if this host has a global address of it that went
/// unchecked.
fn unchecked_family_note(report: &NatReport) -> Option<String> {
    let own = crate::local_addresses(0).ok()?;
    let other = own.iter().find(|a| {
        a.is_ipv4() != report.server.is_ipv4()
            && match a.ip() {
                IpAddr::V4(v4) => !v4.is_private() && !v4.is_link_local(),
                // Global unicast (2000::/3): not ULA or link-local.
                IpAddr::V6(v6) => v6.segments()[0] & 0xe000 == 0x2000,
            }
    })?;
    let (family, example) = if other.is_ipv4() {
        ("IPv4", "203.0.113.1:3478")
    } else {
        ("IPv6", "[2001:db8::1]:3478")
    };
    Some(format!(
        "this host also has {family} address {}, not checked: give a second --server of that \
         family (such as --server {example}) to check both",
        other.ip()
    ))
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

/// Runs discovery and the session with `server` side by side on one socket, then leaves.
///
/// # Errors
/// As [`run`].
pub fn discover(args: &NetcheckArgs, server: SocketAddr) -> Result<NatReport, CliError> {
    let start = Instant::now();
    let deadline = start + args.timeout;
    let mut connect = args.connect.clone();
    if connect.servers.len() > 1 {
        // One family per socket: an IPv4 check from an IPv4 socket (not a dual-stack one).
        connect.bind = server
            .is_ipv4()
            .then(|| SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)));
    }
    connect.servers = vec![server];
    let mut setup = Setup::new(&connect, args.timeout, false)?;
    // One discovery, the one started below (not a second one once connected).
    setup.config.nat_discovery = false;
    // Behind NAT64 an IPv4 server is reached at its synthesised address.
    let server = match setup.config.nat64_prefix {
        Some(prefix) => pierce_core::synthesize_nat64(prefix, server),
        None => server,
    };
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
    // Discovery may give up on a silent server before --timeout: say how long it asked.
    let no_answer = || {
        CliError::failed(format!(
            "no answer from a Pierce or STUN server at {server} within {:.1} s",
            start.elapsed().as_secs_f64()
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
    let own: Option<Vec<IpAddr>> = crate::local_addresses(0)
        .ok()
        .map(|a| a.iter().map(SocketAddr::ip).collect());
    Ok(NatReport::new(
        server,
        local,
        &behavior,
        session == Session::Up,
        own.as_deref(),
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
            nat: Some(true),
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

    fn behavior(reflexive: &str) -> NatBehavior {
        NatBehavior {
            reflexive: reflexive.parse().expect("address"),
            mapping: None,
            filtering: Some(pierce_core::nat::Dependence::AddressAndPortDependent),
            port_preserved: None,
            allocation: None,
            last_port: 0,
            alternate: None,
        }
    }

    #[test]
    fn an_address_the_host_owns_is_not_translated_and_its_filtering_is_a_firewall() {
        let server: SocketAddr = "[2001:db8::1]:3478".parse().expect("address");
        let local: SocketAddr = "[::]:5000".parse().expect("address");
        let own: Vec<IpAddr> = vec!["2001:db8:1::2".parse().expect("ip")];
        let r = NatReport::new(
            server,
            local,
            &behavior("[2001:db8:1::2]:5000"),
            true,
            Some(&own),
        );
        assert_eq!((r.family(), r.nat), ("ipv6", Some(false)));
        assert_eq!(r.firewall(), Some("address-and-port-dependent"));
        let json = r.json();
        assert!(
            json.starts_with(
                r#"{"event":"netcheck","family":"ipv6","server":"[2001:db8::1]:3478","reflexive":"[2001:db8:1::2]:5000","nat":false,"firewall":"address-and-port-dependent","mapping":"unknown","filtering":"address-and-port-dependent","#
            ),
            "{json}"
        );
        assert!(
            r.text().contains(
                "translated (NAT): no; firewall (inbound filtering): address-and-port-dependent"
            ),
            "{}",
            r.text()
        );
        // Another port, or an address the host does not own: translated, and no firewall
        // verdict (the filtering is the NAT's).
        let r = NatReport::new(
            server,
            local,
            &behavior("[2001:db8:1::2]:6000"),
            true,
            Some(&own),
        );
        assert_eq!((r.nat, r.firewall()), (Some(true), None));
        let r = NatReport::new(
            server,
            local,
            &behavior("[2001:db8:9::9]:5000"),
            true,
            Some(&own),
        );
        assert_eq!((r.nat, r.firewall()), (Some(true), None));
        // Unknown when the host's addresses cannot be read.
        let r = NatReport::new(server, local, &behavior("[2001:db8:9::9]:5000"), true, None);
        assert_eq!((r.nat, r.firewall()), (None, None));
        assert!(
            r.json().contains(r#""nat":null,"firewall":null,"#),
            "{}",
            r.json()
        );
    }

    #[test]
    fn behind_nat64_the_family_is_ipv6_and_the_ipv4_reflexive_address_is_translated() {
        let server: SocketAddr = "[64:ff9b::cb00:7101]:3478".parse().expect("address");
        let local: SocketAddr = "[::]:5000".parse().expect("address");
        let own: Vec<IpAddr> = vec!["2001:db8:1::2".parse().expect("ip")];
        let r = NatReport::new(
            server,
            local,
            &behavior("[::ffff:198.51.100.7]:5000"),
            true,
            Some(&own),
        );
        assert_eq!(r.family(), "ipv6");
        assert_eq!(r.reflexive.to_string(), "198.51.100.7:5000", "canonical");
        assert_eq!(r.nat, Some(true));
    }
}
