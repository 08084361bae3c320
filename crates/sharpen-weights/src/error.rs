use std::fmt;
use std::path::{Path, PathBuf};

/// Every way loading weights, configs or tokenizer files can fail. Each message names the file,
/// and the key or field where there is one.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: file not found", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no weights file found; looked for {looked_for}{hint}", dir.display())]
    NoWeights {
        dir: PathBuf,
        looked_for: String,
        hint: String,
    },
    #[error("{}: not a valid safetensors file: {message}", path.display())]
    InvalidSafetensors { path: PathBuf, message: String },
    #[error("{}: tensor `{key}` has dtype {dtype}, expected a float tensor (F32, F16 or BF16)", path.display())]
    WrongDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{}: not a readable PyTorch checkpoint: {message}", path.display())]
    InvalidPth { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    InvalidIndex { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    InvalidConfig { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    InvalidTokenizer { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    InvalidLora { path: PathBuf, message: String },
    #[error("weights in {files} do not match the {model} model:\n{report}")]
    KeyMismatch {
        model: String,
        files: String,
        report: KeyReport,
    },
    #[error("{}: tensor `{key}` could not be applied: {message}", path.display())]
    Apply {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl WeightsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            Self::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// The strict comparison of a checkpoint's keys with a model's parameters, in checkpoint naming
/// (PyTorch layout: `weight`/`bias`, Linear weights [out, in]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyReport {
    /// Parameters of the model that no file provides.
    pub missing: Vec<String>,
    /// Keys in the files that no parameter takes (after the allow-list of known extras).
    pub unused: Vec<String>,
    /// (key, shape the model expects, shape in the file).
    pub shape_mismatch: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl KeyReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unused.is_empty() && self.shape_mismatch.is_empty()
    }
}

const LISTED: usize = 20;

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, what: &str, items: Vec<String>) -> fmt::Result {
            if items.is_empty() {
                return Ok(());
            }
            writeln!(f, "  {} {what}:", items.len())?;
            for item in items.iter().take(LISTED) {
                writeln!(f, "    {item}")?;
            }
            if items.len() > LISTED {
                writeln!(f, "    ... and {} more", items.len() - LISTED)?;
            }
            Ok(())
        }
        list(
            f,
            "missing (in the model, not in the files)",
            self.missing.clone(),
        )?;
        list(
            f,
            "unused (in the files, not in the model)",
            self.unused.clone(),
        )?;
        let shapes = self
            .shape_mismatch
            .iter()
            .map(|(k, want, got)| format!("{k}: model expects {want:?}, file has {got:?}"))
            .collect();
        list(f, "with mismatched shapes", shapes)
    }
}
