//! Samplers: DDIM (with eta), DDPM, Euler and Euler ancestral, step for step as diffusers computes
//! them. A `Sampler` holds its timesteps and coefficients; every step takes its index explicitly
//! (no hidden step counter), and stochastic steps take their noise from the caller.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::{PredictionType, SchedulerConfig};
use crate::schedule::spaced_timesteps;

/// Which sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerKind {
    /// DDIM; `eta = 0` is deterministic, `eta = 1` is DDPM-like.
    Ddim { eta: f64 },
    /// DDPM ancestral sampling, variance `fixed_small`.
    Ddpm,
    /// Euler (k-diffusion), deterministic.
    Euler,
    /// Euler ancestral.
    EulerAncestral,
    /// DPM-Solver++ (2M): second-order multistep, first order on the first and last step, with
    /// DPM-Solver's own "leading" spacing; optional Karras sigmas.
    DpmSolverPp2M { karras: bool },
}

impl SamplerKind {
    /// The CLI names: ddim, ddpm, euler, euler-a.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ddim" => Some(Self::Ddim { eta: 0.0 }),
            "ddpm" => Some(Self::Ddpm),
            "euler" => Some(Self::Euler),
            "euler-a" | "euler_a" => Some(Self::EulerAncestral),
            "dpmpp-2m" | "dpmpp_2m" => Some(Self::DpmSolverPp2M { karras: false }),
            "dpmpp-2m-karras" | "dpmpp_2m_karras" => Some(Self::DpmSolverPp2M { karras: true }),
            _ => None,
        }
    }
}

/// One step's results.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend, const D: usize> {
    /// The sample at the next (lower) timestep.
    pub prev_sample: Tensor<B, D>,
    /// The estimate of the clean sample at this step.
    pub pred_original_sample: Tensor<B, D>,
}

/// What a multistep sampler carries from one step to the next. Owned by the caller (one per
/// sampling loop), so a `Sampler` itself holds no mutable state.
#[derive(Debug, Clone)]
pub struct SamplerState<B: Backend, const D: usize> {
    /// The previous step's converted model output (DPM-Solver++: its x0 prediction).
    previous: Option<Tensor<B, D>>,
}

