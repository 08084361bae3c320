"""A small WebDataset sample in the Text-to-Image-2M layout: tar shards whose members share a key
(`KEY.jpg` / `KEY.png` with `KEY.json` holding {"prompt": ...}, or `KEY.txt`).

Writes tests/fixtures/data/webdataset/shard-00000.tar and shard-00001.tar from the images that
gen_data.py wrote (run it after gen_data.py; stdlib only). Deliberate defects, each to be skipped
and counted by the loader: a caption without an image, a malformed JSON caption, a JSON without
`prompt` and no `.txt`, and a corrupt image (listed, fails when decoded).
Deterministic: fixed member order, mtime 0, uid/gid 0, PAX format as Python's tarfile writes it.
"""

import io
import json
import os
import tarfile

ROOT = "tests/fixtures/data"
OUT = os.path.join(ROOT, "webdataset")


def member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def read(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


def js(obj):
    return json.dumps(obj).encode()


def main():
    os.makedirs(OUT, exist_ok=True)
    shards = {
        "shard-00000.tar": [
            ("000000.jpg", read("imagefolder_txt/b.jpg")),
            ("000000.json", js({"prompt": "a blue and yellow split", "width": 48, "height": 32})),
            ("000001.png", read("imagefolder_txt/a.png")),
            ("000001.txt", b"a red and green split"),
            ("000002.json", js({"prompt": "a caption without an image"})),
        ],
        "shard-00001.tar": [
            ("000003.jpg", read("imagefolder_txt/b.jpg")),
            ("000003.json", b"{not json"),
            ("000004.png", read("imagefolder_txt/broken.png")),
            ("000004.json", js({"prompt": "a corrupt image"})),
            ("000005.png", read("imagefolder_txt/c.png")),
            ("000005.json", js({"prompt": "a grey square", "aesthetic": 5.1})),
            ("000006.png", read("imagefolder_txt/c.png")),
            ("000006.json", js({"caption": "no prompt field"})),
        ],
    }
    for name, members in shards.items():
        with tarfile.open(os.path.join(OUT, name), "w", format=tarfile.PAX_FORMAT) as tar:
            for m, data in members:
                member(tar, m, data)
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
