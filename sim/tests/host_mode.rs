//! Host mode (issue #10): one player's process runs the server and its own client on one
//! socket (`pierce_core::Host`), on the internet or on a LAN, with no dedicated server.
#![allow(clippy::field_reassign_with_default)] // ClientConfig is #[non_exhaustive]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pierce_core::{
    Channel, Client, ClientConfig, Host, HostId, Path, PublicKey, SecretKey, Server, ServerConfig,
};
use pierce_sim::{Edge, LinkProfile, NatConfig, Scenario, Sim, seed_or};

mod common;
use common::received;

const SECOND: Duration = Duration::from_secs(1);
const HOST_PORT: u16 = 7777;

fn add_host(sim: &mut Sim, edge: Edge) -> (SocketAddr, PublicKey) {
    let secret = SecretKey::from_bytes([0x42; 32]);
    let key = secret.public_key();
    let addr = sim.add_node_with(
        "host",
        edge,
        HOST_PORT,
        &LinkProfile::broadband(),
        |addr, now| {
            let server = Server::new(
                Arc::new(ServerConfig::new(secret)),
                [1; 32],
                now,
                Duration::from_secs(1_800_000_000),
            )
            .expect("server config");
            Host::new(server, ClientConfig::default(), [2; 32], now, addr, &[]).expect("host")
        },
    );
    (addr, key)
}

fn remote(key: PublicKey, host: SocketAddr, seed: u8, now: std::time::Instant) -> Client {
    let mut config = ClientConfig::default();
    config.server_key = Some(key);
    let mut c = Client::new(Arc::new(config), [seed; 32], now).expect("client config");
    c.connect(now, host, &[]).expect("fresh client");
    c
}

fn id_of(sim: &Sim, name: &str) -> HostId {
    let host_id = if name == "host" {
        sim.node::<Host>(name).client().host_id()
    } else {
        sim.node::<Client>(name).host_id()
    };
    host_id.unwrap_or_else(|| sim.fail(format!("{name} is not connected")))
}

fn path(sim: &Sim, name: &str, peer: HostId) -> Option<Path> {
    let stats = if name == "host" {
        sim.node::<Host>(name).client().peer_stats(peer)
    } else {
        sim.node::<Client>(name).peer_stats(peer)
    };
    stats.map(|s| s.path)
}

fn send(sim: &mut Sim, from: &str, to: HostId, i: u32) {
    let payload = i.to_be_bytes();
    if from == "host" {
        sim.with_node::<Host, _>(from, |h, now| {
            h.client_mut()
                .send(now, to, Channel::RELIABLE_ORDERED, &payload)
        })
    } else {
        sim.with_node::<Client, _>(from, |c, now| {
            c.send(now, to, Channel::RELIABLE_ORDERED, &payload)
        })
    }
    .unwrap_or_else(|e| sim.fail(format!("{from} -> {to:?}: {e}")));
}

/// Every member streams 100 reliable messages to every other; all arrive once, in order.
fn exchange(sim: &mut Sim, names: &[&str]) {
    let ids: Vec<HostId> = names.iter().map(|n| id_of(sim, n)).collect();
    for i in 0..100u32 {
        for (a, from) in names.iter().enumerate() {
            for (b, to) in ids.iter().enumerate() {
                if a != b {
                    send(sim, from, *to, i);
                }
            }
        }
        sim.advance(Duration::from_millis(16));
    }
    sim.eventually("every stream arrives", 10 * SECOND, |s| {
        names.iter().enumerate().all(|(a, to)| {
            ids.iter()
                .enumerate()
                .all(|(b, from)| a == b || received(s, to, *from).len() == 100)
        })
    });
    for (a, to) in names.iter().enumerate() {
        for (b, from) in ids.iter().enumerate() {
            if a != b {
                let got = received(sim, to, *from);
                sim.check(got == (0..100).collect::<Vec<_>>(), || {
                    format!(
                        "{to} got {} messages from {}, not 0..100 in order",
                        got.len(),
                        names[b]
                    )
                });
            }
        }
    }
}

