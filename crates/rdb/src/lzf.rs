//! LZF, the compression RDB uses for strings (`rdbcompression yes`). The format: a
//! control byte below 32 starts a run of ctrl+1 literal bytes; otherwise its top three
//! bits are a match length - 2 (7: one more length byte follows) and its low five bits
//! with the next byte the back-reference distance - 1.

const MAX_OFF: usize = 1 << 13;
const MAX_REF: usize = (1 << 8) + (1 << 3);
const MAX_LIT: usize = 1 << 5;

/// Decompresses `input` into exactly `out_len` bytes; None if the data is corrupt.
pub fn decompress(input: &[u8], out_len: usize) -> Option<Vec<u8>> {
    // A 3-byte back-reference yields at most 264 bytes: a larger claimed length is a lie,
    // and must not become an allocation (found by the restore_payload fuzz target).
    if out_len > input.len().saturating_mul(MAX_REF / 3 + 1) + MAX_LIT {
        return None;
    }
    let mut out = Vec::with_capacity(out_len);
    let mut ip = 0;
    while ip < input.len() {
        let ctrl = usize::from(input[ip]);
        ip += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            let lit = input.get(ip..ip + run)?;
            if out.len() + run > out_len {
                return None;
            }
            out.extend_from_slice(lit);
            ip += run;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(ip)?);
                ip += 1;
            }
            len += 2;
            let back = ((ctrl & 0x1f) << 8) + usize::from(*input.get(ip)?) + 1;
            ip += 1;
            if back > out.len() || out.len() + len > out_len {
                return None;
            }
            let start = out.len() - back;
            if back >= len {
                out.extend_from_within(start..start + len);
            } else {
                // An overlapping copy repeats the pattern: byte by byte.
                for i in 0..len {
                    let b = out[start + i];
                    out.push(b);
                }
            }
        }
    }
    (out.len() == out_len).then_some(out)
}

/// Compresses `input`; None if the result would not be shorter than `max_len` bytes.
pub fn compress(input: &[u8], max_len: usize) -> Option<Vec<u8>> {
    if input.len() < 4 {
        return None;
    }
    // The table scales with the input: snapshots compress millions of small values, and
    // zeroing a fixed 16K-entry table for each would cost more than compressing.
    let hbits = (usize::BITS - input.len().leading_zeros()).clamp(6, 14);
    let mut table = vec![0u32; 1 << hbits];
    let hash = |p: usize| -> usize {
        let v = u32::from(input[p]) << 16 | u32::from(input[p + 1]) << 8 | u32::from(input[p + 2]);
        (v.wrapping_mul(2_654_435_761) >> (32 - hbits)) as usize
    };
    let mut out = Vec::with_capacity(max_len.min(input.len() + input.len() / 16 + 2));
    let mut lit_start = 0;
    let mut ip = 0;
    let flush_literals = |out: &mut Vec<u8>, from: usize, to: usize| {
        for chunk in input[from..to].chunks(MAX_LIT) {
            out.push((chunk.len() - 1) as u8);
            out.extend_from_slice(chunk);
        }
    };
    while ip + 2 < input.len() {
        let h = hash(ip);
        // Table entries hold position + 1, so 0 means empty.
        let candidate = table[h] as usize;
        table[h] = (ip + 1) as u32;
        if candidate > 0 {
            let r = candidate - 1;
            let off = ip - r;
            if off > 0 && off <= MAX_OFF && input[r..r + 3] == input[ip..ip + 3] {
                let max = (input.len() - ip).min(MAX_REF);
                let mut len = 3;
                while len < max && input[r + len] == input[ip + len] {
                    len += 1;
                }
                flush_literals(&mut out, lit_start, ip);
                let l = len - 2;
                let o = off - 1;
                if l < 7 {
                    out.push(((l << 5) | (o >> 8)) as u8);
                } else {
                    out.push(((7 << 5) | (o >> 8)) as u8);
                    out.push((l - 7) as u8);
                }
                out.push((o & 0xff) as u8);
                ip += len;
                lit_start = ip;
                if out.len() >= max_len {
                    return None;
                }
                continue;
            }
        }
        ip += 1;
    }
    flush_literals(&mut out, lit_start, input.len());
    (out.len() < max_len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compresses_repetition() {
        let data = b"abcd".repeat(25_000);
        let c = compress(&data, data.len()).expect("compressible");
        assert!(c.len() < 2_000, "{}", c.len());
        assert_eq!(decompress(&c, data.len()).expect("valid"), data);
    }

    #[test]
    fn corrupt_input_is_refused() {
        assert_eq!(decompress(&[0x20, 0x05], 10), None); // reference before the start
        assert_eq!(decompress(&[0x05, b'a'], 6), None); // literal run past the input
        assert_eq!(decompress(&[0x00, b'a'], 2), None); // too short
        assert_eq!(decompress(&[0x00, b'a'], 2_499_870_719), None); // no 2.5 GB allocation
    }

    proptest! {
        #[test]
        fn round_trips(data in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..3000)) {
            if let Some(c) = compress(&data, data.len()) {
                prop_assert!(c.len() < data.len());
                prop_assert_eq!(decompress(&c, data.len()), Some(data));
            }
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), n in 0usize..500) {
            let _ = decompress(&data, n);
        }
    }
}
