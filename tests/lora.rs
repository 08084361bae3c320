//! UNet LoRA files against diffusers 0.42.1 + peft 0.21.2: a PEFT adapter (linear and conv
//! layers, r 4, lora_alpha 8) on the tiny UNet, as diffusers saves it and as diffusers converts it
//! to kohya keys, merged here and compared with diffusers' output at scale 1 and 0.5; our own
//! files in both layouts read back exactly; bad files are refused by key.

use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use sdxl_unet::{AddedCond, UNet2DConditionModel, UNetInput};
use sharpen_lora::Lora;
use sharpen_tests::{assert_close, fixture, Reference, TestBackend as B};
use sharpen_weights::lora::{load_unet_lora, save_unet_lora, LoraLayout};
use sharpen_weights::single_file::{map_key, sgm_unet_module, Component};
use sharpen_weights::unet::{load_unet, unet_checkpoint_key};
use sharpen_weights::{save_tensors, LoadOptions};

const TOL: f32 = 1e-4;

fn unet(name: &str) -> UNet2DConditionModel<B> {
    load_unet(
        &fixture(&format!("unet/{name}")),
        &LoadOptions::default(),
        &Default::default(),
    )
    .unwrap()
}

fn input(r: &Reference) -> UNetInput<B> {
    let t = |key: &str| r.data(key);
    let device = Default::default();
    UNetInput {
        sample: Tensor::from_data(t("sample"), &device),
        timestep: Tensor::from_data(t("timestep"), &device),
        encoder_hidden_states: Tensor::from_data(t("encoder_hidden_states"), &device),
        added_cond: Some(AddedCond {
            text_embeds: Tensor::from_data(t("text_embeds"), &device),
            time_ids: Tensor::from_data(t("time_ids"), &device),
        }),
    }
}

fn check_against_diffusers(file: &str) {
    let base = unet("tiny");
    let lora = load_unet_lora(&fixture(file), &base, &Default::default()).unwrap();
    assert_eq!(lora.layers.len(), 181, "{file}: every adapted module");
    for layer in &lora.layers {
        assert_eq!(
            (layer.rank(), layer.alpha),
            (4, 8.0),
            "{}",
            layer.target.name
        );
    }
    let r = Reference::open("lora/outputs.safetensors");
    for (scale, key) in [(1.0, "out"), (0.5, "out_half")] {
        let merged = lora
            .merge(base.clone(), scale, &unet_checkpoint_key)
            .unwrap();
        let out = merged.forward(input(&r));
        assert_close(&format!("{file} at scale {scale}"), &out, &r.data(key), TOL);
    }
    // Without the adapter the output differs clearly: the test can fail.
    let plain = base.forward(input(&r));
    let diff = (plain - Tensor::from_data(r.data("out"), &Default::default()))
        .abs()
        .max()
        .into_scalar();
    assert!(diff > 0.05, "the adapter changes the output (by {diff})");
}

#[test]
fn diffusers_peft_file_matches_diffusers() {
    check_against_diffusers("lora/pytorch_lora_weights.safetensors");
}

#[test]
fn kohya_file_matches_diffusers() {
    check_against_diffusers("lora/kohya.safetensors");
}

fn same(a: &Lora<B>, b: &Lora<B>) {
    assert_eq!(a.layers.len(), b.layers.len());
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert_eq!(x.target, y.target);
        assert_eq!(x.alpha, y.alpha, "{}", x.target.name);
        assert_eq!(x.lora_a.val().into_data(), y.lora_a.val().into_data());
        assert_eq!(x.lora_b.val().into_data(), y.lora_b.val().into_data());
    }
}

