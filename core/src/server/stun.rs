//! The server's STUN responder: answers Binding requests with the address they came from, like
//! any STUN server, and (with NAT behaviour discovery on) with the RFC 5780 attributes, from
//! the socket a CHANGE-REQUEST asks for. The sockets themselves are [`Sockets`]' business.
//!
//! # To the letter
//! - RFC 5780 §6.1: with discovery on, every Binding success response carries MAPPED-ADDRESS
//!   beside XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN and (with a second IP) OTHER-ADDRESS, whatever
//!   the request carried, a bare 20-byte one included.
//! - RFC 5780 §6 and §7.4: a server whose alternate address has the same IP sends no
//!   OTHER-ADDRESS (Pierce's own clients learn the alternate port from the comprehension-
//!   optional [`ATTR_PIERCE_ALTERNATE`], which other clients ignore), and a CHANGE-REQUEST the
//!   server cannot honour (a change of IP with one IP; any change without discovery) gets a
//!   420 error, never silence. A CHANGE-REQUEST asking for no change is always honoured.
//! - RFC 8489 §6.3.1: a request with a comprehension-required attribute this server does not
//!   know (anything but CHANGE-REQUEST, USERNAME and the MESSAGE-INTEGRITY pair: RESPONSE-PORT,
//!   PADDING, PRIORITY, ...) gets a 420 with UNKNOWN-ATTRIBUTES naming them.
//! - RFC 5389 §12.2: a classic RFC 3489 Binding request (no magic cookie) is answered with
//!   MAPPED-ADDRESS (not XORed) and its whole 128-bit transaction id; with discovery on, also
//!   SOURCE-ADDRESS and (with a second IP) CHANGED-ADDRESS, as RFC 3489 clients expect.
//!
//! # Amplification
//! Requests draw on a budget of their own per source IP and for the whole server
//! (`ServerConfig::stun_rate_per_ip` and `stun_rate_global`), counted in bytes answered: an
//! answer costs one token per [`TOKEN_BYTES`] (40, the plain IPv4 answer) or part of it. So
//! whatever the answers, a spoofed flood makes the server send at most `stun_rate_per_ip` ×
//! 40 bytes a second toward any one address (8 kB/s by default), as when every answer was the
//! plain one. Per datagram the largest factor is the RFC 5780 answer to a bare 20-byte
//! request: 76 bytes for IPv4 (3.8x), 124 for IPv6 (6.2x); a 420 is never more than twice
//! its request (empty reason phrase, at most [`MAX_UNKNOWN_ATTRIBUTES`] types listed, each
//! from an attribute of at least 4 bytes). Requests with a FINGERPRINT that does not verify
//! are not answered.
//!
//! A STUN request proves nothing about its source, so a spoofer can spend an IP's STUN budget:
//! that costs the clients behind that IP their NAT behaviour discovery for as long as the
//! flood lasts (they still connect, join and relay, and punch from the address their session
//! shows the server), never their sessions, whose handshakes have a budget of their own, nor
//! their signed STUN, which spends their session's.

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
    ATTR_CHANGE_REQUEST, ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_PIERCE_ALTERNATE, ATTR_USERNAME,
    BINDING_REQUEST, HEADER_LEN, MAX_UNKNOWN_ATTRIBUTES, Rfc5780, StunCredential, StunMessage,
    UnknownAttributes, encode_binding_response_with, encode_classic_binding_response,
    encode_unknown_attribute_error,
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
/// Bytes answered per token of the unsigned budget: the plain IPv4 answer, which the budget's
/// rates were chosen for, costs one; the RFC 5780 answer two (IPv4) or four (IPv6).
const TOKEN_BYTES: usize = 40;

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
    /// A classic RFC 3489 request's id head ([`StunMessage::classic`]).
    classic: Option<[u8; 4]>,
    /// The socket the request came in on.
    on: SocketId,
    /// The socket the response leaves from (differs with CHANGE-REQUEST).
    from: SocketId,
    answer: Answer,
    /// Sign it (the request was signed by this session's client).
    credential: Option<StunCredential>,
}

