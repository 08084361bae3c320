//! `clip` (CLIP image-text cosine), `pickscore` (`logit_scale.exp() * cosine`) and `hpsv2`
//! (cosine with HPSv2's resize-and-pad), on transformers `CLIPModel` folders or open_clip
//! checkpoints (loaded into the same tree).
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
use sharpen_clip::{cosine, ClipModel, ClipPreprocess, Fit};
use sharpen_weights::clip::{load_clip_model, load_clip_preprocess};
use sharpen_weights::open_clip::load_open_clip_model;
use sharpen_weights::text::load_clip_tokenizer;
use sharpen_weights::LoadOptions;

use crate::{check_batch, failed, Reward, RewardError, RewardInfo};

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
    /// `clip`, `pickscore` or `hpsv2`.
    pub name: &'static str,
    pub model: ClipModel<B>,
    pub tokenizer: ClipTokenizer,
    pub preprocess: ClipPreprocess,
    pub kind: ClipScoreKind,
}

/// The CLIP BPE tokenizer shipped with the project (`assets/clip-tokenizer/tokenizer`, made
/// from open_clip's vocabulary), for checkpoints that carry no tokenizer files.
pub(crate) fn shipped_tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_sources(sdxl_text::ClipTokenizerSources {
        vocab_json: include_str!(concat!(
            "../../../assets/clip-tokenizer/tokenizer/",
            "vocab.json"
        )),
        merges_txt: include_str!(concat!(
            "../../../assets/clip-tokenizer/tokenizer/",
            "merges.txt"
        )),
        tokenizer_config_json: Some(include_str!(concat!(
            "../../../assets/clip-tokenizer/tokenizer/",
            "tokenizer_config.json"
        ))),
        special_tokens_map_json: Some(include_str!(concat!(
            "../../../assets/clip-tokenizer/tokenizer/",
            "special_tokens_map.json"
        ))),
    })
    .unwrap_or_else(|e| panic!("the shipped CLIP tokenizer is valid: {e}"))
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
    // Some model repositories (PickScore v1) ship weights and config only; their processor is
    // the standard CLIP one, which is what the fallbacks are.
    let tokenizer = if ["vocab.json", "tokenizer.json"]
        .iter()
        .any(|f| dir.join(f).is_file())
    {
        load_clip_tokenizer(dir).map_err(|e| failed(reward, e))?
    } else {
        tracing::info!(dir = %dir.display(), "no tokenizer files: using the shipped CLIP tokenizer");
        shipped_tokenizer()
    };
    let preprocess = if dir.join("preprocessor_config.json").is_file() {
        load_clip_preprocess(dir).map_err(|e| failed(reward, e))?
    } else {
        tracing::info!(dir = %dir.display(), "no preprocessor_config.json: CLIP's standard preprocessing");
        ClipPreprocess::clip(model.image_size())
    };
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
            name: "clip",
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
            name: "pickscore",
            model,
            tokenizer,
            preprocess,
            kind: ClipScoreKind::PickScore,
        })
    }

    /// `clip` on an open_clip checkpoint (a file, or a hub folder with `open_clip_config.json`);
    /// `arch` names the architecture when no config sits beside it. Tokenizer: the CLIP BPE
    /// shipped in this binary (what open_clip bundles); preprocessing: CLIP's at the model's size.
    pub fn load_open_clip(
        path: &Path,
        arch: Option<&str>,
        scale: f64,
        device: &B::Device,
    ) -> Result<Self, RewardError> {
        let model =
            load_open_clip_model(path, arch, None, device).map_err(|e| failed("clip", e))?;
        let preprocess = ClipPreprocess::clip(model.image_size());
        Ok(Self {
            name: "clip",
            model,
            tokenizer: shipped_tokenizer(),
            preprocess,
            kind: ClipScoreKind::Cosine { scale },
        })
    }

    /// `hpsv2`: HPSv2 / v2.1 (`HPS_v2_compressed.pt`, `HPS_v2.1_compressed.pt`: an open_clip
    /// ViT-H/14 state dict under `state_dict`), plain cosine, with its preprocessing: the longer
    /// side resized to 224 (bicubic), centred black padding to 224 x 224, CLIP mean and std.
    pub fn load_hpsv2(
        path: &Path,
        arch: Option<&str>,
        device: &B::Device,
    ) -> Result<Self, RewardError> {
        if path.is_dir() && !path.join("open_clip_config.json").is_file() {
            return Err(failed(
                "hpsv2",
                format!(
                    "{} is a folder: `hpsv2` takes the HPS checkpoint file (HPS_v2.1_compressed.pt)",
                    path.display()
                ),
            ));
        }
        let model = load_open_clip_model(path, Some(arch.unwrap_or("ViT-H-14")), None, device)
            .or_else(|e| match arch {
                // A tiny or custom model with its own open_clip_config.json.
                None => load_open_clip_model(path, None, None, device).map_err(|_| e),
                Some(_) => Err(e),
            })
            .map_err(|e| failed("hpsv2", e))?;
        let preprocess = ClipPreprocess {
            fit: Fit::LongestSideThenPad,
            ..ClipPreprocess::clip(model.image_size())
        };
        Ok(Self {
            name: "hpsv2",
            model,
            tokenizer: shipped_tokenizer(),
            preprocess,
            kind: ClipScoreKind::Cosine { scale: 1.0 },
        })
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
            name: self.name,
            range: (-f, f),
            differentiable: true,
        }
    }

    fn score(&self, images: Tensor<B, 4>, prompts: &[&str]) -> Result<Tensor<B, 1>, RewardError> {
        let name = self.name;
        check_batch(name, images.dims()[0], prompts.len())?;
        let device = images.device();
        let image = self.model.image_embeds(self.preprocess.apply(images));
        let text = self
            .model
            .text_embeds(token_ids(name, &self.tokenizer, prompts, &device)?);
        Ok(cosine(image, text).mul_scalar(self.factor()))
    }
}
