//! Header of an encrypted packet: a client–server session packet (`0xD3`) or a peer-to-peer
//! packet (`0xD4`), which travels either directly or inside a relay frame, byte for byte the
//! same either way.
//!
//! ```text
//! 0xD3|0xD4 | version | flags (u8, 0) | reserved (u8, 0) | receiver session id (u32)
//!      | packet counter (u64) | ciphertext ... | AEAD tag (16)
//! ```
//!
//! The 16 header bytes are the AEAD's associated data and the counter is its nonce, so no
//! header bit can be changed without the packet failing authentication. The receiver id, not
//! the source address, names the session: a client whose NAT rebinds keeps its session.

use super::{BufferTooSmall, DecodeError, Reader, VERSION, Writer};

/// Packet kind byte of a client–server session packet.
pub const KIND_SEALED: u8 = 0xD3;
/// Packet kind byte of a peer-to-peer packet.
pub const KIND_PEER: u8 = 0xD4;
/// Size of [`SealedHeader`] on the wire.
pub const HEADER_LEN: usize = 16;
/// Size of the AEAD tag that ends every sealed packet.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed packet adds around its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Cleartext header of a sealed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedHeader {
    /// True for a peer-to-peer packet (`0xD4`), false for a server session packet (`0xD3`).
    pub peer: bool,
    /// Session id chosen by the receiver (for peer packets: the pair id the server assigned).
    pub receiver: u32,
    /// Per-direction packet counter; also the AEAD nonce.
    pub counter: u64,
}

/// A sealed packet split into its parts, borrowing the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedPacket<'a> {
    /// The decoded header.
    pub header: SealedHeader,
    /// The 16 header bytes as received (the AEAD associated data).
    pub aad: &'a [u8],
    /// Ciphertext followed by the tag.
    pub ciphertext_and_tag: &'a [u8],
}

impl SealedHeader {
    /// Encodes the header into its 16 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let _ = self.encode(&mut out);
        out
    }

    /// Writes the header at the start of `buf`.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(buf);
        let kind = if self.peer { KIND_PEER } else { KIND_SEALED };
        w.put(&[kind, VERSION, 0, 0])?;
        w.u32(self.receiver)?;
        w.u64(self.counter)?;
        Ok(w.len())
    }
}

impl<'a> SealedPacket<'a> {
    /// Splits a sealed datagram; the tag is not checked here.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(datagram);
        let [k, v, flags, rsv] = r.array::<4>()?;
        if k != KIND_SEALED && k != KIND_PEER {
            return Err(DecodeError::UnknownKind(k));
        }
        if v != VERSION {
            return Err(DecodeError::BadVersion(v));
        }
        if flags != 0 || rsv != 0 {
            return Err(DecodeError::BadValue);
        }
        let header = SealedHeader {
            peer: k == KIND_PEER,
            receiver: r.u32()?,
            counter: r.u64()?,
        };
        if r.remaining() < TAG_LEN {
            return Err(DecodeError::Truncated);
        }
        Ok(Self {
            header,
            aad: &datagram[..HEADER_LEN],
            ciphertext_and_tag: r.rest(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_header_golden_bytes() {
        let h = SealedHeader {
            peer: false,
            receiver: 0x0A0B_0C0D,
            counter: 0x0102_0304_0506_0708,
        };
        #[rustfmt::skip]
        let expect: [u8; 16] = [
            0xD3, 0x01, 0x00, 0x00,                         // kind, version, flags, reserved
            0x0A, 0x0B, 0x0C, 0x0D,                         // receiver session id
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // counter
        ];
        assert_eq!(h.to_bytes(), expect);
        let mut dgram = expect.to_vec();
        dgram.extend_from_slice(&[0xEE; TAG_LEN]);
        let p = SealedPacket::decode(&dgram).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(p.aad, &expect);
        assert_eq!(p.ciphertext_and_tag, &[0xEE; TAG_LEN]);
        let peer = SealedHeader { peer: true, ..h };
        assert_eq!(peer.to_bytes()[0], 0xD4);
        let mut dgram = peer.to_bytes().to_vec();
        dgram.extend_from_slice(&[0xEE; TAG_LEN]);
        assert_eq!(SealedPacket::decode(&dgram).unwrap().header, peer);
    }

    #[test]
    fn a_packet_shorter_than_header_and_tag_is_truncated() {
        let mut d = SealedHeader {
            peer: false,
            receiver: 1,
            counter: 2,
        }
        .to_bytes()
        .to_vec();
        d.extend_from_slice(&[0; TAG_LEN - 1]);
        assert_eq!(SealedPacket::decode(&d), Err(DecodeError::Truncated));
        d[2] = 1;
        d.push(0);
        assert_eq!(SealedPacket::decode(&d), Err(DecodeError::BadValue));
    }
}
