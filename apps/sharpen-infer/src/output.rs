//! PNG output with the generation parameters (A1111's `parameters` text chunk) and a JSON sidecar,
//! both written to a temporary name and renamed.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// What produced an image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRecord {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub seed: Option<u64>,
    pub steps: usize,
    pub sampler: String,
    pub guidance_scale: f64,
    pub width: usize,
    pub height: usize,
    pub model: String,
    pub index: usize,
    pub latents_file: Option<String>,
    /// Model evaluations spent on this image (steps x 2 with guidance, x best-of).
    pub nfe: usize,
    /// Best-of-N: the candidates, the verifier, the kept candidate and every candidate's score.
    pub best_of: usize,
    pub verifier: Option<String>,
    pub candidate: usize,
    pub scores: Vec<f64>,
    /// LoRAs merged into the UNet.
    pub loras: Vec<LoraRecord>,
    pub tool: String,
}

/// A merged LoRA file and its strength.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoraRecord {
    pub file: String,
    pub scale: f64,
}

impl ImageRecord {
    /// The A1111 / ComfyUI-readable `parameters` text.
    pub fn parameters(&self) -> String {
        let mut s = self.prompt.clone();
        if let Some(neg) = &self.negative_prompt {
            s.push_str(&format!("\nNegative prompt: {neg}"));
        }
        s.push_str(&format!(
            "\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}, Version: {}",
            self.steps,
            self.sampler,
            self.guidance_scale,
            self.seed.map_or("latents file".to_string(), |s| s.to_string()),
            self.width,
            self.height,
            self.model,
            self.tool
        ));
        for lora in &self.loras {
            s.push_str(&format!(", Lora: {} ({})", lora.file, lora.scale));
        }
        s
    }
}

/// `out.png` for one image; `out-0.png`, `out-1.png`, ... for several.
pub fn image_path(output: &Path, index: usize, count: usize) -> PathBuf {
    if count == 1 {
        return output.to_path_buf();
    }
    let stem = output
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image");
    output.with_file_name(format!("{stem}-{index}.png"))
}

fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("out")
    ));
    write(&tmp)?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Writes an RGB8 PNG (`rgb`: height x width x 3 bytes) with the parameters chunk, and
/// `<image>.json` beside it.
pub fn save_png(
    path: &Path,
    rgb: &[u8],
    width: usize,
    height: usize,
    record: &ImageRecord,
) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    write_atomic(path, |tmp| {
        let file =
            std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .add_text_chunk("parameters".to_string(), record.parameters())
            .context("PNG text chunk")?;
        let mut writer = encoder
            .write_header()
            .with_context(|| format!("writing {}", tmp.display()))?;
        writer
            .write_image_data(rgb)
            .with_context(|| format!("writing {}", tmp.display()))?;
        writer
            .finish()
            .with_context(|| format!("writing {}", tmp.display()))?;
        Ok(())
    })?;
    let sidecar = path.with_extension("json");
    write_atomic(&sidecar, |tmp| {
        std::fs::write(tmp, serde_json::to_string_pretty(record)?)
            .with_context(|| format!("writing {}", tmp.display()))
    })
}
