//! Two connections over a seeded, impaired link in virtual time.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;

const OVERHEAD: usize = 75; // session + relay + peer packet overheads around the frames

fn limits() -> Limits {
    Limits {
        fragment_size: 1044,
        max_message_size: 1 << 20,
        max_reassembly_bytes: 4 << 20,
        max_send_buffer: 8 << 20,
        mtu: 1200,
        ack_delay: Duration::from_millis(5),
    }
}

/// Link impairments for one direction.
#[derive(Clone, Copy)]
struct Impair {
    latency: Duration,
    jitter: Duration,
    /// Gilbert–Elliott: probability to enter the bad state, to leave it, loss in bad state.
    ge: (f64, f64, f64),
    /// Random loss in the good state.
    loss: f64,
    dup: f64,
}

impl Impair {
    fn clean(latency_ms: u64) -> Self {
        Self {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::ZERO,
            ge: (0.0, 1.0, 0.0),
            loss: 0.0,
            dup: 0.0,
        }
    }
}

struct Dir {
    pn: u64,
    bad: bool,
    /// In flight: (deliver at, seq) → (pn, frame bytes).
    wire: BTreeMap<(Instant, u64), (u64, Vec<u8>)>,
    /// Packet numbers the receiver accepted (the AEAD replay window's job in real life).
    seen: BTreeSet<u64>,
}

struct Pair {
    now: Instant,
    a: Connection,
    b: Connection,
    ab: Dir,
    ba: Dir,
    imp_ab: Impair,
    imp_ba: Impair,
    rng: StdRng,
    seq: u64,
    /// Messages b received, in delivery order, per channel.
    got_b: Vec<(Channel, Bytes)>,
    expired_a: Vec<(Channel, MessageId)>,
    /// Stop delivering b → a (b never acks).
    mute_b: bool,
    /// A step never jumps past this (the next tick of a paced sender).
    horizon: Option<Instant>,
}

fn dir() -> Dir {
    Dir {
        pn: 0,
        bad: false,
        wire: BTreeMap::new(),
        seen: BTreeSet::new(),
    }
}

impl Pair {
    fn new(seed: u64, imp: Impair) -> Self {
        let ch = ChannelConfig::defaults();
        Self {
            now: crate::tests::epoch(),
            a: Connection::new(&ch, limits()),
            b: Connection::new(&ch, limits()),
            ab: dir(),
            ba: dir(),
            imp_ab: imp,
            imp_ba: imp,
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            got_b: Vec::new(),
            expired_a: Vec::new(),
            mute_b: false,
            horizon: None,
        }
    }

    fn transmit(&mut self, from_a: bool) {
        let now = self.now;
        loop {
            let (conn, d, imp) = if from_a {
                (&mut self.a, &mut self.ab, self.imp_ab)
            } else {
                (&mut self.b, &mut self.ba, self.imp_ba)
            };
            if !conn.wants_transmit(now) {
                break;
            }
            let mut buf = [0u8; 1200 - OVERHEAD];
            let mut w = Writer::new(&mut buf);
            let n = conn.write(now, d.pn, OVERHEAD, &mut w);
            if n == 0 {
                break;
            }
            let pn = d.pn;
            d.pn += 1;
            // Gilbert–Elliott state step per packet.
            let (p_bad, p_good, loss_bad) = imp.ge;
            d.bad = if d.bad {
                !self.rng.random_bool(p_good)
            } else {
                self.rng.random_bool(p_bad)
            };
            let lost = if d.bad {
                self.rng.random_bool(loss_bad)
            } else {
                self.rng.random_bool(imp.loss)
            };
            if lost || (!from_a && self.mute_b) {
                continue;
            }
            let copies = if self.rng.random_bool(imp.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let jitter = if imp.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    imp.jitter.mul_f64(self.rng.random::<f64>())
                };
                self.seq += 1;
                d.wire.insert(
                    (now + imp.latency + jitter, self.seq),
                    (pn, buf[..n].to_vec()),
                );
            }
        }
    }

    fn deliver_due(&mut self) {
        let now = self.now;
        for to_b in [true, false] {
            loop {
                let d = if to_b { &mut self.ab } else { &mut self.ba };
                let Some((&key, _)) = d.wire.first_key_value() else {
                    break;
                };
                if key.0 > now {
                    break;
                }
                let (pn, bytes) = d.wire.remove(&key).unwrap();
                if !d.seen.insert(pn) {
                    continue; // the replay window drops duplicates before the connection
                }
                let conn = if to_b { &mut self.b } else { &mut self.a };
                let frames = crate::wire::frame::decode_all(&bytes).unwrap();
                conn.handle_packet(now, pn, bytes.len() + OVERHEAD, &frames);
            }
        }
        while let Some(e) = self.b.poll_event() {
            if let ConnEvent::Message { channel, payload } = e {
                self.got_b.push((channel, payload));
            }
        }
        while let Some(e) = self.a.poll_event() {
            if let ConnEvent::Expired { channel, id } = e {
                self.expired_a.push((channel, id));
            }
        }
    }

    /// One step: transmit, jump to the next event, deliver, fire timers.
    fn step(&mut self) {
        self.transmit(true);
        self.transmit(false);
        let mut next = [
            self.ab.wire.keys().next().map(|k| k.0),
            self.ba.wire.keys().next().map(|k| k.0),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.now + Duration::from_millis(10));
        if let Some(h) = self.horizon.filter(|h| *h > self.now) {
            next = next.min(h);
        }
        if next <= self.now {
            next = self.now + Duration::from_micros(100);
        }
        self.now = next;
        self.deliver_due();
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.deliver_due();
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + limit;
        for _ in 0..5_000_000 {
            if done(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            self.step();
        }
        panic!("step cap");
    }
}

