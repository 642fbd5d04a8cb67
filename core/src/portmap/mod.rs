//! Port mapping: ask the default gateway to forward a UDP port to this client, with PCP
//! (RFC 6887, MAP opcode), else NAT-PMP (RFC 6886), else UPnP IGD (UPnP Device
//! Architecture 1.1 with the WANIPConnection:2, WANIPConnection:1 or WANPPPConnection:1
//! service). A mapping makes a host behind even a symmetric NAT reachable at a fixed public
//! address: peers probe it like any other candidate. Sans-IO: [`PortMapping`] is one
//! mapping's life (request, renewals, delete), driven with the usual verbs.
//!
//! The sequence:
//!
//! 1. PCP MAP (version 2) to the gateway's port 5351 asking [`PORTMAP_LIFETIME`] for the
//!    client's UDP port, suggesting the same external port, with a random 96-bit nonce
//!    (RFC 6887 §11.1). A gateway that answers in NAT-PMP's version 0 with "Unsupported
//!    Version" (RFC 6887 §9, RFC 6886 §3.5), or does not answer at all, is asked with
//!    NAT-PMP: a public address request (opcode 0, §3.2) and a UDP map request (opcode 1,
//!    §3.3); the mapping is the answers' external IP and port.
//!    A gateway that answers neither is asked with UPnP IGD (`upnp.rs`, `igd.rs`): an SSDP
//!    M-SEARCH for the InternetGatewayDevice (UDA 1.1 §1.3.2) from the client's socket to
//!    239.255.255.250:1900 and, unicast, to the gateway's port 1900, retransmitted like
//!    the others; the first answer from the gateway's IP whose LOCATION (§1.3.3) is an
//!    `http://` URL **on the gateway's own IP** is followed (any other LOCATION is dropped
//!    and counted: an answer cannot send the client to another host). Then, each over its
//!    own TCP stream the runtime connects (`SocketRequest::ConnectRaw`, `Connection:
//!    close`, [`HTTP_TIMEOUT`] each): GET of the root description (§2.3), whose
//!    WANIPConnection:2, :1 or WANPPPConnection:1 `controlURL` (also on the gateway) takes
//!    the SOAP actions (§3.2); GetExternalIPAddress; AddPortMapping (UDP, the client's
//!    port as external and internal port, the client's LAN address, description
//!    "pierce", a lease of [`PORTMAP_LIFETIME`]). Error 725 OnlyPermanentLeasesSupported
//!    asks again with lease 0; 718 ConflictInMappingEntry asks for the next port up, up to
//!    [`CONFLICT_TRIES`] ports in all. The mapping is the external IP and the port granted.
//! 2. The mapping is renewed at half its granted lifetime (RFC 6886 §3.3; RFC 6887 §11.2.1
//!    says between 1/2 and 5/8), retransmitting until it expires. An answer whose epoch
//!    shows the gateway restarted (RFC 6887 §8.5, RFC 6886 §3.6) triggers a renewal at once.
//!    A renewal that gets no answer before the mapping expires loses it
//!    ([`PortMapEvent::Lost`]) and the machine asks again from the start.
//!    A UPnP renewal is AddPortMapping again (a failed one is retried, 2 s doubling to 30 s,
//!    until the lease ends); a permanent UPnP mapping (lease 0) is never renewed.
//! 3. [`PortMapping::close`] deletes it: the same request with lifetime 0 (RFC 6887 §15,
//!    RFC 6886 §3.4), or UPnP's DeletePortMapping.
//!
//! Retransmissions: RFC 6887 §8.1.1 starts at 3 s and never gives up; RFC 6886 §3.1 starts at
//! 250 ms and gives up after 9 tries (64 s). A game wants the mapping before punching ends,
//! and a gateway that does not answer a LAN round trip within a second or two is not going to:
//! the first retry here comes after [`PORTMAP_RTO`] (250 ms, as NAT-PMP), doubling, and each
//! protocol gets [`PORTMAP_TRIES`] sends (3.75 s), so a gateway that speaks neither costs
//! 7.5 s before UPnP IGD is searched for (another 3.75 s without an answer, so 11.25 s and
//! one [`PortMapEvent::Failed`]). No jitter: one client sends one request.
//!
//! Not done: PCP ANNOUNCE and NAT-PMP's multicast address-change announcements (RFC 6887
//! §14.1, RFC 6886 §3.2.1) are not listened to (the epoch check on each renewal catches a
//! restarted gateway within half a lifetime); PCP options (THIRD_PARTY, PREFER_FAILURE,
//! FILTER) are never sent, and options in answers are skipped. UPnP: no GENA eventing (a
//! changed external address is noticed at the next renewal only if the port changed too; a
//! restarted gateway that lost a permanent mapping is not noticed); IPv4 gateways only (no
//! WANIPv6FirewallControl); HTTP without keep-alive, and descriptions are searched for the
//! elements needed rather than parsed as XML (bounded, strict: see `igd.rs`); the
//! description's embedded devices are not walked in order (the best WAN connection service
//! anywhere in it is taken); IGD:2's AddAnyPortMapping is not used.

