//! SORT and SORT_RO: the elements of a list, set or sorted set, sorted numerically or
//! lexicographically, by themselves or by weights read from other keys (BY), answered
//! or stored as a list, with values read from other keys (GET).
//!
//! BY and GET patterns name keys that only the sorted data reveals, so the dispatcher
//! cannot lock them in advance: a SORT given such a pattern runs with the world stopped
//! (`world_when`), and reads them through `Locked::read_undeclared`.

use std::cmp::Ordering;

use carmine_keyspace::{notify, Entry, ListValue, Locked, Value};
use carmine_resp::Args;

use crate::table::{cmd, flags::*, CommandSpec, KeySpec};
use crate::typed::Collection;
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    vec![
        CommandSpec {
            world_when: Some(reads_other_keys),
            ..cmd(
                "sort",
                -2,
                WRITE | DENYOOM,
                KeySpec::Custom(sort_keys),
                sort,
                "generic",
                "@write @set @sortedset @list @slow @dangerous",
                "Sorts the elements in a list, a set, or a sorted set, optionally storing the result.",
            )
        },
        CommandSpec {
            world_when: Some(reads_other_keys),
            since: "7.0.0",
            ..cmd(
                "sort_ro",
                -2,
                READONLY,
                // Redis reports SORT_RO's keys as movable, as SORT's.
                KeySpec::Custom(sort_keys),
                sort_ro,
                "generic",
                "@read @set @sortedset @list @slow @dangerous",
                "Returns the sorted elements of a list, a set, or a sorted set.",
            )
        },
    ]
}

/// The option words that take arguments, and how many (SORT's grammar, as its key
/// finder and the parser walk it).
fn option_width(word: &[u8]) -> Option<usize> {
    let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
    if is(b"limit") {
        Some(2)
    } else if is(b"get") || is(b"by") || is(b"store") {
        Some(1)
    } else {
        None
    }
}

/// The source key, and the last STORE destination (Redis' sortGetKeys).
fn sort_keys(args: &Args, out: &mut Vec<usize>) {
    out.push(1);
    let mut store = None;
    let mut j = 2;
    while j < args.len() {
        let word = args.get(j).unwrap_or_default();
        match option_width(word) {
            Some(w) if j + w < args.len() => {
                if word.eq_ignore_ascii_case(b"store") {
                    store = Some(j + 1);
                }
                j += w;
            }
            _ => {}
        }
        j += 1;
    }
    out.extend(store);
}

/// Whether the options read keys other than the source: a BY pattern with a `*`, or a
/// GET pattern other than `#`.
fn reads_other_keys(args: &Args) -> bool {
    let mut j = 2;
    while j < args.len() {
        let word = args.get(j).unwrap_or_default();
        match option_width(word) {
            Some(w) if j + w < args.len() => {
                let pattern = args.get(j + 1).unwrap_or_default();
                let reads = if word.eq_ignore_ascii_case(b"by") {
                    pattern.contains(&b'*')
                } else {
                    word.eq_ignore_ascii_case(b"get") && pattern != b"#"
                };
                if reads {
                    return true;
                }
                j += w;
            }
            _ => {}
        }
        j += 1;
    }
    false
}

fn sort(ctx: &mut Ctx<'_, '_>) {
    sort_generic(ctx, false);
}

fn sort_ro(ctx: &mut Ctx<'_, '_>) {
    sort_generic(ctx, true);
}

#[derive(Default)]
struct SortOptions {
    desc: bool,
    alpha: bool,
    limit: Option<(i64, i64)>,
    store: Option<Vec<u8>>,
    by: Option<Vec<u8>>,
    /// BY a pattern without `*`: keep the elements' own order.
    dont_sort: bool,
    gets: Vec<Vec<u8>>,
}

