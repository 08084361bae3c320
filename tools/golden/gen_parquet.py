"""A small Parquet sample in the Pokemon BLIP captions layout, as Hugging Face `datasets` writes
image datasets: `image` a struct of `bytes` (the encoded file) and `path`, `text` the caption;
snappy compression.

Writes tests/fixtures/data/parquet/train-00000-of-00001.parquet from the images that gen_data.py
wrote (run it after gen_data.py). Needs pyarrow (pinned below; `pip install pyarrow==26.0.1`).
Rows, in order: three good images, one corrupt image (listed, fails when decoded), one row without
a caption and one without image bytes (both skipped and counted by the loader).
"""

import os

import pyarrow as pa
import pyarrow.parquet as pq

assert pa.__version__ == "26.0.1", pa.__version__

ROOT = "tests/fixtures/data"
OUT = os.path.join(ROOT, "parquet")


def read(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


def main():
    os.makedirs(OUT, exist_ok=True)
    rows = [
        ("imagefolder_txt/a.png", "a red square to the left of a blue square"),
        ("imagefolder_txt/b.jpg", "a jpeg row"),
        ("imagefolder_txt/broken.png", "a corrupt image"),
        ("imagefolder_txt/c.png", "a third image"),
        ("imagefolder_txt/c.png", None),
        (None, "no image bytes"),
    ]
    images = [
        {"bytes": read(rel), "path": os.path.basename(rel)} if rel else {"bytes": None, "path": None}
        for rel, _ in rows
    ]
    table = pa.table({"image": pa.array(images), "text": [t for _, t in rows]})
    pq.write_table(
        table, os.path.join(OUT, "train-00000-of-00001.parquet"), compression="snappy"
    )


if __name__ == "__main__":
    main()
