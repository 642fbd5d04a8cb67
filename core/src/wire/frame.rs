//! Frames carried inside the plaintext of a sealed packet. A packet holds one or more frames
//! back to back; a [`Frame::Padding`] frame swallows the rest of the packet.
//!
//! ```text
//! 0x00 Padding   | zero bytes to the end of the packet (any non-zero byte: invalid)
//! 0x01 Ping      |
//! 0x02 Connect   | token length (u16, ≤ MAX_TOKEN_LEN) | token
//! 0x03 Welcome   | host id (u64) | observed address (family u8, ip, port u16)
//!                | stateless reset token (16, see `wire::reset`)
//! 0x04 Reject    | reason (u8)
//! 0x05 Close     | code (u16)
//! 0x06 Datagram  | length (u16) | payload
//! 0x07 Stream    | sequence (u32) | length (u16) | control message (see `wire::control`)
//! 0x08 StreamAck | next expected (u32) | mask (u32): bit i = next + 1 + i arrived
//! 0x09 Relay     | to host id (u64) | length (u16) | peer packet        (client → server)
//! 0x0A Relayed   | from host id (u64) | length (u16) | peer packet      (server → client)
//!                (Relay and Relayed are retired: peer packets travel behind the relay fast
//!                path's headers, `wire::relay`; a server drops a Relay frame as unexpected.
//!                Both still decode, so that an old peer's packet is counted, not misread.)
//! 0x0B Message   | channel (u8) | flags (u8) | sequence (u32)
//!                | [if FRAGMENT: message length (u32) | offset (u32)] | length (u16) | data
//! 0x0C Ack       | largest (u64) | delay µs (u32) | first range length (u32)
//!                | range count (u8) | count × (gap (u32) | range length (u32))
//! 0x0D Floor     | channel (u8) | sequence (u32): nothing below it will be sent again
//! 0x0E Probe     | nonce (u64): path probe, sent directly to a candidate address
//! 0x0F ProbeAck  | nonce (u64): answer to a Probe, sent back to where it came from
//! 0x10 Resume    | ticket length (u16, ≤ MAX_TICKET_LEN) | resumption ticket
//!                  (client → server, before Connect: asks for the ticket's host id back)
//! 0x11 Private   | (client → server, before Connect: never hand this client's addresses to
//!                  anyone; every pair with it stays on the relay. An older server fails to
//!                  decode the packet and drops it, so a private client never becomes a
//!                  public client of a server that does not know the frame: it does not
//!                  connect at all.)
//! ```
//!
//! Ack ranges follow QUIC: the first range covers `largest - first + 1 ..= largest`; each
//! further range starts `gap + 1` packet numbers below the previous one's start.

use std::net::SocketAddr;

use super::{BufferTooSmall, DecodeError, Reader, Writer, addr_len};

/// Largest connect token a client may present.
pub const MAX_TOKEN_LEN: usize = 256;
/// Largest resumption ticket (Pierce's are 62 bytes).
pub const MAX_TICKET_LEN: usize = 128;

const PADDING: u8 = 0x00;
const PING: u8 = 0x01;
const CONNECT: u8 = 0x02;
const WELCOME: u8 = 0x03;
const REJECT: u8 = 0x04;
const CLOSE: u8 = 0x05;
const DATAGRAM: u8 = 0x06;
const STREAM: u8 = 0x07;
const STREAM_ACK: u8 = 0x08;
const RELAY: u8 = 0x09;
const RELAYED: u8 = 0x0A;
const MESSAGE: u8 = 0x0B;
const ACK: u8 = 0x0C;
const FLOOR: u8 = 0x0D;
const PROBE: u8 = 0x0E;
const PROBE_ACK: u8 = 0x0F;
const RESUME: u8 = 0x10;
const PRIVATE: u8 = 0x11;

/// `Message` flag: the frame carries one fragment of a larger message.
pub const FLAG_FRAGMENT: u8 = 1;
/// Bytes a fragment `Message` frame adds around its data.
pub const MESSAGE_FRAME_OVERHEAD: usize = 1 + 1 + 1 + 4 + 4 + 4 + 2;
/// Bytes an unfragmented `Message` frame adds around its data.
pub const MESSAGE_FRAME_OVERHEAD_WHOLE: usize = 1 + 1 + 1 + 4 + 2;
/// Ack ranges carried at most (older ones are left out; they were acknowledged before).
pub const MAX_ACK_RANGES: usize = 32;

