//! Sample, score, select (method.md section 3) and the SFT step (section 4).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use sharpen_loss::{select, step_loss, trajectory_reward, Selection};
use sharpen_rewards::{Reward, RewardError};
use sharpen_schedulers::Sampler;

use crate::model::{repeat_interleave, select as select_rows, EpsModel, LatentDecoder, TextCond};
use crate::timesteps::{add_noise_rows, ddim_next_rows, RowTimesteps};

/// The trajectory shape (method.md sections 3 and 6); also the `[trajectory]` section of a
/// training config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrajectoryConfig {
    /// Trajectories per prompt (`n`, default 3).
    pub n: usize,
    /// DDIM steps per trajectory (`m`, default 3).
    pub m: usize,
    /// Timesteps per DDIM step (`trajectory_stride`, default 40 = 1000 / 25).
    pub stride: usize,
    /// Cut the gradient between steps (`detach_between_steps`, default false: gradients flow
    /// through the chain of UNet calls, as in the reference).
    pub detach_between_steps: bool,
    /// Draw the trajectories' start timestep below this (default: the whole schedule, as
    /// method.md). Low values keep the decoded x0 estimates close to the images being compared.
    pub max_timestep: Option<usize>,
    /// One start timestep for all the prompts of a micro-batch instead of one per prompt
    /// (method.md draws one per training example; Diffusion-DPO, which reads it too, one per
    /// pair). This trainer's draw before 2026-12-07, kept so the runs made with it can be
    /// reproduced (`docs/results/shapes/ledger`).
    pub shared_timestep: bool,
}

impl Default for TrajectoryConfig {
    fn default() -> Self {
        Self {
            n: 3,
            m: 3,
            stride: 40,
            detach_between_steps: false,
            max_timestep: None,
            shared_timestep: false,
        }
    }
}

