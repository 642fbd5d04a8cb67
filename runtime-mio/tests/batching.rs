//! The driver's batched datagram path (`recvmmsg`/`sendmmsg` on Linux) on real sockets, with a
//! test double for the core that echoes every datagram: many datagrams in one turn keep their
//! order and sources both ways, steady-state pumps allocate nothing, and a socket that blocks
//! in the middle of a batch (a real `EAGAIN` from a full send buffer) resumes without losing
//! or reordering a datagram.
//!
//! The blocking test needs root and `tc` (iproute2): it moves its thread into a network
//! namespace of its own and slows that namespace's loopback with a token bucket. Without them
//! it prints `SKIPPED batching: <reason>` and passes, except under `CI`, where it fails.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use pierce_core::{Endpoint, Events, SocketId, Transmit};
use pierce_mio::Driver;

const LIMIT: Duration = Duration::from_secs(10);

// ---- allocation counting (per thread, so tests running in parallel do not disturb it) ----

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread local
// (no allocation, no destructor), so counting cannot recurse.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// ---- the test double ------------------------------------------------------------------------

/// Largest datagram the double keeps (the tests send smaller ones).
const KEEP: usize = 64;

/// Echoes every datagram to its source from the socket it came in on, and logs the first 8
/// bytes and the source of each. All storage is reserved up front: handling a datagram
/// allocates nothing.
struct Echo {
    echo: VecDeque<(SocketAddr, usize, [u8; KEEP])>,
    log: Vec<(SocketAddr, [u8; 8])>,
}

impl Echo {
    fn new(capacity: usize) -> Self {
        Self {
            echo: VecDeque::with_capacity(capacity),
            log: Vec::with_capacity(capacity),
        }
    }
}

impl Endpoint for Echo {
    fn handle_datagram_on(
        &mut self,
        _now: Instant,
        _socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        let mut head = [0u8; 8];
        let n = datagram.len().min(8);
        head[..n].copy_from_slice(&datagram[..n]);
        if self.log.len() < self.log.capacity() {
            self.log.push((from, head));
        }
        let mut keep = [0u8; KEEP];
        let len = datagram.len().min(KEEP);
        keep[..len].copy_from_slice(&datagram[..len]);
        if self.echo.len() < self.echo.capacity() {
            self.echo.push_back((from, len, keep));
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let (to, len, bytes) = self.echo.pop_front()?;
        buf[..len].copy_from_slice(&bytes[..len]);
        Some(Transmit::new(to, len))
    }

    fn poll_timeout(&self) -> Option<pierce_core::Timeout> {
        None
    }
}

impl Events for Echo {
    type Event = ();

    fn poll_event(&mut self) -> Option<()> {
        None
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal")
}

fn datagram(sender: u8, seq: u32) -> [u8; 8] {
    let mut d = [0u8; 8];
    d[0] = sender;
    d[4..].copy_from_slice(&seq.to_be_bytes());
    d
}

#[test]
fn many_datagrams_in_one_turn_keep_their_order_and_sources_both_ways() {
    // 4 x 40 small datagrams: well inside a default receive buffer, more than one batch per
    // sender, interleaved between senders in the kernel queue.
    const SENDERS: u8 = 4;
    const EACH: u32 = 40;
    const TOTAL: usize = SENDERS as usize * EACH as usize;
    let mut driver = Driver::bind(localhost(), Echo::new(TOTAL)).expect("bind driver");
    let senders: Vec<UdpSocket> = (0..SENDERS)
        .map(|_| UdpSocket::bind(localhost()).expect("bind sender"))
        .collect();
    for seq in 0..EACH {
        for (i, s) in senders.iter().enumerate() {
            s.send_to(&datagram(i as u8, seq), driver.local_addr())
                .expect("send");
        }
    }
    // One turn reads them all (the default budget is larger) and echoes them all.
    driver.pump(Duration::from_millis(100)).expect("pump");
    assert_eq!(
        driver.stats().last_pump_received,
        TOTAL,
        "{:?}",
        driver.stats()
    );
    assert_eq!(driver.stats().datagrams_received, TOTAL as u64);
    assert_eq!(driver.stats().datagrams_sent, TOTAL as u64);
    assert_eq!(driver.stats().send_errors, 0);

    // In: every datagram once, from the socket that sent it, in its sender's order.
    let log = &driver.endpoint().log;
    assert_eq!(log.len(), TOTAL);
    let mut next: BTreeMap<u8, u32> = BTreeMap::new();
    for (from, d) in log {
        let sender = d[0];
        let seq = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        let addr = senders[usize::from(sender)].local_addr().expect("addr");
        assert_eq!(*from, addr, "source of {sender}/{seq}");
        let want = next.entry(sender).or_insert(0);
        assert_eq!(seq, *want, "sender {sender} out of order");
        *want += 1;
    }
    // Out: each sender gets its own datagrams back, in order.
    for (i, s) in senders.iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        for seq in 0..EACH {
            let (len, from) = s.recv_from(&mut buf).expect("echo arrives");
            assert_eq!(from, driver.local_addr());
            assert_eq!(buf[..len], datagram(i as u8, seq), "echo {i}/{seq}");
        }
    }
}

#[test]
fn steady_state_pumps_allocate_nothing() {
    let mut driver = Driver::bind(localhost(), Echo::new(1024)).expect("bind driver");
    let peer = UdpSocket::bind(localhost()).expect("bind peer");
    peer.set_nonblocking(true).expect("nonblocking");
    let to = driver.local_addr();
    let mut buf = [0u8; 64];
    let mut during = 0;
    let mut echoed = 0usize;
    for round in 0..40u32 {
        for seq in 0..50 {
            peer.send_to(&datagram(1, round * 50 + seq), to)
                .expect("send");
        }
        let target = driver.stats().datagrams_sent + 50;
        let start = Instant::now();
        while driver.stats().datagrams_sent < target {
            assert!(start.elapsed() < LIMIT, "{:?}", driver.stats());
            let before = allocs();
            driver.pump(Duration::from_millis(1)).expect("pump");
            if round >= 5 {
                during += allocs() - before; // after a few rounds of warm-up
            }
        }
        while peer.recv_from(&mut buf).is_ok() {
            echoed += 1;
        }
        driver.endpoint_mut().log.clear();
    }
    assert_eq!(during, 0, "heap allocations in 35 rounds of 50 datagrams");
    assert_eq!(driver.stats().datagrams_received, 2000);
    assert!(echoed > 0);
}

// ---- a real EAGAIN in the middle of a batch ---------------------------------------------------

/// Produces `total` datagrams of `size` bytes (sequence number first) to `to` as fast as the
/// driver takes them.
#[cfg(target_os = "linux")]
struct Blaster {
    to: SocketAddr,
    size: usize,
    total: u32,
    produced: u32,
}

#[cfg(target_os = "linux")]
impl Endpoint for Blaster {
    fn handle_datagram_on(
        &mut self,
        _now: Instant,
        _socket: SocketId,
        _from: SocketAddr,
        _datagram: &[u8],
    ) {
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.produced == self.total {
            return None;
        }
        buf[..4].copy_from_slice(&self.produced.to_be_bytes());
        buf[4..self.size].fill(0xab);
        self.produced += 1;
        Some(Transmit {
            dst: self.to,
            len: self.size,
            socket: SocketId::PRIMARY,
            ttl: None,
        })
    }

