//! Latency: per-command latency histograms (LATENCY HISTOGRAM, INFO latencystats, with
//! `latency-tracking`) and the latency monitor (LATENCY LATEST / HISTORY / RESET /
//! GRAPH / DOCTOR): events that took at least `latency-monitor-threshold` ms.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::state::CmdStat;
use crate::table::{cmd, flags::*, CommandSpec, KeySpec};
use crate::Ctx;

/// Buckets of a latency histogram: bucket `i` counts calls that took less than 2^i µs
/// (and at least 2^(i-1)); the last one takes everything longer.
pub const BUCKETS: usize = 36;

/// A histogram of call durations, one atomic per power of two of microseconds.
pub struct Histogram([AtomicU64; BUCKETS]);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Histogram {
    #[inline]
    pub fn record(&self, micros: u64) {
        // 0-1 µs: bucket 0; [2^(i-1), 2^i): bucket i.
        let i = (u64::BITS - micros.leading_zeros()) as usize;
        // Only the owning thread records (see `ThreadStats::bump`).
        crate::ThreadStats::bump(&self.0[i.min(BUCKETS - 1)], 1);
    }

    pub fn reset(&self) {
        for b in &self.0 {
            b.store(0, Ordering::Relaxed);
        }
    }

    fn counts(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// Several threads' histograms of one command added together.
#[derive(Clone, Copy)]
pub struct Summed {
    pub calls: u64,
    buckets: [u64; BUCKETS],
}

impl Summed {
    pub fn new() -> Summed {
        Summed {
            calls: 0,
            buckets: [0; BUCKETS],
        }
    }

    pub fn add(&mut self, stat: &CmdStat) {
        self.calls += stat.calls.load(Ordering::Relaxed);
        for (s, c) in self.buckets.iter_mut().zip(stat.histogram.counts()) {
            *s += c;
        }
    }

    /// The upper bound (µs) of the bucket where `share` of the calls are reached.
    fn percentile(&self, share: f64) -> f64 {
        let total: u64 = self.buckets.iter().sum();
        let want = (share * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return (1u64 << i) as f64;
            }
        }
        0.0
    }

    /// `calls N histogram_usec {bound cumulative ...}`, as LATENCY HISTOGRAM writes it.
    fn reply(&self, ctx: &mut Ctx<'_, '_>) {
        let mut points = Vec::new();
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            if *n > 0 {
                cumulative += n;
                points.push((1u64 << i, cumulative));
            }
        }
        ctx.reply.map(2);
        ctx.reply.bulk(b"calls");
        ctx.reply.int(self.calls as i64);
        ctx.reply.bulk(b"histogram_usec");
        ctx.reply.map(points.len());
        for (bound, count) in points {
            ctx.reply.int(bound as i64);
            ctx.reply.int(count as i64);
        }
    }

