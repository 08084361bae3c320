//! `unet/config.json`: a serde mirror with diffusers' names, and the validated config.

use serde::Deserialize;

/// A config value diffusers accepts either once for every block or per block.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    fn expand(&self, field: &'static str, blocks: usize) -> Result<Vec<T>, ConfigError> {
        match self {
            Self::One(v) => Ok(vec![v.clone(); blocks]),
            Self::Many(v) if v.len() == blocks => Ok(v.clone()),
            Self::Many(v) => Err(bad(
                field,
                format!("has {} entries for {blocks} blocks", v.len()),
            )),
        }
    }
}

/// diffusers' `UNet2DConditionModel` config as `config.json` stores it (names kept, including
/// `attention_head_dim`, which diffusers uses as the number of heads when `num_attention_heads`
/// is absent).
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfigJson {
    pub sample_size: Option<usize>,
    pub in_channels: usize,
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    #[serde(default)]
    pub only_cross_attention: Option<PerBlock<bool>>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: PerBlock<usize>,
    #[serde(default)]
    pub downsample_padding: Option<usize>,
    #[serde(default)]
    pub mid_block_scale_factor: Option<f64>,
    pub act_fn: String,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    #[serde(default)]
    pub transformer_layers_per_block: Option<PerBlock<usize>>,
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub upcast_attention: Option<bool>,
    #[serde(default)]
    pub resnet_time_scale_shift: Option<String>,
    #[serde(default)]
    pub time_embedding_type: Option<String>,
    #[serde(default)]
    pub conv_in_kernel: Option<usize>,
    #[serde(default)]
    pub conv_out_kernel: Option<usize>,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub resnet_out_scale_factor: Option<f64>,
    #[serde(default)]
    pub attention_type: Option<String>,
}

/// A UNet level: plain resnets, or resnets each followed by a transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Plain,
    CrossAttn,
}

/// SDXL's added conditioning (`addition_embed_type: "text_time"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextTimeConfig {
    /// Sinusoidal size of each of the six time ids (256 for SDXL).
    pub time_embed_dim: usize,
    /// Input of `add_embedding`: pooled text size + 6 x `time_embed_dim` (2816 for SDXL).
    pub input_dim: usize,
}

impl TextTimeConfig {
    /// Size of the pooled text embedding the UNet expects.
    pub fn text_embeds_dim(&self) -> usize {
        self.input_dim - 6 * self.time_embed_dim
    }
}

/// The validated UNet config, with honest names.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_blocks: Vec<BlockKind>,
    pub up_blocks: Vec<BlockKind>,
    /// Resnets per down level (up levels have one more).
    pub layers_per_block: Vec<usize>,
    /// Transformer blocks per `Transformer2DModel`, per down level (up levels use the reverse).
    pub transformer_layers_per_block: Vec<usize>,
    /// Attention heads per down level (diffusers' `attention_head_dim`).
    pub num_heads: Vec<usize>,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    pub text_time: Option<TextTimeConfig>,
    pub sample_size: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid UNet config: field `{field}`: {message}")]
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

fn block_kind(
    field: &'static str,
    name: &str,
    plain: &str,
    cross: &str,
) -> Result<BlockKind, ConfigError> {
    if name == plain {
        Ok(BlockKind::Plain)
    } else if name == cross {
        Ok(BlockKind::CrossAttn)
    } else {
        Err(bad(
            field,
            format!("block type `{name}` is not supported (expected {plain} or {cross})"),
        ))
    }
}

/// Values this implementation supports only in their default form.
fn require<T: PartialEq + std::fmt::Debug>(
    field: &'static str,
    value: Option<T>,
    allowed: &[T],
) -> Result<(), ConfigError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(bad(
            field,
            format!("{v:?} is not supported (supported: {allowed:?})"),
        )),
        _ => Ok(()),
    }
}

impl TryFrom<UNetConfigJson> for UNetConfig {
    type Error = ConfigError;

