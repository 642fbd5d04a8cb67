//! The driven layer: `PierceDriverClient` and `PierceDriverServer` own their sockets (the mio
//! `Driver` underneath) and read the clock themselves. `pump(timeout_ms)` is the whole loop
//! turn, like `enet_host_service`: send what is queued, wait up to `timeout_ms` for datagrams
//! (0: never block, once per game frame), hand them to the endpoint, run its timers, send what
//! that produced. Commands take effect on the next pump.

use std::ffi::c_char;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pierce_core::{Client, GroupId, HostId, Server};
use pierce_mio::Driver;

use crate::client::cmd as client_cmd;
use crate::config::{
    PierceClientConfig, PierceSendOptions, PierceServerConfig, client_config, server_config,
};
use crate::error::{PierceResult, Result, guard};
use crate::event::{EventStore, PierceClientEvent, PierceServerEvent};
use crate::handle::{self, Handle, Kind};
use crate::server::cmd as server_cmd;
use crate::stats::{
    PierceClientStats, PierceDriverStats, PiercePeerStats, PierceServerStats, driver_stats,
};
use crate::types::{Out, PierceAddr, flag, read_addr};

use PierceResult::*;

/// A Pierce client on its own UDP socket (opaque): the driven layer. Create with
/// `pierce_driver_client_new`, free with `pierce_driver_client_free`. Single-threaded: it may
/// move between threads, but never be used from two at once.
pub struct PierceDriverClient {
    driver: Driver<Client>,
    events: EventStore,
}

impl Handle for PierceDriverClient {
    const KIND: Kind = Kind::DriverClient;
    const NAME: &'static str = "PierceDriverClient";
}

/// A Pierce server on its own UDP socket (and TCP listener, if asked) (opaque): the driven
/// layer. Create with `pierce_driver_server_new`, free with `pierce_driver_server_free`.
/// Single-threaded: it may move between threads, but never be used from two at once.
pub struct PierceDriverServer {
    driver: Driver<Server>,
    events: EventStore,
}

impl Handle for PierceDriverServer {
    const KIND: Kind = Kind::DriverServer;
    const NAME: &'static str = "PierceDriverServer";
}

/// The bind address at `p`, or `0.0.0.0:0` for NULL.
fn bind_addr(p: *const PierceAddr) -> Result<SocketAddr> {
    if p.is_null() {
        Ok(SocketAddr::from(([0, 0, 0, 0], 0)))
    } else {
        read_addr(p, "bind")
    }
}

fn pump<E: pierce_core::Endpoint>(d: &mut Driver<E>, timeout_ms: u32) -> Result<PierceResult> {
    d.pump(Duration::from_millis(timeout_ms.into()))?;
    Ok(PIERCE_OK)
}

fn client_at(
    d: *mut PierceDriverClient,
    body: impl FnOnce(&mut Client, Instant) -> Result<PierceResult>,
) -> PierceResult {
    handle::with(d, |h| body(h.driver.endpoint_mut(), Instant::now()))
}

fn server_at(
    d: *mut PierceDriverServer,
    body: impl FnOnce(&mut Server, Instant) -> Result<PierceResult>,
) -> PierceResult {
    handle::with(d, |h| body(h.driver.endpoint_mut(), Instant::now()))
}

// ---- client ---------------------------------------------------------------------------------

/// Creates a client on a new UDP socket bound at `bind` (NULL: `0.0.0.0:0`, any port) with
/// `config` (NULL: defaults); its seed comes from the OS. `*out` gets the handle.
///
/// Errors: `PIERCE_IO` (bind failed), `PIERCE_INVALID_CONFIG`, `PIERCE_BAD_ADDRESS`.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_new(
    bind: *const PierceAddr,
    config: *const PierceClientConfig,
    out: *mut *mut PierceDriverClient,
) -> PierceResult {
    guard(|| {
        let out = Out::new(out, "out")?;
        let bind = bind_addr(bind)?;
        let config = client_config(config)?;
        let seed = crate::types::read_seed(std::ptr::null())?;
        let client = Client::new(config, seed, Instant::now())?;
        let driver = Driver::bind(bind, client)?;
        out.write(handle::register(PierceDriverClient {
            driver,
            events: EventStore::default(),
        }));
        Ok(PIERCE_OK)
    })
}

