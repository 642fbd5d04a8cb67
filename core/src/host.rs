//! Host mode: a [`Server`] and its own [`Client`] in one endpoint on one socket (a listen
//! server for LAN or small games: one player's process is the server, no dedicated machine).
//!
//! The local client's session with the server never touches the network: its datagrams to
//! the server and the server's to it are handed across in memory, sealed and opened as over
//! a socket (one code path, and the same guarantees). Everything else shares the socket:
//! peer-to-peer packets (first byte [`KIND_PEER`]) go to the local client, every other
//! datagram to the server. Remote players see the host's client as a member at the host's
//! address; their punch probes reach the same socket, so their pairs with the host's player
//! go direct at once, and relayed traffic costs the host nothing on the wire.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::ClientConfig;
use crate::error::ConfigError;
use crate::event::{ClientEvent, ServerEvent};
use crate::stats::{ClientStats, ServerStats};
use crate::time::{Instant, Timeout};
use crate::wire::sealed::KIND_PEER;
use crate::{Client, Server, SocketId, SocketRequest, Transmit};
use crate::{Endpoint, Events};

/// A server and its own client on one socket. Drive it like either of them (it implements
/// [`crate::Endpoint`]); reach each half with [`Host::server_mut`] and [`Host::client_mut`]
/// for commands (then drain [`Host::poll_transmit`] as after any command).
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use pierce_core::{ClientConfig, Endpoint, Host, SecretKey, Server, ServerConfig};
///
/// /// A listen server: `addr` is the address remote players reach this process's socket at.
/// fn listen_server(now: Instant, addr: std::net::SocketAddr) -> Host {
///     let config = ServerConfig::new(SecretKey::from_bytes([7; 32]));
///     let server = Server::new(Arc::new(config), [1; 32], now, Duration::ZERO).unwrap();
///     let mut host = Host::new(server, ClientConfig::default(), [2; 32], now, addr, &[]).unwrap();
///     let mut buf = vec![0u8; pierce_core::MAX_DATAGRAM_SIZE];
///     while let Some(t) = host.poll_transmit(now, &mut buf) {
///         // send buf[..t.len] to t.dst from the socket
///         # let _ = t;
///     }
///     // The host's player is connected already: its handshake ran in memory.
///     assert!(host.client().is_connected());
///     host
/// }
/// ```
pub struct Host {
    server: Server,
    client: Client,
    /// Where remote players reach this socket: the server sees the local client here, tells
    /// peers so, and the local client knows the server by it.
    addr: SocketAddr,
    /// Datagrams from the network that claimed to come from `addr`.
    spoofed: u64,
}

/// What a [`Host`] reports: its server's events and its own client's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// From the server half.
    Server(ServerEvent),
    /// From the host's own client.
    Client(ClientEvent),
}

/// Counters of both halves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// The server's (the local client's in-memory datagrams count as received and sent).
    pub server: ServerStats,
    /// The host's own client's.
    pub client: ClientStats,
    /// Datagrams from the network whose source was the host's own address (dropped: only the
    /// local client speaks from there, and never over the network).
    pub spoofed_local: u64,
}

