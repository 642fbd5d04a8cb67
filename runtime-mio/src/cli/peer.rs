//! `pierce peer`: the scripted peer ([`Script`]) on a mio [`Driver`].

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pierce_core::Client;

use super::args::PeerArgs;
use super::script::{Script, execute};
use super::{CliError, Setup, lan_candidates, out, signal};
use crate::{Driver, os_seed};

/// Longest the loop sleeps before looking at the signal flag and the script again.
const TICK: Duration = Duration::from_millis(50);

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
    let json = args.json;
    let server = args.connect.server;
    let mut script = Script::new(args, &setup.config, start)?;
    let seed = os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
    let mut client = Client::new(Arc::new(setup.config.clone()), seed, start)
        .map_err(|e| CliError::usage(format!("invalid client settings: {e}")))?;
    client
        .connect(start, server, &setup.token)
        .map_err(|e| CliError::usage(e.to_string()))?;
    let mut driver = Driver::bind(setup.bind, client)
        .map_err(|e| CliError::io(&format!("cannot bind {}", setup.bind), &e))?;
    if setup.config.direct_paths {
        // Peers behind the same NAT reach each other on these; sent once connected.
        let lan = lan_candidates(driver.local_addr());
        let _ = driver.endpoint_mut().set_local_addresses(start, &lan);
    }
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
    // Leave politely: the server tells the others at once instead of after an idle timeout.
    driver.endpoint_mut().disconnect(Instant::now(), 0);
    let _ = driver.pump(Duration::ZERO);
    Ok(finish(&script))
}

/// Feeds the client's events to the script and runs the commands it asks for.
pub fn step(driver: &mut Driver<Client>, script: &mut Script, now: Instant) {
    while let Some(event) = driver.poll_event() {
        script.handle_event(now, event);
    }
    script.handle_timeout(now);
    while let Some(command) = script.poll_command(now) {
        let reply = execute(driver.endpoint_mut(), now, command);
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
