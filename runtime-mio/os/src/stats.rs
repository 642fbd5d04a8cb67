//! The counters a runtime keeps about its own work; protocol counters live in the core's
//! `stats()`.

use pierce_core::streams::{Push, Report};

/// Counters kept by a runtime's driver (`pierce_mio::Driver::stats`,
/// `pierce_async_std::ClientHandle::driver_stats`, ...); protocol counters live in the core's
/// `stats()`. A few are about a pump-based driver's budgets and stay zero under a driver
/// without them (pierce-async-std), as their docs say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Datagrams read from the sockets (UDP, or whole frames from streams) and handed to the
    /// core.
    pub datagrams_received: u64,
    /// Datagrams handed to the sockets (for a stream: queued on it, framed).
    pub datagrams_sent: u64,
    /// Datagrams the socket refused with a hard error (unreachable, wrong address family...);
    /// they are dropped like any datagram lost on the way.
    pub send_errors: u64,
    /// Of [`DriverStats::send_errors`], the datagrams larger than the local interface allows
    /// (`EMSGSIZE`, [`crate::is_too_large`]): path-MTU probes above it, on a socket sending
    /// whole datagrams ([`crate::set_dont_fragment`]). Dropped like loss, never sent again.
    pub send_too_large: u64,
    /// Receive errors that describe an earlier send, not this socket (ICMP port or host
    /// unreachable surfacing as `ConnectionReset`/`ConnectionRefused`: [`crate::is_stray_icmp`]);
    /// ignored, as quinn does. Also any other receive error of an extra socket (only the
    /// primary socket's stop the driver; pierce-async-std stops receiving on that socket, the
    /// endpoint goes on).
    pub recv_errors_ignored: u64,
    /// Pumps that stopped reading because the budget ran out with data still queued
    /// (pierce-mio's `Driver::pump`; zero elsewhere).
    pub budget_exhausted: u64,
    /// Datagrams (and ignored errors) read by the most recent pump; never above the budget
    /// (pierce-mio's `Driver::pump`; zero elsewhere).
    pub last_pump_received: usize,
    /// Flushes that stopped sending because the send budget ran out with more queued
    /// (pierce-mio's `SEND_BUDGET`; zero elsewhere).
    pub send_budget_exhausted: u64,
    /// Datagrams the core wanted sent from a socket the driver does not have (never opened,
    /// failed to open, or closed while the datagram waited; for a stream also: not connected
    /// yet, or ended); dropped like any lost datagram.
    pub unknown_socket_drops: u64,
    /// Sockets the core asked for that could not be opened (bind or registration failed; the
    /// core is told with `handle_socket_opened(.., None)`). Streams whose connect failed
    /// count here too.
    pub socket_open_failures: u64,
    /// TCP streams accepted on the listener and handed to the core.
    pub streams_accepted: u64,
    /// TCP streams the core asked for (`SocketRequest::Connect`) that connected.
    pub streams_connected: u64,
    /// Streams that ended by themselves (EOF, reset, error, or a frame over
    /// `MAX_STREAM_FRAME`), reported to the core with `handle_stream_closed`. Streams the core
    /// closed itself are not counted.
    pub streams_closed: u64,
    /// Of [`DriverStats::streams_closed`], the streams that announced a frame over
    /// `MAX_STREAM_FRAME` (not Pierce, or broken).
    pub stream_frames_too_long: u64,
    /// Connections over the stream cap (pierce-mio's `Driver::set_max_streams`,
    /// pierce-async-std's `ServerOptions::max_streams`), accepted and closed at once.
    pub streams_refused: u64,
    /// Accepts that failed (out of file descriptors, ...). pierce-mio leaves the connection
    /// in the kernel's backlog until the next one arrives; pierce-async-std's listener rests
    /// briefly.
    pub accept_errors: u64,
    /// Datagrams for a stream whose queue was full (its peer reads too slowly): dropped like
    /// any datagram lost on the way, never buffered without bound.
    pub stream_datagrams_dropped: u64,
    /// Bytes still queued for a stream the core closed that its socket would not take at once;
    /// dropped with the stream.
    pub stream_bytes_unflushed: u64,
}

impl DriverStats {
    /// Counts where a datagram for a stream went (`StreamTable::push`): sent, or dropped
    /// because the stream's queue was full or the stream is not there.
    pub fn count_push(&mut self, push: Push) {
        match push {
            Push::Queued => self.datagrams_sent += 1,
            Push::Full => self.stream_datagrams_dropped += 1,
            Push::Unknown => self.unknown_socket_drops += 1,
        }
    }

    /// Counts a stream that ended by itself (`StreamTable::ended`), by what the core is told:
    /// a closed stream, or a connect that failed.
    pub fn count_end(&mut self, report: Report) {
        match report {
            Report::Closed => self.streams_closed += 1,
            Report::ConnectFailed | Report::ConnectRefused => self.socket_open_failures += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_outcomes_land_in_their_counters() {
        let mut s = DriverStats::default();
        for push in [Push::Queued, Push::Queued, Push::Full, Push::Unknown] {
            s.count_push(push);
        }
        s.count_end(Report::Closed);
        s.count_end(Report::ConnectFailed);
        s.count_end(Report::ConnectFailed);
        let want = DriverStats {
            datagrams_sent: 2,
            stream_datagrams_dropped: 1,
            unknown_socket_drops: 1,
            streams_closed: 1,
            socket_open_failures: 2,
            ..DriverStats::default()
        };
        assert_eq!(s, want);
    }
}
