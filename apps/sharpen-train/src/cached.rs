//! The run's inputs that frozen models compute: VAE latents of the training images and text
//! embeddings of the prompts, read from the `[cache]` folder when present and written to it when
//! not. Without a cache, the same values are computed every step.

use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use sdxl_text::{SdxlTextEncoders, SdxlTokenizers};
use sdxl_unet::AddedCond;
use sdxl_vae::AutoencoderKL;
use sharpen_data::cache::{content_key, folder_fingerprint, CachedTensor, TensorCache};
use sharpen_trainer::TextCond;

use crate::config::CacheSection;
use crate::data::image_tensor;
use crate::setup::{encode, time_ids};

/// A cache and the fingerprint of the model that fills it.
struct Store {
    cache: TensorCache,
    model: String,
}

pub struct Caches {
    latents: Option<Store>,
    text: Option<Store>,
}

fn tensor<B: Backend, const D: usize>(t: &CachedTensor, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.values.clone(), t.shape.clone()), device)
}

fn cached<B: Backend, const D: usize>(t: Tensor<B, D>) -> CachedTensor {
    CachedTensor {
        shape: t.dims().to_vec(),
        values: t.into_data().convert::<f32>().to_vec().expect("f32 values"),
    }
}

fn fingerprint(model: &Path, parts: &[&str]) -> anyhow::Result<String> {
    let prints = parts
        .iter()
        .map(|p| {
            let dir = model.join(p);
            folder_fingerprint(&dir).with_context(|| format!("fingerprinting {}", dir.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(content_key(
        &prints.iter().map(|p| p.as_bytes()).collect::<Vec<_>>(),
    ))
}

impl Caches {
    /// Opens the caches `config` turns on for the pipeline folder `model` (fingerprinting its VAE
    /// and text encoders: they are read once).
    pub fn open(config: &CacheSection, model: &Path) -> anyhow::Result<Self> {
        let store = |on: bool, kind: &str, parts: &[&str]| -> anyhow::Result<Option<Store>> {
            if !on {
                return Ok(None);
            }
            Ok(Some(Store {
                cache: TensorCache::new(&config.dir, kind),
                model: fingerprint(model, parts)?,
            }))
        };
        Ok(Self {
            latents: store(config.latents, "latents", &["vae"])?,
            text: store(
                config.text,
                "text",
                &["text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"],
            )?,
        })
    }

    /// Scaled latents (posterior means) of prepared RGB8 images ([batch, c, h, w]); misses are
    /// encoded together and stored.
    pub fn latents<B: Backend>(
        &mut self,
        vae: &AutoencoderKL<B>,
        images: &[&[u8]],
        resolution: usize,
        device: &B::Device,
    ) -> anyhow::Result<Tensor<B, 4>> {
        let encode = |images: &[&[u8]]| {
            vae.scale_latents(
                vae.encode(image_tensor::<B>(images, resolution, device))
                    .mean,
            )
        };
        let Some(store) = &mut self.latents else {
            return Ok(encode(images));
        };
        let size = (resolution as u64).to_le_bytes();
        let keys: Vec<String> = images
            .iter()
            .map(|rgb| content_key(&[rgb, &size, store.model.as_bytes()]))
            .collect();
        let mut rows: Vec<Option<Tensor<B, 3>>> = keys
            .iter()
            .map(|k| store.cache.get(k).map(|t| tensor(&t["latents"], device)))
            .collect();
        let missing: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].is_none()).collect();
        if !missing.is_empty() {
            let batch: Vec<&[u8]> = missing.iter().map(|&i| images[i]).collect();
            let z = encode(&batch);
            for (j, &i) in missing.iter().enumerate() {
                let row = z.clone().slice(j..j + 1).squeeze::<3>();
                store
                    .cache
                    .put(&keys[i], &[("latents", &cached(row.clone()))])?;
                rows[i] = Some(row);
            }
        }
        Ok(Tensor::stack(
            rows.into_iter().map(Option::unwrap).collect(),
            0,
        ))
    }

    /// The prompts' conditioning (frozen text encoders); misses are encoded together and stored.
    pub fn text<B: Backend>(
        &mut self,
        encoders: &SdxlTextEncoders<B>,
        tokenizers: &SdxlTokenizers,
        prompts: &[&str],
        resolution: usize,
        device: &B::Device,
    ) -> anyhow::Result<TextCond<B>> {
        let Some(store) = &mut self.text else {
            return encode(encoders, tokenizers, prompts, resolution);
        };
        let keys: Vec<String> = prompts
            .iter()
            .map(|p| content_key(&[p.as_bytes(), store.model.as_bytes()]))
            .collect();
        let mut rows: Vec<Option<(Tensor<B, 2>, Tensor<B, 1>)>> = keys
            .iter()
            .map(|k| {
                store.cache.get(k).map(|t| {
                    (
                        tensor(&t["prompt_embeds"], device),
                        tensor(&t["pooled"], device),
                    )
                })
            })
            .collect();
        let missing: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].is_none()).collect();
        if !missing.is_empty() {
            let batch: Vec<&str> = missing.iter().map(|&i| prompts[i]).collect();
            let cond = encode(encoders, tokenizers, &batch, resolution)?;
            let pooled = cond.added.expect("SDXL conditioning").text_embeds;
            for (j, &i) in missing.iter().enumerate() {
                let context = cond.context.clone().slice(j..j + 1).squeeze::<2>();
                let pooled = pooled.clone().slice(j..j + 1).squeeze::<1>();
                store.cache.put(
                    &keys[i],
                    &[
                        ("prompt_embeds", &cached(context.clone())),
                        ("pooled", &cached(pooled.clone())),
                    ],
                )?;
                rows[i] = Some((context, pooled));
            }
        }
        let (context, pooled): (Vec<_>, Vec<_>) = rows.into_iter().map(Option::unwrap).unzip();
        Ok(TextCond {
            context: Tensor::stack(context, 0),
            added: Some(AddedCond {
                text_embeds: Tensor::stack(pooled, 0),
                time_ids: time_ids(prompts.len(), resolution, device),
            }),
        })
    }

    /// "cache: latents 12 reused, 4 computed; ..." (None without caches).
    pub fn report(&self) -> Option<String> {
        let parts: Vec<String> = [("latents", &self.latents), ("text", &self.text)]
            .into_iter()
            .filter_map(|(name, s)| {
                s.as_ref().map(|s| {
                    format!(
                        "{name} {} reused, {} computed",
                        s.cache.hits, s.cache.misses
                    )
                })
            })
            .collect();
        (!parts.is_empty()).then(|| format!("cache: {}", parts.join("; ")))
    }
}
