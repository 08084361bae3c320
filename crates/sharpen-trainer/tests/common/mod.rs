//! The toy world of the trainer tests: eps_theta(x) = w * x, a decoder that is a sigmoid of the
//! first three latent channels, and a brightness reward; plus the same trajectory worked out on
//! the host in f64.
#![allow(dead_code)]

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use sharpen_rewards::{Reward, RewardError, RewardInfo};
use sharpen_schedulers::{Sampler, SamplerKind, SchedulerConfig};
use sharpen_trainer::{EpsModel, LatentDecoder, TextCond};

pub type B = Flex;
pub type AD = Autodiff<Flex>;

#[derive(Debug)]
pub struct Toy<BB: Backend> {
    pub w: Param<Tensor<BB, 1>>,
}

impl<BB: Backend> Toy<BB> {
    pub fn new(w: f32) -> Self {
        Self {
            w: Param::from_tensor(Tensor::from_floats([w], &Default::default())),
        }
    }
}

impl<BB: Backend> EpsModel<BB> for Toy<BB> {
    fn predict(&self, x: Tensor<BB, 4>, _t: usize, _cond: &TextCond<BB>) -> Tensor<BB, 4> {
        x * self.w.val().reshape([1, 1, 1, 1])
    }
}

pub struct SigmoidDecoder;

impl<BB: Backend> LatentDecoder<BB> for SigmoidDecoder {
    fn decode(&self, latents: Tensor<BB, 4>) -> Tensor<BB, 4> {
        sigmoid(latents.narrow(1, 0, 3))
    }
}

pub struct Brightness;

impl<BB: Backend> Reward<BB> for Brightness {
    fn info(&self) -> RewardInfo {
        RewardInfo {
            name: "brightness",
            range: (0.0, 1.0),
            differentiable: false,
        }
    }
    fn score(&self, images: Tensor<BB, 4>, _: &[&str]) -> Result<Tensor<BB, 1>, RewardError> {
        let [b, c, h, w] = images.dims();
        Ok(images.reshape([b, c * h * w]).mean_dim(1).reshape([b]))
    }
}

pub fn sampler() -> Sampler {
    Sampler::new(
        SamplerKind::Ddim { eta: 0.0 },
        &SchedulerConfig::sdxl_base_1_0(),
        25,
    )
}

pub fn tensor<BB: Backend>(values: Vec<f32>, shape: [usize; 4]) -> Tensor<BB, 4> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// Deterministic pseudo-random values in [-1.5, 1.5].
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u64 + 1)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(seed.wrapping_mul(1442695040888963407));
            ((x >> 33) % 3001) as f32 / 1000.0 - 1.5
        })
        .collect()
}

pub fn cond<BB: Backend>(rows: usize) -> TextCond<BB> {
    TextCond {
        context: Tensor::zeros([rows, 2, 4], &Default::default()),
        added: None,
    }
}

pub const PER_ROW: usize = 4 * 2 * 3;

/// The toy trajectory of one row worked out on the host in f64: (step rewards, path loss).
pub fn by_hand(
    x0: &[f32],
    eps: &[f32],
    w: f64,
    t: usize,
    timesteps: &[usize],
    stride: usize,
) -> (Vec<f64>, f64) {
    let a = |t: i64| -> f64 {
        let s = SchedulerConfig::sdxl_base_1_0().schedule;
        if t < 0 {
            s.alpha_bar(0).unwrap()
        } else {
            s.alpha_bar(t).unwrap()
        }
    };
    let at = a(t as i64);
    let mut x: Vec<f64> = x0
        .iter()
        .zip(eps)
        .map(|(&x, &e)| at.sqrt() * x as f64 + (1.0 - at).sqrt() * e as f64)
        .collect();
    let (mut rewards, mut losses) = (Vec::new(), Vec::new());
    for &tk in timesteps {
        let (a1, a2) = (a(tk as i64), a(tk as i64 - stride as i64));
        let eps_hat: Vec<f64> = x.iter().map(|v| w * v).collect();
        let x0_hat: Vec<f64> = x
            .iter()
            .zip(&eps_hat)
            .map(|(v, e)| (v - (1.0 - a1).sqrt() * e) / a1.sqrt())
            .collect();
        // Channels 0..3 of a [4, 2, 3] latent are its first 18 values.
        let pixels = &x0_hat[..18];
        rewards.push(pixels.iter().map(|v| 1.0 / (1.0 + (-v).exp())).sum::<f64>() / 18.0);
        losses.push(
            eps_hat
                .iter()
                .zip(eps)
                .map(|(e, &n)| (e - n as f64).powi(2))
                .sum::<f64>()
                / PER_ROW as f64,
        );
        x = x0_hat
            .iter()
            .zip(&eps_hat)
            .map(|(x0, e)| a2.sqrt() * x0 + (1.0 - a2).sqrt() * e)
            .collect();
    }
    let l = losses.iter().sum::<f64>() / losses.len() as f64;
    (rewards, l)
}

