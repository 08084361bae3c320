//! RLHF Diffusion-Sharpening on the toy world, against numbers worked out by hand: the online
//! generation, the preference loss in both forms, ties, and the gradient.

mod common;

use common::*;
use sharpen_loss::RewardMargin;
use sharpen_rewards::Reward;
use sharpen_trainer::{
    generate, rlhf_step, trajectory_timesteps, RlhfConfig, RlhfDraw, RlhfInputs, RlhfSelect,
    StepModels, TrajectoryConfig,
};

const PROMPTS: [&str; 2] = ["a", "b"];
const N: usize = 3;
const T: usize = 500;
const W_REF: f32 = 0.6;

fn generation() -> sharpen_schedulers::Sampler {
    sampler()
}

fn eps() -> Vec<f32> {
    values(PROMPTS.len() * N * PER_ROW, 9)
}

fn step(
    w: f32,
    rlhf: &RlhfConfig,
    reward: &dyn Reward<B>,
) -> (f64, f64, Vec<f32>, sharpen_trainer::Rollout) {
    let (loss, grad, generated, rollout, _) = step_renoised(w, rlhf, reward, None);
    (loss, grad, generated, rollout)
}

type Out = (f64, f64, Vec<f32>, sharpen_trainer::Rollout, Vec<f64>);

/// `step` with the re-noising noise given (None: each generation's own noise).
fn step_renoised(
    w: f32,
    rlhf: &RlhfConfig,
    reward: &dyn Reward<B>,
    renoise: Option<Vec<f32>>,
) -> Out {
    let rows = PROMPTS.len() * N;
    let train = Toy::<AD>::new(w);
    let inner = Toy::<B>::new(w);
    let reference = Toy::<B>::new(W_REF);
    let sampler = sampler();
    let models = StepModels {
        train: &train,
        rollout: &inner,
        decoder: &SigmoidDecoder,
        reward,
        sampler: &sampler,
    };
    let out = rlhf_step::<AD, _, _, _, _>(
        &models,
        &reference,
        &generation(),
        &TrajectoryConfig::default(),
        rlhf,
        RlhfInputs {
            cond: &cond(PROMPTS.len()),
            uncond: None,
            prompts: &PROMPTS,
            draw: RlhfDraw {
                eps: tensor(eps(), [rows, 4, 2, 3]),
                t: vec![T; PROMPTS.len()],
                renoise: renoise.map(|v| tensor(v, [rows, 4, 2, 3])),
            },
        },
    )
    .unwrap();
    let loss = out.loss.clone().into_scalar() as f64;
    let grad = train
        .w
        .val()
        .grad(&out.loss.backward())
        .map(|g| g.into_scalar() as f64)
        .unwrap_or(0.0);
    let generated: Vec<f32> = out.generated.into_data().to_vec().unwrap();
    (loss, grad, generated, out.rollout, out.generation_scores)
}

#[test]
fn generation_is_25_step_ddim_from_the_noise() {
    let noise = values(2 * PER_ROW, 4);
    let out = generate(
        &Toy::<B>::new(0.4),
        &generation(),
        tensor(noise.clone(), [2, 4, 2, 3]),
        &cond(2),
        None,
        1.0,
    );
    let out: Vec<f32> = out.into_data().to_vec().unwrap();
    let expected = generate_by_hand(&noise, 0.4);
    for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
        assert!(
            (*a as f64 - b).abs() < 1e-4 * b.abs().max(1.0),
            "element {i}: {a} vs {b}"
        );
    }
}

fn loss_by_hand(
    w: f32,
    w_states: f32,
    rlhf: &RlhfConfig,
    generated: &[f32],
    rollout: &sharpen_trainer::Rollout,
) -> f64 {
    let eps = eps();
    let timesteps = trajectory_timesteps(T, 3, 40);
    let row = |r: usize| r * PER_ROW..(r + 1) * PER_ROW;
    let mut total = 0.0;
    for p in 0..PROMPTS.len() {
        let sel = rollout.selections[p];
        let (rw, rl) = (p * N + sel.winner, p * N + sel.loser);
        let (_, lw) = by_hand(
            &generated[row(rw)],
            &eps[row(rw)],
            w as f64,
            T,
            &timesteps,
            40,
        );
        let (_, ll) = by_hand(
            &generated[row(rl)],
            &eps[row(rl)],
            w as f64,
            T,
            &timesteps,
            40,
        );
        let reference = |r: usize| {
            let states = states_by_hand(
                &generated[row(r)],
                &eps[row(r)],
                w_states as f64,
                T,
                &timesteps,
                40,
            );
            let steps = if rlhf.ref_first_step_only {
                1
            } else {
                states.len()
            };
            states[..steps]
                .iter()
                .map(|x| {
                    x.iter()
                        .zip(&eps[row(r)])
                        .map(|(v, &e)| (W_REF as f64 * v - e as f64).powi(2))
                        .sum::<f64>()
                        / PER_ROW as f64
                })
                .sum::<f64>()
                / steps as f64
        };
        let delta = (reference(rw) - reference(rl)) - (lw - ll);
        let gap = (rollout.scores[rw] - rollout.scores[rl]) * rlhf.reward_scale;
        let log_sigmoid = |x: f64| -(1.0 + (-x).exp()).ln();
        total += match rlhf.margin {
            RewardMargin::Inside => -log_sigmoid(rlhf.beta * delta - gap),
            RewardMargin::Outside => -(log_sigmoid(rlhf.beta * delta) - gap),
        };
    }
    total / PROMPTS.len() as f64
}

