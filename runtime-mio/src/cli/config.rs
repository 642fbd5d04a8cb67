//! `pierce server`'s settings: the defaults, then `--config FILE` (TOML), then the flags,
//! merged into one [`ServerSettings`]. `--print-config` writes it back
//! ([`ServerSettings::to_toml`]) in the format `--config` reads, every key documented.
//!
//! The file's schema lives here, not in the core (which has no serde): top-level keys for the
//! process (one for each flag of `pierce server`) and one section for each concern of
//! [`ServerConfig`]: `[session]`, `[handshake]`, `[stun]`, `[resets]`, `[relay]`, `[rooms]`.
//! Units are in the names (`_ms`, `_s`, `_bytes`, `_per_s`). Each section is declared once, in
//! the `sections!` table below, which gives its serde struct, how its keys reach the
//! [`ServerConfig`], their ranges and how they print.
//!
//! Checks, before anything touches the network, each an error naming the key by its dotted
//! path (`relay.rate_per_client_bytes_per_s`), exit status 2: TOML syntax; unknown keys (every
//! struct is `deny_unknown_fields`) and values of the wrong type (serde's error, located by
//! its span in the file); each value against its own range (read as a TOML integer, so a value
//! past `u16`/`u32` is out of range too, not wrapped); then what spans keys (keepalive below
//! idle timeout, ...), and last [`ServerConfig::validate`], its [`ConfigError`] mapped back to
//! the keys it concerns.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use pierce_core::{
    ConfigError, MAX_DATAGRAM_SIZE, MAX_RELAY_SHARDS, MIN_DATAGRAM_SIZE, RoomsConfig, SecretKey,
    ServerConfig,
};
use serde::Deserialize;

use super::CliError;
use super::args::{
    LogFormat, LogLevel, MAX_DRAIN_TIMEOUT_MS, MAX_SECS, ServerArgs, check_alt_listen, parse_addr,
    parse_alt_listen, parse_listen, parse_node_id, parse_redis_url, parse_region,
};

/// Longest duration in milliseconds a `_ms` key takes: a day, as the flags' seconds
/// ([`MAX_SECS`]); keeps every deadline computed from it far from `Instant` overflow.
const MAX_MS: i64 = MAX_SECS as i64 * 1000;
/// Longest resumption ticket lifetime: 30 days.
const MAX_TICKET_S: i64 = 30 * 86_400;
/// Largest queue length a `max_queued_*` or `max_half_open` key takes (2^20): far past any
/// sensible setting, and small enough that a full queue cannot take the machine's memory by
/// surprise from one typo.
const MAX_QUEUE: i64 = 1 << 20;
/// Sessions (and rooms, and pending events) a server can hold at most: a session id carries
/// its slot in 24 bits.
const MAX_SESSIONS: i64 = 1 << 24;
/// `u32::MAX`, the top of every rate and burst key.
const U32: i64 = u32::MAX as i64;
/// `u16::MAX`, the top of the room size keys.
const U16: i64 = u16::MAX as i64;
/// Largest secret file read, in bytes.
pub const MAX_SECRET_FILE: u64 = 4096;
/// Largest config file read, in bytes.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;
/// `drain_timeout_ms`'s default.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 10_000;

/// How a key's value is written in the file and kept in the settings.
trait Unit {
    /// What the settings hold.
    type Value;
    /// What the file holds (a TOML integer or boolean).
    type File;
    /// `raw` from the file at `key`, checked against `lo..=hi` (in the file's unit).
    fn load(key: &str, raw: Self::File, lo: i64, hi: i64) -> Result<Self::Value, String>;
    /// The value as TOML, in the file's unit.
    fn show(v: &Self::Value) -> String;
    /// `lo..=hi` for the key's comment.
    fn range(lo: i64, hi: i64) -> String {
        format!(" Range: {lo} to {hi}.")
    }
}

/// Whole milliseconds.
struct Ms;
/// Whole seconds.
struct Secs;
/// A count of the given type.
struct Int<T>(PhantomData<T>);
/// A switch.
struct Flag;

fn in_range(key: &str, raw: i64, lo: i64, hi: i64) -> Result<i64, String> {
    if (lo..=hi).contains(&raw) {
        Ok(raw)
    } else {
        Err(format!(
            "{key} = {raw} is out of range: expected a whole number from {lo} to {hi}"
        ))
    }
}

impl Unit for Ms {
    type Value = Duration;
    type File = i64;
    fn load(key: &str, raw: i64, lo: i64, hi: i64) -> Result<Duration, String> {
        in_range(key, raw, lo, hi).map(|ms| Duration::from_millis(ms.unsigned_abs()))
    }
    fn show(v: &Duration) -> String {
        v.as_millis().to_string()
    }
}

impl Unit for Secs {
    type Value = Duration;
    type File = i64;
    fn load(key: &str, raw: i64, lo: i64, hi: i64) -> Result<Duration, String> {
        in_range(key, raw, lo, hi).map(|s| Duration::from_secs(s.unsigned_abs()))
    }
    fn show(v: &Duration) -> String {
        v.as_secs().to_string()
    }
}

impl<T: TryFrom<i64> + ToString> Unit for Int<T> {
    type Value = T;
    type File = i64;
    fn load(key: &str, raw: i64, lo: i64, hi: i64) -> Result<T, String> {
        let v = in_range(key, raw, lo, hi)?;
        // Every range here fits its type; should one not, the value is still refused.
        T::try_from(v).map_err(|_| format!("{key} = {raw} is out of range"))
    }
    fn show(v: &T) -> String {
        v.to_string()
    }
}

impl Unit for Flag {
    type Value = bool;
    type File = bool;
    fn load(_: &str, raw: bool, _: i64, _: i64) -> Result<bool, String> {
        Ok(raw)
    }
    fn show(v: &bool) -> String {
        v.to_string()
    }
    fn range(_: i64, _: i64) -> String {
        String::new()
    }
}

/// The core's settings as the sections set them: a [`ServerConfig`] (its key a placeholder
/// until [`ServerSettings::server_config`]), the rooms policy and whether it is on.
#[derive(Clone, Debug)]
struct Core {
    config: ServerConfig,
    rooms: RoomsConfig,
    rooms_enabled: bool,
}

impl Default for Core {
    fn default() -> Self {
        Self {
            config: ServerConfig::new(SecretKey::from_bytes([0; 32])),
            rooms: RoomsConfig::default(),
            rooms_enabled: true,
        }
    }
}

/// The sections: for each, its name, its struct, a line about it, and its keys as
/// `name: unit, lo, hi => where in Core; "what it means"`.
macro_rules! sections {
    ($(
        [$section:ident] $Section:ident $about:literal {
            $( $key:ident: $unit:ty, $lo:expr, $hi:expr => $($place:ident).+; $doc:literal )*
        }
    )*) => {
        $(
            #[derive(Debug, Default, Deserialize)]
            #[serde(deny_unknown_fields)]
            struct $Section {
                $( $key: Option<<$unit as Unit>::File>, )*
            }
        )*

        /// The file: the process's keys, then the sections.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            listen: Option<String>,
            alt_listen: Option<String>,
            key_file: Option<String>,
            secret: Option<String>,
            secret_file: Option<String>,
            json: Option<bool>,
            stats_every_s: Option<i64>,
            threads: Option<i64>,
            no_offload: Option<bool>,
            log_level: Option<String>,
            log_format: Option<String>,
            metrics: Option<String>,
            admin_token_file: Option<String>,
            drain_timeout_ms: Option<i64>,
            cluster: Option<ClusterFile>,
            $( $section: Option<$Section>, )*
        }

        impl Core {
            /// The sections of `file` over `self`.
            fn apply(&mut self, file: &File) -> Result<(), String> {
                $(
                    if let Some(s) = &file.$section {
                        $(
                            if let Some(raw) = s.$key {
                                self.$($place).+ = <$unit as Unit>::load(
                                    concat!(stringify!($section), ".", stringify!($key)),
                                    raw,
                                    $lo,
                                    $hi,
                                )?;
                            }
                        )*
                    }
                )*
                Ok(())
            }

            /// The sections as TOML, each key after a comment saying what it means, its range
            /// and its default.
            fn write(&self, out: &mut String) {
                let defaults = Self::default();
                $(
                    out.push_str(concat!("\n[", stringify!($section), "]\n"));
                    comment(out, $about);
                    $(
                        out.push('\n');
                        let range = <$unit as Unit>::range($lo, $hi);
                        let default = <$unit as Unit>::show(&defaults.$($place).+);
                        comment(out, &format!("{}{range} Default: {default}.", $doc));
                        let _ = writeln!(
                            out,
                            "{} = {}",
                            stringify!($key),
                            <$unit as Unit>::show(&self.$($place).+)
                        );
                    )*
                )*
            }
        }

        /// Every key of the sections: its dotted path and range (a switch's is 0 to 1).
        #[cfg(test)]
        const SECTION_KEYS: &[(&str, i64, i64)] = &[
            $( $( (concat!(stringify!($section), ".", stringify!($key)), $lo, $hi), )* )*
        ];
    };
}

