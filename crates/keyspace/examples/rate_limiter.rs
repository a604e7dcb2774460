//! An application embedding Carmine's keyspace: a per-user rate limiter (fixed windows
//! with INCR + EXPIRE semantics), a job queue (lists), and per-user tags (sets), shared
//! by worker threads without a server in between.
//!
//!     cargo run -p carmine-keyspace --example rate_limiter

use std::time::Duration;

use carmine_keyspace::Keyspace;

/// Allows `limit` requests per `window` for `user`; true if this request is allowed.
fn allow(ks: &Keyspace, user: &str, limit: i64, window: Duration) -> bool {
    let db = ks.db(0);
    let key = format!("rate:{user}");
    let count = db.incr_by(key.as_bytes(), 1).unwrap_or(i64::MAX);
    if count == 1 {
        db.expire(key.as_bytes(), window);
    }
    count <= limit
}

fn main() {
    let ks = Keyspace::new();
    // Producers enqueue jobs; the limiter decides who may enqueue.
    let accepted = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let ks = &ks;
                s.spawn(move || {
                    let mut accepted = 0;
                    for i in 0..50 {
                        let user = format!("user{}", i % 5);
                        if allow(ks, &user, 20, Duration::from_secs(60)) {
                            let job = format!("job:{t}:{i}");
                            ks.db(0)
                                .rpush(b"jobs", &[job.as_bytes()])
                                .expect("jobs is a list");
                            ks.db(0)
                                .sadd(format!("tags:{user}").as_bytes(), &[b"active"])
                                .expect("a set");
                            accepted += 1;
                        }
                    }
                    accepted
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .sum::<usize>()
    });
    // 5 users x 20 allowed requests each in this window.
    assert_eq!(accepted, 100);
    let db = ks.db(0);
    assert_eq!(db.llen(b"jobs").expect("list"), 100);
    let mut done = 0;
    while let Some(job) = db.lpop(b"jobs").expect("list") {
        assert!(job.starts_with(b"job:"));
        done += 1;
    }
    assert!(!db.exists(b"jobs"), "an emptied list is deleted");
    println!("accepted {accepted} requests, processed {done} jobs");
    println!("user0 tags: {:?}", db.smembers(b"tags:user0").expect("set"));
}
