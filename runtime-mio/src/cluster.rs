//! The cluster directory in Redis: answers a cluster node's [`DirectoryRequest`]s
//! ([`pierce_core::Server::poll_directory`]) from a Redis server shared by every node.
//!
//! Each request means exactly what [`pierce_core::cluster::MemoryDirectory::answer`] says it
//! means (the reference the conformance test `tests/redis_directory.rs` compares against),
//! and is atomic: Claim, Heartbeat, Hand, Release, Leave and Rooms are Lua scripts (sent once,
//! then run by hash with `EVALSHA`; a Redis that lost them gets them again), TakeTicket is one
//! `SET NX PX`, Number one `INCR`. Time to live is Redis's own: key expiry, and `TIME` read
//! inside the scripts; this machine's clock is never used, so nodes whose clocks disagree
//! still agree on who is registered.
//!
//! Two layers:
//!
//! - [`RedisDirectory`]: one connection, answered synchronously ([`RedisDirectory::answer`]).
//!   Every call is bounded: connecting, writing and reading each time out after
//!   [`DEFAULT_TIMEOUT`] (a down or hung Redis answers [`DirectoryError::Unavailable`]), and
//!   the next call connects again.
//! - [`DirectoryThread`]: a thread that owns a [`RedisDirectory`] and answers the questions
//!   a driver hands it ([`DirectoryThread::ask`]) in order, waking the driver for each answer
//!   ([`DirectoryThread::poll_answer`]), so the packet loop never waits for Redis.
//!
//! # Keys
//!
//! Every key starts with `pierce:{NAMESPACE}:` (the namespace is 1 to 64 bytes of
//! `A-Z a-z 0-9 . _ -`, [`DEFAULT_NAMESPACE`] unless given), so several clusters (or tests)
//! share one Redis; the braces make the namespace a Redis Cluster hash tag, keeping all of a
//! cluster's keys in one slot. Below, `P` is that prefix.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P deadlines` | sorted set | node id → when its registration ends (Redis ms); registered while that is in the future |
//! | `P nodes` | hash | node id → its [`NodeInfo`] (format below) |
//! | `P noderooms` | hash | node id → its room list (format below) |
//! | `P room:NAME` | string, expiring | the id of the node that claims room NAME |
//! | `P owned:NODE` | set, expiring | rooms NODE has claimed (what [`DirectoryRequest::Leave`] releases) |
//! | `P ticket:ID` | string, expiring | ticket ID was taken |
//! | `P number` | counter | the last node number handed out |
//!
//! Nodes whose registration ended are removed by the next heartbeat of any node.
//!
//! # Formats
//!
//! Text, fields separated by one space; strings (ids, regions, room names) percent-encoded:
//! every byte outside `!`..`~` and every `%` is written `%XX`, so no string holds a space or a
//! newline.
//!
//! - A node: `1 ID REGION UDP TCP CLIENTS ROOMS BYTES_PER_SEC CPU DRAINING`: `1` is the
//!   format's version, UDP and TCP are socket addresses (`IP:PORT`, `[IPv6]:PORT`; TCP is `-`
//!   when none), DRAINING is `0` or `1`.
//! - A room list: one room a line (`\n` between them, the empty string for none):
//!   `NAME MEMBERS MAX_MEMBERS FLAGS`, FLAGS the sum of 1 (has a password) and 2 (relay only).
//!
//! A value that does not read back is [`DirectoryError::Malformed`], naming it.
//!
//! # Differences from the reference
//!
//! - Time to live is kept in whole milliseconds (rounded up) and ends when Redis's clock
//!   passes it; [`DirectoryRequest::Number`]'s counter lives in Redis, so a Redis that lost
//!   its data (no persistence) starts numbering from 1 again (the reference keeps counting).
//! - A room claim that has expired is gone: [`DirectoryRequest::Hand`] from its old owner does
//!   nothing (the reference still finds the stale record and hands it over).
//! - A request that failed as [`DirectoryError::Unavailable`] after it was sent (the read
//!   timed out, the connection broke) may still have been carried out: Redis runs what it
//!   received. Each request is atomic, never half done.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use pierce_core::cluster::{
    Claim, DirectoryAnswer, DirectoryError, DirectoryRequest, ListedRoom, NodeInfo, NodeLoad,
    QueryId, valid_id,
};
use redis::{Connection, ErrorKind, RedisError, Script, Value};

/// How long connecting to Redis, sending a request and reading its answer may each take
/// before the request fails as [`DirectoryError::Unavailable`]: a tenth of a heartbeat,
/// well under the core's 2 s answer timeout, far above a loopback or LAN round trip.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// The namespace when none is given.
pub const DEFAULT_NAMESPACE: &str = "pierce";

/// Questions a [`DirectoryThread`] holds before it refuses more: a heartbeat a second and a
/// claim per new room stay far below it; a Redis that hangs fills it in seconds at most,
/// after which questions fail at once instead of piling up.
pub const QUEUE: usize = 1024;

