#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::io::Read as _;

use super::*;
use crate::trainer::EvalReport;

/// A decoded PNG.
struct Image {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Image {
    fn at(&self, (x, y): (i64, i64)) -> [u8; 3] {
        let i = (y as usize * self.w + x as usize) * 3;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }

    /// Every pixel of colour `c`.
    fn find(&self, c: [u8; 3]) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for (i, p) in self.px.chunks_exact(3).enumerate() {
            if p == c {
                out.push(((i % self.w) as i64, (i / self.w) as i64));
            }
        }
        out
    }

    /// Pixels of colour `c` at most `r` away from `at` along each axis.
    fn near(&self, at: (i64, i64), r: i64, c: [u8; 3]) -> usize {
        self.find(c)
            .into_iter()
            .filter(|&(x, y)| (x - at.0).abs() <= r && (y - at.1).abs() <= r)
            .count()
    }

    /// Pixels of colour `c` in the rectangle x0..x1, y0..y1.
    fn count_in(&self, (x0, y0, x1, y1): (i64, i64, i64, i64), c: [u8; 3]) -> usize {
        self.find(c)
            .into_iter()
            .filter(|&(x, y)| x >= x0 && x < x1 && y >= y0 && y < y1)
            .count()
    }
}

/// Parses a PNG as `encode_png` writes it, checking the signature, every chunk's CRC, the chunk
/// order, the header, and that each row uses filter 0.
fn decode(png: &[u8]) -> Image {
    assert_eq!(png[..8], png::PNG_SIGNATURE);
    let (mut at, mut kinds, mut idat, mut ihdr) = (8, Vec::new(), Vec::new(), Vec::new());
    while at < png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = png[at + 4..at + 8].try_into().unwrap();
        let data = &png[at + 8..at + 8 + len];
        let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
        let mut h = crc32fast::Hasher::new();
        h.update(&kind);
        h.update(data);
        assert_eq!(
            h.finalize(),
            crc,
            "CRC of {}",
            String::from_utf8_lossy(&kind)
        );
        match &kind {
            b"IHDR" => ihdr = data.to_vec(),
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        kinds.push(kind);
        at += 12 + len;
    }
    assert_eq!(at, png.len());
    assert_eq!(kinds, [*b"IHDR", *b"IDAT", *b"IEND"]);
    let w = u32::from_be_bytes(ihdr[0..4].try_into().unwrap()) as usize;
    let h = u32::from_be_bytes(ihdr[4..8].try_into().unwrap()) as usize;
    assert_eq!(
        ihdr[8..],
        [8, 2, 0, 0, 0],
        "8-bit RGB, deflate, no interlace"
    );
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(raw.len(), h * (1 + w * 3));
    let mut px = Vec::with_capacity(w * h * 3);
    for row in raw.chunks_exact(1 + w * 3) {
        assert_eq!(row[0], 0, "filter type");
        px.extend_from_slice(&row[1..]);
    }
    Image { w, h, px }
}

fn report(step: usize, loss: f64, eval: Option<f64>) -> StepReport {
    StepReport {
        step,
        total_steps: step,
        epoch: 0.0,
        lr: 1e-4,
        loss,
        grad_norm: 1.0,
        tokens: 100,
        tokens_per_s: 1000.0,
        elapsed_s: 1.0,
        eval: eval.map(|loss| EvalReport {
            loss,
            perplexity: loss.exp(),
        }),
    }
}

/// The image `write_loss_png` writes for `reports`.
fn loss_image(reports: &[StepReport]) -> Image {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    write_loss_png(&path, reports).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["loss.png"], "nothing but the image is left");
    decode(&std::fs::read(&path).unwrap())
}

fn train_points(reports: &[StepReport]) -> Vec<(f64, f64)> {
    reports.iter().map(|r| (r.step as f64, r.loss)).collect()
}

fn eval_points(reports: &[StepReport]) -> Vec<(f64, f64)> {
    reports
        .iter()
        .filter_map(|r| r.eval.map(|e| (r.step as f64, e.loss)))
        .collect()
}

