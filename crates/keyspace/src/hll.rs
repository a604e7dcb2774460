//! HyperLogLog in Redis' own byte layout, so that an HLL written by Carmine is the same
//! string Redis would hold after the same commands (GET, DUMP and RDB files move between
//! the two unchanged).
//!
//! Layout: a 16-byte header — `HYLL`, one encoding byte (0 dense, 1 sparse), three zero
//! bytes, and the cached cardinality as 8 little-endian bytes whose top bit marks the
//! cache stale — followed by the registers. 16384 registers (P = 14) of 6 bits each:
//! * dense: 12288 bytes, register `i` at bit `6 * i`, least significant bits first;
//! * sparse: run-length opcodes — `00xxxxxx` a run of 1..=64 zero registers, `01xxxxxx
//!   yyyyyyyy` a run of 1..=16384 zero registers, `1vvvvvxx` a run of 1..=4 registers
//!   holding 1..=32.
//!
//! Sparse updates split the opcode covering the register and then merge equal neighbours
//! in a small window, exactly as Redis edits the string: a canonical re-encoding would
//! count the same but differ in bytes. Elements hash with MurmurHash64A (seed
//! 0xadc83b19); counts use Ertl's improved estimator, as Redis 5 and later do.

pub const REGISTERS: usize = 1 << 14;
pub const HEADER: usize = 16;
pub const DENSE_SIZE: usize = HEADER + REGISTERS * 6 / 8;
const ENC_DENSE: u8 = 0;
const ENC_SPARSE: u8 = 1;
/// Bits of the hash left after the register index; bit 50 is forced on so a run of
/// zeros counts at most 51.
const Q: u32 = 50;
const SPARSE_VAL_MAX: u8 = 32;
const SPARSE_VAL_MAX_LEN: usize = 4;
const SPARSE_ZERO_MAX_LEN: usize = 64;
const STALE: u8 = 0x80;

/// The HLL string is damaged (Redis: `INVALIDOBJ Corrupted HLL object detected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// What Redis checks before treating a string as an HLL: size, magic and encoding.
pub fn is_hll(s: &[u8]) -> bool {
    s.len() >= HEADER
        && &s[..4] == b"HYLL"
        && s[4] <= ENC_SPARSE
        && (s[4] != ENC_DENSE || s.len() == DENSE_SIZE)
}

pub fn is_dense(s: &[u8]) -> bool {
    s.get(4) == Some(&ENC_DENSE)
}

/// A new, empty, sparse HLL: the header and one run of 16384 zeros.
pub fn new_sparse() -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + 2);
    v.extend_from_slice(b"HYLL");
    v.extend_from_slice(&[ENC_SPARSE, 0, 0, 0]);
    v.extend_from_slice(&[0; 8]);
    push_xzero(&mut v, REGISTERS);
    v
}

/// The cached cardinality, if it is not stale.
pub fn cached_count(s: &[u8]) -> Option<u64> {
    let card: [u8; 8] = s.get(8..16)?.try_into().ok()?;
    (card[7] & STALE == 0).then(|| u64::from_le_bytes(card))
}

pub fn set_cached_count(s: &mut [u8], n: u64) {
    if let Some(card) = s.get_mut(8..16) {
        card.copy_from_slice(&n.to_le_bytes());
    }
}

pub fn invalidate_cache(s: &mut [u8]) {
    if let Some(b) = s.get_mut(15) {
        *b |= STALE;
    }
}

