//! What a run writes when it ends: the LoRA adapters in both layouts and the trained pipeline.

use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use sharpen_weights::unet::load_unet;
use sharpen_weights::LoadOptions;

use crate::config::TrainConfig;
use crate::data::Source;
use crate::model::{export_pipeline, Trainable};
use crate::setup::latent_scaling_factor;

/// Writes `root/lora/` (LoRA runs) and `root/pipeline/` (`export_pipeline`) from the final
/// weights (the EMA when kept).
pub fn finish<B: Backend>(
    cfg: &TrainConfig,
    root: &Path,
    model: Trainable<B>,
    source: &Source,
    device: &B::Device,
) -> anyhow::Result<()> {
    if model.lora.is_some() {
        let dir = root.join("lora");
        model
            .export_lora(&dir, &cfg.model)
            .with_context(|| format!("exporting the LoRA adapters to {}", dir.display()))?;
        eprintln!(
            "LoRA adapters (diffusers and kohya layouts): {}",
            dir.display()
        );
    }
    if !cfg.export_pipeline {
        return Ok(());
    }
    // A LoRA run exports the base with the adapters merged, into the f32 weights (the run's
    // frozen copy may be in the compute dtype).
    let model = match &model.lora {
        Some(_) => {
            let base = load_unet(&cfg.model.join("unet"), &LoadOptions::default(), device)?;
            Trainable {
                unet: Some(model.unet_with(Some(&base))?.into_owned()),
                text_encoders: None,
                vae: None,
                lora: None,
            }
        }
        None => model,
    };
    let factor = model
        .vae
        .as_ref()
        .map(|vae| latent_scaling_factor(vae, source, cfg.resolution, device))
        .transpose()?;
    if let Some(f) = factor {
        tracing::info!(
            scaling_factor = f,
            "measured the VAE's latent scaling factor"
        );
    }
    let out = root.join("pipeline");
    export_pipeline(&model, &cfg.model, &out, factor)
        .with_context(|| format!("exporting the trained pipeline to {}", out.display()))?;
    eprintln!("trained pipeline: {}", out.display());
    Ok(())
}
