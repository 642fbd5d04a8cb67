//! The FFI layer driven only through its `extern "C"` functions, as a C program would: bad
//! arguments come back as codes (never crashes), and a server with two clients, bytes shuttled
//! in memory, join a room and exchange reliable messages.

use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_char};
use std::ptr;

use crate::client::*;
use crate::config::*;
use crate::driver::*;
use crate::error::PierceResult::{self, *};
use crate::error::{pierce_last_error_message, pierce_result_name};
use crate::event::*;
use crate::host::*;
use crate::sans::{PierceSocketRequest, PierceSocketRequestKind, PierceTransmit};
use crate::server::*;
use crate::stats::*;
use crate::types::*;
use crate::{
    PIERCE_ABI_VERSION, PIERCE_MAX_DATAGRAM_SIZE, pierce_abi_version, pierce_check_version,
};

fn last_error() -> String {
    let mut buf = [0 as c_char; 512];
    let n = unsafe { pierce_last_error_message(buf.as_mut_ptr(), buf.len()) };
    assert!(n >= 1);
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn addr(s: &str) -> PierceAddr {
    let text = CString::new(s).unwrap();
    let mut a = PierceAddr::default();
    assert_eq!(
        unsafe { pierce_addr_parse(text.as_ptr(), &mut a) },
        PIERCE_OK,
        "{s}"
    );
    a
}

fn quiet_client_config() -> PierceClientConfig {
    let mut c = PierceClientConfig::defaults();
    // In memory there is no NAT to discover and no socket to open for birthday probing.
    c.nat_discovery = 0;
    c.birthday_sockets = 0;
    c
}

fn new_client(seed: u8, now_us: u64) -> *mut PierceClient {
    let config = quiet_client_config();
    let seed = [seed; 32];
    let mut c = ptr::null_mut();
    let r = unsafe { pierce_client_new(&config, seed.as_ptr(), now_us, &mut c) };
    assert_eq!(r, PIERCE_OK, "{}", last_error());
    assert!(!c.is_null());
    c
}

fn new_server(now_us: u64) -> *mut PierceServer {
    let config = PierceServerConfig::defaults([9; 32]);
    let seed = [8u8; 32];
    let mut s = ptr::null_mut();
    let r = unsafe { pierce_server_new(&config, seed.as_ptr(), now_us, 1_700_000_000_000, &mut s) };
    assert_eq!(r, PIERCE_OK, "{}", last_error());
    s
}

// ---- versions, names, messages -------------------------------------------------------------

#[test]
fn the_version_check_accepts_its_own_version_and_refuses_another() {
    assert_eq!(pierce_abi_version(), PIERCE_ABI_VERSION);
    assert_eq!(pierce_check_version(PIERCE_ABI_VERSION), PIERCE_OK);
    assert_eq!(
        pierce_check_version(PIERCE_ABI_VERSION + 1),
        PIERCE_VERSION_MISMATCH
    );
    assert!(last_error().contains("ABI version"), "{}", last_error());
}

#[test]
fn result_names_match_their_codes() {
    for (code, name) in [
        (PIERCE_OK, "PIERCE_OK"),
        (PIERCE_NO_MORE, "PIERCE_NO_MORE"),
        (PIERCE_BUFFER_TOO_SMALL, "PIERCE_BUFFER_TOO_SMALL"),
        (PIERCE_PANIC, "PIERCE_PANIC"),
    ] {
        let got = unsafe { CStr::from_ptr(pierce_result_name(code as i32)) };
        assert_eq!(got.to_str().unwrap(), name);
    }
    let unknown = unsafe { CStr::from_ptr(pierce_result_name(-1000)) };
    assert_eq!(unknown.to_str().unwrap(), "PIERCE_UNKNOWN_RESULT");
}

#[test]
fn the_last_error_message_is_truncated_to_the_buffer_and_reports_its_full_size() {
    assert_eq!(
        unsafe { pierce_client_free(ptr::without_provenance_mut(8)) },
        PIERCE_INVALID_HANDLE
    );
    let full = last_error();
    let needed = unsafe { pierce_last_error_message(ptr::null_mut(), 0) };
    assert_eq!(needed, full.len() + 1);
    let mut small = [0x7f as c_char; 6];
    let n = unsafe { pierce_last_error_message(small.as_mut_ptr(), small.len()) };
    assert_eq!(n, needed);
    let got = unsafe { CStr::from_ptr(small.as_ptr()) }.to_str().unwrap();
    assert_eq!(got, &full[..5]);
}

// ---- handles --------------------------------------------------------------------------------

#[test]
fn null_handles_and_outputs_are_refused_with_null_argument() {
    let mut ev = PierceClientEvent::empty(PierceClientEventKind::PIERCE_CLIENT_EVENT_OTHER);
    unsafe {
        assert_eq!(
            pierce_client_handle_timeout(ptr::null_mut(), 0),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(
            pierce_client_poll_event(ptr::null_mut(), &mut ev),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(
            pierce_server_handle_timeout(ptr::null_mut(), 0),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(
            pierce_host_handle_timeout(ptr::null_mut(), 0),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(
            pierce_driver_client_pump(ptr::null_mut(), 0),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(
            pierce_driver_server_pump(ptr::null_mut(), 0),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(
            pierce_client_new(ptr::null(), ptr::null(), 0, ptr::null_mut()),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(
            pierce_server_new(ptr::null(), ptr::null(), 0, 0, &mut ptr::null_mut()),
            PIERCE_NULL_ARGUMENT
        );
        // Freeing NULL is allowed, like free(NULL).
        assert_eq!(pierce_client_free(ptr::null_mut()), PIERCE_OK);
    }
    assert!(last_error().contains("NULL"), "{}", last_error());

    let c = new_client(1, 0);
    unsafe {
        assert_eq!(
            pierce_client_poll_event(c, ptr::null_mut()),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(
            pierce_client_poll_timeout(c, ptr::null_mut()),
            PIERCE_NULL_ARGUMENT
        );
        let mut t = PierceTransmit::default();
        assert_eq!(
            pierce_client_poll_transmit(c, 0, ptr::null_mut(), 100, &mut t),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(
            pierce_client_connect(c, 0, ptr::null(), ptr::null(), 0),
            PIERCE_NULL_ARGUMENT
        );
        let server = addr("127.0.0.1:7777");
        assert_eq!(
            pierce_client_connect(c, 0, &server, ptr::null(), 5),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(
            pierce_client_join_room(c, 0, ptr::null(), ptr::null(), 1, 0, 0),
            PIERCE_NULL_ARGUMENT
        );
        assert_eq!(pierce_client_free(c), PIERCE_OK);
    }
}

#[test]
fn freed_garbage_and_wrong_type_handles_are_refused_without_being_read() {
    let c = new_client(2, 0);
    let s = new_server(0);
    unsafe {
        assert_eq!(pierce_client_free(c), PIERCE_OK);
        // Freed: refused (the registry is asked before the pointer is touched).
        assert_eq!(pierce_client_handle_timeout(c, 1), PIERCE_INVALID_HANDLE);
        assert!(
            last_error().contains("not a live PierceClient"),
            "{}",
            last_error()
        );
        assert_eq!(pierce_client_free(c), PIERCE_INVALID_HANDLE);
        // Garbage: a pointer to something that is not a handle at all, and an odd address.
        let mut junk = [0xa5u8; 64];
        let g = junk.as_mut_ptr().cast::<PierceClient>();
        assert_eq!(pierce_client_handle_timeout(g, 1), PIERCE_INVALID_HANDLE);
        assert_eq!(pierce_client_free(g), PIERCE_INVALID_HANDLE);
        assert_eq!(
            pierce_server_handle_timeout(ptr::without_provenance_mut(3), 1),
            PIERCE_INVALID_HANDLE
        );
        // The right address with the wrong type: a server passed as a client.
        assert_eq!(
            pierce_client_handle_timeout(s.cast::<PierceClient>(), 1),
            PIERCE_INVALID_HANDLE
        );
        assert_eq!(
            pierce_client_free(s.cast::<PierceClient>()),
            PIERCE_INVALID_HANDLE
        );
        // ... and the server is still fine.
        assert_eq!(pierce_server_handle_timeout(s, 1), PIERCE_OK);
        assert_eq!(pierce_server_free(s), PIERCE_OK);
    }
}

/// A function that panics inside a call on a handle, as a bug in the library would.
unsafe extern "C" fn panics_on(c: *mut PierceClient) -> PierceResult {
    crate::handle::with(c, |_| panic!("deliberate test panic"))
}

#[test]
fn a_panic_inside_becomes_pierce_panic_and_poisons_only_that_handle() {
    let c = new_client(3, 0);
    let other = new_client(4, 0);
    unsafe {
        assert_eq!(panics_on(c), PIERCE_PANIC);
        assert!(
            last_error().contains("deliberate test panic"),
            "{}",
            last_error()
        );
        // Poisoned: every later call says so, but freeing works.
        assert_eq!(pierce_client_handle_timeout(c, 1), PIERCE_PANIC);
        assert_eq!(pierce_client_handle_timeout(other, 1), PIERCE_OK);
        assert_eq!(pierce_client_free(c), PIERCE_OK);
        assert_eq!(pierce_client_free(other), PIERCE_OK);
    }
    // A panic outside any handle is caught the same way.
    let r = crate::error::guard(|| panic!("no handle"));
    assert_eq!(r, PIERCE_PANIC);
}

// ---- addresses, strings, configuration -------------------------------------------------------

#[test]
fn addresses_parse_and_format_both_families() {
    let v4 = addr("192.0.2.7:7777");
    assert_eq!(v4.family, 4);
    assert_eq!(&v4.ip[..4], &[192, 0, 2, 7]);
    assert_eq!(v4.port, 7777);
    let v6 = addr("[2001:db8::1]:443");
    assert_eq!(v6.family, 6);
    assert_eq!(v6.ip[0..2], [0x20, 0x01]);
    assert_eq!(v6.ip[15], 1);
    for (a, text) in [(v4, "192.0.2.7:7777"), (v6, "[2001:db8::1]:443")] {
        let mut buf = [0 as c_char; 64];
        let mut len = 0usize;
        let r = unsafe { pierce_addr_format(&a, buf.as_mut_ptr(), buf.len(), &mut len) };
        assert_eq!(r, PIERCE_OK);
        assert_eq!(len, text.len());
        assert_eq!(
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
            text
        );
    }
}

#[test]
fn bad_addresses_are_refused_with_bad_address() {
    let mut out = PierceAddr::default();
    for text in [
        "",
        "nonsense",
        "1.2.3.4",
        "1.2.3.4:99999",
        "example.com:80",
        "[::1]",
    ] {
        let t = CString::new(text).unwrap();
        assert_eq!(
            unsafe { pierce_addr_parse(t.as_ptr(), &mut out) },
            PIERCE_BAD_ADDRESS,
            "{text:?}"
        );
    }
    let bad_utf8 = [0xffu8, 0xfe, b':', b'1', 0];
    let r = unsafe { pierce_addr_parse(bad_utf8.as_ptr().cast(), &mut out) };
    assert_eq!(r, PIERCE_INVALID_ARGUMENT);

    // Family 5 (and 0) anywhere an address goes in.
    let mut five = addr("127.0.0.1:9");
    five.family = 5;
    let mut buf = [0 as c_char; 64];
    assert_eq!(
        unsafe { pierce_addr_format(&five, buf.as_mut_ptr(), 64, ptr::null_mut()) },
        PIERCE_BAD_ADDRESS
    );
    assert!(last_error().contains("family 5"), "{}", last_error());
    let c = new_client(5, 0);
    unsafe {
        assert_eq!(
            pierce_client_connect(c, 0, &five, ptr::null(), 0),
            PIERCE_BAD_ADDRESS
        );
        let zero = PierceAddr::default();
        assert_eq!(
            pierce_client_handle_datagram(c, 0, 0, &zero, [1u8].as_ptr(), 1),
            PIERCE_BAD_ADDRESS
        );
        assert_eq!(pierce_client_free(c), PIERCE_OK);
    }
    // A short formatting buffer says how long the text is.
    let a = addr("10.0.0.1:1");
    let mut len = 0;
    let r = unsafe { pierce_addr_format(&a, buf.as_mut_ptr(), 4, &mut len) };
    assert_eq!(r, PIERCE_BUFFER_TOO_SMALL);
    assert_eq!(len, "10.0.0.1:1".len());
}

#[test]
fn room_names_must_be_utf8_and_1_to_64_bytes() {
    let c = new_client(6, 0);
    let bad_utf8 = [b'r', 0xc3, 0x28, 0];
    let long = CString::new("x".repeat(65)).unwrap();
    let empty = CString::new("").unwrap();
    let ok = CString::new("x".repeat(64)).unwrap();
    unsafe {
        let r = pierce_client_join_room(c, 0, bad_utf8.as_ptr().cast(), ptr::null(), 1, 0, 0);
        assert_eq!(r, PIERCE_INVALID_ARGUMENT);
        assert!(last_error().contains("UTF-8"), "{}", last_error());
        assert_eq!(
            pierce_client_create_room(c, 0, long.as_ptr(), ptr::null(), 0, 0),
            PIERCE_INVALID_NAME
        );
        assert!(last_error().contains("64"), "{}", last_error());
        assert_eq!(
            pierce_client_join_room(c, 0, empty.as_ptr(), ptr::null(), 0, 0, 0),
            PIERCE_INVALID_NAME
        );
        // A good name gets past the check and meets the next one: not connected yet.
        assert_eq!(
            pierce_client_join_room(c, 0, ok.as_ptr(), ptr::null(), 1, 0, 0),
            PIERCE_NOT_CONNECTED
        );
        // A flag that is not 0 or 1.
        assert_eq!(
            pierce_client_join_room(c, 0, ok.as_ptr(), ptr::null(), 2, 0, 0),
            PIERCE_INVALID_ARGUMENT
        );
        assert_eq!(pierce_client_free(c), PIERCE_OK);
    }
}

#[test]
fn invalid_configurations_are_refused_with_what_was_wrong() {
    let mut out = ptr::null_mut();
    let mut c = PierceClientConfig::defaults();
    c.keepalive_interval_ms = c.idle_timeout_ms;
    assert_eq!(
        unsafe { pierce_client_new(&c, ptr::null(), 0, &mut out) },
        PIERCE_INVALID_CONFIG
    );
    assert!(last_error().contains("keepalive"), "{}", last_error());
    let mut c = PierceClientConfig::defaults();
    c.direct_paths = 7;
    assert_eq!(
        unsafe { pierce_client_new(&c, ptr::null(), 0, &mut out) },
        PIERCE_INVALID_ARGUMENT
    );
    assert!(last_error().contains("direct_paths"), "{}", last_error());
    let mut c = PierceClientConfig::defaults();
    c.channel_count = 2;
    assert_eq!(
        unsafe { pierce_client_new(&c, ptr::null(), 0, &mut out) },
        PIERCE_NULL_ARGUMENT
    );
    let channels = [PierceChannelConfig {
        delivery: 9,
        priority: 0,
    }];
    c.channel_count = 1;
    c.channels = channels.as_ptr();
    assert_eq!(
        unsafe { pierce_client_new(&c, ptr::null(), 0, &mut out) },
        PIERCE_INVALID_ARGUMENT
    );
    assert!(out.is_null(), "no handle on failure");

    let mut s = PierceServerConfig::defaults([1; 32]);
    s.offline_after_ms = s.idle_timeout_ms;
    assert_eq!(
        unsafe { pierce_server_new(&s, ptr::null(), 0, 0, &mut ptr::null_mut()) },
        PIERCE_INVALID_CONFIG
    );

    // The defaults themselves work, and the server's default key is fresh each time.
    let mut a = PierceServerConfig::defaults([0; 32]);
    let mut b = a;
    unsafe {
        assert_eq!(pierce_server_config_default(&mut a), PIERCE_OK);
        assert_eq!(pierce_server_config_default(&mut b), PIERCE_OK);
    }
    assert_ne!(a.secret_key, b.secret_key);
    let mut cfg = PierceClientConfig::defaults();
    cfg.pin_server_key = 9;
    unsafe { assert_eq!(pierce_client_config_default(&mut cfg), PIERCE_OK) };
    assert_eq!(cfg.pin_server_key, 0);
}

#[test]
fn the_public_key_of_a_server_is_the_one_of_its_secret() {
    let s = new_server(0);
    let (mut from_server, mut from_secret) = ([0u8; 32], [0u8; 32]);
    unsafe {
        assert_eq!(
            pierce_server_public_key(s, from_server.as_mut_ptr()),
            PIERCE_OK
        );
        assert_eq!(
            pierce_public_key([9u8; 32].as_ptr(), from_secret.as_mut_ptr()),
            PIERCE_OK
        );
        assert_eq!(pierce_server_free(s), PIERCE_OK);
    }
    assert_eq!(from_server, from_secret);
    assert_ne!(from_server, [0; 32]);
}

// ---- time and buffers ------------------------------------------------------------------------

#[test]
fn a_short_transmit_buffer_gets_the_size_needed_and_the_datagram_waits() {
    let c = new_client(7, 5_000_000);
    let server = addr("127.0.0.1:7777");
    unsafe {
        assert_eq!(
            pierce_client_connect(c, 5_000_000, &server, ptr::null(), 0),
            PIERCE_OK
        );
        let mut t = PierceTransmit::default();
        let mut small = [0u8; 16];
        let r = pierce_client_poll_transmit(c, 5_000_000, small.as_mut_ptr(), small.len(), &mut t);
        assert_eq!(r, PIERCE_BUFFER_TOO_SMALL);
        let needed = t.len;
        assert!(
            needed > small.len() && needed <= PIERCE_MAX_DATAGRAM_SIZE,
            "{needed}"
        );
        assert!(
            last_error().contains(&needed.to_string()),
            "{}",
            last_error()
        );
        // Asking with no buffer at all is the same question.
        assert_eq!(
            pierce_client_poll_transmit(c, 5_000_000, ptr::null_mut(), 0, &mut t),
            PIERCE_BUFFER_TOO_SMALL
        );
        assert_eq!(t.len, needed);
        // Exactly the size needed is enough, and it is the same datagram, to the server.
        let mut exact = vec![0u8; needed];
        let r = pierce_client_poll_transmit(c, 5_000_000, exact.as_mut_ptr(), exact.len(), &mut t);
        assert_eq!(r, PIERCE_OK);
        assert_eq!(t.len, needed);
        assert_eq!(t.dst, server);
        assert_eq!(t.socket, 0);
        let mut big = [0u8; PIERCE_MAX_DATAGRAM_SIZE];
        let r = pierce_client_poll_transmit(c, 5_000_000, big.as_mut_ptr(), big.len(), &mut t);
        assert_eq!(r, PIERCE_NO_MORE, "one hello, sent once");
        assert_eq!(pierce_client_free(c), PIERCE_OK);
    }
}

#[test]
fn deadlines_are_in_the_callers_clock_and_a_clock_going_back_is_clamped() {
    let origin = 1_000_000_000;
    let c = new_client(8, origin);
    let server = addr("127.0.0.1:7777");
    let mut at = 0u64;
    unsafe {
        assert_eq!(
            pierce_client_poll_timeout(c, &mut at),
            PIERCE_NO_MORE,
            "a fresh client waits for nothing"
        );
        assert_eq!(
            pierce_client_connect(c, origin, &server, ptr::null(), 0),
            PIERCE_OK
        );
        assert_eq!(pierce_client_poll_timeout(c, &mut at), PIERCE_OK);
        // The first handshake retry is due 250 ms after connecting (the core's default).
        assert_eq!(at, origin + 250_000);
        assert_eq!(
            pierce_client_handle_timeout(c, origin + 2_000_000),
            PIERCE_OK
        );
        assert_eq!(
            pierce_client_handle_timeout(c, origin + 1_000_000),
            PIERCE_OK
        );
        assert_eq!(pierce_client_handle_timeout(c, 3), PIERCE_OK);
        let mut s = PierceClientStats::default();
        assert_eq!(pierce_client_stats(c, &mut s), PIERCE_OK);
        assert_eq!(s.time_went_backwards, 2);
        assert_eq!(s.state, PierceClientState::PIERCE_CLIENT_IDLE as u32);
        assert_eq!(pierce_client_free(c), PIERCE_OK);
    }
}

/// Runs a client connecting to a server that never answers over UDP, answering its TCP
/// fallback's connect request with `answer`, until it gives up; returns the socket request
/// seen and the disconnect reason.
fn unanswered_connect(
    seed: u8,
    answer: impl Fn(*mut PierceClient, u64, u16) -> PierceResult,
) -> (PierceSocketRequest, u32) {
    use PierceClientEventKind::*;
    let mut config = quiet_client_config();
    config.connect_timeout_ms = 3_000;
    let mut c = ptr::null_mut();
    let start = 1_000_000;
    unsafe {
        assert_eq!(
            pierce_client_new(&config, [seed; 32].as_ptr(), start, &mut c),
            PIERCE_OK
        );
        let server = addr("192.0.2.1:7777");
        assert_eq!(
            pierce_client_connect(c, start, &server, ptr::null(), 0),
            PIERCE_OK
        );
        let mut buf = [0u8; PIERCE_MAX_DATAGRAM_SIZE];
        let mut t = PierceTransmit::default();
        let mut request = None;
        for ms in 0..10_000u64 {
            let now = start + ms * 1_000;
            assert_eq!(pierce_client_handle_timeout(c, now), PIERCE_OK);
            while pierce_client_poll_transmit(c, now, buf.as_mut_ptr(), buf.len(), &mut t)
                == PIERCE_OK
            {}
            let mut r = std::mem::MaybeUninit::<PierceSocketRequest>::uninit();
            while pierce_client_poll_socket_request(c, r.as_mut_ptr()) == PIERCE_OK {
                let r = r.assume_init();
                if r.kind == PierceSocketRequestKind::PIERCE_SOCKET_CONNECT {
                    assert_eq!(answer(c, now, r.socket), PIERCE_OK);
                    request = Some(r);
                }
            }
            let mut e = PierceClientEvent::empty(PIERCE_CLIENT_EVENT_OTHER);
            while pierce_client_poll_event(c, &mut e) == PIERCE_OK {
                if e.kind == PIERCE_CLIENT_EVENT_DISCONNECTED {
                    assert_eq!(pierce_client_free(c), PIERCE_OK);
                    return (request.expect("a TCP fallback was asked for"), e.reason);
                }
            }
        }
    }
    panic!("the client never gave up");
}

#[test]
fn socket_requests_and_stream_reports_reach_the_client() {
    use PierceDisconnectReason::*;
    let (request, reason) = unanswered_connect(30, |c, now, id| unsafe {
        pierce_client_handle_stream_refused(c, now, id)
    });
    assert_eq!(request.has_addr, 1);
    assert_eq!(
        request.addr,
        addr("192.0.2.1:7777"),
        "the stream goes to the server's address"
    );
    assert_ne!(request.socket & crate::PIERCE_STREAM_BIT, 0, "a stream id");
    assert_eq!(reason, PIERCE_DISCONNECT_CONNECT_REFUSED as u32);

    let (_, reason) = unanswered_connect(31, |c, now, id| unsafe {
        pierce_client_handle_socket_failed(c, now, id)
    });
    assert_eq!(reason, PIERCE_DISCONNECT_CONNECT_TIMED_OUT as u32);
}

// ---- a whole exchange through the C functions ------------------------------------------------

/// An event copied out of its borrowed C form.
#[derive(Debug, Clone)]
struct Ev {
    kind: PierceClientEventKind,
    host: u64,
    group: u64,
    channel: u8,
    reason: u32,
    code: u32,
    value: u64,
    payload: Vec<u8>,
    name: Option<String>,
}

fn copy_event(e: &PierceClientEvent) -> Ev {
    let payload = if e.payload.is_null() {
        Vec::new()
    } else {
        unsafe { std::slice::from_raw_parts(e.payload, e.payload_len) }.to_vec()
    };
    let name = (!e.name.is_null()).then(|| {
        unsafe { CStr::from_ptr(e.name) }
            .to_str()
            .unwrap()
            .to_owned()
    });
    Ev {
        kind: e.kind,
        host: e.host,
        group: e.group,
        channel: e.channel,
        reason: e.reason,
        code: e.code,
        value: e.value,
        payload,
        name,
    }
}

/// A server and clients on a perfect in-memory network, driven in virtual time (1 ms steps)
/// through nothing but the C functions.
struct Net {
    now: u64,
    server: *mut PierceServer,
    server_addr: PierceAddr,
    server_events: Vec<(PierceServerEventKind, u64, Vec<u8>)>,
    clients: Vec<(*mut PierceClient, PierceAddr, Vec<Ev>)>,
    wire: VecDeque<(PierceAddr, PierceAddr, Vec<u8>)>,
}

impl Net {
    fn new(clients: usize) -> Self {
        let now = 10_000_000;
        let server = new_server(now);
        let clients = (0..clients)
            .map(|i| {
                let a = addr(&format!("10.0.0.{}:5000", i + 2));
                (new_client(20 + i as u8, now), a, Vec::new())
            })
            .collect();
        Self {
            now,
            server,
            server_addr: addr("10.0.0.1:7777"),
            server_events: Vec::new(),
            clients,
            wire: VecDeque::new(),
        }
    }

    fn drain(&mut self) {
        let mut buf = [0u8; PIERCE_MAX_DATAGRAM_SIZE];
        let mut t = PierceTransmit::default();
        unsafe {
            while pierce_server_poll_transmit(
                self.server,
                self.now,
                buf.as_mut_ptr(),
                buf.len(),
                &mut t,
            ) == PIERCE_OK
            {
                self.wire
                    .push_back((t.dst, self.server_addr, buf[..t.len].to_vec()));
            }
            let mut e = PierceServerEvent::empty(PierceServerEventKind::PIERCE_SERVER_EVENT_OTHER);
            while pierce_server_poll_event(self.server, &mut e) == PIERCE_OK {
                let payload = if e.payload.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(e.payload, e.payload_len).to_vec()
                };
                self.server_events.push((e.kind, e.host, payload));
            }
            for (c, a, events) in &mut self.clients {
                while pierce_client_poll_transmit(*c, self.now, buf.as_mut_ptr(), buf.len(), &mut t)
                    == PIERCE_OK
                {
                    assert_eq!(t.socket, 0);
                    self.wire.push_back((t.dst, *a, buf[..t.len].to_vec()));
                }
                let mut r = PierceSocketRequest {
                    kind: PierceSocketRequestKind::PIERCE_SOCKET_CLOSE,
                    socket: 0,
                    has_addr: 0,
                    addr: PierceAddr::NONE,
                };
                while pierce_client_poll_socket_request(*c, &mut r) == PIERCE_OK {
                    if r.kind != PierceSocketRequestKind::PIERCE_SOCKET_CLOSE {
                        // No extra sockets here: every request fails.
                        assert_eq!(
                            pierce_client_handle_socket_opened(*c, self.now, r.socket, ptr::null()),
                            PIERCE_OK
                        );
                    }
                }
                let mut e =
                    PierceClientEvent::empty(PierceClientEventKind::PIERCE_CLIENT_EVENT_OTHER);
                while pierce_client_poll_event(*c, &mut e) == PIERCE_OK {
                    events.push(copy_event(&e));
                }
            }
        }
    }

    /// One millisecond: deliver what is on the wire, run due timers, collect the outputs.
    fn step(&mut self) {
        self.drain();
        while let Some((dst, from, bytes)) = self.wire.pop_front() {
            unsafe {
                if dst == self.server_addr {
                    let r = pierce_server_handle_datagram(
                        self.server,
                        self.now,
                        0,
                        &from,
                        bytes.as_ptr(),
                        bytes.len(),
                    );
                    assert_eq!(r, PIERCE_OK);
                } else if let Some((c, _, _)) = self.clients.iter().find(|(_, a, _)| *a == dst) {
                    let r = pierce_client_handle_datagram(
                        *c,
                        self.now,
                        0,
                        &from,
                        bytes.as_ptr(),
                        bytes.len(),
                    );
                    assert_eq!(r, PIERCE_OK);
                }
            }
        }
        self.now += 1_000;
        let mut at = 0;
        unsafe {
            if pierce_server_poll_timeout(self.server, &mut at) == PIERCE_OK && at <= self.now {
                assert_eq!(
                    pierce_server_handle_timeout(self.server, self.now),
                    PIERCE_OK
                );
            }
            for (c, _, _) in &self.clients {
                if pierce_client_poll_timeout(*c, &mut at) == PIERCE_OK && at <= self.now {
                    assert_eq!(pierce_client_handle_timeout(*c, self.now), PIERCE_OK);
                }
            }
        }
        self.drain();
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..30_000 {
            if done(self) {
                return;
            }
            self.step();
        }
        panic!("not within 30 s of virtual time: {what}");
    }

    fn events(&self, i: usize) -> &[Ev] {
        &self.clients[i].2
    }

    fn has(&self, i: usize, kind: PierceClientEventKind, host: Option<u64>) -> bool {
        self.events(i)
            .iter()
            .any(|e| e.kind == kind && host.is_none_or(|h| e.host == h))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        unsafe {
            for (c, _, _) in &self.clients {
                assert_eq!(pierce_client_free(*c), PIERCE_OK);
            }
            assert_eq!(pierce_server_free(self.server), PIERCE_OK);
        }
    }
}

#[test]
fn a_server_and_two_clients_join_a_room_and_exchange_reliable_messages_through_the_c_api() {
    use PierceClientEventKind::*;
    let mut net = Net::new(2);
    let (a, b) = (net.clients[0].0, net.clients[1].0);
    let server = net.server_addr;
    unsafe {
        assert_eq!(
            pierce_client_connect(a, net.now, &server, ptr::null(), 0),
            PIERCE_OK
        );
        assert_eq!(
            pierce_client_connect(b, net.now, &server, ptr::null(), 0),
            PIERCE_OK
        );
        assert_eq!(
            pierce_client_connect(b, net.now, &server, ptr::null(), 0),
            PIERCE_ALREADY
        );
    }
    net.run_until("both connected", |n| {
        n.has(0, PIERCE_CLIENT_EVENT_CONNECTED, None)
            && n.has(1, PIERCE_CLIENT_EVENT_CONNECTED, None)
    });
    let id = |n: &Net, i: usize| {
        n.events(i)
            .iter()
            .find(|e| e.kind == PIERCE_CLIENT_EVENT_CONNECTED)
            .unwrap()
            .host
    };
    let (id_a, id_b) = (id(&net, 0), id(&net, 1));
    assert_ne!(id_a, id_b);

    let lobby = CString::new("lobby").unwrap();
    unsafe {
        assert_eq!(
            pierce_client_join_room(a, net.now, lobby.as_ptr(), ptr::null(), 1, 0, 0),
            PIERCE_OK
        );
    }
    net.run_until("a in the room", |n| {
        n.has(0, PIERCE_CLIENT_EVENT_ROOM_JOINED, None)
    });
    let joined = net
        .events(0)
        .iter()
        .find(|e| e.kind == PIERCE_CLIENT_EVENT_ROOM_JOINED)
        .unwrap();
    assert_eq!(joined.name.as_deref(), Some("lobby"));
    assert_eq!(joined.host, id_a, "the creator owns the room");
    let group = joined.group;
    unsafe {
        assert_eq!(
            pierce_client_join_room(b, net.now, lobby.as_ptr(), ptr::null(), 0, 0, 0),
            PIERCE_OK
        );
    }
    net.run_until("each sees the other join", |n| {
        n.has(0, PIERCE_CLIENT_EVENT_MEMBER_JOINED, Some(id_b))
            && n.has(1, PIERCE_CLIENT_EVENT_MEMBER_JOINED, Some(id_a))
    });

    const N: usize = 20;
    for i in 0..N {
        let (to_b, to_a) = (format!("a->b {i}"), format!("b->a {i}"));
        let mut message_id = u64::MAX;
        unsafe {
            let r = pierce_client_send(
                a,
                net.now,
                id_b,
                PIERCE_CHANNEL_RELIABLE_ORDERED,
                to_b.as_ptr(),
                to_b.len(),
                ptr::null(),
                &mut message_id,
            );
            assert_eq!(r, PIERCE_OK, "{}", last_error());
            let r = pierce_client_send(
                b,
                net.now,
                id_a,
                PIERCE_CHANNEL_RELIABLE_ORDERED,
                to_a.as_ptr(),
                to_a.len(),
                ptr::null(),
                ptr::null_mut(),
            );
            assert_eq!(r, PIERCE_OK, "{}", last_error());
        }
        assert_ne!(message_id, u64::MAX, "the message id is written");
        net.step();
    }
    let messages = |n: &Net, i: usize| -> Vec<Ev> {
        n.events(i)
            .iter()
            .filter(|e| e.kind == PIERCE_CLIENT_EVENT_PEER_MESSAGE)
            .cloned()
            .collect()
    };
    net.run_until("every message delivered", |n| {
        messages(n, 0).len() >= N && messages(n, 1).len() >= N
    });
    for (i, from, prefix) in [(1, id_a, "a->b"), (0, id_b, "b->a")] {
        let got = messages(&net, i);
        assert_eq!(got.len(), N, "exactly once");
        for (k, e) in got.iter().enumerate() {
            assert_eq!(e.host, from);
            assert_eq!(e.channel, PIERCE_CHANNEL_RELIABLE_ORDERED);
            assert_eq!(
                String::from_utf8(e.payload.clone()).unwrap(),
                format!("{prefix} {k}"),
                "in order"
            );
        }
    }

    // Errors a game meets: an unknown peer, an unknown channel, a payload too large.
    unsafe {
        let p = b"x";
        assert_eq!(
            pierce_client_send(
                a,
                net.now,
                999_999,
                0,
                p.as_ptr(),
                1,
                ptr::null(),
                ptr::null_mut()
            ),
            PIERCE_UNKNOWN_PEER
        );
        assert_eq!(
            pierce_client_send(
                a,
                net.now,
                id_b,
                200,
                p.as_ptr(),
                1,
                ptr::null(),
                ptr::null_mut()
            ),
            PIERCE_UNKNOWN_CHANNEL
        );
        let big = vec![0u8; 2 << 20];
        assert_eq!(
            pierce_client_send(
                a,
                net.now,
                id_b,
                0,
                big.as_ptr(),
                big.len(),
                ptr::null(),
                ptr::null_mut()
            ),
            PIERCE_PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            pierce_client_leave_room(a, net.now, group + 1),
            PIERCE_NOT_MEMBER
        );
    }

    let mut stats = PierceServerStats::default();
    let mut peer = PiercePeerStats::default();
    let mut cs = PierceClientStats::default();
    unsafe {
        assert_eq!(pierce_server_stats(net.server, &mut stats), PIERCE_OK);
        assert_eq!(pierce_client_peer_stats(a, id_b, &mut peer), PIERCE_OK);
        assert_eq!(pierce_client_stats(a, &mut cs), PIERCE_OK);
        assert_eq!(
            pierce_client_peer_stats(a, 424_242, &mut peer),
            PIERCE_UNKNOWN_PEER
        );
    }
    assert_eq!(stats.clients, 2);
    assert_eq!(stats.groups, 1);
    assert!(
        peer.messages_in >= N as u64 && peer.messages_out >= N as u64,
        "{peer:?}"
    );
    assert_eq!(cs.state, PierceClientState::PIERCE_CLIENT_CONNECTED as u32);
    assert_eq!(cs.host_id, id_a);
    assert_eq!(
        cs.public_addr, net.clients[0].1,
        "the server saw a at its in-memory address"
    );

    // A leaves; B hears it, the server reports the close with its code.
    unsafe { assert_eq!(pierce_client_disconnect(a, net.now, 42), PIERCE_OK) };
    net.run_until("b sees a leave", |n| {
        n.has(1, PIERCE_CLIENT_EVENT_MEMBER_LEFT, Some(id_a))
    });
    let left = net
        .events(1)
        .iter()
        .find(|e| e.kind == PIERCE_CLIENT_EVENT_MEMBER_LEFT)
        .unwrap();
    assert_eq!(left.group, group);
    assert_eq!(
        left.reason,
        PierceMemberLeftReason::PIERCE_MEMBER_LEFT_DISCONNECTED as u32
    );
    let gone = net
        .events(0)
        .iter()
        .find(|e| e.kind == PIERCE_CLIENT_EVENT_DISCONNECTED)
        .unwrap();
    assert_eq!(
        gone.reason,
        PierceDisconnectReason::PIERCE_DISCONNECT_CLOSED_LOCALLY as u32
    );
    assert_eq!(gone.code, 42);
    let left = |n: &Net| {
        n.server_events
            .iter()
            .any(|e| e.0 == PierceServerEventKind::PIERCE_SERVER_EVENT_CLIENT_LEFT && e.1 == id_a)
    };
    net.run_until("the server reports a's close", left);
}

#[test]
fn a_host_connects_its_own_player_in_memory() {
    let mut config = PierceServerConfig::defaults([3; 32]);
    config.rooms = 1;
    let at = addr("192.0.2.10:7777");
    let mut h = ptr::null_mut();
    unsafe {
        let unspecified = addr("0.0.0.0:7777");
        let r = pierce_host_new(
            &config,
            ptr::null(),
            [1u8; 32].as_ptr(),
            0,
            0,
            &unspecified,
            ptr::null(),
            0,
            &mut h,
        );
        assert_eq!(
            r, PIERCE_INVALID_CONFIG,
            "remote players could not be told where the host is"
        );
        let r = pierce_host_new(
            &config,
            ptr::null(),
            [1u8; 32].as_ptr(),
            0,
            0,
            &at,
            ptr::null(),
            0,
            &mut h,
        );
        assert_eq!(r, PIERCE_OK, "{}", last_error());
        let mut buf = [0u8; PIERCE_MAX_DATAGRAM_SIZE];
        let mut t = PierceTransmit::default();
        while pierce_host_poll_transmit(h, 0, buf.as_mut_ptr(), buf.len(), &mut t) == PIERCE_OK {}
        let mut sides = Vec::new();
        let mut e = std::mem::MaybeUninit::<PierceHostEvent>::uninit();
        while pierce_host_poll_event(h, e.as_mut_ptr()) == PIERCE_OK {
            let e = e.assume_init_ref();
            sides.push((e.side, e.server.kind, e.client.kind));
        }
        use PierceHostEventSide::*;
        assert!(
            sides.contains(&(
                PIERCE_HOST_EVENT_SERVER,
                PierceServerEventKind::PIERCE_SERVER_EVENT_CLIENT_JOINED,
                PierceClientEventKind::PIERCE_CLIENT_EVENT_OTHER
            )),
            "{sides:?}"
        );
        assert!(
            sides.contains(&(
                PIERCE_HOST_EVENT_CLIENT,
                PierceServerEventKind::PIERCE_SERVER_EVENT_OTHER,
                PierceClientEventKind::PIERCE_CLIENT_EVENT_CONNECTED
            )),
            "{sides:?}"
        );
        let mut s = PierceHostStats::default();
        assert_eq!(pierce_host_stats(h, &mut s), PIERCE_OK);
        assert_eq!(
            s.client.state,
            PierceClientState::PIERCE_CLIENT_CONNECTED as u32
        );
        assert_eq!(s.server.clients, 1);
        let room = CString::new("party").unwrap();
        assert_eq!(
            pierce_host_create_room(h, 1_000, room.as_ptr(), ptr::null(), 4, 0),
            PIERCE_OK
        );
        assert_eq!(pierce_host_free(h), PIERCE_OK);
    }
}

// ---- the driven layer on loopback -------------------------------------------------------------

#[test]
fn driven_clients_meet_in_a_room_on_loopback_and_exchange_messages() {
    use PierceClientEventKind::*;
    let mut config = PierceServerConfig::defaults([0; 32]);
    unsafe { assert_eq!(pierce_server_config_default(&mut config), PIERCE_OK) };
    let listen = addr("127.0.0.1:0");
    let mut server = ptr::null_mut();
    unsafe {
        assert_eq!(
            pierce_driver_server_new(&listen, &config, 0, &mut server),
            PIERCE_OK,
            "{}",
            last_error()
        )
    };
    let mut server_addr = PierceAddr::default();
    unsafe {
        assert_eq!(
            pierce_driver_server_local_addr(server, &mut server_addr),
            PIERCE_OK
        )
    };
    assert_ne!(server_addr.port, 0);

    let client_config = quiet_client_config();
    let bind = addr("127.0.0.1:0");
    let mut clients = [ptr::null_mut(); 2];
    for c in &mut clients {
        unsafe {
            assert_eq!(
                pierce_driver_client_new(&bind, &client_config, c),
                PIERCE_OK,
                "{}",
                last_error()
            );
            assert_eq!(
                pierce_driver_client_connect(*c, &server_addr, ptr::null(), 0),
                PIERCE_OK
            );
        }
    }
    let mut events: [Vec<Ev>; 2] = [Vec::new(), Vec::new()];
    let pump = |events: &mut [Vec<Ev>; 2]| unsafe {
        assert_eq!(pierce_driver_server_pump(server, 1), PIERCE_OK);
        let mut se = PierceServerEvent::empty(PierceServerEventKind::PIERCE_SERVER_EVENT_OTHER);
        while pierce_driver_server_poll_event(server, &mut se) == PIERCE_OK {}
        for (c, evs) in clients.iter().zip(events.iter_mut()) {
            assert_eq!(pierce_driver_client_pump(*c, 1), PIERCE_OK);
            let mut e = PierceClientEvent::empty(PIERCE_CLIENT_EVENT_OTHER);
            while pierce_driver_client_poll_event(*c, &mut e) == PIERCE_OK {
                evs.push(copy_event(&e));
            }
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let until = |what: &str, events: &mut [Vec<Ev>; 2], done: &dyn Fn(&[Vec<Ev>; 2]) -> bool| {
        while !done(events) {
            assert!(
                std::time::Instant::now() < deadline,
                "not within 20 s: {what}"
            );
            pump(events);
        }
    };
    let find = |evs: &[Ev], kind| evs.iter().find(|e| e.kind == kind).cloned();
    until("connected", &mut events, &|e| {
        e.iter()
            .all(|evs| find(evs, PIERCE_CLIENT_EVENT_CONNECTED).is_some())
    });
    let ids = [0, 1].map(|i| {
        find(&events[i], PIERCE_CLIENT_EVENT_CONNECTED)
            .unwrap()
            .host
    });
    let room = CString::new("driven").unwrap();
    unsafe {
        assert_eq!(
            pierce_driver_client_join_room(clients[0], room.as_ptr(), ptr::null(), 1, 0, 0),
            PIERCE_OK
        );
    }
    until("a in the room", &mut events, &|e| {
        find(&e[0], PIERCE_CLIENT_EVENT_ROOM_JOINED).is_some()
    });
    unsafe {
        assert_eq!(
            pierce_driver_client_join_room(clients[1], room.as_ptr(), ptr::null(), 0, 0, 0),
            PIERCE_OK
        );
    }
    until("members", &mut events, &|e| {
        e[0].iter()
            .any(|x| x.kind == PIERCE_CLIENT_EVENT_MEMBER_JOINED && x.host == ids[1])
            && e[1]
                .iter()
                .any(|x| x.kind == PIERCE_CLIENT_EVENT_MEMBER_JOINED && x.host == ids[0])
    });
    unsafe {
        let (m0, m1) = (b"hello from 0", b"hello from 1");
        assert_eq!(
            pierce_driver_client_send(
                clients[0],
                ids[1],
                0,
                m0.as_ptr(),
                m0.len(),
                ptr::null(),
                ptr::null_mut()
            ),
            PIERCE_OK
        );
        assert_eq!(
            pierce_driver_client_send(
                clients[1],
                ids[0],
                0,
                m1.as_ptr(),
                m1.len(),
                ptr::null(),
                ptr::null_mut()
            ),
            PIERCE_OK
        );
    }
    until("messages", &mut events, &|e| {
        e.iter()
            .all(|evs| find(evs, PIERCE_CLIENT_EVENT_PEER_MESSAGE).is_some())
    });
    assert_eq!(
        find(&events[1], PIERCE_CLIENT_EVENT_PEER_MESSAGE)
            .unwrap()
            .payload,
        b"hello from 0"
    );
    assert_eq!(
        find(&events[0], PIERCE_CLIENT_EVENT_PEER_MESSAGE)
            .unwrap()
            .payload,
        b"hello from 1"
    );
    let mut io = PierceDriverStats::default();
    let mut ss = PierceServerStats::default();
    unsafe {
        assert_eq!(
            pierce_driver_client_io_stats(clients[0], &mut io),
            PIERCE_OK
        );
        assert_eq!(pierce_driver_server_stats(server, &mut ss), PIERCE_OK);
        for c in clients {
            assert_eq!(pierce_driver_client_disconnect(c, 0), PIERCE_OK);
            assert_eq!(pierce_driver_client_pump(c, 0), PIERCE_OK);
            assert_eq!(pierce_driver_client_free(c), PIERCE_OK);
        }
        assert_eq!(pierce_driver_server_free(server), PIERCE_OK);
    }
    assert!(io.datagrams_received > 0 && io.datagrams_sent > 0, "{io:?}");
    assert_eq!(ss.clients, 2);
}

#[test]
fn a_server_application_groups_messages_kicks_and_drains_through_the_c_api() {
    use PierceClientEventKind::*;
    use PierceServerEventKind::*;
    let mut net = Net::new(2);
    let (a, b, s) = (net.clients[0].0, net.clients[1].0, net.server);
    let server = net.server_addr;
    unsafe {
        assert_eq!(
            pierce_client_connect(a, net.now, &server, ptr::null(), 0),
            PIERCE_OK
        );
        assert_eq!(
            pierce_client_connect(b, net.now, &server, ptr::null(), 0),
            PIERCE_OK
        );
    }
    net.run_until("both joined the server", |n| {
        n.server_events
            .iter()
            .filter(|e| e.0 == PIERCE_SERVER_EVENT_CLIENT_JOINED)
            .count()
            == 2
    });
    let joined: Vec<u64> = net
        .server_events
        .iter()
        .filter(|e| e.0 == PIERCE_SERVER_EVENT_CLIENT_JOINED)
        .map(|e| e.1)
        .collect();
    let (id_a, id_b) = (joined[0], joined[1]);
    let mut where_a = PierceAddr::default();
    unsafe { assert_eq!(pierce_server_client_addr(s, id_a, &mut where_a), PIERCE_OK) };
    assert_eq!(where_a, net.clients[0].1);

    // A group made by the server application.
    let mut group = 0;
    unsafe {
        let members = [id_a, id_b];
        let r = pierce_server_create_group(s, net.now, members.as_ptr(), 2, &mut group);
        assert_eq!(r, PIERCE_OK, "{}", last_error());
        let r = pierce_server_create_group(s, net.now, [77_777u64].as_ptr(), 1, &mut group);
        assert_eq!(r, PIERCE_UNKNOWN_HOST);
        assert_eq!(
            pierce_server_destroy_group(s, net.now, group + 1000),
            PIERCE_UNKNOWN_GROUP
        );
        assert_eq!(
            pierce_server_join_group(s, net.now, group, id_a),
            PIERCE_ALREADY
        );
    }
    net.run_until("members told", |n| {
        n.has(0, PIERCE_CLIENT_EVENT_MEMBER_JOINED, Some(id_b))
            && n.has(1, PIERCE_CLIENT_EVENT_MEMBER_JOINED, Some(id_a))
    });

    // Messages both ways between the server application and a client.
    unsafe {
        let down = b"from the server";
        assert_eq!(
            pierce_server_send(s, net.now, id_a, down.as_ptr(), down.len(), 1),
            PIERCE_OK
        );
        let up = b"from a";
        assert_eq!(
            pierce_client_send_to_server(a, net.now, up.as_ptr(), up.len(), 1),
            PIERCE_OK
        );
        assert_eq!(
            pierce_server_send(s, net.now, 55_555, down.as_ptr(), 1, 0),
            PIERCE_UNKNOWN_HOST
        );
    }
    net.run_until("messages", |n| {
        n.has(0, PIERCE_CLIENT_EVENT_SERVER_MESSAGE, None)
            && n.server_events
                .iter()
                .any(|e| e.0 == PIERCE_SERVER_EVENT_MESSAGE)
    });
    let down = net
        .events(0)
        .iter()
        .find(|e| e.kind == PIERCE_CLIENT_EVENT_SERVER_MESSAGE)
        .unwrap();
    assert_eq!(down.payload, b"from the server");
    let up = net
        .server_events
        .iter()
        .find(|e| e.0 == PIERCE_SERVER_EVENT_MESSAGE)
        .unwrap();
    assert_eq!((up.1, up.2.as_slice()), (id_a, &b"from a"[..]));

    // Draining tells every client how long it has; kicking closes with the code given.
    unsafe { assert_eq!(pierce_server_drain(s, net.now, 30_000), PIERCE_OK) };
    net.run_until("drain told", |n| {
        n.has(1, PIERCE_CLIENT_EVENT_SERVER_DRAINING, None)
    });
    let drain = net
        .events(1)
        .iter()
        .find(|e| e.kind == PIERCE_CLIENT_EVENT_SERVER_DRAINING)
        .unwrap();
    assert_eq!(drain.value, 30_000, "milliseconds left");
    unsafe {
        assert_eq!(pierce_server_disconnect(s, net.now, id_b, 7), PIERCE_OK);
        assert_eq!(
            pierce_server_disconnect(s, net.now, id_b, 7),
            PIERCE_UNKNOWN_HOST
        );
    }
    net.run_until("b kicked", |n| {
        n.has(1, PIERCE_CLIENT_EVENT_DISCONNECTED, None)
    });
    let gone = net
        .events(1)
        .iter()
        .find(|e| e.kind == PIERCE_CLIENT_EVENT_DISCONNECTED)
        .unwrap();
    assert_eq!(
        gone.reason,
        PierceDisconnectReason::PIERCE_DISCONNECT_CLOSED_BY_SERVER as u32
    );
    assert_eq!(gone.code, 7);
    let mut stats = PierceServerStats::default();
    unsafe { assert_eq!(pierce_server_stats(s, &mut stats), PIERCE_OK) };
    assert_eq!(stats.draining, 1);
    assert_eq!(stats.clients, 1);
}

/// The struct sizes a C compiler gives the header on x86_64 Linux (measured with `cc` and
/// `sizeof`; the same here from Rust's `repr(C)`). A change to any of them breaks programs built
/// against the old header: bump `PIERCE_ABI_VERSION` with it and update these numbers.
#[cfg(target_pointer_width = "64")]
#[test]
fn struct_layouts_are_the_abi_version_3_layouts() {
    use std::mem::{offset_of, size_of};
    assert_eq!(
        PIERCE_ABI_VERSION, 3,
        "new version: re-measure the sizes below"
    );
    // Version 3 changed no struct (only `PIERCE_MAX_DATAGRAM_SIZE`). Version 2 added `ttl` in what was `PierceTransmit`'s padding: same size, a new field.
    assert_eq!(offset_of!(PierceTransmit, ttl), 34);
    assert_eq!(size_of::<PierceAddr>(), 20);
    assert_eq!(size_of::<PierceClientEvent>(), 192);
    assert_eq!(offset_of!(PierceClientEvent, payload), 160);
    assert_eq!(size_of::<PierceServerEvent>(), 80);
    assert_eq!(size_of::<PierceHostEvent>(), 280);
    assert_eq!(size_of::<PierceClientConfig>(), 72);
    assert_eq!(size_of::<PierceServerConfig>(), 80);
    assert_eq!(size_of::<PierceTransmit>(), 40);
    assert_eq!(size_of::<PierceSocketRequest>(), 28);
    assert_eq!(size_of::<PierceClientStats>(), 144);
    assert_eq!(size_of::<PierceServerStats>(), 160);
    assert_eq!(size_of::<PiercePeerStats>(), 120);
    assert_eq!(size_of::<PierceHostStats>(), 312);
    assert_eq!(size_of::<PierceDriverStats>(), 72);
}
