//! diffusers' `UNet2DConditionModel` as SDXL uses it.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use sharpen_nn::{timestep_embedding, AttentionMode, TimestepEmbedding};

use crate::blocks::{DownBlock, LevelContext, MidBlock, UpBlock, UpChannels};
use crate::config::{BlockKind, UNetConfig};

/// SDXL's added conditioning.
#[derive(Debug, Clone)]
pub struct AddedCond<B: Backend> {
    /// Pooled text embedding of text encoder 2: [batch, 1280].
    pub text_embeds: Tensor<B, 2>,
    /// (orig_h, orig_w, crop_top, crop_left, target_h, target_w): [batch, 6].
    pub time_ids: Tensor<B, 2>,
}

/// One UNet evaluation.
#[derive(Debug, Clone)]
pub struct UNetInput<B: Backend> {
    /// Noisy latents: [batch, in_channels, h, w].
    pub sample: Tensor<B, 4>,
    /// Diffusion timestep per batch item: [batch].
    pub timestep: Tensor<B, 1>,
    /// Text conditioning: [batch, tokens, cross_attention_dim].
    pub encoder_hidden_states: Tensor<B, 3>,
    /// Required when the config has `addition_embed_type: "text_time"` (SDXL).
    pub added_cond: Option<AddedCond<B>>,
}

#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub time_embedding: TimestepEmbedding<B>,
    /// `text_time` added conditioning (`add_embedding` in checkpoints).
    pub add_embedding: Option<TimestepEmbedding<B>>,
    pub down_blocks: Vec<DownBlock<B>>,
    pub mid_block: MidBlock<B>,
    pub up_blocks: Vec<UpBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
    pub config: UNetConfig,
}

