//! The rooms policy, for servers with no game logic of their own (the stock `pierce server`):
//! clients create or join rooms by name (optionally with a password), join any open room,
//! list rooms, leave, and the owner may kick. Each room is a group; an empty room is
//! destroyed; when the owner leaves, the longest-standing member becomes owner.

use super::Server;
use crate::event::{GroupId, HostId, MemberLeftReason, RoomError, RoomOp};
use crate::time::Instant;
use crate::wire::control::{
    ControlMsg, JOIN_CREATE, JOIN_MUST_CREATE, MAX_NAME_LEN, ROOM_HAS_PASSWORD, RoomEntries,
    RoomEntry,
};

/// Room list bytes per answer: one control message must fit one datagram with room to spare.
const LIST_BUDGET: usize = 900;

pub(super) struct Room {
    pub(super) name: String,
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

impl Server {
    fn room_error(&mut self, to: HostId, op: RoomOp, error: RoomError) {
        self.send_control(
            to,
            &ControlMsg::RoomError {
                op: op.code(),
                reason: error.code(),
            },
        );
    }

    fn room_of(&self, group: GroupId) -> Option<&Room> {
        self.group(group)?.room.as_ref()
    }

    fn enter_room(&mut self, now: Instant, group: GroupId, host: HostId) {
        let Some(room) = self.room_of(group) else {
            return;
        };
        let msg_name = room.name.clone();
        let owner = room.owner;
        self.send_control(
            host,
            &ControlMsg::RoomJoined {
                group: group.0,
                owner: owner.0,
                name: &msg_name,
            },
        );
        self.join_inner(now, group, host);
    }

    pub(super) fn room_join(
        &mut self,
        now: Instant,
        from: HostId,
        flags: u8,
        max_members: u16,
        name: &str,
        password: &str,
    ) {
        let Some(cfg) = self.config.rooms.clone() else {
            return self.room_error(from, RoomOp::Join, RoomError::Disabled);
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN || password.len() > MAX_NAME_LEN {
            return self.room_error(from, RoomOp::Join, RoomError::InvalidName);
        }
        if let Some(&group) = self.rooms.get(name) {
            if flags & JOIN_MUST_CREATE != 0 {
                return self.room_error(from, RoomOp::Join, RoomError::AlreadyExists);
            }
            let Some(g) = self.group(group) else {
                return self.room_error(from, RoomOp::Join, RoomError::NotFound);
            };
            let Some(room) = &g.room else {
                return self.room_error(from, RoomOp::Join, RoomError::NotFound);
            };
            let error = if g.members.contains(&from) {
                Some(RoomError::AlreadyMember)
            } else if !same_secret(&room.password, password) {
                Some(RoomError::WrongPassword)
            } else if g.members.len() >= room.max_members as usize {
                Some(RoomError::Full)
            } else {
                None
            };
            return match error {
                Some(e) => self.room_error(from, RoomOp::Join, e),
                None => self.enter_room(now, group, from),
            };
        }
        if flags & (JOIN_CREATE | JOIN_MUST_CREATE) == 0 {
            return self.room_error(from, RoomOp::Join, RoomError::NotFound);
        }
        if self.rooms.len() >= cfg.max_rooms {
            return self.room_error(from, RoomOp::Join, RoomError::TooManyRooms);
        }
        let max_members = match max_members {
            0 => cfg.default_max_members,
            n => n.min(cfg.max_members_cap),
        }
        .max(1);
        let group = self.new_group(Some(Room {
            name: name.to_owned(),
            password: password.to_owned(),
            max_members,
            owner: from,
        }));
        self.rooms.insert(name.to_owned(), group);
        self.enter_room(now, group, from);
    }

    pub(super) fn room_join_random(&mut self, now: Instant, from: HostId) {
        if self.config.rooms.is_none() {
            return self.room_error(from, RoomOp::JoinRandom, RoomError::Disabled);
        }
        let open = self.rooms.values().copied().find(|&g| {
            self.group(g).is_some_and(|g| {
                g.room.as_ref().is_some_and(|r| {
                    r.password.is_empty() && g.members.len() < r.max_members as usize
                }) && !g.members.contains(&from)
            })
        });
        match open {
            Some(group) => self.enter_room(now, group, from),
            None => self.room_error(from, RoomOp::JoinRandom, RoomError::NotFound),
        }
    }

    pub(super) fn room_list(&mut self, from: HostId, offset: u16) {
        if self.config.rooms.is_none() {
            return self.room_error(from, RoomOp::List, RoomError::Disabled);
        }
        let mut entries = Vec::new();
        let mut used = 0;
        for &group in self.rooms.values().skip(offset as usize) {
            let Some(g) = self.group(group) else { continue };
            let Some(r) = &g.room else { continue };
            let e = RoomEntry {
                name: &r.name,
                members: g.members.len() as u16,
                max_members: r.max_members,
                flags: if r.password.is_empty() {
                    0
                } else {
                    ROOM_HAS_PASSWORD
                },
            };
            used += RoomEntries::entry_len(&e);
            if used > LIST_BUDGET || entries.len() == 255 {
                break;
            }
            entries.push(e);
        }
        let total = self.rooms.len().min(u16::MAX as usize) as u16;
        let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
        let mut w = crate::wire::Writer::new(&mut buf);
        let _ = w.u8(0x07);
        let _ = w.u16(total);
        let _ = w.u16(offset);
        if RoomEntries::encode_entries(&mut w, &entries).is_err() {
            return;
        }
        let n = w.len();
        // Decode our own encoding to hand `send_control` a typed message.
        if let Ok(msg) = ControlMsg::decode(&buf[..n]) {
            self.send_control(from, &msg);
        }
    }

    pub(super) fn room_leave(&mut self, now: Instant, from: HostId, group: GroupId) {
        let member = self
            .group(group)
            .is_some_and(|g| g.room.is_some() && g.members.contains(&from));
        if !member {
            return self.room_error(from, RoomOp::Leave, RoomError::NotMember);
        }
        self.leave_inner(now, group, from, MemberLeftReason::Left);
    }

    pub(super) fn room_kick(&mut self, now: Instant, from: HostId, group: GroupId, member: HostId) {
        let Some(g) = self.group(group) else {
            return self.room_error(from, RoomOp::Kick, RoomError::NotFound);
        };
        let Some(room) = &g.room else {
            return self.room_error(from, RoomOp::Kick, RoomError::NotFound);
        };
        if room.owner != from {
            return self.room_error(from, RoomOp::Kick, RoomError::NotOwner);
        }
        if member == from || !g.members.contains(&member) {
            return self.room_error(from, RoomOp::Kick, RoomError::NotMember);
        }
        self.leave_inner(now, group, member, MemberLeftReason::Kicked);
    }

    /// After a member left a room: destroy it if empty, hand ownership on if the owner left.
    pub(super) fn room_after_leave(&mut self, group: GroupId, left: HostId) {
        let Some(g) = self.group_mut(group) else {
            return;
        };
        let Some(room) = &mut g.room else {
            return;
        };
        if g.members.is_empty() {
            self.destroy_inner(group);
            return;
        }
        if room.owner == left {
            room.owner = g.members[0];
            let owner = room.owner;
            let members = g.members.clone();
            for m in members {
                self.send_control(
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
