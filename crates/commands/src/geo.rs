//! Geo: GEOADD, GEOPOS, GEODIST, GEOHASH, GEOSEARCH, GEOSEARCHSTORE, GEORADIUS,
//! GEORADIUSBYMEMBER (and the _RO forms), on sorted sets whose scores are Redis' 52-bit
//! interleaved geohashes, so a geo key moves between Carmine and Redis unchanged.

use carmine_keyspace::notify;
use carmine_keyspace::ops::parse_float;
use carmine_keyspace::{Entry, Value, ZSetValue};

use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::typed::{read, write};
use crate::Ctx;

const LAT_MIN: f64 = -85.05112878;
const LAT_MAX: f64 = 85.05112878;
const LON_MIN: f64 = -180.0;
const LON_MAX: f64 = 180.0;
const STEP: u32 = 26;
const EARTH_RADIUS_M: f64 = 6372797.560856;

pub fn commands() -> Vec<CommandSpec> {
    let g = "geo";
    let ws = "@write @geo @slow";
    let rs = "@read @geo @slow";
    vec![
        cmd("geoadd", -5, WRITE | DENYOOM, keys(1, 1, 1), geoadd, g, ws, "Adds one or more members to a geospatial index."),
        cmd("geopos", -2, READONLY, keys(1, 1, 1), geopos, g, rs, "Returns the longitude and latitude of members from a geospatial index."),
        cmd("geodist", -4, READONLY, keys(1, 1, 1), geodist, g, rs, "Returns the distance between two members of a geospatial index."),
        cmd("geohash", -2, READONLY, keys(1, 1, 1), geohash, g, rs, "Returns members from a geospatial index as geohash strings."),
        cmd("geosearch", -7, READONLY, keys(1, 1, 1), geosearch, g, rs, "Queries a geospatial index for members inside an area of a box or a circle."),
        cmd("geosearchstore", -8, WRITE | DENYOOM, keys(1, 2, 1), geosearchstore, g, ws, "Queries a geospatial index for members inside an area of a box or a circle, optionally stores the result."),
        cmd("georadius", -6, WRITE | DENYOOM, KeySpec::Custom(radius_keys), georadius, g, ws, "Queries a geospatial index for members within a distance from a coordinate, optionally stores the result."),
        cmd("georadius_ro", -6, READONLY, keys(1, 1, 1), georadius_ro, g, rs, "Returns members from a geospatial index that are within a distance from a coordinate."),
        cmd("georadiusbymember", -5, WRITE | DENYOOM, KeySpec::Custom(radius_keys), georadiusbymember, g, ws, "Queries a geospatial index for members within a distance from a member, optionally stores the result."),
        cmd("georadiusbymember_ro", -5, READONLY, keys(1, 1, 1), georadiusbymember_ro, g, rs, "Returns members from a geospatial index that are within a distance from a member."),
    ]
}

/// GEORADIUS keys: the source, plus STORE/STOREDIST destinations.
fn radius_keys(args: &carmine_resp::Args, out: &mut Vec<usize>) {
    out.push(1);
    for i in 2..args.len().saturating_sub(1) {
        let a = args.get(i).unwrap_or_default();
        if a.eq_ignore_ascii_case(b"STORE") || a.eq_ignore_ascii_case(b"STOREDIST") {
            out.push(i + 1);
        }
    }
}

