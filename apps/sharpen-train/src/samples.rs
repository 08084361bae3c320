//! Validation samples: the same prompts and seeds at the start and at every checkpoint, as one
//! PNG grid per step (`DIR/samples/step-NNNNNN.png`, with a JSON sidecar of prompts and seeds).
//! Their noise comes from the seeds, not from the run's random stream, so they never change what
//! training draws.

use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use sdxl_vae::AutoencoderKL;
use sharpen_app::par::par_map;
use sharpen_pipeline::{image_seed, GenerateOptions, SdxlPipeline};
use sharpen_rewards::Reward;
use sharpen_schedulers::SamplerKind;
use sharpen_trainer::train::run_dir::write_atomic;

use crate::config::ValidationSection;
use crate::data::{image_tensor, Source};

/// Generates the validation grid of `pipe` (the model as trained so far) at `step` into
/// `dir/samples/`: `config.seeds` rows of one image per prompt, in chunks of
/// `config.batch_size` images (on a CPU a thread per core: the other peers wait for the
/// samples). With a reward, scores every image (through 8-bit RGB, as saved) and returns the
/// scores, prompt-major within each row.
pub fn write_samples<B: Backend>(
    dir: &Path,
    pipe: &SdxlPipeline<B>,
    config: &ValidationSection,
    prompts: &[String],
    reward: Option<&dyn Reward<B>>,
    resolution: usize,
    step: usize,
) -> anyhow::Result<Option<Vec<f64>>> {
    let sampler = SamplerKind::parse(&config.sampler)
        .with_context(|| format!("validation.sampler `{}`", config.sampler))?;
    let mut options = GenerateOptions::new(resolution, resolution);
    options.sampler = sampler;
    options.steps = config.steps;
    options.guidance_scale = config.guidance;
    let refs: Vec<&str> = (0..config.seeds)
        .flat_map(|_| prompts.iter().map(String::as_str))
        .collect();
    let device = pipe.unet.conv_in.weight.val().device();
    let threads = sharpen_app::par::sampling_threads::<B>();
    let images = generate_chunked(pipe, &refs, config, &options, threads)
        .context("generating validation samples")?;
    let n = images.len();
    let scores = reward
        .map(|r| score_rgb8(r, &images, &refs, resolution, &device))
        .transpose()?;
    let rows: Vec<Vec<Vec<u8>>> = images.chunks(prompts.len()).map(<[_]>::to_vec).collect();
    let png = write_grid(dir, &rows, resolution, step)?;
    let sidecar = serde_json::json!({
        "step": step,
        "prompts": refs,
        "seeds": (0..n).map(|i| image_seed(config.seed, i)).collect::<Vec<_>>(),
        "sampler": config.sampler, "steps": config.steps, "guidance": config.guidance,
        "scores": scores,
    });
    write_atomic(
        &png.with_extension("json"),
        serde_json::to_string_pretty(&sidecar)?.as_bytes(),
    )?;
    Ok(scores)
}

/// RGB8 images of `refs` (image `i` from seed `image_seed(config.seed, i)`), generated in
/// chunks of `config.batch_size`; worker `w` of `threads` takes chunks `w`, `w + threads`, ...
/// The chunks are fixed by the config, so the images do not depend on the thread count.
fn generate_chunked<B: Backend>(
    pipe: &SdxlPipeline<B>,
    refs: &[&str],
    config: &ValidationSection,
    options: &GenerateOptions,
    threads: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let size = config.batch_size.max(1);
    let chunks: Vec<(usize, &[&str])> = refs
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| (i * size, chunk))
        .collect();
    let images = par_map(&chunks, threads, |(first, chunk)| {
        let generated = pipe.generate_seeded(chunk, config.seed, *first, options)?;
        Ok(sharpen_rewards::to_rgb8(generated.images))
    })?;
    Ok(images.into_iter().flatten().collect())
}

