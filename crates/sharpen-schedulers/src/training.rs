//! Training-side pure functions: forward noising, targets and the clean-sample estimate.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::PredictionType;
use crate::schedule::NoiseSchedule;

/// `x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise` for one timestep.
pub fn add_noise<B: Backend, const D: usize>(
    schedule: &NoiseSchedule,
    x0: Tensor<B, D>,
    noise: Tensor<B, D>,
    t: usize,
) -> Tensor<B, D> {
    let a = schedule.alphas_cumprod[t];
    x0.mul_scalar(a.sqrt()) + noise.mul_scalar((1.0 - a).sqrt())
}

/// What the model should predict at `t`: the noise, `v = sqrt(abar) noise - sqrt(1 - abar) x0`,
/// or the clean sample.
pub fn target<B: Backend, const D: usize>(
    schedule: &NoiseSchedule,
    prediction: PredictionType,
    x0: Tensor<B, D>,
    noise: Tensor<B, D>,
    t: usize,
) -> Tensor<B, D> {
    let a = schedule.alphas_cumprod[t];
    match prediction {
        PredictionType::Epsilon => noise,
        PredictionType::VPrediction => noise.mul_scalar(a.sqrt()) - x0.mul_scalar((1.0 - a).sqrt()),
        PredictionType::Sample => x0,
    }
}

/// The one-step clean-sample estimate from an epsilon prediction:
/// `(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`.
pub fn x0_from_epsilon<B: Backend, const D: usize>(
    schedule: &NoiseSchedule,
    x_t: Tensor<B, D>,
    eps: Tensor<B, D>,
    t: usize,
) -> Tensor<B, D> {
    let a = schedule.alphas_cumprod[t];
    (x_t - eps.mul_scalar((1.0 - a).sqrt())).div_scalar(a.sqrt())
}
