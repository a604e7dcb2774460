//! A counting global allocator, so INFO's `used_memory` is what the heap really holds.
//!
//! A single shared counter updated on every allocation would bounce one cache line
//! between all cores. Each thread instead accumulates its own delta and publishes it to
//! the shared counter only when it drifts past [`FLUSH_BYTES`], so the figure is exact to
//! within threads × 64 KiB.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);
const FLUSH_BYTES: isize = 64 * 1024;

thread_local! {
    static PENDING: Cell<isize> = const { Cell::new(0) };
}

#[inline]
fn record(delta: isize) {
    // try_with: during thread teardown the thread-local may be gone; count directly then.
    let flushed = PENDING.try_with(|p| {
        let v = p.get() + delta;
        if v.abs() >= FLUSH_BYTES {
            ALLOCATED.fetch_add(v, Ordering::Relaxed);
            p.set(0);
        } else {
            p.set(v);
        }
    });
    if flushed.is_err() {
        ALLOCATED.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Bytes currently allocated through [`CountingAlloc`].
pub fn allocated_bytes() -> usize {
    ALLOCATED.load(Ordering::Relaxed).max(0) as usize
}

/// The system allocator, counted.
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's own arguments, so the
// allocator contract is System's; the bookkeeping touches no allocated memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            record(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(-(layout.size() as isize));
        // SAFETY: `ptr` was allocated by `System` with this `layout` (we only forward).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            record(layout.size() as isize);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; `ptr`/`layout` came from this allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            record(new_size as isize - layout.size() as isize);
        }
        p
    }
}
