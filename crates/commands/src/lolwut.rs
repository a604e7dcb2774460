//! LOLWUT [VERSION n] [columns squares-per-row squares-per-col]: Redis 7.0 answers its
//! own version (`Redis ver. 7.0.15`); VERSION 5 (and 6) asks for the generative art
//! Redis drew in those versions. Carmine draws its own homage to Georg Nees' "Schotter"
//! (1968): a grid of squares that grow more disordered row by row, rendered in Braille
//! characters (2 x 4 dots each), followed by the version line.

use crate::dispatch::Ctx;
use crate::table::{cmd, flags::*, CommandSpec, KeySpec};

pub fn commands() -> Vec<CommandSpec> {
    vec![CommandSpec {
        since: "5.0.0",
        ..cmd(
            "lolwut",
            -1,
            READONLY | FAST,
            KeySpec::None,
            lolwut,
            "server",
            "@read @fast",
            "Display some computer art and the Redis version",
        )
    }]
}

fn lolwut(ctx: &mut Ctx<'_, '_>) {
    let mut version = crate::server::REDIS_VERSION
        .split('.')
        .next()
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(7);
    let mut first = 1;
    if ctx.args.len() >= 3 && ctx.is(1, "VERSION") {
        let Some(v) = ctx.int_arg(2) else { return };
        version = v;
        first = 3;
    }
    let footer = format!("Redis ver. {}\n", crate::server::REDIS_VERSION);
    if !(version == 5 || version == 6) {
        return ctx.reply.verbatim(footer.as_bytes());
    }
    // columns (characters per line), squares per row, squares per column.
    let mut params = [66i64, 8, 12];
    for (n, p) in params.iter_mut().enumerate() {
        if first + n < ctx.args.len() {
            let Some(v) = ctx.int_arg(first + n) else {
                return;
            };
            *p = v;
        }
    }
    let columns = params[0].clamp(1, 1000) as usize;
    let per_row = params[1].clamp(1, 200) as usize;
    let per_col = params[2].clamp(1, 200) as usize;
    let mut art = schotter(columns, per_row, per_col);
    art.push_str("\nGeorg Nees - schotter, plotter on paper, 1968. ");
    art.push_str(&footer);
    ctx.reply.verbatim(art.as_bytes());
}

/// The most dots a drawing may have.
const MAX_DOTS: usize = 1 << 24;

/// Dots on a canvas `width` x `height`, drawn in Braille.
struct Canvas {
    width: usize,
    height: usize,
    dots: Vec<bool>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.dots[y as usize * self.width + x as usize] = true;
        }
    }

    fn dot(&self, x: usize, y: usize) -> bool {
        x < self.width && y < self.height && self.dots[y * self.width + x]
    }

    /// A straight line, stepping along its longer axis.
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64)) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            self.set(
                (x0 + (x1 - x0) * t).round() as i64,
                (y0 + (y1 - y0) * t).round() as i64,
            );
        }
    }

    /// Each 2 x 4 block of dots as one Braille character (U+2800 + dot bits).
    fn render(&self) -> String {
        // Bit of each dot in a Braille cell, by (column, row).
        const BITS: [[u32; 4]; 2] = [[0x01, 0x02, 0x04, 0x40], [0x08, 0x10, 0x20, 0x80]];
        let mut out = String::new();
        for cy in (0..self.height).step_by(4) {
            for cx in (0..self.width).step_by(2) {
                let mut code = 0x2800;
                for (dx, column) in BITS.iter().enumerate() {
                    for (dy, bit) in column.iter().enumerate() {
                        if self.dot(cx + dx, cy + dy) {
                            code |= bit;
                        }
                    }
                }
                out.push(char::from_u32(code).unwrap_or(' '));
            }
            out.push('\n');
        }
        out
    }
}

/// The squares: row `r` of `per_col` is turned and shifted at random, more so further
/// down, as in Nees' plot.
fn schotter(columns: usize, per_row: usize, per_col: usize) -> String {
    let width = columns * 2;
    let side = (width as f64 / (per_row + 2) as f64).max(2.0);
    // Few, wide squares in many rows would make a canvas of hundreds of MB (1000
    // columns, 1 square per row, 200 rows): the rows stop at 16M dots.
    let max_rows = ((MAX_DOTS / width) as f64 / side) as usize;
    let per_col = per_col.min(max_rows.saturating_sub(2).max(1));
    let height = ((per_col + 2) as f64 * side) as usize;
    let mut canvas = Canvas {
        width,
        height,
        dots: vec![false; width * height],
    };
    let mut rng = fastrand::Rng::new();
    for row in 0..per_col {
        let disorder = row as f64 / per_col as f64;
        for col in 0..per_row {
            let cx = (col as f64 + 1.5) * side + (rng.f64() - 0.5) * disorder * side * 0.6;
            let cy = (row as f64 + 1.5) * side + (rng.f64() - 0.5) * disorder * side * 0.6;
            let angle = (rng.f64() - 0.5) * disorder * std::f64::consts::FRAC_PI_2;
            let half = side * 0.5;
            let corner = |k: usize| {
                let a =
                    angle + std::f64::consts::FRAC_PI_4 + k as f64 * std::f64::consts::FRAC_PI_2;
                let r = half * std::f64::consts::SQRT_2;
                (cx + r * a.cos(), cy + r * a.sin())
            };
            for k in 0..4 {
                canvas.line(corner(k), corner((k + 1) % 4));
            }
        }
    }
    canvas.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schotter_fills_the_requested_width() {
        let art = schotter(40, 4, 3);
        let lines: Vec<&str> = art.lines().collect();
        assert!(lines.iter().all(|l| l.chars().count() == 40));
        // Squares were drawn: some cell is not blank.
        assert!(art.chars().any(|c| c != '\u{2800}' && c != '\n'));
    }

    #[test]
    fn the_largest_arguments_stay_within_the_dot_budget() {
        let art = schotter(1000, 1, 200);
        let dots = art.lines().count() * 4 * 2000;
        assert!(dots <= MAX_DOTS + 2000 * 4, "{dots} dots");
    }
}
