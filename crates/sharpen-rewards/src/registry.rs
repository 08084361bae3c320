//! Rewards by name: what each needs to load ([`RewardSpec`]), loading them, and `weighted`, a
//! weighted sum of other rewards configured in TOML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::{
    builtin, failed, AestheticReward, ClipScore, ImageRewardScore, MllmConfig, MllmReward, Reward,
    RewardError, RewardInfo, Scored,
};

/// Every reward name [`load`] knows.
pub const NAMES: [&str; 10] = [
    "clip",
    "pickscore",
    "hpsv2",
    "imagereward",
    "aesthetic",
    "mllm",
    "jpeg-compressibility",
    "jpeg-incompressibility",
    "shapes",
    "weighted",
];

/// A reward and what it loads: the unit of `--reward NAME --weights PATH` and of each
/// `[[reward]]` of a weighted sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSpec {
    /// One of [`NAMES`].
    pub name: String,
    /// `clip`: a transformers CLIPModel folder, or an open_clip checkpoint (file or hub folder);
    /// `pickscore`: a transformers CLIPModel folder; `hpsv2`: the HPS `.pt`; `imagereward`:
    /// `ImageReward.pt`; `aesthetic`: the predictor's `.pth`; `mllm`: the grader's TOML file
    /// ([`MllmConfig`]); `weighted`: the TOML file listing the parts. Paths in a weighted file
    /// are relative to that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// `aesthetic`: the CLIP ViT-L/14 folder (default: `clip-vit-large-patch14` beside the `.pth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<PathBuf>,
    /// `imagereward`: the bert-base-uncased `vocab.txt` (default: beside the checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// `imagereward`: BLIP's `med_config.json` (default: beside the checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// `clip` (open_clip checkpoints), `hpsv2`: the open_clip architecture (`ViT-H-14`, ...)
    /// when no `open_clip_config.json` sits beside the weights (`hpsv2` default: `ViT-H-14`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// `clip`: multiply the cosine by this (default 1; the paper's training reward uses 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// The part's weight in a weighted sum (default 1; unused elsewhere).
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

impl RewardSpec {
    /// A reward by name alone (the built-in ones need nothing else).
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            weights: None,
            clip: None,
            tokenizer: None,
            config: None,
            arch: None,
            scale: None,
            weight: 1.0,
        }
    }

    /// Checks the name and the fields it needs, without touching the files.
    pub fn validate(&self) -> Result<(), String> {
        if !NAMES.contains(&self.name.as_str()) {
            return Err(format!(
                "unknown reward `{}` (one of: {})",
                self.name,
                NAMES.join(", ")
            ));
        }
        let needs_weights = !crate::BUILTIN.contains(&self.name.as_str());
        if needs_weights && self.weights.is_none() {
            return Err(format!(
                "reward `{}` needs `weights` ({})",
                self.name,
                match self.name.as_str() {
                    "aesthetic" => "the predictor's .pth file",
                    "weighted" => "the TOML file listing the parts",
                    "mllm" => "the grader's TOML file (base_url, model, ...)",
                    "hpsv2" => "the HPS checkpoint file",
                    "imagereward" => "ImageReward.pt",
                    _ => "a transformers CLIPModel folder",
                }
            ));
        }
        if self.scale.is_some() && self.name != "clip" {
            return Err(format!(
                "`scale` applies to `clip` only, not `{}`",
                self.name
            ));
        }
        if self.arch.is_some() && !matches!(self.name.as_str(), "clip" | "hpsv2") {
            return Err(format!(
                "`arch` applies to `clip` and `hpsv2` only, not `{}`",
                self.name
            ));
        }
        if (self.tokenizer.is_some() || self.config.is_some()) && self.name != "imagereward" {
            return Err(format!(
                "`tokenizer` and `config` apply to `imagereward` only, not `{}`",
                self.name
            ));
        }
        if self.clip.is_some() && self.name != "aesthetic" {
            return Err(format!(
                "`clip` applies to `aesthetic` only, not `{}`",
                self.name
            ));
        }
        if !self.weight.is_finite() {
            return Err(format!("reward `{}`: `weight` must be finite", self.name));
        }
        Ok(())
    }
}

/// A weighted-sum file: `[[reward]]` tables of [`RewardSpec`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedConfig {
    pub reward: Vec<RewardSpec>,
}

