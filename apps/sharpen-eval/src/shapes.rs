//! `sharpen-eval shapes`: a shapes-world model on one split's prompts, scored by the compositional
//! scorer: all-correct accuracy and mean partial credit, for single objects, pairs and overall,
//! as the mean and 95% confidence interval over seeds (each seed draws new initial noise for the
//! same prompts).

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use sdxl_text::PromptBatch;
use serde::Serialize;
use shapes_world::{ShapesWorld, Split};
use sharpen_pipeline::{
    seeded_noise, GenerateOptions, GenerateRequest, SdxlPipeline, SeededStepNoise,
};
use sharpen_schedulers::SamplerKind;
use sharpen_weights::LoadOptions;

use crate::stats::{mean_ci, MeanCi};

#[derive(Debug, clap::Args)]
pub struct ShapesArgs {
    /// A shapes-world diffusers pipeline folder (e.g. assets/shapes-model, or a run's pipeline/).
    #[arg(long)]
    pub model: PathBuf,
    /// train, validation or held-out (colour-shape pairs and relations never seen in training).
    #[arg(long, default_value = "held-out")]
    pub split: String,
    /// Prompts drawn from the split.
    #[arg(long, default_value_t = 64)]
    pub prompts: usize,
    /// Seed of the prompt draw.
    #[arg(long, default_value_t = 0)]
    pub prompt_seed: u64,
    /// Repeats with different initial noise (seeds 0..N).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    #[arg(long, default_value = "ddim")]
    pub sampler: String,
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    #[arg(long, default_value_t = 2.0)]
    pub guidance: f64,
    /// Best-of-N inference scaling: N candidates per prompt (different noise), the one the
    /// verifier (the shapes scorer's partial credit) rates highest is kept. Costs N x the NFEs.
    #[arg(long, default_value_t = 1)]
    pub best_of: usize,
    /// Images per pipeline call.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 32)]
    pub resolution: usize,
    /// Write the results as JSON here (and a Markdown table beside it, `.md`).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

fn parse_split(s: &str) -> anyhow::Result<Split> {
    Ok(match s {
        "train" => Split::Train,
        "validation" => Split::Validation,
        "held-out" => Split::HeldOut,
        other => anyhow::bail!("--split `{other}`: expected train, validation or held-out"),
    })
}

/// One seed's scores.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    /// [single, pair]: (images, all-correct, partial credit sum).
    groups: [(usize, usize, f64); 2],
}

impl Tally {
    fn add(&mut self, pair: bool, score: shapes_world::ShapesScore) {
        let g = &mut self.groups[usize::from(pair)];
        g.0 += 1;
        g.1 += usize::from(score.all_correct);
        g.2 += score.partial;
    }

    /// (accuracy, mean partial credit) of a group (`None`: both groups together).
    fn rates(&self, group: Option<usize>) -> (f64, f64) {
        let (n, ok, sum) = match group {
            Some(g) => self.groups[g],
            None => {
                let [a, b] = self.groups;
                (a.0 + b.0, a.1 + b.1, a.2 + b.2)
            }
        };
        if n == 0 {
            return (f64::NAN, f64::NAN);
        }
        (ok as f64 / n as f64, sum / n as f64)
    }
}

#[derive(Debug, Serialize)]
struct Row {
    prompts: &'static str,
    images_per_seed: usize,
    all_correct: MeanCi,
    partial_credit: MeanCi,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    split: String,
    prompts: usize,
    seeds: u64,
    sampler: String,
    steps: usize,
    guidance: f64,
    best_of: usize,
    nfe_per_image: usize,
    rows: Vec<Row>,
}

