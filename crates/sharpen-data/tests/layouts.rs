//! Each loader reads a committed sample in its published layout (written by
//! tools/golden/gen_data.py with Pillow); bad rows and corrupt files are skipped and counted.

use std::path::{Path, PathBuf};

use sharpen_data::{decode_rgb, load_prompts, ImageFolder, ParquetImages, WebDataset};

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

#[test]
fn webdataset_shards_in_the_text_to_image_2m_layout() {
    let ds = WebDataset::open(&data("webdataset"), None).unwrap();
    assert_eq!(ds.shards.len(), 2);
    let keys: Vec<&str> = ds.items.iter().map(|i| i.member.as_str()).collect();
    assert_eq!(
        keys,
        ["000000.jpg", "000001.png", "000004.png", "000005.png"]
    );
    // A json without an image, a malformed json, a json without `prompt` (and no txt).
    assert_eq!(ds.skipped.count, 3, "{:?}", ds.skipped);
    assert!(ds
        .skipped
        .reasons
        .iter()
        .any(|r| r.contains("000002") && r.contains("no image")));
    assert!(ds.skipped.reasons.iter().any(|r| r.contains("000003.json")));
    assert!(ds
        .skipped
        .reasons
        .iter()
        .any(|r| r.contains("000006") && r.contains("prompt")));
    // The same pixels as the image files they were packed from.
    let folder = ImageFolder::open(&data("imagefolder_txt"), None).unwrap();
    let (from_tar, caption) = ds.load(0, 16, false).unwrap();
    assert_eq!(caption, "a blue and yellow split");
    assert_eq!(from_tar, folder.load(1, 16, false).unwrap().0, "b.jpg");
    let (from_tar, caption) = ds.load(1, 16, true).unwrap();
    assert_eq!(caption, "a red and green split", "txt caption");
    assert_eq!(from_tar, folder.load(0, 16, true).unwrap().0, "a.png");
    let err = ds.load(2, 16, false).unwrap_err();
    assert!(err.to_string().contains("000004.png"), "{err}");
    assert_eq!(ds.load(3, 8, false).unwrap().1, "a grey square");
    // One shard alone, and another caption field.
    let one = WebDataset::open(&data("webdataset/shard-00001.tar"), Some("caption")).unwrap();
    let captions: Vec<&str> = one.items.iter().map(|i| i.caption.as_str()).collect();
    assert_eq!(captions, ["no prompt field"]);
    assert!(
        WebDataset::open(&data("prompts"), None).is_err(),
        "a folder without shards"
    );
}

#[test]
fn journeydb_annotations_over_the_image_tree() {
    let root = data("journeydb");
    let db =
        ImageFolder::journeydb(&root.join("train_anno.jsonl"), &root.join("imgs"), None).unwrap();
    let rel: Vec<String> = db
        .items
        .iter()
        .map(|i| {
            let p = i.path.strip_prefix(root.join("imgs")).unwrap();
            p.components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(s) => Some(s.to_str().unwrap()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert_eq!(
        rel,
        ["000/a.jpg", "000/b.png", "001/broken.png", "001/c.png"]
    );
    assert_eq!(db.skipped.count, 3, "{:?}", db.skipped);
    let reasons = db.skipped.reasons.join("\n");
    assert!(reasons.contains("train_anno.jsonl line 3"), "{reasons}");
    assert!(
        reasons.contains("needs `img_path` and `prompt`"),
        "{reasons}"
    );
    assert!(reasons.contains("missing.jpg does not exist"), "{reasons}");
    // b.png is the red-left, blue-right square of the txt folder.
    let (pixels, caption) = db.load(1, 16, false).unwrap();
    assert_eq!(caption, "a red square --v 5");
    assert_eq!(&pixels[..3], &[255, 0, 0]);
    assert_eq!(&pixels[15 * 3..16 * 3], &[0, 0, 255]);
    let err = db.load(2, 16, false).unwrap_err();
    assert!(err.to_string().contains("broken.png"), "{err}");
    // Another caption field, and a missing annotation file named in the error.
    let by_task = ImageFolder::journeydb(
        &root.join("train_anno.jsonl"),
        &root.join("imgs"),
        Some("caption"),
    )
    .unwrap();
    assert_eq!(by_task.items.len(), 1);
    assert_eq!(by_task.items[0].caption, "no prompt field");
    let err =
        ImageFolder::journeydb(&root.join("nope.jsonl"), &root.join("imgs"), None).unwrap_err();
    assert!(err.to_string().contains("nope.jsonl"), "{err}");
}

#[test]
fn parquet_in_the_pokemon_blip_layout() {
    let path = data("parquet");
    let set = ParquetImages::open(&path, None, None).unwrap();
    let captions: Vec<&str> = set.items.iter().map(|i| i.caption.as_str()).collect();
    assert_eq!(
        captions,
        [
            "a red square to the left of a blue square",
            "a jpeg row",
            "a corrupt image",
            "a third image"
        ]
    );
    assert_eq!(set.skipped.count, 2, "{:?}", set.skipped);
    assert!(
        set.skipped.reasons[0].contains("row 4"),
        "{:?}",
        set.skipped
    );
    assert!(
        set.skipped.reasons[1].contains("row 5"),
        "{:?}",
        set.skipped
    );
    // Row 0 is the red-left, blue-right square of the txt folder, decoded from its bytes.
    let (pixels, caption) = set.load(0, 16, false).unwrap();
    assert_eq!(caption, "a red square to the left of a blue square");
    assert_eq!(&pixels[..3], &[255, 0, 0]);
    assert_eq!(&pixels[15 * 3..16 * 3], &[0, 0, 255]);
    let err = set.load(2, 16, false).unwrap_err();
    assert!(err.to_string().contains("#2"), "{err}");
    // A missing column and a file that is not Parquet are named.
    let err = ParquetImages::open(&path, None, Some("caption")).unwrap_err();
    assert!(err.to_string().contains("no column `caption`"), "{err}");
    let err = ParquetImages::open(&data("prompts/prompts.txt"), None, None).unwrap_err();
    assert!(err.to_string().contains("prompts.txt"), "{err}");
}