impl<B: Backend, const D: usize> Default for SamplerState<B, D> {
    fn default() -> Self {
        Self { previous: None }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sampler {
    pub kind: SamplerKind,
    pub config: SchedulerConfig,
    /// Integer timesteps, descending.
    timesteps: Vec<i64>,
    /// Euler family: sigma per step plus a final 0 (f32-rounded, as diffusers stores them).
    sigmas: Vec<f64>,
}

/// (x0, eps) from a model output, per prediction type, at cumulative alpha `a`.
pub(crate) fn split<B: Backend, const D: usize>(
    prediction: PredictionType,
    output: Tensor<B, D>,
    sample: Tensor<B, D>,
    a: f64,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
    match prediction {
        PredictionType::Epsilon => (
            (sample - output.clone().mul_scalar(sb)).div_scalar(sa),
            output,
        ),
        PredictionType::Sample => {
            let eps = (sample - output.clone().mul_scalar(sa)).div_scalar(sb);
            (output, eps)
        }
        PredictionType::VPrediction => (
            sample.clone().mul_scalar(sa) - output.clone().mul_scalar(sb),
            output.mul_scalar(sa) + sample.mul_scalar(sb),
        ),
    }
}

impl Sampler {
    pub fn new(kind: SamplerKind, config: &SchedulerConfig, steps: usize) -> Self {
        let train = config.schedule.num_train_timesteps();
        let steps = steps.clamp(1, train - 1);
        if let SamplerKind::DpmSolverPp2M { karras } = kind {
            let (timesteps, sigmas) = crate::dpm::timesteps_and_sigmas(config, steps, karras);
            return Self {
                kind,
                config: config.clone(),
                timesteps,
                sigmas,
            };
        }
        let timesteps = spaced_timesteps(train, steps, config.spacing, config.steps_offset);
        let sigmas = match kind {
            SamplerKind::Euler | SamplerKind::EulerAncestral => {
                let all = config.schedule.sigmas();
                let mut s: Vec<f64> = timesteps
                    .iter()
                    .map(|&t| all[t as usize] as f32 as f64)
                    .collect();
                s.push(0.0);
                s
            }
            _ => Vec::new(),
        };
        Self {
            kind,
            config: config.clone(),
            timesteps,
            sigmas,
        }
    }

    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// Euler family and DPM-Solver++: noise level per step and a final 0; empty for DDIM and DDPM.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    pub fn num_steps(&self) -> usize {
        self.timesteps.len()
    }

    /// The scale of the initial noise: 1 for DDIM/DDPM; for Euler `sqrt(sigma_max^2 + 1)`
    /// (`sigma_max` with trailing/linspace spacing).
    pub fn init_noise_sigma(&self) -> f64 {
        match self.kind {
            SamplerKind::DpmSolverPp2M { .. } => 1.0,
            SamplerKind::Euler | SamplerKind::EulerAncestral => {
                let max = self.sigmas.iter().copied().fold(0.0, f64::max);
                match self.config.spacing {
                    crate::schedule::TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
                    _ => max,
                }
            }
            _ => 1.0,
        }
    }

    /// The UNet input at step `i`: Euler divides by `sqrt(sigma^2 + 1)`; others pass through.
    pub fn scale_model_input<B: Backend, const D: usize>(
        &self,
        sample: Tensor<B, D>,
        i: usize,
    ) -> Tensor<B, D> {
        match self.kind {
            SamplerKind::Euler | SamplerKind::EulerAncestral => {
                let s = self.sigmas[i];
                sample.div_scalar((s * s + 1.0).sqrt())
            }
            _ => sample,
        }
    }

    /// Whether step `i` consumes noise (then `step` needs it).
    pub fn needs_noise(&self, i: usize) -> bool {
        match self.kind {
            SamplerKind::Ddim { eta } => eta > 0.0,
            SamplerKind::Ddpm => self.timesteps[i] > 0,
            SamplerKind::EulerAncestral => true,
            SamplerKind::Euler | SamplerKind::DpmSolverPp2M { .. } => false,
        }
    }

    /// Step `i` (0-based) from `sample` at `timesteps()[i]` to the next timestep. `noise`: a
    /// standard normal tensor shaped like `sample`, required when [`Self::needs_noise`]. `state`
    /// carries multistep history between the steps of one loop (start with `Default::default()`).
    ///
    /// Panics when noise is required and missing, or steps of a multistep sampler are skipped
    /// (programming errors in the caller's loop).
    pub fn step<B: Backend, const D: usize>(
        &self,
        i: usize,
        model_output: Tensor<B, D>,
        sample: Tensor<B, D>,
        noise: Option<Tensor<B, D>>,
        state: &mut SamplerState<B, D>,
    ) -> StepOutput<B, D> {
        let need =
            |noise: Option<Tensor<B, D>>| noise.expect("this step is stochastic: pass its noise");
        match self.kind {
            SamplerKind::Ddim { eta } => {
                let stride = (self.config.schedule.num_train_timesteps() / self.num_steps()) as i64;
                let noise = if eta > 0.0 { Some(need(noise)) } else { None };
                self.ddim_step(
                    self.timesteps[i],
                    self.timesteps[i] - stride,
                    eta,
                    model_output,
                    sample,
                    noise,
                )
            }
            SamplerKind::Ddpm => self.ddpm_step(i, model_output, sample, noise),
            SamplerKind::Euler => self.euler_step(i, model_output, sample),
            SamplerKind::EulerAncestral => {
                self.euler_ancestral_step(i, model_output, sample, need(noise))
            }
            SamplerKind::DpmSolverPp2M { .. } => {
                let out = crate::dpm::step(self, i, model_output, sample, state.previous.take());
                state.previous = Some(out.pred_original_sample.clone());
                out
            }
        }
    }

    fn clip<B: Backend, const D: usize>(&self, x0: Tensor<B, D>) -> Tensor<B, D> {
        if self.config.clip_sample.unwrap_or(true) {
            let r = self.config.clip_sample_range;
            x0.clamp(-r, r)
        } else {
            x0
        }
    }

    /// A DDIM step from timestep `t` to `t_prev` (any stride; `t_prev < 0` uses the final alpha).
    /// Training uses it directly for the sharpening trajectories.
    pub fn ddim_step<B: Backend, const D: usize>(
        &self,
        t: i64,
        t_prev: i64,
        eta: f64,
        model_output: Tensor<B, D>,
        sample: Tensor<B, D>,
        noise: Option<Tensor<B, D>>,
    ) -> StepOutput<B, D> {
        let (a_t, a_prev, variance) = self.ddim_coefficients(t, t_prev);
        let (x0, eps) = split(self.config.prediction, model_output, sample, a_t);
        let x0 = self.clip(x0);
        let std = eta * variance.sqrt();
        let direction = eps.mul_scalar((1.0 - a_prev - std * std).sqrt());
        let mut prev = x0.clone().mul_scalar(a_prev.sqrt()) + direction;
        if let Some(noise) = noise {
            prev = prev + noise.mul_scalar(std);
        }
        StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        }
    }

