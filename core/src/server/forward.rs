//! The relay data plane: [`Forwarder`] checks a peer packet that came behind a relay header
//! (the relay fast path, [`crate::wire::relay`]) and says where it goes, without opening or
//! sealing anything, over a table the [`Server`](super::Server) publishes: its clients (their
//! session ids, relay keys and where they are), their pairs, and the shared relay budgets.
//!
//! The server always has one forwarder of its own. A runtime that relays on more threads asks
//! the server for one forwarder per thread ([`Server::forwarder`](super::Server::forwarder),
//! with [`ServerConfig::relay_shards`](crate::ServerConfig::relay_shards) set), passes every
//! [`ForwardUpdate`] the server publishes ([`Server::poll_forward_update`](
//! super::Server::poll_forward_update)) to each of them, and every [`ForwardReport`] they make
//! back to the server ([`Server::handle_forward_report`](super::Server::handle_forward_report)).
//! Forwarder `i` of `n` owns the sessions whose id is `i` modulo `n`
//! ([`relay_shard`]): their relay keys' replay windows and their clients' budgets are in one
//! place, so the runtime must steer each relay packet to its owner (on Linux, a reuseport BPF
//! program does it in the kernel); a packet for a session it does not own, that is not a
//! relay packet, that goes to a TCP stream, or whose pair it has not heard of yet (the
//! server's update may still be in its channel while the client already has its PeerAdd), it
//! hands back ([`Forward::Control`]) for the server's thread.
//!
//! What moves a session stays with the server: a forwarder reports that it heard a client
//! (batched, [`REPORT_INTERVAL`]) and, at once, that a client's newest relay packet came from
//! a new address; the server decides and publishes the new address back. The server's own
//! forwarder, when there are others, forwards only what comes from where a session already is
//! (a TCP stream, or a datagram the kernel did not steer): a relay packet replayed to the
//! server's thread from elsewhere costs nobody's budget and moves nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use super::relay::{Budgets, Leases, Refused};
use crate::config::ServerConfig;
use crate::crypto::{RelayKey, RelaySecret};
use crate::event::{GroupId, HostId};
use crate::ratelimit::Bucket;
use crate::stats::ServerStats;
use crate::time::{Duration, Instant, Timeout};
use crate::wire::relay::{KIND_RELAY, RELAYED_HEADER_LEN, RelayPacket, encode_relayed_header};
use crate::{SocketId, config};

/// How long a forwarder on its own thread collects the clients it heard before it reports
/// them (a session times out after seconds of silence; a tenth of a second late is nothing).
pub const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// The forwarder (of `shards`) that owns relay packets of session id `session`.
#[must_use]
pub fn relay_shard(session: u32, shards: u16) -> usize {
    (session % u32::from(shards.max(1))) as usize
}

/// The forwarder (of `shards`) a datagram belongs to: for a relay packet (kind `0xD6`, at
/// least 8 bytes), its session id's owner ([`relay_shard`]); `None` for anything else (the
/// server's thread). A runtime steers datagrams with this (or a kernel program that computes
/// the same: the big-endian `u32` at bytes 4..8, modulo `shards`).
#[must_use]
pub fn relay_shard_of(datagram: &[u8], shards: u16) -> Option<usize> {
    match datagram {
        [KIND_RELAY, _, _, _, a, b, c, d, ..] => {
            Some(relay_shard(u32::from_be_bytes([*a, *b, *c, *d]), shards))
        }
        _ => None,
    }
}

/// What a forwarder does with a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Forward it: `header` then `datagram[peer]` is the datagram for `dst` on `socket`. The
    /// relay header in front of the peer packet is longer than `header`, so the runtime may
    /// write `header` into the datagram's own buffer just before `peer` and send from there
    /// ([`Forward::in_place`]): no copy.
    Relay {
        /// The sender.
        from: HostId,
        /// The receiver.
        to: HostId,
        /// The receiver's address.
        dst: SocketAddr,
        /// The socket to send it on: a UDP socket, or a TCP stream (which only the server's
        /// thread can write: hand it over).
        socket: SocketId,
        /// The plain header that names the sender to the receiver.
        header: [u8; RELAYED_HEADER_LEN],
        /// The peer packet, in the datagram.
        peer: Range<usize>,
    },
    /// Not a relay packet this forwarder handles: hand the datagram, unchanged, to the
    /// server's thread ([`Endpoint::handle_datagram_on`](crate::Endpoint::handle_datagram_on)).
    Control,
    /// Dropped and counted in the stats passed in.
    Dropped,
    /// A relay packet of session `session`, which the server does not have (counted in
    /// `dropped.unknown_session`): the server answers it with a stateless reset
    /// ([`crate::wire::reset`]). Only the server's own forwarder says this; a forwarder on a
    /// thread of its own hands such a packet to the server's thread ([`Forward::Control`]).
    Unknown {
        /// The session id the packet named.
        session: u32,
    },
}

