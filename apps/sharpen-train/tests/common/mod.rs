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
