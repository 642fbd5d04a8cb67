//! The two cleartext handshake packets (a Noise-NX-shaped exchange; see `crypto`).
//!
//! ```text
//! ClientHello (≥ MIN_CLIENT_HELLO_LEN bytes, zero padded):
//!   0xD1 | version | 0x00 0x00 | client session id (u32) | client ephemeral X25519 (32)
//!   | cookie length (u8, ≤ 32) | cookie | zero padding
//! ServerHello (SERVER_HELLO_LEN bytes):
//!   0xD2 | version | 0x00 0x00 | client session id (u32) | server session id (u32)
//!   | server ephemeral X25519 (32) | server static X25519 (32) | AEAD tag (16)
//! Retry (RETRY_LEN bytes), server → client, when the server is under load or the hello's
//! source has spent its unproven budget:
//!   0xD5 | version | 0x00 0x00 | client session id (u32) | cookie (16)
//! ```
//!
//! The ClientHello is padded so that the server's answer to an address it has not validated
//! yet is always smaller than what it received (no amplification).

use super::{DecodeError, Reader, VERSION, Writer};
use crate::wire::BufferTooSmall;

/// Packet kind byte of a [`ClientHello`].
pub const KIND_CLIENT_HELLO: u8 = 0xD1;
/// Packet kind byte of a [`ServerHello`].
pub const KIND_SERVER_HELLO: u8 = 0xD2;
/// A ClientHello shorter than this is dropped unanswered (RFC 9000 §14.1 uses the same figure).
pub const MIN_CLIENT_HELLO_LEN: usize = 1200;
/// Largest cookie a ClientHello may echo.
pub const MAX_COOKIE_LEN: usize = 32;
/// Exact size of a ServerHello.
pub const SERVER_HELLO_LEN: usize = 4 + 4 + 4 + 32 + 32 + 16;
/// Packet kind byte of a [`Retry`].
pub const KIND_RETRY: u8 = 0xD5;
/// Exact size of a Retry.
pub const RETRY_LEN: usize = 4 + 4 + COOKIE_LEN;
/// Size of the cookies a server hands out.
pub const COOKIE_LEN: usize = 16;
/// Bytes of a ServerHello covered by its tag (everything but the tag).
pub const SERVER_HELLO_AAD_LEN: usize = SERVER_HELLO_LEN - 16;

/// First handshake packet, client → server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// The id the server must put in packets it sends to this client.
    pub client_session: u32,
    /// The client's ephemeral X25519 public key.
    pub client_ephemeral: [u8; 32],
    /// A stateless cookie echoed from the server (empty when none was asked for).
    pub cookie: &'a [u8],
}

impl<'a> ClientHello<'a> {
    /// Decodes a ClientHello, including its kind and version bytes.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(datagram);
        expect_header(&mut r, KIND_CLIENT_HELLO)?;
        let client_session = r.u32()?;
        let client_ephemeral = r.array()?;
        let cookie_len = r.u8()? as usize;
        if cookie_len > MAX_COOKIE_LEN {
            return Err(DecodeError::BadLength);
        }
        let cookie = r.bytes(cookie_len)?;
        Ok(Self {
            client_session,
            client_ephemeral,
            cookie,
        })
    }

    /// Writes the ClientHello padded to [`MIN_CLIENT_HELLO_LEN`]; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(buf);
        w.put(&[KIND_CLIENT_HELLO, VERSION, 0, 0])?;
        w.u32(self.client_session)?;
        w.put(&self.client_ephemeral)?;
        if self.cookie.len() > MAX_COOKIE_LEN {
            return Err(BufferTooSmall);
        }
        w.u8(self.cookie.len() as u8)?;
        w.put(self.cookie)?;
        let pad = MIN_CLIENT_HELLO_LEN.saturating_sub(w.len());
        w.zeros(pad)?;
        Ok(w.len())
    }
}

/// Second handshake packet, server → client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHello {
    /// Echo of the client's session id.
    pub client_session: u32,
    /// The id the client must put in packets it sends to the server.
    pub server_session: u32,
    /// The server's ephemeral X25519 public key.
    pub server_ephemeral: [u8; 32],
    /// The server's static X25519 public key (its identity).
    pub server_static: [u8; 32],
    /// AEAD tag over the preceding bytes, proving the server holds the static secret.
    pub tag: [u8; 16],
}

impl ServerHello {
    /// Decodes a ServerHello, including its kind and version bytes.
    pub fn decode(datagram: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(datagram);
        expect_header(&mut r, KIND_SERVER_HELLO)?;
        let out = Self {
            client_session: r.u32()?,
            server_session: r.u32()?,
            server_ephemeral: r.array()?,
            server_static: r.array()?,
            tag: r.array()?,
        };
        if r.remaining() != 0 {
            return Err(DecodeError::BadLength);
        }
        Ok(out)
    }

    /// The bytes the tag authenticates: the encoding minus the tag.
    pub fn aad(&self) -> [u8; SERVER_HELLO_AAD_LEN] {
        let mut out = [0u8; SERVER_HELLO_AAD_LEN];
        let mut w = Writer::new(&mut out);
        // The array is exactly the right size: these writes cannot fail.
        let _ = w.put(&[KIND_SERVER_HELLO, VERSION, 0, 0]);
        let _ = w.u32(self.client_session);
        let _ = w.u32(self.server_session);
        let _ = w.put(&self.server_ephemeral);
        let _ = w.put(&self.server_static);
        out
    }

