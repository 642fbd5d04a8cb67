//! The contenders and their settings, and one run of one contender.

mod enet;
mod kcp;
mod pierce;
mod renet;

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::checks::Checks;
use crate::contenders::enet::EnetMesh;
use crate::contenders::kcp::KcpMesh;
use crate::contenders::pierce::PierceMesh;
use crate::contenders::renet::RenetMesh;
use crate::harness::{Run, drive};
use crate::link::Net;
use crate::workload::{Profile, Workload};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    Pierce,
    Renet,
    Enet,
    Kcp,
}

#[derive(Clone, Copy)]
pub(crate) struct Entrant {
    pub(crate) who: Who,
    fast: bool,
    pub(crate) label: &'static str,
}

pub(crate) const ENTRANTS: [Entrant; 8] = [
    Entrant {
        who: Who::Pierce,
        fast: false,
        label: "pierce",
    },
    Entrant {
        who: Who::Pierce,
        fast: true,
        label: "pierce-fast",
    },
    Entrant {
        who: Who::Renet,
        fast: false,
        label: "renet",
    },
    Entrant {
        who: Who::Renet,
        fast: true,
        label: "renet-fast",
    },
    Entrant {
        who: Who::Enet,
        fast: false,
        label: "enet",
    },
    Entrant {
        who: Who::Enet,
        fast: true,
        label: "enet-fast",
    },
    Entrant {
        who: Who::Kcp,
        fast: false,
        label: "kcp",
    },
    Entrant {
        who: Who::Kcp,
        fast: true,
        label: "kcp-fast",
    },
];

impl Entrant {
    /// kcp has no unreliable mode.
    pub(crate) fn runs(&self, wl: &Workload) -> bool {
        match self.who {
            Who::Kcp => wl.reliable,
            Who::Pierce | Who::Renet | Who::Enet => true,
        }
    }
}

/// Shared inputs of all runs.
pub(crate) struct Inputs {
    pub(crate) epoch: Instant,
    pub(crate) src_small: Bytes,
    pub(crate) src_large: Bytes,
    pub(crate) blob: Bytes,
}

/// All messages of one flow back to back: message `i` is `size` bytes starting with `i`.
pub(crate) fn message_source(size: usize, count: usize) -> Bytes {
    let mut v = vec![0u8; size * count];
    for (i, m) in v.chunks_mut(size).enumerate() {
        m[..4].copy_from_slice(&(i as u32).to_be_bytes());
        for (j, b) in m[4..].iter_mut().enumerate() {
            *b = (i * 31 + j * 7) as u8;
        }
    }
    Bytes::from(v)
}

pub(crate) fn run_once(
    e: Entrant,
    wl: &Workload,
    profile: &Profile,
    seed: u64,
    inp: &Inputs,
) -> Run {
    let src = if wl.size == 64 {
        &inp.src_small
    } else {
        &inp.src_large
    };
    assert_eq!(src.len() % wl.size, 0);
    let app_seq = e.who == Who::Renet;
    let mut check = Checks::new(e.label, wl, src, &inp.blob, app_seq);
    let mut net = Net::new(wl.peers, *profile, wl.reorder, seed);
    match e.who {
        Who::Pierce => {
            let mut m = PierceMesh::new(wl, e.fast, inp.epoch);
            drive(&mut m, &mut net, &mut check, wl)
        }
        Who::Renet => {
            let mut m = RenetMesh::new(wl, e.fast);
            drive(&mut m, &mut net, &mut check, wl)
        }
        Who::Enet => {
            let mut m = EnetMesh::new(wl, e.fast, profile, seed);
            drive(&mut m, &mut net, &mut check, wl)
        }
        Who::Kcp => {
            let mut m = KcpMesh::new(wl, e.fast);
            drive(&mut m, &mut net, &mut check, wl)
        }
    }
}

/// Runs `repeat` times with the same seed: CPU time is the sum; everything else must not
/// change.
pub(crate) fn run_repeated(
    e: Entrant,
    wl: &Workload,
    profile: &Profile,
    seed: u64,
    inp: &Inputs,
) -> (Run, Duration) {
    let mut first = run_once(e, wl, profile, seed, inp);
    let mut cpu = first.cpu;
    for _ in 1..wl.repeat {
        let again = run_once(e, wl, profile, seed, inp);
        assert!(
            again.lat == first.lat && again.wire == first.wire && again.dgrams == first.dgrams,
            "{}: a rerun with the same seed differs: the harness is not deterministic",
            e.label
        );
        cpu += again.cpu;
    }
    first.cpu = cpu;
    (first, cpu / wl.repeat as u32)
}
