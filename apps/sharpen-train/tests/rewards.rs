//! Training toward a model-based reward given as a table in the config (`[reward]` with `name`
//! and `weights`), and reward fields that are wrong named as such.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn train(config: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sharpen-train"))
        .args(["--config", config.to_str().unwrap(), "--output-dir"])
        .arg(out)
        .current_dir(workspace())
        .output()
        .expect("runs sharpen-train")
}

fn config(dir: &Path, reward: &str) -> PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "t"
method = "sharpen-sft"
model = "tests/fixtures/pipeline/tiny-sdxl"
steps = 2
batch_size = 1
resolution = 32
checkpoint_every = 2
export_pipeline = false
{reward}
[data]
kind = "shapes"
[validation]
prompts = ["a red circle"]
steps = 2
[optim]
lr = 1e-4
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn sharpening_toward_clip_score_from_a_model_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "[reward]\nname = \"clip\"\nweights = \"tests/fixtures/clip/openai-tiny\"\nscale = 100.0",
    );
    let out = train(&cfg, &tmp.path().join("run"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = std::fs::read_to_string(tmp.path().join("run/metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let r = line["reward_mean"].as_f64().unwrap();
        assert!(r.abs() <= 100.0 && r != 0.0, "{line}");
    }
    // The resolved config keeps the table.
    let saved = std::fs::read_to_string(tmp.path().join("run/config.toml")).unwrap();
    assert!(
        saved.contains("openai-tiny") && saved.contains("scale = 100.0"),
        "{saved}"
    );
    let validation = std::fs::read_to_string(tmp.path().join("run/validation.jsonl")).unwrap();
    assert_eq!(validation.lines().count(), 2);
}

#[test]
fn bad_reward_fields_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for (reward, needle) in [
        ("reward = \"nope\"", "unknown reward `nope`"),
        ("[reward]\nname = \"aesthetic\"", "needs `weights`"),
        (
            "[reward]\nname = \"shapes\"\nscale = 2.0",
            "`scale` applies to `clip` only",
        ),
        (
            "[reward]\nname = \"pickscore\"\nweights = \"tests/fixtures/clip/aesthetic.pth\"",
            "CLIPModel folder",
        ),
    ] {
        let out = train(&config(tmp.path(), reward), &tmp.path().join("x"));
        assert!(!out.status.success(), "{reward}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{reward}: {err}");
        assert!(err.contains("reward"), "{reward}: {err}");
    }
}
