//! SDXL single-file checkpoints (`sd_xl_base_1.0.safetensors`, the original SGM layout that
//! A1111 and ComfyUI use): one file holding the UNet (`model.diffusion_model.*`), the VAE
//! (`first_stage_model.*`), CLIP ViT-L (`conditioner.embedders.0.transformer.*`) and OpenCLIP
//! ViT-bigG (`conditioner.embedders.1.model.*`, fused `in_proj_weight`, transposed
//! `text_projection`).
//!
//! Each component is loaded through a view that gives the file's tensors diffusers' names (the
//! mapping of diffusers' `single_file_utils`, checked against key lists that diffusers' own
//! converter accepts). Keys the mapping cannot place stay under their own name and are reported
//! as unused; loading stays strict.

pub(crate) mod keys;
mod view;

use std::path::Path;

use burn::tensor::backend::Backend;
use sdxl_text::{ClipTextConfig, ClipTextModel, ClipTextModelWithProjection};
use sdxl_unet::{UNet2DConditionModel, UNetConfig};
use sdxl_vae::{AutoencoderKL, VaeConfig};

pub use keys::{map_key, sgm_unet_module, Component, Derived};
pub use view::SingleFileView;

use crate::checkpoint::Checkpoint;
use crate::error::WeightsError;
use crate::load::{load_module_as, LoadOptions, LoadSpec};
use crate::text::clip_text_key;
use crate::unet::{unet_checkpoint_key, unet_key};

/// An opened single-file checkpoint.
#[derive(Debug, Clone)]
pub struct SingleFile {
    checkpoint: Checkpoint,
}

fn identity(key: &str) -> String {
    key.to_string()
}

impl SingleFile {
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        Ok(Self {
            checkpoint: Checkpoint::open_file(path)?,
        })
    }

    /// The view of one component, in diffusers naming.
    pub fn view(&self, component: Component) -> SingleFileView {
        SingleFileView::new(self.checkpoint.clone(), component)
    }

    /// The UNet. The file has no config: pass the architecture's (`UNetConfig::sdxl_base_1_0()`).
    pub fn unet<B: Backend>(
        &self,
        config: &UNetConfig,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<UNet2DConditionModel<B>, WeightsError> {
        let layers = config.layers_per_block[0];
        if config.layers_per_block.iter().any(|&l| l != layers) {
            return Err(WeightsError::InvalidConfig {
                path: "(UNet config)".into(),
                message: "field `layers_per_block`: the single-file layout needs the same value on every level".into(),
            });
        }
        let spec = LoadSpec {
            model: "UNet2DConditionModel (single file)",
            key_map: &unet_key,
            checkpoint_key: &unet_checkpoint_key,
            allowed_extra: &[],
        };
        let view = self.view(Component::Unet {
            layers_per_block: layers,
        });
        load_module_as(
            UNet2DConditionModel::new(config, device),
            &view,
            &spec,
            options.dtype,
        )
    }

    /// The VAE (`first_stage_model.*`).
    pub fn vae<B: Backend>(
        &self,
        config: &VaeConfig,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<AutoencoderKL<B>, WeightsError> {
        let view = self.view(Component::Vae {
            levels: config.block_out_channels.len(),
        });
        let spec = LoadSpec::exact("AutoencoderKL (single file)");
        load_module_as(
            AutoencoderKL::new(config, device),
            &view,
            &spec,
            options.dtype,
        )
    }

    /// Text encoder 1, CLIP ViT-L (`conditioner.embedders.0.transformer.*`).
    pub fn text_encoder<B: Backend>(
        &self,
        config: &ClipTextConfig,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<ClipTextModel<B>, WeightsError> {
        let spec = LoadSpec {
            model: "CLIPTextModel (single file)",
            key_map: &clip_text_key,
            checkpoint_key: &identity,
            allowed_extra: &[r"text_model\.embeddings\.position_ids"],
        };
        load_module_as(
            ClipTextModel::new(config, device),
            &self.view(Component::ClipL),
            &spec,
            options.dtype,
        )
    }

    /// Text encoder 2, OpenCLIP ViT-bigG (`conditioner.embedders.1.model.*`).
    pub fn text_encoder_2<B: Backend>(
        &self,
        config: &ClipTextConfig,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<ClipTextModelWithProjection<B>, WeightsError> {
        let spec = LoadSpec {
            model: "CLIPTextModelWithProjection (single file)",
            key_map: &identity,
            checkpoint_key: &identity,
            // OpenCLIP's contrastive temperature and causal mask buffer are not text-encoder weights.
            allowed_extra: &["logit_scale", "attn_mask"],
        };
        let model = ClipTextModelWithProjection::new(config, device);
        load_module_as(model, &self.view(Component::ClipG), &spec, options.dtype)
    }
}
