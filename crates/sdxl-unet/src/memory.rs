//! An estimate of the activations a training forward keeps for backward, from the config alone
//! (for `--dry-run` memory plans): per block, the tensors autodiff saves — norm inputs and
//! outputs, activation inputs, convolution and projection inputs, attention queries, keys, values
//! and the softmaxed score matrix, the feed-forward's GEGLU halves. Counted in elements of one
//! sample; checked against measured CPU peaks by `sharpen-bench`'s tests.

use crate::config::{BlockKind, UNetConfig};

/// Elements saved for backward by one forward of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationEstimate {
    /// Everything, as plain autodiff keeps it until backward.
    pub full: f64,
    /// Block-level gradient checkpointing: the block inputs kept by the graph-free forward plus
    /// the largest single block's activations (recomputed one block at a time).
    pub checkpointed: f64,
}

struct Tally {
    total: f64,
    inputs: f64,
    largest: f64,
}

impl Tally {
    fn block(&mut self, input: f64, saved: f64) {
        self.total += saved;
        self.inputs += input;
        self.largest = self.largest.max(saved);
    }
}

/// ResnetBlock2D: GroupNorm, SiLU, conv, time projection add, GroupNorm, SiLU, conv, shortcut.
fn resnet(t: &mut Tally, c_in: usize, c_out: usize, hw: usize) {
    let (i, o, n) = (c_in as f64, c_out as f64, hw as f64);
    let shortcut = if c_in != c_out { i } else { 0.0 };
    t.block(i * n, (3.0 * i + 5.0 * o + shortcut) * n);
}

/// Transformer2DModel with `layers` BasicTransformerBlocks at `c` channels over `hw` tokens.
fn transformer(t: &mut Tally, c: usize, hw: usize, layers: usize, heads: usize, context: usize) {
    let (c, n, h, s) = (c as f64, hw as f64, heads as f64, context as f64);
    // GroupNorm in/out, proj_in, proj_out, residual.
    t.block(c * n, 5.0 * c * n);
    for _ in 0..layers {
        // Self-attention: norm in/out, q, k, v, scores and softmax, output; cross-attention: norm
        // in/out, q, output, scores and softmax (keys/values of the context are small); GEGLU:
        // norm in/out, projection (8c), gelu input and output (4c each), product, output input.
        let tokens = (2.0 + 3.0 + 2.0) * c + 4.0 * c + (2.0 + 8.0 + 4.0 + 4.0 + 4.0) * c;
        let scores = 2.0 * h * n * n + 2.0 * h * n * s;
        t.block(c * n, tokens * n + scores);
    }
}

impl UNetConfig {
    /// The activation estimate for one sample of `height` x `width` latents and `context` text
    /// tokens.
    pub fn activation_elements(
        &self,
        height: usize,
        width: usize,
        context: usize,
    ) -> ActivationEstimate {
        let mut t = Tally {
            total: 0.0,
            inputs: 0.0,
            largest: 0.0,
        };
        let levels = self.block_out_channels.len();
        let hw = |level: usize| (height >> level).max(1) * (width >> level).max(1);
        // conv_in output (and the first skip).
        let ch0 = self.block_out_channels[0];
        t.block(
            (self.in_channels * hw(0)) as f64,
            ((self.in_channels + ch0) * hw(0)) as f64,
        );
        // One resnet (from `c_in` channels) and, in cross-attention blocks, its transformer.
        let layer = |t: &mut Tally, c_in: usize, level: usize, kind: BlockKind| {
            let out = self.block_out_channels[level];
            resnet(t, c_in, out, hw(level));
            if kind == BlockKind::CrossAttn {
                let layers = self.transformer_layers_per_block[level];
                transformer(t, out, hw(level), layers, self.num_heads[level], context);
            }
        };
        let mut channels = ch0;
        for level in 0..levels {
            let out = self.block_out_channels[level];
            for _ in 0..self.layers_per_block[level] {
                layer(&mut t, channels, level, self.down_blocks[level]);
                channels = out;
            }
            if level + 1 < levels {
                t.block((out * hw(level)) as f64, (out * hw(level)) as f64);
            }
        }
        let last = levels - 1;
        resnet(&mut t, channels, channels, hw(last));
        let layers = self.transformer_layers_per_block[last];
        transformer(
            &mut t,
            channels,
            hw(last),
            layers,
            self.num_heads[last],
            context,
        );
        resnet(&mut t, channels, channels, hw(last));
        for (i, level) in (0..levels).rev().enumerate() {
            let out = self.block_out_channels[level];
            let below = self.block_out_channels[level.saturating_sub(1)];
            let resnets = self.layers_per_block[level] + 1;
            for j in 0..resnets {
                let skip = if j + 1 == resnets { below } else { out };
                layer(&mut t, channels + skip, level, self.up_blocks[i]);
                channels = out;
            }
            if level > 0 {
                // Nearest upsampling to the next level's size, then a conv.
                let up = (out * hw(level - 1)) as f64;
                t.block(up / 4.0, 2.0 * up);
            }
        }
        // conv_norm_out, SiLU, conv_out.
        t.block((channels * hw(0)) as f64, (3 * channels * hw(0)) as f64);
        ActivationEstimate {
            full: t.total,
            checkpointed: t.inputs + t.largest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_grow_with_resolution_and_checkpointing_keeps_less() {
        let c = UNetConfig::mid_sdxl();
        let small = c.activation_elements(32, 32, 77);
        let large = c.activation_elements(64, 64, 77);
        assert!(large.full > 4.0 * small.full, "{small:?} {large:?}");
        assert!(small.checkpointed < small.full / 2.0, "{small:?}");
        // SDXL at 1024 px: tens of GB of f32 activations per sample in plain autodiff.
        let sdxl = UNetConfig::sdxl_base_1_0().activation_elements(128, 128, 77);
        let gib = sdxl.full * 4.0 / (1u64 << 30) as f64;
        assert!((5.0..100.0).contains(&gib), "{gib} GiB");
    }
}
