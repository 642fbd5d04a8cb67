//! Datagrams in batches, so a busy endpoint pays one system call per batch instead of one per
//! datagram: on Linux one `recvmmsg` reads up to [`BATCH`] datagrams from a socket and one
//! `sendmmsg` sends up to [`BATCH`] (the shape of quinn-udp's `recvmmsg` receive path, with
//! `sendmmsg` for sends because a relay's datagrams go to many destinations). Within a send,
//! consecutive datagrams to one destination of one size (the last may be shorter) leave as
//! one UDP GSO send (`UDP_SEGMENT`): a bulk transfer, or a relay forwarding a burst to one
//! receiver, hands the kernel one buffer per 32 datagrams. A socket whose kernel or route
//! refuses GSO (`EIO`: no checksum offload, `EINVAL`/`ENOPROTOOPT`: an older kernel) falls back
//! to one datagram per message for good, unless what it refused was a segment larger than the
//! interface allows (a path-MTU probe: the sockets send whole datagrams,
//! `pierce_os::set_dont_fragment`), which is dropped and counted as any datagram too large is.
//! Sockets ask for UDP GRO (`UDP_GRO`), so datagrams the kernel coalesced (a sender's GSO burst
//! over loopback or a veth, or a NIC's GRO) arrive as one buffer that [`RecvBatch`] splits at
//! the segment size it reports. Elsewhere the same
//! types make one `recv_from` / `send_to` per datagram, which is what the driver always did.
//!
//! Both sides keep their buffers for the driver's lifetime: no allocation per datagram. Only
//! the OS calls differ between platforms; the queue logic (runs per socket, partial sends,
//! `WouldBlock`) is the same everywhere and is unit tested against a scripted OS below.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use pierce_core::{MAX_DATAGRAM_SIZE, SocketId, Transmit};
use pierce_os::DriverStats;

use crate::driver::RECV_BUFFER_SIZE;

/// Most datagrams one system call moves: quinn-udp's batch size on Linux. A relay at 30 000
/// datagrams/s averages about 3 per call (`benches/relay_vs_coturn.rs`), so a larger batch
/// would rarely fill; it only matters when the socket backs up.
pub(crate) const BATCH: usize = 32;

/// Datagrams one receive or send call can move on this platform.
#[cfg(target_os = "linux")]
const SLOTS: usize = BATCH;
#[cfg(not(target_os = "linux"))]
const SLOTS: usize = 1;

/// Datagrams one GRO buffer may hold (the kernel's `UDP_MAX_SEGMENTS` since Linux 4.18 is 64;
/// a buffer is at most [`RECV_BUFFER_SIZE`] bytes, so 1200-byte datagrams make 54 at most).
#[cfg(target_os = "linux")]
const GRO_SEGMENTS: usize = 64;
#[cfg(not(target_os = "linux"))]
const GRO_SEGMENTS: usize = 1;

/// Datagrams one GSO send carries at most: the kernel's `UDP_MAX_SEGMENTS` (64), above what a
/// batch holds.
#[cfg(target_os = "linux")]
const GSO_SEGMENTS: usize = 64;

/// What one [`RecvBatch::recv`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Received {
    /// Datagrams now in the batch, `0..count`.
    pub(crate) count: usize,
    /// The socket returned everything it held: the read stopped on `WouldBlock`, so the
    /// driver may wait for the next readiness event instead of calling again. `false` when
    /// unknown, which costs one more read that returns `WouldBlock`.
    pub(crate) drained: bool,
}

/// Receive buffers: [`SLOTS`] slots of [`RECV_BUFFER_SIZE`] bytes each, so every datagram
/// keeps its true length however large it is. The slots are allocated zeroed, so the OS
/// commits only the pages datagrams are written to (a few KiB per slot for game traffic,
/// not 64 KiB).
pub(crate) struct RecvBatch {
    buf: Box<[u8]>,
    /// Where each datagram of the last read is in `buf` (start, length) and its source: one
    /// per slot, or several when the kernel coalesced them (GRO).
    meta: Vec<(usize, usize, SocketAddr)>,
    #[cfg(target_os = "linux")]
    names: Box<[linux::RawAddr; SLOTS]>,
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; SLOTS * RECV_BUFFER_SIZE].into_boxed_slice(),
            meta: Vec::with_capacity(SLOTS * GRO_SEGMENTS),
            #[cfg(target_os = "linux")]
            names: Box::new([linux::RawAddr::EMPTY; SLOTS]),
        }
    }

    /// Reads up to `max` buffers (at least 1, at most [`BATCH`]; one where batching is not
    /// available) from `socket` without blocking: as many datagrams, or more when the kernel
    /// coalesced some (GRO; [`Received::count`] says how many).
    ///
    /// # Errors
    /// The socket's error for the first datagram (`WouldBlock` when it holds none); datagrams
    /// already read are never lost to an error.
    pub(crate) fn recv(&mut self, socket: &UdpSocket, max: usize) -> io::Result<Received> {
        #[cfg(target_os = "linux")]
        {
            let max = max.clamp(1, SLOTS);
            let read = linux::recv(
                socket,
                &mut self.buf,
                &mut self.names[..max],
                &mut self.meta,
            )?;
            let count = self.meta.len();
            // recvmmsg on a non-blocking socket stops early only when the next read would
            // block, or on an error after the first datagram (kept for the next call). An
            // unconnected UDP socket without IP_RECVERR (every socket the driver opens) never
            // has one: Linux does not report ICMP errors to it. On a socket the application
            // connected, an error can only appear mid-call if it arrived during the call, and
            // its arrival signalled readiness that the next poll reports. Either way a short
            // batch means nothing is left unsignalled, so the driver need not read again.
            Ok(Received {
                count,
                drained: read < max,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = max;
            portable::recv(socket, &mut self.buf, &mut self.meta)
        }
    }

    /// Datagram `i` of the last read: where it came from and its bytes.
    pub(crate) fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let (start, len, from) = self.meta[i];
        (from, &self.buf[start..start + len])
    }
}

