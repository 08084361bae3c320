//! The training loop: models, data, one micro-batch at a time, optimizer steps, metrics,
//! checkpoints, resume, Ctrl-C.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use sdxl_unet::UNet2DConditionModel;
use sharpen_nn::cast_module;
use sharpen_pipeline::SdxlPipeline;
use sharpen_schedulers::{Sampler, SamplerKind};
use sharpen_trainer::train::run_dir::{write_atomic, RunDir};
use sharpen_trainer::train::sync::Peer;
use sharpen_trainer::{
    ddpo_grads, ddpo_step, dpo_grads, dpo_step, lift_cond, rlhf_grads, rlhf_step, sft_grads,
    sft_step, standard_input, standard_loss, DdpoDraw, DdpoInputs, DpoDraw, DpoInputs, RlhfDraw,
    RlhfInputs, SftInputs, StepModels, Trainer, VaeDecoder,
};
use sharpen_weights::LoadOptions;

use crate::cached::Caches;
use crate::config::{Method, OnNonFinite, Renoise, TrainConfig};
use crate::data::{image_tensor, Source};
use crate::model::Trainable;
use crate::setup::{autoencoder_loss, encode, open_trainer, plot, reward, reward_stats};

pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub struct RunOptions {
    pub config: TrainConfig,
    pub output_dir: PathBuf,
    /// `latest` or a checkpoint folder.
    pub resume: Option<String>,
    /// Check everything and print the plan; train nothing, write nothing.
    pub dry_run: bool,
}

/// A micro-batch's loss with its graph, or (block checkpointing) its value and gradients.
enum Computed<B: AutodiffBackend> {
    Graph(Tensor<B, 1>),
    Grads(Tensor<B::InnerBackend, 1>, GradientsParams),
}