type U32Count = Int<u32>;
type U16Count = Int<u16>;
type Count = Int<usize>;

sections! {
    [session] Session "Client sessions: timing and per-client limits." {
        keepalive_interval_ms: Ms, 1, MAX_MS => config.keepalive_interval;
            "Send a client a keepalive after this long without sending it anything; less than idle_timeout_ms."
        idle_timeout_ms: Ms, 1, MAX_MS => config.idle_timeout;
            "Drop a client after this long without an authentic packet from it."
        offline_after_ms: Ms, 0, MAX_MS => config.offline_after;
            "Call a client offline after this long without a packet from it (its peers hear it is recovering; it has until idle_timeout_ms to come back, from any address); less than idle_timeout_ms, 0: never."
        ticket_lifetime_s: Secs, 0, MAX_TICKET_S => config.ticket_lifetime;
            "How long a resumption ticket stays good: a client whose session is gone (it timed out, or the server restarted with the same key_file) gets its host id back with it. 0: no tickets."
        max_clients: Count, 1, MAX_SESSIONS => config.max_clients;
            "Connected clients at most; more are rejected (ServerFull)."
        max_datagram_bytes: Count, MIN_DATAGRAM_SIZE as i64, MAX_DATAGRAM_SIZE as i64 => config.max_datagram_size;
            "Largest datagram the server sends, in bytes."
        max_queued_datagrams_per_client: Count, 1, MAX_QUEUE => config.max_queued_datagrams_per_client;
            "Datagrams queued for one client and not yet sent, at most."
        max_queued_control_per_client: Count, 1, MAX_QUEUE => config.max_queued_control_per_client;
            "Control messages queued for one client and not yet acknowledged, at most; a client that falls this far behind is disconnected."
        max_pending_events: Count, 1, MAX_SESSIONS => config.max_pending_events;
            "Server events not yet handled, at most."
    }
    [handshake] Handshake "Handshakes: half-open state, cookies and rate limits (per second, sustained; bursts in handshakes)." {
        timeout_ms: Ms, 1, MAX_MS => config.handshake_timeout;
            "Forget a half-open handshake after this long."
        max_half_open: Count, 1, MAX_QUEUE => config.max_half_open;
            "Half-open handshakes held at once, at most; beyond it new hellos are dropped."
        cookie_threshold: Count, 0, MAX_QUEUE => config.cookie_threshold;
            "From this many half-open handshakes on, a hello must echo a stateless cookie first (one more round trip). 0: always."
        max_sessionless_streams: Count, 1, pierce_core::streams::DEFAULT_MAX_STREAMS as i64 - 1 => config.max_sessionless_streams;
            "TCP streams without a session held at once, at most (a newer one closes the oldest); below the 1024 streams the server accepts."
        rate_per_ip_per_s: U32Count, 0, U32 => config.handshake_rate_per_ip;
            "Handshakes one source IP may start per second without proving it receives at its address; over it, a Retry (cookie) is asked."
        burst_per_ip: U32Count, 0, U32 => config.handshake_burst_per_ip;
            "Unproven handshakes one source IP may start in a burst."
        rate_global_per_s: U32Count, 1, U32 => config.handshake_rate_global;
            "Handshakes per second the whole server starts, for each kind of source (unproven, proven)."
        burst_global: U32Count, 1, U32 => config.handshake_burst_global;
            "Handshakes the whole server may start in a burst (each kind)."
        proven_rate_per_ip_per_s: U32Count, 1, U32 => config.proven_handshake_rate_per_ip;
            "Handshakes per second one source IP may start with hellos that echoed a cookie or came over TCP; over it, dropped."
        proven_burst_per_ip: U32Count, 1, U32 => config.proven_handshake_burst_per_ip;
            "Proven handshakes one source IP may start in a burst."
    }
    [stun] Stun "STUN Binding requests answered (per second, sustained; bursts in requests)." {
        rate_per_ip_per_s: U32Count, 0, U32 => config.stun_rate_per_ip;
            "Requests answered per second for one source IP."
        burst_per_ip: U32Count, 0, U32 => config.stun_burst_per_ip;
            "Requests answered for one source IP in a burst."
        rate_global_per_s: U32Count, 0, U32 => config.stun_rate_global;
            "Requests the whole server answers per second."
        burst_global: U32Count, 0, U32 => config.stun_burst_global;
            "Requests the whole server answers in a burst."
    }
    [resets] Resets "Stateless resets, sent in answer to packets of sessions the server does not have (after a restart, they tell old clients at once)." {
        rate_global_per_s: U32Count, 0, U32 => config.reset_rate_global;
            "Resets the whole server sends per second; 0: none."
        burst_global: U32Count, 0, U32 => config.reset_burst_global;
            "Resets the whole server may send in a burst."
    }
    [relay] Relay "Relayed traffic between peers; over a budget, packets are dropped and counted." {
        rate_per_client_bytes_per_s: U32Count, 0, U32 => config.relay_rate_per_client;
            "Bytes per second one client may have relayed (sustained)."
        burst_per_client_bytes: U32Count, 0, U32 => config.relay_burst_per_client;
            "Bytes one client may have relayed in a burst."
        rate_per_group_bytes_per_s: U32Count, 0, U32 => config.relay_rate_per_group;
            "Bytes per second relayed within one group (room)."
        rate_total_bytes_per_s: U32Count, 0, U32 => config.relay_rate_total;
            "Bytes per second relayed through the whole server."
        max_queued_packets_per_client: Count, 1, MAX_QUEUE => config.max_queued_relay_per_client;
            "Peer packets waiting for one recipient, at most."
    }
    [rooms] Rooms "The rooms policy: named rooms with an optional password, listing, join-random." {
        enabled: Flag, 0, 1 => rooms_enabled;
            "Rooms on; false: room requests fail (the server has no rooms)."
        max_rooms: Count, 1, MAX_SESSIONS => rooms.max_rooms;
            "Rooms on the server, at most."
        default_max_members: U16Count, 1, U16 => rooms.default_max_members;
            "Member limit of a room whose creator asked for none; at most max_members_cap."
        max_members_cap: U16Count, 1, U16 => rooms.max_members_cap;
            "Largest member limit a room's creator may ask for."
        relay_only: Flag, 0, 1 => rooms.relay_only;
            "IP privacy for every room (--relay-only-rooms): members never learn each other's addresses, never punch, and all their traffic goes through this server's relay."
    }
}

/// The file's `[cluster]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    redis: Option<String>,
    node_id: Option<String>,
    advertise: Option<String>,
    region: Option<String>,
    namespace: Option<String>,
    heartbeat_ms: Option<i64>,
    node_ttl_ms: Option<i64>,
    room_ttl_ms: Option<i64>,
    answer_timeout_ms: Option<i64>,
}

