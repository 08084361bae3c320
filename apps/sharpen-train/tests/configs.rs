//! The shipped training configs, and the shapes world's caption list, through `--dry-run`.

mod common;

use common::{train, workspace};

#[test]
fn every_shipped_training_config_passes_a_dry_run() {
    // The configs the README and the result pages name load their model, data and reward. The
    // shapes model's recipe stages start from the previous stage's run folder, which a fresh
    // clone lacks: they are checked against the shipped model.
    let root = workspace();
    let mut configs = vec![root.join("configs/quickstart.toml")];
    for dir in ["configs/shapes", "configs/lora"] {
        let mut found: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        found.sort();
        assert!(!found.is_empty(), "{dir} holds training configs");
        configs.extend(found);
    }
    let tmp = tempfile::tempdir().unwrap();
    for cfg in &configs {
        let text = std::fs::read_to_string(cfg).unwrap();
        let table: toml::Table = text.parse().unwrap();
        let mut args = vec!["--config", cfg.to_str().unwrap(), "--dry-run"];
        if table["model"].as_str().unwrap().starts_with("runs/") {
            args.extend(["--model", "assets/shapes-model"]);
        }
        let run = tmp.path().join("run");
        args.extend(["--output-dir", run.to_str().unwrap()]);
        let out = train(&args);
        assert!(
            out.status.success(),
            "{}: {}",
            cfg.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!run.exists(), "{}: a dry run writes nothing", cfg.display());
        if cfg.ends_with("configs/quickstart.toml") {
            // The main job's plan names its two CPU peers and its 8 listed captions.
            let plan = String::from_utf8_lossy(&out.stdout);
            for line in [
                "devices: 2 (cpu, cpu); the counts below are per device",
                "the shapes world, 8 listed captions",
            ] {
                assert!(plan.contains(line), "{line}: {plan}");
            }
        }
    }
    // The shapes world restricted to listed captions: each must be one of the world's.
    let quickstart = std::fs::read_to_string(&configs[0]).unwrap();
    for (prompts, error) in [
        (
            "[\"a red circle\", \"a blue square above a green triangle\"]",
            None,
        ),
        (
            "[\"a red circle\", \"a purple circle\"]",
            Some("config field `data.prompts[1]`: `a purple circle`"),
        ),
    ] {
        let cfg = tmp.path().join("prompts.toml");
        // The quickstart's own [data] section, replaced by one with these prompts.
        let start = quickstart.find("[data]").unwrap();
        let end = start + quickstart[start..].find("\n[trajectory]").unwrap();
        let text = format!(
            "{}[data]\nkind = \"shapes\"\nprompts = {prompts}\n{}",
            &quickstart[..start],
            &quickstart[end..]
        );
        std::fs::write(&cfg, text).unwrap();
        let out = train(&["--config", cfg.to_str().unwrap(), "--dry-run"]);
        let err = String::from_utf8_lossy(&out.stderr);
        match error {
            None => assert!(out.status.success(), "{err}"),
            Some(e) => assert!(!out.status.success() && err.contains(e), "{err}"),
        }
    }
}
