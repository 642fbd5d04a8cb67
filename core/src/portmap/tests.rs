use super::*;

const NONCE: [u8; 12] = [9; 12];
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const EXT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40000);

fn local() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 4000)
}

fn server() -> SocketAddr {
    SocketAddr::from((GW, PCP_SERVER_PORT))
}

/// One start instant for the whole file (`epoch()` is not the same value on every call).
fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(crate::tests::epoch)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Everything the machine sends now to the PCP / NAT-PMP port, parsed as the gateway would
/// (UPnP IGD's M-SEARCHes are skipped).
fn sent(m: &mut PortMapping) -> Vec<GatewayRequest> {
    let mut buf = [0u8; 1200];
    let mut out = Vec::new();
    while let Some(t) = m.poll_transmit(&mut buf) {
        if buf.starts_with(b"M-SEARCH * ") {
            continue;
        }
        assert_eq!(t.dst, server());
        out.push(GatewayRequest::decode(&buf[..t.len]).expect("a valid request"));
    }
    out
}

/// The gateway grants every request in `reqs` (lifetime `lifetime`, epoch `epoch`).
fn grant(m: &mut PortMapping, now: Instant, reqs: &[GatewayRequest], lifetime: u32, epoch: u32) {
    let mut buf = [0u8; 128];
    for r in reqs {
        let n = encode_gateway_grant(&mut buf, r, EXT, lifetime, epoch).unwrap();
        assert!(m.handle_input(now, server(), &buf[..n]));
    }
}

fn events(m: &mut PortMapping) -> Vec<PortMapEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// Runs timeouts until `until`, collecting what is sent (with when).
fn run(m: &mut PortMapping, from: Instant, until: Instant) -> Vec<(Duration, GatewayRequest)> {
    let mut out = Vec::new();
    let mut now = from;
    loop {
        for r in sent(m) {
            out.push((now - from, r));
        }
        match m.poll_timeout() {
            Some(t) if t <= until => {
                now = t.max(now);
                m.handle_timeout(now);
            }
            _ => return out,
        }
    }
}

#[test]
fn asks_with_pcp_map_for_the_local_port_with_its_nonce_and_a_two_hour_lifetime() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    // RFC 6887 §11.1: client address, nonce, internal port, suggested port.
    assert_eq!(
        sent(&mut m),
        vec![GatewayRequest::PcpMap {
            client: IpAddr::V4(*local().ip()),
            lifetime: PORTMAP_LIFETIME,
            nonce: NONCE,
            internal_port: 4000,
            suggested_port: 4000,
        }]
    );
}

#[test]
fn a_pcp_grant_is_reported_with_the_external_address_and_renewed_at_half_its_lifetime() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    let reqs = sent(&mut m);
    grant(&mut m, t0(), &reqs, 600, 1000);
    assert_eq!(
        events(&mut m),
        vec![PortMapEvent::Granted {
            external: SocketAddr::V4(EXT),
            lifetime: secs(600),
            protocol: PortMapProtocol::Pcp,
        }]
    );
    assert_eq!(m.external(), Some(SocketAddr::V4(EXT)));
    // RFC 6886 §3.3 / RFC 6887 §11.2.1: renew at half the granted lifetime, same nonce,
    // suggesting the address granted.
    assert_eq!(m.poll_timeout(), Some(t0() + secs(300)));
    m.handle_timeout(t0() + secs(299));
    assert!(sent(&mut m).is_empty(), "not before");
    let at = t0() + secs(300);
    m.handle_timeout(at);
    let renew = sent(&mut m);
    assert!(matches!(
        renew.as_slice(),
        [GatewayRequest::PcpMap {
            nonce: NONCE,
            suggested_port: 40000,
            lifetime: PORTMAP_LIFETIME,
            ..
        }]
    ));
    grant(&mut m, at, &renew, 600, 1300);
    assert!(
        events(&mut m).is_empty(),
        "a renewal to the same address is no news"
    );
    assert_eq!(m.stats().renewed, 1);
    assert_eq!(m.stats().granted, 1);
    assert_eq!(m.poll_timeout(), Some(at + secs(300)));
}

