//! What a training step needs from the models: a noise predictor and a latent decoder.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use sdxl_unet::{AddedCond, UNet2DConditionModel, UNetInput};
use sdxl_vae::AutoencoderKL;

/// Text conditioning of a batch of rows (one row per trajectory).
#[derive(Debug, Clone)]
pub struct TextCond<B: Backend> {
    /// [rows, tokens, dim].
    pub context: Tensor<B, 3>,
    /// SDXL's pooled text embedding and time ids, when the model uses them.
    pub added: Option<AddedCond<B>>,
}

impl<B: Backend> TextCond<B> {
    /// Each row repeated `n` times in place (row r becomes rows r*n .. r*n+n-1).
    pub fn repeat_rows(&self, n: usize) -> Self {
        Self {
            context: repeat_interleave(self.context.clone(), n),
            added: self.added.as_ref().map(|a| AddedCond {
                text_embeds: repeat_interleave(a.text_embeds.clone(), n),
                time_ids: repeat_interleave(a.time_ids.clone(), n),
            }),
        }
    }

    /// The given rows, in order.
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        Self {
            context: select(self.context.clone(), rows),
            added: self.added.as_ref().map(|a| AddedCond {
                text_embeds: select(a.text_embeds.clone(), rows),
                time_ids: select(a.time_ids.clone(), rows),
            }),
        }
    }

    pub fn rows(&self) -> usize {
        self.context.dims()[0]
    }
}

/// Row r of the result is row r / n of `x`.
pub fn repeat_interleave<B: Backend, const D: usize>(x: Tensor<B, D>, n: usize) -> Tensor<B, D> {
    let rows = x.dims()[0];
    let index: Vec<usize> = (0..rows * n).map(|r| r / n).collect();
    select(x, &index)
}

/// Rows of `x` by index.
pub fn select<B: Backend, const D: usize>(x: Tensor<B, D>, rows: &[usize]) -> Tensor<B, D> {
    let device = x.device();
    let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    x.select(0, Tensor::<B, 1, Int>::from_ints(index.as_slice(), &device))
}

/// A noise predictor eps_theta(x_t, t, c).
pub trait EpsModel<B: Backend> {
    /// x: [rows, c, h, w]; one timestep for all rows; returns [rows, c, h, w].
    fn predict(&self, x: Tensor<B, 4>, t: usize, cond: &TextCond<B>) -> Tensor<B, 4>;

    /// x: [rows, c, h, w] with each row's own timestep `t`. By default one [`Self::predict`]
    /// per distinct timestep.
    fn predict_rows(&self, x: Tensor<B, 4>, t: &[usize], cond: &TextCond<B>) -> Tensor<B, 4> {
        let groups = crate::timesteps::groups(t);
        if let [(t, _)] = groups.as_slice() {
            return self.predict(x, *t, cond);
        }
        let parts = groups
            .iter()
            .map(|(t, rows)| self.predict(select(x.clone(), rows), *t, &cond.select_rows(rows)))
            .collect();
        crate::timesteps::in_row_order(parts, &groups)
    }
}

impl<B: Backend> EpsModel<B> for UNet2DConditionModel<B> {
    fn predict(&self, x: Tensor<B, 4>, t: usize, cond: &TextCond<B>) -> Tensor<B, 4> {
        let rows = x.dims()[0];
        self.predict_rows(x, &vec![t; rows], cond)
    }

    fn predict_rows(&self, x: Tensor<B, 4>, t: &[usize], cond: &TextCond<B>) -> Tensor<B, 4> {
        let t: Vec<f32> = t.iter().map(|&t| t as f32).collect();
        let timestep = Tensor::<B, 1>::from_floats(t.as_slice(), &x.device());
        let dtype = x.dtype();
        self.forward(UNetInput {
            sample: x,
            timestep,
            encoder_hidden_states: cond.context.clone(),
            added_cond: cond.added.clone(),
        })
        .cast(dtype)
    }
}

/// Scaled latents -> RGB images in [0, 1] for a reward.
pub trait LatentDecoder<B: Backend> {
    fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4>;
}

/// The VAE decoder as rewards see it (method.md section 3): decode, map to [0, 1] (x/2 + 0.5,
/// clamped) and round through 8-bit RGB.
#[derive(Debug)]
pub struct VaeDecoder<'a, B: Backend> {
    pub vae: &'a AutoencoderKL<B>,
}

impl<B: Backend> LatentDecoder<B> for VaeDecoder<'_, B> {
    fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let images = self
            .vae
            .decode(self.vae.unscale_latents(latents))
            .div_scalar(2.0)
            .add_scalar(0.5)
            .clamp(0.0, 1.0);
        images.mul_scalar(255.0).round().div_scalar(255.0)
    }
}
