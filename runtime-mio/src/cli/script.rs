//! The scripted peer of `pierce peer`, with no I/O of its own (the core's shape, one level
//! up): events and replies go in, commands for the client, output lines and a summary come
//! out. The mio runner ([`super::peer`]), `pierce demo` and the async-std example peer all drive
//! this one state machine, so they keep the same contract by construction.
//!
//! The messages peers exchange are described in `pierce peer --help`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pierce_core::{
    Channel, Client, ClientConfig, ClientEvent, CommandError, DisconnectReason, GroupId, HostId,
    MessageId, Path, PeerStats, RoomOptions, SendError,
};

use super::args::{Mode, PeerArgs};
use super::json::Obj;
use super::{CliError, describe};

/// How often the script asks for every member's `peer_stats` (acknowledgements, RTT).
const STATS_EVERY: Duration = Duration::from_millis(100);
/// The same, once only acknowledgements stand between the run and its end.
const STATS_EVERY_AT_END: Duration = Duration::from_millis(10);
/// How long to wait before retrying a send the core refused with `QueueFull`; the next
/// transmits free room.
const RETRY_AFTER: Duration = Duration::from_millis(2);
/// Unreliable mode: once our own sends are out, a member that sent nothing new for this long
/// has sent all that will arrive.
const QUIET: Duration = Duration::from_secs(1);
/// Hello: the tag and the sender's name.
const HELLO: u8 = b'H';
/// Payload: the tag, a big-endian sequence number, then filler derived from it.
const DATA: u8 = b'D';
/// "I got COUNT of your payloads": the tag and a big-endian count.
const GOT: u8 = b'G';
/// Smallest `--size`: the tag and the sequence number.
pub const MIN_SIZE: usize = 5;
/// Largest `--send`: each member's received set is a bitmap of this many bits.
pub const MAX_COUNT: u32 = 10_000_000;
/// Longest `--name`, in bytes; a longer name in a hello is cut to this many characters.
pub const MAX_NAME: usize = 64;

/// Something for the runner to do with its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `join_room_with(name, password, create = true, options)`.
    JoinRoom {
        /// The room.
        name: String,
        /// Its password.
        password: String,
        /// Member limit if it gets created.
        max_members: u16,
        /// Created relay-only; an existing room must be relay-only (`--relay-only-room`).
        relay_only: bool,
    },
    /// `send(to, channel, payload)`.
    Send {
        /// The member.
        to: HostId,
        /// The channel.
        channel: Channel,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// `peer_stats(peer)`.
    Stats(HostId),
}

/// The client's answer to a [`Command`], in the same order.
#[derive(Clone, Debug)]
pub enum Reply {
    /// To [`Command::JoinRoom`].
    Joined(Result<(), CommandError>),
    /// To [`Command::Send`].
    Sent(Result<MessageId, SendError>),
    /// To [`Command::Stats`].
    Stats(Option<PeerStats>),
}

/// Runs a command against a core client (the mio runner and the demo; the async-std example
/// has its own, through the handle).
pub fn execute(client: &mut Client, now: Instant, command: Command) -> Reply {
    match command {
        Command::JoinRoom {
            name,
            password,
            max_members,
            relay_only,
        } => {
            let options = RoomOptions::new()
                .max_members(max_members)
                .relay_only(relay_only);
            Reply::Joined(client.join_room_with(now, &name, &password, true, options))
        }
        Command::Send {
            to,
            channel,
            payload,
        } => Reply::Sent(client.send(now, to, channel, &payload)),
        Command::Stats(peer) => Reply::Stats(client.peer_stats(peer)),
    }
}

/// One line of output: JSON (printed with `--json`, if this event has a JSON form) and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The JSON line, for events the contract lists (joins, leaves, path changes, expiries).
    pub json: Option<String>,
    /// The text line.
    pub text: String,
}

