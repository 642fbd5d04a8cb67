//! The harness: one deterministic drive loop in virtual time for every contender.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bytes::Bytes;

use crate::checks::Checks;
use crate::link::{Arrival, Net};
use crate::measure::{allocs, thread_cpu};
use crate::workload::{BLOB_SIZE, DRAIN_CAP, UNRELIABLE_TAIL, Workload, tick_time};

/// What a contender sees of the world during one call.
pub(crate) struct Cx<'a> {
    pub(crate) t: Duration,
    pub(crate) net: &'a mut Net,
    pub(crate) check: &'a mut Checks,
}

/// A contender's whole mesh. The harness calls `send`/`send_blob` at ticks, then `tick` for
/// every peer; `receive` when a datagram arrives; `timers` when `next_timer` is due.
pub(crate) trait Mesh {
    fn send(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, msg: Bytes);
    fn send_blob(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, blob: &Bytes);
    fn tick(&mut self, cx: &mut Cx<'_>, peer: usize);
    fn receive(&mut self, cx: &mut Cx<'_>, a: Arrival);
    fn next_timer(&mut self) -> Option<Duration> {
        None
    }
    fn timers(&mut self, _cx: &mut Cx<'_>) {}
}

/// One run's raw results.
pub(crate) struct Run {
    pub(crate) cpu: Duration,
    pub(crate) lat: Vec<(u32, u32)>,
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) wire: u64,
    pub(crate) aead: u64,
    pub(crate) dgrams: u64,
    pub(crate) payload: u64,
    pub(crate) allocs_per_dgram: f64,
    pub(crate) blob_start: Option<Duration>,
    pub(crate) blob_done: Option<Duration>,
    pub(crate) finished: bool,
    pub(crate) failed: Option<&'static str>,
}

pub(crate) fn drive<M: Mesh>(
    mesh: &mut M,
    net: &mut Net,
    check: &mut Checks,
    wl: &Workload,
) -> Run {
    let n = wl.peers;
    let name = check.name;
    let cpu0 = thread_cpu();
    let mut t = Duration::ZERO;
    let mut tick = 0u64;
    let mut sending = true;
    let mut last_msg_tick = Duration::ZERO;
    let mut steady_from: Option<(u64, u64)> = None;
    let mut steady_to: Option<(u64, u64)> = None;
    let mut finished = true;
    loop {
        let mut cx = Cx {
            t,
            net: &mut *net,
            check: &mut *check,
        };
        while let Some(a) = cx.net.pop_due(t) {
            mesh.receive(&mut cx, a);
        }
        if mesh.next_timer().is_some_and(|d| d <= t) {
            mesh.timers(&mut cx);
        }
        if t >= tick_time(tick) {
            if sending {
                for p in 0..n {
                    for q in (0..n).filter(|&q| q != p) {
                        for _ in 0..wl.per_tick {
                            let msg = cx.check.next_message(p, q);
                            mesh.send(&mut cx, p, q, msg);
                        }
                    }
                }
                if wl.blob_at == Some(tick) {
                    cx.check.blob_start = Some(t);
                    let blob = cx.check.blob_src.clone();
                    mesh.send_blob(&mut cx, 0, 1, &blob);
                }
            }
            for p in 0..n {
                mesh.tick(&mut cx, p);
            }
            if sending {
                last_msg_tick = t;
                let blob_pending = wl.blob_at.is_some() && cx.check.blob_done.is_none();
                sending = tick + 1 < wl.ticks || blob_pending && tick + 1 < wl.max_ticks();
                if !sending {
                    steady_to = Some((allocs(), cx.net.dgrams()));
                }
            }
            tick += 1;
        }
        if steady_from.is_none() && t >= tick_time(wl.ticks / 5) {
            steady_from = Some((allocs(), net.dgrams()));
        }
        if !sending {
            let done = if wl.reliable {
                check.all_delivered() && (wl.blob_at.is_none() || check.blob_done.is_some())
            } else {
                t >= last_msg_tick + UNRELIABLE_TAIL
            };
            if done {
                break;
            }
        }
        if t >= last_msg_tick + DRAIN_CAP || check.failed.is_some() {
            // Did not finish: reported as such, with percentiles over what was delivered.
            finished = false;
            break;
        }
        let next = [net.next_at(), Some(tick_time(tick)), mesh.next_timer()]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        // Something due now that was already handled (a pacer rounding to now): step a µs.
        t = next.max(t + Duration::from_micros(1));
    }
    let cpu = thread_cpu() - cpu0;
    let (Some((a0, d0)), Some((a1, d1))) = (steady_from, steady_to) else {
        panic!("{name}: run ended before the allocation window closed");
    };
    let sent: u64 = check.flows.iter().map(|f| u64::from(f.sent)).sum();
    Run {
        cpu,
        lat: std::mem::take(&mut check.lat),
        sent,
        delivered: check.delivered(),
        wire: net.links.iter().map(|l| l.bytes).sum(),
        aead: net.links.iter().map(|l| l.aead).sum(),
        dgrams: net.dgrams(),
        payload: sent * wl.size as u64
            + if wl.blob_at.is_some() {
                BLOB_SIZE as u64
            } else {
                0
            },
        allocs_per_dgram: (a1 - a0) as f64 / (d1 - d0).max(1) as f64,
        blob_start: check.blob_start,
        blob_done: check.blob_done,
        finished,
        failed: check.failed,
    }
}

/// Per-endpoint deadlines with a lazily pruned min-heap, so that finding the next one does
/// not scan every endpoint of an N = 8 mesh after every event.
pub(crate) struct Timers {
    at: Vec<Option<Duration>>,
    heap: BinaryHeap<Reverse<(Duration, usize)>>,
    pub(crate) due: Vec<usize>,
}

impl Timers {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            at: vec![None; n],
            heap: BinaryHeap::with_capacity(1 << 16),
            due: Vec::with_capacity(n),
        }
    }

    pub(crate) fn set(&mut self, idx: usize, at: Option<Duration>) {
        if self.at[idx] != at {
            self.at[idx] = at;
            if let Some(d) = at {
                self.heap.push(Reverse((d, idx)));
            }
        }
    }

    pub(crate) fn next(&mut self) -> Option<Duration> {
        while let Some(&Reverse((d, idx))) = self.heap.peek() {
            if self.at[idx] == Some(d) {
                return Some(d);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes every endpoint due by `t` into `self.due` (each once, even if handling it
    /// schedules it again at `t`).
    pub(crate) fn take_due(&mut self, t: Duration) {
        self.due.clear();
        while self.next().is_some_and(|d| d <= t) {
            let Reverse((_, idx)) = self.heap.pop().unwrap();
            self.at[idx] = None;
            self.due.push(idx);
        }
    }
}
