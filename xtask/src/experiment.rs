//! `cargo xtask experiment shapes`: the shapes-world table of issue 7. Trains every method at an
//! equal reward-query budget (base, standard fine-tuning, DDPO, Diffusion-DPO, sharpen-SFT,
//! sharpen-RLHF; and the n and m ablations of sharpen-SFT at equal steps) for several seeds with
//! `sharpen-train`, evaluates them all on the same held-out prompts and seeds with
//! `sharpen-eval compare` (best-of-N of the base model for the NFE plot), and writes
//! `docs/results/shapes.md`. Runs that finished are kept; interrupted ones resume. Each finished
//! run is evaluated at once and recorded in the ledger (`docs/results/shapes/ledger/`, committed):
//! recorded runs are not trained again, even on a machine without their run folders.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::jobs::{cargo_run, claim, finished, start_over, train_all};
use crate::ledger;
use crate::page::{training_seconds, write_results};

/// What the experiment trains and evaluates.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Run folders go here.
    #[arg(long, default_value = "runs/experiment-shapes")]
    pub out: PathBuf,
    /// The results page; its plots and tables go beside it in a folder of the same name.
    #[arg(long, default_value = "docs/results/shapes.md")]
    pub results: PathBuf,
    /// What each finished run leaves for the results (metrics, validation, score records), to
    /// commit: runs recorded here are not trained again, even when their run folders are gone
    /// (default: `ledger/` in the results' folder).
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// The base model every method starts from.
    #[arg(long, default_value = "assets/shapes-model")]
    pub model: PathBuf,
    /// Training seeds per method.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Reward queries per training run (the equal budget).
    #[arg(long, default_value_t = 2160)]
    pub queries: usize,
    /// Prompts per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Held-out prompts of the evaluation.
    #[arg(long, default_value_t = 64)]
    pub eval_prompts: usize,
    /// Evaluation seeds per trained model.
    #[arg(long, default_value_t = 2)]
    pub eval_seeds: u64,
    /// Best-of-N sizes of the base model.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub best_of: Vec<usize>,
    /// Skip the n and m ablations.
    #[arg(long)]
    pub no_ablations: bool,
    /// Write the configs and the plan, train and evaluate nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Training runs (and evaluated models) at a time: the CPU backend keeps about one core busy
    /// per run. With more than one, each run's output goes to `<run>.log` beside its folder.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
}

/// One training run of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The row it belongs to in the table.
    pub method: String,
    pub seed: u64,
    pub dir: PathBuf,
    pub steps: usize,
    /// Reward queries per optimizer step (at most: short trajectories near t = 0 query less).
    pub queries_per_step: usize,
    pub config: String,
}

impl Planned {
    /// `text` is this run's config: the same settings (comments and layout may differ).
    pub fn is_config(&self, text: &str) -> bool {
        let settings = |t: &str| t.parse::<toml::Table>().ok();
        settings(text).is_some_and(|c| Some(c) == settings(&self.config))
    }
}

const N: usize = 3;
const M: usize = 3;
const ABLATION: [usize; 4] = [1, 2, 4, 8];

