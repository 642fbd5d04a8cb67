//! What a runtime takes from the operating system besides the socket: entropy and wall-clock
//! time.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 32 bytes from the OS CSPRNG: the seed this crate gives `Client::new` / `Server::new`, and
/// what an application can use for its `SecretKey`.
///
/// # Errors
/// The OS entropy source failed (practically never after boot).
pub fn os_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    Ok(seed)
}

/// Wall-clock time since the Unix epoch, for `Server::new`'s `unix_time` (token expiry).
/// A clock set before 1970 reads as zero.
pub fn unix_time() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
