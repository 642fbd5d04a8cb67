//! Small helpers shared by the report binaries and benches (`nat-matrix`, `timeline`,
//! `connection_setup`): names for NAT types, the classes their pairs are summarised by, when
//! a client met or went direct with a peer, a parallel job runner, and hand-written SVG.

use std::fmt::Write as _;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pierce_core::{ClientEvent, HostId, Path};

use crate::nat::{Filtering, Mapping, NatConfig, PortAllocation};
use crate::scenario::Edge;
use crate::sim::Sim;

/// When client `name` first heard (`MemberJoined`) that `other` shares a group with it.
pub fn joined_at(sim: &Sim, name: &str, other: HostId) -> Option<Duration> {
    sim.client_events(name).find_map(|(t, e)| match e {
        ClientEvent::MemberJoined { member, .. } if *member == other => Some(t),
        _ => None,
    })
}

/// When client `name` first reported a direct path to `other`.
pub fn direct_at(sim: &Sim, name: &str, other: HostId) -> Option<Duration> {
    sim.client_events(name).find_map(|(t, e)| match e {
        ClientEvent::PathChanged {
            peer,
            path: Path::Direct(_),
            ..
        } if *peer == other => Some(t),
        _ => None,
    })
}

/// Runs `f` over `jobs` on every core, returning results in job order (so output stays
/// deterministic whatever the scheduling).
///
/// # Panics
/// If `f` panics.
pub fn run_parallel<J: Sync, R: Send>(jobs: &[J], f: impl Fn(&J) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = f(job);
                    results.lock().expect("no panics while held")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no panics while held")
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

/// A NAT type of the matrix: its full name (as in [`NatConfig::all_types`], or `"open"`), a
/// short label for tables and axes, and the edge a host behind it sits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatType {
    /// Full name, e.g. `"eim-apdf-preserving"`.
    pub name: String,
    /// Short label, e.g. `"EP-p"` (see [`abbreviate`]).
    pub abbr: String,
    /// The edge.
    pub edge: Edge,
}

/// [`Edge::Open`] followed by every type of [`NatConfig::all_types`].
pub fn nat_types() -> Vec<NatType> {
    let mut out = vec![NatType {
        name: "open".to_owned(),
        abbr: "open".to_owned(),
        edge: Edge::Open,
    }];
    for (name, config) in NatConfig::all_types() {
        out.push(NatType {
            abbr: abbreviate(&config),
            name,
            edge: Edge::nat(config),
        });
    }
    out
}

/// A four-character label: mapping and filtering as `E` (endpoint-independent), `A`
/// (address-dependent) or `P` (address-and-port-dependent), then the port allocation as `p`
/// (preserving), `s` (sequential) or `r` (random). `EE-p` is a full cone, `EA-p` a restricted
/// cone, `EP-p` a port-restricted cone, `PP-r` a symmetric NAT.
pub fn abbreviate(c: &NatConfig) -> String {
    let m = match c.mapping {
        Mapping::EndpointIndependent => 'E',
        Mapping::AddressDependent => 'A',
        Mapping::AddressAndPortDependent => 'P',
    };
    let f = match c.filtering {
        Filtering::EndpointIndependent => 'E',
        Filtering::AddressDependent => 'A',
        Filtering::AddressAndPortDependent => 'P',
    };
    let a = match c.allocation {
        PortAllocation::Preserving => 'p',
        PortAllocation::Sequential => 's',
        PortAllocation::Random => 'r',
    };
    format!("{m}{f}-{a}")
}

/// The legend for [`abbreviate`]'s labels, one line.
pub const ABBREVIATIONS: &str = "labels: mapping+filtering (E endpoint-independent, A \
     address-dependent, P address-and-port-dependent) - allocation (p preserving, s sequential, \
     r random); EE-p full cone, EA-p restricted cone, EP-p port-restricted, PP-r symmetric";

/// Aliases understood by [`edge_by_name`] besides the full and abbreviated names.
pub const ALIASES: &[&str] = &[
    "open",
    "full-cone",
    "restricted",
    "port-restricted",
    "address-dependent",
    "symmetric",
    "symmetric-seq",
    "linux",
    "cgnat",
    "cgnat-symmetric",
];

