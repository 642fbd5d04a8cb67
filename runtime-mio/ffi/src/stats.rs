//! Counters and state snapshots as C structs.

use pierce_core::{Client, ClientStats, Path, PeerStats, Server, ServerStats};
use pierce_mio::DriverStats;

use crate::types::PierceAddr;

/// Where a client's session stands (`PierceClientStats`'s `state`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceClientState {
    /// Fresh, or connecting.
    PIERCE_CLIENT_IDLE = 0,
    /// Connected to the server.
    PIERCE_CLIENT_CONNECTED = 1,
    /// Detached from the server, direct peers kept.
    PIERCE_CLIENT_DETACHED = 2,
    /// The session ended (or could not start).
    PIERCE_CLIENT_CLOSED = 3,
}

/// A client's state and counters (`pierce_client_stats`, `pierce_driver_client_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PierceClientStats {
    /// A `PierceClientState`.
    pub state: u32,
    /// 1 if the session with the server runs over a TCP stream now.
    pub on_tcp: u8,
    /// This client's host id once connected (0 before).
    pub host_id: u64,
    /// Its public address as the server sees it, once connected.
    pub public_addr: PierceAddr,
    /// Smoothed round-trip time to the server, microseconds (0 before connecting).
    pub server_rtt_us: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Datagrams dropped as invalid, every reason together.
    pub dropped: u64,
    /// Events dropped because nobody drained `poll_event`.
    pub events_dropped: u64,
    /// Times `now_us` went backwards and was clamped.
    pub time_went_backwards: u64,
    /// Peer packets sent through the server's relay.
    pub relayed_out: u64,
    /// Peer packets received through the relay.
    pub relayed_in: u64,
    /// Direct paths validated.
    pub direct_paths: u64,
    /// Handshake hellos sent.
    pub hellos_sent: u64,
    /// Control messages sent again.
    pub control_retransmits: u64,
}

/// One peer connection's estimates and counters (`pierce_client_peer_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PiercePeerStats {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u64,
    /// Round-trip time variation, microseconds.
    pub rtt_var_us: u64,
    /// Packets lost / packets sent, since the connection began.
    pub loss: f64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Messages queued by the application.
    pub messages_out: u64,
    /// Messages delivered to the application.
    pub messages_in: u64,
    /// Fragments sent again.
    pub retransmits: u64,
    /// Reliable messages neither acknowledged nor expired yet.
    pub unacked: u64,
    /// Bytes waiting to be sent for the first time.
    pub queued_bytes: u64,
    /// 1 if traffic goes on a direct path (to `direct_addr`), 0 through the relay.
    pub direct: u8,
    /// The direct path's address (family 0 on the relay).
    pub direct_addr: PierceAddr,
}

/// A server's counters (`pierce_server_stats`, `pierce_driver_server_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PierceServerStats {
    /// Connected clients.
    pub clients: u64,
    /// Half-open handshakes.
    pub half_open: u64,
    /// Groups (rooms included).
    pub groups: u64,
    /// Member pairs.
    pub pairs: u64,
    /// Member pairs on a direct path.
    pub pairs_direct: u64,
    /// 1 once `drain` was called.
    pub draining: u8,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Datagrams dropped as invalid or over a limit, every reason together.
    pub dropped: u64,
    /// Events dropped because nobody drained `poll_event`.
    pub events_dropped: u64,
    /// Times `now_us` went backwards and was clamped.
    pub time_went_backwards: u64,
    /// Handshakes started.
    pub handshakes_started: u64,
    /// Handshakes completed.
    pub handshakes_completed: u64,
    /// Handshakes rejected.
    pub handshakes_rejected: u64,
    /// Clients dropped for silence.
    pub clients_timed_out: u64,
    /// Peer packets relayed.
    pub relayed_packets: u64,
    /// Peer bytes relayed.
    pub relayed_bytes: u64,
    /// STUN requests answered.
    pub stun_answered: u64,
}

/// A host's counters: both halves (`pierce_host_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PierceHostStats {
    /// The server half's.
    pub server: PierceServerStats,
    /// The host's own client's.
    pub client: PierceClientStats,
    /// Datagrams from the network that claimed the host's own address (dropped).
    pub spoofed_local: u64,
}

