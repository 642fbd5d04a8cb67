//! UPnP IGD: one UDP mapping's life at a gateway that speaks neither PCP nor NAT-PMP (see
//! the [module docs](super) for the sequence). Driven by [`super::PortMapping`], which
//! reports what it yields ([`Outcome`]) as its own events; its SSDP datagrams leave from the
//! primary socket and its HTTP exchanges run over byte streams the runtime connects
//! ([`crate::SocketRequest::ConnectRaw`]), one stream per exchange (`Connection: close`).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::igd::{
    self, Action, ControlPoint, HttpResponse, HttpUrl, IgdError, MAX_HTTP_BODY, MAX_HTTP_HEAD,
    SoapAnswer,
};
use super::{Attempt, MIN_RENEW, PORTMAP_LIFETIME, PORTMAP_RTO, PORTMAP_TRIES, PortMapError};
use super::{PortMapProtocol, RENEW_MAX_RTO};
use crate::time::{Backoff, Duration, Instant};
use crate::{SocketId, SocketRequest, Transmit};

/// Stream numbers one mapping machine cycles through, from the first it is given
/// ([`super::PortMapping::new`]): two machines alive at once (one deleting its mapping
/// while its successor asks) are given distinct blocks.
pub const UPNP_STREAM_BLOCK: u16 = 0x2000;
/// The gateway's SSDP port, where the unicast M-SEARCH goes (UDA 1.1 §1.3.2).
const SSDP_PORT: u16 = 1900;
/// One HTTP exchange (connect, request, whole response) on the LAN gives up after this:
/// the gateway is one hop away, and the whole fallback must end within a game's patience.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
/// AddPortMapping answered 718 ConflictInMappingEntry (another host has the port): the next
/// port up is asked, this many times in all.
pub const CONFLICT_TRIES: u32 = 4;
/// Longest response buffered: the head and body caps, and the chunk framing around a body.
const MAX_RESPONSE: usize = MAX_HTTP_HEAD + 2 * MAX_HTTP_BODY;
/// First wait before a failed renewal is tried again; doubles to [`RENEW_MAX_RTO`].
const RENEW_RETRY: Duration = Duration::from_secs(2);
/// The errorCodes the sequence acts on (IGD:1 WANIPConnection:1 §2.4.16, IGD:2 §2.5.16).
const CONFLICT_IN_MAPPING_ENTRY: u16 = 718;
const ONLY_PERMANENT_LEASES_SUPPORTED: u16 = 725;

/// Whether `id` is a stream numbered in the block from `first`.
pub(super) fn in_block(id: SocketId, first: u16) -> bool {
    let n = id.0 & !SocketId::STREAM_BIT;
    id.is_stream() && n.wrapping_sub(first) < UPNP_STREAM_BLOCK
}

/// What the machine reports to [`super::PortMapping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// AddPortMapping succeeded: first grant, or a renewal (`changed` false: the same address).
    Granted {
        external: SocketAddrV4,
        /// The lease; [`Duration::MAX`] for a permanent mapping (lease 0).
        lifetime: Duration,
        changed: bool,
    },
    /// The mapping is gone (a renewal refused, or unanswered until its lease ended; after no
    /// answer the machine searches again).
    Lost {
        external: SocketAddrV4,
        error: PortMapError,
    },
    /// No mapping: the machine is done.
    Failed(PortMapError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// SSDP M-SEARCH, waiting for an answer from the gateway.
    Searching,
    /// GET of the root description.
    Describing,
    /// GetExternalIPAddress.
    GettingIp,
    /// AddPortMapping, first time.
    Adding,
    /// Granted; waiting for the renewal time.
    Mapped,
    /// AddPortMapping again, before the lease ends.
    Renewing,
    /// DeletePortMapping on close.
    Deleting,
    /// Finished.
    Done,
}

/// One HTTP request and its response, over one stream.
#[derive(Debug)]
struct Exchange {
    id: SocketId,
    dst: SocketAddr,
    /// The SOAP action, or `None` for the description's GET.
    action: Option<Action>,
    request: Vec<u8>,
    /// Bytes of `request` handed out by `poll_transmit`.
    sent: usize,
    /// The runtime reported the stream connected.
    open: bool,
    response: Vec<u8>,
    deadline: Instant,
}

