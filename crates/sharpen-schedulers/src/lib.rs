//! Noise schedules and samplers, exact against diffusers.
//!
//! Architecture Invariant: the schedule math is f64 on slices and depends on no model crate; only
//! `step`, `scale_model_input` and the training functions touch tensors.

pub mod config;
mod dpm;
pub mod sampler;
pub mod schedule;
pub mod training;

pub use config::{ConfigError, PredictionType, SchedulerConfig, SchedulerConfigJson};
pub use sampler::{Sampler, SamplerKind, SamplerState, StepOutput};
pub use schedule::{spaced_timesteps, BetaSchedule, NoiseSchedule, TimestepSpacing};
