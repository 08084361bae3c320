//! The run's configuration: a TOML file (`--config`), command-line overrides on top, validated
//! with errors that name the field, and saved resolved in the run directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sharpen_lora::LoraConfig;

pub use crate::sections::{CacheSection, MarginForm, Precision, Renoise, RlhfSection, SelectBy};
use sharpen_loss::RewardMargin;
use sharpen_rewards::RewardSpec;
use sharpen_schedulers::PredictionType;
use sharpen_trainer::{
    DdpoConfig, DpoConfig, OptimConfig, RlhfConfig, RlhfSelect, TrajectoryConfig,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// MSE to the model's prediction target (the noise for SDXL; `v` or the clean sample when
    /// the scheduler config says so) on (image, caption) pairs at one random timestep.
    Standard,
    /// Diffusion-Sharpening, SFT (method.md section 4).
    SharpenSft,
    /// Diffusion-Sharpening, RLHF (method.md section 5).
    SharpenRlhf,
    /// Trains the VAE alone (reconstruction MSE + KL): the first stage of pretraining a small
    /// model. The exported pipeline's `vae/config.json` gets the measured `scaling_factor`.
    Autoencoder,
    /// Baseline: DDPO (stochastic DDIM policy, per-prompt normalised advantages, PPO clip) on
    /// prompts, n samples per prompt (`trajectory.n`).
    Ddpo,
    /// Baseline: Diffusion-DPO on pairs of the base model's samples (best and worst of
    /// `trajectory.n` per prompt by the reward), the base model as frozen reference.
    DiffusionDpo,
}

impl Method {
    /// Methods that learn from the model's (or the base model's) own samples of prompts: they
    /// take a prompt list and need no images.
    pub fn online(self) -> bool {
        matches!(self, Self::SharpenRlhf | Self::Ddpo | Self::DiffusionDpo)
    }

    /// Whether the method trains models of this prediction type. The sharpening methods and the
    /// RL baselines are written for noise prediction (method.md section 2: their losses and log
    /// probabilities are in the noise), so they train only such models; standard fine-tuning
    /// trains any, and the autoencoder no UNet.
    pub fn trains(self, prediction: PredictionType) -> bool {
        matches!(self, Self::Standard | Self::Autoencoder) || prediction == PredictionType::Epsilon
    }
}

/// The name the config and `--method` use (serde's, so there is one spelling).
impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.serialize(f)
    }
}

/// The reward: a name (`reward = "shapes"`), or a table with what it loads
/// (`[reward]` with `name`, `weights`, and `clip` / `scale` where they apply; see
/// `sharpen_rewards::RewardSpec`). Paths are relative to the working directory, like `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RewardConfig {
    Name(String),
    Spec(RewardSpec),
}

impl RewardConfig {
    pub fn spec(&self) -> RewardSpec {
        match self {
            Self::Name(name) => RewardSpec::named(name),
            Self::Spec(spec) => spec.clone(),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Spec(spec) => &spec.name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataConfig {
    /// The shapes world's training split, rendered on the fly (images and captions); with
    /// `prompts`, only those captions, each at fresh random layouts, or with `layouts` as well,
    /// at that many fixed layouts each (a small dataset of `prompts x layouts` images).
    Shapes {
        #[serde(default)]
        seed: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        prompts: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layouts: Option<usize>,
    },
    /// A prompt list (RLHF only): `.txt` (one per line), `.jsonl` (`prompt` / `text`, or
    /// `field`), DrawBench-style `.csv` (`Prompts` column, or `field`).
    Prompts {
        path: PathBuf,
        #[serde(default)]
        field: Option<String>,
        /// A new seeded order each pass over the list (false: file order).
        #[serde(default = "yes")]
        shuffle: bool,
    },
    /// An image folder: `name.png|jpg` + `name.txt`, or `metadata.jsonl` with `file_name` and a
    /// caption column (`text`, or `caption_column`). Images are resized to cover the
    /// resolution, centre-cropped and, with `random_flip`, mirrored for half of the examples.
    ImageFolder {
        path: PathBuf,
        #[serde(default)]
        caption_column: Option<String>,
        #[serde(default)]
        random_flip: bool,
        /// A new seeded order each epoch (false: sorted file order).
        #[serde(default = "yes")]
        shuffle: bool,
    },
    /// Parquet with image bytes and captions (a `.parquet` or a folder of them; the Pokemon BLIP
    /// captions layout: `image` a struct with `bytes`, or a binary column, and `text`).
    Parquet {
        path: PathBuf,
        #[serde(default)]
        image_column: Option<String>,
        #[serde(default)]
        caption_column: Option<String>,
        #[serde(default)]
        random_flip: bool,
        /// A new seeded order each epoch (false: file and row order).
        #[serde(default = "yes")]
        shuffle: bool,
    },
    /// JourneyDB: its JSON-lines annotations (`img_path` relative to `images`, caption in
    /// `prompt`, or `caption_field`) over the extracted image tree.
    Journeydb {
        annotations: PathBuf,
        images: PathBuf,
        #[serde(default)]
        caption_field: Option<String>,
        #[serde(default)]
        random_flip: bool,
        /// A new seeded order each epoch (false: sorted path order).
        #[serde(default = "yes")]
        shuffle: bool,
    },
    /// WebDataset tar shards (a `.tar` or a folder of them; the Text-to-Image-2M layout):
    /// `KEY.jpg|png` with `KEY.json` (caption in `prompt`, or `caption_field`) or `KEY.txt`.
    Webdataset {
        path: PathBuf,
        #[serde(default)]
        caption_field: Option<String>,
        #[serde(default)]
        random_flip: bool,
        /// A new seeded order each epoch (false: shard and member order).
        #[serde(default = "yes")]
        shuffle: bool,
    },
}

/// The `[shard]` section: which rows this process reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shard {
    pub rank: usize,
    pub world_size: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            rank: 0,
            world_size: 1,
        }
    }
}

