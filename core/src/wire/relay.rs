//! The relay fast path: a peer packet on its way through the server, framed so the server
//! forwards it without opening or sealing anything.
//!
//! A peer packet (`0xD4`) is already sealed end to end with its pair's key. What the server
//! must know is who sent it and that they may reach its receiver; it learns both from a short
//! header authenticated with the sender's session (a 16-byte tag over the relay header's
//! format bytes, its counter and the pair id of the peer packet behind it, see
//! `crypto::RelayKey`), and forwards the peer packet to the receiver behind a plain
//! header naming the sender.
//!
//! ```text
//! to the server (client → server), 32 bytes + the peer packet:
//!   0xD6 | version | flags (u8, 0) | reserved (u8, 0) | sender's session id at the server (u32)
//!        | relay counter (u64) | tag (16) | peer packet (0xD4 ...)
//! from the server (server → client), 16 bytes + the peer packet:
//!   0xD7 | version | flags (u8, 0) | reserved (u8, 0) | receiver's session id at the client (u32)
//!        | sender's host id (u64) | peer packet (0xD4 ...)
//! ```
//!
//! The relay counter is the sender's own sequence for this path; the server keeps a replay
//! window of it per session. Which pair (and so which receiver) a packet is for is the peer
//! packet's receiver id, covered by the tag. The session id is not among the tagged bytes: it
//! selects the key, and a tag made under one session's key does not verify under another's.
//! The rest of the peer packet (its counter, ciphertext and tag) is not covered: the receiver
//! authenticates all of it with the pair's key, and whoever could change it on the way could
//! as well drop the packet.
//!
//! ```text
//! tagged (16 bytes): 0xD6 | version | flags | reserved | relay counter (u64) | pair id (u32)
//! ```

use super::sealed::{HEADER_LEN, KIND_PEER, OVERHEAD, SealedPacket};
use super::{BufferTooSmall, DecodeError, Reader, VERSION, Writer};

/// Kind byte of a peer packet sent to the server for relaying.
pub const KIND_RELAY: u8 = 0xD6;
/// Kind byte of a peer packet the server relays to its receiver.
pub const KIND_RELAYED: u8 = 0xD7;
/// Bytes of the tag that authenticates a relay header.
pub const RELAY_TAG_LEN: usize = 16;
/// Bytes in front of the peer packet in a [`RelayPacket`].
pub const RELAY_HEADER_LEN: usize = 16 + RELAY_TAG_LEN;
/// Bytes in front of the peer packet in a [`RelayedPacket`].
pub const RELAYED_HEADER_LEN: usize = 16;
/// What a tag covers: the relay header's four format bytes, its counter, then the pair id of
/// the peer packet behind it.
pub const RELAY_TAGGED_LEN: usize = 16;

/// A peer packet sent to the server for relaying, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayPacket<'a> {
    /// The sender's session id at the server (the id the server chose for it).
    pub session: u32,
    /// The sender's relay counter.
    pub counter: u64,
    /// The tag over [`RelayPacket::tagged`].
    pub tag: [u8; RELAY_TAG_LEN],
    /// The peer packet, as the receiver must get it.
    pub peer: SealedPacket<'a>,
    /// The bytes the tag covers (see the module's documentation).
    pub tagged: [u8; RELAY_TAGGED_LEN],
    /// The whole peer packet's bytes (what is forwarded).
    pub peer_bytes: &'a [u8],
}

/// A peer packet the server relayed, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayedPacket<'a> {
    /// The receiver's session id at the client (the id the client chose).
    pub session: u32,
    /// The sender's host id.
    pub from: u64,
    /// The peer packet's bytes (decoded by the receiver with [`SealedPacket::decode`]).
    pub peer_bytes: &'a [u8],
}

/// Checks the four common bytes: kind, version, zero flags and reserved byte.
fn head(r: &mut Reader<'_>, kind: u8) -> Result<(), DecodeError> {
    let [k, v, flags, rsv] = r.array::<4>()?;
    if k != kind {
        return Err(DecodeError::UnknownKind(k));
    }
    if v != VERSION {
        return Err(DecodeError::BadVersion(v));
    }
    if flags != 0 || rsv != 0 {
        return Err(DecodeError::BadValue);
    }
    Ok(())
}

