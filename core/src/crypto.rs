//! Keys, the handshake key schedule, packet protection and replay protection.
//!
//! # Handshake (Noise NX shape, one round trip)
//!
//! ```text
//! client → server  ClientHello { e_c }                      (padded to ≥ 1200 bytes)
//! server → client  ServerHello { e_s, S, tag }              tag = AEAD(k_confirm, "", aad)
//! ```
//!
//! Both sides compute `ee = DH(e_c, e_s)` and `es = DH(e_c, S)`; HKDF-SHA256 over `ee || es`,
//! salted with the transcript hash, yields `k_confirm`, `k_c2s` and `k_s2c`. Only a holder of
//! the static secret behind `S` can compute `es`, so a valid tag proves the server's identity;
//! a client that pins `S` rejects any other key. Low-order points are refused (the DH output
//! must be contributory).
//!
//! # Packets
//!
//! ChaCha20-Poly1305 per direction, nonce = the explicit 64-bit packet counter, associated
//! data = the 16-byte cleartext header. Encryption is in place in the caller's buffer and
//! decryption in place in a scratch buffer the owner keeps: no allocation per packet.
//! A [`ReplayWindow`] of [`REPLAY_WINDOW`] counters drops duplicates and stale packets.

use std::fmt;

#[cfg(not(fuzzing))]
use chacha20poly1305::Tag;
use chacha20poly1305::Tag as TicketTag;
#[cfg(not(fuzzing))]
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::{Digest, Sha256};
#[cfg(not(fuzzing))]
use x25519_dalek::PublicKey as DhPublic;
use x25519_dalek::StaticSecret;

use crate::rng::Rng;
use crate::wire::sealed::{HEADER_LEN, SealedHeader, SealedPacket, TAG_LEN};

/// Bytes of a resumption ticket's sealed body.
pub(crate) const TICKET_BODY: usize = 34;
/// Bytes of a resumption ticket: nonce, sealed body, tag.
pub(crate) const TICKET_LEN: usize = 12 + TICKET_BODY + 16;

/// Seals and opens resumption tickets: ChaCha20-Poly1305 under a key derived from the
/// server's static secret key, so a server restarted with the same key accepts the tickets it
/// issued before, and nobody without the key can read or forge one. (The real cipher under
/// `cfg(fuzzing)` too: fuzzers cannot forge tickets, and need not.)
pub(crate) struct TicketKey(ChaCha20Poly1305);

impl TicketKey {
    pub(crate) fn derive(secret: &SecretKey) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"pierce/1 ticket"), &secret.to_bytes());
        let mut key = [0u8; 32];
        let _ = hk.expand(b"ticket key", &mut key);
        Self(ChaCha20Poly1305::new(Key::from_slice(&key)))
    }

    pub(crate) fn seal(&self, nonce: [u8; 12], body: &[u8; TICKET_BODY]) -> [u8; TICKET_LEN] {
        use chacha20poly1305::aead::AeadInPlace as _;
        let mut out = [0u8; TICKET_LEN];
        out[..12].copy_from_slice(&nonce);
        let (sealed, tag_out) = out[12..].split_at_mut(TICKET_BODY);
        sealed.copy_from_slice(body);
        if let Ok(tag) =
            self.0
                .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"pierce/1 ticket", sealed)
        {
            tag_out.copy_from_slice(&tag);
        }
        out
    }

    pub(crate) fn open(&self, ticket: &[u8]) -> Option<[u8; TICKET_BODY]> {
        use chacha20poly1305::aead::AeadInPlace as _;
        if ticket.len() != TICKET_LEN {
            return None;
        }
        let mut body = [0u8; TICKET_BODY];
        body.copy_from_slice(&ticket[12..12 + TICKET_BODY]);
        self.0
            .decrypt_in_place_detached(
                Nonce::from_slice(&ticket[..12]),
                b"pierce/1 ticket",
                &mut body,
                TicketTag::from_slice(&ticket[12 + TICKET_BODY..]),
            )
            .ok()?;
        Some(body)
    }
}

/// Computes stateless reset tokens ([`crate::wire::reset`]): HMAC-SHA-256 of the server's
/// session id under a key derived from the server's static secret key (as [`TicketKey`] is,
/// under its own label), truncated to 16 bytes. A server restarted with the same key computes
/// the same token for a session it no longer has; nobody without the key can compute one.
#[derive(Clone)]
pub(crate) struct ResetKey([u8; 32]);

