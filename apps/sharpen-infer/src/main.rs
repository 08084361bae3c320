//! `sharpen-infer`: generate images with SDXL (or a sharpened checkpoint) from a prompt.

mod model;
mod output;
mod run;

use std::path::PathBuf;

use clap::Parser;
use sharpen_app::{init_logging, resolve_device, DeviceArg, ResolvedDevice};

/// Generate images with SDXL or a sharpened checkpoint.
#[derive(Debug, Parser)]
#[command(name = "sharpen-infer", version, about)]
pub struct Args {
    /// A diffusers pipeline folder, an SDXL single-file .safetensors, or a Hugging Face repo id in
    /// the local HF cache (e.g. stabilityai/stable-diffusion-xl-base-1.0).
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub prompt: String,
    /// Without one, SDXL uses zero unconditional embeddings (force_zeros_for_empty_prompt).
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Run seed; each image's noise comes from a seed derived from it and the image index.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 1)]
    pub num_images: usize,
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 turns guidance off).
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f64,
    /// ddim, ddpm, euler, euler-a, dpmpp-2m or dpmpp-2m-karras.
    #[arg(long, default_value = "euler")]
    pub scheduler: String,
    #[arg(long, default_value_t = 1024)]
    pub width: usize,
    #[arg(long, default_value_t = 1024)]
    pub height: usize,
    /// Initial noise: a safetensors file with a tensor `latents` [num_images, 4, height/8, width/8]
    /// of unit variance (scaled by the scheduler's init_noise_sigma, as diffusers does).
    #[arg(long)]
    pub latents: Option<PathBuf>,
    /// Write the final latents (before VAE scaling and decode) as tensor `latents`.
    #[arg(long)]
    pub save_latents: Option<PathBuf>,
    /// PNG path; several images become <stem>-<i>.png. A JSON sidecar goes beside each image.
    #[arg(long, default_value = "sharpen.png")]
    pub output: PathBuf,
    /// Weight variant to read (e.g. fp16).
    #[arg(long)]
    pub variant: Option<String>,
    /// Best-of-N inference scaling: N candidates per image (candidate 0 from --seed, the others
    /// from seeds derived from it), the one --verifier scores highest is kept. Costs N x the NFEs.
    #[arg(long, default_value_t = 1)]
    pub best_of: usize,
    /// The reward that picks the best candidate: clip, pickscore, aesthetic,
    /// jpeg-compressibility, jpeg-incompressibility, shapes or weighted.
    #[arg(long)]
    pub verifier: Option<String>,
    /// What the verifier loads: a CLIPModel folder (clip, pickscore), the predictor's .pth
    /// (aesthetic; its CLIP ViT-L/14 folder beside it as clip-vit-large-patch14), or the parts
    /// file (weighted).
    #[arg(long)]
    pub verifier_weights: Option<PathBuf>,
    /// A UNet LoRA to merge before generating (diffusers/PEFT or kohya layout, as sharpen-train
    /// writes to `RUN/lora/`); repeat for several.
    #[arg(long)]
    pub lora: Vec<PathBuf>,
    /// Strength of the LoRA(s): one value for all, or one per --lora in the same order.
    #[arg(long)]
    pub lora_scale: Vec<f64>,
    /// cpu, cuda or cuda:N (falls back to the CPU, with a warning, when no GPU can be used).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging();
    let device = resolve_device(args.device);
    tracing::info!("device: {}", device.describe());
    match device {
        // flex runs composed attention fastest; CUDA gets burn's fused (flash) attention.
        ResolvedDevice::Cpu => run::run::<sharpen_app::CpuBackend>(&args, Default::default(), None),
        #[cfg(feature = "cuda")]
        ResolvedDevice::Cuda(i) => run::run::<sharpen_app::CudaBackend>(
            &args,
            burn::backend::cuda::CudaDevice::new(i),
            Some(sharpen_nn::AttentionMode::Fused),
        ),
    }
}