fn spread(v: u32) -> u64 {
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

fn squash(v: u64) -> u32 {
    let mut x = v & 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF;
    ((x | (x >> 16)) & 0x0000_0000_FFFF_FFFF) as u32
}

/// Latitude bits at even positions, longitude at odd, as Redis' interleave64.
fn encode(lon: f64, lat: f64, lat_min: f64, lat_max: f64) -> u64 {
    let lat_off = (lat - lat_min) / (lat_max - lat_min) * f64::from(1u32 << STEP);
    let lon_off = (lon - LON_MIN) / (LON_MAX - LON_MIN) * f64::from(1u32 << STEP);
    spread(lat_off as u32) | (spread(lon_off as u32) << 1)
}

/// The centre of a hash's cell, clamped to the valid ranges.
fn decode(bits: u64) -> (f64, f64) {
    let (ilat, ilon) = (squash(bits), squash(bits >> 1));
    let scale = f64::from(1u32 << STEP);
    let lat_min = LAT_MIN + (f64::from(ilat) / scale) * (LAT_MAX - LAT_MIN);
    let lat_max = LAT_MIN + ((f64::from(ilat) + 1.0) / scale) * (LAT_MAX - LAT_MIN);
    let lon_min = LON_MIN + (f64::from(ilon) / scale) * (LON_MAX - LON_MIN);
    let lon_max = LON_MIN + ((f64::from(ilon) + 1.0) / scale) * (LON_MAX - LON_MIN);
    let lon = ((lon_min + lon_max) / 2.0).clamp(LON_MIN, LON_MAX);
    let lat = ((lat_min + lat_max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    (lon, lat)
}

fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS_M * (lat2.to_radians() - lat1.to_radians()).abs()
}

/// Haversine distance in metres, as Redis computes it.
fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let v = ((lon2.to_radians() - lon1.to_radians()) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let (lat1r, lat2r) = (lat1.to_radians(), lat2.to_radians());
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

/// A coordinate as GEOPOS prints it: 17 decimals, trailing zeros removed.
fn human(v: f64) -> String {
    let s = format!("{v:.17}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// A coordinate: a bulk string in RESP2, a double (same text) in RESP3.
fn reply_coord(ctx: &mut Ctx<'_, '_>, v: f64) {
    ctx.reply.double_text(human(v).as_bytes());
}

fn unit_factor(ctx: &mut Ctx<'_, '_>, i: usize) -> Option<f64> {
    let u = ctx.arg(i).to_ascii_lowercase();
    match u.as_slice() {
        b"m" => Some(1.0),
        b"km" => Some(1000.0),
        b"ft" => Some(0.3048),
        b"mi" => Some(1609.34),
        _ => {
            ctx.error("ERR unsupported unit provided. please use M, KM, FT, MI");
            None
        }
    }
}

fn lonlat(ctx: &mut Ctx<'_, '_>, i: usize) -> Option<(f64, f64)> {
    let (Some(lon), Some(lat)) = (parse_float(ctx.arg(i)), parse_float(ctx.arg(i + 1))) else {
        ctx.error("ERR value is not a valid float");
        return None;
    };
    if !(LON_MIN..=LON_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        ctx.error(&format!(
            "ERR invalid longitude,latitude pair {lon:.6},{lat:.6}"
        ));
        return None;
    }
    Some((lon, lat))
}

fn geoadd(ctx: &mut Ctx<'_, '_>) {
    let (mut nx, mut xx, mut ch) = (false, false, false);
    let mut i = 2;
    while i < ctx.args.len() {
        if ctx.is(i, "NX") {
            nx = true;
        } else if ctx.is(i, "XX") {
            xx = true;
        } else if ctx.is(i, "CH") {
            ch = true;
        } else {
            break;
        }
        i += 1;
    }
    // Redis answers a syntax error for both NX and XX, as for a count of arguments
    // that is no multiple of three.
    let rest = ctx.args.len() - i;
    if rest == 0 || !rest.is_multiple_of(3) || (nx && xx) {
        return ctx.syntax_error();
    }
    let mut items = Vec::new();
    for j in (i..ctx.args.len()).step_by(3) {
        let Some((lon, lat)) = lonlat(ctx, j) else {
            return;
        };
        items.push((
            encode(lon, lat, LAT_MIN, LAT_MAX) as f64,
            ctx.arg(j + 2).to_vec(),
        ));
    }
    let key = ctx.arg(1);
    let limits = ctx.shared.keyspace.zset_limits();
    let Ok(z) = write::<ZSetValue>(ctx.l, key, !xx) else {
        return ctx.wrong_type();
    };
    let Some(z) = z else { return ctx.reply.int(0) };
    let (mut added, mut changed) = (0, 0);
    for (score, member) in &items {
        let cur = z.score(member);
        if (cur.is_some() && nx) || (cur.is_none() && xx) {
            continue;
        }
        if z.insert(member, *score, limits) {
            added += 1;
        } else if cur != Some(*score) {
            changed += 1;
        }
    }
    if added + changed > 0 {
        ctx.notify(notify::ZSET, "zadd", key);
    }
    crate::typed::drop_if_empty::<ZSetValue>(ctx.l, key);
    ctx.reply.int(if ch { added + changed } else { added });
}

/// Decoded positions of members (None for missing ones); None after WRONGTYPE.
fn positions(ctx: &mut Ctx<'_, '_>, from: usize) -> Option<Vec<Option<(f64, f64, f64)>>> {
    let key = ctx.arg(1);
    let members: Vec<Vec<u8>> = (from..ctx.args.len())
        .map(|i| ctx.arg(i).to_vec())
        .collect();
    match read::<ZSetValue>(ctx.l, key) {
        Err(()) => {
            ctx.wrong_type();
            None
        }
        Ok(z) => Some(
            members
                .iter()
                .map(|m| {
                    z.and_then(|z| z.score(m)).map(|s| {
                        let (lon, lat) = decode(s as u64);
                        (lon, lat, s)
                    })
                })
                .collect(),
        ),
    }
}

fn geopos(ctx: &mut Ctx<'_, '_>) {
    let Some(pos) = positions(ctx, 2) else { return };
    ctx.reply.array(pos.len());
    for p in pos {
        match p {
            Some((lon, lat, _)) => {
                ctx.reply.array(2);
                reply_coord(ctx, lon);
                reply_coord(ctx, lat);
            }
            None => ctx.reply.null_array(),
        }
    }
}

fn reply_distance(ctx: &mut Ctx<'_, '_>, d: f64) {
    ctx.reply.bulk(format!("{d:.4}").as_bytes());
}

fn geodist(ctx: &mut Ctx<'_, '_>) {
    let factor = match ctx.args.len() {
        4 => 1.0,
        5 => match unit_factor(ctx, 4) {
            Some(f) => f,
            None => return,
        },
        _ => return ctx.syntax_error(),
    };
    let key = ctx.arg(1);
    let (a, b) = (ctx.arg(2), ctx.arg(3));
    let pos = match read::<ZSetValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(z) => z.and_then(|z| Some((z.score(a)?, z.score(b)?))),
    };
    match pos {
        None => ctx.reply.null(),
        Some((sa, sb)) => {
            let (lon1, lat1) = decode(sa as u64);
            let (lon2, lat2) = decode(sb as u64);
            reply_distance(ctx, distance(lon1, lat1, lon2, lat2) / factor);
        }
    }
}

fn geohash(ctx: &mut Ctx<'_, '_>) {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let Some(pos) = positions(ctx, 2) else { return };
    ctx.reply.array(pos.len());
    for p in pos {
        match p {
            Some((lon, lat, _)) => {
                // Re-encoded over the standard -90..90 latitude range, as geohash.org does.
                let bits = encode(lon, lat, -90.0, 90.0);
                let text: Vec<u8> = (0..11)
                    .map(|i| {
                        let idx = if i == 10 {
                            0
                        } else {
                            (bits >> (52 - (i + 1) * 5)) & 0x1f
                        };
                        ALPHABET[idx as usize]
                    })
                    .collect();
                ctx.reply.bulk(&text);
            }
            None => ctx.reply.null(),
        }
    }
}

enum Shape {
    Radius(f64),
    Box(f64, f64),
}

struct Search {
    center: (f64, f64),
    shape: Shape,
    factor: f64,
    sort: Option<bool>,
    count: Option<(usize, bool)>,
    with_coord: bool,
    with_dist: bool,
    with_hash: bool,
    store: Option<(Vec<u8>, bool)>,
    /// The source was already read for its member (FROMMEMBER, BYMEMBER): Redis looks
    /// it up once, so only that read reports a key miss.
    source_read: bool,
}

/// A geohash cell: `bits` interleaved at `step` bits per coordinate.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Cell {
    bits: u64,
    step: u32,
}

impl Cell {
    fn of(lon: f64, lat: f64, step: u32) -> Cell {
        Cell {
            bits: encode(lon, lat, LAT_MIN, LAT_MAX) >> (2 * (STEP - step)),
            step,
        }
    }

    /// Moves by one cell east (+1) or west (-1) (`lon`), or north or south, wrapping as
    /// Redis' geohash_move_x / move_y do.
    fn moved(self, dx: i8, dy: i8) -> Cell {
        let width = 64 - self.step * 2;
        let step_mask = |m: u64| m >> width;
        let shift = |bits: u64, lanes: u64, d: i8| -> u64 {
            let own = bits & lanes;
            let fill = step_mask(!lanes);
            let moved = match d {
                0 => return own,
                d if d > 0 => own.wrapping_add(fill.wrapping_add(1)),
                _ => (own | fill).wrapping_sub(fill.wrapping_add(1)),
            };
            moved & step_mask(lanes)
        };
        const LON: u64 = 0xaaaa_aaaa_aaaa_aaaa;
        const LAT: u64 = 0x5555_5555_5555_5555;
        Cell {
            bits: shift(self.bits, LON, dx) | shift(self.bits, LAT, dy),
            step: self.step,
        }
    }

    /// (lon_min, lat_min, lon_max, lat_max) of the cell.
    fn area(self) -> (f64, f64, f64, f64) {
        let (ilat, ilon) = (squash(self.bits), squash(self.bits >> 1));
        let scale = (1u64 << self.step) as f64;
        let lat = |i: u32| LAT_MIN + (f64::from(i) / scale) * (LAT_MAX - LAT_MIN);
        let lon = |i: u32| LON_MIN + (f64::from(i) / scale) * (LON_MAX - LON_MIN);
        (lon(ilon), lat(ilat), lon(ilon + 1), lat(ilat + 1))
    }

    /// The scores of the members inside the cell: `min..max`.
    fn scores(self) -> (f64, f64) {
        let shift = 2 * (STEP - self.step);
        (
            (self.bits << shift) as f64,
            ((self.bits + 1) << shift) as f64,
        )
    }
}

/// Redis' geohashEstimateStepsByRadius.
fn steps_for(radius_m: f64, lat: f64) -> u32 {
    if radius_m == 0.0 {
        return 26;
    }
    let mut step: i32 = 1;
    let mut range = radius_m;
    while range < 20037726.37 {
        range *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u32
}

/// The cells Redis searches, in its order (the centre, then N, S, E, W, NE, NW, SE, SW),
/// less those the shape cannot reach and a repeat of the cell just searched: the scan
/// order decides which members an ANY search returns and an unsorted reply's order.
fn search_cells(s: &Search) -> Vec<Cell> {
    let (lon, lat) = s.center;
    let (half_w, half_h) = match s.shape {
        Shape::Radius(r) => (r, r),
        Shape::Box(w, h) => (w / 2.0, h / 2.0),
    };
    let radius = match s.shape {
        Shape::Radius(r) => r,
        Shape::Box(w, h) => ((w / 2.0) * (w / 2.0) + (h / 2.0) * (h / 2.0)).sqrt(),
    };
    // The bounding box, as Redis' geohashBoundingBox draws it.
    let lat_delta = (half_h / EARTH_RADIUS_M).to_degrees();
    let lon_delta_top =
        (half_w / EARTH_RADIUS_M / (lat + lat_delta).to_radians().cos()).to_degrees();
    let lon_delta_bottom =
        (half_w / EARTH_RADIUS_M / (lat - lat_delta).to_radians().cos()).to_degrees();
    let lon_delta = if lat < 0.0 {
        lon_delta_bottom
    } else {
        lon_delta_top
    };
    let (min_lon, max_lon) = (lon - lon_delta, lon + lon_delta);
    let (min_lat, max_lat) = (lat - lat_delta, lat + lat_delta);
    let mut step = steps_for(radius, lat);
    let mut centre = Cell::of(lon, lat, step);
    let reaches_past = |c: Cell| {
        let n = c.moved(0, 1).area();
        let so = c.moved(0, -1).area();
        let e = c.moved(1, 0).area();
        let w = c.moved(-1, 0).area();
        n.3 < max_lat || so.1 > min_lat || e.2 < max_lon || w.0 > min_lon
    };
    if step > 1 && reaches_past(centre) {
        step -= 1;
        centre = Cell::of(lon, lat, step);
    }
    let area = centre.area();
    let (mut north, mut south, mut east, mut west) = (true, true, true, true);
    if step >= 2 {
        south = area.1 >= min_lat;
        north = area.3 <= max_lat;
        west = area.0 >= min_lon;
        east = area.2 <= max_lon;
    }
    let candidates = [
        (0, 0, true),
        (0, 1, north),
        (0, -1, south),
        (1, 0, east),
        (-1, 0, west),
        (1, 1, north && east),
        (-1, 1, north && west),
        (1, -1, south && east),
        (-1, -1, south && west),
    ];
    let mut out: Vec<Cell> = Vec::with_capacity(9);
    for (dx, dy, keep) in candidates {
        let cell = centre.moved(dx, dy);
        if keep && out.last() != Some(&cell) {
            out.push(cell);
        }
    }
    out
}

/// The members inside the shape: (member, distance in metres, score), in Redis' order:
/// cell by cell as it scans them (an ANY search stops at COUNT), then sorted as asked.
fn run_search(z: Option<&ZSetValue>, s: &Search) -> Vec<(Vec<u8>, f64, f64)> {
    let Some(z) = z else { return Vec::new() };
    let (cx, cy) = s.center;
    let inside = |score: f64| {
        let (x, y) = decode(score as u64);
        match s.shape {
            Shape::Radius(r) => {
                let d = distance(cx, cy, x, y);
                (d <= r).then_some(d)
            }
            Shape::Box(w, h) => {
                // Redis measures the longitude distance at the point's latitude.
                if lat_distance(y, cy) > h / 2.0 || distance(x, y, cx, y) > w / 2.0 {
                    return None;
                }
                Some(distance(cx, cy, x, y))
            }
        }
    };
    let limit = match s.count {
        Some((n, true)) => n,
        _ => usize::MAX,
    };
    let mut hits: Vec<(Vec<u8>, f64, f64)> = Vec::new();
    'cells: for cell in search_cells(s) {
        if hits.len() >= limit {
            break;
        }
        let (min, max) = cell.scores();
        let first = z.count_prefix(&|score, _| score < min);
        for (score, m) in z.range(first, z.len()) {
            if score >= max {
                break;
            }
            if let Some(d) = inside(score) {
                hits.push((m.to_vec(), d, score));
                if hits.len() >= limit {
                    break 'cells;
                }
            }
        }
    }
    let sort = match (s.sort, s.count) {
        (Some(asc), _) => Some(asc),
        (None, Some((_, false))) => Some(true),
        _ => None,
    };
    if let Some(asc) = sort {
        hits.sort_by(|a, b| {
            let o = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
            if asc {
                o
            } else {
                o.reverse()
            }
        });
    }
    if let Some((n, _)) = s.count {
        hits.truncate(n);
    }
    hits
}

/// Parses search options from `from` in Redis 7.0's order and with its refusals: a
/// centre or a shape given twice, or both kinds of one, is a syntax error; after the
/// options, STORE with WITH* options, a missing centre or shape, and ANY without COUNT.
/// A FROMMEMBER on a missing source key is no error: the search then finds nothing.
fn parse_search(
    ctx: &mut Ctx<'_, '_>,
    from: usize,
    mut s: Search,
    allow_store: bool,
    geosearch: bool,
) -> Option<Search> {
    let src = ctx.arg(if geosearch && allow_store { 2 } else { 1 });
    let (mut from_member, mut from_lonlat, mut by_radius, mut by_box) =
        (false, false, false, false);
    let mut any = false;
    let mut count = None;
    let mut i = from;
    while i < ctx.args.len() {
        let left = ctx.args.len() - i - 1;
        if geosearch && !from_lonlat && ctx.is(i, "FROMMEMBER") && left >= 1 {
            let member = ctx.arg(i + 1);
            let pos = match read::<ZSetValue>(ctx.l, src) {
                Err(()) => {
                    ctx.wrong_type();
                    return None;
                }
                Ok(None) => Some(None),
                Ok(Some(z)) => z.score(member).map(Some),
            };
            match pos {
                None => {
                    ctx.error("ERR could not decode requested zset member");
                    return None;
                }
                Some(Some(score)) => s.center = decode(score as u64),
                Some(None) => {}
            }
            from_member = true;
            s.source_read = true;
            i += 2;
        } else if geosearch && !from_member && ctx.is(i, "FROMLONLAT") && left >= 2 {
            s.center = lonlat(ctx, i + 1)?;
            from_lonlat = true;
            i += 3;
        } else if geosearch && !by_box && ctx.is(i, "BYRADIUS") && left >= 2 {
            let Some(r) = parse_float(ctx.arg(i + 1)).filter(|r| *r >= 0.0) else {
                ctx.error("ERR need numeric radius");
                return None;
            };
            s.factor = unit_factor(ctx, i + 2)?;
            s.shape = Shape::Radius(r * s.factor);
            by_radius = true;
            i += 3;
        } else if geosearch && !by_radius && ctx.is(i, "BYBOX") && left >= 3 {
            let (Some(w), Some(h)) = (parse_float(ctx.arg(i + 1)), parse_float(ctx.arg(i + 2)))
            else {
                ctx.error("ERR need numeric width and height");
                return None;
            };
            if w < 0.0 || h < 0.0 {
                ctx.error("ERR height or width cannot be negative");
                return None;
            }
            s.factor = unit_factor(ctx, i + 3)?;
            s.shape = Shape::Box(w * s.factor, h * s.factor);
            by_box = true;
            i += 4;
        } else if ctx.is(i, "WITHCOORD") {
            s.with_coord = true;
            i += 1;
        } else if ctx.is(i, "WITHDIST") {
            s.with_dist = true;
            i += 1;
        } else if ctx.is(i, "WITHHASH") {
            s.with_hash = true;
            i += 1;
        } else if ctx.is(i, "ANY") {
            any = true;
            i += 1;
        } else if ctx.is(i, "ASC") {
            s.sort = Some(true);
            i += 1;
        } else if ctx.is(i, "DESC") {
            s.sort = Some(false);
            i += 1;
        } else if ctx.is(i, "COUNT") && left >= 1 {
            match carmine_resp::parse_i64(ctx.arg(i + 1)) {
                Some(n) if n > 0 => count = Some(n as usize),
                Some(_) => {
                    ctx.error("ERR COUNT must be > 0");
                    return None;
                }
                None => {
                    ctx.error("ERR value is not an integer or out of range");
                    return None;
                }
            }
            i += 2;
        } else if allow_store
            && !geosearch
            && (ctx.is(i, "STORE") || ctx.is(i, "STOREDIST"))
            && left >= 1
        {
            s.store = Some((ctx.arg(i + 1).to_vec(), ctx.is(i, "STOREDIST")));
            i += 2;
        } else if allow_store && geosearch && ctx.is(i, "STOREDIST") {
            if let Some(st) = s.store.as_mut() {
                st.1 = true;
            }
            i += 1;
        } else {
            ctx.syntax_error();
            return None;
        }
    }
    let name = String::from_utf8_lossy(ctx.arg(0)).into_owned();
    if s.store.is_some() && (s.with_coord || s.with_dist || s.with_hash) {
        let what = if geosearch {
            "GEOSEARCHSTORE"
        } else {
            "STORE option in GEORADIUS"
        };
        ctx.error(&format!(
            "ERR {what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        ));
        return None;
    }
    if geosearch && !(from_member || from_lonlat) {
        ctx.error(&format!(
            "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for {name}"
        ));
        return None;
    }
    if geosearch && !(by_radius || by_box) {
        ctx.error(&format!(
            "ERR exactly one of BYRADIUS and BYBOX can be specified for {name}"
        ));
        return None;
    }
    if any && count.is_none() {
        ctx.error("ERR the ANY argument requires COUNT argument");
        return None;
    }
    s.count = count.map(|n| (n, any));
    Some(s)
}

fn finish_search(ctx: &mut Ctx<'_, '_>, src_at: usize, s: Search) {
    let key = ctx.arg(src_at);
    let source = if s.source_read {
        ctx.l
            .without_miss_reports(|l| read::<ZSetValue>(l, key).map(|z| run_search(z, &s)))
    } else {
        read::<ZSetValue>(ctx.l, key).map(|z| run_search(z, &s))
    };
    let Ok(hits) = source else {
        return ctx.wrong_type();
    };
    if let Some((dst, storedist)) = &s.store {
        let n = hits.len();
        if hits.is_empty() {
            if ctx.l.remove(dst).is_some() {
                ctx.notify(notify::GENERIC, "del", dst);
            }
        } else {
            let limits = ctx.shared.keyspace.zset_limits();
            let mut z = ZSetValue::default();
            for (m, d, score) in &hits {
                z.insert(m, if *storedist { d / s.factor } else { *score }, limits);
            }
            ctx.l.insert(dst, Entry::new(Value::ZSet(z)));
            let event = if ctx.is(0, "GEOSEARCHSTORE") {
                "geosearchstore"
            } else {
                "georadiusstore"
            };
            ctx.notify(notify::ZSET, event, dst);
        }
        return ctx.reply.int(n as i64);
    }
    let extras = usize::from(s.with_coord) + usize::from(s.with_dist) + usize::from(s.with_hash);
    ctx.reply.array(hits.len());
    for (m, d, score) in &hits {
        if extras == 0 {
            ctx.reply.bulk(m);
            continue;
        }
        ctx.reply.array(1 + extras);
        ctx.reply.bulk(m);
        if s.with_dist {
            reply_distance(ctx, d / s.factor);
        }
        if s.with_hash {
            ctx.reply.int(*score as i64);
        }
        if s.with_coord {
            let (lon, lat) = decode(*score as u64);
            ctx.reply.array(2);
            reply_coord(ctx, lon);
            reply_coord(ctx, lat);
        }
    }
}

fn blank() -> Search {
    Search {
        center: (0.0, 0.0),
        shape: Shape::Radius(0.0),
        factor: 1.0,
        sort: None,
        count: None,
        with_coord: false,
        with_dist: false,
        with_hash: false,
        store: None,
        source_read: false,
    }
}

fn geosearch(ctx: &mut Ctx<'_, '_>) {
    if let Some(s) = parse_search(ctx, 2, blank(), false, true) {
        finish_search(ctx, 1, s);
    }
}

fn geosearchstore(ctx: &mut Ctx<'_, '_>) {
    let mut base = blank();
    base.store = Some((ctx.arg(1).to_vec(), false));
    if let Some(s) = parse_search(ctx, 3, base, true, true) {
        finish_search(ctx, 2, s);
    }
}

fn radius_generic(ctx: &mut Ctx<'_, '_>, by_member: bool, allow_store: bool) {
    let mut s = blank();
    let (radius_at, opts_at) = if by_member { (3, 5) } else { (4, 6) };
    if by_member {
        let key = ctx.arg(1);
        let member = ctx.arg(2);
        // A missing source key is no error: the options are still checked, then the
        // search finds nothing.
        match read::<ZSetValue>(ctx.l, key) {
            Err(()) => return ctx.wrong_type(),
            Ok(None) => {}
            Ok(Some(z)) => match z.score(member) {
                Some(score) => s.center = decode(score as u64),
                None => return ctx.error("ERR could not decode requested zset member"),
            },
        }
    } else {
        let Some(c) = lonlat(ctx, 2) else { return };
        s.center = c;
    }
    s.source_read = by_member;
    let Some(r) = parse_float(ctx.arg(radius_at)).filter(|r| *r >= 0.0) else {
        return ctx.error("ERR need numeric radius");
    };
    let Some(f) = unit_factor(ctx, radius_at + 1) else {
        return;
    };
    s.factor = f;
    s.shape = Shape::Radius(r * f);
    if let Some(s) = parse_search(ctx, opts_at, s, allow_store, false) {
        finish_search(ctx, 1, s);
    }
}

fn georadius(ctx: &mut Ctx<'_, '_>) {
    radius_generic(ctx, false, true);
}

fn georadius_ro(ctx: &mut Ctx<'_, '_>) {
    radius_generic(ctx, false, false);
}

fn georadiusbymember(ctx: &mut Ctx<'_, '_>) {
    radius_generic(ctx, true, true);
}

fn georadiusbymember_ro(ctx: &mut Ctx<'_, '_>) {
    radius_generic(ctx, true, false);
}
