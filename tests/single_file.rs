//! SDXL single-file checkpoints: the key mapping against diffusers' own converter (pair for pair
//! on tiny models, set for set at full size), and tiny single-file models at parity.

use std::collections::BTreeMap;

use burn::tensor::{Int, Tensor, TensorData};
use sdxl_unet::{AddedCond, UNetConfig, UNetInput};
use sdxl_vae::VaeConfig;
use sharpen_tests::{assert_close, fixture, key_list, Reference, TestBackend as B};
use sharpen_weights::single_file::{map_key, Component, SingleFile};
use sharpen_weights::text::{clip_text_key, load_clip_text_config};
use sharpen_weights::LoadOptions;

const TOL: f32 = 1e-4;

fn component_of(
    key: &str,
    unet_layers: usize,
    vae_levels: usize,
) -> (Component, &str, &'static str) {
    for (component, name) in [
        (
            Component::Unet {
                layers_per_block: unet_layers,
            },
            "unet",
        ),
        (Component::Vae { levels: vae_levels }, "vae"),
        (Component::ClipL, "text_encoder"),
        (Component::ClipG, "text_encoder_2"),
    ] {
        if let Some(rest) = component
            .prefixes()
            .iter()
            .find_map(|p| key.strip_prefix(p))
        {
            return (component, rest, name);
        }
    }
    panic!("{key} belongs to no component")
}

/// Every original key of the tiny models maps to exactly the diffusers key(s) that diffusers'
/// converter gives it (in q, k, v order for OpenCLIP's fused projections).
#[test]
fn key_mapping_matches_the_reference_converter_pair_for_pair() {
    let text = std::fs::read_to_string(fixture("single_file/pairs_tiny.json")).unwrap();
    let pairs: BTreeMap<String, Vec<String>> = serde_json::from_str(&text).unwrap();
    assert!(pairs.len() > 900);
    for (original, expected) in &pairs {
        let (component, key, name) = component_of(original, 2, 4);
        let mapped = map_key(component, key).unwrap_or_else(|| panic!("{original} is not mapped"));
        let got: Vec<String> = mapped.iter().map(|(k, _)| format!("{name}/{k}")).collect();
        assert_eq!(&got, expected, "{original}");
    }
}

/// SDXL base 1.0's single-file keys (checked by diffusers' converter, no weights) map onto exactly
/// the diffusers layout of the four components, with the right shapes.
#[test]
fn full_size_single_file_keys_map_onto_the_diffusers_layout() {
    let original = key_list("single_file/keys_sdxl_base_1_0.json");
    let mut mapped: BTreeMap<&str, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
    for (key, shape) in &original {
        let (component, rest, name) = component_of(key, 2, 4);
        for (k, derived) in
            map_key(component, rest).unwrap_or_else(|| panic!("{key} is not mapped"))
        {
            let k = if name == "text_encoder" {
                clip_text_key(&k)
            } else {
                k
            };
            assert!(
                mapped
                    .entry(name)
                    .or_default()
                    .insert(k.clone(), derived.shape(shape))
                    .is_none(),
                "{k} twice"
            );
        }
    }
    let reference = [
        ("unet", key_list("unet/keys_sdxl_base_1_0.json")),
        ("vae", key_list("vae/keys_sdxl_base_1_0.json")),
        (
            "text_encoder",
            key_list("text/keys_sdxl_text_encoder.json")
                .into_iter()
                .map(|(k, s)| (clip_text_key(&k), s))
                .collect(),
        ),
        (
            "text_encoder_2",
            key_list("text/keys_sdxl_text_encoder_2.json"),
        ),
    ];
    for (name, want) in reference {
        assert_eq!(mapped[name], want, "{name}");
        println!(
            "{name}: {} single-file keys -> {} diffusers keys",
            original
                .keys()
                .filter(|k| component_of(k, 2, 4).2 == name)
                .count(),
            want.len()
        );
    }
}

fn tensor<const D: usize>(r: &Reference, key: &str) -> Tensor<B, D> {
    Tensor::from_data(r.data(key), &Default::default())
}

#[test]
fn tiny_single_file_models_match_the_reference() {
    let file = SingleFile::open(&fixture("single_file/tiny_sdxl.safetensors")).unwrap();
    let options = LoadOptions::default();
    let device = Default::default();

    let unet = file
        .unet::<B>(&UNetConfig::tiny_sdxl(), &options, &device)
        .unwrap();
    let r = Reference::open("unet/outputs.safetensors");
    let out = unet.forward(UNetInput {
        sample: tensor(&r, "nonsquare.sample"),
        timestep: tensor(&r, "nonsquare.timestep"),
        encoder_hidden_states: tensor(&r, "nonsquare.encoder_hidden_states"),
        added_cond: Some(AddedCond {
            text_embeds: tensor(&r, "nonsquare.text_embeds"),
            time_ids: tensor(&r, "nonsquare.time_ids"),
        }),
    });
    assert_close("single-file unet", &out, &r.data("nonsquare.out"), TOL);

    let vae = file
        .vae::<B>(&VaeConfig::tiny_sdxl(), &options, &device)
        .unwrap();
    let r = Reference::open("vae/outputs.safetensors");
    assert_close(
        "single-file vae decode",
        &vae.decode(tensor(&r, "z")),
        &r.data("decoded"),
        TOL,
    );
    assert_close(
        "single-file vae encode",
        &vae.encode(tensor(&r, "images")).mean,
        &r.data("mean"),
        TOL,
    );

    let r = Reference::open("single_file/text_outputs.safetensors");
    let (ids, shape) = r.ids("input_ids");
    let ids = || {
        Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [shape[0], shape[1]]), &device)
    };
    let c1 = load_clip_text_config(&fixture("single_file/text_encoder")).unwrap();
    let c2 = load_clip_text_config(&fixture("single_file/text_encoder_2")).unwrap();
    let te1 = file
        .text_encoder::<B>(&c1, &options, &device)
        .unwrap()
        .forward(ids());
    assert_close(
        "single-file text_encoder penultimate",
        &te1.penultimate(0),
        &r.data("text_encoder.penultimate"),
        TOL,
    );
    assert_close(
        "single-file text_encoder pooled",
        &te1.pooled,
        &r.data("text_encoder.pooler_output"),
        TOL,
    );
    let te2 = file
        .text_encoder_2::<B>(&c2, &options, &device)
        .unwrap()
        .forward(ids());
    assert_close(
        "single-file text_encoder_2 penultimate",
        &te2.text.penultimate(0),
        &r.data("text_encoder_2.penultimate"),
        TOL,
    );
    assert_close(
        "single-file text_encoder_2 text_embeds",
        &te2.text_embeds,
        &r.data("text_encoder_2.text_embeds"),
        TOL,
    );
}
