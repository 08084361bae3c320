//! The run directory: resolved config, `metrics.jsonl`, checkpoints written under a temporary
//! name and renamed, and a `latest` pointer replaced atomically. An interrupted write leaves the
//! previous checkpoint in place and loadable.
//!
//! ```text
//! DIR/metrics.jsonl
//! DIR/checkpoints/step-000050/{state.json, optimizer.bin, <model files>}
//! DIR/checkpoints/latest            ("step-000050")
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::train::rng::RunRng;

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a run is, beyond its weights and optimizer state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    pub rng: RunRng,
    /// How far the data stream has been read (examples drawn).
    pub data_cursor: u64,
    /// Wall-clock seconds spent training before this checkpoint.
    pub elapsed_s: f64,
}

#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

/// Writes `contents` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), RunDirError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Appends one JSON line to `path` (flushed, so a crash loses at most the line being written).
fn append_line(path: &Path, line: &serde_json::Value) -> Result<(), RunDirError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    writeln!(f, "{line}").map_err(io(path))?;
    f.flush().map_err(io(path))
}

/// Keeps the JSON lines of `path` whose `step` is at most `step`.
fn truncate_lines(path: &Path, step: usize) -> Result<(), RunDirError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path)(e)),
    };
    let step_of = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v["step"].as_u64())
            .map(|s| s as usize)
    };
    let lines: Vec<&str> = text.lines().collect();
    // Everything up to the last line of the checkpoint's step, in order; without such a
    // line, the lines of earlier steps.
    let kept: Vec<&str> = match lines.iter().rposition(|l| step_of(l) == Some(step)) {
        Some(last) => lines[..=last].to_vec(),
        None => lines
            .into_iter()
            .filter(|l| step_of(l).is_some_and(|s| s <= step))
            .collect(),
    };
    let kept: String = kept.iter().map(|l| format!("{l}\n")).collect();
    write_atomic(path, kept.as_bytes())
}

impl RunDir {
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, RunDirError> {
        let root = root.into();
        std::fs::create_dir_all(root.join("checkpoints")).map_err(io(&root))?;
        Ok(Self { root })
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// `DIR/validation.jsonl`: one line per validation (step, reward of the fixed samples).
    pub fn validation_path(&self) -> PathBuf {
        self.root.join("validation.jsonl")
    }

    /// Appends one metrics line (flushed, so a crash loses at most the line being written).
    pub fn append_metrics(&self, line: &serde_json::Value) -> Result<(), RunDirError> {
        append_line(&self.metrics_path(), line)
    }

    /// Appends one line to `validation.jsonl`.
    pub fn append_validation(&self, line: &serde_json::Value) -> Result<(), RunDirError> {
        append_line(&self.validation_path(), line)
    }

    /// Keeps the metrics and validation lines of steps up to `step` (a resumed run rewrites what
    /// came after).
    pub fn truncate_metrics(&self, step: usize) -> Result<(), RunDirError> {
        truncate_lines(&self.metrics_path(), step)?;
        truncate_lines(&self.validation_path(), step)
    }
    /// Writes checkpoint `step`: `write` fills a fresh temporary directory (model files,
    /// optimizer state), then `state.json` is added, the directory renamed into place and
    /// `latest` pointed at it. Returns the checkpoint's directory.
    pub fn save_checkpoint(
        &self,
        state: &TrainState,
        write: impl FnOnce(&Path) -> Result<(), RunDirError>,
    ) -> Result<PathBuf, RunDirError> {
        let name = format!("step-{:06}", state.step);
        let tmp = self.checkpoints().join(format!("{name}.tmp"));
        let dir = self.checkpoints().join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        write(&tmp)?;
        let json = serde_json::to_vec_pretty(state).expect("state serialises");
        write_atomic(&tmp.join("state.json"), &json)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        write_atomic(&self.checkpoints().join("latest"), name.as_bytes())?;
        tracing::info!(checkpoint = %dir.display(), "saved checkpoint");
        Ok(dir)
    }

    /// The checkpoint `latest` points at, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>, RunDirError> {
        let pointer = self.checkpoints().join("latest");
        match std::fs::read_to_string(&pointer) {
            Ok(name) => {
                let dir = self.checkpoints().join(name.trim());
                if dir.join("state.json").is_file() {
                    Ok(Some(dir))
                } else {
                    Err(RunDirError::Invalid {
                        path: pointer,
                        message: format!("points at {} which holds no state.json", dir.display()),
                    })
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&pointer)(e)),
        }
    }
}

/// Reads a checkpoint's `state.json`.
pub fn read_state(checkpoint: &Path) -> Result<TrainState, RunDirError> {
    let path = checkpoint.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| RunDirError::Invalid {
        path,
        message: e.to_string(),
    })
}
