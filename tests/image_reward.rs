//! ImageReward against image-reward 1.5 (`score_gard`) on a tiny random-weight model saved as
//! `ImageReward.pt` is, with BLIP's tokenizer (transformers 4.46 `BertTokenizer` + `[DEC]`,
//! `[ENC]`) on a synthetic WordPiece vocabulary; full-size key list; wrong checkpoints.

use burn::tensor::{Int, Tensor, TensorData};
use serde::Deserialize;
use sharpen_blip::{ImageRewardConfig, ImageRewardModel};
use sharpen_rewards::{ImageRewardScore, Reward};
use sharpen_tests::{
    assert_close, assert_same_keys, fixture, key_list, Reference, TestBackend as B,
};
use sharpen_weights::expected_keys;
use sharpen_weights::image_reward::{image_reward_checkpoint_key, load_bert_tokenizer};

const TOL: f32 = 1e-4;

#[derive(Deserialize)]
struct Cases {
    prompts: Vec<String>,
    hard: Vec<String>,
    vocab_size: usize,
}

fn cases() -> Cases {
    serde_json::from_str(&std::fs::read_to_string(fixture("image_reward/cases.json")).unwrap())
        .unwrap()
}

fn reference() -> Reference {
    Reference::open("image_reward/outputs.safetensors")
}

fn reward() -> ImageRewardScore<B> {
    ImageRewardScore::load(
        &fixture("image_reward/tiny/ImageReward.pt"),
        None,
        None,
        &Default::default(),
    )
    .unwrap()
}

fn image(r: &Reference, key: &str) -> Tensor<B, 4> {
    r.image(key)
}

#[test]
fn tokenizer_matches_blips_bert_tokenizer() {
    let c = cases();
    let r = reference();
    let tok = load_bert_tokenizer(&fixture("image_reward/tiny/vocab.txt"), 35).unwrap();
    assert_eq!(tok.vocab_size(), c.vocab_size, "vocabulary + [DEC] + [ENC]");
    let hard: Vec<&str> = c.hard.iter().map(String::as_str).collect();
    let ours = tok.encode_batch(&hard).unwrap();
    let (theirs, _) = r.ids("hard_ids");
    for (i, row) in ours.ids.iter().enumerate() {
        let expected: Vec<u32> = theirs[i * 35..(i + 1) * 35]
            .iter()
            .map(|&t| t as u32)
            .collect();
        assert_eq!(row, &expected, "{:?}", c.hard[i]);
    }
    let prompts: Vec<&str> = c.prompts.iter().map(String::as_str).collect();
    let enc = tok.encode_batch(&prompts).unwrap();
    let (mask, _) = r.ids("attention_mask");
    let mask: Vec<u32> = mask.iter().map(|&m| m as u32).collect();
    assert_eq!(enc.attention_mask.concat(), mask);
}

#[test]
fn rewards_match_score_gard() {
    let c = cases();
    let r = reference();
    let reward = reward();
    let device = Default::default();
    let pixels: Tensor<B, 4> = Tensor::from_data(r.data("pixels"), &device);
    // The ViT tokens the text encoder reads.
    assert_close(
        "image embeds",
        &reward.model.blip.visual_encoder.forward(pixels.clone()),
        &r.data("image_embeds"),
        TOL,
    );
    let (ids, shape) = r.ids("input_ids");
    let ids: Tensor<B, 2, Int> =
        Tensor::from_data(TensorData::new(ids, [shape[0], shape[1]]), &device);
    let (mask, _) = r.ids("attention_mask");
    let mask: Tensor<B, 2> = Tensor::from_data(
        TensorData::new(
            mask.iter().map(|&m| m as f32).collect::<Vec<_>>(),
            [shape[0], shape[1]],
        ),
        &device,
    );
    let tokens = reward.model.blip.visual_encoder.forward(pixels.clone());
    assert_close(
        "text encoder last_hidden_state",
        &reward
            .model
            .blip
            .text_encoder
            .forward(ids.clone(), mask.clone(), tokens),
        &r.data("text_hidden"),
        TOL,
    );
    assert_close(
        "rewards (model)",
        &reward.model.forward(pixels, ids, mask),
        &r.data("rewards"),
        TOL,
    );
    // End to end from the photos (preprocessing on float tensors, our tokenizer).
    let scores = Tensor::cat(
        ["photo.astronaut", "photo.chelsea"]
            .iter()
            .zip(&c.prompts)
            .map(|(k, p)| reward.score(image(&r, k), &[p.as_str()]).unwrap())
            .collect(),
        0,
    );
    assert_close(
        "rewards (photos, end to end)",
        &scores,
        &r.data("rewards"),
        TOL,
    );
    assert_eq!(reward.info().name, "imagereward");
}

