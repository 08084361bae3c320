//! Small sections of the training config: `[rlhf]`, the UNet's compute precision and `[cache]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sharpen_trainer::RlhfConfig;

/// The UNet's compute precision during training. The trained weights (the optimizer's master
/// copy) stay f32; the VAE and the rewards stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 on CUDA, f32 on the CPU.
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// The dtype the UNet computes in, when not f32.
    pub fn compute_dtype(self) -> Option<burn::tensor::DType> {
        match self {
            Self::Bf16 => Some(burn::tensor::DType::BF16),
            Self::F16 => Some(burn::tensor::DType::F16),
            Self::Auto | Self::F32 => None,
        }
    }
}

/// The `[cache]` section: computed inputs kept on disk, keyed by a content hash of the input and
/// of the model that computed it (a retrained VAE or encoder gets new entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// VAE latents (posterior means) of the prepared training images.
    pub latents: bool,
    /// Text embeddings of the prompts (frozen text encoders).
    pub text: bool,
    /// Where entries live (shared by runs).
    pub dir: PathBuf,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            latents: false,
            text: false,
            dir: PathBuf::from("runs/cache"),
        }
    }
}

/// The `[rlhf]` section. Its `rollout_cfg` and `generation_steps` also set how the baselines
/// (ddpo, diffusion-dpo) sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlhfSection {
    pub beta: f64,
    /// "inside" (paper Eq. 11) or "outside" (the reference code).
    pub reward_margin: MarginForm,
    pub ref_first_step_only: bool,
    pub reward_scale: f64,
    pub rollout_cfg: f64,
    pub generation_steps: usize,
    /// What re-noises the online generations: "own" (each generation's starting noise, as
    /// method.md specifies) or "fresh" (an independent draw, as Diffusion-DPO noises its pairs).
    pub renoise: Renoise,
    /// What ranks a prompt's trajectories: "trajectory" (the mean reward of the decoded
    /// clean-latent estimates along it, method.md section 3) or "generation" (the reward of its
    /// online generation itself; not the paper's method).
    pub select: SelectBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectBy {
    #[default]
    Trajectory,
    Generation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Renoise {
    #[default]
    Own,
    Fresh,
}

/// "inside" | "outside", kept as a small copyable string type for the TOML mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarginForm {
    Inside,
    Outside,
}

impl Default for RlhfSection {
    fn default() -> Self {
        let d = RlhfConfig::default();
        Self {
            beta: d.beta,
            reward_margin: MarginForm::Inside,
            ref_first_step_only: d.ref_first_step_only,
            reward_scale: d.reward_scale,
            rollout_cfg: d.rollout_cfg,
            generation_steps: 25,
            renoise: Renoise::Own,
            select: SelectBy::Trajectory,
        }
    }
}
