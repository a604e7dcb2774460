//! Polling for a moment before sleeping, on an event loop that is busy anyway.
//!
//! A request that reaches a sleeping loop costs its sender a wake-up of the loop's
//! thread (an inter-processor interrupt, dear in a virtual machine), and the loop the
//! scheduler's work to sleep and wake. Under `redis-benchmark -P 1` the load
//! generator's core is the bottleneck on this project's machines, and a loop that slept
//! about once every 9 requests made it pay those wake-ups: polling for up to 50 us
//! before sleeping raised SET at -P 1 from 84-91k to 101k requests/s.
//!
//! A loop polls without sleeping (for up to `busy-poll-us` after a turn that had events)
//! only while it was busy for at least [`BUSY_SHARE`] of the last [`WINDOW`]: an idle or
//! lightly loaded server never spins, and a busy one turns at most the rest of its
//! core's time into polling. Time spent polling counts as idle, so spinning does not
//! keep itself on. A loop that had to wait for its CPU (another thread was running
//! there: `/proc/thread-self/schedstat`'s run-queue time over [`CONTENDED_SHARE`] of the
//! window) does not spin in the next window: with `io-threads 2` and redis-benchmark on
//! the same two cores, spinning loops took the client's CPU and SET -P 16 lost 5%; there
//! the loops waited for their CPU 40% of the time, pinned alone 0.6%. With more event
//! loops than CPUs, or without schedstat, a loop never spins.

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

/// How often a loop decides whether it is busy enough to spin.
const WINDOW: Duration = Duration::from_millis(100);

/// The share of [`WINDOW`] a loop must have spent working (not waiting for events) to
/// spin in the next one.
const BUSY_SHARE: f64 = 0.5;

/// The share of [`WINDOW`] a loop may have waited for its CPU and still spin.
const CONTENDED_SHARE: f64 = 0.05;

pub(crate) struct IdlePoll {
    window_start: Instant,
    /// Time spent waiting for events (sleeping or polling) in this window.
    idle: Duration,
    spinning: bool,
    /// No more event loops than CPUs.
    may_spin: bool,
    /// This thread's scheduler statistics and the run-queue time they last gave.
    schedstat: Option<(std::fs::File, u64)>,
}

impl IdlePoll {
    pub(crate) fn new(loops: usize) -> IdlePoll {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Opened by the loop's own thread: `thread-self` is the opener.
        let schedstat = std::fs::File::open("/proc/thread-self/schedstat")
            .ok()
            .and_then(|f| run_queue_ns(&f).map(|ns| (f, ns)));
        IdlePoll {
            window_start: Instant::now(),
            idle: Duration::ZERO,
            spinning: false,
            may_spin: loops <= cpus && schedstat.is_some(),
            schedstat,
        }
    }

