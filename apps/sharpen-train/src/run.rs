//! The training loop: models, data, one micro-batch at a time, optimizer steps, metrics,
//! checkpoints, resume, Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use sdxl_text::PromptBatch;
use sdxl_unet::{AddedCond, UNet2DConditionModel};
use sharpen_pipeline::SdxlPipeline;
use sharpen_rewards::{JpegReward, JpegRewardKind, Reward, ShapesReward};
use sharpen_schedulers::{Sampler, SamplerKind};
use sharpen_trainer::train::run_dir::{write_atomic, RunDir, RunDirError};
use sharpen_trainer::{
    lift_cond, rlhf_step, sft_step, standard_input, standard_loss, RlhfDraw, Rollout, StepModels,
    TextCond, Trainer, VaeDecoder,
};
use sharpen_weights::unet::{load_unet, save_unet};
use sharpen_weights::LoadOptions;

use crate::config::{Method, OnNonFinite, RewardKind, TrainConfig};
use crate::data::{image_tensor, Source};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub struct RunOptions {
    pub config: TrainConfig,
    pub output_dir: PathBuf,
    /// `latest` or a checkpoint folder.
    pub resume: Option<String>,
}

type Unet<B> = UNet2DConditionModel<B>;

/// A micro-batch's loss with its graph, or (block checkpointing) its value and gradients.
enum Computed<B: AutodiffBackend> {
    Graph(Tensor<B, 1>),
    Grads(Tensor<B::InnerBackend, 1>, GradientsParams),
}

fn reward<B: Backend>(kind: RewardKind) -> Box<dyn Reward<B>> {
    match kind {
        RewardKind::JpegCompressibility => Box::new(JpegReward {
            kind: JpegRewardKind::Compressibility,
        }),
        RewardKind::JpegIncompressibility => Box::new(JpegReward {
            kind: JpegRewardKind::Incompressibility,
        }),
        RewardKind::Shapes => Box::new(ShapesReward),
    }
}

fn save_model<B: AutodiffBackend>(dir: &Path, unet: &Unet<B>) -> Result<(), RunDirError> {
    save_unet(&dir.join("unet"), unet).map_err(|e| RunDirError::Invalid {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })
}

fn encode<B: Backend>(
    pipe: &SdxlPipeline<B>,
    prompts: &[&str],
    resolution: usize,
) -> anyhow::Result<TextCond<B>> {
    let embeds = pipe
        .text_encoders
        .encode(&pipe.tokenizers, PromptBatch::new(prompts), None)
        .context("encoding prompts")?;
    let device = embeds.prompt_embeds.device();
    let r = resolution as f32;
    let ids: Vec<f32> = prompts
        .iter()
        .flat_map(|_| [r, r, 0.0, 0.0, r, r])
        .collect();
    Ok(TextCond {
        context: embeds.prompt_embeds,
        added: Some(AddedCond {
            text_embeds: embeds.pooled_prompt_embeds,
            time_ids: Tensor::from_data(TensorData::new(ids, [prompts.len(), 6]), &device),
        }),
    })
}

/// Rewards of one micro-batch: mean of all trajectories, mean of each prompt's best and worst.
fn reward_stats(rollout: &Rollout, n: usize) -> [f64; 3] {
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
    [all, best, worst]
}

fn open_trainer<B: AutodiffBackend>(
    opts: &RunOptions,
    run: &RunDir,
    device: &B::Device,
) -> anyhow::Result<Trainer<B, Unet<B>>> {
    let cfg = &opts.config;
    let load = LoadOptions::default();
    match &opts.resume {
        Some(spec) => {
            let checkpoint = if spec == "latest" {
                run.latest()?.with_context(|| {
                    format!(
                        "--resume latest: {} holds no checkpoint",
                        run.root.display()
                    )
                })?
            } else {
                PathBuf::from(spec)
            };
            let unet = load_unet::<B>(&checkpoint.join("unet"), &load, device)
                .with_context(|| format!("loading the UNet of {}", checkpoint.display()))?;
            let trainer = Trainer::resume(&checkpoint, unet, cfg.optim.clone(), device)?;
            run.truncate_metrics(trainer.state.step)?;
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
            let unet = load_unet::<B>(&cfg.model.join("unet"), &load, device)
                .with_context(|| format!("loading the UNet of {}", cfg.model.display()))?;
            Ok(Trainer::new(unet, cfg.optim.clone(), cfg.seed))
        }
    }
}

/// Redraws `metrics.png`; a failure is logged, never fatal.
fn plot(run: &RunDir) {
    if let Err(e) = crate::plot::write_plot(&run.metrics_path(), &run.root.join("metrics.png")) {
        tracing::warn!("could not draw metrics.png: {e:#}");
    }
}

