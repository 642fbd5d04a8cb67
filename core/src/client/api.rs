//! The application's side of a [`Client`]: its getters and commands. Each goes straight to
//! the child machine that owns what it touches (see `mod.rs` for the children and the
//! routing); nothing here holds state or protocol logic of its own.

use std::net::SocketAddr;

use super::Client;
use super::membership::{CREATE_ONLY, RoomOptions, RoomRequest, join_flags};
use super::peers;
use super::session::Phase;
use crate::error::{CommandError, ConnectError, SendError};
use crate::event::{ClientEvent, DisconnectReason, GroupId, HostId};
use crate::nat::NatBehavior;
use crate::rudp::{Channel, ChannelStats, MessageId, PeerStats, SendOptions};
use crate::stats::ClientStats;
use crate::time::{Duration, Instant};
use crate::wire::control::{Candidates, ControlMsg};
use crate::wire::frame::{DATAGRAM_FRAME_OVERHEAD, MAX_TOKEN_LEN};
use crate::wire::sealed::OVERHEAD;

impl Client {
    // ---- getters -----------------------------------------------------------------------

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        let mut s = self.stats;
        s.io.time_went_backwards = self.clock.backwards();
        s.port_mapping = self.portmap.stats();
        s
    }

    /// True once [`ClientEvent::Connected`] was reported and until the session ends.
    pub fn is_connected(&self) -> bool {
        self.session.phase() == Phase::Connected
    }

    /// True once the session ended (or failed to start).
    pub fn is_closed(&self) -> bool {
        self.session.phase() == Phase::Closed
    }

    /// True while detached from the server with peers still reachable directly (see
    /// [`Client::detach_from_server`]).
    pub fn is_detached(&self) -> bool {
        self.session.phase() == Phase::Detached
    }

    /// The id the server gave this client, once connected.
    pub fn host_id(&self) -> Option<HostId> {
        self.session.host_id()
    }

    /// This client's address as the server sees it, once connected.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.session.public_addr()
    }

    /// Smoothed round-trip time to the server (an initial estimate until measured).
    pub fn server_rtt(&self) -> Option<Duration> {
        self.session.server_rtt()
    }

    /// The address of the server the session is with, or being made with: the one given to
    /// [`Client::connect`], or the one of [`Client::connect_any`]'s list in use now (read it
    /// at [`ClientEvent::Connected`] to learn which node welcomed the client). `None` while
    /// there is no session (detached, closed).
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.session.server_addr()
    }

    /// Whether the session with the server is on a TCP stream now (see
    /// [`crate::Transport`]).
    pub fn on_tcp(&self) -> bool {
        self.session.on_tcp()
    }

    /// What NAT behaviour discovery found about this client's NAT, once it finished.
    pub fn nat_behavior(&self) -> Option<NatBehavior> {
        self.discovery.behavior()
    }

    /// Largest payload [`Client::send_to_server`] accepts.
    pub fn max_server_payload(&self) -> usize {
        self.config.base_datagram_size() - OVERHEAD - DATAGRAM_FRAME_OVERHEAD
    }

    /// Largest payload [`Client::send_to_server_reliable`] accepts.
    pub fn max_reliable_server_payload(&self) -> usize {
        self.config.base_datagram_size()
            - OVERHEAD
            - crate::wire::frame::STREAM_FRAME_OVERHEAD
            - crate::wire::frame::STREAM_ACK_FRAME_LEN
            - 1
    }

    /// Groups this client is in, in id order.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.membership.groups()
    }

    /// Members of a group this client is in (itself included), in join order.
    pub fn group_members(&self, group: GroupId) -> Option<&[HostId]> {
        self.membership.members(group)
    }

    /// Members this client shares a group with, in id order.
    pub fn peers(&self) -> impl Iterator<Item = HostId> + '_ {
        self.peers.ids()
    }

    /// A peer's public address as the server observed it: `0.0.0.0:0` for a relay-only pair
    /// (IP privacy: [`crate::ClientConfig::private`] on either end, or a relay-only room).
    pub fn peer_addr(&self, peer: HostId) -> Option<SocketAddr> {
        self.peers.addr(peer)
    }

    /// Counters and estimates of the connection with a peer.
    pub fn peer_stats(&self, peer: HostId) -> Option<PeerStats> {
        self.peers.peer_stats(peer)
    }

    /// Counters of one channel of the connection with a peer.
    pub fn channel_stats(&self, peer: HostId, channel: Channel) -> Option<ChannelStats> {
        self.peers.channel_stats(peer, channel)
    }

    /// Largest reliable message [`Client::send`] accepts (fragmented on the wire).
    pub fn max_message_size(&self) -> usize {
        self.config.max_message_size
    }

    /// Largest message an unreliable channel accepts: one fragment, no fragmentation.
    pub fn max_unreliable_payload(&self) -> usize {
        peers::fragment_size(&self.config)
    }

    // ---- commands: the server ----------------------------------------------------------

    /// Starts connecting to `server`, presenting `token` (empty if the server needs none).
    ///
    /// # Errors
    /// [`ConnectError::AlreadyStarted`] unless the client is fresh;
    /// [`ConnectError::TokenTooLarge`] for a token over the protocol's limit.
    pub fn connect(
        &mut self,
        now: Instant,
        server: SocketAddr,
        token: &[u8],
    ) -> Result<(), ConnectError> {
        self.connect_any(now, &[server], token)
    }

    /// Starts connecting to one of `servers`: addresses of the nodes of one cluster, which
    /// share its server key (a pinned [`crate::ClientConfig::server_key`] verifies against
    /// each) and accept each other's resumption tickets. `token` is presented to whichever
    /// answers.
    ///
    /// - **First connect**: the addresses are tried in order; one that has not answered
    ///   within [`crate::ClientConfig::server_answer_timeout`] is given up for the next
    ///   (round the list again if time is left), all within
    ///   [`crate::ClientConfig::connect_timeout`]. A server that answers and then refuses
    ///   because it is draining or full is given up for the next address at once; once every
    ///   address has refused, or for any other refusal, the attempt ends
    ///   ([`DisconnectReason::Rejected`]), as with one address.
    /// - **Failover**: when the session is lost (it timed out: the node crashed or is cut
    ///   off; or a stateless reset said the node lost it), the client registers at once with
    ///   the next address of the list (round-robin from the one lost), presenting its
    ///   resumption ticket (same host id if the node accepts it) and the token, and rejoins
    ///   its rooms there ([`crate::ClientConfig::reregister`]). Meanwhile every peer is kept:
    ///   those on a direct path are not disturbed at all; relay-only ones wait (for
    ///   `idle_timeout`) for the new node to introduce them again (both members rejoined the
    ///   room there), and then resume with their reliability state, unacknowledged messages
    ///   sent again. A peer that is not introduced again in time is dropped
    ///   ([`ClientEvent::PeerDropped`]) with its unacknowledged messages reported
    ///   [`ClientEvent::MessageExpired`]: nothing is lost silently.
    /// - **Drain**: when the node says it is draining ([`ClientEvent::ServerDraining`]), the
    ///   client does not wait to be closed: it closes its session with that node at once
    ///   (the node sees it leave) and registers with the next address exactly as after a
    ///   reset (`Disconnected { reason: ServerDraining }`, then `Connected`). Rooms move
    ///   with their members, within a few round trips.
    /// - **Events**: `Disconnected { reason: TimedOut }` (or `Reset`) when the session is
    ///   lost, then `Connected` when a node welcomes the client again; [`Client::server_addr`]
    ///   names that node.
    ///
    /// Rooms live on one node: clients that fail over together meet again only if their
    /// lists agree on the order (the same list everywhere does). Placing rooms on nodes,
    /// redirects and single use of a ticket across the cluster need the cluster's directory.
    ///
    /// # Errors
    /// [`ConnectError::AlreadyStarted`] unless the client is fresh;
    /// [`ConnectError::TokenTooLarge`] for a token over the protocol's limit;
    /// [`ConnectError::ServerList`] for an empty list or one over [`Client::MAX_SERVERS`].
    pub fn connect_any(
        &mut self,
        now: Instant,
        servers: &[SocketAddr],
        token: &[u8],
    ) -> Result<(), ConnectError> {
        let now = self.clock.advance(now);
        if self.session.phase() != Phase::Idle {
            return Err(ConnectError::AlreadyStarted);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(ConnectError::TokenTooLarge { max: MAX_TOKEN_LEN });
        }
        if servers.is_empty() || servers.len() > Self::MAX_SERVERS {
            let max = Self::MAX_SERVERS;
            return Err(ConnectError::ServerList { max });
        }
        // Behind NAT64, an IPv4 server is reached at its synthesised address.
        let servers: smallvec::SmallVec<[SocketAddr; 4]> = (servers.iter())
            .map(|&s| self.config.reached_at(s))
            .collect();
        self.session.connect(now, &servers, token, &mut self.rng);
        Ok(())
    }

    /// Most addresses [`Client::connect_any`] takes: a client needs a few nodes to fail over
    /// to, not the whole cluster.
    pub const MAX_SERVERS: usize = 16;

    /// Queues an unreliable datagram for the server application.
    ///
    /// # Errors
    /// [`SendError::NotConnected`], [`SendError::PayloadTooLarge`] (see
    /// [`Client::max_server_payload`]) or [`SendError::QueueFull`].
    pub fn send_to_server(&mut self, now: Instant, payload: &[u8]) -> Result<(), SendError> {
        self.clock.advance(now);
        self.session.send_datagram(payload)
    }

    /// Queues a reliable, ordered message for the server application.
    ///
    /// # Errors
    /// [`SendError::NotConnected`], [`SendError::PayloadTooLarge`] (see
    /// [`Client::max_reliable_server_payload`]) or [`SendError::QueueFull`].
    pub fn send_to_server_reliable(
        &mut self,
        now: Instant,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.clock.advance(now);
        let max = self.max_reliable_server_payload();
        if payload.len() > max {
            return Err(SendError::PayloadTooLarge { max });
        }
        match self
            .session
            .push_control(&ControlMsg::App { data: payload })
        {
            Ok(()) => Ok(()),
            Err(CommandError::NotConnected) => Err(SendError::NotConnected),
            Err(CommandError::QueueFull) => Err(SendError::QueueFull),
            Err(_) => Err(SendError::PayloadTooLarge { max }),
        }
    }

    /// Ends the session with `code`, telling the server. Reports
    /// [`DisconnectReason::ClosedLocally`]. Does nothing if already closed.
    pub fn disconnect(&mut self, now: Instant, code: u16) {
        let now = self.clock.advance(now);
        self.portmap.close(now);
        if let Some(report) = self.session.disconnect(code) {
            self.forget_session();
            if report {
                let reason = DisconnectReason::ClosedLocally(code);
                self.push_event(ClientEvent::Disconnected { reason });
            }
        }
        self.drain(now);
    }

    /// Stops talking to the server but keeps every peer that has a validated direct path,
    /// with its pair key and reliability state, for [`crate::ClientConfig::pair_lifetime`] or until
    /// that path dies (no relay without a server); peers reachable only through the relay
    /// are dropped ([`ClientEvent::PeerDropped`] with [`crate::PeerDropReason::ServerLost`]).
    /// The same happens by itself when the server times out (it crashed or restarts), and
    /// then the client registers again with its resumption ticket ([`crate::ClientConfig::reregister`]).
    ///
    /// Nothing is said to the server: it sees this client go quiet, and members that stay
    /// connected to it hear `PeerRecovering`, then (after its recovery window) `MemberLeft`
    /// and drop the pair, so a whole group detaches together. Emits
    /// [`ClientEvent::Disconnected`] with [`DisconnectReason::Detached`].
    ///
    /// # Errors
    /// [`CommandError::NotConnected`] unless connected.
    pub fn detach_from_server(&mut self, now: Instant) -> Result<(), CommandError> {
        let now = self.clock.advance(now);
        if !self.is_connected() {
            return Err(CommandError::NotConnected);
        }
        let until = now + self.config.pair_lifetime;
        self.session.detach(now, until, false, false);
        let reason = DisconnectReason::Detached;
        self.push_event(ClientEvent::Disconnected { reason });
        self.forget_server(until, None);
        self.drain(now);
        Ok(())
    }

    /// Asks a STUN server (Pierce's own, or any standard one) which address it sees this
    /// client's socket as; answered by [`ClientEvent::StunResult`]. Works in any state, on
    /// the same socket as everything else.
    ///
    /// # Errors
    /// [`CommandError::QueueFull`] if too many queries are under way.
    pub fn query_stun(&mut self, now: Instant, server: SocketAddr) -> Result<(), CommandError> {
        let now = self.clock.advance(now);
        self.discovery.query(now, server, &mut self.rng)
    }

    /// Runs NAT behaviour discovery (RFC 5780) against `server`'s STUN service (a Pierce
    /// server with an alternate address, or any RFC 5780 STUN server), from the primary
    /// socket; answered by [`ClientEvent::NatDiscovered`]. Connected clients with
    /// [`crate::ClientConfig::nat_discovery`] run it against their server by themselves and report
    /// the result to it. Replaces a discovery under way.
    pub fn discover_nat(&mut self, now: Instant, server: SocketAddr) {
        let now = self.clock.advance(now);
        self.start_discovery(now, server, false);
    }

    /// Tells the server this client's local (LAN) addresses, so that peers behind the same
    /// NAT can reach it directly; runtimes call it with the socket's interface addresses
    /// (`pierce_mio::local_addresses`). Sent now if connected, else once connected; never
    /// with [`crate::ClientConfig::private`] (kept, and told to no one).
    ///
    /// # Errors
    /// [`CommandError::QueueFull`] if the control queue is full.
    pub fn set_local_addresses(
        &mut self,
        now: Instant,
        addrs: &[SocketAddr],
    ) -> Result<(), CommandError> {
        let now = self.clock.advance(now);
        self.local_addresses = Candidates::new(addrs);
        self.update_port_mapping(now);
        if self.is_connected() && !self.config.private {
            self.announce_candidates()?;
        }
        Ok(())
    }

    /// Tells the client its default gateway (runtimes read it from the OS:
    /// `pierce_mio::default_gateway`), or that there is none. With
    /// [`crate::ClientConfig::port_mapping`] on (and neither `private` nor `direct_paths`
    /// off), the client asks that gateway with PCP, else NAT-PMP, to forward the primary
    /// socket's UDP port (for the IPv4 local address on the gateway's network, from
    /// [`Client::set_local_addresses`]: call both, in any order), renews the mapping, and
    /// offers its public address to peers as a candidate; [`ClientEvent::PortMapping`]
    /// reports it and `stats().port_mapping` counts. A new gateway (or `None`) deletes the
    /// mapping at the old one; so does [`Client::disconnect`]. Only IPv4 gateways are asked.
    pub fn set_gateway(&mut self, now: Instant, gateway: Option<std::net::IpAddr>) {
        let now = self.clock.advance(now);
        self.gateway = gateway;
        self.update_port_mapping(now);
    }

    /// The public address the gateway forwards to this client (port mapping), while there
    /// is one.
    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        self.portmap.external()
    }

    // ---- commands: peers ---------------------------------------------------------------

    /// Queues a message for a member this client shares a group with, on `channel` (see
    /// [`crate::ChannelConfig::defaults`] for the default channels). Works from the moment
    /// [`ClientEvent::MemberJoined`] names that member: until a direct path exists the message
    /// goes through the server's relay, sealed end to end with the pair's key.
    ///
    /// # Errors
    /// [`SendError::NotConnected`], [`SendError::UnknownPeer`],
    /// [`SendError::UnknownChannel`], [`SendError::PayloadTooLarge`] (see
    /// [`Client::max_message_size`] and [`Client::max_unreliable_payload`]) or
    /// [`SendError::QueueFull`].
    pub fn send(
        &mut self,
        now: Instant,
        to: HostId,
        channel: Channel,
        payload: &[u8],
    ) -> Result<MessageId, SendError> {
        self.send_with(now, to, channel, payload, SendOptions::default())
    }

    /// [`Client::send`] with a deadline or retry budget; a reliable message that misses
    /// either is reported as [`ClientEvent::MessageExpired`] and never delivered afterwards.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub fn send_with(
        &mut self,
        now: Instant,
        to: HostId,
        channel: Channel,
        payload: &[u8],
        options: SendOptions,
    ) -> Result<MessageId, SendError> {
        let now = self.clock.advance(now);
        // Peers exist while connected, and (those kept on a direct path) while detached or
        // registering again after losing the server.
        let unknown = if self.is_connected() || self.is_detached() {
            SendError::UnknownPeer
        } else {
            SendError::NotConnected
        };
        self.peers
            .send(now, to, channel, payload, options)
            .unwrap_or(Err(unknown))
    }

    /// Queues a message for every other member of `group`.
    ///
    /// # Errors
    /// As [`Client::send`], plus [`SendError::NotMember`]. On an error no member gets it.
    pub fn send_to_group(
        &mut self,
        now: Instant,
        group: GroupId,
        channel: Channel,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let now = self.clock.advance(now);
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        let members = self.membership.members(group).ok_or(SendError::NotMember)?;
        let me = self.session.host_id();
        self.peers.send_to_all(now, members, me, channel, payload)
    }

    // ---- commands: rooms ---------------------------------------------------------------

    /// Joins the room `name`, creating it (with `max_members`, 0 for the server's default) if
    /// `create` and it does not exist. The answer is [`ClientEvent::RoomJoined`] (then
    /// `MemberJoined` for each member) or [`ClientEvent::RoomFailed`].
    ///
    /// # Errors
    /// [`CommandError::NotConnected`], [`CommandError::InvalidName`],
    /// [`CommandError::QueueFull`].
    pub fn join_room(
        &mut self,
        now: Instant,
        name: &str,
        password: &str,
        create: bool,
        max_members: u16,
    ) -> Result<(), CommandError> {
        let options = RoomOptions::new().max_members(max_members);
        self.join_room_with(now, name, password, create, options)
    }

    /// [`Client::join_room`] with [`RoomOptions`] for the room if this join creates it
    /// (relay-only rooms for IP privacy).
    ///
    /// # Errors
    /// As [`Client::join_room`].
    pub fn join_room_with(
        &mut self,
        now: Instant,
        name: &str,
        password: &str,
        create: bool,
        options: RoomOptions,
    ) -> Result<(), CommandError> {
        self.request_room(now, name, password, options, join_flags(create))
    }

    /// Creates the room `name`; fails with [`crate::RoomError::AlreadyExists`] if it exists.
    ///
    /// # Errors
    /// As [`Client::join_room`].
    pub fn create_room(
        &mut self,
        now: Instant,
        name: &str,
        password: &str,
        max_members: u16,
    ) -> Result<(), CommandError> {
        let options = RoomOptions::new().max_members(max_members);
        self.create_room_with(now, name, password, options)
    }

    /// [`Client::create_room`] with [`RoomOptions`] (relay-only rooms for IP privacy).
    ///
    /// # Errors
    /// As [`Client::join_room`].
    pub fn create_room_with(
        &mut self,
        now: Instant,
        name: &str,
        password: &str,
        options: RoomOptions,
    ) -> Result<(), CommandError> {
        self.request_room(now, name, password, options, CREATE_ONLY)
    }

    fn request_room(
        &mut self,
        now: Instant,
        name: &str,
        password: &str,
        options: RoomOptions,
        flags: u8,
    ) -> Result<(), CommandError> {
        self.clock.advance(now);
        let r = RoomRequest {
            name: name.to_owned(),
            password: password.to_owned(),
            max_members: options.max_members,
            relay_only: options.relay_only,
        };
        let session = &mut self.session;
        self.membership
            .request_room(&r, flags, |m| session.push_control(m))
    }

    /// Joins any room that has no password and room to spare.
    ///
    /// # Errors
    /// [`CommandError::NotConnected`] or [`CommandError::QueueFull`].
    pub fn join_random_room(&mut self, now: Instant) -> Result<(), CommandError> {
        self.clock.advance(now);
        self.session.push_control(&ControlMsg::RoomJoinRandom)
    }

    /// Asks for one page of the room list, starting at `offset`; answered by
    /// [`ClientEvent::RoomList`].
    ///
    /// # Errors
    /// [`CommandError::NotConnected`] or [`CommandError::QueueFull`].
    pub fn list_rooms(&mut self, now: Instant, offset: u16) -> Result<(), CommandError> {
        self.clock.advance(now);
        self.session
            .push_control(&ControlMsg::RoomListGet { offset })
    }

    /// Leaves a room.
    ///
    /// # Errors
    /// [`CommandError::NotConnected`], [`CommandError::NotMember`] or
    /// [`CommandError::QueueFull`].
    pub fn leave_room(&mut self, now: Instant, group: GroupId) -> Result<(), CommandError> {
        self.clock.advance(now);
        if self.is_connected() && !self.membership.is_member(group) {
            return Err(CommandError::NotMember);
        }
        self.session
            .push_control(&ControlMsg::RoomLeave { group: group.0 })?;
        self.membership.left_room(group);
        Ok(())
    }

    /// Removes a member from a room this client owns.
    ///
    /// # Errors
    /// [`CommandError::NotConnected`], [`CommandError::NotMember`] or
    /// [`CommandError::QueueFull`].
    pub fn kick(
        &mut self,
        now: Instant,
        group: GroupId,
        member: HostId,
    ) -> Result<(), CommandError> {
        self.clock.advance(now);
        if self.is_connected() && !self.membership.is_member(group) {
            return Err(CommandError::NotMember);
        }
        let (group, member) = (group.0, member.0);
        self.session
            .push_control(&ControlMsg::RoomKick { group, member })
    }
}
