//! `--resume` continues with the config saved with the checkpoint; a `--config` that would
//! change the run's numbers is refused by name unless `--allow-config-change`, and one of
//! another model always.

mod common;

use common::{config, metrics, ok, train};

#[test]
fn resume_continues_with_the_saved_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "standard", "");
    let run = tmp.path().join("run");
    let dir = run.to_str().unwrap();
    ok(&train(&[
        "--config",
        cfg.to_str().unwrap(),
        "--output-dir",
        dir,
        "--steps",
        "2",
    ]));
    // The checkpoint holds the config it was trained with.
    let saved = std::fs::read_to_string(run.join("checkpoints/step-000002/config.toml")).unwrap();
    let saved: toml::Table = toml::from_str(&saved).unwrap();
    assert_eq!(saved["method"].as_str(), Some("standard"));

    // Without --config: the saved one (not configs/quickstart.toml, a sharpen-sft run of
    // another model), with --steps applied.
    ok(&train(&[
        "--output-dir",
        dir,
        "--resume",
        "latest",
        "--steps",
        "3",
    ]));
    assert_eq!(metrics(&run).len(), 3);
    // A flag that changes the numbers is refused as well.
    let reseeded = train(&["--output-dir", dir, "--resume", "latest", "--seed", "5"]);
    let err = String::from_utf8_lossy(&reseeded.stderr);
    assert!(
        !reseeded.status.success() && err.contains("with seed changed"),
        "{err}"
    );

    // A config that changes the run's numbers is refused, naming what changed.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let changed = tmp.path().join("changed.toml");
    std::fs::write(&changed, text.replace("lr = 1e-4", "lr = 3e-4")).unwrap();
    let args = |steps: &'static str| {
        vec![
            "--config".to_string(),
            changed.to_str().unwrap().to_string(),
            "--output-dir".to_string(),
            dir.to_string(),
            "--resume".to_string(),
            "latest".to_string(),
            "--steps".to_string(),
            steps.to_string(),
        ]
    };
    let refused = train(&args("4").iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("optim.lr") && err.contains("--allow-config-change"),
        "{err}"
    );
    assert_eq!(metrics(&run).len(), 3, "nothing trained");
    let mut forced = args("4");
    forced.push("--allow-config-change".into());
    ok(&train(
        &forced.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_eq!(metrics(&run).len(), 4);
    assert_eq!(metrics(&run)[3]["lr"].as_f64(), Some(3e-4));

    // A run directory given as the checkpoint is named as such.
    let wrong = train(&["--resume", dir, "--output-dir", dir]);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("not a checkpoint folder") && err.contains("--resume latest"),
        "{err}"
    );

    // Even allowed, another model's config is refused before training, naming the UNet
    // settings that differ (it used to fail inside the first step's matmul).
    let other = train(&[
        "--config",
        "configs/quickstart.toml",
        "--output-dir",
        dir,
        "--resume",
        "latest",
        "--steps",
        "5",
        "--allow-config-change",
    ]);
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(
        err.contains("is not a UNet of the config's model") && err.contains("cross_attention_dim"),
        "{err}"
    );
}