/// Longest cluster timing, in milliseconds (an hour).
const MAX_CLUSTER_MS: i64 = 3_600_000;

/// `[cluster]`, and `--cluster`, `--node-id`, `--advertise`, `--region`,
/// `--cluster-namespace`: running as one node of a cluster (off without `redis`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis` / `--cluster`: the directory's URL.
    pub redis: Option<String>,
    /// `node_id` / `--node-id`.
    pub node_id: Option<String>,
    /// `advertise` / `--advertise` (default: `listen`, if a specific IP).
    pub advertise: Option<SocketAddr>,
    /// `region` / `--region`.
    pub region: String,
    /// `namespace` / `--cluster-namespace`: the key prefix in Redis.
    pub namespace: String,
    /// `heartbeat_ms`.
    pub heartbeat: Duration,
    /// `node_ttl_ms`.
    pub node_ttl: Duration,
    /// `room_ttl_ms`.
    pub room_ttl: Duration,
    /// `answer_timeout_ms`.
    pub answer_timeout: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        let c =
            pierce_core::cluster::ClusterConfig::new("x", "", SocketAddr::from(([1, 1, 1, 1], 1)));
        Self {
            redis: None,
            node_id: None,
            advertise: None,
            region: String::new(),
            namespace: "pierce".to_owned(),
            heartbeat: c.heartbeat,
            node_ttl: c.node_ttl,
            room_ttl: c.room_ttl,
            answer_timeout: c.answer_timeout,
        }
    }
}

impl ClusterSettings {
    fn apply_file(&mut self, f: &ClusterFile) -> Result<(), String> {
        let text = |key: &str, v: &Option<String>, parse: fn(&str) -> Result<String, String>| {
            v.as_deref()
                .map(|s| parse(s).map_err(|e| format!("cluster.{key}: {e}")))
                .transpose()
        };
        if let Some(u) = text("redis", &f.redis, parse_redis_url)? {
            self.redis = Some(u);
        }
        if let Some(id) = text("node_id", &f.node_id, parse_node_id)? {
            self.node_id = Some(id);
        }
        if let Some(a) = &f.advertise {
            let a = parse_addr(a).map_err(|e| format!("cluster.advertise = {a:?}: {e}"))?;
            self.advertise = Some(a);
        }
        if let Some(r) = text("region", &f.region, parse_region)? {
            self.region = r;
        }
        if let Some(n) = text("namespace", &f.namespace, parse_node_id)? {
            self.namespace = n;
        }
        let ms = |key: &str, v: Option<i64>, to: &mut Duration| -> Result<(), String> {
            if let Some(raw) = v {
                *to = Ms::load(&format!("cluster.{key}"), raw, 1, MAX_CLUSTER_MS)?;
            }
            Ok(())
        };
        ms("heartbeat_ms", f.heartbeat_ms, &mut self.heartbeat)?;
        ms("node_ttl_ms", f.node_ttl_ms, &mut self.node_ttl)?;
        ms("room_ttl_ms", f.room_ttl_ms, &mut self.room_ttl)?;
        ms(
            "answer_timeout_ms",
            f.answer_timeout_ms,
            &mut self.answer_timeout,
        )?;
        Ok(())
    }

    fn apply_flags(&mut self, args: &ServerArgs) {
        if let Some(u) = &args.cluster {
            self.redis = Some(u.clone());
        }
        if let Some(id) = &args.node_id {
            self.node_id = Some(id.clone());
        }
        if args.advertise.is_some() {
            self.advertise = args.advertise;
        }
        if let Some(r) = &args.region {
            self.region = r.clone();
        }
        if let Some(n) = &args.cluster_namespace {
            self.namespace = n.clone();
        }
    }

    /// The core's cluster settings, if this is a cluster node (`listen`: where the server
    /// listens, the advertised address unless one is given).
    ///
    /// # Errors
    /// Half a cluster setup, or no address to advertise, named.
    pub fn config(
        &self,
        listen: Option<SocketAddr>,
    ) -> Result<Option<pierce_core::cluster::ClusterConfig>, String> {
        let node_id = match (&self.redis, &self.node_id) {
            (None, None) => return Ok(None),
            (Some(_), Some(id)) => id,
            (Some(_), None) => {
                return Err("cluster.redis (--cluster) needs cluster.node_id (--node-id)".into());
            }
            (None, Some(_)) => {
                return Err("cluster.node_id (--node-id) needs cluster.redis (--cluster)".into());
            }
        };
        let unspecified = SocketAddr::from(([0; 4], 0));
        let advertise = self.advertise.or(listen).unwrap_or(unspecified);
        if advertise.ip().to_canonical().is_unspecified() || advertise.port() == 0 {
            return Err(format!(
                "cluster.advertise (--advertise): other nodes send clients to this node at its \
                 advertised address; listen is {advertise}, so give the address clients reach \
                 it at"
            ));
        }
        let mut c = pierce_core::cluster::ClusterConfig::new(
            node_id.clone(),
            self.region.clone(),
            advertise,
        );
        c.advertise_tcp = Some(advertise);
        c.heartbeat = self.heartbeat;
        c.node_ttl = self.node_ttl;
        c.room_ttl = self.room_ttl;
        c.answer_timeout = self.answer_timeout;
        c.validate().map_err(|e| {
            let e = e.to_string();
            e.replace("cluster.heartbeat", "cluster.heartbeat_ms")
                .replace("cluster.node_ttl", "cluster.node_ttl_ms")
                .replace("cluster.room_ttl", "cluster.room_ttl_ms")
                .replace("cluster.answer_timeout", "cluster.answer_timeout_ms")
        })?;
        Ok(Some(c))
    }

    fn write(&self, out: &mut String) {
        let d = Self::default();
        out.push_str("\n[cluster]\n");
        comment(
            out,
            "Run as one node of a cluster sharing a directory in Redis (node registry, room \
             claims, single-use tickets): on when redis and node_id are set. Every node shares \
             the server key (key_file).",
        );
        let line = key_line;
        line(
            out,
            "redis",
            "The directory (--cluster): redis://HOST:PORT or redis://HOST:PORT/DB. Default: none (no cluster).",
            self.redis.as_deref().map(quote),
        );
        line(
            out,
            "node_id",
            "This node's id, unique in the cluster (--node-id): 1 to 64 of A-Z a-z 0-9 . _ -. Default: none.",
            self.node_id.as_deref().map(quote),
        );
        line(
            out,
            "advertise",
            "Where clients reach this node (--advertise IP:PORT). Default: listen, if a specific IP.",
            self.advertise.map(|a| quote(&a.to_string())),
        );
        line(
            out,
            "region",
            "This node's region (--region): new rooms go to the least-loaded node of the region of the node a client reached. Default: \"\" (one region).",
            Some(quote(&self.region)),
        );
        line(
            out,
            "namespace",
            &format!(
                "The cluster's key prefix in Redis (--cluster-namespace). Default: {}.",
                d.namespace
            ),
            Some(quote(&self.namespace)),
        );
        let ms = |v: Duration| Some(v.as_millis().to_string());
        line(
            out,
            "heartbeat_ms",
            &format!(
                "Heartbeat period (registry, room claims, room list). Range: 1 to {MAX_CLUSTER_MS}. Default: {}.",
                d.heartbeat.as_millis()
            ),
            ms(self.heartbeat),
        );
        line(
            out,
            "node_ttl_ms",
            &format!(
                "A node silent this long is gone; more than twice heartbeat_ms. Range: 1 to {MAX_CLUSTER_MS}. Default: {}.",
                d.node_ttl.as_millis()
            ),
            ms(self.node_ttl),
        );
        line(
            out,
            "room_ttl_ms",
            &format!(
                "A room claim not refreshed this long expires; more than twice heartbeat_ms. Range: 1 to {MAX_CLUSTER_MS}. Default: {}.",
                d.room_ttl.as_millis()
            ),
            ms(self.room_ttl),
        );
        line(
            out,
            "answer_timeout_ms",
            &format!(
                "A directory question unanswered this long has failed. Range: 1 to {MAX_CLUSTER_MS}. Default: {}.",
                d.answer_timeout.as_millis()
            ),
            ms(self.answer_timeout),
        );
    }
}

