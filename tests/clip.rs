//! CLIP rewards against transformers 5.24 (`CLIPModel`, its image processors) and the LAION
//! aesthetic predictor's MLP, on tiny random-weight models saved in the layouts users download;
//! preprocessing of real photos against torchvision; full-size key lists.

use burn::tensor::{Tensor, TensorData};
use sharpen_clip::{ClipModel, ClipModelConfig, ClipPreprocess, Fit};
use sharpen_rewards::{AestheticReward, ClipScore, Reward};
use sharpen_tests::{
    assert_close, assert_same_keys, fixture, key_list, max_abs_diff, Reference, TestBackend as B,
};
use sharpen_weights::clip::{load_aesthetic_mlp, load_clip_model, load_clip_preprocess};
use sharpen_weights::{expected_keys, LoadOptions};

const TOL: f32 = 1e-4;
const PROMPTS: [&str; 2] = ["an astronaut in a white suit", "a cat sitting on a chair"];
const MODELS: [&str; 2] = ["openai-tiny", "laion-tiny"];

fn reference() -> Reference {
    Reference::open("clip/outputs.safetensors")
}

fn image(r: &Reference, key: &str) -> Tensor<B, 4> {
    r.image(key)
}

fn photos(r: &Reference) -> Vec<Tensor<B, 4>> {
    ["astronaut", "chelsea"]
        .iter()
        .map(|k| image(r, &format!("photo.{k}")))
        .collect()
}

fn dir(name: &str) -> std::path::PathBuf {
    fixture(&format!("clip/{name}"))
}

#[test]
fn embeddings_and_scores_match_transformers_at_input_size() {
    let r = reference();
    let device = Default::default();
    for name in MODELS {
        let clip = ClipScore::<B>::load_clip(&dir(name), 1.0, &device).unwrap();
        let images = image(&r, &format!("{name}.at_size"));
        let pixels = clip.preprocess.apply(images.clone());
        assert_close(
            &format!("{name} image_embeds"),
            &clip.model.image_embeds(pixels),
            &r.data(&format!("{name}.image_embeds")),
            TOL,
        );
        let ids = Tensor::from_data(TensorData::new(r.ids("input_ids").0, [2, 77]), &device);
        assert_close(
            &format!("{name} text_embeds"),
            &clip.model.text_embeds(ids),
            &r.data(&format!("{name}.text_embeds")),
            TOL,
        );
        let cos = clip.score(images.clone(), &PROMPTS).unwrap();
        assert_close(
            &format!("{name} cosine"),
            &cos,
            &r.data(&format!("{name}.cosine")),
            TOL,
        );

        let pick = ClipScore::<B>::load_pickscore(&dir(name), &device).unwrap();
        let scores = pick.score(images, &PROMPTS).unwrap();
        assert_close(
            &format!("{name} pickscore"),
            &scores,
            &r.data(&format!("{name}.pickscore")),
            TOL,
        );
        assert_eq!(pick.info().name, "pickscore");
    }
}

#[test]
fn aesthetic_matches_the_reference_mlp() {
    let r = reference();
    let device = Default::default();
    let reward =
        AestheticReward::<B>::load(&fixture("clip/aesthetic.pth"), &dir("openai-tiny"), &device)
            .unwrap();
    let images = image(&r, "openai-tiny.at_size");
    let scores = reward.score(images, &["", ""]).unwrap();
    assert_close("aesthetic", &scores, &r.data("openai-tiny.aesthetic"), TOL);
    let photo = Tensor::cat(
        vec![
            reward.preprocess.apply(photos(&r)[0].clone()),
            reward.preprocess.apply(photos(&r)[1].clone()),
        ],
        0,
    );
    let scores = reward.head.forward(reward.clip.image_embeds(photo));
    assert_close(
        "aesthetic, photos",
        &scores,
        &r.data("openai-tiny.photo_aesthetic"),
        TOL,
    );
}

