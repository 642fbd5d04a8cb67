//! P2P groups and client pairs.
//!
//! A pair of clients shares one P2P connection while they share at least one group: the pair
//! is created (fresh random key, fresh pair id) when they come to share their first group and
//! torn down when they share none. Group and pair changes reach clients on their reliable
//! control stream, pair keys always before the `MemberJoined` that makes them usable.
//!
//! [`Groups`] decides, and queues what the members must hear as encoded control messages
//! ([`Groups::poll_control`]) and what the application must hear as events
//! ([`Groups::poll_event`]); the server hands them on. What it needs to know about a client's
//! session (its address, RTT, whether it is offline) it asks through a [`Roster`].
//!
//! **Relay-only pairs** (IP privacy): a pair is relay-only when either member is private (it
//! said so before its session was established) or when the two share a relay-only group (a
//! room created so). Neither member of a relay-only pair ever hears anything that carries the
//! other's addresses: its `PeerAdd` names the unspecified address `0.0.0.0:0` (which makes
//! both ends stay on the relay: there is nothing to probe), and no `PeerNat` (its mapped port),
//! `PeerCandidates` (LAN addresses) or `PeerMoved` (a new public address) about the other
//! follows. Relay-only is decided when the pair forms and is sticky: a relay-only group shared
//! later makes an existing pair relay-only from then on (no more address updates, though what
//! was told at its introduction cannot be taken back), and sharing a normal group too never
//! makes a relay-only pair direct.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;

use rand::RngCore;
use slab::Slab;
use smallvec::SmallVec;

use super::forward::Update;
use crate::error::GroupError;
use crate::event::{GroupId, HostId, MemberLeftReason, ServerEvent};
use crate::rng::Rng;
use crate::stats::ServerStats;
use crate::time::Duration;
use crate::wire::control::{Candidates, ControlMsg, NatInfo};

/// Longest delay the server asks one end of a new pair to wait before punching (a session
/// with a huge RTT estimate must not stall its partner's punching).
const MAX_PUNCH_DELAY: Duration = Duration::from_millis(500);
/// Groups a client is in without allocating; more spill to the heap.
const INLINE_GROUPS: usize = 4;
/// Groups two clients share without allocating (usually one).
const INLINE_SHARED: usize = 2;
/// What a relay-only pair's `PeerAdd` names instead of the peer's address: nothing to probe
/// (clients never punch towards an unspecified address), and not even the peer's address
/// family.
const HIDDEN_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// What a pair's introduction needs from a member's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Card {
    /// The address peers punch to: the client's UDP address (its path's, if none yet).
    pub(super) addr: SocketAddr,
    /// Not heard from lately (its peers were told).
    pub(super) offline: bool,
    /// Smoothed round-trip time of its session.
    pub(super) srtt: Duration,
    /// Its addresses go to no one: every pair with it is relay-only.
    pub(super) private: bool,
}

/// The sessions, as groups see them: connected clients and their cards.
pub(super) trait Roster {
    /// `host`'s card, if it is a connected client.
    fn card(&self, host: HostId) -> Option<Card>;
}

/// Groups, their members, the pairs they imply, and what each member told about itself.
#[derive(Default)]
pub(super) struct Groups {
    groups: Slab<Group>,
    /// Generation of the next group (never 0): makes `GroupId`s unique for the server's life.
    next_generation: u32,
    /// Pairs of clients that share at least one group, keyed (lower, higher).
    pairs: BTreeMap<(HostId, HostId), Pair>,
    /// Pairs whose `direct` is set.
    pairs_direct: usize,
    /// What the relay forwarders must learn about pairs (formed, charged to another group,
    /// gone), in order.
    forward: VecDeque<Update>,
    /// Next pair id: pair ids are never reused, so they double as the pair's epoch.
    next_pair_id: u32,
    /// Connected clients that are in a group or told something about themselves.
    clients: BTreeMap<HostId, Member>,
    /// Control messages for members, in order.
    out: Outbox,
    /// Events for the application.
    events: VecDeque<ServerEvent>,
}

struct Group {
    generation: u32,
    /// Members in join order.
    members: Vec<HostId>,
    /// For each member whose join is not yet acknowledged by everyone: who still owes an ack.
    pending_acks: BTreeMap<HostId, BTreeSet<HostId>>,
    /// Pairs formed through it are relay-only (see the module docs).
    relay_only: bool,
}

