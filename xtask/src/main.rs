//! `cargo xtask <task>`: project tasks that are not part of the library (downloads live only here).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod download;
mod experiment;
mod jobs;
mod ledger;
mod manifest;
mod page;
mod shapes;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "sharpen project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Download model weights from the Hugging Face Hub into the standard HF cache.
    ///
    /// Honours HF_ENDPOINT (mirror), HF_HOME (cache in $HF_HOME/hub) and HF_TOKEN (never printed).
    /// Interrupted downloads resume; every file is checked against the Hub's size and hash.
    DownloadWeights {
        /// A model of the manifest (default: the one marked `default = true`).
        name: Option<String>,
        /// Branch, tag or commit (default: the manifest's revision).
        #[arg(long)]
        revision: Option<String>,
        /// Cache directory (the hub cache root) instead of $HF_HOME/hub.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The manifest to read.
        #[arg(long, default_value_os_t = workspace_root().join("configs/weights.toml"))]
        manifest: PathBuf,
        /// List the manifest's models and exit.
        #[arg(long)]
        list: bool,
    },
    /// The shapes-world model: `init` writes the untrained pipeline folder (configs, tokenizers,
    /// seeded random weights) that `assets/shapes-model/README.md` trains.
    ShapesModel {
        #[command(subcommand)]
        action: ShapesAction,
    },
    /// Experiments that produce the pages under docs/results/.
    Experiment {
        #[command(subcommand)]
        which: Experiment,
    },
}

#[derive(Debug, Subcommand)]
enum Experiment {
    /// The shapes-world table: every method at an equal reward-query budget, several seeds, the
    /// n and m ablations, best-of-N of the base model; writes docs/results/shapes.md.
    Shapes(experiment::Options),
}

#[derive(Debug, Subcommand)]
enum ShapesAction {
    /// Write the untrained pipeline folder.
    Init {
        /// Output folder (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the random initial weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Write a small image-caption sample of the world's training split as an HF imagefolder
    /// (`images/*.png` + `metadata.jsonl` with `file_name` and `text`) plus `prompts.txt`.
    Sample {
        /// Output folder (must not exist).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 64)]
        count: u64,
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    match cli.task {
        Task::ShapesModel {
            action: ShapesAction::Init { out, seed },
        } => shapes::init(&workspace_root(), &out, seed),
        Task::Experiment {
            which: Experiment::Shapes(options),
        } => {
            // Paths of the experiment are relative to the workspace root.
            std::env::set_current_dir(workspace_root()).context("entering the workspace")?;
            experiment::run(&options)
        }
        Task::ShapesModel {
            action:
                ShapesAction::Sample {
                    out,
                    count,
                    size,
                    seed,
                },
        } => shapes::sample(&out, count, size, seed),
        Task::DownloadWeights {
            name,
            revision,
            dir,
            manifest,
            list,
        } => {
            let manifest = manifest::Manifest::load(&manifest)?;
            if list {
                for m in &manifest.model {
                    let mark = if m.default { " (default)" } else { "" };
                    println!(
                        "{}{mark}: {} @ {}, {} files. {}",
                        m.name,
                        m.repo,
                        m.revision,
                        m.files.len(),
                        m.description
                    );
                }
                return Ok(());
            }
            let entry = manifest.select(name.as_deref())?;
            let revision = revision.unwrap_or_else(|| entry.revision.clone());
            let options = download::HubOptions::from_env(dir);
            let paths = download::download(entry, &revision, &options)
                .with_context(|| format!("download-weights {}", entry.name))?;
            if let Some(first) = paths.first() {
                // The snapshot folder: pass it (or the repo id) to --model.
                let depth = entry.files[0].matches('/').count() + 1;
                let root = first.ancestors().nth(depth).unwrap_or(first);
                println!("{}", root.display());
            }
            Ok(())
        }
    }
}
