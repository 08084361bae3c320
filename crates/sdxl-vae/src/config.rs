//! `vae/config.json`: a serde mirror with diffusers' names, and the validated config.

use serde::Deserialize;

/// diffusers' `AutoencoderKL` config as `config.json` stores it.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfigJson {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: usize,
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub force_upcast: bool,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

fn yes() -> bool {
    true
}

/// The validated VAE config.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level; decoder levels have one more.
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    /// Image size the VAE was trained at: the tile size of tiled encode/decode.
    pub sample_size: usize,
    /// `latents = (z - shift_factor) * scaling_factor` (0.13025 for SDXL).
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    /// Run in f32 even when the pipeline computes in f16 (SDXL's VAE overflows in f16).
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid VAE config: field `{field}`: {message}")]
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

impl TryFrom<VaeConfigJson> for VaeConfig {
    type Error = ConfigError;

    fn try_from(j: VaeConfigJson) -> Result<Self, ConfigError> {
        let n = j.block_out_channels.len();
        for (field, types, expected) in [
            (
                "down_block_types",
                &j.down_block_types,
                "DownEncoderBlock2D",
            ),
            ("up_block_types", &j.up_block_types, "UpDecoderBlock2D"),
        ] {
            if types.len() != n {
                return Err(bad(
                    field,
                    format!("has {} entries, block_out_channels has {n}", types.len()),
                ));
            }
            if let Some(t) = types.iter().find(|t| t.as_str() != expected) {
                return Err(bad(
                    field,
                    format!("block type `{t}` is not supported (expected {expected})"),
                ));
            }
        }
        if j.act_fn != "silu" {
            return Err(bad(
                "act_fn",
                format!("`{}` is not supported (expected silu)", j.act_fn),
            ));
        }
        let config = Self {
            in_channels: j.in_channels,
            out_channels: j.out_channels,
            latent_channels: j.latent_channels,
            block_out_channels: j.block_out_channels,
            layers_per_block: j.layers_per_block,
            norm_num_groups: j.norm_num_groups,
            sample_size: j.sample_size,
            scaling_factor: j.scaling_factor,
            shift_factor: j.shift_factor,
            force_upcast: j.force_upcast,
            use_quant_conv: j.use_quant_conv,
            use_post_quant_conv: j.use_post_quant_conv,
            mid_block_add_attention: j.mid_block_add_attention,
        };
        config.validate()?;
        Ok(config)
    }
}

impl VaeConfig {
    /// `stabilityai/stable-diffusion-xl-base-1.0` `vae/config.json`.
    pub fn sdxl_base_1_0() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            norm_num_groups: 32,
            sample_size: 1024,
            scaling_factor: 0.13025,
            shift_factor: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }

    /// The SDXL VAE architecture at toy size: the preset of the parity fixtures.
    pub fn tiny_sdxl() -> Self {
        Self {
            block_out_channels: vec![8, 8, 16, 16],
            norm_num_groups: 4,
            sample_size: 32,
            ..Self::sdxl_base_1_0()
        }
    }

    /// Spatial downsampling factor between images and latents (8 for SDXL).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.block_out_channels.is_empty() {
            return Err(bad("block_out_channels", "must not be empty"));
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| c == 0 || c % self.norm_num_groups != 0)
        {
            return Err(bad(
                "block_out_channels",
                format!(
                    "{c} is not a positive multiple of norm_num_groups {}",
                    self.norm_num_groups
                ),
            ));
        }
        if self.layers_per_block == 0 {
            return Err(bad("layers_per_block", "must be at least 1"));
        }
        if self.latent_channels == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return Err(bad("latent_channels", "channel counts must be at least 1"));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(bad("scaling_factor", "must be a positive number"));
        }
        if self.sample_size < self.downscale() {
            return Err(bad(
                "sample_size",
                format!(
                    "{} is smaller than the downscale factor {}",
                    self.sample_size,
                    self.downscale()
                ),
            ));
        }
        Ok(())
    }
}