/// Diffusion-DPO's `[dpo]` section.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpoSection {
    /// beta of the published loss (it enters as beta / 2).
    pub beta: f64,
}

impl Default for DpoSection {
    fn default() -> Self {
        Self { beta: 5000.0 }
    }
}

/// DDPO's `[ddpo]` section (ddpo-pytorch's defaults, except `train_timesteps`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdpoSection {
    /// Stochasticity of the DDIM policy.
    pub eta: f64,
    /// PPO clip range of the probability ratio.
    pub clip: f64,
    /// Advantages are clamped to +- this.
    pub adv_clip: f64,
    /// Sampling steps that get a gradient per update, drawn at random without replacement from
    /// the `rlhf.generation_steps` steps, all of them when it is larger (DDPO trains on all;
    /// fewer cost less).
    pub train_timesteps: usize,
}

impl Default for DdpoSection {
    fn default() -> Self {
        Self {
            eta: 1.0,
            clip: 1e-4,
            adv_clip: 5.0,
            train_timesteps: 5,
        }
    }
}

/// Validation samples: fixed prompts and seeds, generated before training and at every
/// checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationSection {
    pub enabled: bool,
    /// Prompts to sample; empty: the first `count` prompts of the data.
    pub prompts: Vec<String>,
    pub count: usize,
    /// Images per prompt (grid rows), each from its own seed.
    pub seeds: usize,
    pub seed: u64,
    /// ddim, ddpm, euler, euler-a, dpmpp-2m or dpmpp-2m-karras.
    pub sampler: String,
    pub steps: usize,
    /// Classifier-free guidance scale (1 = off).
    pub guidance: f64,
    /// Images per generation call. The samples are generated in these chunks, in parallel
    /// threads on a CPU, so the chunk size (not the machine) decides their numbers.
    pub batch_size: usize,
}

impl Default for ValidationSection {
    fn default() -> Self {
        Self {
            enabled: true,
            prompts: Vec::new(),
            count: 4,
            seeds: 1,
            seed: 1234,
            sampler: "ddim".into(),
            steps: 25,
            guidance: 1.0,
            batch_size: 16,
        }
    }
}

