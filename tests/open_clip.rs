//! open_clip checkpoints (hub folder and HPSv2's `{"state_dict": ...}` file) against open_clip
//! 3.3: features, cosine, HPSv2's score through its resize-and-pad preprocessing; the key mapping
//! against the full-size open_clip key lists.

use std::collections::BTreeMap;

use burn::tensor::{Int, Tensor, TensorData};
use sharpen_clip::{ClipModel, ClipModelConfig, OpenClipModelCfg};
use sharpen_rewards::{ClipScore, Reward};
use sharpen_tests::{
    assert_close, assert_same_keys, fixture, key_list, Reference, TestBackend as B,
};
use sharpen_weights::expected_keys;
use sharpen_weights::open_clip::{load_open_clip_model, open_clip_key};

const TOL: f32 = 1e-4;
const PROMPTS: [&str; 2] = ["an astronaut in a white suit", "a cat sitting on a chair"];

fn reference() -> Reference {
    Reference::open("open_clip/outputs.safetensors")
}

fn image(r: &Reference, key: &str) -> Tensor<B, 4> {
    r.image(key)
}

#[test]
fn open_clip_hub_folder_matches_open_clip() {
    let r = reference();
    let device = Default::default();
    let dir = fixture("open_clip/open_clip-tiny");
    let model = load_open_clip_model::<B>(&dir, None, None, &device).unwrap();
    assert!((model.logit_scale - 100f64.ln()).abs() < 1e-2);
    let (ids, shape) = r.ids("input_ids");
    let ids: Tensor<B, 2, Int> =
        Tensor::from_data(TensorData::new(ids, [shape[0], shape[1]]), &device);
    assert_close(
        "text features",
        &model.text_embeds(ids),
        &r.data("text_features"),
        TOL,
    );
    let reward = ClipScore::<B>::load_open_clip(&dir, None, 1.0, &device).unwrap();
    let images = image(&r, "at_size");
    assert_close(
        "image features",
        &reward
            .model
            .image_embeds(reward.preprocess.apply(images.clone())),
        &r.data("image_features"),
        TOL,
    );
    // Through the reward: our shipped tokenizer (padding differs from open_clip's zeros, the
    // pooled end-of-text position does not).
    let cos = reward.score(images, &PROMPTS).unwrap();
    assert_close("clip (open_clip) cosine", &cos, &r.data("cosine"), TOL);
    let ours = reward.tokenizer.encode_batch(&PROMPTS).unwrap();
    let (theirs, _) = r.ids("input_ids");
    for (i, row) in ours.iter().enumerate() {
        let theirs = &theirs[i * 77..(i + 1) * 77];
        let end = theirs.iter().position(|&t| t == 49407).unwrap();
        let ours: Vec<i64> = row[..=end].iter().map(|&t| t as i64).collect();
        assert_eq!(ours, theirs[..=end].to_vec(), "prompt {i}");
    }
}

#[test]
fn hpsv2_checkpoint_and_preprocessing_match() {
    let r = reference();
    let device = Default::default();
    let file = fixture("open_clip/open_clip-tiny/hps-tiny.pt");
    let hps = ClipScore::<B>::load_hpsv2(&file, None, &device).unwrap();
    assert_eq!(hps.info().name, "hpsv2");
    let photos = Tensor::cat(
        vec![
            hps.preprocess.apply(image(&r, "photo.astronaut")),
            hps.preprocess.apply(image(&r, "photo.chelsea")),
        ],
        0,
    );
    assert_close(
        "HPSv2 pixels (float64 reference)",
        &photos,
        &r.data("hps_pixels"),
        1e-5,
    );
    // Scores straight from the photos (different sizes, so one at a time).
    let mut scores = Vec::new();
    for (i, key) in ["photo.astronaut", "photo.chelsea"].iter().enumerate() {
        let s = hps.score(image(&r, key), &PROMPTS[i..=i]).unwrap();
        scores.push(s);
    }
    assert_close(
        "HPSv2 score",
        &Tensor::cat(scores, 0),
        &r.data("hps_score"),
        TOL,
    );
    // A folder without open_clip_config.json is not an HPS checkpoint.
    let err = ClipScore::<B>::load_hpsv2(&fixture("clip/openai-tiny"), None, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("HPS checkpoint file"), "{err}");
    // Another kind of checkpoint given as open_clip.
    let err = load_open_clip_model::<B>(
        &fixture("clip/aesthetic.pth"),
        Some("ViT-H-14"),
        None,
        &device,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("aesthetic.pth") && err.contains("not an open_clip CLIP checkpoint"),
        "{err}"
    );
    // The tiny checkpoint is not a ViT-H/14: asked for by name, the mismatch is reported.
    let err = ClipScore::<B>::load_hpsv2(&file, Some("ViT-H-14"), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("mismatched shapes") && err.contains("hps-tiny.pt"),
        "{err}"
    );
}

#[test]
fn full_size_open_clip_keys_map_onto_clip_model() {
    let device = Default::default();
    for (file, arch) in [
        ("open_clip/keys_open_clip_vit_h_14.json", "ViT-H-14"),
        ("open_clip/keys_open_clip_vit_bigg_14.json", "ViT-bigG-14"),
    ] {
        let mapped: BTreeMap<String, Vec<usize>> = key_list(file)
            .into_iter()
            .flat_map(|(k, shape)| {
                open_clip_key(&k)
                    .unwrap_or_else(|| panic!("{file}: no place for `{k}`"))
                    .into_iter()
                    .map(move |(target, derived)| (target, derived.shape(&shape)))
            })
            .collect();
        let config = ClipModelConfig::try_from(OpenClipModelCfg::named(arch).unwrap()).unwrap();
        let mut ours = expected_keys::<B, _>(&ClipModel::<B>::new(&config, &device));
        ours.insert("logit_scale".into(), vec![]);
        let n = assert_same_keys(arch, &ours, &mapped);
        println!("{arch}: {n} parameters as CLIPModel");
    }
}
