//! Line charts as PNG without a plotting library (a 5x7 bitmap font for the labels): training
//! curves (`sharpen-train`'s metrics.png) and evaluation plots (`sharpen-eval compare`).

use std::path::Path;

use anyhow::Context;

pub type Rgb = [u8; 3];
pub const BLACK: Rgb = [0, 0, 0];
pub const GREY: Rgb = [200, 200, 200];
pub const BLUE: Rgb = [31, 119, 180];
pub const GREEN: Rgb = [44, 160, 44];
pub const RED: Rgb = [214, 39, 40];
pub const ORANGE: Rgb = [255, 127, 14];
pub const PURPLE: Rgb = [148, 103, 189];
pub const BROWN: Rgb = [140, 86, 75];
pub const PINK: Rgb = [227, 119, 194];
pub const OLIVE: Rgb = [188, 189, 34];
/// Distinct colours for series in order.
pub const PALETTE: [Rgb; 8] = [BLUE, ORANGE, GREEN, RED, PURPLE, BROWN, PINK, OLIVE];

const LEFT: usize = 112;
const RIGHT: usize = 20;
const TOP: usize = 30;
const BOTTOM: usize = 40;
const SCALE: usize = 2;
/// Height of a line of text.
const LINE: usize = 7 * SCALE + 4;
/// Margin inside the axes, as a fraction of the data's range.
const PAD: f64 = 0.04;

/// 5x7 glyphs, one byte per row (low 5 bits, left pixel = bit 4).
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [30, 1, 1, 14, 1, 1, 30],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        'a' => [0, 0, 14, 1, 15, 17, 15],
        'b' => [16, 16, 22, 25, 17, 17, 30],
        'c' => [0, 0, 14, 16, 16, 17, 14],
        'd' => [1, 1, 13, 19, 17, 17, 15],
        'e' => [0, 0, 14, 17, 31, 16, 14],
        'g' => [0, 15, 17, 17, 15, 1, 14],
        'h' => [16, 16, 22, 25, 17, 17, 17],
        'i' => [4, 0, 12, 4, 4, 4, 14],
        'k' => [16, 16, 18, 20, 24, 20, 18],
        'l' => [12, 4, 4, 4, 4, 4, 14],
        'm' => [0, 0, 26, 21, 21, 17, 17],
        'n' => [0, 0, 22, 25, 17, 17, 17],
        'o' => [0, 0, 14, 17, 17, 17, 14],
        'p' => [0, 0, 30, 17, 30, 16, 16],
        'r' => [0, 0, 22, 25, 16, 16, 16],
        's' => [0, 0, 14, 16, 14, 1, 30],
        't' => [8, 8, 28, 8, 8, 9, 6],
        'u' => [0, 0, 17, 17, 17, 19, 13],
        'w' => [0, 0, 17, 17, 21, 21, 10],
        'f' => [6, 9, 8, 28, 8, 8, 8],
        'j' => [2, 0, 6, 2, 2, 18, 12],
        'q' => [0, 0, 13, 19, 15, 1, 1],
        'v' => [0, 0, 17, 17, 17, 10, 4],
        'x' => [0, 0, 17, 10, 4, 10, 17],
        'y' => [0, 0, 17, 17, 15, 1, 14],
        'z' => [0, 0, 31, 2, 4, 8, 31],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        _ => [0; 7],
    }
}

/// An RGB8 image being drawn on.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            if x == x1 && y == y1 {
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

    pub fn text(&mut self, x: usize, y: usize, s: &str, c: Rgb) {
        for (k, ch) in s.chars().enumerate() {
            let rows = glyph(ch.to_ascii_lowercase());
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (1 << (4 - col)) != 0 {
                        for (dy, dx) in (0..SCALE).flat_map(|a| (0..SCALE).map(move |b| (a, b))) {
                            let px = x + k * 6 * SCALE + col * SCALE + dx;
                            let py = y + r * SCALE + dy;
                            self.set(px as i64, py as i64, c);
                        }
                    }
                }
            }
        }
    }

    pub fn text_width(s: &str) -> usize {
        s.chars().count() * 6 * SCALE
    }
}

fn label(v: f64) -> String {
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.2e}")
    }
}

/// Curves longer than this are drawn smoothed (over the faint raw values).
const SMOOTH_FROM: usize = 20;

