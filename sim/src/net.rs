//! Topology and routing: realms of addresses joined by NATs.
//!
//! The internet is the root realm. Each NAT joins its inside realm to the realm it sits in
//! (the internet, or the inside of another NAT for CGNAT chains). Addresses are unique per
//! realm. A datagram climbs out of its sender's realm through NATs (outbound translation)
//! until its destination IP is known in the current realm, crosses "the core" (where
//! partitions and offline hosts are applied), then descends through NATs (inbound
//! translation) to a host. A NAT whose own public address is the destination of an inside
//! host's datagram hairpins it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use pierce_core::SocketId;
use rand::rngs::StdRng;

use crate::nat::{Nat, NatConfig, NatDrop};

/// `None` is the internet; `Some(n)` is the inside of NAT `n`.
pub(crate) type Realm = Option<usize>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Host(usize),
    Nat(usize),
}

/// Why the network (not a link) dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetDrop {
    /// Nothing owns the destination address.
    NoRoute,
    /// A host owns the destination IP but listens on another port.
    NoListener,
    /// A partition separates sender and receiver.
    Partitioned,
    /// The sender or the receiver is offline.
    Offline,
    /// The receiving node crashed.
    DeadHost,
    /// Its TTL ran out on the way ([`CORE_HOPS`]): a hole-punching opener, as meant.
    TtlExpired,
    /// A NAT (by index) refused it.
    Nat(usize, NatDrop),
    /// A firewall blocks UDP to or from the sender or the receiver
    /// ([`crate::Action::BlockUdp`]).
    Firewall,
    /// Larger than the MTU of the path between sender and receiver
    /// ([`crate::Action::PathMtu`]); never fragmented.
    Mtu,
}

/// Network-wide drop counters (NAT drops are also counted per NAT in [`crate::NatStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams that reached their host.
    pub delivered: u64,
    /// No owner for the destination.
    pub no_route: u64,
    /// Wrong port on the destination host.
    pub no_listener: u64,
    /// Cut by a partition.
    pub partitioned: u64,
    /// Sender or receiver offline.
    pub offline: u64,
    /// Receiver crashed.
    pub dead_host: u64,
    /// Refused by a NAT.
    pub nat_dropped: u64,
    /// UDP blocked by a firewall at the sender or the receiver ([`crate::Action::BlockUdp`]).
    pub firewall: u64,
    /// TTL expired on the way (hole-punching openers: [`NetDrop::TtlExpired`]).
    pub ttl_expired: u64,
    /// Larger than the path's MTU ([`NetDrop::Mtu`]).
    pub mtu: u64,
}

pub(crate) struct NatSlot {
    pub(crate) name: String,
    pub(crate) nat: Nat,
    /// The realm its public side sits in.
    pub(crate) outside: Realm,
}

/// NAT `n`'s inside address, the default gateway of the hosts behind it: `10.<n>.1` (hosts get
/// `.2` and up).
pub fn gateway_of(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, (n >> 8) as u8, n as u8, 1))
}

/// Hops a datagram may take before the topology is declared circular.
const MAX_HOPS: usize = 32;
/// The TTL of a datagram sent without one (Linux's default, `net.ipv4.ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;
/// Routers a datagram crosses in the core, between the internet-side NATs (or open hosts)
/// of its two ends: fewer than real internet paths have (10 to 20), which only matters to
/// a datagram sent with a TTL this low.
pub const CORE_HOPS: u8 = 6;

#[derive(Default)]
pub(crate) struct Network {
    pub(crate) nats: Vec<NatSlot>,
    owners: BTreeMap<(Realm, IpAddr), Owner>,
    /// Bound sockets: address in a realm → (host, socket id).
    sockets: BTreeMap<(Realm, SocketAddr), (usize, SocketId)>,
    /// (from host, to host) pairs that cannot talk.
    blocked: BTreeSet<(usize, usize)>,
    offline: BTreeSet<usize>,
    /// Hosts whose UDP is blocked, both ways.
    udp_blocked: BTreeSet<usize>,
    /// IP MTU of the core path between two hosts, (from, to); none: no limit beyond the
    /// access links'.
    path_mtu: BTreeMap<(usize, usize), usize>,
    next_public: u32,
    next_private: BTreeMap<usize, u32>,
    pub(crate) stats: NetStats,
}

