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

/// Everything the machine sends now, parsed as the gateway would.
fn sent(m: &mut PortMapping) -> Vec<GatewayRequest> {
    let mut buf = [0u8; 128];
    let mut out = Vec::new();
    while let Some(t) = m.poll_transmit(&mut buf) {
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
    let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
        let mut m = PortMapping::new(t0(), GW, local(), [9; 12]);
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
