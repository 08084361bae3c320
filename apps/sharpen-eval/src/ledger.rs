//! Score records (`compare --scores DIR`): every evaluated model's per-image shapes scores,
//! one JSON file per model, with the evaluation setup and a fingerprint of the model's files.
//! A later `compare` over the same setup reuses a record instead of generating the images again:
//! when the model folder is present its fingerprint must still match (weights that changed are
//! scored anew); when it is absent (a fresh machine, where the experiment's run folders are not
//! kept) the record stands for it. Records are small and meant to be committed beside the
//! results they produce, so that a long experiment survives losing its run folders.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shapes_world::ShapesScore;

use crate::shapes::{write, Setup};

/// `[seed][candidate][prompt]`, as `score_candidates` returns them.
pub type Scores = Vec<Vec<Vec<ShapesScore>>>;

/// A folder of score records.
#[derive(Debug, Clone)]
pub struct Ledger {
    dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// The model folder, as the comparison config names it.
    model: String,
    /// SHA-256 over the model folder's files (relative paths, sizes and bytes).
    fingerprint: String,
    setup: Setup,
    seeds: u64,
    candidates: usize,
    /// `[seed][candidate][prompt]`: (partial credit, all correct).
    scores: Vec<Vec<Vec<(f64, bool)>>>,
}

