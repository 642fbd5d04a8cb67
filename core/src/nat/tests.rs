//! NAT discovery against the real `Server` with its discovery sockets, through a small NAT
//! model in between (the simulator has the full one; this keeps the core's tests
//! self-contained).

use crate::Endpoint as _;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::*;
use crate::{SecretKey, Server, ServerConfig, SocketId, SocketRequest};

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Alloc {
    Preserve,
    Step(u16),
    Random,
}

/// A one-host NAT: `mapping` decides what a mapping is keyed by, `filtering` what it lets in.
struct ToyNat {
    mapping: Dependence,
    filtering: Dependence,
    alloc: Alloc,
    public: IpAddr,
    next: u16,
    rng: u64,
    /// key (remote part per mapping behaviour) → external port.
    maps: BTreeMap<(IpAddr, u16), u16>,
    /// external port → remotes sent to.
    sent: BTreeMap<u16, Vec<SocketAddr>>,
}

impl ToyNat {
    fn new(mapping: Dependence, filtering: Dependence, alloc: Alloc) -> Self {
        Self {
            mapping,
            filtering,
            alloc,
            public: "198.51.100.9".parse().unwrap(),
            next: 20_000,
            rng: 0x9E37_79B9_7F4A_7C15,
            maps: BTreeMap::new(),
            sent: BTreeMap::new(),
        }
    }

    fn outbound(&mut self, local: SocketAddr, to: SocketAddr) -> SocketAddr {
        let key = match self.mapping {
            Dependence::EndpointIndependent => (IpAddr::from([0, 0, 0, 0]), 0),
            Dependence::AddressDependent => (to.ip(), 0),
            Dependence::AddressAndPortDependent => (to.ip(), to.port()),
        };
        let port = match self.maps.get(&key) {
            Some(p) => *p,
            None => {
                let p = match self.alloc {
                    Alloc::Preserve if !self.sent.contains_key(&local.port()) => local.port(),
                    Alloc::Preserve => self.sent.keys().max().unwrap() + 1,
                    Alloc::Step(d) => {
                        self.next += d;
                        self.next
                    }
                    Alloc::Random => {
                        self.rng ^= self.rng << 13;
                        self.rng ^= self.rng >> 7;
                        self.rng ^= self.rng << 17;
                        1024 + (self.rng % 60_000) as u16
                    }
                };
                self.maps.insert(key, p);
                p
            }
        };
        self.sent.entry(port).or_default().push(to);
        SocketAddr::new(self.public, port)
    }

    fn inbound(&self, from: SocketAddr, port: u16) -> bool {
        let Some(sent) = self.sent.get(&port) else {
            return false;
        };
        match self.filtering {
            Dependence::EndpointIndependent => true,
            Dependence::AddressDependent => sent.iter().any(|s| s.ip() == from.ip()),
            Dependence::AddressAndPortDependent => sent.contains(&from),
        }
    }
}

/// Runs discovery from 10.0.0.2:5000 behind `nat` against a server at 203.0.113.1:3478
/// with the alternate `alt` (None: no discovery sockets). Returns the result.
fn discover(mut nat: Option<ToyNat>, alt: Option<&str>) -> Result<NatBehavior, StunError> {
    let t0 = crate::tests::epoch();
    let primary = a("203.0.113.1:3478");
    let mut server = Server::new(
        Arc::new(ServerConfig::new(SecretKey::from_bytes([3; 32]))),
        [4; 32],
        t0,
        Duration::from_secs(1_700_000_000),
    )
    .unwrap();
    // The server's sockets: id → address.
    let mut sockets: BTreeMap<SocketId, SocketAddr> = BTreeMap::new();
    sockets.insert(SocketId::PRIMARY, primary);
    if let Some(alt) = alt {
        server.enable_nat_discovery(primary, a(alt)).unwrap();
        while let Some(r) = server.poll_socket_request() {
            let SocketRequest::Open { id, addr } = r else {
                panic!("{r:?}")
            };
            let addr = addr.unwrap();
            sockets.insert(id, addr);
            server.handle_socket_opened(t0, id, Some(addr));
        }
    }
    let local = a("10.0.0.2:5000");
    let mut d = NatDiscovery::new(t0, primary, Some(local), [9; 12]);
    let mut now = t0;
    let mut buf = vec![0u8; 1500];
    let mut sbuf = vec![0u8; 1500];
    for _ in 0..200 {
        while let Some(t) = d.poll_transmit(&mut buf) {
            let src = match &mut nat {
                Some(n) => n.outbound(local, t.dst),
                None => local,
            };
            let Some((&id, _)) = sockets.iter().find(|(_, addr)| **addr == t.dst) else {
                continue; // nothing listens there
            };
            server.handle_datagram_on(now, id, src, &buf[..t.len]);
            while let Some(r) = server.poll_transmit(now, &mut sbuf) {
                let from = sockets[&r.socket];
                let delivered = match &nat {
                    Some(n) => r.dst.ip() == n.public && n.inbound(from, r.dst.port()),
                    None => r.dst == local,
                };
                if delivered {
                    d.handle_datagram(now, from, &sbuf[..r.len]);
                }
            }
        }
        if let Some(result) = d.result() {
            return result;
        }
        now = d.poll_timeout().unwrap();
        d.handle_timeout(now);
    }
    panic!("discovery never finished");
}