impl WeightedConfig {
    /// Reads and checks a weighted-sum file; relative paths become relative to its folder.
    pub fn read(path: &Path) -> Result<Self, RewardError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| failed("weighted", format!("{}: {e}", path.display())))?;
        let mut config: Self = toml::from_str(&text)
            .map_err(|e| failed("weighted", format!("{}: {e}", path.display())))?;
        if config.reward.is_empty() {
            return Err(failed(
                "weighted",
                format!("{}: lists no [[reward]]", path.display()),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for (i, part) in config.reward.iter_mut().enumerate() {
            if part.name == "weighted" {
                return Err(failed(
                    "weighted",
                    format!("{}: reward {i}: weighted sums do not nest", path.display()),
                ));
            }
            part.validate()
                .map_err(|e| failed("weighted", format!("{}: reward {i}: {e}", path.display())))?;
            for p in [
                &mut part.weights,
                &mut part.clip,
                &mut part.tokenizer,
                &mut part.config,
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(config)
    }
}

/// Loads the reward `spec` names onto `device`.
pub fn load<B: Backend>(
    spec: &RewardSpec,
    device: &B::Device,
) -> Result<Box<dyn Reward<B>>, RewardError> {
    spec.validate().map_err(|e| RewardError::Failed {
        reward: "reward",
        message: e,
    })?;
    if let Some(reward) = builtin::<B>(&spec.name) {
        return Ok(reward);
    }
    let weights = spec.weights.as_deref().expect("validated: weights present");
    Ok(match spec.name.as_str() {
        // A transformers folder has config.json; anything else is an open_clip checkpoint.
        "clip" if weights.join("config.json").is_file() => Box::new(ClipScore::load_clip(
            weights,
            spec.scale.unwrap_or(1.0),
            device,
        )?),
        "clip" => Box::new(
            ClipScore::load_open_clip(
                weights,
                spec.arch.as_deref(),
                spec.scale.unwrap_or(1.0),
                device,
            )
            .map_err(|e| {
                failed(
                    "clip",
                    format!(
                        "{} is neither a transformers CLIPModel folder (config.json, \
                             model.safetensors, ...) nor a loadable open_clip checkpoint: {e}",
                        weights.display()
                    ),
                )
            })?,
        ),
        "hpsv2" => Box::new(ClipScore::load_hpsv2(
            weights,
            spec.arch.as_deref(),
            device,
        )?),
        "pickscore" => Box::new(ClipScore::load_pickscore(weights, device)?),
        "imagereward" => Box::new(ImageRewardScore::load(
            weights,
            spec.config.as_deref(),
            spec.tokenizer.as_deref(),
            device,
        )?),
        "mllm" => Box::new(MllmReward::new(MllmConfig::read(weights)?)?),
        "aesthetic" => {
            let clip = match &spec.clip {
                Some(clip) => clip.clone(),
                None => weights
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("clip-vit-large-patch14"),
            };
            Box::new(AestheticReward::load(weights, &clip, device)?)
        }
        "weighted" => {
            let config = WeightedConfig::read(weights)?;
            let parts = config
                .reward
                .iter()
                .map(|part| Ok((part.name.clone(), part.weight, load(part, device)?)))
                .collect::<Result<Vec<_>, RewardError>>()?;
            Box::new(WeightedReward { parts })
        }
        other => unreachable!("validated reward name `{other}`"),
    })
}

/// `weighted`: `sum_i weight_i * reward_i`. Each part's score is reported as an aspect.
pub struct WeightedReward<B: Backend> {
    pub parts: Vec<(String, f64, Box<dyn Reward<B>>)>,
}

impl<B: Backend> Reward<B> for WeightedReward<B> {
    fn info(&self) -> RewardInfo {
        let (mut lo, mut hi) = (0.0, 0.0);
        for (_, w, r) in &self.parts {
            let (a, b) = r.info().range;
            let (a, b) = (w * a, w * b);
            lo += a.min(b);
            hi += a.max(b);
        }
        RewardInfo {
            name: "weighted",
            range: (lo, hi),
            differentiable: self.parts.iter().all(|(_, _, r)| r.info().differentiable),
        }
    }

    fn score(&self, images: Tensor<B, 4>, prompts: &[&str]) -> Result<Tensor<B, 1>, RewardError> {
        Ok(self.score_detailed(images, prompts)?.scores)
    }

    fn score_detailed(
        &self,
        images: Tensor<B, 4>,
        prompts: &[&str],
    ) -> Result<Scored<B>, RewardError> {
        let batch = images.dims()[0];
        let mut total: Option<Tensor<B, 1>> = None;
        let mut aspects = vec![BTreeMap::new(); batch];
        for (name, weight, reward) in &self.parts {
            let part = reward.score(images.clone(), prompts)?;
            let values = part
                .clone()
                .into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .unwrap_or_default();
            for (a, v) in aspects.iter_mut().zip(values) {
                a.insert(name.clone(), v);
            }
            let part = part.mul_scalar(*weight);
            total = Some(match total {
                Some(t) => t + part,
                None => part,
            });
        }
        Ok(Scored {
            scores: total.expect("a weighted reward has parts"),
            aspects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    type B = Flex;

    fn images() -> Tensor<B, 4> {
        let values: Vec<f32> = (0..2 * 3 * 16 * 16)
            .map(|i| ((i * 37) % 255) as f32 / 255.0)
            .collect();
        Tensor::from_data(TensorData::new(values, [2, 3, 16, 16]), &Default::default())
    }

    #[test]
    fn specs_name_what_is_wrong() {
        assert!(RewardSpec::named("shapes").validate().is_ok());
        assert!(RewardSpec::named("nope")
            .validate()
            .unwrap_err()
            .contains("unknown reward `nope`"));
        assert!(RewardSpec::named("clip")
            .validate()
            .unwrap_err()
            .contains("needs `weights`"));
        let spec = RewardSpec {
            scale: Some(100.0),
            ..RewardSpec::named("shapes")
        };
        assert!(spec.validate().unwrap_err().contains("`scale`"));
        let err = load::<B>(&RewardSpec::named("pickscore"), &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("CLIPModel folder"), "{err}");
    }

    #[test]
    fn weighted_sums_its_parts_and_reports_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mix.toml");
        std::fs::write(
            &path,
            "[[reward]]\nname = \"jpeg-incompressibility\"\nweight = 0.5\n\n\
             [[reward]]\nname = \"jpeg-compressibility\"\nweight = 2.0\n",
        )
        .unwrap();
        let spec = RewardSpec {
            weights: Some(path),
            ..RewardSpec::named("weighted")
        };
        let reward = load::<B>(&spec, &Default::default()).unwrap();
        let prompts = ["a", "b"];
        let scored = reward.score_detailed(images(), &prompts).unwrap();
        let inc = builtin::<B>("jpeg-incompressibility")
            .unwrap()
            .score(images(), &prompts)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let total = scored.scores.into_data().to_vec::<f32>().unwrap();
        for i in 0..2 {
            // compressibility = -incompressibility: 0.5 x - 2 x = -1.5 x.
            assert!((total[i] + 1.5 * inc[i]).abs() < 1e-4, "{total:?} {inc:?}");
            assert!((scored.aspects[i]["jpeg-incompressibility"] - inc[i] as f64).abs() < 1e-4);
        }
        assert_eq!(reward.info().name, "weighted");
        assert!(!reward.info().differentiable);
    }

    #[test]
    fn weighted_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| {
            let path = dir.path().join("w.toml");
            std::fs::write(&path, text).unwrap();
            WeightedConfig::read(&path).err().map(|e| e.to_string())
        };
        assert!(write("reward = []")
            .unwrap()
            .contains("lists no [[reward]]"));
        assert!(
            write("[[reward]]\nname = \"weighted\"\nweights = \"x.toml\"")
                .unwrap()
                .contains("do not nest")
        );
        assert!(write("[[reward]]\nname = \"clip\"")
            .unwrap()
            .contains("reward 0: reward `clip` needs `weights`"));
        assert!(write("[[reward]]\nname = \"shapes\"\nwieght = 2")
            .unwrap()
            .contains("wieght"));
        assert!(write("[[reward]]\nname = \"pickscore\"\nweights = \"models/pick\"").is_none());
        let config = WeightedConfig::read(&dir.path().join("w.toml")).unwrap();
        assert_eq!(
            config.reward[0].weights.as_deref(),
            Some(dir.path().join("models/pick").as_path())
        );
    }
}

#[cfg(test)]
mod shipped_configs {
    use std::path::Path;

    use crate::{MllmConfig, WeightedConfig};

    fn configs() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/rewards")
    }

    #[test]
    fn the_example_reward_files_parse() {
        let w = WeightedConfig::read(&configs().join("weighted.toml")).unwrap();
        let names: Vec<_> = w.reward.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["pickscore", "aesthetic", "jpeg-compressibility"]);
        let m = MllmConfig::read(&configs().join("mllm.toml")).unwrap();
        assert_eq!(m.endpoint(), "https://api.openai.com/v1/chat/completions");
        assert_eq!(m.api_key_env, "OPENAI_API_KEY");
    }
}
