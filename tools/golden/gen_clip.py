"""CLIP reward fixtures: two tiny random-weight transformers CLIPModel folders in the layout users
download (config.json, model.safetensors, preprocessor_config.json, tokenizer files), a tiny
LAION-aesthetic MLP `.pth`, real photos, and everything the rewards compute from them.

Writes tests/fixtures/clip/:
  openai-tiny/   CLIPModel like openai/clip-vit-large-patch14: quick_gelu, legacy eos_token_id 2,
                 224 px input, projection 768 (what the aesthetic MLP takes); f32 file
  laion-tiny/    CLIPModel like laion/CLIP-ViT-H-14 and PickScore v1: gelu, 96 px input, sizes as
                 objects in preprocessor_config.json, logit_scale = ln(100); f16 file (the reference
                 runs in f32 on the f16-rounded weights)
  aesthetic.pth  torch.save(state_dict) (f16) of the LAION improved-aesthetic-predictor MLP layout
                 (layers.0/2/4/6/7; 768-1024-128-64-16-1, no activations)
  outputs.safetensors  images, input ids, pixel values (torchvision on float tensors, and both
                 transformers processors on 8-bit images), embeddings and scores
  cases.json     prompts and photo names
  keys_clip_vit_l_14.json, keys_clip_vit_h_14.json, keys_aesthetic.json  full-size parameter
                 names and shapes, built without weights
"""

import shutil

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from common import ASSETS, FIXTURES, key_shapes, rerandomise, save_tensors, write_json
from PIL import Image
from skimage import data
from transformers import CLIPConfig, CLIPImageProcessor, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

OUT = FIXTURES / "clip"
TOK = ASSETS / "clip-tokenizer" / "tokenizer"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
PROMPTS = ["an astronaut in a white suit", "a cat sitting on a chair"]


class Aesthetic(torch.nn.Module):
    def __init__(self, dim=768):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(dim, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def tiny_openai():
    return CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
                         hidden_act="quick_gelu", eos_token_id=2, bos_token_id=0, pad_token_id=1),
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           image_size=224, patch_size=32, hidden_act="quick_gelu"),
        projection_dim=768,
    )


def tiny_laion():
    return CLIPConfig(
        text_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         hidden_act="gelu"),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=96, patch_size=16, hidden_act="gelu"),
        projection_dim=24,
    )


def photos():
    return {"astronaut": data.astronaut(), "chelsea": data.chelsea()}


def to_float(arr):
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255


