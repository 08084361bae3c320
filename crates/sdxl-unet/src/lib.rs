//! diffusers' `UNet2DConditionModel` with everything SDXL uses, backend-generic and IO-free.
//! Module paths equal diffusers' checkpoint keys, except `ff.net.0` / `ff.net.2`, which the
//! weights crate maps (see `sharpen_nn::FeedForward`).

mod blocks;
pub mod checkpoint;
pub mod config;
pub mod memory;
mod unet;

pub use blocks::{DownBlock, MidBlock, UpBlock};
pub use checkpoint::UNetTape;
pub use config::{BlockKind, ConfigError, PerBlock, TextTimeConfig, UNetConfig, UNetConfigJson};
pub use memory::ActivationEstimate;
pub use unet::{AddedCond, UNet2DConditionModel, UNetInput};
