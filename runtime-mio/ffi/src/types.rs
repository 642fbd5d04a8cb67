//! Plain data shared by every part of the API: addresses, the caller's clock, and the checked
//! readers and writers for what C passes in (pointers, strings, byte ranges).

use std::ffi::{CStr, c_char};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::error::{PierceResult, Result, err, guard};

use PierceResult::*;

/// An IPv4 or IPv6 address and port.
///
/// `family` is 4 or 6. For IPv4 the address is in `ip[0..4]` (network order: `1.2.3.4` is
/// `{1, 2, 3, 4}`) and the other 12 bytes are 0; for IPv6 all 16 bytes (network order). `port`
/// is in host byte order (7777 is 7777). IPv6 scope ids and flow labels are not carried.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PierceAddr {
    /// 4 or 6 (0 in an output means "no address").
    pub family: u8,
    /// The address bytes, network order.
    pub ip: [u8; 16],
    /// The port, host byte order.
    pub port: u16,
}

impl PierceAddr {
    /// "No address" (family 0).
    pub const NONE: Self = Self {
        family: 0,
        ip: [0; 16],
        port: 0,
    };

    /// The Rust address, or `PIERCE_BAD_ADDRESS` for a family other than 4 or 6.
    pub(crate) fn to_socket(self, what: &str) -> Result<SocketAddr> {
        let ip = match self.family {
            4 => IpAddr::V4(Ipv4Addr::new(
                self.ip[0], self.ip[1], self.ip[2], self.ip[3],
            )),
            6 => IpAddr::V6(Ipv6Addr::from(self.ip)),
            f => {
                return Err(err(
                    PIERCE_BAD_ADDRESS,
                    format!("{what}: address family {f} (must be 4 or 6)"),
                ));
            }
        };
        Ok(SocketAddr::new(ip, self.port))
    }
}

impl From<SocketAddr> for PierceAddr {
    fn from(a: SocketAddr) -> Self {
        let mut ip = [0u8; 16];
        let family = match a.ip() {
            IpAddr::V4(v4) => {
                ip[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                ip = v6.octets();
                6
            }
        };
        Self {
            family,
            ip,
            port: a.port(),
        }
    }
}

impl From<Option<SocketAddr>> for PierceAddr {
    fn from(a: Option<SocketAddr>) -> Self {
        a.map_or(Self::NONE, Self::from)
    }
}

/// Maps the caller's monotonic microseconds onto `Instant`s for one object: the `now_us` given
/// at creation is the origin (it is that object's `Instant` at creation); a `now_us` earlier
/// than the origin maps to the origin (and the core clamps any later step backwards too).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    base: Instant,
    origin_us: u64,
}

impl Clock {
    pub(crate) fn new(now_us: u64) -> Self {
        Self {
            // The FFI is a runtime: it may read the clock, once, to have an Instant to add to.
            base: Instant::now(),
            origin_us: now_us,
        }
    }

    /// The `Instant` for the caller's `now_us`.
    pub(crate) fn at(&self, now_us: u64) -> Instant {
        let d = Duration::from_micros(now_us.saturating_sub(self.origin_us));
        self.base.checked_add(d).unwrap_or(self.base)
    }

    /// The caller's microseconds for `at`.
    pub(crate) fn us(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.base).as_micros();
        self.origin_us
            .saturating_add(u64::try_from(d).unwrap_or(u64::MAX))
    }
}

// ---- reading what C passes in ----------------------------------------------------------------

/// `*p`, or `PIERCE_NULL_ARGUMENT` naming `what`.
pub(crate) fn read<T: Copy>(p: *const T, what: &str) -> Result<T> {
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL; the caller promises it points to a `T`.
    Ok(unsafe { p.read_unaligned() })
}

/// The error for a NULL `what`.
pub(crate) fn null(what: &str) -> crate::error::Error {
    err(PIERCE_NULL_ARGUMENT, format!("{what} is NULL"))
}

/// An address argument.
pub(crate) fn read_addr(p: *const PierceAddr, what: &str) -> Result<SocketAddr> {
    read(p, what)?.to_socket(what)
}

