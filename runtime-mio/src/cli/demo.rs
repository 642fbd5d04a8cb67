//! `pierce demo`: a server and three scripted peers on loopback, all in this thread, each on its
//! own socket and [`Driver`], pumped in turn. Prints a live log: joins, messages, RTTs, paths.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pierce_core::{Client, ClientConfig, SecretKey, ServerEvent};

use super::args::{ConnectArgs, DemoArgs, Mode, PeerArgs};
use super::script::Script;
use super::{CliError, describe, out, peer, server};
use crate::{Driver, os_seed};

const NAMES: [&str; 3] = ["alice", "bob", "carol"];
/// How often the log shows each peer's RTTs and paths.
const RTT_EVERY: Duration = Duration::from_millis(250);
/// Peers stay this long after their exchange, so a few RTT samples show.
const HOLD: Duration = Duration::from_millis(750);

struct DemoPeer {
    name: &'static str,
    driver: Driver<Client>,
    script: Script,
}

/// Runs `pierce demo`.
///
/// # Errors
/// Bad flags, a failed bind or a socket failure.
pub fn run(args: &DemoArgs) -> Result<ExitCode, CliError> {
    let start = Instant::now();
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let seed = os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
    let mut srv = Driver::bind(
        loopback,
        server::rooms_server(SecretKey::from_bytes(seed), None)?,
    )
    .map_err(|e| CliError::io("cannot bind the server", &e))?;
    let key = srv.endpoint().public_key();
    out(&format!(
        "[server] listening on {}, public key {}",
        srv.local_addr(),
        key.to_hex()
    ));
    out("[server] peers start on the relay and punch direct paths; the log shows each upgrade");
    let mut peers = Vec::new();
    for name in NAMES {
        let args = PeerArgs {
            connect: ConnectArgs {
                servers: vec![srv.local_addr()],
                server_key: Some(key),
                token_secret: None,
                user_id: None,
                bind: Some(loopback),
                nat64_prefix: None,
            },
            room: "demo".to_owned(),
            password: String::new(),
            name: Some(name.to_owned()),
            peers: (NAMES.len() - 1) as u16,
            count: args.count,
            size: args.size,
            mode: Mode::ReliableOrdered,
            max_datagram_size: pierce_core::MAX_DATAGRAM_SIZE,
            relay_only: false,
            no_port_mapping: false,
            no_copies: false,
            stun: Vec::new(),
            private: false,
            relay_only_room: false,
            no_offload: false,
            tcp: false,
            udp_only: false,
            hold: HOLD,
            timeout: args.timeout,
            json: false,
            host: false,
        };
        let mut config = ClientConfig::default();
        (config.server_key, config.connect_timeout) = (Some(key), args.timeout);
        let script = Script::new(args, &config, start)?;
        let seed = os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
        let mut client = Client::new(Arc::new(config), seed, start)
            .map_err(|e| CliError::usage(format!("invalid client settings: {e}")))?;
        let _ = client.connect(start, srv.local_addr(), &[]);
        let driver =
            Driver::bind(loopback, client).map_err(|e| CliError::io("cannot bind a peer", &e))?;
        peers.push(DemoPeer {
            name,
            driver,
            script,
        });
    }
    let mut rtt_due = start + RTT_EVERY;
    while peers.iter().any(|p| !p.script.is_finished()) {
        srv.pump(Duration::from_millis(1))
            .map_err(|e| CliError::io("server socket failed", &e))?;
        while let Some(event) = srv.poll_event() {
            log_server(event);
        }
        let now = Instant::now();
        for p in &mut peers {
            p.driver
                .pump(Duration::ZERO)
                .map_err(|e| CliError::io("peer socket failed", &e))?;
            peer::step(&mut p.driver, &mut p.script, now);
            while let Some(line) = p.script.poll_line() {
                out(&format!("[{}] {}", p.name, line.text));
            }
        }
        if now >= rtt_due {
            rtt_due = now + RTT_EVERY;
            for p in &peers {
                log_rtts(p);
            }
        }
    }
    let mut ok = true;
    for p in &mut peers {
        p.driver.endpoint_mut().disconnect(Instant::now(), 0);
        let _ = p.driver.pump(Duration::ZERO);
        if let Some(why) = p.script.failure() {
            out(&format!("[{}] failed: {why}", p.name));
        }
        out(&format!("[{}] {}", p.name, p.script.summary()));
        ok &= p.script.ok();
    }
    let elapsed = start.elapsed().as_secs_f64();
    if ok {
        out(&format!(
            "demo complete in {elapsed:.2} s: every peer got all {} messages from the others, in order",
            args.count
        ));
        Ok(ExitCode::SUCCESS)
    } else {
        out(&format!("demo FAILED after {elapsed:.2} s"));
        Ok(ExitCode::FAILURE)
    }
}

fn log_server(event: ServerEvent) {
    match event {
        ServerEvent::ClientJoined { host_id, addr, .. } => {
            out(&format!("[server] {host_id} connected from {addr}"));
        }
        ServerEvent::ClientLeft { host_id, reason } => {
            let reason = describe::client_left(reason);
            out(&format!("[server] {host_id} left: {reason}"));
        }
        _ => {}
    }
}

fn log_rtts(p: &DemoPeer) {
    if p.script.is_finished() {
        return;
    }
    let parts: Vec<String> = p
        .script
        .members()
        .filter_map(|(h, name)| {
            let stats = p.driver.endpoint().peer_stats(h)?;
            let who = name.map_or_else(|| h.to_string(), str::to_owned);
            let rtt = stats.rtt.as_secs_f64() * 1000.0;
            let path = describe::path(stats.path);
            Some(format!("{who} {rtt:.2} ms via {path}"))
        })
        .collect();
    if !parts.is_empty() {
        out(&format!("[{}] rtt: {}", p.name, parts.join(", ")));
    }
}
