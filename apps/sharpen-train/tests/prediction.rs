//! Models that predict something other than the noise: `standard` trains their own target, the
//! methods written for noise prediction refuse them.

use std::path::{Path, PathBuf};

mod common;

use common::{config, metrics, ok, train, train_in, workspace};

/// The tiny pipeline with its scheduler config saying `prediction_type`.
fn with_prediction(dir: &Path, prediction: &str) -> PathBuf {
    let model = dir.join(format!("tiny-{prediction}"));
    let fixture = workspace().join("tests/fixtures/pipeline/tiny-sdxl");
    sharpen_app::copy_tree(&fixture, &model, &[]).unwrap();
    let path = model.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace(
        "\"prediction_type\": \"epsilon\"",
        &format!("\"prediction_type\": \"{prediction}\""),
    );
    assert_ne!(text, edited, "the fixture names its prediction type");
    std::fs::write(&path, edited).unwrap();
    model
}

#[test]
fn standard_trains_the_models_prediction_type_and_the_other_methods_refuse_v() {
    let tmp = tempfile::tempdir().unwrap();
    let v_model = with_prediction(tmp.path(), "v_prediction");
    let v = v_model.to_str().unwrap();
    // The sharpening methods and the RL baselines are written for noise prediction: a v model
    // would be trained on the wrong target, so they refuse it and say where it is set.
    for method in ["sharpen-sft", "sharpen-rlhf", "ddpo", "diffusion-dpo"] {
        let cfg = config(tmp.path(), method, "");
        let out = train(&["--config", cfg.to_str().unwrap(), "--model", v, "--dry-run"]);
        assert!(!out.status.success(), "{method}");
        let err = String::from_utf8_lossy(&out.stderr);
        for part in [
            "scheduler_config.json",
            "`v_prediction`",
            method,
            "`standard`",
        ] {
            assert!(err.contains(part), "{method}: {part} in {err}");
        }
    }
    // Standard fine-tuning trains either, each on its own target: the same weights, data and
    // noise give another first loss, through both of the loss's code paths.
    for extra in ["", "gradient_checkpointing = true"] {
        let cfg = config(tmp.path(), "standard", extra);
        let first_loss = |model: &str, name: &str| {
            let run = tmp.path().join(name);
            ok(&train_in(&cfg, &run, &["--model", model, "--steps", "1"]));
            metrics(&run)[0]["loss"].as_f64().unwrap()
        };
        let fixture = workspace().join("tests/fixtures/pipeline/tiny-sdxl");
        let eps = first_loss(fixture.to_str().unwrap(), &format!("eps{}", extra.len()));
        let eps_again = first_loss(fixture.to_str().unwrap(), &format!("again{}", extra.len()));
        let v_loss = first_loss(v, &format!("v{}", extra.len()));
        assert_eq!(eps, eps_again, "{extra}: the run is deterministic");
        assert!(
            v_loss.is_finite() && (v_loss - eps).abs() > 1e-3 * eps,
            "{extra}: {eps} {v_loss}"
        );
    }
}