/// Longest time to live sent to Redis: ten years, in ms (Lua's numbers are doubles; a
/// deadline `now + ttl` stays an exact integer far below 2^53).
const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Why [`RedisDirectory::connect`] refused its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupError {
    /// The URL is not `redis://HOST:PORT` or `redis://HOST:PORT/DB`.
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The namespace is not 1 to 64 bytes of `A-Z a-z 0-9 . _ -`.
    Namespace(String),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url { url, why } => write!(
                f,
                "bad Redis URL `{url}`: {why} (expected redis://HOST:PORT or redis://HOST:PORT/DB)"
            ),
            Self::Namespace(ns) => write!(
                f,
                "bad cluster namespace `{ns}`: 1 to 64 bytes of A-Z a-z 0-9 . _ -"
            ),
        }
    }
}

impl std::error::Error for SetupError {}

/// Checks that `url` is `redis://HOST:PORT` or `redis://HOST:PORT/DB` (HOST a name, an IPv4
/// address or a bracketed IPv6 address; PORT 1 to 65535; DB a number).
///
/// # Errors
/// [`SetupError::Url`] saying what is wrong.
pub fn check_url(url: &str) -> Result<(), SetupError> {
    let bad = |why| SetupError::Url {
        url: url.to_owned(),
        why,
    };
    let Some(rest) = url.strip_prefix("redis://") else {
        return Err(bad(if url.starts_with("rediss://") {
            "TLS (rediss://) is not supported"
        } else {
            "not a redis:// URL"
        }));
    };
    let (authority, db) = match rest.split_once('/') {
        Some((authority, db)) => (authority, Some(db)),
        None => (rest, None),
    };
    if authority.contains('@') {
        return Err(bad("user names and passwords are not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((ip, port)) = v6.split_once(']') else {
            return Err(bad("an IPv6 address needs its closing `]`"));
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address between the brackets"));
        }
        (ip, port.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    if !authority.starts_with('[')
        && !(host.bytes()).all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(bad(
            "the host must be a name or an IP address (IPv6 in brackets)",
        ));
    }
    let Some(port) = port else {
        return Err(bad("the port is missing"));
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return Err(bad("the port must be 1 to 65535"));
    }
    if let Some(db) = db.filter(|db| !db.is_empty()) {
        if !db.bytes().all(|b| b.is_ascii_digit()) || db.parse::<u32>().is_err() {
            return Err(bad("the database must be a number"));
        }
    }
    Ok(())
}

/// The cluster directory in a Redis server, over one connection, answered synchronously.
///
/// ```no_run
/// use pierce_core::cluster::{DirectoryAnswer, DirectoryRequest};
/// use pierce_mio::cluster::RedisDirectory;
///
/// let mut directory = RedisDirectory::connect("redis://127.0.0.1:6379", "pierce")?;
/// let number = directory.answer(&DirectoryRequest::Number { node: "eu-1".into() });
/// assert!(matches!(number, Ok(DirectoryAnswer::Number(_))));
/// # Ok::<(), pierce_mio::cluster::SetupError>(())
/// ```
pub struct RedisDirectory {
    client: redis::Client,
    url: String,
    connection: Option<Connection>,
    timeout: Duration,
    keys: Keys,
    scripts: Scripts,
}

impl fmt::Debug for RedisDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisDirectory")
            .field("url", &self.url)
            .field("prefix", &self.keys.prefix)
            .field("connected", &self.connection.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The keys every script names.
struct Keys {
    prefix: String,
    deadlines: String,
    nodes: String,
    noderooms: String,
}

impl Keys {
    fn new(namespace: &str) -> Self {
        let prefix = format!("pierce:{{{namespace}}}:");
        Self {
            deadlines: format!("{prefix}deadlines"),
            nodes: format!("{prefix}nodes"),
            noderooms: format!("{prefix}noderooms"),
            prefix,
        }
    }
}

struct Scripts {
    heartbeat: Script,
    claim: Script,
    hand: Script,
    release: Script,
    leave: Script,
    rooms: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            heartbeat: Script::new(&format!("{PRELUDE}{HEARTBEAT}")),
            claim: Script::new(&format!("{PRELUDE}{CLAIM}")),
            hand: Script::new(&format!("{PRELUDE}{HAND}")),
            release: Script::new(&format!("{PRELUDE}{RELEASE}")),
            leave: Script::new(&format!("{PRELUDE}{LEAVE}")),
            rooms: Script::new(&format!("{PRELUDE}{ROOMS}")),
        }
    }
}

impl RedisDirectory {
    /// A directory in the Redis at `url` (`redis://HOST:PORT` or `redis://HOST:PORT/DB`),
    /// its keys under namespace `namespace`. Connects at once if it can; if Redis cannot be
    /// reached now, the first request tries again (so a node may start before its Redis).
    ///
    /// # Errors
    /// [`SetupError`] naming a bad URL or namespace.
    pub fn connect(url: &str, namespace: &str) -> Result<Self, SetupError> {
        check_url(url)?;
        if !valid_id(namespace, false) {
            return Err(SetupError::Namespace(namespace.to_owned()));
        }
        let client = redis::Client::open(url).map_err(|_| SetupError::Url {
            url: url.to_owned(),
            why: "the Redis client does not accept it",
        })?;
        let mut directory = Self {
            client,
            url: url.to_owned(),
            connection: None,
            timeout: DEFAULT_TIMEOUT,
            keys: Keys::new(namespace),
            scripts: Scripts::new(),
        };
        directory.connection = directory.open().ok();
        Ok(directory)
    }

    /// Sets how long connecting, sending and reading may each take ([`DEFAULT_TIMEOUT`]).
    /// Takes effect from the next connection.
    ///
    /// # Panics
    /// If `timeout` is zero (a socket timeout of zero means none).
    pub fn set_timeout(&mut self, timeout: Duration) {
        assert!(!timeout.is_zero(), "a zero timeout would mean none");
        self.timeout = timeout;
        self.connection = None;
    }

    /// The URL it was made with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether it holds a connection now (it had one and nothing has failed since).
    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Asks Redis for a `PONG` (connecting first if it must).
    ///
    /// # Errors
    /// As [`RedisDirectory::answer`].
    pub fn ping(&mut self) -> Result<(), DirectoryError> {
        let pong: String = self.run(|c, _, _| redis::cmd("PING").query(c))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(DirectoryError::Malformed(format!("PING answered {pong:?}")))
        }
    }

    fn open(&self) -> Result<Connection, RedisError> {
        let connection = self.client.get_connection_with_timeout(self.timeout)?;
        connection.set_read_timeout(Some(self.timeout))?;
        connection.set_write_timeout(Some(self.timeout))?;
        Ok(connection)
    }

    /// Runs `f` on the connection (connecting first if there is none); any failure but an
    /// error Redis answered drops the connection, so the next call connects again.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &Keys, &Scripts) -> Result<T, RedisError>,
    ) -> Result<T, DirectoryError> {
        let mut connection = match self.connection.take() {
            Some(c) => c,
            None => self.open().map_err(|e| classify(&e))?,
        };
        match f(&mut connection, &self.keys, &self.scripts) {
            Ok(value) => {
                self.connection = Some(connection);
                Ok(value)
            }
            Err(e) => {
                if matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension) {
                    self.connection = Some(connection);
                }
                Err(classify(&e))
            }
        }
    }

    /// Answers `request` as [`pierce_core::cluster::MemoryDirectory::answer`] would, from
    /// Redis, atomically.
    ///
    /// # Errors
    /// [`DirectoryError::Unavailable`] when Redis cannot be reached or does not answer within
    /// the timeout (or answers that it cannot now: loading, read-only, out of memory);
    /// [`DirectoryError::Malformed`] when it answers something this cannot read.
    pub fn answer(
        &mut self,
        request: &DirectoryRequest,
    ) -> Result<DirectoryAnswer, DirectoryError> {
        match request {
            DirectoryRequest::Number { .. } => {
                let n: i64 = self.run(|c, k, _| {
                    redis::cmd("INCR")
                        .arg(format!("{}number", k.prefix))
                        .query(c)
                })?;
                // 1, 2, ... 65535, then 1 again: the reference's counter.
                let n = (n - 1).rem_euclid(i64::from(u16::MAX)) + 1;
                let n = u16::try_from(n).map_err(|_| malformed("node number"))?;
                Ok(DirectoryAnswer::Number(n))
            }
            DirectoryRequest::Heartbeat {
                node,
                rooms,
                ttl,
                room_ttl,
            } => {
                let value: Value = self.run(|c, k, s| {
                    let mut call = s.heartbeat.prepare_invoke();
                    call.key(&k.deadlines).key(&k.nodes).key(&k.noderooms);
                    call.arg(&k.prefix).arg(&node.id);
                    call.arg(encode_node(node)).arg(encode_rooms(rooms));
                    call.arg(millis(*ttl)).arg(millis(*room_ttl));
                    for room in rooms {
                        call.arg(&room.name);
                    }
                    call.invoke(c)
                })?;
                let [lost, ids, infos] = fields(value, "heartbeat answer")?;
                let lost = (array(lost, "lost rooms")?.into_iter())
                    .map(|v| text(v, "lost room"))
                    .collect::<Result<_, _>>()?;
                let mut nodes = Vec::new();
                for (id, info) in array(ids, "node ids")?
                    .into_iter()
                    .zip(array(infos, "nodes")?)
                {
                    nodes.push(read_node(id, info)?);
                }
                nodes.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(DirectoryAnswer::Nodes { nodes, lost })
            }
            DirectoryRequest::Claim {
                room,
                node,
                create,
                ttl,
            } => {
                let value: Value = self.run(|c, k, s| {
                    (s.claim.prepare_invoke())
                        .key(&k.deadlines)
                        .key(&k.nodes)
                        .arg(&k.prefix)
                        .arg(room)
                        .arg(node)
                        .arg(u8::from(*create))
                        .arg(millis(*ttl))
                        .invoke(c)
                })?;
                let mut answer = array(value, "claim answer")?.into_iter();
                let tag = answer.next().map(|v| text(v, "claim answer"));
                let claim = match tag.transpose()?.as_deref() {
                    Some("ours") => Claim::Ours,
                    Some("missing") => Claim::Missing,
                    Some("theirs") => {
                        let info = answer.next().unwrap_or(Value::Nil);
                        Claim::Theirs(decode_node(&bytes(info, "owner's node record")?)?)
                    }
                    _ => return Err(malformed("claim answer")),
                };
                Ok(DirectoryAnswer::Claim(claim))
            }
            DirectoryRequest::Hand {
                room,
                from,
                to,
                ttl,
            } => {
                let _: Value = self.run(|c, k, s| {
                    (s.hand.prepare_invoke())
                        .key(&k.deadlines)
                        .arg(&k.prefix)
                        .arg(room)
                        .arg(from)
                        .arg(to)
                        .arg(millis(*ttl))
                        .invoke(c)
                })?;
                Ok(DirectoryAnswer::Done)
            }
            DirectoryRequest::Release { room, node } => {
                let _: Value = self.run(|c, k, s| {
                    (s.release.prepare_invoke())
                        .key(&k.deadlines)
                        .arg(&k.prefix)
                        .arg(room)
                        .arg(node)
                        .invoke(c)
                })?;
                Ok(DirectoryAnswer::Done)
            }
            DirectoryRequest::Rooms => {
                let value: Value = self.run(|c, k, s| {
                    (s.rooms.prepare_invoke())
                        .key(&k.deadlines)
                        .key(&k.nodes)
                        .key(&k.noderooms)
                        .arg(&k.prefix)
                        .invoke(c)
                })?;
                let [ids, lists] = fields(value, "rooms answer")?;
                let mut per_node = Vec::new();
                for (id, list) in array(ids, "node ids")?
                    .into_iter()
                    .zip(array(lists, "room lists")?)
                {
                    let id = text(id, "node id")?;
                    let list = bytes(list, "room list")?;
                    per_node.push((id, decode_rooms(&list)?));
                }
                // The reference: nodes in id order, their rooms in name order (a stable
                // sort), the first of each name kept.
                per_node.sort_by(|a, b| a.0.cmp(&b.0));
                let mut all: Vec<ListedRoom> =
                    per_node.into_iter().flat_map(|(_, rooms)| rooms).collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                all.dedup_by(|a, b| a.name == b.name);
                Ok(DirectoryAnswer::Rooms(all))
            }
            DirectoryRequest::TakeTicket { id, ttl } => {
                let key = |k: &Keys| format!("{}ticket:{id}", k.prefix);
                let ms = millis(*ttl);
                if ms == 0 {
                    // Remembered for no time: first unless a live ticket has the id.
                    let taken: i64 =
                        self.run(|c, k, _| redis::cmd("EXISTS").arg(key(k)).query(c))?;
                    return Ok(DirectoryAnswer::Ticket(taken == 0));
                }
                let set: Value = self.run(|c, k, _| {
                    (redis::cmd("SET").arg(key(k)).arg(1))
                        .arg("NX")
                        .arg("PX")
                        .arg(ms)
                        .query(c)
                })?;
                match set {
                    Value::Okay => Ok(DirectoryAnswer::Ticket(true)),
                    Value::SimpleString(s) if s == "OK" => Ok(DirectoryAnswer::Ticket(true)),
                    Value::Nil => Ok(DirectoryAnswer::Ticket(false)),
                    _ => Err(malformed("SET NX answer")),
                }
            }
            DirectoryRequest::Leave { node } => {
                let _: Value = self.run(|c, k, s| {
                    (s.leave.prepare_invoke())
                        .key(&k.deadlines)
                        .key(&k.nodes)
                        .key(&k.noderooms)
                        .arg(&k.prefix)
                        .arg(node)
                        .invoke(c)
                })?;
                Ok(DirectoryAnswer::Done)
            }
            _ => Err(DirectoryError::Malformed(format!(
                "a request this runtime does not know: {request:?}"
            ))),
        }
    }
}

