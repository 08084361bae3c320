//! `sharpen-eval shapes`: a shapes-world model on one split's prompts, scored by the compositional
//! scorer: all-correct accuracy and mean partial credit, for single objects, pairs and overall,
//! and each of the scorer's checks on its own, as the mean and 95% confidence interval over seeds
//! (each seed draws new initial noise for the same prompts).

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use shapes_world::{Checks, ShapesWorld, Split};
use sharpen_pipeline::{candidate_seed, GenerateOptions, SdxlPipeline};
use sharpen_schedulers::SamplerKind;
use sharpen_weights::LoadOptions;

use sharpen_app::stats::{mean_ci, MeanCi};

use crate::checks::{self, CheckRow, CheckTally};

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
    /// Score these captions of the world instead of the split's (repeat the flag for each; e.g.
    /// the prompts a run trained and validated on).
    #[arg(long, conflicts_with_all = ["split", "prompts", "prompt_seed"])]
    pub caption: Vec<String>,
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
pub struct Tally {
    /// [single, pair]: (images, all-correct, partial credit sum).
    groups: [(usize, usize, f64); 2],
}

impl Tally {
    pub fn add(&mut self, pair: bool, score: shapes_world::ShapesScore) {
        let g = &mut self.groups[usize::from(pair)];
        g.0 += 1;
        g.1 += usize::from(score.all_correct);
        g.2 += score.partial;
    }

    /// (accuracy, mean partial credit) of a group (`None`: both groups together).
    pub fn rates(&self, group: Option<usize>) -> (f64, f64) {
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
    /// Each seed's mean partial credit, in seed order: two models scored with the same prompts
    /// and seeds pair seed by seed.
    partial_credit_per_seed: Vec<f64>,
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
    /// The kept images' checks one by one.
    checks: Vec<CheckRow>,
}

/// What every evaluated image shares: the prompts and how images are sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    pub split: String,
    pub prompts: usize,
    pub prompt_seed: u64,
    pub sampler: String,
    pub steps: usize,
    pub guidance: f64,
    pub resolution: usize,
    pub batch_size: usize,
}

impl Setup {
    pub fn nfe_per_image(&self) -> usize {
        self.steps * if self.guidance > 1.0 { 2 } else { 1 }
    }

    /// The split's first `prompts` scenes (the same for every model).
    pub fn scenes(&self) -> anyhow::Result<Vec<shapes_world::Scene>> {
        let world = ShapesWorld {
            split: parse_split(&self.split)?,
            size: self.resolution,
            seed: self.prompt_seed,
        };
        Ok((0..self.prompts as u64).map(|i| world.get(i).0).collect())
    }
}

