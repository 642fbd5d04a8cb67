//! The command line, as clap derive structs. The async-std example peer flattens
//! [`PeerArgs`] into its own parser, so both peers accept exactly the same flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pierce_core::{Channel, PublicKey, Transport};

/// `pierce`: run a Pierce server, check this host's NAT, or try peer-to-peer messaging.
#[derive(Debug, Parser)]
#[command(name = "pierce", version)]
#[command(after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "\
Exit status: 0 success; 1 the run failed (unreachable server, refused session, timeout,
incomplete delivery); 2 bad command-line input.";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the rendezvous/relay server with the rooms policy until SIGINT or SIGTERM.
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
On SIGINT or SIGTERM every client is told the server is closing, and the command exits 0.")]
pub struct ServerArgs {
    /// UDP address to listen on, and TCP at the same address for clients that cannot use UDP
    /// (port 0 picks a free port; the ready line shows it).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// A second UDP address, for NAT behaviour discovery (RFC 5780): the server answers STUN
    /// there too, and on the crossings of the two addresses, so `pierce netcheck` and RFC 5780
    /// tools (turnutils_natdiscovery) can measure NAT mapping and filtering. A second IP of
    /// this host gives the full test; the same IP with another port measures port dependence
    /// only. Port 0 picks a free port (the ready line shows it). Needs --listen with a
    /// specific IP, not 0.0.0.0 or ::.
    #[arg(long, value_name = "IP:PORT")]
    pub alt_listen: Option<SocketAddr>,
    /// The server's identity key: 64 hex digits (whitespace around them ignored) or 32 raw
    /// bytes. Created with 32 bytes from the OS CSPRNG, written as hex, mode 0600, if missing.
    /// Without it the key is new on every start, and pinned peers must be told the new one.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Require connect tokens issued with this shared secret (peers: --token-secret).
    #[arg(long, value_name = "S")]
    pub secret: Option<String>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print a stats line every this many seconds (one is always printed on stopping).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub stats_every: Option<u64>,
}

/// Connecting to a server: shared by `netcheck` and `peer`.
#[derive(Clone, Debug, Args)]
pub struct ConnectArgs {
    /// The server's UDP address.
    #[arg(long, value_name = "IP:PORT")]
    pub server: SocketAddr,
    /// Refuse any server that cannot prove it holds this key (the `public_key` of its ready
    /// line). Without it the key is trusted on first use and reported.
    #[arg(long, value_name = "HEX", value_parser = parse_key)]
    pub server_key: Option<PublicKey>,
    /// Mint a connect token with this secret (the server's --secret). Stands in for a game
    /// backend that issues tokens; valid for one hour.
    #[arg(long, value_name = "S")]
    pub token_secret: Option<String>,
    /// The user id in the minted token (random if not given).
    #[arg(long, value_name = "ID", requires = "token_secret")]
    pub user_id: Option<u64>,
    /// Local UDP address to bind (default: any address of the server's family, any port).
    #[arg(long, value_name = "IP:PORT")]
    pub bind: Option<SocketAddr>,
}

