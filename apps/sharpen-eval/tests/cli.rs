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

/// Runs sharpen-eval with `args` and requires it to succeed.
fn eval_ok(args: &[&str]) -> std::process::Output {
    let run = eval(args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    run
}

/// A JSON file the command wrote.
fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
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
    let run = eval_ok(&args);
    assert!(String::from_utf8_lossy(&run.stdout).contains("all-correct %"));
    json(out)
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
        let per_seed: Vec<f64> = r["partial_credit_per_seed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(per_seed.len(), 2, "{r}");
        let mean = r["partial_credit"]["mean"].as_f64().unwrap();
        assert!(
            (per_seed.iter().sum::<f64>() / 2.0 - mean).abs() < 1e-12,
            "{r}"
        );
        for key in ["all_correct", "partial_credit"] {
            let m = &r[key];
            assert_eq!(m["n"], 2);
            let (mean, ci) = (m["mean"].as_f64().unwrap(), m["ci95"].as_f64().unwrap());
            assert!((0.0..=1.0).contains(&mean) && ci >= 0.0, "{key}: {m}");
        }
    }
    // The checks one by one: per named object, per pair and per image.
    let checks = report["checks"].as_array().unwrap();
    let per_seed: Vec<u64> = checks
        .iter()
        .map(|c| c["per_seed"].as_u64().unwrap())
        .collect();
    assert_eq!(
        per_seed,
        [
            images[0] + 2 * images[1],
            images[0] + 2 * images[1],
            images[1],
            6
        ],
        "{checks:?}"
    );
    for c in checks.iter().filter(|c| c["per_seed"].as_u64() > Some(0)) {
        let mean = c["passed"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mean), "{c}");
        assert_eq!(c["passed"]["n"], 2);
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
    assert!(table.contains("| relation right (pairs) |"), "{table}");
}

#[test]
fn shapes_scores_listed_captions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("listed.json");
    let run = eval_ok(&[
        "shapes",
        "--model",
        "tests/fixtures/pipeline/tiny-sdxl",
        "--caption",
        "a red circle",
        "--caption",
        "a green square above a blue triangle",
        "--caption",
        "a yellow square",
        "--seeds",
        "2",
        "--steps",
        "2",
        "--output",
        out.to_str().unwrap(),
    ]);
    let report = json(&out);
    assert_eq!(report["split"], "listed");
    assert_eq!(report["prompts"], 3);
    let images: Vec<u64> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["images_per_seed"].as_u64().unwrap())
        .collect();
    assert_eq!(images, [2, 1, 3], "two single objects and one pair");
    let per_seed: Vec<u64> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["per_seed"].as_u64().unwrap())
        .collect();
    assert_eq!(per_seed, [4, 4, 1, 3]);
    assert!(String::from_utf8_lossy(&run.stdout).contains("on 3 listed captions"));

    let bad = eval(&[
        "shapes",
        "--model",
        "tests/fixtures/pipeline/tiny-sdxl",
        "--caption",
        "a purple circle",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--caption `a purple circle`"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let both = eval(&[
        "shapes",
        "--model",
        "tests/fixtures/pipeline/tiny-sdxl",
        "--caption",
        "a red circle",
        "--split",
        "train",
    ]);
    assert!(
        !both.status.success(),
        "a caption list and a split conflict"
    );
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

