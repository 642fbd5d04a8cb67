//! Pierce: `pierce_core::reliability::Connection`, one per remote peer.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pierce_core::reliability::{ACK_RESERVE, ConnEvent, Connection, Limits};
use pierce_core::wire::Writer;
use pierce_core::wire::frame::{MESSAGE_FRAME_OVERHEAD, decode_all};
use pierce_core::wire::sealed::OVERHEAD as AEAD_OVERHEAD;
use pierce_core::{Channel, ChannelConfig, Delivery, SendOptions};

use crate::harness::{Cx, Mesh, Timers};
use crate::link::{Arrival, Route};
use crate::workload::{BLOB_SIZE, MTU, Workload};

/// `ClientConfig`'s defaults; "fast" acks within 5 ms instead of 20 (twice the packets,
/// losses found sooner).
fn pierce_limits(fast: bool) -> Limits {
    Limits {
        fragment_size: MTU - AEAD_OVERHEAD - MESSAGE_FRAME_OVERHEAD - ACK_RESERVE,
        max_message_size: BLOB_SIZE,
        max_reassembly_bytes: 4 << 20,
        max_send_buffer: 8 << 20,
        mtu: MTU,
        ack_delay: Duration::from_millis(if fast { 5 } else { 20 }),
    }
}

struct PierceEnd {
    conn: Connection,
    /// Next packet number.
    pn: u64,
}

pub(crate) struct PierceMesh {
    n: usize,
    epoch: Instant,
    /// `ends[p * n + q]`: peer p's connection to peer q (the diagonal is unused).
    ends: Vec<PierceEnd>,
    /// `poll_timeout` of each end as of its last flush.
    timers: Timers,
    pool: Vec<Vec<u8>>,
    tick_ch: Channel,
    blob_ch: Channel,
}

impl PierceMesh {
    pub(crate) fn new(wl: &Workload, fast: bool, epoch: Instant) -> Self {
        let mut channels = ChannelConfig::defaults();
        let blob_ch = if fast {
            channels.push(ChannelConfig {
                delivery: Delivery::ReliableOrdered,
                priority: 0,
            });
            Channel(channels.len() as u8 - 1)
        } else {
            Channel::RELIABLE_UNORDERED
        };
        let n = wl.peers;
        Self {
            n,
            epoch,
            ends: (0..n * n)
                .map(|_| PierceEnd {
                    conn: Connection::new(&channels, pierce_limits(fast)),
                    pn: 0,
                })
                .collect(),
            timers: Timers::new(n * n),
            pool: (0..512).map(|_| vec![0; MTU - AEAD_OVERHEAD]).collect(),
            tick_ch: if wl.reliable {
                Channel::RELIABLE_ORDERED
            } else {
                Channel::UNRELIABLE_SEQUENCED
            },
            blob_ch,
        }
    }

    /// Writes packets while the connection wants to (frames only: the sealed header and tag
    /// are counted as `AEAD_OVERHEAD` bytes, not written), hands out its events and records
    /// its next deadline.
    fn flush(&mut self, cx: &mut Cx<'_>, idx: usize) {
        let now = self.epoch + cx.t;
        let (p, q) = (idx / self.n, idx % self.n);
        let e = &mut self.ends[idx];
        while e.conn.wants_transmit(now) {
            let mut buf = self
                .pool
                .pop()
                .unwrap_or_else(|| vec![0; MTU - AEAD_OVERHEAD]);
            let len = e
                .conn
                .write(now, e.pn, AEAD_OVERHEAD, &mut Writer::new(&mut buf));
            if len == 0 {
                self.pool.push(buf);
                break;
            }
            let route = Route { from: p, to: q };
            if let Some(lost) = cx.net.send(cx.t, route, e.pn, buf, len, AEAD_OVERHEAD) {
                self.pool.push(lost);
            }
            e.pn += 1;
        }
        while let Some(ev) = e.conn.poll_event() {
            match ev {
                ConnEvent::Message { channel, payload } if channel == self.tick_ch => {
                    cx.check.tick(cx.t, p, q, &payload);
                }
                ConnEvent::Message { channel, payload } if channel == self.blob_ch => {
                    cx.check.blob(cx.t, &payload);
                }
                ev => panic!("pierce: {p} saw {ev:?} from {q}"),
            }
        }
        if let Some(v) = e.conn.violation() {
            panic!("pierce: {p} dropped {q}: {v:?}");
        }
        let at = e.conn.poll_timeout();
        self.timers
            .set(idx, at.map(|d| d.saturating_duration_since(self.epoch)));
    }
}

impl Mesh for PierceMesh {
    fn send(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, msg: Bytes) {
        let now = self.epoch + cx.t;
        let conn = &mut self.ends[from * self.n + to].conn;
        if let Err(e) = conn.send(now, self.tick_ch, msg, SendOptions::default()) {
            panic!("pierce: send {from}->{to} failed: {e}");
        }
    }

    fn send_blob(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, blob: &Bytes) {
        let now = self.epoch + cx.t;
        let conn = &mut self.ends[from * self.n + to].conn;
        if let Err(e) = conn.send(now, self.blob_ch, blob.clone(), SendOptions::default()) {
            panic!("pierce: blob send failed: {e}");
        }
    }

    fn tick(&mut self, cx: &mut Cx<'_>, peer: usize) {
        for q in (0..self.n).filter(|&q| q != peer) {
            self.flush(cx, peer * self.n + q);
        }
    }

    /// Feeds the datagram as the receive path does after opening it.
    fn receive(&mut self, cx: &mut Cx<'_>, a: Arrival) {
        let now = self.epoch + cx.t;
        let idx = a.to * self.n + a.from;
        {
            let frames = decode_all(&a.buf[..a.len])
                .unwrap_or_else(|e| panic!("pierce: undecodable frame: {e}"));
            let conn = &mut self.ends[idx].conn;
            conn.handle_packet(now, a.pn, a.len + AEAD_OVERHEAD, &frames);
        }
        self.pool.push(a.buf);
        self.flush(cx, idx);
    }

    fn next_timer(&mut self) -> Option<Duration> {
        self.timers.next()
    }

    fn timers(&mut self, cx: &mut Cx<'_>) {
        let now = self.epoch + cx.t;
        self.timers.take_due(cx.t);
        for k in 0..self.timers.due.len() {
            let idx = self.timers.due[k];
            self.ends[idx].conn.handle_timeout(now);
            self.flush(cx, idx);
        }
    }
}
