//! The UNet benchmark.

use std::time::Instant;

use anyhow::{bail, Context};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Distribution, Tensor};
use clap::Args;
use sdxl_unet::{AddedCond, UNet2DConditionModel, UNetConfig, UNetInput};
use sharpen_app::{resolve_device, DeviceArg, ResolvedDevice};
use sharpen_nn::{cast_module, AttentionMode};

#[derive(Debug, Args)]
pub struct UnetArgs {
    /// sdxl (SDXL base 1.0, 2.57 B parameters), mid (SDXL blocks at 1/5 of the channels) or tiny.
    #[arg(long, default_value = "mid")]
    pub preset: String,
    /// Image size in pixels (latents are size/8).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Text tokens of the cross-attention context.
    #[arg(long, default_value_t = 77)]
    pub tokens: usize,
    /// f32, bf16 or f16: parameters and compute.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// composed, fused or chunks:N (default: composed on the CPU, fused on CUDA).
    #[arg(long)]
    pub attention: Option<String>,
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Warm-up passes (at least 1) before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Also write the preset as a diffusers `config.json` here (for the PyTorch side).
    #[arg(long)]
    pub write_config: Option<std::path::PathBuf>,
    /// Also time forward+backward (mean-square loss) through autodiff.
    #[arg(long)]
    pub backward: bool,
    /// Also time forward+backward with block-level gradient checkpointing (recompute each
    /// resnet / transformer in backward).
    #[arg(long)]
    pub checkpointing: bool,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

fn preset(name: &str) -> anyhow::Result<UNetConfig> {
    Ok(match name {
        "sdxl" => UNetConfig::sdxl_base_1_0(),
        "mid" => UNetConfig::mid_sdxl(),
        "tiny" => UNetConfig::tiny_sdxl(),
        other => bail!("unknown --preset `{other}`: expected sdxl, mid or tiny"),
    })
}

fn dtype(name: &str) -> anyhow::Result<DType> {
    Ok(match name {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => bail!("unknown --dtype `{other}`: expected f32, bf16 or f16"),
    })
}

fn attention(name: &str) -> anyhow::Result<AttentionMode> {
    Ok(match name {
        "composed" => AttentionMode::Composed,
        "fused" => AttentionMode::Fused,
        _ => match name.strip_prefix("chunks:").map(str::parse) {
            Some(Ok(n)) if n > 0 => AttentionMode::QueryChunks(n),
            _ => bail!("unknown --attention `{name}`: expected composed, fused or chunks:N"),
        },
    })
}

/// Device memory as the backend's allocator sees it, where it can tell.
pub type MemoryProbe<D> = fn(&D) -> Option<(u64, u64)>;

pub fn run(args: &UnetArgs) -> anyhow::Result<()> {
    let device = resolve_device(args.device);
    tracing::info!("device: {}", device.describe());
    match device {
        ResolvedDevice::Cpu => bench::<burn::backend::Autodiff<sharpen_app::CpuBackend>>(
            args,
            Default::default(),
            AttentionMode::Composed,
            |_| None,
            "cpu (burn flex)".into(),
        ),
        #[cfg(any(feature = "cuda", feature = "cuda-untuned"))]
        ResolvedDevice::Cuda(i) => bench::<burn::backend::Autodiff<sharpen_app::CudaBackend>>(
            args,
            burn::backend::cuda::CudaDevice::new(i),
            AttentionMode::Fused,
            cuda_memory,
            format!("cuda:{i} (burn CUDA, fusion + autotune)"),
        ),
    }
}

/// (bytes in use, bytes reserved) by cubecl's CUDA memory pools. Pools keep what they reserved,
/// so the reserved figure after a pass is that pass's peak (plus earlier passes').
#[cfg(any(feature = "cuda", feature = "cuda-untuned"))]
fn cuda_memory(device: &burn::backend::cuda::CudaDevice) -> Option<(u64, u64)> {
    use burn::cubecl::Runtime;
    let usage = burn::cubecl::cuda::CudaRuntime::client(device)
        .memory_usage()
        .ok()?;
    Some((usage.bytes_in_use, usage.bytes_reserved))
}

fn input<B: Backend>(c: &UNetConfig, args: &UnetArgs, device: &B::Device) -> UNetInput<B> {
    let n = Distribution::Normal(0.0, 1.0);
    let (b, latent) = (args.batch, args.size / 8);
    let tt = c.text_time;
    let timesteps: Vec<f32> = (0..b).map(|i| 999.0 - (i as f32 * 499.0) % 999.0).collect();
    UNetInput {
        sample: Tensor::random([b, c.in_channels, latent, latent], n, device),
        timestep: Tensor::from_floats(timesteps.as_slice(), device),
        encoder_hidden_states: Tensor::random([b, args.tokens, c.cross_attention_dim], n, device),
        added_cond: tt.map(|tt| AddedCond {
            text_embeds: Tensor::random([b, tt.text_embeds_dim()], n, device),
            time_ids: Tensor::<B, 1>::from_floats(
                [1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0],
                device,
            )
            .unsqueeze::<2>()
            .repeat_dim(0, b),
        }),
    }
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn time<B: Backend>(
    device: &B::Device,
    warmup: usize,
    repeats: usize,
    mut f: impl FnMut(),
) -> anyhow::Result<(f64, f64)> {
    // The first pass pays for kernel compilation and autotuning on a GPU: reported on its own.
    let start = Instant::now();
    f();
    B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
    let first = start.elapsed().as_secs_f64();
    for _ in 1..warmup {
        f();
    }
    B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        f();
        B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok((first, median(times)))
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn bench<B: AutodiffBackend>(
    args: &UnetArgs,
    device: B::Device,
    default_attention: AttentionMode,
    memory: MemoryProbe<B::Device>,
    backend: String,
) -> anyhow::Result<()> {
    let config = preset(&args.preset)?;
    let dtype = dtype(&args.dtype)?;
    let mode = match &args.attention {
        Some(name) => attention(name)?,
        None => default_attention,
    };
    if !args.size.is_multiple_of(8) || args.size == 0 {
        bail!("--size {} is not a positive multiple of 8", args.size);
    }
    if let Some(path) = &args.write_config {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&config.to_diffusers_json())?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let inner_device = device.clone();

    let mut unet = cast_module(UNet2DConditionModel::<B>::new(&config, &device), dtype);
    unet.set_attention_mode(mode);
    let params: usize = unet.num_params();
    let memory_after_load = memory(&inner_device);

    let inference = unet.valid();
    let x = input::<B::InnerBackend>(&config, args, &device);
    let heap_start = crate::heap::reset_peak();
    let (first_forward, forward) =
        time::<B::InnerBackend>(&device, args.warmup, args.repeats, || {
            let out = inference.forward(x.clone());
            drop(out);
        })
        .context("timing the forward pass")?;
    let mut rows = vec![Row {
        pass: "forward",
        ms: forward * 1e3,
        heap: crate::heap::peak() - heap_start,
        device: memory(&inner_device),
        estimate: None,
    }];
    // What `sdxl_unet::memory` predicts for training passes (activations x batch + gradients).
    let latent = args.size / 8;
    let act = config.activation_elements(latent, latent, args.tokens);
    let (elem, batch) = (dtype.size() as f64, args.batch as f64);
    let grads = params as f64 * elem;
    drop(inference);

    let loss = |out: Tensor<B, 4>| out.cast(DType::F32).powf_scalar(2.0).mean();
    if args.backward {
        let x = input::<B>(&config, args, &device);
        let heap_start = crate::heap::reset_peak();
        let (_, t) = time::<B>(&device, args.warmup, args.repeats, || {
            let _grads = loss(unet.forward(x.clone())).backward();
        })
        .context("timing forward+backward")?;
        rows.push(Row {
            pass: "forward+backward",
            ms: t * 1e3,
            heap: crate::heap::peak() - heap_start,
            device: memory(&inner_device),
            estimate: Some(act.full * batch * elem + grads),
        });
    }
    if args.checkpointing {
        let x = input::<B::InnerBackend>(&config, args, &device);
        let heap_start = crate::heap::reset_peak();
        let (_, t) = time::<B>(&device, args.warmup, args.repeats, || {
            let _grads = unet.checkpointed_grads(x.clone(), loss);
        })
        .context("timing checkpointed forward+backward")?;
        rows.push(Row {
            pass: "fwd+bwd, block checkpointing",
            ms: t * 1e3,
            heap: crate::heap::peak() - heap_start,
            device: memory(&inner_device),
            estimate: Some(act.checkpointed * batch * elem + grads),
        });
    }

    println!(
        "UNet benchmark: preset {}, {params} parameters, {} x {}x{} px (latents {}x{}), {} tokens, {:?}, attention {mode:?}",
        args.preset, args.batch, args.size, args.size, args.size / 8, args.size / 8, args.tokens, dtype
    );
    println!(
        "backend: {backend}; median of {} after {} warm-up (the first pass took {:.1} s)",
        args.repeats, args.warmup, first_forward
    );
    println!(
        "memory: peak host heap above the start of the pass (the CPU backend's tensors); on a GPU,"
    );
    println!("the device memory its pools reserve (in use), which only grows over the run");
    if args.backward || args.checkpointing {
        let bytes = params * dtype.size();
        println!(
            "(the parameter gradients alone take {:.1} MiB of a backward pass's peak)",
            bytes as f64 / (1 << 20) as f64
        );
    }
    println!();
    println!(
        "| pass                         | time        | peak heap  | estimate   | device reserved (in use) |"
    );
    println!(
        "|------------------------------|-------------|------------|------------|--------------------------|"
    );
    for row in &rows {
        let device = match row.device {
            Some((used, reserved)) => format!("{:.2} GiB ({:.2} GiB)", gib(reserved), gib(used)),
            None => "-".to_string(),
        };
        let estimate = match row.estimate {
            Some(e) => format!("{:.1} MiB", e / (1 << 20) as f64),
            None => "-".to_string(),
        };
        println!(
            "| {:<28} | {:>8.2} ms | {:>6.1} MiB | {:>10} | {:>24} |",
            row.pass,
            row.ms,
            row.heap as f64 / (1 << 20) as f64,
            estimate,
            device
        );
    }
    let json = serde_json::json!({
        "preset": args.preset, "parameters": params, "batch": args.batch, "size": args.size,
        "dtype": args.dtype, "attention": format!("{mode:?}"), "backend": backend,
        "first_forward_s": first_forward, "memory_after_load": memory_after_load.map(|m| m.1),
        "passes": rows.iter().map(|r| serde_json::json!({
            "pass": r.pass, "ms": r.ms, "peak_heap_bytes": r.heap, "estimated_bytes": r.estimate,
            "device_reserved_bytes": r.device.map(|d| d.1),
        })).collect::<Vec<_>>(),
    });
    println!("{json}");
    Ok(())
}

struct Row {
    pass: &'static str,
    ms: f64,
    heap: usize,
    device: Option<(u64, u64)>,
    /// The config-based estimate of the pass's peak (activations and, with backward, gradients).
    estimate: Option<f64>,
}
