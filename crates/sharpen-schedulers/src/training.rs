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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::BetaSchedule;
    use burn::tensor::TensorData;

    type B = burn::backend::Flex;

    fn t(v: Vec<f32>) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(v.clone(), [v.len()]), &Default::default())
    }

    fn host(t: Tensor<B, 1>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn noising_targets_and_x0_estimate_are_consistent() {
        let s = NoiseSchedule::new(
            BetaSchedule::ScaledLinear {
                start: 0.00085,
                end: 0.012,
            },
            1000,
        );
        let (x0, noise) = (vec![0.5f32, -1.0, 2.0], vec![1.0f32, 0.25, -0.5]);
        let step = 700;
        let a = s.alphas_cumprod[step];
        let xt = host(add_noise(&s, t(x0.clone()), t(noise.clone()), step));
        for k in 0..3 {
            let want = a.sqrt() * x0[k] as f64 + (1.0 - a).sqrt() * noise[k] as f64;
            assert!((xt[k] as f64 - want).abs() < 1e-6, "{} vs {want}", xt[k]);
        }
        // The exact noise recovers x0.
        let back = host(x0_from_epsilon(&s, t(xt.clone()), t(noise.clone()), step));
        for k in 0..3 {
            assert!((back[k] - x0[k]).abs() < 1e-5, "{back:?}");
        }
        assert_eq!(
            host(target(
                &s,
                PredictionType::Epsilon,
                t(x0.clone()),
                t(noise.clone()),
                step
            )),
            noise
        );
        assert_eq!(
            host(target(
                &s,
                PredictionType::Sample,
                t(x0.clone()),
                t(noise.clone()),
                step
            )),
            x0
        );
        let v = host(target(
            &s,
            PredictionType::VPrediction,
            t(x0.clone()),
            t(noise.clone()),
            step,
        ));
        for k in 0..3 {
            let want = a.sqrt() * noise[k] as f64 - (1.0 - a).sqrt() * x0[k] as f64;
            assert!((v[k] as f64 - want).abs() < 1e-6);
        }
    }
}
