//! Cluster mode ([`crate::Scenario::directory`]): the server nodes share one
//! [`MemoryDirectory`] that the simulator holds, reached with a one-way latency each way.
//! A node's questions are drained after every service round, like its transmits; each
//! reaches the directory `one_way` later, is answered there at that instant, and the answer
//! reaches the node `one_way` after that. With one fixed latency and the queue's tie-break
//! by scheduling order, questions are answered in the order asked and answers arrive in that
//! order. An answer for a node that crashed or restarted since it asked is dropped (a new
//! incarnation numbers its questions from 1 again).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pierce_core::cluster::{
    ClusterConfig, DirectoryAnswer, DirectoryError, DirectoryRequest, MemoryDirectory, QueryId,
};
use pierce_core::{Server, ServerConfig};

use super::{Item, NodeState, SERVER_PORT, Sim, SimError, UNIX_START};
use crate::clock::format_time;
use crate::derive_seed;

/// The region every simulated node is in.
pub const SIM_REGION: &str = "sim";

/// What the directory did, for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Questions nodes asked.
    pub asked: u64,
    /// Questions answered.
    pub answered: u64,
    /// Questions refused because the directory was down.
    pub refused: u64,
    /// Answers that found their node crashed or restarted on their way back.
    pub orphaned: u64,
}

/// The directory and the nodes that share it.
pub(super) struct Cluster {
    dir: MemoryDirectory,
    one_way: Duration,
    /// Host id → that node's configuration (its own [`ClusterConfig`]).
    nodes: BTreeMap<usize, Arc<ServerConfig>>,
    stats: DirectoryStats,
}

/// A question or answer on its way.
pub(super) enum DirItem {
    /// Reaches the directory.
    Ask {
        node: usize,
        generation: u32,
        id: QueryId,
        request: DirectoryRequest,
    },
    /// Reaches the node.
    Answer {
        node: usize,
        generation: u32,
        id: QueryId,
        answer: Result<DirectoryAnswer, DirectoryError>,
    },
}

/// A short name for a request, for the trace.
fn kind(r: &DirectoryRequest) -> &'static str {
    match r {
        DirectoryRequest::Number { .. } => "number",
        DirectoryRequest::Heartbeat { .. } => "heartbeat",
        DirectoryRequest::Claim { .. } => "claim",
        DirectoryRequest::Hand { .. } => "hand",
        DirectoryRequest::Release { .. } => "release",
        DirectoryRequest::Rooms => "rooms",
        DirectoryRequest::TakeTicket { .. } => "ticket",
        DirectoryRequest::Leave { .. } => "leave",
        _ => "other",
    }
}

impl Sim {
    /// Turns the server and the cluster nodes into one cluster on a fresh directory (at
    /// build time, before any node was serviced).
    pub(super) fn start_cluster(&mut self, one_way: Duration, node_names: &[String]) {
        let mut nodes = BTreeMap::new();
        let names = std::iter::once(crate::SERVER.to_owned()).chain(node_names.iter().cloned());
        for (i, name) in names.enumerate() {
            let id = self.id(&name);
            let mut config = (*self.server_config).clone();
            let advertise = self.server_list[i];
            config.cluster = Some(ClusterConfig::new(name.clone(), SIM_REGION, advertise));
            nodes.insert(id, Arc::new(config));
        }
        self.cluster = Some(Cluster {
            dir: MemoryDirectory::new(),
            one_way,
            nodes,
            stats: DirectoryStats::default(),
        });
        let ids: Vec<usize> = self.cluster_node_ids();
        for id in ids {
            let node = self.new_cluster_node(id);
            self.hosts[id].node = NodeState::Running(Box::new(node));
        }
    }

    fn cluster_node_ids(&self) -> Vec<usize> {
        self.cluster
            .as_ref()
            .map(|c| c.nodes.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A fresh process for cluster node `id` (its current generation): same key and node id.
    fn new_cluster_node(&self, id: usize) -> Server {
        let Some(config) = self.cluster.as_ref().and_then(|c| c.nodes.get(&id)) else {
            self.fail(format!("{} is not a cluster node", self.hosts[id].name));
        };
        let h = &self.hosts[id];
        let seed = derive_seed(self.seed, &format!("server/{}/{}", h.name, h.generation));
        let mut server = Server::new(config.clone(), seed, self.clock.now(), UNIX_START)
            .unwrap_or_else(|e| self.fail(format!("invalid server config: {e}")));
        if id == self.server {
            if let Some(ip) = self.server_alt_ip {
                let alt = SocketAddr::new(ip, SERVER_PORT + 1);
                server
                    .enable_nat_discovery(h.addr, alt)
                    .unwrap_or_else(|e| self.fail(format!("NAT discovery: {e}")));
            }
        }
        server
    }

    /// [`crate::Action::RestartNode`]: a fresh process for the node, serviced at once.
    pub(super) fn restart_node(&mut self, id: usize) -> Result<(), SimError> {
        self.streams_host_died(id);
        self.hosts[id].generation += 1;
        let server = self.new_cluster_node(id);
        let h = &mut self.hosts[id];
        h.node = NodeState::Running(Box::new(server));
        h.wake = None;
        h.busy = 0;
        self.service(id, false)
    }

    /// Whether host `id` is a node of the cluster.
    pub(super) fn is_cluster_node(&self, id: usize) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.nodes.contains_key(&id))
    }

