//! `sharpen-eval score`: one reward over a manifest of images and prompts.
//!
//! Input: JSON lines `{"image": "<path>", "prompt": "<text>"}` (relative image paths are relative
//! to the manifest's folder). Output: the same lines, in the same order, with `score` added (and
//! `aspects` where the reward has sub-scores). A line whose image is missing or unreadable, or
//! that is not such an object, gets `error` instead and the command exits non-zero at the end.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use serde_json::{Map, Value};
use sharpen_data::decode_rgb;
use sharpen_rewards::{Reward, RewardSpec};

use crate::shapes::progress;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The reward: clip, pickscore, hpsv2, imagereward, aesthetic, mllm, jpeg-compressibility,
    /// jpeg-incompressibility, shapes, or weighted (a TOML file of parts, given as --weights).
    #[arg(long)]
    pub reward: String,
    /// What the reward loads: a CLIPModel folder or open_clip checkpoint (clip), a CLIPModel
    /// folder (pickscore), the HPS .pt (hpsv2), ImageReward.pt (imagereward), the predictor's
    /// .pth (aesthetic), the grader's
    /// TOML (mllm), the parts file (weighted).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// aesthetic: the CLIP ViT-L/14 folder (default: clip-vit-large-patch14 beside the .pth).
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// imagereward: the bert-base-uncased vocab.txt (default: beside ImageReward.pt).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// imagereward: BLIP's med_config.json (default: beside ImageReward.pt).
    #[arg(long)]
    pub med_config: Option<PathBuf>,
    /// clip (open_clip checkpoints), hpsv2: the open_clip architecture when no
    /// open_clip_config.json sits beside the weights (ViT-L-14, ViT-H-14, ViT-bigG-14).
    #[arg(long)]
    pub arch: Option<String>,
    /// clip: multiply the cosine (100 is the paper's training reward).
    #[arg(long)]
    pub scale: Option<f64>,
    /// JSON lines with `image` and `prompt`.
    #[arg(long)]
    pub input: PathBuf,
    /// Where the scored lines go (written under a temporary name, then renamed).
    #[arg(long)]
    pub output: PathBuf,
    /// Images scored at once (same-size images share a batch).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

/// One input line: its fields, and the image and prompt when they could be read.
struct Item {
    fields: Map<String, Value>,
    loaded: Result<(Vec<u8>, usize, usize, String), String>,
}

fn parse_line(line: &str, base: &Path) -> Item {
    let fields = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Item {
                fields: Map::new(),
                loaded: Err("not a JSON object".into()),
            }
        }
        Err(e) => {
            let mut fields = Map::new();
            fields.insert("line".into(), Value::String(line.to_string()));
            return Item {
                fields,
                loaded: Err(format!("not valid JSON: {e}")),
            };
        }
    };
    let loaded = (|| {
        let image = fields
            .get("image")
            .and_then(Value::as_str)
            .ok_or("missing string field `image`")?;
        let prompt = fields
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or("missing string field `prompt`")?;
        let path = base.join(image);
        let img = decode_rgb(&path).map_err(|e| e.to_string())?;
        Ok((img.rgb, img.width, img.height, prompt.to_string()))
    })();
    Item { fields, loaded }
}

fn to_tensor<B: Backend>(items: &[&Item], device: &B::Device) -> Tensor<B, 4> {
    let (_, w, h, _) = items[0].loaded.as_ref().expect("loaded");
    let (w, h) = (*w, *h);
    let mut values = Vec::with_capacity(items.len() * 3 * h * w);
    for item in items {
        let (rgb, ..) = item.loaded.as_ref().expect("loaded");
        for c in 0..3 {
            values.extend((0..h * w).map(|i| rgb[i * 3 + c] as f32 / 255.0));
        }
    }
    Tensor::from_data(TensorData::new(values, [items.len(), 3, h, w]), device)
}

/// Scores `chunk` in place: same-size images together.
fn score_chunk<B: Backend>(
    reward: &dyn Reward<B>,
    chunk: &mut [Item],
    device: &B::Device,
) -> anyhow::Result<()> {
    let mut groups: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (i, item) in chunk.iter().enumerate() {
        if let Ok((_, w, h, _)) = &item.loaded {
            groups.entry((*w, *h)).or_default().push(i);
        }
    }
    for indices in groups.values() {
        let items: Vec<&Item> = indices.iter().map(|&i| &chunk[i]).collect();
        let prompts: Vec<&str> = items
            .iter()
            .map(|it| it.loaded.as_ref().expect("loaded").3.as_str())
            .collect();
        let scored = reward
            .score_detailed(to_tensor(&items, device), &prompts)
            .context("scoring")?;
        let scores = scored
            .scores
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .map_err(|e| anyhow::anyhow!("reading scores: {e:?}"))?;
        for ((&i, score), aspects) in indices.iter().zip(scores).zip(scored.aspects) {
            let fields = &mut chunk[i].fields;
            fields.insert("score".into(), Value::from(score));
            if !aspects.is_empty() {
                fields.insert(
                    "aspects".into(),
                    Value::Object(
                        aspects
                            .into_iter()
                            .map(|(k, v)| (k, Value::from(v)))
                            .collect(),
                    ),
                );
            }
        }
    }
    Ok(())
}

pub fn run<B: Backend>(args: &ScoreArgs, device: B::Device) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let spec = RewardSpec {
        name: args.reward.clone(),
        weights: args.weights.clone(),
        clip: args.clip.clone(),
        tokenizer: args.tokenizer.clone(),
        config: args.med_config.clone(),
        arch: args.arch.clone(),
        scale: args.scale,
        weight: 1.0,
    };
    spec.validate()
        .map_err(|e| anyhow::anyhow!("--reward: {e}"))?;
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        bail!("{}: no lines to score", args.input.display());
    }
    let reward = sharpen_rewards::load::<B>(&spec, &device)
        .with_context(|| format!("loading reward `{}`", args.reward))?;
    tracing::info!(reward = %args.reward, lines = lines.len(), "scoring");
    let base = args.input.parent().unwrap_or(Path::new(".")).to_path_buf();

    let tmp = args.output.with_extension("jsonl.partial");
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let bar = progress(lines.len() as u64);
    let (mut scored, mut failed) = (0usize, 0usize);
    for chunk in lines.chunks(args.batch_size) {
        let mut items: Vec<Item> = chunk.iter().map(|l| parse_line(l, &base)).collect();
        score_chunk(reward.as_ref(), &mut items, &device)?;
        for item in items {
            let mut fields = item.fields;
            if let Err(e) = item.loaded {
                failed += 1;
                fields.insert("error".into(), Value::String(e));
            } else {
                scored += 1;
            }
            writeln!(out, "{}", Value::Object(fields))
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    out.flush()
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(out);
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), args.output.display()))?;
    tracing::info!(scored, failed, output = %args.output.display(), "done");
    if failed > 0 {
        bail!(
            "{failed} of {} lines could not be scored (see `error` in {})",
            lines.len(),
            args.output.display()
        );
    }
    Ok(())
}