impl ResetKey {
    pub(crate) fn derive(secret: &SecretKey) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"pierce/1 reset"), &secret.to_bytes());
        let mut key = [0u8; 32];
        let _ = hk.expand(b"reset key", &mut key);
        Self(key)
    }

    /// The reset token of the server's session `session`.
    pub(crate) fn token(&self, session: u32) -> [u8; 16] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(&session.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let mut token = [0u8; 16];
        token.copy_from_slice(&out[..16]);
        token
    }
}

impl fmt::Debug for ResetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResetKey(..)")
    }
}

/// Whether a received reset token is `ours`, in time that does not depend on where they
/// differ.
pub(crate) fn reset_token_eq(received: &[u8; 16], ours: &[u8; 16]) -> bool {
    ct_eq(received, ours)
}

/// How far behind the highest counter seen a packet may arrive and still be accepted
/// (RFC 6479 sizes; WireGuard uses 2048). Reordering deeper than this on one session is
/// indistinguishable from a replay and is dropped.
pub const REPLAY_WINDOW: u64 = 1024;

/// Counters at or above this end the session instead of wrapping the nonce.
const COUNTER_LIMIT: u64 = u64::MAX - (1 << 16);

/// A server's static X25519 secret key: its long-term identity.
#[derive(Clone)]
pub struct SecretKey(StaticSecret);

impl SecretKey {
    /// Wraps 32 secret bytes (clamped as X25519 requires). Fill them from the OS, or load a
    /// saved key.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    /// The secret bytes, for saving the key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half, which clients may pin.
    pub fn public_key(&self) -> PublicKey {
        #[cfg(fuzzing)]
        {
            PublicKey(fuzz_dh::public(&self.0))
        }
        #[cfg(not(fuzzing))]
        {
            PublicKey(DhPublic::from(&self.0).to_bytes())
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key())
    }
}

/// A server's static X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, KeyParseError> {
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return Err(KeyParseError);
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| KeyParseError)?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A key string was not 64 hex characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyParseError;

impl fmt::Display for KeyParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key is 64 hex characters")
    }
}

impl std::error::Error for KeyParseError {}

/// An ephemeral X25519 key pair drawn from the seeded RNG.
pub(crate) struct Ephemeral {
    secret: StaticSecret,
    public: [u8; 32],
}

impl Ephemeral {
    pub(crate) fn generate(rng: &mut Rng) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let secret = StaticSecret::from(bytes);
        #[cfg(fuzzing)]
        let public = fuzz_dh::public(&secret);
        #[cfg(not(fuzzing))]
        let public = DhPublic::from(&secret).to_bytes();
        Self { secret, public }
    }

    pub(crate) fn public(&self) -> [u8; 32] {
        self.public
    }
}

/// The three keys a handshake yields.
pub(crate) struct HandshakeKeys {
    confirm: [u8; 32],
    c2s: [u8; 32],
    s2c: [u8; 32],
}

/// The handshake failed: a low-order point or a bad confirmation tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandshakeFailed;

fn schedule(
    ee: &[u8; 32],
    es: &[u8; 32],
    client_ephemeral: &[u8; 32],
    server_ephemeral: &[u8; 32],
    server_static: &[u8; 32],
) -> HandshakeKeys {
    let mut transcript = Sha256::new();
    transcript.update(b"pierce/1 handshake");
    transcript.update(client_ephemeral);
    transcript.update(server_ephemeral);
    transcript.update(server_static);
    let salt = transcript.finalize();
    let mut ikm = [0u8; 64];
    ikm[..32].copy_from_slice(ee);
    ikm[32..].copy_from_slice(es);
    let hk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut okm = [0u8; 96];
    // 96 bytes is far below HKDF-SHA256's 8160-byte limit: this cannot fail.
    let _ = hk.expand(b"pierce/1 keys", &mut okm);
    let mut keys = HandshakeKeys {
        confirm: [0; 32],
        c2s: [0; 32],
        s2c: [0; 32],
    };
    keys.confirm.copy_from_slice(&okm[..32]);
    keys.c2s.copy_from_slice(&okm[32..64]);
    keys.s2c.copy_from_slice(&okm[64..]);
    keys
}

fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<[u8; 32], HandshakeFailed> {
    #[cfg(fuzzing)]
    {
        fuzz_dh::dh(secret, public)
    }
    #[cfg(not(fuzzing))]
    {
        let shared = secret.diffie_hellman(&DhPublic::from(*public));
        if !shared.was_contributory() {
            return Err(HandshakeFailed);
        }
        Ok(shared.to_bytes())
    }
}

/// Under `cfg(fuzzing)` only: a stand-in for X25519 that costs nothing, so fuzz targets run
/// handshakes at full speed (a scalar multiplication under coverage instrumentation takes
/// ~0.5 ms and dominated `server_input`). It keeps what the protocol logic relies on: both
/// ends derive the same secret (`dh(a, public(b)) == dh(b, public(a))`), different keys give
/// different secrets, and "low-order" inputs (the points 0 and 1) or a zero output are refused
/// like a non-contributory X25519 result. No security whatsoever; never compiled into real
/// builds (like the null cipher in [`aead_seal`]).
#[cfg(fuzzing)]
mod fuzz_dh {
    use super::{HandshakeFailed, StaticSecret};

    fn clamp(secret: &StaticSecret) -> [u8; 32] {
        let mut b = secret.to_bytes();
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        b
    }

    pub(super) fn public(secret: &StaticSecret) -> [u8; 32] {
        clamp(secret)
    }

    pub(super) fn dh(
        secret: &StaticSecret,
        public: &[u8; 32],
    ) -> Result<[u8; 32], HandshakeFailed> {
        let mut one = [0u8; 32];
        one[0] = 1;
        if *public == [0; 32] || *public == one {
            return Err(HandshakeFailed);
        }
        let mut out = clamp(secret);
        for (o, p) in out.iter_mut().zip(public) {
            *o ^= p;
        }
        if out == [0; 32] {
            return Err(HandshakeFailed);
        }
        Ok(out)
    }
}

impl HandshakeKeys {
    /// Server side: derive keys for a ClientHello's ephemeral key.
    /// `public` is `secret.public_key()`, passed in so it is computed once per server.
    pub(crate) fn server(
        secret: &SecretKey,
        public: &PublicKey,
        ephemeral: &Ephemeral,
        client_ephemeral: &[u8; 32],
    ) -> Result<Self, HandshakeFailed> {
        let ee = dh(&ephemeral.secret, client_ephemeral)?;
        let es = dh(&secret.0, client_ephemeral)?;
        Ok(schedule(
            &ee,
            &es,
            client_ephemeral,
            &ephemeral.public,
            &public.0,
        ))
    }

    /// Client side: derive keys from the ServerHello's keys.
    pub(crate) fn client(
        ephemeral: &Ephemeral,
        server_ephemeral: &[u8; 32],
        server_static: &[u8; 32],
    ) -> Result<Self, HandshakeFailed> {
        let ee = dh(&ephemeral.secret, server_ephemeral)?;
        let es = dh(&ephemeral.secret, server_static)?;
        Ok(schedule(
            &ee,
            &es,
            &ephemeral.public,
            server_ephemeral,
            server_static,
        ))
    }

    /// The ServerHello tag over `aad`.
    pub(crate) fn confirm_tag(&self, aad: &[u8]) -> [u8; 16] {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.confirm));
        // Encrypting an empty message in place cannot fail.
        aead_seal(&cipher, &Nonce::default(), aad, &mut []).unwrap_or([0; 16])
    }

    /// Checks a ServerHello tag.
    pub(crate) fn verify_confirm(&self, aad: &[u8], tag: &[u8; 16]) -> Result<(), HandshakeFailed> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.confirm));
        if aead_open(&cipher, &Nonce::default(), aad, &mut [], tag) {
            Ok(())
        } else {
            Err(HandshakeFailed)
        }
    }

    /// The key of the session's relay fast path (see [`RelayKey`]).
    pub(crate) fn relay_key(&self) -> RelayKey {
        RelayKey::new(&self.relay_secret())
    }

    /// The secret the session's relay keys are made from: the server hands it to every relay
    /// forwarder (each keeps its own replay window).
    pub(crate) fn relay_secret(&self) -> RelaySecret {
        let hk = Hkdf::<Sha256>::new(None, &self.c2s);
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit: this cannot fail.
        let _ = hk.expand(b"pierce/1 relay", &mut key);
        RelaySecret(key)
    }

    /// Packet protection for the client end.
    pub(crate) fn into_client_session(self) -> PacketKeys {
        PacketKeys::new(&self.c2s, &self.s2c, false)
    }

    /// Packet protection for the server end.
    pub(crate) fn into_server_session(self) -> PacketKeys {
        PacketKeys::new(&self.s2c, &self.c2s, false)
    }
}

