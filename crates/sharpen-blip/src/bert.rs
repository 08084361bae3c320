//! BLIP's BERT (`blip.text_encoder.*`, `med.py`, mode `multimodal`): post-norm layers of
//! self-attention (padding mask, added as -10000 as BLIP does), cross-attention to the image
//! tokens, and a GELU feed-forward; LayerNorm eps from the config (1e-12).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::config::BertConfig;

#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    pub position_embeddings: Embedding<B>,
    /// `LayerNorm` in checkpoints.
    pub layer_norm: LayerNorm<B>,
}

/// `attention.self` (`crossattention.self`): query from the text, key and value from the text
/// or, for cross-attention, from the image tokens (`encoder_width` wide).
#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub num_heads: usize,
}

#[derive(Module, Debug)]
pub struct BertSelfOutput<B: Backend> {
    pub dense: Linear<B>,
    /// `LayerNorm` in checkpoints.
    pub layer_norm: LayerNorm<B>,
}

#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    /// `self` in checkpoints.
    pub self_: BertSelfAttention<B>,
    pub output: BertSelfOutput<B>,
}

#[derive(Module, Debug)]
pub struct BertIntermediate<B: Backend> {
    pub dense: Linear<B>,
}

#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    pub attention: BertAttention<B>,
    pub crossattention: BertAttention<B>,
    pub intermediate: BertIntermediate<B>,
    pub output: BertSelfOutput<B>,
}

#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend> {
    pub layer: Vec<BertLayer<B>>,
}

#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    pub encoder: BertEncoder<B>,
}

impl<B: Backend> BertSelfAttention<B> {
    /// x: [b, n, hidden]; context: [b, m, width]; additive mask broadcast to [b, 1, 1, m].
    fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Tensor<B, 3>,
        mask: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let [b, n, c] = x.dims();
        let m = context.dims()[1];
        let h = self.num_heads;
        let d = c / h;
        let heads = |t: Tensor<B, 3>, len: usize| t.reshape([b, len, h, d]).swap_dims(1, 2);
        let q = heads(self.query.forward(x), n);
        let k = heads(self.key.forward(context.clone()), m);
        let v = heads(self.value.forward(context), m);
        let mut scores = q.matmul(k.swap_dims(2, 3)).div_scalar((d as f64).sqrt());
        if let Some(mask) = mask {
            scores = scores + mask;
        }
        softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, n, c])
    }
}

impl<B: Backend> BertSelfOutput<B> {
    fn forward(&self, h: Tensor<B, 3>, input: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layer_norm.forward(self.dense.forward(h) + input)
    }
}

impl<B: Backend> BertAttention<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Tensor<B, 3>,
        mask: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let h = self.self_.forward(x.clone(), context, mask);
        self.output.forward(h, x)
    }
}

impl<B: Backend> BertModel<B> {
    pub fn new(config: &BertConfig, device: &B::Device) -> Self {
        let c = config.hidden_size;
        let norm = || {
            LayerNormConfig::new(c)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let attention = |kv: usize| BertAttention {
            self_: BertSelfAttention {
                query: linear(c, c),
                key: linear(kv, c),
                value: linear(kv, c),
                num_heads: config.num_heads,
            },
            output: BertSelfOutput {
                dense: linear(c, c),
                layer_norm: norm(),
            },
        };
        Self {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(config.vocab_size, c).init(device),
                position_embeddings: EmbeddingConfig::new(config.max_positions, c).init(device),
                layer_norm: norm(),
            },
            encoder: BertEncoder {
                layer: (0..config.num_layers)
                    .map(|_| BertLayer {
                        attention: attention(c),
                        crossattention: attention(config.encoder_width),
                        intermediate: BertIntermediate {
                            dense: linear(c, config.intermediate_size),
                        },
                        output: BertSelfOutput {
                            dense: linear(config.intermediate_size, c),
                            layer_norm: norm(),
                        },
                    })
                    .collect(),
            },
        }
    }

    /// input_ids, attention_mask (1 = token, 0 = padding): [b, n]; image: [b, m, width].
    /// Returns `last_hidden_state` [b, n, hidden].
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2>,
        image: Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let [b, n] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..n as i64, &device).unsqueeze::<2>();
        let mut x = self.embeddings.layer_norm.forward(
            self.embeddings.word_embeddings.forward(input_ids)
                + self.embeddings.position_embeddings.forward(positions),
        );
        // BLIP's extended mask: (1 - mask) * -10000, broadcast over heads and queries.
        let mask = attention_mask
            .neg()
            .add_scalar(1.0)
            .mul_scalar(-10000.0)
            .reshape([b, 1, 1, n]);
        for layer in &self.encoder.layer {
            let a = layer.attention.forward(x.clone(), x, Some(mask.clone()));
            let a = layer.crossattention.forward(a, image.clone(), None);
            let i = gelu(layer.intermediate.dense.forward(a.clone()));
            x = layer.output.forward(i, a);
        }
        x
    }
}
