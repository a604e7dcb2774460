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
    let mut out = Vec::new();
    compress_into(input, max_len, &mut out).then_some(out)
}

/// Appends `input` compressed to `out` and returns true, or leaves `out` as it was and
/// returns false if the result would not be shorter than `max_len` bytes. Snapshots try
/// this on millions of small values, most of which do not compress: the hash table
/// scales with the input (zeroing 16K entries per 100-byte value would cost more than
/// the attempt) and lives on the stack up to 512-byte inputs.
pub fn compress_into(input: &[u8], max_len: usize, out: &mut Vec<u8>) -> bool {
    if input.len() < 4 {
        return false;
    }
    match input.len() {
        0..=128 => compress_with(input, max_len, out, &mut [0u64; 128]),
        129..=512 => compress_with(input, max_len, out, &mut [0u64; 512]),
        513..=4096 => compress_with(input, max_len, out, &mut Box::new([0u64; 4096])),
        _ => compress_with(input, max_len, out, &mut Box::new([0u64; 16384])),
    }
}

fn compress_with<const N: usize>(
    input: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
    table: &mut [u64; N],
) -> bool {
    let shift = 32 - N.trailing_zeros();
    let slot = |v: u32| (v.wrapping_mul(2_654_435_761) >> shift) as usize & (N - 1);
    let start = out.len();
    out.reserve(max_len.min(input.len() + input.len() / 16 + 2));
    let limit = start + max_len;
    let flush_literals = |out: &mut Vec<u8>, from: usize, to: usize| {
        for chunk in input[from..to].chunks(MAX_LIT) {
            out.push((chunk.len() - 1) as u8);
            out.extend_from_slice(chunk);
        }
    };
    let n = input.len();
    let mut lit_start = 0;
    let mut ip = 0;
    // The three bytes at `ip`, rolled along one byte per step.
    let mut window = u32::from(input[0]) << 8 | u32::from(input[1]);
    while ip + 2 < n {
        window = (window << 8 | u32::from(input[ip + 2])) & 0xff_ffff;
        let h = slot(window);
        // An entry is the three bytes it was made for (with bit 24 set, so an empty
        // entry matches nothing) above their position: one compare finds a match, and
        // on data that does not compress that branch is predictably not taken.
        let tagged = window | 1 << 24;
        let entry = table[h];
        table[h] = u64::from(tagged) << 32 | ip as u64;
        if (entry >> 32) as u32 == tagged {
            let r = entry as u32 as usize;
            if ip - r <= MAX_OFF {
                let max = (n - ip).min(MAX_REF);
                let mut len = 3;
                while len < max && input[r + len] == input[ip + len] {
                    len += 1;
                }
                flush_literals(out, lit_start, ip);
                let l = len - 2;
                let o = ip - r - 1;
                if l < 7 {
                    out.push(((l << 5) | (o >> 8)) as u8);
                } else {
                    out.push(((7 << 5) | (o >> 8)) as u8);
                    out.push((l - 7) as u8);
                }
                out.push((o & 0xff) as u8);
                ip += len;
                lit_start = ip;
                if out.len() >= limit {
                    out.truncate(start);
                    return false;
                }
                if ip + 2 < n {
                    window = u32::from(input[ip]) << 8 | u32::from(input[ip + 1]);
                }
                continue;
            }
        }
        ip += 1;
    }
    flush_literals(out, lit_start, n);
    if out.len() >= limit {
        out.truncate(start);
        return false;
    }
    true
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
        fn compress_into_appends_or_leaves_untouched(prefix in proptest::collection::vec(any::<u8>(), 0..8), data in proptest::collection::vec(prop_oneof![Just(b'a'), any::<u8>()], 0..1500)) {
            let mut out = prefix.clone();
            let max = data.len().saturating_sub(4);
            let expected = compress(&data, max);
            prop_assert_eq!(compress_into(&data, max, &mut out), expected.is_some());
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            match expected {
                Some(c) => prop_assert_eq!(&out[prefix.len()..], &c[..]),
                None => prop_assert_eq!(out.len(), prefix.len()),
            }
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), n in 0usize..500) {
            let _ = decompress(&data, n);
        }
    }
}
