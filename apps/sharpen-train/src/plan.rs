//! `sharpen-train --dry-run`: everything a run checks before it trains, and its plan.

use anyhow::{bail, Context};
use burn::tensor::backend::AutodiffBackend;
use sharpen_pipeline::SdxlPipeline;
use sharpen_weights::LoadOptions;

use crate::config::{DataConfig, Method};
use crate::data::Source;
use crate::model::Trainable;
use crate::run::RunOptions;

/// `--dry-run`: loads the model, the trained parts and the data, checks them against the config
/// and prints what the run would do; writes nothing.
pub fn dry_run<B: AutodiffBackend>(opts: &RunOptions, device: &B::Device) -> anyhow::Result<()> {
    let cfg = &opts.config;
    let pipe = SdxlPipeline::<B::InnerBackend>::load(&cfg.model, &LoadOptions::default(), device)
        .with_context(|| format!("loading the pipeline {}", cfg.model.display()))?;
    crate::setup::check_prediction(cfg.method, pipe.scheduler.prediction, &cfg.model)?;
    let scale = pipe.vae.config.downscale();
    if !cfg.resolution.is_multiple_of(scale) {
        bail!(
            "config field `resolution`: {} is not a multiple of the VAE's downscale factor {scale}",
            cfg.resolution
        );
    }
    let trained = match &cfg.lora {
        Some(lora) => Trainable::<B::InnerBackend>::fresh_lora(&pipe.unet, lora, cfg.seed, device)?,
        None => Trainable::<B::InnerBackend>::load(&cfg.model, cfg.parts(), None, device)?,
    };
    let lora = trained.lora.as_ref().map(|l| {
        format!(
            "\n  lora: {} adapted modules, {} trainable values (rank {}, alpha {})",
            l.layers.len(),
            l.num_params(),
            l.layers[0].rank(),
            l.layers[0].alpha
        )
    });
    let memory = crate::memory::plan(cfg, &pipe, &trained);
    let source = Source::open(&cfg.data, cfg.resolution, cfg.seed, cfg.shard)?;
    let t = cfg.trajectory;
    let per_prompt = match cfg.method {
        Method::Standard | Method::Autoencoder => 0,
        Method::SharpenSft | Method::SharpenRlhf => t.n * t.m,
        Method::Ddpo | Method::DiffusionDpo => t.n,
    };
    let micro = cfg.optim.accumulation.max(1);
    let examples = cfg.steps * micro * cfg.batch_size;
    let queries = per_prompt * cfg.batch_size * micro;
    let data = match source.rows() {
        Some(rows) => {
            let fixed = match &cfg.data {
                DataConfig::Shapes {
                    prompts,
                    layouts: Some(k),
                    ..
                } => format!(
                    " (the shapes world, {} listed captions at {k} fixed layout{} each)",
                    prompts.len(),
                    if *k == 1 { "" } else { "s" }
                ),
                _ => String::new(),
            };
            format!(
                "{rows} rows{fixed} ({:.1} passes for this rank)",
                examples as f64 * cfg.shard.world_size as f64 / rows as f64
            )
        }
        None => match &cfg.data {
            DataConfig::Shapes { prompts, .. } if !prompts.is_empty() => format!(
                "the shapes world, {} listed captions (rendered on the fly)",
                prompts.len()
            ),
            _ => "the shapes world (rendered on the fly)".into(),
        },
    };
    // A dry run plans one peer; the counts below are that peer's.
    let devices = match cfg.devices.len() {
        0 | 1 => String::new(),
        k => format!(
            "\n  devices: {k} ({}); the counts below are per device",
            cfg.devices.join(", ")
        ),
    };
    let validation = if cfg.validation.enabled {
        let prompts = match cfg.validation.prompts.len() {
            0 => cfg.validation.count,
            k => k,
        };
        format!(
            "{} images at step 0 and every {} steps",
            prompts * cfg.validation.seeds,
            cfg.checkpoint_every
        )
    } else {
        "off".into()
    };
    println!(
        "dry run: {:?} of {} toward `{}`{devices}\n  data: {data}\n  steps: {} x {} micro-batches of {} = {examples} examples\n  reward queries: at most {queries} per step, {} in all\n  latents: {} x {} x {}\n  validation: {validation}{}\n  output: {}\n{memory}",
        cfg.method,
        cfg.model.display(),
        cfg.reward.name(),
        cfg.steps,
        micro,
        cfg.batch_size,
        queries * cfg.steps,
        pipe.vae.config.latent_channels,
        cfg.resolution / scale,
        cfg.resolution / scale,
        lora.unwrap_or_default(),
        opts.output_dir.display(),
    );
    Ok(())
}
