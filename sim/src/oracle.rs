//! The reachability oracle: can two edges ever get a direct UDP path, or must they relay?
//!
//! Scenario tests assert the path they expect from this table instead of "it connected
//! somehow" (firezone's `sim_net.rs` does the same; the reasoning is Tailscale's "How NAT
//! traversal works").
//!
//! # Assumptions
//!
//! - Both peers learn each other's server-reflexive address (what the server sees) and punch
//!   **simultaneously**, coordinated by the server, repeating for a while.
//! - A NAT has one public IP for all its mappings ("paired" pooling, RFC 4787 REQ-2).
//! - An open host accepts anything.
//! - The Linux conntrack quirk ([`crate::NatConfig::conntrack_quirk`]) is ignored: it only
//!   bites when a peer's punch reaches the NAT before the local punch leaves it, which
//!   coordinated punching avoids.
//! - Two hosts behind the same NAT (hairpinning, LAN paths) are out of scope.
//!
//! # The rules
//!
//! 1. If either side is open, or EIM + EIF ("full cone"), the other side's first packet
//!    gets through and the reply follows it back: **direct**.
//!    A NAT that honours port mapping ([`crate::NatConfig::port_mapping`]) counts as a full
//!    cone: the client asks it for a forward and offers the mapped address.
//! 2. If both sides have endpoint-independent mapping, each side's reflexive address is the
//!    address its punches come from, so simultaneous punches open both filters, whatever the
//!    filtering: **direct**.
//! 3. EIM (the "easy" side) vs endpoint-dependent mapping (the "hard" side): the hard side's
//!    punches leave from a new, unknown port.
//!    - If the easy side filters by address only (ADF), its punches to the hard side's IP open
//!      the filter for every port of that IP: **direct**.
//!    - If it filters by address and port (APDF), the easy side must guess the port: by
//!      **port prediction** when the hard side allocates predictably (sequential, or
//!      preserving, which falls back to the next free port), or by **birthday probing**
//!      (the hard side opens ~256 mappings, the easy side probes ~256 random ports, and a
//!      collision is near certain). Direct only if [`Traversal`] allows the technique.
//! 4. Both hard: only if both allocate sequentially and [`Traversal::both_hard_prediction`]
//!    is on (lockstep sweeps); otherwise **relay**.
//! 5. IPv6 ([`direct_path_possible_stacks`]): if both hosts have a global IPv6 address, each
//!    learns the other's as a candidate and punches it. No address translation, and a
//!    stateful IPv6 firewall filters by address and port like a port-restricted NAT whose
//!    mapping is the identity, so rule 2 applies: **direct**, whatever their IPv4 NATs. Else
//!    their IPv4 edges decide (an IPv6-only host behind NAT64 by the gateway's NAT); with no
//!    family in common: **relay**.

use crate::nat::{Filtering, Mapping, NatConfig, PortAllocation};
use crate::scenario::{Edge, Stack};

/// The traversal techniques the peers use beyond simultaneous punching.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traversal {
    /// Guess the hard side's next port from its recent allocations (sequential NATs), when
    /// the other side is easy.
    pub port_prediction: bool,
    /// Birthday-paradox probing against a hard NAT with random ports.
    pub birthday: bool,
    /// Predict on both sides at once when both are hard and predictable (lockstep port
    /// sweeps; fragile, since every probe to a new port allocates a new port).
    pub both_hard_prediction: bool,
}

impl Traversal {
    /// Simultaneous punching only.
    pub const BASIC: Self = Self {
        port_prediction: false,
        birthday: false,
        both_hard_prediction: false,
    };
    /// What Pierce does: punching, plus port prediction and birthday probing between an easy
    /// and a hard side, and lockstep sweeps between two hard sides that both allocate
    /// predictably (`core/src/client/path.rs`).
    pub const PIERCE: Self = Self {
        port_prediction: true,
        birthday: true,
        both_hard_prediction: true,
    };
    /// Every technique, including prediction between two hard NATs.
    pub const FULL: Self = Self {
        port_prediction: true,
        birthday: true,
        both_hard_prediction: true,
    };
}

/// The behaviours of an edge's NAT (or of a chain of NATs, combined) that decide
/// reachability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatProfile {
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// Port allocation.
    pub allocation: PortAllocation,
}

