//! Gradient maps over a module's parameters: global-norm clipping, scaling, casting.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};

/// Sums the squared gradients on the device; one host read at the end, not one per parameter.
struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.cast(DType::F32).powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

/// What [`Rewrite`] does to each parameter's gradient.
#[derive(Clone, Copy)]
enum Op {
    Scale(f64),
    /// To this dtype; a gradient already in it is left alone (no per-step work in f32).
    Cast(DType),
}

/// Rewrites the gradient of every visited parameter in place.
struct Rewrite<'a> {
    grads: &'a mut GradientsParams,
    op: Op,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Rewrite<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Op::Cast(dtype) = self.op {
            let stale = self
                .grads
                .get::<B::InnerBackend, D>(param.id)
                .is_some_and(|g| g.dtype() != dtype);
            if !stale {
                return;
            }
        }
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let g = match self.op {
                Op::Scale(factor) => g.mul_scalar(factor),
                Op::Cast(dtype) => g.cast(dtype),
            };
            self.grads.register(param.id, g);
        }
    }
}

/// The global L2 norm of `grads` over `module`'s parameters.
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut v = SquaredNorm::<B> { grads, total: None };
    module.visit(&mut v);
    v.total.map_or(0.0, |t| {
        t.into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .expect("a float sum")[0]
            .sqrt()
    })
}

/// Scales `grads` so that their global norm is at most `max_norm`; returns the norm before.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_norm::<B, M>(module, grads);
    if norm.is_finite() && norm > max_norm {
        let op = Op::Scale(max_norm / (norm + 1e-6));
        module.visit(&mut Rewrite { grads, op });
    }
    norm
}

/// Multiplies every gradient of `module`'s parameters by `factor`.
pub fn scale<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    factor: f64,
) {
    module.visit(&mut Rewrite {
        grads,
        op: Op::Scale(factor),
    });
}

/// Casts the gradient of each of `module`'s parameters in `grads` to `dtype` (gradients of a
/// reduced-precision copy with the same parameter ids, for f32 master weights).
pub fn cast_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &mut GradientsParams,
    dtype: DType,
) {
    module.visit(&mut Rewrite {
        grads,
        op: Op::Cast(dtype),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    /// A 2 -> 1 linear layer and gradients: weight [3, 4] (norm 5), bias [12] (norm 12).
    fn layer() -> (Linear<B>, GradientsParams) {
        let device = Default::default();
        let linear = LinearConfig::new(2, 1).init::<B>(&device);
        let mut grads = GradientsParams::new();
        let w = Tensor::<Flex, 2>::from_data(TensorData::new(vec![3.0f32, 4.0], [2, 1]), &device);
        let b = Tensor::<Flex, 1>::from_data(TensorData::new(vec![12.0f32], [1]), &device);
        grads.register(linear.weight.id, w);
        grads.register(linear.bias.as_ref().unwrap().id, b);
        (linear, grads)
    }

    fn values<const D: usize>(grads: &GradientsParams, p: &Param<Tensor<B, D>>) -> Vec<f32> {
        let g = grads.get::<Flex, D>(p.id).unwrap();
        g.cast(DType::F32).into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn norm_clipping_scaling_and_casting() {
        let (linear, mut grads) = layer();
        assert!((global_norm::<B, _>(&linear, &grads) - 13.0).abs() < 1e-6);
        let before = clip_global_norm::<B, _>(&linear, &mut grads, 6.5);
        assert!((before - 13.0).abs() < 1e-6, "the norm before clipping");
        assert!((global_norm::<B, _>(&linear, &grads) - 6.5).abs() < 1e-4);
        scale::<B, _>(&linear, &mut grads, 2.0);
        let bias = linear.bias.as_ref().unwrap();
        assert!((values(&grads, bias)[0] - 12.0).abs() < 1e-3);
        // Under the limit nothing changes.
        assert!((clip_global_norm::<B, _>(&linear, &mut grads, 100.0) - 13.0).abs() < 1e-3);

        // Casting: a bf16 gradient becomes f32 with its values; an f32 one stays as it is.
        let weight_bf16 = grads
            .remove::<Flex, 2>(linear.weight.id)
            .unwrap()
            .cast(DType::BF16);
        grads.register(linear.weight.id, weight_bf16);
        cast_grads::<B, _>(&linear, &mut grads, DType::F32);
        let w = grads.get::<Flex, 2>(linear.weight.id).unwrap();
        assert_eq!(w.dtype(), DType::F32);
        assert_eq!(values(&grads, &linear.weight), [3.0, 4.0]);
        assert_eq!(grads.get::<Flex, 1>(bias.id).unwrap().dtype(), DType::F32);
    }
}
