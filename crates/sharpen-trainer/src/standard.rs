//! Standard fine-tuning (method.md section 9, and the pretraining of tiny models): one random
//! timestep per example, the MSE to what the model predicts (the noise for SDXL; `v` or the clean
//! sample for models whose scheduler config says so).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use sdxl_unet::{UNet2DConditionModel, UNetInput};
use sharpen_schedulers::{NoiseSchedule, PredictionType};

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
    assert_eq!(t.len(), x0.dims()[0], "one timestep per example");
    let x_t = x0 * row_coef(schedule, t, f64::sqrt, &device)
        + eps * row_coef(schedule, t, |a| (1.0 - a).sqrt(), &device);
    let timesteps: Vec<f32> = t.iter().map(|&t| t as f32).collect();
    UNetInput {
        sample: x_t,
        timestep: Tensor::from_floats(timesteps.as_slice(), &device),
        encoder_hidden_states: cond.context.clone(),
        added_cond: cond.added.clone(),
    }
}

/// `f(abar_t)` of each row's timestep, shaped [batch, 1, 1, 1] to scale a batch of latents.
fn row_coef<B: Backend>(
    schedule: &NoiseSchedule,
    t: &[usize],
    f: fn(f64) -> f64,
    device: &B::Device,
) -> Tensor<B, 4> {
    let v: Vec<f32> = t
        .iter()
        .map(|&t| f(schedule.alphas_cumprod[t]) as f32)
        .collect();
    Tensor::<B, 1>::from_floats(v.as_slice(), device).reshape([t.len(), 1, 1, 1])
}

/// What the UNet should output for clean latents `x0` noised with `eps` at the per-example
/// timesteps `t` (diffusers' training target): `eps`, `v = sqrt(abar) eps - sqrt(1 - abar) x0`,
/// or `x0`.
pub fn standard_target<B: Backend>(
    schedule: &NoiseSchedule,
    prediction: PredictionType,
    x0: Tensor<B, 4>,
    eps: Tensor<B, 4>,
    t: &[usize],
) -> Tensor<B, 4> {
    assert_eq!(t.len(), x0.dims()[0], "one timestep per example");
    let device = x0.device();
    match prediction {
        PredictionType::Epsilon => eps,
        PredictionType::VPrediction => {
            eps * row_coef(schedule, t, f64::sqrt, &device)
                - x0 * row_coef(schedule, t, |a| (1.0 - a).sqrt(), &device)
        }
        PredictionType::Sample => x0,
    }
}

/// The MSE of `unet`'s output against [`standard_target`] on clean latents `x0` [batch, c, h, w]
/// noised with `eps` at the per-example timesteps `t`: a scalar.
pub fn standard_loss<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    schedule: &NoiseSchedule,
    prediction: PredictionType,
    x0: Tensor<B, 4>,
    eps: Tensor<B, 4>,
    t: &[usize],
    cond: &TextCond<B>,
) -> Tensor<B, 1> {
    let target = standard_target(schedule, prediction, x0.clone(), eps.clone(), t);
    // The UNet may compute in bf16/f16; the loss is taken in the latents' dtype.
    let pred = unet
        .forward(standard_input(schedule, x0, eps, t, cond))
        .cast(target.dtype());
    (pred - target).powi_scalar(2).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use sharpen_schedulers::training::target;
    use sharpen_schedulers::BetaSchedule;

    type B = burn::backend::Flex;

    fn latents(values: impl Fn(usize) -> f32) -> Tensor<B, 4> {
        let v: Vec<f32> = (0..3 * 2 * 2 * 2).map(values).collect();
        Tensor::from_data(TensorData::new(v, [3, 2, 2, 2]), &Default::default())
    }

    fn host(x: Tensor<B, 4>) -> Vec<f32> {
        x.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn each_row_gets_the_target_of_its_own_timestep() {
        let schedule = NoiseSchedule::new(
            BetaSchedule::ScaledLinear {
                start: 0.00085,
                end: 0.012,
            },
            1000,
        );
        let x0 = latents(|i| 0.5 - 0.1 * i as f32);
        let eps = latents(|i| ((i * 7) % 5) as f32 - 2.0);
        let t = [10, 500, 999];
        for prediction in [
            PredictionType::Epsilon,
            PredictionType::VPrediction,
            PredictionType::Sample,
        ] {
            let got = host(standard_target(
                &schedule,
                prediction,
                x0.clone(),
                eps.clone(),
                &t,
            ));
            // Row by row, the scalar form (checked against diffusers in sharpen-schedulers).
            for (r, &step) in t.iter().enumerate() {
                let row = |x: &Tensor<B, 4>| x.clone().narrow(0, r, 1);
                let want = host(target(&schedule, prediction, row(&x0), row(&eps), step));
                assert_eq!(
                    &got[r * 8..(r + 1) * 8],
                    want.as_slice(),
                    "{prediction:?} t={step}"
                );
            }
        }
        // v by hand for one value of the last row: sqrt(abar) eps - sqrt(1 - abar) x0.
        let v = host(standard_target(
            &schedule,
            PredictionType::VPrediction,
            x0.clone(),
            eps.clone(),
            &t,
        ));
        let a = schedule.alphas_cumprod[999];
        let (x, e) = (host(x0)[16], host(eps)[16]);
        let want = a.sqrt() * e as f64 - (1.0 - a).sqrt() * x as f64;
        assert!((v[16] as f64 - want).abs() < 1e-6, "{} vs {want}", v[16]);
        assert!(
            (v[16] - e).abs() > 0.5,
            "v differs from the noise at t = 999"
        );
    }
}
