//! `cargo bench -p sharpen-tests --bench unet`: UNet forward and forward+backward on the CPU (flex
//! backend) for a mid-size SDXL-architecture config, beside diffusers/torch on the same machine and
//! thread count when the fixture venv (`tools/golden/.venv`) is present. Prints a table.
//!
//! Environment: `SHARPEN_BENCH_REPEATS` (default 5), `SHARPEN_BENCH_PYTHON` (default the venv's python).

use std::process::Command;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use sdxl_unet::{AddedCond, UNet2DConditionModel, UNetConfig, UNetInput};
use sharpen_tests::{workspace_root, TestBackend};

const BATCH: usize = 2;
const HEIGHT: usize = 32;
const WIDTH: usize = 32;
const TOKENS: usize = 77;

fn input<B: Backend>(c: &UNetConfig, device: &B::Device) -> UNetInput<B> {
    let n = Distribution::Normal(0.0, 1.0);
    let tt = c.text_time.expect("text_time");
    UNetInput {
        sample: Tensor::random([BATCH, 4, HEIGHT, WIDTH], n, device),
        timestep: Tensor::from_floats([999.0, 500.0], device),
        encoder_hidden_states: Tensor::random([BATCH, TOKENS, c.cross_attention_dim], n, device),
        added_cond: Some(AddedCond {
            text_embeds: Tensor::random([BATCH, tt.text_embeds_dim()], n, device),
            time_ids: Tensor::random([BATCH, 6], n, device),
        }),
    }
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn time_it(repeats: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    median(
        (0..repeats)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn torch_side(config: &UNetConfig, repeats: usize, threads: usize) -> Option<(f64, f64, String)> {
    let python = std::env::var("SHARPEN_BENCH_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("tools/golden/.venv/bin/python"));
    if !python.exists() {
        println!("(no torch reference: {} not found; run tools/golden/regenerate.sh or set SHARPEN_BENCH_PYTHON)", python.display());
        return None;
    }
    let path = std::env::temp_dir().join(format!("sharpen-bench-unet-{}.json", std::process::id()));
    std::fs::write(&path, config.to_diffusers_json().to_string()).ok()?;
    let script = workspace_root().join("tools/bench/unet_torch.py");
    let args = [BATCH, HEIGHT, WIDTH, TOKENS, repeats, threads].map(|v| v.to_string());
    let out = Command::new(&python)
        .arg(script)
        .arg(&path)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        println!(
            "(torch reference failed: {})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()?
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    Some((
        v["forward_s"].as_f64()?,
        v["forward_backward_s"].as_f64()?,
        format!("torch {} ({} threads)", v["torch"], v["threads"]),
    ))
}

fn main() {
    let repeats: usize = std::env::var("SHARPEN_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = UNetConfig::mid_sdxl();
    let device = Default::default();

    let unet = UNet2DConditionModel::<TestBackend>::new(&config, &device);
    let params: usize = sharpen_weights::expected_keys::<TestBackend, _>(&unet)
        .values()
        .map(|s| s.iter().product::<usize>())
        .sum();
    let x = input::<TestBackend>(&config, &device);
    let forward = time_it(repeats, || {
        let _ = unet.forward(x.clone()).into_data();
    });

    type AD = Autodiff<TestBackend>;
    let unet_ad = UNet2DConditionModel::<AD>::new(&config, &device);
    let x_ad = input::<AD>(&config, &device);
    let forward_backward = time_it(repeats, || {
        let out = unet_ad.forward(x_ad.clone());
        let _grads = out.powf_scalar(2.0).mean().backward();
    });

    println!(
        "UNet benchmark: SDXL blocks, channels {:?}, {params} parameters",
        config.block_out_channels
    );
    println!("input: batch {BATCH}, latents {HEIGHT}x{WIDTH}, {TOKENS} tokens; median of {repeats}; {threads} threads; f32");
    println!();
    println!("| pass             | sharpen (burn flex) | diffusers (torch) | ratio |");
    println!("|------------------|---------------------|-------------------|-------|");
    let torch = torch_side(&config, repeats, threads);
    for (name, ours, theirs) in [
        ("forward", forward, torch.as_ref().map(|t| t.0)),
        (
            "forward+backward",
            forward_backward,
            torch.as_ref().map(|t| t.1),
        ),
    ] {
        match theirs {
            Some(t) => println!(
                "| {name:<16} | {ours:>17.3} s | {t:>15.3} s | {:>5.2} |",
                ours / t
            ),
            None => println!("| {name:<16} | {ours:>17.3} s | {:>17} | {:>5} |", "-", "-"),
        }
    }
    if let Some((_, _, version)) = torch {
        println!("\nreference: {version}; ratio = sharpen / torch (lower is better for sharpen)");
    }
}
