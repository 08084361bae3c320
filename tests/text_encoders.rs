//! Both SDXL text encoders against transformers 5.24, SDXL prompt encoding against diffusers
//! 0.42.1's `encode_prompt`, and the full-size parameter names and shapes against the reference.

use std::collections::BTreeMap;

use burn::tensor::{Int, Tensor, TensorData};
use sdxl_text::{
    ClipTextConfig, ClipTextModel, ClipTextModelWithProjection, PromptBatch, PromptEncodeOptions,
    SdxlTextEncoders,
};
use serde::Deserialize;
use sharpen_tests::{
    assert_close, assert_same_keys, asset, fixture, key_list, Reference, TestBackend as B,
};
use sharpen_weights::expected_keys;
use sharpen_weights::text::{
    clip_text_key, load_clip_text_model, load_clip_text_model_with_projection, load_sdxl_tokenizers,
};
use sharpen_weights::LoadOptions;

const TOL: f32 = 1e-4;

fn encoders() -> SdxlTextEncoders<B> {
    let device = Default::default();
    SdxlTextEncoders {
        // f32 file in the SDXL repository's layout (`text_model.` prefix, legacy position_ids buffer).
        text_encoder: load_clip_text_model::<B>(
            &fixture("text/text_encoder"),
            &LoadOptions::default(),
            &device,
        )
        .unwrap(),
        // f16 `model.fp16.safetensors` variant, cast to f32 at load.
        text_encoder_2: load_clip_text_model_with_projection::<B>(
            &fixture("text/text_encoder_2"),
            &LoadOptions {
                variant: Some("fp16".into()),
                dtype: None,
            },
            &device,
        )
        .unwrap(),
    }
}

fn ids(reference: &Reference, key: &str) -> Tensor<B, 2, Int> {
    let (values, shape) = reference.ids(key);
    Tensor::from_data(
        TensorData::new(values, [shape[0], shape[1]]),
        &Default::default(),
    )
}

#[test]
fn clip_text_model_matches_transformers() {
    let r = Reference::open("text/encoder_outputs.safetensors");
    let enc = encoders().text_encoder;
    let out = enc.forward(ids(&r, "text_encoder.input_ids"));
    assert_eq!(out.hidden_states.len(), 4);
    for (i, h) in out.hidden_states.iter().enumerate() {
        assert_close(
            &format!("text_encoder hidden_states[{i}]"),
            h,
            &r.data(&format!("text_encoder.hidden_states.{i}")),
            TOL,
        );
    }
    assert_close(
        "text_encoder last_hidden_state",
        &out.last_hidden_state,
        &r.data("text_encoder.last_hidden_state"),
        TOL,
    );
    assert_close(
        "text_encoder pooler_output",
        &out.pooled,
        &r.data("text_encoder.pooler_output"),
        TOL,
    );
    assert_close(
        "text_encoder penultimate",
        &out.penultimate(0),
        &r.data("text_encoder.hidden_states.2"),
        TOL,
    );
}

#[test]
fn clip_text_model_with_projection_matches_transformers() {
    let r = Reference::open("text/encoder_outputs.safetensors");
    let enc = encoders().text_encoder_2;
    let out = enc.forward(ids(&r, "text_encoder_2.input_ids"));
    for (i, h) in out.text.hidden_states.iter().enumerate() {
        assert_close(
            &format!("text_encoder_2 hidden_states[{i}]"),
            h,
            &r.data(&format!("text_encoder_2.hidden_states.{i}")),
            TOL,
        );
    }
    assert_close(
        "text_encoder_2 last_hidden_state",
        &out.text.last_hidden_state,
        &r.data("text_encoder_2.last_hidden_state"),
        TOL,
    );
    assert_close(
        "text_encoder_2 text_embeds",
        &out.text_embeds,
        &r.data("text_encoder_2.text_embeds"),
        TOL,
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[derive(Deserialize)]
struct Case {
    prompt: Vec<String>,
    prompt_2: Option<Vec<String>>,
    negative_prompt: Option<Vec<String>>,
    clip_skip: Option<usize>,
    force_zeros_for_empty_prompt: bool,
}

#[test]
fn sdxl_prompt_embeddings_match_diffusers_encode_prompt() {
    let text = std::fs::read_to_string(fixture("text/cases.json")).unwrap();
    let cases: BTreeMap<String, Case> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 4);
    let r = Reference::open("text/prompt_embeds.safetensors");
    let tokenizers = load_sdxl_tokenizers(&asset("clip-tokenizer")).unwrap();
    let encoders = encoders();
    for (name, case) in &cases {
        let prompt = strs(&case.prompt);
        let prompt_2 = case.prompt_2.as_deref().map(strs);
        let negative = case.negative_prompt.as_deref().map(strs);
        let options = PromptEncodeOptions {
            clip_skip: case.clip_skip,
            force_zeros_for_empty_prompt: case.force_zeros_for_empty_prompt,
        };
        let batch = PromptBatch {
            prompt: &prompt,
            prompt_2: prompt_2.as_deref(),
        };
        let out = encoders
            .encode_for_guidance(
                &tokenizers,
                batch,
                negative.as_deref().map(PromptBatch::new),
                options,
            )
            .unwrap();
        assert_eq!(
            out.cond.prompt_embeds.dims(),
            [4, 77, 72],
            "{name}: 32 + 40 channels"
        );
        assert_close(
            &format!("{name} prompt_embeds"),
            &out.cond.prompt_embeds,
            &r.data(&format!("{name}.prompt_embeds")),
            TOL,
        );
        assert_close(
            &format!("{name} pooled"),
            &out.cond.pooled_prompt_embeds,
            &r.data(&format!("{name}.pooled_prompt_embeds")),
            TOL,
        );
        let neg = r.data(&format!("{name}.negative_prompt_embeds"));
        assert_close(
            &format!("{name} negative_prompt_embeds"),
            &out.uncond.prompt_embeds,
            &neg,
            TOL,
        );
        let neg_pooled = r.data(&format!("{name}.negative_pooled_prompt_embeds"));
        assert_close(
            &format!("{name} negative pooled"),
            &out.uncond.pooled_prompt_embeds,
            &neg_pooled,
            TOL,
        );
        let zeros = neg.as_slice::<f32>().unwrap().iter().all(|&x| x == 0.0);
        assert_eq!(
            zeros,
            name == "no_negative",
            "{name}: only a missing negative prompt with force_zeros gives zeros"
        );
    }
}

/// Full-size SDXL encoders have exactly the reference's parameter names and shapes (built from
/// configs without weights; transformers 5 names `CLIPTextModel` keys without the `text_model.`
/// prefix that the SDXL repository's files carry, which `clip_text_key` restores).
#[test]
fn full_size_sdxl_encoders_have_the_reference_keys_and_shapes() {
    let device = Default::default();
    let encoder_1 = ClipTextModel::<B>::new(&ClipTextConfig::sdxl_base_1_0_text_encoder(), &device);
    let encoder_2 = ClipTextModelWithProjection::<B>::new(
        &ClipTextConfig::sdxl_base_1_0_text_encoder_2(),
        &device,
    );
    for (file, ours) in [
        (
            "text/keys_sdxl_text_encoder.json",
            expected_keys::<B, _>(&encoder_1),
        ),
        (
            "text/keys_sdxl_text_encoder_2.json",
            expected_keys::<B, _>(&encoder_2),
        ),
    ] {
        let reference = key_list(file)
            .into_iter()
            .map(|(k, s)| (clip_text_key(&k), s))
            .collect();
        assert_same_keys(file, &ours, &reference);
    }
}