#[test]
fn full_size_model_has_the_reference_keys() {
    let model = ImageRewardModel::<B>::new(&ImageRewardConfig::v1(), &Default::default());
    let ours = expected_keys::<B, _>(&model)
        .into_iter()
        .map(|(k, s)| (image_reward_checkpoint_key(&k), s))
        .collect();
    let mut reference = key_list("image_reward/keys_image_reward_v1.json");
    // Used for retrieval pretraining, not for the reward; accepted and ignored when loading.
    reference.retain(|k, _| {
        !(k.starts_with("blip.vision_proj.")
            || k.starts_with("blip.text_proj.")
            || k.ends_with("position_ids"))
    });
    let n = assert_same_keys("ImageReward v1", &ours, &reference);
    println!("ImageReward v1 (scoring path): {n} parameters");
}

#[test]
fn wrong_checkpoints_are_clear_errors() {
    let device = Default::default();
    let err = ImageRewardScore::<B>::load(&fixture("clip/aesthetic.pth"), None, None, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("aesthetic.pth") && err.contains("not an ImageReward checkpoint"),
        "{err}"
    );
    let err = ImageRewardScore::<B>::load(&fixture("image_reward/tiny"), None, None, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("ImageReward.pt file"), "{err}");
    let err = ImageRewardScore::<B>::load(
        &fixture("image_reward/tiny/ImageReward.pt"),
        Some(&fixture("clip/openai-tiny/config.json")),
        None,
        &device,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("config.json"), "{err}");
    let err = ImageRewardScore::<B>::load(
        &fixture("image_reward/tiny/ImageReward.pt"),
        None,
        Some(&fixture("clip/openai-tiny/vocab.json")),
        &device,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("vocab.json") && err.contains("[CLS]"), "{err}");
}

/// The package resizes the 8-bit photo with PIL and rounds; we resize the float image. The pixel
/// and reward differences that leaves are measured here and kept small.
#[test]
fn pil_rounding_difference_is_measured() {
    let c = cases();
    let r = reference();
    let reward = reward();
    let ours = Tensor::cat(
        ["photo.astronaut", "photo.chelsea"]
            .iter()
            .map(|k| reward.preprocess.apply(image(&r, k)))
            .collect(),
        0,
    );
    assert_close(
        "pixels (torchvision, float64)",
        &ours,
        &r.data("pixels"),
        1e-5,
    );
    let pixel_diff = sharpen_tests::max_abs_diff(&ours, &r.data("pixels_pil"));
    let prompts: Vec<&str> = c.prompts.iter().map(String::as_str).collect();
    let ours_rewards = Tensor::cat(
        ["photo.astronaut", "photo.chelsea"]
            .iter()
            .zip(&prompts)
            .map(|(k, p)| reward.score(image(&r, k), &[*p]).unwrap())
            .collect(),
        0,
    );
    let reward_diff = sharpen_tests::max_abs_diff(&ours_rewards, &r.data("rewards_pil"));
    println!(
        "ImageReward vs the package's PIL preprocessing: pixels max abs diff {pixel_diff:.4} \
         (normalised units), reward max abs diff {reward_diff:.2e}"
    );
    assert!(pixel_diff > 0.0 && pixel_diff < 0.5, "{pixel_diff}");
    assert!(reward_diff < 0.05, "{reward_diff}");
}