use Dependence::{
    AddressAndPortDependent as Apd, AddressDependent as Ad, EndpointIndependent as Ei,
};

#[test]
fn every_mapping_and_filtering_is_classified_with_a_two_ip_server() {
    for mapping in [Ei, Ad, Apd] {
        for filtering in [Ei, Ad, Apd] {
            let nat = ToyNat::new(mapping, filtering, Alloc::Preserve);
            let b = discover(Some(nat), Some("203.0.113.2:3479")).unwrap();
            assert_eq!(b.mapping, Some(mapping), "{mapping:?}/{filtering:?}");
            assert_eq!(b.filtering, Some(filtering), "{mapping:?}/{filtering:?}");
            assert_eq!(b.reflexive, a("198.51.100.9:5000"));
            assert_eq!(b.port_preserved, Some(true));
            assert_eq!(b.alternate, Some(a("203.0.113.2:3479")));
        }
    }
}

#[test]
fn port_allocation_of_a_symmetric_nat_is_measured() {
    let seq = ToyNat::new(Apd, Apd, Alloc::Step(2));
    let b = discover(Some(seq), Some("203.0.113.2:3479")).unwrap();
    assert_eq!(b.allocation, Some(PortAllocation::Sequential { delta: 2 }));
    assert_eq!(b.last_port, 20_008, "M1..M4 were 20002..20008");
    assert_eq!(b.port_preserved, Some(false));

    let preserving = ToyNat::new(Apd, Apd, Alloc::Preserve);
    let b = discover(Some(preserving), Some("203.0.113.2:3479")).unwrap();
    assert_eq!(b.allocation, Some(PortAllocation::Sequential { delta: 1 }));

    let random = ToyNat::new(Apd, Apd, Alloc::Random);
    let b = discover(Some(random), Some("203.0.113.2:3479")).unwrap();
    assert_eq!(b.allocation, Some(PortAllocation::Random));

    let cone = ToyNat::new(Ei, Apd, Alloc::Random);
    let b = discover(Some(cone), Some("203.0.113.2:3479")).unwrap();
    assert_eq!(
        b.allocation, None,
        "only endpoint-dependent mappings allocate per flow"
    );
}

#[test]
fn a_one_ip_server_reports_only_what_it_can_tell() {
    // Port-dependence is measurable; address-dependence is not.
    let b = discover(
        Some(ToyNat::new(Ei, Apd, Alloc::Preserve)),
        Some("203.0.113.1:3479"),
    )
    .unwrap();
    assert_eq!(b.mapping, None, "EIM and ADM look alike with one IP");
    assert_eq!(b.filtering, Some(Apd));
    let b = discover(
        Some(ToyNat::new(Apd, Ei, Alloc::Preserve)),
        Some("203.0.113.1:3479"),
    )
    .unwrap();
    assert_eq!(b.mapping, Some(Apd));
    assert_eq!(b.filtering, None, "EIF and ADF look alike with one IP");
}

#[test]
fn a_server_without_an_alternate_gives_the_reflexive_address_only() {
    let b = discover(Some(ToyNat::new(Ei, Apd, Alloc::Preserve)), None).unwrap();
    assert_eq!(b.reflexive, a("198.51.100.9:5000"));
    assert_eq!((b.mapping, b.filtering, b.alternate), (None, None, None));
    let open = discover(None, Some("203.0.113.2:3479")).unwrap();
    assert_eq!(open.mapping, Some(Ei));
    assert_eq!(open.filtering, Some(Ei));
}
