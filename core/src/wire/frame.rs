//! Frames carried inside the plaintext of a sealed packet. A packet holds one or more frames
//! back to back; a [`Frame::Padding`] frame swallows the rest of the packet.
//!
//! ```text
//! 0x00 Padding   | zero bytes to the end of the packet (any non-zero byte: invalid)
//! 0x01 Ping      |
//! 0x02 Connect   | token length (u16, ≤ MAX_TOKEN_LEN) | token
//! 0x03 Welcome   | host id (u64) | observed address (family u8, ip, port u16)
//! 0x04 Reject    | reason (u8)
//! 0x05 Close     | code (u16)
//! 0x06 Datagram  | length (u16) | payload
//! 0x07 Stream    | sequence (u32) | length (u16) | control message (see `wire::control`)
//! 0x08 StreamAck | next expected (u32) | mask (u32): bit i = next + 1 + i arrived
//! 0x09 Relay     | to host id (u64) | length (u16) | peer packet        (client → server)
//! 0x0A Relayed   | from host id (u64) | length (u16) | peer packet      (server → client)
//! ```

use std::net::SocketAddr;

use super::{BufferTooSmall, DecodeError, Reader, Writer, addr_len};

/// Largest connect token a client may present.
pub const MAX_TOKEN_LEN: usize = 256;

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
}

impl<'a> Frame<'a> {
    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Self::Padding(n) => *n as usize,
            Self::Ping => 0,
            Self::Connect { token } => 2 + token.len(),
            Self::Welcome { observed, .. } => 8 + addr_len(observed),
            Self::Reject { .. } => 1,
            Self::Close { .. } => 2,
            Self::Datagram { payload } => 2 + payload.len(),
            Self::Stream { data, .. } => 4 + 2 + data.len(),
            Self::StreamAck { .. } => 8,
            Self::Relay { packet, .. } | Self::Relayed { packet, .. } => 8 + 2 + packet.len(),
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
            Self::Connect { token } => {
                if token.len() > MAX_TOKEN_LEN {
                    return Err(BufferTooSmall);
                }
                w.u8(CONNECT)?;
                w.u16(token.len() as u16)?;
                w.put(token)
            }
            Self::Welcome { host_id, observed } => {
                w.u8(WELCOME)?;
                w.u64(host_id)?;
                w.addr(observed)
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
            CONNECT => {
                let len = r.u16()? as usize;
                if len > MAX_TOKEN_LEN {
                    return Err(DecodeError::BadLength);
                }
                Self::Connect {
                    token: r.bytes(len)?,
                }
            }
            WELCOME => Self::Welcome {
                host_id: r.u64()?,
                observed: r.addr()?,
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
            Ok(Self(match u.int_in_range(0..=10u8)? {
                0 => Frame::Padding(u.arbitrary()?),
                1 => Frame::Ping,
                2 => Frame::Connect {
                    token: u.arbitrary()?,
                },
                3 => Frame::Welcome {
                    host_id: u.arbitrary()?,
                    // The wire carries IP and port only (no IPv6 flow info or scope).
                    observed: SocketAddr::new(u.arbitrary()?, u.arbitrary()?),
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
                _ => Frame::Relayed {
                    from: u.arbitrary()?,
                    packet: u.arbitrary()?,
                },
            }))
        }
    }
}
