//! The server's part in a cluster ([`crate::cluster`]): a small machine with its own state
//! and the same verbs as the others. It keeps the node registered (a heartbeat carrying its
//! load and rooms), learns the other nodes and the cluster-wide room list, asks where rooms
//! live and claims them, takes resumption tickets cluster-wide, and hands rooms on when the
//! node drains. It asks through [`Node::poll_request`] and is answered through
//! [`Node::handle_answer`]; what the answers decide comes out of [`Node::poll_verdict`] for
//! the server to carry out (the node never touches sessions or rooms itself).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use crate::cluster::{
    Claim, ClusterConfig, DirectoryAnswer, DirectoryError, DirectoryRequest, ListedRoom, NodeInfo,
    NodeLoad, QueryId,
};
use crate::event::{HostId, RoomError};
use crate::time::{Duration, Instant, Timeout};
use crate::wire::control::{JOIN_CREATE, JOIN_MUST_CREATE, JOIN_REDIRECTED};

/// Questions out at once, at most: past it, joins fail as if the directory were down (a
/// directory that does not answer must not grow this without bound).
const MAX_ASKED: usize = 4096;

/// A join the node could not settle alone (the room is not here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Join {
    pub(super) host: HostId,
    pub(super) flags: u8,
    pub(super) max_members: u16,
    pub(super) name: String,
    pub(super) password: String,
}

/// What an answer (or its absence) decided, for the server to carry out.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The node has its number: the high bits of the host ids it issues.
    Numbered(u16),
    /// The room is this node's (claimed now, or held): create or join it here.
    Here(Join),
    /// Client `host` should be on node `to` for room `room`.
    Redirect {
        host: HostId,
        to: SocketAddr,
        room: String,
    },
    /// The join fails.
    Fail { host: HostId, error: RoomError },
    /// Half-open session `key` (its id `session`) presented a ticket: whether it was the
    /// ticket's first use in the cluster (false when the directory could not say).
    Ticket {
        key: usize,
        session: u32,
        first: bool,
    },
    /// Room `room` of ours is held by node `to` now (during a directory outage both created
    /// it, or this node handed it over as it drains): its members should go there.
    Lost { room: String, to: SocketAddr },
    /// Room `room` could not be handed over (the directory did not answer): its members are
    /// told the node drains, and leave by themselves.
    Stranded { room: String },
    /// The node drains and the directory has answered its draining heartbeat (or failed to):
    /// its rooms move to `to`, the least-loaded other active node in that answer (in the
    /// last list heard if there was none); `None`: there is no such node, the rooms stay and
    /// their members are told the node drains.
    Move { to: Option<NodeInfo> },
    /// The directory answered again after failing (`true`), or stopped answering (`false`).
    Reachable(bool),
    /// The cluster-wide room list changed ([`Node::known`]).
    Listed,
}

/// Why a question was asked.
#[derive(Debug)]
enum Asked {
    Number,
    /// A heartbeat; `true` for the one that says the node drains (its answer, the freshest
    /// list of nodes, decides where the rooms go).
    Heartbeat(bool),
    Rooms,
    /// A join, where placement would send the room if it is new, this node's load then,
    /// and whether it was asked during a recovery (`Node::recovering_until`: not to create
    /// the room; asked again after it if missing).
    Join(Join, Option<SocketAddr>, NodeLoad, bool),
    /// Who holds a room the directory says is no longer ours.
    Lost(String),
    Ticket {
        key: usize,
        session: u32,
    },
    /// A room handed to another node (this one drains): its members go there once the
    /// directory says so.
    Hand {
        room: String,
        to: SocketAddr,
    },
    /// Release, Leave: nothing waits on the answer.
    Told,
}