impl NatProfile {
    /// The profile of one NAT.
    pub fn of(c: &NatConfig) -> Self {
        if c.port_mapping {
            // A host that asks gets a static forward: reachable by anyone at one address, as
            // behind a full cone (Pierce clients behind such a NAT always ask).
            return Self {
                mapping: Mapping::EndpointIndependent,
                filtering: Filtering::EndpointIndependent,
                allocation: PortAllocation::Preserving,
            };
        }
        Self {
            mapping: c.mapping,
            filtering: c.filtering,
            allocation: c.allocation,
        }
    }

    /// The profile of NATs in series: the most dependent mapping, the strictest filtering,
    /// and the least predictable allocation of any of them.
    pub fn chain<'a>(nats: impl IntoIterator<Item = &'a NatConfig>) -> Option<Self> {
        nats.into_iter().map(Self::of).reduce(|a, b| Self {
            mapping: a.mapping.max(b.mapping),
            filtering: a.filtering.max(b.filtering),
            allocation: match (a.allocation, b.allocation) {
                (PortAllocation::Random, _) | (_, PortAllocation::Random) => PortAllocation::Random,
                (PortAllocation::Sequential, _) | (_, PortAllocation::Sequential) => {
                    PortAllocation::Sequential
                }
                _ => PortAllocation::Preserving,
            },
        })
    }

    fn full_cone(&self) -> bool {
        self.mapping == Mapping::EndpointIndependent
            && self.filtering == Filtering::EndpointIndependent
    }

    fn easy(&self) -> bool {
        self.mapping == Mapping::EndpointIndependent
    }

    fn predictable(&self) -> bool {
        self.allocation != PortAllocation::Random
    }

    /// Every new mapping a step above the last: what lockstep sweeps between two hard NATs
    /// need. (A hard NAT that preserves ports keeps the first and then counts up from the
    /// local port, which discovery may not tell apart, and which mappings of other local
    /// ports interleave with.)
    fn sequential(&self) -> bool {
        self.allocation == PortAllocation::Sequential
    }
}

/// Whether `a` and `b` can get a direct path with simultaneous punching alone
/// ([`Traversal::BASIC`]). See the module docs for the rules.
pub fn direct_path_possible(a: &Edge, b: &Edge) -> bool {
    direct_path_possible_with(a, b, Traversal::BASIC)
}

/// Whether `a` and `b` can get a direct path with the given traversal techniques.
pub fn direct_path_possible_with(a: &Edge, b: &Edge, t: Traversal) -> bool {
    let (Some(a), Some(b)) = (a.profile(), b.profile()) else {
        return true;
    };
    if a.full_cone() || b.full_cone() {
        return true;
    }
    match (a.easy(), b.easy()) {
        (true, true) => true,
        (true, false) => easy_vs_hard(a, b, t),
        (false, true) => easy_vs_hard(b, a, t),
        (false, false) => t.both_hard_prediction && a.sequential() && b.sequential(),
    }
}

/// Whether two clients, each an IPv4 edge and a [`Stack`], can get a direct path with the
/// given techniques: rule 5 of the module docs, then the IPv4 rules.
pub fn direct_path_possible_stacks(a: (&Edge, &Stack), b: (&Edge, &Stack), t: Traversal) -> bool {
    if a.1.has_ipv6() && b.1.has_ipv6() {
        return true;
    }
    match (a.1.ipv4_edge(a.0), b.1.ipv4_edge(b.0)) {
        (Some(x), Some(y)) => direct_path_possible_with(&x, &y, t),
        _ => false,
    }
}

