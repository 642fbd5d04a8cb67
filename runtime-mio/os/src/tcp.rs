//! What closing a TCP stream asks of the OS.

use std::io;

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
    use super::*;

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
