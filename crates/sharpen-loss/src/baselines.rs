//! The baselines' losses (method.md section 9): Diffusion-DPO and DDPO's clipped policy
//! objective with per-prompt normalised advantages.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::{rlhf_loss, RewardMargin, RlhfBatch};

/// Diffusion-DPO per pair ([batch] each: the trained and reference models' step losses on the
/// noised winner and loser, one shared t and eps per pair):
/// `-log sigmoid(-(beta / 2) [(loss_w - ref_w) - (loss_l - ref_l)])`, beta = 5000 in the paper.
/// Pairs whose rewards tied contribute log 2 with no gradient.
///
/// This is the sharpening RLHF loss of a one-step trajectory with `beta / 2` and no reward margin.
pub fn diffusion_dpo_loss<B: Backend>(
    loss_w: Tensor<B, 1>,
    loss_l: Tensor<B, 1>,
    ref_w: Tensor<B, 1>,
    ref_l: Tensor<B, 1>,
    tie: &[bool],
    beta: f64,
) -> Tensor<B, 1> {
    let gap = vec![0.0; tie.len()];
    rlhf_loss(
        RlhfBatch {
            loss_w,
            loss_l,
            ref_w,
            ref_l,
            reward_gap: &gap,
            tie,
        },
        beta / 2.0,
        RewardMargin::Outside,
    )
}

/// Per-prompt normalised advantages: rows `p*n .. p*n+n-1` are prompt p's samples;
/// `(r - mean_p) / (std_p + 1e-6)` with the population standard deviation. A prompt whose samples
/// all scored the same gets zero advantages (nothing to learn from it).
pub fn group_advantages(scores: &[f64], n: usize) -> Vec<f64> {
    assert!(
        n > 0 && scores.len().is_multiple_of(n),
        "{} scores are not whole groups of {n}",
        scores.len()
    );
    scores
        .chunks(n)
        .flat_map(|group| {
            let mean = group.iter().sum::<f64>() / n as f64;
            let var = group.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n as f64;
            let std = var.sqrt();
            group.iter().map(move |r| {
                if std < 1e-12 {
                    0.0
                } else {
                    (r - mean) / (std + 1e-6)
                }
            })
        })
        .collect()
}

/// DDPO's PPO-clip objective per sample ([batch] each): with `ratio = exp(log_prob - old)`,
/// `max(-A * ratio, -A * clamp(ratio, 1 - clip, 1 + clip))`. Its gradient at `ratio = 1` is
/// REINFORCE's, `-A * grad log_prob`.
pub fn ppo_clip_loss<B: Backend>(
    log_prob: Tensor<B, 1>,
    old_log_prob: Tensor<B, 1>,
    advantages: Tensor<B, 1>,
    clip: f64,
) -> Tensor<B, 1> {
    let ratio = (log_prob - old_log_prob).exp();
    let unclipped = advantages.clone().neg() * ratio.clone();
    let clipped = advantages.neg() * ratio.clamp(1.0 - clip, 1.0 + clip);
    unclipped.max_pair(clipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{host, t1, AD, B};

    #[test]
    fn diffusion_dpo_is_the_published_formula() {
        let (lw, ll, rw, rl) = ([0.3f32, 0.5], [0.4f32, 0.2], [0.35f32, 0.5], [0.38f32, 0.1]);
        let beta = 5000.0;
        let got = host(diffusion_dpo_loss(
            t1::<B>(&lw),
            t1(&ll),
            t1(&rw),
            t1(&rl),
            &[false, false],
            beta,
        ));
        for i in 0..2 {
            let inner =
                -(beta / 2.0) * ((lw[i] as f64 - rw[i] as f64) - (ll[i] as f64 - rl[i] as f64));
            let want = (1.0 + (-inner).exp()).ln();
            assert!(
                (got[i] - want).abs() < 1e-3 * want.max(1.0),
                "pair {i}: {} vs {want}",
                got[i]
            );
        }
    }

    #[test]
    fn diffusion_dpo_lowers_the_winner_raises_the_loser_and_skips_ties() {
        let lw = t1::<AD>(&[0.3, 0.3]).require_grad();
        let ll = t1::<AD>(&[0.3, 0.3]).require_grad();
        let loss = diffusion_dpo_loss(
            lw.clone(),
            ll.clone(),
            t1(&[0.3, 0.3]),
            t1(&[0.3, 0.3]),
            &[false, true],
            5000.0,
        );
        let values = host(loss.clone().inner());
        assert!((values[1] - std::f64::consts::LN_2).abs() < 1e-6);
        let grads = loss.sum().backward();
        let gw = host(lw.grad(&grads).unwrap());
        let gl = host(ll.grad(&grads).unwrap());
        // At Delta = 0: d/d loss_w = beta/2 * sigmoid(0) = 1250, d/d loss_l = -1250.
        assert!((gw[0] - 1250.0).abs() < 1e-2 && (gl[0] + 1250.0).abs() < 1e-2);
        assert_eq!((gw[1], gl[1]), (0.0, 0.0), "a tied pair has no gradient");
    }

    #[test]
    fn advantages_are_normalised_within_each_prompt() {
        let a = group_advantages(&[1.0, 2.0, 3.0, 0.5, 0.5, 0.5], 3);
        let s = (2.0f64 / 3.0).sqrt();
        let want = [-1.0 / (s + 1e-6), 0.0, 1.0 / (s + 1e-6), 0.0, 0.0, 0.0];
        for (g, w) in a.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{a:?}");
        }
    }

    #[test]
    fn ppo_clip_is_reinforce_at_ratio_one_and_clips_beyond() {
        let lp = t1::<AD>(&[-1.0, -1.0, -0.5, -1.5]).require_grad();
        let old = t1::<AD>(&[-1.0, -1.0, -1.0, -1.0]);
        let adv = t1::<AD>(&[2.0, -1.0, 1.0, -1.0]);
        let loss = ppo_clip_loss(lp.clone(), old, adv, 0.2);
        let values = host(loss.clone().inner());
        // Rows 0-1: ratio 1, loss -A. Row 2: A = 1, ratio e^0.5 > 1.2: max(-e^0.5, -1.2) = -1.2 (clipped, no gradient).
        // Row 3: A = -1, ratio e^-0.5 < 0.8: max(e^-0.5, 0.8) = 0.8 (clipped, no gradient).
        assert!((values[0] + 2.0).abs() < 1e-6 && (values[1] - 1.0).abs() < 1e-6);
        assert!((values[2] + 1.2).abs() < 1e-6 && (values[3] - 0.8).abs() < 1e-6);
        let grads = loss.sum().backward();
        let g = host(lp.grad(&grads).unwrap());
        assert!(
            (g[0] + 2.0).abs() < 1e-6 && (g[1] - 1.0).abs() < 1e-6,
            "{g:?}"
        );
        assert_eq!((g[2], g[3]), (0.0, 0.0), "clipped rows carry no gradient");
    }
}
