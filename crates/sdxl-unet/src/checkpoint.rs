//! Block-level gradient checkpointing for the UNet.
//!
//! burn's own checkpointing recomputes only cheap element-wise ops and keeps every matmul and
//! convolution input. Here the forward pass runs without an autodiff graph and keeps only what
//! enters each block (resnet, transformer, down/upsampler, the skip connections); the backward pass
//! walks the blocks in reverse, rebuilds one block's graph at a time from its saved inputs,
//! backpropagates the incoming gradient through it, and accumulates the parameter gradients.
//! Peak memory is then the saved block inputs plus one block's graph, instead of every
//! intermediate of the whole network.
//!
//! Each block's backward is its own `backward()` call (burn's autodiff cannot nest one inside
//! another), so the result is [`GradientsParams`], ready for an optimizer, rather than a tensor
//! that joins a larger graph. [`UNet2DConditionModel::checkpointed_grads`] takes the loss as a
//! closure of the UNet output; losses over several UNet calls are built from
//! [`UNet2DConditionModel::forward_checkpointed`] and [`UNetTape::backward`] per call.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use crate::unet::{AddedCond, UNet2DConditionModel, UNetInput};

/// Where a block reads or writes: the running hidden state, the time embedding, or a skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Hidden,
    Emb,
    Skip(usize),
}

/// One recomputable unit of the UNet, in forward order.
#[derive(Debug, Clone, Copy)]
enum Unit {
    /// Time + added-condition embedding -> Emb.
    Embed,
    /// conv_in(sample) -> Hidden.
    ConvIn,
    /// Hidden -> Skip(k) (identity).
    Save(usize),
    DownResnet(usize, usize),
    DownAttn(usize, usize),
    Downsample(usize),
    MidResnet(usize),
    MidAttn(usize),
    /// cat(Hidden, Skip(k)) -> resnet -> Hidden.
    UpResnet(usize, usize, usize),
    UpAttn(usize, usize),
    /// Upsample to the spatial size of Skip(k) (the next level's skips), or 2x on the last level.
    Upsample(usize, Option<usize>),
    /// conv_out(silu(norm(Hidden))).
    Out,
}

impl Unit {
    fn inputs(&self) -> Vec<Slot> {
        use Slot::{Emb, Hidden, Skip};
        match *self {
            Unit::Embed | Unit::ConvIn => vec![],
            Unit::Save(_)
            | Unit::DownAttn(..)
            | Unit::Downsample(_)
            | Unit::MidAttn(_)
            | Unit::UpAttn(..)
            | Unit::Upsample(_, None)
            | Unit::Out => vec![Hidden],
            Unit::DownResnet(..) | Unit::MidResnet(_) => vec![Hidden, Emb],
            Unit::UpResnet(_, _, k) => vec![Hidden, Skip(k), Emb],
            Unit::Upsample(_, Some(k)) => vec![Hidden, Skip(k)],
        }
    }

    fn output(&self) -> Slot {
        match *self {
            Unit::Embed => Slot::Emb,
            Unit::Save(k) => Slot::Skip(k),
            _ => Slot::Hidden,
        }
    }
}

/// A slot's value: the embedding is [batch, dim], everything else [batch, channels, h, w].
#[derive(Debug, Clone)]
enum Value<B: Backend> {
    Emb(Tensor<B, 2>),
    Map(Tensor<B, 4>),
}

impl<B: Backend> Value<B> {
    fn map(self) -> Tensor<B, 4> {
        match self {
            Value::Map(t) => t,
            Value::Emb(_) => unreachable!("unit plan reads a feature map here"),
        }
    }

    fn emb(self) -> Tensor<B, 2> {
        match self {
            Value::Emb(t) => t,
            Value::Map(_) => unreachable!("unit plan reads the embedding here"),
        }
    }

    fn add(self, other: Self) -> Self {
        match (self, other) {
            (Value::Emb(a), Value::Emb(b)) => Value::Emb(a + b),
            (Value::Map(a), Value::Map(b)) => Value::Map(a + b),
            _ => unreachable!("gradients of one slot have one rank"),
        }
    }
}

/// The inputs every block sees as constants (no gradient flows into them).
#[derive(Debug, Clone)]
struct Constants<B: Backend> {
    sample: Tensor<B, 4>,
    timestep: Tensor<B, 1>,
    context: Tensor<B, 3>,
    added: Option<AddedCond<B>>,
}

