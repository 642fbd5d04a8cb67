//! Drive pierce-core yourself: one server and two clients, each on its own
//! `std::net::UdpSocket` on loopback, one thread, no runtime crate.
//! Run: `cargo run -p pierce-core --example drive`
#![allow(clippy::disallowed_methods)] // an application reads the clock; the core never does

use pierce_core::{Endpoint as _, Events as _};
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pierce_core::{Client, ClientConfig, ClientEvent, MAX_DATAGRAM_SIZE, SecretKey, Server};
use pierce_core::{ServerConfig, ServerEvent};

fn seed(tag: u8) -> [u8; 32] {
    // Real code: fill from the OS (getrandom). Fixed here so runs are repeatable.
    [tag; 32]
}

fn main() -> std::io::Result<()> {
    let start = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let server_sock = UdpSocket::bind("127.0.0.1:0")?;
    let server_addr = server_sock.local_addr()?;
    let server_cfg = ServerConfig::new(SecretKey::from_bytes(seed(1)));
    let mut server = Server::new(Arc::new(server_cfg), seed(2), start, unix).expect("config");
    let mut pinned = ClientConfig::default();
    pinned.server_key = Some(server.public_key()); // refuse any other server
    let mut clients = Vec::new();
    for i in 0..2u8 {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let mut c = Client::new(Arc::new(pinned.clone()), seed(10 + i), start).expect("config");
        c.connect(start, server_addr, &[]).expect("fresh client");
        clients.push((sock, c));
    }
    let (mut buf, mut rx) = ([0u8; MAX_DATAGRAM_SIZE], [0u8; 2048]);
    let (mut echoed, deadline) = (0, start + Duration::from_secs(5));
    for s in std::iter::once(&server_sock).chain(clients.iter().map(|(s, _)| s)) {
        s.set_nonblocking(true)?;
    }
    while echoed < 2 && Instant::now() < deadline {
        let now = Instant::now();
        // Inputs: every socket until it would block, then timers.
        while let Ok((n, from)) = server_sock.recv_from(&mut rx) {
            server.handle_datagram(now, from, &rx[..n]);
        }
        server.handle_timeout(now);
        for (sock, c) in &mut clients {
            while let Ok((n, from)) = sock.recv_from(&mut rx) {
                c.handle_datagram(now, from, &rx[..n]);
            }
            c.handle_timeout(now);
        }
        // Events: the server echoes, clients say hello once connected.
        while let Some(e) = server.poll_event() {
            println!("[{:>6.1?}] server: {e:?}", now - start);
            if let ServerEvent::Message { from, payload } = e {
                server
                    .send(now, from, &payload)
                    .expect("client is connected");
            }
        }
        for (i, (_, c)) in clients.iter_mut().enumerate() {
            while let Some(e) = c.poll_event() {
                println!("[{:>6.1?}] client {i}: {e:?}", now - start);
                match e {
                    ClientEvent::Connected { .. } => {
                        c.send_to_server(now, b"hello").expect("connected")
                    }
                    ClientEvent::Message { .. } => echoed += 1,
                    _ => {}
                }
            }
        }
        // Outputs: drain every transmit queue.
        while let Some(t) = server.poll_transmit(now, &mut buf) {
            server_sock.send_to(&buf[..t.len], t.dst)?;
        }
        for (sock, c) in &mut clients {
            while let Some(t) = c.poll_transmit(now, &mut buf) {
                sock.send_to(&buf[..t.len], t.dst)?;
            }
        }
        // Sleep until the earliest deadline, but poll sockets at least every millisecond.
        std::thread::sleep(Duration::from_millis(1));
    }
    let ok = echoed == 2;
    println!(
        "{} after {:?}",
        if ok { "echo complete" } else { "FAILED" },
        start.elapsed()
    );
    std::process::exit(if ok { 0 } else { 1 })
}
