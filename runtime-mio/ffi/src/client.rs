//! `PierceClient`: the sans-IO client. The caller owns the sockets and the clock; the shared
//! command bodies in `cmd` also serve the driven client and the host's client half.

use std::ffi::c_char;
use std::time::Instant;

use pierce_core::{Client, Events, GroupId, HostId, RoomOptions};

use crate::config::{PierceClientConfig, PierceSendOptions, channel, client_config, send_options};
use crate::error::{PierceResult, Result, err, guard};
use crate::event::{EventStore, PierceClientEvent};
use crate::handle::{self, Handle, Kind};
use crate::sans::{self, PierceSocketRequest, PierceTransmit, Sans, TxSlot};
use crate::stats::{PierceClientStats, PiercePeerStats};
use crate::types::{
    Clock, Out, PierceAddr, flag, read_addr, read_bytes, read_opt_str, read_seed, read_str,
};

use PierceResult::*;

/// A sans-IO Pierce client (opaque). Create with `pierce_client_new`, free with
/// `pierce_client_free`. Single-threaded: it may move between threads, but never be used from
/// two at once.
pub struct PierceClient {
    client: Client,
    clock: Clock,
    tx: TxSlot,
    events: EventStore,
}

impl Handle for PierceClient {
    const KIND: Kind = Kind::Client;
    const NAME: &'static str = "PierceClient";
}

impl Sans for PierceClient {
    type E = Client;
    fn parts(&mut self) -> (&mut Client, &Clock, &mut TxSlot) {
        (&mut self.client, &self.clock, &mut self.tx)
    }
}

/// Command bodies shared by every handle that has a client.
pub(crate) mod cmd {
    use super::*;

    pub(crate) fn connect(
        c: &mut Client,
        now: Instant,
        server: *const PierceAddr,
        token: *const u8,
        token_len: usize,
    ) -> Result<PierceResult> {
        let server = read_addr(server, "server")?;
        let token = read_bytes(token, token_len, "token")?;
        c.connect(now, server, token)?;
        Ok(PIERCE_OK)
    }

    fn options(max_members: u16, relay_only: u8) -> Result<RoomOptions> {
        Ok(RoomOptions::new()
            .max_members(max_members)
            .relay_only(flag(relay_only, "relay_only")?))
    }

    pub(crate) fn join_room(
        c: &mut Client,
        now: Instant,
        name: *const c_char,
        password: *const c_char,
        create: u8,
        max_members: u16,
        relay_only: u8,
    ) -> Result<PierceResult> {
        let name = read_str(name, "name")?;
        let password = read_opt_str(password, "password")?;
        let create = flag(create, "create")?;
        c.join_room_with(
            now,
            name,
            password,
            create,
            options(max_members, relay_only)?,
        )?;
        Ok(PIERCE_OK)
    }

    pub(crate) fn create_room(
        c: &mut Client,
        now: Instant,
        name: *const c_char,
        password: *const c_char,
        max_members: u16,
        relay_only: u8,
    ) -> Result<PierceResult> {
        let name = read_str(name, "name")?;
        let password = read_opt_str(password, "password")?;
        c.create_room_with(now, name, password, options(max_members, relay_only)?)?;
        Ok(PIERCE_OK)
    }

