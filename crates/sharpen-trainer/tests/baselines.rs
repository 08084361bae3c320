//! The baselines on the toy world: Diffusion-DPO against the published formula worked out by hand,
//! DDPO's policy objective against finite differences, ties and bad draws.

mod common;

use common::*;
use sharpen_rewards::Reward;
use sharpen_schedulers::{Sampler, SamplerKind, SchedulerConfig};
use sharpen_trainer::{
    ddpo_step, dpo_step, generate, BaselineStep, DdpoConfig, DdpoDraw, DdpoInputs, DpoConfig,
    DpoDraw, DpoInputs, Sampling, TrajectoryError,
};

const PROMPTS: [&str; 2] = ["a", "b"];
const N: usize = 3;
/// Each pair's training timestep (Diffusion-DPO draws one per pair).
const T: [usize; 2] = [400, 150];
const W_REF: f32 = 0.6;

fn rows() -> usize {
    PROMPTS.len() * N
}

fn dpo(w: f32, config: &DpoConfig, reward: &dyn Reward<B>) -> (BaselineStep<AD>, Toy<AD>) {
    let train = Toy::<AD>::new(w);
    let out = dpo_step::<AD, _, _, _>(
        &train,
        &Sampling {
            model: &Toy::<B>::new(W_REF),
            decoder: &SigmoidDecoder,
            sampler: &sampler(),
            n: N,
        },
        config,
        DpoInputs {
            reward,
            cond: &cond(PROMPTS.len()),
            uncond: None,
            prompts: &PROMPTS,
            draw: DpoDraw {
                noise: tensor(values(rows() * PER_ROW, 3), [rows(), 4, 2, 3]),
                eps: tensor(values(PROMPTS.len() * PER_ROW, 4), [PROMPTS.len(), 4, 2, 3]),
                t: T.to_vec(),
            },
        },
    )
    .unwrap();
    (out, train)
}

fn value_and_grad(out: BaselineStep<AD>, train: &Toy<AD>) -> (f64, f64) {
    let loss = out.loss.clone().into_scalar() as f64;
    let grad = train
        .w
        .val()
        .grad(&out.loss.backward())
        .map(|g| g.into_scalar() as f64)
        .unwrap_or(0.0);
    (loss, grad)
}

/// Mean over pairs of -log sigmoid(-(beta/2) [(L_w - R_w) - (L_l - R_l)]) with L = mean (w x_t - eps)^2,
/// worked out in f64 from the reference's samples.
fn dpo_by_hand(w: f64, beta: f64) -> f64 {
    let samples: Vec<f32> = generate(
        &Toy::<B>::new(W_REF),
        &sampler(),
        tensor(values(rows() * PER_ROW, 3), [rows(), 4, 2, 3]),
        &cond(rows()),
        None,
        1.0,
    )
    .into_data()
    .to_vec()
    .unwrap();
    let eps = values(PROMPTS.len() * PER_ROW, 4);
    let alpha = |p: usize| {
        SchedulerConfig::sdxl_base_1_0()
            .schedule
            .alpha_bar(T[p] as i64)
            .unwrap()
    };
    let brightness = |row: &[f32]| -> f64 {
        row[..18]
            .iter()
            .map(|&v| 1.0 / (1.0 + (-(v as f64)).exp()))
            .sum::<f64>()
            / 18.0
    };
    let loss = |row: &[f32], e: &[f32], w: f64, a: f64| -> f64 {
        row.iter()
            .zip(e)
            .map(|(&x0, &e)| {
                let x_t = a.sqrt() * x0 as f64 + (1.0 - a).sqrt() * e as f64;
                (w * x_t - e as f64).powi(2)
            })
            .sum::<f64>()
            / PER_ROW as f64
    };
    let mut total = 0.0;
    for p in 0..PROMPTS.len() {
        let group: Vec<&[f32]> = (0..N)
            .map(|i| &samples[(p * N + i) * PER_ROW..(p * N + i + 1) * PER_ROW])
            .collect();
        let scores: Vec<f64> = group.iter().map(|r| brightness(r)).collect();
        let best = (0..N).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
        let worst = (0..N).fold(0, |b, i| if scores[i] < scores[b] { i } else { b });
        let e = &eps[p * PER_ROW..(p + 1) * PER_ROW];
        let (r, a) = (W_REF as f64, alpha(p));
        let inner = -(beta / 2.0)
            * ((loss(group[best], e, w, a) - loss(group[best], e, r, a))
                - (loss(group[worst], e, w, a) - loss(group[worst], e, r, a)));
        total += (1.0 + (-inner).exp()).ln();
    }
    total / PROMPTS.len() as f64
}

