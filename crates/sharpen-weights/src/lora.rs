//! UNet LoRA files in the two layouts the ecosystem uses:
//!
//! - diffusers / PEFT (`pytorch_lora_weights.safetensors`): `unet.<module>.lora_A.weight`
//!   [rank, in(, kh, kw)] and `unet.<module>.lora_B.weight` [out, rank(, 1, 1)], the adapter
//!   config (`r`, `lora_alpha`, `rank_pattern`, `alpha_pattern`) in the header's
//!   `lora_adapter_metadata`; without it alpha = rank, as diffusers assumes. Read also: diffusers'
//!   older names (`.lora.down/.up`, `.lora_linear_layer.down/.up`, `.processor.to_q_lora.down`),
//!   a `base_model.model.` prefix (PEFT's own files) or none.
//! - kohya (sd-scripts; what ComfyUI and A1111 load): `lora_unet_<module>.lora_down.weight`,
//!   `.lora_up.weight` and `.alpha`, the module named by the original SGM UNet
//!   (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`, as sd-scripts writes SDXL
//!   LoRAs); diffusers-style names (`lora_unet_down_blocks_1_...`) are read too.
//!
//! Loading is strict: a key that names no module of the UNet, an unpaired matrix or a wrong
//! shape is an error naming the key; text-encoder parts are refused by name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use sdxl_unet::{BlockKind, UNet2DConditionModel, UNetConfig};
use serde_json::Value;
use sharpen_lora::{linear_and_conv_weights, matches, Lora, LoraPart, LoraTarget};

use crate::error::WeightsError;
use crate::safetensors_file::SafetensorsFile;
use crate::single_file::sgm_unet_module;
use crate::unet::unet_checkpoint_key;

/// diffusers' header key for the adapter config.
const METADATA_KEY: &str = "lora_adapter_metadata";

/// A LoRA file's key layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraLayout {
    /// diffusers / PEFT: `unet.<module>.lora_A.weight`.
    Diffusers,
    /// kohya sd-scripts: `lora_unet_<sgm_module>.lora_down.weight` + `.alpha`.
    Kohya,
}

/// Which matrix a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Down,
    Up,
    Alpha,
}

#[derive(Default)]
struct Pair {
    down: Option<String>,
    up: Option<String>,
    alpha: Option<String>,
}

fn invalid(path: &Path, message: String) -> WeightsError {
    WeightsError::InvalidLora {
        path: path.to_path_buf(),
        message,
    }
}

/// The UNet's adaptable weights by checkpoint module name.
fn unet_weights<B: Backend>(unet: &UNet2DConditionModel<B>) -> Vec<LoraTarget> {
    linear_and_conv_weights(unet, &unet_checkpoint_key)
}

/// diffusers name -> SGM name for each of `targets` (weights of a UNet with `config`).
fn sgm_names(targets: &[LoraTarget], config: &UNetConfig) -> HashMap<String, String> {
    let up_has_attention = |b: usize| config.up_blocks.get(b) == Some(&BlockKind::CrossAttn);
    targets
        .iter()
        .filter_map(|t| {
            sgm_unet_module(&t.name, config.layers_per_block[0], &up_has_attention)
                .map(|s| (t.name.clone(), s))
        })
        .collect()
}

