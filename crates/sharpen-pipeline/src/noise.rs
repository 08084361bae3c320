//! Deterministic Gaussian noise from a seed, the same on every backend and machine: SplitMix64
//! then Box-Muller, computed on the host. Per-image seeds are derived from one run seed.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::pipeline::StepNoise;

/// SplitMix64: a small, well-mixed 64-bit generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// `n` standard normal values.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let (u1, u2) = (self.uniform(), self.uniform());
            let r = (-2.0 * u1.ln()).sqrt();
            let theta = std::f64::consts::TAU * u2;
            out.push((r * theta.cos()) as f32);
            out.push((r * theta.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

/// The seed of image `index` of a run: a hash of (run seed, index), so images are independent and
/// reproducible one by one.
pub fn image_seed(run_seed: u64, index: usize) -> u64 {
    SplitMix64::new(run_seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// The run seed of best-of-N candidate `k` under run seed `seed`: candidate 0 is `seed` itself,
/// so best-of-1 is the plain generation; the others are distinct derived seeds.
pub fn candidate_seed(seed: u64, k: usize) -> u64 {
    if k == 0 {
        seed
    } else {
        seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Standard normal tensor [batch, c, h, w] where item `i` comes from `image_seed(run_seed, first + i)`.
pub fn seeded_noise<B: Backend>(
    run_seed: u64,
    first: usize,
    shape: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4> {
    let per = shape[1] * shape[2] * shape[3];
    let values: Vec<f32> = (0..shape[0])
        .flat_map(|i| SplitMix64::new(image_seed(run_seed, first + i)).normals(per))
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_are_standard_and_reproducible() {
        let a = SplitMix64::new(7).normals(100_001);
        assert_eq!(a, SplitMix64::new(7).normals(100_001));
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "mean {mean} var {var}"
        );
        assert_ne!(image_seed(1, 0), image_seed(1, 1));
        assert_ne!(image_seed(1, 0), image_seed(2, 0));
    }
}

/// Noise for stochastic samplers, seeded per step from a run seed (step `i` draws from
/// `image_seed(seed, 1_000_000 + i)`, apart from the per-image initial noise).
#[derive(Debug, Clone, Copy)]
pub struct SeededStepNoise {
    pub seed: u64,
}

impl<B: Backend> StepNoise<B> for SeededStepNoise {
    fn noise(&mut self, step: usize, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
        seeded_noise(image_seed(self.seed, 1_000_000 + step), 0, shape, device)
    }
}