pub fn run<B: AutodiffBackend>(opts: &RunOptions, device: B::Device) -> anyhow::Result<()> {
    let cfg = &opts.config;
    let run = RunDir::create(&opts.output_dir)?;
    let resolved = toml::to_string_pretty(cfg).context("serialising the config")?;
    write_atomic(&run.root.join("config.toml"), resolved.as_bytes())?;

    let pipe = SdxlPipeline::<B::InnerBackend>::load(&cfg.model, &LoadOptions::default(), &device)
        .with_context(|| format!("loading the pipeline {}", cfg.model.display()))?;
    let source = Source::open(&cfg.data, cfg.resolution)?;
    let reward = reward::<B::InnerBackend>(cfg.reward);
    let mut trainer = open_trainer::<B>(opts, &run, &device)?;
    let trajectory = cfg.trajectory;
    let rlhf = cfg.rlhf();
    let sampler = Sampler::new(SamplerKind::Ddim { eta: 0.0 }, &pipe.scheduler, 25);
    let generation = Sampler::new(
        SamplerKind::Ddim { eta: 0.0 },
        &pipe.scheduler,
        cfg.rlhf.generation_steps,
    );
    let decoder = VaeDecoder { vae: &pipe.vae };
    let schedule = pipe.scheduler.schedule.clone();
    let latent = cfg.resolution / 8;
    let latent_channels = pipe.unet.config.in_channels;

    let validation_prompts: Vec<String> = if cfg.validation.prompts.is_empty() {
        (0..cfg.validation.count as u64)
            .map(|i| source.prompt(i))
            .collect()
    } else {
        cfg.validation.prompts.clone()
    };
    let sample = |unet: &Unet<B>, step: usize| {
        if !cfg.validation.enabled {
            return Ok(());
        }
        crate::samples::write_samples(
            &run.root,
            &pipe,
            &unet.valid(),
            &cfg.validation,
            &validation_prompts,
            cfg.resolution,
            step,
        )
    };
    if trainer.state.step == 0 {
        sample(trainer.model(), 0)?;
    }

    // The empty prompt's conditioning, for guided rollouts: encoded once.
    let empty = (cfg.method == Method::SharpenRlhf && rlhf.rollout_cfg != 1.0)
        .then(|| encode(&pipe, &[""], cfg.resolution))
        .transpose()?;

    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    let bar = ProgressBar::new(cfg.steps as u64).with_position(trainer.state.step as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}",
        )
        .expect("a valid template"),
    );
    let started = Instant::now();
    let elapsed_before = trainer.state.elapsed_s;
    let mut micro: Vec<(f64, Option<[f64; 3]>)> = Vec::new();
    let mut saved_at = trainer.state.step;
    tracing::info!(method = ?cfg.method, steps = cfg.steps, run = %run.root.display(), "training");

    while trainer.state.step < cfg.steps {
        // Draw everything this micro-batch needs from the run's stream.
        let cursor = trainer.state.data_cursor;
        let examples: Vec<_> = (0..cfg.batch_size as u64)
            .map(|i| source.get(cursor + i))
            .collect();
        trainer.state.data_cursor += cfg.batch_size as u64;
        let prompts: Vec<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
        let rng = trainer.rng();
        let unet_prompts: Vec<&str> = prompts
            .iter()
            .map(|p| {
                if rng.uniform() < cfg.caption_dropout {
                    ""
                } else {
                    *p
                }
            })
            .collect();
        let rows = match cfg.method {
            Method::Standard => cfg.batch_size,
            _ => cfg.batch_size * trajectory.n,
        };
        let eps_values = rng.normals(rows * latent_channels * latent * latent);
        let timesteps: Vec<usize> = match cfg.method {
            Method::Standard => (0..cfg.batch_size).map(|_| rng.below(1000)).collect(),
            _ => vec![rng.below(schedule.num_train_timesteps())],
        };
        let eps = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(eps_values, [rows, latent_channels, latent, latent]),
            &device,
        );
        let cond = encode(&pipe, &unet_prompts, cfg.resolution)?;
        let x0 = || -> anyhow::Result<Tensor<B::InnerBackend, 4>> {
            let images: Vec<&[u8]> = examples
                .iter()
                .map(|e| e.image.as_deref().context("this method needs images"))
                .collect::<anyhow::Result<_>>()?;
            let pixels = image_tensor::<B::InnerBackend>(&images, cfg.resolution, &device);
            Ok(pipe.vae.scale_latents(pipe.vae.encode(pixels).mean))
        };

        // The current weights without autograd, for rollouts (sharpening methods only).
        let rollout_unet = (cfg.method != Method::Standard).then(|| trainer.model().valid());
        let models = rollout_unet.as_ref().map(|rollout| StepModels {
            train: trainer.model(),
            rollout,
            decoder: &decoder,
            reward: reward.as_ref(),
            sampler: &sampler,
        });
        let models = || {
            models
                .as_ref()
                .expect("sharpening methods have a rollout model")
        };
        let (computed, stats) = match cfg.method {
            Method::Standard if cfg.gradient_checkpointing => {
                let input = standard_input(&schedule, x0()?, eps.clone(), &timesteps, &cond);
                let eps = Tensor::<B, 4>::from_inner(eps);
                let (value, grads) = trainer
                    .model()
                    .checkpointed_grads(input, |out| (out - eps).powi_scalar(2).mean());
                (Computed::Grads(value, grads), None)
            }
            Method::Standard => {
                let loss = standard_loss(
                    trainer.model(),
                    &schedule,
                    Tensor::from_inner(x0()?),
                    Tensor::from_inner(eps),
                    &timesteps,
                    &lift_cond::<B>(&cond),
                );
                (Computed::Graph(loss), None)
            }
            Method::SharpenSft => {
                let step = sft_step(
                    models(),
                    &trajectory,
                    x0()?,
                    eps,
                    &cond,
                    &prompts,
                    timesteps[0],
                )?;
                (
                    Computed::Graph(step.loss),
                    Some(reward_stats(&step.rollout, trajectory.n)),
                )
            }
            Method::SharpenRlhf => {
                let uncond = empty.as_ref().map(|e| e.repeat_rows(prompts.len()));
                let step = rlhf_step(
                    models(),
                    &pipe.unet,
                    &generation,
                    &trajectory,
                    &rlhf,
                    &cond,
                    uncond.as_ref(),
                    &prompts,
                    RlhfDraw {
                        eps,
                        t: timesteps[0],
                    },
                )?;
                (
                    Computed::Graph(step.loss),
                    Some(reward_stats(&step.rollout, trajectory.n)),
                )
            }
        };
        let scalar = |t: Tensor<B::InnerBackend, 1>| {
            t.into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .expect("a float loss")[0]
        };
        let value = match &computed {
            Computed::Graph(loss) => scalar(loss.clone().inner()),
            Computed::Grads(value, _) => scalar(value.clone()),
        };
        if !value.is_finite() {
            match cfg.on_non_finite {
                OnNonFinite::Stop => bail!(
                    "loss is {value} at step {}: stopping (the last checkpoint, step {saved_at}, is the last good one; set on_non_finite = \"skip\" to skip such batches)",
                    trainer.state.step + 1
                ),
                OnNonFinite::Skip => {
                    tracing::warn!(step = trainer.state.step + 1, "non-finite loss: micro-batch skipped");
                    continue;
                }
            }
        }
        let grads = match computed {
            Computed::Graph(loss) => GradientsParams::from_grads(loss.backward(), trainer.model()),
            Computed::Grads(_, grads) => grads,
        };
        micro.push((value, stats));
        let Some(report) = trainer.accumulate(grads) else {
            continue;
        };

        let k = micro.len() as f64;
        let loss_mean = micro.iter().map(|m| m.0).sum::<f64>() / k;
        let rewards: Option<[f64; 3]> =
            micro
                .iter()
                .map(|m| m.1)
                .collect::<Option<Vec<_>>>()
                .map(|v| {
                    let mut out = [0.0; 3];
                    for s in &v {
                        for (o, x) in out.iter_mut().zip(s) {
                            *o += x / v.len() as f64;
                        }
                    }
                    out
                });
        micro.clear();
        let elapsed = elapsed_before + started.elapsed().as_secs_f64();
        trainer.state.elapsed_s = elapsed;
        run.append_metrics(&serde_json::json!({
            "step": report.step,
            "loss": loss_mean,
            "reward_mean": rewards.map(|r| r[0]),
            "reward_best": rewards.map(|r| r[1]),
            "reward_worst": rewards.map(|r| r[2]),
            "lr": report.lr,
            "grad_norm": report.grad_norm,
            "elapsed_s": elapsed,
        }))?;
        bar.set_position(report.step as u64);
        bar.set_message(match rewards {
            Some(r) => format!("loss {loss_mean:.4} reward {:.4}", r[0]),
            None => format!("loss {loss_mean:.4}"),
        });
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        if report.step % cfg.checkpoint_every == 0 || report.step == cfg.steps || interrupted {
            trainer.save(&run, save_model::<B>)?;
            saved_at = report.step;
            plot(&run);
            sample(trainer.model(), report.step)?;
        }
        if interrupted {
            bar.abandon_with_message("interrupted");
            eprintln!(
                "interrupted at step {}: checkpoint saved; continue with --resume latest --output-dir {}",
                report.step,
                run.root.display()
            );
            return Ok(());
        }
    }
    if saved_at != trainer.state.step {
        trainer.save(&run, save_model::<B>)?;
        plot(&run);
        sample(trainer.model(), trainer.state.step)?;
    }
    bar.finish();
    if source.corrupt() > 0 {
        eprintln!(
            "skipped {} corrupt images (see the warnings above)",
            source.corrupt()
        );
    }
    eprintln!(
        "done: {} steps; metrics in {}, weights in {}",
        trainer.state.step,
        run.metrics_path().display(),
        run.latest()?
            .map(|p| p.join("unet").display().to_string())
            .unwrap_or_default()
    );
    Ok(())
}
