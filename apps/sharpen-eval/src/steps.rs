//! Training metrics of runs paired step by step (`sharpen-eval runs --training W`). Runs with the
//! same seed, data, batch, devices and trajectory settings draw the same images, timesteps and
//! noise at every step, so a run's loss or training reward minus another's on the same step
//! cancels what the draw does to both: against a frozen control (the same config at a learning
//! rate of 1e-20) it is what training changed. Each window of steps is one row; its interval is
//! over the window's steps.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use sharpen_app::stats::{mean_ci, MeanCi};

/// The settings that decide what a run draws at each step.
const DRAW_KEYS: [&str; 5] = ["seed", "data", "batch_size", "devices", "trajectory"];

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub run: String,
    pub from_step: usize,
    pub to_step: usize,
    /// The run's loss minus the reference's, over the window's steps.
    pub loss: MeanCi,
    /// The same for the training reward (`reward_mean`), where both methods score one.
    pub reward: Option<MeanCi>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepTable {
    pub window: usize,
    /// Runs whose draws differ from the reference's, with the settings that differ: their steps
    /// pair by position only.
    pub other_draws: Vec<String>,
    pub rows: Vec<Window>,
}

/// One step's loss and training reward (`None`: the method scores none).
type Step = (f64, Option<f64>);
type Metrics = BTreeMap<usize, Step>;

fn read(dir: &Path) -> anyhow::Result<Metrics> {
    let path = dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Metrics::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let (Some(step), Some(loss)) = (v["step"].as_u64(), v["loss"].as_f64()) else {
            anyhow::bail!(
                "{} line {}: no `step` and `loss` (not a sharpen-train metrics line)",
                path.display(),
                i + 1
            );
        };
        // A resumed run writes its steps after the checkpoint again: the last line wins.
        out.insert(step as usize, (loss, v["reward_mean"].as_f64()));
    }
    if out.is_empty() {
        anyhow::bail!("{}: no training steps", path.display());
    }
    Ok(out)
}

/// `runs` (folder, parsed config.toml; the first is the reference) paired step by step in
/// windows of `window` steps.
pub fn table(runs: &[(&Path, &toml::Table)], window: usize) -> anyhow::Result<StepTable> {
    anyhow::ensure!(window > 0, "--training takes a window of at least 1 step");
    let (reference_dir, reference_config) = runs[0];
    let reference = read(reference_dir)?;
    let mut rows = Vec::new();
    let mut other_draws = Vec::new();
    for (dir, config) in &runs[1..] {
        let differ: Vec<&str> = DRAW_KEYS
            .into_iter()
            .filter(|k| config.get(*k) != reference_config.get(*k))
            .collect();
        if !differ.is_empty() {
            other_draws.push(format!("{} ({})", dir.display(), differ.join(", ")));
        }
        let metrics = read(dir)?;
        let common: Vec<(usize, &Step, &Step)> = metrics
            .iter()
            .filter_map(|(s, m)| reference.get(s).map(|r| (*s, m, r)))
            .collect();
        if common.is_empty() {
            anyhow::bail!(
                "{} and {} share no training step",
                dir.display(),
                reference_dir.display()
            );
        }
        for chunk in common.chunks(window) {
            let loss: Vec<f64> = chunk.iter().map(|(_, m, r)| m.0 - r.0).collect();
            let reward: Option<Vec<f64>> =
                chunk.iter().map(|(_, m, r)| Some(m.1? - r.1?)).collect();
            rows.push(Window {
                run: dir.display().to_string(),
                from_step: chunk[0].0,
                to_step: chunk[chunk.len() - 1].0,
                loss: mean_ci(&loss),
                reward: reward.map(|r| mean_ci(&r)),
            });
        }
    }
    Ok(StepTable {
        window,
        other_draws,
        rows,
    })
}

