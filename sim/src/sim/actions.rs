//! Scripted actions: what [`Action`]s do to the network and the nodes.

use std::net::SocketAddr;
use std::time::Duration;

use pierce_core::cluster::MemoryDirectory;
use pierce_core::{Client, Server};

use super::{Item, NodeState, SERVER_PORT, Sim, SimError};
use crate::clock::format_time;
use crate::scenario::Action;

impl Sim {
    // ---- actions -----------------------------------------------------------------------

    /// Applies a scripted action now.
    ///
    /// # Errors
    /// A busy loop in a node serviced by the action.
    pub fn apply(&mut self, action: Action) -> Result<(), SimError> {
        let now = self.clock.now();
        self.log.push(format!(
            "{} action: {action:?}",
            format_time(self.elapsed())
        ));
        match action {
            Action::Roam(name) => {
                let id = self.id(&name);
                self.refuse_ipv6_only(id, "roam");
                let chain = self.net.chain(self.hosts[id].realm);
                // Streams of every host whose public IP changes break (a reset).
                let moved: Vec<usize> = match chain.last() {
                    Some(outer) => (0..self.hosts.len())
                        .filter(|&h| self.net.chain(self.hosts[h].realm).contains(outer))
                        .collect(),
                    None => vec![id],
                };
                if let Some((&outer, inner)) = chain.split_last() {
                    for &n in inner {
                        self.net.nats[n].nat.flush();
                    }
                    self.net.readdress_nat(outer);
                } else {
                    let h = &self.hosts[id];
                    let old = h.addr;
                    let new = self.net.readdress_host(id, h.realm, h.addr, true);
                    self.hosts[id].addr = new;
                    for a in self.hosts[id].extra.values_mut() {
                        if a.ip() == old.ip() {
                            a.set_ip(new.ip());
                        }
                    }
                }
                self.update_server_addr(id);
                return self.break_streams_of(&moved, "address changed");
            }
            Action::Rebind(name) => {
                let id = self.id(&name);
                self.refuse_ipv6_only(id, "rebind");
                let chain = self.net.chain(self.hosts[id].realm);
                if chain.is_empty() {
                    let h = &self.hosts[id];
                    self.hosts[id].addr = self.net.readdress_host(id, h.realm, h.addr, false);
                } else {
                    for n in chain {
                        self.net.nats[n].nat.flush();
                    }
                }
                self.update_server_addr(id);
            }
            Action::Partition(a, b) => {
                let (a, b) = (self.id(&a), self.id(&b));
                self.net.partition(a, b);
                self.net.partition(b, a);
            }
            Action::PartitionOneWay(from, to) => {
                let (from, to) = (self.id(&from), self.id(&to));
                self.net.partition(from, to);
            }
            Action::Heal(a, b) => {
                let (a, b) = (self.id(&a), self.id(&b));
                self.net.heal(a, b);
                self.net.heal(b, a);
                self.kick_streams();
            }
            Action::Offline(name) => {
                let id = self.id(&name);
                self.net.set_offline(id, true);
            }
            Action::Online(name) => {
                let id = self.id(&name);
                self.net.set_offline(id, false);
                self.kick_streams();
            }
            Action::SetMtu(name, mtu) => {
                let id = self.id(&name);
                self.hosts[id].up.set_mtu(mtu);
                self.hosts[id].down.set_mtu(mtu);
            }
            Action::PathMtu(a, b, mtu) => {
                let (a, b) = (self.id(&a), self.id(&b));
                self.net.set_path_mtu(a, b, mtu);
                self.net.set_path_mtu(b, a, mtu);
            }
            Action::BlockUdp(name) => {
                let id = self.id(&name);
                self.net.set_udp_blocked(id, true);
            }
            Action::UnblockUdp(name) => {
                let id = self.id(&name);
                self.net.set_udp_blocked(id, false);
            }
            Action::RestartServer if self.cluster.is_some() => {
                return self.restart_node(self.server);
            }
            Action::RestartNode(name) => {
                let id = self.id(&name);
                if !self.is_cluster_node(id) {
                    self.fail(format!("{name} is not a cluster node"));
                }
                return self.restart_node(id);
            }
            Action::Drain(name, within) => {
                let id = self.id(&name);
                match self.running_mut::<Server>(id) {
                    Some(s) => s.drain(now, within),
                    None => self.note(format!("{name}: drain: not running")),
                }
                return self.service(id, false);
            }
            Action::DirectoryDown => self.with_memory_directory(|d| d.set_down(true)),
            Action::DirectoryUp => self.with_memory_directory(|d| d.set_down(false)),
            Action::DirectoryWipe => self.with_memory_directory(MemoryDirectory::wipe),
            Action::RestartServer => {
                let id = self.server;
                self.streams_host_died(id);
                self.hosts[id].generation += 1;
                let server = self.new_server(self.hosts[id].generation);
                let h = &mut self.hosts[id];
                h.node = NodeState::Running(Box::new(server));
                h.wake = None;
                h.busy = 0;
                return self.service(id, false);
            }
            Action::Crash(name) => {
                let id = self.id(&name);
                self.streams_host_died(id);
                let h = &mut self.hosts[id];
                h.node = NodeState::Crashed;
                h.wake = None;
            }
            Action::Reconnect(name) => {
                let id = self.client_id(&name);
                self.streams_host_died(id);
                self.hosts[id].generation += 1;
                self.start_client(id);
                return self.service(id, false);
            }
            Action::Send(name, payload) => {
                let id = self.client_id(&name);
                let result = match self.running_mut::<Client>(id) {
                    Some(c) => c.send_to_server(now, &payload).map_err(|e| e.to_string()),
                    None => Err("not running".to_owned()),
                };
                if let Err(e) = result {
                    self.note(format!("{name}: send failed: {e}"));
                }
                return self.service(id, false);
            }
            Action::ServerSend(name, payload) => {
                let id = self.client_id(&name);
                let host = self.running_mut::<Client>(id).and_then(|c| c.host_id());
                let sid = self.server;
                let result = match (host, self.running_mut::<Server>(sid)) {
                    (Some(h), Some(s)) => s.send(now, h, &payload).map_err(|e| e.to_string()),
                    _ => Err("not connected".to_owned()),
                };
                if let Err(e) = result {
                    self.note(format!("server: send to {name} failed: {e}"));
                }
                return self.service(sid, false);
            }
            Action::Disconnect(name, code) => {
                let id = self.client_id(&name);
                if let Some(c) = self.running_mut::<Client>(id) {
                    c.disconnect(now, code);
                }
                return self.service(id, false);
            }
        }
        Ok(())
    }

    /// After the server moved, new clients dial its new address (as if DNS followed);
    /// clients already running keep the address they were given.
    pub(super) fn update_server_addr(&mut self, id: usize) {
        if id != self.server {
            return;
        }
        let h = &self.hosts[id];
        self.server_addr = match self.net.chain(h.realm).last() {
            Some(&outer) => SocketAddr::new(self.net.nats[outer].nat.public_ip(), SERVER_PORT),
            None => h.addr,
        };
    }

    /// Schedules `action` to run `after` from now.
    pub fn schedule(&mut self, after: Duration, action: Action) {
        let t = self.clock.now() + after;
        self.queue.push(t, Item::Action(action));
    }

    pub(super) fn note(&mut self, msg: String) {
        self.log
            .push(format!("{} {msg}", format_time(self.elapsed())));
    }
}