impl TrajectoryConfig {
    /// The exclusive upper bound of the start timestep for a schedule of `train_timesteps`.
    pub fn timestep_bound(&self, train_timesteps: usize) -> usize {
        self.max_timestep
            .map_or(train_timesteps, |m| m.clamp(1, train_timesteps))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrajectoryError {
    #[error(transparent)]
    Reward(#[from] RewardError),
    #[error("invalid trajectory input: {0}")]
    Input(String),
}

/// `min(m, 1 + floor(t / stride))`: no step goes below timestep 0.
pub fn effective_steps(t: usize, m: usize, stride: usize) -> usize {
    m.min(1 + t / stride.max(1))
}

/// t_k = t - k * stride for k < m_eff.
pub fn trajectory_timesteps(t: usize, m_eff: usize, stride: usize) -> Vec<usize> {
    (0..m_eff).map(|k| t - k * stride).collect()
}

/// What a rollout found, per row (prompt p's trajectories are rows p*n .. p*n+n-1).
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Each row's trajectory timesteps.
    pub timesteps: RowTimesteps,
    /// r^i_k: [rows][the row's steps].
    pub step_rewards: Vec<Vec<f64>>,
    /// r^i = mean_k r^i_k: [rows].
    pub scores: Vec<f64>,
    /// Per prompt, indices within the prompt's n trajectories.
    pub selections: Vec<Selection>,
}

impl Rollout {
    /// Row of prompt `p`'s winner.
    pub fn winner_row(&self, p: usize, n: usize) -> usize {
        p * n + self.selections[p].winner
    }

    /// Row of prompt `p`'s loser.
    pub fn loser_row(&self, p: usize, n: usize) -> usize {
        p * n + self.selections[p].loser
    }
}

pub(crate) fn ddim_next<B: Backend>(
    sampler: &Sampler,
    t: usize,
    stride: usize,
    eps_hat: Tensor<B, 4>,
    x: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let out = sampler.ddim_step(t as i64, t as i64 - stride as i64, 0.0, eps_hat, x, None);
    (out.prev_sample, out.pred_original_sample)
}

/// Runs the n trajectories of every prompt from `x_t` (rows = prompts x n) with deterministic
/// DDIM, scoring each step's decoded clean-latent estimate with `reward` against the prompt.
/// Meant for a backend without autograd (the rollout needs no graph).
#[allow(clippy::too_many_arguments)]
pub fn rollout<B: Backend>(
    model: &impl EpsModel<B>,
    decoder: &impl LatentDecoder<B>,
    reward: &dyn Reward<B>,
    sampler: &Sampler,
    x_t: Tensor<B, 4>,
    cond: &TextCond<B>,
    prompts: &[&str],
    n: usize,
    timesteps: &RowTimesteps,
    stride: usize,
) -> Result<Rollout, TrajectoryError> {
    rollout_with_states(
        model, decoder, reward, sampler, x_t, cond, prompts, n, timesteps, stride,
    )
    .map(|(rollout, _)| rollout)
}

/// [`rollout`], also returning the trajectory states x_{t_k} ([rows, c, h, w] per step).
#[allow(clippy::too_many_arguments)]
pub fn rollout_with_states<B: Backend>(
    model: &impl EpsModel<B>,
    decoder: &impl LatentDecoder<B>,
    reward: &dyn Reward<B>,
    sampler: &Sampler,
    x_t: Tensor<B, 4>,
    cond: &TextCond<B>,
    prompts: &[&str],
    n: usize,
    timesteps: &RowTimesteps,
    stride: usize,
) -> Result<(Rollout, Vec<Tensor<B, 4>>), TrajectoryError> {
    let rows = x_t.dims()[0];
    if rows != prompts.len() * n || cond.rows() != rows || timesteps.rows() != rows {
        return Err(TrajectoryError::Input(format!(
            "{rows} latent rows, {} condition rows and {} trajectories' timesteps for {} \
             prompts x {n} trajectories",
            cond.rows(),
            timesteps.rows(),
            prompts.len()
        )));
    }
    let row_prompts = repeat_prompts(prompts, n);
    let steps = timesteps.steps();
    let mut step_rewards = vec![Vec::with_capacity(steps); rows];
    let mut x = x_t;
    let mut states = Vec::with_capacity(steps);
    for k in 0..steps {
        let t = timesteps.at(k);
        states.push(x.clone());
        let eps_hat = model.predict_rows(x.clone(), &t, cond);
        let (next, x0_hat) = ddim_next_rows(sampler, &t, stride, eps_hat, x);
        // Only the rows whose trajectory has a step k are scored.
        let active: Vec<usize> = (0..rows).filter(|&r| timesteps.active(r, k)).collect();
        let scores = if active.len() == rows {
            score_latents(decoder, reward, x0_hat, &row_prompts)?
        } else {
            let prompts: Vec<&str> = active.iter().map(|&r| row_prompts[r]).collect();
            score_latents(decoder, reward, select_rows(x0_hat, &active), &prompts)?
        };
        for (&row, s) in active.iter().zip(scores) {
            step_rewards[row].push(s);
        }
        x = next;
    }
    let scores: Vec<f64> = step_rewards.iter().map(|r| trajectory_reward(r)).collect();
    let selections = scores.chunks(n).map(select).collect();
    let rollout = Rollout {
        timesteps: timesteps.clone(),
        step_rewards,
        scores,
        selections,
    };
    Ok((rollout, states))
}

/// Each prompt `n` times in a row: the prompt of every row of a [prompts x n, ...] batch.
pub fn repeat_prompts<'p>(prompts: &[&'p str], n: usize) -> Vec<&'p str> {
    prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(*p, n))
        .collect()
}

/// Rewards of clean latents [rows, c, h, w] decoded by `decoder`, one prompt per row.
pub fn score_latents<B: Backend>(
    decoder: &impl LatentDecoder<B>,
    reward: &dyn Reward<B>,
    latents: Tensor<B, 4>,
    row_prompts: &[&str],
) -> Result<Vec<f64>, TrajectoryError> {
    let scores = reward.score(decoder.decode(latents), row_prompts)?;
    Ok(scores
        .into_data()
        .convert::<f64>()
        .into_vec()
        .expect("float scores"))
}

