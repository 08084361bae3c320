//! RLHF Diffusion-Sharpening (method.md section 5): online generation with the current model,
//! re-noising, the shared trajectory core, and the preference loss against a frozen reference.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use sharpen_loss::{rlhf_loss, select as select_best_worst, step_loss, RewardMargin, RlhfBatch};
use sharpen_schedulers::{Sampler, SamplerState};

use crate::model::{select as select_rows, EpsModel, LatentDecoder, TextCond};
use crate::timesteps::RowTimesteps;
use crate::trajectory::{
    lift_cond, noise_and_roll_out, path_losses, repeat_prompts, score_latents, Rollout, StepModels,
    TrajectoryConfig, TrajectoryError,
};

/// The RLHF knobs of method.md section 5, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RlhfConfig {
    /// beta = 2500 in this parameterisation (Diffusion-DPO's 5000 with the 1/2).
    pub beta: f64,
    /// Paper Eq. 11 (default) or the reference code's form.
    pub margin: RewardMargin,
    /// The reference model's loss from the first trajectory state only (the reference code).
    pub ref_first_step_only: bool,
    /// Multiplies the reward gap r_w - r_l so that rewards span about [0, 1] (1 for rewards that
    /// already do, such as the shapes scorer).
    pub reward_scale: f64,
    /// Guidance scale of the online generation (1 = off, as in the reference).
    pub rollout_cfg: f64,
    /// What ranks a prompt's n trajectories into winner and loser.
    pub select: RlhfSelect,
}

/// What ranks the RLHF trajectories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RlhfSelect {
    /// The trajectory score: the mean reward of its decoded clean-latent estimates (method.md
    /// section 3).
    #[default]
    Trajectory,
    /// The reward of each trajectory's online generation x0^i itself (not the paper's method:
    /// the noised states' estimates carry the model's own prediction errors, which the
    /// trajectory score rewards as much as the generation).
    Generation,
}

impl Default for RlhfConfig {
    fn default() -> Self {
        Self {
            beta: 2500.0,
            margin: RewardMargin::Inside,
            ref_first_step_only: false,
            reward_scale: 1.0,
            rollout_cfg: 1.0,
            select: RlhfSelect::Trajectory,
        }
    }
}

/// Deterministic generation from `noise` [rows, c, h, w] through every step of `sampler` (a DDIM
/// sampler with the generation step count), with classifier-free guidance when `uncond` is given
/// and `guidance != 1`. Returns the clean latents.
pub fn generate<B: Backend>(
    model: &impl EpsModel<B>,
    sampler: &Sampler,
    noise: Tensor<B, 4>,
    cond: &TextCond<B>,
    uncond: Option<&TextCond<B>>,
    guidance: f64,
) -> Tensor<B, 4> {
    let mut x = noise.mul_scalar(sampler.init_noise_sigma());
    let mut state = SamplerState::default();
    for (i, &t) in sampler.timesteps().iter().enumerate() {
        let input = sampler.scale_model_input(x.clone(), i);
        let eps = guided_eps(model, input, t as usize, cond, uncond, guidance);
        x = sampler.step(i, eps, x, None, &mut state).prev_sample;
    }
    x
}

/// The noise prediction with classifier-free guidance when `uncond` is given and
/// `guidance != 1`: `eps_u + guidance * (eps_c - eps_u)`.
pub fn guided_eps<B: Backend>(
    model: &impl EpsModel<B>,
    x: Tensor<B, 4>,
    t: usize,
    cond: &TextCond<B>,
    uncond: Option<&TextCond<B>>,
    guidance: f64,
) -> Tensor<B, 4> {
    let eps = model.predict(x.clone(), t, cond);
    match uncond {
        Some(uncond) if guidance != 1.0 => {
            let eps_u = model.predict(x, t, uncond);
            eps_u.clone() + (eps - eps_u).mul_scalar(guidance)
        }
        _ => eps,
    }
}

/// The reference model's mean step loss over each row's trajectory states (no graph): [rows].
fn reference_losses<B: Backend>(
    reference: &impl EpsModel<B>,
    states: &[Tensor<B, 4>],
    eps: Tensor<B, 4>,
    cond: &TextCond<B>,
    timesteps: &RowTimesteps,
) -> Tensor<B, 1> {
    let losses: Vec<Tensor<B, 1>> = states
        .iter()
        .enumerate()
        .map(|(k, x)| {
            let eps_hat = reference.predict_rows(x.clone(), &timesteps.at(k), cond);
            step_loss(eps_hat, eps.clone())
        })
        .collect();
    timesteps.path_loss(losses)
}