#[test]
fn preprocessing_of_real_photos_equals_torchvision() {
    let r = reference();
    for name in MODELS {
        let preprocess = load_clip_preprocess(&dir(name)).unwrap();
        let ours = Tensor::cat(
            photos(&r)
                .into_iter()
                .map(|p| preprocess.apply(p))
                .collect(),
            0,
        );
        assert_close(
            &format!("{name} pixels (torchvision, float64)"),
            &ours,
            &r.data(&format!("{name}.photo_pixels")),
            1e-5,
        );
        // torch's float32 kernel rounds on its own (up to 1.4e-5 in [0, 1] units).
        assert_close(
            &format!("{name} pixels (torchvision, float32)"),
            &ours,
            &r.data(&format!("{name}.photo_pixels_f32")),
            1e-4,
        );
    }
    let pad = ClipPreprocess {
        fit: Fit::LongestSideThenPad,
        ..ClipPreprocess::clip(224)
    };
    let chelsea = photos(&r)[1].clone();
    assert_close(
        "HPSv2 resize-longer-side-and-pad (chelsea)",
        &pad.apply(chelsea).reshape([3, 224, 224]),
        &r.data("pad224.chelsea"),
        1e-5,
    );
}

/// transformers' processors resize 8-bit images (uint8 tensors, or PIL) and round; we resize the
/// float image. The pixel and score differences that leaves are measured here and kept small.
#[test]
fn processor_rounding_difference_is_measured() {
    let r = reference();
    let device = Default::default();
    for name in MODELS {
        let clip = ClipScore::<B>::load_clip(&dir(name), 1.0, &device).unwrap();
        let ours = Tensor::cat(
            photos(&r)
                .into_iter()
                .map(|p| clip.preprocess.apply(p))
                .collect(),
            0,
        );
        let ids = Tensor::from_data(TensorData::new(r.ids("input_ids").0, [2, 77]), &device);
        let text = clip.model.text_embeds(ids);
        let cos = sharpen_clip::cosine(clip.model.image_embeds(ours.clone()), text);
        assert_close(
            &format!("{name} photo cosine (torchvision float)"),
            &cos,
            &r.data(&format!("{name}.photo_cosine")),
            TOL,
        );
        for processor in ["processor", "processor_pil"] {
            let pixel_diff = max_abs_diff(&ours, &r.data(&format!("{name}.{processor}_pixels")));
            let score_diff = max_abs_diff(&cos, &r.data(&format!("{name}.{processor}_cosine")));
            println!(
                "{name} vs transformers {processor}: pixels max abs diff {pixel_diff:.4} \
                 (normalised units), cosine max abs diff {score_diff:.2e}"
            );
            // Mostly rounding to 8 bits; the largest at edges, where bicubic overshoot is clipped
            // to [0, 255].
            assert!(
                pixel_diff > 0.0 && pixel_diff < 0.5,
                "{processor}: {pixel_diff}"
            );
            assert!(score_diff < 0.02, "{processor}: {score_diff}");
        }
    }
}

#[test]
fn full_size_clip_models_have_the_reference_keys() {
    let device = Default::default();
    for (file, config) in [
        (
            "clip/keys_clip_vit_l_14.json",
            ClipModelConfig::openai_vit_l_14(),
        ),
        (
            "clip/keys_clip_vit_h_14.json",
            ClipModelConfig::laion_vit_h_14(),
        ),
    ] {
        let model = ClipModel::<B>::new(&config, &device);
        let mut ours = expected_keys::<B, _>(&model);
        // A 0-d tensor in checkpoints, loaded on its own.
        ours.insert("logit_scale".to_string(), vec![]);
        let n = assert_same_keys(file, &ours, &key_list(file));
        println!("{file}: {n} parameters");
    }
    let head = sharpen_clip::AestheticMlp::<B>::new(768, &device);
    let ours: std::collections::BTreeMap<_, _> = expected_keys::<B, _>(&head)
        .into_iter()
        .map(|(k, s)| {
            let mut parts: Vec<String> = k.split('.').map(str::to_string).collect();
            let i: usize = parts[1].parse().unwrap();
            parts[1] = sharpen_clip::AestheticMlp::<B>::checkpoint_index(i)
                .unwrap()
                .to_string();
            (parts.join("."), s)
        })
        .collect();
    assert_same_keys("aesthetic", &ours, &key_list("clip/keys_aesthetic.json"));
}

