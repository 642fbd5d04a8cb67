//! STUN (RFC 8489) message header, enough to tell a STUN message from a Pierce packet, and
//! the few attributes Pierce reads and writes. Classic RFC 3489 Binding requests (no magic
//! cookie, a 128-bit transaction id) are recognised too, so that the server can answer them
//! (RFC 5389 §12.2).
//!
//! ```text
//! 0b00 + message type (14 bits) | message length (u16, multiple of 4)
//! | magic cookie 0x2112A442 | transaction id (12 bytes) | attributes (length bytes)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{BufferTooSmall, DecodeError, Reader, Writer};

/// Binding request (class request, method Binding).
pub const BINDING_REQUEST: u16 = 0x0001;
/// Binding success response.
pub const BINDING_SUCCESS: u16 = 0x0101;
/// Binding error response (RFC 8489 §6.3.4).
pub const BINDING_ERROR: u16 = 0x0111;
/// ERROR-CODE (RFC 8489 §14.8).
pub const ATTR_ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9): the comprehension-required attributes a 420 refuses.
pub const ATTR_UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// Error 420 Unknown Attribute (RFC 8489 §14.8).
pub const ERROR_UNKNOWN_ATTRIBUTE: u16 = 420;
/// SOURCE-ADDRESS (RFC 3489 §11.2.5): where the answer was sent from (RESPONSE-ORIGIN's
/// ancestor), in answers to classic requests.
pub const ATTR_SOURCE_ADDRESS: u16 = 0x0004;
/// CHANGED-ADDRESS (RFC 3489 §11.2.3): the server's other IP and port (OTHER-ADDRESS's
/// ancestor), still sent by RFC 3489 servers such as Vovida's `stund`.
pub const ATTR_CHANGED_ADDRESS: u16 = 0x0005;
/// The alternate address of a Pierce server with one IP (another port only): RFC 5780 §7.4
/// forbids OTHER-ADDRESS then, but Pierce's own discovery can still measure port dependence
/// with it. Comprehension-optional (0xC000 and up), so every other client ignores it; not
/// registered with IANA.
pub const ATTR_PIERCE_ALTERNATE: u16 = 0xC0A7;
/// MAPPED-ADDRESS (RFC 5389 §15.1; still sent by old servers).
pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// FINGERPRINT (RFC 8489 §14.7).
pub const ATTR_FINGERPRINT: u16 = 0x8028;
/// USERNAME (RFC 8489 §14.3).
pub const ATTR_USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6): an HMAC-SHA256 over the message up to it, keyed
/// with the short-term password.
pub const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// CHANGE-REQUEST (RFC 5780 §7.2): answer from the other IP and/or the other port.
pub const ATTR_CHANGE_REQUEST: u16 = 0x0003;
/// RESPONSE-ORIGIN (RFC 5780 §7.3): the address the response was sent from.
pub const ATTR_RESPONSE_ORIGIN: u16 = 0x802B;
/// OTHER-ADDRESS (RFC 5780 §7.4): the server's alternate IP and port.
pub const ATTR_OTHER_ADDRESS: u16 = 0x802C;
/// CHANGE-REQUEST flag: send the response from the alternate IP.
pub const CHANGE_IP: u32 = 0x04;
/// CHANGE-REQUEST flag: send the response from the alternate port.
pub const CHANGE_PORT: u32 = 0x02;
/// XOR applied to the CRC-32 in FINGERPRINT.
const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// Size of a Binding response to an IPv4 client: header, XOR-MAPPED-ADDRESS, FINGERPRINT.
pub const BINDING_RESPONSE_V4_LEN: usize = HEADER_LEN + 12 + 8;
/// Size of a Binding response to an IPv6 client.
pub const BINDING_RESPONSE_V6_LEN: usize = HEADER_LEN + 24 + 8;

/// The fixed magic cookie of RFC 8489 §5.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;

/// Short-term credentials (RFC 8489 §9.1): a request carries the USERNAME and a
/// MESSAGE-INTEGRITY-SHA256 keyed with the password, and so does its answer. Pierce gives each
/// session one (the username names the session, the password is derived from its keys), so a
/// client's STUN requests to its own server prove where they come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StunCredential {
    /// The USERNAME: eight lowercase hex digits.
    pub username: [u8; 8],
    /// The password (and so the HMAC key, RFC 8489 §9.1.1): 32 lowercase hex digits.
    pub password: [u8; 32],
}

impl std::fmt::Debug for StunCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StunCredential")
            .field("username", &String::from_utf8_lossy(&self.username))
            .finish_non_exhaustive()
    }
}

impl StunCredential {
    /// The credential of session `id` with `secret` (16 bytes from the session's keys).
    pub fn new(id: u32, secret: &[u8; 16]) -> Self {
        let mut username = [0u8; 8];
        hex_into(&id.to_be_bytes(), &mut username);
        let mut password = [0u8; 32];
        hex_into(secret, &mut password);
        Self { username, password }
    }

