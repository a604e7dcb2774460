//! Decoders for the compact blobs inside RDB values: ziplist, listpack, intset, zipmap.
//! Each returns None on any inconsistency; the caller turns that into an error with the
//! value's offset.

/// One element of a ziplist or listpack: bytes, or an integer (printed as Redis does).
fn int_bytes(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
    let s = b.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(s)
}

/// A little-endian unsigned integer of up to 8 bytes.
pub(crate) fn le(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Elements of a ziplist (Redis < 7 lists, hashes, zsets).
pub fn ziplist(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let total = le(b.get(0..4)?) as usize;
    if total != b.len() {
        return None;
    }
    let count = le(b.get(8..10)?) as usize;
    let mut at = 10;
    let mut out = Vec::with_capacity(count.min(b.len()));
    loop {
        let first = *b.get(at)?;
        if first == 0xff {
            break;
        }
        // prevlen: 1 byte, or 0xfe and 4 more.
        at += if first == 0xfe { 5 } else { 1 };
        let enc = *b.get(at)?;
        at += 1;
        let item = match enc >> 6 {
            0 => take(b, &mut at, usize::from(enc & 0x3f))?.to_vec(),
            1 => {
                let n = (usize::from(enc & 0x3f) << 8) | usize::from(*b.get(at)?);
                at += 1;
                take(b, &mut at, n)?.to_vec()
            }
            2 => {
                let n = u32::from_be_bytes(take(b, &mut at, 4)?.try_into().ok()?) as usize;
                take(b, &mut at, n)?.to_vec()
            }
            _ => match enc {
                0xc0 => int_bytes(sign_extend(le(take(b, &mut at, 2)?), 16)),
                0xd0 => int_bytes(sign_extend(le(take(b, &mut at, 4)?), 32)),
                0xe0 => int_bytes(le(take(b, &mut at, 8)?) as i64),
                0xf0 => int_bytes(sign_extend(le(take(b, &mut at, 3)?), 24)),
                0xfe => int_bytes(sign_extend(le(take(b, &mut at, 1)?), 8)),
                0xf1..=0xfd => int_bytes(i64::from(enc & 0x0f) - 1),
                _ => return None,
            },
        };
        out.push(item);
    }
    (out.len() == count || count == 0xffff).then_some(out)
}

/// Elements of a listpack (Redis 7 small lists, hashes, zsets, sets).
pub fn listpack(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut lp = Listpack::new(b)?;
    let mut out = Vec::with_capacity(lp.count.min(b.len()));
    while let Some(item) = lp.next_item()? {
        out.push(item.to_vec());
    }
    Some(out)
}

/// One element of a listpack as stored: an integer, or bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LpItem<'a> {
    Int(i64),
    Str(&'a [u8]),
}

impl LpItem<'_> {
    pub fn to_vec(self) -> Vec<u8> {
        match self {
            LpItem::Int(v) => int_bytes(v),
            LpItem::Str(s) => s.to_vec(),
        }
    }

    /// The integer it holds, or a string holding one as Redis reads it (`string2ll`).
    pub fn as_int(self) -> Option<i64> {
        match self {
            LpItem::Int(v) => Some(v),
            LpItem::Str(s) => carmine_keyspace::parse_canonical_i64(s),
        }
    }
}

/// The bytes of a listpack entry's back-length for an entry of `len` bytes
/// (`lpEncodeBacklen`'s boundaries).
fn backlen_size(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2_097_150 => 3,
        2_097_151..=268_435_454 => 4,
        _ => 5,
    }
}

/// A listpack read element by element, checked as Redis' deep validation checks it:
/// the header's size, each entry's encoding and back-length, the terminator as the
/// last byte, and the header's count (unless it says "unknown").
pub(crate) struct Listpack<'a> {
    b: &'a [u8],
    at: usize,
    count: usize,
    seen: usize,
}