/// What to do when a loss is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnNonFinite {
    /// Stop with a message; the last checkpoint stays the last good one.
    #[default]
    Stop,
    /// Skip the micro-batch and go on.
    Skip,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Run name: the run directory is `runs/<name>` unless `--output-dir` says otherwise.
    pub name: String,
    pub method: Method,
    /// A diffusers pipeline folder (tokenizers, text encoders, UNet, VAE, scheduler).
    pub model: PathBuf,
    pub reward: RewardConfig,
    pub data: DataConfig,
    #[serde(default)]
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Prompts (or examples) per micro-batch.
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Image side in pixels.
    pub resolution: usize,
    #[serde(default = "fifty")]
    pub checkpoint_every: usize,
    /// Probability of an empty caption for the UNet (the reward still sees the real one).
    #[serde(default)]
    pub caption_dropout: f64,
    #[serde(default)]
    pub on_non_finite: OnNonFinite,
    /// Block-level gradient checkpointing of the UNet (recompute each resnet / transformer in
    /// backward): a fraction of the activation memory for about 20% more time. Methods
    /// that train the UNet, full or LoRA, at any `precision`.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Train the two text encoders with the UNet (method `standard`; pretraining a small model).
    #[serde(default)]
    pub train_text_encoders: bool,
    /// Weight of the KL term of method `autoencoder` (per latent element, against the
    /// reconstruction MSE per pixel value in [-1, 1]).
    #[serde(default = "kl_weight")]
    pub kl_weight: f64,
    /// At the end, write the trained model as a complete diffusers pipeline folder
    /// (`DIR/pipeline/`; untrained parts copied from `model`).
    #[serde(default = "yes")]
    pub export_pipeline: bool,
    #[serde(default)]
    pub trajectory: TrajectoryConfig,
    #[serde(default)]
    pub rlhf: RlhfSection,
    /// This process's share of the data: rank `rank` of `world_size` (data-parallel runs).
    #[serde(default)]
    pub shard: Shard,
    #[serde(default)]
    pub dpo: DpoSection,
    #[serde(default)]
    pub ddpo: DdpoSection,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub validation: ValidationSection,
    /// `[lora]`: train low-rank adapters of the UNet instead of all its weights (the base stays
    /// frozen; checkpoints hold the adapters and their optimizer state only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    #[serde(default)]
    pub cache: CacheSection,
    /// `auto`, `f32`, `bf16` or `f16`: the UNet's compute dtype (weights cast for each step,
    /// gradients flowing back to f32 master weights).
    #[serde(default)]
    pub precision: Precision,
    /// Data-parallel devices, one peer each (`["cuda:0", "cuda:1"]`); `--devices` overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

fn one() -> usize {
    1
}

fn fifty() -> usize {
    50
}

fn kl_weight() -> f64 {
    1e-6
}

fn yes() -> bool {
    true
}

