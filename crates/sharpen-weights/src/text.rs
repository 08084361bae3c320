//! Loading SDXL's text side from a diffusers pipeline folder (or its sub-folders): the CLIP
//! tokenizers (`tokenizer/`, `tokenizer_2/`) and text encoders (`text_encoder/`, `text_encoder_2/`).

use std::path::Path;

use burn::tensor::backend::Backend;
use sdxl_text::{
    ClipTextConfig, ClipTextConfigJson, ClipTextModel, ClipTextModelWithProjection, ClipTokenizer,
    ClipTokenizerSources, SdxlTextEncoders, SdxlTokenizers,
};

use crate::checkpoint::{Checkpoint, WeightsStem};
use crate::config::read_config;
use crate::error::WeightsError;
use crate::load::{load_module_as, LoadOptions, LoadSpec};

/// Checkpoint key -> module key for CLIP text encoders. The SDXL repository (saved by transformers
/// 4) prefixes the tower with `text_model.`; transformers 5 saves a `CLIPTextModel` without it.
pub fn clip_text_key(key: &str) -> String {
    if key.starts_with("text_model.") || key.starts_with("text_projection.") {
        key.to_string()
    } else {
        format!("text_model.{key}")
    }
}

/// Old transformers checkpoints store the `position_ids` buffer; it is recomputed, not loaded.
const CLIP_TEXT_EXTRAS: &[&str] = &[r"text_model\.embeddings\.position_ids"];

fn clip_spec(model: &str) -> LoadSpec<'_> {
    LoadSpec {
        model,
        key_map: &clip_text_key,
        // Module keys are the SDXL repository's checkpoint keys.
        checkpoint_key: &|k: &str| k.to_string(),
        allowed_extra: CLIP_TEXT_EXTRAS,
    }
}

/// Reads and validates `dir/config.json` of a CLIP text encoder.
pub fn load_clip_text_config(dir: &Path) -> Result<ClipTextConfig, WeightsError> {
    read_config::<ClipTextConfigJson, ClipTextConfig, _>(&dir.join("config.json"))
}

/// Loads a transformers `CLIPTextModel` folder (`config.json` + `model[.variant].safetensors` or shards).
pub fn load_clip_text_model<B: Backend>(
    dir: &Path,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<ClipTextModel<B>, WeightsError> {
    let config = load_clip_text_config(dir)?;
    let checkpoint = Checkpoint::open_folder(dir, WeightsStem::Transformers, options.variant())?;
    load_module_as(
        ClipTextModel::new(&config, device),
        &checkpoint,
        &clip_spec("CLIPTextModel"),
        options.dtype,
    )
}

/// Loads a transformers `CLIPTextModelWithProjection` folder.
pub fn load_clip_text_model_with_projection<B: Backend>(
    dir: &Path,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<ClipTextModelWithProjection<B>, WeightsError> {
    let path = dir.join("config.json");
    let config = load_clip_text_config(dir)?;
    if config.projection_dim.is_none() {
        return Err(WeightsError::InvalidConfig {
            path,
            message: "missing field `projection_dim` (CLIPTextModelWithProjection needs it)"
                .to_string(),
        });
    }
    let checkpoint = Checkpoint::open_folder(dir, WeightsStem::Transformers, options.variant())?;
    load_module_as(
        ClipTextModelWithProjection::new(&config, device),
        &checkpoint,
        &clip_spec("CLIPTextModelWithProjection"),
        options.dtype,
    )
}

fn read_text(path: &Path) -> Result<String, WeightsError> {
    std::fs::read_to_string(path).map_err(|e| WeightsError::io(path, e))
}

fn read_optional(path: &Path) -> Result<Option<String>, WeightsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WeightsError::io(path, e)),
    }
}

/// Loads a CLIP tokenizer folder: `vocab.json` + `merges.txt` (+ `tokenizer_config.json`,
/// `special_tokens_map.json`) as the SDXL repository ships them, or a `tokenizer.json`.
pub fn load_clip_tokenizer(dir: &Path) -> Result<ClipTokenizer, WeightsError> {
    let tokenizer_config = read_optional(&dir.join("tokenizer_config.json"))?;
    let special_tokens_map = read_optional(&dir.join("special_tokens_map.json"))?;
    let vocab_path = dir.join("vocab.json");
    let to_error = |e: sdxl_text::TokenizerError| WeightsError::InvalidTokenizer {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    if !vocab_path.is_file() && dir.join("tokenizer.json").is_file() {
        let json = read_text(&dir.join("tokenizer.json"))?;
        return ClipTokenizer::from_tokenizer_json(
            &json,
            tokenizer_config.as_deref(),
            special_tokens_map.as_deref(),
        )
        .map_err(to_error);
    }
    let vocab = read_text(&vocab_path)?;
    let merges = read_text(&dir.join("merges.txt"))?;
    ClipTokenizer::from_sources(ClipTokenizerSources {
        vocab_json: &vocab,
        merges_txt: &merges,
        tokenizer_config_json: tokenizer_config.as_deref(),
        special_tokens_map_json: special_tokens_map.as_deref(),
    })
    .map_err(to_error)
}

/// Loads `tokenizer/` and `tokenizer_2/` of an SDXL pipeline folder.
pub fn load_sdxl_tokenizers(root: &Path) -> Result<SdxlTokenizers, WeightsError> {
    Ok(SdxlTokenizers {
        tokenizer: load_clip_tokenizer(&root.join("tokenizer"))?,
        tokenizer_2: load_clip_tokenizer(&root.join("tokenizer_2"))?,
    })
}

/// Loads `text_encoder/` and `text_encoder_2/` of an SDXL pipeline folder.
pub fn load_sdxl_text_encoders<B: Backend>(
    root: &Path,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<SdxlTextEncoders<B>, WeightsError> {
    Ok(SdxlTextEncoders {
        text_encoder: load_clip_text_model(&root.join("text_encoder"), options, device)?,
        text_encoder_2: load_clip_text_model_with_projection(
            &root.join("text_encoder_2"),
            options,
            device,
        )?,
    })
}
