//! Arbitrary datagrams into a connecting Client (null cipher under `cfg(fuzzing)`, so forged
//! ServerHellos and sealed packets reach the state machine). Invariants: no panic; after
//! `handle_timeout(now)` the next deadline is in the future; nothing is ever sent anywhere but
//! the server it was told to use (no reflection off a client); queues stay bounded. The
//! harness plays the runtime's TCP side too (template bits: deliver on the stream, close it,
//! refuse the next connect; template 0 with bit 0x80: a relayed peer packet of the relay fast
//! path): streams are only asked of the server, and a transmit only ever
//! names a stream that connected and that the client has not closed itself (one that broke
//! is named until a new one connects: the runtime drops those; stream ids are never reused).
//! The client knows a LAN address and its default gateway, so it runs port mapping too:
//! datagrams may come from the gateway's PCP port, and requests may go there, to its SSDP
//! port or the SSDP multicast group (UPnP IGD); byte streams (UPnP's HTTP) are only asked of
//! the gateway, and the harness connects them and feeds them fuzz bytes (template bit 0x08
//! with `from_gateway`; bit 0x04 closes one).
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pierce_core::{
    Client, ClientConfig, Endpoint, Events, MAX_DATAGRAM_SIZE, SocketId, SocketRequest,
};

#[derive(Arbitrary, Debug)]
struct Step {
    from_server: bool,
    from_gateway: bool,
    advance_ms: u16,
    template: u8,
    bytes: Vec<u8>,
}