fn lift<B: AutodiffBackend>(c: &Constants<B::InnerBackend>) -> Constants<B> {
    Constants {
        sample: Tensor::from_inner(c.sample.clone()),
        timestep: Tensor::from_inner(c.timestep.clone()),
        context: Tensor::from_inner(c.context.clone()),
        added: c.added.as_ref().map(|a| AddedCond {
            text_embeds: Tensor::from_inner(a.text_embeds.clone()),
            time_ids: Tensor::from_inner(a.time_ids.clone()),
        }),
    }
}

/// What [`UNet2DConditionModel::forward_checkpointed`] keeps for the backward pass: each block's
/// inputs (no graph).
#[derive(Debug)]
pub struct UNetTape<B: AutodiffBackend> {
    constants: Constants<B::InnerBackend>,
    steps: Vec<(Unit, Vec<Value<B::InnerBackend>>)>,
}

fn plan(unet: &UNet2DConditionModel<impl Backend>) -> Vec<Unit> {
    let mut units = vec![Unit::Embed, Unit::ConvIn, Unit::Save(0)];
    let mut skips = 1;
    for (b, block) in unet.down_blocks.iter().enumerate() {
        for j in 0..block.resnets.len() {
            units.push(Unit::DownResnet(b, j));
            if j < block.attentions.len() {
                units.push(Unit::DownAttn(b, j));
            }
            units.push(Unit::Save(skips));
            skips += 1;
        }
        if !block.downsamplers.is_empty() {
            units.push(Unit::Downsample(b));
            units.push(Unit::Save(skips));
            skips += 1;
        }
    }
    units.push(Unit::MidResnet(0));
    for j in 0..unet.mid_block.attentions.len() {
        units.push(Unit::MidAttn(j));
        units.push(Unit::MidResnet(j + 1));
    }
    for (b, block) in unet.up_blocks.iter().enumerate() {
        for j in 0..block.resnets.len() {
            skips -= 1;
            units.push(Unit::UpResnet(b, j, skips));
            if j < block.attentions.len() {
                units.push(Unit::UpAttn(b, j));
            }
        }
        if !block.upsamplers.is_empty() {
            // The next level's last skip has the size to upsample to.
            units.push(Unit::Upsample(b, skips.checked_sub(1)));
        }
    }
    units.push(Unit::Out);
    units
}

fn run<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    unit: Unit,
    mut inputs: Vec<Value<B>>,
    c: &Constants<B>,
) -> Value<B> {
    let dtype = unet.dtype();
    let mut next = || inputs.remove(0);
    let map = match unit {
        Unit::Embed => {
            return Value::Emb(unet.embed_time(c.timestep.clone(), c.added.as_ref()));
        }
        Unit::ConvIn => unet.conv_in.forward(c.sample.clone().cast(dtype)),
        Unit::Save(_) => next().map(),
        Unit::DownResnet(b, j) => {
            let (h, emb) = (next().map(), next().emb());
            unet.down_blocks[b].resnets[j].forward(h, Some(&emb))
        }
        Unit::DownAttn(b, j) => unet.down_blocks[b].attentions[j].forward(next().map(), &c.context),
        Unit::Downsample(b) => unet.down_blocks[b].downsamplers[0].forward(next().map()),
        Unit::MidResnet(j) => {
            let (h, emb) = (next().map(), next().emb());
            unet.mid_block.resnets[j].forward(h, Some(&emb))
        }
        Unit::MidAttn(j) => unet.mid_block.attentions[j].forward(next().map(), &c.context),
        Unit::UpResnet(b, j, _) => {
            let (h, skip, emb) = (next().map(), next().map(), next().emb());
            unet.up_blocks[b].resnets[j].forward(Tensor::cat(vec![h, skip], 1), Some(&emb))
        }
        Unit::UpAttn(b, j) => unet.up_blocks[b].attentions[j].forward(next().map(), &c.context),
        Unit::Upsample(b, target) => {
            let h = next().map();
            let size = target.map(|_| {
                let [_, _, hh, ww] = next().map().dims();
                [hh, ww]
            });
            unet.up_blocks[b].upsamplers[0].forward(h, size)
        }
        Unit::Out => {
            let h = next().map();
            unet.conv_out.forward(burn::tensor::activation::silu(
                unet.conv_norm_out.forward(h),
            ))
        }
    };
    Value::Map(map)
}

/// Moves the gradients of the visited parameters from a block's backward into the running total.
struct Collect<'a, B: AutodiffBackend> {
    grads: &'a mut B::Gradients,
    total: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = param.val().grad_remove(self.grads) {
            accumulate::<B::InnerBackend, D>(self.total, param.id, grad);
        }
    }
}

