//! CRC-64/Jones as Redis uses it for RDB trailers and DUMP payloads: reflected polynomial
//! 0x95ac9329ac4bc9b5, initial value 0, no final xor.

const POLY: u64 = 0x95ac_9329_ac4b_c9b5;

const fn table() -> [[u64; 256]; 8] {
    let mut t = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut j = 0;
        while j < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            j += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

static TABLE: [[u64; 256]; 8] = table();

/// Continues a CRC over `data` (slice-by-8: files are hundreds of megabytes).
pub fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = crc ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        crc = TABLE[7][(v & 0xff) as usize]
            ^ TABLE[6][((v >> 8) & 0xff) as usize]
            ^ TABLE[5][((v >> 16) & 0xff) as usize]
            ^ TABLE[4][((v >> 24) & 0xff) as usize]
            ^ TABLE[3][((v >> 32) & 0xff) as usize]
            ^ TABLE[2][((v >> 40) & 0xff) as usize]
            ^ TABLE[1][((v >> 48) & 0xff) as usize]
            ^ TABLE[0][(v >> 56) as usize];
    }
    for &b in chunks.remainder() {
        crc = TABLE[0][((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn check_value_matches_redis() {
        // Redis' crc64 self-test: crc64(0, "123456789") == 0xe9c6d914c4b8d9ca.
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    proptest! {
        #[test]
        fn slicing_equals_bytewise(data in proptest::collection::vec(any::<u8>(), 0..300), split in 0usize..300) {
            let split = split.min(data.len());
            let whole = crc64(0, &data);
            let parts = crc64(crc64(0, &data[..split]), &data[split..]);
            let mut bytewise = 0u64;
            for &b in &data {
                bytewise = TABLE[0][((bytewise ^ u64::from(b)) & 0xff) as usize] ^ (bytewise >> 8);
            }
            prop_assert_eq!(whole, parts);
            prop_assert_eq!(whole, bytewise);
        }
    }
}
