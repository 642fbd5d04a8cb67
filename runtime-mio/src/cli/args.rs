//! The command line, as clap derive structs. The async-std example peer flattens
//! [`PeerArgs`] into its own parser, so both peers accept exactly the same flags.
//!
//! Every value is checked before anything touches the network, and bad input exits with
//! status 2. Here: each flag by its own parser (a clap error naming the flag and what it
//! accepts), and what spans flags (`--alt-listen` with `--listen`, `--bind` with `--server`,
//! port 0 outside `--host`) right after parsing ([`Cli::parse_checked`], [`parse_peer_args`]),
//! as a clap error too. Flags whose values never start with `-` (numbers, seconds, addresses,
//! keys) take one that does as their value (`allow_hyphen_values`), so `--timeout -inf` or
//! `--peers -1` is refused by the flag's parser, naming it, not as an unknown flag.
//!
//! Elsewhere, still before any socket: the `--key-file` itself
//! ([`super::server::load_or_create_key`]) and `--size` against the one-datagram limit of
//! `--mode unreliable` ([`super::script::Script::new`]).

use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use pierce_core::wire::control::MAX_NAME_LEN;
use pierce_core::{
    Channel, ClientConfig, PublicKey, RoomsConfig, Transport, WELL_KNOWN_NAT64_PREFIX,
};

use super::script::{MAX_COUNT, MAX_NAME, MIN_SIZE};

/// `pierce`: run a Pierce server, check this host's NAT, or try peer-to-peer messaging.
#[derive(Debug, Parser)]
#[command(name = "pierce", version)]
#[command(after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's command line and checks what spans flags; on bad input prints
    /// clap's error and exits with status 2 (`--help` and `--version` exit 0).
    pub fn parse_checked() -> Self {
        match Self::try_parse_checked_from(std::env::args_os()) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    }

    /// [`Cli::parse_checked`] on `argv`, returning the error instead of exiting.
    ///
    /// # Errors
    /// Clap's error for a bad flag or value, or for flags that do not go together.
    pub fn try_parse_checked_from<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Self::try_parse_from(argv)?;
        let (name, problem) = match &cli.command {
            Command::Server(a) => ("server", a.check()),
            Command::Netcheck(a) => ("netcheck", a.check()),
            Command::Peer(a) => ("peer", a.check()),
            Command::Demo(_) => ("demo", Ok(())),
        };
        match problem {
            Ok(()) => Ok(cli),
            Err(message) => {
                let mut command = Self::command();
                command.build(); // names the subcommands "pierce peer" etc. for the usage line
                let sub = command
                    .find_subcommand_mut(name)
                    .expect("every subcommand is defined");
                Err(sub.error(ErrorKind::ArgumentConflict, message))
            }
        }
    }
}

const EXIT_CODES: &str = "\
Exit status: 0 success; 1 the run failed (unreachable server, refused session, timeout,
incomplete delivery); 2 bad command-line input.";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the rendezvous/relay server with the rooms policy until SIGINT, or SIGTERM and a drain.
    Server(ServerArgs),
    /// Connect to a server and report this host's reflexive address and NAT behaviour.
    Netcheck(NetcheckArgs),
    /// A scripted room member: join, exchange N messages with every other member, report.
    Peer(PeerArgs),
    /// A server and three peers on loopback in one process, with a live log (no flags needed).
    Demo(DemoArgs),
}

/// `pierce server`.
#[derive(Debug, Args)]
#[command(after_help = "\
When ready, prints one line with --json:
  {\"event\":\"listening\",\"addr\":\"IP:PORT\",\"tcp_addr\":\"IP:PORT\"|null,\"public_key\":\"HEX\",
   \"alt_addrs\":[\"IP:PORT\",...]}
or the same facts as text without. Peers pin the key with --server-key HEX. alt_addrs are the
NAT discovery sockets (--alt-listen): the alternate address first, then, when its IP differs
from --listen's, the two crossings (--listen's IP with the alternate port, the alternate IP
with --listen's port); empty without --alt-listen.
With --json, later events (client_joined, client_left, stats, stopped) are JSON lines too.
A stats line (counters since start: clients, groups, pairs, traffic, relay, handshakes, drops
by reason, socket errors) comes every --stats-every seconds, and once before stopped.
The server also accepts TCP connections on --listen's port (the fallback for clients whose
network blocks UDP; `pierce peer --tcp`), and says so in the ready line (tcp_addr).
On SIGTERM the server drains (a draining line): it refuses new clients and rooms, tells every
client, and when none is left or --drain-timeout-ms has passed closes the rest and exits 0.
SIGINT (or a second signal) closes every client at once and exits 0; a third ends it at once.
With --metrics the ready line has metrics_addr (null without), where GET /metrics (Prometheus
text), /healthz and /readyz answer; with --admin-token-file too, the admin endpoints (bearer
token): GET /admin/clients, GET /admin/rooms, POST /admin/clients/ID/kick (close code 4001),
POST /admin/rooms/NAME/close, POST /admin/drain (new clients refused, /readyz 503, the rest
told and disconnected after --drain-timeout-ms, then exit 0).

