"""Reward goldens. JPEG (in)compressibility as DDPO computes it: Pillow JPEG at quality 95 (its
defaults: 4:2:0 subsampling, standard tables, baseline), size in kB (bytes / 1000).

Writes tests/fixtures/rewards/jpeg_images.safetensors (RGB k/255 in [0, 1], stored as f16) and jpeg_sizes.json.
"""

import io
import json

import numpy as np
import PIL
import torch
from common import FIXTURES, save_tensors
from PIL import Image
from skimage import data

OUT = FIXTURES / "rewards"


def images():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(data.astronaut())
    coffee = Image.fromarray(data.coffee())
    out = {
        "astronaut_512": data.astronaut(),
        "chelsea_451x300": data.chelsea(),
        "astronaut_64": np.asarray(photo.resize((64, 64), Image.BICUBIC)),
        "astronaut_96x64": np.asarray(photo.resize((96, 64), Image.BICUBIC)),
        "coffee_64": np.asarray(coffee.resize((64, 64), Image.BICUBIC)),
        "noise_64": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "flat_64": np.full((64, 64, 3), (200, 30, 90), dtype=np.uint8),
        "gradient_64": np.stack(list(np.meshgrid(np.arange(64) * 4, np.arange(64) * 4)) + [np.full((64, 64), 128)], -1).astype(np.uint8),
    }
    return out


def main():
    sizes, tensors = {}, {}
    for name, arr in images().items():
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=95)
        sizes[name] = buf.tell() / 1000
        tensors[name] = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    # f16 keeps every k/255 within half a step of k, so rounding x * 255 gives the bytes back.
    save_tensors(OUT / "jpeg_images.safetensors", tensors, dtype=torch.float16)
    (OUT / "jpeg_sizes.json").write_text(json.dumps({"pillow": PIL.__version__, "quality": 95, "kB": sizes}, indent=1) + "\n")
    print(sizes)


if __name__ == "__main__":
    main()
