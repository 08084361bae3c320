"""Writes assets/photo-sample/: a small image-caption sample of real photographs (an HF imagefolder:
images/*.png + metadata.jsonl with `file_name` and `text`), 32 px crops of scikit-image's bundled
sample photos that carry no copyright restriction (public domain or CC0; see each source below).

Issue 6's sharpen-SFT reward-rise check fine-tunes the shapes-world model on it with the JPEG
incompressibility reward (configs/shapes/jpeg-sft.toml): photographs hold more detail than the
model's flat renders, so fitting them raises the reward of the model's denoised estimates.
Deterministic: the crops come from a seeded generator.
"""

import json
import os

import numpy as np
from PIL import Image
from skimage import data

from common import ASSETS

OUT = os.path.join(ASSETS, "photo-sample")
SIZE = 32
CROPS = 6

# (loader, caption): scikit-image's notes give the licence of each.
SOURCES = [
    (data.astronaut, "a photo of an astronaut"),  # NASA, public domain
    (data.chelsea, "a photo of a cat"),  # CC0, Stefan van der Walt
    (data.coffee, "a photo of a cup of coffee"),  # CC0, Rachel Michetti
    (data.rocket, "a photo of a rocket"),  # SpaceX, public domain
    (data.retina, "a photo of a retina"),  # Wikimedia, CC0
    (data.hubble_deep_field, "a photo of galaxies"),  # NASA, public domain
    (data.immunohistochemistry, "a micrograph of stained tissue"),  # no known restrictions
    (data.brick, "a photo of a brick wall"),  # CC0 Textures, CC0
    (data.grass, "a photo of grass"),  # CC0
    (data.gravel, "a photo of gravel"),  # CC0 Textures, CC0
]


def main():
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for load, caption in SOURCES:
        image = Image.fromarray(load()).convert("RGB")
        w, h = image.size
        for _ in range(CROPS):
            side = int(min(w, h) * rng.uniform(0.6, 1.0))
            x = int(rng.integers(0, w - side + 1))
            y = int(rng.integers(0, h - side + 1))
            crop = image.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.BICUBIC)
            name = f"images/{len(rows):04d}.png"
            crop.save(os.path.join(OUT, name))
            rows.append({"file_name": name, "text": caption})
    with open(os.path.join(OUT, "metadata.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} images to {OUT}")


if __name__ == "__main__":
    main()
