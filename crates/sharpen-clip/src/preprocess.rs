//! CLIP image preprocessing on tensors, equal to torchvision's on float tensors: antialiased
//! bicubic resize (`torch.nn.functional.interpolate(mode="bicubic", antialias=True)`, the PIL
//! algorithm with a = -0.5), centre crop as `torchvision.transforms.functional.center_crop`, or
//! HPSv2's resize-the-longer-side-and-pad, then `(x - mean) / std`.
//!
//! The resize is two matrix products, so gradients flow from a reward back to the image.
//! Reference processors that work on 8-bit images (PIL in transformers' slow `CLIPImageProcessor`
//! and open_clip, uint8 tensors in the fast one) round after resizing; the difference that makes
//! is measured in `tests/clip.rs`.

use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::{Tensor, TensorData};

use crate::config::{invalid, ConfigError};

/// How an image is brought to the model's square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Resize the shorter side to `size` (the longer one to `int(size * long / short)`), then
    /// crop the centre `crop` x `crop` (CLIP, PickScore, the aesthetic predictor, ImageReward).
    ShortestSideThenCenterCrop,
    /// Resize the longer side to `size` (the shorter one to `round(short * size / long)`), then pad
    /// with black, centred, to `size` x `size` (HPSv2's `ResizeMaxSize`).
    LongestSideThenPad,
}

/// A CLIP preprocessing recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPreprocess {
    pub size: usize,
    pub crop: usize,
    pub fit: Fit,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

/// OpenAI CLIP's normalisation constants (every CLIP reward here uses them).
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

impl ClipPreprocess {
    /// CLIP's standard recipe at `size`: shortest side, centre crop, OpenAI mean and std.
    pub fn clip(size: usize) -> Self {
        Self {
            size,
            crop: size,
            fit: Fit::ShortestSideThenCenterCrop,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.size == 0 || self.crop == 0 {
            return Err(invalid("size", "must be at least 1"));
        }
        if self.crop > self.size {
            return Err(invalid(
                "crop_size",
                format!("{} is larger than size {}", self.crop, self.size),
            ));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(invalid("image_std", "must be positive"));
        }
        Ok(())
    }

    /// The side of the square this recipe outputs.
    pub fn output_size(&self) -> usize {
        match self.fit {
            Fit::ShortestSideThenCenterCrop => self.crop,
            Fit::LongestSideThenPad => self.size,
        }
    }

    /// images: [batch, 3, h, w], RGB in [0, 1]. Returns normalised pixel values
    /// [batch, 3, out, out] with `out` = [`Self::output_size`].
    pub fn apply<B: Backend>(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, channels, h, w] = images.dims();
        assert_eq!(channels, 3, "CLIP preprocessing expects RGB images");
        let fitted = match self.fit {
            Fit::ShortestSideThenCenterCrop => {
                let (nh, nw) = if h <= w {
                    (self.size, self.size * w / h)
                } else {
                    (self.size * h / w, self.size)
                };
                let resized = resize_if_needed(images, nh, nw);
                center_crop(resized, self.crop)
            }
            Fit::LongestSideThenPad => {
                let scale = self.size as f64 / h.max(w) as f64;
                let (nh, nw) = (
                    round_half_even(h as f64 * scale),
                    round_half_even(w as f64 * scale),
                );
                let resized = resize_if_needed(images, nh, nw);
                let (ph, pw) = (self.size - nh, self.size - nw);
                resized.pad(
                    (pw / 2, pw - pw / 2, ph / 2, ph - ph / 2),
                    PadMode::Constant(0.0),
                )
            }
        };
        self.normalize(fitted)
    }

    /// `(x - mean) / std` per channel.
    pub fn normalize<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let device = x.device();
        let channel = |v: [f64; 3]| {
            Tensor::<B, 1>::from_data(
                TensorData::new(v.iter().map(|&x| x as f32).collect(), [3]),
                &device,
            )
            .reshape([1, 3, 1, 1])
        };
        (x - channel(self.mean)) / channel(self.std)
    }
}

fn resize_if_needed<B: Backend>(x: Tensor<B, 4>, h: usize, w: usize) -> Tensor<B, 4> {
    let [_, _, ih, iw] = x.dims();
    if (ih, iw) == (h, w) {
        x
    } else {
        resize_bicubic_aa(x, h, w)
    }
}

/// Python's `round` (half to even), as torchvision's `center_crop` and HPSv2 use it.
fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    };
    r.max(0.0) as usize
}

/// torchvision's `center_crop` to `size` x `size` (`size` <= both sides).
fn center_crop<B: Backend>(x: Tensor<B, 4>, size: usize) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    assert!(size <= h && size <= w, "crop {size} larger than {h}x{w}");
    let top = round_half_even((h - size) as f64 / 2.0);
    let left = round_half_even((w - size) as f64 / 2.0);
    x.slice([0..b, 0..c, top..top + size, left..left + size])
}

/// The cubic kernel of PIL and torch's antialiased resize (a = -0.5).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The [output, input] interpolation matrix of an antialiased bicubic resize along one axis
/// (`align_corners = False`): each row holds one output pixel's normalised weights.
pub fn resize_weights(input: usize, output: usize) -> Vec<f32> {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut out = vec![0f32; output * input];
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        // `int()` truncates toward zero, as in the reference.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let weights: Vec<f64> = (lo..hi)
            .map(|j| cubic((j as f64 - center + 0.5) * inv))
            .collect();
        let total: f64 = weights.iter().sum();
        for (j, wgt) in (lo..hi).zip(weights) {
            out[i * input + j] = if total != 0.0 {
                (wgt / total) as f32
            } else {
                0.0
            };
        }
    }
    out
}

/// Antialiased bicubic resize of [batch, channels, h, w] to [batch, channels, out_h, out_w]
/// (torch's `interpolate(mode="bicubic", antialias=True, align_corners=False)`, no clamping).
pub fn resize_bicubic_aa<B: Backend>(x: Tensor<B, 4>, out_h: usize, out_w: usize) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let matrix = |input, output| {
        Tensor::<B, 2>::from_data(
            TensorData::new(resize_weights(input, output), [output, input]),
            &device,
        )
    };
    // Width: [b*c*h, w] x [w, out_w].
    let x = x
        .reshape([b * c * h, w])
        .matmul(matrix(w, out_w).transpose())
        .reshape([b, c, h, out_w]);
    // Height: [b*c*out_w, h] x [h, out_h].
    x.swap_dims(2, 3)
        .reshape([b * c * out_w, h])
        .matmul(matrix(h, out_h).transpose())
        .reshape([b, c, out_w, out_h])
        .swap_dims(2, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_identity_size_is_identity() {
        for (i, o) in [(7, 3), (3, 7), (224, 224), (512, 224), (64, 224)] {
            let w = resize_weights(i, o);
            for row in w.chunks(i) {
                let s: f32 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{i}->{o}: row sums to {s}");
            }
        }
        let w = resize_weights(5, 5);
        for (r, row) in w.chunks(5).enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert!((v - if r == c { 1.0 } else { 0.0 }).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(2.6), 3);
        assert_eq!(round_half_even(149.33), 149);
    }
}
