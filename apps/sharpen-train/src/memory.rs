//! `--dry-run`'s estimate of a run's peak memory: resident weights, gradients, optimizer state,
//! EMA and per-step copies counted exactly from the loaded models; the UNet's activations from
//! `sdxl_unet::memory` (its config, the latent size and how many UNet calls of how many rows a
//! method backpropagates through). Transient inference buffers (VAE, rewards, rollouts without
//! autograd) are not counted.

use burn::module::Module;
use burn::tensor::backend::Backend;
use sharpen_pipeline::SdxlPipeline;

use crate::config::{Method, TrainConfig};
use crate::model::Trainable;

/// The estimate's parts, in bytes.
pub struct MemoryPlan {
    pub parts: Vec<(String, f64)>,
}

impl MemoryPlan {
    pub fn total(&self) -> f64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }
}

impl std::fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        writeln!(f, "  estimated peak memory: {:.2} GiB", gib(self.total()))?;
        for (name, bytes) in &self.parts {
            writeln!(f, "    {name:<56} {:>8.3} GiB", gib(*bytes))?;
        }
        Ok(())
    }
}

/// UNet calls with autograd per micro-batch and the rows each runs.
fn graph(cfg: &TrainConfig) -> (usize, usize) {
    let t = &cfg.trajectory;
    let b = cfg.batch_size;
    match cfg.method {
        Method::Standard => (1, b),
        Method::Autoencoder => (0, 0),
        // The selected trajectory: up to m steps of one row per prompt.
        Method::SharpenSft => (t.m, b),
        // Winner and loser: up to m steps of two rows per prompt.
        Method::SharpenRlhf => (t.m, 2 * b),
        Method::DiffusionDpo => (1, 2 * b),
        Method::Ddpo => (cfg.ddpo.train_timesteps, b * t.n),
    }
}

pub fn plan<B: Backend>(
    cfg: &TrainConfig,
    pipe: &SdxlPipeline<B>,
    trained: &Trainable<B>,
) -> MemoryPlan {
    let compute = cfg.precision.compute_dtype();
    let elem = compute.map_or(4.0, |d| d.size() as f64);
    let unet_params = pipe.unet.num_params() as f64;
    let te = pipe.text_encoders.text_encoder.num_params() as f64
        + pipe.text_encoders.text_encoder_2.num_params() as f64;
    let mut parts = vec![
        (
            format!("frozen UNet ({} B/param)", elem),
            unet_params * elem,
        ),
        (
            "text encoders + VAE (f32)".to_string(),
            (te + pipe.vae.num_params() as f64) * 4.0,
        ),
    ];
    let trainable = trained.num_params() as f64;
    parts.push(("trained weights (f32 master)".into(), trainable * 4.0));
    parts.push(("gradients (f32)".into(), trainable * 4.0));
    parts.push(("AdamW state (2 x f32)".into(), 2.0 * trainable * 4.0));
    if cfg.optim.ema_decay.is_some() {
        parts.push(("EMA copy (f32)".into(), trainable * 4.0));
    }
    if let Some(lora) = &trained.lora {
        let merged: f64 = lora
            .layers
            .iter()
            .map(|l| (l.target.kind.out() * l.target.kind.fan_in()) as f64)
            .sum();
        parts.push(("merged adapted weights, per step".into(), merged * elem));
        if cfg.gradient_checkpointing {
            // The tape collects the merged weights' gradients before they reach A and B.
            let label = "their gradients (checkpointing), per step";
            parts.push((label.into(), merged * elem));
        }
    } else if compute.is_some() && trained.unet.is_some() {
        parts.push(("UNet cast for the step".into(), unet_params * elem));
        if cfg.gradient_checkpointing {
            let label = "its gradients (checkpointing), per step";
            parts.push((label.into(), unet_params * elem));
        }
    }
    let (calls, rows) = graph(cfg);
    if calls > 0 {
        let latent = cfg.resolution / pipe.vae.config.downscale();
        let act = pipe.unet.config.activation_elements(latent, latent, 77);
        let per = if cfg.gradient_checkpointing {
            act.checkpointed
        } else {
            act.full
        };
        parts.push((
            format!("UNet activations ({calls} call(s) x {rows} row(s), {latent}x{latent})"),
            per * (calls * rows) as f64 * elem,
        ));
    }
    MemoryPlan { parts }
}
