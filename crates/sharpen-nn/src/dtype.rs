//! Casting a whole module's parameters to one dtype (bf16/f16 compute on a GPU, say).

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};

struct Cast(DType);

impl<B: Backend> ModuleMapper<B> for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        param.map(|t| if t.dtype() == dtype { t } else { t.cast(dtype) })
    }
}

/// Every float parameter of `module` stored in `dtype` (F32, F16, BF16). Parameter ids and
/// trainability are kept. Loading with `sharpen_weights::load_module_as` casts at load instead,
/// without materialising an f32 copy; this is for modules built in memory (benchmarks, new heads).
pub fn cast_module<B: Backend, M: Module<B>>(module: M, dtype: DType) -> M {
    module.map(&mut Cast(dtype))
}

struct RequireGrad;

impl<B: AutodiffBackend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

/// `module` with every float parameter a trainable leaf (for a copy lifted with `from_inner`,
/// which starts frozen).
pub fn require_grad_all<B: AutodiffBackend, M: Module<B>>(module: M) -> M {
    module.map(&mut RequireGrad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::nn::LinearConfig;

    #[test]
    fn casts_every_parameter_and_keeps_ids() {
        let device = Default::default();
        let linear = LinearConfig::new(3, 2).init::<Flex>(&device);
        let id = linear.weight.id;
        let cast = cast_module(linear, DType::F16);
        assert_eq!(cast.weight.val().dtype(), DType::F16);
        assert_eq!(cast.bias.as_ref().expect("bias").val().dtype(), DType::F16);
        assert_eq!(cast.weight.id, id);
    }
}
