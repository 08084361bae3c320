//! `sharpen-infer` end to end on the tiny pipeline folder: given latents, 5 steps, CFG 5, Euler and
//! DDIM, with and without a negative prompt, against diffusers' final latents and images.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::DType;
use sharpen_weights::Checkpoint;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference(key: &str) -> Vec<f32> {
    let ckpt =
        Checkpoint::open_file(&root().join("tests/fixtures/pipeline/outputs.safetensors")).unwrap();
    ckpt.read(key, DType::F32)
        .unwrap()
        .into_vec::<f32>()
        .unwrap()
}

fn infer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sharpen-infer"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn png_rgb(path: &Path) -> (Vec<u8>, String) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let text = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .unwrap_or_default();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (buf, text)
}

#[test]
fn reproduces_diffusers_from_given_latents() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("tests/fixtures/pipeline/tiny-sdxl");
    let latents = root().join("tests/fixtures/pipeline/outputs.safetensors");
    for sampler in ["euler", "ddim"] {
        for negative in [true, false] {
            let case = format!(
                "cli_{sampler}_{}",
                if negative { "negative" } else { "no_negative" }
            );
            let out_png = dir.path().join(format!("{case}.png"));
            let out_latents = dir.path().join(format!("{case}.safetensors"));
            let mut args = vec![
                "--model",
                model.to_str().unwrap(),
                "--prompt",
                "a red circle above a blue square",
                "--num-images",
                "2",
                "--steps",
                "5",
                "--guidance",
                "5",
                "--scheduler",
                sampler,
                "--width",
                "96",
                "--height",
                "64",
                "--latents",
                latents.to_str().unwrap(),
                "--save-latents",
                out_latents.to_str().unwrap(),
                "--output",
                out_png.to_str().unwrap(),
            ];
            if negative {
                args.extend(["--negative-prompt", "blurry, low quality"]);
            }
            let out = infer(&args);
            assert!(
                out.status.success(),
                "{case}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got = Checkpoint::open_file(&out_latents)
                .unwrap()
                .read("latents", DType::F32)
                .unwrap()
                .into_vec::<f32>()
                .unwrap();
            let want = reference(&format!("{case}.latents"));
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff <= 1e-4, "{case}: final latents differ by {diff}");
            let image = reference(&format!("{case}.image")); // [2, 3, 64, 96] in [0, 1]
            for i in 0..2 {
                let (rgb, text) = png_rgb(&dir.path().join(format!("{case}-{i}.png")));
                assert!(
                    text.contains("Steps: 5") && text.contains(&format!("Sampler: {sampler}")),
                    "{text}"
                );
                assert!(dir.path().join(format!("{case}-{i}.json")).is_file());
                let mut worst = 0i32;
                for (p, &v) in rgb.iter().enumerate() {
                    let (y, x, c) = (p / (96 * 3), (p / 3) % 96, p % 3);
                    let r = image[((i * 3 + c) * 64 + y) * 96 + x];
                    worst = worst.max((v as i32 - (r * 255.0).round() as i32).abs());
                }
                assert!(
                    worst <= 1,
                    "{case} image {i}: a channel differs by {worst}/255"
                );
            }
            println!("{case}: final latents max abs diff {diff:.2e}");
        }
    }
}

#[test]
fn bad_arguments_give_clear_errors() {
    let model = root().join("tests/fixtures/pipeline/tiny-sdxl");
    let m = model.to_str().unwrap();
    let unet_dir = root().join("tests/fixtures/unet");
    let latents = root().join("tests/fixtures/pipeline/outputs.safetensors");
    let cases: [(&[&str], &str); 7] = [
        (
            &["--model", m, "--prompt", "x", "--best-of", "2"],
            "--best-of 2 needs --verifier",
        ),
        (
            &[
                "--model",
                m,
                "--prompt",
                "x",
                "--best-of",
                "2",
                "--verifier",
                "clip",
            ],
            "reward `clip` needs `weights`",
        ),
        (
            &["--model", "/nonexistent/folder", "--prompt", "x"],
            "no such file",
        ),
        (
            &["--model", unet_dir.to_str().unwrap(), "--prompt", "x"],
            "model_index.json",
        ),
        (
            &["--model", m, "--prompt", "x", "--width", "100"],
            "--width 100",
        ),
        (
            &["--model", m, "--prompt", "x", "--scheduler", "heun"],
            "unknown --scheduler `heun`",
        ),
        (
            &[
                "--model",
                m,
                "--prompt",
                "x",
                "--width",
                "64",
                "--height",
                "64",
                "--latents",
                latents.to_str().unwrap(),
            ],
            "expected [1, 4, 8, 8]",
        ),
    ];
    for (args, needle) in cases {
        let out = infer(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{args:?}: expected `{needle}` in:\n{stderr}"
        );
    }
}

#[test]
fn best_of_n_keeps_the_verifiers_favourite_and_it_reproduces_from_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("tests/fixtures/pipeline/tiny-sdxl");
    let common = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a red circle",
            "--width",
            "32",
            "--height",
            "32",
            "--steps",
            "3",
            "--num-images",
            "2",
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        if !extra.contains(&"--seed") {
            args.extend(["--seed", "7"]);
        }
        let run = infer(&args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    };
    let best = dir.path().join("best.png");
    common(
        &best,
        &["--best-of", "3", "--verifier", "jpeg-incompressibility"],
    );
    for i in 0..2 {
        let png = dir.path().join(format!("best-{i}.png"));
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(png.with_extension("json")).unwrap())
                .unwrap();
        assert_eq!(record["best_of"], 3);
        assert_eq!(
            record["nfe"],
            3 * 3 * 2,
            "3 candidates x 3 steps x 2 (guidance)"
        );
        let scores: Vec<f64> = record["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect();
        assert_eq!(scores.len(), 3);
        let argmax = (0..3).fold(0, |b, k| if scores[k] > scores[b] { k } else { b });
        assert_eq!(record["candidate"], argmax, "{scores:?}");
        // The kept image is what a plain run from its seed makes.
        let seed = record["seed"].as_u64().unwrap().to_string();
        let again = dir.path().join(format!("again-{i}.png"));
        common(&again, &["--seed", &seed]);
        assert_eq!(
            png_rgb(&png).0,
            png_rgb(&dir.path().join(format!("again-{i}-{i}.png"))).0,
            "image {i}"
        );
    }
}

#[test]
fn a_model_reward_can_be_the_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("tests/fixtures/pipeline/tiny-sdxl");
    let pick = root().join("tests/fixtures/clip/laion-tiny");
    let out = dir.path().join("pick.png");
    let run = infer(&[
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red circle",
        "--width",
        "32",
        "--height",
        "32",
        "--steps",
        "2",
        "--best-of",
        "2",
        "--verifier",
        "pickscore",
        "--verifier-weights",
        pick.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(record["verifier"], "pickscore");
    let scores = record["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 2);
    // PickScore = exp(logit_scale) * cosine, logit_scale = ln(100) in the fixture.
    assert!(scores.iter().all(|s| s.as_f64().unwrap().abs() <= 100.0));
}
