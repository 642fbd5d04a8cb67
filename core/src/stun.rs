//! A STUN Binding transaction (RFC 8489 §6.2.1): ask a STUN server — Pierce's own or any
//! standard one — which address it sees this socket as. Sans-IO like everything here.

use std::fmt;
use std::net::SocketAddr;

use crate::Transmit;
use crate::time::{Backoff, Duration, Instant};
use crate::wire::stun::{
    BINDING_ERROR, BINDING_SUCCESS, CHANGE_IP, CHANGE_PORT, StunCredential, StunMessage,
    encode_binding_request_with, is_stun,
};

/// First retransmission after this long; doubling (RFC 8489 §6.2.1 suggests 500 ms; games and
/// `netcheck` want answers sooner, so the default is shorter and the budget smaller).
pub const DEFAULT_STUN_RTO: Duration = Duration::from_millis(250);
/// Requests sent at most before giving up.
pub const DEFAULT_STUN_TRIES: u32 = 6;

/// Why a transaction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunError {
    /// No answer after every retransmission.
    TimedOut,
    /// The server answered without a usable mapped address.
    NoAddress,
    /// The server answered with an error response (RFC 8489 §6.3.4), e.g. 420 to a
    /// CHANGE-REQUEST it cannot honour (RFC 5780 §6).
    Rejected {
        /// The ERROR-CODE (0 if the answer had none).
        code: u16,
    },
}

impl fmt::Display for StunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut => f.write_str("no answer from the STUN server"),
            Self::NoAddress => f.write_str("the STUN server sent no mapped address"),
            Self::Rejected { code } => write!(f, "the STUN server answered error {code}"),
        }
    }
}

impl std::error::Error for StunError {}

/// One Binding request and its retransmissions.
#[derive(Debug)]
pub struct StunBinding {
    server: SocketAddr,
    txid: [u8; 12],
    /// CHANGE-REQUEST flags; `None`: a plain request (no attributes but FINGERPRINT).
    change: Option<u32>,
    /// Signs the request; the answer must be signed too.
    credential: Option<StunCredential>,
    /// OTHER-ADDRESS and RESPONSE-ORIGIN of the answer.
    other: Option<SocketAddr>,
    origin: Option<SocketAddr>,
    retry: Backoff,
    tries_left: u32,
    due: bool,
    /// When the last request is given up on.
    deadline: Instant,
    result: Option<Result<SocketAddr, StunError>>,
}

impl StunBinding {
    /// Starts a transaction with `server`; `txid` must be random (it is what stops spoofed
    /// answers).
    pub fn new(
        now: Instant,
        server: SocketAddr,
        txid: [u8; 12],
        rto: Duration,
        tries: u32,
    ) -> Self {
        let tries = tries.max(1);
        // The last request waits as long as the one before it, doubled.
        let total = (0..tries).fold(Duration::ZERO, |acc, i| {
            acc + rto.saturating_mul(1 << i.min(16))
        });
        Self {
            server,
            txid,
            change: None,
            credential: None,
            other: None,
            origin: None,
            retry: Backoff::new(now, rto, rto.saturating_mul(1 << 16)),
            tries_left: tries,
            due: true,
            deadline: now + total,
            result: None,
        }
    }

    /// Sends a CHANGE-REQUEST attribute with `flags` ([`CHANGE_IP`], [`CHANGE_PORT`]; 0 asks
    /// for nothing but still makes an RFC 5780 server add RESPONSE-ORIGIN and
    /// OTHER-ADDRESS). With a change, the answer is expected from another address and is
    /// accepted from any source that echoes the (random, 96-bit) transaction id.
    #[must_use]
    pub fn with_change_request(mut self, flags: u32) -> Self {
        self.change = Some(flags & (CHANGE_IP | CHANGE_PORT));
        self
    }

    /// Signs the request with short-term credentials (USERNAME and MESSAGE-INTEGRITY-SHA256,
    /// RFC 8489 §9.1), and takes only an answer signed with them. Pierce clients sign their
    /// requests to their own server with their session's credential (`None`: unsigned).
    #[must_use]
    pub fn with_credential(mut self, credential: Option<StunCredential>) -> Self {
        self.credential = credential;
        self
    }

