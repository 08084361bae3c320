//! `sharpen-train`: fine-tune SDXL (or a tiny SDXL-architecture model) with Diffusion-Sharpening
//! (SFT and RLHF) or standard fine-tuning.

mod cached;
mod config;
mod data;
mod export;
mod memory;
mod model;
mod plan;
mod plot;
mod run;
mod samples;
mod sections;
mod setup;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sharpen_app::{init_logging, resolve_device, DeviceArg, ResolvedDevice};

use crate::config::{Precision, TrainConfig};
use crate::run::RunOptions;

/// Fine-tune SDXL with Diffusion-Sharpening (SFT and RLHF) or standard fine-tuning.
#[derive(Debug, Parser)]
#[command(name = "sharpen-train", version, about)]
struct Args {
    /// The run's TOML config (see configs/).
    #[arg(long, default_value = "configs/quickstart.toml")]
    config: PathBuf,
    /// The run directory (default runs/<name>): metrics.jsonl, checkpoints/, config.toml.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Continue a run: `latest` (the newest checkpoint in the run directory) or a checkpoint
    /// folder.
    #[arg(long)]
    resume: Option<String>,
    /// Override the config's optimizer steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Override the config's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the config's model (a diffusers pipeline folder).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Load the model, its trained parts and the data, check them against the config, print
    /// what the run would do, and exit without training or writing anything.
    #[arg(long)]
    dry_run: bool,
    /// Override the config's data shard: this process's rank ...
    #[arg(long)]
    rank: Option<usize>,
    /// ... of this many (each reads every world-size-th row of the shared order).
    #[arg(long)]
    world_size: Option<usize>,
    /// Where to run: cpu, cuda or cuda:N. A CUDA request falls back to the CPU, with a warning,
    /// when this binary lacks the `cuda` feature or no GPU is present.
    #[arg(long, default_value = "cpu")]
    device: DeviceArg,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging();
    let mut config = TrainConfig::load(&args.config)?;
    if let Some(steps) = args.steps {
        config.steps = steps;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(rank) = args.rank {
        config.shard.rank = rank;
    }
    if let Some(world_size) = args.world_size {
        config.shard.world_size = world_size;
    }
    if let Some(model) = args.model {
        config.model = model;
    }
    let device = resolve_device(args.device);
    tracing::info!("device: {}", device.describe());
    if config.precision == Precision::Auto {
        let cuda = !matches!(device, ResolvedDevice::Cpu);
        config.precision = if cuda && !config.gradient_checkpointing {
            Precision::Bf16
        } else {
            Precision::F32
        };
        tracing::info!(precision = ?config.precision, "UNet compute precision");
    }
    config
        .validate()
        .with_context(|| format!("{}", args.config.display()))?;
    let output_dir = args
        .output_dir
        .unwrap_or_else(|| PathBuf::from("runs").join(&config.name));
    let options = RunOptions {
        config,
        output_dir,
        resume: args.resume,
        dry_run: args.dry_run,
    };
    match device {
        ResolvedDevice::Cpu => run::run::<burn::backend::Autodiff<sharpen_app::CpuBackend>>(
            &options,
            Default::default(),
        ),
        #[cfg(feature = "cuda")]
        ResolvedDevice::Cuda(i) => run::run::<burn::backend::Autodiff<sharpen_app::CudaBackend>>(
            &options,
            burn::backend::cuda::CudaDevice::new(i),
        ),
    }
}
