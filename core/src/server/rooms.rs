//! The rooms policy, for servers with no game logic of their own (the stock `pierce server`):
//! clients create or join rooms by name (optionally with a password), join any open room,
//! list rooms, leave, and the owner may kick. Each room is a group; an empty room is
//! destroyed; when the owner leaves, the longest-standing member becomes owner.
//!
//! [`Rooms`] is a policy over [`Groups`]: it keeps the room names and settings, and does
//! everything through the `Groups` it is lent (whose outbox carries its answers too, in order
//! with the group changes they cause). Every leave and every destruction of any group goes
//! through [`Rooms::leave`] and [`Rooms::destroy`], so a room never outlives its rules.

use std::collections::{BTreeMap, VecDeque};

use super::groups::{Groups, Roster};
use super::node::Join;
use crate::cluster::ListedRoom;
use crate::config::RoomsConfig;
use crate::error::GroupError;
use crate::event::{GroupId, HostId, LeaveReason, MemberLeftReason, RoomError, RoomOp};
use crate::rng::Rng;
use crate::stats::ServerStats;
use crate::wire::control::{
    ControlMsg, JOIN_CREATE, JOIN_MUST_CREATE, JOIN_RELAY_ONLY, MAX_NAME_LEN, ROOM_HAS_PASSWORD,
    ROOM_RELAY_ONLY, RoomEntries, RoomEntry,
};

/// Room list bytes per answer: one control message must fit one datagram with room to spare.
const LIST_BUDGET: usize = 900;

/// Rooms by name, and each room's settings.
pub(super) struct Rooms {
    /// `None`: rooms are off (every request is answered `Disabled`).
    config: Option<RoomsConfig>,
    /// Room name → group.
    by_name: BTreeMap<String, GroupId>,
    /// The rooms, by group.
    rooms: BTreeMap<GroupId, Room>,
    /// The server is draining ([`crate::Server::drain`]): no new rooms.
    draining: bool,
    /// A cluster node: a room that is not here is asked about ([`Rooms::poll_ask`]), and
    /// rooms destroyed are told ([`Rooms::poll_released`]).
    clustered: bool,
    /// Joins of rooms not here, for the directory.
    asks: VecDeque<Join>,
    /// Rooms destroyed here, for the directory.
    released: VecDeque<String>,
    /// The rooms of the other nodes (the cluster-wide list, as last heard).
    listed: Vec<ListedRoom>,
}

/// A room as the operator sees it ([`crate::Server::rooms`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomSummary {
    /// Its name.
    pub name: String,
    /// The group behind it.
    pub group: GroupId,
    /// Its owner.
    pub owner: HostId,
    /// Its members, in join order.
    pub members: Vec<HostId>,
    /// Its member limit.
    pub max_members: u16,
    /// Whether joining takes a password.
    pub has_password: bool,
}

struct Room {
    name: String,
    password: String,
    max_members: u16,
    owner: HostId,
}

/// Compares without an early exit on the first differing byte.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(super) fn room_error(groups: &mut Groups, to: HostId, op: RoomOp, error: RoomError) {
    groups.push_control(
        to,
        &ControlMsg::RoomError {
            op: op.code(),
            reason: error.code(),
        },
    );
}

impl Rooms {
    pub(super) fn new(config: Option<RoomsConfig>) -> Self {
        Self {
            config,
            by_name: BTreeMap::new(),
            rooms: BTreeMap::new(),
            draining: false,
            clustered: false,
            asks: VecDeque::new(),
            released: VecDeque::new(),
            listed: Vec::new(),
        }
    }

    /// This server is a cluster node.
    pub(super) fn set_clustered(&mut self) {
        self.clustered = true;
    }

    /// The next join of a room that is not here: the directory says where it lives.
    pub(super) fn poll_ask(&mut self) -> Option<Join> {
        self.asks.pop_front()
    }

    /// The next room destroyed here (cluster nodes only).
    pub(super) fn poll_released(&mut self) -> Option<String> {
        self.released.pop_front()
    }

    /// The cluster-wide room list as last heard (this node's own rooms are listed from
    /// here, fresher).
    pub(super) fn set_listed(&mut self, listed: &[ListedRoom]) {
        self.listed.clear();
        self.listed.extend_from_slice(listed);
    }

    /// The rooms here as the cluster's room list shows them, in name order.
    pub(super) fn listed_here(&self, groups: &Groups) -> Vec<ListedRoom> {
        (self.by_name.iter())
            .filter_map(|(name, &group)| {
                let room = self.rooms.get(&group)?;
                Some(ListedRoom {
                    name: name.clone(),
                    members: groups.members(group)?.len() as u16,
                    max_members: room.max_members,
                    has_password: !room.password.is_empty(),
                    relay_only: groups.is_relay_only(group),
                })
            })
            .collect()
    }