/// Unavailable for what makes Redis unreachable or unable to answer now; Malformed, with
/// Redis's words, for anything else.
fn classify(e: &RedisError) -> DirectoryError {
    let now_unable = matches!(
        e.code(),
        Some(
            "LOADING"
                | "BUSY"
                | "TRYAGAIN"
                | "CLUSTERDOWN"
                | "MASTERDOWN"
                | "READONLY"
                | "OOM"
                | "MISCONF"
        )
    );
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || now_unable {
        DirectoryError::Unavailable
    } else {
        DirectoryError::Malformed(format!("redis: {e}"))
    }
}

fn malformed(what: &str) -> DirectoryError {
    DirectoryError::Malformed(what.to_owned())
}

/// `d` in whole milliseconds, rounded up, at most [`MAX_TTL_MS`].
fn millis(d: Duration) -> u64 {
    let whole = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let up = u64::from(d.subsec_nanos() % 1_000_000 != 0);
    whole.saturating_add(up).min(MAX_TTL_MS)
}

fn array(v: Value, what: &str) -> Result<Vec<Value>, DirectoryError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(DirectoryError::Malformed(format!("{what}: not a list"))),
    }
}

fn fields<const N: usize>(v: Value, what: &str) -> Result<[Value; N], DirectoryError> {
    <[Value; N]>::try_from(array(v, what)?)
        .map_err(|_| DirectoryError::Malformed(format!("{what}: not {N} fields")))
}

