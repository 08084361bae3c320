//! diffusers' `Transformer2DModel` (continuous input, linear projections as SDXL uses) and its
//! `BasicTransformerBlock` (self-attention, cross-attention, GEGLU feed-forward, three LayerNorms).

use burn::module::Module;
use burn::nn::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::attention::{Attention, AttentionMode};

/// GEGLU: `proj` to twice the inner size, then `hidden * gelu(gate)`.
#[derive(Module, Debug)]
pub struct Geglu<B: Backend> {
    pub proj: Linear<B>,
}

/// diffusers' `FeedForward`: `net = [GEGLU, Dropout, Linear]`. Rust fields cannot be named `0` and
/// `2`, so the checkpoint keys `ff.net.0.proj.*` and `ff.net.2.*` map to `ff.net_0.proj.*` and
/// `ff.net_2.*` (the UNet's key remap table).
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub net_0: Geglu<B>,
    pub net_2: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    pub fn new(dim: usize, device: &B::Device) -> Self {
        let inner = 4 * dim;
        Self {
            net_0: Geglu {
                proj: LinearConfig::new(dim, 2 * inner).init(device),
            },
            net_2: LinearConfig::new(inner, dim).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.net_0.proj.forward(x);
        let [hidden, gate] = h.chunk(2, 2).try_into().expect("two chunks");
        self.net_2.forward(hidden * gelu(gate))
    }
}

#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn1: Attention<B>,
    pub norm2: LayerNorm<B>,
    pub attn2: Attention<B>,
    pub norm3: LayerNorm<B>,
    pub ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    pub fn new(
        dim: usize,
        heads: usize,
        dim_head: usize,
        cross_attention_dim: usize,
        device: &B::Device,
    ) -> Self {
        let norm = || LayerNormConfig::new(dim).with_epsilon(1e-5).init(device);
        Self {
            norm1: norm(),
            attn1: Attention::new(dim, None, heads, dim_head, false, device),
            norm2: norm(),
            attn2: Attention::new(
                dim,
                Some(cross_attention_dim),
                heads,
                dim_head,
                false,
                device,
            ),
            norm3: norm(),
            ff: FeedForward::new(dim, device),
        }
    }

    /// x: [batch, tokens, dim]; context: [batch, context_tokens, cross_attention_dim].
    pub fn forward(&self, x: Tensor<B, 3>, context: &Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self
            .attn2
            .forward(self.norm2.forward(x.clone()), Some(context.clone()))
            + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Transformer2DModelConfig {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub cross_attention_dim: usize,
    pub groups: usize,
}

/// GroupNorm (eps 1e-6) -> tokens -> `proj_in` -> blocks -> `proj_out` -> image, plus the input.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    pub norm: GroupNorm<B>,
    pub proj_in: Linear<B>,
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    pub proj_out: Linear<B>,
}

impl<B: Backend> Transformer2DModel<B> {
    pub fn new(c: Transformer2DModelConfig, device: &B::Device) -> Self {
        let dim_head = c.channels / c.heads;
        Self {
            norm: GroupNormConfig::new(c.groups, c.channels)
                .with_epsilon(1e-6)
                .init(device),
            proj_in: LinearConfig::new(c.channels, c.channels).init(device),
            transformer_blocks: (0..c.layers)
                .map(|_| {
                    BasicTransformerBlock::new(
                        c.channels,
                        c.heads,
                        dim_head,
                        c.cross_attention_dim,
                        device,
                    )
                })
                .collect(),
            proj_out: LinearConfig::new(c.channels, c.channels).init(device),
        }
    }

    /// Sets how every attention layer computes (see [`AttentionMode`]).
    pub fn set_attention_mode(&mut self, mode: AttentionMode) {
        for block in &mut self.transformer_blocks {
            block.attn1.attention_mode = mode;
            block.attn2.attention_mode = mode;
        }
    }

    /// x: [batch, channels, h, w]; context: [batch, tokens, cross_attention_dim].
    pub fn forward(&self, x: Tensor<B, 4>, context: &Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let tokens = self
            .norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let mut t = self.proj_in.forward(tokens);
        for block in &self.transformer_blocks {
            t = block.forward(t, context);
        }
        let out = self
            .proj_out
            .forward(t)
            .swap_dims(1, 2)
            .reshape([b, c, h, w]);
        out + x
    }
}
