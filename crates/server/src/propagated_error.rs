//! A command replayed from our master's stream or from the AOF failed here: the dataset
//! may now differ from its source. Logged as Redis logs it (its tests look for these
//! words), counted in INFO's `unexpected_error_replies`, and, as
//! `propagation-error-behavior` asks (`panic`, or `panic-on-replicas` for a read-only
//! replica's master stream only), the server stops rather than serve a diverged dataset.

use carmine_commands::Shared;
use carmine_resp::Args;

use crate::log;

/// Where the failed command came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Master,
    AppendOnlyFile,
}

/// Reports an error reply `reply` to the command `args` from `source`.
pub fn report(shared: &Shared, source: Source, args: &Args, reply: &[u8]) {
    let line = reply.split(|&b| b == b'\r').next().unwrap_or_default();
    let error = String::from_utf8_lossy(line.get(1..).unwrap_or_default());
    let error: String = error.chars().take(4096).collect();
    let name = args.get(0).unwrap_or_default();
    let command = match shared.commands.lookup(name) {
        Some(_) => String::from_utf8_lossy(name).to_ascii_lowercase(),
        None => "<unknown>".to_string(),
    };
    let (from, to) = match source {
        Source::Master => ("replica", "master"),
        Source::AppendOnlyFile => ("AOF", "AOF"),
    };
    log::warning(&format!(
        "== CRITICAL == This {from} is sending an error to its {to}: '{error}' after processing the command '{command}'"
    ));
    shared.errorstats.count_unexpected();
    let behavior = shared
        .config
        .get("propagation-error-behavior")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let stop = match source {
        Source::Master => {
            shared.config.get_bool("replica-read-only")
                && (behavior == "panic" || behavior == "panic-on-replicas")
        }
        Source::AppendOnlyFile => behavior == "panic",
    };
    if stop {
        log::warning(&format!(
            "Guru Meditation: This {from} panicked sending an error to its {to} after processing the command '{command}'"
        ));
        std::process::exit(1);
    }
}
