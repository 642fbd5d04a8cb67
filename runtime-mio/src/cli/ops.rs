//! `pierce server --metrics IP:PORT`: the operator's HTTP listener, on a thread of its own.
//!
//! - `GET /metrics`: every counter of the server in the Prometheus text format (0.0.4);
//! - `GET /healthz`: 200 while the process runs; `GET /readyz`: 200 while it accepts clients,
//!   503 once it drains;
//! - `/admin/...` (with `--admin-token-file`, a bearer token): list clients and rooms, kick a
//!   client, close a room, drain the server. Without the flag they answer 403.
//!
//! The packet loop never waits on this thread. It publishes a [`Snapshot`] at most every
//! [`PUBLISH_EVERY`] with a `try_lock` that skips the turn if a scrape holds the lock (the
//! scrape only clones an `Arc` under it), and it drains admin [`Command`]s from a channel once
//! per turn, answering each through the request's own reply channel. This thread is the one
//! that waits: for the loop's answer, at most [`REPLY_TIMEOUT`] (then 503). Requests are
//! answered one at a time; a scrape is an encode of a few hundred lines.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::Waker;
use pierce_core::{Histogram, HostId, RoomError, Server, ServerStats};

use crate::DriverStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::CliError;
use super::json::Obj;

/// Most often the loop publishes a snapshot: a scrape sees counters at most this old, and the
/// loop copies its counters four times a second however often it turns.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Longest an admin request waits for the loop's answer. The loop turns at least every 100 ms
/// (and at once when woken), so only a loop stuck for seconds makes a request time out.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Close code a client kicked through `POST /admin/clients/{host_id}/kick` is sent (it
/// reports "the server closed the session (code 4001)"). 0 is a clean shutdown (and the end
/// of a drain); 4001 reads as "closed by an operator", out of the small codes an application
/// on the core may use for its own reasons.
pub const KICK_CODE: u16 = 4001;

/// Largest admin token file read, in bytes: a token is a line, not a document.
pub const MAX_TOKEN_FILE: u64 = 4096;

/// The loop's counters as of its last publication: what `GET /metrics` encodes.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The core's counters, the relay threads' added.
    pub stats: ServerStats,
    /// The sockets' counters, the relay threads' send errors added.
    pub driver: DriverStats,
    /// Of `stats.relayed_packets`, those the relay threads forwarded.
    pub relayed_by_threads: u64,
    /// Relay threads (0: the server's thread relays).
    pub relay_threads: u16,
    /// A drain is under way.
    pub draining: bool,
}

/// What an admin request asks the loop for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// `GET /admin/clients`.
    Clients,
    /// `GET /admin/rooms`.
    Rooms,
    /// `POST /admin/clients/{host_id}/kick`.
    Kick(HostId),
    /// `POST /admin/rooms/{name}/close`.
    CloseRoom(String),
    /// `POST /admin/drain`.
    Drain,
}

/// An HTTP answer: status, content type, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: JSON,
            body,
        }
    }

    /// A JSON error: `{"error":MESSAGE}`.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, Obj::new().str("error", message).finish())
    }

    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: TEXT,
            body: body.to_owned(),
        }
    }
}

/// An admin request on its way to the loop, with where the answer goes.
#[derive(Debug)]
pub struct Command {
    /// What is asked.
    pub request: AdminRequest,
    reply: SyncSender<Reply>,
}

impl Command {
    /// Sends the answer (lost if the request timed out meanwhile).
    pub fn answer(self, reply: Reply) {
        let _ = self.reply.try_send(reply);
    }
}

/// What the HTTP thread and the loop share.
#[derive(Debug)]
struct Shared {
    snapshot: Mutex<Arc<Snapshot>>,
    ready: AtomicBool,
}