/// `c` mixed 70% toward white.
pub fn light(c: Rgb) -> Rgb {
    c.map(|v| (v as f64 + (255.0 - v as f64) * 0.7).round() as u8)
}

/// Trailing moving average over `window` points (fewer at the start).
pub fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(step, v))| {
            sum += v;
            if i >= window {
                sum -= points[i - window].1;
            }
            (step, sum / (i + 1).min(window) as f64)
        })
        .collect()
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Connected points; long curves smoothed by a moving average over their faint raw values,
    /// short ones with a dot at each point.
    Line,
    /// A dot at each point, unconnected.
    Points,
}

/// A named, coloured series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub colour: Rgb,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
}

impl Series {
    pub fn line(name: impl Into<String>, colour: Rgb, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            colour,
            points,
            style: Style::Line,
        }
    }

    pub fn points(name: impl Into<String>, colour: Rgb, points: Vec<(f64, f64)>) -> Self {
        Self {
            style: Style::Points,
            ..Self::line(name, colour, points)
        }
    }
}

/// Axes of a panel.
#[derive(Debug, Clone, Copy)]
pub struct Axes<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    /// Logarithmic x axis (positive x only).
    pub log_x: bool,
}

fn dot(canvas: &mut Canvas, (x, y): (i64, i64), c: Rgb) {
    for (dx, dy) in (-2..=2).flat_map(|a| (-2..=2).map(move |b| (a, b))) {
        canvas.set(x + dx, y + dy, c);
    }
}

/// Draws one panel of `canvas`, rows `top .. top + height`, with a legend when more than one
/// series has points.
pub fn panel(canvas: &mut Canvas, top: usize, height: usize, axes: Axes<'_>, series: &[Series]) {
    let (x0, x1) = (LEFT, canvas.width - RIGHT);
    let (y0, y1) = (top + TOP, top + height - BOTTOM);
    let fx = |x: f64| if axes.log_x { x.log10() } else { x };
    let points = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, _)| !axes.log_x || *x > 0.0);
    let (mut lo, mut hi, mut smin, mut smax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(s, v) in points {
        lo = lo.min(v);
        hi = hi.max(v);
        smin = smin.min(fx(s));
        smax = smax.max(fx(s));
    }
    canvas.text(LEFT, top + 6, axes.title, BLACK);
    // The legend follows the title, wrapping onto more lines (the plot area moves down).
    let (mut legend_x, mut legend_y) = (LEFT + Canvas::text_width(axes.title) + 24, top + 6);
    let shown: Vec<&Series> = series.iter().filter(|s| !s.points.is_empty()).collect();
    for s in shown.iter().filter(|_| shown.len() > 1) {
        let w = Canvas::text_width(&s.name);
        if legend_x + w > x1 && legend_x > LEFT {
            legend_x = LEFT;
            legend_y += LINE;
        }
        canvas.text(legend_x, legend_y, &s.name, s.colour);
        legend_x += w + 16;
    }
    let y0 = y0 + (legend_y - (top + 6));
    for x in x0..=x1 {
        canvas.set(x as i64, y1 as i64, BLACK);
        canvas.set(x as i64, y0 as i64, GREY);
    }
    for y in y0..=y1 {
        canvas.set(x0 as i64, y as i64, BLACK);
    }
    if lo > hi {
        canvas.text(x0 + 10, (y0 + y1) / 2, "no data", GREY);
        return;
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    if smax <= smin {
        smax = smin + 1.0;
    }
    // A margin of PAD of the range on every side keeps points off the axes.
    let data = (lo, hi, smin, smax);
    let (dy, dx) = ((hi - lo) * PAD, (smax - smin) * PAD);
    let (lo, hi, smin, smax) = (lo - dy, hi + dy, smin - dx, smax + dx);
    let pxf = |f: f64| (x0 as f64 + (f - smin) / (smax - smin) * (x1 - x0) as f64) as i64;
    let px = |s: f64| pxf(fx(s));
    let py = |v: f64| (y1 as f64 - (v - lo) / (hi - lo) * (y1 - y0) as f64) as i64;
    for s in series {
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, _)| !axes.log_x || *x > 0.0)
            .collect();
        if s.style == Style::Points || points.len() <= SMOOTH_FROM {
            for &(x, v) in &points {
                dot(canvas, (px(x), py(v)), s.colour);
            }
        }
        if s.style == Style::Points {
            continue;
        }
        // Long noisy curves: the raw values faintly, their moving average on top in full colour.
        let shown = if points.len() > SMOOTH_FROM {
            for pair in points.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                canvas.line((px(a.0), py(a.1)), (px(b.0), py(b.1)), light(s.colour));
            }
            moving_average(&points, (points.len() / 15).max(5))
        } else {
            points
        };
        for pair in shown.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            canvas.line((px(a.0), py(a.1)), (px(b.0), py(b.1)), s.colour);
        }
    }
    // The data's extents, labelled where they fall (ticks on the axes).
    let (lo, hi, smin, smax) = data;
    for v in [hi, lo] {
        let (l, y) = (label(v), py(v));
        for x in x0 - 4..x0 {
            canvas.set(x as i64, y, BLACK);
        }
        let top = (y - 7).max(0) as usize;
        canvas.text(
            x0.saturating_sub(Canvas::text_width(&l) + 6),
            top,
            &l,
            BLACK,
        );
    }
    let unfx = |v: f64| if axes.log_x { 10f64.powf(v) } else { v };
    for (f, right) in [(smin, false), (smax, true)] {
        let (l, x) = (label(unfx(f)), pxf(f).max(0) as usize);
        for y in y1..y1 + 4 {
            canvas.set(x as i64, y as i64, BLACK);
        }
        let w = Canvas::text_width(&l);
        let at = if right { x.saturating_sub(w) } else { x };
        canvas.text(at, y1 + 8, &l, BLACK);
    }
    canvas.text(
        (x0 + x1) / 2 - Canvas::text_width(axes.x_label) / 2,
        y1 + 8,
        axes.x_label,
        GREY,
    );
}

