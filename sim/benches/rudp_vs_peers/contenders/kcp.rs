//! kcp: one `Kcp` per directed pair, plus a second conversation for the blob.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kcp::Kcp;

use crate::harness::{Cx, Mesh, Timers};
use crate::link::{Arrival, Route};
use crate::workload::{KCP_BLOB_CHUNK, MTU, Workload};

const KCP_TICK_CONV: u32 = 1;
const KCP_BLOB_CONV: u32 = 2;

/// What every `Kcp` of a mesh wrote, in order, with a pool of buffers.
#[derive(Default)]
struct KcpWire {
    out: Vec<(Route, Vec<u8>)>,
    pool: Vec<Vec<u8>>,
}

/// A `Kcp`'s output: each `write` is one datagram.
struct KcpOut {
    route: Route,
    wire: Rc<RefCell<KcpWire>>,
}

impl io::Write for KcpOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.wire.borrow_mut();
        let mut v = w.pool.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(buf);
        w.out.push((self.route, v));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) struct KcpMesh {
    n: usize,
    /// `ends[p * n + q]`: peer p's conversation with peer q (the diagonal is unused); then,
    /// with the blob, `ends[n * n]` is peer 0's blob conversation and `ends[n * n + 1]` peer
    /// 1's.
    ends: Vec<Kcp<KcpOut>>,
    /// Next `update` time of each end (whole milliseconds).
    timers: Timers,
    wire: Rc<RefCell<KcpWire>>,
    rbuf: Vec<u8>,
}

impl KcpMesh {
    pub(crate) fn new(wl: &Workload, fast: bool) -> Self {
        let n = wl.peers;
        let wire = Rc::new(RefCell::new(KcpWire {
            out: Vec::with_capacity(1024),
            pool: (0..512).map(|_| Vec::with_capacity(MTU)).collect(),
        }));
        let make = |conv, from, to| {
            let out = KcpOut {
                route: Route { from, to },
                wire: Rc::clone(&wire),
            };
            let mut k = Kcp::new(conv, out);
            k.set_mtu(MTU).unwrap();
            if fast {
                k.set_nodelay(true, 10, 2, true);
                k.set_wndsize(128, 512);
            }
            k
        };
        let mut ends: Vec<_> = (0..n * n)
            .map(|i| make(KCP_TICK_CONV, i / n, i % n))
            .collect();
        if wl.blob_at.is_some() {
            ends.push(make(KCP_BLOB_CONV, 0, 1));
            ends.push(make(KCP_BLOB_CONV, 1, 0));
        }
        let mut timers = Timers::new(ends.len());
        for idx in 0..ends.len() {
            if idx >= n * n || idx / n != idx % n {
                timers.set(idx, Some(Duration::ZERO));
            }
        }
        Self {
            n,
            timers,
            ends,
            wire,
            rbuf: vec![0; KCP_BLOB_CHUNK],
        }
    }

    fn flush_wire(&mut self, cx: &mut Cx<'_>) {
        let mut out = std::mem::take(&mut self.wire.borrow_mut().out);
        for (route, v) in out.drain(..) {
            let len = v.len();
            if let Some(lost) = cx.net.send(cx.t, route, 0, v, len, 0) {
                self.wire.borrow_mut().pool.push(lost);
            }
        }
        self.wire.borrow_mut().out = out;
    }

    fn reschedule(&mut self, cx: &mut Cx<'_>, idx: usize, now_ms: u32) {
        let k = &self.ends[idx];
        if k.is_dead_link() {
            // A segment was sent 20 times (kcp's dead_link): its transports close the session.
            cx.check.fail("kcp declared a link dead");
        }
        // `check` can say 0 while `update` would not flush yet; wake a millisecond later.
        let next = now_ms + k.check(now_ms).max(1);
        self.timers
            .set(idx, Some(Duration::from_millis(u64::from(next))));
    }
}

fn kcp_ms(t: Duration) -> u32 {
    t.as_millis() as u32
}

impl Mesh for KcpMesh {
    fn send(&mut self, _cx: &mut Cx<'_>, from: usize, to: usize, msg: Bytes) {
        self.ends[from * self.n + to].send(&msg).unwrap();
    }

    fn send_blob(&mut self, _cx: &mut Cx<'_>, from: usize, to: usize, blob: &Bytes) {
        assert_eq!((from, to), (0, 1));
        let k = &mut self.ends[self.n * self.n];
        for chunk in blob.chunks(KCP_BLOB_CHUNK) {
            k.send(chunk).unwrap();
        }
    }

    fn tick(&mut self, _cx: &mut Cx<'_>, _peer: usize) {}

    fn receive(&mut self, cx: &mut Cx<'_>, a: Arrival) {
        let data = &a.buf[..a.len];
        let blob = kcp::get_conv(data) == KCP_BLOB_CONV;
        let idx = if blob {
            self.n * self.n + a.to
        } else {
            a.to * self.n + a.from
        };
        self.ends[idx].input(data).unwrap();
        loop {
            match self.ends[idx].recv(&mut self.rbuf) {
                Ok(len) if blob => cx.check.blob(cx.t, &self.rbuf[..len]),
                Ok(len) => cx.check.tick(cx.t, a.to, a.from, &self.rbuf[..len]),
                Err(kcp::Error::RecvQueueEmpty | kcp::Error::ExpectingFragment) => break,
                Err(e) => panic!("kcp: recv: {e}"),
            }
        }
        self.wire.borrow_mut().pool.push(a.buf);
        self.reschedule(cx, idx, kcp_ms(cx.t));
    }

    fn next_timer(&mut self) -> Option<Duration> {
        self.timers.next()
    }

    fn timers(&mut self, cx: &mut Cx<'_>) {
        let ms = kcp_ms(cx.t);
        self.timers.take_due(cx.t);
        for k in 0..self.timers.due.len() {
            let idx = self.timers.due[k];
            self.ends[idx].update(ms).unwrap();
            self.flush_wire(cx);
            self.reschedule(cx, idx, ms);
        }
    }
}