/// Bytes a [`Frame::Relay`] or [`Frame::Relayed`] adds around its packet.
pub const RELAY_FRAME_OVERHEAD: usize = 1 + 8 + 2;
/// Bytes a [`Frame::Datagram`] adds around its payload.
pub const DATAGRAM_FRAME_OVERHEAD: usize = 1 + 2;
/// Bytes a [`Frame::Stream`] adds around its message.
pub const STREAM_FRAME_OVERHEAD: usize = 1 + 4 + 2;
/// Bytes of a [`Frame::StreamAck`].
pub const STREAM_ACK_FRAME_LEN: usize = 1 + 4 + 4;

/// Writes a `Relay` frame to `to` whose packet `seal` builds in place; returns false (and
/// writes nothing) if it does not fit or `seal` declines.
pub fn encode_relay_with(
    w: &mut Writer<'_>,
    to: u64,
    seal: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> bool {
    let start = w.len();
    if w.remaining() < RELAY_FRAME_OVERHEAD || w.u8(RELAY).is_err() || w.u64(to).is_err() {
        w.truncate(start);
        return false;
    }
    let _ = w.u16(0);
    match w.with_tail(seal) {
        Some(n) if n <= u16::MAX as usize => {
            w.patch_u16(start + 9, n as u16);
            true
        }
        _ => {
            w.truncate(start);
            false
        }
    }
}

/// One frame, borrowing its payload from the decrypted packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Frame<'a> {
    /// Filler up to the end of the packet: the number of padding bytes after the type byte.
    Padding(u16),
    /// Keepalive: elicits nothing, refreshes the receiver's idle timer.
    Ping,
    /// Client → server after the handshake: application credentials (may be empty).
    Connect {
        /// Opaque token the server verifies (see [`crate::ConnectToken`]).
        token: &'a [u8],
    },
    /// Server → client: the session is accepted.
    Welcome {
        /// The id the server gave this client.
        host_id: u64,
        /// The client's address as the server sees it.
        observed: SocketAddr,
        /// The session's stateless reset token: a reset carrying it ends the session.
        reset_token: [u8; 16],
    },
    /// Server → client: the session is refused.
    Reject {
        /// A [`crate::RejectReason`] code.
        reason: u8,
    },
    /// Either side: the session ends now.
    Close {
        /// Application- or library-defined close code.
        code: u16,
    },
    /// Application payload, unreliable.
    Datagram {
        /// The payload.
        payload: &'a [u8],
    },
    /// One message of the reliable ordered control stream.
    Stream {
        /// Its sequence number.
        seq: u32,
        /// The message.
        data: &'a [u8],
    },
    /// Acknowledges control stream messages.
    StreamAck {
        /// Every message below this arrived.
        next: u32,
        /// Bit `i` set: message `next + 1 + i` arrived too.
        mask: u32,
    },
    /// Client → server: forward this peer packet to another member.
    Relay {
        /// The recipient's host id.
        to: u64,
        /// A sealed peer packet (`0xD4`), opaque to the server.
        packet: &'a [u8],
    },
    /// Server → client: a peer packet another member sent through the relay.
    Relayed {
        /// The sender's host id, as authenticated by the server.
        from: u64,
        /// The sealed peer packet.
        packet: &'a [u8],
    },
    /// A whole message, or one fragment of one, on a peer connection.
    Message {
        /// The channel.
        channel: u8,
        /// Per-channel message sequence number.
        seq: u32,
        /// `Some((message length, offset))` for a fragment.
        fragment: Option<(u32, u32)>,
        /// The bytes.
        data: &'a [u8],
    },
    /// Acknowledges peer packets by number.
    Ack(AckFrame<'a>),
    /// The sender will never (re)send sequence numbers below `seq` on `channel`.
    Floor {
        /// The channel.
        channel: u8,
        /// The new floor.
        seq: u32,
    },
    /// Path probe sent directly to a candidate address of a peer.
    Probe {
        /// Echoed in the answer.
        nonce: u64,
    },
    /// Answer to a probe, sent back to the address the probe came from.
    ProbeAck {
        /// The probe's nonce.
        nonce: u64,
    },
    /// Client → server, ahead of `Connect`: a resumption ticket from an earlier session.
    Resume {
        /// The ticket, opaque to the client.
        ticket: &'a [u8],
    },
    /// Client → server, ahead of `Connect`: this client is private (its addresses are never
    /// handed to anyone, and its pairs stay on the relay).
    Private,
}

/// Acknowledged packet-number ranges, borrowing the encoded ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AckFrame<'a> {
    /// Largest packet number acknowledged.
    pub largest: u64,
    /// How long the receiver held the ack, in microseconds.
    pub delay_us: u32,
    /// Length of the first range (ending at `largest`), minus nothing: at least 1.
    pub first: u32,
    /// `(gap, length)` pairs, 8 bytes each, as encoded.
    pub rest: &'a [u8],
}