#[test]
fn retransmits_quickly_then_falls_back_to_natpmp_then_gives_up() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    let log = run(&mut m, t0(), t0() + secs(60));
    let ms = Duration::from_millis;
    let pcp: Vec<_> = log
        .iter()
        .filter(|(_, r)| matches!(r, GatewayRequest::PcpMap { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(pcp, vec![ms(0), ms(250), ms(750), ms(1750)]);
    // RFC 6886 §3.1, §3.2: public address and map requests, on the same schedule, starting
    // when PCP is given up (3.75 s).
    let natpmp: Vec<_> = log
        .iter()
        .filter(|(_, r)| matches!(r, GatewayRequest::NatPmpMap { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(natpmp, vec![ms(3750), ms(4000), ms(4500), ms(5500)]);
    let public = log
        .iter()
        .filter(|(_, r)| *r == GatewayRequest::NatPmpPublic)
        .count();
    assert_eq!(public, 4);
    assert_eq!(
        events(&mut m),
        vec![PortMapEvent::Failed(PortMapError::NoAnswer)]
    );
    assert!(m.is_done());
    assert_eq!(m.poll_timeout(), None);
    assert_eq!(m.stats().failed, 1);
}

#[test]
fn an_unsupported_version_answer_moves_to_natpmp_at_once_and_both_answers_make_the_mapping() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    sent(&mut m);
    // RFC 6887 §9 / RFC 6886 §3.5: a NAT-PMP gateway answers version 0, result 1.
    let mut buf = [0u8; 64];
    let n = encode_natpmp_unsupported_version(&mut buf, 50).unwrap();
    assert!(m.handle_input(t0(), server(), &buf[..n]));
    let reqs = sent(&mut m);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0], GatewayRequest::NatPmpPublic);
    assert_eq!(
        reqs[1],
        GatewayRequest::NatPmpMap {
            internal_port: 4000,
            suggested_port: 4000,
            lifetime: PORTMAP_LIFETIME
        }
    );
    // The map answer alone is not a mapping: the external IP comes from the public answer.
    grant(&mut m, t0(), &reqs[1..], 3600, 50);
    assert!(events(&mut m).is_empty());
    grant(&mut m, t0(), &reqs[..1], 0, 50);
    assert_eq!(
        events(&mut m),
        vec![PortMapEvent::Granted {
            external: SocketAddr::V4(EXT),
            lifetime: secs(3600),
            protocol: PortMapProtocol::NatPmp,
        }]
    );
    // Renewal: the map request only (the address is known).
    m.handle_timeout(t0() + secs(1800));
    assert!(matches!(
        sent(&mut m).as_slice(),
        [GatewayRequest::NatPmpMap {
            lifetime: PORTMAP_LIFETIME,
            suggested_port: 40000,
            ..
        }]
    ));
}

#[test]
fn close_deletes_with_lifetime_zero_and_ends() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    let reqs = sent(&mut m);
    grant(&mut m, t0(), &reqs, 600, 1);
    events(&mut m);
    let at = t0() + secs(10);
    m.close(at);
    // RFC 6887 §15: a MAP request with lifetime 0 and the same nonce deletes.
    let del = sent(&mut m);
    assert!(matches!(
        del.as_slice(),
        [GatewayRequest::PcpMap {
            lifetime: 0,
            nonce: NONCE,
            internal_port: 4000,
            ..
        }]
    ));
    grant(&mut m, at, &del, 0, 11);
    assert!(m.is_done());
    assert_eq!(m.external(), None);
    assert!(events(&mut m).is_empty());
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn an_unanswered_delete_is_sent_twice_then_given_up() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    let reqs = sent(&mut m);
    grant(&mut m, t0(), &reqs, 600, 1);
    m.close(t0());
    let log = run(&mut m, t0(), t0() + secs(60));
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|(_, r)| matches!(r, GatewayRequest::PcpMap { lifetime: 0, .. }))
    );
    assert!(m.is_done());
}

