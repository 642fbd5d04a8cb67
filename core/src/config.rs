//! Configuration with documented defaults. Build one, wrap it in an `Arc`, share it.

use std::net::Ipv6Addr;

use crate::crypto::{PublicKey, SecretKey};
use crate::error::ConfigError;
use crate::time::Duration;

/// The datagram size every path starts at, and the largest Pierce sends to a path it has not
/// probed (RFC 8899's BASE_PLPMTU).
///
/// 1200 bytes fits every IPv6 path (minimum MTU 1280 minus headers) and the tunnels games meet
/// in the wild (WireGuard 1420, Tailscale 1280); RFC 9000 §14 uses the same floor. Pierce never
/// relies on IP fragmentation.
pub const BASE_DATAGRAM_SIZE: usize = 1200;

/// Largest datagram Pierce ever sends or accepts, and the buffer size `poll_transmit` needs:
/// 1452 bytes, a 1500-byte Ethernet MTU minus the IPv6 (40) and UDP (8) headers. Datagrams
/// above [`BASE_DATAGRAM_SIZE`] go only to a path that acknowledged a probe of that size.
pub const MAX_DATAGRAM_SIZE: usize = 1452;

/// How often an idle side sends a keepalive. Linux conntrack forgets an unreplied UDP flow
/// after 30 s and home routers are often shorter; RFC 9308 §3.2 calls ~30 s reasonable. Games
/// also want a dead link noticed within seconds (Photon's client timeout is ~10 s), so the
/// server link pings after 5 s of sending nothing.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How often an idle client pings the server: often enough that the server can tell a
/// client that went quiet (its network changed, it lost signal) within
/// [`DEFAULT_OFFLINE_AFTER`] and warn its peers, for ~25 bytes a second.
pub const DEFAULT_CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// A session that hears nothing authentic for this long is dead: three missed keepalives.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// A client the server has not heard for this long is offline: its peers get
/// `PeerRecovering` (two missed client keepalives and a margin). It has until
/// [`DEFAULT_IDLE_TIMEOUT`] to come back, from any address: a recovery window of 10 s.
pub const DEFAULT_OFFLINE_AFTER: Duration = Duration::from_secs(5);
/// How long a client keeps trying to reach the server before giving up (Photon: ~10 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First handshake retransmission; doubles up to [`DEFAULT_HANDSHAKE_RETRY_MAX`].
pub const DEFAULT_HANDSHAKE_RETRY_INITIAL: Duration = Duration::from_millis(250);
/// Cap on the handshake retransmission interval. Measured in the simulator: with 30% burst
/// loss, a 2 s cap left 0.6% of 1000 seeds unconnected after 10 s; a 1 s cap, none.
pub const DEFAULT_HANDSHAKE_RETRY_MAX: Duration = Duration::from_secs(1);

/// With several server addresses ([`crate::Client::connect_any`]), how long a first connect
/// waits for one to answer before trying the next, and how long a re-registration attempt
/// gives one: past the TCP fallback ([`DEFAULT_TCP_FALLBACK_AFTER`]) by two handshake
/// retransmission caps, so that a client behind a UDP-blocking firewall still gets its TCP
/// stream answered by each address before moving on.
pub const DEFAULT_SERVER_ANSWER_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a client waits for the server over UDP before also trying TCP
/// ([`Transport::Auto`]): long enough for a few handshake retransmissions on a lossy path,
/// short enough that a player behind a UDP-blocking firewall is in within seconds.
pub const DEFAULT_TCP_FALLBACK_AFTER: Duration = Duration::from_secs(2);
/// How often a client on TCP checks whether UDP to the server works again.
pub const DEFAULT_UDP_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How a client reaches its server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// UDP; if the server has not answered after [`ClientConfig::tcp_fallback_after`], a TCP
    /// stream too. A client on TCP keeps checking UDP (every
    /// [`ClientConfig::udp_probe_interval`]) and moves back to it when it works both ways.
    #[default]
    Auto,
    /// UDP only.
    Udp,
    /// TCP only (`pierce peer --tcp`): the server session, and every relayed peer packet, go
    /// over one TCP stream, and nothing is sent to the server over UDP. Peers still try
    /// direct UDP paths to LAN candidates, but the server never learns this client's UDP
    /// address, so pairs across NATs stay on the relay.
    Tcp,
}

