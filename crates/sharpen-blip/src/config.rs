//! ImageReward's configuration: BLIP's `med_config.json` (a BERT config) mirrored, and the ViT
//! sizes (fixed by ImageReward to ViT-L/16 at 224 px; read from the checkpoint's shapes for other
//! sizes).

use serde::Deserialize;

/// `med_config.json` (transformers' `BertConfig` fields BLIP's BERT uses).
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfigJson {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub add_cross_attention: bool,
    #[serde(default)]
    pub encoder_width: Option<usize>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

/// A validated BLIP BERT configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    pub layer_norm_eps: f64,
    /// The width of the image tokens the cross-attention reads (BLIP sets it to the ViT's).
    pub encoder_width: usize,
}

/// BLIP's ViT (timm `VisionTransformer`): pre-norm blocks, LayerNorm eps 1e-6, exact GELU.
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: usize,
}

impl VitConfig {
    /// BLIP `vit='large'` at 224 px (ImageReward's).
    pub fn large_224() -> Self {
        Self {
            image_size: 224,
            patch_size: 16,
            width: 1024,
            depth: 24,
            num_heads: 16,
            mlp_ratio: 4,
        }
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("vit.image_size", self.image_size),
            ("vit.patch_size", self.patch_size),
            ("vit.width", self.width),
            ("vit.depth", self.depth),
            ("vit.num_heads", self.num_heads),
        ] {
            if v == 0 {
                return Err(bad(field, "must be at least 1"));
            }
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(bad("vit.patch_size", "does not divide image_size"));
        }
        if !self.width.is_multiple_of(self.num_heads) {
            return Err(bad("vit.num_heads", "does not divide the width"));
        }
        Ok(())
    }
}

/// Both towers.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRewardConfig {
    pub vit: VitConfig,
    pub bert: BertConfig,
}

impl ImageRewardConfig {
    /// ImageReward v1.0: ViT-L/16 at 224 px and BLIP's `med_config.json` (BERT-base with
    /// cross-attention, vocabulary 30524 = bert-base-uncased + `[DEC]` + `[ENC]`).
    pub fn v1() -> Self {
        Self {
            vit: VitConfig::large_224(),
            bert: BertConfig {
                vocab_size: 30524,
                hidden_size: 768,
                num_layers: 12,
                num_heads: 12,
                intermediate_size: 3072,
                max_positions: 512,
                layer_norm_eps: 1e-12,
                encoder_width: 1024,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid ImageReward config: field `{field}`: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

impl BertConfigJson {
    /// The validated config; `encoder_width` is the ViT's width (BLIP overrides the file's).
    pub fn to_config(&self, encoder_width: usize) -> Result<BertConfig, ConfigError> {
        if self.hidden_act != "gelu" {
            return Err(bad(
                "hidden_act",
                format!("`{}` is not supported (gelu is)", self.hidden_act),
            ));
        }
        if !self.add_cross_attention {
            return Err(bad(
                "add_cross_attention",
                "must be true: ImageReward's text encoder attends to the image",
            ));
        }
        if let Some(kind) = self
            .position_embedding_type
            .as_deref()
            .filter(|k| *k != "absolute")
        {
            return Err(bad(
                "position_embedding_type",
                format!("`{kind}` is not supported (absolute is)"),
            ));
        }
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(bad(field, "must be at least 1"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(bad(
                "num_attention_heads",
                format!(
                    "hidden_size {} is not divisible by {} heads",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(bad("layer_norm_eps", "must be positive"));
        }
        Ok(BertConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            max_positions: self.max_position_embeddings,
            layer_norm_eps: self.layer_norm_eps,
            encoder_width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MED: &str = r#"{"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
      "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
      "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-12,
      "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
      "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524,
      "encoder_width": 768, "add_cross_attention": true}"#;

    #[test]
    fn blips_med_config_gives_the_v1_text_encoder() {
        let j: BertConfigJson = serde_json::from_str(MED).unwrap();
        assert_eq!(j.to_config(1024).unwrap(), ImageRewardConfig::v1().bert);
        let mut bad = j.clone();
        bad.hidden_act = "relu".into();
        assert_eq!(bad.to_config(1024).unwrap_err().field, "hidden_act");
        let mut bad = j;
        bad.add_cross_attention = false;
        assert_eq!(
            bad.to_config(1024).unwrap_err().field,
            "add_cross_attention"
        );
        assert!(VitConfig::large_224().validate().is_ok());
    }
}