Settings come from the defaults, then --config FILE (TOML; every flag has a key there, and so
has every limit of the server: sessions, handshakes, STUN, resets, relay, rooms), then the
flags. `pierce server --print-config` prints the result with every key documented, in the
format --config reads, and exits without listening. An unknown key or a value out of range
is refused with exit status 2, naming the key.")]
pub struct ServerArgs {
    /// UDP address to listen on, and TCP at the same address for clients that cannot use UDP
    /// (port 0 picks a free port; the ready line shows it). 0.0.0.0 or :: listens on every
    /// address; a multicast or broadcast address is refused. Required, here or as `listen`
    /// in --config's file.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen, allow_hyphen_values = true)]
    pub listen: Option<SocketAddr>,
    /// A second UDP address, for NAT behaviour discovery (RFC 5780): the server answers STUN
    /// there too, and on the crossings of the two addresses, so `pierce netcheck` and RFC 5780
    /// tools (turnutils_natdiscovery) can measure NAT mapping and filtering. A second IP of
    /// this host gives the full test; the same IP with another port measures port dependence
    /// only. Port 0 picks a free port (the ready line shows it). A specific IP (not 0.0.0.0
    /// or ::, multicast or broadcast) of --listen's family, and --listen with a specific IP
    /// too.
    #[arg(
        long,
        value_name = "IP:PORT",
        value_parser = parse_alt_listen,
        allow_hyphen_values = true
    )]
    pub alt_listen: Option<SocketAddr>,
    /// The server's identity key: a regular file of 64 hex digits (whitespace around them
    /// ignored) or 32 raw bytes, at most 512 bytes. Created with 32 bytes from the OS CSPRNG,
    /// written as hex, mode 0600, if missing (never through a symbolic link). Without it the
    /// key is new on every start, and pinned peers must be told the new one.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Require connect tokens issued with this shared secret (peers: --token-secret); not
    /// empty. In --config's file: `secret`, or `secret_file` naming a file that holds it.
    #[arg(long, value_name = "S", value_parser = parse_secret)]
    pub secret: Option<String>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print a stats line every this many seconds, 1 to 86400 (one is always printed on
    /// stopping).
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = parse_stats_every,
        allow_hyphen_values = true
    )]
    pub stats_every: Option<u64>,
    /// Threads that relay, 1 to 256. With 1 the server does everything on one thread. With
    /// N of 2 or more, N relay threads share the listening port (SO_REUSEPORT; the kernel
    /// hands each relay packet to the thread that owns its session; Linux only) and one
    /// more thread keeps sessions, handshakes and groups. Default: the number of cores on
    /// Linux, 1 elsewhere.
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_threads,
        allow_hyphen_values = true
    )]
    pub threads: Option<u16>,
    /// Send and receive one datagram per system call message: no UDP GSO/GRO (Linux uses
    /// them by default where the kernel and the route allow; for comparisons, or a path that
    /// misbehaves with them).
    #[arg(long)]
    pub no_offload: bool,
    /// Read settings from this TOML file (keys: see --print-config); flags given as well
    /// override it. A missing file, a syntax error, an unknown key or a value out of range is
    /// refused (exit status 2), naming the key.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective settings (the defaults, then --config's file, then the flags) as
    /// a TOML file --config accepts, every key with what it means, its unit and its default,
    /// and exit without listening. A secret given with --secret is not printed.
    #[arg(long)]
    pub print_config: bool,
    /// Print the core's log lines on stderr at this level and above (debug: every server
    /// event and every input dropped, with the reason; trace: relayed messages too, their
    /// length only). Default: off.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// The log lines' format on stderr: text, or one JSON object a line. Default: text.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics (`GET /metrics`), `GET /healthz` and `GET /readyz` over HTTP
    /// at this TCP address, and the admin endpoints (`/admin/...`) with --admin-token-file.
    /// Port 0 picks a free port (the ready line shows it: `metrics_addr`). Give a loopback
    /// address unless the network in front of it is trusted: the text is unauthenticated.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen, allow_hyphen_values = true)]
    pub metrics: Option<SocketAddr>,
    /// Turn on the admin endpoints of --metrics (list clients and rooms, kick, close a room,
    /// drain): requests must carry `Authorization: Bearer TOKEN`, TOKEN being this file's
    /// content with surrounding whitespace trimmed (not empty). Without it they answer 403.
    /// Needs --metrics.
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// How long a drain (SIGTERM or `POST /admin/drain`) gives clients to leave before the
    /// server disconnects whoever is left and exits 0 (at once when none are left): 1 to
    /// 600000 milliseconds (default 10000).
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_drain_timeout_ms,
        allow_hyphen_values = true
    )]
    pub drain_timeout_ms: Option<u64>,
    /// IP privacy for every room (`RoomsConfig::relay_only`): members never learn each other's
    /// addresses, never punch, and all their traffic goes through this server's relay.
    #[arg(long)]
    pub relay_only_rooms: bool,
    /// Run as one node of a cluster whose directory (node registry, room claims, used
    /// tickets) is the Redis server at this URL (`redis://HOST:PORT`, optionally `/DB`).
    /// Needs --node-id; every node must share the server key (--key-file). Without it,
    /// nothing changes.
    #[arg(long, value_name = "URL", value_parser = parse_redis_url)]
    pub cluster: Option<String>,
    /// This node's id in the cluster: 1 to 64 characters of A-Z a-z 0-9 . _ - (unique).
    #[arg(long, value_name = "ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// Where clients reach this node (what other nodes redirect them to). Default: the
    /// --listen address, which must then be a specific IP.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr, allow_hyphen_values = true)]
    pub advertise: Option<SocketAddr>,
    /// This node's region (new rooms go to the least-loaded node of the region of the node a
    /// client reached): up to 64 characters of A-Z a-z 0-9 . _ -. Default: none (one region).
    #[arg(long, value_name = "NAME", value_parser = parse_region)]
    pub region: Option<String>,
    /// The key prefix of this cluster in Redis (several clusters may share one Redis):
    /// same alphabet as --node-id. Default: pierce.
    #[arg(long, value_name = "NAME", value_parser = parse_node_id)]
    pub cluster_namespace: Option<String>,
}

/// `pierce server --log-level` (and `log_level` in --config's file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// No log lines.
    #[default]
    Off,
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Information, warnings and errors.
    Info,
    /// Every server event and every dropped input too.
    Debug,
    /// Everything, relayed messages included (their length, never their bytes).
    Trace,
}

/// `pierce server --log-format` (and `log_format` in --config's file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text each.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

impl ServerArgs {
    /// What the flags' own parsers cannot see: `--alt-listen` against `--listen` (when
    /// either comes from --config's file, the same check runs on the merged settings).
    ///
    /// # Errors
    /// What is wrong, naming the flags.
    pub fn check(&self) -> Result<(), String> {
        if self.cluster.is_some() != self.node_id.is_some() {
            return Err("--cluster and --node-id go together: a cluster node needs an id, and                         an id means nothing without a cluster"
                .to_owned());
        }
        if self.cluster.is_none() && (self.advertise.is_some() || self.region.is_some()) {
            return Err("--advertise and --region need --cluster".to_owned());
        }
        if self.cluster.is_none() && self.cluster_namespace.is_some() {
            return Err("--cluster-namespace needs --cluster".to_owned());
        }
        let (Some(alt), Some(listen)) = (self.alt_listen, self.listen) else {
            return Ok(());
        };
        check_alt_listen(alt, listen, "--alt-listen", "--listen")
    }
}

/// `alt` (named `alt_name`: a flag or a config key) against `listen` (`listen_name`).
pub(super) fn check_alt_listen(
    alt: SocketAddr,
    listen: SocketAddr,
    alt_name: &str,
    listen_name: &str,
) -> Result<(), String> {
    if listen.ip().to_canonical().is_unspecified() {
        return Err(format!(
            "{alt_name} needs {listen_name} with a specific IP address, not {}: NAT discovery \
             answers from known addresses",
            listen.ip()
        ));
    }
    if alt.is_ipv4() != listen.is_ipv4() {
        return Err(format!(
            "{alt_name} {alt} and {listen_name} {listen} must be of the same address family"
        ));
    }
    if alt == listen && alt.port() != 0 {
        return Err(format!(
            "{alt_name} {alt} must differ from {listen_name} (another IP or another port)"
        ));
    }
    Ok(())
}

/// Connecting to a server: shared by `netcheck` and `peer`.
#[derive(Clone, Debug, Args)]
pub struct ConnectArgs {
    /// The server's UDP address: a unicast IP (not 0.0.0.0 or ::, broadcast or multicast)
    /// and a port from 1 to 65535 (0 only with `peer --host`, which picks a free one).
    /// `pierce peer` takes it more than once: nodes of one cluster (sharing a key), tried in
    /// order, and the next one taken when the session with one is lost.
    #[arg(
        long = "server",
        value_name = "IP:PORT",
        value_parser = parse_server,
        allow_hyphen_values = true,
        required = true,
        action = clap::ArgAction::Append
    )]
    pub servers: Vec<SocketAddr>,
    /// Refuse any server that cannot prove it holds this key (the `public_key` of its ready
    /// line). Without it the key is trusted on first use and reported.
    #[arg(long, value_name = "HEX", value_parser = parse_key, allow_hyphen_values = true)]
    pub server_key: Option<PublicKey>,
    /// Mint a connect token with this secret (the server's --secret). Stands in for a game
    /// backend that issues tokens; valid for one hour. Not empty.
    #[arg(long, value_name = "S", value_parser = parse_secret)]
    pub token_secret: Option<String>,
    /// The user id in the minted token, 0 to 18446744073709551615 (random if not given).
    #[arg(
        long,
        value_name = "ID",
        requires = "token_secret",
        value_parser = parse_user_id,
        allow_hyphen_values = true
    )]
    pub user_id: Option<u64>,
    /// Local UDP address to bind, of the server's family, or `[::]:PORT` (dual stack: it
    /// reaches IPv4 and IPv6 servers and peers alike) (default: `[::]:0` where the host has
    /// IPv6, else any address of the server's family, any port); not multicast or broadcast.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen, allow_hyphen_values = true)]
    pub bind: Option<SocketAddr>,
    /// On an IPv6-only network behind NAT64: `auto` finds the network's prefix (RFC 7050,
    /// through the system's DNS64 resolver; the well-known 64:ff9b:: if it finds none), or
    /// name the /96 prefix (its last 32 bits zero). IPv4 servers and peers are then reached
    /// at their synthesised IPv6 addresses.
    #[arg(long, value_name = "auto|PREFIX", value_parser = parse_nat64)]
    pub nat64_prefix: Option<Nat64>,
}

