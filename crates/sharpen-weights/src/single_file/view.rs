//! A component of a single file seen in diffusers naming, read lazily.

use std::collections::BTreeMap;
use std::rc::Rc;

use burn::tensor::{DType, TensorData};

use super::keys::{map_key, Component, Derived};
use crate::checkpoint::Checkpoint;
use crate::error::WeightsError;
use crate::source::{SourceInfo, WeightSource};

#[derive(Debug, Clone)]
pub struct SingleFileView {
    checkpoint: Checkpoint,
    component: Component,
    /// view key -> (file key, derivation). Unplaceable keys map to themselves.
    entries: Rc<BTreeMap<String, (String, Derived)>>,
}

impl SingleFileView {
    pub fn new(checkpoint: Checkpoint, component: Component) -> Self {
        let prefix = component
            .prefixes()
            .iter()
            .find(|p| checkpoint.keys().any(|k| k.starts_with(**p)))
            .copied()
            .unwrap_or(component.prefixes()[0]);
        let mut entries = BTreeMap::new();
        for file_key in checkpoint.keys() {
            let Some(key) = file_key.strip_prefix(prefix) else {
                continue;
            };
            match map_key(component, key) {
                Some(targets) => {
                    for (target, derived) in targets {
                        entries.insert(target, (file_key.to_string(), derived));
                    }
                }
                None => {
                    entries.insert(file_key.to_string(), (file_key.to_string(), Derived::Same));
                }
            }
        }
        Self {
            checkpoint,
            component,
            entries: Rc::new(entries),
        }
    }

    pub fn component(&self) -> Component {
        self.component
    }

    /// The file key and derivation behind a view key.
    pub fn source_of(&self, key: &str) -> Option<&(String, Derived)> {
        self.entries.get(key)
    }
}

impl WeightSource for SingleFileView {
    fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    fn info(&self, key: &str) -> Option<SourceInfo> {
        let (file_key, derived) = self.entries.get(key)?;
        let base = WeightSource::info(&self.checkpoint, file_key)?;
        Some(SourceInfo {
            shape: derived.shape(&base.shape),
            ..base
        })
    }

    fn read(&self, key: &str, dtype: DType) -> Result<TensorData, WeightsError> {
        let (file_key, derived) = self.entries.get(key).ok_or_else(|| WeightsError::Apply {
            path: self.checkpoint.describe_files().into(),
            key: key.to_string(),
            message: "not in this single-file component".to_string(),
        })?;
        if *derived == Derived::Same {
            return self.checkpoint.read(file_key, dtype);
        }
        let data = self.checkpoint.read(file_key, DType::F32)?;
        let shape = data.shape.to_vec();
        let values = data.into_vec::<f32>().map_err(|e| WeightsError::Apply {
            path: self.checkpoint.describe_files().into(),
            key: file_key.clone(),
            message: format!("{e:?}"),
        })?;
        Ok(derived.apply(values, &shape).convert_dtype(dtype))
    }

    fn describe(&self) -> String {
        self.checkpoint.describe_files()
    }
}
