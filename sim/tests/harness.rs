//! The simulator's own machinery: busy-loop detection, the step cap, failure reports, and
//! routing custom nodes through shared NATs (LAN paths and hairpinning).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pierce_core::{Endpoint, Events, SocketId, Transmit};
use pierce_sim::{Edge, LinkProfile, NatConfig, Node, Scenario, SimError, seed_or};

const SECOND: Duration = Duration::from_secs(1);

/// A node that misbehaves on purpose, or a plain UDP socket that echoes when asked.
#[derive(Default)]
struct Raw {
    /// `poll_timeout` answer: a fixed past instant (spins) or `now + 1 ns` each time.
    spin_at: Option<Instant>,
    tick: Option<Duration>,
    next: Option<Instant>,
    echo: bool,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<String>,
}

impl Endpoint for Raw {
    fn handle_datagram_on(
        &mut self,
        _now: Instant,
        _socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        self.events.push_back(format!(
            "from {from}: {}",
            String::from_utf8_lossy(datagram)
        ));
        if self.echo {
            self.outbox.push_back((from, datagram.to_vec()));
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        if let Some(t) = self.tick {
            self.next = Some(now + t);
        }
    }
    fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let (dst, bytes) = self.outbox.pop_front()?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        Some(Transmit::new(dst, bytes.len()))
    }
    fn poll_timeout(&self) -> Option<pierce_core::Timeout> {
        (self.spin_at.or(self.next)).map(|at| pierce_core::Timeout::new(at, "spinning on purpose"))
    }
}

impl Events for Raw {
    type Event = String;

    fn poll_event(&mut self) -> Option<String> {
        self.events.pop_front()
    }
}

impl Node for Raw {
    type Stats = usize;
    fn stats(&self) -> usize {
        self.outbox.len()
    }
}

#[test]
fn a_node_that_stays_due_without_progress_is_reported_as_a_busy_loop() {
    let mut sim = Scenario::new(seed_or(8)).build();
    let epoch = sim.epoch();
    sim.add_node(
        "spinner",
        Edge::Open,
        9000,
        &LinkProfile::perfect(),
        Raw {
            spin_at: Some(epoch),
            ..Raw::default()
        },
    );
    let err = sim.run_for(SECOND).expect_err("the spinner must be caught");
    match &err {
        SimError::BusyLoop { node, reason, .. } => {
            assert_eq!(node, "spinner");
            assert_eq!(*reason, "spinning on purpose");
        }
        other => panic!("expected a busy loop, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("PIERCE_SIM_SEED=8 cargo test -p pierce-sim --test harness"),
        "{msg}"
    );
}

#[test]
fn a_run_that_never_settles_hits_the_step_cap() {
    let mut sim = Scenario::new(seed_or(9)).step_cap(10_000).build();
    sim.add_node(
        "ticker",
        Edge::Open,
        9000,
        &LinkProfile::perfect(),
        Raw {
            tick: Some(Duration::from_micros(1)),
            next: Some(sim.now()),
            ..Raw::default()
        },
    );
    // Ticking every microsecond is progress (the deadline moves), so it is not a busy
    // loop, but a second of it is a million steps.
    let err = sim.run_for(SECOND).expect_err("step cap");
    assert!(
        matches!(err, SimError::StepCap { steps: 10_000, .. }),
        "{err}"
    );
}

#[test]
#[should_panic(expected = "PIERCE_SIM_SEED=10 cargo test -p pierce-sim --test harness")]
fn a_failed_expectation_names_the_seed_and_a_repro_command() {
    let mut sim = Scenario::new(10).build();
    sim.eventually("something that never happens", SECOND, |_| false);
}

fn udp(sim: &mut pierce_sim::Sim, name: &str, edge: Edge, echo: bool) -> SocketAddr {
    sim.add_node(
        name,
        edge,
        6000,
        &LinkProfile::perfect(),
        Raw {
            echo,
            ..Raw::default()
        },
    )
}

fn send(sim: &mut pierce_sim::Sim, from: &str, to: SocketAddr, msg: &str) {
    sim.with_node::<Raw, _>(from, |n, _| {
        n.outbox.push_back((to, msg.as_bytes().to_vec()))
    });
}

fn heard(sim: &pierce_sim::Sim, name: &str) -> Vec<String> {
    sim.events(name)
        .iter()
        .map(|e| match &e.event {
            pierce_sim::NodeEvent::Other(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn hosts_behind_one_nat_talk_directly_on_the_lan_and_through_a_hairpin() {
    for hairpin in [true, false] {
        let mut sim = Scenario::new(seed_or(11)).build();
        // Full cone, so that only hairpinning decides whether the public path works.
        let nat = NatConfig::full_cone().with_hairpinning(hairpin);
        let echo = udp(&mut sim, "echo", Edge::Open, true);
        let a = udp(&mut sim, "a", Edge::nat(nat), false);
        let b = sim.add_node_beside("b", "a", 6001, &LinkProfile::perfect(), Raw::default());
        assert_eq!(sim.nats_of("b"), ["a"]);
        // b opens a mapping by talking to the echo server, which tells it where it came from.
        send(&mut sim, "b", echo, "who am i");
        sim.advance(SECOND);
        let b_public = sim
            .nat("a")
            .peek_outbound(sim.now(), b, echo)
            .expect("b has a mapping");
        assert_eq!(heard(&sim, "b"), [format!("from {echo}: who am i")]);
        // LAN: a reaches b at its inside address, no NAT involved.
        send(&mut sim, "a", b, "lan");
        // Hairpin: a reaches b at b's public address, out to the NAT and back in.
        send(&mut sim, "a", b_public, "hairpin");
        sim.advance(SECOND);
        let got = heard(&sim, "b");
        assert!(got.contains(&format!("from {a}: lan")), "{got:?}");
        let a_public = sim.nat("a").peek_outbound(sim.now(), a, b_public);
        let expected = a_public.map(|p| format!("from {p}: hairpin"));
        assert_eq!(
            expected.is_some_and(|e| got.contains(&e)),
            hairpin,
            "hairpin={hairpin}: {got:?}"
        );
        let s = sim.nat("a").stats();
        assert_eq!(s.hairpinned, u64::from(hairpin), "{s:?}");
        assert_eq!(s.dropped_hairpin, u64::from(!hairpin), "{s:?}");
    }
}
