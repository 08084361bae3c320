//! `imagereward`: ImageReward v1.0 on `ImageReward.pt` + `med_config.json` + a bert-base-uncased
//! `vocab.txt`.
//!
//! Reference: image-reward 1.5's `ImageReward.score_gard` (the differentiable path its `score`
//! shares): CLIP preprocessing at 224 px (here on float tensors, as in `clip`), BLIP's tokenizer
//! padded and truncated to 35 tokens, the [CLS] state of the text encoder cross-attending to the
//! ViT tokens, the MLP head, `(raw - 0.16717) / 1.03334`.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use sharpen_blip::{BertTokenizer, ImageRewardModel};
use sharpen_clip::ClipPreprocess;
use sharpen_weights::image_reward::{load_bert_tokenizer, load_image_reward};

use crate::{check_batch, failed, Reward, RewardError, RewardInfo};

/// ImageReward's text length.
pub const IMAGE_REWARD_TOKENS: usize = 35;

pub struct ImageRewardScore<B: Backend> {
    pub model: ImageRewardModel<B>,
    pub tokenizer: BertTokenizer,
    pub preprocess: ClipPreprocess,
}

impl<B: Backend> ImageRewardScore<B> {
    /// `checkpoint`: `ImageReward.pt`; `med_config` and `vocab` default to `med_config.json` and
    /// `vocab.txt` beside it.
    pub fn load(
        checkpoint: &Path,
        med_config: Option<&Path>,
        vocab: Option<&Path>,
        device: &B::Device,
    ) -> Result<Self, RewardError> {
        if checkpoint.is_dir() {
            return Err(failed(
                "imagereward",
                format!(
                    "{} is a folder: `imagereward` takes the ImageReward.pt file",
                    checkpoint.display()
                ),
            ));
        }
        let beside = |name: &str| checkpoint.with_file_name(name);
        let med = med_config
            .map(Path::to_path_buf)
            .unwrap_or_else(|| beside("med_config.json"));
        let vocab = vocab
            .map(Path::to_path_buf)
            .unwrap_or_else(|| beside("vocab.txt"));
        let model =
            load_image_reward(checkpoint, &med, device).map_err(|e| failed("imagereward", e))?;
        let tokenizer = load_bert_tokenizer(&vocab, IMAGE_REWARD_TOKENS)
            .map_err(|e| failed("imagereward", e))?;
        let preprocess = ClipPreprocess::clip(model.image_size());
        Ok(Self {
            model,
            tokenizer,
            preprocess,
        })
    }
}

impl<B: Backend> Reward<B> for ImageRewardScore<B> {
    fn info(&self) -> RewardInfo {
        RewardInfo {
            name: "imagereward",
            range: (f64::NEG_INFINITY, f64::INFINITY),
            differentiable: true,
        }
    }

    fn score(&self, images: Tensor<B, 4>, prompts: &[&str]) -> Result<Tensor<B, 1>, RewardError> {
        let batch = images.dims()[0];
        check_batch("imagereward", batch, prompts.len())?;
        let device = images.device();
        let enc = self
            .tokenizer
            .encode_batch(prompts)
            .map_err(|e| failed("imagereward", e))?;
        let n = self.tokenizer.max_length();
        let ids: Vec<i64> = enc.ids.iter().flatten().map(|&i| i as i64).collect();
        let mask: Vec<f32> = enc
            .attention_mask
            .iter()
            .flatten()
            .map(|&m| m as f32)
            .collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch, n]), &device);
        let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [batch, n]), &device);
        Ok(self.model.forward(self.preprocess.apply(images), ids, mask))
    }
}