pub mod igd;
mod upnp;
mod wire;

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::time::{Backoff, Duration, Instant};
use crate::{SocketId, SocketRequest, Transmit};
pub use upnp::{CONFLICT_TRIES, HTTP_TIMEOUT, UPNP_STREAM_BLOCK};
use upnp::{Outcome, Upnp};
pub use wire::{GatewayRequest, encode_gateway_grant, encode_natpmp_unsupported_version};
use wire::{
    NatPmpResponse, PCP_VERSION, PcpMapRequest, PcpMapResponse, UNSUPP_VERSION,
    encode_natpmp_map_request, encode_natpmp_public_request,
};

/// The gateway's PCP and NAT-PMP server port (RFC 6887 §19.1, RFC 6886 §3.1).
pub const PCP_SERVER_PORT: u16 = 5351;
/// Lifetime asked for, in seconds: RFC 6886 §3.3's recommended 7200 s (two hours). Renewed
/// at half what the gateway grants, so a client that vanishes without deleting leaves a
/// mapping for at most that long.
pub const PORTMAP_LIFETIME: u32 = 7200;
/// First retransmission after this long, doubling (RFC 6886 §3.1's 250 ms; RFC 6887's 3 s is
/// too slow for a game's punching window: see the module docs).
pub const PORTMAP_RTO: Duration = Duration::from_millis(250);
/// Sends per protocol before the gateway is taken not to speak it (0, 0.25, 0.75, 1.75 s;
/// given up at 3.75 s).
pub const PORTMAP_TRIES: u32 = 4;
/// Longest wait between renewal retransmissions (they go on until the mapping expires).
const RENEW_MAX_RTO: Duration = Duration::from_secs(30);
/// Delete sends (the first and one retransmission): a client that is closing does not wait.
const DELETE_TRIES: u32 = 2;
/// Renewals come at least this long after a grant, whatever lifetime the gateway gives.
const MIN_RENEW: Duration = Duration::from_secs(1);

/// Which protocol the gateway answered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortMapProtocol {
    /// Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886).
    NatPmp,
    /// UPnP Internet Gateway Device (UPnP Device Architecture 1.1, WANIPConnection).
    UpnpIgd,
}

impl PortMapProtocol {
    /// `pcp` or `nat-pmp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pcp => "pcp",
            Self::NatPmp => "nat-pmp",
            Self::UpnpIgd => "upnp-igd",
        }
    }
}

/// Why there is no mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortMapError {
    /// The gateway answered neither PCP, NAT-PMP nor UPnP IGD's search (or stopped
    /// answering renewals, or a UPnP HTTP exchange got no whole answer in time).
    NoAnswer,
    /// The gateway answered with an error result code (RFC 6887 §7.4, RFC 6886 §3.5), e.g.
    /// 2 NOT_AUTHORIZED (mapping disabled), 8 NO_RESOURCES. A NAT-PMP public address of
    /// 0.0.0.0 (no external address yet, §3.2) reads as code 3 (network failure). For UPnP
    /// IGD, the SOAP fault's errorCode (UDA 1.1 §3.2.2), e.g. 606 Action not authorized,
    /// 718 ConflictInMappingEntry (after [`CONFLICT_TRIES`] ports).
    Refused {
        /// The protocol that answered.
        protocol: PortMapProtocol,
        /// Its result code.
        code: u16,
    },
    /// The gateway's UPnP IGD answers could not be used: a malformed or over-long HTTP
    /// response, description or SOAP answer, no WAN connection service, a control URL off the
    /// gateway, or no external address yet.
    Unusable,
}

