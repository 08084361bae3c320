//! diffusers' `ResnetBlock2D` (time_embedding_norm "default", output_scale_factor 1).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

#[derive(Debug, Clone, Copy)]
pub struct ResnetBlock2DConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Size of the time embedding projected into the block (`None`: the VAE's blocks).
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
}

#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    pub time_emb_proj: Option<Linear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    /// 1x1 convolution when the channel count changes.
    pub conv_shortcut: Option<Conv2d<B>>,
}

pub(crate) fn conv<B: Backend>(
    i: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new([i, o], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device)
}

impl<B: Backend> ResnetBlock2D<B> {
    pub fn new(c: ResnetBlock2DConfig, device: &B::Device) -> Self {
        let norm = |ch| {
            GroupNormConfig::new(c.groups, ch)
                .with_epsilon(c.eps)
                .init(device)
        };
        Self {
            norm1: norm(c.in_channels),
            conv1: conv(c.in_channels, c.out_channels, 3, 1, 1, device),
            time_emb_proj: c
                .temb_channels
                .map(|t| LinearConfig::new(t, c.out_channels).init(device)),
            norm2: norm(c.out_channels),
            conv2: conv(c.out_channels, c.out_channels, 3, 1, 1, device),
            conv_shortcut: (c.in_channels != c.out_channels)
                .then(|| conv(c.in_channels, c.out_channels, 1, 1, 0, device)),
        }
    }

    /// x: [batch, in, h, w]; temb: [batch, temb_channels] (ignored by blocks without a projection).
    /// Returns [batch, out, h, w].
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h = h + proj
                .forward(silu(temb.clone()))
                .unsqueeze_dims::<4>(&[2, 3]);
        }
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x),
            None => x,
        };
        skip + h
    }
}
