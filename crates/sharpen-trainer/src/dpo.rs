//! The Diffusion-DPO baseline (method.md section 9): preference pairs from the frozen base
//! model's own samples ranked by the reward, one noising per pair, and the published loss
//! against the same frozen model as reference.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use sharpen_loss::{diffusion_dpo_loss, select, step_loss};
use sharpen_rewards::Reward;
use sharpen_schedulers::Sampler;

use crate::model::{select as select_rows, EpsModel, LatentDecoder, TextCond};
use crate::rlhf::generate;
use crate::timesteps::{add_noise_rows, RowTimesteps};
use crate::trajectory::{lift_cond, repeat_prompts, score_latents, Rollout, TrajectoryError};

/// Diffusion-DPO's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpoConfig {
    /// beta of the published loss (5000; it enters as beta / 2).
    pub beta: f64,
    /// Guidance scale of the pair generation (1 = off).
    pub rollout_cfg: f64,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self {
            beta: 5000.0,
            rollout_cfg: 1.0,
        }
    }
}

/// What a Diffusion-DPO step draws.
#[derive(Debug, Clone)]
pub struct DpoDraw<B: Backend> {
    /// Generation noise, n samples per prompt: [prompts x n, c, h, w].
    pub noise: Tensor<B, 4>,
    /// Each pair's shared training noise: [prompts, c, h, w].
    pub eps: Tensor<B, 4>,
    /// Each pair's training timestep, one per prompt (Diffusion-DPO draws one per pair).
    pub t: Vec<usize>,
}

/// A baseline step's result: the loss (with graph) and the rewards of its samples (one
/// "step" per sample; selections are each prompt's best and worst).
#[derive(Debug)]
pub struct BaselineStep<B: AutodiffBackend> {
    pub loss: Tensor<B, 1>,
    pub rollout: Rollout,
}

/// The no-graph side of a baseline step: the model that draws the samples (Diffusion-DPO: the
/// frozen reference; DDPO: the current weights without a graph), the decoder the reward sees
/// the samples through, the sampler, and the samples per prompt.
pub struct Sampling<'a, S, D> {
    pub model: &'a S,
    pub decoder: &'a D,
    pub sampler: &'a Sampler,
    pub n: usize,
}

/// Rewards of final samples as a one-step [`Rollout`], with per-prompt selections.
pub(crate) fn sample_rollout(scores: Vec<f64>, n: usize) -> Rollout {
    Rollout {
        timesteps: RowTimesteps::default(),
        step_rewards: scores.iter().map(|&s| vec![s]).collect(),
        selections: scores.chunks(n).map(select).collect(),
        scores,
    }
}

/// What a Diffusion-DPO step computes without autograd: the pairs' noised latents (each
/// prompt's winner, then each prompt's loser), their shared noise, conditioning, the reference's
/// step losses and the ties.
pub(crate) struct DpoPrepared<B: Backend> {
    pub x_t: Tensor<B, 4>,
    pub eps: Tensor<B, 4>,
    pub cond: TextCond<B>,
    /// The chosen rows' timesteps: each pair's for its winner and its loser.
    pub t: Vec<usize>,
    refs: Tensor<B, 1>,
    tie: Vec<bool>,
    pub rollout: Rollout,
}

impl<B: Backend> DpoPrepared<B> {
    /// The published loss (mean over prompts) from the trained model's step losses of the
    /// chosen rows, winners then losers: [2 x prompts] -> scalar.
    pub(crate) fn loss<AB: AutodiffBackend<InnerBackend = B>>(
        &self,
        losses: Tensor<AB, 1>,
        config: &DpoConfig,
    ) -> Tensor<AB, 1> {
        let p = self.tie.len();
        diffusion_dpo_loss(
            losses.clone().narrow(0, 0, p),
            losses.narrow(0, p, p),
            Tensor::from_inner(self.refs.clone().narrow(0, 0, p)),
            Tensor::from_inner(self.refs.clone().narrow(0, p, p)),
            &self.tie,
            config.beta,
        )
        .mean()
    }
}