/// One RLHF step's result.
#[derive(Debug)]
pub struct RlhfStep<B: AutodiffBackend> {
    /// Mean over prompts of the preference loss (with graph); tied prompts add log 2.
    pub loss: Tensor<B, 1>,
    pub rollout: Rollout,
    /// The online generations x0^i: [prompts x n, c, h, w].
    pub generated: Tensor<B::InnerBackend, 4>,
    /// The reward of each online generation x0^i: [prompts x n]. With
    /// [`RlhfSelect::Generation`] these are also `rollout.scores`.
    pub generation_scores: Vec<f64>,
}

/// [`crate::checkpointed::rlhf_grads`]'s result: the loss value and the gradients instead of a
/// graph.
#[derive(Debug)]
pub struct RlhfStepValue<B: Backend> {
    pub loss: Tensor<B, 1>,
    pub grads: burn::optim::GradientsParams,
    pub rollout: Rollout,
    pub generation_scores: Vec<f64>,
}

/// What an RLHF step draws: the n noises per prompt (generation and re-noising) and the shared
/// timestep.
#[derive(Debug, Clone)]
pub struct RlhfDraw<B: Backend> {
    /// [prompts x n, c, h, w].
    pub eps: Tensor<B, 4>,
    /// Each prompt's start timestep (shared by its n trajectories).
    pub t: Vec<usize>,
    /// Noise to re-noise the generations with (and the losses' target), [prompts x n, c, h, w].
    /// None: each generation's own starting noise `eps`, as method.md specifies; Some: fresh
    /// noise, as Diffusion-DPO noises its pairs (`[rlhf] renoise = "fresh"`).
    pub renoise: Option<Tensor<B, 4>>,
}

/// What one RLHF step works on: each prompt's conditioning (and the empty prompt's, for the
/// online generation's guidance), the prompts the reward sees, and the step's draw.
#[derive(Debug, Clone)]
pub struct RlhfInputs<'a, B: Backend> {
    pub cond: &'a TextCond<B>,
    pub uncond: Option<&'a TextCond<B>>,
    pub prompts: &'a [&'a str],
    pub draw: RlhfDraw<B>,
}

/// What an RLHF step computes without autograd: the online generations, the rollout and the
/// selection, and for the chosen rows (each prompt's winner, then each prompt's loser) their
/// starts, noises, conditioning, the reference model's losses and the preference inputs.
pub(crate) struct RlhfPrepared<B: Backend> {
    pub x_t: Tensor<B, 4>,
    pub eps: Tensor<B, 4>,
    pub cond: TextCond<B>,
    /// The chosen rows' trajectory timesteps.
    pub timesteps: RowTimesteps,
    /// The reference model's mean step loss per chosen row.
    pub refs: Tensor<B, 1>,
    /// Per prompt: (r_w - r_l) x reward_scale, and whether all n tied.
    pub gap: Vec<f64>,
    pub tie: Vec<bool>,
    pub rollout: Rollout,
    pub generated: Tensor<B, 4>,
    pub generation_scores: Vec<f64>,
}

impl<B: Backend> RlhfPrepared<B> {
    /// The preference loss (mean over prompts) from the chosen rows' path losses, winners then
    /// losers: [2 x prompts] -> scalar.
    pub(crate) fn loss<AB: AutodiffBackend<InnerBackend = B>>(
        &self,
        losses: Tensor<AB, 1>,
        rlhf: &RlhfConfig,
    ) -> Tensor<AB, 1> {
        let p = self.gap.len();
        let refs = Tensor::<AB, 1>::from_inner(self.refs.clone());
        let batch = RlhfBatch {
            loss_w: losses.clone().narrow(0, 0, p),
            loss_l: losses.narrow(0, p, p),
            ref_w: refs.clone().narrow(0, 0, p),
            ref_l: refs.narrow(0, p, p),
            reward_gap: &self.gap,
            tie: &self.tie,
        };
        rlhf_loss(batch, rlhf.beta, rlhf.margin).mean()
    }
}

