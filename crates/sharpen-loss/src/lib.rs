//! The losses of Diffusion-Sharpening (method.md sections 3-5) as pure functions on tensors:
//! trajectory scores, per-prompt selection, step and path losses, the SFT loss and the RLHF loss
//! (paper Eq. 11, or the reference code's form), and the baselines' losses (Diffusion-DPO, DDPO). Rollouts and recomputation live in the trainer.

mod baselines;
mod select;
mod sharpen;

pub use baselines::{diffusion_dpo_loss, group_advantages, ppo_clip_loss};
pub use select::{select, trajectory_reward, Selection};
pub use sharpen::{path_loss, rlhf_loss, step_loss, RewardMargin, RlhfBatch};

/// Helpers of the unit tests: 1-D tensors from and to the host.
#[cfg(test)]
pub(crate) mod test_util {
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData};

    pub type B = burn::backend::Flex;
    pub type AD = burn::backend::Autodiff<B>;

    pub fn t1<BB: Backend>(v: &[f32]) -> Tensor<BB, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    pub fn host<BB: Backend>(t: Tensor<BB, 1>) -> Vec<f64> {
        t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
    }
}
