//! open_clip checkpoints (`open_clip_pytorch_model.bin`, `open_clip_model.safetensors`, HPSv2's
//! `{"state_dict": ...}` `.pt`) loaded into transformers' `CLIPModel` tree: keys renamed, fused
//! `in_proj` q/k/v split, `proj` / `text_projection` (stored for `x @ P`) transposed; the same
//! mapping as diffusers' single-file conversion of SDXL's OpenCLIP text encoder, plus the vision
//! tower.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use sharpen_clip::{
    ClipModel, ClipModelConfig, OpenClipConfigJson, OpenClipModelCfg, OPEN_CLIP_ARCHS,
};

use crate::checkpoint::Checkpoint;
use crate::clip::finish_clip;
use crate::config::read_json;
use crate::error::WeightsError;
use crate::load::LoadSpec;
use crate::pth::PthFile;
use crate::single_file::keys::{open_clip_tower, Derived};
use crate::source::{SourceInfo, WeightSource};

/// An open_clip key (after any `state_dict.` / `module.` prefix) -> transformers `CLIPModel`
/// key(s). `None`: no place in the model.
pub fn open_clip_key(key: &str) -> Option<Vec<(String, Derived)>> {
    let same = |k: &str| Some(vec![(k.to_string(), Derived::Same)]);
    if key == "logit_scale" {
        return same("logit_scale");
    }
    let Some(v) = key.strip_prefix("visual.") else {
        return open_clip_tower(key, "text_model");
    };
    match v {
        "class_embedding" => return same("vision_model.embeddings.class_embedding"),
        "positional_embedding" => return same("vision_model.embeddings.position_embedding.weight"),
        "conv1.weight" => return same("vision_model.embeddings.patch_embedding.weight"),
        "proj" => {
            return Some(vec![(
                "visual_projection.weight".into(),
                Derived::Transposed,
            )])
        }
        _ => {}
    }
    if let Some(leaf) = v.strip_prefix("ln_pre.") {
        return same(&format!("vision_model.pre_layrnorm.{leaf}"));
    }
    if let Some(leaf) = v.strip_prefix("ln_post.") {
        return same(&format!("vision_model.post_layernorm.{leaf}"));
    }
    if v.starts_with("transformer.resblocks.") {
        return open_clip_tower(v, "vision_model");
    }
    None
}

/// An open_clip state dict seen in transformers naming, read lazily.
#[derive(Clone)]
pub struct OpenClipView<S: WeightSource> {
    source: S,
    entries: Rc<BTreeMap<String, (String, Derived)>>,
}

/// Wrappers a saved state dict may carry: HPSv2's `{"state_dict": ...}`, DDP's `module.`.
const WRAPPERS: [&str; 2] = ["state_dict.", "module."];

impl<S: WeightSource> OpenClipView<S> {
    pub fn new(source: S) -> Self {
        let mut entries = BTreeMap::new();
        for file_key in source.keys() {
            let mut key = file_key.as_str();
            while let Some(rest) = WRAPPERS.iter().find_map(|w| key.strip_prefix(w)) {
                key = rest;
            }
            match open_clip_key(key) {
                Some(targets) => {
                    for (target, derived) in targets {
                        entries.insert(target, (file_key.clone(), derived));
                    }
                }
                None => {
                    entries.insert(file_key.clone(), (file_key.clone(), Derived::Same));
                }
            }
        }
        Self {
            source,
            entries: Rc::new(entries),
        }
    }
}

impl<S: WeightSource> WeightSource for OpenClipView<S> {
    fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    fn info(&self, key: &str) -> Option<SourceInfo> {
        let (file_key, derived) = self.entries.get(key)?;
        let base = self.source.info(file_key)?;
        Some(SourceInfo {
            shape: derived.shape(&base.shape),
            ..base
        })
    }