impl<'a> Listpack<'a> {
    pub fn new(b: &'a [u8]) -> Option<Listpack<'a>> {
        let total = le(b.get(0..4)?) as usize;
        if total != b.len() || b.len() < 7 || b[b.len() - 1] != 0xff {
            return None;
        }
        Some(Listpack {
            b,
            at: 6,
            count: le(&b[4..6]) as usize,
            seen: 0,
        })
    }

    /// The next element, `Some(None)` at the end, None if the listpack is corrupt.
    pub fn next_item(&mut self) -> Option<Option<LpItem<'a>>> {
        let b = self.b;
        let start = self.at;
        let mut at = start;
        let enc = *b.get(at)?;
        if enc == 0xff {
            let complete = at == b.len() - 1 && (self.seen == self.count || self.count == 0xffff);
            return complete.then_some(None);
        }
        at += 1;
        let item = if enc & 0x80 == 0 {
            LpItem::Int(i64::from(enc & 0x7f))
        } else if enc & 0xc0 == 0x80 {
            LpItem::Str(take(b, &mut at, usize::from(enc & 0x3f))?)
        } else if enc & 0xe0 == 0xc0 {
            let v = (u64::from(enc & 0x1f) << 8) | u64::from(*b.get(at)?);
            at += 1;
            LpItem::Int(sign_extend(v, 13))
        } else if enc & 0xf0 == 0xe0 {
            let n = (usize::from(enc & 0x0f) << 8) | usize::from(*b.get(at)?);
            at += 1;
            LpItem::Str(take(b, &mut at, n)?)
        } else {
            match enc {
                0xf0 => {
                    let n = le(take(b, &mut at, 4)?) as usize;
                    LpItem::Str(take(b, &mut at, n)?)
                }
                0xf1 => LpItem::Int(sign_extend(le(take(b, &mut at, 2)?), 16)),
                0xf2 => LpItem::Int(sign_extend(le(take(b, &mut at, 3)?), 24)),
                0xf3 => LpItem::Int(sign_extend(le(take(b, &mut at, 4)?), 32)),
                0xf4 => LpItem::Int(le(take(b, &mut at, 8)?) as i64),
                _ => return None,
            }
        };
        // The back-length: the entry's length, 7 bits a byte, most significant first,
        // every byte but the first flagged 0x80.
        let entry_len = at - start;
        let back = take(b, &mut at, backlen_size(entry_len))?;
        let mut v = 0usize;
        for (i, &x) in back.iter().enumerate() {
            if (x & 0x80 == 0) != (i == 0) {
                return None;
            }
            v = (v << 7) | usize::from(x & 0x7f);
        }
        // The terminator must still follow.
        if v != entry_len || at >= b.len() {
            return None;
        }
        self.at = at;
        self.seen += 1;
        Some(Some(item))
    }
}

/// Builds a listpack as Redis' `lpAppend` and `lpAppendInteger` do: strings that are
/// canonical 64-bit integers take the integer encodings.
pub(crate) struct ListpackWriter {
    buf: Vec<u8>,
    count: usize,
}

impl ListpackWriter {
    pub fn new() -> ListpackWriter {
        ListpackWriter {
            buf: vec![0; 6],
            count: 0,
        }
    }

    fn backlen(&mut self, entry_len: usize) {
        let n = backlen_size(entry_len);
        for i in (0..n).rev() {
            let byte = ((entry_len >> (7 * i)) & 0x7f) as u8;
            self.buf.push(if i + 1 == n { byte } else { byte | 0x80 });
        }
        self.count += 1;
    }

    pub fn push_int(&mut self, v: i64) {
        let start = self.buf.len();
        let b = &mut self.buf;
        if (0..=127).contains(&v) {
            b.push(v as u8);
        } else if (-4096..=4095).contains(&v) {
            let u = (v as u64) & 0x1fff;
            b.push(0xc0 | (u >> 8) as u8);
            b.push(u as u8);
        } else if let Ok(x) = i16::try_from(v) {
            b.push(0xf1);
            b.extend_from_slice(&x.to_le_bytes());
        } else if (-(1 << 23)..1 << 23).contains(&v) {
            b.push(0xf2);
            b.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
        } else if let Ok(x) = i32::try_from(v) {
            b.push(0xf3);
            b.extend_from_slice(&x.to_le_bytes());
        } else {
            b.push(0xf4);
            b.extend_from_slice(&v.to_le_bytes());
        }
        let len = self.buf.len() - start;
        self.backlen(len);
    }

    pub fn push(&mut self, s: &[u8]) {
        if let Some(v) = carmine_keyspace::parse_canonical_i64(s) {
            return self.push_int(v);
        }
        let start = self.buf.len();
        let b = &mut self.buf;
        let n = s.len();
        if n < 64 {
            b.push(0x80 | n as u8);
        } else if n < 4096 {
            b.push(0xe0 | (n >> 8) as u8);
            b.push(n as u8);
        } else {
            b.push(0xf0);
            b.extend_from_slice(&(n as u32).to_le_bytes());
        }
        b.extend_from_slice(s);
        let len = self.buf.len() - start;
        self.backlen(len);
    }

