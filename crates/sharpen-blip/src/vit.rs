//! BLIP's ViT (`blip.visual_encoder.*`): timm's `VisionTransformer` with pre-norm blocks, fused
//! qkv with bias, exact GELU and LayerNorm eps 1e-6. Returns every token after the final norm
//! (what the text encoder cross-attends to).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::VitConfig;

#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    pub proj: Conv2d<B>,
}

#[derive(Module, Debug)]
pub struct VitAttention<B: Backend> {
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    pub num_heads: usize,
}

impl<B: Backend> VitAttention<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, c] = x.dims();
        let h = self.num_heads;
        let d = c / h;
        // [b, n, 3c] -> [3, b, h, n, d]
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, n, 3, h, d])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| {
            qkv.clone()
                .slice([i..i + 1, 0..b, 0..h, 0..n, 0..d])
                .reshape([b, h, n, d])
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let attn = softmax(
            q.matmul(k.swap_dims(2, 3))
                .mul_scalar((d as f64).powf(-0.5)),
            3,
        );
        let out = attn.matmul(v).swap_dims(1, 2).reshape([b, n, c]);
        self.proj.forward(out)
    }
}

#[derive(Module, Debug)]
pub struct VitMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

#[derive(Module, Debug)]
pub struct VitBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: VitAttention<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: VitMlp<B>,
}

impl<B: Backend> VitBlock<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        let h = self
            .mlp
            .fc2
            .forward(gelu(self.mlp.fc1.forward(self.norm2.forward(x.clone()))));
        x + h
    }
}

#[derive(Module, Debug)]
pub struct BlipVit<B: Backend> {
    pub patch_embed: PatchEmbed<B>,
    /// [1, 1, width]
    pub cls_token: Param<Tensor<B, 3>>,
    /// [1, patches + 1, width]
    pub pos_embed: Param<Tensor<B, 3>>,
    pub blocks: Vec<VitBlock<B>>,
    pub norm: LayerNorm<B>,
    pub image_size: usize,
}

impl<B: Backend> BlipVit<B> {
    pub fn new(config: &VitConfig, device: &B::Device) -> Self {
        let w = config.width;
        let p = config.patch_size;
        let norm = || LayerNormConfig::new(w).with_epsilon(1e-6).init(device);
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        Self {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([3, w], [p, p])
                    .with_stride([p, p])
                    .init(device),
            },
            cls_token: Param::from_tensor(Tensor::zeros([1, 1, w], device)),
            pos_embed: Param::from_tensor(Tensor::zeros([1, config.num_patches() + 1, w], device)),
            blocks: (0..config.depth)
                .map(|_| VitBlock {
                    norm1: norm(),
                    attn: VitAttention {
                        qkv: linear(w, 3 * w),
                        proj: linear(w, w),
                        num_heads: config.num_heads,
                    },
                    norm2: norm(),
                    mlp: VitMlp {
                        fc1: linear(w, w * config.mlp_ratio),
                        fc2: linear(w * config.mlp_ratio, w),
                    },
                })
                .collect(),
            norm: norm(),
            image_size: config.image_size,
        }
    }

    /// pixel_values: [batch, 3, s, s] normalised -> [batch, patches + 1, width].
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, _, h, w] = pixel_values.dims();
        assert!(
            h == self.image_size && w == self.image_size,
            "BLIP's ViT takes {0}x{0} inputs, got {h}x{w}",
            self.image_size
        );
        let x = self.patch_embed.proj.forward(pixel_values);
        let [_, c, ph, pw] = x.dims();
        let x = x.reshape([b, c, ph * pw]).swap_dims(1, 2);
        let cls = self.cls_token.val().expand([b, 1, c]);
        let mut x = Tensor::cat(vec![cls, x], 1) + self.pos_embed.val();
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.norm.forward(x)
    }
}
