//! First-byte classification of an incoming datagram (see the table in [`crate::wire`]).

use super::handshake::{
    ClientHello, KIND_CLIENT_HELLO, KIND_RETRY, KIND_SERVER_HELLO, Retry, ServerHello,
};
use super::relay::{KIND_RELAY, KIND_RELAYED, RelayPacket, RelayedPacket};
use super::reset::{KIND_RESET, Reset};
use super::sealed::{KIND_PEER, KIND_SEALED, SealedPacket};
use super::stun::{StunMessage, is_classic_binding_request, is_stun};
use super::{DecodeError, VERSION};

/// A datagram classified and split, borrowing its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A STUN message (RFC 8489), or a classic RFC 3489 Binding request
    /// ([`StunMessage::classic`]).
    Stun(StunMessage<'a>),
    /// First handshake packet.
    ClientHello(ClientHello<'a>),
    /// Second handshake packet.
    ServerHello(ServerHello),
    /// The server wants a cookie echoed first.
    Retry(Retry),
    /// An encrypted session packet or peer-to-peer packet.
    Sealed(SealedPacket<'a>),
    /// A peer packet sent to the server for relaying (the relay fast path).
    Relay(RelayPacket<'a>),
    /// A peer packet the server relayed.
    Relayed(RelayedPacket<'a>),
    /// A stateless reset: the server no longer has the session of the token in it.
    Reset(Reset),
}

/// Classifies and decodes the outer layer of `datagram`.
pub fn decode(datagram: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    let Some(&kind) = datagram.first() else {
        return Err(DecodeError::Truncated);
    };
    if kind & 0xC0 == 0 {
        return if is_stun(datagram) {
            StunMessage::decode(datagram).map(Datagram::Stun)
        } else if is_classic_binding_request(datagram) {
            StunMessage::decode_classic(datagram).map(Datagram::Stun)
        } else {
            Err(DecodeError::UnknownKind(kind))
        };
    }
    match kind {
        KIND_CLIENT_HELLO | KIND_SERVER_HELLO | KIND_SEALED | KIND_PEER | KIND_RETRY
        | KIND_RELAY | KIND_RELAYED | KIND_RESET => {}
        other => return Err(DecodeError::UnknownKind(other)),
    }
    match datagram.get(1) {
        None => return Err(DecodeError::Truncated),
        Some(&v) if v != VERSION => return Err(DecodeError::BadVersion(v)),
        Some(_) => {}
    }
    match kind {
        KIND_CLIENT_HELLO => ClientHello::decode(datagram).map(Datagram::ClientHello),
        KIND_SERVER_HELLO => ServerHello::decode(datagram).map(Datagram::ServerHello),
        KIND_RETRY => Retry::decode(datagram).map(Datagram::Retry),
        KIND_RELAY => RelayPacket::decode(datagram).map(Datagram::Relay),
        KIND_RELAYED => RelayedPacket::decode(datagram).map(Datagram::Relayed),
        KIND_RESET => Reset::decode(datagram).map(Datagram::Reset),
        _ => SealedPacket::decode(datagram).map(Datagram::Sealed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sealed::SealedHeader;

    #[test]
    fn each_kind_is_told_apart_by_its_first_bytes() {
        let stun = [
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        assert!(matches!(decode(&stun), Ok(Datagram::Stun(_))));

        let mut hello = [0u8; 1200];
        let n = ClientHello {
            client_session: 1,
            client_ephemeral: [2; 32],
            cookie: &[],
        }
        .encode(&mut hello)
        .unwrap();
        assert!(matches!(decode(&hello[..n]), Ok(Datagram::ClientHello(_))));

        let mut sealed = SealedHeader {
            peer: false,
            receiver: 3,
            counter: 4,
        }
        .to_bytes()
        .to_vec();
        sealed.extend_from_slice(&[0; 16]);
        assert!(matches!(decode(&sealed), Ok(Datagram::Sealed(_))));

        let mut reset = [0u8; crate::wire::reset::RESET_LEN];
        Reset { token: [5; 16] }.encode(&mut reset).unwrap();
        assert_eq!(
            decode(&reset),
            Ok(Datagram::Reset(Reset { token: [5; 16] }))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0xD3]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x42, 1, 2]), Err(DecodeError::UnknownKind(0x42)));
        assert_eq!(decode(&[0x00, 1, 2]), Err(DecodeError::UnknownKind(0x00)));
        assert_eq!(decode(&[0xD3, 7, 0, 0]), Err(DecodeError::BadVersion(7)));
        assert_eq!(decode(&[0xFF; 40]), Err(DecodeError::UnknownKind(0xFF)));
    }
}
