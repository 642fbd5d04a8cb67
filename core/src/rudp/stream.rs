//! A reliable, ordered stream of small messages: the control channel of every server session
//! (group membership, pair keys, rooms, reliable application messages to and from the server).
//!
//! Each message rides in one `Stream { seq, data }` frame; the receiver answers with
//! `StreamAck { next, mask }`: everything below `next` arrived, and bit `i` of `mask` says
//! `next + 1 + i` arrived too, so the sender does not resend what got through out of order.
//! Retransmission follows RFC 6298 (Karn's rule for samples, doubling backoff).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::rtt::{MAX_RTO, RttEstimator};
use crate::arena::Arena;
use crate::time::{Duration, Instant};
use crate::wire::Writer;
use crate::wire::frame::Frame;

/// Messages in flight at once (unacknowledged and sent).
const SEND_WINDOW: usize = 64;
/// How far ahead of the next expected message the receiver buffers.
const RECV_WINDOW: u32 = 256;

/// The stream's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamFull;

#[derive(Debug)]
struct Outgoing {
    seq: u32,
    data: Bytes,
    /// Last transmission.
    sent: Option<Instant>,
    /// Transmissions so far.
    tries: u32,
    /// Selectively acknowledged; kept only until everything before it is acknowledged.
    acked: bool,
}

/// Arena chunk of a control stream.
const CONTROL_ARENA_CHUNK: usize = 1024;

/// One end of a reliable ordered message stream.
#[derive(Debug)]
pub(crate) struct ControlStream {
    rtt: RttEstimator,
    next_seq: u32,
    unacked: VecDeque<Outgoing>,
    /// Most messages queued and unacknowledged at once.
    max_queued: usize,
    recv_next: u32,
    recv_buf: BTreeMap<u32, Bytes>,
    delivered: VecDeque<Bytes>,
    ack_due: bool,
    arena: Arena,
    /// Retransmissions so far.
    pub(crate) retransmits: u64,
}

impl ControlStream {
    pub(crate) fn new(max_queued: usize) -> Self {
        Self {
            rtt: RttEstimator::default(),
            next_seq: 0,
            unacked: VecDeque::new(),
            max_queued,
            recv_next: 0,
            recv_buf: BTreeMap::new(),
            delivered: VecDeque::new(),
            ack_due: false,
            // Control messages are few and small; a server keeps one stream per client, so
            // a 64 KiB datagram-path chunk here would cost 64 KiB per client.
            arena: Arena::with_chunk(CONTROL_ARENA_CHUNK),
            retransmits: 0,
        }
    }

