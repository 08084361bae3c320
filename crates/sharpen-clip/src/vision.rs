//! transformers' `CLIPVisionTransformer` (`vision_model.*` in checkpoints).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use sdxl_text::{ClipEncoder, ClipEncoderShape};

use crate::config::ClipVisionConfig;

#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings<B: Backend> {
    /// The learned class token: [hidden].
    pub class_embedding: Param<Tensor<B, 1>>,
    /// Patchify: conv with kernel = stride = patch_size, no bias.
    pub patch_embedding: Conv2d<B>,
    /// [num_patches + 1, hidden].
    pub position_embedding: Embedding<B>,
}

#[derive(Module, Debug)]
pub struct ClipVisionTransformer<B: Backend> {
    pub embeddings: ClipVisionEmbeddings<B>,
    /// transformers' spelling.
    pub pre_layrnorm: LayerNorm<B>,
    pub encoder: ClipEncoder<B>,
    pub post_layernorm: LayerNorm<B>,
    pub image_size: usize,
}

/// What the vision tower returns.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput<B: Backend> {
    /// The last layer's output: [batch, patches + 1, hidden] (no final norm, as transformers).
    pub last_hidden_state: Tensor<B, 3>,
    /// `post_layernorm` of the class token: [batch, hidden].
    pub pooled: Tensor<B, 2>,
}

impl<B: Backend> ClipVisionTransformer<B> {
    pub fn new(config: &ClipVisionConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        let p = config.patch_size;
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        Self {
            embeddings: ClipVisionEmbeddings {
                class_embedding: Param::from_tensor(Tensor::zeros([h], device)),
                patch_embedding: Conv2dConfig::new([config.num_channels, h], [p, p])
                    .with_stride([p, p])
                    .with_bias(false)
                    .init(device),
                position_embedding: EmbeddingConfig::new(config.num_positions(), h).init(device),
            },
            pre_layrnorm: norm(),
            encoder: ClipEncoder::new(
                &ClipEncoderShape {
                    hidden: h,
                    intermediate: config.intermediate_size,
                    layers: config.num_layers,
                    heads: config.num_heads,
                    activation: config.activation,
                    layer_norm_eps: config.layer_norm_eps,
                },
                device,
            ),
            post_layernorm: norm(),
            image_size: config.image_size,
        }
    }

    /// pixel_values: [batch, channels, image_size, image_size], already normalised.
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> ClipVisionOutput<B> {
        let [batch, _, height, width] = pixel_values.dims();
        assert!(
            height == self.image_size && width == self.image_size,
            "the CLIP vision tower takes {0}x{0} inputs, got {height}x{width}",
            self.image_size
        );
        let device = pixel_values.device();
        let patches = self.embeddings.patch_embedding.forward(pixel_values);
        let [_, hidden, ph, pw] = patches.dims();
        let patches = patches.reshape([batch, hidden, ph * pw]).swap_dims(1, 2);
        let class = self
            .embeddings
            .class_embedding
            .val()
            .reshape([1, 1, hidden])
            .expand([batch, 1, hidden]);
        let tokens = ph * pw + 1;
        let positions = Tensor::<B, 1, Int>::arange(0..tokens as i64, &device).unsqueeze::<2>();
        let mut h = Tensor::cat(vec![class, patches], 1)
            + self.embeddings.position_embedding.forward(positions);
        h = self.pre_layrnorm.forward(h);
        for layer in &self.encoder.layers {
            h = layer.forward(h, None);
        }
        let pooled = self
            .post_layernorm
            .forward(h.clone().slice([0..batch, 0..1, 0..hidden]))
            .reshape([batch, hidden]);
        ClipVisionOutput {
            last_hidden_state: h,
            pooled,
        }
    }
}