struct Pair {
    pair_id: u32,
    /// The groups the two share, in id order (never empty).
    shared: SmallVec<[GroupId; INLINE_SHARED]>,
    /// Its path is direct, as the latest report from either end says (`PeerPath`).
    direct: bool,
    /// A direct path was reported once already (its time was observed).
    timed: bool,
    /// Neither member hears the other's addresses (see the module docs); sticky.
    relay_only: bool,
}

impl Pair {
    /// What the forwarders must know of pair `(a, b)`: its id, and that relaying between the
    /// two is charged to the lowest numbered group they share.
    fn update(&self, a: HostId, b: HostId) -> Update {
        Update::Pair {
            pair_id: self.pair_id,
            a,
            b,
            group: self.shared[0],
        }
    }
}

/// A connected client, as groups know it.
#[derive(Default)]
struct Member {
    /// Its groups, in join order.
    groups: SmallVec<[GroupId; INLINE_GROUPS]>,
    /// Local (LAN) addresses it advertised, already filtered.
    candidates: Candidates,
    /// Its NAT's behaviour, once it reported it.
    nat: Option<NatInfo>,
}

/// Encoded control messages waiting to be handed to sessions: one buffer, reused.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    messages: VecDeque<(HostId, Range<usize>)>,
}

fn pair_key(a: HostId, b: HostId) -> (HostId, HostId) {
    (a.min(b), a.max(b))
}

fn slot(id: GroupId) -> usize {
    (id.0 & u64::from(u32::MAX)) as usize
}

impl Groups {
    /// No groups; pair ids start at `first_pair_id` (random, so that a restarted server's
    /// pair ids do not collide with its clients' surviving pairs).
    pub(super) fn new(first_pair_id: u32) -> Self {
        Self {
            next_generation: 1,
            next_pair_id: first_pair_id,
            ..Self::default()
        }
    }

    // ---- getters -----------------------------------------------------------------------