fn payloads_on(got: &[(Channel, Bytes)], ch: Channel) -> Vec<u32> {
    got.iter()
        .filter(|(c, _)| *c == ch)
        .map(|(_, p)| u32::from_be_bytes(p[..4].try_into().unwrap()))
        .collect()
}

fn nasty(latency_ms: u64) -> Impair {
    Impair {
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(latency_ms / 2),
        // Enter bursts often, stay ~4 packets, lose 90% inside: ~30% loss overall.
        ge: (0.11, 0.25, 0.9),
        loss: 0.05,
        dup: 0.05,
    }
}

#[test]
fn ten_thousand_ordered_messages_survive_burst_loss_duplication_and_reordering() {
    let mut next = 0u32;
    // Feed progressively: 10 per step as a game would, until all are queued.
    let mut p = Pair::new(1, nasty(25));
    let ok = {
        let end = p.now + Duration::from_secs(900);
        loop {
            while next < 10_000 && p.a.unacked() < 2_000 {
                let _ =
                    p.a.send(
                        p.now,
                        Channel::RELIABLE_ORDERED,
                        Bytes::copy_from_slice(&next.to_be_bytes()),
                        SendOptions::default(),
                    )
                    .unwrap();
                next += 1;
            }
            if payloads_on(&p.got_b, Channel::RELIABLE_ORDERED).len() == 10_000
                && p.a.unacked() == 0
            {
                break true;
            }
            if p.now >= end {
                break false;
            }
            p.step();
        }
    };
    let got = payloads_on(&p.got_b, Channel::RELIABLE_ORDERED);
    assert!(
        ok,
        "delivered {} of 10000; unacked {}",
        got.len(),
        p.a.unacked()
    );
    assert_eq!(
        got,
        (0..10_000).collect::<Vec<_>>(),
        "exactly once, in order"
    );
    let cs = p.a.channel_stats(Channel::RELIABLE_ORDERED).unwrap();
    assert_eq!((cs.messages_out, cs.queued, cs.unacked), (10_000, 0, 0));
    assert!(cs.retransmits > 0);
    let rs = p.b.channel_stats(Channel::RELIABLE_ORDERED).unwrap();
    assert_eq!((rs.messages_in, rs.bytes_in), (10_000, 40_000));
    let s = p.a.stats;
    let loss = s.packets_lost as f64 / s.packets_sent as f64;
    assert!(loss > 0.2, "the link really was lossy: {loss}");
    assert!(s.retransmits > 0);
}

#[test]
fn a_one_mebibyte_message_arrives_intact_under_ten_percent_loss() {
    let mut imp = Impair::clean(25);
    imp.loss = 0.10;
    let mut p = Pair::new(2, imp);
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + i / 251) as u8).collect();
    p.a.send(
        p.now,
        Channel::RELIABLE_ORDERED,
        Bytes::from(big.clone()),
        SendOptions::default(),
    )
    .unwrap();
    assert!(p.run_until(Duration::from_secs(120), |p| !p.got_b.is_empty()));
    assert_eq!(p.got_b.len(), 1);
    assert!(p.got_b[0].1[..] == big[..], "intact");
    assert!(p.run_until(Duration::from_secs(10), |p| p.a.unacked() == 0));
    assert_eq!(p.b.reassembly_bytes, 0);
}

#[test]
fn reliable_sequenced_never_delivers_an_older_message_after_a_newer_one() {
    let mut p = Pair::new(3, nasty(20));
    for i in 0..2000u32 {
        p.a.send(
            p.now,
            Channel::RELIABLE_SEQUENCED,
            Bytes::copy_from_slice(&i.to_be_bytes()),
            SendOptions::default(),
        )
        .unwrap();
        p.a.send(
            p.now,
            Channel::UNRELIABLE_SEQUENCED,
            Bytes::copy_from_slice(&i.to_be_bytes()),
            SendOptions::default(),
        )
        .unwrap();
        let until = p.now + Duration::from_millis(16);
        while p.now < until {
            p.step();
        }
    }
    p.run_until(Duration::from_secs(5), |p| p.a.unacked() == 0);
    for ch in [Channel::RELIABLE_SEQUENCED, Channel::UNRELIABLE_SEQUENCED] {
        let got = payloads_on(&p.got_b, ch);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{ch}: strictly increasing"
        );
        assert!(got.len() > 500, "{ch}: most got through ({})", got.len());
    }
    assert_eq!(
        payloads_on(&p.got_b, Channel::RELIABLE_SEQUENCED).last(),
        Some(&1999),
        "the newest reliable-sequenced message is delivered"
    );
    assert_eq!(p.a.unacked(), 0, "superseded messages are not kept");
}

