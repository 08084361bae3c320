//! DPM-Solver++ 2M as diffusers' `DPMSolverMultistepScheduler` computes it (solver_order 2,
//! dpmsolver++, midpoint, lower_order_final, final_sigmas_type zero).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::{PredictionType, SchedulerConfig};
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::{round_half_even, TimestepSpacing};

/// Timesteps and sigmas (with a final 0), f32-rounded as diffusers stores the sigmas.
pub(crate) fn timesteps_and_sigmas(
    config: &SchedulerConfig,
    steps: usize,
    karras: bool,
) -> (Vec<i64>, Vec<f64>) {
    let train = config.schedule.num_train_timesteps();
    // DPM-Solver's own spacing: `steps + 1` points, the last dropped.
    let timesteps: Vec<i64> = match config.spacing {
        TimestepSpacing::Leading => {
            let ratio = train / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + config.steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = train as f64 / steps as f64;
            (0..steps)
                .map(|i| round_half_even(train as f64 - i as f64 * ratio) as i64 - 1)
                .collect()
        }
        TimestepSpacing::Linspace => (1..=steps)
            .rev()
            .map(|i| round_half_even((train - 1) as f64 * i as f64 / steps as f64) as i64)
            .collect(),
    };
    // diffusers computes the training sigmas in f32.
    let all: Vec<f64> = config
        .schedule
        .sigmas()
        .into_iter()
        .map(|s| s as f32 as f64)
        .collect();
    let (timesteps, mut sigmas) = if karras {
        let (min, max) = (all[0], all[train - 1]);
        let rho = 7.0;
        let sigmas: Vec<f64> = (0..steps)
            .map(|i| {
                let ramp = if steps == 1 {
                    0.0
                } else {
                    i as f64 / (steps - 1) as f64
                };
                (max.powf(1.0 / rho) + ramp * (min.powf(1.0 / rho) - max.powf(1.0 / rho))).powf(rho)
            })
            .collect();
        let log_sigmas: Vec<f64> = all.iter().map(|s| s.ln()).collect();
        let ts = sigmas
            .iter()
            .map(|&s| round_half_even(sigma_to_t(s, &log_sigmas)) as i64)
            .collect();
        (ts, sigmas)
    } else {
        let sigmas = timesteps.iter().map(|&t| all[t as usize]).collect();
        (timesteps, sigmas)
    };
    sigmas.push(0.0);
    (
        timesteps,
        sigmas.into_iter().map(|s| s as f32 as f64).collect(),
    )
}

/// The (fractional) training timestep of a noise level, by interpolation in log-sigma.
fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    let low = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(n - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// (alpha_t, sigma_t) of the VP form of a noise level.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

pub(crate) fn step<B: Backend, const D: usize>(
    sampler: &Sampler,
    i: usize,
    model_output: Tensor<B, D>,
    sample: Tensor<B, D>,
    previous: Option<Tensor<B, D>>,
) -> StepOutput<B, D> {
    let sigmas = sampler.sigmas();
    let (s0, t) = (sigmas[i], sigmas[i + 1]);
    let (alpha_s0, sigma_s0) = alpha_sigma(s0);
    let x0 = match sampler.config.prediction {
        PredictionType::Epsilon => {
            (sample.clone() - model_output.mul_scalar(sigma_s0)).div_scalar(alpha_s0)
        }
        PredictionType::Sample => model_output,
        PredictionType::VPrediction => {
            sample.clone().mul_scalar(alpha_s0) - model_output.mul_scalar(sigma_s0)
        }
    };
    let (alpha_t, sigma_t) = alpha_sigma(t);
    let h = lambda(t) - lambda(s0);
    let last = i + 1 == sampler.num_steps();
    let lower_second = i + 2 == sampler.num_steps() && sampler.num_steps() < 15;
    let prev = match previous {
        Some(m1) if i > 0 && !last && !lower_second => {
            let h0 = lambda(s0) - lambda(sigmas[i - 1]);
            let r0 = h0 / h;
            let d1 = (x0.clone() - m1).div_scalar(r0);
            let c = alpha_t * ((-h).exp() - 1.0);
            sample.mul_scalar(sigma_t / sigma_s0)
                - x0.clone().mul_scalar(c)
                - d1.mul_scalar(0.5 * c)
        }
        None if i > 0 => panic!("DPM-Solver++ step {i} without the previous step's state"),
        _ => {
            sample.mul_scalar(sigma_t / sigma_s0)
                - x0.clone().mul_scalar(alpha_t * ((-h).exp() - 1.0))
        }
    };
    StepOutput {
        prev_sample: prev,
        pred_original_sample: x0,
    }
}
