//! An AOF manifest as carmine-aof parses it: nothing may panic, and what parses writes
//! back as text that parses to the same manifest.
#![no_main]
use carmine_aof::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        let text = m.to_text();
        if !text.is_empty() {
            assert_eq!(Manifest::parse(text.as_bytes()).as_ref(), Ok(&m));
        }
    }
});
