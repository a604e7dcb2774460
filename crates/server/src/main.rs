//! `carmine-server [config-file] [--name value ...]`, as `redis-server`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use carmine_commands::{args_to_config_text, Config};
use carmine_server::{alloc, log, Server};

#[global_allocator]
static ALLOC: alloc::CountingAlloc = alloc::CountingAlloc;

fn usage() -> ! {
    eprintln!("Usage: ./carmine-server [/path/to/redis.conf] [options] [-]");
    eprintln!("       ./carmine-server - (read config from stdin)");
    eprintln!("       ./carmine-server -v or --version");
    eprintln!("       ./carmine-server -h or --help");
    eprintln!();
    eprintln!("Examples:");
    eprintln!("       ./carmine-server (run the server with default conf)");
    eprintln!("       ./carmine-server /etc/redis/6379.conf");
    eprintln!("       ./carmine-server --port 7777");
    eprintln!("       ./carmine-server /etc/myredis.conf --loglevel verbose");
    std::process::exit(1);
}

#[allow(unsafe_code)]
fn daemonize() {
    // SAFETY: called before any thread is spawned, so forking cannot leave another
    // thread's locks held in the child; daemon(3) only forks, setsid()s and redirects.
    let rc = unsafe { libc::daemon(1, 0) };
    if rc != 0 {
        eprintln!("daemonize failed: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
}

/// Pins glibc's mmap threshold at its 128 KiB default. glibc otherwise raises it to the
/// size of any mmapped block freed (up to 32 MiB), after which big transient buffers
/// (a pipeline's query or reply buffer during a bulk load) come from the heap and their
/// pages stay in RSS once freed: memory.sh measured 88.5 or 103.9 MiB RSS for the same
/// 1M keys depending on where those buffers fell. Above the threshold a block is its own
/// mapping and goes back to the system when freed. Fixing the mmap threshold also fixes
/// the trim threshold, at 128 KiB by default: freed small blocks at the top of a thread's
/// heap were then handed back and refaulted over and over, and each shrink and growth
/// takes the process' mmap lock, which a /proc/PID/smaps_rollup reader holds for tens of
/// milliseconds (snapshot.sh's first round: 21.6 ms worst latency, 1.12x peak). 32 MiB
/// keeps that churn away. The binary sets these, not the library:
/// an embedding program's allocator settings are its own.
#[allow(unsafe_code)]
fn fix_malloc_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and only changes allocator tuning; it runs
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, alloc::MMAP_THRESHOLD as i32);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

fn main() {
    fix_malloc_thresholds();
    let argv0 = std::env::args().next().unwrap_or_default();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `--sentinel` anywhere, or the binary started as `carmine-sentinel` (a link or a
    // copy under that name), runs the Sentinel personality, as redis-server does.
    let named_sentinel = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with("-sentinel"));
    let flagged = args.iter().any(|a| a == "--sentinel");
    args.retain(|a| a != "--sentinel");
    let sentinel_mode = named_sentinel || flagged;
    if let Some(first) = args.first() {
        match first.as_str() {
            "-v" | "--version" => {
                println!(
                    "Carmine server v={} (Redis {} compatible) bits={}",
                    env!("CARGO_PKG_VERSION"),
                    carmine_commands::server::REDIS_VERSION,
                    usize::BITS
                );
                return;
            }
            "-h" | "--help" => usage(),
            _ => {}
        }
    }
    let config = Config::new();
    if sentinel_mode {
        // Sentinel's defaults: its own port, reachable from other hosts, one event loop.
        config.sentinel_mode.store(true, Ordering::Relaxed);
        for (name, value) in [
            ("port", "26379"),
            ("protected-mode", "no"),
            ("io-threads", "1"),
        ] {
            let _ = config.set(name, &[value.to_string()], true);
        }
    }
    let (file, mut cli_text) = args_to_config_text(&args);
    if sentinel_mode && file.as_deref().is_none_or(|f| f == "-") {
        eprintln!("Sentinel needs config file on disk to save state. Exiting...");
        std::process::exit(1);
    }
    let mut text = String::new();
    if let Some(path) = &file {
        if path == "-" {
            let mut stdin = String::new();
            if std::io::Read::read_to_string(&mut std::io::stdin(), &mut stdin).is_err() {
                eprintln!("Failed to read the configuration from stdin");
                std::process::exit(1);
            }
            text.push_str(&stdin);
        } else {
            match std::fs::read_to_string(path) {
                Ok(t) => text.push_str(&t),
                Err(e) => {
                    eprintln!("Fatal error, can't open config file '{path}': {e}");
                    std::process::exit(1);
                }
            }
            let abs = std::fs::canonicalize(path)
                .map(|p| p.display().to_string())
                .unwrap_or(path.clone());
            *config.file.write() = Some(abs);
        }
        text.push('\n');
    }
    if cli_text.trim().is_empty() {
        cli_text.clear();
    }
    text.push_str(&cli_text);
    if let Err(e) = config.load_text(&text) {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let dir = config.get("dir").unwrap_or_default();
    if !dir.is_empty() {
        if let Err(e) = std::env::set_current_dir(&dir) {
            eprintln!("Can't chdir to '{dir}': {e}");
            std::process::exit(1);
        }
        // From here on `dir` is the working directory: CONFIG GET dir answers it as an
        // absolute path (as Redis does), and a relative one would name a directory
        // below itself.
        if let Ok(cwd) = std::env::current_dir() {
            let _ = config.set("dir", &[cwd.to_string_lossy().into_owned()], true);
        }
    }
    if config.get_bool("daemonize") {
        daemonize();
    }
    if let Err(e) = log::init(
        &config.get("logfile").unwrap_or_default(),
        &config.get("loglevel").unwrap_or_default(),
    ) {
        eprintln!("Can't open the log file: {e}");
        std::process::exit(1);
    }
    carmine_server::crash::install();
    let pidfile = config.get("pidfile").unwrap_or_default();
    let pidfile = if pidfile.is_empty() && config.get_bool("daemonize") {
        "/var/run/redis.pid".to_string()
    } else {
        pidfile
    };
    if !pidfile.is_empty() {
        if let Err(e) = std::fs::write(&pidfile, format!("{}\n", std::process::id())) {
            log::warning(&format!("Failed to write PID file: {e}"));
        }
    }
    log::notice(&format!(
        "Carmine version={}, bits={}, pid={}, just started",
        env!("CARGO_PKG_VERSION"),
        usize::BITS,
        std::process::id()
    ));
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, term.clone()) {
            log::warning(&format!("Can't install signal handler: {e}"));
        }
    }
    let server = match Server::start_with_allocator(
        config,
        Some(alloc::allocated_bytes),
        Some(alloc::reserve_heap),
    ) {
        Ok(s) => s,
        Err(e) => {
            log::warning(&e.to_string());
            std::process::exit(1);
        }
    };
    log::notice("Ready to accept connections tcp");
    let signalled = term.clone();
    server.wait(move || signalled.load(Ordering::Relaxed));
    if term.load(Ordering::Relaxed) {
        log::warning("Received SIGTERM scheduling shutdown...");
    }
    if !pidfile.is_empty() {
        let _ = std::fs::remove_file(&pidfile);
    }
    log::warning("Carmine is now ready to exit, bye bye...");
}