/// What one Diffusion-DPO step works on: the reward that ranks the reference's samples, each
/// prompt's conditioning (and the empty prompt's, for guided generation), the prompts the
/// reward sees, and the draw.
pub struct DpoInputs<'a, B: Backend> {
    pub reward: &'a dyn Reward<B>,
    pub cond: &'a TextCond<B>,
    pub uncond: Option<&'a TextCond<B>>,
    pub prompts: &'a [&'a str],
    pub draw: DpoDraw<B>,
}

/// The no-autograd part of [`dpo_step`].
pub(crate) fn dpo_prepare<B: Backend>(
    sampling: &Sampling<'_, impl EpsModel<B>, impl LatentDecoder<B>>,
    config: &DpoConfig,
    inputs: DpoInputs<'_, B>,
) -> Result<DpoPrepared<B>, TrajectoryError> {
    let Sampling {
        model: reference,
        decoder,
        sampler: generation,
        n,
    } = *sampling;
    let DpoInputs {
        reward,
        cond,
        uncond,
        prompts,
        draw: DpoDraw { noise, eps, t },
    } = inputs;
    let p = prompts.len();
    if noise.dims()[0] != p * n || eps.dims()[0] != p || cond.rows() != p || t.len() != p {
        return Err(TrajectoryError::Input(format!(
            "{} noise rows, {} eps rows, {} condition rows and {} timesteps for {p} prompts x \
             {n} samples",
            noise.dims()[0],
            eps.dims()[0],
            cond.rows(),
            t.len()
        )));
    }
    let schedule = &generation.config.schedule;
    if let Some(t) = t.iter().find(|&&t| t >= schedule.num_train_timesteps()) {
        return Err(TrajectoryError::Input(format!(
            "timestep {t} outside the schedule"
        )));
    }
    let rows_cond = cond.repeat_rows(n);
    let rows_uncond = uncond.map(|u| u.repeat_rows(n));
    let samples = generate(
        reference,
        generation,
        noise,
        &rows_cond,
        rows_uncond.as_ref(),
        config.rollout_cfg,
    );
    let row_prompts = repeat_prompts(prompts, n);
    let rollout = sample_rollout(
        score_latents(decoder, reward, samples.clone(), &row_prompts)?,
        n,
    );
    // Winners then losers, one row each per prompt; a pair shares its eps.
    let chosen: Vec<usize> = (0..p)
        .map(|q| rollout.winner_row(q, n))
        .chain((0..p).map(|q| rollout.loser_row(q, n)))
        .collect();
    let eps2 = Tensor::cat(vec![eps.clone(), eps], 0);
    let t = [t.clone(), t].concat();
    let x_t = add_noise_rows(schedule, select_rows(samples, &chosen), eps2.clone(), &t);
    let pair_cond = rows_cond.select_rows(&chosen);
    let refs = step_loss(
        reference.predict_rows(x_t.clone(), &t, &pair_cond),
        eps2.clone(),
    );
    let tie: Vec<bool> = rollout.selections.iter().map(|s| s.tie).collect();
    Ok(DpoPrepared {
        x_t,
        eps: eps2,
        cond: pair_cond,
        t,
        refs,
        tie,
        rollout,
    })
}

/// One Diffusion-DPO step for a batch of prompts: `reference` (the frozen base model) generates n
/// samples per prompt (`generation`: deterministic DDIM), the reward ranks them, each prompt's
/// best and worst form a pair, both are noised with the pair's eps at `t`, and the loss compares
/// the trained model's and the reference's errors. Prompts whose samples all tie are skipped.
pub fn dpo_step<B, M, Ref, D>(
    train: &M,
    reference: &Sampling<'_, Ref, D>,
    config: &DpoConfig,
    inputs: DpoInputs<'_, B::InnerBackend>,
) -> Result<BaselineStep<B>, TrajectoryError>
where
    B: AutodiffBackend,
    M: EpsModel<B>,
    Ref: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let prepared = dpo_prepare(reference, config, inputs)?;
    let losses = step_loss(
        train.predict_rows(
            Tensor::from_inner(prepared.x_t.clone()),
            &prepared.t,
            &lift_cond::<B>(&prepared.cond),
        ),
        Tensor::from_inner(prepared.eps.clone()),
    );
    let loss = prepared.loss(losses, config);
    Ok(BaselineStep {
        loss,
        rollout: prepared.rollout,
    })
}
