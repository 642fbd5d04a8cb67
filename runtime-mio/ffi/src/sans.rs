//! The drive-contract verbs (`pierce_core::Endpoint`) shared by the client, server and host
//! handles: each `extern "C"` verb of those three is a few lines around these.

use pierce_core::{Endpoint, MAX_DATAGRAM_SIZE, SocketId, SocketRequest, Transmit};

use crate::error::{PierceResult, Result, err};
use crate::types::{Clock, Out, PierceAddr, read_addr, read_bytes};

use PierceResult::*;

/// A datagram to send (`pierce_*_poll_transmit`): `len` bytes of the caller's buffer go to
/// `dst` from local socket `socket` (0: the primary UDP socket; others: sockets the endpoint
/// asked for with a socket request; ids with bit 15 set are TCP streams, framed as a 2-byte
/// big-endian length and the bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PierceTransmit {
    /// Where to send it.
    pub dst: PierceAddr,
    /// How many bytes of the buffer to send (with `PIERCE_BUFFER_TOO_SMALL`: the buffer size
    /// needed).
    pub len: usize,
    /// The local socket it leaves from.
    pub socket: u16,
    /// 0: send it with the socket's default TTL. Otherwise send it with this IPv4 TTL
    /// (IPv6 hop limit), e.g. `setsockopt(IP_TTL)` / `IPV6_UNICAST_HOPS` around the
    /// `sendto`, and put the default back: a hole-punching *opener*, meant to open this
    /// host's NAT without reaching the peer's. If you cannot send it with this TTL, drop it:
    /// sent with the default TTL it does harm (see the crate docs of `pierce-core`,
    /// `Transmit::ttl`).
    pub ttl: u8,
}

/// What a socket request asks for (`PierceSocketRequest`'s `kind`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceSocketRequestKind {
    /// Bind a new UDP socket and call it `socket`: at `addr` if `has_addr`, else at the
    /// primary socket's IP with any port. Report with `handle_socket_opened`.
    PIERCE_SOCKET_OPEN = 1,
    /// Close socket `socket` (UDP, or shut a TCP stream down). Report nothing.
    PIERCE_SOCKET_CLOSE = 2,
    /// Connect a TCP stream to `addr` and call it `socket` (bit 15 set). Report with
    /// `handle_socket_opened` (or `handle_stream_refused`), later its end with
    /// `handle_stream_closed`.
    PIERCE_SOCKET_CONNECT = 3,
    /// Like `CONNECT`, but the stream carries bytes, not framed datagrams (the client's HTTP
    /// exchanges with its gateway, UPnP IGD): write each transmit naming it as it is, hand
    /// what arrives to `handle_datagram_on` as read. An application that cannot reports
    /// `handle_socket_opened` with no address.
    PIERCE_SOCKET_CONNECT_RAW = 4,
}

/// A change to the endpoint's set of local sockets (`pierce_*_poll_socket_request`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PierceSocketRequest {
    /// What to do.
    pub kind: PierceSocketRequestKind,
    /// The socket's id.
    pub socket: u16,
    /// 1 if `addr` is set.
    pub has_addr: u8,
    /// Where to bind (`OPEN` with `has_addr`) or connect (`CONNECT`).
    pub addr: PierceAddr,
}

/// The datagram a caller's short buffer could not take, kept for the next `poll_transmit`.
pub(crate) struct TxSlot {
    scratch: Box<[u8]>,
    pending: Option<Transmit>,
}

impl Default for TxSlot {
    fn default() -> Self {
        Self {
            scratch: vec![0u8; MAX_DATAGRAM_SIZE].into_boxed_slice(),
            pending: None,
        }
    }
}

/// Every endpoint handle: the endpoint, its clock and its transmit slot.
pub(crate) trait Sans {
    type E: Endpoint;
    fn parts(&mut self) -> (&mut Self::E, &Clock, &mut TxSlot);
}

pub(crate) fn handle_datagram<S: Sans>(
    s: &mut S,
    now_us: u64,
    socket: u16,
    from: *const PierceAddr,
    bytes: *const u8,
    len: usize,
) -> Result<PierceResult> {
    let from = read_addr(from, "from")?;
    let datagram = read_bytes(bytes, len, "bytes")?;
    let (e, clock, _) = s.parts();
    e.handle_datagram_on(clock.at(now_us), SocketId(socket), from, datagram);
    Ok(PIERCE_OK)
}

pub(crate) fn handle_timeout<S: Sans>(s: &mut S, now_us: u64) -> Result<PierceResult> {
    let (e, clock, _) = s.parts();
    e.handle_timeout(clock.at(now_us));
    Ok(PIERCE_OK)
}

pub(crate) fn poll_timeout<S: Sans>(s: &mut S, out_us: *mut u64) -> Result<PierceResult> {
    let out = Out::new(out_us, "out_us")?;
    let (e, clock, _) = s.parts();
    match e.poll_timeout() {
        Some(t) => {
            out.write(clock.us(t.at));
            Ok(PIERCE_OK)
        }
        None => Ok(PIERCE_NO_MORE),
    }
}

