//! Every runtime primitive this crate touches, in one file. Each maps one-to-one onto async-io,
//! the reactor async-std is built on (quinn `runtime/smol.rs` is the same list), so moving to
//! smol is a change to this file alone:
//!
//! | here | what it is underneath | smol |
//! |---|---|---|
//! | `Socket` | `async_io::Async<std::net::UdpSocket>` | `smol::net::UdpSocket` |
//! | `TcpStream` | `Arc<async_io::Async<std::net::TcpStream>>` | `smol::net::TcpStream` |
//! | `TcpListener` | `async_io::Async<std::net::TcpListener>` | `smol::net::TcpListener` |
//! | `sleep` | `async_io::Timer::after` | `smol::Timer::after` |
//! | `channel` | `async-channel` | `smol::channel` |
//! | `spawn` | `async_global_executor::spawn` | `smol::spawn(..).detach()` |
//!
//! Only `spawn` needs an executor; the driver future itself runs under any of them (see the
//! `async_io::block_on` test).

use std::future::Future;
use std::io;
use std::time::Duration;

pub(crate) use async_std::channel;
pub(crate) use async_std::net::UdpSocket as Socket;
pub(crate) use async_std::net::{TcpListener, TcpStream};

/// A UDP socket bound at `addr`, dual stack at `[::]` ([`pierce_os::bind_udp`]), sending whole
/// datagrams ([`pierce_os::set_dont_fragment`]: the core's path-MTU probes must not be
/// fragmented on the way). Every UDP socket of this crate is made here.
pub(crate) fn bind_udp(addr: std::net::SocketAddr) -> io::Result<Socket> {
    let socket = pierce_os::bind_udp(addr)?;
    pierce_os::set_dont_fragment(&socket)?;
    Ok(Socket::from(socket))
}

/// Completes after `d`.
pub(crate) async fn sleep(d: Duration) {
    async_std::task::sleep(d).await;
}

/// Runs `driver` in the background until it finishes; its result also reaches the handles.
pub(crate) fn spawn(driver: impl Future<Output = io::Result<()>> + Send + 'static) {
    drop(async_std::task::spawn(driver)); // dropping an async-std JoinHandle detaches the task
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn a_socket_sends_whole_datagrams() {
        use std::os::fd::{AsRawFd, BorrowedFd};
        for addr in ["127.0.0.1:0", "[::]:0"] {
            let Ok(socket) = super::bind_udp(addr.parse().expect("literal")) else {
                assert_eq!(addr, "[::]:0", "IPv4 loopback binds");
                continue; // no IPv6 here
            };
            // SAFETY: the descriptor is `socket`'s, which outlives this borrow (async-std's
            // socket offers `AsRawFd`, not `AsFd`).
            let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
            assert!(pierce_os::sends_whole(fd).expect("getsockopt"), "{addr}");
        }
    }
}
