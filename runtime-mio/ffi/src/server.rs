//! `PierceServer`: the sans-IO server. The command bodies in `cmd` also serve the driven
//! server and the host's server half.

use std::ffi::c_char;
use std::time::{Duration, Instant};

use pierce_core::{Events, GroupId, HostId, Server};

use crate::config::{PierceServerConfig, server_config};
use crate::error::{PierceResult, Result, err, guard};
use crate::event::{EventStore, PierceServerEvent};
use crate::handle::{self, Handle, Kind};
use crate::sans::{self, PierceSocketRequest, PierceTransmit, Sans, TxSlot};
use crate::stats::PierceServerStats;
use crate::types::{Clock, Out, PierceAddr, flag, read_addr, read_bytes, read_seed, read_str};

use PierceResult::*;

/// A sans-IO Pierce server (opaque). Create with `pierce_server_new`, free with
/// `pierce_server_free`. Single-threaded: it may move between threads, but never be used from
/// two at once.
pub struct PierceServer {
    server: Server,
    clock: Clock,
    tx: TxSlot,
    events: EventStore,
}

impl Handle for PierceServer {
    const KIND: Kind = Kind::Server;
    const NAME: &'static str = "PierceServer";
}

impl Sans for PierceServer {
    type E = Server;
    fn parts(&mut self) -> (&mut Server, &Clock, &mut TxSlot) {
        (&mut self.server, &self.clock, &mut self.tx)
    }
}

/// Wall-clock time since the Unix epoch: `unix_time_ms`, or the system clock for 0.
pub(crate) fn unix_time(unix_time_ms: u64) -> Duration {
    if unix_time_ms == 0 {
        pierce_mio::unix_time()
    } else {
        Duration::from_millis(unix_time_ms)
    }
}

/// Command bodies shared by every handle that has a server.
pub(crate) mod cmd {
    use super::*;

    pub(crate) fn public_key(s: &Server, out: *mut u8) -> Result<PierceResult> {
        Out::new(out.cast::<[u8; 32]>(), "out")?.write(s.public_key().0);
        Ok(PIERCE_OK)
    }

    pub(crate) fn send(
        s: &mut Server,
        now: Instant,
        host: u64,
        payload: *const u8,
        len: usize,
        reliable: u8,
    ) -> Result<PierceResult> {
        let payload = read_bytes(payload, len, "payload")?;
        if flag(reliable, "reliable")? {
            s.send_reliable(now, HostId(host), payload)?;
        } else {
            s.send(now, HostId(host), payload)?;
        }
        Ok(PIERCE_OK)
    }

    pub(crate) fn disconnect(
        s: &mut Server,
        now: Instant,
        host: u64,
        code: u16,
    ) -> Result<PierceResult> {
        s.disconnect(now, HostId(host), code)?;
        Ok(PIERCE_OK)
    }

    pub(crate) fn drain(s: &mut Server, now: Instant, within_ms: u32) -> Result<PierceResult> {
        s.drain(now, Duration::from_millis(within_ms.into()));
        Ok(PIERCE_OK)
    }

    pub(crate) fn create_group(
        s: &mut Server,
        now: Instant,
        members: *const u64,
        count: usize,
        out_group: *mut u64,
    ) -> Result<PierceResult> {
        let out = Out::new(out_group, "out_group")?;
        let members: Vec<HostId> = if count == 0 {
            Vec::new()
        } else if members.is_null() {
            return Err(crate::types::null("members"));
        } else {
            // SAFETY: non-NULL; the caller promises `count` entries.
            let raw = unsafe { std::slice::from_raw_parts(members, count) };
            raw.iter().copied().map(HostId).collect()
        };
        let g = s.create_group(now, &members)?;
        out.write(g.0);
        Ok(PIERCE_OK)
    }

