//! SDXL prompt encoding, as diffusers' `StableDiffusionXLPipeline.encode_prompt` does it:
//! each encoder's penultimate hidden states (before `final_layer_norm`) concatenated on the last
//! dimension ([batch, 77, 768 + 1280]), and the pooled embedding from encoder 2's projection.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::clip::{ClipTextModel, ClipTextModelWithProjection};
use crate::tokenizer::{ClipTokenizer, TokenizerError};

/// SDXL's two tokenizers (`tokenizer/` pads with `<|endoftext|>`, `tokenizer_2/` with `!`).
#[derive(Debug, Clone)]
pub struct SdxlTokenizers {
    pub tokenizer: ClipTokenizer,
    pub tokenizer_2: ClipTokenizer,
}

/// SDXL's two text encoders, named as the pipeline folders name them.
#[derive(Module, Debug)]
pub struct SdxlTextEncoders<B: Backend> {
    pub text_encoder: ClipTextModel<B>,
    pub text_encoder_2: ClipTextModelWithProjection<B>,
}

/// Prompts for one batch; `prompt_2` (for encoder 2) defaults to `prompt`, as in diffusers.
#[derive(Debug, Clone, Copy)]
pub struct PromptBatch<'a> {
    pub prompt: &'a [&'a str],
    pub prompt_2: Option<&'a [&'a str]>,
}

impl<'a> PromptBatch<'a> {
    pub fn new(prompt: &'a [&'a str]) -> Self {
        Self {
            prompt,
            prompt_2: None,
        }
    }
}

/// What conditions the UNet for one side of classifier-free guidance.
#[derive(Debug, Clone)]
pub struct SdxlPromptEmbeds<B: Backend> {
    /// [batch, 77, hidden_1 + hidden_2] (2048 for SDXL).
    pub prompt_embeds: Tensor<B, 3>,
    /// Encoder 2's projected pooled embedding: [batch, projection_dim] (1280 for SDXL).
    pub pooled_prompt_embeds: Tensor<B, 2>,
}

/// Conditional and unconditional embeddings for classifier-free guidance.
#[derive(Debug, Clone)]
pub struct SdxlGuidanceEmbeds<B: Backend> {
    pub cond: SdxlPromptEmbeds<B>,
    pub uncond: SdxlPromptEmbeds<B>,
}

/// Options of prompt encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptEncodeOptions {
    /// diffusers' `clip_skip`: `None` (SDXL's default) takes `hidden_states[-2]`, `Some(k)` takes
    /// `hidden_states[-(k + 2)]`. Like diffusers, it applies to the positive prompt only.
    pub clip_skip: Option<usize>,
    /// SDXL's `force_zeros_for_empty_prompt` (true for SDXL base 1.0): without a negative prompt,
    /// the unconditional embeddings and pooled embeddings are zeros instead of the encoded `""`.
    pub force_zeros_for_empty_prompt: bool,
}

impl Default for PromptEncodeOptions {
    /// SDXL base 1.0's pipeline settings.
    fn default() -> Self {
        Self {
            clip_skip: None,
            force_zeros_for_empty_prompt: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("prompt batch has {prompt} prompts but {field} has {other}")]
    BatchMismatch {
        field: &'static str,
        prompt: usize,
        other: usize,
    },
    #[error("clip_skip {clip_skip} is too large for text encoders with {layers} layers")]
    ClipSkip { clip_skip: usize, layers: usize },
}

fn ids_tensor<B: Backend>(ids: Vec<Vec<u32>>, device: &B::Device) -> Tensor<B, 2, Int> {
    let batch = ids.len();
    let seq = ids.first().map_or(0, Vec::len);
    let flat: Vec<i64> = ids.into_iter().flatten().map(i64::from).collect();
    Tensor::from_data(TensorData::new(flat, [batch, seq]), device)
}

impl<B: Backend> SdxlTextEncoders<B> {
    /// Encodes one batch of prompts. `skip` selects the hidden state (see [`PromptEncodeOptions::clip_skip`]).
    pub fn encode(
        &self,
        tokenizers: &SdxlTokenizers,
        batch: PromptBatch<'_>,
        clip_skip: Option<usize>,
    ) -> Result<SdxlPromptEmbeds<B>, PromptError> {
        let prompt_2 = batch.prompt_2.unwrap_or(batch.prompt);
        if prompt_2.len() != batch.prompt.len() {
            return Err(PromptError::BatchMismatch {
                field: "prompt_2",
                prompt: batch.prompt.len(),
                other: prompt_2.len(),
            });
        }
        let skip = clip_skip.unwrap_or(0);
        let layers = self.text_encoder.text_model.encoder.layers.len();
        let layers_2 = self.text_encoder_2.text_model.encoder.layers.len();
        if skip + 1 > layers.min(layers_2) {
            return Err(PromptError::ClipSkip {
                clip_skip: skip,
                layers: layers.min(layers_2),
            });
        }
        let device = self.text_encoder.text_model.final_layer_norm.gamma.device();
        let ids_1 = ids_tensor::<B>(tokenizers.tokenizer.encode_batch(batch.prompt)?, &device);
        let ids_2 = ids_tensor::<B>(tokenizers.tokenizer_2.encode_batch(prompt_2)?, &device);
        let out_1 = self.text_encoder.forward(ids_1);
        let out_2 = self.text_encoder_2.forward(ids_2);
        Ok(SdxlPromptEmbeds {
            prompt_embeds: Tensor::cat(
                vec![out_1.penultimate(skip), out_2.text.penultimate(skip)],
                2,
            ),
            pooled_prompt_embeds: out_2.text_embeds,
        })
    }

    /// Conditional and unconditional embeddings as diffusers' `encode_prompt` gives them with
    /// `do_classifier_free_guidance=True`. `negative: None` means no negative prompt was given:
    /// zeros when `force_zeros_for_empty_prompt`, else the encoded `""`. A given negative prompt is
    /// encoded with `hidden_states[-2]` whatever `clip_skip` is, as diffusers does.
    pub fn encode_for_guidance(
        &self,
        tokenizers: &SdxlTokenizers,
        prompt: PromptBatch<'_>,
        negative: Option<PromptBatch<'_>>,
        options: PromptEncodeOptions,
    ) -> Result<SdxlGuidanceEmbeds<B>, PromptError> {
        let cond = self.encode(tokenizers, prompt, options.clip_skip)?;
        let uncond = match negative {
            None if options.force_zeros_for_empty_prompt => SdxlPromptEmbeds {
                prompt_embeds: cond.prompt_embeds.zeros_like(),
                pooled_prompt_embeds: cond.pooled_prompt_embeds.zeros_like(),
            },
            None => {
                let empty = vec![""; prompt.prompt.len()];
                self.encode(tokenizers, PromptBatch::new(&empty), None)?
            }
            Some(neg) => {
                if neg.prompt.len() != prompt.prompt.len() {
                    return Err(PromptError::BatchMismatch {
                        field: "negative_prompt",
                        prompt: prompt.prompt.len(),
                        other: neg.prompt.len(),
                    });
                }
                self.encode(tokenizers, neg, None)?
            }
        };
        Ok(SdxlGuidanceEmbeds { cond, uncond })
    }
}
