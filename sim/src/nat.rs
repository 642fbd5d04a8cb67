//! A UDP NAT after RFC 4787, as a middlebox between an inside realm and an outside one.
//!
//! - **Mapping** (RFC 4787 §4.1) decides when an outbound flow reuses an external port:
//!   endpoint-independent (EIM: one port per internal endpoint), address-dependent (one per
//!   remote IP) or address-and-port-dependent (one per remote endpoint, "symmetric").
//! - **Filtering** (§5) decides which inbound datagrams a mapping accepts: from anyone (EIF),
//!   from remote IPs the mapping has sent to (ADF), or only from remote endpoints it has sent
//!   to (APDF).
//! - **Port allocation** (§4.2): preserve the internal port when free, count up from a
//!   random start (predictable), or pick at random.
//! - **Expiry** (§4.3): a mapping dies after `idle_timeout` without outbound traffic, or
//!   without any traffic when inbound refreshes it too.
//! - **Hairpinning** (§6): whether an inside host can reach another inside host through the
//!   NAT's public address.
//! - **Linux conntrack quirk**: see [`NatConfig::conntrack_quirk`].
//!
//! State lives in `BTreeMap`s and ports come from the NAT's own seeded stream, so the same
//! seed gives the same ports. Expiry is evaluated lazily against the `now` of each call.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

/// When an outbound flow gets a new external port (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mapping {
    /// One external port per internal endpoint, whatever the destination (EIM).
    EndpointIndependent,
    /// A new external port per destination IP.
    AddressDependent,
    /// A new external port per destination IP and port ("symmetric").
    AddressAndPortDependent,
}

/// Which inbound datagrams a mapping lets through (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filtering {
    /// From anyone (EIF, "full cone").
    EndpointIndependent,
    /// From IPs the mapping has sent to, any port ("restricted cone").
    AddressDependent,
    /// Only from IP:port pairs the mapping has sent to ("port-restricted").
    AddressAndPortDependent,
}

/// How a new mapping's external port is chosen (RFC 4787 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortAllocation {
    /// The internal port if free, else the next free one above it.
    Preserving,
    /// One above the previously allocated port (from a random start): predictable.
    Sequential,
    /// Uniformly random among free ports.
    Random,
}

/// A NAT's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// Port allocation.
    pub allocation: PortAllocation,
    /// A mapping dies after this long without refreshing traffic.
    pub idle_timeout: Duration,
    /// Whether inbound datagrams refresh a mapping (outbound always does).
    pub inbound_refreshes: bool,
    /// Whether inside hosts can reach each other through the public address.
    pub hairpinning: bool,
    /// Models Linux conntrack: an unsolicited inbound datagram that the NAT does not forward
    /// (no mapping, or filtered) is not dropped by a firewall rule first, so conntrack records
    /// it as a flow of its own (for `idle_timeout`). An internal host that later sends to that
    /// remote endpoint cannot be given the external port the entry occupies, so it gets a
    /// different one: with port preservation or EIM, the port the peer was told about (and
    /// punched to) is no longer the port used towards it.
    pub conntrack_quirk: bool,
    /// Honours port-mapping requests (PCP, RFC 6887 MAP; NAT-PMP, RFC 6886) sent to its inside
    /// address ([`crate::gateway_of`]) port 5351, as a home router running miniupnpd does:
    /// each mapping is a static forward ([`Nat::forward`]) of the suggested external port
    /// (else the next free one) to the requesting socket, for anyone, until deleted. Simpler
    /// than a real router in one way: all of that socket's outbound traffic then leaves from
    /// the mapped port too (a real symmetric router still picks a new port per destination for
    /// the socket's own flows; only replies to inbound ones use the mapped port). Lifetimes
    /// are granted as asked and never run out. Default: off.
    pub port_mapping: bool,
}

impl NatConfig {
    /// A NAT with these behaviours, a 30 s idle timeout (Linux's unreplied-UDP default),
    /// inbound refresh, no hairpinning and no conntrack quirk.
    pub fn new(mapping: Mapping, filtering: Filtering, allocation: PortAllocation) -> Self {
        Self {
            mapping,
            filtering,
            allocation,
            idle_timeout: Duration::from_secs(30),
            inbound_refreshes: true,
            hairpinning: false,
            conntrack_quirk: false,
            port_mapping: false,
        }
    }

    /// EIM + EIF, port-preserving ("full cone").
    pub fn full_cone() -> Self {
        Self::new(
            Mapping::EndpointIndependent,
            Filtering::EndpointIndependent,
            PortAllocation::Preserving,
        )
    }

    /// EIM + ADF, port-preserving ("restricted cone").
    pub fn restricted_cone() -> Self {
        Self::new(
            Mapping::EndpointIndependent,
            Filtering::AddressDependent,
            PortAllocation::Preserving,
        )
    }

