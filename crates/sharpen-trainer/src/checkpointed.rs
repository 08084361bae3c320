//! Trajectory losses with block-level gradient checkpointing (`sdxl_unet::UNetTape`): the
//! gradients of [`path_losses`](crate::trajectory::path_losses) combined by any loss, without
//! keeping the activations of the m UNet calls.
//!
//! Forward: the m UNet calls run without a graph, each keeping only its blocks' inputs, and the
//! DDIM steps between them on plain tensors. Backward: the combined loss is differentiated with
//! respect to each call's output; then the calls are walked in reverse, each block recomputed from
//! its saved inputs, and d loss / d state carried back through every DDIM step into the previous
//! call's output and input (unless `detach_between_steps`, when each call stands alone).

use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use sdxl_unet::{UNet2DConditionModel, UNetInput};
use sharpen_loss::step_loss;
use sharpen_schedulers::Sampler;

use crate::ddpo::{ddpo_prepare, DdpoConfig, DdpoInputs};
use crate::dpo::{dpo_prepare, sample_rollout, DpoConfig, DpoInputs, Sampling};
use crate::model::{EpsModel, LatentDecoder, TextCond};
use crate::rlhf::{rlhf_prepare, RlhfConfig, RlhfInputs, RlhfStepValue};
use crate::timesteps::{ddim_next_rows, RowTimesteps};
use crate::trajectory::{
    sft_select, Rollout, SftInputs, StepModels, TrajectoryConfig, TrajectoryError,
};

/// [`sft_step`](crate::trajectory::sft_step) with block checkpointing: the same rollout and
/// selection, then the selected trajectories' mean path loss differentiated through
/// [`checkpointed_path_grads`]. Returns the loss value, the UNet's gradients and the rollout.
pub fn sft_grads<B, R, D>(
    models: &StepModels<'_, B, UNet2DConditionModel<B>, R, D>,
    config: &TrajectoryConfig,
    inputs: SftInputs<'_, B::InnerBackend>,
) -> Result<(Tensor<B::InnerBackend, 1>, GradientsParams, Rollout), TrajectoryError>
where
    B: AutodiffBackend,
    R: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let chosen = sft_select(models, config, inputs)?;
    let (value, grads) = checkpointed_path_grads(
        models.train,
        models.sampler,
        chosen.x_t,
        chosen.eps,
        &chosen.cond,
        &chosen.timesteps,
        config.stride,
        config.detach_between_steps,
        |losses| losses.mean(),
    );
    Ok((value, grads, chosen.rollout))
}