impl Forward {
    /// For [`Forward::Relay`]: writes the header into `datagram` just before the peer packet
    /// and returns the range to send (`None` for the other variants).
    pub fn in_place(&self, datagram: &mut [u8]) -> Option<Range<usize>> {
        let Self::Relay { header, peer, .. } = self else {
            return None;
        };
        let start = peer.start.checked_sub(RELAYED_HEADER_LEN)?;
        datagram.get_mut(start..peer.start)?.copy_from_slice(header);
        Some(start..peer.end)
    }
}

/// A change to the forwarders' table, published by the server: pass each to every forwarder
/// (in order). Opaque: it carries a client's relay key.
#[derive(Clone, Debug)]
pub struct ForwardUpdate(pub(super) Update);

#[derive(Clone, Debug)]
pub(super) enum Update {
    /// An established client (new, or moved): its session, relay key and where it is.
    Client {
        session: u32,
        host: HostId,
        secret: RelaySecret,
        client_session: u32,
        /// `None` while its stream is closed: nothing can reach it.
        path: Option<(SocketId, SocketAddr)>,
    },
    /// Session `session` (of client `host`) is no longer established.
    ClientGone { session: u32, host: HostId },
    /// Pair `pair_id` of `a` and `b` relays on `group`'s budget (new, or another group).
    Pair {
        pair_id: u32,
        a: HostId,
        b: HostId,
        group: GroupId,
    },
    /// Pair `pair_id` is gone.
    PairGone { pair_id: u32 },
}

/// What a forwarder tells the server: pass each to
/// [`Server::handle_forward_report`](super::Server::handle_forward_report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardReport(pub(super) Report);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Report {
    /// An authentic relay packet of `session` came at `at` on `path`; `newest`: the highest
    /// relay counter so far (it may move the session there).
    Heard {
        session: u32,
        at: Instant,
        path: (SocketId, SocketAddr),
        newest: bool,
    },
}

/// How a forwarder is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// The server's own, the only one: owns every session; reports at once.
    Alone,
    /// The server's own, next to shards: owns every session but forwards only what comes
    /// from where its session is; reports at once.
    Beside,
    /// Shard `index` of `count`, on a thread of its own: reports what it heard every
    /// [`REPORT_INTERVAL`], a move at once.
    Shard { index: u16, count: u16 },
}

/// A session whose relay packets this forwarder checks.
struct Owned {
    session: u32,
    host: HostId,
    key: RelayKey,
    /// Where the server says its client is.
    path: Option<(SocketId, SocketAddr)>,
    budget: Bucket,
    /// Heard since the last report (shards only): when, and on which path.
    heard: Option<(Instant, (SocketId, SocketAddr))>,
}

/// Where a client receives relayed packets.
#[derive(Clone, Copy)]
struct Route {
    session: u32,
    client_session: u32,
    path: Option<(SocketId, SocketAddr)>,
}

/// One relay data plane: see the module documentation.
pub struct Forwarder {
    role: Role,
    client_rate: u32,
    client_burst: u32,
    /// Sessions owned, by slot (the session id's low bits), tagged with the id.
    owned: Vec<Option<Owned>>,
    /// Every established client's route.
    routes: HashMap<HostId, Route>,
    /// Every pair: its two clients and the group that pays.
    pairs: HashMap<u32, (HostId, HostId, GroupId)>,
    budgets: Arc<Budgets>,
    leases: Leases,
    /// Slots heard since the last report (shards only).
    heard: Vec<usize>,
    /// When the heard ones are reported.
    report_at: Option<Instant>,
    /// Reports ready.
    reports: Vec<Report>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("role", &self.role)
            .field("clients", &self.routes.len())
            .field("pairs", &self.pairs.len())
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    pub(super) fn new(config: &ServerConfig, budgets: Arc<Budgets>, role: Role) -> Self {
        let forwarders = match role {
            Role::Alone => 1,
            Role::Beside | Role::Shard { .. } => usize::from(config.relay_shards) + 1,
        };
        Self {
            role,
            client_rate: config.relay_rate_per_client,
            client_burst: config.relay_burst_per_client,
            owned: Vec::new(),
            routes: HashMap::new(),
            pairs: HashMap::new(),
            leases: Leases::new(budgets.lease_for(forwarders)),
            budgets,
            heard: Vec::new(),
            report_at: None,
            reports: Vec::new(),
        }
    }