    /// EIM + APDF, port-preserving ("port-restricted cone", most home routers).
    pub fn port_restricted() -> Self {
        Self::new(
            Mapping::EndpointIndependent,
            Filtering::AddressAndPortDependent,
            PortAllocation::Preserving,
        )
    }

    /// ADM + ADF with sequential ports.
    pub fn address_dependent() -> Self {
        Self::new(
            Mapping::AddressDependent,
            Filtering::AddressDependent,
            PortAllocation::Sequential,
        )
    }

    /// APDM + APDF with random ports: the hard case, relay territory.
    pub fn symmetric() -> Self {
        Self::new(
            Mapping::AddressAndPortDependent,
            Filtering::AddressAndPortDependent,
            PortAllocation::Random,
        )
    }

    /// APDM + APDF with sequential ports: hard, but ports can be predicted.
    pub fn symmetric_sequential() -> Self {
        Self {
            allocation: PortAllocation::Sequential,
            ..Self::symmetric()
        }
    }

    /// A Linux router doing masquerade: EIM-like with port preservation, APDF, 30 s timeout,
    /// and the conntrack quirk.
    pub fn linux() -> Self {
        Self {
            conntrack_quirk: true,
            ..Self::port_restricted()
        }
    }

    /// A carrier-grade NAT (RFC 6888: EIM required): APDF, random ports, 120 s timeout.
    pub fn cgnat() -> Self {
        Self {
            idle_timeout: Duration::from_secs(120),
            ..Self::new(
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent,
                PortAllocation::Random,
            )
        }
    }

    /// Every mapping × filtering × allocation combination, with a short name such as
    /// `"eim-apdf-random"`.
    pub fn all_types() -> Vec<(String, Self)> {
        let mut out = Vec::new();
        for (m, mn) in [
            (Mapping::EndpointIndependent, "eim"),
            (Mapping::AddressDependent, "adm"),
            (Mapping::AddressAndPortDependent, "apdm"),
        ] {
            for (f, fname) in [
                (Filtering::EndpointIndependent, "eif"),
                (Filtering::AddressDependent, "adf"),
                (Filtering::AddressAndPortDependent, "apdf"),
            ] {
                for (a, an) in [
                    (PortAllocation::Preserving, "preserving"),
                    (PortAllocation::Sequential, "sequential"),
                    (PortAllocation::Random, "random"),
                ] {
                    out.push((format!("{mn}-{fname}-{an}"), Self::new(m, f, a)));
                }
            }
        }
        out
    }

    /// With this idle timeout.
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// With or without inbound refresh.
    pub fn with_inbound_refresh(mut self, on: bool) -> Self {
        self.inbound_refreshes = on;
        self
    }

    /// With or without hairpinning.
    pub fn with_hairpinning(mut self, on: bool) -> Self {
        self.hairpinning = on;
        self
    }

    /// With this port allocation.
    pub fn with_allocation(mut self, a: PortAllocation) -> Self {
        self.allocation = a;
        self
    }

    /// Honouring PCP / NAT-PMP mapping requests, or not ([`NatConfig::port_mapping`]).
    /// UPnP IGD is not modelled: an M-SEARCH goes unanswered and a client's HTTP stream
    /// (`SocketRequest::ConnectRaw`) fails, so a NAT without port mapping costs a client
    /// the full PCP, NAT-PMP and SSDP timeouts and one `Failed` event.
    pub fn with_port_mapping(mut self, on: bool) -> Self {
        self.port_mapping = on;
        self
    }

    /// With or without the Linux conntrack quirk.
    pub fn with_conntrack_quirk(mut self, on: bool) -> Self {
        self.conntrack_quirk = on;
        self
    }
}

/// Why a NAT dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatDrop {
    /// Inbound to an external port with no live mapping.
    NoMapping,
    /// Inbound refused by the filtering behaviour.
    Filtered,
    /// Outbound to the NAT's own public address with hairpinning off.
    HairpinDisabled,
    /// No free external port.
    PortsExhausted,
    /// Inbound for an address that is not this NAT's.
    NotOurs,
}

/// A NAT's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatStats {
    /// Mappings created.
    pub mappings_created: u64,
    /// Mappings that expired.
    pub mappings_expired: u64,
    /// Times every binding was flushed (rebind, roam).
    pub flushes: u64,
    /// Outbound datagrams translated.
    pub translated_out: u64,
    /// Inbound datagrams translated.
    pub translated_in: u64,
    /// Outbound datagrams that hairpinned back inside.
    pub hairpinned: u64,
    /// Inbound drops: no mapping.
    pub dropped_no_mapping: u64,
    /// Inbound drops: filtered.
    pub dropped_filtered: u64,
    /// Outbound drops: hairpinning off.
    pub dropped_hairpin: u64,
    /// Outbound drops: no free port.
    pub dropped_ports_exhausted: u64,
    /// Conntrack entries created by unsolicited inbound datagrams (quirk only).
    pub conntrack_entries: u64,
    /// Forwards installed by port-mapping requests ([`NatConfig::port_mapping`]).
    pub port_mappings: u64,
}

