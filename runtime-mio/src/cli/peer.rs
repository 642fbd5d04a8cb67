//! `pierce peer`: the scripted peer ([`Script`]) on a mio [`Driver`]; with `--host`, the peer
//! is a [`Host`]'s own client (the rooms server and this peer on one socket).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pierce_core::{Client, ClientEvent, Endpoint, Events, Host, HostEvent, SecretKey};

use super::args::PeerArgs;
use super::json::Obj;
use super::script::{Script, execute};
use super::{CliError, Setup, lan_candidates, out, server, signal};
use crate::{Driver, os_seed};

/// Longest the loop sleeps before looking at the signal flag and the script again.
const TICK: Duration = Duration::from_millis(50);

/// What a scripted peer runs on: a client, or a host's own client.
pub trait PeerEndpoint: Endpoint + Events {
    /// The peer's client.
    fn client(&mut self) -> &mut Client;
    /// The peer's client's part of an event, if it is one.
    fn client_event(event: Self::Event) -> Option<ClientEvent>;
    /// Sessions this endpoint serves for other peers (a host's), which its leaving would end.
    fn serving(&self) -> usize {
        0
    }
}

impl PeerEndpoint for Client {
    fn client(&mut self) -> &mut Client {
        self
    }
    fn client_event(event: ClientEvent) -> Option<ClientEvent> {
        Some(event)
    }
}

impl PeerEndpoint for Host {
    fn client(&mut self) -> &mut Client {
        self.client_mut()
    }
    fn client_event(event: HostEvent) -> Option<ClientEvent> {
        match event {
            HostEvent::Client(e) => Some(e),
            HostEvent::Server(_) => None,
        }
    }
    fn serving(&self) -> usize {
        self.server().clients().count().saturating_sub(1)
    }
}

/// Runs `pierce peer`: prints the events and the summary, exits 0 if the run was ok.
///
/// # Errors
/// Bad flags (before any network traffic), a failed bind or a socket failure. A run that fails
/// on the network (unreachable server, timeout, incomplete delivery) is not an error here: it
/// prints its summary with `"ok":false` and exits 1.
pub fn run(args: PeerArgs) -> Result<ExitCode, CliError> {
    let start = Instant::now();
    let mut setup = Setup::new(&args.connect, args.timeout, !args.relay_only)?;
    setup.config.transport = args.transport();
    setup.config.private = args.private;
    setup.config.port_mapping = !args.no_port_mapping;
    setup.config.spare_room_copies = !args.no_copies;
    setup.config.stun_servers = args.stun.clone();
    setup.config.max_datagram_size = args.max_datagram_size;
    let json = args.json;
    let deadline = start + args.timeout;
    let (server, host, offload) = (args.connect.server(), args.host, !args.no_offload);
    let servers = args.connect.servers.clone();
    let secret = args.connect.token_secret.clone();
    let script = Script::new(args, &setup.config, start)?;
    let seed = os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
    if host {
        let socket = crate::bind_udp(server)
            .map_err(|e| CliError::io(&format!("cannot listen on {server}"), &e))?;
        let addr = socket
            .local_addr()
            .map_err(|e| CliError::io("socket address", &e))?;
        let key = os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
        let rooms =
            server::rooms_server(SecretKey::from_bytes(key), secret.map(String::into_bytes))?;
        let public_key = rooms.public_key().to_hex();
        let host =
            Host::new(rooms, setup.config, seed, start, addr, &setup.token).map_err(|e| {
                CliError::usage(format!(
                    "--host --server {server}: {e} (name the address the other peers reach)"
                ))
            })?;
        let mut driver = Driver::from_std(socket, host)
            .map_err(|e| CliError::io(&format!("cannot listen on {server}"), &e))?;
        driver.set_offload(offload);
        // Peers whose UDP is blocked reach the host over TCP, as any server.
        let tcp = driver.listen_tcp().ok();
        if json {
            out(&Obj::event("hosting")
                .str("addr", &addr.to_string())
                .opt_str("tcp_addr", tcp.map(|a| a.to_string()).as_deref())
                .str("public_key", &public_key)
                .finish());
        } else {
            out(&format!("hosting at {addr}, public key {public_key}"));
        }
        drive(driver, script, json, deadline)
    } else {
        let mut client = Client::new(Arc::new(setup.config.clone()), seed, start)
            .map_err(|e| CliError::usage(format!("invalid client settings: {e}")))?;
        client
            .connect_any(start, &servers, &setup.token)
            .map_err(|e| CliError::usage(e.to_string()))?;
        let mut driver = Driver::bind(setup.bind, client)
            .map_err(|e| CliError::io(&format!("cannot bind {}", setup.bind), &e))?;
        driver.set_offload(offload);
        if setup.config.direct_paths {
            // Peers behind the same NAT reach each other on these; sent once connected.
            let lan = lan_candidates(driver.local_addr());
            let _ = driver.endpoint_mut().set_local_addresses(start, &lan);
        }
        if setup.config.port_mapping {
            // The gateway is asked to forward the socket's port (PCP, else NAT-PMP).
            let gateway = crate::default_gateway().map(std::net::IpAddr::V4);
            driver.endpoint_mut().set_gateway(start, gateway);
        }
        drive(driver, script, json, deadline)
    }
}

