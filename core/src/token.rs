//! Connect tokens: optional application authentication with a secret shared between the
//! game's backend (which issues tokens) and the Pierce server (which verifies them).
//!
//! ```text
//! version (u8 = 1) | user id (u64) | expires, unix seconds (u64) | HMAC-SHA256 (32)
//! ```
//!
//! Tokens travel inside the encrypted session, so an eavesdropper cannot lift one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::Reader;

/// Length of a connect token.
pub const CONNECT_TOKEN_LEN: usize = 1 + 8 + 8 + 32;
const TOKEN_VERSION: u8 = 1;

/// Issues and verifies connect tokens.
#[derive(Clone, Copy, Debug)]
pub struct ConnectToken;

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Wrong length, version or MAC.
    Invalid,
    /// The MAC is fine but the expiry has passed.
    Expired,
}

impl ConnectToken {
    /// Makes a token for `user_id` valid until `expires_unix_secs`.
    pub fn issue(secret: &[u8], user_id: u64, expires_unix_secs: u64) -> [u8; CONNECT_TOKEN_LEN] {
        let mut out = [0u8; CONNECT_TOKEN_LEN];
        out[0] = TOKEN_VERSION;
        out[1..9].copy_from_slice(&user_id.to_be_bytes());
        out[9..17].copy_from_slice(&expires_unix_secs.to_be_bytes());
        let mac = mac(secret, &out[..17]).finalize().into_bytes();
        out[17..].copy_from_slice(&mac);
        out
    }

    /// Checks `token` against `secret` at wall-clock time `now_unix_secs`; returns the user id.
    pub(crate) fn verify(
        secret: &[u8],
        token: &[u8],
        now_unix_secs: u64,
    ) -> Result<u64, TokenError> {
        if token.len() != CONNECT_TOKEN_LEN || token[0] != TOKEN_VERSION {
            return Err(TokenError::Invalid);
        }
        mac(secret, &token[..17])
            .verify_slice(&token[17..])
            .map_err(|_| TokenError::Invalid)?;
        let mut r = Reader::new(&token[1..17]);
        let user = r.u64().map_err(|_| TokenError::Invalid)?;
        let expires = r.u64().map_err(|_| TokenError::Invalid)?;
        if now_unix_secs >= expires {
            return Err(TokenError::Expired);
        }
        Ok(user)
    }
}

fn mac(secret: &[u8], data: &[u8]) -> Hmac<Sha256> {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    m.update(b"pierce/1 connect token");
    m.update(data);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire() {
        let t = ConnectToken::issue(b"s3cret", 42, 1000);
        assert_eq!(ConnectToken::verify(b"s3cret", &t, 999), Ok(42));
        assert_eq!(
            ConnectToken::verify(b"s3cret", &t, 1000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            ConnectToken::verify(b"other", &t, 1),
            Err(TokenError::Invalid)
        );
        let mut forged = t;
        forged[8] ^= 1; // a different user id
        assert_eq!(
            ConnectToken::verify(b"s3cret", &forged, 1),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            ConnectToken::verify(b"s3cret", &t[..40], 1),
            Err(TokenError::Invalid)
        );
    }
}