    /// The session id a USERNAME names, if it is one of ours.
    pub fn session_of(username: &[u8]) -> Option<u32> {
        if username.len() != 8 {
            return None;
        }
        let text = std::str::from_utf8(username).ok()?;
        if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u32::from_str_radix(text, 16).ok()
    }
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

const INTEGRITY_LEN: usize = 32;

fn hmac_sha256(key: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// True if `datagram` looks like STUN: top two bits zero and the magic cookie in place.
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[0] & 0xC0 == 0
        && datagram[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// True if `datagram` is a classic RFC 3489 Binding request: no magic cookie, the type and
/// length fields right (RFC 5389 §12.2 tells them apart by the cookie alone; the length check
/// keeps other traffic out).
pub fn is_classic_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[..2] == BINDING_REQUEST.to_be_bytes()
        && datagram[4..8] != MAGIC_COOKIE.to_be_bytes()
        && usize::from(u16::from_be_bytes([datagram[2], datagram[3]]))
            == datagram.len() - HEADER_LEN
        && datagram.len() % 4 == 0
}

/// A parsed STUN header with its attributes borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StunMessage<'a> {
    /// Message type (class and method), top two bits zero.
    pub message_type: u16,
    /// Transaction id (for a classic RFC 3489 message, its last 12 bytes).
    pub transaction_id: [u8; 12],
    /// The attribute bytes (not parsed here).
    pub attributes: &'a [u8],
    /// A classic RFC 3489 message (no magic cookie): the first four bytes of its 128-bit
    /// transaction id, which sit where the cookie would. `None`: an RFC 5389/8489 message.
    pub classic: Option<[u8; 4]>,
}

impl<'a> StunMessage<'a> {
    /// Parses the header and checks the length field against the datagram.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(datagram);
        let message_type = r.u16()?;
        let len = r.u16()? as usize;
        if message_type & 0xC000 != 0 {
            return Err(DecodeError::BadValue);
        }
        if r.u32()? != MAGIC_COOKIE {
            return Err(DecodeError::BadValue);
        }
        let transaction_id = r.array()?;
        if len % 4 != 0 || len != r.remaining() {
            return Err(DecodeError::BadLength);
        }
        Ok(Self {
            message_type,
            transaction_id,
            attributes: r.rest(),
            classic: None,
        })
    }

    /// Parses a classic RFC 3489 Binding request (see [`is_classic_binding_request`]).
    pub fn decode_classic(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        if !is_classic_binding_request(datagram) {
            return Err(DecodeError::BadValue);
        }
        let mut r = Reader::new(datagram);
        let message_type = r.u16()?;
        let _len = r.u16()?;
        let classic = Some(r.array()?);
        let transaction_id = r.array()?;
        Ok(Self {
            message_type,
            transaction_id,
            attributes: r.rest(),
            classic,
        })
    }

    /// The whole 128-bit transaction id of a classic RFC 3489 message.
    pub fn classic_id(&self) -> Option<[u8; 16]> {
        let head = self.classic?;
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&head);
        id[4..].copy_from_slice(&self.transaction_id);
        Some(id)
    }
}

impl<'a> StunMessage<'a> {
    /// The attributes as `(type, value)`, stopping at the first malformed one.
    pub fn attrs(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        let mut r = Reader::new(self.attributes);
        std::iter::from_fn(move || {
            let t = r.u16().ok()?;
            let len = r.u16().ok()? as usize;
            let v = r.bytes(len).ok()?;
            let pad = (4 - len % 4) % 4;
            r.bytes(pad.min(r.remaining())).ok()?;
            Some((t, v))
        })
    }

