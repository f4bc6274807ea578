//! The loss curve as a PNG image: training loss per step and, where the run evaluated, the eval
//! loss, drawn on axes with round-numbered ticks, a title, axis labels and a legend.
//!
//! Everything is drawn here (a 5×7 bitmap font at 2× and 3×, lines two pixels wide, round
//! markers) and encoded as an 8-bit RGB PNG with zlib from `flate2`; no image library is used.
//!
//! Points with a NaN or infinite coordinate, or one beyond ±1e300, are left out (a line joins the
//! points either side). Data with no usable point at all still gives an image: empty axes over
//! 0..1 with "no data" in the middle.

use std::path::Path;

use crate::error::{Result, TrainError};
use crate::trainer::StepReport;

mod font;
mod png;

use font::glyph;
use png::encode_png;

pub const WIDTH: usize = 900;
pub const HEIGHT: usize = 540;

/// The colour of the training loss in [`write_loss_png`].
pub const TRAIN_COLOR: [u8; 3] = [31, 119, 180];
/// The colour of the eval loss in [`write_loss_png`].
pub const EVAL_COLOR: [u8; 3] = [255, 127, 14];

const BACKGROUND: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [228, 228, 228];
const FAINT: [u8; 3] = [150, 150, 150];

/// Plot area edges that do not depend on the data (the left one fits the y tick labels).
const RIGHT: i64 = WIDTH as i64 - 30;
const TOP: i64 = 60;
const BOTTOM: i64 = HEIGHT as i64 - 70;
/// Length of a tick mark outside the plot area.
const TICK: i64 = 6;
/// Scale of the tick labels, axis labels and legend (the title is larger when it fits).
const TEXT: i64 = 2;
/// A glyph is 5 pixels wide and 7 high above the baseline (descenders add a row) before
/// scaling, with one blank column after it.
const GLYPH_W: i64 = 5;
const GLYPH_H: i64 = 7;
const ADVANCE: i64 = GLYPH_W + 1;
/// Series with at most this many usable points get a marker on every point.
const MARKER_MAX_POINTS: usize = 60;
const MARKER_RADIUS: i64 = 4;
/// Legend: inner padding, height of a row, length of the line sample, distance from the frame.
const LEGEND_PAD: i64 = 8;
const LEGEND_ROW: i64 = 22;
const LEGEND_SAMPLE: i64 = 28;
const LEGEND_INSET: i64 = 10;
/// Coordinates beyond this magnitude are left out like non-finite ones.
const LIMIT: f64 = 1e300;
/// Ranges narrower than this fraction of their magnitude are treated as a single value.
const FLAT: f64 = 1e-9;

/// One line of a plot: `points` are (x, y) pairs, drawn in the order given.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub label: &'a str,
    pub points: &'a [(f64, f64)],
    pub color: [u8; 3],
}

