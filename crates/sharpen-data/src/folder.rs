//! Image folders: `name.png` + `name.txt` pairs, or a `metadata.jsonl` with `file_name` and a
//! caption column (`text` by default), as Hugging Face's imagefolder reads them; and JourneyDB's
//! JSON-lines annotations (`img_path`, `prompt`) over its image tree.

use std::path::{Path, PathBuf};

use crate::image::{decode_rgb, prepare};
use crate::{DataError, Skipped};

#[derive(Debug, Clone, PartialEq)]
pub struct CaptionedImage {
    pub path: PathBuf,
    pub caption: String,
}

/// The rows of an image folder; images are decoded when asked for.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub items: Vec<CaptionedImage>,
    /// Rows dropped while listing (no caption, missing file, malformed metadata).
    pub skipped: Skipped,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// The rows of a JSON-lines annotation file: `file_field` names an image relative to `root`,
/// `caption_field` its caption. Malformed lines and missing images are skipped and counted.
fn read_annotations(
    file: &Path,
    root: &Path,
    file_field: &str,
    caption_field: &str,
    skipped: &mut Skipped,
) -> Result<Vec<CaptionedImage>, DataError> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = std::fs::read_to_string(file).map_err(|source| DataError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let mut items = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                skipped.add(format!("{name} line {}: {e}", i + 1));
                continue;
            }
        };
        let (Some(image), Some(caption)) = (row[file_field].as_str(), row[caption_field].as_str())
        else {
            skipped.add(format!(
                "{name} line {}: needs `{file_field}` and `{caption_field}` strings",
                i + 1
            ));
            continue;
        };
        let path = root.join(image);
        if !path.is_file() {
            skipped.add(format!(
                "{name} line {}: {} does not exist",
                i + 1,
                path.display()
            ));
            continue;
        }
        items.push(CaptionedImage {
            path,
            caption: caption.to_string(),
        });
    }
    Ok(items)
}

impl ImageFolder {
    /// Lists `root`: through `metadata.jsonl` when present (caption column `caption_column`,
    /// default `text`), else every image with a sibling `.txt` caption. Sorted by path.
    pub fn open(root: &Path, caption_column: Option<&str>) -> Result<Self, DataError> {
        let io = |source| DataError::Io {
            path: root.to_path_buf(),
            source,
        };
        let mut skipped = Skipped::default();
        let metadata = root.join("metadata.jsonl");
        let mut items = Vec::new();
        if metadata.is_file() {
            let column = caption_column.unwrap_or("text");
            items = read_annotations(&metadata, root, "file_name", column, &mut skipped)?;
        } else {
            let mut files: Vec<PathBuf> = std::fs::read_dir(root)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            files.sort();
            for path in files {
                match std::fs::read_to_string(path.with_extension("txt")) {
                    Ok(caption) if !caption.trim().is_empty() => items.push(CaptionedImage {
                        path,
                        caption: caption.trim().to_string(),
                    }),
                    _ => skipped.add(format!("{}: no caption file", path.display())),
                }
            }
        }
        Self::finish(root, items, skipped)
    }

    /// JourneyDB's layout: a JSON-lines annotation file (`img_path` relative to `images`, caption
    /// in `prompt`, or `caption_field`) over the extracted image tree.
    pub fn journeydb(
        annotations: &Path,
        images: &Path,
        caption_field: Option<&str>,
    ) -> Result<Self, DataError> {
        let mut skipped = Skipped::default();
        let field = caption_field.unwrap_or("prompt");
        let items = read_annotations(annotations, images, "img_path", field, &mut skipped)?;
        Self::finish(images, items, skipped)
    }

    fn finish(
        root: &Path,
        mut items: Vec<CaptionedImage>,
        skipped: Skipped,
    ) -> Result<Self, DataError> {
        items.sort_by(|a, b| a.path.cmp(&b.path));
        if items.is_empty() {
            return Err(DataError::Invalid {
                path: root.to_path_buf(),
                message: format!(
                    "no captioned images ({} rows skipped: {:?})",
                    skipped.count, skipped.reasons
                ),
            });
        }
        if skipped.count > 0 {
            tracing::warn!(folder = %root.display(), skipped = skipped.count, "image-folder rows skipped");
        }
        Ok(Self {
            root: root.to_path_buf(),
            items,
            skipped,
        })
    }

    /// Row `index` decoded and prepared (`size` x `size` RGB8). A corrupt image is an error
    /// the caller skips and counts.
    pub fn load(
        &self,
        index: usize,
        size: usize,
        flip: bool,
    ) -> Result<(Vec<u8>, &str), DataError> {
        let item = &self.items[index];
        let image = decode_rgb(&item.path)?;
        Ok((prepare(&image, size, flip), &item.caption))
    }
}