pub fn run<B: Backend>(args: &ShapesArgs, device: B::Device) -> anyhow::Result<()> {
    let split = parse_split(&args.split)?;
    let sampler = SamplerKind::parse(&args.sampler)
        .with_context(|| format!("unknown --sampler `{}`", args.sampler))?;
    anyhow::ensure!(
        args.prompts > 0 && args.seeds > 0 && args.batch_size > 0 && args.best_of > 0,
        "--prompts, --seeds, --best-of and --batch-size must be at least 1"
    );
    let pipe = SdxlPipeline::<B>::load(&args.model, &LoadOptions::default(), &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let world = ShapesWorld {
        split,
        size: args.resolution,
        seed: args.prompt_seed,
    };
    let scenes: Vec<_> = (0..args.prompts as u64).map(|i| world.get(i).0).collect();
    let captions: Vec<String> = scenes.iter().map(ToString::to_string).collect();
    let mut options = GenerateOptions::new(args.resolution, args.resolution);
    options.sampler = sampler;
    options.steps = args.steps;
    options.guidance_scale = args.guidance;
    let latent = args.resolution / pipe.vae.config.downscale();
    let channels = pipe.unet.config.in_channels;

    let bar = ProgressBar::new(args.seeds * (args.prompts * args.best_of) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images [{elapsed_precise}<{eta_precise}]",
        )
        .expect("a valid template"),
    );
    let mut tallies = Vec::new();
    for seed in 0..args.seeds {
        let mut tally = Tally::default();
        for start in (0..args.prompts).step_by(args.batch_size) {
            let end = (start + args.batch_size).min(args.prompts);
            let refs: Vec<&str> = captions[start..end].iter().map(String::as_str).collect();
            let mut best: Vec<Option<shapes_world::ShapesScore>> = vec![None; refs.len()];
            for candidate in 0..args.best_of {
                // Candidate 0 is the plain seed's image, so best-of-1 is the base evaluation.
                let noise_seed = candidate_seed(seed, candidate);
                let latents = seeded_noise(
                    noise_seed,
                    start,
                    [refs.len(), channels, latent, latent],
                    &device,
                );
                let generated = pipe
                    .generate(
                        GenerateRequest {
                            prompts: PromptBatch::new(&refs),
                            negative: None,
                            latents,
                        },
                        &options,
                        &mut SeededStepNoise {
                            seed: noise_seed.wrapping_add(start as u64),
                        },
                        &mut |_| {},
                    )
                    .context("generating")?;
                let images = sharpen_rewards::to_rgb8(generated.images);
                for (i, rgb) in images.iter().enumerate() {
                    let score = shapes_world::score(rgb, args.resolution, refs[i]);
                    if best[i].is_none_or(|b| score.partial > b.partial) {
                        best[i] = Some(score);
                    }
                }
                bar.inc(refs.len() as u64);
            }
            for (i, score) in best.into_iter().enumerate() {
                tally.add(
                    scenes[start + i].second.is_some(),
                    score.expect("at least one candidate"),
                );
            }
        }
        tallies.push(tally);
    }
    bar.finish_and_clear();

    let per_group = |group: Option<usize>, name: &'static str| {
        let images = match group {
            Some(g) => tallies[0].groups[g].0,
            None => args.prompts,
        };
        let acc: Vec<f64> = tallies.iter().map(|t| t.rates(group).0).collect();
        let partial: Vec<f64> = tallies.iter().map(|t| t.rates(group).1).collect();
        Row {
            prompts: name,
            images_per_seed: images,
            all_correct: mean_ci(&acc),
            partial_credit: mean_ci(&partial),
        }
    };
    let report = Report {
        model: args.model.display().to_string(),
        split: args.split.clone(),
        prompts: args.prompts,
        seeds: args.seeds,
        sampler: args.sampler.clone(),
        steps: args.steps,
        guidance: args.guidance,
        best_of: args.best_of,
        nfe_per_image: args.best_of * args.steps * if args.guidance > 1.0 { 2 } else { 1 },
        rows: vec![
            per_group(Some(0), "one object"),
            per_group(Some(1), "two objects"),
            per_group(None, "all"),
        ],
    };
    let table = markdown(&report);
    println!("{table}");
    if let Some(path) = &args.output {
        write(path, &serde_json::to_string_pretty(&report)?)?;
        write(&path.with_extension("md"), &table)?;
    }
    Ok(())
}

/// Noise seed of best-of-N candidate `k` under evaluation seed `seed` (candidate 0 = `seed`).
fn candidate_seed(seed: u64, k: usize) -> u64 {
    if k == 0 {
        seed
    } else {
        seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

fn markdown(r: &Report) -> String {
    let pct = |m: MeanCi| format!("{:.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.ci95);
    let mut out = format!(
        "{} on {} prompts of the {} split, {} seeds, {} {} steps, guidance {}, best of {} ({} NFE per image); mean ± 95% CI over seeds\n\n| prompts | images per seed | all-correct % | partial credit % |\n|---|---|---|---|\n",
        r.model, r.prompts, r.split, r.seeds, r.sampler, r.steps, r.guidance, r.best_of, r.nfe_per_image
    );
    for row in &r.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.prompts,
            row.images_per_seed,
            pct(row.all_correct),
            pct(row.partial_credit)
        ));
    }
    out
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
