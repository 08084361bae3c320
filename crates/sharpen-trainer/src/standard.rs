//! Standard fine-tuning (method.md section 9, and the pretraining of tiny models): one random
//! timestep per example, epsilon-MSE.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use sdxl_unet::{UNet2DConditionModel, UNetInput};
use sharpen_schedulers::NoiseSchedule;

use crate::model::TextCond;

/// The UNet input of standard training: clean latents `x0` [batch, c, h, w] noised with `eps`
/// at the per-example timesteps `t`.
pub fn standard_input<B: Backend>(
    schedule: &NoiseSchedule,
    x0: Tensor<B, 4>,
    eps: Tensor<B, 4>,
    t: &[usize],
    cond: &TextCond<B>,
) -> UNetInput<B> {
    let device = x0.device();
    let batch = x0.dims()[0];
    assert_eq!(t.len(), batch, "one timestep per example");
    let coef = |f: fn(f64) -> f64| {
        let v: Vec<f32> = t
            .iter()
            .map(|&t| f(schedule.alphas_cumprod[t]) as f32)
            .collect();
        Tensor::<B, 1>::from_floats(v.as_slice(), &device).reshape([batch, 1, 1, 1])
    };
    let x_t = x0 * coef(f64::sqrt) + eps * coef(|a| (1.0 - a).sqrt());
    let timesteps: Vec<f32> = t.iter().map(|&t| t as f32).collect();
    UNetInput {
        sample: x_t,
        timestep: Tensor::from_floats(timesteps.as_slice(), &device),
        encoder_hidden_states: cond.context.clone(),
        added_cond: cond.added.clone(),
    }
}

/// The eps-MSE loss of `unet` on clean latents `x0` [batch, c, h, w] noised with `eps` at the
/// per-example timesteps `t`: a scalar.
pub fn standard_loss<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    schedule: &NoiseSchedule,
    x0: Tensor<B, 4>,
    eps: Tensor<B, 4>,
    t: &[usize],
    cond: &TextCond<B>,
) -> Tensor<B, 1> {
    // The UNet may compute in bf16/f16; the loss is taken in the latents' dtype.
    let pred = unet
        .forward(standard_input(schedule, x0, eps.clone(), t, cond))
        .cast(eps.dtype());
    (pred - eps).powi_scalar(2).mean()
}