pub(super) struct Node {
    config: ClusterConfig,
    number: Option<u16>,
    next_query: u64,
    out: VecDeque<(QueryId, DirectoryRequest)>,
    /// Questions out, with when they count as failed.
    asked: BTreeMap<QueryId, (Asked, Instant)>,
    /// Every registered node, as the last heartbeat's answer listed them.
    nodes: Vec<NodeInfo>,
    /// The cluster-wide room list, as last answered.
    listed: Vec<ListedRoom>,
    /// When the next heartbeat is due.
    beat_at: Instant,
    /// The directory answered the last question (or nothing was asked yet).
    reachable: bool,
    /// After the directory answers again following an outage, until when a room it says
    /// nobody holds may still be held by a node that has not claimed it again (claims
    /// expire in a long outage, and a directory that lost its data has none): two
    /// heartbeats, by which every node that reaches it has claimed its rooms again.
    recovering_until: Option<Instant>,
    /// Joins for rooms the directory said nobody holds during the recovery, with this
    /// node's load then: asked again when it ends.
    deferred: Vec<(Join, NodeLoad)>,
    cpu_percent: u16,
    /// Bytes relayed (the server's count) and when, at the last heartbeat.
    relayed: (u64, Instant),
    draining: bool,
    /// The draining heartbeat was sent ([`Verdict::Move`] follows its answer).
    moved: bool,
    verdicts: VecDeque<Verdict>,
}

impl Node {
    /// A node that asks for its number and registers at once.
    pub(super) fn new(config: ClusterConfig, now: Instant) -> Self {
        let mut n = Self {
            config,
            number: None,
            next_query: 1,
            out: VecDeque::new(),
            asked: BTreeMap::new(),
            nodes: Vec::new(),
            listed: Vec::new(),
            beat_at: now,
            reachable: true,
            recovering_until: None,
            deferred: Vec::new(),
            cpu_percent: 0,
            relayed: (0, now),
            draining: false,
            moved: false,
            verdicts: VecDeque::new(),
        };
        let node = n.config.node_id.clone();
        n.ask(now, Asked::Number, DirectoryRequest::Number { node });
        n
    }

    /// Its number, once the directory gave it.
    pub(super) fn number(&self) -> Option<u16> {
        self.number
    }

    /// Every registered node as last heard, and the cluster-wide room list.
    pub(super) fn known(&self) -> (&[NodeInfo], &[ListedRoom]) {
        (&self.nodes, &self.listed)
    }

    pub(super) fn set_cpu(&mut self, percent: u16) {
        self.cpu_percent = percent;
    }

    pub(super) fn is_reachable(&self) -> bool {
        self.reachable
    }

    fn ask(&mut self, now: Instant, why: Asked, request: DirectoryRequest) {
        if self.asked.len() >= MAX_ASKED {
            self.settle(now, why, Err(DirectoryError::Unavailable));
            return;
        }
        let id = QueryId(self.next_query);
        self.next_query += 1;
        let deadline = now + self.config.answer_timeout;
        self.asked.insert(id, (why, deadline));
        self.out.push_back((id, request));
    }

    /// The next question for the directory.
    pub(super) fn poll_request(&mut self) -> Option<(QueryId, DirectoryRequest)> {
        self.out.pop_front()
    }

    /// What the server must carry out next.
    pub(super) fn poll_verdict(&mut self) -> Option<Verdict> {
        self.verdicts.pop_front()
    }

    /// The directory's answer to question `id` (an unknown or late one is ignored).
    pub(super) fn handle_answer(
        &mut self,
        now: Instant,
        id: QueryId,
        answer: Result<DirectoryAnswer, DirectoryError>,
    ) {
        if let Some((why, _)) = self.asked.remove(&id) {
            self.settle(now, why, answer);
        }
    }

    /// Whether a heartbeat is due at `now` ([`Node::beat`] sends it).
    pub(super) fn beat_due(&self, now: Instant) -> bool {
        now >= self.beat_at
    }

    /// Heartbeat now: this node with `load` (`relayed_bytes`: the server's total so far,
    /// turned into a rate here) and its `rooms`; the cluster-wide room list is asked for
    /// with it. Questions unanswered past their time fail first.
    pub(super) fn beat(
        &mut self,
        now: Instant,
        mut load: NodeLoad,
        relayed_bytes: u64,
        rooms: Vec<ListedRoom>,
    ) {
        self.beat_at = now + self.config.heartbeat;
        let (before, at) = self.relayed;
        let secs = now.saturating_duration_since(at).as_secs_f64();
        if secs > 0.0 {
            load.relayed_bytes_per_sec =
                (relayed_bytes.saturating_sub(before) as f64 / secs) as u64;
        }
        self.relayed = (relayed_bytes, now);
        load.cpu_percent = self.cpu_percent;
        let node = self.info(load);
        if self.number.is_none() && !self.asked.values().any(|(a, _)| matches!(a, Asked::Number)) {
            let id = self.config.node_id.clone();
            self.ask(now, Asked::Number, DirectoryRequest::Number { node: id });
        }
        let request = DirectoryRequest::Heartbeat {
            node,
            rooms,
            ttl: self.config.node_ttl,
            room_ttl: self.config.room_ttl,
        };
        self.ask(now, Asked::Heartbeat(self.draining && !self.moved), request);
        self.moved |= self.draining;
        self.ask(now, Asked::Rooms, DirectoryRequest::Rooms);
    }