/// `--nat64-prefix`: found at start, or given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat64 {
    /// RFC 7050 discovery, else the well-known prefix.
    Auto,
    /// This /96 prefix.
    Prefix(Ipv6Addr),
}

impl Nat64 {
    /// The prefix to use (discovering it for `auto`, a blocking DNS lookup).
    pub fn prefix(self) -> Ipv6Addr {
        match self {
            Self::Auto => crate::discover_nat64_prefix().unwrap_or(WELL_KNOWN_NAT64_PREFIX),
            Self::Prefix(p) => p,
        }
    }
}

fn parse_nat64(s: &str) -> Result<Nat64, String> {
    if s == "auto" {
        return Ok(Nat64::Auto);
    }
    let p: Ipv6Addr = s
        .parse()
        .map_err(|_| format!("{s}: not `auto` or an IPv6 prefix such as 64:ff9b::"))?;
    if p.octets()[12..] != [0; 4] {
        return Err(format!(
            "{s}: a NAT64 prefix is a /96, its last 32 bits zero (such as 64:ff9b::)"
        ));
    }
    Ok(Nat64::Prefix(p))
}

impl ConnectArgs {
    /// The (first) server's address.
    pub fn server(&self) -> SocketAddr {
        self.servers[0]
    }

    /// What the flags' own parsers cannot see: port 0, which only a hosting peer (`host`)
    /// may name, `--bind` against `--server`, and `--server` given more than once.
    ///
    /// # Errors
    /// What is wrong, naming the flags.
    pub fn check(&self, host: bool) -> Result<(), String> {
        if self.servers.len() > 1 {
            return Err("--server given more than once: only `pierce peer` takes a list".into());
        }
        self.check_each(host)
    }

    /// [`ConnectArgs::check`] for each `--server` of a list.
    fn check_each(&self, host: bool) -> Result<(), String> {
        let dual = self
            .bind
            .is_some_and(|b| b.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        for &server in &self.servers {
            if server.port() == 0 && !host {
                return Err(format!(
                    "--server {server}: port 0 is no server's port (only with --host does port \
                     0 pick a free one)"
                ));
            }
            if let Some(bind) = self.bind.filter(|_| !dual) {
                if bind.is_ipv4() != server.is_ipv4() {
                    return Err(format!(
                        "--bind {bind} cannot reach --server {server} (different address \
                         families; --bind [::]:0 is dual stack)"
                    ));
                }
            }
            if server.is_ipv4() != self.server().is_ipv4() && !dual {
                return Err(format!(
                    "--server {server}: one socket reaches every --server, so they must be of \
                     one address family (or --bind [::]:0, dual stack)"
                ));
            }
        }
        Ok(())
    }
}

/// `pierce netcheck`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints, per address family checked,
{\"event\":\"netcheck\",\"family\":\"ipv4\"|\"ipv6\",\"server\":\"IP:PORT\",\"reflexive\":\"IP:PORT\",\
\"nat\":BOOL|null,\"firewall\":F|null,\"mapping\":M,\"filtering\":F,\"port_preserved\":BOOL,\
\"allocation\":A,\"port_delta\":N,\"alternate\":\"IP:PORT\"|null}.
M and F are \"endpoint-independent\", \"address-dependent\", \"address-and-port-dependent\" or
\"unknown\" (not measurable, never guessed), from the RFC 5780 tests. nat says whether the
address the server saw is translated (not one of this host's own; null if the host's addresses
cannot be read); without a NAT, firewall is the inbound filtering, which then is a firewall's
(an IPv6 home router's stateful firewall: address-and-port-dependent), else null. allocation
(\"sequential\" or \"random\") and port_delta (the port step between new mappings) are
measured only for endpoint-dependent mapping, null otherwise. alternate is the server's second
address; without one (a server without --alt-listen) mapping and filtering stay unknown, with a
note on stderr. Give --server twice (an IPv4 and an IPv6 address) to check both families, each
from its own socket, at once: one line each, IPv4 first. A family whose check fails is reported
on stderr (exit status 1); with one --server, a note names a global address of the other
family this host has and did not check.
--server may be any RFC 5780 STUN server; a Pierce server must also accept the session
(--server-key and tokens are checked). A server that answers only STUN is reported as such on
stderr, unless --server-key or --token-secret say a Pierce server is expected.")]
pub struct NetcheckArgs {
    /// The server to ask; give `--server` twice, once per address family (an IPv4 and an
    /// IPv6 address, of one server or two), to check both families.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Give up after this many seconds: more than 0, at most 86400.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "10",
        value_parser = parse_timeout,
        allow_hyphen_values = true
    )]
    pub timeout: Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl NetcheckArgs {
    /// [`ConnectArgs::check`], except that `--server` may be given twice: once per address
    /// family, each checked from its own socket (so `--bind` and `--nat64-prefix`, which
    /// shape the one socket, go with one `--server` only).
    ///
    /// # Errors
    /// What is wrong, naming the flags.
    pub fn check(&self) -> Result<(), String> {
        let servers = &self.connect.servers;
        match servers.as_slice() {
            [_] => self.connect.check(false),
            [a, b] if a.is_ipv4() != b.is_ipv4() => {
                if let Some(bind) = self.connect.bind {
                    return Err(format!(
                        "--bind {bind} with two --server: each family is checked from its own \
                         socket; leave --bind out"
                    ));
                }
                if self.connect.nat64_prefix.is_some() {
                    return Err(
                        "--nat64-prefix with two --server: behind NAT64 there is no \
                                IPv4 path to check; give one --server"
                            .into(),
                    );
                }
                let mut each = self.connect.clone();
                for &server in servers {
                    each.servers = vec![server];
                    each.check(false)?;
                }
                Ok(())
            }
            [a, b] => Err(format!(
                "--server {a} and --server {b}: one --server per address family (an IPv4 and \
                 an IPv6 one)"
            )),
            _ => Err(format!(
                "--server given {} times: netcheck takes one, or two of different address \
                 families",
                servers.len()
            )),
        }
    }
}

/// How `pierce peer` sends its N messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Channel 0: every message, exactly once, in order.
    ReliableOrdered,
    /// Channel 1: every message, exactly once, in any order.
    ReliableUnordered,
    /// Channel 4: best effort, any order; loss shows in `received`.
    Unreliable,
}

impl Mode {
    /// The default channel for this mode.
    pub fn channel(self) -> Channel {
        match self {
            Self::ReliableOrdered => Channel::RELIABLE_ORDERED,
            Self::ReliableUnordered => Channel::RELIABLE_UNORDERED,
            Self::Unreliable => Channel::UNRELIABLE,
        }
    }

    /// True for the modes that retransmit.
    pub fn is_reliable(self) -> bool {
        self != Self::Unreliable
    }

    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReliableOrdered => "reliable-ordered",
            Self::ReliableUnordered => "reliable-unordered",
            Self::Unreliable => "unreliable",
        }
    }
}

