//! Decoding and preparing images: RGB8, resized to cover a square, centre-cropped, flipped.

use std::path::Path;

use crate::DataError;

/// RGB8 pixels, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

fn invalid(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Decodes a PNG or JPEG file (by its first bytes) to RGB8. Grey, palette and alpha PNGs are
/// converted (alpha dropped).
pub fn decode_rgb(path: &Path) -> Result<RgbImage, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_rgb_bytes(path, &bytes)
}

/// [`decode_rgb`] of bytes already read; `path` names them in errors.
pub fn decode_rgb_bytes(path: &Path, bytes: &[u8]) -> Result<RgbImage, DataError> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        decode_png(path, bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(path, bytes)
    } else {
        Err(invalid(path, "neither a PNG nor a JPEG file"))
    }
}

fn decode_png(path: &Path, bytes: &[u8]) -> Result<RgbImage, DataError> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| invalid(path, format!("corrupt PNG: {e}")))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| invalid(path, "PNG too large"))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| invalid(path, format!("corrupt PNG: {e}")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let data = &buf[..info.buffer_size()];
    let rgb = match info.color_type {
        png::ColorType::Rgb => data.to_vec(),
        png::ColorType::Rgba => data.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Grayscale => data.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => data.chunks(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        png::ColorType::Indexed => return Err(invalid(path, "palette PNG was not expanded")),
    };
    Ok(RgbImage {
        width: w,
        height: h,
        rgb,
    })
}

fn decode_jpeg(path: &Path, bytes: &[u8]) -> Result<RgbImage, DataError> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder =
        zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(bytes), options);
    let rgb = decoder
        .decode()
        .map_err(|e| invalid(path, format!("corrupt JPEG: {e:?}")))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| invalid(path, "JPEG without dimensions"))?;
    if rgb.len() != w * h * 3 {
        return Err(invalid(path, "JPEG did not decode to RGB"));
    }
    Ok(RgbImage {
        width: w,
        height: h,
        rgb,
    })
}

/// Resizes `image` (bilinear, half-pixel centres) so that it covers `size` x `size`, takes the
/// centre square, and mirrors it left-right when `flip`: RGB8, `size` x `size`.
pub fn prepare(image: &RgbImage, size: usize, flip: bool) -> Vec<u8> {
    let scale = (size as f64 / image.width as f64).max(size as f64 / image.height as f64);
    let (sw, sh) = (image.width as f64 * scale, image.height as f64 * scale);
    let (ox, oy) = ((sw - size as f64) / 2.0, (sh - size as f64) / 2.0);
    let px = |x: usize, y: usize, c: usize| image.rgb[(y * image.width + x) * 3 + c] as f64;
    let mut out = vec![0u8; size * size * 3];
    for y in 0..size {
        let fy = ((y as f64 + 0.5 + oy) / scale - 0.5).clamp(0.0, (image.height - 1) as f64);
        let (y0, ty) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(image.height - 1);
        for x in 0..size {
            let sx = if flip { size - 1 - x } else { x };
            let fx = ((sx as f64 + 0.5 + ox) / scale - 0.5).clamp(0.0, (image.width - 1) as f64);
            let (x0, tx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(image.width - 1);
            for c in 0..3 {
                let top = px(x0, y0, c) * (1.0 - tx) + px(x1, y0, c) * tx;
                let bottom = px(x0, y1, c) * (1.0 - tx) + px(x1, y1, c) * tx;
                out[(y * size + x) * 3 + c] = (top * (1.0 - ty) + bottom * ty).round() as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_covers_crops_and_flips() {
        // 4x2: left half red, right half blue.
        let rgb: Vec<u8> = (0..8)
            .flat_map(|i| if i % 4 < 2 { [255, 0, 0] } else { [0, 0, 255] })
            .collect();
        let img = RgbImage {
            width: 4,
            height: 2,
            rgb,
        };
        // Cover 2x2: scale 1, centre crop takes columns 1..3: red then blue.
        let out = prepare(&img, 2, false);
        assert_eq!(&out[..6], &[255, 0, 0, 0, 0, 255]);
        let flipped = prepare(&img, 2, true);
        assert_eq!(&flipped[..6], &[0, 0, 255, 255, 0, 0]);
        // Identity size: unchanged.
        assert_eq!(prepare(&img, 2, false).len(), 12);
        let same = RgbImage {
            width: 3,
            height: 3,
            rgb: (0..27).map(|v| v as u8).collect(),
        };
        assert_eq!(prepare(&same, 3, false), same.rgb);
    }
}
