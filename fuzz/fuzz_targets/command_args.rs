//! Arbitrary argument vectors through the whole dispatcher: no command may panic on any
//! arguments, and each writes exactly one reply (the frames are decoded and counted). The
//! input is split on NUL bytes into arguments, several commands per input.
#![no_main]
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use carmine_commands::state::ReplyMode;
use carmine_commands::table::flags;
use carmine_commands::{execute, ClientInfo, Config, Session, Shared, ThreadStats};
use carmine_resp::{Args, Frame, FrameDecoder, ReplyBuf};
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
        let replies_on = session.reply_mode == ReplyMode::On;
        execute(shared, &mut session, stats, &Args::from_slices(&parts), &mut reply);
        let mut out = BytesMut::from(&reply.out[..]);
        reply.out.clear();
        let mut frames = 0;
        while let Ok(Some(frame)) = FrameDecoder::new(Default::default()).decode(&mut out) {
            if let Frame::Error(e) = &frame {
                assert!(!e.starts_with(b"ERR internal error"), "{parts:?}: {frame:?}");
            }
            frames += 1;
        }
        assert!(out.is_empty(), "{parts:?} wrote bytes that are not RESP");
        let per_arg = shared
            .commands
            .lookup(first)
            .and_then(|i| shared.commands.get(i))
            .is_some_and(|s| s.has(flags::REPLY_PER_ARG));
        if replies_on && session.reply_mode == ReplyMode::On && session.blocked.is_none() {
            assert!(frames == 1 || per_arg && frames > 1, "{parts:?}: {frames} replies");
        }
        if session.blocked.is_some() {
            // The fuzzer has no event loop to wake it: start the next line afresh.
            session.blocked = None;
        }
    }
    session.unwatch_all(&shared.keyspace);
});
