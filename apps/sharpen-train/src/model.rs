//! What a run trains: the UNet (fine-tuning and pretraining), optionally with the two text
//! encoders (pretraining a small model), LoRA adapters of the frozen UNet (`[lora]`), or the VAE
//! alone (method `autoencoder`, the first pretraining stage). One module, so that one optimizer, one gradient norm and one checkpoint
//! cover every trained part. Checkpoints hold each trained part as the pipeline folder names it
//! (`unet/`, `text_encoder/`, `text_encoder_2/`, `vae/`; adapters as
//! `lora/pytorch_lora_weights.safetensors`, the diffusers layout); the end of a run exports a
//! complete pipeline folder.

use std::borrow::Cow;
use std::path::Path;

use anyhow::Context;
use burn::module::{AutodiffModule, Module, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, TensorData};
use sdxl_text::SdxlTextEncoders;
use sdxl_unet::UNet2DConditionModel;
use sdxl_vae::AutoencoderKL;
use sharpen_lora::{find_targets, Lora, LoraConfig};
use sharpen_nn::{cast_module, require_grad_all};
use sharpen_trainer::train::grads::cast_grads;
use sharpen_trainer::train::rng::RunRng;
use sharpen_trainer::train::run_dir::RunDirError;
use sharpen_weights::lora::{load_unet_lora, save_unet_lora, LoraLayout};
use sharpen_weights::text::load_sdxl_text_encoders;
use sharpen_weights::unet::{load_unet, load_unet_config, save_unet, unet_checkpoint_key};
use sharpen_weights::vae::load_vae;
use sharpen_weights::LoadOptions;

/// The UNet a step runs, and with adapters under checkpointing their weight ids.
pub type StepUnet<'a, B> = (Cow<'a, UNet2DConditionModel<B>>, Option<Vec<ParamId>>);

/// A part's folder, weights file name and tensors (checkpoint keys).
type SavedPart = (&'static str, &'static str, Vec<(String, TensorData)>);

#[derive(Module, Debug)]
pub struct Trainable<B: Backend> {
    pub unet: Option<UNet2DConditionModel<B>>,
    pub text_encoders: Option<SdxlTextEncoders<B>>,
    pub vae: Option<AutoencoderKL<B>>,
    /// Adapters of the frozen UNet (the run's `[lora]`).
    pub lora: Option<Lora<B>>,
}

/// The adapters' file in checkpoints and in the run's `lora/` export (diffusers' name).
pub const LORA_FILE: &str = "pytorch_lora_weights.safetensors";
/// The kohya-layout export beside it (ComfyUI, A1111).
pub const LORA_KOHYA_FILE: &str = "lora_kohya.safetensors";

/// Which parts a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub unet: bool,
    pub text_encoders: bool,
    pub vae: bool,
    pub lora: bool,
}

impl<B: Backend> Trainable<B> {
    /// A fresh LoRA run: adapters on the modules `config` targets in `base`, `A` drawn from a
    /// stream of its own (seeded by the run seed), `B` zero.
    pub fn fresh_lora(
        base: &UNet2DConditionModel<B>,
        config: &LoraConfig,
        seed: u64,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        let targets = find_targets(base, &config.target_modules, &unet_checkpoint_key)
            .context("config field `lora.target_modules`")?;
        let mut rng = RunRng::new(seed ^ 0x4c6f_5241);
        let lora = Lora::init(
            targets,
            config.rank,
            config.alpha(),
            &mut || rng.uniform(),
            device,
        );
        tracing::info!(
            layers = lora.layers.len(),
            params = lora.num_params(),
            "LoRA adapters"
        );
        Ok(Self {
            unet: None,
            text_encoders: None,
            vae: None,
            lora: Some(lora),
        })
    }

