//! `PierceHost`: a server and its own client on one socket (a listen server), sans-IO.

use std::ffi::c_char;
use std::time::Instant;

use pierce_core::{Events, Host, HostEvent, Server};

use crate::client::cmd as client_cmd;
use crate::config::{PierceClientConfig, PierceSendOptions, PierceServerConfig};
use crate::error::{PierceResult, Result, guard};
use crate::event::{
    EventStore, PierceClientEvent, PierceClientEventKind, PierceHostEvent, PierceHostEventSide,
    PierceServerEvent, PierceServerEventKind,
};
use crate::handle::{self, Handle, Kind};
use crate::sans::{self, PierceSocketRequest, PierceTransmit, Sans, TxSlot};
use crate::server::{cmd as server_cmd, unix_time};
use crate::stats::{PierceHostStats, client_stats, server_stats};
use crate::types::{Clock, Out, PierceAddr, read_addr, read_bytes, read_seed};

use PierceResult::*;

/// A listen server: a Pierce server and the host player's own client on one socket (opaque).
/// Remote players connect to the host's address as to any server. Create with
/// `pierce_host_new`, free with `pierce_host_free`. Single-threaded: it may move between
/// threads, but never be used from two at once.
pub struct PierceHost {
    host: Host,
    clock: Clock,
    tx: TxSlot,
    events: EventStore,
}

impl Handle for PierceHost {
    const KIND: Kind = Kind::Host;
    const NAME: &'static str = "PierceHost";
}

impl Sans for PierceHost {
    type E = Host;
    fn parts(&mut self) -> (&mut Host, &Clock, &mut TxSlot) {
        (&mut self.host, &self.clock, &mut self.tx)
    }
}

fn at(
    h: *mut PierceHost,
    now_us: u64,
    body: impl FnOnce(&mut Host, Instant) -> Result<PierceResult>,
) -> PierceResult {
    handle::with(h, |x| {
        let now = x.clock.at(now_us);
        body(&mut x.host, now)
    })
}

/// Creates a host: a server from `server_config` (required) and the host's own client from
/// `client_config` (NULL: defaults; the client pins the server's key by itself), on a socket
/// that remote players reach at `addr` (a specific IP and port, not 0.0.0.0 or port 0),
/// presenting `token` (NULL and 0 if the server needs none). `seed`, `now_us`,
/// `unix_time_ms` as for `pierce_server_new`. The host's client is connected after the first
/// drain of `pierce_host_poll_transmit` (its handshake runs in memory).
///
/// Errors: `PIERCE_INVALID_CONFIG` (also for an unspecified address or port 0),
/// `PIERCE_INVALID_ARGUMENT`, `PIERCE_BAD_ADDRESS`, `PIERCE_IO`.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_new(
    server_config: *const PierceServerConfig,
    client_config: *const PierceClientConfig,
    seed: *const u8,
    now_us: u64,
    unix_time_ms: u64,
    addr: *const PierceAddr,
    token: *const u8,
    token_len: usize,
    out: *mut *mut PierceHost,
) -> PierceResult {
    guard(|| {
        let out = Out::new(out, "out")?;
        let sconfig = crate::config::server_config(server_config)?;
        let cconfig = crate::config::client_config(client_config)?;
        let addr = read_addr(addr, "addr")?;
        let token = read_bytes(token, token_len, "token")?;
        // One seed for both halves: the core derives each half's generator with its own label.
        let seed = read_seed(seed)?;
        let clock = Clock::new(now_us);
        let now = clock.at(now_us);
        let server = Server::new(sconfig, seed, now, unix_time(unix_time_ms))?;
        let host = Host::new(server, (*cconfig).clone(), seed, now, addr, token)?;
        out.write(handle::register(PierceHost {
            host,
            clock,
            tx: TxSlot::default(),
            events: EventStore::default(),
        }));
        Ok(PIERCE_OK)
    })
}