/// Method-specific config lines: (method key, reward queries per prompt per step, extra TOML).
fn method_lines(row: &str) -> (&'static str, usize, String) {
    let online = "[rlhf]\nrollout_cfg = 2.0\ngeneration_steps = 10\n";
    let trajectory = |n: usize, m: usize| format!("[trajectory]\nn = {n}\nm = {m}\nstride = 40\n");
    match row {
        "standard" => ("standard", 0, "caption_dropout = 0.1\n".into()),
        "sharpen-sft" => ("sharpen-sft", N * M, trajectory(N, M)),
        "sharpen-rlhf" => (
            "sharpen-rlhf",
            N * M,
            format!("{}{online}reward_margin = \"outside\"\n", trajectory(N, M)),
        ),
        // The same, ranking by the online generations' rewards with fresh re-noising noise (not
        // the method's defaults; see configs/shapes/jpeg-rlhf.toml).
        "sharpen-rlhf-gen" => (
            "sharpen-rlhf",
            N * M,
            format!(
                "{}{online}reward_margin = \"outside\"\nselect = \"generation\"\nrenoise = \"fresh\"\n",
                trajectory(N, M)
            ),
        ),
        "ddpo" => ("ddpo", N, format!("{}{online}", trajectory(N, 1))),
        "diffusion-dpo" => ("diffusion-dpo", N, format!("{}{online}", trajectory(N, 1))),
        other => {
            // Ablations: "sharpen-sft n=K" or "sharpen-sft m=K".
            let (knob, k) = other
                .rsplit_once(' ')
                .and_then(|(_, kv)| kv.split_once('='))
                .and_then(|(knob, k)| Some((knob, k.parse::<usize>().ok()?)))
                .unwrap_or_else(|| panic!("unknown experiment row `{other}`"));
            let (n, m) = if knob == "n" { (k, M) } else { (N, k) };
            ("sharpen-sft", n * m, trajectory(n, m))
        }
    }
}

fn learning_rate(method: &str) -> f64 {
    match method {
        "standard" | "sharpen-sft" => 2e-5,
        _ => 1e-5,
    }
}

/// The runs: main rows at an equal reward-query budget (standard fine-tuning, which queries no
/// reward, takes as many steps as sharpen-SFT), ablations at sharpen-SFT's step count.
pub fn plan(o: &Options) -> anyhow::Result<Vec<Planned>> {
    if o.seeds == 0 || o.batch_size == 0 {
        bail!("--seeds and --batch-size must be at least 1");
    }
    let sharpen_steps = o.queries / (o.batch_size * N * M);
    if sharpen_steps == 0 {
        bail!(
            "--queries {}: less than one sharpening step ({} queries)",
            o.queries,
            o.batch_size * N * M
        );
    }
    let main: Vec<String> = [
        "standard",
        "ddpo",
        "diffusion-dpo",
        "sharpen-sft",
        "sharpen-rlhf",
        "sharpen-rlhf-gen",
    ]
    .map(String::from)
    .to_vec();
    let mut ablations = Vec::new();
    if !o.no_ablations {
        for k in ABLATION {
            ablations.push(format!("sharpen-sft n={k}"));
        }
        for k in ABLATION {
            ablations.push(format!("sharpen-sft m={k}"));
        }
    }
    // Seed by seed, the main rows before the ablations: an experiment stopped midway (and
    // resumed later) has whole seeds of the main table first.
    let mut runs = Vec::new();
    for rows in [&main, &ablations] {
        for seed in 0..o.seeds {
            for row in rows {
                runs.push(planned(o, row, seed, sharpen_steps));
            }
        }
    }
    Ok(runs)
}

/// The run of `row` with training seed `seed`.
fn planned(o: &Options, row: &str, seed: u64, sharpen_steps: usize) -> Planned {
    let (method, per_prompt, extra) = method_lines(row);
    let per_step = per_prompt * o.batch_size;
    let steps = if per_step == 0 || row.contains('=') {
        sharpen_steps
    } else {
        o.queries / per_step
    };
    let validation_every = (steps / 4).max(1);
    let name = format!("{}-s{seed}", row.replace([' ', '='], ""));
    let dir = o.out.join(&name);
    let config = format!(
        "# Written by `cargo xtask experiment shapes`: row `{row}`, seed {seed}.\n\
         name = \"{name}\"\nmethod = \"{method}\"\nmodel = \"{model}\"\nreward = \"shapes\"\n\
         seed = {seed}\nsteps = {steps}\nbatch_size = {batch}\nresolution = 32\n\
         checkpoint_every = {validation_every}\n{extra}\
         [data]\nkind = \"shapes\"\nseed = {seed}\n\
         [optim]\nlr = {lr:e}\n\
         [validation]\ncount = 8\nseeds = 2\nguidance = 2.0\n",
        model = o.model.display(),
        batch = o.batch_size,
        lr = learning_rate(method),
    );
    Planned {
        method: row.to_string(),
        seed,
        dir,
        steps,
        queries_per_step: per_step,
        config,
    }
}

