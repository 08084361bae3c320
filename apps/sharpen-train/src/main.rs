//! `sharpen-train`: fine-tune SDXL (or a tiny SDXL-architecture model) with Diffusion-Sharpening
//! (SFT and RLHF) or standard fine-tuning.

mod cached;
mod config;
mod data;
mod export;
mod memory;
mod model;
mod parallel;
mod plan;
mod plot;
mod resume;
mod run;
mod samples;
mod sections;
mod setup;
mod step;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sharpen_app::{init_logging, resolve_device, resolve_devices, DeviceArg, ResolvedDevice};
use sharpen_trainer::train::sync::Peer;

use crate::config::{Precision, TrainConfig};
use crate::run::RunOptions;

/// Fine-tune SDXL with Diffusion-Sharpening (SFT and RLHF) or standard fine-tuning.
#[derive(Debug, Parser)]
#[command(name = "sharpen-train", version, about)]
struct Args {
    /// The run's TOML config (see configs/; default configs/quickstart.toml). With --resume,
    /// the config saved with the checkpoint is used unless this names one, which must then
    /// agree with it on everything that changes the run's numbers.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The run directory (default runs/<name>): metrics.jsonl, checkpoints/, config.toml. A
    /// fresh run refuses one that holds an earlier run; the default one gives way to the next
    /// free runs/<name>-2, -3, ...
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Continue a run: `latest` (the newest checkpoint in the run directory) or a checkpoint
    /// folder.
    #[arg(long)]
    resume: Option<String>,
    /// With --resume: continue even where --config or the flags differ from the config saved
    /// with the checkpoint in settings that change the run's numbers (learning rate, seed, ...).
    #[arg(long, requires = "resume")]
    allow_config_change: bool,
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
    /// Where to run: cpu, cuda or cuda:N (default: the config's `devices`, else cpu). Given, it
    /// replaces the config's `devices` with this one device, which trains on the whole group's
    /// batch (`batch_size` x the listed devices): the same run. A CUDA request falls back to the
    /// CPU, with a warning, when this binary lacks the `cuda` feature or no GPU is present.
    #[arg(long, conflicts_with = "devices")]
    device: Option<DeviceArg>,
    /// Data-parallel training, one peer per device: `cuda:0,cuda:1` (or `cpu,cpu`, to run the
    /// data-parallel path on the CPU). `--batch-size` per device; gradients are averaged before
    /// every optimizer step. Every device must be usable (no fallback). Overrides the config's
    /// `devices`.
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<DeviceArg>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging();
    let given = args.config.is_some();
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("configs/quickstart.toml"));
    let mut config = TrainConfig::load(&config_path)?;
    let output_dir = args
        .output_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&config.name));
    // A fresh run never writes into an earlier one (it would append to its metrics).
    let output_dir = match args.resume {
        Some(_) => output_dir,
        None => resume::fresh_dir(output_dir, args.output_dir.is_some())?,
    };
    let saved = match &args.resume {
        Some(spec) => resume::saved(&resume::checkpoint(spec, &output_dir)?, &output_dir)?,
        None => None,
    };
    if let (false, Some((path, saved))) = (given, &saved) {
        tracing::info!(config = %path.display(), "resuming with the run's saved config");
        config = saved.clone();
    }
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
    let devices: Vec<DeviceArg> = match (args.devices, args.device) {
        (Some(devices), _) => devices,
        (None, Some(_)) => Vec::new(),
        (None, None) => config
            .devices
            .iter()
            .map(|d| d.parse())
            .collect::<Result<_, String>>()
            .map_err(|e| {
                anyhow::anyhow!("{}: config field `devices`: {e}", config_path.display())
            })?,
    };
    // `--device` puts the whole group's batch on one device, so the run keeps the config's
    // numbers (peers x batch N equal one device x batch kN, tested).
    if args.device.is_some() && config.group_batch() != config.batch_size {
        config.batch_size = config.group_batch();
        tracing::info!(
            batch_size = config.batch_size,
            "one device instead of the config's {}: it trains on their whole batch",
            config.devices.len()
        );
    }
    config.devices = devices.iter().map(ToString::to_string).collect();
    let group = match devices.is_empty() {
        true => vec![resolve_device(args.device.unwrap_or(DeviceArg::Cpu))],
        false => resolve_devices(&devices).map_err(anyhow::Error::msg)?,
    };
    let device = group[0];
    for d in &group {
        tracing::info!("device: {}", d.describe());
    }
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
        .with_context(|| format!("{}", config_path.display()))?;
    // The run continues only as it was trained: flags and a given config may change its length
    // and bookkeeping, not its numbers.
    if let Some((path, saved)) = &saved {
        let changed = resume::differences(saved, &config)?;
        if !changed.is_empty() {
            let list = changed.join(", ");
            if !args.allow_config_change {
                anyhow::bail!(
                    "resuming with {list} changed from the config the run was trained with ({}) would not continue that run: leave them as they were (without --config the saved config is used), or pass --allow-config-change",
                    path.display()
                );
            }
            tracing::warn!(changed = %list, "continuing with a changed config (--allow-config-change)");
        }
    }
    let options = RunOptions {
        config,
        output_dir,
        resume: args.resume,
        dry_run: args.dry_run,
    };
    type Cpu = burn::backend::Autodiff<sharpen_app::CpuBackend>;
    #[cfg(feature = "cuda")]
    type Cuda = burn::backend::Autodiff<sharpen_app::CudaBackend>;
    // A dry run plans one peer's share (the batch is per device).
    let peers = if options.dry_run { 1 } else { group.len() };
    let result = match (device, peers) {
        (ResolvedDevice::Cpu, 1) => run::run::<Cpu>(
            &options,
            Default::default(),
            Peer::alone(Default::default()),
        ),
        (ResolvedDevice::Cpu, k) => {
            parallel::data_parallel::<Cpu>(&options, vec![Default::default(); k])
        }
        #[cfg(feature = "cuda")]
        (ResolvedDevice::Cuda(i), 1) => {
            let device = burn::backend::cuda::CudaDevice::new(i);
            run::run::<Cuda>(&options, device.clone(), Peer::alone(device))
        }
        #[cfg(feature = "cuda")]
        (ResolvedDevice::Cuda(_), _) => {
            let devices = group
                .iter()
                .map(|d| match d {
                    ResolvedDevice::Cuda(i) => burn::backend::cuda::CudaDevice::new(*i),
                    ResolvedDevice::Cpu => unreachable!("resolve_devices refuses mixed kinds"),
                })
                .collect();
            parallel::data_parallel::<Cuda>(&options, devices)
        }
    };
    // Ctrl-C saved a checkpoint and stopped early: say so in the exit status (128 + SIGINT, as
    // shells do), so that scripts do not take the run for finished.
    if result.is_ok() && run::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        std::process::exit(130);
    }
    result
}
