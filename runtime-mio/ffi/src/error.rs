//! Result codes, the thread-local last error message, and the guard every `extern "C"`
//! function runs its body in (no panic crosses the boundary).

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What every `pierce_*` function returns. `PIERCE_OK` (0) is success; `PIERCE_NO_MORE` (1) is
/// not an error either (a `poll_*` function found nothing); every negative code is an error,
/// and then `pierce_last_error_message` says what was wrong.
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PierceResult {
    /// Success.
    PIERCE_OK = 0,
    /// A `poll_*` function had nothing to return (not an error; the output is untouched).
    PIERCE_NO_MORE = 1,
    /// A required pointer argument (handle, output, string, buffer with a non-zero length)
    /// was NULL.
    PIERCE_NULL_ARGUMENT = -1,
    /// The handle is not a live object of the expected type (freed, never created, or a
    /// handle of another type).
    PIERCE_INVALID_HANDLE = -2,
    /// An address is unusable: a `PierceAddr` family other than 4 or 6, or a string that is
    /// not `IP:PORT` (`[IPv6]:PORT`).
    PIERCE_BAD_ADDRESS = -3,
    /// The output buffer is too small; the size needed is reported where the function says
    /// (nothing was consumed: call again with a larger buffer).
    PIERCE_BUFFER_TOO_SMALL = -4,
    /// An argument is out of range or malformed (invalid UTF-8, an unknown enum value...).
    PIERCE_INVALID_ARGUMENT = -5,
    /// Not connected to the server (yet, or any more).
    PIERCE_NOT_CONNECTED = -6,
    /// A queue is full: drain `poll_transmit` (or pump) and retry later.
    PIERCE_QUEUE_FULL = -7,
    /// The payload is larger than the limit; the message names the limit.
    PIERCE_PAYLOAD_TOO_LARGE = -8,
    /// Already done or under way (`connect` on a client that is not fresh...).
    PIERCE_ALREADY = -9,
    /// No group member with that host id shares a group with this client.
    PIERCE_UNKNOWN_PEER = -10,
    /// Not a member of that group or room (or the host named is not).
    PIERCE_NOT_MEMBER = -11,
    /// No channel with that index in the client's configuration.
    PIERCE_UNKNOWN_CHANNEL = -12,
    /// No connected client has that host id (server side).
    PIERCE_UNKNOWN_HOST = -13,
    /// No group (or room) with that id or name.
    PIERCE_UNKNOWN_GROUP = -14,
    /// A room name or password is empty or too long (the message says the limit).
    PIERCE_INVALID_NAME = -15,
    /// The configuration cannot work (the message names the setting).
    PIERCE_INVALID_CONFIG = -16,
    /// An operating system call failed (socket, bind, poll, entropy); the message has the
    /// OS error.
    PIERCE_IO = -17,
    /// The library was built with another ABI version than the caller expects
    /// (`pierce_check_version`).
    PIERCE_VERSION_MISMATCH = -18,
    /// A bug inside the library panicked; the panic was caught at the boundary. The handle
    /// it happened on is poisoned: every later call on it but `*_free` returns this too.
    PIERCE_PANIC = -19,
}

use PierceResult::*;

/// An error on its way to the boundary: its code and what to tell the caller.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) code: PierceResult,
    pub(crate) message: String,
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// An error with `code` and `message`.
pub(crate) fn err(code: PierceResult, message: impl Into<String>) -> Error {
    Error {
        code,
        message: message.into(),
    }
}

thread_local! {
    /// The message of the last error on this thread (NUL-free; a NUL is appended on copy-out).
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: &str) {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push_str(&message.replace('\0', " "));
    });
}

/// The text of a caught panic.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    format!("internal error (panic): {what}")
}

/// Runs an `extern "C"` function's body: a panic becomes `PIERCE_PANIC`, an error sets the
/// thread's last error message and returns its code; `Ok(code)` returns `code` (`PIERCE_OK`
/// or `PIERCE_NO_MORE`) and leaves the last error message as it was.
pub(crate) fn guard(body: impl FnOnce() -> Result<PierceResult>) -> PierceResult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.code
        }
        Err(payload) => {
            set_last_error(&panic_message(payload.as_ref()));
            PIERCE_PANIC
        }
    }
}

/// Copies the message of the last error returned on the calling thread into `buf` (at most
/// `cap` bytes, NUL-terminated, truncated if needed; nothing is written when `buf` is NULL
/// or `cap` is 0) and returns the size needed for the whole message including its NUL. Call
/// it with `cap` 0 first to size the buffer, or just use a 256-byte buffer. The message is
/// UTF-8, English, one line; it stays until the next error on this thread (successful calls
/// do not clear it); empty (returns 1) if no error happened yet.
///
/// Thread safety: any thread, any time (each thread has its own last error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pierce_last_error_message(buf: *mut c_char, cap: usize) -> usize {
    catch_unwind(|| {
        LAST_ERROR.with(|e| {
            let e = e.borrow();
            let bytes = e.as_bytes();
            if !buf.is_null() && cap > 0 {
                let n = bytes.len().min(cap - 1);
                // SAFETY: the caller promises `buf` holds `cap` bytes; n + 1 <= cap.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            bytes.len() + 1
        })
    })
    .unwrap_or(0)
}

