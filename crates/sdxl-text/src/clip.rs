//! transformers' `CLIPTextModel` and `CLIPTextModelWithProjection`.
//!
//! Field names equal the checkpoint keys of the SDXL repository (`text_model.embeddings.token_embedding.weight`,
//! `text_model.encoder.layers.0.self_attn.q_proj.weight`, `text_projection.weight`, ...).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::config::{ClipActivation, ClipTextConfig, EosPooling};

#[derive(Module, Debug)]
pub struct ClipTextEmbeddings<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Embedding<B>,
}

#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub num_heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    /// x: [batch, seq, hidden]; mask: [seq, seq], true where attention is forbidden.
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let head_dim = hidden / self.num_heads;
        let heads = |t: Tensor<B, 3>| {
            t.reshape([batch, seq, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = heads(self.q_proj.forward(x.clone()));
        let k = heads(self.k_proj.forward(x.clone()));
        let v = heads(self.v_proj.forward(x));
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar((head_dim as f64).powf(-0.5));
        let scores = match mask {
            Some(mask) => scores.mask_fill(
                mask.unsqueeze::<4>()
                    .expand([batch, self.num_heads, seq, seq]),
                f32::NEG_INFINITY,
            ),
            None => scores,
        };
        let out = softmax(scores, 3).matmul(v);
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([batch, seq, hidden]))
    }
}

#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    pub activation: ClipActivation,
}

impl<B: Backend> ClipMlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.fc1.forward(x);
        let h = match self.activation {
            ClipActivation::QuickGelu => h.clone() * sigmoid(h.mul_scalar(1.702)),
            ClipActivation::Gelu => gelu(h),
        };
        self.fc2.forward(h)
    }
}

#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    pub self_attn: ClipAttention<B>,
    pub layer_norm1: LayerNorm<B>,
    pub mlp: ClipMlp<B>,
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), mask);
        h.clone() + self.mlp.forward(self.layer_norm2.forward(h))
    }
}

#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    pub layers: Vec<ClipEncoderLayer<B>>,
}

/// The sizes of a CLIP transformer encoder (text and vision towers share the layer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipEncoderShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub activation: ClipActivation,
    pub layer_norm_eps: f64,
}

impl<B: Backend> ClipEncoder<B> {
    pub fn new(shape: &ClipEncoderShape, device: &B::Device) -> Self {
        let h = shape.hidden;
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(shape.layer_norm_eps)
                .init(device)
        };
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let layers = (0..shape.layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: linear(h, h),
                    k_proj: linear(h, h),
                    v_proj: linear(h, h),
                    out_proj: linear(h, h),
                    num_heads: shape.heads,
                },
                layer_norm1: norm(),
                mlp: ClipMlp {
                    fc1: linear(h, shape.intermediate),
                    fc2: linear(shape.intermediate, h),
                    activation: shape.activation,
                },
                layer_norm2: norm(),
            })
            .collect();
        Self { layers }
    }
}

/// The text tower (`text_model.*` in checkpoints).
#[derive(Module, Debug)]
pub struct ClipTextTransformer<B: Backend> {
    pub embeddings: ClipTextEmbeddings<B>,
    pub encoder: ClipEncoder<B>,
    pub final_layer_norm: LayerNorm<B>,
    pub pooling: EosPooling,
}

/// What a CLIP text encoder returns.
#[derive(Debug, Clone)]
pub struct ClipTextOutput<B: Backend> {
    /// The embeddings output followed by every layer's output, before `final_layer_norm`:
    /// `num_layers + 1` tensors of [batch, seq, hidden] (transformers' `hidden_states`).
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// The last layer's output after `final_layer_norm`: [batch, seq, hidden].
    pub last_hidden_state: Tensor<B, 3>,
    /// `last_hidden_state` at the end-of-text position: [batch, hidden].
    pub pooled: Tensor<B, 2>,
}

impl<B: Backend> ClipTextOutput<B> {
    /// `hidden_states[-(skip + 2)]`: `skip = 0` is the penultimate layer's output SDXL conditions on;
    /// `skip = k` goes `k` layers further back (diffusers' `clip_skip`).
    pub fn penultimate(&self, skip: usize) -> Tensor<B, 3> {
        let n = self.hidden_states.len();
        assert!(
            skip + 2 <= n,
            "clip_skip {skip} is too large for an encoder with {} layers",
            n - 1
        );
        self.hidden_states[n - 2 - skip].clone()
    }
}

impl<B: Backend> ClipTextTransformer<B> {
    pub fn new(config: &ClipTextConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        let encoder = ClipEncoder::new(
            &ClipEncoderShape {
                hidden: h,
                intermediate: config.intermediate_size,
                layers: config.num_layers,
                heads: config.num_heads,
                activation: config.activation,
                layer_norm_eps: config.layer_norm_eps,
            },
            device,
        );
        Self {
            embeddings: ClipTextEmbeddings {
                token_embedding: EmbeddingConfig::new(config.vocab_size, h).init(device),
                position_embedding: EmbeddingConfig::new(config.max_positions, h).init(device),
            },
            encoder,
            final_layer_norm: norm(),
            pooling: config.pooling,
        }
    }

