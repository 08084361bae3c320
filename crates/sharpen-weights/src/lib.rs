//! The only code in the workspace that knows file formats.
//!
//! - safetensors files, validated before use (truncation, corrupt headers, lying offsets);
//! - transformers / diffusers model folders: `model.safetensors` / `diffusion_pytorch_model.safetensors`,
//!   sharded `*.safetensors.index.json`, variants such as `.fp16`;
//! - strict loading into burn modules through burn-store's PyTorch adapter (Linear weights
//!   transposed, norm `weight`/`bias` -> `gamma`/`beta`), with every tensor cast to the dtype of the
//!   parameter it loads into;
//! - `config.json` mirrors and tokenizer files.

mod checkpoint;
pub mod clip;
mod config;
mod error;
pub mod image_reward;
mod load;
pub mod lora;
pub mod open_clip;
mod pth;
mod safetensors_file;
mod save;
pub mod single_file;
mod source;
pub mod text;
pub mod unet;
pub mod vae;

pub use checkpoint::{Checkpoint, WeightsStem};
pub use config::{read_config, read_json};
pub use error::{KeyReport, WeightsError};
pub use load::{
    expected_keys, expected_params, load_module, load_module_as, LoadOptions, LoadSpec,
};
pub use pth::PthFile;
pub use safetensors::Dtype as SafetensorsDtype;
pub use safetensors_file::{SafetensorsFile, TensorEntry};
pub use save::{module_tensors, save_module, save_tensors, save_tensors_with_metadata};
pub use source::{SourceInfo, WeightSource};