/// The layout `write_loss_png` uses for `reports`.
fn layout_of(reports: &[StepReport]) -> Layout {
    let (train, eval) = (train_points(reports), eval_points(reports));
    let series = |points, color| Series {
        label: "",
        points,
        color,
    };
    Layout::new(&[
        series(&train[..], TRAIN_COLOR),
        series(&eval[..], EVAL_COLOR),
    ])
}

/// Whether `p` lies in the plot area, frame included.
fn in_plot_area(layout: &Layout, (x, y): (i64, i64)) -> bool {
    x >= layout.left && x <= RIGHT && (TOP..=BOTTOM).contains(&y)
}

#[test]
fn encodes_and_decodes_a_small_image() {
    let rgb: Vec<u8> = (0..18).map(|i| i * 13).collect();
    let img = decode(&encode_png(3, 2, &rgb).unwrap());
    assert_eq!((img.w, img.h), (3, 2));
    assert_eq!(img.px, rgb);
    assert!(matches!(
        encode_png(3, 2, &rgb[..17]),
        Err(TrainError::Plot(_))
    ));
    assert!(encode_png(0, 0, &[]).is_err());
}

#[test]
fn the_plot_has_its_size_background_frame_and_text() {
    let reports: Vec<_> = (1..=30).map(|s| report(s, 3.0 / s as f64, None)).collect();
    let img = loss_image(&reports);
    assert_eq!((img.w, img.h), (WIDTH, HEIGHT));
    assert_eq!(img.at((0, 0)), BACKGROUND);
    assert_eq!(img.at((WIDTH as i64 - 1, HEIGHT as i64 - 1)), BACKGROUND);
    let layout = layout_of(&reports);
    // The frame's corners.
    for corner in [
        (layout.left, TOP),
        (RIGHT, TOP),
        (layout.left, BOTTOM),
        (RIGHT, BOTTOM),
    ] {
        assert_eq!(img.at(corner), INK, "{corner:?}");
    }
    let w = WIDTH as i64;
    assert!(img.count_in((0, 0, w, TOP - 10), INK) > 50, "the title");
    assert!(
        img.count_in((0, BOTTOM + 1, w, HEIGHT as i64), INK) > 100,
        "x ticks and label"
    );
    assert!(
        img.count_in((0, TOP, 12 + 14, BOTTOM), INK) > 50,
        "the y label"
    );
    assert!(
        img.count_in((26, TOP, layout.left - TICK, BOTTOM), INK) > 50,
        "y tick labels"
    );
}

#[test]
fn training_points_are_drawn_where_they_map() {
    let reports: Vec<_> = (1..=20)
        .map(|s| report(s, 3.0 - 0.1 * s as f64, None))
        .collect();
    let img = loss_image(&reports);
    let layout = layout_of(&reports);
    for (x, y) in train_points(&reports) {
        let at = layout.px(x, y);
        assert_eq!(img.at(at), TRAIN_COLOR, "step {x} at {at:?}");
        assert!(
            img.near(at, MARKER_RADIUS, TRAIN_COLOR) >= 25,
            "a marker at step {x}"
        );
    }
    // Nothing of the series far above the curve, and nothing outside the plot area.
    assert_eq!(img.near(layout.px(10.0, 2.9), 6, TRAIN_COLOR), 0);
    let drawn = img.find(TRAIN_COLOR);
    assert!(drawn.iter().all(|&p| in_plot_area(&layout, p)));
    // The first step and highest loss lie just inside the top left of the plot area, the last
    // step and lowest loss just inside the bottom right (the data range is padded).
    let (a, b) = (layout.px(1.0, 2.9), layout.px(20.0, 1.0));
    assert!((5..=30).contains(&(a.0 - layout.left)) && (5..=30).contains(&(RIGHT - b.0)));
    assert!((5..=30).contains(&(a.1 - TOP)) && (5..=30).contains(&(BOTTOM - b.1)));
}