    /// DDIM's (abar_t, abar_prev, variance) for a step from `t` to `t_prev`; below timestep 0 the
    /// final alpha is 1 (`set_alpha_to_one`) or abar(0).
    fn ddim_coefficients(&self, t: i64, t_prev: i64) -> (f64, f64, f64) {
        let schedule = &self.config.schedule;
        let a_t = schedule.alpha_bar(t).expect("timestep within the schedule");
        let final_alpha = if self.config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        let a_prev = schedule.alpha_bar(t_prev).unwrap_or(final_alpha);
        (
            a_t,
            a_prev,
            ((1.0 - a_prev) / (1.0 - a_t)) * (1.0 - a_t / a_prev),
        )
    }

    /// The Gaussian log-density of `prev_sample` under a stochastic DDIM step from `t` to `t_prev`
    /// (DDPO's policy log-probability): `N(prev; mean, std^2)` with the step's mean and
    /// `std = eta * sqrt(variance)`, averaged over all but the batch dimension, as ddpo-pytorch
    /// does. Returns [batch]. Gradients flow through `model_output` (into the mean).
    ///
    /// Panics when `eta` is 0 (a deterministic step has no density).
    pub fn ddim_log_prob<B: Backend, const D: usize>(
        &self,
        t: i64,
        t_prev: i64,
        eta: f64,
        model_output: Tensor<B, D>,
        sample: Tensor<B, D>,
        prev_sample: Tensor<B, D>,
    ) -> Tensor<B, 1> {
        assert!(
            eta > 0.0,
            "a deterministic DDIM step (eta 0) has no log-probability"
        );
        let (_, _, variance) = self.ddim_coefficients(t, t_prev);
        let std = eta * variance.sqrt();
        let mean = self
            .ddim_step(t, t_prev, eta, model_output, sample, None)
            .prev_sample;
        let z = (prev_sample - mean)
            .powi_scalar(2)
            .div_scalar(2.0 * std * std);
        let log_prob = z
            .neg()
            .sub_scalar(std.ln() + (2.0 * std::f64::consts::PI).sqrt().ln());
        let batch = log_prob.dims()[0];
        log_prob
            .reshape([batch as i32, -1])
            .mean_dim(1)
            .reshape([batch])
    }