/// The driven layer's socket counters (`pierce_driver_*_io_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PierceDriverStats {
    /// Datagrams read from the sockets and handed to the endpoint.
    pub datagrams_received: u64,
    /// Datagrams handed to the sockets.
    pub datagrams_sent: u64,
    /// Datagrams the OS refused with a hard error.
    pub send_errors: u64,
    /// Receive errors ignored (stray ICMP).
    pub recv_errors_ignored: u64,
    /// Pumps that stopped reading at the receive budget.
    pub budget_exhausted: u64,
    /// Sockets the endpoint asked for that could not be opened.
    pub socket_open_failures: u64,
    /// TCP streams accepted.
    pub streams_accepted: u64,
    /// TCP streams connected.
    pub streams_connected: u64,
    /// TCP streams that ended by themselves.
    pub streams_closed: u64,
}

pub(crate) fn client_stats(c: &Client) -> PierceClientStats {
    let s: ClientStats = c.stats();
    let state = if c.is_connected() {
        PierceClientState::PIERCE_CLIENT_CONNECTED
    } else if c.is_detached() {
        PierceClientState::PIERCE_CLIENT_DETACHED
    } else if c.is_closed() {
        PierceClientState::PIERCE_CLIENT_CLOSED
    } else {
        PierceClientState::PIERCE_CLIENT_IDLE
    };
    let connected = c.is_connected();
    PierceClientStats {
        state: state as u32,
        on_tcp: c.on_tcp().into(),
        host_id: c.host_id().map_or(0, |h| h.0),
        public_addr: c.public_addr().into(),
        server_rtt_us: c
            .server_rtt()
            .filter(|_| connected)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        datagrams_in: s.io.datagrams_in,
        bytes_in: s.io.bytes_in,
        datagrams_out: s.io.datagrams_out,
        bytes_out: s.io.bytes_out,
        dropped: s.dropped.total(),
        events_dropped: s.io.events_dropped,
        time_went_backwards: s.io.time_went_backwards,
        relayed_out: s.relayed_out,
        relayed_in: s.relayed_in,
        direct_paths: s.direct_paths,
        hellos_sent: s.hellos_sent,
        control_retransmits: s.control_retransmits,
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn peer_stats(p: &PeerStats) -> PiercePeerStats {
    let (direct, direct_addr) = match p.path {
        Path::Direct(a) => (1, a.into()),
        Path::Relay => (0, PierceAddr::NONE),
    };
    PiercePeerStats {
        rtt_us: micros(p.rtt),
        rtt_var_us: micros(p.rtt_var),
        loss: p.loss,
        packets_sent: p.packets_sent,
        packets_lost: p.packets_lost,
        bytes_out: p.bytes_out,
        bytes_in: p.bytes_in,
        messages_out: p.messages_out,
        messages_in: p.messages_in,
        retransmits: p.retransmits,
        unacked: p.unacked as u64,
        queued_bytes: p.queued_bytes as u64,
        direct,
        direct_addr,
    }
}

pub(crate) fn server_stats(server: &Server) -> PierceServerStats {
    let s: ServerStats = server.stats();
    PierceServerStats {
        clients: s.clients,
        half_open: s.half_open,
        groups: s.groups,
        pairs: s.pairs,
        pairs_direct: s.pairs_direct,
        draining: server.is_draining().into(),
        datagrams_in: s.io.datagrams_in,
        bytes_in: s.io.bytes_in,
        datagrams_out: s.io.datagrams_out,
        bytes_out: s.io.bytes_out,
        dropped: s.dropped.total(),
        events_dropped: s.io.events_dropped,
        time_went_backwards: s.io.time_went_backwards,
        handshakes_started: s.handshakes_started,
        handshakes_completed: s.handshakes_completed,
        handshakes_rejected: s.handshakes_rejected,
        clients_timed_out: s.clients_timed_out,
        relayed_packets: s.relayed_packets,
        relayed_bytes: s.relayed_bytes,
        stun_answered: s.stun_answered,
    }
}

pub(crate) fn driver_stats(s: &DriverStats) -> PierceDriverStats {
    PierceDriverStats {
        datagrams_received: s.datagrams_received,
        datagrams_sent: s.datagrams_sent,
        send_errors: s.send_errors,
        recv_errors_ignored: s.recv_errors_ignored,
        budget_exhausted: s.budget_exhausted,
        socket_open_failures: s.socket_open_failures,
        streams_accepted: s.streams_accepted,
        streams_connected: s.streams_connected,
        streams_closed: s.streams_closed,
    }
}
