//! `--devices`: data-parallel training, tested with two CPU peers. Two peers with batch N equal
//! one device with batch 2N (same data order and noise: every peer draws the whole batch and
//! trains on its rows); a checkpoint and resume in the middle of a 2-peer run neither hang nor
//! change the result; an unavailable device is refused before training starts.

mod common;

use common::{config, max_rel_diff, metrics, ok, train, train_in, train_within, unet_weights};

const STEPS: usize = 20;

/// One device with batch 2 and two CPU peers with batch 1, `STEPS` steps of `method`; the
/// weights agree within 1e-5 relative and so do the metrics. Returns the difference.
fn one_vs_two(method: &str, extra: &str) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let steps = STEPS.to_string();
    let run = |name: &str, batch: usize, devices: &[&str]| {
        let cfg = config(dir, &format!("{method}-{name}"), extra);
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(
                &format!("method = \"{method}-{name}\""),
                &format!("method = \"{method}\""),
            )
            .replace("batch_size = 1", &format!("batch_size = {batch}"))
            .replace("checkpoint_every = 2", "checkpoint_every = 10");
        std::fs::write(&cfg, text).unwrap();
        let out = dir.join(name);
        let mut args = vec![
            "--config",
            cfg.to_str().unwrap(),
            "--output-dir",
            out.to_str().unwrap(),
            "--steps",
            &steps,
        ];
        args.extend_from_slice(devices);
        ok(&train_within(&args, 600));
        out
    };
    let one = run("one", 2, &[]);
    let two = run("two", 1, &["--devices", "cpu,cpu"]);
    let last = format!("step-{STEPS:06}");
    let diff = max_rel_diff(&unet_weights(&one, &last), &unet_weights(&two, &last));
    eprintln!("{method}: largest relative weight difference after {STEPS} steps {diff:e}");
    assert!(diff <= 1e-5, "{method}: 2 peers x 1 vs 1 x 2: {diff:e}");
    // The run moved the weights.
    let first = unet_weights(&one, "step-000010");
    assert!(max_rel_diff(&first, &unet_weights(&one, &last)) > 1e-4);
    // Metrics: the group's means (gathered in f32). Rewards are JPEG sizes of 8-bit images: a
    // batch of 2 decodes with other rounding than two of 1, which can move a size by a byte
    // (0.01 reward units here), shared by the prompt's n x m scored images.
    let (m1, m2) = (metrics(&one), metrics(&two));
    assert_eq!(m1.len(), STEPS);
    assert_eq!(m2.len(), STEPS);
    for (a, b) in m1.iter().zip(&m2) {
        for (key, tolerance) in [
            ("loss", 1e-4 * a["loss"].as_f64().unwrap()),
            ("reward_mean", 2e-3),
            ("reward_best", 2e-3),
            ("reward_worst", 2e-3),
        ] {
            if let (Some(x), Some(y)) = (a[key].as_f64(), b[key].as_f64()) {
                assert!((x - y).abs() <= tolerance, "{key}: {a} vs {b}");
            }
        }
    }
    diff
}

#[test]
fn two_cpu_peers_equal_one_device_with_the_whole_batch() {
    one_vs_two("standard", "");
    one_vs_two("sharpen-sft", "");
}

#[test]
fn a_two_peer_run_checkpoints_and_resumes_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "sharpen-sft", "devices = [\"cpu\", \"cpu\"]\n");
    let cfg = cfg.to_str().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let dir = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let first = train_within(&["--config", cfg, "--output-dir", &dir(&a)], 300);
    ok(&first);
    // The default log keeps burn-collective's INFO lines (each peer's whole config) out.
    let log = String::from_utf8_lossy(&first.stderr);
    assert!(
        log.contains("data-parallel training") && !log.contains("Registering peer"),
        "{log}"
    );
    ok(&train_within(
        &["--config", cfg, "--output-dir", &dir(&b), "--steps", "2"],
        300,
    ));
    ok(&train_within(
        &[
            "--config",
            cfg,
            "--output-dir",
            &dir(&b),
            "--resume",
            "latest",
        ],
        300,
    ));
    assert_eq!(metrics(&a), metrics(&b));
    assert_eq!(
        unet_weights(&a, "step-000004"),
        unet_weights(&b, "step-000004")
    );
    let resolved = std::fs::read_to_string(a.join("config.toml")).unwrap();
    assert!(resolved.contains("devices = ["), "{resolved}");
    // The same run continued on one device (`--device cpu`), which takes the two peers' batch
    // of 1 each: it ends where the two peers did (summation order aside).
    let c = tmp.path().join("c");
    ok(&train_within(
        &["--config", cfg, "--output-dir", &dir(&c), "--steps", "2"],
        300,
    ));
    let out = train_within(
        &[
            "--config",
            cfg,
            "--output-dir",
            &dir(&c),
            "--resume",
            "latest",
            "--device",
            "cpu",
        ],
        300,
    );
    ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("one device instead of the config's 2"),
        "{log}"
    );
    let last = "step-000004";
    let diff = max_rel_diff(&unet_weights(&a, last), &unet_weights(&c, last));
    assert!(diff <= 1e-5, "2 peers, then 1 device: {diff:e}");
    let (ma, mc) = (metrics(&a), metrics(&c));
    assert_eq!((ma.len(), mc.len()), (4, 4));
    for (x, y) in ma.iter().zip(&mc) {
        let (x, y) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-4 * x, "loss {x} vs {y}");
    }
    let continued = std::fs::read_to_string(c.join("config.toml")).unwrap();
    assert!(continued.contains("batch_size = 2"), "{continued}");
}

#[test]
fn an_unavailable_device_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "standard", "");
    let out_dir = tmp.path().join("r");
    let out = train_in(&cfg, &out_dir, &["--devices", "cpu,cuda:7"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cuda:7") && err.contains("not available"),
        "{err}"
    );
    assert!(
        !out_dir.exists(),
        "nothing is written before the devices are checked"
    );
    // A config's device list is checked the same way, and named.
    let bad = config(tmp.path(), "sharpen-sft", "devices = [\"cpu\", \"tpu\"]\n");
    let out = train(&["--config", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("devices") && err.contains("tpu"), "{err}");
    // `--device` replaces the config's list: the same config runs (here, plans) on one device.
    let out = train(&[
        "--config",
        bad.to_str().unwrap(),
        "--device",
        "cpu",
        "--dry-run",
    ]);
    ok(&out);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(!plan.contains("devices:"), "one device plans no peers");
    // ... and takes both listed devices' batch of 1.
    assert!(plan.contains("micro-batches of 2 "), "{plan}");
}