/// The loop's end of the ops listener: publishes snapshots, hands over admin commands.
pub struct Ops {
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    next_publish: Instant,
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Ops {
    /// Listens on `addr` and starts the HTTP thread. `token`: the admin bearer token (admin
    /// endpoints answer 403 without one). `waker` wakes the loop when a command is queued.
    ///
    /// # Errors
    /// The address cannot be bound, or the thread cannot be started.
    pub fn start(addr: SocketAddr, token: Option<Vec<u8>>, waker: Arc<Waker>) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            snapshot: Mutex::new(Arc::new(Snapshot::default())),
            ready: AtomicBool::new(true),
        });
        // A small bound: a loop that does not drain them makes requests fail fast (503)
        // instead of piling up.
        let (tx, commands) = mpsc::sync_channel(16);
        let http = Http {
            shared: shared.clone(),
            token,
            commands: tx,
            waker,
        };
        let serving = server.clone();
        let thread = thread::Builder::new()
            .name("pierce-ops".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    http.serve(request);
                }
            })?;
        Ok(Self {
            shared,
            commands,
            next_publish: Instant::now(),
            addr,
            server,
            thread: Some(thread),
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// True when a snapshot is due at `now` (at most every [`PUBLISH_EVERY`]).
    pub fn publish_due(&self, now: Instant) -> bool {
        now >= self.next_publish
    }

    /// Publishes `snapshot` unless a scrape holds the lock right now (then the next turn
    /// tries again): never waits.
    pub fn publish(&mut self, now: Instant, snapshot: Snapshot) {
        if let Ok(mut slot) = self.shared.snapshot.try_lock() {
            *slot = Arc::new(snapshot);
            self.next_publish = now + PUBLISH_EVERY;
        }
    }

    /// From now on `GET /readyz` answers 503.
    pub fn set_draining(&self) {
        self.shared.ready.store(false, Ordering::SeqCst);
    }

    /// The next admin command queued, if any (never waits).
    pub fn next_command(&self) -> Option<Command> {
        self.commands.try_recv().ok()
    }
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The HTTP thread's state.
struct Http {
    shared: Arc<Shared>,
    token: Option<Vec<u8>>,
    commands: SyncSender<Command>,
    waker: Arc<Waker>,
}

impl Http {
    fn serve(&self, request: tiny_http::Request) {
        let auth = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .map(|h| h.value.as_str().to_owned());
        let method = match request.method() {
            tiny_http::Method::Get | tiny_http::Method::Head => Method::Get,
            tiny_http::Method::Post => Method::Post,
            _ => Method::Other,
        };
        let reply = self.answer(method, request.url(), auth.as_deref());
        let mut response =
            tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
        if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", reply.content_type) {
            response.add_header(h);
        }
        if reply.status == 401 {
            if let Ok(h) = tiny_http::Header::from_bytes("WWW-Authenticate", "Bearer") {
                response.add_header(h);
            }
        }
        let _ = request.respond(response);
    }

    fn answer(&self, method: Method, url: &str, auth: Option<&str>) -> Reply {
        match route(method, url) {
            Route::Metrics => {
                let snapshot = self
                    .shared
                    .snapshot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match encode(snapshot) {
                    Ok(body) => Reply {
                        status: 200,
                        content_type: prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        body,
                    },
                    Err(_) => Reply::text(500, "encoding failed\n"),
                }
            }
            Route::Healthz => Reply::text(200, "ok\n"),
            Route::Readyz if self.shared.ready.load(Ordering::SeqCst) => {
                Reply::text(200, "ready\n")
            }
            Route::Readyz => Reply::text(503, "draining\n"),
            Route::Admin(request) => match &self.token {
                None => Reply::error(
                    403,
                    "admin endpoints are off (start the server with --admin-token-file)",
                ),
                Some(token) if !authorized(token, auth) => {
                    Reply::error(401, "missing or wrong bearer token")
                }
                Some(_) => self.ask(request),
            },
            Route::BadRequest(why) => Reply::error(400, &why),
            Route::WrongMethod(allowed) => Reply::error(405, &format!("use {allowed}")),
            Route::NotFound => Reply::error(404, "no such endpoint"),
        }
    }

    /// Hands `request` to the loop and waits for its answer.
    fn ask(&self, request: AdminRequest) -> Reply {
        let (tx, rx) = mpsc::sync_channel(1);
        let command = Command { request, reply: tx };
        if self.commands.try_send(command).is_err() {
            return Reply::error(503, "the server is busy with other admin requests");
        }
        let _ = self.waker.wake();
        rx.recv_timeout(REPLY_TIMEOUT)
            .unwrap_or_else(|_| Reply::error(503, "the server's loop did not answer in time"))
    }
}

/// The HTTP methods the listener tells apart (HEAD is answered as GET; tiny_http leaves out
/// the body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET or HEAD.
    Get,
    /// POST.
    Post,
    /// Anything else.
    Other,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`.
    Metrics,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// An admin endpoint (the token is checked after routing).
    Admin(AdminRequest),
    /// A known path with the wrong method: the one to use.
    WrongMethod(&'static str),
    /// A known path whose parameter does not parse.
    BadRequest(String),
    /// Nothing here.
    NotFound,
}

/// Routes `method` and `url` (a path with an optional query, which is ignored).
pub fn route(method: Method, url: &str) -> Route {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (route, wanted) = match segments.as_slice() {
        ["metrics"] => (Route::Metrics, Method::Get),
        ["healthz"] => (Route::Healthz, Method::Get),
        ["readyz"] => (Route::Readyz, Method::Get),
        ["admin", "clients"] => (Route::Admin(AdminRequest::Clients), Method::Get),
        ["admin", "rooms"] => (Route::Admin(AdminRequest::Rooms), Method::Get),
        ["admin", "drain"] => (Route::Admin(AdminRequest::Drain), Method::Post),
        ["admin", "clients", id, "kick"] => match id.parse::<u64>() {
            Ok(id) => (Route::Admin(AdminRequest::Kick(HostId(id))), Method::Post),
            Err(_) => (
                Route::BadRequest(format!("{id:?} is not a host id (a whole number)")),
                Method::Post,
            ),
        },
        ["admin", "rooms", name, "close"] => match percent_decode(name) {
            Some(name) if !name.is_empty() => {
                (Route::Admin(AdminRequest::CloseRoom(name)), Method::Post)
            }
            _ => (
                Route::BadRequest("the room name is not percent-encoded UTF-8".to_owned()),
                Method::Post,
            ),
        },
        _ => return Route::NotFound,
    };
    match (method, wanted) {
        (Method::Get, Method::Get) | (Method::Post, Method::Post) => route,
        (_, Method::Post) => Route::WrongMethod("POST"),
        _ => Route::WrongMethod("GET"),
    }
}

/// A path segment with its `%XX` escapes decoded; `None` for a bad escape or bytes that are
/// not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// True if `header` (an `Authorization` value) is `Bearer <token>`. The comparison takes the
/// same time whatever the bytes of the token are (it depends on the length of what was sent
/// only), so timing tells an attacker nothing about how much of a guess was right.
pub fn authorized(token: &[u8], header: Option<&str>) -> bool {
    let Some(given) = header.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    }) else {
        return false;
    };
    constant_time_eq(token, given.as_bytes())
}

/// `expected == given`, in time that depends on `given.len()` only. `expected` is not empty.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = u8::from(expected.len() != given.len());
    for (i, g) in given.iter().enumerate() {
        diff |= g ^ expected[i % expected.len()];
    }
    std::hint::black_box(diff) == 0
}

/// Reads the admin token (`--admin-token-file`): the file's content, whitespace around it
/// trimmed.
///
/// # Errors
/// A usage error naming the flag and the path: missing, unreadable, not a regular file,
/// larger than [`MAX_TOKEN_FILE`], not UTF-8, or empty once trimmed.
pub fn load_token(path: &Path) -> Result<Vec<u8>, CliError> {
    let bad =
        |what: String| CliError::usage(format!("--admin-token-file {}: {what}", path.display()));
    let meta = fs::metadata(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(bad("is not a regular file".to_owned()));
    }
    if meta.len() > MAX_TOKEN_FILE {
        return Err(bad(format!(
            "{} bytes is too large for a token (at most {MAX_TOKEN_FILE})",
            meta.len()
        )));
    }
    let text = fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(bad("is empty: it must hold the admin token".to_owned()));
    }
    if token.chars().any(char::is_whitespace) {
        return Err(bad(
            "holds whitespace inside the token (an HTTP bearer token has none)".to_owned(),
        ));
    }
    Ok(token.as_bytes().to_vec())
}

/// `GET /metrics`' body: `snapshot` in the Prometheus text format.
///
/// # Errors
/// Only a formatter failure (writing to a `String` does not fail).
pub fn encode(snapshot: Arc<Snapshot>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("pierce");
    registry.register_collector(Box::new(Metrics(snapshot)));
    let mut body = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut body, &registry)?;
    Ok(body)
}

/// A [`Snapshot`] as Prometheus metric families.
#[derive(Debug)]
struct Metrics(Arc<Snapshot>);

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snap = &*self.0;
        let s = &snap.stats;
        let d = &snap.driver;
        let gauges: [(&str, &str, u64); 8] = [
            ("clients", "Connected clients.", s.clients),
            ("half_open_handshakes", "Handshakes under way.", s.half_open),
            (
                "groups",
                "Groups now (rooms included: each room is a group).",
                s.groups,
            ),
            ("rooms", "Rooms now.", s.rooms),
            ("pairs", "Client pairs sharing at least one group.", s.pairs),
            (
                "pairs_direct",
                "Pairs whose clients last reported a direct path.",
                s.pairs_direct,
            ),
            (
                "relay_threads",
                "Threads of their own that relay (0: the server's thread relays).",
                u64::from(snap.relay_threads),
            ),
            (
                "draining",
                "1 while the server drains (refusing new clients), else 0.",
                u64::from(snap.draining),
            ),
        ];
        for (name, help, v) in gauges {
            let gauge = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters: [(&str, &str, u64); 38] = [
            (
                "datagrams_received",
                "Datagrams handed to the core.",
                s.io.datagrams_in,
            ),
            (
                "received_bytes",
                "Bytes of the datagrams handed to the core.",
                s.io.bytes_in,
            ),
            (
                "datagrams_sent",
                "Datagrams the core sent.",
                s.io.datagrams_out,
            ),
            (
                "sent_bytes",
                "Bytes of the datagrams the core sent.",
                s.io.bytes_out,
            ),
            ("keepalives_sent", "Keepalives sent.", s.io.keepalives_sent),
            (
                "keepalives_received",
                "Keepalives received.",
                s.io.keepalives_received,
            ),
            (
                "time_went_backwards",
                "Inputs whose time was earlier than one already seen.",
                s.io.time_went_backwards,
            ),
            (
                "events_dropped",
                "Server events nobody drained.",
                s.io.events_dropped,
            ),
            (
                "relayed_packets",
                "Peer packets relayed.",
                s.relayed_packets,
            ),
            (
                "relayed_bytes",
                "Bytes of peer packets relayed.",
                s.relayed_bytes,
            ),
            (
                "relayed_by_relay_threads_packets",
                "Of the peer packets relayed, those the relay threads forwarded.",
                snap.relayed_by_threads,
            ),
            (
                "relay_unreachable",
                "Relay packets for a receiver whose stream had closed.",
                s.relay_unreachable,
            ),
            (
                "handshakes_started",
                "Handshakes answered.",
                s.handshakes_started,
            ),
            (
                "handshakes_completed",
                "Sessions that became clients.",
                s.handshakes_completed,
            ),
            (
                "handshakes_rejected",
                "Sessions refused.",
                s.handshakes_rejected,
            ),
            (
                "handshakes_expired",
                "Half-open handshakes that expired.",
                s.handshakes_expired,
            ),
            (
                "clients_timed_out",
                "Clients dropped for silence.",
                s.clients_timed_out,
            ),
            (
                "clients_offline",
                "Times a client went quiet past the offline threshold.",
                s.clients_offline,
            ),
            (
                "sessions_resumed",
                "Sessions that got their host id back from a ticket.",
                s.sessions_resumed,
            ),
            (
                "address_changes",
                "Client address changes followed.",
                s.address_changes,
            ),
            (
                "transport_changes",
                "Sessions moved between UDP and TCP.",
                s.transport_changes,
            ),
            (
                "stream_paths_closed",
                "Sessions whose TCP stream closed under them.",
                s.stream_paths_closed,
            ),
            (
                "path_probes_answered",
                "UDP path probes from clients on TCP answered.",
                s.path_probes_answered,
            ),
            (
                "control_retransmits",
                "Control messages retransmitted.",
                s.control_retransmits,
            ),
            (
                "stun_answered",
                "STUN Binding requests answered.",
                s.stun_answered,
            ),
            (
                "retries_sent",
                "Retry packets (cookie requests) sent.",
                s.retries_sent,
            ),
            ("resets_sent", "Stateless resets sent.", s.resets_sent),
            (
                "resets_limited",
                "Packets of unknown sessions not answered with a reset.",
                s.resets_limited,
            ),
            (
                "streams_accepted",
                "TCP streams accepted.",
                d.streams_accepted,
            ),
            ("streams_refused", "TCP streams refused.", d.streams_refused),
            (
                "streams_evicted",
                "TCP streams without a session closed to make room.",
                s.streams_evicted,
            ),
            (
                "streams_closed",
                "TCP streams that ended by themselves.",
                d.streams_closed,
            ),
            (
                "socket_send_errors",
                "Datagrams a socket refused with a hard error.",
                d.send_errors,
            ),
            (
                "socket_send_too_large",
                "Of those, datagrams larger than the interface allows (path-MTU probes above it).",
                d.send_too_large,
            ),
            (
                "socket_recv_errors_ignored",
                "Receive errors that described an earlier send (stray ICMP).",
                d.recv_errors_ignored,
            ),
            (
                "socket_open_failures",
                "Sockets the core asked for that could not be opened.",
                d.socket_open_failures,
            ),
            (
                "unknown_socket_drops",
                "Datagrams for a socket the driver does not have (or relay handoffs the \
                 server's thread fell behind on).",
                d.unknown_socket_drops,
            ),
            (
                "receive_budget_exhausted",
                "Loop turns that stopped reading with data still queued.",
                d.budget_exhausted,
            ),
        ];
        for (name, help, v) in counters {
            let counter = ConstCounter::new(v);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let mut dropped = encoder.encode_descriptor(
            "dropped",
            "Input dropped, by reason (the core's DropStats fields).",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in s.dropped.by_reason() {
            let labels = [("reason", reason)];
            ConstCounter::new(n).encode(dropped.encode_family(&labels)?)?;
        }
        let h = &s.histograms;
        let histograms = [
            (
                "session_rtt_seconds",
                "Round trips of client sessions (control messages acknowledged on their first \
                 transmission).",
                &h.session_rtt_ms,
                1000.0,
            ),
            (
                "time_to_direct_seconds",
                "From a pair's introduction to its first direct path, as its client reports.",
                &h.time_to_direct_ms,
                1000.0,
            ),
            (
                "relay_datagram_size_bytes",
                "Sizes of relayed peer packets as received.",
                &h.relay_datagram_bytes,
                1.0,
            ),
        ];
        for (name, help, histogram, per_unit) in histograms {
            let metric = Buckets {
                histogram: *histogram,
                per_unit,
            };
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        Ok(())
    }
}

/// A core [`Histogram`] as a Prometheus histogram, its values divided by `per_unit` (1000 for
/// milliseconds as seconds, the base unit Prometheus names want).
#[derive(Debug)]
struct Buckets {
    histogram: Histogram,
    per_unit: f64,
}

impl EncodeMetric for Buckets {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let h = &self.histogram;
        // Per bucket, not cumulative (the encoder adds them up); the last is +Inf.
        let bounds = (h.bounds().iter().map(|&b| b as f64 / self.per_unit))
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds.zip(h.counts().iter().copied()).collect();
        let sum = h.sum() as f64 / self.per_unit;
        encoder.encode_histogram::<NoLabelSet>(sum, h.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The loop's answer to an admin request other than [`AdminRequest::Drain`] (which the loop
/// runs itself: it owns the countdown).
pub fn answer(server: &mut Server, now: Instant, request: &AdminRequest) -> Reply {
    match request {
        AdminRequest::Clients => Reply::json(200, clients_json(server)),
        AdminRequest::Rooms => Reply::json(200, rooms_json(server)),
        AdminRequest::Kick(host) => kick(server, now, *host),
        AdminRequest::CloseRoom(name) => close_room(server, now, name),
        AdminRequest::Drain => Reply::error(500, "a drain is the loop's to run"),
    }
}

/// `GET /admin/clients`' body.
fn clients_json(server: &Server) -> String {
    let clients = server.clients().map(|host| {
        let groups = server.client_groups(host).unwrap_or_default();
        Obj::new()
            .int("host_id", host.0)
            .opt_str(
                "addr",
                server.client_addr(host).map(|a| a.to_string()).as_deref(),
            )
            .opt_int("user_id", server.client_user_id(host))
            .ints("groups", groups.iter().map(|g| g.0))
            .ms(
                "rtt_ms",
                server.client_rtt(host).map(|d| d.as_secs_f64() * 1000.0),
            )
    });
    Obj::new().array("clients", clients).finish()
}

/// `GET /admin/rooms`' body.
fn rooms_json(server: &Server) -> String {
    let rooms = server.rooms().into_iter().map(|room| {
        Obj::new()
            .str("name", &room.name)
            .int("group", room.group.0)
            .int("owner", room.owner.0)
            .ints("members", room.members.iter().map(|h| h.0))
            .int("max_members", room.max_members)
            .bool("has_password", room.has_password)
    });
    Obj::new().array("rooms", rooms).finish()
}

/// `POST /admin/rooms/{name}/close`: its members are told the room is gone.
fn close_room(server: &mut Server, now: Instant, name: &str) -> Reply {
    match server.close_room(now, name) {
        Ok(group) => Reply::json(
            200,
            Obj::new()
                .str("closed", name)
                .int("group", group.0)
                .finish(),
        ),
        Err(RoomError::Disabled) => Reply::error(404, "this server has no rooms"),
        Err(_) => Reply::error(404, &format!("no room is called {name:?}")),
    }
}

/// `POST /admin/clients/{host_id}/kick`: disconnects the client with [`KICK_CODE`].
fn kick(server: &mut Server, now: Instant, host: HostId) -> Reply {
    match server.disconnect(now, host, KICK_CODE) {
        Ok(()) => Reply::json(
            200,
            Obj::new()
                .int("kicked", host.0)
                .int("code", KICK_CODE)
                .finish(),
        ),
        Err(_) => Reply::error(404, &format!("no connected client has host id {}", host.0)),
    }
}

/// Writes the Prometheus text of `snapshot` for a test's eyes.
#[cfg(test)]
fn encoded(snapshot: Snapshot) -> String {
    encode(Arc::new(snapshot)).expect("encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_their_endpoints_with_their_methods() {
        assert_eq!(route(Method::Get, "/metrics"), Route::Metrics);
        assert_eq!(route(Method::Get, "/metrics?x=1"), Route::Metrics);
        assert_eq!(route(Method::Get, "/healthz"), Route::Healthz);
        assert_eq!(route(Method::Get, "/readyz"), Route::Readyz);
        assert_eq!(
            route(Method::Get, "/admin/clients"),
            Route::Admin(AdminRequest::Clients)
        );
        assert_eq!(
            route(Method::Get, "/admin/rooms"),
            Route::Admin(AdminRequest::Rooms)
        );
        assert_eq!(
            route(Method::Post, "/admin/clients/42/kick"),
            Route::Admin(AdminRequest::Kick(HostId(42)))
        );
        assert_eq!(
            route(Method::Post, "/admin/rooms/a%20b%2Fc%C3%A9/close"),
            Route::Admin(AdminRequest::CloseRoom("a b/cé".to_owned()))
        );
        assert_eq!(
            route(Method::Post, "/admin/drain"),
            Route::Admin(AdminRequest::Drain)
        );
    }

    #[test]
    fn wrong_methods_bad_parameters_and_unknown_paths_are_told_apart() {
        assert_eq!(route(Method::Post, "/metrics"), Route::WrongMethod("GET"));
        assert_eq!(
            route(Method::Get, "/admin/drain"),
            Route::WrongMethod("POST")
        );
        assert_eq!(
            route(Method::Other, "/admin/clients/1/kick"),
            Route::WrongMethod("POST")
        );
        assert!(matches!(
            route(Method::Post, "/admin/clients/x/kick"),
            Route::BadRequest(_)
        ));
        assert!(matches!(
            route(Method::Post, "/admin/rooms/%zz/close"),
            Route::BadRequest(_)
        ));
        assert!(matches!(
            route(Method::Post, "/admin/rooms/%FF/close"),
            Route::BadRequest(_)
        ));
        assert_eq!(route(Method::Get, "/"), Route::NotFound);
        assert_eq!(route(Method::Get, "/metrics/x"), Route::NotFound);
        assert_eq!(route(Method::Post, "/admin/clients/1/ban"), Route::NotFound);
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let token = b"s3cret-token";
        assert!(authorized(token, Some("Bearer s3cret-token")));
        assert!(authorized(token, Some("bearer  s3cret-token ")));
        assert!(!authorized(token, None));
        assert!(!authorized(token, Some("")));
        assert!(!authorized(token, Some("Bearer")));
        assert!(!authorized(token, Some("Bearer s3cret-toke")));
        assert!(!authorized(token, Some("Bearer s3cret-tokenn")));
        assert!(!authorized(token, Some("Bearer S3cret-token")));
        assert!(!authorized(token, Some("Basic s3cret-token")));
        // The token repeated is as long as a guess that wraps around: still refused.
        assert!(!authorized(b"ab", Some("Bearer abab")));
        assert!(!constant_time_eq(b"", b""));
    }

    #[test]
    fn a_token_file_is_trimmed_and_must_hold_a_token() {
        let dir = std::env::temp_dir().join(format!("pierce-ops-token-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("token");
        fs::write(&path, "  abc123\n").expect("write");
        assert_eq!(load_token(&path).expect("read"), b"abc123");
        for (content, what) in [("\n \n", "is empty"), ("a b", "whitespace inside")] {
            fs::write(&path, content).expect("write");
            let err = load_token(&path).expect_err(what);
            assert_eq!(err.code, 2, "{err}");
            assert!(err.message.starts_with("--admin-token-file "), "{err}");
            assert!(err.message.contains(what), "{err}");
        }
        let err = load_token(&dir.join("missing")).expect_err("missing");
        assert_eq!(err.code, 2, "{err}");
        let err = load_token(&dir).expect_err("a directory");
        assert!(err.message.contains("not a regular file"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// An ops listener on loopback with `token`, and the poll its waker wakes.
    fn listener(token: Option<&[u8]>) -> (Ops, mio::Poll) {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let ops = Ops::start(loopback, token.map(<[u8]>::to_vec), waker).expect("listens");
        (ops, poll)
    }

    /// A raw HTTP/1.1 exchange with the listener: status line and body.
    fn request(addr: SocketAddr, head: &str) -> (String, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connects");
        write!(s, "{head}\r\nConnection: close\r\n\r\n").expect("writes");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("reads");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
        (
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        )
    }

    #[test]
    fn publishing_skips_a_turn_instead_of_waiting_for_a_scrape_that_holds_the_lock() {
        let (mut ops, _poll) = listener(None);
        let now = Instant::now();
        let mut snapshot = Snapshot::default();
        snapshot.stats.relayed_bytes = 1;
        {
            let shared = ops.shared.clone();
            let _held = shared.snapshot.lock().expect("lock");
            ops.publish(now, snapshot.clone()); // returns at once
            assert!(ops.publish_due(now), "a skipped turn stays due");
        }
        ops.publish(now, snapshot);
        assert!(!ops.publish_due(now));
        assert!(ops.publish_due(now + PUBLISH_EVERY));
        let (status, body) = request(ops.local_addr(), "GET /metrics HTTP/1.1");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("\npierce_relayed_bytes_total 1\n"), "{body}");
    }

    #[test]
    fn admin_requests_reach_the_loop_and_its_answer_comes_back() {
        let (ops, mut poll) = listener(Some(b"t0k"));
        let addr = ops.local_addr();
        let client = thread::spawn(move || {
            request(
                addr,
                "POST /admin/clients/7/kick HTTP/1.1\r\nAuthorization: Bearer t0k",
            )
        });
        // The loop's side: woken by the request, it finds the command and answers.
        let mut events = mio::Events::with_capacity(4);
        let command = loop {
            poll.poll(&mut events, Some(Duration::from_secs(5)))
                .expect("poll");
            if let Some(c) = ops.next_command() {
                break c;
            }
        };
        assert_eq!(command.request, AdminRequest::Kick(HostId(7)));
        command.answer(Reply::error(404, "no such client"));
        let (status, body) = client.join().expect("client");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert_eq!(body, r#"{"error":"no such client"}"#);
        // Draining flips readyz, not healthz.
        ops.set_draining();
        assert_eq!(
            request(addr, "GET /readyz HTTP/1.1").0,
            "HTTP/1.1 503 Service Unavailable"
        );
        assert_eq!(request(addr, "GET /healthz HTTP/1.1").0, "HTTP/1.1 200 OK");
        // A wrong token never reaches the loop.
        let (status, _) = request(
            addr,
            "POST /admin/drain HTTP/1.1\r\nAuthorization: Bearer t0K",
        );
        assert_eq!(status, "HTTP/1.1 401 Unauthorized");
        assert!(ops.next_command().is_none());
    }

    #[test]
    fn the_loop_answers_lists_and_unknown_ids_from_the_server() {
        let key = pierce_core::SecretKey::from_bytes([9; 32]);
        let mut server = super::super::server::rooms_server(key, None).expect("server");
        let now = Instant::now();
        let clients = answer(&mut server, now, &AdminRequest::Clients);
        assert_eq!(clients, Reply::json(200, r#"{"clients":[]}"#.to_owned()));
        let rooms = answer(&mut server, now, &AdminRequest::Rooms);
        assert_eq!(rooms, Reply::json(200, r#"{"rooms":[]}"#.to_owned()));
        let kick = answer(&mut server, now, &AdminRequest::Kick(HostId(3)));
        assert_eq!(kick.status, 404);
        assert!(kick.body.contains("host id 3"), "{kick:?}");
    }

    #[test]
    fn metrics_carry_help_type_total_suffixes_and_one_series_per_drop_reason() {
        let mut snapshot = Snapshot::default();
        snapshot.stats.relayed_bytes = 12345;
        snapshot.stats.clients = 2;
        snapshot.stats.rooms = 3;
        snapshot.stats.dropped.auth_failed = 7;
        snapshot.driver.send_errors = 3;
        let rtt = &mut snapshot.stats.histograms.session_rtt_ms;
        for ms in [3, 7, 7, 5000] {
            rtt.observe(ms);
        }
        let text = encoded(snapshot);
        // Milliseconds as seconds, buckets cumulative, the overflow in +Inf only.
        assert!(
            text.contains("# TYPE pierce_session_rtt_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("\npierce_session_rtt_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\npierce_session_rtt_seconds_bucket{le=\"0.01\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\npierce_session_rtt_seconds_bucket{le=\"2\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\npierce_session_rtt_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("\npierce_session_rtt_seconds_sum 5.017\n"),
            "{text}"
        );
        assert!(
            text.contains("\npierce_session_rtt_seconds_count 4\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP pierce_relayed_bytes_total "),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pierce_relayed_bytes_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\npierce_relayed_bytes_total 12345\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pierce_clients gauge\npierce_clients 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pierce_rooms gauge\npierce_rooms 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\npierce_socket_send_errors_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\npierce_dropped_total{reason=\"auth_failed\"} 7\n"),
            "{text}"
        );
        let reasons = pierce_core::DropStats::default().by_reason();
        for (reason, _) in reasons {
            let series = format!("pierce_dropped_total{{reason=\"{reason}\"}} ");
            assert!(text.contains(&series), "no {series} in {text}");
        }
        // Every family has its HELP and TYPE, and every counter's samples end in _total.
        let mut kind = "";
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                kind = t.rsplit(' ').next().expect("a type");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().expect("a name");
            assert!(name.starts_with("pierce_"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
        }
    }
}