    fn info(&self, load: NodeLoad) -> NodeInfo {
        NodeInfo {
            id: self.config.node_id.clone(),
            region: self.config.region.clone(),
            udp: self.config.advertise,
            tcp: self.config.advertise_tcp,
            load,
            draining: self.draining,
        }
    }

    /// Questions past their time fail; at the end of a recovery the joins it held back are
    /// asked again.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if self.recovering_until.is_some_and(|t| now >= t) {
            self.recovering_until = None;
            for (join, load) in std::mem::take(&mut self.deferred) {
                self.ask_join(now, join, load);
            }
        }
        let late: Vec<QueryId> = (self.asked.iter())
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some((why, _)) = self.asked.remove(&id) {
                self.settle(now, why, Err(DirectoryError::Unavailable));
            }
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Timeout> {
        let answer = self.asked.values().map(|(_, d)| *d).min();
        Timeout::min([
            Timeout::at(Some(self.beat_at), "cluster heartbeat"),
            Timeout::at(answer, "cluster directory answer"),
            Timeout::at(self.recovering_until, "cluster directory recovery"),
        ])
    }

    /// A join for a room this node does not have. `load` is this node's now (for placement).
    pub(super) fn ask_join(&mut self, now: Instant, join: Join, load: NodeLoad) {
        let create = join.flags & (JOIN_CREATE | JOIN_MUST_CREATE) != 0;
        // Placement: a new room goes to the least-loaded active node of this region, unless
        // the client was sent here already. The claim asks to create only if the room is to
        // be here; if it is missing, the client goes to `elsewhere`.
        let elsewhere = if join.flags & JOIN_REDIRECTED != 0 || !create {
            None
        } else {
            self.placement(load).map(|n| n.udp)
        };
        // (While the directory does not answer, the answer may be the first after it came
        // back: the recovery has begun by then.)
        let recovering = !self.reachable || self.recovering_until.is_some_and(|t| now < t);
        let request = DirectoryRequest::Claim {
            room: join.name.clone(),
            node: self.config.node_id.clone(),
            create: create && elsewhere.is_none() && !recovering,
            ttl: self.config.room_ttl,
        };
        self.ask(now, Asked::Join(join, elsewhere, load, recovering), request);
    }

    /// Where a new room should go instead of here: the least-loaded active node of this
    /// node's region if it is less loaded than this one (`load`, not counting the client
    /// asking, who would move), else `None` (here). Load compares rooms, then clients.
    fn placement(&self, load: NodeLoad) -> Option<&NodeInfo> {
        if self.draining {
            return self.best_other();
        }
        let mine = NodeLoad {
            clients: load.clients.saturating_sub(1),
            ..load
        }
        .score();
        let best = (self.nodes.iter())
            .filter(|n| n.id != self.config.node_id && !n.draining)
            .filter(|n| n.region == self.config.region)
            .min_by_key(|n| (n.load.score(), n.id.clone()))?;
        (best.load.score() < mine).then_some(best)
    }

    /// The least-loaded active node other than this one (this region first), for rooms that
    /// move away when it drains.
    pub(super) fn best_other(&self) -> Option<&NodeInfo> {
        let others = || (self.nodes.iter()).filter(|n| n.id != self.config.node_id && !n.draining);
        let key = |n: &&NodeInfo| (n.load.score(), n.id.clone());
        (others()
            .filter(|n| n.region == self.config.region)
            .min_by_key(key))
        .or_else(|| others().min_by_key(key))
    }

    /// Half-open session `key` (id `session`) presented ticket `id`, good for `ttl` more.
    pub(super) fn ask_ticket(
        &mut self,
        now: Instant,
        key: usize,
        session: u32,
        id: u64,
        ttl: Duration,
    ) {
        let request = DirectoryRequest::TakeTicket { id, ttl };
        self.ask(now, Asked::Ticket { key, session }, request);
    }

    /// Room `room` is gone from this node.
    pub(super) fn release(&mut self, now: Instant, room: String) {
        let node = self.config.node_id.clone();
        self.ask(now, Asked::Told, DirectoryRequest::Release { room, node });
    }

    /// The node drains: it says so at once (a heartbeat with `load`), and from now on places
    /// no room here. That heartbeat's answer, the freshest list of nodes, decides where its
    /// rooms go ([`Verdict::Move`]; a list from an earlier heartbeat may predate the nodes
    /// that started since). Draining again does nothing.
    pub(super) fn drain(
        &mut self,
        now: Instant,
        load: NodeLoad,
        relayed: u64,
        rooms: Vec<ListedRoom>,
    ) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.beat(now, load, relayed, rooms);
    }

    /// Room `room` moves to node `to` (this node drains).
    pub(super) fn hand(&mut self, now: Instant, room: String, to: &NodeInfo) {
        let request = DirectoryRequest::Hand {
            room: room.clone(),
            from: self.config.node_id.clone(),
            to: to.id.clone(),
            ttl: self.config.room_ttl,
        };
        self.ask(now, Asked::Hand { room, to: to.udp }, request);
    }

    /// The node leaves the cluster (it exits).
    pub(super) fn leave(&mut self, now: Instant) {
        let node = self.config.node_id.clone();
        self.ask(now, Asked::Told, DirectoryRequest::Leave { node });
    }

    /// What `answer` to a question asked for `why` decides.
    fn settle(
        &mut self,
        now: Instant,
        why: Asked,
        answer: Result<DirectoryAnswer, DirectoryError>,
    ) {
        let ok = answer.is_ok();
        if ok != self.reachable {
            self.reachable = ok;
            self.verdicts.push_back(Verdict::Reachable(ok));
            if ok {
                self.recovering_until = Some(now + self.config.heartbeat * 2);
            }
        }
        match (why, answer) {
            (Asked::Number, Ok(DirectoryAnswer::Number(n))) if n != 0 && self.number.is_none() => {
                self.number = Some(n);
                self.verdicts.push_back(Verdict::Numbered(n));
            }
            (Asked::Heartbeat(drain), Ok(DirectoryAnswer::Nodes { nodes, lost })) => {
                self.nodes = nodes;
                if drain {
                    let to = self.best_other().cloned();
                    self.verdicts.push_back(Verdict::Move { to });
                }
                // Who holds them now: a lookup each.
                for room in lost {
                    let request = DirectoryRequest::Claim {
                        room: room.clone(),
                        node: self.config.node_id.clone(),
                        create: false,
                        ttl: self.config.room_ttl,
                    };
                    self.ask(now, Asked::Lost(room), request);
                }
            }
            // Handed over: only now are the members sent (a member reaching `to` before the
            // hand would find the room still ours and be sent back).
            (Asked::Hand { room, to }, Ok(_)) => {
                self.verdicts.push_back(Verdict::Lost { room, to })
            }
            (Asked::Hand { room, .. }, Err(_)) => {
                self.verdicts.push_back(Verdict::Stranded { room })
            }
            (Asked::Lost(room), Ok(DirectoryAnswer::Claim(Claim::Theirs(owner)))) => {
                let to = owner.udp;
                self.verdicts.push_back(Verdict::Lost { room, to });
            }
            // No answer to the draining heartbeat: the last list heard decides.
            (Asked::Heartbeat(true), _) => {
                let to = self.best_other().cloned();
                self.verdicts.push_back(Verdict::Move { to });
            }
            (Asked::Rooms, Ok(DirectoryAnswer::Rooms(rooms))) if rooms != self.listed => {
                self.listed = rooms;
                self.verdicts.push_back(Verdict::Listed);
            }
            (Asked::Join(join, elsewhere, load, held), answer) => {
                self.settle_join(now, join, elsewhere, (load, held), answer)
            }
            (Asked::Ticket { key, session }, answer) => {
                let first = matches!(answer, Ok(DirectoryAnswer::Ticket(true)));
                self.verdicts.push_back(Verdict::Ticket {
                    key,
                    session,
                    first,
                });
            }
            // Failures of the periodic questions: asked again at the next heartbeat.
            _ => {}
        }
    }

    fn settle_join(
        &mut self,
        now: Instant,
        join: Join,
        elsewhere: Option<SocketAddr>,
        (load, held): (NodeLoad, bool),
        answer: Result<DirectoryAnswer, DirectoryError>,
    ) {
        let host = join.host;
        let create = join.flags & (JOIN_CREATE | JOIN_MUST_CREATE) != 0;
        let recovering = self.recovering_until.is_some_and(|t| now < t);
        let verdict = match answer {
            // Just after an outage the room may live on a node that has not claimed it again
            // yet: asked again when the recovery ends, rather than created a second time
            // (or refused as missing).
            Ok(DirectoryAnswer::Claim(Claim::Missing)) if held || recovering => {
                if recovering && self.deferred.len() < MAX_ASKED {
                    self.deferred.push((join, load));
                } else if !recovering {
                    self.ask_join(now, join, load);
                } else {
                    self.verdicts.push_back(Verdict::Fail {
                        host,
                        error: RoomError::DirectoryUnavailable,
                    });
                }
                return;
            }
            Ok(DirectoryAnswer::Claim(Claim::Ours)) => Verdict::Here(join),
            Ok(DirectoryAnswer::Claim(Claim::Theirs(owner))) => {
                if join.flags & JOIN_MUST_CREATE != 0 {
                    Verdict::Fail {
                        host,
                        error: RoomError::AlreadyExists,
                    }
                } else {
                    Verdict::Redirect {
                        host,
                        to: owner.udp,
                        room: join.name,
                    }
                }
            }
            // A new room placement sends elsewhere (the claim did not ask to create it).
            Ok(DirectoryAnswer::Claim(Claim::Missing)) if create => match elsewhere {
                Some(to) => Verdict::Redirect {
                    host,
                    to,
                    room: join.name,
                },
                // A directory that does not claim when asked to is not one to trust.
                None => Verdict::Fail {
                    host,
                    error: RoomError::DirectoryUnavailable,
                },
            },
            Ok(DirectoryAnswer::Claim(Claim::Missing)) => Verdict::Fail {
                host,
                error: RoomError::NotFound,
            },
            Ok(_) | Err(_) => Verdict::Fail {
                host,
                error: RoomError::DirectoryUnavailable,
            },
        };
        self.verdicts.push_back(verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemoryDirectory;

    fn config(id: &str) -> ClusterConfig {
        ClusterConfig::new(id, "eu", SocketAddr::from(([192, 0, 2, 1], 7000)))
    }

    fn join(host: u64, name: &str, flags: u8) -> Join {
        Join {
            host: HostId(host),
            flags,
            max_members: 0,
            name: name.into(),
            password: String::new(),
        }
    }

    fn info(id: &str, rooms: u32, clients: u32, draining: bool) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            region: "eu".into(),
            udp: SocketAddr::from(([192, 0, 2, 9], 7000 + rooms as u16)),
            tcp: None,
            load: NodeLoad {
                clients,
                rooms,
                ..NodeLoad::default()
            },
            draining,
        }
    }

    /// Answers every question from `d`.
    fn serve(node: &mut Node, d: &mut MemoryDirectory, now: Instant) {
        while let Some((id, request)) = node.poll_request() {
            let answer = d.answer(now, &request);
            node.handle_answer(now, id, answer);
        }
    }

    /// A node with `config`, registered in `d` at `now` (its verdicts so far read).
    fn registered(config: ClusterConfig, d: &mut MemoryDirectory, now: Instant) -> Node {
        let mut n = Node::new(config, now);
        n.beat(now, NodeLoad::default(), 0, Vec::new());
        serve(&mut n, d, now);
        while n.poll_verdict().is_some() {}
        n
    }

    /// Where the first [`Verdict::Move`] sends the rooms (`None`: there was none).
    fn moved(node: &mut Node) -> Option<Option<String>> {
        std::iter::from_fn(|| node.poll_verdict()).find_map(|v| match v {
            Verdict::Move { to } => Some(to.map(|n| n.id)),
            _ => None,
        })
    }

    #[test]
    fn placement_picks_the_least_loaded_active_node_of_the_region_or_keeps_the_room() {
        let t0 = crate::tests::epoch();
        let mut node = Node::new(config("a"), t0);
        let mine = NodeLoad {
            clients: 3,
            rooms: 2,
            ..NodeLoad::default()
        };
        node.nodes = vec![
            info("a", 2, 3, false),
            info("b", 1, 9, false),
            info("c", 0, 0, true),
        ];
        node.nodes[2].region = "eu".into();
        let mut us = info("d", 0, 0, false);
        us.region = "us".into();
        node.nodes.push(us);
        // b: fewer rooms; c drains; d is another region.
        assert_eq!(node.placement(mine).map(|n| &*n.id), Some("b"));
        node.nodes[1].load.rooms = 2;
        node.nodes[1].load.clients = 2;
        // b (2 rooms, 2 clients) against us (2 rooms, 3 clients, one of them the asker): a tie.
        assert_eq!(node.placement(mine), None);
        // Draining, any other active node takes rooms, this region first.
        node.draining = true;
        assert_eq!(node.best_other().map(|n| &*n.id), Some("b"));
    }

    #[test]
    fn an_unanswered_join_fails_at_its_deadline_and_a_late_answer_is_ignored() {
        let t0 = crate::tests::epoch();
        let mut node = Node::new(config("a"), t0);
        let mut d = MemoryDirectory::new();
        serve(&mut node, &mut d, t0);
        assert_eq!(node.poll_verdict(), Some(Verdict::Numbered(1)));
        node.ask_join(t0, join(7, "r", JOIN_CREATE), NodeLoad::default());
        let (id, request) = node.poll_request().unwrap();
        let deadline = t0 + Duration::from_secs(2);
        node.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(node.poll_verdict(), None, "not yet");
        node.handle_timeout(deadline);
        assert_eq!(node.poll_verdict(), Some(Verdict::Reachable(false)));
        assert_eq!(
            node.poll_verdict(),
            Some(Verdict::Fail {
                host: HostId(7),
                error: RoomError::DirectoryUnavailable
            })
        );
        let late = d.answer(deadline, &request);
        node.handle_answer(deadline, id, late);
        assert_eq!(node.poll_verdict(), None, "late: ignored");
    }

    #[test]
    fn claims_decide_here_elsewhere_or_fail_and_must_create_refuses_a_room_elsewhere() {
        let t0 = crate::tests::epoch();
        let mut d = MemoryDirectory::new();
        let mut a = registered(config("a"), &mut d, t0);
        let mut b = registered(config("b"), &mut d, t0);
        a.ask_join(t0, join(1, "r", JOIN_CREATE), NodeLoad::default());
        serve(&mut a, &mut d, t0);
        assert_eq!(
            a.poll_verdict(),
            Some(Verdict::Here(join(1, "r", JOIN_CREATE)))
        );
        b.ask_join(t0, join(2, "r", 0), NodeLoad::default());
        b.ask_join(t0, join(3, "r", JOIN_MUST_CREATE), NodeLoad::default());
        b.ask_join(t0, join(4, "nope", 0), NodeLoad::default());
        serve(&mut b, &mut d, t0);
        let to = config("a").advertise;
        assert_eq!(
            b.poll_verdict(),
            Some(Verdict::Redirect {
                host: HostId(2),
                to,
                room: "r".into()
            })
        );
        assert_eq!(
            b.poll_verdict(),
            Some(Verdict::Fail {
                host: HostId(3),
                error: RoomError::AlreadyExists
            })
        );
        assert_eq!(
            b.poll_verdict(),
            Some(Verdict::Fail {
                host: HostId(4),
                error: RoomError::NotFound
            })
        );
    }

    #[test]
    fn a_drain_moves_rooms_to_a_node_that_registered_after_the_last_heartbeat() {
        let t0 = crate::tests::epoch();
        let mut d = MemoryDirectory::new();
        let mut a = registered(config("a"), &mut d, t0);
        assert_eq!(a.known().0.len(), 1, "only a, so far");
        // b registers after a's heartbeat; a drains before its next one.
        let t1 = t0 + Duration::from_millis(300);
        let b = ClusterConfig::new("b", "eu", SocketAddr::from(([192, 0, 2, 2], 7000)));
        registered(b, &mut d, t1);
        let t2 = t1 + Duration::from_millis(300);
        a.drain(t2, NodeLoad::default(), 0, Vec::new());
        assert_eq!(
            a.poll_verdict(),
            None,
            "no move before the directory answers"
        );
        serve(&mut a, &mut d, t2);
        assert_eq!(
            moved(&mut a),
            Some(Some("b".into())),
            "b, heard in the answer"
        );
        a.drain(t2, NodeLoad::default(), 0, Vec::new());
        assert_eq!(a.poll_request(), None, "draining again asks nothing");
    }

    #[test]
    fn a_drain_the_directory_does_not_answer_moves_rooms_by_the_last_list() {
        let t0 = crate::tests::epoch();
        let mut d = MemoryDirectory::new();
        registered(config("b"), &mut d, t0);
        let mut a = registered(config("a"), &mut d, t0);
        a.drain(t0, NodeLoad::default(), 0, Vec::new());
        while a.poll_request().is_some() {}
        a.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(moved(&mut a), Some(Some("b".into())));
        // With no other node known, the rooms have nowhere to go.
        let mut alone = Node::new(config("c"), t0);
        alone.drain(t0, NodeLoad::default(), 0, Vec::new());
        alone.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(moved(&mut alone), Some(None));
    }

    #[test]
    fn after_an_outage_a_room_nobody_holds_is_asked_for_again_once_every_node_claimed_again() {
        // Once, just after a directory that lost its data came back, a join claimed a room
        // that another node held but had not claimed again yet: a second home (cluster
        // chaos seed 611119451).
        let t0 = crate::tests::epoch();
        let mut d = MemoryDirectory::new();
        let mut a = registered(config("a"), &mut d, t0);
        let b = ClusterConfig::new("b", "eu", SocketAddr::from(([192, 0, 2, 2], 7000)));
        let mut b = registered(b, &mut d, t0);
        // The directory goes away (a's heartbeat fails) and comes back empty.
        let t1 = t0 + Duration::from_secs(1);
        a.beat(t1, NodeLoad::default(), 0, Vec::new());
        while a.poll_request().is_some() {}
        let t3 = t1 + Duration::from_secs(2);
        a.handle_timeout(t3);
        assert_eq!(a.poll_verdict(), Some(Verdict::Reachable(false)));
        d.wipe();
        // A join asked while the directory does not answer, answered as it comes back: the
        // recovery has begun, "s" is not created yet either.
        a.ask_join(t3, join(8, "s", JOIN_CREATE), NodeLoad::default());
        a.beat(t3, NodeLoad::default(), 0, Vec::new());
        serve(&mut a, &mut d, t3);
        assert_eq!(a.poll_verdict(), Some(Verdict::Reachable(true)));
        while let Some(v) = a.poll_verdict() {
            assert!(
                !matches!(v, Verdict::Here(_) | Verdict::Fail { .. }),
                "{v:?}"
            );
        }
        // A join for "r" while b, which holds it, has not heartbeated yet: held back.
        a.ask_join(t3, join(9, "r", JOIN_CREATE), NodeLoad::default());
        serve(&mut a, &mut d, t3);
        assert_eq!(a.poll_verdict(), None, "neither created nor refused");
        assert_eq!(
            a.poll_timeout().map(|t| t.at),
            Some(t3 + Duration::from_secs(2)).min(Some(a.beat_at))
        );
        // b claims its room again with its next heartbeat.
        let t4 = t3 + Duration::from_millis(500);
        let r = ListedRoom {
            name: "r".into(),
            members: 2,
            max_members: 8,
            has_password: false,
            relay_only: false,
        };
        b.beat(t4, NodeLoad::default(), 0, vec![r]);
        serve(&mut b, &mut d, t4);
        // At the end of the recovery the join is asked again, and goes to b.
        let t5 = t3 + Duration::from_secs(2);
        a.handle_timeout(t5 - Duration::from_millis(1));
        assert_eq!(a.poll_request(), None);
        a.handle_timeout(t5);
        serve(&mut a, &mut d, t5);
        assert_eq!(
            a.poll_verdict(),
            Some(Verdict::Here(join(8, "s", JOIN_CREATE))),
            "nobody claimed s again: created now"
        );
        assert_eq!(
            a.poll_verdict(),
            Some(Verdict::Redirect {
                host: HostId(9),
                to: SocketAddr::from(([192, 0, 2, 2], 7000)),
                room: "r".into()
            })
        );
    }

    #[test]
    fn questions_out_are_bounded() {
        let t0 = crate::tests::epoch();
        let mut node = Node::new(config("a"), t0);
        for i in 0..MAX_ASKED as u64 + 10 {
            node.ask_join(t0, join(i, "r", 0), NodeLoad::default());
        }
        assert_eq!(node.asked.len(), MAX_ASKED);
        let failed = std::iter::from_fn(|| node.poll_verdict())
            .filter(|v| matches!(v, Verdict::Fail { .. }))
            .count();
        assert_eq!(failed, 11, "the number question took one place");
    }
}
