//! Which config a resumed run continues with: the one saved with its checkpoint, unless
//! `--config` names one; then the two must agree on everything that shapes the run's numbers.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sharpen_trainer::train::run_dir::RunDir;

use crate::config::TrainConfig;

/// The resolved config's file name in the run directory and in each checkpoint.
pub const SAVED: &str = "config.toml";

/// Keys that may change when a run is continued: how long it runs, how often it saves and
/// samples, what it exports, how it is computed (checkpointing recomputes the same values) and
/// what it caches. Everything else changes the run's numbers.
const MAY_CHANGE: [&str; 8] = [
    "name",
    "steps",
    "checkpoint_every",
    "on_non_finite",
    "export_pipeline",
    "validation",
    "gradient_checkpointing",
    "cache",
];

/// The checkpoint `--resume` names: `latest` in `run_dir`, or a checkpoint folder.
pub fn checkpoint(spec: &str, run_dir: &Path) -> anyhow::Result<PathBuf> {
    if spec != "latest" {
        let dir = PathBuf::from(spec);
        if !dir.join("state.json").is_file() {
            let hint = if dir.join("checkpoints").is_dir() {
                format!(
                    "; it is a run directory: continue it with --output-dir {spec} --resume latest"
                )
            } else {
                String::new()
            };
            anyhow::bail!("--resume {spec}: not a checkpoint folder (no state.json){hint}");
        }
        return Ok(dir);
    }
    let run = RunDir {
        root: run_dir.to_path_buf(),
    };
    run.latest()?
        .with_context(|| format!("--resume latest: {} holds no checkpoint", run_dir.display()))
}

/// The config saved with `checkpoint` (a checkpoint written before configs were saved with
/// them: its run directory's, when `checkpoint` is in `run_dir`), and the file it came from.
pub fn saved(checkpoint: &Path, run_dir: &Path) -> anyhow::Result<Option<(PathBuf, TrainConfig)>> {
    let mut candidates = vec![checkpoint.join(SAVED)];
    if checkpoint.parent() == Some(&run_dir.join("checkpoints")) {
        candidates.push(run_dir.join(SAVED));
    }
    for path in candidates {
        if path.is_file() {
            let config = TrainConfig::load(&path)?;
            return Ok(Some((path, config)));
        }
    }
    Ok(None)
}

/// The settings (dotted keys, `optim.lr`) in which `now` differs from `saved` and that change
/// the run's numbers.
pub fn differences(saved: &TrainConfig, now: &TrainConfig) -> anyhow::Result<Vec<String>> {
    let value = |c: &TrainConfig| -> anyhow::Result<toml::Table> {
        let text = toml::to_string(c).context("serialising the config")?;
        let mut table: toml::Table = toml::from_str(&text)?;
        // k peers at batch N train as one device at batch kN: the group's batch is what counts,
        // so a run continues on other devices as long as it keeps that batch.
        table.remove("devices");
        let group = c.group_batch() as i64;
        table.insert("batch_size".into(), toml::Value::Integer(group));
        Ok(table)
    };
    let (a, b) = (value(saved)?, value(now)?);
    let mut out = Vec::new();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if !MAY_CHANGE.contains(&key.as_str()) {
            differ(key, a.get(key), b.get(key), &mut out);
        }
    }
    Ok(out)
}

fn differ(path: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<String>) {
    match (a, b) {
        (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                differ(&format!("{path}.{key}"), x.get(key), y.get(key), out);
            }
        }
        (a, b) if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// Refuses a checkpoint whose trained UNet is not shaped like `model`'s (resuming another
/// model's run would otherwise fail deep inside the first step), naming the settings that differ.
pub fn check_unet(checkpoint: &Path, model: &Path) -> anyhow::Result<()> {
    let (ours, theirs) = (checkpoint.join("unet"), model.join("unet"));
    if !ours.join("config.json").is_file() {
        return Ok(());
    }
    let config = |dir: &Path| {
        sharpen_weights::unet::load_unet_config(dir)
            .with_context(|| format!("reading {}", dir.join("config.json").display()))
    };
    if config(&ours)? == config(&theirs)? {
        return Ok(());
    }
    let json = |dir: &Path| -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)?;
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
    };
    let (a, b) = (json(&ours)?, json(&theirs)?);
    let mut keys: Vec<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| !k.starts_with('_'))
        .collect();
    keys.sort();
    keys.dedup();
    let differing: Vec<&str> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(String::as_str)
        .collect();
    anyhow::bail!(
        "{} is not a UNet of the config's model {}: their config.json differ in {}",
        ours.display(),
        model.display(),
        differing.join(", ")
    )
}

/// The files that show a run folder holds a run: a fresh run there would append to its metrics
/// and validations and mix its checkpoints with the earlier run's.
const RUN_FILES: [&str; 3] = ["checkpoints/latest", "metrics.jsonl", "validation.jsonl"];