/// The value of `loss(path_losses(...))` and its parameter gradients, with block recomputation.
/// `loss` receives each row's path loss L = mean_k mean_{C,H,W} (eps_hat_k - eps)^2, [rows],
/// as [`path_losses`](crate::trajectory::path_losses) computes it, and returns a scalar. The same
/// numbers as `loss(path_losses(...)).backward()` up to float rounding.
#[allow(clippy::too_many_arguments)]
pub fn checkpointed_path_grads<B: AutodiffBackend>(
    unet: &UNet2DConditionModel<B>,
    sampler: &Sampler,
    x_t: Tensor<B::InnerBackend, 4>,
    eps: Tensor<B::InnerBackend, 4>,
    cond: &TextCond<B::InnerBackend>,
    timesteps: &RowTimesteps,
    stride: usize,
    detach_between_steps: bool,
    loss: impl FnOnce(Tensor<B, 1>) -> Tensor<B, 1>,
) -> (Tensor<B::InnerBackend, 1>, GradientsParams) {
    let device = x_t.device();
    let dtype = x_t.dtype();
    let steps = timesteps.steps();
    let mut states = Vec::with_capacity(steps);
    let mut outputs = Vec::with_capacity(steps);
    let mut tapes = Vec::with_capacity(steps);
    let mut x = x_t;
    for k in 0..steps {
        let t = timesteps.at(k);
        let t_rows: Vec<f32> = t.iter().map(|&t| t as f32).collect();
        let (out, tape) = unet.forward_checkpointed(UNetInput {
            sample: x.clone(),
            timestep: Tensor::from_floats(t_rows.as_slice(), &device),
            encoder_hidden_states: cond.context.clone(),
            added_cond: cond.added.clone(),
        });
        let out = out.cast(dtype);
        states.push(x.clone());
        if k + 1 < steps {
            x = ddim_next_rows(sampler, &t, stride, out.clone(), x).0;
        }
        outputs.push(out);
        tapes.push(tape);
    }

    // d loss / d (each call's output), from the loss alone.
    let leaves: Vec<Tensor<B, 4>> = outputs
        .iter()
        .map(|o| Tensor::from_inner(o.clone()).require_grad())
        .collect();
    let target = Tensor::<B, 4>::from_inner(eps);
    let value = loss(
        timesteps.path_loss(
            leaves
                .iter()
                .map(|e| step_loss(e.clone(), target.clone()))
                .collect(),
        ),
    );
    let grads = value.backward();
    let mut direct: Vec<Option<Tensor<B::InnerBackend, 4>>> =
        leaves.iter().map(|e| e.grad(&grads)).collect();

    let mut total = GradientsParams::new();
    // d loss / d x_{t_{k+1}}, carried back from the later calls.
    let mut grad_next: Option<Tensor<B::InnerBackend, 4>> = None;
    for k in (0..steps).rev() {
        let mut grad_out = direct[k].take().unwrap_or_else(|| outputs[k].zeros_like());
        let mut grad_state = None;
        if let Some(g) = grad_next.take() {
            // Through x_{k+1} = ddim(x_k, eps_hat_k): its vector-Jacobian product by autodiff.
            let x_k = Tensor::<B, 4>::from_inner(states[k].clone()).require_grad();
            let e_k = Tensor::<B, 4>::from_inner(outputs[k].clone()).require_grad();
            let t = timesteps.at(k);
            let (next, _) = ddim_next_rows(sampler, &t, stride, e_k.clone(), x_k.clone());
            let grads = (next * Tensor::from_inner(g)).sum().backward();
            if let Some(ge) = e_k.grad(&grads) {
                grad_out = grad_out + ge;
            }
            grad_state = x_k.grad(&grads);
        }
        let tape = tapes.pop().expect("one tape per call");
        let grad_input = tape.backward_with_input(unet, grad_out, &mut total);
        if k > 0 && !detach_between_steps {
            grad_next = Some(match grad_state {
                Some(g) => g + grad_input,
                None => grad_input,
            });
        }
    }
    (value.inner(), total)
}

/// [`rlhf_step`](crate::rlhf::rlhf_step) with block checkpointing: the same generations,
/// rollout, selection and reference losses, then the preference loss over the winners' and
/// losers' path losses differentiated through [`checkpointed_path_grads`].
pub fn rlhf_grads<B, R, Ref, D>(
    models: &StepModels<'_, B, UNet2DConditionModel<B>, R, D>,
    reference: &Ref,
    generation: &Sampler,
    config: &TrajectoryConfig,
    rlhf: &RlhfConfig,
    inputs: RlhfInputs<'_, B::InnerBackend>,
) -> Result<RlhfStepValue<B::InnerBackend>, TrajectoryError>
where
    B: AutodiffBackend,
    R: EpsModel<B::InnerBackend>,
    Ref: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let prepared = rlhf_prepare(models, reference, generation, config, rlhf, inputs)?;
    let (loss, grads) = checkpointed_path_grads(
        models.train,
        models.sampler,
        prepared.x_t.clone(),
        prepared.eps.clone(),
        &prepared.cond,
        &prepared.timesteps,
        config.stride,
        config.detach_between_steps,
        |losses| prepared.loss(losses, rlhf),
    );
    Ok(RlhfStepValue {
        loss,
        grads,
        rollout: prepared.rollout,
        generation_scores: prepared.generation_scores,
    })
}

/// One UNet call of a checkpointed loss: input latents, each row's timestep and conditioning.
pub struct UNetCall<'a, B: Backend> {
    pub x: Tensor<B, 4>,
    pub t: Vec<usize>,
    pub cond: &'a TextCond<B>,
}

