//! Operations on string and generic keys, written once over [`Locked`] and shared by the
//! embedding API and the command layer.

use crate::error::KeyspaceError;
use crate::keyspace::Locked;
use crate::long_double::LongDouble;
use crate::value::{Entry, StrValue, Value};

/// Largest string Redis allows (proto-max-bulk-len's default ceiling for values).
pub const MAX_STRING: usize = 512 * 1024 * 1024;

/// When SET writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetCondition {
    #[default]
    Always,
    /// NX: only if the key does not exist.
    IfAbsent,
    /// XX: only if the key exists.
    IfPresent,
}

/// What SET does to the key's deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetExpiry {
    /// Clear any deadline (plain SET).
    #[default]
    Clear,
    /// Keep the existing deadline (KEEPTTL).
    Keep,
    /// Expire at this Unix time in milliseconds.
    At(u64),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetOptions {
    pub condition: SetCondition,
    pub expiry: SetExpiry,
    /// Return the old value (SET ... GET); a non-string old value is WRONGTYPE.
    pub get: bool,
}

/// Result of a SET.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetOutcome {
    pub written: bool,
    /// The previous string value when `get` was asked for.
    pub old: Option<Vec<u8>>,
}

/// The string at `key`: `Ok(None)` if absent, WRONGTYPE if another type.
pub fn get_str<'l>(
    l: &'l mut Locked<'_>,
    key: &[u8],
) -> Result<Option<&'l StrValue>, KeyspaceError> {
    match l.get(key) {
        None => Ok(None),
        Some(e) => e.value.as_str().map(Some).ok_or(KeyspaceError::WrongType),
    }
}

pub fn set(
    l: &mut Locked<'_>,
    key: &[u8],
    value: &[u8],
    opts: &SetOptions,
) -> Result<SetOutcome, KeyspaceError> {
    let (exists, old_expire, old) = match l.get(key) {
        None => (false, 0, None),
        Some(e) => {
            let old = if opts.get {
                Some(e.value.as_str().ok_or(KeyspaceError::WrongType)?.to_vec())
            } else {
                None
            };
            (true, e.expire_at(), old)
        }
    };
    let allowed = match opts.condition {
        SetCondition::Always => true,
        SetCondition::IfAbsent => !exists,
        SetCondition::IfPresent => exists,
    };
    if !allowed {
        return Ok(SetOutcome {
            written: false,
            old,
        });
    }
    let expire_at = match opts.expiry {
        SetExpiry::Clear => 0,
        SetExpiry::Keep => old_expire,
        SetExpiry::At(at) => at,
    };
    if expire_at != 0 && expire_at <= l.now() && l.past_deadline_deletes() {
        // A deadline already in the past deletes the key (a replica keeps it).
        l.remove(key);
        return Ok(SetOutcome { written: true, old });
    }
    l.insert(
        key,
        Entry::with_expiry(Value::Str(StrValue::from_bytes(value)), expire_at),
    );
    Ok(SetOutcome { written: true, old })
}

/// INCRBY / DECRBY / INCR / DECR.
pub fn incr_by(l: &mut Locked<'_>, key: &[u8], delta: i64) -> Result<i64, KeyspaceError> {
    let Some(e) = l.get_mut(key) else {
        l.insert(key, Entry::new(Value::Str(StrValue::Int(delta))));
        return Ok(delta);
    };
    let s = e.value.as_str_mut().ok_or(KeyspaceError::WrongType)?;
    let cur = s.as_i64().ok_or(KeyspaceError::NotInteger)?;
    let next = cur.checked_add(delta).ok_or(KeyspaceError::Overflow)?;
    *s = StrValue::Int(next);
    Ok(next)
}

/// Parses a float as Redis' `string2ld` accepts it: no spaces, no NaN.
pub fn parse_float(s: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(s).ok()?;
    if text.is_empty()
        || text.starts_with(char::is_whitespace)
        || text.ends_with(char::is_whitespace)
    {
        return None;
    }
    let v: f64 = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        lower => {
            if lower.contains("nan") {
                return None;
            }
            text.parse().ok()?
        }
    };
    if v.is_nan() {
        None
    } else {
        Some(v)
    }
}

/// INCRBYFLOAT; returns the new value's text (what is stored and replied), computed in
/// `long double` as Redis does.
pub fn incr_by_float(
    l: &mut Locked<'_>,
    key: &[u8],
    delta: LongDouble,
) -> Result<Vec<u8>, KeyspaceError> {
    let cur = match l.get(key) {
        None => LongDouble::ZERO,
        Some(e) => {
            let s = e.value.as_str().ok_or(KeyspaceError::WrongType)?;
            s.with_bytes(LongDouble::parse)
                .ok_or(KeyspaceError::NotFloat)?
        }
    };
    let next = cur + delta;
    if !next.is_finite() {
        return Err(KeyspaceError::NanOrInfinity);
    }
    let text = next.to_human();
    match l.get_mut(key) {
        Some(e) => e.value = Value::Str(StrValue::from_bytes(&text)),
        None => {
            l.insert(key, Entry::new(Value::Str(StrValue::from_bytes(&text))));
        }
    }
    Ok(text)
}