impl Line {
    /// The line to print in the chosen format, if any.
    pub fn render(&self, json: bool) -> Option<&str> {
        if json {
            self.json.as_deref()
        } else {
            Some(&self.text)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Joining,
    Gathering,
    Exchanging,
    Holding(Instant),
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Hello,
    Data(u32),
    Got(u32),
}

/// What this peer knows about one other member.
#[derive(Debug)]
struct Remote {
    name: Option<String>,
    /// When its `MemberJoined` first arrived.
    joined_at: Option<Instant>,
    hello_at: Option<Instant>,
    received: u32,
    duplicates: u32,
    corrupt: u32,
    seen: Vec<u64>,
    last_seq: Option<u32>,
    in_order: bool,
    first_message: Option<Instant>,
    last_data: Option<Instant>,
    /// Its G: how many of our payloads it got.
    their_got: Option<u32>,
    /// Our G to it is queued.
    got_queued: bool,
    /// Our G to it was handed to the core.
    got_sent: bool,
    /// Something was sent to it since the last stats.
    dirty: bool,
    unacked: usize,
    queued_bytes: usize,
    path: Path,
    /// When stats first showed a direct path.
    direct_at: Option<Instant>,
    /// The path MTU its latest stats reported (`PeerStats::path_mtu`): the largest datagram
    /// the current path to it is known to carry.
    path_mtu: Option<usize>,
    left: bool,
}

impl Remote {
    fn new() -> Self {
        Self {
            name: None,
            joined_at: None,
            hello_at: None,
            received: 0,
            duplicates: 0,
            corrupt: 0,
            seen: Vec::new(),
            last_seq: None,
            in_order: true,
            first_message: None,
            last_data: None,
            their_got: None,
            got_queued: false,
            got_sent: false,
            dirty: false,
            unacked: 0,
            queued_bytes: 0,
            path: Path::Relay,
            direct_at: None,
            path_mtu: None,
            left: false,
        }
    }

    /// Marks `seq` seen; false if it was already.
    fn mark(&mut self, seq: u32, count: u32) -> bool {
        if self.seen.is_empty() {
            self.seen = vec![0; count.div_ceil(64) as usize];
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        let fresh = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        fresh
    }

    /// All of its messages are here and everything we sent it is confirmed.
    fn complete(&self, reliable: bool, count: u32) -> bool {
        let flushed = self.left || (!self.dirty && self.unacked == 0 && self.queued_bytes == 0);
        self.name.is_some()
            && (!reliable || self.received == count)
            && self.got_sent
            && self.their_got.is_some()
            && flushed
    }
}

/// The scripted peer: see the module docs and `pierce peer --help`.
#[derive(Debug)]
pub struct Script {
    args: PeerArgs,
    start: Instant,
    deadline: Instant,
    phase: Phase,
    me: Option<HostId>,
    name: String,
    group: Option<GroupId>,
    present: BTreeSet<HostId>,
    remotes: BTreeMap<HostId, Remote>,
    targets: Vec<HostId>,
    join_due: bool,
    urgent: VecDeque<(HostId, Kind)>,
    next_seq: u32,
    next_target: usize,
    in_flight: Option<(HostId, Kind)>,
    data_done_at: Option<Instant>,
    retry_at: Option<Instant>,
    stats_due: Instant,
    stats_queue: VecDeque<HostId>,
    stats_for: VecDeque<HostId>,
    /// Expired messages that may have been payloads.
    expired: u64,
    /// The client registers again by itself after a stateless reset (its config says so):
    /// the run goes on through it.
    rides_resets: bool,
    /// With several `--server`s, the client also registers with the next one by itself when
    /// its session times out: the run goes on through that too.
    rides_failover: bool,
    /// The server the session is with or being made with (the first `--server` until the
    /// client says otherwise, [`Script::handle_server`]).
    server: SocketAddr,
    /// A cluster node redirected our join: the client asks for the room at the next node
    /// by itself (so the script does not ask again when it is registered there).
    join_carried: bool,
    /// Redirects followed.
    redirects: u32,
    failure: Option<String>,
    lines: VecDeque<Line>,
}

impl Script {
    /// A script for `args`, starting at `start` (its `--timeout` counts from there). `config`
    /// is the client's, to check `--size` against what the core can send.
    ///
    /// # Errors
    /// A usage error for flags the core cannot honour.
    pub fn new(args: PeerArgs, config: &ClientConfig, start: Instant) -> Result<Self, CliError> {
        validate(&args, config)?;
        // Until the server gives us a host id to name ourselves after.
        let name = args.name.clone().unwrap_or_else(|| "peer".to_owned());
        let rides_resets = config.reregister && !config.pair_lifetime.is_zero();
        Ok(Self {
            rides_failover: rides_resets && args.connect.servers.len() > 1,
            server: args.connect.server(),
            deadline: start + args.timeout,
            args,
            start,
            phase: Phase::Connecting,
            me: None,
            name,
            group: None,
            present: BTreeSet::new(),
            remotes: BTreeMap::new(),
            targets: Vec::new(),
            join_due: false,
            urgent: VecDeque::new(),
            next_seq: 0,
            next_target: 0,
            in_flight: None,
            data_done_at: None,
            retry_at: None,
            stats_due: start,
            stats_queue: VecDeque::new(),
            stats_for: VecDeque::new(),
            expired: 0,
            rides_resets,
            join_carried: false,
            redirects: 0,
            failure: None,
            lines: VecDeque::new(),
        })
    }

    /// This peer's name (known once connected if `--name` was not given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once the run is over, successfully or not.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Why the run failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The members this peer exchanges with (once enough joined), with their names.
    pub fn members(&self) -> impl Iterator<Item = (HostId, Option<&str>)> + '_ {
        self.targets
            .iter()
            .map(|h| (*h, self.remotes.get(h).and_then(|r| r.name.as_deref())))
    }

    /// The next line to print.
    pub fn poll_line(&mut self) -> Option<Line> {
        self.lines.pop_front()
    }

    /// When [`Script::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.deadline;
        let mut at = |i: Instant| t = t.min(i);
        match self.phase {
            Phase::Finished => return self.start,
            Phase::Holding(until) => at(until),
            Phase::Exchanging => {
                at(self.stats_due);
                if self.args.mode == Mode::Unreliable {
                    if let Some(done) = self.data_done_at {
                        for r in self.targets.iter().filter_map(|h| self.remotes.get(h)) {
                            if let (false, Some(hello)) = (r.got_queued, r.hello_at) {
                                at(done.max(hello).max(r.last_data.unwrap_or(hello)) + QUIET);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        if let Some(r) = self.retry_at {
            at(r);
        }
        t
    }

    /// Fails the run: SIGINT or SIGTERM arrived.
    pub fn interrupt(&mut self) {
        self.fail("interrupted".to_owned());
    }

    /// Moves the run along: deadlines, the quiet period, the end of `--hold`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Finished {
            return;
        }
        self.progress(now);
        if now >= self.deadline && self.phase != Phase::Finished {
            let what = self.waiting_for();
            let secs = self.args.timeout.as_secs_f64();
            self.fail(format!("timed out after {secs} s {what}"));
        }
    }

    /// The client's session is with (or being made with) `server` now: one of the
    /// `--server` list (read from the client when it reports `Connected`).
    pub fn handle_server(&mut self, server: SocketAddr) {
        self.server = server;
    }

    /// Takes one event from the client.
    pub fn handle_event(&mut self, now: Instant, event: ClientEvent) {
        if self.phase == Phase::Finished {
            return;
        }
        match event {
            ClientEvent::Connected {
                host_id,
                public_addr,
                ..
            } if self.me.is_some() => self.on_registered_again(host_id, public_addr),
            ClientEvent::Connected {
                host_id,
                public_addr,
                ..
            } => {
                self.me = Some(host_id);
                if self.args.name.is_none() {
                    self.name = format!("peer-{}", host_id.0);
                }
                self.phase = Phase::Joining;
                self.join_due = true;
                let server = self.server;
                self.line(
                    Some(
                        Obj::event("connected")
                            .str("server", &server.to_string())
                            .int("host_id", host_id.0)
                            .str("public_addr", &public_addr.to_string()),
                    ),
                    format!(
                        "connected to {server} as {host_id} (seen from {public_addr}); name {}",
                        self.name
                    ),
                );
            }
            ClientEvent::Disconnected {
                reason: DisconnectReason::Reset,
            } if self.rides_resets => {
                // The server restarted (same key) without our session: the client registers
                // again at once, with its ticket, and rejoins the room; peers wait for it.
                let server = self.server;
                self.line(
                    Some(Obj::event("server_reset").str("server", &server.to_string())),
                    format!("{server} restarted without our session; registering again"),
                );
            }
            ClientEvent::Disconnected {
                reason: DisconnectReason::TimedOut,
            } if self.rides_failover => {
                // The node is lost (crashed, cut off): the client registers with the next
                // --server at once, with its ticket, and rejoins the room there; peers wait.
                let server = self.server;
                self.line(
                    Some(
                        Obj::event("server_lost")
                            .str("server", &server.to_string())
                            .str("reason", "timed_out"),
                    ),
                    format!("{server} is lost; registering with the next server"),
                );
            }
            ClientEvent::Disconnected {
                reason: DisconnectReason::ServerDraining,
            } => {
                // The node is draining and there is another --server: the client left it at
                // once and registers with the next, with its ticket, and rejoins the room.
                let server = self.server;
                self.line(
                    Some(
                        Obj::event("server_lost")
                            .str("server", &server.to_string())
                            .str("reason", "draining"),
                    ),
                    format!("{server} is draining; moving to the next server"),
                );
            }
            ClientEvent::Disconnected { reason } => {
                self.fail(describe::disconnect(reason, self.server));
            }
            ClientEvent::RoomJoined { group, name, owner } => {
                if name != self.args.room {
                    return;
                }
                self.group = Some(group);
                // (Again, after a re-registration: the exchange goes on where it was.)
                if matches!(self.phase, Phase::Connecting | Phase::Joining) {
                    self.phase = Phase::Gathering;
                }
                self.line(
                    Some(
                        Obj::event("room_joined")
                            .str("room", &name)
                            .int("owner", owner.0),
                    ),
                    format!(
                        "in room {name:?} (owner {owner}); waiting for {} other members",
                        self.args.peers
                    ),
                );
            }
            ClientEvent::RoomFailed { op, error } => {
                let room = &self.args.room;
                let error = describe::room_error(error);
                self.fail(format!("room {room:?}: {op:?} failed: {error}"));
            }
            ClientEvent::MemberJoined {
                group,
                member,
                member_count,
            } => {
                if Some(group) != self.group || Some(member) == self.me {
                    return;
                }
                self.present.insert(member);
                let r = self.remotes.entry(member).or_insert_with(Remote::new);
                r.joined_at.get_or_insert(now);
                self.line(
                    Some(
                        Obj::event("member_joined")
                            .int("member", member.0)
                            .int("member_count", member_count),
                    ),
                    format!("{member} joined ({member_count} in the room)"),
                );
                self.progress(now);
            }
            ClientEvent::MemberLeft {
                group,
                member,
                reason,
            } => self.on_member_left(now, group, member, describe::member_left(reason)),
            ClientEvent::GroupDestroyed { group } if Some(group) == self.group => {
                self.fail("the server destroyed the room".to_owned());
            }
            ClientEvent::PeerMessage {
                from,
                channel,
                payload,
            } => self.on_message(now, from, channel, &payload),
            ClientEvent::MessageExpired {
                peer,
                channel,
                message_id,
            } => {
                // Once a member confirmed all our payloads, only our G to it can expire, and
                // only because it left (with the G in hand: it leaves only after getting it).
                let confirmed = self
                    .remotes
                    .get(&peer)
                    .is_some_and(|r| r.their_got.is_some());
                if !confirmed {
                    self.expired += 1;
                }
                self.line(
                    Some(
                        Obj::event("message_expired")
                            .int("peer", peer.0)
                            .int("channel", channel.0)
                            .int("message_id", message_id.0),
                    ),
                    format!("message {} to {peer} on {channel} expired", message_id.0),
                );
            }
            ClientEvent::PathChanged { peer, path, reason } => {
                self.path_changed(now, peer, path, describe::path_change(reason));
            }
            ClientEvent::PeerDropped { peer, reason } if self.targets.contains(&peer) => {
                let who = self.display(peer);
                self.fail(format!("stopped talking to {who}: {reason:?}"));
            }
            ClientEvent::RoomOwnerChanged { owner, .. } => {
                self.line(None, format!("{owner} owns the room now"));
            }
            ClientEvent::PeerRecovering { peer } => {
                let who = self.display(peer);
                self.line(
                    Some(Obj::event("peer_recovering").int("peer", peer.0)),
                    format!("{who} went quiet; waiting for it to come back"),
                );
            }
            ClientEvent::PeerRecovered { peer } => {
                let who = self.display(peer);
                self.line(
                    Some(Obj::event("peer_recovered").int("peer", peer.0)),
                    format!("{who} is back"),
                );
            }
            ClientEvent::NatDiscovered { result, .. } => {
                let (obj, text) = match result {
                    Ok(b) => {
                        let found = |d: Option<pierce_core::nat::Dependence>| {
                            d.map_or_else(|| "unknown".to_owned(), |d| format!("{d:?}"))
                        };
                        let (mapping, filtering) = (found(b.mapping), found(b.filtering));
                        (
                            Obj::event("nat_discovered")
                                .str("reflexive", &b.reflexive.to_string())
                                .str("mapping", &mapping)
                                .str("filtering", &filtering),
                            format!(
                                "the server sees us at {} (mapping {mapping}, filtering \
                                 {filtering})",
                                b.reflexive
                            ),
                        )
                    }
                    Err(e) => (
                        Obj::event("nat_discovered").str("error", &e.to_string()),
                        format!("NAT behaviour discovery failed: {e}"),
                    ),
                };
                self.line(Some(obj), text);
            }
            ClientEvent::PortMapping { gateway, event } => {
                use pierce_core::portmap::PortMapEvent;
                let base = Obj::event("port_mapping").str("gateway", &gateway.to_string());
                let (obj, text) = match event {
                    PortMapEvent::Granted {
                        external,
                        lifetime,
                        protocol,
                    } => (
                        base.str("result", "granted")
                            .str("external", &external.to_string())
                            .str("protocol", protocol.name())
                            .int("lifetime_s", lifetime.as_secs()),
                        format!(
                            "gateway {gateway} maps {external} to us ({}, {} s)",
                            protocol.name(),
                            lifetime.as_secs()
                        ),
                    ),
                    PortMapEvent::Lost { external, error } => (
                        base.str("result", "lost")
                            .str("external", &external.to_string())
                            .str("error", &error.to_string()),
                        format!("gateway {gateway} no longer maps {external}: {error}"),
                    ),
                    PortMapEvent::Failed(error) => (
                        base.str("result", "failed")
                            .str("error", &error.to_string()),
                        format!("no port mapping at gateway {gateway}: {error}"),
                    ),
                };
                self.line(Some(obj), text);
            }
            ClientEvent::Redirected { from, to, room } => {
                // A cluster node sent us to another: the client registers there by itself
                // (same host id) and rejoins, or asks for the room there.
                self.redirects += 1;
                self.join_carried = room.is_some();
                let obj = Obj::event("redirected")
                    .str("from", &from.to_string())
                    .str("to", &to.to_string())
                    .opt_str("room", room.as_deref());
                let why = match &room {
                    Some(r) => format!("room {r} lives there"),
                    None => "its rooms moved there".to_owned(),
                };
                self.line(Some(obj), format!("{from} sent us to {to}: {why}"));
            }
            ClientEvent::ServerDraining { within } => {
                let ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
                self.line(
                    Some(Obj::event("server_draining").int("within_ms", ms)),
                    format!("the server is draining: it closes this session within {ms} ms"),
                );
            }
            ClientEvent::ServerTransport { tcp } => {
                let (name, text) = if tcp {
                    ("tcp", "the server is reached over TCP now")
                } else {
                    ("udp", "the server is reached over UDP now")
                };
                self.line(
                    Some(Obj::event("server_transport").str("transport", name)),
                    text.to_owned(),
                );
            }
            _ => {}
        }
    }

    /// The next command for the client, if one is due at `now`.
    pub fn poll_command(&mut self, now: Instant) -> Option<Command> {
        if self.phase == Phase::Finished {
            return None;
        }
        if std::mem::take(&mut self.join_due) {
            return Some(Command::JoinRoom {
                name: self.args.room.clone(),
                password: self.args.password.clone(),
                max_members: self.args.peers.saturating_add(1),
                relay_only: self.args.relay_only_room,
            });
        }
        if !self.targets.is_empty() && now >= self.stats_due && self.stats_queue.is_empty() {
            let at_end = self.targets.iter().all(|t| {
                let r = &self.remotes[t];
                r.left || (r.got_sent && r.their_got.is_some())
            });
            self.stats_due = now
                + if at_end {
                    STATS_EVERY_AT_END
                } else {
                    STATS_EVERY
                };
            let live = self.targets.iter().filter(|h| !self.remotes[h].left);
            self.stats_queue.extend(live);
        }
        if let Some(peer) = self.stats_queue.pop_front() {
            self.stats_for.push_back(peer);
            return Some(Command::Stats(peer));
        }
        if self.retry_at.is_some_and(|r| now < r) {
            return None;
        }
        self.retry_at = None;
        let (to, kind) = self.next_send(now)?;
        self.in_flight = Some((to, kind));
        let (channel, payload) = self.encode(kind);
        Some(Command::Send {
            to,
            channel,
            payload,
        })
    }

    /// The client's answer to the last command.
    pub fn handle_reply(&mut self, now: Instant, reply: Reply) {
        match reply {
            Reply::Joined(Ok(())) => {}
            Reply::Joined(Err(e)) => self.fail(format!("cannot join room: {e}")),
            Reply::Sent(result) => {
                let Some((to, kind)) = self.in_flight.take() else {
                    return;
                };
                match result {
                    Ok(_) => {
                        let r = self.remotes.entry(to).or_insert_with(Remote::new);
                        r.dirty = true;
                        if let Kind::Got(_) = kind {
                            r.got_sent = true;
                        }
                    }
                    Err(SendError::QueueFull) => {
                        self.urgent.push_front((to, kind));
                        self.retry_at = Some(now + RETRY_AFTER);
                    }
                    // It left; the MemberLeft event decides what that means.
                    Err(SendError::UnknownPeer) => {}
                    Err(e) => self.fail(format!("cannot send to {to}: {e}")),
                }
            }
            Reply::Stats(stats) => {
                let Some(peer) = self.stats_for.pop_front() else {
                    return;
                };
                let r = self.remotes.entry(peer).or_insert_with(Remote::new);
                r.dirty = false;
                let Some(s) = stats else {
                    // No pair any more: it left, and nothing can be delivered to it.
                    (r.unacked, r.queued_bytes) = (0, 0);
                    self.progress(now);
                    return;
                };
                (r.unacked, r.queued_bytes) = (s.unacked, s.queued_bytes);
                r.path_mtu = Some(s.path_mtu);
            }
        }
        self.progress(now);
    }

    /// True if the run succeeded (see `pierce peer --help` for what that takes).
    pub fn ok(&self) -> bool {
        let reliable = self.args.mode.is_reliable();
        let count = self.args.count;
        self.failure.is_none()
            && self.phase == Phase::Finished
            && (!reliable || self.expired == 0)
            && self.targets.iter().all(|h| {
                let r = &self.remotes[h];
                r.name.is_some()
                    && r.corrupt == 0
                    && (!reliable
                        || (r.received == count
                            && r.duplicates == 0
                            && r.their_got == Some(count)
                            && (self.args.mode != Mode::ReliableOrdered || r.in_order)))
            })
    }

    /// The final JSON line.
    pub fn summary(&self) -> String {
        let shown: Vec<HostId> = if self.targets.is_empty() {
            self.present.iter().copied().collect()
        } else {
            self.targets.clone()
        };
        let peers = shown.iter().map(|h| {
            let r = self.remotes.get(h);
            let fallback = format!("host#{}", h.0);
            let name = r.and_then(|r| r.name.as_deref()).unwrap_or(&fallback);
            let since_start = |t: Instant| ms(t.saturating_duration_since(self.start));
            let joined = r.and_then(|r| r.joined_at).map(since_start);
            let first = r.and_then(|r| r.first_message).map(since_start);
            let direct = r.and_then(|r| r.direct_at).map(since_start);
            Obj::new()
                .str("name", name)
                .str("path", describe::path(r.map_or(Path::Relay, |r| r.path)))
                .int("received", r.map_or(0, |r| r.received))
                .bool("in_order", r.is_none_or(|r| r.in_order))
                .ms("joined_ms", joined)
                .ms("first_message_ms", first)
                .ms("direct_after_ms", direct)
                .opt_int("path_mtu", r.and_then(|r| r.path_mtu).map(|m| m as u64))
        });
        let summary = Obj::event("summary")
            .bool("ok", self.ok())
            .str("name", &self.name)
            .array("peers", peers.collect::<Vec<_>>());
        // (Named only when asked for, so that the usual summary keeps its shape.)
        let summary = if self.args.private || self.args.relay_only_room {
            summary
                .bool("private", self.args.private)
                .bool("relay_only_room", self.args.relay_only_room)
        } else {
            summary
        };
        // (With a list of servers, or after a redirect: the node the run ended on.)
        let summary = if self.args.connect.servers.len() > 1 || self.redirects > 0 {
            summary
                .str("server", &self.server.to_string())
                .str("node", &self.server.to_string())
                .int("redirects", self.redirects)
        } else {
            summary
        };
        summary.finish()
    }

    // ---- internals ---------------------------------------------------------------------

    /// Connected again after a reset (the client registered again by itself, and rejoins
    /// the room it was in; a join still unanswered is asked again).
    fn on_registered_again(&mut self, host_id: HostId, public_addr: SocketAddr) {
        if self.group.is_none() && !std::mem::take(&mut self.join_carried) {
            self.join_due = true;
        }
        let server = self.server;
        let same = if self.me == Some(host_id) {
            "the same id"
        } else {
            "a new id"
        };
        self.me = Some(host_id);
        self.line(
            Some(
                Obj::event("reconnected")
                    .str("server", &server.to_string())
                    .int("host_id", host_id.0)
                    .str("public_addr", &public_addr.to_string()),
            ),
            format!("registered again with {server} as {host_id} ({same})"),
        );
    }

    fn line(&mut self, json: Option<Obj>, text: String) {
        self.lines.push_back(Line {
            json: json.map(Obj::finish),
            text,
        });
    }

    fn fail(&mut self, why: String) {
        if self.phase != Phase::Finished {
            self.failure.get_or_insert(why);
            self.phase = Phase::Finished;
        }
    }

    fn display(&self, h: HostId) -> String {
        match self.remotes.get(&h).and_then(|r| r.name.as_deref()) {
            Some(n) => format!("{n} ({h})"),
            None => h.to_string(),
        }
    }

    fn path_changed(&mut self, now: Instant, peer: HostId, path: Path, why: &str) {
        let r = self.remotes.entry(peer).or_insert_with(Remote::new);
        r.path = path;
        if let Path::Direct(_) = path {
            r.direct_at.get_or_insert(now);
        }
        let addr = match path {
            Path::Direct(a) => Some(a.to_string()),
            Path::Relay => None,
        };
        let after = ms(now.saturating_duration_since(self.start));
        let json = Obj::event("path_changed")
            .int("peer", peer.0)
            .opt_str(
                "name",
                self.remotes.get(&peer).and_then(|r| r.name.as_deref()),
            )
            .str("path", describe::path(path))
            .opt_str("addr", addr.as_deref())
            .str("reason", why)
            .ms("after_ms", Some(after));
        let who = self.display(peer);
        let text = match addr {
            Some(a) => format!("{who}: relay -> direct ({a}) after {after:.0} ms"),
            None => format!("{who}: direct -> relay ({why})"),
        };
        self.line(Some(json), text);
    }

    fn on_member_left(&mut self, now: Instant, group: GroupId, member: HostId, why: &str) {
        if Some(group) != self.group {
            return;
        }
        if Some(member) == self.me {
            self.fail(format!("removed from the room ({why})"));
            return;
        }
        self.present.remove(&member);
        let who = self.display(member);
        self.line(
            Some(
                Obj::event("member_left")
                    .int("member", member.0)
                    .opt_str(
                        "name",
                        self.remotes.get(&member).and_then(|r| r.name.as_deref()),
                    )
                    .str("reason", why),
            ),
            format!("{who} left ({why})"),
        );
        let reliable = self.args.mode.is_reliable();
        let count = self.args.count;
        let Some(r) = self.remotes.get_mut(&member) else {
            return;
        };
        r.left = true;
        if self.targets.contains(&member) && !r.complete(reliable, count) {
            let missing = if r.their_got.is_none() {
                "before confirming our messages"
            } else {
                "before all its messages arrived"
            };
            self.fail(format!("{who} left {missing}"));
        } else {
            self.progress(now);
        }
    }

    fn on_message(&mut self, now: Instant, from: HostId, channel: Channel, payload: &[u8]) {
        let (size, count, data_channel) =
            (self.args.size, self.args.count, self.args.mode.channel());
        let r = self.remotes.entry(from).or_insert_with(Remote::new);
        match payload.split_first() {
            Some((&HELLO, name)) if channel == Channel::RELIABLE_ORDERED && r.name.is_none() => {
                let name: String = String::from_utf8_lossy(name)
                    .chars()
                    .take(MAX_NAME)
                    .collect();
                r.name = Some(name.clone());
                r.hello_at = Some(now);
                self.line(
                    Some(
                        Obj::event("member_named")
                            .int("member", from.0)
                            .str("name", &name),
                    ),
                    format!("{from} is {name}"),
                );
            }
            Some((&DATA, _)) if channel == data_channel && payload.len() == size => {
                let seq = be_u32(&payload[1..]);
                if seq >= count || !is_filler(seq, &payload[MIN_SIZE..]) {
                    r.corrupt += 1;
                    return;
                }
                if !r.mark(seq, count) {
                    r.duplicates += 1;
                    return;
                }
                r.received += 1;
                r.in_order &= r.last_seq.is_none_or(|last| seq > last);
                r.last_seq = Some(r.last_seq.map_or(seq, |l| l.max(seq)));
                r.first_message.get_or_insert(now);
                r.last_data = Some(now);
                if r.received == count {
                    let order = if r.in_order {
                        "in order"
                    } else {
                        "out of order"
                    };
                    let text = format!(
                        "all {count} messages from {} arrived, {order}",
                        self.display(from)
                    );
                    self.line(None, text);
                }
            }
            Some((&GOT, n)) if channel == Channel::RELIABLE_ORDERED && n.len() == 4 => {
                let got = be_u32(n);
                r.their_got = Some(got);
                let text = format!("{} confirmed {got} of our {count}", self.display(from));
                self.line(None, text);
            }
            _ => r.corrupt += 1,
        }
        self.progress(now);
    }

    /// The next message to hand to the core: hellos and G's first, then payloads round-robin
    /// over the members.
    fn next_send(&mut self, now: Instant) -> Option<(HostId, Kind)> {
        if let Some(next) = self.urgent.pop_front() {
            return Some(next);
        }
        if self.phase != Phase::Exchanging {
            return None;
        }
        if self.targets.is_empty() {
            self.next_seq = self.args.count;
        }
        while self.next_seq < self.args.count {
            let to = self.targets[self.next_target];
            let seq = self.next_seq;
            self.next_target += 1;
            if self.next_target == self.targets.len() {
                (self.next_target, self.next_seq) = (0, self.next_seq + 1);
            }
            if !self.remotes[&to].left {
                return Some((to, Kind::Data(seq)));
            }
        }
        if self.data_done_at.is_none() && self.in_flight.is_none() {
            self.data_done_at = Some(now);
        }
        None
    }

    fn encode(&self, kind: Kind) -> (Channel, Vec<u8>) {
        match kind {
            Kind::Hello => {
                let mut p = vec![HELLO];
                p.extend_from_slice(self.name.as_bytes());
                (Channel::RELIABLE_ORDERED, p)
            }
            Kind::Data(seq) => {
                let mut p = Vec::with_capacity(self.args.size);
                p.push(DATA);
                p.extend_from_slice(&seq.to_be_bytes());
                p.extend((0..self.args.size - MIN_SIZE).map(|i| filler(seq, i)));
                (self.args.mode.channel(), p)
            }
            Kind::Got(n) => {
                let mut p = vec![GOT];
                p.extend_from_slice(&n.to_be_bytes());
                (Channel::RELIABLE_ORDERED, p)
            }
        }
    }

    /// Advances the phases as far as the facts allow.
    fn progress(&mut self, now: Instant) {
        if self.phase == Phase::Gathering && self.present.len() >= usize::from(self.args.peers) {
            self.targets = self.present.iter().copied().collect();
            self.phase = Phase::Exchanging;
            self.stats_due = now;
            for &t in &self.targets {
                self.urgent.push_back((t, Kind::Hello));
            }
            let a = &self.args;
            self.line(
                None,
                format!(
                    "sending {} x {} B to {} members, {}",
                    a.count,
                    a.size,
                    self.targets.len(),
                    a.mode.name()
                ),
            );
        }
        if self.phase == Phase::Exchanging {
            self.exchange(now);
        }
        if let Phase::Holding(until) = self.phase {
            if now >= until {
                self.phase = Phase::Finished;
            }
        }
    }

    fn exchange(&mut self, now: Instant) {
        let (reliable, count) = (self.args.mode.is_reliable(), self.args.count);
        let data_done = self.data_done_at;
        for &t in &self.targets {
            let Some(r) = self.remotes.get_mut(&t) else {
                continue;
            };
            if r.got_queued || r.left {
                continue;
            }
            let ready = match (reliable, data_done, r.hello_at) {
                (true, ..) => r.received == count,
                (false, Some(done), Some(hello)) => {
                    let quiet_since = done.max(hello).max(r.last_data.unwrap_or(hello));
                    r.received == count || now >= quiet_since + QUIET
                }
                (false, ..) => false,
            };
            if ready {
                r.got_queued = true;
                self.urgent.push_back((t, Kind::Got(r.received)));
            }
        }
        let sent_all = data_done.is_some() && self.urgent.is_empty() && self.in_flight.is_none();
        let complete = self
            .targets
            .iter()
            .all(|t| self.remotes[t].complete(reliable, count));
        if sent_all && complete {
            let hold = self.args.hold;
            let text = if hold.is_zero() {
                "exchange complete".to_owned()
            } else {
                format!("exchange complete; holding {} s", hold.as_secs_f64())
            };
            self.line(None, text);
            self.phase = Phase::Holding((now + hold).min(self.deadline));
        }
    }

    /// What the run was waiting for, for a timeout message.
    fn waiting_for(&self) -> String {
        let server = self.server;
        match self.phase {
            Phase::Connecting => format!("connecting to {server}"),
            Phase::Joining => "waiting for the server to answer the room join".to_owned(),
            Phase::Gathering => format!(
                "waiting for members: {} of {} joined",
                self.present.len(),
                self.args.peers
            ),
            Phase::Exchanging => {
                let count = self.args.count;
                let reliable = self.args.mode.is_reliable();
                let pending: Vec<String> = self
                    .targets
                    .iter()
                    .filter(|t| !self.remotes[t].complete(reliable, count))
                    .map(|t| {
                        let r = &self.remotes[t];
                        let mut s =
                            format!("{}: {}/{count} received", self.display(*t), r.received);
                        if r.name.is_none() {
                            s.push_str(", no hello");
                        }
                        if r.their_got.is_none() {
                            s.push_str(", no confirmation of ours");
                        }
                        if r.unacked > 0 {
                            s.push_str(&format!(", {} of ours unacknowledged", r.unacked));
                        }
                        s
                    })
                    .collect();
                format!("exchanging ({})", pending.join("; "))
            }
            Phase::Holding(_) | Phase::Finished => "holding".to_owned(),
        }
    }
}

fn validate(args: &PeerArgs, config: &ClientConfig) -> Result<(), CliError> {
    if args.size < MIN_SIZE {
        return Err(CliError::usage(format!(
            "--size must be at least {MIN_SIZE} bytes (a tag and a sequence number)"
        )));
    }
    if args.count > MAX_COUNT {
        return Err(CliError::usage(format!("--send is at most {MAX_COUNT}")));
    }
    if args.room.is_empty() {
        return Err(CliError::usage("--room must not be empty".to_owned()));
    }
    let probe = Client::new(config.clone().into(), [0; 32], Instant::now())
        .map_err(|e| CliError::usage(format!("invalid client settings: {e}")))?;
    let (max, what) = if args.mode.is_reliable() {
        (probe.max_message_size(), "reliable messages")
    } else {
        (
            probe.max_unreliable_payload(),
            "unreliable messages (one datagram)",
        )
    };
    if args.size > max {
        return Err(CliError::usage(format!(
            "--size {} is too large: {what} are at most {max} bytes",
            args.size
        )));
    }
    Ok(())
}

/// Byte `i` after a payload's header: a pattern derived from its sequence number, so any
/// corruption or mix-up shows.
fn filler(seq: u32, i: usize) -> u8 {
    (seq as u8).wrapping_add(i as u8)
}

fn is_filler(seq: u32, bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, b)| *b == filler(seq, i))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bytes::Bytes;
    use pierce_core::PublicKey;

    use super::*;
    use crate::cli::args::ConnectArgs;

    const ME: HostId = HostId(1);
    const BOB: HostId = HostId(2);
    const ROOM: GroupId = GroupId(7);
    const N: u32 = 3;

    fn args(mode: Mode) -> PeerArgs {
        let server: SocketAddr = "127.0.0.1:7777".parse().expect("literal");
        PeerArgs {
            connect: ConnectArgs {
                servers: vec![server],
                server_key: None,
                token_secret: None,
                user_id: None,
                bind: None,
                nat64_prefix: None,
            },
            room: "r".to_owned(),
            password: String::new(),
            name: Some("me".to_owned()),
            peers: 1,
            count: N,
            size: 16,
            mode,
            max_datagram_size: pierce_core::MAX_DATAGRAM_SIZE,
            relay_only: false,
            no_port_mapping: false,
            no_copies: false,
            stun: Vec::new(),
            private: false,
            relay_only_room: false,
            no_offload: false,
            tcp: false,
            udp_only: false,
            hold: Duration::ZERO,
            timeout: Duration::from_secs(10),
            json: true,
            host: false,
        }
    }

    /// A script in the room with Bob, its hello and payloads to him handed to the core.
    fn exchanging(mode: Mode, t0: Instant) -> Script {
        let mut s = Script::new(args(mode), &ClientConfig::default(), t0).expect("valid");
        s.handle_event(
            t0,
            ClientEvent::Connected {
                host_id: ME,
                public_addr: "127.0.0.1:1".parse().expect("literal"),
                server_key: PublicKey([0; 32]),
            },
        );
        assert!(matches!(s.poll_command(t0), Some(Command::JoinRoom { .. })));
        s.handle_reply(t0, Reply::Joined(Ok(())));
        let (name, owner) = ("r".to_owned(), ME);
        s.handle_event(
            t0,
            ClientEvent::RoomJoined {
                group: ROOM,
                name,
                owner,
            },
        );
        for member in [ME, BOB] {
            let member_count = 2;
            s.handle_event(
                t0,
                ClientEvent::MemberJoined {
                    group: ROOM,
                    member,
                    member_count,
                },
            );
        }
        let mut sent = Vec::new();
        while let Some(c) = s.poll_command(t0) {
            match c {
                Command::Send { to, payload, .. } => {
                    assert_eq!(to, BOB);
                    sent.push(payload[0]);
                    s.handle_reply(t0, Reply::Sent(Ok(MessageId(sent.len() as u64))));
                }
                Command::Stats(_) => s.handle_reply(t0, Reply::Stats(None)),
                Command::JoinRoom { .. } => panic!("joined twice"),
            }
        }
        assert_eq!(sent, b"HDDD", "a hello, then the payloads");
        s
    }

    fn from_bob(s: &mut Script, t: Instant, channel: Channel, payload: Vec<u8>) {
        let payload = Bytes::from(payload);
        s.handle_event(
            t,
            ClientEvent::PeerMessage {
                from: BOB,
                channel,
                payload,
            },
        );
    }

    fn data(seq: u32) -> Vec<u8> {
        let mut p = vec![DATA];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend((0..16 - MIN_SIZE).map(|i| filler(seq, i)));
        p
    }

    fn got(n: u32) -> Vec<u8> {
        let mut p = vec![GOT];
        p.extend_from_slice(&n.to_be_bytes());
        p
    }

    /// Answers every command at `t` and once more when stats are next due: sends succeed,
    /// stats show nothing outstanding (as for a member that has gone: no stats at all).
    fn settle(s: &mut Script, t: Instant) {
        for t in [t, t + STATS_EVERY] {
            s.handle_timeout(t);
            while let Some(c) = s.poll_command(t) {
                let reply = match c {
                    Command::Stats(_) => Reply::Stats(None),
                    _ => Reply::Sent(Ok(MessageId(0))),
                };
                s.handle_reply(t, reply);
            }
        }
    }

    fn run_bob(s: &mut Script, t: Instant, seqs: &[u32]) {
        from_bob(s, t, Channel::RELIABLE_ORDERED, b"Hbob".to_vec());
        for &seq in seqs {
            from_bob(s, t, Channel::RELIABLE_ORDERED, data(seq));
        }
        from_bob(s, t, Channel::RELIABLE_ORDERED, got(N));
        settle(s, t);
    }

    #[test]
    fn a_complete_exchange_finishes_ok_with_a_summary() {
        let t0 = Instant::now();
        let mut s = exchanging(Mode::ReliableOrdered, t0);
        run_bob(&mut s, t0, &[0, 1, 2]);
        assert!(s.is_finished() && s.ok(), "{:?}", s.failure());
        let summary = s.summary();
        assert!(
            summary.starts_with(
                r#"{"event":"summary","ok":true,"name":"me","peers":[{"name":"bob","path":"relay","received":3,"in_order":true,"joined_ms":0.000,"first_message_ms":"#
            ),
            "{summary}"
        );
        assert!(
            summary.ends_with(r#","direct_after_ms":null,"path_mtu":null}]}"#),
            "{summary}"
        );
    }

    #[test]
    fn duplicates_and_reordering_fail_reliable_ordered() {
        let t0 = Instant::now();
        let mut s = exchanging(Mode::ReliableOrdered, t0);
        run_bob(&mut s, t0, &[0, 2, 1, 2]);
        assert!(s.is_finished());
        assert!(!s.ok(), "a duplicate and a reordering must not pass");
        assert!(s.summary().contains(r#""received":3,"in_order":false"#));
    }

    #[test]
    fn reordering_is_fine_when_unordered_but_corruption_is_not() {
        let t0 = Instant::now();
        let mut s = exchanging(Mode::ReliableUnordered, t0);
        from_bob(&mut s, t0, Channel::RELIABLE_UNORDERED, data(2));
        from_bob(&mut s, t0, Channel::RELIABLE_UNORDERED, data(0));
        from_bob(&mut s, t0, Channel::RELIABLE_UNORDERED, data(1));
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, b"Hbob".to_vec());
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, got(N));
        settle(&mut s, t0);
        assert!(s.is_finished() && s.ok(), "{:?}", s.failure());

        let mut s = exchanging(Mode::ReliableUnordered, t0);
        let mut bad = data(1);
        bad[10] ^= 1;
        from_bob(&mut s, t0, Channel::RELIABLE_UNORDERED, bad);
        for seq in [0, 1, 2] {
            from_bob(&mut s, t0, Channel::RELIABLE_UNORDERED, data(seq));
        }
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, b"Hbob".to_vec());
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, got(N));
        settle(&mut s, t0);
        assert!(
            s.is_finished() && !s.ok(),
            "a corrupt payload must fail the run"
        );
    }

    #[test]
    fn a_member_leaving_before_confirming_fails_the_run() {
        let t0 = Instant::now();
        let mut s = exchanging(Mode::ReliableOrdered, t0);
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, b"Hbob".to_vec());
        let reason = pierce_core::MemberLeftReason::Disconnected;
        s.handle_event(
            t0,
            ClientEvent::MemberLeft {
                group: ROOM,
                member: BOB,
                reason,
            },
        );
        assert!(s.is_finished() && !s.ok());
        assert_eq!(
            s.failure(),
            Some("bob (host#2) left before confirming our messages")
        );
    }

    #[test]
    fn unreliable_mode_settles_after_a_quiet_second_and_reports_loss() {
        let t0 = Instant::now();
        let mut s = exchanging(Mode::Unreliable, t0);
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, b"Hbob".to_vec());
        from_bob(&mut s, t0, Channel::UNRELIABLE, data(0));
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, got(N));
        settle(&mut s, t0);
        assert!(!s.is_finished(), "still waiting for more of Bob's payloads");
        assert!(s.poll_timeout() <= t0 + QUIET);
        settle(&mut s, t0 + QUIET);
        assert!(s.is_finished() && s.ok(), "{:?}", s.failure());
        assert!(s.summary().contains(r#""received":1,"#));
    }

    #[test]
    fn a_reset_mid_exchange_is_ridden_through_the_room_rejoined_by_the_client_alone() {
        let t0 = Instant::now();
        let mut s = exchanging(Mode::ReliableOrdered, t0);
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, b"Hbob".to_vec());
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, data(0));
        let reason = DisconnectReason::Reset;
        s.handle_event(t0, ClientEvent::Disconnected { reason });
        assert!(!s.is_finished(), "{:?}", s.failure());
        let public_addr = "127.0.0.1:1".parse().expect("literal");
        let server_key = PublicKey([0; 32]);
        let again = ClientEvent::Connected {
            host_id: ME,
            public_addr,
            server_key,
        };
        s.handle_event(t0, again);
        let (name, owner) = ("r".to_owned(), BOB);
        let group = GroupId(ROOM.0 + 1);
        s.handle_event(t0, ClientEvent::RoomJoined { group, name, owner });
        for member in [BOB, ME] {
            let member_count = 2;
            let e = ClientEvent::MemberJoined {
                group,
                member,
                member_count,
            };
            s.handle_event(t0, e);
        }
        let lines: Vec<String> = std::iter::from_fn(|| s.poll_line())
            .filter_map(|l| l.json)
            .collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains(r#""event":"server_reset""#))
        );
        assert!(lines.iter().any(|l| l.contains(r#""event":"reconnected""#)));
        // No second join (the client rejoins by itself), and the exchange goes on.
        for seq in [1, 2] {
            from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, data(seq));
        }
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, got(N));
        for t in [t0, t0 + STATS_EVERY] {
            s.handle_timeout(t);
            while let Some(c) = s.poll_command(t) {
                let reply = match c {
                    Command::Stats(_) => Reply::Stats(None),
                    Command::JoinRoom { .. } => panic!("joined again"),
                    Command::Send { .. } => Reply::Sent(Ok(MessageId(0))),
                };
                s.handle_reply(t, reply);
            }
        }
        assert!(s.is_finished() && s.ok(), "{:?}", s.failure());

        // Other losses still end the run.
        let mut s = exchanging(Mode::ReliableOrdered, t0);
        let reason = DisconnectReason::TimedOut;
        s.handle_event(t0, ClientEvent::Disconnected { reason });
        assert!(s.is_finished() && !s.ok());
    }