    pub(crate) fn leave_room(c: &mut Client, now: Instant, group: u64) -> Result<PierceResult> {
        c.leave_room(now, GroupId(group))?;
        Ok(PIERCE_OK)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send(
        c: &mut Client,
        now: Instant,
        peer: u64,
        ch: u8,
        payload: *const u8,
        len: usize,
        options: *const PierceSendOptions,
        out_message_id: *mut u64,
    ) -> Result<PierceResult> {
        let out = if out_message_id.is_null() {
            None
        } else {
            Some(Out::new(out_message_id, "out_message_id")?)
        };
        let payload = read_bytes(payload, len, "payload")?;
        let options = send_options(options, now)?;
        let id = c.send_with(now, HostId(peer), channel(ch), payload, options)?;
        if let Some(out) = out {
            out.write(id.0);
        }
        Ok(PIERCE_OK)
    }

    pub(crate) fn send_to_group(
        c: &mut Client,
        now: Instant,
        group: u64,
        ch: u8,
        payload: *const u8,
        len: usize,
    ) -> Result<PierceResult> {
        let payload = read_bytes(payload, len, "payload")?;
        c.send_to_group(now, GroupId(group), channel(ch), payload)?;
        Ok(PIERCE_OK)
    }

    pub(crate) fn send_to_server(
        c: &mut Client,
        now: Instant,
        payload: *const u8,
        len: usize,
        reliable: u8,
    ) -> Result<PierceResult> {
        let payload = read_bytes(payload, len, "payload")?;
        if flag(reliable, "reliable")? {
            c.send_to_server_reliable(now, payload)?;
        } else {
            c.send_to_server(now, payload)?;
        }
        Ok(PIERCE_OK)
    }

    pub(crate) fn detach(c: &mut Client, now: Instant) -> Result<PierceResult> {
        c.detach_from_server(now)?;
        Ok(PIERCE_OK)
    }

    pub(crate) fn stats(c: &Client, out: *mut PierceClientStats) -> Result<PierceResult> {
        Out::new(out, "out")?.write(crate::stats::client_stats(c));
        Ok(PIERCE_OK)
    }

    pub(crate) fn peer_stats(
        c: &Client,
        peer: u64,
        out: *mut PiercePeerStats,
    ) -> Result<PierceResult> {
        let out = Out::new(out, "out")?;
        let s = c.peer_stats(HostId(peer)).ok_or_else(|| {
            err(
                PIERCE_UNKNOWN_PEER,
                format!("no peer host#{peer} shares a group with this client"),
            )
        })?;
        out.write(crate::stats::peer_stats(&s));
        Ok(PIERCE_OK)
    }

    pub(crate) fn poll_event(
        c: &mut Client,
        store: &mut EventStore,
        out: *mut PierceClientEvent,
    ) -> Result<PierceResult> {
        let out = Out::new(out, "out")?;
        match c.poll_event() {
            Some(e) => {
                out.write(store.client(e));
                Ok(PIERCE_OK)
            }
            None => {
                store.clear();
                Ok(PIERCE_NO_MORE)
            }
        }
    }
}

/// Runs `body` on the client behind `c` with `now_us` mapped to its clock.
fn at(
    c: *mut PierceClient,
    now_us: u64,
    body: impl FnOnce(&mut Client, Instant) -> Result<PierceResult>,
) -> PierceResult {
    handle::with(c, |h| {
        let now = h.clock.at(now_us);
        body(&mut h.client, now)
    })
}

/// Creates a client. `config`: NULL for the defaults, or settings from
/// `pierce_client_config_default`; `seed`: 32 bytes from a CSPRNG, or NULL to draw them from
/// the OS (every key and id the client makes derives from it); `now_us`: the caller's
/// monotonic clock in microseconds, the origin of this client's time (every later `now_us` on
/// this handle must come from the same clock; earlier values are clamped). On success `*out`
/// is the new handle (free it with `pierce_client_free`).
///
/// Errors: `PIERCE_INVALID_CONFIG`, `PIERCE_INVALID_ARGUMENT` (a flag that is not 0 or 1, an
/// unknown enum value), `PIERCE_IO` (no OS entropy).
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_new(
    config: *const PierceClientConfig,
    seed: *const u8,
    now_us: u64,
    out: *mut *mut PierceClient,
) -> PierceResult {
    guard(|| {
        let out = Out::new(out, "out")?;
        let config = client_config(config)?;
        let seed = read_seed(seed)?;
        let clock = Clock::new(now_us);
        let client = Client::new(config, seed, clock.at(now_us))?;
        out.write(handle::register(PierceClient {
            client,
            clock,
            tx: TxSlot::default(),
            events: EventStore::default(),
        }));
        Ok(PIERCE_OK)
    })
}

/// Frees a client (NULL: nothing happens). Nothing is sent: call `pierce_client_disconnect`
/// and drain `poll_transmit` first to tell the server. The handle and every pointer an event
/// of it gave are invalid afterwards.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_free(c: *mut PierceClient) -> PierceResult {
    handle::free(c)
}

/// Starts connecting to the server at `server`, presenting `token` (`token_len` bytes; NULL
/// and 0 if the server needs no connect token). Then drain `poll_transmit`.
///
/// Errors: `PIERCE_ALREADY` (not a fresh client), `PIERCE_PAYLOAD_TOO_LARGE` (token),
/// `PIERCE_BAD_ADDRESS`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_connect(
    c: *mut PierceClient,
    now_us: u64,
    server: *const PierceAddr,
    token: *const u8,
    token_len: usize,
) -> PierceResult {
    at(c, now_us, |c, now| {
        cmd::connect(c, now, server, token, token_len)
    })
}

