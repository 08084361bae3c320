//! `sharpen-eval compare`: several models (methods, each with one or more trained seeds) on the
//! same shapes-world prompts and noise seeds. Writes a table (Markdown and JSON; rows = methods,
//! columns = held-out accuracy, mean reward, NFEs per image; mean and 95% CI over every model
//! and evaluation seed of a method) and two plots: reward vs inference NFEs on a log axis, where
//! best-of-N of the base model is a curve and every other method a point (the paper's Figure
//! 5), and reward vs training step per method (from the runs' `validation.jsonl`). Given a
//! prompt-file config (DrawBench, T2I-CompBench style: `configs/bench/`), it runs `bench` on it:
//! the same table and NFE plot over the reward zoo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use sharpen_app::plot::{panel, Axes, Canvas, Series, PALETTE};
use sharpen_pipeline::SdxlPipeline;
use sharpen_weights::LoadOptions;

use crate::bench::BenchArgs;
use crate::ledger::{Ledger, Scores};
use crate::paired::{differences, Difference, Scored};
use crate::parallel::map_jobs;
use crate::shapes::{best_of_tally, progress, score_candidates, write, Setup, Tally};
use sharpen_app::stats::{mean_ci, MeanCi};

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// A comparison config (e.g. configs/eval/shapes.toml): the evaluation settings and
    /// `[[method]]` entries. Flags override its settings. A prompt-file config
    /// (configs/bench/*.toml) is evaluated as `bench` does.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A method as NAME=PATH[,PATH...] (pipeline folders, one per trained seed); repeatable, added
    /// to the config's methods.
    #[arg(long = "method", value_name = "NAME=PATHS")]
    pub methods: Vec<String>,
    /// The method whose best-of-N curve is drawn (default: the config's, else the first).
    #[arg(long)]
    pub base: Option<String>,
    /// Best-of-N sizes for the base method, e.g. 1,2,4,8,16.
    #[arg(long, value_delimiter = ',')]
    pub best_of: Option<Vec<usize>>,
    /// Methods every other method is paired against (score differences on the same prompts and
    /// seeds, with their intervals), e.g. base,standard (default: the base method).
    #[arg(long, value_delimiter = ',')]
    pub paired: Option<Vec<String>>,
    #[arg(long)]
    pub split: Option<String>,
    #[arg(long)]
    pub prompts: Option<usize>,
    /// Evaluation seeds per model (0..N).
    #[arg(long)]
    pub seeds: Option<u64>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Output folder: compare.json, compare.md, reward-vs-nfe.png, reward-vs-step.png.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// A folder of score records: each model's per-image scores are written there, and a model
    /// already recorded under the same setup is not generated again (if its folder is present,
    /// only while its files are unchanged; if absent, the record stands for it).
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Models evaluated at a time (the CPU backend keeps about one core busy per model); the
    /// results are the same for any number.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Redraw the plots from the output folder's compare.json (and the runs' validation.jsonl)
    /// without evaluating anything.
    #[arg(long)]
    pub replot: bool,
}

/// One compared method: its trained models (one per training seed) and, optionally, their run
/// folders for the reward-vs-step plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodEntry {
    pub name: String,
    pub models: Vec<PathBuf>,
    #[serde(default)]
    pub runs: Vec<PathBuf>,
}

/// `configs/eval/*.toml`: the evaluation settings, then `[[method]]` entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompareConfig {
    /// train, validation or held-out.
    pub split: String,
    pub prompts: usize,
    pub prompt_seed: u64,
    /// Evaluation seeds per model (0..N).
    pub seeds: u64,
    pub sampler: String,
    pub steps: usize,
    pub guidance: f64,
    pub resolution: usize,
    pub batch_size: usize,
    /// The method drawn as a best-of-N curve (default: the first).
    pub base: Option<String>,
    /// Best-of-N sizes for the base method.
    pub best_of: Vec<usize>,
    /// References of the paired-differences table (default: the base method).
    pub paired: Option<Vec<String>>,
    /// Output folder.
    pub output: PathBuf,
    /// Folder of score records (see `--scores`).
    pub scores: Option<PathBuf>,
    #[serde(rename = "method")]
    pub methods: Vec<MethodEntry>,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            split: "held-out".into(),
            prompts: 64,
            prompt_seed: 0,
            seeds: 3,
            sampler: "ddim".into(),
            steps: 25,
            guidance: 2.0,
            resolution: 32,
            batch_size: 16,
            base: None,
            best_of: vec![1],
            paired: None,
            output: PathBuf::from("compare"),
            scores: None,
            methods: Vec::new(),
        }
    }
}

