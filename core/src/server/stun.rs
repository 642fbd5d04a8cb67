//! The server's STUN responder: answers Binding requests with the address they came from, like
//! any STUN server, and (with NAT behaviour discovery on) with the RFC 5780 attributes, from
//! the socket a CHANGE-REQUEST asks for. The sockets themselves are [`Sockets`]' business.
//!
//! # Amplification
//! The answer (40 bytes for IPv4, 52 for IPv6) is larger than a bare request (20 bytes): a
//! factor of at most 2.6, the same as every STUN server. Requests draw on a budget of their own
//! per source IP and for the whole server (`ServerConfig::stun_rate_per_ip` and
//! `stun_rate_global`), so a spoofed flood gets at most that factor on a bounded rate toward
//! any one address; requests with a FINGERPRINT that does not verify are not answered.
//!
//! A STUN request proves nothing about its source, so a spoofer can spend an IP's STUN budget:
//! that costs the clients behind that IP their NAT behaviour discovery for as long as the
//! flood lasts (they still connect, join and relay, and punch from the address their session
//! shows the server), never their sessions, whose handshakes have a budget of their own.
//!
//! With NAT discovery on, a request that carries any attribute (so is at least
//! [`EXTENDED_MIN_REQUEST`] bytes) is answered with RESPONSE-ORIGIN and OTHER-ADDRESS too (64
//! bytes for IPv4: at most 2.3x). A bare 20-byte request always gets the plain 40-byte
//! answer, so the factor stays 2.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::discovery::Sockets;
use super::session::Path;
use crate::config::ServerConfig;
use crate::error::ConfigError;
use crate::ratelimit::Limiter;
use crate::stats::ServerStats;
use crate::time::Instant;
use crate::wire::stun::{
    ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_USERNAME, BINDING_REQUEST, StunCredential, StunMessage,
    encode_binding_response_with,
};

/// MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5): credentials this server never hands out.
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
use crate::{SocketId, SocketRequest, Transmit};

/// Answers waiting to be sent, at most (requests beyond are dropped and counted).
const QUEUE_CAP: usize = 1024;
/// STUN requests per second one session may have answered when they are signed with its
/// credential (sustained), and in a burst: NAT behaviour discovery takes a handful.
const SESSION_RATE: u32 = 20;
const SESSION_BURST: u32 = 64;
/// Requests at least this long (one attribute) get the RFC 5780 answer.
const EXTENDED_MIN_REQUEST: usize = 28;

/// Binding requests in, Binding responses out.
#[derive(Debug)]
pub(super) struct StunResponder {
    /// Answers to send, in order.
    queue: VecDeque<Reply>,
    /// The local sockets (NAT behaviour discovery).
    sockets: Sockets,
    /// Unsigned requests answered per source IP and in all.
    limiter: Limiter,
    /// Requests signed by a client of ours answered per session and in all: no spoofer can
    /// spend these.
    signed: Limiter,
}

/// A Binding response to send.
#[derive(Debug)]
struct Reply {
    /// Where the request came from: the address answered, and where the answer goes.
    to: SocketAddr,
    txid: [u8; 12],
    /// The socket the request came in on.
    on: SocketId,
    /// The socket the response leaves from (differs with CHANGE-REQUEST).
    from: SocketId,
    /// Carry RESPONSE-ORIGIN and OTHER-ADDRESS (RFC 5780).
    extended: bool,
    /// Sign it (the request was signed by this session's client).
    credential: Option<StunCredential>,
}

impl StunResponder {
    /// `key`: random, so that the per-IP table's hashing cannot be predicted.
    pub(super) fn new(key: u64, config: &ServerConfig) -> Self {
        Self {
            queue: VecDeque::new(),
            sockets: Sockets::default(),
            limiter: Limiter::new(
                key,
                config.stun_rate_per_ip,
                config.stun_burst_per_ip,
                config.stun_rate_global,
                config.stun_burst_global,
            ),
            signed: Limiter::new(
                key.rotate_left(32),
                SESSION_RATE,
                SESSION_BURST,
                config.stun_rate_global,
                config.stun_burst_global,
            ),
        }
    }

