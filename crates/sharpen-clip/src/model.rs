//! transformers' `CLIPModel`: both towers, both projections (no bias) and `logit_scale`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use sdxl_text::ClipTextTransformer;

use crate::config::ClipModelConfig;
use crate::vision::ClipVisionTransformer;

/// Field names equal the checkpoint keys (`vision_model.embeddings.class_embedding`,
/// `visual_projection.weight`, ...). `logit_scale` is a 0-d tensor in checkpoints; it is read by
/// the loader into a plain number (the scores need it, training never does).
#[derive(Module, Debug)]
pub struct ClipModel<B: Backend> {
    pub text_model: ClipTextTransformer<B>,
    pub vision_model: ClipVisionTransformer<B>,
    pub visual_projection: Linear<B>,
    pub text_projection: Linear<B>,
    /// `logit_scale` as stored (the log of the temperature; PickScore multiplies by its exp).
    pub logit_scale: f64,
}

impl<B: Backend> ClipModel<B> {
    pub fn new(config: &ClipModelConfig, device: &B::Device) -> Self {
        let projection = |input| {
            LinearConfig::new(input, config.projection_dim)
                .with_bias(false)
                .init(device)
        };
        Self {
            text_model: ClipTextTransformer::new(&config.text, device),
            vision_model: ClipVisionTransformer::new(&config.vision, device),
            visual_projection: projection(config.vision.hidden_size),
            text_projection: projection(config.text.hidden_size),
            // transformers' `logit_scale_init_value`: log(1 / 0.07).
            logit_scale: 2.6592,
        }
    }

    /// `get_image_features`: pixel_values (normalised) [batch, 3, s, s] -> [batch, projection_dim].
    pub fn image_embeds(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 2> {
        self.visual_projection
            .forward(self.vision_model.forward(pixel_values).pooled)
    }

    /// `get_text_features`: input_ids [batch, seq] -> [batch, projection_dim].
    pub fn text_embeds(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.text_projection
            .forward(self.text_model.forward(input_ids).pooled)
    }

    /// The side of the square image the vision tower takes.
    pub fn image_size(&self) -> usize {
        self.vision_model.image_size
    }
}

/// Row-wise L2 normalisation, as the references do before a cosine: `x / ||x||`.
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt();
    x / norm
}

/// Row-wise cosine of two [batch, dim] tensors: [batch].
pub fn cosine<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 1> {
    let [batch, _] = a.dims();
    (l2_normalize(a) * l2_normalize(b))
        .sum_dim(1)
        .reshape([batch])
}