/// Client settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// If set, the server must prove it holds the matching secret key, or the connection
    /// fails with [`crate::DisconnectReason::ServerKeyMismatch`]. If unset, any server key is
    /// accepted and reported in [`crate::ClientEvent::Connected`] (trust on first use).
    pub server_key: Option<PublicKey>,
    /// Send a keepalive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Declare the server lost after this long without an authentic packet from it.
    pub idle_timeout: Duration,
    /// Give up connecting after this long. With several server addresses
    /// ([`crate::Client::connect_any`]) it bounds the whole first connect: the addresses are
    /// tried in turn (each for `server_answer_timeout`, going round the list again if time is
    /// left) until one answers or this runs out.
    pub connect_timeout: Duration,
    /// With several server addresses: how long an address is given to answer (its
    /// ServerHello) before the next is tried, on the first connect and on each
    /// re-registration attempt. Ignored with one address (it has the whole
    /// `connect_timeout`).
    pub server_answer_timeout: Duration,
    /// First handshake retransmission delay.
    pub handshake_retry_initial: Duration,
    /// Largest handshake retransmission delay.
    pub handshake_retry_max: Duration,
    /// Largest datagram to send; at most [`MAX_DATAGRAM_SIZE`] (the default). It is the
    /// ceiling of path-MTU discovery (RFC 8899 MAX_PLPMTU): every peer path, relay and
    /// direct, starts at the base, the smaller of this and [`BASE_DATAGRAM_SIZE`], and carries
    /// larger datagrams, up to this, only once a probe of that size was acknowledged on it.
    /// [`BASE_DATAGRAM_SIZE`] or less turns probing off. The server session's own packets and
    /// peer traffic over a TCP stream stay at the base.
    pub max_datagram_size: usize,
    /// Datagrams to the server queued and not yet transmitted, at most.
    pub max_queued_datagrams: usize,
    /// Events not yet drained by `poll_event`, at most; beyond it new events are dropped and
    /// counted in `stats().events_dropped`.
    pub max_pending_events: usize,
    /// Peer messages queued and not yet transmitted, at most.
    pub max_queued_peer_messages: usize,
    /// Control messages (group acks, room requests, reliable server messages) queued and not
    /// yet acknowledged, at most.
    pub max_queued_control: usize,
    /// Channels of every peer connection, indexed by [`crate::Channel`]; the same on every
    /// client of a session. Defaults: [`crate::ChannelConfig::defaults`].
    pub channels: Vec<crate::ChannelConfig>,
    /// Largest reliable message, sent or accepted (fragmented on the wire).
    pub max_message_size: usize,
    /// Bytes of partial messages one peer may have in reassembly at once; a peer over it is
    /// dropped with [`crate::PeerDropReason::ReassemblyLimit`].
    pub max_reassembly_bytes: usize,
    /// Try to reach peers directly (hole punching); `false` keeps every peer on the relay.
    pub direct_paths: bool,
    /// IP privacy: no peer ever learns this client's addresses. The client tells the server
    /// so before its session is established (a `Private` frame with its `Connect`); the
    /// server then hands its public address, LAN addresses and NAT's mapped ports to no one,
    /// and introduces it to every peer as relay-only: neither end of such a pair learns the
    /// other's addresses, and both stay on the relay. The client itself never punches,
    /// answers no probes, never sends its LAN addresses ([`crate::Client::set_local_addresses`]
    /// keeps them to itself) and runs no NAT discovery. Cost: every packet to and from its
    /// peers goes through the server (its bandwidth, and the detour's latency). A server that
    /// predates privacy fails to decode the `Private` frame and drops the packet, so a
    /// private client does not connect to it at all (`ConnectTimedOut`) rather than become
    /// public. Default: off.
    pub private: bool,
    /// Bytes queued or unacknowledged towards one peer at once; beyond it `send` returns
    /// [`crate::SendError::QueueFull`], so a peer that stops acknowledging cannot make memory
    /// grow.
    pub max_send_buffer_per_peer: usize,
    /// Classify this client's NAT (RFC 5780) against the server once connected, and tell
    /// the server, so peers can pick port prediction or birthday probing. Needs a server with
    /// an alternate address ([`crate::Server::enable_nat_discovery`]); against one without,
    /// discovery ends after one STUN round trip with the behaviour unknown.
    pub nat_discovery: bool,
    /// Ask the default gateway (named by the runtime, [`crate::Client::set_gateway`]) to
    /// forward this client's UDP port, with PCP (RFC 6887) or NAT-PMP (RFC 6886), and offer
    /// the mapped public address to peers: a host behind a symmetric NAT whose router
    /// honours it becomes reachable directly. Deleted on [`crate::Client::disconnect`]. Off
    /// with `private` or without `direct_paths`. Default: on.
    pub port_mapping: bool,
    /// Extra local sockets this client opens, when it is the "hard" side (random
    /// endpoint-dependent mapping) of a pair whose other side filters by address and port:
    /// each gets its own NAT mapping towards the peer, and the peer probes random ports
    /// (birthday probing; Tailscale also opens 256). 0 turns birthday probing off on this
    /// side. At most 1024. The mappings they make are budgeted: for every peer together, at
    /// most three times this many per 2 minutes (a peer that would need more, e.g. a fourth
    /// hard-to-reach peer or one that moved, waits until older mappings have idled out).
    pub birthday_sockets: u16,
    /// Random ports the "easy" side of such a pair probes per round, at most (with 256
    /// mappings on the other side, 1024 probes succeed ~98% of the time).
    pub birthday_probes: u32,
    /// Ports probed past a sequential NAT's last seen mapping, per sweep (port prediction).
    pub prediction_window: u16,
    /// The IPv4 TTL (IPv6 hop limit) of hole-punching *openers* ([`crate::Transmit::ttl`]):
    /// probes that must pass this host's own NAT, opening it towards the peer, but expire
    /// before they reach the peer's NAT, where a Linux router without an input firewall
    /// would pin them as a conntrack entry (see `client/path.rs`). The default, 2, passes
    /// the first router (a home router) and expires at the next one: it opens a NAT that is
    /// the host's gateway, not one further out (a carrier's NAT, a second home router), and
    /// never reaches a peer two routers away or more. `None` sends no openers. At least 1.
    pub opener_ttl: Option<u8>,
    /// How long a peer connection may hold an ack back to send it with data (at most
    /// [`crate::reliability::MAX_ACK_DELAY`], 25 ms). The default, 20 ms, lets game traffic
    /// at 60 Hz carry its acks in the next tick's packet: half the datagrams, sealings and
    /// CPU of acking each packet alone. 5 ms recovers lost packets up to ~15 ms sooner on bad
    /// links (measured by `cargo bench -p pierce-sim --bench rudp_vs_peers`).
    pub ack_delay: Duration,
    /// Whether small unacknowledged reliable messages get copies in the spare room of later
    /// packets while the link loses at random (3% or more; see the README's *Reliable UDP*
    /// row). On by default: at 10% loss it cuts a game stream's p99 by more than half, for up
    /// to four times the bytes of those messages. Off trades that latency back for bytes.
    pub spare_room_copies: bool,
    /// When the server session ends by timeout (the server crashed or restarts), by a reset
    /// (see `reregister`) or by [`crate::Client::detach_from_server`], peers with a validated
    /// direct path stay, with their keys and reliability state, for this long. Zero: every
    /// peer goes with the session (and a reset ends it all, as any other loss).
    pub pair_lifetime: Duration,
    /// After the server session times out with peers kept on their direct paths (see
    /// `pair_lifetime`), register with the server again (every 1 s, backing off to 8 s)
    /// until it answers or the pair lifetime ends; with several server addresses
    /// ([`crate::Client::connect_any`]: nodes of one cluster), after any timeout, at once with
    /// the next address (round the list from the one lost, each given
    /// `server_answer_timeout`, backing off only after a full round), every peer kept
    /// meanwhile (relay-only ones for `idle_timeout`, for the new node to introduce again); after a stateless reset (the server is back
    /// without the session, [`crate::DisconnectReason::Reset`]), at once, every peer kept
    /// meanwhile (relay-only ones for `idle_timeout`). The new session presents the last
    /// resumption ticket (same host id, if the server accepts it) and the token given to
    /// `connect`; pairs the server introduces again keep their direct path and reliability
    /// state. Not after an explicit `detach_from_server`.
    pub reregister: bool,
    /// How the server is reached: UDP with a TCP fallback (the default), or one of them only.
    pub transport: Transport,
    /// With [`Transport::Auto`], how long the handshake waits for the server over UDP before
    /// connecting a TCP stream too.
    pub tcp_fallback_after: Duration,
    /// With [`Transport::Auto`], how often a client on TCP probes the server over UDP.
    pub udp_probe_interval: Duration,
    /// On an IPv6-only network behind NAT64 (RFC 6146): the network's /96 prefix (RFC 6052;
    /// [`crate::WELL_KNOWN_NAT64_PREFIX`], or one the runtime discovered with RFC 7050).
    /// With it, every IPv4 address the client is given (the servers it connects to, a
    /// peer's candidates, a node it is sent to) is used in its synthesised IPv6 form
    /// ([`crate::synthesize_nat64`]), which the NAT64 gateway translates. Its last 32 bits
    /// must be zero. Default: none.
    pub nat64_prefix: Option<Ipv6Addr>,
    /// STUN servers (any: a Pierce server, coturn, a public one) this client asks, from its
    /// socket, how the internet sees it, once connected and every 25 s after; each answer
    /// that is not one of its own addresses is offered to peers as a candidate (a
    /// server-reflexive one). For the family the session does not use: a client whose
    /// server is IPv4 learns its IPv6 address behind NAT66 or NPTv6 from an IPv6 server here
    /// (its global IPv6 addresses are candidates already). At most 4, unicast, port not 0.
    /// Not asked with [`ClientConfig::private`] or without [`ClientConfig::direct_paths`].
    /// Default: none.
    pub stun_servers: Vec<std::net::SocketAddr>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            server_key: None,
            keepalive_interval: DEFAULT_CLIENT_KEEPALIVE_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            server_answer_timeout: DEFAULT_SERVER_ANSWER_TIMEOUT,
            handshake_retry_initial: DEFAULT_HANDSHAKE_RETRY_INITIAL,
            handshake_retry_max: DEFAULT_HANDSHAKE_RETRY_MAX,
            max_datagram_size: MAX_DATAGRAM_SIZE,
            max_queued_datagrams: 1024,
            max_pending_events: 65_536,
            max_queued_peer_messages: 4096,
            max_queued_control: 1024,
            channels: crate::ChannelConfig::defaults(),
            max_message_size: 1 << 20,
            max_reassembly_bytes: 4 << 20,
            max_send_buffer_per_peer: 4 << 20,
            direct_paths: true,
            private: false,
            nat_discovery: true,
            port_mapping: true,
            birthday_sockets: 256,
            opener_ttl: Some(2),
            birthday_probes: 1024,
            prediction_window: 32,
            pair_lifetime: Duration::from_secs(600),
            ack_delay: Duration::from_millis(20),
            spare_room_copies: true,
            reregister: true,
            transport: Transport::Auto,
            tcp_fallback_after: DEFAULT_TCP_FALLBACK_AFTER,
            udp_probe_interval: DEFAULT_UDP_PROBE_INTERVAL,
            nat64_prefix: None,
            stun_servers: Vec::new(),
        }
    }
}

