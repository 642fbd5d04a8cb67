//! The one clock read of pierce-core's unit tests, kept outside `core/src` so that the crate
//! itself provably never reads a clock. Tests take this epoch once and only add `Duration`s.

/// A starting instant for virtual time.
#[allow(clippy::disallowed_methods)]
pub(crate) fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}