/// Authenticates the relay fast path's headers ([`crate::wire::relay`]): a 16-byte tag over
/// the 16 bytes of a relay header that matter (its format bytes, the sender's relay counter
/// and the pair id of the peer packet behind it, which names the receiver), under a key
/// derived from the session's client→server key. The client tags; the server checks, with a
/// replay window over the counters, before a packet may cost anyone's relay budget. Neither
/// opens or seals the peer packet itself: it is end-to-end sealed with the pair's key, and the
/// receiver checks it.
///
/// The tag is HChaCha20 (the ChaCha20 core without its final addition, as XChaCha20 uses it to
/// derive subkeys: a PRF from 16 bytes to 32 under a 256-bit key) over those 16 bytes,
/// truncated to 16. A PRF's output truncated to 128 bits is a MAC a forger guesses with
/// probability 2^-128 per try. It costs one ChaCha20 block (~0.1 µs), a tenth of a
/// ChaCha20-Poly1305 tag over the same bytes (~1.4 µs with the AVX2 Poly1305, whose setup
/// dominates short inputs; see the README's relay figures).
pub(crate) struct RelayKey {
    key: chacha20::Key,
    /// Under `cfg(fuzzing)`: the tag this key writes (see [`fuzz_tag`]).
    #[cfg(fuzzing)]
    fuzz: [u8; 16],
    /// The counter of the next relay packet to send (client side).
    next_tx: u64,
    /// Counters received (server side).
    replay: ReplayWindow,
}

/// A session's relay key material (derived from its client→server key): what a
/// [`RelayKey`] is made from. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RelaySecret([u8; 32]);

impl RelaySecret {
    /// The session's STUN credential (see [`crate::wire::stun::StunCredential`]) for server
    /// session id `id`: its password is derived from the relay secret, which both ends hold.
    pub(crate) fn stun_credential(&self, id: u32) -> crate::wire::stun::StunCredential {
        let hk = Hkdf::<Sha256>::new(None, &self.0);
        let mut secret = [0u8; 16];
        // 16 bytes is far below HKDF-SHA256's limit: this cannot fail.
        let _ = hk.expand(b"pierce/1 stun", &mut secret);
        crate::wire::stun::StunCredential::new(id, &secret)
    }
}

impl fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelaySecret(..)")
    }
}

impl RelayKey {
    /// A key with a fresh counter and an empty replay window.
    pub(crate) fn new(secret: &RelaySecret) -> Self {
        let key = secret.0;
        Self {
            key: chacha20::Key::from(key),
            #[cfg(fuzzing)]
            fuzz: fuzz_tag(&key),
            next_tx: 0,
            replay: ReplayWindow::default(),
        }
    }

    /// The counter for the next relay packet, or `None` once they are used up.
    pub(crate) fn next_counter(&mut self) -> Option<u64> {
        if self.next_tx >= COUNTER_LIMIT {
            return None;
        }
        self.next_tx += 1;
        Some(self.next_tx - 1)
    }

    /// The highest relay counter received so far, if any.
    pub(crate) fn highest_received(&self) -> Option<u64> {
        self.replay.highest
    }

    /// The tag over `tagged` (which holds the relay counter).
    pub(crate) fn tag(&self, tagged: &[u8; 16]) -> [u8; 16] {
        #[cfg(fuzzing)]
        {
            let _ = tagged;
            self.fuzz
        }
        #[cfg(not(fuzzing))]
        {
            self.prf(tagged)
        }
    }

    fn prf(&self, tagged: &[u8; 16]) -> [u8; 16] {
        let out = chacha20::hchacha::<chacha20::cipher::consts::U10>(&self.key, tagged.into());
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&out[..16]);
        tag
    }

    /// Checks a received relay header: a counter not seen before (nor older than the window)
    /// and its tag over `tagged`. The counter is recorded only once the tag verified.
    pub(crate) fn verify(
        &mut self,
        counter: u64,
        tagged: &[u8; 16],
        tag: &[u8; 16],
    ) -> Result<(), OpenError> {
        if !self.replay.is_fresh(counter) {
            return Err(OpenError::Replayed);
        }
        #[cfg(not(fuzzing))]
        let authentic = ct_eq(&self.prf(tagged), tag);
        #[cfg(fuzzing)]
        let authentic = *tag == self.fuzz || ct_eq(&self.prf(tagged), tag);
        if !authentic {
            return Err(OpenError::Auth);
        }
        self.replay.insert(counter);
        Ok(())
    }
}

