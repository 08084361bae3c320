//! `[lora]`: which weights get adapters and of what size.

use serde::{Deserialize, Serialize};

/// PEFT's `LoraConfig` subset that defines an adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// `r`: the adapters' inner size.
    pub rank: usize,
    /// `lora_alpha`; the update is scaled by alpha / rank. None: equal to `rank` (scale 1, what
    /// files without an alpha assume).
    pub alpha: Option<f64>,
    /// Module names or dot-separated suffixes (`to_q`, `to_out.0`, `ff.net.2`, `conv1`, or a
    /// full name such as `mid_block.attentions.0.proj_in`). Linear and Conv2d modules only.
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    /// diffusers' SDXL LoRA training defaults: rank 4 on the attention projections.
    fn default() -> Self {
        Self {
            rank: 4,
            alpha: None,
            target_modules: ["to_q", "to_k", "to_v", "to_out.0"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl LoraConfig {
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(self.rank as f64)
    }

    /// Problems, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err("rank must be at least 1".into());
        }
        if let Some(a) = self.alpha {
            if !(a.is_finite() && a > 0.0) {
                return Err(format!("alpha must be a positive number, got {a}"));
            }
        }
        if self.target_modules.is_empty() {
            return Err("target_modules is empty".into());
        }
        if let Some(t) = self.target_modules.iter().find(|t| t.trim().is_empty()) {
            return Err(format!("target_modules has an empty name ({t:?})"));
        }
        Ok(())
    }
}