/// Where the shared secret for connect tokens comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// `--secret S`: not printed by `--print-config`.
    Flag(String),
    /// `secret = "S"` in the config file: printed back as it was.
    Inline(String),
    /// `secret_file = "PATH"`: the file's contents, surrounding whitespace (the final
    /// newline) removed; printed back as the path.
    File {
        /// The path as given.
        path: PathBuf,
        /// What the file holds.
        secret: Vec<u8>,
    },
}

impl Secret {
    /// The secret's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Flag(s) | Self::Inline(s) => s.as_bytes(),
            Self::File { secret, .. } => secret,
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag(_) => f.write_str("Secret::Flag(..)"),
            Self::Inline(_) => f.write_str("Secret::Inline(..)"),
            Self::File { path, .. } => write!(f, "Secret::File({})", path.display()),
        }
    }
}

/// `pierce server`'s effective settings: the defaults, then `--config`'s file, then the flags
/// ([`ServerSettings::load`]).
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// `listen` / `--listen` (required to run; `--print-config` runs without).
    pub listen: Option<SocketAddr>,
    /// `alt_listen` / `--alt-listen`.
    pub alt_listen: Option<SocketAddr>,
    /// `key_file` / `--key-file`.
    pub key_file: Option<PathBuf>,
    /// `secret`, `secret_file` / `--secret`.
    pub secret: Option<Secret>,
    /// `json` / `--json`.
    pub json: bool,
    /// `stats_every_s` / `--stats-every`, in seconds.
    pub stats_every_s: Option<u64>,
    /// `threads` / `--threads`: 1, or that many relay threads (see
    /// [`ServerSettings::relay_threads`]).
    pub threads: u16,
    /// `no_offload` / `--no-offload`.
    pub no_offload: bool,
    /// `log_level` / `--log-level`.
    pub log_level: LogLevel,
    /// `log_format` / `--log-format`.
    pub log_format: LogFormat,
    /// `metrics` / `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// `admin_token_file` / `--admin-token-file`.
    pub admin_token_file: Option<PathBuf>,
    /// `drain_timeout_ms` / `--drain-timeout-ms`.
    pub drain_timeout: Duration,
    /// `[cluster]` and its flags.
    pub cluster: ClusterSettings,
    /// Every section's key.
    core: Core,
    /// Where the key file came from, for its errors: `--key-file` or `key_file`.
    key_file_from: &'static str,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: None,
            alt_listen: None,
            key_file: None,
            secret: None,
            json: false,
            stats_every_s: None,
            threads: default_threads(),
            no_offload: false,
            log_level: LogLevel::Off,
            log_format: LogFormat::Text,
            metrics: None,
            admin_token_file: None,
            drain_timeout: Duration::from_millis(DEFAULT_DRAIN_TIMEOUT_MS),
            cluster: ClusterSettings::default(),
            core: Core::default(),
            key_file_from: "--key-file",
        }
    }
}

/// `--threads`' default: the number of cores where relay threads work (Linux), else 1.
pub fn default_threads() -> u16 {
    if cfg!(target_os = "linux") {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        u16::try_from(cores).map_or(MAX_RELAY_SHARDS, |n| n.min(MAX_RELAY_SHARDS))
    } else {
        1
    }
}

impl ServerSettings {
    /// The defaults, then `args.config`'s file, then the flags of `args`; checked.
    ///
    /// # Errors
    /// A usage error (exit status 2) for a file that cannot be read, is not TOML, or holds an
    /// unknown key or a bad value (named by its dotted path); for settings that contradict
    /// each other; and for no `listen` at all unless `--print-config`.
    pub fn load(args: &ServerArgs) -> Result<Self, CliError> {
        let mut settings = Self::default();
        if let Some(path) = &args.config {
            let text = read_config_file(path)?;
            let named = |m: String| CliError::usage(format!("--config {}: {m}", path.display()));
            settings.apply_file(&text).map_err(named)?;
        }
        settings.apply_flags(args);
        settings.check().map_err(CliError::usage)?;
        if settings.listen.is_none() && !args.print_config {
            return Err(CliError::usage(
                "no address to listen on: give --listen IP:PORT, or `listen` in --config's \
                 file"
                    .to_owned(),
            ));
        }
        Ok(settings)
    }

    /// The keys of a config file's `text` over `self` (paths in it as given: relative ones
    /// are relative to the working directory).
    ///
    /// # Errors
    /// What is wrong, naming the key by its dotted path.
    pub fn apply_file(&mut self, text: &str) -> Result<(), String> {
        let file = parse_file(text)?;
        let addr =
            |key: &str, v: &Option<String>, parse: fn(&str) -> Result<SocketAddr, String>| {
                v.as_deref()
                    .map(|s| parse(s).map_err(|e| format!("{key} = {s:?}: {e}")))
                    .transpose()
            };
        let path = |key: &str, v: &Option<String>| -> Result<Option<PathBuf>, String> {
            match v.as_deref() {
                Some("") => Err(format!("{key}: expected a path, not an empty string")),
                v => Ok(v.map(PathBuf::from)),
            }
        };
        if let Some(a) = addr("listen", &file.listen, parse_listen)? {
            self.listen = Some(a);
        }
        if let Some(a) = addr("alt_listen", &file.alt_listen, parse_alt_listen)? {
            self.alt_listen = Some(a);
        }
        if let Some(p) = path("key_file", &file.key_file)? {
            self.key_file = Some(p);
            self.key_file_from = "key_file";
        }
        self.secret = match (&file.secret, path("secret_file", &file.secret_file)?) {
            (Some(_), Some(_)) => {
                return Err("secret and secret_file: give one of them, not both".to_owned());
            }
            (Some(s), None) if s.is_empty() => {
                return Err("secret: expected a secret, not an empty string".to_owned());
            }
            (Some(s), None) => Some(Secret::Inline(s.clone())),
            (None, Some(p)) => {
                let secret = read_secret_file(&p)?;
                Some(Secret::File { path: p, secret })
            }
            (None, None) => self.secret.take(),
        };
        if let Some(b) = file.json {
            self.json = b;
        }
        if let Some(n) = file.stats_every_s {
            let n = in_range("stats_every_s", n, 1, MAX_SECS as i64)?;
            self.stats_every_s = Some(n.unsigned_abs());
        }
        if let Some(n) = file.threads {
            self.threads = Int::<u16>::load("threads", n, 1, i64::from(MAX_RELAY_SHARDS))?;
        }
        if let Some(b) = file.no_offload {
            self.no_offload = b;
        }
        if let Some(s) = &file.log_level {
            self.log_level = value_enum("log_level", s)?;
        }
        if let Some(s) = &file.log_format {
            self.log_format = value_enum("log_format", s)?;
        }
        if let Some(a) = addr("metrics", &file.metrics, parse_listen)? {
            self.metrics = Some(a);
        }
        if let Some(p) = path("admin_token_file", &file.admin_token_file)? {
            self.admin_token_file = Some(p);
        }
        if let Some(n) = file.drain_timeout_ms {
            let max = MAX_DRAIN_TIMEOUT_MS as i64;
            self.drain_timeout = Ms::load("drain_timeout_ms", n, 1, max)?;
        }
        if let Some(c) = &file.cluster {
            self.cluster.apply_file(c)?;
        }
        self.core.apply(&file)
    }