    /// The XOR-MAPPED-ADDRESS (or, failing that, MAPPED-ADDRESS) of a response.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        let mut plain = None;
        for (t, v) in self.attrs() {
            match t {
                ATTR_XOR_MAPPED_ADDRESS => return decode_addr(v, Some(&self.transaction_id)),
                ATTR_MAPPED_ADDRESS => plain = decode_addr(v, None),
                _ => {}
            }
        }
        plain
    }

    /// The CHANGE-REQUEST flags ([`CHANGE_IP`], [`CHANGE_PORT`]) of a request, 0 if absent;
    /// `None` if the attribute is malformed.
    pub fn change_request(&self) -> Option<u32> {
        for (t, v) in self.attrs() {
            if t == ATTR_CHANGE_REQUEST {
                let v: [u8; 4] = v.try_into().ok()?;
                return Some(u32::from_be_bytes(v));
            }
        }
        Some(0)
    }

    /// The OTHER-ADDRESS of a response (RFC 5780), if any.
    pub fn other_address(&self) -> Option<SocketAddr> {
        self.plain_addr(ATTR_OTHER_ADDRESS)
    }

    /// The CHANGED-ADDRESS of a response (RFC 3489), if any.
    pub fn changed_address(&self) -> Option<SocketAddr> {
        self.plain_addr(ATTR_CHANGED_ADDRESS)
    }

    /// The server's alternate address: OTHER-ADDRESS (RFC 5780), else CHANGED-ADDRESS (RFC
    /// 3489, still sent by some RFC 5780 servers), else a one-IP Pierce server's
    /// [`ATTR_PIERCE_ALTERNATE`].
    pub fn alternate_address(&self) -> Option<SocketAddr> {
        self.other_address()
            .or_else(|| self.changed_address())
            .or_else(|| self.plain_addr(ATTR_PIERCE_ALTERNATE))
    }

    fn plain_addr(&self, attr: u16) -> Option<SocketAddr> {
        self.attrs()
            .find(|(t, _)| *t == attr)
            .and_then(|(_, v)| decode_addr(v, None))
    }

    /// The ERROR-CODE of an error response (RFC 8489 §14.8: class × 100 + number), if any.
    pub fn error_code(&self) -> Option<u16> {
        let (_, v) = self.attrs().find(|(t, _)| *t == ATTR_ERROR_CODE)?;
        let (class, number) = (*v.get(2)? & 0x07, *v.get(3)?);
        Some(u16::from(class) * 100 + u16::from(number))
    }

    /// The comprehension-required attributes (type below 0x8000, RFC 8489 §14) for which
    /// `known` says false, each once, in order; at most [`MAX_UNKNOWN_ATTRIBUTES`].
    pub fn unknown_required(&self, known: impl Fn(u16) -> bool) -> UnknownAttributes {
        let mut out = UnknownAttributes::default();
        for (t, _) in self.attrs() {
            if t < 0x8000 && !known(t) && !out.as_slice().contains(&t) {
                if out.len == MAX_UNKNOWN_ATTRIBUTES {
                    break;
                }
                out.types[out.len] = t;
                out.len += 1;
            }
        }
        out
    }

    /// The USERNAME, if any.
    pub fn username(&self) -> Option<&'a [u8]> {
        self.attrs()
            .find(|(t, _)| *t == ATTR_USERNAME)
            .map(|(_, v)| v)
    }

    /// Whether the message carries a MESSAGE-INTEGRITY-SHA256 (`None` if it does not), and
    /// whether it verifies with `password` (`datagram` is the whole message this was decoded
    /// from). Attributes after it other than FINGERPRINT are not covered (RFC 8489 §14.6).
    pub fn integrity_ok(&self, datagram: &[u8], password: &[u8]) -> Option<bool> {
        use hmac::Mac;
        let mut offset = HEADER_LEN;
        for (t, v) in self.attrs() {
            let next = offset + 4 + v.len() + (4 - v.len() % 4) % 4;
            if t == ATTR_MESSAGE_INTEGRITY_SHA256 {
                // 16 to 32 bytes, a multiple of 4 (a truncated HMAC).
                if !(16..=INTEGRITY_LEN).contains(&v.len()) || v.len() % 4 != 0 {
                    return Some(false);
                }
                // The length field as if the message ended with this attribute.
                let len = u16::try_from(next - HEADER_LEN).unwrap_or(u16::MAX);
                let mut mac = hmac_sha256(password);
                mac.update(&datagram[..2]);
                mac.update(&len.to_be_bytes());
                mac.update(&datagram[4..offset]);
                let want = mac.finalize().into_bytes();
                let diff = want.iter().zip(v).fold(0u8, |acc, (x, y)| acc | (x ^ y));
                return Some(diff == 0);
            }
            offset = next;
        }
        None
    }

    /// The RESPONSE-ORIGIN of a response (RFC 5780), if any.
    pub fn response_origin(&self) -> Option<SocketAddr> {
        self.attrs()
            .find(|(t, _)| *t == ATTR_RESPONSE_ORIGIN)
            .and_then(|(_, v)| decode_addr(v, None))
    }

    /// False if a FINGERPRINT attribute is present and wrong (`datagram` is the whole
    /// message this was decoded from).
    pub fn fingerprint_ok(&self, datagram: &[u8]) -> bool {
        let mut offset = HEADER_LEN;
        for (t, v) in self.attrs() {
            if t == ATTR_FINGERPRINT {
                if v.len() != 4 {
                    return false;
                }
                let want = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                return crc32(&datagram[..offset]) ^ FINGERPRINT_XOR == want;
            }
            offset += 4 + v.len() + (4 - v.len() % 4) % 4;
        }
        true
    }
}

/// Attribute types listed in one UNKNOWN-ATTRIBUTES at most: the error needs one to be
/// useful, and a list that could grow with the request would make it an amplifier.
pub const MAX_UNKNOWN_ATTRIBUTES: usize = 8;

/// The unknown comprehension-required attribute types of a request (for a 420 answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnknownAttributes {
    types: [u16; MAX_UNKNOWN_ATTRIBUTES],
    len: usize,
}

impl UnknownAttributes {
    /// Just `t`.
    pub fn one(t: u16) -> Self {
        let mut u = Self::default();
        u.types[0] = t;
        u.len = 1;
        u
    }

