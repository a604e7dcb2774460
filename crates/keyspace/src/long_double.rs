//! INCRBYFLOAT's numbers as Redis computes them: C's `long double`, the x87 80-bit
//! extended format (64-bit significand) on the x86-64 builds users run. Parsing follows
//! Redis' `string2ld` (`strtold`, the whole string, no NaN, no overflow, no underflow to
//! zero), sums round to nearest-even, and the text is `printf("%.17Lf")` with trailing
//! zeros dropped, as `ld2string(..., LD_STR_HUMAN)` writes it: `0.1 + 0.2` is `0.3`, and a
//! huge sum prints every digit.

use rustc_apfloat::ieee::{Double, X87DoubleExtended};
use rustc_apfloat::{Float, FloatConvert, Round, Status};

/// An x87 extended-precision number (never NaN once parsed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LongDouble(X87DoubleExtended);

/// Redis' MAX_LONG_DOUBLE_CHARS: longer input is refused.
const MAX_CHARS: usize = 5 * 1024;

/// Fractional digits of `%.17Lf`.
const FRACTION_DIGITS: usize = 17;

impl LongDouble {
    pub const ZERO: LongDouble = LongDouble(X87DoubleExtended::ZERO);

    /// Parses as Redis' `string2ld`: the whole string is one `strtold` number (decimal or
    /// hex, `inf`/`infinity` allowed), without leading or trailing spaces, not NaN, not
    /// out of range (overflow, or underflow to zero).
    pub fn parse(text: &[u8]) -> Option<LongDouble> {
        if text.is_empty() || text.len() >= MAX_CHARS {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        let (negative, body) = match text.as_bytes()[0] {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let lower = body.to_ascii_lowercase();
        if lower == "inf" || lower == "infinity" {
            let inf = X87DoubleExtended::INFINITY;
            return Some(LongDouble(if negative { -inf } else { inf }));
        }
        if !is_strtold_number(&lower) {
            return None;
        }
        let parsed = X87DoubleExtended::from_str_r(&lower, Round::NearestTiesToEven).ok()?;
        let value = parsed.value;
        if parsed.status.contains(Status::OVERFLOW)
            || (parsed.status.contains(Status::UNDERFLOW) && value.is_zero())
            || value.is_nan()
        {
            return None;
        }
        Some(LongDouble(if negative { -value } else { value }))
    }

    /// A C `double` widened to `long double` (exact).
    pub fn from_f64(v: f64) -> LongDouble {
        let mut loses_info = false;
        let wide: X87DoubleExtended = Double::from_bits(v.to_bits() as u128)
            .convert(&mut loses_info)
            .value;
        LongDouble(wide)
    }

    /// An integer (a hash field stored as one) widened to `long double` (exact: the
    /// significand has 64 bits).
    pub fn from_i64(v: i64) -> LongDouble {
        LongDouble(X87DoubleExtended::from_i128(v as i128).value)
    }

    pub fn is_finite(self) -> bool {
        self.0.is_finite()
    }

    /// The nearest `double` (for callers of the typed API).
    pub fn to_f64(self) -> f64 {
        let mut loses_info = false;
        let narrow: Double = self.0.convert(&mut loses_info).value;
        f64::from_bits(narrow.to_bits() as u64)
    }

    /// `%.17Lf` without trailing zeros (nor a trailing `.`), and `-0` as `0`: the text
    /// INCRBYFLOAT stores and replies. Only for finite values.
    pub fn to_human(self) -> Vec<u8> {
        let bits = self.0.to_bits();
        let negative = bits >> 79 & 1 == 1;
        let biased = (bits >> 64 & 0x7fff) as i64;
        let significand = bits as u64;
        // value = significand * 2^shift; a denormal has the smallest exponent.
        let shift = biased.max(1) - 16383 - 63;
        let mut digits = if shift >= 0 {
            let mut n = BigUint::from_u64(significand);
            n.shl(shift as usize);
            let mut s = n.to_decimal();
            s.extend(std::iter::repeat_n(b'0', FRACTION_DIGITS));
            s
        } else {
            fixed_point_digits(significand, (-shift) as usize)
        };
        // digits holds the value times 10^17, rounded: at least one integer digit.
        while digits.len() < FRACTION_DIGITS + 1 {
            digits.insert(0, b'0');
        }
        let point = digits.len() - FRACTION_DIGITS;
        let mut out = Vec::with_capacity(digits.len() + 2);
        if negative {
            out.push(b'-');
        }
        out.extend_from_slice(&digits[..point]);
        out.push(b'.');
        out.extend_from_slice(&digits[point..]);
        while out.last() == Some(&b'0') {
            out.pop();
        }
        if out.last() == Some(&b'.') {
            out.pop();
        }
        if out == b"-0" {
            out = b"0".to_vec();
        }
        out
    }
}

impl std::ops::Add for LongDouble {
    type Output = LongDouble;

    /// The sum, rounded to nearest-even as the x87 unit rounds it.
    fn add(self, other: LongDouble) -> LongDouble {
        LongDouble(self.0.add_r(other.0, Round::NearestTiesToEven).value)
    }
}

/// Decimal digits of round(significand * 10^17 / 2^k), ties to even (glibc's `%Lf`
/// rounds the exact binary value so).
fn fixed_point_digits(significand: u64, k: usize) -> Vec<u8> {
    let mut x = BigUint::from_u64(significand);
    x.mul_small(1_000_000_000);
    x.mul_small(100_000_000);
    let half_bit = x.bit(k - 1);
    let below_half = (0..k - 1).any(|i| x.bit(i));
    x.shr(k);
    if half_bit && (below_half || x.bit(0)) {
        x.add_small(1);
    }
    x.to_decimal()
}

/// Whether `text` (lower case, no sign) is all of one number as `strtold` reads it:
/// digits with an optional point and exponent, or hex digits after `0x` with an
/// optional point and binary exponent. What `strtold` would stop short of (`1e`, `0x`,
/// `1.5.5`) is refused, as Redis refuses trailing characters.
fn is_strtold_number(text: &str) -> bool {
    let b = text.as_bytes();
    let (hex, mut i) = if b.starts_with(b"0x") {
        (true, 2)
    } else {
        (false, 0)
    };
    let is_digit = |c: u8| {
        if hex {
            c.is_ascii_hexdigit()
        } else {
            c.is_ascii_digit()
        }
    };
    let mut digits = 0;
    while i < b.len() && is_digit(b[i]) {
        i += 1;
        digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && is_digit(b[i]) {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && b[i] == if hex { b'p' } else { b'e' } {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
}

/// Just enough of an unsigned big integer for exact decimal printing: 32-bit limbs,
/// least significant first.
struct BigUint {
    limbs: Vec<u32>,
}

impl BigUint {
    fn from_u64(v: u64) -> BigUint {
        BigUint {
            limbs: vec![v as u32, (v >> 32) as u32],
        }
    }

    fn mul_small(&mut self, m: u32) {
        let mut carry = 0u64;
        for limb in &mut self.limbs {
            let p = *limb as u64 * m as u64 + carry;
            *limb = p as u32;
            carry = p >> 32;
        }
        if carry > 0 {
            self.limbs.push(carry as u32);
        }
    }

    fn add_small(&mut self, a: u32) {
        let mut carry = a as u64;
        for limb in &mut self.limbs {
            if carry == 0 {
                return;
            }
            let s = *limb as u64 + carry;
            *limb = s as u32;
            carry = s >> 32;
        }
        if carry > 0 {
            self.limbs.push(carry as u32);
        }
    }

    fn bit(&self, i: usize) -> bool {
        self.limbs
            .get(i / 32)
            .is_some_and(|limb| limb >> (i % 32) & 1 == 1)
    }

    fn shl(&mut self, bits: usize) {
        let (words, rest) = (bits / 32, bits % 32);
        if rest > 0 {
            let mut carry = 0u32;
            for limb in &mut self.limbs {
                let next = *limb >> (32 - rest);
                *limb = *limb << rest | carry;
                carry = next;
            }
            if carry > 0 {
                self.limbs.push(carry);
            }
        }
        self.limbs.splice(0..0, std::iter::repeat_n(0, words));
    }

    fn shr(&mut self, bits: usize) {
        let (words, rest) = (bits / 32, bits % 32);
        if words >= self.limbs.len() {
            self.limbs = vec![0];
            return;
        }
        self.limbs.drain(..words);
        if rest > 0 {
            let mut carry = 0u32;
            for limb in self.limbs.iter_mut().rev() {
                let next = *limb << (32 - rest);
                *limb = *limb >> rest | carry;
                carry = next;
            }
        }
    }

    /// Base-10 digits, most significant first ("0" for zero).
    fn to_decimal(&self) -> Vec<u8> {
        let mut limbs = self.limbs.clone();
        let mut chunks = Vec::new();
        while limbs.iter().any(|&l| l != 0) {
            let mut rem = 0u64;
            for limb in limbs.iter_mut().rev() {
                let cur = rem << 32 | *limb as u64;
                *limb = (cur / 1_000_000_000) as u32;
                rem = cur % 1_000_000_000;
            }
            chunks.push(rem as u32);
            while limbs.last() == Some(&0) {
                limbs.pop();
            }
        }
        let Some((last, rest)) = chunks.split_last() else {
            return b"0".to_vec();
        };
        let mut out = last.to_string().into_bytes();
        for c in rest.iter().rev() {
            out.extend_from_slice(format!("{c:09}").as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(s: &str) -> LongDouble {
        LongDouble::parse(s.as_bytes()).expect(s)
    }

    fn sum(a: &str, b: &str) -> String {
        String::from_utf8((ld(a) + ld(b)).to_human()).expect("ascii")
    }

    #[test]
    fn sums_print_as_redis_long_double() {
        // Each pair checked against Debian's redis-server 7.0.15 (INCRBYFLOAT).
        assert_eq!(sum("0.1", "0.2"), "0.3");
        assert_eq!(sum("10.5", "0.1"), "10.6");
        assert_eq!(sum("5.0e3", "2.0e2"), "5200");
        assert_eq!(sum("0", "-0"), "0");
        assert_eq!(sum("-1e-20", "0"), "0");
        assert_eq!(sum("1", "-1.5"), "-0.5");
        assert_eq!(sum("3.0e-10", "0"), "0.0000000003");
        assert_eq!(sum("1.5e20", "0"), "150000000000000000000");
        assert_eq!(sum("0x1p3", "0"), "8");
        assert_eq!(sum("17179869184", "1.5"), "17179869185.5");
        assert_eq!(sum("1e4900", "0").len(), 4901);
    }

    #[test]
    fn parses_as_string2ld() {
        for ok in [
            "1",
            "+1.5",
            "-.5",
            "1.",
            "1e+5",
            "1E5",
            "0x1.8p3",
            "inf",
            "-Infinity",
            "0e-9999",
        ] {
            assert!(LongDouble::parse(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in [
            "", " 1", "1 ", "1e", "0x", "1.5.5", "nan", "-nan", "1e5000", "1e-5000", "abc", "1\0",
        ] {
            assert!(LongDouble::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
        // A denormal is accepted (strtold's ERANGE with a non-zero value).
        assert!(LongDouble::parse(b"3.6e-4951").is_some());
        assert!(!(ld("1e4932") + ld("1e4932")).is_finite());
        assert!(!ld("inf").is_finite());
    }

    proptest::proptest! {
        /// Any bytes parse or are refused without panicking; what prints parses back to
        /// the same number (`%.17Lf` loses digits only below 1e-17).
        #[test]
        fn parse_never_panics_and_printing_round_trips(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            mantissa in -1_000_000_000_000i64..1_000_000_000_000,
            exponent in -8i32..30,
        ) {
            let _ = LongDouble::parse(&bytes);
            let v = LongDouble::parse(format!("{mantissa}e{exponent}").as_bytes());
            let v = v.expect("a decimal in range parses");
            let text = v.to_human();
            let back = LongDouble::parse(&text).expect("printed text parses");
            proptest::prop_assert_eq!(back.to_human(), text);
        }
    }

    #[test]
    fn widened_doubles_and_integers_are_exact() {
        assert_eq!(LongDouble::from_f64(0.5).to_human(), b"0.5");
        assert_eq!(
            LongDouble::from_i64(i64::MIN).to_human(),
            b"-9223372036854775808"
        );
        assert_eq!(LongDouble::from_f64(0.1).to_f64(), 0.1);
    }
}