    fn try_from(j: UNetConfigJson) -> Result<Self, ConfigError> {
        let n = j.block_out_channels.len();
        if j.down_block_types.len() != n {
            return Err(bad(
                "down_block_types",
                format!(
                    "has {} entries, block_out_channels has {n}",
                    j.down_block_types.len()
                ),
            ));
        }
        if j.up_block_types.len() != n {
            return Err(bad(
                "up_block_types",
                format!(
                    "has {} entries, block_out_channels has {n}",
                    j.up_block_types.len()
                ),
            ));
        }
        let down_blocks = j
            .down_block_types
            .iter()
            .map(|t| block_kind("down_block_types", t, "DownBlock2D", "CrossAttnDownBlock2D"))
            .collect::<Result<Vec<_>, _>>()?;
        let up_blocks = j
            .up_block_types
            .iter()
            .map(|t| block_kind("up_block_types", t, "UpBlock2D", "CrossAttnUpBlock2D"))
            .collect::<Result<Vec<_>, _>>()?;
        require(
            "mid_block_type",
            j.mid_block_type.as_deref(),
            &["UNetMidBlock2DCrossAttn"],
        )?;
        require("act_fn", Some(j.act_fn.as_str()), &["silu"])?;
        require("center_input_sample", Some(j.center_input_sample), &[false])?;
        require(
            "dual_cross_attention",
            Some(j.dual_cross_attention),
            &[false],
        )?;
        require("class_embed_type", j.class_embed_type.as_deref(), &[])?;
        require("encoder_hid_dim", j.encoder_hid_dim, &[])?;
        require(
            "resnet_time_scale_shift",
            j.resnet_time_scale_shift.as_deref(),
            &["default"],
        )?;
        require(
            "time_embedding_type",
            j.time_embedding_type.as_deref(),
            &["positional"],
        )?;
        require("conv_in_kernel", j.conv_in_kernel, &[3])?;
        require("conv_out_kernel", j.conv_out_kernel, &[3])?;
        require("downsample_padding", j.downsample_padding, &[1])?;
        require("mid_block_scale_factor", j.mid_block_scale_factor, &[1.0])?;
        require("resnet_out_scale_factor", j.resnet_out_scale_factor, &[1.0])?;
        require("time_embedding_dim", j.time_embedding_dim, &[])?;
        require("time_cond_proj_dim", j.time_cond_proj_dim, &[])?;
        require("attention_type", j.attention_type.as_deref(), &["default"])?;
        if j.reverse_transformer_layers_per_block
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return Err(bad(
                "reverse_transformer_layers_per_block",
                "is not supported (SDXL leaves it null)",
            ));
        }
        if let Some(only) = &j.only_cross_attention {
            if only
                .expand("only_cross_attention", n)?
                .into_iter()
                .any(|b| b)
            {
                return Err(bad("only_cross_attention", "true is not supported"));
            }
        }
        if !j.use_linear_projection {
            return Err(bad(
                "use_linear_projection",
                "false (1x1 convolution projections, SD 1.x) is not supported yet; SDXL and SD 2.x use true",
            ));
        }
        let text_time = match j.addition_embed_type.as_deref() {
            None => None,
            Some("text_time") => Some(TextTimeConfig {
                time_embed_dim: j.addition_time_embed_dim.ok_or_else(|| {
                    bad(
                        "addition_time_embed_dim",
                        "is required with addition_embed_type text_time",
                    )
                })?,
                input_dim: j.projection_class_embeddings_input_dim.ok_or_else(|| {
                    bad(
                        "projection_class_embeddings_input_dim",
                        "is required with addition_embed_type text_time",
                    )
                })?,
            }),
            Some(other) => {
                return Err(bad(
                    "addition_embed_type",
                    format!("`{other}` is not supported (expected text_time)"),
                ))
            }
        };
        let num_heads = match &j.num_attention_heads {
            Some(heads) => heads.expand("num_attention_heads", n)?,
            None => j.attention_head_dim.expand("attention_head_dim", n)?,
        };
        let config = Self {
            in_channels: j.in_channels,
            out_channels: j.out_channels,
            block_out_channels: j.block_out_channels,
            down_blocks,
            up_blocks,
            layers_per_block: j.layers_per_block.expand("layers_per_block", n)?,
            transformer_layers_per_block: j
                .transformer_layers_per_block
                .unwrap_or(PerBlock::One(1))
                .expand("transformer_layers_per_block", n)?,
            num_heads,
            cross_attention_dim: j.cross_attention_dim,
            norm_num_groups: j.norm_num_groups,
            norm_eps: j.norm_eps,
            flip_sin_to_cos: j.flip_sin_to_cos,
            freq_shift: j.freq_shift,
            text_time,
            sample_size: j.sample_size,
        };
        config.validate()?;
        Ok(config)
    }
}

