//! The training loop: models, data, one micro-batch at a time, optimizer steps, metrics,
//! checkpoints, resume, Ctrl-C.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use sdxl_unet::UNet2DConditionModel;
use sharpen_nn::cast_module;
use sharpen_pipeline::SdxlPipeline;
use sharpen_schedulers::{Sampler, SamplerKind};
use sharpen_trainer::train::run_dir::{write_atomic, RunDir};
use sharpen_trainer::train::sync::Peer;
use sharpen_trainer::{Trainer, VaeDecoder};
use sharpen_weights::LoadOptions;

use crate::cached::Caches;
use crate::config::{Method, OnNonFinite, TrainConfig};
use crate::data::{image_tensor, Source};
use crate::model::Trainable;
use crate::setup::{encode, open_trainer, plot, reward};
use crate::step::{Computed, Kit, Rows};

pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub struct RunOptions {
    pub config: TrainConfig,
    pub output_dir: PathBuf,
    /// `latest` or a checkpoint folder.
    pub resume: Option<String>,
    /// Check everything and print the plan; train nothing, write nothing.
    pub dry_run: bool,
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
        write_atomic(&run.root.join(crate::resume::SAVED), resolved.as_bytes())?;
    }

    let pipe = SdxlPipeline::<B::InnerBackend>::load(&cfg.model, &LoadOptions::default(), &device)
        .with_context(|| format!("loading the pipeline {}", cfg.model.display()))?;
    crate::setup::check_prediction(cfg.method, pipe.scheduler.prediction, &cfg.model)?;
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
    // Each checkpoint holds the config it was trained with (`--resume` continues with it).
    let resolved = toml::to_string_pretty(cfg).context("serialising the config")?;
    let save = |trainer: &Trainer<B, Trainable<B>>| {
        trainer.save(&run, |dir, m| {
            write_atomic(&dir.join(crate::resume::SAVED), resolved.as_bytes())?;
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
        let validation = sharpen_app::validation::Validation::new(step, scores);
        tracing::info!(
            step,
            reward_mean = validation.reward_mean,
            "validation samples"
        );
        run.append_validation(&serde_json::to_value(&validation)?)?;
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
    let rows = Rows {
        global,
        mine: mine.clone(),
        channels: latent_channels,
        side: latent,
    };
    let kit = Kit {
        cfg,
        pipe: &pipe,
        decoder: &decoder,
        reward: reward.as_ref(),
        sampler: &sampler,
        generation: &generation,
        policy: &policy,
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
        let draw = crate::step::draw::<B::InnerBackend>(
            cfg,
            rng,
            &rows,
            schedule.num_train_timesteps(),
            &device,
        );
        // Frozen text encoders: conditioning without a graph. Trained ones: encoded in the step.
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
        let images = || -> anyhow::Result<Vec<&[u8]>> {
            examples
                .iter()
                .map(|e| e.image.as_deref().context("this method needs images"))
                .collect()
        };
        // The images' latents (from the cache when it holds them), or the images themselves.
        let x0 = matches!(cfg.method, Method::Standard | Method::SharpenSft)
            .then(|| caches.latents(&pipe.vae, &images()?, cfg.resolution, &device))
            .transpose()?;
        let pixels = (cfg.method == Method::Autoencoder)
            .then(|| -> anyhow::Result<_> {
                Ok(image_tensor::<B::InnerBackend>(
                    &images()?,
                    cfg.resolution,
                    &device,
                ))
            })
            .transpose()?;

        // The UNet this step trains, and for LoRA under checkpointing its adapters' weight ids.
        let (step_unet, lora_ids) = match cfg.method {
            Method::Autoencoder => (None, None),
            _ => {
                let ckpt = cfg.gradient_checkpointing;
                let (unet, ids) = trainer.model().step_unet(base.as_ref(), compute, ckpt)?;
                (Some(unet), ids)
            }
        };
        let uncond = empty.as_ref().map(|e| e.repeat_rows(prompts.len()));
        let batch = crate::step::Batch {
            prompts: &prompts,
            unet_prompts: &unet_prompts,
            draw,
            cond: cond.as_ref(),
            uncond: uncond.as_ref(),
            x0,
            pixels,
        };
        let (computed, stats) =
            crate::step::compute(&kit, trainer.model(), step_unet.as_deref(), batch)?;
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
            plot(&run, validation_prompts.len());
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
        plot(&run, validation_prompts.len());
    }
    bar.finish();
    crate::export::finish(cfg, &run.root, current(&trainer), &source, &device)?;
    if let Some(report) = caches.report() {
        eprintln!("{report}");
    }
    let validations = run.validation_path();
    let rows = sharpen_app::validation::read(&validations)?;
    if let Some(change) = sharpen_app::validation::change(&rows, validation_prompts.len())
        .with_context(|| format!("the paired change in {}", validations.display()))?
    {
        eprintln!("{change}");
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
