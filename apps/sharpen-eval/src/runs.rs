//! Training runs side by side on their validation samples. `sharpen-train` validates every run
//! on fixed prompts and noise seeds, so two runs with the same validation settings drew the same
//! noise: a run's scores minus another's on the same seed cancel what the seed does to both, as a
//! run's own change (last validation minus first) does. This reads the run folders only; it
//! generates nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use sharpen_app::stats::MeanCi;
use sharpen_app::validation::{paired, verdict, Validation};

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Run folders written by sharpen-train (each holds config.toml and validation.jsonl). The
    /// first is the reference: every other run's validation is paired with it seed by seed.
    #[arg(required = true, num_args = 1..)]
    runs: Vec<PathBuf>,
    /// Compare the validations of this training step (every run must have one); default: each
    /// run's last.
    #[arg(long)]
    step: Option<usize>,
    /// Also pair the runs' training metrics (metrics.jsonl: the loss, and the training reward
    /// where the method scores one) step by step against the first run, in windows of this many
    /// steps. Runs with the same seed, data, batch, devices and trajectory settings draw the same
    /// images, timesteps and noise, so against a frozen control (the same config at lr 1e-20)
    /// the difference is what training changed.
    #[arg(long, value_name = "WINDOW")]
    training: Option<usize>,
    /// Also write the table as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The validation settings that decide a run's validation samples: two runs pair seed by seed
/// only when all of them agree. `prompts` empty means "the first `count` captions of the data",
/// so the data's settings then join them.
const SAMPLE_KEYS: [&str; 8] = [
    "prompts",
    "count",
    "seeds",
    "seed",
    "sampler",
    "steps",
    "guidance",
    "batch_size",
];

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub run: String,
    pub first_step: usize,
    pub first: f64,
    pub step: usize,
    pub reward: f64,
    /// The validation at `step` minus the first, seed by seed (`None` when `step` is the first).
    pub change: Option<MeanCi>,
    /// This run's validation at `step` minus the reference's, seed by seed (`None` for the
    /// reference itself).
    pub minus_reference: Option<MeanCi>,
    /// This run's first validation equals the reference's: both started from the same model.
    pub same_start: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunsTable {
    pub reference: String,
    pub seeds: usize,
    pub prompts: usize,
    pub rows: Vec<RunRow>,
    /// With `--training`: the training metrics paired step by step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<crate::steps::StepTable>,
}

/// One run folder: its config (as TOML) and its validations.
struct Run {
    dir: PathBuf,
    config: toml::Table,
    validations: Vec<Validation>,
}

impl Run {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("config.toml");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is this a sharpen-train run folder?)",
                path.display()
            )
        })?;
        let config: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let validations = sharpen_app::validation::read(&dir.join("validation.jsonl"))?;
        if validations.is_empty() {
            anyhow::bail!(
                "{}: no validations in validation.jsonl (the run stopped before its first, or \
                 [validation] enabled = false)",
                dir.display()
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            validations,
        })
    }

    fn name(&self) -> String {
        self.dir.display().to_string()
    }

    fn validation_key(&self, key: &str) -> Option<&toml::Value> {
        self.config.get("validation")?.as_table()?.get(key)
    }

    /// The settings that decide the validation samples, as (name, value) for the error messages.
    fn sample_settings(&self) -> Vec<(String, Option<&toml::Value>)> {
        let mut out: Vec<(String, Option<&toml::Value>)> = SAMPLE_KEYS
            .iter()
            .map(|k| (format!("[validation] {k}"), self.validation_key(k)))
            .collect();
        out.push(("resolution".into(), self.config.get("resolution")));
        let listed = self
            .validation_key("prompts")
            .and_then(|p| p.as_array())
            .is_some_and(|p| !p.is_empty());
        if !listed {
            out.push((
                "[data] (the validation prompts come from it)".into(),
                self.config.get("data"),
            ));
        }
        out
    }

    fn seeds(&self) -> anyhow::Result<usize> {
        self.validation_key("seeds")
            .and_then(|v| v.as_integer())
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0)
            .with_context(|| {
                format!(
                    "{}: config.toml has no [validation] seeds (a positive integer)",
                    self.dir.join("config.toml").display()
                )
            })
    }

    fn first(&self) -> &Validation {
        self.validations
            .iter()
            .min_by_key(|v| v.step)
            .expect("checked non-empty")
    }

    /// The validation at `step`, or the last.
    fn at(&self, step: Option<usize>) -> anyhow::Result<&Validation> {
        match step {
            None => Ok(self
                .validations
                .iter()
                .max_by_key(|v| v.step)
                .expect("checked non-empty")),
            Some(s) => self
                .validations
                .iter()
                .find(|v| v.step == s)
                .with_context(|| {
                    let steps: Vec<String> = self
                        .validations
                        .iter()
                        .map(|v| v.step.to_string())
                        .collect();
                    format!(
                        "{}: no validation at step {s} (it has steps {})",
                        self.dir.display(),
                        steps.join(", ")
                    )
                }),
        }
    }
}