    /// The finished listpack: terminator, total size and count (65535 for "unknown"
    /// past that) filled in.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(0xff);
        let total = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&total.to_le_bytes());
        let count = self.count.min(0xffff) as u16;
        self.buf[4..6].copy_from_slice(&count.to_le_bytes());
        self.buf
    }
}

/// Members of an intset.
pub fn intset(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let width = le(b.get(0..4)?) as usize;
    let count = le(b.get(4..8)?) as usize;
    if !matches!(width, 2 | 4 | 8) || b.len() != 8 + width.checked_mul(count)? {
        return None;
    }
    Some(
        b[8..]
            .chunks_exact(width)
            .map(|c| int_bytes(sign_extend(le(c), (width * 8) as u32)))
            .collect(),
    )
}

/// Field/value pairs of a zipmap (hashes in RDB files of Redis before 2.6).
pub fn zipmap(b: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut at = 1;
    let len = |at: &mut usize| -> Option<usize> {
        let first = *b.get(*at)?;
        *at += 1;
        match first {
            0..=253 => Some(usize::from(first)),
            254 => {
                let n = le(take(b, at, 4)?) as usize;
                Some(n)
            }
            _ => None,
        }
    };
    let mut out = Vec::new();
    loop {
        if *b.get(at)? == 0xff {
            return Some(out);
        }
        let klen = len(&mut at)?;
        let key = take(b, &mut at, klen)?.to_vec();
        let vlen = len(&mut at)?;
        let free = usize::from(*b.get(at)?);
        at += 1;
        let value = take(b, &mut at, vlen)?.to_vec();
        at += free;
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn listpack_with_integers_of_every_width() {
        // 7-bit 5, 13-bit -2, int16 1000, int24 -100000, int32 2^30, int64 -2^40, "hi".
        let mut body: Vec<u8> = vec![0x05, 0x01];
        body.extend_from_slice(&[0xc0 | 0x1f, 0xfe, 0x02]);
        body.extend_from_slice(&[0xf1, 0xe8, 0x03, 0x03]);
        let v = (-100_000i32 as u32).to_le_bytes();
        body.extend_from_slice(&[0xf2, v[0], v[1], v[2], 0x04]);
        body.push(0xf3);
        body.extend_from_slice(&(1i32 << 30).to_le_bytes());
        body.push(0x05);
        body.push(0xf4);
        body.extend_from_slice(&(-(1i64 << 40)).to_le_bytes());
        body.push(0x09);
        body.extend_from_slice(&[0x82, b'h', b'i', 0x03]);
        let mut lp = ((6 + body.len() + 1) as u32).to_le_bytes().to_vec();
        lp.extend_from_slice(&7u16.to_le_bytes());
        lp.extend_from_slice(&body);
        lp.push(0xff);
        let got = listpack(&lp).expect("valid");
        let want = texts(&[
            "5",
            "-2",
            "1000",
            "-100000",
            "1073741824",
            "-1099511627776",
            "hi",
        ]);
        assert_eq!(got, want);
        assert_eq!(listpack(&lp[..lp.len() - 1]), None);
    }

    /// The writer's encodings are Redis': every integer width at its edges, strings
    /// of every length class, back-lengths across their size classes; numeric strings
    /// become integers; the decoder reads all of it back.
    #[test]
    fn listpack_writer_round_trips_and_encodes_as_redis() {
        let ints = [
            0i64,
            127,
            128,
            -1,
            4095,
            -4096,
            4096,
            -4097,
            32767,
            -32768,
            32768,
            8_388_607,
            -8_388_608,
            8_388_608,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::from(i32::MAX) + 1,
            i64::MAX,
            i64::MIN,
        ];
        let strings: Vec<Vec<u8>> = [0usize, 1, 63, 64, 4095, 4096, 16_377, 16_378, 70_000]
            .iter()
            .map(|&n| vec![b'a'; n])
            .chain([
                b"-0".to_vec(),
                b"007".to_vec(),
                b"9223372036854775808".to_vec(),
            ])
            .collect();
        let mut w = ListpackWriter::new();
        let mut want = Vec::new();
        for v in ints {
            w.push_int(v);
            want.push(v.to_string().into_bytes());
        }
        for s in &strings {
            w.push(s);
            want.push(s.clone());
        }
        w.push(b"-42");
        want.push(b"-42".to_vec());
        let lp = w.finish();
        assert_eq!(listpack(&lp), Some(want));
        let mut r = Listpack::new(&lp).expect("header");
        let mut kinds = Vec::new();
        while let Some(item) = r.next_item().expect("valid") {
            kinds.push(matches!(item, LpItem::Int(_)));
        }
        assert_eq!(kinds.iter().filter(|k| **k).count(), ints.len() + 1);
        // Encodings Redis picks (lpEncodeIntegerGetType, lpEncodeString).
        let one = |f: &dyn Fn(&mut ListpackWriter)| {
            let mut w = ListpackWriter::new();
            f(&mut w);
            let lp = w.finish();
            lp[6..lp.len() - 1].to_vec()
        };
        assert_eq!(one(&|w| w.push_int(5)), [0x05, 0x01]);
        assert_eq!(one(&|w| w.push_int(-1)), [0xdf, 0xff, 0x02]);
        assert_eq!(one(&|w| w.push_int(1000)), [0xc3, 0xe8, 0x02]);
        assert_eq!(one(&|w| w.push_int(20000)), [0xf1, 0x20, 0x4e, 0x03]);
        assert_eq!(one(&|w| w.push(b"ab")), [0x82, b'a', b'b', 0x03]);
        // A 16383-byte entry (5 + 16378) takes a 3-byte back-length, as in Redis.
        let big = one(&|w| w.push(&[b'x'; 16_378]));
        assert_eq!(&big[big.len() - 3..], [0x00, 0xff, 0xff]);
        // A wrong back-length, a terminator before the end, a wrong count: refused.
        let mut bad = lp.clone();
        let at = 6 + 1;
        assert_eq!(bad[at], 0x01);
        bad[at] = 0x02;
        assert_eq!(listpack(&bad), None);
        let mut w = ListpackWriter::new();
        w.push(b"x");
        let mut short = w.finish();
        short[4] = 2;
        assert_eq!(listpack(&short), None);
        short[4] = 0xff;
        short[5] = 0xff;
        assert_eq!(listpack(&short), Some(vec![b"x".to_vec()]));
        let mut early = short.clone();
        early.insert(6, 0xff);
        early[0] += 1;
        assert_eq!(listpack(&early), None);
    }

    #[test]
    fn ziplist_strings_and_every_integer_encoding() {
        // Entries: "ab" (6-bit length), int16 -300, int24 70000, int32, int64, int8 -7,
        // immediate 12. Each starts with a 1-byte prevlen.
        let mut body = vec![0x00, 0x02, b'a', b'b'];
        body.extend_from_slice(&[0x04, 0xc0]);
        body.extend_from_slice(&(-300i16).to_le_bytes());
        body.extend_from_slice(&[0x04, 0xf0]);
        body.extend_from_slice(&70_000i32.to_le_bytes()[..3]);
        body.extend_from_slice(&[0x05, 0xd0]);
        body.extend_from_slice(&(-2_000_000_000i32).to_le_bytes());
        body.extend_from_slice(&[0x06, 0xe0]);
        body.extend_from_slice(&(1i64 << 40).to_le_bytes());
        body.extend_from_slice(&[0x0a, 0xfe, (-7i8) as u8]);
        body.extend_from_slice(&[0x03, 0xfd]);
        let mut zl = ((10 + body.len() + 1) as u32).to_le_bytes().to_vec();
        zl.extend_from_slice(&0u32.to_le_bytes());
        zl.extend_from_slice(&7u16.to_le_bytes());
        zl.extend_from_slice(&body);
        zl.push(0xff);
        let got = ziplist(&zl).expect("valid");
        let want = texts(&[
            "ab",
            "-300",
            "70000",
            "-2000000000",
            "1099511627776",
            "-7",
            "12",
        ]);
        assert_eq!(got, want);
        let mut bad = zl.clone();
        bad[0] ^= 1; // zlbytes disagrees with the blob
        assert_eq!(ziplist(&bad), None);
    }

    #[test]
    fn zipmap_pairs() {
        let zm = [
            2, 1, b'a', 2, 0, b'x', b'y', 2, b'b', b'c', 1, 1, b'z', 0, 0xff,
        ];
        assert_eq!(
            zipmap(&zm),
            Some(vec![
                (b"a".to_vec(), b"xy".to_vec()),
                (b"bc".to_vec(), b"z".to_vec())
            ])
        );
        assert_eq!(zipmap(&zm[..6]), None);
    }

    #[test]
    fn intset_widths() {
        let mut b = 2u32.to_le_bytes().to_vec();
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&(-5i16).to_le_bytes());
        b.extend_from_slice(&300i16.to_le_bytes());
        assert_eq!(intset(&b), Some(vec![b"-5".to_vec(), b"300".to_vec()]));
        assert_eq!(intset(&b[..11]), None);
    }
}