impl UNetConfig {
    /// `stabilityai/stable-diffusion-xl-base-1.0` `unet/config.json`.
    pub fn sdxl_base_1_0() -> Self {
        use BlockKind::{CrossAttn, Plain};
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280],
            down_blocks: vec![Plain, CrossAttn, CrossAttn],
            up_blocks: vec![CrossAttn, CrossAttn, Plain],
            layers_per_block: vec![2; 3],
            transformer_layers_per_block: vec![1, 2, 10],
            num_heads: vec![5, 10, 20],
            cross_attention_dim: 2048,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            text_time: Some(TextTimeConfig {
                time_embed_dim: 256,
                input_dim: 1280 + 6 * 256,
            }),
            sample_size: Some(128),
        }
    }

    /// The SDXL architecture at toy size (every SDXL block type, about 2 MB of f32 weights): the
    /// preset of the parity fixtures (`tools/golden/gen_unet.py`).
    pub fn tiny_sdxl() -> Self {
        Self {
            block_out_channels: vec![8, 16, 32],
            transformer_layers_per_block: vec![1, 1, 2],
            num_heads: vec![1, 2, 4],
            cross_attention_dim: 32,
            norm_num_groups: 4,
            text_time: Some(TextTimeConfig {
                time_embed_dim: 8,
                input_dim: 16 + 6 * 8,
            }),
            sample_size: None,
            ..Self::sdxl_base_1_0()
        }
    }

    /// SDXL's block structure at about 1/5 of its channels (head size 64 as in SDXL): the
    /// benchmark preset, big enough that kernels dominate and small enough for a CPU.
    pub fn mid_sdxl() -> Self {
        Self {
            block_out_channels: vec![64, 128, 256],
            num_heads: vec![1, 2, 4],
            transformer_layers_per_block: vec![1, 1, 2],
            cross_attention_dim: 256,
            text_time: Some(TextTimeConfig {
                time_embed_dim: 32,
                input_dim: 64 + 6 * 32,
            }),
            sample_size: None,
            ..Self::sdxl_base_1_0()
        }
    }

    /// This config in diffusers' `unet/config.json` names: what the Python side of a benchmark
    /// or a fixture script builds `UNet2DConditionModel(**config)` from. Parsing it back gives
    /// the same config.
    pub fn to_diffusers_json(&self) -> serde_json::Value {
        let kind = |k: &BlockKind, cross: &str, plain: &str| match k {
            BlockKind::CrossAttn => cross.to_string(),
            BlockKind::Plain => plain.to_string(),
        };
        let mut v = serde_json::json!({
            "_class_name": "UNet2DConditionModel",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": self.down_blocks.iter()
                .map(|k| kind(k, "CrossAttnDownBlock2D", "DownBlock2D")).collect::<Vec<_>>(),
            "up_block_types": self.up_blocks.iter()
                .map(|k| kind(k, "CrossAttnUpBlock2D", "UpBlock2D")).collect::<Vec<_>>(),
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "transformer_layers_per_block": self.transformer_layers_per_block,
            "attention_head_dim": self.num_heads,
            "cross_attention_dim": self.cross_attention_dim,
            "use_linear_projection": true,
            "act_fn": "silu",
            "center_input_sample": false,
            "norm_num_groups": self.norm_num_groups,
            "norm_eps": self.norm_eps,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "freq_shift": self.freq_shift,
            "sample_size": self.sample_size,
        });
        if let Some(tt) = self.text_time {
            v["addition_embed_type"] = "text_time".into();
            v["addition_time_embed_dim"] = tt.time_embed_dim.into();
            v["projection_class_embeddings_input_dim"] = tt.input_dim.into();
        }
        v
    }

    /// Size of the time embedding: 4 x the first block's channels.
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.block_out_channels.is_empty() {
            return Err(bad("block_out_channels", "must not be empty"));
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c == 0 || c % self.norm_num_groups != 0 {
                return Err(bad(
                    "block_out_channels",
                    format!(
                        "{c} (level {i}) is not a positive multiple of norm_num_groups {}",
                        self.norm_num_groups
                    ),
                ));
            }
            if self.num_heads[i] == 0 || c % self.num_heads[i] != 0 {
                return Err(bad(
                    "attention_head_dim",
                    format!(
                        "{c} channels (level {i}) do not split into {} heads",
                        self.num_heads[i]
                    ),
                ));
            }
        }
        if self.layers_per_block.contains(&0) {
            return Err(bad("layers_per_block", "must be at least 1"));
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(bad("in_channels", "channel counts must be at least 1"));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(bad("norm_eps", "must be a positive number"));
        }
        if let Some(tt) = self.text_time {
            if tt.input_dim <= 6 * tt.time_embed_dim {
                return Err(bad(
                    "projection_class_embeddings_input_dim",
                    format!("{} leaves no room for the pooled text embedding after 6 x {} time features", tt.input_dim, tt.time_embed_dim),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusers_json_round_trips() {
        for config in [
            UNetConfig::sdxl_base_1_0(),
            UNetConfig::tiny_sdxl(),
            UNetConfig::mid_sdxl(),
        ] {
            let json: UNetConfigJson =
                serde_json::from_value(config.to_diffusers_json()).expect("parses as config.json");
            assert_eq!(UNetConfig::try_from(json).expect("validates"), config);
        }
    }
}
