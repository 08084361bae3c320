//! `sharpen-eval bench` end to end on the tiny random-weight pipeline: a prompt file, built-in
//! and model rewards, two models, best-of-N; the table, its intervals and bad configs.

use std::path::Path;
use std::process::Command;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn eval(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sharpen-eval"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs sharpen-eval")
}

/// A prompt file of three prompts and a bench config over it (the tiny pipeline, CLIP as the
/// verifier, best of 1 and 2), writing to `tmp/out`.
fn tiny_bench_config(tmp: &Path) -> std::path::PathBuf {
    let prompts = tmp.join("bench.csv");
    std::fs::write(
        &prompts,
        "Prompts,Category\n\"a red circle, above a blue square\",Positional\na cat,Simple\na green triangle,Colors\n",
    )
    .unwrap();
    let config = tmp.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            r#"prompts = "{}"
seeds = 2
sampler = "ddim"
steps = 2
guidance = 2.0
width = 32
height = 32
batch_size = 2
best_of = [1, 2]
output = "{}"

[[model]]
name = "tiny"
path = "tests/fixtures/pipeline/tiny-sdxl"

[[reward]]
name = "clip"
weights = "tests/fixtures/clip/openai-tiny"
scale = 100.0
"#,
            prompts.display(),
            tmp.join("out").display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn bench_scores_models_on_a_prompt_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_bench_config(tmp.path());
    let run = eval(&[
        "bench",
        "--config",
        config.to_str().unwrap(),
        "--model",
        "tiny-again=tests/fixtures/pipeline/tiny-sdxl",
        "--reward",
        "jpeg-compressibility",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("| model | best of | NFE / image | clip | jpeg-compressibility |"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("out/bench.json")).unwrap())
            .unwrap();
    assert_eq!(report["prompts"], 3);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "2 models x best-of 1, 2");
    let clip = |row: &serde_json::Value| row["rewards"][0]["mean"].as_f64().unwrap();
    for row in rows {
        assert_eq!(row["rewards"].as_array().unwrap().len(), 2);
        assert_eq!(row["rewards"][0]["n"], 2, "two seeds");
        assert!(clip(row).abs() <= 100.0);
        assert_eq!(row["nfe_per_image"], 4);
    }
    // The same weights and noise give the same numbers; best of 2 keeps the verifier's favourite,
    // which can only raise its mean.
    assert_eq!(rows[0]["rewards"], rows[2]["rewards"]);
    assert!(clip(&rows[1]) >= clip(&rows[0]));
    assert!(tmp.path().join("out/bench.md").is_file());
    assert_png(&tmp.path().join("out/reward-vs-nfe.png"));
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", path.display());
}

#[test]
fn compare_evaluates_a_prompt_file_config_like_bench() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_bench_config(tmp.path());
    let run = eval(&[
        "compare",
        "--config",
        config.to_str().unwrap(),
        "--seeds",
        "1",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("out/bench.json")).unwrap())
            .unwrap();
    assert_eq!(report["config"]["seeds"], 1, "compare's flags apply");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "1 model x best-of 1, 2");
    assert_eq!(rows[1]["best_of"], 2);
    assert_png(&tmp.path().join("out/reward-vs-nfe.png"));
}

#[test]
fn bench_configs_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            vec!["bench", "--model", "a=b", "--reward", "shapes"],
            "no prompt file",
        ),
        (
            vec!["bench", "--prompts", "x.txt", "--reward", "shapes"],
            "no models",
        ),
        (
            vec!["bench", "--prompts", "x.txt", "--model", "a=b"],
            "no rewards",
        ),
        (
            vec![
                "bench",
                "--prompts",
                "x.txt",
                "--model",
                "a=b",
                "--reward",
                "pickscore",
            ],
            "needs `weights`",
        ),
        (
            vec![
                "bench",
                "--prompts",
                "x.txt",
                "--model",
                "ab",
                "--reward",
                "shapes",
            ],
            "NAME=PATH",
        ),
    ] {
        let run = eval(&args);
        assert!(!run.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // The shipped example parses and validates; it stops at its placeholder prompt file, through
    // `bench` and through `compare` alike; `compare`'s shapes-world flags are refused by name.
    for job in ["bench", "compare"] {
        let run = eval(&[job, "--config", "configs/bench/drawbench.toml"]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            err.contains("reading prompts data/drawbench.csv"),
            "{job}: {err}"
        );
    }
    for (flag, value) in [("--split", "train"), ("--jobs", "2")] {
        let run = eval(&[
            "compare",
            "--config",
            "configs/bench/drawbench.toml",
            flag,
            value,
        ]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && err.contains(&format!("{flag} is a shapes-world flag")),
            "{err}"
        );
    }
    drop(tmp);
}
