//! STUN (RFC 8489) message header, enough to tell a STUN message from a Pierce packet.
//!
//! ```text
//! 0b00 + message type (14 bits) | message length (u16, multiple of 4)
//! | magic cookie 0x2112A442 | transaction id (12 bytes) | attributes (length bytes)
//! ```

use super::{DecodeError, Reader};

/// The fixed magic cookie of RFC 8489 §5.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;

/// True if `datagram` looks like STUN: top two bits zero and the magic cookie in place.
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[0] & 0xC0 == 0
        && datagram[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// A parsed STUN header with its attributes borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StunMessage<'a> {
    /// Message type (class and method), top two bits zero.
    pub message_type: u16,
    /// Transaction id.
    pub transaction_id: [u8; 12],
    /// The attribute bytes (not parsed here).
    pub attributes: &'a [u8],
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Binding request with no attributes, as `turnutils_stunclient` sends it.
    #[rustfmt::skip]
    const BINDING_REQUEST: [u8; 20] = [
        0x00, 0x01, 0x00, 0x00, // Binding request, length 0
        0x21, 0x12, 0xA4, 0x42, // magic cookie
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, // txid
    ];

    #[test]
    fn binding_request_golden_bytes() {
        assert!(is_stun(&BINDING_REQUEST));
        let m = StunMessage::decode(&BINDING_REQUEST).unwrap();
        assert_eq!(m.message_type, 0x0001);
        assert_eq!(m.transaction_id, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert!(m.attributes.is_empty());
    }

    #[test]
    fn stun_with_a_lying_length_is_refused() {
        let mut m = BINDING_REQUEST;
        m[3] = 4;
        assert_eq!(StunMessage::decode(&m), Err(DecodeError::BadLength));
        let mut m = BINDING_REQUEST;
        m[4] = 0;
        assert!(!is_stun(&m));
    }
}
