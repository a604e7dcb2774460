//! A lean pipelined load generator running redis-benchmark's tests, for measuring a
//! server that redis-benchmark cannot saturate.
//!
//!     loadgen --port 6379 [--host 127.0.0.1] [--threads 4] [--clients 256] [--pipeline 16]
//!             [--test set|get|incr|lpush|rpush|hset|sadd|zadd|mset] [--keyspace 100000]
//!             [--data 3] [--seconds 10] [--command 'EVALSHA <sha1> 1 key:__rand_int__']
//!
//! On 16 cores, redis-benchmark's `--threads` tops out near 250k pipelined requests per
//! second per thread: with 8 event loops on 8 cores Carmine's loops were half idle while
//! redis-benchmark's 8 threads were 88% busy, so redis-benchmark measured itself. This
//! client does only what a load needs: each connection keeps `--pipeline` commands in
//! flight, written with one `write` per batch, and counts replies without decoding more
//! than their lengths. Its commands are redis-benchmark's with `-r` (`key:` and 12 digits,
//! uniform over `--keyspace`), so a GET run finds the keys a SET run wrote. It prints requests per
//! second at the end; a caller can also read the server's `total_commands_processed`.
//! `--command` sends any command instead of a test's (its words split on spaces, with
//! `__rand_int__` replaced as in a test); an error reply stops the run, so a measurement
//! never counts refusals as answers.

use std::io::{self, ErrorKind, Read, Write};
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// redis-benchmark's command for a `-t` test name, `__rand_int__` standing for a
/// 12-digit random number and `DATA` for the value.
fn test_command(test: &str) -> Option<Vec<&'static str>> {
    Some(match test {
        "set" => vec!["SET", "key:__rand_int__", "DATA"],
        "get" => vec!["GET", "key:__rand_int__"],
        "incr" => vec!["INCR", "counter:__rand_int__"],
        "lpush" => vec!["LPUSH", "mylist", "DATA"],
        "rpush" => vec!["RPUSH", "mylist", "DATA"],
        "hset" => vec!["HSET", "myhash", "element:__rand_int__", "DATA"],
        "sadd" => vec!["SADD", "myset", "element:__rand_int__"],
        "zadd" => vec!["ZADD", "myzset", "__rand_int__", "element:__rand_int__"],
        "mset" => {
            let mut command = vec!["MSET"];
            for _ in 0..10 {
                command.extend(["key:__rand_int__", "DATA"]);
            }
            command
        }
        _ => return None,
    })
}

/// One command in RESP, and where in it each `__rand_int__` starts.
struct Template {
    bytes: Vec<u8>,
    random_at: Vec<usize>,
}

const RANDOM_PLACEHOLDER: &[u8] = b"__rand_int__";

impl Template {
    fn new(arguments: &[&str], data: usize) -> Template {
        let mut bytes = format!("*{}\r\n", arguments.len()).into_bytes();
        let mut random_at = Vec::new();
        for argument in arguments {
            let argument = if *argument == "DATA" {
                vec![b'x'; data]
            } else {
                argument.as_bytes().to_vec()
            };
            bytes.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
            let start = bytes.len();
            bytes.extend_from_slice(&argument);
            bytes.extend_from_slice(b"\r\n");
            let mut at = 0;
            while let Some(found) = argument[at..]
                .windows(RANDOM_PLACEHOLDER.len())
                .position(|w| w == RANDOM_PLACEHOLDER)
            {
                random_at.push(start + at + found);
                at += found + RANDOM_PLACEHOLDER.len();
            }
        }
        Template { bytes, random_at }
    }
}

struct Options {
    host: String,
    port: u16,
    threads: usize,
    clients: usize,
    pipeline: usize,
    template: Template,
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
        template: Template {
            bytes: Vec::new(),
            random_at: Vec::new(),
        },
        keyspace: 100_000,
        data: 3,
        seconds: 10.0,
    };
    let mut test = String::from("set");
    let mut command_line = None;
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
            "--test" => test = value,
            "--command" => command_line = Some(value),
            _ => return Err(format!("unknown option {name}")),
        }
    }
    let command = match &command_line {
        Some(line) => line.split_whitespace().collect(),
        None => test_command(&test.to_ascii_lowercase()).ok_or(format!(
            "--test {test}: one of set get incr lpush rpush hset sadd zadd mset"
        ))?,
    };
    if command.is_empty() {
        return Err("--command needs a command".into());
    }
    options.template = Template::new(&command, options.data);
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

