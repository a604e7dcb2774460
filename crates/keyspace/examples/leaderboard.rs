//! A game leaderboard embedded in an application: players' scores arrive from several
//! threads; the board answers top-N, a player's rank, and score bands, in O(log n).
//!
//!     cargo run -p carmine-keyspace --example leaderboard

use carmine_keyspace::Keyspace;

fn main() {
    let ks = Keyspace::new();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let ks = &ks;
            s.spawn(move || {
                for round in 0..250u32 {
                    let player = format!("player{:03}", (t * 250 + round) % 300);
                    let points = f64::from((round * 7 + t) % 50);
                    ks.db(0)
                        .zincr_by(b"board", points, player.as_bytes())
                        .expect("board is a sorted set");
                }
            });
        }
    });
    let db = ks.db(0);
    let players = db.zcard(b"board").expect("sorted set");
    assert_eq!(players, 300);
    println!("{players} players; top 3:");
    for (i, (name, score)) in db
        .zrange(b"board", 0, 2, true)
        .expect("sorted set")
        .iter()
        .enumerate()
    {
        println!(
            "  #{} {} with {}",
            i + 1,
            String::from_utf8_lossy(name),
            score
        );
    }
    let rank = db
        .zrank(b"board", b"player042")
        .expect("sorted set")
        .expect("player042 played");
    println!("player042 is ranked {} from the bottom", rank + 1);
    let band = db
        .zrange_by_score(b"board", 100.0, 150.0)
        .expect("sorted set");
    println!("{} players scored between 100 and 150", band.len());
    let total: f64 = db
        .zrange(b"board", 0, -1, false)
        .expect("sorted set")
        .iter()
        .map(|(_, s)| s)
        .sum();
    // Every increment landed exactly once, whichever thread made it.
    let expected: f64 = (0..4u32)
        .flat_map(|t| (0..250u32).map(move |r| f64::from((r * 7 + t) % 50)))
        .sum();
    assert_eq!(total, expected);
}