    /// The types, in the order the request had them.
    pub fn as_slice(&self) -> &[u16] {
        &self.types[..self.len]
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn decode_addr(v: &[u8], xor_txid: Option<&[u8; 12]>) -> Option<SocketAddr> {
    let mut r = Reader::new(v);
    let _reserved = r.u8().ok()?;
    let family = r.u8().ok()?;
    let mut port = r.u16().ok()?;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    if xor_txid.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        0x01 => {
            let mut a: [u8; 4] = r.array().ok()?;
            if xor_txid.is_some() {
                for (b, k) in a.iter_mut().zip(cookie) {
                    *b ^= k;
                }
            }
            IpAddr::V4(Ipv4Addr::from(a))
        }
        0x02 => {
            let mut a: [u8; 16] = r.array().ok()?;
            if let Some(txid) = xor_txid {
                let key: Vec<u8> = cookie.iter().chain(txid.iter()).copied().collect();
                for (b, k) in a.iter_mut().zip(key) {
                    *b ^= k;
                }
            }
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn put_xor_addr(
    w: &mut Writer<'_>,
    addr: SocketAddr,
    txid: &[u8; 12],
) -> Result<(), BufferTooSmall> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            w.u16(ATTR_XOR_MAPPED_ADDRESS)?;
            w.u16(8)?;
            w.put(&[0, 0x01])?;
            w.u16(port)?;
            let mut a = ip.octets();
            for (b, k) in a.iter_mut().zip(cookie) {
                *b ^= k;
            }
            w.put(&a)
        }
        IpAddr::V6(ip) => {
            w.u16(ATTR_XOR_MAPPED_ADDRESS)?;
            w.u16(20)?;
            w.put(&[0, 0x02])?;
            w.u16(port)?;
            let mut a = ip.octets();
            for (b, k) in a.iter_mut().zip(cookie.iter().chain(txid.iter())) {
                *b ^= k;
            }
            w.put(&a)
        }
    }
}

/// A plain (not XORed) address attribute: MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS.
fn put_plain_addr(w: &mut Writer<'_>, attr: u16, addr: SocketAddr) -> Result<(), BufferTooSmall> {
    w.u16(attr)?;
    match addr.ip() {
        IpAddr::V4(ip) => {
            w.u16(8)?;
            w.put(&[0, 0x01])?;
            w.u16(addr.port())?;
            w.put(&ip.octets())
        }
        IpAddr::V6(ip) => {
            w.u16(20)?;
            w.put(&[0, 0x02])?;
            w.u16(addr.port())?;
            w.put(&ip.octets())
        }
    }
}

/// Writes a message with the given attributes writer, a MESSAGE-INTEGRITY-SHA256 keyed with
/// `password` (if any) and a FINGERPRINT; returns its length.
fn encode_with_fingerprint(
    buf: &mut [u8],
    message_type: u16,
    txid: &[u8; 12],
    password: Option<&[u8]>,
    attrs: impl FnOnce(&mut Writer<'_>) -> Result<(), BufferTooSmall>,
) -> Result<usize, BufferTooSmall> {
    let mut w = Writer::new(buf);
    w.u16(message_type)?;
    w.u16(0)?; // length, patched below
    w.u32(MAGIC_COOKIE)?;
    w.put(txid)?;
    attrs(&mut w)?;
    let integrity_at = w.len();
    if password.is_some() {
        // Filled in below, once the bytes before it are final.
        w.u16(ATTR_MESSAGE_INTEGRITY_SHA256)?;
        w.u16(INTEGRITY_LEN as u16)?;
        w.zeros(INTEGRITY_LEN)?;
    }
    // The length covers the attributes including the FINGERPRINT about to be added.
    let len = (w.len() - HEADER_LEN + 8) as u16;
    w.patch_u16(2, len);
    w.u16(ATTR_FINGERPRINT)?;
    w.u16(4)?;
    w.u32(0)?;
    let n = w.len();
    if let Some(password) = password {
        use hmac::Mac;
        let msg = &mut buf[..n];
        // The HMAC covers the header with a length that ends at the integrity attribute.
        let upto = (integrity_at + 4 + INTEGRITY_LEN - HEADER_LEN) as u16;
        let mut mac = hmac_sha256(password);
        mac.update(&msg[..2]);
        mac.update(&upto.to_be_bytes());
        mac.update(&msg[4..integrity_at]);
        let value = integrity_at + 4;
        msg[value..value + INTEGRITY_LEN].copy_from_slice(&mac.finalize().into_bytes());
    }
    fix_fingerprint(&mut buf[..n]);
    Ok(n)
}

/// Writes a Binding success response telling `mapped` its address; returns its length.
pub fn encode_binding_response(
    buf: &mut [u8],
    txid: &[u8; 12],
    mapped: SocketAddr,
) -> Result<usize, BufferTooSmall> {
    encode_with_fingerprint(buf, BINDING_SUCCESS, txid, None, |w| {
        put_xor_addr(w, mapped, txid)
    })
}

/// What an RFC 5780 answer adds (RFC 5780 §6.1): where it comes from and the server's
/// alternate address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc5780 {
    /// RESPONSE-ORIGIN: the address the answer leaves from.
    pub origin: SocketAddr,
    /// OTHER-ADDRESS: only a server with a second IP has one (RFC 5780 §7.4).
    pub other: Option<SocketAddr>,
    /// [`ATTR_PIERCE_ALTERNATE`]: the alternate port of a one-IP Pierce server.
    pub same_ip_alternate: Option<SocketAddr>,
}

/// Writes a Binding success response for NAT behaviour discovery (RFC 5780): the mapped
/// address, where the response comes from, and the server's alternate address.
pub fn encode_binding_response_5780(
    buf: &mut [u8],
    txid: &[u8; 12],
    mapped: SocketAddr,
    origin: SocketAddr,
    other: Option<SocketAddr>,
) -> Result<usize, BufferTooSmall> {
    let rfc5780 = Rfc5780 {
        origin,
        other,
        same_ip_alternate: None,
    };
    encode_binding_response_with(buf, txid, mapped, Some(&rfc5780), None)
}

/// Writes a Binding success response: XOR-MAPPED-ADDRESS; with `rfc5780`, MAPPED-ADDRESS too
/// (RFC 5780 §6.1 asks for both), RESPONSE-ORIGIN and the alternate address if any; signed
/// with `credential`'s password when the request was (RFC 8489 §9.1.3). Returns its length.
pub fn encode_binding_response_with(
    buf: &mut [u8],
    txid: &[u8; 12],
    mapped: SocketAddr,
    rfc5780: Option<&Rfc5780>,
    credential: Option<&StunCredential>,
) -> Result<usize, BufferTooSmall> {
    let password = credential.map(|c| &c.password[..]);
    encode_with_fingerprint(buf, BINDING_SUCCESS, txid, password, |w| {
        put_xor_addr(w, mapped, txid)?;
        if let Some(r) = rfc5780 {
            put_plain_addr(w, ATTR_MAPPED_ADDRESS, mapped)?;
            put_plain_addr(w, ATTR_RESPONSE_ORIGIN, r.origin)?;
            if let Some(other) = r.other {
                put_plain_addr(w, ATTR_OTHER_ADDRESS, other)?;
            }
            if let Some(alt) = r.same_ip_alternate {
                put_plain_addr(w, ATTR_PIERCE_ALTERNATE, alt)?;
            }
        }
        Ok(())
    })
}

/// Writes the answer to a classic RFC 3489 Binding request (RFC 5389 §12.2): its 128-bit
/// transaction id, MAPPED-ADDRESS (never XORed), and with `source` and `changed` the RFC 3489
/// SOURCE-ADDRESS and CHANGED-ADDRESS; no FINGERPRINT (RFC 3489 has none). Returns its length.
pub fn encode_classic_binding_response(
    buf: &mut [u8],
    id: &[u8; 16],
    mapped: SocketAddr,
    source: Option<SocketAddr>,
    changed: Option<SocketAddr>,
) -> Result<usize, BufferTooSmall> {
    encode_classic(buf, BINDING_SUCCESS, id, |w| {
        put_plain_addr(w, ATTR_MAPPED_ADDRESS, mapped)?;
        if let Some(source) = source {
            put_plain_addr(w, ATTR_SOURCE_ADDRESS, source)?;
        }
        if let Some(changed) = changed {
            put_plain_addr(w, ATTR_CHANGED_ADDRESS, changed)?;
        }
        Ok(())
    })
}

/// Writes a 420 (Unknown Attribute) Binding error response to the request `txid` (with
/// `classic`, the head of a classic request's id: see [`StunMessage::classic`]) (RFC 8489
/// §6.3.1):
/// ERROR-CODE with an empty reason phrase and UNKNOWN-ATTRIBUTES listing `unknown`, nothing
/// more than needed; FINGERPRINT and, when the request was signed, MESSAGE-INTEGRITY-SHA256
/// with `credential`. To a classic RFC 3489 request: its 128-bit id, no FINGERPRINT, and an
/// odd list padded by repeating a type (RFC 3489 §11.2.10). Returns its length.
pub fn encode_unknown_attribute_error(
    buf: &mut [u8],
    txid: &[u8; 12],
    classic: Option<[u8; 4]>,
    unknown: &UnknownAttributes,
    credential: Option<&StunCredential>,
) -> Result<usize, BufferTooSmall> {
    let types = unknown.as_slice();
    let attrs = |w: &mut Writer<'_>, classic: bool| {
        w.u16(ATTR_ERROR_CODE)?;
        w.u16(4)?;
        w.put(&[0, 0, (ERROR_UNKNOWN_ATTRIBUTE / 100) as u8, 20])?;
        let repeat = classic && types.len() % 2 == 1;
        w.u16(ATTR_UNKNOWN_ATTRIBUTES)?;
        w.u16((2 * (types.len() + usize::from(repeat))) as u16)?;
        for t in types {
            w.u16(*t)?;
        }
        if let (true, Some(first)) = (repeat, types.first()) {
            w.u16(*first)?;
        } else if types.len() % 2 == 1 {
            w.zeros(2)?;
        }
        Ok(())
    };
    match classic {
        Some(head) => {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&head);
            id[4..].copy_from_slice(txid);
            encode_classic(buf, BINDING_ERROR, &id, |w| attrs(w, true))
        }
        None => {
            let password = credential.map(|c| &c.password[..]);
            encode_with_fingerprint(buf, BINDING_ERROR, txid, password, |w| attrs(w, false))
        }
    }
}