    /// A script listing two servers (127.0.0.1:7777, then :7778), connected to the first,
    /// that hears `lost` (the client losing it), then is connected to the second: its JSON
    /// lines, and the script.
    fn ridden_to_the_second_server(t0: Instant, lost: &[ClientEvent]) -> (Vec<String>, Script) {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:7777".parse().expect("literal"),
            "127.0.0.1:7778".parse().expect("literal"),
        );
        let mut listed = args(Mode::ReliableOrdered);
        listed.connect.servers = vec![a, b];
        let mut s = Script::new(listed, &ClientConfig::default(), t0).expect("valid");
        s.handle_server(a);
        let connected = ClientEvent::Connected {
            host_id: ME,
            public_addr: "127.0.0.1:1".parse().expect("literal"),
            server_key: PublicKey([0; 32]),
        };
        s.handle_event(t0, connected.clone());
        for e in lost {
            s.handle_event(t0, e.clone());
        }
        assert!(!s.is_finished(), "{:?}", s.failure());
        s.handle_server(b);
        s.handle_event(t0, connected);
        let lines = std::iter::from_fn(|| s.poll_line())
            .filter_map(|l| l.json)
            .collect();
        (lines, s)
    }

    #[test]
    fn with_a_server_list_a_timeout_is_ridden_through_and_the_new_server_named() {
        let t0 = Instant::now();
        let reason = DisconnectReason::TimedOut;
        let (lines, s) = ridden_to_the_second_server(t0, &[ClientEvent::Disconnected { reason }]);
        let has = |what: &str| lines.iter().any(|l| l.contains(what));
        assert!(
            has(r#""event":"connected","server":"127.0.0.1:7777""#),
            "{lines:?}"
        );
        assert!(
            has(r#""event":"server_lost","server":"127.0.0.1:7777""#),
            "{lines:?}"
        );
        assert!(
            has(r#""event":"reconnected","server":"127.0.0.1:7778""#),
            "{lines:?}"
        );
        assert!(
            s.summary()
                .ends_with(r#","server":"127.0.0.1:7778","node":"127.0.0.1:7778","redirects":0}"#),
            "{}",
            s.summary()
        );
        // With one --server the summary keeps its shape, and a timeout ends the run.
        let mut one = exchanging(Mode::ReliableOrdered, t0);
        assert!(!one.summary().contains(r#""server""#));
        one.handle_event(t0, ClientEvent::Disconnected { reason });
        assert!(one.is_finished() && !one.ok());
    }

    #[test]
    fn the_deadline_fails_the_run_and_says_what_was_missing() {
        let t0 = Instant::now();
        let mut s = exchanging(Mode::ReliableOrdered, t0);
        from_bob(&mut s, t0, Channel::RELIABLE_ORDERED, data(0));
        settle(&mut s, t0 + Duration::from_secs(10));
        assert!(s.is_finished() && !s.ok());
        let why = s.failure().expect("a reason");
        assert!(why.starts_with("timed out after 10 s exchanging"), "{why}");
        assert!(
            why.contains("1/3 received, no hello, no confirmation of ours"),
            "{why}"
        );
    }

    #[test]
    fn with_a_server_list_a_drain_is_ridden_through_and_said_as_such() {
        let t0 = Instant::now();
        let within = Duration::from_secs(30);
        let reason = DisconnectReason::ServerDraining;
        let lost = [
            ClientEvent::ServerDraining { within },
            ClientEvent::Disconnected { reason },
        ];
        let (lines, _) = ridden_to_the_second_server(t0, &lost);
        let at = |what: &str| lines.iter().position(|l| l.contains(what));
        let order = [
            r#""event":"server_draining","within_ms":30000"#,
            r#""event":"server_lost","server":"127.0.0.1:7777","reason":"draining""#,
            r#""event":"reconnected","server":"127.0.0.1:7778""#,
        ]
        .map(|w| at(w).unwrap_or_else(|| panic!("no {w} in {lines:?}")));
        assert!(order.is_sorted(), "{lines:?}");
    }
}
