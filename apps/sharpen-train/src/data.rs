//! Where training examples come from: the shapes world (images + captions, rendered on the fly)
//! or a prompt list. Example `i` is the same on every run, so the data position in a checkpoint
//! is one number.

use std::cell::Cell;

use anyhow::Context;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use shapes_world::{ShapesWorld, Split};
use sharpen_data::{load_prompts, DataError, ImageFolder, Skipped, WebDataset};

use crate::config::DataConfig;

pub struct Example {
    pub prompt: String,
    /// RGB8, `resolution` x `resolution`, row-major (absent for prompt lists).
    pub image: Option<Vec<u8>>,
}

/// A captioned image dataset on disk.
pub enum Images {
    Folder(ImageFolder),
    Tar(WebDataset),
}

impl Images {
    fn len(&self) -> usize {
        match self {
            Images::Folder(f) => f.items.len(),
            Images::Tar(t) => t.items.len(),
        }
    }

    fn caption(&self, i: usize) -> &str {
        match self {
            Images::Folder(f) => &f.items[i].caption,
            Images::Tar(t) => &t.items[i].caption,
        }
    }

    fn load(&self, i: usize, size: usize, flip: bool) -> Result<(Vec<u8>, &str), DataError> {
        match self {
            Images::Folder(f) => f.load(i, size, flip),
            Images::Tar(t) => t.load(i, size, flip),
        }
    }

    fn root(&self) -> &std::path::Path {
        match self {
            Images::Folder(f) => &f.root,
            Images::Tar(t) => &t.root,
        }
    }

    fn skipped(&self) -> &Skipped {
        match self {
            Images::Folder(f) => &f.skipped,
            Images::Tar(t) => &t.skipped,
        }
    }
}

pub enum Source {
    Shapes(ShapesWorld),
    Prompts(Vec<String>),
    Images {
        folder: Images,
        size: usize,
        random_flip: bool,
        /// Corrupt images met so far (skipped; reported at the end).
        corrupt: Cell<usize>,
    },
}

impl Source {
    pub fn open(config: &DataConfig, resolution: usize) -> anyhow::Result<Self> {
        Ok(match config {
            DataConfig::Shapes { seed } => Source::Shapes(ShapesWorld {
                split: Split::Train,
                size: resolution,
                seed: *seed,
            }),
            DataConfig::Prompts { path, field } => {
                let (prompts, skipped) = load_prompts(path, field.as_deref())
                    .with_context(|| format!("reading prompts from {}", path.display()))?;
                if skipped.count > 0 {
                    tracing::warn!(
                        "{}: {} rows skipped: {:?}",
                        path.display(),
                        skipped.count,
                        skipped.reasons
                    );
                }
                Source::Prompts(prompts)
            }
            DataConfig::ImageFolder {
                path,
                caption_column,
                random_flip,
            } => {
                let folder = ImageFolder::open(path, caption_column.as_deref())
                    .with_context(|| format!("reading the image folder {}", path.display()))?;
                Self::images(Images::Folder(folder), resolution, *random_flip)
            }
            DataConfig::Webdataset {
                path,
                caption_field,
                random_flip,
            } => {
                let shards = WebDataset::open(path, caption_field.as_deref())
                    .with_context(|| format!("reading the WebDataset shards {}", path.display()))?;
                Self::images(Images::Tar(shards), resolution, *random_flip)
            }
        })
    }

    fn images(folder: Images, size: usize, random_flip: bool) -> Self {
        let skipped = folder.skipped();
        if skipped.count > 0 {
            tracing::warn!(
                "{}: {} rows skipped: {:?}",
                folder.root().display(),
                skipped.count,
                skipped.reasons
            );
        }
        Source::Images {
            folder,
            size,
            random_flip,
            corrupt: Cell::new(0),
        }
    }

    pub fn get(&self, index: u64) -> Example {
        match self {
            Source::Shapes(world) => {
                let (scene, image) = world.get(index);
                Example {
                    prompt: scene.to_string(),
                    image: Some(image.rgb),
                }
            }
            Source::Prompts(list) => Example {
                prompt: list[(index % list.len() as u64) as usize].clone(),
                image: None,
            },
            Source::Images {
                folder,
                size,
                random_flip,
                corrupt,
            } => {
                let n = folder.len() as u64;
                // A corrupt image is skipped (counted) in favour of the next row.
                for offset in 0..n {
                    let i = index + offset;
                    let flip = *random_flip && (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63) == 1;
                    match folder.load((i % n) as usize, *size, flip) {
                        Ok((pixels, caption)) => {
                            return Example {
                                prompt: caption.to_string(),
                                image: Some(pixels),
                            }
                        }
                        Err(e) => {
                            corrupt.set(corrupt.get() + 1);
                            tracing::warn!("skipped: {e}");
                        }
                    }
                }
                panic!(
                    "{}: no image of the dataset decodes",
                    folder.root().display()
                );
            }
        }
    }

    /// The caption of example `index`, without decoding its image (validation prompts).
    pub fn prompt(&self, index: u64) -> String {
        match self {
            Source::Images { folder, .. } => {
                let n = folder.len() as u64;
                folder.caption((index % n) as usize).to_string()
            }
            _ => self.get(index).prompt,
        }
    }

    /// Corrupt images skipped so far.
    pub fn corrupt(&self) -> usize {
        match self {
            Source::Images { corrupt, .. } => corrupt.get(),
            _ => 0,
        }
    }
}

/// RGB8 images -> [batch, 3, size, size] in [-1, 1] (what the VAE encodes).
pub fn image_tensor<B: Backend>(images: &[&[u8]], size: usize, device: &B::Device) -> Tensor<B, 4> {
    let values: Vec<f32> = images
        .iter()
        .flat_map(|rgb| rgb.iter().map(|&v| v as f32 / 127.5 - 1.0))
        .collect();
    Tensor::<B, 4>::from_data(
        TensorData::new(values, [images.len(), size, size, 3]),
        device,
    )
    .permute([0, 3, 1, 2])
}
