//! PyTorch `.pth` / `.pt` / `.bin` checkpoints (zip or legacy pickle, as `torch.save` writes them)
//! as a [`WeightSource`], read through burn-store's pickle reader. Only tensors are read; no code in
//! the pickle is run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::{DType, TensorData};
use burn_store::pytorch::PytorchReader;
use burn_store::TensorSnapshot;
use safetensors::Dtype;

use crate::error::WeightsError;
use crate::source::{SourceInfo, WeightSource};

/// The tensors of a `torch.save`d state dict (optionally under a top-level key such as
/// `state_dict`), read lazily.
#[derive(Clone)]
pub struct PthFile {
    path: PathBuf,
    tensors: Rc<BTreeMap<String, TensorSnapshot>>,
}

impl PthFile {
    /// Opens a state dict saved at the top level of the pickle.
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        Self::open_inner(path, None)
    }

    /// Opens the state dict stored under `key` (`{"state_dict": ...}` checkpoints).
    pub fn open_key(path: &Path, key: &str) -> Result<Self, WeightsError> {
        Self::open_inner(path, Some(key))
    }

    fn open_inner(path: &Path, key: Option<&str>) -> Result<Self, WeightsError> {
        if !path.is_file() {
            return Err(WeightsError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let reader = match key {
            None => PytorchReader::new(path),
            Some(key) => PytorchReader::with_top_level_key(path, key),
        }
        .map_err(|e| WeightsError::InvalidPth {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            tensors: Rc::new(reader.into_tensors().into_iter().collect()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn safetensors_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F64 => Dtype::F64,
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::I16 => Dtype::I16,
        DType::I8 => Dtype::I8,
        DType::U8 => Dtype::U8,
        DType::Bool(_) => Dtype::BOOL,
        _ => Dtype::U64,
    }
}

impl WeightSource for PthFile {
    fn keys(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn info(&self, key: &str) -> Option<SourceInfo> {
        self.tensors.get(key).map(|t| SourceInfo {
            path: self.path.clone(),
            dtype: safetensors_dtype(t.dtype),
            shape: t.shape.to_vec(),
        })
    }

    fn read(&self, key: &str, dtype: DType) -> Result<TensorData, WeightsError> {
        let snapshot = self.tensors.get(key).ok_or_else(|| WeightsError::Apply {
            path: self.path.clone(),
            key: key.to_string(),
            message: "not in this file".to_string(),
        })?;
        let data = snapshot.to_data().map_err(|e| WeightsError::InvalidPth {
            path: self.path.clone(),
            message: format!("tensor `{key}`: {e}"),
        })?;
        Ok(data.convert_dtype(dtype))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