/// Scores RGB8 images (`side` x `side`) with `reward`.
fn score_rgb8<B: Backend>(
    reward: &dyn Reward<B>,
    images: &[Vec<u8>],
    prompts: &[&str],
    side: usize,
    device: &B::Device,
) -> anyhow::Result<Vec<f64>> {
    let values: Vec<f32> = images.iter().flatten().map(|&v| v as f32 / 255.0).collect();
    let batch = Tensor::<B, 4>::from_data(
        TensorData::new(values, [images.len(), side, side, 3]),
        device,
    )
    .permute([0, 3, 1, 2]);
    let scores = reward
        .score(batch, prompts)
        .context("scoring the validation samples")?;
    Ok(scores
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("float scores"))
}

/// Rows of equally sized RGB8 images as one PNG: `dir/samples/step-NNNNNN.png`.
fn write_grid(
    dir: &Path,
    rows: &[Vec<Vec<u8>>],
    side: usize,
    step: usize,
) -> anyhow::Result<std::path::PathBuf> {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = n * side;
    let mut grid = vec![0u8; rows.len() * side * width * 3];
    for (r, images) in rows.iter().enumerate() {
        for (i, img) in images.iter().enumerate() {
            for y in 0..side {
                let row = &img[y * side * 3..(y + 1) * side * 3];
                let at = ((r * side + y) * width + i * side) * 3;
                grid[at..at + side * 3].copy_from_slice(row);
            }
        }
    }
    let out = dir.join("samples");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let png = out.join(format!("step-{step:06}.png"));
    sharpen_app::plot::write_png(&png, &grid, width, rows.len() * side)?;
    Ok(png)
}

/// The autoencoder's validation grid: the first `count` training images (top row) and their
/// reconstructions from the posterior mean (bottom row).
pub fn write_reconstructions<B: Backend>(
    dir: &Path,
    vae: &AutoencoderKL<B>,
    source: &Source,
    count: usize,
    resolution: usize,
    step: usize,
) -> anyhow::Result<()> {
    let originals: Vec<Vec<u8>> = (0..count as u64)
        .map(|i| {
            source
                .get(i)
                .image
                .context("the autoencoder trains on images")
        })
        .collect::<anyhow::Result<_>>()?;
    let refs: Vec<&[u8]> = originals.iter().map(Vec::as_slice).collect();
    let device = vae.encoder.conv_in.weight.val().device();
    let pixels = image_tensor::<B>(&refs, resolution, &device);
    let recon = vae.decode(vae.encode(pixels).mean);
    let recon = sharpen_rewards::to_rgb8((recon + 1.0).div_scalar(2.0).clamp(0.0, 1.0));
    write_grid(dir, &[originals, recon], resolution, step)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sharpen_weights::LoadOptions;

    type B = sharpen_app::CpuBackend;

    #[test]
    fn chunks_and_threads_give_the_images_of_one_call() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/shapes-model");
        let pipe =
            SdxlPipeline::<B>::load(&model, &LoadOptions::default(), &Default::default()).unwrap();
        let refs = ["a red circle", "a blue square", "a green triangle"].repeat(2);
        let mut config = ValidationSection {
            steps: 4,
            guidance: 2.0,
            ..Default::default()
        };
        let mut options = GenerateOptions::new(32, 32);
        options.steps = config.steps;
        options.guidance_scale = config.guidance;
        let whole = pipe
            .generate_seeded(&refs, config.seed, 0, &options)
            .unwrap();
        let whole = sharpen_rewards::to_rgb8(whole.images);
        for (batch_size, threads) in [(6, 1), (4, 2), (1, 4), (2, 8)] {
            config.batch_size = batch_size;
            let images = generate_chunked(&pipe, &refs, &config, &options, threads).unwrap();
            assert_eq!(images, whole, "chunks of {batch_size} on {threads} threads");
        }
        // A stochastic sampler draws its step noise per chunk: the chunk size decides the
        // images, the thread count never does.
        options.sampler = SamplerKind::parse("euler-a").unwrap();
        config.batch_size = 2;
        let one = generate_chunked(&pipe, &refs, &config, &options, 1).unwrap();
        assert_eq!(one.len(), 6);
        assert_eq!(
            generate_chunked(&pipe, &refs, &config, &options, 3).unwrap(),
            one
        );
        assert_ne!(one[0], one[3], "each image its own seed");
    }
}
