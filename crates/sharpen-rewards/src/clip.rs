//! `clip` (CLIP image-text cosine) and `pickscore` (`logit_scale.exp() * cosine`), on a
//! transformers `CLIPModel` folder.
//!
//! Reference: transformers 5.24 `CLIPModel.get_image_features` / `get_text_features` on pixel
//! values from torchvision on float tensors (shortest side to `size`, antialiased bicubic, centre
//! crop, CLIP mean/std, as `preprocessor_config.json` gives them); text padded to 77 tokens.
//! PickScore v1 is this reward on its checkpoint (the paper's `logits_per_image`, without the
//! optional softmax over images).

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use sdxl_text::ClipTokenizer;
use sharpen_clip::{cosine, ClipModel, ClipPreprocess};
use sharpen_weights::clip::{load_clip_model, load_clip_preprocess};
use sharpen_weights::text::load_clip_tokenizer;
use sharpen_weights::LoadOptions;

use crate::{check_batch, Reward, RewardError, RewardInfo};

/// What a CLIP-based score reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClipScoreKind {
    /// `scale * cosine` (1 for the raw cosine in [-1, 1]; the paper's training reward uses 100).
    Cosine { scale: f64 },
    /// PickScore: `exp(logit_scale) * cosine`.
    PickScore,
}

/// A CLIP model with its tokenizer and preprocessing, as one reward.
pub struct ClipScore<B: Backend> {
    pub model: ClipModel<B>,
    pub tokenizer: ClipTokenizer,
    pub preprocess: ClipPreprocess,
    pub kind: ClipScoreKind,
}

pub(crate) fn failed(reward: &'static str, e: impl std::fmt::Display) -> RewardError {
    RewardError::Failed {
        reward,
        message: e.to_string(),
    }
}

/// Loads model, tokenizer and preprocessing from one transformers `CLIPModel` folder.
pub(crate) fn load_parts<B: Backend>(
    reward: &'static str,
    dir: &Path,
    device: &B::Device,
) -> Result<(ClipModel<B>, ClipTokenizer, ClipPreprocess), RewardError> {
    if !dir.is_dir() {
        return Err(failed(
            reward,
            format!(
                "{} is not a folder: `{reward}` takes a transformers CLIPModel folder (config.json, \
                 model.safetensors, preprocessor_config.json, tokenizer files)",
                dir.display()
            ),
        ));
    }
    let model =
        load_clip_model(dir, &LoadOptions::default(), device).map_err(|e| failed(reward, e))?;
    let tokenizer = load_clip_tokenizer(dir).map_err(|e| failed(reward, e))?;
    let preprocess = load_clip_preprocess(dir).map_err(|e| failed(reward, e))?;
    if preprocess.output_size() != model.image_size() {
        return Err(failed(
            reward,
            format!(
                "{}: preprocessor_config.json crops to {} px but the vision tower takes {} px",
                dir.display(),
                preprocess.output_size(),
                model.image_size()
            ),
        ));
    }
    Ok((model, tokenizer, preprocess))
}

/// Token ids of the prompts, padded to the tokenizer's length: [batch, 77].
pub(crate) fn token_ids<B: Backend>(
    reward: &'static str,
    tokenizer: &ClipTokenizer,
    prompts: &[&str],
    device: &B::Device,
) -> Result<Tensor<B, 2, Int>, RewardError> {
    let ids = tokenizer
        .encode_batch(prompts)
        .map_err(|e| failed(reward, e))?;
    let len = tokenizer.max_length();
    let flat: Vec<i64> = ids.iter().flatten().map(|&i| i as i64).collect();
    Ok(Tensor::from_data(
        TensorData::new(flat, [prompts.len(), len]),
        device,
    ))
}

impl<B: Backend> ClipScore<B> {
    /// `clip`: the cosine, times `scale`.
    pub fn load_clip(dir: &Path, scale: f64, device: &B::Device) -> Result<Self, RewardError> {
        let (model, tokenizer, preprocess) = load_parts("clip", dir, device)?;
        Ok(Self {
            model,
            tokenizer,
            preprocess,
            kind: ClipScoreKind::Cosine { scale },
        })
    }

    /// `pickscore`: a PickScore v1 folder.
    pub fn load_pickscore(dir: &Path, device: &B::Device) -> Result<Self, RewardError> {
        let (model, tokenizer, preprocess) = load_parts("pickscore", dir, device)?;
        Ok(Self {
            model,
            tokenizer,
            preprocess,
            kind: ClipScoreKind::PickScore,
        })
    }

    fn name(&self) -> &'static str {
        match self.kind {
            ClipScoreKind::Cosine { .. } => "clip",
            ClipScoreKind::PickScore => "pickscore",
        }
    }

    fn factor(&self) -> f64 {
        match self.kind {
            ClipScoreKind::Cosine { scale } => scale,
            ClipScoreKind::PickScore => self.model.logit_scale.exp(),
        }
    }
}

impl<B: Backend> Reward<B> for ClipScore<B> {
    fn info(&self) -> RewardInfo {
        let f = self.factor().abs();
        RewardInfo {
            name: self.name(),
            range: (-f, f),
            differentiable: true,
        }
    }

    fn score(&self, images: Tensor<B, 4>, prompts: &[&str]) -> Result<Tensor<B, 1>, RewardError> {
        let name = self.name();
        check_batch(name, images.dims()[0], prompts.len())?;
        let device = images.device();
        let image = self.model.image_embeds(self.preprocess.apply(images));
        let text = self
            .model
            .text_embeds(token_ids(name, &self.tokenizer, prompts, &device)?);
        Ok(cosine(image, text).mul_scalar(self.factor()))
    }
}