fn show(v: Option<&toml::Value>) -> String {
    v.map_or("unset".into(), |v| v.to_string())
}

/// The table for `dirs` (the first is the reference); with `training`, the training metrics in
/// windows of that many steps.
pub fn table(
    dirs: &[PathBuf],
    step: Option<usize>,
    training: Option<usize>,
) -> anyhow::Result<RunsTable> {
    let runs = dirs
        .iter()
        .map(|d| Run::open(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let reference = &runs[0];
    for run in &runs[1..] {
        for ((name, a), (_, b)) in reference
            .sample_settings()
            .iter()
            .zip(run.sample_settings())
        {
            if *a != b {
                anyhow::bail!(
                    "{} has {name} = {} but {} has {}: their validation samples do not share \
                     prompts and noise, so they cannot be paired by seed",
                    run.name(),
                    show(b),
                    reference.name(),
                    show(*a)
                );
            }
        }
    }
    let seeds = reference.seeds()?;
    let scores = reference.first().scores.len();
    if !scores.is_multiple_of(seeds) {
        anyhow::bail!(
            "{}: {scores} scores per validation do not divide into [validation] seeds = {seeds}",
            reference.name()
        );
    }
    let prompts = scores / seeds;
    let reference_at = reference.at(step)?;
    let mut rows = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let first = run.first();
        let at = run.at(step)?;
        let change = (at.step != first.step)
            .then(|| paired(first, at, prompts))
            .transpose()
            .with_context(|| format!("{}: steps {} and {}", run.name(), first.step, at.step))?;
        let minus_reference = (i > 0)
            .then(|| paired(reference_at, at, prompts))
            .transpose()
            .with_context(|| {
                format!(
                    "{} step {} against {}",
                    run.name(),
                    at.step,
                    reference.name()
                )
            })?;
        rows.push(RunRow {
            run: run.name(),
            first_step: first.step,
            first: first.mean(),
            step: at.step,
            reward: at.mean(),
            change,
            minus_reference,
            same_start: first.scores == reference.first().scores,
        });
    }
    let training = training
        .map(|w| {
            let configs: Vec<(&Path, &toml::Table)> =
                runs.iter().map(|r| (r.dir.as_path(), &r.config)).collect();
            crate::steps::table(&configs, w)
        })
        .transpose()?;
    Ok(RunsTable {
        reference: reference.name(),
        seeds,
        prompts,
        rows,
        training,
    })
}

fn cell(m: Option<&MeanCi>, resolved: [&str; 2]) -> String {
    m.map_or(String::new(), |m| {
        format!("{:+.3} ± {:.3} ({})", m.mean, m.ci95, verdict(m, resolved))
    })
}

impl RunsTable {
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Validation rewards paired by seed ({} seeds x {} prompts; 95% CI over seeds); \
             reference {}\n\n| run | validation reward | change from the first validation | \
             minus the reference |\n|---|---|---|---|\n",
            self.seeds, self.prompts, self.reference
        );
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {:.3} at step {} -> {:.3} at step {} | {} | {} |\n",
                r.run,
                r.first,
                r.first_step,
                r.reward,
                r.step,
                cell(r.change.as_ref(), ["a resolved rise", "a resolved fall"]),
                cell(
                    r.minus_reference.as_ref(),
                    [
                        "resolved above the reference",
                        "resolved below the reference"
                    ]
                )
            ));
        }
        let apart: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| !r.same_start)
            .map(|r| r.run.as_str())
            .collect();
        if !apart.is_empty() {
            out.push_str(&format!(
                "\nThe first validation of {} differs from the reference's: those runs did not \
                 start from the same model.\n",
                apart.join(", ")
            ));
        }
        if let Some(t) = &self.training {
            out.push_str(&t.markdown(&self.reference));
        }
        out
    }
}

