//! The extra local sockets of birthday probing: opened (through the runtime, as
//! [`SocketRequest`]s) while some peer is the hard side of a birthday round, closed after,
//! except the ones a direct path found on them still uses.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::{SocketId, SocketRequest};

/// The extra sockets of birthday probing, shared by every peer that needs them.
#[derive(Debug, Default)]
pub(super) struct SocketPool {
    /// Sockets are wanted (some peer is the hard side of a birthday round).
    active: bool,
    /// Ids 1..=size belong to the pool.
    size: u16,
    /// Ids the runtime confirmed open, in order.
    open: Vec<SocketId>,
    requests: VecDeque<SocketRequest>,
}

impl SocketPool {
    pub(super) fn open_ids(&self) -> &[SocketId] {
        if self.active { &self.open } else { &[] }
    }

    pub(super) fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.requests.pop_front()
    }

    /// The runtime's answer to an open.
    pub(super) fn handle_socket_opened(&mut self, id: SocketId, local: Option<SocketAddr>) {
        if id.0 == 0 || id.0 > self.size || self.open.contains(&id) || local.is_none() {
            return;
        }
        if self.active {
            self.open.push(id);
        } else {
            // Confirmed after the pool was given up: close it again.
            self.requests.push_back(SocketRequest::Close { id });
        }
    }

    /// Opens `n` sockets when `want` starts; closes every one not in `keep` when it stops.
    pub(super) fn update(&mut self, want: bool, n: u16, keep: &[SocketId]) {
        if want && !self.active {
            self.active = true;
            self.size = self.size.max(n);
            for i in 1..=n {
                let id = SocketId(i);
                if !self.open.contains(&id) {
                    self.requests
                        .push_back(SocketRequest::Open { id, addr: None });
                }
            }
        } else if !want && self.active {
            self.active = false;
            for i in 1..=self.size {
                let id = SocketId(i);
                if !keep.contains(&id) {
                    self.requests.push_back(SocketRequest::Close { id });
                }
            }
            self.open.retain(|id| keep.contains(id));
        } else if !want {
            // A direct path that kept its socket has ended since.
            let requests = &mut self.requests;
            self.open.retain(|&id| {
                let keep = keep.contains(&id);
                if !keep {
                    requests.push_back(SocketRequest::Close { id });
                }
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([10, 0, 0, 2], port)))
    }

    fn drain(p: &mut SocketPool) -> Vec<SocketRequest> {
        std::iter::from_fn(|| p.poll_socket_request()).collect()
    }

    #[test]
    fn sockets_open_while_wanted_and_close_after_but_the_ones_a_path_keeps() {
        let mut p = SocketPool::default();
        p.update(true, 3, &[]);
        let opens = drain(&mut p);
        assert_eq!(opens.len(), 3);
        assert!(
            opens
                .iter()
                .all(|r| matches!(r, SocketRequest::Open { addr: None, .. }))
        );
        for i in 1..=3 {
            p.handle_socket_opened(SocketId(i), local(5000 + i));
        }
        assert_eq!(p.open_ids(), [SocketId(1), SocketId(2), SocketId(3)]);
        // A direct path was found on socket 2: it stays, the others close.
        p.update(false, 3, &[SocketId(2)]);
        assert_eq!(
            drain(&mut p),
            [
                SocketRequest::Close { id: SocketId(1) },
                SocketRequest::Close { id: SocketId(3) }
            ]
        );
        assert!(p.open_ids().is_empty(), "not offered for probing any more");
        // That path ended too: its socket closes.
        p.update(false, 3, &[]);
        assert_eq!(drain(&mut p), [SocketRequest::Close { id: SocketId(2) }]);
    }

    #[test]
    fn a_socket_confirmed_after_the_pool_was_given_up_is_closed_and_failures_are_ignored() {
        let mut p = SocketPool::default();
        p.update(true, 2, &[]);
        let _ = drain(&mut p);
        p.handle_socket_opened(SocketId(1), None);
        p.update(false, 2, &[]);
        let _ = drain(&mut p);
        p.handle_socket_opened(SocketId(2), local(6000));
        assert_eq!(drain(&mut p), [SocketRequest::Close { id: SocketId(2) }]);
        // Ids outside the pool (the primary socket, streams) are not its business.
        p.handle_socket_opened(SocketId(0), local(1));
        p.handle_socket_opened(SocketId(9), local(1));
        assert!(drain(&mut p).is_empty());
        assert!(p.open_ids().is_empty());
    }
}
