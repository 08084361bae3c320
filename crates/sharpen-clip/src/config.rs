//! `CLIPModel` configuration: serde mirrors of transformers' `config.json` (with transformers'
//! defaults for the fields older checkpoints leave out) and of `preprocessor_config.json`, and the
//! validated configs the model and the preprocessing are built from.

use sdxl_text::{ClipActivation, ClipTextConfig, ClipTextConfigJson};
use serde::Deserialize;

use crate::preprocess::{ClipPreprocess, Fit};

/// `text_config` of a `CLIPModel` `config.json`. Defaults are transformers' `CLIPTextConfig`'s.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextSubConfigJson {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_text_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_twelve")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_eight")]
    pub num_attention_heads: usize,
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

/// `vision_config` of a `CLIPModel` `config.json`. Defaults are transformers' `CLIPVisionConfig`'s.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfigJson {
    #[serde(default = "d_vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_vision_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_twelve")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_twelve")]
    pub num_attention_heads: usize,
    #[serde(default = "d_three")]
    pub num_channels: usize,
    #[serde(default = "d_image")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

/// transformers' `CLIPConfig` as `config.json` stores it.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipModelConfigJson {
    pub text_config: ClipTextSubConfigJson,
    pub vision_config: ClipVisionConfigJson,
    #[serde(default = "d_projection")]
    pub projection_dim: usize,
}