/// Tells the server this client's LAN addresses (`count` entries at `addrs`), so peers behind
/// the same NAT can reach it directly. Sent once connected (never with `ip_private`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_set_local_addresses(
    c: *mut PierceClient,
    now_us: u64,
    addrs: *const PierceAddr,
    count: usize,
) -> PierceResult {
    at(c, now_us, |c, now| {
        let list = if count == 0 {
            Vec::new()
        } else if addrs.is_null() {
            return Err(crate::types::null("addrs"));
        } else {
            // SAFETY: non-NULL; the caller promises `count` entries.
            let raw = unsafe { std::slice::from_raw_parts(addrs, count) };
            raw.iter()
                .map(|a| a.to_socket("addrs"))
                .collect::<Result<Vec<_>>>()?
        };
        c.set_local_addresses(now, &list)?;
        Ok(PIERCE_OK)
    })
}

/// Hands the client one datagram (`len` bytes at `bytes`) that arrived from `from` on local
/// socket `socket` (0: the primary UDP socket; else an id from a socket request). Invalid
/// datagrams are dropped and counted, never an error.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_handle_datagram(
    c: *mut PierceClient,
    now_us: u64,
    socket: u16,
    from: *const PierceAddr,
    bytes: *const u8,
    len: usize,
) -> PierceResult {
    handle::with(c, |h| {
        sans::handle_datagram(h, now_us, socket, from, bytes, len)
    })
}

/// Advances the client's timers. Harmless early or often (once per frame is fine).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_handle_timeout(
    c: *mut PierceClient,
    now_us: u64,
) -> PierceResult {
    handle::with(c, |h| sans::handle_timeout(h, now_us))
}

/// Writes the next datagram to send into `buf` (`cap` bytes) and its destination, length and
/// socket into `*out`: `PIERCE_OK`, or `PIERCE_NO_MORE` when nothing is due. Call until
/// `PIERCE_NO_MORE` after every input and command. A buffer of `PIERCE_MAX_DATAGRAM_SIZE`
/// always suffices; with a smaller one a datagram that does not fit gives
/// `PIERCE_BUFFER_TOO_SMALL` with `out->len` = the size needed, and stays queued for the next
/// call.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_poll_transmit(
    c: *mut PierceClient,
    now_us: u64,
    buf: *mut u8,
    cap: usize,
    out: *mut PierceTransmit,
) -> PierceResult {
    handle::with(c, |h| sans::poll_transmit(h, now_us, buf, cap, out))
}

/// When to call `pierce_client_handle_timeout` next: `*out_us` (the caller's clock) and
/// `PIERCE_OK`, or `PIERCE_NO_MORE` if no timer is set.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_poll_timeout(
    c: *mut PierceClient,
    out_us: *mut u64,
) -> PierceResult {
    handle::with(c, |h| sans::poll_timeout(h, out_us))
}

/// The next event into `*out` (`PIERCE_OK`), or `PIERCE_NO_MORE`. Pointers in the event
/// (`payload`, `name`, `rooms`) stay valid until the next call on this handle.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_poll_event(
    c: *mut PierceClient,
    out: *mut PierceClientEvent,
) -> PierceResult {
    handle::with(c, |h| cmd::poll_event(&mut h.client, &mut h.events, out))
}

/// The next socket the client wants opened, connected or closed (`PIERCE_OK`), or
/// `PIERCE_NO_MORE`. Drain after every input; report with `handle_socket_opened`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_poll_socket_request(
    c: *mut PierceClient,
    out: *mut PierceSocketRequest,
) -> PierceResult {
    handle::with(c, |h| sans::poll_socket_request(h, out))
}

/// Reports how an `OPEN` or `CONNECT` socket request went: `local` is the bound (connected)
/// local address, or NULL if it failed.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_handle_socket_opened(
    c: *mut PierceClient,
    now_us: u64,
    socket: u16,
    local: *const PierceAddr,
) -> PierceResult {
    handle::with(c, |h| sans::handle_socket_opened(h, now_us, socket, local))
}

/// Reports that an `OPEN` or `CONNECT` socket request failed: the same as
/// `pierce_client_handle_socket_opened` with a NULL address, for bindings where passing NULL
/// for a struct pointer is awkward.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_handle_socket_failed(
    c: *mut PierceClient,
    now_us: u64,
    socket: u16,
) -> PierceResult {
    handle::with(c, |h| {
        sans::handle_socket_opened(h, now_us, socket, std::ptr::null())
    })
}