fn bytes(v: Value, what: &str) -> Result<Vec<u8>, DirectoryError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Nil => Err(DirectoryError::Malformed(format!("{what}: missing"))),
        _ => Err(DirectoryError::Malformed(format!("{what}: not a string"))),
    }
}

fn text(v: Value, what: &str) -> Result<String, DirectoryError> {
    String::from_utf8(bytes(v, what)?)
        .map_err(|_| DirectoryError::Malformed(format!("{what}: not UTF-8")))
}

/// A registry entry: its id and record, which must name the same node.
fn read_node(id: Value, info: Value) -> Result<NodeInfo, DirectoryError> {
    let id = text(id, "node id")?;
    let node = decode_node(&bytes(info, &format!("node {id}'s record"))?)?;
    if node.id != id {
        return Err(DirectoryError::Malformed(format!(
            "node {id}'s record names node {}",
            node.id
        )));
    }
    Ok(node)
}

/// Percent-encodes every byte outside `!`..`~` and every `%`.
fn escape(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn unescape(s: &str, what: &str) -> Result<String, DirectoryError> {
    let bad = || DirectoryError::Malformed(format!("{what}: bad escape in {s:?}"));
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
            let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| DirectoryError::Malformed(format!("{what}: not UTF-8")))
}

/// A node's record: `1 ID REGION UDP TCP CLIENTS ROOMS BYTES_PER_SEC CPU DRAINING`.
fn encode_node(n: &NodeInfo) -> String {
    let mut out = String::from("1 ");
    escape(&n.id, &mut out);
    out.push(' ');
    escape(&n.region, &mut out);
    let tcp = n.tcp.map_or_else(|| "-".to_owned(), |a| a.to_string());
    let l = &n.load;
    let _ = write!(
        out,
        " {} {tcp} {} {} {} {} {}",
        n.udp,
        l.clients,
        l.rooms,
        l.relayed_bytes_per_sec,
        l.cpu_percent,
        u8::from(n.draining)
    );
    out
}

