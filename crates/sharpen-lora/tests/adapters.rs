//! Adapters on a small module with a Linear, a 3x3 Conv2d and a nested, renamed Linear.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};

use sharpen_lora::*;

type B = Flex;
type AB = Autodiff<Flex>;

#[derive(Module, Debug)]
struct Inner<B: Backend> {
    net_2: Linear<B>,
}

#[derive(Module, Debug)]
struct Toy<B: Backend> {
    to_q: Linear<B>,
    conv1: Conv2d<B>,
    ff: Inner<B>,
}

impl<B: Backend> Toy<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            to_q: LinearConfig::new(6, 5).init(device),
            conv1: Conv2dConfig::new([3, 4], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            ff: Inner {
                net_2: LinearConfig::new(5, 6).init(device),
            },
        }
    }
}

/// Module path -> checkpoint name, as the UNet maps `ff.net_2` to `ff.net.2`.
fn key(k: &str) -> String {
    k.replace("net_2", "net.2")
}

fn all_targets() -> Vec<String> {
    ["to_q", "conv1", "ff.net.2"].map(String::from).to_vec()
}

fn uniform() -> impl FnMut() -> f64 {
    let mut state = 7u64;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Adapters with non-zero B.
fn trained<B: Backend>(toy: &Toy<B>, rank: usize, alpha: f64, device: &B::Device) -> Lora<B> {
    let targets = find_targets(toy, &all_targets(), &key).unwrap();
    let mut lora = Lora::<B>::init(targets, rank, alpha, &mut uniform(), device);
    for layer in &mut lora.layers {
        let dims = layer.lora_b.dims();
        layer.lora_b = burn::module::Param::from_tensor(Tensor::random(
            dims,
            Distribution::Normal(0.0, 0.5),
            device,
        ));
    }
    lora
}

fn max_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn peft_target_rule() {
    assert!(matches("down.attn1.to_out.0", "to_out.0"));
    assert!(matches("to_q", "to_q"));
    assert!(!matches("down.attn1.xto_q", "to_q"));
    assert!(!matches("down.attn1.to_q.x", "to_q"));
    let toy = Toy::<B>::new(&Default::default());
    let names: Vec<_> = linear_and_conv_weights(&toy, &key)
        .into_iter()
        .map(|t| (t.name, t.kind))
        .collect();
    assert_eq!(
        names,
        vec![
            ("to_q".into(), WeightKind::Linear { fan_in: 6, out: 5 }),
            (
                "conv1".into(),
                WeightKind::Conv {
                    out: 4,
                    in_channels: 3,
                    kernel: [3, 3]
                }
            ),
            ("ff.net.2".into(), WeightKind::Linear { fan_in: 5, out: 6 }),
        ]
    );
    let err = find_targets(&toy, &["to_k".to_string()], &key).unwrap_err();
    assert!(err.to_string().contains("`to_k`"), "{err}");
}

#[test]
fn fresh_adapters_leave_the_module_unchanged() {
    let device = Default::default();
    let toy = Toy::<B>::new(&device);
    let targets = find_targets(&toy, &all_targets(), &key).unwrap();
    let lora = Lora::<B>::init(targets, 2, 4.0, &mut uniform(), &device);
    // PEFT's init: A within ±1/sqrt(fan_in), not all zero; B zero.
    let a = lora.layers[1].lora_a.val();
    let bound = 1.0 / 27f32.sqrt();
    assert!(a.clone().abs().max().into_scalar() <= bound);
    assert!(a.abs().sum().into_scalar() > 0.0);
    assert_eq!(
        lora.num_params(),
        2 * 6 + 5 * 2 + 2 * 27 + 4 * 2 + 2 * 5 + 6 * 2
    );
    let merged = lora.merge(toy.clone(), 1.0, &key).unwrap();
    let x = Tensor::<B, 2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
    assert_eq!(
        merged.to_q.forward(x.clone()).into_data(),
        toy.to_q.forward(x).into_data()
    );
}

#[test]
fn merged_linear_and_conv_equal_the_adapter_paths() {
    let device = Default::default();
    let toy = Toy::<B>::new(&device);
    let lora = trained(&toy, 3, 6.0, &device);
    let scale = 0.7;
    let merged = lora.merge(toy.clone(), scale, &key).unwrap();
    let s = scale * 6.0 / 3.0;

    // Linear: x W^T + b + s * x A^T B^T.
    let x = Tensor::<B, 2>::random([4, 6], Distribution::Normal(0.0, 1.0), &device);
    let l = &lora.layers[0];
    let adapter = x
        .clone()
        .matmul(l.lora_a.val().transpose())
        .matmul(l.lora_b.val().transpose())
        .mul_scalar(s);
    let want = toy.to_q.forward(x.clone()) + adapter;
    assert!(max_diff(merged.to_q.forward(x), want) < 1e-5);

    // Conv (PEFT): conv_B_1x1(conv_A(x)) with A of the base's kernel and padding.
    let parts = lora.parts();
    let c = &parts[1];
    assert_eq!(c.lora_a.shape.to_vec(), vec![3, 3, 3, 3]);
    assert_eq!(c.lora_b.shape.to_vec(), vec![4, 3, 1, 1]);
    let conv = |w: TensorData, pad| {
        let shape = w.shape.to_vec();
        let mut conv = Conv2dConfig::new([shape[1], shape[0]], [shape[2], shape[3]])
            .with_bias(false)
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init::<B>(&device);
        conv.weight = burn::module::Param::from_tensor(Tensor::from_data(w, &device));
        conv
    };
    let (a, b) = (conv(c.lora_a.clone(), 1), conv(c.lora_b.clone(), 0));
    let img = Tensor::<B, 4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 1.0), &device);
    let want = toy.conv1.forward(img.clone()) + b.forward(a.forward(img.clone())).mul_scalar(s);
    assert!(max_diff(merged.conv1.forward(img), want) < 1e-5);

    // The renamed nested module is found by its checkpoint name.
    let y = Tensor::<B, 2>::random([2, 5], Distribution::Normal(0.0, 1.0), &device);
    assert!(max_diff(merged.ff.net_2.forward(y.clone()), toy.ff.net_2.forward(y)) > 1e-3);
}