/// APPEND; returns the new length.
pub fn append(l: &mut Locked<'_>, key: &[u8], data: &[u8]) -> Result<usize, KeyspaceError> {
    match l.get(key) {
        None => {
            l.insert(key, Entry::new(Value::Str(StrValue::from_bytes(data))));
            return Ok(data.len());
        }
        Some(e) => {
            let s = e.value.as_str().ok_or(KeyspaceError::WrongType)?;
            if s.len() + data.len() > MAX_STRING {
                return Err(KeyspaceError::StringTooLong);
            }
        }
    }
    let Some(e) = l.get_mut(key) else {
        return Ok(0);
    };
    let Some(s) = e.value.as_str_mut() else {
        return Err(KeyspaceError::WrongType);
    };
    Ok(s.append(data))
}

/// SETRANGE; returns the new length.
pub fn set_range(
    l: &mut Locked<'_>,
    key: &[u8],
    offset: usize,
    data: &[u8],
) -> Result<usize, KeyspaceError> {
    let cur_len = match get_str(l, key)? {
        None => {
            if data.is_empty() {
                return Ok(0);
            }
            0
        }
        Some(s) => s.len(),
    };
    if data.is_empty() {
        return Ok(cur_len);
    }
    if offset.saturating_add(data.len()) > MAX_STRING {
        return Err(KeyspaceError::StringTooLong);
    }
    if l.get(key).is_none() {
        l.insert(key, Entry::new(Value::Str(StrValue::raw(Vec::new()))));
    }
    let Some(e) = l.get_mut(key) else {
        return Ok(0);
    };
    let Some(s) = e.value.as_str_mut() else {
        return Err(KeyspaceError::WrongType);
    };
    Ok(s.write_at(offset, data))
}

/// GETRANGE with Redis' index rules (negative from the end, clamped, inclusive).
pub fn get_range(bytes: &[u8], start: i64, end: i64) -> &[u8] {
    match range_bounds(bytes.len(), start, end) {
        Some((s, e)) => &bytes[s..=e],
        None => &[],
    }
}

/// GETRANGE's inclusive byte range over a string of `len` bytes; None when empty.
pub fn range_bounds(len: usize, start: i64, end: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    if len == 0 {
        return None;
    }
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    if s < 0 {
        s = 0;
    }
    if e < 0 {
        e = 0;
    }
    if e >= len {
        e = len - 1;
    }
    if s > e || (start < 0 && end < 0 && start > end) {
        return None;
    }
    Some((s as usize, e as usize))
}

/// Conditions for EXPIRE-family commands (Redis 7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExpireCondition {
    #[default]
    Always,
    /// NX: only when the key has no deadline.
    IfNone,
    /// XX: only when it has one.
    IfSome,
    /// GT: only when the new deadline is later (no deadline counts as infinite).
    Greater,
    /// LT: only when the new deadline is earlier.
    Less,
    /// LT together with XX: only when there is a deadline and the new one is earlier.
    LessIfSome,
}

/// Sets a key's deadline to `at_ms` (Unix ms). A deadline in the past deletes the key
/// (except on a replica, see `Locked::past_deadline_deletes`).
/// Returns whether the deadline was set (EXPIRE's 1/0).
pub fn expire_at(l: &mut Locked<'_>, key: &[u8], at_ms: u64, cond: ExpireCondition) -> bool {
    let Some(e) = l.get(key) else { return false };
    let cur = e.expire_at();
    let ok = match cond {
        ExpireCondition::Always => true,
        ExpireCondition::IfNone => cur == 0,
        ExpireCondition::IfSome => cur != 0,
        ExpireCondition::Greater => cur != 0 && at_ms > cur,
        ExpireCondition::Less => cur == 0 || at_ms < cur,
        ExpireCondition::LessIfSome => cur != 0 && at_ms < cur,
    };
    if !ok {
        return false;
    }
    if at_ms <= l.now() && l.past_deadline_deletes() {
        l.remove(key);
        return true;
    }
    l.set_expire(key, at_ms)
}

/// A key's remaining life, as TTL/PTTL see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    Missing,
    Persistent,
    /// Milliseconds left.
    Millis(u64),
}

/// PERSIST: removes a live key's deadline; true only if it had one (no deadline, no
/// write).
pub fn persist(l: &mut Locked<'_>, key: &[u8]) -> bool {
    match l.get(key) {
        Some(e) if e.expire_at() != 0 => l.set_expire(key, 0),
        _ => false,
    }
}

pub fn ttl(l: &mut Locked<'_>, key: &[u8]) -> Ttl {
    let now = l.now();
    match l.get_untouched(key) {
        None => Ttl::Missing,
        Some(e) if e.expire_at() == 0 => Ttl::Persistent,
        Some(e) => Ttl::Millis(e.expire_at().saturating_sub(now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_rules() {
        let s = b"This is a string";
        assert_eq!(get_range(s, 0, 3), b"This");
        assert_eq!(get_range(s, -3, -1), b"ing");
        assert_eq!(get_range(s, 0, -1), s);
        assert_eq!(get_range(s, 10, 100), b"string");
        assert_eq!(get_range(s, 5, 3), b"");
        assert_eq!(get_range(s, -1, -5), b"");
        assert_eq!(get_range(b"", 0, -1), b"");
    }

    #[test]
    fn float_text() {
        assert_eq!(parse_float(b"1e3"), Some(1000.0));
        assert_eq!(parse_float(b" 1"), None);
        assert_eq!(parse_float(b"nan"), None);
        assert_eq!(parse_float(b"-inf"), Some(f64::NEG_INFINITY));
    }
}
