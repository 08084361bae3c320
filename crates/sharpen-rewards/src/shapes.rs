//! `shapes`: the shapes world's compositional scorer as a reward (partial credit in [0, 1]).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::{check_batch, to_rgb8, Reward, RewardError, RewardInfo};

/// Scores square shapes-world images against their captions: the fraction of checks passed
/// (colours present, shapes, relation, object count). Images must be square RGB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShapesReward;

impl<B: Backend> Reward<B> for ShapesReward {
    fn info(&self) -> RewardInfo {
        RewardInfo {
            name: "shapes",
            range: (0.0, 1.0),
            differentiable: false,
        }
    }

    fn score(&self, images: Tensor<B, 4>, prompts: &[&str]) -> Result<Tensor<B, 1>, RewardError> {
        let [batch, _, h, w] = images.dims();
        check_batch("shapes", batch, prompts.len())?;
        if h != w {
            return Err(RewardError::Failed {
                reward: "shapes",
                message: format!("images must be square, got {h}x{w}"),
            });
        }
        let device = images.device();
        let scores: Vec<f32> = to_rgb8(images)
            .iter()
            .zip(prompts)
            .map(|(rgb, prompt)| shapes_world::score(rgb, w, prompt).partial as f32)
            .collect();
        Ok(Tensor::from_data(TensorData::new(scores, [batch]), &device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shapes_world::{ShapesWorld, Split};

    type B = burn::backend::Flex;

    #[test]
    fn rendered_images_score_one_and_wrong_captions_less() {
        let world = ShapesWorld {
            split: Split::Train,
            size: 32,
            seed: 3,
        };
        let (scene, image) = world.get(0);
        let pixels: Vec<f32> = image.rgb.iter().map(|&v| v as f32 / 255.0).collect();
        let t =
            Tensor::<B, 3>::from_data(TensorData::new(pixels, [32, 32, 3]), &Default::default())
                .permute([2, 0, 1]);
        let images = Tensor::stack::<4>(vec![t.clone(), t], 0);
        let caption = scene.to_string();
        let scores = Reward::<B>::score(
            &ShapesReward,
            images,
            &[caption.as_str(), "a photo of a cat"],
        )
        .unwrap();
        assert_eq!(scores.into_data().to_vec::<f32>().unwrap(), vec![1.0, 0.0]);
    }
}