    fn read(&self, key: &str, dtype: DType) -> Result<TensorData, WeightsError> {
        let (file_key, derived) = self.entries.get(key).ok_or_else(|| WeightsError::Apply {
            path: self.source.describe().into(),
            key: key.to_string(),
            message: "not in this open_clip checkpoint".to_string(),
        })?;
        if *derived == Derived::Same {
            return self.source.read(file_key, dtype);
        }
        let data = self.source.read(file_key, DType::F32)?;
        let shape = data.shape.to_vec();
        let values = data.into_vec::<f32>().map_err(|e| WeightsError::Apply {
            path: self.source.describe().into(),
            key: file_key.to_string(),
            message: format!("{e:?}"),
        })?;
        Ok(derived.apply(values, &shape).convert_dtype(dtype))
    }

    fn describe(&self) -> String {
        self.source.describe()
    }
}

/// The state-dict file of an open_clip checkpoint: `path` itself, or in a folder
/// `open_clip_model.safetensors`, `open_clip_pytorch_model.safetensors` or
/// `open_clip_pytorch_model.bin`.
fn weights_file(path: &Path) -> Result<PathBuf, WeightsError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        return Err(WeightsError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let names = [
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.safetensors",
        "open_clip_pytorch_model.bin",
    ];
    names
        .iter()
        .map(|n| path.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| WeightsError::NoWeights {
            dir: path.to_path_buf(),
            looked_for: names.join(", "),
            hint: String::new(),
        })
}

/// The architecture: `open_clip_config.json` beside the weights, else `arch` by name.
fn config(file: &Path, arch: Option<&str>) -> Result<ClipModelConfig, WeightsError> {
    let json = file.with_file_name("open_clip_config.json");
    let cfg = if json.is_file() && arch.is_none() {
        read_json::<OpenClipConfigJson>(&json)?.model_cfg
    } else {
        let name = arch.unwrap_or("");
        OpenClipModelCfg::named(name).ok_or_else(|| WeightsError::InvalidConfig {
            path: json.clone(),
            message: format!(
                "no open_clip_config.json beside the weights and no known architecture named \
                 `{name}` (known: {})",
                OPEN_CLIP_ARCHS.join(", ")
            ),
        })?
    };
    ClipModelConfig::try_from(cfg).map_err(|e| WeightsError::InvalidConfig {
        path: json,
        message: e.to_string(),
    })
}

/// Loads an open_clip CLIP checkpoint (file or hub folder) as a `CLIPModel`. `arch` names the
/// architecture when no `open_clip_config.json` sits beside the weights (`ViT-H-14`, ...).
pub fn load_open_clip_model<B: Backend>(
    path: &Path,
    arch: Option<&str>,
    dtype: Option<DType>,
    device: &B::Device,
) -> Result<ClipModel<B>, WeightsError> {
    let file = weights_file(path)?;
    if file.extension().is_some_and(|e| e == "safetensors") {
        finish_open_clip(
            &file,
            OpenClipView::new(Checkpoint::open_file(&file)?),
            arch,
            dtype,
            device,
        )
    } else {
        finish_open_clip(
            &file,
            OpenClipView::new(PthFile::open(&file)?),
            arch,
            dtype,
            device,
        )
    }
}

fn finish_open_clip<B: Backend, S: WeightSource>(
    file: &Path,
    view: OpenClipView<S>,
    arch: Option<&str>,
    dtype: Option<DType>,
    device: &B::Device,
) -> Result<ClipModel<B>, WeightsError> {
    if view
        .info("vision_model.embeddings.patch_embedding.weight")
        .is_none()
    {
        return Err(WeightsError::InvalidPth {
            path: file.to_path_buf(),
            message: "not an open_clip CLIP checkpoint (no `visual.conv1.weight`)".into(),
        });
    }
    let config = config(file, arch)?;
    let spec = LoadSpec {
        model: "open_clip CLIP (as CLIPModel)",
        key_map: &|k: &str| k.to_string(),
        checkpoint_key: &|k: &str| k.to_string(),
        allowed_extra: &["logit_scale", "attn_mask", r"visual\.attn_mask"],
    };
    finish_clip(config, &view, &spec, dtype, device)
}
