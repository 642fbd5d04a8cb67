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

    /// Pierce's median of `f` over entrant `e`'s (< 1 is better for Pierce).
    pub(crate) fn pierce_over(&self, e: usize, f: fn(&Stats) -> f64) -> f64 {
        self.median(0, f) / self.median(e, f)
    }

    /// The profile column: the profile's name on its first row only.
    fn profile_column(&self, first: bool) -> &'static str {
        if first {
            PROFILES[self.profile].key
        } else {
            ""
        }
    }

    /// The "pierce/this" columns of entrant `e`'s row: Pierce's median over its, for each
    /// of three measures (empty on Pierce's own row).
    fn verdict(&self, e: usize, measures: [fn(&Stats) -> f64; 3]) -> String {
        if e == 0 {
            return String::new();
        }
        let (pierce, r) = (&self.rounds[0], &self.rounds[e]);
        let [a, b, c] = measures.map(|f| ratio(over(pierce, f).median, over(r, f).median));
        format!("{a:>6} {b:>6} {c:>6}")
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

/// Spread columns of an entrant's row: each of the measures' median [min-max] over its
/// rounds, with `decimals` decimals, 19 characters wide.
fn spreads<const N: usize>(
    r: &[Stats],
    decimals: usize,
    measures: impl Fn(&Stats) -> [f64; N],
) -> String {
    let columns: [String; N] = std::array::from_fn(|i| {
        let spread = over(r, |s| measures(s)[i]);
        format!("{:>19}", fmt_spread(spread, decimals))
    });
    columns.join(" ")
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
    let (r, profile) = (&cell.rounds[e], cell.profile_column(first));
    let del = over(r, |s| s.delivered_pct);
    let del = if del.min >= 100.0 && r.iter().all(|s| s.finished) {
        String::new()
    } else {
        fmt_spread(del, 1)
    };
    let verdict = cell.verdict(e, [|s| s.p99, |s| s.cpu_us_per_msg, |s| s.wire]);
    let latency = spreads(r, 1, |s| [s.p50, s.p99, s.p999, s.max]);
    let (wire, cpu) = (
        spreads(r, 2, |s| [s.wire]),
        spreads(r, 2, |s| [s.cpu_us_per_msg]),
    );
    println!(
        "{profile:<8} {:<11} {latency} {del:>19} {wire} {:>6} {:>5.2} {cpu} {:>6.2}  {verdict}",
        ENTRANTS[e].label,
        plain(r),
        over(r, |s| s.dgrams_per_msg).median,
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
    let (r, profile) = (&cell.rounds[e], cell.profile_column(first));
    let verdict = cell.verdict(e, [|s| s.blob_s, |s| s.during_p99, |s| s.wire]);
    let rate = spreads(r, 2, |s| [s.blob_s, s.goodput_mbit]);
    let ticks = spreads(r, 1, |s| [s.before_p99, s.during_p99, s.during_max]);
    let (wire, cpu) = (spreads(r, 2, |s| [s.wire]), spreads(r, 1, |s| [s.cpu_ms]));
    println!(
        "{profile:<8} {:<11} {rate} {ticks} {wire} {:>6} {cpu}  {verdict}",
        ENTRANTS[e].label,
        plain(r),
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