/// Datagrams the core produced and the OS has not taken yet, in the order they were produced:
/// [`SLOTS`] slots of [`MAX_DATAGRAM_SIZE`] bytes. The driver fills it from `poll_transmit`
/// while it is not full, then sends it; what a blocked socket refused stays here (the parked
/// datagrams) and goes first on the next flush.
pub(crate) struct SendQueue {
    buf: Box<[u8]>,
    /// Transmits in slot order; `items[i]`'s bytes are in slot `i`.
    items: Vec<Transmit>,
    /// The first transmit not sent yet.
    head: usize,
}

/// How sending the front run of the queue ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Every datagram of the run went to the OS or was dropped with a hard error.
    Run,
    /// The socket refused the run's first remaining datagram with `WouldBlock`; it and the
    /// rest stay queued.
    Blocked,
}

impl SendQueue {
    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; SLOTS * MAX_DATAGRAM_SIZE].into_boxed_slice(),
            items: Vec::with_capacity(SLOTS),
            head: 0,
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.head == self.items.len()
    }

    /// Datagrams queued and not sent yet.
    pub(crate) fn len(&self) -> usize {
        self.items.len() - self.head
    }

    /// No free slot: send before asking the core for more.
    pub(crate) fn is_full(&self) -> bool {
        self.items.len() == SLOTS
    }

    /// The free slot for the next `poll_transmit`; `push` the transmit it returns.
    ///
    /// # Panics
    /// If the queue is full.
    pub(crate) fn slot_mut(&mut self) -> &mut [u8] {
        let i = self.items.len();
        assert!(i < SLOTS, "send queue full");
        &mut self.buf[i * MAX_DATAGRAM_SIZE..(i + 1) * MAX_DATAGRAM_SIZE]
    }

    /// Keeps the transmit `poll_transmit` just wrote into [`SendQueue::slot_mut`].
    pub(crate) fn push(&mut self, t: Transmit) {
        debug_assert!(t.len <= MAX_DATAGRAM_SIZE && !self.is_full());
        self.items.push(t);
    }

    /// The socket the next datagram leaves from.
    pub(crate) fn front_socket(&self) -> Option<SocketId> {
        self.items.get(self.head).map(|t| t.socket)
    }

    /// Drops the front run (its socket is gone); returns how many datagrams that was.
    pub(crate) fn drop_run(&mut self) -> usize {
        let end = self.run_end();
        let n = end - self.head;
        self.advance(n);
        n
    }

    /// Sends the front run (the datagrams at the front that leave from one socket) with
    /// `os`, which takes a run and returns how many of its datagrams it sent from the front
    /// (at least one), or the error of the first (`sendmmsg`'s contract). Sent datagrams count
    /// in `datagrams_sent`; one a hard error refuses counts in `send_errors` (and in
    /// `send_too_large` if it was larger than the interface allows) and is dropped, like any
    /// datagram lost on the way, and the rest of the run is sent after it.
    pub(crate) fn send_run(
        &mut self,
        stats: &mut DriverStats,
        mut os: impl FnMut(&Run<'_>) -> io::Result<usize>,
    ) -> Sent {
        let Some(socket) = self.front_socket() else {
            return Sent::Run;
        };
        while self.front_socket() == Some(socket) {
            let end = self.run_end();
            let run = Run {
                items: &self.items[self.head..end],
                slots: &self.buf[self.head * MAX_DATAGRAM_SIZE..],
            };
            match os(&run) {
                Ok(0) => {
                    // Nothing sent and no error: not in sendmmsg's contract. Drop the
                    // datagram rather than spin on it.
                    stats.send_errors += 1;
                    self.advance(1);
                }
                Ok(n) => {
                    let n = n.min(end - self.head);
                    stats.datagrams_sent += n as u64;
                    self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Blocked,
                Err(e) => {
                    // (Larger than the interface allows: a path-MTU probe above it. Sending it
                    // again would fail again; to the core it is a lost probe.)
                    stats.send_errors += 1;
                    stats.send_too_large += u64::from(pierce_os::is_too_large(&e));
                    self.advance(1);
                }
            }
        }
        Sent::Run
    }

    /// One past the last transmit of the front run.
    fn run_end(&self) -> usize {
        let Some(first) = self.items.get(self.head) else {
            return self.head;
        };
        self.items[self.head..]
            .iter()
            .position(|t| t.socket != first.socket)
            .map_or(self.items.len(), |k| self.head + k)
    }

    fn advance(&mut self, n: usize) {
        self.head += n;
        if self.head == self.items.len() {
            self.items.clear();
            self.head = 0;
        }
    }
}

/// Consecutive queued datagrams that leave from one socket: what one batched send takes.
pub(crate) struct Run<'a> {
    items: &'a [Transmit],
    /// The slots, from the run's first one on.
    slots: &'a [u8],
}

