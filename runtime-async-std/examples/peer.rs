//! The scripted peer of `pierce peer`, on async-std: the same flags, the same output, the same
//! exit status, against a `pierce server` (see `pierce peer --help` for the run and the summary).
//!
//! ```sh
//! cargo run -p pierce-mio --bin pierce -- server --listen 127.0.0.1:7777
//! cargo run -p pierce-mio --bin pierce -- peer --server 127.0.0.1:7777 --room demo --peers 1 &
//! cargo run -p pierce-async-std --example peer -- --server 127.0.0.1:7777 --room demo --peers 1
//! ```
//!
//! The scripted peer itself ([`Script`]) does no I/O: it takes events and replies and asks for
//! commands. This file is the async-std half: a [`ClientHandle`] whose driver task owns the
//! socket, and a loop that awaits the next event or the script's next deadline, whichever comes
//! first. `pierce peer` runs the same script on a mio `Driver`. With `--host` the peer is a
//! host's own client (`pierce_async_std::spawn_host`). Ctrl-C ends the process at once (no
//! summary); `pierce peer` catches it.
#![allow(clippy::disallowed_methods)] // an application reads the clock

use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_std::future::timeout;
use pierce_async_std::{
    ClientHandle, HandleError, ServerOptions, os_seed, spawn_client, spawn_host,
};
use pierce_core::{RoomsConfig, SecretKey, ServerConfig};
use pierce_mio::cli::args::{PeerArgs, parse_peer_args};
use pierce_mio::cli::json::Obj;
use pierce_mio::cli::script::{Command, Reply, Script};
use pierce_mio::cli::{CliError, Setup, lan_candidates, out};

/// Longest the loop waits for an event before asking the script again.
const TICK: Duration = Duration::from_millis(50);

fn main() -> ExitCode {
    let args = parse_peer_args("peer");
    match async_std::task::block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("peer: error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

async fn run(args: PeerArgs) -> Result<ExitCode, CliError> {
    let start = Instant::now();
    let mut setup = Setup::new(&args.connect, args.timeout, !args.relay_only)?;
    setup.config.transport = args.transport();
    setup.config.private = args.private;
    setup.config.max_datagram_size = args.max_datagram_size;
    setup.config.spare_room_copies = !args.no_copies;
    if args.relay_only_room {
        // (ClientHandle has no join_room_with yet: refuse rather than create a normal room.)
        return Err(CliError::usage(
            "--relay-only-room: only `pierce peer` has it".to_owned(),
        ));
    }
    if args.connect.servers.len() > 1 {
        // (ClientHandle::connect takes one address: refuse rather than use only the first.)
        return Err(CliError::usage(
            "--server more than once: only `pierce peer` takes a list".to_owned(),
        ));
    }
    let (json, server) = (args.json, args.connect.server());
    let deadline = start + args.timeout;
    let (host, secret) = (args.host, args.connect.token_secret.clone());
    let mut script = Script::new(args, &setup.config, start)?;
    let (client, hosting) = if host {
        // A listen server: the rooms server and this peer on one socket and one driver.
        let key = os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
        let mut config = ServerConfig::new(SecretKey::from_bytes(key));
        config.rooms = Some(RoomsConfig::default());
        config.token_secret = secret.map(String::into_bytes);
        let options = ServerOptions::default();
        let (server_handle, client) =
            spawn_host(server, config, setup.config.clone(), &setup.token, options)
                .await
                .map_err(|e| match e.kind() {
                    io::ErrorKind::InvalidInput => CliError::usage(format!(
                        "--host --server {server}: {e} (name the address the other peers reach)"
                    )),
                    _ => CliError::io(&format!("cannot listen on {server}"), &e),
                })?;
        let addr = server_handle.local_addr();
        let key = server_handle.public_key().to_hex();
        if json {
            out(&Obj::event("hosting")
                .str("addr", &addr.to_string())
                .opt_str(
                    "tcp_addr",
                    server_handle.tcp_addr().map(|a| a.to_string()).as_deref(),
                )
                .str("public_key", &key)
                .finish());
        } else {
            out(&format!("hosting at {addr}, public key {key}"));
        }
        // The server's events are not the script's, but they must be read: a full channel
        // would hold up the client's too.
        let drain = server_handle.clone();
        async_std::task::spawn(async move { while drain.next_event().await.is_some() {} });
        (client, Some(server_handle))
    } else {
        let client = spawn_client(setup.bind, setup.config.clone())
            .await
            .map_err(|e| CliError::io(&format!("cannot bind {}", setup.bind), &e))?;
        if setup.config.direct_paths {
            // Peers behind the same NAT reach each other on these; sent once connected.
            let lan = lan_candidates(client.local_addr());
            let _ = core(client.set_local_addresses(&lan).await)?;
        }
        core(client.connect(server, &setup.token).await)?
            .map_err(|e| CliError::usage(e.to_string()))?;
        (client, None)
    };
    while !script.is_finished() {
        let wait = script
            .poll_timeout()
            .saturating_duration_since(Instant::now());
        match timeout(wait.min(TICK), client.next_event()).await {
            Ok(Some(event)) => script.handle_event(Instant::now(), event),
            Ok(None) => return Err(CliError::failed("the client driver stopped".to_owned())),
            Err(_) => {} // the script's deadline (or the tick) came first
        }
        let now = Instant::now();
        script.handle_timeout(now);
        while let Some(command) = script.poll_command(now) {
            let reply = execute(&client, command).await?;
            script.handle_reply(now, reply);
        }
        while let Some(line) = script.poll_line() {
            if let Some(l) = line.render(json) {
                out(l);
            }
        }
    }
    if let Some(server) = hosting {
        // A host serves on until the others left: they may still wait for its last
        // acknowledgements, and their sessions end with it.
        while Instant::now() < deadline && server.clients().await.map_or(0, |c| c.len()) > 1 {
            async_std::task::sleep(TICK).await;
        }
    }
    leave(&client).await;
    if let Some(why) = script.failure() {
        eprintln!("peer {}: {why}", script.name());
    }
    out(&script.summary());
    Ok(if script.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs one of the script's commands through the handle.
async fn execute(client: &ClientHandle, command: Command) -> Result<Reply, CliError> {
    Ok(match command {
        Command::JoinRoom {
            name,
            password,
            max_members,
            relay_only: _, // refused in `run`
        } => Reply::Joined(core(
            client.join_room(&name, &password, true, max_members).await,
        )?),
        Command::Send {
            to,
            channel,
            payload,
        } => Reply::Sent(core(client.send(to, channel, payload).await)?),
        Command::Stats(peer) => Reply::Stats(
            client
                .peer_stats(peer)
                .await
                .map_err(|e| CliError::io("the client driver stopped", &e))?,
        ),
    })
}

/// The core's answer, or a run-ending error if the driver is gone.
fn core<T, E>(result: Result<T, HandleError<E>>) -> Result<Result<T, E>, CliError> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(HandleError::Core(e)) => Ok(Err(e)),
        Err(HandleError::Stopped(e)) => Err(CliError::io("the client driver stopped", &e)),
    }
}

/// Closes the session and makes sure the Close left: the driver sends what a command queued
/// before it takes the next command, so the answer to a second one means the first went out.
async fn leave(client: &ClientHandle) {
    let _ = client.disconnect(0).await;
    let _ = client.stats().await;
}
