//! The Diffusion-Sharpening training step, backend-generic and IO-free (method.md sections 3-5):
//! roll out n short DDIM trajectories from one noised latent without autograd, score every
//! step's decoded clean-latent estimate, select per prompt, then recompute only the selected
//! trajectory (SFT) or the winner/loser pair (RLHF) with autograd; and the baselines' steps
//! (Diffusion-DPO, DDPO). The random draws (timestep, noises) come from the caller, so a step is
//! a pure function of its inputs.

pub mod checkpointed;
pub mod ddpo;
pub mod dpo;
pub mod model;
pub mod rlhf;
pub mod standard;
pub mod timesteps;
pub mod train;
pub mod trajectory;

pub use checkpointed::{
    checkpointed_calls_grads, checkpointed_path_grads, ddpo_grads, dpo_grads, rlhf_grads,
    sft_grads, UNetCall,
};
pub use ddpo::{ddpo_step, DdpoConfig, DdpoDraw, DdpoInputs};
pub use dpo::{dpo_step, BaselineStep, DpoConfig, DpoDraw, DpoInputs, Sampling};
pub use model::{EpsModel, LatentDecoder, TextCond, VaeDecoder};
pub use rlhf::{
    generate, guided_eps, rlhf_step, RlhfConfig, RlhfDraw, RlhfInputs, RlhfSelect, RlhfStep,
    RlhfStepValue,
};
pub use standard::{standard_input, standard_loss, standard_target};
pub use timesteps::RowTimesteps;
pub use train::{OptimConfig, StepReport, Trainer};
pub use trajectory::{
    effective_steps, lift_cond, path_losses, repeat_prompts, rollout, rollout_with_states,
    score_latents, sft_step, trajectory_timesteps, Rollout, SftInputs, SftStep, StepModels,
    TrajectoryConfig, TrajectoryError,
};
