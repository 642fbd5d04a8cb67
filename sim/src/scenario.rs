//! The scenario builder: who sits behind what, on which links, and what happens when.

use std::time::Duration;

use pierce_core::{ClientConfig, ServerConfig};

use crate::firewall::FirewallConfig;
use crate::link::LinkProfile;
use crate::nat::NatConfig;
use crate::nat64::Nat64Config;
use crate::oracle::NatProfile;
use crate::sim::Sim;

/// Where a host meets the internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    /// A public address, no NAT, no firewall.
    Open,
    /// Behind one NAT of its own.
    Nat(NatConfig),
    /// Behind NATs in series, innermost (the host's own router) first: `[home, carrier]` is
    /// a home router behind a CGNAT.
    Chain(Vec<NatConfig>),
}

impl Edge {
    /// Behind one NAT.
    pub fn nat(config: NatConfig) -> Self {
        Self::Nat(config)
    }

    /// Behind NATs in series, innermost first.
    pub fn chain(nats: impl IntoIterator<Item = NatConfig>) -> Self {
        Self::Chain(nats.into_iter().collect())
    }

    /// A home router behind a carrier-grade NAT ([`NatConfig::cgnat`]).
    pub fn cgnat(home: NatConfig) -> Self {
        Self::chain([home, NatConfig::cgnat()])
    }

    /// The NATs, innermost first (empty when open).
    pub fn nats(&self) -> &[NatConfig] {
        match self {
            Self::Open => &[],
            Self::Nat(c) => std::slice::from_ref(c),
            Self::Chain(v) => v,
        }
    }

    /// The combined behaviour that decides reachability; `None` when open (or an empty
    /// chain).
    pub fn profile(&self) -> Option<NatProfile> {
        NatProfile::chain(self.nats())
    }
}

/// Which IP families a client has, and what stands on its IPv6 path.
///
/// One node socket serves both families, as a runtime's dual-stack socket does: a datagram
/// the node sends to an IPv6 destination leaves from its IPv6 address, to an IPv4 one from
/// its IPv4 address (through the NATs of its [`Edge`]). A client with an IPv6 address tells
/// its server that address at start ([`pierce_core::Client::set_local_addresses`], as the
/// runtimes do with their interface addresses), so peers learn it as a candidate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stack {
    /// IPv4 only, behind its [`Edge`] (the default).
    #[default]
    V4,
    /// IPv4 behind its [`Edge`], plus a global IPv6 address behind `firewall` (none: open).
    Dual {
        /// The stateful firewall on its IPv6 path, if any.
        firewall: Option<FirewallConfig>,
    },
    /// A global IPv6 address only, behind `firewall` (none: open). With `nat64`, IPv4
    /// destinations synthesised into the gateway's prefix are reached through it (the client
    /// runs with [`pierce_core::ClientConfig::nat64_prefix`] set to that prefix); without,
    /// IPv4 is unreachable and the server must be dual-stack
    /// ([`Scenario::server_dual_stack`]).
    V6Only {
        /// The stateful firewall on its IPv6 path, if any.
        firewall: Option<FirewallConfig>,
        /// The NAT64 gateway, if any.
        nat64: Option<Nat64Config>,
    },
}

impl Stack {
    /// Dual stack behind a default [`FirewallConfig`].
    pub fn dual_firewalled() -> Self {
        Self::Dual {
            firewall: Some(FirewallConfig::new()),
        }
    }

    /// Whether it has a global IPv6 address.
    pub fn has_ipv6(&self) -> bool {
        !matches!(self, Self::V4)
    }

    /// The edge its IPv4 traffic crosses, if it has any: `edge` natively, the NAT64 gateway's
    /// NAT for an IPv6-only host behind one, none for an IPv6-only host without.
    pub fn ipv4_edge(&self, edge: &Edge) -> Option<Edge> {
        match self {
            Self::V4 | Self::Dual { .. } => Some(edge.clone()),
            Self::V6Only { nat64: Some(g), .. } => Some(Edge::nat(g.nat.clone())),
            Self::V6Only { nat64: None, .. } => None,
        }
    }

