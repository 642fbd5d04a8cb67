//! Statistics over runs and rounds.

use std::time::Duration;

use crate::harness::Run;
use crate::workload::{BLOB_SIZE, TICK_NS};

/// One round's figures for one contender.
#[derive(Clone, Copy, Default)]
pub(crate) struct Stats {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) delivered_pct: f64,
    pub(crate) wire: f64,
    /// Wire bytes without Pierce's AEAD header and tag.
    pub(crate) wire_plain: f64,
    /// Datagrams (all directions) per delivered message.
    pub(crate) dgrams_per_msg: f64,
    pub(crate) cpu_us_per_msg: f64,
    pub(crate) allocs: f64,
    // Blob workload.
    pub(crate) blob_s: f64,
    pub(crate) goodput_mbit: f64,
    pub(crate) before_p99: f64,
    pub(crate) during_p99: f64,
    pub(crate) during_max: f64,
    pub(crate) cpu_ms: f64,
    pub(crate) finished: bool,
    pub(crate) failed: Option<&'static str>,
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

pub(crate) fn stats(run: &Run, cpu_one: Duration) -> Stats {
    let mut all: Vec<u32> = run.lat.iter().map(|&(_, l)| l).collect();
    all.sort_unstable();
    let mut s = Stats {
        p50: pct(&all, 0.50),
        p99: pct(&all, 0.99),
        p999: pct(&all, 0.999),
        max: pct(&all, 1.0),
        delivered_pct: 100.0 * (run.delivered as f64) / run.sent as f64,
        wire: run.wire as f64 / run.payload as f64,
        wire_plain: (run.wire - run.aead) as f64 / run.payload as f64,
        dgrams_per_msg: run.dgrams as f64 / run.delivered.max(1) as f64,
        cpu_us_per_msg: cpu_one.as_secs_f64() * 1e6 / run.delivered.max(1) as f64,
        allocs: run.allocs_per_dgram,
        cpu_ms: cpu_one.as_secs_f64() * 1e3,
        finished: run.finished,
        failed: run.failed,
        blob_s: f64::NAN,
        goodput_mbit: f64::NAN,
        ..Stats::default()
    };
    if let (Some(start), Some(done)) = (run.blob_start, run.blob_done) {
        let secs = (done - start).as_secs_f64();
        s.blob_s = secs;
        s.goodput_mbit = BLOB_SIZE as f64 * 8.0 / secs / 1e6;
        let tick_of = |d: Duration| (d.as_nanos() / u128::from(TICK_NS)) as u32;
        let (t0, t1) = (tick_of(start), tick_of(done));
        let mut before: Vec<u32> = run
            .lat
            .iter()
            .filter(|&&(k, _)| k < t0)
            .map(|&(_, l)| l)
            .collect();
        let mut during: Vec<u32> = run
            .lat
            .iter()
            .filter(|&&(k, _)| k >= t0 && k <= t1)
            .map(|&(_, l)| l)
            .collect();
        before.sort_unstable();
        during.sort_unstable();
        s.before_p99 = pct(&before, 0.99);
        s.during_p99 = pct(&during, 0.99);
        s.during_max = pct(&during, 1.0);
    }
    s
}

/// One metric over the rounds.
#[derive(Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    max: f64,
}

fn spread(mut v: Vec<f64>) -> Spread {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

pub(crate) fn over(rounds: &[Stats], f: impl Fn(&Stats) -> f64) -> Spread {
    spread(rounds.iter().map(f).collect())
}

/// `median[min-max]`, with `prec` decimals; "DNF" where a round has no figure.
pub(crate) fn fmt_spread(s: Spread, prec: usize) -> String {
    if s.median.is_nan() || s.max.is_nan() {
        return "DNF".to_string();
    }
    format!("{:.p$}[{:.p$}-{:.p$}]", s.median, s.min, s.max, p = prec)
}

/// Pierce's figure over a peer's, as "0.45x", or "≈" within 10%.
pub(crate) fn ratio(pierce: f64, peer: f64) -> String {
    let r = pierce / peer;
    if !r.is_finite() {
        "n/a".to_string()
    } else if (r - 1.0).abs() < 0.10 {
        "≈".to_string()
    } else {
        format!("{r:.2}x")
    }
}
