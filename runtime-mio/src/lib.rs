//! # pierce-mio
//!
//! Runs a [`pierce_core`] endpoint ([`pierce_core::Client`] or [`pierce_core::Server`]) on
//! non-blocking UDP sockets with [`mio`]. The adapter is thin on purpose: it owns the sockets
//! (the primary one it is created with, plus any the core asks for with
//! [`pierce_core::SocketRequest`]: a server's NAT discovery addresses, a client's birthday
//! probing ports), reads the clock once per wakeup, sleeps until the earlier of the core's
//! deadline and the next readiness, moves bytes both ways and hands events to the application.
//! Every protocol decision stays in the core.
//!
//! TCP streams carry the same datagrams for clients whose network blocks UDP (each framed as
//! a 2-byte length and the bytes): the driver connects the streams a client's core asks for
//! ([`pierce_core::SocketRequest::Connect`]), and a server's driver accepts them at its UDP
//! address once [`Driver::listen_tcp`] is called (at most [`DEFAULT_MAX_STREAMS`] at once
//! unless [`Driver::set_max_streams`] says otherwise). When to use TCP, and when to go back
//! to UDP, is the core's decision (`ClientConfig::transport`).
//!
//! Two ways to drive it:
//!
//! - From a game's frame loop: call [`Driver::pump`] with `Duration::ZERO` once per frame and
//!   drain [`Driver::poll_event`]. Work per pump is bounded ([`RECV_BUDGET`]) so a flood of
//!   datagrams cannot stall a frame.
//! - On a thread of its own: [`Driver::run`] blocks and calls back for every event.
//!
//! Commands (`connect`, `send_to_server`, `disconnect`, ...) go straight to the core through
//! [`Driver::endpoint_mut`], with `Instant::now()` as their time; the next pump sends whatever
//! they queued.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use pierce_core::{Client, ClientConfig, ClientEvent};
//! use pierce_mio::{Driver, os_seed};
//!
//! # fn main() -> std::io::Result<()> {
//! let client = Client::new(Arc::new(ClientConfig::default()), os_seed()?, Instant::now())
//!     .expect("default config is valid");
//! let mut driver = Driver::bind("0.0.0.0:0".parse().expect("literal"), client)?;
//! let server = "192.0.2.1:7777".parse().expect("literal");
//! driver.endpoint_mut().connect(Instant::now(), server, &[]).expect("fresh client");
//! loop {
//!     driver.pump(Duration::ZERO)?; // once per game frame
//!     while let Some(event) = driver.poll_event() {
//!         if let ClientEvent::Connected { .. } = event {
//!             driver.endpoint_mut().send_to_server(Instant::now(), b"hello").expect("connected");
//!         }
//!     }
//!     # break;
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod alloc;
mod batch;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cluster")]
pub mod cluster;
mod driver;
mod relay;
mod stream;

pub use alloc::CountingAllocator;
pub use driver::{Driver, RECV_BUDGET, RECV_BUFFER_SIZE, SEND_BUDGET};
pub use pierce_core::streams::DEFAULT_MAX_STREAMS;
pub use pierce_os::{
    DriverStats, bind_relay_group, bind_udp, default_gateway, discover_nat64_prefix, for_socket,
    is_too_large, local_addresses, os_seed, set_dont_fragment, set_socket_buffers, unix_time,
};
pub use relay::RelayThreads;