#[test]
fn eval_points_get_visible_markers_and_a_legend_entry() {
    let reports: Vec<_> = (1..=100)
        .map(|s| {
            let eval = [50, 100]
                .contains(&s)
                .then(|| 2.0 + 100.0 / s as f64 / 50.0);
            report(s, 4.0 - s as f64 / 50.0, eval)
        })
        .collect();
    let img = loss_image(&reports);
    let layout = layout_of(&reports);
    let evals = eval_points(&reports);
    assert_eq!(evals.len(), 2);
    let mut at_points = 0;
    for &(x, y) in &evals {
        let n = img.near(layout.px(x, y), MARKER_RADIUS, EVAL_COLOR);
        assert!(n >= 25, "marker of the eval at step {x}: {n} pixels");
        at_points += img.near(layout.px(x, y), MARKER_RADIUS + 2, EVAL_COLOR);
    }
    // The rest is the line between the two points and the legend's sample.
    assert!(img.find(EVAL_COLOR).len() > at_points);
    // 100 training points: a line without markers.
    let (x, y) = (37.0, reports[36].loss);
    assert!(img.near(layout.px(x, y), MARKER_RADIUS, TRAIN_COLOR) < 25);
    assert_eq!(img.at(layout.px(x, y)), TRAIN_COLOR);
}

#[test]
fn no_eval_colour_without_eval_points() {
    let reports: Vec<_> = (1..=10).map(|s| report(s, 2.0 / s as f64, None)).collect();
    let img = loss_image(&reports);
    assert!(!img.find(TRAIN_COLOR).is_empty());
    assert!(img.find(EVAL_COLOR).is_empty());
}

#[test]
fn a_flat_series_is_drawn_at_mid_height() {
    let reports: Vec<_> = (1..=10).map(|s| report(s, 2.0, None)).collect();
    let layout = layout_of(&reports);
    assert!(layout.y.lo < 2.0 && layout.y.hi > 2.0);
    assert!(layout.y.ticks().len() >= 3);
    let img = loss_image(&reports);
    let (x, y) = layout.px(5.0, 2.0);
    assert!((y - (TOP + BOTTOM) / 2).abs() <= 1);
    assert_eq!(img.at((x, y)), TRAIN_COLOR);
    let row = img
        .find(TRAIN_COLOR)
        .into_iter()
        .filter(|p| p.1 == y)
        .count();
    assert!(
        row > (RIGHT - layout.left) as usize / 2,
        "a horizontal line: {row} pixels"
    );
}

#[test]
fn one_point_gets_a_marker() {
    let reports = [report(1, 1.5, Some(1.7))];
    let layout = layout_of(&reports);
    let img = loss_image(&reports);
    assert!(img.near(layout.px(1.0, 1.5), MARKER_RADIUS, TRAIN_COLOR) >= 25);
    assert!(img.near(layout.px(1.0, 1.7), MARKER_RADIUS, EVAL_COLOR) >= 25);
    assert!(layout.x.lo < 1.0 && layout.x.hi > 1.0);
}

#[test]
fn non_finite_values_are_skipped() {
    let mut reports: Vec<_> = (1..=10).map(|s| report(s, 1.0 + s as f64, None)).collect();
    reports[3].loss = f64::NAN;
    reports[6].loss = f64::INFINITY;
    reports[8].loss = f64::NEG_INFINITY;
    reports[2].eval = Some(EvalReport {
        loss: f64::NAN,
        perplexity: f64::NAN,
    });
    let layout = layout_of(&reports);
    assert_eq!(
        layout.y.hi,
        11.0 + 0.05 * 9.0,
        "the finite losses 2..11, padded"
    );
    let img = loss_image(&reports);
    for r in reports.iter().filter(|r| r.loss.is_finite()) {
        assert_eq!(img.at(layout.px(r.step as f64, r.loss)), TRAIN_COLOR);
    }
    // An eval series whose only value is NaN is in the legend but not on the axes.
    let drawn = img.find(EVAL_COLOR);
    assert!(!drawn.is_empty() && drawn.len() < 200);
}

#[test]
fn no_usable_points_give_empty_axes() {
    for reports in [
        vec![],
        vec![report(1, f64::NAN, None), report(2, f64::INFINITY, None)],
    ] {
        let layout = layout_of(&reports);
        assert_eq!(
            (layout.x.lo, layout.x.hi, layout.y.lo, layout.y.hi),
            (0.0, 1.0, 0.0, 1.0)
        );
        let img = loss_image(&reports);
        assert_eq!((img.w, img.h), (WIDTH, HEIGHT));
        let (cx, cy) = ((layout.left + RIGHT) / 2, (TOP + BOTTOM) / 2);
        assert!(
            img.count_in((cx - 60, cy - 10, cx + 60, cy + 10), FAINT) > 50,
            "no data"
        );
    }
    // Without any series there is no legend either.
    let img = decode(&render_png("t", "x", "y", &[]).unwrap());
    assert!(img.find(FAINT).len() > 50);
}

