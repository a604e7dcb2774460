//! Redis-style log lines (`pid:M 22 Nov 2026 20:00:00.123 * message`) to stdout or the
//! configured logfile.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

static SINK: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();
static LEVEL: OnceLock<u8> = OnceLock::new();

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Verbose = 1,
    Notice = 2,
    Warning = 3,
}

/// Chooses where logs go: an empty path means stdout. Later calls are ignored.
pub fn init(path: &str, level: &str) -> std::io::Result<()> {
    let sink: Box<dyn Write + Send> = if path.is_empty() {
        Box::new(std::io::stdout())
    } else {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        if SINK.get().is_none() {
            // Kept open for good in SINK: a crash report writes there too.
            crate::crash::set_log_fd(std::os::fd::AsRawFd::as_raw_fd(&file));
        }
        Box::new(file)
    };
    let _ = SINK.set(Mutex::new(sink));
    let lvl = match level {
        "debug" => 0,
        "verbose" => 1,
        "notice" => 2,
        "warning" => 3,
        _ => 4,
    };
    let _ = LEVEL.set(lvl);
    Ok(())
}

fn civil(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil conversion.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn log(level: Level, msg: &str) {
    if (level as u8) < *LEVEL.get().unwrap_or(&2) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (y, m, d) = civil(secs.div_euclid(86400));
    let t = secs.rem_euclid(86400);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mark = match level {
        Level::Debug => '.',
        Level::Verbose => '-',
        Level::Notice => '*',
        Level::Warning => '#',
    };
    let line = format!(
        "{}:M {:02} {} {} {:02}:{:02}:{:02}.{:03} {} {}\n",
        std::process::id(),
        d,
        MONTHS[(m as usize + 11) % 12],
        y,
        t / 3600,
        (t / 60) % 60,
        t % 60,
        now.subsec_millis(),
        mark,
        msg
    );
    match SINK.get() {
        Some(s) => {
            let mut w = s.lock();
            let _ = w.write_all(line.as_bytes());
            let _ = w.flush();
        }
        None => print!("{line}"),
    }
}

/// `log` at a level given as Redis numbers it (0 debug .. 3 warning).
pub fn at_level(level: u8, msg: &str) {
    let level = match level {
        0 => Level::Debug,
        1 => Level::Verbose,
        2 => Level::Notice,
        _ => Level::Warning,
    };
    log(level, msg);
}

pub fn notice(msg: &str) {
    log(Level::Notice, msg);
}

pub fn warning(msg: &str) {
    log(Level::Warning, msg);
}

pub fn verbose(msg: &str) {
    log(Level::Verbose, msg);
}
