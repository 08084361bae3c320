//! Adapters under block-level gradient checkpointing, which recomputes a module's blocks from
//! their parameters and collects the parameters' own gradients: the adapted weights are merged
//! without a graph and made trainable leaves ([`Lora::mark_adapted`]), and their gradients are
//! carried to `A` and `B` by the chain rule of `W + s B A` ([`Lora::grads_from_merged`]).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use sharpen_nn::path::ModulePath;

use crate::target::{weight_at, WeightKind};
use crate::{Lora, LoraError};

impl<B: AutodiffBackend> Lora<B> {
    /// `merged`, a module with these adapters already merged in and no graph (for example
    /// `M::from_inner(lora.valid().merge(base.valid(), ..))`), with exactly the adapted weights
    /// set to require gradients and everything else frozen. Returns it and each layer's weight
    /// id, in layer order.
    pub fn mark_adapted<M: Module<B>>(
        &self,
        merged: M,
        checkpoint_key: &dyn Fn(&str) -> String,
    ) -> Result<(M, Vec<ParamId>), LoraError> {
        let mut marker = Marker {
            path: ModulePath::default(),
            key: checkpoint_key,
            layers: self
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| (l.target.name.clone(), i))
                .collect(),
            ids: vec![None; self.layers.len()],
        };
        let module = merged.no_grad().map(&mut marker);
        let mut ids = Vec::with_capacity(marker.ids.len());
        let mut missing = Vec::new();
        for (layer, id) in self.layers.iter().zip(marker.ids) {
            match id {
                Some(id) => ids.push(id),
                None => missing.push(layer.target.name.clone()),
            }
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(LoraError::Unmatched { names: missing });
        }
        Ok((module, ids))
    }

    /// The adapters' gradients from those of the merged weights (`ids` from
    /// [`Self::mark_adapted`], removed from `merged`): with `W' = W + s B A` and `s = scale *
    /// alpha / rank`, d/dA = s Bᵀ dW' and d/dB = s dW' Aᵀ (dW' in PyTorch's [out, fan_in]
    /// layout, as f32). A weight the loss did not reach gives its layer no gradient.
    pub fn grads_from_merged(
        &self,
        merged: &mut GradientsParams,
        ids: &[ParamId],
        scale: f64,
    ) -> GradientsParams {
        let mut out = GradientsParams::new();
        for (layer, &id) in self.layers.iter().zip(ids) {
            let kind = &layer.target.kind;
            let grad: Option<Tensor<B::InnerBackend, 2>> = match kind {
                // burn's Linear stores [in, out].
                WeightKind::Linear { .. } => merged
                    .remove::<B::InnerBackend, 2>(id)
                    .map(|g| g.swap_dims(0, 1)),
                WeightKind::Conv { .. } => merged
                    .remove::<B::InnerBackend, 4>(id)
                    .map(|g| g.reshape([kind.out(), kind.fan_in()])),
            };
            let Some(grad) = grad else { continue };
            let a = layer.lora_a.val().inner();
            let b = layer.lora_b.val().inner();
            let grad = grad.cast(a.dtype());
            let s = scale * layer.scaling();
            let grad_a = b.clone().transpose().matmul(grad.clone()).mul_scalar(s);
            let grad_b = grad.matmul(a.transpose()).mul_scalar(s);
            out.register(layer.lora_a.id, grad_a);
            out.register(layer.lora_b.id, grad_b);
        }
        out
    }
}

struct Marker<'a> {
    path: ModulePath,
    key: &'a dyn Fn(&str) -> String,
    layers: HashMap<String, usize>,
    ids: Vec<Option<ParamId>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Marker<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.path.exit(container_type);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dims = param.shape().dims::<D>();
        let Some(found) = weight_at(&self.path, self.key, &dims) else {
            return param;
        };
        let Some(&i) = self.layers.get(&found.name) else {
            return param;
        };
        self.ids[i] = Some(param.id);
        param.set_require_grad(true)
    }
}