#[test]
fn very_large_step_counts() {
    let reports: Vec<_> = (1..=40)
        .map(|i| {
            report(
                i * 250_000_000,
                1.0 / i as f64,
                (i % 10 == 0).then_some(0.5),
            )
        })
        .collect();
    let layout = layout_of(&reports);
    let labels: Vec<String> = layout
        .x
        .ticks()
        .iter()
        .map(|&v| layout.x.label(v))
        .collect();
    assert!(
        labels.iter().all(|l| l.contains('e') && l.len() <= 6),
        "{labels:?}"
    );
    let img = loss_image(&reports);
    let (x, y) = train_points(&reports)[20];
    assert_eq!(img.at(layout.px(x, y)), TRAIN_COLOR);
    assert!(!img.find(EVAL_COLOR).is_empty());
}

#[test]
fn extreme_values_do_not_panic() {
    let pts = [
        (0.0, -1e300),
        (1.0, 1e300),
        (2.0, 1e301),
        (3.0, 5e-324),
        (f64::MAX, 1.0),
    ];
    let series = [Series {
        label: "x",
        points: &pts,
        color: TRAIN_COLOR,
    }];
    let layout = Layout::new(&series);
    assert!(layout.y.lo.is_finite() && layout.y.hi.is_finite() && layout.y.step.is_finite());
    assert!(!layout.y.ticks().is_empty());
    decode(&render_png("t", "x", "y", &series).unwrap());
    let tiny = [(1.0, 1.0), (2.0, 1.0 + 1e-15)];
    let series = [Series {
        points: &tiny,
        ..series[0]
    }];
    let layout = Layout::new(&series);
    assert!(layout.y.lo < 1.0 && layout.y.hi > 1.0, "treated as flat");
    decode(&render_png("t", "x", "y", &series).unwrap());
}