/// A granted mapping.
#[derive(Clone, Copy, Debug)]
struct Mapped {
    external: SocketAddrV4,
    /// When to renew and when the lease ends; `None` for a permanent mapping (lease 0).
    renew_at: Option<Instant>,
    expires: Option<Instant>,
}

/// One UPnP IGD mapping (see the [module docs](self)).
#[derive(Debug)]
pub(super) struct Upnp {
    gateway: Ipv4Addr,
    local: SocketAddrV4,
    first_stream: u16,
    /// Streams used so far (the next id is `first_stream + used % block`).
    used: u16,
    step: Step,
    /// Retransmissions of the M-SEARCH.
    search: Option<Attempt>,
    /// M-SEARCHes due (multicast, unicast).
    searches: VecDeque<SocketAddrV4>,
    location: Option<HttpUrl>,
    control: Option<ControlPoint>,
    external_ip: Option<Ipv4Addr>,
    /// The external port asked for (and, once mapped, granted).
    port: u16,
    conflicts: u32,
    /// The lease asked for, in seconds (0 once the gateway said only permanent ones).
    lease: u32,
    mapped: Option<Mapped>,
    /// A failed renewal is tried again at its next instant.
    renew_retry: Option<Backoff>,
    exchange: Option<Exchange>,
    requests: VecDeque<SocketRequest>,
    outcomes: VecDeque<Outcome>,
    /// Requests sent (M-SEARCHes and HTTP requests).
    pub(super) requests_sent: u64,
    /// Answers dropped: malformed, from elsewhere, or LOCATIONs off the gateway.
    pub(super) dropped: u64,
}

impl Upnp {
    /// Starts searching for the IGD at `gateway` to map `local`'s port; its streams are
    /// numbered from `first_stream`.
    pub(super) fn new(
        now: Instant,
        gateway: Ipv4Addr,
        local: SocketAddrV4,
        first_stream: u16,
    ) -> Self {
        let mut u = Self {
            gateway,
            local,
            first_stream,
            used: 0,
            step: Step::Searching,
            search: None,
            searches: VecDeque::new(),
            location: None,
            control: None,
            external_ip: None,
            port: local.port(),
            conflicts: 0,
            lease: PORTMAP_LIFETIME,
            mapped: None,
            renew_retry: None,
            exchange: None,
            requests: VecDeque::new(),
            outcomes: VecDeque::new(),
            requests_sent: 0,
            dropped: 0,
        };
        u.start_search(now);
        u
    }

    pub(super) fn external(&self) -> Option<SocketAddrV4> {
        self.mapped.map(|m| m.external)
    }

    pub(super) fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// Whether a mapping is granted (renewing included).
    pub(super) fn is_mapped(&self) -> bool {
        self.mapped.is_some()
    }

    /// Whether stream `id` is in this machine's block.
    pub(super) fn owns(&self, id: SocketId) -> bool {
        in_block(id, self.first_stream)
    }

    /// Deletes the mapping (or one that may be about to be granted), then the machine is
    /// done; before anything was asked for, it is done at once.
    pub(super) fn close(&mut self, now: Instant) {
        match self.step {
            Step::Done | Step::Deleting => {}
            Step::Searching | Step::Describing | Step::GettingIp => self.finish(),
            Step::Adding | Step::Mapped | Step::Renewing => {
                self.step = Step::Deleting;
                self.renew_retry = None;
                let external = self.port;
                self.exchange(now, Some(Action::Delete { external }));
            }
        }
    }

