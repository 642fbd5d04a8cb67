//! What a runtime's TCP streams ask of the OS: a listener with room for a burst of
//! connections, writing out a stream's queue, and closing it.

use std::io;
use std::net::{SocketAddr, TcpListener};

use pierce_core::framing::Framer;

/// Connections the kernel queues for a listener before it accepts them ([`listen_tcp`]).
/// std's listeners (and mio's) ask for 128: a burst of connects beyond that in one turn of
/// the server's loop (players reconnecting after an outage, or a flood from many addresses
/// that the server's own admission sorts out, closing and so prompting ~one re-connect per
/// connection it accepts) overflows the queue, and Linux then drops new SYNs, SYN cookies
/// or not, so real clients wait for their SYN's retransmission (a second, then three). This
/// is Linux's own cap, `net.core.somaxconn` (4096 since 5.4; a lower setting wins); what
/// waits costs the kernel a few hundred bytes each, the server nothing until it accepts.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A TCP listener bound at `addr` (with `SO_REUSEADDR` on Unix, as std sets it) whose accept
/// queue holds [`LISTEN_BACKLOG`] connections (at most) where the OS lets us say so (Linux: `listen`
/// again on the bound socket, which only resizes the queue); elsewhere std's 128.
///
/// # Errors
/// The bind failed (the port is taken), or resizing the queue did.
pub fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is a live, bound and listening socket owned by `listener`;
        // listen() on it only changes the accept queue's length.
        if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(listener)
}

/// Writes what `queue` holds with `write` (a non-blocking write to the stream) until the queue
/// is empty (`Ok(true)`) or the socket takes no more now (`WouldBlock`: `Ok(false)`, the rest
/// stays queued). An interrupted write is retried.
///
/// # Errors
/// The stream failed (reset, broken pipe, or a write that took nothing): it is finished.
pub fn write_queued(
    queue: &mut Framer,
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<bool> {
    while !queue.is_empty() {
        match write(queue.front()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => queue.consume(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Bytes of unread input a runtime discards at most before closing a stream: closing a socket
/// with unread input makes the kernel reset the connection (RFC 1122 4.2.2.13) and drop what
/// was still queued for the peer, so a short drain first lets the last datagrams leave. The
/// bound keeps a close from reading forever from a peer that keeps sending; what it sends
/// past 16 KiB earns it the reset.
pub const CLOSE_DRAIN: usize = 16 * 1024;

/// Reads and discards up to [`CLOSE_DRAIN`] bytes with `read` (a non-blocking read of the
/// stream about to be closed), stopping at the end of the stream, an error or `WouldBlock`.
/// Never waits.
pub fn discard_unread(mut read: impl FnMut(&mut [u8]) -> io::Result<usize>) {
    let mut scratch = [0u8; 2048];
    let mut drained = 0;
    while drained < CLOSE_DRAIN {
        match read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_listener_queues_more_than_std_s_128_connections_before_any_accept() {
        use std::net::TcpStream;
        let listener = listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // Each connect completes (the kernel finished the handshake and queued it) without
        // anyone accepting; with std's backlog of 128 the 130th would wait for a SYN
        // retransmission (a second) and time out here.
        let held: Vec<TcpStream> = (0..300)
            .map(|_| TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500)))
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(held.len(), 300);
    }

    #[test]
    fn a_queue_is_written_until_the_socket_blocks_and_a_failure_ends_it() {
        let mut q = Framer::new(100);
        assert!(q.push(b"abc") && q.push(b"de"));
        let mut wire = Vec::new();
        let mut script = vec![
            Ok(2),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(1),
            Err(io::ErrorKind::WouldBlock.into()),
        ]
        .into_iter();
        let mut write = |b: &[u8]| {
            let r = script.next().unwrap_or(Ok(b.len()));
            if let Ok(n) = r {
                wire.extend_from_slice(&b[..n]);
            }
            r
        };
        assert!(!write_queued(&mut q, &mut write).unwrap(), "blocked");
        assert_eq!(q.len(), 9 - 3, "the rest stays queued");
        assert!(write_queued(&mut q, &mut write).unwrap(), "written out");
        assert_eq!(wire, b"\x00\x03abc\x00\x02de");
        assert!(q.push(b"f"));
        let zero = write_queued(&mut q, |_| Ok(0)).unwrap_err();
        assert_eq!(zero.kind(), io::ErrorKind::WriteZero);
        let reset = io::ErrorKind::ConnectionReset;
        assert_eq!(
            write_queued(&mut q, |_| Err(reset.into()))
                .unwrap_err()
                .kind(),
            reset
        );
    }

    #[test]
    fn a_drain_stops_at_its_bound_the_end_or_an_error() {
        let reads = |script: Vec<io::Result<usize>>| {
            let mut script = script.into_iter();
            let mut calls = 0;
            discard_unread(|buf| {
                calls += 1;
                script.next().unwrap_or(Ok(buf.len()))
            });
            calls
        };
        assert_eq!(reads(vec![]), CLOSE_DRAIN / 2048, "bounded");
        assert_eq!(reads(vec![Ok(5), Ok(0)]), 2, "the end");
        assert_eq!(reads(vec![Ok(5), Err(io::ErrorKind::WouldBlock.into())]), 2);
    }
}