impl StepTable {
    pub fn markdown(&self, reference: &str) -> String {
        let mut out = format!(
            "\nTraining metrics minus {reference}'s on the same steps, in windows of {} steps \
             (95% CI over the window's steps)\n\n| run | steps | training reward | loss |\n\
             |---|---|---|---|\n",
            self.window
        );
        let cell = |m: &MeanCi| format!("{:+.4} ± {:.4}", m.mean, m.ci95);
        for w in &self.rows {
            out.push_str(&format!(
                "| {} | {}–{} | {} | {} |\n",
                w.run,
                w.from_step,
                w.to_step,
                w.reward.as_ref().map_or("–".into(), cell),
                cell(&w.loss)
            ));
        }
        if !self.other_draws.is_empty() {
            out.push_str(&format!(
                "\nThese runs draw other images, timesteps or noise than the reference, so their \
                 steps pair by position only: {}.\n",
                self.other_draws.join("; ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        root: &Path,
        name: &str,
        config: &str,
        lines: &[&str],
    ) -> (std::path::PathBuf, toml::Table) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), lines.join("\n")).unwrap();
        (dir, toml::from_str(config).unwrap())
    }

    #[test]
    fn training_metrics_pair_step_by_step_in_windows() {
        let tmp = tempfile::tempdir().unwrap();
        let config = "seed = 0\nbatch_size = 8\n[data]\nkind = \"shapes\"\n";
        let line = |s: usize, loss: f64, reward: f64| {
            format!(r#"{{"step":{s},"loss":{loss},"reward_mean":{reward},"lr":0.1}}"#)
        };
        let control: Vec<String> = (1..=5).map(|s| line(s, 0.5, 0.25 * s as f64)).collect();
        // The trained run: loss 0.1 above, then 0.1, 0.2, 0.3 below; reward 0.5 above at each
        // step. Step 5 is missing (the run stopped), and a resumed step 2 was written twice.
        let mut trained: Vec<String> = [(1, 0.6), (2, 0.9), (3, 0.3), (4, 0.2)]
            .iter()
            .map(|&(s, l)| line(s, l, 0.25 * s as f64 + 0.5))
            .collect();
        trained.insert(2, line(2, 0.4, 1.0));
        let c: Vec<&str> = control.iter().map(String::as_str).collect();
        let t: Vec<&str> = trained.iter().map(String::as_str).collect();
        let (cd, cc) = run(tmp.path(), "control", config, &c);
        let (td, tc) = run(tmp.path(), "trained", config, &t);
        let paired = table(&[(&cd, &cc), (&td, &tc)], 2).unwrap();
        assert!(paired.other_draws.is_empty());
        assert_eq!(paired.rows.len(), 2, "steps 1-2 and 3-4");
        let (a, b) = (&paired.rows[0], &paired.rows[1]);
        assert_eq!(
            (a.from_step, a.to_step, b.from_step, b.to_step),
            (1, 2, 3, 4)
        );
        // Steps 1, 2: +0.1, -0.1; steps 3, 4: -0.2, -0.3 (sd 0.0707, t(1) 12.706).
        assert!(a.loss.mean.abs() < 1e-12 && a.loss.n == 2, "{a:?}");
        assert!((b.loss.mean - -0.25).abs() < 1e-12, "{b:?}");
        assert!((b.loss.ci95 - 12.706 * 0.05).abs() < 1e-9, "{b:?}");
        assert!((a.reward.unwrap().mean - 0.5).abs() < 1e-12);
        let md = paired.markdown("control");
        assert!(
            md.contains("| 3–4 | +0.5000 ± 0.0000 | -0.2500 ± 0.6353 |"),
            "{md}"
        );

        // A method without a training reward, and other draws, are said.
        let plain: Vec<String> = (1..=2)
            .map(|s| format!(r#"{{"step":{s},"loss":0.5,"reward_mean":null}}"#))
            .collect();
        let p: Vec<&str> = plain.iter().map(String::as_str).collect();
        let (pd, pc) = run(
            tmp.path(),
            "plain",
            &config.replace("seed = 0", "seed = 1"),
            &p,
        );
        let other = table(&[(&cd, &cc), (&pd, &pc)], 10).unwrap();
        assert!(other.rows[0].reward.is_none());
        let md = other.markdown("control");
        assert!(md.contains("| 1–2 | – | +0.0000 ± 0.0000 |"), "{md}");
        assert!(md.contains("plain (seed)"), "{md}");

        // Lines that are not metrics are named.
        let (bd, bc) = run(tmp.path(), "bad", config, &[r#"{"step":1}"#]);
        let err = format!("{:#}", table(&[(&cd, &cc), (&bd, &bc)], 2).unwrap_err());
        assert!(
            err.contains("bad/metrics.jsonl line 1: no `step` and `loss`"),
            "{err}"
        );
    }
}