/// Compares two tags in time that does not depend on where they differ.
fn ct_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Why an incoming sealed packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Counter already seen or older than the replay window.
    Replayed,
    /// Tag did not verify: wrong key, bit flips, or forgery.
    Auth,
    /// Does not fit the scratch buffer (larger than any packet we accept).
    TooLarge,
}

/// Packet protection for one session end: a key per direction, the send counter and the
/// receive replay window.
pub(crate) struct PacketKeys {
    /// Peer-to-peer packets (`0xD4`) rather than server session packets (`0xD3`).
    peer: bool,
    /// Seals what this end sends.
    tx: ChaCha20Poly1305,
    /// Opens what this end receives.
    rx: ChaCha20Poly1305,
    /// Under `cfg(fuzzing)`: the tag this end's null cipher writes (see [`fuzz_tag`]).
    #[cfg(fuzzing)]
    tx_tag: [u8; 16],
    /// Under `cfg(fuzzing)`: the tag this end accepts besides all zeros.
    #[cfg(fuzzing)]
    rx_tag: [u8; 16],
    /// Counter of the next packet to send.
    next_tx: u64,
    /// Counters received.
    replay: ReplayWindow,
}

impl PacketKeys {
    fn new(tx: &[u8; 32], rx: &[u8; 32], peer: bool) -> Self {
        Self {
            peer,
            tx: ChaCha20Poly1305::new(Key::from_slice(tx)),
            rx: ChaCha20Poly1305::new(Key::from_slice(rx)),
            #[cfg(fuzzing)]
            tx_tag: fuzz_tag(tx),
            #[cfg(fuzzing)]
            rx_tag: fuzz_tag(rx),
            next_tx: 0,
            replay: ReplayWindow::default(),
        }
    }

    /// Peer-to-peer protection from the pair key the server handed out. `pair_id` names this
    /// incarnation of the pair (a fresh one each time the pair forms), so keys and packets of
    /// an earlier incarnation never open under a later one. Each direction has its own key; the
    /// end with the lower host id sends with the first.
    pub(crate) fn for_pair(pair_key: &[u8; 32], pair_id: u32, i_am_lower: bool) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(&pair_id.to_be_bytes()), pair_key);
        let mut okm = [0u8; 64];
        let _ = hk.expand(b"pierce/1 pair", &mut okm);
        let (lo, hi) = okm.split_at(32);
        let (lo, hi): (&[u8; 32], &[u8; 32]) = (
            lo.try_into().unwrap_or(&[0; 32]),
            hi.try_into().unwrap_or(&[0; 32]),
        );
        if i_am_lower {
            Self::new(lo, hi, true)
        } else {
            Self::new(hi, lo, true)
        }
    }

    /// Seals in place: `buf[HEADER_LEN..HEADER_LEN + plaintext_len]` holds the plaintext;
    /// writes the header in front and the tag behind. Returns the packet length, or `None`
    /// when the buffer cannot take the tag or the counter is exhausted.
    pub(crate) fn seal(
        &mut self,
        receiver: u32,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Option<usize> {
        let total = HEADER_LEN + plaintext_len + TAG_LEN;
        if buf.len() < total || self.next_tx >= COUNTER_LIMIT {
            return None;
        }
        let counter = self.next_tx;
        self.next_tx += 1;
        let header = SealedHeader {
            peer: self.peer,
            receiver,
            counter,
        }
        .to_bytes();
        let (head, rest) = buf.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&header);
        let (body, tail) = rest.split_at_mut(plaintext_len);
        let tag = aead_seal(&self.tx, &nonce(counter), &header, body)?;
        #[cfg(fuzzing)]
        let tag = {
            let _ = tag;
            self.tx_tag
        };
        tail[..TAG_LEN].copy_from_slice(&tag);
        Some(total)
    }

    /// Writes frames with `write` into the body of `buf` (at most `max` bytes in all, leaving
    /// room for header and tag) and seals them. Returns the packet length.
    pub(crate) fn seal_frames(
        &mut self,
        receiver: u32,
        buf: &mut [u8],
        max: usize,
        write: impl FnOnce(&mut crate::wire::Writer<'_>),
    ) -> Option<usize> {
        let limit = max.min(buf.len());
        if limit < HEADER_LEN + TAG_LEN {
            return None;
        }
        let mut w = crate::wire::Writer::new(&mut buf[HEADER_LEN..limit - TAG_LEN]);
        write(&mut w);
        let n = w.len();
        self.seal(receiver, &mut buf[..limit], n)
    }

    /// Opens `packet` into `scratch`; returns the plaintext. The replay window is checked
    /// before and updated only after the tag verifies.
    pub(crate) fn open<'s>(
        &mut self,
        packet: &SealedPacket<'_>,
        scratch: &'s mut [u8],
    ) -> Result<&'s [u8], OpenError> {
        let counter = packet.header.counter;
        if !self.replay.is_fresh(counter) {
            return Err(OpenError::Replayed);
        }
        let ct_len = packet.ciphertext_and_tag.len() - TAG_LEN;
        if ct_len > scratch.len() {
            return Err(OpenError::TooLarge);
        }
        let (ct, tag) = packet.ciphertext_and_tag.split_at(ct_len);
        let out = &mut scratch[..ct_len];
        out.copy_from_slice(ct);
        #[cfg(not(fuzzing))]
        let authentic = aead_open(&self.rx, &nonce(counter), packet.aad, out, tag);
        #[cfg(fuzzing)]
        let authentic =
            tag == self.rx_tag || aead_open(&self.rx, &nonce(counter), packet.aad, out, tag);
        if !authentic {
            return Err(OpenError::Auth);
        }
        self.replay.insert(counter);
        Ok(out)
    }

    /// The counter (packet number) the next sealed packet will carry.
    pub(crate) fn next_counter(&self) -> u64 {
        self.next_tx
    }

    /// The highest counter received so far, if any.
    pub(crate) fn highest_received(&self) -> Option<u64> {
        self.replay.highest
    }
}

