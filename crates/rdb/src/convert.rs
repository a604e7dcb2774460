//! RDB values to and from keyspace values.

use carmine_keyspace::{
    HashValue, Keyspace, ListValue, SetValue, StrValue, Value as KValue, ZSetValue,
};

use crate::Value;

/// A keyspace value as RDB carries it.
pub fn from_keyspace(v: &KValue) -> Value {
    match v {
        KValue::Str(s) => Value::String(s.to_vec()),
        KValue::List(l) => Value::List(l.iter().map(<[u8]>::to_vec).collect()),
        KValue::Set(s) => Value::Set(s.members()),
        KValue::Hash(h) => Value::Hash(
            h.pairs()
                .into_iter()
                .map(|(f, v)| (f.to_vec(), v.to_vec()))
                .collect(),
        ),
        KValue::ZSet(z) => Value::ZSet(z.range(0, z.len()).map(|(s, m)| (m.to_vec(), s)).collect()),
        KValue::Stream(x) => Value::Stream(x.clone()),
    }
}

/// Builds the keyspace value, choosing compact encodings by the keyspace's thresholds.
/// None for an empty collection (Redis never stores one; a file holding one is skipped).
pub fn to_keyspace(v: Value, ks: &Keyspace) -> Option<KValue> {
    let limits = ks.limits();
    Some(match v {
        Value::String(s) => KValue::Str(StrValue::from_bytes(&s)),
        Value::List(items) if !items.is_empty() => {
            let mut l = ListValue::default();
            for it in &items {
                l.push(it, false, limits);
            }
            KValue::List(l)
        }
        Value::Set(items) if !items.is_empty() => {
            let mut s = SetValue::default();
            for it in &items {
                s.insert(it, limits);
            }
            KValue::Set(s)
        }
        Value::Hash(pairs) if !pairs.is_empty() => {
            let mut h = HashValue::default();
            for (f, v) in &pairs {
                h.insert(f, v, limits);
            }
            KValue::Hash(h)
        }
        Value::ZSet(items) if !items.is_empty() => {
            let mut z = ZSetValue::default();
            for (m, s) in &items {
                z.insert(m, *s, ks.zset_limits());
            }
            KValue::ZSet(z)
        }
        // An empty stream is kept: streams are not deleted for being empty.
        Value::Stream(x) => KValue::Stream(x),
        _ => return None,
    })
}
