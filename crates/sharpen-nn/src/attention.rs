//! diffusers' `Attention` (the `AttnProcessor2_0` path): multi-head scaled dot-product attention
//! with `to_q`, `to_k`, `to_v` and `to_out.0`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// How attention is computed. All modes give the same result up to float rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionMode {
    /// matmul, softmax, matmul with one [batch, heads, queries, keys] score matrix. Fastest on
    /// burn's flex CPU backend (its fused op is single-threaded) and what autodiff uses anyway.
    #[default]
    Composed,
    /// Composed, with queries in chunks of this many, so at most [batch, heads, chunk, keys]
    /// scores exist at once (a 1024x1024 VAE mid-block attention has 16384 tokens). Exact: each
    /// query's softmax is over all keys.
    QueryChunks(usize),
    /// burn's fused attention op (`burn::tensor::module::attention`): flash attention on CUDA,
    /// no score matrix in memory. For inference on a GPU.
    Fused,
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    /// diffusers' `to_out` is `ModuleList([Linear, Dropout])`; a one-element `Vec` gives the
    /// checkpoint key `to_out.0.weight` directly.
    pub to_out: Vec<Linear<B>>,
    pub heads: usize,
    pub attention_mode: AttentionMode,
}

impl<B: Backend> Attention<B> {
    /// `query_dim` -> `heads * dim_head` -> `query_dim`; keys and values from `context_dim`
    /// (`None`: self-attention). `qkv_bias`: diffusers' `bias` (false in SDXL's transformer blocks).
    pub fn new(
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        dim_head: usize,
        qkv_bias: bool,
        device: &B::Device,
    ) -> Self {
        let inner = heads * dim_head;
        let context = context_dim.unwrap_or(query_dim);
        let linear = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        Self {
            to_q: linear(query_dim, inner, qkv_bias),
            to_k: linear(context, inner, qkv_bias),
            to_v: linear(context, inner, qkv_bias),
            to_out: vec![linear(inner, query_dim, true)],
            heads,
            attention_mode: AttentionMode::Composed,
        }
    }

    /// x: [batch, queries, query_dim]; context: [batch, keys, context_dim] (None: x).
    /// Returns [batch, queries, query_dim].
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.to_q.forward(x);
        let k = self.to_k.forward(context.clone());
        let v = self.to_v.forward(context);
        self.to_out[0].forward(multi_head_attention(
            q,
            k,
            v,
            self.heads,
            self.attention_mode,
        ))
    }
}

/// Scaled dot-product attention over projected tokens: q [batch, n, inner], k and v
/// [batch, m, inner], split into `heads`; returns [batch, n, inner]. Softmax in the input dtype.
pub fn multi_head_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    attention_mode: AttentionMode,
) -> Tensor<B, 3> {
    let [batch, n, inner] = q.dims();
    let m = k.dims()[1];
    let d = inner / heads;
    let split = |t: Tensor<B, 3>, len| t.reshape([batch, len, heads, d]).swap_dims(1, 2);
    let (q, k, v) = (split(q, n), split(k, m), split(v, m));
    if attention_mode == AttentionMode::Fused {
        let options = burn::tensor::ops::AttentionModuleOptions::default();
        let out = burn::tensor::module::attention(q, k, v, None, None, options);
        return out.swap_dims(1, 2).reshape([batch, n, inner]);
    }
    let kt = k.swap_dims(2, 3);
    let scale = (d as f64).powf(-0.5);
    let attend =
        |q: Tensor<B, 4>| softmax(q.matmul(kt.clone()).mul_scalar(scale), 3).matmul(v.clone());
    let out = match attention_mode {
        AttentionMode::QueryChunks(chunk) if chunk > 0 && chunk < n => {
            let parts = (0..n)
                .step_by(chunk)
                .map(|start| {
                    attend(q.clone().slice([
                        0..batch,
                        0..heads,
                        start..(start + chunk).min(n),
                        0..d,
                    ]))
                })
                .collect();
            Tensor::cat(parts, 2)
        }
        _ => attend(q),
    };
    out.swap_dims(1, 2).reshape([batch, n, inner])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = burn::backend::Flex;

    #[test]
    fn chunked_attention_equals_full_attention() {
        let device = Default::default();
        for (batch, n, m, heads, d, chunk) in [
            (2, 15, 15, 1, 16, 4),
            (2, 24, 9, 2, 8, 7),
            (1, 10, 10, 1, 4, 3),
        ] {
            let r = |len| {
                Tensor::<B, 3>::random(
                    [batch, len, heads * d],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )
            };
            let (q, k, v) = (r(n), r(m), r(m));
            let full = multi_head_attention(
                q.clone(),
                k.clone(),
                v.clone(),
                heads,
                AttentionMode::Composed,
            );
            let chunked = multi_head_attention(q, k, v, heads, AttentionMode::QueryChunks(chunk));
            let diff = (full - chunked).abs().max().into_scalar();
            assert!(
                diff < 1e-5,
                "batch {batch} n {n} heads {heads} chunk {chunk}: diff {diff}"
            );
        }
    }
}