impl Host {
    /// Puts `server` and a new client (from `client_config` and `seed`) on one socket that
    /// remote players reach at `addr`; the client starts connecting to the server at once,
    /// presenting `token` (empty if the server needs none), and is connected after the first
    /// drain of [`Host::poll_transmit`].
    ///
    /// The client pins the server's key, and runs without NAT behaviour discovery and
    /// birthday probing (it is the server's own socket: reachable wherever the server is).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if `addr` is unspecified or has port 0 (remote players could
    /// not be told where the host's player is), if the token is over the protocol's limit,
    /// or any error of [`Client::new`].
    pub fn new(
        server: Server,
        client_config: ClientConfig,
        seed: [u8; 32],
        now: Instant,
        addr: SocketAddr,
        token: &[u8],
    ) -> Result<Self, ConfigError> {
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(ConfigError::Invalid(
                "a host's address must be the specific address remote players reach it at",
            ));
        }
        let config = ClientConfig {
            server_key: Some(server.public_key()),
            nat_discovery: false,
            birthday_sockets: 0,
            transport: crate::Transport::Udp,
            ..client_config
        };
        let mut client = Client::new(Arc::new(config), seed, now)?;
        client
            .connect(now, addr, token)
            .map_err(|_| ConfigError::Invalid("the connect token is too large"))?;
        Ok(Self {
            server,
            client,
            addr,
            spoofed: 0,
        })
    }

    /// The server half.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The server half, for commands (groups, rooms, kicks, sends).
    pub fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }

    /// The host's own client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The host's own client, for commands (sends to peers and to the server).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The address remote players reach this host at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters of both halves.
    pub fn stats(&self) -> HostStats {
        HostStats {
            server: self.server.stats(),
            client: self.client.stats(),
            spoofed_local: self.spoofed,
        }
    }
}

impl Endpoint for Host {
    /// Processes one datagram from local socket `socket`: peer-to-peer packets on the
    /// primary socket go to the client, the rest to the server.
    fn handle_datagram_on(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        let from = crate::canonical(from);
        if from == self.addr {
            self.spoofed += 1;
            return;
        }
        if socket == SocketId::PRIMARY && datagram.first() == Some(&KIND_PEER) {
            self.client.handle_datagram(now, from, datagram);
        } else {
            self.server.handle_datagram_on(now, socket, from, datagram);
        }
    }

    /// Reports an opened socket to the server.
    fn handle_socket_opened(&mut self, now: Instant, id: SocketId, local: Option<SocketAddr>) {
        self.server.handle_socket_opened(now, id, local);
    }

    /// Reports an accepted TCP stream to the server.
    fn handle_stream_accepted(&mut self, now: Instant, id: SocketId, peer: SocketAddr) {
        self.server.handle_stream_accepted(now, id, peer);
    }

    /// Reports a closed TCP stream to the server (remote players may join over TCP; the
    /// host's own player never needs it).
    fn handle_stream_closed(&mut self, now: Instant, id: SocketId) {
        self.server.handle_stream_closed(now, id);
    }

    /// Advances both halves' timers.
    fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now);
        self.client.handle_timeout(now);
    }

    /// The next datagram for the network. Datagrams between the halves are delivered in
    /// memory on the way (so draining this until `None` settles both).
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            if let Some(t) = self.client.poll_transmit(now, buf) {
                if t.dst == self.addr && t.socket == SocketId::PRIMARY {
                    self.server.handle_datagram(now, self.addr, &buf[..t.len]);
                    continue;
                }
                return Some(t);
            }
            if let Some(t) = self.server.poll_transmit(now, buf) {
                if t.dst == self.addr {
                    self.client.handle_datagram(now, self.addr, &buf[..t.len]);
                    continue;
                }
                return Some(t);
            }
            return None;
        }
    }

    /// The server's socket requests (NAT behaviour discovery's extra sockets); the client
    /// asks for none.
    fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.server.poll_socket_request()
    }

    /// The earlier of the two halves' deadlines, with its reason (the server's on a tie).
    fn poll_timeout(&self) -> Option<Timeout> {
        Timeout::min([self.server.poll_timeout(), self.client.poll_timeout()])
    }
}

impl Events for Host {
    type Event = HostEvent;