#[test]
fn saved_files_read_back_exactly_in_both_layouts() {
    let base = unet("tiny");
    let device = Default::default();
    let mut lora = load_unet_lora(
        &fixture("lora/pytorch_lora_weights.safetensors"),
        &base,
        &device,
    )
    .unwrap();
    // One layer with its own alpha: carried by alpha_pattern / the kohya alpha key.
    lora.layers[5].alpha = 2.0;
    let dir = tempfile::tempdir().unwrap();
    for (layout, name) in [
        (LoraLayout::Diffusers, "pytorch_lora_weights.safetensors"),
        (LoraLayout::Kohya, "kohya.safetensors"),
    ] {
        let path = dir.path().join(name);
        save_unet_lora(&path, &lora, &base.config, layout).unwrap();
        let back = load_unet_lora(&path, &base, &device).unwrap();
        same(&lora, &back);
    }
    // sd-scripts' SDXL names: down block 1, attention 0 is the original `input_blocks.4.1`.
    let kohya =
        sharpen_weights::SafetensorsFile::open(&dir.path().join("kohya.safetensors")).unwrap();
    for key in [
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight",
        "lora_unet_middle_block_1_proj_in.lora_up.weight",
        "lora_unet_output_blocks_0_0_in_layers_2.alpha",
    ] {
        assert!(kohya.tensors.contains_key(key), "missing {key}");
    }
}

#[test]
fn sgm_module_names_invert_the_single_file_mapping() {
    for (name, layers) in [("tiny", 2), ("tiny_b", 1)] {
        let unet = unet(name);
        let weights = sharpen_lora::linear_and_conv_weights(&unet, &unet_checkpoint_key);
        let up_attention = |b: usize| {
            weights
                .iter()
                .any(|t| t.name.starts_with(&format!("up_blocks.{b}.attentions.")))
        };
        let mut seen = 0;
        for t in &weights {
            let sgm = sgm_unet_module(&t.name, layers, &up_attention)
                .unwrap_or_else(|| panic!("{name}: no SGM name for {}", t.name));
            let back = map_key(
                Component::Unet {
                    layers_per_block: layers,
                },
                &format!("{sgm}.weight"),
            )
            .unwrap_or_else(|| panic!("{name}: {sgm} does not map back"));
            assert_eq!(back[0].0, format!("{}.weight", t.name), "{name}: via {sgm}");
            seen += 1;
        }
        assert!(seen > 50, "{name}: {seen} modules");
    }
}

fn write(path: &Path, tensors: &[(&str, Vec<usize>)]) {
    let data: Vec<(&str, TensorData)> = tensors
        .iter()
        .map(|(k, shape)| {
            let n = shape.iter().product::<usize>();
            (*k, TensorData::new(vec![0.1f32; n], shape.clone()))
        })
        .collect();
    save_tensors(path, &data).unwrap();
}

#[test]
fn bad_files_are_refused_by_key() {
    let base = unet("tiny");
    let dir = tempfile::tempdir().unwrap();
    let q = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q";
    type Case = (&'static str, Vec<(String, Vec<usize>)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "unpaired",
            vec![(format!("{q}.lora_A.weight"), vec![4, 16])],
            "no up (lora_B)",
        ),
        (
            "shape",
            vec![
                (format!("{q}.lora_A.weight"), vec![4, 16]),
                (format!("{q}.lora_B.weight"), vec![15, 4]),
            ],
            "lora_B has shape [15, 4]",
        ),
        (
            "module",
            vec![
                ("unet.down_blocks.9.to_q.lora_A.weight".into(), vec![4, 16]),
                ("unet.down_blocks.9.to_q.lora_B.weight".into(), vec![16, 4]),
            ],
            "down_blocks.9.to_q",
        ),
        (
            "text",
            vec![("text_encoder.x.lora_A.weight".into(), vec![4, 16])],
            "text encoder",
        ),
        (
            "unknown",
            vec![("unet.conv_in.hada_w1_a".into(), vec![4, 16])],
            "unet.conv_in.hada_w1_a",
        ),
        (
            "kohya-loha",
            vec![("lora_unet_conv_in.hada_w1_a".into(), vec![4, 16])],
            "LoHa",
        ),
    ];
    for (name, tensors, expect) in cases {
        let path = dir.path().join(format!("{name}.safetensors"));
        let refs: Vec<(&str, Vec<usize>)> = tensors
            .iter()
            .map(|(k, s)| (k.as_str(), s.clone()))
            .collect();
        write(&path, &refs);
        let err = load_unet_lora(&path, &base, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect), "{name}: {err}");
        assert!(
            err.contains(&format!("{name}.safetensors")),
            "{name}: names the file: {err}"
        );
    }
}
