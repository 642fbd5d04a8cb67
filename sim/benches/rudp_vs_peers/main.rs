//! Pierce's reliability layer (`pierce_core::reliability::Connection`) against the IO-free
//! cores of three peers: renet (`RenetServer`), rusty_enet (`Host` over an in-memory socket)
//! and kcp (`Kcp`), all driven by one deterministic harness in virtual time over the same
//! seeded impairment code.
//!
//! # Method
//!
//! - **Topology**: N peers in a full mesh (N = 2: one connection; N = 8: 28 connections, 56
//!   directed flows), every peer one endpoint per remote peer (Pierce: a `Connection`; renet:
//!   one `RenetServer` per peer holding a connection to every other peer; enet: one `Host` per
//!   peer; kcp: one `Kcp` per directed pair, plus a second conversation for the blob).
//! - **Link**: every datagram of every contender goes through the one seeded [`impair`]
//!   function, per direction of each pair. It draws the same two random numbers per datagram
//!   whatever happens (loss, jitter), so within a round (same seed) the n-th datagram in a
//!   direction meets the same random fate for every contender. Behind the loss model each
//!   direction has a 10 Mbit/s bottleneck with a 64 KiB drop-tail queue (the game ticks use
//!   under 1% of it; it is what the 1 MiB blob competes for, so a contender that floods it
//!   pays in tail drops, and one that slows down does not). Jitter is uniform in ±j around the
//!   one-way delay and keeps each direction FIFO (an arrival never precedes the previous one,
//!   as in `pierce_sim::Link`: real jitter is mostly queueing, which does not reorder);
//!   the `blob_n2_reorder` workload draws jitter independently per datagram instead, netem
//!   style, which reorders back-to-back datagrams heavily (see the README for why it is there).
//! - **Profiles** (RTT = twice the one-way delay):
//!   `clean` RTT 20 ms, no jitter, no loss;
//!   `good` RTT 40 ms ±6 ms, 0.2% random loss;
//!   `average` RTT 100 ms ±15 ms, 2% random loss;
//!   `poor` RTT 200 ms ±30 ms, 10% random loss;
//!   `wifi` RTT 50 ms ±10 ms, bursty Gilbert–Elliott loss with the parameters lightyear fitted
//!   to a real Wi-Fi trace, as in `pierce_sim::LinkProfile::wifi()` (a
//!   `pierce_sim::GilbertElliott`): good→bad 0.00226 and bad→good 0.129 per 20 ms step
//!   (`pierce_sim::GE_STEP`), loss 0 in the good state and 99.1% in the bad one: bursts of
//!   155 ms on average, about one per 9 s per direction, 1.7% of the time. The chain steps
//!   with virtual time from its own seeded stream, so every contender meets the same bursts
//!   at the same times (stepping it per datagram would make a burst last 8 of a contender's
//!   own datagrams: minutes for one that backs off exponentially).
//! - **Workloads**: 60 Hz game ticks; every tick each peer queues messages to every other
//!   peer, 2 per tick on the reliable-ordered channel and 1 on the unreliable-sequenced one (a
//!   sequenced channel keeps only the newest, and Pierce's drops a queued message that a newer
//!   one supersedes before it was sent). Each message carries its sequence number and is
//!   checked byte for byte. Messages of 64 B and 200 B, N = 2 (30 s) and N = 8 (15 s); plus
//!   the blob workloads: N = 2, 64 B
//!   reliable ticks both ways, and at 2 s peer 0 sends a 1 MiB blob reliably to peer 1 on a
//!   second channel while ticks continue (until the blob is complete).
//! - **Delivery semantics are checked** and the bench panics loudly on a violation: reliable
//!   means exactly once, in order, intact (and everything arrives); sequenced means never a
//!   message older than (or equal to) one already delivered. renet has no sequenced channel:
//!   its unreliable channel is used and the harness drops stale messages the way an
//!   application would (counted, not a violation). kcp has no unreliable mode at all: it is
//!   reported on the reliable rows only (sending raw datagrams beside it would measure the
//!   harness, not kcp).
//! - **Driving**: each contender the way it is meant to be driven, and every contender
//!   processes a datagram the moment it arrives.
//!   Pierce is event driven, as its runtimes drive it: after every input the harness writes
//!   packets while `wants_transmit`, and calls `handle_timeout` at `poll_timeout`.
//!   renet is tick driven: `update` + `get_packets_to_send` per connection once per 60 Hz
//!   tick, as `bevy_renet`/its netcode transport do; `process_packet_from` on arrival (its
//!   clock advances per tick; it uses the clock only for stats, resends and slice expiry,
//!   all of which happen at ticks).
//!   enet: `Host::service` until it returns no event, once per tick and on every arrival (a
//!   blocking `enet_host_service` wakes on a datagram and acknowledges it at once).
//!   kcp: `update` at the times `check` asks for (its interval), `input` + `recv` on arrival,
//!   `send` only queues (the reference loop; acks and data leave at the next flush).
//! - **Settings** ("default" and tuned "fast"):
//!   Pierce: RFC 9002 loss detection, NewReno with pacing. Default (`ClientConfig`'s
//!   defaults): acks wait up to 20 ms for data to ride on (`ack_delay`), and the blob goes
//!   on the default reliable-unordered channel (priority 1, round-robin with the tick
//!   channel). "fast": acks within 5 ms, and a sixth channel, reliable-ordered at priority
//!   0, for the blob, so tick messages are packed first.
//!   renet default: `ConnectionConfig::default()` (resend time 300 ms, 60 000 bytes/tick,
//!   channel order unreliable, reliable-unordered (blob), reliable-ordered (ticks)); "fast":
//!   resend time 100 ms on both reliable channels and the tick channel ordered before the
//!   blob channel (same byte budget).
//!   enet default: `HostSettings::default()` (ping interval 500 ms); "fast": ping interval
//!   100 ms (its retransmission timeout, RTT + 4 RTT variance, is not configurable).
//!   kcp default: `Kcp::new` (interval 100 ms, no nodelay, no fast resend, congestion
//!   control on, windows 32/128); "fast": `set_nodelay(true, 10, 2, true)` (10 ms interval,
//!   30 ms min RTO, fast resend after 2 duplicate acks, no congestion window) and
//!   `set_wndsize(128, 512)` (kcptun's windows). All contenders use 1200-byte datagrams.
//!
//! # Metrics
//!
//! Per contender × setting × profile × workload, median [min–max] over rounds:
//! message latency p50 / p99 / p99.9 / max (virtual time from the tick that queued a message
//! to its delivery, delivered messages only); delivered % (unreliable rows, and reliable runs
//! that did not finish: a reliable run still undelivered 120 s of virtual time after its last
//! message tick is stopped and marked DNF; only kcp's defaults get there); bytes on the
//! wire per payload byte (all directions, lost datagrams included; payload = bytes the
//! application queued); CPU µs per delivered message (thread CPU time of the whole run: all
//! endpoints plus the link harness, which is the same code for all and costs per datagram);
//! heap allocations per datagram from a fifth of the message ticks to the last one (a
//! counting global allocator; the harness pre-allocates its buffers). Blob rows: blob completion time (queue to last
//! byte delivered), goodput, tick-message p99 and max for ticks queued before the blob and
//! while it was in flight, wire bytes per payload byte, CPU ms per run.
//!
//! **Pierce encrypts and the others do not.** Pierce's wire bytes include its 32-byte AEAD
//! header and tag per datagram; its CPU time does NOT include sealing and opening (see
//! `cargo bench -p pierce-core --bench datagram`, about 3.7 µs per datagram on the reference
//! VM). The peers' bytes are their datagrams as produced: unencrypted, no transport header
//! (renet's netcode transport and the FEC/encryption layers of kcp-go-style transports are
//! not used).
//!
//! # Rounds
//!
//! The machine is shared and noisy. Each (workload, profile) cell runs [`Scale::rounds`]
//! rounds; in a round every contender runs the same seed, in an order that rotates from
//! round to round, and N = 2 runs are repeated back to back ([`Scale::repeat_2`]; CPU time
//! summed; the reruns must reproduce latencies and bytes exactly). Differences under 10%
//! are printed as "≈", never as wins.
//!
//! `cargo bench -p pierce-sim --bench rudp_vs_peers` (about 3 minutes on a 2-core VM);
//! `cargo bench -p pierce-sim --bench rudp_vs_peers -- --quick` for a smoke run;
//! `-- --only=rel64_n2,blob_n2` and `-- --who=renet,kcp-fast` narrow a run to some workloads
//! and contenders (Pierce always runs; no RESULT line then).
//!
//! [`impair`]: link::impair
//! [`Scale::rounds`]: workload::Scale::rounds
//! [`Scale::repeat_2`]: workload::Scale::repeat_2