/// Counts complete RESP2 replies at the front of `buf` (simple strings, integers, bulk
/// strings: what SET and GET answer) and returns how many and the bytes they span. An
/// error reply is an error: the load is not what the caller meant to measure.
fn count_replies(buf: &[u8]) -> Result<(usize, usize), String> {
    let (mut replies, mut at) = (0, 0);
    while at < buf.len() {
        let Some(line_end) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let header = &buf[at..at + line_end];
        let mut end = at + line_end + 2;
        match header.first() {
            Some(b'+' | b':') => {}
            Some(b'-') => {
                return Err(format!(
                    "the server replied {}",
                    String::from_utf8_lossy(header)
                ))
            }
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

/// One batch of `pipeline` commands, each placeholder a new random number below
/// `keyspace`, replacing `out`.
fn fill_batch(out: &mut Vec<u8>, options: &Options, rng: &mut fastrand::Rng) {
    out.clear();
    for _ in 0..options.pipeline {
        let start = out.len();
        out.extend_from_slice(&options.template.bytes);
        for &at in &options.template.random_at {
            let mut number = rng.u64(0..options.keyspace);
            for digit in out[start + at..start + at + RANDOM_PLACEHOLDER.len()]
                .iter_mut()
                .rev()
            {
                *digit = b'0' + (number % 10) as u8;
                number /= 10;
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
    use super::{count_replies, fill_batch, test_command, Options, Template};

    #[test]
    fn batches_are_redis_benchmark_commands_with_random_numbers() {
        let template = Template::new(&test_command("hset").unwrap(), 3);
        assert_eq!(template.random_at.len(), 1);
        let options = Options {
            host: String::new(),
            port: 0,
            threads: 1,
            clients: 1,
            pipeline: 2,
            template,
            keyspace: 100,
            data: 3,
            seconds: 1.0,
        };
        let mut out = Vec::new();
        fill_batch(&mut out, &options, &mut fastrand::Rng::with_seed(7));
        let text = String::from_utf8(out).unwrap();
        let commands: Vec<&str> = text.split("*4\r\n").filter(|c| !c.is_empty()).collect();
        assert_eq!(commands.len(), 2);
        for command in commands {
            let parts: Vec<&str> = command.split("\r\n").collect();
            assert_eq!(parts[..4], ["$4", "HSET", "$6", "myhash"]);
            assert_eq!(parts[4], "$20");
            let number = parts[5].strip_prefix("element:").unwrap();
            assert_eq!(number.len(), 12);
            assert!(number.parse::<u64>().unwrap() < 100);
            assert_eq!(parts[6..8], ["$3", "xxx"]);
        }
        let mset = Template::new(&test_command("mset").unwrap(), 3);
        assert_eq!(mset.random_at.len(), 10);
        assert!(mset.bytes.starts_with(b"*21\r\n$4\r\nMSET\r\n"));
    }

    #[test]
    fn counts_whole_replies_and_leaves_partial_ones() {
        assert_eq!(count_replies(b"+OK\r\n+OK\r\n+O").unwrap(), (2, 10));
        assert_eq!(
            count_replies(b"$3\r\nabc\r\n$-1\r\n$3\r\nab").unwrap(),
            (2, 14)
        );
        assert_eq!(count_replies(b":12\r\n+OK\r\n$3\r\n").unwrap(), (2, 10));
        // A refusal is no answer to count.
        assert!(count_replies(b":12\r\n-NOSCRIPT x\r\n").is_err());
        assert!(count_replies(b"*1\r\n").is_err());
        assert!(count_replies(b"$x\r\n").is_err());
    }
}
