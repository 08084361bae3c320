//! One micro-batch: what it draws from the run's random stream, and its loss for each method
//! (with its graph, or under block checkpointing its value and gradients).

use std::ops::Range;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use sdxl_unet::UNet2DConditionModel;
use sharpen_pipeline::SdxlPipeline;
use sharpen_rewards::Reward;
use sharpen_schedulers::Sampler;
use sharpen_trainer::train::rng::RunRng;
use sharpen_trainer::{
    ddpo_grads, ddpo_step, dpo_grads, dpo_step, lift_cond, rlhf_grads, rlhf_step, sft_grads,
    sft_step, standard_input, standard_loss, standard_target, DdpoDraw, DdpoInputs, DpoDraw,
    DpoInputs, RlhfDraw, RlhfInputs, Sampling, SftInputs, StepModels, TextCond, VaeDecoder,
};

use crate::config::{Method, Renoise, TrainConfig};
use crate::model::Trainable;
use crate::setup::{autoencoder_loss, encode, reward_stats, rlhf_stats, RewardStats};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// A micro-batch's loss with its graph, or (block checkpointing) its value and gradients.
pub enum Computed<B: AutodiffBackend> {
    Graph(Tensor<B, 1>),
    Grads(Tensor<B::InnerBackend, 1>, GradientsParams),
}

/// The latent geometry of a micro-batch and this peer's rows of the group's batch.
pub struct Rows {
    /// Prompts in the whole group's batch.
    pub global: usize,
    /// This peer's prompts of it.
    pub mine: Range<usize>,
    pub channels: usize,
    pub side: usize,
}

impl Rows {
    fn per_row(&self) -> usize {
        self.channels * self.side * self.side
    }

    /// This peer's part of values drawn for the whole group, `per_item` values a prompt.
    fn slice(&self, values: Vec<f32>, per_item: usize) -> Vec<f32> {
        values[self.mine.start * per_item..self.mine.end * per_item].to_vec()
    }

    fn latents<B: Backend>(
        &self,
        values: Vec<f32>,
        rows: usize,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        Tensor::from_data(
            TensorData::new(values, [rows, self.channels, self.side, self.side]),
            device,
        )
    }
}

/// What a micro-batch drew from the run's stream after its examples and caption dropout, in
/// the order drawn (a change of order changes every run's numbers).
pub struct Draw<B: Backend> {
    /// The starting noise: one row per prompt and trajectory (or sample).
    pub eps: Tensor<B, 4>,
    /// Standard, the sharpening methods and Diffusion-DPO: one per prompt (the sharpening
    /// methods' start timesteps, Diffusion-DPO's per pair; all equal with `shared_timestep`);
    /// DDPO: one, unused (it trains on its own sampling steps); autoencoder: none.
    pub timesteps: Vec<usize>,
    /// Diffusion-DPO's pair noise.
    pub pair_eps: Option<Tensor<B, 4>>,
    /// DDPO's step noises and the sampling steps that get a gradient.
    pub ddpo: Option<(Vec<Tensor<B, 4>>, Vec<usize>)>,
    /// RLHF with `renoise = "fresh"`: the re-noising noise.
    pub renoise: Option<Tensor<B, 4>>,
}