// A benchmark prints its tables and panics loudly when a contender breaks its guarantees.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use pierce_core::wire::sealed::OVERHEAD as AEAD_OVERHEAD;

mod checks;
mod contenders;
mod harness;
mod link;
mod measure;
mod output;
mod stats;
mod workload;

use crate::contenders::{ENTRANTS, Inputs, Who, message_source, run_once, run_repeated};
use crate::measure::{epoch, wall};
use crate::output::{
    Bucket, fr, print_blob_header, print_blob_row, print_tick_header, print_tick_row, result_name,
};
use crate::stats::stats;
use crate::workload::{BLOB_SIZE, FULL, PROFILES, QUICK, Workload, workloads};

/// A round's seed, from the workload's name (so `--only` reproduces the full run's rounds).
fn seed_of(key: &str, profile: usize, round: usize) -> u64 {
    let h = key.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    h ^ ((profile as u64) << 32) ^ round as u64
}

fn main() {
    let wall0 = wall();
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { QUICK } else { FULL };
    // `--only=key,key` runs only those workloads (no RESULT line).
    let only: Option<Vec<String>> = std::env::args().find_map(|a| {
        a.strip_prefix("--only=")
            .map(|k| k.split(',').map(String::from).collect())
    });
    // `--who=label,label` runs only those contenders besides "pierce" (no RESULT line).
    let who: Option<Vec<String>> = std::env::args().find_map(|a| {
        a.strip_prefix("--who=")
            .map(|k| k.split(',').map(String::from).collect())
    });
    let wls: Vec<Workload> = workloads(scale)
        .into_iter()
        .filter(|w| only.as_ref().is_none_or(|o| o.iter().any(|k| k == w.key)))
        .collect();
    let max_msgs = wls
        .iter()
        .map(|w| w.max_ticks() as usize * w.per_tick)
        .max()
        .unwrap();
    let inp = Inputs {
        epoch: epoch(),
        src_small: message_source(64, max_msgs),
        src_large: message_source(200, max_msgs),
        blob: message_source(BLOB_SIZE / 4096, 4096),
    };
    println!(
        "rudp_vs_peers{}: Pierce reliability layer vs renet 2.0.1, rusty_enet 0.4.1, kcp 0.6.0 (IO-free cores), one seeded link, virtual time",
        if quick { " --quick" } else { "" }
    );
    println!(
        "links: 10 Mbit/s + 64 KiB drop-tail per direction of each pair, FIFO jitter (except *_reorder); RTT ms: clean 20; good 40+-6, 0.2% loss; average 100+-15, 2%; poor 200+-30, 10%;"
    );
    println!(
        "       wifi 50+-10, Gilbert-Elliott bursts in time (mean 155 ms, ~1 per 9 s per direction, 99.1% loss while bad: 1.7% overall)"
    );
    println!(
        "rounds: {} per cell, contender order rotating, same seed within a round; N=2 runs repeated {}x (CPU summed, must be identical); median[min-max] over rounds",
        scale.rounds, scale.repeat_2
    );
    println!(
        "wire: pierce = frame bytes + {AEAD_OVERHEAD} B/datagram (AEAD header 16 + tag 16; ENCRYPTED on the real wire, but sealing/opening NOT in its CPU time);"
    );
    println!(
        "      renet/enet/kcp = their datagrams as produced, UNENCRYPTED; all directions, lost datagrams included"
    );
    println!(
        "cpu: thread CPU of a whole run (all endpoints + the shared link harness) per delivered tick message; dg/m: datagrams (all directions) per delivered message;"
    );
    println!(
        "     allocs: heap allocations per datagram from 1/5 of the message ticks to the last; DNF: a run stopped (connection dropped, or reliable data undelivered 120 s after the last tick)"
    );
    println!(
        "fast: pierce = acks within 5 ms (default 20: ClientConfig::ack_delay) + blob on its own priority-0 channel; renet = resend 100 ms (default 300), ticks before blob; enet = ping interval 100 ms (default 500); kcp = nodelay(1,10,2,1) + windows 128/512"
    );
    println!(
        "unreliable rows: pierce/enet sequenced channels; renet unreliable + stale dropped by the application; kcp has no unreliable mode (not run)"
    );
    println!(
        "ratios pierce/this: < 1 means Pierce lower (better for latency, CPU and bytes); '≈' = within 10%, not a difference"
    );

    let mut cells: Vec<Bucket> = Vec::new();
    // Warm-up: one short run of each contender, discarded.
    for e in ENTRANTS {
        if e.runs(&wls[0]) {
            let _ = run_once(e, &wls[0], &PROFILES[1], 1, &inp);
        }
    }
    for (wi, wl) in wls.iter().enumerate() {
        let entrants: Vec<usize> = (0..ENTRANTS.len())
            .filter(|&e| ENTRANTS[e].runs(wl))
            .filter(|&e| {
                e == 0
                    || who
                        .as_ref()
                        .is_none_or(|w| w.iter().any(|l| l == ENTRANTS[e].label))
            })
            .collect();
        println!("\n== {}", wl.title());
        if wl.blob_at.is_some() {
            print_blob_header();
        } else {
            print_tick_header();
        }
        for (pi, profile) in PROFILES.iter().enumerate() {
            let mut cell = Bucket {
                wl: wi,
                profile: pi,
                rounds: vec![Vec::new(); ENTRANTS.len()],
            };
            for round in 0..scale.rounds {
                let seed = seed_of(wl.key, pi, round);
                for k in 0..entrants.len() {
                    let e = entrants[(k + round) % entrants.len()];
                    let (run, cpu_one) = run_repeated(ENTRANTS[e], wl, profile, seed, &inp);
                    cell.rounds[e].push(stats(&run, cpu_one));
                }
            }
            for (k, &e) in entrants.iter().enumerate() {
                if wl.blob_at.is_some() {
                    print_blob_row(&cell, e, k == 0);
                } else {
                    print_tick_row(&cell, e, k == 0);
                }
            }
            cells.push(cell);
        }
    }

    if only.is_some() || who.is_some() {
        return;
    }
    // The RESULT line: headline ratios (Pierce / peer; < 1 is better for Pierce).
    let mut result: Vec<String> = Vec::new();
    let find = |key: &str, profile: &str| {
        cells
            .iter()
            .find(|c| wls[c.wl].key == key && PROFILES[c.profile].key == profile)
            .unwrap()
    };
    for p in PROFILES {
        let c = find("rel64_n2", p.key);
        result.push(format!(
            "pierce_p99_ms_{}={:.1}",
            p.key,
            c.median(0, |s| s.p99)
        ));
    }
    for (e, entrant) in ENTRANTS.iter().enumerate().skip(2) {
        let name = result_name(e);
        let vs = |key, profile, f| fr(find(key, profile).pierce_over(e, f));
        for p in PROFILES {
            let r = vs("rel64_n2", p.key, |s| s.p99);
            result.push(format!("p99_ratio_vs_{name}_{}={r}", p.key));
        }
        let r = vs("rel64_n2", "good", |s| s.cpu_us_per_msg);
        result.push(format!("cpu_ratio_vs_{name}_good={r}"));
        let r = vs("rel64_n8", "good", |s| s.cpu_us_per_msg);
        result.push(format!("cpu_ratio_n8_vs_{name}_good={r}"));
        let r = vs("rel64_n2", "average", |s| s.wire);
        result.push(format!("bytes_ratio_vs_{name}_average={r}"));
        let r = vs("blob_n2", "average", |s| s.blob_s);
        result.push(format!("blob_time_ratio_vs_{name}_average={r}"));
        if entrant.who != Who::Kcp {
            let r = vs("seq64_n2", "poor", |s| s.p99);
            result.push(format!("seq_p99_ratio_vs_{name}_poor={r}"));
        }
    }
    let c = find("rel64_n2", "good");
    result.push(format!(
        "pierce_cpu_us_per_msg_good={:.2}",
        c.median(0, |s| s.cpu_us_per_msg)
    ));
    result.push(format!(
        "pierce_allocs_per_dgram_good={:.2}",
        c.median(0, |s| s.allocs)
    ));
    let c = find("blob_n2", "average");
    result.push(format!(
        "pierce_blob_s_average={:.2}",
        c.median(0, |s| s.blob_s)
    ));
    result.push(format!("wall_s={:.0}", wall0.elapsed().as_secs_f64()));
    println!("\nRESULT {}", result.join(" "));
}
