//! diffusers' `AutoencoderKL` (the SDXL VAE), backend-generic and IO-free. Decode in f32 unless
//! asked otherwise: SDXL's VAE overflows in f16 (`force_upcast`).

mod blocks;
pub mod config;
mod tiling;
mod vae;

pub use blocks::{DecoderBlock, EncoderBlock, VaeAttention, VaeMidBlock};
pub use config::{ConfigError, VaeConfig, VaeConfigJson};
pub use vae::{AutoencoderKL, Decoder, DiagonalGaussian, Encoder};
