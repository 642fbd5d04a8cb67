//! Arbitrary sequences of sends, deliveries, losses, duplications, reorderings and timeouts
//! between two reliability state machines. Invariant: reliable-ordered messages are delivered
//! exactly once and in order; once the network heals every one of them arrives (or, if it
//! had a retry budget, is reported expired instead — never both, never neither). If the pair
//! ends instead (both sides abandon the connection mid-way), every one is delivered or
//! reported expired (both only when its acknowledgement was lost), never neither. The room
//! each side's packets have changes at will (path-MTU discovery raising it, a black hole
//! dropping it back): fragments cut for a larger packet are split to fit a smaller one.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pierce_core::reliability::{ConnEvent, Connection, Limits};
use pierce_core::wire::Writer;
use pierce_core::wire::frame::decode_all;
use pierce_core::{Channel, ChannelConfig, SendOptions};

#[derive(Arbitrary, Debug)]
enum Op {
    Send {
        channel: u8,
        len: u16,
        budget: Option<u8>,
    },
    Transmit {
        from_a: bool,
    },
    Deliver {
        to_b: bool,
        index: u8,
        duplicate: bool,
    },
    Drop {
        to_b: bool,
        index: u8,
    },
    Advance {
        ms: u16,
    },
    /// The pair ends: both sides abandon their connection.
    End,
    /// One side's path-MTU changes: its packets get the base room or a larger one.
    Mtu {
        from_a: bool,
        large: bool,
    },
}

/// Packet sizes (with the 32 bytes of overhead) at the base and after a larger probe.
const BASE: usize = 400;
const LARGE: usize = 560;

struct Side {
    conn: Connection,
    /// Bytes of a packet's frames.
    room: usize,
    pn: u64,
    wire: Vec<(u64, Vec<u8>)>,
    seen: BTreeSet<u64>,
}

fn limits() -> Limits {
    Limits {
        fragment_size: 300,
        max_message_size: 4096,
        max_reassembly_bytes: 64 * 1024,
        max_send_buffer: 256 * 1024,
        mtu: BASE,
        ack_delay: Duration::from_millis(20),
    }
}

fn transmit(now: Instant, s: &mut Side) {
    for _ in 0..8 {
        if !s.conn.wants_transmit(now) {
            return;
        }
        let mut buf = [0u8; LARGE];
        let mut w = Writer::new(&mut buf[..s.room]);
        let n = s.conn.write(now, s.pn, 32, &mut w);
        if n == 0 {
            return;
        }
        s.wire.push((s.pn, buf[..n].to_vec()));
        s.pn += 1;
    }
}

fn deliver(now: Instant, to: &mut Side, pn: u64, bytes: &[u8]) {
    if !to.seen.insert(pn) {
        return; // the AEAD replay window's job
    }
    let frames = decode_all(bytes).expect("our own encoding decodes");
    to.conn.handle_packet(now, pn, bytes.len() + 32, &frames);
}

