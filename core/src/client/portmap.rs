//! The client's port mapping at its default gateway ([`crate::portmap::PortMapping`]):
//! started once the runtime has named the gateway ([`crate::Client::set_gateway`]) and an
//! IPv4 local address of the primary socket is known
//! ([`crate::Client::set_local_addresses`]), with [`crate::ClientConfig::port_mapping`] on
//! (and neither `private` nor `direct_paths` off). Its results become client events; the
//! mapped address is offered to peers as a candidate by the client.
//!
//! UPnP IGD's HTTP exchanges run on TCP streams numbered from [`UPNP_STREAMS`] up (the
//! session's TCP fallback uses the numbers below): each machine gets one of two blocks of
//! [`UPNP_STREAM_BLOCK`], alternately, so the machine deleting an old mapping and its
//! successor never name the same stream.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use rand::RngCore;

use crate::event::ClientEvent;
use crate::portmap::{PortMapStats, PortMapping, UPNP_STREAM_BLOCK};
use crate::rng::Rng;
use crate::time::{Instant, Timeout};
use crate::{SocketId, SocketRequest, Transmit};

/// The first stream number port mapping uses (two blocks of [`UPNP_STREAM_BLOCK`] from here
/// fill 0x4000..=0x7fff).
pub(super) const UPNP_STREAMS: u16 = 0x4000;

#[derive(Default)]
pub(super) struct PortMapper {
    gateway: Option<Ipv4Addr>,
    /// The local address the mapping is for.
    local: Option<SocketAddrV4>,
    machine: Option<PortMapping>,
    /// A replaced machine still deleting its mapping (at the old gateway, or for the old
    /// address), until its delete is sent and answered or given up.
    closing: Option<PortMapping>,
    /// Counters of machines replaced (a new gateway or local address).
    past: PortMapStats,
    events: VecDeque<ClientEvent>,
    /// Machines started so far (which block of stream numbers the next one gets).
    started: u16,
    /// Stream closes of machines dropped (their last requests).
    requests: VecDeque<SocketRequest>,
}

impl PortMapper {
    /// The gateway and the primary socket's local addresses as they are now: a mapping is
    /// (re)started when either changed and both are known, or when the one there was has
    /// ended (failed, refused, deleted); an old one is deleted first.
    pub(super) fn update(
        &mut self,
        now: Instant,
        gateway: Option<IpAddr>,
        locals: impl Iterator<Item = SocketAddr>,
        rng: &mut Rng,
    ) {
        let gateway = match gateway {
            Some(IpAddr::V4(g)) if !g.is_unspecified() => Some(g),
            _ => None,
        };
        let local = gateway.and_then(|g| pick_local(g, locals));
        let live = self.machine.as_ref().is_some_and(|m| !m.is_done());
        if gateway == self.gateway && local == self.local && live {
            return;
        }
        self.close(now);
        self.retire();
        self.gateway = gateway;
        self.local = local;
        if let (Some(g), Some(l)) = (gateway, local) {
            let mut nonce = [0u8; 12];
            rng.fill_bytes(&mut nonce);
            let block = UPNP_STREAMS + (self.started % 2) * UPNP_STREAM_BLOCK;
            self.started = self.started.wrapping_add(1);
            self.machine = Some(PortMapping::new(now, g, l, nonce, block));
        }
    }

    /// Deletes the mapping (one more send and a retransmission while the client is driven).
    pub(super) fn close(&mut self, now: Instant) {
        if let Some(m) = &mut self.machine {
            m.close(now);
            self.drain();
        }
    }

    /// The public address the gateway forwards to this client, while there is one.
    pub(super) fn external(&self) -> Option<SocketAddr> {
        self.machine.as_ref().and_then(PortMapping::external)
    }

    pub(super) fn stats(&self) -> PortMapStats {
        let mut s = self.past;
        for m in self.machine.iter().chain(&self.closing) {
            add(&mut s, m.stats());
        }
        s
    }