/// The value of `loss(outputs)` and its parameter gradients, where `outputs` are the UNet's
/// predictions for `calls` (each in its input's dtype), with block recomputation: for losses
/// that reach the UNet only through these outputs (no chain between the calls). The same
/// numbers as the loss over `unet.forward` outputs differentiated by autodiff, up to rounding.
pub fn checkpointed_calls_grads<B: AutodiffBackend>(
    unet: &UNet2DConditionModel<B>,
    calls: Vec<UNetCall<'_, B::InnerBackend>>,
    loss: impl FnOnce(Vec<Tensor<B, 4>>) -> Tensor<B, 1>,
) -> (Tensor<B::InnerBackend, 1>, GradientsParams) {
    let mut leaves = Vec::with_capacity(calls.len());
    let mut tapes = Vec::with_capacity(calls.len());
    for call in calls {
        let dtype = call.x.dtype();
        let device = call.x.device();
        let t: Vec<f32> = call.t.iter().map(|&t| t as f32).collect();
        let (out, tape) = unet.forward_checkpointed(UNetInput {
            sample: call.x,
            timestep: Tensor::from_floats(t.as_slice(), &device),
            encoder_hidden_states: call.cond.context.clone(),
            added_cond: call.cond.added.clone(),
        });
        leaves.push(Tensor::<B, 4>::from_inner(out.cast(dtype)).require_grad());
        tapes.push(tape);
    }
    let value = loss(leaves.clone());
    let grads = value.backward();
    let mut total = GradientsParams::new();
    for (leaf, tape) in leaves.iter().zip(tapes) {
        if let Some(g) = leaf.grad(&grads) {
            tape.backward_into(unet, g, &mut total);
        }
    }
    (value.inner(), total)
}

/// [`dpo_step`](crate::dpo::dpo_step) with block checkpointing: the same samples, pairs and
/// reference losses, then the trained model's call on the pairs differentiated through
/// [`checkpointed_calls_grads`]. Returns the loss value, the UNet's gradients and the rollout.
pub fn dpo_grads<B, Ref, D>(
    unet: &UNet2DConditionModel<B>,
    reference: &Sampling<'_, Ref, D>,
    config: &DpoConfig,
    inputs: DpoInputs<'_, B::InnerBackend>,
) -> Result<(Tensor<B::InnerBackend, 1>, GradientsParams, Rollout), TrajectoryError>
where
    B: AutodiffBackend,
    Ref: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let prepared = dpo_prepare(reference, config, inputs)?;
    let call = UNetCall {
        x: prepared.x_t.clone(),
        t: prepared.t.clone(),
        cond: &prepared.cond,
    };
    let target = Tensor::<B, 4>::from_inner(prepared.eps.clone());
    let (value, grads) = checkpointed_calls_grads(unet, vec![call], |outputs| {
        let eps_hat = outputs.into_iter().next().expect("one call");
        prepared.loss(step_loss(eps_hat, target), config)
    });
    Ok((value, grads, prepared.rollout))
}

/// [`ddpo_step`](crate::ddpo::ddpo_step) with block checkpointing: the same sampling, rewards
/// and advantages, then the training steps' (guided) predictions differentiated through
/// [`checkpointed_calls_grads`]. Returns the loss value, the UNet's gradients and the rollout.
pub fn ddpo_grads<B, R, D>(
    unet: &UNet2DConditionModel<B>,
    rollout: &Sampling<'_, R, D>,
    config: &DdpoConfig,
    inputs: DdpoInputs<'_, B::InnerBackend>,
) -> Result<(Tensor<B::InnerBackend, 1>, GradientsParams, Rollout), TrajectoryError>
where
    B: AutodiffBackend,
    R: EpsModel<B::InnerBackend>,
    D: LatentDecoder<B::InnerBackend>,
{
    let prepared = ddpo_prepare(rollout, config, inputs)?;
    let (sampler, n) = (rollout.sampler, rollout.n);
    let g = config.rollout_cfg;
    // As `guided_eps`: the unconditional call only when guidance is on.
    let uncond = prepared.uncond.as_ref().filter(|_| g != 1.0);
    let mut calls = Vec::new();
    for &i in &prepared.train_steps {
        let x = &prepared.states[i];
        let t = vec![prepared.timesteps[i] as usize; x.dims()[0]];
        calls.push(UNetCall {
            x: x.clone(),
            t: t.clone(),
            cond: &prepared.cond,
        });
        if let Some(u) = uncond {
            calls.push(UNetCall {
                x: x.clone(),
                t,
                cond: u,
            });
        }
    }
    let per_step = if uncond.is_some() { 2 } else { 1 };
    let (value, grads) = checkpointed_calls_grads(unet, calls, |outputs| {
        let eps: Vec<Tensor<B, 4>> = outputs
            .chunks(per_step)
            .map(|c| match c {
                [e, u] => u.clone() + (e.clone() - u.clone()).mul_scalar(g),
                [e] => e.clone(),
                _ => unreachable!("one or two calls per step"),
            })
            .collect();
        prepared.loss(sampler, config, eps)
    });
    Ok((value, grads, sample_rollout(prepared.scores, n)))
}
