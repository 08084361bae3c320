"""Single-file (original SGM / A1111 / ComfyUI) checkpoint layout of SDXL, checked with diffusers'
own conversion code (`diffusers.loaders.single_file_utils`).

For each component the diffusers state dict is mapped to the original layout (`to_ldm_*` below),
then diffusers' converter maps it back; the generator asserts that this gives exactly the diffusers
keys, shapes and (for the tiny models) values. Writes tests/fixtures/single_file/:
  keys_sdxl_base_1_0.json   every original-layout key of SDXL base 1.0 with its shape (the four
                            components; built on the meta device, no weights)
  pairs_tiny.json           original key -> diffusers key, for the tiny models, as the reference
                            converter assigns them (matched by tensor identity)
  tiny_sdxl.safetensors     the tiny UNet and VAE of the unet/vae fixtures and two small-vocabulary
                            CLIP text encoders, in the original layout
  text_outputs.safetensors  those text encoders' outputs on fixed ids
"""

import re

import torch
from common import FIXTURES, rerandomise, save_tensors, write_json
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from gen_unet import SDXL as UNET_SDXL
from gen_vae import SDXL as VAE_SDXL
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

OUT = FIXTURES / "single_file"
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
CLIP_G_PREFIX = "conditioner.embedders.1.model."

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
          ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def to_ldm_unet(sd, config):
    layers = config["layers_per_block"]
    fixed = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    cross_up = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    out = {}
    for key, value in sd.items():
        module, leaf = key.rsplit(".", 1)
        if module in fixed:
            new = f"{fixed[module]}.{leaf}"
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            b, kind, l, rest = int(m[1]), m[2], int(m[3]), m[4]
            i = 1 + b * (layers + 1) + l
            if kind == "resnets":
                for d, o in RESNET:
                    rest = re.sub(rf"^{d}\.", f"{o}.", rest)
                new = f"input_blocks.{i}.0.{rest}"
            else:
                new = f"input_blocks.{i}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{1 + int(m[1]) * (layers + 1) + layers}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            rest = m[2]
            for d, o in RESNET:
                rest = re.sub(rf"^{d}\.", f"{o}.", rest)
            new = f"middle_block.{2 * int(m[1])}.{rest}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            b, kind, l, rest = int(m[1]), m[2], int(m[3]), m[4]
            i = b * (layers + 1) + l
            if kind == "resnets":
                for d, o in RESNET:
                    rest = re.sub(rf"^{d}\.", f"{o}.", rest)
                new = f"output_blocks.{i}.0.{rest}"
            else:
                new = f"output_blocks.{i}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            b = int(m[1])
            new = f"output_blocks.{b * (layers + 1) + layers}.{2 if cross_up[b] else 1}.conv.{m[2]}"
        else:
            raise KeyError(key)
        out[UNET_PREFIX + new] = value
    return out


def to_ldm_vae(sd, config):
    n = len(config["block_out_channels"])
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in sd.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{n - 1 - int(m[1])}.block.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{n - 1 - int(m[1])}.upsample.", new)
        new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", new)
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
            new = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
            if m[3] == "weight" and m[2] != "group_norm":
                value = value[:, :, None, None]  # 1x1 convolutions in the original layout
        out[VAE_PREFIX + new] = value
    return out


def to_ldm_clip_l(sd):
    return {CLIP_L_PREFIX + (k if k.startswith("text_model.") else f"text_model.{k}"): v for k, v in sd.items()}


def to_ldm_clip_g(sd):
    out = {}
    qkv = {}
    for key, value in sd.items():
        if key == "text_projection.weight":
            out["text_projection"] = value.T
            continue
        k = key.removeprefix("text_model.")
        if k == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
            continue
        if k == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
            continue
        if k.startswith("final_layer_norm."):
            out["ln_final." + k.split(".")[-1]] = value
            continue
        m = re.match(r"encoder\.layers\.(\d+)\.(.*)", k)
        i, rest = m[1], m[2]
        if mm := re.match(r"self_attn\.(q|k|v)_proj\.(weight|bias)", rest):
            qkv.setdefault((i, mm[2]), {})[mm[1]] = value
            continue
        rest = rest.replace("self_attn.out_proj", "attn.out_proj").replace("layer_norm1", "ln_1")
        rest = rest.replace("layer_norm2", "ln_2").replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj")
        out[f"transformer.resblocks.{i}.{rest}"] = value
    for (i, kind), parts in qkv.items():
        out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return {CLIP_G_PREFIX + k: v for k, v in out.items()}


def convert_back(ldm, unet_config, vae_config, clip_g_model):
    unet = sfu.convert_ldm_unet_checkpoint(ldm, unet_config)
    vae = sfu.convert_ldm_vae_checkpoint(ldm, vae_config)
    clip_l = sfu.convert_ldm_clip_checkpoint(ldm)
    clip_g = sfu.convert_open_clip_checkpoint(clip_g_model, ldm, prefix=CLIP_G_PREFIX)
    return {"unet": unet, "vae": vae, "text_encoder": clip_l, "text_encoder_2": clip_g}


def text_l_state(model):
    # transformers 5 saves CLIPTextModel without the prefix; SDXL's files carry it.
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in model.state_dict().items()}