fn accumulate<B: Backend, const D: usize>(
    total: &mut GradientsParams,
    id: ParamId,
    grad: Tensor<B, D>,
) {
    let sum = match total.remove::<B, D>(id) {
        Some(previous) => previous + grad,
        None => grad,
    };
    total.register(id, sum);
}

fn collect_unit_grads<B: AutodiffBackend>(
    unet: &UNet2DConditionModel<B>,
    unit: Unit,
    grads: &mut B::Gradients,
    total: &mut GradientsParams,
) {
    use burn::module::Module;
    let mut v = Collect::<B> { grads, total };
    match unit {
        Unit::Embed => {
            unet.time_embedding.visit(&mut v);
            if let Some(add) = &unet.add_embedding {
                add.visit(&mut v);
            }
        }
        Unit::ConvIn => unet.conv_in.visit(&mut v),
        Unit::Save(_) => {}
        Unit::DownResnet(b, j) => unet.down_blocks[b].resnets[j].visit(&mut v),
        Unit::DownAttn(b, j) => unet.down_blocks[b].attentions[j].visit(&mut v),
        Unit::Downsample(b) => unet.down_blocks[b].downsamplers[0].visit(&mut v),
        Unit::MidResnet(j) => unet.mid_block.resnets[j].visit(&mut v),
        Unit::MidAttn(j) => unet.mid_block.attentions[j].visit(&mut v),
        Unit::UpResnet(b, j, _) => unet.up_blocks[b].resnets[j].visit(&mut v),
        Unit::UpAttn(b, j) => unet.up_blocks[b].attentions[j].visit(&mut v),
        Unit::Upsample(b, _) => unet.up_blocks[b].upsamplers[0].visit(&mut v),
        Unit::Out => {
            unet.conv_norm_out.visit(&mut v);
            unet.conv_out.visit(&mut v);
        }
    }
}

impl<B: AutodiffBackend> UNet2DConditionModel<B> {
    /// The forward pass without an autodiff graph, keeping each block's inputs for
    /// [`UNetTape::backward`]. The output equals [`Self::forward`]'s.
    pub fn forward_checkpointed(
        &self,
        input: UNetInput<B::InnerBackend>,
    ) -> (Tensor<B::InnerBackend, 4>, UNetTape<B>) {
        let inner = self.valid();
        let dtype = inner.dtype();
        let constants = Constants {
            sample: input.sample,
            timestep: input.timestep,
            context: input.encoder_hidden_states.cast(dtype),
            added: input.added_cond,
        };
        let mut hidden: Option<Tensor<B::InnerBackend, 4>> = None;
        let mut emb: Option<Tensor<B::InnerBackend, 2>> = None;
        let mut skips: Vec<Option<Tensor<B::InnerBackend, 4>>> = Vec::new();
        let mut steps = Vec::new();
        for unit in plan(self) {
            let inputs: Vec<Value<B::InnerBackend>> = unit
                .inputs()
                .into_iter()
                .map(|slot| match slot {
                    Slot::Hidden => Value::Map(hidden.clone().expect("hidden state set")),
                    Slot::Emb => Value::Emb(emb.clone().expect("embedding set")),
                    Slot::Skip(k) => Value::Map(skips[k].clone().expect("skip set")),
                })
                .collect();
            let out = run(&inner, unit, inputs.clone(), &constants);
            match (unit.output(), out) {
                (Slot::Hidden, Value::Map(t)) => hidden = Some(t),
                (Slot::Emb, Value::Emb(t)) => emb = Some(t),
                (Slot::Skip(k), Value::Map(t)) => {
                    if skips.len() <= k {
                        skips.resize(k + 1, None);
                    }
                    skips[k] = Some(t);
                }
                _ => unreachable!("unit outputs match their slots"),
            }
            steps.push((unit, inputs));
        }
        let out = hidden.expect("the plan ends with conv_out");
        (out, UNetTape { constants, steps })
    }

    /// Gradients of `loss(unet(input))` with respect to every parameter, with block-level
    /// recomputation: the loss value and the gradients. The same numbers as
    /// `loss(self.forward(input)).backward()` up to float rounding, at a fraction of the memory.
    pub fn checkpointed_grads(
        &self,
        input: UNetInput<B::InnerBackend>,
        loss: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 1>,
    ) -> (Tensor<B::InnerBackend, 1>, GradientsParams) {
        // The loss sees the output in the input's dtype (f32 under bf16 compute), as
        // `forward`'s callers cast it.
        let dtype = input.sample.dtype();
        let (out, tape) = self.forward_checkpointed(input);
        let out = Tensor::<B, 4>::from_inner(out.cast(dtype)).require_grad();
        let value = loss(out.clone());
        let grads = value.backward();
        let grad_out = out
            .grad(&grads)
            .expect("the loss depends on the UNet output");
        (value.inner(), tape.backward(self, grad_out))
    }
}