/// `pierce peer` (and the async-std example peer).
#[derive(Clone, Debug, Args)]
#[command(after_help = PEER_HELP)]
pub struct PeerArgs {
    /// The server, and how to reach it.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Room to join, created if it does not exist: 1 to 64 bytes.
    #[arg(long, value_name = "NAME", value_parser = parse_room)]
    pub room: String,
    /// The room's password, at most 64 bytes (empty: none).
    #[arg(long, value_name = "P", default_value = "", value_parser = parse_password)]
    pub password: String,
    /// This peer's name in other peers' summaries, 1 to 64 bytes (default: `peer-<host id>`).
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub name: Option<String>,
    /// Other members to wait for before sending: 0 to 63 (a `pierce server` room holds 64).
    #[arg(long, value_name = "K", value_parser = parse_peers, allow_hyphen_values = true)]
    pub peers: u16,
    /// Messages to send to every other member: 0 to 10000000.
    #[arg(
        long = "send",
        value_name = "N",
        default_value_t = 10,
        value_parser = parse_count,
        allow_hyphen_values = true
    )]
    pub count: u32,
    /// Bytes per message: at least 5 (a tag and a sequence number), at most 1048576 (the
    /// largest reliable message), and one datagram in unreliable mode.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 64,
        value_parser = parse_size,
        allow_hyphen_values = true
    )]
    pub size: usize,
    /// Delivery mode of the N messages.
    #[arg(long, value_enum, default_value_t = Mode::ReliableOrdered)]
    pub mode: Mode,
    /// Largest datagram to send to another member, in bytes of UDP payload
    /// (`ClientConfig::max_datagram_size`): the ceiling of path-MTU discovery, 200 to 1452.
    /// Every path, relayed or direct, starts at 1200 (or at this, if smaller) and carries
    /// larger datagrams, up to this, once a probe of that size (sent with Don't Fragment) was
    /// acknowledged on it; the summary's path_mtu says how far it got. 1200 or less turns
    /// probing off.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = pierce_core::MAX_DATAGRAM_SIZE,
        value_parser = parse_datagram_size,
        allow_hyphen_values = true
    )]
    pub max_datagram_size: usize,
    /// Never punch: keep every peer on the server's relay (`ClientConfig::direct_paths`
    /// off).
    #[arg(long)]
    pub relay_only: bool,
    /// Do not ask the default gateway for a port mapping (PCP / NAT-PMP;
    /// `ClientConfig::port_mapping` off). By default the peer asks it to forward its UDP
    /// port and offers the mapped address to other peers, deleting it when it leaves.
    #[arg(long)]
    pub no_port_mapping: bool,
    /// Never copy small unacknowledged reliable messages into the spare room of later
    /// packets (`ClientConfig::spare_room_copies` off). By default a peer does on a link that
    /// loses 3% or more at random: a lower p99 for more bytes.
    #[arg(long)]
    pub no_copies: bool,
    /// Also ask this STUN server (any: a `pierce server`, coturn, a public one) how the
    /// internet sees this peer's socket, and offer the answer to other peers as a candidate
    /// (`ClientConfig::stun_servers`): an IPv6 server here gives a peer whose server is IPv4
    /// its IPv6 address behind NAT66. Up to 4 times; not with --private or --relay-only.
    #[arg(
        long = "stun",
        value_name = "IP:PORT",
        value_parser = parse_server,
        allow_hyphen_values = true,
        action = clap::ArgAction::Append
    )]
    pub stun: Vec<SocketAddr>,
    /// IP privacy (`ClientConfig::private`): no other peer ever learns this peer's addresses.
    /// The server hands them to no one and pairs this peer relay-only both ways (it learns no
    /// one's addresses either); it never punches and never tells its LAN addresses. Every
    /// packet to and from it goes through the server. A server that predates the option
    /// does not accept the connection, so the run fails rather than go public.
    #[arg(long)]
    pub private: bool,
    /// Create the room relay-only (`RoomOptions::relay_only`): members paired through it never
    /// learn each other's addresses, and all their traffic is relayed. Joining an existing
    /// room that is not relay-only fails instead.
    #[arg(long)]
    pub relay_only_room: bool,
    /// No UDP GSO/GRO: one datagram per system call message (see `pierce server --help`).
    #[arg(long)]
    pub no_offload: bool,
    /// Reach the server over TCP only, at --server's address (`Transport::Tcp`): for networks
    /// that block UDP. Relayed peer traffic then goes down the stream; direct UDP paths to
    /// peers are still tried. Without --tcp or --udp-only the client uses UDP and falls back
    /// to TCP by itself when the server does not answer, moving back once UDP works.
    #[arg(long, conflicts_with = "udp_only")]
    pub tcp: bool,
    /// Reach the server over UDP only, never falling back to TCP (`Transport::Udp`).
    #[arg(long)]
    pub udp_only: bool,
    /// Seconds to stay connected after the exchange, so paths can settle (ends early at
    /// --timeout without failing the run): 0 to 86400.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "0",
        value_parser = parse_hold,
        allow_hyphen_values = true
    )]
    pub hold: Duration,
    /// Seconds for the whole run (connect, join, exchange, hold); then fail. More than 0, at
    /// most 86400.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "30",
        value_parser = parse_timeout,
        allow_hyphen_values = true
    )]
    pub timeout: Duration,
    /// Print events as JSON lines too (the summary is always JSON).
    #[arg(long)]
    pub json: bool,
    /// Host mode: be the server too, at --server's address (a rooms server and this peer on
    /// one socket, a listen server; `pierce_core::Host`). Prints a `hosting` line with the
    /// address and the server key first; the other peers connect to it as to any `pierce
    /// server`, and reach this peer directly at that address. --server must name the address
    /// they reach (not 0.0.0.0; port 0 picks one). With --token-secret, the others need
    /// tokens from the same secret.
    #[arg(long, conflicts_with_all = ["server_key", "bind", "tcp", "relay_only", "private"])]
    pub host: bool,
}

const PEER_HELP: &str = "\
The run: connect; join (or create) the room; wait until K other members are present; send
each of them a hello and then N messages of SIZE bytes; wait until N messages arrived from each
of them and each confirmed it got all of ours; stay --hold seconds; print the summary; leave.

Messages between peers (the core has no display names, so peers carry their own):
  H<name>         hello, the first message to every member (channel 0, reliable-ordered)
  D<u32 seq><fill> a payload: SIZE bytes on the --mode channel; only these count in `received`
  G<u32 count>    \"I got COUNT of yours\" (channel 0), sent once all N arrived; in unreliable
                  mode also after 1 s with nothing new once our own sends are out
A peer is done when it has the hello, N payloads (reliable modes) and the G of every member,
and its own G was acknowledged or that member already left.

All members must use the same --send, --size and --mode.