/// The path loss L = mean_k mean_{C,H,W} (eps_hat_k - eps)^2 of each row's trajectory from
/// `x_t`, with whatever graph the backend records: [rows]. The target is each row's initial
/// noise at every step.
#[allow(clippy::too_many_arguments)]
pub fn path_losses<B: Backend>(
    model: &impl EpsModel<B>,
    sampler: &Sampler,
    x_t: Tensor<B, 4>,
    eps: Tensor<B, 4>,
    cond: &TextCond<B>,
    timesteps: &RowTimesteps,
    stride: usize,
    detach_between_steps: bool,
) -> Tensor<B, 1> {
    let steps = timesteps.steps();
    let mut losses = Vec::with_capacity(steps);
    let mut x = x_t;
    for k in 0..steps {
        let t = timesteps.at(k);
        let eps_hat = model.predict_rows(x.clone(), &t, cond);
        losses.push(step_loss(eps_hat.clone(), eps.clone()));
        if k + 1 < steps {
            let (next, _) = ddim_next_rows(sampler, &t, stride, eps_hat, x);
            x = if detach_between_steps {
                next.detach()
            } else {
                next
            };
        }
    }
    timesteps.path_loss(losses)
}

/// The same conditioning as constants of the autodiff backend (no gradient flows into it).
pub fn lift_cond<B: AutodiffBackend>(cond: &TextCond<B::InnerBackend>) -> TextCond<B> {
    TextCond {
        context: Tensor::from_inner(cond.context.clone()),
        added: cond.added.as_ref().map(|a| sdxl_unet::AddedCond {
            text_embeds: Tensor::from_inner(a.text_embeds.clone()),
            time_ids: Tensor::from_inner(a.time_ids.clone()),
        }),
    }
}

/// What [`noise_and_roll_out`] produced: the noised rows, the trajectory timesteps, the
/// rollout and its states.
pub(crate) struct Noised<B: Backend> {
    pub x_t: Tensor<B, 4>,
    pub timesteps: RowTimesteps,
    pub rollout: Rollout,
    pub states: Vec<Tensor<B, 4>>,
}

/// The shared start of both steps (method.md section 3): noise the clean rows `x0` with their
/// `eps`, each prompt's n rows at the prompt's own timestep `t[p]`, then roll out each row's
/// m_eff DDIM steps without autograd and score them.
pub(crate) fn noise_and_roll_out<B, M, R, D>(
    models: &StepModels<'_, B, M, R, D>,
    config: &TrajectoryConfig,
    x0: Tensor<B::InnerBackend, 4>,
    eps: Tensor<B::InnerBackend, 4>,
    rows_cond: &TextCond<B::InnerBackend>,
    prompts: &[&str],
    t: &[usize],
) -> Result<Noised<B::InnerBackend>, TrajectoryError>
where
    B: AutodiffBackend,
    R: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let schedule = &models.sampler.config.schedule;
    if t.len() != prompts.len() {
        return Err(TrajectoryError::Input(format!(
            "{} timesteps for {} prompts",
            t.len(),
            prompts.len()
        )));
    }
    if let Some(bad) = t.iter().find(|&&t| t >= schedule.num_train_timesteps()) {
        return Err(TrajectoryError::Input(format!(
            "timestep {bad} outside the schedule"
        )));
    }
    let row_t: Vec<usize> = t
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t, config.n))
        .collect();
    let x_t = add_noise_rows(schedule, x0, eps, &row_t);
    let timesteps = RowTimesteps::new(&row_t, config.m, config.stride);
    let (rollout, states) = rollout_with_states(
        models.rollout,
        models.decoder,
        models.reward,
        models.sampler,
        x_t.clone(),
        rows_cond,
        prompts,
        config.n,
        &timesteps,
        config.stride,
    )?;
    Ok(Noised {
        x_t,
        timesteps,
        rollout,
        states,
    })
}

