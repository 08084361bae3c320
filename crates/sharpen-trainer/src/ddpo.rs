//! The DDPO baseline (method.md section 9): denoising as a policy of stochastic DDIM steps, the
//! reward of each final sample turned into per-prompt normalised advantages, and the PPO-clip
//! objective on the log-probabilities of the sampled steps.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use sharpen_loss::{group_advantages, ppo_clip_loss};
use sharpen_rewards::Reward;
use sharpen_schedulers::Sampler;

use crate::dpo::{sample_rollout, BaselineStep, Sampling};
use crate::model::{EpsModel, LatentDecoder, TextCond};
use crate::rlhf::guided_eps;
use crate::trajectory::{lift_cond, repeat_prompts, score_latents, TrajectoryError};

/// DDPO's knobs (ddpo-pytorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdpoConfig {
    /// Stochasticity of the DDIM policy (1: the DDPM-like policy DDPO uses).
    pub eta: f64,
    /// PPO's clip range of the probability ratio.
    pub clip: f64,
    /// Advantages are clamped to +- this.
    pub adv_clip: f64,
    /// Guidance scale of the policy (1 = off); the guided prediction is the policy's mean.
    pub rollout_cfg: f64,
}

impl Default for DdpoConfig {
    fn default() -> Self {
        Self {
            eta: 1.0,
            clip: 1e-4,
            adv_clip: 5.0,
            rollout_cfg: 1.0,
        }
    }
}

/// What a DDPO step draws.
#[derive(Debug, Clone)]
pub struct DdpoDraw<B: Backend> {
    /// Initial noise, n samples per prompt: [prompts x n, c, h, w].
    pub noise: Tensor<B, 4>,
    /// The noise of every sampling step, each shaped like `noise`.
    pub step_noise: Vec<Tensor<B, 4>>,
    /// Which sampling steps (indices into the sampler's timesteps) get a gradient.
    pub train_steps: Vec<usize>,
}

/// What one DDPO step works on: the reward of the final samples, each prompt's conditioning
/// (and the empty prompt's, for the guided policy), the prompts the reward sees, and the draw.
pub struct DdpoInputs<'a, B: Backend> {
    pub reward: &'a dyn Reward<B>,
    pub cond: &'a TextCond<B>,
    pub uncond: Option<&'a TextCond<B>>,
    pub prompts: &'a [&'a str],
    pub draw: DdpoDraw<B>,
}

/// What a DDPO step samples without autograd: every state of the n trajectories per prompt,
/// each step's log-probability under the sampling weights, the clipped per-prompt advantages,
/// and the chosen training steps.
pub(crate) struct DdpoPrepared<B: Backend> {
    pub states: Vec<Tensor<B, 4>>,
    old_log_probs: Vec<Tensor<B, 1>>,
    advantages: Vec<f32>,
    pub cond: TextCond<B>,
    pub uncond: Option<TextCond<B>>,
    pub timesteps: Vec<i64>,
    stride: i64,
    pub train_steps: Vec<usize>,
    pub scores: Vec<f64>,
}

impl<B: Backend> DdpoPrepared<B> {
    /// PPO's clipped objective averaged over the training steps, given each training step's
    /// (guided) noise prediction with autograd, in `train_steps` order.
    pub(crate) fn loss<AB: AutodiffBackend<InnerBackend = B>>(
        &self,
        sampler: &Sampler,
        config: &DdpoConfig,
        eps: Vec<Tensor<AB, 4>>,
    ) -> Tensor<AB, 1> {
        let device = self.states[0].device();
        let advantages = Tensor::<AB, 1>::from_inner(Tensor::<B, 1>::from_floats(
            self.advantages.as_slice(),
            &device,
        ));
        let losses: Vec<Tensor<AB, 1>> = self
            .train_steps
            .iter()
            .zip(eps)
            .map(|(&i, eps)| {
                let t = self.timesteps[i];
                let log_prob = sampler.ddim_log_prob(
                    t,
                    t - self.stride,
                    config.eta,
                    eps,
                    Tensor::from_inner(self.states[i].clone()),
                    Tensor::from_inner(self.states[i + 1].clone()),
                );
                ppo_clip_loss(
                    log_prob,
                    Tensor::from_inner(self.old_log_probs[i].clone()),
                    advantages.clone(),
                    config.clip,
                )
                .mean()
            })
            .collect();
        let k = losses.len() as f64;
        Tensor::cat(losses, 0).sum().div_scalar(k)
    }
}

