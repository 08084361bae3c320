//! Means with 95% confidence intervals over independent repeats (seeds): Student's t.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    pub mean: f64,
    /// Half-width of the 95% interval (0 with a single repeat: no spread to measure).
    pub ci95: f64,
    pub n: usize,
}

/// Two-sided 97.5% quantile of Student's t with `dof` degrees of freedom.
fn t975(dof: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match dof {
        0 => f64::NAN,
        d if d <= 30 => TABLE[d - 1],
        _ => 1.960,
    }
}

pub fn mean_ci(values: &[f64]) -> MeanCi {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return MeanCi { mean, ci95: 0.0, n };
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    MeanCi {
        mean,
        ci95: t975(n - 1) * (var / n as f64).sqrt(),
        n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_of_three_seeds() {
        // mean 2, sample sd 1, t(2) = 4.303: half-width 4.303 / sqrt(3).
        let m = mean_ci(&[1.0, 2.0, 3.0]);
        assert_eq!(m.mean, 2.0);
        assert!((m.ci95 - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_ci(&[0.5]).ci95, 0.0);
    }
}
