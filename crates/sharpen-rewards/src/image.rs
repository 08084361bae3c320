//! Images as the rewards' references see them: 8-bit RGB.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// [batch, 3, h, w] in [0, 1] -> one interleaved RGB8 buffer (h x w x 3) per image, rounding
/// `x * 255` to the nearest integer (as a PNG round trip does).
pub fn to_rgb8<B: Backend>(images: Tensor<B, 4>) -> Vec<Vec<u8>> {
    let [batch, channels, h, w] = images.dims();
    assert_eq!(channels, 3, "RGB images expected, got {channels} channels");
    let values: Vec<f32> = images
        .clamp(0.0, 1.0)
        .permute([0, 2, 3, 1])
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("float image data");
    values
        .chunks(h * w * 3)
        .take(batch)
        .map(|img| img.iter().map(|&v| (v * 255.0).round() as u8).collect())
        .collect()
}
