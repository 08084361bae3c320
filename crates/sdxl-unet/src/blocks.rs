//! The UNet's levels: down blocks (`DownBlock2D` / `CrossAttnDownBlock2D`), the mid block
//! (`UNetMidBlock2DCrossAttn`) and up blocks (`UpBlock2D` / `CrossAttnUpBlock2D`). A plain block is
//! a cross-attention block without `attentions`, so one struct serves both and the module paths
//! stay diffusers' keys.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use sharpen_nn::{
    Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, Transformer2DModel, Transformer2DModelConfig,
    Upsample2D,
};

/// What every level shares: time embedding size, groups, eps, cross-attention size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LevelContext {
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
    pub cross_attention_dim: usize,
}

impl LevelContext {
    fn resnet<B: Backend>(&self, i: usize, o: usize, device: &B::Device) -> ResnetBlock2D<B> {
        ResnetBlock2D::new(
            ResnetBlock2DConfig {
                in_channels: i,
                out_channels: o,
                temb_channels: Some(self.temb),
                groups: self.groups,
                eps: self.eps,
            },
            device,
        )
    }

    fn transformer<B: Backend>(
        &self,
        channels: usize,
        heads: usize,
        layers: usize,
        device: &B::Device,
    ) -> Transformer2DModel<B> {
        Transformer2DModel::new(
            Transformer2DModelConfig {
                channels,
                heads,
                layers,
                cross_attention_dim: self.cross_attention_dim,
                groups: self.groups,
            },
            device,
        )
    }
}

/// Attention of one level: `Some((heads, transformer layers))` for cross-attention levels.
pub(crate) type LevelAttention = Option<(usize, usize)>;

#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// One transformer after each resnet; empty for `DownBlock2D`.
    pub attentions: Vec<Transformer2DModel<B>>,
    /// One stride-2 convolution, except on the last level.
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: Backend> DownBlock<B> {
    pub(crate) fn new(
        ctx: &LevelContext,
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        attention: LevelAttention,
        downsample: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            resnets: (0..layers)
                .map(|j| {
                    ctx.resnet(
                        if j == 0 { in_channels } else { out_channels },
                        out_channels,
                        device,
                    )
                })
                .collect(),
            attentions: match attention {
                Some((heads, tl)) => (0..layers)
                    .map(|_| ctx.transformer(out_channels, heads, tl, device))
                    .collect(),
                None => Vec::new(),
            },
            downsamplers: if downsample {
                vec![Downsample2D::new(out_channels, false, device)]
            } else {
                Vec::new()
            },
        }
    }

    /// Returns the output and the skip connections it adds (one per resnet, one after downsampling).
    pub fn forward(
        &self,
        mut h: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(h, context);
            }
            skips.push(h.clone());
        }
        for down in &self.downsamplers {
            h = down.forward(h);
            skips.push(h.clone());
        }
        (h, skips)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) pairs.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
}

impl<B: Backend> MidBlock<B> {
    pub(crate) fn new(
        ctx: &LevelContext,
        channels: usize,
        heads: usize,
        transformer_layers: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            resnets: (0..2)
                .map(|_| ctx.resnet(channels, channels, device))
                .collect(),
            attentions: vec![ctx.transformer(channels, heads, transformer_layers, device)],
        }
    }

    pub fn forward(
        &self,
        h: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let mut h = self.resnets[0].forward(h, Some(temb));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = resnet.forward(attn.forward(h, context), Some(temb));
        }
        h
    }
}

#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

/// Channel plan of one up level, as diffusers' `get_up_block` derives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpChannels {
    /// Channels coming from the level below (the previous up level's output).
    pub prev_output: usize,
    pub output: usize,
    /// Channels of the skip of the matching down level's input.
    pub input: usize,
}

impl<B: Backend> UpBlock<B> {
    pub(crate) fn new(
        ctx: &LevelContext,
        ch: UpChannels,
        layers: usize,
        attention: LevelAttention,
        upsample: bool,
        device: &B::Device,
    ) -> Self {
        let resnets = (0..layers)
            .map(|j| {
                let skip = if j == layers - 1 { ch.input } else { ch.output };
                let from_below = if j == 0 { ch.prev_output } else { ch.output };
                ctx.resnet(from_below + skip, ch.output, device)
            })
            .collect();
        Self {
            resnets,
            attentions: match attention {
                Some((heads, tl)) => (0..layers)
                    .map(|_| ctx.transformer(ch.output, heads, tl, device))
                    .collect(),
                None => Vec::new(),
            },
            upsamplers: if upsample {
                vec![Upsample2D::new(ch.output, device)]
            } else {
                Vec::new()
            },
        }
    }

    /// `skips`: this level's skip connections in the order the down path produced them (the last
    /// is used first). `upsample_size`: the spatial size of the next level's skips.
    pub fn forward(
        &self,
        mut h: Tensor<B, 4>,
        mut skips: Vec<Tensor<B, 4>>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        upsample_size: Option<[usize; 2]>,
    ) -> Tensor<B, 4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().expect("one skip connection per resnet");
            h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(h, context);
            }
        }
        for up in &self.upsamplers {
            h = up.forward(h, upsample_size);
        }
        h
    }
}
