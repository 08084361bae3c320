//! Data-parallel training on burn-collective: one peer (a thread) per device, each computing the
//! gradients of its rows of the global batch; before every optimizer step the gradients are
//! averaged by an all-reduce, so every peer applies the same update to the same weights and the
//! run equals one device training on the whole batch.
//!
//! A group of one is a plain run: no collective is joined and every operation is the identity.

use std::collections::HashMap;
use std::marker::PhantomData;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("data-parallel peer {rank} of {world}: {op} failed: {message}")]
    Collective {
        rank: usize,
        world: usize,
        op: &'static str,
        message: String,
    },
    #[error("data-parallel group: rank {rank} is not below the group's size {world}")]
    Rank { rank: usize, world: usize },
}

/// One member of a data-parallel group in this process (the inner, non-autodiff backend: the
/// collective moves plain tensors). Leaves the group when dropped.
pub struct Peer<B: Backend> {
    rank: usize,
    world: usize,
    device: B::Device,
    /// Values per all-reduce call when averaging gradients.
    bucket: usize,
    _backend: PhantomData<B>,
}

impl<B: Backend> Peer<B> {
    /// Joins the group as `rank` of `world` peers on `device`; returns once every peer has
    /// joined. One group per process at a time (burn-collective's local server is global).
    pub fn join(rank: usize, world: usize, device: B::Device) -> Result<Self, SyncError> {
        if rank >= world {
            return Err(SyncError::Rank { rank, world });
        }
        let peer = Self {
            rank,
            world,
            device,
            bucket: BUCKET_ELEMENTS,
            _backend: PhantomData,
        };
        if world > 1 {
            let config = CollectiveConfig::default().with_num_devices(world);
            burn_collective::register::<B>(PeerId(rank as u32), peer.device.clone(), config)
                .map_err(|e| peer.error("joining", e))?;
        }
        Ok(peer)
    }

    /// A group of one: every operation is the identity.
    pub fn alone(device: B::Device) -> Self {
        Self {
            rank: 0,
            world: 1,
            device,
            bucket: BUCKET_ELEMENTS,
            _backend: PhantomData,
        }
    }

    /// Sets the values per all-reduce call when averaging gradients (default
    /// [`BUCKET_ELEMENTS`]).
    pub fn with_bucket(mut self, elements: usize) -> Self {
        self.bucket = elements.max(1);
        self
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// The peer that writes checkpoints, metrics and samples.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    fn error(&self, op: &'static str, e: impl std::fmt::Debug) -> SyncError {
        SyncError::Collective {
            rank: self.rank,
            world: self.world,
            op,
            message: format!("{e:?}"),
        }
    }

    fn reduce<const D: usize>(
        &self,
        t: Tensor<B, D>,
        op: ReduceOperation,
    ) -> Result<Tensor<B, D>, SyncError> {
        if self.world == 1 {
            return Ok(t);
        }
        let out = burn_collective::all_reduce::<B>(
            PeerId(self.rank as u32),
            t.into_primitive().tensor(),
            op,
        )
        .map_err(|e| self.error("all-reduce", e))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// The mean of `t` over the group, on every peer.
    pub fn mean<const D: usize>(&self, t: Tensor<B, D>) -> Result<Tensor<B, D>, SyncError> {
        self.reduce(t, ReduceOperation::Mean)
    }

    /// Every peer's `values` (the same count on each), in rank order: for metrics.
    pub fn gather(&self, values: &[f32]) -> Result<Vec<Vec<f32>>, SyncError> {
        let n = values.len();
        let mut slots = vec![0.0f32; self.world * n];
        slots[self.rank * n..(self.rank + 1) * n].copy_from_slice(values);
        let t = Tensor::<B, 1>::from_data(TensorData::new(slots, [self.world * n]), &self.device);
        let all = self.reduce(t, ReduceOperation::Sum)?;
        let all = all
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| self.error("reading a gathered tensor", e))?;
        Ok(all.chunks(n.max(1)).map(<[f32]>::to_vec).collect())
    }

