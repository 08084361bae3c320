//! `precision = "bf16"` / `"f16"`: the UNet computes in reduced precision while the optimizer
//! keeps f32 master weights. On the CPU (flex) the first step's loss and gradient norm agree with
//! f32 to reduced-precision rounding, and checkpoints hold f32 weights.

mod common;

use common::{config, metrics, ok, train_in};
use sharpen_weights::{SafetensorsDtype, SafetensorsFile};

fn run(
    dir: &std::path::Path,
    method: &str,
    precision: &str,
    extra: &str,
) -> Vec<serde_json::Value> {
    let name = format!(
        "{method}-{precision}{}",
        if extra.is_empty() { "" } else { "-lora" }
    );
    let cfg = config(dir, &name, &format!("precision = \"{precision}\"\n{extra}"));
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("method = \"{name}\""),
        &format!("method = \"{method}\""),
    );
    std::fs::write(&cfg, text).unwrap();
    let out = dir.join(&name);
    ok(&train_in(&cfg, &out, &["--steps", "2"]));
    metrics(&out)
}

fn rel(a: &serde_json::Value, b: &serde_json::Value, key: &str) -> f64 {
    let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
    (x - y).abs() / y.abs()
}

#[test]
fn reduced_precision_steps_match_f32_to_rounding() {
    let tmp = tempfile::tempdir().unwrap();
    let lora = "[lora]\nrank = 2\n";
    for (method, extra) in [("standard", ""), ("sharpen-sft", ""), ("sharpen-sft", lora)] {
        let full = run(tmp.path(), method, "f32", extra);
        for precision in ["bf16", "f16"] {
            let low = run(tmp.path(), method, precision, extra);
            let what = format!("{method} {precision} {extra}");
            assert!(
                rel(&low[0], &full[0], "loss") < 0.03,
                "{what}: {} vs {}",
                low[0],
                full[0]
            );
            assert!(
                rel(&low[0], &full[0], "grad_norm") < 0.05,
                "{what}: {} vs {}",
                low[0],
                full[0]
            );
            assert_ne!(
                low[0]["loss"], full[0]["loss"],
                "{what}: computed in another precision"
            );
        }
    }
    // Master weights stay f32 in checkpoints.
    let file = SafetensorsFile::open(
        &tmp.path()
            .join("standard-bf16/checkpoints/step-000002/unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    assert!(file
        .tensors
        .values()
        .all(|t| t.dtype == SafetensorsDtype::F32));
}

#[test]
fn reduced_precision_refuses_gradient_checkpointing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "standard",
        "precision = \"bf16\"\ngradient_checkpointing = true\n",
    );
    let out = train_in(&cfg, &tmp.path().join("r"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("precision"));
}
