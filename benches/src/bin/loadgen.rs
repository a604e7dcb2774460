//! A lean pipelined load generator for SET and GET, for measuring a server that
//! redis-benchmark cannot saturate.
//!
//!     loadgen --port 6379 [--host 127.0.0.1] [--threads 4] [--clients 256] [--pipeline 16]
//!             [--test set|get] [--keyspace 100000] [--data 3] [--seconds 10]
//!
//! On 16 cores, redis-benchmark's `--threads` tops out near 250k pipelined requests per
//! second per thread: with 8 event loops on 8 cores Carmine's loops were half idle while
//! redis-benchmark's 8 threads were 88% busy, so redis-benchmark measured itself. This
//! client does only what a load needs: each connection keeps `--pipeline` commands in
//! flight, written with one `write` per batch, and counts replies without decoding more
//! than their lengths. Its keys are redis-benchmark's (`key:` and 12 digits, uniform over
//! `--keyspace`), so a GET run finds the keys a SET run wrote. It prints requests per
//! second at the end; a caller can also read the server's `total_commands_processed`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

#[derive(Clone, Copy, PartialEq)]
enum Test {
    Set,
    Get,
}

struct Options {
    host: String,
    port: u16,
    threads: usize,
    clients: usize,
    pipeline: usize,
    test: Test,
    keyspace: u64,
    data: usize,
    seconds: f64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        host: "127.0.0.1".into(),
        port: 6379,
        threads: 1,
        clients: 50,
        pipeline: 1,
        test: Test::Set,
        keyspace: 100_000,
        data: 3,
        seconds: 10.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(name) = args.next() {
        let value = args.next().ok_or(format!("{name} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{name} {value}: {e}");
        match name.as_str() {
            "--host" => options.host = value,
            "--port" => options.port = value.parse().map_err(|e| bad(&e))?,
            "--threads" => options.threads = value.parse().map_err(|e| bad(&e))?,
            "--clients" => options.clients = value.parse().map_err(|e| bad(&e))?,
            "--pipeline" => options.pipeline = value.parse().map_err(|e| bad(&e))?,
            "--keyspace" => options.keyspace = value.parse().map_err(|e| bad(&e))?,
            "--data" => options.data = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => options.seconds = value.parse().map_err(|e| bad(&e))?,
            "--test" => {
                options.test = match value.to_ascii_lowercase().as_str() {
                    "set" => Test::Set,
                    "get" => Test::Get,
                    _ => return Err(bad(&"only set and get")),
                }
            }
            _ => return Err(format!("unknown option {name}")),
        }
    }
    if options.threads == 0 || options.clients < options.threads || options.pipeline == 0 {
        return Err("need threads >= 1, clients >= threads, pipeline >= 1".into());
    }
    if options.keyspace == 0 || options.keyspace > 1_000_000_000_000 {
        return Err("keyspace must be 1 ..= 10^12 (12-digit keys)".into());
    }
    if !(options.seconds > 0.0 && options.seconds.is_finite()) {
        return Err("seconds must be positive".into());
    }
    Ok(options)
}

/// Counts complete RESP2 replies at the front of `buf` (simple strings, errors, integers,
/// bulk strings: what SET and GET answer) and returns how many and the bytes they span.
fn count_replies(buf: &[u8]) -> Result<(usize, usize), String> {
    let (mut replies, mut at) = (0, 0);
    while at < buf.len() {
        let Some(line_end) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let header = &buf[at..at + line_end];
        let mut end = at + line_end + 2;
        match header.first() {
            Some(b'+' | b'-' | b':') => {}
            Some(b'$') => {
                let length: i64 = std::str::from_utf8(&header[1..])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad bulk header {header:?}"))?;
                if length >= 0 {
                    let length = usize::try_from(length).map_err(|e| e.to_string())?;
                    end += length + 2;
                    if end > buf.len() {
                        break;
                    }
                }
            }
            _ => return Err(format!("unexpected reply {header:?}")),
        }
        at = end;
        replies += 1;
    }
    Ok((replies, at))
}

/// What all threads did, summed once per poll turn.
#[derive(Default)]
struct Counters {
    replies: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    polls: AtomicU64,
}

/// One thread's counts since it last added them to [`Counters`].
#[derive(Default)]
struct TurnCounts {
    replies: u64,
    reads: u64,
    writes: u64,
}

struct Connection {
    stream: TcpStream,
    out: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    in_flight: usize,
}

/// One batch of `pipeline` commands on random keys, replacing `out`.
fn fill_batch(out: &mut Vec<u8>, options: &Options, rng: &mut fastrand::Rng) {
    out.clear();
    for _ in 0..options.pipeline {
        let key = rng.u64(0..options.keyspace);
        match options.test {
            Test::Set => {
                out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$16\r\n");
                out.extend_from_slice(format!("key:{key:012}\r\n${}\r\n", options.data).as_bytes());
                out.resize(out.len() + options.data, b'x');
                out.extend_from_slice(b"\r\n");
            }
            Test::Get => {
                out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$16\r\n");
                out.extend_from_slice(format!("key:{key:012}\r\n").as_bytes());
            }
        }
    }
}

/// Writes what is left of the connection's batch, up to what the socket takes.
fn flush(connection: &mut Connection, counts: &mut TurnCounts) -> io::Result<()> {
    while connection.written < connection.out.len() {
        counts.writes += 1;
        match connection
            .stream
            .write(&connection.out[connection.written..])
        {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => connection.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn start_batch(
    connection: &mut Connection,
    options: &Options,
    rng: &mut fastrand::Rng,
    counts: &mut TurnCounts,
) -> io::Result<()> {
    fill_batch(&mut connection.out, options, rng);
    connection.written = 0;
    connection.in_flight = options.pipeline;
    flush(connection, counts)
}

/// Reads what arrived; returns the replies it completed.
fn receive(connection: &mut Connection, counts: &mut TurnCounts) -> Result<usize, String> {
    let mut chunk = [0u8; 64 * 1024];
    let mut replies = 0;
    loop {
        counts.reads += 1;
        match connection.stream.read(&mut chunk) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(n) => {
                connection.input.extend_from_slice(&chunk[..n]);
                let (count, used) = count_replies(&connection.input)?;
                connection.input.drain(..used);
                replies += count;
                // A short read drained the socket: the next data raises a new edge.
                if n < chunk.len() {
                    return Ok(replies);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(replies),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn run_thread(
    options: &Options,
    clients: usize,
    seed: u64,
    stop: &AtomicBool,
    counters: &Counters,
) -> Result<(), String> {
    let address = (options.host.as_str(), options.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut counts = TurnCounts::default();
    let mut connections = Vec::with_capacity(clients);
    for index in 0..clients {
        let stream = std::net::TcpStream::connect(address).map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut stream = TcpStream::from_std(stream);
        poll.registry()
            .register(
                &mut stream,
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        connections.push(Connection {
            stream,
            out: Vec::new(),
            written: 0,
            input: Vec::new(),
            in_flight: 0,
        });
    }
    for connection in &mut connections {
        start_batch(connection, options, &mut rng, &mut counts).map_err(|e| e.to_string())?;
    }
    let mut events = Events::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        for event in &events {
            let Some(connection) = connections.get_mut(event.token().0) else {
                continue;
            };
            if event.is_writable() {
                flush(connection, &mut counts).map_err(|e| e.to_string())?;
            }
            if event.is_readable() {
                let replies = receive(connection, &mut counts)?;
                connection.in_flight = connection.in_flight.saturating_sub(replies);
                counts.replies += replies as u64;
                if connection.in_flight == 0 {
                    start_batch(connection, options, &mut rng, &mut counts)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        let turn = std::mem::take(&mut counts);
        counters.replies.fetch_add(turn.replies, Ordering::Relaxed);
        counters.reads.fetch_add(turn.reads, Ordering::Relaxed);
        counters.writes.fetch_add(turn.writes, Ordering::Relaxed);
        counters.polls.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// This process's user and system CPU seconds, from `/proc/self/stat` (Linux's clock
/// tick there is 1/100 s on every architecture it exports to user space).
fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may itself hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? / 100.0, ticks(12)? / 100.0))
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => Arc::new(options),
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let threads: Vec<_> = (0..options.threads)
        .map(|t| {
            // Spread the clients over the threads, the first ones taking the remainder.
            let clients = options.clients / options.threads
                + usize::from(t < options.clients % options.threads);
            let (options, stop, counters) = (
                Arc::clone(&options),
                Arc::clone(&stop),
                Arc::clone(&counters),
            );
            std::thread::spawn(move || {
                run_thread(&options, clients, 0x5eed + t as u64, &stop, &counters)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(options.seconds));
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut failed = false;
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("loadgen: {e}");
                failed = true;
            }
            Err(_) => failed = true,
        }
    }
    let replies = counters.replies.load(Ordering::Relaxed);
    let per_reply = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / replies.max(1) as f64;
    println!("{:.0} requests/s", replies as f64 / elapsed);
    println!(
        "per request: {:.3} reads, {:.3} writes, {:.3} polls",
        per_reply(&counters.reads),
        per_reply(&counters.writes),
        per_reply(&counters.polls)
    );
    if let Some((user, system)) = cpu_seconds() {
        println!(
            "cpu per request: user {:.2} us, system {:.2} us",
            user * 1e6 / replies.max(1) as f64,
            system * 1e6 / replies.max(1) as f64
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::count_replies;

    #[test]
    fn counts_whole_replies_and_leaves_partial_ones() {
        assert_eq!(count_replies(b"+OK\r\n+OK\r\n+O").unwrap(), (2, 10));
        assert_eq!(
            count_replies(b"$3\r\nabc\r\n$-1\r\n$3\r\nab").unwrap(),
            (2, 14)
        );
        assert_eq!(count_replies(b":12\r\n-ERR x\r\n$3\r\n").unwrap(), (2, 13));
        assert!(count_replies(b"*1\r\n").is_err());
        assert!(count_replies(b"$x\r\n").is_err());
    }
}