impl Options {
    /// The ledger folder.
    pub fn ledger(&self) -> PathBuf {
        self.ledger
            .clone()
            .unwrap_or_else(|| self.results.with_extension("").join("ledger"))
    }
}

/// The settings every `sharpen-eval compare` config of the experiment shares (the per-run
/// evaluations' score records serve the final comparison only under the same settings).
fn compare_settings(o: &Options, base: &str, best_of: &[usize], output: &Path) -> String {
    let best_of: Vec<String> = best_of.iter().map(ToString::to_string).collect();
    format!(
        "# Written by `cargo xtask experiment shapes`.\nsplit = \"held-out\"\nprompts = {}\nseeds = {}\n\
         base = \"{base}\"\nbest_of = [{}]\noutput = \"{}\"\nscores = \"{}\"\n",
        o.eval_prompts,
        o.eval_seeds,
        best_of.join(", "),
        output.display(),
        ledger::scores(&o.ledger()).display(),
    )
}

/// The held-out evaluation of one finished run (its score record and table).
pub fn run_eval_config(o: &Options, r: &Planned) -> String {
    format!(
        "{}\n[[method]]\nname = \"{}\"\nmodels = [\"{}\"]\nruns = [\"{}\"]\n",
        compare_settings(o, &r.method, &[1], &r.dir.join("eval")),
        r.method,
        r.dir.join("pipeline").display(),
        r.dir.display()
    )
}

