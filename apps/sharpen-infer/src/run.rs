//! One `sharpen-infer` run on a chosen backend.

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use sdxl_text::PromptBatch;
use sharpen_nn::AttentionMode;
use sharpen_pipeline::{
    seeded_noise, GenerateOptions, GenerateRequest, SdxlPipeline, SeededStepNoise,
};
use sharpen_schedulers::SamplerKind;
use sharpen_weights::{save_tensors, Checkpoint, LoadOptions};

use crate::model::{hf_hub_cache, resolve, ModelSource};
use crate::output::{image_path, save_png, ImageRecord};
use crate::Args;

fn read_latents<B: Backend>(
    args: &Args,
    shape: [usize; 4],
    device: &B::Device,
) -> anyhow::Result<Tensor<B, 4>> {
    let Some(path) = &args.latents else {
        return Ok(seeded_noise(args.seed, 0, shape, device));
    };
    let checkpoint = Checkpoint::open_file(path)?;
    let (_, entry) = checkpoint
        .entry("latents")
        .with_context(|| format!("{}: no tensor named `latents`", path.display()))?;
    if entry.shape != shape {
        bail!(
            "{}: tensor `latents` has shape {:?}, expected {shape:?} ([num_images, latent channels, height / f, width / f], f the VAE's downscale factor)",
            path.display(),
            entry.shape
        );
    }
    Ok(Tensor::from_data(
        checkpoint.read("latents", DType::F32)?,
        device,
    ))
}

/// `attention`: overrides how the UNet and VAE compute attention (default: composed, VAE chunked).
pub fn run<B: Backend>(
    args: &Args,
    device: B::Device,
    attention: Option<AttentionMode>,
) -> anyhow::Result<()> {
    let sampler = SamplerKind::parse(&args.scheduler).with_context(|| {
        format!(
            "unknown --scheduler `{}` (ddim, ddpm, euler, euler-a, dpmpp-2m, dpmpp-2m-karras)",
            args.scheduler
        )
    })?;
    for (name, v) in [("--width", args.width), ("--height", args.height)] {
        if v == 0 || v % 8 != 0 {
            bail!("{name} {v} is not a positive multiple of 8");
        }
    }
    if args.num_images == 0 {
        bail!("--num-images must be at least 1");
    }
    let options = LoadOptions {
        variant: args.variant.clone(),
        dtype: None,
    };
    let source = resolve(&args.model, hf_hub_cache().as_deref())?;
    let started = std::time::Instant::now();
    let mut pipe = match &source {
        ModelSource::Folder(dir) => SdxlPipeline::<B>::load(dir, &options, &device),
        ModelSource::SingleFile(file) => {
            SdxlPipeline::<B>::from_single_file(file, &options, &device)
        }
    }
    .with_context(|| format!("loading {}", args.model))?;
    tracing::info!(
        "loaded {} in {:.1} s",
        args.model,
        started.elapsed().as_secs_f64()
    );
    if let Some(mode) = attention {
        pipe.unet.set_attention_mode(mode);
        pipe.vae.set_attention_mode(mode);
    }

    let n = args.num_images;
    let scale = pipe.vae.config.downscale();
    for (name, v) in [("--width", args.width), ("--height", args.height)] {
        if !v.is_multiple_of(scale) {
            bail!("{name} {v} is not a multiple of this model's VAE downscale factor {scale}");
        }
    }
    let latent_shape = [
        n,
        pipe.unet.config.in_channels,
        args.height / scale,
        args.width / scale,
    ];
    let latents = read_latents::<B>(args, latent_shape, &device)?;
    let prompts = vec![args.prompt.as_str(); n];
    let negatives = args.negative_prompt.as_deref().map(|neg| vec![neg; n]);
    let mut gen_options = GenerateOptions::new(args.width, args.height);
    gen_options.sampler = sampler;
    gen_options.steps = args.steps;
    gen_options.guidance_scale = args.guidance;
    let request = GenerateRequest {
        prompts: PromptBatch::new(&prompts),
        negative: negatives.as_deref().map(PromptBatch::new),
        latents,
    };
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps, {elapsed} ({per_sec})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix("denoising");
    let started = std::time::Instant::now();
    let mut noise = SeededStepNoise { seed: args.seed };
    let out = pipe.generate(request, &gen_options, &mut noise, &mut |event| {
        bar.set_position(event.step as u64 + 1)
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        "generated {n} image(s) in {seconds:.2} s ({:.2} s per image)",
        seconds / n as f64
    );

    if let Some(path) = &args.save_latents {
        save_tensors(path, &[("latents", out.latents.to_data())])?;
        tracing::info!("final latents written to {}", path.display());
    }
    let [_, _, h, w] = out.images.dims();
    let pixels: Vec<f32> = out
        .images
        .clone()
        .permute([0, 2, 3, 1])
        .to_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let per = h * w * 3;
    for i in 0..n {
        let rgb: Vec<u8> = pixels[i * per..(i + 1) * per]
            .iter()
            .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let record = ImageRecord {
            prompt: args.prompt.clone(),
            negative_prompt: args.negative_prompt.clone(),
            seed: args.latents.is_none().then_some(args.seed),
            steps: args.steps,
            sampler: args.scheduler.clone(),
            guidance_scale: args.guidance,
            width: w,
            height: h,
            model: args.model.clone(),
            index: i,
            latents_file: args.latents.as_ref().map(|p| p.display().to_string()),
            tool: format!("sharpen-infer {}", env!("CARGO_PKG_VERSION")),
        };
        let path = image_path(&args.output, i, n);
        save_png(&path, &rgb, w, h, &record)?;
        println!("{}", path.display());
    }
    Ok(())
}
