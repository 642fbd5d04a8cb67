//! `RedisDirectory` against a real `redis-server` (started by each test, see
//! `support/redis.rs`): the same request sequences are answered by it and by
//! `MemoryDirectory`, the reference meaning of every request, and the answers must be equal,
//! including time to live (short TTLs and real sleeps; the memory directory's clock is
//! advanced by the same amounts), lost rooms, a wiped Redis refilled by heartbeats, tickets,
//! numbers and a long seeded random walk. Then what only a real Redis has: outages (stopped,
//! frozen) and their end, two nodes racing for the same rooms, and `DirectoryThread`.
#![allow(clippy::unwrap_used)]

#[path = "support/redis.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use pierce_core::cluster::{
    Claim, DirectoryAnswer, DirectoryError, DirectoryRequest, ListedRoom, MemoryDirectory,
    NodeInfo, NodeLoad, QueryId,
};
use pierce_mio::cluster::{DEFAULT_TIMEOUT, DirectoryThread, RedisDirectory};
use support::Redis;

/// Short enough to wait out, long enough that a few requests' latency (on a loaded 2-core
/// machine) never moves an expiry across a sleep's edge: every sleep below lands at least
/// 100 ms from any deadline.
const TTL: Duration = Duration::from_millis(600);
const HALF: Duration = Duration::from_millis(350);

/// A stopped or frozen Redis must fail a request within this: one connect timeout plus one
/// read timeout, and slack for a loaded machine.
const FAIL_WITHIN: Duration = Duration::from_millis(3 * DEFAULT_TIMEOUT.as_millis() as u64 + 1500);

fn node(id: &str, port: u16) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        region: if port % 2 == 0 {
            "eu".into()
        } else {
            String::new()
        },
        udp: SocketAddr::from(([192, 0, 2, 1], port)),
        tcp: (port % 3 == 0).then(|| "[2001:db8::7]:443".parse().unwrap()),
        load: NodeLoad {
            clients: u32::from(port),
            rooms: 2,
            relayed_bytes_per_sec: 1 << 40,
            cpu_percent: 130,
        },
        draining: port % 5 == 0,
    }
}

fn room(name: &str, members: u16) -> ListedRoom {
    ListedRoom {
        name: name.into(),
        members,
        max_members: 8,
        has_password: members % 2 == 1,
        relay_only: name.contains(' '),
    }
}

fn beat(
    node: &NodeInfo,
    rooms: impl IntoIterator<Item = ListedRoom>,
    ttl: Duration,
) -> DirectoryRequest {
    DirectoryRequest::Heartbeat {
        node: node.clone(),
        rooms: rooms.into_iter().collect(),
        ttl,
        room_ttl: ttl,
    }
}

fn claim(room: &str, node: &str, create: bool, ttl: Duration) -> DirectoryRequest {
    DirectoryRequest::Claim {
        room: room.into(),
        node: node.into(),
        create,
        ttl,
    }
}

fn hand(room: &str, from: &str, to: &str, ttl: Duration) -> DirectoryRequest {
    DirectoryRequest::Hand {
        room: room.into(),
        from: from.into(),
        to: to.into(),
        ttl,
    }
}

fn release(room: &str, node: &str) -> DirectoryRequest {
    DirectoryRequest::Release {
        room: room.into(),
        node: node.into(),
    }
}

fn leave(node: &str) -> DirectoryRequest {
    DirectoryRequest::Leave { node: node.into() }
}

fn ticket(id: u64, ttl: Duration) -> DirectoryRequest {
    DirectoryRequest::TakeTicket { id, ttl }
}

fn number() -> DirectoryRequest {
    DirectoryRequest::Number { node: "n".into() }
}

/// The reference and Redis, asked the same things.
struct Both {
    memory: MemoryDirectory,
    now: Instant,
    redis: RedisDirectory,
    asked: usize,
}

