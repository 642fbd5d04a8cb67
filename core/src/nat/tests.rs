//! NAT discovery against the real `Server` with its discovery sockets, through a small NAT
//! model in between (the simulator has the full one; this keeps the core's tests
//! self-contained).

use crate::Endpoint as _;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::*;
use crate::wire::stun::StunMessage;
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

/// Another vendor's server at 203.0.113.1:3478 (alternate IP .2, port 3479), no NAT in
/// between: `answer` turns (socket asked, request) into the answer's (source, bytes), or
/// nothing. Runs discovery from 10.0.0.2:5000.
fn discover_with(
    mut answer: impl FnMut(SocketAddr, &StunMessage<'_>) -> Option<(SocketAddr, Vec<u8>)>,
) -> Result<NatBehavior, StunError> {
    let t0 = crate::tests::epoch();
    let local = a("10.0.0.2:5000");
    let mut d = NatDiscovery::new(t0, a("203.0.113.1:3478"), Some(local), [9; 12]);
    let mut now = t0;
    let mut buf = vec![0u8; 1500];
    for _ in 0..200 {
        while let Some(t) = d.poll_transmit(&mut buf) {
            let m = StunMessage::decode(&buf[..t.len]).unwrap();
            if let Some((from, bytes)) = answer(t.dst, &m) {
                d.handle_datagram(now, from, &bytes);
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

/// Where an RFC 3489 server with sockets on .1/.2 and 3478/3479 answers from.
fn changed(to: SocketAddr, flags: u32) -> SocketAddr {
    let flip_ip = |ip: IpAddr| {
        if ip == a("203.0.113.1:0").ip() {
            a("203.0.113.2:0").ip()
        } else {
            a("203.0.113.1:0").ip()
        }
    };
    let ip = if flags & CHANGE_IP != 0 {
        flip_ip(to.ip())
    } else {
        to.ip()
    };
    let port = if flags & CHANGE_PORT != 0 {
        3478 + 3479 - to.port()
    } else {
        to.port()
    };
    SocketAddr::new(ip, port)
}

/// A Binding success with MAPPED-ADDRESS and `alt` as CHANGED-ADDRESS (type 0x0005), like
/// Vovida's `stund`: no XOR-MAPPED-ADDRESS, no OTHER-ADDRESS.
fn stund_answer(txid: &[u8; 12], mapped: SocketAddr, alt: SocketAddr) -> Vec<u8> {
    let mut m = vec![0x01, 0x01, 0, 24, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(txid);
    for (t, addr) in [(0x0001u16, mapped), (0x0005, alt)] {
        let IpAddr::V4(ip) = addr.ip() else { panic!() };
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&[0, 8, 0, 1]);
        m.extend_from_slice(&addr.port().to_be_bytes());
        m.extend_from_slice(&ip.octets());
    }
    m
}

#[test]
fn an_rfc3489_servers_changed_address_stands_in_for_other_address() {
    let me = a("10.0.0.2:5000");
    let b = discover_with(|to, m| {
        let from = changed(to, m.change_request().unwrap());
        let alt = changed(from, CHANGE_IP | CHANGE_PORT);
        Some((from, stund_answer(&m.transaction_id, me, alt)))
    })
    .unwrap();
    assert_eq!(b.alternate, Some(a("203.0.113.2:3479")));
    assert_eq!((b.mapping, b.filtering), (Some(Ei), Some(Ei)));
}

#[test]
fn rfc5780_6_a_420_to_a_change_is_not_read_as_filtering() {
    use crate::wire::stun::{UnknownAttributes, encode_unknown_attribute_error};
    let me = a("10.0.0.2:5000");
    let refuse = |m: &StunMessage<'_>| {
        let mut buf = [0u8; 128];
        let unknown = UnknownAttributes::one(0x0003);
        let n = encode_unknown_attribute_error(&mut buf, &m.transaction_id, None, &unknown, None);
        buf[..n.unwrap()].to_vec()
    };
    // A server that refuses every change of IP: filtering is unknown, mapping measured.
    let b = discover_with(|to, m| {
        let flags = m.change_request().unwrap();
        if flags & CHANGE_IP != 0 {
            return Some((to, refuse(m)));
        }
        let from = changed(to, flags);
        let alt = changed(from, CHANGE_IP | CHANGE_PORT);
        Some((from, stund_answer(&m.transaction_id, me, alt)))
    })
    .unwrap();
    assert_eq!(b.filtering, None, "a refusal is no answer about the NAT");
    assert_eq!(b.mapping, Some(Ei));
    // A server that knows no CHANGE-REQUEST at all: asked again without one, the reflexive
    // address alone.
    let mut plain_asked = false;
    let b = discover_with(|to, m| {
        if m.attrs().any(|(t, _)| t == 0x0003) {
            return Some((to, refuse(m)));
        }
        plain_asked = true;
        let mut buf = [0u8; 128];
        let n = crate::wire::stun::encode_binding_response(&mut buf, &m.transaction_id, me);
        Some((to, buf[..n.unwrap()].to_vec()))
    })
    .unwrap();
    assert!(plain_asked);
    assert_eq!(b.reflexive, me);
    assert_eq!((b.mapping, b.filtering, b.alternate), (None, None, None));
}

#[test]
fn a_binding_error_answer_ends_the_transaction_with_its_code() {
    use crate::wire::stun::{UnknownAttributes, encode_unknown_attribute_error};
    let t0 = crate::tests::epoch();
    let server = a("203.0.113.1:3478");
    let mut b = StunBinding::new(t0, server, [1; 12], Duration::from_millis(100), 3);
    let mut buf = [0u8; 128];
    let unknown = UnknownAttributes::one(0x0003);
    let n = encode_unknown_attribute_error(&mut buf, &[2; 12], None, &unknown, None).unwrap();
    assert!(
        !b.handle_datagram(server, &buf[..n]),
        "another transaction's"
    );
    let n = encode_unknown_attribute_error(&mut buf, &[1; 12], None, &unknown, None).unwrap();
    assert!(b.handle_datagram(server, &buf[..n]));
    assert_eq!(b.result(), Some(Err(StunError::Rejected { code: 420 })));
}

/// Runs discovery against a server that answers like `stund` only requests sent at or after
/// `cold` (a cold path: the first packets wait on neighbour discovery or a radio waking up,
/// and are lost); returns the result and when it came.
fn discover_over_a_cold_path(cold: Duration) -> (Result<NatBehavior, StunError>, Duration) {
    let t0 = crate::tests::epoch();
    let me = a("10.0.0.2:5000");
    let mut d = NatDiscovery::new(t0, a("203.0.113.1:3478"), Some(me), [7; 12]);
    let mut now = t0;
    let mut buf = vec![0u8; 1500];
    loop {
        while let Some(t) = d.poll_transmit(&mut buf) {
            let m = StunMessage::decode(&buf[..t.len]).unwrap();
            if now - t0 >= cold {
                let from = changed(t.dst, m.change_request().unwrap_or(0));
                let alt = changed(from, CHANGE_IP | CHANGE_PORT);
                d.handle_datagram(now, from, &stund_answer(&m.transaction_id, me, alt));
            }
        }
        if let Some(result) = d.result() {
            return (result, now - t0);
        }
        now = d.poll_timeout().unwrap();
        d.handle_timeout(now);
    }
}

#[test]
fn the_first_test_outlasts_a_cold_path_and_only_then_calls_the_server_silent() {
    // Answered from 2 s on: past the other tests' 1.05 s budget, within the first test's.
    let (result, _) = discover_over_a_cold_path(Duration::from_secs(2));
    let b = result.expect("the first test waited for the path");
    assert_eq!(b.reflexive, a("10.0.0.2:5000"));
    assert_eq!((b.mapping, b.filtering), (Some(Ei), Some(Ei)));
    // Never answered: silent after 150 ms x (1 + 2 + 4 + 8 + 16).
    let (result, at) = discover_over_a_cold_path(Duration::from_secs(3600));
    assert_eq!(result, Err(StunError::TimedOut));
    assert_eq!(at, DISCOVERY_RTO * 31);
}

/// Behind NAT64 the server is asked at its address synthesised into the prefix, and it names
/// its alternate in IPv4: discovery asks that one through the prefix too, and classifies.
#[test]
fn behind_nat64_an_ipv4_other_address_is_asked_through_the_prefix() {
    let prefix = crate::WELL_KNOWN_NAT64_PREFIX;
    let synth = |x| crate::synthesize_nat64(prefix, x);
    let embedded = |x: SocketAddr| match x.ip() {
        IpAddr::V6(ip) => {
            let o = ip.octets();
            SocketAddr::from(([o[12], o[13], o[14], o[15]], x.port()))
        }
        IpAddr::V4(_) => x,
    };
    let t0 = crate::tests::epoch();
    let local = a("[2001:db8::2]:5000");
    let server = synth(a("203.0.113.1:3478"));
    let mapped = a("198.51.100.9:5000"); // the gateway's, endpoint-independent, no filter
    let run = |nat64| {
        let mut d = NatDiscovery::new(t0, server, Some(local), [9; 12]).with_nat64(nat64);
        let mut now = t0;
        let mut buf = vec![0u8; 1500];
        for _ in 0..200 {
            while let Some(t) = d.poll_transmit(&mut buf) {
                let m = StunMessage::decode(&buf[..t.len]).unwrap();
                let from = changed(embedded(t.dst), m.change_request().unwrap());
                let alt = changed(from, CHANGE_IP | CHANGE_PORT);
                d.handle_datagram(
                    now,
                    synth(from),
                    &stund_answer(&m.transaction_id, mapped, alt),
                );
            }
            if let Some(result) = d.result() {
                return result.unwrap();
            }
            now = d.poll_timeout().unwrap();
            d.handle_timeout(now);
        }
        panic!("discovery never finished");
    };
    let b = run(Some(prefix));
    assert_eq!(b.alternate, Some(synth(a("203.0.113.2:3479"))));
    assert_eq!((b.mapping, b.filtering), (Some(Ei), Some(Ei)));
    // Without the prefix the IPv4 alternate is of no use to an IPv6 socket.
    let b = run(None);
    assert_eq!((b.alternate, b.mapping, b.filtering), (None, None, None));
}
