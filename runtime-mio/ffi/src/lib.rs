//! # pierce-ffi: the C ABI of Pierce (`libpierce`)
//!
//! Two layers over the same objects:
//!
//! - **sans-IO** (`pierce_client_*`, `pierce_server_*`, `pierce_host_*`): the caller owns the
//!   sockets and the clock. Datagrams go in with `handle_datagram`, time with `handle_timeout`
//!   (`now_us`: microseconds of the caller's monotonic clock); datagrams come out of
//!   `poll_transmit`, deadlines out of `poll_timeout`, events out of `poll_event`, socket
//!   wishes out of `poll_socket_request`. Commands (connect, rooms, send...) queue work that
//!   the next `poll_transmit` drain sends.
//! - **driven** (`pierce_driver_client_*`, `pierce_driver_server_*`): the library owns a UDP
//!   socket (mio underneath) and the clock; `pump(timeout_ms)` is the whole loop turn, like
//!   `enet_host_service`.
//!
//! Conventions (the README has the long form):
//!
//! - Every function returns a `PierceResult` (except the version, name and message helpers);
//!   `PIERCE_OK` is 0, `PIERCE_NO_MORE` (1) means a `poll_*` found nothing, negative codes are
//!   errors and `pierce_last_error_message` explains the last one on the calling thread.
//! - No panic crosses the boundary: it is caught and returned as `PIERCE_PANIC`, and the handle
//!   it happened on is poisoned (only `*_free` works on it afterwards).
//! - Handles are opaque pointers, checked against a registry of live objects on every call:
//!   NULL gives `PIERCE_NULL_ARGUMENT`; a freed, foreign or garbage pointer gives
//!   `PIERCE_INVALID_HANDLE` without being dereferenced. Every object has its `*_free`.
//! - Every handle is single-threaded: it may move between threads, never be used from two at
//!   once. Functions without a handle may be called from any thread.
//! - Output structs are written only on `PIERCE_OK` (and where a function says so, e.g. the
//!   size needed with `PIERCE_BUFFER_TOO_SMALL`). Pointers inside an event are borrowed from
//!   the handle until the next call on it.
#![cfg_attr(test, allow(clippy::unwrap_used))]
// Every `extern "C"` function takes raw pointers; the rules for them are the same for all
// (valid for the sizes given, or NULL where documented, handles from this library) and are
// stated once above and in the README instead of in 150 `# Safety` sections.
#![allow(clippy::missing_safety_doc)]

pub mod client;
pub mod config;
pub mod driver;
pub mod error;
pub mod event;
mod handle;
pub mod host;
pub mod sans;
pub mod server;
pub mod stats;
pub mod types;

pub use client::PierceClient;
pub use config::{PierceClientConfig, PierceSendOptions, PierceServerConfig};
pub use driver::{PierceDriverClient, PierceDriverServer};
pub use error::PierceResult;
pub use event::{PierceClientEvent, PierceHostEvent, PierceServerEvent};
pub use host::PierceHost;
pub use sans::{PierceSocketRequest, PierceTransmit};
pub use types::PierceAddr;

/// The ABI version of this header: raised whenever a function, struct or enum changes
/// incompatibly. Check it at start-up with `pierce_check_version(PIERCE_ABI_VERSION)`.
/// Version 2: `PierceTransmit` has `ttl` (a program built for version 1 would send
/// hole-punching openers with the default TTL), and socket requests may be
/// `PIERCE_SOCKET_CONNECT_RAW` (an unframed TCP stream, for UPnP IGD's HTTP).
/// Version 3: `PIERCE_MAX_DATAGRAM_SIZE` is 1452 (path-MTU probing sends datagrams above the
/// 1200-byte base), so a program built for version 2 may hand `poll_transmit` too small a buffer.
pub const PIERCE_ABI_VERSION: u32 = 3;

/// Largest datagram any endpoint sends: a `poll_transmit` buffer this large always suffices.
pub const PIERCE_MAX_DATAGRAM_SIZE: usize = 1452;

/// The bit that marks a socket id as a TCP stream (`PIERCE_STREAM_BIT | n`).
pub const PIERCE_STREAM_BIT: u16 = 0x8000;

/// The primary UDP socket's id.
pub const PIERCE_SOCKET_PRIMARY: u16 = 0;

// The constants above mirror the core's; a change there must show here.
const _: () = assert!(PIERCE_MAX_DATAGRAM_SIZE == pierce_core::MAX_DATAGRAM_SIZE);
const _: () = assert!(PIERCE_STREAM_BIT == pierce_core::SocketId::STREAM_BIT);

/// The ABI version the library was built with (`PIERCE_ABI_VERSION` of its header).
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn pierce_abi_version() -> u32 {
    PIERCE_ABI_VERSION
}

/// `PIERCE_OK` if the library's ABI version is `expected` (pass `PIERCE_ABI_VERSION` from the
/// header you compiled against), else `PIERCE_VERSION_MISMATCH` (with both versions in the
/// last error message): a program built against another header must not call anything else.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn pierce_check_version(expected: u32) -> PierceResult {
    error::guard(|| {
        if expected == PIERCE_ABI_VERSION {
            Ok(PierceResult::PIERCE_OK)
        } else {
            Err(error::err(
                PierceResult::PIERCE_VERSION_MISMATCH,
                format!(
                    "the caller expects ABI version {expected}, this library has {PIERCE_ABI_VERSION}"
                ),
            ))
        }
    })
}

/// The library's version string (`"0.1.0"`), static: never free it.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn pierce_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests;