impl Network {
    /// A fresh public IP: 11.0.0.1, 11.0.0.2, …
    pub(crate) fn alloc_public(&mut self) -> IpAddr {
        self.next_public += 1;
        IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + self.next_public))
    }

    /// A fresh address inside NAT `n`: 10.<n>.<k>, from .2 (the NAT itself is .1).
    fn alloc_private(&mut self, n: usize) -> IpAddr {
        let k = self.next_private.entry(n).or_insert(1u32);
        *k += 1;
        let k = u8::try_from(*k).expect("at most 254 hosts behind one NAT");
        IpAddr::V4(Ipv4Addr::new(10, (n >> 8) as u8, n as u8, k))
    }

    fn alloc_in(&mut self, realm: Realm) -> IpAddr {
        match realm {
            None => self.alloc_public(),
            Some(n) => self.alloc_private(n),
        }
    }

    pub(crate) fn add_nat(
        &mut self,
        name: String,
        config: NatConfig,
        outside: Realm,
        rng: StdRng,
    ) -> usize {
        let ip = self.alloc_in(outside);
        let id = self.nats.len();
        self.nats.push(NatSlot {
            name,
            nat: Nat::new(config, ip, rng),
            outside,
        });
        self.owners.insert((outside, ip), Owner::Nat(id));
        id
    }

    pub(crate) fn add_host(&mut self, id: usize, realm: Realm, port: u16) -> SocketAddr {
        let ip = self.alloc_in(realm);
        self.owners.insert((realm, ip), Owner::Host(id));
        let addr = SocketAddr::new(ip, port);
        self.sockets.insert((realm, addr), (id, SocketId::PRIMARY));
        addr
    }

    /// Gives host `id` one more IP in its realm (a server's alternate address).
    pub(crate) fn add_ip(&mut self, id: usize, realm: Realm) -> IpAddr {
        let ip = self.alloc_in(realm);
        self.owners.insert((realm, ip), Owner::Host(id));
        ip
    }

    /// Host `id` owns `addr`'s IP in `realm` (a global IPv6 address in the root realm) and
    /// listens there with its primary socket.
    pub(crate) fn add_host_at(&mut self, id: usize, realm: Realm, addr: SocketAddr) {
        self.owners.insert((realm, addr.ip()), Owner::Host(id));
        self.sockets.insert((realm, addr), (id, SocketId::PRIMARY));
    }

    /// Binds socket `socket` of host `id` at `addr`: the host must own the IP and the port
    /// must be free.
    pub(crate) fn bind(
        &mut self,
        id: usize,
        realm: Realm,
        addr: SocketAddr,
        socket: SocketId,
    ) -> bool {
        if self.owners.get(&(realm, addr.ip())) != Some(&Owner::Host(id))
            || addr.port() == 0
            || self.sockets.contains_key(&(realm, addr))
        {
            return false;
        }
        self.sockets.insert((realm, addr), (id, socket));
        true
    }

    /// Unbinds a socket.
    pub(crate) fn unbind(&mut self, realm: Realm, addr: SocketAddr) {
        self.sockets.remove(&(realm, addr));
    }

    /// True if `addr` is free to bind in `realm`.
    pub(crate) fn is_free(&self, realm: Realm, addr: SocketAddr) -> bool {
        !self.sockets.contains_key(&(realm, addr))
    }

    /// Moves an open host (or one inside a NAT) to a new address in the same realm: a new
    /// IP (its extra sockets follow, keeping their ports), or the next port on the same IP
    /// (the primary socket only).
    pub(crate) fn readdress_host(
        &mut self,
        id: usize,
        realm: Realm,
        old: SocketAddr,
        new_ip: bool,
    ) -> SocketAddr {
        if new_ip {
            self.owners.remove(&(realm, old.ip()));
            let ip = self.alloc_in(realm);
            self.owners.insert((realm, ip), Owner::Host(id));
            let moved: Vec<_> = self
                .sockets
                .iter()
                .filter(|((r, a), (h, _))| *r == realm && a.ip() == old.ip() && *h == id)
                .map(|(k, v)| (*k, *v))
                .collect();
            for ((r, a), v) in moved {
                self.sockets.remove(&(r, a));
                self.sockets.insert((r, SocketAddr::new(ip, a.port())), v);
            }
            SocketAddr::new(ip, old.port())
        } else {
            // A rebind without a new IP takes the next free port.
            let v = self
                .sockets
                .remove(&(realm, old))
                .unwrap_or((id, SocketId::PRIMARY));
            let mut port = old.port();
            loop {
                port = port.wrapping_add(1).max(1024);
                if !self
                    .sockets
                    .contains_key(&(realm, SocketAddr::new(old.ip(), port)))
                {
                    break;
                }
            }
            let new = SocketAddr::new(old.ip(), port);
            self.sockets.insert((realm, new), v);
            new
        }
    }

    /// Gives NAT `n` a new public IP (flushing its bindings).
    pub(crate) fn readdress_nat(&mut self, n: usize) -> IpAddr {
        let outside = self.nats[n].outside;
        let old = self.nats[n].nat.public_ip();
        self.owners.remove(&(outside, old));
        let ip = self.alloc_in(outside);
        self.owners.insert((outside, ip), Owner::Nat(n));
        self.nats[n].nat.set_public_ip(ip);
        ip
    }

    /// The NATs between a realm and the internet, innermost first.
    pub(crate) fn chain(&self, mut realm: Realm) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(n) = realm {
            out.push(n);
            realm = self.nats[n].outside;
        }
        out
    }

    /// The core path from host `from` to host `to` carries IP packets up to `mtu` bytes.
    pub(crate) fn set_path_mtu(&mut self, from: usize, to: usize, mtu: usize) {
        self.path_mtu.insert((from, to), mtu);
    }

    /// [`NetDrop::Mtu`] (counted) if an IP packet of `ip_len` bytes is too large for the core
    /// path from `from` to `to`.
    pub(crate) fn check_path_mtu(
        &mut self,
        from: usize,
        to: usize,
        ip_len: usize,
    ) -> Result<(), NetDrop> {
        match self.path_mtu.get(&(from, to)) {
            Some(&mtu) if ip_len > mtu => {
                self.stats.mtu += 1;
                Err(NetDrop::Mtu)
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn partition(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    pub(crate) fn heal(&mut self, from: usize, to: usize) {
        self.blocked.remove(&(from, to));
    }

    pub(crate) fn set_offline(&mut self, host: usize, offline: bool) {
        if offline {
            self.offline.insert(host);
        } else {
            self.offline.remove(&host);
        }
    }

    pub(crate) fn is_offline(&self, host: usize) -> bool {
        self.offline.contains(&host)
    }

    pub(crate) fn set_udp_blocked(&mut self, host: usize, blocked: bool) {
        if blocked {
            self.udp_blocked.insert(host);
        } else {
            self.udp_blocked.remove(&host);
        }
    }

    /// Whether anything can pass from host `from` to host `to` (both online, no partition
    /// that way); what TCP segments need. UDP firewalls do not count.
    pub(crate) fn passes(&self, from: usize, to: usize) -> bool {
        !self.offline.contains(&from)
            && !self.offline.contains(&to)
            && !self.blocked.contains(&(from, to))
    }

    /// Where a TCP connection from a host at `src_ip` in `realm` to `dst` ends up: climbs out
    /// through NATs without translating (NATs model UDP; TCP always passes them outbound),
    /// then follows static port forwards down. Returns the listening host, the address it
    /// listens on, and the IP the connection comes from as the listener sees it (the
    /// connecting host's, or that of the outermost NAT it crossed).
    ///
    /// # Errors
    /// [`NetDrop::NoRoute`] if nothing owns `dst` (or a NAT has no forward for its port: the
    /// SYN is dropped), [`NetDrop::NoListener`] if a host owns the IP but does not listen on
    /// that port (it answers with a reset).
    pub(crate) fn tcp_route(
        &self,
        mut realm: Realm,
        mut src_ip: IpAddr,
        mut dst: SocketAddr,
    ) -> Result<(usize, SocketAddr, IpAddr), NetDrop> {
        let mut hops = 0;
        while !self.owners.contains_key(&(realm, dst.ip())) {
            hops += 1;
            let Some(n) = realm.filter(|_| hops < MAX_HOPS) else {
                return Err(NetDrop::NoRoute);
            };
            src_ip = self.nats[n].nat.public_ip();
            realm = self.nats[n].outside;
        }
        for _ in 0..MAX_HOPS {
            match self.owners.get(&(realm, dst.ip())).copied() {
                None => break,
                Some(Owner::Host(h)) => {
                    return match self.sockets.get(&(realm, dst)) {
                        Some(&(id, SocketId::PRIMARY)) if id == h => Ok((h, dst, src_ip)),
                        _ => Err(NetDrop::NoListener),
                    };
                }
                Some(Owner::Nat(n)) => {
                    dst = self.nats[n]
                        .nat
                        .forwarded(dst.port())
                        .ok_or(NetDrop::NoRoute)?;
                    realm = Some(n);
                }
            }
        }
        Err(NetDrop::NoRoute)
    }

    /// A datagram from `src` in `realm` to that realm's gateway ([`gateway_of`]) on the PCP /
    /// NAT-PMP port: the answer of a NAT that honours port mapping, with the host and socket
    /// it goes back to. `None`: not such a request, or not answered (it is then routed, and
    /// dropped, like any datagram).
    pub(crate) fn port_mapping(
        &mut self,
        now: Instant,
        realm: Realm,
        src: SocketAddr,
        dst: SocketAddr,
        data: &[u8],
    ) -> Option<(usize, SocketId, Vec<u8>)> {
        let n = realm?;
        let server = SocketAddr::new(gateway_of(n), pierce_core::portmap::PCP_SERVER_PORT);
        if dst != server {
            return None;
        }
        let reply = self.nats[n].nat.handle_port_mapping(now, src, data)?;
        let &(host, socket) = self.sockets.get(&(realm, src))?;
        Some((host, socket, reply))
    }

    /// Carries a datagram from `src` (in `realm`, sent by host `from` with `ttl`, `None` for
    /// [`DEFAULT_TTL`]) to `dst`: translates it through every NAT on the way and returns the
    /// receiving host and the source address it sees.
    ///
    /// TTL: every NAT is a router, which forwards (and translates) only a datagram that
    /// arrives with a TTL above 1, and takes one off; the core, between the internet-side
    /// NATs of the two ends, is [`CORE_HOPS`] routers. So a datagram sent with TTL 2 opens
    /// its sender's NAT and expires in the core, before any NAT of the other end sees it.
    pub(crate) fn route(
        &mut self,
        now: Instant,
        from: usize,
        mut realm: Realm,
        mut src: SocketAddr,
        dst: SocketAddr,
        ttl: Option<u8>,
    ) -> Result<(usize, SocketId, SocketAddr), NetDrop> {
        let mut ttl = ttl.unwrap_or(DEFAULT_TTL);
        let hop = |ttl: &mut u8, routers: u8| {
            if *ttl <= routers {
                return false;
            }
            *ttl -= routers;
            true
        };
        // A UDP-blocking firewall in front of the sender stops it before any NAT sees it.
        if self.udp_blocked.contains(&from) {
            self.stats.firewall += 1;
            return Err(NetDrop::Firewall);
        }
        // Climb until the destination is known in the current realm.
        let mut hops = 0;
        while !self.owners.contains_key(&(realm, dst.ip())) {
            hops += 1;
            let Some(n) = realm.filter(|_| hops < MAX_HOPS) else {
                self.stats.no_route += 1;
                return Err(NetDrop::NoRoute);
            };
            if !hop(&mut ttl, 1) {
                self.stats.ttl_expired += 1;
                return Err(NetDrop::TtlExpired);
            }
            src = self.nats[n]
                .nat
                .outbound(now, src, dst)
                .map_err(|e| self.nat_drop(n, e))?;
            realm = self.nats[n].outside;
        }
        if realm.is_none() && !hop(&mut ttl, CORE_HOPS) {
            self.stats.ttl_expired += 1;
            return Err(NetDrop::TtlExpired);
        }
        // The core: who is it for, and may it pass?
        if let Some(to) = self.resolve(now, realm, src, dst) {
            if self.offline.contains(&from) || self.offline.contains(&to) {
                self.stats.offline += 1;
                return Err(NetDrop::Offline);
            }
            if self.blocked.contains(&(from, to)) {
                self.stats.partitioned += 1;
                return Err(NetDrop::Partitioned);
            }
            if self.udp_blocked.contains(&to) {
                self.stats.firewall += 1;
                return Err(NetDrop::Firewall);
            }
        }
        // Descend to the host.
        let mut dst = dst;
        for _ in 0..MAX_HOPS {
            match self.owners.get(&(realm, dst.ip())).copied() {
                None => break,
                Some(Owner::Host(_)) => {
                    let Some(&(id, socket)) = self.sockets.get(&(realm, dst)) else {
                        self.stats.no_listener += 1;
                        return Err(NetDrop::NoListener);
                    };
                    return Ok((id, socket, src));
                }
                Some(Owner::Nat(n)) => {
                    if !hop(&mut ttl, 1) {
                        self.stats.ttl_expired += 1;
                        return Err(NetDrop::TtlExpired);
                    }
                    dst = self.nats[n]
                        .nat
                        .inbound(now, src, dst)
                        .map_err(|e| self.nat_drop(n, e))?;
                    realm = Some(n);
                }
            }
        }
        self.stats.no_route += 1;
        Err(NetDrop::NoRoute)
    }

    /// The host a datagram would reach, without touching any state.
    fn resolve(
        &self,
        now: Instant,
        mut realm: Realm,
        src: SocketAddr,
        mut dst: SocketAddr,
    ) -> Option<usize> {
        for _ in 0..MAX_HOPS {
            match self.owners.get(&(realm, dst.ip()))? {
                Owner::Host(_) => return self.sockets.get(&(realm, dst)).map(|(id, _)| *id),
                Owner::Nat(n) => {
                    dst = self.nats[*n].nat.peek_inbound(now, src, dst)?;
                    realm = Some(*n);
                }
            }
        }
        None
    }

    /// The external address a datagram from `src` in `realm` to `dst` would leave the
    /// outermost NAT with, if every NAT on the way has a live mapping for it.
    pub(crate) fn peek_public(
        &self,
        now: Instant,
        mut realm: Realm,
        mut src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        while let Some(n) = realm {
            src = self.nats[n].nat.peek_outbound(now, src, dst)?;
            realm = self.nats[n].outside;
        }
        Some(src)
    }

    fn nat_drop(&mut self, n: usize, e: NatDrop) -> NetDrop {
        self.stats.nat_dropped += 1;
        NetDrop::Nat(n, e)
    }
}