/// Frees a host (NULL: nothing happens).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_free(h: *mut PierceHost) -> PierceResult {
    handle::free(h)
}

/// Hands the host one datagram (peer traffic goes to its client, the rest to its server).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_handle_datagram(
    h: *mut PierceHost,
    now_us: u64,
    socket: u16,
    from: *const PierceAddr,
    bytes: *const u8,
    len: usize,
) -> PierceResult {
    handle::with(h, |x| {
        sans::handle_datagram(x, now_us, socket, from, bytes, len)
    })
}

/// Advances both halves' timers.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_handle_timeout(
    h: *mut PierceHost,
    now_us: u64,
) -> PierceResult {
    handle::with(h, |x| sans::handle_timeout(x, now_us))
}

/// As `pierce_client_poll_transmit`, for the host (traffic between its halves never leaves it).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_poll_transmit(
    h: *mut PierceHost,
    now_us: u64,
    buf: *mut u8,
    cap: usize,
    out: *mut PierceTransmit,
) -> PierceResult {
    handle::with(h, |x| sans::poll_transmit(x, now_us, buf, cap, out))
}

/// As `pierce_client_poll_timeout`, for the host.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_poll_timeout(
    h: *mut PierceHost,
    out_us: *mut u64,
) -> PierceResult {
    handle::with(h, |x| sans::poll_timeout(x, out_us))
}

/// The next event of either half into `*out` (`PIERCE_OK`; `side` says which), or
/// `PIERCE_NO_MORE`. Pointers in it stay valid until the next call on this handle.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_poll_event(
    h: *mut PierceHost,
    out: *mut PierceHostEvent,
) -> PierceResult {
    handle::with(h, |x| {
        let out = Out::new(out, "out")?;
        let Some(event) = x.host.poll_event() else {
            x.events.clear();
            return Ok(PIERCE_NO_MORE);
        };
        let server = PierceServerEvent::empty(PierceServerEventKind::PIERCE_SERVER_EVENT_OTHER);
        let client = PierceClientEvent::empty(PierceClientEventKind::PIERCE_CLIENT_EVENT_OTHER);
        out.write(match event {
            HostEvent::Server(e) => PierceHostEvent {
                side: PierceHostEventSide::PIERCE_HOST_EVENT_SERVER,
                server: x.events.server(e),
                client,
            },
            HostEvent::Client(e) => PierceHostEvent {
                side: PierceHostEventSide::PIERCE_HOST_EVENT_CLIENT,
                server,
                client: x.events.client(e),
            },
        });
        Ok(PIERCE_OK)
    })
}

/// As `pierce_server_poll_socket_request`, for the host.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_poll_socket_request(
    h: *mut PierceHost,
    out: *mut PierceSocketRequest,
) -> PierceResult {
    handle::with(h, |x| sans::poll_socket_request(x, out))
}

/// As `pierce_server_handle_socket_opened`, for the host.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_handle_socket_opened(
    h: *mut PierceHost,
    now_us: u64,
    socket: u16,
    local: *const PierceAddr,
) -> PierceResult {
    handle::with(h, |x| sans::handle_socket_opened(x, now_us, socket, local))
}

/// Reports that an `OPEN` or `CONNECT` socket request failed: the same as
/// `pierce_host_handle_socket_opened` with a NULL address, for bindings where passing NULL
/// for a struct pointer is awkward.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_handle_socket_failed(
    h: *mut PierceHost,
    now_us: u64,
    socket: u16,
) -> PierceResult {
    handle::with(h, |x| {
        sans::handle_socket_opened(x, now_us, socket, std::ptr::null())
    })
}

/// As `pierce_server_handle_stream_accepted`, for the host.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_handle_stream_accepted(
    h: *mut PierceHost,
    now_us: u64,
    socket: u16,
    peer: *const PierceAddr,
) -> PierceResult {
    handle::with(h, |x| sans::handle_stream_accepted(x, now_us, socket, peer))
}