/// The peer packet behind a relay header: a whole, well-formed `0xD4` packet.
fn peer_packet(bytes: &[u8]) -> Result<SealedPacket<'_>, DecodeError> {
    if bytes.first() != Some(&KIND_PEER) {
        return Err(DecodeError::BadValue);
    }
    SealedPacket::decode(bytes)
}

impl<'a> RelayPacket<'a> {
    /// Splits a relay datagram; the tag is not checked here.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(datagram);
        head(&mut r, KIND_RELAY)?;
        let session = r.u32()?;
        let counter = r.u64()?;
        let tag = r.array::<RELAY_TAG_LEN>()?;
        let peer_bytes = r.rest();
        let peer = peer_packet(peer_bytes)?;
        let tagged = tagged(&datagram[..16], peer.aad);
        Ok(Self {
            session,
            counter,
            tag,
            peer,
            tagged,
            peer_bytes,
        })
    }
}

/// The bytes a tag covers, from a relay header's first 16 bytes and the peer packet's header.
fn tagged(relay_head: &[u8], peer_head: &[u8]) -> [u8; RELAY_TAGGED_LEN] {
    let mut t = [0u8; RELAY_TAGGED_LEN];
    t[..4].copy_from_slice(&relay_head[..4]);
    t[4..12].copy_from_slice(&relay_head[8..16]);
    t[12..].copy_from_slice(&peer_head[4..8]);
    t
}

/// Writes a relay header for a peer packet already at `buf[RELAY_HEADER_LEN..][..peer_len]`,
/// with `tag` computing the tag over the bytes it must cover; returns the datagram's length.
///
/// # Errors
/// The buffer is too small, or the peer packet is shorter than a sealed packet.
pub fn encode_relay(
    buf: &mut [u8],
    session: u32,
    counter: u64,
    peer_len: usize,
    tag: impl FnOnce(&[u8; RELAY_TAGGED_LEN]) -> [u8; RELAY_TAG_LEN],
) -> Result<usize, BufferTooSmall> {
    let total = RELAY_HEADER_LEN + peer_len;
    if buf.len() < total || peer_len < OVERHEAD {
        return Err(BufferTooSmall);
    }
    let mut w = Writer::new(&mut buf[..16]);
    w.put(&[KIND_RELAY, VERSION, 0, 0])?;
    w.u32(session)?;
    w.u64(counter)?;
    let covered = tagged(
        &buf[..16],
        &buf[RELAY_HEADER_LEN..RELAY_HEADER_LEN + HEADER_LEN],
    );
    buf[16..RELAY_HEADER_LEN].copy_from_slice(&tag(&covered));
    Ok(total)
}

impl<'a> RelayedPacket<'a> {
    /// Splits a relayed datagram. The peer packet must be a well-formed `0xD4` packet.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(datagram);
        head(&mut r, KIND_RELAYED)?;
        let session = r.u32()?;
        let from = r.u64()?;
        let peer_bytes = r.rest();
        peer_packet(peer_bytes)?;
        Ok(Self {
            session,
            from,
            peer_bytes,
        })
    }
}

/// Writes a relayed datagram (header, then `peer`) into `buf`; returns its length.
///
/// # Errors
/// The buffer is too small.
pub fn encode_relayed(
    buf: &mut [u8],
    session: u32,
    from: u64,
    peer: &[u8],
) -> Result<usize, BufferTooSmall> {
    let total = RELAYED_HEADER_LEN + peer.len();
    if buf.len() < total {
        return Err(BufferTooSmall);
    }
    buf[..RELAYED_HEADER_LEN].copy_from_slice(&encode_relayed_header(session, from));
    buf[RELAYED_HEADER_LEN..total].copy_from_slice(peer);
    Ok(total)
}

