//! Handshakes: ClientHellos in, ServerHellos and Retries out, until a half-open session's
//! Connect frame settles it.
//!
//! Admission (see [`Admission`]): a hello that has not shown its source receives at its
//! address spends a per-IP and a global budget that a spoofer can spend too, so over that
//! budget it gets a Retry (a stateless cookie) rather than nothing; a hello that echoes the
//! cookie, or came down a TCP stream, spends a budget of its own that off-path senders cannot
//! touch. Under load (from `cookie_threshold` half-open sessions on) every unproven hello gets
//! a Retry, so spoofed floods cannot fill the half-open table, which is bounded anyway. The
//! only packets sent to an address that has not proven it can receive are a ServerHello of
//! [`SERVER_HELLO_LEN`] bytes in answer to a ClientHello of at least `MIN_CLIENT_HELLO_LEN`,
//! and a smaller Retry: the server never amplifies.
//!
//! A half-open session has a slot in the session table (its id is in the ServerHello); what
//! only the handshake needs (the ServerHello to resend, the client's ephemeral key, a ticket
//! presented ahead of Connect) is kept here, with an index by source for retransmitted
//! hellos.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use super::session::Path;
use super::sessions::Slot;
use super::ticket::Ticket;
use crate::Transmit;
use crate::config::{MAX_SESSIONS, ServerConfig};
use crate::crypto::{Ephemeral, HandshakeKeys, PacketKeys, PublicKey, RelaySecret};
use crate::event::{HostId, RejectReason};
use crate::ratelimit::Limiter;
use crate::rng::Rng;
use crate::stats::ServerStats;
use crate::time::Instant;
use crate::token::{ConnectToken, TokenError};
use crate::wire::handshake::{COOKIE_LEN, ClientHello, Retry, SERVER_HELLO_LEN, ServerHello};

/// Retry packets waiting to be sent, at most.
const RETRY_QUEUE_CAP: usize = 1024;

/// The budgets a ClientHello is charged to, per source IP and for the whole server. A hello
/// is *proven* when it echoes a valid cookie or came down a TCP stream (whose three-way
/// handshake already showed the source receives at its address); every other hello is
/// *unproven*: anyone who can send packets with that source address could have sent it.
///
/// Unproven hellos spend the `handshake_*` budget; over it they are answered with a Retry
/// (a stateless cookie, smaller than the hello) instead of being dropped, so a spoofer who
/// empties an IP's budget only makes that IP's real clients take one more round trip. Proven
/// hellos spend the `proven_handshake_*` budget, which only sources that receive at the
/// address can touch. Neither is the budget of STUN requests (see `server::stun`).
pub(super) struct Admission {
    unproven: Limiter,
    proven: Limiter,
}

impl Admission {
    /// `key`: random, so that the per-IP tables' hashing cannot be predicted.
    pub(super) fn new(key: u64, config: &ServerConfig) -> Self {
        let (rate, burst) = (config.handshake_rate_global, config.handshake_burst_global);
        Self {
            unproven: Limiter::new(
                key,
                config.handshake_rate_per_ip,
                config.handshake_burst_per_ip,
                rate,
                burst,
            ),
            proven: Limiter::new(
                key.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15,
                config.proven_handshake_rate_per_ip,
                config.proven_handshake_burst_per_ip,
                rate,
                burst,
            ),
        }
    }
}

/// Half-open sessions' handshake state, the hello and Retry queues, and the cookie.
pub(super) struct Handshakes {
    config: Arc<ServerConfig>,
    public_key: PublicKey,
    cookie: Cookie,
    /// What hellos may cost.
    admission: Admission,
    /// Half-open sessions, by slot.
    pending: BTreeMap<usize, Pending>,
    /// Half-open sessions by (path, client session id), to answer retransmitted hellos.
    index: BTreeMap<(Path, u32), usize>,
    /// ServerHellos to send (slot, generation).
    hellos: VecDeque<(usize, u32)>,
    /// Retry packets to send: (to, client session id, cookie).
    retries: VecDeque<(Path, u32, [u8; COOKIE_LEN])>,
    /// The server is draining: every Connect is refused with [`RejectReason::Draining`].
    draining: bool,
    /// See [`Handshakes::set_ready`].
    not_ready: bool,
}