/// One SFT Diffusion-Sharpening step's result.
#[derive(Debug)]
pub struct SftStep<B: Backend> {
    /// Mean over prompts of the selected trajectory's path loss (with graph).
    pub loss: Tensor<B, 1>,
    pub rollout: Rollout,
}

/// The models and reward of a step: the trained model with autograd, the same weights without
/// (for rollouts), and what scores a rollout.
pub struct StepModels<'a, B: AutodiffBackend, M, R, D> {
    pub train: &'a M,
    pub rollout: &'a R,
    pub decoder: &'a D,
    pub reward: &'a dyn Reward<B::InnerBackend>,
    pub sampler: &'a Sampler,
}

/// What SFT trains on after the rollout: each prompt's best trajectory start (rows = prompts).
pub(crate) struct SftSelected<B: Backend> {
    pub x_t: Tensor<B, 4>,
    pub eps: Tensor<B, 4>,
    pub cond: TextCond<B>,
    pub timesteps: RowTimesteps,
    pub rollout: Rollout,
}

/// What one SFT step trains on: each prompt's clean latent `x0` [prompts, c, h, w], its n noises
/// `eps` [prompts x n, c, h, w], its (possibly caption-dropped) conditioning, the prompts the
/// reward sees, and each prompt's start timestep `t` (method.md draws one per example).
#[derive(Debug, Clone)]
pub struct SftInputs<'a, B: Backend> {
    pub x0: Tensor<B, 4>,
    pub eps: Tensor<B, 4>,
    pub cond: &'a TextCond<B>,
    pub prompts: &'a [&'a str],
    pub t: Vec<usize>,
}

/// The rollout and selection of [`sft_step`], without autograd.
pub(crate) fn sft_select<B, M, R, D>(
    models: &StepModels<'_, B, M, R, D>,
    config: &TrajectoryConfig,
    inputs: SftInputs<'_, B::InnerBackend>,
) -> Result<SftSelected<B::InnerBackend>, TrajectoryError>
where
    B: AutodiffBackend,
    R: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let SftInputs {
        x0,
        eps,
        cond,
        prompts,
        t,
    } = inputs;
    let n = config.n;
    let rows_cond = cond.repeat_rows(n);
    let noised = noise_and_roll_out(
        models,
        config,
        repeat_interleave(x0, n),
        eps.clone(),
        &rows_cond,
        prompts,
        &t,
    )?;
    let chosen: Vec<usize> = (0..prompts.len())
        .map(|p| noised.rollout.winner_row(p, n))
        .collect();
    Ok(SftSelected {
        x_t: select_rows(noised.x_t, &chosen),
        eps: select_rows(eps, &chosen),
        cond: rows_cond.select_rows(&chosen),
        timesteps: noised.timesteps.select(&chosen),
        rollout: noised.rollout,
    })
}

/// SFT Diffusion-Sharpening (method.md section 4) for a batch of prompts: noise each clean latent
/// with its n noises at the inputs' timestep, roll out without autograd, keep each prompt's best
/// trajectory and recompute only it with autograd.
pub fn sft_step<B, M, R, D>(
    models: &StepModels<'_, B, M, R, D>,
    config: &TrajectoryConfig,
    inputs: SftInputs<'_, B::InnerBackend>,
) -> Result<SftStep<B>, TrajectoryError>
where
    B: AutodiffBackend,
    M: EpsModel<B>,
    R: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let chosen = sft_select(models, config, inputs)?;
    let losses = path_losses(
        models.train,
        models.sampler,
        Tensor::from_inner(chosen.x_t),
        Tensor::from_inner(chosen.eps),
        &lift_cond::<B>(&chosen.cond),
        &chosen.timesteps,
        config.stride,
        config.detach_between_steps,
    );
    Ok(SftStep {
        loss: losses.mean(),
        rollout: chosen.rollout,
    })
}