/// Reads a UNet LoRA file (either layout, detected from its keys) as adapters for `unet`.
pub fn load_unet_lora<B: Backend>(
    path: &Path,
    unet: &UNet2DConditionModel<B>,
    device: &B::Device,
) -> Result<Lora<B>, WeightsError> {
    let file = SafetensorsFile::open(path)?;
    let weights = unet_weights(unet);
    let kohya = file
        .tensors
        .keys()
        .any(|k| k.starts_with("lora_unet_") || k.starts_with("lora_te"));
    let (pairs, alphas) = if kohya {
        let lookup = kohya_lookup(&weights, &unet.config);
        (kohya_pairs(&file, &lookup)?, AlphaRule::Keys)
    } else {
        (diffusers_pairs(&file)?, AlphaRule::from_metadata(&file)?)
    };
    let by_name: HashMap<&str, &LoraTarget> =
        weights.iter().map(|t| (t.name.as_str(), t)).collect();
    // Layers in the UNet's module order (as fresh adapters are), whatever the file's key order:
    // the optimizer state of a resumed run finds its layers by position.
    let order: HashMap<&str, usize> = weights
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut pairs: Vec<(String, Pair)> = pairs.into_iter().collect();
    pairs.sort_by_key(|(name, _)| order.get(name.as_str()).copied().unwrap_or(usize::MAX));
    let mut parts = Vec::with_capacity(pairs.len());
    for (name, pair) in pairs {
        let first = pair
            .down
            .as_deref()
            .or(pair.up.as_deref())
            .or(pair.alpha.as_deref())
            .unwrap_or(&name)
            .to_string();
        let target = by_name.get(name.as_str()).ok_or_else(|| {
            invalid(
                path,
                format!(
                    "`{first}` names `{name}`, which is not a Linear or Conv2d module of this UNet"
                ),
            )
        })?;
        let (Some(down), Some(up)) = (&pair.down, &pair.up) else {
            let missing = if pair.down.is_none() {
                "down (lora_A)"
            } else {
                "up (lora_B)"
            };
            return Err(invalid(
                path,
                format!("`{first}` has no {missing} matrix beside it"),
            ));
        };
        let lora_a = file.read(down, DType::F32)?;
        let lora_b = file.read(up, DType::F32)?;
        let rank = lora_a.shape.first().copied().unwrap_or(0);
        let alpha = match &pair.alpha {
            Some(key) => scalar(&file.read(key, DType::F32)?)
                .ok_or_else(|| invalid(path, format!("`{key}` is not a single number")))?,
            None => alphas.alpha(&name, rank),
        };
        parts.push(LoraPart {
            target: (*target).clone(),
            lora_a,
            lora_b,
            alpha,
        });
    }
    if parts.is_empty() {
        return Err(invalid(path, "no UNet LoRA tensors in the file".into()));
    }
    Lora::from_parts(parts, device).map_err(|e| invalid(path, e.to_string()))
}

fn scalar(data: &TensorData) -> Option<f64> {
    let v = data.clone().convert::<f64>().to_vec::<f64>().ok()?;
    (v.len() == 1).then(|| v[0])
}

fn kohya_lookup(weights: &[LoraTarget], config: &UNetConfig) -> HashMap<String, String> {
    let sgm = sgm_names(weights, config);
    let mut lookup = HashMap::new();
    for t in weights {
        lookup.insert(t.name.replace('.', "_"), t.name.clone());
        if let Some(s) = sgm.get(&t.name) {
            lookup.insert(s.replace('.', "_"), t.name.clone());
        }
    }
    lookup
}

fn kohya_pairs(
    file: &SafetensorsFile,
    lookup: &HashMap<String, String>,
) -> Result<BTreeMap<String, Pair>, WeightsError> {
    let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
    for key in file.tensors.keys() {
        if key.starts_with("lora_te") {
            return Err(invalid(
                &file.path,
                format!("`{key}` adapts a text encoder; only UNet LoRAs are supported"),
            ));
        }
        let rest = key
            .strip_prefix("lora_unet_")
            .ok_or_else(|| invalid(&file.path, format!("`{key}` is not a kohya UNet LoRA key")))?;
        let (module, suffix) = rest.split_once('.').ok_or_else(|| {
            invalid(
                &file.path,
                format!("`{key}` has no `.lora_down.weight`-style suffix"),
            )
        })?;
        let part = match suffix {
            "lora_down.weight" => Part::Down,
            "lora_up.weight" => Part::Up,
            "alpha" => Part::Alpha,
            other => {
                return Err(invalid(&file.path, format!("`{key}`: `{other}` is not part of a plain LoRA (LoHa, LoKr and DoRA are not supported)")))
            }
        };
        let name = lookup.get(module).ok_or_else(|| {
            invalid(
                &file.path,
                format!("`{key}` names no Linear or Conv2d module of this UNet"),
            )
        })?;
        set(pairs.entry(name.clone()).or_default(), part, key);
    }
    Ok(pairs)
}