fn decode_node(record: &[u8]) -> Result<NodeInfo, DirectoryError> {
    let bad = |field: &str| {
        DirectoryError::Malformed(format!(
            "node record {:?}: {field}",
            String::from_utf8_lossy(record)
        ))
    };
    let record = std::str::from_utf8(record).map_err(|_| bad("not UTF-8"))?;
    let f: Vec<&str> = record.split(' ').collect();
    let [
        version,
        id,
        region,
        udp,
        tcp,
        clients,
        rooms,
        bps,
        cpu,
        draining,
    ] = f[..]
    else {
        return Err(bad("not 10 fields"));
    };
    if version != "1" {
        return Err(bad("unknown version"));
    }
    Ok(NodeInfo {
        id: unescape(id, "node id")?,
        region: unescape(region, "node region")?,
        udp: udp.parse().map_err(|_| bad("UDP address"))?,
        tcp: match tcp {
            "-" => None,
            a => Some(a.parse::<SocketAddr>().map_err(|_| bad("TCP address"))?),
        },
        load: NodeLoad {
            clients: clients.parse().map_err(|_| bad("clients"))?,
            rooms: rooms.parse().map_err(|_| bad("rooms"))?,
            relayed_bytes_per_sec: bps.parse().map_err(|_| bad("bytes per second"))?,
            cpu_percent: cpu.parse().map_err(|_| bad("CPU"))?,
        },
        draining: match draining {
            "0" => false,
            "1" => true,
            _ => return Err(bad("draining")),
        },
    })
}

/// A room list: `NAME MEMBERS MAX_MEMBERS FLAGS` a line.
fn encode_rooms(rooms: &[ListedRoom]) -> String {
    let mut out = String::new();
    for (i, r) in rooms.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        escape(&r.name, &mut out);
        let flags = u8::from(r.has_password) | u8::from(r.relay_only) << 1;
        let _ = write!(out, " {} {} {flags}", r.members, r.max_members);
    }
    out
}