    /// INFO latencystats' `p50=...,p99=...` for the configured percentiles.
    pub fn info_line(&self, percentiles: &[f64]) -> String {
        percentiles
            .iter()
            .map(|p| format!("p{}={:.3}", trim_float(*p), self.percentile(p / 100.0)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for Summed {
    fn default() -> Self {
        Summed::new()
    }
}

fn trim_float(p: f64) -> String {
    let s = format!("{p}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// Redis keeps this many samples per event.
const SAMPLES: usize = 160;

#[derive(Default)]
struct Series {
    /// (unix seconds, ms), oldest first; samples of one second are merged (the max).
    samples: VecDeque<(u64, u64)>,
    max: u64,
}

/// The latency monitor's events.
#[derive(Default)]
pub struct Monitor {
    events: Mutex<BTreeMap<&'static str, Series>>,
}

impl Monitor {
    /// Records that `event` took `ms`, if the monitor's threshold says so.
    pub fn observe(&self, shared: &crate::Shared, event: &'static str, ms: u64) {
        let threshold = shared
            .config
            .tunables
            .latency_monitor_threshold
            .load(Ordering::Relaxed);
        if threshold == 0 || ms < threshold {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut events = self.events.lock();
        let s = events.entry(event).or_default();
        match s.samples.back_mut() {
            Some(last) if last.0 == now => last.1 = last.1.max(ms),
            _ => s.samples.push_back((now, ms)),
        }
        if s.samples.len() > SAMPLES {
            s.samples.pop_front();
        }
        s.max = s.max.max(ms);
    }
}

pub fn commands() -> Vec<CommandSpec> {
    vec![CommandSpec {
        subcommands: &[
            "doctor",
            "graph",
            "help",
            "histogram",
            "history",
            "latest",
            "reset",
        ],
        since: "2.8.13",
        ..cmd(
            "latency",
            -2,
            ADMIN | NOSCRIPT | LOADING | STALE,
            KeySpec::None,
            latency,
            "server",
            "@admin @slow @dangerous",
            "A container for latency diagnostics commands.",
        )
    }]
}

const LATENCY_HELP: &[&str] = &[
    "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DOCTOR",
    "    Return a human readable latency analysis report.",
    "GRAPH <event>",
    "    Return an ASCII latency graph for the <event> class.",
    "HISTORY <event>",
    "    Return time-latency samples for the <event> class.",
    "LATEST",
    "    Return the latest latency samples for all events.",
    "RESET [<event> ...]",
    "    Reset latency data of one or more <event> classes.",
    "    (default: reset all data for all event classes)",
    "HISTOGRAM [COMMAND ...]",
    "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
    "    If no commands are specified then all histograms are replied.",
    "HELP",
    "    Prints this help.",
];

fn latency(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    let argc = ctx.args.len();
    match (sub.as_slice(), argc) {
        (b"help", 2) => crate::connection::help_reply(ctx, LATENCY_HELP),
        (b"help", _) => ctx.error("ERR wrong number of arguments for 'latency|help' command"),
        (b"latest", 2) => {
            let events = ctx.shared.latency.events.lock();
            let rows: Vec<(&str, u64, u64, u64)> = events
                .iter()
                .filter_map(|(name, s)| s.samples.back().map(|l| (*name, l.0, l.1, s.max)))
                .collect();
            drop(events);
            ctx.reply.array(rows.len());
            for (name, time, ms, max) in rows {
                ctx.reply.array(4);
                ctx.reply.bulk(name.as_bytes());
                ctx.reply.int(time as i64);
                ctx.reply.int(ms as i64);
                ctx.reply.int(max as i64);
            }
        }
        (b"history", 3) => {
            let name = String::from_utf8_lossy(ctx.arg(2)).into_owned();
            let samples: Vec<(u64, u64)> = ctx
                .shared
                .latency
                .events
                .lock()
                .get(name.as_str())
                .map(|s| s.samples.iter().copied().collect())
                .unwrap_or_default();
            ctx.reply.array(samples.len());
            for (time, ms) in samples {
                ctx.reply.array(2);
                ctx.reply.int(time as i64);
                ctx.reply.int(ms as i64);
            }
        }
        (b"reset", _) => {
            let mut events = ctx.shared.latency.events.lock();
            let n = if argc == 2 {
                let n = events.len();
                events.clear();
                n
            } else {
                (2..argc)
                    .filter(|&i| {
                        let name = String::from_utf8_lossy(ctx.arg(i)).into_owned();
                        events.remove(name.as_str()).is_some()
                    })
                    .count()
            };
            drop(events);
            ctx.reply.int(n as i64);
        }
        (b"graph", 3) => {
            let name = String::from_utf8_lossy(ctx.arg(2)).into_owned();
            let graph = ctx
                .shared
                .latency
                .events
                .lock()
                .get(name.as_str())
                .map(|s| graph(&name, s));
            match graph {
                Some(g) => ctx.reply.verbatim(g.as_bytes()),
                None => ctx.error(&format!("ERR No samples available for event '{name}'")),
            }
        }
        (b"doctor", 2) => {
            let report = doctor(ctx);
            ctx.reply.verbatim(report.as_bytes());
        }
        (b"histogram", _) => histogram(ctx),
        _ => ctx.unknown_subcommand(),
    }
}

/// LATENCY HISTOGRAM [command ...]: every command called so far, or the named ones
/// (a container names all its subcommands; `parent|sub` one of them; unknown names are
/// skipped).
fn histogram(ctx: &mut Ctx<'_, '_>) {
    let all = crate::server::command_stats(ctx.shared);
    let wanted: Vec<String> = (2..ctx.args.len())
        .map(|i| String::from_utf8_lossy(ctx.arg(i)).to_lowercase())
        .collect();
    let chosen: Vec<(String, Summed)> = all
        .into_iter()
        .map(|(name, t)| (name, t.summed))
        .filter(|(name, s)| {
            s.calls > 0
                && (wanted.is_empty()
                    || wanted
                        .iter()
                        .any(|w| w == name || name.split('|').next() == Some(w.as_str())))
        })
        .collect();
    ctx.reply.map(chosen.len());
    for (name, s) in chosen {
        ctx.reply.bulk(name.as_bytes());
        s.reply(ctx);
    }
}

fn graph(name: &str, s: &Series) -> String {
    let mut out = format!(
        "{name} - high {} ms, low {} ms (all time high {} ms)\n",
        s.samples.iter().map(|x| x.1).max().unwrap_or(0),
        s.samples.iter().map(|x| x.1).min().unwrap_or(0),
        s.max
    );
    out.push_str(&"-".repeat(80));
    out.push('\n');
    let high = s.samples.iter().map(|x| x.1).max().unwrap_or(1).max(1);
    for row in (1..=4u64).rev() {
        let line: String = s
            .samples
            .iter()
            .map(|x| if x.1 * 4 >= row * high { '#' } else { ' ' })
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn doctor(ctx: &Ctx<'_, '_>) -> String {
    let events = ctx.shared.latency.events.lock();
    if events.is_empty() {
        return "Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit. I honestly think you ought to sleep better.\n".to_string();
    }
    let mut out = String::from(
        "Dave, I have observed latency spikes in this Redis instance. You don't mind talking about it, do you Dave?\n\n",
    );
    for (i, (name, s)) in events.iter().enumerate() {
        let avg = s.samples.iter().map(|x| x.1).sum::<u64>() / s.samples.len().max(1) as u64;
        out.push_str(&format!(
            "{}. {name}: {} latency spikes (average {avg}ms, worst all time {}ms).\n",
            i + 1,
            s.samples.len(),
            s.max
        ));
    }
    out
}