#[test]
fn expired_messages_are_reported_and_never_delivered_afterwards() {
    let mut p = Pair::new(4, Impair::clean(50));
    // The link to b goes dark for a while: message 1 cannot make its deadline.
    p.a.send(
        p.now,
        Channel::RELIABLE_ORDERED,
        Bytes::from_static(&[0, 0, 0, 0]),
        SendOptions::default(),
    )
    .unwrap();
    p.run_until(Duration::from_secs(1), |p| p.got_b.len() == 1);
    p.imp_ab.ge = (1.0, 0.0, 1.0); // everything a → b is lost
    let deadline = p.now + Duration::from_millis(300);
    let id =
        p.a.send(
            p.now,
            Channel::RELIABLE_ORDERED,
            Bytes::from_static(&[0, 0, 0, 1]),
            SendOptions {
                deadline: Some(deadline),
                max_retransmits: None,
            },
        )
        .unwrap();
    p.run_until(Duration::from_millis(400), |_| false);
    p.imp_ab = Impair::clean(50);
    p.ab.bad = false;
    p.a.send(
        p.now,
        Channel::RELIABLE_ORDERED,
        Bytes::from_static(&[0, 0, 0, 2]),
        SendOptions::default(),
    )
    .unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| !p.expired_a.is_empty()));
    assert_eq!(p.expired_a, vec![(Channel::RELIABLE_ORDERED, id)]);
    let delivered_at_expiry = payloads_on(&p.got_b, Channel::RELIABLE_ORDERED);
    p.run_until(Duration::from_secs(5), |_| false);
    let got = payloads_on(&p.got_b, Channel::RELIABLE_ORDERED);
    assert_eq!(
        got,
        vec![0, 2],
        "the ordered channel skips the expired message"
    );
    assert!(!delivered_at_expiry.contains(&1) && !got.contains(&1));
    assert_eq!(p.a.unacked(), 0);
}

#[test]
fn a_connection_abandoned_behind_a_gap_delivers_what_it_acknowledged() {
    // Found by the cluster chaos sweep (seed 611119678): messages acknowledged but held
    // behind a lost one were dropped with the pair, so neither delivered nor expired.
    let mut p = Pair::new(7, Impair::clean(50));
    let send = |p: &mut Pair, n: u8| {
        let payload = Bytes::copy_from_slice(&[0, 0, 0, n]);
        (p.a.send(
            p.now,
            Channel::RELIABLE_ORDERED,
            payload,
            SendOptions::default(),
        ))
        .unwrap()
    };
    send(&mut p, 0);
    assert!(p.run_until(Duration::from_secs(1), |p| p.got_b.len() == 1));
    p.imp_ab.ge = (1.0, 0.0, 1.0); // message 1's first copy is lost
    let lost = send(&mut p, 1);
    p.transmit(true);
    p.imp_ab = Impair::clean(50);
    p.ab.bad = false;
    send(&mut p, 2);
    send(&mut p, 3);
    // Until a has the acks for 2 and 3, before 1 is sent again.
    assert!(p.run_until(Duration::from_secs(1), |p| p.a.unacked() == 1));
    assert_eq!(payloads_on(&p.got_b, Channel::RELIABLE_ORDERED), vec![0]);
    // The pair ends on both sides.
    p.a.abandon();
    p.b.abandon();
    p.deliver_due();
    assert_eq!(
        payloads_on(&p.got_b, Channel::RELIABLE_ORDERED),
        vec![0, 2, 3],
        "acknowledged, so delivered"
    );
    assert_eq!(p.expired_a, vec![(Channel::RELIABLE_ORDERED, lost)]);
}

#[test]
fn a_retry_budget_expires_a_message_too() {
    let mut p = Pair::new(5, Impair::clean(10));
    p.imp_ab.ge = (1.0, 0.0, 1.0);
    let id =
        p.a.send(
            p.now,
            Channel::RELIABLE_UNORDERED,
            Bytes::from_static(b"doomed"),
            SendOptions {
                deadline: None,
                max_retransmits: Some(2),
            },
        )
        .unwrap();
    // Dark long enough for the first send and both allowed retransmissions to be lost.
    p.run_until(Duration::from_secs(10), |_| false);
    assert_eq!(p.a.stats.retransmits, 2, "never more than the budget");
    p.imp_ab = Impair::clean(10);
    p.ab.bad = false;
    assert!(p.run_until(Duration::from_secs(5), |p| !p.expired_a.is_empty()));
    assert_eq!(p.expired_a, vec![(Channel::RELIABLE_UNORDERED, id)]);
    assert!(p.got_b.is_empty());
}

#[test]
fn switching_paths_mid_stream_keeps_exactly_once_in_order() {
    // Relay (60 ms) → direct (10 ms) → relay: the switch reorders packets in flight.
    let mut p = Pair::new(6, Impair::clean(60));
    let mut next = 0u32;
    for phase in 0..3 {
        let imp = if phase == 1 {
            Impair::clean(10)
        } else {
            Impair::clean(60)
        };
        p.imp_ab = Impair { loss: 0.05, ..imp };
        p.imp_ba = imp;
        let until = p.now + Duration::from_secs(2);
        while p.now < until {
            for _ in 0..3 {
                p.a.send(
                    p.now,
                    Channel::RELIABLE_ORDERED,
                    Bytes::copy_from_slice(&next.to_be_bytes()),
                    SendOptions::default(),
                )
                .unwrap();
                next += 1;
            }
            let t = p.now + Duration::from_millis(16);
            while p.now < t {
                p.step();
            }
        }
    }
    assert!(p.run_until(Duration::from_secs(5), |p| p.a.unacked() == 0));
    assert_eq!(
        payloads_on(&p.got_b, Channel::RELIABLE_ORDERED),
        (0..next).collect::<Vec<_>>()
    );
}

