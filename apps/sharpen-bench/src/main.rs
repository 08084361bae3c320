//! `sharpen-bench`: times sharpen's models with random weights on the CPU or a GPU and reports
//! device memory, for side-by-side runs with the PyTorch reference (`tools/bench/`).
//!
//! `sharpen-bench unet --preset sdxl --size 1024 --batch 2 --dtype bf16 --device cuda` is the
//! SDXL UNet at 1024x1024 pixels (128x128 latents). Prints a table and, last, one JSON line.

mod heap;
mod unet;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

use clap::{Parser, Subcommand};
use sharpen_app::init_logging;

#[derive(Debug, Parser)]
#[command(name = "sharpen-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// UNet forward (and optionally forward+backward) with random weights.
    Unet(unet::UnetArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Unet(args) => unet::run(&args),
    }
}