def check_round_trip(components, ldm, back, exact):
    for name, sd in components.items():
        got = back[name]
        assert set(got) == set(sd), f"{name}: {sorted(set(sd) ^ set(got))[:10]}"
        for k, v in sd.items():
            assert got[k].shape == v.shape, f"{name} {k}: {got[k].shape} vs {v.shape}"
            if exact:
                assert torch.equal(got[k], v), f"{name} {k}: values differ"


def pairs(components, ldm):
    """original key -> (component, diffusers key), by tensor identity through the converter."""
    by_id = {}
    for name, sd in components.items():
        for k, v in sd.items():
            by_id[(name, k)] = v
    result = {}
    for lk, lv in ldm.items():
        # The converter squeezes 1x1 convolutions and transposes text_projection.
        candidates = [lv.flatten()] + ([lv.T.flatten()] if lv.dim() == 2 else [])
        matches = [f"{n}/{k}" for (n, k), v in by_id.items()
                   if v.numel() == lv.numel() and any(torch.equal(v.flatten(), c) for c in candidates)]
        if not matches:  # fused qkv: the three parts, in row order
            matches = [f"{n}/{k}" for part in lv.chunk(3) for (n, k), v in by_id.items()
                       if v.numel() == part.numel() and torch.equal(v.flatten(), part.flatten())]
        assert matches, lk
        result[lk] = matches
    return result


@torch.no_grad()
def main():
    from gen_unet import TINY as UNET_TINY
    from gen_vae import TINY as VAE_TINY

    # Full size, on the meta device: names and shapes only.
    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNET_SDXL)
        vae = AutoencoderKL(**VAE_SDXL)
        common = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, eos_token_id=2)
        clip_l = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                              num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768, **common))
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                            num_attention_heads=20, hidden_act="gelu", projection_dim=1280, **common))
    components = {"unet": unet.state_dict(), "vae": vae.state_dict(), "text_encoder": text_l_state(clip_l),
                  "text_encoder_2": clip_g.state_dict()}
    ldm = {**to_ldm_unet(components["unet"], UNET_SDXL), **to_ldm_vae(components["vae"], VAE_SDXL),
           **to_ldm_clip_l(components["text_encoder"]), **to_ldm_clip_g(components["text_encoder_2"])}
    check_round_trip(components, ldm, convert_back(ldm, UNET_SDXL, VAE_SDXL, clip_g), exact=False)
    write_json(OUT / "keys_sdxl_base_1_0.json", {"layout": "SGM single file", "checked_with": "diffusers 0.42.1 single_file_utils",
                                                  "keys": {k: list(v.shape) for k, v in ldm.items()}})

    # Tiny: the unet/vae fixtures' models and two small-vocabulary CLIP encoders, with values.
    unet = UNet2DConditionModel.from_pretrained(FIXTURES / "unet" / "tiny")
    vae = AutoencoderKL.from_pretrained(FIXTURES / "vae" / "tiny")
    small = dict(vocab_size=1000, max_position_embeddings=77, layer_norm_eps=1e-5, num_hidden_layers=2,
                 bos_token_id=998, eos_token_id=999, pad_token_id=999)
    torch.manual_seed(2)
    clip_l = CLIPTextModel(CLIPTextConfig(hidden_size=24, intermediate_size=40, num_attention_heads=3,
                                          hidden_act="quick_gelu", projection_dim=16, **small)).eval()
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=32, intermediate_size=56, num_attention_heads=4,
                                                        hidden_act="gelu", projection_dim=20, **small)).eval()
    rerandomise(clip_l, 11)
    rerandomise(clip_g, 12)
    components = {"unet": unet.state_dict(), "vae": vae.state_dict(), "text_encoder": text_l_state(clip_l),
                  "text_encoder_2": clip_g.state_dict()}
    ldm = {**to_ldm_unet(components["unet"], UNET_TINY), **to_ldm_vae(components["vae"], VAE_TINY),
           **to_ldm_clip_l(components["text_encoder"]), **to_ldm_clip_g(components["text_encoder_2"])}
    check_round_trip(components, ldm, convert_back(ldm, UNET_TINY, VAE_TINY, clip_g), exact=True)
    write_json(OUT / "pairs_tiny.json", pairs(components, ldm))
    save_tensors(OUT / "tiny_sdxl.safetensors", ldm)
    clip_l.config.save_pretrained(OUT / "text_encoder")
    clip_g.config.save_pretrained(OUT / "text_encoder_2")
    ids = torch.tensor([[998, 5, 17, 999, 999, 999, 999], [998, 900, 3, 44, 81, 999, 999]])
    save_tensors(OUT / "text_outputs.safetensors", {
        "input_ids": ids,
        "text_encoder.penultimate": clip_l(ids, output_hidden_states=True).hidden_states[-2],
        "text_encoder.pooler_output": clip_l(ids).pooler_output,
        "text_encoder_2.penultimate": clip_g(ids, output_hidden_states=True).hidden_states[-2],
        "text_encoder_2.text_embeds": clip_g(ids).text_embeds,
    })
    print("single-file fixtures written to", OUT)


if __name__ == "__main__":
    main()