/// A half-open session, as the handshake knows it.
struct Pending {
    generation: u32,
    /// Where its client is (the session's path: it follows the client's newest packet).
    path: Path,
    client_session: u32,
    client_ephemeral: [u8; 32],
    /// Our ServerHello, to send again if the client retransmits its hello.
    hello: [u8; SERVER_HELLO_LEN],
    /// A valid resumption ticket that came ahead of the Connect frame.
    resume: Option<Ticket>,
}

/// What a ClientHello asks of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hello {
    /// Nothing more: it was dropped, or it repeats a pending handshake (whose ServerHello is
    /// queued again).
    Answered,
    /// A new handshake may start (see [`Handshakes::accept`]), once the half-open session in
    /// `replaces` (an older attempt from the same source and id) is removed.
    New {
        /// The slot of the older attempt.
        replaces: Option<usize>,
        /// The hello showed its source receives (see [`Admission`]).
        proven: bool,
    },
}

/// A handshake that [`Handshakes::accept`] started: what the session table needs.
pub(super) struct Accepted {
    /// The session's packet keys.
    pub(super) keys: PacketKeys,
    /// The key its relay packets are checked with.
    pub(super) relay: RelaySecret,
    /// When the handshake is given up on.
    pub(super) expires: Instant,
}

/// A half-open session's Connect frame, accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Welcome {
    /// The user id from its connect token (or its ticket).
    pub(super) user_id: Option<u64>,
    /// The host id its ticket gives back.
    pub(super) resume: Option<HostId>,
}

impl Handshakes {
    /// `epoch`: when the server started (cookies are valid per ten-second bucket since).
    pub(super) fn new(config: Arc<ServerConfig>, cookie_key: [u8; 32], epoch: Instant) -> Self {
        let cookie = Cookie {
            key: cookie_key,
            epoch,
        };
        Self {
            public_key: config.secret_key.public_key(),
            admission: Admission::new(cookie.derive_key(b"admission"), &config),
            config,
            cookie,
            pending: BTreeMap::new(),
            index: BTreeMap::new(),
            hellos: VecDeque::new(),
            retries: VecDeque::new(),
            draining: false,
            not_ready: false,
        }
    }

    /// Half-open sessions.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// A ClientHello (at least `MIN_CLIENT_HELLO_LEN` bytes) from `path`, charged to its
    /// budget (see [`Admission`]): an unproven one over budget gets a Retry, a proven one over
    /// budget is dropped.
    pub(super) fn handle_hello(
        &mut self,
        now: Instant,
        path: Path,
        hello: &ClientHello<'_>,
        stats: &mut ServerStats,
    ) -> Hello {
        let proven = path.socket.is_stream() || self.cookie.verify(now, path.addr, hello);
        let (admission, ip) = (&mut self.admission, path.addr.ip());
        let budget = if proven {
            &mut admission.proven
        } else {
            &mut admission.unproven
        };
        if !budget.allow(now, ip) {
            if proven {
                stats.dropped.rate_limited += 1;
            } else {
                self.retry(now, path, hello, stats);
            }
            return Hello::Answered;
        }
        let Some(&key) = self.index.get(&(path, hello.client_session)) else {
            return Hello::New {
                replaces: None,
                proven,
            };
        };
        if let Some(p) = self.pending.get(&key) {
            if p.client_ephemeral == hello.client_ephemeral {
                // Our ServerHello was lost: send the same one again.
                self.hellos.push_back((key, p.generation));
                return Hello::Answered;
            }
        }
        // A new attempt from the same source and id replaces the old one.
        Hello::New {
            replaces: Some(key),
            proven,
        }
    }

    /// Answers `hello` with a Retry carrying its cookie (counted as `cookie_required`).
    fn retry(
        &mut self,
        now: Instant,
        path: Path,
        hello: &ClientHello<'_>,
        stats: &mut ServerStats,
    ) {
        stats.dropped.cookie_required += 1;
        if self.retries.len() < RETRY_QUEUE_CAP {
            let cookie = self.cookie.make(now, path.addr, hello);
            self.retries.push_back((path, hello.client_session, cookie));
        } else {
            stats.dropped.queue_full += 1;
        }
    }

