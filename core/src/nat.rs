//! NAT behaviour discovery (RFC 5780, with RFC 4787's terms): ask an RFC 5780 STUN server
//! (a Pierce server with an alternate address, or any standard one) from one socket how this
//! host's NAT maps and filters, whether it keeps the local port, and how it allocates ports
//! for new mappings. Sans-IO: [`NatDiscovery`] is a sequence of [`StunBinding`]s.
//!
//! The tests, all from one local socket, with the server at IP1:P1 and its alternate at
//! IP2:P2 (learned from the first answer's OTHER-ADDRESS, else its RFC 3489 CHANGED-ADDRESS,
//! else a one-IP Pierce server's alternate port):
//!
//! 1. Binding to IP1:P1 → mapped address M1.
//! 2. Filtering first, before this socket has sent anything to another server address (which
//!    would open the NAT's filter for it): ask IP1:P1, at the same time, to answer from
//!    IP2:P2 (CHANGE-REQUEST IP and port) and from IP1:P2 (port only). An answer to the first
//!    means endpoint-independent filtering; else an answer to the second means
//!    address-dependent filtering; neither, address-and-port-dependent. Running both at once
//!    makes a strict NAT cost one timeout instead of two.
//! 3. Mapping: Binding to IP2:P1 → M2. M2 = M1 means endpoint-independent mapping; else
//!    Binding to IP2:P2 → M3: M3 = M2 means address-dependent, else address-and-port-
//!    dependent, and a Binding to IP1:P2 → M4 gives a second port step: two equal small steps
//!    (M3−M2 = M4−M3) mean sequential allocation (ports can be predicted), anything else
//!    random.
//!
//! With a one-IP server (IP1 = IP2) only port changes exist: filtering that lets an answer
//! from the other port through is "not port-dependent" and mapping that keeps the port is
//! "not port-dependent", which are reported as unknown (`None`) rather than guessed.
//! A lost answer reads as "filtered": each test is retried [`DISCOVERY_TRIES`] times first.
//! The first test's silence means no server (or no path), not filtering, and a first packet
//! can wait on a cold path (IPv6 neighbour discovery, a phone's radio waking up): it is
//! retried [`FIRST_TEST_EXTRA_TRIES`] times more (4.65 s at the default timing).
//! An error answer (420: the server cannot make that change, RFC 5780 §6) is no answer about
//! the NAT: what that test decides is unknown. A server that refuses the first test's
//! CHANGE-REQUEST (no RFC 5780 support, RFC 8489 §6.3.1) is asked again without one, for the
//! reflexive address alone.

use std::fmt;
use std::net::SocketAddr;

use crate::Transmit;
use crate::stun::{StunBinding, StunError};
use crate::time::{Duration, Instant};
use crate::wire::control::NatInfo;
use crate::wire::stun::{CHANGE_IP, CHANGE_PORT, StunCredential};

/// First retransmission of each discovery request after this long, doubling.
pub const DISCOVERY_RTO: Duration = Duration::from_millis(150);
/// Requests per test; a test with no answer after them (1.05 s) counts as filtered.
/// Discovery behind a NAT that filters by address and port takes about that plus four RTTs.
pub const DISCOVERY_TRIES: u32 = 3;
/// Requests the first test (reflexive address, server reachable at all) gets beyond the
/// others' `tries`.
pub const FIRST_TEST_EXTRA_TRIES: u32 = 2;
/// Largest port step between consecutive mappings still called sequential.
pub const MAX_SEQUENTIAL_STEP: i32 = 16;

/// How a NAT's mapping or filtering depends on the remote endpoint (RFC 4787 §4.1, §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependence {
    /// The same for every remote endpoint ("cone").
    EndpointIndependent,
    /// Depends on the remote IP.
    AddressDependent,
    /// Depends on the remote IP and port ("symmetric" for mapping).
    AddressAndPortDependent,
}