#[derive(Debug)]
enum Answer {
    /// Success; `rfc5780`: with the NAT behaviour discovery attributes.
    Success { rfc5780: bool },
    /// 420 Unknown Attribute, naming these.
    Unknown(UnknownAttributes),
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
    /// on a UDP socket is answered (with success or a 420, see the module docs) unless the
    /// rate limit or the queue says no. A request signed with short-term credentials (RFC
    /// 8489 §9.1) is answered only if it verifies with `credential` (the session its USERNAME
    /// names, if that is a client of ours), then from that session's budget rather than its
    /// IP's, and the answer is signed too.
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
        let signed = m.attrs().any(|(t, _)| {
            matches!(
                t,
                ATTR_USERNAME | ATTR_MESSAGE_INTEGRITY | ATTR_MESSAGE_INTEGRITY_SHA256
            )
        });
        let credential = match credential {
            _ if !signed => None,
            Some(c)
                if m.classic.is_none() && m.integrity_ok(datagram, &c.password) == Some(true) =>
            {
                Some(*c)
            }
            _ => {
                // Signed for no session of ours, or not verifying: nothing to answer with.
                stats.dropped.auth_failed += 1;
                return;
            }
        };
        let discovery = self.sockets.enabled();
        // RFC 8489 §6.3.1: unknown comprehension-required attributes get a 420.
        let unknown = m.unknown_required(|t| {
            matches!(
                t,
                ATTR_CHANGE_REQUEST
                    | ATTR_USERNAME
                    | ATTR_MESSAGE_INTEGRITY
                    | ATTR_MESSAGE_INTEGRITY_SHA256
            )
        });
        let reply_from = if discovery {
            self.sockets.reply_socket(path.socket, flags)
        } else {
            (flags == 0).then_some(path.socket)
        };
        let (answer, from) = match reply_from {
            _ if !unknown.is_empty() => (Answer::Unknown(unknown), path.socket),
            Some(from) => (Answer::Success { rfc5780: discovery }, from),
            // RFC 5780 §6: a change this server cannot make (no alternate, or one IP only).
            None => (
                Answer::Unknown(UnknownAttributes::one(ATTR_CHANGE_REQUEST)),
                path.socket,
            ),
        };
        let reply = Reply {
            to: path.addr,
            txid: m.transaction_id,
            classic: m.classic,
            on: path.socket,
            from,
            answer,
            credential,
        };
        let allowed = match &credential {
            Some(c) => self.signed.allow(now, c.username),
            None => {
                let cost = self.answer_len(&reply).div_ceil(TOKEN_BYTES);
                let cost = u32::try_from(cost).unwrap_or(u32::MAX);
                self.limiter.allow_n(now, path.addr.ip(), cost)
            }
        };
        if !allowed {
            stats.dropped.rate_limited += 1;
            return;
        }
        if self.queue.len() >= QUEUE_CAP {
            stats.dropped.queue_full += 1;
            return;
        }
        self.queue.push_back(reply);
    }

    /// Writes the next answer into `buf`.
    pub(super) fn poll_transmit(
        &mut self,
        buf: &mut [u8],
        stats: &mut ServerStats,
    ) -> Option<Transmit> {
        let r = self.queue.pop_front()?;
        let len = self.encode(&r, buf)?;
        stats.stun_answered += 1;
        Some(Transmit {
            dst: r.to,
            len,
            socket: r.from,
            ttl: None,
        })
    }

    /// The RFC 5780 attributes of a success answer to a request on `on` sent from `from`.
    fn rfc5780(&self, on: SocketId, from: SocketId) -> Option<Rfc5780> {
        let origin = self.sockets.addr(from)?;
        let alternate = self.sockets.other_address(on);
        let two_ips = self.sockets.two_ips();
        Some(Rfc5780 {
            origin,
            other: alternate.filter(|_| two_ips),
            same_ip_alternate: alternate.filter(|_| !two_ips),
        })
    }

    fn encode(&self, r: &Reply, buf: &mut [u8]) -> Option<usize> {
        let signed = r.credential.as_ref();
        let rfc5780 = match r.answer {
            Answer::Success { rfc5780: true } => self.rfc5780(r.on, r.from),
            _ => None,
        };
        let len = match (&r.answer, r.classic) {
            (Answer::Unknown(u), classic) => {
                encode_unknown_attribute_error(buf, &r.txid, classic, u, signed)
            }
            (Answer::Success { .. }, Some(head)) => {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&head);
                id[4..].copy_from_slice(&r.txid);
                let source = rfc5780.map(|x| x.origin);
                let changed = rfc5780.and_then(|x| x.other);
                encode_classic_binding_response(buf, &id, r.to, source, changed)
            }
            (Answer::Success { .. }, None) => {
                encode_binding_response_with(buf, &r.txid, r.to, rfc5780.as_ref(), signed)
            }
        };
        len.ok()
    }

    /// How long `r`'s answer will be (what the budget is charged for).
    fn answer_len(&self, r: &Reply) -> usize {
        let mut scratch = [0u8; ANSWER_MAX];
        self.encode(r, &mut scratch).unwrap_or(ANSWER_MAX)
    }
}

