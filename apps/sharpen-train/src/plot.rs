//! `DIR/metrics.png`: loss and reward curves from `metrics.jsonl` and, when `validation.jsonl`
//! has rows, the validation samples' reward in a panel of its own (its own scale: it moves by
//! hundredths where the training rewards spread over the whole 0-1 range), written at each
//! checkpoint and at the end.

use std::path::Path;

use anyhow::Context;
use sharpen_app::plot::{panel, Axes, Canvas, Series, BLUE, GREEN, ORANGE, PURPLE, RED};

use sharpen_app::validation::Validation;

const W: usize = 720;
const PANEL_H: usize = 260;

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
pub fn series(rows: &[serde_json::Value], key: &str) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// Reads `metrics` and writes the plot to `out` (through a temporary file): loss, training
/// rewards, and, when there are `validations` (the reward of the fixed validation samples), their
/// reward, titled with its paired change (rows of `prompts`).
pub fn write_plot(
    metrics: &Path,
    validations: &[Validation],
    prompts: usize,
    out: &Path,
) -> anyhow::Result<()> {
    let rows = read_rows(metrics)?;
    let validated: Vec<(f64, f64)> = validations
        .iter()
        .map(|v| (v.step as f64, v.reward_mean))
        .filter(|(_, r)| r.is_finite())
        .collect();
    let panels = if validated.is_empty() { 2 } else { 3 };
    let mut canvas = Canvas::new(W, panels * PANEL_H);
    let axes = |title| Axes {
        title,
        x_label: "step",
        log_x: false,
    };
    panel(
        &mut canvas,
        0,
        PANEL_H,
        axes("loss"),
        &[Series::line("loss", BLUE, series(&rows, "loss"))],
    );
    panel(
        &mut canvas,
        PANEL_H,
        PANEL_H,
        axes("reward"),
        &[
            Series::line("mean", BLUE, series(&rows, "reward_mean")),
            Series::line("best", GREEN, series(&rows, "reward_best")),
            Series::line("worst", RED, series(&rows, "reward_worst")),
            // sharpen-rlhf: the reward of its online generations (the current model's samples).
            Series::line(
                "generations",
                PURPLE,
                series(&rows, "generation_reward_mean"),
            ),
        ],
    );
    if !validated.is_empty() {
        // Its own scale magnifies hundredths: the title says how far it moved, and how surely.
        // Never fatal here: the end of the run reports the same error.
        let change = sharpen_app::validation::change(validations, prompts)
            .ok()
            .flatten();
        let title = validation_title(change.as_ref());
        panel(
            &mut canvas,
            2 * PANEL_H,
            PANEL_H,
            axes(&title),
            &[Series::line("validation", ORANGE, validated)],
        );
    }
    canvas.write_png(out)
}

/// The validation panel's title (the plot's font is ASCII): the paired change since the first
/// validation with its 95% interval, when there are two validations of whole rows.
fn validation_title(change: Option<&sharpen_app::validation::Change>) -> String {
    match change {
        Some(c) => format!(
            "validation: {:+.3} +- {:.3} (95% ci, {} seeds)",
            c.change.mean, c.change.ci95, c.change.n
        ),
        None => "validation reward (fixed prompts and seeds)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sharpen_app::plot::{light, Rgb, BLACK};
    const TOP: usize = 30;

    #[test]
    fn the_validation_title_carries_the_paired_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validation.jsonl");
        std::fs::write(
            &path,
            "{\"step\":0,\"reward_mean\":0.4,\"scores\":[0.5,0.25,0.5]}\n{\"step\":9,\"reward_mean\":0.6,\"scores\":[0.75,0.5,0.5]}\n",
        )
        .unwrap();
        let rows = sharpen_app::validation::read(&path).unwrap();
        let change = sharpen_app::validation::change(&rows, 1).unwrap().unwrap();
        let title = validation_title(Some(&change));
        assert!(title.starts_with("validation: +0.167 +- "), "{title}");
        assert!(title.ends_with("(95% ci, 3 seeds)"), "{title}");
        assert!(
            title.is_ascii() && title.len() <= 50,
            "fits the panel: {title}"
        );
        assert!(validation_title(None).starts_with("validation reward"));
    }

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
        let out = dir.path().join("metrics.png");
        write_plot(&metrics, &[], 1, &out).unwrap();
        let without = std::fs::read(&out).unwrap();
        let size = |path: &Path| {
            let decoder =
                png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
            let info = decoder.read_info().unwrap().info().clone();
            (info.width as usize, info.height as usize)
        };
        assert_eq!(
            size(&out),
            (W, 2 * PANEL_H),
            "no validation panel without validations"
        );
        let validations: Vec<Validation> = [(0, 0.1), (15, 0.3), (30, 0.5)]
            .into_iter()
            .map(|(step, reward_mean)| Validation {
                step,
                reward_mean,
                scores: vec![reward_mean],
            })
            .collect();
        write_plot(&metrics, &validations, 1, &out).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (W as u32, 3 * PANEL_H as u32));
        let pixels = &buf[..info.buffer_size()];
        let count = |c: Rgb| pixels.chunks(3).filter(|p| *p == c).count();
        assert!(count(BLUE) > 200, "loss and reward-mean curves drawn");
        assert!(count(GREEN) > 100, "reward-best curve drawn");
        assert!(count(BLACK) > 1000, "axes and labels drawn");
        assert!(!dir.path().join("metrics.png.tmp").exists());
        let orange = |rows: std::ops::Range<usize>| {
            pixels[rows.start * W * 3..rows.end * W * 3]
                .chunks(3)
                .filter(|p| *p == ORANGE)
                .count()
        };
        let plotted = orange(2 * PANEL_H + TOP..3 * PANEL_H);
        assert!(
            plotted >= 3 * 25,
            "validation rewards drawn in the third panel with a dot at each point, got {plotted} pixels"
        );
        assert_eq!(orange(0..2 * PANEL_H), 0, "and only there");
        assert_ne!(without, std::fs::read(&out).unwrap());
        assert!(
            count(light(BLUE)) > 100,
            "raw values drawn faintly under the average"
        );
    }
}