/// SHA-256 over every file under `model` (sorted by relative path).
pub fn fingerprint(model: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    let mut stack = vec![model.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let rel = file.strip_prefix(model).unwrap_or(&file);
        hash.update(rel.to_string_lossy().as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl Ledger {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The record file of `model`: its path with every character other than letters, digits,
    /// `-` and `.` turned into `_`.
    pub fn file(&self, model: &Path) -> PathBuf {
        let name: String = model
            .to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{}.json", name.trim_matches('_')))
    }

    /// The recorded scores of `model` under `setup`, cut to `seeds` x `candidates`, if a record
    /// covers them and still describes the model's files (or the model folder is absent).
    pub fn lookup(
        &self,
        model: &Path,
        setup: &Setup,
        seeds: u64,
        candidates: usize,
    ) -> anyhow::Result<Option<Scores>> {
        let path = self.file(model);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let record: Record = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a score record (delete it to score the model again)",
                path.display()
            )
        })?;
        if record.model != model.to_string_lossy() {
            bail!(
                "{}: records `{}`, not `{}` (two model paths map to one record file)",
                path.display(),
                record.model,
                model.display()
            );
        }
        if record.setup != *setup || record.seeds < seeds || record.candidates < candidates {
            tracing::info!(
                "{}: recorded for another setup or fewer seeds/candidates; scoring anew",
                path.display()
            );
            return Ok(None);
        }
        if model.exists() {
            if fingerprint(model)? != record.fingerprint {
                tracing::warn!(
                    "{}: the files of {} changed since they were scored; scoring anew",
                    path.display(),
                    model.display()
                );
                return Ok(None);
            }
        } else {
            tracing::info!(
                "{} is absent: using its recorded scores ({})",
                model.display(),
                path.display()
            );
        }
        let scores = record.scores[..seeds as usize]
            .iter()
            .map(|seed| {
                seed[..candidates]
                    .iter()
                    .map(|c| {
                        c.iter()
                            .map(|&(partial, all_correct)| ShapesScore {
                                partial,
                                all_correct,
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect::<Scores>();
        let shape_ok = scores.len() == seeds as usize
            && scores
                .iter()
                .all(|s| s.len() == candidates && s.iter().all(|c| c.len() == setup.prompts));
        if !shape_ok {
            bail!(
                "{}: the scores do not have {seeds} seeds x {candidates} candidates x {} prompts",
                path.display(),
                setup.prompts
            );
        }
        Ok(Some(scores))
    }

    /// Records the scores of `model` (present on disk) under `setup`.
    pub fn store(&self, model: &Path, setup: &Setup, scores: &Scores) -> anyhow::Result<()> {
        let record = Record {
            model: model.to_string_lossy().into_owned(),
            fingerprint: fingerprint(model)?,
            setup: setup.clone(),
            seeds: scores.len() as u64,
            candidates: scores.first().map_or(0, Vec::len),
            scores: scores
                .iter()
                .map(|seed| {
                    seed.iter()
                        .map(|c| c.iter().map(|s| (s.partial, s.all_correct)).collect())
                        .collect()
                })
                .collect(),
        };
        write(&self.file(model), &serde_json::to_string(&record)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(prompts: usize) -> Setup {
        Setup {
            split: "held-out".into(),
            prompts,
            prompt_seed: 0,
            sampler: "ddim".into(),
            steps: 4,
            guidance: 2.0,
            resolution: 32,
            batch_size: 8,
        }
    }

    fn scores(seeds: usize, candidates: usize, prompts: usize) -> Scores {
        (0..seeds)
            .map(|s| {
                (0..candidates)
                    .map(|c| {
                        (0..prompts)
                            .map(|p| ShapesScore {
                                partial: (s * 100 + c * 10 + p) as f64 / 1000.0,
                                all_correct: p % 2 == 0,
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_record_is_reused_cut_to_size_and_refused_when_the_model_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("run/pipeline");
        std::fs::create_dir_all(model.join("unet")).unwrap();
        std::fs::write(model.join("unet/weights.safetensors"), b"weights v1").unwrap();
        let ledger = Ledger::new(tmp.path().join("scores"));
        assert!(ledger.lookup(&model, &setup(3), 1, 1).unwrap().is_none());

        let all = scores(2, 4, 3);
        ledger.store(&model, &setup(3), &all).unwrap();
        assert_eq!(
            ledger.lookup(&model, &setup(3), 2, 4).unwrap(),
            Some(all.clone())
        );
        let cut = ledger.lookup(&model, &setup(3), 1, 2).unwrap().unwrap();
        assert_eq!(cut, vec![all[0][..2].to_vec()]);
        // More than recorded, or another setup: no record.
        assert!(ledger.lookup(&model, &setup(3), 3, 1).unwrap().is_none());
        assert!(ledger.lookup(&model, &setup(3), 1, 5).unwrap().is_none());
        assert!(ledger.lookup(&model, &setup(4), 1, 1).unwrap().is_none());

        // Changed weights: scored anew.
        std::fs::write(model.join("unet/weights.safetensors"), b"weights v2").unwrap();
        assert!(ledger.lookup(&model, &setup(3), 1, 1).unwrap().is_none());
        // The model folder gone: the record stands for it.
        std::fs::remove_dir_all(tmp.path().join("run")).unwrap();
        assert_eq!(ledger.lookup(&model, &setup(3), 2, 4).unwrap(), Some(all));
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(tmp.path());
        let model = Path::new("runs/x/pipeline");
        let file = ledger.file(model);
        assert_eq!(file, tmp.path().join("runs_x_pipeline.json"));
        std::fs::write(&file, "{\"model\": 3").unwrap();
        let err = format!("{:#}", ledger.lookup(model, &setup(3), 1, 1).unwrap_err());
        assert!(
            err.contains("runs_x_pipeline.json") && err.contains("not a score record"),
            "{err}"
        );
        // A record of another model under the same file name.
        let other = tmp.path().join("m");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("a"), b"x").unwrap();
        ledger.store(&other, &setup(3), &scores(1, 1, 3)).unwrap();
        std::fs::rename(ledger.file(&other), &file).unwrap();
        let err = format!("{:#}", ledger.lookup(model, &setup(3), 1, 1).unwrap_err());
        assert!(err.contains("not `runs/x/pipeline`"), "{err}");
    }

    #[test]
    fn the_fingerprint_covers_names_and_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path();
        std::fs::create_dir_all(m.join("vae")).unwrap();
        std::fs::write(m.join("vae/a"), b"1").unwrap();
        let f1 = fingerprint(m).unwrap();
        assert_eq!(f1, fingerprint(m).unwrap());
        assert_eq!(f1.len(), 64);
        std::fs::rename(m.join("vae/a"), m.join("vae/b")).unwrap();
        let f2 = fingerprint(m).unwrap();
        assert_ne!(f1, f2, "a renamed file");
        std::fs::write(m.join("vae/b"), b"2").unwrap();
        assert_ne!(f2, fingerprint(m).unwrap(), "changed bytes");
    }
}
