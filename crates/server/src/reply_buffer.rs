//! Each connection's reply buffer sized as Redis 7 sizes it (clientsCronResizeOutputBuffer):
//! the loop's cron shrinks a buffer whose peak use since the last reset stayed under half
//! of it (to the peak, at least 1 KiB) and doubles one that filled (up to 16 KiB), so an
//! idle client holds 1 KiB instead of 16. The buffer given back after a big reply is
//! drained is of this size; CLIENT LIST shows it as `rbs` and the peak as `rbp`.

use std::time::Instant;

use carmine_commands::state::ReplyBufferResizing;
use std::sync::atomic::Ordering;

/// Redis' PROTO_REPLY_MIN_BYTES.
pub const MIN_BYTES: usize = 1024;
/// Redis' PROTO_REPLY_CHUNK_BYTES: a new client's size, and the most the cron grows to.
pub const CHUNK_BYTES: usize = 16 * 1024;

pub struct ReplyBufferSize {
    pub size: usize,
    /// The most bytes waiting in the buffer at once since the last reset, up to `size`.
    pub peak: usize,
    last_reset: Instant,
}

impl ReplyBufferSize {
    pub fn new(now: Instant) -> ReplyBufferSize {
        ReplyBufferSize {
            size: CHUNK_BYTES,
            peak: 0,
            last_reset: now,
        }
    }

    /// `pending` bytes wait to be written.
    pub fn note_pending(&mut self, pending: usize) {
        self.peak = self.peak.max(pending.min(self.size));
    }

    /// The cron's step; returns the new size when it changed.
    pub fn resize(
        &mut self,
        settings: &ReplyBufferResizing,
        pending: usize,
        now: Instant,
    ) -> Option<usize> {
        let mut new_size = None;
        if settings.enabled.load(Ordering::Relaxed) {
            let shrink_to = self.size / 2;
            let expand_to = self.size * 2;
            if shrink_to >= MIN_BYTES && self.peak < shrink_to {
                new_size = Some(MIN_BYTES.max(self.peak + 1));
                settings.shrinks.fetch_add(1, Ordering::Relaxed);
            } else if expand_to < CHUNK_BYTES * 2 && self.peak == self.size {
                new_size = Some(CHUNK_BYTES.min(expand_to));
                settings.expands.fetch_add(1, Ordering::Relaxed);
            }
        }
        let reset_ms = settings.peak_reset_ms.load(Ordering::Relaxed);
        if reset_ms >= 0 && now.duration_since(self.last_reset).as_millis() >= reset_ms as u128 {
            self.peak = pending.min(self.size);
            self.last_reset = now;
        }
        if let Some(size) = new_size {
            self.size = size;
            self.peak = self.peak.min(size);
        }
        new_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_idle_buffer_shrinks_and_a_full_one_grows_to_the_chunk_size() {
        let settings = ReplyBufferResizing::default();
        settings.peak_reset_ms.store(100, Ordering::Relaxed);
        let t0 = Instant::now();
        let mut b = ReplyBufferSize::new(t0);
        b.note_pending(5);
        assert_eq!(b.resize(&settings, 0, t0), Some(MIN_BYTES));
        assert_eq!(b.resize(&settings, 0, t0), None, "at the floor");
        settings.peak_reset_ms.store(-1, Ordering::Relaxed);
        let mut sizes = Vec::new();
        for _ in 0..6 {
            b.note_pending(40_000);
            if let Some(s) = b.resize(&settings, 0, t0 + Duration::from_secs(10)) {
                sizes.push(s);
            }
        }
        assert_eq!(sizes, [2048, 4096, 8192, 16384]);
        assert_eq!(settings.expands.load(Ordering::Relaxed), 4);
        assert_eq!(settings.shrinks.load(Ordering::Relaxed), 1);
        // A peak between half and all of it: no change; resizing off: no change.
        b.peak = 9000;
        assert_eq!(b.resize(&settings, 0, t0), None);
        settings.enabled.store(false, Ordering::Relaxed);
        b.peak = 0;
        assert_eq!(b.resize(&settings, 0, t0), None);
    }

    #[test]
    fn the_peak_resets_to_what_is_pending_after_the_reset_time() {
        let settings = ReplyBufferResizing::default();
        settings.enabled.store(false, Ordering::Relaxed);
        let t0 = Instant::now();
        let mut b = ReplyBufferSize::new(t0);
        b.note_pending(3000);
        b.resize(&settings, 10, t0 + Duration::from_millis(4999));
        assert_eq!(b.peak, 3000);
        b.resize(&settings, 10, t0 + Duration::from_millis(5000));
        assert_eq!(b.peak, 10);
    }
}