impl fmt::Display for PortMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAnswer => f.write_str("the gateway answered neither PCP, NAT-PMP nor UPnP IGD"),
            Self::Unusable => f.write_str("the gateway's UPnP IGD answers could not be used"),
            Self::Refused { protocol, code } => {
                write!(f, "the gateway refused ({} result {code})", protocol.name())
            }
        }
    }
}

impl std::error::Error for PortMapError {}

/// What a [`PortMapping`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMapEvent {
    /// The gateway forwards `external` to this client's port (first grant, or a renewal that
    /// came back with another address).
    Granted {
        /// The public address peers can send to.
        external: SocketAddr,
        /// How long the gateway keeps it unless renewed (renewals are automatic);
        /// [`Duration::MAX`] for a permanent UPnP mapping (lease 0).
        lifetime: Duration,
        /// The protocol that granted it.
        protocol: PortMapProtocol,
    },
    /// A granted mapping is gone: its renewal was refused or not answered before it expired.
    /// After no answer the machine asks again from the start ([`PortMapEvent::Granted`] or
    /// [`PortMapEvent::Failed`] follows).
    Lost {
        /// The address that no longer forwards.
        external: SocketAddr,
        /// Why.
        error: PortMapError,
    },
    /// No mapping could be made: nothing more happens.
    Failed(PortMapError),
}

/// Port-mapping counters (part of [`crate::ClientStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortMapStats {
    /// Requests sent to the gateway (PCP and NAT-PMP, retransmissions, renewals, deletes;
    /// UPnP's M-SEARCHes and HTTP requests).
    pub requests_sent: u64,
    /// Mappings granted ([`PortMapEvent::Granted`]).
    pub granted: u64,
    /// Renewals answered with the same address.
    pub renewed: u64,
    /// Mappings lost ([`PortMapEvent::Lost`]).
    pub lost: u64,
    /// Attempts that ended without a mapping ([`PortMapEvent::Failed`]).
    pub failed: u64,
    /// Answers whose epoch showed the gateway had lost its state (RFC 6887 §8.5).
    pub epoch_resets: u64,
    /// Datagrams from the gateway's port that were not a valid answer to a request under way
    /// (malformed, another nonce or port, unexpected), and UPnP answers that could not be
    /// used (an SSDP LOCATION off the gateway, a malformed HTTP, XML or SOAP answer): dropped.
    pub dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Asking for a mapping.
    Requesting,
    /// Granted; waiting for the renewal time.
    Mapped,
    /// Renewing a granted mapping.
    Renewing,
    /// Deleting on close.
    Deleting,
    /// Finished: failed, refused or deleted.
    Done,
}

/// A request to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Message {
    Pcp { lifetime: u32 },
    NatPmpPublic,
    NatPmpMap { lifetime: u32 },
}

/// A mapping the gateway granted.
#[derive(Clone, Copy, Debug)]
struct Mapped {
    external: SocketAddrV4,
    renew_at: Instant,
    expires: Instant,
}

/// Retransmissions of the request under way.
#[derive(Clone, Debug)]
struct Attempt {
    retry: Backoff,
    tries_left: u32,
    give_up: Instant,
}

impl Attempt {
    /// `tries` sends at [`PORTMAP_RTO`] doubling (at most `max_rto` apart), given up on when
    /// the last has waited as long again, or at `until` if given (renewals: the expiry).
    fn new(now: Instant, tries: u32, max_rto: Duration, until: Option<Instant>) -> Self {
        let give_up = until.unwrap_or_else(|| {
            let total = (0..tries.min(32)).fold(Duration::ZERO, |acc, i| {
                acc + PORTMAP_RTO.saturating_mul(1 << i.min(16)).min(max_rto)
            });
            now + total
        });
        Self {
            retry: Backoff::new(now, PORTMAP_RTO, max_rto),
            tries_left: tries,
            give_up,
        }
    }
}