impl AckFrame<'_> {
    /// The acknowledged ranges, highest first, as inclusive `(start, end)`. Stops at the
    /// first range that would go below zero.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self
            .largest
            .checked_sub(u64::from(self.first.max(1)) - 1)
            .map(|s| (s, self.largest));
        let mut low = first.map(|(s, _)| s);
        let more = self.rest.chunks_exact(8).map_while(move |c| {
            let gap = u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
            let len = u64::from(u32::from_be_bytes([c[4], c[5], c[6], c[7]]).max(1));
            let end = low?.checked_sub(gap + 2)?;
            let start = end.checked_sub(len - 1)?;
            low = Some(start);
            Some((start, end))
        });
        first.into_iter().chain(more)
    }

    /// Encodes ranges (highest first, inclusive, disjoint, descending) into `w`, as many as
    /// fit in `budget` bytes, at most [`MAX_ACK_RANGES`]. Returns false if not even one fits.
    pub fn encode_ranges(
        w: &mut Writer<'_>,
        ranges: &[(u64, u64)],
        delay_us: u32,
        budget: usize,
    ) -> bool {
        let Some(&(s0, e0)) = ranges.first() else {
            return false;
        };
        if budget < 1 + 8 + 4 + 4 + 1 || w.remaining() < 1 + 8 + 4 + 4 + 1 {
            return false;
        }
        let room = budget.min(w.remaining()) - (1 + 8 + 4 + 4 + 1);
        let extra = (room / 8).min(MAX_ACK_RANGES - 1).min(ranges.len() - 1);
        let _ = w.u8(ACK);
        let _ = w.u64(e0);
        let _ = w.u32(delay_us);
        let _ = w.u32((e0 - s0 + 1).min(u64::from(u32::MAX)) as u32);
        let _ = w.u8(extra as u8);
        let mut low = s0;
        for &(s, e) in &ranges[1..=extra] {
            let gap = (low - e - 2).min(u64::from(u32::MAX)) as u32;
            let len = (e - s + 1).min(u64::from(u32::MAX)) as u32;
            let _ = w.u32(gap);
            let _ = w.u32(len);
            low = s;
        }
        true
    }
}