fn alpha_bar(t: i64) -> f64 {
    let s = SchedulerConfig::sdxl_base_1_0().schedule;
    s.alpha_bar(t.max(0)).unwrap()
}

/// The trajectory states x_{t_k} of one row (as `by_hand` walks them).
pub fn states_by_hand(
    x0: &[f32],
    eps: &[f32],
    w: f64,
    t: usize,
    timesteps: &[usize],
    stride: usize,
) -> Vec<Vec<f64>> {
    let at = alpha_bar(t as i64);
    let mut x: Vec<f64> = x0
        .iter()
        .zip(eps)
        .map(|(&x, &e)| at.sqrt() * x as f64 + (1.0 - at).sqrt() * e as f64)
        .collect();
    let mut states = Vec::new();
    for &tk in timesteps {
        states.push(x.clone());
        let (a1, a2) = (alpha_bar(tk as i64), alpha_bar(tk as i64 - stride as i64));
        x = x
            .iter()
            .map(|v| {
                let e = w * v;
                let x0_hat = (v - (1.0 - a1).sqrt() * e) / a1.sqrt();
                a2.sqrt() * x0_hat + (1.0 - a2).sqrt() * e
            })
            .collect();
    }
    states
}

/// 25-step deterministic DDIM generation from `noise` with the toy model (diffusers' DDIM:
/// "leading" timesteps 961, 921, ..., 1, each stepping 40 down, abar(0) below zero).
pub fn generate_by_hand(noise: &[f32], w: f64) -> Vec<f64> {
    let mut x: Vec<f64> = noise.iter().map(|&v| v as f64).collect();
    for i in 0..25 {
        let t = 961 - 40 * i as i64;
        let (a1, a2) = (alpha_bar(t), alpha_bar(t - 40));
        x = x
            .iter()
            .map(|v| {
                let e = w * v;
                let x0_hat = (v - (1.0 - a1).sqrt() * e) / a1.sqrt();
                a2.sqrt() * x0_hat + (1.0 - a2).sqrt() * e
            })
            .collect();
    }
    x
}

/// A reward that scores every image the same: every prompt's trajectories tie.
pub struct Constant;

impl<BB: Backend> Reward<BB> for Constant {
    fn info(&self) -> RewardInfo {
        RewardInfo {
            name: "constant",
            range: (0.0, 0.0),
            differentiable: false,
        }
    }
    fn score(&self, images: Tensor<BB, 4>, _: &[&str]) -> Result<Tensor<BB, 1>, RewardError> {
        Ok(Tensor::zeros([images.dims()[0]], &images.device()))
    }
}

/// An autodiff gradient against its central finite difference: a real gradient (|grad| >
/// `min_grad`) within `rel` of `fd` (relative to |fd|, at least `floor`).
pub fn assert_matches_fd(grad: f64, fd: f64, min_grad: f64, rel: f64, floor: f64) {
    assert!(grad.abs() > min_grad, "the loss has a gradient: {grad}");
    assert!(
        (grad - fd).abs() < rel * fd.abs().max(floor),
        "autodiff {grad} vs finite difference {fd}"
    );
}