fn decode_rooms(list: &[u8]) -> Result<Vec<ListedRoom>, DirectoryError> {
    let bad = |what: &str| {
        DirectoryError::Malformed(format!(
            "room list {:?}: {what}",
            String::from_utf8_lossy(list)
        ))
    };
    let list = std::str::from_utf8(list).map_err(|_| bad("not UTF-8"))?;
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let mut rooms = Vec::new();
    for line in list.split('\n') {
        let f: Vec<&str> = line.split(' ').collect();
        let [name, members, max_members, flags] = f[..] else {
            return Err(bad("a room is not 4 fields"));
        };
        let flags: u8 = flags.parse().map_err(|_| bad("flags"))?;
        if flags > 3 {
            return Err(bad("flags"));
        }
        rooms.push(ListedRoom {
            name: unescape(name, "room name")?,
            members: members.parse().map_err(|_| bad("members"))?,
            max_members: max_members.parse().map_err(|_| bad("member limit"))?,
            has_password: flags & 1 != 0,
            relay_only: flags & 2 != 0,
        });
    }
    Ok(rooms)
}

/// What every script starts with. KEYS[1] is always the deadlines; ARGV[1] the key prefix.
/// `now` is Redis's clock in ms; `live(id)`: node `id` is registered; `claim(name, node,
/// ttl)`: room `name` is `node`'s for `ttl` ms (and in its `owned` set, which lives at least
/// as long as its longest claim); a claim for no time removes the room's claim, as the
/// reference's claim that ends at once.
const PRELUDE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local P = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function live(id)
  local d = redis.call('ZSCORE', KEYS[1], id)
  return d and tonumber(d) > now
end
local function claim(name, node, ttl)
  local key = P .. 'room:' .. name
  if ttl > 0 then
    redis.call('SET', key, node, 'PX', ttl)
    local owned = P .. 'owned:' .. node
    redis.call('SADD', owned, name)
    if redis.call('PTTL', owned) < ttl then redis.call('PEXPIRE', owned, ttl) end
  else
    redis.call('DEL', key)
  end
end
";

/// KEYS: deadlines, nodes, noderooms. ARGV: prefix, id, record, room list, ttl, room ttl,
/// room names. Returns {lost rooms, registered ids, their records}.
const HEARTBEAT: &str = r"
local id, ttl, room_ttl = ARGV[2], tonumber(ARGV[5]), tonumber(ARGV[6])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
  redis.call('HDEL', KEYS[3], gone)
end
redis.call('ZADD', KEYS[1], now + ttl, id)
redis.call('HSET', KEYS[2], id, ARGV[3])
redis.call('HSET', KEYS[3], id, ARGV[4])
local lost, kept = {}, {}
for i = 7, #ARGV do
  local name = ARGV[i]
  local owner = redis.call('GET', P .. 'room:' .. name)
  if owner and owner ~= id and live(owner) then
    lost[#lost + 1] = name
  else
    claim(name, id, room_ttl)
    kept[name] = true
  end
end
local owned = P .. 'owned:' .. id
for _, name in ipairs(redis.call('SMEMBERS', owned)) do
  if not kept[name] and redis.call('GET', P .. 'room:' .. name) ~= id then
    redis.call('SREM', owned, name)
  end
end
local ids, records = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf'), {}
for i, node in ipairs(ids) do records[i] = redis.call('HGET', KEYS[2], node) end
return {lost, ids, records}
";

/// KEYS: deadlines, nodes. ARGV: prefix, room, node, create (0/1), ttl.
/// Returns {'ours'}, {'missing'} or {'theirs', owner's record}.
const CLAIM: &str = r"
local room, node = ARGV[2], ARGV[3]
local owner = redis.call('GET', P .. 'room:' .. room)
if owner and live(owner) then
  if owner == node then
    claim(room, node, tonumber(ARGV[5]))
    return {'ours'}
  end
  return {'theirs', redis.call('HGET', KEYS[2], owner)}
end
if ARGV[4] == '1' then
  claim(room, node, tonumber(ARGV[5]))
  return {'ours'}
end
return {'missing'}
";

/// KEYS: deadlines. ARGV: prefix, room, from, to, ttl.
const HAND: &str = r"
local room, from = ARGV[2], ARGV[3]
if redis.call('GET', P .. 'room:' .. room) == from then
  redis.call('SREM', P .. 'owned:' .. from, room)
  claim(room, ARGV[4], tonumber(ARGV[5]))
end
return 1
";

/// KEYS: deadlines. ARGV: prefix, room, node.
const RELEASE: &str = r"
local room, node = ARGV[2], ARGV[3]
local key = P .. 'room:' .. room
if redis.call('GET', key) == node then redis.call('DEL', key) end
redis.call('SREM', P .. 'owned:' .. node, room)
return 1
";

/// KEYS: deadlines, nodes, noderooms. ARGV: prefix, node.
const LEAVE: &str = r"
local node = ARGV[2]
redis.call('ZREM', KEYS[1], node)
redis.call('HDEL', KEYS[2], node)
redis.call('HDEL', KEYS[3], node)
local owned = P .. 'owned:' .. node
for _, name in ipairs(redis.call('SMEMBERS', owned)) do
  local key = P .. 'room:' .. name
  if redis.call('GET', key) == node then redis.call('DEL', key) end
end
redis.call('DEL', owned)
return 1
";

/// KEYS: deadlines, nodes, noderooms. ARGV: prefix. Returns {registered ids, room lists}.
const ROOMS: &str = r"
local ids, lists = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf'), {}
for i, node in ipairs(ids) do lists[i] = redis.call('HGET', KEYS[3], node) end
return {ids, lists}
";

/// A question's answer, as [`pierce_core::Server::handle_directory`] takes it.
pub type Answer = (QueryId, Result<DirectoryAnswer, DirectoryError>);

enum Job {
    Ask(QueryId, DirectoryRequest),
    Leave(String),
}

/// A thread that answers a node's directory questions from a [`RedisDirectory`], so the
/// driver's loop never waits for Redis.
///
/// The driver hands it each question ([`DirectoryThread::ask`]); the thread answers them in
/// the order asked and calls the wake callback after each answer (give it the mio
/// `Waker::wake` of the driver's `Poll`); the driver then drains
/// [`DirectoryThread::poll_answer`] into `Server::handle_directory`. A question that finds
/// [`QUEUE`] questions waiting (Redis hangs) is answered [`DirectoryError::Unavailable`] at
/// once, by `poll_answer`, without a wake: drain `poll_answer` after asking too.
///
/// Dropping it stops the thread: questions still waiting are dropped unanswered, the one
/// being answered finishes (within the directory's timeouts), and if
/// [`DirectoryThread::leave`] named a node, that node leaves the directory first.
pub struct DirectoryThread {
    jobs: Option<SyncSender<Job>>,
    answers: Receiver<Answer>,
    refused: VecDeque<QueryId>,
    stop: Arc<AtomicBool>,
    leave: Option<String>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for DirectoryThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryThread")
            .field("refused", &self.refused.len())
            .field("leave", &self.leave)
            .finish_non_exhaustive()
    }
}

