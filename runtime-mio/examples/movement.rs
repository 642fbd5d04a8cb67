//! Movement sync: every member sends its position 30 times a second on the
//! unreliable-sequenced channel (a late, older position is never delivered after a newer one),
//! and prints, once a second, the rate and latest position it sees from everyone else.
//!
//! ```sh
//! # A server and three movers in this process, for 5 seconds:
//! cargo run -p pierce-mio --example movement
//! # Or one mover in a room of a running `pierce server`, until Ctrl-C:
//! cargo run -p pierce-mio --bin pierce -- server --listen 127.0.0.1:7777
//! cargo run -p pierce-mio --example movement -- 127.0.0.1:7777 arena alice
//! ```
//!
//! Each mover is one [`Driver`], pumped with `Duration::ZERO` as a game would once per frame;
//! a position is 12 bytes (tick, x, y). Movers introduce themselves with a reliable
//! first message, since the core has no display names.
#![allow(clippy::disallowed_methods)] // an application reads the clock

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pierce_core::{
    Channel, Client, ClientConfig, ClientEvent, GroupId, HostId, Path, RoomsConfig, SecretKey,
    Server, ServerConfig,
};
use pierce_mio::{Driver, os_seed, unix_time};

/// Positions per second.
const RATE: u32 = 30;
/// The local demo's length.
const LOCAL_RUN: Duration = Duration::from_secs(5);

/// What one mover knows about another.
#[derive(Default)]
struct Track {
    name: Option<String>,
    /// Positions this second.
    window: u32,
    last_tick: Option<u32>,
    pos: (f32, f32),
    /// Positions older than one already seen: sequenced delivery must keep this at zero.
    stale: u32,
    total: u32,
}

struct Mover {
    name: String,
    room: String,
    driver: Driver<Client>,
    me: Option<HostId>,
    group: Option<GroupId>,
    tick: u32,
    /// Where on the circle this mover starts, radians.
    phase: f32,
    next_send: Instant,
    others: BTreeMap<HostId, Track>,
}