/// The edge named `name`: a full name of [`NatConfig::all_types`] (`eim-apdf-preserving`), an
/// abbreviation (`EP-p`, see [`abbreviate`]), or an alias from [`ALIASES`] (`cgnat` is a
/// port-restricted home router behind a carrier-grade NAT; `linux` has the conntrack quirk).
pub fn edge_by_name(name: &str) -> Option<Edge> {
    if let Some(base) = name.strip_suffix("+pmp") {
        // The same edge whose own (innermost) router honours PCP / NAT-PMP.
        let mut nats = edge_by_name(base)?.nats().to_vec();
        let home = nats.first_mut()?;
        *home = home.clone().with_port_mapping(true);
        return Some(if nats.len() == 1 {
            Edge::nat(nats.remove(0))
        } else {
            Edge::chain(nats)
        });
    }
    let edge = match name {
        "open" => Edge::Open,
        "full-cone" => Edge::nat(NatConfig::full_cone()),
        "restricted" => Edge::nat(NatConfig::restricted_cone()),
        "port-restricted" => Edge::nat(NatConfig::port_restricted()),
        "address-dependent" => Edge::nat(NatConfig::address_dependent()),
        "symmetric" => Edge::nat(NatConfig::symmetric()),
        "symmetric-seq" => Edge::nat(NatConfig::symmetric_sequential()),
        "linux" => Edge::nat(NatConfig::linux()),
        "cgnat" => Edge::cgnat(NatConfig::port_restricted()),
        "cgnat-symmetric" => Edge::cgnat(NatConfig::symmetric()),
        _ => {
            return NatConfig::all_types()
                .into_iter()
                .find(|(n, c)| n == name || abbreviate(c) == name)
                .map(|(_, c)| Edge::nat(c));
        }
    };
    Some(edge)
}

/// The coarse class a pair summary groups an edge under: `open`, `full-cone` (EIM+EIF),
/// `restricted` (EIM+ADF), `port-restricted` (EIM+APDF), `addr-dep-map` (ADM, any filtering)
/// or `symmetric` (APDM, any filtering). Chains are classed by their combined profile.
pub fn class_of(edge: &Edge) -> &'static str {
    let Some(p) = edge.profile() else {
        return "open";
    };
    match (p.mapping, p.filtering) {
        (Mapping::EndpointIndependent, Filtering::EndpointIndependent) => "full-cone",
        (Mapping::EndpointIndependent, Filtering::AddressDependent) => "restricted",
        (Mapping::EndpointIndependent, Filtering::AddressAndPortDependent) => "port-restricted",
        (Mapping::AddressDependent, _) => "addr-dep-map",
        (Mapping::AddressAndPortDependent, _) => "symmetric",
    }
}

/// The classes of [`class_of`], easiest first.
pub const CLASSES: &[&str] = &[
    "open",
    "full-cone",
    "restricted",
    "port-restricted",
    "addr-dep-map",
    "symmetric",
];

/// Escapes text for SVG/XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A colour for a share in `[0, 1]`: red (0) through amber (0.5) to green (1), as `#rrggbb`.
pub fn share_colour(share: f64) -> String {
    let s = share.clamp(0.0, 1.0);
    // Two linear segments between three stops.
    let stops = [(0xd7, 0x30, 0x27), (0xfe, 0xe0, 0x8b), (0x1a, 0x98, 0x50)];
    let (lo, hi, t) = if s < 0.5 {
        (stops[0], stops[1], s * 2.0)
    } else {
        (stops[1], stops[2], (s - 0.5) * 2.0)
    };
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
    let mut out = String::from("#");
    for (a, b) in [(lo.0, hi.0), (lo.1, hi.1), (lo.2, hi.2)] {
        let _ = write!(out, "{:02x}", mix(a, b));
    }
    out
}

/// The median of sorted values (the upper one of an even count), if any.
pub fn median<T: Copy>(sorted: &[T]) -> Option<T> {
    sorted.get(sorted.len() / 2).copied()
}

/// The `p`-th percentile (0..=100) of sorted values, nearest rank.
pub fn percentile<T: Copy>(sorted: &[T], p: usize) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted.get(i.min(sorted.len() - 1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_unique_label_that_parses_back() {
        let types = nat_types();
        assert_eq!(types.len(), 28);
        for t in &types {
            assert_eq!(edge_by_name(&t.abbr).as_ref(), Some(&t.edge), "{}", t.abbr);
            assert_eq!(edge_by_name(&t.name).as_ref(), Some(&t.edge), "{}", t.name);
            assert!(
                types.iter().filter(|u| u.abbr == t.abbr).count() == 1,
                "{}",
                t.abbr
            );
        }
        for a in ALIASES {
            assert!(edge_by_name(a).is_some(), "{a}");
        }
        assert_eq!(abbreviate(&NatConfig::port_restricted()), "EP-p");
        assert_eq!(abbreviate(&NatConfig::symmetric()), "PP-r");
        assert_eq!(
            class_of(&Edge::cgnat(NatConfig::full_cone())),
            "port-restricted"
        );
    }

    #[test]
    fn colours_and_percentiles() {
        assert_eq!(share_colour(0.0), "#d73027");
        assert_eq!(share_colour(1.0), "#1a9850");
        assert_eq!(xml_escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(median(&v), Some(6));
        assert_eq!(percentile(&v, 90), Some(9));
        assert_eq!(percentile(&v, 100), Some(10));
        assert_eq!(percentile::<u32>(&[], 50), None);
    }
}