fn conv3<B: Backend>(i: usize, o: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([i, o], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Builds the model with freshly initialised weights (load a checkpoint over them).
    pub fn new(config: &UNetConfig, device: &B::Device) -> Self {
        let c = &config.block_out_channels;
        let n = c.len();
        let ctx = LevelContext {
            temb: config.time_embed_dim(),
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            cross_attention_dim: config.cross_attention_dim,
        };
        let attention = |kind: BlockKind, level: usize, layers: usize| match kind {
            BlockKind::CrossAttn => Some((config.num_heads[level], layers)),
            BlockKind::Plain => None,
        };
        let down_blocks = (0..n)
            .map(|i| {
                let input = if i == 0 { c[0] } else { c[i - 1] };
                let att = attention(
                    config.down_blocks[i],
                    i,
                    config.transformer_layers_per_block[i],
                );
                DownBlock::new(
                    &ctx,
                    input,
                    c[i],
                    config.layers_per_block[i],
                    att,
                    i + 1 < n,
                    device,
                )
            })
            .collect();
        let up_blocks = (0..n)
            .map(|i| {
                // Up level i mirrors down level n - 1 - i.
                let level = n - 1 - i;
                let ch = UpChannels {
                    prev_output: if i == 0 { c[n - 1] } else { c[level + 1] },
                    output: c[level],
                    input: c[level.saturating_sub(1)],
                };
                let att = attention(
                    config.up_blocks[i],
                    level,
                    config.transformer_layers_per_block[level],
                );
                UpBlock::new(
                    &ctx,
                    ch,
                    config.layers_per_block[level] + 1,
                    att,
                    i + 1 < n,
                    device,
                )
            })
            .collect();
        let time_in = c[0];
        Self {
            conv_in: conv3(config.in_channels, c[0], device),
            time_embedding: TimestepEmbedding::new(time_in, ctx.temb, device),
            add_embedding: config
                .text_time
                .map(|tt| TimestepEmbedding::new(tt.input_dim, ctx.temb, device)),
            down_blocks,
            mid_block: MidBlock::new(
                &ctx,
                c[n - 1],
                config.num_heads[n - 1],
                config.transformer_layers_per_block[n - 1],
                device,
            ),
            up_blocks,
            conv_norm_out: GroupNormConfig::new(config.norm_num_groups, c[0])
                .with_epsilon(config.norm_eps)
                .init(device),
            conv_out: conv3(c[0], config.out_channels, device),
            config: config.clone(),
        }
    }

    /// The dtype of the parameters (and of the computation).
    pub fn dtype(&self) -> DType {
        self.conv_in.weight.val().dtype()
    }

    /// Bounds the memory of every attention layer's scores (see [`AttentionMode`]).
    pub fn set_attention_mode(&mut self, mode: AttentionMode) {
        let transformers = self
            .down_blocks
            .iter_mut()
            .flat_map(|b| b.attentions.iter_mut())
            .chain(self.mid_block.attentions.iter_mut())
            .chain(
                self.up_blocks
                    .iter_mut()
                    .flat_map(|b| b.attentions.iter_mut()),
            );
        for t in transformers {
            t.set_attention_mode(mode);
        }
    }

    /// SDXL's added-condition embedding: `add_embedding([text_embeds, sinusoidal(time_ids)])`:
    /// [batch, time_embed_dim]. `None` for UNets without `text_time` conditioning.
    pub fn added_embedding(&self, added: &AddedCond<B>) -> Option<Tensor<B, 2>> {
        let (add, tt) = (self.add_embedding.as_ref()?, self.config.text_time?);
        let cfg = &self.config;
        let [batch, ids] = added.time_ids.dims();
        let time = timestep_embedding(
            added.time_ids.clone().reshape([batch * ids]),
            tt.time_embed_dim,
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
        )
        .reshape([batch, ids * tt.time_embed_dim]);
        let dtype = self.dtype();
        let text = added.text_embeds.clone().cast(dtype);
        Some(add.forward(Tensor::cat(vec![text, time.cast(dtype)], 1)))
    }

    /// The embedding every resnet receives: `time_embedding(sinusoidal(timestep))`, plus the
    /// added-condition embedding when the UNet has one: [batch, time_embed_dim].
    ///
    /// Panics when the UNet has `text_time` conditioning and `added` is `None`.
    pub fn embed_time(&self, timestep: Tensor<B, 1>, added: Option<&AddedCond<B>>) -> Tensor<B, 2> {
        let cfg = &self.config;
        let t = timestep_embedding(
            timestep,
            cfg.block_out_channels[0],
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
        );
        let emb = self.time_embedding.forward(t.cast(self.dtype()));
        match (&self.add_embedding, added) {
            (Some(_), Some(added)) => emb + self.added_embedding(added).expect("text_time UNet"),
            (Some(_), None) => {
                panic!("this UNet has text_time conditioning: UNetInput::added_cond is required")
            }
            (None, _) => emb,
        }
    }

    /// Predicts noise (or v, per the scheduler's prediction type): [batch, out_channels, h, w].
    pub fn forward(&self, input: UNetInput<B>) -> Tensor<B, 4> {
        // 1. time
        let emb = self.embed_time(input.timestep, input.added_cond.as_ref());
        // Inputs follow the parameters' dtype (f32, or bf16/f16 when loaded so).
        let dtype = self.dtype();
        let context = input.encoder_hidden_states.cast(dtype);
        // 2. pre-process
        let mut h = self.conv_in.forward(input.sample.cast(dtype));
        // 3. down
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            let (out, res) = block.forward(h, &emb, &context);
            h = out;
            skips.extend(res);
        }
        // 4. mid
        h = self.mid_block.forward(h, &emb, &context);
        // 5. up
        for block in &self.up_blocks {
            let level_skips = skips.split_off(skips.len() - block.resnets.len());
            // Upsample to the next level's skip size (differs from 2x for odd sizes).
            let size = skips.last().map(|s| {
                let [_, _, hh, ww] = s.dims();
                [hh, ww]
            });
            h = block.forward(h, level_skips, &emb, &context, size);
        }
        // 6. post-process
        self.conv_out.forward(silu(self.conv_norm_out.forward(h)))
    }
}