#[test]
fn a_peer_that_stops_acking_makes_sender_memory_plateau() {
    let mut p = Pair::new(7, Impair::clean(20));
    p.mute_b = true;
    let mut refused = 0;
    let mut sent_len = Vec::new();
    for round in 0..400 {
        for _ in 0..50 {
            match p.a.send(
                p.now,
                Channel::RELIABLE_ORDERED,
                Bytes::from(vec![0u8; 1000]),
                SendOptions::default(),
            ) {
                Ok(_) => {}
                Err(SendError::QueueFull) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        let t = p.now + Duration::from_millis(50);
        while p.now < t {
            p.step();
        }
        if round % 100 == 99 {
            sent_len.push((p.a.sent.len(), p.a.buffered));
        }
    }
    assert!(refused > 0, "the send buffer cap pushes back");
    assert!(p.a.buffered <= limits().max_send_buffer);
    // The bookkeeping of packets in flight does not grow without bound either.
    let last = sent_len.last().unwrap().0;
    assert!(last < 200, "sent packets tracked: {sent_len:?}");
}

#[test]
fn unreliable_messages_too_big_for_a_fragment_and_unknown_channels_are_refused() {
    let mut p = Pair::new(8, Impair::clean(10));
    assert_eq!(
        p.a.send(
            p.now,
            Channel::UNRELIABLE,
            Bytes::from(vec![0; 1045]),
            SendOptions::default()
        ),
        Err(SendError::PayloadTooLarge { max: 1044 })
    );
    assert_eq!(
        p.a.send(p.now, Channel(9), Bytes::new(), SendOptions::default()),
        Err(SendError::UnknownChannel)
    );
    assert_eq!(
        p.a.send(
            p.now,
            Channel::RELIABLE_ORDERED,
            Bytes::from(vec![0; (1 << 20) + 1]),
            SendOptions::default()
        ),
        Err(SendError::PayloadTooLarge { max: 1 << 20 })
    );
}

#[test]
fn a_peer_announcing_a_huge_message_is_flagged() {
    let mut c = Connection::new(&ChannelConfig::defaults(), limits());
    let now = crate::tests::epoch();
    c.handle_packet(
        now,
        0,
        100,
        &[Frame::Message {
            channel: 0,
            seq: 0,
            fragment: Some((u32::MAX, 0)),
            data: b"x",
        }],
    );
    assert_eq!(c.violation(), Some(PeerDropReason::MessageTooLarge));
    let mut c = Connection::new(&ChannelConfig::defaults(), limits());
    for seq in 0..5 {
        c.handle_packet(
            now,
            u64::from(seq),
            100,
            &[Frame::Message {
                channel: 1,
                seq,
                fragment: Some((1 << 20, 0)),
                data: b"x",
            }],
        );
    }
    assert_eq!(c.violation(), Some(PeerDropReason::ReassemblyLimit));
    assert!(c.reassembly_bytes <= limits().max_reassembly_bytes);
}

#[test]
fn rtt_is_measured() {
    let mut p = Pair::new(9, Impair::clean(40));
    for i in 0..100u32 {
        p.a.send(
            p.now,
            Channel::UNRELIABLE,
            Bytes::copy_from_slice(&i.to_be_bytes()),
            SendOptions::default(),
        )
        .unwrap();
        let t = p.now + Duration::from_millis(20);
        while p.now < t {
            p.step();
        }
    }
    let rtt = p.a.srtt();
    assert!(
        rtt >= Duration::from_millis(80) && rtt <= Duration::from_millis(90),
        "{rtt:?}"
    );
}

#[test]
fn a_blob_on_one_channel_does_not_starve_small_messages_on_another_of_equal_priority() {
    // Channels 0 and 1 share priority 1. A 512 KiB blob fills channel 1 with full fragments;
    // 64-byte game ticks go on channel 0 at 60 Hz. A packet whose room is too small for the
    // next fragment must still carry the ticks that fit, so every tick rides the next
    // packets instead of waiting behind the blob's fragments.
    // 200 ms RTT, 10% loss: the congestion window stays small, so ticks queue behind it and
    // each packet must carry as many of them as fit.
    let mut imp = Impair::clean(100);
    imp.loss = 0.10;
    let mut p = Pair::new(7, imp);
    let blob: Vec<u8> = (0..(512u32 << 10)).map(|i| i as u8).collect();
    p.a.send(
        p.now,
        Channel::RELIABLE_UNORDERED,
        Bytes::from(blob),
        SendOptions::default(),
    )
    .unwrap();
    let start = p.now;
    let tick = Duration::from_micros(16_667);
    let mut sent_at = Vec::new();
    let mut latencies = Vec::new();
    let mut seen = 0;
    for i in 0..300u32 {
        let mut m = i.to_be_bytes().to_vec();
        m.resize(64, 0);
        p.a.send(
            p.now,
            Channel::RELIABLE_ORDERED,
            Bytes::from(m),
            SendOptions::default(),
        )
        .unwrap();
        sent_at.push(p.now);
        let until = start + tick * (i + 1);
        p.run_until(until - p.now, |p| p.now >= until);
        let got = payloads_on(&p.got_b, Channel::RELIABLE_ORDERED);
        for &n in &got[seen..] {
            latencies.push(p.now - sent_at[n as usize]);
        }
        seen = got.len();
    }
    assert!(p.run_until(Duration::from_secs(30), |p| {
        payloads_on(&p.got_b, Channel::RELIABLE_ORDERED).len() == 300
    }));
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!("ticks beside a blob at 200 ms RTT, 10% loss: p99 {p99:?}");
    // Seeded and deterministic: 1.73 s when a fragment that did not fit ended the packet
    // after a single tick, 0.90 s once every fitting tick was packed. Since new data is cut
    // to each packet's room (path-MTU discovery) a blob fragment always fits, so that case no
    // longer arises here (0.30 s with it put back by hand, 0.28 s without).
    assert!(
        p99 < Duration::from_millis(1200),
        "ticks waited behind the blob: p99 {p99:?}"
    );
}

/// Acks `b` sends while `a` sends 40 small messages on `channel`, one a millisecond, each in
/// a packet of its own that `b` gets at once; `b` sends whenever it wants to (its acks reach
/// `a` at once too).
fn acks_for_small_messages(channel: Channel) -> u64 {
    let ch = ChannelConfig::defaults();
    let (mut a, mut b) = (
        Connection::new(&ch, limits()),
        Connection::new(&ch, limits()),
    );
    let mut now = crate::tests::epoch();
    let (mut pn_a, mut pn_b) = (0, 0);
    let mut buf = [0u8; 1200 - OVERHEAD];
    for i in 0..40u32 {
        a.send(
            now,
            channel,
            Bytes::copy_from_slice(&[i as u8; 100]),
            SendOptions::default(),
        )
        .unwrap();
        let mut w = Writer::new(&mut buf);
        let n = a.write(now, pn_a, OVERHEAD, &mut w);
        assert!(n > 0, "message {i} left at once");
        let frames = crate::wire::frame::decode_all(&buf[..n]).unwrap();
        b.handle_packet(now, pn_a, n + OVERHEAD, &frames);
        pn_a += 1;
        let mut send_b = |now: Instant, a: &mut Connection, b: &mut Connection| {
            while b.wants_transmit(now) {
                let mut back = [0u8; 1200 - OVERHEAD];
                let mut w = Writer::new(&mut back);
                let n = b.write(now, pn_b, OVERHEAD, &mut w);
                if n == 0 {
                    break;
                }
                let frames = crate::wire::frame::decode_all(&back[..n]).unwrap();
                a.handle_packet(now, pn_b, n + OVERHEAD, &frames);
                pn_b += 1;
            }
        };
        send_b(now, &mut a, &mut b);
        // The next millisecond, with b's delayed-ack timer fired on the way if it is due.
        let next = now + Duration::from_millis(1);
        if let Some(t) = b.poll_timeout().filter(|&t| t < next) {
            b.handle_timeout(t);
            send_b(t, &mut a, &mut b);
        }
        now = next;
        b.handle_timeout(now);
        send_b(now, &mut a, &mut b);
    }
    assert_eq!(a.stats.packets_sent, 40, "one packet per message");
    b.stats.packets_sent
}

#[test]
fn small_unreliable_packets_are_acknowledged_by_weight_and_reliable_ones_every_second() {
    // Reliable: every second packet (RFC 9000 §13.2.2), as before.
    let reliable = acks_for_small_messages(Channel::RELIABLE_ORDERED);
    assert_eq!(reliable, 20, "acks for 40 reliable packets");
    // Unreliable: 40 packets of about 120 bytes weigh about two full datagrams; the 5 ms ack
    // delay of these limits sends an ack at least every 5 or 6 packets: 7 or 8 acks against
    // 20 before.
    let unreliable = acks_for_small_messages(Channel::UNRELIABLE);
    assert!(
        (6..=9).contains(&unreliable),
        "{unreliable} acks for 40 unreliable packets"
    );
}

/// Bulk flows sharing one bottleneck: every flow's data packets queue at `rate` behind one
/// drop-tail buffer of `capacity` bytes (a router's interface), then cross `latency`; acks
/// come back over their own uncongested path. Optional random loss before the queue.
mod bottleneck {
    use super::*;

    /// Bytes per second of the shared link: 8 Mbit/s.
    const RATE: f64 = 1_000_000.0;
    /// One-way latency each way: 50 ms RTT, so one bandwidth-delay product is 50 kB.
    const LATENCY: Duration = Duration::from_millis(25);
    /// Drop-tail buffer: one bandwidth-delay product, the classic router sizing.
    const CAPACITY: f64 = 50_000.0;
    /// Size of each bulk message a flow keeps queued.
    const CHUNK: usize = 16 * 1024;

    pub(super) struct Flow {
        a: Connection,
        b: Connection,
        pn_ab: u64,
        pn_ba: u64,
        start: Instant,
        /// Bytes b received, as (time, bytes) per message.
        got: Vec<(Instant, usize)>,
    }

    /// A packet on the wire, keyed by (arrival, seq): its flow, whether it goes towards b,
    /// its number and its frames.
    type InFlight = (usize, bool, u64, Vec<u8>);

    pub(super) struct Net {
        /// Virtual time zero (the epoch is read once per harness).
        start: Instant,
        now: Instant,
        flows: Vec<Flow>,
        busy_until: Instant,
        loss: f64,
        rng: StdRng,
        seq: u64,
        wire: BTreeMap<(Instant, u64), InFlight>,
        pub(super) tail_drops: u64,
    }

    impl Net {
        /// Flows whose controllers `classic` picks (true: the NewReno reference), started
        /// at the given offsets.
        pub(super) fn new(seed: u64, loss: f64, flows: &[(bool, Duration)]) -> Self {
            let now = crate::tests::epoch();
            let ch = ChannelConfig::defaults();
            let flows = flows
                .iter()
                .map(|&(classic, start)| {
                    let mut a = Connection::new(&ch, limits());
                    if classic {
                        a.cc = Congestion::classic_newreno(limits().mtu);
                    }
                    Flow {
                        a,
                        b: Connection::new(&ch, limits()),
                        pn_ab: 0,
                        pn_ba: 0,
                        start: now + start,
                        got: Vec::new(),
                    }
                })
                .collect();
            Self {
                start: now,
                now,
                flows,
                busy_until: now,
                loss,
                rng: StdRng::seed_from_u64(seed),
                seq: 0,
                wire: BTreeMap::new(),
                tail_drops: 0,
            }
        }

        fn transmit(&mut self) {
            let now = self.now;
            for i in 0..self.flows.len() {
                let f = &mut self.flows[i];
                if now < f.start {
                    continue;
                }
                while f.a.queued_bytes() < 4 * CHUNK {
                    f.a.send(
                        now,
                        Channel::RELIABLE_ORDERED,
                        Bytes::from(vec![i as u8; CHUNK]),
                        SendOptions::default(),
                    )
                    .unwrap();
                }
                for to_b in [true, false] {
                    loop {
                        let f = &mut self.flows[i];
                        let (conn, pn) = if to_b {
                            (&mut f.a, &mut f.pn_ab)
                        } else {
                            (&mut f.b, &mut f.pn_ba)
                        };
                        if !conn.wants_transmit(now) {
                            break;
                        }
                        let mut buf = [0u8; 1200 - OVERHEAD];
                        let mut w = Writer::new(&mut buf);
                        let n = conn.write(now, *pn, OVERHEAD, &mut w);
                        if n == 0 {
                            break;
                        }
                        let this = *pn;
                        *pn += 1;
                        let arrival = if to_b {
                            if self.rng.random_bool(self.loss) {
                                continue;
                            }
                            let size = (n + OVERHEAD) as f64;
                            let backlog = self.busy_until.saturating_duration_since(now);
                            if backlog.as_secs_f64() * RATE + size > CAPACITY {
                                self.tail_drops += 1;
                                continue;
                            }
                            self.busy_until =
                                self.busy_until.max(now) + Duration::from_secs_f64(size / RATE);
                            self.busy_until + LATENCY
                        } else {
                            now + LATENCY
                        };
                        self.seq += 1;
                        self.wire
                            .insert((arrival, self.seq), (i, to_b, this, buf[..n].to_vec()));
                    }
                }
            }
        }

        fn step(&mut self) {
            self.transmit();
            let mut next = self.wire.keys().next().map(|k| k.0);
            for f in &self.flows {
                for t in [f.a.poll_timeout(), f.b.poll_timeout(), Some(f.start)] {
                    if let Some(t) = t.filter(|t| *t > self.now) {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                }
            }
            let next = next.unwrap_or(self.now + Duration::from_millis(10));
            self.now = next.max(self.now + Duration::from_micros(10));
            while let Some((&key, _)) = self.wire.first_key_value() {
                if key.0 > self.now {
                    break;
                }
                let (i, to_b, pn, bytes) = self.wire.remove(&key).unwrap();
                let f = &mut self.flows[i];
                let conn = if to_b { &mut f.b } else { &mut f.a };
                let frames = crate::wire::frame::decode_all(&bytes).unwrap();
                conn.handle_packet(self.now, pn, bytes.len() + OVERHEAD, &frames);
            }
            for f in &mut self.flows {
                f.a.handle_timeout(self.now);
                f.b.handle_timeout(self.now);
                while let Some(e) = f.b.poll_event() {
                    if let ConnEvent::Message { payload, .. } = e {
                        f.got.push((self.now, payload.len()));
                    }
                }
                while f.a.poll_event().is_some() {}
            }
        }

        pub(super) fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            for _ in 0..20_000_000 {
                if self.now >= end {
                    return;
                }
                self.step();
            }
            panic!("step cap");
        }

        /// Bytes flow `i` delivered between `from` and `to` after the start.
        pub(super) fn delivered(&self, i: usize, from: Duration, to: Duration) -> usize {
            let t0 = self.start;
            self.flows[i]
                .got
                .iter()
                .filter(|(t, _)| *t >= t0 + from && *t < t0 + to)
                .map(|(_, n)| n)
                .sum()
        }

        pub(super) fn sender(&self, i: usize) -> &Connection {
            &self.flows[i].a
        }
    }

    /// Payload bytes per second the bottleneck carries at most: its rate less the bytes
    /// around the frames (`OVERHEAD` per 1200-byte datagram; frame headers not deducted).
    pub(super) fn payload_capacity() -> f64 {
        RATE * (1200 - OVERHEAD) as f64 / 1200.0
    }
}

/// Shares of two flows over [from, to), and the fraction of the bottleneck they filled.
fn shares(net: &bottleneck::Net, from: u64, to: u64) -> (f64, f64, f64) {
    let (from, to) = (Duration::from_secs(from), Duration::from_secs(to));
    let d0 = net.delivered(0, from, to) as f64;
    let d1 = net.delivered(1, from, to) as f64;
    let capacity = bottleneck::payload_capacity() * (to - from).as_secs_f64();
    (d0, d1, (d0 + d1) / capacity)
}

#[test]
fn two_flows_through_one_bottleneck_converge_to_within_twenty_percent_of_each_other() {
    for seed in 1..=5 {
        // The second flow starts about 5 s late, against one that already owns the link.
        let late = Duration::from_millis(5000 + 137 * seed);
        let mut net = bottleneck::Net::new(seed, 0.0, &[(false, Duration::ZERO), (false, late)]);
        net.run_for(Duration::from_secs(45));
        let (d0, d1, used) = shares(&net, 15, 45);
        let cc = net.sender(0).cc.stats;
        eprintln!(
            "seed {seed}: {:.3} / {:.3} of the link, {:.0}% used",
            d0 / (d0 + d1),
            d1 / (d0 + d1),
            used * 100.0
        );
        assert!(
            (d0 - d1).abs() <= 0.2 * d0.max(d1),
            "seed {seed}: {d0} vs {d1} bytes ({cc:?})"
        );
        assert!(
            used > 0.85,
            "seed {seed}: bottleneck {:.0}% used",
            used * 100.0
        );
        assert!(
            net.tail_drops > 0,
            "the queue overflowed: it was a real bottleneck"
        );
    }
}

#[test]
fn a_flow_against_classic_newreno_takes_no_more_than_its_share() {
    for seed in 1..=5 {
        for newreno_first in [false, true] {
            let start = |late| Duration::from_millis(if late { 5000 + 137 * seed } else { 0 });
            let mut net = bottleneck::Net::new(
                seed,
                0.0,
                &[(false, start(newreno_first)), (true, start(!newreno_first))],
            );
            net.run_for(Duration::from_secs(45));
            let (ours, reno, used) = shares(&net, 15, 45);
            let share = ours / (ours + reno);
            eprintln!(
                "seed {seed}, newreno first {newreno_first}: ours {share:.3}, {:.0}% used",
                used * 100.0
            );
            assert!(
                share <= 0.6,
                "seed {seed}, newreno first {newreno_first}: our share {:.0}%",
                share * 100.0
            );
            assert!(
                used > 0.85,
                "seed {seed}: bottleneck {:.0}% used",
                used * 100.0
            );
        }
    }
}

#[test]
fn random_loss_on_an_idle_bottleneck_does_not_shrink_the_window_but_classic_newreno_does() {
    // 2% random loss before the queue: the loss-tolerant controller fills the link, the
    // classic one (every loss round halves) does not; the test tells them apart.
    let used = |classic| {
        let mut net = bottleneck::Net::new(7, 0.02, &[(classic, Duration::ZERO)]);
        net.run_for(Duration::from_secs(20));
        let d = net.delivered(0, Duration::from_secs(5), Duration::from_secs(20)) as f64;
        d / (bottleneck::payload_capacity() * 15.0)
    };
    let (ours, classic) = (used(false), used(true));
    eprintln!("2% loss: ours fills {ours:.3}, classic {classic:.3}");
    assert!(ours > 0.85, "ours {:.0}%", ours * 100.0);
    assert!(classic < 0.6, "classic {:.0}%", classic * 100.0);
}

#[test]
fn a_path_that_reorders_stops_spurious_retransmissions_and_undoes_their_reductions() {
    // No loss at all, but each packet's delay varies by up to 20 ms independently: packets
    // 1 ms apart arrive out of order. Every retransmission here is spurious.
    let mut imp = Impair::clean(25);
    imp.jitter = Duration::from_millis(20);
    let mut p = Pair::new(5, imp);
    let big = Bytes::from(vec![7u8; 1 << 20]);
    p.a.send(
        p.now,
        Channel::RELIABLE_ORDERED,
        big,
        SendOptions::default(),
    )
    .unwrap();
    assert!(p.run_until(Duration::from_secs(60), |p| !p.got_b.is_empty()));
    let (s, cc) = (p.a.stats, p.a.cc.stats);
    eprintln!(
        "reordering: {} of {} packets declared lost, {} retransmits, {} reductions, {} undone",
        s.packets_lost, s.packets_sent, s.retransmits, cc.congestion_events, cc.undone
    );
    assert!(p.a.reorder_window.is_some(), "reordering was noticed");
    assert!(
        s.retransmits * 50 < s.packets_sent,
        "under 2% spurious retransmissions: {} of {}",
        s.retransmits,
        s.packets_sent
    );
    assert_eq!(
        cc.congestion_events, cc.undone,
        "every reduction was undone"
    );
}

/// `a` sends a 64-byte reliable-ordered tick at 60 Hz for `secs` seconds, one step per tick
/// (and `b` one back, so acks ride on data as in a game); returns the delivery latencies of
/// `a`'s ticks, sorted, once all of them arrived. Unlike the blob test above, which lets the
/// pair jump from event to event (ticks then queue up, which is what that test needs), a
/// step here never passes the next tick.
fn tick_latencies(p: &mut Pair, secs: u32) -> Vec<Duration> {
    let start = p.now;
    let tick = Duration::from_micros(16_667);
    let ticks = secs * 60;
    let mut sent_at = Vec::new();
    let mut latencies = Vec::new();
    let mut seen = 0;
    for i in 0..ticks {
        let mut m = i.to_be_bytes().to_vec();
        m.resize(64, 0);
        p.a.send(
            p.now,
            Channel::RELIABLE_ORDERED,
            Bytes::from(m.clone()),
            SendOptions::default(),
        )
        .unwrap();
        p.b.send(
            p.now,
            Channel::RELIABLE_ORDERED,
            Bytes::from(m),
            SendOptions::default(),
        )
        .unwrap();
        sent_at.push(p.now);
        let until = start + tick * (i + 1);
        p.horizon = Some(until);
        p.run_until(until - p.now, |p| p.now >= until);
        let got = payloads_on(&p.got_b, Channel::RELIABLE_ORDERED);
        for &n in &got[seen..] {
            latencies.push(p.now - sent_at[n as usize]);
        }
        seen = got.len();
    }
    p.horizon = None;
    assert!(p.run_until(Duration::from_secs(30), |p| {
        payloads_on(&p.got_b, Channel::RELIABLE_ORDERED).len() == ticks as usize
    }));
    latencies.sort();
    latencies
}

#[test]
fn small_messages_on_a_randomly_lossy_link_ride_copies_and_their_p99_halves() {
    // 200 ms RTT, 10% random loss each way ("poor" in rudp_vs_peers). Without copies a lost
    // tick waits for loss detection (over an RTT) and holds back the ~25 sent after it: p99
    // 0.63 s here (seed 1, COPIES_MAX = 0). With copies in later packets' spare room it
    // arrives a packet later: 0.23 s, the rest being the first seconds, before the
    // connection has measured its loss rate.
    let mut imp = Impair::clean(100);
    imp.loss = 0.10;
    for seed in 1..=3 {
        let mut p = Pair::new(seed, imp);
        let lat = tick_latencies(&mut p, 30);
        let p99 = lat[lat.len() * 99 / 100];
        let copies = p.a.stats.copies;
        eprintln!(
            "seed {seed}: p99 {p99:?}, {copies} copies for {} ticks",
            lat.len()
        );
        assert!(copies > 0, "no copies at 10% loss");
        assert!(
            p99 < Duration::from_millis(300),
            "seed {seed}: p99 {p99:?} at 10% loss"
        );
        // Copies go only to unacknowledged ticks: at most three each.
        assert!(copies <= 3 * lat.len() as u64, "{copies} copies");
    }
    // Switched off, none are sent and a lost tick waits for loss detection again.
    let mut p = Pair::new(1, imp);
    p.a.set_spare_room_copies(false);
    let lat = tick_latencies(&mut p, 30);
    let p99 = lat[lat.len() * 99 / 100];
    eprintln!("copies off: p99 {p99:?}");
    assert_eq!(p.a.stats.copies, 0);
    assert!(
        p99 > Duration::from_millis(400),
        "p99 {p99:?} without copies"
    );
}

#[test]
fn copies_stay_off_on_a_clean_link_at_two_percent_loss_and_when_losses_come_in_bursts() {
    let mut p = Pair::new(4, Impair::clean(50));
    tick_latencies(&mut p, 10);
    assert_eq!(p.a.stats.copies, 0, "copies on a clean link");

    // 2% random loss ("average"): a lost tick costs one loss-detection delay; copies would
    // double the bytes of every tick.
    let mut imp = Impair::clean(50);
    imp.loss = 0.02;
    let mut p = Pair::new(6, imp);
    let lat = tick_latencies(&mut p, 30);
    let copies = p.a.stats.copies;
    eprintln!("2% loss: {copies} copies for {} ticks", lat.len());
    assert!(
        copies < lat.len() as u64 / 20,
        "{copies} copies for {} ticks at 2% loss",
        lat.len()
    );

    // Bursts as on Wi-Fi: rare, long, nearly total (a copy a packet later dies with the
    // original). About 5% loss overall, which random loss would answer with two copies.
    let mut imp = Impair::clean(25);
    imp.ge = (0.005, 0.1, 0.99);
    let mut p = Pair::new(5, imp);
    let lat = tick_latencies(&mut p, 60);
    let lost = p.a.stats.packets_lost;
    let copies = p.a.stats.copies;
    eprintln!(
        "bursts: {lost} packets lost of {}, {copies} copies for {} ticks",
        p.a.stats.packets_sent,
        lat.len()
    );
    assert!(lost > 50, "the bursts lost only {lost} packets");
    assert!(
        copies < lat.len() as u64 / 20,
        "{copies} copies for {} ticks: bursts were taken for random loss",
        lat.len()
    );
}

/// Path-MTU changes as the connection sees them (the rooms `write` is given).
mod path_mtu;
