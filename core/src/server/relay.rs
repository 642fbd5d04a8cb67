//! The relay's forwarding decision: a sealed peer packet from one client to another is
//! forwarded when the two share a group and every budget (the sender's, the group's, the
//! whole server's) allows its bytes. The server never reads the packet; it checks only that it
//! looks like a peer packet, so the relay cannot be used to inject server-session packets.
//!
//! This is the server's hot path: one decision costs the caller's route lookup (the pair,
//! the target's session) and three token buckets, found by index, with no allocation.

use crate::config::ServerConfig;
use crate::event::{GroupId, HostId};
use crate::ratelimit::Bucket;
use crate::stats::ServerStats;
use crate::time::Instant;
use crate::wire::sealed::{KIND_PEER, OVERHEAD};

/// The session a Relay frame came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sender {
    /// Its client.
    pub(super) host: HostId,
    /// Its slot in the session table.
    pub(super) slot: usize,
    /// Its generation (tells it from earlier sessions in the same slot).
    pub(super) generation: u32,
}

/// Relay budgets and the forwarding decision.
pub(super) struct Relay {
    /// Bytes per second, and burst, each client may relay.
    client_rate: u32,
    client_burst: u32,
    /// Bytes per second each group may relay (burst: a quarter second of it).
    group_rate: u32,
    /// Bytes per second the whole server relays (burst: a quarter second of it).
    total_rate: u32,
    /// The whole server's budget.
    total: Bucket,
    /// Each session's budget, by session slot, tagged with the session's generation (a new
    /// session in the slot starts with a full budget).
    clients: Vec<(u32, Bucket)>,
    /// Each group's budget, by group slot, tagged with the group's id.
    groups: Vec<(GroupId, Bucket)>,
}

