//! Strict loading of a checkpoint into a burn module through burn-store and its PyTorch adapter.

use std::collections::BTreeMap;
use std::rc::Rc;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Element, Tensor};
use burn_store::{ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot, TensorSnapshotError};
use regex::Regex;

use crate::error::{KeyReport, WeightsError};
use crate::safetensors_file::SafetensorsFile;
use crate::source::WeightSource;
use sharpen_nn::path::ModulePath;

/// How a checkpoint's keys relate to a module's parameters.
pub struct LoadSpec<'a> {
    /// The model's name, for messages (`CLIPTextModel`).
    pub model: &'a str,
    /// Maps a checkpoint key to the module key (PyTorch naming) it loads into.
    pub key_map: &'a dyn Fn(&str) -> String,
    /// The inverse of `key_map`, so that missing parameters are reported in checkpoint naming.
    pub checkpoint_key: &'a dyn Fn(&str) -> String,
    /// Mapped keys that a checkpoint may carry without the model using them (old buffers such as
    /// `position_ids`): whole-key regular expressions.
    pub allowed_extra: &'a [&'a str],
}

impl LoadSpec<'_> {
    /// Checkpoint keys are module keys; no extras allowed.
    pub fn exact(model: &str) -> LoadSpec<'_> {
        LoadSpec {
            model,
            key_map: &identity,
            checkpoint_key: &identity,
            allowed_extra: &[],
        }
    }
}

/// What a user chooses when loading a model folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// Weight file variant: `Some("fp16")` reads `*.fp16.safetensors`.
    pub variant: Option<String>,
    /// Parameter dtype (default: the backend's float type, f32 on the CPU). F16/BF16 files are
    /// cast to it; bf16 or f16 halves the memory of a CUDA run.
    pub dtype: Option<DType>,
}

impl LoadOptions {
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }
}

fn identity(key: &str) -> String {
    key.to_string()
}

/// The module's parameters in checkpoint naming (PyTorch layout: norm `weight`/`bias`, Linear
/// weights [out, in]) with their dtypes, without initialising lazy parameters: a full-size model
/// can be described without allocating its weights.
pub fn expected_params<B: Backend, M: Module<B>>(
    module: &M,
) -> BTreeMap<String, (Vec<usize>, DType)> {
    let mut visitor = KeyVisitor {
        path: ModulePath::default(),
        out: BTreeMap::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

/// [`expected_params`] without dtypes.
pub fn expected_keys<B: Backend, M: Module<B>>(module: &M) -> BTreeMap<String, Vec<usize>> {
    expected_params::<B, M>(module)
        .into_iter()
        .map(|(k, (shape, _))| (k, shape))
        .collect()
}

struct KeyVisitor {
    path: ModulePath,
    out: BTreeMap<String, (Vec<usize>, DType)>,
}

impl<B: Backend> ModuleVisitor<B> for KeyVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.path.exit(container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let mut shape = param.lazy_shape().to_vec();
        let dtype = if param.is_initialized() {
            param.val().dtype()
        } else {
            <B::FloatElem as Element>::dtype()
        };
        let (key, transposed) = self.path.key(shape.len());
        if transposed {
            shape.swap(0, 1);
        }
        self.out.insert(key, (shape, dtype));
    }
}

/// Loads `checkpoint` into `module`. Strict: missing, unused (beyond `spec.allowed_extra`) and
/// shape-mismatched keys are one error listing all of them; nothing is applied then. Tensors are
/// cast to the dtype of the parameter they load into (F16/BF16 files into an F32 model, say).
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    checkpoint: &impl WeightSource,
    spec: &LoadSpec<'_>,
) -> Result<M, WeightsError> {
    load_module_as(module, checkpoint, spec, None)
}

/// [`load_module`], with every parameter stored in `dtype` (F32, F16, BF16) instead of the dtype
/// the module was built with: weights are cast at load, and the f32 copy is never materialised.
pub fn load_module_as<B: Backend, M: Module<B>>(
    mut module: M,
    checkpoint: &impl WeightSource,
    spec: &LoadSpec<'_>,
    dtype: Option<DType>,
) -> Result<M, WeightsError> {
    let mut expected = expected_params::<B, M>(&module);
    if let Some(dtype) = dtype {
        expected.values_mut().for_each(|(_, d)| *d = dtype);
    }
    let allowed: Vec<Regex> = spec
        .allowed_extra
        .iter()
        .map(|p| Regex::new(&format!("^(?:{p})$")).expect("allow-list patterns are valid regexes"))
        .collect();

    let mut report = KeyReport::default();
    // module key -> checkpoint key
    let mut provided: BTreeMap<String, String> = BTreeMap::new();
    for file_key in checkpoint.keys() {
        let file_key = file_key.as_str();
        let key = (spec.key_map)(file_key);
        if !expected.contains_key(&key) {
            if !allowed.iter().any(|r| r.is_match(&key)) {
                report.unused.push(file_key.to_string());
            }
            continue;
        }
        if let Some(previous) = provided.insert(key.clone(), file_key.to_string()) {
            return Err(WeightsError::InvalidSafetensors {
                path: checkpoint.describe().into(),
                message: format!("keys `{previous}` and `{file_key}` both load into `{key}`"),
            });
        }
    }
    for (key, (shape, _)) in &expected {
        match provided.get(key) {
            None => report.missing.push((spec.checkpoint_key)(key)),
            Some(file_key) => {
                let entry = checkpoint
                    .info(file_key)
                    .expect("key listed by the checkpoint");
                if !SafetensorsFile::is_float(entry.dtype) {
                    return Err(WeightsError::WrongDtype {
                        path: entry.path.clone(),
                        key: file_key.clone(),
                        dtype: format!("{:?}", entry.dtype),
                    });
                }
                if &entry.shape != shape {
                    report.shape_mismatch.push((
                        file_key.clone(),
                        shape.clone(),
                        entry.shape.clone(),
                    ));
                }
            }
        }
    }
    if !report.is_clean() {
        return Err(WeightsError::KeyMismatch {
            model: spec.model.to_string(),
            files: checkpoint.describe(),
            report,
        });
    }

    let snapshots = provided
        .iter()
        .map(|(key, file_key)| {
            let (shape, dtype) = expected[key].clone();
            let ckpt = checkpoint.clone();
            let file_key = file_key.clone();
            let read = move || {
                ckpt.read(&file_key, dtype)
                    .map_err(|e| TensorSnapshotError::IoError(e.to_string()))
            };
            TensorSnapshot::from_closure(
                Rc::new(read),
                dtype,
                shape.into(),
                key.split('.').map(str::to_string).collect(),
                Vec::new(),
                ParamId::new(),
            )
        })
        .collect();
    let result = module.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    if let Some(error) = result.errors.first() {
        return Err(WeightsError::Apply {
            path: checkpoint.describe().into(),
            key: String::new(),
            message: error.to_string(),
        });
    }
    if !result.missing.is_empty() {
        let report = KeyReport {
            missing: result.missing.into_iter().map(|(k, _)| k).collect(),
            ..Default::default()
        };
        return Err(WeightsError::KeyMismatch {
            model: spec.model.to_string(),
            files: checkpoint.describe(),
            report,
        });
    }
    tracing::debug!(model = spec.model, tensors = result.applied.len(), files = %checkpoint.describe(), "loaded weights");
    Ok(module)
}