impl Dependence {
    /// The RFC 4787 name: `endpoint-independent`, `address-dependent`,
    /// `address-and-port-dependent`.
    pub fn name(self) -> &'static str {
        match self {
            Self::EndpointIndependent => "endpoint-independent",
            Self::AddressDependent => "address-dependent",
            Self::AddressAndPortDependent => "address-and-port-dependent",
        }
    }

    pub(crate) fn to_wire(v: Option<Self>) -> u8 {
        match v {
            None => 0,
            Some(Self::EndpointIndependent) => 1,
            Some(Self::AddressDependent) => 2,
            Some(Self::AddressAndPortDependent) => 3,
        }
    }

    pub(crate) fn from_wire(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::EndpointIndependent),
            2 => Some(Self::AddressDependent),
            3 => Some(Self::AddressAndPortDependent),
            _ => None,
        }
    }
}

impl PortAllocation {
    fn to_wire(v: Option<Self>) -> (u8, i16) {
        match v {
            None => (0, 0),
            Some(Self::Sequential { delta }) => (1, delta),
            Some(Self::Random) => (2, 0),
        }
    }

    fn from_wire(allocation: u8, delta: i16) -> Option<Self> {
        match allocation {
            1 => Some(Self::Sequential { delta }),
            2 => Some(Self::Random),
            _ => None,
        }
    }
}

/// What the server relays of a client's NAT to its peers: a few numbers on the wire.
impl From<&NatBehavior> for NatInfo {
    fn from(b: &NatBehavior) -> Self {
        let (allocation, delta) = PortAllocation::to_wire(b.allocation);
        Self {
            mapping: Dependence::to_wire(b.mapping),
            filtering: Dependence::to_wire(b.filtering),
            allocation,
            delta,
            last_port: b.last_port,
        }
    }
}

/// A peer's NAT as the server relayed it ([`NatInfo`]), read back as behaviours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reported {
    pub(crate) mapping: Option<Dependence>,
    pub(crate) filtering: Option<Dependence>,
    pub(crate) allocation: Option<PortAllocation>,
    /// The newest mapping's port seen in discovery: where predictions start.
    pub(crate) last_port: u16,
}

impl From<&NatInfo> for Reported {
    fn from(i: &NatInfo) -> Self {
        Self {
            mapping: Dependence::from_wire(i.mapping),
            filtering: Dependence::from_wire(i.filtering),
            allocation: PortAllocation::from_wire(i.allocation, i.delta),
            last_port: i.last_port,
        }
    }
}

impl fmt::Display for Dependence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a NAT with endpoint-dependent mapping picks the port of each new mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortAllocation {
    /// Each new mapping's port is the previous one plus `delta` (also what a port-preserving
    /// NAT looks like once the preserved port is taken): predictable.
    Sequential {
        /// The step between consecutive mappings.
        delta: i16,
    },
    /// No pattern: birthday probing is the way through.
    Random,
}

/// What [`NatDiscovery`] found. `None` fields were not measurable, never guessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatBehavior {
    /// This socket's address as the server sees it (M1).
    pub reflexive: SocketAddr,
    /// Mapping behaviour.
    pub mapping: Option<Dependence>,
    /// Filtering behaviour.
    pub filtering: Option<Dependence>,
    /// The NAT kept the local port (known only if the local address was given).
    pub port_preserved: Option<bool>,
    /// Port allocation of new mappings (measured for endpoint-dependent mappings only).
    pub allocation: Option<PortAllocation>,
    /// The newest mapping's external port seen: where predictions start.
    pub last_port: u16,
    /// The server's alternate address (OTHER-ADDRESS), if it has one.
    pub alternate: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    First,
    FilterBoth,
    FilterPort,
    Map2,
    Map3,
    Map4,
}

