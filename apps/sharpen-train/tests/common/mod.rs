//! Helpers of the end-to-end tests: a config for the tiny SDXL pipeline, running the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn config(dir: &Path, method: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{method}.toml"));
    let model = workspace().join("tests/fixtures/pipeline/tiny-sdxl");
    std::fs::write(
        &path,
        format!(
            r#"name = "t"
method = "{method}"
model = "{}"
reward = "jpeg-compressibility"
steps = 4
batch_size = 1
resolution = 32
checkpoint_every = 2
{extra}
[data]
kind = "shapes"
[rlhf]
generation_steps = 4
reward_scale = 10.0
[optim]
lr = 1e-4
accumulation = 1
"#,
            model.display()
        ),
    )
    .unwrap();
    path
}

pub fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sharpen-train"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("runs sharpen-train")
}

pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("elapsed_s");
            v
        })
        .collect()
}

/// Runs `cfg` to the end into `a`, and into `b` stopped after 2 steps then resumed (`between`
/// runs in the stopped state). Returns (a, b).
pub fn uninterrupted_and_resumed(
    dir: &Path,
    cfg: &str,
    between: impl FnOnce(&Path),
) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("a"), dir.join("b"));
    ok(&train(&[
        "--config",
        cfg,
        "--output-dir",
        a.to_str().unwrap(),
    ]));
    ok(&train(&[
        "--config",
        cfg,
        "--output-dir",
        b.to_str().unwrap(),
        "--steps",
        "2",
    ]));
    between(&b);
    ok(&train(&[
        "--config",
        cfg,
        "--output-dir",
        b.to_str().unwrap(),
        "--resume",
        "latest",
    ]));
    (a, b)
}

/// Runs sharpen-train and fails the test when it has not finished after `secs` seconds (a hung
/// data-parallel run is killed, not waited for). Its output is drained while it runs, so a long
/// log cannot fill the pipe and stall it.
pub fn train_within(args: &[&str], secs: u64) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sharpen-train"))
        .args(args)
        .current_dir(workspace())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs sharpen-train");
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("sharpen-train {args:?} did not finish within {secs} s (hung?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Output {
        status: child.wait().unwrap(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A run directory's UNet weights at `checkpoint` (e.g. `step-000020`), by name.
pub fn unet_weights(run: &Path, checkpoint: &str) -> Vec<(String, Vec<f32>)> {
    let path = run.join(format!(
        "checkpoints/{checkpoint}/unet/diffusion_pytorch_model.safetensors"
    ));
    let file = sharpen_weights::SafetensorsFile::open(&path).unwrap();
    let mut names: Vec<&String> = file.tensors.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|k| {
            let data = file.read(k, burn::tensor::DType::F32).unwrap();
            (k.clone(), data.to_vec::<f32>().unwrap())
        })
        .collect()
}

/// The largest relative difference of two sets of weights: max over tensors of
/// `||a - b|| / ||a||` (L2).
pub fn max_rel_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((ka, va), (kb, vb))| {
            assert_eq!(ka, kb);
            let norm = va.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let diff = va
                .iter()
                .zip(vb)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum::<f64>()
                .sqrt();
            diff / norm.max(1e-30)
        })
        .fold(0.0, f64::max)
}

/// `sharpen-train --config CFG --output-dir OUT EXTRA...`.
pub fn train_in(cfg: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--config",
        cfg.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    train(&args)
}

/// Adds `lines` to the config's `[rlhf]` section.
pub fn with_rlhf(cfg: &Path, lines: &str) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let text = text.replacen("[rlhf]\n", &format!("[rlhf]\n{lines}\n"), 1);
    std::fs::write(cfg, text).unwrap();
}

/// Two runs' metrics agree step by step on `keys` (within float rounding).
pub fn assert_same_training(a_dir: &Path, b_dir: &Path, keys: &[&str]) {
    let (a, b) = (metrics(a_dir), metrics(b_dir));
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        for key in keys {
            let (u, v) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!(
                (u - v).abs() <= 1e-4 * u.abs().max(1e-3),
                "{key}: {u} vs {v} ({} vs {})",
                a_dir.display(),
                b_dir.display()
            );
        }
    }
}