    /// The next event of either half (the server's first).
    fn poll_event(&mut self) -> Option<HostEvent> {
        self.server
            .poll_event()
            .map(HostEvent::Server)
            .or_else(|| self.client.poll_event().map(HostEvent::Client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{epoch, util::UNIX_START};
    use crate::{Channel, MAX_DATAGRAM_SIZE, Path, SecretKey, ServerConfig};
    use std::time::Duration;

    fn host_addr() -> SocketAddr {
        "192.0.2.1:7000".parse().unwrap()
    }

    fn host(now: Instant) -> Host {
        let config = ServerConfig::new(SecretKey::from_bytes([7; 32]));
        let server = Server::new(Arc::new(config), [1; 32], now, UNIX_START).unwrap();
        Host::new(
            server,
            ClientConfig::default(),
            [2; 32],
            now,
            host_addr(),
            &[],
        )
        .unwrap()
    }

    /// A host and remote clients on a lossless network with `latency` each way.
    struct World {
        now: Instant,
        host: Host,
        remotes: Vec<(SocketAddr, Client)>,
        wire: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
        host_events: Vec<HostEvent>,
        remote_events: Vec<Vec<ClientEvent>>,
        latency: Duration,
    }

    impl World {
        fn flush(&mut self) {
            let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
            let at = self.now + self.latency;
            while let Some(t) = self.host.poll_transmit(self.now, &mut buf) {
                self.wire
                    .push((at, host_addr(), t.dst, buf[..t.len].to_vec()));
            }
            for (addr, c) in &mut self.remotes {
                while let Some(t) = c.poll_transmit(self.now, &mut buf) {
                    self.wire.push((at, *addr, t.dst, buf[..t.len].to_vec()));
                }
            }
            while let Some(e) = self.host.poll_event() {
                self.host_events.push(e);
            }
            for (i, (_, c)) in self.remotes.iter_mut().enumerate() {
                while let Some(e) = c.poll_event() {
                    self.remote_events[i].push(e);
                }
            }
        }

        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            loop {
                self.flush();
                let mut next = self.wire.iter().map(|w| w.0).min();
                for t in [self.host.poll_timeout().map(|t| t.at)]
                    .into_iter()
                    .chain(
                        self.remotes
                            .iter()
                            .map(|(_, c)| c.poll_timeout().map(|t| t.at)),
                    )
                    .flatten()
                {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
                let Some(next) = next.filter(|n| *n <= end) else {
                    self.now = end;
                    self.flush();
                    return;
                };
                self.now = self.now.max(next);
                let now = self.now;
                let due: Vec<_> = {
                    let (due, rest) = self.wire.drain(..).partition(|w| w.0 <= now);
                    self.wire = rest;
                    due
                };
                for (_, from, to, bytes) in due {
                    if to == host_addr() {
                        self.host.handle_datagram(now, from, &bytes);
                    } else if let Some((_, c)) = self.remotes.iter_mut().find(|(a, _)| *a == to) {
                        c.handle_datagram(now, from, &bytes);
                    }
                }
                self.host.handle_timeout(now);
                for (_, c) in &mut self.remotes {
                    c.handle_timeout(now);
                }
            }
        }
    }

    #[test]
    fn the_hosts_own_client_connects_in_memory() {
        let now = epoch();
        let mut h = host(now);
        let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
        assert_eq!(
            h.poll_transmit(now, &mut buf),
            None,
            "nothing leaves the socket"
        );
        assert!(h.client().is_connected());
        let id = h.client().host_id().unwrap();
        assert_eq!(h.server().client_addr(id), Some(host_addr()));
        let events: Vec<_> = std::iter::from_fn(|| h.poll_event()).collect();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, HostEvent::Server(ServerEvent::ClientJoined { .. }))),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, HostEvent::Client(ClientEvent::Connected { .. }))),
            "{events:?}"
        );
    }

    #[test]
    fn a_host_address_must_be_specific_and_spoofed_local_packets_are_dropped() {
        let now = epoch();
        let config = ServerConfig::new(SecretKey::from_bytes([7; 32]));
        for bad in ["0.0.0.0:7000", "192.0.2.1:0"] {
            let server = Server::new(Arc::new(config.clone()), [1; 32], now, UNIX_START).unwrap();
            let r = Host::new(
                server,
                ClientConfig::default(),
                [2; 32],
                now,
                bad.parse().unwrap(),
                &[],
            );
            assert!(matches!(r, Err(ConfigError::Invalid(_))), "{bad}");
        }
        let mut h = host(now);
        let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
        while h.poll_transmit(now, &mut buf).is_some() {}
        let before = h.stats();
        // Anything from the network claiming the host's own address: never the local client.
        h.handle_datagram(now, host_addr(), &[0xC3, 1, 2, 3]);
        h.handle_datagram(now, host_addr(), &[KIND_PEER; 40]);
        let after = h.stats();
        assert_eq!(after.spoofed_local, 2);
        assert_eq!(after.server.io.datagrams_in, before.server.io.datagrams_in);
        assert_eq!(after.client.io.datagrams_in, before.client.io.datagrams_in);
    }

    #[test]
    fn remote_players_join_the_hosts_player_in_a_group_and_go_direct_to_its_socket() {
        let now = epoch();
        let mut w = World {
            now,
            host: host(now),
            remotes: Vec::new(),
            wire: Vec::new(),
            host_events: Vec::new(),
            remote_events: Vec::new(),
            latency: Duration::from_millis(15),
        };
        let key = w.host.server().public_key();
        for i in 0..2u8 {
            let config = ClientConfig {
                server_key: Some(key),
                ..ClientConfig::default()
            };
            let mut c = Client::new(Arc::new(config), [20 + i; 32], now).unwrap();
            c.connect(now, host_addr(), &[]).unwrap();
            let addr = SocketAddr::new([198, 51, 100, 1 + i].into(), 40_000);
            w.remotes.push((addr, c));
            w.remote_events.push(Vec::new());
        }
        w.run_for(Duration::from_secs(2));
        assert!(w.remotes.iter().all(|(_, c)| c.is_connected()));
        let me = w.host.client().host_id().unwrap();
        let ids: Vec<_> = w
            .remotes
            .iter()
            .map(|(_, c)| c.host_id().unwrap())
            .collect();
        let now = w.now;
        let g = w
            .host
            .server_mut()
            .create_group(now, &[me, ids[0], ids[1]])
            .unwrap();
        // Reliable messages both ways, the moment the group forms.
        w.run_for(Duration::from_millis(100));
        let now = w.now;
        for i in 0..20u32 {
            w.host
                .client_mut()
                .send(now, ids[0], Channel::RELIABLE_ORDERED, &i.to_be_bytes())
                .unwrap();
            w.remotes[1]
                .1
                .send(now, me, Channel::RELIABLE_ORDERED, &i.to_be_bytes())
                .unwrap();
        }
        w.run_for(Duration::from_secs(2));
        let got = |events: &[ClientEvent], from| -> Vec<u32> {
            events
                .iter()
                .filter_map(|e| match e {
                    ClientEvent::PeerMessage {
                        from: f, payload, ..
                    } if *f == from => Some(u32::from_be_bytes(payload[..4].try_into().unwrap())),
                    _ => None,
                })
                .collect()
        };
        let host_client_events: Vec<ClientEvent> = w
            .host_events
            .iter()
            .filter_map(|e| match e {
                HostEvent::Client(c) => Some(c.clone()),
                HostEvent::Server(_) => None,
            })
            .collect();
        assert_eq!(got(&w.remote_events[0], me), (0..20).collect::<Vec<_>>());
        assert_eq!(
            got(&host_client_events, ids[1]),
            (0..20).collect::<Vec<_>>()
        );
        assert!(
            host_client_events
                .iter()
                .any(|e| matches!(e, ClientEvent::MemberJoined { group, .. } if *group == g))
        );
        // Remote players reach the host's player directly, at the host's socket.
        for (i, (_, c)) in w.remotes.iter().enumerate() {
            assert_eq!(
                c.peer_stats(me).map(|s| s.path),
                Some(Path::Direct(host_addr())),
                "remote {i}"
            );
        }
        for id in &ids {
            assert!(matches!(
                w.host.client().peer_stats(*id).map(|s| s.path),
                Some(Path::Direct(_))
            ));
        }
        assert_eq!(w.host.stats().spoofed_local, 0);
    }
}