impl CompareConfig {
    /// The config file (if any) with the flags applied, validated.
    pub fn resolve(args: &CompareArgs) -> anyhow::Result<Self> {
        let mut c = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("{}: invalid comparison config", path.display()))?
            }
            None => Self::default(),
        };
        for spec in &args.methods {
            let (name, paths) = spec
                .split_once('=')
                .with_context(|| format!("--method `{spec}`: expected NAME=PATH[,PATH...]"))?;
            c.methods.push(MethodEntry {
                name: name.to_string(),
                models: paths.split(',').map(PathBuf::from).collect(),
                runs: Vec::new(),
            });
        }
        c.base = args.base.clone().or(c.base);
        c.best_of = args.best_of.clone().unwrap_or(c.best_of);
        c.paired = args.paired.clone().or(c.paired);
        c.split = args.split.clone().unwrap_or(c.split);
        c.prompts = args.prompts.unwrap_or(c.prompts);
        c.seeds = args.seeds.unwrap_or(c.seeds);
        c.steps = args.steps.unwrap_or(c.steps);
        c.guidance = args.guidance.unwrap_or(c.guidance);
        c.output = args.output.clone().unwrap_or(c.output);
        c.scores = args.scores.clone().or(c.scores);
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.methods.is_empty() {
            bail!("no methods to compare: add [[method]] entries or --method NAME=PATH");
        }
        for m in &self.methods {
            if m.models.is_empty() {
                bail!("method `{}`: `models` is empty", m.name);
            }
        }
        let mut names: Vec<&str> = self.methods.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("method `{}` is listed twice", w[0]);
        }
        if let Some(base) = &self.base {
            if !self.methods.iter().any(|m| &m.name == base) {
                bail!("`base`: no method is named `{base}`");
            }
        }
        for name in self.paired.iter().flatten() {
            if !self.methods.iter().any(|m| &m.name == name) {
                bail!("`paired`: no method is named `{name}`");
            }
        }
        if self.best_of.is_empty() || self.best_of.contains(&0) {
            bail!("`best_of`: sizes must be at least 1");
        }
        if self.seeds == 0 {
            bail!("`seeds` must be at least 1");
        }
        Ok(())
    }

    pub fn setup(&self) -> Setup {
        Setup {
            split: self.split.clone(),
            prompts: self.prompts,
            prompt_seed: self.prompt_seed,
            sampler: self.sampler.clone(),
            steps: self.steps,
            guidance: self.guidance,
            resolution: self.resolution,
            batch_size: self.batch_size,
        }
    }

    fn base_name(&self) -> &str {
        self.base.as_deref().unwrap_or(&self.methods[0].name)
    }

    fn references(&self) -> Vec<String> {
        self.paired
            .clone()
            .unwrap_or_else(|| vec![self.base_name().to_string()])
    }
}

/// One table row: a method at one best-of size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub method: String,
    pub best_of: usize,
    pub nfe_per_image: usize,
    /// Models x evaluation seeds behind each interval.
    pub repeats: usize,
    pub all_correct: MeanCi,
    pub one_object: MeanCi,
    pub two_objects: MeanCi,
    /// Mean partial credit: the shapes reward.
    pub reward: MeanCi,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    setup: &'a Setup,
    seeds: u64,
    base: &'a str,
    rows: Vec<Row>,
    paired: Vec<Difference>,
}

fn row(method: &str, best_of: usize, nfe: usize, tallies: &[Tally]) -> Row {
    let stat = |f: &dyn Fn(&Tally) -> f64| mean_ci(&tallies.iter().map(f).collect::<Vec<_>>());
    Row {
        method: method.to_string(),
        best_of,
        nfe_per_image: nfe * best_of,
        repeats: tallies.len(),
        all_correct: stat(&|t| t.rates(None).0),
        one_object: stat(&|t| t.rates(Some(0)).0),
        two_objects: stat(&|t| t.rates(Some(1)).0),
        reward: stat(&|t| t.rates(None).1),
    }
}