/// Lowest external port handed out.
const PORT_MIN: u16 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Any,
    Ip(IpAddr),
    Endpoint(SocketAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    internal: SocketAddr,
    scope: Scope,
}

#[derive(Debug, Clone)]
struct Binding {
    port: u16,
    internal: SocketAddr,
    /// Remote endpoints this mapping has sent to (what filtering admits).
    contacted: BTreeSet<SocketAddr>,
    last_active: Instant,
}

/// One NAT: configuration, public IP, bindings and counters.
#[derive(Debug)]
pub struct Nat {
    config: NatConfig,
    public_ip: IpAddr,
    rng: StdRng,
    bindings: BTreeMap<Key, Binding>,
    by_port: BTreeMap<u16, Key>,
    /// Static port forwards: external port → internal endpoint. Never expire, accept anyone.
    forwards: BTreeMap<u16, SocketAddr>,
    /// Conntrack entries from unsolicited inbound datagrams: (external port, remote) → expiry.
    ghosts: BTreeMap<(u16, SocketAddr), Instant>,
    /// When the first port-mapping request came (the PCP / NAT-PMP epoch's zero).
    pmp_epoch: Option<Instant>,
    next_port: u16,
    stats: NatStats,
}

impl Nat {
    /// A NAT with no bindings whose port choices come from `rng` (derive it with
    /// [`crate::substream`]).
    pub fn new(config: NatConfig, public_ip: IpAddr, mut rng: StdRng) -> Self {
        let next_port = rng.random_range(20_000..40_000);
        Self {
            config,
            public_ip,
            rng,
            bindings: BTreeMap::new(),
            by_port: BTreeMap::new(),
            forwards: BTreeMap::new(),
            ghosts: BTreeMap::new(),
            pmp_epoch: None,
            next_port,
            stats: NatStats::default(),
        }
    }

    /// The behaviour.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// The public (outside) address.
    pub fn public_ip(&self) -> IpAddr {
        self.public_ip
    }

    /// Counters.
    pub fn stats(&self) -> NatStats {
        self.stats
    }

    /// Bindings alive at `now`.
    pub fn live_bindings(&self, now: Instant) -> usize {
        self.bindings
            .values()
            .filter(|b| self.alive(b, now))
            .count()
    }

    /// Forwards `external_port` to `internal` for good, for anyone; replies from `internal`
    /// leave from that port.
    pub fn forward(&mut self, external_port: u16, internal: SocketAddr) {
        self.forwards.insert(external_port, internal);
    }

    /// A PCP or NAT-PMP request from `internal` to this NAT's inside address, port 5351: the
    /// answer, if the NAT honours port mapping ([`NatConfig::port_mapping`]) and the request
    /// is one (a PCP MAP must name its sender as the client, RFC 6887 §8.1; others are not
    /// answered). A MAP installs (or keeps) a static forward to `internal`'s address and the
    /// internal port asked, on the suggested external port if free, else the next free one;
    /// lifetime 0 removes it. The epoch counts seconds since the first request.
    pub fn handle_port_mapping(
        &mut self,
        now: Instant,
        internal: SocketAddr,
        request: &[u8],
    ) -> Option<Vec<u8>> {
        use pierce_core::portmap::{GatewayRequest, encode_gateway_grant};
        if !self.config.port_mapping {
            return None;
        }
        let req = GatewayRequest::decode(request)?;
        let IpAddr::V4(public) = self.public_ip else {
            return None;
        };
        let start = *self.pmp_epoch.get_or_insert(now);
        let epoch = u32::try_from((now - start).as_secs()).unwrap_or(u32::MAX);
        let (internal_port, suggested, lifetime) = match req {
            GatewayRequest::PcpMap {
                client,
                lifetime,
                internal_port,
                suggested_port,
                ..
            } => {
                if client != internal.ip() {
                    return None;
                }
                (internal_port, suggested_port, lifetime)
            }
            GatewayRequest::NatPmpMap {
                internal_port,
                suggested_port,
                lifetime,
            } => (internal_port, suggested_port, lifetime),
            GatewayRequest::NatPmpPublic => (0, 0, 0),
        };
        let target = SocketAddr::new(internal.ip(), internal_port);
        let existing = self.forward_port(target);
        let port = match req {
            GatewayRequest::NatPmpPublic => 0,
            _ if lifetime == 0 => {
                if let Some(p) = existing {
                    self.forwards.remove(&p);
                }
                0
            }
            _ => {
                let any = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
                let port = existing
                    .or_else(|| (self.port_free(suggested, any)).then_some(suggested))
                    .or_else(|| self.scan(suggested.max(PORT_MIN), any))?;
                self.forwards.insert(port, target);
                self.stats.port_mappings += u64::from(existing.is_none());
                port
            }
        };
        let mut buf = [0u8; 64];
        let external = std::net::SocketAddrV4::new(public, port);
        let n = encode_gateway_grant(&mut buf, &req, external, lifetime, epoch)?;
        Some(buf[..n].to_vec())
    }

