//! Server-reflexive candidates from `ClientConfig::stun_servers` (issue #20, item 2): a
//! client asks another STUN server how the internet sees it (behind NAT66, an IPv6 server
//! sees an address that is not the client's own), offers the answer to its peers, who probe
//! it; it asks again every refresh, and an address nobody confirms is withdrawn. (This
//! harness's sockets are IPv4, so the first test's server and answer are too; the machine
//! does not look at families: the NAT lab runs it over NAT66.)

use std::net::SocketAddr;
use std::time::Duration;

use super::util::Net;
use crate::wire::control::ControlMsg;
use crate::wire::stun::{StunMessage, encode_binding_response};
use crate::{ClientConfig, ConfigError, Endpoint as _};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The other STUN server, and what it sees of client 0 (another mapping than the session's).
const STUN6: &str = "198.51.100.1:3478";
const SEEN6: &str = "203.0.113.77:41000";

/// Answers client 0's requests to [`STUN6`] sent since `from` (log index) with `seen`;
/// returns how many it answered.
fn answer(net: &mut Net, from: usize, seen: SocketAddr) -> usize {
    let me = net.clients[0].addr;
    let requests: Vec<Vec<u8>> = (net.log[from..].iter())
        .filter(|s| s.from == me && s.to == a(STUN6))
        .map(|s| s.bytes.clone())
        .collect();
    for r in &requests {
        let m = StunMessage::decode(r).expect("a STUN request");
        let mut buf = [0u8; 128];
        let n = encode_binding_response(&mut buf, &m.transaction_id, seen).unwrap();
        let now = net.now;
        net.clients[0]
            .client
            .handle_datagram(now, a(STUN6), &buf[..n]);
    }
    requests.len()
}

/// The candidates `b` was last told of `a`, and how many times it was told.
fn told(net: &Net, b: usize, a: crate::HostId) -> (Option<Vec<SocketAddr>>, usize) {
    let mut last = None;
    let mut n = 0;
    for bytes in net.clients[b].client.control_log().1 {
        if let Ok(ControlMsg::PeerCandidates { peer, addrs }) = ControlMsg::decode(bytes) {
            if peer == a.0 {
                last = Some(addrs.iter().collect());
                n += 1;
            }
        }
    }
    (last, n)
}

#[test]
fn a_stun_servers_answer_is_offered_to_peers_refreshed_and_withdrawn_when_unconfirmed() {
    let config = ClientConfig {
        stun_servers: vec![a(STUN6)],
        ..ClientConfig::default()
    };
    let mut net = Net::connected_with(2, config);
    let [h0, h1] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.server.create_group(now, &[h0, h1]).unwrap();
    net.run_for(ms(50));
    // Asked once connected.
    assert_eq!(
        answer(&mut net, 0, a(SEEN6)),
        1,
        "one request once connected"
    );
    net.run_for(ms(100));
    let (last, n) = told(&net, 1, h0);
    assert_eq!(
        last,
        Some(vec![a(SEEN6)]),
        "b is told a's server-reflexive address"
    );
    assert_eq!(net.clients[0].client.stats().dropped.stun, 0);

    // Every refresh it asks again; the same answer announces nothing new.
    let mark = net.log.len();
    net.run_for(Duration::from_secs(25));
    assert_eq!(
        answer(&mut net, mark, a(SEEN6)),
        1,
        "asked again after 25 s"
    );
    net.run_for(ms(100));
    assert_eq!(told(&net, 1, h0).1, n, "nothing new to tell");

    // Then the server stops answering: once a request gives up (the next one is sent 25 s
    // after the last, and gives up 15.75 s later), the address is withdrawn.
    net.run_for(Duration::from_secs(40));
    assert_eq!(
        told(&net, 1, h0).1,
        n,
        "still offered while a request is under way"
    );
    net.run_for(Duration::from_secs(2));
    let (last, m) = told(&net, 1, h0);
    assert_eq!((last, m), (Some(vec![]), n + 1), "withdrawn, once");
}

#[test]
fn its_own_address_is_no_new_candidate_and_bad_servers_are_refused() {
    // Without a NAT on that path the server sees the client's own address: already a LAN
    // candidate.
    let config = ClientConfig {
        stun_servers: vec![a(STUN6)],
        ..ClientConfig::default()
    };
    let mut net = Net::connected_with(1, config);
    let own = a("192.0.2.99:5000");
    let now = net.now;
    net.clients[0]
        .client
        .set_local_addresses(now, &[own])
        .unwrap();
    net.run_for(ms(50));
    assert_eq!(answer(&mut net, 0, own), 1);
    let mark = net.log.len();
    net.run_for(ms(50));
    // Nothing new to announce: nothing goes to the server for it (an announcement would).
    let (me, server) = (net.clients[0].addr, net.server_addr);
    let to_server = (net.log[mark..].iter())
        .filter(|s| s.from == me && s.to == server)
        .count();
    assert_eq!(to_server, 0);

    for bad in [
        vec![a("[::]:3478")],
        vec![a("[2001:db8::1]:0")],
        vec![a("224.0.0.1:3478")],
        vec![a("[2001:db8::1]:3478"); 5],
    ] {
        let config = ClientConfig {
            stun_servers: bad.clone(),
            ..ClientConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::OutOfRange("stun_servers")),
            "{bad:?}"
        );
    }
}