/// The no-autograd part of [`ddpo_step`].
pub(crate) fn ddpo_prepare<B: Backend>(
    sampling: &Sampling<'_, impl EpsModel<B>, impl LatentDecoder<B>>,
    config: &DdpoConfig,
    inputs: DdpoInputs<'_, B>,
) -> Result<DdpoPrepared<B>, TrajectoryError> {
    let Sampling {
        model: rollout,
        decoder,
        sampler,
        n,
    } = *sampling;
    let DdpoInputs {
        reward,
        cond,
        uncond,
        prompts,
        draw:
            DdpoDraw {
                noise,
                step_noise,
                train_steps,
            },
    } = inputs;
    let rows = prompts.len() * n;
    let timesteps = sampler.timesteps().to_vec();
    if noise.dims()[0] != rows || cond.rows() != prompts.len() {
        return Err(TrajectoryError::Input(format!(
            "{} noise rows and {} condition rows for {} prompts x {n} samples",
            noise.dims()[0],
            cond.rows(),
            prompts.len()
        )));
    }
    if step_noise.len() != timesteps.len()
        || train_steps.is_empty()
        || train_steps.iter().any(|&i| i >= timesteps.len())
    {
        return Err(TrajectoryError::Input(format!(
            "{} step noises and training steps {train_steps:?} for {} sampling steps",
            step_noise.len(),
            timesteps.len()
        )));
    }
    let stride = (sampler.config.schedule.num_train_timesteps() / timesteps.len()) as i64;
    let rows_cond = cond.repeat_rows(n);
    let rows_uncond = uncond.map(|u| u.repeat_rows(n));
    let g = config.rollout_cfg;

    // Sampling: the policy's trajectory and its log-probabilities, without a graph.
    let mut x = noise.mul_scalar(sampler.init_noise_sigma());
    let mut states = vec![x.clone()];
    let mut old_log_probs = Vec::with_capacity(timesteps.len());
    for (&t, z) in timesteps.iter().zip(step_noise) {
        let eps = guided_eps(
            rollout,
            x.clone(),
            t as usize,
            &rows_cond,
            rows_uncond.as_ref(),
            g,
        );
        let next = sampler
            .ddim_step(t, t - stride, config.eta, eps.clone(), x.clone(), Some(z))
            .prev_sample;
        old_log_probs.push(sampler.ddim_log_prob(t, t - stride, config.eta, eps, x, next.clone()));
        states.push(next.clone());
        x = next;
    }
    let row_prompts = repeat_prompts(prompts, n);
    let scores = score_latents(decoder, reward, x, &row_prompts)?;
    let advantages: Vec<f32> = group_advantages(&scores, n)
        .into_iter()
        .map(|a| a.clamp(-config.adv_clip, config.adv_clip) as f32)
        .collect();
    Ok(DdpoPrepared {
        states,
        old_log_probs,
        advantages,
        cond: rows_cond,
        uncond: rows_uncond,
        timesteps,
        stride,
        train_steps,
        scores,
    })
}

/// One DDPO step for a batch of prompts: sample n trajectories per prompt with the current
/// weights (`rollout`, no graph) through `sampler` (DDIM with `config.eta`), keeping every state
/// and each step's log-probability; score the final samples; normalise the rewards within each
/// prompt; then recompute the chosen steps' log-probabilities with autograd (`train`) and
/// average PPO's clipped objective over them.
pub fn ddpo_step<B, M, R, D>(
    train: &M,
    rollout: &Sampling<'_, R, D>,
    config: &DdpoConfig,
    inputs: DdpoInputs<'_, B::InnerBackend>,
) -> Result<BaselineStep<B>, TrajectoryError>
where
    B: AutodiffBackend,
    M: EpsModel<B>,
    R: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let prepared = ddpo_prepare(rollout, config, inputs)?;
    let train_cond = lift_cond::<B>(&prepared.cond);
    let train_uncond = prepared.uncond.as_ref().map(lift_cond::<B>);
    let eps: Vec<Tensor<B, 4>> = prepared
        .train_steps
        .iter()
        .map(|&i| {
            guided_eps(
                train,
                Tensor::from_inner(prepared.states[i].clone()),
                prepared.timesteps[i] as usize,
                &train_cond,
                train_uncond.as_ref(),
                config.rollout_cfg,
            )
        })
        .collect();
    let loss = prepared.loss(rollout.sampler, config, eps);
    Ok(BaselineStep {
        loss,
        rollout: sample_rollout(prepared.scores, rollout.n),
    })
}