#[test]
fn a_natpmp_delete_suggests_port_zero() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    sent(&mut m);
    let mut buf = [0u8; 64];
    let n = encode_natpmp_unsupported_version(&mut buf, 50).unwrap();
    m.handle_input(t0(), server(), &buf[..n]);
    let reqs = sent(&mut m);
    grant(&mut m, t0(), &reqs, 3600, 50);
    m.close(t0());
    // RFC 6886 §3.4.
    assert_eq!(
        sent(&mut m),
        vec![GatewayRequest::NatPmpMap {
            internal_port: 4000,
            suggested_port: 0,
            lifetime: 0
        }]
    );
}

#[test]
fn an_error_result_fails_with_its_code_and_stops() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    sent(&mut m);
    // RFC 6887 §7.4: 2 NOT_AUTHORIZED.
    let resp = PcpMapResponse {
        result: 2,
        lifetime: 30,
        epoch: 5,
        nonce: [9; 12],
        protocol: 17,
        internal_port: 4000,
        external_port: 0,
        external_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let mut buf = [0u8; 64];
    let n = resp.encode(&mut buf).unwrap();
    assert!(m.handle_input(t0(), server(), &buf[..n]));
    assert_eq!(
        events(&mut m),
        vec![PortMapEvent::Failed(PortMapError::Refused {
            protocol: PortMapProtocol::Pcp,
            code: 2
        })]
    );
    assert!(m.is_done());
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn a_renewal_that_is_never_answered_loses_the_mapping_at_expiry_and_asks_again() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    let reqs = sent(&mut m);
    grant(&mut m, t0(), &reqs, 100, 1);
    events(&mut m);
    let log = run(&mut m, t0(), t0() + secs(100));
    // Renewals from 50 s on, backing off, until the mapping expires at 100 s.
    assert!(log.len() >= 5, "{log:?}");
    assert_eq!(log[0].0, secs(50));
    assert!(
        log.iter()
            .all(|(t, _)| *t < secs(100) || log.last().unwrap().0 == *t)
    );
    assert_eq!(
        events(&mut m),
        vec![PortMapEvent::Lost {
            external: SocketAddr::V4(EXT),
            error: PortMapError::NoAnswer
        }]
    );
    assert_eq!(m.external(), None);
    // And it starts over (a new request at expiry).
    assert!(!m.is_done());
    assert_eq!(m.stats().lost, 1);
}

#[test]
fn a_gateway_whose_epoch_went_back_is_counted_and_a_new_port_is_a_new_grant() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    let reqs = sent(&mut m);
    grant(&mut m, t0(), &reqs, 600, 5000);
    events(&mut m);
    let at = t0() + secs(300);
    m.handle_timeout(at);
    let renew = sent(&mut m);
    // RFC 6887 §8.5: the gateway restarted (its epoch is 20 s, not about 5300 s) and
    // allocated another port.
    let mut buf = [0u8; 64];
    let moved = SocketAddrV4::new(*EXT.ip(), 40002);
    let n = encode_gateway_grant(&mut buf, &renew[0], moved, 600, 20).unwrap();
    assert!(m.handle_input(at, server(), &buf[..n]));
    assert_eq!(m.stats().epoch_resets, 1);
    assert!(matches!(
        events(&mut m).as_slice(),
        [PortMapEvent::Granted { external, .. }] if *external == SocketAddr::V4(moved)
    ));
    // An epoch in step with the clock is no reset.
    let at2 = at + secs(300);
    m.handle_timeout(at2);
    let renew = sent(&mut m);
    let n = encode_gateway_grant(&mut buf, &renew[0], moved, 600, 320).unwrap();
    assert!(m.handle_input(at2, server(), &buf[..n]));
    assert_eq!(m.stats().epoch_resets, 1);
}

#[test]
fn the_rfc_6887_epoch_rule() {
    assert!(!epoch_invalid(100, 100, secs(0)));
    assert!(
        !epoch_invalid(100, 99, secs(0)),
        "one second back is tolerated"
    );
    assert!(epoch_invalid(100, 98, secs(0)));
    assert!(!epoch_invalid(100, 1100, secs(1000)));
    assert!(!epoch_invalid(100, 1100, secs(1050)), "within 1/16 + 2 s");
    assert!(epoch_invalid(100, 1100, secs(1200)));
    assert!(epoch_invalid(100, 1100, secs(800)));
}

