//! Loading diffusers' `unet/` folders into [`UNet2DConditionModel`].

use std::path::Path;

use burn::tensor::backend::Backend;
use sdxl_unet::{UNet2DConditionModel, UNetConfig, UNetConfigJson};

use crate::checkpoint::{Checkpoint, WeightsStem};
use crate::config::read_config;
use crate::error::WeightsError;
use crate::load::{load_module_as, LoadOptions, LoadSpec};

/// The UNet's key remap table: checkpoint key fragment <-> module path fragment. The only keys a
/// Rust struct cannot mirror are the numbered entries of `FeedForward.net`.
const UNET_REMAP: &[(&str, &str)] = &[
    // GEGLU, the first entry of `ff.net` (`net.1` is a parameterless Dropout).
    (".ff.net.0.", ".ff.net_0."),
    // The output Linear, the third entry of `ff.net`.
    (".ff.net.2.", ".ff.net_2."),
];

/// Checkpoint key -> module key.
pub fn unet_key(checkpoint_key: &str) -> String {
    UNET_REMAP
        .iter()
        .fold(checkpoint_key.to_string(), |k, (ckpt, module)| {
            k.replace(ckpt, module)
        })
}

/// Module key -> checkpoint key (the inverse of [`unet_key`]).
pub fn unet_checkpoint_key(module_key: &str) -> String {
    UNET_REMAP
        .iter()
        .fold(module_key.to_string(), |k, (ckpt, module)| {
            k.replace(module, ckpt)
        })
}

/// Reads and validates `dir/config.json` of a diffusers UNet.
pub fn load_unet_config(dir: &Path) -> Result<UNetConfig, WeightsError> {
    read_config::<UNetConfigJson, UNetConfig, _>(&dir.join("config.json"))
}

/// Loads a diffusers `unet/` folder (`config.json` + `diffusion_pytorch_model[.variant].safetensors`
/// or shards), strictly.
pub fn load_unet<B: Backend>(
    dir: &Path,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<UNet2DConditionModel<B>, WeightsError> {
    let config = load_unet_config(dir)?;
    let checkpoint = Checkpoint::open_folder(dir, WeightsStem::Diffusers, options.variant())?;
    let spec = LoadSpec {
        model: "UNet2DConditionModel",
        key_map: &unet_key,
        checkpoint_key: &unet_checkpoint_key,
        allowed_extra: &[],
    };
    load_module_as(
        UNet2DConditionModel::new(&config, device),
        &checkpoint,
        &spec,
        options.dtype,
    )
}

/// Writes `unet` as a diffusers `unet/` folder: `config.json` and
/// `diffusion_pytorch_model.safetensors` (f32), each written to a temporary name and renamed.
/// [`load_unet`] reads it back exactly; diffusers' `UNet2DConditionModel.from_pretrained` reads it.
pub fn save_unet<B: Backend>(
    dir: &Path,
    unet: &UNet2DConditionModel<B>,
) -> Result<(), WeightsError> {
    std::fs::create_dir_all(dir).map_err(|e| WeightsError::io(dir, e))?;
    let config = serde_json::to_string_pretty(&unet.config.to_diffusers_json())
        .expect("a JSON value serialises");
    let path = dir.join("config.json");
    let tmp = dir.join("config.json.tmp");
    std::fs::write(&tmp, config).map_err(|e| WeightsError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| WeightsError::io(&path, e))?;
    crate::save::save_module(
        &dir.join("diffusion_pytorch_model.safetensors"),
        unet,
        &unet_checkpoint_key,
    )
}
