//! Merging adapters into their module's weights.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use sharpen_nn::path::ModulePath;

use crate::target::{weight_at, WeightKind};
use crate::{Lora, LoraError};

impl<B: Backend> Lora<B> {
    /// `module` with every adapted weight replaced by `W + scale * (alpha / rank) * B A` (in the
    /// weight's dtype). Every layer must find its weight, with the shape it was made for.
    /// Differentiable in the adapters: on an autodiff backend the result's graph reaches `A` and
    /// `B` (freeze the base with `no_grad` to train only them).
    pub fn merge<M: Module<B>>(
        &self,
        module: M,
        scale: f64,
        checkpoint_key: &dyn Fn(&str) -> String,
    ) -> Result<M, LoraError> {
        let mut merger = Merger {
            path: ModulePath::default(),
            key: checkpoint_key,
            deltas: self
                .layers
                .iter()
                .map(|l| {
                    (
                        l.target.name.clone(),
                        (l.target.kind.clone(), l.delta(scale)),
                    )
                })
                .collect(),
            wrong: Vec::new(),
        };
        let merged = module.map(&mut merger);
        if let Some(message) = merger.wrong.into_iter().next() {
            return Err(message);
        }
        if !merger.deltas.is_empty() {
            let mut names: Vec<String> = merger.deltas.into_keys().collect();
            names.sort();
            return Err(LoraError::Unmatched { names });
        }
        Ok(merged)
    }
}

struct Merger<'a, B: Backend> {
    path: ModulePath,
    key: &'a dyn Fn(&str) -> String,
    deltas: HashMap<String, (WeightKind, Tensor<B, 2>)>,
    wrong: Vec<LoraError>,
}

impl<B: Backend> ModuleMapper<B> for Merger<'_, B> {
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
        let Some((kind, delta)) = self.deltas.remove(&found.name) else {
            return param;
        };
        if kind != found.kind {
            self.wrong.push(LoraError::Shape {
                name: found.name,
                message: format!("made for a {kind} weight, the model has {}", found.kind),
            });
            return param;
        }
        param.map(|w| {
            // burn's Linear stores [in, out]; conv weights are PyTorch's [out, in, kh, kw].
            let delta = match kind {
                WeightKind::Linear { .. } => delta.swap_dims(0, 1),
                WeightKind::Conv { .. } => delta,
            };
            let dtype = w.dtype();
            let delta: Tensor<B, D> = delta.reshape(dims).cast(dtype);
            w + delta
        })
    }
}
