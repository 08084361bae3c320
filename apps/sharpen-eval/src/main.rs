//! `sharpen-eval`: evaluate models on prompt benchmarks with the reward zoo: `shapes`, the shapes
//! world's compositional benchmark; `compare`, several methods on it side by side; `score`, one
//! reward over a manifest of images and prompts; `bench`, models on a prompt file (DrawBench,
//! T2I-CompBench style) scored by rewards of the zoo.

mod bench;
mod checks;
mod compare;
mod ledger;
mod paired;
mod parallel;
mod runs;
mod score;
mod shapes;
mod steps;

use clap::{Parser, Subcommand};
use sharpen_app::{init_logging, resolve_device, DeviceArg, ResolvedDevice};

/// Evaluate models on prompt benchmarks.
#[derive(Debug, Parser)]
#[command(name = "sharpen-eval", version, about)]
struct Args {
    #[command(subcommand)]
    job: Job,
    /// Where to run: cpu, cuda or cuda:N. A CUDA request falls back to the CPU, with a warning,
    /// when this binary lacks the `cuda` feature or no GPU is present.
    #[arg(long, default_value = "cpu", global = true)]
    device: DeviceArg,
}

#[derive(Debug, Subcommand)]
enum Job {
    /// A shapes-world model on a split's prompts: all-correct accuracy and partial credit (mean
    /// and 95% CI over seeds) for one object, two objects and overall.
    Shapes(shapes::ShapesArgs),
    /// Several models and methods on the same shapes-world prompts and seeds: a table (Markdown
    /// and JSON) with 95% CIs, reward vs NFEs (best-of-N curve of the base model, the other
    /// methods as points) and reward vs training step. A prompt-file config (configs/bench/)
    /// is evaluated as `bench` does, with its NFE plot.
    Compare(compare::CompareArgs),
    /// One reward over a manifest of images and prompts (JSON lines in, the same lines with
    /// `score` out).
    Score(score::ScoreArgs),
    /// Models on a prompt file (DrawBench .csv, .txt, .jsonl) scored by rewards of the zoo, on
    /// the same prompts and noise: a table with 95% CIs over seeds, best-of-N optional, and
    /// reward vs NFEs.
    Bench(bench::BenchArgs),
    /// Training runs side by side on their validation samples (no generation): each run's
    /// validation reward from its first validation to its last, and each run minus the first
    /// run, paired seed by seed, with 95% CIs over seeds. The runs must share their validation
    /// settings.
    Runs(runs::RunsArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging();
    let device = resolve_device(args.device);
    tracing::info!("device: {}", device.describe());
    match (&args.job, device) {
        // Reads run folders only: no model, so no device.
        (Job::Runs(a), _) => runs::run(a),
        (Job::Shapes(a), ResolvedDevice::Cpu) => {
            shapes::run::<sharpen_app::CpuBackend>(a, Default::default())
        }
        #[cfg(feature = "cuda")]
        (Job::Shapes(a), ResolvedDevice::Cuda(i)) => {
            shapes::run::<sharpen_app::CudaBackend>(a, burn::backend::cuda::CudaDevice::new(i))
        }
        (Job::Compare(a), ResolvedDevice::Cpu) => {
            compare::run::<sharpen_app::CpuBackend>(a, Default::default())
        }
        #[cfg(feature = "cuda")]
        (Job::Compare(a), ResolvedDevice::Cuda(i)) => {
            compare::run::<sharpen_app::CudaBackend>(a, burn::backend::cuda::CudaDevice::new(i))
        }
        (Job::Bench(a), ResolvedDevice::Cpu) => {
            bench::run::<sharpen_app::CpuBackend>(a, Default::default())
        }
        #[cfg(feature = "cuda")]
        (Job::Bench(a), ResolvedDevice::Cuda(i)) => {
            bench::run::<sharpen_app::CudaBackend>(a, burn::backend::cuda::CudaDevice::new(i))
        }
        (Job::Score(a), ResolvedDevice::Cpu) => {
            score::run::<sharpen_app::CpuBackend>(a, Default::default())
        }
        #[cfg(feature = "cuda")]
        (Job::Score(a), ResolvedDevice::Cuda(i)) => {
            score::run::<sharpen_app::CudaBackend>(a, burn::backend::cuda::CudaDevice::new(i))
        }
    }
}
