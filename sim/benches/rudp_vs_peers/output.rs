//! The printed tables.

use crate::contenders::ENTRANTS;
use crate::stats::{Stats, fmt_spread, over, ratio};
use crate::workload::PROFILES;

pub(crate) struct Bucket {
    pub(crate) wl: usize,
    pub(crate) profile: usize,
    /// Per entrant (index into `ENTRANTS`), per round.
    pub(crate) rounds: Vec<Vec<Stats>>,
}

impl Bucket {
    pub(crate) fn median(&self, e: usize, f: impl Fn(&Stats) -> f64) -> f64 {
        if self.rounds[e].is_empty() {
            return f64::NAN;
        }
        over(&self.rounds[e], f).median
    }
}

/// Median wire bytes per payload byte without the AEAD bytes (Pierce rows only).
fn plain(r: &[Stats]) -> String {
    let s = over(r, |s| s.wire_plain);
    if s.median == over(r, |s| s.wire).median {
        String::new()
    } else {
        format!("{:.2}", s.median)
    }
}

/// A note for rows where some rounds did not finish.
fn dnf(r: &[Stats]) -> String {
    let k = r.iter().filter(|s| !s.finished).count();
    if k == 0 {
        return String::new();
    }
    let why = r
        .iter()
        .find_map(|s| s.failed)
        .unwrap_or("still undelivered 120 s after the last tick");
    format!(
        "  DNF in {k}/{} rounds: {why} (latencies over delivered only)",
        r.len()
    )
}

pub(crate) fn print_tick_header() {
    println!(
        "{:<8} {:<11} {:>19} {:>19} {:>19} {:>19} {:>19} {:>19} {:>6} {:>5} {:>19} {:>6}  pierce/this: p99, cpu, bytes",
        "profile",
        "contender",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "delivered %",
        "wire B/payload B",
        "noAEAD",
        "dg/m",
        "CPU us/msg",
        "allocs"
    );
}

pub(crate) fn print_tick_row(cell: &Bucket, e: usize, first: bool) {
    let r = &cell.rounds[e];
    let pierce = &cell.rounds[0];
    let profile = if first {
        PROFILES[cell.profile].key
    } else {
        ""
    };
    let del = over(r, |s| s.delivered_pct);
    let del = if del.min >= 100.0 && r.iter().all(|s| s.finished) {
        String::new()
    } else {
        fmt_spread(del, 1)
    };
    let verdict = if e == 0 {
        String::new()
    } else {
        let a = ratio(over(pierce, |s| s.p99).median, over(r, |s| s.p99).median);
        let b = ratio(
            over(pierce, |s| s.cpu_us_per_msg).median,
            over(r, |s| s.cpu_us_per_msg).median,
        );
        let c = ratio(over(pierce, |s| s.wire).median, over(r, |s| s.wire).median);
        format!("{a:>6} {b:>6} {c:>6}")
    };
    println!(
        "{profile:<8} {:<11} {:>19} {:>19} {:>19} {:>19} {del:>19} {:>19} {:>6} {:>5.2} {:>19} {:>6.2}  {verdict}",
        ENTRANTS[e].label,
        fmt_spread(over(r, |s| s.p50), 1),
        fmt_spread(over(r, |s| s.p99), 1),
        fmt_spread(over(r, |s| s.p999), 1),
        fmt_spread(over(r, |s| s.max), 1),
        fmt_spread(over(r, |s| s.wire), 2),
        plain(r),
        over(r, |s| s.dgrams_per_msg).median,
        fmt_spread(over(r, |s| s.cpu_us_per_msg), 2),
        over(r, |s| s.allocs).median,
    );
    let note = dnf(r);
    if !note.is_empty() {
        println!("{:<20}{note}", "");
    }
}

pub(crate) fn print_blob_header() {
    println!(
        "{:<8} {:<11} {:>19} {:>19} {:>19} {:>19} {:>19} {:>19} {:>6} {:>19}  pierce/this: time, tick p99 during, bytes",
        "profile",
        "contender",
        "blob s",
        "goodput Mbit/s",
        "tick p99 before ms",
        "tick p99 during ms",
        "tick max during ms",
        "wire B/payload B",
        "noAEAD",
        "CPU ms/run",
    );
}

pub(crate) fn print_blob_row(cell: &Bucket, e: usize, first: bool) {
    let r = &cell.rounds[e];
    let pierce = &cell.rounds[0];
    let profile = if first {
        PROFILES[cell.profile].key
    } else {
        ""
    };
    let verdict = if e == 0 {
        String::new()
    } else {
        let a = ratio(
            over(pierce, |s| s.blob_s).median,
            over(r, |s| s.blob_s).median,
        );
        let b = ratio(
            over(pierce, |s| s.during_p99).median,
            over(r, |s| s.during_p99).median,
        );
        let c = ratio(over(pierce, |s| s.wire).median, over(r, |s| s.wire).median);
        format!("{a:>6} {b:>6} {c:>6}")
    };
    println!(
        "{profile:<8} {:<11} {:>19} {:>19} {:>19} {:>19} {:>19} {:>19} {:>6} {:>19}  {verdict}",
        ENTRANTS[e].label,
        fmt_spread(over(r, |s| s.blob_s), 2),
        fmt_spread(over(r, |s| s.goodput_mbit), 2),
        fmt_spread(over(r, |s| s.before_p99), 1),
        fmt_spread(over(r, |s| s.during_p99), 1),
        fmt_spread(over(r, |s| s.during_max), 1),
        fmt_spread(over(r, |s| s.wire), 2),
        plain(r),
        fmt_spread(over(r, |s| s.cpu_ms), 1),
    );
    let note = dnf(r);
    if !note.is_empty() {
        println!("{:<20}{note}", "");
    }
}

/// A ratio in the RESULT line: two decimals, or three significant digits below 0.1.
pub(crate) fn fr(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.2e}")
    } else {
        format!("{r:.2}")
    }
}

/// Key name of an entrant in the RESULT line.
pub(crate) fn result_name(e: usize) -> String {
    ENTRANTS[e].label.replace('-', "_")
}
