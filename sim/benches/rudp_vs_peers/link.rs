//! The link: one seeded impairment model every datagram of every contender goes through.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::workload::{LossModel, MTU, Profile, QUEUE_BYTES, RATE};

/// One direction between two peers.
pub(crate) struct Link {
    /// Per-datagram draws.
    rng: StdRng,
    /// The Gilbert–Elliott chain's own stream: it steps with time, not with datagrams.
    ge_rng: StdRng,
    /// Gilbert–Elliott state, and how many steps the chain has taken.
    bad: bool,
    ge_steps: u64,
    /// When the bottleneck finishes what is queued.
    busy_until: Duration,
    /// Latest arrival so far (FIFO links never deliver before it).
    last_arrival: Duration,
    dgrams: u64,
    /// Bytes offered, as each contender counts them (lost datagrams included).
    pub(crate) bytes: u64,
    /// Of which AEAD header and tag (Pierce only).
    pub(crate) aead: u64,
    lost: u64,
    dropped_queue: u64,
}

impl Link {
    fn new(seed: u64, from: usize, to: usize) -> Self {
        let dir = ((from as u64) << 16) | to as u64;
        let base = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ dir;
        Self {
            rng: StdRng::seed_from_u64(base),
            ge_rng: StdRng::seed_from_u64(base ^ 0x6765_5F63_6861_696E),
            bad: false,
            ge_steps: 0,
            busy_until: Duration::ZERO,
            last_arrival: Duration::ZERO,
            dgrams: 0,
            bytes: 0,
            aead: 0,
            lost: 0,
            dropped_queue: 0,
        }
    }
}

/// The impairment every datagram of every contender goes through: `None` if it is lost,
/// else its arrival time. Always draws the same two numbers per datagram, so the n-th
/// datagram's random fate does not depend on what happened to earlier ones; the burst state
/// is a function of time only, so a datagram sent during a burst meets it whoever sent it.
pub(crate) fn impair(
    link: &mut Link,
    p: &Profile,
    reorder: bool,
    now: Duration,
    len: usize,
) -> Option<Duration> {
    let u_loss: f64 = link.rng.random();
    let u_jitter: f64 = link.rng.random();
    let lost = match p.loss {
        LossModel::None => false,
        LossModel::Random(rate) => u_loss < rate,
        LossModel::Burst(ge) => {
            let steps = (now.as_nanos() / ge.step.as_nanos()) as u64;
            while link.ge_steps < steps {
                let u: f64 = link.ge_rng.random();
                link.bad = if link.bad {
                    u >= ge.p_bad_to_good
                } else {
                    u < ge.p_good_to_bad
                };
                link.ge_steps += 1;
            }
            u_loss < if link.bad { ge.loss_bad } else { ge.loss_good }
        }
    };
    if lost {
        link.lost += 1;
        return None;
    }
    let start = link.busy_until.max(now);
    let backlog = (start - now).as_nanos() as u64 * RATE / 1_000_000_000;
    if backlog + len as u64 > QUEUE_BYTES {
        link.dropped_queue += 1;
        return None;
    }
    link.busy_until = start + Duration::from_nanos(len as u64 * 1_000_000_000 / RATE);
    let j = p.jitter.as_nanos() as f64 * (2.0 * u_jitter - 1.0);
    let flight = Duration::from_nanos((p.one_way.as_nanos() as f64 + j).max(0.0) as u64);
    let mut at = link.busy_until + flight;
    if !reorder {
        at = at.max(link.last_arrival);
        link.last_arrival = at;
    }
    Some(at)
}

/// A datagram in flight.
pub(crate) struct Arrival {
    at: Duration,
    /// Tie-break: send order.
    seq: u64,
    pub(crate) from: usize,
    pub(crate) to: usize,
    /// Pierce's packet number (the AEAD counter in real life); 0 for the others.
    pub(crate) pn: u64,
    pub(crate) len: usize,
    pub(crate) buf: Vec<u8>,
}

impl PartialEq for Arrival {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}

impl Eq for Arrival {}

impl PartialOrd for Arrival {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}

impl Ord for Arrival {
    /// Reversed, so that `BinaryHeap` pops the earliest.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Route {
    pub(crate) from: usize,
    pub(crate) to: usize,
}

/// All links of a mesh and what is in flight on them.
pub(crate) struct Net {
    n: usize,
    profile: Profile,
    /// Independent jitter per datagram (may reorder) instead of FIFO jitter.
    reorder: bool,
    pub(crate) links: Vec<Link>,
    heap: BinaryHeap<Arrival>,
    seq: u64,
}

impl Net {
    pub(crate) fn new(n: usize, profile: Profile, reorder: bool, seed: u64) -> Self {
        Self {
            n,
            profile,
            reorder,
            links: (0..n * n).map(|i| Link::new(seed, i / n, i % n)).collect(),
            heap: BinaryHeap::with_capacity(8192),
            seq: 0,
        }
    }

    /// Offers `buf[..len]` (`len + overhead` bytes on the wire); hands the buffer back if the
    /// datagram was lost.
    pub(crate) fn send(
        &mut self,
        t: Duration,
        r: Route,
        pn: u64,
        buf: Vec<u8>,
        len: usize,
        overhead: usize,
    ) -> Option<Vec<u8>> {
        assert!(len + overhead <= MTU + 100, "{len}-byte datagram");
        let link = &mut self.links[r.from * self.n + r.to];
        link.dgrams += 1;
        link.bytes += (len + overhead) as u64;
        link.aead += overhead as u64;
        let Some(at) = impair(link, &self.profile, self.reorder, t, len + overhead) else {
            return Some(buf);
        };
        self.seq += 1;
        self.heap.push(Arrival {
            at,
            seq: self.seq,
            from: r.from,
            to: r.to,
            pn,
            len,
            buf,
        });
        None
    }

    pub(crate) fn next_at(&self) -> Option<Duration> {
        self.heap.peek().map(|a| a.at)
    }

    pub(crate) fn pop_due(&mut self, t: Duration) -> Option<Arrival> {
        if self.heap.peek()?.at <= t {
            self.heap.pop()
        } else {
            None
        }
    }

    pub(crate) fn dgrams(&self) -> u64 {
        self.links.iter().map(|l| l.dgrams).sum()
    }
}
