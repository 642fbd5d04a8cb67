//! `pierce server`: the rendezvous/relay server with the rooms policy, until SIGINT, or
//! SIGTERM and a drain.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pierce_core::{
    HostId, RoomsConfig, SecretKey, Server, ServerConfig, ServerEvent, ServerStats, SocketId,
};

use super::args::ServerArgs;
use super::config::ServerSettings;
use super::json::{self, Obj};
use super::ops::{self, AdminRequest, Ops, Reply, Snapshot};
use super::{CliError, cluster, describe, out, signal};
use crate::{Driver, DriverStats, RelayThreads, os_seed, unix_time};

/// Longest the loop waits before looking at the signal flag again.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Close code sent to every client when the server stops (a clean shutdown, not a kick).
pub const SHUTDOWN_CODE: u16 = 0;

/// A server with the rooms policy: what `pierce server` and `pierce demo` run.
///
/// # Errors
/// No OS entropy, or a configuration the core refuses.
pub fn rooms_server(key: SecretKey, token_secret: Option<Vec<u8>>) -> Result<Server, CliError> {
    rooms_server_with(key, token_secret, 0, false)
}

/// [`rooms_server`] with its relay on `relay_threads` threads of their own (0: on its own),
/// every room relay-only if `relay_only_rooms` (`RoomsConfig::relay_only`).
///
/// # Errors
/// As [`rooms_server`].
pub fn rooms_server_with(
    key: SecretKey,
    token_secret: Option<Vec<u8>>,
    relay_threads: u16,
    relay_only_rooms: bool,
) -> Result<Server, CliError> {
    let mut config = ServerConfig::new(key);
    let mut rooms = RoomsConfig::default();
    rooms.relay_only = relay_only_rooms;
    config.rooms = Some(rooms);
    config.token_secret = token_secret;
    config.relay_shards = relay_threads;
    server_with(config)
}

/// A server with `config`, seeded from the OS.
fn server_with(config: ServerConfig) -> Result<Server, CliError> {
    let seed = os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
    Server::new(Arc::new(config), seed, Instant::now(), unix_time())
        .map_err(|e| CliError::failed(format!("invalid server settings: {e}")))
}

/// Receive and send buffer the server's socket asks for.
const SOCKET_BUFFER: usize = 4 << 20;