impl Run<'_> {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Datagram `i` of the run: its destination and bytes.
    pub(crate) fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let t = &self.items[i];
        let start = i * MAX_DATAGRAM_SIZE;
        (t.dst, &self.slots[start..start + t.len])
    }
}

/// Sends `run` from `socket` with one system call where the platform allows; returns how many
/// datagrams went out from the front, or the error of the first. `gso` says whether the socket
/// may still try GSO; it is cleared for good when the kernel refuses it.
pub(crate) fn send(socket: &UdpSocket, run: &Run<'_>, gso: &mut bool) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        linux::send(socket, run, gso)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = gso;
        portable::send(socket, run)
    }
}

/// Turns UDP GRO on or off for `socket`: on, the kernel hands its coalesced datagrams over as
/// one buffer (Linux 5.0 and later); `false` where it cannot (then datagrams arrive one by
/// one, as always).
pub(crate) fn set_gro(socket: &UdpSocket, on: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        linux::set_gro(socket, on)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, on);
        false
    }
}

/// One datagram per system call, with the batched calls' contracts (the fallback outside
/// Linux; also built for the tests on Linux so it cannot rot).
#[cfg(any(not(target_os = "linux"), test))]
mod portable {
    use super::*;

    /// Reads one datagram into slot 0.
    pub(super) fn recv(
        socket: &UdpSocket,
        buf: &mut [u8],
        meta: &mut Vec<(usize, usize, SocketAddr)>,
    ) -> io::Result<Received> {
        meta.clear();
        let (len, from) = socket.recv_from(&mut buf[..RECV_BUFFER_SIZE])?;
        meta.push((0, len, pierce_core::canonical(from)));
        // One datagram says nothing about what is left: read again until WouldBlock.
        Ok(Received {
            count: 1,
            drained: false,
        })
    }

    /// `send_to` per datagram until one fails: `sendmmsg`'s contract (the count sent, or the
    /// first datagram's error), so the next call reports the failing datagram's error.
    pub(super) fn send(socket: &UdpSocket, run: &Run<'_>) -> io::Result<usize> {
        for i in 0..run.len() {
            let (dst, bytes) = run.get(i);
            if let Err(e) = socket.send_to(bytes, dst) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(run.len())
    }
}

/// `recvmmsg` / `sendmmsg` through `libc`.
#[cfg(target_os = "linux")]
mod linux {
    use std::mem;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use super::*;

    /// Room for an IPv4 or IPv6 socket address in C layout (what `sockaddr_storage` is for,
    /// in 28 bytes instead of 128).
    #[derive(Clone, Copy)]
    #[repr(C)]
    pub(super) union RawAddr {
        v4: libc::sockaddr_in,
        v6: libc::sockaddr_in6,
    }

    impl RawAddr {
        // SAFETY: both members are plain C structs for which all-zero bytes are valid.
        pub(super) const EMPTY: Self = unsafe { mem::zeroed() };

