//! The server's stateless reset responder ([`crate::wire::reset`]): a session packet (sealed
//! `0xD3`, or relay `0xD6`) naming a session id this server does not have is answered with a
//! reset carrying that id's token, so a client whose server restarted (with the same key)
//! re-registers at once instead of waiting out its idle timeout.
//!
//! # Hostile input
//! Only session packets are answered: never a STUN message, a handshake packet, a reset or
//! anything that did not decode (so two endpoints can never answer each other's resets in a
//! loop). A reset is [`RESET_LEN`] bytes and only a packet longer than that is answered, so a
//! spoofed source gets fewer bytes than were sent in its name; the global token bucket
//! ([`ServerConfig::reset_rate_global`]) and a bounded queue bound the work (one HMAC each).
//! Packets over either limit are dropped as before (`dropped.unknown_session`) and counted in
//! [`ServerStats::resets_limited`].

use std::collections::VecDeque;

use super::session::Path;
use crate::Transmit;
use crate::config::ServerConfig;
use crate::crypto::ResetKey;
use crate::ratelimit::Bucket;
use crate::stats::ServerStats;
use crate::time::Instant;
use crate::wire::reset::{RESET_LEN, Reset};

/// Resets waiting to be sent, at most.
const QUEUE_CAP: usize = 256;

/// Packets of unknown sessions in, resets out.
#[derive(Debug)]
pub(super) struct Resets {
    key: ResetKey,
    bucket: Bucket,
    rate: u32,
    burst: u32,
    /// Resets to send: where, and the token.
    queue: VecDeque<(Path, [u8; 16])>,
}

impl Resets {
    pub(super) fn new(config: &ServerConfig) -> Self {
        Self {
            key: ResetKey::derive(&config.secret_key),
            bucket: Bucket::EMPTY,
            rate: config.reset_rate_global,
            burst: config.reset_burst_global,
            queue: VecDeque::new(),
        }
    }

    /// A session packet of `len` bytes from `path` named session `session`, which this server
    /// does not have (already counted as `dropped.unknown_session`): answered if it is longer
    /// than a reset and the limits allow.
    pub(super) fn handle_unknown(
        &mut self,
        now: Instant,
        path: Path,
        session: u32,
        len: usize,
        stats: &mut ServerStats,
    ) {
        if len <= RESET_LEN || self.rate == 0 {
            return;
        }
        if self.queue.len() >= QUEUE_CAP || !self.bucket.take_n(now, self.rate, self.burst, 1) {
            stats.resets_limited += 1;
            return;
        }
        self.queue.push_back((path, self.key.token(session)));
    }

    /// Writes the next reset into `buf`.
    pub(super) fn poll_transmit(
        &mut self,
        buf: &mut [u8],
        stats: &mut ServerStats,
    ) -> Option<Transmit> {
        let (path, token) = self.queue.pop_front()?;
        let len = Reset { token }.encode(buf).ok()?;
        stats.resets_sent += 1;
        Some(Transmit {
            dst: path.addr,
            len,
            socket: path.socket,
            ttl: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use crate::SocketId;
    use crate::time::Duration;

    fn config(rate: u32, burst: u32) -> ServerConfig {
        let mut c = ServerConfig::new(SecretKey::from_bytes([7; 32]));
        c.reset_rate_global = rate;
        c.reset_burst_global = burst;
        c
    }

    fn path() -> Path {
        Path {
            socket: SocketId::PRIMARY,
            addr: "192.0.2.1:4000".parse().unwrap(),
        }
    }

    #[test]
    fn a_reset_carries_the_sessions_token_under_the_static_key() {
        let t0 = crate::tests::epoch();
        let mut stats = ServerStats::default();
        let mut r = Resets::new(&config(10, 10));
        r.handle_unknown(t0, path(), 0x0100_0005, 48, &mut stats);
        let mut buf = [0u8; 64];
        let t = r.poll_transmit(&mut buf, &mut stats).unwrap();
        assert_eq!((t.dst, t.len), (path().addr, RESET_LEN));
        let reset = Reset::decode(&buf[..t.len]).unwrap();
        let same_key = ResetKey::derive(&SecretKey::from_bytes([7; 32]));
        assert_eq!(reset.token, same_key.token(0x0100_0005));
        assert_ne!(reset.token, same_key.token(0x0100_0006));
        let other_key = ResetKey::derive(&SecretKey::from_bytes([8; 32]));
        assert_ne!(reset.token, other_key.token(0x0100_0005));
        assert_eq!(stats.resets_sent, 1);
        assert!(r.poll_transmit(&mut buf, &mut stats).is_none());
    }

    #[test]
    fn resets_are_rate_limited_and_never_answer_a_packet_as_short_as_one() {
        let t0 = crate::tests::epoch();
        let mut stats = ServerStats::default();
        let mut r = Resets::new(&config(10, 3));
        r.handle_unknown(t0, path(), 1, RESET_LEN, &mut stats);
        assert!(r.queue.is_empty(), "not longer than a reset");
        for _ in 0..5 {
            r.handle_unknown(t0, path(), 1, 32, &mut stats);
        }
        assert_eq!((r.queue.len(), stats.resets_limited), (3, 2));
        r.handle_unknown(t0 + Duration::from_millis(100), path(), 1, 32, &mut stats);
        assert_eq!(r.queue.len(), 4, "refilled at 10 a second");
        let mut off = Resets::new(&config(0, 0));
        off.handle_unknown(t0, path(), 1, 1200, &mut stats);
        assert!(off.queue.is_empty(), "rate 0: resets off");
    }
}
