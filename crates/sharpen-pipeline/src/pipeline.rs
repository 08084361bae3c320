//! `StableDiffusionXLPipeline.__call__` as diffusers runs it, generic over the backend.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use sdxl_text::{PromptBatch, PromptEncodeOptions, PromptError, SdxlTextEncoders, SdxlTokenizers};
use sdxl_unet::{AddedCond, UNet2DConditionModel, UNetInput};
use sdxl_vae::AutoencoderKL;
use sharpen_schedulers::{
    Sampler, SamplerKind, SamplerState, SchedulerConfig, SchedulerConfigJson,
};
use sharpen_weights::text::{load_sdxl_text_encoders, load_sdxl_tokenizers};
use sharpen_weights::unet::load_unet;
use sharpen_weights::vae::load_vae;
use sharpen_weights::{read_config, read_json, LoadOptions, WeightsError};

/// Everything an SDXL text-to-image run needs.
#[derive(Debug)]
pub struct SdxlPipeline<B: Backend> {
    pub tokenizers: SdxlTokenizers,
    pub text_encoders: SdxlTextEncoders<B>,
    pub unet: UNet2DConditionModel<B>,
    pub vae: AutoencoderKL<B>,
    pub scheduler: SchedulerConfig,
    /// `model_index.json`'s `force_zeros_for_empty_prompt` (true for SDXL base).
    pub force_zeros_for_empty_prompt: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> PipelineError {
    PipelineError::Invalid {
        field,
        message: message.into(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ModelIndex {
    #[serde(default = "yes")]
    force_zeros_for_empty_prompt: bool,
}

fn yes() -> bool {
    true
}

impl<B: Backend> SdxlPipeline<B> {
    /// Loads a diffusers SDXL pipeline folder (`model_index.json`, `scheduler/`, `tokenizer/`,
    /// `tokenizer_2/`, `text_encoder/`, `text_encoder_2/`, `unet/`, `vae/`). The VAE stays in f32
    /// whatever `options.dtype` says (SDXL's VAE overflows in f16).
    pub fn load(
        root: &Path,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self, PipelineError> {
        let index_path = root.join("model_index.json");
        if !index_path.is_file() {
            return Err(WeightsError::NotFound { path: index_path }.into());
        }
        let index: ModelIndex = read_json(&index_path)?;
        let scheduler = read_config::<SchedulerConfigJson, SchedulerConfig, _>(
            &root.join("scheduler/scheduler_config.json"),
        )?;
        let vae_options = LoadOptions {
            dtype: None,
            ..options.clone()
        };
        Ok(Self {
            tokenizers: load_sdxl_tokenizers(root)?,
            text_encoders: load_sdxl_text_encoders(root, options, device)?,
            unet: load_unet(&root.join("unet"), options, device)?,
            vae: load_vae(&root.join("vae"), &vae_options, device)?,
            scheduler,
            force_zeros_for_empty_prompt: index.force_zeros_for_empty_prompt,
        })
    }
}

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub sampler: SamplerKind,
    pub steps: usize,
    /// Classifier-free guidance scale; 1 or less disables guidance (one UNet batch per step).
    pub guidance_scale: f64,
    /// diffusers' `guidance_rescale` (0 = off).
    pub guidance_rescale: f64,
    pub clip_skip: Option<usize>,
    pub width: usize,
    pub height: usize,
    /// SDXL micro-conditioning; defaults: original and target size = (height, width), crop (0, 0).
    pub original_size: Option<[usize; 2]>,
    pub crop_top_left: [usize; 2],
    pub target_size: Option<[usize; 2]>,
}

impl GenerateOptions {
    /// SDXL's defaults at a size: Euler, 30 steps, guidance 5.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            sampler: SamplerKind::Euler,
            steps: 30,
            guidance_scale: 5.0,
            guidance_rescale: 0.0,
            clip_skip: None,
            width,
            height,
            original_size: None,
            crop_top_left: [0, 0],
            target_size: None,
        }
    }

    fn time_ids(&self) -> [f32; 6] {
        let [oh, ow] = self.original_size.unwrap_or([self.height, self.width]);
        let [ct, cl] = self.crop_top_left;
        let [th, tw] = self.target_size.unwrap_or([self.height, self.width]);
        [oh, ow, ct, cl, th, tw].map(|v| v as f32)
    }
}

/// One run: prompts, optional negative prompts, and the unit-variance initial noise
/// [batch, 4, height / 8, width / 8] (scaled by the sampler's `init_noise_sigma` here, as diffusers
/// does with `latents=`).
pub struct GenerateRequest<'a, B: Backend> {
    pub prompts: PromptBatch<'a>,
    pub negative: Option<PromptBatch<'a>>,
    pub latents: Tensor<B, 4>,
}

/// Noise for stochastic sampler steps, by step index.
pub trait StepNoise<B: Backend> {
    fn noise(&mut self, step: usize, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4>;
}

/// What the observer sees after each step.
pub struct StepEvent<'a, B: Backend> {
    pub step: usize,
    pub steps: usize,
    pub timestep: i64,
    pub latents: &'a Tensor<B, 4>,
    pub pred_original_sample: &'a Tensor<B, 4>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Generated<B: Backend> {
    /// Final latents (after the last step, before VAE scaling): [batch, 4, h/8, w/8].
    pub latents: Tensor<B, 4>,
    /// Images in [0, 1]: [batch, 3, height, width].
    pub images: Tensor<B, 4>,
}

impl<B: Backend> SdxlPipeline<B> {
    /// Runs the denoising loop and decodes. `noise` is asked for noise only by stochastic samplers.
    pub fn generate(
        &self,
        request: GenerateRequest<'_, B>,
        options: &GenerateOptions,
        noise: &mut dyn StepNoise<B>,
        observer: &mut dyn FnMut(StepEvent<'_, B>),
    ) -> Result<Generated<B>, PipelineError> {
        let latents = self.denoise(request, options, noise, observer)?;
        let images = self.decode(latents.clone());
        Ok(Generated { latents, images })
    }

    /// [`Self::generate`] from seeded noise, one image per prompt (no negative prompt): item i's
    /// initial noise comes from `image_seed(seed, first + i)`, the step noise of stochastic
    /// samplers from `seed + first`. The same (prompts, seed, first) give the same images, whoever
    /// asks: validation grids, evaluations, best-of-N candidates.
    pub fn generate_seeded(
        &self,
        prompts: &[&str],
        seed: u64,
        first: usize,
        options: &GenerateOptions,
    ) -> Result<Generated<B>, PipelineError> {
        let scale = self.vae.config.downscale();
        let device = self.unet.conv_in.weight.val().device();
        let latents = crate::seeded_noise(
            seed,
            first,
            [
                prompts.len(),
                self.unet.config.in_channels,
                options.height / scale,
                options.width / scale,
            ],
            &device,
        );
        self.generate(
            GenerateRequest {
                prompts: PromptBatch::new(prompts),
                negative: None,
                latents,
            },
            options,
            &mut crate::SeededStepNoise {
                seed: seed.wrapping_add(first as u64),
            },
            &mut |_| {},
        )
    }

    /// Latents -> images in [0, 1], in the VAE's dtype (f32 by default).
    pub fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let images = self.vae.decode(self.vae.unscale_latents(latents));
        images.div_scalar(2.0).add_scalar(0.5).clamp(0.0, 1.0)
    }