Last line on stdout, always JSON:
  {\"event\":\"summary\",\"ok\":BOOL,\"name\":\"...\",\"peers\":[{\"name\":\"...\",
  \"path\":\"relay\"|\"direct\",\"received\":N,\"in_order\":BOOL,\"joined_ms\":F,
  \"first_message_ms\":F|null,\"direct_after_ms\":F|null,\"path_mtu\":N|null}]}
joined_ms (when that member was first seen in the room), first_message_ms (its first payload)
and direct_after_ms (when the path to that member first went direct; null if it never did)
count from the start of the command. path_mtu is the largest datagram (UDP payload, bytes)
the current path to that member is known to carry, as its latest stats said: 1200 until
path-MTU discovery (RFC 8899 probes, sent with Don't Fragment) confirms more, up to 1452; on
the relay path the relay's header counts; null if no stats came (a member we send nothing). ok needs, for every member: its hello, no
corrupt payloads, and in reliable modes all N payloads (in order, for reliable-ordered), no
duplicates, no expired message and its G. In unreliable mode loss shows in `received` but does
not fail the run. With --json, events are JSON lines too: connected, room_joined,
member_joined, member_named, member_left, path_changed, message_expired, peer_recovering,
peer_recovered, server_transport ({\"transport\":\"tcp\"|\"udp\"}: the server session moved),
nat_discovered (reflexive, mapping, filtering; or error),
server_reset and reconnected (the server restarted with the same key and answered with a
stateless reset: the peer registers again at once, with the same host id, rejoins the room
and goes on with the exchange).

SIGINT or SIGTERM ends the run with its summary (ok false); a second one ends it at once.
Exit status 0 if ok, 1 otherwise, 2 for bad input.";

impl PeerArgs {
    /// What the flags' own parsers cannot see (see [`ConnectArgs::check`]).
    ///
    /// # Errors
    /// What is wrong, naming the flags.
    pub fn check(&self) -> Result<(), String> {
        let max = pierce_core::Client::MAX_SERVERS;
        if self.host && self.connect.servers.len() > 1 {
            return Err("--host listens on its one --server address: give it once".into());
        }
        if self.connect.servers.len() > max {
            return Err(format!("--server given more than {max} times"));
        }
        if self.stun.len() > 4 {
            return Err(format!("--stun given {} times: at most 4", self.stun.len()));
        }
        if let Some(s) = self.stun.iter().find(|s| s.port() == 0) {
            return Err(format!("--stun {s}: port 0 is no STUN server's port"));
        }
        if !self.stun.is_empty() && (self.private || self.relay_only) {
            return Err(
                "--stun offers this peer's addresses for direct paths: not with --private or \
                 --relay-only"
                    .into(),
            );
        }
        self.connect.check_each(self.host)
    }

    /// How the client reaches the server, from --tcp and --udp-only (`ClientConfig::transport`).
    pub fn transport(&self) -> Transport {
        if self.tcp {
            Transport::Tcp
        } else if self.udp_only {
            Transport::Udp
        } else {
            Transport::Auto
        }
    }
}

/// `pierce demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Messages each peer sends to each other peer: 0 to 10000000.
    #[arg(
        long = "send",
        value_name = "N",
        default_value_t = 20,
        value_parser = parse_count,
        allow_hyphen_values = true
    )]
    pub count: u32,
    /// Bytes per message: 5 to 1048576.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 64,
        value_parser = parse_size,
        allow_hyphen_values = true
    )]
    pub size: usize,
    /// Seconds for the whole demo: more than 0, at most 86400.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "30",
        value_parser = parse_timeout,
        allow_hyphen_values = true
    )]
    pub timeout: Duration,
}

/// Parses the process's command line as [`PeerArgs`] alone, for a program that is nothing but
/// a peer (the async-std example): the same checks as `pierce peer`, clap's usage errors and
/// `--help` included; bad input exits with status 2.
pub fn parse_peer_args(program: &'static str) -> PeerArgs {
    match try_parse_peer_args(program, std::env::args_os()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    }
}

/// [`parse_peer_args`] on `argv`, returning the error instead of exiting.
///
/// # Errors
/// Clap's error for a bad flag or value, or for flags that do not go together.
pub fn try_parse_peer_args<I, T>(program: &'static str, argv: I) -> Result<PeerArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    #[derive(Parser)]
    struct PeerOnly {
        #[command(flatten)]
        args: PeerArgs,
    }
    let mut command = PeerOnly::command()
        .name(program)
        .about("A scripted room member: join, exchange N messages with every other member, report");
    let matches = command.try_get_matches_from_mut(argv)?;
    let args = PeerOnly::from_arg_matches(&matches)
        .map_err(|e| e.format(&mut command))?
        .args;
    match args.check() {
        Ok(()) => Ok(args),
        Err(message) => Err(command.error(ErrorKind::ArgumentConflict, message)),
    }
}

// ---- the values' parsers: each error says what the flag accepts (clap names the flag) ------

/// Longest --timeout, --hold and --stats-every, in seconds: a day. Nothing here needs longer,
/// and a day keeps every deadline computed from them (`Instant + Duration` in the commands and
/// in the core's `connect_timeout`) far from overflow on any platform.
pub const MAX_SECS: u64 = 86_400;

fn parse_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(s).map_err(|_| "expected 64 hex digits".to_owned())
}

/// `s` as a whole number from `min` to `max`; any failure (not a number, negative, out of
/// the type's range or of `min..=max`) says the range.
fn int_in<T>(s: &str, min: T, max: T, unit: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display,
{
    match s.parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(format!("expected a whole number from {min} to {max}{unit}")),
    }
}

fn parse_stats_every(s: &str) -> Result<u64, String> {
    int_in(s, 1, MAX_SECS, " (seconds; at most a day)")
}

/// Longest `--drain-timeout-ms`: ten minutes.
pub const MAX_DRAIN_TIMEOUT_MS: u64 = 600_000;

fn parse_drain_timeout_ms(s: &str) -> Result<u64, String> {
    int_in(s, 1, MAX_DRAIN_TIMEOUT_MS, " (milliseconds)")
}

fn parse_threads(s: &str) -> Result<u16, String> {
    int_in(s, 1, pierce_core::MAX_RELAY_SHARDS, "")
}

fn parse_user_id(s: &str) -> Result<u64, String> {
    int_in(s, 0, u64::MAX, "")
}

/// Largest --peers: a room of a `pierce server` (the default rooms policy) holds at most
/// `max_members_cap` members, this peer included; more could never all join.
fn max_peers() -> u16 {
    RoomsConfig::default().max_members_cap.saturating_sub(1)
}

fn parse_peers(s: &str) -> Result<u16, String> {
    let max = max_peers();
    let room = u32::from(max) + 1;
    int_in(
        s,
        0,
        max,
        &format!(" (a pierce server's room holds {room} members)"),
    )
}

fn parse_count(s: &str) -> Result<u32, String> {
    int_in(s, 0, MAX_COUNT, "")
}

/// Largest --size in any mode: the core's largest reliable message (unreliable mode allows one
/// datagram's worth, checked with --mode before the run starts).
fn max_size() -> usize {
    ClientConfig::default().max_message_size
}

fn parse_datagram_size(s: &str) -> Result<usize, String> {
    let (min, max) = (
        pierce_core::MIN_DATAGRAM_SIZE,
        pierce_core::MAX_DATAGRAM_SIZE,
    );
    int_in(s, min, max, " bytes")
}