    /// Turns on NAT behaviour discovery (see `Server::enable_nat_discovery`).
    pub(super) fn enable_discovery(
        &mut self,
        primary: SocketAddr,
        alternate: SocketAddr,
    ) -> Result<(), ConfigError> {
        self.sockets.enable(primary, alternate)
    }

    /// The runtime opened socket `id` at `local` (or could not: `None`).
    pub(super) fn handle_socket_opened(&mut self, id: SocketId, local: Option<SocketAddr>) {
        self.sockets.opened(id, local);
    }

    /// The next socket to open.
    pub(super) fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.sockets.poll_request()
    }

    /// The bound address of local socket `id`, once known.
    pub(super) fn socket_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.sockets.addr(id)
    }

    /// A STUN message `m` (all of `datagram`) that came in on `path`: a valid Binding request
    /// on a UDP socket is answered unless the rate limit or the queue says no. A request
    /// signed with short-term credentials (RFC 8489 §9.1) is answered only if it verifies with
    /// `credential` (the session its USERNAME names, if that is a client of ours), then from
    /// that session's budget rather than its IP's, and the answer is signed too.
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        path: Path,
        m: &StunMessage<'_>,
        datagram: &[u8],
        credential: Option<&StunCredential>,
        stats: &mut ServerStats,
    ) {
        if path.socket.is_stream()
            || m.message_type != BINDING_REQUEST
            || !m.fingerprint_ok(datagram)
        {
            stats.dropped.stun += 1;
            return;
        }
        let Some(flags) = m.change_request() else {
            stats.dropped.stun += 1;
            return;
        };
        let extended = self.sockets.enabled() && datagram.len() >= EXTENDED_MIN_REQUEST;
        let reply_from = if extended {
            self.sockets.reply_socket(path.socket, flags)
        } else if flags == 0 {
            Some(path.socket)
        } else {
            None
        };
        let Some(reply_from) = reply_from else {
            // A change this server cannot make (no alternate address, or one IP only).
            stats.dropped.stun += 1;
            return;
        };
        let signed = m.attrs().any(|(t, _)| {
            matches!(
                t,
                ATTR_USERNAME | ATTR_MESSAGE_INTEGRITY | ATTR_MESSAGE_INTEGRITY_SHA256
            )
        });
        let credential = match credential {
            _ if !signed => None,
            Some(c) if m.integrity_ok(datagram, &c.password) == Some(true) => Some(*c),
            _ => {
                // Signed for no session of ours, or not verifying: nothing to answer with.
                stats.dropped.auth_failed += 1;
                return;
            }
        };
        let allowed = match &credential {
            Some(c) => self.signed.allow(now, c.username),
            None => self.limiter.allow(now, path.addr.ip()),
        };
        if !allowed {
            stats.dropped.rate_limited += 1;
            return;
        }
        if self.queue.len() >= QUEUE_CAP {
            stats.dropped.queue_full += 1;
            return;
        }
        self.queue.push_back(Reply {
            to: path.addr,
            txid: m.transaction_id,
            on: path.socket,
            from: reply_from,
            extended,
            credential,
        });
    }

    /// Writes the next answer into `buf`.
    pub(super) fn poll_transmit(
        &mut self,
        buf: &mut [u8],
        stats: &mut ServerStats,
    ) -> Option<Transmit> {
        let r = self.queue.pop_front()?;
        let origin = self.sockets.addr(r.from);
        let rfc5780 = origin
            .filter(|_| r.extended)
            .map(|origin| (origin, self.sockets.other_address(r.on)));
        let signed = r.credential.as_ref();
        let len = encode_binding_response_with(buf, &r.txid, r.to, rfc5780, signed).ok()?;
        stats.stun_answered += 1;
        Some(Transmit {
            dst: r.to,
            len,
            socket: r.from,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::stun::{
        CHANGE_PORT, encode_binding_request, encode_binding_request_change,
        encode_binding_request_with,
    };

    /// A responder whose per-IP budget is `rate` a second, `burst` at once (global: 10 000).
    fn limited(rate: u32, burst: u32) -> StunResponder {
        let mut cfg = ServerConfig::new(crate::SecretKey::from_bytes([1; 32]));
        (cfg.stun_rate_per_ip, cfg.stun_burst_per_ip) = (rate, burst);
        (cfg.stun_rate_global, cfg.stun_burst_global) = (10_000, 10_000);
        StunResponder::new(1, &cfg)
    }

    fn responder() -> StunResponder {
        limited(10_000, 10_000)
    }

    fn path(socket: u16, addr: &str) -> Path {
        Path {
            socket: SocketId(socket),
            addr: addr.parse().unwrap(),
        }
    }

    /// Feeds `request` to `r` from `from` on `on`.
    fn ask(r: &mut StunResponder, from: Path, request: &[u8], stats: &mut ServerStats) {
        let m = StunMessage::decode(request).unwrap();
        let now = crate::tests::epoch();
        r.handle_request(now, from, &m, request, None, stats);
    }

    #[test]
    fn a_request_is_answered_with_its_source_from_the_socket_it_came_on() {
        let mut r = responder();
        let mut stats = ServerStats::default();
        let mut req = [0u8; 64];
        let n = encode_binding_request(&mut req, &[7; 12]).unwrap();
        let from = path(0, "198.51.100.7:4000");
        ask(&mut r, from, &req[..n], &mut stats);
        let mut buf = [0u8; 1200];
        let t = r.poll_transmit(&mut buf, &mut stats).unwrap();
        assert_eq!((t.dst, t.socket), (from.addr, SocketId::PRIMARY));
        let answer = StunMessage::decode(&buf[..t.len]).unwrap();
        assert_eq!(answer.transaction_id, [7; 12]);
        assert_eq!(answer.mapped_address(), Some(from.addr));
        assert_eq!(stats.stun_answered, 1);
        assert!(r.poll_transmit(&mut buf, &mut stats).is_none());
    }

    #[test]
    fn a_change_request_without_discovery_is_dropped_and_counted() {
        let mut r = responder();
        let mut stats = ServerStats::default();
        let mut req = [0u8; 64];
        let n = encode_binding_request_change(&mut req, &[1; 12], CHANGE_PORT).unwrap();
        ask(&mut r, path(0, "198.51.100.7:4000"), &req[..n], &mut stats);
        assert_eq!(stats.dropped.stun, 1);
        assert!(r.poll_transmit(&mut [0u8; 1200], &mut stats).is_none());
    }

    #[test]
    fn with_discovery_a_change_of_port_is_answered_from_the_alternate_socket() {
        let mut r = responder();
        let mut stats = ServerStats::default();
        let (primary, alternate) = ("127.0.0.1:3478", "127.0.0.1:3479");
        r.enable_discovery(primary.parse().unwrap(), alternate.parse().unwrap())
            .unwrap();
        assert!(matches!(
            r.poll_socket_request(),
            Some(SocketRequest::Open {
                id: SocketId(1),
                ..
            })
        ));
        r.handle_socket_opened(SocketId(1), Some(alternate.parse().unwrap()));
        let mut req = [0u8; 64];
        let n = encode_binding_request_change(&mut req, &[2; 12], CHANGE_PORT).unwrap();
        ask(&mut r, path(0, "198.51.100.7:4000"), &req[..n], &mut stats);
        let mut buf = [0u8; 1200];
        let t = r.poll_transmit(&mut buf, &mut stats).unwrap();
        assert_eq!(t.socket, SocketId(1));
        let answer = StunMessage::decode(&buf[..t.len]).unwrap();
        assert_eq!(answer.response_origin(), Some(alternate.parse().unwrap()));
        assert_eq!(answer.other_address(), Some(alternate.parse().unwrap()));
    }

    #[test]
    fn answers_beyond_the_queue_cap_are_dropped_and_counted() {
        let mut r = responder();
        let mut stats = ServerStats::default();
        let mut req = [0u8; 64];
        let n = encode_binding_request(&mut req, &[3; 12]).unwrap();
        for _ in 0..=QUEUE_CAP {
            ask(&mut r, path(0, "198.51.100.7:4000"), &req[..n], &mut stats);
        }
        assert_eq!(stats.dropped.queue_full, 1);
        let mut buf = [0u8; 1200];
        let sent = std::iter::from_fn(|| r.poll_transmit(&mut buf, &mut stats)).count();
        assert_eq!(sent, QUEUE_CAP);
    }

    #[test]
    fn stun_has_a_budget_per_source_ip_of_its_own() {
        let mut r = limited(1, 5);
        let mut stats = ServerStats::default();
        let mut req = [0u8; 64];
        let n = encode_binding_request(&mut req, &[7; 12]).unwrap();
        for port in 0..20 {
            ask(
                &mut r,
                path(0, &format!("198.51.100.7:{}", 4000 + port)),
                &req[..n],
                &mut stats,
            );
        }
        ask(&mut r, path(0, "198.51.100.8:4000"), &req[..n], &mut stats);
        let mut buf = [0u8; 1200];
        let answered: Vec<SocketAddr> =
            std::iter::from_fn(|| r.poll_transmit(&mut buf, &mut stats))
                .map(|t| t.dst)
                .collect();
        assert_eq!(
            answered.len(),
            6,
            "five for the flooded IP, one for another"
        );
        assert_eq!(stats.dropped.rate_limited, 15);
        assert_eq!(answered[5], "198.51.100.8:4000".parse().unwrap());
    }

    #[test]
    fn a_request_signed_by_a_session_is_answered_from_its_own_budget_and_signed() {
        let mut r = limited(1, 2);
        let mut stats = ServerStats::default();
        let cred = StunCredential::new(0x0100_0007, &[5; 16]);
        let from = path(0, "198.51.100.7:4000");
        let mut req = [0u8; 128];
        // A spoofer spent the IP's budget.
        let n = encode_binding_request(&mut req, &[1; 12]).unwrap();
        for _ in 0..10 {
            let m = StunMessage::decode(&req[..n]).unwrap();
            r.handle_request(crate::tests::epoch(), from, &m, &req[..n], None, &mut stats);
        }
        assert_eq!(stats.dropped.rate_limited, 8);
        let mut buf = [0u8; 1200];
        while r.poll_transmit(&mut buf, &mut stats).is_some() {}
        // The session's client, signed: answered, and the answer is signed.
        let n = encode_binding_request_with(&mut req, &[2; 12], None, Some(&cred)).unwrap();
        let signed = &req[..n];
        let m = StunMessage::decode(signed).unwrap();
        let now = crate::tests::epoch();
        r.handle_request(now, from, &m, signed, Some(&cred), &mut stats);
        let t = r.poll_transmit(&mut buf, &mut stats).expect("answered");
        let answer = StunMessage::decode(&buf[..t.len]).unwrap();
        assert_eq!(answer.mapped_address(), Some(from.addr));
        assert_eq!(
            answer.integrity_ok(&buf[..t.len], &cred.password),
            Some(true)
        );
        assert!(t.len <= n, "no amplification: {} for {n}", t.len);
        // Signed for a session we do not have, or with the wrong password: dropped.
        r.handle_request(now, from, &m, signed, None, &mut stats);
        let wrong = StunCredential::new(0x0100_0007, &[6; 16]);
        r.handle_request(now, from, &m, signed, Some(&wrong), &mut stats);
        assert_eq!(stats.dropped.auth_failed, 2);
        assert!(r.poll_transmit(&mut buf, &mut stats).is_none());
        // The session's own budget holds too.
        let answered = (0..100)
            .filter(|_| {
                r.handle_request(now, from, &m, signed, Some(&cred), &mut stats);
                r.poll_transmit(&mut buf, &mut stats).is_some()
            })
            .count();
        assert_eq!(answered, SESSION_BURST as usize - 1);
    }
}
