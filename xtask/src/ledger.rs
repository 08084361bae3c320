//! The experiment's ledger (committed beside the results page): what each finished run leaves
//! that the results need, so that the experiment survives losing its run folders (which hold
//! checkpoints and are not committed). Per run, `runs/<name>/` holds the run's config,
//! `metrics.jsonl` and `validation.jsonl`, and, written last as the mark of a finished entry,
//! `compare.json` (its own held-out table); `scores/` holds `sharpen-eval compare`'s score
//! records, which the final comparison uses for models whose folders are gone.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::experiment::Planned;

/// The files of a run's entry, copied from its run folder (`compare.json` from `<run>/eval/`).
const COPIED: [&str; 2] = ["metrics.jsonl", "validation.jsonl"];

/// The entry folder of `r`.
pub fn entry(ledger: &Path, r: &Planned) -> PathBuf {
    ledger
        .join("runs")
        .join(r.dir.file_name().expect("a run folder has a name"))
}

/// The score records' folder.
pub fn scores(ledger: &Path) -> PathBuf {
    ledger.join("scores")
}

/// `r` has a finished entry made with the same config (the same settings; comments may differ).
pub fn recorded(ledger: &Path, r: &Planned) -> bool {
    let dir = entry(ledger, r);
    let same = std::fs::read_to_string(dir.join("config.toml")).is_ok_and(|c| r.is_config(&c));
    same && COPIED.iter().all(|f| dir.join(f).is_file()) && dir.join("compare.json").is_file()
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("writing {}", to.display()))
}

/// Starts `r`'s entry from its finished run folder: config, metrics and validation (an
/// unfinished entry: no `compare.json`, which an older entry of the run loses first).
pub fn record_run(ledger: &Path, r: &Planned) -> anyhow::Result<()> {
    let dir = entry(ledger, r);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    match std::fs::remove_file(dir.join("compare.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}/compare.json", dir.display()))
        }
        _ => {}
    }
    for f in COPIED {
        copy(&r.dir.join(f), &dir.join(f))?;
    }
    let config = dir.join("config.toml");
    std::fs::write(&config, &r.config).with_context(|| format!("writing {}", config.display()))
}

/// Finishes `r`'s entry with its evaluation (`<eval>/compare.json`).
pub fn record_eval(ledger: &Path, r: &Planned, eval: &Path) -> anyhow::Result<()> {
    copy(
        &eval.join("compare.json"),
        &entry(ledger, r).join("compare.json"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{options, plan};

    #[test]
    fn an_entry_counts_once_finished_and_only_for_the_same_config() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("runs").to_string_lossy().into_owned();
        let ledger = tmp.path().join("ledger");
        let runs = plan(&options(&["--out", &out, "--seeds", "1", "--no-ablations"])).unwrap();
        let r = &runs[3];
        std::fs::create_dir_all(&r.dir).unwrap();
        for f in COPIED {
            std::fs::write(r.dir.join(f), format!("{f} of the run\n")).unwrap();
        }
        assert!(!recorded(&ledger, r));
        record_run(&ledger, r).unwrap();
        assert!(!recorded(&ledger, r), "no evaluation yet");
        let eval = r.dir.join("eval");
        std::fs::create_dir_all(&eval).unwrap();
        std::fs::write(eval.join("compare.json"), "{}").unwrap();
        record_eval(&ledger, r, &eval).unwrap();
        assert!(recorded(&ledger, r));
        let dir = entry(&ledger, r);
        assert_eq!(dir, ledger.join("runs/sharpen-sft-s0"));
        assert_eq!(
            std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap(),
            "metrics.jsonl of the run\n"
        );
        // The run folder may go; the entry stands.
        std::fs::remove_dir_all(&r.dir).unwrap();
        assert!(recorded(&ledger, r));
        // Another config for the same run: not recorded.
        let mut reworded = r.clone();
        reworded.config = format!("# another comment\n{}", r.config);
        assert!(recorded(&ledger, &reworded), "a comment is not a setting");
        let mut changed = r.clone();
        changed.config = r.config.replace("seed = 0", "seed = 7");
        assert_ne!(changed.config, r.config);
        assert!(!recorded(&ledger, &changed));
        // Recording the run again unfinishes the entry until it is evaluated again.
        std::fs::create_dir_all(&r.dir).unwrap();
        for f in COPIED {
            std::fs::write(r.dir.join(f), "again\n").unwrap();
        }
        record_run(&ledger, &changed).unwrap();
        assert!(!recorded(&ledger, &changed));
        assert!(
            record_run(&ledger, &runs[4]).is_err(),
            "a run folder without metrics"
        );
    }
}