    /// [`Self::generate`] with another UNet of the same config in place of the pipeline's (a
    /// model being trained, say).
    pub fn generate_with(
        &self,
        unet: &UNet2DConditionModel<B>,
        request: GenerateRequest<'_, B>,
        options: &GenerateOptions,
        noise: &mut dyn StepNoise<B>,
        observer: &mut dyn FnMut(StepEvent<'_, B>),
    ) -> Result<Generated<B>, PipelineError> {
        let latents = self.denoise_with(unet, request, options, noise, observer)?;
        let images = self.decode(latents.clone());
        Ok(Generated { latents, images })
    }

    /// The denoising loop only: returns the final latents.
    pub fn denoise(
        &self,
        request: GenerateRequest<'_, B>,
        options: &GenerateOptions,
        noise: &mut dyn StepNoise<B>,
        observer: &mut dyn FnMut(StepEvent<'_, B>),
    ) -> Result<Tensor<B, 4>, PipelineError> {
        self.denoise_with(&self.unet, request, options, noise, observer)
    }

    /// [`Self::denoise`] with another UNet in place of the pipeline's.
    pub fn denoise_with(
        &self,
        unet: &UNet2DConditionModel<B>,
        request: GenerateRequest<'_, B>,
        options: &GenerateOptions,
        noise: &mut dyn StepNoise<B>,
        observer: &mut dyn FnMut(StepEvent<'_, B>),
    ) -> Result<Tensor<B, 4>, PipelineError> {
        let scale = self.vae.config.downscale();
        for (field, v) in [("width", options.width), ("height", options.height)] {
            if v == 0 || v % scale != 0 {
                return Err(invalid(
                    field,
                    format!("{v} is not a positive multiple of {scale}"),
                ));
            }
        }
        let batch = request.prompts.prompt.len();
        if batch == 0 {
            return Err(invalid("prompt", "no prompt given"));
        }
        let expected = [
            batch,
            unet.config.in_channels,
            options.height / scale,
            options.width / scale,
        ];
        if request.latents.dims() != expected {
            return Err(invalid(
                "latents",
                format!("shape {:?}, expected {expected:?}", request.latents.dims()),
            ));
        }
        if options.steps == 0 {
            return Err(invalid("steps", "must be at least 1"));
        }
        let device = request.latents.device();
        let cfg = options.guidance_scale > 1.0;
        let encode_options = PromptEncodeOptions {
            clip_skip: options.clip_skip,
            force_zeros_for_empty_prompt: self.force_zeros_for_empty_prompt,
        };
        let embeds = self.text_encoders.encode_for_guidance(
            &self.tokenizers,
            request.prompts,
            request.negative,
            encode_options,
        )?;
        let (context, pooled) = if cfg {
            (
                Tensor::cat(
                    vec![embeds.uncond.prompt_embeds, embeds.cond.prompt_embeds],
                    0,
                ),
                Tensor::cat(
                    vec![
                        embeds.uncond.pooled_prompt_embeds,
                        embeds.cond.pooled_prompt_embeds,
                    ],
                    0,
                ),
            )
        } else {
            (embeds.cond.prompt_embeds, embeds.cond.pooled_prompt_embeds)
        };
        let rows = if cfg { 2 * batch } else { batch };
        let ids: Vec<f32> = (0..rows).flat_map(|_| options.time_ids()).collect();
        let time_ids = Tensor::<B, 2>::from_data(TensorData::new(ids, [rows, 6]), &device);

        let sampler = Sampler::new(options.sampler, &self.scheduler, options.steps);
        let mut latents = request.latents.mul_scalar(sampler.init_noise_sigma());
        let mut state = SamplerState::default();
        let n = sampler.num_steps();
        for (i, &t) in sampler.timesteps().iter().enumerate() {
            let input = if cfg {
                Tensor::cat(vec![latents.clone(), latents.clone()], 0)
            } else {
                latents.clone()
            };
            let input = sampler.scale_model_input(input, i);
            let timestep =
                Tensor::<B, 1>::from_data(TensorData::new(vec![t as f32; rows], [rows]), &device);
            let pred = unet.forward(UNetInput {
                sample: input,
                timestep,
                encoder_hidden_states: context.clone(),
                added_cond: Some(AddedCond {
                    text_embeds: pooled.clone(),
                    time_ids: time_ids.clone(),
                }),
            });
            let pred = if cfg {
                guide(
                    pred,
                    batch,
                    options.guidance_scale,
                    options.guidance_rescale,
                )
            } else {
                pred
            };
            let step_noise = sampler
                .needs_noise(i)
                .then(|| noise.noise(i, latents.dims(), &device));
            let pred = pred.cast(latents.dtype());
            let out = sampler.step(i, pred, latents, step_noise, &mut state);
            latents = out.prev_sample;
            observer(StepEvent {
                step: i,
                steps: n,
                timestep: t,
                latents: &latents,
                pred_original_sample: &out.pred_original_sample,
            });
        }
        Ok(latents)
    }
}

/// `uncond + g (cond - uncond)` on [uncond; cond] halves, with diffusers' guidance rescale.
fn guide<B: Backend>(pred: Tensor<B, 4>, batch: usize, scale: f64, rescale: f64) -> Tensor<B, 4> {
    let uncond = pred.clone().narrow(0, 0, batch);
    let cond = pred.narrow(0, batch, batch);
    let guided = uncond.clone() + (cond.clone() - uncond).mul_scalar(scale);
    if rescale <= 0.0 {
        return guided;
    }
    // Per-item standard deviations (unbiased, as torch.std).
    let std = |t: &Tensor<B, 4>| {
        let [b, c, h, w] = t.dims();
        let flat = t.clone().reshape([b, c * h * w]);
        flat.var(1).sqrt().reshape([b, 1, 1, 1])
    };
    let rescaled = guided.clone() * (std(&cond) / std(&guided));
    rescaled.mul_scalar(rescale) + guided.mul_scalar(1.0 - rescale)
}

/// SDXL's tokenizer files, embedded from `assets/clip-tokenizer` (the real CLIP vocabulary), for
/// checkpoints that ship without them (single files).
pub fn default_sdxl_tokenizers() -> Result<SdxlTokenizers, PipelineError> {
    use sdxl_text::{ClipTokenizer, ClipTokenizerSources};
    const VOCAB: &str = include_str!("../../../assets/clip-tokenizer/tokenizer/vocab.json");
    const MERGES: &str = include_str!("../../../assets/clip-tokenizer/tokenizer/merges.txt");
    let build = |config: &str, map: &str| {
        ClipTokenizer::from_sources(ClipTokenizerSources {
            vocab_json: VOCAB,
            merges_txt: MERGES,
            tokenizer_config_json: Some(config),
            special_tokens_map_json: Some(map),
        })
        .map_err(|e| invalid("tokenizer", e.to_string()))
    };
    Ok(SdxlTokenizers {
        tokenizer: build(
            include_str!("../../../assets/clip-tokenizer/tokenizer/tokenizer_config.json"),
            include_str!("../../../assets/clip-tokenizer/tokenizer/special_tokens_map.json"),
        )?,
        tokenizer_2: build(
            include_str!("../../../assets/clip-tokenizer/tokenizer_2/tokenizer_config.json"),
            include_str!("../../../assets/clip-tokenizer/tokenizer_2/special_tokens_map.json"),
        )?,
    })
}

impl<B: Backend> SdxlPipeline<B> {
    /// Loads an SDXL single-file checkpoint (`sd_xl_base_1.0.safetensors` layout) with SDXL base
    /// 1.0's architecture, scheduler and tokenizers.
    pub fn from_single_file(
        path: &Path,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self, PipelineError> {
        use sdxl_text::ClipTextConfig;
        let file = sharpen_weights::single_file::SingleFile::open(path)?;
        let vae_options = LoadOptions {
            dtype: None,
            ..options.clone()
        };
        Ok(Self {
            tokenizers: default_sdxl_tokenizers()?,
            text_encoders: SdxlTextEncoders {
                text_encoder: file.text_encoder(
                    &ClipTextConfig::sdxl_base_1_0_text_encoder(),
                    options,
                    device,
                )?,
                text_encoder_2: file.text_encoder_2(
                    &ClipTextConfig::sdxl_base_1_0_text_encoder_2(),
                    options,
                    device,
                )?,
            },
            unet: file.unet(&sdxl_unet::UNetConfig::sdxl_base_1_0(), options, device)?,
            vae: file.vae(&sdxl_vae::VaeConfig::sdxl_base_1_0(), &vae_options, device)?,
            scheduler: SchedulerConfig::sdxl_base_1_0(),
            force_zeros_for_empty_prompt: true,
        })
    }
}