/// The plain header in front of a relayed peer packet: for the receiver's session
/// `session` (its id at the client), from host `from`.
#[must_use]
pub fn encode_relayed_header(session: u32, from: u64) -> [u8; RELAYED_HEADER_LEN] {
    let mut h = [0u8; RELAYED_HEADER_LEN];
    h[..4].copy_from_slice(&[KIND_RELAYED, VERSION, 0, 0]);
    h[4..8].copy_from_slice(&session.to_be_bytes());
    h[8..].copy_from_slice(&from.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sealed::{SealedHeader, TAG_LEN};

    fn peer(pair: u32, counter: u64, body: &[u8]) -> Vec<u8> {
        let mut p = SealedHeader {
            peer: true,
            receiver: pair,
            counter,
        }
        .to_bytes()
        .to_vec();
        p.extend_from_slice(body);
        p.extend_from_slice(&[0xAA; TAG_LEN]);
        p
    }

    #[test]
    fn relay_golden_bytes_and_the_tag_covers_format_counter_and_pair() {
        let p = peer(0x0708_090A, 5, b"hi");
        let mut buf = vec![0u8; 128];
        buf[RELAY_HEADER_LEN..][..p.len()].copy_from_slice(&p);
        let mut covered = None;
        let n = encode_relay(
            &mut buf,
            0x0102_0304,
            0x1122_3344_5566_7788,
            p.len(),
            |aad| {
                covered = Some(*aad);
                [0xEE; RELAY_TAG_LEN]
            },
        )
        .unwrap();
        #[rustfmt::skip]
        let head: [u8; 16] = [
            0xD6, 0x01, 0x00, 0x00,                         // kind, version, flags, reserved
            0x01, 0x02, 0x03, 0x04,                         // sender's session id
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // relay counter
        ];
        assert_eq!(&buf[..16], &head);
        assert_eq!(&buf[16..32], &[0xEE; 16]);
        assert_eq!(&buf[32..n], &p[..]);
        #[rustfmt::skip]
        let want: [u8; 16] = [
            0xD6, 0x01, 0x00, 0x00,                         // kind, version, flags, reserved
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // relay counter
            0x07, 0x08, 0x09, 0x0A,                         // the peer packet's pair id
        ];
        let covered = covered.unwrap();
        assert_eq!(covered, want);
        let d = RelayPacket::decode(&buf[..n]).unwrap();
        assert_eq!(
            (d.session, d.counter, d.tag),
            (0x0102_0304, 0x1122_3344_5566_7788, [0xEE; 16])
        );
        assert_eq!(d.tagged, covered);
        assert_eq!(d.peer.header.receiver, 0x0708_090A);
        assert_eq!(d.peer_bytes, &p[..]);
    }

    #[test]
    fn relayed_golden_bytes() {
        let p = peer(9, 1, b"");
        let mut buf = vec![0u8; 64];
        let n = encode_relayed(&mut buf, 0xA0B0_C0D0, 0x0102_0304_0506_0708, &p).unwrap();
        #[rustfmt::skip]
        let head: [u8; 16] = [
            0xD7, 0x01, 0x00, 0x00,                         // kind, version, flags, reserved
            0xA0, 0xB0, 0xC0, 0xD0,                         // receiver's session id
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // sender's host id
        ];
        assert_eq!(&buf[..16], &head);
        let d = RelayedPacket::decode(&buf[..n]).unwrap();
        assert_eq!(
            (d.session, d.from, d.peer_bytes),
            (0xA0B0_C0D0, 0x0102_0304_0506_0708, &p[..])
        );
    }

    #[test]
    fn anything_but_a_whole_peer_packet_behind_the_header_is_refused() {
        let mut buf = vec![0u8; 128];
        let p = peer(1, 1, b"x");
        buf[RELAY_HEADER_LEN..][..p.len()].copy_from_slice(&p);
        let n = encode_relay(&mut buf, 1, 1, p.len(), |_| [0; 16]).unwrap();
        assert!(RelayPacket::decode(&buf[..n]).is_ok());
        assert!(
            RelayPacket::decode(&buf[..n - p.len() + 10]).is_err(),
            "truncated peer"
        );
        let mut server = buf[..n].to_vec();
        server[RELAY_HEADER_LEN] = 0xD3; // a server session packet may not be relayed
        assert_eq!(RelayPacket::decode(&server), Err(DecodeError::BadValue));
        let mut flags = buf[..n].to_vec();
        flags[2] = 1;
        assert_eq!(RelayPacket::decode(&flags), Err(DecodeError::BadValue));
        assert!(encode_relay(&mut buf, 1, 1, OVERHEAD - 1, |_| [0; 16]).is_err());
        let mut small = [0u8; 20];
        assert!(encode_relayed(&mut small, 1, 1, &p).is_err());
        assert_eq!(
            RelayedPacket::decode(&[KIND_RELAYED, VERSION, 0, 0, 0, 0, 0, 1]),
            Err(DecodeError::Truncated)
        );
    }
}
