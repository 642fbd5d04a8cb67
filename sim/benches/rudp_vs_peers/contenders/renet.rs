//! renet: one `RenetServer` per peer holding a connection to every other peer.

use std::time::Duration;

use bytes::Bytes;
use renet::{ConnectionConfig, DefaultChannel, RenetServer, SendType};

use crate::harness::{Cx, Mesh};
use crate::link::{Arrival, Route};
use crate::workload::Workload;

pub(crate) struct RenetMesh {
    n: usize,
    /// One server per peer, with a connection to every other peer (client id = peer index).
    servers: Vec<RenetServer>,
    /// How far each server's clock has been advanced.
    clock: Vec<Duration>,
    tick_ch: u8,
    blob_ch: u8,
    blob: bool,
}

impl RenetMesh {
    pub(crate) fn new(wl: &Workload, fast: bool) -> Self {
        let (config, tick_ch, blob_ch) = if fast {
            let resend_time = Duration::from_millis(100);
            let ch = |channel_id, send_type| renet::ChannelConfig {
                channel_id,
                max_memory_usage_bytes: 5 << 20,
                send_type,
            };
            let channels = vec![
                ch(0, SendType::Unreliable),
                ch(1, SendType::ReliableOrdered { resend_time }),
                ch(2, SendType::ReliableUnordered { resend_time }),
            ];
            let config = ConnectionConfig {
                available_bytes_per_tick: ConnectionConfig::default().available_bytes_per_tick,
                server_channels_config: channels.clone(),
                client_channels_config: channels,
            };
            (config, if wl.reliable { 1 } else { 0 }, 2)
        } else {
            let tick: u8 = if wl.reliable {
                DefaultChannel::ReliableOrdered.into()
            } else {
                DefaultChannel::Unreliable.into()
            };
            let blob: u8 = DefaultChannel::ReliableUnordered.into();
            (ConnectionConfig::default(), tick, blob)
        };
        let n = wl.peers;
        let servers = (0..n)
            .map(|p| {
                let mut s = RenetServer::new(config.clone());
                for q in (0..n).filter(|&q| q != p) {
                    s.add_connection(q as u64);
                }
                while s.get_event().is_some() {}
                s
            })
            .collect();
        Self {
            n,
            servers,
            clock: vec![Duration::ZERO; n],
            tick_ch,
            blob_ch,
            blob: wl.blob_at.is_some(),
        }
    }
}

impl Mesh for RenetMesh {
    fn send(&mut self, _cx: &mut Cx<'_>, from: usize, to: usize, msg: Bytes) {
        self.servers[from].send_message(to as u64, self.tick_ch, msg);
    }

    fn send_blob(&mut self, _cx: &mut Cx<'_>, from: usize, to: usize, blob: &Bytes) {
        self.servers[from].send_message(to as u64, self.blob_ch, blob.clone());
    }

    fn tick(&mut self, cx: &mut Cx<'_>, peer: usize) {
        let s = &mut self.servers[peer];
        s.update(cx.t - self.clock[peer]);
        self.clock[peer] = cx.t;
        for q in (0..self.n).filter(|&q| q != peer) {
            for pkt in s.get_packets_to_send(q as u64).unwrap() {
                let len = pkt.len();
                let route = Route { from: peer, to: q };
                drop(cx.net.send(cx.t, route, 0, pkt, len, 0));
            }
            if s.disconnect_reason(q as u64).is_some() {
                // renet has no timeout; it disconnects when a channel's memory fills up.
                cx.check.fail("renet dropped a connection");
            }
        }
    }

    fn receive(&mut self, cx: &mut Cx<'_>, a: Arrival) {
        let s = &mut self.servers[a.to];
        let from = a.from as u64;
        s.process_packet_from(&a.buf[..a.len], from).unwrap();
        while let Some(m) = s.receive_message(from, self.tick_ch) {
            cx.check.tick(cx.t, a.to, a.from, &m);
        }
        if self.blob {
            while let Some(m) = s.receive_message(from, self.blob_ch) {
                cx.check.blob(cx.t, &m);
            }
        }
    }
}
