//! IPv6 in the running simulation: global addresses, dual-stack sockets, stateful IPv6
//! firewalls and NAT64 gateways ([`crate::Stack`]).
//!
//! The IPv6 internet is flat: every global address sits in the root realm, so a datagram
//! between two IPv6 addresses crosses no NAT, only the firewalls in front of either end.
//! A dual-stack host's sockets listen on its IPv4 address (behind its edge) and on its IPv6
//! address, on the same port; what it sends leaves from the address of the destination's
//! family. An IPv6-only host behind a NAT64 gateway has, inside the gateway, an IPv4 address
//! of its own (tayga's pool) behind the gateway's NAT: datagrams to the gateway's prefix are
//! rewritten to IPv4 from that address, answers are rewritten back into the prefix.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use pierce_core::{ClientConfig, SocketId};

use super::{CLIENT_PORT, Sim};
use crate::firewall::{Firewall, FirewallDrop};
use crate::link::LinkProfile;
use crate::net::Realm;
use crate::scenario::{Edge, HostSpec, Stack};

impl Sim {
    /// A fresh global IPv6 address: `2001:db8:0:<k>::1`, one /64 per host.
    fn alloc_v6(&mut self) -> Ipv6Addr {
        self.next_v6 += 1;
        Ipv6Addr::new(0x2001, 0x0db8, 0, self.next_v6, 0, 0, 0, 1)
    }

    /// Gives host `id` (IPv4, already placed) a global IPv6 address on its primary socket's
    /// port, behind the firewall `stack` names; returns that socket's IPv6 address.
    pub(super) fn give_ipv6(&mut self, id: usize, stack: &Stack) -> SocketAddr {
        let ip = self.alloc_v6();
        let addr = SocketAddr::new(ip.into(), self.hosts[id].addr.port());
        self.net.add_host_at(id, None, addr);
        self.hosts[id].alt = Some((None, ip.into()));
        self.hosts[id].v6 = Some(ip);
        self.add_firewall(id, stack);
        addr
    }

    fn add_firewall(&mut self, id: usize, stack: &Stack) {
        if let Some(cfg) = stack.firewall() {
            self.firewalls
                .push((self.hosts[id].name.clone(), Firewall::new(cfg.clone())));
            self.hosts[id].firewall = Some(self.firewalls.len() - 1);
        }
    }

    /// Places an IPv6-only client ([`Stack::V6Only`]): its primary socket on a global IPv6
    /// address; behind a NAT64 gateway also on an IPv4 address inside the gateway's NAT
    /// (named after the client), and with the gateway's prefix in its configuration.
    pub(super) fn add_ipv6_only_client(
        &mut self,
        spec: &HostSpec,
        link: &LinkProfile,
        default_config: &Arc<ClientConfig>,
    ) {
        let Stack::V6Only { nat64, .. } = &spec.stack else {
            unreachable!("only for IPv6-only clients");
        };
        let link = spec.link.clone().unwrap_or_else(|| link.clone());
        let mut config = spec
            .config
            .clone()
            .unwrap_or_else(|| default_config.as_ref().clone());
        let edge = match nat64 {
            Some(g) => {
                config.nat64_prefix = Some(g.prefix);
                Edge::nat(g.nat.clone())
            }
            None => Edge::Open,
        };
        let id = self.hosts.len();
        let ip = self.alloc_v6();
        let addr = SocketAddr::new(ip.into(), CLIENT_PORT);
        self.net.add_host_at(id, None, addr);
        let id = self.push_host(&spec.name, edge, None, addr, &link, Some(Arc::new(config)));
        self.hosts[id].v6 = Some(ip);
        self.add_firewall(id, &spec.stack);
        if let Some(g) = nat64 {
            let (realm, _) = self.build_nats(&spec.name, &Edge::nat(g.nat.clone()));
            let v4 = self.net.add_ip(id, realm);
            let bound = self.net.bind(
                id,
                realm,
                SocketAddr::new(v4, CLIENT_PORT),
                SocketId::PRIMARY,
            );
            debug_assert!(bound, "a fresh address is free");
            self.hosts[id].alt = Some((realm, v4));
            self.hosts[id].nat64 = Some(g.clone());
        }
    }

    /// The servers host `id` connects to: an IPv6-only client without NAT64 reaches the
    /// server at its IPv6 address.
    pub(super) fn servers_for(&self, id: usize, list: &mut [SocketAddr]) {
        let h = &self.hosts[id];
        if h.addr.is_ipv6() && h.nat64.is_none() {
            let Some(v6) = self.server_v6 else {
                self.fail(format!(
                    "{} is IPv6-only without NAT64: the server must be dual-stack \
                     (Scenario::server_dual_stack)",
                    h.name
                ));
            };
            for s in list.iter_mut().filter(|s| **s == self.server_addr) {
                *s = v6;
            }
        }
    }

