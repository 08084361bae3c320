//! `cargo xtask shapes-model init`: the untrained shapes-world model as a diffusers SDXL pipeline
//! folder. Same architecture and code paths as SDXL (two CLIP text encoders and their tokenizers,
//! the SDXL UNet with `text_time` conditioning, an AutoencoderKL), at tiny sizes: 32 px images,
//! a 2x VAE (16x16x4 latents), a vocabulary of the world's words. Weights are random (seeded);
//! `assets/shapes-model/README.md` gives the training commands that turn this into the shipped
//! model.

use std::path::Path;

use anyhow::Context;
use burn::backend::Flex;
use burn::tensor::backend::Backend;
use sdxl_text::{ClipTextModel, ClipTextModelWithProjection};
use sdxl_unet::UNet2DConditionModel;
use sdxl_vae::AutoencoderKL;
use serde_json::{json, Value};
use sharpen_weights::save_module;
use sharpen_weights::text::load_clip_text_config;
use sharpen_weights::unet::{load_unet_config, save_unet};
use sharpen_weights::vae::load_vae_config;

/// Text encoder widths: the UNet's context is their concatenation.
const TEXT_HIDDEN: usize = 64;
const POOLED_DIM: usize = 32;
const TIME_EMBED_DIM: usize = 8;
/// Token sequence length (CLIP's is 77): the longest caption is 10 words + BOS + EOS.
const MAX_LENGTH: usize = 16;

fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).expect("JSON serialises");
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// SDXL's tokenizer_config / special_tokens_map with the tiny vocabulary's special ids.
fn tokenizer_folder(root: &Path, out: &Path, name: &str, vocab_size: usize) -> anyhow::Result<()> {
    let (vocab, merges) = shapes_world::clip_tokenizer_files();
    let dir = out.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("vocab.json"), vocab)?;
    std::fs::write(dir.join("merges.txt"), merges)?;
    let src = root.join("assets/clip-tokenizer").join(name);
    let config = std::fs::read_to_string(src.join("tokenizer_config.json"))
        .with_context(|| format!("reading {}", src.display()))?
        .replace("\"49406\"", &format!("\"{}\"", vocab_size - 2))
        .replace("\"49407\"", &format!("\"{}\"", vocab_size - 1))
        .replace(
            "\"model_max_length\": 77",
            &format!("\"model_max_length\": {MAX_LENGTH}"),
        );
    std::fs::write(dir.join("tokenizer_config.json"), config)?;
    std::fs::copy(
        src.join("special_tokens_map.json"),
        dir.join("special_tokens_map.json"),
    )?;
    Ok(())
}

fn text_config(vocab_size: usize, act: &str, projection: Option<usize>) -> Value {
    let mut c = json!({
        "architectures": [if projection.is_some() { "CLIPTextModelWithProjection" } else { "CLIPTextModel" }],
        "attention_dropout": 0.0,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "hidden_act": act,
        "hidden_size": TEXT_HIDDEN,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 4 * TEXT_HIDDEN,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": MAX_LENGTH,
        "model_type": "clip_text_model",
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "pad_token_id": 1,
        "vocab_size": vocab_size,
    });
    c["projection_dim"] = json!(projection.unwrap_or(TEXT_HIDDEN));
    c
}

fn unet_config() -> Value {
    json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": TIME_EMBED_DIM,
        "attention_head_dim": [2, 4, 4],
        "block_out_channels": [32, 64, 64],
        "center_input_sample": false,
        "cross_attention_dim": 2 * TEXT_HIDDEN,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 1,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-5,
        "norm_num_groups": 8,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": POOLED_DIM + 6 * TIME_EMBED_DIM,
        "sample_size": 16,
        "transformer_layers_per_block": [1, 1, 1],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "use_linear_projection": true
    })
}

fn vae_config() -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": [16, 32],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "force_upcast": true,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "mid_block_add_attention": true,
        "norm_num_groups": 8,
        "out_channels": 3,
        "sample_size": 32,
        // Placeholder: the autoencoder pretraining measures the latents' spread and rewrites it.
        "scaling_factor": 1.0,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "use_post_quant_conv": true,
        "use_quant_conv": true
    })
}

fn scheduler_config() -> Value {
    json!({
        "_class_name": "EulerDiscreteScheduler",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "interpolation_type": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "sample_max_value": 1.0,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "trained_betas": null,
        "use_karras_sigmas": false
    })
}

fn model_index() -> Value {
    json!({
        "_class_name": "StableDiffusionXLPipeline",
        "force_zeros_for_empty_prompt": true,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    })
}