#[test]
fn tick_steps_are_round_and_ticks_lie_in_range() {
    assert_eq!(nice_step(1.0), 1.0);
    assert_eq!(nice_step(0.13), 0.2);
    assert_eq!(nice_step(3.0), 5.0);
    assert_eq!(nice_step(7.0), 10.0);
    assert_eq!(nice_step(0.0012), 0.002);
    assert_eq!(nice_step(0.0), 1.0);
    assert_eq!(nice_step(f64::NAN), 1.0);
    let ten = Axis::fit(Some((0.0, 10.0)), 0.0, false);
    assert_eq!(ten.ticks(), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    for (lo, hi) in [
        (0.3, 4.7),
        (-3.0, 2.0),
        (1.0, 1e9),
        (1e-7, 3e-7),
        (2.0, 2.0),
        (-5.0, -5.0),
    ] {
        let axis = Axis::fit(Some((lo, hi)), 0.05, false);
        let ticks = axis.ticks();
        assert!((3..=8).contains(&ticks.len()), "{lo}..{hi}: {ticks:?}");
        for t in ticks {
            assert!(t >= axis.lo && t <= axis.hi);
            let k = t / axis.step;
            assert!(
                (k - k.round()).abs() < 1e-6,
                "{t} is a multiple of {}",
                axis.step
            );
        }
    }
    // Whole-number data (steps) keeps whole-number ticks, also for a single value.
    assert_eq!(
        Axis::fit(Some((1.0, 3.0)), 0.02, true).ticks(),
        [1.0, 2.0, 3.0]
    );
    assert_eq!(
        Axis::fit(Some((1.0, 1.0)), 0.02, true).ticks(),
        [0.0, 1.0, 2.0]
    );
    assert_eq!(Axis::fit(Some((1.0, 3.0)), 0.02, false).step, 0.5);
    // Padding does not take non-negative data below zero.
    assert_eq!(Axis::fit(Some((0.01, 3.0)), 0.05, false).lo, 0.0);
    assert!(Axis::fit(Some((-1.0, 3.0)), 0.05, false).lo < -1.0);
}

#[test]
fn tick_labels() {
    assert_eq!(tick_label(0.0, 0.5, false), "0");
    assert_eq!(tick_label(2.5, 0.5, false), "2.5");
    assert_eq!(tick_label(3.0, 1.0, false), "3");
    assert_eq!(tick_label(0.25, 0.05, false), "0.25");
    assert_eq!(tick_label(-1.5, 0.5, false), "-1.5");
    assert_eq!(tick_label(1200.0, 200.0, false), "1200");
    assert_eq!(tick_label(5e6, 1e6, true), "5e6");
    assert_eq!(tick_label(2.5e6, 5e5, true), "2.5e6");
    assert_eq!(tick_label(3e-5, 1e-5, true), "3e-5");
    assert_eq!(tick_label(1e10, 2e9, true), "1e10");
    assert_eq!(tick_label(1.2e10, 2e9, true), "1.2e10");
    // One form per axis: 500000 next to 1e6 would read badly.
    let million = Axis::fit(Some((0.0, 1e6)), 0.0, true);
    let labels: Vec<_> = million.ticks().iter().map(|&v| million.label(v)).collect();
    assert_eq!(labels, ["0", "2e5", "4e5", "6e5", "8e5", "1e6"]);
    let small = Axis::fit(Some((0.0, 5e-5)), 0.0, false);
    assert_eq!(small.label(2e-5), "2e-5");
    let around_zero = Axis::fit(Some((-1.0, 1.0)), 0.0, false);
    let labels: Vec<_> = around_zero
        .ticks()
        .iter()
        .map(|&v| around_zero.label(v))
        .collect();
    assert!(labels.contains(&"0".to_string()), "{labels:?}");
    assert!(!labels.iter().any(|l| l == "-0"));
}

#[test]
fn the_font_covers_the_labels() {
    let unknown = glyph('\u{1F600}');
    let wanted =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.,-+=()[]:/%_'!*<>#";
    let mut seen = std::collections::HashMap::new();
    for c in wanted.chars() {
        let g = glyph(c);
        assert_ne!(g, unknown, "{c:?} has a glyph");
        assert!(g.iter().all(|row| row >> GLYPH_W == 0), "{c:?} is 5 wide");
        assert!(g.iter().any(|&row| row != 0), "{c:?} is not blank");
        if let Some(other) = seen.insert(g, c) {
            panic!("{c:?} and {other:?} look the same");
        }
    }
    assert_eq!(glyph(' '), [0; 8]);
    // Descenders go below the baseline; other glyphs stay above it.
    assert!("gjpqy".chars().all(|c| glyph(c)[7] != 0));
    assert!("0aAbe.".chars().all(|c| glyph(c)[7] == 0));
    assert_eq!(glyph('?'), unknown);
}

#[test]
fn text_is_drawn_at_scale_both_ways() {
    let mut c = Canvas::new(40, 40, BACKGROUND);
    c.text((1, 1), "1", 2, INK);
    // '1' has a full-height stem in its middle column: 7 rows at 2× from y 1.
    assert!((1..15).all(|y| c.px[((y * 40 + 5) * 3) as usize] == 0));
    assert_eq!(text_width("ab", 2), 22);
    let mut up = Canvas::new(40, 40, BACKGROUND);
    up.text_up((1, 39), "-", 1, INK);
    // '-' turned a quarter left is a vertical bar in glyph row 3, the first five pixels up.
    let ink: Vec<usize> = (0..40).filter(|&y| up.px[(y * 40 + 4) * 3] == 0).collect();
    assert_eq!(ink, [34, 35, 36, 37, 38]);
}

#[test]
fn a_write_into_a_missing_folder_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("loss.png");
    let err = write_loss_png(&path, &[report(1, 1.0, None)]).unwrap_err();
    assert!(matches!(err, TrainError::Io { .. }), "{err}");
    assert!(!dir.path().join("missing").exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_failed_rename_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("keep"), "x").unwrap();
    let err = write_loss_png(&path, &[report(1, 1.0, None)]).unwrap_err();
    assert!(matches!(err, TrainError::Io { .. }), "{err}");
    assert!(!dir.path().join("loss.png.partial").exists());
    assert!(path.join("keep").exists());
}
