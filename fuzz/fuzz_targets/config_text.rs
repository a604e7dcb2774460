//! redis.conf parsing on arbitrary text: errors, never panics.
#![no_main]
use carmine_commands::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if text.contains("include") {
            return;
        }
        let _ = Config::new().load_text(text);
    }
});
