//! Parquet files with image bytes and captions, as Hugging Face `datasets` writes image datasets
//! (the Pokemon BLIP captions layout: `image` a struct of `bytes` and `path`, `text` a string).
//! Snappy-compressed or uncompressed files; rows are read at open and their images kept encoded
//! in memory, decoded when asked for.

use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

use crate::image::{decode_rgb_bytes, prepare};
use crate::{DataError, Skipped};

/// One row: the encoded image and its caption.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetImage {
    /// Which file and row it came from (`file.parquet#row`), for messages.
    pub origin: String,
    pub bytes: Vec<u8>,
    pub caption: String,
}

#[derive(Debug, Clone)]
pub struct ParquetImages {
    pub root: PathBuf,
    pub items: Vec<ParquetImage>,
    /// Rows dropped while reading (no image bytes, no caption).
    pub skipped: Skipped,
}

/// The image bytes of a cell: a binary column, or a struct with a binary `bytes` field.
fn image_bytes(field: &Field) -> Option<&[u8]> {
    match field {
        Field::Bytes(b) => Some(b.data()),
        Field::Group(g) => g.get_column_iter().find_map(|(name, f)| match f {
            Field::Bytes(b) if name == "bytes" => Some(b.data()),
            _ => None,
        }),
        _ => None,
    }
}

fn cell<'a>(row: &'a Row, column: &str) -> Option<&'a Field> {
    row.get_column_iter()
        .find(|(name, _)| name.as_str() == column)
        .map(|(_, f)| f)
}

impl ParquetImages {
    /// Reads a `.parquet` file, or every `.parquet` in a folder (sorted by name). `image_column`
    /// (default `image`) holds the image bytes, `caption_column` (default `text`) the caption.
    pub fn open(
        path: &Path,
        image_column: Option<&str>,
        caption_column: Option<&str>,
    ) -> Result<Self, DataError> {
        let invalid = |path: &Path, message: String| DataError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| DataError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        if files.is_empty() {
            return Err(invalid(path, "no .parquet files".into()));
        }
        let (image_column, caption_column) = (
            image_column.unwrap_or("image"),
            caption_column.unwrap_or("text"),
        );
        let mut items = Vec::new();
        let mut skipped = Skipped::default();
        for file in &files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let handle = std::fs::File::open(file).map_err(|source| DataError::Io {
                path: file.clone(),
                source,
            })?;
            let reader = SerializedFileReader::new(handle)
                .map_err(|e| invalid(file, format!("not a readable Parquet file: {e}")))?;
            let schema = reader.metadata().file_metadata().schema_descr();
            for column in [image_column, caption_column] {
                if !schema
                    .root_schema()
                    .get_fields()
                    .iter()
                    .any(|f| f.name() == column)
                {
                    return Err(invalid(file, format!("no column `{column}`")));
                }
            }
            let rows = reader
                .get_row_iter(None)
                .map_err(|e| invalid(file, e.to_string()))?;
            for (i, row) in rows.enumerate() {
                let row = row.map_err(|e| invalid(file, format!("row {i}: {e}")))?;
                let bytes = cell(&row, image_column).and_then(image_bytes);
                let caption = match cell(&row, caption_column) {
                    Some(Field::Str(s)) if !s.trim().is_empty() => Some(s.clone()),
                    _ => None,
                };
                match (bytes, caption) {
                    (Some(bytes), Some(caption)) => items.push(ParquetImage {
                        origin: format!("{name}#{i}"),
                        bytes: bytes.to_vec(),
                        caption,
                    }),
                    _ => skipped.add(format!(
                        "{name} row {i}: needs image bytes in `{image_column}` and a caption in `{caption_column}`"
                    )),
                }
            }
        }
        if items.is_empty() {
            return Err(invalid(
                path,
                format!(
                    "no usable rows ({} skipped: {:?})",
                    skipped.count, skipped.reasons
                ),
            ));
        }
        Ok(Self {
            root: path.to_path_buf(),
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
        let image = decode_rgb_bytes(&self.root.join(&item.origin), &item.bytes)?;
        Ok((prepare(&image, size, flip), &item.caption))
    }
}