impl TrainConfig {
    /// Examples per micro-batch over the whole group: `batch_size` on each listed device (one
    /// when none is listed). k peers at batch N train as one device at batch kN.
    pub fn group_batch(&self) -> usize {
        self.batch_size * self.devices.len().max(1)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let field =
            |name: &str, message: String| anyhow::anyhow!("config field `{name}`: {message}");
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            return Err(field(
                "name",
                format!("`{}` is not a plain folder name", self.name),
            ));
        }
        self.reward
            .spec()
            .validate()
            .map_err(|e| field("reward", e))?;
        if self.steps == 0 {
            return Err(field("steps", "must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(field("batch_size", "must be at least 1".into()));
        }
        if self.resolution == 0 || !self.resolution.is_multiple_of(8) {
            return Err(field(
                "resolution",
                format!("{} is not a positive multiple of 8", self.resolution),
            ));
        }
        if self.checkpoint_every == 0 {
            return Err(field("checkpoint_every", "must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.caption_dropout) {
            return Err(field(
                "caption_dropout",
                format!("{} is not a probability", self.caption_dropout),
            ));
        }
        let t = &self.trajectory;
        if t.max_timestep == Some(0) {
            return Err(field(
                "trajectory.max_timestep",
                "must be at least 1".into(),
            ));
        }
        if t.n == 0 || t.m == 0 || t.stride == 0 {
            return Err(field(
                "trajectory",
                "n, m and stride must be at least 1".into(),
            ));
        }
        if self.rlhf.generation_steps == 0 {
            return Err(field("rlhf.generation_steps", "must be at least 1".into()));
        }
        if matches!(self.method, Method::Ddpo | Method::DiffusionDpo) && t.n < 2 {
            return Err(field(
                "trajectory.n",
                format!(
                    "{:?} compares samples of a prompt: n must be at least 2",
                    self.method
                ),
            ));
        }
        let d = &self.ddpo;
        if self.method == Method::Ddpo {
            if !(d.eta > 0.0 && d.clip > 0.0 && d.adv_clip > 0.0) {
                return Err(field(
                    "ddpo",
                    "eta, clip and adv_clip must be positive".into(),
                ));
            }
            if d.train_timesteps == 0 {
                return Err(field("ddpo.train_timesteps", "must be at least 1".into()));
            }
        }
        if self.shard.world_size == 0 || self.shard.rank >= self.shard.world_size {
            return Err(field(
                "shard",
                format!(
                    "rank {} of world_size {}: needs 0 <= rank < world_size",
                    self.shard.rank, self.shard.world_size
                ),
            ));
        }
        if !(self.dpo.beta.is_finite() && self.dpo.beta > 0.0) {
            return Err(field(
                "dpo.beta",
                format!("{} is not positive", self.dpo.beta),
            ));
        }
        self.optim.validate().map_err(|m| field("optim", m))?;
        if self.gradient_checkpointing && self.method == Method::Autoencoder {
            return Err(field(
                "gradient_checkpointing",
                "checkpoints the UNet; method autoencoder trains the VAE".into(),
            ));
        }
        if self.train_text_encoders && self.method != Method::Standard {
            return Err(field(
                "train_text_encoders",
                format!("supported by method standard only, not {:?}", self.method),
            ));
        }
        if self.train_text_encoders && self.gradient_checkpointing {
            return Err(field(
                "gradient_checkpointing",
                "cannot be combined with train_text_encoders yet".into(),
            ));
        }
        if let Some(lora) = &self.lora {
            lora.validate().map_err(|m| field("lora", m))?;
            let clash = match () {
                _ if self.method == Method::Autoencoder => {
                    Some("method autoencoder (it trains the VAE)")
                }
                _ if self.train_text_encoders => Some("train_text_encoders"),
                _ => None,
            };
            if let Some(what) = clash {
                return Err(field("lora", format!("cannot be combined with {what}")));
            }
        }
        if self.cache.latents && self.method == Method::Autoencoder {
            return Err(field(
                "cache.latents",
                "method autoencoder trains the VAE".into(),
            ));
        }
        if self.cache.text && self.train_text_encoders {
            return Err(field(
                "cache.text",
                "the text encoders are trained in this run".into(),
            ));
        }
        if !(self.kl_weight.is_finite() && self.kl_weight >= 0.0) {
            return Err(field(
                "kl_weight",
                format!("{} is not a non-negative number", self.kl_weight),
            ));
        }
        let v = &self.validation;
        if v.enabled {
            if sharpen_schedulers::SamplerKind::parse(&v.sampler).is_none() {
                return Err(field(
                    "validation.sampler",
                    format!("unknown sampler `{}`", v.sampler),
                ));
            }
            if v.steps == 0 || v.seeds == 0 || (v.prompts.is_empty() && v.count == 0) {
                return Err(field(
                    "validation",
                    "steps, seeds and count must be at least 1".into(),
                ));
            }
            if v.batch_size == 0 {
                return Err(field("validation.batch_size", "must be at least 1".into()));
            }
        }
        if let DataConfig::Shapes {
            prompts, layouts, ..
        } = &self.data
        {
            match layouts {
                Some(0) => return Err(field("data.layouts", "must be at least 1".into())),
                Some(_) if prompts.is_empty() => {
                    return Err(field(
                        "data.layouts",
                        "fixes the layouts of listed captions: set `data.prompts` too".into(),
                    ))
                }
                _ => {}
            }
            crate::data::listed_scenes(prompts, self.resolution)?;
        }
        if !self.method.online() && matches!(self.data, DataConfig::Prompts { .. }) {
            bail!("config field `data`: {:?} trains on images; a prompt list serves only sharpen-rlhf, ddpo and diffusion-dpo", self.method);
        }
        Ok(())
    }

    /// What this run trains.
    pub fn parts(&self) -> crate::model::Parts {
        crate::model::Parts {
            unet: self.method != Method::Autoencoder && self.lora.is_none(),
            text_encoders: self.train_text_encoders,
            vae: self.method == Method::Autoencoder,
            lora: self.lora.is_some(),
        }
    }

    pub fn rlhf(&self) -> RlhfConfig {
        let r = self.rlhf;
        RlhfConfig {
            beta: r.beta,
            margin: match r.reward_margin {
                MarginForm::Inside => RewardMargin::Inside,
                MarginForm::Outside => RewardMargin::Outside,
            },
            ref_first_step_only: r.ref_first_step_only,
            reward_scale: r.reward_scale,
            rollout_cfg: r.rollout_cfg,
            select: match r.select {
                SelectBy::Trajectory => RlhfSelect::Trajectory,
                SelectBy::Generation => RlhfSelect::Generation,
            },
        }
    }

    pub fn dpo(&self) -> DpoConfig {
        DpoConfig {
            beta: self.dpo.beta,
            rollout_cfg: self.rlhf.rollout_cfg,
        }
    }

    pub fn ddpo(&self) -> DdpoConfig {
        let d = self.ddpo;
        DdpoConfig {
            eta: d.eta,
            clip: d.clip,
            adv_clip: d.adv_clip,
            rollout_cfg: self.rlhf.rollout_cfg,
        }
    }
}