pub fn draw<B: Backend>(
    cfg: &TrainConfig,
    rng: &mut RunRng,
    rows: &Rows,
    train_timesteps: usize,
    device: &B::Device,
) -> Draw<B> {
    let per_item = match cfg.method {
        Method::Standard | Method::Autoencoder => 1,
        _ => cfg.trajectory.n,
    };
    let (global, mine, per_row) = (rows.global, rows.mine.clone(), rows.per_row());
    let batch_rows = cfg.batch_size * per_item;
    let rows_per_item = per_item * per_row;
    let eps_values = rows.slice(rng.normals(global * rows_per_item), rows_per_item);
    let bound = cfg.trajectory.timestep_bound(train_timesteps);
    let timesteps: Vec<usize> = match cfg.method {
        Method::Standard => {
            let all: Vec<usize> = (0..global).map(|_| rng.below(1000)).collect();
            all[mine].to_vec()
        }
        Method::Autoencoder => Vec::new(),
        // DDPO trains on its own sampling steps: one, unused, drawn to keep its stream as it was.
        Method::Ddpo => vec![rng.below(bound)],
        // The sharpening methods and Diffusion-DPO: one for all the micro-batch's prompts ...
        _ if cfg.trajectory.shared_timestep => vec![rng.below(bound); mine.len()],
        // ... or, as method.md section 3 draws it, one per training example (prompt, or pair).
        _ => {
            let all: Vec<usize> = (0..global).map(|_| rng.below(bound)).collect();
            all[mine].to_vec()
        }
    };
    let pair_eps = (cfg.method == Method::DiffusionDpo).then(|| {
        let values = rows.slice(rng.normals(global * per_row), per_row);
        rows.latents(values, cfg.batch_size, device)
    });
    let ddpo = (cfg.method == Method::Ddpo).then(|| {
        let steps = cfg.rlhf.generation_steps;
        let step_noise = (0..steps)
            .map(|_| {
                let values = rows.slice(rng.normals(global * rows_per_item), rows_per_item);
                rows.latents(values, batch_rows, device)
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
    // Drawn after everything else: runs with the default draw exactly what they drew before.
    let renoise =
        (cfg.method == Method::SharpenRlhf && cfg.rlhf.renoise == Renoise::Fresh).then(|| {
            let values = rows.slice(rng.normals(global * rows_per_item), rows_per_item);
            rows.latents(values, batch_rows, device)
        });
    Draw {
        eps: rows.latents(eps_values, batch_rows, device),
        timesteps,
        pair_eps,
        ddpo,
        renoise,
    }
}

/// What every step reads: the run's config, frozen models, samplers and reward.
pub struct Kit<'a, B: AutodiffBackend> {
    pub cfg: &'a TrainConfig,
    pub pipe: &'a SdxlPipeline<Inner<B>>,
    pub decoder: &'a VaeDecoder<'a, Inner<B>>,
    pub reward: &'a dyn Reward<Inner<B>>,
    /// The trajectories' DDIM sampler.
    pub sampler: &'a Sampler,
    /// Online generations (RLHF, Diffusion-DPO).
    pub generation: &'a Sampler,
    /// DDPO's policy: stochastic DDIM.
    pub policy: &'a Sampler,
}

/// One micro-batch's inputs, this peer's rows.
pub struct Batch<'a, B: AutodiffBackend> {
    pub prompts: &'a [&'a str],
    /// The prompts after caption dropout (what the UNet is conditioned on when training on data).
    pub unet_prompts: &'a [&'a str],
    pub draw: Draw<Inner<B>>,
    /// Conditioning from frozen text encoders (none when they are trained).
    pub cond: Option<&'a TextCond<Inner<B>>>,
    /// The empty prompt's conditioning per prompt, for guided generation.
    pub uncond: Option<&'a TextCond<Inner<B>>>,
    /// The images' latents (standard, sharpen-SFT).
    pub x0: Option<Tensor<Inner<B>, 4>>,
    /// The images themselves (autoencoder).
    pub pixels: Option<Tensor<Inner<B>, 4>>,
}

