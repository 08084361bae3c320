//! Step and path losses, and the RLHF preference loss.

use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `l = mean over (C, H, W) of (eps_hat - eps)^2` per batch item: [batch, c, h, w] -> [batch].
/// The target is the trajectory's INITIAL noise at every step (method.md section 3).
pub fn step_loss<B: Backend>(eps_hat: Tensor<B, 4>, eps: Tensor<B, 4>) -> Tensor<B, 1> {
    let [batch, c, h, w] = eps_hat.dims();
    (eps_hat - eps)
        .powi_scalar(2)
        .reshape([batch, c * h * w])
        .mean_dim(1)
        .reshape([batch])
}

/// A trajectory's loss: the mean of its step losses. Each: [batch]. The SFT loss is the path loss
/// of the selected trajectory.
///
/// Panics on an empty list.
pub fn path_loss<B: Backend>(step_losses: Vec<Tensor<B, 1>>) -> Tensor<B, 1> {
    assert!(
        !step_losses.is_empty(),
        "a trajectory has at least one step"
    );
    let n = step_losses.len() as f64;
    Tensor::stack::<2>(step_losses, 0)
        .sum_dim(0)
        .squeeze_dim::<1>(0)
        .div_scalar(n)
}

/// Where the reward margin enters the RLHF loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RewardMargin {
    /// Paper Eq. 11 (default): `-log sigmoid(beta * Delta - (r_w - r_l))`.
    #[default]
    Inside,
    /// The reference code: `-[log sigmoid(beta * Delta) - (r_w - r_l)]`; the margin is then a
    /// constant without gradient.
    Outside,
}

/// One batch of RLHF comparisons, per prompt ([batch] each): the winner's and loser's path losses
/// under the trained model and under the frozen reference model, the reward gap r_w - r_l
/// (rewards normalised to about [0, 1]) and whether all of the prompt's trajectories tied.
#[derive(Debug, Clone)]
pub struct RlhfBatch<'a, B: Backend> {
    pub loss_w: Tensor<B, 1>,
    pub loss_l: Tensor<B, 1>,
    pub ref_w: Tensor<B, 1>,
    pub ref_l: Tensor<B, 1>,
    pub reward_gap: &'a [f64],
    pub tie: &'a [bool],
}