#[test]
fn dpo_loss_and_gradient_are_the_published_formula() {
    let config = DpoConfig {
        beta: 40.0,
        ..Default::default()
    };
    let w = 0.7f32;
    let (out, train) = dpo(w, &config, &Brightness);
    assert_eq!(out.rollout.scores.len(), rows());
    assert!(out.rollout.selections.iter().all(|s| !s.tie));
    let (loss, grad) = value_and_grad(out, &train);
    let want = dpo_by_hand(w as f64, config.beta);
    assert!(
        (loss - want).abs() < 1e-4 * want.max(1.0),
        "{loss} vs {want}"
    );
    let h = 1e-3;
    let fd = (dpo_by_hand(w as f64 + h, config.beta) - dpo_by_hand(w as f64 - h, config.beta))
        / (2.0 * h);
    assert_matches_fd(grad, fd, 1e-4, 2e-3, 1.0);
}

#[test]
fn dpo_ties_cost_log_two_and_give_no_gradient() {
    let (out, train) = dpo(0.7, &DpoConfig::default(), &Constant);
    assert!(out.rollout.selections.iter().all(|s| s.tie));
    let (loss, grad) = value_and_grad(out, &train);
    assert!((loss - std::f64::consts::LN_2).abs() < 1e-6, "{loss}");
    assert_eq!(grad, 0.0);
}

fn policy_sampler() -> Sampler {
    Sampler::new(
        SamplerKind::Ddim { eta: 1.0 },
        &SchedulerConfig::sdxl_base_1_0(),
        8,
    )
}

fn ddpo_draw(train_steps: Vec<usize>) -> DdpoDraw<B> {
    let shape = [rows(), 4, 2, 3];
    DdpoDraw {
        noise: tensor(values(rows() * PER_ROW, 5), shape),
        step_noise: (0..8)
            .map(|k| tensor(values(rows() * PER_ROW, 10 + k), shape))
            .collect(),
        train_steps,
    }
}

fn ddpo(
    w: f32,
    config: &DdpoConfig,
    reward: &dyn Reward<B>,
    draw: DdpoDraw<B>,
) -> Result<(BaselineStep<AD>, Toy<AD>), TrajectoryError> {
    let train = Toy::<AD>::new(w);
    let out = ddpo_step::<AD, _, _, _>(
        &train,
        &Sampling {
            model: &Toy::<B>::new(W_REF),
            decoder: &SigmoidDecoder,
            sampler: &policy_sampler(),
            n: N,
        },
        config,
        DdpoInputs {
            reward,
            cond: &cond(PROMPTS.len()),
            uncond: None,
            prompts: &PROMPTS,
            draw,
        },
    )?;
    Ok((out, train))
}

#[test]
fn ddpo_objective_is_reinforce_at_the_sampling_weights_and_matches_finite_differences() {
    // A wide clip keeps the finite differences inside the unclipped region.
    let config = DdpoConfig {
        clip: 10.0,
        ..Default::default()
    };
    let steps = vec![0, 3, 7];
    // At the sampling weights every ratio is 1, so the objective is -mean(A) = 0 (the advantages
    // of each prompt sum to zero).
    let (out, train) = ddpo(W_REF, &config, &Brightness, ddpo_draw(steps.clone())).unwrap();
    let scores = out.rollout.scores.clone();
    assert!(scores.windows(2).any(|p| p[0] != p[1]), "{scores:?}");
    let (loss, grad) = value_and_grad(out, &train);
    assert!(loss.abs() < 1e-5, "{loss}");
    let value = |w: f32| {
        let (out, _) = ddpo(w, &config, &Brightness, ddpo_draw(steps.clone())).unwrap();
        out.loss.into_scalar() as f64
    };
    let h = 1e-3f32;
    let fd = (value(W_REF + h) - value(W_REF - h)) / (2.0 * h as f64);
    assert_matches_fd(grad, fd, 1e-4, 2e-2, 1e-2);
    // Only the chosen steps count: another choice gives another gradient.
    let (out, train) = ddpo(W_REF, &config, &Brightness, ddpo_draw(vec![1])).unwrap();
    let (_, other) = value_and_grad(out, &train);
    assert!((other - grad).abs() > 1e-6);
}

#[test]
fn ddpo_equal_rewards_give_no_gradient() {
    let (out, train) = ddpo(
        0.7,
        &DdpoConfig::default(),
        &Constant,
        ddpo_draw(vec![0, 1]),
    )
    .unwrap();
    let (loss, grad) = value_and_grad(out, &train);
    assert_eq!((loss, grad), (0.0, 0.0));
}

#[test]
fn ddpo_refuses_bad_draws() {
    let config = DdpoConfig::default();
    let err = |draw| match ddpo(0.7, &config, &Brightness, draw) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted a bad draw"),
    };
    assert!(err(ddpo_draw(vec![])).contains("training steps"));
    assert!(err(ddpo_draw(vec![8])).contains("training steps"));
    let mut short = ddpo_draw(vec![0]);
    short.step_noise.pop();
    assert!(err(short).contains("7 step noises"));
}
