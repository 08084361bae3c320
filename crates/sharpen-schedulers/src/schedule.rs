//! The training noise schedule (betas, cumulative alphas, sigmas) and timestep spacing: pure f64
//! math shared by every sampler and by training.

/// diffusers' `beta_schedule`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BetaSchedule {
    /// `linspace(start, end, n)`.
    Linear { start: f64, end: f64 },
    /// `linspace(sqrt(start), sqrt(end), n)^2` (Stable Diffusion, SDXL).
    ScaledLinear { start: f64, end: f64 },
    /// The cosine schedule of improved DDPM, betas capped at 0.999.
    SquaredCosCapV2,
}

/// betas and `alphas_cumprod` (abar) over the training timesteps 0..n.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
}

fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => (0..n)
            .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
            .collect(),
    }
}

impl NoiseSchedule {
    pub fn new(schedule: BetaSchedule, num_train_timesteps: usize) -> Self {
        let n = num_train_timesteps;
        let betas = match schedule {
            BetaSchedule::Linear { start, end } => linspace(start, end, n),
            BetaSchedule::ScaledLinear { start, end } => linspace(start.sqrt(), end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            BetaSchedule::SquaredCosCapV2 => {
                // alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2, in floating point (no
                // integer division).
                let alpha_bar = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                    })
                    .collect()
            }
        };
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        Self {
            betas,
            alphas_cumprod,
        }
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// abar at an integer timestep; `None` below 0 (callers choose the final value).
    pub fn alpha_bar(&self, t: i64) -> Option<f64> {
        usize::try_from(t)
            .ok()
            .and_then(|t| self.alphas_cumprod.get(t).copied())
    }

    /// Karras-style noise level of every training timestep: `sqrt((1 - abar) / abar)`.
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect()
    }
}

/// diffusers' `timestep_spacing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `arange(n) * (T // n)`, reversed, plus `steps_offset` (SDXL: 958, 925, ..., 1 for 30 steps).
    Leading,
    /// `round(arange(T, 0, -T / n)) - 1`.
    Trailing,
    /// `round(linspace(0, T - 1, n))`, reversed.
    Linspace,
}

/// The inference timesteps, descending.
pub fn spaced_timesteps(
    num_train: usize,
    steps: usize,
    spacing: TimestepSpacing,
    steps_offset: usize,
) -> Vec<i64> {
    let t = num_train as f64;
    let mut ts: Vec<i64> = match spacing {
        TimestepSpacing::Leading => {
            let ratio = num_train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t / steps as f64;
            (0..steps)
                .map(|i| round_half_even(t - i as f64 * ratio) as i64 - 1)
                .collect()
        }
        TimestepSpacing::Linspace => linspace(0.0, t - 1.0, steps)
            .into_iter()
            .rev()
            .map(|x| round_half_even(x) as i64)
            .collect(),
    };
    ts.dedup();
    ts
}

/// numpy's `round`: halves to even.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_spacing_of_sdxl() {
        let ts = spaced_timesteps(1000, 30, TimestepSpacing::Leading, 1);
        assert_eq!(&ts[..3], &[958, 925, 892]);
        assert_eq!(*ts.last().unwrap(), 1);
        let ts = spaced_timesteps(1000, 50, TimestepSpacing::Leading, 1);
        assert_eq!((ts[0], ts[1], ts[49]), (981, 961, 1));
    }

    #[test]
    fn trailing_and_linspace_spacing() {
        assert_eq!(
            spaced_timesteps(1000, 4, TimestepSpacing::Trailing, 0),
            vec![999, 749, 499, 249]
        );
        assert_eq!(
            spaced_timesteps(1000, 4, TimestepSpacing::Linspace, 0),
            vec![999, 666, 333, 0]
        );
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(-2.5), -2.0);
    }

    #[test]
    fn cosine_schedule_is_not_broken_by_integer_division() {
        let s = NoiseSchedule::new(BetaSchedule::SquaredCosCapV2, 1000);
        assert!(s.betas[0] > 0.0 && s.betas[0] < 1e-3, "{}", s.betas[0]);
        assert!(s.betas.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*s.betas.last().unwrap(), 0.999);
    }
}