/// The RFC 5780 test sequence against one server (see the module docs).
#[derive(Debug)]
pub struct NatDiscovery {
    server: SocketAddr,
    local: Option<SocketAddr>,
    step: Step,
    txn: StunBinding,
    /// The port-only filtering test, run beside the IP-and-port one (both ask the primary
    /// address, so neither opens the NAT's filter for the other; together a strict NAT costs
    /// one timeout instead of two).
    port_txn: Option<StunBinding>,
    rto: Duration,
    tries: u32,
    /// Mapped addresses M1..M4 as far as known.
    mapped: [Option<SocketAddr>; 4],
    other: Option<SocketAddr>,
    filtering: Option<Dependence>,
    result: Option<Result<NatBehavior, StunError>>,
    /// Signs every request (see [`StunBinding::with_credential`]).
    credential: Option<StunCredential>,
    /// The first test was refused with its CHANGE-REQUEST and is being asked again without.
    first_plain: bool,
    /// Behind NAT64: the prefix an IPv4 OTHER-ADDRESS is reached through.
    nat64: Option<std::net::Ipv6Addr>,
}

/// The first test's request budget, for `tries` per other test.
fn first_tries(tries: u32) -> u32 {
    tries.saturating_add(FIRST_TEST_EXTRA_TRIES)
}

impl NatDiscovery {
    /// Starts discovery against `server` from the socket whose local address is `local`
    /// (for port preservation; `None` if unknown). `txid` seeds the transaction ids and must
    /// be random.
    pub fn new(
        now: Instant,
        server: SocketAddr,
        local: Option<SocketAddr>,
        txid: [u8; 12],
    ) -> Self {
        Self::with_timing(now, server, local, txid, DISCOVERY_RTO, DISCOVERY_TRIES)
    }

    /// Signs every request with `credential` and takes only signed answers (see
    /// [`StunBinding::with_credential`]): a Pierce client discovering against its own server
    /// passes its session's, so its requests spend its session's STUN budget, not its IP's.
    #[must_use]
    pub fn with_credential(mut self, credential: Option<StunCredential>) -> Self {
        self.credential = credential;
        self.txn = self.txn.with_credential(credential);
        self
    }

    /// As [`NatDiscovery::new`], with the retransmission timing of each test.
    pub fn with_timing(
        now: Instant,
        server: SocketAddr,
        local: Option<SocketAddr>,
        txid: [u8; 12],
        rto: Duration,
        tries: u32,
    ) -> Self {
        Self {
            server,
            local,
            step: Step::First,
            txn: StunBinding::new(now, server, txid, rto, first_tries(tries))
                .with_change_request(0),
            port_txn: None,
            rto,
            tries,
            mapped: [None; 4],
            other: None,
            filtering: None,
            result: None,
            credential: None,
            first_plain: false,
            nat64: None,
        }
    }

    /// Behind NAT64 (the server is asked at an address synthesised into `prefix`): the
    /// server's IPv4 OTHER-ADDRESS is asked at its synthesised form too
    /// ([`crate::synthesize_nat64`]), as every other IPv4 address a client behind NAT64 is
    /// given ([`crate::ClientConfig::nat64_prefix`]).
    #[must_use]
    pub fn with_nat64(mut self, prefix: Option<std::net::Ipv6Addr>) -> Self {
        self.nat64 = prefix;
        self
    }

    /// The server asked.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The outcome, once finished.
    pub fn result(&self) -> Option<Result<NatBehavior, StunError>> {
        self.result
    }