/// Parses the options in Redis' order; `None` once an error reply is written.
fn parse_options(ctx: &mut Ctx<'_, '_>, readonly: bool) -> Option<SortOptions> {
    let mut o = SortOptions::default();
    let full_key_access = ctx
        .session
        .acl_user(ctx.shared)
        .may_read_every_key(ctx.spec, ctx.args);
    let cluster = ctx.shared.cluster_mode();
    let mut j = 2;
    while j < ctx.args.len() {
        let left = ctx.args.len() - j - 1;
        let word = ctx.arg(j).to_ascii_lowercase();
        match word.as_slice() {
            b"asc" => o.desc = false,
            b"desc" => o.desc = true,
            b"alpha" => o.alpha = true,
            b"limit" if left >= 2 => {
                let start = ctx.int_arg(j + 1)?;
                let count = ctx.int_arg(j + 2)?;
                o.limit = Some((start, count));
                j += 2;
            }
            b"store" if !readonly && left >= 1 => {
                o.store = Some(ctx.arg(j + 1).to_vec());
                j += 1;
            }
            b"by" if left >= 1 => {
                let pattern = ctx.arg(j + 1).to_vec();
                if !pattern.contains(&b'*') {
                    o.dont_sort = true;
                } else if cluster {
                    ctx.error("ERR BY option of SORT denied in Cluster mode.");
                    return None;
                } else if !full_key_access {
                    ctx.error("ERR BY option of SORT denied due to insufficient ACL permissions.");
                    return None;
                }
                o.by = Some(pattern);
                j += 1;
            }
            b"get" if left >= 1 => {
                if cluster {
                    ctx.error("ERR GET option of SORT denied in Cluster mode.");
                    return None;
                }
                if !full_key_access {
                    ctx.error("ERR GET option of SORT denied due to insufficient ACL permissions.");
                    return None;
                }
                o.gets.push(ctx.arg(j + 1).to_vec());
                j += 1;
            }
            _ => {
                ctx.syntax_error();
                return None;
            }
        }
        j += 1;
    }
    Some(o)
}

/// Which elements go out: `start..=end` of the sorted vector (empty when end < start),
/// after Redis' clamping of LIMIT's offset and count to the length.
fn output_window(limit: Option<(i64, i64)>, len: usize) -> (i64, i64) {
    let len = len as i64;
    let (offset, count) = limit.unwrap_or((0, -1));
    let mut start = offset.clamp(0, len);
    let count = count.clamp(-1, len);
    let mut end = if count < 0 {
        len - 1
    } else {
        start + count - 1
    };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    (start, end.min(len - 1))
}

/// The elements to sort, copied out of the source. With nothing to sort, a list or sorted
/// set yields only the output window, in its own order (reversed by DESC), and the
/// window becomes the whole vector.
fn load_elements(source: Option<&Value>, o: &SortOptions, window: &mut (i64, i64)) -> Vec<Vec<u8>> {
    let (start, end) = *window;
    let in_window = end >= start;
    let span = |len: usize| -> (usize, usize) {
        // Indexes counted from the end for DESC, as Redis walks the list backwards.
        if o.desc {
            (len - 1 - end as usize, len - 1 - start as usize)
        } else {
            (start as usize, end as usize)
        }
    };
    match source {
        None => Vec::new(),
        Some(Value::List(l)) if o.dont_sort => {
            *window = (0, end - start);
            if !in_window {
                return Vec::new();
            }
            let (a, b) = span(l.len());
            let mut v: Vec<Vec<u8>> = l.range(a, b).into_iter().map(<[u8]>::to_vec).collect();
            if o.desc {
                v.reverse();
            }
            v
        }
        Some(Value::ZSet(z)) if o.dont_sort => {
            *window = (0, end - start);
            if !in_window {
                return Vec::new();
            }
            let (a, b) = span(z.len());
            let mut v: Vec<Vec<u8>> = z.range(a, b + 1).map(|(_, m)| m.to_vec()).collect();
            if o.desc {
                v.reverse();
            }
            v
        }
        Some(Value::List(l)) => l.iter().map(<[u8]>::to_vec).collect(),
        Some(Value::Set(s)) => s.members(),
        Some(Value::ZSet(z)) => z.unordered().map(|(_, m)| m.to_vec()).collect(),
        Some(_) => Vec::new(),
    }
}

fn sort_generic(ctx: &mut Ctx<'_, '_>, readonly: bool) {
    let Some(mut o) = parse_options(ctx, readonly) else {
        return;
    };
    let key = ctx.arg(1);
    let (source, len) = match ctx.l.get(key).map(|e| &e.value) {
        None => (None, 0),
        Some(v @ Value::List(l)) => (Some(v), l.len()),
        Some(v @ Value::Set(s)) => (Some(v), s.len()),
        Some(v @ Value::ZSet(z)) => (Some(v), z.len()),
        Some(_) => return ctx.wrong_type(),
    };
    // A set has no order of its own: what a replica or a script's next run gets must be
    // the same, so a stored or scripted SORT of a set sorts it (as Redis does).
    if o.dont_sort
        && matches!(source, Some(Value::Set(_)))
        && (o.store.is_some() || ctx.session.in_script)
    {
        o.dont_sort = false;
        o.alpha = true;
        o.by = None;
    }
    let mut window = output_window(o.limit, len);
    let mut elements = load_elements(source, &o, &mut window);
    if !o.dont_sort && !sort_elements(ctx.l, &o, &mut elements) {
        return ctx.error("ERR One or more scores can't be converted into double");
    }
    let (start, end) = window;
    let chosen: &[Vec<u8>] = if end >= start {
        &elements[start as usize..=end as usize]
    } else {
        &[]
    };
    match o.store.take() {
        None => reply_sorted(ctx, &o.gets, chosen),
        Some(dst) => store_sorted(ctx, &o.gets, chosen, &dst),
    }
}

