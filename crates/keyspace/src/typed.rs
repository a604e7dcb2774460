//! Typed access to collection values, shared by the embedding API and the command layer:
//! WRONGTYPE checks, create on first write, delete when a write leaves a collection empty
//! (Redis never keeps empty collections).

use crate::collections::{HashValue, ListValue, SetValue};
use crate::error::KeyspaceError;
use crate::keyspace::{Fitting, Locked};
use crate::value::{Entry, Value};

/// A collection type that lives in a [`Value`] variant.
pub trait Collection: Default {
    fn wrap(self) -> Value;
    fn from_value(v: &Value) -> Option<&Self>;
    fn from_value_mut(v: &mut Value) -> Option<&mut Self>;
    fn is_empty(&self) -> bool;
    fn len(&self) -> usize;
}

/// `$store` puts the collection in its variant: `Box::new`, or `std::convert::identity`
/// for the types small enough to live inline in a `Value` (hashes, lists and sorted sets: a small one
/// is then its packed buffer alone, with no box of its own).
macro_rules! collection {
    ($t:ty, $variant:ident, $store:path) => {
        impl Collection for $t {
            fn wrap(self) -> Value {
                Value::$variant($store(self))
            }
            fn from_value(v: &Value) -> Option<&Self> {
                match v {
                    Value::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn from_value_mut(v: &mut Value) -> Option<&mut Self> {
                match v {
                    Value::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn is_empty(&self) -> bool {
                <$t>::is_empty(self)
            }
            fn len(&self) -> usize {
                <$t>::len(self)
            }
        }
    };
}

collection!(HashValue, Hash, std::convert::identity);
collection!(ListValue, List, std::convert::identity);
collection!(SetValue, Set, std::convert::identity);
collection!(crate::zset::ZSetValue, ZSet, std::convert::identity);
collection!(crate::stream::StreamValue, Stream, Box::new);

/// Read access: `Ok(None)` when the key is missing, WRONGTYPE for another type.
pub fn read<'l, C: Collection>(
    l: &'l mut Locked<'_>,
    key: &[u8],
) -> Result<Option<&'l C>, KeyspaceError> {
    match l.get(key) {
        None => Ok(None),
        Some(e) => C::from_value(&e.value)
            .map(Some)
            .ok_or(KeyspaceError::WrongType),
    }
}

/// Write access, creating the collection when `create` and the key is missing.
pub fn write<'l, C: Collection>(
    l: &'l mut Locked<'_>,
    key: &[u8],
    create: bool,
) -> Result<Option<&'l mut C>, KeyspaceError> {
    let fits = |v: &Value| C::from_value(v).is_some();
    let make = || create.then(|| Entry::new(C::default().wrap()));
    match l.get_mut_fitting(key, fits, make) {
        Fitting::Found(e) => Ok(C::from_value_mut(&mut e.value)),
        Fitting::Missing => Ok(None),
        Fitting::Refused => Err(KeyspaceError::WrongType),
    }
}

/// Deletes `key` if it holds an empty collection of type `C`.
pub fn drop_if_empty<C: Collection>(l: &mut Locked<'_>, key: &[u8]) {
    let empty = l
        .get(key)
        .and_then(|e| C::from_value(&e.value))
        .is_some_and(C::is_empty);
    if empty {
        l.remove(key);
        l.notify(crate::notify::GENERIC, "del", key);
    }
}

/// Resolves Redis' list/range index rules: negative counts from the end; returns the
/// inclusive range clamped to `len`, or None when empty.
pub fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    if s < 0 {
        s = 0;
    }
    if e >= len {
        e = len - 1;
    }
    if s > e || s >= len || e < 0 {
        return None;
    }
    Some((s as usize, e as usize))
}