/// Under `cfg(fuzzing)`: the tag packets sealed with `key` carry (its first 16 bytes, never
/// all zeros), so a packet still opens only with the key of its direction and incarnation, as
/// with the real cipher: a client's own packets reflected back to it (a NAT hairpinning its
/// flow onto itself), or packets of another pair, are refused. Fuzz inputs get past
/// authentication with an all-zero tag instead.
#[cfg(fuzzing)]
fn fuzz_tag(key: &[u8; 32]) -> [u8; 16] {
    let mut t = [0u8; 16];
    t.copy_from_slice(&key[..16]);
    t[0] |= 1;
    t
}

/// Seals `body` in place; returns the tag. Under `cfg(fuzzing)` this is the null cipher:
/// the body stays clear and the tag is all zeros (packet keys write [`fuzz_tag`] instead, and
/// accept it or zeros), so fuzz inputs can reach the code behind authentication
/// (rustls-fuzzing-provider's idea). Never compiled into real builds.
fn aead_seal(
    cipher: &ChaCha20Poly1305,
    nonce: &Nonce,
    aad: &[u8],
    body: &mut [u8],
) -> Option<[u8; 16]> {
    #[cfg(fuzzing)]
    {
        let _ = (cipher, nonce, aad, body);
        Some([0; 16])
    }
    #[cfg(not(fuzzing))]
    {
        cipher
            .encrypt_in_place_detached(nonce, aad, body)
            .ok()
            .map(Into::into)
    }
}