impl Relay {
    pub(super) fn new(config: &ServerConfig) -> Self {
        Self {
            client_rate: config.relay_rate_per_client,
            client_burst: config.relay_burst_per_client,
            group_rate: config.relay_rate_per_group,
            total_rate: config.relay_rate_total,
            total: Bucket::EMPTY,
            clients: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// A Relay frame from `from`: `packet` for client `to`. `route` says whether the two share
    /// a group, and if so which one pays and which session slot receives (`None`: they share
    /// none, or `to` is not connected). Returns that slot if the packet is to be forwarded;
    /// anything else is dropped and counted.
    pub(super) fn handle_relay(
        &mut self,
        now: Instant,
        from: Sender,
        to: HostId,
        packet: &[u8],
        route: impl FnOnce(HostId, HostId) -> Option<(usize, GroupId)>,
        stats: &mut ServerStats,
    ) -> Option<usize> {
        if packet.len() < OVERHEAD || packet[0] != KIND_PEER {
            stats.dropped.malformed += 1;
            return None;
        }
        let Some((target, group)) = route(from.host, to) else {
            stats.dropped.relay_denied += 1;
            return None;
        };
        let n = packet.len() as u32;
        let client_ok = tagged(&mut self.clients, from.slot, from.generation, 0).take_n(
            now,
            self.client_rate,
            self.client_burst,
            n,
        );
        let group_slot = (group.0 & u64::from(u32::MAX)) as usize;
        let group_ok = client_ok
            && tagged(&mut self.groups, group_slot, group, GroupId(0)).take_n(
                now,
                self.group_rate,
                self.group_rate / 4,
                n,
            );
        let total_ok = group_ok
            && self
                .total
                .take_n(now, self.total_rate, self.total_rate / 4, n);
        if !total_ok {
            stats.dropped.relay_rate += 1;
            return None;
        }
        Some(target)
    }
}

/// The bucket at `index` if it belongs to `tag`, else a fresh one for `tag` there (`none`
/// tags slots nobody used yet). Grows the table only when a new highest slot first relays.
fn tagged<T: Copy + PartialEq>(
    table: &mut Vec<(T, Bucket)>,
    index: usize,
    tag: T,
    none: T,
) -> &mut Bucket {
    if index >= table.len() {
        table.resize(index + 1, (none, Bucket::EMPTY));
    }
    let entry = &mut table[index];
    if entry.0 != tag {
        *entry = (tag, Bucket::EMPTY);
    }
    &mut entry.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use crate::time::Duration;

    const A: Sender = Sender {
        host: HostId(1),
        slot: 0,
        generation: 7,
    };
    const GROUP: GroupId = GroupId((1 << 32) | 3);

    fn relay(f: impl FnOnce(&mut ServerConfig)) -> Relay {
        let mut cfg = ServerConfig::new(SecretKey::from_bytes([1; 32]));
        f(&mut cfg);
        Relay::new(&cfg)
    }

    fn peer_packet(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = KIND_PEER;
        p
    }

    fn route(_: HostId, _: HostId) -> Option<(usize, GroupId)> {
        Some((5, GROUP))
    }

    #[test]
    fn a_peer_packet_between_clients_that_share_a_group_goes_to_the_target_slot() {
        let mut r = relay(|_| {});
        let mut stats = ServerStats::default();
        let now = crate::tests::epoch();
        let p = peer_packet(100);
        assert_eq!(
            r.handle_relay(now, A, HostId(2), &p, route, &mut stats),
            Some(5)
        );
        assert_eq!(
            r.handle_relay(now, A, HostId(2), &p, |_, _| None, &mut stats),
            None
        );
        assert_eq!(stats.dropped.relay_denied, 1);
        let mut server_packet = p.clone();
        server_packet[0] = !KIND_PEER;
        let short = &p[..OVERHEAD - 1];
        for bad in [&server_packet[..], short] {
            assert_eq!(
                r.handle_relay(now, A, HostId(2), bad, route, &mut stats),
                None
            );
        }
        assert_eq!(stats.dropped.malformed, 2);
    }

    #[test]
    fn each_client_has_its_own_budget_and_a_new_session_in_its_slot_a_full_one() {
        let mut r = relay(|c| {
            c.relay_rate_per_client = 1000;
            c.relay_burst_per_client = 1000;
        });
        let mut stats = ServerStats::default();
        let now = crate::tests::epoch();
        let p = peer_packet(600);
        assert!(
            r.handle_relay(now, A, HostId(2), &p, route, &mut stats)
                .is_some()
        );
        assert!(
            r.handle_relay(now, A, HostId(2), &p, route, &mut stats)
                .is_none()
        );
        assert_eq!(stats.dropped.relay_rate, 1);
        let b = Sender {
            host: HostId(9),
            slot: 1,
            generation: 1,
        };
        assert!(
            r.handle_relay(now, b, HostId(2), &p, route, &mut stats)
                .is_some()
        );
        let a_again = Sender { generation: 8, ..A };
        assert!(
            r.handle_relay(now, a_again, HostId(2), &p, route, &mut stats)
                .is_some()
        );
        assert!(
            r.handle_relay(now, a_again, HostId(2), &p, route, &mut stats)
                .is_none()
        );
        let later = now + Duration::from_millis(600);
        assert!(
            r.handle_relay(later, a_again, HostId(2), &p, route, &mut stats)
                .is_some(),
            "refilled"
        );
    }

    #[test]
    fn the_group_budget_is_shared_by_its_members() {
        let mut r = relay(|c| c.relay_rate_per_group = 4000);
        let mut stats = ServerStats::default();
        let now = crate::tests::epoch();
        let p = peer_packet(600);
        let b = Sender {
            host: HostId(9),
            slot: 1,
            generation: 1,
        };
        assert!(
            r.handle_relay(now, A, HostId(2), &p, route, &mut stats)
                .is_some()
        );
        assert!(
            r.handle_relay(now, b, HostId(2), &p, route, &mut stats)
                .is_none()
        );
        assert_eq!(stats.dropped.relay_rate, 1);
    }
}