    /// An SSDP answer on the primary socket: true if it came from the gateway's IP and looks
    /// like HTTPU while searching (it is then this machine's, used or dropped).
    pub(super) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        if self.step != Step::Searching || from.ip() != self.gateway || !igd::is_httpu(datagram) {
            return false;
        }
        // UDA 1.1 §1.3.3: the answer names the description's URL. Only one on the gateway
        // itself is followed: an answer cannot send this client to another host.
        let url = igd::parse_ssdp_response(datagram).and_then(HttpUrl::parse);
        match url {
            Ok(url) if *url.addr.ip() == self.gateway => {
                self.search = None;
                self.searches.clear();
                self.location = Some(url);
                self.step = Step::Describing;
                self.exchange(now, None);
            }
            _ => self.dropped += 1,
        }
        true
    }

    /// The runtime's answer to a connect: true if `id` is this machine's.
    pub(super) fn handle_stream_opened(&mut self, now: Instant, id: SocketId, ok: bool) -> bool {
        if !self.owns(id) {
            return false;
        }
        match &mut self.exchange {
            Some(x) if x.id == id => {
                if ok {
                    x.open = true;
                } else {
                    self.exchange_failed(now, PortMapError::NoAnswer);
                }
            }
            // A stream given up on: the runtime opened it after all.
            _ if ok => self.requests.push_back(SocketRequest::Close { id }),
            _ => {}
        }
        true
    }

    /// Bytes from stream `id` (`eof`: it ended): true if `id` is this machine's.
    pub(super) fn handle_stream_data(
        &mut self,
        now: Instant,
        id: SocketId,
        bytes: &[u8],
        eof: bool,
    ) -> bool {
        if !self.owns(id) {
            return false;
        }
        let Some(x) = self.exchange.as_mut().filter(|x| x.id == id) else {
            if !bytes.is_empty() {
                self.dropped += 1;
            }
            return true;
        };
        if x.response.len() + bytes.len() > MAX_RESPONSE {
            self.dropped += 1;
            self.exchange_failed(now, PortMapError::Unusable);
            return true;
        }
        x.response.extend_from_slice(bytes);
        match igd::parse_http_response(&x.response, eof) {
            Ok(None) => {}
            Ok(Some(response)) => {
                let action = x.action;
                self.end_exchange();
                self.on_response(now, action, &response);
            }
            Err(_) => {
                self.dropped += 1;
                self.exchange_failed(now, PortMapError::Unusable);
            }
        }
        true
    }

    /// Retransmits the search, gives up on exchanges, renews; idempotent.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if self.exchange.as_ref().is_some_and(|x| now >= x.deadline) {
            self.exchange_failed(now, PortMapError::NoAnswer);
        }
        match self.step {
            Step::Searching => {
                let Some(a) = &mut self.search else {
                    return;
                };
                if now >= a.give_up {
                    self.outcomes
                        .push_back(Outcome::Failed(PortMapError::NoAnswer));
                    self.finish();
                } else if a.tries_left > 0 && a.retry.poll(now) {
                    a.tries_left -= 1;
                    self.queue_searches();
                }
            }
            Step::Mapped => {
                let Some(m) = self.mapped.filter(|m| m.renew_at.is_some_and(|t| now >= t)) else {
                    return;
                };
                self.step = Step::Renewing;
                self.renew_retry = None;
                self.add(now, m.external.port());
            }
            Step::Renewing => {
                let expired = (self.mapped)
                    .and_then(|m| m.expires)
                    .is_some_and(|t| now >= t);
                if expired {
                    self.lose(PortMapError::NoAnswer);
                    self.start_search(now);
                } else if self.exchange.is_none()
                    && self.renew_retry.as_mut().is_some_and(|b| b.poll(now))
                {
                    self.add(now, self.port);
                }
            }
            Step::Describing | Step::GettingIp | Step::Adding | Step::Deleting | Step::Done => {}
        }
    }

    /// The next M-SEARCH or piece of an HTTP request to send.
    pub(super) fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(&dst) = self.searches.front() {
            let unicast = (dst != igd::SSDP_GROUP).then_some(dst);
            let len = igd::encode_msearch(buf, unicast)?;
            self.searches.pop_front();
            self.requests_sent += 1;
            return Some(Transmit::new(SocketAddr::V4(dst), len));
        }
        let x = self.exchange.as_mut().filter(|x| x.open)?;
        let rest = x.request.get(x.sent..).filter(|r| !r.is_empty())?;
        let len = rest.len().min(buf.len());
        buf[..len].copy_from_slice(&rest[..len]);
        if x.sent == 0 {
            self.requests_sent += 1;
        }
        x.sent += len;
        Some(Transmit {
            dst: x.dst,
            len,
            socket: x.id,
            ttl: None,
        })
    }

    pub(super) fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.requests.pop_front()
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let step = match self.step {
            Step::Searching => self.search.as_ref().map(|a| {
                if a.tries_left == 0 {
                    a.give_up
                } else {
                    a.retry.next_at().min(a.give_up)
                }
            }),
            Step::Mapped => self.mapped.and_then(|m| m.renew_at),
            Step::Renewing => {
                let expires = self.mapped.and_then(|m| m.expires);
                let retry = (self.renew_retry.as_ref())
                    .filter(|_| self.exchange.is_none())
                    .map(Backoff::next_at);
                retry.into_iter().chain(expires).min()
            }
            Step::Describing | Step::GettingIp | Step::Adding | Step::Deleting | Step::Done => None,
        };
        let exchange = self.exchange.as_ref().map(|x| x.deadline);
        step.into_iter().chain(exchange).min()
    }

    pub(super) fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcomes.pop_front()
    }

    // ---- internals ---------------------------------------------------------------------

    fn start_search(&mut self, now: Instant) {
        self.end_exchange();
        self.step = Step::Searching;
        self.location = None;
        self.control = None;
        self.external_ip = None;
        self.port = self.local.port();
        self.conflicts = 0;
        self.lease = PORTMAP_LIFETIME;
        self.renew_retry = None;
        let mut a = Attempt::new(now, PORTMAP_TRIES, PORTMAP_RTO.saturating_mul(8), None);
        a.tries_left -= 1;
        self.search = Some(a);
        self.queue_searches();
    }

    /// The M-SEARCH to the multicast group (UDA 1.1 §1.3.2) and, since only the gateway's
    /// answer is used, the same search unicast to it (which some devices answer when their
    /// multicast membership is broken).
    fn queue_searches(&mut self) {
        self.searches.clear();
        self.searches.push_back(igd::SSDP_GROUP);
        (self.searches).push_back(SocketAddrV4::new(self.gateway, SSDP_PORT));
    }

    /// Starts an HTTP exchange on a new stream: the description's GET (`None`) or `action`.
    fn exchange(&mut self, now: Instant, action: Option<Action>) {
        self.end_exchange();
        let (dst, request) = match (action, &self.control, &self.location) {
            (None, _, Some(location)) => (location.addr, igd::http_get(location)),
            (Some(action), Some(control), _) => {
                (control.url.addr, igd::soap_request(control, action))
            }
            _ => {
                // (Unreachable by construction: every step that asks has what it needs.)
                self.exchange_failed(now, PortMapError::Unusable);
                return;
            }
        };
        let id = SocketId::stream(
            self.first_stream
                .wrapping_add(self.used % UPNP_STREAM_BLOCK),
        );
        self.used = self.used.wrapping_add(1);
        let dst = SocketAddr::V4(dst);
        self.requests
            .push_back(SocketRequest::ConnectRaw { id, addr: dst });
        self.exchange = Some(Exchange {
            id,
            dst,
            action,
            request,
            sent: 0,
            open: false,
            response: Vec::new(),
            deadline: now + HTTP_TIMEOUT,
        });
    }

    /// AddPortMapping of `port` with the lease now asked for.
    fn add(&mut self, now: Instant, port: u16) {
        self.port = port;
        let action = Action::Add {
            external: port,
            internal: self.local,
            lease: self.lease,
        };
        self.exchange(now, Some(action));
    }

    /// Closes the exchange's stream, if any.
    fn end_exchange(&mut self) {
        if let Some(x) = self.exchange.take() {
            self.requests.push_back(SocketRequest::Close { id: x.id });
        }
    }

    /// The exchange under way failed (`error`: no answer, or an answer that could not be
    /// read).
    fn exchange_failed(&mut self, now: Instant, error: PortMapError) {
        self.end_exchange();
        match self.step {
            Step::Describing | Step::GettingIp | Step::Adding => {
                self.outcomes.push_back(Outcome::Failed(error));
                self.finish();
            }
            Step::Renewing => {
                // Tried again until the lease ends (`handle_timeout`).
                self.renew_retry
                    .get_or_insert_with(|| Backoff::new(now, RENEW_RETRY, RENEW_MAX_RTO));
            }
            Step::Deleting => self.finish(),
            Step::Searching | Step::Mapped | Step::Done => {}
        }
    }

    fn on_response(&mut self, now: Instant, action: Option<Action>, response: &HttpResponse) {
        let Some(action) = action else {
            // The description (UDA 1.1 §2.3): its WAN connection service, on the gateway.
            let control = (self.location.as_ref())
                .ok_or(IgdError::Unusable("no location"))
                .and_then(|l| match response.status {
                    200 => igd::parse_description(&response.body, l),
                    _ => Err(IgdError::Unusable("http status")),
                });
            match control {
                Ok(c) if *c.url.addr.ip() == self.gateway => {
                    self.control = Some(c);
                    self.step = Step::GettingIp;
                    self.exchange(now, Some(Action::GetExternalIp));
                }
                _ => {
                    self.dropped += 1;
                    self.exchange_failed(now, PortMapError::Unusable);
                }
            }
            return;
        };
        let Ok(answer) = igd::parse_soap_response(response, action) else {
            self.dropped += 1;
            self.exchange_failed(now, PortMapError::Unusable);
            return;
        };
        match (action, answer) {
            (Action::Delete { .. }, _) => self.finish(),
            (Action::GetExternalIp, SoapAnswer::Ok(ip)) => {
                self.external_ip = ip;
                self.step = Step::Adding;
                self.add(now, self.local.port());
            }
            (
                Action::Add {
                    external, lease, ..
                },
                SoapAnswer::Ok(_),
            ) => {
                self.granted(now, external, lease);
            }
            (Action::Add { lease, .. }, SoapAnswer::Fault(ONLY_PERMANENT_LEASES_SUPPORTED))
                if lease != 0 =>
            {
                self.lease = 0;
                self.add(now, self.port);
            }
            (Action::Add { external, .. }, SoapAnswer::Fault(CONFLICT_IN_MAPPING_ENTRY))
                if self.step == Step::Adding && self.conflicts + 1 < CONFLICT_TRIES =>
            {
                self.conflicts += 1;
                let next = external.checked_add(1).unwrap_or(1024);
                self.add(now, next);
            }
            (_, SoapAnswer::Fault(code)) => self.refused(code),
        }
    }

    fn granted(&mut self, now: Instant, port: u16, lease: u32) {
        let Some(ip) = self.external_ip else {
            // (Unreachable: GetExternalIPAddress came first and named it.)
            self.outcomes
                .push_back(Outcome::Failed(PortMapError::Unusable));
            return self.finish();
        };
        let external = SocketAddrV4::new(ip, port);
        let (renew_at, expires, lifetime) = if lease == 0 {
            (None, None, Duration::MAX)
        } else {
            let lifetime = Duration::from_secs(u64::from(lease));
            (
                Some(now + (lifetime / 2).max(MIN_RENEW)),
                Some(now + lifetime),
                lifetime,
            )
        };
        let changed = self.mapped.is_none_or(|m| m.external != external);
        self.mapped = Some(Mapped {
            external,
            renew_at,
            expires,
        });
        self.step = Step::Mapped;
        self.renew_retry = None;
        self.outcomes.push_back(Outcome::Granted {
            external,
            lifetime,
            changed,
        });
    }

    /// A fault with errorCode `code` (UDA 1.1 §3.2.2): the request is refused.
    fn refused(&mut self, code: u16) {
        let error = PortMapError::Refused {
            protocol: PortMapProtocol::UpnpIgd,
            code,
        };
        if self.mapped.is_some() {
            self.lose(error);
        } else {
            self.outcomes.push_back(Outcome::Failed(error));
        }
        self.finish();
    }

    fn lose(&mut self, error: PortMapError) {
        if let Some(m) = self.mapped.take() {
            self.outcomes.push_back(Outcome::Lost {
                external: m.external,
                error,
            });
        }
    }

    /// Ends the machine: an exchange under way is closed, nothing more is sent.
    pub(super) fn finish(&mut self) {
        self.end_exchange();
        self.step = Step::Done;
        self.search = None;
        self.searches.clear();
        self.mapped = None;
        self.renew_retry = None;
    }
}