    /// The flags given in `args` over `self` (their values were checked by their parsers).
    fn apply_flags(&mut self, args: &ServerArgs) {
        if args.listen.is_some() {
            self.listen = args.listen;
        }
        if args.alt_listen.is_some() {
            self.alt_listen = args.alt_listen;
        }
        if let Some(p) = &args.key_file {
            self.key_file = Some(p.clone());
            self.key_file_from = "--key-file";
        }
        if let Some(s) = &args.secret {
            self.secret = Some(Secret::Flag(s.clone()));
        }
        self.json |= args.json;
        if args.stats_every.is_some() {
            self.stats_every_s = args.stats_every;
        }
        if let Some(n) = args.threads {
            self.threads = n;
        }
        self.no_offload |= args.no_offload;
        self.core.rooms.relay_only |= args.relay_only_rooms;
        if let Some(l) = args.log_level {
            self.log_level = l;
        }
        if let Some(f) = args.log_format {
            self.log_format = f;
        }
        if args.metrics.is_some() {
            self.metrics = args.metrics;
        }
        if let Some(p) = &args.admin_token_file {
            self.admin_token_file = Some(p.clone());
        }
        if let Some(ms) = args.drain_timeout_ms {
            self.drain_timeout = Duration::from_millis(ms);
        }
        self.cluster.apply_flags(args);
    }

    /// What spans keys, then the core's own [`ServerConfig::validate`].
    ///
    /// # Errors
    /// What contradicts what, naming the keys.
    pub fn check(&self) -> Result<(), String> {
        if let (Some(alt), Some(listen)) = (self.alt_listen, self.listen) {
            check_alt_listen(
                alt,
                listen,
                "alt_listen (--alt-listen)",
                "listen (--listen)",
            )?;
        }
        let c = &self.core.config;
        if c.keepalive_interval >= c.idle_timeout {
            return Err(format!(
                "session.keepalive_interval_ms ({}) must be less than session.idle_timeout_ms \
                 ({})",
                c.keepalive_interval.as_millis(),
                c.idle_timeout.as_millis()
            ));
        }
        if !c.offline_after.is_zero() && c.offline_after >= c.idle_timeout {
            return Err(format!(
                "session.offline_after_ms ({}) must be less than session.idle_timeout_ms ({}), \
                 or 0 (never)",
                c.offline_after.as_millis(),
                c.idle_timeout.as_millis()
            ));
        }
        let r = &self.core.rooms;
        if r.default_max_members > r.max_members_cap {
            return Err(format!(
                "rooms.default_max_members ({}) must not exceed rooms.max_members_cap ({})",
                r.default_max_members, r.max_members_cap
            ));
        }
        // (Listening on port 0, a node advertises the port it gets: any port checks here.)
        let listen = (self.listen).map(|l| SocketAddr::new(l.ip(), l.port().max(1)));
        self.cluster.config(listen)?;
        let config = self.server_config(SecretKey::from_bytes([0; 32]));
        config.validate().map_err(|e| config_error(&e))
    }

    /// The core's settings with `key` as the server's identity.
    pub fn server_config(&self, key: SecretKey) -> ServerConfig {
        let mut config = self.core.config.clone();
        config.secret_key = key;
        config.token_secret = self.secret.as_ref().map(|s| s.bytes().to_vec());
        config.relay_shards = self.relay_threads();
        config.rooms = self.core.rooms_enabled.then(|| self.core.rooms.clone());
        // (Checked by `check`: a bad cluster setup never gets here. Listening on port 0, the
        // runtime puts the port it got in `advertise`.)
        let listen = (self.listen).map(|l| SocketAddr::new(l.ip(), l.port().max(1)));
        config.cluster = self.cluster.config(listen).ok().flatten();
        config
    }

    /// Relay threads of their own: `threads` if 2 or more; with 1 the server relays on its
    /// own thread (0).
    pub fn relay_threads(&self) -> u16 {
        if self.threads >= 2 { self.threads } else { 0 }
    }

    /// The address to listen on.
    ///
    /// # Errors
    /// A usage error if neither `--listen` nor the file gave one.
    pub fn listen(&self) -> Result<SocketAddr, CliError> {
        self.listen.ok_or_else(|| {
            CliError::usage(
                "no address to listen on: give --listen IP:PORT, or `listen` in \
                 --config's file"
                    .to_owned(),
            )
        })
    }

    /// The server's identity: from the key file (created if missing, see
    /// [`super::server::load_or_create_key`]), or new.
    ///
    /// # Errors
    /// The key file's, naming `key_file` if the config file gave it; no OS entropy.
    pub fn load_key(&self) -> Result<SecretKey, CliError> {
        match &self.key_file {
            Some(path) => super::server::load_or_create_key(path).map_err(|mut e| {
                if self.key_file_from != "--key-file" {
                    e.message = e.message.replacen("--key-file", self.key_file_from, 1);
                }
                e
            }),
            None => crate::os_seed()
                .map(SecretKey::from_bytes)
                .map_err(|e| CliError::io("OS entropy", &e)),
        }
    }

    /// Turns on the core's `tracing` output on stderr at `log_level`, as `log_format`; nothing
    /// when the level is off.
    ///
    /// # Errors
    /// Another subscriber was installed already.
    pub fn install_logging(&self) -> Result<(), CliError> {
        use tracing_subscriber::filter::LevelFilter;
        let level = match self.log_level {
            LogLevel::Off => return Ok(()),
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        };
        let builder = tracing_subscriber::fmt()
            .with_writer(io::stderr)
            .with_max_level(level);
        let installed = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
        installed.map_err(|e| CliError::failed(format!("cannot install the logger: {e}")))
    }

