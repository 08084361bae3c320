//! Loading CLIP reward models: transformers `CLIPModel` folders (`config.json`,
//! `model.safetensors` or `pytorch_model.bin`, `preprocessor_config.json`, tokenizer files) and
//! the LAION aesthetic predictor's `.pth`.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::DType;
use sharpen_clip::config::ImageProcessorJson;
use sharpen_clip::{AestheticMlp, ClipModel, ClipModelConfig, ClipModelConfigJson, ClipPreprocess};

use crate::checkpoint::{Checkpoint, WeightsStem};
use crate::config::{read_config, read_json};
use crate::error::WeightsError;
use crate::load::{load_module_as, LoadOptions, LoadSpec};
use crate::pth::PthFile;
use crate::source::WeightSource;

/// Buffers older transformers checkpoints store; recomputed, not loaded. `logit_scale` is read
/// on its own (a 0-d tensor).
const CLIP_EXTRAS: &[&str] = &[
    r"text_model\.embeddings\.position_ids",
    r"vision_model\.embeddings\.position_ids",
    "logit_scale",
];

/// Reads and validates `dir/config.json` of a `CLIPModel`.
pub fn load_clip_config(dir: &Path) -> Result<ClipModelConfig, WeightsError> {
    read_config::<ClipModelConfigJson, ClipModelConfig, _>(&dir.join("config.json"))
}

/// Reads `dir/preprocessor_config.json` (transformers' `CLIPImageProcessor`).
pub fn load_clip_preprocess(dir: &Path) -> Result<ClipPreprocess, WeightsError> {
    let path = dir.join("preprocessor_config.json");
    let json: ImageProcessorJson = read_json(&path)?;
    json.to_preprocess()
        .map_err(|e| WeightsError::InvalidConfig {
            path,
            message: e.to_string(),
        })
}

/// Loads a transformers `CLIPModel` folder (safetensors, sharded or not; else `pytorch_model.bin`).
pub fn load_clip_model<B: Backend>(
    dir: &Path,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<ClipModel<B>, WeightsError> {
    let config = load_clip_config(dir)?;
    let spec = LoadSpec {
        model: "CLIPModel",
        key_map: &|k: &str| k.to_string(),
        checkpoint_key: &|k: &str| k.to_string(),
        allowed_extra: CLIP_EXTRAS,
    };
    let bin = dir.join("pytorch_model.bin");
    match Checkpoint::open_folder(dir, WeightsStem::Transformers, options.variant()) {
        Ok(checkpoint) => finish_clip(config, &checkpoint, &spec, options.dtype, device),
        Err(WeightsError::NoWeights { .. }) if bin.is_file() => {
            finish_clip(config, &PthFile::open(&bin)?, &spec, options.dtype, device)
        }
        Err(e) => Err(e),
    }
}

/// Loads `source` into a `CLIPModel` built from `config`, and its 0-d `logit_scale`.
pub(crate) fn finish_clip<B: Backend, S: WeightSource>(
    config: ClipModelConfig,
    source: &S,
    spec: &LoadSpec<'_>,
    dtype: Option<DType>,
    device: &B::Device,
) -> Result<ClipModel<B>, WeightsError> {
    let mut model = load_module_as(ClipModel::new(&config, device), source, spec, dtype)?;
    let info = source
        .info("logit_scale")
        .ok_or_else(|| WeightsError::KeyMismatch {
            model: "CLIPModel".to_string(),
            files: source.describe(),
            report: crate::error::KeyReport {
                missing: vec!["logit_scale".to_string()],
                ..Default::default()
            },
        })?;
    let value = source.read("logit_scale", DType::F32)?;
    let values = value.to_vec::<f32>().unwrap_or_default();
    if values.len() != 1 {
        return Err(WeightsError::Apply {
            path: info.path,
            key: "logit_scale".to_string(),
            message: format!("expected one number, got shape {:?}", info.shape),
        });
    }
    model.logit_scale = values[0] as f64;
    Ok(model)
}

/// Loads the LAION aesthetic predictor head from its `.pth` (a `torch.save`d state dict, or a
/// `.safetensors` with the same keys). `input` is the CLIP projection size it must take.
pub fn load_aesthetic_mlp<B: Backend>(
    path: &Path,
    input: usize,
    device: &B::Device,
) -> Result<AestheticMlp<B>, WeightsError> {
    let key_map = |k: &str| -> String {
        // layers.{sequential index}.{weight,bias} -> layers.{our index}.{...}
        let parts: Vec<&str> = k.splitn(3, '.').collect();
        match parts.as_slice() {
            ["layers", i, rest] => match i.parse().ok().and_then(AestheticMlp::<B>::layer_index) {
                Some(ours) => format!("layers.{ours}.{rest}"),
                None => format!("unexpected.{k}"),
            },
            _ => k.to_string(),
        }
    };
    let checkpoint_key = |k: &str| -> String {
        let parts: Vec<&str> = k.splitn(3, '.').collect();
        match parts.as_slice() {
            ["layers", i, rest] => {
                match i.parse().ok().and_then(AestheticMlp::<B>::checkpoint_index) {
                    Some(theirs) => format!("layers.{theirs}.{rest}"),
                    None => k.to_string(),
                }
            }
            _ => k.to_string(),
        }
    };
    let spec = LoadSpec {
        model: "LAION aesthetic predictor (MLP 768-1024-128-64-16-1)",
        key_map: &key_map,
        checkpoint_key: &checkpoint_key,
        allowed_extra: &[],
    };
    let module = AestheticMlp::new(input, device);
    if path.extension().is_some_and(|e| e == "safetensors") {
        load_module_as(module, &Checkpoint::open_file(path)?, &spec, None)
    } else {
        load_module_as(module, &PthFile::open(path)?, &spec, None)
    }
}
