//! Small sections of the training config: the UNet's compute precision and `[cache]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