    fn poll_timeout(&self) -> Option<pierce_core::Timeout> {
        None
    }
}

impl Events for Blaster {
    type Event = ();

    fn poll_event(&mut self) -> Option<()> {
        None
    }
}

#[cfg(target_os = "linux")]
fn set_buffer(socket: &UdpSocket, option: libc::c_int, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&bytes as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// Why the blocking test cannot run here, if it cannot.
#[cfg(target_os = "linux")]
fn blocking_prerequisites() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (a network namespace and a qdisc)".to_owned());
    }
    match std::process::Command::new("tc").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("needs `tc` (iproute2)".to_owned()),
    }
}

#[cfg(target_os = "linux")]
fn run(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_socket_that_blocks_mid_batch_resumes_in_order_and_loses_nothing() {
    if let Err(why) = blocking_prerequisites() {
        if std::env::var_os("CI").is_some() {
            panic!("batching cannot run its blocking test, and CI must run it: {why}");
        }
        println!("SKIPPED batching: {why}");
        return;
    }
    // The namespace belongs to this thread only (and dies with it); commands spawned from the
    // thread run in it.
    std::thread::spawn(|| {
        // SAFETY: unshare affects only the calling thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        run("ip", &["link", "set", "lo", "up"]);
        // 8 Mbit/s: datagrams wait in the queue, holding the sender's buffer, so a burst of
        // them fills a small send buffer after a few and the socket says EAGAIN.
        let tbf = "root tbf rate 8mbit burst 4kb latency 2s";
        let mut args = vec!["qdisc", "add", "dev", "lo"];
        args.extend(tbf.split(' '));
        run("tc", &args);

        const TOTAL: u32 = 300;
        const SIZE: usize = 1000;
        let receiver = UdpSocket::bind(localhost()).expect("bind receiver");
        set_buffer(&receiver, libc::SO_RCVBUFFORCE, 4 << 20);
        receiver.set_nonblocking(true).expect("nonblocking");
        let socket = UdpSocket::bind(localhost()).expect("bind sender");
        set_buffer(&socket, libc::SO_SNDBUF, 4096); // the kernel's floor is about 4.6 KB
        let blaster = Blaster {
            to: receiver.local_addr().expect("addr"),
            size: SIZE,
            total: TOTAL,
            produced: 0,
        };
        let mut driver = Driver::from_std(socket, blaster).expect("driver");

        driver.pump(Duration::ZERO).expect("pump");
        let first = driver.endpoint().produced;
        assert!(
            first < TOTAL && driver.stats().datagrams_sent < u64::from(first),
            "the socket blocked in the first batch: {first} produced, {:?}",
            driver.stats()
        );

        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let start = Instant::now();
        while got.len() < TOTAL as usize {
            assert!(
                start.elapsed() < LIMIT,
                "{} received, {:?}",
                got.len(),
                driver.stats()
            );
            driver.pump(Duration::from_millis(5)).expect("pump");
            while let Ok((len, _)) = receiver.recv_from(&mut buf) {
                assert_eq!(len, SIZE);
                got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
            }
        }
        assert_eq!(
            got,
            (0..TOTAL).collect::<Vec<_>>(),
            "every datagram, in order"
        );
        let stats = driver.stats();
        assert_eq!(stats.datagrams_sent, u64::from(TOTAL));
        assert_eq!(stats.send_errors, 0);
        assert_eq!(driver.endpoint().produced, TOTAL);
    })
    .join()
    .expect("the namespaced thread");
}
