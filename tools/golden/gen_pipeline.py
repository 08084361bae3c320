"""A tiny SDXL pipeline folder in diffusers layout and diffusers' StableDiffusionXLPipeline outputs on it.

tests/fixtures/pipeline/tiny-sdxl/ holds model_index.json, scheduler/, unet/ (a tiny UNet whose
cross-attention and pooled sizes fit the tiny text encoders), and links to the tiny text encoders
(tests/fixtures/text), VAE (tests/fixtures/vae/tiny) and the real CLIP tokenizer files
(assets/clip-tokenizer), so nothing is stored twice. Outputs: final latents and images for Euler
and DDIM, 5 steps, CFG 5, with and without a negative prompt, from given initial latents.
"""

import json
import os
import shutil

import torch
from common import ASSETS, FIXTURES, rerandomise, save_tensors, write_json
from diffusers import AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from gen_schedulers import SDXL as SCHEDULER
from gen_unet import TINY as UNET_TINY
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

OUT = FIXTURES / "pipeline"
ROOT = OUT / "tiny-sdxl"
PROMPTS = ["a red circle above a blue square", "a photo of a cat!"]
NEGATIVE = ["blurry, low quality", ""]


def link(target, name):
    path = ROOT / name
    if path.is_symlink() or path.exists():
        path.unlink() if path.is_symlink() or path.is_file() else shutil.rmtree(path)
    os.symlink(os.path.relpath(target, path.parent), path)


@torch.no_grad()
def main():
    if ROOT.exists():
        shutil.rmtree(ROOT)
    ROOT.mkdir(parents=True)
    # Components shared with the other fixtures.
    text = FIXTURES / "text"
    enc1 = CLIPTextModel.from_pretrained(text / "text_encoder", dtype=torch.float32).eval()
    enc2 = CLIPTextModelWithProjection.from_pretrained(text / "text_encoder_2", variant="fp16", dtype=torch.float32).eval()
    vae = AutoencoderKL.from_pretrained(FIXTURES / "vae" / "tiny").eval()
    tok1 = CLIPTokenizer.from_pretrained(ASSETS / "clip-tokenizer" / "tokenizer")
    tok2 = CLIPTokenizer.from_pretrained(ASSETS / "clip-tokenizer" / "tokenizer_2")
    for name, target in [("text_encoder", text / "text_encoder"), ("vae", FIXTURES / "vae" / "tiny"),
                         ("tokenizer", ASSETS / "clip-tokenizer" / "tokenizer"),
                         ("tokenizer_2", ASSETS / "clip-tokenizer" / "tokenizer_2")]:
        link(target, name)
    # text_encoder_2: its fp16 file under the default name (the reference computes in f32 on the
    # same f16-rounded values).
    (ROOT / "text_encoder_2").mkdir()
    shutil.copy(text / "text_encoder_2" / "config.json", ROOT / "text_encoder_2" / "config.json")
    link(text / "text_encoder_2" / "model.fp16.safetensors", "text_encoder_2/model.safetensors")
    # A tiny UNet that fits the tiny encoders: 32 + 40 = 72 context channels, 24 pooled.
    torch.manual_seed(3)
    unet = UNet2DConditionModel(**dict(UNET_TINY, cross_attention_dim=72, projection_class_embeddings_input_dim=24 + 6 * 8)).eval()
    rerandomise(unet, 9)
    unet.save_pretrained(ROOT / "unet", safe_serialization=True)
    scheduler = EulerDiscreteScheduler.from_config(SCHEDULER)
    scheduler.save_pretrained(ROOT / "scheduler")
    write_json(ROOT / "model_index.json", {
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.42.1", "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]})

    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=enc1, text_encoder_2=enc2, tokenizer=tok1, tokenizer_2=tok2,
                                     unet=unet, scheduler=scheduler, add_watermarker=False)
    gen = torch.Generator().manual_seed(10)
    latents = torch.randn(2, 4, 8, 12, generator=gen)
    out = {"latents": latents}
    cases = {}
    for sampler, cls in [("euler", EulerDiscreteScheduler), ("ddim", DDIMScheduler)]:
        pipe.scheduler = cls.from_config(SCHEDULER)
        for neg in (True, False):
            name = f"{sampler}_{'negative' if neg else 'no_negative'}"
            final = pipe(prompt=PROMPTS, negative_prompt=NEGATIVE if neg else None, height=64, width=96,
                         num_inference_steps=5, guidance_scale=5.0, latents=latents.clone(), output_type="latent").images
            image = vae.decode(final / vae.config.scaling_factor).sample
            out[f"{name}.latents"] = final
            out[f"{name}.image"] = (image / 2 + 0.5).clamp(0, 1)
            cases[name] = {"sampler": sampler, "prompt": PROMPTS, "negative_prompt": NEGATIVE if neg else None,
                           "steps": 5, "guidance_scale": 5.0, "height": 64, "width": 96}
    # Guidance rescale (diffusers' rescale_noise_cfg).
    pipe.scheduler = EulerDiscreteScheduler.from_config(SCHEDULER)
    final = pipe(prompt=PROMPTS, negative_prompt=NEGATIVE, height=64, width=96, num_inference_steps=5,
                 guidance_scale=5.0, guidance_rescale=0.7, latents=latents.clone(), output_type="latent").images
    out["euler_rescale.latents"] = final
    out["euler_rescale.image"] = (vae.decode(final / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    cases["euler_rescale"] = {"sampler": "euler", "prompt": PROMPTS, "negative_prompt": NEGATIVE, "steps": 5,
                              "guidance_scale": 5.0, "guidance_rescale": 0.7, "height": 64, "width": 96}
    # What `sharpen-infer --prompt P [--negative-prompt N] --num-images 2` runs: one prompt repeated.
    for sampler, cls in [("euler", EulerDiscreteScheduler), ("ddim", DDIMScheduler)]:
        pipe.scheduler = cls.from_config(SCHEDULER)
        for neg in (True, False):
            name = f"cli_{sampler}_{'negative' if neg else 'no_negative'}"
            final = pipe(prompt=[PROMPTS[0]] * 2, negative_prompt=[NEGATIVE[0]] * 2 if neg else None, height=64, width=96,
                         num_inference_steps=5, guidance_scale=5.0, latents=latents.clone(), output_type="latent").images
            out[f"{name}.latents"] = final
            out[f"{name}.image"] = (vae.decode(final / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    save_tensors(OUT / "outputs.safetensors", out)
    write_json(OUT / "cases.json", cases)
    print("pipeline fixtures written to", OUT)


if __name__ == "__main__":
    main()