    /// Offers a received datagram; true if it answered the current test.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> bool {
        if self.result.is_some() {
            return false;
        }
        let port = self
            .port_txn
            .as_mut()
            .is_some_and(|t| t.handle_datagram(from, datagram));
        if !port && !self.txn.handle_datagram(from, datagram) {
            return false;
        }
        if self.txn.result().is_some() {
            self.advance(now);
        }
        true
    }

    /// Retransmits, gives up on tests, moves on.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        self.txn.handle_timeout(now);
        if let Some(t) = &mut self.port_txn {
            t.handle_timeout(now);
        }
        if self.txn.result().is_some() {
            self.advance(now);
        }
    }

    /// The next request to send.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if self.result.is_some() {
            return None;
        }
        self.txn
            .poll_transmit(buf)
            .or_else(|| self.port_txn.as_mut().and_then(|t| t.poll_transmit(buf)))
    }

    /// When to call [`NatDiscovery::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        let port = self.port_txn.as_ref().and_then(StunBinding::poll_timeout);
        match (self.txn.poll_timeout(), port) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next transaction id: derived from the first, so every test's differs.
    fn next_txid(&self) -> [u8; 12] {
        let mut id = self.txn_id();
        id[11] = id[11].wrapping_add(1);
        id
    }

    fn txn_id(&self) -> [u8; 12] {
        self.txn.txid()
    }

    fn start(&mut self, now: Instant, step: Step, to: SocketAddr, flags: u32) {
        let txid = self.next_txid();
        self.step = step;
        self.txn = StunBinding::new(now, to, txid, self.rto, self.tries)
            .with_change_request(flags)
            .with_credential(self.credential);
    }

    fn two_ips(&self) -> bool {
        self.other.is_some_and(|o| o.ip() != self.server.ip())
    }

    /// The current test finished (answered or not): record it and start the next.
    fn advance(&mut self, now: Instant) {
        let answer = self.txn.result();
        let ok = matches!(answer, Some(Ok(_)));
        let mapped = answer.and_then(Result::ok);
        match self.step {
            Step::First => match answer {
                Some(Ok(m1)) => {
                    self.mapped[0] = Some(m1);
                    let nat64 = self.nat64;
                    self.other = (self.txn.other_address())
                        .map(|o| nat64.map_or(o, |p| crate::synthesize_nat64(p, o)))
                        .filter(|o| o.is_ipv4() == self.server.is_ipv4() && *o != self.server);
                    if self.other.is_none() {
                        return self.finish(None);
                    }
                    if self.two_ips() {
                        self.start(now, Step::FilterBoth, self.server, CHANGE_IP | CHANGE_PORT);
                        let mut txid = self.next_txid();
                        txid[10] ^= 0x5A;
                        self.port_txn = Some(
                            StunBinding::new(now, self.server, txid, self.rto, self.tries)
                                .with_change_request(CHANGE_PORT)
                                .with_credential(self.credential),
                        );
                    } else {
                        self.start(now, Step::FilterPort, self.server, CHANGE_PORT);
                    }
                }
                Some(Err(StunError::Rejected { .. })) if !self.first_plain => {
                    // No RFC 5780 here: ask for the reflexive address alone.
                    self.first_plain = true;
                    let txid = self.next_txid();
                    let tries = first_tries(self.tries);
                    self.txn = StunBinding::new(now, self.server, txid, self.rto, tries)
                        .with_credential(self.credential);
                }
                Some(Err(e)) => self.result = Some(Err(e)),
                None => {}
            },
            Step::FilterBoth => {
                let refused_now = matches!(answer, Some(Err(StunError::Rejected { .. })));
                if refused_now && self.port_txn.as_ref().is_some_and(|t| t.result().is_none()) {
                    // Refused at once: the port-only test still gets its time.
                    return;
                }
                let port = self.port_txn.take().and_then(|t| t.result());
                let refused = |r: Option<Result<SocketAddr, StunError>>| {
                    matches!(r, Some(Err(StunError::Rejected { .. })))
                };
                self.filtering = match (ok, refused(answer), port) {
                    (true, _, _) => Some(Dependence::EndpointIndependent),
                    // The port-only test ran beside this one and was given the same time.
                    (_, _, Some(Err(StunError::Rejected { .. }))) => None,
                    (_, false, Some(Ok(_))) => Some(Dependence::AddressDependent),
                    // The change of IP was refused, the change of port got through.
                    (_, true, Some(Ok(_))) => None,
                    _ => Some(Dependence::AddressAndPortDependent),
                };
                self.start_mapping(now);
            }
            Step::FilterPort => {
                self.filtering = match (answer, self.two_ips()) {
                    (Some(Err(StunError::Rejected { .. })), _) => None,
                    (Some(Ok(_)), true) => Some(Dependence::AddressDependent),
                    (Some(Ok(_)), false) => None, // endpoint-independent or address-dependent
                    _ => Some(Dependence::AddressAndPortDependent),
                };
                self.start_mapping(now);
            }
            Step::Map2 => {
                let Some(m2) = mapped else {
                    return self.finish(None);
                };
                self.mapped[1] = Some(m2);
                let m1 = self.mapped[0];
                if Some(m2) == m1 {
                    // Same mapping for another IP (or, with one IP, another port).
                    let m = self.two_ips().then_some(Dependence::EndpointIndependent);
                    return self.finish(m);
                }
                if !self.two_ips() {
                    return self.finish(Some(Dependence::AddressAndPortDependent));
                }
                let other = self.other.unwrap_or(self.server);
                self.start(now, Step::Map3, other, 0);
            }
            Step::Map3 => {
                let Some(m3) = mapped else {
                    return self.finish(None);
                };
                self.mapped[2] = Some(m3);
                if Some(m3) == self.mapped[1] {
                    return self.finish(Some(Dependence::AddressDependent));
                }
                let other = self.other.unwrap_or(self.server);
                let to = SocketAddr::new(self.server.ip(), other.port());
                self.start(now, Step::Map4, to, 0);
            }
            Step::Map4 => {
                self.mapped[3] = mapped;
                self.finish(Some(Dependence::AddressAndPortDependent));
            }
        }
    }

    fn start_mapping(&mut self, now: Instant) {
        let other = self.other.unwrap_or(self.server);
        let to = if self.two_ips() {
            SocketAddr::new(other.ip(), self.server.port())
        } else {
            SocketAddr::new(self.server.ip(), other.port())
        };
        self.start(now, Step::Map2, to, 0);
    }

    fn finish(&mut self, mapping: Option<Dependence>) {
        let Some(m1) = self.mapped[0] else {
            self.result = Some(Err(StunError::TimedOut));
            return;
        };
        let ports: Vec<i32> = self
            .mapped
            .iter()
            .flatten()
            .map(|a| i32::from(a.port()))
            .collect();
        let last_port = self
            .mapped
            .iter()
            .flatten()
            .last()
            .map_or_else(|| m1.port(), |a| a.port());
        let step = |a: i32, b: i32| {
            let d = b - a;
            (d != 0 && d.abs() <= MAX_SEQUENTIAL_STEP).then_some(d)
        };
        let allocation = match mapping {
            Some(Dependence::AddressAndPortDependent) if ports.len() >= 4 => {
                // M2, M3, M4 are fresh mappings made back to back; M1 may be older.
                match (step(ports[1], ports[2]), step(ports[2], ports[3])) {
                    (Some(a), Some(b)) if a == b => Some(PortAllocation::Sequential {
                        delta: i16::try_from(a).unwrap_or(1),
                    }),
                    _ => Some(PortAllocation::Random),
                }
            }
            Some(Dependence::AddressDependent) if ports.len() >= 2 => {
                // One fresh mapping (M2, for IP2); M1 is the only other sample.
                Some(
                    step(ports[0], ports[1]).map_or(PortAllocation::Random, |d| {
                        PortAllocation::Sequential {
                            delta: i16::try_from(d).unwrap_or(1),
                        }
                    }),
                )
            }
            _ => None,
        };
        self.result = Some(Ok(NatBehavior {
            reflexive: m1,
            mapping,
            filtering: self.filtering,
            port_preserved: self.local.map(|l| l.port() == m1.port()),
            allocation,
            last_port,
            alternate: self.other,
        }));
    }
}

#[cfg(test)]
mod tests;
