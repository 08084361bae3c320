//! `sharpen-infer --lora` on the tiny pipeline: a LoRA file in either layout gives the same image
//! as a pipeline folder whose UNet holds the merged weights; scale 0 gives the base image; bad
//! arguments are named.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::module::Param;
use burn::tensor::{Distribution, Tensor};
use sharpen_app::CpuBackend as B;
use sharpen_lora::{find_targets, Lora};
use sharpen_weights::lora::{save_unet_lora, LoraLayout};
use sharpen_weights::unet::{load_unet, save_unet, unet_checkpoint_key};
use sharpen_weights::LoadOptions;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The RGB pixels of a PNG (its text chunks name the model and LoRA, so bytes differ).
fn pixels(path: &Path) -> Vec<u8> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

/// Generates one image; returns its pixels and sidecar, or the error text.
fn infer(model: &Path, out: &Path, extra: &[&str]) -> Result<(Vec<u8>, String), String> {
    let mut args = vec![
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red circle above a blue square",
        "--width",
        "32",
        "--height",
        "32",
        "--steps",
        "3",
        "--seed",
        "5",
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = Command::new(env!("CARGO_BIN_EXE_sharpen-infer"))
        .args(&args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    if !run.status.success() {
        return Err(String::from_utf8_lossy(&run.stderr).into_owned());
    }
    let sidecar = std::fs::read_to_string(out.with_extension("json")).unwrap();
    Ok((pixels(out), sidecar))
}

#[test]
fn lora_files_reproduce_the_merged_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("tests/fixtures/pipeline/tiny-sdxl");
    let device = Default::default();
    let base = load_unet::<B>(&model.join("unet"), &LoadOptions::default(), &device).unwrap();
    let targets = ["to_q", "to_v", "proj_out", "conv2"].map(String::from);
    let targets = find_targets(&base, &targets, &unet_checkpoint_key).unwrap();
    let mut state = 1u64;
    let mut uniform = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut lora = Lora::<B>::init(targets, 2, 3.0, &mut uniform, &device);
    for layer in &mut lora.layers {
        let dims = layer.lora_b.dims();
        layer.lora_b = Param::from_tensor(Tensor::random(
            dims,
            Distribution::Normal(0.0, 0.3),
            &device,
        ));
    }
    let peft = dir.path().join("pytorch_lora_weights.safetensors");
    let kohya = dir.path().join("kohya.safetensors");
    save_unet_lora(&peft, &lora, &base.config, LoraLayout::Diffusers).unwrap();
    save_unet_lora(&kohya, &lora, &base.config, LoraLayout::Kohya).unwrap();
    let merged_model = dir.path().join("merged");
    sharpen_app::copy_tree(&model, &merged_model, &[]).unwrap();
    let merged = lora.merge(base.clone(), 1.0, &unet_checkpoint_key).unwrap();
    save_unet(&merged_model.join("unet"), &merged).unwrap();

    let out = |name: &str| dir.path().join(format!("{name}.png"));
    let (want, _) = infer(&merged_model, &out("merged"), &[]).unwrap();
    let (plain, _) = infer(&model, &out("plain"), &[]).unwrap();
    assert_ne!(want, plain, "the adapter changes the image");
    for file in [&peft, &kohya] {
        let f = file.to_str().unwrap();
        let (got, sidecar) = infer(&model, &out("lora"), &["--lora", f]).unwrap();
        assert_eq!(got, want, "{f}");
        let record: serde_json::Value = serde_json::from_str(&sidecar).unwrap();
        assert_eq!(record["loras"][0]["file"], f);
        assert_eq!(record["loras"][0]["scale"], 1.0);
    }
    let f = peft.to_str().unwrap();
    let (off, _) = infer(&model, &out("off"), &["--lora", f, "--lora-scale", "0"]).unwrap();
    assert_eq!(off, plain, "scale 0 is the base model");

    let err = infer(
        &model,
        &out("bad"),
        &["--lora", f, "--lora-scale", "1", "--lora-scale", "2"],
    )
    .unwrap_err();
    assert!(err.contains("--lora-scale"), "{err}");
    let unet_file = model.join("unet/diffusion_pytorch_model.safetensors");
    let err = infer(
        &model,
        &out("bad"),
        &["--lora", unet_file.to_str().unwrap()],
    )
    .unwrap_err();
    assert!(
        err.contains("diffusion_pytorch_model.safetensors") && err.contains("not a LoRA key"),
        "{err}"
    );
}