/// Runs the script on `driver` until it finishes or a signal ends it; then leaves. A host
/// serves on until the other peers have left (or `deadline`, or a signal): they may still be
/// waiting for its last acknowledgements, and their session ends with its process.
fn drive<E: PeerEndpoint>(
    mut driver: Driver<E>,
    mut script: Script,
    json: bool,
    deadline: Instant,
) -> Result<ExitCode, CliError> {
    signal::install().map_err(|e| CliError::io("installing signal handlers", &e))?;
    while !script.is_finished() {
        let wait = script
            .poll_timeout()
            .saturating_duration_since(Instant::now());
        driver
            .pump(wait.min(TICK))
            .map_err(|e| CliError::io("socket failed", &e))?;
        step(&mut driver, &mut script, Instant::now());
        if signal::received() {
            script.interrupt();
        }
        while let Some(line) = script.poll_line() {
            if let Some(l) = line.render(json) {
                out(l);
            }
        }
    }
    while driver.endpoint().serving() > 0 && !signal::received() && Instant::now() < deadline {
        driver
            .pump(TICK)
            .map_err(|e| CliError::io("socket failed", &e))?;
        while driver.poll_event().is_some() {}
    }
    // Leave politely: the server tells the others at once instead of after an idle timeout.
    driver.endpoint_mut().client().disconnect(Instant::now(), 0);
    let _ = driver.pump(Duration::ZERO);
    Ok(finish(&script))
}

/// Feeds the client's events to the script and runs the commands it asks for.
pub fn step<E: PeerEndpoint>(driver: &mut Driver<E>, script: &mut Script, now: Instant) {
    while let Some(event) = driver.poll_event() {
        if let Some(event) = E::client_event(event) {
            if matches!(event, ClientEvent::Connected { .. }) {
                // Which of the --server list welcomed it.
                if let Some(server) = driver.endpoint_mut().client().server_addr() {
                    script.handle_server(server);
                }
            }
            script.handle_event(now, event);
        }
    }
    script.handle_timeout(now);
    while let Some(command) = script.poll_command(now) {
        let reply = execute(driver.endpoint_mut().client(), now, command);
        script.handle_reply(now, reply);
    }
}

/// Prints the failure (stderr) and the summary (stdout); the exit status.
pub fn finish(script: &Script) -> ExitCode {
    if let Some(why) = script.failure() {
        eprintln!("pierce: peer {}: {why}", script.name());
    }
    out(&script.summary());
    if script.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