    /// Members of the room called `name`, if it is here.
    pub(super) fn members_of<'g>(&self, groups: &'g Groups, name: &str) -> Option<&'g [HostId]> {
        groups.members(*self.by_name.get(name)?)
    }

    /// From now on, requests that would create a room fail with [`RoomError::Draining`].
    pub(super) fn set_draining(&mut self) {
        self.draining = true;
    }

    /// Rooms now.
    pub(super) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Every room, in name order.
    pub(super) fn summaries(&self, groups: &Groups) -> Vec<RoomSummary> {
        (self.by_name.iter())
            .filter_map(|(name, &group)| {
                let room = self.rooms.get(&group)?;
                Some(RoomSummary {
                    name: name.clone(),
                    group,
                    owner: room.owner,
                    members: groups.members(group)?.to_vec(),
                    max_members: room.max_members,
                    has_password: !room.password.is_empty(),
                })
            })
            .collect()
    }

    /// Closes the room called `name`: its members get `GroupDestroyed`.
    pub(super) fn close(&mut self, groups: &mut Groups, name: &str) -> Result<GroupId, RoomError> {
        if self.config.is_none() {
            return Err(RoomError::Disabled);
        }
        let group = *self.by_name.get(name).ok_or(RoomError::NotFound)?;
        self.destroy(groups, group);
        Ok(group)
    }

    /// A control message from connected client `from` that is not for the application: group
    /// acknowledgements, what it tells about itself (to `groups`), room requests (here);
    /// anything else is unexpected (dropped and counted).
    pub(super) fn handle_control(
        &mut self,
        groups: &mut Groups,
        rng: &mut Rng,
        roster: &impl Roster,
        from: HostId,
        msg: ControlMsg<'_>,
        stats: &mut ServerStats,
    ) {
        match msg {
            ControlMsg::MemberAck { group, member } => {
                groups.handle_member_ack(GroupId(group), from, HostId(member));
            }
            ControlMsg::Candidates { addrs } => groups.handle_candidates(from, &addrs, stats),
            ControlMsg::NatInfo { info } => groups.handle_nat_info(from, info),
            ControlMsg::PeerPath {
                peer,
                direct,
                after_ms,
            } => groups.handle_path_report(from, HostId(peer), direct, after_ms, stats),
            ControlMsg::RoomJoin {
                flags,
                max_members,
                name,
                password,
            } => {
                let request = (flags, max_members, name, password);
                self.handle_join(groups, rng, roster, from, request, false);
            }
            ControlMsg::RoomJoinRandom => self.handle_join_random(groups, rng, roster, from),
            ControlMsg::RoomListGet { offset } => self.handle_list(groups, from, offset),
            ControlMsg::RoomLeave { group } => self.handle_leave(groups, from, GroupId(group)),
            ControlMsg::RoomKick { group, member } => {
                self.handle_kick(groups, from, GroupId(group), HostId(member));
            }
            _ => stats.dropped.unexpected += 1,
        }
    }

    /// The server's `leave_group`: `host` leaves `group` (any group).
    pub(super) fn leave_group(
        &mut self,
        groups: &mut Groups,
        group: GroupId,
        host: HostId,
    ) -> Result<(), GroupError> {
        let members = groups.members(group).ok_or(GroupError::UnknownGroup)?;
        if !members.contains(&host) {
            return Err(GroupError::NotMember);
        }
        self.leave(groups, group, host, MemberLeftReason::Left);
        Ok(())
    }

    /// Client `host` left the server (`reason`): it leaves each of its groups in turn (kicked
    /// ones as kicked, the rest as disconnected), and `groups` forgets it.
    pub(super) fn client_ended(&mut self, groups: &mut Groups, host: HostId, reason: LeaveReason) {
        let reason = match reason {
            LeaveReason::Kicked(_) => MemberLeftReason::Kicked,
            _ => MemberLeftReason::Disconnected,
        };
        for group in groups.client_ended(host) {
            self.leave(groups, group, host, reason);
        }
    }

    /// Takes `host` out of `group` (any group: rooms apply their rules afterwards).
    pub(super) fn leave(
        &mut self,
        groups: &mut Groups,
        group: GroupId,
        host: HostId,
        reason: MemberLeftReason,
    ) {
        groups.leave(group, host, reason);
        self.after_leave(groups, group, host);
    }

    /// Destroys `group` (any group: a room's name is free again). False if there is none.
    pub(super) fn destroy(&mut self, groups: &mut Groups, group: GroupId) -> bool {
        if !groups.destroy(group) {
            return false;
        }
        if let Some(room) = self.rooms.remove(&group) {
            self.by_name.remove(&room.name);
            if self.clustered {
                self.released.push_back(room.name);
            }
        }
        true
    }

    /// A join the directory placed here ([`super::node::Verdict::Here`]): joined, or
    /// created if it is not here (yet: another client's may have come first).
    pub(super) fn join_here(
        &mut self,
        groups: &mut Groups,
        rng: &mut Rng,
        roster: &impl Roster,
        join: &Join,
    ) {
        let request = (join.flags, join.max_members, &*join.name, &*join.password);
        self.handle_join(groups, rng, roster, join.host, request, true);
    }

    /// A client asks to join (or create) a room: `(flags, max_members, name, password)`.
    /// On a cluster node a room that is not here is asked about first, unless `placed` (the
    /// directory said it is this node's).
    fn handle_join(
        &mut self,
        groups: &mut Groups,
        rng: &mut Rng,
        roster: &impl Roster,
        from: HostId,
        (flags, max_members, name, password): (u8, u16, &str, &str),
        placed: bool,
    ) {
        let Some(cfg) = self.config.clone() else {
            return room_error(groups, from, RoomOp::Join, RoomError::Disabled);
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN || password.len() > MAX_NAME_LEN {
            return room_error(groups, from, RoomOp::Join, RoomError::InvalidName);
        }
        if let Some(&group) = self.by_name.get(name) {
            if flags & JOIN_MUST_CREATE != 0 {
                return room_error(groups, from, RoomOp::Join, RoomError::AlreadyExists);
            }
            let Some(members) = groups.members(group) else {
                return room_error(groups, from, RoomOp::Join, RoomError::NotFound);
            };
            let Some(room) = self.rooms.get(&group) else {
                return room_error(groups, from, RoomOp::Join, RoomError::NotFound);
            };
            let error = if members.contains(&from) {
                Some(RoomError::AlreadyMember)
            } else if !same_secret(&room.password, password) {
                Some(RoomError::WrongPassword)
            } else if flags & JOIN_RELAY_ONLY != 0 && !groups.is_relay_only(group) {
                // Asked for privacy: never into a room that would hand its addresses out.
                Some(RoomError::NotRelayOnly)
            } else if members.len() >= room.max_members as usize {
                Some(RoomError::Full)
            } else {
                None
            };
            return match error {
                Some(e) => room_error(groups, from, RoomOp::Join, e),
                None => self.enter(groups, rng, roster, group, from),
            };
        }
        if self.clustered && !placed {
            // Not here: the directory knows where it is, or whether it may be created here.
            self.asks.push_back(Join {
                host: from,
                flags,
                max_members,
                name: name.to_owned(),
                password: password.to_owned(),
            });
            return;
        }
        if flags & (JOIN_CREATE | JOIN_MUST_CREATE) == 0 {
            return room_error(groups, from, RoomOp::Join, RoomError::NotFound);
        }
        if self.draining {
            return room_error(groups, from, RoomOp::Join, RoomError::Draining);
        }
        if self.by_name.len() >= cfg.max_rooms {
            return room_error(groups, from, RoomOp::Join, RoomError::TooManyRooms);
        }
        let max_members = match max_members {
            0 => cfg.default_max_members,
            n => n.min(cfg.max_members_cap),
        }
        .max(1);
        let group = groups.create();
        if cfg.relay_only || flags & JOIN_RELAY_ONLY != 0 {
            groups.set_relay_only(group);
        }
        self.rooms.insert(
            group,
            Room {
                name: name.to_owned(),
                password: password.to_owned(),
                max_members,
                owner: from,
            },
        );
        self.by_name.insert(name.to_owned(), group);
        self.enter(groups, rng, roster, group, from);
    }

    /// A client asks to join any open room (no password, not full, not its own).
    fn handle_join_random(
        &mut self,
        groups: &mut Groups,
        rng: &mut Rng,
        roster: &impl Roster,
        from: HostId,
    ) {
        if self.config.is_none() {
            return room_error(groups, from, RoomOp::JoinRandom, RoomError::Disabled);
        }
        let open = self.by_name.values().copied().find(|&g| {
            groups.members(g).is_some_and(|members| {
                self.rooms.get(&g).is_some_and(|r| {
                    r.password.is_empty() && members.len() < r.max_members as usize
                }) && !members.contains(&from)
            })
        });
        match open {
            Some(group) => self.enter(groups, rng, roster, group, from),
            None => room_error(groups, from, RoomOp::JoinRandom, RoomError::NotFound),
        }
    }

    /// A client asks for the room list from `offset` on (name order): this node's rooms,
    /// and on a cluster node the other nodes' too (as last heard).
    fn handle_list(&self, groups: &mut Groups, from: HostId, offset: u16) {
        if self.config.is_none() {
            return room_error(groups, from, RoomOp::List, RoomError::Disabled);
        }
        let here = self.listed_here(groups);
        let mut all: BTreeMap<&str, &ListedRoom> =
            (self.listed.iter()).map(|r| (&*r.name, r)).collect();
        all.extend(here.iter().map(|r| (&*r.name, r)));
        let mut entries = Vec::new();
        let mut used = 0;
        for r in all.values().skip(offset as usize) {
            let e = RoomEntry {
                name: &r.name,
                members: r.members,
                max_members: r.max_members,
                flags: if r.has_password { ROOM_HAS_PASSWORD } else { 0 }
                    | if r.relay_only { ROOM_RELAY_ONLY } else { 0 },
            };
            used += RoomEntries::entry_len(&e);
            if used > LIST_BUDGET || entries.len() == 255 {
                break;
            }
            entries.push(e);
        }
        let total = all.len().min(u16::MAX as usize) as u16;
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        let mut w = crate::wire::Writer::new(&mut buf);
        let _ = w.u8(0x07);
        let _ = w.u16(total);
        let _ = w.u16(offset);
        if RoomEntries::encode_entries(&mut w, &entries).is_err() {
            return;
        }
        let n = w.len();
        // Decode our own encoding to hand the outbox a typed message.
        if let Ok(msg) = ControlMsg::decode(&buf[..n]) {
            groups.push_control(from, &msg);
        }
    }

    /// A client asks to leave room `group`.
    fn handle_leave(&mut self, groups: &mut Groups, from: HostId, group: GroupId) {
        let member = self.rooms.contains_key(&group)
            && groups.members(group).is_some_and(|m| m.contains(&from));
        if !member {
            return room_error(groups, from, RoomOp::Leave, RoomError::NotMember);
        }
        self.leave(groups, group, from, MemberLeftReason::Left);
    }

    /// A client asks to kick `member` out of room `group` (only its owner may).
    fn handle_kick(&mut self, groups: &mut Groups, from: HostId, group: GroupId, member: HostId) {
        let Some(members) = groups.members(group) else {
            return room_error(groups, from, RoomOp::Kick, RoomError::NotFound);
        };
        let Some(room) = self.rooms.get(&group) else {
            return room_error(groups, from, RoomOp::Kick, RoomError::NotFound);
        };
        if room.owner != from {
            return room_error(groups, from, RoomOp::Kick, RoomError::NotOwner);
        }
        if member == from || !members.contains(&member) {
            return room_error(groups, from, RoomOp::Kick, RoomError::NotMember);
        }
        self.leave(groups, group, member, MemberLeftReason::Kicked);
    }

    /// Tells `host` it is in room `group`, then joins it (so it hears about the room before
    /// its members).
    fn enter(
        &mut self,
        groups: &mut Groups,
        rng: &mut Rng,
        roster: &impl Roster,
        group: GroupId,
        host: HostId,
    ) {
        let Some(room) = self.rooms.get(&group) else {
            return;
        };
        groups.push_control(
            host,
            &ControlMsg::RoomJoined {
                group: group.0,
                owner: room.owner.0,
                name: &room.name,
            },
        );
        groups.join(group, host, rng, roster);
    }

    /// After a member left a room: destroy it if empty, hand ownership on if the owner left.
    fn after_leave(&mut self, groups: &mut Groups, group: GroupId, left: HostId) {
        let Some(members) = groups.members(group) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&group) else {
            return;
        };
        if members.is_empty() {
            self.destroy(groups, group);
            return;
        }
        if room.owner == left {
            room.owner = members[0];
            let owner = room.owner;
            let members = members.to_vec();
            for m in members {
                groups.push_control(
                    m,
                    &ControlMsg::RoomOwner {
                        group: group.0,
                        owner: owner.0,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::groups::Card;
    use std::net::SocketAddr;

    struct Everyone;

    impl Roster for Everyone {
        fn card(&self, host: HostId) -> Option<Card> {
            Some(Card {
                addr: SocketAddr::from(([198, 51, 100, host.0 as u8], 4000)),
                offline: false,
                srtt: crate::time::Duration::ZERO,
                private: false,
            })
        }
    }

    /// Drops whatever the outbox holds.
    fn drain(groups: &mut Groups) {
        while groups.poll_control().is_some() {}
    }

    fn setup() -> (Rooms, Groups, Rng) {
        let rooms = Rooms::new(Some(RoomsConfig::default()));
        (rooms, Groups::new(1), crate::rng::derive(&[1; 32], b"test"))
    }

    /// `from` sends `msg`.
    fn ask(rooms: &mut Rooms, groups: &mut Groups, rng: &mut Rng, from: u64, msg: ControlMsg<'_>) {
        let mut stats = ServerStats::default();
        rooms.handle_control(groups, rng, &Everyone, HostId(from), msg, &mut stats);
        assert_eq!(stats.dropped.unexpected, 0);
    }

    fn join(name: &str, password: &'static str) -> ControlMsg<'static> {
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        ControlMsg::RoomJoin {
            flags: JOIN_CREATE,
            max_members: 0,
            name,
            password,
        }
    }

    #[test]
    fn the_first_joiner_creates_and_owns_a_room_and_hears_of_it_before_the_group() {
        let (mut rooms, mut groups, mut rng) = setup();
        ask(&mut rooms, &mut groups, &mut rng, 1, join("r", ""));
        let group = *rooms.by_name.get("r").unwrap();
        assert_eq!(rooms.rooms[&group].owner, HostId(1));
        assert_eq!(groups.members(group), Some(&[HostId(1)][..]));
        let mut first = None;
        while let Some((_, bytes)) = groups.poll_control() {
            let m = ControlMsg::decode(bytes).unwrap();
            first.get_or_insert(matches!(m, ControlMsg::RoomJoined { .. }));
        }
        assert_eq!(first, Some(true));
    }

    #[test]
    fn a_wrong_password_is_refused_and_the_last_one_out_destroys_the_room() {
        let (mut rooms, mut groups, mut rng) = setup();
        ask(&mut rooms, &mut groups, &mut rng, 1, join("r", "pw"));
        drain(&mut groups);
        ask(&mut rooms, &mut groups, &mut rng, 2, join("r", "nope"));
        let (to, bytes) = groups.poll_control().unwrap();
        assert_eq!(to, HostId(2));
        assert!(matches!(
            ControlMsg::decode(bytes),
            Ok(ControlMsg::RoomError { .. })
        ));
        let group = *rooms.by_name.get("r").unwrap();
        assert_eq!(groups.members(group), Some(&[HostId(1)][..]));
        ask(
            &mut rooms,
            &mut groups,
            &mut rng,
            1,
            ControlMsg::RoomLeave { group: group.0 },
        );
        assert!(rooms.by_name.is_empty() && rooms.rooms.is_empty());
        assert_eq!(groups.members(group), None);
    }

    #[test]
    fn when_the_owner_leaves_the_longest_standing_member_owns_the_room() {
        let (mut rooms, mut groups, mut rng) = setup();
        for h in 1..=3 {
            ask(&mut rooms, &mut groups, &mut rng, h, join("r", ""));
        }
        let group = *rooms.by_name.get("r").unwrap();
        let kick = ControlMsg::RoomKick {
            group: group.0,
            member: 3,
        };
        ask(&mut rooms, &mut groups, &mut rng, 2, kick);
        assert_eq!(
            groups.members(group).map(<[_]>::len),
            Some(3),
            "2 is not the owner"
        );
        drain(&mut groups);
        ask(
            &mut rooms,
            &mut groups,
            &mut rng,
            1,
            ControlMsg::RoomLeave { group: group.0 },
        );
        assert_eq!(rooms.rooms[&group].owner, HostId(2));
        ask(&mut rooms, &mut groups, &mut rng, 2, kick);
        assert_eq!(groups.members(group), Some(&[HostId(2)][..]));
    }

    #[test]
    fn rooms_that_are_off_answer_disabled_and_other_messages_are_not_theirs() {
        let mut rooms = Rooms::new(None);
        let mut groups = Groups::new(1);
        let mut rng = crate::rng::derive(&[1; 32], b"test");
        ask(
            &mut rooms,
            &mut groups,
            &mut rng,
            1,
            ControlMsg::RoomListGet { offset: 0 },
        );
        let (to, bytes) = groups.poll_control().unwrap();
        assert_eq!(to, HostId(1));
        assert!(matches!(
            ControlMsg::decode(bytes),
            Ok(ControlMsg::RoomError { .. })
        ));
        let mut stats = ServerStats::default();
        let app = ControlMsg::App { data: &[] };
        rooms.handle_control(&mut groups, &mut rng, &Everyone, HostId(1), app, &mut stats);
        assert_eq!(stats.dropped.unexpected, 1);
    }
}
