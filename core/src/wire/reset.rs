//! Stateless reset (`0xD8`): what a server sends in answer to a session packet for a session
//! it does not have (it restarted, or forgot the session), so that the client learns at once
//! that its session is gone instead of waiting out its idle timeout. The model is QUIC's
//! stateless reset (RFC 9000 §10.3).
//!
//! ```text
//! 0xD8 | version | flags (u8, 0) | reserved (u8, 0) | reset token (16)
//! ```
//!
//! The token is a keyed MAC of the server's session id under a key derived from the server's
//! static key (`crypto::ResetKey`), so a server restarted with the same key computes the same
//! token for a session it no longer has. The client learns its session's token in the
//! encrypted Welcome. A server id is 32 bits (a slot and an 8-bit generation), so anyone can
//! learn the token of an id *before* it is given out, by sending the server a packet naming
//! it; a client therefore checks a reset with its token before believing it: it probes the
//! server on its session's path at once, and only if nothing authentic comes back within
//! three round trips (50 ms to 1 s) is the session lost (`ClientStats::resets_refuted` counts
//! the others). A reset is [`RESET_LEN`] bytes, shorter than any packet it answers (a sealed
//! packet is at least 32 bytes): it never amplifies, and it is never answered itself.

use super::{BufferTooSmall, DecodeError, Reader, VERSION, Writer};

/// Kind byte of a stateless reset.
pub const KIND_RESET: u8 = 0xD8;
/// Bytes of a reset token.
pub const RESET_TOKEN_LEN: usize = 16;
/// Bytes of a stateless reset on the wire.
pub const RESET_LEN: usize = 4 + RESET_TOKEN_LEN;

/// A stateless reset, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reset {
    /// The token of the session it ends (checked by the client against its own).
    pub token: [u8; RESET_TOKEN_LEN],
}

impl Reset {
    /// Decodes a reset: exactly [`RESET_LEN`] bytes.
    pub fn decode(datagram: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(datagram);
        let [k, v, flags, rsv] = r.array::<4>()?;
        if k != KIND_RESET {
            return Err(DecodeError::UnknownKind(k));
        }
        if v != VERSION {
            return Err(DecodeError::BadVersion(v));
        }
        if flags != 0 || rsv != 0 {
            return Err(DecodeError::BadValue);
        }
        let token = r.array::<RESET_TOKEN_LEN>()?;
        if r.remaining() != 0 {
            return Err(DecodeError::BadLength);
        }
        Ok(Self { token })
    }

    /// Writes the reset into `buf`; returns its length ([`RESET_LEN`]).
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(buf);
        w.put(&[KIND_RESET, VERSION, 0, 0])?;
        w.put(&self.token)?;
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_golden_bytes_round_trip() {
        let r = Reset { token: [0xAB; 16] };
        let mut buf = [0u8; 64];
        assert_eq!(r.encode(&mut buf), Ok(RESET_LEN));
        assert_eq!(&buf[..4], &[0xD8, 0x01, 0x00, 0x00]);
        assert_eq!(&buf[4..20], &[0xAB; 16]);
        assert_eq!(Reset::decode(&buf[..RESET_LEN]), Ok(r));
        assert_eq!(r.encode(&mut buf[..RESET_LEN - 1]), Err(BufferTooSmall));
    }

    #[test]
    fn a_reset_of_any_other_length_or_with_flags_is_refused() {
        let mut buf = [0u8; RESET_LEN + 1];
        Reset { token: [1; 16] }.encode(&mut buf).unwrap();
        assert_eq!(
            Reset::decode(&buf[..RESET_LEN - 1]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(Reset::decode(&buf), Err(DecodeError::BadLength));
        let mut flagged = buf;
        flagged[2] = 1;
        assert_eq!(
            Reset::decode(&flagged[..RESET_LEN]),
            Err(DecodeError::BadValue)
        );
        let mut old = buf;
        old[1] = 9;
        assert_eq!(
            Reset::decode(&old[..RESET_LEN]),
            Err(DecodeError::BadVersion(9))
        );
    }
}