#[test]
fn parts_round_trip_and_bad_parts_are_named() {
    let device = Default::default();
    let toy = Toy::<B>::new(&device);
    let lora = trained(&toy, 2, 3.0, &device);
    let back = Lora::<B>::from_parts(lora.parts(), &device).unwrap();
    for (a, b) in lora.layers.iter().zip(&back.layers) {
        assert_eq!(a.lora_a.val().into_data(), b.lora_a.val().into_data());
        assert_eq!(a.lora_b.val().into_data(), b.lora_b.val().into_data());
        assert_eq!((&a.target, a.alpha), (&b.target, b.alpha));
    }
    let mut parts = lora.parts();
    parts[2].lora_b = TensorData::new(vec![0f32; 10], [5, 2]);
    let err = Lora::<B>::from_parts(parts, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ff.net.2") && err.contains("lora_B"), "{err}");

    let mut parts = lora.parts();
    parts[0].target.name = "to_k".into();
    let lora = Lora::<B>::from_parts(parts, &device).unwrap();
    let err = lora.merge(toy, 1.0, &key).unwrap_err().to_string();
    assert!(err.contains("to_k"), "{err}");
}

#[test]
fn gradients_reach_only_the_adapters() {
    let device = Default::default();
    let toy = Toy::<AB>::new(&device).no_grad();
    let lora = trained(&toy, 2, 2.0, &device);
    let merged = lora.merge(toy.clone(), 1.0, &key).unwrap();
    let x = Tensor::<AB, 2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
    let img = Tensor::<AB, 4>::random([1, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device);
    let loss = merged.to_q.forward(x).powi_scalar(2).sum() + merged.conv1.forward(img).sum();
    let grads = loss.backward();
    for layer in &lora.layers[..2] {
        let ga = layer.lora_a.grad(&grads).expect("A gets a gradient");
        assert!(ga.abs().sum().into_scalar() > 0.0);
        assert!(layer.lora_b.grad(&grads).is_some());
    }
    assert!(toy.to_q.weight.grad(&grads).is_none());
    assert!(toy.conv1.weight.grad(&grads).is_none());
    // ff.net.2 took no part in the loss.
    assert!(lora.layers[2].lora_a.grad(&grads).is_none());
}

#[test]
fn leaf_merged_gradients_carry_to_the_adapters_like_the_graph() {
    use burn::module::AutodiffModule;
    use burn::optim::GradientsParams;

    let device = Default::default();
    let toy = Toy::<AB>::new(&device).no_grad();
    let lora = trained(&toy, 2, 3.0, &device);
    let x = Tensor::<AB, 2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
    let img = Tensor::<AB, 4>::random([2, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device);
    let loss = |m: &Toy<AB>| {
        let h = m.to_q.forward(x.clone()).tanh();
        m.ff.net_2.forward(h).powi_scalar(2).sum() + m.conv1.forward(img.clone()).sin().sum()
    };
    let scale = 0.7;

    // The graph path: merged with autodiff, gradients straight to A and B.
    let graph = lora.merge(toy.clone(), scale, &key).unwrap();
    let grads = GradientsParams::from_grads(loss(&graph).backward(), &lora);

    // The leaf path: merged without a graph, the adapted weights' gradients carried to A and B.
    let merged = Toy::<AB>::from_inner(lora.valid().merge(toy.valid(), scale, &key).unwrap());
    let (leaves, ids) = lora.mark_adapted(merged, &key).unwrap();
    assert!(!leaves.to_q.bias.as_ref().unwrap().val().is_require_grad());
    assert!(leaves.to_q.weight.val().is_require_grad());
    let mut merged_grads = GradientsParams::from_grads(loss(&leaves).backward(), &leaves);
    let carried = lora.grads_from_merged(&mut merged_grads, &ids, scale);

    for layer in &lora.layers {
        for param in [&layer.lora_a, &layer.lora_b] {
            let want = grads.get::<B, 2>(param.id).expect("graph gradient");
            let got = carried.get::<B, 2>(param.id).expect("carried gradient");
            let scale = want.clone().abs().max().into_scalar();
            assert!(
                scale > 0.0,
                "{}: a zero gradient proves nothing",
                layer.target.name
            );
            let diff = max_diff(want, got);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{}: {diff} (of {scale})",
                layer.target.name
            );
        }
    }
    // Every adapted weight was found; a module without one is refused by name.
    assert_eq!(ids.len(), 3);
    let other = Toy::<AB>::new(&device).no_grad();
    let mut foreign = trained(&other, 2, 3.0, &device);
    foreign.layers[0].target.name = "to_k".into();
    let err = foreign.mark_adapted(other, &key).unwrap_err().to_string();
    assert!(err.contains("to_k"), "{err}");
}