    pub(crate) fn close_room(
        s: &mut Server,
        now: Instant,
        name: *const c_char,
        out_group: *mut u64,
    ) -> Result<PierceResult> {
        let name = read_str(name, "name")?;
        let g = s.close_room(now, name).map_err(|e| {
            let code = match e {
                pierce_core::RoomError::NotFound => PIERCE_UNKNOWN_GROUP,
                _ => PIERCE_INVALID_ARGUMENT,
            };
            err(code, format!("close_room {name:?}: {e:?}"))
        })?;
        if !out_group.is_null() {
            Out::new(out_group, "out_group")?.write(g.0);
        }
        Ok(PIERCE_OK)
    }

    pub(crate) fn stats(s: &Server, out: *mut PierceServerStats) -> Result<PierceResult> {
        Out::new(out, "out")?.write(crate::stats::server_stats(s));
        Ok(PIERCE_OK)
    }

    pub(crate) fn client_addr(s: &Server, host: u64, out: *mut PierceAddr) -> Result<PierceResult> {
        let out = Out::new(out, "out")?;
        let a = s.client_addr(HostId(host)).ok_or_else(|| {
            err(
                PIERCE_UNKNOWN_HOST,
                format!("no connected client host#{host}"),
            )
        })?;
        out.write(a.into());
        Ok(PIERCE_OK)
    }

    pub(crate) fn poll_event(
        s: &mut Server,
        store: &mut EventStore,
        out: *mut PierceServerEvent,
    ) -> Result<PierceResult> {
        let out = Out::new(out, "out")?;
        match s.poll_event() {
            Some(e) => {
                out.write(store.server(e));
                Ok(PIERCE_OK)
            }
            None => {
                store.clear();
                Ok(PIERCE_NO_MORE)
            }
        }
    }
}

/// Runs `body` on the server behind `s` with `now_us` mapped to its clock.
fn at(
    s: *mut PierceServer,
    now_us: u64,
    body: impl FnOnce(&mut Server, Instant) -> Result<PierceResult>,
) -> PierceResult {
    handle::with(s, |h| {
        let now = h.clock.at(now_us);
        body(&mut h.server, now)
    })
}

/// Creates a server from `config` (required: `pierce_server_config_default` fills it with a
/// fresh key). `seed`: 32 bytes from a CSPRNG, or NULL for the OS's; `now_us`: the caller's
/// monotonic clock, the origin of this server's time; `unix_time_ms`: wall-clock milliseconds
/// since the Unix epoch at `now_us` (connect token and ticket expiry), or 0 to read the system
/// clock. On success `*out` is the new handle (free it with `pierce_server_free`).
///
/// Errors: `PIERCE_INVALID_CONFIG`, `PIERCE_INVALID_ARGUMENT`, `PIERCE_IO`.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_new(
    config: *const PierceServerConfig,
    seed: *const u8,
    now_us: u64,
    unix_time_ms: u64,
    out: *mut *mut PierceServer,
) -> PierceResult {
    guard(|| {
        let out = Out::new(out, "out")?;
        let config = server_config(config)?;
        let seed = read_seed(seed)?;
        let clock = Clock::new(now_us);
        let server = Server::new(config, seed, clock.at(now_us), unix_time(unix_time_ms))?;
        out.write(handle::register(PierceServer {
            server,
            clock,
            tx: TxSlot::default(),
            events: EventStore::default(),
        }));
        Ok(PIERCE_OK)
    })
}

/// Frees a server (NULL: nothing happens). Clients are not told: they time out (or
/// `pierce_server_disconnect` each and drain `poll_transmit` first).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_free(s: *mut PierceServer) -> PierceResult {
    handle::free(s)
}

/// Hands the server one datagram that arrived from `from` on local socket `socket` (0: the
/// primary UDP socket; a stream id for a TCP stream's frame). Invalid datagrams are dropped and
/// counted.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_handle_datagram(
    s: *mut PierceServer,
    now_us: u64,
    socket: u16,
    from: *const PierceAddr,
    bytes: *const u8,
    len: usize,
) -> PierceResult {
    handle::with(s, |h| {
        sans::handle_datagram(h, now_us, socket, from, bytes, len)
    })
}

/// Advances the server's timers. Harmless early or often.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_handle_timeout(
    s: *mut PierceServer,
    now_us: u64,
) -> PierceResult {
    handle::with(s, |h| sans::handle_timeout(h, now_us))
}

