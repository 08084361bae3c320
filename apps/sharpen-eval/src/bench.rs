//! `sharpen-eval bench`: models on a prompt file (DrawBench `.csv`, `.txt`, `.jsonl`; T2I-CompBench
//! style lists) scored by rewards of the zoo. Every model sees the same prompts and the same
//! noise (seeds 0..N, and per candidate for best-of-N, whose verifier is the first reward).
//! Writes bench.json and bench.md: rows = model x best-of-N, columns = each reward's mean over
//! the prompts as the mean and 95% CI over seeds, and NFEs per image; and reward-vs-nfe.png.
//! `sharpen-eval compare` runs this when its config names a prompt file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use sharpen_app::plot::{panel, Axes, Canvas, Series, PALETTE};
use sharpen_pipeline::{candidate_seed, GenerateOptions, SdxlPipeline};
use sharpen_rewards::{Reward, RewardSpec};
use sharpen_schedulers::SamplerKind;
use sharpen_weights::LoadOptions;

use crate::shapes::{progress, write};
use sharpen_app::stats::{mean_ci, MeanCi};

#[derive(Debug, Default, clap::Args)]
pub struct BenchArgs {
    /// A bench config (e.g. configs/bench/drawbench.toml): prompts, sampling, `[[model]]` and
    /// `[[reward]]` entries. Flags override its settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A model as NAME=PATH (a diffusers pipeline folder or hub id); repeatable.
    #[arg(long = "model", value_name = "NAME=PATH")]
    pub models: Vec<String>,
    /// The prompt file: .txt, .jsonl or .csv (DrawBench's `Prompts` column).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// The JSON key or CSV column holding the prompt.
    #[arg(long)]
    pub field: Option<String>,
    /// Use only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// A reward as NAME or NAME=WEIGHTS; repeatable, added to the config's. The first is the
    /// best-of-N verifier.
    #[arg(long = "reward", value_name = "NAME[=WEIGHTS]")]
    pub rewards: Vec<String>,
    #[arg(long)]
    pub seeds: Option<u64>,
    #[arg(long)]
    pub sampler: Option<String>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub guidance: Option<f64>,
    #[arg(long)]
    pub width: Option<usize>,
    #[arg(long)]
    pub height: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Best-of-N sizes, e.g. 1,4.
    #[arg(long, value_delimiter = ',')]
    pub best_of: Option<Vec<usize>>,
    /// Output folder: bench.json, bench.md, reward-vs-nfe.png.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BenchConfig {
    pub prompts: Option<PathBuf>,
    pub field: Option<String>,
    pub limit: Option<usize>,
    pub seeds: u64,
    pub sampler: String,
    pub steps: usize,
    pub guidance: f64,
    pub width: usize,
    pub height: usize,
    pub batch_size: usize,
    pub best_of: Vec<usize>,
    pub output: PathBuf,
    pub model: Vec<ModelEntry>,
    pub reward: Vec<RewardSpec>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            prompts: None,
            field: None,
            limit: None,
            seeds: 2,
            sampler: "euler".into(),
            steps: 30,
            guidance: 5.0,
            width: 1024,
            height: 1024,
            batch_size: 2,
            best_of: vec![1],
            output: PathBuf::from("out/bench"),
            model: Vec::new(),
            reward: Vec::new(),
        }
    }
}