    /// A datagram from the gateway's PCP port (or, while UPnP IGD searches, an SSDP answer
    /// from its IP) on the primary socket is the machine's; so are bytes on UPnP's streams.
    pub(super) fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        if socket.is_stream() {
            return self.on_stream(socket, |m| m.handle_stream_data(now, socket, datagram));
        }
        if socket != SocketId::PRIMARY {
            return false;
        }
        let closing = self.closing.as_mut();
        if closing.is_some_and(|m| m.handle_input(now, from, datagram)) {
            self.reap();
            return true;
        }
        let Some(m) = &mut self.machine else {
            return false;
        };
        let mine = m.handle_input(now, from, datagram);
        self.drain();
        mine
    }

    /// The runtime's answer to a connect: true if stream `id` is port mapping's.
    pub(super) fn handle_stream_opened(
        &mut self,
        now: Instant,
        id: SocketId,
        local: Option<SocketAddr>,
    ) -> bool {
        self.on_stream(id, |m| m.handle_stream_opened(now, id, local))
    }

    /// Stream `id` ended: true if it is port mapping's.
    pub(super) fn handle_stream_closed(&mut self, now: Instant, id: SocketId) -> bool {
        self.on_stream(id, |m| m.handle_stream_closed(now, id))
    }

    /// Hands stream `id`'s input to the machine whose stream it is.
    fn on_stream(&mut self, id: SocketId, f: impl FnOnce(&mut PortMapping) -> bool) -> bool {
        if let Some(m) = self.closing.as_mut().filter(|m| m.owns_stream(id)) {
            let mine = f(m);
            self.reap();
            return mine;
        }
        let Some(m) = self.machine.as_mut().filter(|m| m.owns_stream(id)) else {
            return false;
        };
        let mine = f(m);
        self.drain();
        mine
    }

    pub(super) fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        if let Some(r) = self.requests.pop_front() {
            return Some(r);
        }
        let old = self
            .closing
            .as_mut()
            .and_then(PortMapping::poll_socket_request);
        old.or_else(|| self.machine.as_mut()?.poll_socket_request())
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if let Some(m) = &mut self.closing {
            m.handle_timeout(now);
            self.reap();
        }
        if let Some(m) = &mut self.machine {
            m.handle_timeout(now);
            self.drain();
        }
    }

    pub(super) fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let old = self.closing.as_mut().and_then(|m| m.poll_transmit(buf));
        old.or_else(|| self.machine.as_mut()?.poll_transmit(buf))
    }

    pub(super) fn poll_timeout(&self) -> Option<Timeout> {
        let at = (self.machine.iter().chain(&self.closing))
            .filter_map(PortMapping::poll_timeout)
            .min();
        Timeout::at(at, "port mapping")
    }

    pub(super) fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn drain(&mut self) {
        let Some(m) = &mut self.machine else {
            return;
        };
        let gateway = m.server().ip();
        while let Some(event) = m.poll_event() {
            self.events
                .push_back(ClientEvent::PortMapping { gateway, event });
        }
    }

    /// Moves the current machine aside: to `closing` while its delete is under way, else
    /// (done) only its counters are kept. A machine still closing from before is dropped.
    fn retire(&mut self) {
        if let Some(mut old) = self.closing.take() {
            old.abandon();
            self.forget(old);
        }
        if let Some(m) = self.machine.take() {
            if m.is_done() {
                self.forget(m);
            } else {
                self.closing = Some(m);
            }
        }
    }

    /// Drops the closing machine once it is done (keeping its counters).
    fn reap(&mut self) {
        if let Some(m) = self.closing.take_if(|m| m.is_done()) {
            self.forget(m);
        }
    }

    /// Drops a machine that is done: its counters are kept, and its last stream closes
    /// still go out.
    fn forget(&mut self, mut m: PortMapping) {
        add(&mut self.past, m.stats());
        self.requests
            .extend(std::iter::from_fn(|| m.poll_socket_request()));
    }
}

fn add(s: &mut PortMapStats, o: PortMapStats) {
    s.requests_sent += o.requests_sent;
    s.granted += o.granted;
    s.renewed += o.renewed;
    s.lost += o.lost;
    s.failed += o.failed;
    s.epoch_resets += o.epoch_resets;
    s.dropped += o.dropped;
}

/// The IPv4 local address on the gateway's network: the one sharing the longest prefix with
/// it (PCP checks the client address it is told against the source, RFC 6887 §8.1).
fn pick_local(gateway: Ipv4Addr, locals: impl Iterator<Item = SocketAddr>) -> Option<SocketAddrV4> {
    let g = u32::from(gateway);
    locals
        .filter_map(|a| match a {
            SocketAddr::V4(v4) if !v4.ip().is_loopback() && !v4.ip().is_unspecified() => Some(v4),
            _ => None,
        })
        .max_by_key(|a| (u32::from(*a.ip()) ^ g).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_address_on_the_gateways_network_is_the_one_mapped() {
        let locals: Vec<SocketAddr> = vec![
            "10.8.0.5:4000".parse().unwrap(),
            "[fd00::5]:4000".parse().unwrap(),
            "192.168.1.10:4000".parse().unwrap(),
            "127.0.0.1:4000".parse().unwrap(),
        ];
        let g = Ipv4Addr::new(192, 168, 1, 1);
        assert_eq!(
            pick_local(g, locals.iter().copied()),
            Some("192.168.1.10:4000".parse().unwrap())
        );
        assert_eq!(pick_local(g, locals[1..2].iter().copied()), None);
    }
}
