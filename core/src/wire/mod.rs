//! Pure encode/decode of everything Pierce puts on the wire. No state lives here, so every
//! codec can be fuzzed and round-trip tested on its own.
//!
//! # Datagram classification (first bytes)
//!
//! | byte 0        | byte 1  | meaning                                                  |
//! |---------------|---------|----------------------------------------------------------|
//! | `0x00..=0x03` | any     | STUN (RFC 8489) if bytes 4..8 hold the magic cookie      |
//! | `0xD1`        | version | [`handshake::ClientHello`], padded to ≥ 1200 bytes       |
//! | `0xD2`        | version | [`handshake::ServerHello`]                               |
//! | `0xD3`        | version | [`sealed::SealedHeader`] + AEAD ciphertext + 16-byte tag |
//! | `0xD4`        | version | the same, peer to peer (direct, or inside a relay frame)  |
//! | `0xD5`        | version | [`handshake::Retry`]: echo this cookie (server under load) |
//! | `0xD6`        | version | [`relay::RelayPacket`]: a peer packet for the server to relay |
//! | `0xD7`        | version | [`relay::RelayedPacket`]: a peer packet the server relayed |
//! | `0xD8`        | version | [`reset::Reset`]: stateless reset, the session is gone    |
//! | anything else |         | not ours: dropped and counted                            |
//!
//! Our kinds keep the top two bits set, so RFC 7983-style multiplexing with STUN (top two bits
//! zero) is unambiguous, and the STUN magic cookie check makes a false STUN match need four
//! specific bytes as well.
//!
//! Decoding never panics and never trusts a length: every read is checked against what is
//! left, and failures are a [`DecodeError`] that callers count and drop.

pub mod control;
pub mod demux;
pub mod frame;
pub mod handshake;
pub mod relay;
pub mod reset;
pub mod sealed;
pub mod stun;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Protocol version carried in byte 1 of every Pierce packet.
pub const VERSION: u8 = 1;

/// Why a datagram or frame could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the format requires.
    Truncated,
    /// The first byte names no packet or frame kind we know.
    UnknownKind(u8),
    /// A Pierce packet with a version we do not speak.
    BadVersion(u8),
    /// A length field disagrees with the bytes present.
    BadLength,
    /// A field holds a value the format forbids (reserved bits, address family, ...).
    BadValue,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated"),
            Self::UnknownKind(k) => write!(f, "unknown kind 0x{k:02x}"),
            Self::BadVersion(v) => write!(f, "unsupported version {v}"),
            Self::BadLength => f.write_str("length field disagrees with the data"),
            Self::BadValue => f.write_str("forbidden field value"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The output buffer was too small for what had to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall;

/// A checked cursor over borrowed bytes.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Reads exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a socket address: family (4 or 6), address bytes, port.
    pub fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(DecodeError::BadValue),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

/// A checked cursor writing into a caller-owned buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Starts writing at the beginning of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// True if nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Space left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends `bytes`.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), BufferTooSmall> {
        if self.remaining() < bytes.len() {
            return Err(BufferTooSmall);
        }
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
        Ok(())
    }

    /// Appends `n` zero bytes.
    pub fn zeros(&mut self, n: usize) -> Result<(), BufferTooSmall> {
        if self.remaining() < n {
            return Err(BufferTooSmall);
        }
        self.buf[self.pos..self.pos + n].fill(0);
        self.pos += n;
        Ok(())
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> Result<(), BufferTooSmall> {
        self.put(&[v])
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> Result<(), BufferTooSmall> {
        self.put(&v.to_be_bytes())
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> Result<(), BufferTooSmall> {
        self.put(&v.to_be_bytes())
    }

    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) -> Result<(), BufferTooSmall> {
        self.put(&v.to_be_bytes())
    }

    /// Lets `fill` write directly into the unwritten space (to seal a nested packet in place)
    /// and advances by the length it returns; `None` writes nothing.
    pub fn with_tail(&mut self, fill: impl FnOnce(&mut [u8]) -> Option<usize>) -> Option<usize> {
        let n = fill(&mut self.buf[self.pos..])?;
        if n > self.remaining() {
            return None;
        }
        self.pos += n;
        Some(n)
    }

    /// Overwrites two bytes already written at `at` (a length known only afterwards).
    pub fn patch_u16(&mut self, at: usize, v: u16) {
        if at + 2 <= self.pos {
            self.buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
        }
    }

    /// Forgets everything written from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.pos = self.pos.min(len);
    }

    /// Appends a socket address in the [`Reader::addr`] format.
    pub fn addr(&mut self, addr: SocketAddr) -> Result<(), BufferTooSmall> {
        match addr.ip() {
            IpAddr::V4(ip) => {
                self.u8(4)?;
                self.put(&ip.octets())?;
            }
            IpAddr::V6(ip) => {
                self.u8(6)?;
                self.put(&ip.octets())?;
            }
        }
        self.u16(addr.port())
    }
}

/// Encoded size of a socket address in the [`Reader::addr`] format.
pub fn addr_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.u16(), Err(DecodeError::Truncated));
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.u8(), Err(DecodeError::Truncated));
        assert_eq!(r.bytes(usize::MAX), Err(DecodeError::Truncated));
    }

    #[test]
    fn addresses_round_trip_and_bad_families_are_refused() {
        let mut buf = [0u8; 64];
        for a in [
            "203.0.113.7:4242".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:9".parse().unwrap(),
        ] {
            let mut w = Writer::new(&mut buf);
            w.addr(a).unwrap();
            let n = w.len();
            assert_eq!(n, addr_len(&a));
            assert_eq!(Reader::new(&buf[..n]).addr(), Ok(a));
        }
        assert_eq!(Reader::new(&[5, 0, 0]).addr(), Err(DecodeError::BadValue));
    }

    #[test]
    fn writer_refuses_to_overflow() {
        let mut buf = [0u8; 3];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.u16(7), Ok(()));
        assert_eq!(w.u16(7), Err(BufferTooSmall));
        assert_eq!(w.len(), 2);
    }
}