    /// input_ids: [batch, seq] with seq <= max_position_embeddings (77).
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> ClipTextOutput<B> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let max_positions = self.embeddings.position_embedding.weight.dims()[0];
        assert!(
            seq <= max_positions,
            "sequence of {seq} tokens exceeds max_position_embeddings {max_positions}"
        );
        let ids_host: Vec<i64> = input_ids
            .to_data()
            .convert::<i64>()
            .into_vec()
            .expect("int token ids");

        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>();
        let mut h = self.embeddings.token_embedding.forward(input_ids)
            + self.embeddings.position_embedding.forward(positions);
        // Causal mask: position i attends to positions <= i.
        let mask = Tensor::<B, 2, Bool>::tril_mask([seq, seq], 0, &device);
        let mut hidden_states = Vec::with_capacity(self.encoder.layers.len() + 1);
        hidden_states.push(h.clone());
        for layer in &self.encoder.layers {
            h = layer.forward(h, Some(mask.clone()));
            hidden_states.push(h.clone());
        }
        let last_hidden_state = self.final_layer_norm.forward(h);

        let eos_positions: Vec<i64> = ids_host
            .chunks(seq)
            .map(|ids| eos_position(ids, self.pooling) as i64)
            .collect();
        let hidden = last_hidden_state.dims()[2];
        let index =
            Tensor::<B, 1, Int>::from_data(TensorData::new(eos_positions, [batch]), &device)
                .reshape([batch, 1, 1])
                .expand([batch, 1, hidden]);
        let pooled = last_hidden_state
            .clone()
            .gather(1, index)
            .reshape([batch, hidden]);
        ClipTextOutput {
            hidden_states,
            last_hidden_state,
            pooled,
        }
    }
}

/// transformers' pooling position: `argmax(ids)` for legacy configs (first maximum), else the first
/// occurrence of the end-of-text id (position 0 when absent, as `argmax` of all-false gives).
fn eos_position(ids: &[i64], pooling: EosPooling) -> usize {
    match pooling {
        EosPooling::ArgmaxId => {
            let mut best = 0;
            for (i, &id) in ids.iter().enumerate() {
                if id > ids[best] {
                    best = i;
                }
            }
            best
        }
        EosPooling::FirstToken(eos) => ids.iter().position(|&id| id == eos as i64).unwrap_or(0),
    }
}

/// `CLIPTextModel` (SDXL `text_encoder`).
#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    pub text_model: ClipTextTransformer<B>,
}

impl<B: Backend> ClipTextModel<B> {
    pub fn new(config: &ClipTextConfig, device: &B::Device) -> Self {
        Self {
            text_model: ClipTextTransformer::new(config, device),
        }
    }

    /// input_ids: [batch, seq]. `pooled` is the EOS state after `final_layer_norm`: [batch, hidden].
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> ClipTextOutput<B> {
        self.text_model.forward(input_ids)
    }
}

/// `CLIPTextModelWithProjection` (SDXL `text_encoder_2`).
#[derive(Module, Debug)]
pub struct ClipTextModelWithProjection<B: Backend> {
    pub text_model: ClipTextTransformer<B>,
    /// Linear without bias: [hidden] -> [projection_dim].
    pub text_projection: Linear<B>,
}

/// Output of [`ClipTextModelWithProjection`]: the tower's output and the projected pooled state.
#[derive(Debug, Clone)]
pub struct ClipTextProjectionOutput<B: Backend> {
    pub text: ClipTextOutput<B>,
    /// `text_projection(pooled)`: [batch, projection_dim] (transformers' `text_embeds`).
    pub text_embeds: Tensor<B, 2>,
}

impl<B: Backend> ClipTextModelWithProjection<B> {
    /// Panics when `config.projection_dim` is `None`; validated configs built from a
    /// `CLIPTextModelWithProjection` folder always have it.
    pub fn new(config: &ClipTextConfig, device: &B::Device) -> Self {
        let projection_dim = config
            .projection_dim
            .expect("CLIPTextModelWithProjection needs projection_dim");
        Self {
            text_model: ClipTextTransformer::new(config, device),
            text_projection: LinearConfig::new(config.hidden_size, projection_dim)
                .with_bias(false)
                .init(device),
        }
    }

    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> ClipTextProjectionOutput<B> {
        let text = self.text_model.forward(input_ids);
        let text_embeds = self.text_projection.forward(text.pooled.clone());
        ClipTextProjectionOutput { text, text_embeds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_position_follows_transformers() {
        let ids = [49406, 320, 49407, 49407, 0];
        assert_eq!(eos_position(&ids, EosPooling::ArgmaxId), 2);
        assert_eq!(eos_position(&ids, EosPooling::FirstToken(49407)), 2);
        assert_eq!(eos_position(&[5, 9, 9, 1], EosPooling::ArgmaxId), 1);
        assert_eq!(eos_position(&[5, 6], EosPooling::FirstToken(49407)), 0);
    }
}