/// As `pierce_server_handle_stream_closed`, for the host.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_handle_stream_closed(
    h: *mut PierceHost,
    now_us: u64,
    socket: u16,
) -> PierceResult {
    handle::with(h, |x| sans::handle_stream_closed(x, now_us, socket))
}

/// The host's player creates a room (as `pierce_client_create_room`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_create_room(
    h: *mut PierceHost,
    now_us: u64,
    name: *const c_char,
    password: *const c_char,
    max_members: u16,
    relay_only: u8,
) -> PierceResult {
    at(h, now_us, |x, now| {
        client_cmd::create_room(x.client_mut(), now, name, password, max_members, relay_only)
    })
}

/// The host's player joins a room (as `pierce_client_join_room`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_join_room(
    h: *mut PierceHost,
    now_us: u64,
    name: *const c_char,
    password: *const c_char,
    create: u8,
    max_members: u16,
    relay_only: u8,
) -> PierceResult {
    at(h, now_us, |x, now| {
        client_cmd::join_room(
            x.client_mut(),
            now,
            name,
            password,
            create,
            max_members,
            relay_only,
        )
    })
}

/// The host's player leaves a room (as `pierce_client_leave_room`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_leave_room(
    h: *mut PierceHost,
    now_us: u64,
    group: u64,
) -> PierceResult {
    at(h, now_us, |x, now| {
        client_cmd::leave_room(x.client_mut(), now, group)
    })
}

/// The host's player sends to a member (as `pierce_client_send`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_send(
    h: *mut PierceHost,
    now_us: u64,
    peer: u64,
    channel: u8,
    payload: *const u8,
    len: usize,
    options: *const PierceSendOptions,
    out_message_id: *mut u64,
) -> PierceResult {
    at(h, now_us, |x, now| {
        client_cmd::send(
            x.client_mut(),
            now,
            peer,
            channel,
            payload,
            len,
            options,
            out_message_id,
        )
    })
}

/// The host's player sends to every other member of a group (as `pierce_client_send_to_group`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_send_to_group(
    h: *mut PierceHost,
    now_us: u64,
    group: u64,
    channel: u8,
    payload: *const u8,
    len: usize,
) -> PierceResult {
    at(h, now_us, |x, now| {
        client_cmd::send_to_group(x.client_mut(), now, group, channel, payload, len)
    })
}

/// The server half sends to client `host` (as `pierce_server_send`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_server_send(
    h: *mut PierceHost,
    now_us: u64,
    host: u64,
    payload: *const u8,
    len: usize,
    reliable: u8,
) -> PierceResult {
    at(h, now_us, |x, now| {
        server_cmd::send(x.server_mut(), now, host, payload, len, reliable)
    })
}

/// The server half disconnects client `host` (as `pierce_server_disconnect`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_disconnect(
    h: *mut PierceHost,
    now_us: u64,
    host: u64,
    code: u16,
) -> PierceResult {
    at(h, now_us, |x, now| {
        server_cmd::disconnect(x.server_mut(), now, host, code)
    })
}

/// The server half starts draining (as `pierce_server_drain`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_drain(
    h: *mut PierceHost,
    now_us: u64,
    within_ms: u32,
) -> PierceResult {
    at(h, now_us, |x, now| {
        server_cmd::drain(x.server_mut(), now, within_ms)
    })
}

/// The server's public key (32 bytes into `out`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_public_key(h: *mut PierceHost, out: *mut u8) -> PierceResult {
    handle::with(h, |x| server_cmd::public_key(x.host.server(), out))
}

/// Both halves' counters into `*out`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_host_stats(
    h: *mut PierceHost,
    out: *mut PierceHostStats,
) -> PierceResult {
    handle::with(h, |x| {
        let out = Out::new(out, "out")?;
        out.write(PierceHostStats {
            server: server_stats(x.host.server()),
            client: client_stats(x.host.client()),
            spoofed_local: x.host.stats().spoofed_local,
        });
        Ok(PIERCE_OK)
    })
}