/// Frees the client and closes its sockets (NULL: nothing happens). Call
/// `pierce_driver_client_disconnect` and one `pump` first to tell the server.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_free(d: *mut PierceDriverClient) -> PierceResult {
    handle::free(d)
}

/// The address the client's socket is bound to.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_local_addr(
    d: *mut PierceDriverClient,
    out: *mut PierceAddr,
) -> PierceResult {
    handle::with(d, |h| {
        Out::new(out, "out")?.write(h.driver.local_addr().into());
        Ok(PIERCE_OK)
    })
}

/// Starts connecting to the server at `server` with `token` (NULL and 0 for none); also tells
/// it this machine's LAN addresses when the socket is bound to `0.0.0.0` or `[::]`.
///
/// Errors: as `pierce_client_connect`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_connect(
    d: *mut PierceDriverClient,
    server: *const PierceAddr,
    token: *const u8,
    token_len: usize,
) -> PierceResult {
    handle::with(d, |h| {
        let now = Instant::now();
        let local = h.driver.local_addr();
        let c = h.driver.endpoint_mut();
        client_cmd::connect(c, now, server, token, token_len)?;
        if local.ip().is_unspecified()
            && let Ok(lan) = pierce_mio::local_addresses(local.port())
        {
            // Best effort: without them, peers behind the same NAT still meet via the relay.
            let _ = c.set_local_addresses(now, &lan);
        }
        Ok(PIERCE_OK)
    })
}

/// One turn of the loop: send what is queued, wait up to `timeout_ms` for datagrams (less if a
/// timer is due sooner; 0 never blocks), handle them and the timers, send the results. Then
/// drain `pierce_driver_client_poll_event`.
///
/// Errors: `PIERCE_IO` if the socket or the poller failed (per-datagram errors are counted,
/// not returned).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_pump(
    d: *mut PierceDriverClient,
    timeout_ms: u32,
) -> PierceResult {
    handle::with(d, |h| pump(&mut h.driver, timeout_ms))
}

/// The next event into `*out` (`PIERCE_OK`), or `PIERCE_NO_MORE`. Pointers in it stay valid
/// until the next call on this handle.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_poll_event(
    d: *mut PierceDriverClient,
    out: *mut PierceClientEvent,
) -> PierceResult {
    handle::with(d, |h| {
        client_cmd::poll_event(h.driver.endpoint_mut(), &mut h.events, out)
    })
}

/// As `pierce_client_create_room`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_create_room(
    d: *mut PierceDriverClient,
    name: *const c_char,
    password: *const c_char,
    max_members: u16,
    relay_only: u8,
) -> PierceResult {
    client_at(d, |c, now| {
        client_cmd::create_room(c, now, name, password, max_members, relay_only)
    })
}

/// As `pierce_client_join_room`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_join_room(
    d: *mut PierceDriverClient,
    name: *const c_char,
    password: *const c_char,
    create: u8,
    max_members: u16,
    relay_only: u8,
) -> PierceResult {
    client_at(d, |c, now| {
        client_cmd::join_room(c, now, name, password, create, max_members, relay_only)
    })
}

/// As `pierce_client_join_random_room`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_join_random_room(
    d: *mut PierceDriverClient,
) -> PierceResult {
    client_at(d, |c, now| {
        c.join_random_room(now)?;
        Ok(PIERCE_OK)
    })
}

/// As `pierce_client_list_rooms`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_list_rooms(
    d: *mut PierceDriverClient,
    offset: u16,
) -> PierceResult {
    client_at(d, |c, now| {
        c.list_rooms(now, offset)?;
        Ok(PIERCE_OK)
    })
}

/// As `pierce_client_leave_room`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_leave_room(
    d: *mut PierceDriverClient,
    group: u64,
) -> PierceResult {
    client_at(d, |c, now| client_cmd::leave_room(c, now, group))
}

/// As `pierce_client_kick`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_kick(
    d: *mut PierceDriverClient,
    group: u64,
    member: u64,
) -> PierceResult {
    client_at(d, |c, now| {
        c.kick(now, GroupId(group), HostId(member))?;
        Ok(PIERCE_OK)
    })
}

