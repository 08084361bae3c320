//! Data parallelism is exact: two peers, each training on its half of every batch with
//! gradients averaged by burn-collective's all-reduce, end with the weights of one process
//! training on the whole batch. Without the all-reduce they do not (the check can fail).

use std::sync::Mutex;

use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use sdxl_unet::{AddedCond, UNet2DConditionModel, UNetConfig};
use sharpen_schedulers::{PredictionType, SchedulerConfig};
use sharpen_trainer::train::sync::{Peer, SyncError};
use sharpen_trainer::{standard_loss, OptimConfig, TextCond, Trainer};

type AD = Autodiff<Flex>;
type Unet = UNet2DConditionModel<AD>;

/// burn-collective's local server is one per process: groups must not overlap. The weight tests
/// also hold it while they draw their seeded initial weights (the backend's generator is global).
static COLLECTIVE: Mutex<()> = Mutex::new(());

const BATCH: usize = 4;
const STEPS: usize = 20;

fn t<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<AD, D> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn rows(values: Vec<f32>, batch: usize, range: std::ops::Range<usize>) -> Vec<f32> {
    let per = values.len() / batch;
    values[range.start * per..range.end * per].to_vec()
}

/// `STEPS` optimizer steps of the standard loss; every step draws the whole batch from the run's
/// stream and trains on rows `rank * BATCH / world ..` of it (all of them when alone).
fn train(mut trainer: Trainer<AD, Unet>, rank: usize, world: usize) -> (Unet, Vec<f64>) {
    let schedule = SchedulerConfig::sdxl_base_1_0().schedule;
    let c = UNetConfig::tiny_sdxl();
    let local = BATCH / world;
    let mine = rank * local..(rank + 1) * local;
    let mut norms = Vec::new();
    while trainer.state.step < STEPS {
        let rng = trainer.rng();
        let x0 = rng.normals(BATCH * 4 * 8 * 8);
        let eps = rng.normals(BATCH * 4 * 8 * 8);
        let steps: Vec<usize> = (0..BATCH).map(|_| rng.below(1000)).collect();
        let context = rng.normals(BATCH * 4 * c.cross_attention_dim);
        let pooled = rng.normals(BATCH * 16);
        let cond = TextCond {
            context: t(
                rows(context, BATCH, mine.clone()),
                [local, 4, c.cross_attention_dim],
            ),
            added: Some(AddedCond {
                text_embeds: t(rows(pooled, BATCH, mine.clone()), [local, 16]),
                time_ids: t([64.0, 64.0, 0.0, 0.0, 64.0, 64.0].repeat(local), [local, 6]),
            }),
        };
        let loss = standard_loss(
            trainer.model(),
            &schedule,
            PredictionType::Epsilon,
            t(rows(x0, BATCH, mine.clone()), [local, 4, 8, 8]),
            t(rows(eps, BATCH, mine.clone()), [local, 4, 8, 8]),
            &steps[mine.clone()],
            &cond,
        );
        let grads = GradientsParams::from_grads(loss.backward(), trainer.model());
        if let Some(report) = trainer.accumulate(grads).unwrap() {
            norms.push(report.grad_norm);
        }
    }
    (trainer.model().clone(), norms)
}

fn config() -> OptimConfig {
    OptimConfig {
        lr: 1e-3,
        ..Default::default()
    }
}

/// A random UNet whose parameters are initialised now: burn initialises lazily, and a clone of
/// an uninitialised parameter would draw its own values.
fn init() -> Unet {
    <Flex as burn::tensor::backend::Backend>::seed(&Default::default(), 5);
    let unet = UNet2DConditionModel::<AD>::new(&UNetConfig::tiny_sdxl(), &Default::default());
    weights(&unet);
    unet
}

