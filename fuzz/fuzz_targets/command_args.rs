//! Arbitrary argument vectors through the whole dispatcher: no command may panic on any
//! arguments. The input is split on NUL bytes into arguments, several commands per input.
#![no_main]
use std::sync::{Arc, OnceLock};

use carmine_commands::{execute, ClientInfo, Config, Session, Shared, ThreadStats};
use carmine_resp::{Args, ReplyBuf};
use libfuzzer_sys::fuzz_target;

static SHARED: OnceLock<(Arc<Shared>, Arc<ThreadStats>)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (shared, stats) = SHARED.get_or_init(|| {
        let shared = Shared::new(Config::new(), 1, None);
        let stats = shared.new_thread_stats();
        (shared, stats)
    });
    let info = Arc::new(ClientInfo::new(1, String::new(), String::new(), -1, 0));
    let mut session = Session::new(info, 0, true);
    let mut reply = ReplyBuf::new(data.first().is_some_and(|b| b & 1 == 1));
    for line in data.split(|&b| b == b'\n') {
        let parts: Vec<&[u8]> = line.split(|&b| b == 0).collect();
        let first = parts.first().copied().unwrap_or_default();
        // Commands that sleep or stop the process are not interesting here.
        if first.eq_ignore_ascii_case(b"debug") || first.eq_ignore_ascii_case(b"shutdown") {
            continue;
        }
        execute(shared, &mut session, stats, &Args::from_slices(&parts), &mut reply);
        reply.out.clear();
    }
    session.unwatch_all(&shared.keyspace);
});