impl<B: AutodiffBackend> UNetTape<B> {
    /// Backpropagates `grad_output` (d loss / d UNet output) through the UNet the tape was
    /// recorded with, one block at a time, and returns the parameter gradients.
    pub fn backward(
        self,
        unet: &UNet2DConditionModel<B>,
        grad_output: Tensor<B::InnerBackend, 4>,
    ) -> GradientsParams {
        let mut total = GradientsParams::new();
        self.backward_into(unet, grad_output, &mut total);
        total
    }

    /// [`Self::backward`], adding into `total` (several UNet calls of one loss).
    pub fn backward_into(
        self,
        unet: &UNet2DConditionModel<B>,
        grad_output: Tensor<B::InnerBackend, 4>,
        total: &mut GradientsParams,
    ) {
        self.backward_with_input(unet, grad_output, total);
    }

    /// [`Self::backward_into`], also returning d loss / d sample (the UNet's input latents), for
    /// losses that reach the sample through earlier computations (a chain of sampler steps).
    pub fn backward_with_input(
        self,
        unet: &UNet2DConditionModel<B>,
        grad_output: Tensor<B::InnerBackend, 4>,
        total: &mut GradientsParams,
    ) -> Tensor<B::InnerBackend, 4> {
        let mut constants = lift::<B>(&self.constants);
        // Only conv_in reads the sample: its gradient comes out of that block's backward.
        constants.sample = constants.sample.require_grad();
        let mut grad_sample = None;
        // d loss / d (current value of each slot), walking back through the writes.
        let mut hidden = Some(Value::Map(grad_output));
        let mut emb: Option<Value<B::InnerBackend>> = None;
        let mut skips: Vec<Option<Value<B::InnerBackend>>> = Vec::new();
        for (unit, saved) in self.steps.into_iter().rev() {
            let grad_out = match unit.output() {
                Slot::Hidden => hidden.take(),
                Slot::Emb => emb.take(),
                Slot::Skip(k) => skips.get_mut(k).and_then(Option::take),
            };
            let Some(grad_out) = grad_out else { continue };
            let leaves: Vec<Value<B>> = saved
                .into_iter()
                .map(|v| match v {
                    Value::Map(t) => Value::Map(Tensor::from_inner(t).require_grad()),
                    Value::Emb(t) => Value::Emb(Tensor::from_inner(t).require_grad()),
                })
                .collect();
            let out = run(unet, unit, leaves.clone(), &constants);
            // (In the block's compute dtype: an f32 gradient of a bf16 output is cast to it.)
            let surrogate = match (out, grad_out) {
                (Value::Map(o), Value::Map(g)) => {
                    let g = Tensor::from_inner(g.cast(o.dtype()));
                    (o * g).sum()
                }
                (Value::Emb(o), Value::Emb(g)) => {
                    let g = Tensor::from_inner(g.cast(o.dtype()));
                    (o * g).sum()
                }
                _ => unreachable!("gradients of one slot have one rank"),
            };
            let mut grads = surrogate.backward();
            for (slot, leaf) in unit.inputs().into_iter().zip(leaves) {
                let grad = match leaf {
                    Value::Map(t) => t.grad_remove(&mut grads).map(Value::Map),
                    Value::Emb(t) => t.grad_remove(&mut grads).map(Value::Emb),
                };
                let Some(grad) = grad else { continue };
                let target = match slot {
                    Slot::Hidden => &mut hidden,
                    Slot::Emb => &mut emb,
                    Slot::Skip(k) => {
                        if skips.len() <= k {
                            skips.resize(k + 1, None);
                        }
                        &mut skips[k]
                    }
                };
                *target = Some(match target.take() {
                    Some(previous) => previous.add(grad),
                    None => grad,
                });
            }
            if matches!(unit, Unit::ConvIn) {
                grad_sample = constants.sample.grad_remove(&mut grads);
            }
            collect_unit_grads(unet, unit, &mut grads, total);
        }
        let sample = &self.constants.sample;
        grad_sample.unwrap_or_else(|| Tensor::zeros(sample.shape(), &sample.device()))
    }
}
