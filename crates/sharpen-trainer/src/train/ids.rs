//! Parameter ids from module paths, so that optimizer state saved by one process finds its
//! parameters in a model rebuilt and reloaded by another.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

struct PathIds {
    path: Vec<String>,
}

/// FNV-1a, 64 bits.
fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl<B: Backend> ModuleMapper<B> for PathIds {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(ParamId::from(hash(&self.path.join("."))), tensor, mapper)
    }
}

/// `module` with every float parameter's id derived from its path.
pub fn with_path_ids<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut PathIds { path: Vec::new() })
}