    /// The settings as a config file: every key, each after a comment saying what it means,
    /// its unit, its range and its default. Read back with `--config`, it gives the same
    /// settings, except a secret given with `--secret`, which is not printed (a comment says
    /// so); keys with no value (`listen` without one, `alt_listen`, ...) are printed as
    /// comments.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        comment(
            &mut out,
            "pierce server settings: the defaults, then --config FILE, then the flags (what \
             `pierce server --print-config` prints; `pierce server --config FILE` reads it \
             back). Durations are whole milliseconds (_ms) or seconds (_s); rates are per \
             second. Relative paths are relative to the server's working directory.",
        );
        let d = Self::default();
        let opt_addr = |a: Option<SocketAddr>| a.map(|a| quote(&a.to_string()));
        let opt_path = |p: &Option<PathBuf>| p.as_ref().map(|p| quote(&p.to_string_lossy()));
        let key = key_line;
        key(
            &mut out,
            "listen",
            "UDP address to listen on, and TCP at the same address (--listen; IP:PORT, port 0 \
             picks a free one). Required: no default.",
            opt_addr(self.listen),
        );
        key(
            &mut out,
            "alt_listen",
            "A second UDP address for NAT behaviour discovery (--alt-listen; IP:PORT, a \
             specific IP of listen's family). Default: none.",
            opt_addr(self.alt_listen),
        );
        key(
            &mut out,
            "key_file",
            "The server's identity key file (--key-file): 64 hex digits or 32 bytes, created \
             if missing. Default: none, a new key on every start.",
            opt_path(&self.key_file),
        );
        out.push('\n');
        comment(
            &mut out,
            "Require connect tokens issued with this shared secret: secret = \"S\", or \
             secret_file = \"PATH\" (the file's contents, surrounding whitespace removed; at \
             most 4096 bytes), or --secret S. Default: none, no tokens needed.",
        );
        match &self.secret {
            None => out.push_str("# secret_file = (not set)\n"),
            Some(Secret::Flag(_)) => out.push_str(
                "# secret: given with --secret, not printed (put it in a file and name it \
                 with secret_file)\n",
            ),
            Some(Secret::Inline(s)) => {
                let _ = writeln!(out, "secret = {}", quote(s));
            }
            Some(Secret::File { path, .. }) => {
                let _ = writeln!(out, "secret_file = {}", quote(&path.to_string_lossy()));
            }
        }
        key(
            &mut out,
            "json",
            "Print JSON lines instead of text (--json). Default: false.",
            Some(self.json.to_string()),
        );
        key(
            &mut out,
            "stats_every_s",
            &format!(
                "Print a stats line every this many seconds (--stats-every). Range: 1 to \
                 {MAX_SECS}. Default: none (one line on stopping)."
            ),
            self.stats_every_s.map(|n| n.to_string()),
        );
        key(
            &mut out,
            "threads",
            &format!(
                "Threads that relay (--threads): 1, the server does everything on one thread; \
                 N of 2 or more, N relay threads on the listening port (Linux) and one more \
                 for sessions. Range: 1 to {MAX_RELAY_SHARDS}. Default: the number of cores \
                 on Linux ({} here), 1 elsewhere.",
                d.threads
            ),
            Some(self.threads.to_string()),
        );
        key(
            &mut out,
            "no_offload",
            "No UDP GSO/GRO: one datagram per system call message (--no-offload). Default: \
             false.",
            Some(self.no_offload.to_string()),
        );
        key(
            &mut out,
            "log_level",
            "The core's log lines on stderr at this level and above (--log-level): off, \
             error, warn, info, debug (every event and dropped input), trace. Default: off.",
            Some(quote(&enum_name(&self.log_level))),
        );
        key(
            &mut out,
            "log_format",
            "The log lines' format (--log-format): text or json. Default: text.",
            Some(quote(&enum_name(&self.log_format))),
        );
        key(
            &mut out,
            "metrics",
            "Serve metrics over HTTP at this address (--metrics IP:PORT). Default: none.",
            opt_addr(self.metrics),
        );
        key(
            &mut out,
            "admin_token_file",
            "A file holding the bearer token the admin endpoints require \
             (--admin-token-file). Default: none.",
            opt_path(&self.admin_token_file),
        );
        key(
            &mut out,
            "drain_timeout_ms",
            &format!(
                "How long a drain (SIGTERM, POST /admin/drain) gives clients to leave \
                 before the server closes the rest and exits (--drain-timeout-ms). Range: 1 to {MAX_DRAIN_TIMEOUT_MS}. Default: \
                 {DEFAULT_DRAIN_TIMEOUT_MS}."
            ),
            Some(self.drain_timeout.as_millis().to_string()),
        );
        self.core.write(&mut out);
        self.cluster.write(&mut out);
        out
    }
}

/// `text` as a [`File`]: syntax, unknown keys and types checked, each error naming the key.
fn parse_file(text: &str) -> Result<File, String> {
    let doc = toml::de::DeTable::parse(text).map_err(|e| located(text, &e, None))?;
    toml::from_str::<File>(text).map_err(|e| {
        let key = e
            .span()
            .and_then(|span| key_at(doc.get_ref(), span.start, ""));
        located(text, &e, key)
    })
}

/// A TOML error as one line: where (the key's dotted path, if known, and the line) and what.
fn located(text: &str, e: &toml::de::Error, key: Option<String>) -> String {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let message = e.message().trim_end().replace('\n', " ");
    // serde names the TOML integer type; the operator wants the kind of value.
    let message = message.replace("expected i64", "expected a whole number");
    match (key, line) {
        (Some(k), Some(l)) => format!("{k} (line {l}): {message}"),
        (None, Some(l)) => format!("line {l}: {message}"),
        (k, None) => format!(
            "{}{message}",
            k.map(|k| format!("{k}: ")).unwrap_or_default()
        ),
    }
}

/// The dotted path of the deepest key whose name or value spans byte `at`.
fn key_at(table: &toml::de::DeTable<'_>, at: usize, prefix: &str) -> Option<String> {
    let mut found = None;
    for (k, v) in table {
        let path = format!("{prefix}{}", k.get_ref());
        if let toml::de::DeValue::Table(inner) = v.get_ref() {
            if let Some(deeper) = key_at(inner, at, &format!("{path}.")) {
                return Some(deeper);
            }
        }
        if k.span().contains(&at) || v.span().contains(&at) {
            found = Some(path);
        }
    }
    found
}

/// A [`ValueEnum`] named `s` in the file at `key`.
fn value_enum<T: ValueEnum>(key: &str, s: &str) -> Result<T, String> {
    T::from_str(s, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .map(|v| format!("{:?}", enum_name(v)))
            .collect();
        format!("{key} = {s:?}: expected one of {}", names.join(", "))
    })
}

/// The name of `v` as the flag and the file spell it.
fn enum_name<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// A TOML string literal for `s` (escaped as TOML wants).
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// One key of a printed file: `doc` as a comment, then `name = value`, or a commented
/// `name = (not set)` without a value.
fn key_line(out: &mut String, name: &str, doc: &str, value: Option<String>) {
    out.push('\n');
    comment(out, doc);
    match value {
        Some(v) => {
            let _ = writeln!(out, "{name} = {v}");
        }
        None => {
            let _ = writeln!(out, "# {name} = (not set)");
        }
    }
}

/// `text` as `#` comment lines of at most 96 columns.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 96 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// The core's complaint about the settings, in the file's key names.
fn config_error(e: &ConfigError) -> String {
    let key = |core: &str| match core {
        "max_datagram_size" => "session.max_datagram_bytes",
        "max_clients" => "session.max_clients",
        "proven_handshake_rate_per_ip" => {
            "handshake.proven_rate_per_ip_per_s or handshake.proven_burst_per_ip"
        }
        "handshake_rate_global" => "handshake.rate_global_per_s or handshake.burst_global",
        "relay_shards" => "threads",
        _ => "a setting",
    };
    match e {
        ConfigError::ZeroDuration => "one of session.keepalive_interval_ms, \
             session.idle_timeout_ms, handshake.timeout_ms is zero"
            .to_owned(),
        ConfigError::KeepaliveNotBelowIdleTimeout => {
            "session.keepalive_interval_ms must be less than session.idle_timeout_ms".to_owned()
        }
        ConfigError::OutOfRange(name) => format!("{} is out of range ({name})", key(name)),
        ConfigError::Invalid(why) if why.contains("offline_after") => {
            "session.offline_after_ms must be less than session.idle_timeout_ms, or 0 (never)"
                .to_owned()
        }
        e => format!("the server refuses these settings: {e}"),
    }
}

/// Reads `--config`'s file: a regular file of at most [`MAX_CONFIG_FILE`] bytes of UTF-8.
fn read_config_file(path: &Path) -> Result<String, CliError> {
    let bad = |what: String| CliError::usage(format!("--config {}: {what}", path.display()));
    let bytes = read_small_file(path, MAX_CONFIG_FILE).map_err(bad)?;
    String::from_utf8(bytes).map_err(|_| bad("is not UTF-8 text (TOML is)".to_owned()))
}

/// Reads `secret_file`: its contents, surrounding whitespace removed, not empty.
fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    let bad = |what: String| format!("secret_file {}: {what}", path.display());
    let bytes = read_small_file(path, MAX_SECRET_FILE).map_err(bad)?;
    let secret = bytes.trim_ascii();
    if secret.is_empty() {
        return Err(bad("is empty; a secret is needed".to_owned()));
    }
    Ok(secret.to_vec())
}