#[test]
fn a_listen_server_on_the_internet_hosts_players_behind_nats() {
    let mut sim = Scenario::new(seed_or(21))
        .link(LinkProfile::broadband())
        .build();
    let (addr, key) = add_host(&mut sim, Edge::Open);
    let remotes = [
        ("cone", Edge::nat(NatConfig::full_cone()), 31),
        ("home", Edge::nat(NatConfig::port_restricted()), 32),
        ("mobile", Edge::nat(NatConfig::symmetric()), 33),
    ];
    for (name, edge, seed) in remotes.clone() {
        let now = sim.now();
        sim.add_node(
            name,
            edge,
            40_000,
            &LinkProfile::broadband(),
            remote(key, addr, seed, now),
        );
    }
    let names = ["host", "cone", "home", "mobile"];
    sim.eventually("every player connects to the host", 5 * SECOND, |s| {
        names[1..]
            .iter()
            .all(|n| s.node::<Client>(n).is_connected())
    });
    sim.check(sim.node::<Host>("host").client().is_connected(), || {
        "the host's own player is not connected".to_owned()
    });
    let ids: Vec<HostId> = names.iter().map(|n| id_of(&sim, n)).collect();
    let g = sim.with_node::<Host, _>("host", |h, now| h.server_mut().create_group(now, &ids));
    sim.check(g.is_ok(), || format!("create_group: {g:?}"));
    sim.eventually("everyone knows everyone", 2 * SECOND, |s| {
        names.iter().enumerate().all(|(a, n)| {
            ids.iter()
                .enumerate()
                .all(|(b, id)| a == b || path(s, n, *id).is_some())
        })
    });
    exchange(&mut sim, &names);
    // Everyone reaches the host's player at the host's own socket, directly.
    for (name, id) in names.iter().zip(&ids).skip(1) {
        sim.check(path(&sim, name, ids[0]) == Some(Path::Direct(addr)), || {
            format!("{name} -> host: {:?}", path(&sim, name, ids[0]))
        });
        sim.check(
            matches!(path(&sim, "host", *id), Some(Path::Direct(_))),
            || format!("host -> {name}: {:?}", path(&sim, "host", *id)),
        );
    }
    // Between remote players the host's server punches as a dedicated one would.
    let home = ids[2];
    sim.check(
        matches!(path(&sim, "cone", home), Some(Path::Direct(_))),
        || format!("cone -> home: {:?}", path(&sim, "cone", home)),
    );
    let stats = sim.node::<Host>("host").stats();
    eprintln!(
        "host mode: 4 players, 100 messages per ordered pair delivered; host relayed {} \
         packets; spoofed-local drops {}",
        stats.server.relayed_packets, stats.spoofed_local
    );
    sim.check(stats.spoofed_local == 0, || "spoofed".to_owned());
}

#[test]
fn a_listen_server_on_a_lan_plays_over_the_lan() {
    let mut sim = Scenario::new(seed_or(22)).link(LinkProfile::lan()).build();
    // The host and two players behind one home router.
    let (addr, key) = add_host(&mut sim, Edge::nat(NatConfig::port_restricted()));
    for (name, seed) in [("p1", 41), ("p2", 42)] {
        let now = sim.now();
        sim.add_node_beside(
            name,
            "host",
            40_000,
            &LinkProfile::lan(),
            remote(key, addr, seed, now),
        );
    }
    let names = ["host", "p1", "p2"];
    sim.eventually("both players connect over the LAN", 2 * SECOND, |s| {
        names[1..]
            .iter()
            .all(|n| s.node::<Client>(n).is_connected())
    });
    let ids: Vec<HostId> = names.iter().map(|n| id_of(&sim, n)).collect();
    let g = sim.with_node::<Host, _>("host", |h, now| h.server_mut().create_group(now, &ids));
    sim.check(g.is_ok(), || format!("create_group: {g:?}"));
    sim.eventually("everyone knows everyone", SECOND, |s| {
        names.iter().enumerate().all(|(a, n)| {
            ids.iter()
                .enumerate()
                .all(|(b, id)| a == b || path(s, n, *id).is_some())
        })
    });
    exchange(&mut sim, &names);
    for (a, n) in names.iter().enumerate() {
        for (b, id) in ids.iter().enumerate() {
            if a != b {
                sim.check(matches!(path(&sim, n, *id), Some(Path::Direct(_))), || {
                    format!("{n} -> {}: {:?}", names[b], path(&sim, n, *id))
                });
            }
        }
    }
    // Nothing left the LAN.
    let nat = sim.nats_of("host")[0].to_owned();
    let out = sim.nat(&nat).stats();
    sim.check(out.translated_out == 0, || {
        format!("{} datagrams left the LAN", out.translated_out)
    });
}