/// Reports that a `CONNECT` request's stream was refused (ECONNREFUSED); any other failure is
/// `handle_socket_opened` with NULL.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_handle_stream_refused(
    c: *mut PierceClient,
    now_us: u64,
    socket: u16,
) -> PierceResult {
    handle::with(c, |h| sans::handle_stream_refused(h, now_us, socket))
}

/// Reports that TCP stream `socket` ended by itself (closed by the other side, reset, failed).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_handle_stream_closed(
    c: *mut PierceClient,
    now_us: u64,
    socket: u16,
) -> PierceResult {
    handle::with(c, |h| sans::handle_stream_closed(h, now_us, socket))
}

/// Creates the room `name` (NUL-terminated UTF-8, 1 to 64 bytes) with `password` (NULL or ""
/// for none), `max_members` (0: the server's default) and `relay_only` (0 or 1: IP privacy).
/// Answered by `ROOM_JOINED` or `ROOM_FAILED` (`ALREADY_EXISTS` if it exists).
///
/// Errors: `PIERCE_NOT_CONNECTED`, `PIERCE_INVALID_NAME` (empty or too long),
/// `PIERCE_INVALID_ARGUMENT` (invalid UTF-8), `PIERCE_QUEUE_FULL`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_create_room(
    c: *mut PierceClient,
    now_us: u64,
    name: *const c_char,
    password: *const c_char,
    max_members: u16,
    relay_only: u8,
) -> PierceResult {
    at(c, now_us, |c, now| {
        cmd::create_room(c, now, name, password, max_members, relay_only)
    })
}

/// Joins the room `name`, creating it if `create` is 1 and it does not exist (then with
/// `max_members` and `relay_only` as in `pierce_client_create_room`). Answered by
/// `ROOM_JOINED` (then `MEMBER_JOINED` per member) or `ROOM_FAILED`.
///
/// Errors: as `pierce_client_create_room`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_join_room(
    c: *mut PierceClient,
    now_us: u64,
    name: *const c_char,
    password: *const c_char,
    create: u8,
    max_members: u16,
    relay_only: u8,
) -> PierceResult {
    at(c, now_us, |c, now| {
        cmd::join_room(c, now, name, password, create, max_members, relay_only)
    })
}

/// Joins any room with no password and room to spare (`ROOM_JOINED` or `ROOM_FAILED`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_join_random_room(
    c: *mut PierceClient,
    now_us: u64,
) -> PierceResult {
    at(c, now_us, |c, now| {
        c.join_random_room(now)?;
        Ok(PIERCE_OK)
    })
}

/// Asks for one page of the room list from index `offset` (answered by `ROOM_LIST`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_list_rooms(
    c: *mut PierceClient,
    now_us: u64,
    offset: u16,
) -> PierceResult {
    at(c, now_us, |c, now| {
        c.list_rooms(now, offset)?;
        Ok(PIERCE_OK)
    })
}

/// Leaves the room (or group) `group` (the id from `ROOM_JOINED`).
///
/// Errors: `PIERCE_NOT_CONNECTED`, `PIERCE_NOT_MEMBER`, `PIERCE_QUEUE_FULL`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_leave_room(
    c: *mut PierceClient,
    now_us: u64,
    group: u64,
) -> PierceResult {
    at(c, now_us, |c, now| cmd::leave_room(c, now, group))
}

/// Removes `member` from room `group` (its owner only; else `ROOM_FAILED` with `NOT_OWNER`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_kick(
    c: *mut PierceClient,
    now_us: u64,
    group: u64,
    member: u64,
) -> PierceResult {
    at(c, now_us, |c, now| {
        c.kick(now, GroupId(group), HostId(member))?;
        Ok(PIERCE_OK)
    })
}

