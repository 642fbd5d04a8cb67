//! A chat room: rooms, reliable-ordered messages, and kicking, on one mio [`Driver`].
//!
//! ```sh
//! cargo run -p pierce-mio --bin pierce -- server --listen 127.0.0.1:7777
//! cargo run -p pierce-mio --example chat -- 127.0.0.1:7777 lobby alice
//! cargo run -p pierce-mio --example chat -- 127.0.0.1:7777 lobby bob
//! ```
//!
//! Host mode, with no dedicated server: the first player's process is the server too
//! (`pierce_core::Host`: the server and its own client on one socket), the others connect to
//! it as to any server:
//!
//! ```sh
//! cargo run -p pierce-mio --example chat -- --host 127.0.0.1:7777 lobby alice
//! cargo run -p pierce-mio --example chat -- 127.0.0.1:7777 lobby bob
//! ```
//!
//! Type a line to send it to everyone in the room. `/who` lists the members, `/kick NAME`
//! removes one (only the room's owner, its first member, may), `/quit` (or end of input)
//! leaves once everything typed has been acknowledged. Messages travel on the reliable-ordered
//! channel, so everyone sees each sender's lines complete and in order. The core has no
//! display names: every member introduces itself to each newcomer with a first message.
#![allow(clippy::disallowed_methods)] // an application reads the clock

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use pierce_core::{
    Channel, Client, ClientConfig, ClientEvent, Endpoint, Events, GroupId, Host, HostEvent, HostId,
    RoomsConfig, SecretKey, Server, ServerConfig,
};
use pierce_mio::{Driver, os_seed, unix_time};

/// First byte of a message: an introduction carrying the sender's name.
const NAME: u8 = b'N';
/// First byte of a message: a line of chat.
const TEXT: u8 = b'T';
/// How long `/quit` waits for the last lines to be acknowledged.
const DRAIN: Duration = Duration::from_secs(2);

struct Chat {
    name: String,
    room: String,
    me: Option<HostId>,
    group: Option<GroupId>,
    owner: Option<HostId>,
    names: BTreeMap<HostId, String>,
}

impl Chat {
    fn who(&self, h: HostId) -> String {
        self.names.get(&h).cloned().unwrap_or_else(|| h.to_string())
    }

