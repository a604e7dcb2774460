//! The monotonic clock that times commands: [`now`], an `Instant` read from the CPU's
//! time-stamp counter where the kernel itself keeps time with it.
//!
//! Every command is timed (INFO commandstats, SLOWLOG, the latency monitor), so a loop
//! serving pipelined commands reads the clock once per command. `Instant::now()` goes
//! through the vDSO's `clock_gettime`: 24-26 ns here, 4% of a loop serving pipelined
//! SETs and 7% of a replica applying a stream of LPUSHes. Reading the counter and
//! scaling it from an anchor takes 10-13 ns.
//!
//! Each thread keeps an anchor: a real `Instant` and the counter read with it. A reading
//! within [`ANCHOR_TICKS`] of the anchor is the anchor plus the ticks since, scaled by
//! nanoseconds per tick measured between this thread's last two anchors; past that, or
//! before two anchors exist, the reading is `Instant::now()` and becomes the new anchor.
//! So the scale is measured again every ~100 ms, an error in it never accumulates past
//! one window (a scale off by 0.01% is 10 µs at the window's end), and a counter that
//! went backwards (another core's, not in step) gives a real reading. Where the kernel's
//! clock source is not the counter (it found the counter unreliable, or this is not
//! x86-64), every reading is `Instant::now()`.
//!
//! Readings from both sources are compared with each other (a connection's deadline
//! with a command's start, say): they differ by at most the scale's error over a window,
//! and every comparison saturates.

use std::time::Instant;

/// Counter ticks an anchor serves: about 100 ms at 3 GHz.
const ANCHOR_TICKS: u64 = 300_000_000;

/// Nanoseconds per tick in 32.32 fixed point.
const SCALE_SHIFT: u32 = 32;

/// The largest scale used, 4 ns a tick (a counter as slow as 250 MHz): `ANCHOR_TICKS`
/// times it stays within 64 bits. A slower counter's threads read the system clock.
const MAX_SCALE: u64 = 4 << SCALE_SHIFT;

/// The shortest time between two anchors that measures a scale: below it the two clock
/// readings' own cost would be a visible part of the interval.
const MIN_SCALE_NANOS: u64 = 10_000_000;

/// The most ticks a real reading may take for its anchor to count: a thread preempted
/// between the counter and the clock would pair them milliseconds apart, and a scale
/// measured from that would be off by as much.
const MAX_PAIRING_TICKS: u64 = 2_000;

#[derive(Clone, Copy)]
struct Anchor {
    at: Instant,
    ticks: u64,
    /// Nanoseconds per tick (see [`SCALE_SHIFT`]); 0 until measured.
    scale: u64,
}

thread_local! {
    static ANCHOR: std::cell::Cell<Option<Anchor>> = const { std::cell::Cell::new(None) };
}

/// Whether the kernel keeps time with the time-stamp counter (so it runs at a constant
/// rate, in step across cores): read once.
fn counter_usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        cfg!(target_arch = "x86_64")
            && std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|source| source.trim() == "tsc")
    })
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn read_counter() -> u64 {
    // SAFETY: RDTSC exists on every x86-64 CPU and only reads a register; the value is
    // used only as described in the module's note.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn read_counter() -> u64 {
    0
}

/// Now, as `Instant::now()` reads it to within microseconds (see the module's note).
#[inline]
pub fn now() -> Instant {
    let ticks = read_counter();
    if let Some(anchor) = ANCHOR.get() {
        let since = ticks.wrapping_sub(anchor.ticks);
        if anchor.scale != 0 && since < ANCHOR_TICKS {
            return anchor.at
                + std::time::Duration::from_nanos((since * anchor.scale) >> SCALE_SHIFT);
        }
    }
    reanchor()
}

/// A real reading, which becomes this thread's anchor; the scale is measured from the
/// previous anchor when it is far enough back. Until a first scale is measured the first
/// anchor stays, so that readings taken microseconds apart still measure one.
#[cold]
fn reanchor() -> Instant {
    if !counter_usable() {
        return Instant::now();
    }
    // The anchor's ticks are those halfway through the real reading: paired within
    // `MAX_PAIRING_TICKS` (under a microsecond), which over the 10 ms or more a scale is
    // measured across is an error under 0.01%.
    let before = read_counter();
    let at = Instant::now();
    let pairing = read_counter().wrapping_sub(before);
    if pairing > MAX_PAIRING_TICKS {
        // Preempted (or a counter out of step) between the readings: not an anchor.
        return at;
    }
    let ticks = before.wrapping_add(pairing / 2);
    let scale = match ANCHOR.get() {
        None => 0,
        // Too soon after the first anchor to measure: keep measuring from it.
        Some(previous)
            if previous.scale == 0
                && at.saturating_duration_since(previous.at)
                    < std::time::Duration::from_nanos(MIN_SCALE_NANOS) =>
        {
            return at
        }
        // Unmeasurable otherwise (too long since, or a counter that went backwards):
        // the scale it had, from this anchor on.
        Some(previous) => measured_scale(&previous, at, ticks).unwrap_or(previous.scale),
    };
    ANCHOR.set(Some(Anchor { at, ticks, scale }));
    at
}

/// Nanoseconds per tick between `previous` and (`at`, `ticks`), unless the interval is
/// too short to measure or the counter went backwards (wrapping to a huge tick count).
fn measured_scale(previous: &Anchor, at: Instant, ticks: u64) -> Option<u64> {
    let nanos = u64::try_from(at.duration_since(previous.at).as_nanos()).ok()?;
    let elapsed_ticks = ticks.wrapping_sub(previous.ticks);
    if nanos < MIN_SCALE_NANOS || elapsed_ticks > ANCHOR_TICKS.saturating_mul(1000) {
        return None;
    }
    let scale = (u128::from(nanos) << SCALE_SHIFT).checked_div(u128::from(elapsed_ticks))?;
    u64::try_from(scale)
        .ok()
        .filter(|&s| s > 0 && s <= MAX_SCALE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Readings fall between the real readings around them, give or take the scale's
    /// error, before and after the scale is measured and across several windows.
    #[test]
    fn readings_agree_with_the_system_clock() {
        let start = Instant::now();
        let mut checked = 0;
        while start.elapsed() < Duration::from_millis(400) {
            let before = Instant::now();
            let reading = now();
            let after = Instant::now();
            let slack = Duration::from_micros(20);
            assert!(reading + slack >= before, "{:?} early", before - reading);
            assert!(reading <= after + slack, "{:?} late", reading - after);
            checked += 1;
            if checked % 1000 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert!(checked > 1000);
    }

    /// Readings microseconds apart, with nothing else in between, measure the scale
    /// once `MIN_SCALE_NANOS` have passed (the first anchor stays until then).
    #[test]
    fn the_scale_is_measured_where_the_counter_is_the_clock() {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(now());
        }
        match ANCHOR.get() {
            Some(anchor) => {
                assert!(counter_usable());
                assert!(anchor.scale > 0, "measured");
                // Between 0.05 and 4 ns a tick: counters from 250 MHz to 20 GHz.
                assert!(anchor.scale <= MAX_SCALE);
                assert!(anchor.scale >= (1 << SCALE_SHIFT) / 20);
            }
            None => assert!(!counter_usable(), "anchored where usable"),
        }
    }
}
