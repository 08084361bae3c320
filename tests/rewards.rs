//! Rewards against their references.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use serde::Deserialize;
use sharpen_rewards::{to_rgb8, JpegReward, JpegRewardKind, Reward};
use sharpen_tests::{fixture, Reference, TestBackend as B};

#[derive(Deserialize)]
struct Sizes {
    #[serde(rename = "kB")]
    kb: BTreeMap<String, f64>,
}

/// DDPO's JPEG rewards against Pillow (libjpeg-turbo) at quality 95: the two real photos
/// (scikit-image astronaut 512x512, chelsea 451x300) and their small versions within 3%, flat
/// colour and a gradient byte-exact, uniform noise (the worst case for a different DCT and chroma
/// downsampling) within 8%; the ordering of sizes is the same.
#[test]
fn jpeg_rewards_match_pillow_within_a_few_percent() {
    let text = std::fs::read_to_string(fixture("rewards/jpeg_sizes.json")).unwrap();
    let sizes: Sizes = serde_json::from_str(&text).unwrap();
    let r = Reference::open("rewards/jpeg_images.safetensors");
    let compress = JpegReward {
        kind: JpegRewardKind::Compressibility,
    };
    let incompress = JpegReward {
        kind: JpegRewardKind::Incompressibility,
    };
    let mut ours = Vec::new();
    for (name, &want) in &sizes.kb {
        let img: Tensor<B, 3> = Tensor::from_data(r.data(name), &Default::default());
        let img = img.unsqueeze::<4>();
        // k/255 values (stored as f16) round back to the reference's bytes.
        let rgb = to_rgb8(img.clone());
        assert_eq!(rgb[0].len(), img.dims()[2] * img.dims()[3] * 3);
        if name == "flat_64" {
            assert!(
                rgb[0].chunks(3).all(|p| p == [200, 30, 90]),
                "to_rgb8 gives the bytes back"
            );
        }
        let got = Reward::<B>::score(&incompress, img.clone(), &["x"])
            .unwrap()
            .into_scalar();
        let neg = Reward::<B>::score(&compress, img, &["x"])
            .unwrap()
            .into_scalar();
        assert_eq!(neg, -got);
        let rel = (got as f64 - want).abs() / want;
        println!(
            "{name}: {got:.3} kB vs Pillow {want:.3} kB ({:+.1}%)",
            100.0 * (got as f64 - want) / want
        );
        let tolerance = if name.starts_with("noise") {
            0.08
        } else {
            0.03
        };
        assert!(rel <= tolerance, "{name}: {got} kB vs Pillow {want} kB");
        ours.push((want, got));
    }
    let mut by_ref = ours.clone();
    by_ref.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut by_ours = ours;
    by_ours.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(by_ref, by_ours, "same ordering as Pillow");
}

#[test]
fn rewards_check_the_batch() {
    let images = Tensor::<B, 4>::zeros([2, 3, 8, 8], &Default::default());
    let err = Reward::<B>::score(
        &JpegReward {
            kind: JpegRewardKind::Compressibility,
        },
        images,
        &["one"],
    )
    .unwrap_err();
    assert!(err.to_string().contains("2 images but 1 prompts"), "{err}");
}
