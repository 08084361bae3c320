//! Block-level gradient checkpointing gives the gradients of plain autodiff: every parameter of
//! both tiny UNet configs, with odd and non-square latents and different timesteps per item.

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use sdxl_unet::{AddedCond, UNet2DConditionModel, UNetInput};
use sharpen_tests::{fixture, Reference, TestBackend as B};
use sharpen_weights::unet::load_unet;
use sharpen_weights::LoadOptions;

type AD = Autodiff<B>;

fn tensor<const D: usize>(r: &Reference, key: &str) -> Tensor<B, D> {
    Tensor::from_data(r.data(key), &Default::default())
}

/// A loss that weighs every output element differently, so that no gradient is trivially zero.
/// A tiny UNet fixture with autodiff.
fn tiny_unet(name: &str) -> UNet2DConditionModel<AD> {
    load_unet::<AD>(&fixture(name), &LoadOptions::default(), &Default::default()).unwrap()
}

fn loss<BB: burn::tensor::backend::Backend>(out: Tensor<BB, 4>) -> Tensor<BB, 1> {
    let n = out.shape().num_elements();
    let weights: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.3)
        .collect();
    let w = Tensor::<BB, 1>::from_data(TensorData::new(weights, [n]), &out.device())
        .reshape(out.dims());
    (out.powf_scalar(2.0) * w).sum()
}

/// Every float parameter's gradient from both ways, compared relative to the largest gradient.
struct Compare<'a> {
    plain: &'a GradientsParams,
    checkpointed: &'a GradientsParams,
    checked: usize,
    worst: (f32, String),
    path: Vec<String>,
}

impl ModuleVisitor<AD> for Compare<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
        let id: ParamId = param.id;
        let name = self.path.join(".");
        let a = self
            .plain
            .get::<B, D>(id)
            .unwrap_or_else(|| panic!("{name}: no plain gradient"));
        let b = self
            .checkpointed
            .get::<B, D>(id)
            .unwrap_or_else(|| panic!("{name}: no checkpointed gradient"));
        let scale = a.clone().abs().max().into_scalar().max(1e-6);
        let diff = (a - b).abs().max().into_scalar() / scale;
        self.checked += 1;
        if diff > self.worst.0 {
            self.worst = (diff, name);
        }
    }
}

fn check(unet: &UNet2DConditionModel<AD>, input: UNetInput<B>, what: &str) {
    let lift = |i: &UNetInput<B>| UNetInput::<AD> {
        sample: Tensor::from_inner(i.sample.clone()),
        timestep: Tensor::from_inner(i.timestep.clone()),
        encoder_hidden_states: Tensor::from_inner(i.encoder_hidden_states.clone()),
        added_cond: i.added_cond.as_ref().map(|a| AddedCond {
            text_embeds: Tensor::from_inner(a.text_embeds.clone()),
            time_ids: Tensor::from_inner(a.time_ids.clone()),
        }),
    };
    let mut lifted = lift(&input);
    lifted.sample = lifted.sample.require_grad();
    let sample = lifted.sample.clone();
    let plain_loss = loss(unet.forward(lifted));
    let mut grads = plain_loss.backward();
    let plain_sample = sample
        .grad_remove(&mut grads)
        .expect("the loss reaches the sample");
    let plain = GradientsParams::from_grads(grads, unet);
    let plain_value = plain_loss.inner().into_scalar();

    // d loss / d sample through the tape (what a chain of sampler steps backpropagates).
    let (out, tape) = unet.forward_checkpointed(input.clone());
    let out = Tensor::<AD, 4>::from_inner(out).require_grad();
    let grad_out = out.grad(&loss(out.clone()).backward()).unwrap();
    let sample_grad = tape.backward_with_input(unet, grad_out, &mut GradientsParams::new());
    let scale = plain_sample.clone().abs().max().into_scalar();
    let diff = (plain_sample - sample_grad).abs().max().into_scalar() / scale;
    assert!(
        scale > 0.0 && diff <= 1e-4,
        "{what}: d loss / d sample differs by {diff}"
    );

    let (value, checkpointed) = unet.checkpointed_grads(input, loss);
    let value = value.into_scalar();
    assert!(
        (value - plain_value).abs() <= 1e-5 * plain_value.abs().max(1.0),
        "{what}: loss {value} vs {plain_value}"
    );
    assert_eq!(checkpointed.len(), plain.len(), "{what}: gradient count");
    let mut cmp = Compare {
        plain: &plain,
        checkpointed: &checkpointed,
        checked: 0,
        worst: (0.0, String::new()),
        path: Vec::new(),
    };
    unet.visit(&mut cmp);
    assert_eq!(cmp.checked, plain.len(), "{what}: every parameter compared");
    assert!(
        cmp.worst.0 <= 1e-4,
        "{what}: gradient of {} differs by {} of its largest value",
        cmp.worst.1,
        cmp.worst.0
    );
    println!(
        "{what}: {} parameter gradients, worst relative difference {:.2e} ({}); sample {diff:.2e}",
        cmp.checked, cmp.worst.0, cmp.worst.1
    );
}

#[test]
fn checkpointed_gradients_equal_autodiff_on_the_sdxl_tiny_config() {
    let unet = tiny_unet("unet/tiny");
    let r = Reference::open("unet/outputs.safetensors");
    for case in ["nonsquare", "odd"] {
        let input = UNetInput {
            sample: tensor(&r, &format!("{case}.sample")),
            timestep: tensor(&r, &format!("{case}.timestep")),
            encoder_hidden_states: tensor(&r, &format!("{case}.encoder_hidden_states")),
            added_cond: Some(AddedCond {
                text_embeds: tensor(&r, &format!("{case}.text_embeds")),
                time_ids: tensor(&r, &format!("{case}.time_ids")),
            }),
        };
        check(&unet, input, &format!("tiny SDXL, {case}"));
    }
}