impl<'a> Frame<'a> {
    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Self::Padding(n) => *n as usize,
            Self::Ping | Self::Private => 0,
            Self::Connect { token } => 2 + token.len(),
            Self::Welcome { observed, .. } => 8 + addr_len(observed) + 16,
            Self::Reject { .. } => 1,
            Self::Close { .. } => 2,
            Self::Datagram { payload } => 2 + payload.len(),
            Self::Stream { data, .. } => 4 + 2 + data.len(),
            Self::StreamAck { .. } => 8,
            Self::Relay { packet, .. } | Self::Relayed { packet, .. } => 8 + 2 + packet.len(),
            Self::Message { fragment, data, .. } => {
                1 + 1 + 4 + if fragment.is_some() { 8 } else { 0 } + 2 + data.len()
            }
            Self::Ack(a) => 8 + 4 + 4 + 1 + a.rest.len(),
            Self::Floor { .. } => 5,
            Self::Probe { .. } | Self::ProbeAck { .. } => 8,
            Self::Resume { ticket } => 2 + ticket.len(),
        }
    }

    /// Appends the frame to `w`.
    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        match *self {
            Self::Padding(n) => {
                w.u8(PADDING)?;
                w.zeros(n as usize)
            }
            Self::Ping => w.u8(PING),
            Self::Private => w.u8(PRIVATE),
            Self::Connect { token } => {
                if token.len() > MAX_TOKEN_LEN {
                    return Err(BufferTooSmall);
                }
                w.u8(CONNECT)?;
                w.u16(token.len() as u16)?;
                w.put(token)
            }
            Self::Resume { ticket } => {
                if ticket.len() > MAX_TICKET_LEN {
                    return Err(BufferTooSmall);
                }
                w.u8(RESUME)?;
                w.u16(ticket.len() as u16)?;
                w.put(ticket)
            }
            Self::Welcome {
                host_id,
                observed,
                reset_token,
            } => {
                w.u8(WELCOME)?;
                w.u64(host_id)?;
                w.addr(observed)?;
                w.put(&reset_token)
            }
            Self::Reject { reason } => {
                w.u8(REJECT)?;
                w.u8(reason)
            }
            Self::Close { code } => {
                w.u8(CLOSE)?;
                w.u16(code)
            }
            Self::Datagram { payload } => {
                let len = u16::try_from(payload.len()).map_err(|_| BufferTooSmall)?;
                w.u8(DATAGRAM)?;
                w.u16(len)?;
                w.put(payload)
            }
            Self::Stream { seq, data } => {
                let len = u16::try_from(data.len()).map_err(|_| BufferTooSmall)?;
                w.u8(STREAM)?;
                w.u32(seq)?;
                w.u16(len)?;
                w.put(data)
            }
            Self::StreamAck { next, mask } => {
                w.u8(STREAM_ACK)?;
                w.u32(next)?;
                w.u32(mask)
            }
            Self::Relay { to: id, packet } | Self::Relayed { from: id, packet } => {
                let len = u16::try_from(packet.len()).map_err(|_| BufferTooSmall)?;
                w.u8(if matches!(self, Self::Relay { .. }) {
                    RELAY
                } else {
                    RELAYED
                })?;
                w.u64(id)?;
                w.u16(len)?;
                w.put(packet)
            }
            Self::Message {
                channel,
                seq,
                fragment,
                data,
            } => {
                let len = u16::try_from(data.len()).map_err(|_| BufferTooSmall)?;
                w.u8(MESSAGE)?;
                w.u8(channel)?;
                w.u8(if fragment.is_some() { FLAG_FRAGMENT } else { 0 })?;
                w.u32(seq)?;
                if let Some((total, offset)) = fragment {
                    w.u32(total)?;
                    w.u32(offset)?;
                }
                w.u16(len)?;
                w.put(data)
            }
            Self::Ack(a) => {
                let count = u8::try_from(a.rest.len() / 8).map_err(|_| BufferTooSmall)?;
                if a.rest.len() % 8 != 0 {
                    return Err(BufferTooSmall);
                }
                w.u8(ACK)?;
                w.u64(a.largest)?;
                w.u32(a.delay_us)?;
                w.u32(a.first)?;
                w.u8(count)?;
                w.put(a.rest)
            }
            Self::Floor { channel, seq } => {
                w.u8(FLOOR)?;
                w.u8(channel)?;
                w.u32(seq)
            }
            Self::Probe { nonce } => {
                w.u8(PROBE)?;
                w.u64(nonce)
            }
            Self::ProbeAck { nonce } => {
                w.u8(PROBE_ACK)?;
                w.u64(nonce)
            }
        }
    }

    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            PADDING => {
                let rest = r.rest();
                // Padding is zeros, so a decoded packet always re-encodes to the same bytes.
                if rest.iter().any(|&b| b != 0) {
                    return Err(DecodeError::BadValue);
                }
                Self::Padding(u16::try_from(rest.len()).map_err(|_| DecodeError::BadLength)?)
            }
            PING => Self::Ping,
            PRIVATE => Self::Private,
            CONNECT => {
                let len = r.u16()? as usize;
                if len > MAX_TOKEN_LEN {
                    return Err(DecodeError::BadLength);
                }
                Self::Connect {
                    token: r.bytes(len)?,
                }
            }
            RESUME => {
                let len = r.u16()? as usize;
                if len > MAX_TICKET_LEN {
                    return Err(DecodeError::BadLength);
                }
                Self::Resume {
                    ticket: r.bytes(len)?,
                }
            }
            WELCOME => Self::Welcome {
                host_id: r.u64()?,
                observed: r.addr()?,
                reset_token: r.array()?,
            },
            REJECT => Self::Reject { reason: r.u8()? },
            CLOSE => Self::Close { code: r.u16()? },
            DATAGRAM => {
                let len = r.u16()? as usize;
                Self::Datagram {
                    payload: r.bytes(len)?,
                }
            }
            STREAM => {
                let seq = r.u32()?;
                let len = r.u16()? as usize;
                Self::Stream {
                    seq,
                    data: r.bytes(len)?,
                }
            }
            STREAM_ACK => Self::StreamAck {
                next: r.u32()?,
                mask: r.u32()?,
            },
            MESSAGE => {
                let channel = r.u8()?;
                let flags = r.u8()?;
                if flags & !FLAG_FRAGMENT != 0 {
                    return Err(DecodeError::BadValue);
                }
                let seq = r.u32()?;
                let fragment = if flags & FLAG_FRAGMENT != 0 {
                    let total = r.u32()?;
                    let offset = r.u32()?;
                    Some((total, offset))
                } else {
                    None
                };
                let len = r.u16()? as usize;
                let data = r.bytes(len)?;
                if let Some((total, offset)) = fragment {
                    if u64::from(offset) + len as u64 > u64::from(total) {
                        return Err(DecodeError::BadLength);
                    }
                }
                Self::Message {
                    channel,
                    seq,
                    fragment,
                    data,
                }
            }
            ACK => {
                let largest = r.u64()?;
                let delay_us = r.u32()?;
                let first = r.u32()?;
                let count = r.u8()? as usize;
                if count > MAX_ACK_RANGES {
                    return Err(DecodeError::BadLength);
                }
                Self::Ack(AckFrame {
                    largest,
                    delay_us,
                    first,
                    rest: r.bytes(count * 8)?,
                })
            }
            FLOOR => Self::Floor {
                channel: r.u8()?,
                seq: r.u32()?,
            },
            PROBE => Self::Probe { nonce: r.u64()? },
            PROBE_ACK => Self::ProbeAck { nonce: r.u64()? },
            kind @ (RELAY | RELAYED) => {
                let id = r.u64()?;
                let len = r.u16()? as usize;
                let packet = r.bytes(len)?;
                if kind == RELAY {
                    Self::Relay { to: id, packet }
                } else {
                    Self::Relayed { from: id, packet }
                }
            }
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

