//! `DIR/metrics.png`: loss and reward curves from `metrics.jsonl` (with the validation samples'
//! reward from `validation.jsonl` over the training rewards), written at each checkpoint and at
//! the end.

use std::path::Path;

use anyhow::Context;
use sharpen_app::plot::{panel, Axes, Canvas, Series, BLUE, GREEN, ORANGE, PURPLE, RED};

const W: usize = 720;
const PANEL_H: usize = 260;
const H: usize = 2 * PANEL_H;

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

/// Reads `metrics` (and `validation`, when present: the reward of the fixed validation samples,
/// drawn over the training rewards) and writes the two-panel plot to `out` (through a temporary
/// file).
pub fn write_plot(metrics: &Path, validation: &Path, out: &Path) -> anyhow::Result<()> {
    let rows = read_rows(metrics)?;
    let validated = read_rows(validation)?;
    let mut canvas = Canvas::new(W, H);
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
            Series::line("validation", ORANGE, series(&validated, "reward_mean")),
        ],
    );
    canvas.write_png(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sharpen_app::plot::{light, Rgb, BLACK};
    const TOP: usize = 30;

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
}
