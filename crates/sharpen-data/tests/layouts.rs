//! Each loader reads a committed sample in its published layout (written by
//! tools/golden/gen_data.py with Pillow); bad rows and corrupt files are skipped and counted.

use std::path::{Path, PathBuf};

use sharpen_data::{decode_rgb, load_prompts, ImageFolder};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/data")
        .join(rel)
}

#[test]
fn images_decode_as_pillow_decodes_them() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("expected.json")).unwrap()).unwrap();
    for (rel, e) in expected.as_object().unwrap() {
        let img = decode_rgb(&data(rel)).unwrap();
        assert_eq!(img.width as u64, e["width"].as_u64().unwrap(), "{rel}");
        assert_eq!(img.height as u64, e["height"].as_u64().unwrap(), "{rel}");
        for c in 0..3 {
            let mean = img
                .rgb
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&v| v as f64)
                .sum::<f64>()
                / (img.width * img.height) as f64;
            let want = e["mean"][c].as_f64().unwrap();
            assert!(
                (mean - want).abs() < 1.0,
                "{rel} channel {c}: {mean} vs Pillow {want}"
            );
        }
    }
    let err = decode_rgb(&data("imagefolder_txt/broken.png")).unwrap_err();
    assert!(err.to_string().contains("broken.png"), "{err}");
}

#[test]
fn image_folder_with_txt_captions() {
    let folder = ImageFolder::open(&data("imagefolder_txt"), None).unwrap();
    let names: Vec<_> = folder
        .items
        .iter()
        .map(|i| i.path.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["a.png", "b.jpg", "broken.png", "c.png"]);
    assert_eq!(folder.skipped.count, 1, "{:?}", folder.skipped);
    assert!(folder.skipped.reasons[0].contains("no_caption.png"));
    let (pixels, caption) = folder.load(0, 16, false).unwrap();
    assert_eq!(caption, "a red square to the left of a blue square");
    assert_eq!(pixels.len(), 16 * 16 * 3);
    // Covered and centre-cropped: red on the left edge, blue on the right.
    assert_eq!(&pixels[..3], &[255, 0, 0]);
    assert_eq!(&pixels[15 * 3..16 * 3], &[0, 0, 255]);
    let (flipped, _) = folder.load(0, 16, true).unwrap();
    assert_eq!(&flipped[..3], &[0, 0, 255]);
    assert!(
        folder.load(2, 16, false).is_err(),
        "the corrupt file is an error the caller counts"
    );
    let (grey, _) = folder.load(3, 8, false).unwrap();
    assert!(grey.iter().all(|&v| v == 128), "grey PNG expands to RGB");
}

#[test]
fn image_folder_with_metadata_jsonl() {
    let folder = ImageFolder::open(&data("imagefolder_metadata"), None).unwrap();
    let captions: Vec<_> = folder.items.iter().map(|i| i.caption.as_str()).collect();
    assert_eq!(captions, ["caption 0", "caption 1", "caption 2"]);
    assert_eq!(
        folder.skipped.count, 3,
        "malformed line, missing file, wrong column: {:?}",
        folder.skipped
    );
    let other = ImageFolder::open(&data("imagefolder_metadata"), Some("caption")).unwrap();
    assert_eq!(other.items.len(), 1, "the one row with a `caption` column");
}

#[test]
fn prompt_lists() {
    let (txt, s) = load_prompts(&data("prompts/prompts.txt"), None).unwrap();
    assert_eq!(
        txt,
        ["a red circle", "a blue square above a green triangle"]
    );
    assert_eq!(s.count, 0);
    let (jsonl, s) = load_prompts(&data("prompts/prompts.jsonl"), None).unwrap();
    assert_eq!(jsonl, ["a red circle", "a blue square"]);
    assert_eq!(s.count, 1);
    let (csv, s) = load_prompts(&data("prompts/drawbench.csv"), None).unwrap();
    assert_eq!(
        csv,
        [
            "A red colored car, parked.",
            "A black apple and a green backpack.",
            "Two \"cats\" sleeping"
        ]
    );
    assert_eq!(s.count, 1, "the empty prompt");
    let err = load_prompts(&data("prompts/drawbench.csv"), Some("Prompt")).unwrap_err();
    assert!(err.to_string().contains("no column named Prompt"), "{err}");
}
