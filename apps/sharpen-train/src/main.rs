//! `sharpen-train`: Fine-tune SDXL with Diffusion-Sharpening (SFT and RLHF), standard fine-tuning and baselines.

use clap::Parser;
use sharpen_app::{init_logging, resolve_device, DeviceArg};

/// Fine-tune SDXL with Diffusion-Sharpening (SFT and RLHF), standard fine-tuning and baselines.
#[derive(Debug, Parser)]
#[command(name = "sharpen-train", version, about)]
struct Args {
    /// Where to run: cpu, cuda or cuda:N. A CUDA request falls back to the CPU, with a warning,
    /// when this binary lacks the `cuda` feature or no GPU is present.
    #[arg(long, default_value = "cpu")]
    device: DeviceArg,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging();
    let device = resolve_device(args.device);
    tracing::info!("device: {}", device.describe());
    anyhow::bail!("sharpen-train has no job yet: it lands with issue #6 (training) and #7 (the shapes-world main job)")
}