/// As `pierce_client_poll_transmit`, for the server.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_poll_transmit(
    s: *mut PierceServer,
    now_us: u64,
    buf: *mut u8,
    cap: usize,
    out: *mut PierceTransmit,
) -> PierceResult {
    handle::with(s, |h| sans::poll_transmit(h, now_us, buf, cap, out))
}

/// As `pierce_client_poll_timeout`, for the server.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_poll_timeout(
    s: *mut PierceServer,
    out_us: *mut u64,
) -> PierceResult {
    handle::with(s, |h| sans::poll_timeout(h, out_us))
}

/// The next event into `*out` (`PIERCE_OK`), or `PIERCE_NO_MORE`. `payload` stays valid until
/// the next call on this handle.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_poll_event(
    s: *mut PierceServer,
    out: *mut PierceServerEvent,
) -> PierceResult {
    handle::with(s, |h| cmd::poll_event(&mut h.server, &mut h.events, out))
}

/// As `pierce_client_poll_socket_request`, for the server (NAT discovery's alternate
/// addresses).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_poll_socket_request(
    s: *mut PierceServer,
    out: *mut PierceSocketRequest,
) -> PierceResult {
    handle::with(s, |h| sans::poll_socket_request(h, out))
}

/// Reports how an `OPEN` socket request went (`local` NULL: it failed).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_handle_socket_opened(
    s: *mut PierceServer,
    now_us: u64,
    socket: u16,
    local: *const PierceAddr,
) -> PierceResult {
    handle::with(s, |h| sans::handle_socket_opened(h, now_us, socket, local))
}

/// Reports that an `OPEN` or `CONNECT` socket request failed: the same as
/// `pierce_server_handle_socket_opened` with a NULL address, for bindings where passing NULL
/// for a struct pointer is awkward.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_handle_socket_failed(
    s: *mut PierceServer,
    now_us: u64,
    socket: u16,
) -> PierceResult {
    handle::with(s, |h| {
        sans::handle_socket_opened(h, now_us, socket, std::ptr::null())
    })
}

/// Reports a TCP stream the caller accepted from `peer` and named `socket` (bit 15 set:
/// `PIERCE_STREAM_BIT | n`), before any frame of it.
///
/// Errors: `PIERCE_INVALID_ARGUMENT` for an id without bit 15.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_handle_stream_accepted(
    s: *mut PierceServer,
    now_us: u64,
    socket: u16,
    peer: *const PierceAddr,
) -> PierceResult {
    handle::with(s, |h| sans::handle_stream_accepted(h, now_us, socket, peer))
}

/// Reports that TCP stream `socket` ended by itself.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_handle_stream_closed(
    s: *mut PierceServer,
    now_us: u64,
    socket: u16,
) -> PierceResult {
    handle::with(s, |h| sans::handle_stream_closed(h, now_us, socket))
}

/// The server's public key (32 bytes into `out`): what clients pin.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_public_key(
    s: *mut PierceServer,
    out: *mut u8,
) -> PierceResult {
    handle::with(s, |h| cmd::public_key(&h.server, out))
}

/// Queues a message for client `host`: unreliable (`reliable` 0) or reliable and ordered (1).
///
/// Errors: `PIERCE_UNKNOWN_HOST`, `PIERCE_PAYLOAD_TOO_LARGE`, `PIERCE_QUEUE_FULL`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_send(
    s: *mut PierceServer,
    now_us: u64,
    host: u64,
    payload: *const u8,
    len: usize,
    reliable: u8,
) -> PierceResult {
    at(s, now_us, |s, now| {
        cmd::send(s, now, host, payload, len, reliable)
    })
}

/// Disconnects client `host` with close `code` (it is told; `CLIENT_LEFT` with `KICKED`
/// follows at once).
///
/// Errors: `PIERCE_UNKNOWN_HOST`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_disconnect(
    s: *mut PierceServer,
    now_us: u64,
    host: u64,
    code: u16,
) -> PierceResult {
    at(s, now_us, |s, now| cmd::disconnect(s, now, host, code))
}