fn parse_size(s: &str) -> Result<usize, String> {
    int_in(s, MIN_SIZE, max_size(), " bytes")
}

/// Seconds from `min` (0 or just above) to [`MAX_SECS`]; fractions allowed, never NaN,
/// infinite or negative.
fn parse_secs(s: &str, above_zero: bool) -> Result<Duration, String> {
    let range = if above_zero {
        format!("more than 0 and at most {MAX_SECS} (a day)")
    } else {
        format!("from 0 to {MAX_SECS} (a day)")
    };
    let d = s
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs <= MAX_SECS as f64)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !(above_zero && d.is_zero()));
    d.ok_or_else(|| format!("expected a number of seconds {range}"))
}

fn parse_hold(s: &str) -> Result<Duration, String> {
    parse_secs(s, false)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    parse_secs(s, true)
}

/// `s`, if it is from `min` to `max` bytes long.
fn text_in(s: &str, min: usize, max: usize, what: &str) -> Result<String, String> {
    if (min..=max).contains(&s.len()) {
        return Ok(s.to_owned());
    }
    let range = match min {
        0 => format!("at most {max} bytes{what}"),
        _ => format!("{min} to {max} bytes{what}"),
    };
    Err(format!("expected {range}, got {}", s.len()))
}

fn parse_room(s: &str) -> Result<String, String> {
    text_in(s, 1, MAX_NAME_LEN, "")
}

fn parse_password(s: &str) -> Result<String, String> {
    text_in(s, 0, MAX_NAME_LEN, " (empty: no password)")
}

fn parse_name(s: &str) -> Result<String, String> {
    text_in(s, 1, MAX_NAME, "")
}

fn parse_secret(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("expected a secret, not an empty string".to_owned());
    }
    Ok(s.to_owned())
}

pub(super) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        "expected IP:PORT, such as 192.0.2.7:7777 or [2001:db8::7]:7777 (no host names)".to_owned()
    })
}

/// What kind of address `ip` is, if no single host can have it: unspecified, broadcast or
/// multicast, in their IPv4-mapped IPv6 forms too (`::ffff:255.255.255.255`).
fn not_a_host(ip: IpAddr) -> Option<&'static str> {
    let ip = ip.to_canonical();
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("the broadcast address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// A server to reach: one host. Port 0 is refused after parsing, where --host is known.
fn parse_server(s: &str) -> Result<SocketAddr, String> {
    let addr = parse_addr(s)?;
    match not_a_host(addr.ip()) {
        Some(what) => Err(format!(
            "{} is {what}, which no server has; name the server's own IP",
            addr.ip()
        )),
        None => Ok(addr),
    }
}

/// A local address to bind: a specific IP or every one (unspecified), any port.
pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let addr = parse_addr(s)?;
    match not_a_host(addr.ip()) {
        Some(what) if !addr.ip().to_canonical().is_unspecified() => Err(format!(
            "{} is {what}: a socket cannot be bound to it",
            addr.ip()
        )),
        _ => Ok(addr),
    }
}

/// `--cluster`: `redis://HOST:PORT` or `redis://HOST:PORT/DB` (no credentials: they would
/// show in `ps`), as [`crate::cluster::check_url`] checks it.
pub(super) fn parse_redis_url(s: &str) -> Result<String, String> {
    crate::cluster::check_url(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

/// `--node-id` (and `--cluster-namespace`).
pub(super) fn parse_node_id(s: &str) -> Result<String, String> {
    if pierce_core::cluster::valid_id(s, false) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?}: 1 to 64 characters of A-Z a-z 0-9 . _ -"))
    }
}

/// `--region`.
pub(super) fn parse_region(s: &str) -> Result<String, String> {
    if pierce_core::cluster::valid_id(s, true) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?}: up to 64 characters of A-Z a-z 0-9 . _ -"))
    }
}

