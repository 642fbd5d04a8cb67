//! Port mapping composed into the client: the gateway's answer becomes an event, a stat and
//! a candidate peers probe; closing deletes it; the config turns it off.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::util::Net;
use crate::portmap::{
    GatewayRequest, PCP_SERVER_PORT, PortMapEvent, PortMapProtocol, encode_gateway_grant,
};
use crate::{ClientConfig, ClientEvent, Endpoint as _};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const GATEWAY: [u8; 4] = [192, 168, 1, 1];

fn gateway() -> SocketAddr {
    SocketAddr::from((GATEWAY, PCP_SERVER_PORT))
}

fn mapped() -> SocketAddrV4 {
    "198.51.100.1:50123".parse().unwrap()
}

/// Requests client 0 sent to the gateway so far, parsed.
fn requests(net: &Net) -> Vec<GatewayRequest> {
    let from = net.clients[0].addr;
    (net.log.iter())
        .filter(|s| s.from == from && s.to == gateway())
        .map(|s| GatewayRequest::decode(&s.bytes).expect("a valid PCP / NAT-PMP request"))
        .collect()
}

/// The gateway grants client 0's request `req`: [`mapped`] for 3600 s.
fn grant(net: &mut Net, req: &GatewayRequest) {
    let mut buf = [0u8; 64];
    let n = encode_gateway_grant(&mut buf, req, mapped(), 3600, 10).unwrap();
    let now = net.now;
    net.clients[0]
        .client
        .handle_datagram(now, gateway(), &buf[..n]);
}

/// Client 0 with a LAN address and the gateway named, its PCP request granted.
fn mapped_pair(config: ClientConfig) -> Net {
    let mut net = Net::connected_with(2, config);
    let now = net.now;
    let c = &mut net.clients[0].client;
    c.set_local_addresses(now, &["192.168.1.10:40000".parse().unwrap()])
        .unwrap();
    c.set_gateway(now, Some(IpAddr::from(GATEWAY)));
    net.run_for(ms(20));
    net
}

#[test]
fn a_granted_mapping_is_reported_counted_and_probed_by_peers_and_deleted_on_disconnect() {
    let mut net = mapped_pair(ClientConfig::default());
    let reqs = requests(&net);
    let [
        req @ GatewayRequest::PcpMap {
            lifetime,
            internal_port,
            client,
            ..
        },
    ] = reqs[..]
    else {
        panic!("one PCP MAP request: {reqs:?}");
    };
    assert_eq!((lifetime, internal_port), (7200, 40000));
    assert_eq!(client, IpAddr::from([192, 168, 1, 10]));
    grant(&mut net, &req);
    net.collect_events();
    assert!(net.clients[0].events.iter().any(|(_, e)| *e
        == ClientEvent::PortMapping {
            gateway: IpAddr::from(GATEWAY),
            event: PortMapEvent::Granted {
                external: SocketAddr::V4(mapped()),
                lifetime: Duration::from_secs(3600),
                protocol: PortMapProtocol::Pcp,
            }
        }));
    assert_eq!(
        net.clients[0].client.mapped_addr(),
        Some(SocketAddr::V4(mapped()))
    );
    let s = net.clients[0].client.stats().port_mapping;
    assert_eq!((s.requests_sent, s.granted, s.dropped), (1, 1, 0));
    // The gateway's answer is not counted as any other drop.
    assert_eq!(net.clients[0].client.stats().dropped.total(), 0);

    // Introduced to b, a offers the mapped address first: b probes it.
    let [a, b] = net.hosts()[..] else { panic!() };
    let now = net.now;
    net.server.create_group(now, &[a, b]).unwrap();
    net.run_for(ms(300));
    let b_addr = net.clients[1].addr;
    let probes = (net.log.iter())
        .filter(|s| s.from == b_addr && s.to == SocketAddr::V4(mapped()))
        .count();
    assert!(probes >= 1, "b probes a's mapped address");

    // Closing deletes it (RFC 6887 §15: lifetime 0).
    let now = net.now;
    net.clients[0].client.disconnect(now, 0);
    net.run_for(ms(20));
    let reqs = requests(&net);
    assert!(
        matches!(
            reqs.last(),
            Some(GatewayRequest::PcpMap { lifetime: 0, .. })
        ),
        "{reqs:?}"
    );
}