    /// Listens on the other family too, on `port` (an extra socket of a dual-stack host).
    pub(super) fn bind_alt(&mut self, id: usize, port: u16, socket: SocketId) {
        if let Some((realm, ip)) = self.hosts[id].alt {
            // A port taken on the other family leaves the socket on one family only.
            let _ = self.net.bind(id, realm, SocketAddr::new(ip, port), socket);
        }
    }

    /// Stops listening on the other family on `port`.
    pub(super) fn unbind_alt(&mut self, id: usize, port: u16) {
        if let Some((realm, ip)) = self.hosts[id].alt {
            self.net.unbind(realm, SocketAddr::new(ip, port));
        }
    }

    /// Where a datagram that node `id` sends from its socket at `src` (its primary family)
    /// to `dst` leaves from, and where it is addressed once it leaves the host's gateway:
    /// `(source as sent, source on the wire, destination on the wire)`. `None` if the host
    /// has no route to `dst`'s family.
    pub(super) fn outgoing(
        &self,
        id: usize,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<(SocketAddr, SocketAddr, SocketAddr)> {
        let h = &self.hosts[id];
        if let Some(g) = &h.nat64 {
            if let Some(v4) = g.embedded(dst) {
                let (_, ip) = h.alt?;
                return Some((src, SocketAddr::new(ip, src.port()), v4));
            }
            // Beyond the prefix, an IPv6-only host reaches IPv6 only.
            return dst.is_ipv6().then_some((src, src, dst));
        }
        if src.is_ipv4() == dst.is_ipv4() {
            return Some((src, src, dst));
        }
        match h.alt {
            Some((_, ip)) if ip.is_ipv4() == dst.is_ipv4() => {
                let alt = SocketAddr::new(ip, src.port());
                Some((alt, alt, dst))
            }
            _ => None,
        }
    }

    /// The realm host `from`'s datagram from `src` (on the wire) starts in.
    pub(super) fn realm_of(&self, from: usize, src: SocketAddr) -> Realm {
        let h = &self.hosts[from];
        match h.alt {
            Some((realm, ip)) if src.ip() == ip => realm,
            _ => h.realm,
        }
    }

    /// The sender as host `to` sees it: behind a NAT64 gateway, an IPv4 sender appears in
    /// the gateway's prefix.
    pub(super) fn seen_by(&self, to: usize, seen: SocketAddr) -> SocketAddr {
        match &self.hosts[to].nat64 {
            Some(g) if seen.is_ipv4() => pierce_core::synthesize_nat64(g.prefix, seen),
            _ => seen,
        }
    }

    /// An IPv6 datagram leaving host `from`: its firewall opens (or refreshes) a pinhole.
    pub(super) fn firewall_out(
        &mut self,
        now: Instant,
        from: usize,
        src: SocketAddr,
        dst: SocketAddr,
    ) {
        if let (true, Some(f)) = (src.is_ipv6(), self.hosts[from].firewall) {
            self.firewalls[f].1.outbound(now, src, dst);
        }
    }

    /// An IPv6 datagram from `seen` reaching host `to` at `dst`: its firewall lets it in
    /// only through an open pinhole.
    pub(super) fn firewall_in(
        &mut self,
        now: Instant,
        to: usize,
        seen: SocketAddr,
        dst: SocketAddr,
    ) -> Result<(), FirewallDrop> {
        match (dst.is_ipv6(), self.hosts[to].firewall) {
            (true, Some(f)) => self.firewalls[f].1.inbound(now, seen, dst),
            _ => Ok(()),
        }
    }

    /// Roaming and rebinding move a host's IPv4 side (a dual-stack host keeps its IPv6
    /// address); an IPv6-only host has none to move, and moving its IPv6 address is not
    /// modelled.
    #[track_caller]
    pub(super) fn refuse_ipv6_only(&self, id: usize, what: &str) {
        if self.hosts[id].addr.is_ipv6() {
            self.fail(format!(
                "{what}: {} is IPv6-only; moving an IPv6 address is not modelled",
                self.hosts[id].name
            ));
        }
    }

    // ---- observations ------------------------------------------------------------------

    /// The stateful IPv6 firewall in front of host `name`.
    #[track_caller]
    pub fn firewall(&self, name: &str) -> &Firewall {
        match self.firewalls.iter().find(|(n, _)| n == name) {
            Some((_, f)) => f,
            None => self.fail(format!("{name} has no IPv6 firewall")),
        }
    }

    /// Host `name`'s global IPv6 address, if it has one.
    #[track_caller]
    pub fn ipv6_addr(&self, name: &str) -> Option<IpAddr> {
        self.hosts[self.id(name)].v6.map(IpAddr::V6)
    }

    /// The server's IPv6 address, when dual-stack ([`crate::Scenario::server_dual_stack`]).
    pub fn server_addr_v6(&self) -> Option<SocketAddr> {
        self.server_v6
    }
}
