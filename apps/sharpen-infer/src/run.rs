//! One `sharpen-infer` run on a chosen backend.

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use sdxl_text::PromptBatch;
use sharpen_nn::AttentionMode;
use sharpen_pipeline::{
    candidate_seed, seeded_noise, GenerateOptions, GenerateRequest, SdxlPipeline, SeededStepNoise,
};
use sharpen_rewards::{RewardSpec, NAMES};
use sharpen_schedulers::SamplerKind;
use sharpen_weights::lora::load_unet_lora;
use sharpen_weights::unet::unet_checkpoint_key;
use sharpen_weights::{save_tensors, Checkpoint, LoadOptions};

use crate::model::{hf_hub_cache, resolve, ModelSource};
use crate::output::{image_path, save_png, ImageRecord, LoraRecord};
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

/// Each --lora with its scale (one --lora-scale for all, or one each; default 1).
fn lora_scales(args: &Args) -> anyhow::Result<Vec<(std::path::PathBuf, f64)>> {
    let scales = match args.lora_scale.len() {
        0 => vec![1.0; args.lora.len()],
        1 => vec![args.lora_scale[0]; args.lora.len()],
        k if k == args.lora.len() => args.lora_scale.clone(),
        k => bail!(
            "{k} --lora-scale values for {} --lora files: give one for all or one each",
            args.lora.len()
        ),
    };
    if let Some(s) = scales.iter().find(|s| !s.is_finite()) {
        bail!("--lora-scale {s} is not a number");
    }
    Ok(args.lora.iter().cloned().zip(scales).collect())
}

/// One image's kept candidate: its pixels, final latents and index.
#[derive(Clone)]
struct Kept<B: Backend> {
    rgb: Vec<u8>,
    latents: Tensor<B, 4>,
    candidate: usize,
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
    for (file, scale) in lora_scales(args)? {
        let lora = load_unet_lora(&file, &pipe.unet, &device)
            .with_context(|| format!("--lora {}", file.display()))?;
        tracing::info!(
            layers = lora.layers.len(),
            scale,
            "merging LoRA {}",
            file.display()
        );
        pipe.unet = lora
            .merge(pipe.unet, scale, &unet_checkpoint_key)
            .with_context(|| format!("--lora {}", file.display()))?;
    }
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
    let verifier = match (&args.verifier, args.best_of) {
        (_, 0) => bail!("--best-of must be at least 1"),
        (None, 1) => None,
        (None, _) => bail!(
            "--best-of {} needs --verifier (one of {})",
            args.best_of,
            NAMES.join(", ")
        ),
        (Some(name), _) => {
            let spec = RewardSpec {
                weights: args.verifier_weights.clone(),
                ..RewardSpec::named(name)
            };
            spec.validate()
                .map_err(|e| anyhow::anyhow!("--verifier: {e} (--verifier-weights)"))?;
            Some(
                sharpen_rewards::load::<B>(&spec, &device)
                    .with_context(|| format!("loading --verifier `{name}`"))?,
            )
        }
    };
    if args.best_of > 1 && args.latents.is_some() {
        bail!("--best-of draws each candidate's noise from a seed: it cannot start from --latents");
    }
    let prompts = vec![args.prompt.as_str(); n];
    let negatives = args.negative_prompt.as_deref().map(|neg| vec![neg; n]);
    let mut gen_options = GenerateOptions::new(args.width, args.height);
    gen_options.sampler = sampler;
    gen_options.steps = args.steps;
    gen_options.guidance_scale = args.guidance;
    let bar = ProgressBar::new((args.steps * args.best_of) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps, {elapsed} ({per_sec})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix("denoising");
    let started = std::time::Instant::now();
    // Per image: the kept candidate and every candidate's score.
    let mut kept: Vec<Option<Kept<B>>> = vec![None; n];
    let mut scores: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut size = (0, 0);
    for k in 0..args.best_of {
        let seed = candidate_seed(args.seed, k);
        let latents = if k == 0 {
            read_latents::<B>(args, latent_shape, &device)?
        } else {
            seeded_noise(seed, 0, latent_shape, &device)
        };
        let request = GenerateRequest {
            prompts: PromptBatch::new(&prompts),
            negative: negatives.as_deref().map(PromptBatch::new),
            latents,
        };
        let mut noise = SeededStepNoise { seed };
        let out = pipe.generate(request, &gen_options, &mut noise, &mut |event| {
            bar.set_position((k * args.steps + event.step + 1) as u64)
        })?;
        let [_, _, h, w] = out.images.dims();
        size = (h, w);
        let candidate_scores: Option<Vec<f64>> = verifier
            .as_ref()
            .map(|v| -> anyhow::Result<Vec<f64>> {
                let s = v.score(out.images.clone(), &prompts)?;
                Ok(s.into_data().convert::<f64>().into_vec().expect("floats"))
            })
            .transpose()
            .context("scoring the candidates")?;
        let rgb = sharpen_rewards::to_rgb8(out.images);
        for (i, image) in rgb.into_iter().enumerate() {
            let score = candidate_scores.as_ref().map(|s| s[i]);
            if let Some(s) = score {
                scores[i].push(s);
            }
            let better = match (&kept[i], score) {
                (None, _) => true,
                (Some(kept), Some(s)) => s > scores[i][kept.candidate],
                (Some(_), None) => false,
            };
            if better {
                kept[i] = Some(Kept {
                    rgb: image,
                    latents: out.latents.clone().narrow(0, i, 1),
                    candidate: k,
                });
            }
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        "generated {} image(s) in {seconds:.2} s ({:.2} s per image)",
        n * args.best_of,
        seconds / (n * args.best_of) as f64
    );
    let kept: Vec<Kept<B>> = kept.into_iter().flatten().collect();

    if let Some(path) = &args.save_latents {
        let latents = Tensor::cat(kept.iter().map(|k| k.latents.clone()).collect(), 0);
        save_tensors(path, &[("latents", latents.to_data())])?;
        tracing::info!("final latents written to {}", path.display());
    }
    let (h, w) = size;
    let nfe = args.best_of * args.steps * if args.guidance > 1.0 { 2 } else { 1 };
    for (i, Kept { rgb, candidate, .. }) in kept.iter().enumerate() {
        let record = ImageRecord {
            prompt: args.prompt.clone(),
            negative_prompt: args.negative_prompt.clone(),
            seed: (args.latents.is_none() || *candidate > 0)
                .then_some(candidate_seed(args.seed, *candidate)),
            steps: args.steps,
            sampler: args.scheduler.clone(),
            guidance_scale: args.guidance,
            width: w,
            height: h,
            model: args.model.clone(),
            index: i,
            latents_file: args.latents.as_ref().map(|p| p.display().to_string()),
            nfe,
            best_of: args.best_of,
            verifier: args.verifier.clone(),
            candidate: *candidate,
            scores: scores[i].clone(),
            loras: lora_scales(args)?
                .into_iter()
                .map(|(file, scale)| LoraRecord {
                    file: file.display().to_string(),
                    scale,
                })
                .collect(),
            tool: format!("sharpen-infer {}", env!("CARGO_PKG_VERSION")),
        };
        let path = image_path(&args.output, i, n);
        save_png(&path, rgb, w, h, &record)?;
        println!("{}", path.display());
    }
    if args.best_of > 1 {
        eprintln!(
            "best of {}: {nfe} NFEs per image (kept candidates {:?})",
            args.best_of,
            kept.iter().map(|k| k.candidate).collect::<Vec<_>>()
        );
    }
    Ok(())
}
