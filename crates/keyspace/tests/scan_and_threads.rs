//! SCAN's guarantee and the keyspace under concurrent writers.

use std::collections::HashSet;

use carmine_keyspace::{Keyspace, Ttl};
use proptest::prelude::*;

#[test]
fn scan_returns_every_key_present_throughout_while_tables_grow() {
    let ks = Keyspace::new();
    let db = ks.db(0);
    let stable: HashSet<Vec<u8>> = (0..5_000)
        .map(|i| format!("stable:{i}").into_bytes())
        .collect();
    for k in &stable {
        db.set(k, b"v");
    }
    let mut seen = HashSet::new();
    let mut cursor = 0;
    let mut grown = 0;
    for _ in 0..100_000 {
        let (next, keys) = db.scan(cursor, None, 50);
        seen.extend(keys);
        // Between steps, other writers add keys: every table they hit grows and rehashes.
        for _ in 0..200 {
            db.set(format!("new:{grown}").as_bytes(), b"x");
            grown += 1;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(
        stable.is_subset(&seen),
        "missed {} keys",
        stable.difference(&seen).count()
    );
    assert!(
        grown > 10_000,
        "the scan really ran while the keyspace grew"
    );
}

#[test]
fn concurrent_writers_and_expiry_stay_consistent() {
    let ks = Keyspace::new();
    std::thread::scope(|s| {
        for t in 0..4 {
            let ks = &ks;
            s.spawn(move || {
                let db = ks.db(0);
                for i in 0..2_000 {
                    let k = format!("t{t}:{}", i % 100);
                    db.incr_by(k.as_bytes(), 1).unwrap();
                    if i % 10 == 0 {
                        db.expire(k.as_bytes(), std::time::Duration::from_secs(100));
                    }
                }
            });
        }
    });
    let db = ks.db(0);
    for t in 0..4 {
        for i in 0..100 {
            let k = format!("t{t}:{i}");
            assert_eq!(db.get(k.as_bytes()).unwrap(), Some(b"20".to_vec()));
            // Only keys whose index is a multiple of 10 were given a TTL; INCR keeps it.
            let has_ttl = matches!(db.ttl(k.as_bytes()), Ttl::Millis(_));
            assert_eq!(has_ttl, i % 10 == 0, "{k}");
        }
    }
    let (keys, volatile) = ks.db_counts(0);
    assert_eq!((keys, volatile), (400, 40));
}

proptest! {
    /// The typed API against a model map: sets, deletes, increments, appends.
    #[test]
    fn string_ops_match_a_model(ops in proptest::collection::vec((0u8..4, 0u8..8, 0i64..100), 1..200)) {
        let ks = Keyspace::new();
        let db = ks.db(0);
        let mut model: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
        for (op, k, n) in ops {
            let key = vec![b'k', k];
            match op {
                0 => {
                    let v = n.to_string().into_bytes();
                    db.set(&key, &v);
                    model.insert(key, v);
                }
                1 => {
                    let removed = db.del(&[&key]);
                    prop_assert_eq!(removed, usize::from(model.remove(&key).is_some()));
                }
                2 => {
                    let got = db.incr_by(&key, n);
                    let cur = model.get(&key).map(|v| String::from_utf8_lossy(v).parse::<i64>());
                    match cur {
                        None => {
                            prop_assert_eq!(got.unwrap(), n);
                            model.insert(key, n.to_string().into_bytes());
                        }
                        Some(Ok(c)) => {
                            prop_assert_eq!(got.unwrap(), c + n);
                            model.insert(key, (c + n).to_string().into_bytes());
                        }
                        Some(Err(_)) => prop_assert!(got.is_err()),
                    }
                }
                _ => {
                    let len = db.append(&key, b"x").unwrap();
                    let v = model.entry(key).or_default();
                    v.push(b'x');
                    prop_assert_eq!(len, v.len());
                }
            }
        }
        for (k, v) in &model {
            prop_assert_eq!(db.get(k).unwrap(), Some(v.clone()));
        }
        prop_assert_eq!(db.dbsize(), model.len());
    }
}
