//! What a run sets up around its loop: the reward, prompt conditioning, the trainer (fresh or
//! resumed), reward statistics, the VAE's measured latent scale and the metrics plot.

use anyhow::{bail, Context};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use sdxl_text::{PromptBatch, SdxlTextEncoders, SdxlTokenizers};
use sdxl_unet::{AddedCond, UNet2DConditionModel};
use sdxl_vae::AutoencoderKL;
use sharpen_rewards::Reward;
use sharpen_schedulers::PredictionType;
use sharpen_trainer::train::run_dir::RunDir;
use sharpen_trainer::{Rollout, TextCond, Trainer};

use crate::config::{Method, RewardConfig};
use crate::data::{image_tensor, Source};
use crate::model::Trainable;
use crate::run::RunOptions;

/// Loads the run's reward (model-based rewards read their weights here, before training starts).
pub fn reward<B: Backend>(
    config: &RewardConfig,
    device: &B::Device,
) -> anyhow::Result<Box<dyn Reward<B>>> {
    sharpen_rewards::load::<B>(&config.spec(), device)
        .with_context(|| format!("loading reward `{}`", config.name()))
}

pub fn encode<B: Backend>(
    encoders: &SdxlTextEncoders<B>,
    tokenizers: &SdxlTokenizers,
    prompts: &[&str],
    resolution: usize,
) -> anyhow::Result<TextCond<B>> {
    let embeds = encoders
        .encode(tokenizers, PromptBatch::new(prompts), None)
        .context("encoding prompts")?;
    let device = embeds.prompt_embeds.device();
    Ok(TextCond {
        context: embeds.prompt_embeds,
        added: Some(AddedCond {
            text_embeds: embeds.pooled_prompt_embeds,
            time_ids: time_ids(prompts.len(), resolution, &device),
        }),
    })
}

/// SDXL's time ids for `rows` square images of side `resolution`, uncropped: [rows, 6].
pub fn time_ids<B: Backend>(rows: usize, resolution: usize, device: &B::Device) -> Tensor<B, 2> {
    let r = resolution as f32;
    let ids: Vec<f32> = (0..rows).flat_map(|_| [r, r, 0.0, 0.0, r, r]).collect();
    Tensor::from_data(TensorData::new(ids, [rows, 6]), device)
}

/// A micro-batch's or step's rewards: mean of all trajectories (or samples), mean of each
/// prompt's best and worst, and the mean reward of the online generations (sharpen-rlhf; NaN,
/// written as null, for the other methods).
pub type RewardStats = [f64; 4];

/// Rewards of one micro-batch: mean of all trajectories, mean of each prompt's best and worst.
pub fn reward_stats(rollout: &Rollout, n: usize) -> RewardStats {
    let groups: Vec<&[f64]> = rollout.scores.chunks(n).collect();
    let mean = |v: &mut dyn Iterator<Item = f64>, k: usize| v.sum::<f64>() / k as f64;
    let all = mean(&mut rollout.scores.iter().copied(), rollout.scores.len());
    let best = mean(
        &mut groups
            .iter()
            .map(|g| g.iter().copied().fold(f64::MIN, f64::max)),
        groups.len(),
    );
    let worst = mean(
        &mut groups
            .iter()
            .map(|g| g.iter().copied().fold(f64::MAX, f64::min)),
        groups.len(),
    );
    [all, best, worst, f64::NAN]
}

/// [`reward_stats`] with the mean reward of the online generations (sharpen-rlhf).
pub fn rlhf_stats(rollout: &Rollout, n: usize, generation_scores: &[f64]) -> RewardStats {
    let mut stats = reward_stats(rollout, n);
    stats[3] = generation_scores.iter().sum::<f64>() / generation_scores.len() as f64;
    stats
}

/// The training progress bar (hidden on every peer but the first), at `step` of `steps`.
pub fn progress_bar(main: bool, steps: usize, step: usize) -> indicatif::ProgressBar {
    let bar = match main {
        true => indicatif::ProgressBar::new(steps as u64),
        false => indicatif::ProgressBar::hidden(),
    }
    .with_position(step as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}",
        )
        .expect("a valid template"),
    );
    bar
}

/// The mean loss and reward statistics of an optimizer step's micro-batches.
pub fn micro_means(micro: &[(f64, Option<RewardStats>)]) -> (f64, Option<RewardStats>) {
    let k = micro.len() as f64;
    let loss = micro.iter().map(|m| m.0).sum::<f64>() / k;
    let rewards = micro
        .iter()
        .map(|m| m.1)
        .collect::<Option<Vec<_>>>()
        .map(|v| {
            let mut out = [0.0; 4];
            for s in &v {
                for (o, x) in out.iter_mut().zip(s) {
                    *o += x / v.len() as f64;
                }
            }
            out
        });
    (loss, rewards)
}

