"""A small sample in JourneyDB's published layout: a JSON-lines annotation file whose rows name an
image under the extracted image tree (`img_path`, relative, "./DDD/NAME.jpg") with its `prompt`,
next to the other annotation fields the real file carries (`Task1`, `Task2`).

Writes tests/fixtures/data/journeydb/{train_anno.jsonl, imgs/...} from the images that gen_data.py
wrote (run it after gen_data.py; stdlib only). Deliberate defects, each to be skipped and counted
by the loader: a malformed line, a row without `prompt`, a row whose image is missing; and one
corrupt image (listed, fails when decoded).
"""

import json
import os
import shutil

ROOT = "tests/fixtures/data"
OUT = os.path.join(ROOT, "journeydb")


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    copies = {
        "imgs/000/a.jpg": "imagefolder_txt/b.jpg",
        "imgs/000/b.png": "imagefolder_txt/a.png",
        "imgs/001/c.png": "imagefolder_txt/c.png",
        "imgs/001/broken.png": "imagefolder_txt/broken.png",
    }
    for dst, src in copies.items():
        os.makedirs(os.path.dirname(os.path.join(OUT, dst)), exist_ok=True)
        shutil.copyfile(os.path.join(ROOT, src), os.path.join(OUT, dst))
    task = {"Task1": {"Style": ["flat"], "Content": ["shapes"]}, "Task2": {"Caption": "shapes"}}
    rows = [
        json.dumps({"img_path": "./000/a.jpg", "prompt": "a green circle", **task}),
        json.dumps({"img_path": "./000/b.png", "prompt": "a red square --v 5", **task}),
        '{"img_path": "./001/c.png", "prompt": ',
        json.dumps({"img_path": "./001/c.png", "caption": "no prompt field"}),
        json.dumps({"img_path": "./002/missing.jpg", "prompt": "gone"}),
        json.dumps({"img_path": "./001/c.png", "prompt": "a blue triangle"}),
        json.dumps({"img_path": "./001/broken.png", "prompt": "corrupt"}),
    ]
    with open(os.path.join(OUT, "train_anno.jsonl"), "w") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
