//! A work queue on an embedded stream: producers XADD jobs, workers of one consumer group
//! XREADGROUP and XACK them, one worker "dies" holding jobs, and a reaper XAUTOCLAIMs what
//! stayed pending too long so that every job is done exactly once it is acknowledged.
//!
//!     cargo run -p carmine-keyspace --example stream_work_queue

use std::collections::BTreeSet;
use std::time::Duration;

use carmine_keyspace::{Keyspace, StreamId};

const JOBS: usize = 300;

fn main() {
    let ks = Keyspace::new();
    let db = ks.db(0);
    db.xgroup_create(b"jobs", b"workers", StreamId::MIN)
        .expect("jobs is a stream");
    std::thread::scope(|s| {
        for p in 0..3 {
            let ks = &ks;
            s.spawn(move || {
                for i in 0..JOBS / 3 {
                    let job = format!("{p}:{i}");
                    ks.db(0)
                        .xadd(b"jobs", &[b"job", job.as_bytes()])
                        .expect("a stream");
                }
            });
        }
    });
    // A worker that takes ten jobs and dies before acknowledging them.
    let lost = db
        .xreadgroup(b"jobs", b"workers", b"doomed", 10)
        .expect("group");
    let done = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let ks = &ks;
                s.spawn(move || {
                    let name = format!("worker-{w}");
                    let mut done = Vec::new();
                    loop {
                        let batch = ks
                            .db(0)
                            .xreadgroup(b"jobs", b"workers", name.as_bytes(), 7)
                            .expect("group");
                        if batch.is_empty() {
                            return done;
                        }
                        let ids: Vec<StreamId> = batch.iter().map(|(id, _)| *id).collect();
                        done.extend(batch.into_iter().map(|(_, f)| f[1].clone()));
                        ks.db(0).xack(b"jobs", b"workers", &ids).expect("group");
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect::<Vec<_>>()
    });
    // The reaper: jobs pending for 50 ms belong to a dead worker.
    std::thread::sleep(Duration::from_millis(60));
    let reaped = db
        .xautoclaim(b"jobs", b"workers", b"reaper", 50, 100)
        .expect("group");
    let ids: Vec<StreamId> = reaped.iter().map(|(id, _)| *id).collect();
    db.xack(b"jobs", b"workers", &ids).expect("group");
    let all: BTreeSet<Vec<u8>> = done
        .into_iter()
        .chain(reaped.into_iter().map(|(_, f)| f[1].clone()))
        .collect();
    println!(
        "{} jobs queued, {} done by workers, {} reaped from the dead worker, {} distinct",
        db.xlen(b"jobs").expect("a stream"),
        all.len() - lost.len(),
        lost.len(),
        all.len()
    );
    assert_eq!(all.len(), JOBS, "every job was done");
}