    /// Starts the handshake `hello` asked for ([`Hello::New`]) in session slot `slot`, unless
    /// the server is under load and the hello is not `proven` (a Retry is queued), the
    /// half-open table is full (`sessions`: sessions of every stage), or the key exchange
    /// fails. Queues the ServerHello.
    #[allow(clippy::too_many_arguments)] // the hello and its proof, where it goes, what the keys need
    pub(super) fn accept(
        &mut self,
        now: Instant,
        path: Path,
        hello: &ClientHello<'_>,
        proven: bool,
        slot: Slot,
        sessions: usize,
        rng: &mut Rng,
        stats: &mut ServerStats,
    ) -> Option<Accepted> {
        if !proven && self.pending.len() >= self.config.cookie_threshold {
            self.retry(now, path, hello, stats);
            return None;
        }
        if self.pending.len() >= self.config.max_half_open || sessions >= MAX_SESSIONS {
            stats.dropped.handshake_capacity += 1;
            return None;
        }
        let ephemeral = Ephemeral::generate(rng);
        let Ok(keys) = HandshakeKeys::server(
            &self.config.secret_key,
            &self.public_key,
            &ephemeral,
            &hello.client_ephemeral,
        ) else {
            stats.dropped.auth_failed += 1;
            return None;
        };
        let mut reply = ServerHello {
            client_session: hello.client_session,
            server_session: slot.id,
            server_ephemeral: ephemeral.public(),
            server_static: self.public_key.0,
            tag: [0; 16],
        };
        reply.tag = keys.confirm_tag(&reply.aad());
        let mut bytes = [0u8; SERVER_HELLO_LEN];
        let _ = reply.encode(&mut bytes);
        self.pending.insert(
            slot.key,
            Pending {
                generation: slot.generation,
                path,
                client_session: hello.client_session,
                client_ephemeral: hello.client_ephemeral,
                hello: bytes,
                resume: None,
            },
        );
        self.index.insert((path, hello.client_session), slot.key);
        stats.handshakes_started += 1;
        self.hellos.push_back((slot.key, slot.generation));
        Some(Accepted {
            relay: keys.relay_secret(),
            keys: keys.into_server_session(),
            expires: now + self.config.handshake_timeout,
        })
    }

    /// Half-open session `key` presented a ticket (already checked: `None` if it was bad).
    /// From now on every Connect is refused with [`RejectReason::Draining`] (hellos are still
    /// answered, so the client hears why).
    pub(super) fn set_draining(&mut self) {
        self.draining = true;
    }

    /// Until `ready`, every Connect is refused with [`RejectReason::Draining`] (a cluster
    /// node that has no number from the directory yet issues no host ids).
    pub(super) fn set_ready(&mut self, ready: bool) {
        self.not_ready = !ready;
    }

    /// Whether Connects are taken (not draining, ready).
    pub(super) fn accepting(&self) -> bool {
        !self.draining && !self.not_ready
    }

    /// The valid ticket half-open session `key` presented, if any.
    pub(super) fn ticket_of(&self, key: usize) -> Option<Ticket> {
        self.pending.get(&key).and_then(|p| p.resume)
    }

    pub(super) fn handle_resume(&mut self, key: usize, ticket: Option<Ticket>) {
        if let Some(p) = self.pending.get_mut(&key) {
            p.resume = ticket;
        }
    }