impl DirectoryThread {
    /// Starts the thread (`pierce-directory`) with `directory`, calling `wake` after each
    /// answer, holding at most [`QUEUE`] questions.
    ///
    /// # Errors
    /// The OS refused a thread.
    pub fn spawn(directory: RedisDirectory, wake: Box<dyn Fn() + Send>) -> io::Result<Self> {
        Self::with_capacity(directory, QUEUE, wake)
    }

    /// As [`DirectoryThread::spawn`], holding at most `capacity` questions.
    ///
    /// # Errors
    /// The OS refused a thread.
    pub fn with_capacity(
        mut directory: RedisDirectory,
        capacity: usize,
        wake: Box<dyn Fn() + Send>,
    ) -> io::Result<Self> {
        let (jobs, inbox) = mpsc::sync_channel::<Job>(capacity);
        let (outbox, answers) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("pierce-directory".into())
            .spawn(move || serve(&mut directory, &inbox, &outbox, &*wake, &stopped))?;
        Ok(Self {
            jobs: Some(jobs),
            answers,
            refused: VecDeque::new(),
            stop,
            leave: None,
            thread: Some(thread),
        })
    }

    /// Hands the thread question `id`. If it holds [`QUEUE`] questions already (or has
    /// died), the answer is [`DirectoryError::Unavailable`], from the next `poll_answer`.
    pub fn ask(&mut self, id: QueryId, request: DirectoryRequest) {
        let taken =
            (self.jobs.as_ref()).is_some_and(|jobs| jobs.try_send(Job::Ask(id, request)).is_ok());
        if !taken {
            self.refused.push_back(id);
        }
    }

    /// The next answer, if one is ready: refused questions first, then the thread's in the
    /// order asked.
    #[must_use]
    pub fn poll_answer(&mut self) -> Option<Answer> {
        if let Some(id) = self.refused.pop_front() {
            return Some((id, Err(DirectoryError::Unavailable)));
        }
        self.answers.try_recv().ok()
    }

    /// When dropped, node `node` leaves the directory ([`DirectoryRequest::Leave`]: its
    /// registration and room claims go now rather than when they expire).
    pub fn leave(&mut self, node: impl Into<String>) {
        self.leave = Some(node.into());
    }
}