        fn new(addr: SocketAddr) -> (Self, libc::socklen_t) {
            let mut raw = Self::EMPTY;
            match addr {
                SocketAddr::V4(a) => {
                    // SAFETY: writing a Copy member of a union.
                    let v4 = unsafe { &mut raw.v4 };
                    v4.sin_family = libc::AF_INET as libc::sa_family_t;
                    v4.sin_port = a.port().to_be();
                    v4.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                    (raw, size_of::<libc::sockaddr_in>() as libc::socklen_t)
                }
                SocketAddr::V6(a) => {
                    // SAFETY: as above.
                    let v6 = unsafe { &mut raw.v6 };
                    v6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                    v6.sin6_port = a.port().to_be();
                    v6.sin6_flowinfo = a.flowinfo();
                    v6.sin6_addr.s6_addr = a.ip().octets();
                    v6.sin6_scope_id = a.scope_id();
                    (raw, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
                }
            }
        }

        /// The address the kernel wrote (`len` bytes of it), the way std decodes one.
        fn get(&self, len: libc::socklen_t) -> Option<SocketAddr> {
            let len = len as usize;
            // SAFETY: every bit pattern is a valid sockaddr_in/sockaddr_in6 (plain integers
            // and byte arrays); the family says which one the kernel wrote.
            unsafe {
                match i32::from(self.v4.sin_family) {
                    libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                        let a = self.v4;
                        let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
                        Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
                    }
                    libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                        let a = self.v6;
                        let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                        let port = u16::from_be(a.sin6_port);
                        let v6 = SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id);
                        // (A dual-stack socket names an IPv4 sender in its mapped form.)
                        Some(pierce_core::canonical(v6.into()))
                    }
                    _ => None,
                }
            }
        }
    }

    /// Room for one control message of a 4-byte value (`CMSG_SPACE(4)` is 16 on 64-bit Linux,
    /// 12 or 16 on 32-bit), aligned as `cmsghdr` wants.
    #[derive(Clone, Copy)]
    #[repr(C, align(8))]
    struct Cmsg([u8; 24]);

    /// One `recvmmsg` for up to `names.len()` buffers, slot `i` of `buf` for buffer `i`;
    /// `meta` gets every datagram of them (a GRO buffer split at its segment size). Returns
    /// how many buffers the kernel returned.
    pub(super) fn recv(
        socket: &UdpSocket,
        buf: &mut [u8],
        names: &mut [RawAddr],
        meta: &mut Vec<(usize, usize, SocketAddr)>,
    ) -> io::Result<usize> {
        meta.clear();
        let max = names.len().min(SLOTS);
        // SAFETY (for the arrays): all-zero iovec/mmsghdr/bytes are valid (null pointers,
        // zero lengths). They live on the stack for this call only, so the driver holds no
        // raw pointers (and stays Send).
        let mut iov: [libc::iovec; SLOTS] = unsafe { mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { mem::zeroed() };
        let mut control = [Cmsg([0; 24]); SLOTS];
        let slots = buf.chunks_exact_mut(RECV_BUFFER_SIZE);
        let per = slots.zip(&mut iov).zip(&mut hdrs).zip(names.iter_mut());
        for ((((slot, iov), hdr), name), control) in per.zip(&mut control) {
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = slot.len();
            hdr.msg_hdr.msg_name = (name as *mut RawAddr).cast();
            hdr.msg_hdr.msg_namelen = size_of::<RawAddr>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = size_of::<Cmsg>() as _;
        }
        // SAFETY: `max` headers, each pointing at its own live iovec, slot, name and control
        // buffer of the lengths given; the socket is non-blocking (mio's), so the call returns
        // at once with what the socket holds.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                max as libc::c_uint,
                0,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let read = n as usize;
        for (k, (hdr, name)) in hdrs.iter().zip(names.iter()).take(read).enumerate() {
            // An AF_INET/AF_INET6 socket always names the sender; anything else is skipped.
            let Some(from) = name.get(hdr.msg_hdr.msg_namelen) else {
                continue;
            };
            let (start, len) = (k * RECV_BUFFER_SIZE, hdr.msg_len as usize);
            let segment = gro_segment(&hdr.msg_hdr).filter(|&g| g > 0 && g < len);
            match segment {
                None => meta.push((start, len, from)),
                Some(g) => {
                    meta.extend(
                        (0..len)
                            .step_by(g)
                            .map(|o| (start + o, g.min(len - o), from)),
                    );
                }
            }
        }
        Ok(read)
    }

    /// The segment size of a GRO buffer, from its `UDP_GRO` control message.
    fn gro_segment(hdr: &libc::msghdr) -> Option<usize> {
        // SAFETY: `hdr` is a header the kernel filled: its control pointer and the length it
        // wrote describe our live control buffer, which the CMSG macros walk within.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    return usize::try_from(v).ok();
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        None
    }

    /// Sets `UDP_GRO` on `socket`.
    pub(super) fn set_gro(socket: &UdpSocket, on: bool) -> bool {
        let on = libc::c_int::from(on);
        // SAFETY: a live socket; the option value is a c_int that outlives the call, with its
        // exact size passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_GRO,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }

    /// Where the run's datagrams split into sends: each group is consecutive datagrams to one
    /// destination, all of one size but the last, which may be shorter (what one GSO send
    /// takes), up to [`GSO_SEGMENTS`] and 64 KiB; without GSO every datagram is a group.
    /// A shorter last datagram joins only a group of two or more: a datagram larger than the
    /// one after it is most often a path-MTU probe, which must leave on its own (a GSO send
    /// stands or falls as one where a router checks its segments against the MTU, and the
    /// kernel refuses all of it when its segments are too large for the interface).
    /// Fills `groups` with each group's (first datagram, count) and returns how many there are.
    fn groups(run: &Run<'_>, gso: bool, groups: &mut [(usize, usize); SLOTS]) -> usize {
        let n = run.len().min(SLOTS);
        let mut g = 0;
        let mut i = 0;
        while i < n {
            let (dst, first) = run.get(i);
            let size = first.len();
            let mut count = 1;
            let mut bytes = size;
            while gso && i + count < n && count < GSO_SEGMENTS {
                let (d, b) = run.get(i + count);
                if d != dst || b.len() > size || bytes + b.len() > u16::MAX as usize - 48 {
                    break;
                }
                if b.len() < size && count < 2 {
                    break; // (a lone larger datagram, a probe: alone)
                }
                count += 1;
                bytes += b.len();
                if b.len() < size {
                    break; // a shorter datagram ends a GSO send
                }
            }
            groups[g] = (i, count);
            g += 1;
            i += count;
        }
        g
    }

    /// One `sendmmsg` for the whole run, with a GSO send for each group of two or more
    /// datagrams (see [`groups`]) while `gso` holds; returns how many datagrams went out.
    pub(super) fn send(socket: &UdpSocket, run: &Run<'_>, gso: &mut bool) -> io::Result<usize> {
        let mut groups = [(0, 0); SLOTS];
        let g = self::groups(run, *gso, &mut groups);
        match send_groups(socket, run, &groups[..g]) {
            Err(e) if groups[0].1 > 1 && refuses_gso(&e) => {
                // This run goes out one datagram per message. If the first datagram then goes,
                // the socket's kernel or route does not do GSO: never again. If it fails as
                // too large, the refusal was about its size, not GSO: older kernels refuse a
                // GSO send whose segments exceed the interface MTU with EINVAL
                // (`udp_send_skb`; newer ones with EMSGSIZE), and a path-MTU probe followed by
                // a shorter datagram to the same peer makes one.
                let g = self::groups(run, false, &mut groups);
                let sent = send_groups(socket, run, &groups[..g]);
                if !sent.as_ref().is_err_and(pierce_os::is_too_large) {
                    *gso = false;
                }
                sent
            }
            sent => sent,
        }
    }

    /// Errors with which a kernel refuses a GSO send it cannot do (rather than the datagram).
    fn refuses_gso(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
        )
    }

    fn send_groups(
        socket: &UdpSocket,
        run: &Run<'_>,
        groups: &[(usize, usize)],
    ) -> io::Result<usize> {
        let mut names = [RawAddr::EMPTY; SLOTS];
        // SAFETY: as in `recv`.
        let mut iov: [libc::iovec; SLOTS] = unsafe { mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { mem::zeroed() };
        let mut control = [Cmsg([0; 24]); SLOTS];
        for (k, &(first, count)) in groups.iter().enumerate() {
            let (dst, bytes) = run.get(first);
            let (raw, len) = RawAddr::new(dst);
            names[k] = raw;
            for (i, v) in iov.iter_mut().enumerate().skip(first).take(count) {
                // The kernel only reads through this pointer (sendmsg's iovec is not written).
                let (_, b) = run.get(i);
                v.iov_base = b.as_ptr().cast_mut().cast();
                v.iov_len = b.len();
            }
            let hdr = &mut hdrs[k].msg_hdr;
            hdr.msg_name = (&mut names[k] as *mut RawAddr).cast();
            hdr.msg_namelen = len;
            hdr.msg_iov = &mut iov[first];
            hdr.msg_iovlen = count as _;
            if count > 1 {
                hdr.msg_control = control[k].0.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; CMSG_FIRSTHDR returns a pointer
                // into our control buffer (which CMSG_SPACE(2) fits), written in place.
                unsafe {
                    hdr.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
                    let c = libc::CMSG_FIRSTHDR(hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                    let segment = bytes.len() as u16;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
                }
            }
        }
        // SAFETY: one header per group, each pointing at its own live address, iovecs (those
        // of its datagrams, consecutive in `iov`), datagrams and control buffer.
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                groups.len() as libc::c_uint,
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(groups[..sent as usize].iter().map(|&(_, c)| c).sum())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn socket_addresses_survive_the_c_layout_both_ways() {
            let addrs = [
                "127.0.0.1:9",
                "203.0.113.7:65535",
                "[::1]:7777",
                "[2001:db8::1%3]:1",
            ];
            for a in addrs {
                let addr: SocketAddr = a.parse().expect("literal");
                let (raw, len) = RawAddr::new(addr);
                assert_eq!(raw.get(len), Some(addr), "{a}");
            }
            // A dual-stack socket's IPv4 sender comes back canonical.
            let mapped: SocketAddr = "[::ffff:192.0.2.1]:443".parse().expect("literal");
            let (raw, len) = RawAddr::new(mapped);
            assert_eq!(
                raw.get(len),
                Some("192.0.2.1:443".parse().expect("literal"))
            );
            assert_eq!(RawAddr::EMPTY.get(size_of::<RawAddr>() as _), None);
        }

        fn bound() -> UdpSocket {
            UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind")
        }

        /// [`bound`], sending whole datagrams as the driver's sockets do.
        fn bound_whole() -> UdpSocket {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            crate::driver::prepare(s).expect("non-blocking, PROBE")
        }

        /// A queue of datagrams `(destination, length)`, datagram `i` filled with byte `i`.
        fn queue(datagrams: &[(SocketAddr, usize)]) -> SendQueue {
            let mut q = SendQueue::new();
            for (i, &(dst, len)) in datagrams.iter().enumerate() {
                q.slot_mut()[..len].fill(i as u8);
                q.push(Transmit {
                    dst,
                    len,
                    socket: SocketId::PRIMARY,
                    ttl: None,
                });
            }
            q
        }

        /// Reads from `rx` (with `batch`) until `n` datagrams came or 5 s passed: each as
        /// (first byte, length), and how many buffers they came in.
        fn read(rx: &UdpSocket, batch: &mut RecvBatch, n: usize) -> (Vec<(u8, usize)>, usize) {
            let (mut got, mut buffers) = (Vec::new(), 0);
            let start = std::time::Instant::now();
            while got.len() < n {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(5),
                    "{got:?}"
                );
                match batch.recv(rx, BATCH) {
                    Ok(r) => {
                        buffers += (batch.meta.iter())
                            .filter(|(start, ..)| start % RECV_BUFFER_SIZE == 0)
                            .count();
                        for i in 0..r.count {
                            let (_, d) = batch.get(i);
                            assert!(d.iter().all(|&b| b == d[0]), "datagram {} mixed", d[0]);
                            got.push((d[0], d.len()));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            (got, buffers)
        }

        #[test]
        fn runs_to_one_destination_leave_as_gso_sends_and_arrive_as_they_were() {
            let (tx, plain, gro) = (bound(), bound(), bound());
            assert!(set_gro(&gro, true), "UDP_GRO (Linux 5.0)");
            let (a, b) = (
                plain.local_addr().expect("addr"),
                gro.local_addr().expect("addr"),
            );
            // Ten to `a` (nine of 1000 bytes, then a shorter one), three of 200 to `b`, one
            // more to `a`, then 1000 bytes to `b` after a shorter one (which ends a group).
            let mut list: Vec<(SocketAddr, usize)> = vec![(a, 1000); 9];
            list.extend([
                (a, 500),
                (b, 200),
                (b, 200),
                (b, 200),
                (a, 1000),
                (b, 100),
                (b, 1000),
            ]);
            let q = queue(&list);
            let run = Run {
                items: &q.items,
                slots: &q.buf,
            };
            let mut g = [(0, 0); SLOTS];
            let n = groups(&run, true, &mut g);
            assert_eq!(g[..n], [(0, 10), (10, 3), (13, 1), (14, 1), (15, 1)]);
            assert_eq!(groups(&run, false, &mut g), list.len(), "no GSO: one each");
            let mut gso = true;
            assert_eq!(send(&tx, &run, &mut gso).expect("send"), list.len());
            assert!(gso, "loopback does GSO");
            let mut batch = RecvBatch::new();
            // Without GRO the kernel splits a GSO send back into its datagrams.
            let (got, _) = read(&plain, &mut batch, 11);
            let want = (0..9).map(|i| (i, 1000)).chain([(9, 500), (13, 1000)]);
            assert_eq!(got, want.collect::<Vec<(u8, usize)>>());
            // With GRO the three 200-byte datagrams come in one buffer, split here.
            let (got, buffers) = read(&gro, &mut batch, 5);
            assert_eq!(
                got,
                [(10, 200), (11, 200), (12, 200), (14, 100), (15, 1000)]
            );
            assert!(buffers < 5, "{buffers} buffers: nothing coalesced");
        }

        #[test]
        fn datagrams_up_to_the_largest_in_mixed_sizes_group_by_size_and_arrive_whole() {
            let (tx, plain, gro) = (bound_whole(), bound(), bound());
            assert!(set_gro(&gro, true), "UDP_GRO (Linux 5.0)");
            let (a, b) = (
                plain.local_addr().expect("addr"),
                gro.local_addr().expect("addr"),
            );
            const MAX: usize = MAX_DATAGRAM_SIZE;
            // What a path-MTU probe does to a run: a probe of MAX among 1200-byte datagrams,
            // a larger one after a smaller one (it starts a group), a probe alone, one byte
            // over and under the base size, alternating destinations.
            let list: Vec<(SocketAddr, usize)> = vec![
                (a, 1200),
                (a, MAX),
                (a, MAX),
                (a, 1200),
                (a, 1200),
                (b, MAX),
                (b, 1201),
                (b, 1201),
                (a, 1199),
                (b, MAX),
                (b, MAX),
                (b, MAX),
            ];
            let q = queue(&list);
            let run = Run {
                items: &q.items,
                slots: &q.buf,
            };
            let mut g = [(0, 0); SLOTS];
            let n = groups(&run, true, &mut g);
            // Each group: one size, then at most one shorter datagram that ends it, and only
            // after two of that size (a lone larger one, a probe, leaves alone).
            assert_eq!(
                g[..n],
                [(0, 1), (1, 3), (4, 1), (5, 1), (6, 2), (8, 1), (9, 3)]
            );
            for &(first, count) in &g[..n] {
                let size = run.get(first).1.len();
                let sizes: Vec<usize> =
                    (first..first + count).map(|i| run.get(i).1.len()).collect();
                assert!(sizes[..count - 1].iter().all(|&l| l == size), "{sizes:?}");
                assert!(sizes[count - 1] <= size, "{sizes:?}");
                assert!((first..first + count).all(|i| run.get(i).0 == run.get(first).0));
            }
            let mut gso = true;
            assert_eq!(send(&tx, &run, &mut gso).expect("send"), list.len());
            assert!(gso, "loopback does GSO");
            let mut batch = RecvBatch::new();
            let to = |d: SocketAddr| {
                let mut v: Vec<(u8, usize)> = list
                    .iter()
                    .enumerate()
                    .filter(|(_, (dst, _))| *dst == d)
                    .map(|(i, &(_, len))| (i as u8, len))
                    .collect();
                v.sort_unstable();
                v
            };
            let (mut got, _) = read(&plain, &mut batch, to(a).len());
            got.sort_unstable();
            assert_eq!(got, to(a));
            let (mut got, _) = read(&gro, &mut batch, to(b).len());
            got.sort_unstable();
            assert_eq!(
                got,
                to(b),
                "a GRO buffer of MAX-sized segments splits whole"
            );
        }

        /// Runs `f` on a thread in a network namespace of its own whose loopback has an MTU
        /// of `mtu` (`unshare(CLONE_NEWNET)` and iproute2's `ip`). `None`, after saying why,
        /// where that cannot be done (not root, no `ip`); under `CI` that panics instead.
        fn with_loopback_mtu<T: Send>(mtu: u32, f: impl FnOnce() -> T + Send) -> Option<T> {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        // SAFETY: unshare(2) on this thread only (it has no other threads
                        // of its own to disagree with); the namespace goes with its sockets.
                        let why = if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                            Some(format!("unshare: {}", io::Error::last_os_error()))
                        } else {
                            let mtu = mtu.to_string();
                            let args = ["link", "set", "dev", "lo", "up", "mtu", &mtu];
                            match std::process::Command::new("ip").args(args).status() {
                                Ok(s) if s.success() => None,
                                r => Some(format!("ip link set lo: {r:?}")),
                            }
                        };
                        if let Some(why) = why {
                            assert!(std::env::var_os("CI").is_none(), "CI: {why}");
                            println!("SKIPPED: a network namespace needs root and ip: {why}");
                            return None;
                        }
                        Some(f())
                    })
                    .join()
                    .expect("the namespace's thread")
            })
        }

        #[test]
        fn a_datagram_above_the_interface_mtu_is_counted_dropped_and_gso_stays_on() {
            // 1280: an IPv6 minimum link; 1252 bytes of UDP payload fit it over IPv4.
            let outcome = with_loopback_mtu(1280, || {
                let (tx, rx) = (bound_whole(), bound());
                let to = rx.local_addr().expect("addr");
                // Probes above the MTU, each followed by datagrams a GSO send would take
                // with it (a shorter one, or equal ones), and datagrams at the limit.
                let list = [
                    (to, MAX_DATAGRAM_SIZE),
                    (to, 1200),
                    (to, 1200),
                    (to, 1252),
                    (to, 1252),
                    (to, 1253),
                    (to, 1000),
                    (to, 1253),
                    (to, 1253),
                ];
                let mut q = queue(&list);
                let mut stats = DriverStats::default();
                let mut gso = true;
                let mut calls = 0;
                let sent = q.send_run(&mut stats, |r| {
                    calls += 1;
                    send(&tx, r, &mut gso)
                });
                assert_eq!(sent, Sent::Run);
                assert!(q.is_empty());
                let (got, _) = read(&rx, &mut RecvBatch::new(), 5);
                (stats, gso, calls, got)
            });
            let Some((stats, gso, calls, got)) = outcome else {
                return;
            };
            assert_eq!(got, [(1, 1200), (2, 1200), (3, 1252), (4, 1252), (6, 1000)]);
            assert_eq!(stats.datagrams_sent, 5);
            assert_eq!((stats.send_errors, stats.send_too_large), (4, 4));
            assert!(gso, "a datagram too large is not GSO refused");
            assert!(calls <= 9, "{calls} calls: none repeated without progress");
        }

        #[test]
        fn a_socket_that_refuses_gso_falls_back_to_one_datagram_each_for_good() {
            let (tx, rx) = (bound(), bound());
            // UDP without checksums cannot be segmented: Linux refuses GSO on it (EINVAL).
            let on: libc::c_int = 1;
            // SAFETY: a live socket; a c_int option of its exact size.
            let rc = unsafe {
                libc::setsockopt(
                    tx.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_NO_CHECK,
                    (&raw const on).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
            let to = rx.local_addr().expect("addr");
            let q = queue(&[(to, 300); 6]);
            let run = Run {
                items: &q.items,
                slots: &q.buf,
            };
            let mut gso = true;
            assert_eq!(send(&tx, &run, &mut gso).expect("send"), 6);
            assert!(!gso, "GSO is off for this socket now");
            let (got, buffers) = read(&rx, &mut RecvBatch::new(), 6);
            assert_eq!(got, (0..6).map(|i| (i, 300)).collect::<Vec<_>>());
            assert_eq!(buffers, 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn transmit(socket: u16, dst_port: u16, len: usize) -> Transmit {
        Transmit {
            dst: SocketAddr::from(([127, 0, 0, 1], dst_port)),
            len,
            socket: SocketId(socket),
            ttl: None,
        }
    }

    /// Queues `n` one-byte datagrams (byte = index) on `socket`, ports 1000 + index.
    fn fill(q: &mut SendQueue, socket: u16, n: usize) {
        for _ in 0..n {
            let i = q.items.len();
            q.slot_mut()[0] = i as u8;
            q.push(transmit(socket, 1000 + i as u16, 1));
        }
    }

    /// An OS that answers each call from a script (sent count or error) and records what left.
    struct ScriptedOs {
        answers: VecDeque<io::Result<usize>>,
        wire: Vec<(SocketAddr, u8)>,
        calls: usize,
    }

    impl ScriptedOs {
        fn new(answers: impl IntoIterator<Item = io::Result<usize>>) -> Self {
            Self {
                answers: answers.into_iter().collect(),
                wire: Vec::new(),
                calls: 0,
            }
        }

        fn send(&mut self, run: &Run<'_>) -> io::Result<usize> {
            self.calls += 1;
            let answer = self.answers.pop_front().unwrap_or(Ok(usize::MAX));
            let n = match answer {
                Ok(n) => n.min(run.len()),
                Err(e) => return Err(e),
            };
            for i in 0..n {
                let (dst, bytes) = run.get(i);
                self.wire.push((dst, bytes[0]));
            }
            Ok(n)
        }
    }

    fn kind(k: io::ErrorKind) -> io::Result<usize> {
        Err(io::Error::from(k))
    }

    #[test]
    fn a_partial_send_is_resumed_where_it_stopped() {
        let mut q = SendQueue::new();
        let n = SLOTS.min(5);
        fill(&mut q, 0, n);
        let mut stats = DriverStats::default();
        let mut os = ScriptedOs::new([Ok(2), Ok(1)]);
        assert_eq!(q.send_run(&mut stats, |r| os.send(r)), Sent::Run);
        let bytes: Vec<u8> = os.wire.iter().map(|w| w.1).collect();
        assert_eq!(
            bytes,
            (0..n as u8).collect::<Vec<_>>(),
            "in order, each once"
        );
        for (i, (dst, _)) in os.wire.iter().enumerate() {
            assert_eq!(dst.port(), 1000 + i as u16);
        }
        assert_eq!(stats.datagrams_sent, n as u64);
        assert!(q.is_empty());
    }

    #[test]
    fn would_block_mid_batch_keeps_the_rest_queued_and_loses_nothing() {
        let mut q = SendQueue::new();
        let n = SLOTS.min(6);
        fill(&mut q, 0, n);
        let mut stats = DriverStats::default();
        let blocked_after = n / 2;
        let mut os = ScriptedOs::new([Ok(blocked_after), kind(io::ErrorKind::WouldBlock)]);
        assert_eq!(q.send_run(&mut stats, |r| os.send(r)), Sent::Blocked);
        assert_eq!(q.len(), n - blocked_after);
        assert_eq!(q.front_socket(), Some(SocketId(0)));
        assert_eq!(stats.datagrams_sent, blocked_after as u64);
        // Writable again: the rest goes, in order, and the queue is reusable from slot 0.
        assert_eq!(q.send_run(&mut stats, |r| os.send(r)), Sent::Run);
        let bytes: Vec<u8> = os.wire.iter().map(|w| w.1).collect();
        assert_eq!(bytes, (0..n as u8).collect::<Vec<_>>());
        assert_eq!(stats.datagrams_sent, n as u64);
        assert!(q.is_empty() && !q.is_full());
        assert_eq!(q.items.len(), 0);
    }

    #[test]
    fn a_hard_error_drops_one_datagram_and_interrupts_are_retried() {
        let mut q = SendQueue::new();
        let n = SLOTS.min(4);
        fill(&mut q, 0, n);
        let mut stats = DriverStats::default();
        let mut os = ScriptedOs::new([
            kind(io::ErrorKind::Interrupted),
            kind(io::ErrorKind::InvalidInput), // datagram 0 cannot be sent
            Ok(1),
            kind(io::ErrorKind::HostUnreachable), // nor datagram 2
        ]);
        assert_eq!(q.send_run(&mut stats, |r| os.send(r)), Sent::Run);
        let bytes: Vec<u8> = os.wire.iter().map(|w| w.1).collect();
        let expected: Vec<u8> = (0..n as u8).filter(|&b| b != 0 && b != 2).collect();
        assert_eq!(bytes, expected);
        assert_eq!(stats.send_errors, 2);
        assert_eq!(stats.datagrams_sent, expected.len() as u64);
        assert!(q.is_empty());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_datagram_too_large_is_dropped_once_and_counted_as_such() {
        let mut q = SendQueue::new();
        fill(&mut q, 0, 3);
        let mut stats = DriverStats::default();
        let too_large = || Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        let mut os = ScriptedOs::new([too_large(), Ok(1), too_large()]);
        assert_eq!(q.send_run(&mut stats, |r| os.send(r)), Sent::Run);
        assert_eq!(os.calls, 3, "each refused datagram is tried once");
        assert_eq!(os.wire.iter().map(|w| w.1).collect::<Vec<_>>(), [1]);
        assert_eq!(stats.datagrams_sent, 1);
        assert_eq!((stats.send_errors, stats.send_too_large), (2, 2));
        assert!(q.is_empty());
    }

    #[test]
    fn runs_split_where_the_socket_changes_and_keep_the_global_order() {
        let mut q = SendQueue::new();
        if SLOTS < 4 {
            return; // one datagram per call: runs are single datagrams by construction
        }
        fill(&mut q, 0, 2);
        fill(&mut q, 7, 1);
        fill(&mut q, 0, 1);
        let mut stats = DriverStats::default();
        let mut runs = Vec::new();
        while let Some(id) = q.front_socket() {
            let mut os = ScriptedOs::new([]);
            assert_eq!(q.send_run(&mut stats, |r| os.send(r)), Sent::Run);
            runs.push((
                id,
                os.wire.iter().map(|w| w.1).collect::<Vec<_>>(),
                os.calls,
            ));
        }
        assert_eq!(
            runs,
            vec![
                (SocketId(0), vec![0, 1], 1),
                (SocketId(7), vec![2], 1),
                (SocketId(0), vec![3], 1)
            ]
        );
        let mut q2 = SendQueue::new();
        fill(&mut q2, 3, 2);
        assert_eq!(q2.drop_run(), 2);
        assert!(q2.is_empty());
    }

    #[test]
    fn the_portable_fallback_keeps_the_batched_contracts() {
        let rx = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let to = rx.local_addr().expect("addr");
        // Datagram 1 goes to an IPv6 address from an IPv4 socket: a hard error after one sent.
        let mut q = SendQueue::new();
        let dsts = [to, "[::1]:9".parse().expect("literal"), to];
        for (i, dst) in dsts.into_iter().enumerate().take(SLOTS.max(1)) {
            q.slot_mut()[0] = i as u8;
            q.push(Transmit {
                dst,
                len: 1,
                socket: SocketId::PRIMARY,
                ttl: None,
            });
            if q.is_full() {
                break;
            }
        }
        let queued = q.len();
        let mut stats = DriverStats::default();
        assert_eq!(
            q.send_run(&mut stats, |r| portable::send(&tx, r)),
            Sent::Run
        );
        assert_eq!(stats.datagrams_sent + stats.send_errors, queued as u64);
        let mut buf = vec![0u8; RECV_BUFFER_SIZE];
        let mut meta = Vec::new();
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        while got.len() < stats.datagrams_sent as usize {
            assert!(start.elapsed() < std::time::Duration::from_secs(5));
            match portable::recv(&rx, &mut buf, &mut meta) {
                Ok(r) => {
                    assert_eq!((r.count, r.drained), (1, false));
                    assert_eq!(meta[..], [(0, 1, tx.local_addr().expect("addr"))]);
                    got.push(buf[0]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        let expected: Vec<u8> = [0u8, 2].into_iter().take(got.len()).collect();
        assert_eq!(got, expected);
    }
}