#[test]
fn checkpointed_gradients_equal_autodiff_on_the_four_level_config() {
    let unet = tiny_unet("unet/tiny_b");
    let r = Reference::open("unet/outputs_b.safetensors");
    let input = UNetInput {
        sample: tensor(&r, "sample"),
        timestep: tensor(&r, "timestep"),
        encoder_hidden_states: tensor(&r, "encoder_hidden_states"),
        added_cond: None,
    };
    check(&unet, input, "four-level config");
}

#[test]
fn checkpointed_forward_equals_forward() {
    let unet = tiny_unet("unet/tiny");
    let r = Reference::open("unet/outputs.safetensors");
    let input = UNetInput::<B> {
        sample: tensor(&r, "odd.sample"),
        timestep: tensor(&r, "odd.timestep"),
        encoder_hidden_states: tensor(&r, "odd.encoder_hidden_states"),
        added_cond: Some(AddedCond {
            text_embeds: tensor(&r, "odd.text_embeds"),
            time_ids: tensor(&r, "odd.time_ids"),
        }),
    };
    let (out, _tape) = unet.forward_checkpointed(input);
    sharpen_tests::assert_close("checkpointed forward", &out, &r.data("odd.out"), 1e-4);
}

/// Every parameter's gradient from both ways: the worst difference relative to the largest
/// gradient of its tensor.
fn worst_difference(
    unet: &UNet2DConditionModel<AD>,
    plain: &GradientsParams,
    checkpointed: &GradientsParams,
) -> (f32, String) {
    let mut cmp = Compare {
        plain,
        checkpointed,
        checked: 0,
        worst: (0.0, String::new()),
        path: Vec::new(),
    };
    unet.visit(&mut cmp);
    assert_eq!(cmp.checked, plain.len(), "every parameter compared");
    cmp.worst
}

#[test]
fn checkpointed_trajectory_gradients_equal_autodiff() {
    use sharpen_schedulers::{Sampler, SamplerKind, SchedulerConfig};
    use sharpen_trainer::{RowTimesteps, TextCond};

    let unet = tiny_unet("unet/tiny");
    let r = Reference::open("unet/outputs.safetensors");
    let x_t: Tensor<B, 4> = tensor(&r, "nonsquare.sample");
    let eps = x_t.clone().flip([2]).mul_scalar(0.8).add_scalar(0.1);
    let cond = TextCond::<B> {
        context: tensor(&r, "nonsquare.encoder_hidden_states"),
        added: Some(AddedCond {
            text_embeds: tensor(&r, "nonsquare.text_embeds"),
            time_ids: tensor(&r, "nonsquare.time_ids"),
        }),
    };
    let sampler = Sampler::new(
        SamplerKind::Ddim { eta: 0.0 },
        &SchedulerConfig::sdxl_base_1_0(),
        25,
    );
    // Both rows on one trajectory, and each row from its own start: the second row's starts at
    // 50 and runs two steps where the first runs three.
    for starts in [[500, 500], [500, 50]] {
        check_trajectory(
            &unet,
            &sampler,
            &x_t,
            &eps,
            &cond,
            &RowTimesteps::new(&starts, 3, 40),
        );
    }
}

fn check_trajectory(
    unet: &UNet2DConditionModel<AD>,
    sampler: &sharpen_schedulers::Sampler,
    x_t: &Tensor<B, 4>,
    eps: &Tensor<B, 4>,
    cond: &sharpen_trainer::TextCond<B>,
    timesteps: &sharpen_trainer::RowTimesteps,
) {
    use sharpen_trainer::checkpointed_path_grads;
    use sharpen_trainer::trajectory::{lift_cond, path_losses};
    let unet = unet.clone();
    // A loss that weighs the rows differently and with both signs (as RLHF's preference does).
    let combine = |l: Tensor<AD, 1>| {
        let w = Tensor::<AD, 1>::from_floats([0.7, -0.3], &l.device());
        (l * w).sum()
    };
    let mut by_detach = Vec::new();
    for detach in [false, true] {
        let plain_loss = combine(path_losses(
            &unet,
            sampler,
            Tensor::from_inner(x_t.clone()),
            Tensor::from_inner(eps.clone()),
            &lift_cond::<AD>(cond),
            timesteps,
            40,
            detach,
        ));
        let plain = GradientsParams::from_grads(plain_loss.backward(), &unet);
        let (value, checkpointed) = checkpointed_path_grads(
            &unet,
            sampler,
            x_t.clone(),
            eps.clone(),
            cond,
            timesteps,
            40,
            detach,
            combine,
        );
        let (value, plain_value) = (value.into_scalar(), plain_loss.inner().into_scalar());
        assert!(
            (value - plain_value).abs() <= 1e-5 * plain_value.abs().max(1.0),
            "detach {detach}: loss {value} vs {plain_value}"
        );
        assert_eq!(checkpointed.len(), plain.len(), "detach {detach}");
        let worst = worst_difference(&unet, &plain, &checkpointed);
        assert!(worst.0 <= 1e-4, "{timesteps:?}, detach {detach}: {worst:?}");
        println!("trajectory {timesteps:?}, detach {detach}: worst relative difference {worst:?}");
        by_detach.push(checkpointed);
    }
    // The chain through the DDIM steps matters: detaching changes the gradients.
    let (chain, detached) = (&by_detach[0], &by_detach[1]);
    assert!(worst_difference(&unet, chain, detached).0 > 1e-3);
}