    /// Waits up to `timeout` for events, as [`Poll::poll`]. When this loop is busy and
    /// its last turn had events (still in `events`), it first polls without sleeping for
    /// up to `spin`.
    pub(crate) fn poll(
        &mut self,
        poll: &mut Poll,
        events: &mut Events,
        timeout: Duration,
        spin: Duration,
    ) -> io::Result<()> {
        // The counter clock (carmine_commands::clock): two readings every turn.
        let start = carmine_commands::clock::now();
        let spin = spin.min(timeout);
        if self.spinning && !events.is_empty() && !spin.is_zero() {
            loop {
                let polled = poll.poll(events, Some(Duration::ZERO));
                if polled.is_err() || !events.is_empty() {
                    self.account(start);
                    return polled;
                }
                if carmine_commands::clock::now().saturating_duration_since(start) >= spin {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let left =
            timeout.saturating_sub(carmine_commands::clock::now().saturating_duration_since(start));
        let polled = poll.poll(events, Some(left));
        self.account(start);
        polled
    }

    /// Counts the wait that began at `from` and, at the end of a window, decides whether
    /// the next one spins.
    fn account(&mut self, from: Instant) {
        let now = carmine_commands::clock::now();
        self.idle += now.saturating_duration_since(from);
        let window = now.saturating_duration_since(self.window_start);
        if window >= WINDOW {
            let waited = self.schedstat.as_mut().and_then(|(file, last)| {
                let ns = run_queue_ns(file)?;
                Some(Duration::from_nanos(
                    ns.saturating_sub(std::mem::replace(last, ns)),
                ))
            });
            self.spinning = self.may_spin
                && busy_enough(self.idle, window)
                && waited.is_some_and(|w| !contended(w, window));
            self.window_start = now;
            self.idle = Duration::ZERO;
        }
    }
}

/// The run-queue time in a schedstat file (`running-ns waiting-ns timeslices`).
fn run_queue_ns(file: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut text = [0u8; 96];
    let n = file.read_at(&mut text, 0).ok()?;
    let text = std::str::from_utf8(text.get(..n)?).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn contended(waited: Duration, window: Duration) -> bool {
    waited.as_secs_f64() > CONTENDED_SHARE * window.as_secs_f64()
}

fn busy_enough(idle: Duration, window: Duration) -> bool {
    let busy = window.saturating_sub(idle);
    busy.as_secs_f64() >= BUSY_SHARE * window.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_threads_run_queue_time() {
        // Linux with scheduler statistics, as this project's machines: the second field.
        #[cfg(target_os = "linux")]
        {
            let file = std::fs::File::open("/proc/thread-self/schedstat").expect("schedstat");
            assert!(run_queue_ns(&file).is_some());
        }
        let window = Duration::from_millis(100);
        assert!(!contended(Duration::from_millis(5), window));
        assert!(contended(Duration::from_millis(6), window));
    }

    #[test]
    fn spins_only_past_the_busy_share() {
        let window = Duration::from_millis(100);
        assert!(busy_enough(Duration::from_millis(20), window));
        assert!(busy_enough(Duration::from_millis(50), window));
        assert!(!busy_enough(Duration::from_millis(51), window));
        assert!(!busy_enough(window, window));
        // A clock that went nowhere, or idle time past the window, is not busy.
        assert!(!busy_enough(Duration::from_millis(150), window));
    }

    /// An idle loop never starts spinning, whatever it is allowed: its waits fill its
    /// windows. The poll returns at its timeout with no events.
    #[test]
    fn an_idle_loop_does_not_spin() {
        let mut poll = Poll::new().expect("poll");
        let mut events = Events::with_capacity(8);
        let mut idle = IdlePoll::new(1);
        idle.may_spin = true;
        let started = Instant::now();
        while started.elapsed() < WINDOW * 3 {
            idle.poll(
                &mut poll,
                &mut events,
                Duration::from_millis(20),
                Duration::from_micros(50),
            )
            .expect("poll");
            assert!(events.is_empty());
        }
        assert!(!idle.spinning);
    }

    /// A busy loop whose last turn had events spins: an event that arrives meanwhile
    /// ends the wait at once; with nothing arriving the spin ends at its limit and the
    /// loop sleeps until its timeout.
    #[test]
    fn a_busy_loop_spins_then_sleeps_until_its_timeout() {
        let mut poll = Poll::new().expect("poll");
        let waker = mio::Waker::new(poll.registry(), mio::Token(1)).expect("waker");
        let mut events = Events::with_capacity(8);
        let mut idle = IdlePoll::new(1);
        idle.may_spin = true;
        // Busy: a window that passed without waiting for events (nor, unless this
        // machine is loaded, for the CPU).
        idle.window_start = Instant::now() - WINDOW;
        idle.account(Instant::now());
        idle.spinning = true;
        let (timeout, spin) = (Duration::from_millis(30), Duration::from_micros(50));
        waker.wake().expect("wake");
        idle.poll(&mut poll, &mut events, timeout, spin)
            .expect("poll");
        assert!(!events.is_empty(), "the wake-up is an event");
        let started = Instant::now();
        idle.poll(&mut poll, &mut events, timeout, spin)
            .expect("poll");
        assert!(events.is_empty());
        assert!(started.elapsed() >= timeout);
    }
}