impl Drop for DirectoryThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(jobs) = self.jobs.take() {
            if let Some(node) = self.leave.take() {
                // Blocks only while the queue is full; the thread now drops the questions
                // it finds, so that is short.
                let _ = jobs.send(Job::Leave(node));
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    directory: &mut RedisDirectory,
    inbox: &Receiver<Job>,
    outbox: &Sender<Answer>,
    wake: &dyn Fn(),
    stop: &AtomicBool,
) {
    while let Ok(job) = inbox.recv() {
        match job {
            Job::Ask(id, request) => {
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                let answer = directory.answer(&request);
                if outbox.send((id, answer)).is_err() {
                    return;
                }
                wake();
            }
            Job::Leave(node) => {
                let _ = directory.answer(&DirectoryRequest::Leave { node });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(id: &str, tcp: Option<&str>) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            region: String::new(),
            udp: "[2001:db8::1]:7777".parse().unwrap(),
            tcp: tcp.map(|a| a.parse().unwrap()),
            load: NodeLoad {
                clients: 7,
                rooms: u32::MAX,
                relayed_bytes_per_sec: u64::MAX,
                cpu_percent: 250,
            },
            draining: true,
        }
    }

    #[test]
    fn node_records_read_back_as_written() {
        for n in [node("eu-1", None), node("a.b_c", Some("192.0.2.7:80"))] {
            assert_eq!(decode_node(encode_node(&n).as_bytes()), Ok(n));
        }
        assert_eq!(
            encode_node(&node("n", None)),
            "1 n  [2001:db8::1]:7777 - 7 4294967295 18446744073709551615 250 1"
        );
    }

    #[test]
    fn room_lists_with_spaces_percents_newlines_and_unicode_read_back_as_written() {
        let room = |name: &str, flags: u8| ListedRoom {
            name: name.into(),
            members: 3,
            max_members: 8,
            has_password: flags & 1 != 0,
            relay_only: flags & 2 != 0,
        };
        let rooms = vec![
            room("lobby", 0),
            room("a b%20c\nd", 1),
            room("", 2),
            room("Räume 🎲", 3),
        ];
        let encoded = encode_rooms(&rooms);
        assert_eq!(encoded.lines().count(), rooms.len(), "{encoded:?}");
        assert_eq!(decode_rooms(encoded.as_bytes()), Ok(rooms));
        assert_eq!(decode_rooms(b""), Ok(Vec::new()));
    }

    #[test]
    fn records_that_do_not_read_back_are_malformed_naming_the_field() {
        let bad = |r: &[u8]| match decode_node(r) {
            Err(DirectoryError::Malformed(what)) => what,
            other => panic!("{other:?}"),
        };
        assert!(bad(b"2 n  1.2.3.4:5 - 0 0 0 0 0").contains("version"));
        assert!(bad(b"1 n  1.2.3.4 - 0 0 0 0 0").contains("UDP"));
        assert!(bad(b"1 n  1.2.3.4:5 - 0 0 0 0 2").contains("draining"));
        assert!(bad(b"1 n  1.2.3.4:5 - -1 0 0 0 0").contains("clients"));
        assert!(bad(b"1 n%G1  1.2.3.4:5 - 0 0 0 0 0").contains("escape"));
        assert!(bad(b"1 n 1.2.3.4:5").contains("10 fields"));
        assert!(bad(&[0xff]).contains("UTF-8"));
        assert!(matches!(
            decode_rooms(b"r 1 8 4"),
            Err(DirectoryError::Malformed(w)) if w.contains("flags")
        ));
        assert!(matches!(
            decode_rooms(b"r 1 8"),
            Err(DirectoryError::Malformed(w)) if w.contains("4 fields")
        ));
    }

    #[test]
    fn urls_are_redis_host_port_and_an_optional_database() {
        for good in [
            "redis://127.0.0.1:6379",
            "redis://redis.internal:6380/2",
            "redis://[::1]:6379/0",
            "redis://localhost:1/",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("127.0.0.1:6379", "not a redis:// URL"),
            ("http://h:1", "not a redis:// URL"),
            ("rediss://h:1", "TLS"),
            ("redis://h", "port is missing"),
            ("redis://h:0", "1 to 65535"),
            ("redis://h:70000", "1 to 65535"),
            ("redis://:6379", "host is missing"),
            ("redis://::1:6379", "brackets"),
            ("redis://[::1:6379", "closing"),
            ("redis://[nope]:6379", "IPv6"),
            ("redis://u:p@h:1", "passwords"),
            ("redis://h:1/x", "database"),
            ("redis://h:1?db=2", "1 to 65535"),
        ] {
            let err = check_url(bad).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(why) && text.contains(bad), "{bad}: {text}");
        }
        let err = RedisDirectory::connect("redis://127.0.0.1:6379", "a{b}").unwrap_err();
        assert_eq!(err, SetupError::Namespace("a{b}".into()));
    }

    #[test]
    fn time_to_live_is_whole_milliseconds_rounded_up_and_bounded() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(300)), 300);
        assert_eq!(millis(Duration::from_micros(300_001)), 301);
        assert_eq!(millis(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn an_unreachable_redis_is_unavailable_and_does_not_block() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let mut d = RedisDirectory::connect("redis://127.0.0.1:1", "t").unwrap();
        assert!(!d.is_connected());
        assert_eq!(
            d.answer(&DirectoryRequest::Rooms),
            Err(DirectoryError::Unavailable)
        );
        assert_eq!(d.ping(), Err(DirectoryError::Unavailable));
    }
}