fn d_vocab() -> usize {
    49408
}
fn d_text_hidden() -> usize {
    512
}
fn d_text_intermediate() -> usize {
    2048
}
fn d_vision_hidden() -> usize {
    768
}
fn d_vision_intermediate() -> usize {
    3072
}
fn d_twelve() -> usize {
    12
}
fn d_eight() -> usize {
    8
}
fn d_three() -> usize {
    3
}
fn d_positions() -> usize {
    77
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_projection() -> usize {
    512
}
fn d_act() -> String {
    "quick_gelu".to_string()
}
fn d_eps() -> f64 {
    1e-5
}

/// A validated CLIP vision tower configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub activation: ClipActivation,
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    /// Patches per side; the tower sees `num_patches_per_side^2 + 1` tokens.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn num_positions(&self) -> usize {
        self.patches_per_side().pow(2) + 1
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("vision_config.hidden_size", self.hidden_size),
            ("vision_config.intermediate_size", self.intermediate_size),
            ("vision_config.num_hidden_layers", self.num_layers),
            ("vision_config.num_attention_heads", self.num_heads),
            ("vision_config.num_channels", self.num_channels),
            ("vision_config.patch_size", self.patch_size),
            ("vision_config.image_size", self.image_size),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(bad(field, "must be at least 1"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(bad(
                "vision_config.num_attention_heads",
                format!(
                    "hidden_size {} is not divisible by {} heads",
                    self.hidden_size, self.num_heads
                ),
            ));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(bad(
                "vision_config.patch_size",
                format!(
                    "image_size {} is not a multiple of patch_size {}",
                    self.image_size, self.patch_size
                ),
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(bad(
                "vision_config.layer_norm_eps",
                "must be a positive number",
            ));
        }
        Ok(())
    }
}

/// A validated `CLIPModel` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipModelConfig {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    /// Output size of `visual_projection` and `text_projection`.
    pub projection_dim: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid CLIP config: field `{field}`: {message}")]
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

fn activation(field: &'static str, name: &str) -> Result<ClipActivation, ConfigError> {
    match name {
        "quick_gelu" => Ok(ClipActivation::QuickGelu),
        "gelu" => Ok(ClipActivation::Gelu),
        other => Err(bad(
            field,
            format!("`{other}` is not supported (expected quick_gelu or gelu)"),
        )),
    }
}

impl TryFrom<ClipModelConfigJson> for ClipModelConfig {
    type Error = ConfigError;

    fn try_from(j: ClipModelConfigJson) -> Result<Self, ConfigError> {
        let t = j.text_config;
        let text = ClipTextConfig::try_from(ClipTextConfigJson {
            vocab_size: t.vocab_size,
            hidden_size: t.hidden_size,
            intermediate_size: t.intermediate_size,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            max_position_embeddings: t.max_position_embeddings,
            hidden_act: t.hidden_act,
            layer_norm_eps: t.layer_norm_eps,
            projection_dim: Some(j.projection_dim),
            eos_token_id: t.eos_token_id,
        })
        .map_err(|e| ConfigError {
            field: "text_config",
            message: e.to_string(),
        })?;
        let v = j.vision_config;
        let vision = ClipVisionConfig {
            hidden_size: v.hidden_size,
            intermediate_size: v.intermediate_size,
            num_layers: v.num_hidden_layers,
            num_heads: v.num_attention_heads,
            num_channels: v.num_channels,
            image_size: v.image_size,
            patch_size: v.patch_size,
            activation: activation("vision_config.hidden_act", &v.hidden_act)?,
            layer_norm_eps: v.layer_norm_eps,
        };
        let config = Self {
            text,
            vision,
            projection_dim: j.projection_dim,
        };
        config.validate()?;
        Ok(config)
    }
}

impl ClipModelConfig {
    /// `openai/clip-vit-large-patch14` (the LAION aesthetic predictor's CLIP).
    pub fn openai_vit_l_14() -> Self {
        Self::preset(
            (768, 3072, 12, 12),
            (1024, 4096, 24, 16, 14),
            ClipActivation::QuickGelu,
            768,
        )
    }

    /// `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` and PickScore v1 (its fine-tune).
    pub fn laion_vit_h_14() -> Self {
        Self::preset(
            (1024, 4096, 24, 16),
            (1280, 5120, 32, 16, 14),
            ClipActivation::Gelu,
            1024,
        )
    }

    fn preset(
        text: (usize, usize, usize, usize),
        vision: (usize, usize, usize, usize, usize),
        activation: ClipActivation,
        projection_dim: usize,
    ) -> Self {
        Self {
            text: ClipTextConfig {
                vocab_size: 49408,
                hidden_size: text.0,
                intermediate_size: text.1,
                num_layers: text.2,
                num_heads: text.3,
                max_positions: 77,
                activation,
                layer_norm_eps: 1e-5,
                projection_dim: Some(projection_dim),
                pooling: sdxl_text::EosPooling::ArgmaxId,
            },
            vision: ClipVisionConfig {
                hidden_size: vision.0,
                intermediate_size: vision.1,
                num_layers: vision.2,
                num_heads: vision.3,
                num_channels: 3,
                image_size: 224,
                patch_size: vision.4,
                activation,
                layer_norm_eps: 1e-5,
            },
            projection_dim,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.text.validate().map_err(|e| ConfigError {
            field: "text_config",
            message: e.to_string(),
        })?;
        self.vision.validate()?;
        if self.projection_dim == 0 {
            return Err(bad("projection_dim", "must be at least 1"));
        }
        Ok(())
    }
}

/// An integer size or a `{"shortest_edge": n}` / `{"height": h, "width": w}` object, as
/// `preprocessor_config.json` writes `size` and `crop_size`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeJson {
    Square(usize),
    ShortestEdge { shortest_edge: usize },
    HeightWidth { height: usize, width: usize },
}

/// transformers' `CLIPImageProcessor` as `preprocessor_config.json` stores it.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageProcessorJson {
    pub size: SizeJson,
    #[serde(default)]
    pub crop_size: Option<SizeJson>,
    #[serde(default = "d_true")]
    pub do_resize: bool,
    #[serde(default = "d_true")]
    pub do_center_crop: bool,
    #[serde(default = "d_true")]
    pub do_normalize: bool,
    #[serde(default = "d_bicubic")]
    pub resample: u32,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
}

fn d_true() -> bool {
    true
}
fn d_bicubic() -> u32 {
    3
}

impl ImageProcessorJson {
    /// The preprocessing this file describes, or an error naming the field we do not support.
    pub fn to_preprocess(&self) -> Result<ClipPreprocess, ConfigError> {
        if self.resample != 3 {
            return Err(bad(
                "resample",
                format!("{} is not supported (3, bicubic, is)", self.resample),
            ));
        }
        if !self.do_resize || !self.do_normalize {
            return Err(bad(
                "do_resize",
                "CLIP preprocessing without resize or normalisation is not supported",
            ));
        }
        let shortest = match self.size {
            SizeJson::Square(n) | SizeJson::ShortestEdge { shortest_edge: n } => n,
            SizeJson::HeightWidth { .. } => {
                return Err(bad(
                    "size",
                    "a fixed height and width is not supported (shortest_edge is)",
                ))
            }
        };
        if !self.do_center_crop {
            return Err(bad(
                "do_center_crop",
                "false is not supported (the vision tower needs a square input)",
            ));
        }
        let crop = match &self.crop_size {
            None => shortest,
            Some(SizeJson::Square(n)) => *n,
            Some(SizeJson::HeightWidth { height, width }) if height == width => *height,
            Some(other) => {
                return Err(bad(
                    "crop_size",
                    format!("{other:?} is not supported (a square crop is)"),
                ))
            }
        };
        let p = ClipPreprocess {
            size: shortest,
            crop,
            fit: Fit::ShortestSideThenCenterCrop,
            mean: self.image_mean,
            std: self.image_std,
        };
        p.validate()?;
        Ok(p)
    }
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    bad(field, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(text: &str, vision: &str) -> Result<ClipModelConfig, String> {
        let json = format!(
            r#"{{"text_config": {{{text}}}, "vision_config": {{{vision}}}, "projection_dim": 8}}"#
        );
        let j: ClipModelConfigJson = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        ClipModelConfig::try_from(j).map_err(|e| e.to_string())
    }

    #[test]
    fn missing_fields_take_transformers_defaults() {
        let c = model("", r#""patch_size": 16"#).unwrap();
        assert_eq!(c.text.hidden_size, 512);
        assert_eq!(c.vision.hidden_size, 768);
        assert_eq!(c.vision.num_positions(), 14 * 14 + 1);
        assert_eq!(c.vision.activation, ClipActivation::QuickGelu);
        assert_eq!(c.projection_dim, 8);
        assert_eq!(c.text.projection_dim, Some(8));
    }

    #[test]
    fn bad_fields_are_named() {
        let e = model("", r#""patch_size": 30"#).unwrap_err();
        assert!(e.contains("vision_config.patch_size"), "{e}");
        let e = model("", r#""hidden_act": "relu""#).unwrap_err();
        assert!(e.contains("vision_config.hidden_act"), "{e}");
        let e = model(r#""num_attention_heads": 7"#, "").unwrap_err();
        assert!(e.contains("text_config"), "{e}");
        assert!(ClipModelConfig::openai_vit_l_14().validate().is_ok());
        assert!(ClipModelConfig::laion_vit_h_14().validate().is_ok());
    }

    fn processor(json: &str) -> Result<ClipPreprocess, String> {
        let j: ImageProcessorJson = serde_json::from_str(json).map_err(|e| e.to_string())?;
        j.to_preprocess().map_err(|e| e.to_string())
    }

    #[test]
    fn preprocessor_configs_of_both_spellings() {
        let mean = r#""image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]"#;
        let p = processor(&format!(r#"{{"size": 224, "crop_size": 224, {mean}}}"#)).unwrap();
        assert_eq!((p.size, p.crop), (224, 224));
        let p = processor(&format!(
            r#"{{"size": {{"shortest_edge": 256}}, "crop_size": {{"height": 224, "width": 224}}, {mean}}}"#
        ))
        .unwrap();
        assert_eq!((p.size, p.crop, p.output_size()), (256, 224, 224));
        let e = processor(&format!(r#"{{"size": 224, "resample": 2, {mean}}}"#)).unwrap_err();
        assert!(e.contains("`resample`"), "{e}");
        let e = processor(&format!(
            r#"{{"size": 224, "crop_size": {{"height": 224, "width": 200}}, {mean}}}"#
        ))
        .unwrap_err();
        assert!(e.contains("`crop_size`"), "{e}");
        let e = processor(&format!(r#"{{"size": 200, "crop_size": 224, {mean}}}"#)).unwrap_err();
        assert!(e.contains("crop_size"), "{e}");
        assert!(processor(r#"{"size": 224}"#)
            .unwrap_err()
            .contains("image_mean"));
    }
}