/// The folder a fresh run (no `--resume`) writes to. `dir` when it holds no run; when it does,
/// the default folder (`given` false) gives way to the first of `dir-2`, `dir-3`, ... that holds
/// none, and a folder named by `--output-dir` is refused: the earlier run is never written into.
pub fn fresh_dir(dir: PathBuf, given: bool) -> anyhow::Result<PathBuf> {
    let holds_run = |d: &Path| RUN_FILES.iter().map(|f| d.join(f)).find(|p| p.exists());
    let Some(found) = holds_run(&dir) else {
        return Ok(dir);
    };
    if given {
        let way = if dir.join(RUN_FILES[0]).exists() {
            "continue it with --resume latest, or give another --output-dir"
        } else {
            "it stopped before its first checkpoint, so there is nothing to resume: delete the folder or give another --output-dir"
        };
        anyhow::bail!(
            "--output-dir {}: holds an earlier run ({}); {way}",
            dir.display(),
            found.display()
        );
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let next = (2..)
        .map(|k| dir.with_file_name(format!("{name}-{k}")))
        .find(|d| holds_run(d).is_none())
        .expect("some numbered folder is free");
    tracing::info!(
        earlier = %dir.display(),
        run = %next.display(),
        "the default run folder holds an earlier run; this run writes to the next free one (--output-dir {} --resume latest continues the earlier run)",
        dir.display()
    );
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quickstart() -> TrainConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml");
        TrainConfig::load(&path).unwrap()
    }

    #[test]
    fn numeric_settings_differ_and_the_rest_may_change() {
        let saved = quickstart();
        let mut now = saved.clone();
        assert!(differences(&saved, &now).unwrap().is_empty());
        now.steps += 100;
        now.checkpoint_every = 7;
        now.gradient_checkpointing = true;
        now.validation.seeds += 1;
        assert!(
            differences(&saved, &now).unwrap().is_empty(),
            "run length, saving, sampling and checkpointing may change"
        );
        now.optim.lr *= 2.0;
        now.seed += 1;
        now.trajectory.n += 1;
        assert_eq!(
            differences(&saved, &now).unwrap(),
            ["optim.lr", "seed", "trajectory.n"]
        );
    }

    #[test]
    fn a_run_may_move_to_other_devices_that_keep_its_group_batch() {
        let saved = quickstart();
        assert_eq!((saved.devices.len(), saved.batch_size), (2, 8));
        let mut one = saved.clone();
        one.devices = Vec::new();
        one.batch_size = 16;
        assert!(differences(&saved, &one).unwrap().is_empty());
        let mut four = saved.clone();
        four.devices = vec![
            "cuda:0".into(),
            "cuda:1".into(),
            "cuda:2".into(),
            "cuda:3".into(),
        ];
        four.batch_size = 4;
        assert!(differences(&saved, &four).unwrap().is_empty());
        // One device at the per-device batch would halve the group's batch.
        one.batch_size = 8;
        assert_eq!(differences(&saved, &one).unwrap(), ["batch_size"]);
    }

    #[test]
    fn a_fresh_run_never_writes_into_an_earlier_run() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shapes-sharpen");
        // Absent or empty (a dry run's, or one that failed before training): used as it is.
        assert_eq!(fresh_dir(dir.clone(), true).unwrap(), dir);
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        assert_eq!(fresh_dir(dir.clone(), false).unwrap(), dir);
        for (i, file) in RUN_FILES.iter().enumerate() {
            let run = tmp.path().join(format!("run{i}"));
            std::fs::create_dir_all(run.join("checkpoints")).unwrap();
            std::fs::write(run.join(file), "").unwrap();
            // Named by --output-dir: refused, naming the folder, what shows the run, and how
            // to continue it (only a checkpoint can be continued).
            let err = format!("{:#}", fresh_dir(run.clone(), true).unwrap_err());
            let way = match i {
                0 => "--resume latest",
                _ => "before its first checkpoint",
            };
            assert!(
                err.contains(&run.display().to_string()) && err.contains(file) && err.contains(way),
                "{err}"
            );
            // The default folder: the next free numbered one.
            assert_eq!(
                fresh_dir(run.clone(), false).unwrap(),
                tmp.path().join(format!("run{i}-2"))
            );
        }
        std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
        std::fs::create_dir_all(tmp.path().join("shapes-sharpen-2")).unwrap();
        assert_eq!(
            fresh_dir(dir.clone(), false).unwrap(),
            tmp.path().join("shapes-sharpen-2")
        );
        std::fs::write(tmp.path().join("shapes-sharpen-2/metrics.jsonl"), "").unwrap();
        assert_eq!(
            fresh_dir(dir, false).unwrap(),
            tmp.path().join("shapes-sharpen-3")
        );
    }
}
