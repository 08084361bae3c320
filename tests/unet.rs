//! The SDXL UNet against diffusers 0.42.1: a tiny SDXL-architecture UNet with re-randomised
//! weights on non-square and odd-sized inputs, the key remap table, and the full-size key list.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use sdxl_unet::{AddedCond, UNet2DConditionModel, UNetConfig, UNetInput};
use sharpen_nn::AttentionMode;
use sharpen_tests::{
    assert_close, assert_same_keys, fixture, key_list, Reference, TestBackend as B,
};
use sharpen_weights::expected_keys;
use sharpen_weights::unet::{load_unet, load_unet_config, unet_checkpoint_key, unet_key};
use sharpen_weights::LoadOptions;

const TOL: f32 = 1e-4;

fn tensor<const D: usize>(r: &Reference, key: &str) -> Tensor<B, D> {
    Tensor::from_data(r.data(key), &Default::default())
}

fn input(r: &Reference, case: &str) -> UNetInput<B> {
    UNetInput {
        sample: tensor(r, &format!("{case}.sample")),
        timestep: tensor(r, &format!("{case}.timestep")),
        encoder_hidden_states: tensor(r, &format!("{case}.encoder_hidden_states")),
        added_cond: Some(AddedCond {
            text_embeds: tensor(r, &format!("{case}.text_embeds")),
            time_ids: tensor(r, &format!("{case}.time_ids")),
        }),
    }
}

#[test]
fn tiny_unet_matches_diffusers() {
    let dir = fixture("unet/tiny");
    assert_eq!(
        load_unet_config(&dir).unwrap(),
        UNetConfig::tiny_sdxl(),
        "the tiny preset mirrors the fixture config"
    );
    let mut unet = load_unet::<B>(&dir, &LoadOptions::default(), &Default::default()).unwrap();
    let r = Reference::open("unet/outputs.safetensors");
    for case in ["nonsquare", "odd"] {
        let inp = input(&r, case);
        let added = inp.added_cond.clone().expect("SDXL input");
        let aug = unet.added_embedding(&added).expect("text_time UNet");
        let what = format!("unet {case} added-condition embedding");
        assert_close(&what, &aug, &r.data(&format!("{case}.aug_emb")), TOL);
        let emb = unet.embed_time(inp.timestep.clone(), Some(&added)) - aug;
        let what = format!("unet {case} time embedding");
        assert_close(&what, &emb, &r.data(&format!("{case}.time_emb")), TOL);
        let out = unet.forward(inp);
        assert_close(
            &format!("unet {case}"),
            &out,
            &r.data(&format!("{case}.out")),
            TOL,
        );
    }
    // Chunked attention gives the same result.
    unet.set_attention_mode(AttentionMode::QueryChunks(7));
    let out = unet.forward(input(&r, "nonsquare"));
    assert_close(
        "unet nonsquare, chunked attention",
        &out,
        &r.data("nonsquare.out"),
        TOL,
    );
}

/// A second tiny config: four levels in SD 2.x order, one resnet per level, no added
/// conditioning, sin-first timestep embedding with freq_shift 1, odd latent sizes on the way down.
#[test]
fn second_tiny_unet_config_matches_diffusers() {
    let unet = load_unet::<B>(
        &fixture("unet/tiny_b"),
        &LoadOptions::default(),
        &Default::default(),
    )
    .unwrap();
    assert!(unet.add_embedding.is_none());
    let r = Reference::open("unet/outputs_b.safetensors");
    let timestep: Tensor<B, 1> = tensor(&r, "timestep");
    assert_close(
        "unet B time embedding",
        &unet.embed_time(timestep.clone(), None),
        &r.data("time_emb"),
        TOL,
    );
    let out = unet.forward(UNetInput {
        sample: tensor(&r, "sample"),
        timestep,
        encoder_hidden_states: tensor(&r, "encoder_hidden_states"),
        added_cond: None,
    });
    assert_close("unet B", &out, &r.data("out"), TOL);
}

/// The remap table is a bijection on the real key set: every checkpoint key maps to a module
/// key and back to itself.
#[test]
fn unet_key_remap_round_trips() {
    let keys = key_list("unet/keys_sdxl_base_1_0.json");
    let mut remapped = 0;
    for k in keys.keys() {
        let module = unet_key(k);
        assert_eq!(&unet_checkpoint_key(&module), k);
        remapped += usize::from(&module != k);
    }
    assert!(remapped > 0, "the SDXL key set exercises the remap table");
}

/// SDXL base 1.0's UNet built from its preset (lazily, without allocating 2.6 B parameters) has
/// exactly diffusers' parameter names and shapes.
#[test]
fn full_size_sdxl_unet_has_the_reference_keys_and_shapes() {
    let unet = UNet2DConditionModel::<B>::new(&UNetConfig::sdxl_base_1_0(), &Default::default());
    let ours: BTreeMap<String, Vec<usize>> = expected_keys::<B, _>(&unet)
        .into_iter()
        .map(|(k, s)| (unet_checkpoint_key(&k), s))
        .collect();
    let reference = key_list("unet/keys_sdxl_base_1_0.json");
    assert_same_keys("SDXL UNet", &ours, &reference);
    assert_eq!(reference.len(), 1680);
}

