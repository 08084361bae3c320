//! open_clip's model configuration (`open_clip_config.json`'s `model_cfg`, or a named
//! architecture) as a [`ClipModelConfig`]: open_clip checkpoints load into the same `CLIPModel`
//! tree once their keys are renamed (see `sharpen_weights::open_clip`).

use sdxl_text::{ClipActivation, ClipTextConfig, EosPooling};
use serde::Deserialize;

use crate::config::{invalid, ClipModelConfig, ClipVisionConfig, ConfigError};

#[derive(Debug, Clone, Deserialize)]
pub struct OpenClipVisionCfg {
    #[serde(default = "d_image")]
    pub image_size: usize,
    pub layers: usize,
    pub width: usize,
    #[serde(default = "d_head_width")]
    pub head_width: usize,
    #[serde(default = "d_mlp_ratio")]
    pub mlp_ratio: f64,
    pub patch_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OpenClipTextCfg {
    #[serde(default = "d_context")]
    pub context_length: usize,
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    pub width: usize,
    pub heads: usize,
    pub layers: usize,
    #[serde(default = "d_mlp_ratio")]
    pub mlp_ratio: f64,
}

/// `model_cfg` of open_clip (the fields CLIP towers of the ViT family use).
#[derive(Debug, Clone, Deserialize)]
pub struct OpenClipModelCfg {
    pub embed_dim: usize,
    #[serde(default)]
    pub quick_gelu: bool,
    pub vision_cfg: OpenClipVisionCfg,
    pub text_cfg: OpenClipTextCfg,
}

/// `open_clip_config.json` as the Hugging Face hub stores it.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenClipConfigJson {
    pub model_cfg: OpenClipModelCfg,
}

fn d_image() -> usize {
    224
}
fn d_head_width() -> usize {
    64
}
fn d_mlp_ratio() -> f64 {
    4.0
}
fn d_context() -> usize {
    77
}
fn d_vocab() -> usize {
    49408
}

/// The architectures known by name (open_clip's own configs).
pub const OPEN_CLIP_ARCHS: [&str; 3] = ["ViT-L-14", "ViT-H-14", "ViT-bigG-14"];

impl OpenClipModelCfg {
    /// open_clip's config of a named architecture.
    pub fn named(name: &str) -> Option<Self> {
        let (embed, v, t) = match name {
            "ViT-L-14" => (768, (24, 1024, 64, 4.0), (768, 12, 12)),
            "ViT-H-14" => (1024, (32, 1280, 80, 4.0), (1024, 16, 24)),
            "ViT-bigG-14" => (1280, (48, 1664, 104, 4.9231), (1280, 20, 32)),
            _ => return None,
        };
        Some(Self {
            embed_dim: embed,
            quick_gelu: false,
            vision_cfg: OpenClipVisionCfg {
                image_size: 224,
                layers: v.0,
                width: v.1,
                head_width: v.2,
                mlp_ratio: v.3,
                patch_size: 14,
            },
            text_cfg: OpenClipTextCfg {
                context_length: 77,
                vocab_size: 49408,
                width: t.0,
                heads: t.1,
                layers: t.2,
                mlp_ratio: 4.0,
            },
        })
    }
}

impl TryFrom<OpenClipModelCfg> for ClipModelConfig {
    type Error = ConfigError;

    fn try_from(c: OpenClipModelCfg) -> Result<Self, ConfigError> {
        let activation = if c.quick_gelu {
            ClipActivation::QuickGelu
        } else {
            ClipActivation::Gelu
        };
        let v = &c.vision_cfg;
        if v.head_width == 0 || !v.width.is_multiple_of(v.head_width) {
            return Err(invalid(
                "vision_cfg.head_width",
                format!(
                    "width {} is not a multiple of head_width {}",
                    v.width, v.head_width
                ),
            ));
        }
        let config = Self {
            text: ClipTextConfig {
                vocab_size: c.text_cfg.vocab_size,
                hidden_size: c.text_cfg.width,
                // open_clip: `mlp_width = int(width * mlp_ratio)`.
                intermediate_size: (c.text_cfg.width as f64 * c.text_cfg.mlp_ratio) as usize,
                num_layers: c.text_cfg.layers,
                num_heads: c.text_cfg.heads,
                max_positions: c.text_cfg.context_length,
                activation,
                layer_norm_eps: 1e-5,
                projection_dim: Some(c.embed_dim),
                // open_clip pools at `text.argmax(-1)`, the end-of-text token.
                pooling: EosPooling::ArgmaxId,
            },
            vision: ClipVisionConfig {
                hidden_size: v.width,
                intermediate_size: (v.width as f64 * v.mlp_ratio) as usize,
                num_layers: v.layers,
                num_heads: v.width / v.head_width,
                num_channels: 3,
                image_size: v.image_size,
                patch_size: v.patch_size,
                activation,
                layer_norm_eps: 1e-5,
            },
            projection_dim: c.embed_dim,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_architectures_match_the_transformers_presets() {
        let h = ClipModelConfig::try_from(OpenClipModelCfg::named("ViT-H-14").unwrap()).unwrap();
        assert_eq!(h, ClipModelConfig::laion_vit_h_14());
        let g = ClipModelConfig::try_from(OpenClipModelCfg::named("ViT-bigG-14").unwrap()).unwrap();
        assert_eq!((g.vision.intermediate_size, g.vision.num_heads), (8192, 16));
        assert!(OpenClipModelCfg::named("RN50").is_none());
        let json = r#"{"model_cfg": {"embed_dim": 8, "vision_cfg": {"layers": 1, "width": 16,
            "head_width": 5, "patch_size": 16, "image_size": 32}, "text_cfg": {"width": 8,
            "heads": 2, "layers": 1}}}"#;
        let c: OpenClipConfigJson = serde_json::from_str(json).unwrap();
        let e = ClipModelConfig::try_from(c.model_cfg).unwrap_err();
        assert_eq!(e.field, "vision_cfg.head_width");
    }
}
