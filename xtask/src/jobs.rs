//! Running the experiment's processes: `cargo run` of an app, and its training runs a few at a
//! time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};

use crate::experiment::Planned;

/// `cargo run --release -p package -- args`, its output appended to `log` when given.
pub fn cargo_run(package: &str, args: &[&str], log: Option<&Path>) -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args(["run", "--release", "-q", "-p", package, "--"])
        .args(args);
    if let Some(log) = log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        command
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
    }
    let status = command
        .status()
        .with_context(|| format!("starting {package}"))?;
    if !status.success() {
        bail!("{package} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn finished(r: &Planned) -> bool {
    r.dir.join("pipeline/model_index.json").is_file()
}

/// The planned config a run folder trains, written into it before its first training.
pub const CLAIM: &str = "experiment.toml";

/// Makes `r.dir` the folder of `r`'s config: a folder with no training in it is claimed (its
/// config written to [`CLAIM`]); one claimed by the same config is kept, to resume or record.
/// A folder that holds training of another config, or of an unknown one, is refused: resuming
/// or recording it would file the wrong run under the plan's config.
pub fn claim(r: &Planned) -> anyhow::Result<()> {
    let marker = r.dir.join(CLAIM);
    match std::fs::read_to_string(&marker) {
        Ok(text) if r.is_config(&text) => Ok(()),
        Ok(_) => bail!(
            "{} holds a run of another config than the plan's (see {}); move the folder away or delete it to train the planned run",
            r.dir.display(),
            marker.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let trained = ["metrics.jsonl", "checkpoints/latest", "pipeline/model_index.json"]
                .iter()
                .find(|f| r.dir.join(f).exists());
            if let Some(f) = trained {
                bail!(
                    "{} holds training ({f}) but no {CLAIM}, so its config is unknown (an older experiment command made it); move the folder away or delete it to train the planned run",
                    r.dir.display()
                );
            }
            std::fs::create_dir_all(&r.dir)
                .with_context(|| format!("creating {}", r.dir.display()))?;
            let tmp = marker.with_extension("tmp");
            std::fs::write(&tmp, &r.config)
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &marker).with_context(|| format!("writing {}", marker.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", marker.display())),
    }
}

/// Runs `train` on every run that is not `done`, `jobs` at a time in plan order. After a
/// failure no new run starts; the ones under way finish, and every failure is reported.
pub fn train_all(
    runs: &[Planned],
    jobs: usize,
    done: &dyn Fn(&Planned) -> bool,
    train: &(dyn Fn(&Planned, Option<&Path>) -> anyhow::Result<()> + Sync),
) -> anyhow::Result<()> {
    if jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let total = runs.len();
    let mut pending = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        if done(r) {
            eprintln!("[{}/{total}] {}: done already", i + 1, r.dir.display());
        } else {
            pending.push((i, r));
        }
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(pending.len()) {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let Some(&(i, r)) = pending.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        break;
                    };
                    let log = (jobs > 1).then(|| r.dir.with_extension("log"));
                    match &log {
                        Some(log) => eprintln!(
                            "[{}/{total}] training {} (output in {})",
                            i + 1,
                            r.dir.display(),
                            log.display()
                        ),
                        None => eprintln!("[{}/{total}] training {}", i + 1, r.dir.display()),
                    }
                    match train(r, log.as_deref()) {
                        Ok(()) => eprintln!("[{}/{total}] finished {}", i + 1, r.dir.display()),
                        Err(e) => {
                            stop.store(true, Ordering::SeqCst);
                            errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                        }
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().unwrap()),
        _ => bail!(
            "{} runs failed:\n{}",
            errors.len(),
            errors
                .iter()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// Clears what a claimed run that stopped before its first checkpoint wrote (its metrics and
/// validations: nothing to resume from), so that it starts over; sharpen-train refuses to start
/// a run in a folder that holds them.
pub fn start_over(r: &Planned) -> anyhow::Result<()> {
    for f in ["metrics.jsonl", "validation.jsonl"] {
        match std::fs::remove_file(r.dir.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", r.dir.join(f).display()))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{options, plan};

    #[test]
    fn a_run_folder_trains_only_the_config_that_claimed_it() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().to_string_lossy().into_owned();
        let runs = plan(&options(&["--out", &out, "--seeds", "1", "--no-ablations"])).unwrap();
        let r = &runs[0];
        claim(r).unwrap();
        assert_eq!(
            std::fs::read_to_string(r.dir.join(CLAIM)).unwrap(),
            r.config
        );
        // Training under way, then the same plan again: kept, to resume.
        std::fs::create_dir_all(r.dir.join("checkpoints")).unwrap();
        std::fs::write(r.dir.join("checkpoints/latest"), "step-5").unwrap();
        claim(r).unwrap();
        // The plan's config changed (the same TOML written differently is the same config).
        let mut respaced = r.clone();
        respaced.config = r.config.replace(" = ", "=");
        claim(&respaced).unwrap();
        let mut changed = r.clone();
        changed.config = r.config.replace("seed = 0", "seed = 7");
        assert_ne!(changed.config, r.config);
        let err = format!("{:#}", claim(&changed).unwrap_err());
        assert!(err.contains("another config") && err.contains(&r.dir.display().to_string()));
        // A trained folder without a claim (an older experiment command's) is refused, and an
        // empty one (a dry run's) is claimed.
        let old = &runs[1];
        std::fs::create_dir_all(old.dir.join("pipeline")).unwrap();
        std::fs::write(old.dir.join("pipeline/model_index.json"), "{}").unwrap();
        let err = format!("{:#}", claim(old).unwrap_err());
        assert!(
            err.contains("pipeline/model_index.json") && err.contains("unknown"),
            "{err}"
        );
        assert!(!old.dir.join(CLAIM).exists());
        std::fs::create_dir_all(&runs[2].dir).unwrap();
        claim(&runs[2]).unwrap();
        assert!(runs[2].dir.join(CLAIM).is_file());
        // A claimed run stopped before its first checkpoint starts over: its metrics go, its
        // claim stays.
        std::fs::write(runs[2].dir.join("metrics.jsonl"), "{}").unwrap();
        std::fs::write(runs[2].dir.join("validation.jsonl"), "{}").unwrap();
        claim(&runs[2]).unwrap();
        start_over(&runs[2]).unwrap();
        assert!(!runs[2].dir.join("metrics.jsonl").exists());
        assert!(!runs[2].dir.join("validation.jsonl").exists());
        assert!(runs[2].dir.join(CLAIM).is_file());
        start_over(&runs[2]).unwrap();
    }

    #[test]
    fn runs_train_once_each_jobs_at_a_time_and_a_failure_stops_new_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().to_string_lossy().into_owned();
        let runs = plan(&options(&["--out", &out, "--seeds", "1", "--no-ablations"])).unwrap();
        let mark_done = |r: &Planned| {
            std::fs::create_dir_all(r.dir.join("pipeline")).unwrap();
            std::fs::write(r.dir.join("pipeline/model_index.json"), "{}").unwrap();
        };
        mark_done(&runs[1]);
        let trained = Mutex::new(Vec::new());
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        train_all(&runs, 2, &finished, &|r: &Planned, log: Option<&Path>| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert_eq!(log, Some(r.dir.with_extension("log").as_path()));
            trained.lock().unwrap().push(r.method.clone());
            mark_done(r);
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        let mut trained = trained.into_inner().unwrap();
        trained.sort();
        let mut expected: Vec<String> = runs.iter().map(|r| r.method.clone()).collect();
        expected.remove(1);
        expected.sort();
        assert_eq!(
            trained, expected,
            "every unfinished run once, the finished one skipped"
        );
        assert_eq!(most.load(Ordering::SeqCst), 2, "two runs at a time");

        // One at a time: no log file, and nothing starts after a failure.
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().to_string_lossy().into_owned();
        let runs = plan(&options(&["--out", &out, "--seeds", "1", "--no-ablations"])).unwrap();
        let calls = AtomicUsize::new(0);
        let err = train_all(&runs, 1, &finished, &|r: &Planned, log: Option<&Path>| {
            assert!(log.is_none());
            calls.fetch_add(1, Ordering::SeqCst);
            bail!("{} broke", r.method)
        })
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.to_string(), "standard broke");
        let err = train_all(&runs, 2, &finished, &|r: &Planned, _: Option<&Path>| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            bail!("{} broke", r.method)
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("2 runs failed"), "{err}");
        assert!(
            err.contains("standard broke") && err.contains("ddpo broke"),
            "{err}"
        );
        assert!(train_all(&runs, 0, &finished, &|_: &Planned, _: Option<&Path>| Ok(())).is_err());
    }
}