/// Two peers in threads; `sync`: join a collective group (else each trains alone on its half).
fn two_peers(unet: &Unet, sync: bool) -> Vec<(Unet, Vec<f64>)> {
    let handles: Vec<_> = (0..2)
        .map(|rank| {
            let unet = unet.clone();
            std::thread::spawn(move || {
                // Small buckets: the gradients travel in many all-reduce calls.
                let peer = if sync {
                    Peer::join(rank, 2, Default::default())
                        .unwrap()
                        .with_bucket(50_000)
                } else {
                    Peer::alone(Default::default())
                };
                let trainer = Trainer::new(unet, config(), 11).with_peer(peer);
                train(trainer, rank, 2)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn weights(unet: &Unet) -> Vec<(String, Vec<f32>)> {
    sharpen_weights::module_tensors(unet, &|k: &str| k.to_string())
        .into_iter()
        .map(|(k, v)| (k, v.convert::<f32>().to_vec::<f32>().unwrap()))
        .collect()
}

/// The largest relative difference of two models' tensors: max over tensors of
/// `||a - b|| / ||a||` (L2).
fn max_rel_diff(a: &Unet, b: &Unet) -> f64 {
    weights(a)
        .iter()
        .zip(weights(b))
        .map(|((ka, va), (kb, vb))| {
            assert_eq!(ka, &kb);
            let norm = va.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let diff = va
                .iter()
                .zip(&vb)
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            diff / norm.max(1e-30)
        })
        .fold(0.0, f64::max)
}

/// The seeded initial weights, the whole-batch run from them (weights, grad norms), and two
/// peers' runs from them, with or without the all-reduce.
type Runs = (Unet, (Unet, Vec<f64>), Vec<(Unet, Vec<f64>)>);

fn whole_batch_and_two_peers(sync: bool) -> Runs {
    let _group = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let unet = init();
    let alone = train(Trainer::new(unet.clone(), config(), 11), 0, 1);
    let peers = two_peers(&unet, sync);
    (unet, alone, peers)
}

#[test]
fn two_peers_with_half_batches_equal_one_process_with_the_whole_batch() {
    let (unet, (alone, norms), peers) = whole_batch_and_two_peers(true);
    for (rank, (model, peer_norms)) in peers.iter().enumerate() {
        let diff = max_rel_diff(&alone, model);
        eprintln!("peer {rank}: largest relative difference to the whole-batch run {diff:e}");
        assert!(
            diff <= 1e-5,
            "peer {rank}: weights differ by {diff:e} (relative)"
        );
        for (a, b) in norms.iter().zip(peer_norms) {
            assert!(
                (a - b).abs() <= 1e-4 * a,
                "grad norm {a} vs {b} on peer {rank}"
            );
        }
    }
    // The run moved the weights: the comparison is not between two copies of the init.
    assert!(max_rel_diff(&alone, &unet) > 1e-3);
}

#[test]
fn without_the_all_reduce_the_peers_drift_apart() {
    let (_, (alone, _), peers) = whole_batch_and_two_peers(false);
    let to_alone = max_rel_diff(&alone, &peers[0].0);
    let between = max_rel_diff(&peers[0].0, &peers[1].0);
    assert!(
        to_alone > 1e-3,
        "unsynchronised peer equals the whole-batch run ({to_alone:e})"
    );
    assert!(between > 1e-3, "unsynchronised peers agree ({between:e})");
}

#[test]
fn gather_and_barrier_reach_every_peer() {
    let _group = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let handles: Vec<_> = (0..3)
        .map(|rank| {
            std::thread::spawn(move || {
                let peer = Peer::<Flex>::join(rank, 3, Default::default()).unwrap();
                peer.barrier().unwrap();
                let all = peer.gather(&[rank as f32, 10.0 * rank as f32]).unwrap();
                let mean = peer
                    .mean(Tensor::<Flex, 1>::from_floats(
                        [rank as f32 * 3.0],
                        &Default::default(),
                    ))
                    .unwrap()
                    .into_scalar();
                (all, mean)
            })
        })
        .collect();
    for h in handles {
        let (all, mean) = h.join().unwrap();
        assert_eq!(all, vec![vec![0.0, 0.0], vec![1.0, 10.0], vec![2.0, 20.0]]);
        assert_eq!(mean, 3.0);
    }
}

#[test]
fn a_rank_outside_the_group_is_refused() {
    let err = Peer::<Flex>::join(2, 2, Default::default()).err().unwrap();
    assert!(
        matches!(err, SyncError::Rank { rank: 2, world: 2 }),
        "{err}"
    );
    assert!(err.to_string().contains("rank 2"), "{err}");
}