    fn ddpm_step<B: Backend, const D: usize>(
        &self,
        i: usize,
        model_output: Tensor<B, D>,
        sample: Tensor<B, D>,
        noise: Option<Tensor<B, D>>,
    ) -> StepOutput<B, D> {
        let schedule = &self.config.schedule;
        let t = self.timesteps[i];
        let a_t = schedule.alpha_bar(t).expect("timestep within the schedule");
        let a_prev = self
            .timesteps
            .get(i + 1)
            .and_then(|&p| schedule.alpha_bar(p))
            .unwrap_or(1.0);
        let (beta_t, beta_prev) = (1.0 - a_t, 1.0 - a_prev);
        let current_alpha = a_t / a_prev;
        let current_beta = 1.0 - current_alpha;
        let (x0, _) = split(self.config.prediction, model_output, sample.clone(), a_t);
        let x0 = self.clip(x0);
        let c_x0 = a_prev.sqrt() * current_beta / beta_t;
        let c_x = current_alpha.sqrt() * beta_prev / beta_t;
        let mut prev = x0.clone().mul_scalar(c_x0) + sample.mul_scalar(c_x);
        if t > 0 {
            let variance = (beta_prev / beta_t * current_beta).max(1e-20);
            prev = prev
                + noise
                    .expect("this step is stochastic: pass its noise")
                    .mul_scalar(variance.sqrt());
        }
        StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        }
    }

    fn euler_x0<B: Backend, const D: usize>(
        &self,
        sigma: f64,
        output: Tensor<B, D>,
        sample: Tensor<B, D>,
    ) -> Tensor<B, D> {
        match self.config.prediction {
            PredictionType::Epsilon => sample - output.mul_scalar(sigma),
            PredictionType::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                output.mul_scalar(-sigma / s2.sqrt()) + sample.div_scalar(s2)
            }
            PredictionType::Sample => output,
        }
    }

    fn euler_step<B: Backend, const D: usize>(
        &self,
        i: usize,
        output: Tensor<B, D>,
        sample: Tensor<B, D>,
    ) -> StepOutput<B, D> {
        let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
        let x0 = self.euler_x0(sigma, output, sample.clone());
        let derivative = (sample.clone() - x0.clone()).div_scalar(sigma);
        StepOutput {
            prev_sample: sample + derivative.mul_scalar(next - sigma),
            pred_original_sample: x0,
        }
    }

    fn euler_ancestral_step<B: Backend, const D: usize>(
        &self,
        i: usize,
        output: Tensor<B, D>,
        sample: Tensor<B, D>,
        noise: Tensor<B, D>,
    ) -> StepOutput<B, D> {
        let (from, to) = (self.sigmas[i], self.sigmas[i + 1]);
        let x0 = self.euler_x0(from, output, sample.clone());
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let down = (to * to - up * up).sqrt();
        let derivative = (sample.clone() - x0.clone()).div_scalar(from);
        let prev = sample + derivative.mul_scalar(down - from) + noise.mul_scalar(up);
        StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    type B = burn::backend::Flex;

    #[test]
    fn ddim_log_prob_is_the_gaussian_density_of_the_step() {
        let sampler = Sampler::new(
            SamplerKind::Ddim { eta: 1.0 },
            &SchedulerConfig::sdxl_base_1_0(),
            25,
        );
        let device = Default::default();
        let t = |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [2, 2]), &device);
        let (eps, x, prev) = (
            t(vec![0.1, -0.3, 0.5, 0.2]),
            t(vec![1.0, 0.5, -0.2, 0.7]),
            t(vec![0.9, 0.4, -0.1, 0.8]),
        );
        let lp = sampler
            .ddim_log_prob(501, 461, 1.0, eps.clone(), x.clone(), prev.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        // By hand, in f64.
        let ac = &sampler.config.schedule.alphas_cumprod;
        let (a, ap) = (ac[501], ac[461]);
        let var = ((1.0 - ap) / (1.0 - a)) * (1.0 - a / ap);
        let std = var.sqrt();
        let host = |t: &Tensor<B, 2>| {
            t.to_data()
                .to_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect::<Vec<_>>()
        };
        let (eps, x, prev) = (host(&eps), host(&x), host(&prev));
        for (b, &got) in lp.iter().enumerate() {
            let mut sum = 0.0;
            for j in 0..2 {
                let k = 2 * b + j;
                let x0 = (x[k] - (1.0 - a).sqrt() * eps[k]) / a.sqrt();
                let mean = ap.sqrt() * x0 + (1.0 - ap - var).sqrt() * eps[k];
                sum += -(prev[k] - mean).powi(2) / (2.0 * var)
                    - std.ln()
                    - (2.0 * std::f64::consts::PI).sqrt().ln();
            }
            let want = sum / 2.0;
            assert!(
                (got as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
                "item {b}: {got} vs {want}"
            );
        }
        // The step's own sample is more likely than a far one.
        let far = sampler.ddim_log_prob(
            501,
            461,
            1.0,
            t(vec![0.1, -0.3, 0.5, 0.2]),
            t(vec![1.0, 0.5, -0.2, 0.7]),
            t(vec![9.0; 4]),
        );
        assert!(far
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .zip(&lp)
            .all(|(f, n)| f < n));
    }
}
