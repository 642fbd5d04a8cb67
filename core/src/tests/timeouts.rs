//! The reason a client gives for its deadline is the one of the deadline `poll_timeout`
//! returned, whichever child it came from (a busy-loop report that names the wrong thing
//! sends its reader the wrong way). Each test makes one child's deadline the earliest.

use crate::{Endpoint as _, Events as _};

use super::util::Net;
use crate::time::Duration;
use crate::{Channel, ClientConfig, SocketRequest, Transport};

#[test]
fn a_stun_query_in_flight_is_named_when_its_retransmission_comes_first() {
    let mut net = Net::connected(1);
    let now = net.now;
    let c = &mut net.clients[0].client;
    let stranger = "192.0.2.99:3478".parse().unwrap();
    c.query_stun(now, stranger).unwrap();
    let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
    while c.poll_transmit(now, &mut buf).is_some() {}
    assert_eq!(
        c.poll_timeout().map(|t| t.at),
        Some(now + crate::stun::DEFAULT_STUN_RTO),
        "the query's retransmission is the earliest deadline"
    );
    assert_eq!(
        c.poll_timeout().map_or("none", |t| t.reason),
        "stun retransmit"
    );
}

#[test]
fn a_peers_unacknowledged_message_is_named_when_its_probe_timeout_comes_first() {
    let mut net = Net::connected_relay_only(2);
    let hosts = net.hosts();
    let now = net.now;
    net.server.create_group(now, &hosts).unwrap();
    net.run_for(Duration::from_millis(200));
    // From now on nothing arrives: the message waits for an acknowledgement that never comes.
    net.filter = Some(Box::new(|_| false));
    let now = net.now;
    let c = &mut net.clients[0].client;
    c.send(now, hosts[1], Channel::RELIABLE_ORDERED, b"hello")
        .unwrap();
    let mut buf = [0u8; crate::MAX_DATAGRAM_SIZE];
    while c.poll_transmit(now, &mut buf).is_some() {}
    let at = c.poll_timeout().unwrap().at;
    assert!(
        at - now < crate::DEFAULT_CLIENT_KEEPALIVE_INTERVAL,
        "a probe timeout comes before the keepalive: {:?}",
        at - now
    );
    assert_eq!(
        c.poll_timeout().map_or("none", |t| t.reason),
        "peer reliability"
    );
}

#[test]
fn a_tcp_connect_that_hangs_is_named_when_its_timeout_comes_first() {
    let mut cfg = ClientConfig::default();
    cfg.transport = Transport::Tcp;
    // Hellos wait for the stream, and their schedule is slow here: the stream's connect
    // timeout (5 s) is the earliest deadline.
    cfg.handshake_retry_initial = Duration::from_secs(8);
    cfg.handshake_retry_max = Duration::from_secs(8);
    cfg.connect_timeout = Duration::from_secs(30);
    let mut net = Net::new(super::util::server_config(), cfg, 1);
    net.connect_all(&[]);
    let now = net.now;
    let c = &mut net.clients[0].client;
    assert!(matches!(
        c.poll_socket_request(),
        Some(SocketRequest::Connect { .. })
    ));
    // The runtime never answers the connect.
    assert_eq!(
        c.poll_timeout().map(|t| t.at),
        Some(now + Duration::from_secs(5))
    );
    assert_eq!(
        c.poll_timeout().map_or("none", |t| t.reason),
        "tcp connect timeout"
    );
    while c.poll_event().is_some() {}
}
