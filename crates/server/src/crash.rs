//! What a crash leaves in the log, as Redis' crash report does: a fatal signal
//! (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) writes a bug report with the signal and a
//! stack trace before the process dies of it, and a panic writes its message and where
//! it happened.
//!
//! A panic that ends an event loop stops the whole process ([`stop_on_panic`]): a
//! loop that died alone left its clients waiting forever, new connections handed to it
//! unanswered, and the server answering PING on its other loops, so nothing failed it
//! over. Stopping is what Redis does on a bug, and what Sentinel and Cluster expect.

use std::fmt::Write;

// `crash-log-enabled` (Redis' setting): with `no`, a fatal signal ends the process as if
// no handler were installed (a cleaner core dump, Redis' reason for it) and a panic logs
// its message without a stack trace.
use carmine_commands::config::CRASH_LOG_ENABLED;
use std::sync::atomic::{AtomicI32, Ordering};

/// The descriptor the log writes to (stdout until a logfile is opened), for the signal
/// handler, which must not take the log's lock.
static LOG_FD: AtomicI32 = AtomicI32::new(1);

/// Records the log's descriptor (see [`LOG_FD`]).
pub(crate) fn set_log_fd(fd: i32) {
    LOG_FD.store(fd, Ordering::Relaxed);
}

const FATAL_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGABRT,
];

/// Installs the panic hook and the fatal signals' handler. Called once, after the log
/// is set up.
pub fn install() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Where the operator looks (the logfile), besides stderr.
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let trace = if CRASH_LOG_ENABLED.load(Ordering::Relaxed) {
            format!(
                "\n------ STACK TRACE ------\n{}",
                std::backtrace::Backtrace::force_capture()
            )
        } else {
            String::new()
        };
        crate::log::warning(&format!(
            "Guru Meditation: {message} #{location} (thread {}){trace}",
            thread.name().unwrap_or("unnamed"),
        ));
        default_hook(info);
    }));
    for signal in FATAL_SIGNALS {
        // SAFETY: `sigaction` with a zeroed structure, an empty mask and a handler of the
        // three-argument form (SA_SIGINFO); SA_RESETHAND puts the default back before
        // the handler runs, so a fault inside it ends the process.
        #[allow(unsafe_code)]
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fatal_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Runs `body`, a server thread's whole life (an event loop, the master link, the
/// cluster bus, Sentinel); a panic that ends it is logged and the process aborts (see the
/// module's note), which writes the bug report. Such a thread dying alone left its work
/// undone with nobody told: a loop's clients unanswered, a replica no longer following
/// its master, a node no longer gossiping.
pub(crate) fn stop_on_panic(what: &str, body: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        crate::log::warning(&format!(
            "{what} stopped by a panic: stopping the server rather than running on without it"
        ));
        std::process::abort()
    }
}

/// Writes `bytes` to the log's descriptor with `write(2)`, which a signal handler may
/// call; a short or failed write is left as it is.
fn write_raw(bytes: &[u8]) {
    // SAFETY: `write` on a descriptor number with a valid buffer and its length; a closed
    // or bad descriptor makes it fail, which is ignored.
    #[allow(unsafe_code)]
    unsafe {
        libc::write(
            LOG_FD.load(Ordering::Relaxed),
            bytes.as_ptr().cast(),
            bytes.len(),
        );
    }
}

/// Formatting straight to the log's descriptor (see [`write_raw`]).
struct RawLog;

impl std::fmt::Write for RawLog {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        write_raw(s.as_bytes());
        Ok(())
    }
}

/// `n` in decimal into `buf`, without allocating; returns the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            return &buf[at..];
        }
    }
}

fn signal_name(signal: libc::c_int) -> &'static [u8] {
    match signal {
        libc::SIGSEGV => b"SIGSEGV",
        libc::SIGBUS => b"SIGBUS",
        libc::SIGFPE => b"SIGFPE",
        libc::SIGILL => b"SIGILL",
        libc::SIGABRT => b"SIGABRT",
        _ => b"?",
    }
}

/// The fatal signals' handler: the report's header with `write(2)` only, then a stack
/// trace (which allocates: if the signal came from inside the allocator this may hang,
/// so an alarm ends the process after 5 s), then the signal again with its default
/// action, which ends the process as it would have without the report.
extern "C" fn on_fatal_signal(
    signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    if !CRASH_LOG_ENABLED.load(Ordering::Relaxed) {
        die_of(signal);
    }
    let mut digits = [0u8; 20];
    write_raw(b"\n\n=== CARMINE BUG REPORT START: Cut & paste starting from here ===\n");
    write_raw(decimal(u64::from(std::process::id()), &mut digits));
    write_raw(b":M # Carmine ");
    write_raw(env!("CARGO_PKG_VERSION").as_bytes());
    write_raw(b" crashed by signal: ");
    write_raw(decimal(u64::try_from(signal).unwrap_or(0), &mut digits));
    write_raw(b" (");
    write_raw(signal_name(signal));
    write_raw(b")\n\n------ STACK TRACE ------\n");
    // SAFETY: `alarm` only arms a timer; SIGALRM's default action ends the process.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
        libc::alarm(5);
    }
    // Written piece by piece as the frames are resolved: an alarm that ends a slow
    // resolution leaves the frames written so far.
    let trace = std::backtrace::Backtrace::force_capture();
    let _ = write!(RawLog, "{trace}");
    write_raw(b"\n=== CARMINE BUG REPORT END. Make sure to include from START to END. ===\n");
    die_of(signal);
}

/// Raises `signal` again with its default action, which ends the process as it would
/// have without a handler.
fn die_of(signal: libc::c_int) {
    // SAFETY: SA_RESETHAND restored the default action before the handler ran, and it is
    // set again here; SA_NODEFER lets the raised signal through at once.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimal_writes_every_digit() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(6, &mut buf), b"6");
        assert_eq!(decimal(4_294_967_295, &mut buf), b"4294967295");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
