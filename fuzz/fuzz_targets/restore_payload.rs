//! RESTORE and FUNCTION RESTORE payloads: arbitrary bytes, with and without a correct
//! version and CRC-64 trailer (so the decoders themselves are reached), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = carmine_rdb::restore_payload(data);
    let _ = carmine_rdb::restore_functions(data);
    let mut p = data.to_vec();
    p.extend_from_slice(&10u16.to_le_bytes());
    let crc = carmine_rdb::crc64::crc64(0, &p);
    p.extend_from_slice(&crc.to_le_bytes());
    let _ = carmine_rdb::restore_functions(&p);
    if let Ok(v) = carmine_rdb::restore_payload(&p) {
        if matches!(v, carmine_rdb::Value::Stream(_)) {
            // A stream that loads writes back in a form that loads again.
            let again = carmine_rdb::dump_payload(&v, carmine_rdb::WriteOptions::default());
            assert!(carmine_rdb::restore_payload(&again).is_ok());
        }
        let ks = carmine_keyspace::Keyspace::new();
        let _ = carmine_rdb::to_keyspace(v, &ks);
    }
});
