//! A server's relay threads: UDP sockets that share one address (`SO_REUSEPORT`), with a
//! kernel program that hands each datagram to the socket whose thread owns it
//! (`SO_ATTACH_REUSEPORT_CBPF`, Linux ≥ 4.5): a relay packet to the thread of the forwarder
//! that owns its session ([`pierce_core::relay_shard_of`]), everything else to the server's
//! own thread. QUIC servers steer by connection id the same way.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Binds `1 + relay_threads` UDP sockets at `addr` (the first one picks the port if `addr`'s
/// is 0, the others take the same), non-blocking, and steers datagrams among them: relay
/// packets (`0xD6`) to socket `1 + session % relay_threads`, everything else (and anything
/// too short to name a session) to socket 0, the server's. All of them send from `addr`, so
/// a client sees one server whichever thread answers.
///
/// # Errors
/// `relay_threads` is 0; a socket, bind or option failed; or the platform has no reuseport
/// steering ([`io::ErrorKind::Unsupported`] outside Linux).
pub fn bind_relay_group(addr: SocketAddr, relay_threads: u16) -> io::Result<Vec<UdpSocket>> {
    if relay_threads == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a relay group needs at least one relay thread",
        ));
    }
    #[cfg(target_os = "linux")]
    {
        linux::bind_group(addr, relay_threads)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = addr;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "relay threads need SO_REUSEPORT with a steering program (Linux)",
        ))
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use crate::sock::{bind, check, socket_for};

    /// `SO_ATTACH_REUSEPORT_CBPF`: 51 in asm-generic/socket.h and in the architectures' own
    /// headers that define it (mips, powerpc), 0x35 on sparc (libc exports it for Android
    /// only).
    #[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    #[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x35;

    // Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
    const BPF_LD: u16 = 0x00;
    const BPF_ALU: u16 = 0x04;
    const BPF_JMP: u16 = 0x05;
    const BPF_RET: u16 = 0x06;
    const BPF_W: u16 = 0x00;
    const BPF_B: u16 = 0x10;
    const BPF_ABS: u16 = 0x20;
    const BPF_ADD: u16 = 0x00;
    const BPF_MOD: u16 = 0x90;
    const BPF_JEQ: u16 = 0x10;
    const BPF_K: u16 = 0x00;
    const BPF_A: u16 = 0x10;

    fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }

    /// The steering program. A reuseport program sees the UDP payload at offset 0 and
    /// returns the index of the socket (in bind order) that gets the datagram; a load past
    /// the end makes it return 0.
    ///
    /// ```text
    /// 0: A = payload[0]
    /// 1: if A != 0xD6 goto 6
    /// 2: A = payload[4..8] (big-endian: the relay header's session id)
    /// 3: A = A % relay_threads
    /// 4: A = A + 1
    /// 5: return A
    /// 6: return 0
    /// ```
    fn program(relay_threads: u16) -> [libc::sock_filter; 7] {
        [
            op(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0),
            op(
                BPF_JMP | BPF_JEQ | BPF_K,
                0,
                4,
                u32::from(pierce_core::wire::relay::KIND_RELAY),
            ),
            op(BPF_LD | BPF_W | BPF_ABS, 0, 0, 4),
            op(BPF_ALU | BPF_MOD | BPF_K, 0, 0, u32::from(relay_threads)),
            op(BPF_ALU | BPF_ADD | BPF_K, 0, 0, 1),
            op(BPF_RET | BPF_A, 0, 0, 0),
            op(BPF_RET | BPF_K, 0, 0, 0),
        ]
    }

    pub(super) fn bind_group(addr: SocketAddr, relay_threads: u16) -> io::Result<Vec<UdpSocket>> {
        let first = socket_for(addr, true)?;
        bind(&first, addr)?;
        let first = UdpSocket::from(first);
        // The others take the port the first was given.
        let local = first.local_addr()?;
        let mut group = vec![first];
        for _ in 0..relay_threads {
            let fd = socket_for(local, true)?;
            bind(&fd, local)?;
            group.push(UdpSocket::from(fd));
        }
        let mut filter = program(relay_threads);
        let prog = libc::sock_fprog {
            len: filter.len() as libc::c_ushort,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: the socket is live; `prog` points at `filter`, which outlives the call (the
        // kernel copies the program).
        check(unsafe {
            libc::setsockopt(
                group[0].as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_CBPF,
                (&raw const prog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })?;
        Ok(group)
    }
}

#[cfg(all(test, target_os = "linux", target_arch = "x86_64"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    /// A datagram of `kind` naming session `session` where a relay header would.
    fn datagram(kind: u8, session: u32) -> Vec<u8> {
        let mut d = vec![kind, 1, 0, 0];
        d.extend_from_slice(&session.to_be_bytes());
        d.extend_from_slice(&[0; 40]);
        d
    }

    #[test]
    fn the_kernel_steers_relay_packets_by_session_and_the_rest_to_the_first_socket() {
        let group = bind_relay_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = group[0].local_addr().unwrap();
        assert!(group.iter().all(|s| s.local_addr().unwrap() == addr));
        for s in &group {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        // From many source ports, so the kernel's own hash would spread them.
        let senders: Vec<_> = (0..8)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut buf = [0u8; 128];
        for (i, tx) in senders.iter().enumerate() {
            for session in [0u32, 1, 2, 7, 0x00ab_cdef, u32::MAX - i as u32] {
                let d = datagram(0xD6, session);
                tx.send_to(&d, addr).unwrap();
                let want = 1 + pierce_core::relay_shard_of(&d, 3).unwrap();
                assert_eq!(want, 1 + (session % 3) as usize);
                let n = group[want].recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &d[..], "session {session} on socket {want}");
            }
            for d in [
                datagram(0xD3, 5),
                vec![0xD6, 1, 0],
                vec![0x00, 0x01],
                vec![],
            ] {
                tx.send_to(&d, addr).unwrap();
                let n = group[0].recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &d[..]);
            }
        }
        for s in &group {
            s.set_nonblocking(true).unwrap();
            assert!(s.recv(&mut buf).is_err(), "nothing went elsewhere");
        }
        assert!(bind_relay_group(addr, 0).is_err());
    }
}
