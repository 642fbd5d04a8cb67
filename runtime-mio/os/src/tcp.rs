//! What a runtime's TCP streams ask of the OS: writing out a stream's queue, and closing it.

use std::io;

use pierce_core::framing::Framer;

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
