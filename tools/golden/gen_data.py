"""Small samples of the dataset layouts sharpen-data reads, with what Pillow decodes from them.

Writes tests/fixtures/data/:
  imagefolder_txt/       name.png|jpg + name.txt (one image without a caption, one corrupt file)
  imagefolder_metadata/  metadata.jsonl (HF imagefolder: file_name + text) + images/, with a
                         malformed line, a missing file and a row without `text`
  prompts/               prompts.txt, prompts.jsonl (one bad row), drawbench.csv (DrawBench's
                         `Prompts,Category` header, quoted commas)
  expected.json          per image: size and mean RGB as Pillow decodes it
Deterministic; run from the repository root with the fixture venv's python.
"""

import json
import os

from PIL import Image

ROOT = "tests/fixtures/data"


def split_image(w, h, left, right):
    img = Image.new("RGB", (w, h), left)
    img.paste(Image.new("RGB", (w - w // 2, h), right), (w // 2, 0))
    return img


def save(img, path, expected):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if path.endswith(".jpg"):
        img.save(path, quality=95)
    else:
        img.save(path)
    decoded = Image.open(path).convert("RGB")
    px = list(decoded.getdata())
    mean = [sum(p[c] for p in px) / len(px) for c in range(3)]
    expected[os.path.relpath(path, ROOT)] = {"width": decoded.width, "height": decoded.height, "mean": mean}


def main():
    expected = {}
    t = f"{ROOT}/imagefolder_txt"
    save(split_image(40, 24, (255, 0, 0), (0, 0, 255)), f"{t}/a.png", expected)
    open(f"{t}/a.txt", "w").write("a red square to the left of a blue square\n")
    save(split_image(24, 40, (0, 255, 0), (255, 255, 0)), f"{t}/b.jpg", expected)
    open(f"{t}/b.txt", "w").write("a green square to the left of a yellow square")
    save(Image.new("L", (16, 16), 128), f"{t}/c.png", expected)
    open(f"{t}/c.txt", "w").write("a grey square")
    save(split_image(8, 8, (1, 2, 3), (4, 5, 6)), f"{t}/no_caption.png", expected)
    open(f"{t}/broken.png", "wb").write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    open(f"{t}/broken.txt", "w").write("a corrupt image")

    m = f"{ROOT}/imagefolder_metadata"
    rows = []
    for i, (left, right) in enumerate([((255, 0, 0), (0, 255, 0)), ((0, 0, 255), (255, 255, 0)), ((255, 255, 255), (0, 0, 0))]):
        name = f"images/{i:04d}.png"
        save(split_image(32, 32, left, right), f"{m}/{name}", expected)
        rows.append(json.dumps({"file_name": name, "text": f"caption {i}"}))
    rows.insert(1, '{"file_name": "images/0001.png", "text": ')  # malformed
    rows.append(json.dumps({"file_name": "images/missing.png", "text": "gone"}))
    rows.append(json.dumps({"file_name": "images/0000.png", "caption": "wrong column"}))
    open(f"{m}/metadata.jsonl", "w").write("\n".join(rows) + "\n")

    p = f"{ROOT}/prompts"
    os.makedirs(p, exist_ok=True)
    open(f"{p}/prompts.txt", "w").write("# shapes\na red circle\n\na blue square above a green triangle\n")
    open(f"{p}/prompts.jsonl", "w").write(
        "\n".join([json.dumps({"prompt": "a red circle"}), json.dumps({"other": 1}), json.dumps({"text": "a blue square"})]) + "\n"
    )
    open(f"{p}/drawbench.csv", "w").write(
        'Prompts,Category\n"A red colored car, parked.",Colors\nA black apple and a green backpack.,Colors\n,Colors\n"Two ""cats"" sleeping",Counting\n'
    )
    json.dump(expected, open(f"{ROOT}/expected.json", "w"), indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
