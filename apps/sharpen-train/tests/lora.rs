//! LoRA training end to end on the tiny SDXL pipeline: every UNet method trains adapters of a
//! frozen base; checkpoints hold only the adapters and resume bit-exactly; the run exports them in
//! both layouts, and the exported merged pipeline equals the base with the exported file merged.

mod common;

use std::path::Path;

use common::{config, metrics, ok, train_in, uninterrupted_and_resumed, workspace};
use sharpen_app::CpuBackend as B;
use sharpen_weights::lora::load_unet_lora;
use sharpen_weights::unet::{load_unet, unet_checkpoint_key};
use sharpen_weights::{module_tensors, LoadOptions};

const LORA: &str = r#"
[lora]
rank = 2
alpha = 4.0
target_modules = ["to_q", "to_k", "to_v", "to_out.0", "conv1"]
"#;

/// A checkpoint's adapter file: every tensor's values and the header metadata (the metadata map's
/// key order in the file is not fixed, so bytes are not compared).
type LoraFile = (
    Vec<(String, Vec<f32>)>,
    std::collections::BTreeMap<String, String>,
);

fn lora_file(run: &Path, step: &str) -> LoraFile {
    let path = run
        .join("checkpoints")
        .join(step)
        .join("lora/pytorch_lora_weights.safetensors");
    let file = sharpen_weights::SafetensorsFile::open(&path).unwrap();
    let tensors = file
        .tensors
        .keys()
        .map(|k| {
            let data = file.read(k, burn::tensor::DType::F32).unwrap();
            (k.clone(), data.to_vec::<f32>().unwrap())
        })
        .collect();
    (tensors, file.metadata.clone())
}

#[test]
fn lora_sharpening_resumes_exactly_and_exports_both_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!("export_pipeline = true\n{LORA}");
    let cfg = config(tmp.path(), "sharpen-sft", &extra);
    let cfg = cfg.to_str().unwrap();
    let (a, b) = uninterrupted_and_resumed(tmp.path(), cfg, |_| {});
    assert_eq!(metrics(&a), metrics(&b));
    assert_eq!(lora_file(&a, "step-000004"), lora_file(&b, "step-000004"));
    assert_ne!(lora_file(&a, "step-000002"), lora_file(&a, "step-000004"));
    assert!(
        !a.join("checkpoints/step-000004/unet").exists(),
        "a LoRA checkpoint holds the adapters only"
    );
    for file in ["pytorch_lora_weights.safetensors", "lora_kohya.safetensors"] {
        assert!(a.join("lora").join(file).is_file(), "{file}");
    }

    // The exported pipeline's UNet = the base with the exported adapters merged; untargeted
    // tensors are the base's.
    let device = Default::default();
    let options = LoadOptions::default();
    let base_dir = workspace().join("tests/fixtures/pipeline/tiny-sdxl/unet");
    let base = load_unet::<B>(&base_dir, &options, &device).unwrap();
    let exported = load_unet::<B>(&a.join("pipeline/unet"), &options, &device).unwrap();
    for file in ["pytorch_lora_weights.safetensors", "lora_kohya.safetensors"] {
        let lora = load_unet_lora(&a.join("lora").join(file), &base, &device).unwrap();
        assert_eq!(lora.layers.len(), exported_targets(&base), "{file}");
        let merged = lora.merge(base.clone(), 1.0, &unet_checkpoint_key).unwrap();
        let key = |k: &str| k.to_string();
        assert_eq!(
            module_tensors(&merged, &key),
            module_tensors(&exported, &key),
            "{file}"
        );
    }
    let tensors = |m: &sdxl_unet::UNet2DConditionModel<B>| module_tensors(m, &unet_checkpoint_key);
    let (before, after) = (tensors(&base), tensors(&exported));
    let find = |v: &[(String, burn::tensor::TensorData)], k: &str| {
        v.iter().find(|(n, _)| n == k).unwrap().1.clone()
    };
    assert_eq!(
        find(&before, "conv_in.weight"),
        find(&after, "conv_in.weight")
    );
    let q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight";
    assert_ne!(find(&before, q), find(&after, q));
}

/// Linear projections of every attention plus every resnet conv1 of the tiny UNet.
fn exported_targets(base: &sdxl_unet::UNet2DConditionModel<B>) -> usize {
    let targets = ["to_q", "to_k", "to_v", "to_out.0", "conv1"].map(String::from);
    sharpen_lora::find_targets(base, &targets, &unet_checkpoint_key)
        .unwrap()
        .len()
}

#[test]
fn every_unet_method_trains_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    for method in ["standard", "sharpen-rlhf", "ddpo", "diffusion-dpo"] {
        let cfg = config(tmp.path(), method, LORA);
        let run = tmp.path().join(method);
        ok(&train_in(&cfg, &run, &["--steps", "2"]));
        let lines = metrics(&run);
        assert_eq!(lines.len(), 2, "{method}");
        for l in &lines {
            let g = l["grad_norm"].as_f64().unwrap();
            assert!(
                g.is_finite() && g > 0.0,
                "{method}: adapters get gradients: {l}"
            );
        }
        // B starts at zero; training moved it.
        let device = Default::default();
        let base = load_unet::<B>(
            &workspace().join("tests/fixtures/pipeline/tiny-sdxl/unet"),
            &LoadOptions::default(),
            &device,
        )
        .unwrap();
        let lora = load_unet_lora(
            &run.join("lora/pytorch_lora_weights.safetensors"),
            &base,
            &device,
        )
        .unwrap();
        let moved: f32 = lora
            .layers
            .iter()
            .map(|l| l.lora_b.val().abs().sum().into_scalar())
            .sum();
        assert!(moved > 0.0, "{method}: B moved off zero");
    }
}

#[test]
fn bad_lora_configs_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (method, lora, expect) in [
        ("standard", "[lora]\nrank = 0\n", "lora"),
        (
            "standard",
            "[lora]\ntarget_modules = [\"to_z\"]\n",
            "`to_z`",
        ),
        ("autoencoder", "[lora]\n", "lora"),
        ("standard", "[lora]\nranks = 2\n", "ranks"),
    ] {
        let cfg = config(tmp.path(), method, lora);
        let run = tmp.path().join(format!("bad-{method}"));
        let out = train_in(&cfg, &run, &[]);
        assert!(!out.status.success(), "{method} {lora}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{method} {lora}: {err}");
    }
}
