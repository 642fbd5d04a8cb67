//! A stateful IPv6 firewall, as home routers and phones put in front of a global IPv6
//! address (RFC 6092, "simple security" for IPv6 CPE): no address translation; a datagram out
//! opens a pinhole for its (inside endpoint, remote endpoint) pair; a datagram in passes only
//! through an open pinhole for exactly that pair (address-and-port-dependent filtering, the
//! filter of a port-restricted NAT without its mapping). Pinholes die after `idle_timeout`
//! without traffic that refreshes them.
//!
//! Since the inside address is the outside one, the punched address is the advertised one:
//! two firewalled hosts that send to each other at about the same time (simultaneous open)
//! each open the pinhole the other's datagram needs, as two endpoint-independent NATs do.
//!
//! State is a `BTreeMap`, expiry is evaluated lazily against each call's `now`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A firewall's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// A pinhole dies after this long without refreshing traffic.
    pub idle_timeout: Duration,
    /// Whether inbound datagrams refresh a pinhole (outbound always does).
    pub inbound_refreshes: bool,
}

impl FirewallConfig {
    /// Linux conntrack's UDP default (most home routers run Linux): 30 s for a flow, refreshed
    /// both ways — the same timer as [`crate::NatConfig::new`].
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

    /// A firewall with a pinhole idle timeout of [`Self::DEFAULT_IDLE_TIMEOUT`], refreshed by
    /// traffic either way.
    pub fn new() -> Self {
        Self {
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            inbound_refreshes: true,
        }
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
}

impl Default for FirewallConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a firewall dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallDrop {
    /// Inbound with no open pinhole for its (inside, remote) pair.
    NoPinhole,
}

/// A firewall's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirewallStats {
    /// Pinholes opened by outbound datagrams.
    pub pinholes_opened: u64,
    /// Pinholes that expired.
    pub pinholes_expired: u64,
    /// Outbound datagrams passed.
    pub passed_out: u64,
    /// Inbound datagrams passed.
    pub passed_in: u64,
    /// Inbound datagrams dropped: no pinhole.
    pub dropped_inbound: u64,
}

/// One stateful firewall: configuration, pinholes and counters.
#[derive(Debug)]
pub struct Firewall {
    config: FirewallConfig,
    /// (inside endpoint, remote endpoint) → last refreshing traffic.
    pinholes: BTreeMap<(SocketAddr, SocketAddr), Instant>,
    stats: FirewallStats,
}

impl Firewall {
    /// A firewall with no pinholes.
    pub fn new(config: FirewallConfig) -> Self {
        Self {
            config,
            pinholes: BTreeMap::new(),
            stats: FirewallStats::default(),
        }
    }

    /// The behaviour.
    pub fn config(&self) -> &FirewallConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> FirewallStats {
        self.stats
    }

    /// Pinholes alive at `now`.
    pub fn live_pinholes(&self, now: Instant) -> usize {
        self.pinholes
            .values()
            .filter(|t| self.alive(**t, now))
            .count()
    }

    /// Forgets every pinhole (a router reboot).
    pub fn flush(&mut self) {
        self.pinholes.clear();
    }

    /// An outbound datagram from `inside` to `remote`: passes, and opens or refreshes the
    /// pair's pinhole.
    pub fn outbound(&mut self, now: Instant, inside: SocketAddr, remote: SocketAddr) {
        self.expire(now);
        if self.pinholes.insert((inside, remote), now).is_none() {
            self.stats.pinholes_opened += 1;
        }
        self.stats.passed_out += 1;
    }

    /// An inbound datagram from `remote` to `inside`: passes only through an open pinhole
    /// for exactly that pair (refreshing it if inbound refreshes).
    ///
    /// # Errors
    /// [`FirewallDrop::NoPinhole`].
    pub fn inbound(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        inside: SocketAddr,
    ) -> Result<(), FirewallDrop> {
        self.expire(now);
        let refresh = self.config.inbound_refreshes;
        match self.pinholes.get_mut(&(inside, remote)) {
            Some(t) => {
                if refresh {
                    *t = now;
                }
                self.stats.passed_in += 1;
                Ok(())
            }
            None => {
                self.stats.dropped_inbound += 1;
                Err(FirewallDrop::NoPinhole)
            }
        }
    }

    fn alive(&self, last: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last) < self.config.idle_timeout
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.config.idle_timeout;
        let before = self.pinholes.len();
        self.pinholes
            .retain(|_, t| now.saturating_duration_since(*t) < timeout);
        self.stats.pinholes_expired += (before - self.pinholes.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn inbound_is_dropped_until_the_inside_host_sends_to_that_exact_endpoint() {
        let t0 = crate::clock::Clock::start().epoch();
        let mut fw = Firewall::new(FirewallConfig::new());
        let (me, peer) = (addr("[2001:db8:1::1]:5000"), addr("[2001:db8:2::1]:5000"));
        assert_eq!(fw.inbound(t0, peer, me), Err(FirewallDrop::NoPinhole));
        fw.outbound(t0, me, peer);
        assert_eq!(fw.inbound(t0, peer, me), Ok(()));
        // Another port of the same host, or the same port of another host: filtered.
        let other_port = addr("[2001:db8:2::1]:5001");
        assert_eq!(fw.inbound(t0, other_port, me), Err(FirewallDrop::NoPinhole));
        let other_host = addr("[2001:db8:3::1]:5000");
        assert_eq!(fw.inbound(t0, other_host, me), Err(FirewallDrop::NoPinhole));
        let s = fw.stats();
        assert_eq!(
            (
                s.pinholes_opened,
                s.passed_out,
                s.passed_in,
                s.dropped_inbound
            ),
            (1, 1, 1, 3)
        );
    }

    #[test]
    fn a_pinhole_expires_after_the_idle_timeout_unless_refreshed() {
        let t0 = crate::clock::Clock::start().epoch();
        let cfg = FirewallConfig::new().with_inbound_refresh(false);
        let mut fw = Firewall::new(cfg);
        let (me, peer) = (addr("[2001:db8:1::1]:5000"), addr("[2001:db8:2::1]:5000"));
        fw.outbound(t0, me, peer);
        let almost = t0 + FirewallConfig::DEFAULT_IDLE_TIMEOUT - Duration::from_millis(1);
        assert_eq!(fw.inbound(almost, peer, me), Ok(()));
        // Inbound does not refresh here: the pinhole dies 30 s after the outbound datagram.
        let late = t0 + FirewallConfig::DEFAULT_IDLE_TIMEOUT;
        assert_eq!(fw.live_pinholes(late), 0);
        assert_eq!(fw.inbound(late, peer, me), Err(FirewallDrop::NoPinhole));
        assert_eq!(fw.stats().pinholes_expired, 1);
    }

    #[test]
    fn inbound_traffic_keeps_a_pinhole_open_when_it_refreshes() {
        let t0 = crate::clock::Clock::start().epoch();
        let mut fw = Firewall::new(FirewallConfig::new());
        let (me, peer) = (addr("[2001:db8:1::1]:5000"), addr("[2001:db8:2::1]:5000"));
        fw.outbound(t0, me, peer);
        let step = Duration::from_secs(20);
        for k in 1..=5 {
            assert_eq!(fw.inbound(t0 + step * k, peer, me), Ok(()), "step {k}");
        }
        assert_eq!(fw.live_pinholes(t0 + step * 5), 1);
    }
}
