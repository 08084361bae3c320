//! The text side of SDXL: CLIP tokenizers, the two CLIP text encoders and SDXL prompt encoding.
//!
//! Backend-generic; no file or network IO (loading lives in `sharpen-weights`).

pub mod clip;
pub mod config;
pub mod prompt;
pub mod tokenizer;

pub use clip::{
    ClipEncoder, ClipEncoderShape, ClipTextModel, ClipTextModelWithProjection, ClipTextOutput,
    ClipTextProjectionOutput, ClipTextTransformer,
};
pub use config::{ClipActivation, ClipTextConfig, ClipTextConfigJson, ConfigError, EosPooling};
pub use prompt::{
    PromptBatch, PromptEncodeOptions, PromptError, SdxlGuidanceEmbeds, SdxlPromptEmbeds,
    SdxlTextEncoders, SdxlTokenizers,
};
pub use tokenizer::{ClipTokenizer, ClipTokenizerSources, TokenizerError};