/// Starts draining: no new clients or rooms; every client is told it has `within_ms` left
/// (`SERVER_DRAINING`). Closing the remaining sessions then is the caller's job
/// (`pierce_server_disconnect`). Calling it again tells the new `within_ms`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_drain(
    s: *mut PierceServer,
    now_us: u64,
    within_ms: u32,
) -> PierceResult {
    at(s, now_us, |s, now| cmd::drain(s, now, within_ms))
}

/// Creates a group of `count` connected clients (`members`; NULL with 0 for an empty group),
/// joined in that order; `*out_group` gets its id.
///
/// Errors: `PIERCE_UNKNOWN_HOST` (nothing is created then).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_create_group(
    s: *mut PierceServer,
    now_us: u64,
    members: *const u64,
    count: usize,
    out_group: *mut u64,
) -> PierceResult {
    at(s, now_us, |s, now| {
        cmd::create_group(s, now, members, count, out_group)
    })
}

/// Adds connected client `host` to `group`.
///
/// Errors: `PIERCE_UNKNOWN_GROUP`, `PIERCE_UNKNOWN_HOST`, `PIERCE_ALREADY`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_join_group(
    s: *mut PierceServer,
    now_us: u64,
    group: u64,
    host: u64,
) -> PierceResult {
    at(s, now_us, |s, now| {
        s.join_group(now, GroupId(group), HostId(host))?;
        Ok(PIERCE_OK)
    })
}

/// Removes `host` from `group` (every member is told).
///
/// Errors: `PIERCE_UNKNOWN_GROUP`, `PIERCE_NOT_MEMBER`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_leave_group(
    s: *mut PierceServer,
    now_us: u64,
    group: u64,
    host: u64,
) -> PierceResult {
    at(s, now_us, |s, now| {
        s.leave_group(now, GroupId(group), HostId(host))?;
        Ok(PIERCE_OK)
    })
}

/// Destroys `group`: members get `GROUP_DESTROYED`.
///
/// Errors: `PIERCE_UNKNOWN_GROUP`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_destroy_group(
    s: *mut PierceServer,
    now_us: u64,
    group: u64,
) -> PierceResult {
    at(s, now_us, |s, now| {
        s.destroy_group(now, GroupId(group))?;
        Ok(PIERCE_OK)
    })
}

/// Closes the room `name` (members get `GROUP_DESTROYED`); `*out_group` (if not NULL) gets
/// its group id.
///
/// Errors: `PIERCE_UNKNOWN_GROUP` (no such room), `PIERCE_INVALID_ARGUMENT` (no rooms policy).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_close_room(
    s: *mut PierceServer,
    now_us: u64,
    name: *const c_char,
    out_group: *mut u64,
) -> PierceResult {
    at(s, now_us, |s, now| cmd::close_room(s, now, name, out_group))
}

/// Turns on NAT behaviour discovery (RFC 5780): `primary` is the primary socket's bound
/// address, `alternate` a second address (another IP of this machine; port 0: any). The
/// extra sockets come as socket requests.
///
/// Errors: `PIERCE_INVALID_CONFIG` (unusable addresses, or already on).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_enable_nat_discovery(
    s: *mut PierceServer,
    primary: *const PierceAddr,
    alternate: *const PierceAddr,
) -> PierceResult {
    handle::with(s, |h| {
        let primary = read_addr(primary, "primary")?;
        let alternate = read_addr(alternate, "alternate")?;
        h.server.enable_nat_discovery(primary, alternate)?;
        Ok(PIERCE_OK)
    })
}

/// The address connected client `host`'s newest packet came from.
///
/// Errors: `PIERCE_UNKNOWN_HOST`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_client_addr(
    s: *mut PierceServer,
    host: u64,
    out: *mut PierceAddr,
) -> PierceResult {
    handle::with(s, |h| cmd::client_addr(&h.server, host, out))
}

/// The server's counters into `*out`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_server_stats(
    s: *mut PierceServer,
    out: *mut PierceServerStats,
) -> PierceResult {
    handle::with(s, |h| cmd::stats(&h.server, out))
}