/// Iterates over the frames of a decrypted plaintext. Stops after the first error.
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> Frames<'a> {
    /// Frames of `plaintext`.
    pub fn new(plaintext: &'a [u8]) -> Self {
        Self {
            r: Reader::new(plaintext),
            failed: false,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.r.position()
    }
}

/// Frames of one packet kept inline before [`PacketFrames`] spills to the heap: more than any
/// packet Pierce builds carries except one packed with many tiny messages (a peer that does
/// so costs itself one allocation per packet; a packet of 1200 bytes holds at most 1200
/// frames, so the spill is bounded).
pub const INLINE_FRAMES: usize = 16;

/// Every frame of one packet, decoded once.
pub type PacketFrames<'a> = smallvec::SmallVec<[Frame<'a>; INLINE_FRAMES]>;

/// Decodes every frame of `plaintext` in one pass. A packet with any malformed frame is
/// refused whole (`Err`), so that nothing of it takes effect: receivers decode first, then
/// hand each frame to its owner.
///
/// # Errors
/// The first frame that does not decode.
pub fn decode_all(plaintext: &[u8]) -> Result<PacketFrames<'_>, DecodeError> {
    // Its own loop rather than `decode_prefix`'s: the frames (900 bytes inline) are built in
    // place, not moved out of a tuple.
    let mut frames = PacketFrames::new();
    let mut r = Reader::new(plaintext);
    while r.remaining() > 0 {
        frames.push(Frame::decode(&mut r)?);
    }
    Ok(frames)
}