    /// Returns once every peer has called it (before and after rank 0 writes a checkpoint).
    pub fn barrier(&self) -> Result<(), SyncError> {
        self.gather(&[0.0]).map(|_| ())
    }

    /// Averages `grads` over the group. The trainable parameters' gradients, in the module's
    /// visiting order (the same on every peer), are flattened into buckets of about
    /// [`Peer::with_bucket`] values and each bucket is all-reduced once (as PyTorch's DDP does), not
    /// one collective call per tensor. A trainable parameter without a gradient on this peer
    /// takes part with zeros, so that every peer reduces the same buckets.
    pub fn all_reduce_grads<AB, M>(
        &self,
        module: &M,
        grads: &mut GradientsParams,
    ) -> Result<(), SyncError>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        if self.world == 1 {
            return Ok(());
        }
        let mut flat = Flatten {
            grads,
            flat: Vec::new(),
        };
        module.visit(&mut flat);
        let mut reduced: Vec<(ParamId, Tensor<B, 1>)> = Vec::with_capacity(flat.flat.len());
        let mut bucket: Vec<(ParamId, Tensor<B, 1>)> = Vec::new();
        let mut size = 0;
        let total = flat.flat.len();
        for (k, (id, g)) in flat.flat.into_iter().enumerate() {
            size += g.dims()[0];
            bucket.push((id, g));
            if size >= self.bucket || k + 1 == total {
                let lengths: Vec<usize> = bucket.iter().map(|(_, g)| g.dims()[0]).collect();
                let (ids, parts): (Vec<ParamId>, Vec<Tensor<B, 1>>) = bucket.drain(..).unzip();
                let mean = self.mean(Tensor::cat(parts, 0))?;
                let mut start = 0;
                for (id, len) in ids.into_iter().zip(lengths) {
                    reduced.push((id, mean.clone().slice(start..start + len)));
                    start += len;
                }
                size = 0;
            }
        }
        module.visit(&mut Unflatten {
            grads,
            reduced: reduced.into_iter().collect(),
        });
        Ok(())
    }
}

/// Values per all-reduce call when averaging gradients (64 MiB of f32).
pub const BUCKET_ELEMENTS: usize = 1 << 24;

impl<B: Backend> Drop for Peer<B> {
    fn drop(&mut self) {
        if self.world > 1 {
            if let Err(e) = burn_collective::finish_collective::<B>(PeerId(self.rank as u32)) {
                tracing::warn!(rank = self.rank, error = ?e, "leaving the data-parallel group");
            }
        }
    }
}

/// The trainable parameters' gradients as 1-d tensors, in visiting order.
struct Flatten<'a, B: Backend> {
    grads: &'a mut GradientsParams,
    flat: Vec<(ParamId, Tensor<B, 1>)>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Flatten<'_, AB::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let grad = self
            .grads
            .remove::<AB::InnerBackend, D>(param.id)
            .unwrap_or_else(|| value.inner().zeros_like());
        let n = grad.shape().num_elements();
        self.flat.push((param.id, grad.reshape([n])));
    }
}

/// Puts the averaged gradients back, in their parameters' shapes.
struct Unflatten<'a, B: Backend> {
    grads: &'a mut GradientsParams,
    reduced: HashMap<ParamId, Tensor<B, 1>>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Unflatten<'_, AB::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if let Some(flat) = self.reduced.remove(&param.id) {
            let dims: [usize; D] = param.val().dims();
            self.grads.register(param.id, flat.reshape(dims));
        }
    }
}

/// Releases every peer of this process's group that waits in a collective operation (each gets
/// an error): what a failing peer does so that the others stop instead of hanging.
pub fn abort_group<B: Backend>() {
    burn_collective::reset_collective::<B>();
}