/// A sort key: the element's weight or comparison string.
enum Weight {
    Score(f64),
    /// ALPHA with BY: the pattern's value, or nothing (which sorts first).
    Text(Option<Vec<u8>>),
    /// ALPHA without BY: the element itself.
    Itself,
}

/// Sorts `elements` as SORT orders them; false when a weight is not a number.
fn sort_elements(l: &mut Locked<'_>, o: &SortOptions, elements: &mut Vec<Vec<u8>>) -> bool {
    let mut weighed = Vec::with_capacity(elements.len());
    let mut all_numbers = true;
    for e in elements.drain(..) {
        let by = match &o.by {
            Some(pattern) => by_pattern(l, pattern, &e),
            None => Some(e.clone()),
        };
        let weight = if o.alpha {
            match o.by {
                Some(_) => Weight::Text(by),
                None => Weight::Itself,
            }
        } else {
            // A missing weight counts as 0.
            match by.as_deref().map(c_strtod) {
                None => Weight::Score(0.0),
                Some(Some(s)) => Weight::Score(s),
                Some(None) => {
                    all_numbers = false;
                    Weight::Score(0.0)
                }
            }
        };
        weighed.push((weight, e));
    }
    weighed.sort_by(|(wa, a), (wb, b)| {
        let ord = match (wa, wb) {
            // Equal scores fall back on the elements, so the order is deterministic.
            (Weight::Score(x), Weight::Score(y)) => x
                .partial_cmp(y)
                .unwrap_or(Ordering::Equal)
                .then_with(|| a.cmp(b)),
            (Weight::Text(x), Weight::Text(y)) => x.cmp(y),
            _ => a.cmp(b),
        };
        if o.desc {
            ord.reverse()
        } else {
            ord
        }
    });
    elements.extend(weighed.into_iter().map(|(_, e)| e));
    all_numbers
}

/// Reads the string a BY or GET pattern names for `element`: `#` is the element; the
/// first `*` is replaced by it; `key->field` reads a hash field. Missing keys, other
/// types and patterns without `*` read as nothing.
fn by_pattern(l: &mut Locked<'_>, pattern: &[u8], element: &[u8]) -> Option<Vec<u8>> {
    if pattern == b"#" {
        return Some(element.to_vec());
    }
    let star = pattern.iter().position(|&b| b == b'*')?;
    let rest = &pattern[star + 1..];
    let (suffix, field) = match rest.windows(2).position(|w| w == b"->") {
        Some(i) if i + 2 < rest.len() => (&rest[..i], Some(&rest[i + 2..])),
        _ => (rest, None),
    };
    let mut key = Vec::with_capacity(pattern.len() + element.len());
    key.extend_from_slice(&pattern[..star]);
    key.extend_from_slice(element);
    key.extend_from_slice(suffix);
    l.read_undeclared(&key, |e: Option<&Entry>| {
        match (e.map(|e| &e.value), field) {
            (Some(Value::Hash(h)), Some(f)) => h.get(f).map(<[u8]>::to_vec),
            (Some(Value::Str(s)), None) => Some(s.with_bytes(<[u8]>::to_vec)),
            _ => None,
        }
    })
}

/// A weight as C's strtod reads it, whole: leading white space, decimal or hexadecimal,
/// `inf`; the empty string is 0 (strtod converts nothing and stops at the end). NaN,
/// trailing bytes and values out of a double's range are refused.
fn c_strtod(bytes: &[u8]) -> Option<f64> {
    // strtod stops at a NUL: what follows it is never seen.
    let bytes = bytes.split(|&b| b == 0).next().unwrap_or_default();
    if bytes.is_empty() {
        return Some(0.0);
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = unsigned.to_ascii_lowercase();
    let magnitude = if lower == "inf" || lower == "infinity" {
        f64::INFINITY
    } else if let Some(hex) = lower.strip_prefix("0x") {
        hex_float(hex)?
    } else {
        // Rust accepts what strtod's decimal form accepts, and NaN, refused below.
        if !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
            return None;
        }
        let v: f64 = unsigned.parse().ok()?;
        // Out of range (ERANGE): overflow to infinity, or a non-zero value lost below
        // the smallest normal double.
        let nonzero_digits = unsigned
            .split(['e', 'E'])
            .next()
            .is_some_and(|m| m.bytes().any(|b| (b'1'..=b'9').contains(&b)));
        if v.is_infinite() || (nonzero_digits && v.abs() < f64::MIN_POSITIVE) {
            return None;
        }
        v
    };
    if magnitude.is_nan() {
        return None;
    }
    Some(if negative { -magnitude } else { magnitude })
}

