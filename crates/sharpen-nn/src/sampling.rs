//! diffusers' `Downsample2D` and `Upsample2D` with a convolution (`conv`).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;

use crate::resnet::conv;

/// 3x3 stride-2 convolution. The UNet pads 1 on every side; the VAE pads 0 and first pads the
/// input by one row and column at the bottom and right (`asymmetric_pad`).
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    pub conv: Conv2d<B>,
    pub asymmetric_pad: bool,
}

impl<B: Backend> Downsample2D<B> {
    pub fn new(channels: usize, asymmetric_pad: bool, device: &B::Device) -> Self {
        let pad = if asymmetric_pad { 0 } else { 1 };
        Self {
            conv: conv(channels, channels, 3, 2, pad, device),
            asymmetric_pad,
        }
    }

    /// x: [batch, c, h, w] -> [batch, c, ceil(h/2), ceil(w/2)] (UNet) or floor((h+1-3)/2)+1 (VAE).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = if self.asymmetric_pad {
            let [b, c, h, w] = x.dims();
            let device = x.device();
            let x = Tensor::cat(vec![x, Tensor::zeros([b, c, h, 1], &device)], 3);
            Tensor::cat(vec![x, Tensor::zeros([b, c, 1, w + 1], &device)], 2)
        } else {
            x
        };
        self.conv.forward(x)
    }
}

/// Nearest-neighbour upsampling (2x, or to an explicit size) then a 3x3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            conv: conv(channels, channels, 3, 1, 1, device),
        }
    }

    /// x: [batch, c, h, w] -> [batch, c, 2h, 2w], or `size` when given (odd skip shapes).
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let up = match size {
            Some(size) if size != [2 * h, 2 * w] => {
                interpolate(x, size, InterpolateOptions::new(InterpolateMode::Nearest))
            }
            // Exact 2x nearest: repeat every pixel into a 2x2 block.
            _ => x
                .reshape([b, c, h, 1, w, 1])
                .expand([b, c, h, 2, w, 2])
                .reshape([b, c, 2 * h, 2 * w]),
        };
        self.conv.forward(up)
    }
}
