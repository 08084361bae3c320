//! Writing safetensors files atomically (temporary name, then rename): a crash never leaves a
//! half-written file under the final name.

use std::path::Path;

use burn::tensor::TensorData;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::error::WeightsError;

/// Writes f32 tensors to `path` as safetensors, via `path` + `.tmp` and a rename.
pub fn save_tensors(path: &Path, tensors: &[(&str, TensorData)]) -> Result<(), WeightsError> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, data) in tensors {
        let values = data
            .clone()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| WeightsError::Apply {
                path: path.to_path_buf(),
                key: name.to_string(),
                message: format!("{e:?}"),
            })?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name.to_string(), data.shape.to_vec(), bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .expect("byte length matches the shape");
            (name.clone(), view)
        })
        .collect();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| WeightsError::io(parent, e))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, None, &tmp).map_err(|e| WeightsError::Io {
        path: tmp.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    std::fs::rename(&tmp, path).map_err(|e| WeightsError::io(path, e))
}