    fn owns(&self, session: u32) -> bool {
        match self.role {
            Role::Alone | Role::Beside => true,
            Role::Shard { index, count } => relay_shard(session, count) == usize::from(index),
        }
    }

    /// A datagram that came in on `socket` from `from` at `now`: see [`Forward`]. Drops are
    /// counted in `stats` (a forwarder on a thread of its own keeps its own).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
        stats: &mut ServerStats,
    ) -> Forward {
        if datagram.first() != Some(&KIND_RELAY) {
            return Forward::Control;
        }
        if datagram.len() > crate::MAX_DATAGRAM_SIZE {
            // No client sends more (its path-MTU discovery stops there): garbage.
            stats.dropped.malformed += 1;
            return Forward::Dropped;
        }
        let packet = match RelayPacket::decode(datagram) {
            Ok(p) => p,
            Err(e) => {
                stats.dropped.count_decode(e);
                return Forward::Dropped;
            }
        };
        if !self.owns(packet.session) {
            return Forward::Control;
        }
        let is_shard = matches!(self.role, Role::Shard { .. });
        let slot = slot(packet.session);
        let Some(owned) = self
            .owned
            .get_mut(slot)
            .and_then(Option::as_mut)
            .filter(|o| o.session == packet.session)
        else {
            if is_shard {
                // The server's thread answers it with a reset (the queue to it is bounded).
                return Forward::Control;
            }
            stats.dropped.unknown_session += 1;
            return Forward::Unknown {
                session: packet.session,
            };
        };
        // A forwarder on a thread of its own counts what it takes (the server counts the
        // rest, when it gets them).
        if is_shard {
            stats.io.received(datagram.len());
        }
        let path = (socket, from);
        if self.role == Role::Beside && owned.path != Some(path) {
            // Next to shards, the server's thread sees what the kernel did not steer to them:
            // taken only from where the session is (its stream, say), never a move.
            stats.dropped.relay_denied += 1;
            return Forward::Dropped;
        }
        if let Err(e) = owned
            .key
            .verify(packet.counter, &packet.tagged, &packet.tag)
        {
            stats.dropped.count_open(e);
            return Forward::Dropped;
        }
        // Authentic and fresh: the client was heard (relayed traffic keeps its session
        // alive), and its newest packet may move it.
        let newest = owned.key.highest_received() == Some(packet.counter);
        match self.role {
            Role::Alone | Role::Beside => self.reports.push(Report::Heard {
                session: packet.session,
                at: now,
                path,
                newest,
            }),
            Role::Shard { .. } if newest && owned.path != Some(path) => {
                // A move is reported at once (its packets must reach it where it is now);
                // until the server publishes it, the client counts as there.
                owned.path = Some(path);
                owned.heard = None;
                self.reports.push(Report::Heard {
                    session: packet.session,
                    at: now,
                    path,
                    newest,
                });
            }
            Role::Shard { .. } => {
                if owned.heard.is_none() {
                    self.heard.push(slot);
                }
                owned.heard = Some((now, path));
                if self.report_at.is_none() {
                    self.report_at = Some(now + REPORT_INTERVAL);
                }
            }
        }
        let (sender, pair_id) = (owned.host, packet.peer.header.receiver);
        let to = match self.pairs.get(&pair_id) {
            Some(&(a, b, group)) if a == sender => Some((b, group)),
            Some(&(a, b, group)) if b == sender => Some((a, group)),
            _ => None,
        };
        let Some((to, group)) = to else {
            return deny(is_shard, datagram.len(), stats);
        };
        let Some(route) = self.routes.get(&to).copied() else {
            return deny(is_shard, datagram.len(), stats);
        };
        let Some((socket, dst)) = route.path else {
            // Its stream closed: nothing reaches it until it is heard again (as a datagram
            // lost on the way; not a denial).
            stats.relay_unreachable += 1;
            return Forward::Dropped;
        };
        if socket.is_stream() && is_shard {
            // Only the server's thread writes TCP streams: it forwards this one itself (from
            // where the sender is, so its forwarder takes it).
            return hand_back(datagram.len(), stats);
        }
        let n = packet.peer_bytes.len() as u32;
        let (rate, burst) = (self.client_rate, self.client_burst);
        let refused = if owned.budget.take_n(now, rate, burst, n) {
            (self.leases).take(now, &self.budgets, group, n).err()
        } else {
            Some(Refused::Client)
        };
        if refused.is_some() {
            stats.dropped.relay_rate += 1;
            return Forward::Dropped;
        }
        let peer = RELAY_HEADER_END..datagram.len();
        if is_shard {
            // On the server's thread these count when the packet leaves its queue.
            stats.relayed_packets += 1;
            stats.relayed_bytes += u64::from(n);
            stats.histograms.relay_datagram_bytes.observe(u64::from(n));
            stats.io.sent(RELAYED_HEADER_LEN + peer.len());
        }
        Forward::Relay {
            from: sender,
            to,
            dst,
            socket,
            header: encode_relayed_header(route.client_session, sender.0),
            peer,
        }
    }

    /// A change the server published.
    pub fn handle_update(&mut self, update: &ForwardUpdate) {
        match update.0 {
            Update::Client {
                session,
                host,
                ref secret,
                client_session,
                path,
            } => {
                self.routes.insert(
                    host,
                    Route {
                        session,
                        client_session,
                        path,
                    },
                );
                if !self.owns(session) {
                    return;
                }
                let slot = slot(session);
                if slot >= self.owned.len() {
                    self.owned.resize_with(slot + 1, || None);
                }
                match &mut self.owned[slot] {
                    Some(o) if o.session == session => o.path = path,
                    entry => {
                        *entry = Some(Owned {
                            session,
                            host,
                            key: RelayKey::new(secret),
                            path,
                            budget: Bucket::EMPTY,
                            heard: None,
                        });
                    }
                }
            }
            Update::ClientGone { session, host } => {
                if self.routes.get(&host).is_some_and(|r| r.session == session) {
                    self.routes.remove(&host);
                }
                let slot = slot(session);
                if let Some(entry) = self.owned.get_mut(slot) {
                    if entry.as_ref().is_some_and(|o| o.session == session) {
                        *entry = None;
                    }
                }
            }
            Update::Pair {
                pair_id,
                a,
                b,
                group,
            } => {
                self.pairs.insert(pair_id, (a, b, group));
            }
            Update::PairGone { pair_id } => {
                self.pairs.remove(&pair_id);
            }
        }
    }

    /// The next report for the server, if one is ready.
    pub fn poll_report(&mut self) -> Option<ForwardReport> {
        self.reports.pop().map(ForwardReport)
    }

    /// When the clients heard lately are to be reported ([`REPORT_INTERVAL`]).
    pub fn poll_timeout(&self) -> Option<Timeout> {
        self.report_at
            .map(|at| Timeout::new(at, "relay forwarder report"))
    }

    /// Time passed: the clients heard since the last report are reported.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.report_at.is_none_or(|at| now < at) {
            return;
        }
        self.report_at = None;
        for slot in self.heard.drain(..) {
            let Some(o) = self.owned.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if let Some((at, path)) = o.heard.take() {
                self.reports.push(Report::Heard {
                    session: o.session,
                    at,
                    path,
                    newest: false,
                });
            }
        }
    }

    /// Clients it knows of (with a route), pairs, and sessions it owns.
    #[must_use]
    pub fn len(&self) -> (usize, usize, usize) {
        let owned = self.owned.iter().filter(|o| o.is_some()).count();
        (self.routes.len(), self.pairs.len(), owned)
    }
}

/// Where the peer packet starts in a relay datagram.
const RELAY_HEADER_END: usize = crate::wire::relay::RELAY_HEADER_LEN;

/// A relay packet whose pair (or receiver) this forwarder does not know. On a thread of its
/// own that may only mean it has not read the server's newest update yet (a client can send
/// the moment its PeerAdd arrives, and the relay thread reads its channel between batches):
/// the server's thread, which does know, decides. There, it is refused.
fn deny(is_shard: bool, len: usize, stats: &mut ServerStats) -> Forward {
    if is_shard {
        hand_back(len, stats)
    } else {
        stats.dropped.relay_denied += 1;
        Forward::Dropped
    }
}

/// Hands a packet a shard counted as taken to the server's thread (which counts it there).
fn hand_back(len: usize, stats: &mut ServerStats) -> Forward {
    stats.io.datagrams_in -= 1;
    stats.io.bytes_in -= len as u64;
    Forward::Control
}

fn slot(session: u32) -> usize {
    (session & (config::MAX_SESSIONS - 1) as u32) as usize
}