fuzz_target!(|steps: Vec<Step>| {
    let server: SocketAddr = "203.0.113.10:7000".parse().expect("literal");
    let stranger: SocketAddr = "192.0.2.66:9".parse().expect("literal");
    let epoch = Instant::now();
    let mut now = epoch;
    let mut client = Client::new(Arc::new(ClientConfig::default()), [3; 32], now).expect("config");
    let gateway: SocketAddr = "10.0.0.1:5351".parse().expect("literal");
    let lan: SocketAddr = "10.0.0.2:50000".parse().expect("literal");
    client.set_local_addresses(now, &[lan]).expect("fresh");
    client.set_gateway(now, Some(gateway.ip()));
    client.connect(now, server, &[]).expect("fresh");
    let mut buf = [0u8; MAX_DATAGRAM_SIZE];
    let mut session = 0u32;
    // The stream the runtime holds for the client, if any, and its byte stream to the gateway.
    let mut stream: Option<SocketId> = None;
    let mut raw: Option<SocketId> = None;
    let ssdp: SocketAddr = "239.255.255.250:1900".parse().expect("literal");
    // Streams that connected, and those the client closed itself.
    let mut connected: Vec<SocketId> = Vec::new();
    let mut closed_by_client: Vec<SocketId> = Vec::new();
    let mut refuse = false;
    for step in steps.iter().take(64) {
        now += Duration::from_millis(u64::from(step.advance_ms));
        client.handle_timeout(now);
        if let Some(t) = client.poll_timeout() {
            assert!(t.at > now, "a deadline in the past: {}", t.reason);
        }
        let serve = |client: &mut Client,
                     stream: &mut Option<SocketId>,
                     raw: &mut Option<SocketId>,
                     connected: &mut Vec<SocketId>,
                     closed_by_client: &mut Vec<SocketId>| {
            while let Some(r) = client.poll_socket_request() {
                match r {
                    SocketRequest::Connect { id, addr } => {
                        assert_eq!(addr, server, "streams go to the server only");
                        assert!(id.is_stream());
                        if refuse {
                            client.handle_socket_opened(now, id, None);
                        } else {
                            *stream = Some(id);
                            connected.push(id);
                            client.handle_socket_opened(
                                now,
                                id,
                                Some("10.0.0.2:50000".parse().expect("literal")),
                            );
                        }
                    }
                    SocketRequest::ConnectRaw { id, addr } => {
                        assert_eq!(
                            addr.ip(),
                            gateway.ip(),
                            "byte streams go to the gateway only"
                        );
                        assert!(id.is_stream());
                        if refuse {
                            client.handle_socket_opened(now, id, None);
                        } else {
                            *raw = Some(id);
                            connected.push(id);
                            client.handle_socket_opened(now, id, Some(lan));
                        }
                    }
                    SocketRequest::Close { id } => {
                        closed_by_client.push(id);
                        if Some(id) == *stream {
                            *stream = None;
                        }
                        if Some(id) == *raw {
                            *raw = None;
                        }
                    }
                    _ => {}
                }
            }
        };
        serve(
            &mut client,
            &mut stream,
            &mut raw,
            &mut connected,
            &mut closed_by_client,
        );
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            let to_gateway = t.dst.ip() == gateway.ip() || t.dst == ssdp;
            assert!(
                t.dst == server
                    || (to_gateway && (t.socket == SocketId::PRIMARY || Some(t.socket) == raw)),
                "a client only ever talks to its server and its gateway here: {t:?}"
            );
            if t.socket.is_stream() {
                assert!(
                    connected.contains(&t.socket) && !closed_by_client.contains(&t.socket),
                    "a transmit on {:?}, which never connected or which the client closed",
                    t.socket
                );
            }
            if buf[0] == 0xD1 {
                session = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            }
        }
        serve(
            &mut client,
            &mut stream,
            &mut raw,
            &mut connected,
            &mut closed_by_client,
        );
        refuse = step.template & 0x40 != 0;
        if step.template & 0x20 != 0
            && let Some(id) = stream.take()
        {
            client.handle_stream_closed(now, id);
        }
        if step.template & 0x04 != 0
            && let Some(id) = raw.take()
        {
            client.handle_stream_closed(now, id);
        }
        let d: Vec<u8> = match step.template % 3 {
            // A ServerHello for the current attempt: null-cipher tag of zeros.
            1 => {
                let mut d = vec![0xD2, 1, 0, 0];
                d.extend_from_slice(&session.to_be_bytes());
                d.extend_from_slice(&[0, 0, 0, 1]);
                let mut keys = [9u8; 64];
                for (k, b) in keys.iter_mut().zip(&step.bytes) {
                    *k = *b;
                }
                d.extend_from_slice(&keys);
                d.extend_from_slice(&[0; 16]);
                d
            }
            // A sealed server packet with fuzz frames.
            2 => {
                let mut d = vec![0xD3, 1, 0, 0];
                d.extend_from_slice(&session.to_be_bytes());
                d.extend_from_slice(&u64::from(step.advance_ms).to_be_bytes());
                d.extend_from_slice(&step.bytes);
                d.extend_from_slice(&[0; 16]);
                d
            }
            // A peer packet the server relayed (the relay fast path): for this session, from a
            // host and for a pair the bytes choose (pairs come from PeerAdd messages in the
            // fuzz frames), null-cipher tag.
            _ if step.template & 0x80 != 0 => {
                let b = |i: usize| step.bytes.get(i).copied().unwrap_or(0);
                let mut d = vec![0xD7, 1, 0, 0];
                d.extend_from_slice(&session.to_be_bytes());
                d.extend_from_slice(&u64::from(b(0)).to_be_bytes());
                d.extend_from_slice(&[0xD4, 1, 0, 0]);
                d.extend_from_slice(&[b(1), b(2), b(3), b(4)]);
                d.extend_from_slice(&u64::from(b(5)).to_be_bytes());
                d.extend_from_slice(step.bytes.get(6..).unwrap_or(&[]));
                d.extend_from_slice(&[0; 16]);
                d
            }
            _ => step.bytes.clone(),
        };
        let from = match (step.from_server, step.from_gateway) {
            (true, _) => server,
            (false, true) => gateway,
            (false, false) => stranger,
        };
        let socket = match (stream, raw) {
            (_, Some(id)) if step.from_gateway && step.template & 0x08 != 0 => id,
            (Some(id), _) if step.template & 0x10 != 0 => id,
            _ => SocketId::PRIMARY,
        };
        client.handle_datagram_on(now, socket, from, &d[..d.len().min(2048)]);
        let mut events = 0;
        while client.poll_event().is_some() {
            events += 1;
        }
        assert!(events <= 4096);
        let s = client.stats();
        // Drops count datagrams or items inside them: never more than datagrams + bytes.
        assert!(
            s.dropped.total() <= s.io.datagrams_in + s.io.bytes_in,
            "{s:?}"
        );
        assert!(s.port_mapping.dropped <= s.io.datagrams_in, "{s:?}");
    }
});
