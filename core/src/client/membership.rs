//! The groups and rooms this client is in, as the server tells it, and the rooms it asked for:
//! after re-registering with a server that lost them, it joins them again by name (creating
//! them again, password included, if they are gone).

use std::collections::{BTreeMap, VecDeque};

use crate::error::CommandError;
use crate::event::{ClientEvent, GroupId, HostId, MemberLeftReason, RoomError, RoomInfo, RoomOp};
use crate::wire::control::{
    ControlMsg, JOIN_CREATE, JOIN_MUST_CREATE, JOIN_RELAY_ONLY, MAX_NAME_LEN, ROOM_HAS_PASSWORD,
    ROOM_RELAY_ONLY,
};

/// Room requests remembered at once, at most (for rejoining after a server restart).
const MAX_ROOM_REQUESTS: usize = 32;
/// Rooms remembered at once, at most.
const MAX_ROOMS: usize = 2 * MAX_ROOM_REQUESTS;
/// Redirects one join follows in a row, at most (cluster nodes disagreeing while rooms
/// move); past it the join fails with [`RoomError::TooManyRedirects`].
pub(super) const MAX_REDIRECTS: u8 = 4;

/// How a room is made if a join creates it ([`crate::Client::join_room_with`],
/// [`crate::Client::create_room_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomOptions {
    /// Most members; 0 for the server's default.
    pub max_members: u16,
    /// IP privacy for the room: members paired through it never learn each other's
    /// addresses (public or LAN, nor their NAT's mapped ports), never punch to each other,
    /// and all their traffic goes through the server's relay. A pair that also shares a
    /// normal group stays relay-only; a pair introduced earlier through a normal group keeps
    /// what it was told then (its direct path too), though it hears no more address changes.
    /// Joining a room that exists with it is refused ([`crate::RoomError::NotRelayOnly`])
    /// unless the room is relay-only, so a room this client rejoins by itself after a server
    /// restart is relay-only again whoever recreates it, or not joined. A server older than
    /// the option ignores it (a normal room: [`crate::RoomInfo::relay_only`] says which it
    /// is; [`crate::ClientConfig::private`] is the setting that fails closed).
    pub relay_only: bool,
}

impl RoomOptions {
    /// Default options: the server's default size, not relay-only.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `max_members` (0: the server's default).
    pub fn max_members(mut self, max_members: u16) -> Self {
        self.max_members = max_members;
        self
    }

    /// Relay-only or not (see [`RoomOptions::relay_only`]).
    pub fn relay_only(mut self, relay_only: bool) -> Self {
        self.relay_only = relay_only;
        self
    }
}

/// How a room was asked for: enough to ask again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RoomRequest {
    pub(super) name: String,
    pub(super) password: String,
    pub(super) max_members: u16,
    pub(super) relay_only: bool,
}

impl RoomRequest {
    /// The control message that asks for it (`flags`: [`JOIN_CREATE`], [`JOIN_MUST_CREATE`];
    /// [`JOIN_RELAY_ONLY`] is added for a relay-only request).
    pub(super) fn msg(&self, flags: u8) -> ControlMsg<'_> {
        let relay_only = if self.relay_only { JOIN_RELAY_ONLY } else { 0 };
        ControlMsg::RoomJoin {
            flags: flags | relay_only,
            max_members: self.max_members,
            name: &self.name,
            password: &self.password,
        }
    }
}

#[derive(Default)]
pub(super) struct Membership {
    /// Groups this client is in, with their members in join order.
    groups: BTreeMap<GroupId, Vec<HostId>>,
    /// Rooms this client is in, rejoined by name after re-registering with a server that
    /// lost them.
    rooms: BTreeMap<GroupId, RoomRequest>,
    /// Passwords, sizes, privacy and join flags of rooms asked for, by name, until the
    /// answer.
    requests: BTreeMap<String, (String, u16, bool, u8)>,
    /// The join a redirect sends to the next node (by name), asked for once registered there.
    followed: Option<String>,
    /// Redirects followed since the last join answer.
    redirects: u8,
    events: VecDeque<ClientEvent>,
}

impl Membership {
    /// Groups this client is in, in id order.
    pub(super) fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// Members of a group this client is in (itself included), in join order.
    pub(super) fn members(&self, group: GroupId) -> Option<&[HostId]> {
        self.groups.get(&group).map(|m| &m[..])
    }

    pub(super) fn is_member(&self, group: GroupId) -> bool {
        self.groups.contains_key(&group)
    }