#[test]
fn foreign_and_garbled_input_is_dropped_and_counted_never_taken() {
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
    let reqs = sent(&mut m);
    let mut buf = [0u8; 64];
    let n = encode_gateway_grant(&mut buf, &reqs[0], EXT, 600, 1).unwrap();
    // Another source is not the machine's at all.
    let other = SocketAddr::from((Ipv4Addr::new(192, 168, 1, 2), PCP_SERVER_PORT));
    assert!(!m.handle_input(t0(), other, &buf[..n]));
    assert_eq!(m.stats().dropped, 0);
    // Another nonce, another internal port, truncated, empty, junk: consumed and counted.
    let mut wrong_nonce = buf;
    wrong_nonce[24] ^= 1;
    let mut wrong_port = buf;
    wrong_port[41] ^= 1;
    for bad in [
        &wrong_nonce[..n],
        &wrong_port[..n],
        &buf[..n - 4],
        &[][..],
        &[0xFF; 60][..],
        &[0, 0x81, 0, 0][..],
    ] {
        assert!(m.handle_input(t0(), server(), bad));
    }
    assert_eq!(m.stats().dropped, 6);
    assert!(events(&mut m).is_empty());
    assert_eq!(m.external(), None);
    // The real answer still counts.
    assert!(m.handle_input(t0(), server(), &buf[..n]));
    assert_eq!(m.external(), Some(SocketAddr::V4(EXT)));
}

#[test]
fn arbitrary_bytes_from_the_gateway_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..2000 {
        let mut m = PortMapping::new(t0(), GW, local(), [9; 12], 0x4000);
        sent(&mut m);
        let len = rng.random_range(0..80);
        let mut b = vec![0u8; len];
        rng.fill(&mut b[..]);
        if let Some(v) = b.first_mut() {
            *v = [0, 2, 1][rng.random_range(0..3)];
        }
        if let Some(v) = b.get_mut(1) {
            *v |= 0x80;
        }
        assert!(m.handle_input(t0(), server(), &b));
        m.handle_timeout(t0() + secs(1));
        let _ = sent(&mut m);
    }
}

// ---- UPnP IGD ------------------------------------------------------------------------------

mod upnp {
    use super::*;
    use std::collections::BTreeMap;

