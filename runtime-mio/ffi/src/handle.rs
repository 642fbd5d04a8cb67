//! Handles: each object is a `Box` whose address the caller holds as an opaque pointer, and
//! whose address (with its type) is recorded in a process-wide registry of live handles.
//!
//! Every call looks the pointer up in the registry *before* touching it, so a NULL, freed,
//! garbage or wrong-type handle is refused with an error code without the library ever
//! reading through it: no crash, and nothing for valgrind to flag. What the registry cannot
//! catch is a freed handle whose address the allocator has since given to a new object of the
//! same type (the stale pointer then reaches the new object): using a freed handle is still a
//! bug in C terms, only a well-reported one most of the time. A handle table of integer ids
//! with generations would catch that too, but it would make every handle an integer that C,
//! C# and Godot code cannot type-check, and the registry costs the same (one uncontended lock
//! per call).
//!
//! A panic inside a call on a handle poisons it (its state may be half-updated): every later
//! call on it returns `PIERCE_PANIC`, and only `*_free` works.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use crate::error::{PierceResult, Result, err, guard, panic_message};

/// Which type a live handle has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Client,
    Server,
    Host,
    DriverClient,
    DriverServer,
}

/// A type handed to C as an opaque pointer.
pub(crate) trait Handle: Sized {
    const KIND: Kind;
    /// The C type name, for messages.
    const NAME: &'static str;
}

#[derive(Clone, Copy)]
struct Entry {
    kind: Kind,
    poisoned: bool,
}

/// Live handles by address.
static LIVE: Mutex<BTreeMap<usize, Entry>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<usize, Entry>> {
    // Nothing panics while holding the lock; a poisoned lock still has a consistent map.
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Moves `value` to the heap and registers it; the pointer is the caller's handle.
pub(crate) fn register<T: Handle>(value: T) -> *mut T {
    let p = Box::into_raw(Box::new(value));
    let entry = Entry {
        kind: T::KIND,
        poisoned: false,
    };
    live().insert(p as usize, entry);
    p
}

/// Checks that `p` is a live, unpoisoned `T`.
fn check<T: Handle>(p: *mut T) -> Result<()> {
    if p.is_null() {
        return Err(err(
            PierceResult::PIERCE_NULL_ARGUMENT,
            format!("the {} handle is NULL", T::NAME),
        ));
    }
    match live().get(&(p as usize)) {
        Some(e) if e.kind == T::KIND && e.poisoned => Err(err(
            PierceResult::PIERCE_PANIC,
            format!("this {} panicked earlier and is unusable; free it", T::NAME),
        )),
        Some(e) if e.kind == T::KIND => Ok(()),
        _ => Err(err(
            PierceResult::PIERCE_INVALID_HANDLE,
            format!("not a live {} handle (freed, or never created)", T::NAME),
        )),
    }
}

/// Runs `body` on the object behind handle `p` inside the boundary guard; a panic in `body`
/// poisons the handle.
pub(crate) fn with<T: Handle>(
    p: *mut T,
    body: impl FnOnce(&mut T) -> Result<PierceResult>,
) -> PierceResult {
    guard(|| {
        check(p)?;
        // SAFETY: `p` is registered, so it came from `register::<T>` and was not freed since
        // (registered addresses are removed before they are freed). The caller promises no
        // other thread uses the handle now.
        let object = unsafe { &mut *p };
        match catch_unwind(AssertUnwindSafe(|| body(object))) {
            Ok(r) => r,
            Err(payload) => {
                if let Some(e) = live().get_mut(&(p as usize)) {
                    e.poisoned = true;
                }
                Err(err(
                    PierceResult::PIERCE_PANIC,
                    panic_message(payload.as_ref()),
                ))
            }
        }
    })
}

/// Unregisters and drops the object behind `p`. NULL is accepted and does nothing (like
/// `free(NULL)`); a handle that is not live is refused with `PIERCE_INVALID_HANDLE`.
pub(crate) fn free<T: Handle>(p: *mut T) -> PierceResult {
    guard(|| {
        if p.is_null() {
            return Ok(PierceResult::PIERCE_OK);
        }
        let removed = {
            let mut live = live();
            let removed = match live.get(&(p as usize)) {
                Some(e) if e.kind == T::KIND => live.remove(&(p as usize)),
                _ => None,
            };
            if live.is_empty() {
                // An emptied BTreeMap keeps its root node: give it back, so a program that
                // freed every handle ends with nothing of the library's left on the heap
                // (valgrind's "still reachable" is then only ever a forgotten free).
                *live = BTreeMap::new();
            }
            removed
        };
        if removed.is_none() {
            return Err(err(
                PierceResult::PIERCE_INVALID_HANDLE,
                format!("not a live {} handle (freed twice?)", T::NAME),
            ));
        }
        // SAFETY: it was registered (so it came from `Box::into_raw`), and it is unregistered
        // now, so no later call reaches it. A panic while dropping leaks what is left.
        drop(unsafe { Box::from_raw(p) });
        Ok(PierceResult::PIERCE_OK)
    })
}
