//! `aesthetic`: the LAION improved aesthetic predictor v2 (`sac+logos+ava1-l14-linearMSE.pth`)
//! on L2-normalised CLIP ViT-L/14 image embeddings. The prompt is not used.
//!
//! Reference: the predictor's own script (OpenAI `clip` ViT-L/14 `encode_image`, then the MLP on
//! the normalised embedding); here the CLIP side is a transformers `CLIPModel` folder
//! (`openai/clip-vit-large-patch14`, the same weights) with its preprocessing as in `clip`.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use sharpen_clip::{AestheticMlp, ClipModel, ClipPreprocess};
use sharpen_weights::clip::load_aesthetic_mlp;

use crate::clip::load_parts;
use crate::{check_batch, failed, Reward, RewardError, RewardInfo};

pub struct AestheticReward<B: Backend> {
    pub clip: ClipModel<B>,
    pub preprocess: ClipPreprocess,
    pub head: AestheticMlp<B>,
}

impl<B: Backend> AestheticReward<B> {
    /// `head`: the predictor's `.pth` (or a `.safetensors` with its keys); `clip`: a transformers
    /// CLIPModel folder whose projection size the head takes (768, ViT-L/14).
    pub fn load(head: &Path, clip: &Path, device: &B::Device) -> Result<Self, RewardError> {
        if head.is_dir() {
            return Err(failed(
                "aesthetic",
                format!(
                    "{} is a folder: `aesthetic` takes the predictor's .pth file \
                     (sac+logos+ava1-l14-linearMSE.pth)",
                    head.display()
                ),
            ));
        }
        let (clip, _, preprocess) = load_parts("aesthetic", clip, device)?;
        let input = clip.visual_projection.weight.dims()[1];
        let head = load_aesthetic_mlp(head, input, device).map_err(|e| failed("aesthetic", e))?;
        Ok(Self {
            clip,
            preprocess,
            head,
        })
    }
}

impl<B: Backend> Reward<B> for AestheticReward<B> {
    fn info(&self) -> RewardInfo {
        RewardInfo {
            name: "aesthetic",
            // A regression onto 1..10 ratings; the head itself is unbounded.
            range: (f64::NEG_INFINITY, f64::INFINITY),
            differentiable: true,
        }
    }

    fn score(&self, images: Tensor<B, 4>, prompts: &[&str]) -> Result<Tensor<B, 1>, RewardError> {
        check_batch("aesthetic", images.dims()[0], prompts.len())?;
        let embeds = self.clip.image_embeds(self.preprocess.apply(images));
        Ok(self.head.forward(embeds))
    }
}
