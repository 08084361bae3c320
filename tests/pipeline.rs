//! The SDXL pipeline against diffusers' StableDiffusionXLPipeline on a tiny random-weight pipeline
//! folder: given initial latents, 5 steps, CFG 5, Euler and DDIM, with and without a negative prompt.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use sdxl_text::PromptBatch;
use serde::Deserialize;
use sharpen_pipeline::{GenerateOptions, GenerateRequest, SdxlPipeline, StepNoise};
use sharpen_schedulers::SamplerKind;
use sharpen_tests::{assert_close, fixture, Reference, TestBackend as B};
use sharpen_weights::LoadOptions;

#[derive(Deserialize)]
struct Case {
    sampler: String,
    prompt: Vec<String>,
    negative_prompt: Option<Vec<String>>,
    steps: usize,
    guidance_scale: f64,
    #[serde(default)]
    guidance_rescale: f64,
    height: usize,
    width: usize,
}

struct NoNoise;

impl<BB: burn::tensor::backend::Backend> StepNoise<BB> for NoNoise {
    fn noise(&mut self, step: usize, _: [usize; 4], _: &BB::Device) -> Tensor<BB, 4> {
        panic!("deterministic sampler asked for noise at step {step}")
    }
}

#[test]
fn tiny_pipeline_matches_diffusers() {
    let device = Default::default();
    let pipe = SdxlPipeline::<B>::load(
        &fixture("pipeline/tiny-sdxl"),
        &LoadOptions::default(),
        &device,
    )
    .unwrap();
    let r = Reference::open("pipeline/outputs.safetensors");
    let text = std::fs::read_to_string(fixture("pipeline/cases.json")).unwrap();
    let cases: BTreeMap<String, Case> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 5);
    for (name, case) in &cases {
        let prompts: Vec<&str> = case.prompt.iter().map(String::as_str).collect();
        let negative: Option<Vec<&str>> = case
            .negative_prompt
            .as_ref()
            .map(|v| v.iter().map(String::as_str).collect());
        let mut options = GenerateOptions::new(case.width, case.height);
        options.sampler = SamplerKind::parse(&case.sampler).unwrap();
        options.steps = case.steps;
        options.guidance_scale = case.guidance_scale;
        options.guidance_rescale = case.guidance_rescale;
        let request = GenerateRequest {
            prompts: PromptBatch::new(&prompts),
            negative: negative.as_deref().map(PromptBatch::new),
            latents: Tensor::from_data(r.data("latents"), &device),
        };
        let mut steps_seen = 0;
        let out = pipe
            .generate(request, &options, &mut NoNoise, &mut |_| steps_seen += 1)
            .unwrap();
        assert_eq!(steps_seen, 5, "{name}: the observer sees every step");
        assert_close(
            &format!("{name} final latents"),
            &out.latents,
            &r.data(&format!("{name}.latents")),
            1e-4,
        );
        assert_close(
            &format!("{name} image"),
            &out.images,
            &r.data(&format!("{name}.image")),
            1.0 / 255.0,
        );
    }
}

#[test]
fn bad_requests_name_the_field() {
    let device = Default::default();
    let pipe = SdxlPipeline::<B>::load(
        &fixture("pipeline/tiny-sdxl"),
        &LoadOptions::default(),
        &device,
    )
    .unwrap();
    let prompts = ["a cat"];
    let run = |width, height, latents: Tensor<B, 4>| {
        let request = GenerateRequest {
            prompts: PromptBatch::new(&prompts),
            negative: None,
            latents,
        };
        pipe.denoise(
            request,
            &GenerateOptions::new(width, height),
            &mut NoNoise,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string()
    };
    assert!(run(60, 64, Tensor::zeros([1, 4, 8, 8], &device)).contains("width"));
    assert!(run(64, 64, Tensor::zeros([1, 4, 8, 9], &device)).contains("latents"));
    let err = SdxlPipeline::<B>::load(&fixture("unet"), &LoadOptions::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model_index.json"), "{err}");
}

/// The tokenizers embedded for single-file checkpoints are the shipped SDXL tokenizer files.
#[test]
fn embedded_tokenizers_equal_the_shipped_files() {
    let embedded = sharpen_pipeline::default_sdxl_tokenizers().unwrap();
    let files =
        sharpen_weights::text::load_sdxl_tokenizers(&sharpen_tests::asset("clip-tokenizer"))
            .unwrap();
    for prompt in ["a photo of a cat!", "", "東京 🎉 <|endoftext|> wow!!"] {
        assert_eq!(
            embedded.tokenizer.encode(prompt).unwrap(),
            files.tokenizer.encode(prompt).unwrap()
        );
        assert_eq!(
            embedded.tokenizer_2.encode(prompt).unwrap(),
            files.tokenizer_2.encode(prompt).unwrap()
        );
    }
}
