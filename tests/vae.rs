//! The SDXL VAE against diffusers 0.42.1: encode, posterior, decode, tiled encode and decode on a
//! tiny SDXL-architecture AutoencoderKL, and the full-size key list.

use burn::tensor::Tensor;
use sdxl_vae::{AutoencoderKL, DiagonalGaussian, VaeConfig};
use sharpen_nn::AttentionMode;
use sharpen_tests::{
    assert_close, assert_same_keys, fixture, key_list, Reference, TestBackend as B,
};
use sharpen_weights::expected_keys;
use sharpen_weights::vae::{load_vae, load_vae_config};
use sharpen_weights::LoadOptions;

const TOL: f32 = 1e-4;

fn tensor(r: &Reference, key: &str) -> Tensor<B, 4> {
    Tensor::from_data(r.data(key), &Default::default())
}

fn tiny() -> AutoencoderKL<B> {
    let dir = fixture("vae/tiny");
    assert_eq!(
        load_vae_config(&dir).unwrap(),
        VaeConfig::tiny_sdxl(),
        "the tiny preset mirrors the fixture config"
    );
    load_vae::<B>(&dir, &LoadOptions::default(), &Default::default()).unwrap()
}

#[test]
fn tiny_vae_encode_and_decode_match_diffusers() {
    let vae = tiny();
    let r = Reference::open("vae/outputs.safetensors");
    let images = tensor(&r, "images");
    assert_close(
        "moments",
        &vae.encode_moments(images.clone()),
        &r.data("moments"),
        TOL,
    );
    let posterior = vae.encode(images);
    assert_close("posterior mean", &posterior.mean, &r.data("mean"), TOL);
    assert_close(
        "posterior logvar",
        &posterior.logvar,
        &r.data("logvar"),
        TOL,
    );
    assert_close(
        "posterior sample",
        &posterior.sample(tensor(&r, "noise")),
        &r.data("sample"),
        TOL,
    );
    assert_close(
        "decode",
        &vae.decode(tensor(&r, "z")),
        &r.data("decoded"),
        TOL,
    );
}

/// A real photo (scikit-image's astronaut at 64 px) through encode and decode.
#[test]
fn tiny_vae_round_trip_of_a_real_photo_matches_diffusers() {
    let vae = tiny();
    let r = Reference::open("vae/outputs.safetensors");
    let posterior = vae.encode(tensor(&r, "photo"));
    assert_close(
        "photo posterior mean",
        &posterior.mean,
        &r.data("photo.mean"),
        TOL,
    );
    let reconstruction = vae.decode(posterior.mode());
    assert_close(
        "photo reconstruction",
        &reconstruction,
        &r.data("photo.reconstruction"),
        TOL,
    );
}

#[test]
fn tiny_vae_tiled_encode_and_decode_match_diffusers() {
    let mut vae = tiny();
    let r = Reference::open("vae/outputs.safetensors");
    assert_close(
        "tiled encode",
        &vae.encode_tiled(tensor(&r, "tiled.images")).mean,
        &r.data("tiled.mean"),
        TOL,
    );
    assert_close(
        "tiled decode",
        &vae.decode_tiled(tensor(&r, "tiled.z")),
        &r.data("tiled.decoded"),
        TOL,
    );
    // Latents that fit one tile pass straight through.
    let small = tensor(&r, "z").narrow(3, 0, 4);
    assert_close(
        "decode_tiled on one tile",
        &vae.decode_tiled(small.clone()),
        &vae.decode(small).to_data(),
        0.0,
    );
    // Chunked mid-block attention changes nothing.
    vae.set_attention_mode(AttentionMode::QueryChunks(4));
    assert_close(
        "decode, chunked attention",
        &vae.decode(tensor(&r, "z")),
        &r.data("decoded"),
        TOL,
    );
}

#[test]
fn posterior_clamps_logvar_and_latents_scale_round_trip() {
    let device = Default::default();
    let moments = Tensor::<B, 4>::from_floats([[[[1.0]], [[-2.0]], [[-40.0]], [[25.0]]]], &device);
    let p = DiagonalGaussian::from_moments(moments);
    assert_eq!(
        p.logvar.to_data().to_vec::<f32>().unwrap(),
        vec![-30.0, 20.0]
    );
    let vae = tiny();
    let z = Tensor::<B, 4>::from_floats([[[[2.0, -1.0]]]], &device);
    let scaled = vae.scale_latents(z.clone());
    assert_eq!(
        scaled.to_data().to_vec::<f32>().unwrap(),
        vec![2.0 * 0.13025, -0.13025]
    );
    assert_close(
        "unscale(scale(z))",
        &vae.unscale_latents(scaled),
        &z.to_data(),
        1e-6,
    );
}

#[test]
fn full_size_sdxl_vae_has_the_reference_keys_and_shapes() {
    let vae = AutoencoderKL::<B>::new(&VaeConfig::sdxl_base_1_0(), &Default::default());
    let params = assert_same_keys(
        "SDXL VAE",
        &expected_keys::<B, _>(&vae),
        &key_list("vae/keys_sdxl_base_1_0.json"),
    );
    assert_eq!(params, 83_653_863, "SDXL VAE parameter count");
}
