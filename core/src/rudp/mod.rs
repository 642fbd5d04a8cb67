//! Reliability over UDP. Today: the RTT estimator and the reliable, ordered control stream that
//! carries group and room messages on the server link. Channels with every delivery mode,
//! fragmentation and congestion control grow here (see the README's status table).

pub(crate) mod rtt;
pub(crate) mod stream;
