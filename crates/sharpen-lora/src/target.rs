//! Which weights of a module can carry adapters, and PEFT's rule for choosing them.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use sharpen_nn::path::ModulePath;

use crate::LoraError;

/// The shape of an adapted weight, in PyTorch terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightKind {
    /// `nn.Linear`: weight [out, in].
    Linear { fan_in: usize, out: usize },
    /// `nn.Conv2d`: weight [out, in, kh, kw]; PEFT's adapter is a conv of the same kernel to
    /// `rank` channels, then a 1x1 conv.
    Conv {
        out: usize,
        in_channels: usize,
        kernel: [usize; 2],
    },
}

impl WeightKind {
    pub fn fan_in(&self) -> usize {
        match *self {
            Self::Linear { fan_in, .. } => fan_in,
            Self::Conv {
                in_channels,
                kernel,
                ..
            } => in_channels * kernel[0] * kernel[1],
        }
    }

    pub fn out(&self) -> usize {
        match *self {
            Self::Linear { out, .. } | Self::Conv { out, .. } => out,
        }
    }

    /// PEFT's `lora_A.weight` shape.
    pub fn lora_a_shape(&self, rank: usize) -> Vec<usize> {
        match *self {
            Self::Linear { fan_in, .. } => vec![rank, fan_in],
            Self::Conv {
                in_channels,
                kernel,
                ..
            } => vec![rank, in_channels, kernel[0], kernel[1]],
        }
    }

    /// PEFT's `lora_B.weight` shape.
    pub fn lora_b_shape(&self, rank: usize) -> Vec<usize> {
        match *self {
            Self::Linear { out, .. } => vec![out, rank],
            Self::Conv { out, .. } => vec![out, rank, 1, 1],
        }
    }
}

impl std::fmt::Display for WeightKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Linear { fan_in, out } => write!(f, "Linear [{out}, {fan_in}]"),
            Self::Conv {
                out,
                in_channels,
                kernel,
            } => write!(
                f,
                "Conv2d [{out}, {in_channels}, {}, {}]",
                kernel[0], kernel[1]
            ),
        }
    }
}

/// An adaptable module: its checkpoint name (no `.weight`) and weight shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraTarget {
    pub name: String,
    pub kind: WeightKind,
}

/// PEFT's `target_modules` rule: the full module name, or a suffix of whole dot-separated parts.
pub fn matches(name: &str, target: &str) -> bool {
    name == target
        || name
            .strip_suffix(target)
            .is_some_and(|head| head.ends_with('.'))
}

/// Every Linear and Conv2d weight of `module`, named as checkpoints name the module
/// (`checkpoint_key` maps module paths to checkpoint keys, e.g. the UNet's `ff.net_2` -> `ff.net.2`).
pub fn linear_and_conv_weights<B: Backend, M: Module<B>>(
    module: &M,
    checkpoint_key: &dyn Fn(&str) -> String,
) -> Vec<LoraTarget> {
    let mut visitor = Weights {
        path: ModulePath::default(),
        key: checkpoint_key,
        out: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

/// The weights `targets` select (PEFT's rule), in module order. A target that selects nothing is
/// an error that names it.
pub fn find_targets<B: Backend, M: Module<B>>(
    module: &M,
    targets: &[String],
    checkpoint_key: &dyn Fn(&str) -> String,
) -> Result<Vec<LoraTarget>, LoraError> {
    let all = linear_and_conv_weights(module, checkpoint_key);
    if let Some(t) = targets
        .iter()
        .find(|t| !all.iter().any(|w| matches(&w.name, t)))
    {
        return Err(LoraError::NoMatch { target: t.clone() });
    }
    Ok(all
        .into_iter()
        .filter(|w| targets.iter().any(|t| matches(&w.name, t)))
        .collect())
}

/// The checkpoint module name of the weight being visited, and its kind, when it is the weight
/// of a Linear or a Conv2d.
pub(crate) fn weight_at(
    path: &ModulePath,
    checkpoint_key: &dyn Fn(&str) -> String,
    dims: &[usize],
) -> Option<LoraTarget> {
    let (key, _) = path.key(dims.len());
    let name = checkpoint_key(&key).strip_suffix(".weight")?.to_string();
    let kind = match (path.module_type()?, dims) {
        ("Linear", &[fan_in, out]) => WeightKind::Linear { fan_in, out },
        ("Conv2d", &[out, in_channels, kh, kw]) => WeightKind::Conv {
            out,
            in_channels,
            kernel: [kh, kw],
        },
        _ => return None,
    };
    Some(LoraTarget { name, kind })
}

struct Weights<'a> {
    path: ModulePath,
    key: &'a dyn Fn(&str) -> String,
    out: Vec<LoraTarget>,
}

impl<B: Backend> ModuleVisitor<B> for Weights<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.path.exit(container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(t) = weight_at(&self.path, self.key, &param.shape().dims::<D>()) {
            self.out.push(t);
        }
    }
}
