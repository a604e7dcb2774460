//! Criterion benchmarks live in `benches/`; this is what several of them share.

use std::sync::Arc;

use carmine_commands::{execute, ClientInfo, Config, Session, Shared, ThreadStats};
use carmine_resp::{Args, ReplyBuf};

/// A server's command path without the network: its shared state, one thread's
/// statistics, one client's session and a reply buffer.
pub struct Dispatcher {
    pub shared: Arc<Shared>,
    pub stats: Arc<ThreadStats>,
    pub session: Session,
    pub reply: ReplyBuf,
}

impl Dispatcher {
    pub fn new() -> Dispatcher {
        let shared = Shared::new(Config::new(), 1, None);
        let stats = shared.new_thread_stats();
        let info = Arc::new(ClientInfo::new(1, String::new(), String::new(), -1, 0));
        Dispatcher {
            shared,
            stats,
            session: Session::new(info, 0, true),
            reply: ReplyBuf::new(false),
        }
    }

    /// Runs one command; its reply is in `reply` (cleared first).
    pub fn run(&mut self, args: &Args) -> &[u8] {
        self.reply.out.clear();
        execute(
            &self.shared,
            &mut self.session,
            &self.stats,
            args,
            &mut self.reply,
        );
        &self.reply.out
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Dispatcher::new()
    }
}