#[test]
fn compare_puts_methods_on_the_same_prompts_and_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("validation.jsonl"),
        "{\"step\":0,\"reward_mean\":0.2}\n{\"step\":10,\"reward_mean\":0.4}\n",
    )
    .unwrap();
    let out = tmp.path().join("cmp");
    let config = tmp.path().join("cmp.toml");
    std::fs::write(
        &config,
        format!(
            r#"prompts = 5
seeds = 2
steps = 3
batch_size = 4
best_of = [1, 2]
output = "{}"

[[method]]
name = "base"
models = ["tests/fixtures/pipeline/tiny-sdxl"]
runs = ["{}"]
"#,
            out.display(),
            run.display()
        ),
    )
    .unwrap();
    let tiny = "tests/fixtures/pipeline/tiny-sdxl";
    let twice = format!("again={tiny},{tiny}");
    let result = eval(&[
        "compare",
        "--config",
        config.to_str().unwrap(),
        "--method",
        &twice,
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let key = |r: &serde_json::Value| {
        (
            r["method"].as_str().unwrap().to_string(),
            r["best_of"].as_u64().unwrap(),
            r["nfe_per_image"].as_u64().unwrap(),
            r["repeats"].as_u64().unwrap(),
        )
    };
    let keys: Vec<_> = rows.iter().map(key).collect();
    assert_eq!(
        keys,
        [
            ("base".to_string(), 1, 6, 2),
            ("base".to_string(), 2, 12, 2),
            ("again".to_string(), 1, 6, 4),
        ]
    );
    // The same model on the same prompts and seeds scores the same, whichever method it is.
    for metric in ["all_correct", "one_object", "two_objects", "reward"] {
        assert_eq!(rows[0][metric]["mean"], rows[2][metric]["mean"], "{metric}");
    }
    let reward = |r: &serde_json::Value| r["reward"]["mean"].as_f64().unwrap();
    assert!(
        reward(&rows[1]) >= reward(&rows[0]),
        "best of 2 >= best of 1"
    );
    // Paired against the base (its one model): the same model on the same seeds differs by 0.
    let paired = report["paired"].as_array().unwrap();
    assert_eq!(paired.len(), 1);
    assert_eq!(paired[0]["method"], "again");
    assert_eq!(paired[0]["reference"], "base");
    assert_eq!(paired[0]["repeats"], 4);
    for metric in ["all_correct", "reward"] {
        assert_eq!(paired[0][metric]["mean"], 0.0, "{metric}");
        assert_eq!(paired[0][metric]["ci95"], 0.0, "{metric}");
    }
    let table = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(table.contains("| again | 1 | 6 | 4 |"), "{table}");
    assert!(
        table.contains("| again | base | one reference model | 4 | +0.0 ± 0.0 | +0.0 ± 0.0 | no |"),
        "{table}"
    );
    for png in ["reward-vs-nfe.png", "reward-vs-step.png"] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
    }

    // Two models at a time: the same table (the rows in the same order).
    let out2 = tmp.path().join("cmp2");
    let result = eval(&[
        "compare",
        "--config",
        config.to_str().unwrap(),
        "--method",
        &twice,
        "--jobs",
        "2",
        "--output",
        out2.to_str().unwrap(),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let report2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("compare.json")).unwrap()).unwrap();
    assert_eq!(report2["rows"], report["rows"]);

    // --replot redraws from compare.json without evaluating (a missing model would fail).
    std::fs::remove_file(out.join("reward-vs-nfe.png")).unwrap();
    let replot = eval(&["compare", "--config", config.to_str().unwrap(), "--replot"]);
    assert!(
        replot.status.success(),
        "{}",
        String::from_utf8_lossy(&replot.stderr)
    );
    assert!(out.join("reward-vs-nfe.png").is_file());

    // Errors name what is wrong.
    let bad = eval(&["compare", "--method", &twice, "--base", "nobody"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no method is named `nobody`"));
    let bad = eval(&["compare", "--method", &twice, "--paired", "again,nobody"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`paired`: no method is named `nobody`"));
    std::fs::write(&config, "prompts = 5\nprompt = 3\n").unwrap();
    let bad = eval(&["compare", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("cmp.toml") && err.contains("prompt"), "{err}");
    let bad = eval(&["compare", "--method", "no-equals-sign"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NAME=PATH"));
}

#[test]
fn compare_keeps_score_records_and_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    sharpen_app::copy_tree(&root.join("tests/fixtures/pipeline/tiny-sdxl"), &model, &[]).unwrap();
    let records = tmp.path().join("records");
    let config = tmp.path().join("cmp.toml");
    let write_config = |seeds: u64| {
        std::fs::write(
            &config,
            format!(
                "prompts = 4\nseeds = {seeds}\nsteps = 2\nbatch_size = 4\nbest_of = [1, 2]\n\
                 scores = \"{}\"\n\n[[method]]\nname = \"base\"\nmodels = [\"{}\"]\n",
                records.display(),
                model.display()
            ),
        )
        .unwrap();
    };
    // `compare` into `out`: whether it succeeded, its log, and its rows when it wrote them.
    let compare = |out: &str| {
        let out = tmp.path().join(out);
        let run = eval(&[
            "compare",
            "--config",
            config.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        let rows = std::fs::read_to_string(out.join("compare.json"))
            .ok()
            .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap()["rows"].clone());
        let log = String::from_utf8_lossy(&run.stderr).into_owned();
        (run.status.success(), log, rows)
    };
    // A run that must succeed with `says` in its log and the first run's rows.
    let reuses = |out: &str, says: &str, rows: &serde_json::Value| {
        let (ok, log, got) = compare(out);
        assert!(ok && log.contains(says), "{out}: {log}");
        assert_eq!(got.as_ref(), Some(rows), "{out}");
    };
    // A run that must fail naming each of `names`.
    let fails = |out: &str, names: &[&str]| {
        let (ok, log, _) = compare(out);
        assert!(!ok && names.iter().all(|n| log.contains(n)), "{out}: {log}");
    };
    write_config(2);
    let (ok, log, rows) = compare("first");
    assert!(ok, "{log}");
    let rows = rows.unwrap();
    let files: Vec<_> = std::fs::read_dir(&records).unwrap().collect();
    assert_eq!(files.len(), 1, "one record per model");

    // Scored again from the record, with the model present (its files unchanged) ...
    reuses("again", "1 of 1 models scored from their records", &rows);
    // ... and absent: the record stands for it.
    std::fs::remove_dir_all(&model).unwrap();
    reuses("absent", "is absent: using its recorded scores", &rows);

    // More seeds than recorded need the model itself: its absence is named.
    write_config(3);
    fails("more", &[&model.display().to_string(), "fewer seeds"]);
    // A damaged record is named, never overwritten.
    write_config(2);
    let record = std::fs::read_dir(&records)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&record, "{ not json").unwrap();
    fails("damaged", &[&record.display().to_string(), "delete it"]);
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "{ not json");
}

#[test]
fn the_shipped_model_scores_as_its_committed_ledger_record() {
    // The evaluation's batches go to a core each on the CPU; the images, and so the scores, must
    // stay those the committed results page was built from (its ledger record of the base model:
    // [seed][candidate][prompt] = [partial credit, all correct]).
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("base.json");
    eval_ok(&[
        "shapes",
        "--model",
        "assets/shapes-model",
        "--seeds",
        "2",
        "--output",
        out.to_str().unwrap(),
    ]);
    let got = json(&out);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ledger: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.join("docs/results/shapes/ledger/scores/assets_shapes-model.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(ledger["setup"]["prompts"], 64);
    assert_eq!(ledger["setup"]["batch_size"], 16);
    // Per seed, candidate 0 (best-of-1): mean partial credit and all-correct rate.
    let per_seed = |seed: usize, field: usize| {
        let scores = ledger["scores"][seed][0].as_array().unwrap();
        let total: f64 = scores
            .iter()
            .map(|s| match &s[field] {
                serde_json::Value::Bool(b) => f64::from(u8::from(*b)),
                v => v.as_f64().unwrap(),
            })
            .sum();
        total / scores.len() as f64
    };
    let all = &got["rows"][2];
    assert_eq!(all["prompts"], "all");
    for (field, key) in [(0, "partial_credit"), (1, "all_correct")] {
        let (a, b) = (per_seed(0, field), per_seed(1, field));
        let expected = sharpen_app::stats::mean_ci(&[a, b]);
        let mean = all[key]["mean"].as_f64().unwrap();
        let ci95 = all[key]["ci95"].as_f64().unwrap();
        assert!(
            (mean - expected.mean).abs() < 1e-9,
            "{key}: {mean} vs {a}, {b}"
        );
        // The interval holds the same split of the images over the seeds.
        assert!(
            (ci95 - expected.ci95).abs() < 1e-9,
            "{key}: {ci95} vs {a}, {b}"
        );
    }
    // The prompts in their order: the 12 one-object prompts' share (this run, 2026-12-07).
    let one = &got["rows"][0];
    assert_eq!(one["images_per_seed"], 12);
    assert!((one["partial_credit"]["mean"].as_f64().unwrap() - 49.0 / 72.0).abs() < 1e-9);
}

#[test]
fn runs_pairs_the_committed_ledger_runs_seed_by_seed() {
    let ledger = "docs/results/shapes/ledger/runs";
    let runs = [
        format!("{ledger}/standard-s0"),
        format!("{ledger}/sharpen-sft-s0"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("out/runs.json");
    let run = eval(&[
        "runs",
        &runs[0],
        &runs[1],
        "--json",
        json.to_str().unwrap(),
        "--training",
        "25",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    // The ledger's runs validate 8 prompts on 2 seeds: too few for a verdict.
    assert!(stdout.contains("2 seeds x 8 prompts"), "{stdout}");
    assert!(stdout.contains("too few seeds to judge"), "{stdout}");
    // Worked out here from the files: each run's last validation, and the difference of the
    // per-seed means (the mean of per-seed differences).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let last = |run: &str| -> Vec<f64> {
        let text = std::fs::read_to_string(root.join(run).join("validation.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        line["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (last(&runs[0]), last(&runs[1]));
    assert_eq!(a.len(), 16);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!((rows[0]["reward"].as_f64().unwrap() - mean(&a)).abs() < 1e-12);
    assert!((rows[1]["reward"].as_f64().unwrap() - mean(&b)).abs() < 1e-12);
    let d = &rows[1]["minus_reference"];
    assert!((d["mean"].as_f64().unwrap() - (mean(&b) - mean(&a))).abs() < 1e-12);
    assert_eq!(d["n"], 2);
    // Both started from the shipped model on the same samples.
    assert_eq!(rows[1]["same_start"], true);
    assert!(rows[0]["minus_reference"].is_null());
    // The training metrics: 60 steps in windows of 25, 25 and 10; standard scores no training
    // reward, and the two methods' trajectory settings differ, which is said.
    let windows = table["training"]["rows"].as_array().unwrap();
    let sizes: Vec<u64> = windows
        .iter()
        .map(|w| w["loss"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [25, 25, 10]);
    assert!(windows.iter().all(|w| w["reward"].is_null()));
    assert!(stdout.contains("sharpen-sft-s0 (trajectory)"), "{stdout}");
}
