//! transformers' `CLIPModel`: the vision tower (patch embedding, class token, `pre_layrnorm`,
//! encoder, `post_layernorm`), the text tower shared with SDXL's text encoders, both projections
//! and `logit_scale`; and CLIP image preprocessing on tensors (antialiased bicubic resize, centre
//! crop or pad, normalisation), so that the rewards built on it see exactly what the reference
//! sees and stay differentiable.
//!
//! Backend-generic; no file IO (loading lives in `sharpen-weights`).

pub mod aesthetic;
pub mod config;
pub mod model;
pub mod open_clip;
pub mod preprocess;
pub mod vision;

pub use aesthetic::AestheticMlp;
pub use config::{
    ClipModelConfig, ClipModelConfigJson, ClipVisionConfig, ClipVisionConfigJson, ConfigError,
    ImageProcessorJson,
};
pub use model::{cosine, l2_normalize, ClipModel};
pub use open_clip::{OpenClipConfigJson, OpenClipModelCfg, OPEN_CLIP_ARCHS};
pub use preprocess::{resize_bicubic_aa, ClipPreprocess, Fit};
pub use vision::{ClipVisionEmbeddings, ClipVisionOutput, ClipVisionTransformer};