/// MurmurHash64A as Redis uses it: 8-byte blocks read little-endian on every platform.
pub fn murmur64a(data: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (data.len() as u64).wrapping_mul(M);
    let mut blocks = data.chunks_exact(8);
    for b in &mut blocks {
        let mut k = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u64::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register an element lands in and the value it proposes (position of the first
/// set bit of the remaining hash, 1-based).
pub fn register_of(element: &[u8]) -> (usize, u8) {
    let hash = murmur64a(element, 0xadc8_3b19);
    let index = (hash as usize) & (REGISTERS - 1);
    let rest = (hash >> 14) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

fn dense_get(regs: &[u8], i: usize) -> u8 {
    let bit = i * 6;
    let (byte, shift) = (bit / 8, bit % 8);
    let lo = u16::from(regs.get(byte).copied().unwrap_or(0));
    let hi = u16::from(regs.get(byte + 1).copied().unwrap_or(0));
    (((lo | (hi << 8)) >> shift) & 63) as u8
}

fn dense_put(regs: &mut [u8], i: usize, v: u8) {
    let bit = i * 6;
    let (byte, shift) = (bit / 8, bit % 8);
    let word = u16::from(v & 63) << shift;
    let mask = 63u16 << shift;
    if let Some(b) = regs.get_mut(byte) {
        *b = (*b & !(mask as u8)) | word as u8;
    }
    if shift > 2 {
        if let Some(b) = regs.get_mut(byte + 1) {
            *b = (*b & !((mask >> 8) as u8)) | (word >> 8) as u8;
        }
    }
}

/// One sparse opcode: its byte length, the registers it covers, and their value.
#[derive(Clone, Copy)]
struct Op {
    bytes: usize,
    run: usize,
    value: u8,
}

fn op_at(body: &[u8], p: usize) -> Option<Op> {
    let b = *body.get(p)?;
    Some(if b & 0x80 != 0 {
        Op {
            bytes: 1,
            run: usize::from(b & 3) + 1,
            value: ((b >> 2) & 0x1f) + 1,
        }
    } else if b & 0x40 != 0 {
        let lo = *body.get(p + 1)?;
        Op {
            bytes: 2,
            run: ((usize::from(b & 0x3f) << 8) | usize::from(lo)) + 1,
            value: 0,
        }
    } else {
        Op {
            bytes: 1,
            run: usize::from(b & 0x3f) + 1,
            value: 0,
        }
    })
}

fn val_op(value: u8, run: usize) -> u8 {
    0x80 | ((value - 1) << 2) | (run - 1) as u8
}

fn push_zero_run(out: &mut Vec<u8>, run: usize) {
    if run > SPARSE_ZERO_MAX_LEN {
        push_xzero(out, run);
    } else {
        out.push((run - 1) as u8);
    }
}

fn push_xzero(out: &mut Vec<u8>, run: usize) {
    let n = run - 1;
    out.push(0x40 | (n >> 8) as u8);
    out.push(n as u8);
}

/// Calls `f(first_register, op)` for every opcode; errors unless they cover exactly the
/// 16384 registers.
fn for_each_op(body: &[u8], mut f: impl FnMut(usize, Op)) -> Result<(), Corrupt> {
    let (mut p, mut idx) = (0, 0);
    while p < body.len() {
        let op = op_at(body, p).ok_or(Corrupt)?;
        if idx + op.run > REGISTERS {
            return Err(Corrupt);
        }
        f(idx, op);
        idx += op.run;
        p += op.bytes;
    }
    if idx == REGISTERS {
        Ok(())
    } else {
        Err(Corrupt)
    }
}

/// PFSELFTEST: checks this implementation against itself, as Redis' self test does:
/// every dense register stores and reads back any 6-bit value, and a sparse and a dense
/// HLL fed the same random elements agree, within the estimator's error of the truth.
pub fn self_test(seed: u64) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    // 1. Dense registers: random values written, then read back.
    let mut dense = new_sparse();
    to_dense(&mut dense).map_err(|_| "TESTFAILED cannot make a dense HLL".to_string())?;
    let expected: Vec<u8> = (0..REGISTERS).map(|_| rng.u8(1..64)).collect();
    for (i, v) in expected.iter().enumerate() {
        set_register(&mut dense, i, *v, 0).map_err(|_| "TESTFAILED corrupt register write")?;
    }
    let read = registers(&dense).map_err(|_| "TESTFAILED corrupt dense HLL")?;
    if let Some(i) = (0..REGISTERS).find(|&i| read[i] != expected[i]) {
        return Err(format!(
            "TESTFAILED Register error at index {i}: {} instead of {}",
            read[i], expected[i]
        ));
    }
    // 2. Sparse and dense fed alike: equal counts, within 6 standard errors.
    let relerr = 1.04 / (REGISTERS as f64).sqrt();
    let mut sparse = new_sparse();
    let mut dense = new_sparse();
    to_dense(&mut dense).map_err(|_| "TESTFAILED cannot make a dense HLL")?;
    let mut checkpoint = 1u64;
    for j in 1..=100_000u64 {
        let element = rng.u64(..).to_le_bytes();
        add(&mut sparse, &element, 3000).map_err(|_| "TESTFAILED corrupt sparse HLL")?;
        add(&mut dense, &element, 3000).map_err(|_| "TESTFAILED corrupt dense HLL")?;
        if j != checkpoint {
            continue;
        }
        checkpoint *= 10;
        let (a, b) = (
            count(&sparse).map_err(|_| "TESTFAILED corrupt sparse HLL")?,
            count(&dense).map_err(|_| "TESTFAILED corrupt dense HLL")?,
        );
        if a != b {
            return Err(format!(
                "TESTFAILED sparse count {a} != dense count {b} after {j} elements"
            ));
        }
        let max_error = if j == 10 {
            1.0
        } else {
            (relerr * 6.0 * j as f64).ceil()
        };
        if (b as f64 - j as f64).abs() > max_error {
            return Err(format!(
                "TESTFAILED Too big error. card:{j} abserr:{}",
                (b as f64 - j as f64).abs()
            ));
        }
    }
    Ok(())
}

/// Converts a sparse HLL to dense in place (a dense one is left alone).
pub fn to_dense(s: &mut Vec<u8>) -> Result<(), Corrupt> {
    if is_dense(s) {
        return Ok(());
    }
    let mut dense = vec![0u8; DENSE_SIZE];
    dense[..HEADER].copy_from_slice(&s[..HEADER]);
    dense[4] = ENC_DENSE;
    let regs = &mut dense[HEADER..];
    for_each_op(&s[HEADER..], |first, op| {
        if op.value != 0 {
            for i in first..first + op.run {
                dense_put(regs, i, op.value);
            }
        }
    })?;
    *s = dense;
    Ok(())
}

/// Raises register `index` to `value` if it is lower; true when the HLL changed. A sparse
/// HLL turns dense when the value does not fit a sparse opcode or the string would grow
/// past `sparse_max_bytes`.
pub fn set_register(
    s: &mut Vec<u8>,
    index: usize,
    value: u8,
    sparse_max_bytes: usize,
) -> Result<bool, Corrupt> {
    if is_dense(s) {
        let regs = &mut s[HEADER..];
        if dense_get(regs, index) < value {
            dense_put(regs, index, value);
            return Ok(true);
        }
        return Ok(false);
    }
    if value > SPARSE_VAL_MAX {
        return promote(s, index, value);
    }
    // Find the opcode covering `index`, and the one before it.
    let body_len = s.len() - HEADER;
    let (mut p, mut first, mut prev) = (0usize, 0usize, None);
    let op = loop {
        if p >= body_len {
            return Err(Corrupt);
        }
        let op = op_at(&s[HEADER..], p).ok_or(Corrupt)?;
        if index < first + op.run {
            break op;
        }
        prev = Some(p);
        p += op.bytes;
        first += op.run;
    };
    let at = HEADER + p;
    if op.value != 0 {
        if op.value >= value {
            return Ok(false);
        }
        if op.run == 1 {
            s[at] = val_op(value, 1);
            merge_window(s, prev);
            return Ok(true);
        }
    } else if op.bytes == 1 && op.run == 1 {
        s[at] = val_op(value, 1);
        merge_window(s, prev);
        return Ok(true);
    }
    // Split the opcode into (left run, our register, right run).
    let last = first + op.run - 1;
    let mut seq = Vec::with_capacity(5);
    if op.value == 0 {
        if index != first {
            push_zero_run(&mut seq, index - first);
        }
        seq.push(val_op(value, 1));
        if index != last {
            push_zero_run(&mut seq, last - index);
        }
    } else {
        if index != first {
            seq.push(val_op(op.value, index - first));
        }
        seq.push(val_op(value, 1));
        if index != last {
            seq.push(val_op(op.value, last - index));
        }
    }
    if seq.len() > op.bytes && s.len() + seq.len() - op.bytes > sparse_max_bytes {
        return promote(s, index, value);
    }
    s.splice(at..at + op.bytes, seq);
    merge_window(s, prev);
    Ok(true)
}

fn promote(s: &mut Vec<u8>, index: usize, value: u8) -> Result<bool, Corrupt> {
    to_dense(s)?;
    let regs = &mut s[HEADER..];
    let changed = dense_get(regs, index) < value;
    if changed {
        dense_put(regs, index, value);
    }
    Ok(changed)
}

/// Merges adjacent VAL opcodes of equal value within five opcodes from `prev` (or the
/// start), as Redis does after each sparse edit.
fn merge_window(s: &mut Vec<u8>, prev: Option<usize>) {
    let mut p = HEADER + prev.unwrap_or(0);
    let mut budget = 5;
    while p < s.len() && budget > 0 {
        budget -= 1;
        let b = s[p];
        if b & 0x80 == 0 {
            p += if b & 0x40 != 0 { 2 } else { 1 };
            continue;
        }
        if let Some(&n) = s.get(p + 1) {
            if n & 0x80 != 0 {
                let (v1, v2) = (((b >> 2) & 0x1f) + 1, ((n >> 2) & 0x1f) + 1);
                let run = usize::from(b & 3) + usize::from(n & 3) + 2;
                if v1 == v2 && run <= SPARSE_VAL_MAX_LEN {
                    s[p + 1] = val_op(v1, run);
                    s.remove(p);
                    continue;
                }
            }
        }
        p += 1;
    }
}

/// PFADD of one element; true when a register changed.
pub fn add(s: &mut Vec<u8>, element: &[u8], sparse_max_bytes: usize) -> Result<bool, Corrupt> {
    let (index, value) = register_of(element);
    set_register(s, index, value, sparse_max_bytes)
}

/// Raises `max[i]` to this HLL's register `i`, for every register (PFCOUNT of several
/// keys, PFMERGE).
pub fn merge_into(max: &mut [u8], s: &[u8]) -> Result<(), Corrupt> {
    if max.len() < REGISTERS {
        return Err(Corrupt);
    }
    if is_dense(s) {
        let regs = &s[HEADER..];
        for (i, m) in max.iter_mut().enumerate().take(REGISTERS) {
            *m = (*m).max(dense_get(regs, i));
        }
        return Ok(());
    }
    for_each_op(&s[HEADER..], |first, op| {
        if op.value != 0 {
            for m in &mut max[first..first + op.run] {
                *m = (*m).max(op.value);
            }
        }
    })
}

/// The estimated cardinality of an HLL string (ignoring its cache).
pub fn count(s: &[u8]) -> Result<u64, Corrupt> {
    let mut histogram = [0u32; 64];
    if is_dense(s) {
        let regs = &s[HEADER..];
        for i in 0..REGISTERS {
            histogram[usize::from(dense_get(regs, i))] += 1;
        }
    } else {
        for_each_op(&s[HEADER..], |_, op| {
            histogram[usize::from(op.value & 63)] += op.run as u32;
        })?;
    }
    Ok(estimate(&histogram))
}

/// The estimated cardinality of plain registers (one byte each).
pub fn count_registers(regs: &[u8]) -> u64 {
    let mut histogram = [0u32; 64];
    for &r in regs.iter().take(REGISTERS) {
        histogram[usize::from(r & 63)] += 1;
    }
    estimate(&histogram)
}

/// Ertl, "New cardinality estimation algorithms for HyperLogLog sketches" (2017).
fn estimate(histogram: &[u32; 64]) -> u64 {
    let m = REGISTERS as f64;
    let q = Q as usize;
    let mut z = m * tau((m - f64::from(histogram[q + 1])) / m);
    for j in (1..=q).rev() {
        z += f64::from(histogram[j]);
        z *= 0.5;
    }
    z += m * sigma(f64::from(histogram[0]) / m);
    let alpha_inf = 0.5 / std::f64::consts::LN_2;
    (alpha_inf * m * m / z).round() as u64
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if before == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if before == z {
            return z / 3.0;
        }
    }
}

/// The register values of any HLL string (PFDEBUG GETREG, tests).
pub fn registers(s: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let mut regs = vec![0u8; REGISTERS];
    merge_into(&mut regs, s)?;
    Ok(regs)
}

/// The sparse opcodes as PFDEBUG DECODE prints them (`Z:n XZ:n v:value,run`).
pub fn decode_sparse(s: &[u8]) -> Result<String, Corrupt> {
    let body = &s[HEADER..];
    let mut out = Vec::new();
    let mut p = 0;
    while p < body.len() {
        let op = op_at(body, p).ok_or(Corrupt)?;
        out.push(match (op.value, op.bytes) {
            (0, 1) => format!("Z:{}", op.run),
            (0, _) => format!("XZ:{}", op.run),
            (v, _) => format!("v:{},{}", v, op.run),
        });
        p += op.bytes;
    }
    Ok(out.join(" "))
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_self_test_passes() {
        assert_eq!(self_test(1), Ok(()));
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_hll_is_header_plus_one_xzero() {
        let h = new_sparse();
        assert_eq!(h.len(), 18);
        assert_eq!(&h[16..], &[0x7f, 0xff]);
        assert!(is_hll(&h));
        assert_eq!(count(&h), Ok(0));
    }

    #[test]
    fn dense_registers_round_trip_at_every_bit_offset() {
        let mut regs = vec![0u8; REGISTERS * 6 / 8];
        for i in 0..REGISTERS {
            dense_put(&mut regs, i, (i % 64) as u8);
        }
        for i in 0..REGISTERS {
            assert_eq!(dense_get(&regs, i), (i % 64) as u8, "register {i}");
        }
    }

    #[test]
    fn estimates_are_within_two_percent() {
        let mut h = new_sparse();
        for n in 0..100_000u32 {
            add(&mut h, format!("element:{n}").as_bytes(), 3000).expect("valid");
        }
        assert!(is_dense(&h));
        let c = count(&h).expect("valid") as f64;
        assert!((c - 100_000.0).abs() / 100_000.0 < 0.02, "estimate {c}");
    }

    #[test]
    fn corrupt_sparse_bodies_are_refused() {
        let mut h = new_sparse();
        h.truncate(17);
        assert_eq!(count(&h), Err(Corrupt));
        let mut h = new_sparse();
        h[17] = 0xfe; // covers 16383 registers, one short
        assert_eq!(count(&h), Err(Corrupt));
        assert_eq!(set_register(&mut h, REGISTERS - 1, 1, 3000), Err(Corrupt));
        assert_eq!(set_register(&mut h, 0, 1, 3000), Ok(true));
    }

    proptest! {
        /// Sparse edits (with promotion at any threshold) hold exactly the registers a
        /// plain array would, and the sparse string stays well formed.
        #[test]
        fn sparse_matches_register_model(
            sets in proptest::collection::vec((0usize..REGISTERS, 1u8..40), 0..300),
            max_bytes in 20usize..3000,
        ) {
            let mut h = new_sparse();
            let mut model = vec![0u8; REGISTERS];
            for (i, v) in sets {
                let changed = set_register(&mut h, i, v, max_bytes).expect("valid");
                prop_assert_eq!(changed, model[i] < v);
                model[i] = model[i].max(v);
                prop_assert!(is_hll(&h));
            }
            prop_assert_eq!(registers(&h).expect("valid"), model.clone());
            prop_assert_eq!(count(&h).expect("valid"), count_registers(&model));
            let mut dense = h.clone();
            to_dense(&mut dense).expect("valid");
            prop_assert_eq!(registers(&dense).expect("valid"), model);
        }

        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64), i in 0usize..REGISTERS) {
            let mut h = new_sparse();
            h.truncate(HEADER);
            h.extend_from_slice(&body);
            let _ = count(&h);
            let _ = set_register(&mut h, i, 5, 3000);
            let _ = to_dense(&mut h);
        }
    }
}