fuzz_target!(|ops: Vec<Op>| {
    let ch = ChannelConfig::defaults();
    let mut now = Instant::now();
    let mut a = Side {
        conn: Connection::new(&ch, limits()),
        room: BASE - 32,
        pn: 0,
        wire: Vec::new(),
        seen: BTreeSet::new(),
    };
    let mut b = Side {
        conn: Connection::new(&ch, limits()),
        room: BASE - 32,
        pn: 0,
        wire: Vec::new(),
        seen: BTreeSet::new(),
    };
    let mut next = 0u32;
    let mut sent: BTreeMap<u32, pierce_core::MessageId> = BTreeMap::new();
    let mut got: Vec<u32> = Vec::new();
    let mut expired: BTreeSet<pierce_core::MessageId> = BTreeSet::new();
    let collect = |a: &mut Side, b: &mut Side, got: &mut Vec<u32>, expired: &mut BTreeSet<_>| {
        while let Some(e) = b.conn.poll_event() {
            if let ConnEvent::Message { channel, payload } = e
                && channel == Channel::RELIABLE_ORDERED
            {
                got.push(u32::from_be_bytes(
                    payload[..4].try_into().expect("4 bytes"),
                ));
            }
        }
        while let Some(e) = a.conn.poll_event() {
            if let ConnEvent::Expired { id, .. } = e {
                assert!(expired.insert(id), "expired twice");
            }
        }
    };
    let mut ended = false;
    for op in ops.iter().take(300) {
        match *op {
            Op::End => {
                a.conn.abandon();
                b.conn.abandon();
                ended = true;
            }
            Op::Send {
                channel,
                len,
                budget,
            } => {
                let channel = Channel(channel % 5);
                let mut p = vec![0u8; (len as usize % 2000).max(4)];
                p[..4].copy_from_slice(&next.to_be_bytes());
                let opts = SendOptions {
                    deadline: None,
                    max_retransmits: budget.map(u32::from),
                };
                if let Ok(id) = a.conn.send(now, channel, Bytes::from(p), opts) {
                    if channel == Channel::RELIABLE_ORDERED {
                        sent.insert(next, id);
                    }
                    next += 1;
                }
            }
            Op::Transmit { from_a } => transmit(now, if from_a { &mut a } else { &mut b }),
            Op::Mtu { from_a, large } => {
                let s = if from_a { &mut a } else { &mut b };
                let size = if large { LARGE } else { BASE };
                s.room = size - 32;
                s.conn.set_path_mtu(size);
            }
            Op::Deliver {
                to_b,
                index,
                duplicate,
            } => {
                let (from, to) = if to_b {
                    (&mut a, &mut b)
                } else {
                    (&mut b, &mut a)
                };
                if !from.wire.is_empty() {
                    let i = index as usize % from.wire.len();
                    let (pn, bytes) = if duplicate {
                        from.wire[i].clone()
                    } else {
                        from.wire.remove(i)
                    };
                    deliver(now, to, pn, &bytes);
                }
            }
            Op::Drop { to_b, index } => {
                let from = if to_b { &mut a } else { &mut b };
                if !from.wire.is_empty() {
                    let i = index as usize % from.wire.len();
                    from.wire.remove(i);
                }
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms % 2000));
                a.conn.handle_timeout(now);
                b.conn.handle_timeout(now);
            }
        }
        collect(&mut a, &mut b, &mut got, &mut expired);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "ordered channel out of order or duplicated: {got:?}"
        );
        if ended {
            break;
        }
    }
    // Heal the network and run until quiet (unless the pair ended).
    for _ in 0..if ended { 0 } else { 20_000 } {
        transmit(now, &mut a);
        transmit(now, &mut b);
        for (pn, bytes) in std::mem::take(&mut a.wire) {
            deliver(now, &mut b, pn, &bytes);
        }
        for (pn, bytes) in std::mem::take(&mut b.wire) {
            deliver(now, &mut a, pn, &bytes);
        }
        collect(&mut a, &mut b, &mut got, &mut expired);
        // Quiet: nothing to send and no timer pending (a delayed ack of a floor, say).
        let quiet = !a.conn.wants_transmit(now)
            && !b.conn.wants_transmit(now)
            && a.conn.poll_timeout().is_none()
            && b.conn.poll_timeout().is_none();
        if quiet {
            break;
        }
        now += Duration::from_millis(10);
        a.conn.handle_timeout(now);
        b.conn.handle_timeout(now);
    }
    assert_eq!(
        a.conn.unacked(),
        0,
        "everything acknowledged or expired once healed"
    );
    let got_set: BTreeSet<u32> = got.iter().copied().collect();
    for (seq, id) in &sent {
        let delivered = got_set.contains(seq);
        let gone = expired.contains(id);
        assert!(
            delivered || gone,
            "message {seq} neither delivered nor reported expired"
        );
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]));
});