pub(crate) fn poll_transmit<S: Sans>(
    s: &mut S,
    now_us: u64,
    buf: *mut u8,
    cap: usize,
    out: *mut PierceTransmit,
) -> Result<PierceResult> {
    let out = Out::new(out, "out")?;
    if buf.is_null() && cap > 0 {
        return Err(crate::types::null("buf"));
    }
    let (e, clock, slot) = s.parts();
    let now = clock.at(now_us);
    let t = match slot.pending.take() {
        Some(t) => t,
        None if cap >= MAX_DATAGRAM_SIZE => {
            // SAFETY: non-NULL (cap > 0); the caller promises `cap` writable bytes.
            let buf = unsafe { std::slice::from_raw_parts_mut(buf, cap) };
            let Some(t) = e.poll_transmit(now, buf) else {
                return Ok(PIERCE_NO_MORE);
            };
            out.write(c_transmit(t, t.len));
            return Ok(PIERCE_OK);
        }
        None => match e.poll_transmit(now, &mut slot.scratch) {
            Some(t) => t,
            None => return Ok(PIERCE_NO_MORE),
        },
    };
    if t.len > cap {
        slot.pending = Some(t);
        out.write(c_transmit(t, t.len));
        return Err(err(
            PIERCE_BUFFER_TOO_SMALL,
            format!(
                "the next datagram needs a {}-byte buffer (given {cap}); a buffer of \
                 PIERCE_MAX_DATAGRAM_SIZE always suffices",
                t.len
            ),
        ));
    }
    // SAFETY: t.len <= cap, and buf is non-NULL when cap > 0 (and t.len > 0 needs cap > 0).
    if t.len > 0 {
        unsafe { std::ptr::copy_nonoverlapping(slot.scratch.as_ptr(), buf, t.len) };
    }
    out.write(c_transmit(t, t.len));
    Ok(PIERCE_OK)
}

fn c_transmit(t: Transmit, len: usize) -> PierceTransmit {
    PierceTransmit {
        dst: t.dst.into(),
        len,
        socket: t.socket.0,
        ttl: t.ttl.unwrap_or(0),
    }
}

pub(crate) fn poll_socket_request<S: Sans>(
    s: &mut S,
    out: *mut PierceSocketRequest,
) -> Result<PierceResult> {
    let out = Out::new(out, "out")?;
    let (e, _, _) = s.parts();
    let Some(r) = e.poll_socket_request() else {
        return Ok(PIERCE_NO_MORE);
    };
    let (kind, socket, addr) = match r {
        SocketRequest::Open { id, addr } => (PierceSocketRequestKind::PIERCE_SOCKET_OPEN, id, addr),
        SocketRequest::Close { id } => (PierceSocketRequestKind::PIERCE_SOCKET_CLOSE, id, None),
        SocketRequest::Connect { id, addr } => (
            PierceSocketRequestKind::PIERCE_SOCKET_CONNECT,
            id,
            Some(addr),
        ),
        SocketRequest::ConnectRaw { id, addr } => (
            PierceSocketRequestKind::PIERCE_SOCKET_CONNECT_RAW,
            id,
            Some(addr),
        ),
    };
    out.write(PierceSocketRequest {
        kind,
        socket: socket.0,
        has_addr: addr.is_some().into(),
        addr: addr.into(),
    });
    Ok(PIERCE_OK)
}

pub(crate) fn handle_socket_opened<S: Sans>(
    s: &mut S,
    now_us: u64,
    socket: u16,
    local: *const PierceAddr,
) -> Result<PierceResult> {
    let local = if local.is_null() {
        None
    } else {
        Some(read_addr(local, "local")?)
    };
    let (e, clock, _) = s.parts();
    e.handle_socket_opened(clock.at(now_us), SocketId(socket), local);
    Ok(PIERCE_OK)
}

pub(crate) fn handle_stream_refused<S: Sans>(
    s: &mut S,
    now_us: u64,
    socket: u16,
) -> Result<PierceResult> {
    let (e, clock, _) = s.parts();
    e.handle_stream_refused(clock.at(now_us), SocketId(socket));
    Ok(PIERCE_OK)
}

pub(crate) fn handle_stream_accepted<S: Sans>(
    s: &mut S,
    now_us: u64,
    socket: u16,
    peer: *const PierceAddr,
) -> Result<PierceResult> {
    let peer = read_addr(peer, "peer")?;
    stream_id(socket)?;
    let (e, clock, _) = s.parts();
    e.handle_stream_accepted(clock.at(now_us), SocketId(socket), peer);
    Ok(PIERCE_OK)
}

pub(crate) fn handle_stream_closed<S: Sans>(
    s: &mut S,
    now_us: u64,
    socket: u16,
) -> Result<PierceResult> {
    let (e, clock, _) = s.parts();
    e.handle_stream_closed(clock.at(now_us), SocketId(socket));
    Ok(PIERCE_OK)
}

/// A stream id must have bit 15 set.
fn stream_id(socket: u16) -> Result<()> {
    if SocketId(socket).is_stream() {
        Ok(())
    } else {
        Err(err(
            PIERCE_INVALID_ARGUMENT,
            format!("socket {socket} is not a stream id (bit 15 must be set: PIERCE_STREAM_BIT)"),
        ))
    }
}
