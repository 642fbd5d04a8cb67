//! # pierce-os
//!
//! What Pierce's runtimes (`pierce-mio`, `pierce-async-std`) take from the operating system
//! besides their sockets, written once for both: 32 bytes of OS entropy for a core's seed
//! ([`os_seed`]), wall-clock time for a server's token expiry ([`unix_time`]), the host's
//! interface addresses as LAN candidates ([`local_addresses`]), socket buffer sizes
//! ([`set_socket_buffers`]), and which receive errors are stray ICMP rather than a broken
//! socket ([`is_stray_icmp`]), a TCP listener sized for bursts ([`listen_tcp`]), writing a TCP
//! stream's queue ([`write_queued`]) and how much
//! unread input to discard before closing one ([`discard_unread`]), a server's sockets for
//! relay threads with the kernel steering relay packets among them ([`bind_relay_group`]),
//! dual-stack UDP sockets and destinations in a socket's family ([`bind_udp`],
//! [`for_socket`]), the default IPv4 gateway for port mapping ([`default_gateway`]), one
//! datagram sent with a TTL of its own (hole-punching openers: `send_to_with_ttl`, Unix),
//! datagrams sent whole for path-MTU discovery ([`set_dont_fragment`], [`is_too_large`]);
//! and the counters a driver keeps about that work ([`DriverStats`]).
//!
//! The core (`pierce-core`) never touches the OS, so none of this can live there. A game uses
//! these through its runtime, which re-exports them (`pierce_mio::os_seed`,
//! `pierce_async_std::os_seed`, ...).

#![warn(missing_docs)]

mod dontfrag;
mod dual;
mod gateway;
mod reuseport;
#[cfg(target_os = "linux")]
mod sock;
#[cfg(any(target_os = "linux", target_vendor = "apple"))]
mod sockopt;
mod stats;
mod sys;
mod tcp;
#[cfg(unix)]
mod ttl;

#[cfg(any(target_os = "linux", target_vendor = "apple"))]
pub use dontfrag::sends_whole;
pub use dontfrag::{is_too_large, set_dont_fragment};
pub use dual::{bind_udp, discover_nat64_prefix, for_socket};
pub use gateway::default_gateway;

pub use reuseport::bind_relay_group;
pub use stats::DriverStats;
pub use sys::{is_stray_icmp, local_addresses, os_seed, set_socket_buffers, unix_time};
pub use tcp::{CLOSE_DRAIN, LISTEN_BACKLOG, discard_unread, listen_tcp, write_queued};
#[cfg(unix)]
pub use ttl::send_to_with_ttl;
