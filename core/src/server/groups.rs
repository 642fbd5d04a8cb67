//! P2P groups, client pairs and the relay.
//!
//! A pair of clients shares one P2P connection while they share at least one group: the pair
//! is created (fresh random key, fresh pair id) when they come to share their first group and
//! torn down when they share none. Group and pair changes reach clients on their reliable
//! control stream, pair keys always before the `MemberJoined` that makes them usable.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngCore;
use smallvec::SmallVec;

use super::Server;
use crate::error::GroupError;
use crate::event::{GroupId, HostId, MemberLeftReason, ServerEvent};
use crate::ratelimit::Bucket;
use crate::time::{Duration, Instant};
use crate::wire::control::ControlMsg;
use crate::wire::sealed::{KIND_PEER, OVERHEAD};

/// Longest delay the server asks one end of a new pair to wait before punching (a session
/// with a huge RTT estimate must not stall its partner's punching).
const MAX_PUNCH_DELAY: Duration = Duration::from_millis(500);

pub(super) struct Group {
    generation: u32,
    /// Members in join order.
    pub(super) members: Vec<HostId>,
    /// For each member whose join is not yet acknowledged by everyone: who still owes an ack.
    pending_acks: BTreeMap<HostId, BTreeSet<HostId>>,
    /// Relay budget of the group.
    relay_bucket: Bucket,
    /// Set when the group is a room.
    pub(super) room: Option<super::rooms::Room>,
}

pub(super) struct Pair {
    pub(super) pair_id: u32,
    /// Groups the two share.
    shared: u32,
}

fn pair_key(a: HostId, b: HostId) -> (HostId, HostId) {
    (a.min(b), a.max(b))
}

impl Server {
    // ---- public group API --------------------------------------------------------------

    /// Creates a group with `members` (possibly none), joined in the order given.
    ///
    /// # Errors
    /// [`GroupError::UnknownHost`] if any member is not a connected client (nothing is
    /// created then).
    pub fn create_group(
        &mut self,
        now: Instant,
        members: &[HostId],
    ) -> Result<GroupId, GroupError> {
        let now = self.clock.advance(now);
        if let Some(&bad) = members.iter().find(|&&m| self.established(m).is_none()) {
            return Err(GroupError::UnknownHost(bad));
        }
        let group = self.new_group(None);
        for &m in members {
            if !self.group(group).is_some_and(|g| g.members.contains(&m)) {
                self.join_inner(now, group, m);
            }
        }
        self.settle(now);
        Ok(group)
    }

    /// Adds a connected client to a group.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`], [`GroupError::UnknownHost`] or
    /// [`GroupError::AlreadyMember`].
    pub fn join_group(
        &mut self,
        now: Instant,
        group: GroupId,
        host: HostId,
    ) -> Result<(), GroupError> {
        let now = self.clock.advance(now);
        let g = self.group(group).ok_or(GroupError::UnknownGroup)?;
        if g.members.contains(&host) {
            return Err(GroupError::AlreadyMember);
        }
        if self.established(host).is_none() {
            return Err(GroupError::UnknownHost(host));
        }
        self.join_inner(now, group, host);
        self.settle(now);
        Ok(())
    }

    /// Removes a client from a group; every member (the leaver included) is told.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`] or [`GroupError::NotMember`].
    pub fn leave_group(
        &mut self,
        now: Instant,
        group: GroupId,
        host: HostId,
    ) -> Result<(), GroupError> {
        let now = self.clock.advance(now);
        let g = self.group(group).ok_or(GroupError::UnknownGroup)?;
        if !g.members.contains(&host) {
            return Err(GroupError::NotMember);
        }
        self.leave_inner(now, group, host, MemberLeftReason::Left);
        self.settle(now);
        Ok(())
    }

    /// Destroys a group: members get `GroupDestroyed`, pairs that shared only this group are
    /// torn down.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`].
    pub fn destroy_group(&mut self, now: Instant, group: GroupId) -> Result<(), GroupError> {
        let now = self.clock.advance(now);
        if self.group(group).is_none() {
            return Err(GroupError::UnknownGroup);
        }
        self.destroy_inner(group);
        self.settle(now);
        Ok(())
    }