pub fn run(args: &RunsArgs) -> anyhow::Result<()> {
    let table = table(&args.runs, args.step, args.training)?;
    if let Some(path) = &args.json {
        crate::shapes::write(path, &serde_json::to_string_pretty(&table)?)?;
    }
    print!("{}", table.markdown());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
name = "r"
method = "standard"
resolution = 32
[data]
kind = "shapes"
[validation]
enabled = true
prompts = ["a red circle", "a blue square"]
count = 4
seeds = 3
seed = 1234
sampler = "ddim"
steps = 25
guidance = 2.0
batch_size = 16
"#;

    /// A run folder with `config` and one validation line per (step, scores).
    fn run_dir(root: &Path, name: &str, config: &str, lines: &[(usize, &[f64])]) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let text: Vec<String> = lines
            .iter()
            .map(|(s, v)| serde_json::to_string(&Validation::new(*s, v.to_vec())).unwrap())
            .collect();
        std::fs::write(dir.join("validation.jsonl"), text.join("\n")).unwrap();
        dir
    }

    const START: [f64; 6] = [0.5, 0.5, 0.0, 1.0, 0.25, 0.75];

    #[test]
    fn runs_pair_seed_by_seed_with_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        // 2 prompts x 3 seeds, seed-major. a: per-seed changes 0.1, 0.15, 0.125 by step 100.
        let a = run_dir(
            tmp.path(),
            "a",
            CONFIG,
            &[
                (0, &START),
                (50, &[0.0; 6]),
                (100, &[0.7, 0.5, 0.3, 1.0, 0.25, 1.0]),
            ],
        );
        // b: the same start; at step 100 each seed 0.2, 0.3, 0.25 above its start, so b minus a
        // per seed is 0.1, 0.15, 0.125 (b's start lines up with a's first).
        let b = run_dir(
            tmp.path(),
            "b",
            CONFIG,
            &[(0, &START), (100, &[0.7, 0.7, 0.3, 1.3, 0.5, 1.0])],
        );
        let t = table(&[a.clone(), b.clone()], None, None).unwrap();
        assert_eq!((t.seeds, t.prompts), (3, 2));
        assert_eq!(t.reference, a.display().to_string());
        let ci = 4.303 * 0.025 / 3f64.sqrt();
        let ra = &t.rows[0];
        assert_eq!((ra.first_step, ra.step), (0, 100));
        assert!((ra.first - 0.5).abs() < 1e-12 && (ra.reward - 0.625).abs() < 1e-12);
        let ca = ra.change.unwrap();
        assert!((ca.mean - 0.125).abs() < 1e-12 && (ca.ci95 - ci).abs() < 1e-9 && ca.n == 3);
        assert!(ra.minus_reference.is_none() && ra.same_start);
        let rb = &t.rows[1];
        assert!((rb.change.unwrap().mean - 0.25).abs() < 1e-12);
        let d = rb.minus_reference.unwrap();
        assert!(
            (d.mean - 0.125).abs() < 1e-12 && (d.ci95 - ci).abs() < 1e-9,
            "{d:?}"
        );
        assert!(rb.same_start);
        let md = t.markdown();
        assert!(md.contains("3 seeds x 2 prompts"), "{md}");
        assert!(
            md.contains("| 0.500 at step 0 -> 0.750 at step 100 | +0.250 ± 0.124 (a resolved rise) | +0.125 ± 0.062 (resolved above the reference) |"),
            "{md}"
        );
        assert!(!md.contains("did not start from the same model"), "{md}");

        // `--step 50`: only a has it.
        let err = format!(
            "{:#}",
            table(&[a.clone(), b.clone()], Some(50), None).unwrap_err()
        );
        assert!(
            err.contains("b: no validation at step 50 (it has steps 0, 100)"),
            "{err}"
        );
        // At step 0 nothing has changed and nothing differs.
        let t0 = table(&[a.clone(), b.clone()], Some(0), None).unwrap();
        assert!(t0.rows[0].change.is_none());
        assert_eq!(t0.rows[1].minus_reference.unwrap().mean, 0.0);

        // A run from another model: paired all the same, and said.
        let c = run_dir(tmp.path(), "c", CONFIG, &[(0, &[0.5; 6]), (10, &[0.5; 6])]);
        let tc = table(&[a.clone(), c.clone()], None, None).unwrap();
        assert!(!tc.rows[1].same_start);
        assert!((tc.rows[1].minus_reference.unwrap().mean - -0.125).abs() < 1e-12);
        let md = tc.markdown();
        assert!(md.contains("resolved below the reference"), "{md}");
        assert!(
            md.contains(&format!("The first validation of {} differs", c.display())),
            "{md}"
        );
        // One run alone: its own change.
        assert_eq!(table(&[b], None, None).unwrap().rows.len(), 1);
    }

    #[test]
    fn runs_that_do_not_share_validation_noise_are_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let lines: &[(usize, &[f64])] = &[(0, &START), (5, &START)];
        let a = run_dir(tmp.path(), "a", CONFIG, lines);
        let refused = |name: &str, config: &str| {
            let other = run_dir(tmp.path(), name, config, lines);
            format!("{:#}", table(&[a.clone(), other], None, None).unwrap_err())
        };
        let err = refused("seed", &CONFIG.replace("seed = 1234", "seed = 7"));
        assert!(
            err.contains("seed has [validation] seed = 7 but")
                && err.contains("a has 1234")
                && err.contains("cannot be paired by seed"),
            "{err}"
        );
        let err = refused("res", &CONFIG.replace("resolution = 32", "resolution = 64"));
        assert!(err.contains("resolution = 64"), "{err}");
        let err = refused("guid", &CONFIG.replace("guidance = 2.0\n", ""));
        assert!(err.contains("[validation] guidance = unset"), "{err}");
        // What the method trains with does not matter.
        let same = run_dir(
            tmp.path(),
            "same",
            &CONFIG.replace("\"standard\"", "\"sharpen-sft\""),
            lines,
        );
        assert!(table(&[a.clone(), same], None, None).is_ok());
        // Prompts drawn from the data: the data's settings must agree too.
        let drawn = CONFIG.replace(
            "prompts = [\"a red circle\", \"a blue square\"]",
            "prompts = []",
        );
        let d1 = run_dir(tmp.path(), "d1", &drawn, lines);
        let d2 = run_dir(
            tmp.path(),
            "d2",
            &drawn.replace("kind = \"shapes\"", "kind = \"shapes\"\nseed = 3"),
            lines,
        );
        let err = format!("{:#}", table(&[d1, d2], None, None).unwrap_err());
        assert!(
            err.contains("[data] (the validation prompts come from it)"),
            "{err}"
        );

        // Not a run folder, no validations, scores that do not divide into the seeds.
        let err = format!(
            "{:#}",
            table(&[tmp.path().join("none")], None, None).unwrap_err()
        );
        assert!(
            err.contains("none/config.toml (is this a sharpen-train run folder?)"),
            "{err}"
        );
        let empty = run_dir(tmp.path(), "empty", CONFIG, &[]);
        let err = format!("{:#}", table(&[empty], None, None).unwrap_err());
        assert!(err.contains("no validations in validation.jsonl"), "{err}");
        let odd = run_dir(tmp.path(), "odd", CONFIG, &[(0, &[0.5; 4])]);
        let err = format!("{:#}", table(&[odd], None, None).unwrap_err());
        assert!(
            err.contains("4 scores per validation do not divide into [validation] seeds = 3"),
            "{err}"
        );
    }
}