#[test]
fn port_mapping_off_or_private_asks_no_gateway() {
    for config in [
        ClientConfig {
            port_mapping: false,
            ..ClientConfig::default()
        },
        ClientConfig {
            private: true,
            ..ClientConfig::default()
        },
    ] {
        let net = mapped_pair(config);
        assert!(requests(&net).is_empty());
        assert_eq!(net.clients[0].client.stats().port_mapping.requests_sent, 0);
    }
}

#[test]
fn a_gateway_that_never_answers_ends_in_one_failure_event() {
    let mut net = mapped_pair(ClientConfig::default());
    net.run_for(Duration::from_secs(11));
    assert!(
        net.clients[0]
            .events
            .iter()
            .all(|(_, e)| !matches!(e, ClientEvent::PortMapping { .. })),
        "UPnP IGD is still being searched for at 11 s"
    );
    net.run_for(Duration::from_secs(1));
    let failed: Vec<_> = (net.clients[0].events.iter())
        .filter(|(_, e)| matches!(e, ClientEvent::PortMapping { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(matches!(
        failed[0].1,
        ClientEvent::PortMapping {
            event: PortMapEvent::Failed(crate::portmap::PortMapError::NoAnswer),
            ..
        }
    ));
    // PCP four times, then NAT-PMP's public address and map requests four times each.
    assert_eq!(requests(&net).len(), 12);
    // Then UPnP IGD's M-SEARCH four times, to the SSDP group and to the gateway's port 1900.
    let from = net.clients[0].addr;
    let searches = |to: SocketAddr| {
        (net.log.iter())
            .filter(|s| s.from == from && s.to == to && s.bytes.starts_with(b"M-SEARCH * "))
            .count()
    };
    assert_eq!(searches("239.255.255.250:1900".parse().unwrap()), 4);
    assert_eq!(searches(SocketAddr::from((GATEWAY, 1900))), 4);
    assert_eq!(net.clients[0].client.stats().port_mapping.failed, 1);
}

#[test]
fn a_new_gateway_gets_a_new_request_and_the_old_one_a_delete() {
    let mut net = mapped_pair(ClientConfig::default());
    let [req] = requests(&net)[..] else {
        panic!("one request");
    };
    grant(&mut net, &req);
    // The host moved to another network whose router is 192.168.7.1.
    let other = SocketAddr::from(([192, 168, 7, 1], PCP_SERVER_PORT));
    let now = net.now;
    let c = &mut net.clients[0].client;
    c.set_local_addresses(now, &["192.168.7.20:40000".parse().unwrap()])
        .unwrap();
    c.set_gateway(now, Some(other.ip()));
    net.run_for(ms(20));
    assert!(
        matches!(
            requests(&net).last(),
            Some(GatewayRequest::PcpMap { lifetime: 0, .. })
        ),
        "the old mapping is deleted"
    );
    let from = net.clients[0].addr;
    let to_new: Vec<_> = (net.log.iter())
        .filter(|s| s.from == from && s.to == other)
        .filter_map(|s| GatewayRequest::decode(&s.bytes))
        .collect();
    assert!(
        matches!(
            to_new[..],
            [GatewayRequest::PcpMap { lifetime: 7200, client, .. }]
                if client == IpAddr::from([192, 168, 7, 20])
        ),
        "{to_new:?}"
    );
    // The lost address is no longer offered.
    assert_eq!(net.clients[0].client.mapped_addr(), None);
}
