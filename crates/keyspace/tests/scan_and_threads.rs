//! SCAN's guarantee, the keyspace under concurrent writers, and prefetching beside held tables.

use std::collections::HashSet;

use carmine_keyspace::{Keyspace, Locked, Ttl};
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

/// Prefetching is a hint that never waits: keys whose tables this thread or another one
/// holds are skipped (it takes tables with `try_lock`), repeated and absent keys and an
/// untouched database are fine, and nothing it does changes what reads see. The
/// prefetching runs on threads of their own, so a prefetch that waited would fail the
/// test after a bounded time instead of hanging it.
#[test]
fn prefetch_never_waits_for_a_held_table_and_changes_nothing() {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;
    let ks = Arc::new(Keyspace::new());
    let names: Vec<Vec<u8>> = (0..64).map(|i| format!("k{i}").into_bytes()).collect();
    for name in &names {
        ks.db(0).set(name, name);
    }
    // Held by the prefetching thread itself.
    let (done_tx, done_rx) = mpsc::channel();
    let (ks2, names2) = (ks.clone(), names.clone());
    std::thread::spawn(move || {
        let keys: Vec<&[u8]> = names2.iter().map(Vec::as_slice).collect();
        let held = Locked::lock_key(&ks2, 0, b"k1");
        ks2.prefetch(0, &keys, &[]);
        ks2.prefetch(0, &[b"k1", b"k1", b"absent", b"k2"], &[]);
        ks2.prefetch(7, &keys, &[]);
        drop(held);
        let _ = done_tx.send(());
    });
    assert!(
        done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "prefetch waited for a table its own thread holds"
    );
    // Held by another thread until the prefetch is done.
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let ks3 = ks.clone();
    std::thread::spawn(move || {
        let other = Locked::lock_key(&ks3, 0, b"k3");
        let _ = locked_tx.send(());
        let _ = release_rx.recv_timeout(Duration::from_secs(10));
        drop(other);
    });
    assert!(locked_rx.recv_timeout(Duration::from_secs(10)).is_ok());
    let (done_tx, done_rx) = mpsc::channel();
    let ks4 = ks.clone();
    std::thread::spawn(move || {
        ks4.prefetch(0, &[b"k3", b"k4", b"k3"], &[]);
        let _ = done_tx.send(());
    });
    assert!(
        done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "prefetch waited for a table another thread holds"
    );
    let _ = release_tx.send(());
    for name in &names {
        assert_eq!(
            ks.db(0).get(name).ok().flatten().as_deref(),
            Some(name.as_slice())
        );
    }
}

/// `Locked::prefetch_held` reads only tables the command holds (a key elsewhere is
/// skipped, whatever another thread does with its table) and changes nothing.
#[test]
fn prefetch_held_reads_only_held_tables_and_changes_nothing() {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;
    let ks = Arc::new(Keyspace::new());
    let names: Vec<Vec<u8>> = (0..32).map(|i| format!("m{i}").into_bytes()).collect();
    for name in &names {
        ks.db(0).set(name, name);
    }
    // Another thread holds m5's table for the whole test.
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let ks2 = ks.clone();
    let holder = std::thread::spawn(move || {
        let other = Locked::lock_key(&ks2, 0, b"m5");
        let _ = locked_tx.send(());
        let _ = release_rx.recv_timeout(Duration::from_secs(10));
        drop(other);
    });
    assert!(locked_rx.recv_timeout(Duration::from_secs(10)).is_ok());
    let (done_tx, done_rx) = mpsc::channel();
    let (ks3, names3) = (ks.clone(), names.clone());
    std::thread::spawn(move || {
        let mut held = Locked::lock_key(&ks3, 0, b"m1");
        held.prefetch_held(names3.iter().map(Vec::as_slice));
        held.prefetch_held([&b"m1"[..], b"absent", b"m5"].into_iter());
        let found = held.get(b"m1").is_some();
        drop(held);
        let _ = done_tx.send(found);
    });
    assert_eq!(
        done_rx.recv_timeout(Duration::from_secs(10)).ok(),
        Some(true),
        "prefetch_held waited for a table it does not hold, or lost m1"
    );
    let _ = release_tx.send(());
    let _ = holder.join();
    for name in &names {
        assert_eq!(
            ks.db(0).get(name).ok().flatten().as_deref(),
            Some(name.as_slice())
        );
    }
}

/// Element prefetches over big (split) hashes, sets and sorted sets, small ones, strings,
/// absent keys and element indexes past the keys: nothing changes and nothing panics.
#[test]
fn element_prefetch_reads_only_and_takes_any_key() {
    let ks = Keyspace::new();
    let db = ks.db(0);
    let members: Vec<Vec<u8>> = (0..20_000).map(|i| format!("m:{i}").into_bytes()).collect();
    for m in &members {
        db.sadd(b"big-set", &[m]).unwrap();
        db.hset(b"big-hash", m, b"v").unwrap();
        db.zadd(b"big-zset", 1.0, m).unwrap();
    }
    db.sadd(b"small-set", &[b"a"]).unwrap();
    db.set(b"string", b"v");
    let keys: [&[u8]; 6] = [
        b"big-set",
        b"big-hash",
        b"big-zset",
        b"small-set",
        b"string",
        b"absent",
    ];
    let mut elements: Vec<(usize, &[u8])> = Vec::new();
    for (i, m) in members.iter().take(30).enumerate() {
        elements.push((i % 8, m)); // indexes 6 and 7 name no key
        elements.push((i % 3, b"not a member"));
    }
    ks.prefetch(0, &keys, &elements);
    ks.prefetch(0, &[b"big-set"], &elements);
    ks.prefetch(0, &[], &elements);
    assert_eq!(db.scard(b"big-set").unwrap(), members.len());
    assert_eq!(db.hlen(b"big-hash").unwrap(), members.len());
    for m in members.iter().step_by(997) {
        assert!(db.sismember(b"big-set", m).unwrap());
        assert_eq!(db.hget(b"big-hash", m).unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(db.zscore(b"big-zset", m).unwrap(), Some(1.0));
    }
}
