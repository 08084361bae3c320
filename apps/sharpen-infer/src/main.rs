//! `sharpen-infer`: Generate images with SDXL or a sharpened checkpoint.

use clap::Parser;
use sharpen_app::{init_logging, resolve_device, DeviceArg};

/// Generate images with SDXL or a sharpened checkpoint.
#[derive(Debug, Parser)]
#[command(name = "sharpen-infer", version, about)]
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
    anyhow::bail!(
        "sharpen-infer has no job yet: it lands with issue #4 (pipeline and sharpen-infer)"
    )
}