/// Draws `series` on one pair of axes and encodes the image ([`WIDTH`]×[`HEIGHT`]) as PNG.
///
/// Series are drawn in order (a later one over an earlier one), each with a line through its
/// points and, when it has at most 60 usable points, a round marker on each; the legend names
/// every series, including one without usable points.
pub fn render_png(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<Vec<u8>> {
    let layout = Layout::new(series);
    let mut canvas = Canvas::new(WIDTH, HEIGHT, BACKGROUND);
    layout.draw_axes(&mut canvas);
    layout.draw_labels(&mut canvas, title, x_label, y_label);

    canvas.clip = (layout.left, TOP, RIGHT + 1, BOTTOM + 1);
    let mut any = false;
    for s in series {
        let points: Vec<(i64, i64)> = usable(s.points).map(|(x, y)| layout.px(x, y)).collect();
        any |= !points.is_empty();
        for pair in points.windows(2) {
            canvas.line(pair[0], pair[1], s.color);
        }
        if points.len() <= MARKER_MAX_POINTS {
            for &p in &points {
                canvas.disc(p, MARKER_RADIUS, s.color);
            }
        }
    }
    canvas.clip = canvas.full();
    if !any {
        let w = text_width("no data", TEXT);
        let (cx, cy) = ((layout.left + RIGHT) / 2, (TOP + BOTTOM) / 2);
        canvas.text(
            (cx - w / 2, cy - GLYPH_H * TEXT / 2),
            "no data",
            TEXT,
            FAINT,
        );
    }
    layout.draw_frame(&mut canvas);
    layout.draw_legend(&mut canvas, series);
    encode_png(WIDTH, HEIGHT, &canvas.px)
}

/// Plots the training loss of every step and the eval loss of the steps that evaluated, and
/// writes the PNG to `path` (beside it first, then renamed into place; nothing is left beside it
/// when that fails). No reports give an image with empty axes.
pub fn write_loss_png(path: &Path, reports: &[StepReport]) -> Result<()> {
    let train: Vec<(f64, f64)> = reports.iter().map(|r| (r.step as f64, r.loss)).collect();
    let eval: Vec<(f64, f64)> = reports
        .iter()
        .filter_map(|r| r.eval.as_ref().map(|e| (r.step as f64, e.loss)))
        .collect();
    let mut series = vec![Series {
        label: "training loss",
        points: &train,
        color: TRAIN_COLOR,
    }];
    if !eval.is_empty() {
        series.push(Series {
            label: "eval loss",
            points: &eval,
            color: EVAL_COLOR,
        });
    }
    let png = render_png("Loss", "step", "loss (nats per token)", &series)?;

    let tmp = path.with_extension("png.partial");
    if let Err(e) = std::fs::write(&tmp, png) {
        let _ = std::fs::remove_file(&tmp);
        return Err(TrainError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TrainError::io(path, e)
    })
}

/// The points of `points` that can be placed on axes.
fn usable(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + '_ {
    points
        .iter()
        .copied()
        .filter(|&(x, y)| x.is_finite() && y.is_finite() && x.abs() <= LIMIT && y.abs() <= LIMIT)
}

/// One axis: the value range it spans and the step between its ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Axis {
    /// An axis over the data range `range` (min, max), widened by `pad` of its span on each
    /// side; a range of one value is widened by 10% of it (or by 1 around zero) instead, and
    /// without data the axis spans 0..1. Padding does not take non-negative data below zero.
    /// For `whole`-number data, a single value is widened by at least 1 and ticks are at least
    /// 1 apart, so they stay whole numbers.
    fn fit(range: Option<(f64, f64)>, pad: f64, whole: bool) -> Axis {
        let (lo, hi) = match range {
            None => (0.0, 1.0),
            Some((lo, hi)) if hi - lo <= lo.abs().max(hi.abs()) * FLAT => {
                let mid = lo / 2.0 + hi / 2.0;
                let mut half = if mid == 0.0 { 1.0 } else { mid.abs() * 0.1 };
                if whole {
                    half = half.max(1.0);
                }
                (mid - half, mid + half)
            }
            Some((lo, hi)) => {
                let p = (hi - lo) * pad;
                let below = lo - p;
                (if lo >= 0.0 && below < 0.0 { 0.0 } else { below }, hi + p)
            }
        };
        let step = nice_step((hi - lo) / 6.0);
        Axis {
            lo,
            hi,
            step: if whole { step.max(1.0) } else { step },
        }
    }

    /// Where `v` lies along the axis: 0 at `lo`, 1 at `hi`.
    fn frac(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    /// The multiples of `step` within the range.
    fn ticks(&self) -> Vec<f64> {
        let mut out = Vec::new();
        let mut k = (self.lo / self.step).ceil();
        let last = (self.hi / self.step).floor();
        while k <= last && out.len() < 50 {
            let v = k * self.step;
            // -0.0 prints as "-0".
            out.push(if v == 0.0 { 0.0 } else { v });
            k += 1.0;
        }
        out
    }

    /// The label of tick `v`: in exponent form on an axis reaching 1e6 or more in magnitude, or
    /// staying below 1e-4.
    fn label(&self, v: f64) -> String {
        let reach = self.lo.abs().max(self.hi.abs());
        tick_label(v, self.step, !(1e-4..1e6).contains(&reach))
    }
}

/// The smallest of 1, 2, 5 and 10 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw > 0.0 && raw.is_finite()) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let m = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// A tick value with as many digits as the tick step needs, in exponent form ("2.5e6", "3e-5",
/// no trailing zeros) when `scientific`.
fn tick_label(v: f64, step: f64, scientific: bool) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let step_exp = step.abs().log10().floor();
    if scientific {
        let digits = (v.abs().log10().floor() - step_exp).clamp(0.0, 6.0) as usize;
        let text = format!("{v:.digits$e}");
        // "1.0e10" as "1e10", "2.50e6" as "2.5e6".
        match text.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => text,
        }
    } else {
        let decimals = (-step_exp).clamp(0.0, 10.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Where things go on the image for a given set of series.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Layout {
    x: Axis,
    y: Axis,
    /// Left edge of the plot area (wide enough for the y tick labels).
    left: i64,
}

impl Layout {
    fn new(series: &[Series]) -> Layout {
        let grow = |r: Option<(f64, f64)>, v: f64| match r {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        };
        let (mut xr, mut yr) = (None, None);
        let (mut x_whole, mut y_whole) = (true, true);
        for s in series {
            for (x, y) in usable(s.points) {
                xr = grow(xr, x);
                yr = grow(yr, y);
                x_whole &= x.fract() == 0.0;
                y_whole &= y.fract() == 0.0;
            }
        }
        let x = Axis::fit(xr, 0.02, x_whole);
        let y = Axis::fit(yr, 0.05, y_whole);
        let widest = y
            .ticks()
            .iter()
            .map(|&v| text_width(&y.label(v), TEXT))
            .max();
        // The rotated y label, a gap, the tick labels, a gap, the tick marks.
        let left = 12 + GLYPH_H * TEXT + 12 + widest.unwrap_or(0) + 6 + TICK;
        Layout {
            x,
            y,
            left: left.clamp(80, RIGHT - 200),
        }
    }

    /// The pixel of the point (x, y).
    fn px(&self, x: f64, y: f64) -> (i64, i64) {
        let w = (RIGHT - self.left) as f64;
        let h = (BOTTOM - TOP) as f64;
        let px = self.left as f64 + (self.x.frac(x) * w).round();
        let py = BOTTOM as f64 - (self.y.frac(y) * h).round();
        // Bounds keep line drawing short for any input (NaN becomes 0).
        (
            px.clamp(-10_000.0, 10_000.0) as i64,
            py.clamp(-10_000.0, 10_000.0) as i64,
        )
    }

    /// Grid lines, tick marks and tick labels.
    fn draw_axes(&self, c: &mut Canvas) {
        for v in self.x.ticks() {
            let (x, _) = self.px(v, self.y.lo);
            c.fill_rect(x, TOP, 1, BOTTOM - TOP, GRID);
            c.fill_rect(x, BOTTOM + 1, 1, TICK, INK);
            let label = self.x.label(v);
            let w = text_width(&label, TEXT);
            c.text((x - w / 2, BOTTOM + TICK + 6), &label, TEXT, INK);
        }
        for v in self.y.ticks() {
            let (_, y) = self.px(self.x.lo, v);
            c.fill_rect(self.left, y, RIGHT - self.left, 1, GRID);
            c.fill_rect(self.left - TICK, y, TICK, 1, INK);
            let label = self.y.label(v);
            let w = text_width(&label, TEXT);
            let at = (self.left - TICK - 6 - w, y - GLYPH_H * TEXT / 2);
            c.text(at, &label, TEXT, INK);
        }
    }

    /// The title (3× when it fits, else 2×) and the axis labels (the y one reads upwards).
    fn draw_labels(&self, c: &mut Canvas, title: &str, x_label: &str, y_label: &str) {
        let scale = if text_width(title, 3) <= WIDTH as i64 - 20 {
            3
        } else {
            TEXT
        };
        let w = text_width(title, scale);
        c.text((((WIDTH as i64 - w) / 2).max(4), 18), title, scale, INK);

        let w = text_width(x_label, TEXT);
        let x = ((self.left + RIGHT - w) / 2).max(4);
        c.text((x, HEIGHT as i64 - 12 - GLYPH_H * TEXT), x_label, TEXT, INK);

        let w = text_width(y_label, TEXT);
        let bottom = ((TOP + BOTTOM + w) / 2).min(HEIGHT as i64 - 4);
        c.text_up((12, bottom), y_label, TEXT, INK);
    }

    fn draw_frame(&self, c: &mut Canvas) {
        c.fill_rect(self.left, TOP, RIGHT - self.left + 1, 1, INK);
        c.fill_rect(self.left, BOTTOM, RIGHT - self.left + 1, 1, INK);
        c.fill_rect(self.left, TOP, 1, BOTTOM - TOP + 1, INK);
        c.fill_rect(RIGHT, TOP, 1, BOTTOM - TOP + 1, INK);
    }

    /// The legend box, in the corner of the plot area where it covers the fewest drawn pixels
    /// (top right first on a tie).
    fn draw_legend(&self, c: &mut Canvas, series: &[Series]) {
        let Some((x, y, w, h)) = self.legend_box(c, series) else {
            return;
        };
        c.fill_rect(x, y, w, h, BACKGROUND);
        c.fill_rect(x, y, w, 1, FAINT);
        c.fill_rect(x, y + h - 1, w, 1, FAINT);
        c.fill_rect(x, y, 1, h, FAINT);
        c.fill_rect(x + w - 1, y, 1, h, FAINT);
        for (i, s) in series.iter().enumerate() {
            let mid = y + LEGEND_PAD + i as i64 * LEGEND_ROW + LEGEND_ROW / 2;
            let x0 = x + LEGEND_PAD;
            c.line((x0, mid), (x0 + LEGEND_SAMPLE, mid), s.color);
            if usable(s.points).count() <= MARKER_MAX_POINTS {
                c.disc((x0 + LEGEND_SAMPLE / 2, mid), MARKER_RADIUS, s.color);
            }
            let tx = x0 + LEGEND_SAMPLE + LEGEND_PAD;
            c.text((tx, mid - GLYPH_H * TEXT / 2), s.label, TEXT, INK);
        }
    }

    /// The legend's (x, y, width, height), or None without series.
    fn legend_box(&self, c: &Canvas, series: &[Series]) -> Option<(i64, i64, i64, i64)> {
        if series.is_empty() {
            return None;
        }
        let label_w = series
            .iter()
            .map(|s| text_width(s.label, TEXT))
            .max()
            .unwrap_or(0);
        let w = LEGEND_PAD * 3 + LEGEND_SAMPLE + label_w;
        let h = LEGEND_PAD * 2 + series.len() as i64 * LEGEND_ROW;
        let (l, r) = (self.left + LEGEND_INSET, RIGHT - LEGEND_INSET - w);
        let (t, b) = (TOP + LEGEND_INSET, BOTTOM - LEGEND_INSET - h);
        let corners = [(r, t), (l, t), (r, b), (l, b)];
        let mut best: Option<((i64, i64), usize)> = None;
        for (x, y) in corners {
            let covered = c.count_drawn(x, y, w, h);
            if best.is_none_or(|(_, n)| covered < n) {
                best = Some(((x, y), covered));
            }
        }
        best.map(|((x, y), _)| (x, y, w, h))
    }
}

/// Width in pixels of `s` drawn at `scale`.
fn text_width(s: &str, scale: i64) -> i64 {
    let n = s.chars().count() as i64;
    if n == 0 { 0 } else { (n * ADVANCE - 1) * scale }
}

/// An RGB image with a clip rectangle that every drawing call respects.
#[derive(Debug)]
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
    /// (x0, y0, x1, y1), the end bounds exclusive.
    clip: (i64, i64, i64, i64),
}

impl Canvas {
    fn new(w: usize, h: usize, bg: [u8; 3]) -> Canvas {
        let mut px = Vec::with_capacity(w * h * 3);
        for _ in 0..w * h {
            px.extend_from_slice(&bg);
        }
        Canvas {
            w,
            h,
            px,
            clip: (0, 0, w as i64, h as i64),
        }
    }

    fn full(&self) -> (i64, i64, i64, i64) {
        (0, 0, self.w as i64, self.h as i64)
    }

    /// The byte offset of pixel (x, y), if it is on the canvas.
    fn offset(&self, x: i64, y: i64) -> Option<usize> {
        let on = x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h;
        on.then(|| (y as usize * self.w + x as usize) * 3)
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        let (x0, y0, x1, y1) = self.clip;
        if x < x0 || y < y0 || x >= x1 || y >= y1 {
            return;
        }
        if let Some(i) = self.offset(x, y) {
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// Pixels in the rectangle that are neither background nor grid.
    fn count_drawn(&self, x: i64, y: i64, w: i64, h: i64) -> usize {
        let mut n = 0;
        for yy in y..y + h {
            for xx in x..x + w {
                if let Some(i) = self.offset(xx, yy) {
                    let p = &self.px[i..i + 3];
                    n += usize::from(p != BACKGROUND && p != GRID);
                }
            }
        }
        n
    }

    /// A line two pixels wide from `a` to `b` (Bresenham; each step fills a 2×2 square whose
    /// top-left pixel is on the line).
    fn line(&mut self, a: (i64, i64), b: (i64, i64), c: [u8; 3]) {
        let (mut x, mut y) = a;
        let dx = (b.0 - x).abs();
        let dy = -(b.1 - y).abs();
        let sx = if x < b.0 { 1 } else { -1 };
        let sy = if y < b.1 { 1 } else { -1 };
        let mut err = dx + dy;
        loop {
            self.fill_rect(x, y, 2, 2, c);
            if (x, y) == b {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// A filled round marker centred on `at`.
    fn disc(&mut self, at: (i64, i64), r: i64, c: [u8; 3]) {
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy <= r * r + r {
                    self.set(at.0 + dx, at.1 + dy, c);
                }
            }
        }
    }

    /// `s` left to right with its top-left corner at `at`.
    fn text(&mut self, at: (i64, i64), s: &str, scale: i64, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let ox = at.0 + i as i64 * ADVANCE * scale;
            self.glyph(ch, scale, c, |col, row| {
                (ox + col * scale, at.1 + row * scale)
            });
        }
    }

    /// `s` bottom to top (turned a quarter left), its first glyph's bottom-left at `at`.
    fn text_up(&mut self, at: (i64, i64), s: &str, scale: i64, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let oy = at.1 - i as i64 * ADVANCE * scale;
            self.glyph(ch, scale, c, |col, row| {
                (at.0 + row * scale, oy - (col + 1) * scale)
            });
        }
    }

    /// Fills a `scale`-sized square for each set pixel of `ch`'s glyph, at `place(col, row)`.
    fn glyph(&mut self, ch: char, scale: i64, c: [u8; 3], place: impl Fn(i64, i64) -> (i64, i64)) {
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..GLYPH_W {
                if (bits >> (GLYPH_W - 1 - col)) & 1 == 1 {
                    let (x, y) = place(col, row as i64);
                    self.fill_rect(x, y, scale, scale, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