    /// Where a static forward sends `external_port`, if one does.
    pub fn forwarded(&self, external_port: u16) -> Option<SocketAddr> {
        self.forwards.get(&external_port).copied()
    }

    /// Forgets every binding and conntrack entry (a router reboot, a rebind). Forwards stay.
    pub fn flush(&mut self) {
        self.bindings.clear();
        self.by_port.clear();
        self.ghosts.clear();
        self.stats.flushes += 1;
    }

    /// Takes a new public IP (and flushes: mappings do not survive an address change).
    pub fn set_public_ip(&mut self, ip: IpAddr) {
        self.public_ip = ip;
        self.flush();
    }

    /// Translates an outbound datagram from `internal` to `remote`, creating or refreshing a
    /// mapping, and returns the external source address.
    ///
    /// # Errors
    /// [`NatDrop::HairpinDisabled`] or [`NatDrop::PortsExhausted`].
    pub fn outbound(
        &mut self,
        now: Instant,
        internal: SocketAddr,
        remote: SocketAddr,
    ) -> Result<SocketAddr, NatDrop> {
        self.expire(now);
        let hairpin = remote.ip() == self.public_ip;
        if hairpin && !self.config.hairpinning {
            self.stats.dropped_hairpin += 1;
            return Err(NatDrop::HairpinDisabled);
        }
        if let Some(port) = self.forward_port(internal) {
            self.stats.translated_out += 1;
            self.stats.hairpinned += u64::from(hairpin);
            return Ok(SocketAddr::new(self.public_ip, port));
        }
        let key = self.key_for(internal, remote);
        if self.bindings.contains_key(&key) && self.conntrack_conflict(&key, remote) {
            // The flow towards `remote` cannot use the mapping's port (a conntrack entry for
            // that remote holds it), so it gets a port of its own.
            let exact = Key {
                internal,
                scope: Scope::Endpoint(remote),
            };
            if !self.bindings.contains_key(&exact) {
                self.create(now, exact, remote)?;
            }
            return Ok(self.use_binding(now, exact, remote, hairpin));
        }
        if !self.bindings.contains_key(&key) {
            self.create(now, key, remote)?;
        }
        Ok(self.use_binding(now, key, remote, hairpin))
    }

    /// Translates an inbound datagram from `remote` to `external` and returns the internal
    /// destination, if a mapping accepts it.
    ///
    /// # Errors
    /// [`NatDrop::NoMapping`], [`NatDrop::Filtered`] or [`NatDrop::NotOurs`].
    pub fn inbound(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        external: SocketAddr,
    ) -> Result<SocketAddr, NatDrop> {
        self.expire(now);
        if external.ip() != self.public_ip {
            return Err(NatDrop::NotOurs);
        }
        let port = external.port();
        if let Some(internal) = self.forwards.get(&port) {
            self.stats.translated_in += 1;
            return Ok(*internal);
        }
        let Some(key) = self.by_port.get(&port).copied() else {
            self.stats.dropped_no_mapping += 1;
            self.unsolicited(now, port, remote);
            return Err(NatDrop::NoMapping);
        };
        let filtering = self.config.filtering;
        let refresh = self.config.inbound_refreshes;
        let b = self
            .bindings
            .get_mut(&key)
            .expect("by_port and bindings agree");
        if !admits(filtering, b, remote) {
            self.stats.dropped_filtered += 1;
            self.unsolicited(now, port, remote);
            return Err(NatDrop::Filtered);
        }
        if refresh {
            b.last_active = now;
        }
        self.stats.translated_in += 1;
        Ok(b.internal)
    }

    /// The external address an outbound datagram from `internal` to `remote` would leave from
    /// at `now` if it reuses a live mapping; `None` if it would need a new one. No side
    /// effects.
    pub fn peek_outbound(
        &self,
        now: Instant,
        internal: SocketAddr,
        remote: SocketAddr,
    ) -> Option<SocketAddr> {
        if let Some(port) = self.forward_port(internal) {
            return Some(SocketAddr::new(self.public_ip, port));
        }
        let key = self.key_for(internal, remote);
        let key = if self.bindings.contains_key(&key) && self.conntrack_conflict(&key, remote) {
            Key {
                internal,
                scope: Scope::Endpoint(remote),
            }
        } else {
            key
        };
        let b = self.bindings.get(&key).filter(|b| self.alive(b, now))?;
        Some(SocketAddr::new(self.public_ip, b.port))
    }