impl Mover {
    fn new(name: &str, room: &str, server: SocketAddr, bind: SocketAddr) -> Result<Self, String> {
        let seed = os_seed().map_err(|e| e.to_string())?;
        let mut client = Client::new(Arc::new(ClientConfig::default()), seed, Instant::now())
            .map_err(|e| e.to_string())?;
        client
            .connect(Instant::now(), server, &[])
            .map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.to_owned(),
            room: room.to_owned(),
            driver: Driver::bind(bind, client).map_err(|e| e.to_string())?,
            me: None,
            group: None,
            tick: 0,
            // Spread movers around the circle by name, so their positions differ.
            phase: name.bytes().map(f32::from).sum::<f32>(),
            next_send: Instant::now(),
            others: BTreeMap::new(),
        })
    }

    /// One frame: network in, events, our position out if due.
    fn frame(&mut self) -> Result<(), String> {
        self.driver
            .pump(Duration::ZERO)
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        while let Some(event) = self.driver.poll_event() {
            self.on_event(now, event)?;
        }
        if let (Some(group), true) = (self.group, now >= self.next_send) {
            self.next_send += Duration::from_secs(1) / RATE;
            self.tick += 1;
            // Walk a circle, one lap every four seconds.
            let angle = self.phase + self.tick as f32 / RATE as f32 * std::f32::consts::FRAC_PI_2;
            let (x, y) = (10.0 * angle.cos(), 10.0 * angle.sin());
            let mut p = Vec::with_capacity(12);
            p.extend_from_slice(&self.tick.to_le_bytes());
            p.extend_from_slice(&x.to_le_bytes());
            p.extend_from_slice(&y.to_le_bytes());
            let c = self.driver.endpoint_mut();
            // Dropped when the queue is full: the next position supersedes it anyway.
            let _ = c.send_to_group(now, group, Channel::UNRELIABLE_SEQUENCED, &p);
        }
        Ok(())
    }

    fn on_event(&mut self, now: Instant, event: ClientEvent) -> Result<(), String> {
        let client = self.driver.endpoint_mut();
        match event {
            ClientEvent::Connected { host_id, .. } => {
                self.me = Some(host_id);
                client
                    .join_room(now, &self.room, "", true, 0)
                    .map_err(|e| e.to_string())?;
            }
            ClientEvent::Disconnected { reason } => return Err(format!("{reason:?}")),
            ClientEvent::RoomFailed { error, .. } => return Err(format!("room: {error:?}")),
            ClientEvent::RoomJoined { group, .. } => {
                self.group = Some(group);
                self.next_send = now;
            }
            ClientEvent::MemberJoined { member, .. } if Some(member) != self.me => {
                self.others.entry(member).or_default();
                let mut hello = vec![b'N'];
                hello.extend_from_slice(self.name.as_bytes());
                let _ = client.send(now, member, Channel::RELIABLE_ORDERED, &hello);
            }
            ClientEvent::MemberLeft { member, .. } => {
                self.others.remove(&member);
            }
            ClientEvent::PeerMessage {
                from,
                channel,
                payload,
            } => {
                let t = self.others.entry(from).or_default();
                if channel == Channel::RELIABLE_ORDERED {
                    if let Some((b'N', name)) = payload.split_first() {
                        t.name = Some(String::from_utf8_lossy(name).into_owned());
                    }
                } else if let Ok(p) = <[u8; 12]>::try_from(&payload[..]) {
                    let word = |i: usize| [p[i], p[i + 1], p[i + 2], p[i + 3]];
                    let tick = u32::from_le_bytes(word(0));
                    if t.last_tick.is_some_and(|last| tick <= last) {
                        t.stale += 1;
                    } else {
                        t.last_tick = Some(tick);
                        t.pos = (f32::from_le_bytes(word(4)), f32::from_le_bytes(word(8)));
                    }
                    t.window += 1;
                    t.total += 1;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Prints and resets this second's rates.
    fn report(&mut self) {
        let client = self.driver.endpoint();
        let parts: Vec<String> = self
            .others
            .iter_mut()
            .map(|(h, t)| {
                let rtt = client.peer_stats(*h).map_or(String::new(), |s| {
                    let path = match s.path {
                        Path::Relay => "relay",
                        Path::Direct(_) => "direct",
                    };
                    format!(", rtt {:.1} ms via {path}", s.rtt.as_secs_f64() * 1e3)
                });
                let who = t.name.clone().unwrap_or_else(|| h.to_string());
                let line = format!(
                    "{who} {}/s at ({:.1}, {:.1}){rtt}",
                    t.window, t.pos.0, t.pos.1
                );
                t.window = 0;
                line
            })
            .collect();
        println!("{}: {}", self.name, parts.join("; "));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match &args[..] {
        [] => local(),
        [server, room, name] => match server.parse() {
            Ok(server) => remote(server, room, name),
            Err(_) => Err(format!("{server:?} is not an IP:PORT")),
        },
        _ => {
            eprintln!("usage: movement [SERVER:PORT ROOM NAME]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("movement: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A server and three movers on loopback, all in this thread.
fn local() -> Result<(), String> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let key = SecretKey::from_bytes(os_seed().map_err(|e| e.to_string())?);
    let mut config = ServerConfig::new(key);
    config.rooms = Some(RoomsConfig::default());
    let seed = os_seed().map_err(|e| e.to_string())?;
    let server = Server::new(Arc::new(config), seed, Instant::now(), unix_time())
        .map_err(|e| e.to_string())?;
    let mut server = Driver::bind(loopback, server).map_err(|e| e.to_string())?;
    let addr = server.local_addr();
    let mut movers = ["alice", "bob", "carol"]
        .into_iter()
        .map(|n| Mover::new(n, "arena", addr, loopback))
        .collect::<Result<Vec<_>, _>>()?;
    let (end, mut report) = (
        Instant::now() + LOCAL_RUN,
        Instant::now() + Duration::from_secs(1),
    );
    while Instant::now() < end {
        // The server wakes for its own traffic; a millisecond caps the frame time.
        server
            .pump(Duration::from_millis(1))
            .map_err(|e| e.to_string())?;
        while server.poll_event().is_some() {}
        for m in &mut movers {
            m.frame()?;
        }
        if Instant::now() >= report {
            report += Duration::from_secs(1);
            movers.iter_mut().for_each(Mover::report);
        }
    }
    // Every mover must have seen the other two moving, and never an old position late.
    for m in &movers {
        let seen = m.others.values().filter(|t| t.total > 0).count();
        let stale: u32 = m.others.values().map(|t| t.stale).sum();
        if seen != 2 || stale > 0 {
            return Err(format!(
                "{} saw {seen} movers, {stale} stale positions",
                m.name
            ));
        }
    }
    Ok(())
}

/// One mover in a room of a running server, until Ctrl-C.
fn remote(server: SocketAddr, room: &str, name: &str) -> Result<(), String> {
    let bind = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let mut mover = Mover::new(name, room, server, bind)?;
    let mut report = Instant::now() + Duration::from_secs(1);
    loop {
        mover.frame()?;
        if Instant::now() >= report {
            report += Duration::from_secs(1);
            mover.report();
        }
        std::thread::sleep(Duration::from_millis(2)); // a game's frame pacing goes here
    }
}
