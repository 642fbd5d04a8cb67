//! Arbitrary bytes → every decoder (datagrams, frames, control-stream messages). Decoding
//! never panics, and whatever decodes re-encodes to exactly the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pierce_core::wire::control::ControlMsg;
use pierce_core::wire::demux::{self, Datagram};
use pierce_core::wire::frame::Frames;
use pierce_core::wire::handshake::{RETRY_LEN, SERVER_HELLO_LEN};
use pierce_core::wire::relay::{self, RELAY_HEADER_LEN};
use pierce_core::wire::sealed::{HEADER_LEN, KIND_PEER};
use pierce_core::wire::{Writer, reset, stun};

fuzz_target!(|data: &[u8]| {
    let mut buf = vec![0u8; 70_000];
    match demux::decode(data) {
        Err(_) => {}
        Ok(Datagram::Stun(m)) => {
            // RFC 8489, or a classic RFC 3489 Binding request with its id's head kept.
            match m.classic {
                None => assert!(stun::is_stun(data)),
                Some(head) => {
                    assert!(stun::is_classic_binding_request(data));
                    assert_eq!(head, data[4..8]);
                }
            }
            assert_eq!(m.attributes, &data[stun::HEADER_LEN..]);
            assert_eq!(m.transaction_id, data[8..20]);
        }
        Ok(Datagram::ClientHello(h)) => {
            let n = h.encode(&mut buf).expect("fits");
            // The fields re-encode exactly; padding is not interpreted.
            let fields = 4 + 4 + 32 + 1 + h.cookie.len();
            assert_eq!(&buf[..fields], &data[..fields]);
            assert!(n >= fields);
        }
        Ok(Datagram::ServerHello(h)) => {
            assert_eq!(h.encode(&mut buf), Ok(SERVER_HELLO_LEN));
            assert_eq!(&buf[..SERVER_HELLO_LEN], data);
        }
        Ok(Datagram::Retry(r)) => {
            assert_eq!(r.encode(&mut buf), Ok(RETRY_LEN));
            assert_eq!(&buf[..RETRY_LEN], data);
        }
        Ok(Datagram::Sealed(p)) => {
            assert_eq!(p.header.to_bytes(), data[..HEADER_LEN]);
            assert_eq!(p.aad, &data[..HEADER_LEN]);
            assert_eq!(p.ciphertext_and_tag, &data[HEADER_LEN..]);
        }
        Ok(Datagram::Relay(p)) => {
            // A relay header re-encodes exactly, its tag covers its format bytes, its counter
            // and the peer packet's pair id, and what is forwarded is a whole peer packet.
            let peer_len = p.peer_bytes.len();
            buf[RELAY_HEADER_LEN..][..peer_len].copy_from_slice(p.peer_bytes);
            let n = relay::encode_relay(&mut buf, p.session, p.counter, peer_len, |tagged| {
                assert_eq!(tagged, &p.tagged);
                p.tag
            })
            .expect("fits");
            assert_eq!(&buf[..n], data);
            assert_eq!(p.peer_bytes[0], KIND_PEER);
            assert_eq!(&p.tagged[..4], &data[..4]);
            assert_eq!(p.tagged[4..12], p.counter.to_be_bytes());
            assert_eq!(p.tagged[12..], p.peer.header.receiver.to_be_bytes());
        }
        Ok(Datagram::Reset(r)) => {
            assert_eq!(r.encode(&mut buf), Ok(reset::RESET_LEN));
            assert_eq!(&buf[..reset::RESET_LEN], data);
        }
        Ok(Datagram::Relayed(p)) => {
            let n = relay::encode_relayed(&mut buf, p.session, p.from, p.peer_bytes).expect("fits");
            assert_eq!(&buf[..n], data);
            assert_eq!(p.peer_bytes[0], KIND_PEER);
        }
    }
    // The same bytes as a control-stream message (decode consumes all of it): it re-encodes
    // to exactly those bytes.
    if let Ok(m) = ControlMsg::decode(data) {
        let n = m.encode(&mut buf).expect("fits");
        assert_eq!(&buf[..n], data, "{m:?}");
    }
    // The same bytes as a decrypted plaintext: each decoded frame re-encodes to what it used.
    let mut frames = Frames::new(data);
    let mut start = 0;
    while let Some(Ok(frame)) = frames.next() {
        let end = frames.position();
        let mut w = Writer::new(&mut buf);
        frame.encode(&mut w).expect("fits");
        assert_eq!(frame.encoded_len(), end - start);
        let n = w.len();
        assert_eq!(&buf[..n], &data[start..end], "{frame:?}");
        start = end;
    }
});