/// Opens `body` in place against `tag` (see [`aead_seal`] for the fuzzing null cipher).
fn aead_open(
    cipher: &ChaCha20Poly1305,
    nonce: &Nonce,
    aad: &[u8],
    body: &mut [u8],
    tag: &[u8],
) -> bool {
    #[cfg(fuzzing)]
    {
        let _ = (cipher, nonce, aad, body);
        tag.iter().all(|&b| b == 0)
    }
    #[cfg(not(fuzzing))]
    {
        cipher
            .decrypt_in_place_detached(nonce, aad, body, Tag::from_slice(tag))
            .is_ok()
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

/// Sliding window over received packet counters (a ring bitmap of [`REPLAY_WINDOW`] bits).
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// Highest counter accepted; `None` until the first packet.
    highest: Option<u64>,
    /// Bit `c % REPLAY_WINDOW` is set if counter `c` (within the window) was accepted.
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    /// True if `counter` was not seen and is not older than the window.
    pub fn is_fresh(&self, counter: u64) -> bool {
        let Some(highest) = self.highest else {
            return true;
        };
        if counter > highest {
            return true;
        }
        if highest - counter >= REPLAY_WINDOW {
            return false;
        }
        !self.bit(counter)
    }

    /// Records `counter` as received. Call only after [`Self::is_fresh`] and authentication.
    pub fn insert(&mut self, counter: u64) {
        match self.highest {
            None => {
                self.highest = Some(counter);
            }
            Some(highest) if counter > highest => {
                if counter - highest >= REPLAY_WINDOW {
                    self.bits = [0; (REPLAY_WINDOW / 64) as usize];
                } else {
                    for c in highest + 1..counter {
                        self.clear(c);
                    }
                }
                self.highest = Some(counter);
            }
            Some(_) => {}
        }
        self.set(counter);
    }

    fn bit(&self, c: u64) -> bool {
        let i = c % REPLAY_WINDOW;
        self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, c: u64) {
        let i = c % REPLAY_WINDOW;
        self.bits[(i / 64) as usize] |= 1 << (i % 64);
    }

    fn clear(&mut self, c: u64) {
        let i = c % REPLAY_WINDOW;
        self.bits[(i / 64) as usize] &= !(1 << (i % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    fn pair() -> (PacketKeys, PacketKeys) {
        let mut r = rng::derive(&[1; 32], b"test");
        let server = SecretKey::from_bytes([9; 32]);
        let ce = Ephemeral::generate(&mut r);
        let se = Ephemeral::generate(&mut r);
        let sk = HandshakeKeys::server(&server, &server.public_key(), &se, &ce.public()).unwrap();
        let ck = HandshakeKeys::client(&ce, &se.public(), &server.public_key().0).unwrap();
        let aad = [5u8; 10];
        let tag = sk.confirm_tag(&aad);
        assert_eq!(ck.verify_confirm(&aad, &tag), Ok(()));
        assert!(ck.verify_confirm(&[6u8; 10], &tag).is_err());
        (ck.into_client_session(), sk.into_server_session())
    }

    #[test]
    fn both_ends_derive_matching_keys_and_packets_open() {
        let (mut c, mut s) = pair();
        let mut buf = [0u8; 200];
        buf[HEADER_LEN..HEADER_LEN + 5].copy_from_slice(b"hello");
        let n = c.seal(77, &mut buf, 5).unwrap();
        assert_eq!(n, HEADER_LEN + 5 + TAG_LEN);
        assert_ne!(
            &buf[HEADER_LEN..HEADER_LEN + 5],
            b"hello",
            "encrypted in place"
        );
        let pkt = SealedPacket::decode(&buf[..n]).unwrap();
        let mut scratch = [0u8; 1500];
        assert_eq!(s.open(&pkt, &mut scratch), Ok(&b"hello"[..]));
        // Same packet again: replay.
        assert_eq!(s.open(&pkt, &mut scratch), Err(OpenError::Replayed));
        // The client cannot open its own packets (different key per direction).
        let n2 = c.seal(77, &mut buf, 0).unwrap();
        let pkt2 = SealedPacket::decode(&buf[..n2]).unwrap();
        assert_eq!(c.open(&pkt2, &mut scratch), Err(OpenError::Auth));
    }

    #[test]
    fn a_relay_tag_verifies_once_only_under_its_sessions_key_and_covers_every_header_bit() {
        let mut r = rng::derive(&[2; 32], b"test");
        let server = SecretKey::from_bytes([9; 32]);
        let (ce, se) = (Ephemeral::generate(&mut r), Ephemeral::generate(&mut r));
        let sk = HandshakeKeys::server(&server, &server.public_key(), &se, &ce.public()).unwrap();
        let ck = HandshakeKeys::client(&ce, &se.public(), &server.public_key().0).unwrap();
        let (mut client, mut server_side) = (ck.relay_key(), sk.relay_key());
        let c = client.next_counter().unwrap();
        let mut tagged = [7u8; 16];
        tagged[4..12].copy_from_slice(&c.to_be_bytes());
        let tag = client.tag(&tagged);
        for bit in 0..tagged.len() * 8 {
            let mut bad = tagged;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                server_side.verify(c, &bad, &tag),
                Err(OpenError::Auth),
                "bit {bit}"
            );
        }
        for bit in 0..tag.len() * 8 {
            let mut bad = tag;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                server_side.verify(c, &tagged, &bad),
                Err(OpenError::Auth),
                "tag bit {bit}"
            );
        }
        assert_eq!(server_side.verify(c, &tagged, &tag), Ok(()));
        assert_eq!(
            server_side.verify(c, &tagged, &tag),
            Err(OpenError::Replayed)
        );
        // Another session's key does not verify it.
        let other = Ephemeral::generate(&mut r);
        let mut ok = HandshakeKeys::client(&other, &se.public(), &server.public_key().0)
            .unwrap()
            .relay_key();
        assert_ne!(ok.tag(&tagged), tag);
        let mut fresh = tagged;
        fresh[4..12].copy_from_slice(&ok.next_counter().unwrap().to_be_bytes());
        assert_ne!(ok.tag(&fresh), client.tag(&fresh));
    }

    #[test]
    fn any_flipped_bit_fails_authentication() {
        let (mut c, mut s) = pair();
        let mut buf = [0u8; 64];
        let n = c.seal(1, &mut buf, 8).unwrap();
        let mut scratch = [0u8; 64];
        for bit in 0..n * 8 {
            let mut d = buf;
            d[bit / 8] ^= 1 << (bit % 8);
            // Flips in kind/version/reserved bytes fail decode; the rest fail the AEAD.
            if let Ok(pkt) = SealedPacket::decode(&d[..n]) {
                assert!(s.open(&pkt, &mut scratch).is_err(), "bit {bit}");
            }
        }
        let pkt = SealedPacket::decode(&buf[..n]).unwrap();
        assert!(
            s.open(&pkt, &mut scratch).is_ok(),
            "the original still opens"
        );
    }

    #[test]
    fn pair_keys_work_across_the_pair_and_not_across_incarnations() {
        let key = [4u8; 32];
        let mut a = PacketKeys::for_pair(&key, 7, true);
        let mut b = PacketKeys::for_pair(&key, 7, false);
        let mut b_later = PacketKeys::for_pair(&key, 8, false);
        let mut buf = [0u8; 64];
        buf[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(b"hi");
        let n = a.seal(7, &mut buf, 2).unwrap();
        assert_eq!(buf[0], crate::wire::sealed::KIND_PEER);
        let pkt = SealedPacket::decode(&buf[..n]).unwrap();
        let mut scratch = [0u8; 64];
        assert_eq!(b_later.open(&pkt, &mut scratch), Err(OpenError::Auth));
        assert_eq!(b.open(&pkt, &mut scratch), Ok(&b"hi"[..]));
        // Own packets do not open with own receive key (distinct keys per direction).
        assert_eq!(a.open(&pkt, &mut scratch), Err(OpenError::Auth));
    }

    #[test]
    fn low_order_points_are_refused() {
        let mut r = rng::derive(&[1; 32], b"test");
        let e = Ephemeral::generate(&mut r);
        let server = SecretKey::from_bytes([9; 32]);
        assert!(HandshakeKeys::server(&server, &server.public_key(), &e, &[0; 32]).is_err());
        assert!(HandshakeKeys::client(&e, &[0; 32], &server.public_key().0).is_err());
    }

    #[test]
    fn replay_window_accepts_reordering_and_refuses_duplicates_and_stale() {
        let mut w = ReplayWindow::default();
        for c in [5, 3, 4, 10, 6] {
            assert!(w.is_fresh(c), "{c}");
            w.insert(c);
        }
        for c in [3, 4, 5, 6, 10] {
            assert!(!w.is_fresh(c), "{c} is a duplicate");
        }
        assert!(w.is_fresh(7));
        w.insert(2000);
        assert!(!w.is_fresh(7), "older than the window");
        assert!(w.is_fresh(2000 - REPLAY_WINDOW + 1));
        assert!(!w.is_fresh(2000 - REPLAY_WINDOW));
        // A jump reuses ring slots without leaking old bits.
        w.insert(2000 + REPLAY_WINDOW + 3);
        assert!(w.is_fresh(2000 + REPLAY_WINDOW + 2));
        assert!(!w.is_fresh(2000 + REPLAY_WINDOW + 3));
    }

    #[test]
    fn public_keys_round_trip_through_hex() {
        let k = SecretKey::from_bytes([3; 32]).public_key();
        assert_eq!(PublicKey::from_hex(&k.to_hex()), Ok(k));
        assert!(PublicKey::from_hex("abc").is_err());
        assert!(PublicKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
