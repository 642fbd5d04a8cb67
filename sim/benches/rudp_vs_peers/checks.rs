//! Delivery checks: reliable means exactly once, in order, intact; sequenced never goes back.

use std::time::Duration;

use bytes::Bytes;

use crate::workload::{BLOB_SIZE, Workload, tick_time};

/// One directed flow's delivery state.
#[derive(Clone, Copy, Default)]
pub(crate) struct Flow {
    pub(crate) sent: u32,
    /// Reliable: next to deliver. Sequenced: one past the newest delivered.
    next: u32,
    delivered: u32,
    /// Stale messages the application dropped (renet's unreliable channel only).
    stale: u32,
}

/// Checks every delivery and records latencies.
pub(crate) struct Checks {
    pub(crate) name: &'static str,
    n: usize,
    size: usize,
    per_tick: usize,
    reliable: bool,
    /// Drop stale unreliable messages (the application's job on renet) instead of panicking.
    app_sequencing: bool,
    /// All messages of one flow back to back; message `i` starts with `i` (u32 BE).
    src: Bytes,
    pub(crate) flows: Vec<Flow>,
    /// (tick that queued it, latency µs) per delivered message.
    pub(crate) lat: Vec<(u32, u32)>,
    pub(crate) blob_src: Bytes,
    blob_got: usize,
    pub(crate) blob_start: Option<Duration>,
    pub(crate) blob_done: Option<Duration>,
    /// Set when a contender dropped a connection: the run stops, marked as not finished.
    pub(crate) failed: Option<&'static str>,
}

impl Checks {
    pub(crate) fn new(
        name: &'static str,
        wl: &Workload,
        src: &Bytes,
        blob: &Bytes,
        app_seq: bool,
    ) -> Self {
        let n = wl.peers;
        let cap = n * (n - 1) * wl.max_ticks() as usize * wl.per_tick;
        Self {
            name,
            n,
            size: wl.size,
            per_tick: wl.per_tick,
            reliable: wl.reliable,
            app_sequencing: app_seq,
            src: src.clone(),
            flows: vec![Flow::default(); n * n],
            lat: Vec::with_capacity(cap.min(1 << 22)),
            blob_src: blob.clone(),
            blob_got: 0,
            blob_start: None,
            blob_done: None,
            failed: None,
        }
    }

    pub(crate) fn fail(&mut self, why: &'static str) {
        self.failed.get_or_insert(why);
    }

    /// The next message from `from` to `to`, counted as sent.
    pub(crate) fn next_message(&mut self, from: usize, to: usize) -> Bytes {
        let f = &mut self.flows[from * self.n + to];
        let i = f.sent as usize;
        f.sent += 1;
        self.src.slice(i * self.size..(i + 1) * self.size)
    }

    /// A tick message delivered to `to` from `from` at `t`.
    pub(crate) fn tick(&mut self, t: Duration, to: usize, from: usize, msg: &[u8]) {
        let name = self.name;
        let f = &mut self.flows[from * self.n + to];
        let Some(seq) = msg
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
        else {
            panic!("{name}: {}-byte message {from}->{to}", msg.len());
        };
        let i = seq as usize;
        assert!(
            seq < f.sent && msg == &self.src[i * self.size..(i + 1) * self.size],
            "{name}: {from}->{to} delivered a message that was never sent (id {seq}, {} bytes)",
            msg.len()
        );
        if self.reliable {
            assert!(
                seq == f.next,
                "{name}: {from}->{to} delivered message {seq} when {} was next: not exactly once in order",
                f.next
            );
        } else if seq < f.next {
            assert!(
                self.app_sequencing,
                "{name}: {from}->{to} delivered message {seq} after {}: sequenced delivery broken",
                f.next - 1
            );
            f.stale += 1;
            return;
        }
        f.next = seq + 1;
        f.delivered += 1;
        let tick = seq / self.per_tick as u32;
        let lat = t - tick_time(u64::from(tick));
        self.lat.push((tick, lat.as_micros() as u32));
    }

    /// A part of the blob delivered (in order; whole for all but kcp).
    pub(crate) fn blob(&mut self, t: Duration, chunk: &[u8]) {
        let end = self.blob_got + chunk.len();
        assert!(
            end <= BLOB_SIZE && chunk == &self.blob_src[self.blob_got..end],
            "{}: blob corrupted or delivered twice ({} bytes at offset {})",
            self.name,
            chunk.len(),
            self.blob_got
        );
        self.blob_got = end;
        if end == BLOB_SIZE {
            self.blob_done = Some(t);
        }
    }

    pub(crate) fn all_delivered(&self) -> bool {
        self.flows.iter().all(|f| f.delivered == f.sent)
    }

    pub(crate) fn delivered(&self) -> u64 {
        self.flows.iter().map(|f| u64::from(f.delivered)).sum()
    }
}
