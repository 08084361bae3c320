//! Writing safetensors files atomically (temporary name, then rename): a crash never leaves a
//! half-written file under the final name.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::error::WeightsError;
use sharpen_nn::path::ModulePath;

/// Writes f32 tensors to `path` as safetensors, via `path` + `.tmp` and a rename.
pub fn save_tensors(path: &Path, tensors: &[(&str, TensorData)]) -> Result<(), WeightsError> {
    save_tensors_with_metadata(path, tensors, None)
}

/// [`save_tensors`] with a header `__metadata__` map.
pub fn save_tensors_with_metadata(
    path: &Path,
    tensors: &[(&str, TensorData)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<(), WeightsError> {
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
    let failed = |e: safetensors::SafeTensorError| WeightsError::Io {
        path: tmp.clone(),
        source: std::io::Error::other(e.to_string()),
    };
    if metadata.as_ref().is_some_and(|m| m.len() > 1) {
        // Small files with several metadata entries (adapters): the bytes are made reproducible.
        let bytes = safetensors::serialize(views, metadata).map_err(failed)?;
        std::fs::write(&tmp, sorted_metadata(bytes)).map_err(|e| WeightsError::io(&tmp, e))?;
    } else {
        safetensors::serialize_to_file(views, metadata, &tmp).map_err(failed)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| WeightsError::io(path, e))
}

/// safetensors writes the header's `__metadata__` map in hash order, so equal contents could give
/// different bytes; this rewrites the header with the map's keys sorted (tensor offsets are
/// unchanged: the data section is copied as is).
fn sorted_metadata(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let Ok(mut header) = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n]) else {
        return bytes;
    };
    if let Some(meta) = header
        .get_mut("__metadata__")
        .and_then(|m| m.as_object_mut())
    {
        let mut entries: Vec<_> = std::mem::take(meta).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        meta.extend(entries);
    }
    let mut text = serde_json::to_vec(&header).expect("a JSON value serialises");
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Every float parameter of `module` as (checkpoint key, f32 data) in PyTorch layout: the inverse
/// of what loading does (Linear weights transposed back to [out, in], norm `gamma`/`beta` named
/// `weight`/`bias`), with `checkpoint_key` mapping module paths to file keys.
pub fn module_tensors<B: Backend, M: Module<B>>(
    module: &M,
    checkpoint_key: &dyn Fn(&str) -> String,
) -> Vec<(String, TensorData)> {
    let mut visitor = TensorVisitor {
        path: ModulePath::default(),
        out: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor
        .out
        .into_iter()
        .map(|(key, data)| (checkpoint_key(&key), data))
        .collect()
}

/// Writes `module`'s parameters as one safetensors file (atomically), keys as checkpoints name
/// them: what `load_module` with the matching key map reads back exactly.
pub fn save_module<B: Backend, M: Module<B>>(
    path: &Path,
    module: &M,
    checkpoint_key: &dyn Fn(&str) -> String,
) -> Result<(), WeightsError> {
    let tensors = module_tensors(module, checkpoint_key);
    let refs: Vec<(&str, TensorData)> = tensors
        .iter()
        .map(|(k, d)| (k.as_str(), d.clone()))
        .collect();
    save_tensors(path, &refs)
}

struct TensorVisitor {
    path: ModulePath,
    out: Vec<(String, TensorData)>,
}

impl<B: Backend> ModuleVisitor<B> for TensorVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.path.exit(container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (key, transposed) = self.path.key(D);
        let tensor = param.val();
        let data = if transposed {
            tensor.swap_dims(0, 1).into_data()
        } else {
            tensor.into_data()
        };
        self.out.push((key, data));
    }
}
