//! The losses of Diffusion-Sharpening (method.md sections 3-5) as pure functions on tensors:
//! trajectory scores, per-prompt selection, step and path losses, the SFT loss and the RLHF loss
//! (paper Eq. 11, or the reference code's form), and the baselines' losses (Diffusion-DPO, DDPO). Rollouts and recomputation live in the trainer.

mod baselines;
mod select;
mod sharpen;

pub use baselines::{diffusion_dpo_loss, group_advantages, ppo_clip_loss};
pub use select::{select, trajectory_reward, Selection};
pub use sharpen::{path_loss, rlhf_loss, step_loss, RewardMargin, RlhfBatch};