    /// Queues a message.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<(), StreamFull> {
        if self.unacked.len() >= self.max_queued || self.next_seq == u32::MAX {
            return Err(StreamFull);
        }
        let data = self.arena.copy(data);
        self.unacked.push_back(Outgoing {
            seq: self.next_seq,
            data,
            sent: None,
            tries: 0,
            acked: false,
        });
        self.next_seq += 1;
        Ok(())
    }

    /// Messages queued and not yet acknowledged.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.unacked.len()
    }

    /// Smoothed RTT of the link.
    pub(crate) fn srtt(&self) -> Duration {
        self.rtt.srtt()
    }

    /// The smoothed RTT, once a sample came.
    pub(crate) fn measured_srtt(&self) -> Option<Duration> {
        self.rtt.measured()
    }

    fn due_at(&self, o: &Outgoing) -> Option<Instant> {
        if o.acked {
            return None;
        }
        let sent = o.sent?;
        let backoff = self
            .rtt
            .rto()
            .saturating_mul(1 << o.tries.saturating_sub(1).min(8))
            .min(MAX_RTO);
        Some(sent + backoff)
    }

    /// True if a packet should be sent now: an ack is owed or a message is (re)due.
    pub(crate) fn wants_transmit(&self, now: Instant) -> bool {
        self.ack_due
            || self
                .unacked
                .iter()
                .take(SEND_WINDOW)
                .any(|o| !o.acked && (o.sent.is_none() || self.due_at(o).is_some_and(|d| d <= now)))
    }

    /// When the next retransmission is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.unacked
            .iter()
            .take(SEND_WINDOW)
            .filter_map(|o| self.due_at(o))
            .min()
    }

    /// Writes an ack if one is owed and every due message that fits.
    pub(crate) fn write(&mut self, now: Instant, w: &mut Writer<'_>) {
        if self.ack_due {
            let ack = self.ack_frame();
            if ack.encoded_len() <= w.remaining() {
                let _ = ack.encode(w);
                self.ack_due = false;
            }
        }
        let rto = self.rtt.rto();
        for o in self.unacked.iter_mut().take(SEND_WINDOW) {
            if o.acked {
                continue;
            }
            let due = match o.sent {
                None => true,
                Some(sent) => {
                    now >= sent
                        + rto
                            .saturating_mul(1 << o.tries.saturating_sub(1).min(8))
                            .min(MAX_RTO)
                }
            };
            if !due {
                continue;
            }
            let f = Frame::Stream {
                seq: o.seq,
                data: &o.data,
            };
            if f.encoded_len() > w.remaining() {
                break;
            }
            let _ = f.encode(w);
            if o.sent.is_some() {
                self.retransmits += 1;
            }
            o.sent = Some(now);
            o.tries += 1;
        }
    }

    fn ack_frame(&self) -> Frame<'static> {
        let mut mask = 0u32;
        for &seq in self.recv_buf.keys() {
            let off = seq.wrapping_sub(self.recv_next).wrapping_sub(1);
            if off < 32 {
                mask |= 1 << off;
            }
        }
        Frame::StreamAck {
            next: self.recv_next,
            mask,
        }
    }

    /// A `Stream` frame arrived.
    pub(crate) fn handle_data(&mut self, seq: u32, data: &[u8]) {
        self.ack_due = true;
        if seq < self.recv_next || seq - self.recv_next >= RECV_WINDOW {
            return; // duplicate, or too far ahead to buffer: the sender will resend
        }
        if seq == self.recv_next {
            self.delivered.push_back(self.arena.copy(data));
            self.recv_next += 1;
            while let Some(d) = self.recv_buf.remove(&self.recv_next) {
                self.delivered.push_back(d);
                self.recv_next += 1;
            }
        } else if !self.recv_buf.contains_key(&seq) {
            let d = self.arena.copy(data);
            self.recv_buf.insert(seq, d);
        }
    }

    /// A `StreamAck` frame arrived; returns the round-trip sample it gave, if any (a
    /// message acknowledged on its first transmission).
    pub(crate) fn handle_ack(&mut self, now: Instant, next: u32, mask: u32) -> Option<Duration> {
        if next > self.next_seq {
            return None; // acknowledges what was never sent: ignore
        }
        let mut sample = None;
        for o in self.unacked.iter_mut() {
            let newly = if o.seq < next {
                true
            } else {
                let off = o.seq - next;
                (1..=32).contains(&off) && mask & (1 << (off - 1)) != 0
            };
            if newly && !o.acked {
                o.acked = true;
                if o.tries == 1 {
                    if let Some(sent) = o.sent {
                        sample = Some(now.saturating_duration_since(sent));
                    }
                }
            }
        }
        if let Some(s) = sample {
            self.rtt.update(s);
        }
        while self.unacked.front().is_some_and(|o| o.acked) {
            self.unacked.pop_front();
        }
        sample
    }

    /// The next message delivered in order.
    pub(crate) fn poll_delivered(&mut self) -> Option<Bytes> {
        self.delivered.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::Frames;

    /// Moves frames from `a` to `b` through a lossy pipe; returns nothing, mutates both.
    fn pump(now: Instant, from: &mut ControlStream, to: &mut ControlStream, deliver: bool) {
        let mut buf = [0u8; 1100];
        let mut w = Writer::new(&mut buf);
        from.write(now, &mut w);
        let n = w.len();
        if !deliver {
            return;
        }
        for f in Frames::new(&buf[..n]) {
            match f.unwrap() {
                Frame::Stream { seq, data } => to.handle_data(seq, data),
                Frame::StreamAck { next, mask } => {
                    to.handle_ack(now, next, mask);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn delivers_in_order_exactly_once_through_loss() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(3);
        let mut a = ControlStream::new(10_000);
        let mut b = ControlStream::new(10_000);
        for i in 0..500u32 {
            a.push(&i.to_be_bytes()).unwrap();
        }
        let mut now = crate::tests::epoch();
        let mut got = Vec::new();
        for _ in 0..5000 {
            pump(now, &mut a, &mut b, rng.random_bool(0.7));
            pump(now, &mut b, &mut a, rng.random_bool(0.7));
            while let Some(d) = b.poll_delivered() {
                got.push(u32::from_be_bytes(d[..4].try_into().unwrap()));
            }
            now += Duration::from_millis(20);
        }
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        assert_eq!(a.queued(), 0, "everything acknowledged");
        assert!(a.retransmits > 0);
    }

    #[test]
    fn selective_acks_spare_what_arrived() {
        let mut a = ControlStream::new(100);
        let mut b = ControlStream::new(100);
        let t0 = crate::tests::epoch();
        for i in 0..3u8 {
            a.push(&[i]).unwrap();
        }
        // Send all three; lose them; only #1 and #2 get through on a manual path.
        let mut buf = [0u8; 200];
        let mut w = Writer::new(&mut buf);
        a.write(t0, &mut w);
        b.handle_data(1, &[1]);
        b.handle_data(2, &[2]);
        assert!(b.poll_delivered().is_none(), "waits for #0");
        pump(t0, &mut b, &mut a, true);
        // Retransmission time: only #0 goes again.
        let later = t0 + Duration::from_secs(1);
        let mut buf = [0u8; 200];
        let mut w = Writer::new(&mut buf);
        a.write(later, &mut w);
        let n = w.len();
        let seqs: Vec<u32> = Frames::new(&buf[..n])
            .filter_map(|f| match f.unwrap() {
                Frame::Stream { seq, .. } => Some(seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![0]);
    }

    #[test]
    fn a_full_queue_refuses_more() {
        let mut a = ControlStream::new(2);
        a.push(b"1").unwrap();
        a.push(b"2").unwrap();
        assert_eq!(a.push(b"3"), Err(StreamFull));
    }
}
