#![allow(clippy::field_reassign_with_default)] // configs are #[non_exhaustive]: built this way by users too

mod cluster;
#[path = "../../test-support/epoch.rs"]
mod epoch;
mod failover;
mod groups;
mod hostile;
mod ops;
mod pmtu;
mod portmap;
mod privacy;
mod reflexive;
mod reset;
mod resume;
mod rooms;
mod session;
mod shards;
mod timeouts;
mod transport;
pub(crate) mod util;

pub(crate) use epoch::epoch;
