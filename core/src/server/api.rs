//! The application's side of a [`Server`]: its getters and commands. Each goes to the child
//! machine that owns what it touches (see `mod.rs` for the children and the routing);
//! nothing here holds state or protocol logic of its own.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::groups::Roster;
use super::rooms::RoomSummary;
use super::{Server, node};
use crate::SocketId;
use crate::cluster::{DirectoryAnswer, DirectoryError, DirectoryRequest, NodeInfo, QueryId};
use crate::crypto::PublicKey;
use crate::error::{ConfigError, GroupError, SendError, UnknownHost};
use crate::event::{GroupId, HostId, LeaveReason, RoomError};
use crate::stats::ServerStats;
use crate::time::{Duration, Instant};
use crate::wire::control::ControlMsg;

impl Server {
    // ---- getters -----------------------------------------------------------------------

    /// The public key clients may pin.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        let mut s = self.stats;
        s.io.time_went_backwards = self.clock.backwards();
        s.io.events_dropped = self.events.dropped();
        s.clients = self.sessions.clients() as u64;
        s.half_open = self.sessions.half_open() as u64;
        s.groups = self.groups.len() as u64;
        s.rooms = self.rooms.len() as u64;
        s.pairs = self.groups.pairs() as u64;
        s.pairs_direct = self.groups.pairs_direct() as u64;
        s
    }

    /// The address a connected client's newest packet came from.
    pub fn client_addr(&self, host: HostId) -> Option<SocketAddr> {
        self.sessions.client(host).map(|(path, _)| path.addr)
    }

    /// The local socket a client's session is on: [`SocketId::PRIMARY`] (UDP) or a TCP
    /// stream ([`SocketId::is_stream`]).
    pub fn client_socket(&self, host: HostId) -> Option<SocketId> {
        self.sessions.client(host).map(|(path, _)| path.socket)
    }

    /// The user id from a connected client's connect token (when tokens are required).
    pub fn client_user_id(&self, host: HostId) -> Option<u64> {
        self.sessions.client(host).and_then(|(_, user_id)| user_id)
    }

    /// Connected clients, in id order.
    pub fn clients(&self) -> impl Iterator<Item = HostId> + '_ {
        self.sessions.hosts()
    }

    /// Largest payload [`Server::send`] accepts.
    pub fn max_payload(&self) -> usize {
        self.sessions.max_payload()
    }

    /// Largest payload [`Server::send_reliable`] accepts.
    pub fn max_reliable_payload(&self) -> usize {
        self.sessions.max_reliable_payload()
    }

    /// Members of a group, in join order.
    pub fn group_members(&self, group: GroupId) -> Option<&[HostId]> {
        self.groups.members(group)
    }

    /// Groups, in id order.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.ids()
    }

    /// Groups a connected client is in.
    pub fn client_groups(&self, host: HostId) -> Option<&[GroupId]> {
        self.sessions.established_key(host)?;
        Some(self.groups.client_groups(host))
    }

    /// A connected client's smoothed round-trip time on its session (the initial estimate
    /// until its first control message is acknowledged).
    pub fn client_rtt(&self, host: HostId) -> Option<Duration> {
        self.sessions.established_key(host)?;
        self.sessions.card(host).map(|c| c.srtt)
    }

    /// The rooms (with the rooms policy; none without), in name order.
    pub fn rooms(&self) -> Vec<RoomSummary> {
        self.rooms.summaries(&self.groups)
    }

    /// Whether [`Server::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The bound address of local socket `id`, once known.
    pub fn socket_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.stun.socket_addr(id)
    }

    // ---- commands ----------------------------------------------------------------------

    /// Queues an unreliable datagram for a client.
    ///
    /// # Errors
    /// [`SendError::UnknownHost`], [`SendError::PayloadTooLarge`] or [`SendError::QueueFull`].
    pub fn send(&mut self, now: Instant, to: HostId, payload: &[u8]) -> Result<(), SendError> {
        self.clock.advance(now);
        self.sessions.send_datagram(to, payload)
    }

    /// Queues a reliable, ordered message for a client (on its control stream).
    ///
    /// # Errors
    /// [`SendError::UnknownHost`], [`SendError::PayloadTooLarge`] or [`SendError::QueueFull`].
    pub fn send_reliable(
        &mut self,
        now: Instant,
        to: HostId,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let now = self.clock.advance(now);
        self.sessions.send_reliable(now, to, payload)
    }

    /// Disconnects a client with `code`: it is told, it leaves its groups (their members see
    /// `MemberLeft`), and [`crate::ServerEvent::ClientLeft`] with [`LeaveReason::Kicked`] is reported
    /// at once.
    ///
    /// # Errors
    /// [`UnknownHost`] if no connected client has that id.
    pub fn disconnect(&mut self, now: Instant, host: HostId, code: u16) -> Result<(), UnknownHost> {
        self.command(now, |s, now| {
            let key = s.sessions.established_key(host).ok_or(UnknownHost(host))?;
            s.end_client(now, key, LeaveReason::Kicked(code), Some(code));
            Ok(())
        })
    }

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
        self.command(now, |s, _| {
            s.groups.create_with(members, &mut s.rng, &s.sessions)
        })
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
        self.command(now, |s, _| {
            s.groups.join_checked(group, host, &mut s.rng, &s.sessions)
        })
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
        self.command(now, |s, _| s.rooms.leave_group(&mut s.groups, group, host))
    }

    /// Destroys a group: members get `GroupDestroyed`, pairs that shared only this group are
    /// torn down.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`].
    pub fn destroy_group(&mut self, now: Instant, group: GroupId) -> Result<(), GroupError> {
        let destroyed = self.command(now, |s, _| s.rooms.destroy(&mut s.groups, group));
        destroyed.then_some(()).ok_or(GroupError::UnknownGroup)
    }

    /// Closes the room called `name` (the rooms policy's): its members get `GroupDestroyed`
    /// (their `RoomLeft`), pairs that shared only this room are torn down. Returns its group.
    ///
    /// # Errors
    /// [`RoomError::NotFound`], or [`RoomError::Disabled`] without the rooms policy.
    pub fn close_room(&mut self, now: Instant, name: &str) -> Result<GroupId, RoomError> {
        self.command(now, |s, _| s.rooms.close(&mut s.groups, name))
    }

    /// Starts draining: from now on new sessions are refused
    /// ([`crate::RejectReason::Draining`]) and rooms are not created
    /// ([`RoomError::Draining`]); every connected client is told, with `within` (the time
    /// left before the runtime closes the sessions that remain:
    /// [`crate::ClientEvent::ServerDraining`]), and clients that connect meanwhile cannot.
    /// Existing sessions, rooms, pairs and relaying go on until the runtime disconnects them.
    /// Calling it again tells the clients the new `within`.
    ///
    /// A cluster node ([`crate::ServerConfig::cluster`]) instead moves its rooms: it tells the
    /// directory it drains, and once the directory answered (or
    /// [`crate::cluster::ClusterConfig::answer_timeout`] passed) hands each room to the
    /// least-loaded other active node in that answer and redirects the room's members there
    /// (with no such node they are told it drains). Clients in no room are told at once.
    pub fn drain(&mut self, now: Instant, within: Duration) {
        self.command(now, |s, now| {
            s.draining = true;
            s.sessions.set_draining();
            s.rooms.set_draining();
            let within_ms = u32::try_from(within.as_millis()).unwrap_or(u32::MAX);
            let mut told: BTreeSet<HostId> = BTreeSet::new();
            if s.node.is_some() {
                told = s.move_rooms(now);
            }
            let hosts: Vec<HostId> = s.sessions.hosts().collect();
            for host in hosts.into_iter().filter(|h| !told.contains(h)) {
                s.groups
                    .push_control(host, &ControlMsg::Draining { within_ms });
            }
        });
    }

    // ---- cluster -------------------------------------------------------------------------

    /// The next question for the cluster directory (only with [`ServerConfig::cluster`]):
    /// answer it, in any order, with [`Server::handle_directory`] (a question unanswered for
    /// [`crate::cluster::ClusterConfig::answer_timeout`] has failed). Drain after every call
    /// into the server, as [`Endpoint::poll_transmit`](crate::Endpoint::poll_transmit).
    ///
    /// [`ServerConfig::cluster`]: crate::ServerConfig::cluster
    pub fn poll_directory(&mut self) -> Option<(QueryId, DirectoryRequest)> {
        self.node.as_mut()?.poll_request()
    }

    /// The directory's answer to question `id` (see [`Server::poll_directory`]); a late
    /// one, or one for no question, is ignored.
    pub fn handle_directory(
        &mut self,
        now: Instant,
        id: QueryId,
        answer: Result<DirectoryAnswer, DirectoryError>,
    ) {
        self.command(now, |s, now| {
            if let Some(node) = &mut s.node {
                node.handle_answer(now, id, answer);
            }
        });
    }

    /// The runtime's measure of this process's CPU use, in percent of one core, published
    /// with the next heartbeats ([`crate::cluster::NodeLoad::cpu_percent`]).
    pub fn report_cpu(&mut self, percent: u16) {
        if let Some(node) = &mut self.node {
            node.set_cpu(percent);
        }
    }

    /// This cluster node's number (the high 16 bits of its host ids), once the directory gave
    /// it; `None` before, and for a server on its own.
    pub fn node_number(&self) -> Option<u16> {
        self.node.as_ref()?.number()
    }

    /// The cluster's nodes as this node last heard of them (empty for a server on its own).
    pub fn cluster_nodes(&self) -> &[NodeInfo] {
        self.node.as_ref().map_or(&[], |n| n.known().0)
    }

    /// Whether the directory answered this node's last question (`true` for a server on its
    /// own).
    pub fn directory_reachable(&self) -> bool {
        self.node.as_ref().is_none_or(node::Node::is_reachable)
    }

    /// The node leaves the cluster (before its process exits): one last question
    /// ([`DirectoryRequest::Leave`]) that releases its rooms at once instead of when their
    /// claims expire. Deliver it before exiting.
    pub fn leave_cluster(&mut self, now: Instant) {
        self.command(now, |s, now| {
            if let Some(node) = &mut s.node {
                node.leave(now);
            }
        });
    }

    /// Turns on NAT behaviour discovery (RFC 5780): STUN answers on `alternate` too, and on the
    /// two crossings of the addresses when the IPs differ, so clients can classify their NAT's
    /// mapping and filtering ([`crate::Client::discover_nat`], standard tools such as
    /// `turnutils_natdiscovery`). `primary` is the primary socket's bound address; the others
    /// are requested through [`crate::Endpoint::poll_socket_request`] (`alternate` may have port 0).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if the addresses are unusable (unspecified, mixed families,
    /// equal) or discovery is already on.
    pub fn enable_nat_discovery(
        &mut self,
        primary: SocketAddr,
        alternate: SocketAddr,
    ) -> Result<(), ConfigError> {
        self.stun.enable_discovery(primary, alternate)
    }
}