/// Writes the untrained pipeline folder to `out` (which must not exist yet).
pub fn init(root: &Path, out: &Path, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        !out.exists(),
        "{} exists: choose another --out (nothing is overwritten)",
        out.display()
    );
    let n = shapes_world::clip_vocab_size();
    write_json(&out.join("model_index.json"), &model_index())?;
    write_json(
        &out.join("scheduler/scheduler_config.json"),
        &scheduler_config(),
    )?;
    tokenizer_folder(root, out, "tokenizer", n)?;
    tokenizer_folder(root, out, "tokenizer_2", n)?;
    write_json(
        &out.join("text_encoder/config.json"),
        &text_config(n, "quick_gelu", None),
    )?;
    write_json(
        &out.join("text_encoder_2/config.json"),
        &text_config(n, "gelu", Some(POOLED_DIM)),
    )?;
    write_json(&out.join("unet/config.json"), &unet_config())?;
    write_json(&out.join("vae/config.json"), &vae_config())?;

    let device = Default::default();
    // Each part from its own stream, so that changing one part's config leaves the others'
    // initial weights as they were.
    let seed_part =
        |part: u64| <Flex as Backend>::seed(&device, seed.wrapping_mul(31).wrapping_add(part));
    let key = |k: &str| k.to_string();
    seed_part(1);
    let te =
        ClipTextModel::<Flex>::new(&load_clip_text_config(&out.join("text_encoder"))?, &device);
    save_module(&out.join("text_encoder/model.safetensors"), &te, &key)?;
    seed_part(2);
    let te2 = ClipTextModelWithProjection::<Flex>::new(
        &load_clip_text_config(&out.join("text_encoder_2"))?,
        &device,
    );
    save_module(&out.join("text_encoder_2/model.safetensors"), &te2, &key)?;
    seed_part(3);
    let unet = UNet2DConditionModel::<Flex>::new(&load_unet_config(&out.join("unet"))?, &device);
    save_unet(&out.join("unet"), &unet)?;
    seed_part(4);
    let vae = AutoencoderKL::<Flex>::new(&load_vae_config(&out.join("vae"))?, &device);
    save_module(
        &out.join("vae/diffusion_pytorch_model.safetensors"),
        &vae,
        &key,
    )?;

    use burn::module::Module;
    tracing::info!(
        vocabulary = n,
        text_encoder = te.num_params(),
        text_encoder_2 = te2.num_params(),
        unet = unet.num_params(),
        vae = vae.num_params(),
        "parameters"
    );
    Ok(())
}

/// Writes `count` training-split examples as an HF imagefolder plus a prompt list.
pub fn sample(out: &Path, count: u64, size: usize, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        !out.exists(),
        "{} exists: choose another --out (nothing is overwritten)",
        out.display()
    );
    let world = shapes_world::ShapesWorld {
        split: shapes_world::Split::Train,
        size,
        seed,
    };
    std::fs::create_dir_all(out.join("images"))?;
    let mut metadata = String::new();
    let mut prompts = String::new();
    for i in 0..count {
        let (scene, image) = world.get(i);
        let name = format!("images/{i:04}.png");
        let file = std::fs::File::create(out.join(&name))?;
        let mut encoder =
            png::Encoder::new(std::io::BufWriter::new(file), size as u32, size as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .write_header()?
            .write_image_data(&image.rgb)
            .with_context(|| format!("writing {name}"))?;
        let caption = scene.to_string();
        metadata.push_str(&serde_json::to_string(
            &json!({"file_name": name, "text": caption}),
        )?);
        metadata.push('\n');
        prompts.push_str(&caption);
        prompts.push('\n');
    }
    std::fs::write(out.join("metadata.jsonl"), metadata)?;
    std::fs::write(out.join("prompts.txt"), prompts)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sharpen_pipeline::SdxlPipeline;
    use sharpen_weights::LoadOptions;

    #[test]
    fn init_writes_a_loadable_pipeline_whose_tokenizers_know_the_words() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("shapes");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        init(&root, &out, 0).unwrap();
        assert!(init(&root, &out, 0).is_err(), "never overwrites");
        let pipe =
            SdxlPipeline::<Flex>::load(&out, &LoadOptions::default(), &Default::default()).unwrap();
        assert_eq!(pipe.vae.config.downscale(), 2);
        let n = shapes_world::clip_vocab_size() as u32;
        for tok in [&pipe.tokenizers.tokenizer, &pipe.tokenizers.tokenizer_2] {
            let ids = tok
                .encode("a red circle to the left of a blue square")
                .unwrap();
            // <bos>, ten one-token words, <eos>, then padding.
            assert_eq!(ids[0], n - 2);
            assert_eq!(ids[11], n - 1);
            assert!(ids[1..11].iter().all(|&id| id < n - 2), "{ids:?}");
        }
        assert_eq!(
            pipe.tokenizers.tokenizer.encode("a").unwrap()[3],
            n - 1,
            "pads with eos"
        );
        assert_eq!(
            pipe.tokenizers.tokenizer_2.encode("a").unwrap()[3],
            0,
            "pads with `!`"
        );
        // The conditioning has the UNet's widths.
        let embeds = pipe
            .text_encoders
            .encode(
                &pipe.tokenizers,
                sdxl_text::PromptBatch::new(&["a red circle"]),
                None,
            )
            .unwrap();
        assert_eq!(
            embeds.prompt_embeds.dims(),
            [1, MAX_LENGTH, 2 * TEXT_HIDDEN]
        );
        assert_eq!(embeds.pooled_prompt_embeds.dims(), [1, POOLED_DIM]);
    }

    #[test]
    fn sample_is_an_imagefolder_of_the_training_split() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("s");
        sample(&out, 5, 32, 0).unwrap();
        let meta = std::fs::read_to_string(out.join("metadata.jsonl")).unwrap();
        let prompts = std::fs::read_to_string(out.join("prompts.txt")).unwrap();
        assert_eq!(meta.lines().count(), 5);
        for (line, prompt) in meta.lines().zip(prompts.lines()) {
            let row: Value = serde_json::from_str(line).unwrap();
            assert_eq!(row["text"], prompt);
            let scene = shapes_world::Scene::parse(prompt).unwrap();
            assert!(!shapes_world::is_held_out(&scene));
            let decoder = png::Decoder::new(std::io::BufReader::new(
                std::fs::File::open(out.join(row["file_name"].as_str().unwrap())).unwrap(),
            ));
            let mut reader = decoder.read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            let info = reader.next_frame(&mut buf).unwrap();
            assert_eq!((info.width, info.height), (32, 32));
            let score = shapes_world::score(&buf[..info.buffer_size()], 32, prompt);
            assert!(score.all_correct, "{prompt}");
        }
    }
}
