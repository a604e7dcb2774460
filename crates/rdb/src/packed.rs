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
    let total = le(b.get(0..4)?) as usize;
    if total != b.len() {
        return None;
    }
    let count = le(b.get(4..6)?) as usize;
    let mut at = 6;
    let mut out = Vec::with_capacity(count.min(b.len()));
    loop {
        let start = at;
        let enc = *b.get(at)?;
        if enc == 0xff {
            break;
        }
        at += 1;
        let item = if enc & 0x80 == 0 {
            int_bytes(i64::from(enc & 0x7f))
        } else if enc & 0xc0 == 0x80 {
            take(b, &mut at, usize::from(enc & 0x3f))?.to_vec()
        } else if enc & 0xe0 == 0xc0 {
            let v = (u64::from(enc & 0x1f) << 8) | u64::from(*b.get(at)?);
            at += 1;
            int_bytes(sign_extend(v, 13))
        } else if enc & 0xf0 == 0xe0 {
            let n = (usize::from(enc & 0x0f) << 8) | usize::from(*b.get(at)?);
            at += 1;
            take(b, &mut at, n)?.to_vec()
        } else {
            match enc {
                0xf0 => {
                    let n = le(take(b, &mut at, 4)?) as usize;
                    take(b, &mut at, n)?.to_vec()
                }
                0xf1 => int_bytes(sign_extend(le(take(b, &mut at, 2)?), 16)),
                0xf2 => int_bytes(sign_extend(le(take(b, &mut at, 3)?), 24)),
                0xf3 => int_bytes(sign_extend(le(take(b, &mut at, 4)?), 32)),
                0xf4 => int_bytes(le(take(b, &mut at, 8)?) as i64),
                _ => return None,
            }
        };
        // backlen: the entry's length in 1..=5 bytes of 7 bits.
        let entry_len = at - start;
        at += match entry_len {
            0..=127 => 1,
            128..=16383 => 2,
            16384..=2_097_151 => 3,
            2_097_152..=268_435_455 => 4,
            _ => 5,
        };
        if at > b.len() {
            return None;
        }
        out.push(item);
    }
    (out.len() == count || count == 0xffff).then_some(out)
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