/// `len` bytes at `p` (NULL is fine when `len` is 0).
pub(crate) fn read_bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(err(
            PIERCE_NULL_ARGUMENT,
            format!("{what} is NULL with length {len}"),
        ));
    }
    // SAFETY: non-NULL; the caller promises `len` readable bytes that outlive the call.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A NUL-terminated UTF-8 string argument.
pub(crate) fn read_str<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL; the caller promises a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| {
        err(
            PIERCE_INVALID_ARGUMENT,
            format!("{what} is not valid UTF-8"),
        )
    })
}

/// An optional string: NULL reads as "".
pub(crate) fn read_opt_str<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        Ok("")
    } else {
        read_str(p, what)
    }
}

/// 32 seed bytes from `p`, or from the OS when `p` is NULL.
pub(crate) fn read_seed(p: *const u8) -> Result<[u8; 32]> {
    if p.is_null() {
        return pierce_mio::os_seed().map_err(|e| err(PIERCE_IO, format!("OS entropy: {e}")));
    }
    read(p.cast::<[u8; 32]>(), "seed")
}

/// A boolean byte (0 or 1).
pub(crate) fn flag(v: u8, what: &str) -> Result<bool> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(err(
            PIERCE_INVALID_ARGUMENT,
            format!("{what} is {v} (must be 0 or 1)"),
        )),
    }
}

/// A checked output pointer: NULL is refused before anything happens, so a call never does its
/// work (and loses its result) only to find nowhere to put it.
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    pub(crate) fn new(p: *mut T, what: &str) -> Result<Self> {
        if p.is_null() {
            Err(null(what))
        } else {
            Ok(Self(p))
        }
    }

    pub(crate) fn write(&self, v: T) {
        // SAFETY: non-NULL; the caller promises it points to writable memory for a `T`.
        // `write_unaligned` neither reads nor drops what was there (it may be uninitialised).
        unsafe { self.0.write_unaligned(v) }
    }
}

// ---- addresses ---------------------------------------------------------------------------------

/// Parses `IP:PORT` (`1.2.3.4:7777`, `[::1]:7777`) into `*out`.
///
/// Returns `PIERCE_BAD_ADDRESS` for anything else (no host names: resolve them yourself),
/// `PIERCE_INVALID_ARGUMENT` for invalid UTF-8, `PIERCE_NULL_ARGUMENT` for NULL arguments.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_addr_parse(
    text: *const c_char,
    out: *mut PierceAddr,
) -> PierceResult {
    guard(|| {
        let out = Out::new(out, "out")?;
        let s = read_str(text, "text")?;
        let a: SocketAddr = s
            .trim()
            .parse()
            .map_err(|_| err(PIERCE_BAD_ADDRESS, format!("{s:?} is not IP:PORT")))?;
        out.write(a.into());
        Ok(PIERCE_OK)
    })
}

/// Writes `addr` as text (`1.2.3.4:7777`, `[::1]:7777`), NUL-terminated, into `buf` (`cap`
/// bytes). `*out_len` (if not NULL) gets the text's length without the NUL, also when the
/// buffer is too small (`PIERCE_BUFFER_TOO_SMALL`; then nothing is written). 64 bytes always
/// suffice.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_addr_format(
    addr: *const PierceAddr,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> PierceResult {
    guard(|| {
        let a = read_addr(addr, "addr")?;
        let text = a.to_string();
        if !out_len.is_null() {
            Out::new(out_len, "out_len")?.write(text.len());
        }
        if cap < text.len() + 1 {
            return Err(err(
                PIERCE_BUFFER_TOO_SMALL,
                format!("the address needs {} bytes with its NUL", text.len() + 1),
            ));
        }
        if buf.is_null() {
            return Err(null("buf"));
        }
        // SAFETY: the caller promises `cap` writable bytes; text.len() + 1 <= cap.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            *buf.add(text.len()) = 0;
        }
        Ok(PIERCE_OK)
    })
}