    /// The firewall on its IPv6 path, if any.
    pub fn firewall(&self) -> Option<&FirewallConfig> {
        match self {
            Self::V4 => None,
            Self::Dual { firewall } | Self::V6Only { firewall, .. } => firewall.as_ref(),
        }
    }
}

/// Something that happens to the network or a node at a scripted time. Node names are the
/// client names given to the [`Scenario`] and [`crate::SERVER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The host gets a new public IP: the outermost NAT on its path takes a new address and
    /// every NAT on the path forgets its bindings (an open host just moves). A dual-stack
    /// host keeps its IPv6 address; an IPv6-only host cannot roam (the test fails).
    Roam(String),
    /// Every NAT on the host's path forgets its bindings; the public IP stays (an open host
    /// re-binds its socket to the next port). Not for IPv6-only hosts (the test fails).
    Rebind(String),
    /// Nothing passes between the two nodes, either way.
    Partition(String, String),
    /// Nothing passes from the first node to the second.
    PartitionOneWay(String, String),
    /// Lifts partitions between the two nodes, both ways.
    Heal(String, String),
    /// The node can neither send nor receive.
    Offline(String),
    /// Undoes [`Action::Offline`].
    Online(String),
    /// The server process restarts: a fresh `Server` with the same key and address; every
    /// session is lost.
    RestartServer,
    /// The client process dies without a word.
    Crash(String),
    /// A fresh client process (new keys) starts and connects to the server.
    Reconnect(String),
    /// The client sends this application datagram to the server.
    Send(String, Vec<u8>),
    /// The server sends this application datagram to the named client (if connected).
    ServerSend(String, Vec<u8>),
    /// The client closes its session with this code.
    Disconnect(String, u16),
    /// A firewall in front of the host drops all UDP to and from it (counted as
    /// [`crate::NetDrop::Firewall`]); TCP streams pass. Scheduled at time zero, the host
    /// starts blocked.
    BlockUdp(String),
    /// Undoes [`Action::BlockUdp`].
    UnblockUdp(String),
    /// Cluster ([`Scenario::directory`]): the directory goes down; every question that
    /// reaches it fails ([`pierce_core::cluster::DirectoryError::Unavailable`]).
    DirectoryDown,
    /// Cluster: the directory answers again.
    DirectoryUp,
    /// Cluster: the directory forgets everything (a Redis restarted without its data,
    /// [`pierce_core::cluster::MemoryDirectory::wipe`]).
    DirectoryWipe,
    /// Cluster: the named server node (or [`crate::SERVER`]) restarts: a fresh `Server`, same
    /// key and node id, no sessions; it asks the directory for a new number. (Crash it first
    /// with [`Action::Crash`] for a crash-and-restart.)
    RestartNode(String),
    /// The named server node drains ([`pierce_core::Server::drain`], as on SIGTERM), telling
    /// its clients they have this long.
    Drain(String, Duration),
    /// The host's access link (both ways) gets this IP MTU (a tunnel comes up, a route
    /// changes): larger datagrams are dropped ([`crate::LinkDrop::Mtu`]).
    SetMtu(String, usize),
    /// The core path between the two nodes (both ways, not their paths to anyone else) gets
    /// this IP MTU: larger datagrams are dropped ([`crate::NetDrop::Mtu`]).
    PathMtu(String, String, usize),
}

