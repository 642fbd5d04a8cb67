//! enet (rusty_enet): one `Host` per peer over an in-memory socket.

use std::cell::Cell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use rusty_enet as enet;

use crate::harness::{Cx, Mesh};
use crate::link::{Arrival, Route};
use crate::workload::{MTU, PORT_BASE, Profile, Workload};

/// An in-memory UDP socket for one ENet host: `send` copies into a pooled buffer, as the
/// kernel would copy into its own.
#[derive(Debug, Default)]
struct SimSock {
    out: VecDeque<(SocketAddrV4, Vec<u8>)>,
    inbound: VecDeque<(SocketAddrV4, Vec<u8>, usize)>,
    pool: Vec<Vec<u8>>,
}

impl enet::Socket for SimSock {
    type Address = SocketAddrV4;
    type Error = Infallible;

    fn send(&mut self, address: SocketAddrV4, buffer: &[u8]) -> Result<usize, Infallible> {
        let mut v = self.pool.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(buffer);
        self.out.push_back((address, v));
        Ok(buffer.len())
    }

    fn receive(
        &mut self,
        buffer: &mut [u8; enet::MTU_MAX],
    ) -> Result<Option<(SocketAddrV4, enet::PacketReceived)>, Infallible> {
        let Some((from, v, len)) = self.inbound.pop_front() else {
            return Ok(None);
        };
        buffer[..len].copy_from_slice(&v[..len]);
        self.pool.push(v);
        Ok(Some((from, enet::PacketReceived::Complete(len))))
    }
}

fn enet_addr(peer: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, PORT_BASE + peer as u16)
}

fn enet_peer_of(addr: SocketAddrV4) -> usize {
    usize::from(addr.port() - PORT_BASE)
}

pub(crate) struct EnetMesh {
    n: usize,
    hosts: Vec<enet::Host<SimSock>>,
    /// `ids[p * n + q]`: host p's peer id for peer q.
    ids: Vec<enet::PeerID>,
    /// `remote[p][id]`: which peer host p's peer `id` is.
    remote: Vec<Vec<usize>>,
    /// ENet's clock (all hosts): `t0` + virtual time.
    clock: Rc<Cell<Duration>>,
    t0: Duration,
    reliable: bool,
}

impl EnetMesh {
    /// Hosts connected over a lossless link with the profile's one-way delay (the handshake
    /// is neither timed nor counted).
    pub(crate) fn new(wl: &Workload, fast: bool, profile: &Profile, seed: u64) -> Self {
        let n = wl.peers;
        let clock = Rc::new(Cell::new(Duration::from_secs(1)));
        let mut hosts: Vec<enet::Host<SimSock>> = (0..n)
            .map(|p| {
                let c = Rc::clone(&clock);
                let settings = enet::HostSettings {
                    peer_limit: n,
                    channel_limit: 2,
                    time: Box::new(move || c.get()),
                    seed: Some((seed as u32) ^ (p as u32).wrapping_mul(0x9E37_79B9)),
                    ..enet::HostSettings::default()
                };
                let sock = SimSock {
                    pool: (0..64).map(|_| Vec::with_capacity(MTU)).collect(),
                    ..SimSock::default()
                };
                let mut h = enet::Host::new(sock, settings).unwrap();
                h.set_mtu(MTU as u16).unwrap();
                h
            })
            .collect();
        for (p, h) in hosts.iter_mut().enumerate() {
            for q in p + 1..n {
                h.connect(enet_addr(q), 2, 0).unwrap();
            }
        }
        let step = profile.one_way.max(Duration::from_millis(1));
        let mut settle = 0;
        for _ in 0..1000 {
            clock.set(clock.get() + step);
            let mut moved = false;
            for p in 0..n {
                while let Some((dst, v)) = hosts[p].socket_mut().out.pop_front() {
                    let len = v.len();
                    hosts[enet_peer_of(dst)]
                        .socket_mut()
                        .inbound
                        .push_back((enet_addr(p), v, len));
                    moved = true;
                }
            }
            for h in &mut hosts {
                while let Some(ev) = h.service().unwrap() {
                    if let enet::EventNoRef::Disconnect { .. } | enet::EventNoRef::Receive { .. } =
                        ev.no_ref()
                    {
                        panic!("enet: unexpected event during the handshake");
                    }
                }
            }
            let connected = hosts
                .iter_mut()
                .all(|h| h.connected_peers().count() == n - 1);
            if connected && !moved {
                settle += 1;
                if settle == 3 {
                    break;
                }
            }
        }
        let mut ids = vec![enet::PeerID(0); n * n];
        let mut remote = vec![vec![usize::MAX; n]; n];
        for (p, h) in hosts.iter_mut().enumerate() {
            assert_eq!(h.connected_peers().count(), n - 1, "enet: handshake failed");
            for peer in h.connected_peers_mut() {
                let q = enet_peer_of(peer.address().unwrap());
                ids[p * n + q] = peer.id();
                remote[p][peer.id().0] = q;
                if fast {
                    peer.set_ping_interval(100);
                }
            }
        }
        let t0 = clock.get() + Duration::from_millis(1);
        clock.set(t0);
        Self {
            n,
            hosts,
            ids,
            remote,
            clock,
            t0,
            reliable: wl.reliable,
        }
    }

