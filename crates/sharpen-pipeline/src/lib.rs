//! SDXL text-to-image, step for step as diffusers' `StableDiffusionXLPipeline`: prompt encoding
//! with both encoders, classifier-free guidance with [uncond, cond] batching and guidance rescale,
//! SDXL's time ids, any sampler, VAE decode. Used by sharpen-infer, evaluation and rollouts.

pub mod noise;
mod pipeline;

pub use noise::{candidate_seed, image_seed, seeded_noise, SeededStepNoise, SplitMix64};
pub use pipeline::{
    default_sdxl_tokenizers, GenerateOptions, GenerateRequest, Generated, PipelineError,
    SdxlPipeline, StepEvent, StepNoise,
};