/// One UDP port mapping at the default gateway (see the module docs).
#[derive(Debug)]
pub struct PortMapping {
    /// The gateway's PCP / NAT-PMP server.
    server: SocketAddr,
    /// This client's address on the gateway's network (PCP checks it against the source,
    /// RFC 6887 §8.1) and the port to map.
    local: SocketAddrV4,
    nonce: [u8; 12],
    protocol: PortMapProtocol,
    phase: Phase,
    attempt: Option<Attempt>,
    /// Requests due, sent by `poll_transmit`.
    pending: VecDeque<Message>,
    /// NAT-PMP answers collected until both are in.
    natpmp_ip: Option<Ipv4Addr>,
    natpmp_port: Option<(u16, u32)>,
    mapped: Option<Mapped>,
    /// The last answer's epoch and when it came (RFC 6887 §8.5).
    epoch: Option<(u32, Instant)>,
    events: VecDeque<PortMapEvent>,
    stats: PortMapStats,
    /// The UPnP IGD machine, once PCP and NAT-PMP went unanswered.
    upnp: Option<Upnp>,
    /// The first stream number UPnP uses.
    first_stream: u16,
}

impl PortMapping {
    /// Starts asking the gateway at `gateway` to map `local`'s port; `nonce` must be random
    /// (RFC 6887 §11.1: it is what ties answers to this client). UPnP IGD's TCP streams are
    /// `SocketId::stream(n)` for n in `first_stream..first_stream + UPNP_STREAM_BLOCK`:
    /// numbers no other stream of the endpoint uses while this machine lives.
    pub fn new(
        now: Instant,
        gateway: Ipv4Addr,
        local: SocketAddrV4,
        nonce: [u8; 12],
        first_stream: u16,
    ) -> Self {
        let mut m = Self {
            server: SocketAddr::from((gateway, PCP_SERVER_PORT)),
            local,
            nonce,
            protocol: PortMapProtocol::Pcp,
            phase: Phase::Requesting,
            attempt: None,
            pending: VecDeque::new(),
            natpmp_ip: None,
            natpmp_port: None,
            mapped: None,
            epoch: None,
            events: VecDeque::new(),
            stats: PortMapStats::default(),
            upnp: None,
            first_stream,
        };
        m.begin(now, Phase::Requesting, PortMapProtocol::Pcp);
        m
    }

    /// The gateway's server address (its port 5351).
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The mapped public address, while there is one.
    pub fn external(&self) -> Option<SocketAddr> {
        let upnp = self.upnp.as_ref().and_then(Upnp::external);
        (self.mapped.map(|m| m.external))
            .or(upnp)
            .map(SocketAddr::V4)
    }

    /// Counters.
    pub fn stats(&self) -> PortMapStats {
        let mut s = self.stats;
        if let Some(u) = &self.upnp {
            s.requests_sent += u.requests_sent;
            s.dropped += u.dropped;
        }
        s
    }

    /// Whether stream `id` is this machine's (UPnP IGD's HTTP exchanges).
    pub fn owns_stream(&self, id: SocketId) -> bool {
        upnp::in_block(id, self.first_stream)
    }

    /// True once nothing more will happen (failed, refused, deleted).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Deletes the mapping (lifetime 0), or one that may be about to be granted; queues the
    /// request and one retransmission, then the machine is done.
    pub fn close(&mut self, now: Instant) {
        match self.phase {
            Phase::Done | Phase::Deleting => {}
            Phase::Requesting | Phase::Mapped | Phase::Renewing => {
                if let Some(u) = &mut self.upnp {
                    u.close(now);
                    self.phase = Phase::Deleting;
                    self.drain_upnp();
                    return;
                }
                let protocol = self.protocol;
                self.begin(now, Phase::Deleting, protocol);
            }
        }
    }