    /// Writes the ServerHello; returns its length ([`SERVER_HELLO_LEN`]).
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(buf);
        w.put(&self.aad())?;
        w.put(&self.tag)?;
        Ok(w.len())
    }
}

/// A stateless cookie the client must echo in its next ClientHello (server under load).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Echo of the client's session id.
    pub client_session: u32,
    /// The cookie.
    pub cookie: [u8; COOKIE_LEN],
}

impl Retry {
    /// Decodes a Retry, including its kind and version bytes.
    pub fn decode(datagram: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(datagram);
        expect_header(&mut r, KIND_RETRY)?;
        let out = Self {
            client_session: r.u32()?,
            cookie: r.array()?,
        };
        if r.remaining() != 0 {
            return Err(DecodeError::BadLength);
        }
        Ok(out)
    }

    /// Writes the Retry; returns its length ([`RETRY_LEN`]).
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(buf);
        w.put(&[KIND_RETRY, VERSION, 0, 0])?;
        w.u32(self.client_session)?;
        w.put(&self.cookie)?;
        Ok(w.len())
    }
}

/// Checks kind, version and the two reserved bytes.
fn expect_header(r: &mut Reader<'_>, kind: u8) -> Result<(), DecodeError> {
    let [k, v, r0, r1] = r.array::<4>()?;
    if k != kind {
        return Err(DecodeError::UnknownKind(k));
    }
    if v != VERSION {
        return Err(DecodeError::BadVersion(v));
    }
    if r0 != 0 || r1 != 0 {
        return Err(DecodeError::BadValue);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello_golden_bytes() {
        let hello = ClientHello {
            client_session: 0x0102_0304,
            client_ephemeral: [0xAA; 32],
            cookie: &[0xC0, 0xC1],
        };
        let mut buf = [0xFFu8; 1500];
        let n = hello.encode(&mut buf).unwrap();
        assert_eq!(n, MIN_CLIENT_HELLO_LEN);
        #[rustfmt::skip]
        let head: [u8; 43] = [
            0xD1, 0x01, 0x00, 0x00,     // kind, version, reserved
            0x01, 0x02, 0x03, 0x04,     // client session id
            0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, // ephemeral key
            0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,
            0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,
            0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,
            0x02, 0xC0, 0xC1,           // cookie length, cookie
        ];
        assert_eq!(&buf[..43], &head);
        assert!(buf[43..n].iter().all(|&b| b == 0), "padding is zeros");
        assert_eq!(ClientHello::decode(&buf[..n]), Ok(hello));
    }

    #[test]
    fn server_hello_golden_bytes() {
        let hello = ServerHello {
            client_session: 1,
            server_session: 0xDEAD_BEEF,
            server_ephemeral: [0x11; 32],
            server_static: [0x22; 32],
            tag: [0x33; 16],
        };
        let mut buf = [0u8; SERVER_HELLO_LEN];
        assert_eq!(hello.encode(&mut buf), Ok(SERVER_HELLO_LEN));
        #[rustfmt::skip]
        let head: [u8; 12] = [
            0xD2, 0x01, 0x00, 0x00,     // kind, version, reserved
            0x00, 0x00, 0x00, 0x01,     // client session id
            0xDE, 0xAD, 0xBE, 0xEF,     // server session id
        ];
        assert_eq!(&buf[..12], &head);
        assert_eq!(&buf[12..44], &[0x11; 32]);
        assert_eq!(&buf[44..76], &[0x22; 32]);
        assert_eq!(&buf[76..92], &[0x33; 16]);
        assert_eq!(ServerHello::decode(&buf), Ok(hello));
    }

    #[test]
    fn retry_golden_bytes() {
        let r = Retry {
            client_session: 0x0A0B_0C0D,
            cookie: [0x77; COOKIE_LEN],
        };
        let mut buf = [0u8; RETRY_LEN];
        assert_eq!(r.encode(&mut buf), Ok(RETRY_LEN));
        #[rustfmt::skip]
        let head: [u8; 8] = [
            0xD5, 0x01, 0x00, 0x00,     // kind, version, reserved
            0x0A, 0x0B, 0x0C, 0x0D,     // client session id
        ];
        assert_eq!(&buf[..8], &head);
        assert_eq!(&buf[8..], &[0x77; COOKIE_LEN]);
        assert_eq!(Retry::decode(&buf), Ok(r));
        assert_eq!(
            Retry::decode(&buf[..RETRY_LEN - 1]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn hellos_reject_truncation_bad_versions_and_oversize_cookies() {
        let mut buf = [0u8; 1200];
        let n = ClientHello {
            client_session: 9,
            client_ephemeral: [1; 32],
            cookie: &[],
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(ClientHello::decode(&buf[..20]), Err(DecodeError::Truncated));
        let mut bad = buf;
        bad[1] = 9;
        assert_eq!(
            ClientHello::decode(&bad[..n]),
            Err(DecodeError::BadVersion(9))
        );
        let mut bad = buf;
        bad[40] = 33;
        assert_eq!(ClientHello::decode(&bad[..n]), Err(DecodeError::BadLength));
        let mut sh = [0u8; SERVER_HELLO_LEN + 1];
        sh[0] = KIND_SERVER_HELLO;
        sh[1] = VERSION;
        assert_eq!(ServerHello::decode(&sh), Err(DecodeError::BadLength));
        assert_eq!(
            ServerHello::decode(&sh[..SERVER_HELLO_LEN - 1]),
            Err(DecodeError::Truncated)
        );
    }
}