    /// Reacts to one event; `Err` ends the program with that message.
    fn on_event(&mut self, client: &mut Client, event: ClientEvent) -> Result<(), String> {
        let now = Instant::now();
        match event {
            ClientEvent::Connected { host_id, .. } => {
                self.me = Some(host_id);
                client
                    .join_room(now, &self.room, "", true, 0)
                    .map_err(|e| format!("cannot join: {e}"))?;
            }
            ClientEvent::Disconnected { reason } => {
                return Err(format!("disconnected: {reason:?}"));
            }
            ClientEvent::RoomJoined { group, name, owner } => {
                (self.group, self.owner) = (Some(group), Some(owner));
                println!("* you are in {name}; /who, /kick NAME, /quit");
            }
            ClientEvent::RoomFailed { op, error } => {
                return Err(format!("room: {op:?}: {error:?}"));
            }
            ClientEvent::RoomOwnerChanged { owner, .. } => {
                self.owner = Some(owner);
                println!("* {} owns the room now", self.who(owner));
            }
            ClientEvent::MemberJoined { member, .. } if Some(member) != self.me => {
                // Introduce ourselves; it does the same, which names it here.
                let mut hello = vec![NAME];
                hello.extend_from_slice(self.name.as_bytes());
                let _ = client.send(now, member, Channel::RELIABLE_ORDERED, &hello);
            }
            ClientEvent::MemberLeft { member, reason, .. } => {
                if Some(member) == self.me {
                    return Err(format!("you are out of the room ({reason:?})"));
                }
                println!("* {} left ({reason:?})", self.who(member));
                self.names.remove(&member);
            }
            ClientEvent::PeerMessage { from, payload, .. } => match payload.split_first() {
                Some((&NAME, name)) => {
                    let name = String::from_utf8_lossy(name).into_owned();
                    println!("* {name} is here");
                    self.names.insert(from, name);
                }
                Some((&TEXT, text)) => {
                    println!("<{}> {}", self.who(from), String::from_utf8_lossy(text));
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    /// Acts on one typed line; `false` to quit.
    fn on_line(&mut self, client: &mut Client, line: &str) -> bool {
        let now = Instant::now();
        let Some(group) = self.group else {
            return line != "/quit"; // not reached: lines are read once in the room
        };
        if line == "/quit" {
            return false;
        } else if line == "/who" {
            let mut names: Vec<String> = self.names.values().cloned().collect();
            names.push(format!("{} (you)", self.name));
            println!("* here: {}", names.join(", "));
        } else if let Some(name) = line.strip_prefix("/kick ") {
            match self.names.iter().find(|(_, n)| *n == name.trim()) {
                Some((&member, _)) if self.owner == self.me => {
                    if let Err(e) = client.kick(now, group, member) {
                        println!("* cannot kick: {e}");
                    }
                }
                Some(_) => println!("* only the room's owner may kick"),
                None => println!("* nobody called {name:?} here"),
            }
        } else if !line.is_empty() {
            let mut text = vec![TEXT];
            text.extend_from_slice(line.as_bytes());
            if let Err(e) = client.send_to_group(now, group, Channel::RELIABLE_ORDERED, &text) {
                println!("* not sent: {e}");
            }
        }
        true
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (host, rest) = match args.split_first() {
        Some((flag, rest)) if flag == "--host" => (true, rest),
        _ => (false, &args[..]),
    };
    let [server, room, name] = rest else {
        eprintln!("usage: chat [--host] SERVER:PORT ROOM NAME");
        return ExitCode::from(2);
    };
    let Ok(server) = server.parse() else {
        eprintln!("chat: {server:?} is not an IP:PORT");
        return ExitCode::from(2);
    };
    let result = if host {
        run_host(server, room, name)
    } else {
        run_client(server, room, name)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_client(server: std::net::SocketAddr, room: &str, name: &str) -> Result<(), String> {
    let seed = os_seed().map_err(|e| e.to_string())?;
    let mut client = Client::new(Arc::new(ClientConfig::default()), seed, Instant::now())
        .map_err(|e| e.to_string())?;
    client
        .connect(Instant::now(), server, &[])
        .map_err(|e| e.to_string())?;
    let any: std::net::SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| "bad bind address")?;
    let driver = Driver::bind(any, client).map_err(|e| e.to_string())?;
    run(driver, room, name, |c| c, Some)
}

/// Host mode: a rooms server and this player's client on one socket at `listen`.
fn run_host(listen: std::net::SocketAddr, room: &str, name: &str) -> Result<(), String> {
    let socket = std::net::UdpSocket::bind(listen).map_err(|e| e.to_string())?;
    let addr = socket.local_addr().map_err(|e| e.to_string())?;
    let mut config =
        ServerConfig::new(SecretKey::from_bytes(os_seed().map_err(|e| e.to_string())?));
    config.rooms = Some(RoomsConfig::default());
    let now = Instant::now();
    let seed = os_seed().map_err(|e| e.to_string())?;
    let server =
        Server::new(Arc::new(config), seed, now, unix_time()).map_err(|e| e.to_string())?;
    let seed = os_seed().map_err(|e| e.to_string())?;
    let host = Host::new(server, ClientConfig::default(), seed, now, addr, &[])
        .map_err(|e| format!("{e} (listen on the address players reach, not 0.0.0.0)"))?;
    println!(
        "* hosting at {addr} (server key {}); others: chat {addr} {room} NAME",
        host.server().public_key()
    );
    let driver = Driver::from_std(socket, host).map_err(|e| e.to_string())?;
    run(driver, room, name, Host::client_mut, |e| match e {
        HostEvent::Client(e) => Some(e),
        HostEvent::Server(_) => None,
    })
}

/// The chat loop over any endpoint that holds this player's client.
fn run<E: Endpoint + Events>(
    mut driver: Driver<E>,
    room: &str,
    name: &str,
    client: fn(&mut E) -> &mut Client,
    client_event: fn(E::Event) -> Option<ClientEvent>,
) -> Result<(), String> {
    // Standard input blocks, so it gets a thread; lines arrive over a channel.
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut chat = Chat {
        name: name.to_owned(),
        room: room.to_owned(),
        me: None,
        group: None,
        owner: None,
        names: BTreeMap::new(),
    };
    loop {
        driver
            .pump(Duration::from_millis(20))
            .map_err(|e| e.to_string())?;
        while let Some(event) = driver.poll_event() {
            if let Some(event) = client_event(event) {
                chat.on_event(client(driver.endpoint_mut()), event)?;
            }
        }
        if chat.group.is_none() {
            continue; // typed lines wait until we are in the room
        }
        let quit = match lines.try_recv() {
            Ok(line) => !chat.on_line(client(driver.endpoint_mut()), line.trim_end()),
            Err(TryRecvError::Empty) => false,
            Err(TryRecvError::Disconnected) => true, // end of input
        };
        if quit {
            break;
        }
    }
    // Let the last lines reach everyone before leaving.
    let until = Instant::now() + DRAIN;
    while Instant::now() < until && unacknowledged(client(driver.endpoint_mut())) > 0 {
        driver
            .pump(Duration::from_millis(10))
            .map_err(|e| e.to_string())?;
    }
    client(driver.endpoint_mut()).disconnect(Instant::now(), 0);
    driver.pump(Duration::ZERO).map_err(|e| e.to_string())
}

fn unacknowledged(client: &Client) -> usize {
    client
        .peers()
        .filter_map(|p| client.peer_stats(p))
        .map(|s| s.unacked)
        .sum()
}
