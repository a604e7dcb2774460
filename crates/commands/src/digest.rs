//! DEBUG DIGEST and DEBUG DIGEST-VALUE, computed exactly as Redis 7.0 computes them, so
//! that a Carmine replica's dataset can be compared with a Redis master's (Redis'
//! replication tests do) and two datasets with one string.
//!
//! Per key: SHA1-mix the key, the type, then the value (ordered types mix element by
//! element; sets, hashes and sorted sets XOR per-element digests so their order does not
//! matter), then `!!expire!!` if the key has a deadline. The SHA-1s of the keys' digests
//! are XORed together; each non-empty database first mixes its number into the result.

use carmine_keyspace::{Entry, Keyspace, Value};
use sha1::{Digest, Sha1};

pub type Digest20 = [u8; 20];

fn sha1(data: &[u8]) -> Digest20 {
    Sha1::digest(data).into()
}

/// `digest ^= SHA1(data)`: order-independent.
fn xor_digest(digest: &mut Digest20, data: &[u8]) {
    for (d, h) in digest.iter_mut().zip(sha1(data)) {
        *d ^= h;
    }
}

/// `digest = SHA1(digest ^ SHA1(data))`: order-dependent.
fn mix_digest(digest: &mut Digest20, data: &[u8]) {
    xor_digest(digest, data);
    *digest = sha1(digest);
}

/// Redis' object type numbers.
fn type_number(v: &Value) -> u32 {
    match v {
        Value::Str(_) => 0,
        Value::List(_) => 1,
        Value::Set(_) => 2,
        Value::ZSet(_) => 3,
        Value::Hash(_) => 4,
        Value::Stream(_) => 6,
    }
}

/// Mixes one value (and whether it has a deadline) into `digest` (xorObjectDigest).
pub fn mix_value(digest: &mut Digest20, entry: &Entry) {
    mix_digest(digest, &type_number(&entry.value).to_be_bytes());
    match &entry.value {
        Value::Str(s) => mix_digest(digest, &s.to_vec()),
        Value::List(l) => {
            for e in l.iter() {
                mix_digest(digest, e);
            }
        }
        Value::Set(s) => {
            for m in s.members() {
                xor_digest(digest, &m);
            }
        }
        Value::ZSet(z) => {
            for (score, member) in z.range(0, z.len()) {
                let mut ele = [0u8; 20];
                mix_digest(&mut ele, member);
                mix_digest(&mut ele, crate::zset::format_score(score).as_bytes());
                xor_digest(digest, &ele);
            }
        }
        Value::Hash(h) => {
            for (f, v) in h.pairs() {
                let mut ele = [0u8; 20];
                mix_digest(&mut ele, f);
                mix_digest(&mut ele, v);
                xor_digest(digest, &ele);
            }
        }
        Value::Stream(x) => mix_stream(digest, x),
    }
    if entry.expire_at() != 0 {
        xor_digest(digest, b"!!expire!!");
    }
}

/// A stream's entries, counters and groups, in order. (Redis digests its listpacks'
/// bytes, which depend on its encoding; this digest depends on the content only.)
fn mix_stream(digest: &mut Digest20, x: &carmine_keyspace::StreamValue) {
    for (id, fields) in x.entries() {
        mix_digest(digest, id.to_string().as_bytes());
        for f in &fields {
            mix_digest(digest, f);
        }
    }
    let counters = format!(
        "{} {} {} {}",
        x.last_id, x.first_id, x.max_deleted_id, x.entries_added
    );
    mix_digest(digest, counters.as_bytes());
    for (name, g) in &x.groups {
        mix_digest(digest, name);
        mix_digest(
            digest,
            format!("{} {}", g.last_id, g.entries_read).as_bytes(),
        );
        for (id, p) in &g.pel {
            let line = format!("{id} {} {}", p.delivery_time, p.delivery_count);
            mix_digest(digest, line.as_bytes());
            mix_digest(digest, &p.consumer);
        }
        // Not seen-times: a replica sets them when it creates the consumer.
        for name in g.consumers.keys() {
            mix_digest(digest, name);
        }
    }
}

/// The digest of every database (DEBUG DIGEST); all zeros for an empty dataset. Walks
/// one table at a time, so it is a point in time only while nothing writes.
pub fn dataset_digest(ks: &Keyspace) -> Digest20 {
    let mut digest = [0u8; 20];
    for db in 0..ks.databases() {
        if ks.dbsize(db) == 0 {
            continue;
        }
        mix_digest(&mut digest, &(db as u32).to_be_bytes());
        ks.for_each_table(db, |_, table| {
            for (key, entry) in table.iter() {
                let mut kv = [0u8; 20];
                mix_digest(&mut kv, key);
                mix_value(&mut kv, entry);
                xor_digest(&mut digest, &kv);
            }
            true
        });
    }
    digest
}

pub fn hex(d: &Digest20) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