/// As `pierce_client_send` (the deadline in `options` counts from now).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_send(
    d: *mut PierceDriverClient,
    peer: u64,
    channel: u8,
    payload: *const u8,
    len: usize,
    options: *const PierceSendOptions,
    out_message_id: *mut u64,
) -> PierceResult {
    client_at(d, |c, now| {
        client_cmd::send(c, now, peer, channel, payload, len, options, out_message_id)
    })
}

/// As `pierce_client_send_to_group`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_send_to_group(
    d: *mut PierceDriverClient,
    group: u64,
    channel: u8,
    payload: *const u8,
    len: usize,
) -> PierceResult {
    client_at(d, |c, now| {
        client_cmd::send_to_group(c, now, group, channel, payload, len)
    })
}

/// As `pierce_client_send_to_server`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_send_to_server(
    d: *mut PierceDriverClient,
    payload: *const u8,
    len: usize,
    reliable: u8,
) -> PierceResult {
    client_at(d, |c, now| {
        client_cmd::send_to_server(c, now, payload, len, reliable)
    })
}

/// As `pierce_client_disconnect`; the next pump sends the close.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_disconnect(
    d: *mut PierceDriverClient,
    code: u16,
) -> PierceResult {
    client_at(d, |c, now| {
        c.disconnect(now, code);
        Ok(PIERCE_OK)
    })
}

/// As `pierce_client_detach_from_server`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_detach_from_server(
    d: *mut PierceDriverClient,
) -> PierceResult {
    client_at(d, client_cmd::detach)
}

/// As `pierce_client_stats`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_stats(
    d: *mut PierceDriverClient,
    out: *mut PierceClientStats,
) -> PierceResult {
    handle::with(d, |h| client_cmd::stats(h.driver.endpoint(), out))
}

/// As `pierce_client_peer_stats`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_peer_stats(
    d: *mut PierceDriverClient,
    peer: u64,
    out: *mut PiercePeerStats,
) -> PierceResult {
    handle::with(d, |h| {
        client_cmd::peer_stats(h.driver.endpoint(), peer, out)
    })
}

/// The socket layer's counters into `*out`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_client_io_stats(
    d: *mut PierceDriverClient,
    out: *mut PierceDriverStats,
) -> PierceResult {
    handle::with(d, |h| {
        Out::new(out, "out")?.write(driver_stats(&h.driver.stats()));
        Ok(PIERCE_OK)
    })
}

// ---- server ---------------------------------------------------------------------------------

/// Creates a server on a new UDP socket bound at `listen` (required; port 0 picks one: read it
/// with `pierce_driver_server_local_addr`) with `config` (required); with `listen_tcp` 1 it
/// also accepts TCP streams at the same address (for clients whose network blocks UDP). Its
/// seed comes from the OS, its wall-clock time from the system.
///
/// Errors: `PIERCE_IO` (bind or listen failed), `PIERCE_INVALID_CONFIG`,
/// `PIERCE_BAD_ADDRESS`, `PIERCE_INVALID_ARGUMENT`.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_new(
    listen: *const PierceAddr,
    config: *const PierceServerConfig,
    listen_tcp: u8,
    out: *mut *mut PierceDriverServer,
) -> PierceResult {
    guard(|| {
        let out = Out::new(out, "out")?;
        let listen = read_addr(listen, "listen")?;
        let config = server_config(config)?;
        let tcp = flag(listen_tcp, "listen_tcp")?;
        let seed = crate::types::read_seed(std::ptr::null())?;
        let server = Server::new(config, seed, Instant::now(), pierce_mio::unix_time())?;
        let mut driver = Driver::bind(listen, server)?;
        if tcp {
            driver.listen_tcp()?;
        }
        out.write(handle::register(PierceDriverServer {
            driver,
            events: EventStore::default(),
        }));
        Ok(PIERCE_OK)
    })
}

/// Frees the server and closes its sockets (NULL: nothing happens).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_free(d: *mut PierceDriverServer) -> PierceResult {
    handle::free(d)
}

/// The address the server's UDP socket is bound to.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_local_addr(
    d: *mut PierceDriverServer,
    out: *mut PierceAddr,
) -> PierceResult {
    handle::with(d, |h| {
        Out::new(out, "out")?.write(h.driver.local_addr().into());
        Ok(PIERCE_OK)
    })
}