/// Trains as `peer` of a data-parallel group (alone: a plain run). Every peer draws the whole
/// group's batch from the shared random stream and trains on its rows of it, so the group equals
/// one device training on the whole batch; the main peer writes everything.
pub fn run<B: AutodiffBackend>(
    opts: &RunOptions,
    device: B::Device,
    peer: Peer<B::InnerBackend>,
) -> anyhow::Result<()> {
    if opts.dry_run {
        return crate::plan::dry_run::<B>(opts, &device);
    }
    let cfg = &opts.config;
    let (main, rank, world) = (peer.is_main(), peer.rank(), peer.world());
    let run = RunDir::create(&opts.output_dir)?;
    if main {
        let resolved = toml::to_string_pretty(cfg).context("serialising the config")?;
        write_atomic(&run.root.join("config.toml"), resolved.as_bytes())?;
    }

    let pipe = SdxlPipeline::<B::InnerBackend>::load(&cfg.model, &LoadOptions::default(), &device)
        .with_context(|| format!("loading the pipeline {}", cfg.model.display()))?;
    let source = Source::open(&cfg.data, cfg.resolution, cfg.seed, cfg.shard)?;
    let reward = reward::<B::InnerBackend>(&cfg.reward, &device)?;
    let mut caches = Caches::open(&cfg.cache, &cfg.model)?;
    // Reduced precision: the frozen UNet (the reference, or the LoRA base) is stored in the
    // compute dtype once; the trained weights are cast for each step.
    let compute = cfg.precision.compute_dtype();
    let mut pipe = pipe;
    if let Some(dtype) = compute {
        pipe.unet = cast_module(pipe.unet, dtype);
    }
    // LoRA: the frozen base the adapters are merged into at every step (no gradients).
    let base = cfg
        .lora
        .as_ref()
        .map(|_| UNet2DConditionModel::<B>::from_inner(pipe.unet.clone()).no_grad());
    let mut trainer = open_trainer::<B>(opts, &run, base.as_ref(), &device)?.with_peer(peer);
    // A resumed run rewrites what came after its checkpoint; one writer (peers are threads).
    if main && opts.resume.is_some() {
        run.truncate_metrics(trainer.state.step)?;
    }
    let trajectory = cfg.trajectory;
    let rlhf = cfg.rlhf();
    let sampler = Sampler::new(SamplerKind::Ddim { eta: 0.0 }, &pipe.scheduler, 25);
    let generation = Sampler::new(
        SamplerKind::Ddim { eta: 0.0 },
        &pipe.scheduler,
        cfg.rlhf.generation_steps,
    );
    // DDPO's policy: stochastic DDIM.
    let policy = Sampler::new(
        SamplerKind::Ddim { eta: cfg.ddpo.eta },
        &pipe.scheduler,
        cfg.rlhf.generation_steps,
    );
    let decoder = VaeDecoder { vae: &pipe.vae };
    let schedule = pipe.scheduler.schedule.clone();
    let scale = pipe.vae.config.downscale();
    if !cfg.resolution.is_multiple_of(scale) {
        bail!(
            "config field `resolution`: {} is not a multiple of the VAE's downscale factor {scale}",
            cfg.resolution
        );
    }
    let latent = cfg.resolution / scale;
    let latent_channels = pipe.vae.config.latent_channels;

    let validation_prompts: Vec<String> = if cfg.validation.prompts.is_empty() {
        (0..cfg.validation.count as u64)
            .map(|i| source.prompt(i))
            .collect()
    } else {
        cfg.validation.prompts.clone()
    };
    // Samples and the export show the EMA weights when they are kept.
    let current = |trainer: &Trainer<B, Trainable<B>>| {
        trainer
            .ema()
            .cloned()
            .unwrap_or_else(|| trainer.model().valid())
    };
    let save = |trainer: &Trainer<B, Trainable<B>>| {
        trainer.save(&run, |dir, m| {
            m.save(dir, &cfg.model)?;
            match trainer.ema() {
                Some(ema) => ema.save(&dir.join("ema"), &cfg.model),
                None => Ok(()),
            }
        })
    };
    let sample = |model: Trainable<B::InnerBackend>, step: usize| {
        if !cfg.validation.enabled || !main {
            return Ok(());
        }
        if let Some(vae) = &model.vae {
            return crate::samples::write_reconstructions(
                &run.root,
                vae,
                &source,
                cfg.validation.count,
                cfg.resolution,
                step,
            );
        }
        // The pipeline as trained so far: current UNet or adapters (and text encoders, when
        // trained).
        let unet = model.unet_with(Some(&pipe.unet))?.into_owned();
        let current = SdxlPipeline {
            tokenizers: pipe.tokenizers.clone(),
            text_encoders: model
                .text_encoders
                .unwrap_or_else(|| pipe.text_encoders.clone()),
            unet,
            vae: pipe.vae.clone(),
            scheduler: pipe.scheduler.clone(),
            force_zeros_for_empty_prompt: pipe.force_zeros_for_empty_prompt,
        };
        let scores = crate::samples::write_samples(
            &run.root,
            &current,
            &cfg.validation,
            &validation_prompts,
            Some(reward.as_ref()),
            cfg.resolution,
            step,
        )?
        .expect("scored with the run's reward");
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        tracing::info!(step, reward_mean = mean, "validation samples");
        run.append_validation(&serde_json::json!({
            "step": step, "reward_mean": mean, "scores": scores,
        }))?;
        Ok(())
    };
    if trainer.state.step == 0 {
        sample(current(&trainer), 0)?;
    }

    // The empty prompt's conditioning, for guided rollouts: encoded once.
    let empty = (cfg.method.online() && rlhf.rollout_cfg != 1.0)
        .then(|| encode(&pipe.text_encoders, &pipe.tokenizers, &[""], cfg.resolution))
        .transpose()?;

    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    let bar = crate::setup::progress_bar(main, cfg.steps, trainer.state.step);
    let started = Instant::now();
    let elapsed_before = trainer.state.elapsed_s;
    let mut micro: Vec<(f64, Option<crate::setup::RewardStats>)> = Vec::new();
    let mut saved_at = trainer.state.step;
    let effective_batch = cfg.batch_size * cfg.optim.accumulation * world;
    tracing::info!(method = ?cfg.method, steps = cfg.steps, effective_batch, devices = world, rank, run = %run.root.display(), "training");
    // This peer's rows of the group's batch.
    let global = cfg.batch_size * world;
    let mine = rank * cfg.batch_size..(rank + 1) * cfg.batch_size;
    let slice = |values: Vec<f32>, per_item: usize| {
        values[mine.start * per_item..mine.end * per_item].to_vec()
    };

    while trainer.state.step < cfg.steps {
        // Draw everything this micro-batch needs from the run's stream.
        let cursor = trainer.state.data_cursor;
        let examples: Vec<_> = mine
            .clone()
            .map(|i| source.get(cursor + i as u64))
            .collect();
        trainer.state.data_cursor += global as u64;
        let prompts: Vec<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
        let rng = trainer.rng();
        let dropped: Vec<bool> = (0..global)
            .map(|_| rng.uniform() < cfg.caption_dropout)
            .collect();
        let unet_prompts: Vec<&str> = prompts
            .iter()
            .zip(&dropped[mine.clone()])
            .map(|(p, dropped)| if *dropped { "" } else { *p })
            .collect();
        let per_item = match cfg.method {
            Method::Standard | Method::Autoencoder => 1,
            _ => trajectory.n,
        };
        let rows = cfg.batch_size * per_item;
        let per_row = latent_channels * latent * latent;
        let rows_per_item = per_item * per_row;
        let eps_values = slice(rng.normals(global * rows_per_item), rows_per_item);
        let timesteps: Vec<usize> = match cfg.method {
            Method::Standard => {
                let all: Vec<usize> = (0..global).map(|_| rng.below(1000)).collect();
                all[mine.clone()].to_vec()
            }
            Method::Autoencoder => Vec::new(),
            _ => vec![rng.below(trajectory.timestep_bound(schedule.num_train_timesteps()))],
        };
        let latents = |values: Vec<f32>, rows: usize| {
            Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(values, [rows, latent_channels, latent, latent]),
                &device,
            )
        };
        // The baselines' further draws: Diffusion-DPO's pair noise; DDPO's step noises and the
        // steps that get a gradient.
        let pair_eps = (cfg.method == Method::DiffusionDpo).then(|| {
            latents(
                slice(rng.normals(global * per_row), per_row),
                cfg.batch_size,
            )
        });
        let ddpo_draw = (cfg.method == Method::Ddpo).then(|| {
            let steps = cfg.rlhf.generation_steps;
            let step_noise = (0..steps)
                .map(|_| {
                    latents(
                        slice(rng.normals(global * rows_per_item), rows_per_item),
                        rows,
                    )
                })
                .collect();
            let mut order: Vec<usize> = (0..steps).collect();
            let k = cfg.ddpo.train_timesteps.min(steps);
            for i in 0..k {
                let j = i + rng.below(steps - i);
                order.swap(i, j);
            }
            order.truncate(k);
            order.sort_unstable();
            (step_noise, order)
        });
        // RLHF with `renoise = "fresh"`: the re-noising noise, drawn after everything else (runs
        // with the default draw exactly what they drew before).
        let renoise = (cfg.method == Method::SharpenRlhf && cfg.rlhf.renoise == Renoise::Fresh)
            .then(|| {
                latents(
                    slice(rng.normals(global * rows_per_item), rows_per_item),
                    rows,
                )
            });
        let eps = latents(eps_values, rows);
        // Frozen text encoders: conditioning without a graph. Trained ones: encoded below, with one.
        let cond = match cfg.method {
            Method::Autoencoder => None,
            _ if cfg.train_text_encoders => None,
            _ => Some(caches.text(
                &pipe.text_encoders,
                &pipe.tokenizers,
                &unet_prompts,
                cfg.resolution,
                &device,
            )?),
        };
        let frozen_cond = || cond.as_ref().expect("frozen text encoders");
        let images = || -> anyhow::Result<Vec<&[u8]>> {
            examples
                .iter()
                .map(|e| e.image.as_deref().context("this method needs images"))
                .collect()
        };
        let pixels = || -> anyhow::Result<Tensor<B::InnerBackend, 4>> {
            Ok(image_tensor::<B::InnerBackend>(
                &images()?,
                cfg.resolution,
                &device,
            ))
        };
        // The images' latents (from the cache when it holds them).
        let latents = matches!(cfg.method, Method::Standard | Method::SharpenSft)
            .then(|| caches.latents(&pipe.vae, &images()?, cfg.resolution, &device))
            .transpose()?;
        let x0 = || -> anyhow::Result<Tensor<B::InnerBackend, 4>> {
            Ok(latents.clone().expect("image methods encode their images"))
        };

        // The UNet this step trains, and for LoRA under checkpointing its adapters' weight ids.
        let (step_unet, lora_ids) = match cfg.method {
            Method::Autoencoder => (None, None),
            _ => {
                let ckpt = cfg.gradient_checkpointing;
                let (unet, ids) = trainer.model().step_unet(base.as_ref(), compute, ckpt)?;
                (Some(unet), ids)
            }
        };
        let unet_now = || step_unet.as_deref().expect("UNet methods train the UNet");
        // The current weights without autograd, for rollouts (sharpening methods only).
        let sharpening = matches!(cfg.method, Method::SharpenSft | Method::SharpenRlhf);
        let rollout_unet = (sharpening || cfg.method == Method::Ddpo).then(|| unet_now().valid());
        let models = rollout_unet.as_ref().map(|rollout| StepModels {
            train: unet_now(),
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
        // The empty prompt's conditioning per prompt, for guided generation.
        let uncond = empty.as_ref().map(|e| e.repeat_rows(prompts.len()));
        let (computed, stats) = match cfg.method {
            Method::Standard if cfg.gradient_checkpointing => {
                let input =
                    standard_input(&schedule, x0()?, eps.clone(), &timesteps, frozen_cond());
                let eps = Tensor::<B, 4>::from_inner(eps);
                let (value, grads) =
                    unet_now().checkpointed_grads(input, |out| (out - eps).powi_scalar(2).mean());
                // The UNet's gradients, keyed as the trained module names them.
                (Computed::Grads(value, grads), None)
            }
            Method::Standard => {
                let cond = match &trainer.model().text_encoders {
                    Some(encoders) => {
                        encode(encoders, &pipe.tokenizers, &unet_prompts, cfg.resolution)?
                    }
                    None => lift_cond::<B>(frozen_cond()),
                };
                let loss = standard_loss(
                    unet_now(),
                    &schedule,
                    Tensor::from_inner(x0()?),
                    Tensor::from_inner(eps),
                    &timesteps,
                    &cond,
                );
                (Computed::Graph(loss), None)
            }
            Method::Autoencoder => {
                let vae = trainer
                    .model()
                    .vae
                    .as_ref()
                    .expect("autoencoder trains the VAE");
                let loss = autoencoder_loss(vae, pixels()?, eps, cfg.kl_weight);
                (Computed::Graph(loss), None)
            }
            Method::SharpenSft => {
                let inputs = SftInputs {
                    x0: x0()?,
                    eps,
                    cond: frozen_cond(),
                    prompts: &prompts,
                    t: timesteps[0],
                };
                let (computed, rollout) = if cfg.gradient_checkpointing {
                    let (value, grads, rollout) = sft_grads(models(), &trajectory, inputs)?;
                    (Computed::Grads(value, grads), rollout)
                } else {
                    let step = sft_step(models(), &trajectory, inputs)?;
                    (Computed::Graph(step.loss), step.rollout)
                };
                (computed, Some(reward_stats(&rollout, trajectory.n)))
            }
            Method::SharpenRlhf => {
                let inputs = RlhfInputs {
                    cond: frozen_cond(),
                    uncond: uncond.as_ref(),
                    prompts: &prompts,
                    draw: RlhfDraw {
                        eps,
                        t: timesteps[0],
                        renoise,
                    },
                };
                let (ms, gen, traj) = (models(), &generation, &trajectory);
                let (computed, rollout, gen_scores) = if cfg.gradient_checkpointing {
                    let s = rlhf_grads(ms, &pipe.unet, gen, traj, &rlhf, inputs)?;
                    (
                        Computed::Grads(s.loss, s.grads),
                        s.rollout,
                        s.generation_scores,
                    )
                } else {
                    let s = rlhf_step(ms, &pipe.unet, gen, traj, &rlhf, inputs)?;
                    (Computed::Graph(s.loss), s.rollout, s.generation_scores)
                };
                let stats = crate::setup::rlhf_stats(&rollout, trajectory.n, &gen_scores);
                (computed, Some(stats))
            }
            Method::DiffusionDpo => {
                let inputs = DpoInputs {
                    reward: reward.as_ref(),
                    cond: frozen_cond(),
                    uncond: uncond.as_ref(),
                    prompts: &prompts,
                    draw: DpoDraw {
                        noise: eps,
                        eps: pair_eps.expect("drawn for diffusion-dpo"),
                        t: timesteps[0],
                    },
                };
                let (n, dpo) = (trajectory.n, cfg.dpo());
                let (computed, rollout) = if cfg.gradient_checkpointing {
                    let (v, g, r) = dpo_grads(
                        unet_now(),
                        &pipe.unet,
                        &decoder,
                        &generation,
                        n,
                        &dpo,
                        inputs,
                    )?;
                    (Computed::Grads(v, g), r)
                } else {
                    let s = dpo_step(
                        unet_now(),
                        &pipe.unet,
                        &decoder,
                        &generation,
                        n,
                        &dpo,
                        inputs,
                    )?;
                    (Computed::Graph(s.loss), s.rollout)
                };
                (computed, Some(reward_stats(&rollout, n)))
            }
            Method::Ddpo => {
                let (step_noise, train_steps) = ddpo_draw.expect("drawn for ddpo");
                let inputs = DdpoInputs {
                    reward: reward.as_ref(),
                    cond: frozen_cond(),
                    uncond: uncond.as_ref(),
                    prompts: &prompts,
                    draw: DdpoDraw {
                        noise: eps,
                        step_noise,
                        train_steps,
                    },
                };
                let current = rollout_unet
                    .as_ref()
                    .expect("ddpo samples with the current weights");
                let (n, ddpo) = (trajectory.n, cfg.ddpo());
                let (computed, rollout) = if cfg.gradient_checkpointing {
                    let (v, g, r) =
                        ddpo_grads(unet_now(), current, &decoder, &policy, n, &ddpo, inputs)?;
                    (Computed::Grads(v, g), r)
                } else {
                    let s = ddpo_step(unet_now(), current, &decoder, &policy, n, &ddpo, inputs)?;
                    (Computed::Graph(s.loss), s.rollout)
                };
                (computed, Some(reward_stats(&rollout, n)))
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
        let value = crate::parallel::agree_finite(trainer.peer(), value)?;
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
            Computed::Grads(_, grads) => trainer.model().tape_grads(grads, lora_ids.as_deref()),
        };
        drop(step_unet);
        micro.push((value, stats));
        let Some(report) = trainer
            .accumulate(grads)
            .context("synchronising the gradients")?
        else {
            continue;
        };

        let (loss_mean, rewards) = crate::setup::micro_means(&micro);
        micro.clear();
        let elapsed = elapsed_before + started.elapsed().as_secs_f64();
        trainer.state.elapsed_s = elapsed;
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        let (loss_mean, rewards, interrupted) =
            crate::parallel::group_metrics(trainer.peer(), loss_mean, rewards, interrupted)?;
        if !main {
            if interrupted {
                return Ok(());
            }
            continue;
        }
        run.append_metrics(&serde_json::json!({
            "step": report.step,
            "loss": loss_mean,
            "reward_mean": rewards.map(|r| r[0]),
            "reward_best": rewards.map(|r| r[1]),
            "reward_worst": rewards.map(|r| r[2]),
            "generation_reward_mean": rewards.map(|r| r[3]),
            "lr": report.lr,
            "grad_norm": report.grad_norm,
            "elapsed_s": elapsed,
        }))?;
        bar.set_position(report.step as u64);
        bar.set_message(match rewards {
            Some(r) => format!("loss {loss_mean:.4} reward {:.4}", r[0]),
            None => format!("loss {loss_mean:.4}"),
        });
        if report.step % cfg.checkpoint_every == 0 || report.step == cfg.steps || interrupted {
            save(&trainer)?;
            saved_at = report.step;
            sample(current(&trainer), report.step)?;
            plot(&run);
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
    if !main {
        return Ok(());
    }
    if saved_at != trainer.state.step {
        save(&trainer)?;
        sample(current(&trainer), trainer.state.step)?;
        plot(&run);
    }
    bar.finish();
    crate::export::finish(cfg, &run.root, current(&trainer), &source, &device)?;
    if let Some(report) = caches.report() {
        eprintln!("{report}");
    }
    if source.corrupt() > 0 {
        eprintln!(
            "skipped {} corrupt images (see the warnings above)",
            source.corrupt()
        );
    }
    eprintln!(
        "done: {} steps; metrics in {}, last checkpoint {}",
        trainer.state.step,
        run.metrics_path().display(),
        run.latest()?
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    Ok(())
}