/// A regular file's contents, if it holds at most `max` bytes. Looked at before it is opened
/// (a FIFO would block), read through a cap.
fn read_small_file(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    let file = fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("is too large (at most {max} bytes)"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};

    /// A file setting every key to a valid value other than its default.
    const EVERY_KEY: &str = include_str!("../../tests/data/every_key.toml");

    /// The process's keys (top level), with the range of the numeric ones.
    const TOP_KEYS: &[(&str, Option<(i64, i64)>)] = &[
        ("listen", None),
        ("alt_listen", None),
        ("key_file", None),
        ("secret", None),
        ("secret_file", None),
        ("json", None),
        ("stats_every_s", Some((1, 86_400))),
        ("threads", Some((1, 256))),
        ("no_offload", None),
        ("log_level", None),
        ("log_format", None),
        ("metrics", None),
        ("admin_token_file", None),
        ("drain_timeout_ms", Some((1, 600_000))),
    ];

    fn key() -> SecretKey {
        SecretKey::from_bytes([7; 32])
    }

    fn from_file(text: &str) -> Result<ServerSettings, String> {
        let mut s = ServerSettings::default();
        s.apply_file(text)?;
        s.check()?;
        Ok(s)
    }

    /// A struct's `{:#?}` cut into its top-level fields: `(name, the field's lines)`.
    fn fields(debug: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in debug.lines().skip(1) {
            let top = line.strip_prefix("    ").filter(|l| !l.starts_with(' '));
            match top.and_then(|l| l.split_once(": ")) {
                Some((name, _)) if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                    out.push((name.to_owned(), line.to_owned()));
                }
                _ => {
                    if let Some(last) = out.last_mut() {
                        last.1.push('\n');
                        last.1.push_str(line);
                    }
                }
            }
        }
        out
    }

    /// The fields of `a` and `b` (same type) that are equal.
    fn same_fields(a: &str, b: &str) -> Vec<String> {
        let (a, b) = (fields(a), fields(b));
        assert_eq!(a.len(), b.len());
        assert!(a.len() >= 3, "{a:?}");
        a.iter()
            .zip(&b)
            .filter(|(x, y)| x == y)
            .map(|(x, _)| x.0.clone())
            .collect()
    }

    /// What `pierce server` ran before --config existed: `rooms_server_with`'s settings.
    fn core_defaults(key: SecretKey, threads: u16) -> ServerConfig {
        let mut c = ServerConfig::new(key);
        c.rooms = Some(RoomsConfig::default());
        c.relay_shards = if threads >= 2 { threads } else { 0 };
        c
    }

    #[test]
    fn the_printed_defaults_are_the_cores_defaults_and_read_back_the_same() {
        let defaults = ServerSettings::default();
        let expected = format!("{:#?}", core_defaults(key(), default_threads()));
        assert_eq!(format!("{:#?}", defaults.server_config(key())), expected);
        let printed = defaults.to_toml();
        // Read back over sections where every key differs: each must come from the text.
        let mut back = ServerSettings {
            core: from_file(EVERY_KEY).expect("valid").core,
            ..ServerSettings::default()
        };
        back.apply_file(&printed)
            .expect("the printed defaults are accepted");
        assert_eq!(format!("{:#?}", back.server_config(key())), expected);
        assert_eq!(back.to_toml(), printed);
        // Every section key is printed as a key, not a comment.
        let table: toml::Table = toml::from_str(&printed).expect("TOML");
        for (path, _, _) in SECTION_KEYS {
            let (section, k) = path.split_once('.').expect("dotted");
            assert!(table[section].get(k).is_some(), "{path} not printed");
        }
    }

    #[test]
    fn every_key_reaches_the_settings_and_the_server_config() {
        let defaults = ServerSettings::default();
        let every = from_file(EVERY_KEY).expect("valid");
        // Every field of the settings and of the core's config differs from its default.
        let same = same_fields(&format!("{defaults:#?}"), &format!("{every:#?}"));
        assert!(same.is_empty(), "not set by the file: {same:?}");
        let base = format!("{:#?}", defaults.server_config(key()));
        let config = every.server_config(key());
        let same = same_fields(&base, &format!("{config:#?}"));
        assert_eq!(same, ["secret_key"], "not set by the file");
        assert!(config.rooms.is_none(), "rooms.enabled = false");
        assert_eq!(config.relay_shards, 251);
        assert_eq!(
            config.token_secret.as_deref(),
            Some(&b"an inline secret, with \"quotes\" and a \\ backslash"[..])
        );
        assert_eq!(config.keepalive_interval, Duration::from_secs(3));
        assert_eq!(config.ticket_lifetime, Duration::from_secs(3600));
        assert_eq!(config.relay_rate_per_client, u32::MAX);
        // With rooms on, the rooms keys reach the rooms policy.
        let on = from_file(&EVERY_KEY.replace("enabled = false", "enabled = true")).expect("ok");
        let rooms = on.server_config(key()).rooms.expect("rooms on");
        let same = same_fields(
            &format!("{:#?}", RoomsConfig::default()),
            &format!("{rooms:#?}"),
        );
        assert!(same.is_empty(), "rooms keys not applied: {same:?}");
    }

    #[test]
    fn every_key_round_trips_through_the_printed_file() {
        let every = from_file(EVERY_KEY).expect("valid");
        let printed = every.to_toml();
        let back = from_file(&printed).expect("the printed file is accepted");
        assert_eq!(back.to_toml(), printed);
        // The printed file holds exactly the keys and values of the one read.
        let read: toml::Table = toml::from_str(EVERY_KEY).expect("TOML");
        let written: toml::Table = toml::from_str(&printed).expect("TOML");
        assert_eq!(read, written);
    }

    #[test]
    fn each_value_out_of_its_range_or_of_the_wrong_type_is_refused_naming_the_key() {
        let mut cases = 0;
        let top = TOP_KEYS.iter().map(|(k, r)| ((*k).to_owned(), *r));
        let sections = SECTION_KEYS.iter().map(|(path, lo, hi)| {
            let ranged = !(*lo == 0 && *hi == 1);
            ((*path).to_owned(), ranged.then_some((*lo, *hi)))
        });
        for (path, range) in top.chain(sections) {
            let line = |value: &str| match path.split_once('.') {
                Some((section, k)) => format!("[{section}]\n{k} = {value}\n"),
                None => format!("{path} = {value}\n"),
            };
            let mut refuse = |value: &str, says: &str| {
                cases += 1;
                let e = from_file(&line(value)).expect_err(&line(value));
                assert!(e.contains(&path), "{path} = {value}: {e}");
                assert!(e.contains(says), "{path} = {value}: {e}");
            };
            // A table is of no key's type.
            refuse("{ a = 1 }", "invalid type");
            if let Some((lo, hi)) = range {
                let expect = format!("from {lo} to {hi}");
                refuse(&(lo - 1).to_string(), &expect);
                refuse(&(hi + 1).to_string(), &expect);
                refuse("-1", if lo > -1 { "from" } else { "" });
                refuse("9223372036854775807", &expect);
                refuse("1.5", "expected a whole number");
                refuse("\"10\"", "expected a whole number");
            }
        }
        assert!(cases > 250, "{cases}");
    }

    #[test]
    fn unknown_keys_anywhere_are_refused_with_their_dotted_path() {
        for section in [
            "",
            "session",
            "handshake",
            "stun",
            "resets",
            "relay",
            "rooms",
        ] {
            let (text, path) = if section.is_empty() {
                ("bogus_key = 1\n".to_owned(), "bogus_key".to_owned())
            } else {
                (
                    format!("[{section}]\nbogus_key = 1\n"),
                    format!("{section}.bogus_key"),
                )
            };
            let e = from_file(&text).expect_err(&text);
            assert!(e.contains(&path) && e.contains("unknown field"), "{e}");
        }
        // Dotted keys and inline tables are located too; an unknown section is a top-level key.
        let e = from_file("relay.bogus = 1\n").expect_err("dotted");
        assert!(e.starts_with("relay.bogus (line 1)"), "{e}");
        let e = from_file("rooms = { enabled = true, max = 3 }\n").expect_err("inline");
        assert!(e.starts_with("rooms.max (line 1)"), "{e}");
        let e = from_file("[limits]\nmax_clients = 3\n").expect_err("section");
        assert!(e.starts_with("limits (line 1)"), "{e}");
        let e = from_file("listen = \"127.0.0.1:1\"\n[relay\n").expect_err("syntax");
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn bad_process_values_and_contradictions_are_refused_naming_the_keys() {
        for (text, says) in [
            (
                "listen = \"localhost:7\"",
                "listen = \"localhost:7\": expected IP:PORT",
            ),
            (
                "listen = \"224.0.0.1:7\"",
                "listen = \"224.0.0.1:7\": 224.0.0.1 is a multicast",
            ),
            (
                "alt_listen = \"0.0.0.0:7\"",
                "alt_listen = \"0.0.0.0:7\": 0.0.0.0 is the unspecified",
            ),
            ("metrics = \"7\"", "metrics = \"7\": expected IP:PORT"),
            ("key_file = \"\"", "key_file: expected a path"),
            (
                "admin_token_file = \"\"",
                "admin_token_file: expected a path",
            ),
            ("secret_file = \"\"", "secret_file: expected a path"),
            ("secret = \"\"", "secret: expected a secret"),
            (
                "secret = \"s\"\nsecret_file = \"f\"",
                "secret and secret_file: give one",
            ),
            (
                "secret_file = \"/no/such/file\"",
                "secret_file /no/such/file: cannot read it",
            ),
            (
                "secret_file = \"/\"",
                "secret_file /: is not a regular file",
            ),
            (
                "log_level = \"loud\"",
                "log_level = \"loud\": expected one of \"off\", \"error\"",
            ),
            (
                "log_format = \"xml\"",
                "log_format = \"xml\": expected one of \"text\", \"json\"",
            ),
            ("json = 1", "json (line 1): invalid type"),
            (
                "listen = \"127.0.0.1:7\"\nalt_listen = \"[::1]:7\"",
                "alt_listen (--alt-listen) [::1]:7 and listen (--listen) 127.0.0.1:7 must be of \
                 the same address family",
            ),
            (
                "listen = \"0.0.0.0:7\"\nalt_listen = \"127.0.0.1:7\"",
                "alt_listen (--alt-listen) needs listen (--listen) with a specific IP",
            ),
            (
                "[session]\nkeepalive_interval_ms = 15000",
                "session.keepalive_interval_ms (15000) must be less than session.idle_timeout_ms \
                 (15000)",
            ),
            (
                "[session]\nidle_timeout_ms = 5000",
                "session.keepalive_interval_ms (5000) must be less than session.idle_timeout_ms",
            ),
            (
                "[session]\nidle_timeout_ms = 6000\noffline_after_ms = 6000",
                "session.offline_after_ms (6000) must be less than session.idle_timeout_ms (6000)",
            ),
            (
                "[rooms]\nmax_members_cap = 4",
                "rooms.default_max_members (8) must not exceed rooms.max_members_cap (4)",
            ),
        ] {
            let e = from_file(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
        // Zero turns the offline notice off, whatever the idle timeout.
        assert!(from_file("[session]\nidle_timeout_ms = 6000\noffline_after_ms = 0").is_ok());
    }

    #[test]
    fn the_cores_complaints_name_keys_of_the_file() {
        let known: Vec<&str> = (TOP_KEYS.iter().map(|(k, _)| *k))
            .chain(SECTION_KEYS.iter().map(|(k, _, _)| *k))
            .collect();
        for e in [
            ConfigError::ZeroDuration,
            ConfigError::KeepaliveNotBelowIdleTimeout,
            ConfigError::OutOfRange("max_datagram_size"),
            ConfigError::OutOfRange("max_clients"),
            ConfigError::OutOfRange("proven_handshake_rate_per_ip"),
            ConfigError::OutOfRange("handshake_rate_global"),
            ConfigError::OutOfRange("relay_shards"),
            ConfigError::Invalid("offline_after must be shorter than idle_timeout"),
        ] {
            let m = config_error(&e);
            let named: Vec<&str> = known.iter().copied().filter(|k| m.contains(k)).collect();
            assert!(!named.is_empty(), "{e:?}: {m}");
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pierce-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_secret_file_is_read_trimmed_and_printed_as_its_path() {
        let dir = temp_dir("secret-file");
        let path = dir.join("token.secret");
        fs::write(&path, "  s3cret\n").expect("write");
        let text = format!("secret_file = {}\n", quote(&path.to_string_lossy()));
        let s = from_file(&text).expect("valid");
        assert_eq!(
            s.server_config(key()).token_secret.as_deref(),
            Some(&b"s3cret"[..])
        );
        let printed = s.to_toml();
        assert!(printed.contains(&text), "{printed}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert_eq!(from_file(&printed).expect("round trip").to_toml(), printed);
        fs::write(&path, "\n \n").expect("write");
        let e = from_file(&text).expect_err("empty");
        assert!(e.contains("is empty"), "{e}");
        fs::write(&path, vec![b'x'; MAX_SECRET_FILE as usize + 1]).expect("write");
        let e = from_file(&text).expect_err("large");
        assert!(e.contains("too large"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    fn server_args(argv: &[&str]) -> ServerArgs {
        let mut all = vec!["pierce", "server"];
        all.extend_from_slice(argv);
        match Cli::try_parse_checked_from(all)
            .expect("valid flags")
            .command
        {
            Command::Server(a) => a,
            _ => panic!("not server"),
        }
    }

    #[test]
    fn flags_override_the_file_and_a_flag_secret_is_not_printed() {
        let dir = temp_dir("flags-over-file");
        let file = dir.join("server.toml");
        fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\njson = false\nstats_every_s = 5\nthreads = 1\n\
             secret = \"from the file\"\nlog_level = \"debug\"\ndrain_timeout_ms = 7\n\
             key_file = \"a.key\"\n",
        )
        .expect("write");
        let config = file.to_str().expect("utf-8");
        let only_file = ServerSettings::load(&server_args(&["--config", config])).expect("ok");
        assert_eq!(only_file.listen, Some("127.0.0.1:1".parse().expect("addr")));
        assert!(!only_file.json);
        assert_eq!(only_file.log_level, LogLevel::Debug);
        let s = ServerSettings::load(&server_args(&[
            "--config",
            config,
            "--listen",
            "127.0.0.1:2",
            "--json",
            "--stats-every",
            "9",
            "--threads",
            "3",
            "--secret",
            "from the flag",
            "--log-level",
            "warn",
            "--drain-timeout-ms",
            "600000",
            "--key-file",
            "b.key",
        ]))
        .expect("ok");
        assert_eq!(s.listen, Some("127.0.0.1:2".parse().expect("addr")));
        assert!(s.json);
        assert_eq!((s.stats_every_s, s.threads), (Some(9), 3));
        assert_eq!(s.log_level, LogLevel::Warn);
        assert_eq!(s.drain_timeout, Duration::from_secs(600));
        assert_eq!(s.key_file, Some(PathBuf::from("b.key")));
        let c = s.server_config(key());
        assert_eq!(c.token_secret.as_deref(), Some(&b"from the flag"[..]));
        let printed = s.to_toml();
        assert!(!printed.contains("from the flag"), "{printed}");
        assert!(
            printed.contains("given with --secret, not printed"),
            "{printed}"
        );
        // No listen anywhere: refused, unless only printing.
        let e = ServerSettings::load(&server_args(&[])).expect_err("no listen");
        assert_eq!(e.code, 2);
        assert!(e.message.contains("--listen"), "{e}");
        assert!(ServerSettings::load(&server_args(&["--print-config"])).is_ok());
        let e = ServerSettings::load(&server_args(&["--config", "/no/such.toml"]))
            .expect_err("missing file");
        assert_eq!(e.code, 2);
        assert!(
            e.message
                .starts_with("--config /no/such.toml: cannot read it"),
            "{e}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_file_named_in_the_config_file_is_blamed_as_key_file() {
        let s = from_file("key_file = \"/dev/null\"\n").expect("valid");
        let e = s.load_key().expect_err("a device");
        assert_eq!(e.code, 2);
        assert!(
            e.message.starts_with("key_file /dev/null: is a device"),
            "{e}"
        );
    }
}