/// A short constant name for a result code (`"PIERCE_QUEUE_FULL"`), for logs; an unknown
/// code gives `"PIERCE_UNKNOWN_RESULT"`. The string is static: never free it.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn pierce_result_name(result: i32) -> *const c_char {
    let name: &'static [u8] = match result {
        0 => b"PIERCE_OK\0",
        1 => b"PIERCE_NO_MORE\0",
        -1 => b"PIERCE_NULL_ARGUMENT\0",
        -2 => b"PIERCE_INVALID_HANDLE\0",
        -3 => b"PIERCE_BAD_ADDRESS\0",
        -4 => b"PIERCE_BUFFER_TOO_SMALL\0",
        -5 => b"PIERCE_INVALID_ARGUMENT\0",
        -6 => b"PIERCE_NOT_CONNECTED\0",
        -7 => b"PIERCE_QUEUE_FULL\0",
        -8 => b"PIERCE_PAYLOAD_TOO_LARGE\0",
        -9 => b"PIERCE_ALREADY\0",
        -10 => b"PIERCE_UNKNOWN_PEER\0",
        -11 => b"PIERCE_NOT_MEMBER\0",
        -12 => b"PIERCE_UNKNOWN_CHANNEL\0",
        -13 => b"PIERCE_UNKNOWN_HOST\0",
        -14 => b"PIERCE_UNKNOWN_GROUP\0",
        -15 => b"PIERCE_INVALID_NAME\0",
        -16 => b"PIERCE_INVALID_CONFIG\0",
        -17 => b"PIERCE_IO\0",
        -18 => b"PIERCE_VERSION_MISMATCH\0",
        -19 => b"PIERCE_PANIC\0",
        _ => b"PIERCE_UNKNOWN_RESULT\0",
    };
    name.as_ptr().cast()
}

// ---- core errors to codes ------------------------------------------------------------------

impl From<pierce_core::SendError> for Error {
    fn from(e: pierce_core::SendError) -> Self {
        use pierce_core::SendError as S;
        let code = match e {
            S::NotConnected => PIERCE_NOT_CONNECTED,
            S::UnknownHost(_) => PIERCE_UNKNOWN_HOST,
            S::UnknownPeer => PIERCE_UNKNOWN_PEER,
            S::NotMember => PIERCE_NOT_MEMBER,
            S::UnknownChannel => PIERCE_UNKNOWN_CHANNEL,
            S::PayloadTooLarge { .. } => PIERCE_PAYLOAD_TOO_LARGE,
            S::QueueFull => PIERCE_QUEUE_FULL,
            _ => PIERCE_INVALID_ARGUMENT,
        };
        err(code, e.to_string())
    }
}

impl From<pierce_core::CommandError> for Error {
    fn from(e: pierce_core::CommandError) -> Self {
        use pierce_core::CommandError as C;
        let code = match e {
            C::NotConnected => PIERCE_NOT_CONNECTED,
            C::InvalidName { .. } => PIERCE_INVALID_NAME,
            C::QueueFull => PIERCE_QUEUE_FULL,
            C::NotMember => PIERCE_NOT_MEMBER,
            C::TooLarge => PIERCE_PAYLOAD_TOO_LARGE,
            _ => PIERCE_INVALID_ARGUMENT,
        };
        err(code, e.to_string())
    }
}

impl From<pierce_core::ConnectError> for Error {
    fn from(e: pierce_core::ConnectError) -> Self {
        use pierce_core::ConnectError as C;
        let code = match e {
            C::AlreadyStarted => PIERCE_ALREADY,
            C::TokenTooLarge { .. } => PIERCE_PAYLOAD_TOO_LARGE,
            _ => PIERCE_INVALID_ARGUMENT,
        };
        err(code, e.to_string())
    }
}

impl From<pierce_core::GroupError> for Error {
    fn from(e: pierce_core::GroupError) -> Self {
        use pierce_core::GroupError as G;
        let code = match e {
            G::UnknownHost(_) => PIERCE_UNKNOWN_HOST,
            G::UnknownGroup => PIERCE_UNKNOWN_GROUP,
            G::AlreadyMember => PIERCE_ALREADY,
            G::NotMember => PIERCE_NOT_MEMBER,
            _ => PIERCE_INVALID_ARGUMENT,
        };
        err(code, e.to_string())
    }
}

impl From<pierce_core::UnknownHost> for Error {
    fn from(e: pierce_core::UnknownHost) -> Self {
        err(PIERCE_UNKNOWN_HOST, e.to_string())
    }
}

impl From<pierce_core::ConfigError> for Error {
    fn from(e: pierce_core::ConfigError) -> Self {
        err(PIERCE_INVALID_CONFIG, format!("invalid configuration: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        err(PIERCE_IO, e.to_string())
    }
}
