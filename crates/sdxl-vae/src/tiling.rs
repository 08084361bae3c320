//! Tiled encode and decode, exactly as diffusers' `AutoencoderKL` with `enable_tiling()` does it:
//! tiles of `sample_size` pixels (`sample_size / 8` latents) overlapping by a quarter, each blended
//! linearly into its upper and left neighbours (already blended, as diffusers blends in place).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::vae::{AutoencoderKL, DiagonalGaussian};

const OVERLAP_FACTOR: f64 = 0.25;

/// Replaces the first `extent` rows (dim 2) or columns (dim 3) of `b` with a linear blend from the
/// last `extent` of `a`: `a[-e + y] (1 - y/e) + b[y] (y/e)`.
fn blend<B: Backend>(a: &Tensor<B, 4>, b: Tensor<B, 4>, extent: usize, dim: usize) -> Tensor<B, 4> {
    let e = extent.min(a.dims()[dim]).min(b.dims()[dim]);
    if e == 0 {
        return b;
    }
    let device = b.device();
    let w: Vec<f32> = (0..e).map(|y| y as f32 / e as f32).collect();
    let mut shape = [1, 1, 1, 1];
    shape[dim] = e;
    let w = Tensor::<B, 4>::from_data(TensorData::new(w, shape), &device);
    let a_len = a.dims()[dim];
    let b_len = b.dims()[dim];
    let a_tail = a.clone().narrow(dim, a_len - e, e);
    let b_head = b.clone().narrow(dim, 0, e);
    let blended = a_tail * (w.clone().neg().add_scalar(1.0)) + b_head * w;
    if e == b_len {
        blended
    } else {
        Tensor::cat(vec![blended, b.narrow(dim, e, b_len - e)], dim)
    }
}

/// Runs `f` on overlapping tiles of `x` and stitches the outputs, diffusers' way.
fn tiled<B: Backend>(
    x: Tensor<B, 4>,
    tile_in: usize,
    tile_out: usize,
    f: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let step = (tile_in as f64 * (1.0 - OVERLAP_FACTOR)) as usize;
    let extent = (tile_out as f64 * OVERLAP_FACTOR) as usize;
    let limit = tile_out - extent;
    let mut rows: Vec<Vec<Tensor<B, 4>>> = Vec::new();
    for i in (0..h).step_by(step) {
        let mut row = Vec::new();
        for j in (0..w).step_by(step) {
            let tile = x
                .clone()
                .narrow(2, i, tile_in.min(h - i))
                .narrow(3, j, tile_in.min(w - j));
            row.push(f(tile));
        }
        rows.push(row);
    }
    for i in 0..rows.len() {
        for j in 0..rows[i].len() {
            let mut tile = rows[i][j].clone();
            if i > 0 {
                tile = blend(&rows[i - 1][j], tile, extent, 2);
            }
            if j > 0 {
                tile = blend(&rows[i][j - 1], tile, extent, 3);
            }
            rows[i][j] = tile;
        }
    }
    let crop = |t: &Tensor<B, 4>| {
        let [_, _, th, tw] = t.dims();
        t.clone()
            .narrow(2, 0, limit.min(th))
            .narrow(3, 0, limit.min(tw))
    };
    let stitched_rows = rows
        .iter()
        .map(|row| Tensor::cat(row.iter().map(crop).collect(), 3))
        .collect();
    Tensor::cat(stitched_rows, 2)
}

impl<B: Backend> AutoencoderKL<B> {
    /// Tile sizes: `sample_size` pixels, `sample_size / 8` latents.
    fn tile_sizes(&self) -> (usize, usize) {
        let sample = self.config.sample_size;
        (sample, sample / self.config.downscale())
    }

    /// [`Self::encode`] in tiles when the image is larger than `sample_size` (bounded memory for
    /// large images; differs slightly from untiled encoding, as in diffusers).
    pub fn encode_tiled(&self, images: Tensor<B, 4>) -> DiagonalGaussian<B> {
        let [_, _, h, w] = images.dims();
        let (sample, latent) = self.tile_sizes();
        if h <= sample && w <= sample {
            return self.encode(images);
        }
        DiagonalGaussian::from_moments(tiled(images, sample, latent, |t| self.encode_moments(t)))
    }

    /// [`Self::decode`] in tiles when the latents are larger than `sample_size / 8`.
    pub fn decode_tiled(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = z.dims();
        let (sample, latent) = self.tile_sizes();
        if h <= latent && w <= latent {
            return self.decode(z);
        }
        tiled(z, latent, sample, |t| self.decode(t))
    }
}