/// The alternate discovery address: a specific IP of this host, any port.
pub(super) fn parse_alt_listen(s: &str) -> Result<SocketAddr, String> {
    let addr = parse_listen(s)?;
    if addr.ip().to_canonical().is_unspecified() {
        return Err(format!(
            "{} is the unspecified address: NAT discovery answers from a known address, name \
             a specific IP",
            addr.ip()
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_and_reject_nonsense() {
        assert_eq!(parse_timeout("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_hold("0"), Ok(Duration::ZERO));
        assert_eq!(parse_hold("86400"), Ok(Duration::from_secs(MAX_SECS)));
        assert_eq!(parse_timeout("86400"), Ok(Duration::from_secs(MAX_SECS)));
        for bad in [
            "-1",
            "-0.5",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "1e30",
            "1e400",
            "86400.001",
            "soon",
            "",
            "1s",
            "0x10",
        ] {
            let hold = parse_hold(bad).expect_err(bad);
            assert!(hold.contains("from 0 to 86400"), "{bad}: {hold}");
            let timeout = parse_timeout(bad).expect_err(bad);
            assert!(
                timeout.contains("more than 0 and at most 86400"),
                "{bad}: {timeout}"
            );
        }
        // Zero, and what rounds to zero nanoseconds, is no timeout.
        for zero in ["0", "-0", "0.0", "1e-10"] {
            assert!(parse_timeout(zero).is_err(), "{zero}");
        }
    }

    #[test]
    fn whole_numbers_are_checked_against_their_range() {
        assert_eq!(parse_stats_every("1"), Ok(1));
        assert_eq!(parse_stats_every("86400"), Ok(86_400));
        assert_eq!(parse_user_id("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_peers("0"), Ok(0));
        assert_eq!(parse_peers("63"), Ok(63));
        assert_eq!(parse_count("0"), Ok(0));
        assert_eq!(parse_count("10000000"), Ok(MAX_COUNT));
        assert_eq!(parse_size("5"), Ok(5));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        type Check = fn(&str) -> Result<(), String>;
        let cases: [(Check, &[&str], &str); 5] = [
            (
                |s| parse_stats_every(s).map(drop),
                &["0", "86401", "18446744073709551615", "-1", "1.5", "x", ""],
                "from 1 to 86400",
            ),
            (
                |s| parse_user_id(s).map(drop),
                &["-1", "18446744073709551616", "1e3", "id"],
                "from 0 to 18446744073709551615",
            ),
            (
                |s| parse_peers(s).map(drop),
                &["64", "65535", "65536", "-1", "many"],
                "from 0 to 63",
            ),
            (
                |s| parse_count(s).map(drop),
                &["10000001", "4294967295", "4294967296", "-1", "ten"],
                "from 0 to 10000000",
            ),
            (
                |s| parse_size(s).map(drop),
                &[
                    "0",
                    "4",
                    "1048577",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-5",
                ],
                "from 5 to 1048576",
            ),
        ];
        for (parse, bad, range) in cases {
            for b in bad {
                let e = parse(b).expect_err(b);
                assert!(e.contains(range), "{b}: {e}");
            }
        }
    }

    #[test]
    fn the_help_states_the_limits_the_parsers_apply() {
        use crate::cli::server::MAX_KEY_FILE;
        // The help text spells the ranges out as literals; they must follow the constants.
        let mut cli = Cli::command();
        cli.build();
        let help = |sub: &str, arg: &str| {
            let sub = cli.find_subcommand(sub).expect(sub);
            let arg = sub.get_arguments().find(|a| a.get_id() == arg).expect(arg);
            arg.get_help().expect("documented").to_string()
        };
        let (peers, size) = (max_peers(), max_size());
        let expected = [
            ("server", "stats_every", format!("1 to {MAX_SECS}")),
            (
                "server",
                "threads",
                format!("1 to {}", pierce_core::MAX_RELAY_SHARDS),
            ),
            (
                "server",
                "key_file",
                format!("at most {MAX_KEY_FILE} bytes"),
            ),
            (
                "server",
                "drain_timeout_ms",
                format!("1 to {MAX_DRAIN_TIMEOUT_MS}"),
            ),
            ("netcheck", "timeout", format!("at most {MAX_SECS}")),
            ("netcheck", "user_id", format!("0 to {}", u64::MAX)),
            ("peer", "room", format!("1 to {MAX_NAME_LEN} bytes")),
            ("peer", "password", format!("at most {MAX_NAME_LEN} bytes")),
            ("peer", "name", format!("1 to {MAX_NAME} bytes")),
            (
                "peer",
                "peers",
                format!("0 to {peers} (a `pierce server` room holds {})", peers + 1),
            ),
            ("peer", "count", format!("0 to {MAX_COUNT}")),
            ("peer", "size", format!("at least {MIN_SIZE} ")),
            ("peer", "size", format!("at most {size} ")),
            ("peer", "hold", format!("0 to {MAX_SECS}")),
            ("peer", "timeout", format!("at most {MAX_SECS}")),
            ("demo", "count", format!("0 to {MAX_COUNT}")),
            ("demo", "size", format!("{MIN_SIZE} to {size}")),
            ("demo", "timeout", format!("at most {MAX_SECS}")),
        ];
        for (sub, arg, text) in expected {
            let help = help(sub, arg);
            assert!(
                help.contains(&text),
                "{sub} --{arg}: {text:?} not in {help:?}"
            );
        }
    }

    #[test]
    fn room_names_passwords_and_peer_names_have_the_cores_limits() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let full = "x".repeat(MAX_NAME_LEN);
        assert_eq!(parse_room(&full), Ok(full.clone()));
        assert_eq!(parse_password(""), Ok(String::new()));
        assert_eq!(parse_password(&full), Ok(full.clone()));
        assert_eq!(parse_name(&full), Ok(full.clone()));
        // Bytes, not characters: 33 two-byte characters are 66 bytes.
        let wide = "é".repeat(33);
        for (parse, what) in [
            (
                parse_room as fn(&str) -> Result<String, String>,
                "1 to 64 bytes",
            ),
            (parse_password, "at most 64 bytes"),
            (parse_name, "1 to 64 bytes"),
        ] {
            assert!(parse(&long).expect_err("too long").contains(what));
            assert!(parse(&wide).expect_err("too long").contains("got 66"));
        }
        assert!(parse_room("").is_err());
        assert!(parse_name("").is_err());
        assert!(parse_secret("").is_err());
        assert_eq!(parse_secret("s"), Ok("s".to_owned()));
    }

    #[test]
    fn addresses_that_no_server_has_are_refused() {
        for ok in [
            "192.0.2.7:7777",
            "[2001:db8::7]:7777",
            "127.0.0.1:1",
            "[::1]:1",
        ] {
            assert!(parse_server(ok).is_ok(), "{ok}");
        }
        // Port 0 passes the value's parser: --host picks a port with it (checked later).
        assert!(parse_server("127.0.0.1:0").is_ok());
        for (bad, what) in [
            ("0.0.0.0:7777", "unspecified"),
            ("[::]:7777", "unspecified"),
            ("[::ffff:0.0.0.0]:7777", "unspecified"),
            ("255.255.255.255:7777", "broadcast"),
            ("[::ffff:255.255.255.255]:7777", "broadcast"),
            ("224.0.0.1:7777", "multicast"),
            ("239.255.255.250:1900", "multicast"),
            ("[ff02::1]:7777", "multicast"),
            ("[::ffff:224.0.0.251]:5353", "multicast"),
            ("localhost:7777", "expected IP:PORT"),
            ("127.0.0.1", "expected IP:PORT"),
            ("127.0.0.1:65536", "expected IP:PORT"),
        ] {
            let e = parse_server(bad).expect_err(bad);
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn listen_addresses_refuse_what_cannot_be_bound() {
        for ok in [
            "0.0.0.0:0",
            "[::]:0",
            "127.0.0.1:0",
            "[::ffff:127.0.0.1]:7777",
        ] {
            assert!(parse_listen(ok).is_ok(), "{ok}");
        }
        for bad in [
            "224.0.0.1:0",
            "255.255.255.255:0",
            "[ff02::1]:0",
            "[::ffff:239.0.0.1]:0",
        ] {
            assert!(
                parse_listen(bad)
                    .expect_err(bad)
                    .contains("cannot be bound")
            );
        }
        assert!(parse_alt_listen("127.0.0.2:0").is_ok());
        for bad in ["0.0.0.0:0", "[::]:9", "224.0.0.1:0"] {
            assert!(parse_alt_listen(bad).is_err(), "{bad}");
        }
    }

    fn parse(argv: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_checked_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn flags_that_do_not_go_together_are_refused_after_parsing() {
        let server = |extra: &[&str]| {
            let mut argv = vec!["pierce", "server"];
            argv.extend_from_slice(extra);
            parse(&argv).map(drop)
        };
        assert!(server(&["--listen", "0.0.0.0:0"]).is_ok());
        assert!(server(&["--listen", "[::]:0"]).is_ok());
        assert!(server(&["--listen", "127.0.0.1:0", "--alt-listen", "127.0.0.2:0"]).is_ok());
        assert!(server(&["--listen", "127.0.0.1:7", "--alt-listen", "127.0.0.1:8"]).is_ok());
        for (flags, what) in [
            (["0.0.0.0:0", "127.0.0.2:0"], "specific IP"),
            (["[::]:0", "[::1]:0"], "specific IP"),
            (["[::ffff:0.0.0.0]:0", "[::1]:0"], "specific IP"),
            (["127.0.0.1:0", "[::1]:0"], "same address family"),
            (["127.0.0.1:7", "127.0.0.1:7"], "must differ from --listen"),
        ] {
            let e = server(&["--listen", flags[0], "--alt-listen", flags[1]]).expect_err(what);
            assert!(
                e.contains(what) && e.contains("Usage: pierce server"),
                "{e}"
            );
        }
        let peer = |extra: &[&str]| {
            let mut argv = vec!["pierce", "peer", "--room", "r", "--peers", "1"];
            argv.extend_from_slice(extra);
            parse(&argv).map(drop)
        };
        assert!(peer(&["--server", "127.0.0.1:0", "--host"]).is_ok());
        let e = peer(&["--server", "127.0.0.1:0"]).expect_err("port 0");
        assert!(e.contains("--server 127.0.0.1:0: port 0"), "{e}");
        let e = peer(&["--server", "[::1]:7", "--bind", "0.0.0.0:0"]).expect_err("family");
        assert!(e.contains("--bind 0.0.0.0:0 cannot reach --server"), "{e}");
        let e = peer(&["--server", "127.0.0.1:7", "--bind", "[::1]:0"]).expect_err("family");
        assert!(e.contains("--bind [::1]:0 cannot reach --server"), "{e}");
        // NAT64: `auto` or a /96 prefix.
        let nat64 = |p: &str| {
            let mut argv = vec!["pierce", "peer", "--room", "r", "--peers", "1"];
            argv.extend(["--server", "192.0.2.1:7", "--nat64-prefix", p]);
            parse(&argv).map(|c| match c.command {
                Command::Peer(p) => p.connect.nat64_prefix,
                _ => panic!("not peer"),
            })
        };
        assert_eq!(nat64("auto"), Ok(Some(Nat64::Auto)));
        let prefix = "2001:db8:64:64::".parse().expect("literal");
        assert_eq!(nat64("2001:db8:64:64::"), Ok(Some(Nat64::Prefix(prefix))));
        let e = nat64("64:ff9b::1").expect_err("not a /96");
        assert!(e.contains("last 32 bits zero"), "{e}");
        let e = nat64("192.0.2.1").expect_err("not IPv6");
        assert!(e.contains("not `auto` or an IPv6 prefix"), "{e}");
        // [::] is dual stack: it reaches both families, one server list of both included.
        assert!(peer(&["--server", "127.0.0.1:7", "--bind", "[::]:0"]).is_ok());
        let both = [
            "--server",
            "127.0.0.1:7",
            "--server",
            "[::1]:8",
            "--bind",
            "[::]:0",
        ];
        assert!(peer(&both).is_ok());
        let e = parse(&["pierce", "netcheck", "--server", "[::1]:0"]).expect_err("port 0");
        assert!(e.contains("--server [::1]:0: port 0"), "{e}");
    }

    #[test]
    fn peer_takes_server_more_than_once_and_the_other_commands_once() {
        let peer = |extra: &[&str]| {
            let mut argv = vec!["pierce", "peer", "--room", "r", "--peers", "1"];
            argv.extend_from_slice(extra);
            parse(&argv).map(|c| match c.command {
                Command::Peer(p) => p.connect.servers,
                _ => panic!("not peer"),
            })
        };
        let list = ["--server", "127.0.0.1:7", "--server", "127.0.0.2:8"];
        let servers = peer(&list).expect("a list");
        assert_eq!(
            servers,
            ["127.0.0.1:7", "127.0.0.2:8"].map(|s| s.parse().expect("literal"))
        );
        let e = peer(&["--server", "127.0.0.1:7", "--server", "[::1]:8"]).expect_err("family");
        assert!(e.contains("one address family"), "{e}");
        let mut host = list.to_vec();
        host.push("--host");
        assert!(peer(&host).expect_err("host").contains("--host"));
        let e = parse(&[
            "pierce",
            "netcheck",
            "--server",
            "127.0.0.1:7",
            "--server",
            "127.0.0.1:8",
        ])
        .expect_err("netcheck takes one per family");
        assert!(e.contains("one --server per address family"), "{e}");
        let netcheck = |extra: &[&str]| {
            let mut argv = vec!["pierce", "netcheck"];
            argv.extend_from_slice(extra);
            parse(&argv)
        };
        let both = ["--server", "127.0.0.1:7", "--server", "[::1]:8"];
        assert!(netcheck(&both).is_ok());
        let e = netcheck(&[&both[..], &["--bind", "[::]:0"]].concat()).expect_err("bind");
        assert!(e.contains("--bind [::]:0 with two --server"), "{e}");
        let e = netcheck(&[&both[..], &["--nat64-prefix", "auto"]].concat()).expect_err("nat64");
        assert!(e.contains("--nat64-prefix with two --server"), "{e}");
        let e = netcheck(&[&both[..], &["--server", "[::1]:9"]].concat()).expect_err("three");
        assert!(e.contains("--server given 3 times"), "{e}");
        let e = netcheck(&["--server", "127.0.0.1:7", "--server", "[::1]:0"]).expect_err("port");
        assert!(e.contains("port 0 is no server's port"), "{e}");
    }

    #[test]
    fn the_peer_only_parser_makes_the_same_checks() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["peer", "--room", "r", "--peers", "1"];
            argv.extend_from_slice(extra);
            try_parse_peer_args("peer", argv).map_err(|e| e.to_string())
        };
        assert!(parse(&["--server", "127.0.0.1:7"]).is_ok());
        let e = parse(&["--server", "127.0.0.1:0"]).expect_err("port 0");
        assert!(e.contains("port 0 is no server's port"), "{e}");
        let stun = ["--server", "127.0.0.1:7", "--stun", "[2001:db8::1]:3478"];
        assert!(parse(&stun).is_ok());
        let e = parse(&["--server", "127.0.0.1:7", "--stun", "[2001:db8::1]:0"]).expect_err("0");
        assert!(e.contains("--stun [2001:db8::1]:0: port 0"), "{e}");
        let e = parse(&[&stun[..], &["--private"]].concat()).expect_err("private");
        assert!(e.contains("not with --private or --relay-only"), "{e}");
        let five = ["--stun", "192.0.2.1:3478"].repeat(5);
        let e = parse(&[&stun[..2], &five[..]].concat()).expect_err("five");
        assert!(e.contains("--stun given 5 times: at most 4"), "{e}");
        let e = parse(&["--server", "224.0.0.1:7"]).expect_err("multicast");
        assert!(e.contains("'--server <IP:PORT>'"), "{e}");
        let e = parse(&["--server", "127.0.0.1:7", "--peers", "64"]).expect_err("peers");
        assert!(e.contains("--peers"), "{e}");
    }

    #[test]
    fn peer_flags_parse() {
        let cli = Cli::try_parse_from([
            "pierce",
            "peer",
            "--server",
            "127.0.0.1:7777",
            "--room",
            "r",
            "--peers",
            "3",
            "--mode",
            "unreliable",
            "--relay-only",
            "--hold",
            "0.5",
        ])
        .expect("valid flags");
        let Command::Peer(p) = cli.command else {
            panic!("not peer");
        };
        assert_eq!((p.peers, p.count, p.size), (3, 10, 64));
        assert_eq!(p.mode, Mode::Unreliable);
        assert!(p.relay_only && !p.json);
        assert_eq!(p.hold, Duration::from_millis(500));
        assert_eq!(p.timeout, Duration::from_secs(30));
        assert_eq!(p.transport(), Transport::Auto);
    }

    #[test]
    fn transport_flags_parse_and_exclude_each_other() {
        let peer = |extra: &[&str]| {
            let mut argv = vec!["pierce", "peer", "--server", "127.0.0.1:7777"];
            argv.extend_from_slice(&["--room", "r", "--peers", "1"]);
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Peer(p) => p.transport(),
                _ => panic!("not peer"),
            })
        };
        assert_eq!(peer(&["--tcp"]).expect("valid"), Transport::Tcp);
        assert_eq!(peer(&["--udp-only"]).expect("valid"), Transport::Udp);
        assert!(peer(&["--tcp", "--udp-only"]).is_err());
    }

    #[test]
    fn privacy_flags_parse_and_a_host_cannot_be_private() {
        let peer = |extra: &[&str]| {
            let mut argv = vec!["pierce", "peer", "--server", "127.0.0.1:7777"];
            argv.extend_from_slice(&["--room", "r", "--peers", "1"]);
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Peer(p) => (p.private, p.relay_only_room),
                _ => panic!("not peer"),
            })
        };
        assert_eq!(peer(&[]).expect("valid"), (false, false));
        assert_eq!(peer(&["--private"]).expect("valid"), (true, false));
        assert_eq!(peer(&["--relay-only-room"]).expect("valid"), (false, true));
        // A host is the server its peers reach: its address is theirs to know.
        assert!(peer(&["--host", "--private"]).is_err());
    }
}