    /// Sends the questions node `id` has queued on their way to the directory.
    pub(super) fn ask_directory(&mut self, id: usize) {
        let Some(one_way) = self.cluster.as_ref().map(|c| c.one_way) else {
            return;
        };
        if !self.is_cluster_node(id) {
            return;
        }
        let generation = self.hosts[id].generation;
        let at = self.clock.now() + one_way;
        while let Some((qid, request)) = self
            .running_mut::<Server>(id)
            .and_then(Server::poll_directory)
        {
            if self.trace {
                let line = format!(
                    "{} {} dir? #{} {}",
                    format_time(self.elapsed()),
                    self.hosts[id].name,
                    qid.0,
                    kind(&request)
                );
                self.log.push(line);
            }
            if let Some(c) = &mut self.cluster {
                c.stats.asked += 1;
            }
            let item = DirItem::Ask {
                node: id,
                generation,
                id: qid,
                request,
            };
            self.queue.push(at, Item::Directory(item));
        }
    }

    /// A question reaches the directory, or an answer its node.
    pub(super) fn handle_directory_item(&mut self, item: DirItem) -> Result<(), SimError> {
        let now = self.clock.now();
        let Some(c) = &mut self.cluster else {
            return Ok(());
        };
        match item {
            DirItem::Ask {
                node,
                generation,
                id,
                request,
            } => {
                let answer = c.dir.answer(now, &request);
                if answer.is_ok() {
                    c.stats.answered += 1;
                } else {
                    c.stats.refused += 1;
                }
                let item = DirItem::Answer {
                    node,
                    generation,
                    id,
                    answer,
                };
                let at = now + c.one_way;
                self.queue.push(at, Item::Directory(item));
                Ok(())
            }
            DirItem::Answer {
                node,
                generation,
                id,
                answer,
            } => {
                let current = self.hosts[node].generation == generation;
                let server = match current {
                    true => self.running_mut::<Server>(node),
                    false => None,
                };
                let Some(server) = server else {
                    if let Some(c) = &mut self.cluster {
                        c.stats.orphaned += 1;
                    }
                    return Ok(());
                };
                server.handle_directory(now, id, answer);
                self.service(node, false)
            }
        }
    }

    /// Applies a directory action (down, up, wipe).
    pub(super) fn with_memory_directory(&mut self, f: impl FnOnce(&mut MemoryDirectory)) {
        match &mut self.cluster {
            Some(c) => f(&mut c.dir),
            None => self.fail("no cluster directory (Scenario::directory)"),
        }
    }

    // ---- access ------------------------------------------------------------------------

    /// The cluster's directory ([`crate::Scenario::directory`]), as it is now.
    ///
    /// # Panics
    /// Fails the test if the scenario has no directory.
    #[track_caller]
    pub fn directory(&self) -> &MemoryDirectory {
        match &self.cluster {
            Some(c) => &c.dir,
            None => self.fail("no cluster directory (Scenario::directory)"),
        }
    }

    /// What the directory did so far.
    pub fn directory_stats(&self) -> DirectoryStats {
        self.cluster.as_ref().map(|c| c.stats).unwrap_or_default()
    }

    /// The cluster's node names (the server first, then the cluster nodes in the order
    /// added); empty without a directory.
    pub fn cluster_node_names(&self) -> Vec<&str> {
        let mut ids = self.cluster_node_ids();
        ids.sort_by_key(|&id| (id != self.server, id));
        ids.into_iter()
            .map(|id| self.hosts[id].name.as_str())
            .collect()
    }

    /// The running cluster node named `name`, if it is running (`None` while crashed),
    /// without failing the test.
    pub fn try_server_node(&self, name: &str) -> Option<&Server> {
        let id = *self.names.get(name)?;
        match &self.hosts[id].node {
            NodeState::Running(n) => n.as_any().downcast_ref::<Server>(),
            NodeState::Crashed => None,
        }
    }
}