impl ClientConfig {
    /// The size every path starts at and the server session keeps to (RFC 8899 BASE_PLPMTU):
    /// [`BASE_DATAGRAM_SIZE`], or `max_datagram_size` if that is smaller.
    pub(crate) fn base_datagram_size(&self) -> usize {
        self.max_datagram_size.min(BASE_DATAGRAM_SIZE)
    }

    /// `addr` as this client reaches it: behind NAT64 ([`ClientConfig::nat64_prefix`]) an
    /// IPv4 address at its synthesised form, else unchanged.
    pub(crate) fn reached_at(&self, addr: std::net::SocketAddr) -> std::net::SocketAddr {
        match self.nat64_prefix {
            Some(prefix) => crate::synthesize_nat64(prefix, addr),
            None => addr,
        }
    }

    /// Checks the settings for contradictions.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_timing(
            self.keepalive_interval,
            self.idle_timeout,
            self.max_datagram_size,
        )?;
        if self.connect_timeout.is_zero()
            || self.server_answer_timeout.is_zero()
            || self.handshake_retry_initial.is_zero()
            || self.udp_probe_interval.is_zero()
        {
            return Err(ConfigError::ZeroDuration);
        }
        if self.ack_delay > crate::reliability::MAX_ACK_DELAY {
            return Err(ConfigError::OutOfRange("ack_delay"));
        }
        let bad_stun = |a: &std::net::SocketAddr| {
            let ip = crate::canonical(*a).ip();
            a.port() == 0 || ip.is_unspecified() || ip.is_multicast()
        };
        if self.stun_servers.len() > crate::client::MAX_STUN_SERVERS
            || self.stun_servers.iter().any(bad_stun)
        {
            return Err(ConfigError::OutOfRange("stun_servers"));
        }
        if self
            .nat64_prefix
            .is_some_and(|p| p.octets()[12..] != [0; 4])
        {
            return Err(ConfigError::OutOfRange("nat64_prefix"));
        }
        if self.handshake_retry_max < self.handshake_retry_initial {
            return Err(ConfigError::RetryMaxBelowInitial);
        }
        if self.opener_ttl == Some(0) {
            return Err(ConfigError::OutOfRange("opener_ttl"));
        }
        if self.birthday_sockets > 1024 {
            return Err(ConfigError::OutOfRange("birthday_sockets"));
        }
        if self.birthday_probes > 65_536 || self.prediction_window > 1024 {
            return Err(ConfigError::OutOfRange("birthday_probes/prediction_window"));
        }
        if self.channels.is_empty() || self.channels.len() > 255 {
            return Err(ConfigError::OutOfRange("channels"));
        }
        if self.max_message_size == 0 || self.max_message_size > u32::MAX as usize / 2 {
            return Err(ConfigError::OutOfRange("max_message_size"));
        }
        if self.max_reassembly_bytes < self.max_message_size
            || self.max_send_buffer_per_peer < self.max_message_size
        {
            return Err(ConfigError::OutOfRange(
                "max_reassembly_bytes/max_send_buffer_per_peer",
            ));
        }
        Ok(())
    }
}