/// The shapes scores of `candidates` images per prompt and evaluation seed:
/// `[seed][candidate][prompt]`. Candidate 0 of seed s is the plain seed's image; each candidate
/// has its own initial and step noise, the same for every model.
pub fn score_candidates<B: Backend>(
    pipe: &SdxlPipeline<B>,
    setup: &Setup,
    scenes: &[shapes_world::Scene],
    seeds: u64,
    candidates: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Vec<Vec<shapes_world::ShapesScore>>>> {
    judge_candidates(
        pipe,
        setup,
        scenes,
        seeds,
        candidates,
        bar,
        |rgb, caption| shapes_world::score(rgb, setup.resolution, caption),
    )
}

/// The images of [`score_candidates`], each judged by `judge(rgb8, caption)`.
pub fn judge_candidates<B: Backend, T: Send>(
    pipe: &SdxlPipeline<B>,
    setup: &Setup,
    scenes: &[shapes_world::Scene],
    seeds: u64,
    candidates: usize,
    bar: &ProgressBar,
    judge: impl Fn(&[u8], &str) -> T + Sync,
) -> anyhow::Result<Vec<Vec<Vec<T>>>> {
    let sampler = SamplerKind::parse(&setup.sampler)
        .with_context(|| format!("unknown sampler `{}`", setup.sampler))?;
    anyhow::ensure!(
        setup.prompts > 0 && setup.batch_size > 0 && seeds > 0 && candidates > 0,
        "prompts, seeds, best-of and batch size must be at least 1"
    );
    let captions: Vec<String> = scenes.iter().map(ToString::to_string).collect();
    let mut options = GenerateOptions::new(setup.resolution, setup.resolution);
    options.sampler = sampler;
    options.steps = setup.steps;
    options.guidance_scale = setup.guidance;
    // Every (seed, candidate, batch) is independent: on a CPU they go to a core each. The
    // batches are the same on any thread count, so are the images.
    let starts: Vec<usize> = (0..captions.len()).step_by(setup.batch_size).collect();
    let jobs: Vec<(u64, usize, usize)> = (0..seeds)
        .flat_map(|seed| (0..candidates).map(move |candidate| (seed, candidate)))
        .flat_map(|(seed, candidate)| starts.iter().map(move |&start| (seed, candidate, start)))
        .collect();
    let threads = sharpen_app::par::sampling_threads::<B>();
    let batches = sharpen_app::par::par_map(&jobs, threads, |&(seed, candidate, start)| {
        let end = (start + setup.batch_size).min(captions.len());
        let refs: Vec<&str> = captions[start..end].iter().map(String::as_str).collect();
        let generated = pipe
            .generate_seeded(&refs, candidate_seed(seed, candidate), start, &options)
            .context("generating")?;
        let images = sharpen_rewards::to_rgb8(generated.images);
        bar.inc(refs.len() as u64);
        Ok(images
            .iter()
            .zip(&refs)
            .map(|(rgb, caption)| judge(rgb, caption))
            .collect::<Vec<_>>())
    })?;
    // Back to [seed][candidate][prompt].
    let mut batches = batches.into_iter();
    let out = (0..seeds)
        .map(|_| {
            (0..candidates)
                .map(|_| batches.by_ref().take(starts.len()).flatten().collect())
                .collect()
        })
        .collect();
    Ok(out)
}

/// The tally of one seed under best-of-`n`: per prompt, the first `n` candidates' best by
/// partial credit (the verifier).
pub fn best_of_tally(
    scenes: &[shapes_world::Scene],
    candidates: &[Vec<shapes_world::ShapesScore>],
    n: usize,
) -> Tally {
    let mut tally = Tally::default();
    for (p, scene) in scenes.iter().enumerate() {
        tally.add(
            scene.second.is_some(),
            candidates[best_of(candidates, p, n)][p],
        );
    }
    tally
}

/// Which of the first `n` candidates of prompt `p` the verifier keeps: the highest partial
/// credit, the earliest on a tie.
pub fn best_of(candidates: &[Vec<shapes_world::ShapesScore>], p: usize, n: usize) -> usize {
    (1..n).fold(0, |best, k| {
        if candidates[k][p].partial > candidates[best][p].partial {
            k
        } else {
            best
        }
    })
}

pub fn run<B: Backend>(args: &ShapesArgs, device: B::Device) -> anyhow::Result<()> {
    let listed = !args.caption.is_empty();
    let setup = Setup {
        split: if listed {
            "listed".into()
        } else {
            args.split.clone()
        },
        prompts: if listed {
            args.caption.len()
        } else {
            args.prompts
        },
        prompt_seed: args.prompt_seed,
        sampler: args.sampler.clone(),
        steps: args.steps,
        guidance: args.guidance,
        resolution: args.resolution,
        batch_size: args.batch_size,
    };
    let scenes = if listed {
        args.caption
            .iter()
            .map(|c| {
                shapes_world::Scene::parse(c).with_context(|| {
                    format!("--caption `{c}` is not a shapes-world caption (\"a red circle\", \"a red circle above a blue square\")")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        setup.scenes()?
    };
    let pipe = SdxlPipeline::<B>::load(&args.model, &LoadOptions::default(), &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let bar = progress(args.seeds * (setup.prompts * args.best_of) as u64);
    let checks = judge_candidates(
        &pipe,
        &setup,
        &scenes,
        args.seeds,
        args.best_of,
        &bar,
        |rgb, caption| {
            shapes_world::checks(rgb, setup.resolution, caption)
                .expect("every caption is written from a parsed scene")
        },
    )?;
    bar.finish_and_clear();
    let scores: Vec<Vec<Vec<shapes_world::ShapesScore>>> = checks
        .iter()
        .map(|seed| {
            seed.iter()
                .map(|candidate| candidate.iter().map(Checks::score).collect())
                .collect()
        })
        .collect();
    let tallies: Vec<Tally> = scores
        .iter()
        .map(|seed| best_of_tally(&scenes, seed, args.best_of))
        .collect();
    // The same kept images, check by check.
    let check_tallies: Vec<CheckTally> = checks
        .iter()
        .zip(&scores)
        .map(|(seed_checks, seed_scores)| {
            let mut tally = CheckTally::default();
            for p in 0..scenes.len() {
                tally.add(&seed_checks[best_of(seed_scores, p, args.best_of)][p]);
            }
            tally
        })
        .collect();

    let per_group = |group: Option<usize>, name: &'static str| {
        let images = match group {
            Some(g) => tallies[0].groups[g].0,
            None => setup.prompts,
        };
        let acc: Vec<f64> = tallies.iter().map(|t| t.rates(group).0).collect();
        let partial: Vec<f64> = tallies.iter().map(|t| t.rates(group).1).collect();
        Row {
            prompts: name,
            images_per_seed: images,
            all_correct: mean_ci(&acc),
            partial_credit: mean_ci(&partial),
            partial_credit_per_seed: partial,
        }
    };
    let report = Report {
        model: args.model.display().to_string(),
        split: setup.split.clone(),
        prompts: setup.prompts,
        seeds: args.seeds,
        sampler: args.sampler.clone(),
        steps: args.steps,
        guidance: args.guidance,
        best_of: args.best_of,
        nfe_per_image: args.best_of * setup.nfe_per_image(),
        rows: vec![
            per_group(Some(0), "one object"),
            per_group(Some(1), "two objects"),
            per_group(None, "all"),
        ],
        checks: checks::rows(&check_tallies),
    };
    let table = format!(
        "{}\n{}",
        markdown(&report),
        checks::markdown(&report.checks)
    );
    println!("{table}");
    if let Some(path) = &args.output {
        write(path, &serde_json::to_string_pretty(&report)?)?;
        write(&path.with_extension("md"), &table)?;
    }
    Ok(())
}

/// A progress bar over `len` images.
pub fn progress(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images [{elapsed_precise}<{eta_precise}]",
        )
        .expect("a valid template"),
    );
    bar
}

fn markdown(r: &Report) -> String {
    let pct = |m: MeanCi| format!("{:.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.ci95);
    let source = if r.split == "listed" {
        format!("{} listed captions", r.prompts)
    } else {
        format!("{} prompts of the {} split", r.prompts, r.split)
    };
    let mut out = format!(
        "{} on {source}, {} seeds, {} {} steps, guidance {}, best of {} ({} NFE per image); mean ± 95% CI over seeds\n\n| prompts | images per seed | all-correct % | partial credit % |\n|---|---|---|---|\n",
        r.model, r.seeds, r.sampler, r.steps, r.guidance, r.best_of, r.nfe_per_image
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

pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