    /// Members of a group, in join order.
    pub fn group_members(&self, group: GroupId) -> Option<&[HostId]> {
        self.group(group).map(|g| &g.members[..])
    }

    /// Groups, in id order.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups
            .iter()
            .map(|(k, g)| GroupId((u64::from(g.generation) << 32) | k as u64))
    }

    /// Groups a connected client is in.
    pub fn client_groups(&self, host: HostId) -> Option<&[GroupId]> {
        self.established(host).map(|(_, s)| &s.groups[..])
    }

    // ---- internals ---------------------------------------------------------------------

    pub(super) fn group(&self, id: GroupId) -> Option<&Group> {
        let key = (id.0 & u64::from(u32::MAX)) as usize;
        self.groups
            .get(key)
            .filter(|g| u64::from(g.generation) == id.0 >> 32)
    }

    pub(super) fn group_mut(&mut self, id: GroupId) -> Option<&mut Group> {
        let key = (id.0 & u64::from(u32::MAX)) as usize;
        self.groups
            .get_mut(key)
            .filter(|g| u64::from(g.generation) == id.0 >> 32)
    }

    pub(super) fn new_group(&mut self, room: Option<super::rooms::Room>) -> GroupId {
        let generation = self.next_group_gen;
        self.next_group_gen = self.next_group_gen.wrapping_add(1).max(1);
        let key = self.groups.insert(Group {
            generation,
            members: Vec::new(),
            pending_acks: BTreeMap::new(),
            relay_bucket: Bucket::EMPTY,
            room,
        });
        self.stats.groups += 1;
        GroupId((u64::from(generation) << 32) | key as u64)
    }

    /// Adds `host` (connected, not a member) to `group` and tells everyone.
    pub(super) fn join_inner(&mut self, _now: Instant, group: GroupId, host: HostId) {
        let Some(g) = self.group_mut(group) else {
            return;
        };
        let existing = g.members.clone();
        g.members.push(host);
        let count = g.members.len() as u16;
        let mut owe: BTreeSet<HostId> = existing.iter().copied().collect();
        owe.insert(host);
        g.pending_acks.insert(host, owe);
        if let Some((key, _)) = self.established(host) {
            self.sessions[key].groups.push(group);
        }
        // Pair keys first, so each MemberJoined finds its pair ready.
        for &e in &existing {
            self.pair_ref(host, e);
        }
        for &e in &existing {
            self.send_control(
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
        self.send_control(host, &joined);
        for &e in &existing {
            self.send_control(e, &joined);
        }
    }

    /// Removes `host` from `group` and tells everyone still connected.
    pub(super) fn leave_inner(
        &mut self,
        _now: Instant,
        group: GroupId,
        host: HostId,
        reason: MemberLeftReason,
    ) {
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
        if let Some((key, _)) = self.established(host) {
            self.sessions[key].groups.retain(|x| *x != group);
        }
        let left = ControlMsg::MemberLeft {
            group: group.0,
            member: host.0,
            reason: reason.code(),
        };
        for &e in &remaining {
            self.send_control(e, &left);
        }
        self.send_control(host, &left);
        for &e in &remaining {
            self.pair_unref(host, e);
        }
        for member in completed {
            self.push_event(ServerEvent::GroupJoinAckComplete { group, member });
        }
        self.room_after_leave(group, host);
    }

    pub(super) fn destroy_inner(&mut self, group: GroupId) {
        let key = (group.0 & u64::from(u32::MAX)) as usize;
        if self.group(group).is_none() {
            return;
        }
        let g = self.groups.remove(key);
        self.stats.groups -= 1;
        if let Some(room) = &g.room {
            self.rooms.remove(&room.name);
        }
        for (i, &m) in g.members.iter().enumerate() {
            if let Some((k, _)) = self.established(m) {
                self.sessions[k].groups.retain(|x| *x != group);
            }
            self.send_control(m, &ControlMsg::GroupDestroyed { group: group.0 });
            for &other in &g.members[i + 1..] {
                self.pair_unref(m, other);
            }
        }
    }

    /// A client acknowledged that `member` is in `group`.
    pub(super) fn on_member_ack(&mut self, group: GroupId, from: HostId, member: HostId) {
        let Some(g) = self.group_mut(group) else {
            return;
        };
        let Some(owe) = g.pending_acks.get_mut(&member) else {
            return;
        };
        if owe.remove(&from) && owe.is_empty() {
            g.pending_acks.remove(&member);
            self.push_event(ServerEvent::GroupJoinAckComplete { group, member });
        }
    }

    /// One more shared group for `a` and `b`; creates the pair (and hands both the key) on the
    /// first.
    fn pair_ref(&mut self, a: HostId, b: HostId) {
        if let Some(p) = self.pairs.get_mut(&pair_key(a, b)) {
            p.shared += 1;
            return;
        }
        let pair_id = self.next_pair_id;
        self.next_pair_id = self.next_pair_id.wrapping_add(1).max(1);
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        self.pairs
            .insert(pair_key(a, b), Pair { pair_id, shared: 1 });
        self.stats.pairs += 1;
        // Coordinated punching: each end starts probing when the other's PeerAdd has arrived
        // too. One-way times are half the smoothed RTTs of the two sessions.
        let half_rtt = |h: HostId| {
            self.established(h)
                .map_or(Duration::ZERO, |(_, s)| s.control.srtt() / 2)
        };
        let (owd_a, owd_b) = (half_rtt(a), half_rtt(b));
        let latest = owd_a.max(owd_b);
        for (to, peer) in [(a, b), (b, a)] {
            let Some((_, s)) = self.established(peer) else {
                continue;
            };
            let (addr, candidates, nat, offline) =
                (s.udp.unwrap_or(s.addr), s.candidates, s.nat, s.offline);
            let own = if to == a { owd_a } else { owd_b };
            let delay = (latest - own).min(MAX_PUNCH_DELAY);
            self.send_control(
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
                self.send_control(to, &ControlMsg::PeerNat { peer: peer.0, info });
            }
            if candidates.iter().next().is_some() {
                self.send_control(
                    to,
                    &ControlMsg::PeerCandidates {
                        peer: peer.0,
                        addrs: candidates,
                    },
                );
            }
            if offline {
                self.send_control(to, &ControlMsg::PeerOffline { peer: peer.0 });
            }
        }
    }

    /// One fewer shared group; tears the pair down after the last.
    fn pair_unref(&mut self, a: HostId, b: HostId) {
        let k = pair_key(a, b);
        let Some(p) = self.pairs.get_mut(&k) else {
            return;
        };
        p.shared -= 1;
        if p.shared > 0 {
            return;
        }
        let pair_id = p.pair_id;
        self.pairs.remove(&k);
        self.stats.pairs -= 1;
        for (to, peer) in [(a, b), (b, a)] {
            self.send_control(
                to,
                &ControlMsg::PeerRemove {
                    peer: peer.0,
                    pair_id,
                },
            );
        }
    }

    /// A client reported its NAT's behaviour (from discovery): keep it and pass it to everyone
    /// it shares a group with, who use it to choose port prediction or birthday probing.
    pub(super) fn on_nat_info(&mut self, from: HostId, info: crate::wire::control::NatInfo) {
        let Some((key, _)) = self.established(from) else {
            return;
        };
        self.sessions[key].nat = Some(info);
        for p in self.partners(from) {
            self.send_control(p, &ControlMsg::PeerNat { peer: from.0, info });
        }
    }

    /// A client's address changed (its NAT rebound, it roamed): its peers learn the new
    /// reflexive address and punch to it again.
    pub(super) fn on_client_moved(&mut self, host: HostId, addr: std::net::SocketAddr) {
        for p in self.partners(host) {
            self.send_control(p, &ControlMsg::PeerMoved { peer: host.0, addr });
        }
    }

    /// A client went offline (`true`) or came back: everyone it shares a group with hears.
    pub(super) fn on_client_offline(&mut self, host: HostId, offline: bool) {
        let msg = if offline {
            ControlMsg::PeerOffline { peer: host.0 }
        } else {
            ControlMsg::PeerOnline { peer: host.0 }
        };
        for p in self.partners(host) {
            self.send_control(p, &msg);
        }
    }

    /// Everyone `host` shares a group with.
    /// Found through its groups' member lists (a pair exists exactly while two clients share
    /// a group), so the cost is the size of its groups, not the number of pairs on the server.
    fn partners(&self, host: HostId) -> SmallVec<[HostId; 16]> {
        let Some((_, s)) = self.established(host) else {
            return SmallVec::new();
        };
        let mut out: SmallVec<[HostId; 16]> = SmallVec::new();
        for g in s.groups.iter().filter_map(|&g| self.group(g)) {
            for &m in &g.members {
                if m != host && !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }

    /// A client advertised its local addresses: keep the plausible ones (never loopback,
    /// multicast, unspecified or port 0: a peer must not be steered into probing those) and
    /// pass them to everyone it shares a group with.
    pub(super) fn on_candidates(&mut self, from: HostId, addrs: &crate::wire::control::Candidates) {
        let good: SmallVec<[std::net::SocketAddr; 4]> = addrs
            .iter()
            .filter(|a| {
                let ip = a.ip();
                a.port() != 0 && !ip.is_loopback() && !ip.is_multicast() && !ip.is_unspecified()
            })
            .collect();
        if good.len() < addrs.iter().count() {
            self.stats.dropped.bad_candidates += 1;
        }
        let candidates = crate::wire::control::Candidates::new(&good);
        let Some((key, _)) = self.established(from) else {
            return;
        };
        self.sessions[key].candidates = candidates;
        for p in self.partners(from) {
            self.send_control(
                p,
                &ControlMsg::PeerCandidates {
                    peer: from.0,
                    addrs: candidates,
                },
            );
        }
    }

    /// A Relay frame: forward a sealed peer packet from `from` to `to` if they share a group
    /// and every budget allows it. The server never reads the packet; it checks only that it
    /// looks like a peer packet, so it cannot be used to inject server-session packets.
    pub(super) fn on_relay(&mut self, now: Instant, from: HostId, to: HostId, packet: &[u8]) {
        if packet.len() < OVERHEAD || packet[0] != KIND_PEER {
            self.stats.dropped.malformed += 1;
            return;
        }
        if !self.pairs.contains_key(&pair_key(from, to)) {
            self.stats.dropped.relay_denied += 1;
            return;
        }
        let Some((to_key, _)) = self.established(to) else {
            self.stats.dropped.relay_denied += 1;
            return;
        };
        let Some((from_key, sender)) = self.established(from) else {
            return;
        };
        // Account the bytes to the lowest-numbered group the two share.
        let shared = sender
            .groups
            .iter()
            .copied()
            .filter(|g| self.group(*g).is_some_and(|g| g.members.contains(&to)))
            .min();
        let n = packet.len() as u32;
        let cfg = &*self.config;
        let (client_rate, client_burst) = (cfg.relay_rate_per_client, cfg.relay_burst_per_client);
        let (group_rate, total_rate) = (cfg.relay_rate_per_group, cfg.relay_rate_total);
        let queue_cap = cfg.max_queued_relay_per_client;
        let client_ok =
            self.sessions[from_key]
                .relay_bucket
                .take_n(now, client_rate, client_burst, n);
        let group_ok = client_ok
            && shared
                .and_then(|g| self.group_mut(g))
                .is_none_or(|g| g.relay_bucket.take_n(now, group_rate, group_rate / 4, n));
        let total_ok = group_ok && self.relay_total.take_n(now, total_rate, total_rate / 4, n);
        if !total_ok {
            self.stats.dropped.relay_rate += 1;
            return;
        }
        let target = &mut self.sessions[to_key];
        if target.out.relayed.len() >= queue_cap {
            self.stats.dropped.queue_full += 1;
            return;
        }
        let bytes = self.send_arena.copy(packet);
        self.sessions[to_key].out.relayed.push_back((from, bytes));
        self.enqueue(to_key);
    }
}