/// Server settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The server's long-term identity.
    pub secret_key: SecretKey,
    /// If set, clients must present a [`crate::ConnectToken`] issued with this secret.
    pub token_secret: Option<Vec<u8>>,
    /// Send a keepalive to a client after this long without sending it anything.
    pub keepalive_interval: Duration,
    /// Drop a client after this long without an authentic packet from it.
    pub idle_timeout: Duration,
    /// Call a client offline after this long without an authentic packet from it: its peers
    /// get [`crate::ClientEvent::PeerRecovering`] and the server
    /// [`crate::ServerEvent::ClientOffline`]; its session, groups and pairs are kept until
    /// `idle_timeout` (the recovery window is the difference), and its next packet, from any
    /// address, brings it back (`PeerRecovered`, `ClientOnline`). Must exceed the clients'
    /// keepalive interval; zero turns the notice off.
    pub offline_after: Duration,
    /// How long a resumption ticket stays good (renewed at half of it while connected). A
    /// client whose session is gone (it timed out, or the server restarted with the same
    /// key) presents its ticket when it connects again and gets its host id back. Zero: no
    /// tickets.
    pub ticket_lifetime: Duration,
    /// Forget a half-open handshake after this long.
    pub handshake_timeout: Duration,
    /// Connected clients, at most; beyond it new clients are rejected with `ServerFull`. At
    /// most 2^24 (16 777 216).
    pub max_clients: usize,
    /// Half-open handshakes held at once, at most; beyond it new ClientHellos are dropped.
    pub max_half_open: usize,
    /// TCP streams without an established session (accepted; at most a handshake under way
    /// on them) held at once, at most; a newer one closes the oldest. Keep it below the runtime's cap on streams
    /// (`pierce_mio::Driver::set_max_streams`, `ServerOptions::max_streams`; by default
    /// [`crate::streams::DEFAULT_MAX_STREAMS`]), so that the runtime's table never fills with
    /// them and always has room for streams that carry sessions. Default: half of it.
    pub max_sessionless_streams: usize,
    /// From this many half-open handshakes on, the server is "under load": a ClientHello
    /// must echo a stateless cookie (one extra round trip) before the server spends X25519
    /// work or state on it, so spoofed floods cannot fill the half-open table. 0: always.
    pub cookie_threshold: usize,
    /// Handshakes per second one source IP may start (sustained) without showing that it
    /// receives at its address. Anyone who can send packets with that source address can
    /// spend this budget, so over it a ClientHello is answered with a Retry (a stateless
    /// cookie, one more round trip) instead of being dropped; hellos that echo the cookie
    /// spend [`ServerConfig::proven_handshake_rate_per_ip`] instead.
    pub handshake_rate_per_ip: u32,
    /// Handshakes one source IP may start in a burst without showing it receives.
    pub handshake_burst_per_ip: u32,
    /// Handshakes per second the whole server starts (sustained), for each of the two kinds
    /// of source (unproven, proven); bounds the X25519 work an attacker with many addresses
    /// can cause. Unproven hellos over it get a Retry.
    pub handshake_rate_global: u32,
    /// Handshakes the whole server may start in a burst (each kind).
    pub handshake_burst_global: u32,
    /// Handshakes per second one source IP may start (sustained) with hellos that echoed a
    /// cookie or came down a TCP stream: only hosts that receive at that address (the players
    /// behind one carrier-grade NAT, say) can spend it, so it is larger. Over it, dropped.
    pub proven_handshake_rate_per_ip: u32,
    /// Proven handshakes one source IP may start in a burst.
    pub proven_handshake_burst_per_ip: u32,
    /// STUN Binding requests per second answered for one source IP (sustained). Its own
    /// budget: a STUN flood with a spoofed source costs that IP's clients NAT behaviour
    /// discovery, never their sessions. Bounds the reflection toward any one address (a STUN
    /// answer is at most 2.6x its request).
    pub stun_rate_per_ip: u32,
    /// STUN Binding requests one source IP may have answered in a burst.
    pub stun_burst_per_ip: u32,
    /// STUN Binding requests per second the whole server answers (sustained).
    pub stun_rate_global: u32,
    /// STUN Binding requests the whole server answers in a burst.
    pub stun_burst_global: u32,
    /// Stateless resets ([`crate::wire::reset`]) per second the whole server sends
    /// (sustained) in answer to packets of sessions it does not have; 0: none. Each is
    /// smaller than the packet it answers, so the limit bounds work, not amplification; one
    /// reset is enough to tell a client, so after a restart it sets how fast the old clients
    /// hear (their later packets are answered too).
    pub reset_rate_global: u32,
    /// Stateless resets the whole server may send in a burst.
    pub reset_burst_global: u32,
    /// Largest datagram the server writes for its sessions; at most [`MAX_DATAGRAM_SIZE`].
    /// Relayed peer packets are forwarded as they came, up to [`MAX_DATAGRAM_SIZE`] whatever
    /// this says: their senders probed their paths (RFC 8899) and sized them.
    pub max_datagram_size: usize,
    /// Datagrams queued per client and not yet transmitted, at most.
    pub max_queued_datagrams_per_client: usize,
    /// Events not yet drained by `poll_event`, at most.
    pub max_pending_events: usize,
    /// Relayed bytes per second one client may send (sustained). Over it, packets are
    /// dropped and counted: a relay must never queue without bound.
    pub relay_rate_per_client: u32,
    /// Relayed bytes one client may send in a burst.
    pub relay_burst_per_client: u32,
    /// Relayed bytes per second within one group (sustained).
    pub relay_rate_per_group: u32,
    /// Relayed bytes per second through the whole server (sustained).
    pub relay_rate_total: u32,
    /// Peer packets waiting for one recipient, at most.
    pub max_queued_relay_per_client: usize,
    /// Relay forwarders the runtime runs on threads of their own (0: the server relays on
    /// its own thread). With `n`, the runtime takes forwarder `i` of `n` from
    /// [`crate::Server::forwarder`] for each thread and steers each relay packet to its owner
    /// ([`crate::relay_shard_of`]); see [`crate::Forwarder`]. At most [`MAX_RELAY_SHARDS`].
    pub relay_shards: u16,
    /// Control messages queued for one client and not yet acknowledged, at most; a client
    /// that falls this far behind is disconnected with [`crate::LeaveReason::Overloaded`].
    pub max_queued_control_per_client: usize,
    /// The rooms policy for servers with no game logic of their own (`None`: no rooms; room
    /// requests fail with [`crate::RoomError::Disabled`]).
    pub rooms: Option<RoomsConfig>,
    /// Run as one node of a cluster sharing a directory ([`crate::cluster`]); `None` (the
    /// default): a server on its own, as always.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// The rooms policy: named rooms with optional password, listing, join-random, kicking.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RoomsConfig {
    /// Rooms on the server, at most.
    pub max_rooms: usize,
    /// Member limit of a room whose creator asked for none (0).
    pub default_max_members: u16,
    /// Largest member limit a creator may ask for.
    pub max_members_cap: u16,
    /// Every room is relay-only, whatever its creator asked: members never hear each other's
    /// addresses (public or LAN, nor their NAT's mapped ports), never punch, and every packet
    /// between them goes through this server's relay (IP privacy at the cost of relay
    /// bandwidth and latency). Without it, a creator may ask for it per room
    /// ([`crate::RoomOptions::relay_only`]). Default: off.
    pub relay_only: bool,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            default_max_members: 8,
            max_members_cap: 64,
            relay_only: false,
        }
    }
}