/// `pierce netcheck`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints {\"event\":\"netcheck\",\"reflexive\":\"IP:PORT\",\"mapping\":M,\"filtering\":F,\
\"port_preserved\":BOOL,\"allocation\":A,\"port_delta\":N,\"alternate\":\"IP:PORT\"|null}.
M and F are \"endpoint-independent\", \"address-dependent\", \"address-and-port-dependent\" or
\"unknown\" (not measurable, never guessed), from the RFC 5780 tests. allocation (\"sequential\"
or \"random\") and port_delta (the port step between new mappings) are measured only for
endpoint-dependent mapping, null otherwise. alternate is the server's second address; without
one (a server without --alt-listen) mapping and filtering stay unknown, with a note on stderr.
--server may be any RFC 5780 STUN server; a Pierce server must also accept the session
(--server-key and tokens are checked). A server that answers only STUN is reported as such on
stderr, unless --server-key or --token-secret say a Pierce server is expected.")]
pub struct NetcheckArgs {
    /// The server to ask.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
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
    /// Room to join, created if it does not exist.
    #[arg(long, value_name = "NAME")]
    pub room: String,
    /// The room's password (empty: none).
    #[arg(long, value_name = "P", default_value = "")]
    pub password: String,
    /// This peer's name in other peers' summaries (default: `peer-<host id>`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Other members to wait for before sending.
    #[arg(long, value_name = "K")]
    pub peers: u16,
    /// Messages to send to every other member.
    #[arg(long = "send", value_name = "N", default_value_t = 10)]
    pub count: u32,
    /// Bytes per message (at least 5: a tag and a sequence number).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub size: usize,
    /// Delivery mode of the N messages.
    #[arg(long, value_enum, default_value_t = Mode::ReliableOrdered)]
    pub mode: Mode,
    /// Never punch: keep every peer on the server's relay (`ClientConfig::direct_paths`
    /// off).
    #[arg(long)]
    pub relay_only: bool,
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
    /// --timeout without failing the run).
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_hold)]
    pub hold: Duration,
    /// Seconds for the whole run (connect, join, exchange, hold); then fail.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_timeout)]
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
    #[arg(long, conflicts_with_all = ["server_key", "bind", "tcp", "relay_only"])]
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
  \"first_message_ms\":F|null,\"direct_after_ms\":F|null}]}
joined_ms (when that member was first seen in the room), first_message_ms (its first payload)
and direct_after_ms (when the path to that member first went direct; null if it never did)
count from the start of the command. ok needs, for every member: its hello, no
corrupt payloads, and in reliable modes all N payloads (in order, for reliable-ordered), no
duplicates, no expired message and its G. In unreliable mode loss shows in `received` but does
not fail the run. With --json, events are JSON lines too: connected, room_joined,
member_joined, member_named, member_left, path_changed, message_expired, peer_recovering,
peer_recovered, server_transport ({\"transport\":\"tcp\"|\"udp\"}: the server session moved).

SIGINT or SIGTERM ends the run with its summary (ok false); a second one ends it at once.
Exit status 0 if ok, 1 otherwise, 2 for bad input.";

impl PeerArgs {
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
    /// Messages each peer sends to each other peer.
    #[arg(long = "send", value_name = "N", default_value_t = 20)]
    pub count: u32,
    /// Bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub size: usize,
    /// Seconds for the whole demo.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// Parses the process's command line as [`PeerArgs`] alone, for a program that is nothing but
/// a peer (the async-std example): clap's usage errors and `--help` included, exit status 2.
pub fn parse_peer_args(program: &'static str) -> PeerArgs {
    #[derive(Parser)]
    struct PeerOnly {
        #[command(flatten)]
        args: PeerArgs,
    }
    let command = <PeerOnly as clap::CommandFactory>::command()
        .name(program)
        .about("A scripted room member: join, exchange N messages with every other member, report");
    let matches = command.get_matches();
    match <PeerOnly as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(p) => p.args,
        Err(e) => e.exit(),
    }
}

fn parse_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(s).map_err(|_| "expected 64 hex digits".to_owned())
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a usable duration"))
}

fn parse_hold(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d > MAX_SECS {
        return Err(format!("at most {} seconds", MAX_SECS.as_secs()));
    }
    Ok(d)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_hold(s)?;
    if d.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(d)
}

/// Longest --hold or --timeout: a day, far below where `Instant + Duration` could overflow.
const MAX_SECS: Duration = Duration::from_secs(86_400);

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
        assert!(parse_timeout("0").is_err());
        assert!(parse_hold("-1").is_err());
        assert!(parse_hold("NaN").is_err());
        assert!(parse_hold("1e30").is_err());
        assert!(parse_hold("soon").is_err());
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
}
