//! `sharpen-eval`: Evaluate checkpoints with the reward zoo on prompt benchmarks.

use clap::Parser;
use sharpen_app::{init_logging, resolve_device, DeviceArg};

/// Evaluate checkpoints with the reward zoo on prompt benchmarks.
#[derive(Debug, Parser)]
#[command(name = "sharpen-eval", version, about)]
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
    anyhow::bail!("sharpen-eval has no job yet: it lands with issue #7 (sharpen-eval)")
}