    /// Half-open session `key`'s Connect frame with `token`, at `unix_now` (seconds), with
    /// `clients` connected: accepted (a ticket presented before gives its host id back if
    /// `host_free` says that id is free and the ticket's user, if any, is the token's) or
    /// refused. Either way the handshake is over.
    pub(super) fn handle_connect(
        &mut self,
        key: usize,
        token: &[u8],
        unix_now: u64,
        clients: usize,
        host_free: impl Fn(HostId) -> bool,
        stats: &mut ServerStats,
    ) -> Result<Welcome, RejectReason> {
        let verdict = match &self.config.token_secret {
            None => Ok(None),
            Some(_) if token.is_empty() => Err(RejectReason::TokenRequired),
            Some(secret) => match ConnectToken::verify(secret, token, unix_now) {
                Ok(user) => Ok(Some(user)),
                Err(TokenError::Expired) => Err(RejectReason::ExpiredToken),
                Err(TokenError::Invalid) => Err(RejectReason::InvalidToken),
            },
        };
        let verdict = verdict.and_then(|user| {
            if self.draining || self.not_ready {
                Err(RejectReason::Draining)
            } else if clients >= self.config.max_clients {
                Err(RejectReason::ServerFull)
            } else {
                Ok(user)
            }
        });
        let pending = self.pending.remove(&key);
        if let Some(p) = &pending {
            self.index.remove(&(p.path, p.client_session));
        }
        let resume = pending.and_then(|p| p.resume).filter(|t| {
            let same_user = match &verdict {
                Ok(Some(user)) => t.user_id == Some(*user),
                _ => true,
            };
            same_user && host_free(t.host)
        });
        match verdict {
            Ok(user_id) => {
                stats.handshakes_completed += 1;
                if resume.is_some() {
                    stats.sessions_resumed += 1;
                }
                Ok(Welcome {
                    user_id: user_id.or_else(|| resume.and_then(|t| t.user_id)),
                    resume: resume.map(|t| t.host),
                })
            }
            Err(reason) => {
                stats.handshakes_rejected += 1;
                Err(reason)
            }
        }
    }

    /// Half-open session `key`'s client moved to `path` (the session follows it): so does
    /// its entry in the index.
    pub(super) fn moved(&mut self, key: usize, path: Path) {
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        if let Some(k) = self.index.remove(&(p.path, p.client_session)) {
            self.index.insert((path, p.client_session), k);
        }
        p.path = path;
    }

    /// Session `key` is gone: forgets its handshake, if it had one pending.
    pub(super) fn forget(&mut self, key: usize) {
        if let Some(p) = self.pending.remove(&key) {
            self.index.remove(&(p.path, p.client_session));
        }
    }

    /// The next ServerHello or Retry to send, written into `buf`.
    pub(super) fn poll_transmit(
        &mut self,
        buf: &mut [u8],
        stats: &mut ServerStats,
    ) -> Option<Transmit> {
        while let Some((key, generation)) = self.hellos.pop_front() {
            let Some(p) = self
                .pending
                .get(&key)
                .filter(|p| p.generation == generation)
            else {
                continue;
            };
            buf[..SERVER_HELLO_LEN].copy_from_slice(&p.hello);
            return Some(Transmit {
                dst: p.path.addr,
                len: SERVER_HELLO_LEN,
                socket: p.path.socket,
                ttl: None,
            });
        }
        let (path, client_session, cookie) = self.retries.pop_front()?;
        let len = Retry {
            client_session,
            cookie,
        }
        .encode(buf)
        .ok()?;
        stats.retries_sent += 1;
        Some(Transmit {
            dst: path.addr,
            len,
            socket: path.socket,
            ttl: None,
        })
    }
}

/// Stateless cookies: an HMAC over a time bucket, the source address, and the hello's session
/// id and ephemeral key, so only someone who receives at that address can echo it.
struct Cookie {
    key: [u8; 32],
    /// Buckets count from here.
    epoch: Instant,
}