/// Runs `pierce server` (or prints its settings, with `--print-config`).
///
/// # Errors
/// Bad settings (flags or --config's file), a bad key file, a failed bind, or a socket
/// failure while serving.
pub fn run(args: &ServerArgs) -> Result<ExitCode, CliError> {
    let settings = ServerSettings::load(args)?;
    if args.print_config {
        out(settings.to_toml().trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let listen = settings.listen()?;
    settings.install_logging()?;
    let key = settings.load_key()?;
    // One thread: it does everything. More: that many relay threads, and the server's own.
    let relay_threads = settings.relay_threads();
    let mut config = settings.server_config(key);
    let cannot_listen = |e: &io::Error| {
        let with = if relay_threads > 0 {
            format!(" with {relay_threads} relay threads (use --threads 1 without them)")
        } else {
            String::new()
        };
        CliError::io(&format!("cannot listen on {listen}{with}"), e)
    };
    let (socket, relay_sockets) = if relay_threads > 0 {
        let mut group =
            crate::bind_relay_group(listen, relay_threads).map_err(|e| cannot_listen(&e))?;
        let primary = group.remove(0);
        (primary, group)
    } else {
        let socket = crate::bind_udp(listen).map_err(|e| cannot_listen(&e))?;
        (socket, Vec::new())
    };
    // 4 MiB each way (what coturn asks for): relayed bursts must not overflow the default
    // ~208 KiB between two wakeups. Best effort: a refusal leaves the default.
    for s in std::iter::once(&socket).chain(&relay_sockets) {
        let _ = crate::set_socket_buffers(s, SOCKET_BUFFER);
    }
    if let Some(c) = &mut config.cluster {
        // A node on port 0 advertises the port it got (unless told what to advertise).
        let bound = socket.local_addr().map_err(|e| cannot_listen(&e))?;
        if settings.cluster.advertise.is_none() {
            c.advertise = SocketAddr::new(c.advertise.ip(), bound.port());
            c.advertise_tcp = Some(c.advertise);
        }
    }
    let server = server_with(config)?;
    let public_key = server.public_key().to_hex();
    let mut driver = Driver::from_std(socket, server).map_err(|e| cannot_listen(&e))?;
    driver.set_offload(!settings.no_offload);
    let mut relays = if relay_sockets.is_empty() {
        None
    } else {
        let r = RelayThreads::start(&mut driver, relay_sockets)
            .map_err(|e| CliError::io("starting the relay threads", &e))?;
        Some(r)
    };
    let alt_addrs = match settings.alt_listen {
        Some(alt) => enable_discovery(&mut driver, alt)?,
        None => Vec::new(),
    };
    // TCP at the same address, for clients whose network blocks UDP. A server that cannot
    // listen there still serves UDP: warned about, and the ready line says `null`.
    let tcp_addr = match driver.listen_tcp() {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!(
                "pierce: warning: cannot listen on TCP {} ({e}); clients that cannot use UDP \
                 will not reach this server",
                driver.local_addr()
            );
            None
        }
    };
    let mut ops = start_ops(&settings, &mut driver)?;
    let mut link = cluster::Link::start(&settings.cluster, &mut driver)?;
    if let Some(id) = &settings.cluster.node_id {
        if link.is_some() {
            json::set_node(id);
        }
    }
    let metrics_addr = ops.as_ref().map(Ops::local_addr);
    signal::install().map_err(|e| CliError::io("installing signal handlers", &e))?;
    let addr = driver.local_addr();
    if settings.json {
        let ready = Obj::event("listening")
            .str("addr", &addr.to_string())
            .opt_str("tcp_addr", tcp_addr.map(|a| a.to_string()).as_deref())
            .opt_str(
                "metrics_addr",
                metrics_addr.map(|a| a.to_string()).as_deref(),
            )
            .str("public_key", &public_key)
            .int("relay_threads", u64::from(relay_threads));
        out(&with_addr_array(ready, "alt_addrs", &alt_addrs));
    } else {
        let tcp = match tcp_addr {
            Some(a) if a == addr => " (UDP and TCP)".to_owned(),
            Some(a) => format!(" (UDP; TCP on {a})"),
            None => " (UDP only)".to_owned(),
        };
        out(&format!(
            "listening on {addr}{tcp}, public key {public_key}"
        ));
        if let Some(m) = metrics_addr {
            out(&format!(
                "metrics on http://{m}/metrics (and /healthz, /readyz, /admin)"
            ));
        }
        if relay_threads > 0 {
            out(&format!(
                "relaying on {relay_threads} threads of their own (sessions, handshakes and \
                 groups on one more)"
            ));
        }
        if let Some((alt, crossings)) = alt_addrs.split_first() {
            let also: Vec<String> = crossings.iter().map(ToString::to_string).collect();
            let also = if also.is_empty() {
                String::new()
            } else {
                format!(", also answering STUN on {}", also.join(", "))
            };
            out(&format!(
                "NAT behaviour discovery: alternate address {alt}{also}"
            ));
        }
    }
    let mut clients = BTreeSet::new();
    let every = settings.stats_every_s.map(Duration::from_secs);
    let mut next_stats = every.map(|e| Instant::now() + e);
    let drain_within = settings.drain_timeout;
    // When a drain (SIGTERM, or `POST /admin/drain`) ends: then whoever is left is
    // disconnected and the command exits 0. SIGINT, or a second signal, stops at once.
    let mut drain_deadline: Option<Instant> = None;
    while !signal::stop_now() {
        driver
            .pump(TICK)
            .map_err(|e| CliError::io("server socket failed", &e))?;
        if let Some(l) = &mut link {
            l.exchange(&mut driver, Instant::now());
        }
        if let Some(r) = &mut relays {
            r.exchange(&mut driver)
                .map_err(|e| CliError::io("relay failed", &e))?;
        }
        while let Some(event) = driver.poll_event() {
            if let (Some(_), ServerEvent::ClientJoined { host_id, .. }) = (drain_deadline, &event) {
                // Draining: the core refuses new sessions; one that was half open when the
                // drain began and completes anyway is closed at once.
                let _ = (driver.endpoint_mut()).disconnect(Instant::now(), *host_id, SHUTDOWN_CODE);
            }
            log(settings.json, &mut clients, event);
        }
        let now = Instant::now();
        // (A SIGINT sets its flag before the count: `received` without `stop_now` is SIGTERM.)
        if signal::received() && !signal::stop_now() && drain_deadline.is_none() {
            let ops = ops.as_ref();
            let started = start_drain(settings.json, &mut driver, ops, now, drain_within);
            drain_deadline = Some(started);
        }
        if let (Some(at), Some(every)) = (next_stats, every) {
            if now >= at {
                out(&stats_line(settings.json, &driver, relays.as_ref()));
                next_stats = Some(next_stats_at(at, now, every));
            }
        }
        if let Some(ops) = &mut ops {
            if ops.publish_due(now) {
                let draining = drain_deadline.is_some();
                ops.publish(now, snapshot(&driver, relays.as_ref(), draining));
            }
            while let Some(command) = ops.next_command() {
                let reply = match &command.request {
                    AdminRequest::Drain => {
                        let deadline = *drain_deadline.get_or_insert_with(|| {
                            start_drain(settings.json, &mut driver, Some(ops), now, drain_within)
                        });
                        drain_reply(&clients, deadline.saturating_duration_since(now))
                    }
                    request => ops::answer(driver.endpoint_mut(), now, request),
                };
                command.answer(reply);
            }
        }
        if let Some(deadline) = drain_deadline {
            if now >= deadline || clients.is_empty() {
                break;
            }
        }
    }
    shut_down(&mut driver, &clients);
    if let Some(l) = link.take() {
        l.leave();
    }
    let relay_stats = relays.as_ref().map(RelayThreads::stats);
    if let Some(r) = relays.take() {
        r.stop().map_err(|e| CliError::io("relay failed", &e))?;
    }
    out(&stats_line_with(settings.json, &driver, relay_stats));
    if settings.json {
        out(&Obj::event("stopped")
            .int("clients", clients.len() as u64)
            .finish());
    } else {
        out(&format!("stopped; told {} clients", clients.len()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The ops listener of `--metrics`, with the admin endpoints if `--admin-token-file` is
/// given; `None` without `--metrics`.
///
/// # Errors
/// A usage error for a token file that cannot be used, or `--admin-token-file` without
/// `--metrics`; a failed run if the address cannot be bound.
fn start_ops(
    settings: &ServerSettings,
    driver: &mut Driver<Server>,
) -> Result<Option<Ops>, CliError> {
    let token = match &settings.admin_token_file {
        Some(path) => Some(ops::load_token(path)?),
        None => None,
    };
    let Some(addr) = settings.metrics else {
        if token.is_some() {
            return Err(CliError::usage(
                "--admin-token-file needs --metrics IP:PORT (the admin endpoints are on its \
                 listener)"
                    .to_owned(),
            ));
        }
        return Ok(None);
    };
    if token.is_some() && !addr.ip().to_canonical().is_loopback() {
        eprintln!(
            "pierce: warning: --metrics {addr} is not a loopback address and the admin \
             endpoints are on: anyone who can reach it may try the token (put it behind a \
             firewall or a TLS proxy)"
        );
    }
    let waker = driver
        .waker()
        .map_err(|e| CliError::io("creating the loop's waker", &e))?;
    Ops::start(addr, token, waker)
        .map(Some)
        .map_err(|e| CliError::io(&format!("cannot listen on --metrics {addr}"), &e))
}

/// Starts a drain (SIGTERM or `POST /admin/drain`): the core refuses new sessions and rooms
/// and tells every client it has `within` left, `/readyz` answers 503 from now on, the event
/// is logged; returns when the drain ends.
fn start_drain(
    json: bool,
    driver: &mut Driver<Server>,
    ops: Option<&Ops>,
    now: Instant,
    within: Duration,
) -> Instant {
    if let Some(ops) = ops {
        ops.set_draining();
    }
    driver.endpoint_mut().drain(now, within);
    if json {
        out(&Obj::event("draining")
            .int("within_ms", within.as_millis() as u64)
            .finish());
    } else {
        out(&format!(
            "draining: no new clients; the rest are disconnected in {} ms",
            within.as_millis()
        ));
    }
    now + within
}

/// `POST /admin/drain`'s answer (the same for a drain already under way).
fn drain_reply(clients: &BTreeSet<HostId>, left: Duration) -> Reply {
    Reply::json(
        202,
        Obj::new()
            .bool("draining", true)
            .int("clients", clients.len() as u64)
            .int("deadline_in_ms", left.as_millis() as u64)
            .finish(),
    )
}

/// What `GET /metrics` shows: the counters as the stats line adds them up.
fn snapshot(driver: &Driver<Server>, relays: Option<&RelayThreads>, draining: bool) -> Snapshot {
    let (stats, driver_stats, relayed_by_threads) = totals(driver, relays.map(RelayThreads::stats));
    Snapshot {
        stats,
        driver: driver_stats,
        relayed_by_threads,
        relay_threads: relays.map_or(0, |r| u16::try_from(r.len()).unwrap_or(u16::MAX)),
        draining,
    }
}

/// When the stats line after the one due `at` and printed at `now` is due: one period later,
/// or one period from now if the loop fell a whole period behind (no burst of lines to catch
/// up). No `now - every`: an `Instant` cannot go below its origin on every platform (on
/// Windows it counts from boot), and --stats-every may be a day.
fn next_stats_at(at: Instant, now: Instant, every: Duration) -> Instant {
    if now.saturating_duration_since(at) >= every {
        now + every
    } else {
        at + every
    }
}

/// Turns on NAT behaviour discovery with `alt` as the alternate address and opens its sockets;
/// returns their addresses, the alternate first (the OTHER-ADDRESS clients are told), then the
/// crossings with the primary address (IP1:P2, IP2:P1) when the IPs differ.
///
/// # Errors
/// A primary address discovery cannot use (unspecified IP, another family), or the alternate
/// address cannot be bound. A crossing that cannot be bound is only warned about: discovery
/// works without it, minus the tests that need it.
fn enable_discovery(
    driver: &mut Driver<Server>,
    alt: SocketAddr,
) -> Result<Vec<SocketAddr>, CliError> {
    let primary = driver.local_addr();
    if primary.ip().is_unspecified() {
        return Err(CliError::usage(format!(
            "--alt-listen needs --listen with a specific IP address, not {}: NAT discovery \
             answers from known addresses",
            primary.ip()
        )));
    }
    driver
        .endpoint_mut()
        .enable_nat_discovery(primary, alt)
        .map_err(|e| CliError::usage(format!("--alt-listen {alt} with --listen {primary}: {e}")))?;
    // One pump opens the alternate socket, then its crossings once its port is known.
    driver
        .pump(Duration::ZERO)
        .map_err(|e| CliError::io("server socket failed", &e))?;
    let open_error = |driver: &Driver<Server>, id: SocketId| match driver.last_open_error() {
        Some((failed, e)) if failed == id => format!(": {e}"),
        _ => String::new(),
    };
    let Some(bound) = driver.socket_addr(ALTERNATE) else {
        let why = open_error(driver, ALTERNATE);
        return Err(CliError::failed(format!("cannot listen on {alt}{why}")));
    };
    let mut addrs = vec![bound];
    if bound.ip() != primary.ip() {
        let crossings = [
            (SocketId(2), SocketAddr::new(primary.ip(), bound.port())),
            (SocketId(3), SocketAddr::new(bound.ip(), primary.port())),
        ];
        for (id, want) in crossings {
            match driver.socket_addr(id) {
                Some(a) => addrs.push(a),
                None => eprintln!(
                    "pierce: warning: cannot listen on {want}{} (NAT discovery goes on \
                     without it: clients may see some behaviour as unknown)",
                    open_error(driver, id)
                ),
            }
        }
    }
    Ok(addrs)
}

/// The core's id for the alternate discovery socket. The server numbers its discovery sockets
/// 1 (alternate), 2 (IP1:P2) and 3 (IP2:P1), in the order it asks for them.
const ALTERNATE: SocketId = SocketId(1);

/// `obj` finished with one more member: an array of addresses as strings. (Addresses print as
/// digits, dots, colons and brackets: nothing to escape.)
fn with_addr_array(obj: Obj, key: &str, addrs: &[SocketAddr]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let mut line = obj.finish();
    line.pop(); // the closing brace
    line.push_str(&format!(",\"{key}\":[{}]}}", items.join(",")));
    line
}

/// The server's counters since start, as one line: the core's (sessions, groups, traffic,
/// relay, handshakes, drops by reason), the socket's errors and the process's allocations
/// (read first, so a line's own allocations count in the next; 0 unless the binary installs
/// [`crate::CountingAllocator`], as `pierce` does).
fn stats_line(json: bool, driver: &Driver<Server>, relays: Option<&RelayThreads>) -> String {
    stats_line_with(json, driver, relays.map(RelayThreads::stats))
}

/// [`stats_line`] with the relay threads' counters taken already.
fn stats_line_with(
    json: bool,
    driver: &Driver<Server>,
    relays: Option<(ServerStats, DriverStats)>,
) -> String {
    let allocations = crate::CountingAllocator::allocations();
    let (s, d, by_threads) = totals(driver, relays);
    let drops: Vec<(&str, u64)> = (s.dropped.by_reason().into_iter())
        .filter(|(_, n)| *n > 0)
        .collect();
    if json {
        let by_reason = drops
            .iter()
            .fold(Obj::new(), |o, (reason, n)| o.int(reason, *n));
        Obj::event("stats")
            .int("clients", s.clients)
            .int("half_open", s.half_open)
            .int("groups", s.groups)
            .int("rooms", s.rooms)
            .int("pairs", s.pairs)
            .int("datagrams_in", s.io.datagrams_in)
            .int("bytes_in", s.io.bytes_in)
            .int("datagrams_out", s.io.datagrams_out)
            .int("bytes_out", s.io.bytes_out)
            .int("relayed_packets", s.relayed_packets)
            .int("relayed_bytes", s.relayed_bytes)
            .int("relayed_by_relay_threads", by_threads)
            .int("relay_unreachable", s.relay_unreachable)
            .int("handshakes_completed", s.handshakes_completed)
            .int("handshakes_rejected", s.handshakes_rejected)
            .int("clients_timed_out", s.clients_timed_out)
            .int("sessions_resumed", s.sessions_resumed)
            .int("stun_answered", s.stun_answered)
            .int("resets_sent", s.resets_sent)
            .int("resets_limited", s.resets_limited)
            .int("dropped", s.dropped.total())
            .object("dropped_by_reason", by_reason)
            .int("send_errors", d.send_errors)
            .int("send_too_large", d.send_too_large)
            .int("streams_accepted", d.streams_accepted)
            .int("streams_evicted", s.streams_evicted)
            .int("streams_refused", d.streams_refused)
            .int("allocations", allocations)
            .finish()
    } else {
        let drops: Vec<String> = drops.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let drops = if drops.is_empty() {
            String::new()
        } else {
            format!(" ({})", drops.join(", "))
        };
        format!(
            "stats: {} clients ({} half-open), {} groups, {} pairs; in {} datagrams / {} B, \
             out {} / {} B; relayed {} / {} B; {} handshakes, {} rejected; dropped {}{drops}; \
             {} send errors; {allocations} allocations",
            s.clients,
            s.half_open,
            s.groups,
            s.pairs,
            s.io.datagrams_in,
            s.io.bytes_in,
            s.io.datagrams_out,
            s.io.bytes_out,
            s.relayed_packets,
            s.relayed_bytes,
            s.handshakes_completed,
            s.handshakes_rejected,
            s.dropped.total(),
            d.send_errors,
        )
    }
}

/// The server's counters with the relay threads' added: the core's, the sockets', and how
/// many packets the relay threads relayed (0 without them: the server's thread relays).
fn totals(
    driver: &Driver<Server>,
    relays: Option<(ServerStats, DriverStats)>,
) -> (ServerStats, DriverStats, u64) {
    let mut s = driver.endpoint().stats();
    let mut d = driver.stats();
    let mut by_threads = 0;
    if let Some((rs, rd)) = relays {
        s.add_forwarder(&rs);
        d.send_errors += rd.send_errors;
        d.send_too_large += rd.send_too_large;
        by_threads = rs.relayed_packets;
    }
    (s, d, by_threads)
}

/// Tells every client the server is going away, so they see a close instead of a timeout.
fn shut_down(driver: &mut Driver<Server>, clients: &BTreeSet<HostId>) {
    let now = Instant::now();
    for &c in clients {
        let _ = driver.endpoint_mut().disconnect(now, c, SHUTDOWN_CODE);
    }
    // One pump sends what the closes queued; nobody answers a close.
    let _ = driver.pump(Duration::ZERO);
}

fn log(json: bool, clients: &mut BTreeSet<HostId>, event: ServerEvent) {
    match event {
        ServerEvent::ClientJoined {
            host_id,
            addr,
            user_id,
        } => {
            clients.insert(host_id);
            if json {
                let mut o = Obj::event("client_joined")
                    .int("host_id", host_id.0)
                    .str("addr", &addr.to_string());
                if let Some(u) = user_id {
                    o = o.int("user_id", u);
                }
                out(&o.finish());
            } else {
                let user = user_id.map(|u| format!(" (user {u})")).unwrap_or_default();
                out(&format!("{host_id} connected from {addr}{user}"));
            }
        }
        ServerEvent::ClientLeft { host_id, reason } => {
            clients.remove(&host_id);
            let reason = describe::client_left(reason);
            if json {
                let o = Obj::event("client_left")
                    .int("host_id", host_id.0)
                    .str("reason", &reason);
                out(&o.finish());
            } else {
                out(&format!("{host_id} left: {reason}"));
            }
        }
        ServerEvent::NodeNumbered { number } => {
            if json {
                out(&Obj::event("node_registered").int("number", number).finish());
            } else {
                out(&format!(
                    "registered in the cluster as node number {number}"
                ));
            }
        }
        ServerEvent::DirectoryReachable { reachable } => {
            if json {
                out(&Obj::event("directory")
                    .bool("reachable", reachable)
                    .finish());
            } else if reachable {
                out("the cluster directory answers again; registered again");
            } else {
                out(
                    "the cluster directory does not answer: rooms here go on, joins of rooms \
                     elsewhere fail until it is back",
                );
            }
        }
        ServerEvent::ClientRedirected { host_id, to, room } => {
            if json {
                let o = Obj::event("client_redirected")
                    .int("host_id", host_id.0)
                    .str("to", &to.to_string())
                    .opt_str("room", room.as_deref());
                out(&o.finish());
            } else {
                let why =
                    room.map_or_else(|| "its rooms moved".to_owned(), |r| format!("room {r}"));
                out(&format!("{host_id} sent to {to} ({why})"));
            }
        }
        ServerEvent::ClientOffline { host_id } | ServerEvent::ClientOnline { host_id } => {
            let offline = matches!(event, ServerEvent::ClientOffline { .. });
            if json {
                let name = if offline {
                    "client_offline"
                } else {
                    "client_online"
                };
                out(&Obj::event(name).int("host_id", host_id.0).finish());
            } else if offline {
                out(&format!("{host_id} went quiet (recovery window open)"));
            } else {
                out(&format!("{host_id} is back"));
            }
        }
        _ => {}
    }
}

/// Largest key file read, in bytes. A key is 64 hex digits (a line of 65 bytes as written
/// here) or 32 raw bytes; room for generous whitespace, and far too little for anything else.
pub const MAX_KEY_FILE: u64 = 512;

/// Reads the server key from `path` (`--key-file`): 64 hex digits (surrounding whitespace
/// ignored) or 32 raw bytes. A missing file is created with a new key, as hex, readable by the
/// owner only.
///
/// Only a regular file of at most [`MAX_KEY_FILE`] bytes is read: the path is looked at
/// before it is opened (opening a FIFO would wait for a writer forever, and opening a device
/// can have effects), opened without blocking, looked at again through the open file (the path
/// may have changed in between), and read through a cap, so a file that grows meanwhile is
/// bounded too. A symbolic link to a regular file is followed for reading; a new key file is
/// created with `O_CREAT | O_EXCL`, which never follows a symbolic link (a dangling one is
/// refused, not written through).
///
/// # Errors
/// A usage error (exit status 2) naming `--key-file` and the path for anything wrong with
/// the file: not a regular file, too large, malformed, no permission, a missing directory. A
/// failed run (exit 1) for what the operator cannot fix by naming another file: no OS
/// entropy, an I/O failure while reading or writing.
pub fn load_or_create_key(path: &Path) -> Result<SecretKey, CliError> {
    let bad = |what: String| CliError::usage(format!("--key-file {}: {what}", path.display()));
    let io = |doing: &str, e: io::Error| {
        let message = format!("--key-file {}: cannot {doing}: {e}", path.display());
        if is_input_error(&e) {
            CliError::usage(message)
        } else {
            CliError::failed(message)
        }
    };
    match read_key_file(path) {
        Ok(KeyFile::Read(bytes)) => parse_key(&bytes).map(SecretKey::from_bytes).ok_or_else(|| {
            bad(format!(
                "expected 64 hex digits or 32 raw bytes, found {} bytes of something else",
                bytes.len()
            ))
        }),
        Ok(KeyFile::Missing) => {
            let bytes = os_seed().map_err(|e| CliError::io("reading OS entropy", &e))?;
            write_new_key(path, &bytes).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => bad(
                    "appeared while being created (another process, or a dangling symbolic \
                     link, which is not followed); not overwritten"
                        .to_owned(),
                ),
                _ => io("create it", e),
            })?;
            Ok(SecretKey::from_bytes(bytes))
        }
        Ok(KeyFile::Dangling) => Err(bad(
            "is a symbolic link to nothing; a new key is not created through a link (create \
             the file it names, or name a path without a link)"
                .to_owned(),
        )),
        Ok(KeyFile::NotRegular(kind)) => Err(bad(format!(
            "is {kind}, not a regular file; a key file holds 64 hex digits or 32 bytes"
        ))),
        Ok(KeyFile::TooLarge(len)) => Err(bad(format!(
            "{len} is too large for a key file (at most {MAX_KEY_FILE} bytes: 64 hex digits \
             or 32 raw bytes)"
        ))),
        Err(e) => Err(io("read it", e)),
    }
}

/// What was found at a `--key-file` path.
#[derive(Debug, PartialEq, Eq)]
enum KeyFile {
    /// A regular file of at most [`MAX_KEY_FILE`] bytes: its contents.
    Read(Vec<u8>),
    /// Nothing: a key is to be created.
    Missing,
    /// A symbolic link to nothing: creating through it would write wherever it points.
    Dangling,
    /// Something other than a regular file (what, for the message).
    NotRegular(&'static str),
    /// A regular file over [`MAX_KEY_FILE`]: its size (`"N bytes"`, `"more than N bytes"`).
    TooLarge(String),
}

fn read_key_file(path: &Path) -> io::Result<KeyFile> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(path).is_ok() => {
            return Ok(KeyFile::Dangling);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(KeyFile::Missing),
        Err(e) => return Err(e),
    };
    if let Some(found) = not_a_key_file(&meta) {
        return Ok(found);
    }
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // Should the path have become a FIFO or a terminal since the look: no waiting for a
        // writer, no controlling terminal. Neither flag changes reading a regular file.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file: File = options.open(path)?;
    if let Some(found) = not_a_key_file(&file.metadata()?) {
        return Ok(found);
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Ok(KeyFile::TooLarge(format!("more than {MAX_KEY_FILE} bytes")));
    }
    Ok(KeyFile::Read(bytes))
}

/// Why `meta` is not a key file to read, if it is not.
fn not_a_key_file(meta: &fs::Metadata) -> Option<KeyFile> {
    let kind = meta.file_type();
    if kind.is_dir() {
        return Some(KeyFile::NotRegular("a directory"));
    }
    if !kind.is_file() {
        return Some(KeyFile::NotRegular(special_kind(&kind)));
    }
    (meta.len() > MAX_KEY_FILE).then(|| KeyFile::TooLarge(format!("{} bytes", meta.len())))
}

#[cfg(unix)]
fn special_kind(kind: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &fs::FileType) -> &'static str {
    "a special file"
}

/// An I/O error the operator fixes by naming another path or fixing this one (exit 2), rather
/// than a failure of the machine (exit 1).
fn is_input_error(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    let kind = matches!(
        e.kind(),
        K::NotFound
            | K::PermissionDenied
            | K::AlreadyExists
            | K::NotADirectory
            | K::IsADirectory
            | K::ReadOnlyFilesystem
            | K::InvalidInput
    );
    #[cfg(unix)]
    let errno = matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENAMETOOLONG));
    #[cfg(not(unix))]
    let errno = false;
    kind || errno
}