impl Both {
    fn new(server: &Redis, namespace: &str) -> Self {
        Self {
            memory: MemoryDirectory::new(),
            now: Instant::now(),
            redis: RedisDirectory::connect(&server.url(), namespace).unwrap(),
            asked: 0,
        }
    }

    /// Asks both; their answers must be equal. Returns the answer.
    #[track_caller]
    fn ask(&mut self, request: DirectoryRequest) -> DirectoryAnswer {
        self.asked += 1;
        let expected = self.memory.answer(self.now, &request);
        let got = self.redis.answer(&request);
        assert_eq!(got, expected, "request {} {request:?}", self.asked);
        got.unwrap()
    }

    /// Sleeps `d` and moves the reference's clock as far.
    fn sleep(&mut self, d: Duration) {
        thread::sleep(d);
        self.now += d;
    }
}

fn nodes(answer: &DirectoryAnswer) -> Vec<&str> {
    match answer {
        DirectoryAnswer::Nodes { nodes, .. } => nodes.iter().map(|n| n.id.as_str()).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn claims_belong_to_one_live_node_and_free_up_when_its_registration_expires() {
    let Some(server) = Redis::start() else { return };
    let mut d = Both::new(&server, "expiry");
    let (a, b) = (node("a", 4000), node("b", 4001));
    d.ask(beat(&a, [], TTL));
    d.ask(beat(&b, [], TTL));
    assert_eq!(
        d.ask(claim("r", "a", false, TTL)),
        DirectoryAnswer::Claim(Claim::Missing)
    );
    assert_eq!(
        d.ask(claim("r", "a", true, TTL)),
        DirectoryAnswer::Claim(Claim::Ours)
    );
    d.ask(claim("r", "a", true, TTL));
    assert_eq!(
        d.ask(claim("r", "b", true, TTL)),
        DirectoryAnswer::Claim(Claim::Theirs(a.clone()))
    );
    // Half a TTL on, only b heartbeats: a is still registered and still holds r.
    d.sleep(HALF);
    assert_eq!(nodes(&d.ask(beat(&b, [], TTL))), ["a", "b"]);
    d.ask(claim("r", "b", true, TTL));
    // Past a's registration: b takes the room, the registry holds b alone.
    d.sleep(HALF);
    assert_eq!(nodes(&d.ask(beat(&b, [room("r", 1)], TTL))), ["b"]);
    assert_eq!(
        d.ask(claim("r", "b", false, TTL)),
        DirectoryAnswer::Claim(Claim::Ours)
    );
    d.ask(claim("r", "a", true, TTL));
    d.ask(DirectoryRequest::Rooms);
    // a comes back: r stays b's, and a's heartbeat listing it reports it lost.
    let answer = d.ask(beat(&a, [room("r", 3)], TTL));
    assert_eq!(
        answer,
        DirectoryAnswer::Nodes {
            nodes: vec![a.clone(), b.clone()],
            lost: vec!["r".into()]
        }
    );
    // Both list r; the cluster's list shows it once, as the lower node id has it.
    assert_eq!(
        d.ask(DirectoryRequest::Rooms),
        DirectoryAnswer::Rooms(vec![room("r", 3)])
    );
}

#[test]
fn a_claim_the_node_holds_already_is_refreshed() {
    let Some(server) = Redis::start() else { return };
    let mut d = Both::new(&server, "refresh");
    let (a, b) = (node("a", 4000), node("b", 4001));
    d.ask(beat(&a, [room("r", 1)], TTL));
    d.ask(beat(&b, [], TTL));
    d.sleep(HALF);
    // a (restarted, say) claims the room it holds: the claim runs a TTL from now.
    assert_eq!(
        d.ask(claim("r", "a", false, TTL)),
        DirectoryAnswer::Claim(Claim::Ours)
    );
    d.ask(beat(&a, [], TTL));
    d.ask(beat(&b, [], TTL));
    d.sleep(HALF);
    // Past the first claim's TTL, within the refreshed one: still a's.
    assert_eq!(
        d.ask(claim("r", "b", true, TTL)),
        DirectoryAnswer::Claim(Claim::Theirs(a.clone()))
    );
}

#[test]
fn heartbeats_refresh_claims_report_lost_rooms_and_refill_a_wiped_redis() {
    let Some(server) = Redis::start() else { return };
    let mut d = Both::new(&server, "heartbeat");
    let (a, b, c) = (node("a", 5000), node("b", 5001), node("c", 5002));
    let (x, y) = (room("x y", 2), room("y%", 5));
    d.ask(beat(&a, [x.clone()], TTL));
    d.ask(beat(&b, [], TTL));
    d.ask(beat(&c, [], TTL));
    d.ask(claim("y%", "c", true, TTL)); // claimed, never listed in a heartbeat
    d.ask(claim("z", "c", true, TTL));
    d.sleep(HALF);
    d.ask(beat(&a, [x.clone()], TTL));
    d.ask(beat(&b, [], TTL));
    d.ask(beat(&c, [room("z", 1)], TTL));
    // 700 ms: x was refreshed at 350 ms and is a's; c's y% was never refreshed and is free,
    // z was (c heartbeats it).
    d.sleep(HALF);
    assert_eq!(
        d.ask(claim("x y", "b", true, TTL)),
        DirectoryAnswer::Claim(Claim::Theirs(a.clone()))
    );
    let answer = d.ask(beat(&b, [x.clone(), y.clone()], TTL));
    assert_eq!(
        answer,
        DirectoryAnswer::Nodes {
            nodes: vec![a.clone(), b.clone(), c.clone()],
            lost: vec!["x y".into()]
        }
    );
    assert_eq!(
        d.ask(claim("y%", "b", false, TTL)),
        DirectoryAnswer::Claim(Claim::Ours)
    );
    assert_eq!(
        d.ask(claim("z", "b", true, TTL)),
        DirectoryAnswer::Claim(Claim::Theirs(c.clone()))
    );
    d.ask(DirectoryRequest::Rooms);
    // Redis loses everything (a restart without persistence): the next heartbeats put the
    // registry, the room lists and the claims back.
    server.flush_all();
    d.memory.wipe();
    assert_eq!(
        d.ask(DirectoryRequest::Rooms),
        DirectoryAnswer::Rooms(vec![])
    );
    d.ask(claim("x y", "c", false, TTL));
    d.ask(beat(&a, [x.clone()], TTL));
    d.ask(beat(&b, [x.clone(), y.clone()], TTL));
    assert_eq!(
        d.ask(claim("x y", "c", true, TTL)),
        DirectoryAnswer::Claim(Claim::Theirs(a.clone()))
    );
    d.ask(claim("y%", "a", true, TTL));
    d.ask(DirectoryRequest::Rooms);
}

#[test]
fn hand_release_leave_tickets_and_numbers_mean_what_the_reference_says() {
    let Some(server) = Redis::start() else { return };
    let mut d = Both::new(&server, "misc");
    let long = Duration::from_secs(60);
    let (a, b) = (node("a", 6000), node("b", 6001));
    d.ask(beat(&a, [], long));
    d.ask(beat(&b, [], long));
    d.ask(claim("r", "a", true, long));
    d.ask(hand("r", "b", "a", long)); // b does not hold it: nothing
    d.ask(claim("r", "b", true, long));
    d.ask(hand("r", "a", "b", long));
    assert_eq!(
        d.ask(claim("r", "a", true, long)),
        DirectoryAnswer::Claim(Claim::Theirs(b.clone()))
    );
    d.ask(release("r", "a")); // not a's
    d.ask(claim("r", "a", true, long));
    d.ask(release("r", "b"));
    assert_eq!(
        d.ask(claim("r", "a", false, long)),
        DirectoryAnswer::Claim(Claim::Missing)
    );
    d.ask(claim("s", "a", true, long));
    d.ask(claim("t", "a", true, long));
    d.ask(hand("t", "a", "b", long));
    d.ask(leave("a"));
    // a's claim on s went with it; t, handed to b, stayed.
    d.ask(claim("s", "b", false, long));
    d.ask(claim("t", "b", false, long));
    d.ask(beat(&a, [], long));
    assert_eq!(
        d.ask(claim("s", "a", false, long)),
        DirectoryAnswer::Claim(Claim::Missing)
    );
    // A claim for no time is no claim.
    d.ask(claim("u", "a", true, Duration::ZERO));
    d.ask(claim("u", "b", true, long));
    // Tickets: once each, again once forgotten.
    let short = Duration::from_millis(300);
    assert_eq!(d.ask(ticket(7, short)), DirectoryAnswer::Ticket(true));
    assert_eq!(d.ask(ticket(7, short)), DirectoryAnswer::Ticket(false));
    assert_eq!(d.ask(ticket(8, long)), DirectoryAnswer::Ticket(true));
    d.ask(ticket(u64::MAX, Duration::ZERO));
    d.ask(ticket(u64::MAX, Duration::ZERO));
    d.sleep(Duration::from_millis(450));
    assert_eq!(d.ask(ticket(7, short)), DirectoryAnswer::Ticket(true));
    d.ask(ticket(8, long));
    d.ask(ticket(8, Duration::ZERO));
    // Numbers: 1, 2, ...; past 65535 back to 1.
    assert_eq!(d.ask(number()), DirectoryAnswer::Number(1));
    assert_eq!(d.ask(number()), DirectoryAnswer::Number(2));
    for _ in 2..65533 {
        d.memory.answer(d.now, &number()).unwrap();
    }
    let set = server.command(&["SET", "pierce:{misc}:number", "65533"]);
    assert_eq!(set.as_deref(), Some("+OK\r\n"));
    assert_eq!(d.ask(number()), DirectoryAnswer::Number(65534));
    assert_eq!(d.ask(number()), DirectoryAnswer::Number(65535));
    assert_eq!(d.ask(number()), DirectoryAnswer::Number(1));
    assert_eq!(d.ask(number()), DirectoryAnswer::Number(2));
}

/// xorshift64*: the walk's only randomness, from a printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[test]
fn a_long_seeded_random_walk_gets_the_reference_answers() {
    let Some(server) = Redis::start() else { return };
    let seed = 0x5EED_u64;
    println!("seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut d = Both::new(&server, "walk");
    let long = Duration::from_secs(120);
    let ids = ["n0", "n1", "n2", "n3"];
    let names = ["r0", "r1", "r2", "r3", "a room", "50%", "ü"];
    for _ in 0..1500 {
        let id = ids[rng.below(4) as usize];
        let other = ids[rng.below(4) as usize];
        let name = names[rng.below(names.len() as u64) as usize];
        let request = match rng.below(12) {
            0..=2 => {
                let mut rooms = Vec::new();
                for n in names {
                    if rng.below(3) == 0 {
                        rooms.push(room(n, rng.below(9) as u16));
                    }
                }
                let port = 7000 + rng.below(10) as u16;
                beat(&node(id, port), rooms, long)
            }
            3..=5 => claim(name, id, rng.below(4) != 0, long),
            6 => hand(name, id, other, long),
            7 => release(name, id),
            8 => DirectoryRequest::Rooms,
            9 => leave(id),
            10 => ticket(rng.below(6), long),
            _ => number(),
        };
        d.ask(request);
    }
}

#[test]
fn a_stopped_redis_is_unavailable_at_once_and_answers_again_when_it_is_back() {
    let Some(mut server) = Redis::start() else {
        return;
    };
    let mut d = RedisDirectory::connect(&server.url(), "outage").unwrap();
    let a = node("a", 4000);
    d.answer(&beat(&a, [room("r", 1)], Duration::from_secs(60)))
        .unwrap();
    server.stop();
    for _ in 0..3 {
        let asked = Instant::now();
        assert_eq!(
            d.answer(&DirectoryRequest::Rooms),
            Err(DirectoryError::Unavailable)
        );
        assert!(asked.elapsed() < FAIL_WITHIN, "{:?}", asked.elapsed());
    }
    // Back, empty (no persistence, no scripts): the same directory reconnects, loads its
    // scripts again, and the next heartbeat refills it.
    server.restart();
    assert_eq!(
        d.answer(&DirectoryRequest::Rooms),
        Ok(DirectoryAnswer::Rooms(vec![]))
    );
    d.answer(&beat(&a, [room("r", 1)], Duration::from_secs(60)))
        .unwrap();
    assert_eq!(
        d.answer(&DirectoryRequest::Rooms),
        Ok(DirectoryAnswer::Rooms(vec![room("r", 1)]))
    );
}

#[test]
fn a_frozen_redis_fails_requests_within_the_timeouts_and_answers_again_when_thawed() {
    let Some(server) = Redis::start() else { return };
    let mut d = RedisDirectory::connect(&server.url(), "frozen").unwrap();
    assert_eq!(d.ping(), Ok(()));
    server.pause();
    // Once on the open connection (the read times out), once on a new one (the kernel
    // accepts it, the handshake's read times out).
    for _ in 0..2 {
        let asked = Instant::now();
        assert_eq!(d.answer(&number()), Err(DirectoryError::Unavailable));
        assert!(asked.elapsed() < FAIL_WITHIN, "{:?}", asked.elapsed());
    }
    server.resume();
    // The first INCR was sent before its read timed out: thawed, Redis carries it out all
    // the same (a failed request may have happened, as with any remote store); the second
    // never left the handshake.
    let n = d.answer(&number());
    assert!(matches!(n, Ok(DirectoryAnswer::Number(1 | 2))), "{n:?}");
}

#[test]
fn two_nodes_racing_for_the_same_200_rooms_each_get_every_room_exactly_once() {
    let Some(server) = Redis::start() else { return };
    let long = Duration::from_secs(60);
    let (a, b) = (node("a", 4000), node("b", 4001));
    let start = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [(a.clone(), b.clone()), (b.clone(), a.clone())]
        .into_iter()
        .map(|(me, rival)| {
            let (url, start) = (server.url(), Arc::clone(&start));
            thread::spawn(move || {
                let mut d = RedisDirectory::connect(&url, "race").unwrap();
                d.answer(&beat(&me, [], long)).unwrap();
                start.wait();
                (0..200)
                    .map(
                        |i| match d.answer(&claim(&format!("room{i}"), &me.id, true, long)) {
                            Ok(DirectoryAnswer::Claim(Claim::Ours)) => true,
                            Ok(DirectoryAnswer::Claim(Claim::Theirs(n))) if n == rival => false,
                            other => panic!("{} room{i}: {other:?}", me.id),
                        },
                    )
                    .collect::<Vec<bool>>()
            })
        })
        .collect();
    let won: Vec<Vec<bool>> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let mut observer = RedisDirectory::connect(&server.url(), "race").unwrap();
    for (i, (a_won, b_won)) in won[0].iter().zip(&won[1]).enumerate() {
        assert!(a_won != b_won, "room{i}: a won {a_won}, b won {b_won}");
        let owner = if *a_won { &a } else { &b };
        assert_eq!(
            observer.answer(&claim(&format!("room{i}"), "observer", true, long)),
            Ok(DirectoryAnswer::Claim(Claim::Theirs(owner.clone()))),
            "room{i}"
        );
    }
    println!(
        "a won {} rooms, b {}",
        won[0].iter().filter(|w| **w).count(),
        won[1].iter().filter(|w| **w).count()
    );
}

#[test]
fn the_thread_answers_in_order_wakes_per_answer_refuses_when_full_and_leaves_on_drop() {
    let Some(server) = Redis::start() else { return };
    let long = Duration::from_secs(60);
    let wakes = Arc::new(AtomicUsize::new(0));
    let woken = Arc::clone(&wakes);
    let directory = RedisDirectory::connect(&server.url(), "thread").unwrap();
    let mut thread = DirectoryThread::with_capacity(
        directory,
        4,
        Box::new(move || {
            woken.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();
    let t = node("t", 4000);
    let mut expected = Vec::new();
    let mut asked = 0;
    let mut ask = |thread: &mut DirectoryThread, request: DirectoryRequest| {
        asked += 1;
        thread.ask(QueryId(asked), request);
        QueryId(asked)
    };
    expected.push(ask(&mut thread, beat(&t, [room("kept", 1)], long)));
    expected.push(ask(&mut thread, claim("c", "t", true, long)));
    expected.push(ask(&mut thread, number()));
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answers.len() < 3 && Instant::now() < deadline {
        answers.extend(thread.poll_answer());
        thread::sleep(Duration::from_millis(5));
    }
    let ids: Vec<QueryId> = answers.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, expected);
    assert!(matches!(answers[0].1, Ok(DirectoryAnswer::Nodes { .. })));
    assert_eq!(answers[1].1, Ok(DirectoryAnswer::Claim(Claim::Ours)));
    assert_eq!(answers[2].1, Ok(DirectoryAnswer::Number(1)));
    eventually(|| wakes.load(Ordering::SeqCst) == 3, "a wake per answer");

    // Frozen Redis: the thread blocks on one question, four wait, the rest are refused at
    // once (without waiting for Redis).
    server.pause();
    let blocked = ask(&mut thread, number());
    thread::sleep(Duration::from_millis(200));
    let waiting: Vec<QueryId> = (0..4).map(|_| ask(&mut thread, number())).collect();
    let refused: Vec<QueryId> = (0..3).map(|_| ask(&mut thread, number())).collect();
    let mut now = Vec::new();
    while let Some(answer) = thread.poll_answer() {
        now.push(answer);
    }
    let unavailable: Vec<_> = refused
        .iter()
        .map(|id| (*id, Err(DirectoryError::Unavailable)))
        .collect();
    assert_eq!(now, unavailable);
    server.resume();
    let mut later = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while later.len() < 5 && Instant::now() < deadline {
        later.extend(thread.poll_answer());
        thread::sleep(Duration::from_millis(5));
    }
    let ids: Vec<QueryId> = later.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids[0], blocked);
    assert_eq!(ids[1..], waiting[..]);
    assert!(
        later[1..]
            .iter()
            .all(|(_, a)| matches!(a, Ok(DirectoryAnswer::Number(_)))),
        "{later:?}"
    );
    eventually(
        || wakes.load(Ordering::SeqCst) == 3 + 5,
        "a wake per answer, none per refusal",
    );

    // Dropped with `leave`: t's registration and claims go at once.
    thread.leave("t");
    drop(thread);
    let mut observer = RedisDirectory::connect(&server.url(), "thread").unwrap();
    let o = node("o", 4001);
    assert_eq!(nodes(&observer.answer(&beat(&o, [], long)).unwrap()), ["o"]);
    assert_eq!(
        observer.answer(&claim("c", "o", true, long)),
        Ok(DirectoryAnswer::Claim(Claim::Ours))
    );
    assert_eq!(
        observer.answer(&claim("kept", "o", true, long)),
        Ok(DirectoryAnswer::Claim(Claim::Ours))
    );

    // Dropped while Redis is frozen and questions wait: the one being answered and the
    // leave each fail within the timeouts, the waiting ones are dropped.
    let directory = RedisDirectory::connect(&server.url(), "thread").unwrap();
    let mut frozen = DirectoryThread::spawn(directory, Box::new(|| {})).unwrap();
    server.pause();
    for i in 0..100 {
        frozen.ask(QueryId(i), number());
    }
    frozen.leave("o");
    let dropped = Instant::now();
    drop(frozen);
    let took = dropped.elapsed();
    server.resume();
    assert!(took < 2 * FAIL_WITHIN, "{took:?}");
}

#[track_caller]
fn eventually(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(5));
    }
}
