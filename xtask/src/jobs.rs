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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{options, plan};

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