/// `--replot`: the plots again from `compare.json`.
fn replot(config: &CompareConfig) -> anyhow::Result<()> {
    let path = config.output.join("compare.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let rows: Vec<Row> = serde_json::from_value(report["rows"].clone())
        .with_context(|| format!("{}: no comparison rows", path.display()))?;
    let base = report["base"].as_str().unwrap_or(config.base_name());
    nfe_plot(&rows, base, &config.output.join("reward-vs-nfe.png"))?;
    step_plot(&config.methods, &config.output.join("reward-vs-step.png"))?;
    eprintln!("redrew the plots in {}", config.output.display());
    Ok(())
}

/// When `--config` names a prompt-file config (`configs/bench/*.toml`: `prompts` a file,
/// `[[model]]` and `[[reward]]` entries), the `bench` arguments that evaluate it; the shapes-only
/// flags are refused by name.
pub fn prompt_file_bench(args: &CompareArgs) -> anyhow::Result<Option<BenchArgs>> {
    let Some(path) = &args.config else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: not TOML", path.display()))?;
    let prompt_file = value.get("prompts").is_some_and(toml::Value::is_str)
        || value.contains_key("model")
        || value.contains_key("reward");
    if !prompt_file {
        return Ok(None);
    }
    let shapes_only = [
        ("--method", !args.methods.is_empty()),
        ("--base", args.base.is_some()),
        ("--split", args.split.is_some()),
        ("--prompts", args.prompts.is_some()),
        ("--replot", args.replot),
        ("--jobs", args.jobs != 1),
        ("--paired", args.paired.is_some()),
        ("--scores", args.scores.is_some()),
    ];
    if let Some((flag, _)) = shapes_only.iter().find(|(_, given)| *given) {
        bail!(
            "{flag} is a shapes-world flag; {} is a prompt-file config (see `sharpen-eval bench --help` for its flags)",
            path.display()
        );
    }
    Ok(Some(BenchArgs {
        config: Some(path.clone()),
        seeds: args.seeds,
        steps: args.steps,
        guidance: args.guidance,
        best_of: args.best_of.clone(),
        output: args.output.clone(),
        ..BenchArgs::default()
    }))
}

pub fn run<B: Backend>(args: &CompareArgs, device: B::Device) -> anyhow::Result<()> {
    if let Some(bench) = prompt_file_bench(args)? {
        return crate::bench::run::<B>(&bench, device);
    }
    let config = CompareConfig::resolve(args)?;
    if args.replot {
        return replot(&config);
    }
    let setup = &config.setup();
    let scenes = setup.scenes()?;
    let base = config.base_name();
    let max_n = *config.best_of.iter().max().expect("validated");
    // Every (method, model, candidates per prompt); the scores come back in this order.
    let units: Vec<(usize, &Path, usize)> = config
        .methods
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            let candidates = if m.name == base { max_n } else { 1 };
            m.models.iter().map(move |p| (i, p.as_path(), candidates))
        })
        .collect();
    let ledger = config.scores.as_ref().map(Ledger::new);
    let recorded: Vec<Option<Scores>> = units
        .iter()
        .map(|&(_, model, candidates)| match &ledger {
            Some(l) => l.lookup(model, setup, config.seeds, candidates),
            None => Ok(None),
        })
        .collect::<anyhow::Result<_>>()?;
    let todo: Vec<&(usize, &Path, usize)> = units
        .iter()
        .zip(&recorded)
        .filter(|(_, r)| r.is_none())
        .map(|(u, _)| u)
        .collect();
    if units.len() > todo.len() {
        tracing::info!(
            "{} of {} models scored from their records",
            units.len() - todo.len(),
            units.len()
        );
    }
    let images: u64 = todo
        .iter()
        .map(|&&(_, _, candidates)| (candidates * setup.prompts) as u64 * config.seeds)
        .sum();
    let bar = progress(images);
    let fresh = map_jobs(args.jobs, &todo, |&&(i, model, candidates)| {
        let method = &config.methods[i];
        let pipe = SdxlPipeline::<B>::load(model, &LoadOptions::default(), &device)
            .with_context(|| format!("method `{}`: loading {}", method.name, model.display()))?;
        let scores = score_candidates(&pipe, setup, &scenes, config.seeds, candidates, &bar)?;
        if let Some(l) = &ledger {
            l.store(model, setup, &scores)?;
        }
        Ok(scores)
    })?;
    let mut fresh = fresh.into_iter();
    let scores: Vec<Scores> = recorded
        .into_iter()
        .map(|r| r.unwrap_or_else(|| fresh.next().expect("one result per unscored model")))
        .collect();
    let mut scores = scores.into_iter();
    let mut rows = Vec::new();
    let mut scored = Vec::new();
    for method in &config.methods {
        // tallies[best-of index] over models x seeds.
        let sizes: Vec<usize> = if method.name == base {
            config.best_of.clone()
        } else {
            vec![1]
        };
        let mut tallies: Vec<Vec<Tally>> = vec![Vec::new(); sizes.len()];
        let mut single = Vec::new();
        for model_scores in scores.by_ref().take(method.models.len()) {
            for seed in &model_scores {
                for (k, &n) in sizes.iter().enumerate() {
                    tallies[k].push(best_of_tally(&scenes, seed, n));
                }
            }
            single.push(
                model_scores
                    .iter()
                    .map(|seed| best_of_tally(&scenes, seed, 1))
                    .collect(),
            );
        }
        scored.push(Scored {
            name: &method.name,
            tallies: single,
        });
        for (k, &n) in sizes.iter().enumerate() {
            rows.push(row(&method.name, n, setup.nfe_per_image(), &tallies[k]));
        }
    }
    bar.finish_and_clear();

    let out = &config.output;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (paired, unpaired) = differences(&scored, &config.references());
    let report = Report {
        setup,
        seeds: config.seeds,
        base,
        rows,
        paired,
    };
    let table = markdown(&report) + &crate::paired::markdown(&report.paired, &unpaired);
    println!("{table}");
    write(
        &out.join("compare.json"),
        &serde_json::to_string_pretty(&report)?,
    )?;
    write(&out.join("compare.md"), &table)?;
    nfe_plot(&report.rows, base, &out.join("reward-vs-nfe.png"))?;
    step_plot(&config.methods, &out.join("reward-vs-step.png"))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn markdown(r: &Report<'_>) -> String {
    let pct = |m: MeanCi| format!("{:.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.ci95);
    let s = r.setup;
    let mut out = format!(
        "{} prompts of the {} split, {} {} steps, guidance {}, {} evaluation seeds per model; mean ± 95% CI over models x seeds (repeats)\n\n| method | best of | NFE per image | repeats | all-correct % | one object % | two objects % | reward (partial credit) % |\n|---|---|---|---|---|---|---|---|\n",
        s.prompts, s.split, s.sampler, s.steps, s.guidance, r.seeds
    );
    for row in &r.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.method,
            row.best_of,
            row.nfe_per_image,
            row.repeats,
            pct(row.all_correct),
            pct(row.one_object),
            pct(row.two_objects),
            pct(row.reward)
        ));
    }
    out
}