/// As `pierce_driver_client_pump`, for the server.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_pump(
    d: *mut PierceDriverServer,
    timeout_ms: u32,
) -> PierceResult {
    handle::with(d, |h| pump(&mut h.driver, timeout_ms))
}

/// The next event into `*out` (`PIERCE_OK`), or `PIERCE_NO_MORE`. `payload` stays valid until
/// the next call on this handle.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_poll_event(
    d: *mut PierceDriverServer,
    out: *mut PierceServerEvent,
) -> PierceResult {
    handle::with(d, |h| {
        server_cmd::poll_event(h.driver.endpoint_mut(), &mut h.events, out)
    })
}

/// The server's public key (32 bytes into `out`).
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_public_key(
    d: *mut PierceDriverServer,
    out: *mut u8,
) -> PierceResult {
    handle::with(d, |h| server_cmd::public_key(h.driver.endpoint(), out))
}

/// As `pierce_server_send`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_send(
    d: *mut PierceDriverServer,
    host: u64,
    payload: *const u8,
    len: usize,
    reliable: u8,
) -> PierceResult {
    server_at(d, |s, now| {
        server_cmd::send(s, now, host, payload, len, reliable)
    })
}

/// As `pierce_server_disconnect`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_disconnect(
    d: *mut PierceDriverServer,
    host: u64,
    code: u16,
) -> PierceResult {
    server_at(d, |s, now| server_cmd::disconnect(s, now, host, code))
}

/// As `pierce_server_drain`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_drain(
    d: *mut PierceDriverServer,
    within_ms: u32,
) -> PierceResult {
    server_at(d, |s, now| server_cmd::drain(s, now, within_ms))
}

/// As `pierce_server_create_group`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_create_group(
    d: *mut PierceDriverServer,
    members: *const u64,
    count: usize,
    out_group: *mut u64,
) -> PierceResult {
    server_at(d, |s, now| {
        server_cmd::create_group(s, now, members, count, out_group)
    })
}

/// As `pierce_server_join_group`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_join_group(
    d: *mut PierceDriverServer,
    group: u64,
    host: u64,
) -> PierceResult {
    server_at(d, |s, now| {
        s.join_group(now, GroupId(group), HostId(host))?;
        Ok(PIERCE_OK)
    })
}

/// As `pierce_server_leave_group`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_leave_group(
    d: *mut PierceDriverServer,
    group: u64,
    host: u64,
) -> PierceResult {
    server_at(d, |s, now| {
        s.leave_group(now, GroupId(group), HostId(host))?;
        Ok(PIERCE_OK)
    })
}

/// As `pierce_server_destroy_group`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_destroy_group(
    d: *mut PierceDriverServer,
    group: u64,
) -> PierceResult {
    server_at(d, |s, now| {
        s.destroy_group(now, GroupId(group))?;
        Ok(PIERCE_OK)
    })
}

/// As `pierce_server_close_room`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_close_room(
    d: *mut PierceDriverServer,
    name: *const c_char,
    out_group: *mut u64,
) -> PierceResult {
    server_at(d, |s, now| server_cmd::close_room(s, now, name, out_group))
}

/// As `pierce_server_client_addr`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_client_addr(
    d: *mut PierceDriverServer,
    host: u64,
    out: *mut PierceAddr,
) -> PierceResult {
    handle::with(d, |h| {
        server_cmd::client_addr(h.driver.endpoint(), host, out)
    })
}

/// As `pierce_server_stats`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_stats(
    d: *mut PierceDriverServer,
    out: *mut PierceServerStats,
) -> PierceResult {
    handle::with(d, |h| server_cmd::stats(h.driver.endpoint(), out))
}

/// The socket layer's counters into `*out`.
///
/// Thread safety: the handle must not be in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_driver_server_io_stats(
    d: *mut PierceDriverServer,
    out: *mut PierceDriverStats,
) -> PierceResult {
    handle::with(d, |h| {
        Out::new(out, "out")?.write(driver_stats(&h.driver.stats()));
        Ok(PIERCE_OK)
    })
}