    /// The server's alternate address, if the answer carried one: OTHER-ADDRESS, else the
    /// RFC 3489 CHANGED-ADDRESS, else a one-IP Pierce server's alternate port
    /// ([`StunMessage::alternate_address`]).
    pub fn other_address(&self) -> Option<SocketAddr> {
        self.other
    }

    /// Where the answer says it came from (RESPONSE-ORIGIN), if it said.
    pub fn response_origin(&self) -> Option<SocketAddr> {
        self.origin
    }

    /// This transaction's id.
    pub fn txid(&self) -> [u8; 12] {
        self.txid
    }

    /// The server asked.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The answer, once there is one.
    pub fn result(&self) -> Option<Result<SocketAddr, StunError>> {
        self.result
    }

    /// Offers a received datagram; returns true if it was this transaction's answer (the
    /// caller should not look at it further).
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8]) -> bool {
        let changed = self.change.is_some_and(|f| f != 0);
        if self.result.is_some() || (from != self.server && !changed) || !is_stun(datagram) {
            return false;
        }
        let Ok(m) = StunMessage::decode(datagram) else {
            return false;
        };
        if m.transaction_id != self.txid
            || !matches!(m.message_type, BINDING_SUCCESS | BINDING_ERROR)
            || !m.fingerprint_ok(datagram)
        {
            return false;
        }
        if let Some(c) = &self.credential {
            if m.integrity_ok(datagram, &c.password) != Some(true) {
                return false;
            }
        }
        if m.message_type == BINDING_ERROR {
            let code = m.error_code().unwrap_or(0);
            self.result = Some(Err(StunError::Rejected { code }));
            return true;
        }
        self.result = Some(m.mapped_address().ok_or(StunError::NoAddress));
        self.other = m.alternate_address();
        self.origin = m.response_origin();
        true
    }

    /// Retransmits and gives up on schedule.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        if now >= self.deadline {
            self.result = Some(Err(StunError::TimedOut));
            return;
        }
        if self.tries_left > 0 && self.retry.poll(now) {
            self.due = true;
        }
    }

    /// The next request to send, if one is due.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if !self.due || self.result.is_some() || self.tries_left == 0 {
            return None;
        }
        self.due = false;
        self.tries_left -= 1;
        let credential = self.credential.as_ref();
        let len = encode_binding_request_with(buf, &self.txid, self.change, credential).ok()?;
        Some(Transmit::new(self.server, len))
    }

    /// When to call [`StunBinding::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        if self.tries_left == 0 {
            return Some(self.deadline);
        }
        Some(self.retry.next_at().min(self.deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::stun::encode_binding_response;

    #[test]
    fn retransmits_then_gives_up() {
        let t0 = crate::tests::epoch();
        let server: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let mut b = StunBinding::new(t0, server, [1; 12], Duration::from_millis(100), 3);
        let mut buf = [0u8; 64];
        let mut sent = Vec::new();
        let mut now = t0;
        while b.result().is_none() {
            while let Some(t) = b.poll_transmit(&mut buf) {
                assert_eq!(t.dst, server);
                sent.push(now - t0);
            }
            now = b.poll_timeout().unwrap();
            b.handle_timeout(now);
        }
        let ms = Duration::from_millis;
        assert_eq!(sent, vec![ms(0), ms(100), ms(300)]);
        assert_eq!(now - t0, ms(700));
        assert_eq!(b.result(), Some(Err(StunError::TimedOut)));
    }

    #[test]
    fn only_the_right_answer_counts() {
        let t0 = crate::tests::epoch();
        let server: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let me: SocketAddr = "198.51.100.2:4000".parse().unwrap();
        let mut b = StunBinding::new(t0, server, [1; 12], DEFAULT_STUN_RTO, DEFAULT_STUN_TRIES);
        let mut buf = [0u8; 64];
        let n = encode_binding_response(&mut buf, &[2; 12], me).unwrap();
        assert!(
            !b.handle_datagram(server, &buf[..n]),
            "another transaction's answer"
        );
        let n = encode_binding_response(&mut buf, &[1; 12], me).unwrap();
        assert!(
            !b.handle_datagram("203.0.113.9:3478".parse().unwrap(), &buf[..n]),
            "another source"
        );
        let mut forged = buf;
        forged[n - 1] ^= 1;
        assert!(!b.handle_datagram(server, &forged[..n]), "bad fingerprint");
        assert!(b.handle_datagram(server, &buf[..n]));
        assert_eq!(b.result(), Some(Ok(me)));
    }
}
