//! Where training examples come from: the shapes world (images + captions, rendered on the fly)
//! or a prompt list. Example `i` is the same on every run, so the data position in a checkpoint
//! is one number.

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use shapes_world::{ShapesWorld, Split};

use crate::config::DataConfig;

pub struct Example {
    pub prompt: String,
    /// RGB8, `resolution` x `resolution`, row-major (absent for prompt lists).
    pub image: Option<Vec<u8>>,
}

pub enum Source {
    Shapes(ShapesWorld),
    Prompts(Vec<String>),
}

impl Source {
    pub fn open(config: &DataConfig, resolution: usize) -> anyhow::Result<Self> {
        Ok(match config {
            DataConfig::Shapes { seed } => Source::Shapes(ShapesWorld {
                split: Split::Train,
                size: resolution,
                seed: *seed,
            }),
            DataConfig::Prompts { path } => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading prompts from {}", path.display()))?;
                let prompts: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect();
                if prompts.is_empty() {
                    bail!(
                        "{}: no prompts (one per line; # starts a comment)",
                        path.display()
                    );
                }
                Source::Prompts(prompts)
            }
        })
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