    /// Groups, in id order.
    pub(super) fn ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups
            .iter()
            .map(|(k, g)| GroupId((u64::from(g.generation) << 32) | k as u64))
    }

    /// Groups that exist.
    pub(super) fn len(&self) -> usize {
        self.groups.len()
    }

    /// Pairs that exist.
    pub(super) fn pairs(&self) -> usize {
        self.pairs.len()
    }

    /// Members of `group`, in join order.
    pub(super) fn members(&self, group: GroupId) -> Option<&[HostId]> {
        self.group(group).map(|g| &g.members[..])
    }

    /// The groups `host` is in, in join order.
    pub(super) fn client_groups(&self, host: HostId) -> &[GroupId] {
        self.clients.get(&host).map_or(&[], |m| &m.groups[..])
    }

    /// The member of pair `pair_id` a packet from `from` goes to: the other one, if `from` is
    /// in that pair.
    /// What the forwarders must know of every pair (for a new forwarder).
    pub(super) fn forward_snapshot(&self) -> impl Iterator<Item = Update> + '_ {
        self.pairs.iter().map(|(&(a, b), p)| p.update(a, b))
    }

    /// The next change the relay forwarders must learn, in order.
    pub(super) fn poll_forward_update(&mut self) -> Option<Update> {
        self.forward.pop_front()
    }

    // ---- commands ----------------------------------------------------------------------

    /// The server's `create_group`: a group with `members` (connected clients), joined in
    /// the order given; nothing is created if one is not connected.
    pub(super) fn create_with(
        &mut self,
        members: &[HostId],
        rng: &mut Rng,
        roster: &impl Roster,
    ) -> Result<GroupId, GroupError> {
        if let Some(&bad) = members.iter().find(|&&m| roster.card(m).is_none()) {
            return Err(GroupError::UnknownHost(bad));
        }
        let group = self.create();
        for &m in members {
            if !self.members(group).is_some_and(|g| g.contains(&m)) {
                self.join(group, m, rng, roster);
            }
        }
        Ok(group)
    }

    /// The server's `join_group`: connected client `host` joins `group`.
    pub(super) fn join_checked(
        &mut self,
        group: GroupId,
        host: HostId,
        rng: &mut Rng,
        roster: &impl Roster,
    ) -> Result<(), GroupError> {
        let members = self.members(group).ok_or(GroupError::UnknownGroup)?;
        if members.contains(&host) {
            return Err(GroupError::AlreadyMember);
        }
        if roster.card(host).is_none() {
            return Err(GroupError::UnknownHost(host));
        }
        self.join(group, host, rng, roster);
        Ok(())
    }

    /// A new, empty group.
    pub(super) fn create(&mut self) -> GroupId {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let key = self.groups.insert(Group {
            generation,
            members: Vec::new(),
            pending_acks: BTreeMap::new(),
            relay_only: false,
        });
        GroupId((u64::from(generation) << 32) | key as u64)
    }

    /// Makes `group` relay-only: pairs that share it never hear each other's addresses (see
    /// the module docs). Set it before anyone joins. False if there is no such group.
    pub(super) fn set_relay_only(&mut self, group: GroupId) -> bool {
        self.group_mut(group).map(|g| g.relay_only = true).is_some()
    }

    /// Whether `group` is relay-only.
    pub(super) fn is_relay_only(&self, group: GroupId) -> bool {
        self.group(group).is_some_and(|g| g.relay_only)
    }

    /// Whether the pair `a`, `b` exists and is relay-only.
    pub(super) fn pair_relay_only(&self, a: HostId, b: HostId) -> Option<bool> {
        self.pairs.get(&pair_key(a, b)).map(|p| p.relay_only)
    }

    /// Adds `host` (a connected client, not a member) to `group` and tells everyone: pair
    /// keys first (drawn from `rng`), so each `MemberJoined` finds its pair ready.
    pub(super) fn join(
        &mut self,
        group: GroupId,
        host: HostId,
        rng: &mut Rng,
        roster: &impl Roster,
    ) {
        let Some(g) = self.group_mut(group) else {
            return;
        };
        let existing = g.members.clone();
        g.members.push(host);
        let count = g.members.len() as u16;
        let mut owe: BTreeSet<HostId> = existing.iter().copied().collect();
        owe.insert(host);
        g.pending_acks.insert(host, owe);
        self.clients.entry(host).or_default().groups.push(group);
        for &e in &existing {
            self.pair_ref(host, e, group, rng, roster);
        }
        for &e in &existing {
            self.push_control(
                host,
                &ControlMsg::MemberJoined {
                    group: group.0,
                    member: e.0,
                    member_count: count,
                },
            );
        }
        let joined = ControlMsg::MemberJoined {
            group: group.0,
            member: host.0,
            member_count: count,
        };
        self.push_control(host, &joined);
        for &e in &existing {
            self.push_control(e, &joined);
        }
    }

    /// Removes `host` from `group` and tells every member, the leaver included.
    pub(super) fn leave(&mut self, group: GroupId, host: HostId, reason: MemberLeftReason) {
        let Some(g) = self.group_mut(group) else {
            return;
        };
        let Some(pos) = g.members.iter().position(|&m| m == host) else {
            return;
        };
        g.members.remove(pos);
        g.pending_acks.remove(&host);
        let remaining = g.members.clone();
        let mut completed = Vec::new();
        for (&member, owe) in g.pending_acks.iter_mut() {
            if owe.remove(&host) && owe.is_empty() {
                completed.push(member);
            }
        }
        for m in &completed {
            g.pending_acks.remove(m);
        }
        if let Some(c) = self.clients.get_mut(&host) {
            c.groups.retain(|x| *x != group);
        }
        let left = ControlMsg::MemberLeft {
            group: group.0,
            member: host.0,
            reason: reason.code(),
        };
        for &e in &remaining {
            self.push_control(e, &left);
        }
        self.push_control(host, &left);
        for &e in &remaining {
            self.pair_unref(host, e, group);
        }
        for member in completed {
            self.events
                .push_back(ServerEvent::GroupJoinAckComplete { group, member });
        }
    }

    /// Destroys `group`: members get `GroupDestroyed`, pairs that shared only it are torn
    /// down. False if there is no such group.
    pub(super) fn destroy(&mut self, group: GroupId) -> bool {
        if self.group(group).is_none() {
            return false;
        }
        let g = self.groups.remove(slot(group));
        for (i, &m) in g.members.iter().enumerate() {
            if let Some(c) = self.clients.get_mut(&m) {
                c.groups.retain(|x| *x != group);
            }
            self.push_control(m, &ControlMsg::GroupDestroyed { group: group.0 });
            for &other in &g.members[i + 1..] {
                self.pair_unref(m, other, group);
            }
        }
        true
    }

    /// `host`'s session ended: forgets what it told, and returns the groups it is still in
    /// (for the caller to take it out of, one by one, as for any leave).
    pub(super) fn client_ended(&mut self, host: HostId) -> SmallVec<[GroupId; INLINE_GROUPS]> {
        self.clients
            .remove(&host)
            .map(|c| c.groups)
            .unwrap_or_default()
    }

    // ---- inputs from clients -----------------------------------------------------------

    /// A client acknowledged that `member` is in `group`.
    pub(super) fn handle_member_ack(&mut self, group: GroupId, from: HostId, member: HostId) {
        let Some(g) = self.group_mut(group) else {
            return;
        };
        let Some(owe) = g.pending_acks.get_mut(&member) else {
            return;
        };
        if owe.remove(&from) && owe.is_empty() {
            g.pending_acks.remove(&member);
            self.events
                .push_back(ServerEvent::GroupJoinAckComplete { group, member });
        }
    }

    /// A client advertised its local addresses: keep the plausible ones (never loopback,
    /// multicast, unspecified or port 0: a peer must not be steered into probing those) and
    /// pass them to everyone it shares a group with.
    pub(super) fn handle_candidates(
        &mut self,
        from: HostId,
        addrs: &Candidates,
        stats: &mut ServerStats,
    ) {
        let good: SmallVec<[SocketAddr; 4]> = addrs
            .iter()
            .filter(|a| {
                let ip = a.ip();
                a.port() != 0 && !ip.is_loopback() && !ip.is_multicast() && !ip.is_unspecified()
            })
            .collect();
        if good.len() < addrs.iter().count() {
            stats.dropped.bad_candidates += 1;
        }
        let candidates = Candidates::new(&good);
        self.clients.entry(from).or_default().candidates = candidates;
        for p in self.address_partners(from) {
            self.push_control(
                p,
                &ControlMsg::PeerCandidates {
                    peer: from.0,
                    addrs: candidates,
                },
            );
        }
    }

    /// A client reported its NAT's behaviour (from discovery): keep it and pass it to everyone
    /// it shares a group with, who use it to choose port prediction or birthday probing.
    /// `from` reports its path to `peer` changed (direct or not), `after_ms` since the pair
    /// was introduced: operators' figures (pairs direct now, time to a direct path). A report
    /// about a client it shares no pair with is dropped and counted.
    pub(super) fn handle_path_report(
        &mut self,
        from: HostId,
        peer: HostId,
        direct: bool,
        after_ms: u32,
        stats: &mut ServerStats,
    ) {
        let Some(p) = self.pairs.get_mut(&pair_key(from, peer)) else {
            stats.dropped.unexpected += 1;
            return;
        };
        if p.direct != direct {
            p.direct = direct;
            if direct {
                self.pairs_direct += 1;
            } else {
                self.pairs_direct -= 1;
            }
        }
        // The first direct path of the pair, timed by the end that validated it first (a
        // path carried over from another server session comes untimed: u32::MAX).
        if direct && !p.timed && after_ms != u32::MAX {
            p.timed = true;
            (stats.histograms.time_to_direct_ms).observe(u64::from(after_ms));
        }
    }

    /// Pairs whose latest path report says direct.
    pub(super) fn pairs_direct(&self) -> usize {
        self.pairs_direct
    }

    pub(super) fn handle_nat_info(&mut self, from: HostId, info: NatInfo) {
        self.clients.entry(from).or_default().nat = Some(info);
        for p in self.address_partners(from) {
            self.push_control(p, &ControlMsg::PeerNat { peer: from.0, info });
        }
    }

    // ---- inputs from sessions ----------------------------------------------------------

    /// A client's UDP address changed (its NAT rebound, it roamed): its peers learn the new
    /// reflexive address and punch to it again (not those of relay-only pairs).
    pub(super) fn client_moved(&mut self, host: HostId, addr: SocketAddr) {
        for p in self.address_partners(host) {
            self.push_control(p, &ControlMsg::PeerMoved { peer: host.0, addr });
        }
    }

    /// A client went offline (`true`) or came back: everyone it shares a group with hears.
    pub(super) fn client_offline(&mut self, host: HostId, offline: bool) {
        let msg = if offline {
            ControlMsg::PeerOffline { peer: host.0 }
        } else {
            ControlMsg::PeerOnline { peer: host.0 }
        };
        for p in self.partners(host) {
            self.push_control(p, &msg);
        }
    }

    // ---- outputs -----------------------------------------------------------------------

    /// Queues control message `msg` for `to` (dropped if it does not encode into one
    /// datagram).
    pub(super) fn push_control(&mut self, to: HostId, msg: &ControlMsg<'_>) {
        let out = &mut self.out;
        let start = out.bytes.len();
        out.bytes.resize(start + crate::BASE_DATAGRAM_SIZE, 0);
        match msg.encode(&mut out.bytes[start..]) {
            Ok(n) => {
                out.bytes.truncate(start + n);
                out.messages.push_back((to, start..start + n));
            }
            Err(_) => out.bytes.truncate(start),
        }
    }

    /// The next control message to send, encoded, and its recipient.
    pub(super) fn poll_control(&mut self) -> Option<(HostId, &[u8])> {
        let Some((to, range)) = self.out.messages.pop_front() else {
            self.out.bytes.clear();
            return None;
        };
        Some((to, &self.out.bytes[range]))
    }

    /// The next event for the application.
    pub(super) fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    // ---- internals ---------------------------------------------------------------------

    fn group(&self, id: GroupId) -> Option<&Group> {
        self.groups
            .get(slot(id))
            .filter(|g| u64::from(g.generation) == id.0 >> 32)
    }

    fn group_mut(&mut self, id: GroupId) -> Option<&mut Group> {
        self.groups
            .get_mut(slot(id))
            .filter(|g| u64::from(g.generation) == id.0 >> 32)
    }

    /// `a` and `b` share `group` too; creates the pair (and hands both the key) on the first.
    fn pair_ref(
        &mut self,
        a: HostId,
        b: HostId,
        group: GroupId,
        rng: &mut Rng,
        roster: &impl Roster,
    ) {
        let relay_only_group = self.is_relay_only(group);
        if let Some(p) = self.pairs.get_mut(&pair_key(a, b)) {
            // Sticky: from now on neither hears the other's addresses change.
            p.relay_only |= relay_only_group;
            if let Err(i) = p.shared.binary_search(&group) {
                p.shared.insert(i, group);
                if i == 0 {
                    let (lo, hi) = pair_key(a, b);
                    self.forward.push_back(p.update(lo, hi));
                }
            }
            return;
        }
        let pair_id = self.next_pair_id;
        self.next_pair_id = self.next_pair_id.wrapping_add(1).max(1);
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let mut shared = SmallVec::new();
        shared.push(group);
        let private = |h: HostId| roster.card(h).is_some_and(|c| c.private);
        let relay_only = relay_only_group || private(a) || private(b);
        let pair = Pair {
            pair_id,
            shared,
            relay_only,
            direct: false,
            timed: false,
        };
        let (lo, hi) = pair_key(a, b);
        self.forward.push_back(pair.update(lo, hi));
        self.pairs.insert((lo, hi), pair);
        // Coordinated punching: each end starts probing when the other's PeerAdd has arrived
        // too. One-way times are half the smoothed RTTs of the two sessions.
        let half_rtt = |h: HostId| roster.card(h).map_or(Duration::ZERO, |c| c.srtt / 2);
        let (owd_a, owd_b) = (half_rtt(a), half_rtt(b));
        let latest = owd_a.max(owd_b);
        for (to, peer) in [(a, b), (b, a)] {
            let Some(card) = roster.card(peer) else {
                continue;
            };
            let (candidates, nat) = match self.clients.get(&peer) {
                Some(c) if !relay_only => (c.candidates, c.nat),
                _ => (Candidates::default(), None),
            };
            let addr = if relay_only { HIDDEN_ADDR } else { card.addr };
            let own = if to == a { owd_a } else { owd_b };
            let delay = (latest - own).min(MAX_PUNCH_DELAY);
            self.push_control(
                to,
                &ControlMsg::PeerAdd {
                    peer: peer.0,
                    pair_id,
                    key,
                    addr,
                    delay_ms: u16::try_from(delay.as_millis()).unwrap_or(u16::MAX),
                },
            );
            if let Some(info) = nat {
                self.push_control(to, &ControlMsg::PeerNat { peer: peer.0, info });
            }
            if candidates.iter().next().is_some() {
                self.push_control(
                    to,
                    &ControlMsg::PeerCandidates {
                        peer: peer.0,
                        addrs: candidates,
                    },
                );
            }
            if card.offline {
                self.push_control(to, &ControlMsg::PeerOffline { peer: peer.0 });
            }
        }
    }

    /// `a` and `b` no longer share `group`; tears the pair down after the last.
    fn pair_unref(&mut self, a: HostId, b: HostId, group: GroupId) {
        let k = pair_key(a, b);
        let Some(p) = self.pairs.get_mut(&k) else {
            return;
        };
        let Ok(i) = p.shared.binary_search(&group) else {
            return;
        };
        p.shared.remove(i);
        if !p.shared.is_empty() {
            if i == 0 {
                self.forward.push_back(p.update(k.0, k.1));
            }
            return;
        }
        let pair_id = p.pair_id;
        if p.direct {
            self.pairs_direct -= 1;
        }
        self.pairs.remove(&k);
        self.forward.push_back(Update::PairGone { pair_id });
        for (to, peer) in [(a, b), (b, a)] {
            self.push_control(
                to,
                &ControlMsg::PeerRemove {
                    peer: peer.0,
                    pair_id,
                },
            );
        }
    }

    /// Everyone `host` shares a group with and may hear its addresses (not through a
    /// relay-only pair).
    fn address_partners(&self, host: HostId) -> SmallVec<[HostId; 16]> {
        let mut out = self.partners(host);
        out.retain(|p| self.pair_relay_only(host, *p) == Some(false));
        out
    }

    /// Everyone `host` shares a group with.
    /// Found through its groups' member lists (a pair exists exactly while two clients share
    /// a group), so the cost is the size of its groups, not the number of pairs on the server.
    fn partners(&self, host: HostId) -> SmallVec<[HostId; 16]> {
        let mut out: SmallVec<[HostId; 16]> = SmallVec::new();
        for g in self
            .client_groups(host)
            .iter()
            .filter_map(|&g| self.group(g))
        {
            for &m in &g.members {
                if m != host && !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every client connected, at a fixed address, online, with a 40 ms RTT.
    struct Everyone;

    impl Roster for Everyone {
        fn card(&self, host: HostId) -> Option<Card> {
            Some(Card {
                addr: SocketAddr::from(([198, 51, 100, host.0 as u8], 4000)),
                offline: false,
                srtt: Duration::from_millis(40),
                private: false,
            })
        }
    }

    /// What the forwarders last learned of the one pair: charged to a group, or gone
    /// (`None` if nothing changed).
    fn charged(g: &mut Groups) -> Option<Option<GroupId>> {
        let mut last = None;
        while let Some(u) = g.poll_forward_update() {
            last = Some(match u {
                Update::Pair { group, .. } => Some(group),
                Update::PairGone { .. } => None,
                other => panic!("{other:?}"),
            });
        }
        last
    }

    fn drain(g: &mut Groups) -> Vec<(HostId, ControlMsg<'static>)> {
        let mut out = Vec::new();
        while let Some((to, bytes)) = g.poll_control() {
            // Leak for the test's convenience: the messages outlive the outbox's buffer.
            let bytes: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
            out.push((to, ControlMsg::decode(bytes).unwrap()));
        }
        out
    }

    #[test]
    fn a_join_hands_out_pair_keys_before_the_member_joined_that_uses_them() {
        let mut g = Groups::new(100);
        let mut rng = crate::rng::derive(&[1; 32], b"test");
        let (a, b) = (HostId(1), HostId(2));
        let group = g.create();
        g.join(group, a, &mut rng, &Everyone);
        drain(&mut g);
        g.join(group, b, &mut rng, &Everyone);
        let to_b: Vec<_> = drain(&mut g)
            .into_iter()
            .filter(|(to, _)| *to == b)
            .map(|(_, m)| m)
            .collect();
        assert!(
            matches!(
                to_b[0],
                ControlMsg::PeerAdd {
                    peer: 1,
                    pair_id: 100,
                    ..
                }
            ),
            "{to_b:?}"
        );
        assert!(matches!(
            to_b[1],
            ControlMsg::MemberJoined { member: 1, .. }
        ));
        assert_eq!(g.pairs(), 1);
        assert_eq!(charged(&mut g), Some(Some(group)));
    }

    #[test]
    fn a_pair_lives_while_its_clients_share_a_group_and_relays_charge_the_lowest() {
        let mut g = Groups::new(1);
        let mut rng = crate::rng::derive(&[1; 32], b"test");
        let (a, b) = (HostId(1), HostId(2));
        let (first, second) = (g.create(), g.create());
        for group in [second, first] {
            g.join(group, a, &mut rng, &Everyone);
            g.join(group, b, &mut rng, &Everyone);
        }
        assert_eq!(g.pairs(), 1);
        assert_eq!(
            charged(&mut g),
            Some(Some(first)),
            "the lower joined second"
        );
        g.leave(first, a, MemberLeftReason::Left);
        assert_eq!(charged(&mut g), Some(Some(second)));
        drain(&mut g);
        assert!(g.destroy(second));
        let msgs = drain(&mut g);
        assert!(
            msgs.iter()
                .any(|(to, m)| *to == a && matches!(m, ControlMsg::PeerRemove { peer: 2, .. }))
        );
        assert_eq!((g.pairs(), charged(&mut g)), (0, Some(None)));
        assert!(g.client_groups(a).is_empty());
    }

    #[test]
    fn the_join_completes_when_every_member_acknowledged_it() {
        let mut g = Groups::new(1);
        let mut rng = crate::rng::derive(&[1; 32], b"test");
        let (a, b) = (HostId(1), HostId(2));
        let group = g.create();
        g.join(group, a, &mut rng, &Everyone);
        g.handle_member_ack(group, a, a);
        assert_eq!(
            g.poll_event(),
            Some(ServerEvent::GroupJoinAckComplete { group, member: a })
        );
        g.join(group, b, &mut rng, &Everyone);
        g.handle_member_ack(group, b, b);
        assert_eq!(g.poll_event(), None, "a has not acknowledged b yet");
        g.handle_member_ack(group, a, b);
        assert_eq!(
            g.poll_event(),
            Some(ServerEvent::GroupJoinAckComplete { group, member: b })
        );
    }

    #[test]
    fn implausible_candidates_are_filtered_and_the_rest_reach_partners() {
        let mut g = Groups::new(1);
        let mut rng = crate::rng::derive(&[1; 32], b"test");
        let mut stats = ServerStats::default();
        let (a, b) = (HostId(1), HostId(2));
        let group = g.create();
        g.join(group, a, &mut rng, &Everyone);
        g.join(group, b, &mut rng, &Everyone);
        drain(&mut g);
        let lan: SocketAddr = "192.168.1.5:4000".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        g.handle_candidates(a, &Candidates::new(&[lan, loopback]), &mut stats);
        assert_eq!(stats.dropped.bad_candidates, 1);
        let msgs = drain(&mut g);
        assert_eq!(msgs.len(), 1);
        let (to, ControlMsg::PeerCandidates { peer, addrs }) = msgs[0] else {
            panic!("{msgs:?}");
        };
        assert_eq!((to, peer), (b, 1));
        assert_eq!(addrs.iter().collect::<Vec<_>>(), [lan]);
    }

    /// Like [`Everyone`], but host 1 is private.
    struct OnePrivate;

    impl Roster for OnePrivate {
        fn card(&self, host: HostId) -> Option<Card> {
            Everyone.card(host).map(|c| Card {
                private: host == HostId(1),
                ..c
            })
        }
    }

    /// Every address-bearing message in `msgs`: (to, about whom, the address or None for
    /// NAT info, which carries a mapped port).
    fn addresses(msgs: &[(HostId, ControlMsg<'static>)]) -> Vec<(HostId, u64, Option<SocketAddr>)> {
        let mut out = Vec::new();
        for &(to, m) in msgs {
            match m {
                ControlMsg::PeerAdd { peer, addr, .. } if !addr.ip().is_unspecified() => {
                    out.push((to, peer, Some(addr)));
                }
                ControlMsg::PeerAdd { addr, .. } => assert_eq!(addr.port(), 0),
                ControlMsg::PeerMoved { peer, addr } => out.push((to, peer, Some(addr))),
                ControlMsg::PeerCandidates { peer, addrs } => {
                    out.extend(addrs.iter().map(|a| (to, peer, Some(a))));
                }
                ControlMsg::PeerNat { peer, .. } => out.push((to, peer, None)),
                _ => {}
            }
        }
        out
    }

    /// Both members of every pair tell their LAN address and NAT, and move.
    fn everyone_tells(g: &mut Groups, hosts: &[HostId]) {
        let mut stats = ServerStats::default();
        for &h in hosts {
            let lan = SocketAddr::from(([192, 168, 0, h.0 as u8], 5000));
            g.handle_candidates(h, &Candidates::new(&[lan]), &mut stats);
            g.handle_nat_info(h, NatInfo::default());
            g.client_moved(h, SocketAddr::from(([203, 0, 113, h.0 as u8], 6000)));
        }
    }

    #[test]
    fn a_pair_with_a_private_member_hears_no_address_either_way_and_others_still_do() {
        let mut g = Groups::new(1);
        let mut rng = crate::rng::derive(&[1; 32], b"test");
        let (p, b, c) = (HostId(1), HostId(2), HostId(3));
        // What they told before the pairs formed, and after.
        g.clients.entry(p).or_default().nat = Some(NatInfo::default());
        let lan = SocketAddr::from(([192, 168, 0, 1], 5000));
        g.clients.entry(p).or_default().candidates = Candidates::new(&[lan]);
        let group = g.create();
        for h in [p, b, c] {
            g.join(group, h, &mut rng, &OnePrivate);
        }
        everyone_tells(&mut g, &[p, b, c]);
        let msgs = drain(&mut g);
        let seen = addresses(&msgs);
        assert!(
            seen.iter().all(|&(to, about, _)| to != p && about != p.0),
            "{seen:?}"
        );
        assert_eq!(g.pair_relay_only(p, b), Some(true));
        assert_eq!(g.pair_relay_only(b, c), Some(false));
        // The normal pair hears everything: introduction, LAN address, NAT and move, both ways.
        for (to, about) in [(b, c), (c, b)] {
            let n = seen.iter().filter(|s| (s.0, s.1) == (to, about.0)).count();
            assert_eq!(n, 4, "{to} about {about}: {seen:?}");
        }
        // The private member was introduced (a key, a pair id), with no address.
        assert!(msgs.iter().any(|(to, m)| *to == b
            && matches!(m, ControlMsg::PeerAdd { peer: 1, addr, .. } if *addr == HIDDEN_ADDR)));
    }

    #[test]
    fn a_relay_only_group_hides_addresses_and_its_pairs_stay_relay_only() {
        let mut g = Groups::new(1);
        let mut rng = crate::rng::derive(&[1; 32], b"test");
        let (a, b, c) = (HostId(1), HostId(2), HostId(3));
        let (hidden, normal) = (g.create(), g.create());
        assert!(g.set_relay_only(hidden));
        assert!(g.is_relay_only(hidden) && !g.is_relay_only(normal));
        // a and b meet in the relay-only group first, then share a normal one too.
        for group in [hidden, normal] {
            g.join(group, a, &mut rng, &Everyone);
            g.join(group, b, &mut rng, &Everyone);
        }
        everyone_tells(&mut g, &[a, b]);
        assert_eq!(addresses(&drain(&mut g)), []);
        assert_eq!(g.pair_relay_only(a, b), Some(true));
        // c meets a in the normal group first (introduced with addresses), then in the
        // relay-only one: from then on no more address updates.
        g.join(normal, c, &mut rng, &Everyone);
        let seen = addresses(&drain(&mut g));
        assert!(seen.iter().any(|s| (s.0, s.1) == (c, a.0)), "{seen:?}");
        assert!(seen.iter().any(|s| (s.0, s.1) == (c, b.0)), "{seen:?}");
        g.join(hidden, c, &mut rng, &Everyone);
        drain(&mut g);
        everyone_tells(&mut g, &[a, b, c]);
        assert_eq!(addresses(&drain(&mut g)), []);
        assert_eq!(g.pair_relay_only(a, c), Some(true));
    }

    #[test]
    fn an_ended_client_hands_back_its_groups_and_forgets_what_it_told() {
        let mut g = Groups::new(1);
        let mut rng = crate::rng::derive(&[1; 32], b"test");
        let a = HostId(1);
        let (x, y) = (g.create(), g.create());
        g.join(x, a, &mut rng, &Everyone);
        g.join(y, a, &mut rng, &Everyone);
        assert_eq!(g.client_ended(a).as_slice(), [x, y]);
        assert!(g.client_groups(a).is_empty());
        assert_eq!(
            g.members(x),
            Some(&[a][..]),
            "still a member until it leaves"
        );
    }
}