impl BenchConfig {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}", path.display()))
    }

    /// The config with the flags applied, checked.
    pub fn resolve(args: &BenchArgs) -> anyhow::Result<Self> {
        let mut c = match &args.config {
            Some(path) => Self::read(path)?,
            None => Self::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &args.$f { c.$f = v.clone().into(); } )* };
        }
        set!(seeds, sampler, steps, guidance, width, height, batch_size, best_of, output);
        if args.prompts.is_some() {
            c.prompts = args.prompts.clone();
        }
        if args.field.is_some() {
            c.field = args.field.clone();
        }
        if args.limit.is_some() {
            c.limit = args.limit;
        }
        for m in &args.models {
            let (name, path) = m
                .split_once('=')
                .with_context(|| format!("--model `{m}`: expected NAME=PATH"))?;
            c.model.push(ModelEntry {
                name: name.into(),
                path: path.into(),
            });
        }
        for r in &args.rewards {
            let (name, weights) = match r.split_once('=') {
                Some((n, w)) => (n, Some(PathBuf::from(w))),
                None => (r.as_str(), None),
            };
            c.reward.push(RewardSpec {
                weights,
                ..RewardSpec::named(name)
            });
        }
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.prompts.is_none() {
            bail!("no prompt file: give `prompts` in the config or --prompts");
        }
        if self.model.is_empty() {
            bail!("no models: add [[model]] entries or --model NAME=PATH");
        }
        if self.reward.is_empty() {
            bail!("no rewards: add [[reward]] entries or --reward NAME[=WEIGHTS]");
        }
        for (i, r) in self.reward.iter().enumerate() {
            r.validate()
                .map_err(|e| anyhow::anyhow!("reward {i} (`{}`): {e}", r.name))?;
        }
        if self.seeds == 0 || self.steps == 0 || self.batch_size == 0 {
            bail!("seeds, steps and batch_size must be at least 1");
        }
        if self.best_of.is_empty() || self.best_of.contains(&0) {
            bail!("best_of sizes must be at least 1");
        }
        SamplerKind::parse(&self.sampler)
            .with_context(|| format!("unknown sampler `{}`", self.sampler))?;
        Ok(())
    }

    pub fn nfe_per_image(&self) -> usize {
        self.steps * if self.guidance > 1.0 { 2 } else { 1 }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRow {
    pub model: String,
    pub best_of: usize,
    pub nfe_per_image: usize,
    /// Per reward (in config order): mean over prompts, mean and 95% CI over seeds.
    pub rewards: Vec<MeanCi>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub prompts: usize,
    pub reward_names: Vec<String>,
    pub rows: Vec<BenchRow>,
}

/// `[seed][candidate][reward][prompt]` scores of one model.
type Scores = Vec<Vec<Vec<Vec<f64>>>>;

/// Generates every (seed, candidate, batch) of `prompts` and scores it with each reward. Up to
/// `threads` batches are generated at once (a core each on the CPU); the rewards then score them
/// in order on this thread (they need not be shareable), so at most `threads` batches of images
/// are held at a time. The noise depends on the seed, candidate and batch start alone, so the
/// scores are the same for any `threads`.
fn score_model<B: Backend>(
    pipe: &SdxlPipeline<B>,
    config: &BenchConfig,
    prompts: &[String],
    rewards: &[Box<dyn Reward<B>>],
    threads: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Scores> {
    let candidates = *config.best_of.iter().max().expect("validated");
    let mut options = GenerateOptions::new(config.width, config.height);
    options.sampler = SamplerKind::parse(&config.sampler).expect("validated");
    options.steps = config.steps;
    options.guidance_scale = config.guidance;
    let jobs: Vec<(u64, usize, usize)> = (0..config.seeds)
        .flat_map(|seed| (0..candidates).map(move |candidate| (seed, candidate)))
        .flat_map(|(seed, candidate)| {
            (0..prompts.len())
                .step_by(config.batch_size)
                .map(move |start| (seed, candidate, start))
        })
        .collect();
    let refs = |start: usize| -> Vec<&str> {
        let end = (start + config.batch_size).min(prompts.len());
        prompts[start..end].iter().map(String::as_str).collect()
    };
    let per_seed = vec![vec![Vec::with_capacity(prompts.len()); rewards.len()]; candidates];
    let mut out: Scores = vec![per_seed; config.seeds as usize];
    for group in jobs.chunks(threads.max(1)) {
        let images = sharpen_app::par::par_map(group, threads, |&(seed, candidate, start)| {
            let generated = pipe
                .generate_seeded(
                    &refs(start),
                    candidate_seed(seed, candidate),
                    start,
                    &options,
                )
                .context("generating")?;
            Ok(generated.images)
        })?;
        for (&(seed, candidate, start), images) in group.iter().zip(images) {
            let refs = refs(start);
            for (r, reward) in rewards.iter().enumerate() {
                let s = reward
                    .score(images.clone(), &refs)
                    .with_context(|| format!("scoring with `{}`", reward.info().name))?;
                let values = s
                    .into_data()
                    .convert::<f64>()
                    .to_vec::<f64>()
                    .map_err(|e| anyhow::anyhow!("reading scores: {e:?}"))?;
                out[seed as usize][candidate][r].extend(values);
            }
            bar.inc(refs.len() as u64);
        }
    }
    Ok(out)
}

/// Per reward, the mean over prompts of the kept images of one seed under best-of-`n` (the
/// verifier, reward 0, picks among the first `n` candidates).
fn best_of_means(seed: &[Vec<Vec<f64>>], n: usize) -> Vec<f64> {
    let rewards = seed[0].len();
    let prompts = seed[0][0].len();
    let kept: Vec<usize> = (0..prompts)
        .map(|p| {
            (0..n)
                .reduce(|b, c| if seed[c][0][p] > seed[b][0][p] { c } else { b })
                .expect("n >= 1")
        })
        .collect();
    (0..rewards)
        .map(|r| {
            kept.iter()
                .enumerate()
                .map(|(p, &c)| seed[c][r][p])
                .sum::<f64>()
                / prompts as f64
        })
        .collect()
}

fn markdown(report: &BenchReport) -> String {
    let c = &report.config;
    let mut out = format!(
        "{} prompts of {}, {} seeds, {} {} steps, guidance {}, {}x{}; mean over prompts, mean \
         ± 95% CI over seeds; best-of-N verifier: {}\n\n| model | best of | NFE / image |",
        report.prompts,
        c.prompts
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        c.seeds,
        c.sampler,
        c.steps,
        c.guidance,
        c.width,
        c.height,
        report.reward_names[0],
    );
    for name in &report.reward_names {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str(&format!(
        "\n|---|---|---|{}\n",
        "---|".repeat(report.reward_names.len())
    ));
    for row in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {} |",
            row.model,
            row.best_of,
            row.nfe_per_image * row.best_of
        ));
        for m in &row.rewards {
            out.push_str(&format!(" {:.4} ± {:.4} |", m.mean, m.ci95));
        }
        out.push('\n');
    }
    out
}

