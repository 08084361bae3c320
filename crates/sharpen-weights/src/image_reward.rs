//! Loading ImageReward v1.0: `ImageReward.pt` (a `torch.save`d state dict: `blip.visual_encoder.*`,
//! `blip.text_encoder.*`, `mlp.*`), BLIP's `med_config.json` and a BERT `vocab.txt`.
//! The ViT's sizes are read from the checkpoint's shapes (BLIP heads are 64 wide).

use std::path::Path;

use burn::tensor::backend::Backend;
use sharpen_blip::{BertConfigJson, BertTokenizer, ImageRewardConfig, ImageRewardModel, VitConfig};
use sharpen_clip::aesthetic::{checkpoint_index, layer_index};

use crate::config::read_json;
use crate::error::WeightsError;
use crate::load::{load_module_as, LoadSpec};
use crate::pth::PthFile;
use crate::source::WeightSource;

/// Checkpoint key -> module key.
pub fn image_reward_key(key: &str) -> String {
    let key = key
        .replace(".attention.self.", ".attention.self_.")
        .replace(".crossattention.self.", ".crossattention.self_.")
        .replace(".LayerNorm.", ".layer_norm.");
    match key
        .strip_prefix("mlp.layers.")
        .and_then(|r| r.split_once('.'))
    {
        Some((i, leaf)) => match i.parse().ok().and_then(layer_index) {
            Some(ours) => format!("mlp.layers.{ours}.{leaf}"),
            None => format!("unexpected.{key}"),
        },
        None => key,
    }
}

/// Module key -> checkpoint key.
pub fn image_reward_checkpoint_key(key: &str) -> String {
    let key = key
        .replace(".self_.", ".self.")
        .replace(".layer_norm.", ".LayerNorm.");
    match key
        .strip_prefix("mlp.layers.")
        .and_then(|r| r.split_once('.'))
    {
        Some((i, leaf)) => match i.parse().ok().and_then(checkpoint_index) {
            Some(theirs) => format!("mlp.layers.{theirs}.{leaf}"),
            None => key,
        },
        None => key,
    }
}

/// Keys `ImageReward.pt` carries that scoring does not use.
const EXTRAS: &[&str] = &[
    r"blip\.vision_proj\..*",
    r"blip\.text_proj\..*",
    r"blip\.text_encoder\.embeddings\.position_ids",
];

fn shape(source: &PthFile, key: &str) -> Result<Vec<usize>, WeightsError> {
    source
        .info(key)
        .map(|i| i.shape)
        .ok_or_else(|| WeightsError::KeyMismatch {
            model: "ImageReward".into(),
            files: source.describe(),
            report: crate::error::KeyReport {
                missing: vec![key.to_string()],
                ..Default::default()
            },
        })
}

/// The ViT's sizes, from the checkpoint (`cls_token`, `patch_embed.proj.weight`, `pos_embed`,
/// the number of blocks).
fn vit_config(source: &PthFile) -> Result<VitConfig, WeightsError> {
    let p = "blip.visual_encoder.";
    let width = shape(source, &format!("{p}cls_token"))?[2];
    let patch = shape(source, &format!("{p}patch_embed.proj.weight"))?[2];
    let tokens = shape(source, &format!("{p}pos_embed"))?[1];
    let side = ((tokens - 1) as f64).sqrt().round() as usize;
    let depth = source
        .keys()
        .iter()
        .filter(|k| k.starts_with(&format!("{p}blocks.")) && k.ends_with(".norm1.weight"))
        .count();
    let config = VitConfig {
        image_size: side * patch,
        patch_size: patch,
        width,
        depth,
        num_heads: (width / 64).max(1),
        mlp_ratio: 4,
    };
    config.validate().map_err(|e| WeightsError::InvalidConfig {
        path: source.path().to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(config)
}

/// Loads `ImageReward.pt` with its `med_config.json`.
pub fn load_image_reward<B: Backend>(
    checkpoint: &Path,
    med_config: &Path,
    device: &B::Device,
) -> Result<ImageRewardModel<B>, WeightsError> {
    let source = PthFile::open(checkpoint)?;
    if source.info("blip.visual_encoder.cls_token").is_none() {
        return Err(WeightsError::InvalidPth {
            path: checkpoint.to_path_buf(),
            message: "not an ImageReward checkpoint (no `blip.visual_encoder.cls_token`)".into(),
        });
    }
    let vit = vit_config(&source)?;
    let med: BertConfigJson = read_json(med_config)?;
    let bert = med
        .to_config(vit.width)
        .map_err(|e| WeightsError::InvalidConfig {
            path: med_config.to_path_buf(),
            message: e.to_string(),
        })?;
    let config = ImageRewardConfig { vit, bert };
    let spec = LoadSpec {
        model: "ImageReward",
        key_map: &image_reward_key,
        checkpoint_key: &image_reward_checkpoint_key,
        allowed_extra: EXTRAS,
    };
    load_module_as(ImageRewardModel::new(&config, device), &source, &spec, None)
}

/// BLIP's tokenizer from a bert-base-uncased `vocab.txt` (35 tokens, as ImageReward scores).
pub fn load_bert_tokenizer(vocab: &Path, max_length: usize) -> Result<BertTokenizer, WeightsError> {
    let text = std::fs::read_to_string(vocab).map_err(|e| WeightsError::io(vocab, e))?;
    BertTokenizer::from_vocab_txt(&text, max_length).map_err(|e| WeightsError::InvalidTokenizer {
        path: vocab.to_path_buf(),
        message: e.to_string(),
    })
}
