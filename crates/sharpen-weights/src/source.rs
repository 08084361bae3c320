//! Where `load_module` reads tensors from: a checkpoint as stored, or a view of one whose keys
//! and tensors are derived (the single-file layout of SDXL).

use std::path::PathBuf;

use burn::tensor::{DType, TensorData};
use safetensors::Dtype;

use crate::checkpoint::Checkpoint;
use crate::error::WeightsError;

/// What a key holds, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    pub path: PathBuf,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// A set of named tensors read lazily. Cheap to clone (shared memory maps).
pub trait WeightSource: Clone + 'static {
    fn keys(&self) -> Vec<String>;
    fn info(&self, key: &str) -> Option<SourceInfo>;
    /// Reads `key`, converted to `dtype`.
    fn read(&self, key: &str, dtype: DType) -> Result<TensorData, WeightsError>;
    /// The files, for messages.
    fn describe(&self) -> String;
}

impl WeightSource for Checkpoint {
    fn keys(&self) -> Vec<String> {
        Checkpoint::keys(self).map(str::to_string).collect()
    }

    fn info(&self, key: &str) -> Option<SourceInfo> {
        self.entry(key).map(|(path, e)| SourceInfo {
            path: path.to_path_buf(),
            dtype: e.dtype,
            shape: e.shape.clone(),
        })
    }

    fn read(&self, key: &str, dtype: DType) -> Result<TensorData, WeightsError> {
        Checkpoint::read(self, key, dtype)
    }

    fn describe(&self) -> String {
        self.describe_files()
    }
}