    /// `service` until idle, then puts what the host sent on the links.
    fn service(&mut self, cx: &mut Cx<'_>, p: usize) {
        self.clock.set(self.t0 + cx.t);
        let h = &mut self.hosts[p];
        while let Some(ev) = h.service().unwrap() {
            match ev.no_ref() {
                enet::EventNoRef::Receive {
                    peer,
                    channel_id,
                    packet,
                } => {
                    let q = self.remote[p][peer.0];
                    if channel_id == 0 {
                        cx.check.tick(cx.t, p, q, packet.data());
                    } else {
                        cx.check.blob(cx.t, packet.data());
                    }
                }
                enet::EventNoRef::Disconnect { .. } => {
                    // ENet gives up on a peer whose reliable data stays unacknowledged past
                    // its timeouts (5 s at 32 timeouts, or 30 s): a dropped connection.
                    cx.check.fail("enet timed out a connection");
                }
                ev @ enet::EventNoRef::Connect { .. } => panic!("enet: {p} saw {ev:?}"),
            }
        }
        let sock = h.socket_mut();
        while let Some((dst, v)) = sock.out.pop_front() {
            let len = v.len();
            let route = Route {
                from: p,
                to: enet_peer_of(dst),
            };
            if let Some(lost) = cx.net.send(cx.t, route, 0, v, len, 0) {
                sock.pool.push(lost);
            }
        }
    }
}

impl Mesh for EnetMesh {
    fn send(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, msg: Bytes) {
        self.clock.set(self.t0 + cx.t);
        let packet = if self.reliable {
            enet::Packet::reliable(&msg[..])
        } else {
            enet::Packet::unreliable(&msg[..])
        };
        let id = self.ids[from * self.n + to];
        if let Err(e) = self.hosts[from].peer_mut(id).send(0, &packet) {
            assert!(cx.check.failed.is_some(), "enet: send failed: {e:?}");
        }
    }

    fn send_blob(&mut self, cx: &mut Cx<'_>, from: usize, to: usize, blob: &Bytes) {
        self.clock.set(self.t0 + cx.t);
        let id = self.ids[from * self.n + to];
        let packet = enet::Packet::reliable(&blob[..]);
        self.hosts[from].peer_mut(id).send(1, &packet).unwrap();
    }

    fn tick(&mut self, cx: &mut Cx<'_>, peer: usize) {
        self.service(cx, peer);
    }

    fn receive(&mut self, cx: &mut Cx<'_>, a: Arrival) {
        let sock = self.hosts[a.to].socket_mut();
        sock.inbound.push_back((enet_addr(a.from), a.buf, a.len));
        self.service(cx, a.to);
    }
}