/// Reward and accuracy vs NFEs per image (log axis): the base method's best-of-N curve, every
/// other method a point.
pub fn nfe_plot(rows: &[Row], base: &str, out: &Path) -> anyhow::Result<()> {
    const W: usize = 720;
    const H: usize = 260;
    let mut canvas = Canvas::new(W, 2 * H);
    let mut methods: Vec<&str> = Vec::new();
    for r in rows {
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    for (p, (title, metric)) in [
        (
            "reward vs nfe",
            &(|r: &Row| r.reward.mean) as &dyn Fn(&Row) -> f64,
        ),
        ("all-correct vs nfe", &|r: &Row| r.all_correct.mean),
    ]
    .into_iter()
    .enumerate()
    {
        let series: Vec<Series> = methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let points: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.method == *m)
                    .map(|r| (r.nfe_per_image as f64, metric(r)))
                    .collect();
                let colour = PALETTE[i % PALETTE.len()];
                if *m == base {
                    Series::line(format!("{m} best-of-n"), colour, points)
                } else {
                    Series::points(*m, colour, points)
                }
            })
            .collect();
        let axes = Axes {
            title,
            x_label: "nfe per image",
            log_x: true,
        };
        panel(&mut canvas, p * H, H, axes, &series);
    }
    canvas.write_png(out)
}

/// The validation reward vs training step per method, averaged over its runs (steps where every
/// run has a value).
pub fn step_plot(methods: &[MethodEntry], out: &Path) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for (i, m) in methods.iter().enumerate() {
        let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for run in &m.runs {
            let path = run.join("validation.jsonl");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("method `{}`: reading {}", m.name, path.display()))?;
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{}: a malformed line", path.display()))?;
                if let (Some(step), Some(r)) = (v["step"].as_u64(), v["reward_mean"].as_f64()) {
                    by_step.entry(step).or_default().push(r);
                }
            }
        }
        let points: Vec<(f64, f64)> = by_step
            .into_iter()
            .filter(|(_, v)| v.len() == m.runs.len())
            .map(|(s, v)| (s as f64, v.iter().sum::<f64>() / v.len() as f64))
            .collect();
        series.push(Series::line(&m.name, PALETTE[i % PALETTE.len()], points));
    }
    let mut canvas = Canvas::new(720, 300);
    let axes = Axes {
        title: "validation reward",
        x_label: "training step",
        log_x: false,
    };
    panel(&mut canvas, 0, 300, axes, &series);
    canvas.write_png(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_comparison_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/eval");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let config: CompareConfig =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            config
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
        assert!(seen > 0, "configs/eval holds comparison configs");
    }
}
