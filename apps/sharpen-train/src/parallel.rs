//! Data-parallel training in one process: a thread per device, each a burn-collective peer
//! running the training loop on its rows of every batch (see `run::run`).

use anyhow::{anyhow, Context};
use burn::tensor::backend::AutodiffBackend;
use sharpen_trainer::train::sync::{abort_group, Peer};

use crate::run::{run, RunOptions};
use crate::setup::RewardStats;

/// Runs `opts` with one peer per device; returns the first peer's error, if any. A failing peer
/// resets the group so that the others, waiting in an all-reduce, stop too instead of hanging.
pub fn data_parallel<B: AutodiffBackend>(
    opts: &RunOptions,
    devices: Vec<B::Device>,
) -> anyhow::Result<()> {
    let world = devices.len();
    tracing::info!(devices = world, "data-parallel training");
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .into_iter()
            .enumerate()
            .map(|(rank, device)| {
                scope.spawn(move || {
                    let result = Peer::<B::InnerBackend>::join(rank, world, device.clone())
                        .context("joining the data-parallel group")
                        .and_then(|peer| run::<B>(opts, device, peer));
                    if result.is_err() {
                        abort_group::<B::InnerBackend>();
                    }
                    result.with_context(|| format!("data-parallel peer {rank} of {world}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a data-parallel peer panicked")))
            })
            .collect()
    });
    // The root cause first: peers stopped by a reset report a collective error.
    let mut errors: Vec<anyhow::Error> = results.into_iter().filter_map(Result::err).collect();
    errors.sort_by_key(|e| format!("{e:#}").contains("all-reduce"));
    errors.into_iter().next().map_or(Ok(()), Err)
}

/// The group's step metrics: loss and reward statistics averaged over the peers (every peer has
/// the same number of prompts, and best/worst are per-prompt means), and whether any peer was
/// interrupted (so that all stop at the same step).
pub fn group_metrics<B: burn::tensor::backend::Backend>(
    peer: Option<&Peer<B>>,
    loss: f64,
    rewards: Option<RewardStats>,
    interrupted: bool,
) -> anyhow::Result<(f64, Option<RewardStats>, bool)> {
    let Some(peer) = peer.filter(|p| p.world() > 1) else {
        return Ok((loss, rewards, interrupted));
    };
    let r = rewards.unwrap_or_default();
    let mine = [
        loss,
        r[0],
        r[1],
        r[2],
        r[3],
        f64::from(u8::from(interrupted)),
    ]
    .map(|v| v as f32);
    let all = peer.gather(&mine).context("gathering the step's metrics")?;
    let mean = |i: usize| all.iter().map(|v| f64::from(v[i])).sum::<f64>() / all.len() as f64;
    Ok((
        mean(0),
        rewards.map(|_| [mean(1), mean(2), mean(3), mean(4)]),
        all.iter().any(|v| v[5] > 0.0),
    ))
}

/// The step's loss, or NaN when any peer's is not finite: one non-finite loss stops (or skips)
/// every peer at the same step.
pub fn agree_finite<B: burn::tensor::backend::Backend>(
    peer: Option<&Peer<B>>,
    value: f64,
) -> anyhow::Result<f64> {
    let Some(peer) = peer.filter(|p| p.world() > 1) else {
        return Ok(value);
    };
    let all = peer
        .gather(&[value as f32])
        .context("agreeing on the loss")?;
    Ok(match all.iter().all(|v| v[0].is_finite()) {
        true => value,
        false => f64::NAN,
    })
}