    /// Where an inbound datagram from `remote` to `external` would go at `now`, if anywhere.
    /// No side effects.
    pub fn peek_inbound(
        &self,
        now: Instant,
        remote: SocketAddr,
        external: SocketAddr,
    ) -> Option<SocketAddr> {
        if external.ip() != self.public_ip {
            return None;
        }
        if let Some(internal) = self.forwards.get(&external.port()) {
            return Some(*internal);
        }
        let key = self.by_port.get(&external.port())?;
        let b = self.bindings.get(key).filter(|b| self.alive(b, now))?;
        admits(self.config.filtering, b, remote).then_some(b.internal)
    }

    // ---- internals ---------------------------------------------------------------------

    fn alive(&self, b: &Binding, now: Instant) -> bool {
        now < b.last_active + self.config.idle_timeout
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.config.idle_timeout;
        let dead: Vec<Key> = self
            .bindings
            .iter()
            .filter(|(_, b)| now >= b.last_active + timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            if let Some(b) = self.bindings.remove(&k) {
                self.by_port.remove(&b.port);
                self.stats.mappings_expired += 1;
            }
        }
        self.ghosts.retain(|_, expires| now < *expires);
    }

    fn forward_port(&self, internal: SocketAddr) -> Option<u16> {
        self.forwards
            .iter()
            .find(|(_, i)| **i == internal)
            .map(|(p, _)| *p)
    }

    fn key_for(&self, internal: SocketAddr, remote: SocketAddr) -> Key {
        let scope = match self.config.mapping {
            Mapping::EndpointIndependent => Scope::Any,
            Mapping::AddressDependent => Scope::Ip(remote.ip()),
            Mapping::AddressAndPortDependent => Scope::Endpoint(remote),
        };
        Key { internal, scope }
    }

    /// Whether the existing binding under `key` may not carry a flow to `remote` because a
    /// conntrack entry for `remote` holds its port.
    fn conntrack_conflict(&self, key: &Key, remote: SocketAddr) -> bool {
        if !self.config.conntrack_quirk || key.scope == Scope::Endpoint(remote) {
            return false;
        }
        self.bindings.get(key).is_some_and(|b| {
            !b.contacted.contains(&remote) && self.ghosts.contains_key(&(b.port, remote))
        })
    }

    fn unsolicited(&mut self, now: Instant, port: u16, remote: SocketAddr) {
        if self.config.conntrack_quirk {
            let expires = now + self.config.idle_timeout;
            if self.ghosts.insert((port, remote), expires).is_none() {
                self.stats.conntrack_entries += 1;
            }
        }
    }

    fn use_binding(
        &mut self,
        now: Instant,
        key: Key,
        remote: SocketAddr,
        hairpin: bool,
    ) -> SocketAddr {
        let b = self
            .bindings
            .get_mut(&key)
            .expect("binding was just ensured");
        b.contacted.insert(remote);
        b.last_active = now;
        self.stats.translated_out += 1;
        self.stats.hairpinned += u64::from(hairpin);
        SocketAddr::new(self.public_ip, b.port)
    }

    fn create(&mut self, now: Instant, key: Key, remote: SocketAddr) -> Result<(), NatDrop> {
        let Some(port) = self.allocate(key.internal.port(), remote) else {
            self.stats.dropped_ports_exhausted += 1;
            return Err(NatDrop::PortsExhausted);
        };
        self.by_port.insert(port, key);
        self.bindings.insert(
            key,
            Binding {
                port,
                internal: key.internal,
                contacted: BTreeSet::new(),
                last_active: now,
            },
        );
        self.stats.mappings_created += 1;
        Ok(())
    }

    fn port_free(&self, port: u16, remote: SocketAddr) -> bool {
        port >= PORT_MIN
            && !self.by_port.contains_key(&port)
            && !self.forwards.contains_key(&port)
            && !self.ghosts.contains_key(&(port, remote))
    }

    /// The first free port at or after `start`, wrapping within `[PORT_MIN, 65535]`.
    fn scan(&self, start: u16, remote: SocketAddr) -> Option<u16> {
        let span = u32::from(u16::MAX - PORT_MIN) + 1;
        let start = u32::from(start.max(PORT_MIN) - PORT_MIN);
        (0..span)
            .map(|i| PORT_MIN + ((start + i) % span) as u16)
            .find(|p| self.port_free(*p, remote))
    }

