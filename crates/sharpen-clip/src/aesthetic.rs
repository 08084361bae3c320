//! The LAION improved aesthetic predictor v2 head: an MLP 768-1024-128-64-16-1 with no
//! activations (its dropouts are identity at inference), on L2-normalised CLIP ViT-L/14 image
//! embeddings.
//!
//! The checkpoint is the `state_dict` of an `nn.Sequential` whose Linear layers sit at indices
//! 0, 2, 4, 6 and 7 (`layers.0.weight`, ...); [`AestheticMlp::checkpoint_index`] maps between the two.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::model::l2_normalize;

/// Layer widths after the input.
pub const AESTHETIC_WIDTHS: [usize; 5] = [1024, 128, 64, 16, 1];
/// Where each Linear sits in the reference `nn.Sequential`.
pub const AESTHETIC_INDICES: [usize; 5] = [0, 2, 4, 6, 7];

#[derive(Module, Debug)]
pub struct AestheticMlp<B: Backend> {
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> AestheticMlp<B> {
    /// `input`: the CLIP projection size (768 for ViT-L/14).
    pub fn new(input: usize, device: &B::Device) -> Self {
        let mut widths = vec![input];
        widths.extend(AESTHETIC_WIDTHS);
        Self {
            layers: widths
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
        }
    }

    /// The input width the first layer takes.
    pub fn input_size(&self) -> usize {
        self.layers[0].weight.dims()[0]
    }

    /// image_embeds: [batch, input] (not normalised) -> scores [batch].
    pub fn forward(&self, image_embeds: Tensor<B, 2>) -> Tensor<B, 1> {
        self.forward_raw(l2_normalize(image_embeds))
    }

    /// The layers alone on `x` [batch, input] (ImageReward's head takes BERT's [CLS] state
    /// as it is) -> [batch].
    pub fn forward_raw(&self, x: Tensor<B, 2>) -> Tensor<B, 1> {
        let [batch, _] = x.dims();
        let mut h = x;
        for layer in &self.layers {
            h = layer.forward(h);
        }
        h.reshape([batch])
    }

    /// The reference's `nn.Sequential` index of our layer `i`.
    pub fn checkpoint_index(i: usize) -> Option<usize> {
        checkpoint_index(i)
    }

    /// Our layer index of the reference's `nn.Sequential` index `i`.
    pub fn layer_index(i: usize) -> Option<usize> {
        layer_index(i)
    }
}

/// The reference's `nn.Sequential` index of our layer `i`.
pub fn checkpoint_index(i: usize) -> Option<usize> {
    AESTHETIC_INDICES.get(i).copied()
}

/// Our layer index of the reference's `nn.Sequential` index `i`.
pub fn layer_index(i: usize) -> Option<usize> {
    AESTHETIC_INDICES.iter().position(|&x| x == i)
}