def torchvision_float(img, size):
    """The named reference: torchvision on float tensors (shortest side, centre crop, normalise).
    Run in float64 (torch's float32 kernel adds its own rounding, up to 1.4e-5 in [0, 1] units;
    the f32 result is stored too, to report that)."""
    x = TF.resize(img, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    x = TF.center_crop(x, [size, size])
    return TF.normalize(x, MEAN, STD)


def longest_then_pad(img, size):
    """HPSv2's ResizeMaxSize on a float tensor: longer side to `size`, centred black padding."""
    h, w = img.shape[-2:]
    scale = size / float(max(h, w))
    nh, nw = round(h * scale), round(w * scale)
    x = TF.resize(img, [nh, nw], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    ph, pw = size - nh, size - nw
    x = TF.pad(x, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)
    return TF.normalize(x, MEAN, STD)


def build(name, config, seed, size, half, proc_kwargs):
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    rerandomise(model, seed)
    with torch.no_grad():
        model.logit_scale.fill_(float(np.log(100.0)) if half else 2.6592)
    folder = OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    if half:
        model.half().save_pretrained(folder)
        model = model.float()
    else:
        model.save_pretrained(folder)
    for f in TOK.iterdir():
        shutil.copy(f, folder / f.name)
    CLIPImageProcessor(**proc_kwargs).save_pretrained(folder)
    return model


def features(model, pixels, ids):
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        txt = model.text_projection(model.text_model(input_ids=ids).pooler_output)
        out = model(input_ids=ids, pixel_values=pixels)
    cos = F.cosine_similarity(img, txt, dim=-1)
    pick = torch.diagonal(out.logits_per_image)
    assert torch.allclose(pick, model.logit_scale.exp() * cos, atol=1e-4)
    return img, txt, cos, pick


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tok = CLIPTokenizer.from_pretrained(str(TOK))
    ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    t = {"input_ids": ids}
    raw = {k: to_float(v) for k, v in photos().items()}
    for k, v in photos().items():
        t[f"photo.{k}"] = torch.from_numpy(v.copy()).permute(2, 0, 1)  # uint8 [3, h, w]

    models = {
        "openai-tiny": build("openai-tiny", tiny_openai(), 1, 224, False, {}),
        "laion-tiny": build("laion-tiny", tiny_laion(), 2, 96, True,
                            {"size": {"shortest_edge": 96}, "crop_size": {"height": 96, "width": 96}}),
    }
    torch.manual_seed(3)
    mlp = Aesthetic().eval()
    rerandomise(mlp, 3)
    # Stored in f16 to keep the fixture small (the real file is f32); the reference runs in f32 on
    # the rounded weights.
    mlp = mlp.half().float()
    torch.save({k: v.half() for k, v in mlp.state_dict().items()}, OUT / "aesthetic.pth")

    for name, model in models.items():
        size = model.config.vision_config.image_size
        folder = OUT / name
        # Images already at the input size (8-bit photos resized by PIL, then as floats).
        at_size = torch.stack([
            to_float(np.asarray(Image.fromarray(photos()["astronaut"]).resize((size, size), Image.BICUBIC))),
            to_float(np.asarray(Image.fromarray(photos()["chelsea"]).resize((size, size), Image.BICUBIC))),
        ])
        t[f"{name}.at_size"] = (at_size * 255).round().to(torch.uint8)
        pixels = TF.normalize(at_size, MEAN, STD)
        img, txt, cos, pick = features(model, pixels, ids)
        t[f"{name}.image_embeds"], t[f"{name}.text_embeds"] = img, txt
        t[f"{name}.cosine"], t[f"{name}.pickscore"] = cos, pick
        if name == "openai-tiny":
            with torch.no_grad():
                t[f"{name}.aesthetic"] = mlp(F.normalize(img, dim=-1)).squeeze(-1)

        # Real photos through the named reference (torchvision on float tensors), end to end.
        ref = torch.stack([torchvision_float(raw[k].double(), size) for k in ("astronaut", "chelsea")]).float()
        t[f"{name}.photo_pixels"] = ref
        t[f"{name}.photo_pixels_f32"] = torch.stack([torchvision_float(raw[k], size) for k in ("astronaut", "chelsea")])
        img, txt, cos, pick = features(model, ref, ids)
        t[f"{name}.photo_cosine"], t[f"{name}.photo_pickscore"] = cos, pick
        if name == "openai-tiny":
            with torch.no_grad():
                t[f"{name}.photo_aesthetic"] = mlp(F.normalize(img, dim=-1)).squeeze(-1)
        # What transformers' processors make of the 8-bit photos (resize on uint8 / PIL, rounded).
        for proc_name, cls in (("processor", CLIPImageProcessor), ("processor_pil", CLIPImageProcessorPil)):
            proc = cls.from_pretrained(folder)
            px = torch.cat([proc(images=photos()[k], return_tensors="pt").pixel_values for k in ("astronaut", "chelsea")])
            t[f"{name}.{proc_name}_pixels"] = px.half()
            t[f"{name}.{proc_name}_cosine"] = features(model, px, ids)[2]

    t["pad224.chelsea"] = longest_then_pad(raw["chelsea"].double(), 224).float()
    save_tensors(OUT / "outputs.safetensors", t)
    write_json(OUT / "cases.json", {"prompts": PROMPTS, "photos": ["astronaut", "chelsea"]})

    full = {
        "keys_clip_vit_l_14.json": CLIPConfig(
            text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
            vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                               patch_size=14),
            projection_dim=768),
        "keys_clip_vit_h_14.json": CLIPConfig(
            text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                             hidden_act="gelu"),
            vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                               patch_size=14, hidden_act="gelu"),
            projection_dim=1024),
    }
    for file, config in full.items():
        with torch.device("meta"):
            keys = key_shapes(CLIPModel(config))
        n = sum(int(np.prod(s)) for s in keys.values())
        write_json(OUT / file, {"class": "CLIPModel", "transformers": "5.24.0", "parameters": n, "keys": keys})
        print(file, sum(int(np.prod(s)) for s in keys.values()), "parameters")
    with torch.device("meta"):
        keys = key_shapes(Aesthetic())
    write_json(OUT / "keys_aesthetic.json", {"class": "MLP (improved-aesthetic-predictor)", "keys": keys})


if __name__ == "__main__":
    main()