#[test]
fn the_loss_is_the_formula_in_both_forms() {
    for rlhf in [
        RlhfConfig {
            beta: 30.0,
            ..Default::default()
        },
        RlhfConfig {
            beta: 30.0,
            margin: RewardMargin::Outside,
            reward_scale: 4.0,
            ..Default::default()
        },
        RlhfConfig {
            beta: 30.0,
            ref_first_step_only: true,
            ..Default::default()
        },
    ] {
        let (loss, _, generated, rollout) = step(0.7, &rlhf, &Brightness);
        assert!(rollout
            .selections
            .iter()
            .all(|s| !s.tie && s.winner != s.loser));
        let expected = loss_by_hand(0.7, 0.7, &rlhf, &generated, &rollout);
        assert!(
            (loss - expected).abs() < 1e-4 * expected.abs().max(1.0),
            "{rlhf:?}: {loss} vs {expected}"
        );
    }
}

#[test]
fn gradient_matches_finite_differences() {
    let rlhf = RlhfConfig {
        beta: 30.0,
        ..Default::default()
    };
    let (w, h) = (0.7f32, 1e-2f32);
    let (_, grad, _, rollout) = step(w, &rlhf, &Brightness);
    // The generation, the selection and the reference's states move with w too, but carry no
    // gradient: the loss differentiates only the recomputed trajectories. Compare with the formula
    // with those held fixed.
    let (_, _, generated, _) = step(w, &rlhf, &Brightness);
    let fd = (loss_by_hand(w + h, w, &rlhf, &generated, &rollout)
        - loss_by_hand(w - h, w, &rlhf, &generated, &rollout))
        / (2.0 * h as f64);
    assert_matches_fd(grad, fd, 1e-6, 2e-3, 1.0);
}

#[test]
fn ties_cost_log_two_and_give_no_gradient() {
    let (loss, grad, _, rollout) = step(0.7, &RlhfConfig::default(), &Constant);
    assert!(rollout.selections.iter().all(|s| s.tie));
    assert!((loss - std::f64::consts::LN_2).abs() < 1e-6, "{loss}");
    assert_eq!(grad, 0.0);
}

#[test]
fn fresh_renoising_noise_replaces_the_generation_noise() {
    let rlhf = RlhfConfig::default();
    let reward = Brightness;
    let own = step_renoised(0.3, &rlhf, &reward, None);
    let same = step_renoised(0.3, &rlhf, &reward, Some(eps()));
    assert_eq!(
        (own.0, own.1),
        (same.0, same.1),
        "renoise = eps is the default"
    );
    let fresh = step_renoised(
        0.3,
        &rlhf,
        &reward,
        Some(values(PROMPTS.len() * N * PER_ROW, 10)),
    );
    assert_ne!(own.0, fresh.0, "other noise, other trajectories and loss");
    assert_ne!(own.3.scores, fresh.3.scores);
}

/// The reward of each decoded generation, worked out by hand: the toy decoder is the sigmoid of
/// the first three channels and the reward their mean.
fn generation_rewards_by_hand(generated: &[f32]) -> Vec<f64> {
    generated
        .chunks(PER_ROW)
        .map(|row| {
            let rgb = &row[..3 * PER_ROW / 4];
            rgb.iter()
                .map(|&v| 1.0 / (1.0 + (-(v as f64)).exp()))
                .sum::<f64>()
                / rgb.len() as f64
        })
        .collect()
}

#[test]
fn selection_by_generation_ranks_the_generations_themselves() {
    let by_trajectory = RlhfConfig {
        beta: 30.0,
        ..Default::default()
    };
    let by_generation = RlhfConfig {
        select: RlhfSelect::Generation,
        ..by_trajectory
    };
    let (_, _, generated, trajectory_rollout, gen_t) =
        step_renoised(0.7, &by_trajectory, &Brightness, None);
    let (loss, _, generated_g, rollout, gen_g) =
        step_renoised(0.7, &by_generation, &Brightness, None);
    assert_eq!(generated, generated_g, "same online generations");
    let expected = generation_rewards_by_hand(&generated);
    for scores in [&gen_t, &gen_g, &rollout.scores] {
        for (a, b) in scores.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{scores:?} vs {expected:?}");
        }
    }
    assert_ne!(
        trajectory_rollout.scores, rollout.scores,
        "the trajectory scores are the estimates' rewards, not the generations'"
    );
    assert_eq!(rollout.step_rewards, trajectory_rollout.step_rewards);
    for (p, sel) in rollout.selections.iter().enumerate() {
        let group = &expected[p * N..(p + 1) * N];
        let argmax = (0..N)
            .max_by(|&a, &b| group[a].total_cmp(&group[b]))
            .unwrap();
        let argmin = (0..N)
            .min_by(|&a, &b| group[a].total_cmp(&group[b]))
            .unwrap();
        assert_eq!((sel.winner, sel.loser), (argmax, argmin), "prompt {p}");
    }
    // The loss is the same formula over the pair the generations chose, with their reward gap.
    let by_hand = loss_by_hand(0.7, 0.7, &by_generation, &generated, &rollout);
    assert!(
        (loss - by_hand).abs() < 1e-4 * by_hand.abs().max(1.0),
        "{loss} vs {by_hand}"
    );
}