impl Cookie {
    /// Ten-second buckets since the server started: a cookie is valid in its bucket and the
    /// next, so 10–20 s.
    fn bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / 10
    }

    /// The cookie for `hello` from `from`, now.
    fn make(&self, now: Instant, from: SocketAddr, hello: &ClientHello<'_>) -> [u8; COOKIE_LEN] {
        self.mac(self.bucket(now), from, hello)
    }

    /// Whether `hello` from `from` echoes a cookie of this bucket or the one before.
    fn verify(&self, now: Instant, from: SocketAddr, hello: &ClientHello<'_>) -> bool {
        if hello.cookie.len() != COOKIE_LEN {
            return false;
        }
        let bucket = self.bucket(now);
        [bucket, bucket.saturating_sub(1)].into_iter().any(|b| {
            let want = self.mac(b, from, hello);
            // Compare without an early exit.
            want.iter()
                .zip(hello.cookie)
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
        })
    }

    /// A value for another use of the cookie key (`label` keeps the uses apart).
    fn derive_key(&self, label: &[u8]) -> u64 {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC accepts keys of any length");
        mac.update(label);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&full[..8]);
        u64::from_le_bytes(out)
    }

    /// HMAC-SHA256 over the bucket, the source address, the client's session id and
    /// ephemeral key.
    fn mac(&self, bucket: u64, from: SocketAddr, hello: &ClientHello<'_>) -> [u8; COOKIE_LEN] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC accepts keys of any length");
        mac.update(&bucket.to_be_bytes());
        let mut addr = [0u8; 19];
        let mut w = crate::wire::Writer::new(&mut addr);
        let _ = w.addr(from);
        let n = w.len();
        mac.update(&addr[..n]);
        mac.update(&hello.client_session.to_be_bytes());
        mac.update(&hello.client_ephemeral);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; COOKIE_LEN];
        out.copy_from_slice(&full[..COOKIE_LEN]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use crate::SocketId;

    fn config(f: impl FnOnce(&mut ServerConfig)) -> Arc<ServerConfig> {
        let mut cfg = ServerConfig::new(SecretKey::from_bytes([1; 32]));
        f(&mut cfg);
        Arc::new(cfg)
    }

    fn path(i: u8) -> Path {
        Path {
            socket: SocketId::PRIMARY,
            addr: SocketAddr::from(([198, 51, 100, i], 4000)),
        }
    }

    fn slot(key: usize) -> Slot {
        Slot {
            key,
            generation: 7,
            id: key as u32 | (7 << 24),
        }
    }

    /// A ClientHello's fields: session id 5, a real ephemeral key from `seed`.
    fn hello(seed: u8, cookie: &[u8]) -> ClientHello<'_> {
        let mut rng = crate::rng::derive(&[seed; 32], b"test");
        ClientHello {
            client_session: 5,
            client_ephemeral: Ephemeral::generate(&mut rng).public(),
            cookie,
        }
    }

    struct Bench {
        h: Handshakes,
        rng: Rng,
        stats: ServerStats,
        now: Instant,
    }

    impl Bench {
        fn new(config: Arc<ServerConfig>) -> Self {
            let now = crate::tests::epoch();
            Self {
                h: Handshakes::new(config, [9; 32], now),
                rng: crate::rng::derive(&[2; 32], b"test"),
                stats: ServerStats::default(),
                now,
            }
        }

        /// `hello` from `path`: the verdict, and the session started in `key` if admitted.
        fn hello(&mut self, path: Path, hello: &ClientHello<'_>, key: usize) -> Hello {
            let (now, stats) = (self.now, &mut self.stats);
            let verdict = self.h.handle_hello(now, path, hello, stats);
            if let Hello::New { replaces, proven } = verdict {
                if let Some(old) = replaces {
                    self.h.forget(old);
                }
                let rng = &mut self.rng;
                let _ = (self.h).accept(now, path, hello, proven, slot(key), key, rng, stats);
            }
            verdict
        }

        fn sent(&mut self) -> Vec<(usize, SocketAddr)> {
            let mut buf = [0u8; 1200];
            std::iter::from_fn(|| self.h.poll_transmit(&mut buf, &mut self.stats))
                .map(|t| (t.len, t.dst))
                .collect()
        }
    }

    #[test]
    fn a_retransmitted_hello_gets_the_same_server_hello_and_a_new_attempt_replaces_the_old() {
        let mut b = Bench::new(config(|_| {}));
        let first = hello(1, &[]);
        assert_eq!(
            b.hello(path(1), &first, 0),
            Hello::New {
                replaces: None,
                proven: false
            }
        );
        assert_eq!(b.hello(path(1), &first, 1), Hello::Answered);
        assert_eq!(b.sent(), [(SERVER_HELLO_LEN, path(1).addr); 2]);
        assert_eq!(b.h.len(), 1);
        // The same source and client session id, a new key: the old attempt goes.
        let second = hello(2, &[]);
        assert_eq!(
            b.hello(path(1), &second, 1),
            Hello::New {
                replaces: Some(0),
                proven: false
            }
        );
        assert_eq!(b.h.len(), 1);
        assert_eq!(b.stats.handshakes_started, 2);
    }

    #[test]
    fn under_load_a_hello_must_echo_the_cookie_of_its_own_address() {
        let mut b = Bench::new(config(|c| c.cookie_threshold = 0));
        assert_eq!(
            b.hello(path(1), &hello(1, &[]), 0),
            Hello::New {
                replaces: None,
                proven: false
            }
        );
        assert_eq!(b.h.len(), 0, "no state without a cookie");
        assert_eq!(b.stats.dropped.cookie_required, 1);
        let mut buf = [0u8; 1200];
        let t = b.h.poll_transmit(&mut buf, &mut b.stats).unwrap();
        let retry = Retry::decode(&buf[..t.len]).unwrap();
        assert_eq!((t.dst, retry.client_session), (path(1).addr, 5));
        // Echoed from elsewhere: refused; from the address it was made for: accepted.
        b.hello(path(2), &hello(1, &retry.cookie), 0);
        assert_eq!((b.h.len(), b.stats.dropped.cookie_required), (0, 2));
        b.hello(path(1), &hello(1, &retry.cookie), 0);
        assert_eq!(b.h.len(), 1);
        assert_eq!(
            b.sent().len(),
            2,
            "a Retry for the spoofed echo, then the ServerHello"
        );
    }

    #[test]
    fn the_half_open_table_is_bounded() {
        let mut b = Bench::new(config(|c| c.max_half_open = 2));
        for i in 0..3 {
            b.hello(path(i), &hello(i, &[]), usize::from(i));
        }
        assert_eq!(b.h.len(), 2);
        assert_eq!(b.stats.dropped.handshake_capacity, 1);
    }

    #[test]
    fn a_connect_settles_the_handshake_a_token_is_checked_and_the_server_may_be_full() {
        let mut b = Bench::new(config(|c| c.token_secret = Some(vec![3; 32])));
        for key in 0..2 {
            b.hello(path(key as u8), &hello(key as u8, &[]), key);
        }
        let free = |_| true;
        let stats = &mut b.stats;
        assert_eq!(
            b.h.handle_connect(0, &[], 1000, 0, free, stats),
            Err(RejectReason::TokenRequired)
        );
        assert_eq!(b.h.len(), 1, "settled either way");
        let token = ConnectToken::issue(&[3; 32], 42, 2000);
        assert_eq!(
            b.h.handle_connect(1, &token, 1000, 0, free, stats),
            Ok(Welcome {
                user_id: Some(42),
                resume: None
            })
        );
        assert_eq!(
            (stats.handshakes_rejected, stats.handshakes_completed),
            (1, 1)
        );
        let mut b = Bench::new(config(|c| c.max_clients = 1));
        b.hello(path(1), &hello(1, &[]), 0);
        let verdict = b.h.handle_connect(0, &[], 1000, 1, free, &mut b.stats);
        assert_eq!(verdict, Err(RejectReason::ServerFull));
    }

    #[test]
    fn a_half_open_session_that_moves_keeps_answering_its_retransmitted_hellos() {
        let mut b = Bench::new(config(|_| {}));
        let h = hello(1, &[]);
        b.hello(path(1), &h, 0);
        b.sent();
        b.h.moved(0, path(2));
        assert_eq!(b.hello(path(2), &h, 1), Hello::Answered);
        assert_eq!(b.sent(), [(SERVER_HELLO_LEN, path(2).addr)]);
        assert_eq!(
            b.hello(path(1), &h, 1),
            Hello::New {
                replaces: None,
                proven: false
            }
        );
        b.h.forget(0);
        b.h.forget(1);
        assert_eq!(b.h.len(), 0);
    }

    fn at(i: u8, port: u16) -> Path {
        Path {
            socket: SocketId::PRIMARY,
            addr: SocketAddr::from(([198, 51, 100, i], port)),
        }
    }

    /// The Retries sent, as (to, cookie).
    fn retries(b: &mut Bench) -> Vec<(SocketAddr, [u8; COOKIE_LEN])> {
        let mut buf = [0u8; 1200];
        let mut out = Vec::new();
        while let Some(t) = b.h.poll_transmit(&mut buf, &mut b.stats) {
            if let Ok(r) = Retry::decode(&buf[..t.len]) {
                out.push((t.dst, r.cookie));
            }
        }
        out
    }

    #[test]
    fn a_spoofer_who_spends_an_ips_budget_costs_its_clients_one_round_trip_not_their_way_in() {
        let mut b = Bench::new(config(|c| {
            c.handshake_burst_per_ip = 3;
            c.handshake_rate_per_ip = 1;
        }));
        // Spoofed hellos with the victim's IP, from many ports: the unproven budget goes...
        let spoofed: Vec<Hello> = (0..50u16)
            .map(|p| b.hello(at(1, 5000 + p), &hello(9, &[]), usize::from(p)))
            .collect();
        let admitted = spoofed.iter().filter(|v| **v != Hello::Answered).count();
        assert_eq!(admitted, 3);
        assert_eq!(b.stats.dropped.cookie_required, 47, "the rest got a Retry");
        assert_eq!(b.stats.dropped.rate_limited, 0);
        // ... and each of them was answered with a Retry smaller than the hello.
        let mut buf = [0u8; 1200];
        let sent: Vec<usize> = std::iter::from_fn(|| b.h.poll_transmit(&mut buf, &mut b.stats))
            .map(|t| t.len)
            .collect();
        assert_eq!(sent.len(), 50);
        assert!(sent.iter().all(|&n| n <= SERVER_HELLO_LEN));
        // A real client behind that IP: a Retry first, then in with its cookie.
        let real = at(1, 40_000);
        assert_eq!(b.hello(real, &hello(1, &[]), 100), Hello::Answered);
        let [(to, cookie)] = retries(&mut b)[..] else {
            panic!("one Retry")
        };
        assert_eq!(to, real.addr);
        let before = b.h.len();
        assert_eq!(
            b.hello(real, &hello(1, &cookie), 100),
            Hello::New {
                replaces: None,
                proven: true
            }
        );
        assert_eq!(b.h.len(), before + 1, "admitted");
        // The cookie is bound to its address: a spoofer cannot reuse it from another port.
        assert_eq!(
            b.hello(at(1, 40_001), &hello(1, &cookie), 101),
            Hello::Answered
        );
    }

    #[test]
    fn proven_hellos_have_a_budget_of_their_own_and_over_it_are_dropped() {
        let mut b = Bench::new(config(|c| {
            c.handshake_burst_per_ip = 0;
            c.proven_handshake_burst_per_ip = 2;
            c.proven_handshake_rate_per_ip = 1;
        }));
        let mut verdicts = Vec::new();
        for port in 0..3u16 {
            let p = at(1, 6000 + port);
            b.hello(p, &hello(1, &[]), 0);
            let [(_, cookie)] = retries(&mut b)[..] else {
                panic!("a Retry: the unproven budget is zero")
            };
            verdicts.push(b.hello(p, &hello(1, &cookie), usize::from(port)));
        }
        let admitted = verdicts.iter().filter(|v| **v != Hello::Answered).count();
        assert_eq!(admitted, 2);
        assert_eq!(b.stats.dropped.rate_limited, 1);
        assert!(retries(&mut b).is_empty(), "no Retry for a proven hello");
    }

    #[test]
    fn a_hello_down_a_tcp_stream_is_proven() {
        let mut b = Bench::new(config(|c| c.handshake_burst_per_ip = 0));
        let stream = Path {
            socket: SocketId::stream(3),
            addr: path(1).addr,
        };
        assert_eq!(
            b.hello(stream, &hello(1, &[]), 0),
            Hello::New {
                replaces: None,
                proven: true
            }
        );
        assert_eq!(b.h.len(), 1);
    }
}
