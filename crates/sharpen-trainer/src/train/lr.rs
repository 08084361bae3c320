//! Learning-rate schedules: a factor of the base rate per optimizer step (0-based).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The base rate throughout (method.md's default).
    #[default]
    Constant,
    /// Linear warm-up from 0, then constant.
    Warmup { warmup_steps: usize },
    /// Linear warm-up, then cosine decay to `min_ratio` x the base rate at `total_steps`.
    WarmupCosine {
        warmup_steps: usize,
        total_steps: usize,
        min_ratio: f64,
    },
}

impl LrSchedule {
    /// The factor at optimizer step `step` (0-based).
    pub fn factor(&self, step: usize) -> f64 {
        let warm = |w: usize| {
            if w == 0 {
                1.0
            } else {
                ((step + 1) as f64 / w as f64).min(1.0)
            }
        };
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Warmup { warmup_steps } => warm(warmup_steps),
            LrSchedule::WarmupCosine {
                warmup_steps,
                total_steps,
                min_ratio,
            } => {
                if step < warmup_steps {
                    return warm(warmup_steps);
                }
                let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                let progress = ((step - warmup_steps) as f64 / span).min(1.0);
                min_ratio
                    + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_shape_the_rate() {
        assert_eq!(LrSchedule::Constant.factor(123), 1.0);
        let w = LrSchedule::Warmup { warmup_steps: 4 };
        assert_eq!(
            (0..6).map(|s| w.factor(s)).collect::<Vec<_>>(),
            [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
        );
        let c = LrSchedule::WarmupCosine {
            warmup_steps: 2,
            total_steps: 12,
            min_ratio: 0.1,
        };
        assert_eq!(c.factor(0), 0.5);
        assert_eq!(c.factor(2), 1.0);
        assert!(
            (c.factor(7) - 0.55).abs() < 1e-12,
            "half way: {}",
            c.factor(7)
        );
        assert!((c.factor(12) - 0.1).abs() < 1e-12);
        assert!((c.factor(50) - 0.1).abs() < 1e-12, "stays at the floor");
    }
}