/// The micro-batch's loss for the configured method; `unet` is the UNet this step trains (none
/// for the autoencoder). Reward statistics for the methods that query a reward.
pub fn compute<B: AutodiffBackend>(
    kit: &Kit<'_, B>,
    model: &Trainable<B>,
    unet: Option<&UNet2DConditionModel<B>>,
    batch: Batch<'_, B>,
) -> anyhow::Result<(Computed<B>, Option<RewardStats>)> {
    let cfg = kit.cfg;
    let Batch {
        prompts,
        unet_prompts,
        draw,
        cond,
        uncond,
        x0,
        pixels,
    } = batch;
    let cond = || cond.expect("frozen text encoders");
    let x0 = || x0.expect("image methods encode their images");
    if cfg.method == Method::Autoencoder {
        let vae = model.vae.as_ref().expect("autoencoder trains the VAE");
        let pixels = pixels.expect("the autoencoder reads images");
        let loss = autoencoder_loss(vae, pixels, draw.eps, cfg.kl_weight);
        return Ok((Computed::Graph(loss), None));
    }
    let unet = unet.expect("UNet methods train the UNet");
    let ckpt = cfg.gradient_checkpointing;
    let n = cfg.trajectory.n;
    // The current weights without autograd, for rollouts (the methods that roll out with them).
    let rollout = matches!(
        cfg.method,
        Method::SharpenSft | Method::SharpenRlhf | Method::Ddpo
    )
    .then(|| unet.valid());
    let rollout = || rollout.as_ref().expect("this method rolls out");
    let models = || StepModels {
        train: unet,
        rollout: rollout(),
        decoder: kit.decoder,
        reward: kit.reward,
        sampler: kit.sampler,
    };
    let (traj, ref_unet) = (&cfg.trajectory, &kit.pipe.unet);
    Ok(match cfg.method {
        Method::Standard if ckpt => {
            let (schedule, x0) = (&kit.pipe.scheduler.schedule, x0());
            let target = standard_target(
                schedule,
                kit.pipe.scheduler.prediction,
                x0.clone(),
                draw.eps.clone(),
                &draw.timesteps,
            );
            let input = standard_input(schedule, x0, draw.eps, &draw.timesteps, cond());
            let target = Tensor::<B, 4>::from_inner(target);
            let (value, grads) =
                unet.checkpointed_grads(input, |out| (out - target).powi_scalar(2).mean());
            (Computed::Grads(value, grads), None)
        }
        Method::Standard => {
            let cond = match &model.text_encoders {
                Some(encoders) => {
                    encode(encoders, &kit.pipe.tokenizers, unet_prompts, cfg.resolution)?
                }
                None => lift_cond::<B>(cond()),
            };
            let loss = standard_loss(
                unet,
                &kit.pipe.scheduler.schedule,
                kit.pipe.scheduler.prediction,
                Tensor::from_inner(x0()),
                Tensor::from_inner(draw.eps),
                &draw.timesteps,
                &cond,
            );
            (Computed::Graph(loss), None)
        }
        Method::SharpenSft => {
            let inputs = SftInputs {
                x0: x0(),
                eps: draw.eps,
                cond: cond(),
                prompts,
                t: draw.timesteps.clone(),
            };
            let (computed, rollout) = if ckpt {
                let (value, grads, rollout) = sft_grads(&models(), traj, inputs)?;
                (Computed::Grads(value, grads), rollout)
            } else {
                let step = sft_step(&models(), traj, inputs)?;
                (Computed::Graph(step.loss), step.rollout)
            };
            (computed, Some(reward_stats(&rollout, n)))
        }
        Method::SharpenRlhf => {
            let inputs = RlhfInputs {
                cond: cond(),
                uncond,
                prompts,
                draw: RlhfDraw {
                    eps: draw.eps,
                    t: draw.timesteps.clone(),
                    renoise: draw.renoise,
                },
            };
            let (rlhf, gen) = (cfg.rlhf(), kit.generation);
            let (computed, rollout, gen_scores) = if ckpt {
                let s = rlhf_grads(&models(), ref_unet, gen, traj, &rlhf, inputs)?;
                let computed = Computed::Grads(s.loss, s.grads);
                (computed, s.rollout, s.generation_scores)
            } else {
                let s = rlhf_step(&models(), ref_unet, gen, traj, &rlhf, inputs)?;
                (Computed::Graph(s.loss), s.rollout, s.generation_scores)
            };
            (computed, Some(rlhf_stats(&rollout, n, &gen_scores)))
        }
        Method::DiffusionDpo => {
            let inputs = DpoInputs {
                reward: kit.reward,
                cond: cond(),
                uncond,
                prompts,
                draw: DpoDraw {
                    noise: draw.eps,
                    eps: draw.pair_eps.expect("drawn for diffusion-dpo"),
                    t: draw.timesteps.clone(),
                },
            };
            let dpo = cfg.dpo();
            let reference = Sampling {
                model: ref_unet,
                decoder: kit.decoder,
                sampler: kit.generation,
                n,
            };
            let (computed, rollout) = if ckpt {
                let (v, g, r) = dpo_grads(unet, &reference, &dpo, inputs)?;
                (Computed::Grads(v, g), r)
            } else {
                let s = dpo_step(unet, &reference, &dpo, inputs)?;
                (Computed::Graph(s.loss), s.rollout)
            };
            (computed, Some(reward_stats(&rollout, n)))
        }
        Method::Ddpo => {
            let (step_noise, train_steps) = draw.ddpo.expect("drawn for ddpo");
            let inputs = DdpoInputs {
                reward: kit.reward,
                cond: cond(),
                uncond,
                prompts,
                draw: DdpoDraw {
                    noise: draw.eps,
                    step_noise,
                    train_steps,
                },
            };
            let ddpo = cfg.ddpo();
            let policy = Sampling {
                model: rollout(),
                decoder: kit.decoder,
                sampler: kit.policy,
                n,
            };
            let (computed, rollout) = if ckpt {
                let (v, g, r) = ddpo_grads(unet, &policy, &ddpo, inputs)?;
                (Computed::Grads(v, g), r)
            } else {
                let s = ddpo_step(unet, &policy, &ddpo, inputs)?;
                (Computed::Graph(s.loss), s.rollout)
            };
            (computed, Some(reward_stats(&rollout, n)))
        }
        Method::Autoencoder => unreachable!("returned above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    type B = sharpen_app::CpuBackend;

    fn quickstart() -> TrainConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml");
        TrainConfig::load(&path).unwrap()
    }

    /// The start timesteps a micro-batch of 8 prompts draws, as peer `mine` of the group.
    fn timesteps(cfg: &TrainConfig, mine: Range<usize>) -> Vec<usize> {
        let mut cfg = cfg.clone();
        cfg.batch_size = mine.len();
        let rows = Rows {
            global: 8,
            mine,
            channels: 4,
            side: 2,
        };
        let mut rng = RunRng::new(7);
        draw::<B>(&cfg, &mut rng, &rows, 1000, &Default::default()).timesteps
    }

    #[test]
    fn sharpening_draws_one_start_timestep_per_prompt() {
        let mut cfg = quickstart();
        let t = timesteps(&cfg, 0..8);
        assert_eq!(t.len(), 8);
        let mut distinct = t.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 4, "independent draws: {t:?}");
        // A peer gets its prompts' part of the group's draws.
        assert_eq!(timesteps(&cfg, 4..8), t[4..]);
        cfg.trajectory.max_timestep = Some(100);
        assert!(timesteps(&cfg, 0..8).iter().all(|&t| t < 100));

        // `shared_timestep`: one draw for all of the micro-batch's prompts (the earlier rule).
        cfg.trajectory.max_timestep = None;
        cfg.trajectory.shared_timestep = true;
        let shared = timesteps(&cfg, 0..8);
        assert_eq!(shared, vec![shared[0]; 8]);
        assert_eq!(timesteps(&cfg, 4..8), vec![shared[0]; 4]);
        cfg.method = Method::SharpenRlhf;
        cfg.trajectory.shared_timestep = false;
        assert_eq!(timesteps(&cfg, 0..8), t, "RLHF draws as SFT does");
        // Diffusion-DPO: one per pair (its draws come at the same place in the stream).
        cfg.method = Method::DiffusionDpo;
        assert_eq!(timesteps(&cfg, 0..8), t);
        cfg.trajectory.shared_timestep = true;
        assert_eq!(timesteps(&cfg, 0..8), shared);
    }
}
