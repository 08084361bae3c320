//! `sharpen-eval shapes` end to end on the tiny random-weight pipeline: it generates, scores and
//! writes the JSON and Markdown tables; bad arguments are clear errors.

use std::path::Path;
use std::process::Command;

fn eval(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sharpen-eval"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("runs sharpen-eval")
}

/// `sharpen-eval shapes` on the tiny pipeline: 6 prompts, 2 seeds, 3 steps, writing `out`.
fn tiny_shapes_eval(out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "shapes",
        "--model",
        "tests/fixtures/pipeline/tiny-sdxl",
        "--prompts",
        "6",
        "--seeds",
        "2",
        "--steps",
        "3",
        "--batch-size",
        "4",
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
    assert!(String::from_utf8_lossy(&run.stdout).contains("all-correct %"));
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn shapes_writes_a_table_with_intervals_over_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r/held-out.json");
    let report = tiny_shapes_eval(&out, &[]);
    assert_eq!(report["nfe_per_image"], 6, "3 steps with guidance 2");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let images: Vec<u64> = rows
        .iter()
        .map(|r| r["images_per_seed"].as_u64().unwrap())
        .collect();
    assert_eq!(images[0] + images[1], 6);
    assert_eq!(images[2], 6);
    for r in rows
        .iter()
        .filter(|r| r["images_per_seed"].as_u64() > Some(0))
    {
        for key in ["all_correct", "partial_credit"] {
            let m = &r[key];
            assert_eq!(m["n"], 2);
            let (mean, ci) = (m["mean"].as_f64().unwrap(), m["ci95"].as_f64().unwrap());
            assert!((0.0..=1.0).contains(&mean) && ci >= 0.0, "{key}: {m}");
        }
    }
    // Best-of-2 keeps the better of two candidates: never below best-of-1 on the same seeds.
    let report2 = tiny_shapes_eval(&tmp.path().join("r/best-of-2.json"), &["--best-of", "2"]);
    assert_eq!(report2["nfe_per_image"], 12);
    let partial = |r: &serde_json::Value| r["rows"][2]["partial_credit"]["mean"].as_f64().unwrap();
    assert!(
        partial(&report2) >= partial(&report),
        "{report2} vs {report}"
    );
    let table = std::fs::read_to_string(out.with_extension("md")).unwrap();
    assert!(table.contains("| two objects |"), "{table}");
}

#[test]
fn bad_arguments_are_named() {
    let run = eval(&["shapes", "--model", "no/such/model"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("no/such/model"));
    let run = eval(&[
        "shapes",
        "--model",
        "tests/fixtures/pipeline/tiny-sdxl",
        "--split",
        "test",
    ]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("--split `test`"));
}