    /// A request to join (or create) a room: checked, and remembered once queued (`queue`
    /// sends it to the server).
    pub(super) fn request_room(
        &mut self,
        request: &RoomRequest,
        flags: u8,
        queue: impl FnOnce(&ControlMsg<'_>) -> Result<(), CommandError>,
    ) -> Result<(), CommandError> {
        let bad = |s: &str| s.len() > MAX_NAME_LEN;
        if request.name.is_empty() || bad(&request.name) || bad(&request.password) {
            return Err(CommandError::InvalidName { max: MAX_NAME_LEN });
        }
        queue(&request.msg(flags))?;
        self.remember(request, flags);
        Ok(())
    }

    fn remember(&mut self, r: &RoomRequest, flags: u8) {
        if self.requests.len() < MAX_ROOM_REQUESTS || self.requests.contains_key(&r.name) {
            self.requests.insert(
                r.name.clone(),
                (r.password.clone(), r.max_members, r.relay_only, flags),
            );
        }
    }

    /// A node sent our join of room `name` to another node: it is asked for there once
    /// registered ([`Membership::take_followed`]). False (the request forgotten) past
    /// [`MAX_REDIRECTS`] in a row, or for a room never asked for.
    pub(super) fn follow(&mut self, name: &str) -> bool {
        self.redirects += 1;
        if self.redirects > MAX_REDIRECTS || !self.requests.contains_key(name) {
            self.requests.remove(name);
            self.redirects = 0;
            self.followed = None;
            return false;
        }
        self.followed = Some(name.to_owned());
        true
    }

    /// The join a redirect carries to this node, with its flags.
    pub(super) fn take_followed(&mut self) -> Option<(RoomRequest, u8)> {
        let name = self.followed.take()?;
        let (password, max_members, relay_only, flags) = self.requests.get(&name)?.clone();
        let request = RoomRequest {
            name,
            password,
            max_members,
            relay_only,
        };
        // (The relay-only flag is added back by `RoomRequest::msg`.)
        Some((request, flags & !JOIN_RELAY_ONLY))
    }

    /// This client left a room (asked the server to).
    pub(super) fn left_room(&mut self, group: GroupId) {
        self.rooms.remove(&group);
    }

    /// After re-registering: the rooms to join again (created again if the server lost
    /// them); each is remembered as asked for.
    pub(super) fn rejoin(&mut self) -> Vec<RoomRequest> {
        let rooms: Vec<RoomRequest> = std::mem::take(&mut self.rooms).into_values().collect();
        for r in &rooms {
            self.remember(r, JOIN_CREATE);
        }
        rooms
    }

    /// A control message about groups and rooms (in order); false if it is not one. The
    /// answer to send back, if any, goes to `reply`.
    pub(super) fn handle_control(
        &mut self,
        msg: &ControlMsg<'_>,
        me: HostId,
        reply: impl FnOnce(&ControlMsg<'_>),
    ) -> bool {
        match *msg {
            ControlMsg::MemberJoined {
                group,
                member,
                member_count,
            } => {
                let (group, member) = (GroupId(group), HostId(member));
                let members = self.groups.entry(group).or_default();
                if !members.contains(&member) {
                    members.push(member);
                }
                reply(&ControlMsg::MemberAck {
                    group: group.0,
                    member: member.0,
                });
                self.events.push_back(ClientEvent::MemberJoined {
                    group,
                    member,
                    member_count,
                });
            }
            ControlMsg::MemberLeft {
                group,
                member,
                reason,
            } => {
                let (group, member) = (GroupId(group), HostId(member));
                if member == me {
                    self.groups.remove(&group);
                    self.rooms.remove(&group);
                } else if let Some(m) = self.groups.get_mut(&group) {
                    m.retain(|x| *x != member);
                }
                self.events.push_back(ClientEvent::MemberLeft {
                    group,
                    member,
                    reason: MemberLeftReason::from_code(reason),
                });
            }
            ControlMsg::GroupDestroyed { group } => {
                let group = GroupId(group);
                self.groups.remove(&group);
                self.rooms.remove(&group);
                self.events.push_back(ClientEvent::GroupDestroyed { group });
            }
            ControlMsg::RoomJoined { group, owner, name } => {
                self.redirects = 0;
                let (password, max_members, relay_only, _) =
                    self.requests.remove(name).unwrap_or_default();
                if self.rooms.len() < MAX_ROOMS {
                    let r = RoomRequest {
                        name: name.to_owned(),
                        password,
                        max_members,
                        relay_only,
                    };
                    self.rooms.insert(GroupId(group), r);
                }
                self.events.push_back(ClientEvent::RoomJoined {
                    group: GroupId(group),
                    name: name.to_owned(),
                    owner: HostId(owner),
                });
            }
            ControlMsg::RoomOwner { group, owner } => {
                self.events.push_back(ClientEvent::RoomOwnerChanged {
                    group: GroupId(group),
                    owner: HostId(owner),
                });
            }
            ControlMsg::RoomList {
                total,
                offset,
                ref entries,
            } => {
                let rooms = entries
                    .iter()
                    .map(|e| RoomInfo {
                        name: e.name.to_owned(),
                        members: e.members,
                        max_members: e.max_members,
                        has_password: e.flags & ROOM_HAS_PASSWORD != 0,
                        relay_only: e.flags & ROOM_RELAY_ONLY != 0,
                    })
                    .collect();
                self.events.push_back(ClientEvent::RoomList {
                    total,
                    offset,
                    rooms,
                });
            }
            ControlMsg::RoomError { op, reason } => {
                self.redirects = 0;
                self.events.push_back(ClientEvent::RoomFailed {
                    op: RoomOp::from_code(op),
                    error: RoomError::from_code(reason),
                });
            }
            _ => return false,
        }
        true
    }

    /// The server session is lost: group memberships go with it (rooms are remembered, to
    /// join them again).
    pub(super) fn forget_groups(&mut self) {
        self.groups.clear();
    }

    /// Everything goes.
    pub(super) fn clear(&mut self) {
        self.followed = None;
        self.redirects = 0;
        self.groups.clear();
        self.rooms.clear();
        self.requests.clear();
    }

    pub(super) fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

/// The flags of a join request.
pub(super) fn join_flags(create: bool) -> u8 {
    if create { JOIN_CREATE } else { 0 }
}

/// The flags of a create request (fails if the room exists).
pub(super) const CREATE_ONLY: u8 = JOIN_MUST_CREATE;

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, password: &str, max: u16) -> RoomRequest {
        RoomRequest {
            name: name.into(),
            password: password.into(),
            max_members: max,
            relay_only: false,
        }
    }

    #[test]
    fn a_joined_room_is_remembered_with_its_password_and_asked_for_again_after_a_restart() {
        let mut m = Membership::default();
        let mut sent = Vec::new();
        m.request_room(&request("lobby", "pw", 8), JOIN_CREATE, |msg| {
            sent.push(format!("{msg:?}"));
            Ok(())
        })
        .unwrap();
        assert_eq!(sent.len(), 1);
        let joined = ControlMsg::RoomJoined {
            group: 7,
            owner: 1,
            name: "lobby",
        };
        assert!(m.handle_control(&joined, HostId(2), |_| panic!("no reply")));
        assert!(matches!(
            m.poll_event(),
            Some(ClientEvent::RoomJoined {
                group: GroupId(7),
                ..
            })
        ));
        // The server restarted: the room is asked for again, by name, with its password.
        m.forget_groups();
        assert_eq!(m.rejoin(), [request("lobby", "pw", 8)]);
        assert!(m.rejoin().is_empty(), "asked for once");
    }

    #[test]
    fn names_are_checked_before_anything_is_sent_or_remembered() {
        let mut m = Membership::default();
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for r in [
            request("", "", 0),
            request(&long, "", 0),
            request("a", &long, 0),
        ] {
            assert_eq!(
                m.request_room(&r, JOIN_CREATE, |_| panic!("sent")),
                Err(CommandError::InvalidName { max: MAX_NAME_LEN })
            );
        }
        // A request the queue refuses is not remembered either.
        let r = m.request_room(&request("a", "", 0), 0, |_| Err(CommandError::QueueFull));
        assert_eq!(r, Err(CommandError::QueueFull));
        assert!(m.requests.is_empty());
    }

    #[test]
    fn members_are_acknowledged_and_leaving_removes_the_group_and_its_room() {
        let mut m = Membership::default();
        let me = HostId(1);
        for member in [1, 2] {
            let mut acked = None;
            let joined = ControlMsg::MemberJoined {
                group: 5,
                member,
                member_count: 2,
            };
            assert!(m.handle_control(&joined, me, |r| acked = Some(format!("{r:?}"))));
            assert!(acked.is_some_and(|a| a.contains("MemberAck")));
        }
        assert_eq!(m.members(GroupId(5)), Some(&[HostId(1), HostId(2)][..]));
        let left = |member| ControlMsg::MemberLeft {
            group: 5,
            member,
            reason: 0,
        };
        assert!(m.handle_control(&left(2), me, |_| {}));
        assert_eq!(m.members(GroupId(5)), Some(&[HostId(1)][..]));
        assert!(m.handle_control(&left(1), me, |_| {}));
        assert!(!m.is_member(GroupId(5)));
        assert!(!m.handle_control(&ControlMsg::RoomJoinRandom, me, |_| {}));
    }
}