impl Action {
    /// [`Action::Roam`].
    pub fn roam(node: impl Into<String>) -> Self {
        Self::Roam(node.into())
    }
    /// [`Action::Rebind`].
    pub fn rebind(node: impl Into<String>) -> Self {
        Self::Rebind(node.into())
    }
    /// [`Action::Partition`].
    pub fn partition(a: impl Into<String>, b: impl Into<String>) -> Self {
        Self::Partition(a.into(), b.into())
    }
    /// [`Action::PartitionOneWay`].
    pub fn partition_one_way(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self::PartitionOneWay(from.into(), to.into())
    }
    /// [`Action::Heal`].
    pub fn heal(a: impl Into<String>, b: impl Into<String>) -> Self {
        Self::Heal(a.into(), b.into())
    }
    /// [`Action::Crash`].
    pub fn crash(node: impl Into<String>) -> Self {
        Self::Crash(node.into())
    }
    /// [`Action::Reconnect`].
    pub fn reconnect(node: impl Into<String>) -> Self {
        Self::Reconnect(node.into())
    }
    /// [`Action::Offline`].
    pub fn offline(node: impl Into<String>) -> Self {
        Self::Offline(node.into())
    }
    /// [`Action::Online`].
    pub fn online(node: impl Into<String>) -> Self {
        Self::Online(node.into())
    }
    /// [`Action::Send`].
    pub fn send(node: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self::Send(node.into(), payload.into())
    }
    /// [`Action::ServerSend`].
    pub fn server_send(node: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self::ServerSend(node.into(), payload.into())
    }
    /// [`Action::Disconnect`].
    pub fn disconnect(node: impl Into<String>, code: u16) -> Self {
        Self::Disconnect(node.into(), code)
    }
    /// [`Action::BlockUdp`].
    pub fn block_udp(node: impl Into<String>) -> Self {
        Self::BlockUdp(node.into())
    }
    /// [`Action::UnblockUdp`].
    pub fn unblock_udp(node: impl Into<String>) -> Self {
        Self::UnblockUdp(node.into())
    }
    /// [`Action::RestartNode`].
    pub fn restart_node(node: impl Into<String>) -> Self {
        Self::RestartNode(node.into())
    }
    /// [`Action::SetMtu`].
    pub fn set_mtu(node: impl Into<String>, mtu: usize) -> Self {
        Self::SetMtu(node.into(), mtu)
    }
    /// [`Action::PathMtu`].
    pub fn path_mtu(a: impl Into<String>, b: impl Into<String>, mtu: usize) -> Self {
        Self::PathMtu(a.into(), b.into(), mtu)
    }
    /// [`Action::Drain`].
    pub fn drain(node: impl Into<String>, within: Duration) -> Self {
        Self::Drain(node.into(), within)
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Placement {
    Edge(Edge),
    /// Behind the same NAT(s) as this other client, on the same inside network.
    Beside(String),
}

#[derive(Debug, Clone)]
pub(crate) struct HostSpec {
    pub(crate) name: String,
    pub(crate) placement: Placement,
    pub(crate) link: Option<LinkProfile>,
    pub(crate) config: Option<ClientConfig>,
    pub(crate) stack: Stack,
}

/// A simulated network under construction: one server (named [`crate::SERVER`]) and any
/// number of clients, each behind an [`Edge`], on access links. [`Scenario::build`] turns it
/// into a [`Sim`] with every client connecting to the server at time zero. Custom nodes can
/// be added to the built [`Sim`] with [`Sim::add_node`].
///
/// ```
/// use std::time::Duration;
/// use pierce_sim::{Action, Edge, LinkProfile, NatConfig, Scenario};
///
/// let sim = Scenario::new(1)
///     .server(Edge::Open)
///     .client("a", Edge::nat(NatConfig::port_restricted()))
///     .client("b", Edge::nat(NatConfig::symmetric()))
///     .link(LinkProfile::broadband())
///     .at(Duration::from_secs(2), Action::roam("a"))
///     .build();
/// assert_eq!(sim.seed(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct Scenario {
    pub(crate) seed: u64,
    pub(crate) server: Option<Edge>,
    pub(crate) server_link: Option<LinkProfile>,
    /// Other nodes of the server's cluster, by name.
    pub(crate) cluster: Vec<String>,
    pub(crate) clients: Vec<HostSpec>,
    pub(crate) link: LinkProfile,
    pub(crate) actions: Vec<(Duration, Action)>,
    pub(crate) client_config: ClientConfig,
    pub(crate) server_config: Option<ServerConfig>,
    pub(crate) trace: bool,
    pub(crate) server_discovery: bool,
    pub(crate) step_cap: u64,
    pub(crate) busy_limit: u32,
    /// The cluster directory's one-way latency, if the nodes share one.
    pub(crate) directory: Option<Duration>,
    /// Clients that try another node first: client name → node name.
    pub(crate) first_node: Vec<(String, String)>,
    /// Whether the server has a global IPv6 address too.
    pub(crate) server_v6: bool,
}

/// Steps one `run_*` call may take before the simulation is declared runaway.
pub const DEFAULT_STEP_CAP: u64 = 2_000_000;
/// Consecutive wakeups of one node without progress before it is declared busy-looping.
pub const DEFAULT_BUSY_LIMIT: u32 = 100;

impl Scenario {
    /// An empty scenario: an open server, perfect links, default configs.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            server: None,
            server_link: None,
            cluster: Vec::new(),
            clients: Vec::new(),
            link: LinkProfile::perfect(),
            actions: Vec::new(),
            client_config: ClientConfig::default(),
            server_config: None,
            trace: false,
            server_discovery: true,
            step_cap: DEFAULT_STEP_CAP,
            busy_limit: DEFAULT_BUSY_LIMIT,
            directory: None,
            first_node: Vec::new(),
            server_v6: false,
        }
    }

    /// Where the server sits. Behind NATs it gets a static port forward on each.
    pub fn server(mut self, edge: Edge) -> Self {
        self.server = Some(edge);
        self
    }

    /// Another node of the server's cluster, named `name`: a second [`pierce_core::Server`]
    /// with the same configuration (so the same key: it reads the first one's tickets), on an
    /// open edge with the server's link, listening on [`crate::SERVER_PORT`]. Every client
    /// then connects to the list (the server first, then these nodes in the order added,
    /// [`pierce_core::Client::connect_any`]). Reach it with [`Sim::node`] /
    /// [`Sim::with_node`] as a `Server`, its address with [`Sim::host_addr`].
    ///
    /// # Panics
    /// At [`Scenario::build`], if the name is taken.
    pub fn cluster_node(mut self, name: impl Into<String>) -> Self {
        self.cluster.push(name.into());
        self
    }

    /// Makes the server and every [`Scenario::cluster_node`] one cluster sharing a directory
    /// (a [`pierce_core::cluster::MemoryDirectory`] the simulator holds): each node runs with
    /// [`pierce_core::ServerConfig::cluster`] set to
    /// [`pierce_core::cluster::ClusterConfig::new`]`(its name, "sim", its address)`, and each
    /// question it asks reaches the directory `one_way` later and its answer comes back
    /// `one_way` after that, in the order asked. The server config needs
    /// [`pierce_core::ServerConfig::rooms`] for rooms to move between nodes. Outages, wipes,
    /// node restarts and drains are [`Action`]s; see [`crate::Sim::directory`].
    pub fn directory(mut self, one_way: Duration) -> Self {
        self.directory = Some(one_way);
        self
    }

    /// Client `client` tries node `node` ([`crate::SERVER`] or a [`Scenario::cluster_node`])
    /// first, then the others in the usual order.
    pub fn first_node(mut self, client: impl Into<String>, node: impl Into<String>) -> Self {
        self.first_node.push((client.into(), node.into()));
        self
    }

    /// A client named `name` behind `edge`, with its own NAT(s).
    ///
    /// # Panics
    /// At [`Scenario::build`], if the name is taken.
    pub fn client(mut self, name: impl Into<String>, edge: Edge) -> Self {
        self.clients.push(HostSpec {
            name: name.into(),
            placement: Placement::Edge(edge),
            link: None,
            config: None,
            stack: Stack::V4,
        });
        self
    }

    /// Gives the declared client `name` a global IPv6 address besides its IPv4 one behind its
    /// edge ([`Stack::Dual`]), behind `firewall` (none: open).
    ///
    /// # Panics
    /// If no client named `name` was declared yet.
    pub fn dual_stack(mut self, name: &str, firewall: Option<FirewallConfig>) -> Self {
        match self.clients.iter_mut().find(|c| c.name == name) {
            Some(spec) => spec.stack = Stack::Dual { firewall },
            None => panic!("dual_stack: no client named {name:?} declared yet"),
        }
        self
    }

    /// A client named `name` with `stack`; `edge` is its IPv4 edge (ignored for
    /// [`Stack::V6Only`]). A [`Stack::V6Only`] client with a NAT64 gateway runs with
    /// [`pierce_core::ClientConfig::nat64_prefix`] set to the gateway's prefix.
    ///
    /// # Panics
    /// At [`Scenario::build`], if the name is taken.
    pub fn client_stack(mut self, name: impl Into<String>, edge: Edge, stack: Stack) -> Self {
        self = self.client(name, edge);
        if let Some(spec) = self.clients.last_mut() {
            spec.stack = stack;
        }
        self
    }

    /// An IPv6-only client behind `firewall` (none: open), without NAT64: it reaches the
    /// server over IPv6 ([`Scenario::server_dual_stack`]).
    pub fn client_ipv6_only(
        self,
        name: impl Into<String>,
        firewall: Option<FirewallConfig>,
    ) -> Self {
        let stack = Stack::V6Only {
            firewall,
            nat64: None,
        };
        self.client_stack(name, Edge::Open, stack)
    }

    /// An IPv6-only client behind `firewall` (none: open) whose IPv4 destinations go through
    /// the NAT64 `gateway`; its NAT is named after the client ([`Sim::nat`]).
    pub fn client_nat64(
        self,
        name: impl Into<String>,
        gateway: Nat64Config,
        firewall: Option<FirewallConfig>,
    ) -> Self {
        let stack = Stack::V6Only {
            firewall,
            nat64: Some(gateway),
        };
        self.client_stack(name, Edge::Open, stack)
    }

    /// Gives the (open) server a global IPv6 address too: it answers on both, and IPv6-only
    /// clients without NAT64 connect to it there.
    pub fn server_dual_stack(mut self) -> Self {
        self.server_v6 = true;
        self
    }

    /// A client on the same inside network as client `other` (sharing its NATs).
    pub fn client_beside(mut self, name: impl Into<String>, other: impl Into<String>) -> Self {
        self.clients.push(HostSpec {
            name: name.into(),
            placement: Placement::Beside(other.into()),
            link: None,
            config: None,
            stack: Stack::V4,
        });
        self
    }

    /// A client with its own configuration.
    pub fn client_with(
        mut self,
        name: impl Into<String>,
        edge: Edge,
        config: ClientConfig,
    ) -> Self {
        self = self.client(name, edge);
        if let Some(spec) = self.clients.last_mut() {
            spec.config = Some(config);
        }
        self
    }

    /// The access link of every host without its own ([`Scenario::host_link`]).
    pub fn link(mut self, profile: LinkProfile) -> Self {
        self.link = profile;
        self
    }

    /// The access link of one host (a client name or [`crate::SERVER`]).
    ///
    /// # Panics
    /// At [`Scenario::build`], if no such host was declared.
    pub fn host_link(mut self, name: &str, profile: LinkProfile) -> Self {
        if name == crate::SERVER {
            self.server_link = Some(profile);
        } else if let Some(spec) = self.clients.iter_mut().find(|c| c.name == name) {
            spec.link = Some(profile);
        } else {
            panic!("host_link: no client named {name:?} declared yet");
        }
        self
    }

    /// The configuration of every client without its own.
    pub fn client_config(mut self, config: ClientConfig) -> Self {
        self.client_config = config;
        self
    }

    /// The server configuration (key included). By default the key derives from the seed.
    pub fn server_config(mut self, config: ServerConfig) -> Self {
        self.server_config = Some(config);
        self
    }

    /// Runs `action` at `at` after the epoch.
    pub fn at(mut self, at: Duration, action: Action) -> Self {
        self.actions.push((at, action));
        self
    }

    /// Also logs every datagram's fate (sent, dropped and why, delivered) in the global log,
    /// and keeps a structured record of each ([`Sim::packets`]).
    pub fn trace_packets(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// Steps one `run_*` call may take (default [`DEFAULT_STEP_CAP`]).
    pub fn step_cap(mut self, steps: u64) -> Self {
        self.step_cap = steps;
        self
    }

    /// Consecutive no-progress wakeups before a busy loop is reported
    /// (default [`DEFAULT_BUSY_LIMIT`]).
    pub fn busy_limit(mut self, wakeups: u32) -> Self {
        self.busy_limit = wakeups;
        self
    }

    /// Builds the network and starts every client connecting.
    ///
    /// # Panics
    /// On duplicate or unknown names, or an invalid client or server configuration.
    pub fn build(self) -> Sim {
        Sim::from_scenario(self)
    }
}
