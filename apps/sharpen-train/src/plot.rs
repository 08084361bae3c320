//! `DIR/metrics.png`: loss and reward curves from `metrics.jsonl`, drawn without a plotting
//! library (a 5x7 bitmap font for the labels), written at each checkpoint and at the end.

use std::path::Path;

use anyhow::Context;

const W: usize = 720;
const PANEL_H: usize = 260;
const H: usize = 2 * PANEL_H;
const LEFT: usize = 112;
const RIGHT: usize = 20;
const TOP: usize = 30;
const BOTTOM: usize = 40;
const SCALE: usize = 2;

type Rgb = [u8; 3];
const BLACK: Rgb = [0, 0, 0];
const GREY: Rgb = [200, 200, 200];
const BLUE: Rgb = [31, 119, 180];
const GREEN: Rgb = [44, 160, 44];
const RED: Rgb = [214, 39, 40];
const ORANGE: Rgb = [255, 127, 14];

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
        _ => [0; 7],
    }
}

struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            pixels: vec![255; W * H * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
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

    fn text(&mut self, x: usize, y: usize, s: &str, c: Rgb) {
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

    fn text_width(s: &str) -> usize {
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
fn light(c: Rgb) -> Rgb {
    c.map(|v| (v as f64 + (255.0 - v as f64) * 0.7).round() as u8)
}

/// Trailing moving average over `window` points (fewer at the start).
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
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

/// One panel: series of (step, value) with their colours and names.
/// A named, coloured curve of (step, value) points.
type Series<'a> = (&'a str, Rgb, Vec<(f64, f64)>);

fn panel(canvas: &mut Canvas, top: usize, title: &str, series: &[Series<'_>]) {
    let (x0, x1) = (LEFT, W - RIGHT);
    let (y0, y1) = (top + TOP, top + PANEL_H - BOTTOM);
    let points = series.iter().flat_map(|s| s.2.iter());
    let (mut lo, mut hi, mut smin, mut smax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(s, v) in points {
        lo = lo.min(v);
        hi = hi.max(v);
        smin = smin.min(s);
        smax = smax.max(s);
    }
    canvas.text(LEFT, top + 6, title, BLACK);
    let mut legend_x = LEFT + Canvas::text_width(title) + 24;
    let shown: Vec<_> = series.iter().filter(|s| !s.2.is_empty()).collect();
    for (name, colour, _) in shown.iter().filter(|_| shown.len() > 1) {
        canvas.text(legend_x, top + 6, name, *colour);
        legend_x += Canvas::text_width(name) + 16;
    }
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
    let px = |s: f64| x0 as f64 + (s - smin) / (smax - smin) * (x1 - x0) as f64;
    let py = |v: f64| y1 as f64 - (v - lo) / (hi - lo) * (y1 - y0) as f64;
    // Long noisy curves: the raw values faintly, their moving average on top in full colour.
    let mut curves: Vec<(Rgb, Vec<(f64, f64)>)> = Vec::new();
    for (_, colour, points) in series.iter().filter(|s| s.2.len() > SMOOTH_FROM) {
        curves.push((light(*colour), points.clone()));
    }
    for (_, colour, points) in series {
        let window = (points.len() / 15).max(5);
        let shown = if points.len() > SMOOTH_FROM {
            moving_average(points, window)
        } else {
            points.clone()
        };
        curves.push((*colour, shown));
    }
    for (colour, points) in &curves {
        for pair in points.windows(2) {
            let a = (px(pair[0].0) as i64, py(pair[0].1) as i64);
            let b = (px(pair[1].0) as i64, py(pair[1].1) as i64);
            canvas.line(a, b, *colour);
        }
        // Short series (such as validation scores at checkpoints): a dot at each point.
        if points.len() <= SMOOTH_FROM {
            for &(s, v) in points {
                for (dx, dy) in (-2..=2).flat_map(|a| (-2..=2).map(move |b| (a, b))) {
                    canvas.set(px(s) as i64 + dx, py(v) as i64 + dy, *colour);
                }
            }
        }
    }
    let (hi_l, lo_l) = (label(hi), label(lo));
    canvas.text(
        x0.saturating_sub(Canvas::text_width(&hi_l) + 6),
        y0,
        &hi_l,
        BLACK,
    );
    canvas.text(
        x0.saturating_sub(Canvas::text_width(&lo_l) + 6),
        y1 - 14,
        &lo_l,
        BLACK,
    );
    let (s0, s1) = (label(smin), label(smax));
    canvas.text(x0, y1 + 8, &s0, BLACK);
    canvas.text(x1 - Canvas::text_width(&s1), y1 + 8, &s1, BLACK);
    canvas.text(
        (x0 + x1) / 2 - Canvas::text_width("step") / 2,
        y1 + 8,
        "step",
        GREY,
    );
}

/// The JSON lines of `path`; a missing file has none.
fn read_rows(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// (step, value) of `key` over `rows`, finite values only.
fn series(rows: &[serde_json::Value], key: &str) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// Reads `metrics` (and `validation`, when present: the reward of the fixed validation samples,
/// drawn over the training rewards) and writes the two-panel plot to `out` (through a temporary
/// file).
pub fn write_plot(metrics: &Path, validation: &Path, out: &Path) -> anyhow::Result<()> {
    let rows = read_rows(metrics)?;
    let validated = read_rows(validation)?;
    let series = |key: &str| series(&rows, key);
    let mut canvas = Canvas::new();
    panel(&mut canvas, 0, "loss", &[("loss", BLUE, series("loss"))]);
    panel(
        &mut canvas,
        PANEL_H,
        "reward",
        &[
            ("mean", BLUE, series("reward_mean")),
            ("best", GREEN, series("reward_best")),
            ("worst", RED, series("reward_worst")),
            (
                "validation",
                ORANGE,
                self::series(&validated, "reward_mean"),
            ),
        ],
    );
    write_png(out, &canvas.pixels, W, H)
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
    fn plots_curves_into_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        let lines: String = (1..=30)
            .map(|s| {
                format!(
                    "{{\"step\":{s},\"loss\":{},\"reward_mean\":{},\"reward_best\":{},\"reward_worst\":null}}\n",
                    1.0 / s as f64,
                    s as f64 * 0.01,
                    s as f64 * 0.02
                )
            })
            .collect();
        std::fs::write(&metrics, lines).unwrap();
        let validation = dir.path().join("validation.jsonl");
        let out = dir.path().join("metrics.png");
        write_plot(&metrics, &validation, &out).unwrap();
        let without = std::fs::read(&out).unwrap();
        std::fs::write(
            &validation,
            "{\"step\":0,\"reward_mean\":0.1}\n{\"step\":15,\"reward_mean\":0.3}\n{\"step\":30,\"reward_mean\":0.5}\n",
        )
        .unwrap();
        write_plot(&metrics, &validation, &out).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (W as u32, H as u32));
        let pixels = &buf[..info.buffer_size()];
        let count = |c: Rgb| pixels.chunks(3).filter(|p| *p == c).count();
        assert!(count(BLUE) > 200, "loss and reward-mean curves drawn");
        assert!(count(GREEN) > 100, "reward-best curve drawn");
        assert!(count(BLACK) > 1000, "axes and labels drawn");
        assert!(!dir.path().join("metrics.png.tmp").exists());
        let plotted = pixels[(PANEL_H + TOP) * W * 3..]
            .chunks(3)
            .filter(|p| *p == ORANGE)
            .count();
        assert!(
            plotted >= 3 * 25,
            "validation rewards drawn with a dot at each point, got {plotted} pixels"
        );
        assert_ne!(without, std::fs::read(&out).unwrap());
        assert!(
            count(light(BLUE)) > 100,
            "raw values drawn faintly under the average"
        );
    }

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
}
