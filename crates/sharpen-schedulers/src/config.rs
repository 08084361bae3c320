//! `scheduler/scheduler_config.json`: the serde mirror (every diffusers scheduler reads the same
//! fields, so any sampler can be built from another's config, as diffusers' `from_config` does) and
//! the validated config.

use serde::Deserialize;

use crate::schedule::{BetaSchedule, NoiseSchedule, TimestepSpacing};

fn d_train() -> usize {
    1000
}
fn d_beta_start() -> f64 {
    0.0001
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_linear() -> String {
    "linear".into()
}
fn d_epsilon() -> String {
    "epsilon".into()
}
fn d_leading() -> String {
    "leading".into()
}
fn d_one() -> f64 {
    1.0
}

/// The fields of a diffusers scheduler config, with diffusers' defaults. Unknown fields (those of
/// other scheduler classes) are ignored, as `from_config` ignores them.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfigJson {
    #[serde(default = "d_train")]
    pub num_train_timesteps: usize,
    #[serde(default = "d_beta_start")]
    pub beta_start: f64,
    #[serde(default = "d_beta_end")]
    pub beta_end: f64,
    #[serde(default = "d_linear")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "d_epsilon")]
    pub prediction_type: String,
    #[serde(default = "d_leading")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    #[serde(default)]
    pub clip_sample: Option<bool>,
    #[serde(default = "d_one")]
    pub clip_sample_range: f64,
    #[serde(default)]
    pub use_karras_sigmas: Option<bool>,
    #[serde(default)]
    pub interpolation_type: Option<String>,
    /// diffusers' zero-terminal-SNR rescaling of the betas: not implemented here, so `true` is
    /// refused rather than read as another schedule.
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

impl PredictionType {
    const ALL: [Self; 3] = [Self::Epsilon, Self::VPrediction, Self::Sample];

    /// diffusers' name, as `prediction_type` spells it in `scheduler_config.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Epsilon => "epsilon",
            Self::VPrediction => "v_prediction",
            Self::Sample => "sample",
        }
    }

    /// The type diffusers' name means.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// The validated scheduler config.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub schedule: NoiseSchedule,
    pub prediction: PredictionType,
    pub spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// DDIM's value of abar below timestep 0: 1 when true, abar(0) when false (SDXL: false).
    pub set_alpha_to_one: bool,
    /// Clip the predicted clean sample to [-clip_sample_range, clip_sample_range] (DDIM, DDPM).
    /// `None`: the sampler's own default (true for DDIM and DDPM, as in diffusers).
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f64,
    pub use_karras_sigmas: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid scheduler config: field `{field}`: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

impl TryFrom<SchedulerConfigJson> for SchedulerConfig {
    type Error = ConfigError;

    fn try_from(j: SchedulerConfigJson) -> Result<Self, ConfigError> {
        if j.num_train_timesteps < 2 {
            return Err(bad("num_train_timesteps", "must be at least 2"));
        }
        let schedule = match (&j.trained_betas, j.beta_schedule.as_str()) {
            (Some(betas), _) => {
                if betas.len() != j.num_train_timesteps {
                    return Err(bad(
                        "trained_betas",
                        format!(
                            "has {} values for {} timesteps",
                            betas.len(),
                            j.num_train_timesteps
                        ),
                    ));
                }
                let mut acc = 1.0;
                let alphas_cumprod = betas
                    .iter()
                    .map(|b| {
                        acc *= 1.0 - b;
                        acc
                    })
                    .collect();
                NoiseSchedule {
                    betas: betas.clone(),
                    alphas_cumprod,
                }
            }
            (None, "linear") => NoiseSchedule::new(
                BetaSchedule::Linear {
                    start: j.beta_start,
                    end: j.beta_end,
                },
                j.num_train_timesteps,
            ),
            (None, "scaled_linear") => NoiseSchedule::new(
                BetaSchedule::ScaledLinear {
                    start: j.beta_start,
                    end: j.beta_end,
                },
                j.num_train_timesteps,
            ),
            (None, "squaredcos_cap_v2") => {
                NoiseSchedule::new(BetaSchedule::SquaredCosCapV2, j.num_train_timesteps)
            }
            (None, other) => {
                return Err(bad(
                    "beta_schedule",
                    format!(
                        "`{other}` is not supported (linear, scaled_linear, squaredcos_cap_v2)"
                    ),
                ));
            }
        };
        if schedule.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(bad("beta_start", "betas must lie in [0, 1)"));
        }
        let prediction = PredictionType::parse(&j.prediction_type).ok_or_else(|| {
            bad(
                "prediction_type",
                format!(
                    "`{}` is not supported (epsilon, v_prediction, sample)",
                    j.prediction_type
                ),
            )
        })?;
        let spacing = match j.timestep_spacing.as_str() {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            "linspace" => TimestepSpacing::Linspace,
            other => {
                return Err(bad(
                    "timestep_spacing",
                    format!("`{other}` is not supported (leading, trailing, linspace)"),
                ))
            }
        };
        if j.rescale_betas_zero_snr {
            return Err(bad(
                "rescale_betas_zero_snr",
                "`true` (zero terminal SNR) is not supported; this schedule would be another one",
            ));
        }
        if let Some(interp) = j.interpolation_type.as_deref().filter(|i| *i != "linear") {
            return Err(bad(
                "interpolation_type",
                format!("`{interp}` is not supported (linear)"),
            ));
        }
        Ok(Self {
            schedule,
            prediction,
            spacing,
            steps_offset: j.steps_offset,
            set_alpha_to_one: j.set_alpha_to_one.unwrap_or(true),
            clip_sample: j.clip_sample,
            clip_sample_range: j.clip_sample_range,
            use_karras_sigmas: j.use_karras_sigmas.unwrap_or(false),
        })
    }
}

impl SchedulerConfig {
    /// `stabilityai/stable-diffusion-xl-base-1.0` `scheduler/scheduler_config.json`.
    pub fn sdxl_base_1_0() -> Self {
        Self {
            schedule: NoiseSchedule::new(
                BetaSchedule::ScaledLinear {
                    start: 0.00085,
                    end: 0.012,
                },
                1000,
            ),
            prediction: PredictionType::Epsilon,
            spacing: TimestepSpacing::Leading,
            steps_offset: 1,
            set_alpha_to_one: false,
            clip_sample: Some(false),
            clip_sample_range: 1.0,
            use_karras_sigmas: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PredictionType;

    #[test]
    fn prediction_types_read_diffusers_names_back() {
        for p in PredictionType::ALL {
            assert_eq!(PredictionType::parse(p.as_str()), Some(p), "{p:?}");
        }
        assert_eq!(
            PredictionType::parse("v_prediction"),
            Some(PredictionType::VPrediction)
        );
        assert_eq!(PredictionType::parse("v"), None);
        assert_eq!(PredictionType::parse("Epsilon"), None);
    }
}