fn set(pair: &mut Pair, part: Part, key: &str) {
    let slot = match part {
        Part::Down => &mut pair.down,
        Part::Up => &mut pair.up,
        Part::Alpha => &mut pair.alpha,
    };
    *slot = Some(key.to_string());
}

/// A diffusers-layout key -> (module name, part).
fn diffusers_key(key: &str) -> Option<(String, Part)> {
    let key = key
        .strip_prefix("unet.")
        .or_else(|| key.strip_prefix("base_model.model."))
        .unwrap_or(key);
    const SUFFIXES: [(&str, Part); 7] = [
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora.down.weight", Part::Down),
        (".lora.up.weight", Part::Up),
        (".lora_linear_layer.down.weight", Part::Down),
        (".lora_linear_layer.up.weight", Part::Up),
        (".alpha", Part::Alpha),
    ];
    for (suffix, part) in SUFFIXES {
        if let Some(module) = key.strip_suffix(suffix) {
            // diffusers' attention-processor names: `attn1.processor.to_q_lora.down.weight`.
            if let Some((attn, proj)) = module.split_once(".processor.") {
                let proj = proj.strip_suffix("_lora")?;
                let proj = if proj == "to_out" { "to_out.0" } else { proj };
                return Some((format!("{attn}.{proj}"), part));
            }
            return Some((module.to_string(), part));
        }
    }
    let old = [
        ("_lora.down.weight", Part::Down),
        ("_lora.up.weight", Part::Up),
    ];
    for (suffix, part) in old {
        if let Some(module) = key.strip_suffix(suffix) {
            if let Some((attn, proj)) = module.split_once(".processor.") {
                let proj = if proj == "to_out" { "to_out.0" } else { proj };
                return Some((format!("{attn}.{proj}"), part));
            }
        }
    }
    None
}

fn diffusers_pairs(file: &SafetensorsFile) -> Result<BTreeMap<String, Pair>, WeightsError> {
    let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
    for key in file.tensors.keys() {
        if key.starts_with("text_encoder") {
            return Err(invalid(
                &file.path,
                format!("`{key}` adapts a text encoder; only UNet LoRAs are supported"),
            ));
        }
        let (module, part) = diffusers_key(key).ok_or_else(|| {
            invalid(&file.path, format!("`{key}` is not a LoRA key of a known layout (diffusers/PEFT `unet.<module>.lora_A.weight` or kohya `lora_unet_<module>.lora_down.weight`)"))
        })?;
        set(pairs.entry(module).or_default(), part, key);
    }
    Ok(pairs)
}

/// Where a diffusers-layout adapter's alpha comes from.
enum AlphaRule {
    /// kohya: per-layer `.alpha` keys, else alpha = rank.
    Keys,
    /// PEFT config from the header: `lora_alpha`, `alpha_pattern` (module suffix -> alpha);
    /// without a header, alpha = rank.
    Config {
        alpha: Option<f64>,
        pattern: Vec<(String, f64)>,
    },
}

impl AlphaRule {
    fn from_metadata(file: &SafetensorsFile) -> Result<Self, WeightsError> {
        let Some(text) = file.metadata.get(METADATA_KEY) else {
            return Ok(Self::Config {
                alpha: None,
                pattern: Vec::new(),
            });
        };
        let bad = |m: String| invalid(&file.path, format!("header `{METADATA_KEY}`: {m}"));
        let config: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let alpha = match config.get("unet.lora_alpha") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| bad(format!("`unet.lora_alpha` is {v}, not a number")))?,
            ),
        };
        let mut pattern = Vec::new();
        if let Some(Value::Object(map)) = config.get("unet.alpha_pattern") {
            for (k, v) in map {
                let a = v
                    .as_f64()
                    .ok_or_else(|| bad(format!("`unet.alpha_pattern.{k}` is {v}, not a number")))?;
                pattern.push((k.clone(), a));
            }
        }
        Ok(Self::Config { alpha, pattern })
    }

    fn alpha(&self, module: &str, rank: usize) -> f64 {
        match self {
            Self::Keys => rank as f64,
            Self::Config { alpha, pattern } => pattern
                .iter()
                .find(|(p, _)| matches(module, p))
                .map(|(_, a)| *a)
                .or(*alpha)
                .unwrap_or(rank as f64),
        }
    }
}