fn easy_vs_hard(easy: NatProfile, hard: NatProfile, t: Traversal) -> bool {
    easy.filtering != Filtering::AddressAndPortDependent
        || (t.port_prediction && hard.predictable())
        || t.birthday
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges() -> Vec<(&'static str, Edge)> {
        vec![
            ("open", Edge::Open),
            ("full", Edge::nat(NatConfig::full_cone())),
            ("restricted", Edge::nat(NatConfig::restricted_cone())),
            ("port-restricted", Edge::nat(NatConfig::port_restricted())),
            (
                "symmetric-seq",
                Edge::nat(NatConfig::symmetric_sequential()),
            ),
            ("symmetric", Edge::nat(NatConfig::symmetric())),
        ]
    }

    /// Rows and columns in `edges()` order; 1 = direct, 0 = relay.
    fn check(t: Traversal, table: [[u8; 6]; 6]) {
        let e = edges();
        for (i, (an, a)) in e.iter().enumerate() {
            for (j, (bn, b)) in e.iter().enumerate() {
                let got = direct_path_possible_with(a, b, t);
                assert_eq!(got, table[i][j] == 1, "{an} vs {bn} with {t:?}");
                assert_eq!(
                    got,
                    direct_path_possible_with(b, a, t),
                    "symmetry {an} {bn}"
                );
            }
        }
    }

    #[test]
    fn oracle_table_with_simultaneous_punching_only() {
        check(
            Traversal::BASIC,
            [
                // open full restr port-r sym-seq sym
                [1, 1, 1, 1, 1, 1], // open
                [1, 1, 1, 1, 1, 1], // full cone
                [1, 1, 1, 1, 1, 1], // restricted cone (ADF opens for the hard side's IP)
                [1, 1, 1, 1, 0, 0], // port-restricted
                [1, 1, 1, 0, 0, 0], // symmetric, sequential
                [1, 1, 1, 0, 0, 0], // symmetric, random
            ],
        );
    }

    #[test]
    fn oracle_table_with_port_prediction() {
        check(
            Traversal {
                port_prediction: true,
                birthday: false,
                both_hard_prediction: true,
            },
            [
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 0],
                [1, 1, 1, 1, 1, 0],
                [1, 1, 1, 0, 0, 0],
            ],
        );
    }

    #[test]
    fn oracle_table_with_prediction_and_birthday_probing() {
        check(
            Traversal::FULL,
            [
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 0],
                [1, 1, 1, 1, 0, 0],
            ],
        );
    }

    #[test]
    fn oracle_table_for_what_pierce_does() {
        check(
            Traversal::PIERCE,
            [
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 1],
                [1, 1, 1, 1, 1, 0],
                [1, 1, 1, 1, 0, 0],
            ],
        );
    }

    #[test]
    fn hosts_that_both_have_ipv6_go_direct_whatever_their_ipv4_nats() {
        let sym = Edge::nat(NatConfig::symmetric());
        let cg = Edge::cgnat(NatConfig::symmetric());
        let dual = Stack::dual_firewalled();
        let v4 = Stack::V4;
        let t = Traversal::PIERCE;
        assert!(!direct_path_possible_with(&sym, &cg, t));
        assert!(direct_path_possible_stacks((&sym, &dual), (&cg, &dual), t));
        // One end without IPv6: the IPv4 edges decide.
        assert!(!direct_path_possible_stacks((&sym, &dual), (&cg, &v4), t));
        let pr = Edge::nat(NatConfig::port_restricted());
        assert!(direct_path_possible_stacks((&sym, &dual), (&pr, &v4), t));
        // IPv6-only: through NAT64 (an easy NAT), or not at all without it.
        let nat64 = Stack::V6Only {
            firewall: None,
            nat64: Some(crate::Nat64Config::new()),
        };
        let v6 = Stack::V6Only {
            firewall: None,
            nat64: None,
        };
        assert!(direct_path_possible_stacks(
            (&Edge::Open, &nat64),
            (&pr, &v4),
            t
        ));
        assert!(!direct_path_possible_stacks(
            (&Edge::Open, &v6),
            (&pr, &v4),
            t
        ));
        assert!(direct_path_possible_stacks(
            (&Edge::Open, &v6),
            (&sym, &dual),
            t
        ));
    }

    #[test]
    fn a_chain_is_as_hard_as_its_hardest_nat() {
        let cgnat_home = Edge::chain([NatConfig::full_cone(), NatConfig::cgnat()]);
        let p = cgnat_home.profile().unwrap();
        assert_eq!(p.mapping, Mapping::EndpointIndependent);
        assert_eq!(p.filtering, Filtering::AddressAndPortDependent);
        assert_eq!(p.allocation, PortAllocation::Random);
        let sym = Edge::nat(NatConfig::symmetric());
        assert!(!direct_path_possible(&cgnat_home, &sym));
        assert!(direct_path_possible_with(
            &cgnat_home,
            &sym,
            Traversal::FULL
        ));
        let behind_sym = Edge::chain([NatConfig::full_cone(), NatConfig::symmetric()]);
        assert!(!direct_path_possible(&behind_sym, &sym));
    }
}