#[test]
fn a_checkpoint_of_the_wrong_kind_is_a_clear_error() {
    let device = Default::default();
    // The aesthetic .pth given to `clip`.
    let err = ClipScore::<B>::load_clip(&fixture("clip/aesthetic.pth"), 1.0, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("aesthetic.pth") && err.contains("CLIPModel folder"),
        "{err}"
    );
    // A CLIP folder given as the aesthetic head, and a CLIP checkpoint file.
    let err = AestheticReward::<B>::load(&dir("openai-tiny"), &dir("openai-tiny"), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("is a folder"), "{err}");
    let err = load_aesthetic_mlp::<B>(&dir("openai-tiny").join("model.safetensors"), 768, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("layers.0.weight") && err.contains("LAION aesthetic predictor"),
        "{err}"
    );
    // A folder whose weights belong to another CLIP (config of one, weights of the other).
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(dir("openai-tiny")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    std::fs::copy(
        dir("laion-tiny").join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let err = load_clip_model::<B>(tmp.path(), &LoadOptions::default(), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("text_model.embeddings.token_embedding.weight: model expects [49408, 16], file has [49408, 24]")
            && err.contains("vision_model.encoder.layers.2.mlp.fc1.weight"),
        "{err}"
    );
    // A .pth that is not a torch checkpoint.
    let bogus = tmp.path().join("bogus.pth");
    std::fs::write(&bogus, b"not a pickle").unwrap();
    let err = load_aesthetic_mlp::<B>(&bogus, 768, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("bogus.pth"), "{err}");
}

/// PickScore v1's repository has weights and config only: the shipped tokenizer and CLIP's
/// standard preprocessing stand in, and give the same scores as the full folder.
#[test]
fn a_weights_only_folder_uses_the_standard_processor() {
    let r = reference();
    let device = Default::default();
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(dir("laion-tiny").join(f), tmp.path().join(f)).unwrap();
    }
    let bare = ClipScore::<B>::load_pickscore(tmp.path(), &device).unwrap();
    let full = ClipScore::<B>::load_pickscore(&dir("laion-tiny"), &device).unwrap();
    assert_eq!(bare.preprocess, full.preprocess);
    let images = image(&r, "laion-tiny.at_size");
    let a = bare.score(images.clone(), &PROMPTS).unwrap();
    assert_close(
        "bare folder pickscore",
        &a,
        &r.data("laion-tiny.pickscore"),
        TOL,
    );
    assert_eq!(
        bare.tokenizer.encode_batch(&PROMPTS).unwrap(),
        full.tokenizer.encode_batch(&PROMPTS).unwrap()
    );
}

/// The CLIP rewards are differentiable: preprocessing included, the score's gradient reaches the
/// image, and agrees with a finite difference.
#[test]
fn clip_score_gradients_reach_the_image() {
    use burn::backend::Autodiff;
    type A = Autodiff<B>;
    let device = Default::default();
    let reward = ClipScore::<A>::load_clip(&dir("laion-tiny"), 1.0, &device).unwrap();
    let r = reference();
    // A non-square image, so the resize and the crop are on the path.
    let base = image(&r, "laion-tiny.at_size").slice([0..1, 0..3, 0..96, 0..80]);
    let data = base.to_data();
    let x = Tensor::<A, 4>::from_data(data.clone(), &device).require_grad();
    let score = reward.score(x.clone(), &PROMPTS[..1]).unwrap();
    let grads = score.sum().backward();
    let g = x.grad(&grads).unwrap();
    let g_values = g.to_data().to_vec::<f32>().unwrap();
    assert!(g_values.iter().all(|v| v.is_finite()));
    let (i, gi) =
        g_values.iter().enumerate().fold(
            (0, 0f32),
            |b, (i, &v)| if v.abs() > b.1.abs() { (i, v) } else { b },
        );
    assert!(gi.abs() > 0.0);
    let eps = 1e-2f32;
    let bumped = |d: f32| {
        let mut v = data.clone().to_vec::<f32>().unwrap();
        v[i] += d;
        let t = Tensor::<A, 1>::from_data(TensorData::new(v, [data.num_elements()]), &device)
            .reshape([1, 3, 96, 80]);
        reward.score(t, &PROMPTS[..1]).unwrap().into_scalar()
    };
    let fd = (bumped(eps) - bumped(-eps)) / (2.0 * eps);
    println!("d score / d pixel {i}: autodiff {gi:.4e}, finite difference {fd:.4e}");
    assert!((fd - gi).abs() <= 0.05 * gi.abs() + 1e-5, "{fd} vs {gi}");
}