/// Writes `lora` (adapters of a UNet with `config`) in `layout`, atomically. The diffusers layout carries the
/// adapter config in `lora_adapter_metadata` (rank, alpha, target module names; per-layer
/// differences as `rank_pattern` / `alpha_pattern`), so diffusers' `load_lora_weights` applies
/// the same scale; the kohya layout carries each layer's alpha.
pub fn save_unet_lora<B: Backend>(
    path: &Path,
    lora: &Lora<B>,
    config: &UNetConfig,
    layout: LoraLayout,
) -> Result<(), WeightsError> {
    let parts = lora.parts();
    let first = parts
        .first()
        .ok_or_else(|| invalid(path, "no adapters to save".into()))?;
    let rank0 = first.lora_a.shape[0];
    let alpha0 = first.alpha;
    let mut tensors: Vec<(String, TensorData)> = Vec::new();
    let metadata = match layout {
        LoraLayout::Diffusers => {
            let mut rank_pattern = serde_json::Map::new();
            let mut alpha_pattern = serde_json::Map::new();
            for p in &parts {
                let rank = p.lora_a.shape[0];
                if rank != rank0 {
                    rank_pattern.insert(p.target.name.clone(), rank.into());
                }
                if p.alpha != alpha0 {
                    alpha_pattern.insert(p.target.name.clone(), p.alpha.into());
                }
                let name = &p.target.name;
                tensors.push((format!("unet.{name}.lora_A.weight"), p.lora_a.clone()));
                tensors.push((format!("unet.{name}.lora_B.weight"), p.lora_b.clone()));
            }
            let targets: Vec<Value> = parts.iter().map(|p| p.target.name.clone().into()).collect();
            let config = serde_json::json!({
                "unet.peft_type": "LORA",
                "unet.r": rank0,
                "unet.lora_alpha": alpha0,
                "unet.target_modules": targets,
                "unet.rank_pattern": rank_pattern,
                "unet.alpha_pattern": alpha_pattern,
                "unet.lora_dropout": 0.0,
                "unet.bias": "none",
                "unet.use_dora": false,
                "unet.use_rslora": false,
                "unet.init_lora_weights": true,
            });
            let text = serde_json::to_string_pretty(&config).expect("JSON serialises");
            Some(HashMap::from([
                ("format".to_string(), "pt".to_string()),
                (METADATA_KEY.to_string(), text),
            ]))
        }
        LoraLayout::Kohya => {
            let targets: Vec<LoraTarget> = parts.iter().map(|p| p.target.clone()).collect();
            let sgm = sgm_names(&targets, config);
            for p in &parts {
                let module = sgm.get(&p.target.name).ok_or_else(|| {
                    invalid(
                        path,
                        format!("`{}` has no original (SGM) UNet name", p.target.name),
                    )
                })?;
                let stem = format!("lora_unet_{}", module.replace('.', "_"));
                tensors.push((format!("{stem}.lora_down.weight"), p.lora_a.clone()));
                tensors.push((format!("{stem}.lora_up.weight"), p.lora_b.clone()));
                let alpha = TensorData::new(vec![p.alpha as f32], Vec::<usize>::new());
                tensors.push((format!("{stem}.alpha"), alpha));
            }
            None
        }
    };
    let refs: Vec<(&str, TensorData)> = tensors
        .iter()
        .map(|(k, d)| (k.as_str(), d.clone()))
        .collect();
    crate::save::save_tensors_with_metadata(path, &refs, metadata)
}
