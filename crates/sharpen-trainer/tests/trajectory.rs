//! The trajectory core on a toy model whose every number can be worked out by hand:
//! eps_theta(x) = w * x, a decoder that is a sigmoid of the first three latent channels, and a
//! brightness reward.

mod common;

use common::*;
use sharpen_schedulers::SchedulerConfig;
use sharpen_trainer::{
    effective_steps, path_losses, rollout, sft_step, trajectory_timesteps, RowTimesteps, SftInputs,
    StepModels, TrajectoryConfig,
};

#[test]
fn effective_steps_never_go_below_zero() {
    assert_eq!(effective_steps(0, 3, 40), 1);
    assert_eq!(effective_steps(39, 3, 40), 1);
    assert_eq!(effective_steps(40, 3, 40), 2);
    assert_eq!(effective_steps(80, 3, 40), 3);
    assert_eq!(effective_steps(999, 3, 40), 3);
    assert_eq!(effective_steps(999, 8, 40), 8);
    assert_eq!(trajectory_timesteps(85, 3, 40), vec![85, 45, 5]);
}

#[test]
fn rollout_scores_every_step_and_selects_per_prompt() {
    let (prompts, n, t, stride) = (["a", "b"], 3, 500, 40);
    let rows = prompts.len() * n;
    let x0 = values(rows * PER_ROW, 1);
    let eps = values(rows * PER_ROW, 2);
    let w = 0.7;
    let timesteps = trajectory_timesteps(t, 3, stride);
    let s = SchedulerConfig::sdxl_base_1_0().schedule;
    let at = s.alpha_bar(t as i64).unwrap();
    let x_t: Vec<f32> = x0
        .iter()
        .zip(&eps)
        .map(|(&x, &e)| (at.sqrt() * x as f64 + (1.0 - at).sqrt() * e as f64) as f32)
        .collect();
    let out = rollout(
        &Toy::<B>::new(w as f32),
        &SigmoidDecoder,
        &Brightness,
        &sampler(),
        tensor(x_t, [rows, 4, 2, 3]),
        &cond(rows),
        &prompts,
        n,
        &RowTimesteps::uniform(&timesteps, rows),
        stride,
    )
    .unwrap();
    for row in 0..rows {
        let r = row * PER_ROW..(row + 1) * PER_ROW;
        let (expected, _) = by_hand(&x0[r.clone()], &eps[r], w, t, &timesteps, stride);
        for (k, (got, want)) in out.step_rewards[row].iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() < 1e-5,
                "row {row} step {k}: {got} vs {want}"
            );
        }
        let mean = expected.iter().sum::<f64>() / expected.len() as f64;
        assert!((out.scores[row] - mean).abs() < 1e-5);
    }
    for p in 0..prompts.len() {
        let scores = &out.scores[p * n..(p + 1) * n];
        let best = (0..n)
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap();
        let worst = (0..n)
            .min_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap();
        assert_eq!(out.selections[p].winner, best, "prompt {p}");
        assert_eq!(out.selections[p].loser, worst, "prompt {p}");
    }
}

/// One SFT step on two prompts starting at `t[0]` and `t[1]`: (loss, d loss / d w, winner rows).
fn sft_at(w: f32, detach: bool, t: [usize; 2]) -> (f64, f64, Vec<usize>, sharpen_trainer::Rollout) {
    let (prompts, n) = (["a", "b"], 3);
    let rows = prompts.len() * n;
    let x0 = values(prompts.len() * PER_ROW, 3);
    let eps = values(rows * PER_ROW, 4);
    let train = Toy::<AD>::new(w);
    let inner = Toy::<B>::new(w);
    let sampler = sampler();
    let models = StepModels {
        train: &train,
        rollout: &inner,
        decoder: &SigmoidDecoder,
        reward: &Brightness,
        sampler: &sampler,
    };
    let config = TrajectoryConfig {
        detach_between_steps: detach,
        ..Default::default()
    };
    let step = sft_step::<AD, _, _, _>(
        &models,
        &config,
        SftInputs {
            x0: tensor(x0, [2, 4, 2, 3]),
            eps: tensor(eps, [rows, 4, 2, 3]),
            cond: &cond(prompts.len()),
            prompts: &prompts,
            t: t.to_vec(),
        },
    )
    .unwrap();
    let loss = step.loss.clone().into_scalar() as f64;
    let grads = step.loss.backward();
    let g = train
        .w
        .val()
        .grad(&grads)
        .expect("w gets a gradient")
        .into_scalar() as f64;
    let winners = (0..2).map(|p| step.rollout.winner_row(p, n)).collect();
    (loss, g, winners, step.rollout)
}

