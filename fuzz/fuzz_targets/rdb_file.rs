//! The RDB reader and loader on arbitrary bytes: an error or a load, never a panic or a
//! hang. Inputs that start with a valid header go deep quickly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = b"REDIS0010".to_vec();
    file.extend_from_slice(data);
    for input in [data, &file[..]] {
        if let Ok(mut r) = carmine_rdb::Reader::new(input) {
            while let Ok(Some(_)) = r.next_item() {}
        }
        let ks = carmine_keyspace::Keyspace::new();
        let _ = carmine_rdb::load_into(&ks, input);
    }
});