/// The `sharpen-eval compare` config over the plan (the base model first, as the best-of-N
/// curve; the runs' curves from their ledger entries).
pub fn compare_config(o: &Options, runs: &[Planned], output: &Path) -> String {
    let mut text = format!(
        "{}paired = [\"base\", \"standard\"]\n\n[[method]]\nname = \"base\"\nmodels = [\"{}\"]\n",
        compare_settings(o, "base", &o.best_of, output),
        o.model.display()
    );
    let mut rows: Vec<&str> = Vec::new();
    for r in runs {
        if !rows.contains(&r.method.as_str()) {
            rows.push(&r.method);
        }
    }
    let ledger = o.ledger();
    for row in rows {
        let mine: Vec<&Planned> = runs.iter().filter(|r| r.method == row).collect();
        let list = |f: &dyn Fn(&Planned) -> PathBuf| {
            mine.iter()
                .map(|r| format!("\"{}\"", f(r).display()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(
            text,
            "\n[[method]]\nname = \"{row}\"\nmodels = [{}]\nruns = [{}]\n",
            list(&|r| r.dir.join("pipeline")),
            list(&|r| ledger::entry(&ledger, r))
        );
    }
    text
}

fn plan_table(o: &Options, runs: &[Planned]) -> String {
    let mut out = format!(
        "Budget: {} reward queries per run (batch {}, n = {N}, m = {M} for sharpening); \
         ablations at sharpen-SFT's step count.\n\n| row | seeds | steps | reward queries per step | reward queries per run |\n|---|---|---|---|---|\n",
        o.queries, o.batch_size
    );
    for r in runs.iter().filter(|r| r.seed == 0) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.method,
            o.seeds,
            r.steps,
            r.queries_per_step,
            r.steps * r.queries_per_step
        );
    }
    out
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    let runs = plan(o)?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let figures = o.results.with_extension("");
    let table = plan_table(o, &runs);
    std::fs::write(o.out.join("plan.md"), &table)?;
    for r in &runs {
        std::fs::create_dir_all(&r.dir)?;
        std::fs::write(r.dir.with_extension("toml"), &r.config)?;
    }
    let compare = o.out.join("compare.toml");
    std::fs::write(&compare, compare_config(o, &runs, &figures))?;
    eprintln!("{table}");
    if o.dry_run {
        eprintln!("dry run: configs in {}", o.out.display());
        return Ok(());
    }
    let ledger = o.ledger();
    let recorded = |r: &Planned| ledger::recorded(&ledger, r);
    train_all(
        &runs,
        o.jobs,
        &recorded,
        &|r: &Planned, log: Option<&Path>| {
            claim(r)?;
            if !finished(r) {
                let config = r.dir.with_extension("toml");
                let (config, dir) = (config.to_string_lossy(), r.dir.to_string_lossy());
                let mut args = vec!["--config", &config, "--output-dir", &dir];
                if r.dir.join("checkpoints/latest").is_file() {
                    args.extend(["--resume", "latest"]);
                } else {
                    start_over(r)?;
                }
                cargo_run("sharpen-train", &args, log)?;
                if !finished(r) {
                    bail!(
                    "{}: sharpen-train stopped before the end of the run; run the command again to resume it",
                    r.dir.display()
                );
                }
            }
            ledger::record_run(&ledger, r)?;
            let eval = r.dir.join("eval.toml");
            std::fs::write(&eval, run_eval_config(o, r))
                .with_context(|| format!("writing {}", eval.display()))?;
            cargo_run(
                "sharpen-eval",
                &["compare", "--config", &eval.to_string_lossy()],
                log,
            )?;
            ledger::record_eval(&ledger, r, &r.dir.join("eval"))
        },
    )?;
    let train_s = runs
        .iter()
        .map(|r| training_seconds(&ledger::entry(&ledger, r)))
        .collect::<anyhow::Result<Vec<f64>>>()?
        .iter()
        .sum::<f64>();
    cargo_run(
        "sharpen-eval",
        &[
            "compare",
            "--config",
            &compare.to_string_lossy(),
            "--jobs",
            &o.jobs.to_string(),
        ],
        None,
    )?;
    let report = std::fs::read_to_string(figures.join("compare.md"))
        .with_context(|| format!("reading {}", figures.join("compare.md").display()))?;
    write_results(o, &table, &report, train_s, &figures)
}

/// The options as the command line `args` give them (tests).
#[cfg(test)]
pub fn options(args: &[&str]) -> Options {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        o: Options,
    }
    Cli::parse_from(std::iter::once("x").chain(args.iter().copied())).o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_rows_share_the_reward_query_budget() {
        let o = options(&[]);
        let runs = plan(&o).unwrap();
        assert_eq!(runs.len(), 14 * 3, "6 methods + 8 ablations, 3 seeds each");
        let order: Vec<(&str, u64)> = runs.iter().map(|r| (r.method.as_str(), r.seed)).collect();
        assert_eq!(order[5], ("sharpen-rlhf-gen", 0));
        assert_eq!(order[6], ("standard", 1), "seed by seed");
        assert_eq!(
            order[18],
            ("sharpen-sft n=1", 0),
            "the ablations after the main rows"
        );
        let budget = |row: &str| {
            let r = runs.iter().find(|r| r.method == row).unwrap();
            (r.steps, r.steps * r.queries_per_step)
        };
        assert_eq!(budget("sharpen-sft"), (60, 2160));
        assert_eq!(budget("sharpen-rlhf"), (60, 2160));
        assert_eq!(budget("sharpen-rlhf-gen"), (60, 2160));
        assert_eq!(budget("ddpo"), (180, 2160));
        assert_eq!(budget("diffusion-dpo"), (180, 2160));
        assert_eq!(budget("standard"), (60, 0), "as many steps as sharpen-SFT");
        assert_eq!(budget("sharpen-sft n=8").0, 60, "ablations at equal steps");
        for r in &runs {
            let cfg: toml::Value = toml::from_str(&r.config).unwrap();
            assert_eq!(cfg["steps"].as_integer(), Some(r.steps as i64));
            assert_eq!(cfg["seed"].as_integer(), Some(r.seed as i64));
        }
        let config_of = |row: &str| -> toml::Value {
            let run = runs.iter().find(|r| r.method == row).unwrap();
            toml::from_str(&run.config).unwrap()
        };
        let m8 = config_of("sharpen-sft m=8");
        assert_eq!(m8["trajectory"]["m"].as_integer(), Some(8));
        assert_eq!(m8["method"].as_str(), Some("sharpen-sft"));
        let gen = config_of("sharpen-rlhf-gen");
        assert_eq!(gen["method"].as_str(), Some("sharpen-rlhf"));
        assert_eq!(gen["rlhf"]["select"].as_str(), Some("generation"));
        assert_eq!(gen["rlhf"]["renoise"].as_str(), Some("fresh"));
        let mut dirs: Vec<_> = runs.iter().map(|r| &r.dir).collect();
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), runs.len(), "one folder per run");
    }

    #[test]
    fn the_committed_ledger_holds_every_planned_run() {
        // The results page is rebuilt from the ledger without training only while every run the
        // default plan makes is recorded with the same config: a change to what the runs draw
        // must keep their configs or rerun them.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let o = options(&[]);
        let ledger = root.join(o.ledger());
        let missing: Vec<String> = plan(&o)
            .unwrap()
            .iter()
            .filter(|r| !crate::ledger::recorded(&ledger, r))
            .map(|r| r.dir.display().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "not in the ledger as planned: {missing:?}"
        );
        // Every run draws its start timesteps as method.md does (one per training example): the
        // old per-micro-batch draw is a compatibility switch, not the experiment's.
        for r in &plan(&o).unwrap() {
            let cfg: toml::Value = toml::from_str(&r.config).unwrap();
            let shared = cfg.get("trajectory").and_then(|t| t.get("shared_timestep"));
            assert_eq!(shared, None, "{}", r.method);
        }
    }

    #[test]
    fn the_comparison_lists_every_row_with_its_seeds() {
        let o = options(&["--seeds", "2", "--no-ablations", "--best-of", "1,4"]);
        let runs = plan(&o).unwrap();
        let cfg: toml::Value =
            toml::from_str(&compare_config(&o, &runs, Path::new("docs/results/shapes"))).unwrap();
        let methods = cfg["method"].as_array().unwrap();
        let names: Vec<&str> = methods
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "base",
                "standard",
                "ddpo",
                "diffusion-dpo",
                "sharpen-sft",
                "sharpen-rlhf",
                "sharpen-rlhf-gen"
            ]
        );
        assert_eq!(methods[4]["models"].as_array().unwrap().len(), 2);
        assert!(methods[4]["models"][1]
            .as_str()
            .unwrap()
            .ends_with("sharpen-sft-s1/pipeline"));
        assert_eq!(cfg["best_of"].as_array().unwrap().len(), 2);
        // Every method paired against the base model and against standard fine-tuning.
        let paired: Vec<&str> = cfg["paired"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(paired, ["base", "standard"]);
        assert!(plan(&options(&["--queries", "10"])).is_err());
        // The curves come from the ledger; every score record goes to one folder.
        assert_eq!(
            methods[4]["runs"][1].as_str(),
            Some("docs/results/shapes/ledger/runs/sharpen-sft-s1")
        );
        assert_eq!(
            cfg["scores"].as_str(),
            Some("docs/results/shapes/ledger/scores")
        );
        // A run's own evaluation: the same settings, its one model, best of 1.
        let one: toml::Value = toml::from_str(&run_eval_config(&o, &runs[3])).unwrap();
        for key in ["split", "prompts", "seeds", "scores"] {
            assert_eq!(one[key], cfg[key], "{key}");
        }
        assert_eq!(one["best_of"].as_array().unwrap().len(), 1);
        assert_eq!(one["method"][0]["name"].as_str(), Some("sharpen-sft"));
        assert_eq!(one["base"].as_str(), Some("sharpen-sft"));
        assert!(one["method"][0]["models"][0]
            .as_str()
            .unwrap()
            .ends_with("sharpen-sft-s0/pipeline"));
        assert!(one["output"]
            .as_str()
            .unwrap()
            .ends_with("sharpen-sft-s0/eval"));
        let elsewhere = options(&["--ledger", "/tmp/l"]);
        assert_eq!(elsewhere.ledger(), PathBuf::from("/tmp/l"));
    }
}