fn sft(w: f32, detach: bool, t: usize) -> (f64, f64, Vec<usize>) {
    let (loss, g, winners, _) = sft_at(w, detach, [t, t]);
    (loss, g, winners)
}

#[test]
fn sft_loss_is_the_selected_trajectorys_path_loss() {
    let (prompts, n, t, stride, w) = (2, 3, 500, 40, 0.7f32);
    let x0 = values(prompts * PER_ROW, 3);
    let eps = values(prompts * n * PER_ROW, 4);
    let (loss, _, winners) = sft(w, false, t);
    let timesteps = trajectory_timesteps(t, 3, stride);
    let mut expected = 0.0;
    for (p, &row) in winners.iter().enumerate() {
        let (_, l) = by_hand(
            &x0[p * PER_ROW..(p + 1) * PER_ROW],
            &eps[row * PER_ROW..(row + 1) * PER_ROW],
            w as f64,
            t,
            &timesteps,
            stride,
        );
        expected += l / prompts as f64;
    }
    assert!(
        (loss - expected).abs() < 1e-5 * expected.max(1.0),
        "{loss} vs {expected}"
    );
}

#[test]
fn gradients_flow_through_the_trajectory_unless_detached() {
    let (w, h, t) = (0.7f32, 1e-2f32, 500);
    let (_, grad, winners) = sft(w, false, t);
    // Central difference of the same selected trajectories' loss (selection is not differentiated).
    let (lp, _, wp) = sft(w + h, false, t);
    let (lm, _, wm) = sft(w - h, false, t);
    assert_eq!(
        (&wp, &wm),
        (&winners, &winners),
        "the selection is stable around w"
    );
    let fd = (lp - lm) / (2.0 * h as f64);
    assert_matches_fd(grad, fd, 1e-6, 2e-3, 1.0);
    let (_, detached, _) = sft(w, true, t);
    assert!(
        (detached - grad).abs() > 1e-3 * grad.abs(),
        "detaching changes the gradient ({detached} vs {grad})"
    );
    // With one step (t < stride) there is nothing to detach.
    let (_, g1, _) = sft(w, false, 20);
    let (_, g2, _) = sft(w, true, 20);
    assert!((g1 - g2).abs() <= 1e-6 * g1.abs().max(1.0));
}

#[test]
#[allow(clippy::needless_range_loop)]
fn path_losses_are_per_row() {
    let rows = 2;
    let x = values(rows * PER_ROW, 5);
    let eps = values(rows * PER_ROW, 6);
    let timesteps = trajectory_timesteps(300, 3, 40);
    let losses = path_losses(
        &Toy::<B>::new(0.3),
        &sampler(),
        tensor::<B>(x.clone(), [rows, 4, 2, 3]),
        tensor(eps.clone(), [rows, 4, 2, 3]),
        &cond(rows),
        &RowTimesteps::uniform(&timesteps, rows),
        40,
        false,
    );
    let losses: Vec<f32> = losses.into_data().to_vec().unwrap();
    // path_losses starts from x_t itself: undo the noising of by_hand with a zero clean latent.
    let s = SchedulerConfig::sdxl_base_1_0().schedule;
    let at = s.alpha_bar(300).unwrap();
    for row in 0..rows {
        let r = row * PER_ROW..(row + 1) * PER_ROW;
        let x0: Vec<f32> = x[r.clone()]
            .iter()
            .zip(&eps[r.clone()])
            .map(|(&xt, &e)| ((xt as f64 - (1.0 - at).sqrt() * e as f64) / at.sqrt()) as f32)
            .collect();
        let (_, l) = by_hand(&x0, &eps[r], 0.3, 300, &timesteps, 40);
        assert!(
            (losses[row] as f64 - l).abs() < 1e-4 * l.max(1.0),
            "row {row}: {} vs {l}",
            losses[row]
        );
    }
}

#[test]
fn mismatched_rows_are_an_error() {
    let err = rollout(
        &Toy::<B>::new(0.5),
        &SigmoidDecoder,
        &Brightness,
        &sampler(),
        tensor(values(5 * PER_ROW, 1), [5, 4, 2, 3]),
        &cond(5),
        &["a", "b"],
        3,
        &RowTimesteps::uniform(&[500], 5),
        40,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("2 prompts x 3 trajectories"),
        "{err}"
    );
}