/// [`decode_all`] for a receiver that also looks at what came before a malformed frame (the
/// server's path rule: an authentic packet carrying a probe never moves a session, whatever
/// follows the probe). One pass: the frames that decoded, in order, and the error that ended
/// it, if any (then the packet is still refused whole).
pub fn decode_prefix(plaintext: &[u8]) -> (PacketFrames<'_>, Option<DecodeError>) {
    let mut frames = PacketFrames::new();
    for frame in Frames::new(plaintext) {
        match frame {
            Ok(f) => frames.push(f),
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.remaining() == 0 {
            return None;
        }
        let out = Frame::decode(&mut self.r);
        self.failed = out.is_err();
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_all(frames: &[Frame<'_>]) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000 * (frames.len() + 1)];
        let mut w = Writer::new(&mut buf);
        for f in frames {
            let before = w.len();
            f.encode(&mut w).unwrap();
            assert_eq!(w.len() - before, f.encoded_len(), "{f:?}");
        }
        let n = w.len();
        buf.truncate(n);
        buf
    }

    #[test]
    fn frames_golden_bytes() {
        let observed: SocketAddr = "198.51.100.9:4000".parse().unwrap();
        let bytes = encode_all(&[
            Frame::Ping,
            Frame::Connect { token: &[7, 8] },
            Frame::Welcome {
                host_id: 5,
                observed,
                reset_token: [0xEE; 16],
            },
            Frame::Reject { reason: 2 },
            Frame::Close { code: 0x0102 },
            Frame::Datagram { payload: b"hi" },
            Frame::Stream { seq: 9, data: b"c" },
            Frame::StreamAck { next: 2, mask: 5 },
            Frame::Relay {
                to: 1,
                packet: b"p",
            },
            Frame::Relayed {
                from: 2,
                packet: b"q",
            },
            Frame::Padding(3),
        ]);
        #[rustfmt::skip]
        let expect: &[u8] = &[
            0x01,                               // Ping
            0x02, 0x00, 0x02, 7, 8,             // Connect, len 2, token
            0x03, 0, 0, 0, 0, 0, 0, 0, 5,       // Welcome, host id 5
                  4, 198, 51, 100, 9, 0x0F, 0xA0, //   observed 198.51.100.9:4000
                  0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, // reset token
                  0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
            0x04, 0x02,                         // Reject, reason 2
            0x05, 0x01, 0x02,                   // Close, code 0x0102
            0x06, 0x00, 0x02, b'h', b'i',       // Datagram, len 2, payload
            0x07, 0, 0, 0, 9, 0x00, 0x01, b'c', // Stream, seq 9, len 1, data
            0x08, 0, 0, 0, 2, 0, 0, 0, 5,       // StreamAck, next 2, mask 0b101
            0x09, 0, 0, 0, 0, 0, 0, 0, 1,       // Relay to host 1
                  0x00, 0x01, b'p',             //   len 1, packet
            0x0A, 0, 0, 0, 0, 0, 0, 0, 2,       // Relayed from host 2
                  0x00, 0x01, b'q',             //   len 1, packet
            0x00, 0, 0, 0,                      // Padding, 3 bytes
        ];
        assert_eq!(bytes, expect);
    }

    #[test]
    fn message_ack_and_floor_golden_bytes() {
        let bytes = encode_all(&[
            Frame::Message {
                channel: 2,
                seq: 7,
                fragment: Some((10, 4)),
                data: b"ab",
            },
            Frame::Message {
                channel: 0,
                seq: 1,
                fragment: None,
                data: b"z",
            },
            Frame::Floor { channel: 3, seq: 9 },
            Frame::Probe { nonce: 5 },
            Frame::ProbeAck { nonce: 6 },
        ]);
        #[rustfmt::skip]
        let expect: &[u8] = &[
            0x0B, 2, 0x01, 0, 0, 0, 7,          // Message, channel 2, FRAGMENT, seq 7
                  0, 0, 0, 10, 0, 0, 0, 4,      //   message length 10, offset 4
                  0x00, 0x02, b'a', b'b',       //   len 2, data
            0x0B, 0, 0x00, 0, 0, 0, 1,          // Message, channel 0, whole, seq 1
                  0x00, 0x01, b'z',             //   len 1, data
            0x0D, 3, 0, 0, 0, 9,                // Floor, channel 3, seq 9
            0x0E, 0, 0, 0, 0, 0, 0, 0, 5,       // Probe, nonce 5
            0x0F, 0, 0, 0, 0, 0, 0, 0, 6,       // ProbeAck, nonce 6
        ];
        assert_eq!(bytes, expect);
        // A fragment claiming to run past its message's end (offset 2 + 2 bytes > 3).
        let mut it = Frames::new(&[0x0B, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 2, 9, 9]);
        assert_eq!(it.next(), Some(Err(DecodeError::BadLength)));
    }

    #[test]
    fn ack_ranges_encode_and_decode_like_quic() {
        let ranges = [(90, 100), (70, 80), (50, 50)];
        let mut buf = [0u8; 200];
        let mut w = Writer::new(&mut buf);
        assert!(AckFrame::encode_ranges(&mut w, &ranges, 250, 200));
        let n = w.len();
        let Some(Ok(Frame::Ack(a))) = Frames::new(&buf[..n]).next() else {
            panic!("no ack");
        };
        assert_eq!(a.delay_us, 250);
        assert_eq!(a.ranges().collect::<Vec<_>>(), ranges);
        // A small budget keeps only the newest ranges.
        let mut w = Writer::new(&mut buf);
        assert!(AckFrame::encode_ranges(&mut w, &ranges, 0, 18 + 8));
        let n = w.len();
        let Some(Ok(Frame::Ack(a))) = Frames::new(&buf[..n]).next() else {
            panic!("no ack");
        };
        assert_eq!(a.ranges().collect::<Vec<_>>(), &ranges[..2]);
        // Ranges that would go below zero are cut, not wrapped.
        let a = AckFrame {
            largest: 3,
            delay_us: 0,
            first: 10,
            rest: &[],
        };
        assert_eq!(a.ranges().count(), 0);
    }

    #[test]
    fn truncated_and_unknown_frames_stop_the_iteration() {
        let mut it = Frames::new(&[0x01, 0x06, 0x00, 0x09, 1]);
        assert_eq!(it.next(), Some(Ok(Frame::Ping)));
        assert_eq!(it.next(), Some(Err(DecodeError::Truncated)));
        assert_eq!(it.next(), None);
        let mut it = Frames::new(&[0x7F]);
        assert_eq!(it.next(), Some(Err(DecodeError::UnknownKind(0x7F))));
        let mut it = Frames::new(&[0x02, 0x01, 0x01]);
        assert_eq!(it.next(), Some(Err(DecodeError::BadLength)));
        // Found by the wire_decode fuzz target: padding with non-zero bytes.
        let mut it = Frames::new(&[0x01, 0x00, 0x2E]);
        assert_eq!(it.next(), Some(Ok(Frame::Ping)));
        assert_eq!(it.next(), Some(Err(DecodeError::BadValue)));
    }

    #[test]
    fn a_malformed_frame_refuses_the_packet_and_the_prefix_is_what_came_before() {
        let bytes = [0x01, 0x0E, 0, 0, 0, 0, 0, 0, 0, 7, 0x7F, 0x01];
        let (frames, error) = decode_prefix(&bytes);
        assert_eq!(&frames[..], [Frame::Ping, Frame::Probe { nonce: 7 }]);
        assert_eq!(error, Some(DecodeError::UnknownKind(0x7F)));
        assert_eq!(decode_all(&bytes), Err(DecodeError::UnknownKind(0x7F)));
        let (frames, error) = decode_prefix(&bytes[..10]);
        assert_eq!((frames.len(), error), (2, None));
        assert_eq!(decode_all(&bytes[..10]).map(|f| f.len()), Ok(2));
    }

    #[test]
    fn the_private_frame_is_one_byte_ahead_of_connect() {
        let bytes = encode_all(&[Frame::Private, Frame::Connect { token: &[] }]);
        assert_eq!(bytes, [0x11, 0x02, 0x00, 0x00]);
        let decoded: Result<Vec<_>, _> = Frames::new(&bytes).collect();
        assert_eq!(
            decoded,
            Ok(vec![Frame::Private, Frame::Connect { token: &[] }])
        );
    }

    /// Property test: arbitrary frame sequences survive encode → decode unchanged.
    #[test]
    fn arbitrary_frame_sequences_round_trip() {
        use arbitrary::{Arbitrary, Unstructured};
        use rand::{RngCore, SeedableRng, rngs::StdRng};

        let mut rng = StdRng::seed_from_u64(0x5eed);
        let mut raw = vec![0u8; 4096];
        let mut checked = 0;
        for _ in 0..2000 {
            rng.fill_bytes(&mut raw);
            let mut u = Unstructured::new(&raw);
            let Ok(mut frames) = Vec::<ArbFrame<'_>>::arbitrary(&mut u) else {
                continue;
            };
            // Padding only makes sense last; tokens have a cap the encoder enforces.
            frames.retain(|f| match f.0 {
                Frame::Padding(_) => false,
                Frame::Connect { token } => token.len() <= MAX_TOKEN_LEN,
                _ => true,
            });
            let frames: Vec<Frame<'_>> = frames.into_iter().map(|f| f.0).collect();
            let bytes = encode_all(&frames);
            let decoded: Result<Vec<_>, _> = Frames::new(&bytes).collect();
            assert_eq!(decoded.as_deref(), Ok(&frames[..]));
            checked += 1;
        }
        assert!(checked > 1000, "only {checked} cases were generated");
    }

    /// `Arbitrary` for frames without needing the crate feature in tests.
    #[derive(Debug)]
    struct ArbFrame<'a>(Frame<'a>);

    impl<'a> arbitrary::Arbitrary<'a> for ArbFrame<'a> {
        fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
            Ok(Self(match u.int_in_range(0..=16u8)? {
                0 => Frame::Padding(u.arbitrary()?),
                1 => Frame::Ping,
                2 => Frame::Connect {
                    token: u.arbitrary()?,
                },
                3 => Frame::Welcome {
                    host_id: u.arbitrary()?,
                    // The wire carries IP and port only (no IPv6 flow info or scope).
                    observed: SocketAddr::new(u.arbitrary()?, u.arbitrary()?),
                    reset_token: u.arbitrary()?,
                },
                4 => Frame::Reject {
                    reason: u.arbitrary()?,
                },
                5 => Frame::Close {
                    code: u.arbitrary()?,
                },
                6 => Frame::Datagram {
                    payload: u.arbitrary()?,
                },
                7 => Frame::Stream {
                    seq: u.arbitrary()?,
                    data: u.arbitrary()?,
                },
                8 => Frame::StreamAck {
                    next: u.arbitrary()?,
                    mask: u.arbitrary()?,
                },
                9 => Frame::Relay {
                    to: u.arbitrary()?,
                    packet: u.arbitrary()?,
                },
                11 => {
                    let data: &[u8] = u.arbitrary()?;
                    let fragment = if u.arbitrary()? {
                        let offset: u32 = u.arbitrary()?;
                        let extra: u16 = u.arbitrary()?;
                        let total = offset
                            .saturating_add(data.len() as u32)
                            .saturating_add(u32::from(extra));
                        (u64::from(offset) + data.len() as u64 <= u64::from(total))
                            .then_some((total, offset))
                    } else {
                        None
                    };
                    Frame::Message {
                        channel: u.arbitrary()?,
                        seq: u.arbitrary()?,
                        fragment,
                        data,
                    }
                }
                12 => {
                    let n = u.int_in_range(0..=MAX_ACK_RANGES)?;
                    let rest = u.bytes(n * 8)?;
                    Frame::Ack(AckFrame {
                        largest: u.arbitrary()?,
                        delay_us: u.arbitrary()?,
                        first: u.arbitrary()?,
                        rest,
                    })
                }
                13 => Frame::Floor {
                    channel: u.arbitrary()?,
                    seq: u.arbitrary()?,
                },
                14 => Frame::Probe {
                    nonce: u.arbitrary()?,
                },
                15 => Frame::ProbeAck {
                    nonce: u.arbitrary()?,
                },
                16 => Frame::Private,
                _ => Frame::Relayed {
                    from: u.arbitrary()?,
                    packet: u.arbitrary()?,
                },
            }))
        }
    }
}