/// The RLHF Diffusion-Sharpening loss per prompt, with
/// `Delta = (ref_w - ref_l) - (loss_w - loss_l)` (beta = 2500 by default in this parameterisation).
/// Prompts whose trajectories all tied contribute the constant log 2 with zero gradient.
pub fn rlhf_loss<B: Backend>(
    input: RlhfBatch<'_, B>,
    beta: f64,
    margin: RewardMargin,
) -> Tensor<B, 1> {
    let RlhfBatch {
        loss_w,
        loss_l,
        ref_w,
        ref_l,
        reward_gap,
        tie,
    } = input;
    let batch = loss_w.dims()[0];
    assert_eq!(reward_gap.len(), batch, "one reward gap per prompt");
    assert_eq!(tie.len(), batch, "one tie flag per prompt");
    let device = loss_w.device();
    let gap = Tensor::<B, 1>::from_floats(
        reward_gap
            .iter()
            .map(|&g| g as f32)
            .collect::<Vec<_>>()
            .as_slice(),
        &device,
    );
    let delta = (ref_w - ref_l) - (loss_w - loss_l);
    let loss = match margin {
        RewardMargin::Inside => log_sigmoid(delta.mul_scalar(beta) - gap).neg(),
        RewardMargin::Outside => (log_sigmoid(delta.mul_scalar(beta)) - gap).neg(),
    };
    // Ties: log 2 (= -log sigmoid(0)) with no gradient.
    let keep = Tensor::<B, 1>::from_floats(
        tie.iter()
            .map(|&t| if t { 0.0 } else { 1.0 })
            .collect::<Vec<f32>>()
            .as_slice(),
        &device,
    );
    let tied = keep
        .clone()
        .neg()
        .add_scalar(1.0)
        .mul_scalar(std::f64::consts::LN_2);
    loss * keep + tied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{t1, AD, B};
    use burn::tensor::TensorData;

    /// As f32, the precision these tests compare at.
    fn host<BB: Backend>(t: Tensor<BB, 1>) -> Vec<f32> {
        crate::test_util::host(t)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }

    fn softplus(x: f64) -> f64 {
        (1.0 + x.exp()).ln()
    }

    #[test]
    fn step_and_path_losses_are_means() {
        let device = Default::default();
        let eps_hat = Tensor::<B, 4>::from_data(
            TensorData::new(
                vec![1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 2.0],
                [2, 1, 2, 2],
            ),
            &device,
        );
        let eps = Tensor::<B, 4>::zeros([2, 1, 2, 2], &device);
        let l = host(step_loss(eps_hat, eps));
        assert_eq!(l, vec![(1.0 + 4.0 + 9.0 + 16.0) / 4.0, 4.0 / 4.0]);
        let path = host(path_loss(vec![
            t1::<B>(&[1.0, 2.0]),
            t1::<B>(&[3.0, 6.0]),
            t1::<B>(&[2.0, 1.0]),
        ]));
        assert_eq!(path, vec![2.0, 3.0]);
    }

    #[test]
    fn rlhf_loss_equals_the_formula_in_both_forms() {
        let (lw, ll, rw, rl) = (
            [0.30f32, 0.50],
            [0.35f32, 0.40],
            [0.33f32, 0.45],
            [0.34f32, 0.46],
        );
        let gap = [0.4, 0.1];
        let beta = 2500.0;
        for margin in [RewardMargin::Inside, RewardMargin::Outside] {
            let batch = RlhfBatch {
                loss_w: t1::<B>(&lw),
                loss_l: t1::<B>(&ll),
                ref_w: t1::<B>(&rw),
                ref_l: t1::<B>(&rl),
                reward_gap: &gap,
                tie: &[false, false],
            };
            let got = host(rlhf_loss(batch, beta, margin));
            for i in 0..2 {
                let delta = (rw[i] as f64 - rl[i] as f64) - (lw[i] as f64 - ll[i] as f64);
                let want = match margin {
                    // -log sigmoid(x) = softplus(-x)
                    RewardMargin::Inside => softplus(-(beta * delta - gap[i])),
                    RewardMargin::Outside => softplus(-beta * delta) + gap[i],
                };
                assert!(
                    (got[i] as f64 - want).abs() < 1e-3 * want.abs().max(1.0),
                    "{margin:?} item {i}: {} vs {want}",
                    got[i]
                );
            }
        }
    }

    #[test]
    fn gradients_reach_the_trained_losses_only_and_ties_skip() {
        let lw = t1::<AD>(&[0.30, 0.20]).require_grad();
        let ll = t1::<AD>(&[0.35, 0.20]).require_grad();
        let rw = t1::<AD>(&[0.33, 0.20]);
        let rl = t1::<AD>(&[0.34, 0.20]);
        let batch = RlhfBatch {
            loss_w: lw.clone(),
            loss_l: ll.clone(),
            ref_w: rw,
            ref_l: rl,
            reward_gap: &[0.4, 0.0],
            tie: &[false, true],
        };
        let loss = rlhf_loss(batch, 2500.0, RewardMargin::Inside);
        let values = host(loss.clone().inner());
        assert!(
            (values[1] as f64 - std::f64::consts::LN_2).abs() < 1e-6,
            "a tie costs log 2"
        );
        let grads = loss.sum().backward();
        let gw = host(lw.grad(&grads).unwrap());
        let gl = host(ll.grad(&grads).unwrap());
        // d/d loss_w of -log sigmoid(beta*Delta - gap) = beta * sigmoid(-(beta*Delta - gap)) > 0,
        // and the loser's gradient is its negation; the tied prompt gets none.
        let delta = (0.33f64 - 0.34) - (0.30 - 0.35);
        let want = 2500.0 / (1.0 + (2500.0 * delta - 0.4).exp());
        assert!(
            (gw[0] as f64 - want).abs() < 1e-2 * want,
            "{} vs {want}",
            gw[0]
        );
        assert!((gl[0] as f64 + want).abs() < 1e-2 * want);
        assert_eq!((gw[1], gl[1]), (0.0, 0.0));
    }
}