/// Queues a message (`len` bytes at `payload`) for member `peer` on channel `channel`: the
/// channel's delivery mode decides reliability and order (with the default channels, channel
/// `i` is `PierceDelivery` `i`: `PIERCE_CHANNEL_RELIABLE_ORDERED` ... `PIERCE_CHANNEL_UNRELIABLE`).
/// `options`: NULL, or a deadline / retry limit for reliable messages. `*out_message_id` (if
/// not NULL) gets the id a later `MESSAGE_EXPIRED` names. Works from `MEMBER_JOINED` on
/// (through the relay until a direct path exists). Then drain `poll_transmit`.
///
/// Errors: `PIERCE_NOT_CONNECTED`, `PIERCE_UNKNOWN_PEER`, `PIERCE_UNKNOWN_CHANNEL`,
/// `PIERCE_PAYLOAD_TOO_LARGE`, `PIERCE_QUEUE_FULL`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_send(
    c: *mut PierceClient,
    now_us: u64,
    peer: u64,
    channel: u8,
    payload: *const u8,
    len: usize,
    options: *const PierceSendOptions,
    out_message_id: *mut u64,
) -> PierceResult {
    at(c, now_us, |c, now| {
        cmd::send(c, now, peer, channel, payload, len, options, out_message_id)
    })
}

/// Queues a message for every other member of `group` on `channel`. On an error no member
/// gets it.
///
/// Errors: as `pierce_client_send`, plus `PIERCE_NOT_MEMBER`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_send_to_group(
    c: *mut PierceClient,
    now_us: u64,
    group: u64,
    channel: u8,
    payload: *const u8,
    len: usize,
) -> PierceResult {
    at(c, now_us, |c, now| {
        cmd::send_to_group(c, now, group, channel, payload, len)
    })
}

/// Queues a message for the server application: unreliable (`reliable` 0, at most one
/// datagram) or reliable and ordered (`reliable` 1).
///
/// Errors: `PIERCE_NOT_CONNECTED`, `PIERCE_PAYLOAD_TOO_LARGE`, `PIERCE_QUEUE_FULL`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_send_to_server(
    c: *mut PierceClient,
    now_us: u64,
    payload: *const u8,
    len: usize,
    reliable: u8,
) -> PierceResult {
    at(c, now_us, |c, now| {
        cmd::send_to_server(c, now, payload, len, reliable)
    })
}

/// Ends the session with close `code`, telling the server (drain `poll_transmit` to send it).
/// Reports `DISCONNECTED` with `CLOSED_LOCALLY`. Does nothing if already closed.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_disconnect(
    c: *mut PierceClient,
    now_us: u64,
    code: u16,
) -> PierceResult {
    at(c, now_us, |c, now| {
        c.disconnect(now, code);
        Ok(PIERCE_OK)
    })
}

/// Stops talking to the server but keeps every peer with a validated direct path (for the
/// pair lifetime); relay-only peers are dropped. Reports `DISCONNECTED` with `DETACHED`.
///
/// Errors: `PIERCE_NOT_CONNECTED`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_detach_from_server(
    c: *mut PierceClient,
    now_us: u64,
) -> PierceResult {
    at(c, now_us, cmd::detach)
}

/// Asks a STUN server which address it sees this client at (answered by `STUN_RESULT`).
///
/// Errors: `PIERCE_QUEUE_FULL`, `PIERCE_BAD_ADDRESS`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_query_stun(
    c: *mut PierceClient,
    now_us: u64,
    server: *const PierceAddr,
) -> PierceResult {
    at(c, now_us, |c, now| {
        let server = read_addr(server, "server")?;
        c.query_stun(now, server)?;
        Ok(PIERCE_OK)
    })
}

/// Runs NAT behaviour discovery (RFC 5780) against `server`'s STUN service from the primary
/// socket (answered by `NAT_DISCOVERED`); connected clients with `nat_discovery` run it against
/// their server by themselves. Replaces a discovery under way.
///
/// Errors: `PIERCE_BAD_ADDRESS`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_discover_nat(
    c: *mut PierceClient,
    now_us: u64,
    server: *const PierceAddr,
) -> PierceResult {
    at(c, now_us, |c, now| {
        let server = read_addr(server, "server")?;
        c.discover_nat(now, server);
        Ok(PIERCE_OK)
    })
}

/// The client's state and counters into `*out`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_stats(
    c: *mut PierceClient,
    out: *mut PierceClientStats,
) -> PierceResult {
    handle::with(c, |h| cmd::stats(&h.client, out))
}

/// The connection with member `peer`: round-trip time, loss, path, counters.
///
/// Errors: `PIERCE_UNKNOWN_PEER`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_client_peer_stats(
    c: *mut PierceClient,
    peer: u64,
    out: *mut PiercePeerStats,
) -> PierceResult {
    handle::with(c, |h| cmd::peer_stats(&h.client, peer, out))
}
