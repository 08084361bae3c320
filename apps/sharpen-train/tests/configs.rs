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
            // The main job's plan names its two CPU peers and its dataset: 8 listed captions,
            // one image each.
            let plan = String::from_utf8_lossy(&out.stdout);
            for line in [
                "devices: 2 (cpu, cpu); the counts below are per device",
                "8 rows (the shapes world, 8 listed captions at 1 fixed layout each)",
            ] {
                assert!(plan.contains(line), "{line}: {plan}");
            }
        }
    }
    // The shapes world restricted to listed captions: each must be one of the world's; fixed
    // layouts need the list and at least one layout each.
    let quickstart = std::fs::read_to_string(&configs[0]).unwrap();
    let two = "prompts = [\"a red circle\", \"a blue square above a green triangle\"]";
    for (data, error) in [
        (two.to_string(), None),
        (format!("{two}\nlayouts = 3"), None),
        (
            "prompts = [\"a red circle\", \"a purple circle\"]".to_string(),
            Some("config field `data.prompts[1]`: `a purple circle`"),
        ),
        (
            format!("{two}\nlayouts = 0"),
            Some("config field `data.layouts`: must be at least 1"),
        ),
        (
            "layouts = 2".to_string(),
            Some("config field `data.layouts`: fixes the layouts of listed captions"),
        ),
    ] {
        let cfg = tmp.path().join("prompts.toml");
        // The quickstart's own [data] section, replaced by this one.
        let start = quickstart.find("[data]").unwrap();
        let end = start + quickstart[start..].find("\n[trajectory]").unwrap();
        let text = format!(
            "{}[data]\nkind = \"shapes\"\n{data}\n{}",
            &quickstart[..start],
            &quickstart[end..]
        );
        std::fs::write(&cfg, text).unwrap();
        let out = train(&["--config", cfg.to_str().unwrap(), "--dry-run"]);
        let err = String::from_utf8_lossy(&out.stderr);
        match error {
            None => assert!(out.status.success(), "{data}: {err}"),
            Some(e) => assert!(!out.status.success() && err.contains(e), "{data}: {err}"),
        }
        if data.ends_with("layouts = 3") {
            // A fixed set: the plan counts its rows (2 captions x 3 layouts).
            let plan = String::from_utf8_lossy(&out.stdout);
            assert!(
                plan.contains(
                    "6 rows (the shapes world, 2 listed captions at 3 fixed layouts each) ("
                ),
                "{plan}"
            );
        }
    }
}