#[test]
fn the_start_timestep_bound_is_the_schedule_or_the_configured_maximum() {
    let mut config = TrajectoryConfig::default();
    assert_eq!(config.timestep_bound(1000), 1000);
    config.max_timestep = Some(200);
    assert_eq!(config.timestep_bound(1000), 200);
    config.max_timestep = Some(5000);
    assert_eq!(config.timestep_bound(1000), 1000, "never past the schedule");
}

#[test]
fn each_prompt_starts_at_its_own_timestep() {
    // method.md section 3 draws one timestep per training example. Prompt 0 starts at 500 (three
    // steps), prompt 1 at 50 (m_eff = 2: 50 and 10).
    let (n, stride, w, t) = (3, 40, 0.7f32, [500, 50]);
    let x0 = values(2 * PER_ROW, 3);
    let eps = values(2 * n * PER_ROW, 4);
    let (loss, grad, winners, rollout) = sft_at(w, false, t);
    let mut expected = 0.0;
    for p in 0..2 {
        let mut best = (f64::NEG_INFINITY, 0);
        let timesteps = trajectory_timesteps(t[p], effective_steps(t[p], 3, stride), stride);
        assert_eq!(rollout.timesteps.row(p * n), timesteps.as_slice());
        for i in 0..n {
            let row = p * n + i;
            let (rewards, l) = by_hand(
                &x0[p * PER_ROW..(p + 1) * PER_ROW],
                &eps[row * PER_ROW..(row + 1) * PER_ROW],
                w as f64,
                t[p],
                &timesteps,
                stride,
            );
            assert_eq!(
                rollout.step_rewards[row].len(),
                timesteps.len(),
                "row {row}"
            );
            for (k, (got, want)) in rollout.step_rewards[row].iter().zip(&rewards).enumerate() {
                assert!(
                    (got - want).abs() < 1e-5,
                    "row {row} step {k}: {got} vs {want}"
                );
            }
            let score = rewards.iter().sum::<f64>() / rewards.len() as f64;
            if score > best.0 {
                best = (score, row);
            }
            if row == winners[p] {
                expected += l / 2.0;
            }
        }
        assert_eq!(
            winners[p], best.1,
            "prompt {p}: the best of its own steps' rewards"
        );
    }
    assert!(
        (loss - expected).abs() < 1e-5 * expected.max(1.0),
        "{loss} vs {expected}"
    );
    // The gradient of the mixed batch, against finite differences.
    let h = 1e-2f32;
    let (lp, _, wp, _) = sft_at(w + h, false, t);
    let (lm, _, wm, _) = sft_at(w - h, false, t);
    assert_eq!(
        (&wp, &wm),
        (&winners, &winners),
        "the selection is stable around w"
    );
    assert_matches_fd(grad, (lp - lm) / (2.0 * h as f64), 1e-6, 2e-3, 1.0);
}

#[test]
fn row_timesteps_end_each_row_at_its_own_length() {
    let steps = RowTimesteps::new(&[500, 50, 20], 3, 40);
    assert_eq!(steps.steps(), 3);
    assert_eq!(steps.row(0), &[500, 460, 420]);
    assert_eq!(steps.row(1), &[50, 10]);
    assert_eq!(steps.row(2), &[20]);
    // Rows past their end repeat their last timestep; they are neither scored nor trained.
    assert_eq!(steps.at(2), vec![420, 10, 20]);
    assert!(steps.active(1, 1) && !steps.active(1, 2) && !steps.active(2, 1));
    assert_eq!(steps.select(&[2, 0]).row(0), &[20]);
    assert_eq!(steps.first(1).steps(), 1);
    // The path loss averages each row over its own steps.
    let l = |v: [f32; 3]| burn::tensor::Tensor::<B, 1>::from_floats(v, &Default::default());
    let loss = steps.path_loss(vec![
        l([1.0, 2.0, 3.0]),
        l([4.0, 5.0, 6.0]),
        l([7.0, 8.0, 9.0]),
    ]);
    let loss: Vec<f32> = loss.into_data().to_vec().unwrap();
    assert_eq!(loss, vec![4.0, 3.5, 3.0]);
}
