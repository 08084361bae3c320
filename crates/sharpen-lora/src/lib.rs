//! LoRA adapters (Hu et al. 2021) as PEFT defines them, for any burn module: a low-rank update
//! `W + (alpha / rank) * B A` of chosen Linear and Conv2d weights, the modules chosen by PEFT's
//! `target_modules` rule (a module's checkpoint name or a dot-separated suffix of it).
//!
//! Adapters are applied by merging: [`Lora::merge`] returns the module with every targeted weight
//! replaced by `W + scale * (alpha / rank) * B A`. On an autodiff backend with the base frozen
//! (`no_grad`), gradients reach only `A` and `B`; the same call merges trained or downloaded
//! adapters for inference at no per-step cost. Backend-generic; no IO (file layouts live in
//! `sharpen-weights`).

mod config;
mod leaves;
mod merge;
mod target;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

pub use config::LoraConfig;
pub use target::{find_targets, linear_and_conv_weights, matches, LoraTarget, WeightKind};

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("lora target module `{target}` matches no Linear or Conv2d module of the model")]
    NoMatch { target: String },
    #[error("lora layer `{name}`: {message}")]
    Shape { name: String, message: String },
    #[error("lora layers name modules the model does not have: {}", names.join(", "))]
    Unmatched { names: Vec<String> },
}

/// One adapted weight: PEFT's `lora_A` (flattened to [rank, fan_in]) and `lora_B` ([out, rank]).
#[derive(Module, Debug)]
pub struct LoraLayer<B: Backend> {
    pub lora_a: Param<Tensor<B, 2>>,
    pub lora_b: Param<Tensor<B, 2>>,
    /// The adapted module (checkpoint naming) and its weight's shape.
    #[module(skip)]
    pub target: LoraTarget,
    #[module(skip)]
    pub alpha: f64,
}

impl<B: Backend> LoraLayer<B> {
    pub fn rank(&self) -> usize {
        self.lora_a.dims()[0]
    }

    /// `alpha / rank`.
    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank() as f64
    }

    /// `scale * (alpha / rank) * B A`: [out, fan_in], PyTorch's layout of the weight (conv
    /// weights flattened over [in, kh, kw]).
    pub fn delta(&self, scale: f64) -> Tensor<B, 2> {
        self.lora_b
            .val()
            .matmul(self.lora_a.val())
            .mul_scalar(scale * self.scaling())
    }
}

/// Adapters for a set of a module's weights.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    pub layers: Vec<LoraLayer<B>>,
}

/// One adapter's tensors as files hold them (PEFT layout: `lora_A` [rank, in] or
/// [rank, in, kh, kw], `lora_B` [out, rank] or [out, rank, 1, 1]).
#[derive(Debug, Clone)]
pub struct LoraPart {
    pub target: LoraTarget,
    pub lora_a: TensorData,
    pub lora_b: TensorData,
    pub alpha: f64,
}

impl<B: Backend> Lora<B> {
    /// Fresh adapters as PEFT initialises them: `A` Kaiming-uniform (a = sqrt 5, i.e. uniform in
    /// ±1/sqrt(fan_in)) from `uniform` (values in [0, 1)), `B` zero, so the merged module starts
    /// equal to the base.
    pub fn init(
        targets: Vec<LoraTarget>,
        rank: usize,
        alpha: f64,
        uniform: &mut dyn FnMut() -> f64,
        device: &B::Device,
    ) -> Self {
        let layers = targets
            .into_iter()
            .map(|target| {
                let fan_in = target.kind.fan_in();
                let bound = 1.0 / (fan_in as f64).sqrt();
                let a: Vec<f32> = (0..rank * fan_in)
                    .map(|_| ((2.0 * uniform() - 1.0) * bound) as f32)
                    .collect();
                let out = target.kind.out();
                LoraLayer {
                    lora_a: Param::from_tensor(Tensor::from_data(
                        TensorData::new(a, [rank, fan_in]),
                        device,
                    )),
                    lora_b: Param::from_tensor(Tensor::zeros([out, rank], device)),
                    target,
                    alpha,
                }
            })
            .collect();
        Self { layers }
    }

    /// Adapters from file tensors, each checked against its target's shape.
    pub fn from_parts(parts: Vec<LoraPart>, device: &B::Device) -> Result<Self, LoraError> {
        let layers = parts
            .into_iter()
            .map(|part| {
                let kind = &part.target.kind;
                let bad = |message: String| LoraError::Shape {
                    name: part.target.name.clone(),
                    message,
                };
                let rank = *part
                    .lora_a
                    .shape
                    .first()
                    .ok_or_else(|| bad("lora_A is a scalar".into()))?;
                if rank == 0 {
                    return Err(bad("rank 0".into()));
                }
                for (which, data, want) in [
                    ("lora_A", &part.lora_a, kind.lora_a_shape(rank)),
                    ("lora_B", &part.lora_b, kind.lora_b_shape(rank)),
                ] {
                    if data.shape.to_vec() != want {
                        return Err(bad(format!(
                            "{which} has shape {:?}, expected {want:?} for a {kind} weight",
                            data.shape.to_vec()
                        )));
                    }
                }
                if !(part.alpha.is_finite() && part.alpha > 0.0) {
                    return Err(bad(format!("alpha must be positive, got {}", part.alpha)));
                }
                let flat = |data: TensorData, rows: usize| {
                    let cols = data.num_elements() / rows;
                    let values = data.convert::<f32>().to_vec::<f32>().expect("f32 values");
                    Tensor::<B, 2>::from_data(TensorData::new(values, [rows, cols]), device)
                };
                let lora_b = flat(part.lora_b, kind.out());
                Ok(LoraLayer {
                    lora_a: Param::from_tensor(flat(part.lora_a, rank)),
                    lora_b: Param::from_tensor(lora_b),
                    target: part.target,
                    alpha: part.alpha,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { layers })
    }

    /// The adapters' tensors in PEFT layout, with their targets and alphas.
    pub fn parts(&self) -> Vec<LoraPart> {
        self.layers
            .iter()
            .map(|layer| {
                let rank = layer.rank();
                let kind = &layer.target.kind;
                let data = |t: Tensor<B, 2>, shape: Vec<usize>| {
                    let values = t.into_data().convert::<f32>().to_vec::<f32>();
                    TensorData::new(values.expect("f32 values"), shape)
                };
                LoraPart {
                    target: layer.target.clone(),
                    lora_a: data(layer.lora_a.val(), kind.lora_a_shape(rank)),
                    lora_b: data(layer.lora_b.val(), kind.lora_b_shape(rank)),
                    alpha: layer.alpha,
                }
            })
            .collect()
    }

    /// Trainable values (both matrices of every layer).
    pub fn num_params(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.lora_a.val().shape().num_elements() + l.lora_b.val().shape().num_elements())
            .sum()
    }
}