    /// The UNet a step or a sample runs: the trained one, or `base` with the adapters merged.
    pub fn unet_with<'a>(
        &'a self,
        base: Option<&UNet2DConditionModel<B>>,
    ) -> anyhow::Result<Cow<'a, UNet2DConditionModel<B>>> {
        match (&self.unet, &self.lora, base) {
            (Some(unet), _, _) => Ok(Cow::Borrowed(unet)),
            (None, Some(lora), Some(base)) => Ok(Cow::Owned(
                lora.merge(base.clone(), 1.0, &unet_checkpoint_key)
                    .context("merging the LoRA adapters")?,
            )),
            _ => anyhow::bail!("this method trains the UNet (or its adapters)"),
        }
    }

    /// Loads the trained parts from a pipeline folder or a checkpoint folder (same layout).
    /// `base`: the UNet that adapters (`lora/`) apply to.
    pub fn load(
        root: &Path,
        parts: Parts,
        base: Option<&UNet2DConditionModel<B>>,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        let options = LoadOptions::default();
        let context = |part: &str| format!("loading {part} of {}", root.display());
        Ok(Self {
            unet: parts
                .unet
                .then(|| load_unet(&root.join("unet"), &options, device))
                .transpose()
                .with_context(|| context("the UNet"))?,
            text_encoders: parts
                .text_encoders
                .then(|| load_sdxl_text_encoders(root, &options, device))
                .transpose()
                .with_context(|| context("the text encoders"))?,
            vae: parts
                .vae
                .then(|| load_vae(&root.join("vae"), &options, device))
                .transpose()
                .with_context(|| context("the VAE"))?,
            lora: parts
                .lora
                .then(|| {
                    let base = base.context("LoRA adapters need their base UNet")?;
                    Ok::<_, anyhow::Error>(load_unet_lora(
                        &root.join("lora").join(LORA_FILE),
                        base,
                        device,
                    )?)
                })
                .transpose()
                .with_context(|| context("the LoRA adapters"))?,
        })
    }

    /// Writes the adapters in both layouts into `dir` (`pytorch_lora_weights.safetensors` and
    /// `lora_kohya.safetensors`); `source` is the pipeline the run started from.
    pub fn export_lora(&self, dir: &Path, source: &Path) -> anyhow::Result<()> {
        let Some(lora) = &self.lora else {
            return Ok(());
        };
        let config = load_unet_config(&source.join("unet"))?;
        save_unet_lora(&dir.join(LORA_FILE), lora, &config, LoraLayout::Diffusers)?;
        save_unet_lora(&dir.join(LORA_KOHYA_FILE), lora, &config, LoraLayout::Kohya)?;
        Ok(())
    }

    /// Writes the trained parts into `dir` as a pipeline folder names them. `source` is the
    /// pipeline the run started from: the text encoders' and VAE's `config.json` come from it
    /// (training changes weights, not configs).
    pub fn save(&self, dir: &Path, source: &Path) -> Result<(), RunDirError> {
        let invalid = |e: &dyn std::fmt::Display| RunDirError::Invalid {
            path: dir.to_path_buf(),
            message: e.to_string(),
        };
        let identity = |k: &str| k.to_string();
        if let Some(unet) = &self.unet {
            save_unet(&dir.join("unet"), unet).map_err(|e| invalid(&e))?;
        }
        if let Some(lora) = &self.lora {
            let config = load_unet_config(&source.join("unet")).map_err(|e| invalid(&e))?;
            let path = dir.join("lora").join(LORA_FILE);
            save_unet_lora(&path, lora, &config, LoraLayout::Diffusers).map_err(|e| invalid(&e))?;
        }
        let mut parts: Vec<SavedPart> = Vec::new();
        if let Some(te) = &self.text_encoders {
            parts.push((
                "text_encoder",
                "model.safetensors",
                sharpen_weights::module_tensors(&te.text_encoder, &identity),
            ));
            parts.push((
                "text_encoder_2",
                "model.safetensors",
                sharpen_weights::module_tensors(&te.text_encoder_2, &identity),
            ));
        }
        if let Some(vae) = &self.vae {
            parts.push((
                "vae",
                "diffusion_pytorch_model.safetensors",
                sharpen_weights::module_tensors(vae, &identity),
            ));
        }
        for (name, file, tensors) in parts {
            let out = dir.join(name);
            std::fs::create_dir_all(&out).map_err(|e| invalid(&e))?;
            copy_file(
                &source.join(name).join("config.json"),
                &out.join("config.json"),
            )?;
            let refs: Vec<(&str, TensorData)> = tensors
                .iter()
                .map(|(k, d)| (k.as_str(), d.clone()))
                .collect();
            sharpen_weights::save_tensors(&out.join(file), &refs).map_err(|e| invalid(&e))?;
        }
        Ok(())
    }
}