/// Writes a classic RFC 3489 message: header with the 128-bit `id`, then `attrs`.
fn encode_classic(
    buf: &mut [u8],
    message_type: u16,
    id: &[u8; 16],
    attrs: impl FnOnce(&mut Writer<'_>) -> Result<(), BufferTooSmall>,
) -> Result<usize, BufferTooSmall> {
    let mut w = Writer::new(buf);
    w.u16(message_type)?;
    w.u16(0)?; // length, patched below
    w.put(id)?;
    attrs(&mut w)?;
    let n = w.len();
    w.patch_u16(2, (n - HEADER_LEN) as u16);
    Ok(n)
}

/// Writes a Binding request with a CHANGE-REQUEST attribute (`flags` of [`CHANGE_IP`] and
/// [`CHANGE_PORT`], possibly 0) and a FINGERPRINT; returns its length (36).
pub fn encode_binding_request_change(
    buf: &mut [u8],
    txid: &[u8; 12],
    flags: u32,
) -> Result<usize, BufferTooSmall> {
    encode_binding_request_with(buf, txid, Some(flags), None)
}

/// Writes a Binding request (no attributes but FINGERPRINT); returns its length.
pub fn encode_binding_request(buf: &mut [u8], txid: &[u8; 12]) -> Result<usize, BufferTooSmall> {
    encode_binding_request_with(buf, txid, None, None)
}

/// Writes a Binding request: a CHANGE-REQUEST with `change` (flags, possibly 0) if given, and
/// USERNAME and MESSAGE-INTEGRITY-SHA256 with `credential` if given (84 bytes with both);
/// returns its length.
pub fn encode_binding_request_with(
    buf: &mut [u8],
    txid: &[u8; 12],
    change: Option<u32>,
    credential: Option<&StunCredential>,
) -> Result<usize, BufferTooSmall> {
    let password = credential.map(|c| &c.password[..]);
    encode_with_fingerprint(buf, BINDING_REQUEST, txid, password, |w| {
        if let Some(flags) = change {
            w.u16(ATTR_CHANGE_REQUEST)?;
            w.u16(4)?;
            w.u32(flags)?;
        }
        if let Some(c) = credential {
            w.u16(ATTR_USERNAME)?;
            w.u16(c.username.len() as u16)?;
            w.put(&c.username)?;
        }
        Ok(())
    })
}

/// Fills in the CRC of a message whose last 8 bytes are a FINGERPRINT attribute.
fn fix_fingerprint(msg: &mut [u8]) {
    let at = msg.len() - 4;
    let crc = crc32(&msg[..at - 4]) ^ FINGERPRINT_XOR;
    msg[at..].copy_from_slice(&crc.to_be_bytes());
}

/// CRC-32 (ISO-HDLC, as FINGERPRINT requires), bitwise: STUN messages are tiny.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// A Binding request `txid` with `attrs` (type, value), padded, and no FINGERPRINT (tests).
#[cfg(test)]
pub(crate) fn test_request(txid: [u8; 12], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&txid);
    for (t, v) in attrs {
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&(v.len() as u16).to_be_bytes());
        m.extend_from_slice(v);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let len = (m.len() - HEADER_LEN) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Binding request with no attributes, as `turnutils_stunclient` sends it.
    #[rustfmt::skip]
    const BINDING_REQUEST_BYTES: [u8; 20] = [
        0x00, 0x01, 0x00, 0x00, // Binding request, length 0
        0x21, 0x12, 0xA4, 0x42, // magic cookie
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, // txid
    ];

    #[test]
    fn binding_request_golden_bytes() {
        assert!(is_stun(&BINDING_REQUEST_BYTES));
        let m = StunMessage::decode(&BINDING_REQUEST_BYTES).unwrap();
        assert_eq!(m.message_type, 0x0001);
        assert_eq!(m.transaction_id, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert!(m.attributes.is_empty());
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// RFC 5769 §2.2: sample IPv4 response (its attributes besides ours are skipped).
    #[test]
    fn rfc5769_ipv4_response_decodes() {
        #[rustfmt::skip]
        let msg: [u8; 80] = [
            0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01,
            0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b,
            0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20,
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
            0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
            0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7,
            0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
        ];
        let m = StunMessage::decode(&msg).unwrap();
        assert_eq!(m.message_type, BINDING_SUCCESS);
        assert_eq!(m.mapped_address(), Some("192.0.2.1:32853".parse().unwrap()));
        assert!(m.fingerprint_ok(&msg));
        let mut bad = msg;
        bad[30] ^= 1;
        assert!(!StunMessage::decode(&bad).unwrap().fingerprint_ok(&bad));
    }

    #[test]
    fn our_requests_and_responses_round_trip() {
        let txid = [9u8; 12];
        for mapped in ["203.0.113.4:5000", "[2001:db8::7]:6000"] {
            let mapped: SocketAddr = mapped.parse().unwrap();
            let mut buf = [0u8; 100];
            let n = encode_binding_response(&mut buf, &txid, mapped).unwrap();
            let expect = if mapped.is_ipv4() {
                BINDING_RESPONSE_V4_LEN
            } else {
                BINDING_RESPONSE_V6_LEN
            };
            assert_eq!(n, expect);
            let m = StunMessage::decode(&buf[..n]).unwrap();
            assert_eq!(m.message_type, BINDING_SUCCESS);
            assert_eq!(m.transaction_id, txid);
            assert_eq!(m.mapped_address(), Some(mapped));
            assert!(m.fingerprint_ok(&buf[..n]));
        }
        let mut buf = [0u8; 40];
        let n = encode_binding_request(&mut buf, &txid).unwrap();
        assert_eq!(n, 28);
        let m = StunMessage::decode(&buf[..n]).unwrap();
        assert_eq!(m.message_type, BINDING_REQUEST);
        assert!(m.fingerprint_ok(&buf[..n]));
    }

    #[test]
    fn rfc5780_attributes_round_trip() {
        let txid = [7u8; 12];
        let mut buf = [0u8; 128];
        let n = encode_binding_request_change(&mut buf, &txid, CHANGE_IP | CHANGE_PORT).unwrap();
        assert_eq!(n, 36);
        let m = StunMessage::decode(&buf[..n]).unwrap();
        assert_eq!(m.change_request(), Some(6));
        assert!(m.fingerprint_ok(&buf[..n]));
        #[rustfmt::skip]
        assert_eq!(&buf[20..28], &[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6]);
        let plain = StunMessage::decode(&BINDING_REQUEST_BYTES).unwrap();
        assert_eq!(plain.change_request(), Some(0));

        let mapped: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let origin: SocketAddr = "203.0.113.2:3479".parse().unwrap();
        let other: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let n = encode_binding_response_5780(&mut buf, &txid, mapped, origin, Some(other)).unwrap();
        // RFC 5780 §6.1: MAPPED-ADDRESS beside XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN and
        // OTHER-ADDRESS.
        assert_eq!(n, BINDING_RESPONSE_V4_LEN + 36);
        let m = StunMessage::decode(&buf[..n]).unwrap();
        assert_eq!(m.mapped_address(), Some(mapped));
        assert_eq!(m.response_origin(), Some(origin));
        assert_eq!(m.other_address(), Some(other));
        assert!(m.fingerprint_ok(&buf[..n]));
        // MAPPED-ADDRESS, then RESPONSE-ORIGIN golden bytes: type, length 8, family 1, port,
        // address (not XORed).
        #[rustfmt::skip]
        assert_eq!(&buf[32..44], &[0x00, 0x01, 0, 8, 0, 1, 0x9C, 0x40, 198, 51, 100, 7]);
        #[rustfmt::skip]
        assert_eq!(&buf[44..56], &[0x80, 0x2B, 0, 8, 0, 1, 0x0D, 0x97, 203, 0, 113, 2]);
    }

    #[test]
    fn stun_with_a_lying_length_is_refused() {
        let mut m = BINDING_REQUEST_BYTES;
        m[3] = 4;
        assert_eq!(StunMessage::decode(&m), Err(DecodeError::BadLength));
        let mut m = BINDING_REQUEST_BYTES;
        m[4] = 0;
        assert!(!is_stun(&m));
    }

    #[test]
    fn a_signed_request_and_its_signed_answer_verify_only_with_their_password() {
        let cred = StunCredential::new(0x0102_0a0b, &[7; 16]);
        assert_eq!(&cred.username, b"01020a0b");
        assert_eq!(
            StunCredential::session_of(&cred.username),
            Some(0x0102_0a0b)
        );
        assert_eq!(
            StunCredential::session_of(b"01020A0B"),
            None,
            "lowercase only"
        );
        assert_eq!(StunCredential::session_of(b"0102"), None);
        let mut buf = [0u8; 128];
        let n = encode_binding_request_with(&mut buf, &[3; 12], Some(CHANGE_PORT), Some(&cred))
            .unwrap();
        assert_eq!(n, 84);
        let req = &buf[..n];
        let m = StunMessage::decode(req).unwrap();
        assert!(m.fingerprint_ok(req));
        assert_eq!(m.username(), Some(&b"01020a0b"[..]));
        assert_eq!(m.change_request(), Some(CHANGE_PORT));
        assert_eq!(m.integrity_ok(req, &cred.password), Some(true));
        let other = StunCredential::new(0x0102_0a0b, &[8; 16]);
        assert_eq!(m.integrity_ok(req, &other.password), Some(false));
        // Any bit flipped before the integrity attribute breaks it.
        for i in (0..n - 44).filter(|i| !(2..4).contains(i)) {
            let mut bad = req.to_vec();
            bad[i] ^= 0x10;
            if let Ok(m) = StunMessage::decode(&bad) {
                assert_ne!(m.integrity_ok(&bad, &cred.password), Some(true), "byte {i}");
            }
        }
        // Unsigned messages have none.
        let n = encode_binding_request(&mut buf, &[3; 12]).unwrap();
        let m = StunMessage::decode(&buf[..n]).unwrap();
        assert_eq!(m.integrity_ok(&buf[..n], &cred.password), None);
        // The answer, signed the same way.
        let mapped: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        let n =
            encode_binding_response_with(&mut buf, &[3; 12], mapped, None, Some(&cred)).unwrap();
        let m = StunMessage::decode(&buf[..n]).unwrap();
        assert!(m.fingerprint_ok(&buf[..n]));
        assert_eq!(m.mapped_address(), Some(mapped));
        assert_eq!(m.integrity_ok(&buf[..n], &cred.password), Some(true));
    }

    #[test]
    fn message_integrity_sha256_matches_an_independent_hmac() {
        // The RFC 8489 rule spelt out by hand: HMAC-SHA256 over the header (its length
        // ending at the integrity attribute) and the attributes before it.
        use hmac::Mac;
        let cred = StunCredential::new(1, &[0xAB; 16]);
        let mut buf = [0u8; 128];
        let n = encode_binding_request_with(&mut buf, &[9; 12], None, Some(&cred)).unwrap();
        let msg = &buf[..n];
        let at = n - 8 - 36; // FINGERPRINT and the integrity attribute end the message
        assert_eq!(
            u16::from_be_bytes([msg[at], msg[at + 1]]),
            ATTR_MESSAGE_INTEGRITY_SHA256
        );
        let mut header = msg[..HEADER_LEN].to_vec();
        header[2..4].copy_from_slice(&((at + 36 - HEADER_LEN) as u16).to_be_bytes());
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(b"abababababababababababababababab")
                .unwrap();
        mac.update(&header);
        mac.update(&msg[HEADER_LEN..at]);
        assert_eq!(&msg[at + 4..at + 36], &mac.finalize().into_bytes()[..]);
    }

    fn request_with(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let txid = BINDING_REQUEST_BYTES[8..].try_into().unwrap();
        test_request(txid, attrs)
    }

    #[test]
    fn rfc8489_6_3_1_unknown_comprehension_required_attributes_are_listed_once() {
        // RESPONSE-PORT, PADDING, SOFTWARE (optional), PRIORITY, PADDING again.
        let req = request_with(&[
            (0x0027, &[0x12, 0x34, 0, 0]),
            (0x0026, &[0; 8]),
            (0x8022, b"x"),
            (0x0024, &[0, 0, 0, 1]),
            (0x0026, &[0; 4]),
            (ATTR_CHANGE_REQUEST, &[0, 0, 0, 0]),
        ]);
        let m = StunMessage::decode(&req).unwrap();
        let u = m.unknown_required(|t| t == ATTR_CHANGE_REQUEST);
        assert_eq!(u.as_slice(), &[0x0027, 0x0026, 0x0024]);
        let many: Vec<(u16, &[u8])> = (0..20).map(|t| (0x0100 + t, &[][..])).collect();
        let req = request_with(&many);
        let m = StunMessage::decode(&req).unwrap();
        assert_eq!(
            m.unknown_required(|_| false).as_slice().len(),
            MAX_UNKNOWN_ATTRIBUTES
        );
    }

    #[test]
    fn rfc8489_6_3_1_a_420_names_the_unknown_attributes_and_nothing_more() {
        let mut buf = [0u8; 128];
        let n = encode_unknown_attribute_error(
            &mut buf,
            &[4; 12],
            None,
            &UnknownAttributes::one(0x0027),
            None,
        )
        .unwrap();
        // Header, ERROR-CODE with an empty reason phrase, UNKNOWN-ATTRIBUTES (one type, two
        // bytes of padding), FINGERPRINT.
        assert_eq!(n, 20 + 8 + 8 + 8);
        #[rustfmt::skip]
        assert_eq!(&buf[..4], &[0x01, 0x11, 0, 24]);
        #[rustfmt::skip]
        assert_eq!(&buf[20..36], &[0, 9, 0, 4, 0, 0, 4, 20, 0, 0x0A, 0, 2, 0, 0x27, 0, 0]);
        let m = StunMessage::decode(&buf[..n]).unwrap();
        assert_eq!(m.message_type, BINDING_ERROR);
        assert_eq!(m.error_code(), Some(ERROR_UNKNOWN_ATTRIBUTE));
        assert!(m.fingerprint_ok(&buf[..n]));
    }

    /// A classic RFC 3489 Binding request with CHANGE-REQUEST, as Vovida's `stun` sends it:
    /// 16 bytes of transaction id where the cookie would be, the first one the test number.
    #[rustfmt::skip]
    const CLASSIC_REQUEST: [u8; 28] = [
        0x00, 0x01, 0x00, 0x08,
        0x02, 0xA1, 0xB2, 0xC3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6,
    ];

    #[test]
    fn rfc5389_12_2_classic_requests_are_recognised_by_the_missing_cookie() {
        assert!(!is_stun(&CLASSIC_REQUEST));
        assert!(is_classic_binding_request(&CLASSIC_REQUEST));
        assert!(!is_classic_binding_request(&BINDING_REQUEST_BYTES));
        let m = StunMessage::decode_classic(&CLASSIC_REQUEST).unwrap();
        assert_eq!(m.classic, Some([0x02, 0xA1, 0xB2, 0xC3]));
        assert_eq!(
            m.classic_id(),
            Some([2, 0xA1, 0xB2, 0xC3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        );
        assert_eq!(m.change_request(), Some(CHANGE_IP | CHANGE_PORT));
        // Only a Binding request whose length field is right.
        let mut bad = CLASSIC_REQUEST;
        bad[3] = 12;
        assert!(!is_classic_binding_request(&bad));
        let mut other = CLASSIC_REQUEST;
        other[1] = 0x11;
        assert!(!is_classic_binding_request(&other));
        assert!(!is_classic_binding_request(&CLASSIC_REQUEST[..19]));
    }

    #[test]
    fn rfc5389_12_2_a_classic_answer_has_mapped_address_and_the_16_byte_id_never_xor() {
        let id = [2, 0xA1, 0xB2, 0xC3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let mapped: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let source: SocketAddr = "203.0.113.2:3479".parse().unwrap();
        let changed: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let mut buf = [0u8; 128];
        let n = encode_classic_binding_response(&mut buf, &id, mapped, None, None).unwrap();
        #[rustfmt::skip]
        assert_eq!(&buf[..n], &[
            0x01, 0x01, 0x00, 0x0C,
            0x02, 0xA1, 0xB2, 0xC3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x9C, 0x40, 198, 51, 100, 7,
        ]);
        let n = encode_classic_binding_response(&mut buf, &id, mapped, Some(source), Some(changed))
            .unwrap();
        assert_eq!(n, 20 + 3 * 12);
        assert!(!is_stun(&buf[..n]), "no cookie: the id is echoed");
        let m = StunMessage {
            message_type: BINDING_SUCCESS,
            transaction_id: id[4..].try_into().unwrap(),
            attributes: &buf[20..n],
            classic: Some([2, 0xA1, 0xB2, 0xC3]),
        };
        assert!(m.attrs().all(|(t, _)| t != ATTR_XOR_MAPPED_ADDRESS));
        assert_eq!(m.mapped_address(), Some(mapped));
        assert_eq!(m.changed_address(), Some(changed));
        assert_eq!(m.alternate_address(), Some(changed));
        // A 420 to a classic request: its id, no FINGERPRINT, an odd list padded by repeating
        // a type (RFC 3489 §11.2.10).
        let n = encode_unknown_attribute_error(
            &mut buf,
            &id[4..].try_into().unwrap(),
            Some([2, 0xA1, 0xB2, 0xC3]),
            &UnknownAttributes::one(ATTR_CHANGE_REQUEST),
            None,
        )
        .unwrap();
        #[rustfmt::skip]
        assert_eq!(&buf[..n], &[
            0x01, 0x11, 0x00, 0x10,
            0x02, 0xA1, 0xB2, 0xC3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0, 9, 0, 4, 0, 0, 4, 20,
            0, 0x0A, 0, 4, 0, 3, 0, 3,
        ]);
    }

    #[test]
    fn the_alternate_is_other_address_else_changed_address_else_pierces_own() {
        let other: SocketAddr = "203.0.113.2:3479".parse().unwrap();
        let changed: SocketAddr = "203.0.113.3:3479".parse().unwrap();
        let pierce: SocketAddr = "203.0.113.1:3479".parse().unwrap();
        let plain = |t: u16, a: SocketAddr| {
            let mut v = vec![0, 1];
            v.extend_from_slice(&a.port().to_be_bytes());
            let IpAddr::V4(ip) = a.ip() else { panic!() };
            v.extend_from_slice(&ip.octets());
            (t, v)
        };
        let cases = [
            (
                vec![
                    plain(ATTR_CHANGED_ADDRESS, changed),
                    plain(ATTR_OTHER_ADDRESS, other),
                ],
                other,
            ),
            (
                vec![
                    plain(ATTR_PIERCE_ALTERNATE, pierce),
                    plain(ATTR_CHANGED_ADDRESS, changed),
                ],
                changed,
            ),
            (vec![plain(ATTR_PIERCE_ALTERNATE, pierce)], pierce),
        ];
        for (attrs, want) in cases {
            let attrs: Vec<(u16, &[u8])> = attrs.iter().map(|(t, v)| (*t, &v[..])).collect();
            let msg = request_with(&attrs);
            let m = StunMessage::decode(&msg).unwrap();
            assert_eq!(m.alternate_address(), Some(want));
        }
    }
}
