//! Arbitrary datagrams from arbitrary sources with arbitrary time steps into a Server (built
//! with the `cfg(fuzzing)` null cipher, so forged sealed packets get past authentication).
//! Invariants: no panic; after `handle_timeout(now)` the next deadline is in the future; state
//! stays within the configured caps; replies to a source that is not a connected client are
//! never more than 2.6x what it sent (STUN's factor; everything else is below 1x). Sources with
//! the top bit set arrive on TCP streams (one fixed peer address per stream) and template bit
//! 0x40 closes the stream afterwards (template 0 with bit 0x20 is a relay packet of the relay
//! fast path): a transmit names a stream only with that stream's
//! address, and never a stream closed since it was last heard.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pierce_core::wire::handshake::{ClientHello, MIN_CLIENT_HELLO_LEN};
use pierce_core::{
    Endpoint, Events, MAX_DATAGRAM_SIZE, RoomsConfig, SecretKey, Server, ServerConfig, SocketId,
};

#[derive(Arbitrary, Debug)]
struct Step {
    src: u8,
    advance_ms: u16,
    template: u8,
    bytes: Vec<u8>,
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, i % 8], 4000 + u16::from(i % 3)))
}

/// The socket a source's datagrams arrive on, and the address seen there.
fn source(i: u8) -> (SocketId, SocketAddr) {
    if i & 0x80 == 0 {
        (SocketId::PRIMARY, addr(i))
    } else {
        let n = u16::from(i % 4) + 1;
        let a = SocketAddr::from(([198, 51, 100, 100 + i % 4], 50_000 + n));
        (SocketId::stream(n), a)
    }
}

/// Shapes fuzz bytes into something the server will look at closely.
fn datagram(template: u8, bytes: &[u8]) -> Vec<u8> {
    match template % 4 {
        // A ClientHello, padded.
        1 => {
            let mut e = [0u8; 32];
            for (d, s) in e.iter_mut().zip(bytes) {
                *d = *s;
            }
            let mut buf = vec![0u8; MIN_CLIENT_HELLO_LEN];
            let n = ClientHello {
                client_session: u32::from(bytes.first().copied().unwrap_or(0)),
                client_ephemeral: e,
                cookie: &[],
            }
            .encode(&mut buf)
            .unwrap_or(0);
            buf.truncate(n);
            buf
        }
        // A sealed packet for a plausible session, null-cipher tag: frames are fuzz bytes.
        2 => {
            let b0 = u32::from(bytes.first().copied().unwrap_or(0));
            let b1 = u32::from(bytes.get(1).copied().unwrap_or(0));
            let receiver = (b0 % 8) | ((b1 % 8 + 1) << 24);
            let counter = u64::from(bytes.get(2).copied().unwrap_or(0));
            let mut d = vec![0xD3, 1, 0, 0];
            d.extend_from_slice(&receiver.to_be_bytes());
            d.extend_from_slice(&counter.to_be_bytes());
            d.extend_from_slice(bytes.get(3..).unwrap_or(&[]));
            d.extend_from_slice(&[0; 16]);
            d
        }
        // A STUN Binding request.
        3 => {
            let mut d = vec![0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42];
            let mut txid = [0u8; 12];
            for (t, s) in txid.iter_mut().zip(bytes) {
                *t = *s;
            }
            d.extend_from_slice(&txid);
            d
        }
        // A relay packet (the fast path) for a plausible session, null-cipher tag, carrying a
        // peer packet for a plausible pair (so the session, path, counter and pair checks run).
        0 if template & 0x20 != 0 => {
            let b = |i: usize| bytes.get(i).copied().unwrap_or(0);
            let session = (u32::from(b(0)) % 8) | ((u32::from(b(1)) % 8 + 1) << 24);
            let mut d = vec![0xD6, 1, 0, 0];
            d.extend_from_slice(&session.to_be_bytes());
            d.extend_from_slice(&u64::from(b(2)).to_be_bytes());
            d.extend_from_slice(&[0; 16]);
            d.extend_from_slice(&[0xD4, 1, 0, 0]);
            d.extend_from_slice(&u32::from_be_bytes([b(3), b(4), b(5), b(6)]).to_be_bytes());
            d.extend_from_slice(&u64::from(b(7)).to_be_bytes());
            d.extend_from_slice(bytes.get(8..).unwrap_or(&[]));
            d.extend_from_slice(&[0; 16]);
            d
        }
        _ => bytes.to_vec(),
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let mut cfg = ServerConfig::new(SecretKey::from_bytes([1; 32]));
    cfg.max_half_open = 16;
    cfg.max_clients = 16;
    cfg.rooms = Some(RoomsConfig::default());
    let epoch = Instant::now();
    let mut now = epoch;
    let mut server = Server::new(
        Arc::new(cfg),
        [2; 32],
        now,
        Duration::from_secs(1_800_000_000),
    )
    .expect("config");
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    let mut closed: Vec<SocketId> = Vec::new();
    for step in steps.iter().take(64) {
        now += Duration::from_millis(u64::from(step.advance_ms));
        server.handle_timeout(now);
        if let Some(t) = server.poll_timeout() {
            assert!(
                t.at > now,
                "a deadline in the past after handle_timeout: {}",
                t.reason
            );
        }
        let (socket, from) = source(step.src);
        let d = datagram(step.template, &step.bytes);
        let d = &d[..d.len().min(2048)];
        server.handle_datagram_on(now, socket, from, d);
        closed.retain(|&c| c != socket);
        let clients: Vec<SocketAddr> = server
            .clients()
            .filter_map(|h| server.client_addr(h))
            .collect();
        let mut to_src = 0usize;
        while let Some(t) = server.poll_transmit(now, &mut buf) {
            assert!(t.len <= MAX_DATAGRAM_SIZE);
            if t.socket.is_stream() {
                assert!(!closed.contains(&t.socket), "a transmit on a closed stream");
                let n = t.socket.0 & 0x7fff;
                let expect = SocketAddr::from(([198, 51, 100, 100 + (n as u8 - 1)], 50_000 + n));
                assert_eq!(t.dst, expect, "a stream carries one peer's traffic");
            }
            if t.dst == from {
                to_src += t.len;
            }
        }
        if !clients.contains(&from) {
            assert!(
                to_src as f64 <= 2.6 * d.len() as f64 + 0.5,
                "amplification: {to_src} bytes for {} from an unvalidated source",
                d.len()
            );
        }
        if socket.is_stream() && step.template & 0x40 != 0 {
            server.handle_stream_closed(now, socket);
            closed.push(socket);
        }
        while server.poll_event().is_some() {}
        let s = server.stats();
        assert!(s.half_open <= 16 && s.clients <= 16, "{s:?}");
        // Drops count datagrams or items inside them: never more than datagrams + bytes.
        assert!(
            s.dropped.total() <= s.io.datagrams_in + s.io.bytes_in,
            "{s:?}"
        );
    }
});
