//! ImageReward v1.0 (Xu et al. 2023): BLIP's ViT-L/16 image encoder (timm layout), BLIP's BERT
//! text encoder whose every layer cross-attends to the image tokens, and a 768-1024-128-64-16-1
//! head on the [CLS] state; the score is normalised by the package's constants. Field names equal
//! the keys of `ImageReward.pt` (`blip.visual_encoder.blocks.0.attn.qkv.weight`, ...; BERT's
//! `attention.self` is `attention.self_` here, `self` being a Rust keyword, and `LayerNorm` is
//! `layer_norm`).
//!
//! Backend-generic; no file IO (loading lives in `sharpen-weights`).

pub mod bert;
pub mod config;
pub mod model;
pub mod tokenizer;
pub mod vit;

pub use bert::BertModel;
pub use config::{BertConfig, BertConfigJson, ConfigError, ImageRewardConfig, VitConfig};
pub use model::{ImageRewardModel, IMAGE_REWARD_MEAN, IMAGE_REWARD_STD};
pub use tokenizer::{BertTokenizer, TokenizerError};
pub use vit::BlipVit;