impl<B: AutodiffBackend> Trainable<B> {
    /// The UNet a training step runs, in `compute` dtype when given: the trained one, or `base`
    /// with the adapters merged (a graph to them; with `checkpointing`, as leaves, with the
    /// adapters' weight ids to carry their gradients back). With `checkpointing` and `compute`,
    /// a copy in that dtype whose weights are leaves (the caller casts their gradients to f32).
    pub fn step_unet(
        &self,
        base: Option<&UNet2DConditionModel<B>>,
        compute: Option<DType>,
        checkpointing: bool,
    ) -> anyhow::Result<StepUnet<'_, B>> {
        if let (true, Some(_), Some(base)) = (checkpointing, &self.lora, base) {
            let (unet, ids) = self.leaf_merged(base, compute)?;
            return Ok((Cow::Owned(unet), Some(ids)));
        }
        if let (true, Some(dtype), Some(unet)) = (checkpointing, compute, &self.unet) {
            // The tape collects its parameters' own gradients: a reduced-precision copy with
            // the same ids, every weight a leaf (its gradients are cast back with `cast_grads`).
            let cast = cast_module(unet.valid(), dtype);
            let leaves = require_grad_all(UNet2DConditionModel::from_inner(cast));
            return Ok((Cow::Owned(leaves), None));
        }
        let unet = self.unet_with(base)?;
        let unet = match compute {
            Some(dtype) => Cow::Owned(cast_module(unet.into_owned(), dtype)),
            None => unet,
        };
        Ok((unet, None))
    }

    /// The trained parts' gradients from a checkpointed step's (the tape collects those of the
    /// UNet it ran, see [`Self::step_unet`]): with adapters (`lora_ids`), the merged weights'
    /// carried to them; under reduced precision, cast to the f32 master weights.
    pub fn tape_grads(
        &self,
        mut grads: GradientsParams,
        lora_ids: Option<&[ParamId]>,
    ) -> GradientsParams {
        match (lora_ids, &self.lora) {
            (Some(ids), Some(lora)) => lora.grads_from_merged(&mut grads, ids, 1.0),
            _ => {
                // A no-op for f32 gradients.
                cast_grads(self, &mut grads, DType::F32);
                grads
            }
        }
    }

    /// For block-checkpointed steps with adapters: `base` with them merged in without a graph,
    /// in `compute` dtype when given, every adapted weight a trainable leaf, and each adapter's
    /// weight id (for [`Lora::grads_from_merged`]).
    pub fn leaf_merged(
        &self,
        base: &UNet2DConditionModel<B>,
        compute: Option<DType>,
    ) -> anyhow::Result<(UNet2DConditionModel<B>, Vec<ParamId>)> {
        let lora = self.lora.as_ref().context("no LoRA adapters to merge")?;
        let merged = lora
            .valid()
            .merge(base.valid(), 1.0, &unet_checkpoint_key)
            .context("merging the LoRA adapters")?;
        let merged = match compute {
            Some(dtype) => cast_module(merged, dtype),
            None => merged,
        };
        lora.mark_adapted(
            UNet2DConditionModel::from_inner(merged),
            &unet_checkpoint_key,
        )
        .context("marking the adapted UNet weights")
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<(), RunDirError> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| RunDirError::Io {
            path: from.to_path_buf(),
            source,
        })
}

/// Writes the complete trained pipeline to `out`: the trained parts, everything else copied
/// from `source`. Written beside `out` under a temporary name, then renamed over it. With
/// `vae_scaling_factor`, the exported `vae/config.json` carries it.
pub fn export_pipeline<B: Backend>(
    model: &Trainable<B>,
    source: &Path,
    out: &Path,
    vae_scaling_factor: Option<f64>,
) -> anyhow::Result<()> {
    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let mut skip = Vec::new();
    if model.unet.is_some() {
        skip.push("unet");
    }
    if model.text_encoders.is_some() {
        skip.extend(["text_encoder", "text_encoder_2"]);
    }
    if model.vae.is_some() {
        skip.push("vae");
    }
    sharpen_app::copy_tree(source, &tmp, &skip)?;
    model.save(&tmp, source)?;
    if let Some(factor) = vae_scaling_factor {
        let path = tmp.join("vae/config.json");
        let text = std::fs::read_to_string(&path)?;
        let mut config: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        config["scaling_factor"] = serde_json::json!(factor);
        std::fs::write(&path, serde_json::to_string_pretty(&config)? + "\n")?;
    }
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("replacing {}", out.display()))?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
