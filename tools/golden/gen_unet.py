"""UNet fixtures: a tiny SDXL-architecture UNet2DConditionModel with re-randomised weights, its
outputs on non-square and odd-sized inputs, and the full-size SDXL key list (no weights).

Writes tests/fixtures/unet/:
  tiny/config.json + tiny/diffusion_pytorch_model.safetensors
  outputs.safetensors   inputs and outputs of several cases (see CASES)
  keys_sdxl_base_1_0.json   parameter names and shapes of SDXL base 1.0's UNet
"""

import torch
from common import FIXTURES, key_shapes, rerandomise, save_tensors, write_json
from diffusers import UNet2DConditionModel

OUT = FIXTURES / "unet"

SDXL = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    block_out_channels=[320, 640, 1280],
    layers_per_block=2,
    transformer_layers_per_block=[1, 2, 10],
    attention_head_dim=[5, 10, 20],
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
    upcast_attention=None,
    resnet_time_scale_shift="default",
)

TINY = dict(
    SDXL,
    sample_size=None,
    block_out_channels=[8, 16, 32],
    transformer_layers_per_block=[1, 1, 2],
    attention_head_dim=[1, 2, 4],
    cross_attention_dim=32,
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=64,
    norm_num_groups=4,
)

# A second tiny config with other block orders and options: four levels, cross-attention first
# (SD 2.x order), one resnet per level, 8-channel groups, no added conditioning, sin-first
# timestep embedding with freq_shift 1.
TINY_B = dict(
    TINY,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[16, 24, 32, 40],
    layers_per_block=1,
    transformer_layers_per_block=[1, 2, 1, 1],
    attention_head_dim=[2, 3, 4, 5],
    cross_attention_dim=20,
    norm_num_groups=8,
    addition_embed_type=None,
    addition_time_embed_dim=None,
    projection_class_embeddings_input_dim=None,
    flip_sin_to_cos=False,
    freq_shift=1,
)

# name: (batch, height, width, tokens, timesteps)
CASES = {
    "nonsquare": (2, 8, 12, 9, [999.0, 37.0]),
    "odd": (1, 10, 14, 5, [500.0]),
}


@torch.no_grad()
def main():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY).eval()
    rerandomise(unet, 3)
    d = OUT / "tiny"
    unet.save_pretrained(d, safe_serialization=True)

    gen = torch.Generator().manual_seed(4)
    out = {}
    for name, (b, h, w, tokens, ts) in CASES.items():
        sample = torch.randn(b, 4, h, w, generator=gen)
        context = torch.randn(b, tokens, 32, generator=gen)
        text_embeds = torch.randn(b, 16, generator=gen)
        time_ids = torch.tensor([[h * 8, w * 8, 0, 0, h * 8, w * 8], [1024, 768, 16, 8, 896, 640]][:b], dtype=torch.float32)
        t = torch.tensor(ts)
        pred = unet(sample, t, context, added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
        # Intermediate embeddings: the time embedding and the added-condition embedding.
        emb = unet.time_embedding(unet.time_proj(t))
        time_embeds = unet.add_time_proj(time_ids.flatten()).reshape(b, -1)
        aug = unet.add_embedding(torch.cat([text_embeds, time_embeds], dim=-1))
        out[f"{name}.time_emb"] = emb
        out[f"{name}.aug_emb"] = aug
        out.update({
            f"{name}.sample": sample,
            f"{name}.timestep": t,
            f"{name}.encoder_hidden_states": context,
            f"{name}.text_embeds": text_embeds,
            f"{name}.time_ids": time_ids,
            f"{name}.out": pred,
        })
    save_tensors(OUT / "outputs.safetensors", out)

    torch.manual_seed(1)
    unet_b = UNet2DConditionModel(**TINY_B).eval()
    rerandomise(unet_b, 7)
    unet_b.save_pretrained(OUT / "tiny_b", safe_serialization=True)
    sample = torch.randn(2, 4, 8, 12, generator=gen)
    context = torch.randn(2, 6, 20, generator=gen)
    t = torch.tensor([981.0, 1.0])
    save_tensors(OUT / "outputs_b.safetensors", {
        "sample": sample, "timestep": t, "encoder_hidden_states": context,
        "time_emb": unet_b.time_embedding(unet_b.time_proj(t)),
        "out": unet_b(sample, t, context).sample,
    })

    with torch.device("meta"):
        full = UNet2DConditionModel(**SDXL)
    write_json(OUT / "keys_sdxl_base_1_0.json", {"class": "UNet2DConditionModel", "diffusers": "0.42.1", "keys": key_shapes(full)})
    print("unet fixtures written to", OUT)


if __name__ == "__main__":
    main()