impl ServerConfig {
    /// Defaults around the given identity.
    pub fn new(secret_key: SecretKey) -> Self {
        Self {
            secret_key,
            token_secret: None,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            offline_after: DEFAULT_OFFLINE_AFTER,
            ticket_lifetime: Duration::from_secs(600),
            handshake_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_clients: 100_000,
            max_half_open: 4096,
            max_sessionless_streams: crate::streams::DEFAULT_MAX_STREAMS / 2,
            cookie_threshold: 1024,
            handshake_rate_per_ip: 20,
            handshake_burst_per_ip: 64,
            handshake_rate_global: 5000,
            handshake_burst_global: 5000,
            proven_handshake_rate_per_ip: 200,
            proven_handshake_burst_per_ip: 1000,
            stun_rate_per_ip: 200,
            stun_burst_per_ip: 1000,
            stun_rate_global: 5000,
            stun_burst_global: 5000,
            reset_rate_global: 5000,
            reset_burst_global: 5000,
            max_datagram_size: BASE_DATAGRAM_SIZE,
            max_queued_datagrams_per_client: 256,
            max_pending_events: 65_536,
            relay_rate_per_client: 1024 * 1024,
            relay_burst_per_client: 256 * 1024,
            relay_rate_per_group: 8 * 1024 * 1024,
            relay_rate_total: 256 * 1024 * 1024,
            max_queued_relay_per_client: 512,
            relay_shards: 0,
            max_queued_control_per_client: 4096,
            rooms: None,
            cluster: None,
        }
    }

