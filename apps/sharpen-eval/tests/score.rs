//! `sharpen-eval score` end to end: a manifest in, the same lines with scores out; unreadable
//! images become error lines and a non-zero exit, not a crash halfway.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn eval(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sharpen-eval"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs sharpen-eval")
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A manifest of the shipped shapes sample's first images (paths relative to the manifest).
fn manifest(dir: &Path, extra_lines: &[&str]) -> PathBuf {
    let sample = root().join("assets/shapes-sample");
    let mut lines = Vec::new();
    for line in std::fs::read_to_string(sample.join("metadata.jsonl"))
        .unwrap()
        .lines()
        .take(3)
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = v["file_name"].as_str().unwrap();
        std::fs::copy(
            sample.join(name),
            dir.join(Path::new(name).file_name().unwrap()),
        )
        .unwrap();
        lines.push(
            serde_json::json!({
                "image": Path::new(name).file_name().unwrap().to_str().unwrap(),
                "prompt": v["text"],
                "id": lines.len(),
            })
            .to_string(),
        );
    }
    lines.extend(extra_lines.iter().map(|s| s.to_string()));
    let path = dir.join("manifest.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn scores_every_line_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let input = manifest(tmp.path(), &[]);
    let out = tmp.path().join("out/scores.jsonl");
    let run = eval(&[
        "score",
        "--reward",
        "shapes",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--batch-size",
        "2",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines = read_lines(&out);
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["id"], i);
        // The sample holds rendered ground truth: the scorer gives full credit.
        assert_eq!(line["score"].as_f64().unwrap(), 1.0, "{line}");
        assert!(line["prompt"].is_string());
    }
    assert!(!tmp.path().join("out/scores.jsonl.partial").exists());
}

#[test]
fn missing_images_and_bad_lines_are_error_lines_and_a_failed_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let input = manifest(
        tmp.path(),
        &[
            r#"{"image": "nowhere.png", "prompt": "a red circle"}"#,
            "this is not json",
            r#"{"prompt": "no image field"}"#,
        ],
    );
    let out = tmp.path().join("scores.jsonl");
    let run = eval(&[
        "score",
        "--reward",
        "jpeg-compressibility",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("3 of 6 lines could not be scored"),
        "{stderr}"
    );
    let lines = read_lines(&out);
    assert_eq!(lines.len(), 6);
    for line in &lines[..3] {
        assert!(line["score"].as_f64().unwrap() < 0.0, "{line}");
    }
    assert!(
        lines[3]["error"].as_str().unwrap().contains("nowhere.png"),
        "{}",
        lines[3]
    );
    assert!(lines[4]["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert!(lines[5]["error"].as_str().unwrap().contains("`image`"));
}

#[test]
fn clip_scores_with_the_scale_flag_and_bad_weights_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let input = manifest(tmp.path(), &[]);
    let clip = "tests/fixtures/clip/openai-tiny";
    let score = |extra: &[&str]| {
        let out = tmp.path().join("clip.jsonl");
        let mut args = vec![
            "score",
            "--reward",
            "clip",
            "--weights",
            clip,
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let run = eval(&args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        read_lines(&out)
            .iter()
            .map(|l| l["score"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    let raw = score(&[]);
    let scaled = score(&["--scale", "100"]);
    for (r, s) in raw.iter().zip(&scaled) {
        assert!(r.abs() <= 1.0);
        assert!((s - 100.0 * r).abs() < 1e-3, "{s} vs {r}");
    }
    let out = tmp.path().join("x.jsonl");
    let run = eval(&[
        "score",
        "--reward",
        "clip",
        "--weights",
        "tests/fixtures/clip/aesthetic.pth",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("aesthetic.pth") && stderr.contains("CLIPModel folder"),
        "{stderr}"
    );
    let run = eval(&[
        "score",
        "--reward",
        "pickscore",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("needs `weights`"));
}
