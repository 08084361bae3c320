//! Exponential moving average of the trained weights (`ema = decay * ema + (1 - decay) * w`
//! after every optimizer step), kept without autograd and matched to the live weights by
//! parameter id.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

struct Collect<B: Backend> {
    out: HashMap<ParamId, TensorPrimitive<B>>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.insert(param.id, param.val().into_primitive());
    }
}

struct Blend<B: Backend> {
    current: HashMap<ParamId, TensorPrimitive<B>>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, ema, mapper) = param.consume();
        let blended = match self.current.remove(&id) {
            Some(w) => {
                let w = Tensor::<B, D>::from_primitive(w);
                ema.mul_scalar(self.decay) + w.mul_scalar(1.0 - self.decay)
            }
            // A parameter the live model lacks cannot happen for a copy of it; keep the average.
            None => ema,
        };
        Param::from_mapped_value(id, blended, mapper)
    }
}

/// `ema` moved toward `current` (same module, same parameter ids) by `1 - decay`.
pub fn update<B: Backend, M: Module<B>>(ema: M, current: &M, decay: f64) -> M {
    let mut collect = Collect {
        out: HashMap::new(),
    };
    current.visit(&mut collect);
    ema.map(&mut Blend {
        current: collect.out,
        decay,
    })
}