    /// Ends the machine at once, without deleting anything (a machine replaced before its
    /// delete was answered): an HTTP exchange under way is closed
    /// ([`PortMapping::poll_socket_request`] still says so).
    pub fn abandon(&mut self) {
        if let Some(u) = &mut self.upnp {
            u.finish();
        }
        self.finish(None);
    }

    /// Offers a received datagram: true if it came from the gateway's port 5351 (it is then
    /// this machine's, valid or not: invalid ones are dropped and counted).
    ///
    /// While UPnP IGD searches, an SSDP answer from the gateway's IP (any port) is taken too.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> bool {
        if let Some(u) = &mut self.upnp {
            let mine = u.handle_datagram(now, from, datagram);
            self.drain_upnp();
            if mine {
                return true;
            }
        }
        if from != self.server {
            return false;
        }
        if self.upnp.is_some() {
            // A late PCP / NAT-PMP answer: UPnP IGD has taken over.
            self.stats.dropped += 1;
            return true;
        }
        let ok = match datagram.first() {
            _ if self.phase == Phase::Done => false,
            Some(&PCP_VERSION) => self.on_pcp(now, datagram),
            Some(&wire::NATPMP_VERSION) => self.on_natpmp(now, datagram),
            _ => false,
        };
        if !ok {
            self.stats.dropped += 1;
        }
        true
    }

    /// The runtime's answer to a [`SocketRequest::ConnectRaw`] of this machine's (`local`:
    /// connected, from there; `None`: could not connect). False if `id` is not this
    /// machine's ([`PortMapping::owns_stream`]).
    pub fn handle_stream_opened(
        &mut self,
        now: Instant,
        id: SocketId,
        local: Option<SocketAddr>,
    ) -> bool {
        let Some(u) = self.upnp.as_mut().filter(|u| u.owns(id)) else {
            return false;
        };
        let mine = u.handle_stream_opened(now, id, local.is_some());
        self.drain_upnp();
        mine
    }

    /// Bytes that arrived on stream `id` (in any pieces). False if it is not this machine's.
    pub fn handle_stream_data(&mut self, now: Instant, id: SocketId, bytes: &[u8]) -> bool {
        let Some(u) = self.upnp.as_mut().filter(|u| u.owns(id)) else {
            return false;
        };
        let mine = u.handle_stream_data(now, id, bytes, false);
        self.drain_upnp();
        mine
    }

    /// Stream `id` ended (the gateway closed it: that ends a response without a length).
    /// False if it is not this machine's.
    pub fn handle_stream_closed(&mut self, now: Instant, id: SocketId) -> bool {
        let Some(u) = self.upnp.as_mut().filter(|u| u.owns(id)) else {
            return false;
        };
        let mine = u.handle_stream_data(now, id, &[], true);
        self.drain_upnp();
        mine
    }

    /// The next stream to connect or close (UPnP IGD's HTTP exchanges).
    pub fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.upnp.as_mut()?.poll_socket_request()
    }

    /// Retransmits, renews, gives up on schedule; idempotent.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(u) = &mut self.upnp {
            u.handle_timeout(now);
            self.drain_upnp();
            return;
        }
        match self.phase {
            Phase::Done => {}
            Phase::Mapped => {
                if let Some(m) = self.mapped.filter(|m| now >= m.renew_at) {
                    self.phase = Phase::Renewing;
                    self.attempt =
                        Some(Attempt::new(now, u32::MAX, RENEW_MAX_RTO, Some(m.expires)));
                    self.send_now();
                }
            }
            Phase::Requesting | Phase::Renewing | Phase::Deleting => {
                let Some(a) = &mut self.attempt else {
                    return;
                };
                if now >= a.give_up {
                    self.gave_up(now);
                } else if a.tries_left > 0 && a.retry.poll(now) {
                    self.send_now();
                }
            }
        }
    }

    /// The next request to send, if one is due (for UPnP IGD, a piece of an HTTP request
    /// names its stream in [`Transmit::socket`]).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let Some(msg) = self.pending.pop_front() else {
            return self.upnp.as_mut()?.poll_transmit(buf);
        };
        let external = self.mapped.map(|m| m.external);
        let suggested_port = external.map_or_else(|| self.local.port(), |e| e.port());
        let len = match msg {
            Message::Pcp { lifetime } => PcpMapRequest {
                client: *self.local.ip(),
                lifetime,
                nonce: self.nonce,
                internal_port: self.local.port(),
                suggested_port,
                suggested_ip: external.map(|e| *e.ip()),
            }
            .encode(buf),
            Message::NatPmpPublic => encode_natpmp_public_request(buf),
            // A delete suggests port 0 (RFC 6886 §3.4).
            Message::NatPmpMap { lifetime } => {
                let suggested = if lifetime == 0 { 0 } else { suggested_port };
                encode_natpmp_map_request(buf, self.local.port(), suggested, lifetime)
            }
        }?;
        self.stats.requests_sent += 1;
        Some(Transmit::new(self.server, len))
    }

    /// When to call [`PortMapping::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(u) = &self.upnp {
            return u.poll_timeout();
        }
        match self.phase {
            Phase::Done => None,
            Phase::Mapped => self.mapped.map(|m| m.renew_at),
            Phase::Requesting | Phase::Renewing | Phase::Deleting => {
                let a = self.attempt.as_ref()?;
                if a.tries_left == 0 {
                    Some(a.give_up)
                } else {
                    Some(a.retry.next_at().min(a.give_up))
                }
            }
        }
    }

    /// What happened.
    pub fn poll_event(&mut self) -> Option<PortMapEvent> {
        self.events.pop_front()
    }

    // ---- internals ---------------------------------------------------------------------

    /// Enters `phase` speaking `protocol` and sends its first request.
    fn begin(&mut self, now: Instant, phase: Phase, protocol: PortMapProtocol) {
        self.phase = phase;
        self.protocol = protocol;
        self.pending.clear();
        let tries = if phase == Phase::Deleting {
            DELETE_TRIES
        } else {
            PORTMAP_TRIES
        };
        self.attempt = Some(Attempt::new(
            now,
            tries,
            PORTMAP_RTO.saturating_mul(8),
            None,
        ));
        if phase == Phase::Requesting {
            self.natpmp_ip = None;
            self.natpmp_port = None;
        }
        self.send_now();
    }

    /// Queues the requests of the current phase (one retransmission round).
    fn send_now(&mut self) {
        if let Some(a) = &mut self.attempt {
            a.tries_left = a.tries_left.saturating_sub(1);
        }
        let lifetime = if self.phase == Phase::Deleting {
            0
        } else {
            PORTMAP_LIFETIME
        };
        self.pending.clear();
        match self.protocol {
            PortMapProtocol::Pcp => self.pending.push_back(Message::Pcp { lifetime }),
            // (Its own machine sends: `upnp`.)
            PortMapProtocol::UpnpIgd => {}
            PortMapProtocol::NatPmp => {
                if self.phase == Phase::Requesting && self.natpmp_ip.is_none() {
                    self.pending.push_back(Message::NatPmpPublic);
                }
                if self.phase != Phase::Requesting || self.natpmp_port.is_none() {
                    self.pending.push_back(Message::NatPmpMap { lifetime });
                }
            }
        }
    }

    /// The request under way ran out of time.
    fn gave_up(&mut self, now: Instant) {
        match (self.phase, self.protocol) {
            (Phase::Requesting, PortMapProtocol::Pcp) => {
                self.begin(now, Phase::Requesting, PortMapProtocol::NatPmp);
            }
            (Phase::Requesting, PortMapProtocol::NatPmp) => {
                // Neither PCP nor NAT-PMP: UPnP IGD takes over (and keeps the machine's
                // events and counters) until the machine is done.
                self.protocol = PortMapProtocol::UpnpIgd;
                self.attempt = None;
                self.pending.clear();
                let gateway = match self.server {
                    SocketAddr::V4(s) => *s.ip(),
                    SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                };
                let upnp = Upnp::new(now, gateway, self.local, self.first_stream);
                self.upnp = Some(upnp);
            }
            (Phase::Requesting, PortMapProtocol::UpnpIgd) => {
                self.finish(Some(PortMapEvent::Failed(PortMapError::NoAnswer)));
            }
            (Phase::Renewing, protocol) => {
                self.lose(PortMapError::NoAnswer);
                self.begin(now, Phase::Requesting, protocol);
            }
            (Phase::Deleting | Phase::Mapped | Phase::Done, _) => self.finish(None),
        }
    }

    /// Turns what UPnP IGD yielded into this machine's events, counters and phase.
    fn drain_upnp(&mut self) {
        let Some(u) = &mut self.upnp else {
            return;
        };
        while let Some(o) = u.poll_outcome() {
            let event = match o {
                Outcome::Granted {
                    external,
                    lifetime,
                    changed,
                } => {
                    if !changed {
                        self.stats.renewed += 1;
                        continue;
                    }
                    self.stats.granted += 1;
                    PortMapEvent::Granted {
                        external: SocketAddr::V4(external),
                        lifetime,
                        protocol: PortMapProtocol::UpnpIgd,
                    }
                }
                Outcome::Lost { external, error } => {
                    self.stats.lost += 1;
                    PortMapEvent::Lost {
                        external: SocketAddr::V4(external),
                        error,
                    }
                }
                Outcome::Failed(error) => {
                    self.stats.failed += 1;
                    PortMapEvent::Failed(error)
                }
            };
            self.events.push_back(event);
        }
        self.phase = match self.phase {
            _ if u.is_done() => Phase::Done,
            Phase::Deleting => Phase::Deleting,
            _ if u.is_mapped() => Phase::Mapped,
            _ => Phase::Requesting,
        };
    }

    /// Ends the machine, reporting `event`.
    fn finish(&mut self, event: Option<PortMapEvent>) {
        if let Some(e) = event {
            match e {
                PortMapEvent::Failed(_) => self.stats.failed += 1,
                PortMapEvent::Lost { .. } => self.stats.lost += 1,
                PortMapEvent::Granted { .. } => {}
            }
            self.events.push_back(e);
        }
        self.phase = Phase::Done;
        self.attempt = None;
        self.pending.clear();
        self.mapped = None;
    }

    /// The granted mapping is gone.
    fn lose(&mut self, error: PortMapError) {
        if let Some(m) = self.mapped.take() {
            self.stats.lost += 1;
            self.events.push_back(PortMapEvent::Lost {
                external: SocketAddr::V4(m.external),
                error,
            });
        }
    }

    /// The gateway answered with error `code`.
    fn refused(&mut self, protocol: PortMapProtocol, code: u16) {
        let error = PortMapError::Refused { protocol, code };
        match self.phase {
            Phase::Requesting => self.finish(Some(PortMapEvent::Failed(error))),
            Phase::Mapped | Phase::Renewing => {
                self.lose(error);
                self.finish(None);
            }
            Phase::Deleting | Phase::Done => self.finish(None),
        }
    }

    /// The gateway granted `external` for `lifetime` seconds (or confirmed a delete).
    fn granted(
        &mut self,
        now: Instant,
        protocol: PortMapProtocol,
        external: SocketAddrV4,
        lifetime: u32,
    ) -> bool {
        if self.phase == Phase::Deleting {
            self.finish(None);
            return true;
        }
        if lifetime == 0 || external.port() == 0 || external.ip().is_unspecified() {
            // A grant of nothing: not an answer to what we asked.
            return false;
        }
        let lifetime = Duration::from_secs(u64::from(lifetime));
        let changed = self.mapped.is_none_or(|m| m.external != external);
        self.mapped = Some(Mapped {
            external,
            renew_at: now + (lifetime / 2).max(MIN_RENEW),
            expires: now + lifetime,
        });
        self.protocol = protocol;
        self.phase = Phase::Mapped;
        self.attempt = None;
        self.pending.clear();
        if changed {
            self.stats.granted += 1;
            self.events.push_back(PortMapEvent::Granted {
                external: SocketAddr::V4(external),
                lifetime,
                protocol,
            });
        } else {
            self.stats.renewed += 1;
        }
        true
    }

    /// Checks the server's epoch (RFC 6887 §8.5; RFC 6886 §3.6 is the same idea): a gateway
    /// that restarted lost its mappings, and §8.5 asks the client to refresh them at once. This
    /// machine holds one mapping and the answer being checked is its refresh, so a reset is
    /// only counted (a new external address in it is reported as a new grant).
    fn check_epoch(&mut self, now: Instant, epoch: u32) {
        if self
            .epoch
            .is_some_and(|(prev, at)| epoch_invalid(prev, epoch, now - at))
        {
            self.stats.epoch_resets += 1;
        }
        self.epoch = Some((epoch, now));
    }

    fn on_pcp(&mut self, now: Instant, datagram: &[u8]) -> bool {
        let Some(r) = PcpMapResponse::decode(datagram) else {
            return false;
        };
        if r.nonce != self.nonce || !r.is_udp() || r.internal_port != self.local.port() {
            return false;
        }
        if r.result != 0 {
            self.refused(PortMapProtocol::Pcp, u16::from(r.result));
            return true;
        }
        let IpAddr::V4(ip) = r.external_ip else {
            return false;
        };
        let ok = self.granted(
            now,
            PortMapProtocol::Pcp,
            SocketAddrV4::new(ip, r.external_port),
            r.lifetime,
        );
        if ok {
            self.check_epoch(now, r.epoch);
        }
        ok
    }

    fn on_natpmp(&mut self, now: Instant, datagram: &[u8]) -> bool {
        let Some(r) = NatPmpResponse::decode(datagram) else {
            return false;
        };
        let (result, epoch) = match r {
            NatPmpResponse::Public { result, epoch, .. }
            | NatPmpResponse::Map { result, epoch, .. }
            | NatPmpResponse::Error { result, epoch } => (result, epoch),
        };
        if self.protocol == PortMapProtocol::Pcp {
            // A NAT-PMP gateway's answer to our PCP request: speak its version.
            if result == UNSUPP_VERSION && self.phase == Phase::Requesting {
                self.begin(now, Phase::Requesting, PortMapProtocol::NatPmp);
                return true;
            }
            return false;
        }
        if result != 0 {
            self.refused(PortMapProtocol::NatPmp, result);
            return true;
        }
        match r {
            NatPmpResponse::Public { ip, .. } => {
                if ip.is_unspecified() {
                    // No external address yet (§3.2).
                    self.refused(PortMapProtocol::NatPmp, 3);
                    return true;
                }
                if self.phase != Phase::Requesting {
                    return false;
                }
                self.natpmp_ip = Some(ip);
            }
            NatPmpResponse::Map {
                internal_port,
                external_port,
                lifetime,
                ..
            } => {
                if internal_port != self.local.port() {
                    return false;
                }
                if self.phase == Phase::Deleting {
                    self.finish(None);
                    return true;
                }
                if self.phase == Phase::Mapped {
                    return false;
                }
                self.natpmp_port = Some((external_port, lifetime));
            }
            NatPmpResponse::Error { .. } => return false,
        }
        self.check_epoch(now, epoch);
        // Renewals know the address already; a first grant needs both answers.
        let ip = self
            .natpmp_ip
            .or_else(|| self.mapped.map(|m| *m.external.ip()));
        if let (Some(ip), Some((port, lifetime))) = (ip, self.natpmp_port) {
            self.natpmp_port = None;
            let external = SocketAddrV4::new(ip, port);
            return self.granted(now, PortMapProtocol::NatPmp, external, lifetime);
        }
        true
    }
}

/// RFC 6887 §8.5: the server's epoch went back by more than a second, or it advanced out of
/// step with the client's clock (by more than 2 s plus 1/16), so the server lost its state.
fn epoch_invalid(prev: u32, curr: u32, client_elapsed: Duration) -> bool {
    if u64::from(curr) + 1 < u64::from(prev) {
        return true;
    }
    let server = i64::from(curr) - i64::from(prev);
    let client = i64::try_from(client_elapsed.as_secs()).unwrap_or(i64::MAX / 2);
    client + 2 < server - server / 16 || server + 2 < client - client / 16
}

#[cfg(test)]
mod tests;
