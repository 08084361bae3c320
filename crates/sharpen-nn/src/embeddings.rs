//! Sinusoidal timestep embeddings (diffusers' `get_timestep_embedding` / `Timesteps`) and the
//! `TimestepEmbedding` MLP.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// timesteps: [n] (any real values) -> [n, dim]. Frequencies `exp(-ln(10000) i / (dim/2 - shift))`,
/// computed in f32 exactly as diffusers computes them; `[sin, cos]`, or `[cos, sin]` with
/// `flip_sin_to_cos`. An odd `dim` is zero-padded by one column.
pub fn timestep_embedding<B: Backend>(
    timesteps: Tensor<B, 1>,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
) -> Tensor<B, 2> {
    let half = dim / 2;
    let device = timesteps.device();
    let log_period = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|i| (log_period * i as f32 / (half as f32 - freq_shift)).exp())
        .collect();
    let freqs = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), &device).unsqueeze::<2>();
    let args = timesteps.unsqueeze_dim::<2>(1) * freqs;
    let (sin, cos) = (args.clone().sin(), args.cos());
    let emb = if flip_sin_to_cos {
        Tensor::cat(vec![cos, sin], 1)
    } else {
        Tensor::cat(vec![sin, cos], 1)
    };
    if dim % 2 == 1 {
        let n = emb.dims()[0];
        Tensor::cat(vec![emb, Tensor::zeros([n, 1], &device)], 1)
    } else {
        emb
    }
}

/// `linear_1` -> SiLU -> `linear_2`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    pub fn new(in_channels: usize, time_embed_dim: usize, device: &B::Device) -> Self {
        Self {
            linear_1: LinearConfig::new(in_channels, time_embed_dim).init(device),
            linear_2: LinearConfig::new(time_embed_dim, time_embed_dim).init(device),
        }
    }

    /// x: [batch, in_channels] -> [batch, time_embed_dim].
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}
