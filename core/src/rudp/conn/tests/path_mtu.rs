//! The connection under a changing path-MTU: fragments follow the room each packet has,
//! and a lost fragment cut for a larger packet is split to fit a smaller one.

use super::*;

/// Writes every packet `a` wants at `now` into rooms of `room` bytes; returns them.
fn drain(a: &mut Connection, now: Instant, pn: &mut u64, room: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while a.wants_transmit(now) {
        let mut buf = vec![0u8; room];
        let mut w = Writer::new(&mut buf);
        let n = a.write(now, *pn, OVERHEAD, &mut w);
        if n == 0 {
            break;
        }
        buf.truncate(n);
        out.push((*pn, buf));
        *pn += 1;
    }
    out
}

fn deliver(b: &mut Connection, now: Instant, packets: &[(u64, Vec<u8>)]) {
    for (pn, p) in packets {
        let frames = crate::wire::frame::decode_all(p).unwrap();
        b.handle_packet(now, *pn, p.len() + OVERHEAD, &frames);
    }
}

fn message_frames(packets: &[(u64, Vec<u8>)]) -> Vec<(u32, usize)> {
    packets
        .iter()
        .flat_map(|(_, p)| crate::wire::frame::decode_all(p).unwrap())
        .filter_map(|f| match f {
            Frame::Message { fragment, data, .. } => {
                Some((fragment.map_or(0, |(_, o)| o), data.len()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn new_data_is_cut_to_the_room_of_each_packet() {
    let ch = ChannelConfig::defaults();
    let mut a = Connection::new(&ch, limits());
    let now = crate::tests::epoch();
    let blob = Bytes::from(vec![7u8; 20_000]);
    a.send(now, Channel::RELIABLE_ORDERED, blob, SendOptions::default())
        .unwrap();
    let mut pn = 0;
    let small = drain(&mut a, now, &mut pn, 1200 - OVERHEAD);
    let cut_small = message_frames(&small)[0].1;
    assert_eq!(
        cut_small,
        limits().fragment_size,
        "the base room: the base fragment"
    );
    let mut b = Connection::new(&ch, limits());
    deliver(&mut b, now, &small);
    // The path proved 1452 bytes: fragments grow with it.
    let mut a = Connection::new(&ch, limits());
    a.send(
        now,
        Channel::RELIABLE_ORDERED,
        Bytes::from(vec![7u8; 20_000]),
        SendOptions::default(),
    )
    .unwrap();
    let mut pn = 0;
    let large = drain(&mut a, now, &mut pn, 1452 - OVERHEAD);
    let cut_large = message_frames(&large)[0].1;
    assert_eq!(
        cut_large,
        1452 - OVERHEAD - ACK_RESERVE - MESSAGE_FRAME_OVERHEAD
    );
    assert!(
        large.len() < small.len(),
        "{} vs {} packets",
        large.len(),
        small.len()
    );
    let mut b = Connection::new(&ch, limits());
    deliver(&mut b, now, &large);
    match b.poll_event() {
        Some(ConnEvent::Message { payload, .. }) => assert_eq!(payload.len(), 20_000),
        e => panic!("{e:?}"),
    }
}

#[test]
fn a_lost_fragment_cut_for_a_larger_packet_is_split_to_fit_a_smaller_one() {
    let ch = ChannelConfig::defaults();
    let (mut a, mut b) = (
        Connection::new(&ch, limits()),
        Connection::new(&ch, limits()),
    );
    let mut now = crate::tests::epoch();
    a.send(
        now,
        Channel::RELIABLE_ORDERED,
        Bytes::from((0..6000u32).map(|i| i as u8).collect::<Vec<_>>()),
        SendOptions::default(),
    )
    .unwrap();
    let mut pn = 0;
    // Sent at 1452: all of it lost (the path's MTU fell under it).
    let lost = drain(&mut a, now, &mut pn, 1452 - OVERHEAD);
    let cuts = message_frames(&lost);
    assert!(
        cuts[..cuts.len() - 1]
            .iter()
            .all(|&(_, len)| len > 1200 - OVERHEAD)
    );
    // The probe timeout fires; the path now carries 1200 only.
    let mut got = Vec::new();
    for _ in 0..20 {
        let Some(t) = a.poll_timeout() else { break };
        now = t;
        a.handle_timeout(now);
        let resent = drain(&mut a, now, &mut pn, 1200 - OVERHEAD);
        assert!(
            resent.iter().all(|(_, p)| p.len() <= 1200 - OVERHEAD),
            "nothing larger than the room"
        );
        deliver(&mut b, now, &resent);
        while let Some(e) = b.poll_event() {
            got.push(e);
        }
        if !got.is_empty() {
            break;
        }
        // b acks what it got.
        let mut pn_b = 1000 + pn;
        let acks = drain(
            &mut b,
            now + Duration::from_millis(30),
            &mut pn_b,
            1200 - OVERHEAD,
        );
        deliver(&mut a, now + Duration::from_millis(30), &acks);
    }
    match got.first() {
        Some(ConnEvent::Message { payload, .. }) => {
            assert_eq!(payload.len(), 6000);
            assert!(payload.iter().enumerate().all(|(i, &x)| x == i as u8));
        }
        e => panic!("not delivered: {e:?}"),
    }
    assert!(
        a.stats.retransmits >= 5,
        "{} retransmits",
        a.stats.retransmits
    );
}

#[test]
fn a_whole_copy_after_some_fragments_frees_their_reassembly() {
    let ch = ChannelConfig::defaults();
    let mut b = Connection::new(&ch, limits());
    let now = crate::tests::epoch();
    let data = [5u8; 900];
    let part = [Frame::Message {
        channel: 0,
        seq: 0,
        fragment: Some((900, 0)),
        data: &data[..400],
    }];
    b.handle_packet(now, 0, 500, &part);
    assert_eq!(b.reassembly_bytes, 900);
    let whole = [Frame::Message {
        channel: 0,
        seq: 0,
        fragment: None,
        data: &data,
    }];
    b.handle_packet(now, 1, 1000, &whole);
    assert_eq!(b.reassembly_bytes, 0);
    assert!(matches!(b.poll_event(), Some(ConnEvent::Message { .. })));
    // The rest of the fragments, late: duplicates, nothing held.
    let rest = [Frame::Message {
        channel: 0,
        seq: 0,
        fragment: Some((900, 400)),
        data: &data[400..],
    }];
    b.handle_packet(now, 2, 600, &rest);
    assert_eq!(b.reassembly_bytes, 0);
    assert!(b.poll_event().is_none());
}

#[test]
fn set_path_mtu_moves_the_window_unit_and_keeps_the_window() {
    let ch = ChannelConfig::defaults();
    let mut a = Connection::new(&ch, limits());
    let before = a.cwnd();
    a.set_path_mtu(1452);
    assert_eq!(a.cwnd(), before);
    assert_eq!(a.limits.mtu, 1452);
    assert_eq!(a.probe_timeout(), None, "no RTT sample yet");
}
