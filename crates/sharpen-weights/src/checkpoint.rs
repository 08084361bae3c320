//! A checkpoint: one or several safetensors files (sharded with an index, or a variant such as
//! `fp16`) seen as one key -> tensor map, and the rules that find them in a model folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::{DType, TensorData};
use serde::Deserialize;

use crate::error::WeightsError;
use crate::safetensors_file::{SafetensorsFile, TensorEntry};

/// The file name stems that model folders use for their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsStem {
    /// transformers: `model.safetensors`.
    Transformers,
    /// diffusers: `diffusion_pytorch_model.safetensors`.
    Diffusers,
}

impl WeightsStem {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transformers => "model",
            Self::Diffusers => "diffusion_pytorch_model",
        }
    }
}

/// Weights spread over one or more safetensors files. Cheap to clone (shared, memory-mapped).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: Vec<SafetensorsFile>,
    /// key -> index in `files`.
    keys: BTreeMap<String, usize>,
}

#[derive(Debug, Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens a single safetensors file.
    pub fn open_file(path: &Path) -> Result<Self, WeightsError> {
        Self::from_files(vec![SafetensorsFile::open(path)?])
    }

    /// Opens a sharded checkpoint from its `*.safetensors.index.json`: every shard it names, and
    /// checks that the index and the shards agree key for key.
    pub fn open_index(index_path: &Path) -> Result<Self, WeightsError> {
        let text =
            std::fs::read_to_string(index_path).map_err(|e| WeightsError::io(index_path, e))?;
        let invalid = |message: String| WeightsError::InvalidIndex {
            path: index_path.to_path_buf(),
            message,
        };
        let index: ShardIndex = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&String> = index.weight_map.values().collect();
        shard_names.sort();
        shard_names.dedup();
        let files = shard_names
            .iter()
            .map(|name| SafetensorsFile::open(&dir.join(name)))
            .collect::<Result<Vec<_>, _>>()?;
        let checkpoint = Self::from_files(files)?;
        for (key, shard) in &index.weight_map {
            match checkpoint.inner.keys.get(key) {
                Some(&i)
                    if checkpoint.inner.files[i]
                        .path
                        .file_name()
                        .is_some_and(|f| f == shard.as_str()) => {}
                Some(&i) => {
                    return Err(invalid(format!(
                        "key `{key}` is listed in {shard} but stored in {}",
                        checkpoint.inner.files[i].path.display()
                    )));
                }
                None => {
                    return Err(invalid(format!(
                        "key `{key}` is listed in {shard} but no shard holds it"
                    )))
                }
            }
        }
        if let Some(extra) = checkpoint
            .inner
            .keys
            .keys()
            .find(|k| !index.weight_map.contains_key(*k))
        {
            return Err(invalid(format!(
                "key `{extra}` is in a shard but not in the index"
            )));
        }
        Ok(checkpoint)
    }

    /// Finds and opens the weights of a transformers or diffusers model folder:
    /// `{stem}[.{variant}].safetensors`, else the sharded `{stem}.safetensors.index[.{variant}].json`.
    pub fn open_folder(
        dir: &Path,
        stem: WeightsStem,
        variant: Option<&str>,
    ) -> Result<Self, WeightsError> {
        let stem = stem.as_str();
        let (single, index) = match variant {
            None => (
                format!("{stem}.safetensors"),
                format!("{stem}.safetensors.index.json"),
            ),
            Some(v) => (
                format!("{stem}.{v}.safetensors"),
                format!("{stem}.safetensors.index.{v}.json"),
            ),
        };
        if dir.join(&single).is_file() {
            return Self::open_file(&dir.join(single));
        }
        if dir.join(&index).is_file() {
            return Self::open_index(&dir.join(index));
        }
        if !dir.is_dir() {
            return Err(WeightsError::NotFound {
                path: dir.to_path_buf(),
            });
        }
        let present: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| WeightsError::io(dir, e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".safetensors") || n.ends_with(".json") && n.contains(".index"))
            .collect();
        let hint = if present.is_empty() {
            String::new()
        } else {
            format!(
                " (the folder has: {}; a variant such as fp16 selects `{stem}.fp16.safetensors`)",
                present.join(", ")
            )
        };
        Err(WeightsError::NoWeights {
            dir: dir.to_path_buf(),
            looked_for: format!("{single} and {index}"),
            hint,
        })
    }

    fn from_files(files: Vec<SafetensorsFile>) -> Result<Self, WeightsError> {
        let mut keys = BTreeMap::new();
        for (i, file) in files.iter().enumerate() {
            for key in file.tensors.keys() {
                if let Some(prev) = keys.insert(key.clone(), i) {
                    return Err(WeightsError::InvalidSafetensors {
                        path: file.path.clone(),
                        message: format!("key `{key}` is also in {}", files[prev].path.display()),
                    });
                }
            }
        }
        Ok(Self {
            inner: Rc::new(Inner { files, keys }),
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.inner.keys.keys().map(String::as_str)
    }

    pub fn entry(&self, key: &str) -> Option<(&Path, &TensorEntry)> {
        let file = &self.inner.files[*self.inner.keys.get(key)?];
        Some((&file.path, &file.tensors[key]))
    }

    /// Reads `key`, converted to `target`.
    pub fn read(&self, key: &str, target: DType) -> Result<TensorData, WeightsError> {
        match self.inner.keys.get(key) {
            Some(&i) => self.inner.files[i].read(key, target),
            None => Err(WeightsError::Apply {
                path: self.describe_files().into(),
                key: key.to_string(),
                message: "no file of the checkpoint holds it".to_string(),
            }),
        }
    }

    /// The files, for messages: one path, or the first path and a count.
    pub fn describe_files(&self) -> String {
        match self.inner.files.as_slice() {
            [] => "(no files)".to_string(),
            [one] => one.path.display().to_string(),
            [first, rest @ ..] => {
                format!("{} and {} more shard(s)", first.path.display(), rest.len())
            }
        }
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.inner.files.iter().map(|f| f.path.clone()).collect()
    }
}