    const WAN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 3, 10);
    const LOCATION: &str = "http://192.168.1.1:5000/rootDesc.xml";

    /// The machine, PCP and NAT-PMP given up on (7.5 s): UPnP IGD is searching. Returns it
    /// and the instant.
    fn searching() -> (PortMapping, Instant) {
        let mut m = PortMapping::new(t0(), GW, local(), NONCE, 0x4000);
        let at = t0() + Duration::from_millis(7500);
        let _ = run(&mut m, t0(), at - Duration::from_millis(1));
        m.handle_timeout(at);
        (m, at)
    }

    /// The M-SEARCHes the machine sends now: (destination, text).
    fn searches(m: &mut PortMapping) -> Vec<(SocketAddr, String)> {
        let mut buf = [0u8; 1200];
        let mut out = Vec::new();
        while let Some(t) = m.poll_transmit(&mut buf) {
            assert_eq!(t.socket, SocketId::PRIMARY);
            out.push((t.dst, String::from_utf8(buf[..t.len].to_vec()).unwrap()));
        }
        out
    }

    fn ssdp_answer(location: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n\
             ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
             LOCATION: {location}\r\nSERVER: x UPnP/1.1 y\r\n\r\n"
        )
        .into_bytes()
    }

    fn http(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn description() -> String {
        http(
            "200 OK",
            "<?xml version=\"1.0\"?><root xmlns=\"urn:schemas-upnp-org:device-1-0\"><device>\
             <deviceList><device><serviceList><service>\
             <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>\
             <controlURL>/ctl/IPConn</controlURL></service></serviceList></device></deviceList>\
             </device></root>",
        )
    }

    fn soap_ok(action: &str, inner: &str) -> String {
        http(
            "200 OK",
            &format!(
                "<s:Envelope><s:Body><u:{action}Response xmlns:u=\"x\">{inner}\
                 </u:{action}Response></s:Body></s:Envelope>"
            ),
        )
    }

    fn soap_fault(code: u16) -> String {
        http(
            "500 Internal Server Error",
            &format!(
                "<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode>{code}</errorCode>\
                 </UPnPError></detail></s:Fault></s:Body></s:Envelope>"
            ),
        )
    }

    /// The gateway's usual answers: the description, its address, and success.
    fn igd(request: &str) -> Option<String> {
        Some(if request.starts_with("GET /rootDesc.xml ") {
            description()
        } else if request.contains("#GetExternalIPAddress\"") {
            soap_ok(
                "GetExternalIPAddress",
                &format!("<NewExternalIPAddress>{WAN_IP}</NewExternalIPAddress>"),
            )
        } else if request.contains("#AddPortMapping\"") {
            soap_ok("AddPortMapping", "")
        } else if request.contains("#DeletePortMapping\"") {
            soap_ok("DeletePortMapping", "")
        } else {
            panic!("unexpected request {request}")
        })
    }

    /// A whole HTTP request (head and Content-Length body), if `bytes` hold one.
    fn whole(bytes: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |n| n.parse().unwrap());
        (body.len() >= len).then(|| text.to_owned())
    }

    /// Plays the gateway's HTTP server at `now` until the machine asks nothing more: connects
    /// its streams, reads each request whole and answers it with `answer` (in two pieces;
    /// `None`: never). Returns the requests, in order, and the streams the machine closed.
    fn serve(
        m: &mut PortMapping,
        now: Instant,
        answer: &mut dyn FnMut(&str) -> Option<String>,
    ) -> (Vec<String>, Vec<SocketId>) {
        let (mut seen, mut closed) = (Vec::new(), Vec::new());
        let mut streams: BTreeMap<SocketId, (Vec<u8>, bool)> = BTreeMap::new();
        let mut buf = [0u8; 1200];
        for _ in 0..100 {
            let mut progress = false;
            while let Some(r) = m.poll_socket_request() {
                progress = true;
                match r {
                    SocketRequest::ConnectRaw { id, addr } => {
                        assert!(id.is_stream() && m.owns_stream(id), "{id:?}");
                        assert_eq!(addr.ip(), IpAddr::V4(GW), "only the gateway");
                        assert!(streams.insert(id, (Vec::new(), false)).is_none());
                        let tcp = Some(SocketAddr::from((*local().ip(), 50000)));
                        assert!(m.handle_stream_opened(now, id, tcp));
                    }
                    SocketRequest::Close { id } => {
                        // (Or one opened in an earlier call.)
                        let _ = streams.remove(&id);
                        assert!(!closed.contains(&id), "closed once");
                        closed.push(id);
                    }
                    other => panic!("{other:?}"),
                }
            }
            while let Some(t) = m.poll_transmit(&mut buf) {
                progress = true;
                let (bytes, _) = streams.get_mut(&t.socket).expect("an open stream");
                bytes.extend_from_slice(&buf[..t.len]);
            }
            let due: Vec<(SocketId, String)> = (streams.iter_mut())
                .filter(|(_, (_, answered))| !answered)
                .filter_map(|(id, (bytes, answered))| {
                    let req = whole(bytes)?;
                    *answered = true;
                    Some((*id, req))
                })
                .collect();
            for (id, req) in due {
                progress = true;
                seen.push(req.clone());
                if let Some(resp) = answer(&req) {
                    let (a, b) = resp.as_bytes().split_at(resp.len() / 2);
                    assert!(m.handle_stream_data(now, id, a));
                    assert!(m.handle_stream_data(now, id, b));
                }
            }
            if !progress {
                return (seen, closed);
            }
        }
        panic!("the exchange never settles");
    }

    /// Searching, answered from the gateway: the machine connects to fetch the description.
    fn answered_search() -> (PortMapping, Instant) {
        let (mut m, at) = searching();
        let _ = searches(&mut m);
        let from = SocketAddr::from((GW, 1900));
        assert!(m.handle_input(at, from, &ssdp_answer(LOCATION)));
        (m, at)
    }

    fn action(req: &str) -> &str {
        let (_, rest) = req.split_once("SOAPAction: \"").unwrap_or(("", "GET\""));
        let (name, _) = rest.split_once('"').unwrap();
        name.rsplit('#').next().unwrap()
    }

    #[test]
    fn after_pcp_and_natpmp_go_unanswered_upnp_searches_multicast_and_at_the_gateway() {
        let (mut m, _) = searching();
        // UDA 1.1 §1.3.2: to the SSDP group, and unicast to the gateway's port 1900.
        let s = searches(&mut m);
        let dsts: Vec<SocketAddr> = s.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            dsts,
            ["239.255.255.250:1900", "192.168.1.1:1900"].map(|a| a.parse().unwrap())
        );
        assert!(s.iter().all(|(_, t)| {
            t.contains("ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n")
        }));
        // Retransmitted like the others (0.25, 0.75, 1.75 s), given up at 3.75 s.
        let at = t0() + Duration::from_millis(7500);
        let mut times = Vec::new();
        let mut now = at;
        while let Some(t) = m.poll_timeout() {
            now = t;
            m.handle_timeout(now);
            if !searches(&mut m).is_empty() {
                times.push(now - at);
            }
        }
        let ms = Duration::from_millis;
        assert_eq!(times, vec![ms(250), ms(750), ms(1750)]);
        assert_eq!(now - at, ms(3750));
        assert_eq!(
            events(&mut m),
            vec![PortMapEvent::Failed(PortMapError::NoAnswer)]
        );
        assert!(m.is_done());
        // PCP 4 + NAT-PMP 8 + M-SEARCH 8.
        assert_eq!(m.stats().requests_sent, 20);
    }

    #[test]
    fn a_location_on_another_host_is_not_followed() {
        let (mut m, at) = searching();
        let _ = searches(&mut m);
        let from = SocketAddr::from((GW, 1900));
        for location in [
            "http://192.168.1.77:5000/rootDesc.xml",
            "http://evil.example/rootDesc.xml",
            "https://192.168.1.1/rootDesc.xml",
        ] {
            assert!(m.handle_input(at, from, &ssdp_answer(location)));
        }
        // An answer from another host is not the gateway's at all.
        let other = SocketAddr::from(([192, 168, 1, 77], 1900));
        assert!(!m.handle_input(at, other, &ssdp_answer(LOCATION)));
        assert_eq!(m.poll_socket_request(), None, "nothing connected");
        assert_eq!(m.stats().dropped, 3);
        // Still searching: the gateway's own answer is taken.
        assert!(m.handle_input(at, from, &ssdp_answer(LOCATION)));
        assert!(matches!(
            m.poll_socket_request(),
            Some(SocketRequest::ConnectRaw { addr, .. }) if addr == "192.168.1.1:5000".parse().unwrap()
        ));
    }

    #[test]
    fn the_description_then_soap_make_the_mapping_renewed_at_half_its_lease_and_deleted_on_close() {
        let (mut m, at) = answered_search();
        let (reqs, closed) = serve(&mut m, at, &mut igd);
        let actions: Vec<&str> = reqs.iter().map(|r| action(r)).collect();
        assert_eq!(actions, ["GET", "GetExternalIPAddress", "AddPortMapping"]);
        assert!(reqs[0].starts_with("GET /rootDesc.xml HTTP/1.1\r\nHost: 192.168.1.1:5000\r\n"));
        assert!(reqs[2].starts_with("POST /ctl/IPConn HTTP/1.1\r\n"));
        // The client's port, its LAN address, the PCP lifetime.
        assert!(reqs[2].contains(
            "<NewExternalPort>4000</NewExternalPort><NewProtocol>UDP</NewProtocol>\
             <NewInternalPort>4000</NewInternalPort><NewInternalClient>192.168.1.10</NewInternalClient>"
        ));
        assert!(reqs[2].contains("<NewLeaseDuration>7200</NewLeaseDuration>"));
        assert_eq!(closed.len(), 3, "one stream per exchange, each closed");
        let external = SocketAddr::from((WAN_IP, 4000));
        assert_eq!(
            events(&mut m),
            vec![PortMapEvent::Granted {
                external,
                lifetime: secs(7200),
                protocol: PortMapProtocol::UpnpIgd,
            }]
        );
        assert_eq!(m.external(), Some(external));
        // Renewed at half the lease: AddPortMapping again; the same address is no news.
        assert_eq!(m.poll_timeout(), Some(at + secs(3600)));
        let renew = at + secs(3600);
        m.handle_timeout(renew);
        let (reqs, _) = serve(&mut m, renew, &mut igd);
        assert_eq!(
            reqs.iter().map(|r| action(r)).collect::<Vec<_>>(),
            ["AddPortMapping"]
        );
        assert!(events(&mut m).is_empty());
        assert_eq!((m.stats().granted, m.stats().renewed), (1, 1));
        // Close: DeletePortMapping of the port, then done.
        m.close(renew);
        let (reqs, _) = serve(&mut m, renew, &mut igd);
        assert_eq!(action(&reqs[0]), "DeletePortMapping");
        assert!(reqs[0].contains("<NewExternalPort>4000</NewExternalPort>"));
        assert!(m.is_done());
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn only_permanent_leases_are_asked_again_with_lease_zero_and_never_renewed() {
        let (mut m, at) = answered_search();
        let mut answer = |req: &str| {
            if req.contains("#AddPortMapping\"") && !req.contains("<NewLeaseDuration>0<") {
                return Some(soap_fault(725));
            }
            igd(req)
        };
        let (reqs, _) = serve(&mut m, at, &mut answer);
        assert_eq!(reqs.len(), 4);
        assert!(reqs[3].contains("<NewLeaseDuration>0</NewLeaseDuration>"));
        assert!(matches!(
            events(&mut m).as_slice(),
            [PortMapEvent::Granted { lifetime, .. }] if *lifetime == Duration::MAX
        ));
        assert_eq!(m.poll_timeout(), None, "a permanent mapping is not renewed");
    }

    #[test]
    fn a_conflict_asks_for_the_next_ports_then_fails_with_its_code() {
        let (mut m, at) = answered_search();
        let mut answer = |req: &str| {
            if req.contains("<NewExternalPort>4002<") {
                return igd(req);
            }
            if req.contains("#AddPortMapping\"") {
                return Some(soap_fault(718));
            }
            igd(req)
        };
        let _ = serve(&mut m, at, &mut answer);
        assert!(matches!(
            events(&mut m).as_slice(),
            [PortMapEvent::Granted { external, .. }] if external.port() == 4002
        ));
        // Every port taken: CONFLICT_TRIES ports, then the fault.
        let (mut m, at) = answered_search();
        let mut answer = |req: &str| {
            if req.contains("#AddPortMapping\"") {
                return Some(soap_fault(718));
            }
            igd(req)
        };
        let (reqs, _) = serve(&mut m, at, &mut answer);
        assert_eq!(reqs.len(), 2 + CONFLICT_TRIES as usize);
        assert_eq!(
            events(&mut m),
            vec![PortMapEvent::Failed(PortMapError::Refused {
                protocol: PortMapProtocol::UpnpIgd,
                code: 718
            })]
        );
        assert!(m.is_done());
    }

    #[test]
    fn an_unanswered_exchange_times_out_and_its_stream_is_closed() {
        let (mut m, at) = answered_search();
        let (reqs, closed) = serve(&mut m, at, &mut |_| None);
        assert_eq!(reqs.len(), 1);
        assert!(closed.is_empty());
        assert_eq!(m.poll_timeout(), Some(at + HTTP_TIMEOUT));
        m.handle_timeout(at + HTTP_TIMEOUT);
        assert!(matches!(
            m.poll_socket_request(),
            Some(SocketRequest::Close { .. })
        ));
        assert_eq!(
            events(&mut m),
            vec![PortMapEvent::Failed(PortMapError::NoAnswer)]
        );
        assert!(m.is_done());
    }

    #[test]
    fn a_response_ended_by_the_stream_closing_is_read_whole() {
        let (mut m, at) = answered_search();
        let Some(SocketRequest::ConnectRaw { id, .. }) = m.poll_socket_request() else {
            panic!("no connect");
        };
        assert!(m.handle_stream_opened(at, id, Some(SocketAddr::from((*local().ip(), 1)))));
        let mut buf = [0u8; 1200];
        assert!(m.poll_transmit(&mut buf).is_some_and(|t| t.socket == id));
        let desc = description();
        let (head, body) = desc.split_once("\r\n\r\n").unwrap();
        let head = head.replace("Content-Length", "X-Length");
        assert!(m.handle_stream_data(at, id, format!("{head}\r\n\r\n{body}").as_bytes()));
        assert!(m.poll_socket_request().is_none(), "waits for the end");
        assert!(m.handle_stream_closed(at, id));
        // The description was read: GetExternalIPAddress comes next.
        assert!(matches!(
            m.poll_socket_request(),
            Some(SocketRequest::Close { .. })
        ));
        assert!(matches!(
            m.poll_socket_request(),
            Some(SocketRequest::ConnectRaw { .. })
        ));
        // Streams outside the machine's block are not its own.
        assert!(!m.handle_stream_closed(at, SocketId::stream(0x6000)));
        assert!(!m.handle_stream_data(at, SocketId::stream(1), b"x"));
    }

    #[test]
    fn a_malformed_description_or_a_control_url_off_the_gateway_fails_unusable() {
        for bad in [
            http("200 OK", "<root><service>broken"),
            description().replace("/ctl/IPConn", "http://192.168.1.99/ctl"),
            http("404 Not Found", ""),
        ] {
            let (mut m, at) = answered_search();
            let _ = serve(&mut m, at, &mut |_| Some(bad.clone()));
            assert_eq!(
                events(&mut m),
                vec![PortMapEvent::Failed(PortMapError::Unusable)],
                "{bad}"
            );
            assert!(m.stats().dropped >= 1);
        }
    }

    #[test]
    fn a_renewal_unanswered_until_the_lease_ends_loses_the_mapping_and_searches_again() {
        let (mut m, at) = answered_search();
        let _ = serve(&mut m, at, &mut igd);
        let _ = events(&mut m);
        let mut now = at + secs(3600);
        let mut tries = 0;
        while now < at + secs(7200) {
            m.handle_timeout(now);
            let (reqs, _) = serve(&mut m, now, &mut |_| None);
            tries += reqs.len();
            now = m.poll_timeout().unwrap();
        }
        m.handle_timeout(now);
        assert!(tries > 5, "retried ({tries})");
        assert_eq!(
            events(&mut m),
            vec![PortMapEvent::Lost {
                external: SocketAddr::from((WAN_IP, 4000)),
                error: PortMapError::NoAnswer
            }]
        );
        assert_eq!(m.external(), None);
        let _ = m.poll_socket_request();
        assert_eq!(searches(&mut m).len(), 2, "searching again");
    }

    #[test]
    fn a_refused_renewal_loses_the_mapping() {
        let (mut m, at) = answered_search();
        let _ = serve(&mut m, at, &mut igd);
        let _ = events(&mut m);
        m.handle_timeout(at + secs(3600));
        let _ = serve(&mut m, at + secs(3600), &mut |_| Some(soap_fault(606)));
        assert_eq!(
            events(&mut m),
            vec![PortMapEvent::Lost {
                external: SocketAddr::from((WAN_IP, 4000)),
                error: PortMapError::Refused {
                    protocol: PortMapProtocol::UpnpIgd,
                    code: 606
                }
            }]
        );
        assert!(m.is_done());
    }

    #[test]
    fn arbitrary_bytes_on_the_ssdp_answer_and_the_stream_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(25);
        let from = SocketAddr::from((GW, 1900));
        for _ in 0..300 {
            let (mut m, at) = searching();
            let _ = searches(&mut m);
            let mut junk = b"HTTP/1.1 200 OK\r\n".to_vec();
            junk.extend((0..rng.random_range(0..200)).map(|_| rng.random::<u8>()));
            assert!(m.handle_input(at, from, &junk));
            assert!(m.handle_input(at, from, &ssdp_answer(LOCATION)));
            let _ = serve(&mut m, at, &mut |_| {
                let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
                r.extend((0..rng.random_range(0..300)).map(|_| rng.random::<u8>()));
                Some(String::from_utf8_lossy(&r).into_owned())
            });
            m.handle_timeout(at + HTTP_TIMEOUT);
            let _ = events(&mut m);
        }
    }
}
