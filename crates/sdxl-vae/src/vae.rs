//! diffusers' `AutoencoderKL`: encoder, decoder, quant convolutions and the diagonal Gaussian
//! posterior.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use sharpen_nn::AttentionMode;

use crate::blocks::{DecoderBlock, EncoderBlock, VaeMidBlock, VAE_EPS};
use crate::config::VaeConfig;

fn conv<B: Backend>(i: usize, o: usize, k: usize, device: &B::Device) -> Conv2d<B> {
    let p = k / 2;
    Conv2dConfig::new([i, o], [k, k])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<EncoderBlock<B>>,
    pub mid_block: VaeMidBlock<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    fn new(c: &VaeConfig, device: &B::Device) -> Self {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let g = c.norm_num_groups;
        Self {
            conv_in: conv(c.in_channels, ch[0], 3, device),
            down_blocks: (0..n)
                .map(|i| {
                    EncoderBlock::new(
                        if i == 0 { ch[0] } else { ch[i - 1] },
                        ch[i],
                        c.layers_per_block,
                        g,
                        i + 1 < n,
                        device,
                    )
                })
                .collect(),
            mid_block: VaeMidBlock::new(ch[n - 1], g, c.mid_block_add_attention, device),
            conv_norm_out: GroupNormConfig::new(g, ch[n - 1])
                .with_epsilon(VAE_EPS)
                .init(device),
            conv_out: conv(ch[n - 1], 2 * c.latent_channels, 3, device),
        }
    }

    /// images: [batch, 3, h, w] in [-1, 1] -> [batch, 2 x latent, h/8, w/8].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.conv_in.forward(x);
        for block in &self.down_blocks {
            h = block.forward(h);
        }
        h = self.mid_block.forward(h);
        self.conv_out.forward(silu(self.conv_norm_out.forward(h)))
    }
}

#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub mid_block: VaeMidBlock<B>,
    pub up_blocks: Vec<DecoderBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    fn new(c: &VaeConfig, device: &B::Device) -> Self {
        let rev: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let g = c.norm_num_groups;
        Self {
            conv_in: conv(c.latent_channels, rev[0], 3, device),
            mid_block: VaeMidBlock::new(rev[0], g, c.mid_block_add_attention, device),
            up_blocks: (0..n)
                .map(|i| {
                    DecoderBlock::new(
                        if i == 0 { rev[0] } else { rev[i - 1] },
                        rev[i],
                        c.layers_per_block + 1,
                        g,
                        i + 1 < n,
                        device,
                    )
                })
                .collect(),
            conv_norm_out: GroupNormConfig::new(g, rev[n - 1])
                .with_epsilon(VAE_EPS)
                .init(device),
            conv_out: conv(rev[n - 1], c.out_channels, 3, device),
        }
    }

    /// latents (after `post_quant_conv`): [batch, latent, h, w] -> images [batch, 3, 8h, 8w].
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.mid_block.forward(self.conv_in.forward(z));
        for block in &self.up_blocks {
            h = block.forward(h);
        }
        self.conv_out.forward(silu(self.conv_norm_out.forward(h)))
    }
}

/// The encoder's output distribution over latents.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian<B: Backend> {
    /// [batch, latent, h, w].
    pub mean: Tensor<B, 4>,
    /// Clamped to [-30, 20] as diffusers does: [batch, latent, h, w].
    pub logvar: Tensor<B, 4>,
}

impl<B: Backend> DiagonalGaussian<B> {
    /// Splits `quant_conv`'s output [batch, 2 x latent, h, w] into mean and log-variance.
    pub fn from_moments(moments: Tensor<B, 4>) -> Self {
        let [mean, logvar] = moments.chunk(2, 1).try_into().expect("two halves");
        Self {
            mean,
            logvar: logvar.clamp(-30.0, 20.0),
        }
    }

    pub fn std(&self) -> Tensor<B, 4> {
        self.logvar.clone().mul_scalar(0.5).exp()
    }

    /// `mean + std * noise`, with the caller's standard-normal `noise` (same shape as `mean`).
    pub fn sample(&self, noise: Tensor<B, 4>) -> Tensor<B, 4> {
        self.mean.clone() + self.std() * noise
    }

    /// The most likely latent: the mean.
    pub fn mode(&self) -> Tensor<B, 4> {
        self.mean.clone()
    }
}

#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
    pub quant_conv: Option<Conv2d<B>>,
    pub post_quant_conv: Option<Conv2d<B>>,
    pub config: VaeConfig,
}

impl<B: Backend> AutoencoderKL<B> {
    pub fn new(config: &VaeConfig, device: &B::Device) -> Self {
        let l = config.latent_channels;
        Self {
            encoder: Encoder::new(config, device),
            decoder: Decoder::new(config, device),
            quant_conv: config.use_quant_conv.then(|| conv(2 * l, 2 * l, 1, device)),
            post_quant_conv: config.use_post_quant_conv.then(|| conv(l, l, 1, device)),
            config: config.clone(),
        }
    }

    /// Bounds the memory of the mid-block attention scores (encoder and decoder).
    pub fn set_attention_mode(&mut self, mode: AttentionMode) {
        for attn in self
            .encoder
            .mid_block
            .attentions
            .iter_mut()
            .chain(self.decoder.mid_block.attentions.iter_mut())
        {
            attn.attention_mode = mode;
        }
    }

    /// The dtype of the parameters (f32 unless loaded otherwise: SDXL's VAE overflows in f16).
    pub fn dtype(&self) -> DType {
        self.encoder.conv_in.weight.val().dtype()
    }

    /// Encoder then `quant_conv`: [batch, 3, h, w] -> [batch, 2 x latent, h/8, w/8]. The input is
    /// cast to the VAE's dtype.
    pub fn encode_moments(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.encoder.forward(images.cast(self.dtype()));
        match &self.quant_conv {
            Some(q) => q.forward(h),
            None => h,
        }
    }

    /// images in [-1, 1]: [batch, 3, h, w] (h, w multiples of 8) -> the latent posterior.
    pub fn encode(&self, images: Tensor<B, 4>) -> DiagonalGaussian<B> {
        DiagonalGaussian::from_moments(self.encode_moments(images))
    }

    /// Unscaled latents [batch, latent, h, w] -> images in about [-1, 1]: [batch, 3, 8h, 8w].
    pub fn decode(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = z.cast(self.dtype());
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z),
            None => z,
        };
        self.decoder.forward(z)
    }

    /// Latents as the UNet sees them: `(z - shift) * scaling_factor`.
    pub fn scale_latents(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let shift = self.config.shift_factor.unwrap_or(0.0);
        z.sub_scalar(shift).mul_scalar(self.config.scaling_factor)
    }

    /// The inverse of [`Self::scale_latents`]: what [`Self::decode`] takes.
    pub fn unscale_latents(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let shift = self.config.shift_factor.unwrap_or(0.0);
        latents
            .div_scalar(self.config.scaling_factor)
            .add_scalar(shift)
    }
}
