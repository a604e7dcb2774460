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

/// Allocations from this size up get their own mapping (main.rs pins glibc's threshold
/// here: left dynamic, it rises after the first large free and big buffers stay in RSS).
pub const MMAP_THRESHOLD: usize = 128 << 10;

/// Makes room for `bytes` more in the calling thread's malloc heap, in a few large steps,
/// and keeps it until the next call; `reserve_heap(0)` gives it back.
///
/// glibc grows a thread's heap by what each allocation needs, page-rounded, with one
/// mprotect(2) per step (thread heaps ignore M_TOP_PAD); mprotect takes the process' mmap
/// lock for writing, so each step waits behind anything reading the address space. A
/// monitoring agent reading /proc/PID/smaps holds that lock 10-40 ms on a large heap, and
/// a first snapshot's captures grew the event loop's heap in over a thousand steps
/// (snapshot.sh, whose sampler reads smaps_rollup: 19 ms worst write latency in round 1).
///
/// Blocks of 4 MiB, served from the heap while the mmap threshold is raised, grow the
/// current heap to its 64 MiB limit and then open new heaps, one mprotect per block. All
/// but the newest are freed: glibc keeps a heap's mapping when it trims it, so captures
/// reuse the room without mprotect. The newest stays allocated: it keeps the arena's last
/// heap from being wholly free, which glibc would unmap with the room opened in it (30 MiB
/// blocks freed to the last one left 300 steps in round 1). The blocks are never written,
/// so they cost no memory.
pub fn reserve_heap(bytes: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const BLOCK: usize = 4 << 20;
        // The block kept from the last call; dropped first so that its room is reused.
        HEAP_ANCHOR.with(|a| a.take());
        if bytes == 0 {
            return;
        }
        let mut blocks = Vec::new();
        // SAFETY: mallopt takes two integers and only changes allocator tuning. Another
        // thread allocating meanwhile gets a large block from its heap rather than its
        // own mapping, which is correct either way.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, (BLOCK + (1 << 20)) as i32) };
        let mut left = bytes;
        while left > 0 {
            let n = left.min(BLOCK);
            // Fallible: under strict overcommit (vm.overcommit_memory=2) the room may
            // not be there, and an infallible allocation would abort the server.
            let mut block = Vec::<u8>::new();
            if block.try_reserve_exact(n).is_err() {
                break;
            }
            blocks.push(block);
            left -= n;
        }
        // SAFETY: as above; restores the binary's own setting.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as i32) };
        let anchor = blocks.pop();
        // Newest first, so no heap but the anchor's is left wholly free before the ones
        // after it. black_box: an allocation nobody uses may be elided by the optimizer,
        // and these must happen.
        while let Some(block) = blocks.pop() {
            drop(std::hint::black_box(block));
        }
        HEAP_ANCHOR.with(|a| a.replace(std::hint::black_box(anchor)));
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}

thread_local! {
    /// The newest block of the last `reserve_heap`, held until the next call.
    static HEAP_ANCHOR: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
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
