//! Loading diffusers' `vae/` folders into [`AutoencoderKL`].

use std::path::Path;

use burn::tensor::backend::Backend;
use sdxl_vae::{AutoencoderKL, VaeConfig, VaeConfigJson};

use crate::checkpoint::{Checkpoint, WeightsStem};
use crate::config::read_config;
use crate::error::WeightsError;
use crate::load::{load_module_as, LoadOptions, LoadSpec};

/// Reads and validates `dir/config.json` of a diffusers `AutoencoderKL`.
pub fn load_vae_config(dir: &Path) -> Result<VaeConfig, WeightsError> {
    read_config::<VaeConfigJson, VaeConfig, _>(&dir.join("config.json"))
}

/// Loads a diffusers `vae/` folder strictly (module paths equal the checkpoint keys).
pub fn load_vae<B: Backend>(
    dir: &Path,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<AutoencoderKL<B>, WeightsError> {
    let config = load_vae_config(dir)?;
    let checkpoint = Checkpoint::open_folder(dir, WeightsStem::Diffusers, options.variant())?;
    load_module_as(
        AutoencoderKL::new(&config, device),
        &checkpoint,
        &LoadSpec::exact("AutoencoderKL"),
        options.dtype,
    )
}
