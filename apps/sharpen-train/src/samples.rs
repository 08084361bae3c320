//! Validation samples: the same prompts and seeds at the start and at every checkpoint, as one
//! PNG grid per step (`DIR/samples/step-NNNNNN.png`, with a JSON sidecar of prompts and seeds).
//! Their noise comes from the seeds, not from the run's random stream, so they never change what
//! training draws.

use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use sdxl_text::PromptBatch;
use sdxl_unet::UNet2DConditionModel;
use sharpen_pipeline::{
    image_seed, seeded_noise, GenerateOptions, GenerateRequest, SdxlPipeline, SeededStepNoise,
};
use sharpen_schedulers::SamplerKind;
use sharpen_trainer::train::run_dir::write_atomic;

use crate::config::ValidationSection;

/// Generates the validation grid of `unet` at `step` into `dir/samples/`.
pub fn write_samples<B: Backend>(
    dir: &Path,
    pipe: &SdxlPipeline<B>,
    unet: &UNet2DConditionModel<B>,
    config: &ValidationSection,
    prompts: &[String],
    resolution: usize,
    step: usize,
) -> anyhow::Result<()> {
    let sampler = SamplerKind::parse(&config.sampler)
        .with_context(|| format!("validation.sampler `{}`", config.sampler))?;
    let mut options = GenerateOptions::new(resolution, resolution);
    options.sampler = sampler;
    options.steps = config.steps;
    options.guidance_scale = config.guidance;
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let latent = resolution / pipe.vae.config.downscale();
    let device = unet.conv_in.weight.val().device();
    let latents = seeded_noise(
        config.seed,
        0,
        [refs.len(), unet.config.in_channels, latent, latent],
        &device,
    );
    let generated = pipe
        .generate_with(
            unet,
            GenerateRequest {
                prompts: PromptBatch::new(&refs),
                negative: None,
                latents,
            },
            &options,
            &mut SeededStepNoise { seed: config.seed },
            &mut |_| {},
        )
        .context("generating validation samples")?;
    let images = sharpen_rewards::to_rgb8(generated.images);
    let (n, side) = (images.len(), resolution);
    let mut grid = vec![0u8; n * side * side * 3];
    for (i, img) in images.iter().enumerate() {
        for y in 0..side {
            let row = &img[y * side * 3..(y + 1) * side * 3];
            let at = (y * n * side + i * side) * 3;
            grid[at..at + side * 3].copy_from_slice(row);
        }
    }
    let out = dir.join("samples");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let png = out.join(format!("step-{step:06}.png"));
    crate::plot::write_png(&png, &grid, n * side, side)?;
    let sidecar = serde_json::json!({
        "step": step,
        "prompts": prompts,
        "seeds": (0..n).map(|i| image_seed(config.seed, i)).collect::<Vec<_>>(),
        "sampler": config.sampler, "steps": config.steps, "guidance": config.guidance,
    });
    write_atomic(
        &png.with_extension("json"),
        serde_json::to_string_pretty(&sidecar)?.as_bytes(),
    )?;
    Ok(())
}
