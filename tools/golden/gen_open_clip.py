"""open_clip and HPSv2 fixtures: a tiny random-weight open_clip CLIP saved as a hub folder
(`open_clip_pytorch_model.bin` + `open_clip_config.json`) and as an HPS-style checkpoint
(`{"state_dict": ...}`), its features and scores, and the full-size open_clip key lists.

Writes tests/fixtures/open_clip/:
  open_clip-tiny/   open_clip_pytorch_model.bin (f16 state dict; the reference runs in f32 on the
                    rounded weights), open_clip_config.json, hps-tiny.pt ({"state_dict": ...})
  outputs.safetensors  open_clip token ids, features and cosines on images at the input size,
                    and HPSv2's resize-longer-side-and-pad path on the real photos (float64)
  keys_open_clip_vit_h_14.json, keys_open_clip_vit_bigg_14.json
"""

import json
import shutil

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from common import FIXTURES, key_shapes, rerandomise, save_tensors, write_json
from open_clip.model import CLIP
from PIL import Image
from skimage import data

OUT = FIXTURES / "open_clip"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
PROMPTS = ["an astronaut in a white suit", "a cat sitting on a chair"]
CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 8, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2},
}


def to_float(arr):
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).double() / 255


def longest_then_pad(img, size):
    h, w = img.shape[-2:]
    scale = size / float(max(h, w))
    nh, nw = round(h * scale), round(w * scale)
    x = TF.resize(img, [nh, nw], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    ph, pw = size - nh, size - nw
    x = TF.pad(x, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)
    return TF.normalize(x, MEAN, STD)


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    folder = OUT / "open_clip-tiny"
    folder.mkdir(parents=True)
    torch.manual_seed(4)
    model = CLIP(**CFG).eval()
    rerandomise(model, 4)
    with torch.no_grad():
        model.logit_scale.fill_(float(np.log(100.0)))
    model = model.half().float()
    sd = {k: v.half() for k, v in model.state_dict().items()}
    torch.save(sd, folder / "open_clip_pytorch_model.bin")
    torch.save({"epoch": 1, "state_dict": sd}, folder / "hps-tiny.pt")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CFG}, indent=1) + "\n")

    ids = open_clip.tokenize(PROMPTS)
    photos = {"astronaut": data.astronaut(), "chelsea": data.chelsea()}
    at_size = torch.stack([
        torch.from_numpy(np.asarray(Image.fromarray(p).resize((64, 64), Image.BICUBIC)).copy()).permute(2, 0, 1)
        for p in photos.values()
    ])
    t = {"input_ids": ids.long(), "at_size": at_size}
    with torch.no_grad():
        txt = model.encode_text(ids)
        img = model.encode_image(TF.normalize(at_size.float() / 255, MEAN, STD))
        t["text_features"], t["image_features"] = txt, img
        t["cosine"] = F.cosine_similarity(img, txt, dim=-1)
        px = torch.stack([longest_then_pad(to_float(p), 64) for p in photos.values()]).float()
        t["hps_pixels"] = px
        t["hps_score"] = F.cosine_similarity(model.encode_image(px), txt, dim=-1)
    for k, p in photos.items():
        t[f"photo.{k}"] = torch.from_numpy(p.copy()).permute(2, 0, 1)
    save_tensors(OUT / "outputs.safetensors", t)

    for name, file in (("ViT-H-14", "keys_open_clip_vit_h_14.json"), ("ViT-bigG-14", "keys_open_clip_vit_bigg_14.json")):
        with torch.device("meta"):
            keys = key_shapes(CLIP(**open_clip.get_model_config(name)))
        n = sum(int(np.prod(s)) for s in keys.values())
        write_json(OUT / file, {"class": f"open_clip {name}", "open_clip": open_clip.__version__, "parameters": n, "keys": keys})
        print(name, n)


if __name__ == "__main__":
    main()
