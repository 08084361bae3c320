//! LoRA training end to end on the tiny SDXL pipeline: every UNet method trains adapters of a
//! frozen base; checkpoints hold only the adapters and resume bit-exactly; the run exports them in
//! both layouts, and the exported merged pipeline equals the base with the exported file merged.

mod common;

use std::path::Path;

use common::{
    assert_same_training, config, metrics, ok, train_in, uninterrupted_and_resumed, with_rlhf,
    workspace,
};
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

#[test]
fn lora_with_gradient_checkpointing_trains_like_plain_autodiff() {
    // Checkpointing merges the adapters as leaves and carries the merged weights' gradients to
    // A and B: the same training as the graph through the merge, for each UNet method.
    let tmp = tempfile::tempdir().unwrap();
    for (method, extra) in [
        ("standard", ""),
        ("sharpen-sft", ""),
        ("sharpen-rlhf", ""),
        ("sharpen-sft", "[trajectory]\ndetach_between_steps = true"),
    ] {
        let dir = tmp.path().join(format!("{method}{}", extra.len()));
        std::fs::create_dir_all(dir.join("c")).unwrap();
        let plain = config(&dir, method, &format!("{extra}\n{LORA}"));
        let ckpt = config(
            &dir.join("c"),
            method,
            &format!("gradient_checkpointing = true\n{extra}\n{LORA}"),
        );
        for cfg in [&plain, &ckpt] {
            with_rlhf(cfg, "beta = 25.0");
        }
        ok(&train_in(&plain, &dir.join("plain"), &["--steps", "3"]));
        ok(&train_in(&ckpt, &dir.join("ckpt"), &["--steps", "3"]));
        assert_same_training(
            &dir.join("plain"),
            &dir.join("ckpt"),
            &["loss", "grad_norm"],
        );
        let (a, b) = (
            lora_file(&dir.join("plain"), "step-000003"),
            lora_file(&dir.join("ckpt"), "step-000003"),
        );
        assert_eq!(a.0.len(), b.0.len());
        let mut trained = 0;
        for ((ka, va), (kb, vb)) in a.0.iter().zip(&b.0) {
            assert_eq!(ka, kb);
            let scale = va.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = va
                .iter()
                .zip(vb)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            // The losses and gradient norms above agree to 1e-4. AdamW normalises each
            // element's gradient, so rounding of a near-zero one (the RLHF loss's winner and
            // loser terms nearly cancel in some weights) moves that element by a fraction of the
            // learning rate: the adapters agree within 5% of each tensor's largest value, which
            // an adapter that got no or another layer's gradient does not.
            assert!(diff <= 5e-2 * scale, "{method}: {ka}: {diff} of {scale}");
            trained += usize::from(scale > 0.0);
        }
        // (A self-attention over a single token passes no gradient to its keys.)
        assert!(
            trained > a.0.len() / 2,
            "{method}: {trained} of {} moved",
            a.0.len()
        );
    }
}