/// `hh[.hh][p[+-]dd]` after `0x`.
fn hex_float(text: &str) -> Option<f64> {
    let (mantissa, exponent) = match text.split_once('p') {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars() {
        v = v * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        v += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    let v = v * 2f64.powi(exponent);
    (v.is_finite()).then_some(v)
}

fn reply_sorted(ctx: &mut Ctx<'_, '_>, gets: &[Vec<u8>], chosen: &[Vec<u8>]) {
    let per_element = gets.len().max(1);
    ctx.reply.array(chosen.len() * per_element);
    for e in chosen {
        if gets.is_empty() {
            ctx.reply.bulk(e);
        }
        for pattern in gets {
            match by_pattern(ctx.l, pattern, e) {
                Some(v) => ctx.reply.bulk(&v),
                None => ctx.reply.null(),
            }
        }
    }
}

/// STORE: the result replaces the destination as a list (a GET that finds nothing
/// stores an empty string); an empty result deletes it.
fn store_sorted(ctx: &mut Ctx<'_, '_>, gets: &[Vec<u8>], chosen: &[Vec<u8>], dst: &[u8]) {
    let limits = ctx.shared.keyspace.limits();
    let mut list = ListValue::default();
    for e in chosen {
        if gets.is_empty() {
            list.push(e, false, limits);
        }
        for pattern in gets {
            let v = by_pattern(ctx.l, pattern, e).unwrap_or_default();
            list.push(&v, false, limits);
        }
    }
    let n = list.len();
    if n > 0 {
        ctx.l.insert(dst, Entry::new(list.wrap()));
        ctx.notify(notify::LIST, "sortstore", dst);
    } else if ctx.l.remove(dst).is_some() {
        ctx.notify(notify::GENERIC, "del", dst);
    }
    ctx.reply.int(n as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_read_as_strtod_reads_them() {
        assert_eq!(c_strtod(b""), Some(0.0));
        assert_eq!(c_strtod(b"  12.5"), Some(12.5));
        assert_eq!(c_strtod(b"-3"), Some(-3.0));
        assert_eq!(c_strtod(b"1e3"), Some(1000.0));
        assert_eq!(c_strtod(b".5"), Some(0.5));
        assert_eq!(c_strtod(b"0x1A"), Some(26.0));
        assert_eq!(c_strtod(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(c_strtod(b"12\0junk"), Some(12.0));
        assert_eq!(c_strtod(b"nan"), None);
        assert_eq!(c_strtod(b"12 "), None);
        assert_eq!(c_strtod(b"abc"), None);
        assert_eq!(c_strtod(b"1e400"), None);
        assert_eq!(c_strtod(b"1e-400"), None);
        assert_eq!(c_strtod(b" "), None);
    }

    #[test]
    fn the_window_clamps_as_redis_does() {
        assert_eq!(output_window(None, 5), (0, 4));
        assert_eq!(output_window(Some((1, 2)), 5), (1, 2));
        assert_eq!(output_window(Some((-5, 2)), 5), (0, 1));
        assert_eq!(output_window(Some((3, -1)), 5), (3, 4));
        assert_eq!(output_window(Some((10, 2)), 5), (4, 3));
        assert_eq!(output_window(Some((0, 0)), 5), (0, -1));
        assert_eq!(output_window(Some((i64::MIN, i64::MAX)), 5), (0, 4));
        assert_eq!(output_window(None, 0), (-1, -2));
    }

    #[test]
    fn keys_are_the_source_and_the_last_store() {
        let args = |v: &[&str]| Args::from_slices(v);
        let mut out = Vec::new();
        sort_keys(
            &args(&["SORT", "k", "LIMIT", "0", "1", "STORE", "a", "store", "b"]),
            &mut out,
        );
        assert_eq!(out, [1, 8]);
        out.clear();
        // "store" as BY's pattern is no option.
        sort_keys(&args(&["SORT", "k", "BY", "store", "GET", "#"]), &mut out);
        assert_eq!(out, [1]);
        assert!(reads_other_keys(&args(&["SORT", "k", "BY", "w_*"])));
        assert!(!reads_other_keys(&args(&[
            "SORT", "k", "BY", "nosort", "GET", "#"
        ])));
        assert!(reads_other_keys(&args(&[
            "SORT", "k", "GET", "#", "GET", "o_*"
        ])));
    }
}
