//! One safetensors file, memory-mapped and validated (header JSON, offsets, file length).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::{DType, TensorData};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::WeightsError;

/// A tensor entry of a safetensors header.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range in the file.
    pub start: usize,
    pub end: usize,
}

/// A validated, memory-mapped safetensors file. Tensors are read lazily.
#[derive(Debug, Clone)]
pub struct SafetensorsFile {
    pub path: PathBuf,
    mmap: Rc<Mmap>,
    pub tensors: BTreeMap<String, TensorEntry>,
    /// The header's `__metadata__` (string to string), if any.
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// Opens and validates `path`: a truncated file, a corrupt header or offsets that do not tile
    /// the data exactly are errors that name the file.
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let file = File::open(path).map_err(|e| WeightsError::io(path, e))?;
        // SAFETY: the map is read-only; a file changed by another process while mapped is a
        // user error this crate cannot guard against (every safetensors reader shares it).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| WeightsError::io(path, e))?;
        let invalid = |message: String| WeightsError::InvalidSafetensors {
            path: path.to_path_buf(),
            message,
        };
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| invalid(describe(&e, mmap.len())))?;
        let data_start = 8 + header_len;
        let header_metadata: BTreeMap<String, String> = metadata
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let entry = TensorEntry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: data_start + info.data_offsets.0,
                    end: data_start + info.data_offsets.1,
                };
                (name, entry)
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            mmap: Rc::new(mmap),
            tensors,
            metadata: header_metadata,
        })
    }

    /// Reads `key` and converts it to `target` (F32, F16 or BF16 files; any float target).
    pub fn read(&self, key: &str, target: DType) -> Result<TensorData, WeightsError> {
        let entry = self.tensors.get(key).ok_or_else(|| WeightsError::Apply {
            path: self.path.clone(),
            key: key.to_string(),
            message: "not in this file".to_string(),
        })?;
        let bytes = &self.mmap[entry.start..entry.end];
        let values: Vec<f32> = match entry.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(WeightsError::WrongDtype {
                    path: self.path.clone(),
                    key: key.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let shape = entry.shape.clone();
        Ok(match target {
            DType::F32 => TensorData::new(values, shape),
            DType::F16 => TensorData::new(
                values.into_iter().map(f16::from_f32).collect::<Vec<_>>(),
                shape,
            ),
            DType::BF16 => TensorData::new(
                values.into_iter().map(bf16::from_f32).collect::<Vec<_>>(),
                shape,
            ),
            other => TensorData::new(values, shape).convert_dtype(other),
        })
    }

    /// True when `dtype` is a float type this crate reads.
    pub fn is_float(dtype: Dtype) -> bool {
        matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }
}

fn describe(e: &safetensors::SafeTensorError, file_len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => format!("file of {file_len} bytes is too short to hold a header"),
        E::InvalidHeaderLength => {
            format!("header length runs past the end of the file ({file_len} bytes): truncated or not safetensors")
        }
        E::MetadataIncompleteBuffer => format!(
            "tensor data does not match the file length ({file_len} bytes): the file is truncated or has trailing bytes"
        ),
        E::InvalidOffset(name) => format!("header offsets of tensor `{name}` are wrong (overlap, gap or out of range)"),
        E::TensorInvalidInfo => "header gives a tensor whose byte size does not match its shape and dtype".to_string(),
        other => other.to_string(),
    }
}
