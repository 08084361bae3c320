//! Training data in the layouts users already have, read from disk (this crate is the data
//! side's only IO): image folders with `.txt` captions or a `metadata.jsonl` (the Hugging Face
//! imagefolder convention), JourneyDB annotations, WebDataset tar shards (`jpg`/`png` + `json` or
//! `txt`), Parquet with image bytes (the Pokemon BLIP captions layout), prompt lists (`.txt`, `.jsonl`, DrawBench-style `.csv`). Images are
//! decoded (PNG, JPEG), resized to cover the target, centre-cropped and optionally flipped. A bad
//! row or a corrupt image is skipped and counted, never a crash. Computed latents and text embeddings
//! can be cached on disk by content hash ([`cache`]).

pub mod cache;
mod folder;
mod image;
mod parquet;
mod prompts;
mod webdataset;

pub use folder::{CaptionedImage, ImageFolder};
pub use image::{decode_rgb, decode_rgb_bytes, prepare, RgbImage};
pub use parquet::{ParquetImage, ParquetImages};
pub use prompts::load_prompts;
pub use webdataset::{TarImage, WebDataset};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Rows or files that were skipped, with why (the first few reasons are kept).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Skipped {
    pub count: usize,
    pub reasons: Vec<String>,
}

impl Skipped {
    pub fn add(&mut self, reason: String) {
        self.count += 1;
        if self.reasons.len() < 20 {
            self.reasons.push(reason);
        }
    }
}
