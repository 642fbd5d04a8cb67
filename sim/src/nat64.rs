//! A NAT64 gateway (RFC 6146) in front of an IPv6-only host, modelled as tayga plus NAT44
//! do it on Linux, and as a carrier's NAT64 behaves from the outside:
//!
//! - The host sends to an IPv4 address synthesised into the gateway's /96 prefix (RFC 6052:
//!   the IPv4 address in the last 32 bits, [`pierce_core::synthesize_nat64`]).
//! - The stateless part (tayga) gives the host an IPv4 address of its own inside the gateway
//!   and rewrites the datagram to IPv4: from that address, to the embedded one.
//! - The stateful part is an ordinary [`crate::Nat`] ([`Nat64Config::nat`]) between that
//!   inside address and the gateway's public IPv4 address: endpoint-independent mapping (RFC
//!   6146 §3.5.1 requires it), address-and-port-dependent filtering by default, counted in
//!   [`crate::NatStats`] under the host's name (see [`crate::Sim::nat`]).
//! - Answers come back through that NAT to the inside address and leave the gateway as IPv6,
//!   from the sender's IPv4 address synthesised into the prefix.
//!
//! The host's own IPv6 traffic to anything outside the prefix does not touch the gateway.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use pierce_core::WELL_KNOWN_NAT64_PREFIX;

use crate::nat::{Filtering, Mapping, NatConfig, PortAllocation};

/// A NAT64 gateway's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat64Config {
    /// The /96 prefix it translates (its last 32 bits are zero).
    pub prefix: Ipv6Addr,
    /// The stateful IPv4 side.
    pub nat: NatConfig,
}

impl Nat64Config {
    /// RFC 6146 §4: a UDP session lives at least two minutes; five is the default.
    pub const UDP_SESSION_LIFETIME: Duration = Duration::from_secs(300);

    /// The well-known prefix `64:ff9b::/96` and an endpoint-independent, port-preserving NAT
    /// with address-and-port-dependent filtering and the RFC 6146 default UDP lifetime.
    pub fn new() -> Self {
        Self {
            prefix: WELL_KNOWN_NAT64_PREFIX,
            nat: NatConfig::new(
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent,
                PortAllocation::Preserving,
            )
            .with_idle_timeout(Self::UDP_SESSION_LIFETIME),
        }
    }

    /// With this /96 prefix.
    ///
    /// # Panics
    /// If its last 32 bits are not zero.
    pub fn with_prefix(mut self, prefix: Ipv6Addr) -> Self {
        assert!(
            prefix.octets()[12..] == [0; 4],
            "a NAT64 prefix is a /96: {prefix} has bits in its last 32"
        );
        self.prefix = prefix;
        self
    }

    /// With this IPv4 side.
    pub fn with_nat(mut self, nat: NatConfig) -> Self {
        self.nat = nat;
        self
    }

    /// The IPv4 destination a datagram to `dst` is translated to, if `dst` is in the prefix.
    pub fn embedded(&self, dst: SocketAddr) -> Option<SocketAddr> {
        let IpAddr::V6(ip) = dst.ip() else {
            return None;
        };
        let o = ip.octets();
        (o[..12] == self.prefix.octets()[..12]).then(|| {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15])),
                dst.port(),
            )
        })
    }
}

impl Default for Nat64Config {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_the_prefix_carry_the_ipv4_destination_and_others_do_not() {
        let g = Nat64Config::new();
        let v4: SocketAddr = "11.0.0.3:5000".parse().unwrap();
        let synth = pierce_core::synthesize_nat64(g.prefix, v4);
        assert_eq!(synth, "[64:ff9b::b00:3]:5000".parse().unwrap());
        assert_eq!(g.embedded(synth), Some(v4));
        assert_eq!(g.embedded("[2001:db8::1]:5000".parse().unwrap()), None);
        assert_eq!(g.embedded(v4), None);
    }

    #[test]
    #[should_panic(expected = "a NAT64 prefix is a /96")]
    fn a_prefix_with_host_bits_is_refused() {
        let _ = Nat64Config::new().with_prefix("64:ff9b::1".parse().unwrap());
    }
}