pub fn run<B: Backend>(args: &BenchArgs, device: B::Device) -> anyhow::Result<()> {
    let config = BenchConfig::resolve(args)?;
    let path = config.prompts.clone().expect("validated");
    let (mut prompts, skipped) = sharpen_data::load_prompts(&path, config.field.as_deref())
        .with_context(|| format!("reading prompts {}", path.display()))?;
    if skipped.count > 0 {
        tracing::warn!(
            skipped = skipped.count,
            "prompt rows without a prompt were skipped"
        );
    }
    if let Some(limit) = config.limit {
        prompts.truncate(limit);
    }
    if prompts.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    let rewards = config
        .reward
        .iter()
        .map(|spec| {
            sharpen_rewards::load::<B>(spec, &device)
                .with_context(|| format!("loading reward `{}`", spec.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let reward_names: Vec<String> = rewards.iter().map(|r| r.info().name.to_string()).collect();
    let candidates = *config.best_of.iter().max().expect("validated");
    let mut rows = Vec::new();
    for model in &config.model {
        let pipe = SdxlPipeline::<B>::load(&model.path, &LoadOptions::default(), &device)
            .with_context(|| {
                format!("loading model `{}` ({})", model.name, model.path.display())
            })?;
        tracing::info!(model = %model.name, "generating and scoring");
        let bar = progress(config.seeds * (prompts.len() * candidates) as u64);
        let threads = sharpen_app::par::sampling_threads::<B>();
        let scores = score_model(&pipe, &config, &prompts, &rewards, threads, &bar)?;
        bar.finish_and_clear();
        for &n in &config.best_of {
            let per_seed: Vec<Vec<f64>> = scores.iter().map(|s| best_of_means(s, n)).collect();
            rows.push(BenchRow {
                model: model.name.clone(),
                best_of: n,
                nfe_per_image: config.nfe_per_image(),
                rewards: (0..rewards.len())
                    .map(|r| mean_ci(&per_seed.iter().map(|s| s[r]).collect::<Vec<_>>()))
                    .collect(),
            });
        }
    }
    let report = BenchReport {
        prompts: prompts.len(),
        reward_names,
        rows,
        config,
    };
    let table = markdown(&report);
    println!("{table}");
    let out = &report.config.output;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write(
        &out.join("bench.json"),
        &serde_json::to_string_pretty(&report).context("serialising the report")?,
    )?;
    write(&out.join("bench.md"), &table)?;
    nfe_plot(&report, &out.join("reward-vs-nfe.png"))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Every reward vs NFEs per image (log axis), one panel per reward: each model's best-of-N sizes
/// as a curve (a point when it has one size), the paper's Figure 5 on a prompt file.
pub fn nfe_plot(report: &BenchReport, out: &Path) -> anyhow::Result<()> {
    const W: usize = 720;
    const H: usize = 240;
    let mut canvas = Canvas::new(W, H * report.reward_names.len());
    let mut models: Vec<&str> = Vec::new();
    for row in &report.rows {
        if !models.contains(&row.model.as_str()) {
            models.push(&row.model);
        }
    }
    for (r, name) in report.reward_names.iter().enumerate() {
        let series: Vec<Series> = models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let points: Vec<(f64, f64)> = report
                    .rows
                    .iter()
                    .filter(|row| row.model == *m)
                    .map(|row| {
                        (
                            (row.nfe_per_image * row.best_of) as f64,
                            row.rewards[r].mean,
                        )
                    })
                    .collect();
                let colour = PALETTE[i % PALETTE.len()];
                if points.len() > 1 {
                    Series::line(format!("{m} best-of-n"), colour, points)
                } else {
                    Series::points(*m, colour, points)
                }
            })
            .collect();
        let title = format!("{name} vs nfe");
        let axes = Axes {
            title: &title,
            x_label: "nfe per image",
            log_x: true,
        };
        panel(&mut canvas, r * H, H, axes, &series);
    }
    canvas.write_png(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_of_keeps_the_verifiers_choice_for_every_reward() {
        // 2 candidates, 2 rewards, 2 prompts.
        let seed = vec![
            vec![vec![0.1, 0.9], vec![10.0, 20.0]],
            vec![vec![0.5, 0.2], vec![30.0, 40.0]],
        ];
        assert_eq!(best_of_means(&seed, 1), vec![0.5, 15.0]);
        // Prompt 0 keeps candidate 1, prompt 1 candidate 0.
        assert_eq!(best_of_means(&seed, 2), vec![0.7, 25.0]);
    }

    #[test]
    fn scores_are_the_same_on_any_number_of_threads() {
        type B = sharpen_app::CpuBackend;
        let device = Default::default();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let pipe = SdxlPipeline::<B>::load(
            &root.join("tests/fixtures/pipeline/tiny-sdxl"),
            &LoadOptions::default(),
            &device,
        )
        .unwrap();
        let rewards: Vec<Box<dyn Reward<B>>> = ["jpeg-compressibility", "shapes"]
            .iter()
            .map(|name| sharpen_rewards::load::<B>(&RewardSpec::named(name), &device).unwrap())
            .collect();
        let config = BenchConfig {
            seeds: 2,
            steps: 2,
            guidance: 2.0,
            width: 32,
            height: 32,
            batch_size: 2,
            best_of: vec![1, 2],
            ..Default::default()
        };
        let prompts: Vec<String> = ["a red circle", "a blue square", "a green triangle"]
            .iter()
            .map(|p| p.to_string())
            .collect();
        let bar = indicatif::ProgressBar::hidden();
        let run = |threads| score_model(&pipe, &config, &prompts, &rewards, threads, &bar).unwrap();
        let one = run(1);
        // [seed][candidate][reward][prompt], every prompt scored once.
        assert_eq!(one.len(), 2);
        assert!(one.iter().flatten().flatten().all(|r| r.len() == 3));
        // Seeds and candidates draw other noise.
        assert_ne!(one[0][0][0], one[1][0][0]);
        assert_ne!(one[0][0][0], one[0][1][0]);
        for threads in [2, 3, 8] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
    }
}
