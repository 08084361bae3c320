"""Checks that sharpen-train's LoRA exports load in diffusers and act as sharpen merges them.

For a finished LoRA run (`RUN/lora/` and `RUN/pipeline/`, export_pipeline = true): loads the base
pipeline in diffusers, applies each exported file with `load_lora_weights` (diffusers/PEFT layout
and kohya layout), and compares the UNet's output on random inputs with the output of the merged
UNet that sharpen exported (`RUN/pipeline/unet`). Prints the adapter config diffusers read, the
number of adapted modules and the max abs differences. Needs torch, diffusers and peft (the pinned
versions in tools/golden/requirements.txt):

    tools/golden/.venv/bin/python tools/lora/check_diffusers.py --run runs/x --base tests/fixtures/pipeline/tiny-sdxl
"""

import argparse
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel


def inputs(unet, gen):
    c = unet.config
    b, h, w = 2, 8, 12
    tokens = 7
    text = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
    return dict(
        sample=torch.randn(b, c.in_channels, h, w, generator=gen),
        timestep=torch.tensor([999.0, 250.0]),
        encoder_hidden_states=torch.randn(b, tokens, c.cross_attention_dim, generator=gen),
        added_cond_kwargs={
            "text_embeds": torch.randn(b, text, generator=gen),
            "time_ids": torch.tensor([[64.0, 96, 0, 0, 64, 96], [1024, 768, 16, 8, 896, 640]]),
        },
    )


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--base", type=Path, required=True)
    args = ap.parse_args()

    merged = UNet2DConditionModel.from_pretrained(args.run / "pipeline" / "unet").eval()
    x = inputs(merged, torch.Generator().manual_seed(0))
    want = merged(**x).sample
    print(f"merged UNet from sharpen: output max |x| {want.abs().max():.4f}")
    for name in ["pytorch_lora_weights.safetensors", "lora_kohya.safetensors"]:
        pipe = StableDiffusionXLPipeline.from_pretrained(args.base)
        unet = pipe.unet.eval()
        plain = unet(**x).sample
        pipe.load_lora_weights(args.run / "lora", weight_name=name)
        config = unet.peft_config
        adapter = next(iter(config))
        modules = sum(1 for n, _ in unet.named_modules() if n.endswith("lora_A") or n.endswith("lora_down"))
        got = unet(**x).sample
        print(
            f"{name}: diffusers read r={config[adapter].r} lora_alpha={config[adapter].lora_alpha}"
            f" alpha_pattern={len(config[adapter].alpha_pattern)} entries; {modules} adapted modules;"
            f" max |diffusers - sharpen merged| = {(got - want).abs().max():.3e}"
            f" (base without the LoRA differs by {(plain - want).abs().max():.3e})"
        )


if __name__ == "__main__":
    main()