fn parse_key(bytes: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim);
    if let Some(hex) = text.filter(|t| t.len() == 64) {
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        return Some(key);
    }
    bytes.try_into().ok()
}

/// Writes a new key file. `create_new` is `O_CREAT | O_EXCL`: it never overwrites a key
/// another process just wrote, and never follows a symbolic link (one planted at `path` makes
/// it fail). A file left half-written by a failure is removed: it was ours, and would be
/// refused as malformed on the next start.
fn write_new_key(path: &Path, key: &[u8; 32]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let written = writeln!(file, "{hex}").and_then(|()| file.sync_all());
    if written.is_err() {
        drop(file);
        let _ = fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_hex_or_raw_and_nothing_else() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
        let key = parse_key(hex.as_bytes()).expect("hex key");
        assert_eq!(key[..3], [0x00, 0x11, 0x22]);
        assert_eq!(key[31], 0xff);
        assert_eq!(parse_key(&[7u8; 32]), Some([7u8; 32]));
        assert_eq!(parse_key(b"too short"), None);
        assert_eq!(parse_key(&[b'g'; 64]), None);
        assert_eq!(parse_key(&[0u8; 33]), None);
    }

    #[test]
    fn a_missing_key_file_is_created_once_and_then_reused() {
        let dir = std::env::temp_dir().join(format!("pierce-key-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("server.key");
        let first = load_or_create_key(&path).expect("created");
        let second = load_or_create_key(&path).expect("read back");
        assert_eq!(first.public_key(), second.public_key());
        let text = fs::read_to_string(&path).expect("readable");
        assert_eq!(text.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(&path, b"not a key").expect("overwrite");
        let err = load_or_create_key(&path).expect_err("malformed");
        assert_eq!(err.code, 2);
        assert!(err.message.contains("expected 64 hex digits"), "{err}");
        assert!(err.message.starts_with("--key-file "), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A fresh, empty temporary directory for one test.
    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pierce-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn only_a_small_regular_file_is_read_as_a_key() {
        let dir = temp_dir("key-kinds");
        let refused = |path: &Path, what: &str| {
            let err = load_or_create_key(path).expect_err(what);
            assert_eq!(err.code, 2, "{err}");
            let named = format!("--key-file {}: ", path.display());
            assert!(err.message.starts_with(&named), "{err}");
            assert!(err.message.contains(what), "{err}");
        };
        refused(&dir, "is a directory");
        let big = dir.join("big.key");
        fs::write(&big, vec![b'0'; MAX_KEY_FILE as usize + 1]).expect("write");
        refused(&big, "513 bytes is too large");
        let ok = dir.join("ok.key");
        fs::write(&ok, format!("  {}\n\n", "ab".repeat(32))).expect("write");
        assert!(load_or_create_key(&ok).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::symlink;
            refused(Path::new("/dev/zero"), "is a device");
            refused(Path::new("/dev/null"), "is a device");
            let fifo = dir.join("fifo.key");
            let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("no NUL");
            // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
            refused(&fifo, "is a FIFO"); // and returns: no waiting for a writer
            // A link to a key is followed for reading; a link to a device is still a device.
            let link = dir.join("link.key");
            symlink(&ok, &link).expect("symlink");
            assert!(load_or_create_key(&link).is_ok());
            let to_zero = dir.join("zero.key");
            symlink("/dev/zero", &to_zero).expect("symlink");
            refused(&to_zero, "is a device");
            // A dangling link is not written through.
            let target = dir.join("elsewhere.key");
            let dangling = dir.join("dangling.key");
            symlink(&target, &dangling).expect("symlink");
            refused(&dangling, "symbolic link to nothing");
            assert!(!target.exists(), "a key was created through a link");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_longer_than_its_size_says_is_read_only_up_to_the_cap() {
        // procfs files claim size 0 and hold more: what a file growing while read looks like.
        let status = Path::new("/proc/self/status");
        assert_eq!(fs::metadata(status).expect("procfs").len(), 0);
        let found = read_key_file(status).expect("readable");
        assert_eq!(
            found,
            KeyFile::TooLarge(format!("more than {MAX_KEY_FILE} bytes"))
        );
    }

    #[test]
    fn a_key_file_in_a_missing_directory_is_an_input_error() {
        let dir = temp_dir("key-nodir");
        let path = dir.join("no").join("such").join("dir.key");
        let err = load_or_create_key(&path).expect_err("no directory");
        assert_eq!(err.code, 2, "{err}");
        assert!(err.message.contains("cannot create it"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn stats_lines_keep_their_period_without_going_below_the_clock_origin() {
        let t0 = Instant::now();
        let every = Duration::from_secs(crate::cli::args::MAX_SECS);
        // On time: one period after the due time.
        assert_eq!(next_stats_at(t0, t0, every), t0 + every);
        assert_eq!(
            next_stats_at(t0, t0 + Duration::from_secs(1), every),
            t0 + every
        );
        // A whole period late: one period from now, no catching up.
        let late = t0 + every + Duration::from_secs(5);
        assert_eq!(next_stats_at(t0, late, every), late + every);
    }
}