impl Canvas {
    /// Writes the canvas as a PNG (through a temporary file and a rename).
    pub fn write_png(&self, out: &Path) -> anyhow::Result<()> {
        write_png(out, &self.pixels, self.width, self.height)
    }
}

/// Writes RGB8 pixels as a PNG, through a temporary file and a rename.
pub fn write_png(out: &Path, rgb: &[u8], width: usize, height: usize) -> anyhow::Result<()> {
    let tmp = out.with_extension("png.tmp");
    {
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        let mut encoder =
            png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().context("PNG header")?;
        writer.write_image_data(rgb).context("PNG data")?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_trails_over_its_window() {
        let pts: Vec<(f64, f64)> = [1.0, 3.0, 5.0, 7.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64, v))
            .collect();
        let avg = moving_average(&pts, 2);
        assert_eq!(avg, vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]);
    }

    #[test]
    fn a_log_axis_spaces_decades_evenly_and_points_stay_unconnected() {
        let mut canvas = Canvas::new(400, 200);
        let axes = Axes {
            title: "reward vs nfe",
            x_label: "nfe per image",
            log_x: true,
        };
        // Three decades and a non-positive x that a log axis cannot show.
        let curve = vec![(1.0, 0.0), (10.0, 0.5), (100.0, 1.0), (0.0, 5.0)];
        panel(
            &mut canvas,
            0,
            200,
            axes,
            &[Series::points("best of n", RED, curve)],
        );
        let red_columns: Vec<usize> = (0..400)
            .filter(|&x| (0..200).any(|y| canvas.pixels[(y * 400 + x) * 3..][..3] == RED))
            .collect();
        // Dots are 5 px wide; legend text is drawn only for two or more series.
        let centres: Vec<usize> = red_columns.chunks(5).map(|c| c[2]).collect();
        assert_eq!(centres.len(), 3, "{red_columns:?}");
        let (a, b) = (centres[1] - centres[0], centres[2] - centres[1]);
        assert!(a.abs_diff(b) <= 1, "decades equally spaced: {centres:?}");
        // The y range ignores the hidden point (y = 5): the top dot sits near the top of the
        // plot area, inside its margin.
        let top_red = (0..200)
            .find(|&y| (0..400).any(|x| canvas.pixels[(y * 400 + x) * 3..][..3] == RED))
            .unwrap();
        let margin = (PAD * (200 - TOP - BOTTOM) as f64 / (1.0 + 2.0 * PAD)) as usize;
        assert!(
            top_red + 2 >= TOP && top_red <= TOP + margin + 2,
            "{top_red}"
        );
    }
}
