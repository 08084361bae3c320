//! The VAE's building blocks: its single-head spatial attention and the encoder/decoder levels.

use burn::module::Module;
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use sharpen_nn::{
    multi_head_attention, AttentionMode, Downsample2D, ResnetBlock2D, ResnetBlock2DConfig,
    Upsample2D,
};

/// Every VAE norm and resnet uses eps 1e-6.
pub(crate) const VAE_EPS: f64 = 1e-6;

pub(crate) fn resnet<B: Backend>(
    i: usize,
    o: usize,
    groups: usize,
    device: &B::Device,
) -> ResnetBlock2D<B> {
    ResnetBlock2D::new(
        ResnetBlock2DConfig {
            in_channels: i,
            out_channels: o,
            temb_channels: None,
            groups,
            eps: VAE_EPS,
        },
        device,
    )
}

/// diffusers' `Attention` as the VAE mid block builds it: GroupNorm, one head over all channels,
/// biased projections, residual connection.
#[derive(Module, Debug)]
pub struct VaeAttention<B: Backend> {
    pub group_norm: GroupNorm<B>,
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    /// One-element `Vec` for the checkpoint key `to_out.0`.
    pub to_out: Vec<Linear<B>>,
    pub attention_mode: AttentionMode,
}

impl<B: Backend> VaeAttention<B> {
    pub fn new(channels: usize, groups: usize, device: &B::Device) -> Self {
        let linear = || LinearConfig::new(channels, channels).init(device);
        Self {
            group_norm: GroupNormConfig::new(groups, channels)
                .with_epsilon(VAE_EPS)
                .init(device),
            to_q: linear(),
            to_k: linear(),
            to_v: linear(),
            to_out: vec![linear()],
            // A 1024x1024 image has 16384 latent tokens: bound the score matrix by default.
            attention_mode: AttentionMode::QueryChunks(2048),
        }
    }

    /// x: [batch, c, h, w] -> [batch, c, h, w].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let t = self
            .group_norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let (q, k, v) = (
            self.to_q.forward(t.clone()),
            self.to_k.forward(t.clone()),
            self.to_v.forward(t),
        );
        let out = self.to_out[0].forward(multi_head_attention(q, k, v, 1, self.attention_mode));
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}

/// `UNetMidBlock2D` without time embedding: resnet, attention, resnet.
#[derive(Module, Debug)]
pub struct VaeMidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<VaeAttention<B>>,
}

impl<B: Backend> VaeMidBlock<B> {
    pub fn new(channels: usize, groups: usize, attention: bool, device: &B::Device) -> Self {
        Self {
            resnets: (0..2)
                .map(|_| resnet(channels, channels, groups, device))
                .collect(),
            attentions: if attention {
                vec![VaeAttention::new(channels, groups, device)]
            } else {
                Vec::new()
            },
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.resnets[0].forward(x, None);
        for (j, resnet) in self.resnets[1..].iter().enumerate() {
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(h);
            }
            h = resnet.forward(h, None);
        }
        h
    }
}

/// `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct EncoderBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: Backend> EncoderBlock<B> {
    pub fn new(
        i: usize,
        o: usize,
        layers: usize,
        groups: usize,
        downsample: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            resnets: (0..layers)
                .map(|j| resnet(if j == 0 { i } else { o }, o, groups, device))
                .collect(),
            downsamplers: if downsample {
                vec![Downsample2D::new(o, true, device)]
            } else {
                Vec::new()
            },
        }
    }

    pub fn forward(&self, mut h: Tensor<B, 4>) -> Tensor<B, 4> {
        for r in &self.resnets {
            h = r.forward(h, None);
        }
        for d in &self.downsamplers {
            h = d.forward(h);
        }
        h
    }
}

/// `UpDecoderBlock2D`.
#[derive(Module, Debug)]
pub struct DecoderBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: Backend> DecoderBlock<B> {
    pub fn new(
        i: usize,
        o: usize,
        layers: usize,
        groups: usize,
        upsample: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            resnets: (0..layers)
                .map(|j| resnet(if j == 0 { i } else { o }, o, groups, device))
                .collect(),
            upsamplers: if upsample {
                vec![Upsample2D::new(o, device)]
            } else {
                Vec::new()
            },
        }
    }

    pub fn forward(&self, mut h: Tensor<B, 4>) -> Tensor<B, 4> {
        for r in &self.resnets {
            h = r.forward(h, None);
        }
        for u in &self.upsamplers {
            h = u.forward(h, None);
        }
        h
    }
}