/// The no-autograd part of [`rlhf_step`].
pub(crate) fn rlhf_prepare<B, M, R, Ref, D>(
    models: &StepModels<'_, B, M, R, D>,
    reference: &Ref,
    generation: &Sampler,
    config: &TrajectoryConfig,
    rlhf: &RlhfConfig,
    inputs: RlhfInputs<'_, B::InnerBackend>,
) -> Result<RlhfPrepared<B::InnerBackend>, TrajectoryError>
where
    B: AutodiffBackend,
    R: EpsModel<B::InnerBackend>,
    Ref: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let n = config.n;
    let RlhfInputs {
        cond,
        uncond,
        prompts,
        draw: RlhfDraw { eps, t, renoise },
    } = inputs;
    let rows_cond = cond.repeat_rows(n);
    let rows_uncond = uncond.map(|u| u.repeat_rows(n));
    let generated = generate(
        models.rollout,
        generation,
        eps.clone(),
        &rows_cond,
        rows_uncond.as_ref(),
        rlhf.rollout_cfg,
    );
    let row_prompts = repeat_prompts(prompts, n);
    let generation_scores = score_latents(
        models.decoder,
        models.reward,
        generated.clone(),
        &row_prompts,
    )?;
    let eps = renoise.unwrap_or(eps);
    let noised = noise_and_roll_out(
        models,
        config,
        generated.clone(),
        eps.clone(),
        &rows_cond,
        prompts,
        &t,
    )?;
    let (x_t, timesteps, mut rollout, states) =
        (noised.x_t, noised.timesteps, noised.rollout, noised.states);
    if rlhf.select == RlhfSelect::Generation {
        rollout.scores = generation_scores.clone();
        rollout.selections = generation_scores.chunks(n).map(select_best_worst).collect();
    }

    // Winners then losers, one row each per prompt.
    let prompts_n = prompts.len();
    let chosen: Vec<usize> = (0..prompts_n)
        .map(|p| rollout.winner_row(p, n))
        .chain((0..prompts_n).map(|p| rollout.loser_row(p, n)))
        .collect();
    let chosen_cond = rows_cond.select_rows(&chosen);
    let chosen_eps = select_rows(eps, &chosen);
    let timesteps = timesteps.select(&chosen);
    let ref_timesteps = if rlhf.ref_first_step_only {
        timesteps.first(1)
    } else {
        timesteps.clone()
    };
    let chosen_states: Vec<Tensor<B::InnerBackend, 4>> = states[..ref_timesteps.steps()]
        .iter()
        .map(|s| select_rows(s.clone(), &chosen))
        .collect();
    let refs = reference_losses(
        reference,
        &chosen_states,
        chosen_eps.clone(),
        &chosen_cond,
        &ref_timesteps,
    );
    let gap: Vec<f64> = rollout
        .selections
        .iter()
        .enumerate()
        .map(|(p, s)| {
            let scores = &rollout.scores[p * n..(p + 1) * n];
            (scores[s.winner] - scores[s.loser]) * rlhf.reward_scale
        })
        .collect();
    let tie: Vec<bool> = rollout.selections.iter().map(|s| s.tie).collect();
    Ok(RlhfPrepared {
        x_t: select_rows(x_t, &chosen),
        eps: chosen_eps,
        cond: chosen_cond,
        timesteps,
        refs,
        gap,
        tie,
        rollout,
        generated,
        generation_scores,
    })
}

/// RLHF Diffusion-Sharpening for a batch of prompts. `generation` is a DDIM sampler with the
/// generation step count (25 by default); `models.sampler` supplies the trajectory steps.
/// `reference` is the frozen initial model.
pub fn rlhf_step<B, M, R, Ref, D>(
    models: &StepModels<'_, B, M, R, D>,
    reference: &Ref,
    generation: &Sampler,
    config: &TrajectoryConfig,
    rlhf: &RlhfConfig,
    inputs: RlhfInputs<'_, B::InnerBackend>,
) -> Result<RlhfStep<B>, TrajectoryError>
where
    B: AutodiffBackend,
    M: EpsModel<B>,
    R: EpsModel<B::InnerBackend>,
    Ref: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let prepared = rlhf_prepare(models, reference, generation, config, rlhf, inputs)?;
    let losses = path_losses(
        models.train,
        models.sampler,
        Tensor::from_inner(prepared.x_t.clone()),
        Tensor::from_inner(prepared.eps.clone()),
        &lift_cond::<B>(&prepared.cond),
        &prepared.timesteps,
        config.stride,
        config.detach_between_steps,
    );
    let loss = prepared.loss(losses, rlhf);
    Ok(RlhfStep {
        loss,
        rollout: prepared.rollout,
        generated: prepared.generated,
        generation_scores: prepared.generation_scores,
    })
}
