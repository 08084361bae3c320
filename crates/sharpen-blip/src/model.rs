//! The ImageReward model: `blip.visual_encoder`, `blip.text_encoder`, `mlp`.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use sharpen_clip::AestheticMlp;

use crate::bert::BertModel;
use crate::config::ImageRewardConfig;
use crate::vit::BlipVit;

/// The package's normalisation of the head's output: `(raw - mean) / std`.
pub const IMAGE_REWARD_MEAN: f64 = 0.16717362830052426;
pub const IMAGE_REWARD_STD: f64 = 1.0333394966054072;

#[derive(Module, Debug)]
pub struct Blip<B: Backend> {
    pub visual_encoder: BlipVit<B>,
    pub text_encoder: BertModel<B>,
}

#[derive(Module, Debug)]
pub struct ImageRewardModel<B: Backend> {
    pub blip: Blip<B>,
    /// Same layout as the LAION aesthetic head (`layers.0/2/4/6/7`), on BERT's [CLS] state.
    pub mlp: AestheticMlp<B>,
}

impl<B: Backend> ImageRewardModel<B> {
    pub fn new(config: &ImageRewardConfig, device: &B::Device) -> Self {
        Self {
            blip: Blip {
                visual_encoder: BlipVit::new(&config.vit, device),
                text_encoder: BertModel::new(&config.bert, device),
            },
            mlp: AestheticMlp::new(config.bert.hidden_size, device),
        }
    }

    /// pixel_values [b, 3, 224, 224] (CLIP-normalised), input_ids and attention_mask [b, 35]
    /// -> normalised rewards [b].
    pub fn forward(
        &self,
        pixel_values: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        let image = self.blip.visual_encoder.forward(pixel_values);
        let text = self
            .blip
            .text_encoder
            .forward(input_ids, attention_mask, image);
        let [b, _, c] = text.dims();
        let cls = text.slice([0..b, 0..1, 0..c]).reshape([b, c]);
        self.mlp
            .forward_raw(cls)
            .sub_scalar(IMAGE_REWARD_MEAN)
            .div_scalar(IMAGE_REWARD_STD)
    }

    pub fn image_size(&self) -> usize {
        self.blip.visual_encoder.image_size
    }
}