/// The longest answer: an IPv6 RFC 5780 answer, signed (20 + 4 × 24 + 36 + 8 = 160 bytes),
/// or a 420 listing [`MAX_UNKNOWN_ATTRIBUTES`] types, signed (20 + 8 + 20 + 36 + 8).
const ANSWER_MAX: usize = 160;

const _: () = assert!(HEADER_LEN + 8 + 4 + 2 * MAX_UNKNOWN_ATTRIBUTES + 36 + 8 <= ANSWER_MAX);
const _: () = assert!(ATTR_PIERCE_ALTERNATE >= 0xC000, "comprehension-optional");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::stun::{
        BINDING_ERROR, BINDING_SUCCESS, CHANGE_IP, CHANGE_PORT, encode_binding_request,
        encode_binding_request_change, encode_binding_request_with,
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

    /// A responder doing discovery at `primary` with `alternate` (all its sockets opened).
    fn discovering(primary: &str, alternate: &str) -> StunResponder {
        let mut r = responder();
        r.enable_discovery(primary.parse().unwrap(), alternate.parse().unwrap())
            .unwrap();
        while let Some(SocketRequest::Open { id, addr }) = r.poll_socket_request() {
            r.handle_socket_opened(id, addr);
        }
        r
    }

    /// The answer to `request` from `from` on socket `on`: (socket, bytes).
    fn answer(r: &mut StunResponder, on: u16, from: &str, request: &[u8]) -> (SocketId, Vec<u8>) {
        let mut stats = ServerStats::default();
        let m = match StunMessage::decode(request) {
            Ok(m) => m,
            Err(_) => StunMessage::decode_classic(request).unwrap(),
        };
        let now = crate::tests::epoch();
        r.handle_request(now, path(on, from), &m, request, None, &mut stats);
        let mut buf = [0u8; 1200];
        let t = r.poll_transmit(&mut buf, &mut stats).expect("answered");
        assert_eq!(t.dst, from.parse().unwrap());
        assert!(r.poll_transmit(&mut buf, &mut stats).is_none());
        (t.socket, buf[..t.len].to_vec())
    }

    /// A request with `attrs` (type, value), padded, and no FINGERPRINT.
    fn request_with(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        crate::wire::stun::test_request([5; 12], attrs)
    }

    /// The same as a classic RFC 3489 request (its id's head where the cookie was).
    fn classic(mut request: Vec<u8>) -> Vec<u8> {
        request[4..8].copy_from_slice(&[3, 0xA1, 0xB2, 0xC3]);
        request
    }

    /// The UNKNOWN-ATTRIBUTES of a 420.
    fn unknown_listed(m: &StunMessage<'_>) -> Vec<u16> {
        let (_, v) = m
            .attrs()
            .find(|(t, _)| *t == crate::wire::stun::ATTR_UNKNOWN_ATTRIBUTES)
            .expect("UNKNOWN-ATTRIBUTES");
        v.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    const BARE: [u8; 20] = [
        0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];

    #[test]
    fn rfc5780_6_without_discovery_a_change_request_gets_420_and_no_change_is_honoured() {
        let mut r = responder();
        let mut req = [0u8; 64];
        let n = encode_binding_request_change(&mut req, &[1; 12], CHANGE_PORT).unwrap();
        let from = "198.51.100.7:4000";
        let (on, bytes) = answer(&mut r, 0, from, &req[..n]);
        assert_eq!(on, SocketId::PRIMARY);
        let m = StunMessage::decode(&bytes).unwrap();
        assert_eq!(m.message_type, BINDING_ERROR);
        assert_eq!(m.transaction_id, [1; 12]);
        assert_eq!(m.error_code(), Some(420));
        assert_eq!(unknown_listed(&m), [ATTR_CHANGE_REQUEST]);
        assert!(m.fingerprint_ok(&bytes));
        assert_eq!(bytes.len(), 44, "{} bytes for {n}", bytes.len());
        // Asking for no change is a request this server can honour: the plain answer.
        let n = encode_binding_request_change(&mut req, &[2; 12], 0).unwrap();
        let (_, bytes) = answer(&mut r, 0, from, &req[..n]);
        let m = StunMessage::decode(&bytes).unwrap();
        assert_eq!(m.message_type, BINDING_SUCCESS);
        assert_eq!(bytes.len(), crate::wire::stun::BINDING_RESPONSE_V4_LEN);
    }

    #[test]
    fn rfc5780_6_1_every_answer_of_a_discovery_server_has_both_mapped_addresses_origin_and_other() {
        let mut r = discovering("203.0.113.1:3478", "203.0.113.2:3479");
        let from = "198.51.100.7:4000";
        // A bare 20-byte request, with no RFC 5780 attribute at all.
        let (on, bytes) = answer(&mut r, 0, from, &BARE);
        assert_eq!(on, SocketId::PRIMARY);
        let m = StunMessage::decode(&bytes).unwrap();
        assert_eq!(m.message_type, BINDING_SUCCESS);
        let types: Vec<u16> = m.attrs().map(|(t, _)| t).collect();
        assert_eq!(types, [0x0020, 0x0001, 0x802B, 0x802C, 0x8028]);
        assert_eq!(m.mapped_address(), Some(from.parse().unwrap()));
        assert_eq!(
            m.response_origin(),
            Some("203.0.113.1:3478".parse().unwrap())
        );
        assert_eq!(m.other_address(), Some("203.0.113.2:3479".parse().unwrap()));
        assert_eq!(bytes.len(), 76, "3.8x the bare request");
        // Both mapped addresses say the same.
        let plain = m.attrs().find(|(t, _)| *t == 0x0001).unwrap().1;
        assert_eq!(plain, &[0, 1, 0x0F, 0xA0, 198, 51, 100, 7]);
        // From the other IP and port, on request.
        let mut req = [0u8; 64];
        let flags = CHANGE_IP | CHANGE_PORT;
        let n = encode_binding_request_change(&mut req, &[2; 12], flags).unwrap();
        let (on, bytes) = answer(&mut r, 0, from, &req[..n]);
        assert_eq!(on, SocketId(1));
        let m = StunMessage::decode(&bytes).unwrap();
        assert_eq!(
            m.response_origin(),
            Some("203.0.113.2:3479".parse().unwrap())
        );
    }

    #[test]
    fn rfc5780_6_and_7_4_a_one_ip_server_sends_no_other_address_and_refuses_a_change_of_ip() {
        let (primary, alternate) = ("127.0.0.1:3478", "127.0.0.1:3479");
        let mut r = discovering(primary, alternate);
        let from = "198.51.100.7:4000";
        let (_, bytes) = answer(&mut r, 0, from, &BARE);
        let m = StunMessage::decode(&bytes).unwrap();
        assert_eq!(m.other_address(), None, "no second IP, no OTHER-ADDRESS");
        assert_eq!(m.changed_address(), None);
        assert_eq!(m.response_origin(), Some(primary.parse().unwrap()));
        // Pierce's own clients still learn the other port, from an attribute others ignore.
        assert_eq!(m.alternate_address(), Some(alternate.parse().unwrap()));
        assert!(m.attrs().any(|(t, _)| t == ATTR_PIERCE_ALTERNATE));
        // A change of port it can make.
        let mut req = [0u8; 64];
        let n = encode_binding_request_change(&mut req, &[2; 12], CHANGE_PORT).unwrap();
        let (on, bytes) = answer(&mut r, 0, from, &req[..n]);
        assert_eq!(on, SocketId(1));
        let m = StunMessage::decode(&bytes).unwrap();
        assert_eq!(m.response_origin(), Some(alternate.parse().unwrap()));
        // A change of IP it cannot: 420, not silence.
        for flags in [CHANGE_IP, CHANGE_IP | CHANGE_PORT] {
            let n = encode_binding_request_change(&mut req, &[3; 12], flags).unwrap();
            let (on, bytes) = answer(&mut r, 0, from, &req[..n]);
            assert_eq!(on, SocketId::PRIMARY);
            let m = StunMessage::decode(&bytes).unwrap();
            assert_eq!(m.message_type, BINDING_ERROR);
            assert_eq!(m.error_code(), Some(420));
            assert_eq!(unknown_listed(&m), [ATTR_CHANGE_REQUEST]);
        }
    }

    #[test]
    fn rfc8489_6_3_1_unknown_comprehension_required_attributes_get_420_with_unknown_attributes() {
        for mut r in [
            responder(),
            discovering("203.0.113.1:3478", "203.0.113.2:3479"),
        ] {
            let from = "198.51.100.7:4000";
            // RESPONSE-PORT and PADDING (RFC 5780 §7.5, §7.6: not implemented), PRIORITY
            // (ICE), an unassigned one; SOFTWARE is comprehension-optional and ignored.
            for (attr, value) in [
                (0x0027u16, &[0x12, 0x34, 0, 0][..]),
                (0x0026, &[0; 4]),
                (0x0024, &[0, 0, 0, 1]),
                (0x7F00, &[]),
            ] {
                let req = request_with(&[(0x8022, b"test"), (attr, value)]);
                let (_, bytes) = answer(&mut r, 0, from, &req);
                let m = StunMessage::decode(&bytes).unwrap();
                assert_eq!(m.message_type, BINDING_ERROR, "{attr:#06x}");
                assert_eq!(m.transaction_id, [5; 12]);
                assert_eq!(m.error_code(), Some(420));
                assert_eq!(unknown_listed(&m), [attr]);
                assert!(m.fingerprint_ok(&bytes));
                // No bigger than needed: header, ERROR-CODE, UNKNOWN-ATTRIBUTES, FINGERPRINT.
                assert_eq!(bytes.len(), 44);
                assert!(bytes.len() < 2 * req.len(), "less than twice the request");
            }
            // Several, each named once, in order.
            let req = request_with(&[(0x0027, &[0; 4]), (0x0026, &[]), (0x0027, &[0; 4])]);
            let (_, bytes) = answer(&mut r, 0, from, &req);
            let m = StunMessage::decode(&bytes).unwrap();
            assert_eq!(unknown_listed(&m), [0x0027, 0x0026]);
            // Comprehension-optional ones alone: success.
            let req = request_with(&[(0x8022, b"test"), (0x802F, &[0; 4])]);
            let (_, bytes) = answer(&mut r, 0, from, &req);
            let m = StunMessage::decode(&bytes).unwrap();
            assert_eq!(m.message_type, BINDING_SUCCESS);
        }
    }

    #[test]
    fn rfc5389_12_2_a_classic_request_gets_mapped_address_and_its_16_byte_id_no_xor() {
        let from = "198.51.100.7:4000";
        let id = [3, 0xA1, 0xB2, 0xC3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5];
        // Without discovery: MAPPED-ADDRESS alone.
        let mut r = responder();
        let (_, bytes) = answer(&mut r, 0, from, &classic(request_with(&[])));
        #[rustfmt::skip]
        let want = [
            0x01, 0x01, 0x00, 0x0C,
            3, 0xA1, 0xB2, 0xC3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
            0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x0F, 0xA0, 198, 51, 100, 7,
        ];
        assert_eq!(bytes, want);
        // With two IPs: SOURCE-ADDRESS and CHANGED-ADDRESS too (RFC 3489 §11.2), and the
        // changes a classic client asks for are made.
        let mut r = discovering("203.0.113.1:3478", "203.0.113.2:3479");
        let req = classic(request_with(&[(ATTR_CHANGE_REQUEST, &[0, 0, 0, 6])]));
        let (on, bytes) = answer(&mut r, 0, from, &req);
        assert_eq!(on, SocketId(1));
        assert_eq!(&bytes[..2], &[0x01, 0x01]);
        assert_eq!(&bytes[4..20], &id);
        let m = StunMessage::decode_classic(&req).unwrap();
        let attrs = StunMessage {
            attributes: &bytes[20..],
            ..m
        };
        let types: Vec<u16> = attrs.attrs().map(|(t, _)| t).collect();
        assert_eq!(types, [0x0001, 0x0004, 0x0005]);
        assert_eq!(attrs.mapped_address(), Some(from.parse().unwrap()));
        assert_eq!(
            attrs.changed_address(),
            Some("203.0.113.2:3479".parse().unwrap()),
            "the other IP and port of the socket it came on"
        );
        // With one IP: no CHANGED-ADDRESS, and a change of IP is refused with a classic 420.
        let mut r = discovering("127.0.0.1:3478", "127.0.0.1:3479");
        let (_, bytes) = answer(&mut r, 0, from, &classic(request_with(&[])));
        let attrs = StunMessage {
            attributes: &bytes[20..],
            ..m
        };
        let types: Vec<u16> = attrs.attrs().map(|(t, _)| t).collect();
        assert_eq!(types, [0x0001, 0x0004]);
        let (_, bytes) = answer(&mut r, 0, from, &req);
        assert_eq!(&bytes[..2], &[0x01, 0x11]);
        assert_eq!(&bytes[4..20], &id);
    }

    #[test]
    fn a_signed_request_to_a_one_ip_server_still_learns_the_alternate_port() {
        let (primary, alternate) = ("127.0.0.1:3478", "127.0.0.1:3479");
        let mut r = discovering(primary, alternate);
        let mut stats = ServerStats::default();
        let cred = StunCredential::new(0x0100_0007, &[5; 16]);
        let mut req = [0u8; 128];
        let n = encode_binding_request_with(&mut req, &[2; 12], Some(0), Some(&cred)).unwrap();
        let m = StunMessage::decode(&req[..n]).unwrap();
        let from = path(0, "198.51.100.7:4000");
        r.handle_request(
            crate::tests::epoch(),
            from,
            &m,
            &req[..n],
            Some(&cred),
            &mut stats,
        );
        let mut buf = [0u8; 1200];
        let t = r.poll_transmit(&mut buf, &mut stats).expect("answered");
        let answer = StunMessage::decode(&buf[..t.len]).unwrap();
        assert_eq!(
            answer.integrity_ok(&buf[..t.len], &cred.password),
            Some(true)
        );
        assert_eq!(answer.mapped_address(), Some(from.addr));
        assert_eq!(answer.alternate_address(), Some(alternate.parse().unwrap()));
    }

    /// Every shape of request an attacker can send unsigned, for IPv4 and IPv6: the largest
    /// answer for its size, and what the budget lets through.
    #[test]
    fn amplification_is_at_most_3_8x_for_ipv4_and_6_2x_for_ipv6_and_the_budget_counts_bytes() {
        let requests: Vec<Vec<u8>> = vec![
            BARE.to_vec(),
            classic(request_with(&[])),
            request_with(&[(ATTR_CHANGE_REQUEST, &[0, 0, 0, 0])]),
            request_with(&[(ATTR_CHANGE_REQUEST, &[0, 0, 0, 6])]),
            classic(request_with(&[(ATTR_CHANGE_REQUEST, &[0, 0, 0, 6])])),
            request_with(&[(0x0027, &[])]),
            classic(request_with(&[(0x0027, &[])])),
            request_with(&(0..20).map(|t| (0x0100 + t, &[][..])).collect::<Vec<_>>()),
        ];
        let setups = [
            (
                "203.0.113.1:3478",
                "203.0.113.2:3479",
                "198.51.100.7:4000",
                3.8,
            ),
            ("127.0.0.1:3478", "127.0.0.1:3479", "198.51.100.7:4000", 3.8),
            (
                "[2001:db8::1]:3478",
                "[2001:db8::2]:3479",
                "[2001:db8::7]:4000",
                6.2,
            ),
        ];
        for (primary, alternate, from, limit) in setups {
            let mut worst = 0.0f64;
            for req in &requests {
                let mut r = discovering(primary, alternate);
                let (_, bytes) = answer(&mut r, 0, from, req);
                let factor = bytes.len() as f64 / req.len() as f64;
                worst = worst.max(factor);
                assert!(
                    factor <= limit,
                    "{primary}: {} bytes for {}: x{factor:.2}",
                    bytes.len(),
                    req.len()
                );
            }
            assert_eq!(
                worst, limit,
                "{primary}: the worst case is the bare request"
            );
            println!("STUN amplification {primary} / {alternate}: at most x{worst:.1}");
        }
        // The budget counts bytes: a burst of 10 tokens (400 bytes) lets five 76-byte
        // answers out, not ten.
        let mut r = limited(1, 10);
        r.enable_discovery(
            "203.0.113.1:3478".parse().unwrap(),
            "203.0.113.2:3479".parse().unwrap(),
        )
        .unwrap();
        while let Some(SocketRequest::Open { id, addr }) = r.poll_socket_request() {
            r.handle_socket_opened(id, addr);
        }
        let mut stats = ServerStats::default();
        for _ in 0..20 {
            ask(&mut r, path(0, "198.51.100.7:4000"), &BARE, &mut stats);
        }
        let mut buf = [0u8; 1200];
        let sent: usize = std::iter::from_fn(|| r.poll_transmit(&mut buf, &mut stats))
            .map(|t| t.len)
            .sum();
        assert_eq!(sent, 5 * 76);
        assert!(sent <= 10 * TOKEN_BYTES);
        assert_eq!(stats.dropped.rate_limited, 15);
    }

    #[test]
    fn mangled_requests_never_panic_and_are_answered_or_dropped_and_counted() {
        let mut r = discovering("203.0.113.1:3478", "203.0.113.2:3479");
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let cred = StunCredential::new(0x0100_0007, &[5; 16]);
        let mut base = [0u8; 128];
        let n = encode_binding_request_with(&mut base, &[9; 12], Some(6), Some(&cred)).unwrap();
        let mut stats = ServerStats::default();
        let mut buf = [0u8; 1200];
        let (mut seen, mut answered) = (0u64, 0u64);
        for i in 0..20_000 {
            let mut d = if i % 2 == 0 {
                base[..n].to_vec()
            } else {
                classic(request_with(&[(ATTR_CHANGE_REQUEST, &[0, 0, 0, 2])]))
            };
            for _ in 0..=(next() % 4) {
                let at = (next() as usize) % d.len();
                d[at] ^= 1 << (next() % 8);
            }
            d.truncate(d.len() - (next() as usize % 3) * 4 * usize::from(next() % 4 == 0));
            let Ok(crate::wire::demux::Datagram::Stun(m)) = crate::wire::demux::decode(&d) else {
                continue;
            };
            seen += 1;
            let c = (i % 3 == 0).then_some(&cred);
            r.handle_request(
                crate::tests::epoch(),
                path(0, "198.51.100.7:4000"),
                &m,
                &d,
                c,
                &mut stats,
            );
            while let Some(t) = r.poll_transmit(&mut buf, &mut stats) {
                answered += 1;
                assert!(t.len <= ANSWER_MAX);
            }
        }
        let d = &stats.dropped;
        assert_eq!(
            seen,
            answered + d.stun + d.auth_failed + d.rate_limited + d.queue_full
        );
        assert!(
            answered > 0 && d.stun + d.auth_failed > 0,
            "{answered} {d:?}"
        );
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