    fn allocate(&mut self, internal_port: u16, remote: SocketAddr) -> Option<u16> {
        match self.config.allocation {
            PortAllocation::Preserving => {
                if self.port_free(internal_port, remote) {
                    Some(internal_port)
                } else {
                    self.scan(internal_port.saturating_add(1), remote)
                }
            }
            PortAllocation::Sequential => {
                let p = self.scan(self.next_port, remote)?;
                self.next_port = if p == u16::MAX { PORT_MIN } else { p + 1 };
                Some(p)
            }
            PortAllocation::Random => {
                for _ in 0..32 {
                    let p = self.rng.random_range(PORT_MIN..=u16::MAX);
                    if self.port_free(p, remote) {
                        return Some(p);
                    }
                }
                let start = self.rng.random_range(PORT_MIN..=u16::MAX);
                self.scan(start, remote)
            }
        }
    }
}

fn admits(filtering: Filtering, b: &Binding, remote: SocketAddr) -> bool {
    match filtering {
        Filtering::EndpointIndependent => true,
        Filtering::AddressDependent => b.contacted.iter().any(|c| c.ip() == remote.ip()),
        Filtering::AddressAndPortDependent => b.contacted.contains(&remote),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substream;

    fn t0() -> Instant {
        crate::clock::Clock::start().epoch()
    }

    fn nat(config: NatConfig) -> Nat {
        Nat::new(config, "11.0.0.1".parse().unwrap(), substream(1, "nat"))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const HOST: &str = "10.0.0.2:5000";
    const S1: &str = "11.0.0.100:7777";
    const S1_OTHER_PORT: &str = "11.0.0.100:8888";
    const S2: &str = "11.0.0.200:7777";

    /// External ports used towards S1, S1 on another port, and S2.
    fn ports(config: NatConfig) -> [u16; 3] {
        let mut n = nat(config);
        let t = t0();
        [S1, S1_OTHER_PORT, S2].map(|r| n.outbound(t, addr(HOST), addr(r)).unwrap().port())
    }

    #[test]
    fn endpoint_independent_mapping_reuses_one_port_for_every_remote() {
        let [a, b, c] = ports(NatConfig::port_restricted());
        assert_eq!(a, 5000, "preserving allocation keeps the internal port");
        assert_eq!((a, a), (b, c));
    }

    #[test]
    fn address_dependent_mapping_uses_one_port_per_remote_ip() {
        let [a, b, c] = ports(NatConfig::address_dependent());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn address_and_port_dependent_mapping_uses_one_port_per_remote_endpoint() {
        let [a, b, c] = ports(NatConfig::symmetric());
        assert!(a != b && b != c && a != c, "{a} {b} {c}");
    }

    #[test]
    fn sequential_allocation_counts_up_by_one() {
        let [a, b, c] = ports(NatConfig::symmetric_sequential());
        assert_eq!((b, c), (a + 1, a + 2));
    }

    #[test]
    fn preserving_allocation_falls_back_to_the_next_free_port_on_collision() {
        let mut n = nat(NatConfig::port_restricted());
        let t = t0();
        let a = n.outbound(t, addr("10.0.0.2:5000"), addr(S1)).unwrap();
        let b = n.outbound(t, addr("10.0.0.3:5000"), addr(S1)).unwrap();
        assert_eq!((a.port(), b.port()), (5000, 5001));
    }

    #[test]
    fn random_allocation_depends_on_the_nat_seed() {
        let t = t0();
        let port = |seed| {
            let mut n = Nat::new(
                NatConfig::symmetric(),
                "11.0.0.1".parse().unwrap(),
                substream(seed, "nat"),
            );
            n.outbound(t, addr(HOST), addr(S1)).unwrap().port()
        };
        assert_eq!(port(3), port(3));
        assert_ne!(port(3), port(4));
    }

    /// Which of S1, S1 on another port, and S2 can reach a mapping opened towards S1.
    fn admitted(filtering: Filtering) -> [bool; 3] {
        let mut n = nat(NatConfig::new(
            Mapping::EndpointIndependent,
            filtering,
            PortAllocation::Preserving,
        ));
        let t = t0();
        let ext = n.outbound(t, addr(HOST), addr(S1)).unwrap();
        [S1, S1_OTHER_PORT, S2].map(|r| n.inbound(t, addr(r), ext).is_ok())
    }

    #[test]
    fn filtering_admits_what_its_type_says() {
        assert_eq!(admitted(Filtering::EndpointIndependent), [true, true, true]);
        assert_eq!(admitted(Filtering::AddressDependent), [true, true, false]);
        assert_eq!(
            admitted(Filtering::AddressAndPortDependent),
            [true, false, false]
        );
    }

    #[test]
    fn filtered_and_unmapped_inbound_are_counted_separately() {
        let mut n = nat(NatConfig::port_restricted());
        let t = t0();
        let ext = n.outbound(t, addr(HOST), addr(S1)).unwrap();
        assert_eq!(n.inbound(t, addr(S2), ext), Err(NatDrop::Filtered));
        let unmapped = SocketAddr::new(ext.ip(), ext.port() + 1);
        assert_eq!(n.inbound(t, addr(S1), unmapped), Err(NatDrop::NoMapping));
        assert_eq!(n.inbound(t, addr(S1), ext), Ok(addr(HOST)));
        let s = n.stats();
        assert_eq!(
            (s.dropped_filtered, s.dropped_no_mapping, s.translated_in),
            (1, 1, 1)
        );
    }

    #[test]
    fn mappings_expire_after_the_idle_timeout_unless_refreshed() {
        let cfg = NatConfig::port_restricted().with_idle_timeout(Duration::from_secs(30));
        let mut n = nat(cfg);
        let t = t0();
        let s = Duration::from_secs;
        let ext = n.outbound(t, addr(HOST), addr(S1)).unwrap();
        // Outbound at 20 s refreshes; at 49 s it is still alive, at 50 s it is gone.
        n.outbound(t + s(20), addr(HOST), addr(S1)).unwrap();
        assert!(n.peek_inbound(t + s(49), addr(S1), ext).is_some());
        assert_eq!(n.inbound(t + s(50), addr(S1), ext), Err(NatDrop::NoMapping));
        assert_eq!(n.stats().mappings_expired, 1);
    }

    #[test]
    fn inbound_refreshes_a_mapping_only_when_configured() {
        let s = Duration::from_secs;
        for refresh in [true, false] {
            let cfg = NatConfig::port_restricted()
                .with_idle_timeout(s(30))
                .with_inbound_refresh(refresh);
            let mut n = nat(cfg);
            let t = t0();
            let ext = n.outbound(t, addr(HOST), addr(S1)).unwrap();
            n.inbound(t + s(25), addr(S1), ext).unwrap();
            assert_eq!(
                n.inbound(t + s(40), addr(S1), ext).is_ok(),
                refresh,
                "refresh={refresh}"
            );
        }
    }

    #[test]
    fn a_new_mapping_after_expiry_gets_a_new_random_port() {
        let mut n = nat(NatConfig::symmetric().with_idle_timeout(Duration::from_secs(5)));
        let t = t0();
        let a = n.outbound(t, addr(HOST), addr(S1)).unwrap();
        let b = n
            .outbound(t + Duration::from_secs(6), addr(HOST), addr(S1))
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(n.stats().mappings_created, 2);
    }

    #[test]
    fn flush_and_new_public_ip_forget_bindings() {
        let mut n = nat(NatConfig::symmetric());
        let t = t0();
        let a = n.outbound(t, addr(HOST), addr(S1)).unwrap();
        n.flush();
        assert_eq!(n.live_bindings(t), 0);
        assert_eq!(n.inbound(t, addr(S1), a), Err(NatDrop::NoMapping));
        n.set_public_ip("11.0.0.9".parse().unwrap());
        let b = n.outbound(t, addr(HOST), addr(S1)).unwrap();
        assert_eq!(b.ip(), "11.0.0.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hairpinning_reaches_another_inside_host_through_the_public_address() {
        let t = t0();
        for on in [true, false] {
            let mut n = nat(NatConfig::full_cone().with_hairpinning(on));
            let b_ext = n.outbound(t, addr("10.0.0.3:5000"), addr(S1)).unwrap();
            let out = n.outbound(t, addr("10.0.0.2:5000"), b_ext);
            if on {
                let a_ext = out.unwrap();
                assert_eq!(n.inbound(t, a_ext, b_ext), Ok(addr("10.0.0.3:5000")));
                assert_eq!(n.stats().hairpinned, 1);
            } else {
                assert_eq!(out, Err(NatDrop::HairpinDisabled));
                assert_eq!(n.stats().dropped_hairpin, 1);
            }
        }
    }

    #[test]
    fn conntrack_quirk_moves_a_preserved_port_after_an_unsolicited_packet() {
        // Peer R punches to the port it expects (the internal port, preserved) before the
        // host has sent anything to R.
        let t = t0();
        let r = addr(S2);
        let expected = SocketAddr::new("11.0.0.1".parse().unwrap(), 5000);
        for quirk in [false, true] {
            let mut n = nat(NatConfig::linux().with_conntrack_quirk(quirk));
            assert_eq!(n.inbound(t, r, expected), Err(NatDrop::NoMapping));
            let ext = n.outbound(t, addr(HOST), r).unwrap();
            assert_eq!(ext == expected, !quirk, "quirk={quirk}: {ext}");
            assert_eq!(n.stats().conntrack_entries, u64::from(quirk));
        }
    }

    #[test]
    fn conntrack_quirk_splits_an_endpoint_independent_mapping_for_the_unsolicited_remote() {
        let t = t0();
        let mut n = nat(NatConfig::linux());
        let to_server = n.outbound(t, addr(HOST), addr(S1)).unwrap();
        // R's punch arrives before the host's own punch to R: filtered, but remembered.
        assert_eq!(n.inbound(t, addr(S2), to_server), Err(NatDrop::Filtered));
        let to_r = n.outbound(t, addr(HOST), addr(S2)).unwrap();
        assert_ne!(to_r, to_server);
        // The server flow keeps its port, and R's replies reach the host on the new port.
        assert_eq!(n.outbound(t, addr(HOST), addr(S1)).unwrap(), to_server);
        assert_eq!(n.inbound(t, addr(S2), to_r), Ok(addr(HOST)));
        assert_eq!(n.peek_outbound(t, addr(HOST), addr(S2)), Some(to_r));
    }

    #[test]
    fn conntrack_entries_expire_with_the_idle_timeout() {
        let t = t0();
        let mut n = nat(NatConfig::linux().with_idle_timeout(Duration::from_secs(30)));
        let r = addr(S2);
        let expected = SocketAddr::new("11.0.0.1".parse().unwrap(), 5000);
        let _ = n.inbound(t, r, expected);
        let ext = n
            .outbound(t + Duration::from_secs(31), addr(HOST), r)
            .unwrap();
        assert_eq!(ext, expected);
    }

    #[test]
    fn forwards_accept_anyone_and_carry_replies_from_the_forwarded_port() {
        let t = t0();
        let mut n = nat(NatConfig::symmetric());
        n.forward(7777, addr("10.0.0.2:7777"));
        let ext = SocketAddr::new(n.public_ip(), 7777);
        assert_eq!(n.inbound(t, addr(S1), ext), Ok(addr("10.0.0.2:7777")));
        assert_eq!(n.outbound(t, addr("10.0.0.2:7777"), addr(S2)), Ok(ext));
        assert_eq!(
            n.inbound(t + Duration::from_secs(3600), addr(S2), ext),
            Ok(addr("10.0.0.2:7777"))
        );
    }

    /// A PCP MAP request from `client` for its port 5000, suggesting `suggested`.
    fn pcp_map(client: &str, suggested: u16, lifetime: u32) -> Vec<u8> {
        let mut b = vec![0u8; 60];
        b[0] = 2; // RFC 6887 §7.1: version 2, opcode MAP.
        b[1] = 1;
        b[4..8].copy_from_slice(&lifetime.to_be_bytes());
        let ip: std::net::Ipv4Addr = client.parse().unwrap();
        b[8..24].copy_from_slice(&ip.to_ipv6_mapped().octets());
        b[24..36].copy_from_slice(&[7; 12]);
        b[36] = 17; // §11.1: UDP.
        b[40..42].copy_from_slice(&5000u16.to_be_bytes());
        b[42..44].copy_from_slice(&suggested.to_be_bytes());
        b
    }

    #[test]
    fn a_port_mapping_nat_forwards_the_suggested_port_to_anyone_until_deleted() {
        let t = t0();
        let mut plain = nat(NatConfig::symmetric());
        assert_eq!(
            plain.handle_port_mapping(t, addr(HOST), &pcp_map("10.0.0.2", 6000, 60)),
            None
        );
        let mut n = nat(NatConfig::symmetric().with_port_mapping(true));
        // The client field must name the sender (RFC 6887 §8.1).
        assert_eq!(
            n.handle_port_mapping(t, addr(HOST), &pcp_map("10.0.0.9", 6000, 60)),
            None
        );
        let answer = n.handle_port_mapping(t, addr(HOST), &pcp_map("10.0.0.2", 6000, 60));
        let answer = answer.expect("answered");
        assert_eq!(
            &answer[..4],
            &[2, 0x81, 0, 0],
            "version 2, MAP response, success"
        );
        assert_eq!(
            &answer[42..44],
            &6000u16.to_be_bytes(),
            "the suggested port"
        );
        assert_eq!(n.forwarded(6000), Some(addr(HOST)));
        // Anyone reaches it; the host's traffic leaves from it.
        assert_eq!(
            n.inbound(t, addr(S1), addr("11.0.0.1:6000")),
            Ok(addr(HOST))
        );
        assert_eq!(
            n.outbound(t, addr(HOST), addr(S2)),
            Ok(addr("11.0.0.1:6000"))
        );
        // A renewal keeps the port; lifetime 0 deletes it.
        let again = n
            .handle_port_mapping(t, addr(HOST), &pcp_map("10.0.0.2", 0, 60))
            .unwrap();
        assert_eq!(&again[42..44], &6000u16.to_be_bytes());
        n.handle_port_mapping(t, addr(HOST), &pcp_map("10.0.0.2", 0, 0))
            .unwrap();
        assert_eq!(n.forwarded(6000), None);
        assert_eq!(n.stats().port_mappings, 1);
        // Garbage is not answered.
        assert_eq!(n.handle_port_mapping(t, addr(HOST), &[2, 1, 0]), None);
    }
}
