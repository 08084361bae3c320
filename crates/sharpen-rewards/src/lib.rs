//! Rewards: a batch of images (RGB in [0, 1]) and their prompts in, one score per image out.
//!
//! Each reward names the reference it matches (package, preprocessing, formula): CLIP score,
//! PickScore, HPSv2, ImageReward, the LAION aesthetic predictor, an MLLM grader, JPEG compressibility and incompressibility (DDPO),
//! the shapes world's compositional scorer, and weighted sums of them ([`registry`]).

mod aesthetic;
mod clip;
mod image;
mod image_reward;
mod jpeg;
pub mod mllm;
pub mod registry;
mod shapes;

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

pub use aesthetic::AestheticReward;
pub use clip::{ClipScore, ClipScoreKind};
pub use image::to_rgb8;
pub use image_reward::{ImageRewardScore, IMAGE_REWARD_TOKENS};
pub use jpeg::{jpeg_size_bytes, JpegReward, JpegRewardKind};
pub use mllm::{MllmConfig, MllmReward};
pub use registry::{load, RewardSpec, WeightedConfig, WeightedReward, NAMES};
pub use shapes::ShapesReward;

/// What a reward is.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardInfo {
    /// The name used on the command line and in metrics (`jpeg-compressibility`).
    pub name: &'static str,
    /// The range scores fall in (may be unbounded).
    pub range: (f64, f64),
    /// Whether gradients flow from the score to the images.
    pub differentiable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error("{reward}: got {images} images but {prompts} prompts")]
    BatchMismatch {
        reward: &'static str,
        images: usize,
        prompts: usize,
    },
    #[error("{reward}: {message}")]
    Failed {
        reward: &'static str,
        message: String,
    },
}

/// The names of the rewards that need no weights, for [`builtin`].
pub const BUILTIN: [&str; 3] = ["jpeg-compressibility", "jpeg-incompressibility", "shapes"];

/// A reward that needs no weights, by its name (one of [`BUILTIN`]).
pub fn builtin<B: Backend>(name: &str) -> Option<Box<dyn Reward<B>>> {
    Some(match name {
        "jpeg-compressibility" => Box::new(JpegReward {
            kind: JpegRewardKind::Compressibility,
        }),
        "jpeg-incompressibility" => Box::new(JpegReward {
            kind: JpegRewardKind::Incompressibility,
        }),
        "shapes" => Box::new(ShapesReward),
        _ => return None,
    })
}

/// A reward model or function. Higher scores are better.
pub trait Reward<B: Backend> {
    fn info(&self) -> RewardInfo;

    /// images: [batch, 3, h, w], RGB in [0, 1]; prompts: one per image. Returns [batch].
    fn score(&self, images: Tensor<B, 4>, prompts: &[&str]) -> Result<Tensor<B, 1>, RewardError>;

    /// [`Self::score`] with named sub-scores per image where the reward has them (a weighted
    /// sum's parts, a grader's aspect scores); none by default.
    fn score_detailed(
        &self,
        images: Tensor<B, 4>,
        prompts: &[&str],
    ) -> Result<Scored<B>, RewardError> {
        let batch = images.dims()[0];
        Ok(Scored {
            scores: self.score(images, prompts)?,
            aspects: vec![BTreeMap::new(); batch],
        })
    }
}

/// Scores and, per image, named sub-scores.
#[derive(Debug, Clone)]
pub struct Scored<B: Backend> {
    pub scores: Tensor<B, 1>,
    pub aspects: Vec<BTreeMap<String, f64>>,
}

pub(crate) fn failed(reward: &'static str, e: impl std::fmt::Display) -> RewardError {
    RewardError::Failed {
        reward,
        message: e.to_string(),
    }
}

pub(crate) fn check_batch(
    reward: &'static str,
    images: usize,
    prompts: usize,
) -> Result<(), RewardError> {
    if images == prompts {
        Ok(())
    } else {
        Err(RewardError::BatchMismatch {
            reward,
            images,
            prompts,
        })
    }
}
