//! Path-MTU discovery end to end through the real server: what sizes go on the wire.

use std::time::Duration;

use super::util::{Net, client_addr};
use crate::wire::handshake::KIND_CLIENT_HELLO;
use crate::wire::relay::{KIND_RELAY, KIND_RELAYED};
use crate::{BASE_DATAGRAM_SIZE, Channel, ClientConfig, MAX_DATAGRAM_SIZE, Path};

fn relay_pair(config: ClientConfig) -> (Net, crate::HostId, crate::HostId) {
    let mut config = config;
    config.direct_paths = false;
    let mut net = Net::connected_with(2, config);
    let [a, b] = net.hosts()[..] else {
        unreachable!("two clients")
    };
    let now = net.now;
    net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(Duration::from_secs(2));
    (net, a, b)
}

#[test]
fn a_relay_path_grows_to_the_ceiling_and_the_server_keeps_its_own_packets_at_the_base() {
    let (mut net, a, b) = relay_pair(ClientConfig::default());
    let s = net.clients[0].client.peer_stats(b).unwrap();
    assert_eq!(s.path, Path::Relay);
    assert_eq!(s.path_mtu, MAX_DATAGRAM_SIZE, "the relay header counted in");
    assert_eq!(
        (s.mtu_probes_sent, s.mtu_probes_lost),
        (2, 0),
        "base, then the ceiling"
    );
    let now = net.now;
    net.clients[0]
        .client
        .send(now, b, Channel::RELIABLE_ORDERED, &vec![7; 100_000])
        .unwrap();
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.peer_messages(1), vec![(a, vec![7; 100_000])]);
    let server = net.server_addr;
    let (mut relay, mut relayed, mut largest_own) = (0, 0, 0);
    for sent in &net.log {
        assert!(
            sent.bytes.len() <= MAX_DATAGRAM_SIZE,
            "{} bytes",
            sent.bytes.len()
        );
        match sent.bytes.first() {
            Some(&KIND_RELAY) if sent.bytes.len() > BASE_DATAGRAM_SIZE => relay += 1,
            Some(&KIND_RELAYED) if sent.bytes.len() > BASE_DATAGRAM_SIZE => relayed += 1,
            Some(&KIND_RELAY | &KIND_RELAYED) => {}
            _ if sent.from == server => largest_own = largest_own.max(sent.bytes.len()),
            _ => {}
        }
    }
    assert!(
        relay > 50 && relayed > 50,
        "{relay} / {relayed} large relayed datagrams"
    );
    assert!(
        largest_own <= BASE_DATAGRAM_SIZE,
        "server session packet of {largest_own}"
    );
}

#[test]
fn max_datagram_size_caps_probing_and_the_base_turns_it_off() {
    let mut capped = ClientConfig::default();
    capped.max_datagram_size = 1300;
    let (net, _, b) = relay_pair(capped);
    let s = net.clients[0].client.peer_stats(b).unwrap();
    assert_eq!(s.path_mtu, 1300);
    assert!(net.log.iter().all(|s| s.bytes.len() <= 1300));

    let mut off = ClientConfig::default();
    off.max_datagram_size = BASE_DATAGRAM_SIZE;
    let (net, _, b) = relay_pair(off);
    let s = net.clients[0].client.peer_stats(b).unwrap();
    assert_eq!((s.path_mtu, s.mtu_probes_sent), (BASE_DATAGRAM_SIZE, 0));

    let mut small = ClientConfig::default();
    small.max_datagram_size = 1000;
    assert_eq!(small.validate(), Ok(()));
    let (net, _, b) = relay_pair(small);
    let s = net.clients[0].client.peer_stats(b).unwrap();
    assert_eq!(
        (s.path_mtu, s.mtu_probes_sent),
        (1000, 0),
        "below the base: that size"
    );
    let server = net.server_addr;
    // (The client hello is padded to MIN_CLIENT_HELLO_LEN, 1200, whatever the configuration:
    // the server's answer to an unvalidated address is never larger than what it got.)
    let big: Vec<(u8, usize)> = (net.log.iter())
        .filter(|s| s.from != server && s.bytes[0] != KIND_CLIENT_HELLO && s.bytes.len() > 1000)
        .map(|s| (s.bytes[0], s.bytes.len()))
        .collect();
    assert!(big.is_empty(), "{big:x?}");

    let mut big = ClientConfig::default();
    big.max_datagram_size = MAX_DATAGRAM_SIZE + 1;
    assert_eq!(
        big.validate(),
        Err(crate::ConfigError::OutOfRange("max_datagram_size"))
    );
}

#[test]
fn the_server_drops_and_counts_relay_datagrams_above_the_largest_size() {
    let (mut net, _, _) = relay_pair(ClientConfig::default());
    let server = net.server_addr;
    // A genuine relay datagram, grown past the largest size any client sends.
    let mut huge = (net.log.iter().rev())
        .find(|s| s.from == client_addr(0) && s.bytes.first() == Some(&KIND_RELAY))
        .expect("a relay datagram")
        .bytes
        .clone();
    huge.resize(MAX_DATAGRAM_SIZE + 1, 0);
    let (before, relayed) = (
        net.server.stats().dropped.malformed,
        net.server.stats().relayed_packets,
    );
    net.deliver(client_addr(0), server, &huge);
    assert_eq!(net.server.stats().dropped.malformed, before + 1);
    assert_eq!(net.server.stats().relayed_packets, relayed);
}
