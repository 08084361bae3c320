//! Scores and selection, per prompt (the reference code pools across the batch, which is only
//! correct for batch 1).

/// A trajectory's score: the mean of its per-step rewards (the paper's Eq. 8 sums; same argmax).
///
/// Panics on an empty trajectory.
pub fn trajectory_reward(step_rewards: &[f64]) -> f64 {
    assert!(
        !step_rewards.is_empty(),
        "a trajectory has at least one step"
    );
    step_rewards.iter().sum::<f64>() / step_rewards.len() as f64
}

/// The trajectories chosen for one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// argmax of the scores (first on ties): the SFT target and the RLHF winner.
    pub winner: usize,
    /// argmin of the scores (first on ties): the RLHF loser.
    pub loser: usize,
    /// All scores are equal: RLHF skips the update.
    pub tie: bool,
}

/// Selects among one prompt's trajectory scores.
///
/// Panics on an empty slice or a NaN score (a reward that failed must not be trained on).
pub fn select(scores: &[f64]) -> Selection {
    assert!(!scores.is_empty(), "at least one trajectory per prompt");
    assert!(
        scores.iter().all(|s| !s.is_nan()),
        "NaN trajectory score: {scores:?}"
    );
    let mut winner = 0;
    let mut loser = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[winner] {
            winner = i;
        }
        if s < scores[loser] {
            loser = i;
        }
    }
    Selection {
        winner,
        loser,
        tie: scores[winner] == scores[loser],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_per_prompt_argmax_and_argmin() {
        assert_eq!(
            select(&[0.2, 0.9, 0.1]),
            Selection {
                winner: 1,
                loser: 2,
                tie: false
            }
        );
        // First occurrence on ties between some trajectories.
        assert_eq!(
            select(&[0.5, 0.9, 0.9, 0.1, 0.1]),
            Selection {
                winner: 1,
                loser: 3,
                tie: false
            }
        );
        assert_eq!(
            select(&[0.3, 0.3, 0.3]),
            Selection {
                winner: 0,
                loser: 0,
                tie: true
            }
        );
        assert_eq!(
            select(&[0.7]),
            Selection {
                winner: 0,
                loser: 0,
                tie: true
            }
        );
        // Batch of prompts: selection never mixes prompts.
        let batch = [[0.1, 0.8], [0.9, 0.2]];
        let picks: Vec<_> = batch.iter().map(|s| select(s).winner).collect();
        assert_eq!(picks, vec![1, 0]);
    }

    #[test]
    fn trajectory_reward_is_the_step_mean() {
        assert_eq!(trajectory_reward(&[0.2, 0.4, 0.9]), 0.5);
        let sums = [[1.0, 2.0], [0.0, 4.0]];
        // Mean and sum give the same argmax.
        let means: Vec<f64> = sums.iter().map(|s| trajectory_reward(s)).collect();
        assert_eq!(select(&means).winner, 1);
    }

    #[test]
    #[should_panic(expected = "NaN")]
    fn nan_scores_are_refused() {
        select(&[0.1, f64::NAN]);
    }
}