#[test]
fn unet_config_errors_name_the_field() {
    let dir = tempfile_dir();
    let base = std::fs::read_to_string(fixture("unet/tiny/config.json")).unwrap();
    for (from, to, field) in [
        (
            "\"use_linear_projection\": true",
            "\"use_linear_projection\": false",
            "use_linear_projection",
        ),
        (
            "\"resnet_time_scale_shift\": \"default\"",
            "\"resnet_time_scale_shift\": \"scale_shift\"",
            "resnet_time_scale_shift",
        ),
        (
            "\"norm_num_groups\": 4",
            "\"norm_num_groups\": 3",
            "block_out_channels",
        ),
        (
            "\"addition_time_embed_dim\": 8",
            "\"addition_time_embed_dim\": 80",
            "projection_class_embeddings_input_dim",
        ),
        ("\"cross_attention_dim\": 32,", "", "cross_attention_dim"),
    ] {
        assert!(base.contains(from), "fixture config lacks {from}");
        std::fs::write(dir.join("config.json"), base.replace(from, to)).unwrap();
        let err = load_unet_config(&dir).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains(field),
            "{field}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sharpen-unet-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A UNet checkpoint with a missing, an extra and a wrongly shaped tensor fails with one error
/// that names all three.
#[test]
fn broken_unet_checkpoint_names_the_bad_tensors() {
    use safetensors::tensor::TensorView;
    let src = fixture("unet/tiny");
    let dir = std::env::temp_dir().join(format!("sharpen-broken-unet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("diffusion_pytorch_model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let missing = "mid_block.attentions.0.transformer_blocks.1.ff.net.2.weight";
    let reshaped = "conv_in.bias";
    let extra = [0u8; 8];
    let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, view) in file.tensors() {
        if name == missing {
            continue;
        }
        if name == reshaped {
            // 8 values stored as [2, 4] instead of [8].
            views.push((
                name,
                TensorView::new(view.dtype(), vec![2, 4], view.data()).unwrap(),
            ));
        } else {
            views.push((name, view));
        }
    }
    views.push((
        "up_blocks.0.attentions.9.proj_in.weight".into(),
        TensorView::new(safetensors::Dtype::F32, vec![2], &extra).unwrap(),
    ));
    safetensors::serialize_to_file(
        views,
        None,
        &dir.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let err = load_unet::<B>(&dir, &LoadOptions::default(), &Default::default())
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    for name in [
        missing,
        reshaped,
        "up_blocks.0.attentions.9.proj_in.weight",
        "[8]",
        "[2, 4]",
        "diffusion_pytorch_model.safetensors",
    ] {
        assert!(err.contains(name), "error does not name {name}:\n{err}");
    }
}

/// Weights cast at load to bf16 / f16 (as CUDA runs use them) compute in that dtype; the result
/// stays close to the f32 reference within the precision of the format.
#[test]
fn tiny_unet_loads_and_runs_in_half_precision() {
    use burn::tensor::DType;
    let r = Reference::open("unet/outputs.safetensors");
    let reference = r.data("nonsquare.out");
    let scale = reference
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .fold(0.0f32, |m, x| m.max(x.abs()));
    // (dtype, tolerance relative to the output's max |x|): bf16 keeps 8 bits of mantissa, f16 11.
    for (dtype, rel_tol) in [(DType::BF16, 0.05), (DType::F16, 0.01)] {
        let options = LoadOptions {
            variant: None,
            dtype: Some(dtype),
        };
        let unet = load_unet::<B>(&fixture("unet/tiny"), &options, &Default::default()).unwrap();
        assert_eq!(unet.dtype(), dtype);
        assert_eq!(
            unet.up_blocks[0].attentions[0].transformer_blocks[0]
                .ff
                .net_2
                .weight
                .val()
                .dtype(),
            dtype
        );
        let out = unet.forward(input(&r, "nonsquare"));
        assert_eq!(out.dtype(), dtype);
        let out = out.cast(DType::F32);
        assert_close(
            &format!("unet nonsquare in {dtype:?}"),
            &out,
            &reference,
            rel_tol * scale,
        );
    }
}

/// A UNet written by `save_unet` is a diffusers folder: the same key set and shapes as the
/// reference's own file, and it loads back to identical parameters and outputs.
#[test]
fn saved_unet_round_trips_in_the_diffusers_layout() {
    let device = Default::default();
    let unet = load_unet::<B>(&fixture("unet/tiny"), &LoadOptions::default(), &device).unwrap();
    let dir = tempfile_dir().join("saved-unet");
    sharpen_weights::unet::save_unet(&dir, &unet).unwrap();
    let ours =
        sharpen_weights::SafetensorsFile::open(&dir.join("diffusion_pytorch_model.safetensors"))
            .unwrap();
    let theirs = sharpen_weights::SafetensorsFile::open(&fixture(
        "unet/tiny/diffusion_pytorch_model.safetensors",
    ))
    .unwrap();
    let shapes = |f: &sharpen_weights::SafetensorsFile| -> BTreeMap<String, Vec<usize>> {
        f.tensors
            .iter()
            .map(|(k, e)| (k.clone(), e.shape.clone()))
            .collect()
    };
    assert_eq!(
        shapes(&ours),
        shapes(&theirs),
        "key set and shapes equal diffusers'"
    );
    let back = load_unet::<B>(&dir, &LoadOptions::default(), &device).unwrap();
    assert_eq!(back.config, unet.config);
    let key = |k: &str| k.to_string();
    let a = sharpen_weights::module_tensors(&unet, &key);
    let b = sharpen_weights::module_tensors(&back, &key);
    assert_eq!(a.len(), b.len());
    for ((ka, da), (kb, db)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert_eq!(da, db, "{ka} round-trips exactly");
    }
    let r = Reference::open("unet/outputs.safetensors");
    let out = back.forward(input(&r, "nonsquare"));
    assert_close("reloaded unet", &out, &r.data("nonsquare.out"), TOL);
    std::fs::remove_dir_all(&dir).ok();
}
