//! The losses of Diffusion-Sharpening (method.md sections 3-5) as pure functions on tensors:
//! trajectory scores, per-prompt selection, step and path losses, the SFT loss and the RLHF loss
//! (paper Eq. 11, or the reference code's form). Rollouts and recomputation live in the trainer.

mod select;
mod sharpen;

pub use select::{select, trajectory_reward, Selection};
pub use sharpen::{path_loss, rlhf_loss, step_loss, RewardMargin, RlhfBatch};
