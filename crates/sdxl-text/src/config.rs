//! CLIP text encoder configuration: a serde mirror of transformers' `config.json` and the
//! validated config the model is built from.

use serde::Deserialize;

/// transformers' `CLIPTextConfig` as `config.json` stores it (field names kept exactly).
/// Required fields are the ones every real checkpoint writes; a missing one is an error.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfigJson {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    /// Present in every CLIP text config; used by `CLIPTextModelWithProjection`.
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// transformers 5's default when absent is 49407; SDXL's configs carry the legacy value 2.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

/// The MLP activation of a CLIP encoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)`: OpenAI CLIP (SDXL text encoder 1).
    QuickGelu,
    /// Exact (erf) GELU: OpenCLIP ViT-bigG (SDXL text encoder 2).
    Gelu,
}

/// Where the pooled output is read from `last_hidden_state`, as transformers decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EosPooling {
    /// Legacy configs (`eos_token_id == 2`): the position of the largest token id, which is the
    /// first `<|endoftext|>` (49407) for CLIP's vocabulary.
    ArgmaxId,
    /// The first position holding this token id.
    FirstToken(u32),
}

/// A validated CLIP text encoder configuration with honest names.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub max_positions: usize,
    pub activation: ClipActivation,
    pub layer_norm_eps: f64,
    /// Output size of `text_projection` (only `CLIPTextModelWithProjection` has one).
    pub projection_dim: Option<usize>,
    pub pooling: EosPooling,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid CLIP text config: field `{field}`: {message}")]
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

impl TryFrom<ClipTextConfigJson> for ClipTextConfig {
    type Error = ConfigError;

    fn try_from(j: ClipTextConfigJson) -> Result<Self, ConfigError> {
        let activation = match j.hidden_act.as_str() {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            other => {
                return Err(bad(
                    "hidden_act",
                    format!("`{other}` is not supported (expected quick_gelu or gelu)"),
                ));
            }
        };
        let pooling = match j.eos_token_id.unwrap_or(49407) {
            2 => EosPooling::ArgmaxId,
            id => EosPooling::FirstToken(id),
        };
        let config = Self {
            vocab_size: j.vocab_size,
            hidden_size: j.hidden_size,
            intermediate_size: j.intermediate_size,
            num_layers: j.num_hidden_layers,
            num_heads: j.num_attention_heads,
            max_positions: j.max_position_embeddings,
            activation,
            layer_norm_eps: j.layer_norm_eps,
            projection_dim: j.projection_dim,
            pooling,
        };
        config.validate()?;
        Ok(config)
    }
}

impl ClipTextConfig {
    /// SDXL base 1.0 `text_encoder/config.json` (OpenAI CLIP ViT-L/14 text tower).
    pub fn sdxl_base_1_0_text_encoder() -> Self {
        Self::openai_clip(768, 3072, 12, 12, ClipActivation::QuickGelu, 768)
    }

    /// SDXL base 1.0 `text_encoder_2/config.json` (OpenCLIP ViT-bigG/14 text tower with projection).
    pub fn sdxl_base_1_0_text_encoder_2() -> Self {
        Self::openai_clip(1280, 5120, 32, 20, ClipActivation::Gelu, 1280)
    }

    fn openai_clip(
        hidden_size: usize,
        intermediate_size: usize,
        num_layers: usize,
        num_heads: usize,
        activation: ClipActivation,
        projection_dim: usize,
    ) -> Self {
        Self {
            vocab_size: 49408,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            max_positions: 77,
            activation,
            layer_norm_eps: 1e-5,
            projection_dim: Some(projection_dim),
            pooling: EosPooling::ArgmaxId,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Checks every invariant the model relies on; the error names the `config.json` field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("max_position_embeddings", self.max_positions),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(bad(field, "must be at least 1"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(bad(
                "num_attention_heads",
                format!(
                    "hidden_size {} is not divisible by {} heads",
                    self.hidden_size, self.num_heads
                ),
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(bad(
                "layer_norm_eps",
                format!("must be a positive number, got {}", self.layer_norm_eps),
            ));
        }
        if self.projection_dim == Some(0) {
            return Err(bad("projection_dim", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(extra: &str) -> String {
        format!(
            r#"{{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 7, "layer_norm_eps": 1e-5 {extra}}}"#
        )
    }

    fn parse(extra: &str) -> Result<ClipTextConfig, String> {
        let j: ClipTextConfigJson =
            serde_json::from_str(&json(extra)).map_err(|e| e.to_string())?;
        ClipTextConfig::try_from(j).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_and_validates() {
        let c = parse(r#", "hidden_act": "gelu", "eos_token_id": 2"#).unwrap();
        assert_eq!(c.activation, ClipActivation::Gelu);
        assert_eq!(c.pooling, EosPooling::ArgmaxId);
        let c = parse(r#", "hidden_act": "quick_gelu""#).unwrap();
        assert_eq!(c.pooling, EosPooling::FirstToken(49407));
        assert!(parse("").unwrap_err().contains("hidden_act"));
        assert!(parse(r#", "hidden_act": "relu""#)
            .unwrap_err()
            .contains("`hidden_act`"));
        let err = parse(r#", "hidden_act": "gelu", "num_attention_heads": 3"#);
        assert!(err.is_err()); // duplicate key in JSON is an error too
    }

    #[test]
    fn invariants_name_the_field() {
        let mut c = ClipTextConfig::sdxl_base_1_0_text_encoder();
        c.num_heads = 7;
        assert_eq!(c.validate().unwrap_err().field, "num_attention_heads");
        let mut c = ClipTextConfig::sdxl_base_1_0_text_encoder_2();
        c.layer_norm_eps = -1.0;
        assert_eq!(c.validate().unwrap_err().field, "layer_norm_eps");
        assert!(ClipTextConfig::sdxl_base_1_0_text_encoder_2()
            .validate()
            .is_ok());
    }
}