/// Refuses a model whose scheduler predicts something other than what `method` trains: the
/// sharpening methods and the RL baselines are written for noise prediction.
pub fn check_prediction(
    method: Method,
    prediction: PredictionType,
    model: &std::path::Path,
) -> anyhow::Result<()> {
    if method.trains(prediction) {
        return Ok(());
    }
    bail!(
        "{}: `prediction_type` is `{}`, and method `{method}` trains only noise-prediction \
         (`epsilon`) models (method.md section 2); `standard` fine-tunes any prediction type",
        model.join("scheduler/scheduler_config.json").display(),
        prediction.as_str(),
    )
}

/// The trainer, fresh or resumed. `base`: the frozen UNet that LoRA adapters apply to.
pub fn open_trainer<B: AutodiffBackend>(
    opts: &RunOptions,
    run: &RunDir,
    base: Option<&UNet2DConditionModel<B>>,
    device: &B::Device,
) -> anyhow::Result<Trainer<B, Trainable<B>>> {
    let cfg = &opts.config;
    match &opts.resume {
        Some(spec) => {
            let checkpoint = crate::resume::checkpoint(spec, &run.root)?;
            if cfg.parts().unet {
                crate::resume::check_unet(&checkpoint, &cfg.model)?;
            }
            let model = Trainable::load(&checkpoint, cfg.parts(), base, device)?;
            let mut trainer = Trainer::resume(&checkpoint, model, cfg.optim.clone(), device)?;
            if cfg.optim.ema_decay.is_some() {
                let dir = checkpoint.join("ema");
                if dir.is_dir() {
                    let ema = Trainable::<B>::load(&dir, cfg.parts(), base, device)?;
                    trainer.set_ema(ema.valid());
                } else {
                    tracing::warn!(
                        "{} holds no EMA weights: the average starts from the current weights",
                        checkpoint.display()
                    );
                }
            }
            tracing::info!(step = trainer.state.step, checkpoint = %checkpoint.display(), "resumed");
            Ok(trainer)
        }
        None => {
            if run.latest()?.is_some() {
                bail!(
                    "{} already holds a run: continue it with --resume latest, or choose another --output-dir",
                    run.root.display()
                );
            }
            let model = match (&cfg.lora, base) {
                (Some(lora), Some(base)) => Trainable::fresh_lora(base, lora, cfg.seed, device)?,
                _ => Trainable::load(&cfg.model, cfg.parts(), None, device)?,
            };
            Ok(Trainer::new(model, cfg.optim.clone(), cfg.seed))
        }
    }
}

/// 1 / the standard deviation of the latents (posterior means) of the first 64 training images:
/// what diffusers' `scaling_factor` is for (unit-variance latents for the UNet).
pub fn latent_scaling_factor<B: Backend>(
    vae: &sdxl_vae::AutoencoderKL<B>,
    source: &Source,
    resolution: usize,
    device: &B::Device,
) -> anyhow::Result<f64> {
    let mut values: Vec<f64> = Vec::new();
    for batch in 0..4u64 {
        let examples: Vec<_> = (0..16).map(|i| source.get(batch * 16 + i)).collect();
        let images: Vec<&[u8]> = examples
            .iter()
            .map(|e| {
                e.image
                    .as_deref()
                    .context("the autoencoder trains on images")
            })
            .collect::<anyhow::Result<_>>()?;
        let z = vae
            .encode(image_tensor::<B>(&images, resolution, device))
            .mean;
        values.extend(
            z.into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .expect("floats"),
        );
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    anyhow::ensure!(
        var > 0.0,
        "the VAE's latents do not vary: cannot scale them"
    );
    Ok(1.0 / var.sqrt())
}

/// The autoencoder's loss: pixel MSE of the reconstruction from a posterior sample (noise `eps`)
/// plus `kl_weight` x the KL divergence to the unit Gaussian.
pub fn autoencoder_loss<B: AutodiffBackend>(
    vae: &AutoencoderKL<B>,
    pixels: Tensor<B::InnerBackend, 4>,
    eps: Tensor<B::InnerBackend, 4>,
    kl_weight: f64,
) -> Tensor<B, 1> {
    let pixels = Tensor::<B, 4>::from_inner(pixels);
    let posterior = vae.encode(pixels.clone());
    let recon = vae.decode(posterior.sample(Tensor::from_inner(eps)));
    let mse = (recon - pixels).powi_scalar(2).mean();
    let kl = (posterior.mean.clone().powi_scalar(2) + posterior.logvar.clone().exp()
        - posterior.logvar.clone()
        - 1.0)
        .mean()
        .mul_scalar(0.5);
    mse + kl.mul_scalar(kl_weight)
}

/// Redraws `metrics.png` (validation rows of `prompts` scores); a failure is logged, never fatal.
pub fn plot(run: &RunDir, prompts: usize) {
    let out = run.root.join("metrics.png");
    let drawn = sharpen_app::validation::read(&run.validation_path()).and_then(|validations| {
        crate::plot::write_plot(&run.metrics_path(), &validations, prompts, &out)
    });
    if let Err(e) = drawn {
        tracing::warn!("could not draw metrics.png: {e:#}");
    }
}