    /// Checks the settings for contradictions.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_timing(
            self.keepalive_interval,
            self.idle_timeout,
            self.max_datagram_size,
        )?;
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration);
        }
        if self.offline_after >= self.idle_timeout {
            return Err(ConfigError::Invalid(
                "offline_after must be shorter than idle_timeout (zero turns it off)",
            ));
        }
        if self.max_clients == 0 || self.max_clients > MAX_SESSIONS {
            return Err(ConfigError::OutOfRange("max_clients"));
        }
        if self.proven_handshake_burst_per_ip == 0 || self.proven_handshake_rate_per_ip == 0 {
            // Nobody could ever connect (a Retry answered is no way in then).
            return Err(ConfigError::OutOfRange("proven_handshake_rate_per_ip"));
        }
        if self.handshake_burst_global == 0 || self.handshake_rate_global == 0 {
            return Err(ConfigError::OutOfRange("handshake_rate_global"));
        }
        if self.relay_shards > MAX_RELAY_SHARDS {
            return Err(ConfigError::OutOfRange("relay_shards"));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        Ok(())
    }
}

fn validate_timing(keepalive: Duration, idle: Duration, mtu: usize) -> Result<(), ConfigError> {
    if keepalive.is_zero() || idle.is_zero() {
        return Err(ConfigError::ZeroDuration);
    }
    if keepalive >= idle {
        return Err(ConfigError::KeepaliveNotBelowIdleTimeout);
    }
    if !(MIN_DATAGRAM_SIZE..=MAX_DATAGRAM_SIZE).contains(&mtu) {
        return Err(ConfigError::OutOfRange("max_datagram_size"));
    }
    Ok(())
}

/// Most relay forwarders on threads of their own ([`ServerConfig::relay_shards`]).
pub const MAX_RELAY_SHARDS: u16 = 256;

/// Smallest `max_datagram_size` accepted: room for the sealed overhead and a Welcome frame.
pub const MIN_DATAGRAM_SIZE: usize = 200;

/// Sessions one server can hold: a session id carries the session's slot in its low 24 bits
/// (the generation above), so a server never has more slots than that, and `max_clients` is
/// capped by it.
pub(crate) const MAX_SESSIONS: usize = 1 << 24;
