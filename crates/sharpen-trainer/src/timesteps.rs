//! Trajectories that start at a timestep of their own (method.md section 3 draws one per
//! training example): each row's timesteps, and the per-row forms of the noising, the DDIM step
//! and the path loss. Rows that share a timestep go through the scalar code together, so a batch
//! whose rows all share one gives the same numbers as before.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use sharpen_loss::path_loss;
use sharpen_schedulers::training::add_noise;
use sharpen_schedulers::{NoiseSchedule, Sampler};

use crate::model::select;
use crate::trajectory::{ddim_next, effective_steps, trajectory_timesteps};

/// Each row's trajectory timesteps t_k = t - k * stride, k < m_eff(t): rows that start low run
/// fewer steps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowTimesteps {
    rows: Vec<Vec<usize>>,
}

impl RowTimesteps {
    /// The trajectories of rows starting at `starts`, m steps of `stride` at most.
    pub fn new(starts: &[usize], m: usize, stride: usize) -> Self {
        Self {
            rows: starts
                .iter()
                .map(|&t| trajectory_timesteps(t, effective_steps(t, m, stride), stride))
                .collect(),
        }
    }

    /// Every row on the same trajectory.
    pub fn uniform(timesteps: &[usize], rows: usize) -> Self {
        Self {
            rows: vec![timesteps.to_vec(); rows],
        }
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Row `r`'s timesteps.
    pub fn row(&self, r: usize) -> &[usize] {
        &self.rows[r]
    }

    /// The longest trajectory's step count.
    pub fn steps(&self) -> usize {
        self.rows.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Whether row `r` has a step `k`.
    pub fn active(&self, r: usize, k: usize) -> bool {
        k < self.rows[r].len()
    }

    /// Every row's timestep at step `k`. A row whose trajectory has ended repeats its last one:
    /// the batch still computes it, and nothing of it is scored or trained.
    pub fn at(&self, k: usize) -> Vec<usize> {
        self.rows.iter().map(|r| r[k.min(r.len() - 1)]).collect()
    }

    /// The given rows, in order.
    pub fn select(&self, rows: &[usize]) -> Self {
        Self {
            rows: rows.iter().map(|&r| self.rows[r].clone()).collect(),
        }
    }

    /// At most the first `k` steps of every row.
    pub fn first(&self, k: usize) -> Self {
        Self {
            rows: self
                .rows
                .iter()
                .map(|r| r[..k.min(r.len())].to_vec())
                .collect(),
        }
    }

    /// The rows' common trajectory, when they share one.
    fn shared(&self) -> Option<&[usize]> {
        let first = self.rows.first()?;
        self.rows.iter().all(|r| r == first).then_some(first)
    }

    /// Each row's path loss from its step losses (`step_losses[k]`: [rows], computed for every
    /// row): the mean over the row's own steps, [rows].
    pub fn path_loss<B: Backend>(&self, step_losses: Vec<Tensor<B, 1>>) -> Tensor<B, 1> {
        if self.shared().is_some() {
            return path_loss(step_losses);
        }
        let device = step_losses[0].device();
        step_losses
            .into_iter()
            .enumerate()
            .map(|(k, l)| {
                let w: Vec<f32> = (0..self.rows())
                    .map(|r| {
                        if self.active(r, k) {
                            1.0 / self.rows[r].len() as f32
                        } else {
                            0.0
                        }
                    })
                    .collect();
                l * Tensor::<B, 1>::from_floats(w.as_slice(), &device)
            })
            .reduce(|a, b| a + b)
            .expect("a trajectory has at least one step")
    }
}

/// The distinct timesteps of `t` (one per row) in order of first appearance, each with its rows.
pub fn groups(t: &[usize]) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (row, &tr) in t.iter().enumerate() {
        match groups.iter_mut().find(|(g, _)| *g == tr) {
            Some((_, rows)) => rows.push(row),
            None => groups.push((tr, vec![row])),
        }
    }
    groups
}

/// One tensor per group of [`groups`] (its rows, in order) put back together in row order.
pub fn in_row_order<B: Backend>(
    parts: Vec<Tensor<B, 4>>,
    groups: &[(usize, Vec<usize>)],
) -> Tensor<B, 4> {
    let order: Vec<usize> = groups.iter().flat_map(|(_, rows)| rows.clone()).collect();
    // Row `order[i]` sits at position i of the concatenation.
    let mut inverse = vec![0; order.len()];
    for (i, &r) in order.iter().enumerate() {
        inverse[r] = i;
    }
    select(Tensor::cat(parts, 0), &inverse)
}

/// `f` applied to the rows of each distinct timestep in `t` (one per row of every input), the
/// outputs put back in row order. One timestep for all rows: `f` once, on the inputs as given.
pub fn per_timestep<B: Backend, const N: usize>(
    t: &[usize],
    inputs: [Tensor<B, 4>; N],
    f: impl Fn(usize, [Tensor<B, 4>; N]) -> Vec<Tensor<B, 4>>,
) -> Vec<Tensor<B, 4>> {
    let groups = groups(t);
    if let [(t, _)] = groups.as_slice() {
        return f(*t, inputs);
    }
    let mut parts: Vec<Vec<Tensor<B, 4>>> = Vec::new();
    for (tg, rows) in &groups {
        let out = f(*tg, inputs.clone().map(|x| select(x, rows)));
        if parts.is_empty() {
            parts = vec![Vec::new(); out.len()];
        }
        for (p, o) in parts.iter_mut().zip(out) {
            p.push(o);
        }
    }
    parts
        .into_iter()
        .map(|p| in_row_order(p, &groups))
        .collect()
}

/// `sqrt(abar_t) x0 + sqrt(1 - abar_t) eps` with each row's own `t`.
pub fn add_noise_rows<B: Backend>(
    schedule: &NoiseSchedule,
    x0: Tensor<B, 4>,
    eps: Tensor<B, 4>,
    t: &[usize],
) -> Tensor<B, 4> {
    let mut out = per_timestep(t, [x0, eps], |t, [x0, eps]| {
        vec![add_noise(schedule, x0, eps, t)]
    });
    out.pop().expect("one output")
}

/// The deterministic DDIM step of each row from its `t` to `t - stride`: (next state, x0
/// estimate).
pub fn ddim_next_rows<B: Backend>(
    sampler: &Sampler,
    t: &[usize],
    stride: usize,
    eps_hat: Tensor<B, 4>,
    x: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let mut out = per_timestep(t, [eps_hat, x], |t, [eps_hat, x]| {
        let (next, x0) = ddim_next(sampler, t, stride, eps_hat, x);
        vec![next, x0]
    });
    let x0 = out.pop().expect("two outputs");
    (out.pop().expect("two outputs"), x0)
}
